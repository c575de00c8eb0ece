//! Benchmark driver for `bench/feeds.sh` (numbers in docs/feeds.md).
//!
//! * `synthetic N [SEED]` — parse + normalise N synthetic lines; prints wall times and peak RSS
//!   (VmHWM from /proc/self/status).
//! * `scripts OUTDIR FEED...` — parse all FEED files (format detected), then write
//!   `OUTDIR/aggregated.nft` (one table, per-family interval sets of the aggregated union, one
//!   transaction) and `OUTDIR/naive.nft` (every raw entry of every feed as one element in a set
//!   per feed, no aggregation: what loading the lists as-is costs).
//! * `churn OUTDIR N PCT` — a set of N random addresses (seeded) and a new version with PCT%
//!   churn; writes `load.nft`, `delta.nft` and `full.nft` (Split layout, table `bench`) and
//!   prints the time to normalise + plan each.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

use ipnet::IpNet;
use rampart_feeds::sync::{feed_sets, plan, KernelContents, Layout, SyncOptions};
use rampart_feeds::{check_file, normalize, parse_bytes, parse_reader, Format};

fn vm_hwm_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn table_decl(table: &str, sets: &[rampart_feeds::sync::SetRef]) -> String {
    let mut s = format!("table inet {table} {{\n");
    for set in sets {
        let ty = if set.set.contains("_v4") {
            "ipv4_addr"
        } else {
            "ipv6_addr"
        };
        let flags = if set.interval {
            "flags interval; auto-merge;"
        } else {
            ""
        };
        let _ = writeln!(s, "  set {} {{ type {ty}; {flags} }}", set.set);
    }
    s.push_str("}\n");
    s
}

fn synthetic(args: &[String]) {
    let n: usize = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(42);
    let data = rampart_feeds::fuzzing::synthetic_feed(n, seed);
    let base = vm_hwm_kb();
    let t = Instant::now();
    let parsed = parse_bytes(&data, &Format::Plain, "synthetic");
    let t_parse = t.elapsed();
    let norm = normalize(&parsed.nets, &["10.0.0.0/8".parse().unwrap()]);
    let t_all = t.elapsed();
    println!(
        "synthetic lines={n} input_bytes={} entries={} rejected={} elements={} (v4 {} v6 {}; singles {} prefixes {}) parse_ms={} parse_normalize_ms={} peak_rss_kb={} rss_before_parse_kb={base}",
        data.len(),
        parsed.nets.len(),
        parsed.stats.rejected,
        norm.len(),
        norm.nets.v4.len(),
        norm.nets.v6.len(),
        norm.singles.len(),
        norm.prefixes.len(),
        t_parse.as_millis(),
        t_all.as_millis(),
        vm_hwm_kb()
    );
}

fn scripts(args: &[String]) {
    let out = Path::new(&args[0]);
    std::fs::create_dir_all(out).unwrap();
    let mut all: Vec<IpNet> = Vec::new();
    let mut naive = String::from("table inet naive {\n");
    let mut naive_adds = String::new();
    let t = Instant::now();
    let mut raw = 0usize;
    for (i, f) in args[1..].iter().enumerate() {
        let path = Path::new(f);
        let report = check_file(path, None, &[]).unwrap();
        let file = std::fs::File::open(path).unwrap();
        let p = parse_reader(std::io::BufReader::new(file), &report.format, f).unwrap();
        raw += p.nets.len();
        for (fam, ty) in [("v4", "ipv4_addr"), ("v6", "ipv6_addr")] {
            let _ = writeln!(naive, "  set f{i}_{fam} {{ type {ty}; flags interval; }}");
            let elems: Vec<String> = p
                .nets
                .iter()
                .filter(|n| matches!((fam, n), ("v4", IpNet::V4(_)) | ("v6", IpNet::V6(_))))
                .map(|n| n.to_string())
                .collect();
            // One set per feed, as a naive loader would do; duplicates inside one feed are
            // dropped (nft rejects them), overlaps across feeds stay.
            let mut elems = elems;
            elems.sort();
            elems.dedup();
            for chunk in elems.chunks(4096) {
                let _ = writeln!(
                    naive_adds,
                    "add element inet naive f{i}_{fam} {{ {} }}",
                    chunk.join(", ")
                );
            }
        }
        all.extend(p.nets);
    }
    naive.push_str("}\n");
    naive.push_str(&naive_adds);
    let norm = normalize(&all, &[]);
    let sets = feed_sets("agg", "all", Layout::IntervalOnly);
    let k = KernelContents::layout(&norm, &sets);
    let p = plan(None, &k, &SyncOptions::default());
    let t_build = t.elapsed();
    std::fs::write(
        out.join("aggregated.nft"),
        table_decl("agg", &sets) + &p.script,
    )
    .unwrap();
    let split_sets = feed_sets("aggs", "all", Layout::Split);
    let ks = KernelContents::layout(&norm, &split_sets);
    let ps = plan(None, &ks, &SyncOptions::default());
    std::fs::write(
        out.join("aggregated_split.nft"),
        table_decl("aggs", &split_sets) + &ps.script,
    )
    .unwrap();
    std::fs::write(out.join("naive.nft"), naive).unwrap();
    println!(
        "feeds={} raw_entries={raw} aggregated_prefixes={} interval_only_elements={} split_elements={} (singles {}) parse_aggregate_plan_ms={} peak_rss_kb={}",
        args.len() - 1,
        norm.len(),
        k.elements(),
        ks.elements(),
        norm.singles.len(),
        t_build.as_millis(),
        vm_hwm_kb()
    );
}

fn churn(args: &[String]) {
    let out = Path::new(&args[0]);
    std::fs::create_dir_all(out).unwrap();
    let n: usize = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let pct: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let mut state = 7u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32) as u32
    };
    let mut old: Vec<u32> = (0..n).map(|_| next()).collect();
    old.sort_unstable();
    old.dedup();
    let k = n * pct / 100;
    // New version: drop every (n/k)-th address, add k fresh ones.
    let step = (old.len() / k.max(1)).max(1);
    let mut new: Vec<u32> = old
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step != 0)
        .map(|(_, a)| *a)
        .collect();
    new.extend((0..k).map(|_| next()));
    let to_nets = |v: &[u32]| -> Vec<IpNet> {
        v.iter()
            .map(|a| IpNet::from(std::net::IpAddr::V4(std::net::Ipv4Addr::from(*a))))
            .collect()
    };
    let (old_nets, new_nets) = (to_nets(&old), to_nets(&new));
    // The new version as a feed file, to time the whole Rust side of a refresh.
    let mut new_text = String::with_capacity(new.len() * 16);
    for n in &new_nets {
        let _ = writeln!(new_text, "{}", n.addr());
    }
    let sets = feed_sets("bench", "churn", Layout::Split);
    let old_k = KernelContents::layout(&normalize(&old_nets, &[]), &sets);
    let opts = SyncOptions::default();
    let load = plan(None, &old_k, &opts);
    let t = Instant::now();
    let new_k = KernelContents::layout(&normalize(&new_nets, &[]), &sets);
    let t_norm = t.elapsed();
    let delta = plan(Some(&old_k), &new_k, &opts);
    let t_delta = t.elapsed();
    let full = plan(None, &new_k, &opts);
    let t = Instant::now();
    let parsed = parse_bytes(new_text.as_bytes(), &Format::Plain, "new");
    let k2 = KernelContents::layout(&normalize(&parsed.nets, &[]), &sets);
    let p2 = plan(Some(&old_k), &k2, &opts);
    let t_e2e = t.elapsed();
    assert_eq!(p2.script, delta.script);
    std::fs::write(
        out.join("load.nft"),
        table_decl("bench", &sets) + &load.script,
    )
    .unwrap();
    std::fs::write(out.join("delta.nft"), &delta.script).unwrap();
    std::fs::write(out.join("full.nft"), &full.script).unwrap();
    println!(
        "churn set={} new={} mode={} added={} removed={} normalize_ms={} normalize_plan_ms={} parse_normalize_plan_ms={} peak_rss_kb={}",
        old_k.elements(),
        new_k.elements(),
        delta.mode_name(),
        delta.added,
        delta.removed,
        t_norm.as_millis(),
        t_delta.as_millis(),
        t_e2e.as_millis(),
        vm_hwm_kb()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("synthetic") => synthetic(&args[1..]),
        Some("scripts") if args.len() >= 3 => scripts(&args[1..]),
        Some("churn") if args.len() >= 2 => churn(&args[1..]),
        _ => {
            eprintln!("usage: feeds_bench synthetic [N [SEED]] | scripts OUTDIR FEED... | churn OUTDIR [N [PCT]]");
            std::process::exit(2);
        }
    }
}
