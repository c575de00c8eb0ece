//! Scale checks and the benchmark harness.
//!
//! * `domain_set_memory_and_load_time` (always runs): 200k generated names must cost
//!   ≤ 50 bytes per domain and build fast.
//! * `serve_from_env` (ignored; driven by `bench/dns.sh`): runs the server from the TOML file in
//!   `RAMPART_DNS_BENCH_CONFIG` on a single-threaded runtime (like the peers' one worker thread)
//!   for `RAMPART_DNS_BENCH_SECONDS`, printing list load time and RSS. It exists because the
//!   `rampart dns` subcommand is wired by the CLI owner; the library entry point is the same.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rampart_dns::config::{GroupConfig, ListConfig, ListKind};
use rampart_dns::engine::Engine;
use rampart_dns::{Config, Server};

fn status_kib(key: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// Peak RSS since start or since the last [`reset_hwm`].
fn hwm_kib() -> u64 {
    status_kib("VmHWM:")
}

/// Resets VmHWM to the current RSS (`clear_refs` value 5, Linux ≥ 4.0).
fn reset_hwm() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

#[test]
fn domain_set_memory_and_load_time() {
    let n = 200_000;
    let mut text = String::new();
    let mut x: u64 = 42;
    let suffixes = ["com", "net", "org", "co.uk", "de", "io"];
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let depth = 2 + (x % 3) as usize;
        let mut name = format!("w{}x{}", x % 100_000, i);
        for d in 2..depth {
            name = format!("l{}.{name}", (x >> (d * 8)) % 1000);
        }
        text.push_str(&format!(
            "{name}.{}\n",
            suffixes[(x >> 40) as usize % suffixes.len()]
        ));
    }
    let mut cfg = Config::from_toml("listen = [\"127.0.0.1:0\"]\nupstreams = []\n").unwrap();
    cfg.lists = vec![ListConfig {
        format: None,
        name: "big".into(),
        kind: ListKind::Domains,
        path: None,
        entries: Vec::new(),
        max_entries: 5_000_000,
    }];
    let mut g = GroupConfig::named("all");
    g.block = vec!["big".into()];
    cfg.groups = vec![g];
    let texts = HashMap::from([("big".to_string(), text.clone())]);
    let t = Instant::now();
    let engine = Engine::build(&cfg, &texts).unwrap();
    let build = t.elapsed();
    let st = &engine.list_stats()[0];
    let avg_name = text.len() as f64 / n as f64;
    let per_domain = st.heap_bytes as f64 / st.entries as f64;
    println!("{} names (avg {avg_name:.1} B of text each incl. newline): {per_domain:.1} heap bytes/domain, build {build:?}", st.entries);
    assert_eq!(st.entries, n);
    assert!(per_domain <= 50.0, "{per_domain} B/domain");
    let client = "192.0.2.1".parse().unwrap();
    for line in text.lines().take(1000) {
        assert!(matches!(
            engine.decide_query(client, &format!("sub.{line}")),
            rampart_dns::engine::Decision::Block(_)
        ));
    }
}

#[test]
#[ignore = "benchmark harness, run by bench/dns.sh"]
fn serve_from_env() {
    let Some(path) = std::env::var_os("RAMPART_DNS_BENCH_CONFIG") else {
        eprintln!("skipping: RAMPART_DNS_BENCH_CONFIG not set");
        return;
    };
    let seconds: u64 = std::env::var("RAMPART_DNS_BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let text = std::fs::read_to_string(&path).unwrap();
    let cfg = Config::from_toml(&text).unwrap();
    let rss0 = rss_kib();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let t = Instant::now();
        let srv = Server::start(cfg.clone()).await.unwrap();
        let load = t.elapsed();
        let engine = srv.engine();
        let entries: usize = engine.list_stats().iter().map(|s| s.entries).sum();
        let heap: usize = engine.list_stats().iter().map(|s| s.heap_bytes).sum();
        drop(engine);
        println!(
            "bench: serving on {:?}: lists {entries} entries, heap {heap} B, started (lists loaded) in {:.3} s, rss before {rss0} KiB, after {} KiB",
            srv.udp_addrs,
            load.as_secs_f64(),
            rss_kib()
        );
        let reload_every = std::env::var("RAMPART_DNS_BENCH_RELOAD_S")
            .ok()
            .and_then(|s| s.parse::<u64>().ok());
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let mut peak = 0;
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_secs(reload_every.unwrap_or(1))).await;
            if reload_every.is_some() {
                // VmHWM reset just before the reload: the high-water mark after it is the
                // reload's own peak (old engine + new engine + whatever traffic holds).
                let reset = reset_hwm();
                let before = rss_kib();
                let t = Instant::now();
                srv.reload(&cfg).await.unwrap();
                let took = t.elapsed().as_secs_f64();
                let hwm = hwm_kib();
                println!(
                    "bench: reload {took:.3} s, rss before {before} KiB, peak {hwm} KiB (+{} KiB){}, rss after {} KiB",
                    hwm.saturating_sub(before),
                    if reset { "" } else { " [VmHWM not reset: peak since start]" },
                    rss_kib()
                );
            }
            peak = peak.max(hwm_kib());
        }
        println!("bench: peak rss (VmHWM) {peak} KiB");
        for (k, v) in srv.metrics().snapshot() {
            println!("bench: metric {k} {v}");
        }
        srv.shutdown();
    });
}
