//! `rampart rollback`: restore the table as it was before the last apply (or rollback). With
//! `--pending ID` it is the detached watcher `apply --confirm` starts: it waits for the deadline
//! and restores unless `rampart confirm` came first.

use std::path::PathBuf;

use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::StateDir;
use rampart_nft_apply::txn::{self, WatchOutcome};

use crate::Outcome;

/// Arguments of `rampart rollback`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Act as the watcher of pending apply ID (started by `apply --confirm`).
    #[arg(long)]
    pub(crate) pending: Option<String>,
    /// nft table (family inet) Rampart owns.
    #[arg(long, default_value = "rampart")]
    pub(crate) table: String,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let state = StateDir::resolve(args.state_dir.as_deref());
    let nft = Nft::default();
    if let Some(id) = args.pending {
        let outcome = txn::watch(&nft, &state, &id)?;
        println!("apply {id}: {outcome:?}");
        return Ok(if outcome == WatchOutcome::RolledBack {
            Outcome::Findings
        } else {
            Outcome::Clean
        });
    }
    txn::rollback(&nft, &state, &args.table)?;
    println!(
        "rolled back table inet {} to the previous version",
        args.table
    );
    Ok(Outcome::Clean)
}
