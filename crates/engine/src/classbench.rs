//! ClassBench rule sets and header traces: parsing, a seeded trace generator, and the two
//! matchers (linear reference and the fast [`Classifier`]) over them.
//!
//! Rule line: `@src/len<TAB>dst/len<TAB>sp_lo : sp_hi<TAB>dp_lo : dp_hi<TAB>proto/mask[<TAB>flags/mask]`
//! (tabs or spaces, optional trailing tab and CR). Priority is line order, first match wins.
//! Trace line: `src dst sport dport proto [flags] [filter]` as decimal integers.

use crate::classifier::{BuildError, Classifier, FieldKind, RuleIntervals};
use crate::hypersplit::{Boxes, Forest, Tree};

/// Longest line accepted.
// Why: real ClassBench lines are under 100 characters; 4 KiB keeps a corrupt file from
// building one huge string per line while leaving ample room.
pub const MAX_LINE_LEN: usize = 4096;

/// One ClassBench rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CbRule {
    /// Source network address (host bits cleared) and prefix length.
    pub src: (u32, u8),
    /// Destination network and prefix length.
    pub dst: (u32, u8),
    /// Source port range, inclusive.
    pub sport: (u16, u16),
    /// Destination port range, inclusive.
    pub dport: (u16, u16),
    /// Protocol value and mask.
    pub proto: (u8, u8),
}

/// One trace header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CbHeader {
    /// Source address.
    pub src: u32,
    /// Destination address.
    pub dst: u32,
    /// Source port.
    pub sport: u16,
    /// Destination port.
    pub dport: u16,
    /// Protocol.
    pub proto: u8,
}

/// Errors parsing ClassBench files.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// A line does not have the expected shape.
    #[error("line {line}: {what}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        what: String,
    },
    /// A line is longer than [`MAX_LINE_LEN`].
    #[error("line {0} is too long")]
    LineTooLong(usize),
}

fn syntax(line: usize, what: impl Into<String>) -> ParseError {
    ParseError::Syntax {
        line,
        what: what.into(),
    }
}

fn parse_num(s: &str) -> Option<u64> {
    let s = s.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        s.parse().ok()
    }
}

fn parse_prefix(s: &str) -> Option<(u32, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.trim().parse().ok()?;
    let len: u8 = len.trim().parse().ok()?;
    if len > 32 {
        return None;
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    Some((u32::from(addr) & mask, len))
}

/// Parse a rule file. Blank lines and `#` comments are skipped.
pub fn parse_rules(text: &str) -> Result<Vec<CbRule>, ParseError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        if raw.len() > MAX_LINE_LEN {
            return Err(ParseError::LineTooLong(line_no));
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some(body) = line.strip_prefix('@') else {
            return Err(syntax(line_no, "rule lines start with '@'"));
        };
        // Ranges are written `lo : hi`; joining them makes whitespace splitting uniform.
        let joined = body
            .replace(" : ", ":")
            .replace(" :", ":")
            .replace(": ", ":");
        let tok: Vec<&str> = joined.split_whitespace().collect();
        if tok.len() < 5 {
            return Err(syntax(
                line_no,
                format!("expected 5 fields, got {}", tok.len()),
            ));
        }
        let src = parse_prefix(tok[0]).ok_or_else(|| syntax(line_no, "bad source prefix"))?;
        let dst = parse_prefix(tok[1]).ok_or_else(|| syntax(line_no, "bad destination prefix"))?;
        let range = |t: &str, what: &str| -> Result<(u16, u16), ParseError> {
            let (a, b) = t.split_once(':').ok_or_else(|| syntax(line_no, what))?;
            let a = parse_num(a).and_then(|v| u16::try_from(v).ok());
            let b = parse_num(b).and_then(|v| u16::try_from(v).ok());
            match (a, b) {
                (Some(a), Some(b)) if a <= b => Ok((a, b)),
                _ => Err(syntax(line_no, what)),
            }
        };
        let sport = range(tok[2], "bad source port range")?;
        let dport = range(tok[3], "bad destination port range")?;
        let (pv, pm) = tok[4]
            .split_once('/')
            .ok_or_else(|| syntax(line_no, "bad protocol"))?;
        let pv = parse_num(pv).and_then(|v| u8::try_from(v).ok());
        let pm = parse_num(pm).and_then(|v| u8::try_from(v).ok());
        let (Some(pv), Some(pm)) = (pv, pm) else {
            return Err(syntax(line_no, "bad protocol"));
        };
        out.push(CbRule {
            src,
            dst,
            sport,
            dport,
            proto: (pv & pm, pm),
        });
    }
    Ok(out)
}

/// Parse a trace file (5 or more integer fields per line; extra fields ignored).
pub fn parse_trace(text: &str) -> Result<Vec<CbHeader>, ParseError> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line_no = n + 1;
        if raw.len() > MAX_LINE_LEN {
            return Err(ParseError::LineTooLong(line_no));
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut it = line.split_whitespace().map(parse_num);
        let mut field = |max: u64, what: &str| -> Result<u64, ParseError> {
            match it.next().flatten() {
                Some(v) if v <= max => Ok(v),
                _ => Err(syntax(line_no, format!("bad {what}"))),
            }
        };
        let src = field(u64::from(u32::MAX), "source address")? as u32;
        let dst = field(u64::from(u32::MAX), "destination address")? as u32;
        let sport = field(65535, "source port")? as u16;
        let dport = field(65535, "destination port")? as u16;
        let proto = field(255, "protocol")? as u8;
        out.push(CbHeader {
            src,
            dst,
            sport,
            dport,
            proto,
        });
    }
    Ok(out)
}

impl CbRule {
    /// Whether `h` matches the rule.
    pub fn matches(&self, h: &CbHeader) -> bool {
        let pfx = |(net, len): (u32, u8), a: u32| {
            len == 0 || (a >> (32 - u32::from(len))) == (net >> (32 - u32::from(len)))
        };
        pfx(self.src, h.src)
            && pfx(self.dst, h.dst)
            && self.sport.0 <= h.sport
            && h.sport <= self.sport.1
            && self.dport.0 <= h.dport
            && h.dport <= self.dport.1
            && (h.proto & self.proto.1) == self.proto.0
    }

    fn intervals(&self) -> RuleIntervals {
        let pfx = |(net, len): (u32, u8)| {
            let span = if len == 0 {
                u64::from(u32::MAX)
            } else {
                (1u64 << (32 - len)) - 1
            };
            vec![(u128::from(net), u128::from(net) + u128::from(span))]
        };
        let proto = if self.proto.1 == 0xff {
            vec![(u128::from(self.proto.0), u128::from(self.proto.0))]
        } else if self.proto.1 == 0 {
            vec![(0, 255)]
        } else {
            (0u16..=255)
                .filter(|p| (*p as u8 & self.proto.1) == self.proto.0)
                .map(|p| (u128::from(p), u128::from(p)))
                .collect()
        };
        vec![
            pfx(self.src),
            pfx(self.dst),
            vec![(u128::from(self.sport.0), u128::from(self.sport.1))],
            vec![(u128::from(self.dport.0), u128::from(self.dport.1))],
            proto,
        ]
    }
}

/// Linear first-match: the obviously correct answer.
pub fn reference_match(rules: &[CbRule], h: &CbHeader) -> Option<u32> {
    rules.iter().position(|r| r.matches(h)).map(|i| i as u32)
}

/// The fast classifier over a ClassBench rule set: a [`Forest`] of HyperSplit-style decision
/// trees (batched lock-step walks) when the rule set fits its budgets, else the bit-vector
/// [`Classifier`].
#[derive(Clone, Debug)]
pub struct CbClassifier {
    inner: CbInner,
}

#[derive(Clone, Debug)]
enum CbInner {
    Tree(Tree),
    Forest(Forest),
    Bits(Classifier),
}

/// Leaf entries (and nodes) a single tree may use, per rule and in all, before the grouped
/// forest is tried.
// Why: a single tree is the fastest lookup while it stays small (ClassBench acl sets copy each
// rule a few times; fw1_1k's tree is ~8 MiB); wildcard-heavy 10k sets (ipc1_10k: 175 MiB)
// explode, and the cap also bounds the time spent finding that out.
const SINGLE_TREE_BUDGET_PER_RULE: usize = 1024;
const SINGLE_TREE_MAX_ENTRIES: usize = 1 << 19;

fn key(h: &CbHeader) -> [u32; 5] {
    [
        h.src,
        h.dst,
        u32::from(h.sport),
        u32::from(h.dport),
        u32::from(h.proto),
    ]
}

impl CbClassifier {
    /// Build from rules in priority order.
    pub fn build(rules: &[CbRule]) -> Result<Self, BuildError> {
        let intervals: Vec<RuleIntervals> = rules.iter().map(CbRule::intervals).collect();
        let boxes = tree_boxes(&intervals);
        let per_rule =
            SINGLE_TREE_BUDGET_PER_RULE.min(SINGLE_TREE_MAX_ENTRIES / boxes.len().max(1));
        if let Some(t) = Tree::build_with_budget(&boxes, per_rule) {
            return Ok(Self {
                inner: CbInner::Tree(t),
            });
        }
        if let Some(f) = Forest::build(&boxes) {
            return Ok(Self {
                inner: CbInner::Forest(f),
            });
        }
        Self::build_bit_vector(rules)
    }

    /// Build the bit-vector classifier only (the fallback when the tree is over budget).
    pub fn build_bit_vector(rules: &[CbRule]) -> Result<Self, BuildError> {
        let kinds = [
            FieldKind::V4,
            FieldKind::V4,
            FieldKind::Direct { size: 65536 },
            FieldKind::Direct { size: 65536 },
            FieldKind::Direct { size: 256 },
        ];
        let intervals: Vec<RuleIntervals> = rules.iter().map(CbRule::intervals).collect();
        Ok(Self {
            inner: CbInner::Bits(Classifier::build(&kinds, &intervals)?),
        })
    }

    /// Which structure serves lookups: `"tree"`, `"forest"` or `"bit-vector"`.
    pub fn kind(&self) -> &'static str {
        match self.inner {
            CbInner::Tree(_) => "tree",
            CbInner::Forest(_) => "forest",
            CbInner::Bits(_) => "bit-vector",
        }
    }

    /// First matching rule index.
    #[inline]
    pub fn classify(&self, h: &CbHeader) -> Option<u32> {
        match &self.inner {
            CbInner::Tree(t) => t.classify(key(h)),
            CbInner::Forest(f) => f.classify(key(h)),
            CbInner::Bits(c) => c.first_match(&key(h).map(u128::from)),
        }
    }

    /// Classify a batch; `out[i]` is the first match of `headers[i]`.
    pub fn classify_batch(&self, headers: &[CbHeader], out: &mut [Option<u32>]) {
        const CHUNK: usize = 64;
        match &self.inner {
            CbInner::Tree(t) => t.classify_with(headers.len(), |i| key(&headers[i]), out),
            CbInner::Forest(_) => {
                let mut keys = [[0u32; 5]; CHUNK];
                for (hs, os) in headers.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
                    for (k, h) in keys.iter_mut().zip(hs) {
                        *k = key(h);
                    }
                    if let CbInner::Forest(f) = &self.inner {
                        f.classify_batch(&keys[..hs.len()], os);
                    }
                }
            }
            CbInner::Bits(c) => {
                let mut keys = [0u128; CHUNK * 5];
                for (hs, os) in headers.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
                    for (i, h) in hs.iter().enumerate() {
                        for (f, v) in key(h).into_iter().enumerate() {
                            keys[i * 5 + f] = u128::from(v);
                        }
                    }
                    c.first_match_batch(&keys[..hs.len() * 5], os);
                }
            }
        }
    }

    /// Walk statistics of a single tree over `headers` (mean depth, max depth, mean leaf
    /// entries scanned); `None` for the other structures.
    pub fn walk_stats(&self, headers: &[CbHeader]) -> Option<(f64, u32, f64)> {
        match &self.inner {
            CbInner::Tree(t) => Some(t.walk_stats(&headers.iter().map(key).collect::<Vec<_>>())),
            _ => None,
        }
    }

    /// A description of the structure (trees, sizes) for diagnostics.
    pub fn describe(&self) -> String {
        match &self.inner {
            CbInner::Tree(t) => format!(
                "tree: {} nodes, depth {}, {} bytes",
                t.node_count(),
                t.depth(),
                t.memory_bytes()
            ),
            CbInner::Forest(f) => f.describe(),
            CbInner::Bits(c) => format!("bit-vector: {} bytes", c.memory_bytes()),
        }
    }

    /// Approximate bytes of lookup structures.
    pub fn memory_bytes(&self) -> usize {
        match &self.inner {
            CbInner::Tree(t) => t.memory_bytes(),
            CbInner::Forest(f) => f.memory_bytes(),
            CbInner::Bits(c) => c.memory_bytes(),
        }
    }
}

/// Every rule as boxes for the tree: the cross product of its per-field interval lists (one
/// box for ClassBench rules, several for a protocol mask that is not a prefix).
fn tree_boxes(intervals: &[RuleIntervals]) -> Vec<(Boxes, u32)> {
    let mut out = Vec::with_capacity(intervals.len());
    for (id, r) in intervals.iter().enumerate() {
        let mut partial: Vec<Vec<(u32, u32)>> = vec![Vec::new()];
        for field in r {
            let mut next = Vec::with_capacity(partial.len() * field.len());
            for p in &partial {
                for &(lo, hi) in field {
                    let mut q = p.clone();
                    q.push((lo as u32, hi.min(u128::from(u32::MAX)) as u32));
                    next.push(q);
                }
            }
            partial = next;
        }
        for p in partial {
            if let Ok(b) = <Boxes>::try_from(p.as_slice()) {
                out.push((b, id as u32));
            }
        }
    }
    out
}

/// A small seeded PRNG (SplitMix64): reproducible traces without a dependency.
#[derive(Clone, Debug)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        lo + self.next_u64() % (span + 1)
    }
}

/// Generate `n` headers: 95% drawn from a random rule's space (each field at a corner of the
/// rule's range half the time, uniformly inside it otherwise, as ClassBench's trace_generator
/// favours corners), 5% uniformly random. Each header also returns the generating rule
/// (`None` for random ones); like ClassBench's, it is not necessarily the first match.
pub fn generate_trace(rules: &[CbRule], n: usize, seed: u64) -> Vec<(CbHeader, Option<u32>)> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        if rules.is_empty() || rng.range(0, 99) < 5 {
            let r = rng.next_u64();
            let protos = [6u8, 17, 1, (r >> 56) as u8];
            out.push((
                CbHeader {
                    src: r as u32,
                    dst: (r >> 32) as u32,
                    sport: rng.next_u64() as u16,
                    dport: rng.next_u64() as u16,
                    proto: protos[(rng.next_u64() % 4) as usize],
                },
                None,
            ));
            continue;
        }
        let i = rng.range(0, rules.len() as u64 - 1) as usize;
        let rule = &rules[i];
        let mut pick = |lo: u64, hi: u64| match rng.range(0, 3) {
            0 => lo,
            1 => hi,
            _ => rng.range(lo, hi),
        };
        let pfx = |(net, len): (u32, u8)| {
            let span = if len == 0 {
                u64::from(u32::MAX)
            } else {
                (1u64 << (32 - len)) - 1
            };
            (u64::from(net), u64::from(net) + span)
        };
        let (s_lo, s_hi) = pfx(rule.src);
        let (d_lo, d_hi) = pfx(rule.dst);
        let src = pick(s_lo, s_hi) as u32;
        let dst = pick(d_lo, d_hi) as u32;
        let sport = pick(u64::from(rule.sport.0), u64::from(rule.sport.1)) as u16;
        let dport = pick(u64::from(rule.dport.0), u64::from(rule.dport.1)) as u16;
        let proto = if rule.proto.1 == 0 {
            [6u8, 17, 1, 47][(rng.next_u64() % 4) as usize]
        } else {
            let free = !rule.proto.1;
            rule.proto.0 | (rng.next_u64() as u8 & free)
        };
        out.push((
            CbHeader {
                src,
                dst,
                sport,
                dport,
                proto,
            },
            Some(i as u32),
        ));
    }
    out
}

/// Render a trace in ClassBench format (`src dst sport dport proto flags filter`, tab
/// separated; filter is the 1-based generating rule or 0 for random headers, as ClassBench
/// writes it).
pub fn format_trace(trace: &[(CbHeader, Option<u32>)]) -> String {
    let mut s = String::with_capacity(trace.len() * 48);
    for (h, rule) in trace {
        use std::fmt::Write;
        let _ = writeln!(
            s,
            "{}\t{}\t{}\t{}\t{}\t0\t{}",
            h.src,
            h.dst,
            h.sport,
            h.dport,
            h.proto,
            rule.map_or(0, |r| r + 1)
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: &str =
        "@186.11.101.36/32\t20.69.109.43/32\t0 : 65535\t1521 : 1521\t0x06/0xFF\t0x1000/0x1000\t\n\
@0.0.0.0/0\t20.69.109.0/24\t1024 : 65535\t0 : 1023\t0x11/0xFF\r\n\
@10.0.0.0/8\t0.0.0.0/0\t0 : 65535\t0 : 65535\t0x00/0x00\t\n";

    #[test]
    fn parses_rules_with_tabs_crlf_and_flags() {
        let rules = parse_rules(RULES).unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].sport, (0, 65535));
        assert_eq!(rules[0].dport, (1521, 1521));
        assert_eq!(rules[0].proto, (6, 0xff));
        assert_eq!(rules[1].dst.1, 24);
        assert_eq!(rules[2].proto, (0, 0));
    }

    #[test]
    fn rejects_malformed_lines() {
        assert!(parse_rules("186.11.101.36/32 1.2.3.4/32 0 : 1 0 : 1 0x06/0xFF").is_err());
        assert!(parse_rules("@1.2.3.4/33\t1.2.3.4/32\t0 : 1\t0 : 1\t0x06/0xFF").is_err());
        assert!(parse_rules("@1.2.3.4/32\t1.2.3.4/32\t5 : 1\t0 : 1\t0x06/0xFF").is_err());
        assert!(parse_trace("1 2 3").is_err());
        assert!(parse_trace("1 2 3 70000 6").is_err());
    }

    #[test]
    fn parses_trace_lines() {
        let t = parse_trace("3266998700\t1458994818\t0\t1521\t6\t268439552\t214\n").unwrap();
        assert_eq!(t[0].src, 3_266_998_700);
        assert_eq!(t[0].dport, 1521);
        assert_eq!(t[0].proto, 6);
    }

    #[test]
    fn fast_equals_reference_on_generated_trace() {
        let rules = parse_rules(RULES).unwrap();
        let c = CbClassifier::build(&rules).unwrap();
        let trace: Vec<CbHeader> = generate_trace(&rules, 5000, 7)
            .into_iter()
            .map(|t| t.0)
            .collect();
        let mut batch = vec![None; trace.len()];
        c.classify_batch(&trace, &mut batch);
        for (h, b) in trace.iter().zip(&batch) {
            assert_eq!(c.classify(h), reference_match(&rules, h), "{h:?}");
            assert_eq!(*b, reference_match(&rules, h), "{h:?}");
        }
    }

    #[test]
    fn generator_is_seeded() {
        let rules = parse_rules(RULES).unwrap();
        assert_eq!(
            generate_trace(&rules, 100, 1),
            generate_trace(&rules, 100, 1)
        );
        assert_ne!(
            generate_trace(&rules, 100, 1),
            generate_trace(&rules, 100, 2)
        );
        let text = format_trace(&generate_trace(&rules, 10, 1));
        assert_eq!(parse_trace(&text).unwrap().len(), 10);
    }
}
