//! Answer cache holding upstream responses as wire bytes (no re-encoding): on a hit the id, the
//! question bytes (the client's 0x20 casing) and every TTL are patched in place. Positive
//! answers live for their smallest TTL, negative ones (NXDOMAIN / NODATA) for the SOA's
//! `min(TTL, MINIMUM)` (RFC 2308), both clamped by [`CacheConfig`]. Time is an argument.
//! Bounded: at most `max_entries` entries over 16 mutex-protected shards; a full shard drops
//! expired entries, then arbitrary ones down to 7/8 of its size (amortised O(1) per insert).

use std::collections::HashMap;
use std::sync::Mutex;

use crate::config::CacheConfig;
use crate::domainset::fnv1a;
use crate::wire::{rcode, Message, RData};

const SHARDS: usize = 16;

/// What identifies a cached answer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    /// Normalised question name.
    pub name: String,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
    /// DNSSEC OK bit of the query (answers differ).
    pub dnssec_ok: bool,
    /// Checking Disabled bit of the query.
    pub cd: bool,
}

#[derive(Debug)]
struct Entry {
    bytes: Vec<u8>,
    ttl_offsets: Vec<(usize, u32)>,
    question_end: usize,
    stored_ms: u64,
    expires_ms: u64,
    generation: u64,
}

/// The cache.
#[derive(Debug)]
pub struct Cache {
    cfg: CacheConfig,
    shards: Vec<Mutex<HashMap<CacheKey, Entry>>>,
}

/// A cache hit.
#[derive(Debug, PartialEq, Eq)]
pub struct Hit {
    /// The patched response.
    pub bytes: Vec<u8>,
    /// End of the question section in `bytes`.
    pub question_end: usize,
}

impl Cache {
    /// An empty cache.
    pub fn new(cfg: CacheConfig) -> Self {
        Self {
            cfg,
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn shard(&self, key: &CacheKey) -> &Mutex<HashMap<CacheKey, Entry>> {
        let h = fnv1a(key.name.as_bytes()) ^ key.qtype as u64;
        &self.shards[(h as usize) % SHARDS]
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Whether empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How long (seconds) `resp` may be cached, or `None` if it must not be.
    pub fn ttl_for(&self, resp: &Message) -> Option<u32> {
        if resp.header.tc() {
            return None;
        }
        let rc = resp.rcode();
        let negative = rc == rcode::NXDOMAIN as u16 || (rc == 0 && resp.answers.is_empty());
        let ttl = if negative {
            let soa = resp.authority.iter().find_map(|r| match r.data {
                RData::Soa { minimum } => Some(r.ttl.min(minimum)),
                _ => None,
            })?;
            soa.min(self.cfg.max_negative_ttl_s)
        } else if rc == 0 {
            resp.answers.iter().map(|r| r.ttl).min()?
        } else {
            return None;
        };
        Some(ttl.clamp(
            self.cfg.min_ttl_s,
            self.cfg.max_ttl_s.max(self.cfg.min_ttl_s),
        ))
    }

    /// Stores `bytes` (parsed as `resp`) under `key`.
    pub fn insert(
        &self,
        now_ms: u64,
        key: CacheKey,
        bytes: &[u8],
        resp: &Message,
        generation: u64,
    ) {
        if self.cfg.max_entries == 0 {
            return;
        }
        let Some(ttl) = self.ttl_for(resp) else {
            return;
        };
        if ttl == 0 {
            return;
        }
        let ttl_offsets = resp
            .answers
            .iter()
            .chain(&resp.authority)
            .chain(&resp.additional)
            .map(|r| {
                (
                    r.ttl_offset,
                    r.ttl.clamp(
                        self.cfg.min_ttl_s,
                        self.cfg.max_ttl_s.max(self.cfg.min_ttl_s),
                    ),
                )
            })
            .collect();
        let entry = Entry {
            bytes: bytes.to_vec(),
            ttl_offsets,
            question_end: resp.question_end,
            stored_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl as u64 * 1000),
            generation,
        };
        let per_shard = self.cfg.max_entries.div_ceil(SHARDS).max(1);
        let Ok(mut map) = self.shard(&key).lock() else {
            return;
        };
        if map.len() >= per_shard && !map.contains_key(&key) {
            // Amortised O(1): one sweep drops the expired entries and, if that is not enough,
            // arbitrary ones down to 7/8 of the shard, so the next per_shard/8 inserts are free.
            map.retain(|_, e| e.expires_ms > now_ms);
            let target = per_shard - (per_shard / 8).max(1);
            if map.len() > target {
                let excess = map.len() - target;
                let victims: Vec<CacheKey> = map.keys().take(excess).cloned().collect();
                for k in victims {
                    map.remove(&k);
                }
            }
        }
        map.insert(key, entry);
    }

    /// A fresh answer for `key`, patched for a query with `query_id` whose question section is
    /// `question` (bytes 12..question_end of the query). Entries from an older list
    /// `generation` are ignored, since their response checks ran against old lists.
    pub fn get(
        &self,
        now_ms: u64,
        key: &CacheKey,
        query_id: u16,
        question: &[u8],
        generation: u64,
    ) -> Option<Hit> {
        let mut map = self.shard(key).lock().ok()?;
        let e = map.get(key)?;
        if e.expires_ms <= now_ms || e.generation != generation {
            map.remove(key);
            return None;
        }
        let mut bytes = e.bytes.clone();
        let elapsed_s = (now_ms.saturating_sub(e.stored_ms) / 1000) as u32;
        for &(off, ttl) in &e.ttl_offsets {
            if let Some(slot) = bytes.get_mut(off..off + 4) {
                slot.copy_from_slice(&ttl.saturating_sub(elapsed_s).to_be_bytes());
            }
        }
        bytes[0..2].copy_from_slice(&query_id.to_be_bytes());
        if let Some(q) = bytes.get_mut(12..e.question_end) {
            if q.len() == question.len() {
                q.copy_from_slice(question);
            }
        }
        Some(Hit {
            bytes,
            question_end: e.question_end,
        })
    }
}

/// The cache key of a parsed query.
pub fn key_of(query: &Message) -> Option<CacheKey> {
    let q = query.question()?;
    Some(CacheKey {
        name: q.name.as_str().to_string(),
        qtype: q.qtype,
        qclass: q.qclass,
        dnssec_ok: query.opt.as_ref().is_some_and(|o| o.dnssec_ok),
        cd: query.header.flags & 0x0010 != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, parse, MessageBuilder};

    fn resp(ttl: u32) -> Vec<u8> {
        MessageBuilder::new(9, 0x8180)
            .question("www.example.com", 1)
            .record(0, "www.example.com", 1, ttl, vec![192, 0, 2, 1])
            .build()
            .unwrap()
    }

    #[test]
    fn ttls_decrease_and_entries_expire() {
        let c = Cache::new(CacheConfig::default());
        let b = resp(300);
        let m = parse(&b).unwrap();
        let key = key_of(&m).unwrap();
        c.insert(0, key.clone(), &b, &m, 1);
        let q = &b[12..m.question_end];
        let hit = c.get(100_000, &key, 0x4242, q, 1).unwrap();
        let hm = parse(&hit.bytes).unwrap();
        assert_eq!(hm.header.id, 0x4242);
        assert_eq!(hm.answers[0].ttl, 200);
        assert!(c.get(300_000, &key, 1, q, 1).is_none());
        c.insert(0, key.clone(), &b, &m, 1);
        assert!(c.get(1, &key, 1, q, 2).is_none(), "old generation ignored");
    }

    #[test]
    fn negative_answers_use_soa_minimum() {
        let mut soa = Vec::new();
        wire::encode_name("ns.example.com", &mut soa).unwrap();
        wire::encode_name("host.example.com", &mut soa).unwrap();
        for v in [1u32, 2, 3, 4, 30] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        let b = MessageBuilder::new(9, 0x8183)
            .question("nx.example.com", 1)
            .record(1, "example.com", 6, 3600, soa)
            .build()
            .unwrap();
        let m = parse(&b).unwrap();
        let c = Cache::new(CacheConfig::default());
        assert_eq!(c.ttl_for(&m), Some(30));
        let no_soa = parse(
            &MessageBuilder::new(9, 0x8183)
                .question("nx.example.com", 1)
                .build()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(c.ttl_for(&no_soa), None);
    }

    #[test]
    fn bounded() {
        let cfg = CacheConfig {
            max_entries: 32,
            ..CacheConfig::default()
        };
        let c = Cache::new(cfg);
        for i in 0..1000 {
            let b = MessageBuilder::new(9, 0x8180)
                .question(&format!("n{i}.example.com"), 1)
                .record(0, &format!("n{i}.example.com"), 1, 60, vec![192, 0, 2, 1])
                .build()
                .unwrap();
            let m = parse(&b).unwrap();
            c.insert(0, key_of(&m).unwrap(), &b, &m, 0);
        }
        assert!(c.len() <= 32);
    }
}
