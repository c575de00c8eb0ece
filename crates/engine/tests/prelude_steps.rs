//! The prelude steps added for DoS defence and protocol-not-port filtering: the ban set
//! (auto-ban, never_ban, time as an input), the SYN proxy (bare SYN answered without a
//! conntrack entry, cookie-completing ACK creates the connection, anything else dropped) and
//! application-protocol rules (labels, inspection window, blocked/accepted connections, reply
//! packets matched in the original direction). Checked on the engine directly, with both
//! matchers, and end to end through `Simulator` on pcaps built here.

mod support;

use std::net::IpAddr;

use rampart_engine::pcap::{write_pcap_header, write_pcap_record, CaptureReader};
use rampart_engine::simulate::{Report, SimConfig, Simulator};
use rampart_engine::{
    AppConn, AppConnState, AppPayload, Decision, Engine, L4Meta, MatcherKind, PacketMeta, Reason,
};
use rampart_events::VecSink;
use rampart_ir::*;
use support::*;

const S_NS: u64 = 1_000_000_000;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn both(e: &mut (Engine, Engine), m: &PacketMeta<'_>, now: u64) -> Decision {
    let a = e.0.classify_with(MatcherKind::Fast, m, now);
    let b = e.1.classify_with(MatcherKind::Reference, m, now);
    assert_eq!(a, b, "fast and reference disagree on {m:?}");
    a
}

fn engines(p: &Policy) -> (Engine, Engine) {
    (Engine::new(p), Engine::new(p))
}

fn ssh_ban_policy() -> Policy {
    let mut p = Policy::default();
    let mut r = rule("ssh", Direction::Ingress, Action::Accept);
    r.services = vec![svc(proto::TCP, &[(22, 22)])];
    r.limit = Some(Limit {
        rate: 2,
        per_s: 1,
        burst: 2,
        unit: RateUnit::Packets,
        per_source: true,
    });
    r.ban = Some(Ban { timeout_s: 60 });
    p.rules.push(r);
    p.defaults.never_ban = vec![net("198.51.100.0/24")];
    p
}

fn new_ssh(src: &str) -> PacketMeta<'static> {
    PacketMeta::new(
        Direction::Ingress,
        ip(src),
        ip("203.0.113.7"),
        6,
        L4Meta::Ports {
            src: 40000,
            dst: 22,
        },
    )
}

#[test]
fn limit_refusal_bans_the_source_until_the_timeout() {
    let mut e = engines(&ssh_ban_policy());
    let m = new_ssh("192.0.2.5");
    assert_eq!(both(&mut e, &m, 0).reason, Reason::Rule);
    assert_eq!(both(&mut e, &m, 0).reason, Reason::Rule);
    let d = both(&mut e, &m, 0);
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Drop, Some(RuleId(0)), Reason::Ban)
    );
    assert_eq!(e.0.banned(m.src, 0), Some((60 * S_NS, RuleId(0))));
    // Banned: dropped in the prelude whatever the state, even once the bucket refilled.
    let mut est = m;
    est.ct_state = CtState::Established;
    let d = both(&mut e, &est, 30 * S_NS);
    assert_eq!((d.action, d.reason), (Action::Drop, Reason::Banned));
    // Egress is not subject to the ban set.
    let mut out = m;
    out.direction = Direction::Egress;
    assert_eq!(both(&mut e, &out, 30 * S_NS).reason, Reason::Default);
    // Other sources are unaffected.
    assert_eq!(
        both(&mut e, &new_ssh("192.0.2.6"), 30 * S_NS).reason,
        Reason::Rule
    );
    // The ban ends after 60 s.
    assert_eq!(both(&mut e, &m, 60 * S_NS).reason, Reason::Rule);
    let ex = e.1.explain_at(&m, 61 * S_NS);
    assert_eq!(ex.decision.reason, Reason::Rule);
}

#[test]
fn never_ban_sources_fall_through_like_any_limited_rule() {
    let mut e = engines(&ssh_ban_policy());
    let m = new_ssh("198.51.100.9");
    both(&mut e, &m, 0);
    both(&mut e, &m, 0);
    let d = both(&mut e, &m, 0);
    assert_eq!((d.action, d.reason), (Action::Drop, Reason::Default));
    assert_eq!(e.0.banned(m.src, 0), None);
    assert_eq!(both(&mut e, &m, S_NS).reason, Reason::Rule);
}

#[test]
fn conn_limit_refusal_bans_too_and_explain_names_it() {
    let mut p = ssh_ban_policy();
    p.rules[0].limit = None;
    p.rules[0].conn_limit = Some(3);
    let mut e = engines(&p);
    let mut m = new_ssh("192.0.2.5");
    m.src_conns = 3;
    let ex = e.1.explain_at(&m, 0);
    assert_eq!(ex.decision.reason, Reason::Ban);
    let text = rampart_engine::explain::render_text(&e.1, &m, &ex);
    assert!(text.contains("BAN -> drop (conn_limit)"), "{text}");
    assert!(text.contains("source banned for 60 s"), "{text}");
    assert_eq!(both(&mut e, &m, 0).reason, Reason::Ban);
    let ex = e.1.explain_at(&m, S_NS);
    assert_eq!(ex.decision.reason, Reason::Banned);
    assert!(ex.steps[0]
        .detail
        .contains("is banned (by rule #0 ssh) for 59 s more"));
}

fn web_synproxy_policy() -> Policy {
    let mut p = Policy::default();
    let mut r = rule("web", Direction::Ingress, Action::Accept);
    r.services = vec![svc(proto::TCP, &[(80, 80)])];
    r.synproxy = Some(Synproxy::default());
    p.rules.push(r);
    p
}

fn tcp_meta(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> PacketMeta<'static> {
    let mut m = PacketMeta::new(
        Direction::Ingress,
        ip(src),
        ip(dst),
        6,
        L4Meta::Ports { src: sp, dst: dp },
    );
    m.tcp_flags = flags;
    m
}

#[test]
fn synproxy_answers_syns_and_only_cookie_acks_open_connections() {
    let mut e = engines(&web_synproxy_policy());
    let syn = tcp_meta("192.0.2.5", 40000, "203.0.113.7", 80, 0x02);
    let d = both(&mut e, &syn, 0);
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Accept, Some(RuleId(0)), Reason::SynproxyAnswered)
    );
    // The server's SYN-ACK for it is the proxy's own.
    let mut synack = tcp_meta("203.0.113.7", 80, "192.0.2.5", 40000, 0x12);
    synack.direction = Direction::Egress;
    assert_eq!(both(&mut e, &synack, S_NS).reason, Reason::SynproxyReply);
    // The completing ACK creates the connection.
    let ack = tcp_meta("192.0.2.5", 40000, "203.0.113.7", 80, 0x10);
    let d = both(&mut e, &ack, 2 * S_NS);
    assert_eq!(
        (d.action, d.reason),
        (Action::Accept, Reason::SynproxyEstablished)
    );
    // An ACK without a SYN answered first (forged, or mid-stream) is dropped, as is a RST.
    let forged = tcp_meta("192.0.2.5", 40001, "203.0.113.7", 80, 0x10);
    assert_eq!(both(&mut e, &forged, 2 * S_NS).reason, Reason::SynproxyDrop);
    let rst = tcp_meta("192.0.2.5", 40002, "203.0.113.7", 80, 0x04);
    assert_eq!(both(&mut e, &rst, 2 * S_NS).reason, Reason::SynproxyDrop);
    // Cookies age out.
    assert_eq!(both(&mut e, &ack, 200 * S_NS).reason, Reason::SynproxyDrop);
    // Packets of an existing connection are not the proxy's business.
    let mut est = ack;
    est.ct_state = CtState::Established;
    est.ct_entry = true;
    assert_eq!(both(&mut e, &est, 2 * S_NS).reason, Reason::CtEstablished);
    // Other ports go to the rules as usual.
    let other = tcp_meta("192.0.2.5", 40000, "203.0.113.7", 81, 0x02);
    assert_eq!(both(&mut e, &other, 0).reason, Reason::Default);
    let ex = e.1.explain_at(&syn, 0);
    assert_eq!(ex.steps[0].step, "syn proxy");
    assert!(ex.steps[0].detail.contains("SYN cookie"));
}

#[test]
fn synproxy_acts_at_its_rule_place_in_rule_order() {
    // known-bad drop, then a limited partner accept, then the proxied web rule.
    let mut p = web_synproxy_policy();
    let mut bad = rule("known-bad", Direction::Ingress, Action::Drop);
    bad.from = vec![Peer::Net("198.51.100.66/32".parse().unwrap())];
    let mut partner = rule("partner", Direction::Ingress, Action::Accept);
    partner.from = vec![Peer::Net("192.0.2.128/25".parse().unwrap())];
    partner.services = vec![svc(proto::TCP, &[(80, 80)])];
    partner.limit = Some(rampart_ir::Limit {
        rate: 1,
        per_s: 1,
        burst: 1,
        unit: rampart_ir::RateUnit::Packets,
        per_source: false,
    });
    p.rules.insert(0, partner);
    p.rules.insert(0, bad);
    let mut e = engines(&p);
    // A blocklisted source is not proxied: its SYN is tracked and the earlier drop decides.
    let blocked = tcp_meta("198.51.100.66", 40000, "203.0.113.7", 80, 0x02);
    let d = both(&mut e, &blocked, 0);
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Drop, Some(RuleId(0)), Reason::Rule)
    );
    let ex = e.1.explain_at(&blocked, 0);
    assert_eq!(ex.steps[0].step, "syn proxy");
    assert!(
        ex.steps[0]
            .detail
            .contains("claimed first by earlier rule known-bad"),
        "{}",
        ex.steps[0].detail
    );
    // The partner's SYNs are the partner rule's; over its limit they reach the proxy rule,
    // which accepts them as an ordinary rule, unproxied.
    let partner_syn = tcp_meta("192.0.2.200", 40000, "203.0.113.7", 80, 0x02);
    let d = both(&mut e, &partner_syn, 0);
    assert_eq!((d.rule, d.reason), (Some(RuleId(1)), Reason::Rule));
    let d = both(&mut e, &partner_syn, 0);
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Accept, Some(RuleId(2)), Reason::Rule)
    );
    // Everyone else is proxied.
    let other = tcp_meta("192.0.2.5", 40000, "203.0.113.7", 80, 0x02);
    assert_eq!(both(&mut e, &other, 0).reason, Reason::SynproxyAnswered);
}

fn one_packet_a_second_per_source() -> Limit {
    Limit {
        rate: 1,
        per_s: 1,
        burst: 1,
        unit: RateUnit::Packets,
        per_source: true,
    }
}

#[test]
fn synproxy_limit_and_ban_apply_to_the_syns() {
    let mut p = web_synproxy_policy();
    p.rules[0].limit = Some(one_packet_a_second_per_source());
    let mut e = engines(&p);
    let syn = tcp_meta("192.0.2.5", 40000, "203.0.113.7", 80, 0x02);
    assert_eq!(both(&mut e, &syn, 0).reason, Reason::SynproxyAnswered);
    assert_eq!(both(&mut e, &syn, 0).reason, Reason::SynproxyDrop);
    p.rules[0].ban = Some(Ban { timeout_s: 5 });
    let mut e = engines(&p);
    both(&mut e, &syn, 0);
    assert_eq!(both(&mut e, &syn, 0).reason, Reason::Ban);
    assert_eq!(both(&mut e, &syn, S_NS).reason, Reason::Banned);
}

/// A spoofed flood that fills a rule's per-source meter (65,536 sources, the size of the nft
/// set behind it) must not lock out or ban the next new source: the kernel's `limit rate over`
/// check cannot add it to the full set and so does not refuse it. Sources already tracked are
/// still limited, and banned when over.
#[test]
fn a_full_meter_neither_refuses_nor_bans_a_new_source() {
    use rampart_engine::MAX_METER_ENTRIES;
    let mut p = web_synproxy_policy();
    p.rules[0].limit = Some(one_packet_a_second_per_source());
    p.rules[0].ban = Some(Ban { timeout_s: 60 });
    let mut ssh = ssh_ban_policy();
    ssh.rules[0].limit = Some(one_packet_a_second_per_source());
    for (policy, port, admitted) in [(p, 80, Reason::SynproxyAnswered), (ssh, 22, Reason::Rule)] {
        let mut e = engines(&policy);
        let meta = |a: u32| {
            let src = std::net::Ipv4Addr::from(0x0a00_0000 + a).to_string();
            let mut m = tcp_meta(&src, 40000, "203.0.113.7", port, 0x02);
            m.direction = policy.rules[0].direction;
            m
        };
        // Fill the meter; every bucket is spent and none refills (time stands still).
        for a in 0..MAX_METER_ENTRIES as u32 {
            assert_eq!(both(&mut e, &meta(a), 0).reason, admitted, "source {a}");
        }
        // A tracked source over the rate is still refused and banned.
        assert_eq!(both(&mut e, &meta(7), 0).reason, Reason::Ban);
        // A new source: no room to track it, so it is neither refused nor banned.
        let fresh = meta(MAX_METER_ENTRIES as u32 + 1);
        for _ in 0..3 {
            assert_eq!(both(&mut e, &fresh, 0).reason, admitted);
        }
        assert_eq!(e.0.banned(fresh.src, 0), None);
        assert_eq!(e.1.banned(fresh.src, 0), None);
    }
}

fn app_policy() -> Policy {
    let mut p = Policy::default();
    // Forward: non-DNS on udp/53 is dropped, DNS is allowed by the port rule.
    let mut a = rule("udp53-must-be-dns", Direction::Forward, Action::Drop);
    a.services = vec![svc(proto::UDP, &[(53, 53)])];
    a.app = Some(AppMatch {
        protocols: vec![AppProtocol::Dns],
        negate: true,
    });
    p.rules.push(a);
    // Ingress: SMB1 to 445 (either direction) is dropped.
    let mut b = rule("no-smb1", Direction::Ingress, Action::Drop);
    b.services = vec![svc(proto::TCP, &[(445, 445)])];
    b.app = Some(AppMatch {
        protocols: vec![AppProtocol::Smb1],
        negate: false,
    });
    p.rules.push(b);
    // Ingress: ICMP tunnels dropped.
    let mut c = rule("no-icmp-tunnel", Direction::Ingress, Action::Drop);
    c.app = Some(AppMatch {
        protocols: vec![AppProtocol::IcmpTunnel],
        negate: false,
    });
    p.rules.push(c);
    // Forward: SSH accepted from the admin net (ends inspection), dropped elsewhere.
    let mut d = rule("ssh-admin", Direction::Forward, Action::Accept);
    d.from = vec![Peer::Net(net("192.0.2.0/28"))];
    d.app = Some(AppMatch {
        protocols: vec![AppProtocol::Ssh],
        negate: false,
    });
    p.rules.push(d);
    let mut e = rule("no-ssh-anywhere", Direction::Forward, Action::Reject);
    e.app = Some(AppMatch {
        protocols: vec![AppProtocol::Ssh],
        negate: false,
    });
    p.rules.push(e);
    let mut f = rule("dns", Direction::Forward, Action::Accept);
    f.services = vec![svc(proto::UDP, &[(53, 53)])];
    p.rules.push(f);
    let mut g = rule("smb-in", Direction::Ingress, Action::Accept);
    g.services = vec![svc(proto::TCP, &[(445, 445)])];
    p.rules.push(g);
    let mut h = rule("ssh-fwd", Direction::Forward, Action::Accept);
    h.services = vec![svc(proto::TCP, &[(22, 22), (2222, 2222)])];
    p.rules.push(h);
    p
}

fn with_payload<'a>(mut m: PacketMeta<'a>, label: Option<AppProtocol>, idx: u32) -> PacketMeta<'a> {
    m.payload = AppPayload::Label(label);
    m.app_conn = Some(AppConn {
        reply: false,
        packet_index: idx,
        state: AppConnState::Inspecting,
        last_label: None,
    });
    m
}

#[test]
fn app_rules_drop_by_label_and_accept_continues_to_the_rules() {
    let mut e = engines(&app_policy());
    let udp53 = PacketMeta::new(
        Direction::Forward,
        ip("192.0.2.5"),
        ip("203.0.113.53"),
        17,
        L4Meta::Ports { src: 5353, dst: 53 },
    );
    let d = both(&mut e, &with_payload(udp53, None, 1), 0);
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Drop, Some(RuleId(0)), Reason::AppRule)
    );
    assert_eq!(d.app.unwrap().label, None);
    let d = both(&mut e, &with_payload(udp53, Some(AppProtocol::Dns), 1), 0);
    assert_eq!((d.reason, d.rule), (Reason::Rule, Some(RuleId(5))));
    // Beyond the inspection window nothing is inspected.
    let d = both(
        &mut e,
        &with_payload(udp53, None, APP_INSPECT_MAX_PACKETS + 1),
        0,
    );
    assert_eq!(d.reason, Reason::Rule);
    // No connection view (invalid/untracked): not inspected.
    let mut bare = udp53;
    bare.payload = AppPayload::Label(None);
    assert_eq!(both(&mut e, &bare, 0).reason, Reason::Rule);

    // SSH from the admin net: accepted by the app rule, then decided by the port rule.
    let ssh = |src: &str| {
        let m = PacketMeta::new(
            Direction::Forward,
            ip(src),
            ip("203.0.113.7"),
            6,
            L4Meta::Ports {
                src: 40000,
                dst: 2222,
            },
        );
        with_payload(m, Some(AppProtocol::Ssh), 4)
    };
    let d = both(&mut e, &ssh("192.0.2.5"), 0);
    assert_eq!((d.action, d.rule), (Action::Accept, Some(RuleId(7))));
    assert_eq!(d.app.unwrap().rule, RuleId(3));
    let d = both(&mut e, &ssh("192.0.2.200"), 0);
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Reject, Some(RuleId(4)), Reason::AppRule)
    );
    // A blocked connection's later packets drop, even established ones past the window.
    let mut later = ssh("192.0.2.200");
    later.ct_state = CtState::Established;
    later.app_conn = Some(AppConn {
        reply: true,
        packet_index: 50,
        state: AppConnState::Blocked(RuleId(4)),
        last_label: None,
    });
    let d = both(&mut e, &later, 0);
    assert_eq!((d.action, d.reason), (Action::Drop, Reason::AppBlocked));
    // An accepted connection is not inspected again.
    let mut acc = ssh("192.0.2.200");
    acc.app_conn = Some(AppConn {
        reply: false,
        packet_index: 5,
        state: AppConnState::Accepted(RuleId(3)),
        last_label: None,
    });
    assert_eq!(both(&mut e, &acc, 0).reason, Reason::Rule);
}

#[test]
fn reply_packets_are_matched_in_the_original_direction() {
    let mut e = engines(&app_policy());
    // The server (this host, 203.0.113.7:445) answers an SMB1 NEGOTIATE response: an egress
    // packet, judged by the ingress app rule against the client→server tuple.
    let mut reply = PacketMeta::new(
        Direction::Egress,
        ip("203.0.113.7"),
        ip("192.0.2.5"),
        6,
        L4Meta::Ports {
            src: 445,
            dst: 40000,
        },
    );
    reply.ct_state = CtState::Established;
    reply.ct_entry = true;
    reply.payload = AppPayload::Label(Some(AppProtocol::Smb1));
    reply.app_conn = Some(AppConn {
        reply: true,
        packet_index: 5,
        state: AppConnState::Inspecting,
        last_label: None,
    });
    let d = both(&mut e, &reply, 0);
    assert_eq!(
        (d.action, d.rule, d.reason),
        (Action::Drop, Some(RuleId(1)), Reason::AppRule)
    );
    // SMB2 passes on to the stateful prelude.
    reply.payload = AppPayload::Label(Some(AppProtocol::Smb2));
    assert_eq!(both(&mut e, &reply, 0).reason, Reason::CtEstablished);
}

#[test]
fn icmp_echo_requests_are_always_inspected() {
    let mut e = engines(&app_policy());
    let big = vec![0x41u8; 600];
    let small = vec![0x10u8; 56];
    let mut m = PacketMeta::new(
        Direction::Ingress,
        ip("192.0.2.5"),
        ip("203.0.113.7"),
        1,
        L4Meta::Icmp {
            icmp_type: 8,
            code: 0,
        },
    );
    m.app_conn = Some(AppConn {
        reply: false,
        packet_index: 100,
        state: AppConnState::Inspecting,
        last_label: None,
    });
    m.payload = AppPayload::Bytes {
        l4: rampart_engine::app::L4::Icmp { icmp_type: 8 },
        data: &big,
    };
    let d = both(&mut e, &m, 0);
    assert_eq!((d.reason, d.rule), (Reason::AppRule, Some(RuleId(2))));
    assert_eq!(d.app.unwrap().label, Some(AppProtocol::IcmpTunnel));
    m.payload = AppPayload::Bytes {
        l4: rampart_engine::app::L4::Icmp { icmp_type: 8 },
        data: &small,
    };
    assert_eq!(both(&mut e, &m, 0).reason, Reason::Default);
}

// ---- End to end through the simulator ----

fn eth_ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
    f.extend_from_slice(&total.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
    f.extend_from_slice(&src);
    f.extend_from_slice(&dst);
    f.extend_from_slice(payload);
    f
}

fn tcp(sp: u16, dp: u16, flags: u8, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&sp.to_be_bytes());
    b.extend_from_slice(&dp.to_be_bytes());
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    b.extend_from_slice(payload);
    b
}

fn replay(p: &Policy, frames: &[Vec<u8>], matcher: MatcherKind) -> (Report, VecSink) {
    let mut bytes = Vec::new();
    write_pcap_header(&mut bytes, 1).unwrap();
    for (i, f) in frames.iter().enumerate() {
        write_pcap_record(
            &mut bytes,
            1_764_273_600_000_000_000 + i as u64 * 1_000_000,
            f,
        )
        .unwrap();
    }
    let mut r = CaptureReader::new(&bytes[..]).unwrap();
    let cfg = SimConfig {
        local: vec![net("203.0.113.0/24")],
        matcher,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(Engine::new(p), cfg);
    let mut sink = VecSink::default();
    while let Some(rec) = r.next_record().unwrap() {
        sim.process(&rec, &mut sink).unwrap();
    }
    (sim.finish(), sink)
}

const C: [u8; 4] = [192, 0, 2, 5];
const SRV: [u8; 4] = [203, 0, 113, 7];

#[test]
fn replay_synproxied_handshake_and_spoofed_flood() {
    let (syn, synack, ack, psh) = (0x02, 0x12, 0x10, 0x18);
    let mut frames = vec![
        eth_ipv4(C, SRV, 6, &tcp(40000, 80, syn, &[])),
        eth_ipv4(SRV, C, 6, &tcp(80, 40000, synack, &[])),
        eth_ipv4(C, SRV, 6, &tcp(40000, 80, ack, &[])),
        eth_ipv4(C, SRV, 6, &tcp(40000, 80, psh, b"GET / HTTP/1.1\r\n\r\n")),
        eth_ipv4(SRV, C, 6, &tcp(80, 40000, psh, b"HTTP/1.1 200 OK\r\n\r\n")),
        // Mid-stream ACK of a connection nobody proxied.
        eth_ipv4(C, SRV, 6, &tcp(40001, 80, psh, b"x")),
    ];
    // A spoofed-source SYN flood: answered, nothing tracked.
    for i in 0..200u8 {
        frames.push(eth_ipv4(
            [198, 51, 100, i],
            SRV,
            6,
            &tcp(1000 + u16::from(i), 80, syn, &[]),
        ));
    }
    let p = web_synproxy_policy();
    for matcher in [MatcherKind::Fast, MatcherKind::Reference] {
        let (r, _) = replay(&p, &frames, matcher);
        let reason = |k: &str| r.by_reason.get(k).copied().unwrap_or(0);
        assert_eq!(reason("SYN answered by the SYN proxy"), 201, "{r:#?}");
        assert_eq!(reason("SYN-ACK sent by the SYN proxy"), 1);
        assert_eq!(reason("SYN proxy handshake completed"), 1);
        assert_eq!(reason("conntrack state established"), 2);
        assert_eq!(reason("no connection to a SYN-proxied port"), 1);
        assert_eq!(
            r.conntrack.inserted, 1,
            "only the completed handshake is tracked"
        );
        assert_eq!(r.blocked, 1);
    }
}

#[test]
fn replay_bans_a_flooding_source_and_emits_a_ban_event() {
    let mut frames = Vec::new();
    for i in 0..10u16 {
        frames.push(eth_ipv4(C, SRV, 6, &tcp(30000 + i, 22, 0x02, &[])));
    }
    frames.push(eth_ipv4([192, 0, 2, 6], SRV, 6, &tcp(30000, 22, 0x02, &[])));
    let (r, sink) = replay(&ssh_ban_policy(), &frames, MatcherKind::Fast);
    assert_eq!(r.bans, 1);
    assert_eq!(r.by_reason.get("limit exceeded: source banned"), Some(&1));
    assert_eq!(r.by_reason.get("source banned"), Some(&7));
    assert_eq!(r.allowed, 3);
    let bans: Vec<_> = sink
        .events
        .iter()
        .filter(|e| e.event_type == "ban")
        .collect();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].detail["src_ip"], "192.0.2.5");
}

#[test]
fn replay_blocks_non_tls_on_443_for_the_rest_of_the_connection() {
    let mut p = Policy::default();
    let mut a = rule("443-must-be-tls", Direction::Ingress, Action::Drop);
    a.services = vec![svc(proto::TCP, &[(443, 443)])];
    a.app = Some(AppMatch {
        protocols: vec![AppProtocol::Tls],
        negate: true,
    });
    p.rules.push(a);
    let mut b = rule("https", Direction::Ingress, Action::Accept);
    b.services = vec![svc(proto::TCP, &[(443, 443)])];
    p.rules.push(b);
    let (syn, synack, ack, psh) = (0x02, 0x12, 0x10, 0x18);
    let flow = |sp: u16, first: &[u8]| {
        vec![
            eth_ipv4(C, SRV, 6, &tcp(sp, 443, syn, &[])),
            eth_ipv4(SRV, C, 6, &tcp(443, sp, synack, &[])),
            eth_ipv4(C, SRV, 6, &tcp(sp, 443, ack, &[])),
            eth_ipv4(C, SRV, 6, &tcp(sp, 443, psh, first)),
            eth_ipv4(C, SRV, 6, &tcp(sp, 443, ack, &[])),
        ]
    };
    let tls = [22u8, 3, 1, 0, 4, 1, 0, 0, 0];
    let mut frames = flow(40000, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    frames.extend(flow(40001, &tls));
    for matcher in [MatcherKind::Fast, MatcherKind::Reference] {
        let (r, _) = replay(&p, &frames, matcher);
        assert_eq!(
            r.by_reason.get("application-protocol rule"),
            Some(&1),
            "{r:#?}"
        );
        assert_eq!(
            r.by_reason
                .get("connection blocked by an application-protocol rule"),
            Some(&1)
        );
        assert_eq!(r.blocked, 2);
        assert_eq!(r.allowed, 8);
    }
}

#[test]
fn continuation_segments_keep_the_protocol_last_recognised_in_their_direction() {
    // `app_not = ["tls"]` on 443: a TLS server's certificate chain spans several segments, and
    // those after the first start mid-record (unrecognisable alone). They inherit `tls` from the
    // server's earlier record and pass; a connection whose first payload is not TLS is blocked.
    let mut p = Policy::default();
    let mut a = rule("443-must-be-tls", Direction::Ingress, Action::Drop);
    a.services = vec![svc(proto::TCP, &[(443, 443)])];
    a.app = Some(AppMatch {
        protocols: vec![AppProtocol::Tls],
        negate: true,
    });
    p.rules.push(a);
    let mut b = rule("https", Direction::Ingress, Action::Accept);
    b.services = vec![svc(proto::TCP, &[(443, 443)])];
    p.rules.push(b);
    let (syn, synack, ack, psh) = (0x02, 0x12, 0x10, 0x18);
    let hello = [22u8, 3, 1, 0, 4, 1, 0, 0, 0];
    let server_hello = [22u8, 3, 3, 0x10, 0, 2, 0, 0, 0];
    let continuation = [0x30u8, 0x82, 0x04, 0x11, 0xa0, 0x03, 0x02, 0x01];
    let frames = vec![
        eth_ipv4(C, SRV, 6, &tcp(40010, 443, syn, &[])),
        eth_ipv4(SRV, C, 6, &tcp(443, 40010, synack, &[])),
        eth_ipv4(C, SRV, 6, &tcp(40010, 443, ack, &[])),
        eth_ipv4(C, SRV, 6, &tcp(40010, 443, psh, &hello)),
        eth_ipv4(SRV, C, 6, &tcp(443, 40010, psh, &server_hello)),
        eth_ipv4(SRV, C, 6, &tcp(443, 40010, psh, &continuation)),
        eth_ipv4(SRV, C, 6, &tcp(443, 40010, psh, &continuation)),
        eth_ipv4(C, SRV, 6, &tcp(40010, 443, ack, &[])),
    ];
    for matcher in [MatcherKind::Fast, MatcherKind::Reference] {
        let (r, _) = replay(&p, &frames, matcher);
        assert_eq!(r.blocked, 0, "{r:#?}");
        assert_eq!(r.allowed, 8);
    }
    // Without the server's recognised record first, the same bytes are not TLS: blocked.
    let mut bad = frames.clone();
    bad.remove(4);
    for matcher in [MatcherKind::Fast, MatcherKind::Reference] {
        let (r, _) = replay(&p, &bad, matcher);
        assert!(r.blocked >= 1, "{r:#?}");
    }
}

/// The verdict of each flow from `C`'s source port, in the order the flows began.
fn flow_verdicts(sink: &VecSink) -> Vec<(u16, bool)> {
    sink.events
        .iter()
        .filter(|e| e.event_type == "flow")
        .filter_map(|e| {
            let f = e.flow.as_ref()?;
            let allowed = e.verdict == rampart_events::Verdict::Allow;
            (f.src_ip == IpAddr::from(C)).then_some((f.src_port?, allowed))
        })
        .collect()
}

#[test]
fn replay_counts_connections_per_conn_limit_rule_as_the_kernel_does() {
    // The kernel's `add @connlimit_N { ip saddr ct count over C }` counts, per rule, the
    // connections whose packets reached that statement, and stops counting one once it is
    // closed (TIME_WAIT): connections to 7200 do not count against 7100's cap, and a closed
    // one frees its place (checked against the kernel by nft-apply's conn_limit test).
    let mut p = Policy::default();
    let mut other = rule("other", Direction::Ingress, Action::Accept);
    other.services = vec![svc(proto::TCP, &[(7200, 7200)])];
    let mut cap = rule("cap", Direction::Ingress, Action::Accept);
    cap.services = vec![svc(proto::TCP, &[(7100, 7100)])];
    cap.conn_limit = Some(2);
    p.rules = vec![other, cap];
    let (syn, synack, ack, fin) = (0x02, 0x12, 0x10, 0x11);
    let open = |sp: u16, dp: u16| {
        vec![
            eth_ipv4(C, SRV, 6, &tcp(sp, dp, syn, &[])),
            eth_ipv4(SRV, C, 6, &tcp(dp, sp, synack, &[])),
            eth_ipv4(C, SRV, 6, &tcp(sp, dp, ack, &[])),
        ]
    };
    let mut frames = Vec::new();
    frames.extend(open(40000, 7200));
    frames.extend(open(40001, 7200));
    frames.extend(open(41000, 7100)); // 0 counted before it: accepted
    frames.extend(open(41001, 7100)); // 1: accepted
    frames.push(eth_ipv4(C, SRV, 6, &tcp(41002, 7100, syn, &[]))); // 2: refused
                                                                   // 41000 closes: client FIN, server FIN, client ACK → TIME_WAIT.
    frames.push(eth_ipv4(C, SRV, 6, &tcp(41000, 7100, fin, &[])));
    frames.push(eth_ipv4(SRV, C, 6, &tcp(7100, 41000, fin, &[])));
    frames.push(eth_ipv4(C, SRV, 6, &tcp(41000, 7100, ack, &[])));
    frames.extend(open(41003, 7100)); // 41001 alone is counted: accepted
    frames.push(eth_ipv4(C, SRV, 6, &tcp(41004, 7100, syn, &[]))); // 41001, 41003: refused
    for matcher in [MatcherKind::Fast, MatcherKind::Reference] {
        let (r, sink) = replay(&p, &frames, matcher);
        assert_eq!(
            flow_verdicts(&sink),
            vec![
                (40000, true),
                (40001, true),
                (41000, true),
                (41001, true),
                (41002, false),
                (41003, true),
                (41004, false),
            ],
            "{matcher:?}: {r:#?}"
        );
    }
}
