//! The man pages and shell completions of `dict-server`, `dictctl` and `quota-clone`, written
//! from the same clap definitions the binaries parse with (for the Debian package; see
//! `tests/scripts/package.sh`). A separate program rather than a build script, so that
//! ordinary builds don't pay for it.
//!
//! ```
//! let out = tempfile::tempdir().unwrap();
//! let files = dict_rs_docs::write_all(out.path()).unwrap();
//! assert!(files.contains(&out.path().join("man/dict-server.1")));
//! assert!(files.contains(&out.path().join("man/quota-clone-export.1")));
//! let page = std::fs::read_to_string(out.path().join("man/dict-server.1")).unwrap();
//! assert!(page.contains("dovecot\\-config"), "{page}"); // roff escapes the dash
//! assert!(out.path().join("completions/bash/dictctl").is_file());
//! assert!(out.path().join("completions/zsh/_quota-clone").is_file());
//! assert!(out.path().join("completions/fish/dict-server.fish").is_file());
//! ```

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// The three programs' command lines, by binary name.
pub fn commands() -> Vec<clap::Command> {
    vec![
        dict_server::cli::Cli::command().name("dict-server"),
        dict_client::cli::Cli::command(),
        quota_clone::cli::Cli::command(),
    ]
}

/// Each shell's directory under `completions/` and the file name it looks for, as in
/// Debian: `/usr/share/bash-completion/completions/<bin>`,
/// `/usr/share/zsh/vendor-completions/_<bin>`, `/usr/share/fish/vendor_completions.d/<bin>.fish`.
fn completion_file(shell: Shell, bin: &str) -> (&'static str, String) {
    match shell {
        Shell::Zsh => ("zsh", format!("_{bin}")),
        Shell::Fish => ("fish", format!("{bin}.fish")),
        _ => ("bash", bin.to_string()),
    }
}

/// Writes `man/<bin>.1` (and `man/<bin>-<subcommand>.1` for each subcommand) and
/// `completions/{bash,zsh,fish}/…` under `out`; returns the files written.
pub fn write_all(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out.join("man");
    fs::create_dir_all(&man_dir).with_context(|| format!("creating {}", man_dir.display()))?;
    for cmd in commands() {
        let name = cmd.get_name().to_string();
        clap_mangen::generate_to(cmd.clone(), &man_dir)
            .with_context(|| format!("man pages of {name}"))?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let (dir, file) = completion_file(shell, &name);
            let dir = out.join("completions").join(dir);
            fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut cmd.clone(), &name, &mut script);
            let path = dir.join(file);
            fs::write(&path, script).with_context(|| format!("writing {}", path.display()))?;
            written.push(path);
        }
    }
    for entry in fs::read_dir(&man_dir)? {
        written.push(entry?.path());
    }
    written.sort();
    Ok(written)
}
