//! `rampart feeds check FILE`: parse a document, normalise it, and report what it holds and
//! what was rejected, without touching the kernel.

use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cidr::{normalize, NormalizedNets};
use crate::domain::{dedupe_rules, DomainAction};
use crate::format::{detect, Format, DETECT_PREFIX_BYTES};
use crate::parse::{parse_reader, LineError, ParseStats};

/// What a check found.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// The file as named.
    pub file: String,
    /// The format used.
    pub format: Format,
    /// Whether the format was detected from content (not given).
    pub detected: bool,
    /// Line counters.
    pub stats: ParseStats,
    /// Address entries as read (before normalisation).
    pub raw_nets: u64,
    /// IPv4 kernel elements after aggregation and allowlist subtraction.
    pub v4_elements: u64,
    /// IPv6 kernel elements after aggregation and allowlist subtraction.
    pub v6_elements: u64,
    /// Of those, single addresses (hash-set candidates).
    pub singles: u64,
    /// Of those, real prefixes (interval-set candidates).
    pub prefixes: u64,
    /// IPv4 addresses covered after normalisation.
    pub v4_addresses: u128,
    /// Prefixes removed by the allowlist (minimal cover).
    pub subtracted: Vec<ipnet::IpNet>,
    /// Domain block rules after dedupe.
    pub domains_block: u64,
    /// Domain allow (exception) rules after dedupe.
    pub domains_allow: u64,
    /// Rejected lines (bounded).
    pub errors: Vec<LineError>,
}

/// Errors of [`check_file`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// No format was given and none could be detected.
    #[error("cannot detect the format of {0}; pass one explicitly")]
    Undetected(String),
}

/// Build the report from parsed content (pure).
fn report(
    file: &str,
    format: Format,
    detected: bool,
    parsed: crate::parse::Parsed,
    allow: &[ipnet::IpNet],
) -> CheckReport {
    let mut allow_all = allow.to_vec();
    allow_all.extend_from_slice(&parsed.allow_nets);
    let norm: NormalizedNets = normalize(&parsed.nets, &allow_all);
    let mut domains = parsed.domains;
    dedupe_rules(&mut domains);
    let allow_count = domains
        .iter()
        .filter(|d| d.action == DomainAction::Allow)
        .count() as u64;
    let (v4_addresses, _) = crate::cidr::FamilyRanges::from_nets(&norm.nets.v4).address_counts();
    CheckReport {
        file: file.to_string(),
        format,
        detected,
        stats: parsed.stats,
        raw_nets: parsed.nets.len() as u64,
        v4_elements: norm.nets.v4.len() as u64,
        v6_elements: norm.nets.v6.len() as u64,
        singles: norm.singles.len() as u64,
        prefixes: norm.prefixes.len() as u64,
        v4_addresses,
        subtracted: norm.subtracted.removed,
        domains_block: domains.len() as u64 - allow_count,
        domains_allow: allow_count,
        errors: parsed.errors,
    }
}

/// Check an in-memory document. `format: None` detects it; `allow` is subtracted.
pub fn check_bytes(
    data: &[u8],
    file: &str,
    format: Option<Format>,
    allow: &[ipnet::IpNet],
) -> Option<CheckReport> {
    let (format, detected) = match format {
        Some(f) => (f, false),
        None => (detect(data)?, true),
    };
    let parsed = crate::parse::parse_bytes(data, &format, file);
    Some(report(file, format, detected, parsed, allow))
}

/// Check a file, streaming it (only the detection prefix is read twice).
pub fn check_file(
    path: &Path,
    format: Option<Format>,
    allow: &[ipnet::IpNet],
) -> Result<CheckReport, CheckError> {
    let name = path.display().to_string();
    let read_err = |source| CheckError::Read {
        path: name.clone(),
        source,
    };
    let (format, detected) = match format {
        Some(f) => (f, false),
        None => {
            use std::io::Read;
            let mut head = Vec::new();
            std::fs::File::open(path)
                .map_err(read_err)?
                .take(DETECT_PREFIX_BYTES as u64)
                .read_to_end(&mut head)
                .map_err(read_err)?;
            (
                detect(&head).ok_or_else(|| CheckError::Undetected(name.clone()))?,
                true,
            )
        }
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let parsed = parse_reader(BufReader::new(file), &format, &name).map_err(read_err)?;
    Ok(report(&name, format, detected, parsed, allow))
}

/// `rampart feeds show NAME`: the cached last good version of a feed, its metadata and its
/// check report (`None` when nothing is cached).
pub fn show(
    cache: &crate::source::Cache,
    name: &str,
    format: &Format,
    allow: &[ipnet::IpNet],
) -> Option<(crate::source::CacheMeta, CheckReport)> {
    let meta = cache.meta(name)?;
    let data = cache.data(name)?;
    let url = meta.url.clone();
    let report = check_bytes(&data, &url, Some(format.clone()), allow)?;
    Some((meta, report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_counts() {
        let doc = b"# feed\n192.0.2.0/25\n192.0.2.128/25\n198.51.100.7\nbad\n2001:db8::1\n";
        let r = check_bytes(doc, "f", None, &["198.51.100.0/24".parse().unwrap()]).unwrap();
        assert!(r.detected);
        assert_eq!(r.format, Format::Plain);
        assert_eq!(r.raw_nets, 4);
        assert_eq!(r.v4_elements, 1);
        assert_eq!(r.v6_elements, 1);
        assert_eq!(r.singles, 1);
        assert_eq!(r.prefixes, 1);
        assert_eq!(r.v4_addresses, 256);
        assert_eq!(
            r.subtracted,
            vec!["198.51.100.7/32".parse::<ipnet::IpNet>().unwrap()]
        );
        assert_eq!(r.errors.len(), 1);
        assert_eq!(r.errors[0].line, 5);
    }

    #[test]
    fn show_reads_the_cache() {
        let dir = std::env::temp_dir().join(format!("rampart-feeds-show-{}", std::process::id()));
        let cache = crate::source::Cache::new(&dir);
        assert!(show(&cache, "x", &Format::Plain, &[]).is_none());
        let meta = crate::source::CacheMeta {
            url: "https://feeds.example/x".into(),
            entries: 2,
            ..Default::default()
        };
        cache.store("x", b"192.0.2.1\n192.0.2.2\n", &meta).unwrap();
        let (m, r) = show(&cache, "x", &Format::Plain, &[]).unwrap();
        assert_eq!(m.entries, 2);
        assert_eq!(r.file, "https://feeds.example/x");
        // .1 and .2 are adjacent but not one prefix.
        assert_eq!(r.v4_elements, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn domain_report() {
        let doc = b"||a.example.com^\n||b.a.example.com^\n@@||ok.example.com^\n";
        let r = check_bytes(doc, "f", None, &[]).unwrap();
        assert_eq!(r.format, Format::Adblock);
        assert_eq!(r.domains_block, 1);
        assert_eq!(r.domains_allow, 1);
    }
}
