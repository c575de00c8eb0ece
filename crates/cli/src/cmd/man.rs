//! `rampart man --out DIR`: man pages (section 1) for `rampart` and every subcommand, generated
//! from the clap definitions: `rampart.1`, `rampart-apply.1`, ...

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use crate::Outcome;

/// Arguments of `rampart man`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Directory to write the pages to (created if missing).
    #[arg(long)]
    out: PathBuf,
}

fn write_page(command: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<()> {
    let mut bytes = Vec::new();
    clap_mangen::Man::new(command.clone())
        .title(name.to_uppercase())
        .render(&mut bytes)?;
    let path = dir.join(format!("{name}.1"));
    std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let mut command = crate::Cli::command();
    command.build();
    write_page(&command, "rampart", &args.out)?;
    for sub in command.get_subcommands() {
        write_page(sub, &format!("rampart-{}", sub.get_name()), &args.out)?;
        for nested in sub.get_subcommands() {
            write_page(
                nested,
                &format!("rampart-{}-{}", sub.get_name(), nested.get_name()),
                &args.out,
            )?;
        }
    }
    Ok(Outcome::Clean)
}
