//! Parse + normalise (dedupe, aggregate, split) a seeded synthetic 1M-line feed.
//! Target: ≤ 1 s per iteration. Peak memory: `cargo run --release --example feeds_bench --
//! synthetic 1000000` (reads VmHWM).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rampart_feeds::fuzzing::synthetic_feed;
use rampart_feeds::{normalize, parse_bytes, Format};

fn bench(c: &mut Criterion) {
    let data = synthetic_feed(1_000_000, 42);
    let allow: Vec<ipnet::IpNet> = vec![
        "10.0.0.0/8".parse().unwrap(),
        "192.0.2.0/24".parse().unwrap(),
    ];
    let mut g = c.benchmark_group("feeds");
    g.sample_size(10);
    g.throughput(Throughput::Elements(1_000_000));
    g.bench_function("parse_1M_lines", |b| {
        b.iter(|| parse_bytes(&data, &Format::Plain, "synthetic").nets.len())
    });
    let parsed = parse_bytes(&data, &Format::Plain, "synthetic");
    g.bench_function("normalize_1M_lines", |b| {
        b.iter(|| normalize(&parsed.nets, &allow).len())
    });
    g.bench_function("parse_and_normalize_1M_lines", |b| {
        b.iter(|| {
            let p = parse_bytes(&data, &Format::Plain, "synthetic");
            normalize(&p.nets, &allow).len()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
