//! `rampart confirm`: keep a pending `apply --confirm`, cancelling its rollback. When a daemon
//! applied the policy (run configuration `confirm_s`), the request goes to it over its control
//! socket: it owns the pending apply and its timer.

use std::path::PathBuf;

use rampart_daemon::control::ControlRequest;
use rampart_nft_apply::state::StateDir;

use crate::cmd::run::Target;
use crate::Outcome;

/// Arguments of `rampart confirm`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Only confirm this apply id (default: whichever is pending).
    pub(crate) id: Option<String>,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`); given, it means the
    /// standalone state even when a daemon runs.
    #[arg(long, conflicts_with = "config")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The daemon's run configuration (default: `$RAMPART_RUN_CONFIG` or
    /// `/etc/rampart/run.toml` when that daemon runs); a daemon that is not running is confirmed
    /// in its state directory directly.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
}

/// Nothing pending (already rolled back, or never applied with `--confirm`) is an error.
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    match crate::cmd::run::target(args.config.as_deref(), args.state_dir.as_deref())? {
        Target::Daemon(config) => {
            let message = crate::cmd::run::ask(&config, &ControlRequest::Confirm { id: args.id })?;
            println!("{message}");
        }
        Target::Local { state_dir, .. } => {
            let state = StateDir::resolve(state_dir.as_deref());
            let id = rampart_nft_apply::txn::confirm(&state, args.id.as_deref())?;
            println!("confirmed apply {id}; the rollback is cancelled");
        }
    }
    Ok(Outcome::Clean)
}
