//! Exact set arithmetic over the packet match space.
//!
//! A [`Ranges`] is a finite union of inclusive integer intervals (addresses as `u128` per
//! family, ports, protocol numbers, interface and owner atoms all share it). A [`Cube`] is a
//! product of one `Ranges` per [`Dim`] for one IP family; a [`Region`] is a union of cubes.
//! Subtraction of a cube from a cube splits along one dimension at a time, so the result is
//! exact and has at most one piece per dimension.

use smallvec::{smallvec, SmallVec};

/// Dimensions of the packet space, in the order cube subtraction splits them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dim {
    /// Source address (IPv4 addresses as `0..2^32`, IPv6 as `0..2^128`).
    Src = 0,
    /// Destination address.
    Dst = 1,
    /// IP protocol number (0..=255).
    Proto = 2,
    /// Destination port (TCP/UDP; any value for other protocols).
    Dport = 3,
    /// Source port.
    Sport = 4,
    /// ICMP/ICMPv6 type (any value for other protocols).
    Icmp = 5,
    /// Input interface atom.
    Iif = 6,
    /// Output interface atom.
    Oif = 7,
    /// Conntrack state atom.
    Ct = 8,
    /// Socket owner atom.
    Owner = 9,
}

/// Number of dimensions.
pub const NDIM: usize = 10;

impl Dim {
    /// Every dimension in index order.
    pub const ALL: [Dim; NDIM] = [
        Dim::Src,
        Dim::Dst,
        Dim::Proto,
        Dim::Dport,
        Dim::Sport,
        Dim::Icmp,
        Dim::Iif,
        Dim::Oif,
        Dim::Ct,
        Dim::Owner,
    ];
}

/// IP family of a cube.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fam {
    /// IPv4.
    V4,
    /// IPv6.
    V6,
}

impl Fam {
    /// Both families.
    pub const BOTH: [Fam; 2] = [Fam::V4, Fam::V6];

    /// Largest address value of the family.
    pub fn addr_max(self) -> u128 {
        match self {
            Fam::V4 => u128::from(u32::MAX),
            Fam::V6 => u128::MAX,
        }
    }

    /// Address width in bits.
    pub fn bits(self) -> u32 {
        match self {
            Fam::V4 => 32,
            Fam::V6 => 128,
        }
    }
}

type Ivs = SmallVec<[(u128, u128); 1]>;

/// A finite union of inclusive intervals, kept sorted, disjoint and non-adjacent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ranges(Ivs);

impl Ranges {
    /// The empty set.
    pub fn empty() -> Self {
        Ranges(SmallVec::new())
    }

    /// The interval `[lo, hi]` (empty when `lo > hi`).
    pub fn interval(lo: u128, hi: u128) -> Self {
        if lo > hi {
            Self::empty()
        } else {
            Ranges(smallvec![(lo, hi)])
        }
    }

    /// A single value.
    pub fn single(v: u128) -> Self {
        Ranges(smallvec![(v, v)])
    }

    /// Normalises arbitrary intervals (any order, overlapping; `lo > hi` ones are dropped).
    pub fn from_intervals<I: IntoIterator<Item = (u128, u128)>>(it: I) -> Self {
        let mut v: Ivs = it.into_iter().filter(|(l, h)| l <= h).collect();
        v.sort_unstable();
        let mut out: Ivs = SmallVec::with_capacity(v.len());
        for (lo, hi) in v {
            if let Some(last) = out.last_mut() {
                // Merge overlapping and adjacent intervals (`last.1 + 1 >= lo` without overflow).
                if last.1 == u128::MAX || last.1 + 1 >= lo {
                    if hi > last.1 {
                        last.1 = hi;
                    }
                    continue;
                }
            }
            out.push((lo, hi));
        }
        Ranges(out)
    }

    /// The intervals.
    pub fn intervals(&self) -> &[(u128, u128)] {
        &self.0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `v` is a member.
    pub fn contains(&self, v: u128) -> bool {
        match self.0.binary_search_by(|&(lo, _)| lo.cmp(&v)) {
            Ok(_) => true,
            Err(0) => false,
            Err(i) => self.0[i - 1].1 >= v,
        }
    }

    /// Smallest interval containing the set.
    pub fn hull(&self) -> Option<(u128, u128)> {
        Some((self.0.first()?.0, self.0.last()?.1))
    }

    /// Number of members, saturating at `u128::MAX`.
    pub fn count(&self) -> u128 {
        self.0.iter().fold(0u128, |acc, (lo, hi)| {
            acc.saturating_add((hi - lo).saturating_add(1))
        })
    }

    /// Whether the two sets share a member (no allocation).
    pub fn overlaps(&self, other: &Ranges) -> bool {
        let (a, b) = (&self.0, &other.0);
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            if a[i].1 < b[j].0 {
                i += 1;
            } else if b[j].1 < a[i].0 {
                j += 1;
            } else {
                return true;
            }
        }
        false
    }

    /// Set intersection.
    pub fn intersect(&self, other: &Ranges) -> Ranges {
        let (a, b) = (&self.0, &other.0);
        let mut out = Ivs::new();
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            let lo = a[i].0.max(b[j].0);
            let hi = a[i].1.min(b[j].1);
            if lo <= hi {
                out.push((lo, hi));
            }
            if a[i].1 < b[j].1 {
                i += 1;
            } else {
                j += 1;
            }
        }
        Ranges(out)
    }

    /// Set difference `self \ other`.
    pub fn subtract(&self, other: &Ranges) -> Ranges {
        let mut out = Ivs::new();
        let b = &other.0;
        let mut j = 0;
        for &(lo, hi) in &self.0 {
            let mut cur = lo;
            let mut done = false;
            // Skip subtrahend intervals entirely below this one.
            while j < b.len() && b[j].1 < cur {
                j += 1;
            }
            let mut k = j;
            while k < b.len() && b[k].0 <= hi {
                if b[k].0 > cur {
                    out.push((cur, b[k].0 - 1));
                }
                if b[k].1 >= hi {
                    done = true;
                    break;
                }
                cur = b[k].1 + 1;
                k += 1;
            }
            if !done {
                out.push((cur, hi));
            }
        }
        Ranges(out)
    }

    /// Set union.
    pub fn union(&self, other: &Ranges) -> Ranges {
        Ranges::from_intervals(self.0.iter().chain(other.0.iter()).copied())
    }

    /// Whether every member of `self` is in `other`.
    pub fn is_subset(&self, other: &Ranges) -> bool {
        let b = &other.0;
        let mut j = 0;
        for &(lo, hi) in &self.0 {
            while j < b.len() && b[j].1 < lo {
                j += 1;
            }
            match b.get(j) {
                Some(&(blo, bhi)) if blo <= lo && hi <= bhi => {}
                _ => return false,
            }
        }
        true
    }
}

/// A product of one [`Ranges`] per [`Dim`] within one family.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Cube {
    /// Family of the addresses.
    pub fam: Fam,
    /// One set per dimension, indexed by `Dim as usize`.
    pub dims: [Ranges; NDIM],
}

impl Cube {
    /// The set of one dimension.
    pub fn get(&self, d: Dim) -> &Ranges {
        &self.dims[d as usize]
    }

    /// Whether any dimension is empty (then the cube holds no packet).
    pub fn is_empty(&self) -> bool {
        self.dims.iter().any(Ranges::is_empty)
    }

    /// Whether the cubes share a packet.
    pub fn overlaps(&self, other: &Cube) -> bool {
        self.fam == other.fam
            && self
                .dims
                .iter()
                .zip(&other.dims)
                .all(|(a, b)| a.overlaps(b))
    }

    /// Intersection, `None` when empty.
    pub fn intersect(&self, other: &Cube) -> Option<Cube> {
        if !self.overlaps(other) {
            return None;
        }
        let dims = std::array::from_fn(|i| self.dims[i].intersect(&other.dims[i]));
        Some(Cube {
            fam: self.fam,
            dims,
        })
    }

    /// Whether `self ⊆ other`.
    pub fn is_subset(&self, other: &Cube) -> bool {
        self.is_empty()
            || (self.fam == other.fam
                && self
                    .dims
                    .iter()
                    .zip(&other.dims)
                    .all(|(a, b)| a.is_subset(b)))
    }

    /// `self \ other` as disjoint cubes (at most [`NDIM`]), appended to `out`.
    pub fn subtract_into(&self, other: &Cube, out: &mut Vec<Cube>) {
        if !self.overlaps(other) {
            out.push(self.clone());
            return;
        }
        let mut cur = self.clone();
        for i in 0..NDIM {
            let rest = cur.dims[i].subtract(&other.dims[i]);
            if !rest.is_empty() {
                let mut piece = cur.clone();
                piece.dims[i] = rest;
                out.push(piece);
                cur.dims[i] = cur.dims[i].intersect(&other.dims[i]);
            }
        }
    }
}

/// The subtraction produced more than the allowed number of cubes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("region exceeded {limit} cubes")]
pub struct TooComplex {
    /// The cap that was hit.
    pub limit: usize,
}

/// A union of cubes (not necessarily disjoint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Region {
    /// The cubes.
    pub cubes: Vec<Cube>,
}

impl Region {
    /// A region from cubes, dropping empty ones.
    pub fn new(cubes: Vec<Cube>) -> Self {
        Region {
            cubes: cubes.into_iter().filter(|c| !c.is_empty()).collect(),
        }
    }

    /// Whether the region holds no packet.
    pub fn is_empty(&self) -> bool {
        self.cubes.is_empty()
    }

    /// Whether any cube of `self` overlaps any cube of `other`.
    pub fn overlaps(&self, other: &Region) -> bool {
        self.cubes
            .iter()
            .any(|a| other.cubes.iter().any(|b| a.overlaps(b)))
    }

    /// Intersection.
    pub fn intersect(&self, other: &Region) -> Region {
        let mut out = Vec::new();
        for a in &self.cubes {
            for b in &other.cubes {
                if let Some(c) = a.intersect(b) {
                    out.push(c);
                }
            }
        }
        Region { cubes: out }
    }

    /// `self \ other`, failing when an intermediate result exceeds `limit` cubes.
    pub fn subtract(&self, other: &Region, limit: usize) -> Result<Region, TooComplex> {
        let mut r = self.clone();
        r.subtract_in_place(other, limit)?;
        Ok(r)
    }

    /// `self = self \ other`; on `Err` (more than `limit` cubes) `self` is left partly
    /// subtracted and must not be used as a result.
    pub fn subtract_in_place(&mut self, other: &Region, limit: usize) -> Result<(), TooComplex> {
        let mut pieces = Vec::new();
        for b in &other.cubes {
            // Only cubes the subtrahend touches are taken out and split; the others stay in
            // place (cubes are large, moving all of them each time dominated the run time).
            let mut i = 0;
            while i < self.cubes.len() {
                if self.cubes[i].overlaps(b) {
                    let a = self.cubes.swap_remove(i);
                    a.subtract_into(b, &mut pieces);
                } else {
                    i += 1;
                }
            }
            self.cubes.append(&mut pieces);
            if self.cubes.len() > limit {
                return Err(TooComplex { limit });
            }
            if self.cubes.is_empty() {
                break;
            }
        }
        Ok(())
    }

    /// Union (concatenation).
    pub fn union(&self, other: &Region) -> Region {
        let mut cubes = self.cubes.clone();
        cubes.extend(other.cubes.iter().cloned());
        Region { cubes }
    }

    /// Whether `self ⊆ other`, or `Err` when deciding needed too many cubes.
    pub fn is_subset(&self, other: &Region, limit: usize) -> Result<bool, TooComplex> {
        Ok(self.subtract(other, limit)?.is_empty())
    }
}

/// The minimal list of prefixes `(network, prefix_len)` covering `[lo, hi]` in a space of
/// `bits` bits.
pub fn range_to_prefixes(lo: u128, hi: u128, bits: u32) -> Vec<(u128, u32)> {
    let mut out = Vec::new();
    let mut cur = lo;
    loop {
        if cur > hi {
            break;
        }
        // Largest aligned block starting at `cur` that stays within `hi`.
        let align = if cur == 0 {
            bits
        } else {
            cur.trailing_zeros().min(bits)
        };
        let mut size_log = align;
        while size_log > 0 {
            let last = if size_log >= 128 {
                u128::MAX
            } else {
                cur + ((1u128 << size_log) - 1)
            };
            if last <= hi && last >= cur {
                break;
            }
            size_log -= 1;
        }
        out.push((cur, bits - size_log));
        let last = if size_log >= 128 {
            u128::MAX
        } else {
            cur + ((1u128 << size_log) - 1)
        };
        if last == u128::MAX || last >= hi {
            break;
        }
        cur = last + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    const SMALL: u128 = 15;

    fn members(r: &Ranges) -> BTreeSet<u128> {
        r.intervals().iter().flat_map(|&(l, h)| l..=h).collect()
    }

    fn ranges_strategy() -> impl Strategy<Value = Ranges> {
        prop::collection::vec((0..=SMALL, 0..=SMALL), 0..4)
            .prop_map(|v| Ranges::from_intervals(v.into_iter().map(|(a, b)| (a.min(b), a.max(b)))))
    }

    fn normalised(r: &Ranges) -> bool {
        r.intervals().windows(2).all(|w| w[0].1 + 1 < w[1].0)
            && r.intervals().iter().all(|(l, h)| l <= h)
    }

    proptest! {
        #[test]
        fn ranges_ops_match_brute_force(a in ranges_strategy(), b in ranges_strategy()) {
            let (ma, mb) = (members(&a), members(&b));
            let i = a.intersect(&b);
            let s = a.subtract(&b);
            let u = a.union(&b);
            prop_assert!(normalised(&i) && normalised(&s) && normalised(&u));
            prop_assert_eq!(members(&i), ma.intersection(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(members(&s), ma.difference(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(members(&u), ma.union(&mb).copied().collect::<BTreeSet<_>>());
            prop_assert_eq!(a.overlaps(&b), !ma.is_disjoint(&mb));
            prop_assert_eq!(a.is_subset(&b), ma.is_subset(&mb));
            prop_assert_eq!(a.count(), ma.len() as u128);
            for v in 0..=SMALL {
                prop_assert_eq!(a.contains(v), ma.contains(&v));
            }
        }

        #[test]
        fn prefixes_cover_range_exactly(lo in 0u128..=SMALL, len in 0u128..=SMALL) {
            let hi = (lo + len).min(SMALL);
            let p = range_to_prefixes(lo, hi, 4);
            let mut covered = BTreeSet::new();
            for &(net, plen) in &p {
                let size = 1u128 << (4 - plen);
                prop_assert_eq!(net % size, 0, "prefix {}/{} is not aligned", net, plen);
                for v in net..net + size {
                    prop_assert!(covered.insert(v), "prefixes overlap at {}", v);
                }
            }
            prop_assert_eq!(covered, (lo..=hi).collect::<BTreeSet<_>>());
            // Minimal: no two prefixes could merge into their common parent.
            for w in p.windows(2) {
                let (a, la) = w[0];
                let (b, lb) = w[1];
                let mergeable = la == lb && la > 0 && (a >> (4 - la + 1)) == (b >> (4 - lb + 1));
                prop_assert!(!mergeable, "{:?} is not minimal", p);
            }
        }

        #[test]
        fn cube_subtraction_matches_brute_force(
            a in cube_strategy(), b in cube_strategy(), c in cube_strategy()
        ) {
            let ra = Region::new(vec![a.clone()]);
            let rbc = Region::new(vec![b.clone(), c.clone()]);
            let diff = ra.subtract(&rbc, 10_000).unwrap();
            let inter = ra.intersect(&rbc);
            for p in points() {
                let in_a = point_in(&a, &p);
                let in_bc = point_in(&b, &p) || point_in(&c, &p);
                prop_assert_eq!(diff.cubes.iter().any(|x| point_in(x, &p)), in_a && !in_bc);
                prop_assert_eq!(inter.cubes.iter().any(|x| point_in(x, &p)), in_a && in_bc);
            }
            // Pieces of a single-cube subtraction are pairwise disjoint.
            let mut pieces = Vec::new();
            a.subtract_into(&b, &mut pieces);
            for (i, x) in pieces.iter().enumerate() {
                for y in &pieces[i + 1..] {
                    prop_assert!(!x.overlaps(y));
                }
            }
            prop_assert_eq!(a.is_subset(&b), points().all(|p| !point_in(&a, &p) || point_in(&b, &p)));
        }
    }

    // Small cubes: three live dimensions of 4 values each, the others fixed to {0}.
    fn cube_strategy() -> impl Strategy<Value = Cube> {
        let dim = prop::collection::vec((0u128..4, 0u128..4), 1..3)
            .prop_map(|v| Ranges::from_intervals(v.into_iter().map(|(a, b)| (a.min(b), a.max(b)))));
        (dim.clone(), dim.clone(), dim).prop_map(|(s, d, p)| {
            let mut dims: [Ranges; NDIM] = std::array::from_fn(|_| Ranges::single(0));
            dims[Dim::Src as usize] = s;
            dims[Dim::Dst as usize] = d;
            dims[Dim::Dport as usize] = p;
            Cube { fam: Fam::V4, dims }
        })
    }

    fn points() -> impl Iterator<Item = [u128; 3]> {
        (0..64u128).map(|i| [i % 4, (i / 4) % 4, i / 16])
    }

    fn point_in(c: &Cube, p: &[u128; 3]) -> bool {
        c.get(Dim::Src).contains(p[0])
            && c.get(Dim::Dst).contains(p[1])
            && c.get(Dim::Dport).contains(p[2])
    }

    #[test]
    fn full_ipv6_space_does_not_overflow() {
        let full = Ranges::interval(0, u128::MAX);
        assert_eq!(full.count(), u128::MAX);
        let hole = Ranges::single(u128::MAX);
        assert_eq!(full.subtract(&hole), Ranges::interval(0, u128::MAX - 1));
        assert_eq!(Ranges::from_intervals([(0, u128::MAX), (5, 6)]), full);
        assert_eq!(range_to_prefixes(0, u128::MAX, 128), vec![(0, 0)]);
        assert_eq!(range_to_prefixes(0, u128::from(u32::MAX), 32), vec![(0, 0)]);
    }

    #[test]
    fn prefixes_of_a_typical_range() {
        // 192.0.2.0 - 192.0.2.127 is one /25.
        let base = u128::from(u32::from(std::net::Ipv4Addr::new(192, 0, 2, 0)));
        assert_eq!(range_to_prefixes(base, base + 127, 32), vec![(base, 25)]);
        assert_eq!(
            range_to_prefixes(base + 1, base + 4, 32),
            vec![(base + 1, 32), (base + 2, 31), (base + 4, 32)]
        );
    }
}
