//! Throughput of the guard's pure state machine on a frame mix: bound-client ARP (allowed),
//! spoofed gateway ARP (dropped, de-duplicated), DHCP DISCOVERs from many clients, and a
//! non-matching LLMNR answer. Prints frames per second per kind and for the mix.
//!
//! `cargo run --release -p rampart-guard --example bench [frames]`

use std::net::Ipv4Addr;
use std::time::Instant;

use rampart_guard::craft::{arp_frame, dhcp, udp4_frame, BROADCAST};
use rampart_guard::decode::{Mac, ARP_REPLY, ARP_REQUEST};
use rampart_guard::{Binding, BindingTable, Config, Guard};

fn main() {
    let frames: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2_000_000);
    let cfg = Config::from_toml(
        "bridge = \"br0\"\ntrusted_ports = [\"p_srv\"]\nuntrusted_ports = [\"p_cli\", \"p_rog\"]\nbindings_file = \"/x\"\nevents_file = \"/y\"\n[[static_arp]]\nip = \"192.0.2.1\"\nmac = \"02:00:00:00:00:01\"\nport = \"p_srv\"\n",
    )
    .expect("config");
    let now_s = 1_800_000_000u64;
    let mut table = BindingTable::new(4096);
    for i in 0..4000u32 {
        table.insert(Binding {
            mac: Mac([2, 1, 0, 0, (i >> 8) as u8, i as u8]),
            ip: Ipv4Addr::from(0xc612_0000 + i), // 198.18.0.0/15 style benchmark range
            port: "p_cli".into(),
            expires_s: now_s + 3600,
        });
    }
    let mut guard = Guard::new(cfg, table);
    let bound = Mac([2, 1, 0, 0, 0, 7]);
    let rog = Mac([2, 0, 0, 0, 0, 0x66]);
    let mix: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "arp_bound",
            "p_cli",
            arp_frame(
                bound,
                BROADCAST,
                ARP_REQUEST,
                bound,
                Ipv4Addr::from(0xc612_0007),
                Mac::ZERO,
                Ipv4Addr::new(192, 0, 2, 1),
            ),
        ),
        (
            "arp_spoof",
            "p_rog",
            arp_frame(
                rog,
                bound,
                ARP_REPLY,
                rog,
                Ipv4Addr::new(192, 0, 2, 1),
                bound,
                Ipv4Addr::from(0xc612_0007),
            ),
        ),
        (
            "dhcp_discover",
            "p_cli",
            udp4_frame(
                bound,
                BROADCAST,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::BROADCAST,
                68,
                67,
                &dhcp(
                    1,
                    1,
                    9,
                    bound,
                    Ipv4Addr::UNSPECIFIED,
                    Ipv4Addr::UNSPECIFIED,
                    &[],
                ),
            ),
        ),
        (
            "llmnr_answer",
            "p_rog",
            udp4_frame(
                rog,
                bound,
                Ipv4Addr::new(192, 0, 2, 66),
                Ipv4Addr::new(192, 0, 2, 2),
                5355,
                40000,
                &{
                    let mut q = rampart_guard::canary::query(
                        rampart_guard::decode::NameProtocol::Llmnr,
                        "fileserver",
                        1,
                    );
                    q[2] |= 0x80;
                    q
                },
            ),
        ),
    ];
    let mut now_ns = now_s * 1_000_000_000;
    let mut results = Vec::new();
    for (name, port, frame) in &mix {
        let start = Instant::now();
        let mut events = 0usize;
        for _ in 0..frames / 4 {
            now_ns += 1_000; // 1 µs apart: the DHCP rate limit trips, as under a flood
            events += guard.on_frame(port, frame, now_ns).events.len();
        }
        let secs = start.elapsed().as_secs_f64();
        results.push(format!("\"{name}\": {:.0}", (frames / 4) as f64 / secs));
        std::hint::black_box(events);
    }
    let start = Instant::now();
    for i in 0..frames {
        let (_, port, frame) = &mix[(i % 4) as usize];
        now_ns += 1_000;
        std::hint::black_box(guard.on_frame(port, frame, now_ns));
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{{\"frames\": {frames}, \"bindings\": 4000, \"frames_per_s\": {{{}, \"mix\": {:.0}}}}}",
        results.join(", "),
        frames as f64 / secs
    );
}
