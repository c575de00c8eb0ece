//! The L2 guard: DHCP snooping (trusted/untrusted bridge ports, a persisted binding table learned
//! from DHCPACKs and DHCPv6 REPLYs, per-port rate limits), Dynamic ARP Inspection and its IPv6
//! analogue ND inspection against the bindings and static entries, RA guard by port and by
//! router MAC, arpwatch-style flip-flop events, and an LLMNR/NBT-NS/mDNS poisoner canary. Frame
//! decoding, the binding tables, the inspection decisions, the canary and the nft text are pure
//! (time and randomness are inputs); the [`shell`] owns the bridge-family nftables table it
//! applies, the packet sockets it reads and the files it writes. Non-goals: per-program egress
//! and the metadata API (other parts of the project), SLAAC address gleaning, VLAN-aware
//! bindings (tagged frames on untrusted ports are dropped instead).

#![deny(missing_docs)]

pub mod bindings;
pub mod bindings6;
pub mod canary;
pub mod config;
pub mod craft;
pub mod decode;
pub mod engine;
pub mod inspect;
pub mod ruleset;
pub mod shell;

pub use bindings::{Binding, BindingTable, Change};
pub use bindings6::{Binding6, Bindings6};
pub use config::Config;
pub use engine::{Guard, Output};

/// Errors of the guard.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GuardError {
    /// The configuration is invalid (TOML syntax, unknown key, bad value).
    #[error("invalid guard configuration: {0}")]
    Config(String),
    /// The persisted binding file is malformed at `line` (1-based).
    #[error("binding file line {line}: {reason}")]
    BindingsFile {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A socket operation failed.
    #[error("{what}: {source}")]
    Socket {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// `nft` refused a transaction or could not be run.
    #[error("nft {action} failed: {stderr}")]
    Nft {
        /// What the transaction was for.
        action: String,
        /// nft's message.
        stderr: String,
    },
    /// An event could not be written.
    #[error(transparent)]
    Event(#[from] rampart_events::EventError),
}
