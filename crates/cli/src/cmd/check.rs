//! `rampart check`.

use crate::Outcome;

/// Arguments of `rampart check`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    pub(crate) policy: std::path::PathBuf,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart check` is not built yet ({})", args.policy.display())
}
