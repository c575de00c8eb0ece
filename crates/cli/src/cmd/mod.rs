//! One module per subcommand: `Args` (clap) and `run(args) -> anyhow::Result<Outcome>`.

pub(crate) mod bench;
pub(crate) mod check;
pub(crate) mod compile;
pub(crate) mod coverage;
pub(crate) mod explain;
pub(crate) mod simulate;
