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
pub mod runner;
pub mod source;
mod stix;
pub mod sync;

pub use check::{check_bytes, check_file, CheckReport};
pub use cidr::{aggregate, normalize, FamilyNets, NormalizedNets, SubtractReport};
pub use domain::{normalize_domain, DomainAction, DomainError, DomainRule, Scope};
pub use format::{detect, FeedKind, Format, FormatError};
pub use parse::{parse_bytes, parse_reader, LineError, LineReason, ParseStats, Parsed};

/// Test and benchmark support: stable-toolchain fuzzing entry points (`cargo fuzz` needs
/// nightly) that drive every parser with arbitrary bytes, and a seeded synthetic feed generator.
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

    /// A seeded synthetic IP feed of `lines` lines: 70% single IPv4 addresses, 12% IPv4
    /// prefixes (/16–/30), 6% IPv6 addresses and prefixes, 2% ranges, 6% comments or blanks,
    /// 2% inline comments, 2% garbage lines. Deterministic for a seed (xorshift64*).
    pub fn synthetic_feed(lines: usize, seed: u64) -> Vec<u8> {
        use std::fmt::Write as _;
        let mut state = seed.max(1);
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let mut out = String::with_capacity(lines * 16);
        for _ in 0..lines {
            let r = next();
            let a = std::net::Ipv4Addr::from((r >> 32) as u32);
            match r % 100 {
                0..=69 => {
                    let _ = writeln!(out, "{a}");
                }
                70..=81 => {
                    let len = 16 + (r >> 8) % 15;
                    let net = ipnet::Ipv4Net::new(a, len as u8).map(|n| n.trunc());
                    if let Ok(n) = net {
                        let _ = writeln!(out, "{n}");
                    }
                }
                82..=87 => {
                    let b = next();
                    let v6 = std::net::Ipv6Addr::new(
                        0x2001,
                        0xdb8,
                        (b >> 48) as u16,
                        (b >> 32) as u16,
                        (b >> 16) as u16,
                        b as u16,
                        0,
                        1,
                    );
                    if r % 2 == 0 {
                        let _ = writeln!(out, "{v6}");
                    } else {
                        let _ = writeln!(out, "{v6}/64");
                    }
                }
                88..=89 => {
                    let end = std::net::Ipv4Addr::from(((r >> 32) as u32).saturating_add(50));
                    let _ = writeln!(out, "{a}-{end}");
                }
                90..=95 => {
                    if r % 2 == 0 {
                        out.push_str("# comment line\n");
                    } else {
                        out.push('\n');
                    }
                }
                96..=97 => {
                    let _ = writeln!(out, "{a} # seen 3 times");
                }
                _ => out.push_str("not-an-address\n"),
            }
        }
        out.into_bytes()
    }
}
