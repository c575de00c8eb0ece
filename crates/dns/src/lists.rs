//! Domain lists read with `rampart-feeds`' parsers, streamed in bounded batches.
//!
//! A `domains` list has a format ([`ListFormat`]):
//!
//! * one of feeds' domain formats (`hosts`, `domains`, `domains:subtree`, `wildcard`,
//!   `adblock`, `dnsmasq`, `unbound`, `rpz`, `stix`), read with feeds' semantics, including
//!   exception rules (AdBlock `@@`, unbound `transparent`, RPZ `rpz-passthru.`), which become
//!   the list's own exceptions;
//! * `auto` (the default), Rampart DNS's line syntax, which mixes forms line by line (Blocky
//!   and dnsmasq semantics: a bare name or a hosts entry covers its subdomains, `*.x` only the
//!   subdomains, `=x` only the name, `||x^` the name and subdomains; other AdBlock rules and
//!   `@@` exceptions are skipped). Each line is classified here, then parsed by feeds' parser
//!   for its form (hosts, adblock, domains), so normalisation (case, trailing dot, IDNA,
//!   lengths, characters) is feeds'; only the mapping to match flags is this module's.
//!
//! Input is read line by line with a bounded line buffer and handed to feeds in batches of at
//! most [`BATCH_BYTES`], so a list is never held whole as text or as parsed rules; names go
//! straight into the caller's sink (the compact [`crate::domainset::DomainSetBuilder`]). RPZ
//! and STIX are the exception: feeds parses them whole (RPZ carries `$ORIGIN` state across
//! lines, STIX is one JSON document).

use std::io::{self, BufRead};
use std::net::IpAddr;

use rampart_feeds::{parse_bytes, parse_reader, DomainAction, FeedKind, Format, Parsed, Scope};

use crate::domainset::{MATCH_EXACT, MATCH_SUBDOMAINS};

/// Longest `auto` line considered (longer lines are counted as malformed).
pub const MAX_LINE_BYTES: usize = 1024;
/// Longest line handed to a feeds parser for an explicit format (feeds' own cap).
pub const MAX_FEED_LINE_BYTES: usize = rampart_feeds::parse::MAX_LINE_BYTES;
/// Most text handed to a feeds parser at once.
pub const BATCH_BYTES: usize = 64 * 1024;

const BOTH: u8 = MATCH_EXACT | MATCH_SUBDOMAINS;

/// How a `domains` list is written.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum ListFormat {
    /// Rampart DNS's mixed line syntax (see the module doc).
    #[default]
    Auto,
    /// One of `rampart-feeds`' domain (or mixed) formats.
    Feed(Format),
}

impl ListFormat {
    /// `auto` or a feeds format name (`hosts`, `adblock`, `domains:subtree`, ...). IP-only
    /// feed formats are refused.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().eq_ignore_ascii_case("auto") {
            return Ok(Self::Auto);
        }
        let f: Format = s
            .parse()
            .map_err(|e: rampart_feeds::FormatError| e.to_string())?;
        match f.kind() {
            FeedKind::Ip => Err(format!(
                "{s:?} is an IP feed format; a domains list needs auto, hosts, domains, \
                 wildcard, adblock, dnsmasq, unbound, rpz or stix"
            )),
            FeedKind::Domain | FeedKind::Mixed => Ok(Self::Feed(f)),
        }
    }
}

/// Match flags of a feeds scope.
pub fn scope_flags(scope: Scope) -> u8 {
    match scope {
        Scope::Exact => MATCH_EXACT,
        Scope::Subtree => BOTH,
        Scope::SubdomainsOnly => MATCH_SUBDOMAINS,
    }
}

/// Counts from reading one list.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParseStats {
    /// Names added (blocking rules).
    pub names: usize,
    /// Exception names added (explicit formats only).
    pub exceptions: usize,
    /// Lines or names that looked like rules but were not valid (or not supported).
    pub malformed: usize,
    /// Names dropped because the list hit its entry cap.
    pub over_cap: usize,
}

/// One name for the caller: `(name, flags, is_exception)`.
pub type Sink<'a> = dyn FnMut(&str, u8, bool) + 'a;

/// The form of one `auto` line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    /// `||x^`.
    Adblock,
    /// A hosts entry, one name per batch line (`0.0.0.0 name`).
    Hosts,
    /// A bare name: name and subdomains.
    Plain,
    /// `*.x`: subdomains only.
    Star,
    /// `=x`: the name only.
    Exact,
}

impl Class {
    fn format(self) -> Format {
        match self {
            Class::Adblock => Format::Adblock,
            Class::Hosts => Format::Hosts,
            // Bare names with exact scope: a `*.`/`.` prefix left in the name comes back with
            // another scope, which `flags` refuses (the auto syntax has no such forms there).
            Class::Plain | Class::Star | Class::Exact => Format::Domains {
                plain_scope: Scope::Exact,
            },
        }
    }

    /// Flags for a rule feeds returned for a batch of this class; `None` = not valid here.
    fn flags(self, scope: Scope) -> Option<u8> {
        match (self, scope) {
            (Class::Adblock, Scope::Subtree) => Some(BOTH),
            (Class::Hosts, _) => Some(BOTH),
            (Class::Plain, Scope::Exact) => Some(BOTH),
            (Class::Star, Scope::Exact) => Some(MATCH_SUBDOMAINS),
            (Class::Exact, Scope::Exact) => Some(MATCH_EXACT),
            _ => None,
        }
    }
}

/// Collects lines of one format and hands them to feeds in bounded batches.
struct Batcher<'s, 'a> {
    format: Option<Format>,
    class: Option<Class>,
    buf: String,
    max_names: usize,
    stats: ParseStats,
    sink: &'s mut Sink<'a>,
}

impl Batcher<'_, '_> {
    fn push(&mut self, class: Option<Class>, format: &Format, line: &str) {
        if self.class != class
            || self.format.as_ref() != Some(format)
            || self.buf.len() + line.len() + 1 > BATCH_BYTES
        {
            self.flush();
        }
        self.class = class;
        if self.format.as_ref() != Some(format) {
            self.format = Some(format.clone());
        }
        self.buf.push_str(line);
        self.buf.push('\n');
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        if let Some(format) = &self.format {
            let parsed = parse_bytes(self.buf.as_bytes(), format, "list");
            let class = self.class;
            self.take(parsed, class);
        }
        self.buf.clear();
    }

    fn take(&mut self, parsed: Parsed, class: Option<Class>) {
        self.stats.malformed += (parsed.stats.rejected + parsed.stats.unsupported) as usize;
        for rule in parsed.domains {
            let allow = rule.action == DomainAction::Allow;
            let flags = match class {
                Some(c) => c.flags(rule.scope),
                None => Some(scope_flags(rule.scope)),
            };
            let Some(flags) = flags else {
                self.stats.malformed += 1;
                continue;
            };
            if allow && class.is_some() {
                // The auto syntax skips exceptions before they reach feeds.
                continue;
            }
            if self.stats.names + self.stats.exceptions >= self.max_names {
                self.stats.over_cap += 1;
                continue;
            }
            (self.sink)(&rule.name, flags, allow);
            if allow {
                self.stats.exceptions += 1;
            } else {
                self.stats.names += 1;
            }
        }
    }
}

/// Reads one line of at most `max` bytes into `buf` (without the line end). `Ok(None)` at end
/// of input; `Ok(Some(true))` when the line was longer (its rest is skipped unread into
/// memory).
pub(crate) fn next_line<R: BufRead + ?Sized>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
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
            return Ok(any.then_some(too_long));
        }
        any = true;
        let (take, done) = match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => (i, true),
            None => (chunk.len(), false),
        };
        if !too_long {
            let room = (max + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..take.min(room)]);
            if buf.len() > max {
                too_long = true;
                buf.clear();
            }
        }
        r.consume(if done { take + 1 } else { take });
        if done {
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Some(too_long));
        }
    }
}

/// Routes one `auto` line to the batcher. Returns false for a malformed line.
fn route_auto(line: &str, b: &mut Batcher<'_, '_>, fmts: &AutoFormats) -> bool {
    let line = line.split('#').next().unwrap_or("").trim();
    if line.is_empty() || line.starts_with('!') || line.starts_with('[') {
        return true;
    }
    if let Some(rest) = line.strip_prefix("||") {
        if rest.ends_with('^') {
            b.push(Some(Class::Adblock), &fmts.adblock, line);
        }
        return true;
    }
    if line.starts_with("@@") || line.contains('$') || line.contains('/') {
        return true;
    }
    let mut tokens = line.split_whitespace();
    let first = tokens.next().unwrap_or("");
    if first.parse::<IpAddr>().is_ok() {
        // One name per batch line, so one bad name does not cost the others on its line;
        // the sinkhole address makes feeds take the names of any hosts line (Pi-hole and
        // Blocky do too; feeds alone refuses redirects, which matter for kernel sets).
        let mut hosts_line = String::with_capacity(line.len() + 8);
        for t in tokens {
            hosts_line.clear();
            hosts_line.push_str("0.0.0.0 ");
            hosts_line.push_str(t);
            b.push(Some(Class::Hosts), &fmts.hosts, &hosts_line);
        }
        return true;
    }
    if tokens.next().is_some() {
        return false;
    }
    let (class, name) = if let Some(rest) = first.strip_prefix("*.") {
        (Class::Star, rest)
    } else if let Some(rest) = first.strip_prefix('=') {
        (Class::Exact, rest)
    } else {
        (Class::Plain, first)
    };
    // feeds' domains parser reads these as blank or comment lines; here they are bad names.
    if name.is_empty() || name.starts_with('!') {
        return false;
    }
    b.push(Some(class), &fmts.domains, name);
    true
}

struct AutoFormats {
    adblock: Format,
    hosts: Format,
    domains: Format,
}

/// Reads every name of `reader` in `format` into `sink`, at most `max_names` of them.
/// Only I/O errors fail; bad lines are counted.
pub fn read_list<R: BufRead>(
    mut reader: R,
    format: &ListFormat,
    max_names: usize,
    sink: &mut Sink<'_>,
) -> io::Result<ParseStats> {
    let mut b = Batcher {
        format: None,
        class: None,
        buf: String::new(),
        max_names,
        stats: ParseStats::default(),
        sink,
    };
    let mut line = Vec::with_capacity(256);
    match format {
        ListFormat::Feed(f @ (Format::Rpz | Format::Stix)) => {
            let parsed = parse_reader(reader, f, "list")?;
            b.take(parsed, None);
        }
        ListFormat::Feed(f) => {
            while let Some(too_long) = next_line(&mut reader, &mut line, MAX_FEED_LINE_BYTES)? {
                match std::str::from_utf8(&line) {
                    Ok(text) if !too_long => b.push(None, f, text),
                    _ => b.stats.malformed += 1,
                }
            }
        }
        ListFormat::Auto => {
            let fmts = AutoFormats {
                adblock: Class::Adblock.format(),
                hosts: Class::Hosts.format(),
                domains: Class::Plain.format(),
            };
            while let Some(too_long) = next_line(&mut reader, &mut line, MAX_LINE_BYTES)? {
                let ok = match std::str::from_utf8(&line) {
                    Ok(text) if !too_long => route_auto(text, &mut b, &fmts),
                    _ => false,
                };
                if !ok {
                    b.stats.malformed += 1;
                }
            }
        }
    }
    b.flush();
    Ok(b.stats)
}

/// [`read_list`] over in-memory text.
pub fn parse_text(
    text: &str,
    format: &ListFormat,
    max_names: usize,
    sink: &mut Sink<'_>,
) -> ParseStats {
    // Reading from a slice cannot fail.
    read_list(text.as_bytes(), format, max_names, sink).unwrap_or_default()
}

/// Every name of one `auto`-syntax text with its flags (tests, tools).
pub fn auto_names(text: &str) -> (Vec<(String, u8)>, ParseStats) {
    let mut out = Vec::new();
    let st = parse_text(text, &ListFormat::Auto, usize::MAX, &mut |n, f, _| {
        out.push((n.to_string(), f))
    });
    (out, st)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Option<(String, u8)> {
        let (v, _) = auto_names(line);
        v.into_iter().next()
    }

    #[test]
    fn auto_forms() {
        assert_eq!(
            one("Ads.Example.COM."),
            Some(("ads.example.com".into(), BOTH))
        );
        assert_eq!(
            one("||track.example^"),
            Some(("track.example".into(), BOTH))
        );
        assert_eq!(
            one("*.cdn.example"),
            Some(("cdn.example".into(), MATCH_SUBDOMAINS))
        );
        assert_eq!(
            one("=only.example"),
            Some(("only.example".into(), MATCH_EXACT))
        );
        assert_eq!(
            one("0.0.0.0 bad.example # c"),
            Some(("bad.example".into(), BOTH))
        );
        assert_eq!(
            one("192.0.2.1 redirect.example"),
            Some(("redirect.example".into(), BOTH))
        );
        assert_eq!(
            one("bücher.example"),
            Some(("xn--bcher-kva.example".into(), BOTH))
        );
        for skip in [
            "127.0.0.1 localhost",
            "# comment",
            "! adblock comment",
            "[Adblock Plus 2.0]",
            "@@||good.example^",
            "||x.example^$third-party",
            "||x.example",
            "example.com/path",
        ] {
            let (v, st) = auto_names(skip);
            assert!(v.is_empty() && st.malformed == 0, "{skip}");
        }
        for bad in [
            "bad name",
            "a..b",
            "*.",
            "=",
            "*.*.x.example",
            ".x.example",
            "=!x",
        ] {
            let (v, st) = auto_names(bad);
            assert!(v.is_empty(), "{bad}: {v:?}");
            assert_eq!(st.malformed, 1, "{bad}");
        }
        let (v, st) = auto_names("0.0.0.0 a.example bad_name! b.example");
        assert_eq!(v.len(), 2);
        assert_eq!(st.malformed, 1);
        let long = "a".repeat(MAX_LINE_BYTES + 1);
        assert_eq!(auto_names(&long).1.malformed, 1);
    }

    #[test]
    fn caps_are_enforced() {
        let mut got = Vec::new();
        let st = parse_text(
            "a.example\nb.example\nc.example\n",
            &ListFormat::Auto,
            2,
            &mut |n, _, _| got.push(n.to_string()),
        );
        assert_eq!((st.names, st.malformed, st.over_cap), (2, 0, 1));
        assert_eq!(got, ["a.example", "b.example"]);
    }

    #[test]
    fn explicit_feed_formats_keep_feeds_semantics_and_exceptions() {
        let adblock = ListFormat::parse("adblock").unwrap();
        let mut got = Vec::new();
        let st = parse_text(
            "||ads.example^\n@@||ok.ads.example^\nplain.example\n/re/\n",
            &adblock,
            100,
            &mut |n, f, allow| got.push((n.to_string(), f, allow)),
        );
        assert_eq!(
            got,
            [
                ("ads.example".to_string(), BOTH, false),
                ("ok.ads.example".to_string(), BOTH, true),
                ("plain.example".to_string(), MATCH_EXACT, false),
            ]
        );
        assert_eq!((st.names, st.exceptions, st.malformed), (2, 1, 1));
        let hosts = ListFormat::parse("hosts").unwrap();
        let (mut names, mut flags) = (Vec::new(), Vec::new());
        parse_text("0.0.0.0 h.example\n", &hosts, 10, &mut |n, f, _| {
            names.push(n.to_string());
            flags.push(f);
        });
        assert_eq!(
            (names, flags),
            (vec!["h.example".to_string()], vec![MATCH_EXACT])
        );
        let rpz = ListFormat::parse("rpz").unwrap();
        let mut got = Vec::new();
        parse_text(
            "$ORIGIN rpz.example.\nbad.test CNAME .\n*.bad.test CNAME .\n",
            &rpz,
            10,
            &mut |n, f, _| got.push((n.to_string(), f)),
        );
        assert_eq!(
            got,
            [
                ("bad.test".to_string(), MATCH_EXACT),
                ("bad.test".to_string(), MATCH_SUBDOMAINS)
            ]
        );
        assert!(ListFormat::parse("spamhaus").is_err());
        assert!(ListFormat::parse("nonsense").is_err());
    }

    #[test]
    fn batches_span_many_lines_and_formats() {
        // More than one batch, and class changes inside: every name arrives once, in order.
        let mut text = String::new();
        for i in 0..20_000 {
            match i % 4 {
                0 => text.push_str(&format!("n{i}.example\n")),
                1 => text.push_str(&format!("||n{i}.example^\n")),
                2 => text.push_str(&format!("0.0.0.0 n{i}.example\n")),
                _ => text.push_str(&format!("*.n{i}.example\n")),
            }
        }
        let (v, st) = auto_names(&text);
        assert_eq!(v.len(), 20_000);
        assert_eq!(st.malformed, 0);
        for (i, (n, f)) in v.iter().enumerate() {
            assert_eq!(n, &format!("n{i}.example"));
            assert_eq!(*f, if i % 4 == 3 { MATCH_SUBDOMAINS } else { BOTH });
        }
    }

    #[test]
    fn lines_are_bounded_and_bad_bytes_counted() {
        let mut data = b"ok.example\n".to_vec();
        data.extend(std::iter::repeat_n(b'a', 100_000));
        data.extend_from_slice(b"\n\xff\xfe.example\nlast.example\r\n");
        let mut got = Vec::new();
        let st = read_list(&data[..], &ListFormat::Auto, 10, &mut |n, _, _| {
            got.push(n.to_string())
        })
        .unwrap();
        assert_eq!(got, ["ok.example", "last.example"]);
        assert_eq!(st.malformed, 2);
    }
}
