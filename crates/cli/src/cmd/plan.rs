//! `rampart plan`.

use crate::Outcome;

/// Arguments of `rampart plan`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart plan` is not built yet")
}
