//! The pure decision engine: which queries are blocked, and which upstream answers are rejected.
//!
//! Built once from a [`Config`] plus the text of every list ([`Engine::build`]), then immutable;
//! the server swaps whole engines atomically on reload. Semantics (documented in `docs/dns.md`):
//! the client's group is the first whose networks contain it; an allow-list match wins over
//! everything; then DoH bootstrap names (if enabled), then domain lists, then regex lists. On the
//! response side: CNAME targets are re-checked against the group's block lists, A/AAAA answers
//! are checked against blocked prefixes and the rebinding guard.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr};

use aho_corasick::AhoCorasick;
use ipnet::IpNet;
use regex::{Regex, RegexBuilder, RegexSetBuilder};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

use crate::config::{BlockAction, Config, GroupConfig, ListConfig, ListKind};
use crate::domainset::{DomainSet, DomainSetBuilder};
use crate::lists::{read_list, ListFormat, ParseStats};
use crate::wire::{self, Message, RData};
use crate::DnsError;

/// Most patterns in one regex list (regexes are the slow path; anchors.md §3.3).
pub const MAX_REGEX_PATTERNS: usize = 4096;
/// Compiled size cap of one regex list.
pub const MAX_REGEX_BYTES: usize = 32 * 1024 * 1024;
/// Longest CNAME chain re-checked in one answer.
pub const MAX_CNAME_CHECKS: usize = 16;

/// Mozilla's DoH canary domain: a blocked query for it is always answered NXDOMAIN.
pub const MOZILLA_CANARY: &str = "use-application-dns.net";

/// Bootstrap names of well-known DoH/DoT resolvers, and Mozilla's canary domain (NXDOMAIN for
/// it turns Firefox's automatic DoH off).
pub const DOH_BOOTSTRAP_NAMES: &[&str] = &[
    "use-application-dns.net",
    "dns.google",
    "dns.google.com",
    "cloudflare-dns.com",
    "mozilla.cloudflare-dns.com",
    "one.one.one.one",
    "1dot1dot1dot1.cloudflare-dns.com",
    "dns.quad9.net",
    "dns9.quad9.net",
    "dns10.quad9.net",
    "doh.opendns.com",
    "dns.adguard.com",
    "dns.adguard-dns.com",
    "doh.cleanbrowsing.org",
    "dns.nextdns.io",
    "doh.mullvad.net",
    "dns.mullvad.net",
    "doh.dns.sb",
    "dns.controld.com",
    "mask.icloud.com",
    "mask-h2.icloud.com",
];

/// Why something was blocked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The name (or a parent) is on a domain list.
    List {
        /// List name.
        list: String,
        /// The listed entry that matched.
        entry: String,
    },
    /// A regex of a regex list matched.
    Regex {
        /// List name.
        list: String,
        /// The pattern.
        pattern: String,
    },
    /// A public DoH/DoT resolver's bootstrap name.
    DohBootstrap,
    /// A CNAME target in the answer is blocked.
    Cname {
        /// The blocked target.
        target: String,
        /// Why the target is blocked.
        inner: Box<Reason>,
    },
    /// An answer address lies in a blocked prefix.
    AnswerIp {
        /// The address.
        ip: IpAddr,
        /// The `ips` list.
        list: String,
    },
    /// A public name answered with a private/special address.
    Rebinding {
        /// The address.
        ip: IpAddr,
        /// The special-purpose range it lies in.
        range: &'static str,
    },
    /// The detector flagged this registered domain for tunnelling/exfiltration.
    Tunnel {
        /// Registered domain.
        domain: String,
    },
}

impl Reason {
    /// Short code for logs and counters.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::List { .. } => "list",
            Reason::Regex { .. } => "regex",
            Reason::DohBootstrap => "doh_bootstrap",
            Reason::Cname { .. } => "cname",
            Reason::AnswerIp { .. } => "answer_ip",
            Reason::Rebinding { .. } => "rebinding",
            Reason::Tunnel { .. } => "tunnel",
        }
    }

    /// The ATT&CK technique the block addresses (seed rows T1071.004, T1572, T1048.003).
    pub fn technique(&self) -> &'static str {
        match self {
            Reason::DohBootstrap => "T1572",
            Reason::Tunnel { .. } => "T1048.003",
            _ => "T1071.004",
        }
    }

    /// Human-readable explanation (also the EDE extra text).
    pub fn describe(&self) -> String {
        match self {
            Reason::List { list, entry } => format!("list {list}: {entry}"),
            Reason::Regex { list, pattern } => format!("regex list {list}: {pattern}"),
            Reason::DohBootstrap => "DoH/DoT bootstrap name".to_string(),
            Reason::Cname { target, inner } => {
                format!("CNAME target {target} ({})", inner.describe())
            }
            Reason::AnswerIp { ip, list } => format!("answer {ip} in list {list}"),
            Reason::Rebinding { ip, range } => {
                format!("rebinding: public name answered {ip} ({range})")
            }
            Reason::Tunnel { domain } => format!("tunnelling suspected under {domain}"),
        }
    }
}

/// A block decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Block {
    /// Index of the deciding group.
    pub group: usize,
    /// Why.
    pub reason: Reason,
    /// What to answer.
    pub action: BlockAction,
    /// EDE info code.
    pub ede_code: u16,
}

/// The engine's verdict on a query or a response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Resolve / pass the answer.
    Allow {
        /// Index of the group.
        group: usize,
        /// The allow list that matched, if the name was explicitly allowed.
        allowed_by: Option<String>,
    },
    /// Answer with a synthesised block response.
    Block(Block),
}

/// A regex list with a required-literal prefilter: an Aho-Corasick automaton over literals of
/// which every match must contain one (prefix or suffix literal sets from `regex-syntax`), so a
/// name only runs the few regexes whose literal it contains. Patterns without a usable literal
/// (shorter than 2 bytes, or an unbounded set) are always run.
struct RegexList {
    name: String,
    patterns: Vec<String>,
    regexes: Vec<Regex>,
    prefilter: Option<AhoCorasick>,
    literal_owner: Vec<u32>,
    always: Vec<u32>,
}

/// Literals of which every match of `pattern` contains at least one, if there is a usable set.
fn required_literals(pattern: &str) -> Option<Vec<Vec<u8>>> {
    let hir = regex_syntax::ParserBuilder::new()
        .build()
        .parse(pattern)
        .ok()?;
    let mut best: Option<Vec<Vec<u8>>> = None;
    for kind in [ExtractKind::Prefix, ExtractKind::Suffix] {
        let mut ex = Extractor::new();
        ex.kind(kind).limit_total(64);
        let seq = ex.extract(&hir);
        let Some(lits) = seq.literals() else { continue };
        if lits.is_empty() || lits.iter().any(|l| l.as_bytes().len() < 2) {
            continue;
        }
        let v: Vec<Vec<u8>> = lits.iter().map(|l| l.as_bytes().to_vec()).collect();
        let shortest = v.iter().map(Vec::len).min().unwrap_or(0);
        let better = match &best {
            None => true,
            Some(b) => shortest > b.iter().map(Vec::len).min().unwrap_or(0),
        };
        if better {
            best = Some(v);
        }
    }
    best
}

impl RegexList {
    fn build(name: &str, patterns: Vec<String>) -> Result<Self, DnsError> {
        // Validate all at once with the size caps, then compile singly for candidate runs.
        RegexSetBuilder::new(&patterns)
            .size_limit(MAX_REGEX_BYTES)
            .dfa_size_limit(MAX_REGEX_BYTES)
            .build()
            .map_err(|e| DnsError::Config(format!("regex list {name}: {e}")))?;
        let mut regexes = Vec::with_capacity(patterns.len());
        let mut literals = Vec::new();
        let mut literal_owner = Vec::new();
        let mut always = Vec::new();
        for (i, p) in patterns.iter().enumerate() {
            let re = RegexBuilder::new(p)
                .size_limit(MAX_REGEX_BYTES / 16)
                .build()
                .map_err(|e| DnsError::Config(format!("regex list {name}: {e}")))?;
            regexes.push(re);
            match required_literals(p) {
                Some(lits) => {
                    for l in lits {
                        literals.push(l);
                        literal_owner.push(i as u32);
                    }
                }
                None => always.push(i as u32),
            }
        }
        let prefilter = if literals.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(aho_corasick::MatchKind::Standard)
                    .build(&literals)
                    .map_err(|e| DnsError::Config(format!("regex list {name}: prefilter: {e}")))?,
            )
        };
        Ok(Self {
            name: name.to_string(),
            patterns,
            regexes,
            prefilter,
            literal_owner,
            always,
        })
    }

    /// Index of the lowest-numbered pattern matching `name`.
    fn first_match(&self, name: &str) -> Option<usize> {
        let mut cands: Vec<u32> = self.always.clone();
        if let Some(ac) = &self.prefilter {
            for m in ac.find_overlapping_iter(name) {
                cands.push(self.literal_owner[m.pattern().as_usize()]);
            }
        }
        if cands.is_empty() {
            return None;
        }
        cands.sort_unstable();
        cands.dedup();
        cands
            .into_iter()
            .map(|i| i as usize)
            .find(|&i| self.regexes[i].is_match(name))
    }

    /// Patterns run for every name (no usable literal).
    fn unfiltered(&self) -> usize {
        self.always.len()
    }
}

/// A domain list: its names, minus its own exceptions.
struct DomainList {
    name: String,
    set: DomainSet,
    except: DomainSet,
}

impl DomainList {
    fn lookup(&self, name: &str) -> Option<crate::domainset::SetMatch<'_>> {
        let m = self.set.lookup(name)?;
        if !self.except.is_empty() && self.except.lookup(name).is_some() {
            return None;
        }
        Some(m)
    }
}

/// Opens a list's file for [`Engine::build_with`]: a reader and its size in bytes (a capacity
/// hint), or `None` when the list has no file.
pub type ListOpener<'a> =
    dyn FnMut(&ListConfig) -> Result<Option<(Box<dyn BufRead + 'a>, u64)>, DnsError> + 'a;

/// Lines of a regex or IP list, then its inline entries; `None` for a line that is too long
/// or not UTF-8 (never buffered whole).
fn for_each_line(
    reader: Option<Box<dyn BufRead + '_>>,
    inline: &[String],
    mut f: impl FnMut(Option<&str>),
) -> Result<(), DnsError> {
    if let Some(mut r) = reader {
        let mut buf = Vec::new();
        while let Some(too_long) =
            crate::lists::next_line(&mut r, &mut buf, crate::lists::MAX_FEED_LINE_BYTES)
                .map_err(|e| DnsError::Config(format!("reading list: {e}")))?
        {
            match std::str::from_utf8(&buf) {
                Ok(line) if !too_long => f(Some(line)),
                _ => f(None),
            }
        }
    }
    for e in inline {
        f(Some(e));
    }
    Ok(())
}

struct IpList {
    name: String,
    // Merged, sorted inclusive ranges in a v6 space where IPv4 maps to ::ffff:a.b.c.d.
    ranges: Vec<(u128, u128)>,
}

struct Group {
    cfg: GroupConfig,
    block_domains: Vec<usize>,
    block_regex: Vec<usize>,
    allow_domains: Vec<usize>,
    allow_regex: Vec<usize>,
    ips: Vec<usize>,
    rebinding_allow: Vec<String>,
}

/// Statistics of one built list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListStats {
    /// List name.
    pub name: String,
    /// Entries after de-duplication.
    pub entries: usize,
    /// Malformed lines.
    pub malformed: usize,
    /// Entries over the cap.
    pub over_cap: usize,
    /// Exception names (explicit feed formats: AdBlock `@@`, RPZ passthru, ...).
    pub exceptions: usize,
    /// Heap bytes of the compiled structure (domain lists only; 0 otherwise).
    pub heap_bytes: usize,
}

/// The compiled filter.
pub struct Engine {
    domain_lists: Vec<DomainList>,
    regex_lists: Vec<RegexList>,
    ip_lists: Vec<IpList>,
    groups: Vec<Group>,
    doh: DomainSet,
    stats: Vec<ListStats>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("lists", &self.stats)
            .field("groups", &self.groups.len())
            .finish()
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn net_range(net: &IpNet) -> (u128, u128) {
    match net {
        IpNet::V4(n) => (
            to_u128(IpAddr::V4(n.network())),
            to_u128(IpAddr::V4(n.broadcast())),
        ),
        IpNet::V6(n) => (u128::from(n.network()), u128::from(n.broadcast())),
    }
}

fn merge_ranges(mut v: Vec<(u128, u128)>) -> Vec<(u128, u128)> {
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        match out.last_mut() {
            Some(last) if lo <= last.1.saturating_add(1) => last.1 = last.1.max(hi),
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn ranges_contain(ranges: &[(u128, u128)], x: u128) -> bool {
    let i = ranges.partition_point(|r| r.1 < x);
    ranges.get(i).is_some_and(|r| r.0 <= x)
}

/// The special-purpose range an address lies in, if it must never be the answer for a public
/// name (RFC 6890 subset relevant to rebinding; std's `is_global` is nightly-only).
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if v6.is_loopback() {
                return Some("loopback");
            }
            if v6.is_unspecified() {
                return Some("unspecified");
            }
            let seg = v6.segments();
            if seg[0] & 0xffc0 == 0xfe80 {
                return Some("link-local");
            }
            if seg[0] & 0xffc0 == 0xfec0 {
                return Some("site-local");
            }
            if seg[0] & 0xfe00 == 0xfc00 {
                return Some("unique-local");
            }
            if v6.to_ipv4_mapped().is_some() {
                return Some("ipv4-mapped");
            }
            if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let o = v6.octets();
                let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
                return special_v4(v4).map(|_| "nat64-of-private");
            }
            if seg[..6] == [0, 0, 0, 0, 0, 0] {
                return Some("ipv4-compatible");
            }
            None
        }
    }
}

fn special_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let o = v4.octets();
    if v4 == Ipv4Addr::new(169, 254, 169, 254) || v4 == Ipv4Addr::new(100, 100, 100, 200) {
        return Some("cloud-metadata");
    }
    if o[0] == 0 {
        return Some("this-network");
    }
    if o[0] == 127 {
        return Some("loopback");
    }
    if o[0] == 10 || (o[0] == 172 && o[1] & 0xf0 == 16) || (o[0] == 192 && o[1] == 168) {
        return Some("private");
    }
    if o[0] == 169 && o[1] == 254 {
        return Some("link-local");
    }
    if o[0] == 100 && o[1] & 0xc0 == 64 {
        return Some("cgnat");
    }
    if o[0] == 192 && o[1] == 0 && o[2] == 0 {
        return Some("ietf-protocol");
    }
    if o[0] == 198 && o[1] & 0xfe == 18 {
        return Some("benchmarking");
    }
    if o[0] >= 240 {
        return Some("reserved");
    }
    None
}

fn name_under(name: &str, suffix: &str) -> bool {
    name == suffix
        || (name.len() > suffix.len()
            && name.ends_with(suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.')
}

impl Engine {
    /// Builds an engine. `texts` maps list name → file content (inline `entries` are added
    /// here). Unknown list references and bad regexes are errors, malformed lines are counted.
    pub fn build(cfg: &Config, texts: &HashMap<String, String>) -> Result<Self, DnsError> {
        Self::build_with(cfg, &mut |l: &ListConfig| {
            Ok(texts.get(&l.name).map(|t| {
                (
                    Box::new(t.as_bytes()) as Box<dyn BufRead + '_>,
                    t.len() as u64,
                )
            }))
        })
    }

    /// Builds an engine, streaming each list's file from `open` (the shell opens files; this
    /// stays free of I/O of its own). Domain lists go straight from the feeds parsers into the
    /// compact set, so the text is never held whole.
    pub fn build_with(cfg: &Config, open: &mut ListOpener<'_>) -> Result<Self, DnsError> {
        let mut domain_lists = Vec::new();
        let mut regex_lists = Vec::new();
        let mut ip_lists = Vec::new();
        let mut stats = Vec::new();
        // name -> (kind, index in its vector)
        let mut index: HashMap<&str, (ListKind, usize)> = HashMap::new();
        for l in &cfg.lists {
            if index.contains_key(l.name.as_str()) {
                return Err(DnsError::Config(format!("list {} defined twice", l.name)));
            }
            if l.format.is_some() && l.kind != ListKind::Domains {
                return Err(DnsError::Config(format!(
                    "list {}: format applies to domains lists only",
                    l.name
                )));
            }
            let opened = open(l)?;
            match l.kind {
                ListKind::Domains => {
                    let format = match &l.format {
                        Some(f) => ListFormat::parse(f)
                            .map_err(|e| DnsError::Config(format!("list {}: {e}", l.name)))?,
                        None => ListFormat::Auto,
                    };
                    let inline: usize = l.entries.iter().map(|e| e.len() + 1).sum();
                    let file_bytes = opened.as_ref().map_or(0, |(_, n)| *n as usize);
                    // Upper bounds (a name plus its line end takes at least 2 bytes), so the
                    // builder never grows by copying; untouched capacity costs no memory.
                    let names = (file_bytes / 2 + l.entries.len()).min(l.max_entries);
                    let mut b = DomainSetBuilder::with_capacity(names, file_bytes + inline);
                    let mut except = DomainSetBuilder::new();
                    let mut sink = |n: &str, f: u8, allow: bool| {
                        if allow {
                            except.insert(n, f);
                        } else {
                            b.insert(n, f);
                        }
                    };
                    let mut st = ParseStats::default();
                    if let Some((reader, _)) = opened {
                        st = read_list(reader, &format, l.max_entries, &mut sink).map_err(
                            |source| DnsError::ListRead {
                                name: l.name.clone(),
                                path: l
                                    .path
                                    .as_ref()
                                    .map_or_else(String::new, |p| p.display().to_string()),
                                source,
                            },
                        )?;
                    }
                    let left = l.max_entries.saturating_sub(st.names + st.exceptions);
                    let s2 =
                        crate::lists::parse_text(&l.entries.join("\n"), &format, left, &mut sink);
                    st.names += s2.names;
                    st.exceptions += s2.exceptions;
                    st.malformed += s2.malformed;
                    st.over_cap += s2.over_cap;
                    let set = b.build();
                    let except = except.build();
                    stats.push(ListStats {
                        name: l.name.clone(),
                        entries: set.len(),
                        malformed: st.malformed,
                        over_cap: st.over_cap,
                        exceptions: except.len(),
                        heap_bytes: set.heap_bytes() + except.heap_bytes(),
                    });
                    index.insert(&l.name, (ListKind::Domains, domain_lists.len()));
                    domain_lists.push(DomainList {
                        name: l.name.clone(),
                        set,
                        except,
                    });
                }
                ListKind::Regex => {
                    let mut pats = Vec::new();
                    let mut over = 0;
                    let mut malformed = 0;
                    let cap = MAX_REGEX_PATTERNS.min(l.max_entries);
                    for_each_line(opened.map(|(r, _)| r), &l.entries, |line| {
                        let p = line.unwrap_or("\u{0}").trim();
                        if p.is_empty() || p.starts_with('#') {
                            return;
                        }
                        if p.len() > 1024 || line.is_none() {
                            malformed += 1;
                        } else if pats.len() >= cap {
                            over += 1;
                        } else {
                            pats.push(p.to_string());
                        }
                    })?;
                    let rl = RegexList::build(&l.name, pats)?;
                    stats.push(ListStats {
                        name: l.name.clone(),
                        entries: rl.patterns.len(),
                        malformed,
                        over_cap: over,
                        exceptions: 0,
                        heap_bytes: 0,
                    });
                    index.insert(&l.name, (ListKind::Regex, regex_lists.len()));
                    regex_lists.push(rl);
                }
                ListKind::Ips => {
                    let mut ranges = Vec::new();
                    let mut malformed = 0;
                    let mut over = 0;
                    for_each_line(opened.map(|(r, _)| r), &l.entries, |line| {
                        let Some(line) = line else {
                            malformed += 1;
                            return;
                        };
                        let t = line.split('#').next().unwrap_or("").trim();
                        if t.is_empty() {
                            return;
                        }
                        let net = t
                            .parse::<IpNet>()
                            .ok()
                            .or_else(|| t.parse::<IpAddr>().ok().map(IpNet::from));
                        match net {
                            Some(_) if ranges.len() >= l.max_entries => over += 1,
                            Some(n) => ranges.push(net_range(&n)),
                            None => malformed += 1,
                        }
                    })?;
                    let ranges = merge_ranges(ranges);
                    stats.push(ListStats {
                        name: l.name.clone(),
                        entries: ranges.len(),
                        malformed,
                        over_cap: over,
                        exceptions: 0,
                        heap_bytes: ranges.capacity() * 32,
                    });
                    index.insert(&l.name, (ListKind::Ips, ip_lists.len()));
                    ip_lists.push(IpList {
                        name: l.name.clone(),
                        ranges,
                    });
                }
            }
        }
        let lookup =
            |group: &str, name: &str, want: &[ListKind]| -> Result<(ListKind, usize), DnsError> {
                match index.get(name) {
                    Some(&(k, i)) if want.contains(&k) => Ok((k, i)),
                    Some(&(k, _)) => Err(DnsError::Config(format!(
                        "group {group}: list {name} is a {k:?} list, not usable here"
                    ))),
                    None => Err(DnsError::Config(format!(
                        "group {group}: unknown list {name}"
                    ))),
                }
            };
        let mut groups = Vec::new();
        let mut default_group = false;
        for g in &cfg.groups {
            let mut grp = Group {
                cfg: g.clone(),
                block_domains: Vec::new(),
                block_regex: Vec::new(),
                allow_domains: Vec::new(),
                allow_regex: Vec::new(),
                ips: Vec::new(),
                rebinding_allow: g
                    .rebinding_allow
                    .iter()
                    .filter_map(|s| rampart_feeds::normalize_domain(s).ok())
                    .collect(),
            };
            for n in &g.block {
                match lookup(&g.name, n, &[ListKind::Domains, ListKind::Regex])? {
                    (ListKind::Domains, i) => grp.block_domains.push(i),
                    (_, i) => grp.block_regex.push(i),
                }
            }
            for n in &g.allow {
                match lookup(&g.name, n, &[ListKind::Domains, ListKind::Regex])? {
                    (ListKind::Domains, i) => grp.allow_domains.push(i),
                    (_, i) => grp.allow_regex.push(i),
                }
            }
            for n in &g.block_answer_ips {
                grp.ips.push(lookup(&g.name, n, &[ListKind::Ips])?.1);
            }
            default_group |= g.clients.is_empty();
            groups.push(grp);
        }
        if !default_group {
            // Clients outside every group still get the safe defaults (rebinding guard on).
            let mut g = GroupConfig::named("default");
            g.tunnel_block = true;
            groups.push(Group {
                rebinding_allow: g.rebinding_allow.clone(),
                cfg: g,
                block_domains: Vec::new(),
                block_regex: Vec::new(),
                allow_domains: Vec::new(),
                allow_regex: Vec::new(),
                ips: Vec::new(),
            });
        }
        let mut doh = DomainSetBuilder::new();
        for n in DOH_BOOTSTRAP_NAMES {
            doh.insert(
                n,
                crate::domainset::MATCH_EXACT | crate::domainset::MATCH_SUBDOMAINS,
            );
        }
        Ok(Self {
            domain_lists,
            regex_lists,
            ip_lists,
            groups,
            doh: doh.build(),
            stats,
        })
    }

    /// Per-list statistics.
    pub fn list_stats(&self) -> &[ListStats] {
        &self.stats
    }

    /// For each regex list: (name, patterns, patterns without a literal prefilter).
    pub fn regex_prefilter_stats(&self) -> Vec<(String, usize, usize)> {
        self.regex_lists
            .iter()
            .map(|r| (r.name.clone(), r.patterns.len(), r.unfiltered()))
            .collect()
    }

    /// The group index for a client.
    pub fn group_of(&self, client: IpAddr) -> usize {
        self.groups
            .iter()
            .position(|g| g.cfg.contains(client))
            .unwrap_or(self.groups.len() - 1)
    }

    /// The configuration of group `i`.
    pub fn group(&self, i: usize) -> &GroupConfig {
        &self.groups[i.min(self.groups.len() - 1)].cfg
    }

    fn allowed_by(&self, g: &Group, name: &str) -> Option<String> {
        for &i in &g.allow_domains {
            let l = &self.domain_lists[i];
            if l.lookup(name).is_some() {
                return Some(l.name.clone());
            }
        }
        for &i in &g.allow_regex {
            if self.regex_lists[i].first_match(name).is_some() {
                return Some(self.regex_lists[i].name.clone());
            }
        }
        None
    }

    fn blocked_by(&self, g: &Group, name: &str) -> Option<Reason> {
        if g.cfg.block_doh_bootstrap && self.doh.lookup(name).is_some() {
            return Some(Reason::DohBootstrap);
        }
        for &i in &g.block_domains {
            let l = &self.domain_lists[i];
            if let Some(m) = l.lookup(name) {
                return Some(Reason::List {
                    list: l.name.clone(),
                    entry: m.entry.to_string(),
                });
            }
        }
        for &i in &g.block_regex {
            let rl = &self.regex_lists[i];
            if let Some(p) = rl.first_match(name) {
                return Some(Reason::Regex {
                    list: rl.name.clone(),
                    pattern: rl.patterns.get(p).cloned().unwrap_or_default(),
                });
            }
        }
        None
    }

    fn block(&self, gi: usize, reason: Reason) -> Decision {
        let g = &self.groups[gi].cfg;
        let ede_code = match reason {
            Reason::List { .. } | Reason::Regex { .. } => g.ede_code,
            _ => wire::ede::BLOCKED,
        };
        Decision::Block(Block {
            group: gi,
            reason,
            action: g.action,
            ede_code,
        })
    }

    /// Decides a query for `qname` (normalised presentation form) from `client`.
    pub fn decide_query(&self, client: IpAddr, qname: &str) -> Decision {
        let gi = self.group_of(client);
        let g = &self.groups[gi];
        if let Some(list) = self.allowed_by(g, qname) {
            return Decision::Allow {
                group: gi,
                allowed_by: Some(list),
            };
        }
        match self.blocked_by(g, qname) {
            Some(r) => {
                let mut d = self.block(gi, r);
                // Firefox turns its automatic DoH off only on NXDOMAIN (or SERVFAIL) for the
                // canary; a sinkhole address or REFUSED would leave DoH on, bypassing the filter.
                if let Decision::Block(b) = &mut d {
                    if qname == MOZILLA_CANARY {
                        b.action = BlockAction::Nxdomain;
                    }
                }
                d
            }
            None => Decision::Allow {
                group: gi,
                allowed_by: None,
            },
        }
    }

    /// Checks an upstream answer to `qname` for `client`. Explicitly allowed names skip every
    /// response check (the operator vouched for them).
    pub fn check_response(&self, client: IpAddr, qname: &str, resp: &Message) -> Decision {
        let gi = self.group_of(client);
        let g = &self.groups[gi];
        if let Some(list) = self.allowed_by(g, qname) {
            return Decision::Allow {
                group: gi,
                allowed_by: Some(list),
            };
        }
        if g.cfg.check_cname_chain {
            for rec in resp
                .answers
                .iter()
                .filter(|r| r.rtype == wire::rtype::CNAME)
                .take(MAX_CNAME_CHECKS)
            {
                if let RData::Name(target) = &rec.data {
                    let t = target.as_str();
                    if self.allowed_by(g, t).is_some() {
                        continue;
                    }
                    if let Some(inner) = self.blocked_by(g, t) {
                        return self.block(
                            gi,
                            Reason::Cname {
                                target: t.to_string(),
                                inner: Box::new(inner),
                            },
                        );
                    }
                }
            }
        }
        let rebinding_exempt =
            !g.cfg.rebinding_guard || g.rebinding_allow.iter().any(|s| name_under(qname, s));
        for rec in &resp.answers {
            let ip = match rec.data {
                RData::A(a) => IpAddr::V4(a),
                RData::Aaaa(a) => IpAddr::V6(a),
                _ => continue,
            };
            for &li in &g.ips {
                if ranges_contain(&self.ip_lists[li].ranges, to_u128(ip)) {
                    return self.block(
                        gi,
                        Reason::AnswerIp {
                            ip,
                            list: self.ip_lists[li].name.clone(),
                        },
                    );
                }
            }
            if !rebinding_exempt {
                if let Some(range) = special_range(ip) {
                    return self.block(gi, Reason::Rebinding { ip, range });
                }
            }
        }
        Decision::Allow {
            group: gi,
            allowed_by: None,
        }
    }
}

/// A sinkhole address for the question type, if the action answers with one.
pub fn sinkhole_answer(g: &GroupConfig, qtype: u16) -> Option<wire::SynthAnswer> {
    match qtype {
        wire::rtype::A => Some(wire::SynthAnswer::A(g.sinkhole_v4)),
        wire::rtype::AAAA => Some(wire::SynthAnswer::Aaaa(g.sinkhole_v6)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv6Addr;

    fn list(name: &str, kind: ListKind, entries: &[&str]) -> ListConfig {
        ListConfig {
            format: None,
            name: name.into(),
            kind,
            path: None,
            entries: entries.iter().map(|s| s.to_string()).collect(),
            max_entries: 1000,
        }
    }

    fn engine() -> Engine {
        let toml = r#"
            listen = ["127.0.0.1:0"]
            upstreams = [{ addr = "127.0.0.1:53" }]
        "#;
        let mut cfg = Config::from_toml(toml).unwrap();
        cfg.lists = vec![
            list(
                "ads",
                ListKind::Domains,
                &["ads.example", "||track.example^", "*.wild.example"],
            ),
            list("iot-extra", ListKind::Domains, &["social.example"]),
            list("re", ListKind::Regex, &["^ad[0-9]+\\."]),
            list("ok", ListKind::Domains, &["good.ads.example"]),
            list(
                "badips",
                ListKind::Ips,
                &["203.0.113.0/24", "2001:db8:bad::/48"],
            ),
        ];
        let mut iot = GroupConfig::named("iot");
        iot.clients = vec!["198.51.100.0/24".parse().unwrap()];
        iot.block = vec!["ads".into(), "iot-extra".into()];
        iot.action = BlockAction::Refused;
        let mut corp = GroupConfig::named("corp");
        corp.block = vec!["ads".into(), "re".into()];
        corp.allow = vec!["ok".into()];
        corp.block_answer_ips = vec!["badips".into()];
        corp.block_doh_bootstrap = true;
        cfg.groups = vec![iot, corp];
        Engine::build(&cfg, &HashMap::new()).unwrap()
    }

    fn blocked(d: &Decision) -> Option<&Block> {
        match d {
            Decision::Block(b) => Some(b),
            Decision::Allow { .. } => None,
        }
    }

    #[test]
    fn query_decisions_per_group() {
        let e = engine();
        let corp: IpAddr = "192.0.2.10".parse().unwrap();
        let iot: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            blocked(&e.decide_query(corp, "x.ads.example"))
                .unwrap()
                .reason
                .code(),
            "list"
        );
        assert!(
            blocked(&e.decide_query(corp, "good.ads.example")).is_none(),
            "allowlist wins"
        );
        assert!(blocked(&e.decide_query(corp, "a.good.ads.example")).is_none());
        assert!(
            blocked(&e.decide_query(corp, "wild.example")).is_none(),
            "*.x excludes apex"
        );
        assert!(blocked(&e.decide_query(corp, "a.wild.example")).is_some());
        assert_eq!(
            blocked(&e.decide_query(corp, "ad12.example.org"))
                .unwrap()
                .reason
                .code(),
            "regex"
        );
        assert!(blocked(&e.decide_query(corp, "social.example")).is_none());
        let b = e.decide_query(iot, "social.example");
        assert_eq!(blocked(&b).unwrap().action, BlockAction::Refused);
        assert!(blocked(&e.decide_query(iot, "ad12.example.org")).is_none());
        assert_eq!(
            blocked(&e.decide_query(corp, "dns.google")).unwrap().reason,
            Reason::DohBootstrap
        );
        assert!(blocked(&e.decide_query(iot, "dns.google")).is_none());
    }

    #[test]
    fn doh_canary_is_nxdomain_whatever_the_action() {
        for action in [BlockAction::Sinkhole, BlockAction::Refused] {
            let mut cfg = Config::from_toml(
                "listen = [\"127.0.0.1:0\"]\nupstreams = [{ addr = \"127.0.0.1:53\" }]\n",
            )
            .unwrap();
            let mut g = GroupConfig::named("all");
            g.block_doh_bootstrap = true;
            g.action = action;
            cfg.groups = vec![g];
            let e = Engine::build(&cfg, &HashMap::new()).unwrap();
            let c: IpAddr = "192.0.2.1".parse().unwrap();
            let canary = e.decide_query(c, MOZILLA_CANARY);
            assert_eq!(blocked(&canary).unwrap().action, BlockAction::Nxdomain);
            let other = e.decide_query(c, "cloudflare-dns.com");
            assert_eq!(blocked(&other).unwrap().action, action);
            assert_eq!(blocked(&other).unwrap().reason.technique(), "T1572");
            assert!(blocked(&e.decide_query(c, "mozilla.cloudflare-dns.com")).is_some());
            assert!(blocked(&e.decide_query(c, "example.com")).is_none());
        }
    }

    fn answer(records: &[(&str, u16, Vec<u8>)]) -> Message {
        let mut b = wire::MessageBuilder::new(1, 0x8180).question("www.example.com", 1);
        for (n, t, d) in records {
            b = b.record(0, n, *t, 60, d.clone());
        }
        wire::parse(&b.build().unwrap()).unwrap()
    }

    #[test]
    fn response_checks() {
        let e = engine();
        let corp: IpAddr = "192.0.2.10".parse().unwrap();
        let cname = answer(&[
            (
                "www.example.com",
                5,
                wire::name_rdata("edge.track.example").unwrap(),
            ),
            ("edge.track.example", 1, vec![192, 0, 2, 80]),
        ]);
        let d = e.check_response(corp, "www.example.com", &cname);
        assert_eq!(blocked(&d).unwrap().reason.code(), "cname");
        let ip = answer(&[("www.example.com", 1, vec![203, 0, 113, 9])]);
        assert_eq!(
            blocked(&e.check_response(corp, "www.example.com", &ip))
                .unwrap()
                .reason
                .code(),
            "answer_ip"
        );
        let reb = answer(&[("www.example.com", 1, vec![10, 1, 2, 3])]);
        assert_eq!(
            blocked(&e.check_response(corp, "www.example.com", &reb))
                .unwrap()
                .reason
                .code(),
            "rebinding"
        );
        assert!(blocked(&e.check_response(corp, "nas.lan", &reb)).is_none());
        let meta = answer(&[(
            "www.example.com",
            28,
            "::ffff:169.254.169.254"
                .parse::<Ipv6Addr>()
                .unwrap()
                .octets()
                .to_vec(),
        )]);
        assert_eq!(
            blocked(&e.check_response(corp, "www.example.com", &meta))
                .unwrap()
                .reason
                .code(),
            "rebinding"
        );
        let fine = answer(&[("www.example.com", 1, vec![192, 0, 2, 80])]);
        assert!(blocked(&e.check_response(corp, "www.example.com", &fine)).is_none());
    }

    #[test]
    fn regex_prefilter_matches_like_a_plain_scan() {
        let pats: Vec<String> = [
            "^ad[0-9]+\\.",
            "(^|\\.)doubleclick\\.net$",
            "track(er|ing)",
            "^[a-z]{40,}\\.",
            "x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let rl = RegexList::build("t", pats.clone()).unwrap();
        assert_eq!(
            rl.unfiltered(),
            2,
            "the {{40,}} class and the 1-byte literal run always"
        );
        let plain: Vec<Regex> = pats.iter().map(|p| Regex::new(p).unwrap()).collect();
        let names = [
            "ad1.example",
            "ad.example",
            "a.doubleclick.net",
            "doubleclick.net.evil",
            "mytracking.example",
            "tracer.example",
            &"q".repeat(45),
            "www.example",
        ];
        for n in names {
            let want = plain.iter().position(|r| r.is_match(n));
            assert_eq!(rl.first_match(n), want, "{n}");
        }
    }

    #[test]
    fn special_ranges() {
        for ip in [
            "10.0.0.1",
            "172.16.5.5",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:8.8.8.8",
            "64:ff9b::a00:1",
        ] {
            assert!(special_range(ip.parse().unwrap()).is_some(), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "192.0.2.1",
            "2001:db8::1",
            "172.32.0.1",
            "100.128.0.1",
            "64:ff9b::808:808",
        ] {
            assert!(special_range(ip.parse().unwrap()).is_none(), "{ip}");
        }
    }

    #[test]
    fn bad_references_are_errors() {
        let toml = r#"
            listen = ["127.0.0.1:0"]
            upstreams = [{ addr = "127.0.0.1:53" }]
            [[groups]]
            name = "x"
            block = ["missing"]
        "#;
        let cfg = Config::from_toml(toml).unwrap();
        assert!(Engine::build(&cfg, &HashMap::new()).is_err());
    }

    #[test]
    fn feed_formats_with_exceptions_and_streamed_files() {
        let toml = r#"
            listen = ["127.0.0.1:0"]
            upstreams = [{ addr = "127.0.0.1:53" }]
            [[lists]]
            name = "ag"
            kind = "domains"
            format = "adblock"
            entries = ["||ads.example^", "@@||ok.ads.example^"]
            [[lists]]
            name = "hosts"
            kind = "domains"
            format = "hosts"
            [[groups]]
            name = "all"
            block = ["ag", "hosts"]
        "#;
        let cfg = Config::from_toml(toml).unwrap();
        let texts = HashMap::from([(
            "hosts".to_string(),
            "0.0.0.0 h.example\n0.0.0.0 localhost\n".to_string(),
        )]);
        let e = Engine::build(&cfg, &texts).unwrap();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(blocked(&e.decide_query(c, "x.ads.example")).is_some());
        assert!(
            blocked(&e.decide_query(c, "ok.ads.example")).is_none(),
            "the list's own @@ exception"
        );
        assert!(blocked(&e.decide_query(c, "a.ok.ads.example")).is_none());
        assert!(blocked(&e.decide_query(c, "h.example")).is_some());
        assert!(
            blocked(&e.decide_query(c, "a.h.example")).is_none(),
            "feeds' hosts format is exact"
        );
        let st = e.list_stats();
        assert_eq!((st[0].entries, st[0].exceptions), (1, 1));
        assert_eq!(st[1].entries, 1);

        let mut bad = cfg.clone();
        bad.lists[0].format = Some("spamhaus".into());
        assert!(Engine::build(&bad, &texts).is_err(), "IP formats refused");
        let mut bad = cfg.clone();
        bad.lists.push(list("r", ListKind::Regex, &["x"]));
        bad.lists[2].format = Some("adblock".into());
        assert!(
            Engine::build(&bad, &texts).is_err(),
            "format on a regex list"
        );
    }
}
