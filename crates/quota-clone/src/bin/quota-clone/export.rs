//! `quota-clone export`: everybody's cloned quota from the backend of a configured dict.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use dict_backend::sql::SqlOptions;
use dict_client::uri::ProxyUri;
use dict_config::{DictEntry, DovecotConfig, Origin, ServerToml};
use quota_clone::cli::ExportFormat;
use quota_clone::export::{self, Format};

/// Exit code: the configuration names no usable dict (sysexits EX_CONFIG).
pub const EX_CONFIG: u8 = 78;

/// Where the dict comes from.
pub struct Source<'a> {
    /// Dovecot's configuration, or dict-server's TOML when it ends in `.toml`.
    pub config: &'a Path,
    /// The dict name asked for.
    pub name: Option<&'a str>,
    /// A dict URI given instead of a configuration.
    pub backend: Option<&'a str>,
    /// The `--dict` proxy URI, whose name is the default.
    pub proxy_uri: Option<&'a str>,
}

/// The dict to read, or a message for the admin (exit [`EX_CONFIG`]).
pub fn find_dict(source: &Source<'_>) -> Result<DictEntry, String> {
    if let Some(uri) = source.backend {
        let origin = Origin::new(PathBuf::from("--backend"), 0);
        return Ok(DictEntry::from_uri(
            source.name.unwrap_or("export"),
            uri,
            origin,
        ));
    }
    let path = source.config;
    let dicts = if path.extension().is_some_and(|e| e == "toml") {
        ServerToml::load(path).and_then(|t| t.all_dicts())
    } else {
        DovecotConfig::load(path).map(|c| c.dicts)
    }
    .map_err(|e| format!("{e}"))?;
    let wanted = source.name.map(str::to_owned).or_else(|| {
        let uri = ProxyUri::parse(source.proxy_uri?, dict_client::uri::DEFAULT_BASE_DIR).ok()?;
        Some(uri.dict_name).filter(|n| !n.is_empty())
    });
    let names = || {
        dicts
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match wanted {
        Some(name) => dicts
            .iter()
            .find(|d| d.name == name)
            .cloned()
            .ok_or_else(|| {
                format!(
                    "{}: no dict named '{name}' (configured: {})",
                    path.display(),
                    names()
                )
            }),
        None => match dicts.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!("{}: no dicts configured", path.display())),
            _ => Err(format!(
                "{}: several dicts ({}): choose one with --name",
                path.display(),
                names()
            )),
        },
    }
}

/// Reads the dict's backend and writes the rows; returns the exit code.
pub async fn run(
    entry: &DictEntry,
    timeout: Duration,
    format: ExportFormat,
    output: Option<&Path>,
) -> Result<u8> {
    let which = || format!("dict '{}' ({})", entry.name, entry.describe());
    let spec = entry.spec().with_context(which)?;
    let options = SqlOptions {
        timeout,
        // An export reads: no file created, no expired rows deleted behind the admin's back.
        create_sqlite: false,
        sqlite_readers: 1,
        expire_scan_interval: None,
    };
    let dict = dict_backend::open(spec, options)
        .await
        .with_context(which)?;
    let found = export::gather(dict.as_ref())
        .await
        .with_context(|| format!("reading {}", which()))?;
    match output {
        Some(path) => write_file(path, &found.rows, format.into())?,
        None => {
            let stdout = std::io::stdout();
            export::write(&found.rows, format.into(), stdout.lock())?;
        }
    }
    for p in &found.problems {
        eprintln!("quota-clone: {p}");
    }
    eprintln!(
        "quota-clone: exported {} users from {}{}",
        found.rows.len(),
        entry.describe(),
        match found.problems.len() {
            0 => String::new(),
            1 => ", 1 problem".to_owned(),
            n => format!(", {n} problems"),
        }
    );
    Ok(if found.problems.is_empty() {
        0
    } else {
        quota_clone::sync::EXIT_INVALID_INPUT
    })
}

/// Writes next to `path` and renames, so a reader never sees half an export.
fn write_file(path: &Path, rows: &[export::QuotaRow], format: Format) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir)
        .with_context(|| format!("creating a file in {}", dir.display()))?;
    export::write(rows, format, tmp.as_file_mut())?;
    tmp.as_file_mut().flush()?;
    tmp.persist(path)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
