//! The per-rule analysis shared by `check` and `coverage`: each rule's effective region (what
//! it really decides after earlier rules) and which earlier rules take which part of it.

use rampart_ir::{Action, Direction, Policy, RuleId};

use crate::model::Model;
use crate::space::{Dim, Region};

/// Cap on the number of cubes any intermediate region of one rule's analysis may hold. Beyond
/// it the analysis of that rule gives up and says so (finding `analysis-limit`) instead of
/// spending unbounded time and memory.
pub const MAX_CUBES: usize = 4096;

/// Cheap bounding box of a rule per family: src, dst, proto, dport hulls.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Hull {
    fams: [Option<[(u128, u128); 4]>; 2],
}

impl Hull {
    pub(crate) fn of(region: &Region) -> Hull {
        let mut h = Hull::default();
        for c in &region.cubes {
            let slot = &mut h.fams[c.fam as usize];
            let dims = [Dim::Src, Dim::Dst, Dim::Proto, Dim::Dport];
            let mut b = [(0u128, 0u128); 4];
            for (k, d) in dims.iter().enumerate() {
                b[k] = c.get(*d).hull().unwrap_or((1, 0));
            }
            *slot = Some(match slot.take() {
                None => b,
                Some(old) => std::array::from_fn(|k| (old[k].0.min(b[k].0), old[k].1.max(b[k].1))),
            });
        }
        h
    }

    #[inline]
    pub(crate) fn overlaps(&self, o: &Hull) -> bool {
        self.fams.iter().zip(&o.fams).any(|(a, b)| match (a, b) {
            (Some(a), Some(b)) => a.iter().zip(b).all(|(x, y)| x.0 <= y.1 && y.0 <= x.1),
            _ => false,
        })
    }
}

/// One earlier rule taking part of a later rule's region.
#[derive(Clone, Debug)]
pub(crate) struct Hit {
    pub rule: RuleId,
    pub part: Region,
}

/// What analysis learned about one rule.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleFacts {
    /// The part of the rule's region no earlier (unlimited) rule decides; `None` when the
    /// computation hit [`MAX_CUBES`].
    pub effective: Option<Region>,
    /// Earlier rules that take part of this rule's region, in order, with the part each takes.
    pub hits: Vec<Hit>,
    /// The rule's own region is empty (it can never match anything).
    pub empty: bool,
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
    pub facts: Vec<RuleFacts>,
    pub hulls: Vec<Hull>,
}

pub(crate) fn limited(policy: &Policy, id: RuleId) -> bool {
    let r = policy.rule(id);
    r.limit.is_some() || r.conn_limit.is_some()
}

impl<'p> Analysis<'p> {
    pub(crate) fn new(policy: &'p Policy) -> Self {
        let model = Model::new(policy);
        let hulls: Vec<Hull> = (0..policy.rules.len())
            .map(|i| Hull::of(model.region(RuleId(i as u32))))
            .collect();
        let mut facts = vec![RuleFacts::default(); policy.rules.len()];
        for dir in Direction::ALL {
            let ids: Vec<RuleId> = policy.rules_in(dir).map(|(id, _)| id).collect();
            for (k, &id) in ids.iter().enumerate() {
                facts[id.0 as usize] = Self::shadow_one(&model, &hulls, &ids[..k], id);
            }
        }
        Analysis {
            model,
            facts,
            hulls,
        }
    }

    fn shadow_one(model: &Model<'_>, hulls: &[Hull], earlier: &[RuleId], id: RuleId) -> RuleFacts {
        let region = model.region(id);
        if region.is_empty() {
            return RuleFacts {
                effective: Some(Region::default()),
                hits: vec![],
                empty: true,
            };
        }
        let hull = &hulls[id.0 as usize];
        let mut remaining = region.clone();
        let mut hits = Vec::new();
        for &e in earlier {
            if !hull.overlaps(&hulls[e.0 as usize]) || limited(model.policy, e) {
                // A rule with a limit may not match, so it never shadows anything.
                continue;
            }
            let er = model.region(e);
            if !remaining.overlaps(er) {
                continue;
            }
            let part = remaining.intersect(er);
            match remaining.subtract(er, MAX_CUBES) {
                Ok(r) => remaining = r,
                Err(_) => {
                    hits.push(Hit { rule: e, part });
                    return RuleFacts {
                        effective: None,
                        hits,
                        empty: false,
                    };
                }
            }
            hits.push(Hit { rule: e, part });
            if remaining.is_empty() {
                break;
            }
        }
        RuleFacts {
            effective: Some(remaining),
            hits,
            empty: false,
        }
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
        for (id, rule) in policy.rules_in(dir) {
            if remaining.is_empty() {
                break;
            }
            if !qhull.overlaps(&self.hulls[id.0 as usize]) {
                continue;
            }
            let rr = self.model.region(id);
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
            match remaining.subtract(rr, MAX_CUBES) {
                Ok(r) => remaining = r,
                Err(_) => {
                    d.unknown = true;
                    return d;
                }
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
    use crate::space::{Cube, Dim};
    use proptest::prelude::*;
    use rampart_ir::*;

    #[test]
    fn hull_overlap_is_per_family() {
        let a = Hull {
            fams: [Some([(0, 10); 4]), None],
        };
        let b = Hull {
            fams: [None, Some([(0, 10); 4])],
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
    const PROTOS: [u8; 3] = [proto::TCP, proto::UDP, proto::ICMP];
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
                name: "r".into(),
                direction: Direction::Forward,
                from,
                to,
                services,
                family: Family::Any,
                ct_states: vec![],
                owner: None,
                limit: None,
                conn_limit: None,
                action: if accept { Action::Accept } else { Action::Drop },
                log: false,
                mitigates: vec![],
                expires: None,
                description: None,
                origin: RuleOrigin::User,
                loc: SourceLoc::default(),
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
            // The representatives cover every equivalence class, so "decides no sampled
            // packet" must coincide with "fully shadowed".
            for (i, f) in an.facts.iter().enumerate() {
                if f.effective.is_some() {
                    prop_assert_eq!(f.dead(), !live[i], "rule {}", i);
                }
            }
        }
    }
}
