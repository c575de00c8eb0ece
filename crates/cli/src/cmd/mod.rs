//! One module per subcommand: `Args` (clap) and `run(args) -> anyhow::Result<Outcome>`.

pub(crate) mod apply;
pub(crate) mod bench;
pub(crate) mod check;
pub(crate) mod classify;
pub(crate) mod compile;
pub(crate) mod completions;
pub(crate) mod confirm;
pub(crate) mod coverage;
pub(crate) mod dns;
pub(crate) mod egress;
pub(crate) mod events;
pub(crate) mod explain;
pub(crate) mod feeds;
pub(crate) mod guard;
pub(crate) mod jail;
pub(crate) mod lab;
pub(crate) mod log;
pub(crate) mod man;
pub(crate) mod plan;
pub(crate) mod reload;
pub(crate) mod rollback;
pub(crate) mod run;
pub(crate) mod simulate;
pub(crate) mod status;
pub(crate) mod waf;
