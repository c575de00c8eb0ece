//! `rampart simulate` on a capture written here: reversed fragments of a UDP datagram. The
//! stateful policy uses conntrack, so by default the datagram is reassembled and allowed
//! whole; `--reassemble off` judges each fragment alone (only the last-arriving first
//! fragment carries the port); `--reassemble on` under a stateless policy reassembles anyway.

use std::process::Command;

use rampart_engine::pcap::{write_pcap_header, write_pcap_record};

fn policy(dir: &std::path::Path, stateful: bool) -> std::path::PathBuf {
    let path = dir.join(format!("policy-{stateful}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"[defaults]
forward = "drop"
stateful = {stateful}

[[rules]]
name = "dns-out"
direction = "forward"
service = "udp/5353"
action = "accept"
"#
        ),
    )
    .unwrap();
    path
}

/// Three fragments of a 64-byte UDP datagram to port 5353, last one first.
fn capture(dir: &std::path::Path) -> std::path::PathBuf {
    let mut d = vec![0x30, 0x39, 0x14, 0xe9, 0, 64, 0, 0];
    d.extend((8..64).map(|i| i as u8));
    let frag = |offset: usize, len: usize, more: bool| {
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00, 0x45, 0];
        f.extend_from_slice(&((20 + len) as u16).to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34]);
        f.extend_from_slice(&((offset / 8) as u16 | if more { 0x2000 } else { 0 }).to_be_bytes());
        f.extend_from_slice(&[64, 17, 0, 0, 192, 0, 2, 5, 198, 51, 100, 7]);
        f.extend_from_slice(&d[offset..offset + len]);
        f
    };
    let mut pcap = Vec::new();
    write_pcap_header(&mut pcap, 1).unwrap();
    for (i, f) in [frag(48, 16, false), frag(24, 24, true), frag(0, 24, true)]
        .iter()
        .enumerate()
    {
        write_pcap_record(&mut pcap, 1_764_273_600_000_000_000 + i as u64 * 1_000, f).unwrap();
    }
    let path = dir.join("reversed.pcap");
    std::fs::write(&path, pcap).unwrap();
    path
}

/// (exit code, allowed, blocked, reassembled) of `rampart simulate --json`.
fn simulate(
    policy: &std::path::Path,
    pcap: &std::path::Path,
    extra: &[&str],
) -> (i32, u64, u64, u64) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["simulate", "--json", "--policy"])
        .arg(policy)
        .arg("--pcap")
        .arg(pcap)
        .args(extra)
        .output()
        .expect("run rampart simulate");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    let r = &v["report"];
    let n = |k: &str| r[k].as_u64().unwrap();
    (
        out.status.code().unwrap(),
        n("allowed"),
        n("blocked"),
        n("reassembled"),
    )
}

#[test]
fn simulate_reassembles_fragments_when_the_policy_uses_conntrack() {
    let dir = std::env::temp_dir().join(format!("rampart-simulate-frag-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = capture(&dir);
    let (stateful, stateless) = (policy(&dir, true), policy(&dir, false));
    // Exit 0: nothing blocked.
    assert_eq!(simulate(&stateful, &pcap, &[]), (0, 3, 0, 1));
    // Exit 1: something blocked (the two fragments without ports).
    assert_eq!(
        simulate(&stateful, &pcap, &["--reassemble", "off"]),
        (1, 1, 2, 0)
    );
    assert_eq!(simulate(&stateless, &pcap, &[]), (1, 1, 2, 0));
    assert_eq!(
        simulate(&stateless, &pcap, &["--reassemble", "on"]),
        (0, 3, 0, 1)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
