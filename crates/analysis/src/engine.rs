//! The per-rule analysis shared by `check` and `coverage`: each rule's effective region (what
//! it really decides after earlier rules) and which earlier rules take which part of it.

use rampart_ir::{Action, AppMatch, Direction, Policy, RuleId};

use crate::model::Model;
use crate::space::{Cube, Dim, Fam, Ranges, Region};

/// Cap on the number of cubes any intermediate region of one rule's analysis may hold. Beyond
/// it the analysis of that rule gives up and says so (finding `analysis-limit`) instead of
/// spending unbounded time and memory.
pub const MAX_CUBES: usize = 4096;

/// Beyond this many cubes a rule's exact remainder is abandoned; a witness search then tries
/// to prove the rule live (a packet it matches that no earlier rule matches).
pub const EXACT_CUBES: usize = 512;

/// Cap on the undecided remainder of a coverage query; beyond it the query is reported as
/// "too complex to decide" (counted as not met) instead of walking on. Why 8192: at 1024 the
/// baseline example's forward egress questions became undecidable after one more accept rule
/// (six techniques fell to partial); 8192 decides them exactly in about 40 ms, and a cube is a
/// few hundred bytes, so the worst case stays a few megabytes per query.
pub const DECIDE_CUBES: usize = 8192;

/// Candidate packets tried by the witness search.
const WITNESS_TRIES: usize = 8;

/// With more overlapping earlier rules than this, a witness search runs before the exact
/// remainder is computed.
pub const EXACT_CANDIDATES: usize = 64;

/// Work budget (cube comparisons) for one rule's exact remainder; beyond it the witness
/// search takes over. Small policies never get near it.
pub const SHADOW_WORK: usize = 200_000;

/// Work budget (cube comparisons) for one coverage query.
pub const DECIDE_WORK: usize = 2_000_000;

/// Looks for a packet of `region` that none of `earlier` matches, trying corners of the cubes
/// of `region` and of the partly subtracted `remaining`. Exact when it says yes.
fn find_witness(
    model: &Model<'_>,
    hulls: &[Hull],
    region: &Region,
    remaining: &Region,
    earlier: &[RuleId],
) -> bool {
    let corners = remaining
        .cubes
        .iter()
        .chain(&region.cubes)
        .flat_map(|c| [corner(c, false), corner(c, true)])
        .take(WITNESS_TRIES);
    for p in corners {
        let Some(p) = p else { continue };
        if !region.cubes.iter().any(|c| p.is_subset(c)) {
            continue;
        }
        let point = Region { cubes: vec![p] };
        let phull = Hull::of(&point);
        let p = &point.cubes[0];
        if !earlier.iter().any(|e| {
            phull.overlaps(&hulls[e.0 as usize])
                && model.region(*e).cubes.iter().any(|c| p.is_subset(c))
        }) {
            return true;
        }
    }
    false
}

/// The lowest (or highest) point of a cube, as a one-point cube.
fn corner(c: &Cube, high: bool) -> Option<Cube> {
    let mut p = c.clone();
    for d in &mut p.dims {
        let v = if high { d.hull()?.1 } else { d.hull()?.0 };
        *d = Ranges::single(v);
    }
    Some(p)
}

/// Cheap bounding box of a rule: for IPv4 the src, dst, proto and dport hulls packed as
/// `u32` (small, so scanning thousands stays in cache), for IPv6 the same as `u128`.
#[derive(Clone, Debug, Default)]
pub(crate) struct Hull {
    v4: Option<[u32; 8]>,
    v6: Option<Box<[(u128, u128); 4]>>,
}

const HULL_DIMS: [Dim; 4] = [Dim::Src, Dim::Dst, Dim::Proto, Dim::Dport];

impl Hull {
    pub(crate) fn of(region: &Region) -> Hull {
        let mut v4: Option<[(u128, u128); 4]> = None;
        let mut v6: Option<[(u128, u128); 4]> = None;
        for c in &region.cubes {
            let slot = if c.fam == Fam::V4 { &mut v4 } else { &mut v6 };
            let b: [(u128, u128); 4] =
                std::array::from_fn(|k| c.get(HULL_DIMS[k]).hull().unwrap_or((1, 0)));
            *slot = Some(match slot.take() {
                None => b,
                Some(old) => std::array::from_fn(|k| (old[k].0.min(b[k].0), old[k].1.max(b[k].1))),
            });
        }
        Hull {
            // Every IPv4 dimension value fits in u32 (addresses, protocol, ports).
            v4: v4.map(|h| {
                std::array::from_fn(|i| {
                    let (lo, hi) = h[i / 2];
                    (if i % 2 == 0 { lo } else { hi }) as u32
                })
            }),
            v6: v6.map(Box::new),
        }
    }

    #[inline]
    pub(crate) fn overlaps(&self, o: &Hull) -> bool {
        if let (Some(a), Some(b)) = (&self.v4, &o.v4) {
            if a[0] <= b[1]
                && b[0] <= a[1]
                && a[2] <= b[3]
                && b[2] <= a[3]
                && a[4] <= b[5]
                && b[4] <= a[5]
                && a[6] <= b[7]
                && b[6] <= a[7]
            {
                return true;
            }
        }
        match (&self.v6, &o.v6) {
            (Some(a), Some(b)) => a
                .iter()
                .zip(b.iter())
                .all(|(x, y)| x.0 <= y.1 && y.0 <= x.1),
            _ => false,
        }
    }
}

/// Bounding boxes of one direction's rules in struct-of-arrays form, so the prefilter over
/// thousands of rules is a tight, vectorisable loop of `u32` comparisons.
pub(crate) struct HullIndex {
    ids: Vec<RuleId>,
    /// Per IPv4 hull dimension (src, dst, proto, dport): lows and highs; a rule without an
    /// IPv4 part gets the empty interval `[1, 0]`.
    lo: [Vec<u32>; 4],
    hi: [Vec<u32>; 4],
    /// Positions of rules with an IPv6 part (checked the slow way).
    v6: Vec<usize>,
}

impl HullIndex {
    pub(crate) fn new(ids: &[RuleId], hulls: &[Hull]) -> Self {
        let mut lo: [Vec<u32>; 4] = std::array::from_fn(|_| Vec::with_capacity(ids.len()));
        let mut hi: [Vec<u32>; 4] = std::array::from_fn(|_| Vec::with_capacity(ids.len()));
        let mut v6 = Vec::new();
        for (pos, id) in ids.iter().enumerate() {
            let h = &hulls[id.0 as usize];
            for k in 0..4 {
                let (l, u) = h.v4.map_or((1, 0), |b| (b[2 * k], b[2 * k + 1]));
                lo[k].push(l);
                hi[k].push(u);
            }
            if h.v6.is_some() {
                v6.push(pos);
            }
        }
        HullIndex {
            ids: ids.to_vec(),
            lo,
            hi,
            v6,
        }
    }

    /// Rules at positions `range` whose hull overlaps `q`, in order.
    pub(crate) fn query(
        &self,
        q: &Hull,
        range: std::ops::Range<usize>,
        hulls: &[Hull],
    ) -> Vec<RuleId> {
        let mut out = Vec::new();
        let range = range.start.min(self.ids.len())..range.end.min(self.ids.len());
        if let Some(b) = q.v4 {
            let (l, h) = (&self.lo, &self.hi);
            let mut i = range.start;
            // 32 rules at a time into a bit mask: the comparisons vectorise, the pushes are
            // rare.
            while i < range.end {
                let end = (i + 32).min(range.end);
                let mut mask = 0u32;
                for j in i..end {
                    let ok = (l[0][j] <= b[1])
                        & (b[0] <= h[0][j])
                        & (l[1][j] <= b[3])
                        & (b[2] <= h[1][j])
                        & (l[2][j] <= b[5])
                        & (b[4] <= h[2][j])
                        & (l[3][j] <= b[7])
                        & (b[6] <= h[3][j]);
                    mask |= u32::from(ok) << (j - i);
                }
                while mask != 0 {
                    let bit = mask.trailing_zeros() as usize;
                    out.push(self.ids[i + bit]);
                    mask &= mask - 1;
                }
                i = end;
            }
        }
        if q.v6.is_some() {
            let start = self.v6.partition_point(|&p| p < range.start);
            let mut extra = false;
            for &p in &self.v6[start..] {
                if p >= range.end {
                    break;
                }
                let id = self.ids[p];
                let o = &hulls[id.0 as usize];
                if let (Some(a), Some(b)) = (&q.v6, &o.v6) {
                    if a.iter()
                        .zip(b.iter())
                        .all(|(x, y)| x.0 <= y.1 && y.0 <= x.1)
                    {
                        out.push(id);
                        extra = true;
                    }
                }
            }
            if extra {
                out.sort_unstable();
                out.dedup();
            }
        }
        out
    }

    /// Position of a rule in the direction's list.
    pub(crate) fn position(&self, id: RuleId) -> usize {
        self.ids.partition_point(|r| r.0 < id.0)
    }
}

/// What analysis learned about one rule.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleFacts {
    /// The part of the rule's region no earlier (unlimited) rule decides; `None` when the
    /// computation hit [`MAX_CUBES`].
    pub effective: Option<Region>,
    /// Earlier rules that take part of this rule's region, in order (parts are recomputed on
    /// demand by [`Analysis::hit_parts`], only for rules that get reported).
    pub hits: Vec<RuleId>,
    /// The part each hit with a *different* verdict takes (same order as `hits`; `None` for
    /// same-verdict hits), kept because partial-shadowing reports need exactly those.
    pub differing_parts: Vec<Option<Region>>,
    /// The rule's own region is empty (it can never match anything).
    pub empty: bool,
    /// `effective` is unknown but a packet was found that this rule decides (so it is
    /// certainly not fully shadowed).
    pub live_witness: bool,
}

impl RuleFacts {
    /// Whether the rule never decides a packet (fully shadowed or empty). False when unknown.
    pub fn dead(&self) -> bool {
        self.empty || self.effective.as_ref().is_some_and(Region::is_empty)
    }
}

/// Per-direction index of rules with their hulls.
pub(crate) struct Analysis<'p> {
    pub model: Model<'p>,
    /// Hull prefilter per direction.
    pub index: [HullIndex; 3],
    pub facts: Vec<RuleFacts>,
    pub hulls: Vec<Hull>,
}

pub(crate) fn limited(policy: &Policy, id: RuleId) -> bool {
    let r = policy.rule(id);
    r.limit.is_some() || r.conn_limit.is_some()
}

/// Whether every payload label application match `b` matches is also matched by `a`. Labels
/// are one of the protocols or "unrecognised"; a negated match also matches unrecognised.
pub(crate) fn app_covers(a: &AppMatch, b: &AppMatch) -> bool {
    match (a.negate, b.negate) {
        (false, false) => b.protocols.iter().all(|p| a.protocols.contains(p)),
        (true, false) => !b.protocols.iter().any(|p| a.protocols.contains(p)),
        (true, true) => a.protocols.iter().all(|p| b.protocols.contains(p)),
        (false, true) => false,
    }
}

impl<'p> Analysis<'p> {
    pub(crate) fn new(policy: &'p Policy) -> Self {
        let model = Model::new(policy);
        let hulls: Vec<Hull> = (0..policy.rules.len())
            .map(|i| Hull::of(model.region(RuleId(i as u32))))
            .collect();
        let mut facts = vec![RuleFacts::default(); policy.rules.len()];
        // Application-protocol rules are their own prelude list per direction: they never
        // shadow or are shadowed by the first-match rules, only each other.
        let by_dir: [Vec<RuleId>; 3] = std::array::from_fn(|d| {
            policy
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| r.direction as usize == d && r.app.is_none())
                .map(|(i, _)| RuleId(i as u32))
                .collect()
        });
        let index: [HullIndex; 3] = std::array::from_fn(|d| HullIndex::new(&by_dir[d], &hulls));
        for (d, ids) in by_dir.iter().enumerate() {
            for (k, &id) in ids.iter().enumerate() {
                let earlier = index[d].query(&hulls[id.0 as usize], 0..k, &hulls);
                facts[id.0 as usize] = Self::shadow_one(&model, &hulls, &earlier, id);
            }
        }
        for d in Direction::ALL {
            let apps: Vec<RuleId> = policy
                .rules_in(d)
                .filter(|(_, r)| r.app.is_some())
                .map(|(id, _)| id)
                .collect();
            for (k, &id) in apps.iter().enumerate() {
                let Some(mine) = policy.rule(id).app.as_ref() else {
                    continue;
                };
                // An earlier app rule takes part of this one only where it matches every
                // label this one matches (exact in the label dimension, so shadowing stays
                // sound); overlaps with a partly different label set are not reported.
                let earlier: Vec<RuleId> = apps[..k]
                    .iter()
                    .copied()
                    .filter(|e| {
                        policy
                            .rule(*e)
                            .app
                            .as_ref()
                            .is_some_and(|a| app_covers(a, mine))
                            && hulls[e.0 as usize].overlaps(&hulls[id.0 as usize])
                    })
                    .collect();
                facts[id.0 as usize] = Self::shadow_one(&model, &hulls, &earlier, id);
            }
        }
        Analysis {
            model,
            index,
            facts,
            hulls,
        }
    }

    /// `earlier`: the earlier rules of the direction whose hull overlaps this rule's.
    fn shadow_one(model: &Model<'_>, hulls: &[Hull], earlier: &[RuleId], id: RuleId) -> RuleFacts {
        let region = model.region(id);
        if region.is_empty() {
            return RuleFacts {
                effective: Some(Region::default()),
                hits: vec![],
                differing_parts: vec![],
                empty: true,
                live_witness: false,
            };
        }
        let policy = model.policy;
        // Earlier rules that can take part of this one: a limited rule may not match, so it
        // never shadows anything.
        let candidates: Vec<RuleId> = earlier
            .iter()
            .copied()
            .filter(|e| !limited(policy, *e))
            .collect();
        // Many overlapping earlier rules: first look for a packet of this rule none of them
        // matches (cheap). Found: the rule is live, and the exact remainder is skipped.
        if candidates.len() > EXACT_CANDIDATES
            && find_witness(model, hulls, region, region, &candidates)
        {
            return Self::fallback(
                model,
                hulls,
                id,
                region,
                &candidates,
                0,
                vec![],
                vec![],
                Some(true),
            );
        }
        let mut remaining = region.clone();
        let mut hits = Vec::new();
        let mut parts = Vec::new();
        let mut work = 0usize;
        let differs = |e: RuleId| policy.rule(e).action != policy.rule(id).action;
        for (k, &e) in candidates.iter().enumerate() {
            let er = model.region(e);
            work += remaining.cubes.len() * er.cubes.len();
            if work > SHADOW_WORK {
                return Self::fallback(
                    model,
                    hulls,
                    id,
                    &remaining,
                    &candidates,
                    k,
                    hits,
                    parts,
                    None,
                );
            }
            if !remaining.overlaps(er) {
                continue;
            }
            let part = differs(e).then(|| remaining.intersect(er));
            hits.push(e);
            parts.push(part);
            if remaining.subtract_in_place(er, EXACT_CUBES).is_err() {
                return Self::fallback(
                    model,
                    hulls,
                    id,
                    &remaining,
                    &candidates,
                    k + 1,
                    hits,
                    parts,
                    None,
                );
            }
            if remaining.is_empty() {
                break;
            }
        }
        RuleFacts {
            effective: Some(remaining),
            hits,
            differing_parts: parts,
            empty: false,
            live_witness: false,
        }
    }

    /// The exact remainder got too expensive: prove the rule live with a witness packet if
    /// possible, and record the remaining overlaps against the rule's whole region.
    #[allow(clippy::too_many_arguments)]
    fn fallback(
        model: &Model<'_>,
        hulls: &[Hull],
        id: RuleId,
        remaining: &Region,
        candidates: &[RuleId],
        next: usize,
        mut hits: Vec<RuleId>,
        mut parts: Vec<Option<Region>>,
        live: Option<bool>,
    ) -> RuleFacts {
        let policy = model.policy;
        let region = model.region(id);
        let live =
            live.unwrap_or_else(|| find_witness(model, hulls, region, remaining, candidates));
        for &e in &candidates[next..] {
            let er = model.region(e);
            if region.overlaps(er) {
                hits.push(e);
                let differs = policy.rule(e).action != policy.rule(id).action;
                parts.push(differs.then(|| region.intersect(er)));
            }
        }
        RuleFacts {
            effective: None,
            hits,
            differing_parts: parts,
            empty: false,
            live_witness: live,
        }
    }

    /// The part of a rule each of its hits takes: replayed exactly when the remainder was
    /// computed, else the overlap with the rule's whole region.
    pub(crate) fn hit_parts(&self, id: RuleId) -> Vec<(RuleId, Region)> {
        let facts = &self.facts[id.0 as usize];
        let region = self.model.region(id);
        let mut out = Vec::with_capacity(facts.hits.len());
        let mut remaining = facts.effective.as_ref().map(|_| region.clone());
        for &e in &facts.hits {
            let er = self.model.region(e);
            match remaining.as_mut() {
                Some(rem) => {
                    out.push((e, rem.intersect(er)));
                    if rem.subtract_in_place(er, MAX_CUBES).is_err() {
                        remaining = None;
                    }
                }
                None => out.push((e, region.intersect(er))),
            }
        }
        out
    }

    /// Rules of the same direction after `id` whose hull overlaps its hull, in order.
    pub(crate) fn later_overlapping(&self, id: RuleId) -> Vec<RuleId> {
        let d = self.model.policy.rule(id).direction as usize;
        let idx = &self.index[d];
        let pos = idx.position(id) + 1;
        idx.query(&self.hulls[id.0 as usize], pos..usize::MAX, &self.hulls)
    }

    /// The region a rule decides: effective when known, else its whole region.
    pub(crate) fn decided(&self, id: RuleId) -> &Region {
        self.facts[id.0 as usize]
            .effective
            .as_ref()
            .unwrap_or_else(|| self.model.region(id))
    }

    /// How a policy decides the packets of `query` in `dir`.
    pub(crate) fn decide(&self, dir: Direction, query: &Region) -> Decision {
        let policy = self.model.policy;
        let mut d = Decision::default();
        let qhull = Hull::of(query);
        let mut remaining = query.clone();
        let mut work = 0usize;
        // The index holds first-match rules only: application-protocol rules inspect payloads
        // of established connections and never decide a new connection's first packet.
        for id in self.index[dir as usize].query(&qhull, 0..usize::MAX, &self.hulls) {
            let rule = policy.rule(id);
            if remaining.is_empty() {
                break;
            }
            let rr = self.model.region(id);
            work += remaining.cubes.len() * rr.cubes.len();
            if work > DECIDE_WORK {
                d.unknown = true;
                return d;
            }
            if !remaining.overlaps(rr) {
                continue;
            }
            let part = remaining.intersect(rr);
            if limited(policy, id) {
                // Over its limit the packet falls through: an accept may still happen, a
                // block is not guaranteed.
                if rule.action == Action::Accept {
                    d.accepted.push((Some(id), part));
                }
                continue;
            }
            match rule.action {
                Action::Accept => d.accepted.push((Some(id), part)),
                Action::Drop | Action::Reject => d.blocked.push((Some(id), part)),
            }
            if remaining.subtract_in_place(rr, DECIDE_CUBES).is_err() {
                d.unknown = true;
                return d;
            }
        }
        if !remaining.is_empty() {
            match policy.defaults.for_direction(dir) {
                Action::Accept => d.accepted.push((None, remaining)),
                _ => d.blocked.push((None, remaining)),
            }
        }
        d
    }
}

/// Which rules (or the default, `None`) accept and block which parts of a query.
#[derive(Clone, Debug, Default)]
pub(crate) struct Decision {
    pub accepted: Vec<(Option<RuleId>, Region)>,
    pub blocked: Vec<(Option<RuleId>, Region)>,
    /// The computation hit [`MAX_CUBES`].
    pub unknown: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rampart_ir::*;

    #[test]
    fn hull_overlap_is_per_family() {
        let a = Hull {
            v4: Some([0, 10, 0, 10, 0, 10, 0, 10]),
            v6: None,
        };
        let b = Hull {
            v4: None,
            v6: Some(Box::new([(0, 10); 4])),
        };
        assert!(!a.overlaps(&b));
        assert!(a.overlaps(&a));
    }

    // ---- brute-force reference on a small space ----

    const BASE: u32 = 0xC000_0200; // 192.0.2.0
    const ADDRS: [u32; 9] = [
        BASE,
        BASE + 1,
        BASE + 2,
        BASE + 3,
        BASE + 4,
        BASE + 5,
        BASE + 6,
        BASE + 7,
        0xC633_6401, // 198.51.100.1: stands for every address outside 192.0.2.0/29
    ];
    const IFACES: [&str; 5] = ["eth0", "eth1", "br0", "br1", "wlan0"];
    // GRE stands for every protocol the rules do not name.
    const PROTOS: [u8; 4] = [proto::TCP, proto::UDP, proto::ICMP, 47];
    const PORTS: [u16; 6] = [0, 1, 2, 3, 4, 1000];

    fn policy_base() -> Policy {
        let zone = |name: &str, ifaces: &[&str], nets: &[&str]| Zone {
            name: name.into(),
            interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
            networks: nets.iter().map(|s| s.parse().unwrap()).collect(),
            trusted: true,
            public_facing: false,
            description: None,
            loc: SourceLoc::default(),
        };
        Policy {
            zones: vec![
                zone("z0", &["eth0"], &[]),
                zone("z1", &["br*"], &["192.0.2.0/30"]),
                zone("z2", &[], &["192.0.2.4/30"]),
                zone("z3", &["br0", "eth1"], &[]),
            ],
            sets: vec![AddressSet {
                name: "s0".into(),
                elements: vec![
                    "192.0.2.1/32".parse().unwrap(),
                    "192.0.2.6/31".parse().unwrap(),
                ],
                source: SetSource::Inline,
                except: vec![],
                loc: SourceLoc::default(),
            }],
            ..Policy::default()
        }
    }

    fn peer_strategy() -> impl Strategy<Value = Peer> {
        prop_oneof![
            (0u32..4).prop_map(|z| Peer::Zone(ZoneId(z))),
            Just(Peer::Set(SetId(0))),
            (0u32..8, 29u8..=32).prop_map(|(a, len)| {
                Peer::Net(IpNet::V4(
                    Ipv4Net::new((BASE + a).into(), len).unwrap().trunc(),
                ))
            }),
        ]
    }

    fn svc_strategy() -> impl Strategy<Value = L4Match> {
        let ports = prop::collection::vec((0u16..5, 0u16..5), 0..3);
        (
            prop_oneof![
                Just(None),
                Just(Some(proto::TCP)),
                Just(Some(proto::UDP)),
                Just(Some(proto::ICMP))
            ],
            ports,
        )
            .prop_map(|(p, ports)| L4Match {
                protocol: p,
                src_ports: vec![],
                dst_ports: if matches!(p, Some(proto::TCP) | Some(proto::UDP)) {
                    ports
                        .into_iter()
                        .map(|(a, b)| PortRange {
                            lo: a.min(b),
                            hi: a.max(b),
                        })
                        .collect()
                } else {
                    vec![]
                },
                icmp_types: vec![],
                service: None,
            })
    }

    fn rule_strategy() -> impl Strategy<Value = Rule> {
        (
            prop::collection::vec(peer_strategy(), 0..3),
            prop::collection::vec(peer_strategy(), 0..3),
            prop::collection::vec(svc_strategy(), 0..3),
            any::<bool>(),
        )
            .prop_map(|(from, to, services, accept)| Rule {
                from,
                to,
                services,
                ..Rule::new(
                    "r",
                    Direction::Forward,
                    if accept { Action::Accept } else { Action::Drop },
                )
            })
    }

    #[derive(Clone, Copy)]
    struct Pkt {
        src: u32,
        dst: u32,
        iif: &'static str,
        oif: &'static str,
        proto: u8,
        dport: u16,
    }

    fn pattern_matches(pattern: &str, name: &str) -> bool {
        match pattern.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => pattern == name,
        }
    }

    fn peer_matches(policy: &Policy, peer: &Peer, addr: u32, iface: &str) -> bool {
        let ip = std::net::IpAddr::V4(addr.into());
        match peer {
            Peer::Zone(z) => {
                let z = policy.zone(*z);
                (z.interfaces.is_empty() || z.interfaces.iter().any(|p| pattern_matches(p, iface)))
                    && (z.networks.is_empty() || z.networks.iter().any(|n| n.contains(&ip)))
            }
            Peer::Set(s) => policy.set(*s).elements.iter().any(|n| n.contains(&ip)),
            Peer::Net(n) => n.contains(&ip),
        }
    }

    fn rule_matches(policy: &Policy, r: &Rule, p: &Pkt) -> bool {
        (r.from.is_empty() || r.from.iter().any(|x| peer_matches(policy, x, p.src, p.iif)))
            && (r.to.is_empty() || r.to.iter().any(|x| peer_matches(policy, x, p.dst, p.oif)))
            && (r.services.is_empty()
                || r.services.iter().any(|s| match s.protocol {
                    None => true,
                    Some(x) => {
                        x == p.proto
                            && (s.dst_ports.is_empty()
                                || s.dst_ports.iter().any(|r| r.contains(p.dport)))
                    }
                }))
    }

    fn packets() -> impl Iterator<Item = Pkt> {
        ADDRS.into_iter().flat_map(|src| {
            ADDRS.into_iter().flat_map(move |dst| {
                IFACES.into_iter().flat_map(move |iif| {
                    IFACES.into_iter().flat_map(move |oif| {
                        PROTOS.into_iter().flat_map(move |proto| {
                            PORTS.into_iter().map(move |dport| Pkt {
                                src,
                                dst,
                                iif,
                                oif,
                                proto,
                                dport,
                            })
                        })
                    })
                })
            })
        })
    }

    fn point_in(m: &Model<'_>, c: &Cube, p: &Pkt, owner: u128) -> bool {
        c.fam == crate::space::Fam::V4
            && c.get(Dim::Src).contains(u128::from(p.src))
            && c.get(Dim::Dst).contains(u128::from(p.dst))
            && c.get(Dim::Iif).contains(m.iface_atom(Some(p.iif)))
            && c.get(Dim::Oif).contains(m.iface_atom(Some(p.oif)))
            && c.get(Dim::Proto).contains(u128::from(p.proto))
            && c.get(Dim::Dport).contains(u128::from(p.dport))
            && c.get(Dim::Sport).contains(40000)
            && c.get(Dim::Icmp).contains(8)
            && c.get(Dim::Ct).contains(0)
            && c.get(Dim::Owner).contains(owner)
    }

    fn in_region(m: &Model<'_>, r: &Region, p: &Pkt, owner: u128) -> bool {
        r.cubes.iter().any(|c| point_in(m, c, p, owner))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(40))]
        #[test]
        fn shadowing_and_decisions_match_packet_enumeration(
            rules in prop::collection::vec(rule_strategy(), 1..7)
        ) {
            let mut policy = policy_base();
            policy.rules = rules;
            let an = Analysis::new(&policy);
            let m = &an.model;
            let owner = m.universe(Direction::Forward).cubes[0].get(Dim::Owner).intervals()[0].0;
            let decision = an.decide(Direction::Forward, &m.universe(Direction::Forward));
            prop_assert!(!decision.unknown);
            let mut live = vec![false; policy.rules.len()];
            for p in packets() {
                // The model assumes routes follow the zone map (z1: 192.0.2.0/30 via br*).
                let routed = !(0..4).contains(&(p.dst - BASE)) || p.oif.starts_with("br");
                if !routed {
                    continue;
                }
                let first = policy.rules.iter().position(|r| rule_matches(&policy, r, &p));
                for (i, r) in policy.rules.iter().enumerate() {
                    let matches = rule_matches(&policy, r, &p);
                    prop_assert_eq!(in_region(m, m.region(RuleId(i as u32)), &p, owner), matches);
                    let decides = first == Some(i);
                    live[i] |= decides;
                    if let Some(eff) = &an.facts[i].effective {
                        prop_assert_eq!(in_region(m, eff, &p, owner), decides, "rule {} effective", i);
                    }
                }
                let accepted = match first {
                    Some(i) => policy.rules[i].action == Action::Accept,
                    None => policy.defaults.forward == Action::Accept,
                };
                let in_acc = decision.accepted.iter().any(|(_, r)| in_region(m, r, &p, owner));
                let in_blk = decision.blocked.iter().any(|(_, r)| in_region(m, r, &p, owner));
                prop_assert_eq!(in_acc, accepted);
                prop_assert_eq!(in_blk, !accepted);
            }
            // The representatives cover every IPv4 equivalence class, so "decides no sampled
            // packet" must coincide with "no IPv4 part left".
            for (i, f) in an.facts.iter().enumerate() {
                if let Some(eff) = &f.effective {
                    let v4_live = eff.cubes.iter().any(|c| c.fam == Fam::V4);
                    prop_assert_eq!(v4_live, live[i], "rule {}", i);
                }
            }
        }
    }
}
