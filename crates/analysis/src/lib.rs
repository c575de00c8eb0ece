//! Pure analysis of a Rampart IR policy: `check` (shadowed, partially shadowed and redundant
//! rules, IPv4-only scope, risky accepts of abused protocols, egress from public-facing zones,
//! expired rules, risky defaults) and `coverage` (status of each of the 50 ATT&CK techniques
//! of M1037, with the rules and components that really provide it, and an ATT&CK Navigator
//! layer). Matching is computed exactly over the packet space (addresses and ports as
//! intervals, interfaces and owners as atoms, see [`space`]); nothing is sampled. Non-goals: no
//! parsing (the policy crate builds the IR), no I/O, no clock (`today` is a parameter), no
//! packet-level emulation of rate limits (a limited rule is treated as "may not match").

#![deny(missing_docs)]

mod check;
mod coverage;
mod engine;
mod model;
pub mod space;

pub use check::{
    check, Detail, Finding, Overlap, Report, Severity, Summary, EXPIRY_NOTICE_DAYS, RISKY_SERVICES,
};
pub use coverage::{
    coverage, navigator_layer, requirement, Check, ComponentRef, Coverage, CoverageSummary, Expect,
    Query, Requirement, RuleRef, Side, Status, Svc, TechniqueCoverage, NON_TCP_UDP,
};
pub use engine::{EXACT_CUBES, MAX_CUBES};
pub use model::Model;
