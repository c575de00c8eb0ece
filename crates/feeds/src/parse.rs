//! Streaming, bounded parsers for every supported feed format.
//!
//! Input is read line by line through a [`BufRead`]; a line longer than [`MAX_LINE_BYTES`] is
//! skipped (and reported) without ever being held in memory whole. Every line that cannot be
//! used becomes a [`LineError`] with file, 1-based line number, the (truncated) text and the
//! reason; parsing continues with the next line. Only the first [`MAX_ERRORS_KEPT`] errors are
//! kept; the rest are counted.

use std::fmt;
use std::io::{self, BufRead, Read};
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::domain::{self, DomainAction, DomainError, DomainRule, Scope};
use crate::format::Format;

/// Longest line a parser accepts (bytes, without the line end).
pub const MAX_LINE_BYTES: usize = 4096;
/// How many line errors are kept verbatim; later ones are only counted.
pub const MAX_ERRORS_KEPT: usize = 1000;
/// How much of a line's text an error keeps.
pub const ERROR_TEXT_MAX: usize = 120;
/// Largest STIX bundle read (the JSON is parsed whole).
pub const MAX_STIX_BYTES: u64 = 64 * 1024 * 1024;

/// Why a line was not used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum LineReason {
    /// Longer than [`MAX_LINE_BYTES`].
    TooLong,
    /// Not valid UTF-8.
    NotUtf8,
    /// Not an IP address, prefix or range.
    BadAddress(String),
    /// Not a valid domain name.
    BadDomain(DomainError),
    /// A count/number field is not a number.
    BadNumber(String),
    /// The chosen CSV column does not exist in this row.
    MissingColumn(usize),
    /// Text after the entry that the format does not allow.
    TrailingText,
    /// Valid syntax of the format that has no meaning for a DNS or IP blocklist (regex and
    /// cosmetic AdBlock rules, dnsmasq forwarding, RPZ NSDNAME triggers, STIX `AND`, ...).
    Unsupported(String),
    /// Malformed syntax of the format.
    Syntax(String),
}

impl fmt::Display for LineReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineReason::TooLong => write!(f, "line longer than {MAX_LINE_BYTES} bytes"),
            LineReason::NotUtf8 => f.write_str("not valid UTF-8"),
            LineReason::BadAddress(s) => write!(f, "not an IP address or prefix: {s}"),
            LineReason::BadDomain(e) => write!(f, "bad domain name: {e}"),
            LineReason::BadNumber(s) => write!(f, "not a number: {s}"),
            LineReason::MissingColumn(c) => write!(f, "row has no column {c}"),
            LineReason::TrailingText => f.write_str("unexpected text after the entry"),
            LineReason::Unsupported(s) => write!(f, "unsupported: {s}"),
            LineReason::Syntax(s) => write!(f, "syntax error: {s}"),
        }
    }
}

/// One rejected line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineError {
    /// The file or URL as named by the user.
    pub file: String,
    /// 1-based line number (for STIX: 1-based index of the object in the bundle).
    pub line: u64,
    /// The line, truncated to [`ERROR_TEXT_MAX`] bytes on a character boundary.
    pub text: String,
    /// Why it was rejected.
    pub reason: LineReason,
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} ({:?})",
            self.file, self.line, self.reason, self.text
        )
    }
}

/// Line counters of one parse.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseStats {
    /// Lines read (STIX: objects).
    pub lines: u64,
    /// Blank, comment and structural lines (headers, `server:`, SOA, ...).
    pub ignored: u64,
    /// Lines that produced at least one entry.
    pub used: u64,
    /// Entries skipped on purpose by an option (ipsum below `min_count`, hosts `localhost`).
    pub filtered: u64,
    /// Lines rejected as malformed.
    pub rejected: u64,
    /// Lines rejected as valid-but-unsupported syntax.
    pub unsupported: u64,
    /// Errors counted but not kept (beyond [`MAX_ERRORS_KEPT`]).
    pub errors_dropped: u64,
}

/// Everything one feed document yielded.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Parsed {
    /// Addresses/prefixes to block, in input order, not yet normalised.
    pub nets: Vec<IpNet>,
    /// Addresses/prefixes the feed itself exempts (RPZ-IP `rpz-passthru.`).
    pub allow_nets: Vec<IpNet>,
    /// Domain rules (block and allow), normalised names, input order.
    pub domains: Vec<DomainRule>,
    /// Counters.
    pub stats: ParseStats,
    /// The first [`MAX_ERRORS_KEPT`] rejected lines.
    pub errors: Vec<LineError>,
}

impl Parsed {
    /// Number of entries (nets + allow nets + domain rules).
    pub fn entries(&self) -> usize {
        self.nets.len() + self.allow_nets.len() + self.domains.len()
    }

    pub(crate) fn reject(&mut self, file: &str, line: u64, text: &str, reason: LineReason) {
        if matches!(reason, LineReason::Unsupported(_)) {
            self.stats.unsupported += 1;
        } else {
            self.stats.rejected += 1;
        }
        if self.errors.len() >= MAX_ERRORS_KEPT {
            self.stats.errors_dropped += 1;
            return;
        }
        self.errors.push(LineError {
            file: file.to_string(),
            line,
            text: truncate(text, ERROR_TEXT_MAX),
            reason,
        });
    }
}

pub(crate) fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// What one line produced.
enum Outcome {
    Ignored,
    Filtered,
    Used,
}

type LineResult = Result<Outcome, LineReason>;

/// Parse an IP address, prefix or inclusive range `a-b` into prefixes.
pub fn parse_ip_token(token: &str) -> Result<Vec<IpNet>, LineReason> {
    let mut v = Vec::new();
    parse_ip_into(token, &mut v)?;
    Ok(v)
}

/// [`parse_ip_token`] appending to `out` (no allocation for the common single entry).
pub fn parse_ip_into(token: &str, out: &mut Vec<IpNet>) -> Result<(), LineReason> {
    let t = token.trim();
    if t.is_empty() {
        return Err(LineReason::BadAddress(String::new()));
    }
    if t.contains('/') {
        if let Ok(n) = t.parse::<IpNet>() {
            out.push(n.trunc());
            return Ok(());
        }
    } else if let Ok(a) = t.parse::<IpAddr>() {
        out.push(IpNet::from(a));
        return Ok(());
    } else if let Some((a, b)) = t.split_once('-') {
        if let (Ok(a), Ok(b)) = (a.trim().parse::<IpAddr>(), b.trim().parse::<IpAddr>()) {
            if let Some(v) = crate::cidr::range_cover(a, b) {
                // Why: a hostile "0.0.0.0-255.255.255.255"-style range is at most 62 prefixes
                // (v4) or 254 (v6), so the output stays bounded.
                out.extend(v);
                return Ok(());
            }
        }
    }
    Err(LineReason::BadAddress(truncate(t, 60)))
}

/// Strip `#` and `;` comments and surrounding blanks.
fn strip_comment(line: &str) -> &str {
    let cut = line.find(['#', ';']).unwrap_or(line.len());
    line[..cut].trim()
}

/// State of a line-oriented parse (RPZ needs the origin and the previous owner; CSV the
/// header flag).
struct LineParser<'f> {
    format: &'f Format,
    header_pending: bool,
    rpz: RpzState,
}

#[derive(Default)]
struct RpzState {
    origin: Option<String>,
    last_owner: Option<String>,
    paren_depth: u32,
}

impl<'f> LineParser<'f> {
    fn new(format: &'f Format) -> Self {
        let header_pending = matches!(format, Format::Csv { header: true, .. });
        Self {
            format,
            header_pending,
            rpz: RpzState::default(),
        }
    }

    fn line(&mut self, line: &str, out: &mut Parsed) -> LineResult {
        let line = line.trim_start_matches('\u{feff}');
        match self.format {
            Format::Plain => ip_plain(line, out),
            Format::Spamhaus => {
                if line.trim_start().starts_with('{') {
                    spamhaus_json(line, out)
                } else {
                    ip_plain(line, out)
                }
            }
            Format::Tor => tor(line, out),
            Format::Ipsum { min_count } => ipsum(line, *min_count, out),
            Format::Csv {
                column, delimiter, ..
            } => {
                let (column, delimiter) = (*column, *delimiter);
                self.csv(line, column, delimiter, out)
            }
            Format::Hosts => hosts(line, out),
            Format::Domains { plain_scope } => domains_plain(line, *plain_scope, out),
            Format::Adblock => adblock(line, out),
            Format::Dnsmasq => dnsmasq(line, out),
            Format::Unbound => unbound(line, out),
            Format::Rpz => self.rpz(line, out),
            // Handled as a whole document by `parse_reader`.
            Format::Stix => Err(LineReason::Unsupported("STIX is not line-based".into())),
        }
    }

    fn csv(&mut self, line: &str, column: usize, delimiter: char, out: &mut Parsed) -> LineResult {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            return Ok(Outcome::Ignored);
        }
        if self.header_pending {
            self.header_pending = false;
            return Ok(Outcome::Ignored);
        }
        // `column` is 1-based; 0 (only constructible directly, not via `FromStr`) never matches.
        let field = column
            .checked_sub(1)
            .and_then(|i| t.split(delimiter).nth(i))
            .ok_or(LineReason::MissingColumn(column))?;
        let field = field.trim().trim_matches('"').trim();
        // abuse.ch CSVs put `ip:port` in one column.
        let field = match field.rsplit_once(':') {
            Some((ip, port))
                if ip.parse::<std::net::Ipv4Addr>().is_ok() && port.parse::<u16>().is_ok() =>
            {
                ip
            }
            _ => field,
        };
        out.nets.extend(parse_ip_token(field)?);
        Ok(Outcome::Used)
    }

    fn rpz(&mut self, raw: &str, out: &mut Parsed) -> LineResult {
        // Zone-file comments start with `;`.
        let code = match raw.find(';') {
            Some(i) => &raw[..i],
            None => raw,
        };
        let opens = code.matches('(').count() as u32;
        let closes = code.matches(')').count() as u32;
        if self.rpz.paren_depth > 0 {
            self.rpz.paren_depth = (self.rpz.paren_depth + opens).saturating_sub(closes);
            return Ok(Outcome::Ignored);
        }
        if code.trim().is_empty() {
            return Ok(Outcome::Ignored);
        }
        let starts_blank = code.starts_with([' ', '\t']);
        let mut toks: Vec<&str> = code.split_whitespace().collect();
        if toks[0].eq_ignore_ascii_case("$ORIGIN") {
            let o = toks
                .get(1)
                .ok_or(LineReason::Syntax("$ORIGIN without a name".into()))?;
            self.rpz.origin = Some(o.trim_end_matches('.').to_ascii_lowercase());
            return Ok(Outcome::Ignored);
        }
        if toks[0].starts_with('$') {
            return Ok(Outcome::Ignored);
        }
        let owner = if starts_blank {
            self.rpz
                .last_owner
                .clone()
                .ok_or(LineReason::Syntax("record without an owner".into()))?
        } else {
            let o = toks.remove(0).to_string();
            self.rpz.last_owner = Some(o.clone());
            o
        };
        // Skip TTL and class.
        while let Some(t) = toks.first() {
            let upper = t.to_ascii_uppercase();
            if t.chars().all(|c| c.is_ascii_digit()) || matches!(upper.as_str(), "IN" | "CH" | "HS")
            {
                toks.remove(0);
            } else {
                break;
            }
        }
        let rtype = toks
            .first()
            .ok_or(LineReason::Syntax("record without a type".into()))?
            .to_ascii_uppercase();
        if opens > closes {
            self.rpz.paren_depth = opens - closes;
        }
        match rtype.as_str() {
            "SOA" | "NS" => return Ok(Outcome::Ignored),
            "CNAME" => {}
            "A" | "AAAA" | "TXT" | "MX" | "PTR" | "SRV" => {
                return Err(LineReason::Unsupported(format!(
                    "RPZ local-data {rtype} record (answer rewrite)"
                )))
            }
            _ => return Err(LineReason::Syntax(format!("unknown record type {rtype}"))),
        }
        let target = toks
            .get(1)
            .ok_or(LineReason::Syntax("CNAME without a target".into()))?
            .to_ascii_lowercase();
        if toks.len() > 2 {
            return Err(LineReason::TrailingText);
        }
        let action = match target.as_str() {
            "." => DomainAction::Block,
            "*." => DomainAction::NoData,
            "rpz-passthru." => DomainAction::Allow,
            "rpz-drop." => DomainAction::Drop,
            "rpz-tcp-only." => return Err(LineReason::Unsupported("rpz-tcp-only action".into())),
            _ => {
                return Err(LineReason::Unsupported(
                    "CNAME redirect to another name".into(),
                ))
            }
        };
        // Owner relative to the origin unless absolute.
        let mut name = owner.to_ascii_lowercase();
        if let Some(abs) = name.strip_suffix('.') {
            let abs = abs.to_string();
            name = match &self.rpz.origin {
                Some(origin) => match abs.strip_suffix(origin.as_str()) {
                    Some(rel) => rel.trim_end_matches('.').to_string(),
                    None => {
                        return Err(LineReason::Syntax(format!(
                            "absolute owner outside the zone {origin}"
                        )))
                    }
                },
                None => abs,
            };
        }
        if name == "@" || name.is_empty() {
            return Err(LineReason::Unsupported("trigger on the zone apex".into()));
        }
        for special in ["rpz-nsdname", "rpz-nsip", "rpz-client-ip"] {
            if name.ends_with(&format!(".{special}")) {
                return Err(LineReason::Unsupported(format!("{special} trigger")));
            }
        }
        if let Some(ip) = name.strip_suffix(".rpz-ip") {
            let net = rpz_ip(ip)?;
            match action {
                DomainAction::Allow => out.allow_nets.push(net),
                _ => out.nets.push(net),
            }
            return Ok(Outcome::Used);
        }
        let (name, scope) = domain::parse_pattern(&name, Scope::Exact, Scope::SubdomainsOnly)
            .map_err(LineReason::BadDomain)?;
        out.domains.push(DomainRule {
            name,
            scope,
            action,
        });
        Ok(Outcome::Used)
    }
}

/// `32.1.2.0.192` → 192.0.2.1/32; `48.zz.db8.2001` → 2001:db8::/48.
fn rpz_ip(s: &str) -> Result<IpNet, LineReason> {
    let bad = || LineReason::BadAddress(truncate(s, 60));
    let mut labels: Vec<&str> = s.split('.').collect();
    if labels.len() < 2 {
        return Err(bad());
    }
    let len: u8 = labels.remove(0).parse().map_err(|_| bad())?;
    labels.reverse();
    let text = if labels.len() == 4 && labels.iter().all(|l| l.parse::<u8>().is_ok()) {
        format!("{}/{len}", labels.join("."))
    } else {
        let groups: Vec<&str> = labels
            .iter()
            .map(|l| if *l == "zz" { "" } else { *l })
            .collect();
        let mut t = groups.join(":");
        if t.starts_with(':') {
            t.insert(0, ':');
        }
        if t.ends_with(':') {
            t.push(':');
        }
        format!("{t}/{len}")
    };
    let net: IpNet = text.parse().map_err(|_| bad())?;
    if net.trunc() != net {
        // RPZ-IP triggers name the network address; host bits mean a typo.
        return Err(bad());
    }
    Ok(net)
}

fn ip_plain(line: &str, out: &mut Parsed) -> LineResult {
    let t = strip_comment(line);
    if t.is_empty() {
        return Ok(Outcome::Ignored);
    }
    let mut toks = t.split_whitespace();
    let first = toks.next().unwrap_or_default();
    if toks.next().is_some() {
        return Err(LineReason::TrailingText);
    }
    parse_ip_into(first, &mut out.nets)?;
    Ok(Outcome::Used)
}

fn spamhaus_json(line: &str, out: &mut Parsed) -> LineResult {
    let v: serde_json::Value = serde_json::from_str(line.trim())
        .map_err(|e| LineReason::Syntax(truncate(&e.to_string(), 80)))?;
    if let Some(c) = v.get("cidr").and_then(|c| c.as_str()) {
        out.nets.extend(parse_ip_token(c)?);
        return Ok(Outcome::Used);
    }
    if v.get("type").and_then(|t| t.as_str()) == Some("metadata") {
        return Ok(Outcome::Ignored);
    }
    Err(LineReason::Syntax("JSON line without \"cidr\"".into()))
}

fn tor(line: &str, out: &mut Parsed) -> LineResult {
    let t = strip_comment(line);
    if t.is_empty() {
        return Ok(Outcome::Ignored);
    }
    let mut toks = t.split_whitespace();
    let first = toks.next().unwrap_or_default();
    match first {
        "ExitAddress" => {
            let ip = toks
                .next()
                .ok_or(LineReason::Syntax("ExitAddress without an address".into()))?;
            let a: IpAddr = ip
                .parse()
                .map_err(|_| LineReason::BadAddress(truncate(ip, 60)))?;
            out.nets.push(IpNet::from(a));
            Ok(Outcome::Used)
        }
        "ExitNode" | "Published" | "LastStatus" => Ok(Outcome::Ignored),
        _ => ip_plain(line, out),
    }
}

fn ipsum(line: &str, min_count: u32, out: &mut Parsed) -> LineResult {
    let t = line.split('#').next().unwrap_or("").trim();
    if t.is_empty() {
        return Ok(Outcome::Ignored);
    }
    let mut toks = t.split_whitespace();
    let ip = toks.next().unwrap_or_default();
    let nets = parse_ip_token(ip)?;
    let count = match toks.next() {
        Some(c) => c
            .parse::<u32>()
            .map_err(|_| LineReason::BadNumber(truncate(c, 30)))?,
        None => return Err(LineReason::Syntax("missing count column".into())),
    };
    if toks.next().is_some() {
        return Err(LineReason::TrailingText);
    }
    if count < min_count {
        return Ok(Outcome::Filtered);
    }
    out.nets.extend(nets);
    Ok(Outcome::Used)
}

/// hosts-file names that describe the machine itself, not a blocked domain.
const HOSTS_LOCAL_NAMES: [&str; 11] = [
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

fn is_sinkhole(a: &IpAddr) -> bool {
    a.is_unspecified() || a.is_loopback()
}

fn hosts(line: &str, out: &mut Parsed) -> LineResult {
    let t = line.split('#').next().unwrap_or("").trim();
    if t.is_empty() {
        return Ok(Outcome::Ignored);
    }
    let mut toks = t.split_whitespace();
    let ip = toks.next().unwrap_or_default();
    let addr: IpAddr = match ip.parse() {
        Ok(a) => a,
        Err(_) => {
            return Err(LineReason::Syntax(format!(
                "hosts line must start with an address, found {:?}",
                truncate(ip, 40)
            )))
        }
    };
    if !is_sinkhole(&addr) {
        return Err(LineReason::Unsupported(
            "hosts entry maps to a real address (redirect), not a sinkhole".into(),
        ));
    }
    let mut used = false;
    let mut filtered = false;
    let mut names = 0;
    for name in toks {
        names += 1;
        // `0.0.0.0 0.0.0.0` (StevenBlack's header) and the machine's own names are not
        // blocked domains.
        if HOSTS_LOCAL_NAMES.contains(&name.to_ascii_lowercase().as_str())
            || name.parse::<IpAddr>().is_ok()
        {
            filtered = true;
            continue;
        }
        let n = domain::normalize_domain(name).map_err(LineReason::BadDomain)?;
        out.domains.push(DomainRule {
            name: n,
            scope: Scope::Exact,
            action: DomainAction::Block,
        });
        used = true;
    }
    if names == 0 {
        return Err(LineReason::Syntax("address without a name".into()));
    }
    Ok(if used {
        Outcome::Used
    } else if filtered {
        Outcome::Filtered
    } else {
        Outcome::Ignored
    })
}

fn domains_plain(line: &str, plain_scope: Scope, out: &mut Parsed) -> LineResult {
    let t = line.split('#').next().unwrap_or("").trim();
    if t.is_empty() || t.starts_with('!') {
        return Ok(Outcome::Ignored);
    }
    let mut toks = t.split_whitespace();
    let first = toks.next().unwrap_or_default();
    if toks.next().is_some() {
        return Err(LineReason::TrailingText);
    }
    let (name, scope) =
        domain::parse_pattern(first, plain_scope, Scope::Subtree).map_err(LineReason::BadDomain)?;
    out.domains.push(DomainRule {
        name,
        scope,
        action: DomainAction::Block,
    });
    Ok(Outcome::Used)
}

/// AdGuard DNS modifiers that do not change which names a rule covers.
const ADBLOCK_HARMLESS_OPTIONS: [&str; 2] = ["important", "all"];

fn adblock(line: &str, out: &mut Parsed) -> LineResult {
    let t = line.trim();
    if t.is_empty() || t.starts_with('!') || t.starts_with('[') || t.starts_with('#') {
        // `#` alone starts a comment in AdGuard DNS lists; cosmetic rules contain `##`.
        if t.contains("##") || t.contains("#@#") || t.contains("#$#") {
            return Err(LineReason::Unsupported(
                "cosmetic (element hiding) rule".into(),
            ));
        }
        return Ok(Outcome::Ignored);
    }
    if t.contains("##") || t.contains("#@#") || t.contains("#$#") || t.contains("#?#") {
        return Err(LineReason::Unsupported(
            "cosmetic (element hiding) rule".into(),
        ));
    }
    let (body, allow) = match t.strip_prefix("@@") {
        Some(rest) => (rest, true),
        None => (t, false),
    };
    if body.starts_with('/') && body.len() > 1 {
        return Err(LineReason::Unsupported("regular-expression rule".into()));
    }
    let (pattern, options) = match body.split_once('$') {
        Some((p, o)) => (p, Some(o)),
        None => (body, None),
    };
    if let Some(opts) = options {
        for o in opts.split(',') {
            if !ADBLOCK_HARMLESS_OPTIONS.contains(&o.trim()) {
                return Err(LineReason::Unsupported(format!(
                    "modifier ${} has no DNS meaning here",
                    truncate(o, 30)
                )));
            }
        }
    }
    let action = if allow {
        DomainAction::Allow
    } else {
        DomainAction::Block
    };
    if let Some(rest) = pattern.strip_prefix("||") {
        let name = rest
            .strip_suffix('^')
            .or_else(|| rest.strip_suffix("^|"))
            .unwrap_or(rest);
        if name.contains(['/', '*', '^', '|', ':', '?', '=']) {
            return Err(LineReason::Unsupported(
                "URL-path or wildcard pattern (not a whole domain)".into(),
            ));
        }
        let n = domain::normalize_domain(name).map_err(LineReason::BadDomain)?;
        out.domains.push(DomainRule {
            name: n,
            scope: Scope::Subtree,
            action,
        });
        return Ok(Outcome::Used);
    }
    if let Some(rest) = pattern.strip_prefix('|') {
        // `|example.org^` anchors the start of the *URL*; with a scheme it has no DNS meaning.
        let name = rest.strip_suffix('^').unwrap_or(rest);
        if name.contains(['/', '*', ':', '|', '^']) {
            return Err(LineReason::Unsupported("URL pattern".into()));
        }
        let n = domain::normalize_domain(name).map_err(LineReason::BadDomain)?;
        out.domains.push(DomainRule {
            name: n,
            scope: Scope::Exact,
            action,
        });
        return Ok(Outcome::Used);
    }
    // hosts syntax is also valid in AdGuard DNS lists.
    let mut toks = pattern.split_whitespace();
    if let Some(first) = toks.next() {
        if first.parse::<IpAddr>().is_ok() {
            return hosts(pattern, out);
        }
        if toks.next().is_none() && !first.contains(['/', '*', '^', '|']) {
            // A bare hostname rule matches exactly that name (AdGuard DNS filtering syntax).
            let n = domain::normalize_domain(first).map_err(LineReason::BadDomain)?;
            out.domains.push(DomainRule {
                name: n,
                scope: Scope::Exact,
                action,
            });
            return Ok(Outcome::Used);
        }
    }
    Err(LineReason::Unsupported("URL or wildcard pattern".into()))
}

fn dnsmasq(line: &str, out: &mut Parsed) -> LineResult {
    let t = line.split('#').next().unwrap_or("").trim();
    if t.is_empty() {
        return Ok(Outcome::Ignored);
    }
    let (key, value) = t
        .split_once('=')
        .ok_or(LineReason::Syntax("expected key=value".into()))?;
    let key = key.trim();
    if !matches!(key, "address" | "server" | "local") {
        return Err(LineReason::Unsupported(format!(
            "dnsmasq option {}",
            truncate(key, 30)
        )));
    }
    let value = value.trim();
    let rest = value
        .strip_prefix('/')
        .ok_or(LineReason::Syntax("expected /domain/".into()))?;
    let (domains, target) = rest
        .rsplit_once('/')
        .ok_or(LineReason::Syntax("expected /domain/".into()))?;
    let target = target.trim();
    let blocks = match key {
        // `address=/x/` and `address=/x/#`... `#` is stripped as a comment above, so an empty
        // target covers both NXDOMAIN forms; sinkhole addresses block too.
        "address" => target.is_empty() || target.parse::<IpAddr>().is_ok_and(|a| is_sinkhole(&a)),
        // `server=/x/` and `local=/x/` with no upstream: answered locally only → NXDOMAIN.
        _ => target.is_empty(),
    };
    if !blocks {
        return Err(LineReason::Unsupported(
            "forwarding or redirect to a real address".into(),
        ));
    }
    let mut used = false;
    for d in domains.split('/') {
        if d.is_empty() {
            continue;
        }
        let n = domain::normalize_domain(d).map_err(LineReason::BadDomain)?;
        out.domains.push(DomainRule {
            name: n,
            scope: Scope::Subtree,
            action: DomainAction::Block,
        });
        used = true;
    }
    if !used {
        return Err(LineReason::Syntax("no domain between slashes".into()));
    }
    Ok(Outcome::Used)
}

fn unbound(line: &str, out: &mut Parsed) -> LineResult {
    let t = line.split('#').next().unwrap_or("").trim();
    if t.is_empty() || t == "server:" {
        return Ok(Outcome::Ignored);
    }
    let Some(rest) = t.strip_prefix("local-zone:") else {
        let key = t.split(':').next().unwrap_or(t);
        return Err(LineReason::Unsupported(format!(
            "unbound option {}",
            truncate(key, 30)
        )));
    };
    let rest = rest.trim();
    let (name, kind) = if let Some(r) = rest.strip_prefix('"') {
        let (n, k) = r
            .split_once('"')
            .ok_or(LineReason::Syntax("unterminated quote".into()))?;
        (n, k.trim())
    } else {
        let mut it = rest.split_whitespace();
        (it.next().unwrap_or(""), it.next().unwrap_or(""))
    };
    let action = match kind {
        "always_nxdomain" | "always_null" | "always_refuse" | "refuse" | "deny" | "static"
        | "redirect" | "inform_deny" => DomainAction::Block,
        "transparent" | "always_transparent" | "typetransparent" | "inform" | "nodefault" => {
            DomainAction::Allow
        }
        "" => return Err(LineReason::Syntax("local-zone without a type".into())),
        other => {
            return Err(LineReason::Unsupported(format!(
                "local-zone type {}",
                truncate(other, 30)
            )))
        }
    };
    let n = domain::normalize_domain(name).map_err(LineReason::BadDomain)?;
    out.domains.push(DomainRule {
        name: n,
        scope: Scope::Subtree,
        action,
    });
    Ok(Outcome::Used)
}

/// Read one line of at most [`MAX_LINE_BYTES`] into `buf`. Returns `Ok(None)` at end of input,
/// `Ok(Some(true))` when the line was too long (its rest was skipped).
fn read_bounded_line<R: BufRead>(r: &mut R, buf: &mut Vec<u8>) -> io::Result<Option<bool>> {
    buf.clear();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = match r.fill_buf() {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(if any { Some(too_long) } else { None });
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            let room = MAX_LINE_BYTES + 1 - buf.len().min(MAX_LINE_BYTES + 1);
            buf.extend_from_slice(&chunk[..take.min(room)]);
            if buf.len() > MAX_LINE_BYTES {
                too_long = true;
                buf.truncate(ERROR_TEXT_MAX);
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            if buf.last() == Some(&b'\r') && !too_long {
                buf.pop();
            }
            return Ok(Some(too_long));
        }
    }
}

/// Parse a feed document from `reader`. `file` names it in errors.
///
/// Only I/O errors of the reader fail the whole parse; bad content never does.
pub fn parse_reader<R: BufRead>(mut reader: R, format: &Format, file: &str) -> io::Result<Parsed> {
    let mut out = Parsed::default();
    if *format == Format::Stix {
        let mut data = Vec::new();
        reader
            .by_ref()
            .take(MAX_STIX_BYTES + 1)
            .read_to_end(&mut data)?;
        if data.len() as u64 > MAX_STIX_BYTES {
            out.reject(
                file,
                0,
                "",
                LineReason::Syntax(format!("bundle larger than {MAX_STIX_BYTES} bytes")),
            );
            return Ok(out);
        }
        crate::stix::parse_bundle(&data, file, &mut out);
        return Ok(out);
    }
    let mut parser = LineParser::new(format);
    let mut buf = Vec::with_capacity(256);
    let mut lineno = 0u64;
    while let Some(too_long) = read_bounded_line(&mut reader, &mut buf)? {
        lineno += 1;
        out.stats.lines += 1;
        if too_long {
            let text = String::from_utf8_lossy(&buf).into_owned();
            out.reject(file, lineno, &text, LineReason::TooLong);
            continue;
        }
        let line = match std::str::from_utf8(&buf) {
            Ok(s) => s,
            Err(_) => {
                let text = String::from_utf8_lossy(&buf).into_owned();
                out.reject(file, lineno, &text, LineReason::NotUtf8);
                continue;
            }
        };
        match parser.line(line, &mut out) {
            Ok(Outcome::Ignored) => out.stats.ignored += 1,
            Ok(Outcome::Filtered) => out.stats.filtered += 1,
            Ok(Outcome::Used) => out.stats.used += 1,
            Err(reason) => {
                let line = line.to_string();
                out.reject(file, lineno, &line, reason);
            }
        }
    }
    Ok(out)
}

/// Parse an in-memory document.
pub fn parse_bytes(data: &[u8], format: &Format, file: &str) -> Parsed {
    // Reading from a slice cannot fail.
    parse_reader(data, format, file).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(fmt: &str, text: &str) -> Parsed {
        parse_bytes(text.as_bytes(), &fmt.parse().unwrap(), "t")
    }

    fn nets(p: &Parsed) -> Vec<String> {
        p.nets.iter().map(|n| n.to_string()).collect()
    }

    fn names(p: &Parsed) -> Vec<(String, Scope, DomainAction)> {
        p.domains
            .iter()
            .map(|d| (d.name.clone(), d.scope, d.action))
            .collect()
    }

    #[test]
    fn plain_with_comments_ranges_and_errors() {
        let r = p(
            "plain",
            "# header\n192.0.2.1\n198.51.100.0/24 # c\n203.0.113.1-203.0.113.2\n; x\n\nnot-an-ip\n2001:db8::/32\n192.0.2.5 extra\n",
        );
        assert_eq!(
            nets(&r),
            [
                "192.0.2.1/32",
                "198.51.100.0/24",
                "203.0.113.1/32",
                "203.0.113.2/32",
                "2001:db8::/32"
            ]
        );
        assert_eq!(r.stats.rejected, 2);
        assert_eq!(r.errors[0].line, 7);
        assert_eq!(r.errors[0].file, "t");
        assert_eq!(r.errors[1].reason, LineReason::TrailingText);
        assert_eq!(r.stats.lines, 9);
    }

    #[test]
    fn spamhaus_text_and_json() {
        let r = p("spamhaus", "; Spamhaus DROP\n192.0.2.0/24 ; SBL123\n{\"cidr\":\"198.51.100.0/22\",\"sblid\":\"SBL1\"}\n{\"type\":\"metadata\",\"timestamp\":1}\n");
        assert_eq!(nets(&r), ["192.0.2.0/24", "198.51.100.0/22"]);
        assert_eq!(r.stats.rejected, 0);
    }

    #[test]
    fn tor_bulk_and_plain() {
        let r = p(
            "tor",
            "ExitNode 0011BD\nPublished 2024-01-01 00:00:00\nLastStatus 2024-01-01 01:00:00\nExitAddress 192.0.2.7 2024-01-01 01:02:03\n2001:db8::7\n",
        );
        assert_eq!(nets(&r), ["192.0.2.7/32", "2001:db8::7/128"]);
        assert_eq!(r.stats.ignored, 3);
    }

    #[test]
    fn ipsum_min_count() {
        let text = "# IPsum\n192.0.2.1\t5\n192.0.2.2\t1\n192.0.2.3\tx\n";
        let r = p("ipsum:min=3", text);
        assert_eq!(nets(&r), ["192.0.2.1/32"]);
        assert_eq!(r.stats.filtered, 1);
        assert!(matches!(r.errors[0].reason, LineReason::BadNumber(_)));
        assert_eq!(p("ipsum", text).nets.len(), 2);
    }

    #[test]
    fn csv_column_header_and_quotes() {
        let r = p(
            "csv:column=2,header",
            "# abuse.ch\n\"first_seen\",\"dst_ip\",\"port\"\n\"2024-01-01\",\"192.0.2.9\",\"443\"\n2024,198.51.100.1:8080,1\nshort\n",
        );
        assert_eq!(nets(&r), ["192.0.2.9/32", "198.51.100.1/32"]);
        assert_eq!(r.errors[0].reason, LineReason::MissingColumn(2));
    }

    #[test]
    fn hosts_forms() {
        let r = p(
            "hosts",
            "127.0.0.1 localhost\n::1 ip6-localhost\n0.0.0.0 0.0.0.0\n0.0.0.0 Ads.Example.com tracker.example.com # c\n:: v6.example.org\n192.0.2.1 redirect.example\n0.0.0.0\n",
        );
        assert_eq!(
            names(&r).into_iter().map(|x| x.0).collect::<Vec<_>>(),
            ["ads.example.com", "tracker.example.com", "v6.example.org"]
        );
        assert_eq!(r.stats.filtered, 3);
        assert_eq!(r.stats.unsupported, 1);
        assert_eq!(r.stats.rejected, 1);
    }

    #[test]
    fn domains_plain_wildcard_and_leading_dot() {
        let r = p(
            "domains",
            "a.example.com\n*.b.example.com\n.c.example.com\n192.0.2.1\nbad..name\n",
        );
        assert_eq!(
            names(&r),
            [
                ("a.example.com".into(), Scope::Exact, DomainAction::Block),
                ("b.example.com".into(), Scope::Subtree, DomainAction::Block),
                ("c.example.com".into(), Scope::Subtree, DomainAction::Block),
            ]
        );
        assert_eq!(r.stats.rejected, 2);
        let r = p("domains:subtree", "a.example.com\n");
        assert_eq!(r.domains[0].scope, Scope::Subtree);
    }

    #[test]
    fn adblock_subset() {
        let r = p(
            "adblock",
            "[Adblock Plus 2.0]\n! comment\n||ads.example.com^\n@@||ok.example.com^\n||imp.example.com^$important\n||x.example.com^$third-party\n/ads[0-9]+/\nexample.org##.banner\n||example.net/path^\nbare.example.com\n0.0.0.0 h.example.com\n",
        );
        assert_eq!(
            names(&r),
            [
                (
                    "ads.example.com".into(),
                    Scope::Subtree,
                    DomainAction::Block
                ),
                ("ok.example.com".into(), Scope::Subtree, DomainAction::Allow),
                (
                    "imp.example.com".into(),
                    Scope::Subtree,
                    DomainAction::Block
                ),
                ("bare.example.com".into(), Scope::Exact, DomainAction::Block),
                ("h.example.com".into(), Scope::Exact, DomainAction::Block),
            ]
        );
        assert_eq!(r.stats.unsupported, 4);
        assert_eq!(r.stats.ignored, 2);
    }

    #[test]
    fn dnsmasq_forms() {
        let r = p(
            "dnsmasq",
            "address=/a.example.com/0.0.0.0\naddress=/b.example.com/\nserver=/c.example.com/\nserver=/d.example.com/192.0.2.53\naddress=/e.example.com/f.example.com/::\ncache-size=100\n",
        );
        assert_eq!(
            names(&r).into_iter().map(|x| x.0).collect::<Vec<_>>(),
            [
                "a.example.com",
                "b.example.com",
                "c.example.com",
                "e.example.com",
                "f.example.com"
            ]
        );
        assert!(r.domains.iter().all(|d| d.scope == Scope::Subtree));
        assert_eq!(r.stats.unsupported, 2);
    }

    #[test]
    fn unbound_forms() {
        let r = p(
            "unbound",
            "server:\nlocal-zone: \"a.example.com.\" always_null\nlocal-zone: \"b.example.com\" always_nxdomain\nlocal-zone: \"ok.example.com.\" transparent\nlocal-data: \"x.example.com A 192.0.2.1\"\nlocal-zone: \"c.example.com\" weird\n",
        );
        assert_eq!(
            names(&r),
            [
                ("a.example.com".into(), Scope::Subtree, DomainAction::Block),
                ("b.example.com".into(), Scope::Subtree, DomainAction::Block),
                ("ok.example.com".into(), Scope::Subtree, DomainAction::Allow),
            ]
        );
        assert_eq!(r.stats.unsupported, 2);
    }

    #[test]
    fn rpz_triggers_and_actions() {
        let zone = "$TTL 300\n$ORIGIN rpz.example.\n@ IN SOA ns.example. admin.example. (\n  1 3600 600 86400 300 )\n  IN NS ns.example.\nbad.example.com CNAME .\n*.bad.example.com CNAME .\nnodata.example.com 300 IN CNAME *.\nok.example.com CNAME rpz-passthru.\ndrop.example.com CNAME rpz-drop.\nabs.example.net.rpz.example. CNAME .\n32.1.2.0.192.rpz-ip CNAME .\n24.0.100.51.198.rpz-ip CNAME rpz-passthru.\n48.zz.db8.2001.rpz-ip CNAME .\nns.evil.example.rpz-nsdname CNAME .\nredir.example.com CNAME walled.example.org.\nlocal.example.com A 192.0.2.1\n";
        let r = p("rpz", zone);
        assert_eq!(
            names(&r),
            [
                ("bad.example.com".into(), Scope::Exact, DomainAction::Block),
                (
                    "bad.example.com".into(),
                    Scope::SubdomainsOnly,
                    DomainAction::Block
                ),
                (
                    "nodata.example.com".into(),
                    Scope::Exact,
                    DomainAction::NoData
                ),
                ("ok.example.com".into(), Scope::Exact, DomainAction::Allow),
                ("drop.example.com".into(), Scope::Exact, DomainAction::Drop),
                ("abs.example.net".into(), Scope::Exact, DomainAction::Block),
            ]
        );
        assert_eq!(nets(&r), ["192.0.2.1/32", "2001:db8::/48"]);
        assert_eq!(
            r.allow_nets,
            vec!["198.51.100.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(r.stats.unsupported, 3, "{:?}", r.errors);
        assert_eq!(r.stats.rejected, 0, "{:?}", r.errors);
    }

    #[test]
    fn overlong_and_non_utf8_lines_are_reported_and_skipped() {
        let mut doc = Vec::new();
        doc.extend_from_slice(b"192.0.2.1\n");
        doc.extend(std::iter::repeat_n(b'1', MAX_LINE_BYTES + 10));
        doc.extend_from_slice(b"\n\xff\xfe\n192.0.2.2\r\n");
        let r = parse_bytes(&doc, &Format::Plain, "f");
        assert_eq!(r.nets.len(), 2);
        assert_eq!(r.errors[0].reason, LineReason::TooLong);
        assert!(r.errors[0].text.len() <= ERROR_TEXT_MAX);
        assert_eq!(r.errors[1].reason, LineReason::NotUtf8);
        assert_eq!(r.errors[1].line, 3);
    }

    #[test]
    fn errors_are_bounded() {
        let doc = "x\n".repeat(MAX_ERRORS_KEPT + 5);
        let r = p("plain", &doc);
        assert_eq!(r.errors.len(), MAX_ERRORS_KEPT);
        assert_eq!(r.stats.errors_dropped, 5);
        assert_eq!(r.stats.rejected as usize, MAX_ERRORS_KEPT + 5);
    }
}
