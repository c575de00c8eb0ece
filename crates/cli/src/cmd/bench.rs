//! `rampart bench ...`.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rampart_engine::classbench::{self, CbClassifier, CbHeader};

use crate::Outcome;

/// Benchmark subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Classify a ClassBench trace against a ClassBench rule file: writes the 0-based index of
    /// the first matching rule per trace line (-1 for none) and prints lookups/s.
    Classbench(ClassbenchArgs),
}

/// Arguments of `rampart bench classbench`.
#[derive(clap::Args, Debug)]
pub(crate) struct ClassbenchArgs {
    /// ClassBench rule file.
    #[arg(long)]
    rules: PathBuf,
    /// Trace file (read, or written first with --generate-trace).
    #[arg(long)]
    trace: PathBuf,
    /// Write one match index per trace line here.
    #[arg(long)]
    matches: Option<PathBuf>,
    /// Use the linear reference matcher instead of the fast classifier.
    #[arg(long)]
    reference: bool,
    /// Generate a trace of N headers into --trace before classifying.
    #[arg(long, value_name = "N")]
    generate_trace: Option<usize>,
    /// Seed for --generate-trace.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Classify the trace this many times for the timing (results from the first pass).
    #[arg(long, default_value_t = 1)]
    iter: u32,
    /// Time this many rounds of --iter passes and report the fastest round (a shared
    /// machine disturbs single rounds; bench/classbench.sh gives DPDK the same best-of-N).
    #[arg(long, default_value_t = 1)]
    rounds: u32,
    /// Headers per batch (0: one lookup at a time, no batching).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Also check every result against the reference matcher and fail on a mismatch.
    #[arg(long)]
    verify: bool,
}

fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

pub(crate) fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Classbench(args) => classbench_cmd(args),
    }
}

fn classbench_cmd(args: ClassbenchArgs) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(&args.rules)
        .with_context(|| format!("cannot read {}", args.rules.display()))?;
    let rules =
        classbench::parse_rules(&text).with_context(|| format!("in {}", args.rules.display()))?;
    if let Some(n) = args.generate_trace {
        let trace = classbench::generate_trace(&rules, n, args.seed);
        std::fs::write(&args.trace, classbench::format_trace(&trace))
            .with_context(|| format!("cannot write {}", args.trace.display()))?;
    }
    let ttext = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("cannot read {}", args.trace.display()))?;
    let trace: Vec<CbHeader> =
        classbench::parse_trace(&ttext).with_context(|| format!("in {}", args.trace.display()))?;
    drop(ttext);

    let rss_before = rss_kib();
    let build_start = Instant::now();
    let fast = if args.reference {
        None
    } else {
        Some(CbClassifier::build(&rules).context("building the classifier")?)
    };
    let build_s = build_start.elapsed().as_secs_f64();
    let rss_after = rss_kib();

    let mut results: Vec<i64> = vec![0; trace.len()];
    let iters = args.iter.max(1);
    let rounds = args.rounds.max(1);
    let mut checksum = 0u64;
    let mut round_secs: Vec<f64> = Vec::with_capacity(rounds as usize);
    for round in 0..rounds {
        let start = Instant::now();
        for pass in 0..iters {
            let first = round == 0 && pass == 0;
            checksum = checksum.wrapping_add(classify_pass(
                &rules,
                &trace,
                fast.as_ref(),
                args.batch,
                first.then_some(&mut results[..]),
            ));
        }
        round_secs.push(start.elapsed().as_secs_f64());
    }
    round_secs.sort_by(f64::total_cmp);
    let secs = round_secs.first().copied().unwrap_or(0.0);
    let median_secs = round_secs[round_secs.len() / 2];
    let lookups = trace.len() as f64 * f64::from(iters);
    let rate = if secs > 0.0 { lookups / secs } else { 0.0 };
    let median_rate = if median_secs > 0.0 {
        lookups / median_secs
    } else {
        0.0
    };

    let mut mismatches = 0usize;
    if args.verify && fast.is_some() {
        for (r, h) in results.iter().zip(&trace) {
            let want = classbench::reference_match(&rules, h).map_or(-1, i64::from);
            if *r != want {
                mismatches += 1;
            }
        }
    }
    if let Some(path) = &args.matches {
        let f = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let mut w = std::io::BufWriter::new(f);
        for r in &results {
            writeln!(w, "{r}")?;
        }
        w.flush()?;
    }
    let matcher = if args.reference { "reference" } else { "fast" };
    let mut out = std::io::stdout().lock();
    let mem = fast.as_ref().map_or(0, |c| c.memory_bytes());
    let rss_delta = match (rss_before, rss_after) {
        (Some(a), Some(b)) => format!("{} KiB", b.saturating_sub(a)),
        _ => "n/a".into(),
    };
    writeln!(
        out,
        "matcher: {matcher}; rules: {}; headers: {}; iterations: {iters}",
        rules.len(),
        trace.len()
    )?;
    if let Some(c) = &fast {
        writeln!(out, "structure: {}", c.kind())?;
    }
    writeln!(
        out,
        "build: {:.3} s; structures: {:.1} MiB; rss delta: {rss_delta}",
        build_s,
        mem as f64 / (1024.0 * 1024.0)
    )?;
    if rounds > 1 {
        writeln!(
            out,
            "rounds: {rounds}; fastest round reported; median round {median_rate:.0} lookups/s"
        )?;
    }
    writeln!(
        out,
        "lookups/s: {:.0} ({:.1} ns/lookup; checksum {checksum})",
        rate,
        if lookups > 0.0 {
            secs * 1e9 / lookups
        } else {
            0.0
        }
    )?;
    if args.verify {
        writeln!(out, "mismatches vs reference: {mismatches}")?;
        if mismatches > 0 {
            return Ok(Outcome::Findings);
        }
    }
    Ok(Outcome::Clean)
}

/// One pass over the trace; writes each result into `results` when given. Returns the sum of
/// the results (a checksum that keeps the work observable).
fn classify_pass(
    rules: &[classbench::CbRule],
    trace: &[CbHeader],
    fast: Option<&CbClassifier>,
    batch: usize,
    mut results: Option<&mut [i64]>,
) -> u64 {
    let mut checksum = 0u64;
    let mut record = |i: usize, r: Option<u32>| {
        let r = r.map_or(-1, i64::from);
        checksum = checksum.wrapping_add(r as u64);
        if let Some(slot) = results.as_mut().and_then(|rs| rs.get_mut(i)) {
            *slot = r;
        }
    };
    match fast {
        Some(c) if batch == 0 => {
            for (i, h) in trace.iter().enumerate() {
                record(i, c.classify(h));
            }
        }
        Some(c) => {
            // Batches of 256 headers by default, as dpdk-test-acl's default --tracestep.
            let mut out = vec![None; batch];
            for (k, chunk) in trace.chunks(batch).enumerate() {
                c.classify_batch(chunk, &mut out[..chunk.len()]);
                for (j, r) in out[..chunk.len()].iter().enumerate() {
                    record(k * batch + j, *r);
                }
            }
        }
        None => {
            for (i, h) in trace.iter().enumerate() {
                record(i, classbench::reference_match(rules, h));
            }
        }
    }
    checksum
}
