//! `rampart confirm`: keep a pending `apply --confirm`, cancelling its rollback.

use std::path::PathBuf;

use rampart_nft_apply::state::StateDir;

use crate::Outcome;

/// Arguments of `rampart confirm`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Only confirm this apply id (default: whichever is pending).
    pub(crate) id: Option<String>,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
}

/// Nothing pending (already rolled back, or never applied with `--confirm`) is an error.
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let state = StateDir::resolve(args.state_dir.as_deref());
    let id = rampart_nft_apply::txn::confirm(&state, args.id.as_deref())?;
    println!("confirmed apply {id}; the rollback is cancelled");
    Ok(Outcome::Clean)
}
