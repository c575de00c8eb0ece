//! The IPv4 field index of the bit-vector [`Classifier`](crate::classifier::Classifier): from an
//! address to the class of the elementary interval containing it.
//!
//! A 16-bit direct index finds the /16 bucket's intervals; dense buckets get a second level by
//! the third octet; a short binary search ends it. Interval starts are stored as their low 16
//! bits beside a 16-bit class, 4 bytes an interval instead of 8: a 100k-prefix blocklist's
//! 200k intervals take 0.8 MB instead of 1.6 MB, so with the 256 KiB index they stay mostly in
//! a 1 MiB L2 (replay looks up random sources, one cache miss fewer per packet).

/// A /16 bucket with more intervals than this gets a second-level index by the third octet.
// Why: a binary search over 16 sorted entries stays within one cache line; beyond that the
// 1 KiB block saves misses (ClassBench acl sets have /16s with thousands of endpoints).
const DENSE_BUCKET: usize = 16;
/// Top bit of an `idx16` entry: the interval it names starts exactly at the bucket's first
/// address (so it belongs to this bucket, not to the previous one's search range).
const STARTS_HERE: u32 = 1 << 31;
const INDEX_MASK: u32 = STARTS_HERE - 1;
/// At most this many intervals are searched directly, without the 256 KiB `/16` index.
// Why: a policy's destination field often has a handful of intervals; a random address then
// costs one search in a line or two that stay in L1 instead of a miss in the index.
const SMALL: usize = 32;
/// Fields of at least this many intervals get the cache-saving layouts: one-address entries
/// (`entries8`) and the 16-bit `/16` index.
// Why: they pay where a lookup's misses dominate (a 100k-prefix blocklist looked up at random
// addresses, one packet at a time); on smaller fields, looked up in batches (ClassBench's
// bit-vector variant), their extra instructions cost 10–15% (acl1_1k, acl1_10k).
const COMPACT_FROM: usize = 65_536;

/// See the module doc.
#[derive(Clone, Debug)]
pub(crate) struct V4Index {
    /// (start, class) of every interval when there are at most [`SMALL`]; the other
    /// fields are then empty.
    small: Vec<(u32, u32)>,
    /// Per interval: (low 16 bits of its start, class when `wide` is empty).
    entries: Vec<(u16, u16)>,
    /// Classes when some class id does not fit 16 bits (empty otherwise).
    wide: Vec<u32>,
    /// `idx16[h]`: index of the interval containing `h << 16` (| [`STARTS_HERE`]); one extra
    /// entry at the end. Empty when `idx_off` holds it.
    idx16: Vec<u32>,
    /// `idx16` in 16 bits where it fits: `idx_base[h >> 6] + (idx_off[h] & 0x7fff)`, the flag in
    /// bit 15 (empty otherwise).
    // Why: the index is read at a random `/16` per lookup; 128 KiB (+ 4 KiB of bases) instead
    // of 256 KiB keeps more of it in the L2 beside the entries. Only for fields of
    // [`COMPACT_FROM`] intervals or more.
    idx_off: Vec<u16>,
    /// Per 64 buckets: the first bucket's interval index.
    idx_base: Vec<u32>,
    /// For dense /16 buckets: block number into `idx24` (`u32::MAX`: none). Empty when no
    /// bucket is dense.
    blk16: Vec<u32>,
    /// 257-entry blocks: interval containing `h << 16 | k << 8`, then the bucket's last.
    idx24: Vec<u32>,
    /// When every class fits 8 bits, replaces `entries` (the index then counts these): an
    /// interval of one address and the interval after it share an entry.
    entries8: Vec<Entry8>,
}

/// An entry of `V4Index::entries8`: the address at `low` has class `at`, the addresses after
/// it up to the next entry's start class `after` (`at == after` for an ordinary interval).
// Why: a blocklist is mostly /32s, each an interval of one address plus the gap after it;
// one 4-byte entry for both nearly halves a 100k-prefix field (0.8 → 0.45 MB), so more of its
// random lookups hit the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C)]
struct Entry8 {
    low: u16,
    at: u8,
    after: u8,
}

impl V4Index {
    /// `bounds`: sorted, distinct interval starts, the first 0; `classes[i]` for `bounds[i]`.
    /// `None` if the shapes disagree or there are 2^31 intervals or more.
    pub(crate) fn build(bounds: &[u32], classes: &[u32]) -> Option<Self> {
        if bounds.len() != classes.len()
            || bounds.first() != Some(&0)
            || bounds.len() >= INDEX_MASK as usize
            || bounds.windows(2).any(|w| w[0] >= w[1])
        {
            return None;
        }
        if bounds.len() <= SMALL {
            return Some(Self {
                small: bounds
                    .iter()
                    .copied()
                    .zip(classes.iter().copied())
                    .collect(),
                entries: Vec::new(),
                wide: Vec::new(),
                idx16: Vec::new(),
                idx_off: Vec::new(),
                idx_base: Vec::new(),
                blk16: Vec::new(),
                idx24: Vec::new(),
                entries8: Vec::new(),
            });
        }
        let mut entries = Vec::new();
        let mut wide = Vec::new();
        let mut entries8 = Vec::new();
        let mut starts8 = Vec::new();
        let large = bounds.len() >= COMPACT_FROM;
        if large && classes.iter().all(|&c| c <= u32::from(u8::MAX)) {
            let mut k = 0;
            while k < bounds.len() {
                // Interval k is one address: its successor (starting right after it) joins it.
                let single = k + 1 < bounds.len() && bounds[k + 1] == bounds[k] + 1;
                let after = if single { classes[k + 1] } else { classes[k] };
                starts8.push(bounds[k]);
                entries8.push(Entry8 {
                    low: bounds[k] as u16,
                    at: classes[k] as u8,
                    after: after as u8,
                });
                k += if single { 2 } else { 1 };
            }
        } else {
            let narrow = classes.iter().all(|&c| c <= u32::from(u16::MAX));
            entries = bounds
                .iter()
                .zip(classes)
                .map(|(&b, &c)| (b as u16, if narrow { c as u16 } else { 0 }))
                .collect();
            if !narrow {
                wide = classes.to_vec();
            }
        }
        let bounds = if entries8.is_empty() {
            bounds
        } else {
            &starts8[..]
        };
        let containing = |v: u32| (bounds.partition_point(|&b| b <= v) - 1) as u32;
        let mut idx16 = Vec::with_capacity(65537);
        for h in 0u32..65536 {
            let i = containing(h << 16);
            let here = if bounds[i as usize] == h << 16 {
                STARTS_HERE
            } else {
                0
            };
            idx16.push(i | here);
        }
        idx16.push((bounds.len() - 1) as u32);
        let mut x = Self {
            small: Vec::new(),
            entries,
            wide,
            idx16,
            idx_off: Vec::new(),
            idx_base: Vec::new(),
            blk16: Vec::new(),
            idx24: Vec::new(),
            entries8,
        };
        for h in 0..65536usize {
            let (lo, hi) = x.bucket(h);
            if hi - lo <= DENSE_BUCKET {
                continue;
            }
            if x.blk16.is_empty() {
                x.blk16 = vec![u32::MAX; 65536];
            }
            x.blk16[h] = (x.idx24.len() / 257) as u32;
            for k in 0u32..256 {
                x.idx24.push(containing(((h as u32) << 16) | (k << 8)));
            }
            x.idx24.push(hi as u32);
        }
        let base: Vec<u32> = x
            .idx16
            .iter()
            .step_by(64)
            .map(|&i| i & INDEX_MASK)
            .collect();
        let fits = x
            .idx16
            .iter()
            .enumerate()
            .all(|(h, &i)| (i & INDEX_MASK) - base[h >> 6] < 0x8000);
        if fits && large {
            x.idx_off = x
                .idx16
                .iter()
                .enumerate()
                .map(|(h, &i)| (((i & INDEX_MASK) - base[h >> 6]) | ((i >> 31) << 15)) as u16)
                .collect();
            x.idx_base = base;
            x.idx16 = Vec::new();
        }
        Some(x)
    }

    /// `idx16[h]`, from whichever form holds it.
    #[inline(always)]
    fn idx(&self, h: usize) -> u32 {
        if self.idx_off.is_empty() {
            return self.idx16[h];
        }
        let o = u32::from(self.idx_off[h]);
        (self.idx_base[h >> 6] + (o & 0x7fff)) | ((o >> 15) << 31)
    }

    /// Whether the `/16` index exists (not a small field).
    #[inline(always)]
    fn indexed(&self) -> bool {
        !self.idx16.is_empty() || !self.idx_off.is_empty()
    }

    /// Interval range of bucket `h`: the one containing its first address, then those
    /// starting inside it, `lo..=hi`.
    #[inline(always)]
    fn bucket(&self, h: usize) -> (usize, usize) {
        let a = self.idx(h);
        let b = self.idx(h + 1);
        (
            (a & INDEX_MASK) as usize,
            ((b & INDEX_MASK) - (b >> 31)) as usize,
        )
    }

    /// `(start, class)` of every interval of a small field (`None`: the field is indexed).
    pub(crate) fn small_intervals(&self) -> Option<&[(u32, u32)]> {
        (!self.small.is_empty()).then_some(self.small.as_slice())
    }

    /// The class of `v`'s interval.
    #[inline]
    pub(crate) fn class(&self, v: u32) -> usize {
        if !self.small.is_empty() {
            let k = self.small.partition_point(|&(s, _)| s <= v);
            return self.small[k.saturating_sub(1)].1 as usize;
        }
        let h = (v >> 16) as usize;
        let (first, mut hi) = self.bucket(h);
        let mut lo = first;
        if hi - lo > DENSE_BUCKET {
            if let Some(&b) = self.blk16.get(h) {
                if b != u32::MAX {
                    let base = b as usize * 257 + ((v >> 8) & 0xff) as usize;
                    lo = self.idx24[base] as usize;
                    hi = self.idx24[base + 1] as usize;
                }
            }
        }
        // Entries lo+1..=hi start inside this bucket, so their low halves order them.
        let low = v as u16;
        if !self.entries8.is_empty() {
            let i = lo + self.entries8[lo + 1..=hi].partition_point(|e| e.low <= low);
            let e = self.entries8[i];
            // Entry i starts at `v` itself only if it starts inside this bucket (any entry
            // after the bucket's first does; the first when flagged) at the same low half.
            let inside = i > first || self.idx(h) & STARTS_HERE != 0;
            return usize::from(if inside && e.low == low {
                e.at
            } else {
                e.after
            });
        }
        let i = lo + self.entries[lo + 1..=hi].partition_point(|&(s, _)| s <= low);
        if self.wide.is_empty() {
            usize::from(self.entries[i].1)
        } else {
            self.wide[i] as usize
        }
    }

    /// Prefetch hint, first stage: the `/16` index entries `v`'s lookup will read. Nothing for
    /// small fields (they live in L1). Never changes a result.
    #[inline(always)]
    pub(crate) fn prefetch_index(&self, v: u32) {
        if let Some(e) = self.idx16.get((v >> 16) as usize) {
            prefetch(e);
        }
        if let Some(e) = self.idx_off.get((v >> 16) as usize) {
            prefetch(e);
        }
    }

    /// Prefetch hint, second stage (some packets after [`V4Index::prefetch_index`], when the
    /// index line has arrived): the interval entries `v`'s binary search will read.
    // Why: with random sources a 100k-prefix blocklist's lookup costs two dependent misses
    // (index, then intervals); replay issues both stages for packets a few places ahead.
    #[inline(always)]
    pub(crate) fn prefetch_entries(&self, v: u32) {
        let h = (v >> 16) as usize;
        if !self.indexed() {
            return;
        }
        let (lo, hi) = self.bucket(h);
        if hi - lo > DENSE_BUCKET {
            // Dense buckets use the second level; its block is the line worth fetching.
            if let Some(&b) = self.blk16.get(h) {
                if let Some(e) = self
                    .idx24
                    .get(b as usize * 257 + ((v >> 8) & 0xff) as usize)
                {
                    prefetch(e);
                }
            }
            return;
        }
        if let Some(e) = self.entries.get(lo) {
            prefetch(e);
        }
        if let Some(e) = self.entries8.get(lo) {
            prefetch(e);
        }
        if let Some(e) = self.entries8.get(hi) {
            prefetch(e);
        }
        if let Some(e) = self.entries.get(hi) {
            prefetch(e);
        }
        if let Some(w) = self.wide.get(lo) {
            prefetch(w);
        }
    }

    /// Approximate heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.small.len() * 8
            + self.entries.len() * 4
            + self.entries8.len() * std::mem::size_of::<Entry8>()
            + self.wide.len() * 4
            + (self.idx16.len() + self.idx_base.len() + self.blk16.len() + self.idx24.len()) * 4
            + self.idx_off.len() * 2
    }

    /// Whether some bucket has the second level.
    #[cfg(test)]
    pub(crate) fn has_second_level(&self) -> bool {
        !self.idx24.is_empty()
    }
}

/// An IPv4 field index answering most lookups from one 8-byte slot per `/16` (one cache
/// line, 512 KiB in all): a bucket whose classes are one *base* class plus at most two
/// exceptions, each a single address or an aligned 256-address block (`/24`), is stored
/// inline; a bucket of at most [`GROUP_RUNS`] runs has its run starts in one 64-byte
/// [`Group`]; any other bucket's slot points at its runs in `overflow`.
// Why: a blocklist of /32s and /24s looked up at random sources: the /16 index plus the
// interval entries were two dependent cache misses and ~100 instructions per lookup; with
// ~1.5 prefixes per /16 bucket, ~80% of buckets fit a slot (one miss, ~15 instructions).
#[derive(Clone, Debug)]
pub(crate) struct SlotIndex {
    /// Every class < 32: inline slots hold three exceptions of one shared class (5-bit base
    /// and exception classes, three 17-bit exceptions) instead of two of 8-bit classes each.
    // Why: most of a blocklist's buckets hold up to three prefixes, all of the same atom
    // ("blocked"); with three inline exceptions ~93% instead of ~80% of random lookups stay in
    // one slot (Poisson, ~1.5 prefixes per bucket).
    shared: bool,
    slots: Vec<u64>,
    /// Runs of the buckets of at most [`GROUP_RUNS`] runs, a group each.
    groups: Vec<Group>,
    /// Per bucket of more runs, its runs: (low 16 bits of the start, class); the first
    /// starts at 0 (the class at the bucket's first address).
    overflow: Vec<(u16, u16)>,
}

/// Runs of one bucket in one cache line: starts (the first 0) padded with `u16::MAX`, whose
/// class is the last run's, so that a search over all [`GROUP_RUNS`] entries answers alike.
// Why: the local networks' buckets (half of a gateway's sources) and a blocklist's fuller
// buckets hold 9–16 runs; a fixed-step search in one line replaced a call, a slice and a
// branchy binary search over entries that could straddle lines.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Group {
    starts: [u16; GROUP_RUNS],
    classes: [u16; GROUP_RUNS],
}

impl Group {
    /// The class of the last run starting at or below `low`.
    #[inline(always)]
    fn class(&self, low: u16) -> u16 {
        self.classes[last_at_or_below(&self.starts, low)]
    }
}

/// The index of the last of `starts` at or below `v`, in log2(N) steps whose compares become
/// conditional moves (no data-dependent branch). `starts` is sorted, its first entry at or
/// below every `v`, and `N` a power of two (padding: the largest value).
#[inline(always)]
pub(crate) fn last_at_or_below<T: Copy + PartialOrd, const N: usize>(
    starts: &[T; N],
    v: T,
) -> usize {
    let mut i = 0;
    let mut step = N / 2;
    while step > 0 {
        if starts[i + step] <= v {
            i += step;
        }
        step /= 2;
    }
    i
}

/// Runs a [`Group`] holds (a power of two).
const GROUP_RUNS: usize = 16;

/// Slot flag: the bucket's runs are in a [`Group`] (its index in bits 0..32).
const GROUPED: u64 = 1 << 63;
/// Slot flag: the bucket's runs are in `overflow` (offset in bits 0..32, count in 32..48).
const OVERFLOW: u64 = 1 << 62;
/// Bits of one inline exception: low 16 bits of its first address, class (8), block flag.
const EXC_BITS: u32 = 25;

impl SlotIndex {
    /// `bounds`: sorted, distinct interval starts, the first 0; `classes[i]` for `bounds[i]`.
    /// `None` when the shapes disagree or a class does not fit 16 bits.
    pub(crate) fn build(bounds: &[u32], classes: &[u32]) -> Option<Self> {
        if bounds.len() != classes.len()
            || bounds.first() != Some(&0)
            || bounds.windows(2).any(|w| w[0] >= w[1])
            || classes.iter().any(|&c| c > u32::from(u16::MAX))
        {
            return None;
        }
        let shared = classes.iter().all(|&c| c < 32);
        let mut slots = Vec::with_capacity(1 << 16);
        let mut groups: Vec<Group> = Vec::new();
        let mut overflow: Vec<(u16, u16)> = Vec::new();
        let mut i = 0; // the interval containing the bucket's first address
        for h in 0u32..1 << 16 {
            let first = h << 16;
            while i + 1 < bounds.len() && bounds[i + 1] <= first {
                i += 1;
            }
            // Runs inside the bucket: (low start, low end inclusive, class).
            let mut runs: Vec<(u32, u32, u32)> = Vec::new();
            let mut k = i;
            loop {
                let lo = bounds[k].max(first) - first;
                let next = bounds.get(k + 1).copied();
                let hi = match next {
                    Some(n) if n - 1 < first | 0xffff => n - 1 - first,
                    _ => 0xffff,
                };
                runs.push((lo, hi, classes[k]));
                if hi == 0xffff {
                    break;
                }
                k += 1;
            }
            let slot = if shared {
                inline_slot_shared(&runs)
            } else {
                inline_slot(&runs)
            };
            match slot {
                Some(slot) => slots.push(slot),
                None if runs.len() <= GROUP_RUNS => {
                    let at = u64::try_from(groups.len()).ok().filter(|&g| g < 1 << 32)?;
                    let last = runs[runs.len() - 1].2 as u16;
                    let mut g = Group {
                        starts: [u16::MAX; GROUP_RUNS],
                        classes: [last; GROUP_RUNS],
                    };
                    for (j, &(lo, _, c)) in runs.iter().enumerate() {
                        g.starts[j] = lo as u16;
                        g.classes[j] = c as u16;
                    }
                    groups.push(g);
                    slots.push(GROUPED | at);
                }
                None => {
                    let off = u64::try_from(overflow.len()).ok()?;
                    if off >= 1 << 32 || runs.len() >= 1 << 16 {
                        return None;
                    }
                    overflow.extend(runs.iter().map(|&(lo, _, c)| (lo as u16, c as u16)));
                    slots.push(OVERFLOW | (runs.len() as u64) << 32 | off);
                }
            }
        }
        Some(Self {
            shared,
            slots,
            groups,
            overflow,
        })
    }

    /// The class of `v`'s interval.
    #[inline(always)]
    pub(crate) fn class(&self, v: u32) -> usize {
        let s = self.slots[(v >> 16) as usize];
        let low = v & 0xffff;
        if s & (GROUPED | OVERFLOW) == 0 && self.shared {
            let low = u64::from(low);
            let hit = |e: u64| (low ^ (e & 0xffff)) >> (((e >> 16) & 1) * 8) == 0;
            let exc = hit(s >> 10) | hit(s >> 27) | hit(s >> 44);
            return (if exc { (s >> 5) & 31 } else { s & 31 }) as usize;
        }
        if s & (GROUPED | OVERFLOW) == 0 {
            let low = u64::from(low);
            let mut class = s & 0xff;
            for e in [s >> 8, s >> (8 + EXC_BITS)] {
                let shift = ((e >> 24) & 1) * 8;
                if (low ^ (e & 0xffff)) >> shift == 0 {
                    class = (e >> 16) & 0xff;
                }
            }
            return class as usize;
        }
        if s & GROUPED != 0 {
            if let Some(g) = self.groups.get(s as u32 as usize) {
                return usize::from(g.class(low as u16));
            }
        }
        self.overflow_class(s, low as u16)
    }

    #[inline(never)]
    fn overflow_class(&self, s: u64, low: u16) -> usize {
        let off = (s & 0xffff_ffff) as usize;
        let n = ((s >> 32) & 0xffff) as usize;
        let runs = &self.overflow[off..off + n];
        // The first run starts at 0 <= low.
        let k = runs.partition_point(|&(start, _)| start <= low);
        usize::from(runs[k.saturating_sub(1)].1)
    }

    /// Prefetch hint: the slot `v`'s lookup reads.
    #[inline(always)]
    pub(crate) fn prefetch(&self, v: u32) {
        if let Some(s) = self.slots.get((v >> 16) as usize) {
            prefetch(s);
        }
    }

    /// Heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.slots.len() * 8
            + self.groups.len() * std::mem::size_of::<Group>()
            + self.overflow.len() * 4
    }

    /// Share of buckets answered inline (tests, docs).
    #[cfg(test)]
    pub(crate) fn inline_share(&self) -> f64 {
        self.slots
            .iter()
            .filter(|&&s| s & (OVERFLOW | GROUPED) == 0)
            .count() as f64
            / self.slots.len() as f64
    }
}

/// Whether a run (low start, low end, class) can be an inline exception: a single address or
/// an aligned 256-address block.
fn is_exc(&(lo, hi, _): &(u32, u32, u32)) -> bool {
    lo == hi || (lo & 0xff == 0 && hi == lo + 0xff)
}

/// The base class of a bucket's runs: the one class of every run that cannot be an
/// exception (`None` if they differ), else the first run's.
fn base_class(runs: &[(u32, u32, u32)]) -> Option<u32> {
    let mut base = None;
    for r in runs.iter().filter(|r| !is_exc(r)) {
        match base {
            None => base = Some(r.2),
            Some(b) if b != r.2 => return None,
            Some(_) => {}
        }
    }
    Some(base.unwrap_or(runs[0].2))
}

/// The shared-class inline slot (classes < 32) of a bucket's runs, if they fit: at most three
/// exceptions, all of one class. Unused exceptions repeat a used one (or, with none, the
/// exception class is the base).
fn inline_slot_shared(runs: &[(u32, u32, u32)]) -> Option<u64> {
    let base = base_class(runs)?;
    let exc: Vec<&(u32, u32, u32)> = runs.iter().filter(|r| is_exc(r) && r.2 != base).collect();
    if exc.len() > 3 || base >= 32 {
        return None;
    }
    let class = exc.first().map_or(base, |e| e.2);
    if exc.iter().any(|e| e.2 != class) || class >= 32 {
        return None;
    }
    let mut slot = u64::from(base) | u64::from(class) << 5;
    for j in 0..3 {
        let bits = match exc.get(j).or(exc.first()) {
            Some(&&(lo, hi, _)) => u64::from(lo) | u64::from(hi != lo) << 16,
            None => 0,
        };
        slot |= bits << (10 + 17 * j);
    }
    Some(slot)
}

/// The inline slot of a bucket's runs (low start, low end, class), if they fit.
fn inline_slot(runs: &[(u32, u32, u32)]) -> Option<u64> {
    // Exceptions are single addresses or aligned 256-address blocks; every other run must
    // share one class (the base).
    let base = base_class(runs)?;
    if base > 0xff {
        return None;
    }
    let exc: Vec<&(u32, u32, u32)> = runs.iter().filter(|r| is_exc(r) && r.2 != base).collect();
    if exc.len() > 2 || exc.iter().any(|r| r.2 > 0xff) {
        return None;
    }
    // Unused exceptions repeat the base class (matching them changes nothing).
    let mut slot = u64::from(base);
    for (j, e) in exc.iter().map(Some).chain([None, None]).take(2).enumerate() {
        let bits = match e {
            Some(&&(lo, hi, c)) => u64::from(lo) | u64::from(c) << 16 | u64::from(hi != lo) << 24,
            None => u64::from(base) << 16,
        };
        slot |= bits << (8 + EXC_BITS * j as u32);
    }
    Some(slot)
}

/// A prefetch hint for the line holding `p`.
#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline, and a prefetch is only a hint: it never
        // faults or reads into program state, and `p` comes from a live reference anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(bounds: &[u32], classes: &[u32], v: u32) -> usize {
        classes[bounds.partition_point(|&b| b <= v) - 1] as usize
    }

    #[test]
    fn agrees_with_a_binary_search_at_bucket_edges() {
        // Starts on /16 and /24 edges, just after them, a dense bucket, and wide classes.
        // One-address intervals too: runs of them, at a bucket's first and last address, in
        // a dense bucket, and at the very end of the space.
        let mut bounds = vec![0u32, 0x0001_0000, 0x0001_0001, 0x0002_ffff, 0x0003_0000];
        bounds.extend((0..3000u32).map(|i| 0x0004_0000 + i * 17));
        bounds.extend((0..300u32).map(|i| 0x0004_c000 + i * 3 + i % 2));
        bounds.extend([
            0x0005_0000,
            0x0005_0100,
            0x0006_0000,
            0x0006_0001,
            0x0006_0002,
        ]);
        bounds.extend([
            0x0006_0003,
            0x0006_0005,
            0x0006_0006,
            0x0007_ffff,
            0x0008_0000,
        ]);
        bounds.extend([0x0008_0001, 0x0009_fffe, 0x0009_ffff, 0x000a_0000]);
        bounds.extend([0xffff_0000, 0xffff_fffe, 0xffff_ffff]);
        // Enough intervals elsewhere for the large-field layouts (COMPACT_FROM).
        bounds.extend((0..COMPACT_FROM as u32).map(|i| 0x0100_0000 + i * 977));
        bounds.sort_unstable();
        bounds.dedup();
        // 8-bit, 16-bit and wide classes: the three entry layouts.
        for layout in 0..3 {
            let classes: Vec<u32> = (0..bounds.len() as u32)
                .map(|i| match layout {
                    0 => i % 7,
                    1 => i * 7 % 1000,
                    _ => (u64::from(i) * 70_001 % 100_003) as u32,
                })
                .collect();
            let x = V4Index::build(&bounds, &classes).unwrap();
            assert_eq!(!x.entries8.is_empty(), layout == 0);
            assert!(x.has_second_level());
            let mut probes: Vec<u32> = bounds
                .iter()
                .flat_map(|&b| [b.wrapping_sub(1), b, b.wrapping_add(1)])
                .collect();
            probes.extend((0..=0x6_0000u32).step_by(97));
            probes.push(u32::MAX);
            for v in probes {
                // The hints read the same index (dense and sparse buckets): no panic, no change.
                x.prefetch_index(v);
                x.prefetch_entries(v);
                assert_eq!(x.class(v), linear(&bounds, &classes, v), "{v:#x}");
            }
        }
    }

    #[test]
    fn index_offsets_fall_back_to_32_bits() {
        // 16-bit offsets need COMPACT_FROM entries and every 64-bucket group within 32,767 of
        // its first: spread out they fit; 40,000 starts in bucket 5 do not; fewer entries keep
        // 32 bits anyway. All three answer like the linear search.
        let spread = |n: u32, from: u32| (0..n).map(move |i| from + i * 977);
        let cases: [(Vec<u32>, bool); 3] = [
            (spread(70_000, 0x0100_0000).collect(), true),
            (
                (0..40_000u32)
                    .map(|i| 0x0005_0000 + i + i / 3)
                    .chain(spread(30_000, 0x0100_0000))
                    .collect(),
                false,
            ),
            (spread(30_000, 0x0100_0000).collect(), false),
        ];
        for (starts, compact) in cases {
            let mut bounds = vec![0u32];
            bounds.extend(starts);
            bounds.extend([0x003f_ffff, 0x0040_0000, 0xffff_ffff]);
            bounds.sort_unstable();
            bounds.dedup();
            // 16-bit classes: one entry per interval (no one-address merging).
            let classes: Vec<u32> = (0..bounds.len() as u32).map(|i| i * 7 % 1000).collect();
            let x = V4Index::build(&bounds, &classes).unwrap();
            let n = bounds.len();
            assert_eq!(x.idx16.is_empty(), compact, "{n}");
            assert_eq!(x.idx_off.is_empty(), !compact, "{n}");
            let mut probes: Vec<u32> = bounds
                .iter()
                .step_by(7)
                .flat_map(|&b| [b.wrapping_sub(1), b, b.wrapping_add(1)])
                .collect();
            probes.extend([0x0006_0000, 0x0007_0000, 0x003f_ffff, 0x0040_0000, u32::MAX]);
            for v in probes {
                x.prefetch_index(v);
                x.prefetch_entries(v);
                assert_eq!(x.class(v), linear(&bounds, &classes, v), "{n} {v:#x}");
            }
        }
    }

    #[test]
    fn slot_index_agrees_with_a_binary_search() {
        // Inline buckets (a base plus exceptions: single addresses or aligned /24 blocks, at
        // the bucket's first and last address too), overflowing ones (too many exceptions,
        // an unaligned block, runs of two addresses, a dense bucket, classes that differ or
        // do not fit), a run crossing buckets, and the end of the space; in both inline
        // layouts (classes < 32: three exceptions of one class; else two of any class).
        let cases: &[(u32, u32, u32)] = &[
            (0x0001_0000, 0x0001_0000, 1),
            (0x0001_ffff, 0x0001_ffff, 2),
            (0x0002_0500, 0x0002_05ff, 3),
            (0x0002_7777, 0x0002_7777, 4),
            (0x0003_0001, 0x0003_0001, 1),
            (0x0003_0005, 0x0003_0005, 1),
            (0x0003_0009, 0x0003_0009, 2),
            (0x0004_0510, 0x0004_060f, 1),
            (0x0005_0010, 0x0005_0011, 1),
            (0x0006_0000, 0x0006_00ff, 300),
            (0x0007_fff0, 0x0008_000f, 5),
            (0x0009_1234, 0x0009_1234, 0),
            (0x000b_0000, 0x000b_0000, 1),
            (0x000b_1000, 0x000b_1000, 1),
            (0x000b_ffff, 0x000b_ffff, 1),
            (0x000c_0100, 0x000c_01ff, 1),
            (0x000c_0300, 0x000c_0300, 1),
            (0x000d_0001, 0x000d_0001, 1),
            (0x000d_0003, 0x000d_0003, 1),
            (0x000d_0005, 0x000d_0005, 1),
            (0x000d_0007, 0x000d_0007, 1),
            (0xffff_ff00, 0xffff_ffff, 6),
        ];
        // (layout shared?, buckets expected inline, buckets expected to overflow)
        let expect: [(bool, &[u32], &[u32]); 2] = [
            (false, &[1, 2, 9, 0xc], &[3, 4, 5, 6, 7, 8, 0xa, 0xb, 0xd]),
            (true, &[6, 9, 0xb, 0xc], &[1, 2, 3, 4, 5, 7, 8, 0xa, 0xd]),
        ];
        for (shared, inline, over) in expect {
            let mut bounds = vec![0u32];
            let mut classes = vec![0u32];
            let mut put = |lo: u32, hi: u32, c: u32| {
                let c = if shared { c % 32 } else { c };
                bounds.push(lo);
                classes.push(c);
                if hi < u32::MAX {
                    bounds.push(hi + 1);
                    classes.push(0);
                }
            };
            let mut all = cases.to_vec();
            all.extend((0..40u32).map(|i| {
                (
                    0x000a_0000 + i * 100,
                    0x000a_0000 + i * 100 + i % 3,
                    i % 4 + 1,
                )
            }));
            all.sort_unstable();
            for (lo, hi, c) in all {
                put(lo, hi, c);
            }
            // The classifier merges equal neighbours; do the same so starts stay distinct.
            let mut b2: Vec<u32> = Vec::new();
            let mut c2: Vec<u32> = Vec::new();
            for (&b, &c) in bounds.iter().zip(&classes) {
                if b2.last() == Some(&b) {
                    *c2.last_mut().unwrap() = c;
                    if c2.len() > 1 && c2[c2.len() - 2] == c {
                        b2.pop();
                        c2.pop();
                    }
                } else if c2.last() != Some(&c) {
                    b2.push(b);
                    c2.push(c);
                }
            }
            let x = SlotIndex::build(&b2, &c2).unwrap();
            assert_eq!(x.shared, shared);
            for &h in inline {
                let s = x.slots[h as usize];
                assert_eq!(s & (OVERFLOW | GROUPED), 0, "bucket {h:#x} {shared}");
            }
            for &h in over {
                let s = x.slots[h as usize];
                assert_ne!(s & (OVERFLOW | GROUPED), 0, "bucket {h:#x} {shared}");
            }
            let mut probes: Vec<u32> = b2
                .iter()
                .flat_map(|&b| {
                    [0u32, 1, 2, 0xff, 0x100, 0x101]
                        .map(|d| b.wrapping_add(d))
                        .into_iter()
                        .chain([b.wrapping_sub(1)])
                })
                .collect();
            probes.extend((0..=0x000e_0000u32).step_by(61));
            probes.push(u32::MAX);
            for v in probes {
                x.prefetch(v);
                assert_eq!(x.class(v), linear(&b2, &c2, v), "{v:#x} {shared}");
            }
        }
        assert!(SlotIndex::build(&[0, 5], &[0, 70_000]).is_none());
    }

    /// A xorshift64 generator for the tests' random layouts.
    fn xorshift(x: &mut u64) -> u64 {
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        *x
    }

    /// Bounds and classes with a bucket of every run count from 1 to 40 (four of each: with
    /// and without a start at the bucket's first address and at its last, 0xffff), a bucket
    /// of 1,000 runs, and starts at address 0 and 0xffff_ffff; random starts, random classes
    /// (`< 32` when `shared`), no two neighbours alike. Also returns (bucket, run count).
    fn random_buckets(seed: u64, shared: bool) -> (Vec<u32>, Vec<u32>, Vec<(u32, usize)>) {
        let mut rng = seed;
        let mut bounds = vec![0u32];
        let mut buckets = Vec::new();
        let mut layout: Vec<(usize, bool, bool)> = (1..=40)
            .flat_map(|n| {
                [
                    (n, false, false),
                    (n, true, false),
                    (n, false, true),
                    (n, true, true),
                ]
            })
            .collect();
        layout.push((1000, false, true));
        for (j, &(n, at_first, at_last)) in layout.iter().enumerate() {
            // Buckets 3 apart (the gaps hold the previous bucket's last run), bucket 0xffff last.
            let h = if j + 1 == layout.len() {
                0xffff
            } else {
                1 + 3 * j as u32
            };
            let first = h << 16;
            // Starts inside the bucket after its first address; `n - 1` of them.
            let mut inner: Vec<u32> = Vec::new();
            if at_last && n > 1 {
                inner.push(0xffff);
            }
            while inner.len() < n - 1 {
                inner.push(1 + (xorshift(&mut rng) % 0xfffe) as u32);
                inner.sort_unstable();
                inner.dedup();
            }
            if at_first {
                bounds.push(first);
            }
            bounds.extend(inner.iter().map(|&lo| first | lo));
            buckets.push((h, n));
        }
        bounds.sort_unstable();
        bounds.dedup();
        let mut classes: Vec<u32> = Vec::with_capacity(bounds.len());
        for _ in 0..bounds.len() {
            let range = if shared { 32 } else { 65_536 };
            let mut c = (xorshift(&mut rng) % range) as u32;
            if classes.last() == Some(&c) {
                c = (c + 1) % range as u32;
            }
            classes.push(c);
        }
        (bounds, classes, buckets)
    }

    #[test]
    fn slot_index_groups_agree_with_a_binary_search() {
        // Buckets of 1 to 40 runs (a group of 16, padded or exactly full, and the overflow
        // list past it) and of 1,000 runs, in both slot layouts: every bucket edge and start
        // ±1, and random addresses in each bucket.
        for seed in [0x2545_f491_4f6c_dd1d_u64, 0x9e37_79b9_7f4a_7c15, 7] {
            for shared in [true, false] {
                let (bounds, classes, buckets) = random_buckets(seed, shared);
                let x = SlotIndex::build(&bounds, &classes).unwrap();
                assert_eq!(x.shared, shared);
                // Every run count of 2 or more has a bucket that is not inline (one run is):
                // grouped up to GROUP_RUNS runs, in the overflow list past it.
                for n in (2..=40).chain([1000]) {
                    let kind = if n <= GROUP_RUNS { GROUPED } else { OVERFLOW };
                    assert!(
                        buckets
                            .iter()
                            .any(|&(h, m)| m == n && x.slots[h as usize] & kind != 0),
                        "{n} runs {shared}"
                    );
                }
                let mut probes: Vec<u32> = bounds
                    .iter()
                    .flat_map(|&b| [b.wrapping_sub(1), b, b.wrapping_add(1)])
                    .collect();
                let mut rng = seed ^ 0x5555;
                for &(h, _) in &buckets {
                    let first = h << 16;
                    probes.extend([first.wrapping_sub(1), first, first + 1]);
                    probes.extend([first | 0xfffe, first | 0xffff]);
                    probes.extend((0..200).map(|_| first | (xorshift(&mut rng) & 0xffff) as u32));
                }
                for v in probes {
                    assert_eq!(
                        x.class(v),
                        linear(&bounds, &classes, v),
                        "{v:#x} {shared} {seed}"
                    );
                }
            }
        }
    }

    #[test]
    fn slot_index_keeps_most_of_a_blocklist_inline() {
        // 100,000 random prefixes, 90% /32 and 10% /24 (the replay benchmark's blocklist): one
        // class inside, another outside; ~1.5 prefixes per /16 bucket, so with three shared
        // exceptions per slot about 93% of buckets answer inline.
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let mut prefixes: Vec<(u32, u32)> = (0..100_000)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let a = x as u32;
                if i % 10 == 0 {
                    (a & !0xff, a | 0xff)
                } else {
                    (a, a)
                }
            })
            .collect();
        prefixes.sort_unstable();
        let (mut bounds, mut classes) = (vec![0u32], vec![0u32]);
        for (lo, hi) in prefixes {
            // Merge overlapping and adjacent prefixes into one run of class 1.
            if classes.len() > 1 && *classes.last().unwrap() == 0 && *bounds.last().unwrap() >= lo {
                let end = bounds.pop().unwrap();
                classes.pop();
                let hi = hi.max(end - 1);
                if hi < u32::MAX {
                    bounds.push(hi + 1);
                    classes.push(0);
                }
                continue;
            }
            if *bounds.last().unwrap() == lo {
                *classes.last_mut().unwrap() = 1;
            } else {
                bounds.push(lo);
                classes.push(1);
            }
            if hi < u32::MAX {
                bounds.push(hi + 1);
                classes.push(0);
            }
        }
        let idx = SlotIndex::build(&bounds, &classes).unwrap();
        let share = idx.inline_share();
        assert!(idx.shared && share > 0.9, "{share}");
        for &b in bounds.iter().step_by(5) {
            for v in [b.wrapping_sub(1), b, b.wrapping_add(1)] {
                assert_eq!(idx.class(v), linear(&bounds, &classes, v), "{v:#x}");
            }
        }
    }

    #[test]
    fn small_fields_are_searched_directly() {
        let bounds = [0u32, 0xc000_0200, 0xc000_0300, 0xffff_ffff];
        let classes = [0u32, 3, 0, 70_000];
        let x = V4Index::build(&bounds, &classes).unwrap();
        assert!(!x.small.is_empty() && !x.indexed());
        for v in [
            0,
            1,
            0xc000_01ff,
            0xc000_0200,
            0xc000_02ff,
            0xc000_0300,
            0xffff_fffe,
            u32::MAX,
        ] {
            assert_eq!(x.class(v), linear(&bounds, &classes, v), "{v:#x}");
        }
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(V4Index::build(&[], &[]).is_none());
        assert!(V4Index::build(&[1], &[0]).is_none());
        assert!(V4Index::build(&[0, 5, 5], &[0, 1, 2]).is_none());
        assert!(V4Index::build(&[0, 5], &[0]).is_none());
    }
}
