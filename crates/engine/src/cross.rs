//! Cross-product tables over the fast matcher's field classes (RFC, Recursive Flow
//! Classification, Gupta & McKeown 1999): one hook's and family's answer for a packet in a
//! handful of small table lookups instead of a bit-vector scan with per-candidate checks.
//!
//! The [`Classifier`] already maps every field value to a *class* (the set of alternatives
//! whose interval list covers it). Three more dimensions stand in for the checks the
//! classifier leaves to each candidate: the input and output interface (an interface name's
//! class is the set of interface patterns it matches) and the conntrack state. Phases of 2-D
//! tables then combine pairs of class ids into ids of the deduplicated intersections:
//!
//! ```text
//! (protocol×ICMP, dport) → a      (a, sport) → b      (src, dst) → c
//! (iif, oif, ct state) → e        (c, e) → f          (f, b) → x
//! ```
//!
//! `x` names the set of alternatives whose every indexed field and static per-candidate check
//! (interfaces, ct state) passes; its first member decides, and the caller precomputes per `x`
//! the decision and flags for what still depends on the packet's dynamic state (owner, limits,
//! the SYN proxy). Tables are built eagerly within a byte budget; a hook whose product would
//! exceed it gets none (the caller's bit-vector path answers it).

use std::collections::HashMap;

use rampart_ir::CtState;

use crate::classifier::Classifier;

/// Conntrack states, the third context dimension (indexed by [`CtState::index`]).
pub(crate) const CT_STATES: usize = CtState::ALL.len();

/// The static checks of one alternative that the classifier does not index.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SubChecks {
    /// Input interface patterns as a mask over the engine's distinct patterns (`None`: any,
    /// also no interface).
    pub(crate) iif: Option<u64>,
    /// Output interface, likewise.
    pub(crate) oif: Option<u64>,
    /// Bit `s.index()` set when the alternative's rule accepts conntrack state `s`.
    pub(crate) ct: u8,
}

/// Class bitsets of one dimension, `words` words each, back to back.
struct Sets {
    words: usize,
    bits: Vec<u64>,
}

impl Sets {
    fn len(&self) -> usize {
        self.bits.len() / self.words.max(1)
    }

    fn get(&self, i: usize) -> &[u64] {
        &self.bits[i * self.words..(i + 1) * self.words]
    }
}

/// Counts table bytes against the budget; `None` once it is exceeded.
struct Budget {
    left: usize,
}

impl Budget {
    fn take(&mut self, bytes: usize) -> Option<()> {
        self.left = self.left.checked_sub(bytes)?;
        Some(())
    }
}

/// Pairwise intersections of `a`'s and `b`'s sets: table `[i * b.len() + j]` → id of the
/// deduplicated `a[i] & b[j]`, and the sets by id. `None` past the budget or 65,536 ids.
fn combine(a: &Sets, b: &Sets, budget: &mut Budget) -> Option<(Vec<u16>, Sets)> {
    let words = a.words;
    let pairs = a.len().checked_mul(b.len())?;
    budget.take(pairs.checked_mul(2)?)?;
    let mut table = Vec::with_capacity(pairs);
    let mut ids: HashMap<Vec<u64>, u16> = HashMap::new();
    let mut out = Sets {
        words,
        bits: Vec::new(),
    };
    let mut and = vec![0u64; words];
    for i in 0..a.len() {
        let x = a.get(i);
        for j in 0..b.len() {
            for ((o, &p), &q) in and.iter_mut().zip(x).zip(b.get(j)) {
                *o = p & q;
            }
            let id = match ids.get(and.as_slice()) {
                Some(&id) => id,
                None => {
                    let id = u16::try_from(ids.len()).ok()?;
                    budget.take(words * 8)?;
                    ids.insert(and.clone(), id);
                    out.bits.extend_from_slice(&and);
                    id
                }
            };
            table.push(id);
        }
    }
    Some((table, out))
}

/// One hook's and family's tables; `C` is the caller's per-`x` answer.
#[derive(Clone, Debug)]
pub(crate) struct HookTables<C> {
    /// Classes of the classifier's five fields.
    n: [usize; 5],
    /// Interface classes (both interface dimensions).
    ni: usize,
    pd: Vec<u16>,
    pds: Vec<u16>,
    nb: usize,
    sd: Vec<u16>,
    ctx: Vec<u16>,
    ne: usize,
    ce: Vec<u16>,
    fb: Vec<u16>,
    cells: Vec<C>,
}

impl<C> HookTables<C> {
    /// Build the tables for classifier `c` (five fields: src, dst, protocol×ICMP, sport,
    /// dport) whose alternative `s` has the residual checks `subs[s]`. `iface_masks[k]` is
    /// interface class `k`'s pattern mask (`None`: no interface). `cell` makes the answer for
    /// a final set (bit `s`: alternative `s` passes every static check but the owner).
    pub(crate) fn build(
        c: &Classifier,
        subs: &[SubChecks],
        iface_masks: &[Option<u64>],
        max_bytes: &mut usize,
        mut cell: impl FnMut(&[u64]) -> C,
    ) -> Option<Self> {
        if c.field_count() != 5 || subs.len() != c.len() || iface_masks.is_empty() {
            return None;
        }
        let words = c.rule_words();
        let mut budget = Budget { left: *max_bytes };
        let field = |f: usize| Sets {
            words,
            bits: (0..c.class_count(f))
                .flat_map(|k| c.class_words(f, k).iter().copied())
                .collect(),
        };
        let fields: [Sets; 5] = std::array::from_fn(field);
        let n: [usize; 5] = std::array::from_fn(|f| fields[f].len());
        // The context: (iif class, oif class, ct state) → the set of alternatives passing.
        let passes = |mask: Option<u64>, class: Option<u64>| match (mask, class) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(m), Some(k)) => m & k != 0,
        };
        let ni = iface_masks.len();
        if ni * ni * CT_STATES > usize::from(u16::MAX) {
            return None;
        }
        let mut ctx_sets = Sets {
            words,
            bits: Vec::with_capacity(ni * ni * CT_STATES * words),
        };
        for &ii in iface_masks {
            for &oi in iface_masks {
                for ct in 0..CT_STATES {
                    let mut row = vec![0u64; words];
                    for (s, sub) in subs.iter().enumerate() {
                        if passes(sub.iif, ii) && passes(sub.oif, oi) && sub.ct & (1 << ct) != 0 {
                            row[s / 64] |= 1 << (s % 64);
                        }
                    }
                    ctx_sets.bits.extend_from_slice(&row);
                }
            }
        }
        // Dedup the contexts through a 1-wide "all" set.
        let all = Sets {
            words,
            bits: vec![!0u64; words],
        };
        let (ctx, e_sets) = combine(&all, &ctx_sets, &mut budget)?;
        let (pd, a_sets) = combine(&fields[2], &fields[4], &mut budget)?;
        let (pds, b_sets) = combine(&a_sets, &fields[3], &mut budget)?;
        let (sd, c_sets) = combine(&fields[0], &fields[1], &mut budget)?;
        let (ce, f_sets) = combine(&c_sets, &e_sets, &mut budget)?;
        let (fb, x_sets) = combine(&f_sets, &b_sets, &mut budget)?;
        budget.take(x_sets.len() * std::mem::size_of::<C>())?;
        let cells = (0..x_sets.len()).map(|x| cell(x_sets.get(x))).collect();
        *max_bytes = budget.left;
        Some(Self {
            n,
            ni,
            pd,
            pds,
            nb: b_sets.len(),
            sd,
            ctx,
            ne: e_sets.len(),
            ce,
            fb,
            cells,
        })
    }

    /// The answer for field classes `k` (src, dst, protocol×ICMP, sport, dport), interface
    /// classes `ii`/`oi` and conntrack state index `ct`. `None` for out-of-range classes
    /// (never for classes of the classifier the tables were built from).
    #[inline(always)]
    pub(crate) fn cell(&self, k: [usize; 5], ii: usize, oi: usize, ct: usize) -> Option<&C> {
        let a = usize::from(*self.pd.get(k[2] * self.n[4] + k[4])?);
        let b = usize::from(*self.pds.get(a * self.n[3] + k[3])?);
        let c = usize::from(*self.sd.get(k[0] * self.n[1] + k[1])?);
        let e = usize::from(*self.ctx.get((ii * self.ni + oi) * CT_STATES + ct)?);
        let f = usize::from(*self.ce.get(c * self.ne + e)?);
        let x = usize::from(*self.fb.get(f * self.nb + b)?);
        self.cells.get(x)
    }

    /// Heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        (self.pd.len() + self.pds.len() + self.sd.len() + self.ctx.len()) * 2
            + (self.ce.len() + self.fb.len()) * 2
            + self.cells.len() * std::mem::size_of::<C>()
    }
}

/// Entries of [`Fields32`]'s destination search (a power of two, at least the largest small
/// IPv4 field).
const DST_SLOTS: usize = 32;

/// An IPv4 key's five field classes for the cross path, specialised: the source (an atom of
/// the shared partition), protocol×ICMP and both ports through 8-bit direct tables, the
/// destination through a branch-free search of at most [`DST_SLOTS`] interval starts. Built
/// only when the hook's classifier has exactly those layouts (otherwise the generic lookup
/// answers).
// Why: the generic per-field dispatch (an enum match, clamping, an out-of-line search) cost
// ~190 instructions a packet, more than the cross-product lookups themselves.
#[derive(Clone, Debug)]
pub(crate) struct Fields32 {
    src: Vec<u8>,
    dst_starts: [u32; DST_SLOTS],
    dst_classes: [u8; DST_SLOTS],
    proto: Vec<u8>,
    sport: Vec<u8>,
    dport: Vec<u8>,
}

impl Fields32 {
    /// The specialised lookups of `c`, if its layouts allow them.
    pub(crate) fn new(c: &Classifier) -> Option<Self> {
        if c.field_count() != 5 {
            return None;
        }
        let small = c.small_v4(1)?;
        if small.is_empty() || small.len() > DST_SLOTS || small[0].0 != 0 {
            return None;
        }
        let mut dst_starts = [u32::MAX; DST_SLOTS];
        let mut dst_classes = [0u8; DST_SLOTS];
        let last = u8::try_from(small[small.len() - 1].1).ok()?;
        dst_classes.fill(last);
        for (i, &(start, class)) in small.iter().enumerate() {
            dst_starts[i] = start;
            dst_classes[i] = u8::try_from(class).ok()?;
        }
        Some(Self {
            src: c.table8(0)?.to_vec(),
            dst_starts,
            dst_classes,
            proto: c.table8(2)?.to_vec(),
            sport: c.table8(3)?.to_vec(),
            dport: c.table8(4)?.to_vec(),
        })
    }

    /// The classes of `key` (source atom, destination, protocol×ICMP, sport, dport), as the
    /// classifier's own lookup finds them.
    #[inline(always)]
    pub(crate) fn classes(&self, key: &[u32; 5]) -> [usize; 5] {
        let direct = |t: &[u8], v: u32| usize::from(t[(v as usize).min(t.len() - 1)]);
        // The last start <= v (the first is 0); padding starts are u32::MAX, whose class is
        // the last interval's, so a v of u32::MAX landing on them answers alike.
        let v = key[1];
        let mut i = 0;
        let mut step = DST_SLOTS / 2;
        while step > 0 {
            if self.dst_starts[i + step] <= v {
                i += step;
            }
            step /= 2;
        }
        [
            direct(&self.src, key[0]),
            usize::from(self.dst_classes[i]),
            direct(&self.proto, key[2]),
            direct(&self.sport, key[3]),
            direct(&self.dport, key[4]),
        ]
    }

    /// Heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.src.len() + self.proto.len() + self.sport.len() + self.dport.len()
    }
}

/// A sorted list of at most [`DST_SLOTS`] interval starts (the first 0) searched in a fixed
/// number of steps; padding starts are the largest value, with the last interval's class.
#[derive(Clone, Debug)]
struct Search<T> {
    starts: [T; DST_SLOTS],
    classes: [u8; DST_SLOTS],
}

impl<T: Copy + Ord + Default> Search<T> {
    fn new(intervals: &[(T, u32)], max: T) -> Option<Self> {
        if intervals.is_empty() || intervals.len() > DST_SLOTS || intervals[0].0 != T::default() {
            return None;
        }
        let last = u8::try_from(intervals[intervals.len() - 1].1).ok()?;
        let mut s = Self {
            starts: [max; DST_SLOTS],
            classes: [last; DST_SLOTS],
        };
        for (i, &(start, class)) in intervals.iter().enumerate() {
            s.starts[i] = start;
            s.classes[i] = u8::try_from(class).ok()?;
        }
        Some(s)
    }

    /// The class of the last start <= `v`.
    #[inline(always)]
    fn class(&self, v: T) -> usize {
        let mut i = 0;
        let mut step = DST_SLOTS / 2;
        while step > 0 {
            if self.starts[i + step] <= v {
                i += step;
            }
            step /= 2;
        }
        usize::from(self.classes[i])
    }
}

/// [`Fields32`] for IPv6 keys: both addresses through [`Search`] (fields of at most
/// [`DST_SLOTS`] intervals), the rest through the direct tables.
// Why: the generic lookup (binary searches on 128-bit bounds behind an enum dispatch, the
// key built out of line) cost ~450 instructions per IPv6 packet.
#[derive(Clone, Debug)]
pub(crate) struct Fields128 {
    src: Search<u128>,
    dst: Search<u128>,
    proto: Vec<u8>,
    sport: Vec<u8>,
    dport: Vec<u8>,
}

impl Fields128 {
    /// The specialised lookups of `c`, if its layouts allow them.
    pub(crate) fn new(c: &Classifier) -> Option<Self> {
        if c.field_count() != 5 {
            return None;
        }
        Some(Self {
            src: Search::new(&c.small_v6(0, DST_SLOTS)?, u128::MAX)?,
            dst: Search::new(&c.small_v6(1, DST_SLOTS)?, u128::MAX)?,
            proto: c.table8(2)?.to_vec(),
            sport: c.table8(3)?.to_vec(),
            dport: c.table8(4)?.to_vec(),
        })
    }

    /// The classes of an IPv6 packet's addresses and of its other key fields (`rest`:
    /// protocol×ICMP, sport, dport).
    #[inline(always)]
    pub(crate) fn classes(&self, src: u128, dst: u128, rest: [u32; 3]) -> [usize; 5] {
        let direct = |t: &[u8], v: u32| usize::from(t[(v as usize).min(t.len() - 1)]);
        [
            self.src.class(src),
            self.dst.class(dst),
            direct(&self.proto, rest[0]),
            direct(&self.sport, rest[1]),
            direct(&self.dport, rest[2]),
        ]
    }

    /// Heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.proto.len() + self.sport.len() + self.dport.len()
    }
}
