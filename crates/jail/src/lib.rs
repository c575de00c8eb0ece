//! Per-program egress (ATT&CK T1218/T1218.012, the seed's "deny egress from verclsid"): the exec
//! jail. netfilter cannot match an executable, but it can match a socket's cgroup (nft
//! `socket cgroupv2`), so this crate makes "the process runs program X" mean "the process is in
//! cgroup `<root>/<name>`": it holds every exec of a named program with fanotify
//! `FAN_OPEN_EXEC_PERM`, moves the exec'ing process into the program's cgroup, and only then lets
//! the exec proceed, so there is no window in which the program runs outside its cgroup. Identity
//! is the file's inode (hard links are caught), and optionally its SHA-256 (copies anywhere on a
//! watched mount are caught). Policy rules then name the cgroup in `owner.cgroups` (written
//! `owner = { program = [...] }` when the policy declares the programs; [`Config::from_policy`]
//! runs the jail from those declarations). The configuration and the exec decision are pure ([`Config`], [`Identities`]); [`Jail`] is the
//! shell (fanotify, cgroupfs, `/proc`). Non-goals: per-destination allowlists (the policy's
//! rules do that), and stopping root, who can always leave a cgroup.

#![deny(missing_docs)]

mod config;
mod decide;
mod shell;

pub use config::{Config, Program, MAX_PATHS_PER_PROGRAM, MAX_PROGRAMS};
pub use decide::{ExecFacts, FileId, Identities};
pub use shell::{cgroup2_mount, Jail, JailStats};

use std::path::PathBuf;

/// Everything that can go wrong configuring or running the jail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JailError {
    /// The configuration is not valid TOML or breaks a rule; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// A configured program path cannot be inspected.
    #[error("program `{program}`: cannot stat {path}: {source}")]
    Program {
        /// Program name.
        program: String,
        /// The path that failed.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No cgroup v2 hierarchy is mounted.
    #[error("no cgroup v2 hierarchy mounted (looked in /proc/self/mountinfo)")]
    NoCgroup2,
    /// A cgroup could not be created or written.
    #[error("cgroup {path}: {source}")]
    Cgroup {
        /// The cgroup directory or file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// fanotify refused (needs CAP_SYS_ADMIN and a kernel with FAN_OPEN_EXEC_PERM).
    #[error("fanotify {what}: {source}")]
    Fanotify {
        /// Which call.
        what: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// Writing an event failed.
    #[error(transparent)]
    Event(#[from] rampart_events::EventError),
}
