//! Fuzz-style tests on stable: decoders, sniffers, the capture reader and the ClassBench
//! parsers never panic, on arbitrary bytes and on mutations of the committed corpus.

use proptest::prelude::*;
use rampart_engine::classbench::SplitMix64;
use rampart_engine::decode::{self, LinkType, Transport, L3};
use rampart_engine::{pcap, sniff};

const LINKS: [LinkType; 8] = [
    LinkType::Ethernet,
    LinkType::Raw,
    LinkType::Ipv4,
    LinkType::Ipv6,
    LinkType::Sll,
    LinkType::Sll2,
    LinkType::Null,
    LinkType::Loop,
];

/// Everything downstream of a decode that simulate would run.
fn exercise(bytes: &[u8]) {
    for link in LINKS {
        if let Ok(p) = decode::decode(link, bytes) {
            if let L3::Ip(ip) = p.l3 {
                let mut ct = rampart_engine::conntrack::Conntrack::new(16);
                let t = ct.track(&ip, 0);
                ct.confirm(&t, true);
                match ip.l4 {
                    Transport::Tcp(t) => {
                        let _ = sniff::sniff(t.payload, false, t.src, t.dst);
                    }
                    Transport::Udp(u) => {
                        let _ = sniff::sniff(u.payload, true, u.src, u.dst);
                    }
                    _ => {}
                }
            }
        }
    }
    for (sp, dp, udp) in [
        (53, 53, true),
        (68, 67, true),
        (1, 443, false),
        (1, 53, false),
    ] {
        let _ = sniff::sniff(bytes, udp, sp, dp);
    }
    if let Ok(mut r) = pcap::CaptureReader::new(bytes) {
        for _ in 0..64 {
            match r.next_record() {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(e) if e.is_recoverable() => {}
                Err(_) => break,
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(bytes) {
        let _ = rampart_engine::classbench::parse_rules(text);
        let _ = rampart_engine::classbench::parse_trace(text);
        let _ = rampart_engine::explain::parse_flow(text);
    }
}

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            out.push((path.display().to_string(), std::fs::read(&path).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn corpus_decodes_as_named_and_prefixes_never_panic() {
    let corpus = corpus();
    assert!(corpus.len() >= 8, "fuzz corpus missing");
    for (name, bytes) in &corpus {
        for n in 0..=bytes.len() {
            exercise(&bytes[..n]);
        }
        if name.contains("eth-ipv4-tcp-syn") || name.contains("eth-qinq") {
            let p = decode::decode(LinkType::Ethernet, bytes).unwrap();
            assert!(
                matches!(p.l3, L3::Ip(ip) if matches!(ip.l4, Transport::Tcp(_))),
                "{name}"
            );
        }
        if name.contains("bad-ihl") || name.contains("many-ext") {
            assert!(decode::decode(LinkType::Ethernet, bytes).is_err(), "{name}");
        }
    }
}

#[test]
fn corpus_mutations_never_panic() {
    let corpus = corpus();
    let mut rng = SplitMix64::new(1);
    for _ in 0..20_000 {
        let (_, base) = &corpus[rng.range(0, corpus.len() as u64 - 1) as usize];
        let mut b = base.clone();
        for _ in 0..rng.range(1, 4) {
            if b.is_empty() {
                break;
            }
            let i = rng.range(0, b.len() as u64 - 1) as usize;
            match rng.range(0, 2) {
                0 => b[i] = rng.next_u64() as u8,
                1 => b[i] ^= 1 << rng.range(0, 7),
                _ => b.truncate(i),
            }
        }
        exercise(&b);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        exercise(&bytes);
    }

    #[test]
    fn arbitrary_ip_packets_never_panic(
        v6 in any::<bool>(),
        proto in prop_oneof![Just(6u8), Just(17), Just(1), Just(58), Just(0), Just(44), Just(60)],
        tail in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        // A valid-looking IP header in front of random bytes reaches the deeper decoders.
        let mut b = if v6 {
            let mut h = vec![0x60, 0, 0, 0, 0, tail.len() as u8, proto, 64];
            h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
            h.extend_from_slice(&[0; 28]);
            h
        } else {
            let total = (20 + tail.len()) as u16;
            let mut h = vec![0x45, 0];
            h.extend_from_slice(&total.to_be_bytes());
            h.extend_from_slice(&[0, 0, 0, 0, 64, proto, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
            h
        };
        b.extend_from_slice(&tail);
        exercise(&b);
    }
}
