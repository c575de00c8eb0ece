//! Throughput of the guard's pure state machine on a frame mix: bound-client ARP (allowed),
//! spoofed gateway ARP (dropped, de-duplicated), DHCP DISCOVERs from many clients, and a
//! non-matching LLMNR answer. Prints frames per second per kind and for the mix; then the same
//! for IPv6 (ND inspection allowed/dropped, DHCPv6 REPLY decoding) with 4,000 DHCPv6 bindings.
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
    ipv6(frames);
}

/// IPv6 first-hop security with 4,000 DHCPv6 bindings: the owner's NA (allowed), a spoofed NA
/// for a bound address (dropped, de-duplicated), and a DHCPv6 REPLY on the trusted port
/// (decoded in full; no pending request, so nothing is learned).
fn ipv6(frames: u64) {
    use rampart_guard::craft::{dhcpv6, dhcpv6_ia_na, duid_ll, neighbor_advertisement, udp6_frame};
    use rampart_guard::Binding6;
    use std::net::Ipv6Addr;
    let cfg = Config::from_toml(
        "bridge = \"br0\"\ntrusted_ports = [\"p_srv\"]\nuntrusted_ports = [\"p_cli\", \"p_rog\"]\nbindings_file = \"/x\"\nevents_file = \"/y\"\n",
    )
    .expect("config");
    let now_s = 1_800_000_000u64;
    let mut table = BindingTable::new(4096);
    let addr = |i: u32| Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, (i >> 16) as u16, i as u16);
    for i in 0..4000u32 {
        let mac = Mac([2, 1, 0, 0, (i >> 8) as u8, i as u8]);
        table.v6_mut().insert(Binding6 {
            mac,
            duid: duid_ll(mac),
            ip: addr(i),
            port: "p_cli".into(),
            expires_s: now_s + 3600,
        });
    }
    let mut guard = Guard::new(cfg, table);
    let bound = Mac([2, 1, 0, 0, 0, 7]);
    let rog = Mac([2, 0, 0, 0, 0, 0x66]);
    let srv = Mac([2, 0, 0, 0, 0, 0x01]);
    let all_nodes: Ipv6Addr = "ff02::1".parse().expect("addr");
    let ll = |last: u16| Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last);
    let mix: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "nd_owner",
            "p_cli",
            neighbor_advertisement(bound, srv, addr(7), ll(1), addr(7), bound),
        ),
        (
            "nd_spoof",
            "p_rog",
            neighbor_advertisement(
                rog,
                Mac([0x33, 0x33, 0, 0, 0, 1]),
                ll(0x66),
                all_nodes,
                addr(7),
                rog,
            ),
        ),
        (
            "dhcpv6_reply",
            "p_srv",
            udp6_frame(
                srv,
                bound,
                ll(1),
                ll(7),
                547,
                546,
                &dhcpv6(
                    7,
                    0x123456,
                    &[
                        (1, duid_ll(bound)),
                        (2, duid_ll(srv)),
                        (3, dhcpv6_ia_na(1, 900, 1440, &[(addr(7), 1800, 3600)])),
                    ],
                ),
            ),
        ),
    ];
    let mut now_ns = now_s * 1_000_000_000;
    let mut results = Vec::new();
    let per_kind = frames / mix.len() as u64;
    for (name, port, frame) in &mix {
        let start = Instant::now();
        let mut events = 0usize;
        for _ in 0..per_kind {
            now_ns += 1_000;
            events += guard.on_frame(port, frame, now_ns).events.len();
        }
        let secs = start.elapsed().as_secs_f64();
        results.push(format!("\"{name}\": {:.0}", per_kind as f64 / secs));
        std::hint::black_box(events);
    }
    println!(
        "{{\"frames\": {frames}, \"bindings6\": 4000, \"frames_per_s\": {{{}}}}}",
        results.join(", ")
    );
}
