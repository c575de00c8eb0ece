//! The WAF: a SecLang engine that loads the OWASP Core Rule Set as users have it (`crs-setup.conf`,
//! `rules/*.conf`, `*.data`) and evaluates requests and responses with CRS's variables, operators,
//! transformations, actions and anomaly scoring, built-in SSRF/metadata protections, and the
//! reverse-proxy shell (`rampart waf`) that puts it in front of backends. Rule parsing and
//! evaluation are pure (text and request data in, decisions out); file loading ([`files`]) and
//! the proxy do the I/O. Non-goals: persistent collections across requests (IP/GLOBAL live for
//! one transaction), XPath beyond `/*` and `//@*`, audit-log formats.

pub mod body;
pub mod files;
mod fold;
pub mod ftw;
pub mod injection;
pub mod ops;
pub mod prefilter;
pub mod proxy;
pub mod rules;
pub mod seclang;
pub mod ssrf;
pub mod transform;
pub mod tx;

pub use body::{Request, Response};
pub use rules::{EngineMode, RuleSet};
pub use tx::{evaluate, Engine, Intervention, MatchedRule, Transaction, TxOptions};

/// Errors while loading SecLang configuration.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A directive name this engine does not know.
    #[error("{file}:{line}: unknown directive {name}")]
    UnknownDirective {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// Directive as written.
        name: String,
    },
    /// Malformed directive, action, target or operator.
    #[error("{file}:{line}: {message}")]
    Syntax {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// An `@rx` pattern the regex engine cannot compile.
    #[error("{file}:{line}: regex does not compile ({message}): {pattern}")]
    Regex {
        /// File.
        file: String,
        /// Line.
        line: usize,
        /// The pattern.
        pattern: String,
        /// Compiler message.
        message: String,
    },
    /// A file could not be read.
    #[error("{path}: {message}")]
    Io {
        /// Path.
        path: String,
        /// OS error text.
        message: String,
    },
}
