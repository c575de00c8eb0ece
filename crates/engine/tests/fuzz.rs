//! Fuzz-style tests on stable: decoders, sniffers, the capture reader and the ClassBench
//! parsers never panic, on arbitrary bytes and on mutations of the committed corpus.

use proptest::prelude::*;
use rampart_engine::classbench::SplitMix64;
use rampart_engine::decode::{self, LinkType, Transport, L3};
use rampart_engine::reasm::{Outcome, Reassembler, MAX_HELD_BYTES};
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
    let mut reasm = Reassembler::default();
    for (i, link) in LINKS.into_iter().enumerate() {
        if let Some(f) = decode::fragment_view(link, bytes) {
            assert!(f.data.len() <= f.data_len as usize && f.header.len() <= bytes.len());
            // Twice: the second is a duplicate, an overlap or a length error.
            for token in [2 * i, 2 * i + 1] {
                if let Outcome::Complete { datagram, .. } = reasm.fragment(&f, token, 0) {
                    let _ = decode::decode_ipv4(&datagram);
                    let _ = decode::decode_ipv6(&datagram);
                    let _ = decode::check_checksums(&datagram);
                    let _ = decode::ipv4_options(&datagram);
                }
            }
        }
    }
    let _ = reasm.drain();
    let _ = decode::check_checksums(bytes);
    let _ = decode::ipv4_options(bytes);
    let _ = decode::ipv6_hop_by_hop(bytes);
    for link in LINKS {
        if let Some(l3) = decode::ip_packet(link, bytes) {
            let _ = decode::check_checksums(l3);
            let _ = decode::ipv4_options(l3);
            let _ = decode::ipv6_hop_by_hop(l3);
        }
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
        if name.contains("tiny-first-fragment") {
            // Too short for TCP alone, yet a fragment reassembly takes.
            assert!(decode::decode(LinkType::Ethernet, bytes).is_err(), "{name}");
            let f = decode::fragment_view(LinkType::Ethernet, bytes).unwrap();
            assert_eq!((f.offset, f.more, f.data_len, f.protocol), (0, true, 8, 6));
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

/// One fragment of a random sequence: datagram, family, offset and length in 8-byte units,
/// more-fragments flag, bytes over the unit, arrival gap in seconds.
type FragSpec = (u8, bool, u16, u16, bool, u8, u8);

fn fragment_bytes(spec: FragSpec) -> Vec<u8> {
    let (id, v6, offset8, len8, more, extra, _) = spec;
    let data = vec![id; usize::from(len8) * 8 + usize::from(extra % 8)];
    let offset = (offset8 % 8192) * 8;
    let mut b = if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[44, 64]);
        h.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        h.extend_from_slice(&[0; 28]);
        h.extend_from_slice(&[17, 0]);
        h.extend_from_slice(&(offset | u16::from(more)).to_be_bytes());
        h.extend_from_slice(&u32::from(id).to_be_bytes());
        h
    } else {
        let mut h = vec![0x45, 0];
        h.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
        h.extend_from_slice(&u16::from(id).to_be_bytes());
        h.extend_from_slice(&((offset / 8) | if more { 0x2000 } else { 0 }).to_be_bytes());
        h.extend_from_slice(&[64, 17, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
        h
    };
    b.extend_from_slice(&data);
    b
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    /// Reassembly loses and duplicates nothing: every fragment's token comes back exactly
    /// once (completed, dropped, expired or drained), held memory returns to zero, and every
    /// completed datagram decodes with the length its fragments add up to.
    #[test]
    fn reassembly_returns_every_fragment_once(
        specs in proptest::collection::vec(
            // Few datagrams in short runs (they complete, overlap, time out), many in long
            // runs (IPv4 queues fall 64 fragments behind and restart).
            prop_oneof![
                (0u8..4, any::<bool>(), 0u16..12, 0u16..6, any::<bool>(), any::<u8>(), 0u8..12),
                (0u8..48, any::<bool>(), 0u16..12, 0u16..6, any::<bool>(), any::<u8>(), 0u8..2),
            ],
            1..200,
        ),
    ) {
        let mut r = Reassembler::default();
        let mut back = vec![0u32; specs.len()];
        let mut now_ns = 0u64;
        for (i, spec) in specs.iter().enumerate() {
            now_ns += u64::from(spec.6) * 1_000_000_000;
            for (_, tokens) in r.expire(now_ns) {
                tokens.iter().for_each(|&t| back[t] += 1);
            }
            let bytes = fragment_bytes(*spec);
            let link = if spec.1 { LinkType::Ipv6 } else { LinkType::Ipv4 };
            let Some(f) = decode::fragment_view(link, &bytes) else {
                // Offset 0 without more fragments: not a fragment at all.
                prop_assert!(spec.2 % 8192 == 0 && !spec.4);
                back[i] += 1;
                continue;
            };
            let outcome = r.fragment(&f, i, now_ns);
            for (_, tokens) in r.take_restarted() {
                tokens.iter().for_each(|&t| back[t] += 1);
            }
            match outcome {
                Outcome::Queued => {}
                Outcome::Dropped { tokens, .. } => tokens.iter().for_each(|&t| back[t] += 1),
                Outcome::Unaligned { dropped, token } => {
                    prop_assert!(spec.1, "only IPv6 passes unaligned data on");
                    dropped.iter().for_each(|&t| back[t] += 1);
                    back[token] += 1;
                }
                Outcome::Complete { datagram, tokens } => {
                    tokens.iter().for_each(|&t| back[t] += 1);
                    let ip = if spec.1 {
                        decode::decode_ipv6(&datagram)
                    } else {
                        decode::decode_ipv4(&datagram)
                    };
                    if let Ok(ip) = ip {
                        prop_assert_eq!(ip.len as usize, datagram.len());
                        prop_assert!(ip.frag.is_none());
                    }
                }
            }
            prop_assert!(r.held_bytes() <= MAX_HELD_BYTES + 65_536);
        }
        for (_, tokens) in r.drain() {
            tokens.iter().for_each(|&t| back[t] += 1);
        }
        prop_assert_eq!(r.held_bytes(), 0);
        prop_assert!(back.iter().all(|&n| n == 1), "{:?}", back);
    }
}
