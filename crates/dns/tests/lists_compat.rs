//! The `auto` list syntax moved from a stand-in parser to `rampart-feeds`' parsers; this proves
//! the move kept behaviour. `legacy` below is the stand-in, copied verbatim from the commit
//! before the move (`crates/dns/src/lists.rs` at 13071b8), and is the oracle: for generated
//! lines and for every real list in `shared/data/domains`, both must yield the same names with
//! the same match flags and the same malformed count, except for the deliberate differences
//! listed in [`Difference`], which the test names and counts.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;
use rampart_dns::lists::auto_names;

#[allow(dead_code)]
mod legacy {
    //! Verbatim copy of the stand-in parser (only `crate::domainset` paths changed).
    use rampart_dns::domainset::{MATCH_EXACT, MATCH_SUBDOMAINS};

    pub const MAX_LINE_BYTES: usize = 1024;

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

    #[derive(Clone, Debug, PartialEq, Eq)]
    pub enum ListLine {
        Domain(String, u8),
        Skip,
        Malformed,
    }

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
                .map(|t| {
                    normalise_domain(t).map_or(ListLine::Malformed, |n| ListLine::Domain(n, both))
                })
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
}

/// Deliberate differences of the feeds-based parser.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Difference {
    /// Internationalised names: the stand-in rejected non-ASCII; feeds converts them to
    /// punycode (IDNA, UTS #46).
    Idna,
    /// Hosts housekeeping names (`ip6-allnodes`, `ip6-localnet`, ...) and IP-address tokens on
    /// hosts lines: the stand-in blocked them as names; feeds skips them.
    HostsHousekeeping,
    /// An IP literal after `*.` or `=`, or inside `||…^`: the stand-in took it as a name;
    /// feeds rejects it.
    IpLiteralName,
}

fn classify(line: &str) -> Option<Difference> {
    let body = line.split('#').next().unwrap_or("");
    if !body.is_ascii() {
        return Some(Difference::Idna);
    }
    let mut toks = body.split_whitespace();
    let first = toks.next().unwrap_or("");
    if first.parse::<std::net::IpAddr>().is_ok() {
        let housekeeping = |t: &str| {
            let t = t.to_ascii_lowercase();
            t.starts_with("ip6-") || t.parse::<std::net::IpAddr>().is_ok()
        };
        if toks.any(housekeeping) {
            return Some(Difference::HostsHousekeeping);
        }
    }
    // Adblock `||name^` (the stand-in trimmed spaces inside it).
    let adblock = body
        .trim()
        .strip_prefix("||")
        .and_then(|r| r.strip_suffix('^'))
        .map(str::trim);
    let rest = first
        .strip_prefix("*.")
        .or_else(|| first.strip_prefix('='))
        .or(adblock)
        .unwrap_or("");
    if rest
        .trim_end_matches('.')
        .parse::<std::net::IpAddr>()
        .is_ok()
    {
        return Some(Difference::IpLiteralName);
    }
    None
}

type Outcome = (Vec<(String, u8)>, usize);

fn old(text: &str) -> Outcome {
    let mut names = Vec::new();
    let mut malformed = 0;
    for line in text.lines() {
        for item in legacy::parse_line_multi(line) {
            match item {
                legacy::ListLine::Domain(n, f) => names.push((n, f)),
                legacy::ListLine::Malformed => malformed += 1,
                legacy::ListLine::Skip => {}
            }
        }
    }
    (names, malformed)
}

fn new(text: &str) -> Outcome {
    let (names, st) = auto_names(text);
    (names, st.malformed)
}

/// Compares line by line; returns the differences seen, by kind. Panics on any difference
/// that is not a listed one.
fn compare_lines(text: &str, origin: &str) -> BTreeMap<Difference, usize> {
    let mut diffs = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let (o, n) = (old(line), new(line));
        if o == n {
            continue;
        }
        match classify(line) {
            Some(d) => *diffs.entry(d).or_insert(0) += 1,
            None => panic!(
                "{origin}:{}: {line:?}\n  stand-in: {o:?}\n  feeds:    {n:?}",
                i + 1
            ),
        }
    }
    diffs
}

#[test]
fn hand_picked_lines_match_the_stand_in() {
    let lines = [
        "example.com",
        "Ads.Example.COM.",
        "  spaced.example  ",
        "a.b.c.d.example # trailing comment",
        "*.cdn.example",
        "=only.example",
        "||track.example^",
        "||TRACK.example.^",
        "||x.example",
        "||x.example^$third-party",
        "||x.example^|",
        "||a/b^",
        "||a b^",
        "|x.example^",
        "@@||good.example^",
        "example.com/path",
        "$x",
        "0.0.0.0 bad.example",
        "127.0.0.1 localhost",
        "127.0.0.1 localhost.localdomain local broadcasthost",
        "::1 ip6-localhost ip6-loopback",
        "0.0.0.0 0.0.0.0",
        "0.0.0.0 a.example b.example c.example",
        "0.0.0.0 a.example bad_name! b.example",
        "192.0.2.1 redirect.example",
        "0.0.0.0",
        "# comment",
        "! comment",
        "[Adblock Plus 2.0]",
        "",
        "   ",
        "bad name",
        "a..b",
        ".leading.example",
        "trailing..",
        "*.",
        "=",
        "*.*.x.example",
        "=*.x.example",
        "=!x",
        "*.!x",
        "under_score.example",
        "-dash.example",
        "x.-dash",
        &"a".repeat(63),
        &format!("{}.example", "a".repeat(64)),
        &format!("{}.x", vec!["abcdefghi"; 25].join(".")),
        &format!("{}.x", vec!["abcdefghi"; 26].join(".")),
        &"b".repeat(1025),
        "bücher.example",
        "0.0.0.0 ip6-allnodes",
        "*.192.0.2.1",
        "=192.0.2.1",
        "||192.0.2.1^",
        "1.2.3.4",
        "xn--bcher-kva.example",
        "a\tb",
        "name.example\r",
    ];
    let text = lines.join("\n");
    let diffs = compare_lines(&text, "hand-picked");
    assert_eq!(
        diffs,
        BTreeMap::from([
            (Difference::Idna, 1),
            (Difference::HostsHousekeeping, 1),
            (Difference::IpLiteralName, 3)
        ]),
        "exactly the listed differences"
    );
}

fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("example".to_string()),
        Just("Ads".to_string()),
        Just("co.uk".to_string()),
        Just("*.".to_string()),
        Just("=".to_string()),
        Just("||".to_string()),
        Just("^".to_string()),
        Just("@@".to_string()),
        Just("$".to_string()),
        Just("/".to_string()),
        Just("#".to_string()),
        Just("!".to_string()),
        Just(".".to_string()),
        Just("..".to_string()),
        Just(" ".to_string()),
        Just("\t".to_string()),
        Just("0.0.0.0 ".to_string()),
        Just("::1 ".to_string()),
        Just("_".to_string()),
        Just("-".to_string()),
        Just("localhost".to_string()),
        "[a-z0-9]{1,12}",
        "[a-z]{60,66}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn generated_lines_match_the_stand_in(parts in proptest::collection::vec(token(), 1..8)) {
        let line: String = parts.concat();
        let (o, n) = (old(&line), new(&line));
        if o != n {
            prop_assert!(classify(&line).is_some(), "{line:?}\n  stand-in: {o:?}\n  feeds: {n:?}");
        }
    }
}

#[test]
fn real_lists_give_identical_sets() {
    let root = std::env::var("RAMPART_DOMAINS_DIR").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/data/domains").to_string()
    });
    let files = [
        "1hosts/Pro/domains.txt",
        "romainmarcoux/full-domains-aa.txt",
        "hagezi/domains/personal.txt",
        "hagezi/domains/fake.txt",
        "hagezi/wildcard/light.txt",
        "hagezi/adblock/light.txt",
        "hagezi/hosts/fake.txt",
        "hagezi/3p/someonewhocares.hosts.txt",
        "hagezi/3p/ultimatehosts.wildcard.txt",
        "blocklistproject/alt-version/basic-nl.txt",
        "blocklistproject/adguard/scam-ags.txt",
        "blocklistproject/scam.txt",
        "ut1/blacklists/doh/domains",
        "xruffkez-nrd/lists/30-day/domains-only/nrd-phishing-30day",
    ];
    let mut checked = 0;
    for rel in files {
        let path = Path::new(&root).join(rel);
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("skipping {rel}: {} not readable", path.display());
            continue;
        };
        // The stand-in read files as UTF-8 text (a bad byte failed the whole file).
        let Ok(text) = String::from_utf8(bytes) else {
            eprintln!("skipping {rel}: not UTF-8");
            continue;
        };
        let (o, n) = (old(&text), new(&text));
        if o != n {
            let diffs = compare_lines(&text, rel);
            eprintln!("{rel}: listed differences {diffs:?}");
        }
        eprintln!(
            "{rel}: {} names, {} malformed, identical: {}",
            n.0.len(),
            n.1,
            o == n
        );
        checked += 1;
    }
    if checked == 0 {
        eprintln!("skipping: no list under {root}");
    }
}
