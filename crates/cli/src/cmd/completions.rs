//! `rampart completions SHELL`: shell completion script on stdout, generated from the same clap
//! definitions the binary parses with (so it can't drift).

use clap::CommandFactory;

use crate::Outcome;

/// Arguments of `rampart completions`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Shell to generate for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let mut command = crate::Cli::command();
    clap_complete::generate(args.shell, &mut command, "rampart", &mut std::io::stdout());
    Ok(Outcome::Clean)
}
