//! Property tests of the wire codec: arbitrary bytes never panic, built messages round-trip,
//! and the committed fuzz corpus keeps its verdicts (`ok-*` parse, `err-*` are rejected).

use proptest::prelude::*;
use rampart_dns::wire::{self, rtype, MessageBuilder, RData};

fn label() -> impl Strategy<Value = String> {
    "[a-z0-9_-]{1,20}"
}

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..6).prop_map(|l| l.join("."))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = wire::parse(&bytes);
        let _ = wire::peek_question(&bytes);
        if let Ok(m) = wire::parse(&bytes) {
            // Builders must not panic on anything the parser accepted either.
            let r = wire::build_response(&m, &bytes, wire::rcode::NXDOMAIN, &[], 60, None);
            prop_assert!(wire::parse(&r).is_ok());
            let _ = wire::truncate_response(&bytes, m.question_end);
        }
    }

    #[test]
    fn mutated_valid_messages_never_panic(pos in 0usize..80, val in any::<u8>(), n in name()) {
        let mut m = MessageBuilder::new(7, 0x8180)
            .question(&n, rtype::A)
            .record(0, &n, rtype::CNAME, 60, wire::name_rdata("cdn.example.com").unwrap())
            .record(0, "cdn.example.com", rtype::A, 60, vec![192, 0, 2, 1])
            .build()
            .unwrap();
        let p = pos % m.len();
        m[p] = val;
        let _ = wire::parse(&m);
    }

    #[test]
    fn round_trip(id in any::<u16>(), q in name(), ttl in any::<u32>(), a in any::<[u8; 4]>(),
                  aaaa in any::<[u8; 16]>(), target in name(), txt in prop::collection::vec(any::<u8>(), 0..200),
                  udp in 512u16..4096) {
        let bytes = MessageBuilder::new(id, 0x8180)
            .question(&q, rtype::A)
            .record(0, &q, rtype::CNAME, ttl, wire::name_rdata(&target).unwrap())
            .record(0, &target, rtype::A, ttl, a.to_vec())
            .record(0, &target, rtype::AAAA, ttl, aaaa.to_vec())
            .record(2, &target, rtype::TXT, ttl, { let mut v = vec![txt.len() as u8]; v.extend(&txt); v })
            .opt(udp, vec![(15, vec![0, 15])])
            .build()
            .unwrap();
        let m = wire::parse(&bytes).unwrap();
        prop_assert_eq!(m.header.id, id);
        prop_assert_eq!(m.questions[0].name.as_str(), q.as_str());
        prop_assert_eq!(&m.answers[0].data, &RData::Name(wire::Name(target.clone())));
        prop_assert_eq!(&m.answers[1].data, &RData::A(a.into()));
        prop_assert_eq!(&m.answers[2].data, &RData::Aaaa(aaaa.into()));
        prop_assert_eq!(&m.additional[0].data, &RData::Txt(vec![txt.clone()]));
        prop_assert_eq!(m.answers[0].ttl, ttl);
        prop_assert_eq!(m.opt.as_ref().unwrap().udp_size, udp);
        prop_assert!(m.anomalies.is_empty());
        prop_assert_eq!(wire::find_ede(&m).unwrap().code, 15);
    }

    #[test]
    fn escaped_names_round_trip(raw in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..20), 1..5)) {
        let mut bytes = vec![0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in &raw {
            bytes.push(l.len() as u8);
            bytes.extend(l);
        }
        bytes.push(0);
        bytes.extend([0, 1, 0, 1]);
        let m = wire::parse(&bytes).unwrap();
        let mut enc = Vec::new();
        wire::encode_name(m.questions[0].name.as_str(), &mut enc).unwrap();
        let lower: Vec<u8> = bytes[12..bytes.len() - 4].iter().map(|b| b.to_ascii_lowercase()).collect();
        prop_assert_eq!(enc, lower);
    }
}

#[test]
fn corpus_verdicts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let bytes = std::fs::read(&path).unwrap();
        let r = wire::parse(&bytes);
        if name.starts_with("ok-") {
            assert!(r.is_ok(), "{name}: {r:?}");
        } else if name.starts_with("err-") {
            assert!(r.is_err(), "{name}: {r:?}");
        }
        n += 1;
    }
    assert!(n >= 10);
}
