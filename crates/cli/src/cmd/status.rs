//! `rampart status`.

use crate::Outcome;

/// Arguments of `rampart status`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart status` is not built yet")
}
