//! A compact, immutable set of domain names with exact and subdomain matching.
//!
//! Layout (no per-entry allocation): a sorted `Vec<u64>` of FNV-1a hashes, a parallel `Vec<u32>`
//! of offsets into one byte arena holding the names in hash order (length = next offset minus
//! this one), and one flag byte per entry. A lookup hashes each suffix of the query name and
//! binary-searches; equal hashes are confirmed against the arena, so the set is exact. Cost is
//! 13 bytes per entry plus the name bytes (about 30 B per domain on real lists).

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

/// A built set.
#[derive(Clone, Debug, Default)]
pub struct DomainSet {
    // radix[b] = first entry whose hash has top `radix_bits` bits >= b (len 2^bits + 1): a
    // lookup touches one radix slot and about one hash instead of ~log2(n) cache misses.
    radix: Vec<u32>,
    radix_bits: u32,
    hashes: Vec<u64>,
    offsets: Vec<u32>,
    flags: Vec<u8>,
    arena: Vec<u8>,
}

/// Collects names, then builds a [`DomainSet`].
#[derive(Debug, Default)]
pub struct DomainSetBuilder {
    // (hash, offset, len, flags) into `arena`.
    index: Vec<(u64, u32, u8, u8)>,
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

    /// An empty builder sized for about `names` names of `bytes` total bytes (avoids the
    /// doubling slack of growing vectors, which dominates the build peak on big lists).
    pub fn with_capacity(names: usize, bytes: usize) -> Self {
        Self {
            index: Vec::with_capacity(names),
            arena: Vec::with_capacity(bytes),
        }
    }

    /// Adds a normalised name (see [`crate::lists::normalise_domain`]) with `flags`. Names over
    /// 253 bytes or past a 4 GiB arena are ignored and reported as `false`.
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
        self.index
            .push((fnv1a(bytes), off, bytes.len() as u8, flags));
        true
    }

    /// Number of names inserted (before de-duplication).
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether nothing was inserted.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Sorts, merges duplicates (flags OR-ed) and lays out the final arena.
    pub fn build(mut self) -> DomainSet {
        let arena = std::mem::take(&mut self.arena);
        let name = |off: u32, len: u8| &arena[off as usize..off as usize + len as usize];
        self.index.sort_unstable_by(|a, b| {
            a.0.cmp(&b.0)
                .then_with(|| name(a.1, a.2).cmp(name(b.1, b.2)))
        });
        let mut set = DomainSet {
            radix: Vec::new(),
            radix_bits: 0,
            hashes: Vec::with_capacity(self.index.len()),
            offsets: Vec::with_capacity(self.index.len() + 1),
            flags: Vec::with_capacity(self.index.len()),
            arena: Vec::with_capacity(arena.len()),
        };
        let mut prev: Option<(u64, u32, u8)> = None;
        for &(h, off, len, fl) in &self.index {
            if let Some((ph, poff, plen)) = prev {
                if ph == h && name(poff, plen) == name(off, len) {
                    if let Some(last) = set.flags.last_mut() {
                        *last |= fl;
                    }
                    continue;
                }
            }
            set.hashes.push(h);
            set.offsets.push(set.arena.len() as u32);
            set.flags.push(fl);
            set.arena.extend_from_slice(name(off, len));
            prev = Some((h, off, len));
        }
        set.offsets.push(set.arena.len() as u32);
        // One to two entries per slot (2–4 bytes per entry); 2^4 ..= 2^24 slots.
        let bits = (usize::BITS - set.hashes.len().max(1).leading_zeros())
            .saturating_sub(1)
            .clamp(4, 24);
        let slots = 1usize << bits;
        let mut radix = Vec::with_capacity(slots + 1);
        let mut i = 0usize;
        for b in 0..slots {
            while i < set.hashes.len() && ((set.hashes[i] >> (64 - bits)) as usize) < b {
                i += 1;
            }
            radix.push(i as u32);
        }
        radix.push(set.hashes.len() as u32);
        set.radix = radix;
        set.radix_bits = bits;
        set.hashes.shrink_to_fit();
        set.offsets.shrink_to_fit();
        set.flags.shrink_to_fit();
        set.arena.shrink_to_fit();
        set
    }
}

impl DomainSet {
    /// Number of distinct names.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// Heap bytes used by the set.
    pub fn heap_bytes(&self) -> usize {
        self.radix.capacity() * 4
            + self.hashes.capacity() * 8
            + self.offsets.capacity() * 4
            + self.flags.capacity()
            + self.arena.capacity()
    }

    fn entry(&self, i: usize) -> &[u8] {
        let (a, b) = (self.offsets[i] as usize, self.offsets[i + 1] as usize);
        &self.arena[a..b]
    }

    fn find(&self, name: &[u8]) -> Option<(usize, u8)> {
        let h = fnv1a(name);
        let b = (h >> (64 - self.radix_bits)) as usize;
        let (lo, hi) = match (self.radix.get(b), self.radix.get(b + 1)) {
            (Some(&lo), Some(&hi)) => (lo as usize, hi as usize),
            _ => (0, self.hashes.len()),
        };
        let bucket = &self.hashes[lo..hi];
        let mut i = lo + bucket.partition_point(|&x| x < h);
        while i < hi && self.hashes[i] == h {
            if self.entry(i) == name {
                return Some((i, self.flags[i]));
            }
            i += 1;
        }
        None
    }

    /// Whether `name` (normalised, no trailing dot) or one of its parents matches.
    pub fn lookup(&self, name: &str) -> Option<SetMatch<'_>> {
        if self.hashes.is_empty() || name.is_empty() {
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
            entry: std::str::from_utf8(self.entry(i)).unwrap_or(""),
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
}
