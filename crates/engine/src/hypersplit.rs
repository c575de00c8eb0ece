//! A HyperSplit-style decision tree for five-field (IPv4 5-tuple) first-match classification,
//! the ClassBench fast path.
//!
//! Build: starting from the whole header space, a node holding more than [`LEAF_RULES`] rules
//! is cut in two at the field value that best balances the rules on both sides (fewest rules
//! on the larger side, then least replication); rules straddling the cut go to both sides.
//! A node's rule list is cut short after the first rule covering the node's whole box (no
//! later rule can win there). Leaves keep their rules (in priority order, each packed as
//! 5 × (low, span) in 32 bytes) contiguously, ended by a sentinel that matches everything.
//!
//! Lookup: 8-byte nodes `(value, dim << 29 | left)`; the child is `left + (key[dim] > value)`.
//! A leaf is a node that points to itself through an always-zero key field, so a batch of
//! headers walks the tree in lock step without branches until no header moves, then each
//! scans its leaf (first rule whose five `key - low <= span` tests pass). Walking many headers
//! at once overlaps their cache misses.
//!
//! The build is bounded ([`MAX_NODES`], [`MAX_LEAF_ENTRIES`]); a rule set that would exceed the
//! bounds (heavy replication) makes [`Tree::build`] return `None` and the caller keeps the
//! bit-vector classifier.

use crate::classifier::{Classifier, FieldKind, RuleIntervals};

/// A leaf holds at most this many rules unless no cut separates them.
// Why: measured on the ClassBench sets (2/3/4/6/8): 3 packed rules (96 bytes) scan fastest; a
// deeper tree costs a dependent load per level, but lock-step walks overlap those loads.
pub const LEAF_RULES: usize = 3;
/// Deepest path.
pub const MAX_DEPTH: u32 = 64;
/// Node budget (8 bytes each).
pub const MAX_NODES: usize = 1 << 22;
/// Leaf entry budget (32 bytes each).
pub const MAX_LEAF_ENTRIES: usize = 1 << 22;
/// Leaf entries (and nodes) allowed per rule before a tree counts as exploded.
// Why: replication beyond ~100 copies per rule means the cuts are not separating the rules;
// the forest's grouping or the bit-vector classifier does better there.
pub const BUDGET_PER_RULE: usize = 100;
/// An address range at most this wide (a /12) is "small" when rules are grouped into trees.
// Why: CutSplit's observation: rules specific in an address field separate well on it, and
// keeping them apart from address wildcards stops the wildcards being copied into every leaf.
// The line is drawn at /12, not /16: ipc1_10k's /14 and /15 prefixes cut as well as /16s,
// and counting them as wild put 161 of them with the real wildcards (a 12 MiB tree; with
// /12: 1.1 MiB, the forest 12.2 -> 1.9 MiB and ~20% faster; fw1_10k 2.6 -> 2.0 MiB).
const SMALL_ADDR_SPAN: u32 = (1 << 20) - 1;
/// Leaf entries one tree of a forest may use.
const FOREST_TREE_MAX_ENTRIES: usize = 1 << 19;

const FIELDS: usize = 5;
/// Key slot that is always zero: leaves branch on it to point at themselves.
const ZERO_FIELD: u32 = 5;
const CHILD_MASK: u32 = (1 << 29) - 1;
/// Headers walked in lock step.
const LANES: usize = 16;

/// One rule (or one interval combination of a rule) as inclusive ranges per field:
/// source, destination, source port, destination port, protocol.
pub type Boxes = [(u32, u32); FIELDS];

/// One leaf entry: a rule's box as `(low, span)` per field, in 32 bytes (two per cache line).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
struct Packed {
    addr_lo: [u32; 2],
    addr_span: [u32; 2],
    port_lo: [u16; 2],
    port_span: [u16; 2],
    proto_lo: u8,
    proto_span: u8,
    _pad: u16,
    /// Rule id; `NO_RULE` for the sentinel that ends every leaf.
    id: u32,
}

/// Id of the match-all sentinel ending each leaf.
const NO_RULE: u32 = u32::MAX;

/// Two leaf entries on one cache line: a leaf starts on a line, so its first two entries
/// (all most lookups read) arrive with one miss and are tested without a branch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, align(64))]
struct Line([Packed; 2]);

impl Packed {
    fn new(b: &Boxes, id: u32) -> Self {
        // Ranges were checked against the field domains (ports 16 bits, protocol 8).
        Self {
            addr_lo: [b[0].0, b[1].0],
            addr_span: [b[0].1 - b[0].0, b[1].1 - b[1].0],
            port_lo: [b[2].0 as u16, b[3].0 as u16],
            port_span: [(b[2].1 - b[2].0) as u16, (b[3].1 - b[3].0) as u16],
            proto_lo: b[4].0 as u8,
            proto_span: (b[4].1 - b[4].0) as u8,
            _pad: 0,
            id,
        }
    }

    /// The entry's ranges again.
    fn boxes(&self) -> Boxes {
        let r = |lo: u32, span: u32| (lo, lo.saturating_add(span));
        [
            r(self.addr_lo[0], self.addr_span[0]),
            r(self.addr_lo[1], self.addr_span[1]),
            r(u32::from(self.port_lo[0]), u32::from(self.port_span[0])),
            r(u32::from(self.port_lo[1]), u32::from(self.port_span[1])),
            r(u32::from(self.proto_lo), u32::from(self.proto_span)),
        ]
    }

    #[inline(always)]
    fn matches(&self, k: &[u32; 8]) -> bool {
        // Non-short-circuit `&`: five independent compares, no branches.
        (k[0].wrapping_sub(self.addr_lo[0]) <= self.addr_span[0])
            & (k[1].wrapping_sub(self.addr_lo[1]) <= self.addr_span[1])
            & (k[2].wrapping_sub(u32::from(self.port_lo[0])) <= u32::from(self.port_span[0]))
            & (k[3].wrapping_sub(u32::from(self.port_lo[1])) <= u32::from(self.port_span[1]))
            & (k[4].wrapping_sub(u32::from(self.proto_lo)) <= u32::from(self.proto_span))
    }
}

/// A built tree. Immutable; lookups take `&self`.
#[derive(Clone, Debug)]
pub struct Tree {
    /// `(value, dim << 29 | left child)`; a leaf: `(first line, ZERO_FIELD << 29 | self)`.
    /// Every child index is below `nodes.len()` (checked once after the build).
    nodes: Vec<(u32, u32)>,
    lines: Vec<Line>,
    depth: u32,
    /// Per leaf entry (`line * 2 + slot`), in a forest's first tree: a lower bound on the ids
    /// of the later trees' rules a header stopping at that entry could match, `u32::MAX` when
    /// none (see [`Tree::set_later_bounds`]); empty otherwise.
    later: Vec<u32>,
}

/// Overlap checks [`Tree::set_later_bounds`] may spend before giving up (no bounds, no skips).
// Why: ipc1_10k needs ~15M; a forest whose first tree is large and whose later groups are
// many would otherwise push the build past its one-second budget.
const LATER_BOUND_BUDGET: usize = 40_000_000;

struct Builder<'a> {
    rules: &'a [(Boxes, u32)],
    nodes: Vec<(u32, u32)>,
    lines: Vec<Line>,
    depth: u32,
    over_budget: bool,
    /// Leaf entries (two per line) and nodes allowed.
    budget: usize,
}

/// Field bounds of the whole header space.
const FULL: Boxes = [
    (0, u32::MAX),
    (0, u32::MAX),
    (0, 65535),
    (0, 65535),
    (0, 255),
];

/// A key widened to the lane layout: five fields, then the always-zero slots.
#[inline(always)]
fn lane(key: [u32; FIELDS]) -> [u32; 8] {
    [key[0], key[1], key[2], key[3], key[4], 0, 0, 0]
}

impl Tree {
    /// Build from `(ranges, rule id)` in priority order (ids need not be distinct: a rule may
    /// be given as several boxes). Ranges must lie within the field domains (addresses 32
    /// bits, ports 16, protocol 8) with `low <= high`. `None` when the tree would exceed the
    /// node or leaf budget.
    pub fn build(rules: &[(Boxes, u32)]) -> Option<Self> {
        Self::build_with_budget(rules, BUDGET_PER_RULE)
    }

    /// [`Tree::build`] with at most `per_rule` leaf entries and nodes per rule (plus 4096).
    pub fn build_with_budget(rules: &[(Boxes, u32)], per_rule: usize) -> Option<Self> {
        for (b, _) in rules {
            if b.iter().zip(FULL).any(|(r, f)| r.0 > r.1 || r.1 > f.1) {
                return None;
            }
        }
        let mut b = Builder {
            rules,
            nodes: vec![(0, 0)],
            lines: Vec::new(),
            depth: 0,
            over_budget: false,
            budget: MAX_LEAF_ENTRIES,
        };
        let all: Vec<u32> = (0..rules.len() as u32).collect();
        b.budget = (rules.len().saturating_mul(per_rule) + 4096).min(MAX_LEAF_ENTRIES);
        b.node(0, &all, FULL, 0);
        if b.over_budget {
            return None;
        }
        let t = Self {
            nodes: b.nodes,
            lines: b.lines,
            depth: b.depth,
            later: Vec::new(),
        };
        // The lookups index nodes without bounds checks; this is what makes that sound.
        t.links_in_bounds().then_some(t)
    }

    /// Every child index (and a leaf's self link and first line) is in bounds, and every leaf
    /// ends with a sentinel before the lines run out.
    fn links_in_bounds(&self) -> bool {
        let n = self.nodes.len();
        self.nodes.iter().enumerate().all(|(i, &(value, info))| {
            let child = (info & CHILD_MASK) as usize;
            if info >> 29 == ZERO_FIELD {
                child == i && (value as usize) < self.lines.len()
            } else {
                (info >> 29) < FIELDS as u32 && child + 1 < n
            }
        }) && self
            .lines
            .last()
            .is_some_and(|l| l.0[1].id == NO_RULE && l.0[1].matches(&[0; 8]))
    }

    /// Approximate heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.nodes.len() * 8 + self.lines.len() * std::mem::size_of::<Line>() + self.later.len() * 4
    }

    /// For every leaf entry (up to the leaf's sentinel), the smallest id among `others` (the
    /// rules of the trees a forest visits after this one) whose box overlaps the leaf's box
    /// intersected with the entry's box, or `u32::MAX` when none does. A header whose scan
    /// stops at an entry lies in both boxes (the leaf's: the walk got there; the entry's: it
    /// matched it; the sentinel's box is everything), so every later rule it matches has an id
    /// at least that bound: when this tree's match is below it, or no later rule can match,
    /// the later trees cannot change the answer and are skipped (ipc1_10k: the second tree is
    /// walked for 27% of headers instead of 55%). Gives up (no bounds, no skips) past
    /// [`LATER_BOUND_BUDGET`] overlap checks.
    fn set_later_bounds(&mut self, others: &[(Boxes, u32)]) {
        let overlaps =
            |a: &Boxes, b: &Boxes| a.iter().zip(b).all(|(x, y)| x.0 <= y.1 && y.0 <= x.1);
        let mut bounds = vec![0u32; self.lines.len() * 2];
        let mut work = 0usize;
        let mut stack: Vec<(u32, Boxes, Vec<u32>)> =
            vec![(0, FULL, (0..others.len() as u32).collect())];
        while let Some((n, bx, list)) = stack.pop() {
            let (value, info) = self.node(n);
            if info >> 29 == ZERO_FIELD {
                // Per entry up to the first sentinel: a header that stops at an entry lies in
                // the leaf's box and in the entry's box.
                let lines = self.lines.get(value as usize..).unwrap_or(&[]);
                let entries = lines.iter().flat_map(|l| l.0.iter());
                for (e, p) in entries.enumerate() {
                    let eb = p.boxes();
                    let region: Boxes =
                        std::array::from_fn(|f| (bx[f].0.max(eb[f].0), bx[f].1.min(eb[f].1)));
                    work += list.len();
                    let b = list
                        .iter()
                        .filter(|&&i| overlaps(&region, &others[i as usize].0))
                        .map(|&i| others[i as usize].1)
                        .min()
                        .unwrap_or(u32::MAX);
                    if let Some(slot) = bounds.get_mut(value as usize * 2 + e) {
                        *slot = b;
                    }
                    if p.id == NO_RULE {
                        break;
                    }
                }
                continue;
            }
            work += 2 * list.len();
            if work > LATER_BOUND_BUDGET {
                return;
            }
            let dim = (info >> 29) as usize;
            let left = info & CHILD_MASK;
            let mut lb = bx;
            lb[dim].1 = value;
            let mut rb = bx;
            rb[dim].0 = value.saturating_add(1);
            let keep = |b: &Boxes| -> Vec<u32> {
                list.iter()
                    .copied()
                    .filter(|&i| overlaps(b, &others[i as usize].0))
                    .collect()
            };
            let (ll, rl) = (keep(&lb), keep(&rb));
            stack.push((left, lb, ll));
            stack.push((left + 1, rb, rl));
        }
        self.later = bounds;
    }

    /// Nodes (internal and leaves).
    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    /// Deepest leaf.
    pub fn depth(&self) -> u32 {
        self.depth
    }

    #[inline(always)]
    fn node(&self, i: u32) -> (u32, u32) {
        debug_assert!((i as usize) < self.nodes.len());
        // SAFETY: lookups start at node 0 and only follow child links (or a leaf's self link),
        // all of which `links_in_bounds` checked to be below `nodes.len()` when the tree was
        // built; the tree is immutable afterwards.
        unsafe { *self.nodes.get_unchecked(i as usize) }
    }

    /// One step of a walk from node `cur`: the child for key `k`, or `cur` at a leaf.
    #[inline(always)]
    fn step(&self, cur: u32, k: &[u32; 8]) -> u32 {
        let (value, info) = self.node(cur);
        (info & CHILD_MASK) + u32::from(k[(info >> 29) as usize] > value)
    }

    /// First matching rule of the leaf starting at `line`.
    #[inline(always)]
    fn scan(&self, line: u32, k: &[u32; 8]) -> Option<u32> {
        let mut i = line as usize;
        // The first two entries decide almost every lookup: test both, choose without a
        // branch; the loop runs only when a leaf's third or later entry is needed.
        let l = self.lines.get(i)?;
        let (m0, m1) = (l.0[0].matches(k), l.0[1].matches(k));
        if m0 | m1 {
            let id = if m0 { l.0[0].id } else { l.0[1].id };
            return (id != NO_RULE).then_some(id);
        }
        loop {
            i += 1;
            for p in &self.lines.get(i)?.0 {
                if p.matches(k) {
                    return (p.id != NO_RULE).then_some(p.id);
                }
            }
        }
    }

    /// First matching rule of the leaf starting at `line`, and the index (`line * 2 + slot`)
    /// of the entry that stopped the scan (the sentinel's when no rule matched).
    #[inline(always)]
    fn scan_entry(&self, line: u32, k: &[u32; 8]) -> (Option<u32>, usize) {
        let mut i = line as usize;
        // The first two entries decide almost every lookup: test both, choose without a
        // branch; the loop runs only when a leaf's third or later entry is needed.
        let Some(l) = self.lines.get(i) else {
            return (None, usize::MAX);
        };
        let (m0, m1) = (l.0[0].matches(k), l.0[1].matches(k));
        if m0 | m1 {
            let slot = usize::from(!m0);
            let id = l.0[slot].id;
            return ((id != NO_RULE).then_some(id), i * 2 + slot);
        }
        loop {
            i += 1;
            let Some(l) = self.lines.get(i) else {
                return (None, usize::MAX);
            };
            for (slot, p) in l.0.iter().enumerate() {
                if p.matches(k) {
                    return ((p.id != NO_RULE).then_some(p.id), i * 2 + slot);
                }
            }
        }
    }

    /// The leaf's first line for key `k`.
    #[inline(always)]
    fn find_leaf(&self, k: &[u32; 8]) -> u32 {
        let mut cur = 0u32;
        loop {
            let next = self.step(cur, k);
            if next == cur {
                return self.node(cur).0;
            }
            cur = next;
        }
    }

    /// First matching rule id for one key `[src, dst, sport, dport, proto]`.
    pub fn classify(&self, key: [u32; FIELDS]) -> Option<u32> {
        let k = lane(key);
        self.scan(self.find_leaf(&k), &k)
    }

    /// Walk statistics over `keys`: (mean depth, max depth, mean leaf entries scanned).
    pub fn walk_stats(&self, keys: &[[u32; FIELDS]]) -> (f64, u32, f64) {
        let (mut dsum, mut dmax, mut ssum) = (0u64, 0u32, 0u64);
        for key in keys {
            let k = lane(*key);
            let mut cur = 0u32;
            let mut d = 0u32;
            loop {
                let next = self.step(cur, &k);
                if next == cur {
                    break;
                }
                cur = next;
                d += 1;
            }
            let first = self.node(cur).0 as usize * 2;
            let entries = self.lines[first / 2..].iter().flat_map(|l| l.0.iter());
            ssum += entries.take_while(|p| !p.matches(&k)).count() as u64 + 1;
            dsum += u64::from(d);
            dmax = dmax.max(d);
        }
        let n = keys.len().max(1) as f64;
        (dsum as f64 / n, dmax, ssum as f64 / n)
    }

    /// First matches for many keys; `out[i]` for `keys[i]`.
    pub fn classify_batch(&self, keys: &[[u32; FIELDS]], out: &mut [Option<u32>]) {
        self.classify_with(keys.len(), |i| keys[i], out);
    }

    /// First matches for `n` keys given by `key_of(i)`, written to `out[i]` (at most
    /// `out.len()` of them).
    ///
    /// Groups of [`LANES`] keys walk the tree in lock step (leaves point to themselves, so a
    /// lane that arrived early keeps still); a group's leaf lines are prefetched and scanned
    /// only after the next group has walked, so leaf misses overlap with useful work.
    #[inline]
    pub fn classify_with(
        &self,
        n: usize,
        key_of: impl Fn(usize) -> [u32; FIELDS],
        out: &mut [Option<u32>],
    ) {
        self.classify_with_later::<false>(n, key_of, out, &mut []);
    }

    /// [`Tree::classify_with`], also writing each key's leaf bound on later trees' rule ids
    /// (see [`Tree::set_later_bounds`]; 0 when the tree has none) to `later[i]` while `i` is
    /// within `later`.
    #[inline]
    fn classify_with_later<const LATER: bool>(
        &self,
        n: usize,
        key_of: impl Fn(usize) -> [u32; FIELDS],
        out: &mut [Option<u32>],
        later: &mut [u32],
    ) {
        let n = n.min(out.len());
        // Two stages: the group being walked and the one whose leaves are being fetched.
        let mut keys = [[[0u32; 8]; LANES]; 2];
        let mut leaf = [[0u32; LANES]; 2];
        let mut prev: Option<(usize, usize)> = None;
        let mut s = 0usize;
        let mut base = 0;
        while base < n {
            let m = LANES.min(n - base);
            let (k_now, l_now) = (&mut keys[s], &mut leaf[s]);
            for (j, k) in k_now.iter_mut().enumerate() {
                *k = if j < m {
                    lane(key_of(base + j))
                } else {
                    [0; 8]
                };
            }
            let mut cur = [0u32; LANES];
            loop {
                let mut moved = 0u32;
                for j in 0..LANES {
                    let next = self.step(cur[j], &k_now[j]);
                    moved |= next ^ cur[j];
                    cur[j] = next;
                }
                if moved == 0 {
                    break;
                }
            }
            for j in 0..m {
                l_now[j] = self.node(cur[j]).0;
                if let Some(l) = self.lines.get(l_now[j] as usize) {
                    prefetch(l);
                }
            }
            s ^= 1;
            if let Some((pb, pm)) = prev {
                for j in 0..pm {
                    if LATER {
                        let (r, e) = self.scan_entry(leaf[s][j], &keys[s][j]);
                        out[pb + j] = r;
                        if let Some(b) = later.get_mut(pb + j) {
                            *b = self.later.get(e).copied().unwrap_or(0);
                        }
                    } else {
                        out[pb + j] = self.scan(leaf[s][j], &keys[s][j]);
                    }
                }
            }
            prev = Some((base, m));
            base += m;
        }
        if let Some((pb, pm)) = prev {
            s ^= 1;
            for j in 0..pm {
                if LATER {
                    let (r, e) = self.scan_entry(leaf[s][j], &keys[s][j]);
                    out[pb + j] = r;
                    if let Some(b) = later.get_mut(pb + j) {
                        *b = self.later.get(e).copied().unwrap_or(0);
                    }
                } else {
                    out[pb + j] = self.scan(leaf[s][j], &keys[s][j]);
                }
            }
        }
    }
}

/// Whether rule `r`'s range in field `f` is small (see [`SMALL_ADDR_SPAN`]).
fn small(r: &(Boxes, u32), f: usize) -> bool {
    r.0[f].1.wrapping_sub(r.0[f].0) <= SMALL_ADDR_SPAN
}

/// Which group of a forest a rule goes to.
type GroupOf = dyn Fn(&(Boxes, u32)) -> usize;

/// Several trees over disjoint groups of the rules (by whether the source and destination
/// ranges are small), looked up one after the other; the lowest rule id wins.
#[derive(Clone, Debug)]
pub struct Forest {
    /// Members in order of their lowest rule id.
    trees: Vec<(u32, Member)>,
}

/// One group of a forest: a tree, or (for the group that would explode, typically rules wild
/// in both addresses) a bit-vector classifier over the group's boxes.
#[derive(Clone, Debug)]
enum Member {
    Tree(Tree),
    Bits {
        classifier: Classifier,
        /// Rule id of each box.
        ids: Vec<u32>,
    },
}

impl Member {
    fn memory_bytes(&self) -> usize {
        match self {
            Member::Tree(t) => t.memory_bytes(),
            Member::Bits { classifier, ids } => classifier.memory_bytes() + ids.len() * 4,
        }
    }

    fn classify(&self, key: [u32; FIELDS]) -> Option<u32> {
        match self {
            Member::Tree(t) => t.classify(key),
            Member::Bits { classifier, ids } => classifier
                .first_match(&key.map(u128::from))
                .and_then(|i| ids.get(i as usize).copied()),
        }
    }

    fn classify_batch(&self, keys: &[[u32; FIELDS]], out: &mut [Option<u32>]) {
        match self {
            Member::Tree(t) => t.classify_batch(keys, out),
            Member::Bits { classifier, ids } => {
                let mut flat = [0u128; 64 * FIELDS];
                for (ks, os) in keys.chunks(64).zip(out.chunks_mut(64)) {
                    for (i, k) in ks.iter().enumerate() {
                        for f in 0..FIELDS {
                            flat[i * FIELDS + f] = u128::from(k[f]);
                        }
                    }
                    classifier.first_match_batch(&flat[..ks.len() * FIELDS], os);
                    for o in os.iter_mut() {
                        *o = o.and_then(|i| ids.get(i as usize).copied());
                    }
                }
            }
        }
    }
}

fn bits_member(group: &[(Boxes, u32)]) -> Option<Member> {
    let kinds = [
        FieldKind::V4,
        FieldKind::V4,
        FieldKind::Direct { size: 65536 },
        FieldKind::Direct { size: 65536 },
        FieldKind::Direct { size: 256 },
    ];
    let rules: Vec<RuleIntervals> = group
        .iter()
        .map(|(b, _)| {
            b.iter()
                .map(|&(lo, hi)| vec![(u128::from(lo), u128::from(hi))])
                .collect()
        })
        .collect();
    Some(Member::Bits {
        classifier: Classifier::build(&kinds, &rules).ok()?,
        ids: group.iter().map(|r| r.1).collect(),
    })
}

impl Forest {
    /// Build from `(ranges, rule id)` in priority order (see [`Tree::build`]). With the finest
    /// grouping, a group whose tree exceeds its budget is served by a bit-vector classifier
    /// over its boxes; `None` only if that cannot be built.
    pub fn build(rules: &[(Boxes, u32)]) -> Option<Self> {
        // Fewest trees first: split on source specificity, on destination specificity, then
        // both; the first grouping whose trees all stay within budget wins.
        let groupings: [&GroupOf; 3] = [
            &|r| usize::from(small(r, 0)),
            &|r| usize::from(small(r, 1)),
            &|r| usize::from(small(r, 0)) * 2 + usize::from(small(r, 1)),
        ];
        let last = groupings.len() - 1;
        'grouping: for (gi, group_of) in groupings.into_iter().enumerate() {
            let hybrid = gi == last;
            let mut groups: [Vec<(Boxes, u32)>; 4] = Default::default();
            for r in rules {
                groups[group_of(r)].push(*r);
            }
            let mut trees = Vec::new();
            for g in groups.iter().filter(|g| !g.is_empty()) {
                let min_id = g.iter().map(|r| r.1).min().unwrap_or(0);
                // A group may replicate more than a lone tree: two 16 MiB trees walked twice beat four
                // small ones walked four times (ipc1_10k: 17.7 vs 13.3 Mlookups/s).
                let per_rule = (4 * BUDGET_PER_RULE).min(FOREST_TREE_MAX_ENTRIES / g.len());
                match Tree::build_with_budget(g, per_rule) {
                    Some(t) => trees.push((min_id, Member::Tree(t))),
                    None if hybrid => trees.push((min_id, bits_member(g)?)),
                    None => continue 'grouping,
                }
            }
            trees.sort_by_key(|t| t.0);
            // The first tree learns, per leaf, which later rules could still beat it.
            if let Some((first_id, Member::Tree(t))) = trees.first_mut() {
                let first_group = groups.iter().find(|g| g.iter().any(|r| r.1 == *first_id));
                if let Some(fg) = first_group {
                    let others: Vec<(Boxes, u32)> = groups
                        .iter()
                        .filter(|g| !std::ptr::eq(*g, fg))
                        .flatten()
                        .copied()
                        .collect();
                    t.set_later_bounds(&others);
                }
            }
            return Some(Self { trees });
        }
        None
    }

    /// Approximate heap bytes.
    pub fn memory_bytes(&self) -> usize {
        self.trees.iter().map(|t| t.1.memory_bytes()).sum()
    }

    /// Trees.
    pub fn tree_count(&self) -> usize {
        self.trees.len()
    }

    /// One line per tree: lowest rule id, nodes, depth, bytes.
    pub fn describe(&self) -> String {
        self.trees
            .iter()
            .map(|(id, m)| match m {
                Member::Tree(t) => format!(
                    "min id {id}: tree, {} nodes, depth {}, {} bytes",
                    t.node_count(),
                    t.depth(),
                    t.memory_bytes()
                ),
                Member::Bits { ids, .. } => format!(
                    "min id {id}: bit-vector, {} boxes, {} bytes",
                    ids.len(),
                    m.memory_bytes()
                ),
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// First matching rule id for one key.
    pub fn classify(&self, key: [u32; FIELDS]) -> Option<u32> {
        let mut best: Option<u32> = None;
        for (min_id, t) in &self.trees {
            if best.is_some_and(|b| b < *min_id) {
                break;
            }
            if let Some(id) = t.classify(key) {
                best = Some(best.map_or(id, |b| b.min(id)));
            }
        }
        best
    }

    /// First matches for many keys; `out[i]` for `keys[i]`. Trees are visited in order of
    /// their lowest rule id, each only for the keys whose best match so far could still be
    /// beaten by it.
    pub fn classify_batch(&self, keys: &[[u32; FIELDS]], out: &mut [Option<u32>]) {
        const CHUNK: usize = 64;
        let mut tmp = [None; CHUNK];
        let mut sub = [[0u32; FIELDS]; CHUNK];
        let mut idx = [0usize; CHUNK];
        let mut later = [0u32; CHUNK];
        for (ks, os) in keys.chunks(CHUNK).zip(out.chunks_mut(CHUNK)) {
            os.fill(None);
            let mut done = [false; CHUNK];
            for (t_i, (min_id, t)) in self.trees.iter().enumerate() {
                if t_i == 0 {
                    match t {
                        Member::Tree(t) => {
                            t.classify_with_later::<true>(ks.len(), |i| ks[i], os, &mut later);
                            for ((d, o), b) in done.iter_mut().zip(os.iter()).zip(&later) {
                                // No later rule overlaps the leaf, or this match beats them all.
                                *d = *b == u32::MAX || o.is_some_and(|id| id < *b);
                            }
                        }
                        Member::Bits { .. } => t.classify_batch(ks, os),
                    }
                    continue;
                }
                let mut m = 0;
                for (i, o) in os.iter().enumerate() {
                    if !done[i] && o.is_none_or(|b| b > *min_id) {
                        sub[m] = ks[i];
                        idx[m] = i;
                        m += 1;
                    }
                }
                if m == 0 {
                    continue;
                }
                t.classify_batch(&sub[..m], &mut tmp[..m]);
                for (r, &i) in tmp[..m].iter().zip(&idx[..m]) {
                    if let Some(id) = *r {
                        os[i] = Some(os[i].map_or(id, |b| b.min(id)));
                    }
                }
            }
        }
    }
}

#[inline(always)]
fn prefetch<T>(p: &T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of the x86_64 baseline; a prefetch is only a hint that never
        // faults, and `p` is a live reference.
        unsafe { _mm_prefetch::<_MM_HINT_T0>((p as *const T).cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl Builder<'_> {
    fn leaf(&mut self, at: usize, ids: &[u32]) {
        let start = self.lines.len() as u32;
        // Entries then the sentinel, padded with sentinels to whole lines.
        let sentinel = Packed::new(&FULL, NO_RULE);
        let mut entries = ids.iter().map(|&i| {
            let (b, id) = &self.rules[i as usize];
            Packed::new(b, *id)
        });
        loop {
            let a = entries.next();
            let b = if a.is_some() { entries.next() } else { None };
            self.lines
                .push(Line([a.unwrap_or(sentinel), b.unwrap_or(sentinel)]));
            if b.is_none() {
                break;
            }
        }
        self.nodes[at] = (start, (ZERO_FIELD << 29) | at as u32);
        if self.lines.len() * 2 > self.budget {
            self.over_budget = true;
        }
    }

    fn node(&mut self, at: usize, ids: &[u32], bx: Boxes, depth: u32) {
        self.depth = self.depth.max(depth);
        if self.over_budget {
            return;
        }
        // Cut the list after the first rule covering the whole box.
        let covers = |b: &Boxes| b.iter().zip(&bx).all(|(r, x)| r.0 <= x.0 && r.1 >= x.1);
        let ids: Vec<u32> = match ids.iter().position(|&i| covers(&self.rules[i as usize].0)) {
            Some(p) => ids[..=p].to_vec(),
            None => ids.to_vec(),
        };
        if ids.len() <= LEAF_RULES || depth >= MAX_DEPTH {
            self.leaf(at, &ids);
            return;
        }
        let Some((dim, cut)) = self.best_cut(&ids, &bx) else {
            self.leaf(at, &ids);
            return;
        };
        let clip = |i: u32| {
            let r = self.rules[i as usize].0[dim];
            (r.0.max(bx[dim].0), r.1.min(bx[dim].1))
        };
        let left: Vec<u32> = ids.iter().copied().filter(|&i| clip(i).0 <= cut).collect();
        let right: Vec<u32> = ids.iter().copied().filter(|&i| clip(i).1 > cut).collect();
        let base = self.nodes.len();
        if base + 2 > self.budget.min(MAX_NODES) || base + 2 > CHILD_MASK as usize {
            self.over_budget = true;
            return;
        }
        self.nodes.push((0, 0));
        self.nodes.push((0, 0));
        self.nodes[at] = (cut, ((dim as u32) << 29) | base as u32);
        let mut lb = bx;
        lb[dim].1 = cut;
        let mut rb = bx;
        rb[dim].0 = cut + 1;
        self.node(base, &left, lb, depth + 1);
        self.node(base + 1, &right, rb, depth + 1);
    }

    /// The cut `(field, value)` (left: `<= value`) minimising the larger side, then the total.
    fn best_cut(&self, ids: &[u32], bx: &Boxes) -> Option<(usize, u32)> {
        let n = ids.len();
        let mut best: Option<(usize, usize, usize, u32)> = None;
        let mut los = Vec::with_capacity(n);
        let mut his = Vec::with_capacity(n);
        for (dim, bd) in bx.iter().enumerate() {
            los.clear();
            his.clear();
            for &i in ids {
                let r = self.rules[i as usize].0[dim];
                los.push(r.0.max(bd.0));
                his.push(r.1.min(bd.1));
            }
            los.sort_unstable();
            his.sort_unstable();
            // Candidate cuts: just before a low end, or at a high end, inside the box.
            let mut cands: Vec<u32> = los
                .iter()
                .filter(|&&l| l > bd.0)
                .map(|&l| l - 1)
                .chain(his.iter().copied().filter(|&h| h < bd.1))
                .collect();
            cands.sort_unstable();
            cands.dedup();
            for &c in &cands {
                let left = los.partition_point(|&l| l <= c);
                let right = n - his.partition_point(|&h| h <= c);
                let key = (left.max(right), left + right);
                if key.0 >= n {
                    continue;
                }
                if best.is_none_or(|b| key < (b.0, b.1)) {
                    best = Some((key.0, key.1, dim, c));
                }
            }
        }
        best.map(|(_, _, dim, c)| (dim, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classbench::{generate_trace, reference_match, CbRule, SplitMix64};

    fn boxes(r: &CbRule) -> Vec<Boxes> {
        let pfx = |(net, len): (u32, u8)| {
            let span = if len == 0 {
                u32::MAX
            } else {
                ((1u64 << (32 - len)) - 1) as u32
            };
            (net, net.wrapping_add(span))
        };
        let protos: Vec<(u32, u32)> = match r.proto.1 {
            0xff => vec![(u32::from(r.proto.0), u32::from(r.proto.0))],
            0 => vec![(0, 255)],
            m => (0u32..=255)
                .filter(|p| (*p as u8 & m) == r.proto.0)
                .map(|p| (p, p))
                .collect(),
        };
        protos
            .into_iter()
            .map(|p| {
                [
                    pfx(r.src),
                    pfx(r.dst),
                    (u32::from(r.sport.0), u32::from(r.sport.1)),
                    (u32::from(r.dport.0), u32::from(r.dport.1)),
                    p,
                ]
            })
            .collect()
    }

    #[test]
    fn agrees_with_linear_first_match_on_random_sets() {
        let mut rng = SplitMix64::new(7);
        for n in [0usize, 1, 5, 40, 600] {
            let rules: Vec<CbRule> = (0..n)
                .map(|_| {
                    let len = [0u8, 8, 16, 24, 32][rng.range(0, 4) as usize];
                    let net = |rng: &mut SplitMix64| {
                        let a = 0xc000_0200u32 | (rng.next_u64() as u32 & 0xffff);
                        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                        (a & mask, len)
                    };
                    let p = [22u16, 53, 80, 443][rng.range(0, 3) as usize];
                    CbRule {
                        src: net(&mut rng),
                        dst: net(&mut rng),
                        sport: if rng.range(0, 1) == 0 {
                            (0, 65535)
                        } else {
                            (1024, 65535)
                        },
                        dport: if rng.range(0, 1) == 0 {
                            (p, p)
                        } else {
                            (0, 1023)
                        },
                        proto: [(6u8, 0xffu8), (17, 0xff), (0, 0), (4, 0xfc)]
                            [rng.range(0, 3) as usize],
                    }
                })
                .collect();
            let flat: Vec<(Boxes, u32)> = rules
                .iter()
                .enumerate()
                .flat_map(|(i, r)| boxes(r).into_iter().map(move |b| (b, i as u32)))
                .collect();
            let t = Tree::build(&flat).unwrap();
            let trace: Vec<_> = generate_trace(&rules, 5_000, n as u64)
                .into_iter()
                .map(|t| t.0)
                .collect();
            let keys: Vec<[u32; 5]> = trace
                .iter()
                .map(|h| {
                    [
                        h.src,
                        h.dst,
                        u32::from(h.sport),
                        u32::from(h.dport),
                        u32::from(h.proto),
                    ]
                })
                .collect();
            // A forest may legitimately exceed its budget on the largest set (callers then
            // fall back); the small ones must build.
            let f = Forest::build(&flat);
            assert!(f.is_some(), "forest failed at {n} rules");
            let mut out = vec![None; keys.len()];
            let mut fout = vec![None; keys.len()];
            t.classify_batch(&keys, &mut out);
            if let Some(f) = &f {
                f.classify_batch(&keys, &mut fout);
            }
            for (((h, k), b), fb) in trace.iter().zip(&keys).zip(&out).zip(&fout) {
                let want = reference_match(&rules, h);
                assert_eq!(t.classify(*k), want, "{h:?}");
                assert_eq!(*b, want, "{h:?}");
                if let Some(f) = &f {
                    assert_eq!(f.classify(*k), want, "forest {h:?}");
                    assert_eq!(*fb, want, "forest {h:?}");
                }
            }
        }
    }

    #[test]
    fn bit_vector_members_map_boxes_back_to_rule_ids() {
        // Rule 0 is two boxes (protocols 6 and 17), rule 1 one box; ids, not box indices, come out.
        let mut a = FULL;
        a[4] = (6, 6);
        let mut b = FULL;
        b[4] = (17, 17);
        let mut c = FULL;
        c[3] = (53, 53);
        let group = [(a, 0), (b, 0), (c, 1)];
        let m = bits_member(&group).unwrap();
        let key = |dport: u32, proto: u32| [1, 2, 3, dport, proto];
        assert_eq!(m.classify(key(53, 17)), Some(0));
        assert_eq!(m.classify(key(53, 1)), Some(1));
        assert_eq!(m.classify(key(80, 1)), None);
        let keys = [key(53, 17), key(53, 1), key(80, 1), key(80, 6)];
        let mut out = [None; 4];
        m.classify_batch(&keys, &mut out);
        assert_eq!(out, [Some(0), Some(1), None, Some(0)]);
    }

    #[test]
    fn later_bounds_never_exceed_a_later_match() {
        // Group A: source-specific rules; group B (visited later): source-wild ones with
        // interleaved ids. The bound a header's scan in A's tree reports must be at most the id
        // of every B rule it matches, and must let some headers skip B.
        let mut rng = SplitMix64::new(11);
        let mut a = Vec::new();
        let mut b = Vec::new();
        for id in 0..400u32 {
            let mut r = FULL;
            let net = 0xc000_0200u32 | (rng.next_u64() as u32 & 0xff00);
            r[1] = (net, net | 0xff);
            r[3] = match rng.range(0, 2) {
                0 => (0, 65535),
                1 => (53, 53),
                _ => (0, 1023),
            };
            r[4] = [(6, 6), (17, 17), (0, 255)][rng.range(0, 2) as usize];
            if rng.range(0, 2) == 0 {
                b.push((r, id));
            } else {
                let src = 0xc633_6400u32 | (rng.next_u64() as u32 & 0xf0);
                r[0] = (src, src | 0xf);
                a.push((r, id));
            }
        }
        let mut t = Tree::build(&a).unwrap();
        t.set_later_bounds(&b);
        assert!(!t.later.is_empty());
        let (mut skipped, mut b_needed) = (0, 0);
        for i in 0..20_000u32 {
            let pick = |rng: &mut SplitMix64, (lo, hi): (u32, u32)| {
                rng.range(u64::from(lo), u64::from(hi)) as u32
            };
            // Half the headers aim at an A rule's destination, half at a B rule's.
            let src_box = a[i as usize % a.len()].0;
            let dst_box = if i % 2 == 0 {
                src_box
            } else {
                b[i as usize % b.len()].0
            };
            let k = [
                pick(&mut rng, src_box[0]),
                pick(&mut rng, dst_box[1]),
                pick(&mut rng, (0, 65535)),
                [53, 80, 443, 5000][rng.range(0, 3) as usize],
                [6, 17, 1][rng.range(0, 2) as usize],
            ];
            let lk = lane(k);
            let (got, e) = t.scan_entry(t.find_leaf(&lk), &lk);
            let bound = t.later[e];
            let first_b = b
                .iter()
                .filter(|r| r.0.iter().zip(&k).all(|(f, v)| f.0 <= *v && *v <= f.1))
                .map(|r| r.1)
                .min();
            if let Some(id) = first_b {
                assert!(bound <= id, "key {k:?}: bound {bound} > later match {id}");
            }
            if bound == u32::MAX || got.is_some_and(|g| g < bound) {
                skipped += 1;
            }
            if first_b.is_some_and(|id| got.is_none_or(|g| id < g)) {
                b_needed += 1;
            }
        }
        assert!(
            skipped > 1_000 && b_needed > 1_000,
            "skipped {skipped}, B needed {b_needed}"
        );
    }

    #[test]
    fn rejects_out_of_domain_ranges() {
        let mut b = FULL;
        b[2] = (0, 70_000);
        assert!(Tree::build(&[(b, 0)]).is_none());
        let mut b = FULL;
        b[0] = (5, 4);
        assert!(Tree::build(&[(b, 0)]).is_none());
    }
}
