//! CPU-time throughput of decode, decode + classify and full replay on the `simulate` bench's
//! workload (a development aid for loaded machines; `cargo bench --bench simulate` is the
//! benchmark): `cargo run --release -p rampart-engine --example replay_time [PASSES]`.
//! With a capture file as second argument it replays that instead (same policy, one by one
//! and batched): `... --example replay_time -- 20 /path/to/file.pcap`. With `REPLAY_ONLY=1` it times
//! only the full replay of the workload (for A/B runs of replay changes).

use std::hint::black_box;

use rampart_engine::decode::{self, LinkType, L3};
use rampart_engine::pcap::Record;
use rampart_engine::simulate::Simulator;
use rampart_engine::{Engine, MatcherKind, PrefetchStage};
use rampart_ir::Action;
use rampart_ir::Direction;

#[path = "../benches/common/mod.rs"]
mod common;

fn cpu_s() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/thread-self/stat") else {
        return 0.0;
    };
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let policy = common::policy();
    if let Some(path) = std::env::args().nth(2) {
        capture(&policy, &path, passes);
        return;
    }
    let frames = common::frames();
    let n = (frames.len() * passes) as f64;
    if std::env::var_os("REPLAY_ONLY").is_some() {
        // Only the full replay, for A/B runs of replay changes (shorter and steadier).
        let mut sim = common::simulator(&policy);
        let s = replay(&mut sim, &frames, passes);
        println!("replay {:.1} ns ({:.2} M/s)", s * 1e9 / n, n / s / 1e6);
        return;
    }
    let t = cpu_s();
    let mut ip_count = 0u64;
    for _ in 0..passes {
        for f in &frames {
            if let Ok(p) = decode::decode(LinkType::Ethernet, f) {
                ip_count += u64::from(matches!(p.l3, L3::Ip(_)));
            }
        }
    }
    let decode_s = cpu_s() - t;
    black_box(ip_count);
    let mut engine = Engine::new(&policy);
    let t = cpu_s();
    let mut blocked = 0u64;
    for _ in 0..passes {
        for (i, f) in frames.iter().enumerate() {
            if let Ok(decode::Packet { l3: L3::Ip(ip), .. }) = decode::decode(LinkType::Ethernet, f)
            {
                let d = engine.classify_with(MatcherKind::Fast, &common::meta_of(&ip), i as u64);
                blocked += u64::from(d.action != Action::Accept);
            }
        }
    }
    let classify_s = cpu_s() - t;
    black_box(blocked);
    // The same loop with prefetch hints for the packets 8 and 4 places ahead (the batched
    // replay's scheme); an added workload, the plain loop above is the target's measure.
    let hint = |engine: &Engine, f: &[u8], stage| {
        if let Some((src, dst, ports)) = decode::peek_ipv4(LinkType::Ethernet, f) {
            // common::meta_of's direction rule.
            let dir = if dst.octets()[0] == 192 {
                Direction::Ingress
            } else {
                Direction::Forward
            };
            engine.prefetch_v4(Some(dir), src, dst, ports, stage);
        }
    };
    let t = cpu_s();
    let mut blocked_pf = 0u64;
    for _ in 0..passes {
        for (i, f) in frames.iter().enumerate() {
            if let Some(g) = frames.get(i + 8) {
                hint(&engine, g, PrefetchStage::Index);
            }
            if let Some(g) = frames.get(i + 4) {
                hint(&engine, g, PrefetchStage::Entries);
            }
            if let Ok(decode::Packet { l3: L3::Ip(ip), .. }) = decode::decode(LinkType::Ethernet, f)
            {
                let d = engine.classify_with(MatcherKind::Fast, &common::meta_of(&ip), i as u64);
                blocked_pf += u64::from(d.action != Action::Accept);
            }
        }
    }
    let classify_pf_s = cpu_s() - t;
    assert_eq!(blocked, blocked_pf, "prefetch hints changed a decision");
    let mut sim = common::simulator(&policy);
    let replay_s = replay(&mut sim, &frames, passes);
    let mut sink = rampart_events::VecSink::default();
    let mut sim_b = common::simulator(&policy);
    let mut ts = 0u64;
    let t = cpu_s();
    for _ in 0..passes {
        let recs: Vec<Record<'_>> = frames
            .iter()
            .map(|f| {
                ts += 1000;
                Record {
                    ts_ns: ts,
                    linktype: 1,
                    data: f,
                    orig_len: f.len() as u32,
                }
            })
            .collect();
        for chunk in recs.chunks(256) {
            sim_b.process_batch(chunk, &mut sink).unwrap();
        }
    }
    let replay_b_s = cpu_s() - t;
    assert_eq!(
        sim.report().blocked,
        sim_b.report().blocked,
        "batched replay changed a verdict"
    );
    let ns = |s: f64| s * 1e9 / n;
    println!(
        "decode {:.1} ns ({:.1} M/s); decode+classify {:.1} ns ({:.2} M/s; classify adds {:.1} ns = {:.0}% of decode); replay {:.1} ns ({:.2} M/s)",
        ns(decode_s),
        n / decode_s / 1e6,
        ns(classify_s),
        n / classify_s / 1e6,
        ns(classify_s) - ns(decode_s),
        (ns(classify_s) - ns(decode_s)) / ns(decode_s) * 100.0,
        ns(replay_s),
        n / replay_s / 1e6
    );
    println!(
        "with prefetch hints: decode+classify {:.1} ns (classify adds {:.1} ns = {:.0}% of decode); batched replay {:.1} ns ({:.2} M/s)",
        ns(classify_pf_s),
        ns(classify_pf_s) - ns(decode_s),
        (ns(classify_pf_s) - ns(decode_s)) / ns(decode_s) * 100.0,
        ns(replay_b_s),
        n / replay_b_s / 1e6
    );
}

/// CPU seconds of `passes` replays of `frames` through `sim`, one packet a microsecond.
fn replay(sim: &mut Simulator, frames: &[Vec<u8>], passes: usize) -> f64 {
    let mut sink = rampart_events::VecSink::default();
    let mut ts = 0u64;
    let t = cpu_s();
    for _ in 0..passes {
        common::replay_pass(sim, frames, &mut ts, &mut sink);
    }
    cpu_s() - t
}

/// Replays a capture file (loaded into memory first) one by one and batched.
fn capture(policy: &rampart_ir::Policy, path: &str, passes: usize) {
    let bytes = std::fs::read(path).expect("read capture");
    let mut r = rampart_engine::pcap::CaptureReader::new(&bytes[..]).expect("capture header");
    let mut owned: Vec<(u64, u32, Vec<u8>, u32)> = Vec::new();
    while let Ok(Some(rec)) = r.next_record() {
        owned.push((rec.ts_ns, rec.linktype, rec.data.to_vec(), rec.orig_len));
    }
    let span = owned.last().map_or(0, |l| l.0) - owned.first().map_or(0, |f| f.0) + 1_000;
    let n = (owned.len() * passes) as f64;
    let recs = |pass: usize| -> Vec<Record<'_>> {
        owned
            .iter()
            .map(|(ts, lt, d, ol)| Record {
                // Later passes continue in time so flows age as in one long capture.
                ts_ns: ts + pass as u64 * span,
                linktype: *lt,
                data: d,
                orig_len: *ol,
            })
            .collect()
    };
    let t = cpu_s();
    let mut ip = 0u64;
    for _ in 0..passes {
        for (_, lt, d, _) in &owned {
            let link = LinkType::from_pcap(*lt).unwrap_or(LinkType::Ethernet);
            if let Ok(p) = decode::decode(link, d) {
                ip += u64::from(matches!(p.l3, L3::Ip(_)));
            }
        }
    }
    let decode_s = cpu_s() - t;
    black_box(ip);
    let mut sink = rampart_events::VecSink::default();
    let mut sim = common::simulator(policy);
    let t = cpu_s();
    for pass in 0..passes {
        for rec in &recs(pass) {
            sim.process(rec, &mut sink).unwrap();
        }
    }
    let one_s = cpu_s() - t;
    let mut sim_b = common::simulator(policy);
    let t = cpu_s();
    for pass in 0..passes {
        for chunk in recs(pass).chunks(256) {
            sim_b.process_batch(chunk, &mut sink).unwrap();
        }
    }
    let batch_s = cpu_s() - t;
    let (a, b) = (sim.finish(), sim_b.finish());
    assert_eq!(
        (a.blocked, a.allowed),
        (b.blocked, b.allowed),
        "batching changed a verdict"
    );
    let ns = |s: f64| s * 1e9 / n;
    println!(
        "{path}: {} packets x {passes}, {} flows, {} blocked; decode {:.1} ns; replay {:.1} ns ({:.2} M/s); batched replay {:.1} ns ({:.2} M/s)",
        owned.len(),
        a.flows,
        a.blocked,
        ns(decode_s),
        ns(one_s),
        n / one_s / 1e6,
        ns(batch_s),
        n / batch_s / 1e6
    );
}
