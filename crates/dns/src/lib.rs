//! `rampart-dns` owns Rampart's filtering DNS forwarder: a bounded wire codec ([`wire`]), the
//! pure decision engine over domain/regex/IP lists with per-client policy groups and response
//! checks ([`engine`]), the tunnelling/exfiltration detector ([`detector`]), and the tokio shell
//! that listens on UDP/TCP, forwards the client's original bytes to UDP, TCP and DoT upstreams
//! ([`stream`]) with failover, caches answers and swaps lists atomically ([`server`]); domain
//! lists are streamed through `rampart-feeds`' parsers ([`lists`]). Non-goals: recursion,
//! DNSSEC validation, serving DoT/DoH to clients, list download and list formats themselves
//! (owned by `rampart-feeds`), and nftables forced-DNS rules (compiled by the nft backend).

#![deny(missing_docs)]

pub mod cache;
pub mod config;
pub mod detector;
pub mod domainset;
pub mod engine;
pub mod lists;
pub mod metrics;
pub mod psl;
pub mod querylog;
pub mod server;
pub mod stream;
pub mod wire;

pub use config::Config;
pub use server::{serve, Server, ServerHandle};

/// Errors of the DNS component.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The configuration is invalid (parse error, unknown list, bad regex, ...).
    #[error("invalid dns configuration: {0}")]
    Config(String),
    /// A list file could not be read.
    #[error("cannot read list {name} from {path}: {source}")]
    ListRead {
        /// List name.
        name: String,
        /// File path.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Binding a listener failed.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Other socket I/O failed.
    #[error("dns i/o: {0}")]
    Io(#[from] std::io::Error),
}
