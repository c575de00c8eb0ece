//! `rampart bench classbench`: the fast classifier's match file equals the reference's on a
//! small generated rule set and trace, `--verify` reports zero mismatches, and `--rounds`
//! times several rounds and says so (bench/classbench.sh parses these lines).

use std::path::PathBuf;
use std::process::Command;

/// A scratch directory removed when the test ends, pass or fail.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rampart(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rampart {args:?} failed:\n{text}");
    text
}

#[test]
fn fast_matches_equal_reference_and_rounds_are_reported() {
    let dir =
        Scratch(std::env::temp_dir().join(format!("rampart-engine-bench-{}", std::process::id())));
    std::fs::create_dir_all(&dir.0).unwrap();
    // Documentation ranges; specific, wild and overlapping rules, a protocol wildcard.
    let rules = "\
@192.0.2.0/24\t198.51.100.0/24\t0 : 65535\t443 : 443\t0x06/0xFF\t0x0000/0x0000\n\
@192.0.2.128/25\t0.0.0.0/0\t1024 : 65535\t53 : 53\t0x11/0xFF\t0x0000/0x0000\n\
@0.0.0.0/0\t203.0.113.7/32\t0 : 65535\t0 : 65535\t0x00/0x00\t0x0000/0x0000\n\
@203.0.113.0/24\t192.0.2.0/24\t22 : 22\t1024 : 65535\t0x06/0xFF\t0x0000/0x0000\n\
@0.0.0.0/0\t0.0.0.0/0\t0 : 65535\t0 : 1023\t0x06/0xFF\t0x0000/0x0000\n";
    let p = |name: &str| dir.0.join(name).to_string_lossy().into_owned();
    std::fs::write(p("rules"), rules).unwrap();
    let reference = rampart(&[
        "bench",
        "classbench",
        "--rules",
        &p("rules"),
        "--trace",
        &p("trace"),
        "--generate-trace",
        "3000",
        "--seed",
        "9",
        "--reference",
        "--matches",
        &p("ref"),
    ]);
    assert!(reference.contains("matcher: reference"), "{reference}");
    let fast = rampart(&[
        "bench",
        "classbench",
        "--rules",
        &p("rules"),
        "--trace",
        &p("trace"),
        "--iter",
        "2",
        "--rounds",
        "3",
        "--verify",
        "--matches",
        &p("fast"),
    ]);
    assert!(fast.contains("mismatches vs reference: 0"), "{fast}");
    assert!(fast.contains("rounds: 3; fastest round reported"), "{fast}");
    assert!(fast.contains("lookups/s: "), "{fast}");
    let ref_matches = std::fs::read_to_string(p("ref")).unwrap();
    let fast_matches = std::fs::read_to_string(p("fast")).unwrap();
    assert_eq!(ref_matches.lines().count(), 3000);
    assert_eq!(ref_matches, fast_matches);
    // The trace is not vacuous: several rules and "no match" all occur.
    let distinct: std::collections::BTreeSet<&str> = ref_matches.lines().collect();
    assert!(distinct.len() >= 4, "{distinct:?}");
}
