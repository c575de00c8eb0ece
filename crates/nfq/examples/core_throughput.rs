//! In-process throughput of the pure classifier core with the engine's labeller (no kernel):
//! DNS queries on udp/53 under an `app_not = ["dns"]` rule, each packet a new connection
//! (decode, table insert, candidate rules, label) or all on one connection (table hit after
//! the inspection budget). Prints one JSON line per case.
//!
//!   cargo run --release -p rampart-nfq --example core_throughput [PACKETS]

use std::time::Instant;

use rampart_ir::{Action, AppMatch, AppProtocol, Direction, L4Match, Policy, PortRange, Rule};
use rampart_nfq::{Classifier, EngineLabeller, Hook, Limits, Orientation, PacketIn};

fn packet(sport: u16) -> Vec<u8> {
    let mut dns = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    dns.extend_from_slice(b"\x03www\x07example\x03com\x00\x00\x01\x00\x01");
    let udp_len = 8 + dns.len();
    let total = 20 + udp_len;
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        17,
        0,
        0,
    ];
    p.extend_from_slice(&[198, 51, 100, 1, 198, 51, 100, 2]);
    p.extend_from_slice(&sport.to_be_bytes());
    p.extend_from_slice(&53u16.to_be_bytes());
    p.extend_from_slice(&(udp_len as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&dns);
    p
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000_000);
    let policy = Policy {
        rules: vec![Rule {
            services: vec![L4Match {
                protocol: Some(17),
                src_ports: vec![],
                dst_ports: vec![PortRange::single(53)],
                icmp_types: vec![],
                service: None,
            }],
            app: Some(AppMatch {
                protocols: vec![AppProtocol::Dns],
                negate: true,
            }),
            ..Rule::new("dns-only-on-53", Direction::Ingress, Action::Drop)
        }],
        ..Policy::default()
    };
    let template = packet(10_000);
    for (case, spread) in [("new_flow_per_packet", true), ("one_flow", false)] {
        let mut c = Classifier::new(&policy, EngineLabeller, Limits::default()).unwrap();
        let mut data = template.clone();
        let start = Instant::now();
        for i in 0..n {
            if spread {
                // Why: a distinct source address and port per packet; once the table holds
                // its 65 536 connections every insert also evicts (steady state of a flood).
                data[14..16].copy_from_slice(&((i >> 16) as u16).to_be_bytes());
                data[20..22].copy_from_slice(&(i as u16).to_be_bytes());
            }
            let d = c.classify(
                &PacketIn {
                    hook: Hook::Input,
                    iif: Some("eth0"),
                    oif: None,
                    orientation: Orientation::Original,
                    data: &data,
                },
                i / 1000,
            );
            std::hint::black_box(&d);
        }
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{{\"case\":\"{case}\",\"packets\":{n},\"seconds\":{secs:.3},\"packets_per_s\":{:.0},\"ns_per_packet\":{:.0}}}",
            n as f64 / secs,
            secs * 1e9 / n as f64
        );
    }
}
