//! The fast first-match classifier: per-field elementary-interval lookup plus an aggregated bit
//! vector (ABV) intersection.
//!
//! Every field's value domain is cut into elementary intervals at the rules' endpoints; each
//! interval maps to a *class*, the bitset of rules whose interval list for that field covers it
//! (identical bitsets are stored once). A lookup finds the class of each field (a direct table
//! for small domains, a 16-bit index plus a short binary search for IPv4, a binary search for
//! IPv6), then ANDs the classes' one-bit-per-64-rules summaries to find candidate words, and
//! ANDs only those words. The lowest set bit is the first matching rule. With at most 512
//! rules every class's words are also kept as one zero-padded 64-byte line, and a lookup ANDs
//! whole lines instead ([`Classifier::rows`]; the rows can be scanned more than once).
//!
//! The same code serves compiled policies (five fields, residual checks per candidate) and
//! ClassBench rule sets (five fields). Rules are plain interval lists so the builder never
//! needs to know where they came from.

use std::collections::HashMap;

use crate::v4index::{SlotIndex, V4Index};

/// Most fields a classifier may have.
pub const MAX_FIELDS: usize = 8;

/// The value domain of one field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    /// Values `0..size`, looked up in a direct table (ports, protocol, ICMP type). `size` is at
    /// most [`MAX_DIRECT_SIZE`].
    Direct {
        /// Number of distinct values.
        size: u32,
    },
    /// 32-bit values (IPv4 addresses).
    V4,
    /// 128-bit values (IPv6 addresses).
    V6,
}

/// Largest direct-table domain.
// Why: a port field with one "absent" value is 65,537 entries; 2^17 leaves room and keeps the
// table at 512 KiB.
pub const MAX_DIRECT_SIZE: u32 = 1 << 17;

impl FieldKind {
    fn max_value(self) -> u128 {
        match self {
            FieldKind::Direct { size } => u128::from(size.clamp(1, MAX_DIRECT_SIZE)) - 1,
            FieldKind::V4 => u128::from(u32::MAX),
            FieldKind::V6 => u128::MAX,
        }
    }
}

/// One rule as the builder sees it: per field, inclusive `(lo, hi)` intervals that are OR-ed.
/// An empty list for a field means the rule matches nothing.
pub type RuleIntervals = Vec<Vec<(u128, u128)>>;

#[derive(Clone, Debug)]
enum FieldIndex {
    Direct {
        class_of: Vec<u32>,
    },
    /// Direct table with 16-bit class ids: half the cache footprint.
    Direct16 {
        class_of: Vec<u16>,
    },
    /// Direct table with 8-bit class ids (at most 256 classes, the usual case for ports).
    // Why: a port table is read at random ports (65,537 entries): 64 KiB instead of 128 KiB
    // leaves more of the L2 to the address indexes.
    Direct8 {
        class_of: Vec<u8>,
    },
    V4(V4Index),
    V6 {
        bounds: Vec<u128>,
        class_of: Vec<u32>,
    },
}

#[derive(Clone, Debug)]
struct Field {
    index: FieldIndex,
    /// Class bitsets, `stride` words each: `nsum` summary words (bit i: rule word i is
    /// non-zero) then `nwords` rule words. Summary first so one cache line serves both the
    /// summary and the first rule words.
    bits: Vec<u64>,
    /// With at most [`CAND_WORDS`] rule words: each class's rule words again, zero-padded to
    /// one aligned line, so a lookup ANDs whole lines (empty otherwise).
    lines: Vec<Line>,
    max_value: u128,
}

/// One class's rule words, zero-padded (see `Field::lines`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(align(64))]
struct Line([u64; CAND_WORDS]);

impl Field {
    /// See [`Classifier::prefetch_field`].
    #[inline]
    fn prefetch(&self, value: u128, stage: PrefetchStage) {
        let value = value.min(self.max_value);
        match (&self.index, stage) {
            (FieldIndex::V4(x), PrefetchStage::Index) => x.prefetch_index(value as u32),
            (FieldIndex::V4(x), PrefetchStage::Entries) => x.prefetch_entries(value as u32),
            (FieldIndex::Direct16 { class_of }, PrefetchStage::Index) => {
                if let Some(c) = class_of.get(value as usize) {
                    prefetch_any(c);
                }
            }
            (FieldIndex::Direct8 { class_of }, PrefetchStage::Index) => {
                if let Some(c) = class_of.get(value as usize) {
                    prefetch_any(c);
                }
            }
            (FieldIndex::Direct { class_of }, PrefetchStage::Index) => {
                if let Some(c) = class_of.get(value as usize) {
                    prefetch_any(c);
                }
            }
            _ => {}
        }
    }

    /// [`Field::class`] of a 32-bit value.
    #[inline(always)]
    fn class32(&self, value: u32) -> usize {
        let v = value as usize;
        match &self.index {
            FieldIndex::Direct8 { class_of } => usize::from(class_of[v.min(class_of.len() - 1)]),
            FieldIndex::Direct16 { class_of } => usize::from(class_of[v.min(class_of.len() - 1)]),
            FieldIndex::Direct { class_of } => class_of[v.min(class_of.len() - 1)] as usize,
            FieldIndex::V4(x) => x.class(value),
            FieldIndex::V6 { .. } => self.class(u128::from(value)),
        }
    }

    #[inline]
    fn class(&self, value: u128) -> usize {
        let value = value.min(self.max_value);
        match &self.index {
            FieldIndex::Direct { class_of } => class_of[value as usize] as usize,
            FieldIndex::Direct16 { class_of } => usize::from(class_of[value as usize]),
            FieldIndex::Direct8 { class_of } => usize::from(class_of[value as usize]),
            FieldIndex::V4(x) => x.class(value as u32),
            FieldIndex::V6 { bounds, class_of } => {
                let k = bounds.partition_point(|&b| b <= value);
                class_of[k.saturating_sub(1)] as usize
            }
        }
    }
}

/// The two dependent loads of an IPv4 field lookup, prefetched separately (see
/// [`Classifier::prefetch_v4`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefetchStage {
    /// The `/16` index entry.
    Index,
    /// The intervals the index entry points at (reads the index entry).
    Entries,
}

/// A built classifier. Immutable; lookups take `&self`.
#[derive(Clone, Debug)]
pub struct Classifier {
    fields: Vec<Field>,
    nrules: usize,
    nsum: usize,
    stride: usize,
}

/// A key's class rows in every field ([`Classifier::rows`]): scanning them again with another
/// filter costs no field lookup.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rows {
    /// Row offsets per field (when `width` is 0).
    starts: [u32; MAX_FIELDS],
    /// With at most [`CAND_WORDS`] rule words: the AND of every field's row (the candidate
    /// rules, zero past the last rule), computed once; scans then only walk its set bits.
    cand: Line,
    /// Words of `cand` in use (half or all of [`CAND_WORDS`]); 0: none, use `starts`.
    width: usize,
}

/// Rule words up to which [`Classifier::rows`] ANDs the rows eagerly.
// Why: a policy's hook has tens to a few hundred alternatives (≤ 8 words): ANDing all words
// costs fewer instructions than the summary walk, and a second scan (the SYN proxy step's
// and the rules') reuses it.
const CAND_WORDS: usize = 8;

/// The elementary intervals of several interval lists over one field, each named by a class
/// (an *atom*: the lists covering it are the same across it). Engines share one partition of
/// the IPv4 source field between their hooks' classifiers, whose field then indexes atoms.
#[derive(Clone, Debug)]
pub(crate) struct Partition {
    field: Field,
    /// The index of a large IPv4 partition (the field's own index is then unused).
    slots: Option<SlotIndex>,
    stride: usize,
    nsum: usize,
    nlists: usize,
    nbounds: usize,
}

impl Partition {
    /// Partition the domain of `kind` by `lists` (inclusive intervals, OR-ed per list).
    pub(crate) fn build(kind: FieldKind, lists: &[Vec<(u128, u128)>]) -> Self {
        let rules: Vec<RuleIntervals> = lists.iter().map(|l| vec![l.clone()]).collect();
        let nwords = lists.len().div_ceil(64).max(1);
        let nsum = nwords.div_ceil(64);
        let (mut field, nbounds, slots) = build_field(kind, 0, &rules, nwords, nsum, true);
        field.lines = Vec::new();
        Self {
            field,
            slots,
            stride: nwords + nsum,
            nsum,
            nlists: lists.len(),
            nbounds,
        }
    }

    /// Number of atoms.
    pub(crate) fn atoms(&self) -> usize {
        self.field.bits.len() / self.stride
    }

    /// Number of elementary intervals (≥ atoms).
    pub(crate) fn intervals(&self) -> usize {
        self.nbounds
    }

    /// The atom containing `value`.
    #[inline]
    pub(crate) fn atom(&self, value: u128) -> usize {
        match &self.slots {
            Some(x) => x.class(value.min(u128::from(u32::MAX)) as u32),
            None => self.field.class(value),
        }
    }

    /// [`Partition::atom`] of a 32-bit value.
    #[inline]
    pub(crate) fn atom32(&self, value: u32) -> usize {
        match &self.slots {
            Some(x) => x.class(value),
            None => self.field.class32(value),
        }
    }

    /// Per list, the atoms it covers, as intervals of atom numbers.
    pub(crate) fn lists_as_atoms(&self) -> Vec<Vec<(u128, u128)>> {
        let mut out = vec![Vec::new(); self.nlists];
        for (a, row) in self.field.bits.chunks_exact(self.stride).enumerate() {
            for (w, &word) in row[self.nsum..].iter().enumerate() {
                let mut word = word;
                while word != 0 {
                    let j = w * 64 + word.trailing_zeros() as usize;
                    word &= word - 1;
                    out[j].push((a as u128, a as u128));
                }
            }
        }
        out
    }

    /// See [`Classifier::prefetch_field`].
    #[inline]
    pub(crate) fn prefetch(&self, value: u128, stage: PrefetchStage) {
        match &self.slots {
            Some(x) if stage == PrefetchStage::Index => {
                x.prefetch(value.min(u128::from(u32::MAX)) as u32);
            }
            Some(_) => {}
            None => self.field.prefetch(value, stage),
        }
    }

    /// Approximate heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        field_bytes(&self.field) + self.slots.as_ref().map_or(0, SlotIndex::memory_bytes)
    }
}

/// Approximate heap bytes of a field.
fn field_bytes(f: &Field) -> usize {
    let idx = match &f.index {
        FieldIndex::Direct { class_of } => class_of.len() * 4,
        FieldIndex::Direct16 { class_of } => class_of.len() * 2,
        FieldIndex::Direct8 { class_of } => class_of.len(),
        FieldIndex::V4(x) => x.memory_bytes(),
        FieldIndex::V6 { bounds, class_of } => bounds.len() * 16 + class_of.len() * 4,
    };
    idx + f.bits.len() * 8 + f.lines.len() * std::mem::size_of::<Line>()
}

/// Errors building a classifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// More fields than [`MAX_FIELDS`], or none.
    #[error("a classifier needs 1 to {MAX_FIELDS} fields, got {0}")]
    FieldCount(usize),
    /// A rule does not have one interval list per field.
    #[error("rule {rule} has {got} field lists, expected {expected}")]
    RuleShape {
        /// Rule index.
        rule: usize,
        /// Lists given.
        got: usize,
        /// Fields of the classifier.
        expected: usize,
    },
    /// A direct field's size is 0 or above [`MAX_DIRECT_SIZE`].
    #[error("direct field size {0} out of range")]
    DirectSize(u32),
}

impl Classifier {
    /// Build from per-field kinds and rules in priority order (index 0 wins).
    pub fn build(kinds: &[FieldKind], rules: &[RuleIntervals]) -> Result<Self, BuildError> {
        if kinds.is_empty() || kinds.len() > MAX_FIELDS {
            return Err(BuildError::FieldCount(kinds.len()));
        }
        for kind in kinds {
            if let FieldKind::Direct { size } = *kind {
                if size == 0 || size > MAX_DIRECT_SIZE {
                    return Err(BuildError::DirectSize(size));
                }
            }
        }
        for (i, r) in rules.iter().enumerate() {
            if r.len() != kinds.len() {
                return Err(BuildError::RuleShape {
                    rule: i,
                    got: r.len(),
                    expected: kinds.len(),
                });
            }
        }
        let nrules = rules.len();
        let nwords = nrules.div_ceil(64).max(1);
        let nsum = nwords.div_ceil(64);
        let stride = nwords + nsum;
        let fields = kinds
            .iter()
            .enumerate()
            .map(|(f, &kind)| build_field(kind, f, rules, nwords, nsum, false).0)
            .collect();
        Ok(Self {
            fields,
            nrules,
            nsum,
            stride,
        })
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.nrules
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.nrules == 0
    }

    /// Number of fields.
    pub fn field_count(&self) -> usize {
        self.fields.len()
    }

    /// Number of classes of field `f` (0 for a field it does not have).
    pub(crate) fn class_count(&self, f: usize) -> usize {
        self.fields.get(f).map_or(0, |x| x.bits.len() / self.stride)
    }

    /// Rule words of class `c` of field `f`: bit `r` set when rule `r` covers the class.
    pub(crate) fn class_words(&self, f: usize, c: usize) -> &[u64] {
        &self.fields[f].bits[c * self.stride + self.nsum..(c + 1) * self.stride]
    }

    /// Field `f`'s class table when it is a direct table of 8-bit classes.
    pub(crate) fn table8(&self, f: usize) -> Option<&[u8]> {
        match &self.fields.get(f)?.index {
            FieldIndex::Direct8 { class_of } => Some(class_of),
            _ => None,
        }
    }

    /// Field `f`'s `(start, class)` intervals when it is a small IPv4 field.
    pub(crate) fn small_v4(&self, f: usize) -> Option<&[(u32, u32)]> {
        match &self.fields.get(f)?.index {
            FieldIndex::V4(x) => x.small_intervals(),
            _ => None,
        }
    }

    /// Field `f`'s `(start, class)` intervals when it is an IPv6 field of at most `max`.
    pub(crate) fn small_v6(&self, f: usize, max: usize) -> Option<Vec<(u128, u32)>> {
        match &self.fields.get(f)?.index {
            FieldIndex::V6 { bounds, class_of } if bounds.len() <= max => Some(
                bounds
                    .iter()
                    .copied()
                    .zip(class_of.iter().copied())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// Rule words per class ([`Classifier::class_words`]'s length).
    pub(crate) fn rule_words(&self) -> usize {
        self.stride - self.nsum
    }

    /// The class of every field for a 32-bit key (an IPv4 packet's), as
    /// [`Classifier::fill_rows32`] looks them up; `None` unless `N` is the field count.
    #[inline(always)]
    pub(crate) fn classes32<const N: usize>(&self, key: &[u32; N]) -> Option<[usize; N]> {
        let fields: &[Field; N] = self.fields.as_slice().try_into().ok()?;
        Some(std::array::from_fn(|i| fields[i].class32(key[i])))
    }

    /// [`Classifier::classes32`] for a 128-bit key.
    #[inline]
    pub(crate) fn classes<const N: usize>(&self, key: &[u128; N]) -> Option<[usize; N]> {
        let fields: &[Field; N] = self.fields.as_slice().try_into().ok()?;
        Some(std::array::from_fn(|i| fields[i].class(key[i])))
    }

    /// Approximate heap bytes used by the lookup structures.
    pub fn memory_bytes(&self) -> usize {
        self.fields.iter().map(field_bytes).sum()
    }

    /// The first rule matching `key` (one value per field), if any.
    #[inline]
    pub fn first_match(&self, key: &[u128]) -> Option<u32> {
        self.first_match_where(key, |_| true)
    }

    /// First matches for a batch of keys (`keys.len() / fields` keys laid out back to back),
    /// written to `out`. Looking all classes up before scanning lets the memory accesses of
    /// different keys overlap.
    pub fn first_match_batch(&self, keys: &[u128], out: &mut [Option<u32>]) {
        const CHUNK: usize = 16;
        let nf = self.fields.len();
        if nf == 0 {
            return;
        }
        let n = (keys.len() / nf).min(out.len());
        let mut starts = [[0usize; MAX_FIELDS]; CHUNK];
        let mut base = 0;
        while base < n {
            let m = CHUNK.min(n - base);
            for (j, st) in starts.iter_mut().enumerate().take(m) {
                let key = &keys[(base + j) * nf..(base + j + 1) * nf];
                for (f, field) in self.fields.iter().enumerate() {
                    st[f] = field.class(key[f]) * self.stride;
                }
            }
            // Touch every row's summary line before scanning so the misses overlap.
            for st in starts.iter().take(m) {
                for (f, field) in self.fields.iter().enumerate() {
                    prefetch(&field.bits[st[f]]);
                }
            }
            for (j, st) in starts.iter().enumerate().take(m) {
                out[base + j] = self.scan(st, |_| true);
            }
            base += m;
        }
    }

    #[inline]
    fn scan(
        &self,
        starts: &[usize; MAX_FIELDS],
        mut accept: impl FnMut(u32) -> bool,
    ) -> Option<u32> {
        if self.nrules == 0 {
            return None;
        }
        let nf = self.fields.len();
        let mut rows: [&[u64]; MAX_FIELDS] = [&[]; MAX_FIELDS];
        for (i, field) in self.fields.iter().enumerate() {
            rows[i] = &field.bits[starts[i]..starts[i] + self.stride];
        }
        let rows = &rows[..nf];
        for s in 0..self.nsum {
            let mut summary = !0u64;
            for row in rows {
                summary &= row[s];
            }
            while summary != 0 {
                let w = s * 64 + summary.trailing_zeros() as usize;
                summary &= summary - 1;
                // The first two fields are the most selective in practice (addresses): test
                // them alone first and skip the other rows' loads when they already exclude.
                let i = self.nsum + w;
                let mut word = rows[0][i];
                if let Some(r1) = rows.get(1) {
                    word &= r1[i];
                }
                if word == 0 {
                    continue;
                }
                for row in rows.iter().skip(2) {
                    word &= row[i];
                }
                if let Some(rule) = first_accepted(w, word, &mut accept) {
                    return Some(rule);
                }
            }
        }
        None
    }

    /// Prefetch hint for a later lookup whose field `field` has `value`: for an IPv4 field
    /// the line of `stage` (issue [`PrefetchStage::Index`] some packets ahead and
    /// [`PrefetchStage::Entries`] a few packets later), for a direct table its entry (at the
    /// `Index` stage); nothing for IPv6 fields or out-of-range fields. Never changes a result.
    #[inline]
    pub fn prefetch_field(&self, field: usize, value: u128, stage: PrefetchStage) {
        if let Some(f) = self.fields.get(field) {
            f.prefetch(value, stage);
        }
    }

    /// The first rule matching `key` for which `accept` returns true. `accept` is called for
    /// matching rules in priority order until it accepts one.
    #[inline]
    pub fn first_match_where(&self, key: &[u128], accept: impl FnMut(u32) -> bool) -> Option<u32> {
        let rows = self.rows(key)?;
        self.first_match_in(&rows, accept)
    }

    /// The per-field class rows of `key` (the field lookups of a match), for one or more
    /// [`Classifier::first_match_in`] scans. `None` when there are no rules or `key` does not
    /// have one value per field (no rule matches then).
    #[inline]
    pub fn rows(&self, key: &[u128]) -> Option<Rows> {
        let mut rows = Rows::default();
        self.fill_rows(key, &mut rows).then_some(rows)
    }

    /// [`Classifier::rows`] into `rows`, in place; false (and `rows` unspecified) where that
    /// gives `None`.
    #[inline]
    pub fn fill_rows(&self, key: &[u128], rows: &mut Rows) -> bool {
        if self.nrules == 0 || key.len() != self.fields.len() {
            return false;
        }
        if self.fill_lines(key, rows) {
            return true;
        }
        rows.width = 0;
        for (i, field) in self.fields.iter().enumerate() {
            // Class rows are < 2^32 words: a field has fewer classes than elementary
            // intervals, and those fewer than 2^32 / stride in any buildable classifier.
            rows.starts[i] = (field.class(key[i]) * self.stride) as u32;
        }
        true
    }

    /// [`Classifier::fill_rows`] for a key whose values all fit 32 bits (an IPv4 packet's):
    /// the same rows, with 32-bit arithmetic and the field lookups inlined.
    #[inline]
    pub fn fill_rows32(&self, key: &[u32], rows: &mut Rows) -> bool {
        if self.nrules == 0 || key.len() != self.fields.len() {
            return false;
        }
        if self.fill_lines(key, rows) {
            return true;
        }
        let key: [u128; MAX_FIELDS] = std::array::from_fn(|i| key.get(i).map_or(0, |&v| v.into()));
        self.fill_rows(&key[..self.fields.len()], rows)
    }

    /// [`Classifier::first_match_where`] on rows looked up before (by this classifier).
    #[inline]
    pub fn first_match_in(&self, rows: &Rows, mut accept: impl FnMut(u32) -> bool) -> Option<u32> {
        if rows.width == 0 {
            return self.scan(&rows.starts.map(|s| s as usize), accept);
        }
        for (w, &word) in rows.cand.0.iter().enumerate().take(rows.width) {
            if let Some(rule) = first_accepted(w, word, &mut accept) {
                return Some(rule);
            }
        }
        None
    }
}

/// A key value: 128 bits in general, 32 for an IPv4 packet's key.
trait KeyValue: Copy {
    fn class_in(self, field: &Field) -> usize;
}

impl KeyValue for u128 {
    #[inline(always)]
    fn class_in(self, field: &Field) -> usize {
        field.class(self)
    }
}

impl KeyValue for u32 {
    #[inline(always)]
    fn class_in(self, field: &Field) -> usize {
        field.class32(self)
    }
}

/// ANDs the first `N` words of every field's class line for `key` into `cand` (the rest
/// zeroed). `N` is half or all of [`CAND_WORDS`], so the loop has a fixed length.
impl Classifier {
    /// The rows of a classifier with ≤ [`CAND_WORDS`] rule words, by ANDing the fields' whole
    /// lines into `rows.cand`; false (nothing written) for a wider one.
    #[inline(always)]
    fn fill_lines<K: KeyValue>(&self, key: &[K], rows: &mut Rows) -> bool {
        let nwords = self.stride - self.nsum;
        if nwords <= CAND_WORDS / 2 {
            and_lines::<{ CAND_WORDS / 2 }, _>(&self.fields, key, &mut rows.cand);
            rows.width = CAND_WORDS / 2;
            return true;
        }
        if nwords <= CAND_WORDS {
            and_lines::<CAND_WORDS, _>(&self.fields, key, &mut rows.cand);
            rows.width = CAND_WORDS;
            return true;
        }
        false
    }
}

/// The first rule, in order, among the set bits of candidate word `w` that `accept` takes.
#[inline(always)]
fn first_accepted(w: usize, mut word: u64, accept: &mut impl FnMut(u32) -> bool) -> Option<u32> {
    while word != 0 {
        let rule = (w * 64 + word.trailing_zeros() as usize) as u32;
        word &= word - 1;
        if accept(rule) {
            return Some(rule);
        }
    }
    None
}

#[inline(always)]
fn and_lines<const N: usize, K: KeyValue>(fields: &[Field], key: &[K], cand: &mut Line) {
    let mut acc = [!0u64; N];
    for (field, &v) in fields.iter().zip(key) {
        let line = &field.lines[v.class_in(field)];
        for (a, &b) in acc.iter_mut().zip(&line.0[..N]) {
            *a &= b;
        }
    }
    cand.0 = [0; CAND_WORDS];
    cand.0[..N].copy_from_slice(&acc);
}

#[inline(always)]
fn prefetch(p: &u64) {
    prefetch_any(p);
}

#[inline(always)]
pub(crate) fn prefetch_any<T>(p: &T) {
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

fn normalise(list: &[(u128, u128)], max: u128) -> Vec<(u128, u128)> {
    let mut v: Vec<(u128, u128)> = list
        .iter()
        .filter(|(lo, hi)| lo <= hi && *lo <= max)
        .map(|&(lo, hi)| (lo, hi.min(max)))
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u128, u128)> = Vec::with_capacity(v.len());
    for (lo, hi) in v {
        if let Some(last) = out.last_mut() {
            if last.1 == u128::MAX || lo <= last.1 + 1 {
                last.1 = last.1.max(hi);
                continue;
            }
        }
        out.push((lo, hi));
    }
    out
}

/// Partitions of at least this many intervals are indexed by [`SlotIndex`].
// Why: its 512 KiB of slots pay for a large field looked up at random addresses (a blocklist
// in replay); a smaller field's `V4Index` is smaller and stays in cache.
const SLOTS_FROM: usize = 65_536;

/// Build field `f` of `rules`; with `want_slots`, an IPv4 field of at least [`SLOTS_FROM`]
/// intervals is indexed by a [`SlotIndex`] instead (returned; the field's own index is then
/// a placeholder that must not be used).
fn build_field(
    kind: FieldKind,
    f: usize,
    rules: &[RuleIntervals],
    nwords: usize,
    nsum: usize,
    want_slots: bool,
) -> (Field, usize, Option<SlotIndex>) {
    let max = kind.max_value();
    // Events: (position, rule, add?) — a rule enters its interval at `lo` and leaves at `hi+1`.
    let mut events: Vec<(u128, u32, bool)> = Vec::new();
    for (r, rule) in rules.iter().enumerate() {
        for (lo, hi) in normalise(&rule[f], max) {
            events.push((lo, r as u32, true));
            if hi < max {
                events.push((hi + 1, r as u32, false));
            }
        }
    }
    events.sort_unstable_by_key(|e| e.0);
    let stride = nwords + nsum;
    let mut bits: Vec<u64> = Vec::new();
    let mut dedup: HashMap<Vec<u64>, u32> = HashMap::new();
    let mut cur = vec![0u64; nwords];
    let mut bounds: Vec<u128> = Vec::new();
    let mut classes: Vec<u32> = Vec::new();
    let mut start = 0u128;
    let mut i = 0;
    loop {
        while i < events.len() && events[i].0 == start {
            let (_, r, add) = events[i];
            let (w, b) = ((r / 64) as usize, r % 64);
            if add {
                cur[w] |= 1 << b;
            } else {
                cur[w] &= !(1 << b);
            }
            i += 1;
        }
        let class = match dedup.get(&cur) {
            Some(&c) => c,
            None => {
                let c = dedup.len() as u32;
                let mut sum = vec![0u64; nsum];
                for (w, word) in cur.iter().enumerate() {
                    if *word != 0 {
                        sum[w / 64] |= 1 << (w % 64);
                    }
                }
                bits.extend_from_slice(&sum);
                bits.extend_from_slice(&cur);
                dedup.insert(cur.clone(), c);
                c
            }
        };
        if classes.last() != Some(&class) {
            bounds.push(start);
            classes.push(class);
        }
        if i == events.len() {
            break;
        }
        start = events[i].0;
    }
    debug_assert_eq!(bits.len(), dedup.len() * stride);
    let nbounds = bounds.len();
    let slots = (want_slots && kind == FieldKind::V4 && nbounds >= SLOTS_FROM)
        .then(|| {
            let b32: Vec<u32> = bounds.iter().map(|&b| b as u32).collect();
            SlotIndex::build(&b32, &classes)
        })
        .flatten();
    let index = match kind {
        // The slots answer every lookup; keep no second index.
        FieldKind::V4 if slots.is_some() => FieldIndex::Direct8 { class_of: vec![0] },
        FieldKind::Direct { size } => {
            let mut class_of = vec![0u32; size as usize];
            for (k, &b) in bounds.iter().enumerate() {
                let end = bounds.get(k + 1).map_or(size as usize, |&n| n as usize);
                for slot in &mut class_of[b as usize..end] {
                    *slot = classes[k];
                }
            }
            if dedup.len() <= usize::from(u8::MAX) + 1 {
                FieldIndex::Direct8 {
                    class_of: class_of.iter().map(|&c| c as u8).collect(),
                }
            } else if dedup.len() <= usize::from(u16::MAX) + 1 {
                FieldIndex::Direct16 {
                    class_of: class_of.iter().map(|&c| c as u16).collect(),
                }
            } else {
                FieldIndex::Direct { class_of }
            }
        }
        FieldKind::V4 => {
            let b32: Vec<u32> = bounds.iter().map(|&b| b as u32).collect();
            match V4Index::build(&b32, &classes) {
                Some(x) => FieldIndex::V4(x),
                // Unreachable for a V4 field (starts are distinct, the first 0); a binary
                // search over the same intervals is always correct.
                None => FieldIndex::V6 {
                    bounds,
                    class_of: classes,
                },
            }
        }
        FieldKind::V6 => FieldIndex::V6 {
            bounds,
            class_of: classes,
        },
    };
    let lines = if nwords <= CAND_WORDS {
        bits.chunks_exact(stride)
            .map(|row| {
                let mut line = Line([0; CAND_WORDS]);
                line.0[..nwords].copy_from_slice(&row[nsum..]);
                line
            })
            .collect()
    } else {
        Vec::new()
    };
    (
        Field {
            index,
            bits,
            lines,
            max_value: max,
        },
        nbounds,
        slots,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn linear(rules: &[RuleIntervals], key: &[u128]) -> Option<u32> {
        rules
            .iter()
            .position(|r| {
                r.iter()
                    .zip(key)
                    .all(|(list, v)| list.iter().any(|(lo, hi)| lo <= v && v <= hi))
            })
            .map(|i| i as u32)
    }

    #[test]
    fn matches_linear_on_small_example() {
        let kinds = [
            FieldKind::V4,
            FieldKind::Direct { size: 65537 },
            FieldKind::V6,
        ];
        let rules: Vec<RuleIntervals> = vec![
            vec![vec![(10, 20)], vec![(80, 80)], vec![(0, u128::MAX)]],
            vec![
                vec![(0, u128::from(u32::MAX))],
                vec![(0, 65535)],
                vec![(5, 5)],
            ],
            vec![vec![(15, 15), (30, 40)], vec![(0, 65536)], vec![(0, 9)]],
            vec![vec![], vec![(0, 65536)], vec![(0, u128::MAX)]],
        ];
        let c = Classifier::build(&kinds, &rules).unwrap();
        for a in [0u128, 10, 15, 20, 21, 30, 35, 41, u128::from(u32::MAX)] {
            for p in [0u128, 80, 81, 65535, 65536] {
                for z in [0u128, 5, 9, 10, u128::MAX] {
                    let key = [a, p, z];
                    assert_eq!(c.first_match(&key), linear(&rules, &key), "{key:?}");
                }
            }
        }
    }

    #[test]
    fn direct_tables_narrow_at_256_classes() {
        // n one-value rules give n + 1 classes (the values no rule covers share one): 256
        // classes fit the 8-bit table, 257 need the 16-bit one; both must answer alike.
        for (n, eight) in [(255u128, true), (256, false)] {
            let kinds = [FieldKind::Direct { size: 400 }];
            let rules: Vec<RuleIntervals> = (0..n).map(|i| vec![vec![(i, i)]]).collect();
            let c = Classifier::build(&kinds, &rules).unwrap();
            assert_eq!(
                matches!(c.fields[0].index, FieldIndex::Direct8 { .. }),
                eight
            );
            for v in 0..410u128 {
                assert_eq!(c.first_match(&[v]), linear(&rules, &[v]), "{n} {v}");
            }
        }
    }

    #[test]
    fn many_rules_cross_word_boundaries() {
        let kinds = [FieldKind::Direct { size: 300 }];
        let rules: Vec<RuleIntervals> = (0..5000u128)
            .map(|i| vec![vec![(i % 300, i % 300)]])
            .collect();
        let c = Classifier::build(&kinds, &rules).unwrap();
        for v in 0..300u128 {
            assert_eq!(c.first_match(&[v]), linear(&rules, &[v]));
        }
        // With a filter, the next match of the same value is 300 rules later.
        assert_eq!(c.first_match_where(&[7], |r| r > 7), Some(307));
    }

    #[test]
    fn dense_ipv4_buckets_use_the_second_level() {
        // 3000 /32s inside one /16 plus ranges crossing /24 and /16 edges.
        let kinds = [FieldKind::V4];
        let base = 0xc000_0000u128;
        let mut rules: Vec<RuleIntervals> = (0..3000u128)
            .map(|i| vec![vec![(base + i * 17, base + i * 17)]])
            .collect();
        rules.push(vec![vec![(base + 0xff, base + 0x1_0100)]]);
        rules.push(vec![vec![(base - 5, base + 3)]]);
        let c = Classifier::build(&kinds, &rules).unwrap();
        assert!(matches!(&c.fields[0].index, FieldIndex::V4(x) if x.has_second_level()));
        for v in (base - 10..base + 0x1_0300).step_by(3) {
            assert_eq!(c.first_match(&[v]), linear(&rules, &[v]), "{v:#x}");
        }
    }

    #[test]
    fn eager_candidates_agree_at_the_word_limits() {
        // Up to half of CAND_WORDS words of rules use the short candidate AND, up to
        // CAND_WORDS the long one, beyond that the summary walk: all must find the same first
        // match, also when `accept` skips rules, and for rows scanned twice.
        let kinds = [FieldKind::Direct { size: 64 }, FieldKind::V4];
        let half = 64 * CAND_WORDS / 2;
        let full = 64 * CAND_WORDS;
        for n in [half - 1, half, half + 1, full - 1, full, full + 1] {
            let rules: Vec<RuleIntervals> = (0..n as u128)
                .map(|i| {
                    vec![
                        vec![(i % 61, i % 61 + i % 3)],
                        vec![(i * 7919 % 1000, i * 7919 % 1000 + 50 + i % 200)],
                    ]
                })
                .collect();
            let c = Classifier::build(&kinds, &rules).unwrap();
            let width = if n <= half {
                CAND_WORDS / 2
            } else if n <= full {
                CAND_WORDS
            } else {
                0
            };
            for v in 0..64u128 {
                for a in (0..1300u128).step_by(7) {
                    let key = [v, a];
                    let want = linear(&rules, &key);
                    assert_eq!(c.first_match(&key), want, "{n} {key:?}");
                    let rows = c.rows(&key).unwrap();
                    assert_eq!(rows.width, width);
                    assert_eq!(c.first_match_in(&rows, |_| true), want, "{n} {key:?}");
                    // The 32-bit key path gives the same rows.
                    let mut rows32 = Rows::default();
                    assert!(c.fill_rows32(&[v as u32, a as u32], &mut rows32));
                    assert_eq!(rows32.width, width);
                    assert_eq!(c.first_match_in(&rows32, |_| true), want, "{n} {key:?}");
                    // Skipping the first match finds the next one, in every layout.
                    let next = rules
                        .iter()
                        .enumerate()
                        .skip(want.map_or(n, |w| w as usize + 1))
                        .find(|(_, r)| linear(std::slice::from_ref(r), &key).is_some())
                        .map(|(i, _)| i as u32);
                    assert_eq!(
                        c.first_match_in(&rows, |r| Some(r) != want),
                        next,
                        "{n} {key:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn partition_atoms_cover_exactly_their_lists() {
        // Lists over an IPv4 field with shared, nested and adjacent intervals (and an empty
        // list): a value's atom must be among a list's atoms exactly when the list covers it.
        let mut lists: Vec<Vec<(u128, u128)>> = vec![
            vec![(10, 20), (40, 40)],
            vec![(15, 15), (41, 41), (0xffff_0000, u128::from(u32::MAX))],
            vec![],
            vec![(0, u128::from(u32::MAX))],
        ];
        let mut x = 0x9e37_79b9u128;
        for _ in 0..5000 {
            x = (x * 6_364_136_223_846_793_005 + 1) % (1 << 32);
            lists[(x % 3) as usize].push((x, x + (x >> 30)));
        }
        lists.push(lists[0].clone());
        let p = Partition::build(FieldKind::V4, &lists);
        assert!(p.intervals() > SMALL_PROBE && p.atoms() <= p.intervals());
        let atoms = p.lists_as_atoms();
        let mut probes: Vec<u128> = lists
            .iter()
            .flatten()
            .flat_map(|&(lo, hi)| [lo.saturating_sub(1), lo, hi, hi + 1])
            .filter(|&v| v <= u128::from(u32::MAX))
            .collect();
        probes.extend([0, 9, 21, 39, 42, u128::from(u32::MAX)]);
        for v in probes {
            let a = p.atom(v) as u128;
            for (j, list) in lists.iter().enumerate() {
                let covers = list.iter().any(|&(lo, hi)| lo <= v && v <= hi);
                let has = atoms[j].iter().any(|&(lo, hi)| lo <= a && a <= hi);
                assert_eq!(covers, has, "list {j} value {v:#x} atom {a}");
            }
        }
    }

    /// More intervals than a small field holds (the partition gets the full index).
    const SMALL_PROBE: usize = 64;

    #[test]
    fn rejects_bad_shapes() {
        assert_eq!(
            Classifier::build(&[], &[]).unwrap_err(),
            BuildError::FieldCount(0)
        );
        let e = Classifier::build(&[FieldKind::V4], &[vec![]]).unwrap_err();
        assert!(matches!(e, BuildError::RuleShape { .. }));
        let e = Classifier::build(&[FieldKind::Direct { size: 0 }], &[]).unwrap_err();
        assert_eq!(e, BuildError::DirectSize(0));
    }
}
