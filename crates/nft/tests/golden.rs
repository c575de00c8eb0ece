//! Golden tests: each case builds a small IR policy, compiles it and diffs the text against
//! `tests/golden/<case>/expected.nft` (or the error against `expected.err`). With
//! `UPDATE_GOLDEN=1` the files are rewritten. When running as root with `nft` installed, every
//! expected ruleset is also checked by the kernel with `nft -c -f` inside `unshare -n`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rampart_ir::*;
use rampart_nft::{emit, EmitOptions};

fn loc(line: u32) -> SourceLoc {
    SourceLoc {
        file: "policy.toml".into(),
        line,
        col: 1,
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn rule(name: &str, direction: Direction, action: Action) -> Rule {
    Rule {
        mitigates: vec![TechniqueId("T1190".into())],
        loc: loc(10),
        ..Rule::new(name, direction, action)
    }
}

fn svc(protocol: u8, dst: &[(u16, u16)]) -> L4Match {
    L4Match {
        protocol: Some(protocol),
        src_ports: vec![],
        dst_ports: dst.iter().map(|&(lo, hi)| PortRange { lo, hi }).collect(),
        icmp_types: vec![],
        service: None,
    }
}

fn zone(name: &str, ifaces: &[&str], nets: &[&str]) -> Zone {
    Zone {
        name: name.into(),
        interfaces: ifaces.iter().map(|s| s.to_string()).collect(),
        networks: nets.iter().map(|s| net(s)).collect(),
        trusted: true,
        public_facing: false,
        description: None,
        loc: loc(3),
    }
}

fn set(name: &str, elems: &[&str], source: SetSource) -> AddressSet {
    AddressSet {
        name: name.into(),
        elements: elems.iter().map(|s| net(s)).collect(),
        source,
        except: vec![],
        loc: loc(5),
    }
}

fn policy(rules: Vec<Rule>) -> Policy {
    Policy {
        rules,
        ..Policy::default()
    }
}

/// Every case: name, policy, options. `needs_cgroup`: the kernel check needs a cgroup that the
/// test machine may not have.
fn cases() -> Vec<(&'static str, Policy, EmitOptions)> {
    let o = EmitOptions::default;
    let mut v = Vec::new();

    v.push(("defaults_only", Policy::default(), o()));

    let mut ssh = rule("ssh-admin", Direction::Ingress, Action::Accept);
    ssh.from = vec![Peer::Net(net("192.0.2.0/24"))];
    ssh.services = vec![svc(proto::TCP, &[(22, 22)])];
    v.push(("ssh_from_net", policy(vec![ssh]), o()));

    // Zone with interfaces and both families, forward corp -> internet for web.
    let mut p = policy(vec![]);
    p.zones = vec![
        zone(
            "corp",
            &["eth1", "br-corp*"],
            &["192.0.2.0/24", "2001:db8:1::/48"],
        ),
        zone("internet", &["eth0"], &[]),
    ];
    let mut web = rule("corp-web", Direction::Forward, Action::Accept);
    web.from = vec![Peer::Zone(ZoneId(0))];
    web.to = vec![Peer::Zone(ZoneId(1))];
    web.services = vec![
        svc(proto::TCP, &[(80, 80), (443, 443)]),
        svc(proto::UDP, &[(443, 443)]),
    ];
    p.rules = vec![web];
    v.push(("zone_dual_stack_forward", p, o()));

    // Three consecutive rules of one zone pair share a chain entered once per family.
    let mut p = policy(vec![]);
    p.zones = vec![
        zone("lan", &["lan0"], &["192.0.2.0/24", "2001:db8:1::/64"]),
        zone("dmz", &["dmz0"], &["198.51.100.0/24"]),
    ];
    let pair = |name: &str, port: u16, action| {
        let mut r = rule(name, Direction::Forward, action);
        r.from = vec![Peer::Zone(ZoneId(0))];
        r.to = vec![Peer::Zone(ZoneId(1))];
        r.services = vec![svc(proto::TCP, &[(port, port)])];
        r
    };
    let mut other = rule("lan-any-dns", Direction::Forward, Action::Accept);
    other.from = vec![Peer::Zone(ZoneId(0))];
    other.services = vec![svc(proto::UDP, &[(53, 53)])];
    p.rules = vec![
        pair("web", 80, Action::Accept),
        pair("tls", 443, Action::Accept),
        pair("smb", 445, Action::Reject),
        other,
    ];
    v.push(("zone_pair_chain", p, o()));

    // OR of peers: zone (v4 only), set (mixed singles and prefixes, both families), literal nets.
    let mut p = policy(vec![]);
    p.zones = vec![zone("lab", &[], &["198.51.100.0/24"])];
    p.sets = vec![set(
        "admins",
        &["203.0.113.7/32", "203.0.113.64/26", "2001:db8:ad::1/128"],
        SetSource::Inline,
    )];
    let mut r = rule("mgmt", Direction::Ingress, Action::Accept);
    r.from = vec![
        Peer::Zone(ZoneId(0)),
        Peer::Set(SetId(0)),
        Peer::Net(net("192.0.2.10/32")),
        Peer::Net(net("2001:db8:99::/64")),
    ];
    r.services = vec![svc(proto::TCP, &[(22, 22)])];
    p.rules = vec![r];
    v.push(("peer_or_zone_set_net", p, o()));

    // Reject with protocol unknown, and tcp-only reject.
    let mut any = rule("reject-all-from-net", Direction::Ingress, Action::Reject);
    any.from = vec![Peer::Net(net("203.0.113.0/24"))];
    let mut tcp = rule("reject-smb", Direction::Egress, Action::Reject);
    tcp.services = vec![svc(proto::TCP, &[(445, 445), (139, 139)])];
    tcp.mitigates = vec![TechniqueId("T1187".into()), TechniqueId("T1021.002".into())];
    let mut udp = rule("reject-netbios", Direction::Egress, Action::Reject);
    udp.services = vec![svc(proto::UDP, &[(137, 138)])];
    v.push(("reject_flavours", policy(vec![any, tcp, udp]), o()));

    // Logging drop: separate rate-limited log rule before the counted verdict.
    let mut r = rule("llmnr-block", Direction::Egress, Action::Drop);
    r.services = vec![svc(proto::UDP, &[(5355, 5355)])];
    r.log = true;
    r.mitigates = vec![TechniqueId("T1557.001".into())];
    v.push(("log_drop", policy(vec![r]), o()));

    // Limits.
    let mut shared = rule("icmp-echo-limited", Direction::Ingress, Action::Accept);
    shared.services = vec![
        L4Match {
            icmp_types: vec![8],
            ..svc(proto::ICMP, &[])
        },
        L4Match {
            icmp_types: vec![128],
            ..svc(proto::ICMPV6, &[])
        },
    ];
    shared.limit = Some(Limit {
        rate: 5,
        per_s: 1,
        burst: 10,
        unit: RateUnit::Packets,
        per_source: false,
    });
    let mut per_src = rule("ssh-per-source", Direction::Ingress, Action::Accept);
    per_src.services = vec![svc(proto::TCP, &[(22, 22)])];
    per_src.limit = Some(Limit {
        rate: 10,
        per_s: 60,
        burst: 0,
        unit: RateUnit::Packets,
        per_source: true,
    });
    per_src.conn_limit = Some(4);
    let mut bytes = rule("bulk-bytes", Direction::Forward, Action::Accept);
    bytes.limit = Some(Limit {
        rate: 1_000_000,
        per_s: 1,
        burst: 1_500_000,
        unit: RateUnit::Bytes,
        per_source: false,
    });
    let mut conns = rule("web-conns", Direction::Ingress, Action::Accept);
    conns.services = vec![svc(proto::TCP, &[(443, 443)])];
    conns.conn_limit = Some(100);
    v.push(("limits", policy(vec![shared, per_src, bytes, conns]), o()));

    // Owner matches on egress.
    let mut r = rule("imds-only-root", Direction::Egress, Action::Accept);
    r.to = vec![Peer::Net(net("169.254.169.254/32"))];
    r.owner = Some(Owner {
        uids: vec![0],
        gids: vec![0, 4],
        cgroups: vec![],
    });
    let mut deny = rule("imds-deny", Direction::Egress, Action::Drop);
    deny.to = vec![Peer::Net(net("169.254.169.254/32"))];
    deny.mitigates = vec![TechniqueId("T1552.005".into())];
    v.push(("owner_uid_gid", policy(vec![r, deny]), o()));

    // Family interplay: v6-only rule with a v4 peer never matches; v4 rule with icmpv6 never.
    let mut a = rule("v6-only-v4-peer", Direction::Ingress, Action::Accept);
    a.family = Family::V6;
    a.from = vec![Peer::Net(net("192.0.2.0/24"))];
    let mut b = rule("v4-only-icmp", Direction::Ingress, Action::Accept);
    b.family = Family::V4;
    b.services = vec![svc(proto::ICMP, &[]), svc(proto::ICMPV6, &[])];
    let mut c = rule("v6-only-any", Direction::Forward, Action::Drop);
    c.family = Family::V6;
    v.push(("family_constraints", policy(vec![a, b, c]), o()));

    // Interface zones in directions without that interface.
    let mut p = policy(vec![]);
    p.zones = vec![zone("lan", &["eth1"], &["192.0.2.0/24"])];
    let mut e = rule("egress-from-lan-iface", Direction::Egress, Action::Drop);
    e.from = vec![Peer::Zone(ZoneId(0))];
    let mut i = rule("ingress-to-lan-iface", Direction::Ingress, Action::Drop);
    i.to = vec![Peer::Zone(ZoneId(0))];
    let mut ok = rule("ingress-from-lan", Direction::Ingress, Action::Accept);
    ok.from = vec![Peer::Zone(ZoneId(0))];
    ok.ct_states = vec![CtState::New, CtState::Untracked];
    p.rules = vec![e, i, ok];
    v.push(("iface_absent_directions", p, o()));

    // Expiry.
    let mut old = rule("temp-vendor", Direction::Ingress, Action::Accept);
    old.expires = Some(Date {
        year: 2026,
        month: 1,
        day: 31,
    });
    old.from = vec![Peer::Net(net("198.51.100.9/32"))];
    let mut fresh = rule("temp-vendor-2", Direction::Ingress, Action::Accept);
    fresh.expires = Some(Date {
        year: 2027,
        month: 1,
        day: 31,
    });
    fresh.from = vec![Peer::Net(net("198.51.100.10/32"))];
    let mut opts = o();
    opts.today = Some(Date {
        year: 2026,
        month: 11,
        day: 27,
    });
    v.push(("expired_rules", policy(vec![old, fresh]), opts));

    // Big set: elements go to `add element` statements. Feed set: named after its feed, an
    // interval and a `_hosts` set per family always present (the feeds runner's split layout).
    let mut p = policy(vec![]);
    let big: Vec<String> = (0..300u32)
        .map(|i| format!("198.51.{}.{}/32", 100 + i / 250, i % 250))
        .collect();
    let big_refs: Vec<&str> = big.iter().map(String::as_str).collect();
    p.sets = vec![
        set("blocklist", &big_refs, SetSource::Inline),
        set(
            "spamhaus",
            &["203.0.113.0/24"],
            SetSource::Feed {
                name: "drop".into(),
                url: "https://example.com/drop.txt".into(),
                format: "spamhaus".into(),
                refresh_s: 3600,
            },
        ),
    ];
    let mut r = rule("block-bad", Direction::Ingress, Action::Drop);
    r.from = vec![Peer::Set(SetId(0)), Peer::Set(SetId(1))];
    r.mitigates = vec![TechniqueId("T1498".into())];
    p.rules = vec![r];
    v.push(("big_and_feed_sets", p, o()));

    // Many prefixes of one length: a masked hash set; the few others stay in an interval set.
    let mut p = policy(vec![]);
    let mut elems: Vec<String> = (0..300u32)
        .map(|i| format!("2001:db8:{:x}::/48", i * 2))
        .collect();
    elems.push("2001:db8:ffff::/64".into());
    elems.push("198.51.100.16/28".into());
    let refs: Vec<&str> = elems.iter().map(String::as_str).collect();
    p.sets = vec![set(
        "bogons",
        &refs,
        SetSource::File {
            path: "bogons.txt".into(),
        },
    )];
    let mut r = rule("drop-bogons", Direction::Forward, Action::Drop);
    r.to = vec![Peer::Set(SetId(0))];
    p.rules = vec![r];
    v.push(("masked_prefix_sets", p, o()));

    // Defaults: stateless, no loopback, reject default on ingress.
    let mut p = policy(vec![]);
    p.defaults.stateful = false;
    p.defaults.allow_loopback = false;
    p.defaults.allow_icmpv6_essential = false;
    p.defaults.ingress = Action::Reject;
    p.defaults.egress = Action::Drop;
    v.push(("defaults_stateless_reject", p, o()));

    // Services: tcp/udp with the same ports merge; source ports; other protocols.
    let mut r = rule("dns-out", Direction::Egress, Action::Accept);
    r.services = vec![
        svc(proto::TCP, &[(53, 53)]),
        svc(proto::UDP, &[(53, 53)]),
        L4Match {
            src_ports: vec![PortRange {
                lo: 1024,
                hi: 65535,
            }],
            ..svc(proto::UDP, &[(123, 123)])
        },
        svc(47, &[]),
        svc(50, &[]),
    ];
    let mut t = rule("tcp-any", Direction::Egress, Action::Drop);
    t.services = vec![svc(proto::TCP, &[]), svc(proto::TCP, &[(25, 25)])];
    v.push(("services_merge", policy(vec![r, t]), o()));

    // SYN proxy: an ingress web service and a forwarded one into a zone with an interface
    // (matched on the route in prerouting), one of them gated by a per-source limit with a ban.
    let mut p = policy(vec![]);
    p.zones = vec![
        zone("lan", &["lan0"], &["192.0.2.0/24", "2001:db8:1::/64"]),
        zone("dmz", &["dmz0"], &["198.51.100.0/24"]),
    ];
    let mut web = rule("web-in", Direction::Ingress, Action::Accept);
    web.services = vec![svc(proto::TCP, &[(80, 80), (443, 443)])];
    web.synproxy = Some(Synproxy::default());
    let mut fwd = rule("dmz-web", Direction::Forward, Action::Accept);
    fwd.from = vec![Peer::Zone(ZoneId(0))];
    fwd.to = vec![Peer::Zone(ZoneId(1))];
    fwd.services = vec![svc(proto::TCP, &[(8080, 8080)])];
    fwd.synproxy = Some(Synproxy {
        mss: 1400,
        wscale: 5,
        timestamp: false,
        sack_perm: true,
    });
    fwd.limit = Some(Limit {
        rate: 20,
        per_s: 1,
        burst: 40,
        unit: RateUnit::Packets,
        per_source: true,
    });
    fwd.ban = Some(Ban { timeout_s: 60 });
    p.rules = vec![web, fwd];
    v.push(("synproxy", p, o()));

    // SYN proxy at its rule's place: earlier rules of the direction that can match a bare SYN
    // (a drop from a network, a limited accept with TCP and UDP services) claim it first in the
    // raw chain (`return`, so it stays tracked); an ICMP-only rule, a rule for established
    // packets only and rules after the proxy rule are not listed there.
    let mut p = policy(vec![]);
    p.zones = vec![zone("dmz", &["dmz0"], &["198.51.100.0/24"])];
    let mut bad = rule("known-bad", Direction::Forward, Action::Drop);
    bad.from = vec![Peer::Net(net("203.0.113.0/24"))];
    let mut ping = rule("ping", Direction::Forward, Action::Accept);
    ping.services = vec![L4Match {
        icmp_types: vec![8],
        ..svc(proto::ICMP, &[])
    }];
    let mut est = rule("est-only", Direction::Forward, Action::Accept);
    est.ct_states = vec![CtState::Established];
    let mut lim = rule("partner-limited", Direction::Forward, Action::Accept);
    lim.from = vec![Peer::Net(net("192.0.2.0/24"))];
    lim.services = vec![
        svc(proto::TCP, &[(443, 443)]),
        svc(proto::UDP, &[(443, 443)]),
    ];
    lim.limit = Some(Limit {
        rate: 5,
        per_s: 1,
        burst: 5,
        unit: RateUnit::Packets,
        per_source: false,
    });
    let mut web = rule("dmz-web", Direction::Forward, Action::Accept);
    web.to = vec![Peer::Zone(ZoneId(0))];
    web.services = vec![svc(proto::TCP, &[(443, 443)])];
    web.synproxy = Some(Synproxy::default());
    let after = rule("after", Direction::Forward, Action::Drop);
    p.rules = vec![bad, ping, est, lim, web, after];
    v.push(("synproxy_rule_order", p, o()));

    // Auto-ban: per-source limit and connection cap; never_ban exempts a v4 network.
    let mut p = policy(vec![]);
    p.defaults.never_ban = vec![net("192.0.2.0/28"), net("2001:db8:ff::/48")];
    let mut ssh = rule("ssh", Direction::Ingress, Action::Accept);
    ssh.services = vec![svc(proto::TCP, &[(22, 22)])];
    ssh.limit = Some(Limit {
        rate: 5,
        per_s: 60,
        burst: 10,
        unit: RateUnit::Packets,
        per_source: true,
    });
    ssh.ban = Some(Ban { timeout_s: 600 });
    let mut web = rule("web-conns", Direction::Forward, Action::Accept);
    web.services = vec![svc(proto::TCP, &[(80, 80)])];
    web.conn_limit = Some(50);
    web.ban = Some(Ban { timeout_s: 30 });
    p.rules = vec![ssh, web];
    v.push(("ban", p, o()));

    // Application-protocol rules: only DNS on udp/tcp 53 outbound; no SMB1 forwarded; ICMP
    // tunnels dropped; fail closed (the default) and open.
    let mut p = policy(vec![]);
    p.zones = vec![zone("lan", &["lan0"], &["192.0.2.0/24"])];
    let mut dns = rule("dns-must-be-dns", Direction::Egress, Action::Drop);
    dns.services = vec![svc(proto::UDP, &[(53, 53)]), svc(proto::TCP, &[(53, 53)])];
    dns.app = Some(AppMatch {
        protocols: vec![AppProtocol::Dns],
        negate: true,
    });
    let mut smb1 = rule("no-smb1", Direction::Forward, Action::Reject);
    smb1.from = vec![Peer::Zone(ZoneId(0))];
    smb1.app = Some(AppMatch {
        protocols: vec![AppProtocol::Smb1],
        negate: false,
    });
    let mut tun = rule("icmp-tunnels", Direction::Ingress, Action::Drop);
    tun.services = vec![L4Match {
        icmp_types: vec![8],
        ..svc(proto::ICMP, &[])
    }];
    tun.app = Some(AppMatch {
        protocols: vec![AppProtocol::IcmpTunnel],
        negate: false,
    });
    let ssh = {
        let mut r = rule("ssh", Direction::Ingress, Action::Accept);
        r.services = vec![svc(proto::TCP, &[(22, 22)])];
        r
    };
    p.rules = vec![dns, smb1, tun, ssh];
    v.push(("app_rules", p.clone(), o()));
    p.defaults.classifier_fail_open = true;
    v.push(("app_rules_fail_open", p, o()));

    v
}

fn must_fail() -> Vec<(&'static str, Policy)> {
    let mut v = Vec::new();
    let mut r = rule("ports-no-proto", Direction::Ingress, Action::Accept);
    r.services = vec![L4Match {
        protocol: None,
        src_ports: vec![],
        dst_ports: vec![PortRange::single(22)],
        icmp_types: vec![],
        service: None,
    }];
    v.push(("fail_ports_without_protocol", policy(vec![r])));

    let mut r = rule("ports-on-gre", Direction::Ingress, Action::Accept);
    r.services = vec![svc(47, &[(1, 2)])];
    v.push(("fail_ports_on_gre", policy(vec![r])));

    let mut r = rule("icmp-type-on-tcp", Direction::Ingress, Action::Accept);
    r.services = vec![L4Match {
        icmp_types: vec![8],
        ..svc(proto::TCP, &[])
    }];
    v.push(("fail_icmp_types_on_tcp", policy(vec![r])));

    let mut r = rule("owner-ingress", Direction::Ingress, Action::Accept);
    r.owner = Some(Owner {
        uids: vec![0],
        gids: vec![],
        cgroups: vec![],
    });
    v.push(("fail_owner_on_ingress", policy(vec![r])));

    let mut p = policy(vec![rule("x", Direction::Ingress, Action::Accept)]);
    p.zones = vec![zone("bad", &["eth*0"], &[])];
    v.push(("fail_bad_interface", p));

    let mut r = rule("odd-period", Direction::Ingress, Action::Accept);
    r.limit = Some(Limit {
        rate: 5,
        per_s: 7,
        burst: 0,
        unit: RateUnit::Packets,
        per_source: false,
    });
    v.push(("fail_rate_period", policy(vec![r])));

    let mut r = rule("small-byte-bucket", Direction::Ingress, Action::Accept);
    r.limit = Some(Limit {
        rate: 1000,
        per_s: 1,
        burst: 10,
        unit: RateUnit::Bytes,
        per_source: false,
    });
    v.push(("fail_byte_bucket", policy(vec![r])));

    let mut r = rule("zero-conns", Direction::Ingress, Action::Accept);
    r.conn_limit = Some(0);
    v.push(("fail_zero_connlimit", policy(vec![r])));

    let mut r = rule("dangling", Direction::Ingress, Action::Accept);
    r.from = vec![Peer::Zone(ZoneId(7))];
    v.push(("fail_dangling_zone", policy(vec![r])));

    let mut r = rule("bad-cgroup", Direction::Egress, Action::Accept);
    r.owner = Some(Owner {
        uids: vec![],
        gids: vec![],
        cgroups: vec!["../etc".into()],
    });
    v.push(("fail_bad_cgroup", policy(vec![r])));

    let mut p = policy(vec![]);
    p.zones = vec![zone("a-b", &[], &[]), zone("a_b", &[], &[])];
    v.push(("fail_name_collision", p));

    let mut r = rule("port-range-backwards", Direction::Ingress, Action::Accept);
    r.services = vec![svc(proto::TCP, &[(90, 80)])];
    v.push(("fail_port_range", policy(vec![r])));

    let mut r = rule("synproxy-udp", Direction::Ingress, Action::Accept);
    r.services = vec![svc(proto::UDP, &[(53, 53)])];
    r.synproxy = Some(Synproxy::default());
    v.push(("fail_synproxy_udp", policy(vec![r])));

    let mut r = rule("synproxy-any-port", Direction::Ingress, Action::Accept);
    r.services = vec![svc(proto::TCP, &[])];
    r.synproxy = Some(Synproxy::default());
    v.push(("fail_synproxy_no_ports", policy(vec![r])));

    let mut r = rule("synproxy-egress", Direction::Egress, Action::Accept);
    r.services = vec![svc(proto::TCP, &[(80, 80)])];
    r.synproxy = Some(Synproxy::default());
    v.push(("fail_synproxy_egress", policy(vec![r])));

    let mut r = rule("synproxy-drop", Direction::Ingress, Action::Drop);
    r.services = vec![svc(proto::TCP, &[(80, 80)])];
    r.synproxy = Some(Synproxy::default());
    v.push(("fail_synproxy_drop", policy(vec![r])));

    let mut r = rule("synproxy-wscale", Direction::Ingress, Action::Accept);
    r.services = vec![svc(proto::TCP, &[(80, 80)])];
    r.synproxy = Some(Synproxy {
        wscale: 15,
        ..Synproxy::default()
    });
    v.push(("fail_synproxy_wscale", policy(vec![r])));

    let mut r = rule("ban-without-limit", Direction::Ingress, Action::Accept);
    r.ban = Some(Ban { timeout_s: 60 });
    v.push(("fail_ban_without_limit", policy(vec![r])));

    let mut r = rule("ban-shared-limit", Direction::Ingress, Action::Accept);
    r.limit = Some(Limit {
        rate: 5,
        per_s: 1,
        burst: 0,
        unit: RateUnit::Packets,
        per_source: false,
    });
    r.ban = Some(Ban { timeout_s: 60 });
    v.push(("fail_ban_shared_limit", policy(vec![r])));

    let mut r = rule("ban-forever", Direction::Ingress, Action::Accept);
    r.conn_limit = Some(10);
    r.ban = Some(Ban {
        timeout_s: 31 * 86_400,
    });
    v.push(("fail_ban_timeout", policy(vec![r])));

    let mut r = rule("app-empty", Direction::Ingress, Action::Drop);
    r.app = Some(AppMatch {
        protocols: vec![],
        negate: false,
    });
    v.push(("fail_app_no_protocols", policy(vec![r])));

    let mut r = rule("app-limited", Direction::Ingress, Action::Drop);
    r.app = Some(AppMatch {
        protocols: vec![AppProtocol::Ssh],
        negate: false,
    });
    r.conn_limit = Some(3);
    v.push(("fail_app_with_limit", policy(vec![r])));
    v
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1")
}

fn check_file(path: &Path, got: &str, failures: &mut Vec<String>) {
    if update() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, got).unwrap();
        return;
    }
    match std::fs::read_to_string(path) {
        Ok(want) if want == got => {}
        Ok(want) => failures.push(format!(
            "{} differs:\n--- expected\n{want}\n--- got\n{got}",
            path.display()
        )),
        Err(e) => failures.push(format!(
            "{}: {e} (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

/// `Some(reason)` when the kernel check cannot run here.
fn kernel_check_unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("nft not installed".into()),
    }
}

fn nft_check(path: &Path) -> Result<(), String> {
    let out = Command::new("unshare")
        .args(["-n", "nft", "-c", "-f"])
        .arg(path)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn golden_rulesets() {
    let mut failures = Vec::new();
    let kernel = kernel_check_unavailable();
    if let Some(reason) = &kernel {
        eprintln!("skipping nft -c kernel checks: {reason}");
    }
    for (name, policy, opts) in cases() {
        let got = match emit(&policy, &opts) {
            Ok(t) => t,
            Err(e) => {
                failures.push(format!("{name}: unexpected error {e}"));
                continue;
            }
        };
        // Deterministic: the same input gives the same bytes.
        assert_eq!(
            emit(&policy, &opts).unwrap(),
            got,
            "{name} not deterministic"
        );
        let dir = golden_dir().join(name);
        check_file(&dir.join("expected.nft"), &got, &mut failures);
        if update() {
            let ir = serde_json::to_string_pretty(&policy).unwrap();
            std::fs::write(dir.join("ir.json"), ir + "\n").unwrap();
        }
        if kernel.is_none() {
            if let Err(e) = nft_check(&dir.join("expected.nft")) {
                failures.push(format!("{name}: nft -c rejected expected.nft:\n{e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn golden_must_fail() {
    let mut failures = Vec::new();
    for (name, policy) in must_fail() {
        match emit(&policy, &EmitOptions::default()) {
            Ok(text) => failures.push(format!("{name}: compiled but must fail:\n{text}")),
            Err(e) => check_file(
                &golden_dir().join(name).join("expected.err"),
                &format!("{e}\n"),
                &mut failures,
            ),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The ir.json files stored next to the goldens are the same IR the builders make, so the
/// cases are reviewable as data and usable by other backends (the engine's differential test).
#[test]
fn stored_ir_matches_builders() {
    if update() {
        return;
    }
    for (name, policy, _) in cases() {
        let path = golden_dir().join(name).join("ir.json");
        let text = std::fs::read_to_string(&path).unwrap();
        let stored: Policy = serde_json::from_str(&text).unwrap();
        assert_eq!(
            stored, policy,
            "{name}: ir.json out of date (UPDATE_GOLDEN=1)"
        );
    }
}

#[test]
fn cgroup_owner_compiles_with_prefix() {
    let mut r = rule("nginx-egress", Direction::Egress, Action::Accept);
    r.owner = Some(Owner {
        uids: vec![33],
        gids: vec![],
        cgroups: vec!["system.slice/nginx.service".into(), "/jail/".into()],
    });
    let opts = EmitOptions {
        cgroup2_prefix: "unified".into(),
        ..EmitOptions::default()
    };
    let text = emit(&policy(vec![r]), &opts).unwrap();
    assert!(text.contains(
        "meta skuid 33 socket cgroupv2 level 2 \"unified/system.slice/nginx.service\" goto rule_0_verdict"
    ), "{text}");
    assert!(
        text.contains("socket cgroupv2 level 1 \"unified/jail\" goto rule_0_verdict"),
        "{text}"
    );
}
