//! Fuzz-style tests on the stable toolchain: every parser, detection and normalisation on
//! arbitrary bytes and on the committed corpus (`fuzz-corpus/`) must never panic.

use proptest::prelude::*;
use rampart_feeds::fuzzing::run_all;

#[test]
fn corpus_never_panics() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz-corpus");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz-corpus exists") {
        let path = entry.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        run_all(&data);
        // Also every prefix of each file: truncation in the middle of a token.
        for cut in (0..data.len()).step_by(7) {
            run_all(&data[..cut]);
        }
        n += 1;
    }
    assert!(n >= 10, "corpus has {n} files");
}

fn feedish() -> impl Strategy<Value = Vec<u8>> {
    // Bytes biased towards feed syntax so the parsers get past their first checks.
    let atoms = prop_oneof![
        Just(b"192.0.2.".to_vec()),
        Just(b"2001:db8::".to_vec()),
        Just(b"/24".to_vec()),
        Just(b"||".to_vec()),
        Just(b"^".to_vec()),
        Just(b"@@".to_vec()),
        Just(b"$important".to_vec()),
        Just(b"address=/".to_vec()),
        Just(b"local-zone: \"".to_vec()),
        Just(b" CNAME ".to_vec()),
        Just(b".rpz-ip".to_vec()),
        Just(b"*.".to_vec()),
        Just(b"ExitAddress ".to_vec()),
        Just(b"[ipv4-addr:value = '".to_vec()),
        Just(b"{\"type\":\"bundle\",\"objects\":[".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"#".to_vec()),
        Just(b";".to_vec()),
        Just(b"(".to_vec()),
        Just(b"-".to_vec()),
        Just(b"example.com".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..8),
    ];
    proptest::collection::vec(atoms, 0..60).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
        run_all(&data);
    }

    #[test]
    fn feed_shaped_bytes_never_panic(data in feedish()) {
        run_all(&data);
    }
}
