//! `rampart plan`: what would change between the live table and the compiled one.
//!
//! Both sides are *kernel* listings (the compiled transaction is loaded into a scratch network
//! namespace by the apply shell and listed back), so nft's own canonical form (merged
//! intervals, printed types, reordered statements) never shows up as a spurious change.
//! Structure comes from the terse text listing (`nft -t list table`, no set elements, cheap even
//! with million-element sets) with counter values blanked; elements come from one
//! `nft -j list set` per named static set.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;
use thiserror::Error;

/// Why a listing cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The JSON listing of a set is not what `nft -j list set` prints.
    #[error("unexpected nft JSON: {0}")]
    BadJson(String),
}

/// One block of a table: a chain, a set, a map or a stateful object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Block {
    /// `chain`, `set`, `map`, `limit`, ...
    pub kind: String,
    /// Declaration lines (`type …`, `flags …`, `policy …`), counter values blanked.
    pub decl: Vec<String>,
    /// Rules, in order (chains only), counter values blanked.
    pub rules: Vec<String>,
    /// Elements (static sets whose elements were listed), canonical text.
    pub elements: Option<BTreeSet<String>>,
}

/// A parsed table listing, blocks by `kind name`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Listing {
    /// Blocks keyed by `"<kind> <name>"`.
    pub blocks: BTreeMap<String, Block>,
}

impl Listing {
    /// Parse `nft -t list table inet NAME` output (terse: elements absent).
    pub fn parse_terse(text: &str) -> Listing {
        let mut blocks = BTreeMap::new();
        let mut current: Option<(String, Block)> = None;
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if current.is_none() {
                // `<kind> <name> {` at depth 1 (the table line itself is `table inet x {`).
                if let Some(head) = line.strip_suffix('{') {
                    let mut words = head.split_whitespace();
                    if let (Some(kind), Some(name)) = (words.next(), words.next()) {
                        if kind != "table" {
                            current = Some((
                                format!("{kind} {name}"),
                                Block {
                                    kind: kind.to_string(),
                                    ..Block::default()
                                },
                            ));
                        }
                    }
                }
                continue;
            }
            if line == "}" {
                if let Some((key, block)) = current.take() {
                    blocks.insert(key, block);
                }
                continue;
            }
            if let Some((_, block)) = current.as_mut() {
                let line = blank_counters(line);
                // A set's comment and auto-merge flag are not compared: nft 1.0.6's JSON input
                // (used for big transactions) cannot set them, and neither changes a verdict.
                if block.kind == "set" && (line == "auto-merge" || line.starts_with("comment \"")) {
                    continue;
                }
                let is_decl = block.kind != "chain"
                    || line.starts_with("type ")
                    || line.starts_with("policy ")
                    || line.starts_with("comment ");
                if is_decl {
                    block.decl.push(line);
                } else {
                    block.rules.push(line);
                }
            }
        }
        Listing { blocks }
    }

    /// Names of the static sets (not dynamic, no timeout) whose elements a plan should compare.
    pub fn static_sets(&self) -> Vec<String> {
        self.blocks
            .iter()
            .filter(|(_, b)| b.kind == "set")
            .filter(|(_, b)| {
                !b.decl.iter().any(|d| {
                    d.starts_with("flags") && (d.contains("dynamic") || d.contains("timeout"))
                })
            })
            .filter_map(|(k, _)| k.strip_prefix("set ").map(str::to_string))
            .collect()
    }

    /// Attach the elements of set `name` from `nft -j list set inet T name` output.
    pub fn attach_elements(&mut self, name: &str, json: &str) -> Result<(), PlanError> {
        let elements = parse_set_elements(json)?;
        if let Some(b) = self.blocks.get_mut(&format!("set {name}")) {
            b.elements = Some(elements);
        }
        Ok(())
    }
}

fn blank_counters(line: &str) -> String {
    // `counter packets 12 bytes 3400` → `counter`; also inside `update @m { … counter … }`.
    let mut out = Vec::new();
    let words: Vec<&str> = line.split(' ').collect();
    let mut i = 0;
    while i < words.len() {
        if words[i] == "counter"
            && words.get(i + 1) == Some(&"packets")
            && words.get(i + 3) == Some(&"bytes")
        {
            out.push("counter");
            i += 5;
            continue;
        }
        out.push(words[i]);
        i += 1;
    }
    out.join(" ")
}

/// Canonical text of every element in an `nft -j list set` answer.
pub fn parse_set_elements(json: &str) -> Result<BTreeSet<String>, PlanError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| PlanError::BadJson(e.to_string()))?;
    let items = v
        .get("nftables")
        .and_then(|n| n.as_array())
        .ok_or_else(|| PlanError::BadJson("no `nftables` array".into()))?;
    let mut out = BTreeSet::new();
    for item in items {
        let Some(set) = item.get("set") else { continue };
        if let Some(elems) = set.get("elem").and_then(|e| e.as_array()) {
            for e in elems {
                out.insert(element_text(e)?);
            }
        }
    }
    Ok(out)
}

fn element_text(e: &serde_json::Value) -> Result<String, PlanError> {
    use serde_json::Value;
    match e {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Object(m) => {
            if let Some(p) = m.get("prefix") {
                let addr = p.get("addr").and_then(Value::as_str).unwrap_or_default();
                let len = p.get("len").and_then(Value::as_u64).unwrap_or_default();
                return Ok(format!("{addr}/{len}"));
            }
            if let Some(r) = m.get("range").and_then(Value::as_array) {
                let parts: Result<Vec<String>, PlanError> = r.iter().map(element_text).collect();
                return Ok(parts?.join("-"));
            }
            if let Some(inner) = m.get("elem").and_then(|x| x.get("val")) {
                return element_text(inner);
            }
            Ok(e.to_string())
        }
        other => Ok(other.to_string()),
    }
}

/// One difference.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// The whole table is missing live and would be created.
    CreateTable,
    /// A block only in the compiled table.
    AddBlock {
        /// `kind name`.
        block: String,
    },
    /// A block only live.
    RemoveBlock {
        /// `kind name`.
        block: String,
    },
    /// A block whose declaration differs.
    ChangeDecl {
        /// `kind name`.
        block: String,
        /// Live declaration.
        from: Vec<String>,
        /// Compiled declaration.
        to: Vec<String>,
    },
    /// A rule added to a chain.
    AddRule {
        /// Chain.
        chain: String,
        /// The rule text.
        rule: String,
    },
    /// A rule removed from a chain.
    RemoveRule {
        /// Chain.
        chain: String,
        /// The rule text.
        rule: String,
    },
    /// Set elements added.
    AddElements {
        /// Set name.
        set: String,
        /// How many.
        count: usize,
        /// The first few, for display.
        sample: Vec<String>,
    },
    /// Set elements removed.
    RemoveElements {
        /// Set name.
        set: String,
        /// How many.
        count: usize,
        /// The first few, for display.
        sample: Vec<String>,
    },
}

/// Why: a plan over a million-element set must stay readable.
const ELEMENT_SAMPLE: usize = 5;

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateTable => write!(f, "+ table (absent live)"),
            Change::AddBlock { block } => write!(f, "+ {block}"),
            Change::RemoveBlock { block } => write!(f, "- {block}"),
            Change::ChangeDecl { block, from, to } => {
                write!(f, "~ {block}: {} -> {}", from.join("; "), to.join("; "))
            }
            Change::AddRule { chain, rule } => write!(f, "+ chain {chain}: {rule}"),
            Change::RemoveRule { chain, rule } => write!(f, "- chain {chain}: {rule}"),
            Change::AddElements { set, count, sample } => {
                write!(f, "+ set {set}: {count} element(s) {}", sample.join(", "))?;
                if *count > sample.len() {
                    write!(f, ", …")?;
                }
                Ok(())
            }
            Change::RemoveElements { set, count, sample } => {
                write!(f, "- set {set}: {count} element(s) {}", sample.join(", "))?;
                if *count > sample.len() {
                    write!(f, ", …")?;
                }
                Ok(())
            }
        }
    }
}

/// The changes turning `live` (None: table absent) into `wanted`.
pub fn diff(live: Option<&Listing>, wanted: &Listing) -> Vec<Change> {
    let mut out = Vec::new();
    let empty = Listing::default();
    let live = match live {
        Some(l) => l,
        None => {
            out.push(Change::CreateTable);
            &empty
        }
    };
    for key in live.blocks.keys() {
        if !wanted.blocks.contains_key(key) {
            out.push(Change::RemoveBlock { block: key.clone() });
        }
    }
    let nothing = Block::default();
    for (key, wb) in &wanted.blocks {
        let lb = match live.blocks.get(key) {
            Some(lb) => lb,
            None => {
                out.push(Change::AddBlock { block: key.clone() });
                &nothing
            }
        };
        if live.blocks.contains_key(key) && lb.decl != wb.decl {
            out.push(Change::ChangeDecl {
                block: key.clone(),
                from: lb.decl.clone(),
                to: wb.decl.clone(),
            });
        }
        let name = key.split_once(' ').map(|(_, n)| n).unwrap_or(key);
        for (removed, rule) in seq_diff(&lb.rules, &wb.rules) {
            out.push(if removed {
                Change::RemoveRule {
                    chain: name.to_string(),
                    rule,
                }
            } else {
                Change::AddRule {
                    chain: name.to_string(),
                    rule,
                }
            });
        }
        // Interval sets compare as merged ranges (the kernel lists them auto-merged); hash sets
        // hold single elements, compared (and counted) one by one.
        let interval = wb
            .decl
            .iter()
            .any(|d| d.starts_with("flags") && d.contains("interval"));
        let canon = |e: &BTreeSet<String>| {
            if interval {
                canonical_ranges(e)
            } else {
                e.clone()
            }
        };
        let le = canon(&lb.elements.clone().unwrap_or_default());
        if let Some(we) = &wb.elements.as_ref().map(canon) {
            let added: Vec<String> = we.difference(&le).cloned().collect();
            let removed: Vec<String> = le.difference(we).cloned().collect();
            if !added.is_empty() {
                out.push(Change::AddElements {
                    set: name.to_string(),
                    count: added.len(),
                    sample: added.into_iter().take(ELEMENT_SAMPLE).collect(),
                });
            }
            if !removed.is_empty() {
                out.push(Change::RemoveElements {
                    set: name.to_string(),
                    count: removed.len(),
                    sample: removed.into_iter().take(ELEMENT_SAMPLE).collect(),
                });
            }
        }
    }
    out
}

/// Elements as merged address ranges, so that the kernel's auto-merged listing
/// (`192.0.2.0-192.0.2.191`) and the emitter's prefixes (`192.0.2.0/25, 192.0.2.128/26`) compare
/// equal. Text that is not an address, prefix or range is kept as is.
pub fn canonical_ranges(elements: &BTreeSet<String>) -> BTreeSet<String> {
    use std::net::IpAddr;
    let parse_addr = |s: &str| -> Option<(bool, u128)> {
        match s.trim().parse::<IpAddr>().ok()? {
            IpAddr::V4(a) => Some((false, u128::from(u32::from(a)))),
            IpAddr::V6(a) => Some((true, u128::from(a))),
        }
    };
    let mut ranges: Vec<(bool, u128, u128)> = Vec::new();
    let mut other = BTreeSet::new();
    for e in elements {
        let parsed = if let Some((a, len)) = e.split_once('/') {
            parse_addr(a).and_then(|(v6, lo)| {
                let bits = if v6 { 128u32 } else { 32 };
                let len: u32 = len.parse().ok().filter(|l| *l <= bits)?;
                let host = match bits - len {
                    0 => 0,
                    128 => u128::MAX,
                    n => (1u128 << n) - 1,
                };
                Some((v6, lo & !host, lo | host))
            })
        } else if let Some((a, b)) = e.split_once('-') {
            match (parse_addr(a), parse_addr(b)) {
                (Some((v6a, lo)), Some((v6b, hi))) if v6a == v6b && lo <= hi => Some((v6a, lo, hi)),
                _ => None,
            }
        } else {
            parse_addr(e).map(|(v6, a)| (v6, a, a))
        };
        match parsed {
            Some(r) => ranges.push(r),
            None => {
                other.insert(e.clone());
            }
        }
    }
    ranges.sort();
    let mut merged: Vec<(bool, u128, u128)> = Vec::new();
    for r in ranges {
        if let Some(last) = merged.last_mut() {
            if last.0 == r.0 && r.1 <= last.2.saturating_add(1) {
                last.2 = last.2.max(r.2);
                continue;
            }
        }
        merged.push(r);
    }
    let text = |v6: bool, x: u128| -> String {
        if v6 {
            std::net::Ipv6Addr::from(x).to_string()
        } else {
            std::net::Ipv4Addr::from(x as u32).to_string()
        }
    };
    for (v6, lo, hi) in merged {
        let bits = if v6 { 128u32 } else { 32 };
        let size = hi - lo;
        let cidr = size == u128::MAX || ((size + 1).is_power_of_two() && lo & size == 0);
        let s = if lo == hi {
            text(v6, lo)
        } else if cidr {
            let host_bits = if size == u128::MAX {
                128
            } else {
                (size + 1).trailing_zeros()
            };
            format!("{}/{}", text(v6, lo), bits - host_bits)
        } else {
            format!("{}-{}", text(v6, lo), text(v6, hi))
        };
        other.insert(s);
    }
    other
}

/// Why: LCS is quadratic; chains longer than this are diffed as multisets instead.
const LCS_MAX: usize = 2000;

/// Ordered diff of two rule lists: `(true, r)` removed, `(false, r)` added.
fn seq_diff(a: &[String], b: &[String]) -> Vec<(bool, String)> {
    if a == b {
        return Vec::new();
    }
    if a.len() > LCS_MAX || b.len() > LCS_MAX {
        let sa: BTreeSet<&String> = a.iter().collect();
        let sb: BTreeSet<&String> = b.iter().collect();
        let mut out: Vec<(bool, String)> =
            sa.difference(&sb).map(|r| (true, (*r).clone())).collect();
        out.extend(sb.difference(&sa).map(|r| (false, (*r).clone())));
        return out;
    }
    let (n, m) = (a.len(), b.len());
    let mut dp = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            dp[i][j] = if a[i] == b[j] {
                dp[i + 1][j + 1] + 1
            } else {
                dp[i + 1][j].max(dp[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < n && j < m {
        if a[i] == b[j] {
            i += 1;
            j += 1;
        } else if dp[i + 1][j] >= dp[i][j + 1] {
            out.push((true, a[i].clone()));
            i += 1;
        } else {
            out.push((false, b[j].clone()));
            j += 1;
        }
    }
    out.extend(a[i..].iter().map(|r| (true, r.clone())));
    out.extend(b[j..].iter().map(|r| (false, r.clone())));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIVE: &str = "table inet rampart {\n\tset zone_a_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tct state invalid counter packets 3 bytes 120 drop\n\t\ttcp dport 22 counter packets 1 bytes 60 accept\n\t}\n}\n";
    const WANT: &str = "table inet rampart {\n\tset zone_a_v4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tct state invalid counter packets 0 bytes 0 drop\n\t\ttcp dport 2222 counter packets 0 bytes 0 accept\n\t}\n}\n";

    #[test]
    fn rule_changes_ignore_counter_values() {
        let live = Listing::parse_terse(LIVE);
        let want = Listing::parse_terse(WANT);
        let d = diff(Some(&live), &want);
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!(
            d[0].to_string(),
            "- chain input: tcp dport 22 counter accept"
        );
        assert_eq!(
            d[1].to_string(),
            "+ chain input: tcp dport 2222 counter accept"
        );
        assert!(diff(Some(&live), &live).is_empty());
    }

    #[test]
    fn ranges_merge_like_the_kernel() {
        let set = |v: &[&str]| {
            v.iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<String>>()
        };
        let a = canonical_ranges(&set(&[
            "192.0.2.0/25",
            "192.0.2.128/26",
            "198.51.100.1",
            "198.51.100.2",
        ]));
        let b = canonical_ranges(&set(&[
            "192.0.2.0-192.0.2.191",
            "198.51.100.1-198.51.100.2",
        ]));
        assert_eq!(a, b);
        assert!(a.contains("192.0.2.0-192.0.2.191"), "{a:?}");
        let c = canonical_ranges(&set(&["2001:db8::/33", "2001:db8:8000::/33", "::/0"]));
        assert_eq!(c, set(&["::/0"]));
        let d = canonical_ranges(&set(&["192.0.2.0/24"]));
        assert_eq!(d, set(&["192.0.2.0/24"]));
    }

    #[test]
    fn absent_table_creates_everything() {
        let want = Listing::parse_terse(WANT);
        let d = diff(None, &want);
        assert_eq!(d[0], Change::CreateTable);
        assert!(d.contains(&Change::AddBlock {
            block: "chain input".into()
        }));
    }

    #[test]
    fn elements_diff_from_json() {
        let mut live = Listing::parse_terse(LIVE);
        let mut want = Listing::parse_terse(WANT);
        assert_eq!(live.static_sets(), vec!["zone_a_v4".to_string()]);
        live.attach_elements(
            "zone_a_v4",
            r#"{"nftables":[{"metainfo":{}},{"set":{"name":"zone_a_v4","elem":["192.0.2.1",{"prefix":{"addr":"198.51.100.0","len":24}}]}}]}"#,
        )
        .unwrap();
        want.attach_elements(
            "zone_a_v4",
            r#"{"nftables":[{"set":{"name":"zone_a_v4","elem":[{"prefix":{"addr":"198.51.100.0","len":24}},{"range":["203.0.113.1","203.0.113.9"]}]}}]}"#,
        )
        .unwrap();
        let d = diff(Some(&live), &want);
        let text: Vec<String> = d.iter().map(ToString::to_string).collect();
        assert!(
            text.contains(&"+ set zone_a_v4: 1 element(s) 203.0.113.1-203.0.113.9".to_string()),
            "{text:?}"
        );
        assert!(
            text.contains(&"- set zone_a_v4: 1 element(s) 192.0.2.1".to_string()),
            "{text:?}"
        );
        assert!(parse_set_elements("{").is_err());
    }
}
