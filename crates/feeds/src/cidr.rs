//! Exact prefix arithmetic: dedupe, aggregation to the minimal CIDR cover, allowlist
//! subtraction with a report of what was removed, v4/v6 and singles/prefixes splits.
//!
//! Everything works on closed ranges `[start, end]` of `u128` per family (IPv4 uses the low 32
//! bits). A set of prefixes is turned into sorted, merged maximal ranges; a maximal range is then
//! cut into the fewest aligned blocks (the greedy decomposition, which is optimal for one range,
//! and ranges are independent because they are separated by a gap). This is exact for both
//! families and O(n log n).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// IP family of a range list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fam {
    /// IPv4 (32-bit addresses).
    V4,
    /// IPv6 (128-bit addresses).
    V6,
}

impl Fam {
    /// Address width in bits.
    pub fn bits(self) -> u8 {
        match self {
            Fam::V4 => 32,
            Fam::V6 => 128,
        }
    }

    fn max(self) -> u128 {
        match self {
            Fam::V4 => u32::MAX as u128,
            Fam::V6 => u128::MAX,
        }
    }
}

/// A closed address range `[start, end]` in one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Range {
    /// First address.
    pub start: u128,
    /// Last address (inclusive).
    pub end: u128,
}

/// The family and range of a prefix (host bits are ignored).
pub fn net_range(net: &IpNet) -> (Fam, Range) {
    match net {
        IpNet::V4(n) => {
            let n = n.trunc();
            let start = u32::from(n.network()) as u128;
            let end = u32::from(n.broadcast()) as u128;
            (Fam::V4, Range { start, end })
        }
        IpNet::V6(n) => {
            let n = n.trunc();
            let start = u128::from(n.network());
            let end = u128::from(n.broadcast());
            (Fam::V6, Range { start, end })
        }
    }
}

/// The address `value` of family `fam`.
pub fn addr(fam: Fam, value: u128) -> IpAddr {
    match fam {
        // Why: V4 values come only from V4 prefixes, so they fit in 32 bits.
        Fam::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Fam::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

fn make_net(fam: Fam, start: u128, len: u8) -> IpNet {
    match fam {
        Fam::V4 => IpNet::V4(
            Ipv4Net::new(Ipv4Addr::from(start as u32), len).unwrap_or_else(|_| Ipv4Net::default()),
        ),
        Fam::V6 => IpNet::V6(
            Ipv6Net::new(Ipv6Addr::from(start), len).unwrap_or_else(|_| Ipv6Net::default()),
        ),
    }
}

/// Sort and merge overlapping or adjacent ranges into maximal disjoint ranges.
pub fn merge_ranges(ranges: &mut Vec<Range>) {
    if ranges.len() < 2 {
        return;
    }
    ranges.sort_unstable();
    let mut w = 0usize;
    for r in 1..ranges.len() {
        let cur = ranges[r];
        let last = &mut ranges[w];
        // Adjacent (`last.end + 1 == cur.start`) merges too; `end == MAX` cannot overflow
        // because nothing can follow it.
        if cur.start <= last.end || (last.end != u128::MAX && cur.start == last.end + 1) {
            if cur.end > last.end {
                last.end = cur.end;
            }
        } else {
            w += 1;
            ranges[w] = cur;
        }
    }
    ranges.truncate(w + 1);
}

/// Append the fewest prefixes that exactly cover `[start, end]` to `out`.
pub fn range_to_nets(fam: Fam, range: Range, out: &mut Vec<IpNet>) {
    let bits = fam.bits() as u32;
    let (mut s, e) = (range.start, range.end.min(fam.max()));
    if s > e {
        return;
    }
    loop {
        let tz = if s == 0 {
            bits
        } else {
            s.trailing_zeros().min(bits)
        };
        let span = e - s;
        let fit = if span == u128::MAX {
            128
        } else {
            127 - (span + 1).leading_zeros()
        };
        let k = tz.min(fit);
        out.push(make_net(fam, s, (bits - k) as u8));
        if k >= 128 {
            return;
        }
        let last = s + ((1u128 << k) - 1);
        if last >= e {
            return;
        }
        s = last + 1;
    }
}

/// Prefixes split by family, each list sorted, disjoint and minimal.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyNets {
    /// IPv4 prefixes.
    pub v4: Vec<IpNet>,
    /// IPv6 prefixes.
    pub v6: Vec<IpNet>,
}

impl FamilyNets {
    /// Total number of prefixes.
    pub fn len(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// Whether there are no prefixes.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Both families, v4 first.
    pub fn all(&self) -> Vec<IpNet> {
        let mut v = self.v4.clone();
        v.extend_from_slice(&self.v6);
        v
    }
}

/// Maximal merged ranges per family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyRanges {
    /// IPv4 ranges, sorted, disjoint, non-adjacent.
    pub v4: Vec<Range>,
    /// IPv6 ranges, sorted, disjoint, non-adjacent.
    pub v6: Vec<Range>,
}

impl FamilyRanges {
    /// Build from prefixes (any order, duplicates and overlaps allowed).
    pub fn from_nets<'a>(nets: impl IntoIterator<Item = &'a IpNet>) -> Self {
        let mut out = FamilyRanges::default();
        // Why: IPv4 ranges packed into one u64 (start << 32 | end) sort about three times faster
        // than 32-byte u128 pairs, and feeds are mostly IPv4.
        let mut packed: Vec<u64> = Vec::new();
        for n in nets {
            match n {
                IpNet::V4(v4) => {
                    let v4 = v4.trunc();
                    let s = u32::from(v4.network()) as u64;
                    let e = u32::from(v4.broadcast()) as u64;
                    packed.push((s << 32) | e);
                }
                IpNet::V6(_) => out.v6.push(net_range(n).1),
            }
        }
        packed.sort_unstable();
        out.v4 = packed
            .iter()
            .map(|p| Range {
                start: (p >> 32) as u128,
                end: (p & 0xffff_ffff) as u128,
            })
            .collect();
        merge_ranges(&mut out.v4);
        merge_ranges(&mut out.v6);
        out
    }

    /// The ranges of one family.
    pub fn of(&self, fam: Fam) -> &[Range] {
        match fam {
            Fam::V4 => &self.v4,
            Fam::V6 => &self.v6,
        }
    }

    /// The minimal prefix cover of these ranges.
    pub fn to_nets(&self) -> FamilyNets {
        let mut out = FamilyNets::default();
        for r in &self.v4 {
            range_to_nets(Fam::V4, *r, &mut out.v4);
        }
        for r in &self.v6 {
            range_to_nets(Fam::V6, *r, &mut out.v6);
        }
        out
    }

    /// Number of addresses covered per family (v6 saturates at `u128::MAX`).
    pub fn address_counts(&self) -> (u128, u128) {
        let count = |rs: &[Range]| {
            rs.iter().fold(0u128, |acc, r| {
                acc.saturating_add((r.end - r.start).saturating_add(1))
            })
        };
        (count(&self.v4), count(&self.v6))
    }
}

/// Aggregate `nets` to the minimal exact prefix cover (dedupes, merges overlaps and siblings).
pub fn aggregate(nets: &[IpNet]) -> FamilyNets {
    FamilyRanges::from_nets(nets).to_nets()
}

/// `a \ b` and `a ∩ b` for sorted disjoint range lists.
fn subtract_ranges(a: &[Range], b: &[Range]) -> (Vec<Range>, Vec<Range>) {
    let mut kept = Vec::with_capacity(a.len());
    let mut removed = Vec::new();
    let mut j = 0usize;
    for r in a {
        let mut s = r.start;
        let e = r.end;
        let mut open = true;
        while j < b.len() && b[j].end < s {
            j += 1;
        }
        let mut k = j;
        while open && k < b.len() && b[k].start <= e {
            let cut = b[k];
            if cut.start > s {
                kept.push(Range {
                    start: s,
                    end: cut.start - 1,
                });
            }
            let rm_start = s.max(cut.start);
            let rm_end = e.min(cut.end);
            removed.push(Range {
                start: rm_start,
                end: rm_end,
            });
            if cut.end >= e {
                open = false;
            } else {
                s = cut.end + 1;
                k += 1;
            }
        }
        if open {
            kept.push(Range { start: s, end: e });
        }
    }
    (kept, removed)
}

/// One feed prefix that overlapped the allowlist: what was removed and what was kept of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitRecord {
    /// The aggregated feed prefix as it would have been loaded.
    pub original: IpNet,
    /// The parts removed because they are allowlisted (minimal cover).
    pub removed: Vec<IpNet>,
    /// The parts kept (minimal cover; empty when the whole prefix was allowlisted).
    pub kept: Vec<IpNet>,
}

/// What allowlist subtraction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubtractReport {
    /// Every address removed, as a minimal cover.
    pub removed: Vec<IpNet>,
    /// Per aggregated feed prefix that overlapped the allowlist (bounded by
    /// [`MAX_SPLIT_RECORDS`]; `records_dropped` counts the rest).
    pub records: Vec<SplitRecord>,
    /// Split records not kept because of the bound.
    pub records_dropped: u64,
}

/// Upper bound on [`SubtractReport::records`], so a hostile allowlist/feed pair cannot make the
/// report unbounded.
pub const MAX_SPLIT_RECORDS: usize = 10_000;

/// Subtract `allow` from the ranges and report per aggregated prefix what was removed.
pub fn subtract(feed: &FamilyRanges, allow: &FamilyRanges) -> (FamilyRanges, SubtractReport) {
    let mut out = FamilyRanges::default();
    let mut report = SubtractReport::default();
    for fam in [Fam::V4, Fam::V6] {
        let (kept, removed) = subtract_ranges(feed.of(fam), allow.of(fam));
        for r in &removed {
            range_to_nets(fam, *r, &mut report.removed);
        }
        if !removed.is_empty() {
            // Per-prefix records: walk the aggregated prefixes of the original ranges that
            // intersect the allowlist.
            let allow_r = allow.of(fam);
            let mut originals = Vec::new();
            let mut j = 0usize;
            for r in feed.of(fam) {
                // Only feed ranges that meet the allowlist need per-prefix records.
                while j < allow_r.len() && allow_r[j].end < r.start {
                    j += 1;
                }
                if j < allow_r.len() && allow_r[j].start <= r.end {
                    range_to_nets(fam, *r, &mut originals);
                }
            }
            for o in originals {
                let (_, orng) = net_range(&o);
                let (k, rm) = subtract_ranges(&[orng], allow_r);
                if rm.is_empty() {
                    continue;
                }
                if report.records.len() >= MAX_SPLIT_RECORDS {
                    report.records_dropped += 1;
                    continue;
                }
                let mut rec = SplitRecord {
                    original: o,
                    removed: Vec::new(),
                    kept: Vec::new(),
                };
                for r in rm {
                    range_to_nets(fam, r, &mut rec.removed);
                }
                for r in k {
                    range_to_nets(fam, r, &mut rec.kept);
                }
                report.records.push(rec);
            }
        }
        match fam {
            Fam::V4 => out.v4 = kept,
            Fam::V6 => out.v6 = kept,
        }
    }
    (out, report)
}

/// A normalised feed: minimal cover after allowlist subtraction, split for the kernel set types.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NormalizedNets {
    /// Entries before normalisation.
    pub input_entries: u64,
    /// The minimal cover after subtraction, per family (what an interval set holds).
    pub nets: FamilyNets,
    /// Single addresses (/32, /128) of [`Self::nets`], for hash sets.
    pub singles: FamilyNets,
    /// Real prefixes (shorter than the address width) of [`Self::nets`], for interval sets.
    pub prefixes: FamilyNets,
    /// What the allowlist removed.
    pub subtracted: SubtractReport,
}

impl NormalizedNets {
    /// Number of kernel elements (prefixes + singles).
    pub fn len(&self) -> usize {
        self.nets.len()
    }

    /// Whether nothing is left.
    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }
}

/// Dedupe, aggregate, subtract `allow` (the policy's own networks, allowlisted ranges) and split.
pub fn normalize(nets: &[IpNet], allow: &[IpNet]) -> NormalizedNets {
    let feed = FamilyRanges::from_nets(nets);
    let allow = FamilyRanges::from_nets(allow);
    let (kept, subtracted) = subtract(&feed, &allow);
    let cover = kept.to_nets();
    let (mut singles, mut prefixes) = (FamilyNets::default(), FamilyNets::default());
    for n in &cover.v4 {
        if n.prefix_len() == 32 {
            singles.v4.push(*n);
        } else {
            prefixes.v4.push(*n);
        }
    }
    for n in &cover.v6 {
        if n.prefix_len() == 128 {
            singles.v6.push(*n);
        } else {
            prefixes.v6.push(*n);
        }
    }
    NormalizedNets {
        input_entries: nets.len() as u64,
        nets: cover,
        singles,
        prefixes,
        subtracted,
    }
}

/// Interpret an inclusive address range `a-b` as its minimal cover.
pub fn range_cover(a: IpAddr, b: IpAddr) -> Option<Vec<IpNet>> {
    let (fam, s, e) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (Fam::V4, u32::from(a) as u128, u32::from(b) as u128),
        (IpAddr::V6(a), IpAddr::V6(b)) => (Fam::V6, u128::from(a), u128::from(b)),
        _ => return None,
    };
    if s > e {
        return None;
    }
    let mut out = Vec::new();
    range_to_nets(fam, Range { start: s, end: e }, &mut out);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn strs(v: &[IpNet]) -> Vec<String> {
        v.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn siblings_merge_and_overlaps_vanish() {
        let a = aggregate(&[
            n("192.0.2.0/25"),
            n("192.0.2.128/25"),
            n("192.0.2.7/32"),
            n("198.51.100.0/24"),
            n("198.51.100.0/24"),
        ]);
        assert_eq!(strs(&a.v4), ["192.0.2.0/24", "198.51.100.0/24"]);
    }

    #[test]
    fn adjacent_unaligned_stays_two_prefixes() {
        let a = aggregate(&[n("192.0.2.0/24"), n("192.0.3.0/24"), n("192.0.4.0/24")]);
        assert_eq!(strs(&a.v4), ["192.0.2.0/23", "192.0.4.0/24"]);
    }

    #[test]
    fn whole_spaces_do_not_overflow() {
        assert_eq!(
            strs(&aggregate(&[n("::/0"), n("2001:db8::/32")]).v6),
            ["::/0"]
        );
        assert_eq!(strs(&aggregate(&[n("0.0.0.0/0")]).v4), ["0.0.0.0/0"]);
        let a = aggregate(&[n("0.0.0.0/1"), n("128.0.0.0/1")]);
        assert_eq!(strs(&a.v4), ["0.0.0.0/0"]);
        let a = aggregate(&[
            n("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128"),
            n("::/128"),
        ]);
        assert_eq!(a.v6.len(), 2);
    }

    #[test]
    fn subtraction_splits_and_reports() {
        let feed = FamilyRanges::from_nets(&[n("198.51.100.0/24")]);
        let allow = FamilyRanges::from_nets(&[n("198.51.100.16/28")]);
        let (kept, rep) = subtract(&feed, &allow);
        let kept = kept.to_nets();
        assert_eq!(
            strs(&kept.v4),
            [
                "198.51.100.0/28",
                "198.51.100.32/27",
                "198.51.100.64/26",
                "198.51.100.128/25"
            ]
        );
        assert_eq!(strs(&rep.removed), ["198.51.100.16/28"]);
        assert_eq!(rep.records.len(), 1);
        assert_eq!(rep.records[0].original, n("198.51.100.0/24"));
        assert_eq!(rep.records[0].kept.len(), 4);
    }

    #[test]
    fn subtraction_of_whole_prefix_and_families_apart() {
        let norm = normalize(
            &[n("192.0.2.1/32"), n("2001:db8::1/128"), n("203.0.113.0/24")],
            &[n("192.0.2.0/24"), n("2001:db8::/127")],
        );
        assert_eq!(strs(&norm.nets.v4), ["203.0.113.0/24"]);
        assert!(norm.nets.v6.is_empty());
        assert_eq!(
            strs(&norm.subtracted.removed),
            ["192.0.2.1/32", "2001:db8::1/128"]
        );
        assert!(norm.singles.is_empty());
        assert_eq!(norm.prefixes.v4.len(), 1);
    }

    #[test]
    fn singles_and_prefixes_split() {
        let norm = normalize(
            &[n("192.0.2.1/32"), n("192.0.2.9/32"), n("198.51.100.0/31")],
            &[],
        );
        assert_eq!(strs(&norm.singles.v4), ["192.0.2.1/32", "192.0.2.9/32"]);
        assert_eq!(strs(&norm.prefixes.v4), ["198.51.100.0/31"]);
    }

    #[test]
    fn ranges_cover() {
        let v = range_cover("192.0.2.1".parse().unwrap(), "192.0.2.6".parse().unwrap()).unwrap();
        assert_eq!(
            strs(&v),
            [
                "192.0.2.1/32",
                "192.0.2.2/31",
                "192.0.2.4/31",
                "192.0.2.6/32"
            ]
        );
        assert!(range_cover("192.0.2.9".parse().unwrap(), "192.0.2.1".parse().unwrap()).is_none());
    }

    /// Brute-force reference on the 256-address space 192.0.2.0/24: membership bitmap, and the
    /// minimal exact cover size computed recursively on the binary trie (a block fully inside the
    /// set costs 1, an empty block 0, otherwise the sum of its halves).
    fn reference_cover(bits: &[bool], lo: usize, size: usize) -> usize {
        let slice = &bits[lo..lo + size];
        if slice.iter().all(|b| *b) {
            1
        } else if !slice.iter().any(|b| *b) {
            0
        } else {
            reference_cover(bits, lo, size / 2) + reference_cover(bits, lo + size / 2, size / 2)
        }
    }

    fn small_net() -> impl Strategy<Value = IpNet> {
        (0u8..=255, 24u8..=32).prop_map(|(host, len)| {
            IpNet::V4(
                Ipv4Net::new(Ipv4Addr::new(192, 0, 2, host), len)
                    .unwrap()
                    .trunc(),
            )
        })
    }

    proptest! {
        #[test]
        fn aggregation_matches_brute_force(
            feed in proptest::collection::vec(small_net(), 0..40),
            allow in proptest::collection::vec(small_net(), 0..6),
        ) {
            let mut want = [false; 256];
            for net in &feed {
                for (i, w) in want.iter_mut().enumerate() {
                    let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8));
                    if net.contains(&a) { *w = true; }
                }
            }
            for net in &allow {
                for (i, w) in want.iter_mut().enumerate() {
                    let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8));
                    if net.contains(&a) { *w = false; }
                }
            }
            let norm = normalize(&feed, &allow);
            for (i, w) in want.iter().enumerate() {
                let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8));
                let got = norm.nets.v4.iter().any(|n| n.contains(&a));
                prop_assert_eq!(got, *w, "address {}", a);
            }
            prop_assert_eq!(norm.nets.v4.len(), reference_cover(&want, 0, 256));
            // Disjoint and sorted.
            for pair in norm.nets.v4.windows(2) {
                prop_assert!(net_range(&pair[0]).1.end < net_range(&pair[1]).1.start);
            }
            // The removed report is exactly (feed ∩ allow).
            let removed = FamilyRanges::from_nets(&norm.subtracted.removed);
            let mut want_removed = [false; 256];
            for (i, w) in want_removed.iter_mut().enumerate() {
                let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, i as u8));
                *w = feed.iter().any(|n| n.contains(&a)) && allow.iter().any(|n| n.contains(&a));
            }
            let (c, _) = removed.address_counts();
            prop_assert_eq!(c as usize, want_removed.iter().filter(|b| **b).count());
        }

        #[test]
        fn v6_aggregation_covers_exactly(
            feed in proptest::collection::vec((0u16..=255, 120u8..=128), 0..30)
        ) {
            let nets: Vec<IpNet> = feed.iter().map(|(h, l)| {
                IpNet::V6(Ipv6Net::new(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, *h), *l).unwrap().trunc())
            }).collect();
            let agg = aggregate(&nets);
            let mut want = [false; 256];
            for (i, w) in want.iter_mut().enumerate() {
                let a = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16));
                *w = nets.iter().any(|n| n.contains(&a));
                prop_assert_eq!(agg.v6.iter().any(|n| n.contains(&a)), *w);
            }
            prop_assert_eq!(agg.v6.len(), reference_cover(&want, 0, 256));
        }
    }
}
