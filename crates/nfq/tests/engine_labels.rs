//! The classifier with the engine's real labeller on real protocol bytes (no kernel): the
//! verdicts the namespace test sees, decided in-process, plus IPv6 and a DNS tunnel that
//! switches protocol mid-flow.

use rampart_ir::{Action, AppMatch, AppProtocol, Direction, L4Match, Policy, PortRange, Rule};
use rampart_nfq::core::tuple_of;
use rampart_nfq::{
    Classifier, EngineLabeller, Hook, Limits, Orientation, Outcome, PacketIn, Verdict,
};

fn rule(name: &str, proto: u8, port: Option<u16>, app: &[AppProtocol], negate: bool) -> Rule {
    Rule {
        services: vec![L4Match {
            protocol: Some(proto),
            src_ports: vec![],
            dst_ports: port.map(PortRange::single).into_iter().collect(),
            icmp_types: vec![],
            service: None,
        }],
        app: Some(AppMatch {
            protocols: app.to_vec(),
            negate,
        }),
        ..Rule::new(name, Direction::Forward, Action::Drop)
    }
}

fn policy() -> Policy {
    Policy {
        rules: vec![
            rule("no-ssh-8080", 6, Some(8080), &[AppProtocol::Ssh], false),
            rule("tls-443", 6, Some(443), &[AppProtocol::Tls], true),
            rule("dns-53", 17, Some(53), &[AppProtocol::Dns], true),
            rule("no-smb1", 6, Some(445), &[AppProtocol::Smb1], false),
            rule("no-tunnel", 1, None, &[AppProtocol::IcmpTunnel], false),
            rule("no-tunnel6", 58, None, &[AppProtocol::IcmpTunnel], false),
        ],
        ..Policy::default()
    }
}

fn v4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ];
    p.extend_from_slice(&src);
    p.extend_from_slice(&dst);
    p.extend_from_slice(l4);
    p
}

fn v6(src: [u16; 8], dst: [u16; 8], next: u8, l4: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
    p.extend_from_slice(&[next, 64]);
    for w in src.iter().chain(dst.iter()) {
        p.extend_from_slice(&w.to_be_bytes());
    }
    p.extend_from_slice(l4);
    p
}

fn tcp(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = sp.to_be_bytes().to_vec();
    l4.extend_from_slice(&dp.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    l4.extend_from_slice(payload);
    l4
}

fn udp(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut l4 = sp.to_be_bytes().to_vec();
    l4.extend_from_slice(&dp.to_be_bytes());
    l4.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    l4
}

fn echo(v6: bool, id: u16, len: usize) -> Vec<u8> {
    let mut l4 = vec![if v6 { 128 } else { 8 }, 0, 0, 0];
    l4.extend_from_slice(&id.to_be_bytes());
    l4.extend_from_slice(&[0, 1]);
    l4.resize(8 + len, 0x42);
    l4
}

const C: [u8; 4] = [192, 0, 2, 10];
const S: [u8; 4] = [203, 0, 113, 20];
const C6: [u16; 8] = [0x2001, 0xdb8, 0, 0, 0, 0, 0, 10];
const S6: [u16; 8] = [0x2001, 0xdb8, 1, 0, 0, 0, 0, 20];

fn dns_query() -> Vec<u8> {
    let mut q = vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    q.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    q
}

fn classifier() -> Classifier<EngineLabeller> {
    Classifier::new(&policy(), EngineLabeller, Limits::default()).unwrap()
}

fn forward(c: &mut Classifier<EngineLabeller>, data: &[u8], reply: bool) -> (Verdict, Outcome) {
    let orientation = if reply {
        Orientation::Reply {
            orig: tuple_of(data).unwrap().reversed(),
        }
    } else {
        Orientation::Original
    };
    let d = c.classify(
        &PacketIn {
            hook: Hook::Forward,
            iif: Some("lan0"),
            oif: Some("wan0"),
            orientation,
            data,
        },
        0,
    );
    (d.verdict, d.outcome)
}

#[test]
fn real_payloads_get_the_verdicts_the_policy_promises() {
    let mut c = classifier();
    let drop = |o| (Verdict::Drop, o);
    let pass = (Verdict::Accept, Outcome::Inspected);
    // SSH banner from the server on 8080 (reply direction) vs HTTP.
    let banner = v4(S, C, 6, &tcp(8080, 40000, b"SSH-2.0-OpenSSH_9.2p1\r\n"));
    assert_eq!(forward(&mut c, &banner, true), drop(Outcome::Blocked));
    let get = v4(
        C,
        S,
        6,
        &tcp(40001, 8080, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
    );
    assert_eq!(forward(&mut c, &get, false), pass);
    // TLS vs HTTP on 443.
    let hello = v4(
        C,
        S,
        6,
        &tcp(40002, 443, &[0x16, 3, 1, 0, 5, 1, 0, 0, 1, 3]),
    );
    assert_eq!(forward(&mut c, &hello, false), pass);
    let http443 = v4(C, S, 6, &tcp(40003, 443, b"GET / HTTP/1.1\r\n\r\n"));
    assert_eq!(forward(&mut c, &http443, false), drop(Outcome::Blocked));
    // DNS query vs a tunnel on udp/53; the same flow switching to junk is caught too.
    let q = v4(C, S, 17, &udp(5300, 53, &dns_query()));
    assert_eq!(forward(&mut c, &q, false), pass);
    let junk = v4(C, S, 17, &udp(5300, 53, &[0u8; 2]));
    assert_eq!(
        forward(&mut c, &junk, false),
        (Verdict::Accept, Outcome::Inspected),
        "continuation keeps the DNS label"
    );
    let tunnel = v4(C, S, 17, &udp(5301, 53, b"\x00\x00tunnelled bytes"));
    assert_eq!(forward(&mut c, &tunnel, false), drop(Outcome::Blocked));
    // SMB2 NEGOTIATE (and an SMB1 NEGOTIATE request, multi-dialect) pass; SMB1 commands don't.
    let mut smb2 = vec![0, 0, 0, 100, 0xfe, b'S', b'M', b'B', 64, 0];
    smb2.resize(104, 0);
    assert_eq!(
        forward(&mut c, &v4(C, S, 6, &tcp(40004, 445, &smb2)), false),
        pass
    );
    let mut smb1neg = vec![0, 0, 0, 35, 0xff, b'S', b'M', b'B', 0x72, 0, 0, 0, 0, 0x18];
    smb1neg.resize(39, 0);
    assert_eq!(
        forward(&mut c, &v4(C, S, 6, &tcp(40005, 445, &smb1neg)), false),
        pass
    );
    let mut smb1 = smb1neg.clone();
    smb1[8] = 0x73;
    assert_eq!(
        forward(&mut c, &v4(C, S, 6, &tcp(40006, 445, &smb1)), false),
        drop(Outcome::Blocked)
    );
    // ICMP and ICMPv6 echo.
    assert_eq!(
        forward(&mut c, &v4(C, S, 1, &echo(false, 1, 56)), false),
        pass
    );
    assert_eq!(
        forward(&mut c, &v4(C, S, 1, &echo(false, 2, 600)), false),
        drop(Outcome::Blocked)
    );
    assert_eq!(
        forward(&mut c, &v6(C6, S6, 58, &echo(true, 3, 56)), false),
        pass
    );
    assert_eq!(
        forward(&mut c, &v6(C6, S6, 58, &echo(true, 4, 1200)), false),
        drop(Outcome::Blocked)
    );
    // IPv6 TCP: SSH on 8080 from the client side (client speaks first too).
    let ssh6 = v6(
        C6,
        S6,
        6,
        &tcp(40007, 8080, b"SSH-2.0-PuTTY_Release_0.78\r\n"),
    );
    assert_eq!(forward(&mut c, &ssh6, false), drop(Outcome::Blocked));
    assert_eq!(c.counters().dropped, 7);
}
