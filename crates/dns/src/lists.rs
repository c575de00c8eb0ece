//! Minimal, bounded parsers for domain lists: plain domains, hosts files, `*.x` wildcards and
//! the AdBlock DNS subset `||x^`. `rampart-feeds` will own list formats; this stays small until
//! it replaces these parsers.

use crate::domainset::{MATCH_EXACT, MATCH_SUBDOMAINS};

/// Longest line considered (longer lines are skipped as malformed).
pub const MAX_LINE_BYTES: usize = 1024;

/// Normalises a domain: trims, lower-cases, drops one trailing dot, and checks it is a plausible
/// hostname (letters, digits, `-`, `_`, dots, labels 1–63 bytes, total ≤ 253). `None` otherwise.
pub fn normalise_domain(raw: &str) -> Option<String> {
    let s = raw.trim();
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 {
        return None;
    }
    let mut out = String::with_capacity(s.len());
    for label in s.split('.') {
        if label.is_empty() || label.len() > 63 {
            return None;
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return None;
        }
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(&label.to_ascii_lowercase());
    }
    Some(out)
}

/// One parsed list line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListLine {
    /// A name with match flags.
    Domain(String, u8),
    /// A comment, blank or ignored line.
    Skip,
    /// A line that looked like a rule but could not be parsed.
    Malformed,
}

/// Parses one line of a plain, hosts or AdBlock-subset list.
///
/// * `example.com` → the name and its subdomains (Blocky/dnsmasq semantics);
/// * `*.example.com` → subdomains only; `=example.com` → the exact name only;
/// * `0.0.0.0 a.example b.example` (hosts) → each name and its subdomains;
/// * `||example.com^` → name and subdomains; other AdBlock rules (`@@`, options, paths) are
///   skipped, since they are not DNS-level rules.
pub fn parse_line(line: &str) -> ListLine {
    parse_line_multi(line)
        .into_iter()
        .next()
        .unwrap_or(ListLine::Skip)
}

/// Like [`parse_line`] but returns every name of a hosts line.
pub fn parse_line_multi(line: &str) -> Vec<ListLine> {
    if line.len() > MAX_LINE_BYTES {
        return vec![ListLine::Malformed];
    }
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() || line.starts_with('!') || line.starts_with('[') {
        return vec![ListLine::Skip];
    }
    let both = MATCH_EXACT | MATCH_SUBDOMAINS;
    if let Some(rest) = line.strip_prefix("||") {
        let Some(name) = rest.strip_suffix('^') else {
            return vec![ListLine::Skip];
        };
        return vec![
            normalise_domain(name).map_or(ListLine::Malformed, |n| ListLine::Domain(n, both))
        ];
    }
    if line.starts_with("@@") || line.contains('$') || line.contains('/') {
        return vec![ListLine::Skip];
    }
    let mut tokens = line.split_whitespace();
    let first = tokens.next().unwrap_or("");
    if first.parse::<std::net::IpAddr>().is_ok() {
        let names: Vec<ListLine> = tokens
            .filter(|t| {
                !matches!(
                    *t,
                    "localhost"
                        | "localhost.localdomain"
                        | "local"
                        | "broadcasthost"
                        | "ip6-localhost"
                        | "ip6-loopback"
                        | "0.0.0.0"
                )
            })
            .map(|t| normalise_domain(t).map_or(ListLine::Malformed, |n| ListLine::Domain(n, both)))
            .collect();
        return if names.is_empty() {
            vec![ListLine::Skip]
        } else {
            names
        };
    }
    if tokens.next().is_some() {
        return vec![ListLine::Malformed];
    }
    let (name, flags) = if let Some(rest) = first.strip_prefix("*.") {
        (rest, MATCH_SUBDOMAINS)
    } else if let Some(rest) = first.strip_prefix('=') {
        (rest, MATCH_EXACT)
    } else {
        (first, both)
    };
    vec![normalise_domain(name).map_or(ListLine::Malformed, |n| ListLine::Domain(n, flags))]
}

/// Counts from parsing one list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Names added.
    pub names: usize,
    /// Lines that looked like rules but were not valid.
    pub malformed: usize,
    /// Names dropped because the list hit its entry cap.
    pub over_cap: usize,
}

/// Feeds every name of `text` into `sink`, at most `max_names` of them.
pub fn parse_text(text: &str, max_names: usize, mut sink: impl FnMut(&str, u8)) -> ParseStats {
    let mut stats = ParseStats::default();
    for line in text.lines() {
        for item in parse_line_multi(line) {
            match item {
                ListLine::Domain(n, f) => {
                    if stats.names >= max_names {
                        stats.over_cap += 1;
                    } else {
                        sink(&n, f);
                        stats.names += 1;
                    }
                }
                ListLine::Malformed => stats.malformed += 1,
                ListLine::Skip => {}
            }
        }
    }
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let both = MATCH_EXACT | MATCH_SUBDOMAINS;
        assert_eq!(
            parse_line("Ads.Example.COM."),
            ListLine::Domain("ads.example.com".into(), both)
        );
        assert_eq!(
            parse_line("||track.example^"),
            ListLine::Domain("track.example".into(), both)
        );
        assert_eq!(
            parse_line("*.cdn.example"),
            ListLine::Domain("cdn.example".into(), MATCH_SUBDOMAINS)
        );
        assert_eq!(
            parse_line("=only.example"),
            ListLine::Domain("only.example".into(), MATCH_EXACT)
        );
        assert_eq!(
            parse_line("0.0.0.0 bad.example # c"),
            ListLine::Domain("bad.example".into(), both)
        );
        assert_eq!(parse_line("127.0.0.1 localhost"), ListLine::Skip);
        assert_eq!(parse_line("# comment"), ListLine::Skip);
        assert_eq!(parse_line("! adblock comment"), ListLine::Skip);
        assert_eq!(parse_line("@@||good.example^"), ListLine::Skip);
        assert_eq!(parse_line("||x.example^$third-party"), ListLine::Skip);
        assert_eq!(parse_line("bad name"), ListLine::Malformed);
        assert_eq!(parse_line("a..b"), ListLine::Malformed);
        assert_eq!(parse_line_multi("0.0.0.0 a.example b.example").len(), 2);
    }

    #[test]
    fn caps_are_enforced() {
        let text = "a.example\nb.example\nc.example\n";
        let mut got = Vec::new();
        let st = parse_text(text, 2, |n, _| got.push(n.to_string()));
        assert_eq!(
            st,
            ParseStats {
                names: 2,
                malformed: 0,
                over_cap: 1
            }
        );
    }
}
