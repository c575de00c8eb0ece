//! `rampart-nft` turns a resolved [`rampart_ir::Policy`] into one nftables transaction (a
//! `table inet rampart` that is created, deleted and redefined in a single `nft -f` batch), and
//! diffs two canonical `nft -j` listings of that table for `rampart plan`. It is pure: no
//! processes, no files, no clock (the date for rule expiry is an option). Non-goals: running
//! `nft`, reading kernel state, namespaces, confirm/rollback (all in `rampart-nft-apply`), and
//! tables Rampart does not own (they are never named, flushed or listed).
//!
//! The ruleset layout and how every IR field is compiled are documented in `docs/nft.md`; the
//! short version is in [`emit`].

#![deny(missing_docs)]

pub mod app_queue;
mod emit;
pub mod plan;

pub use emit::{
    emit, feed_set_elements, rule_comment, static_set_elements, EmitOptions, BAN_LOG_PREFIX_STEM,
    LOG_PREFIX_STEM,
};

use thiserror::Error;

/// Why a policy cannot be compiled to nftables.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum EmitError {
    /// A service lists ports or ICMP types but no protocol.
    #[error("rule `{rule}`: ports or ICMP types need a protocol")]
    DetailWithoutProtocol {
        /// Rule name.
        rule: String,
    },
    /// Ports were given for a protocol other than TCP or UDP.
    #[error("rule `{rule}`: ports are only supported for tcp and udp, not protocol {protocol}")]
    PortsOnPortlessProtocol {
        /// Rule name.
        rule: String,
        /// The protocol number.
        protocol: u8,
    },
    /// ICMP types were given for a protocol other than ICMP or ICMPv6.
    #[error(
        "rule `{rule}`: ICMP types are only supported for icmp and icmpv6, not protocol {protocol}"
    )]
    IcmpTypesOnNonIcmp {
        /// Rule name.
        rule: String,
        /// The protocol number.
        protocol: u8,
    },
    /// A port range with `lo > hi`.
    #[error("rule `{rule}`: empty port range {lo}-{hi}")]
    EmptyPortRange {
        /// Rule name.
        rule: String,
        /// First port.
        lo: u16,
        /// Last port.
        hi: u16,
    },
    /// An interface name nft cannot express (empty, too long, a quote, a `*` not at the end).
    #[error("zone `{zone}`: interface name `{name}` is not valid for nft")]
    BadInterface {
        /// Zone name.
        zone: String,
        /// The offending name.
        name: String,
    },
    /// A rate period other than a second, minute, hour, day or week.
    #[error("rule `{rule}`: rate period of {per_s} s is not one nft supports (1, 60, 3600, 86400, 604800)")]
    UnsupportedRatePeriod {
        /// Rule name.
        rule: String,
        /// The period.
        per_s: u32,
    },
    /// A limit of zero units per period, or a bucket larger than the kernel's 32-bit burst.
    #[error("rule `{rule}`: rate limit {rate} with bucket {burst} cannot be expressed")]
    BadLimit {
        /// Rule name.
        rule: String,
        /// Rate.
        rate: u64,
        /// Bucket.
        burst: u64,
    },
    /// A byte limit whose bucket is smaller than one period's rate: the kernel's byte bucket is
    /// always `rate + burst`, so it cannot be smaller than `rate`.
    #[error("rule `{rule}`: byte limit bucket {burst} is smaller than the rate {rate}; nft byte buckets are at least one period's rate")]
    ByteBucketBelowRate {
        /// Rule name.
        rule: String,
        /// Rate.
        rate: u64,
        /// Requested bucket.
        burst: u64,
    },
    /// A connection limit of zero (the rule could never match; almost certainly a mistake).
    #[error("rule `{rule}`: a connection limit of 0 never matches")]
    ZeroConnLimit {
        /// Rule name.
        rule: String,
    },
    /// Socket owner matches outside egress (there is no local socket owner to match).
    #[error("rule `{rule}`: owner matches (uid, gid, cgroup) only work on egress rules, not {direction}")]
    OwnerOutsideEgress {
        /// Rule name.
        rule: String,
        /// The rule's direction.
        direction: String,
    },
    /// A cgroup path nft cannot express.
    #[error("rule `{rule}`: cgroup path `{path}` is not valid (relative, no `..`, no quotes)")]
    BadCgroupPath {
        /// Rule name.
        rule: String,
        /// The path.
        path: String,
    },
    /// A rule refers to a zone or set id that does not exist.
    #[error("rule `{rule}`: refers to a missing {what} #{id}")]
    DanglingReference {
        /// Rule name.
        rule: String,
        /// `zone` or `set`.
        what: &'static str,
        /// The id.
        id: u32,
    },
    /// Two zones or sets map to the same nft identifier.
    #[error("`{first}` and `{second}` map to the same nft name `{nft_name}`")]
    NameCollision {
        /// One name.
        first: String,
        /// The other.
        second: String,
        /// The nft identifier both map to.
        nft_name: String,
    },
    /// A rule expands into more nft rules than the limit (from × to × services × families).
    #[error("rule `{rule}` expands into {count} nft rules (limit {limit}); use sets or zones instead of long peer lists")]
    TooManyAlternatives {
        /// Rule name.
        rule: String,
        /// Expansion size.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// The table name is not a plain nft identifier.
    #[error("table name `{0}` is not a plain identifier")]
    BadTableName(String),
    /// A SYN proxy on a rule it cannot apply to (not a TCP `accept` rule with destination ports
    /// in ingress or forward), or with parameters the kernel refuses.
    #[error("rule `{rule}`: synproxy {reason}")]
    BadSynproxy {
        /// Rule name.
        rule: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An auto-ban on a rule it cannot apply to (not an `accept` rule in ingress or forward
    /// with a per-source limit or a connection cap), or a timeout out of range.
    #[error("rule `{rule}`: ban {reason}")]
    BadBan {
        /// Rule name.
        rule: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// An application-protocol rule with a feature the NFQUEUE path cannot honour.
    #[error("rule `{rule}`: application-protocol match {reason}")]
    BadAppRule {
        /// Rule name.
        rule: String,
        /// What is wrong.
        reason: &'static str,
    },
}
