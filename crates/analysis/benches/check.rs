//! `check` and `coverage` on a 10,000-rule policy. Uses the ClassBench `acl1_10k` rule set
//! when `/work/shared/data/classbench/acl1_10k` (or `$RAMPART_CLASSBENCH`) exists, otherwise a
//! generated ClassBench-like policy of the same size.
//!
//! Run: `cargo bench -p rampart-analysis --bench check`.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rampart_ir::*;

const DEFAULT_PATH: &str = "/work/shared/data/classbench/acl1_10k";
const RULES: usize = 10_000;

fn rule(i: usize, src: IpNet, dst: IpNet, services: Vec<L4Match>) -> Rule {
    Rule {
        name: format!("r{i}"),
        direction: Direction::Forward,
        from: vec![Peer::Net(src)],
        to: vec![Peer::Net(dst)],
        services,
        family: Family::Any,
        ct_states: vec![],
        owner: None,
        limit: None,
        conn_limit: None,
        synproxy: None,
        ban: None,
        app: None,
        // ClassBench has no verdicts; a fixed pattern gives a mix.
        action: if i % 3 == 0 {
            Action::Drop
        } else {
            Action::Accept
        },
        log: false,
        mitigates: vec![],
        expires: None,
        description: None,
        origin: RuleOrigin::User,
        loc: SourceLoc {
            file: "acl1_10k".into(),
            line: i as u32 + 1,
            col: 1,
        },
    }
}

fn l4(protocol: Option<u8>, sport: PortRange, dport: PortRange) -> L4Match {
    let full = PortRange { lo: 0, hi: 65535 };
    let ports = |r: PortRange| if r == full { vec![] } else { vec![r] };
    L4Match {
        protocol,
        src_ports: ports(sport),
        dst_ports: ports(dport),
        icmp_types: vec![],
        service: None,
    }
}

fn services(proto: Option<u8>, sport: PortRange, dport: PortRange) -> Vec<L4Match> {
    let full = PortRange { lo: 0, hi: 65535 };
    match proto {
        Some(p @ (6 | 17)) => vec![l4(Some(p), sport, dport)],
        Some(p) => vec![l4(Some(p), full, full)],
        // "Any protocol" with ports: in the IR ports need TCP or UDP.
        None if sport != full || dport != full => {
            vec![l4(Some(6), sport, dport), l4(Some(17), sport, dport)]
        }
        None => vec![],
    }
}

/// Parses ClassBench lines `@src/len  dst/len  lo : hi  lo : hi  proto/mask  flags/mask`.
fn parse_classbench(text: &str) -> Vec<Rule> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.trim_start_matches('@').split('\t').collect();
        if f.len() < 5 {
            continue;
        }
        let (Ok(src), Ok(dst)) = (f[0].parse::<Ipv4Net>(), f[1].parse::<Ipv4Net>()) else {
            continue;
        };
        let range = |s: &str| -> Option<PortRange> {
            let (lo, hi) = s.split_once(':')?;
            Some(PortRange {
                lo: lo.trim().parse().ok()?,
                hi: hi.trim().parse().ok()?,
            })
        };
        let (Some(sport), Some(dport)) = (range(f[2]), range(f[3])) else {
            continue;
        };
        let Some((p, mask)) = f[4].split_once('/') else {
            continue;
        };
        let p = u8::from_str_radix(p.trim_start_matches("0x"), 16).unwrap_or(0);
        let proto = if mask.eq_ignore_ascii_case("0xFF") {
            Some(p)
        } else {
            None
        };
        out.push(rule(
            i,
            IpNet::V4(src.trunc()),
            IpNet::V4(dst.trunc()),
            services(proto, sport, dport),
        ));
    }
    out
}

/// A ClassBench-like policy: prefixes clustered under a few roots, a few well-known ports,
/// some ranges, a handful of wildcards.
fn generated() -> Vec<Rule> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let roots = [0xC000_0200u32, 0xC633_6400, 0xCB00_7100, 0x0A00_0000];
    let mut out = Vec::new();
    for i in 0..RULES {
        let mut pick = |wild: u64| {
            let r = next();
            if r % 100 < wild {
                return Ipv4Net::new(0u32.into(), 0).expect("valid");
            }
            let root = roots[(r >> 8) as usize % roots.len()];
            let len = [32u8, 32, 32, 28, 24, 16][(r >> 16) as usize % 6];
            let host = root | ((r >> 24) as u32 & 0xFFFF);
            Ipv4Net::new(host.into(), len).expect("valid").trunc()
        };
        let (src, dst) = (pick(10), pick(5));
        let r = next();
        let proto = [Some(6u8), Some(6), Some(17), None][r as usize % 4];
        let dport = match (r >> 8) % 4 {
            0 => PortRange { lo: 0, hi: 65535 },
            1 => PortRange {
                lo: 1024,
                hi: 65535,
            },
            _ => {
                let p = [22u16, 25, 53, 80, 443, 445, 1521, 3389][(r >> 16) as usize % 8];
                PortRange::single(p)
            }
        };
        out.push(rule(
            i,
            IpNet::V4(src),
            IpNet::V4(dst),
            services(proto, PortRange { lo: 0, hi: 65535 }, dport),
        ));
    }
    out
}

fn policy() -> (Policy, String) {
    let path = std::env::var("RAMPART_CLASSBENCH").unwrap_or_else(|_| DEFAULT_PATH.into());
    let (rules, what) = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let name = path.rsplit('/').next().unwrap_or("classbench");
            (parse_classbench(&text), format!("classbench {name}"))
        }
        Err(e) => {
            eprintln!("skipping ClassBench ({path}: {e}); using a generated policy");
            (generated(), "generated".to_string())
        }
    };
    (
        Policy {
            rules,
            ..Policy::default()
        },
        what,
    )
}

/// CPU time of this process in milliseconds (user + system, from /proc; 10 ms resolution),
/// because wall time on a shared, loaded machine says little.
fn cpu_ms() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    Some(ticks * 10)
}

fn bench(c: &mut Criterion) {
    let (policy, what) = policy();
    let today = Date {
        year: 2026,
        month: 11,
        day: 27,
    };
    let started = std::time::Instant::now();
    let cpu0 = cpu_ms();
    let report = rampart_analysis::check(&policy, today);
    let first_ms = started.elapsed().as_millis();
    let cpu = cpu_ms().zip(cpu0).map(|(b, a)| b - a).unwrap_or(0);
    eprintln!(
        "{what}: {} rules, first check {first_ms} ms wall / {cpu} ms CPU, {} findings ({} errors, {} warnings, {} notes)",
        policy.rules.len(),
        report.findings.len(),
        report.summary.errors,
        report.summary.warnings,
        report.summary.infos
    );
    let mut codes: std::collections::BTreeMap<&str, usize> = Default::default();
    for f in &report.findings {
        *codes.entry(f.code).or_default() += 1;
    }
    eprintln!("findings by code: {codes:?}");
    let started = std::time::Instant::now();
    let cpu0 = cpu_ms();
    let cov = rampart_analysis::coverage(&policy);
    let cpu = cpu_ms().zip(cpu0).map(|(b, a)| b - a).unwrap_or(0);
    eprintln!(
        "first coverage {} ms wall / {cpu} ms CPU: {:?}",
        started.elapsed().as_millis(),
        cov.summary
    );
    let mut g = c.benchmark_group("analysis");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function(format!("check/{what}"), |b| {
        b.iter(|| rampart_analysis::check(black_box(&policy), today))
    });
    g.bench_function(format!("coverage/{what}"), |b| {
        b.iter(|| rampart_analysis::coverage(black_box(&policy)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
