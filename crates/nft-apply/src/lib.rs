//! `rampart-nft-apply` is the I/O shell around the pure `rampart-nft` emitter: it runs `nft`
//! (check, atomic apply, terse listings), loads big transactions as one nf_tables netlink batch
//! (nft compiles the table part, Rampart sends the set elements: [`fastload`]), keeps the apply/confirm/rollback state machine in a
//! state directory (`/run/rampart` by default), runs the detached rollback watcher, reads
//! per-rule counters back for `rampart status`, reads NFLOG over netlink for `rampart log`, and
//! guards against lockout with a small reference evaluator of the IR. Non-goals: deciding what
//! the ruleset is (that is `rampart-nft`), parsing policies, and touching any table other than
//! the one it owns.

#![deny(missing_docs)]

pub mod extras;
pub mod fastload;
pub mod guard;
pub mod json;
pub mod nflog;
pub mod nfnl;
pub mod nlsock;
pub mod offload;
pub mod runner;
pub mod state;
pub mod status;
pub mod txn;

use thiserror::Error;

/// Errors of the apply shell.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ApplyError {
    /// Running a program failed (not installed, no permission).
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The cause.
        source: std::io::Error,
    },
    /// `nft` refused the input; the kernel state is unchanged.
    #[error("nft {action} failed: {stderr}")]
    Nft {
        /// What was attempted (`check`, `apply`, `list`).
        action: &'static str,
        /// nft's error output.
        stderr: String,
    },
    /// Reading or writing the state directory failed.
    #[error("state {path}: {source}")]
    State {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A state file holds something this version does not understand.
    #[error("state {path} is corrupt: {reason}")]
    CorruptState {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// There is no pending confirmation with that id (already confirmed, rolled back, or never).
    #[error("no pending apply{}", .0.as_deref().map(|i| format!(" with id {i}")).unwrap_or_default())]
    NoPending(Option<String>),
    /// Nothing to roll back to.
    #[error("no previous ruleset saved in {0}")]
    NoPrevious(String),
    /// The compiled policy cannot be emitted.
    #[error(transparent)]
    Emit(#[from] rampart_nft::EmitError),
    /// The saved live table cannot be reloaded and there is no earlier applied version either.
    #[error("the live table cannot be saved in a reloadable form ({0}); refusing to apply without a way back")]
    Unrestorable(String),
    /// A netlink operation failed.
    #[error("netlink: {0}")]
    Netlink(String),
    /// A kernel setting the ruleset needs could not be read or set in this namespace; nothing
    /// was applied.
    #[error("sysctl {name}: {reason} (the ruleset needs it; nothing was applied)")]
    Sysctl {
        /// The sysctl.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The NFQUEUE rules cannot be spread over the requested queues.
    #[error("queue rules: {0}")]
    Queue(String),
    /// A listing could not be parsed.
    #[error(transparent)]
    Plan(#[from] rampart_nft::plan::PlanError),
}
