//! `rampart coverage`: which ATT&CK M1037 techniques a policy addresses, and how.

use std::path::PathBuf;

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart coverage`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    pub(crate) policy: PathBuf,
    /// Print the coverage as JSON instead of a table.
    #[arg(long)]
    pub(crate) json: bool,
    /// Also write an ATT&CK Navigator layer (layer format 4.5) to this file.
    #[arg(long, value_name = "FILE")]
    pub(crate) navigator: Option<PathBuf>,
}

/// Coverage is a report, not a verdict: it exits 0 whenever the policy is valid.
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&args.policy)?;
    let coverage = rampart_analysis::coverage(&policy);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&coverage)?);
    } else {
        print!("{}", coverage.render_table());
    }
    if let Some(path) = &args.navigator {
        let name = format!("Rampart M1037 coverage: {}", args.policy.display());
        let layer = rampart_analysis::navigator_layer(&coverage, &name);
        std::fs::write(path, serde_json::to_string_pretty(&layer)? + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!(
            "rampart coverage: Navigator layer written to {}",
            path.display()
        );
    }
    Ok(Outcome::Clean)
}
