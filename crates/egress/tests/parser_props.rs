//! Property tests for the bounded parsers: arbitrary and mutated inputs never panic, results
//! respect the limits, and well-formed inputs round-trip through the parsers.

use proptest::prelude::*;
use rampart_egress::http::{self, BodyLen, Host, Target};
use rampart_egress::tls::{self, Peek};

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        let _ = rampart_egress::fuzzing::run_all(&data);
    }

    #[test]
    fn request_heads_respect_limits(data in proptest::collection::vec(any::<u8>(), 0..2048), max in 16usize..1024) {
        match http::parse_request_head(&data, max, 8) {
            Ok(Some(h)) => {
                prop_assert!(h.head_len <= max);
                prop_assert!(h.headers.len() <= 8);
            }
            Ok(None) => prop_assert!(data.len() < max),
            Err(_) => {}
        }
    }

    #[test]
    fn generated_requests_parse_back(
        host in "[a-z][a-z0-9-]{0,20}(\\.[a-z][a-z0-9-]{0,20}){1,3}",
        port in 1u16..,
        path in "/[A-Za-z0-9/._~-]{0,40}",
        len in 0u64..1_000_000,
        names in proptest::collection::vec("[A-Za-z][A-Za-z0-9-]{0,15}", 0..10),
    ) {
        let mut text = format!("POST http://{host}:{port}{path} HTTP/1.1\r\nContent-Length: {len}\r\n");
        for n in &names {
            if n.eq_ignore_ascii_case("content-length") || n.eq_ignore_ascii_case("transfer-encoding") {
                continue;
            }
            text.push_str(&format!("{n}: v\r\n"));
        }
        text.push_str("\r\n");
        let h = http::parse_request_head(text.as_bytes(), http::MAX_HEAD_BYTES, http::MAX_HEADERS)
            .unwrap()
            .unwrap();
        prop_assert_eq!(h.head_len, text.len());
        prop_assert_eq!(h.target.clone(), Target::Absolute { host: Host::Name(host), port, path });
        let want = if len == 0 { BodyLen::Empty } else { BodyLen::Length(len) };
        prop_assert_eq!(h.body_len().unwrap(), want);
        // Every strict prefix is incomplete, never an error.
        for cut in [0, text.len() / 2, text.len() - 1] {
            prop_assert_eq!(http::parse_request_head(&text.as_bytes()[..cut], http::MAX_HEAD_BYTES, http::MAX_HEADERS), Ok(None));
        }
    }

    #[test]
    fn client_hellos_round_trip_and_mutations_never_panic(
        name in "[a-z][a-z0-9-]{0,30}(\\.[a-z][a-z0-9-]{0,30}){0,4}",
        ech in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in any::<usize>(),
    ) {
        let hello = rampart_egress::fuzzing::client_hello(Some(&name), ech);
        match tls::peek_client_hello(&hello) {
            Peek::Hello(h) => {
                prop_assert_eq!(h.sni.as_deref(), Some(name.as_str()));
                prop_assert_eq!(h.ech, ech);
            }
            other => prop_assert!(false, "{:?}", other),
        }
        let mut m = hello.clone();
        for (at, v) in flips {
            let i = at % m.len();
            m[i] = v;
        }
        let m = &m[..cut % (m.len() + 1)];
        if let Peek::Hello(h) = tls::peek_client_hello(m) {
            prop_assert!(h.sni.map_or(0, |s| s.len()) <= tls::MAX_SNI_LEN + 1);
        }
    }

    #[test]
    fn chunk_lines_never_overflow(line in proptest::collection::vec(any::<u8>(), 0..40)) {
        if let Ok(v) = http::parse_chunk_size_line(&line) {
            prop_assert!(v < (1u64 << 60));
        }
    }
}

#[test]
fn oversized_hello_is_malformed_not_buffered_forever() {
    // A record header announcing the maximum length, repeated: the peek must give up at the cap.
    let mut data = Vec::new();
    while data.len() < tls::MAX_CLIENT_HELLO_BYTES + 10 {
        data.extend_from_slice(&[0x16, 0x03, 0x01, 0x40, 0x00]);
        if data.len() == 5 {
            data.extend_from_slice(&[0x01, 0xff, 0xff, 0xff]);
            data.resize(5 + 0x4000, 0);
        } else {
            let l = data.len();
            data.resize(l + 0x4000, 0);
        }
    }
    assert!(matches!(tls::peek_client_hello(&data), Peek::Malformed(_)));
}
