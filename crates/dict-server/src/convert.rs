//! `dict-server convert`: reads a Dovecot configuration and prints (or writes into a
//! directory) its dict server part for the other major version. The conversion itself is
//! [`dict_config::convert`]; this is the file handling around it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
pub use dict_config::convert::DovecotVersion;
use dict_config::convert::{to_v23, to_v24, Converted};
use dict_config::DovecotConfig;

/// Reads `input` and prints (or, with `out_dir`, writes) the other version's form.
/// `to` defaults to the version the input is not.
pub fn run(
    input: &Path,
    to: Option<DovecotVersion>,
    out_dir: Option<&Path>,
    out: &mut dyn std::io::Write,
) -> Result<()> {
    let config = DovecotConfig::load(input)?;
    let from = DovecotVersion::of(&config);
    let to = to.unwrap_or(from.other());
    if to == from {
        bail!(
            "{} is already a Dovecot {to} configuration",
            input.display()
        );
    }
    let map_dir = match out_dir {
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            dir.canonicalize()
                .with_context(|| format!("output directory {}", dir.display()))?
        }
        None => input
            .canonicalize()
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let converted = match to {
        DovecotVersion::V24 => Converted {
            conf: to_v24(&config, input)?,
            map_files: Vec::new(),
        },
        DovecotVersion::V23 => to_v23(&config, input, &map_dir)?,
    };
    let conf_name = match to {
        DovecotVersion::V24 => "dovecot-dict24.conf",
        DovecotVersion::V23 => "dovecot-dict23.conf",
    };
    match out_dir {
        Some(_) => {
            let conf_path = map_dir.join(conf_name);
            let files = std::iter::once((conf_path, converted.conf)).chain(converted.map_files);
            for (path, text) in files {
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                writeln!(out, "wrote {}", path.display())?;
            }
        }
        None if converted.map_files.is_empty() => out.write_all(converted.conf.as_bytes())?,
        None => {
            writeln!(out, "{}", separator("dovecot.conf (the dict server part)"))?;
            out.write_all(converted.conf.as_bytes())?;
            for (path, text) in &converted.map_files {
                writeln!(out, "{}", separator(&path.display().to_string()))?;
                out.write_all(text.as_bytes())?;
            }
        }
    }
    Ok(())
}

/// The line printed before each file when several go to stdout.
pub fn separator(name: &str) -> String {
    format!("# ==> {name} <==")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn run_prints_files_with_separators_or_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let conf = write(
            dir.path(),
            "dovecot.conf",
            "dovecot_config_version = 2.4.1\ndict_server {\n  dict q {\n    driver = sql\n    sql_driver = sqlite\n    sqlite_path = /x.db\n\
             dict_map shared/x {\n      sql_table = t\n      value_field v {\n      }\n    }\n  }\n}\n",
        );
        let mut out = Vec::new();
        run(&conf, None, None, &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        let map = dir
            .path()
            .canonicalize()
            .unwrap()
            .join("dovecot-dict-sql-q.conf.ext");
        assert!(
            out.starts_with("# ==> dovecot.conf (the dict server part) <==\n"),
            "{out}"
        );
        assert!(
            out.contains(&format!("  q = sqlite:{}\n", map.display())),
            "{out}"
        );
        assert!(
            out.contains(&format!("# ==> {} <==\nconnect = /x.db\n", map.display())),
            "{out}"
        );

        let mut out = Vec::new();
        let dest = dir.path().join("out");
        run(&conf, Some(DovecotVersion::V23), Some(&dest), &mut out).unwrap();
        let conf23 = dest.canonicalize().unwrap().join("dovecot-dict23.conf");
        let c = DovecotConfig::load(&conf23).unwrap();
        assert_eq!(
            c.dicts[0].uri().unwrap(),
            format!(
                "sqlite:{}",
                dest.canonicalize()
                    .unwrap()
                    .join("dovecot-dict-sql-q.conf.ext")
                    .display()
            )
        );
        assert!(run(&conf, Some(DovecotVersion::V24), None, &mut Vec::new()).is_err());
    }
}
