//! Throughput of decode alone, decode + classify (fast and reference matchers), and the full
//! replay path (decode + conntrack + classify + accounting), on a generated packet mix against
//! the example policy (examples/m1037-baseline) plus a 100k-entry blocklist set.
//!
//! `cargo bench -p rampart-engine --bench simulate`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rampart_engine::decode::{self, LinkType, L3};
use rampart_engine::pcap::Record;
use rampart_engine::{Engine, MatcherKind};
use rampart_ir::Action;

#[path = "common/mod.rs"]
mod common;
use common::{frames, meta_of, policy};

fn bench(c: &mut Criterion) {
    let policy = policy();
    let frames = frames();
    let mut g = c.benchmark_group("simulate");
    g.throughput(Throughput::Elements(frames.len() as u64));
    g.sample_size(10);
    g.bench_function("decode", |b| {
        b.iter(|| {
            let mut n = 0u32;
            for f in &frames {
                if let Ok(p) = decode::decode(LinkType::Ethernet, f) {
                    n += u32::from(matches!(p.l3, L3::Ip(_)));
                }
            }
            black_box(n)
        })
    });
    for (name, kind) in [
        ("decode+classify", MatcherKind::Fast),
        ("decode+classify-reference", MatcherKind::Reference),
    ] {
        let mut engine = Engine::new(&policy);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut blocked = 0u32;
                for (i, f) in frames.iter().enumerate() {
                    if let Ok(decode::Packet { l3: L3::Ip(ip), .. }) =
                        decode::decode(LinkType::Ethernet, f)
                    {
                        let d = engine.classify_with(kind, &meta_of(&ip), i as u64);
                        blocked += u32::from(d.action != Action::Accept);
                    }
                }
                black_box(blocked)
            })
        });
    }
    let mut sim = common::simulator(&policy);
    let mut ts = 0u64;
    g.bench_function("replay (decode+conntrack+classify+accounting)", |b| {
        b.iter(|| {
            common::replay_pass(&mut sim, &frames, &mut ts, &mut NullSink);
            black_box(sim.report().blocked)
        })
    });
    // Added workload: the same replay through `process_batch` (prefetch hints for the packets
    // 8 and 4 places ahead); the one-by-one replay above stays the reference figure.
    let mut sim_b = common::simulator(&policy);
    let mut ts_b = 0u64;
    g.bench_function("replay batched (process_batch, prefetch hints)", |b| {
        b.iter(|| {
            let mut sink = NullSink;
            let recs: Vec<Record<'_>> = frames
                .iter()
                .map(|f| {
                    ts_b += 1000;
                    Record {
                        ts_ns: ts_b,
                        linktype: 1,
                        data: f,
                        orig_len: f.len() as u32,
                    }
                })
                .collect();
            for chunk in recs.chunks(256) {
                sim_b.process_batch(chunk, &mut sink).unwrap();
            }
            black_box(sim_b.report().blocked)
        })
    });
    g.finish();
}

struct NullSink;

impl rampart_events::Sink for NullSink {
    fn emit(&mut self, _: &rampart_events::Event) -> Result<(), rampart_events::EventError> {
        Ok(())
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
