//! Writes the `simulate` bench's workload (the example policy's zones, a 100k-prefix
//! blocklist's space, 45% TCP, 35% UDP, 10% ICMP, 10% IPv6 TCP; `benches/common`) as a pcap
//! of PACKETS frames, the 100,000 generated ones over and over, 1 µs apart, for timing
//! `rampart simulate` end to end (`bench/simulate.sh`):
//! `cargo run --release -p rampart-engine --example bench_pcap -- OUT.pcap [PACKETS]`.

use std::io::{BufWriter, Write};

use rampart_engine::pcap::{write_pcap_header, write_pcap_record};

#[path = "../benches/common/mod.rs"]
mod common;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        eprintln!("usage: bench_pcap OUT.pcap [PACKETS]");
        std::process::exit(2);
    };
    let packets: u64 = match args.next().map(|s| s.parse()) {
        None => 2_000_000,
        Some(Ok(n)) => n,
        Some(Err(_)) => {
            eprintln!("bench_pcap: PACKETS must be a whole number");
            std::process::exit(2);
        }
    };
    let frames = common::frames();
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(&out)?);
    write_pcap_header(&mut w, 1)?;
    for (i, f) in frames.iter().cycle().take(packets as usize).enumerate() {
        write_pcap_record(&mut w, (i as u64 + 1) * 1_000, f)?;
    }
    w.flush()
}
