//! The egress (forward) proxy: per-source destination allowlists (hosts, `*.domain`, ports), deny
//! lists from feeds, SSRF-safe resolution that checks every resolved address against the special-
//! purpose ranges and connects to the checked address, CONNECT with the TLS ClientHello's SNI
//! checked against the CONNECT host, request-property rules (user agent, method, upload size), and
//! one decision event per request. The decision core ([`policy`], [`addr`], [`http`], [`tls`]) is
//! pure; the proxy shell ([`server`]) runs on tokio. It does not intercept TLS, does not cache
//! responses, and does not speak HTTP/2 to clients (CONNECT tunnels carry any protocol inside TLS).

#![deny(missing_docs)]

pub mod addr;
pub mod config;
pub mod eventlog;
pub mod fuzzing;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod resolve;
pub mod server;
#[doc(hidden)]
pub mod testkit;
pub mod tls;

pub use config::Config;
pub use metrics::Metrics;
pub use policy::{Action, Decision, Policy, Reason};
pub use server::{Server, ServerHandle};

/// Errors of the egress proxy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EgressError {
    /// The configuration is invalid (TOML, patterns, lists, users).
    #[error("invalid egress configuration: {0}")]
    Config(String),
    /// A list file could not be read.
    #[error("cannot read list {name} from {path}: {source}")]
    ListRead {
        /// List name.
        name: String,
        /// File path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// Address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The event log could not be opened.
    #[error("cannot open the event log {path}: {source}")]
    Log {
        /// File path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}
