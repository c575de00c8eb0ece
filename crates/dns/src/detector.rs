//! Tunnelling / exfiltration detector (pure; time is an argument).
//!
//! State is kept per (client, registered domain) — eTLD+1 from the Public Suffix List. Each
//! query whose subdomain part was not seen recently adds its *information estimate* (characters
//! × observed Shannon entropy per character, weighted up for TXT/NULL/MX/CNAME/SRV/ANY/private
//! types) to a leaky bucket that drains at `drain_bits_per_s` (the "information budget" of
//! Paxson et al. 2013 / ibHH). A state is flagged when the bucket exceeds `budget_bits` with at
//! least `min_unique` distinct subdomains, or when `null_unique_flag` distinct NULL-type names
//! were asked (NULL is practically never legitimate). Memory is bounded: at most `max_states`
//! states, each with a fixed-size ring of recent subdomain hashes.

use std::collections::HashMap;
use std::net::IpAddr;

use crate::config::DetectorConfig;
use crate::domainset::fnv1a;
use crate::psl::PublicSuffixList;
use crate::wire::rtype;

/// Recent subdomain hashes remembered per state (repeats add no information).
pub const RECENT_RING: usize = 16;
/// Most temporary blocks held at once.
pub const MAX_TEMP_BLOCKS: usize = 4096;

/// Per-query features (exposed for tests and the evaluation report).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Features {
    /// Bytes of the subdomain part (without the registered domain).
    pub sub_len: usize,
    /// Longest label of the subdomain part.
    pub max_label: usize,
    /// Shannon entropy per character of the subdomain characters (dots excluded).
    pub entropy: f64,
    /// Estimated information in bits.
    pub bits: f64,
}

/// Shannon entropy in bits per byte of `s`.
pub fn shannon_entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

/// Features of a subdomain part.
pub fn features(sub: &str) -> Features {
    let chars: Vec<u8> = sub.bytes().filter(|&b| b != b'.').collect();
    let entropy = shannon_entropy(&chars);
    Features {
        sub_len: sub.len(),
        max_label: sub.split('.').map(str::len).max().unwrap_or(0),
        entropy,
        bits: chars.len() as f64 * entropy,
    }
}

fn odd_type(qtype: u16) -> bool {
    matches!(
        qtype,
        rtype::TXT | rtype::NULL | rtype::MX | rtype::CNAME | rtype::SRV | rtype::ANY
    ) || qtype >= 65280
}

#[derive(Clone, Debug)]
struct State {
    domain: Box<str>,
    level_bits: f64,
    last_ms: u64,
    recent: [u32; RECENT_RING],
    recent_len: usize,
    recent_pos: usize,
    unique: u32,
    queries: u32,
    null_unique: u32,
    odd_queries: u32,
    flagged: bool,
}

/// A detection.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// The client.
    pub client: IpAddr,
    /// Registered domain.
    pub domain: String,
    /// Queries seen in this state before (and including) the flagging one.
    pub queries: u32,
    /// Distinct subdomains seen.
    pub unique: u32,
    /// Bucket level in bits.
    pub level_bits: f64,
    /// Share of queries with tunnel-typical record types.
    pub odd_type_share: f64,
    /// Which rule fired: `budget` or `null_type`.
    pub rule: &'static str,
}

/// The detector.
#[derive(Debug)]
pub struct Detector {
    cfg: DetectorConfig,
    psl: PublicSuffixList,
    states: HashMap<(IpAddr, u64), State>,
    temp_blocks: HashMap<String, u64>,
    exempt: Vec<String>,
    evictions: u64,
}

impl Detector {
    /// A detector with the given settings and suffix list.
    pub fn new(cfg: DetectorConfig, psl: PublicSuffixList) -> Self {
        let mut exempt: Vec<String> = cfg.exempt.iter().map(|s| s.to_ascii_lowercase()).collect();
        exempt.extend(["in-addr.arpa".to_string(), "ip6.arpa".to_string()]);
        Self {
            cfg,
            psl,
            states: HashMap::new(),
            temp_blocks: HashMap::new(),
            exempt,
            evictions: 0,
        }
    }

    /// Number of live states.
    pub fn state_count(&self) -> usize {
        self.states.len()
    }

    /// States evicted so far because of the cap.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Registered domain under temporary block covering `qname`, if any (expired blocks are
    /// ignored and pruned lazily).
    pub fn temp_blocked(&self, now_ms: u64, qname: &str) -> Option<String> {
        if self.temp_blocks.is_empty() {
            return None;
        }
        let reg = self.psl.registered_domain(qname)?;
        match self.temp_blocks.get(reg) {
            Some(&until) if until > now_ms => Some(reg.to_string()),
            _ => None,
        }
    }

    fn exempt(&self, reg: &str) -> bool {
        // No allocation per query: `reg` equals `e` or ends with `.e`.
        self.exempt.iter().any(|e| {
            reg == e
                || (reg.len() > e.len()
                    && reg.ends_with(e.as_str())
                    && reg.as_bytes()[reg.len() - e.len() - 1] == b'.')
        })
    }

    fn evict(&mut self, now_ms: u64) {
        // Drop idle states first (empty buckets carry no evidence), else the least recently seen
        // half. O(n) but amortised over max_states/2 insertions.
        let drain = self.cfg.drain_bits_per_s;
        let before = self.states.len();
        self.states.retain(|_, s| {
            let idle_s = now_ms.saturating_sub(s.last_ms) as f64 / 1000.0;
            s.flagged || s.level_bits - idle_s * drain > 0.0
        });
        if self.states.len() >= self.cfg.max_states {
            let mut ages: Vec<u64> = self.states.values().map(|s| s.last_ms).collect();
            let mid = ages.len() / 2;
            ages.select_nth_unstable(mid);
            let cutoff = ages[mid];
            self.states.retain(|_, s| s.last_ms > cutoff);
        }
        self.evictions += (before - self.states.len()) as u64;
    }

    /// Observes one query. Returns a detection the first time a state crosses its threshold.
    pub fn observe(
        &mut self,
        now_ms: u64,
        client: IpAddr,
        qname: &str,
        qtype: u16,
    ) -> Option<Detection> {
        if !self.cfg.enabled {
            return None;
        }
        let reg = self.psl.registered_domain(qname)?;
        if reg.len() >= qname.len() || self.exempt(reg) {
            return None;
        }
        let sub = &qname[..qname.len() - reg.len() - 1];
        let key = (client, fnv1a(reg.as_bytes()));
        if !self.states.contains_key(&key) && self.states.len() >= self.cfg.max_states.max(1) {
            self.evict(now_ms);
        }
        let st = self.states.entry(key).or_insert_with(|| State {
            domain: reg.into(),
            level_bits: 0.0,
            last_ms: now_ms,
            recent: [0; RECENT_RING],
            recent_len: 0,
            recent_pos: 0,
            unique: 0,
            queries: 0,
            null_unique: 0,
            odd_queries: 0,
            flagged: false,
        });
        let elapsed_s = now_ms.saturating_sub(st.last_ms) as f64 / 1000.0;
        st.level_bits = (st.level_bits - elapsed_s * self.cfg.drain_bits_per_s).max(0.0);
        st.last_ms = st.last_ms.max(now_ms);
        st.queries = st.queries.saturating_add(1);
        let odd = odd_type(qtype);
        if odd {
            st.odd_queries = st.odd_queries.saturating_add(1);
        }
        let h = fnv1a(sub.as_bytes()) as u32;
        let seen = st.recent[..st.recent_len].contains(&h);
        if !seen {
            st.recent[st.recent_pos] = h;
            st.recent_pos = (st.recent_pos + 1) % RECENT_RING;
            st.recent_len = (st.recent_len + 1).min(RECENT_RING);
            st.unique = st.unique.saturating_add(1);
            if qtype == rtype::NULL {
                st.null_unique = st.null_unique.saturating_add(1);
            }
            let f = features(sub);
            let w = if odd { self.cfg.odd_type_weight } else { 1.0 };
            st.level_bits += f.bits * w;
        }
        if st.flagged {
            return None;
        }
        let rule = if st.null_unique >= self.cfg.null_unique_flag.max(1) {
            "null_type"
        } else if st.level_bits >= self.cfg.budget_bits && st.unique >= self.cfg.min_unique {
            "budget"
        } else {
            return None;
        };
        st.flagged = true;
        let det = Detection {
            client,
            domain: st.domain.to_string(),
            queries: st.queries,
            unique: st.unique,
            level_bits: st.level_bits,
            odd_type_share: st.odd_queries as f64 / st.queries.max(1) as f64,
            rule,
        };
        if self.cfg.block_s > 0 {
            if self.temp_blocks.len() >= MAX_TEMP_BLOCKS {
                self.temp_blocks.retain(|_, &mut until| until > now_ms);
            }
            if self.temp_blocks.len() < MAX_TEMP_BLOCKS {
                self.temp_blocks.insert(
                    det.domain.clone(),
                    now_ms.saturating_add(self.cfg.block_s.saturating_mul(1000)),
                );
            }
        }
        Some(det)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det() -> Detector {
        let cfg = DetectorConfig {
            block_s: 60,
            ..DetectorConfig::default()
        };
        Detector::new(cfg, PublicSuffixList::builtin())
    }

    #[test]
    fn entropy_basics() {
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
        let f = features("www");
        assert_eq!(f.bits, 0.0);
        let r = features("mzxw6ytboi3dgnrtgq4tmobrgeydcmrt");
        assert!(r.entropy > 3.5, "{r:?}");
    }

    #[test]
    fn hex_exfil_is_flagged_and_blocked_benign_is_not() {
        let mut d = det();
        let c: IpAddr = "192.0.2.9".parse().unwrap();
        let mut hit = None;
        let mut x: u64 = 0x1234_5678_9abc_def0;
        for i in 0..50u64 {
            let mut label = String::new();
            for _ in 0..40 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                label.push(char::from(b"0123456789abcdef"[(x % 16) as usize]));
            }
            if let Some(h) = d.observe(i * 100, c, &format!("{label}.exfil.example"), rtype::A) {
                hit = Some(h);
                break;
            }
        }
        let h = hit.expect("flagged within 50 queries");
        assert_eq!(h.domain, "exfil.example");
        assert_eq!(h.rule, "budget");
        assert_eq!(
            d.temp_blocked(10_000, "zz.exfil.example").as_deref(),
            Some("exfil.example")
        );
        assert_eq!(d.temp_blocked(10_000_000, "zz.exfil.example"), None);
        for (i, sub) in [
            "www", "mail", "api", "static", "cdn", "img", "m", "login", "docs", "blog", "shop",
            "news",
        ]
        .iter()
        .enumerate()
        {
            assert!(d
                .observe(i as u64, c, &format!("{sub}.benign.com"), rtype::A)
                .is_none());
        }
    }

    #[test]
    fn null_type_and_exemptions() {
        let mut d = det();
        let c: IpAddr = "192.0.2.9".parse().unwrap();
        assert!(d.observe(0, c, "a1.t.example", rtype::NULL).is_none());
        assert!(d.observe(1, c, "a2.t.example", rtype::NULL).is_none());
        assert_eq!(
            d.observe(2, c, "a3.t.example", rtype::NULL).unwrap().rule,
            "null_type"
        );
        for i in 0..500 {
            assert!(d
                .observe(
                    i,
                    c,
                    &format!("{}.{}.2.0.192.in-addr.arpa", i % 250, i / 250),
                    rtype::PTR
                )
                .is_none());
        }
    }

    #[test]
    fn exempt_zones_match_on_label_boundaries() {
        let d = det();
        assert!(d.exempt("spamhaus.org"));
        assert!(d.exempt("zen.spamhaus.org"));
        assert!(!d.exempt("notspamhaus.org"));
        assert!(!d.exempt("spamhaus.org.example"));
    }

    #[test]
    fn state_is_bounded() {
        let cfg = DetectorConfig {
            max_states: 100,
            ..DetectorConfig::default()
        };
        let mut d = Detector::new(cfg, PublicSuffixList::builtin());
        for i in 0..10_000u32 {
            let c = IpAddr::from([192, 0, 2, (i % 250) as u8]);
            d.observe(i as u64, c, &format!("x{i}.d{i}.com"), rtype::A);
            assert!(d.state_count() <= 100);
        }
        assert!(d.evictions() > 0);
    }
}
