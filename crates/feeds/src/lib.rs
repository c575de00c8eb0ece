//! Threat-intelligence feeds for Rampart: parsing every common IP and domain blocklist format
//! (streaming, bounded, every bad line reported and skipped), normalisation (exact CIDR
//! aggregation, allowlist subtraction with a report, family and singles/prefixes splits; domain
//! case/IDNA/wildcard rules), feed sources with an on-disk last-good cache, conditional HTTP
//! requests and sanity checks that refuse suspicious new versions, gap-free kernel set refresh
//! through one `nft -f` transaction per refresh, and typed refresh events. Pure modules
//! (`parse`, `format`, `stix`, `cidr`, `domain`, `check`, `sync` script building, `event`) do
//! no I/O and read no clock; `source` (files, HTTP, cache) and `sync::apply` (spawning `nft`)
//! are the shell. Non-goals: the CLI (the lead wires `rampart feeds …` onto [`check`],
//! [`source`] and [`sync`]), the nft table layout (owned by `rampart-nft`; [`sync`] follows its
//! set names), and answering DNS queries (the DNS filter consumes [`domain`] and the domain
//! parsers).

#![deny(missing_docs)]

pub mod check;
pub mod cidr;
pub mod domain;
pub mod event;
pub mod format;
pub mod parse;
pub mod source;
mod stix;
pub mod sync;

pub use check::{check_bytes, check_file, CheckReport};
pub use cidr::{aggregate, normalize, FamilyNets, NormalizedNets, SubtractReport};
pub use domain::{normalize_domain, DomainAction, DomainError, DomainRule, Scope};
pub use format::{detect, FeedKind, Format, FormatError};
pub use parse::{parse_bytes, parse_reader, LineError, LineReason, ParseStats, Parsed};

/// Stable-toolchain fuzzing entry points (`cargo fuzz` needs nightly): drive every parser with
/// arbitrary bytes. Used by the proptests and the committed corpus test.
pub mod fuzzing {
    use crate::format::Format;
    use crate::parse::parse_bytes;

    /// Every format, with options that exercise the option paths.
    pub fn all_formats() -> Vec<Format> {
        [
            "plain",
            "spamhaus",
            "tor",
            "ipsum:min=2",
            "csv:column=2,header",
            "csv:column=1,delimiter=;",
            "hosts",
            "domains",
            "domains:subtree",
            "adblock",
            "dnsmasq",
            "unbound",
            "rpz",
            "stix",
        ]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
    }

    /// Run detection, every parser and normalisation on `data`. Must never panic.
    pub fn run_all(data: &[u8]) -> usize {
        let mut total = 0;
        let _ = crate::format::detect(data);
        for f in all_formats() {
            let p = parse_bytes(data, &f, "fuzz");
            let n = crate::cidr::normalize(&p.nets, &p.allow_nets);
            let mut d = p.domains.clone();
            crate::domain::dedupe_rules(&mut d);
            total += n.len() + d.len() + p.errors.len();
        }
        total
    }
}
