//! `dict-rs-docs <DIR>`: writes the man pages and shell completions of dict-server, dictctl
//! and quota-clone under DIR (`man/`, `completions/{bash,zsh,fish}/`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Parser;

/// Write the man pages and shell completions of dict-server, dictctl and quota-clone.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Output directory (created if missing).
    dir: PathBuf,
}

fn main() -> Result<()> {
    let args = Args::parse();
    for path in dict_rs_docs::write_all(&args.dir)? {
        println!("{}", path.display());
    }
    Ok(())
}
