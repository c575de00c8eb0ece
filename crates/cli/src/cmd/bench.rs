//! `rampart bench ...`.

use crate::Outcome;

/// Benchmark subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Classify a ClassBench trace against a ClassBench rule file.
    Classbench {
        /// ClassBench rule file.
        #[arg(long)]
        rules: std::path::PathBuf,
    },
}

pub(crate) fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Classbench { rules } => {
            anyhow::bail!("`rampart bench classbench` is not built yet ({})", rules.display())
        }
    }
}
