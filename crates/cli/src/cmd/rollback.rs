//! `rampart rollback`.

use crate::Outcome;

/// Arguments of `rampart rollback`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart rollback` is not built yet")
}
