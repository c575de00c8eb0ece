//! A compact, immutable set of domain names with exact and subdomain matching.
//!
//! Layout (no per-entry allocation): one sorted `Vec` of 12-byte entries (the top 32 bits of
//! the name's FNV-1a hash, the name's offset into one byte arena, its length and its match
//! flags) and the arena of names. A lookup hashes each suffix of the query name, finds the
//! hash through a radix table over the top hash bits and binary search, and confirms equal
//! hashes against the arena, so the set is exact. Cost: 12 bytes per entry, 2–4 for the radix
//! table, plus the name bytes (about 37 B per domain on real lists).
//!
//! The builder's vectors *are* the final representation: [`DomainSetBuilder::build`] sorts and
//! de-duplicates them in place and frees their slack, so building a set never holds a second
//! copy of the names (the build peak is the final size plus the radix table).

/// Entry flag: the name itself matches.
pub const MATCH_EXACT: u8 = 1;
/// Entry flag: names below it match.
pub const MATCH_SUBDOMAINS: u8 = 2;

/// FNV-1a, 64 bit. Deterministic across runs (the set is built and queried in one process, but
/// deterministic hashing keeps benchmark numbers reproducible).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

fn hash32(bytes: &[u8]) -> u32 {
    (fnv1a(bytes) >> 32) as u32
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    hash: u32,
    off: u32,
    len: u8,
    flags: u8,
}

/// A built set.
#[derive(Clone, Debug, Default)]
pub struct DomainSet {
    // radix[b] = first entry whose hash has top `radix_bits` bits >= b (len 2^bits + 1): a
    // lookup touches one radix slot and about one entry instead of ~log2(n) cache misses.
    radix: Vec<u32>,
    radix_bits: u32,
    entries: Vec<Entry>,
    arena: Vec<u8>,
}

/// Collects names, then builds a [`DomainSet`].
#[derive(Debug, Default)]
pub struct DomainSetBuilder {
    entries: Vec<Entry>,
    arena: Vec<u8>,
}

/// The entry that matched a lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SetMatch<'a> {
    /// The listed name that matched (the query name or one of its parents).
    pub entry: &'a str,
    /// Whether the match was on a parent (subdomain rule).
    pub via_parent: bool,
}

impl DomainSetBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty builder with room for `names` names of `bytes` total bytes. Over-estimates are
    /// cheap (untouched capacity is never paged in, and `build` returns the slack); growing by
    /// doubling instead can copy the vectors mid-build.
    pub fn with_capacity(names: usize, bytes: usize) -> Self {
        Self {
            entries: Vec::with_capacity(names),
            arena: Vec::with_capacity(bytes),
        }
    }

    /// Adds a normalised name (lower case, no trailing dot) with `flags`. Empty names, names
    /// over 253 bytes or past a 4 GiB arena are ignored and reported as `false`.
    pub fn insert(&mut self, name: &str, flags: u8) -> bool {
        let bytes = name.as_bytes();
        if bytes.is_empty() || bytes.len() > 253 || flags == 0 {
            return false;
        }
        let Ok(off) = u32::try_from(self.arena.len()) else {
            return false;
        };
        if off.checked_add(bytes.len() as u32).is_none() {
            return false;
        }
        self.arena.extend_from_slice(bytes);
        self.entries.push(Entry {
            hash: hash32(bytes),
            off,
            len: bytes.len() as u8,
            flags,
        });
        true
    }

    /// Number of names inserted (before de-duplication).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sorts and merges duplicates (flags OR-ed) in place, frees the slack and adds the radix
    /// table. The bytes of duplicate names stay in the arena (they are rare in real lists).
    pub fn build(self) -> DomainSet {
        let Self {
            mut entries,
            mut arena,
        } = self;
        {
            let name = |e: &Entry| &arena[e.off as usize..e.off as usize + e.len as usize];
            entries.sort_unstable_by(|a, b| a.hash.cmp(&b.hash).then_with(|| name(a).cmp(name(b))));
            let mut w = 0usize;
            for r in 0..entries.len() {
                if w > 0 {
                    let prev = entries[w - 1];
                    if prev.hash == entries[r].hash && name(&prev) == name(&entries[r]) {
                        entries[w - 1].flags |= entries[r].flags;
                        continue;
                    }
                }
                entries[w] = entries[r];
                w += 1;
            }
            entries.truncate(w);
        }
        entries.shrink_to_fit();
        arena.shrink_to_fit();
        // One to two entries per slot (2–4 bytes per entry); 2^4 ..= 2^24 slots.
        let bits = (usize::BITS - entries.len().max(1).leading_zeros())
            .saturating_sub(1)
            .clamp(4, 24);
        let slots = 1usize << bits;
        let mut radix = Vec::with_capacity(slots + 1);
        let mut i = 0usize;
        for b in 0..slots {
            while i < entries.len() && ((entries[i].hash >> (32 - bits)) as usize) < b {
                i += 1;
            }
            radix.push(i as u32);
        }
        radix.push(entries.len() as u32);
        DomainSet {
            radix,
            radix_bits: bits,
            entries,
            arena,
        }
    }
}

impl DomainSet {
    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Heap bytes used by the set.
    pub fn heap_bytes(&self) -> usize {
        self.radix.capacity() * 4
            + self.entries.capacity() * std::mem::size_of::<Entry>()
            + self.arena.capacity()
    }

    fn name(&self, e: &Entry) -> &[u8] {
        self.arena
            .get(e.off as usize..e.off as usize + e.len as usize)
            .unwrap_or(&[])
    }

    fn find(&self, name: &[u8]) -> Option<(usize, u8)> {
        let h = hash32(name);
        let b = (h >> (32 - self.radix_bits)) as usize;
        let (lo, hi) = match (self.radix.get(b), self.radix.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.entries.len()),
        };
        let bucket = self.entries.get(lo..hi)?;
        let mut i = bucket.partition_point(|e| e.hash < h);
        while let Some(e) = bucket.get(i) {
            if e.hash != h {
                break;
            }
            if self.name(e) == name {
                return Some((lo + i, e.flags));
            }
            i += 1;
        }
        None
    }

    /// Whether `name` (normalised, no trailing dot) or one of its parents matches.
    pub fn lookup(&self, name: &str) -> Option<SetMatch<'_>> {
        if self.entries.is_empty() || name.is_empty() {
            return None;
        }
        let bytes = name.as_bytes();
        if let Some((i, fl)) = self.find(bytes) {
            if fl & MATCH_EXACT != 0 {
                return Some(self.to_match(i, false));
            }
        }
        let mut start = 0usize;
        while let Some(dot) = bytes[start..].iter().position(|&b| b == b'.') {
            start += dot + 1;
            if let Some((i, fl)) = self.find(&bytes[start..]) {
                if fl & MATCH_SUBDOMAINS != 0 {
                    return Some(self.to_match(i, true));
                }
            }
        }
        None
    }

    fn to_match(&self, i: usize, via_parent: bool) -> SetMatch<'_> {
        SetMatch {
            entry: self
                .entries
                .get(i)
                .and_then(|e| std::str::from_utf8(self.name(e)).ok())
                .unwrap_or(""),
            via_parent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_and_subdomain_rules() {
        let mut b = DomainSetBuilder::new();
        b.insert("ads.example.com", MATCH_EXACT | MATCH_SUBDOMAINS);
        b.insert("only.example.org", MATCH_EXACT);
        b.insert("sub.example.net", MATCH_SUBDOMAINS);
        b.insert("ads.example.com", MATCH_EXACT);
        let s = b.build();
        assert_eq!(s.len(), 3);
        assert_eq!(
            s.lookup("ads.example.com").unwrap().entry,
            "ads.example.com"
        );
        assert!(s.lookup("x.y.ads.example.com").unwrap().via_parent);
        assert!(s.lookup("example.com").is_none());
        assert!(s.lookup("bads.example.com").is_none());
        assert!(s.lookup("only.example.org").is_some());
        assert!(s.lookup("a.only.example.org").is_none());
        assert!(s.lookup("sub.example.net").is_none());
        assert!(s.lookup("a.sub.example.net").is_some());
    }

    #[test]
    fn many_names_stay_exact() {
        let mut b = DomainSetBuilder::new();
        for i in 0..20_000 {
            b.insert(&format!("n{i}.example.com"), MATCH_EXACT);
        }
        let s = b.build();
        for i in 0..20_000 {
            assert!(s.lookup(&format!("n{i}.example.com")).is_some());
        }
        assert!(s.lookup("n20000.example.com").is_none());
        assert!(s.heap_bytes() < 20_000 * 35);
    }

    #[test]
    fn colliding_32_bit_hashes_are_told_apart_by_name() {
        // Names whose 32-bit hashes collide must both be found, and neither may answer for
        // the other: search a small space for a real collision.
        let mut seen = std::collections::HashMap::new();
        let mut pair = None;
        // About 10 colliding pairs are expected among 300k names (birthday bound on 32 bits).
        for i in 0..300_000u32 {
            let n = format!("c{i}.example");
            let h = hash32(n.as_bytes());
            if let Some(prev) = seen.insert(h, n.clone()) {
                pair = Some((prev, n));
                break;
            }
        }
        let (a, b) = pair.expect("a 32-bit collision within 300k names");
        let mut bld = DomainSetBuilder::new();
        bld.insert(&a, MATCH_EXACT);
        let s = bld.build();
        assert!(s.lookup(&a).is_some());
        assert!(s.lookup(&b).is_none());
        let mut bld = DomainSetBuilder::new();
        bld.insert(&a, MATCH_EXACT);
        bld.insert(&b, MATCH_SUBDOMAINS);
        bld.insert(&a, MATCH_SUBDOMAINS);
        let s = bld.build();
        assert_eq!(s.len(), 2);
        assert_eq!(s.lookup(&format!("x.{a}")).unwrap().entry, a);
        assert!(s.lookup(&b).is_none(), "b is subdomains-only");
        assert_eq!(s.lookup(&format!("y.{b}")).unwrap().entry, b);
    }
}
