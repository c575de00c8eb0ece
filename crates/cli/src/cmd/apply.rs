//! `rampart apply`.

use crate::Outcome;

/// Arguments of `rampart apply`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {}

pub(crate) fn run(_args: Args) -> anyhow::Result<Outcome> {
    anyhow::bail!("`rampart apply` is not built yet")
}
