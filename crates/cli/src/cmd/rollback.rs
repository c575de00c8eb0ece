//! `rampart rollback`: restore the table as it was before the last apply (or rollback). With
//! `--pending ID` it is the detached watcher `apply --confirm` starts: it waits for the deadline
//! and restores unless `rampart confirm` came first. When a daemon applied the policy, the
//! rollback goes to it over its control socket.

use std::path::PathBuf;

use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::StateDir;
use rampart_nft_apply::txn::{self, WatchOutcome};

use crate::cmd::run::Target;
use crate::Outcome;

/// Arguments of `rampart rollback`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Act as the watcher of pending apply ID (started by `apply --confirm`).
    #[arg(long)]
    pub(crate) pending: Option<String>,
    /// nft table (family inet) Rampart owns (default `rampart`, or the daemon's).
    #[arg(long)]
    pub(crate) table: Option<String>,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`); given, it means the
    /// standalone state even when a daemon runs.
    #[arg(long, conflicts_with = "config")]
    pub(crate) state_dir: Option<PathBuf>,
    /// The daemon's run configuration (default: `$RAMPART_RUN_CONFIG` or
    /// `/etc/rampart/run.toml` when that daemon runs); a daemon that is not running is rolled
    /// back in its state directory directly.
    #[arg(long, conflicts_with = "pending")]
    pub(crate) config: Option<PathBuf>,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let nft = Nft::default();
    if let Some(id) = args.pending {
        // The watcher always works on the state it was started for.
        let state = StateDir::resolve(args.state_dir.as_deref());
        let outcome = txn::watch(&nft, &state, &id)?;
        println!("apply {id}: {outcome:?}");
        return Ok(if outcome == WatchOutcome::RolledBack {
            Outcome::Findings
        } else {
            Outcome::Clean
        });
    }
    let (state_dir, table) =
        match crate::cmd::run::target(args.config.as_deref(), args.state_dir.as_deref())? {
            Target::Daemon(config) => {
                if args.table.as_ref().is_some_and(|t| *t != config.table) {
                    anyhow::bail!(
                        "the daemon owns table inet {}; it cannot roll back another table",
                        config.table
                    );
                }
                println!(
                    "{}",
                    crate::cmd::run::ask(
                        &config,
                        &rampart_daemon::control::ControlRequest::Rollback
                    )?
                );
                return Ok(Outcome::Clean);
            }
            Target::Local { state_dir, table } => (state_dir, args.table.or(table)),
        };
    let state = StateDir::resolve(state_dir.as_deref());
    let table = table.unwrap_or_else(|| "rampart".into());
    txn::rollback(&nft, &state, &table)?;
    println!("rolled back table inet {table} to the previous version");
    Ok(Outcome::Clean)
}
