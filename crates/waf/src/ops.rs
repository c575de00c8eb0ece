//! SecLang operators (`@rx`, `@pm`, `@eq`, …). Regexes use the linear-time `regex` crate in byte
//! mode with ModSecurity's flags (dot matches newline, multi-line anchors); a pattern it cannot
//! compile is a load error naming the rule's file and line.

use std::net::IpAddr;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use ipnet::IpNet;
use regex::bytes::{Regex, RegexBuilder};

use crate::injection;
use crate::rules::{DataFiles, MacroText};

/// Operator load errors.
#[derive(Debug)]
pub enum OpError {
    /// Regex did not compile: (pattern, message).
    Regex(String, String),
    /// Anything else.
    Other(String),
}

/// Compiled operator kinds.
#[derive(Debug, Clone)]
pub enum OpKind {
    /// `@rx`
    Rx(Regex),
    /// `@pm` / `@pmFromFile` (phrases, ASCII case-insensitive).
    Pm(AhoCorasick),
    /// `@beginsWith`
    BeginsWith(MacroText),
    /// `@endsWith`
    EndsWith(MacroText),
    /// `@contains`
    Contains(MacroText),
    /// `@containsWord`
    ContainsWord(MacroText),
    /// `@streq`
    StrEq(MacroText),
    /// `@within`
    Within(MacroText),
    /// `@eq`
    Eq(MacroText),
    /// `@ge`
    Ge(MacroText),
    /// `@gt`
    Gt(MacroText),
    /// `@le`
    Le(MacroText),
    /// `@lt`
    Lt(MacroText),
    /// `@ipMatch` / `@ipMatchFromFile`
    IpMatch(Vec<IpNet>),
    /// `@validateByteRange`
    ValidateByteRange(Box<[bool; 256]>),
    /// `@validateUrlEncoding`
    ValidateUrlEncoding,
    /// `@validateUtf8Encoding`
    ValidateUtf8Encoding,
    /// `@unconditionalMatch`
    Unconditional,
    /// `@noMatch`
    NoMatch,
    /// `@detectSQLi`
    DetectSqli,
    /// `@detectXSS`
    DetectXss,
}

/// An operator with its negation flag.
#[derive(Debug, Clone)]
pub struct Operator {
    /// `!@…`
    pub negated: bool,
    /// Name as written (for logs).
    pub name: String,
    /// Compiled kind.
    pub kind: OpKind,
    /// `@rx` compiled in Unicode mode (reported at load time).
    pub unicode_regex: bool,
    /// `@pm`/`@pmFromFile` phrases (for the evaluator's prefilter).
    pub phrases: Vec<String>,
}

/// Expands macros at evaluation time.
pub trait Expand {
    /// Expand `m` to bytes.
    fn expand(&self, m: &MacroText) -> Vec<u8>;

    /// Expand `m`, appending to `out`.
    fn expand_into(&self, m: &MacroText, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.expand(m));
    }
}

/// `m` expanded; a text without macros (most operator parameters) is borrowed, not copied.
fn expanded<'a>(m: &'a MacroText, env: &dyn Expand) -> std::borrow::Cow<'a, [u8]> {
    match m.parts.as_slice() {
        [] => std::borrow::Cow::Borrowed(&[]),
        [crate::rules::MacroPart::Lit(l)] => std::borrow::Cow::Borrowed(l.as_bytes()),
        _ => std::borrow::Cow::Owned(env.expand(m)),
    }
}

/// Translate PCRE-isms the `regex` crate reads differently in byte mode: `\x{HH}` (≤ 0xFF)
/// means a byte in PCRE but a Unicode scalar to `regex`, which rejects it inside classes when
/// Unicode is off; rewrite it to `\xHH`.
pub fn translate_pcre(pattern: &str) -> String {
    let b = pattern.as_bytes();
    let mut out = String::with_capacity(pattern.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            if b[i + 1] == b'x' && i + 2 < b.len() && b[i + 2] == b'{' {
                if let Some(close) = pattern[i + 3..].find('}') {
                    let hex = &pattern[i + 3..i + 3 + close];
                    if (1..=2).contains(&hex.len()) && hex.bytes().all(|c| c.is_ascii_hexdigit()) {
                        out.push_str(&format!("\\x{hex:0>2}"));
                        i += 3 + close + 1;
                        continue;
                    }
                }
            }
            let n = pattern[i + 1..].chars().next().map_or(1, char::len_utf8);
            out.push_str(&pattern[i..i + 1 + n]);
            i += 1 + n;
            continue;
        }
        let ch_len = pattern[i..].chars().next().map_or(1, char::len_utf8);
        out.push_str(&pattern[i..i + ch_len]);
        i += ch_len;
    }
    out
}

/// Compile a regex with ModSecurity's flags.
pub fn compile_rx(pattern: &str) -> Result<Regex, String> {
    compile_rx_mode(pattern).map(|(re, _)| re)
}

/// Compile; the flag says whether Unicode mode was needed (a pattern with code points above
/// 0xFF or literal non-ASCII text), where classes match UTF-8 sequences instead of bytes.
pub fn compile_rx_mode(pattern: &str) -> Result<(Regex, bool), String> {
    let pattern = translate_pcre(pattern);
    let pattern = pattern.as_str();
    let bytes = RegexBuilder::new(pattern)
        .unicode(false)
        .dot_matches_new_line(true)
        .multi_line(true)
        .size_limit(256 << 20)
        .dfa_size_limit(8 << 20)
        .build();
    if let Ok(re) = bytes {
        return Ok((re, false));
    }
    {
        {
            // `\x{…}` above 0xFF and literal non-ASCII need Unicode mode.
            RegexBuilder::new(pattern)
                .unicode(true)
                .dot_matches_new_line(true)
                .multi_line(true)
                .size_limit(256 << 20)
                .dfa_size_limit(8 << 20)
                .build()
                .map(|re| (re, true))
                .map_err(|e| e.to_string())
        }
    }
}

fn pm_automaton(phrases: &[String]) -> Result<AhoCorasick, OpError> {
    AhoCorasickBuilder::new()
        .ascii_case_insensitive(true)
        .match_kind(MatchKind::LeftmostLongest)
        .build(phrases)
        .map_err(|e| OpError::Other(format!("phrase set: {e}")))
}

fn data_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

fn parse_ip(s: &str) -> Option<IpNet> {
    if let Ok(n) = s.parse::<IpNet>() {
        return Some(n);
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

impl Operator {
    /// Parse `!@rx pattern` (no `@` means `@rx`).
    pub fn parse(text: &str, file: &str, data: &dyn DataFiles) -> Result<Self, OpError> {
        let (negated, rest) = match text.strip_prefix('!') {
            Some(r) => (true, r),
            None => (false, text),
        };
        let (name, param) = match rest.strip_prefix('@') {
            Some(r) => match r.find(|c: char| c.is_whitespace()) {
                Some(i) => (r[..i].to_string(), r[i..].trim_start().to_string()),
                None => (r.to_string(), String::new()),
            },
            None => ("rx".to_string(), rest.to_string()),
        };
        let lname = name.to_ascii_lowercase();
        let m = || MacroText::parse(&param);
        let mut unicode_regex = false;
        let mut pm_phrases: Vec<String> = Vec::new();
        let kind = match lname.as_str() {
            "rx" => {
                let (re, uni) =
                    compile_rx_mode(&param).map_err(|e| OpError::Regex(param.clone(), e))?;
                unicode_regex = uni;
                OpKind::Rx(re)
            }
            "pm" => {
                let phrases: Vec<String> = param.split_whitespace().map(str::to_string).collect();
                if phrases.is_empty() {
                    return Err(OpError::Other("@pm needs phrases".into()));
                }
                let ac = pm_automaton(&phrases)?;
                pm_phrases = phrases;
                OpKind::Pm(ac)
            }
            "pmfromfile" | "pmf" => {
                let mut phrases = Vec::new();
                for f in param.split_whitespace() {
                    let text = data.read(file, f).ok_or_else(|| {
                        OpError::Other(format!("@{name}: cannot read data file {f}"))
                    })?;
                    phrases.extend(data_lines(&text).map(str::to_string));
                }
                if phrases.is_empty() {
                    return Err(OpError::Other(format!("@{name}: no phrases in {param}")));
                }
                let ac = pm_automaton(&phrases)?;
                pm_phrases = phrases;
                OpKind::Pm(ac)
            }
            "beginswith" => OpKind::BeginsWith(m()),
            "endswith" => OpKind::EndsWith(m()),
            "contains" => OpKind::Contains(m()),
            "containsword" => OpKind::ContainsWord(m()),
            "streq" => OpKind::StrEq(m()),
            "within" => OpKind::Within(m()),
            "eq" => OpKind::Eq(m()),
            "ge" => OpKind::Ge(m()),
            "gt" => OpKind::Gt(m()),
            "le" => OpKind::Le(m()),
            "lt" => OpKind::Lt(m()),
            "ipmatch" | "ipmatchfromfile" | "ipmatchf" => {
                let mut nets = Vec::new();
                let words: Vec<String> = if lname == "ipmatch" {
                    param
                        .split([',', ' '])
                        .filter(|w| !w.is_empty())
                        .map(str::to_string)
                        .collect()
                } else {
                    let text = data.read(file, param.trim()).ok_or_else(|| {
                        OpError::Other(format!("@{name}: cannot read data file {param}"))
                    })?;
                    data_lines(&text).map(str::to_string).collect()
                };
                for w in words {
                    nets.push(
                        parse_ip(w.trim())
                            .ok_or_else(|| OpError::Other(format!("@{name}: bad address {w}")))?,
                    );
                }
                OpKind::IpMatch(nets)
            }
            "validatebyterange" => {
                let mut allowed = Box::new([false; 256]);
                for part in param.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (a, b) = part.split_once('-').unwrap_or((part, part));
                    let a: u8 = a
                        .trim()
                        .parse()
                        .map_err(|_| OpError::Other(format!("bad byte range {part}")))?;
                    let b: u8 = b
                        .trim()
                        .parse()
                        .map_err(|_| OpError::Other(format!("bad byte range {part}")))?;
                    for v in a.min(b)..=a.max(b) {
                        allowed[usize::from(v)] = true;
                    }
                }
                OpKind::ValidateByteRange(allowed)
            }
            "validateurlencoding" => OpKind::ValidateUrlEncoding,
            "validateutf8encoding" => OpKind::ValidateUtf8Encoding,
            "unconditionalmatch" => OpKind::Unconditional,
            "nomatch" => OpKind::NoMatch,
            "detectsqli" => OpKind::DetectSqli,
            "detectxss" => OpKind::DetectXss,
            _ => return Err(OpError::Other(format!("unsupported operator @{name}"))),
        };
        Ok(Self {
            negated,
            name,
            kind,
            unicode_regex,
            phrases: pm_phrases,
        })
    }

    /// Evaluate on one value; `captures` receives TX.0–9 for `@rx` when requested. Returns the
    /// match decision after negation, and the matched text (for `MATCHED_VAR`-style logging).
    pub fn eval(
        &self,
        value: &[u8],
        env: &dyn Expand,
        captures: Option<&mut Vec<Vec<u8>>>,
    ) -> bool {
        let m = self.raw_eval(value, env, captures);
        m != self.negated
    }

    fn raw_eval(
        &self,
        value: &[u8],
        env: &dyn Expand,
        captures: Option<&mut Vec<Vec<u8>>>,
    ) -> bool {
        let num = |m: &MacroText| -> (i64, i64) { (to_int(value), to_int(&expanded(m, env))) };
        match &self.kind {
            OpKind::Rx(re) => match captures {
                // The lazy DFA answers "no match" far faster than the capture engine.
                Some(_) if !re.is_match(value) => false,
                Some(caps) => match re.captures(value) {
                    Some(c) => {
                        caps.clear();
                        for i in 0..c.len().min(10) {
                            caps.push(c.get(i).map(|m| m.as_bytes().to_vec()).unwrap_or_default());
                        }
                        true
                    }
                    None => false,
                },
                None => re.is_match(value),
            },
            OpKind::Pm(ac) => match ac.find(value) {
                Some(mt) => {
                    if let Some(caps) = captures {
                        caps.clear();
                        caps.push(value[mt.start()..mt.end()].to_vec());
                    }
                    true
                }
                None => false,
            },
            OpKind::BeginsWith(m) => value.starts_with(&expanded(m, env)),
            OpKind::EndsWith(m) => value.ends_with(&expanded(m, env)),
            OpKind::Contains(m) => contains(value, &expanded(m, env)),
            OpKind::ContainsWord(m) => contains_word(value, &expanded(m, env)),
            OpKind::StrEq(m) => value == &*expanded(m, env),
            OpKind::Within(m) => {
                let hay = expanded(m, env);
                value.is_empty() || contains(&hay, value)
            }
            OpKind::Eq(m) => {
                let (a, b) = num(m);
                a == b
            }
            OpKind::Ge(m) => {
                let (a, b) = num(m);
                a >= b
            }
            OpKind::Gt(m) => {
                let (a, b) = num(m);
                a > b
            }
            OpKind::Le(m) => {
                let (a, b) = num(m);
                a <= b
            }
            OpKind::Lt(m) => {
                let (a, b) = num(m);
                a < b
            }
            OpKind::IpMatch(nets) => match std::str::from_utf8(value)
                .ok()
                .and_then(|s| s.trim().parse::<IpAddr>().ok())
            {
                Some(ip) => nets.iter().any(|n| n.contains(&ip)),
                None => false,
            },
            OpKind::ValidateByteRange(allowed) => value.iter().any(|b| !allowed[usize::from(*b)]),
            OpKind::ValidateUrlEncoding => !valid_url_encoding(value),
            OpKind::ValidateUtf8Encoding => std::str::from_utf8(value).is_err(),
            OpKind::Unconditional => true,
            OpKind::NoMatch => false,
            OpKind::DetectSqli => match injection::detect_sqli(value) {
                Some(fp) => {
                    if let Some(caps) = captures {
                        caps.clear();
                        caps.push(fp.into_bytes());
                    }
                    true
                }
                None => false,
            },
            OpKind::DetectXss => injection::detect_xss(value),
        }
    }
}

/// ModSecurity's integer conversion: leading optional sign and digits, anything else is 0.
pub fn to_int(v: &[u8]) -> i64 {
    let s = std::str::from_utf8(v).unwrap_or("").trim();
    let mut end = 0;
    for (i, c) in s.char_indices() {
        if c.is_ascii_digit() || (i == 0 && (c == '-' || c == '+')) {
            end = i + 1;
        } else {
            break;
        }
    }
    s[..end].parse().unwrap_or(0)
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || memchr::memmem::find(hay, needle).is_some()
}

fn contains_word(hay: &[u8], needle: &[u8]) -> bool {
    if needle.is_empty() {
        return true;
    }
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        if &hay[i..i + needle.len()] == needle {
            let before = i == 0 || !word(hay[i - 1]);
            let after = i + needle.len() == hay.len() || !word(hay[i + needle.len()]);
            if before && after {
                return true;
            }
        }
        i += 1;
    }
    false
}

fn valid_url_encoding(v: &[u8]) -> bool {
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'%' {
            if i + 2 >= v.len() || !v[i + 1].is_ascii_hexdigit() || !v[i + 2].is_ascii_hexdigit() {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    struct NoEnv;
    impl Expand for NoEnv {
        fn expand(&self, m: &MacroText) -> Vec<u8> {
            m.literal().unwrap_or_default().into_bytes()
        }
    }

    fn op(s: &str) -> Operator {
        Operator::parse(s, "t.conf", &|_: &str, _: &str| {
            Some("foo\n# c\nbar\n".to_string())
        })
        .unwrap()
    }

    fn ev(o: &str, v: &str) -> bool {
        op(o).eval(v.as_bytes(), &NoEnv, None)
    }

    #[test]
    fn operators() {
        assert!(ev("@rx ^a.c$", "a\nc"));
        assert!(ev("!@rx ^x", "abc"));
        assert!(ev("@pm Foo baz", "xxFOOxx"));
        assert!(ev("@pmFromFile x.data", "a BAR b"));
        assert!(!ev("@pmFromFile x.data", "# c"));
        assert!(ev("@within GET POST", "GET"));
        assert!(!ev("@within GET POST", "PUT"));
        assert!(ev("@eq 0", "abc"));
        assert!(ev("@lt 5", "4"));
        assert!(ev("@ge 5", "5"));
        assert!(ev("@ipMatch 192.0.2.0/24,2001:db8::1", "192.0.2.7"));
        assert!(!ev("@ipMatch 192.0.2.0/24", "198.51.100.1"));
        assert!(ev("@validateByteRange 32-126", "a\x01"));
        assert!(!ev("@validateByteRange 32-126", "abc"));
        assert!(ev("@validateUrlEncoding", "a%zz"));
        assert!(!ev("@validateUrlEncoding", "a%41"));
        assert!(ev("@containsWord select", "a select b"));
        assert!(!ev("@containsWord select", "selection"));
        assert!(ev("@beginsWith ab", "abc"));
        assert!(ev("@endsWith bc", "abc"));
        assert!(ev("@streq abc", "abc"));
        let mut caps = Vec::new();
        assert!(op("@rx (b)(c)").eval(b"abc", &NoEnv, Some(&mut caps)));
        assert_eq!(caps, vec![b"bc".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        assert!(Operator::parse("@rx (", "t", &|_: &str, _: &str| None).is_err());
        assert!(Operator::parse("@bogus x", "t", &|_: &str, _: &str| None).is_err());
    }

    #[test]
    fn pcre_byte_escapes() {
        assert_eq!(
            translate_pcre(r"[\x7f-\x{ff}]\\x{e2}\x{2019}"),
            r"[\x7f-\xff]\\x{e2}\x{2019}"
        );
        let re = compile_rx(r"\x{e2}\x80[\x98\x99]|[\x{bc}]").unwrap();
        assert!(re.is_match("\u{2019}".as_bytes()));
        assert!(re.is_match(b"\xbc"));
    }

    #[test]
    fn utf8_validation() {
        assert!(op("@validateUtf8Encoding").eval(b"a\xff", &NoEnv, None));
        assert!(!op("@validateUtf8Encoding").eval("é".as_bytes(), &NoEnv, None));
    }
}
