//! `rampart guard`: scaffold; the owning crate's engineer replaces this module with the real shell.

use std::path::PathBuf;

use crate::Outcome;

/// Arguments of `rampart guard`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!(
        "rampart guard is not built yet (config {})",
        args.config.display()
    )
}
