//! `rampart run`: the daemon that runs a whole policy as one service. It owns the run
//! configuration (which policy, which components with which configuration files), supervision
//! of the components as child processes of the one `rampart` binary (restart with backoff, every
//! start, exit and restart an event; a crashed component never touches the kernel ruleset, which
//! only `rampart apply` changes), reload (validate and apply the new policy first, then signal
//! the components; a bad policy changes nothing), the events store (every component's events into
//! JSON lines and an SQLite database with retention limits, queried by `rampart events`), the
//! root-only control socket (status, reload, confirm and rollback of the pending apply, event
//! streaming), and the loopback HTTP listener with Prometheus `/metrics`, a JSON
//! API and the dashboard. Pure parts: [`RunConfig`] validation, [`Backoff`], [`store::Query`]
//! building, [`metrics::render`] and the fail-open redirects ([`failover`]: a DNS forwarder that
//! is down can have its queries sent to its upstream, unfiltered, from a table of the daemon's
//! own). Non-goals: the components' own logic (each lives in its
//! crate and runs as `rampart <component>`), and sandboxing beyond a process, a user and a
//! capability set per component (no namespaces or seccomp filters of its own).

#![deny(missing_docs)]

pub mod config;
pub mod control;
pub mod daemon;
pub mod failover;
pub mod http;
pub mod metrics;
pub mod store;
pub mod supervisor;
pub mod tail;

pub use config::{Account, ComponentConfig, ComponentKind, OnDown, RunConfig};
pub use daemon::{Daemon, DaemonHandle};
pub use supervisor::Backoff;

use std::path::PathBuf;

/// Everything that can go wrong in the daemon.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The run configuration is invalid; the message names the key.
    #[error("run configuration: {0}")]
    Config(String),
    /// A file or socket could not be used.
    #[error("{path}: {source}")]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The events database failed.
    #[error("events store {path}: {source}")]
    Store {
        /// The database file.
        path: PathBuf,
        /// Why.
        source: rusqlite::Error,
    },
    /// Applying the policy failed; the kernel ruleset is unchanged.
    #[error("policy not applied, the running ruleset is unchanged: {0}")]
    Apply(String),
    /// The policy enables a component the run configuration neither runs nor declares as
    /// running elsewhere; nothing was started or applied.
    #[error("{0}")]
    ComponentsNotRun(String),
    /// A control request was malformed or refused.
    #[error("control: {0}")]
    Control(String),
}

impl DaemonError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
