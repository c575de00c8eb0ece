//! `rampart plan`: what applying a policy would change in the live table (rules, chains, set
//! elements), like `terraform plan`. Read-only.

use std::path::PathBuf;

use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::StateDir;

use crate::cmd::compile::NftOpts;
use crate::Outcome;

/// Arguments of `rampart plan`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    pub(crate) policy: PathBuf,
    #[command(flatten)]
    pub(crate) nft: NftOpts,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Print the changes as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Prints the changes; exit 0 whether or not there are any (like `terraform plan`).
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&args.policy)?;
    let opts = args.nft.emit_options();
    let text = rampart_nft::emit(&policy, &opts)?;
    let mut elements = rampart_nft::static_set_elements(&policy, &opts)?;
    // Feed sets too: an apply resets them to the compile-time snapshot until the next feeds
    // refresh; the plan shows how many live elements that adds and removes (never the list).
    let feeds = rampart_nft::feed_set_elements(&policy, &opts)?;
    let feed_names: Vec<String> = feeds.keys().cloned().collect();
    elements.extend(feeds);
    let state = StateDir::resolve(args.state_dir.as_deref());
    let changes =
        rampart_nft_apply::txn::plan(&Nft::default(), &state, &opts.table, &text, &elements)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&changes)?);
    } else if changes.is_empty() {
        println!("No changes: table inet {} matches the policy.", opts.table);
    } else {
        for c in &changes {
            println!("{c}");
        }
        println!("{} change(s).", changes.len());
        let touched_feed = changes.iter().any(|c| match c {
            rampart_nft::plan::Change::AddElements { set, .. }
            | rampart_nft::plan::Change::RemoveElements { set, .. } => feed_names.contains(set),
            _ => false,
        });
        if touched_feed {
            println!(
                "Note: feed sets ({}) are reset to the policy's snapshot by apply and refilled by `rampart feeds update`.",
                feed_names.join(", ")
            );
        }
    }
    Ok(Outcome::Clean)
}
