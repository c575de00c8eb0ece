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
use crate::v4index::last_at_or_below;

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
    /// The IPv4 path's phases with the source last, when field 0 is a direct table of source
    /// atoms (see [`SrcLast`]).
    src_last: Option<SrcLast>,
}

/// The same final sets reached in another order, for IPv4 keys whose source is an atom of
/// the shared partition: `(protocol×ICMP, dport, sport) → b` in one table, `(e, dst class) →
/// et`, `(et, b) → y` (none depends on the source), then `(y, source atom) → x`. Every stride
/// is a power of two, so an index is shifts and ors.
// Why: the lookup is bound by its longest chain of dependent reads, not by its instruction
// count: the source's lookup (a random /16 slot of a large blocklist index, then its decode)
// is the longest part, so it goes last with only two reads after it (`x`, then the cell);
// the ports' two phases become one read, and shifts replace multiplications (one cycle for
// three) at every step.
#[derive(Clone, Debug)]
struct SrcLast {
    /// `[(protocol×ICMP class << sh_dport | dport class) << sh_sport | sport class] → b`.
    ports: Vec<u16>,
    sh_dport: u32,
    sh_sport: u32,
    /// `[e << sh_dst | dst class] → et`.
    et: Vec<u16>,
    sh_dst: u32,
    /// `[et << sh_b | b] → y`.
    etb: Vec<u16>,
    sh_b: u32,
    /// `[y << sh_atom | source atom] → x`.
    x: Vec<u16>,
    sh_atom: u32,
    /// Source atoms (the source's direct table's length: atoms past it have the last one's
    /// class, as the direct lookup clamps).
    atoms: usize,
}

/// Bits of a power-of-two stride of at least `n` entries.
fn stride_bits(n: usize) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// `table[row << bits | col]` → `cell(row, col)` for `rows` × `cols`; `None` past the budget.
fn strided(
    rows: usize,
    cols: usize,
    budget: &mut Budget,
    mut cell: impl FnMut(usize, usize) -> Option<u16>,
) -> Option<(Vec<u16>, u32)> {
    let bits = stride_bits(cols);
    let len = rows.checked_mul(1 << bits)?;
    budget.take(len.checked_mul(2)?)?;
    let mut table = vec![0u16; len];
    for r in 0..rows {
        for c in 0..cols {
            table[r << bits | c] = cell(r, c)?;
        }
    }
    Some((table, bits))
}

impl SrcLast {
    /// `atom_class[a]`: source atom `a`'s class in `fields[0]`; `pd`/`pds` and `n`: the
    /// hook's port phases and field class counts; `x_sets`: the final sets (every source ×
    /// destination × context × `b` intersection is one of them).
    #[allow(clippy::too_many_arguments)]
    fn build(
        atom_class: &[u8],
        fields: &[Sets; 5],
        (pd, pds, n): (&[u16], &[u16], [usize; 5]),
        e_sets: &Sets,
        b_sets: &Sets,
        x_sets: &Sets,
        budget: &mut Budget,
    ) -> Option<Self> {
        let atoms = atom_class.len();
        if atoms == 0
            || atom_class
                .iter()
                .any(|&k| usize::from(k) >= fields[0].len())
        {
            return None;
        }
        // b of (protocol×ICMP, dport, sport): pds[pd[p * n4 + d] * n3 + s].
        let (p_d, sh_sport) = strided(n[2] * n[4], n[3], budget, |pdc, sc| {
            let a = usize::from(*pd.get(pdc)?);
            pds.get(a * n[3] + sc).copied()
        })?;
        // Re-stride the (protocol, dport) rows: row p << sh_dport | d.
        let sh_dport = stride_bits(n[4]);
        let rows = n[2] << sh_dport;
        budget.take(rows.checked_mul(2 << sh_sport)?)?;
        let mut ports = vec![0u16; rows << sh_sport];
        for pc in 0..n[2] {
            for dc in 0..n[4] {
                let from = (pc * n[4] + dc) << sh_sport;
                let to = (pc << sh_dport | dc) << sh_sport;
                ports[to..to + n[3]].copy_from_slice(p_d.get(from..from + n[3])?);
            }
        }
        let (et_ids, et_sets) = combine(e_sets, &fields[1], budget)?;
        let (et, sh_dst) = strided(e_sets.len(), fields[1].len(), budget, |e, t| {
            et_ids.get(e * fields[1].len() + t).copied()
        })?;
        let (etb_ids, y_sets) = combine(&et_sets, b_sets, budget)?;
        let (etb, sh_b) = strided(et_sets.len(), b_sets.len(), budget, |et, b| {
            etb_ids.get(et * b_sets.len() + b).copied()
        })?;
        let x_of: HashMap<&[u64], u16> = (0..x_sets.len())
            .map(|x| Some((x_sets.get(x), u16::try_from(x).ok()?)))
            .collect::<Option<_>>()?;
        let mut and = vec![0u64; y_sets.words];
        let (x, sh_atom) = strided(y_sets.len(), atoms, budget, |y, a| {
            let k = usize::from(atom_class[a]);
            for ((o, &p), &q) in and.iter_mut().zip(y_sets.get(y)).zip(fields[0].get(k)) {
                *o = p & q;
            }
            x_of.get(and.as_slice()).copied()
        })?;
        Some(Self {
            ports,
            sh_dport,
            sh_sport,
            et,
            sh_dst,
            etb,
            sh_b,
            x,
            sh_atom,
            atoms,
        })
    }

    fn memory_bytes(&self) -> usize {
        (self.ports.len() + self.et.len() + self.etb.len() + self.x.len()) * 2
    }
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
        // Optional: without room for them the generic phases answer.
        let mut src_budget = Budget { left: budget.left };
        let src_last = c.table8(0).and_then(|atom_class| {
            let made = SrcLast::build(
                atom_class,
                &fields,
                (&pd, &pds, n),
                &e_sets,
                &b_sets,
                &x_sets,
                &mut src_budget,
            )?;
            budget.left = src_budget.left;
            Some(made)
        });
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
            src_last,
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
            + self.src_last.as_ref().map_or(0, SrcLast::memory_bytes)
    }
}

/// Entries of [`Fields32`]'s destination search (a power of two, at least the largest small
/// IPv4 field).
const DST_SLOTS: usize = 32;

/// An IPv4 key's field lookups for a hook's [`SrcLast`] path, specialised: protocol×ICMP and
/// both ports through 8-bit direct tables, the destination through a branch-free search of at
/// most [`DST_SLOTS`] interval starts (the source is already an atom). Built only when the
/// hook's classifier has exactly those layouts and its tables have the source-last phases
/// (otherwise the generic lookup answers).
// Why: the generic per-field dispatch (an enum match, clamping, an out-of-line search) cost
// ~190 instructions a packet, more than the cross-product lookups themselves.
#[derive(Clone, Debug)]
pub(crate) struct Fields32 {
    dst: Search<u32>,
    proto: Vec<u8>,
    sport: Vec<u8>,
    dport: Vec<u8>,
}

impl Fields32 {
    /// The specialised lookups of `c` for `hook` (built from `c`), if the layouts allow them.
    pub(crate) fn new<C>(c: &Classifier, hook: &HookTables<C>) -> Option<Self> {
        if c.field_count() != 5 {
            return None;
        }
        hook.src_last.as_ref()?;
        let n1 = hook.n[1];
        // `Search::new` refuses an empty list, more than `DST_SLOTS` intervals or a first start
        // above 0.
        let small = c.small_v4(1)?;
        if small.iter().any(|&(_, class)| class as usize >= n1) {
            return None;
        }
        // `cell32` packs the classes into strided indexes: one out of range would read another
        // row instead of failing, so every table's classes are checked here.
        let table = |f: usize| -> Option<Vec<u8>> {
            let t = c.table8(f)?;
            (!t.is_empty() && t.iter().all(|&k| usize::from(k) < hook.n[f])).then(|| t.to_vec())
        };
        Some(Self {
            dst: Search::new(small, u32::MAX)?,
            proto: table(2)?,
            sport: table(3)?,
            dport: table(4)?,
        })
    }

    /// Heap bytes.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.proto.len() + self.sport.len() + self.dport.len()
    }
}

impl<C> HookTables<C> {
    /// [`HookTables::cell`] of an IPv4 key (source atom, destination, protocol×ICMP, sport,
    /// dport) through `fields` (built for these tables).
    #[inline(always)]
    pub(crate) fn cell32(
        &self,
        fields: &Fields32,
        key: &[u32; 5],
        ii: usize,
        oi: usize,
        ct: usize,
    ) -> Option<&C> {
        let direct = |t: &[u8], v: u32| usize::from(t[(v as usize).min(t.len() - 1)]);
        let last = self.src_last.as_ref()?;
        // Everything but the source first: it overlaps the source's lookup.
        let e = usize::from(*self.ctx.get((ii * self.ni + oi) * CT_STATES + ct)?);
        let et = usize::from(*last.et.get(e << last.sh_dst | fields.dst.class(key[1]))?);
        let ports = (direct(&fields.proto, key[2]) << last.sh_dport
            | direct(&fields.dport, key[4]))
            << last.sh_sport
            | direct(&fields.sport, key[3]);
        let b = usize::from(*last.ports.get(ports)?);
        let y = usize::from(*last.etb.get(et << last.sh_b | b)?);
        let atom = (key[0] as usize).min(last.atoms - 1);
        let x = usize::from(*last.x.get(y << last.sh_atom | atom)?);
        self.cells.get(x)
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
        usize::from(self.classes[last_at_or_below(&self.starts, v)])
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
