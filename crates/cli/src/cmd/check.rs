//! `rampart check`: validate a policy and analyse what it really does.

use std::path::PathBuf;

use crate::Outcome;

/// Arguments of `rampart check`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    pub(crate) policy: PathBuf,
    /// Print diagnostics and findings as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Loads the policy (invalid input: exit 2 with every diagnostic), then reports validation
/// warnings and analysis findings; any warning or error finding makes the exit code 1.
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let loaded = crate::load::policy_with_warnings(&args.policy)?;
    let report = rampart_analysis::check(&loaded.policy, crate::load::today());
    let problems = report.has_problems() || !loaded.warnings.is_empty();
    if args.json {
        let out = serde_json::json!({
            "policy": args.policy.display().to_string(),
            "diagnostics": loaded.warnings,
            "analysis": report,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", loaded.warnings_text);
        print!("{}", report.render_text(&loaded.policy));
    }
    Ok(if problems {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}
