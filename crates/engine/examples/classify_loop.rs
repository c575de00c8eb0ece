//! The `simulate` bench's decode+classify loop alone, for profilers (`perf record`,
//! `valgrind --tool=cachegrind`; this VM has no hardware counters): `cargo run --release -p
//! rampart-engine --example classify_loop -- PASSES [decode]`. With `decode` it only decodes
//! and builds the packet metadata (the baseline to subtract). Prints wall-clock ns per packet
//! and the fast matcher's memory.
//!
//! Instructions per packet: run it under cachegrind with 2 and with 6 passes and divide the
//! difference of the totals by 400,000 (setup cancels out).

use std::hint::black_box;

use rampart_engine::decode::{self, LinkType, L3};
use rampart_engine::{Engine, MatcherKind};
use rampart_ir::Action;

#[path = "../benches/common/mod.rs"]
mod common;

fn main() {
    let passes: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let decode_only = std::env::args().nth(2).as_deref() == Some("decode");
    let policy = common::policy();
    let frames = common::frames();
    let mut engine = Engine::new(&policy);
    let mut blocked = 0u64;
    let t = std::time::Instant::now();
    for _ in 0..passes {
        for (i, f) in frames.iter().enumerate() {
            if let Ok(decode::Packet { l3: L3::Ip(ip), .. }) = decode::decode(LinkType::Ethernet, f)
            {
                let meta = common::meta_of(&ip);
                if decode_only {
                    black_box(&meta);
                } else {
                    let d = engine.classify_with(MatcherKind::Fast, &meta, i as u64);
                    blocked += u64::from(d.action != Action::Accept);
                }
            }
        }
    }
    black_box(blocked);
    println!(
        "{}: {:.1} ns/packet (wall clock); fast matcher {} bytes",
        if decode_only {
            "decode+meta"
        } else {
            "decode+meta+classify"
        },
        t.elapsed().as_secs_f64() * 1e9 / (passes * frames.len()) as f64,
        engine.memory_bytes()
    );
}
