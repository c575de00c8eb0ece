//! Differential tests of the fast matcher's cross-product tables (`Engine::classify_by_tables`,
//! the path `classify` takes first): wherever the tables answer, the answer must be the
//! reference matcher's decision (verdict, rule, reason); where they do not, the bit-vector path
//! answers. Random policies × random packets (IPv4/IPv6, ICMP, interfaces with wildcards and
//! names the interface cache does not hold, every conntrack state, TCP flags, owners, limits,
//! SYN proxy, bans), table budgets from none to the default, and the benchmark's workload.

mod support;

use std::net::{IpAddr, Ipv4Addr};

use rampart_engine::classbench::SplitMix64;
use rampart_engine::{
    AppConn, AppConnState, AppPayload, Engine, EngineOptions, L4Meta, MatcherKind, OwnerInfo,
    PacketMeta, Reason,
};
use rampart_ir::{Action, AppProtocol, CtState, Date, Direction, Peer, Policy, RuleId, SetId};
use support::*;

/// Interface names: the policies' patterns are eth0, eth1, br*, wg0; names that equal a
/// pattern, match the wildcard, match nothing, and a long tail of distinct names (more than
/// the engine caches).
fn iface(rng: &mut SplitMix64, names: &[String]) -> Option<&'static str> {
    const FIXED: [Option<&str>; 9] = [
        None,
        Some("eth0"),
        Some("eth1"),
        Some("br-lan"),
        Some("br"),
        Some("wg0"),
        Some("lo"),
        Some("eth0x"),
        Some("b"),
    ];
    if rng.range(0, 9) == 0 {
        let n = pick(rng, names);
        // Leaked once per name (a few hundred short strings per test run).
        return Some(Box::leak(n.clone().into_boxed_str()));
    }
    *pick(rng, &FIXED)
}

fn random_meta<'a>(rng: &mut SplitMix64, owner: &'a OwnerInfo, names: &[String]) -> PacketMeta<'a> {
    let v6 = rng.range(0, 3) == 0;
    let addr = |rng: &mut SplitMix64| -> IpAddr {
        if v6 {
            // The networks' first addresses and the ones right after their ends too (the
            // branch-free searches' edges).
            const EDGES: [&str; 6] = [
                "2001:db8::",
                "2001:db8::80",
                "2001:db8::100",
                "2001:db8:1::",
                "2001:db9::",
                "::",
            ];
            if rng.range(0, 2) == 0 {
                pick(rng, &EDGES).parse().unwrap()
            } else {
                pick(rng, &V6_ADDRS).parse().unwrap()
            }
        } else if rng.range(0, 5) == 0 {
            IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32))
        } else {
            pick(rng, &V4_ADDRS).parse().unwrap()
        }
    };
    let (src, dst) = (addr(rng), addr(rng));
    let (protocol, l4) = match rng.range(0, 4) {
        0 => (
            6,
            L4Meta::Ports {
                src: *pick(rng, &PORTS),
                dst: *pick(rng, &PORTS),
            },
        ),
        1 => (
            17,
            L4Meta::Ports {
                src: 900 + rng.range(0, 1200) as u16,
                dst: *pick(rng, &PORTS),
            },
        ),
        2 => (
            if v6 { 58 } else { 1 },
            L4Meta::Icmp {
                icmp_type: *pick(rng, &[0u8, 3, 8, 128, 129, 133, 135, 136]),
                code: 0,
            },
        ),
        _ => (*pick(rng, &[47u8, 6, 1, 58, 17]), L4Meta::None),
    };
    let mut m = PacketMeta::new(*pick(rng, &Direction::ALL), src, dst, protocol, l4);
    m.iif = iface(rng, names);
    m.oif = iface(rng, names);
    m.ct_state = *pick(
        rng,
        &[
            CtState::New,
            CtState::New,
            CtState::New,
            CtState::Established,
            CtState::Invalid,
            CtState::Untracked,
            CtState::Related,
        ],
    );
    m.len = rng.range(40, 1500) as u32;
    m.src_conns = rng.range(0, 5) as u32;
    if rng.range(0, 3) == 0 {
        m.owner = Some(owner);
    }
    m.tcp_flags = *pick(rng, &[0x02u8, 0x02, 0x10, 0x10, 0x12, 0x04, 0x18, 0x11, 0]);
    m.ct_entry = rng.range(0, 3) == 0;
    if rng.range(0, 2) == 0 {
        // A connection view: the tables answer when the application step cannot act
        // (accepted earlier, nothing to inspect, no application rules in its direction).
        m.payload = match rng.range(0, 3) {
            0 => AppPayload::None,
            1 => AppPayload::Label(Some(*pick(rng, &AppProtocol::ALL))),
            _ => AppPayload::Label(None),
        };
        m.app_conn = Some(AppConn {
            reply: rng.range(0, 2) == 0,
            packet_index: rng.range(1, 10) as u32,
            state: match rng.range(0, 5) {
                0 => AppConnState::Accepted(RuleId(0)),
                1 => AppConnState::Blocked(RuleId(0)),
                _ => AppConnState::Inspecting,
            },
            last_label: None,
        });
    }
    m
}

/// [tables answered, tables declined] over `packets` packets of one random policy, with the
/// tables limited to `budget` bytes (`None`: the default). Panics on any disagreement.
fn check(seed: u64, packets: usize, budget: Option<usize>, prelude: bool) -> [usize; 2] {
    let mut rng = SplitMix64::new(seed);
    let policy = if prelude {
        random_prelude_policy(&mut rng)
    } else {
        random_policy(&mut rng)
    };
    let opts = EngineOptions {
        today: Some(Date {
            year: 2026,
            month: 11,
            day: 27,
        }),
    };
    let mut fast = match budget {
        Some(b) => Engine::with_table_budget(&policy, opts.clone(), b),
        None => Engine::with_options(&policy, opts.clone()),
    };
    if budget == Some(0) {
        assert_eq!(fast.table_hooks(), 0, "seed {seed}");
    }
    let mut reference = Engine::with_options(&policy, opts);
    let owner = OwnerInfo {
        uid: 1000,
        gid: 100,
        cgroup: "system.slice/x.service".into(),
    };
    let names: Vec<String> = (0..100)
        .map(|i| format!("br{i}"))
        .chain((0..50).map(|i| format!("x{i}")))
        .collect();
    let mut now = 0u64;
    let mut seen = [0usize; 2];
    for i in 0..packets {
        let meta = random_meta(&mut rng, &owner, &names);
        now += rng.range(0, 300_000_000);
        // Taken before the packet: the tables read no state a classification changes but
        // the interface cache.
        let by_tables = fast.classify_by_tables(&meta, now);
        let a = fast.classify_with(MatcherKind::Fast, &meta, now);
        let b = reference.classify_with(MatcherKind::Reference, &meta, now);
        assert_eq!(
            a, b,
            "seed {seed} packet {i}: {meta:?}\npolicy: {policy:#?}"
        );
        match by_tables {
            Some(t) => {
                assert_eq!(
                    t, b,
                    "tables, seed {seed} packet {i}: {meta:?}\npolicy: {policy:#?}"
                );
                seen[0] += 1;
            }
            None => seen[1] += 1,
        }
    }
    seen
}

#[test]
fn tables_equal_reference_on_random_policies() {
    let mut seen = [0usize; 2];
    let mut by_rule = 0;
    for seed in 0..200 {
        let s = check(seed, 300, None, seed % 2 == 1);
        seen[0] += s[0];
        seen[1] += s[1];
        by_rule += s[0].min(1);
    }
    // Both paths must be exercised: most packets answered by the tables, thousands declined
    // (limits, owners, SYN proxy, bans, other budgets' hooks).
    assert!(
        seen[0] > 30_000 && seen[1] > 3_000 && by_rule > 150,
        "tables answered / declined: {seen:?}, policies with answers {by_rule}"
    );
}

#[test]
fn tables_equal_reference_within_any_budget() {
    // No tables, a few hooks' worth, and the default: the hooks without tables take the
    // bit-vector path, and every budget must give the reference's decisions.
    let mut partial = 0;
    for seed in 300..340 {
        for budget in [0usize, 300, 2_000, 20_000, 200_000] {
            check(seed, 120, Some(budget), seed % 2 == 0);
        }
        let mut rng = SplitMix64::new(seed);
        let p = if seed % 2 == 0 {
            random_prelude_policy(&mut rng)
        } else {
            random_policy(&mut rng)
        };
        let hooks = |b| Engine::with_table_budget(&p, EngineOptions::default(), b).table_hooks();
        assert_eq!(hooks(0), 0);
        assert_eq!(hooks(usize::MAX), 6, "seed {seed}");
        partial += usize::from((1..6).contains(&hooks(2_000)));
    }
    assert!(
        partial > 5,
        "only {partial} policies had some hooks' tables at 2,000 bytes"
    );
}

#[test]
fn many_interface_patterns_disable_tables() {
    // More than 64 distinct interface patterns: no tables at all, same decisions.
    let mut p = Policy::default();
    let names: Vec<String> = (0..70).map(|i| format!("if{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        p.zones.push(zone(&format!("z{i}"), &[n.as_str()], &[]));
        let mut r = rule(&format!("r{i}"), Direction::Forward, Action::Accept);
        r.from = vec![Peer::Zone(rampart_ir::ZoneId(i as u32))];
        p.rules.push(r);
    }
    let mut fast = Engine::new(&p);
    assert_eq!(fast.table_hooks(), 0);
    let mut reference = fast.clone();
    for n in names.iter().map(String::as_str).chain(["if7x", "x"]) {
        let mut m = PacketMeta::new(
            Direction::Forward,
            "192.0.2.1".parse().unwrap(),
            "192.0.2.2".parse().unwrap(),
            17,
            L4Meta::Ports { src: 1, dst: 2 },
        );
        m.iif = Some(n);
        assert!(fast.classify_by_tables(&m, 0).is_none());
        assert_eq!(
            fast.classify_with(MatcherKind::Fast, &m, 0),
            reference.classify_with(MatcherKind::Reference, &m, 0)
        );
    }
}

#[test]
fn tables_equal_reference_with_a_large_blocklist() {
    // 100,000 /32s and /24s (the slot index of the shared source partition: inline buckets
    // and overflowing ones) beside zone networks, in every hook, with probes on, next to and
    // away from the elements.
    let mut rng = SplitMix64::new(77);
    let elements: Vec<rampart_ir::IpNet> = (0..100_000)
        .map(|i| {
            let a = Ipv4Addr::from(rng.next_u64() as u32);
            let len = if i % 10 == 0 { 24 } else { 32 };
            rampart_ir::IpNet::V4(rampart_ir::Ipv4Net::new(a, len).unwrap().trunc())
        })
        .collect();
    let probes: Vec<u32> = elements
        .iter()
        .step_by(3)
        .filter_map(|e| match e {
            rampart_ir::IpNet::V4(n) => Some(u32::from(n.network())),
            rampart_ir::IpNet::V6(_) => None,
        })
        .collect();
    let mut p = Policy::default();
    p.sets.push(inline_set("blocklist", elements));
    p.zones.push(zone("wan", &["eth0"], &[]));
    p.zones
        .push(zone("lan", &["br*"], &["192.0.2.0/24", "10.0.0.0/8"]));
    for dir in Direction::ALL {
        let mut r = rule("block", dir, Action::Drop);
        r.from = vec![Peer::Set(SetId(0))];
        p.rules.push(r);
        let mut r = rule("lan-out", dir, Action::Accept);
        r.from = vec![Peer::Zone(rampart_ir::ZoneId(1))];
        r.services = vec![svc(6, &[(80, 80), (443, 443)])];
        p.rules.push(r);
        let mut r = rule("wan-ssh", dir, Action::Reject);
        r.from = vec![Peer::Zone(rampart_ir::ZoneId(0))];
        r.to = vec![Peer::Net(net("192.0.2.0/25"))];
        r.services = vec![svc(6, &[(22, 22)])];
        p.rules.push(r);
    }
    p.defaults.stateful = true;
    let mut fast = Engine::new(&p);
    assert_eq!(fast.table_hooks(), 6);
    let mut reference = fast.clone();
    let mut blocked = 0;
    for i in 0..40_000u32 {
        let near = |rng: &mut SplitMix64| -> u32 {
            let base = probes[rng.range(0, probes.len() as u64 - 1) as usize];
            match rng.range(0, 5) {
                0 => base,
                1 => base.wrapping_add(1),
                2 => base.wrapping_sub(1),
                3 => base.wrapping_add(0xff),
                _ => rng.next_u64() as u32,
            }
        };
        let src = IpAddr::V4(Ipv4Addr::from(near(&mut rng)));
        let dst = IpAddr::V4(Ipv4Addr::from(if i % 2 == 0 {
            0xc000_0205
        } else {
            near(&mut rng)
        }));
        let mut m = PacketMeta::new(
            *pick(&mut rng, &Direction::ALL),
            src,
            dst,
            6,
            L4Meta::Ports {
                src: 40_000,
                dst: *pick(&mut rng, &[22u16, 80, 443, 8080]),
            },
        );
        m.iif = *pick(&mut rng, &[Some("eth0"), Some("br0"), None]);
        m.oif = *pick(&mut rng, &[Some("eth0"), Some("br0"), None]);
        let t = fast.classify_by_tables(&m, 0);
        let a = fast.classify_with(MatcherKind::Fast, &m, 0);
        let b = reference.classify_with(MatcherKind::Reference, &m, 0);
        assert_eq!(a, b, "packet {i}: {m:?}");
        assert_eq!(t, Some(b), "packet {i}: {m:?}");
        blocked += usize::from(b.reason == Reason::Rule && b.action == Action::Drop);
    }
    assert!(blocked > 5_000, "only {blocked} packets hit the set");
}

#[test]
fn tables_equal_reference_on_the_benchmark_workload() {
    // The example policy (SYN proxy, bans, limits, owner rules, application rules, interface
    // zones) plus a 20,000-prefix blocklist, as in the replay benchmark: the tables answer
    // most packets, decline the SYN-proxied ones, and agree with the reference throughout.
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/m1037-baseline/policy.toml");
    let mut p = rampart_policy::load_file(&path).unwrap().policy;
    let mut rng = SplitMix64::new(5);
    let elements: Vec<rampart_ir::IpNet> = (0..20_000)
        .map(|_| {
            let a = Ipv4Addr::from(rng.next_u64() as u32);
            rampart_ir::IpNet::V4(rampart_ir::Ipv4Net::new(a, 32).unwrap())
        })
        .collect();
    p.sets.push(inline_set("bench-blocklist", elements));
    let set = SetId((p.sets.len() - 1) as u32);
    for dir in [Direction::Ingress, Direction::Forward] {
        let mut r = rule("bench-blocklist", dir, Action::Drop);
        r.from = vec![Peer::Set(set)];
        p.rules.insert(0, r);
    }
    let mut fast = Engine::new(&p);
    let mut reference = fast.clone();
    let local = [
        "192.0.2.5",
        "192.0.2.130",
        "203.0.113.10",
        "198.51.100.140",
        "203.0.113.5",
    ];
    let mut seen = [0usize; 2];
    for i in 0..30_000u64 {
        let ext = IpAddr::V4(Ipv4Addr::from(rng.next_u64() as u32));
        let loc: IpAddr = pick(&mut rng, &local).parse().unwrap();
        let (src, dst) = if rng.range(0, 1) == 0 {
            (loc, ext)
        } else {
            (ext, loc)
        };
        let dir = *pick(&mut rng, &Direction::ALL);
        let (proto, l4) = match rng.range(0, 2) {
            0 => (
                6,
                L4Meta::Ports {
                    src: 40_000,
                    dst: *pick(&mut rng, &[22u16, 25, 53, 80, 443, 445, 3389]),
                },
            ),
            1 => (
                17,
                L4Meta::Ports {
                    src: 40_000,
                    dst: *pick(&mut rng, &[53u16, 123, 161]),
                },
            ),
            _ => (
                1,
                L4Meta::Icmp {
                    icmp_type: 8,
                    code: 0,
                },
            ),
        };
        let mut m = PacketMeta::new(dir, src, dst, proto, l4);
        m.iif = (dir != Direction::Egress)
            .then_some(*pick(&mut rng, &["wan0", "corp0", "dmz0", "adm0"]));
        m.oif = (dir != Direction::Ingress).then_some(*pick(&mut rng, &["wan0", "corp0", "dmz0"]));
        m.ct_state = *pick(
            &mut rng,
            &[
                CtState::New,
                CtState::New,
                CtState::Established,
                CtState::Invalid,
            ],
        );
        let t = fast.classify_by_tables(&m, i * 1000);
        let a = fast.classify_with(MatcherKind::Fast, &m, i * 1000);
        let b = reference.classify_with(MatcherKind::Reference, &m, i * 1000);
        assert_eq!(a, b, "packet {i}: {m:?}");
        match t {
            Some(t) => {
                assert_eq!(t, b, "packet {i}: {m:?}");
                seen[0] += 1;
            }
            None => seen[1] += 1,
        }
    }
    assert!(
        seen[0] > 20_000 && seen[1] > 100,
        "tables answered / declined: {seen:?}"
    );
}

#[test]
fn interface_classes_of_nested_patterns() {
    // Nested wildcards (b*, br*, br-*) and exact names inside them (br-lan, bridge-guest01):
    // a name's class is the set of patterns it matches, which the tables must know for every
    // name (no decline), and names sharing a length and a prefix (br-lan / br-lax,
    // bridge-guest01 / bridge-guest02) must not be confused by the interface cache.
    let pats = ["b*", "br*", "br-*", "br-lan", "eth0", "bridge-guest01"];
    let mut p = Policy::default();
    for (i, pat) in pats.iter().enumerate() {
        p.zones.push(zone(&format!("z{i}"), &[pat], &[]));
    }
    // Most specific first: the first rule whose zone matches decides, with its own action.
    let order = [5usize, 3, 2, 1, 0, 4];
    for (k, &z) in order.iter().enumerate() {
        let action = [Action::Drop, Action::Reject, Action::Accept][k % 3];
        let mut r = rule(&format!("from-{}", pats[z]), Direction::Forward, action);
        r.from = vec![Peer::Zone(rampart_ir::ZoneId(z as u32))];
        p.rules.push(r);
        let mut r = rule(&format!("to-{}", pats[z]), Direction::Forward, action);
        r.to = vec![Peer::Zone(rampart_ir::ZoneId(z as u32))];
        r.services = vec![svc(17, &[(53, 53)])];
        p.rules.insert(0, r);
    }
    let mut fast = Engine::new(&p);
    assert_eq!(fast.table_hooks(), 6);
    let mut reference = fast.clone();
    let names = [
        "br-lan",
        "br-lax",
        "br-lan",
        "br-",
        "br",
        "b",
        "bz",
        "bridge",
        "bridge-guest01",
        "bridge-guest02",
        "bridge-guest01",
        "eth0",
        "eth0x",
        "eth",
        "x",
        "",
        "br-lan-guest-0001",
        "br-lan-guest-0002",
        "a-very-long-interface-name",
    ];
    for iif in names.iter().map(|n| Some(*n)).chain([None]) {
        for oif in names.iter().map(|n| Some(*n)).chain([None]) {
            for dport in [53u16, 80] {
                let mut m = PacketMeta::new(
                    Direction::Forward,
                    "192.0.2.1".parse().unwrap(),
                    "192.0.2.2".parse().unwrap(),
                    17,
                    L4Meta::Ports { src: 1, dst: dport },
                );
                m.iif = iif;
                m.oif = oif;
                let t = fast.classify_by_tables(&m, 0);
                let b = reference.classify_with(MatcherKind::Reference, &m, 0);
                assert_eq!(t, Some(b), "{iif:?} {oif:?} {dport}");
                assert_eq!(fast.classify_with(MatcherKind::Fast, &m, 0), b);
            }
        }
    }
}
