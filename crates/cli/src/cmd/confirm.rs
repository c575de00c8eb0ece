//! `rampart confirm`.

use crate::Outcome;

/// Arguments of `rampart confirm`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart confirm` is not built yet")
}
