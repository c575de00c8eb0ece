//! Differential tests: the fast matcher and the linear reference must give the same verdict
//! and the same deciding rule, on random policies × random packets (with rate limits, so the
//! order in which rules are asked matters) and on ClassBench rule sets × traces.

mod support;

use std::net::IpAddr;

use proptest::prelude::*;
use rampart_engine::classbench::{
    self, generate_trace, parse_rules, reference_match, CbClassifier, CbHeader, CbRule, SplitMix64,
};
use rampart_engine::{
    AppConn, AppConnState, AppPayload, Engine, EngineOptions, L4Meta, MatcherKind, OwnerInfo,
    PacketMeta, Reason,
};
use rampart_ir::{AppProtocol, CtState, Date, Direction, RuleId};
use support::*;

fn random_meta<'a>(rng: &mut SplitMix64, owner: &'a OwnerInfo) -> PacketMeta<'a> {
    let v6 = rng.range(0, 3) == 0;
    let addr = |rng: &mut SplitMix64| -> IpAddr {
        if v6 {
            pick(rng, &V6_ADDRS).parse().unwrap()
        } else {
            pick(rng, &V4_ADDRS).parse().unwrap()
        }
    };
    let src = addr(rng);
    let dst = addr(rng);
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
                src: 1000 + rng.range(0, 2000) as u16,
                dst: *pick(rng, &PORTS),
            },
        ),
        2 => (
            if v6 { 58 } else { 1 },
            L4Meta::Icmp {
                icmp_type: *pick(rng, &[0u8, 3, 8, 128, 129, 135, 136]),
                code: 0,
            },
        ),
        _ => (*pick(rng, &[47u8, 6, 1, 58]), L4Meta::None),
    };
    let mut m = PacketMeta::new(*pick(rng, &Direction::ALL), src, dst, protocol, l4);
    m.iif = *pick(rng, &PKT_IFACES);
    m.oif = *pick(rng, &PKT_IFACES);
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
    m
}

fn check_policy(seed: u64, packets: usize) -> usize {
    let mut rng = SplitMix64::new(seed);
    let policy = random_policy(&mut rng);
    let opts = EngineOptions {
        today: Some(Date {
            year: 2026,
            month: 11,
            day: 27,
        }),
    };
    let mut fast = Engine::with_options(&policy, opts.clone());
    let mut reference = Engine::with_options(&policy, opts);
    let owner = OwnerInfo {
        uid: 1000,
        gid: 100,
        cgroup: "system.slice/x.service".into(),
    };
    let mut now = 0u64;
    let mut by_rule = 0;
    for i in 0..packets {
        let meta = random_meta(&mut rng, &owner);
        now += rng.range(0, 400_000_000);
        let a = fast.classify_with(MatcherKind::Fast, &meta, now);
        let b = reference.classify_with(MatcherKind::Reference, &meta, now);
        assert_eq!(
            a, b,
            "seed {seed} packet {i}: {meta:?}\npolicy: {policy:#?}"
        );
        by_rule += usize::from(a.rule.is_some());
        // explain() must agree with the reference on everything but rate limits.
        if policy.rules.iter().all(|r| r.limit.is_none()) {
            let ex = reference.explain(&meta);
            assert_eq!(ex.decision, b, "explain disagrees, seed {seed} packet {i}");
        }
    }
    by_rule
}

#[test]
fn fast_equals_reference_on_many_random_policies() {
    let mut by_rule = 0;
    for seed in 0..200 {
        by_rule += check_policy(seed, 300);
    }
    // The generator must produce policies whose rules actually decide packets, or the
    // comparison would be vacuous.
    assert!(
        by_rule > 5_000,
        "only {by_rule} packets were decided by a rule"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn fast_equals_reference_prop(seed in any::<u64>()) {
        check_policy(seed, 150);
    }

    #[test]
    fn fast_equals_reference_with_prelude_steps_prop(seed in any::<u64>()) {
        check_prelude_policy(seed, 150);
    }
}

/// A random packet plus the inputs of the prelude steps: TCP flags, whether conntrack holds
/// an entry, a payload label and the connection's application-protocol state.
fn random_prelude_meta<'a>(
    rng: &mut SplitMix64,
    owner: &'a OwnerInfo,
    policy: &rampart_ir::Policy,
) -> PacketMeta<'a> {
    let nrules = policy.rules.len() as u32;
    let mut m = random_meta(rng, owner);
    // Aim a third of the packets at a SYN proxy rule's port and hook, so the step is exercised
    // often enough (its other fields still vary).
    let proxied: Vec<&rampart_ir::Rule> = policy
        .rules
        .iter()
        .filter(|r| r.synproxy.is_some())
        .collect();
    if !proxied.is_empty() && rng.range(0, 2) == 0 {
        let r = *pick(rng, &proxied);
        if let Some(port) = r.services.first().and_then(|s| s.dst_ports.first()) {
            m.direction = r.direction;
            m.protocol = 6;
            m.l4 = L4Meta::Ports {
                src: 40000 + rng.range(0, 3) as u16,
                dst: port.lo,
            };
        }
    }
    m.tcp_flags = *pick(rng, &[0x02u8, 0x02, 0x10, 0x10, 0x12, 0x04, 0x18, 0x11]);
    m.ct_entry = rng.range(0, 2) == 0;
    if rng.range(0, 3) != 0 {
        let labels: Vec<Option<AppProtocol>> = std::iter::once(None)
            .chain(AppProtocol::ALL.into_iter().map(Some))
            .collect();
        m.payload = if rng.range(0, 4) == 0 {
            AppPayload::None
        } else {
            AppPayload::Label(*pick(rng, &labels))
        };
        let rule = RuleId(rng.range(0, u64::from(nrules.max(1)) - 1) as u32);
        m.app_conn = Some(AppConn {
            reply: rng.range(0, 3) == 0,
            packet_index: rng.range(1, 10) as u32,
            state: match rng.range(0, 8) {
                0 if nrules > 0 => AppConnState::Blocked(rule),
                1 if nrules > 0 => AppConnState::Accepted(rule),
                _ => AppConnState::Inspecting,
            },
            // Exercise label inheritance too: the matchers must agree on it.
            last_label: *pick(rng, &labels),
        });
    }
    m
}

fn check_prelude_policy(seed: u64, packets: usize) -> [usize; 3] {
    let mut rng = SplitMix64::new(seed);
    let policy = random_prelude_policy(&mut rng);
    let mut fast = Engine::new(&policy);
    let mut reference = Engine::new(&policy);
    let owner = OwnerInfo {
        uid: 1000,
        gid: 100,
        cgroup: "system.slice/x.service".into(),
    };
    let mut now = 0u64;
    // Packets decided by [a ban or banned source, the SYN proxy, an application rule].
    let mut seen = [0usize; 3];
    for i in 0..packets {
        let meta = random_prelude_meta(&mut rng, &owner, &policy);
        now += rng.range(0, 300_000_000);
        // explain() sees the state before the packet, like classify, and must agree with the
        // reference when no token bucket is involved.
        let ex = policy
            .rules
            .iter()
            .all(|r| r.limit.is_none())
            .then(|| reference.explain_at(&meta, now));
        let a = fast.classify_with(MatcherKind::Fast, &meta, now);
        let b = reference.classify_with(MatcherKind::Reference, &meta, now);
        assert_eq!(
            a, b,
            "seed {seed} packet {i}: {meta:?}\npolicy: {policy:#?}"
        );
        if let Some(ex) = ex {
            assert_eq!(ex.decision, b, "explain disagrees, seed {seed} packet {i}");
        }
        match b.reason {
            Reason::Ban | Reason::Banned => seen[0] += 1,
            Reason::SynproxyAnswered
            | Reason::SynproxyReply
            | Reason::SynproxyEstablished
            | Reason::SynproxyDrop => seen[1] += 1,
            Reason::AppRule | Reason::AppBlocked => seen[2] += 1,
            _ => {}
        }
        if b.app.is_some() {
            seen[2] += 1;
        }
    }
    seen
}

#[test]
fn fast_equals_reference_with_bans_synproxy_and_app_rules() {
    let mut seen = [0usize; 3];
    for seed in 0..150 {
        let s = check_prelude_policy(seed, 300);
        for k in 0..3 {
            seen[k] += s[k];
        }
    }
    // Each step must actually decide packets, or the comparison would be vacuous.
    assert!(
        seen[0] > 30 && seen[1] > 300 && seen[2] > 1_000,
        "decided by [ban, synproxy, app]: {seen:?}"
    );
}

fn random_cb_rules(rng: &mut SplitMix64, n: usize) -> Vec<CbRule> {
    (0..n)
        .map(|_| {
            let pfx = |rng: &mut SplitMix64| {
                let len = *pick(rng, &[0u8, 8, 16, 24, 28, 32]);
                let a = 0xc000_0200u32 | (rng.next_u64() as u32 & 0x0000_ffff);
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                (a & mask, len)
            };
            let range = |rng: &mut SplitMix64| match rng.range(0, 3) {
                0 => (0u16, 65535u16),
                1 => {
                    let p = *pick(rng, &PORTS);
                    (p, p)
                }
                2 => (1024, 65535),
                _ => (0, 1023),
            };
            CbRule {
                src: pfx(rng),
                dst: pfx(rng),
                sport: range(rng),
                dport: range(rng),
                proto: *pick(
                    rng,
                    &[(6u8, 0xffu8), (17, 0xff), (0, 0), (1, 0xff), (4, 0xfc)],
                ),
            }
        })
        .collect()
}

#[test]
fn classbench_fast_equals_reference_on_synthetic_sets() {
    let mut rng = SplitMix64::new(42);
    for n in [1usize, 10, 100, 700] {
        let rules = random_cb_rules(&mut rng, n);
        let c = CbClassifier::build(&rules).unwrap();
        let trace: Vec<CbHeader> = generate_trace(&rules, 20_000, n as u64)
            .into_iter()
            .map(|t| t.0)
            .collect();
        let mut batch = vec![None; trace.len()];
        c.classify_batch(&trace, &mut batch);
        for (h, b) in trace.iter().zip(&batch) {
            let want = reference_match(&rules, h);
            assert_eq!(c.classify(h), want, "{h:?}");
            assert_eq!(*b, want, "{h:?}");
        }
    }
}

#[test]
fn classbench_fast_equals_reference_on_shared_data() {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/classbench");
    if !dir.exists() {
        eprintln!("skipping: {} not present", dir.display());
        return;
    }
    for name in [
        "acl1_1k", "fw1_1k", "ipc1_1k", "acl2_1k", "fw2_1k", "acl3_1k",
    ] {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipping: {} not present", path.display());
            continue;
        };
        let rules = parse_rules(&text).unwrap();
        let c = CbClassifier::build(&rules).unwrap();
        let trace: Vec<CbHeader> = generate_trace(&rules, 20_000, 3)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_batch_and_single_match_reference(name, &rules, &c, &trace);
    }
    // The JiaChang trace that ships with its own rule file.
    let rules_path = dir.join("jiachang/acl1_1k");
    let trace_path = dir.join("jiachang/acl1_1k_trace");
    if let (Ok(r), Ok(t)) = (
        std::fs::read_to_string(rules_path),
        std::fs::read_to_string(trace_path),
    ) {
        let rules = parse_rules(&r).unwrap();
        let trace = classbench::parse_trace(&t).unwrap();
        assert!(trace.len() > 10_000);
        let c = CbClassifier::build(&rules).unwrap();
        assert_batch_and_single_match_reference("jiachang acl1_1k", &rules, &c, &trace);
    }
}

/// Both lookup paths (one header at a time and the batched walk the benchmark times) give the
/// reference's first match for every header.
fn assert_batch_and_single_match_reference(
    name: &str,
    rules: &[CbRule],
    c: &CbClassifier,
    trace: &[CbHeader],
) {
    let mut batch = vec![None; trace.len()];
    // Odd batch sizes too, so partial lock-step groups are exercised.
    for (hs, os) in trace.chunks(253).zip(batch.chunks_mut(253)) {
        c.classify_batch(hs, os);
    }
    for (h, b) in trace.iter().zip(&batch) {
        let want = reference_match(rules, h);
        assert_eq!(c.classify(h), want, "{name} ({}) single {h:?}", c.kind());
        assert_eq!(*b, want, "{name} ({}) batch {h:?}", c.kind());
    }
}

#[test]
fn classbench_fast_equals_reference_on_shared_10k_sets() {
    // The sets the benchmark's targets are on; the forests (and their grouping) are only
    // built for rule sets this large.
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/classbench");
    for name in ["acl1_10k", "fw1_10k", "ipc1_10k"] {
        let path = dir.join(name);
        let Ok(text) = std::fs::read_to_string(&path) else {
            eprintln!("skipping: {} not present", path.display());
            continue;
        };
        let rules = parse_rules(&text).unwrap();
        let c = CbClassifier::build(&rules).unwrap();
        let trace: Vec<CbHeader> = generate_trace(&rules, 4_000, 5)
            .into_iter()
            .map(|t| t.0)
            .collect();
        assert_batch_and_single_match_reference(name, &rules, &c, &trace);
    }
}

#[test]
fn policy_with_large_blocklist_set_agrees() {
    // 200k distinct /32 and /24 prefixes in a set used by a rule; LPM set vs classifier.
    use rampart_ir::*;
    let mut rng = SplitMix64::new(9);
    let mut elements = Vec::new();
    for i in 0..200_000u32 {
        let a = std::net::Ipv4Addr::from(
            0xc633_0000u32.wrapping_add(rng.next_u64() as u32 & 0x00ff_ffff) ^ (i & 1),
        );
        let len = if i % 10 == 0 { 24 } else { 32 };
        elements.push(IpNet::V4(Ipv4Net::new(a, len).unwrap().trunc()));
    }
    let mut p = Policy::default();
    p.sets.push(inline_set("blocklist", elements));
    let mut r = rule("block", Direction::Ingress, Action::Drop);
    r.from = vec![Peer::Set(SetId(0))];
    p.rules.push(r);
    p.rules
        .push(rule("allow", Direction::Ingress, Action::Accept));
    let mut e = Engine::new(&p);
    for _ in 0..20_000 {
        let src = IpAddr::V4(std::net::Ipv4Addr::from(
            0xc633_0000u32.wrapping_add(rng.next_u64() as u32 & 0x00ff_ffff),
        ));
        let m = PacketMeta::new(
            Direction::Ingress,
            src,
            "192.0.2.1".parse().unwrap(),
            6,
            L4Meta::Ports { src: 1, dst: 2 },
        );
        assert_eq!(
            e.classify_with(MatcherKind::Fast, &m, 0),
            e.classify_with(MatcherKind::Reference, &m, 0)
        );
    }
}

#[test]
fn large_set_shared_between_hooks_agrees() {
    // A large set in ingress, egress and forward rules (source and destination), beside
    // zone-like networks: the hooks' IPv4 classifiers then share one source partition into
    // atoms. Fast and reference must agree on every hook, in and out of the set.
    use rampart_ir::*;
    let mut rng = SplitMix64::new(21);
    let mut elements = Vec::new();
    for i in 0..30_000u32 {
        let a = std::net::Ipv4Addr::from(rng.next_u64() as u32 & 0x0fff_ffff | 0x1000_0000);
        let len = if i % 10 == 0 { 24 } else { 32 };
        elements.push(IpNet::V4(Ipv4Net::new(a, len).unwrap().trunc()));
    }
    let probes: Vec<std::net::Ipv4Addr> = elements
        .iter()
        .step_by(7)
        .filter_map(|e| match e {
            IpNet::V4(n) => Some(n.network()),
            IpNet::V6(_) => None,
        })
        .collect();
    let mut p = Policy::default();
    p.sets.push(inline_set("blocklist", elements));
    let net = |s: &str| Peer::Net(s.parse().unwrap());
    for dir in Direction::ALL {
        let mut r = rule("block", dir, Action::Drop);
        r.from = vec![Peer::Set(SetId(0))];
        p.rules.push(r);
        let mut r = rule("inner", dir, Action::Accept);
        r.from = vec![net("16.0.0.0/6"), net("192.0.2.0/24")];
        r.to = vec![Peer::Set(SetId(0))];
        p.rules.push(r);
        let mut r = rule("web", dir, Action::Accept);
        r.from = vec![net("17.0.0.0/8")];
        r.services = vec![L4Match {
            protocol: Some(6),
            src_ports: vec![],
            dst_ports: vec![PortRange { lo: 80, hi: 80 }],
            icmp_types: vec![],
            service: None,
        }];
        p.rules.push(r);
    }
    let e = Engine::new(&p);
    let mut fast = e.clone();
    let mut reference = e;
    let addr = |rng: &mut SplitMix64| -> IpAddr {
        match rng.range(0, 3) {
            0 => IpAddr::V4(probes[rng.range(0, probes.len() as u64 - 1) as usize]),
            1 => IpAddr::V4(std::net::Ipv4Addr::from(
                u32::from(probes[rng.range(0, probes.len() as u64 - 1) as usize]) + 1,
            )),
            _ => IpAddr::V4(std::net::Ipv4Addr::from(rng.next_u64() as u32)),
        }
    };
    let mut dropped = 0;
    for i in 0..30_000 {
        let (src, dst) = (addr(&mut rng), addr(&mut rng));
        let dir = *pick(&mut rng, &Direction::ALL);
        let m = PacketMeta::new(
            dir,
            src,
            dst,
            6,
            L4Meta::Ports {
                src: 1000,
                dst: *pick(&mut rng, &[80u16, 443]),
            },
        );
        let a = fast.classify_with(MatcherKind::Fast, &m, 0);
        let b = reference.classify_with(MatcherKind::Reference, &m, 0);
        assert_eq!(a, b, "packet {i}: {m:?}");
        dropped += usize::from(b.reason == Reason::Rule && b.action == Action::Drop);
    }
    assert!(dropped > 5_000, "only {dropped} packets hit the set");
}
