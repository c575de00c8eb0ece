//! `rampart log`.

use crate::Outcome;

/// Arguments of `rampart log`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart log` is not built yet")
}
