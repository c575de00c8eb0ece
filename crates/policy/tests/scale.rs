//! Load time at scale. Ignored by default (timing, not correctness); run with
//! `cargo test --release -p rampart-policy --test scale -- --ignored --nocapture`.

use std::fmt::Write as _;
use std::time::Instant;

/// A policy of `n` forward rules, each with a zone, a literal prefix, a set and two services.
fn policy(n: u32) -> String {
    let mut s = String::from(
        "[zones.corp]\ninterfaces = [\"corp0\"]\nnetworks = [\"192.0.2.0/24\"]\n\n[sets.bad]\nelements = [\"198.51.100.0/24\"]\n",
    );
    for i in 0..n {
        let _ = write!(
            s,
            "\n[[rules]]\nname = \"r{i}\"\ndirection = \"forward\"\nfrom = [\"corp\", \"10.{}.{}.0/24\"]\nto = \"bad\"\nservice = [\"tcp/{}\", \"https\"]\naction = \"accept\"\n",
            i / 256 % 256,
            i % 256,
            i % 65_535 + 1
        );
    }
    s
}

#[test]
#[ignore = "timing; run explicitly in release mode"]
fn load_10k_rules() {
    let text = policy(10_000);
    let mut best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut read = |_: &str| Ok::<String, std::io::Error>(text.clone());
        let loaded = rampart_policy::load_with("scale.toml", &mut read).expect("loads");
        best = best.min(start.elapsed().as_secs_f64());
        assert_eq!(loaded.policy.rules.len(), 10_000);
    }
    eprintln!(
        "10,000 rules ({} KiB of TOML): best of 3 = {:.0} ms",
        text.len() / 1024,
        best * 1000.0
    );
}
