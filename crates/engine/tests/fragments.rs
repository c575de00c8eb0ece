//! Fragments through `Simulator`, on captures built here: with conntrack in use (the policy is
//! stateful) the kernel reassembles before any rule looks, so reordered fragments, a tiny first
//! fragment (RFC 1858) and IPv6 fragments are judged as the whole datagram, and overlapping,
//! incomplete or timed-out datagrams never pass; without conntrack every fragment is judged
//! alone and only the first carries ports.

mod support;

use rampart_engine::pcap::{write_pcap_header, write_pcap_record, CaptureReader};
use rampart_engine::simulate::{Report, SimConfig, Simulator};
use rampart_engine::Engine;
use rampart_events::VecSink;
use rampart_ir::*;
use support::*;

const T0: u64 = 1_764_273_600_000_000_000;

fn policy(stateful: bool) -> Policy {
    let mut p = Policy::default();
    p.defaults.stateful = stateful;
    let mut dns = rule("allow-dns", Direction::Forward, Action::Accept);
    dns.services = vec![svc(proto::UDP, &[(53, 53)])];
    let mut ssh = rule("allow-ssh", Direction::Forward, Action::Accept);
    ssh.services = vec![svc(proto::TCP, &[(22, 22)])];
    p.rules = vec![dns, ssh];
    p
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// An IPv4 fragment of `data` (the datagram's payload): `len` bytes at `offset`.
fn v4(proto: u8, id: u16, data: &[u8], offset: usize, len: usize, more: bool) -> Vec<u8> {
    let piece = &data[offset..offset + len];
    let mut b = vec![0x45, 0];
    b.extend_from_slice(&((20 + len) as u16).to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
    b.extend_from_slice(&field.to_be_bytes());
    b.extend_from_slice(&[64, proto, 0, 0, 192, 0, 2, 5, 198, 51, 100, 7]);
    b.extend_from_slice(piece);
    eth(0x0800, &b)
}

fn v6(proto: u8, id: u32, data: &[u8], offset: usize, len: usize, more: bool) -> Vec<u8> {
    let piece = &data[offset..offset + len];
    let mut b = vec![0x60, 0, 0, 0];
    b.extend_from_slice(&((8 + len) as u16).to_be_bytes());
    b.extend_from_slice(&[44, 64]);
    b.extend_from_slice(
        &"2001:db8:1::5"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    b.extend_from_slice(
        &"2001:db8:2::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    b.extend_from_slice(&[proto, 0]);
    b.extend_from_slice(&((offset as u16) | u16::from(more)).to_be_bytes());
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(piece);
    eth(0x86dd, &b)
}

fn udp(dport: u16, len: usize) -> Vec<u8> {
    let mut d = vec![0x30, 0x39];
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&(len as u16).to_be_bytes());
    d.extend_from_slice(&[0, 0]);
    d.extend((8..len).map(|i| i as u8));
    d
}

fn tcp_syn(dport: u16) -> Vec<u8> {
    let mut d = vec![0xc3, 0x50];
    d.extend_from_slice(&dport.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    d.extend_from_slice(&[0; 8]);
    d
}

/// Replay `frames` (with their times, ns after T0) under `p`.
fn replay(p: &Policy, reassemble: Option<bool>, frames: &[(u64, Vec<u8>)]) -> Report {
    let mut pcap = Vec::new();
    write_pcap_header(&mut pcap, 1).unwrap();
    for (t, f) in frames {
        write_pcap_record(&mut pcap, T0 + t, f).unwrap();
    }
    let cfg = SimConfig {
        iif: Some("lan0".into()),
        oif: Some("dmz0".into()),
        reassemble,
        ..SimConfig::default()
    };
    let mut sim = Simulator::new(Engine::new(p), cfg);
    let mut sink = VecSink::default();
    let mut r = CaptureReader::new(&pcap[..]).unwrap();
    while let Some(rec) = r.next_record().unwrap() {
        sim.process(&rec, &mut sink).unwrap();
    }
    sim.end_of_capture(&mut sink).unwrap();
    sim.finish()
}

fn at(frames: Vec<Vec<u8>>) -> Vec<(u64, Vec<u8>)> {
    frames
        .into_iter()
        .enumerate()
        .map(|(i, f)| (i as u64 * 1_000_000, f))
        .collect()
}

#[test]
fn reordered_fragments_are_judged_as_their_whole_datagram() {
    let d = udp(53, 48);
    let frames = at(vec![
        v4(17, 1, &d, 32, 16, false),
        v4(17, 1, &d, 16, 16, true),
        v4(17, 1, &d, 0, 16, true),
    ]);
    let r = replay(&policy(true), None, &frames);
    assert_eq!((r.allowed, r.blocked, r.reassembled), (3, 0, 1));
    assert_eq!(r.rules[&0].packets, 3);
    assert_eq!(r.flows, 1, "one flow: the datagram's 5-tuple");
    assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
    // Without conntrack each fragment stands alone: the first matches the port rule, the
    // others carry no ports and fall to the default drop.
    let r = replay(&policy(false), None, &frames);
    assert_eq!((r.allowed, r.blocked, r.reassembled), (1, 2, 0));
    assert_eq!(r.rules[&0].packets, 1);
    assert_eq!(
        r.anomalies.get("orphan_fragment"),
        Some(&2),
        "both came before the first"
    );
    // A host whose other tables load conntrack reassembles under any policy.
    let r = replay(&policy(false), Some(true), &frames);
    assert_eq!((r.allowed, r.blocked, r.reassembled), (3, 0, 1));
}

#[test]
fn a_tiny_first_fragment_hides_nothing_from_reassembly() {
    // RFC 1858: the first fragment holds 8 bytes of the TCP header (ports, no flags).
    let d = tcp_syn(22);
    let frames = at(vec![v4(6, 2, &d, 0, 8, true), v4(6, 2, &d, 8, 20, false)]);
    let r = replay(&policy(true), None, &frames);
    assert_eq!((r.allowed, r.blocked), (2, 0));
    assert_eq!(r.rules[&1].packets, 2);
    assert!(r.anomalies.is_empty(), "{:?}", r.anomalies);
    // Alone, the first fragment still shows its ports (nft loads only the bytes it compares),
    // so it matches the SSH rule; the second has none and falls to the default.
    let r = replay(&policy(false), None, &frames);
    assert_eq!((r.allowed, r.blocked), (1, 1));
    assert_eq!(r.rules[&1].packets, 1);
    // IPv6 (RFC 8200 4.5): a first fragment without the whole TCP header is not reassembled;
    // conntrack finds it invalid and the rest never completes (what the kernel test shows).
    let frames = at(vec![v6(6, 2, &d, 0, 8, true), v6(6, 2, &d, 8, 20, false)]);
    let r = replay(&policy(true), None, &frames);
    assert_eq!((r.allowed, r.blocked), (0, 2));
    assert_eq!(r.anomalies.get("fragment_truncated_first"), Some(&1));
    assert_eq!(r.by_reason["conntrack state invalid"], 1);
}

#[test]
fn overlapping_incomplete_and_late_datagrams_never_pass() {
    let d = udp(53, 48);
    // A second fragment at offset 0 that rewrites the destination port (the classic
    // overlap evasion): it overlaps the first, so the datagram is dropped.
    let overlapped = v4(17, 3, &udp(22, 48), 0, 24, true);
    let frames = at(vec![
        v4(17, 3, &d, 0, 16, true),
        overlapped,
        v4(17, 3, &d, 32, 16, false),
        // Incomplete: its middle never comes.
        v4(17, 4, &d, 0, 16, true),
        v4(17, 4, &d, 32, 16, false),
    ]);
    let r = replay(&policy(true), None, &frames);
    assert_eq!((r.allowed, r.blocked, r.reassembled), (0, 5, 0));
    assert_eq!(r.anomalies.get("fragment_overlap"), Some(&1));
    // Datagram 4, and the last fragment of datagram 3, which arrived after the overlap had
    // dropped its datagram and so started a new one.
    assert_eq!(r.anomalies.get("fragment_incomplete"), Some(&2));
    assert_eq!(r.by_reason["fragment dropped by IP reassembly"], 2);
    assert_eq!(
        r.by_reason["fragment of a datagram that never completed"],
        3
    );
    assert_eq!(r.fragments_dropped, 5);
    // A datagram whose rest arrives 31 s after its first fragment: the first times out, and
    // the rest starts a datagram that cannot complete.
    let late = vec![
        (0, v4(17, 5, &d, 0, 16, true)),
        (31_000_000_000, v4(17, 5, &d, 16, 16, true)),
        (31_000_000_001, v4(17, 5, &d, 32, 16, false)),
    ];
    let r = replay(&policy(true), None, &late);
    assert_eq!((r.allowed, r.blocked), (0, 3));
    assert_eq!(r.anomalies.get("fragment_timeout"), Some(&1));
    assert_eq!(r.anomalies.get("fragment_incomplete"), Some(&1));
    // Within 30 s it completes.
    let r = replay(
        &policy(true),
        None,
        &[
            (0, late[0].1.clone()),
            (29_000_000_000, late[1].1.clone()),
            (29_000_000_001, late[2].1.clone()),
        ],
    );
    assert_eq!((r.allowed, r.blocked), (3, 0));
}

#[test]
fn ipv6_fragments_are_reassembled_too() {
    let d = udp(53, 64);
    let frames = at(vec![
        v6(17, 7, &d, 32, 32, false),
        v6(17, 7, &d, 0, 32, true),
        // A duplicate after completion starts a new datagram that never completes.
        v6(17, 8, &d, 0, 32, true),
        v6(17, 8, &d, 0, 32, true),
        v6(17, 8, &d, 32, 32, false),
    ]);
    let r = replay(&policy(true), None, &frames);
    assert_eq!(r.reassembled, 2);
    assert_eq!((r.allowed, r.blocked), (4, 1));
    assert_eq!(r.anomalies.get("fragment_duplicate"), Some(&1));
    assert_eq!(r.rules[&0].packets, 4);
}
