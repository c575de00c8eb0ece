//! The DHCPv6 decoder against a committed corpus of real encodings (generated with scapy by
//! `tests/corpus/dhcpv6/generate.py`, independent of the guard's own frame builders):
//! `ok-*.bin` decode to the message type and learnable-address count in `expected.txt`,
//! `fail-*.bin` are named anomalies; every prefix of every file decodes or fails without
//! panicking, and every file goes through the state machine from a trusted and an untrusted
//! port.

use std::collections::BTreeMap;
use std::path::Path;

use rampart_guard::craft::udp6_frame;
use rampart_guard::decode::{self, Mac};
use rampart_guard::{BindingTable, Config, Guard};

fn corpus() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/dhcpv6");
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "bin"))
        .map(|e| {
            let name = e.path().file_stem().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    files.sort();
    assert!(files.len() >= 10, "corpus missing: {}", dir.display());
    files
}

fn expected() -> BTreeMap<String, (u8, usize)> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/dhcpv6/expected.txt"),
    )
    .unwrap();
    text.lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                (f[1].parse().unwrap(), f[2].parse().unwrap()),
            )
        })
        .collect()
}

#[test]
fn corpus_files_decode_as_labelled() {
    let want = expected();
    let mut ok_seen = 0;
    for (name, bytes) in corpus() {
        let got = decode::dhcpv6(&bytes);
        if name.starts_with("ok-") {
            let m = got.unwrap_or_else(|e| panic!("{name}: {e}"));
            let (kind, addresses) = want[&name];
            assert_eq!(m.kind, kind, "{name}");
            assert_eq!(m.addresses.len(), addresses, "{name}: {m:?}");
            if kind != decode::dhcpv6_type::RELAY_REPL {
                assert!(m.client_id.is_some(), "{name}: no client id");
            }
            ok_seen += 1;
        } else {
            assert!(name.starts_with("fail-"), "{name}: neither ok- nor fail-");
            assert!(got.is_err(), "{name} decoded: {got:?}");
        }
    }
    assert_eq!(ok_seen, want.len(), "expected.txt and the ok- files differ");
}

#[test]
fn every_prefix_of_every_corpus_file_is_handled() {
    for (name, bytes) in corpus() {
        for cut in 0..bytes.len() {
            // A prefix is a message or an anomaly; reaching here means no panic.
            if let Ok(m) = decode::dhcpv6(&bytes[..cut]) {
                assert!(m.addresses.len() <= decode::MAX_DHCPV6_ADDRESSES, "{name}");
            }
        }
    }
}

#[test]
fn corpus_files_go_through_the_state_machine() {
    let cfg = Config::from_toml(
        "bridge = \"br0\"\ntrusted_ports = [\"t\"]\nuntrusted_ports = [\"u\"]\nbindings_file = \"/x\"\nevents_file = \"/y\"\n",
    )
    .unwrap();
    let mut g = Guard::new(cfg, BindingTable::new(8));
    let ll = |last: u16| std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last);
    let mut now = 1_800_000_000_000_000_000u64;
    let mut malformed = 0;
    for (name, bytes) in corpus() {
        now += 20_000_000_000; // past the de-duplication window
        let cli = Mac([2, 0, 0, 0, 0, 0x0c]);
        let srv = Mac([2, 0, 0, 0, 0, 0x01]);
        let up = udp6_frame(cli, srv, ll(0xc), ll(1), 546, 547, &bytes);
        let down = udp6_frame(srv, cli, ll(1), ll(0xc), 547, 546, &bytes);
        let out = g.on_frame("u", &up, now);
        let bad = out
            .events
            .iter()
            .any(|e| e.detail["kind"] == "dhcpv6_malformed");
        assert_eq!(bad, name.starts_with("fail-"), "{name}: {:?}", out.events);
        malformed += usize::from(bad);
        let _ = g.on_frame("t", &down, now + 1);
    }
    assert!(g.malformed_dhcpv6() >= malformed as u64);
}
