//! `rampart classify`: scaffold; the owning crate's engineer replaces this module with the real shell.

use std::path::PathBuf;

use crate::Outcome;

/// Arguments of `rampart classify`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!(
        "rampart classify is not built yet (config {})",
        args.config.display()
    )
}
