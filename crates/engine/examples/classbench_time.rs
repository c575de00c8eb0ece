//! Time the ClassBench classifiers on one rule file, best of 5 rounds (a development aid;
//! `bench/classbench.sh` is the benchmark): `cargo run --release -p rampart-engine --example classbench_time -- RULES [HEADERS] [ITER]`.

use std::time::Instant;

use rampart_engine::classbench::{generate_trace, parse_rules, reference_match, CbClassifier};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: classbench_time RULES [HEADERS] [ITER]")?;
    let n: usize = args.get(2).map_or(Ok(100_000), |s| s.parse())?;
    let iter: usize = args.get(3).map_or(Ok(20), |s| s.parse())?;
    let rules = parse_rules(&std::fs::read_to_string(path)?)?;
    let trace: Vec<_> = generate_trace(&rules, n, 1)
        .into_iter()
        .map(|t| t.0)
        .collect();
    let which = args.get(4).map_or("both", String::as_str);
    let mut variants = Vec::new();
    if which != "bits" {
        let t = Instant::now();
        let c = CbClassifier::build(&rules)?;
        eprintln!("build {:.3} s\n{}", t.elapsed().as_secs_f64(), c.describe());
        if let Some((d, dmax, scan)) = c.walk_stats(&trace) {
            eprintln!("mean depth {d:.1}, max {dmax}, mean leaf entries scanned {scan:.2}");
        }
        variants.push(("auto", c));
    }
    if which != "auto" {
        variants.push(("bit-vector", CbClassifier::build_bit_vector(&rules)?));
    }
    for (name, c) in variants {
        let mut out = vec![None; trace.len()];
        // Best of 5 rounds of `iter` passes: on a shared machine the fastest round is the one
        // least disturbed (CPU time when it is precise enough, else wall clock).
        let mut rate = 0f64;
        for _ in 0..5 {
            let cpu0 = cpu_s();
            let t = Instant::now();
            for _ in 0..iter {
                for (hs, os) in trace.chunks(256).zip(out.chunks_mut(256)) {
                    c.classify_batch(hs, os);
                }
            }
            let wall = t.elapsed().as_secs_f64();
            let cpu = cpu_s() - cpu0;
            let secs = if cpu > 1.0 { cpu } else { wall };
            rate = rate.max((n * iter) as f64 / secs);
        }
        let bad = trace
            .iter()
            .zip(&out)
            .filter(|(h, o)| reference_match(&rules, h) != **o)
            .count();
        println!(
            "{path} {name} ({}): {:.2} Mlookups/s, {:.1} MiB, mismatches {bad}",
            c.kind(),
            rate / 1e6,
            c.memory_bytes() as f64 / 1048576.0
        );
    }
    Ok(())
}

/// User + system CPU seconds of this thread (from /proc; 10 ms resolution).
fn cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields 14 and 15 of stat; index 11 and 12 after the command name.
    (ticks(11) + ticks(12)) / 100.0
}
