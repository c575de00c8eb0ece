//! Golden tests for `explain` output. Regenerate with `UPDATE_GOLDEN=1`.

mod support;

use rampart_engine::explain::{parse_flow, render_text};
use rampart_engine::{Engine, PacketMeta};
use rampart_ir::*;
use support::*;

fn policy() -> Policy {
    let mut p = Policy::default();
    p.defaults.loc = loc(3);
    p.zones
        .push(zone("lan", &["eth1"], &["192.0.2.0/24", "2001:db8:1::/48"]));
    p.zones.push(zone("internet", &["eth0"], &[]));
    p.sets.push(AddressSet {
        name: "blocklist".into(),
        elements: vec![net("198.51.100.0/24")],
        source: SetSource::Inline,
        except: vec![],
        loc: loc(5),
    });
    let mut bl = rule("drop-blocklist", Direction::Forward, Action::Drop);
    bl.to = vec![Peer::Set(SetId(0))];
    bl.mitigates = vec![TechniqueId("T1071".into())];
    bl.loc = loc(8);
    let mut smb = rule("smb-egress/block", Direction::Forward, Action::Drop);
    smb.from = vec![Peer::Zone(ZoneId(0))];
    smb.to = vec![Peer::Zone(ZoneId(1))];
    smb.services = vec![svc(proto::TCP, &[(445, 445), (139, 139)])];
    smb.mitigates = vec![TechniqueId("T1187".into()), TechniqueId("T1021.002".into())];
    smb.loc = loc(12);
    let mut web = rule("allow-web", Direction::Forward, Action::Accept);
    web.from = vec![Peer::Zone(ZoneId(0))];
    web.services = vec![svc(proto::TCP, &[(80, 80), (443, 443)])];
    web.loc = loc(20);
    let mut ping = rule("allow-ping", Direction::Forward, Action::Accept);
    ping.family = Family::V4;
    ping.services = vec![L4Match {
        protocol: Some(proto::ICMP),
        src_ports: vec![],
        dst_ports: vec![],
        icmp_types: vec![8],
        service: None,
    }];
    ping.loc = loc(24);
    p.rules = vec![bl, smb, web, ping];
    p
}

fn check(name: &str, flow: &str, iif: Option<&str>, oif: Option<&str>, state: CtState) {
    let engine = Engine::new(&policy());
    let f = parse_flow(flow).unwrap();
    let mut meta = PacketMeta::new(Direction::Forward, f.src, f.dst, f.protocol, f.l4);
    meta.iif = iif;
    meta.oif = oif;
    meta.ct_state = state;
    let text = render_text(&engine, &meta, &engine.explain(&meta));
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/explain")
        .join(format!("{name}.txt"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing golden {} (run with UPDATE_GOLDEN=1)",
            path.display()
        )
    });
    assert_eq!(
        text, want,
        "golden {name} differs; rerun with UPDATE_GOLDEN=1 and review"
    );
}

#[test]
fn smb_to_internet_is_blocked_by_the_profile_rule() {
    check(
        "smb-blocked",
        "tcp 192.0.2.5:51515 -> 203.0.113.7:445",
        Some("eth1"),
        Some("eth0"),
        CtState::New,
    );
}

#[test]
fn web_from_lan_is_allowed() {
    check(
        "web-allowed",
        "tcp 192.0.2.5:40000 -> 203.0.113.7:443",
        Some("eth1"),
        Some("eth0"),
        CtState::New,
    );
}

#[test]
fn ipv6_from_outside_falls_to_default() {
    check(
        "v6-default",
        "tcp [2001:db8:9::1]:5000 -> [2001:db8:1::5]:22",
        Some("eth0"),
        Some("eth1"),
        CtState::New,
    );
}

#[test]
fn ping_and_blocklist() {
    check(
        "icmp-echo",
        "icmp 192.0.2.1 -> 203.0.113.9 type echo-request",
        Some("eth1"),
        Some("eth0"),
        CtState::New,
    );
    check(
        "blocklist",
        "udp 192.0.2.1:5353 -> 198.51.100.7:53",
        Some("eth1"),
        Some("eth0"),
        CtState::New,
    );
}

#[test]
fn established_is_decided_by_the_prelude() {
    check(
        "established",
        "tcp 203.0.113.7:445 -> 192.0.2.5:51515",
        Some("eth0"),
        Some("eth1"),
        CtState::Established,
    );
}
