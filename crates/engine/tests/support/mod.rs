//! Builders shared by the engine's integration tests.
#![allow(dead_code)]

use rampart_engine::classbench::SplitMix64;
use rampart_ir::*;

pub fn loc(line: u32) -> SourceLoc {
    SourceLoc {
        file: "policy.toml".into(),
        line,
        col: 1,
    }
}

pub fn rule(name: &str, direction: Direction, action: Action) -> Rule {
    Rule {
        loc: loc(1),
        ..Rule::new(name, direction, action)
    }
}

/// An inline address set named `name` (no exceptions), as a policy's `[[sets]]` entry.
pub fn inline_set(name: &str, elements: Vec<IpNet>) -> AddressSet {
    AddressSet {
        name: name.into(),
        elements,
        source: SetSource::Inline,
        except: vec![],
        loc: loc(1),
    }
}

pub fn svc(proto: u8, dports: &[(u16, u16)]) -> L4Match {
    L4Match {
        protocol: Some(proto),
        src_ports: vec![],
        dst_ports: dports
            .iter()
            .map(|&(lo, hi)| PortRange { lo, hi })
            .collect(),
        icmp_types: vec![],
        service: None,
    }
}

pub fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

pub fn zone(name: &str, ifaces: &[&str], nets: &[&str]) -> Zone {
    Zone {
        name: name.into(),
        interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
        networks: nets.iter().map(|s| net(s)).collect(),
        trusted: true,
        public_facing: false,
        description: None,
        loc: loc(1),
    }
}

/// Networks small enough that random addresses hit them often.
pub const V4_NETS: [&str; 8] = [
    "192.0.2.0/24",
    "192.0.2.0/28",
    "192.0.2.128/25",
    "198.51.100.0/24",
    "198.51.100.7/32",
    "203.0.113.0/26",
    "0.0.0.0/0",
    "192.0.2.64/26",
];
pub const V6_NETS: [&str; 5] = [
    "2001:db8::/32",
    "2001:db8::/120",
    "2001:db8:1::/48",
    "2001:db8::80/121",
    "::/0",
];
pub const IFACES: [&str; 4] = ["eth0", "eth1", "br*", "wg0"];
pub const PKT_IFACES: [Option<&str>; 6] = [
    None,
    Some("eth0"),
    Some("eth1"),
    Some("br-lan"),
    Some("wg0"),
    Some("lo"),
];
pub const PORTS: [u16; 10] = [22, 53, 80, 443, 445, 1000, 1005, 3389, 8080, 65535];

pub fn pick<'a, T>(rng: &mut SplitMix64, list: &'a [T]) -> &'a T {
    &list[rng.range(0, list.len() as u64 - 1) as usize]
}

/// A random policy exercising every field the matchers index or check.
pub fn random_policy(rng: &mut SplitMix64) -> Policy {
    let mut p = Policy::default();
    let nz = rng.range(1, 4);
    for i in 0..nz {
        let nifs = rng.range(0, 2);
        let ifaces: Vec<&str> = (0..nifs).map(|_| *pick(rng, &IFACES)).collect();
        let nnets = rng.range(0, 3);
        let mut nets = Vec::new();
        for _ in 0..nnets {
            if rng.range(0, 2) == 0 {
                nets.push(*pick(rng, &V6_NETS));
            } else {
                nets.push(*pick(rng, &V4_NETS));
            }
        }
        p.zones.push(zone(&format!("z{i}"), &ifaces, &nets));
    }
    let ns = rng.range(0, 2);
    for i in 0..ns {
        let n = rng.range(0, 6);
        let mut elements = Vec::new();
        for _ in 0..n {
            elements.push(net(if rng.range(0, 3) == 0 {
                pick::<&str>(rng, &V6_NETS)
            } else {
                pick::<&str>(rng, &V4_NETS)
            }));
        }
        let except = if rng.range(0, 3) == 0 {
            vec![net("192.0.2.0/28")]
        } else {
            vec![]
        };
        p.sets.push(AddressSet {
            name: format!("s{i}"),
            elements,
            source: SetSource::Inline,
            except,
            loc: loc(2),
        });
    }
    let nr = rng.range(0, 25);
    for i in 0..nr {
        let dir = *pick(rng, &Direction::ALL);
        let action = *pick(rng, &[Action::Accept, Action::Drop, Action::Reject]);
        let mut r = rule(&format!("r{i}"), dir, action);
        r.loc = loc(10 + i as u32);
        let peers = |rng: &mut SplitMix64| {
            let n = rng.range(0, 2);
            (0..n)
                .map(|_| match rng.range(0, 2) {
                    0 => Peer::Zone(ZoneId(rng.range(0, nz - 1) as u32)),
                    1 if ns > 0 => Peer::Set(SetId(rng.range(0, ns - 1) as u32)),
                    _ => Peer::Net(net(if rng.range(0, 2) == 0 {
                        pick::<&str>(rng, &V6_NETS)
                    } else {
                        pick::<&str>(rng, &V4_NETS)
                    })),
                })
                .collect::<Vec<_>>()
        };
        r.from = peers(rng);
        r.to = peers(rng);
        let nsvc = rng.range(0, 2);
        for _ in 0..nsvc {
            let proto = *pick(
                rng,
                &[None, Some(6u8), Some(17), Some(1), Some(58), Some(47)],
            );
            let mut s = L4Match {
                protocol: proto,
                src_ports: vec![],
                dst_ports: vec![],
                icmp_types: vec![],
                service: None,
            };
            match proto {
                Some(6) | Some(17) => {
                    for _ in 0..rng.range(0, 2) {
                        let lo = *pick(rng, &PORTS);
                        let hi = lo.saturating_add(rng.range(0, 10) as u16);
                        s.dst_ports.push(PortRange { lo, hi });
                    }
                    if rng.range(0, 4) == 0 {
                        s.src_ports.push(PortRange { lo: 1000, hi: 2000 });
                    }
                }
                Some(1) | Some(58) => {
                    for _ in 0..rng.range(0, 2) {
                        s.icmp_types.push(*pick(rng, &[0u8, 3, 8, 128, 129, 135]));
                    }
                }
                _ => {}
            }
            r.services.push(s);
        }
        r.family = *pick(rng, &[Family::Any, Family::Any, Family::V4, Family::V6]);
        if rng.range(0, 5) == 0 {
            r.ct_states = vec![*pick(
                rng,
                &[CtState::New, CtState::Established, CtState::Untracked],
            )];
        }
        if rng.range(0, 6) == 0 {
            r.limit = Some(Limit {
                rate: rng.range(1, 5),
                per_s: *pick(rng, &[1u32, 60]),
                burst: rng.range(0, 3),
                unit: *pick(rng, &[RateUnit::Packets, RateUnit::Bytes]),
                per_source: rng.range(0, 1) == 1,
            });
            if let Some(l) = &mut r.limit {
                if l.unit == RateUnit::Bytes {
                    l.rate *= 100;
                    l.burst *= 100;
                }
            }
        }
        if rng.range(0, 8) == 0 {
            r.conn_limit = Some(rng.range(0, 4) as u32);
        }
        if rng.range(0, 10) == 0 {
            r.owner = Some(Owner {
                uids: vec![1000],
                gids: vec![],
                cgroups: vec![],
            });
        }
        if rng.range(0, 10) == 0 {
            r.expires = Some(Date {
                year: 2020,
                month: 1,
                day: 1,
            });
        }
        r.mitigates = vec![TechniqueId("T1187".into())];
        p.rules.push(r);
    }
    p.defaults.stateful = rng.range(0, 1) == 1;
    p.defaults.allow_loopback = rng.range(0, 1) == 1;
    p.defaults.allow_icmpv6_essential = rng.range(0, 1) == 1;
    p
}

pub const V4_ADDRS: [&str; 7] = [
    "192.0.2.1",
    "192.0.2.5",
    "192.0.2.130",
    "192.0.2.70",
    "198.51.100.7",
    "198.51.100.200",
    "203.0.113.9",
];
pub const V6_ADDRS: [&str; 5] = [
    "2001:db8::1",
    "2001:db8::85",
    "2001:db8:1::5",
    "2001:db8:2::1",
    "fe80::1",
];

/// A random policy (as [`random_policy`]) whose rules also carry the prelude features: SYN
/// proxy on TCP accept rules, bans on limited accept rules, application-protocol matches, and
/// a never-ban network.
pub fn random_prelude_policy(rng: &mut SplitMix64) -> Policy {
    let mut p = random_policy(rng);
    let n = p.rules.len();
    for i in 0..n {
        let r = &mut p.rules[i];
        let in_or_fwd = r.direction != Direction::Egress;
        let tcp_only = !r.services.is_empty()
            && r.services
                .iter()
                .all(|s| s.protocol == Some(6) && !s.dst_ports.is_empty());
        if in_or_fwd && r.action == Action::Accept && (tcp_only || rng.range(0, 2) == 0) {
            if !tcp_only {
                let lo = *pick(rng, &PORTS);
                r.services = vec![svc(6, &[(lo, lo.saturating_add(rng.range(0, 3) as u16))])];
            }
            if rng.range(0, 1) == 0 {
                r.from.clear();
                r.to.clear();
            }
            r.synproxy = Some(Synproxy::default());
        }
        if in_or_fwd && r.action == Action::Accept && rng.range(0, 3) == 0 {
            if r.limit.is_none() && r.conn_limit.is_none() {
                r.limit = Some(Limit {
                    rate: rng.range(1, 3),
                    per_s: 1,
                    burst: rng.range(0, 2),
                    unit: RateUnit::Packets,
                    per_source: true,
                });
            }
            r.ban = Some(Ban {
                timeout_s: rng.range(1, 4) as u32,
            });
        }
        if r.synproxy.is_none() && rng.range(0, 4) == 0 {
            let k = rng.range(1, 3);
            r.app = Some(AppMatch {
                protocols: (0..k).map(|_| *pick(rng, &AppProtocol::ALL)).collect(),
                negate: rng.range(0, 2) == 0,
            });
        }
    }
    if rng.range(0, 1) == 1 {
        p.defaults.never_ban = vec![net("192.0.2.0/28"), net("2001:db8::/120")];
    }
    p
}
