//! Fuzz-style properties for every decoder and for the state machine: arbitrary bytes never
//! panic, and whatever is decoded stays within the named bounds. Stable-toolchain stand-in for
//! cargo-fuzz targets (STYLE P7).

use proptest::prelude::*;
use rampart_guard::decode::{self, MAX_NAME_LEN, MAX_RECORDS};
use rampart_guard::{BindingTable, Config, Guard};

fn guard() -> Guard {
    let cfg = Config::from_toml(
        "bridge = \"br0\"\ntrusted_ports = [\"t\"]\nuntrusted_ports = [\"u\"]\nbindings_file = \"/x\"\nevents_file = \"/y\"\n[[static_nd]]\nip = \"fe80::1\"\nmac = \"02:00:00:00:00:01\"\n[canary]\nsource = \"192.0.2.2\"\n",
    )
    .unwrap();
    Guard::new(cfg, BindingTable::new(8))
}

/// Bytes biased towards the headers the decoders look for, so deep paths are reached.
fn framed() -> impl Strategy<Value = Vec<u8>> {
    let prefixes: Vec<Vec<u8>> = vec![
        vec![],
        // Ethernet to ARP.
        vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x06, 0, 1, 8, 0, 6, 4,
        ],
        // Ethernet to IPv4/UDP 67->68.
        vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 1, 0x40, 0,
            0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 1, 255, 255, 255, 255, 0, 67, 0, 68, 1, 0x2c, 0, 0,
            2, 1, 6, 0,
        ],
        // Ethernet to IPv4/UDP 5355.
        vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0, 0, 0x60, 0,
            0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 66, 192, 0, 2, 2, 0x14, 0xeb, 0x9c, 0x40, 0, 0x4c, 0,
            0, 0, 1, 0x80, 0,
        ],
        // Ethernet to IPv6.
        vec![
            0x33, 0x33, 0, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0x86, 0xdd, 0x60, 0, 0, 0, 0, 0x40, 0,
        ],
        // VLAN.
        vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 1, 0x81, 0x00, 0, 10, 0x81, 0x00, 0,
            11, 0x81, 0x00,
        ],
    ];
    // IPv6 UDP towards and from the DHCPv6 server port, and ICMPv6 NS/NA, with lengths opened
    // up to 0xffff so the random tail is the DHCPv6 message / ND body (decoders bound by what
    // was captured).
    let mut prefixes = prefixes;
    let open6 = |mut f: Vec<u8>, udp: bool| {
        f[18..20].copy_from_slice(&[0xff, 0xff]);
        if udp {
            f[58..60].copy_from_slice(&[0xff, 0xff]);
        }
        f
    };
    let (a, b): (std::net::Ipv6Addr, std::net::Ipv6Addr) =
        ("fe80::c".parse().unwrap(), "ff02::1:2".parse().unwrap());
    let m = rampart_guard::decode::Mac([2, 0, 0, 0, 0, 0x0c]);
    prefixes.push(open6(
        rampart_guard::craft::udp6_frame(m, m, a, b, 546, 547, &[]),
        true,
    ));
    prefixes.push(open6(
        rampart_guard::craft::udp6_frame(m, m, a, a, 547, 546, &[7]),
        true,
    ));
    prefixes.push(open6(
        rampart_guard::craft::ipv6_frame(m, m, a, b, 58, &[136, 0, 0, 0, 0x20, 0, 0, 0]),
        false,
    ));
    prefixes.push(open6(
        rampart_guard::craft::ipv6_frame(
            m,
            m,
            std::net::Ipv6Addr::UNSPECIFIED,
            b,
            58,
            &[135, 0, 0, 0, 0, 0, 0, 0],
        ),
        false,
    ));
    (
        prop::sample::select(prefixes),
        prop::collection::vec(any::<u8>(), 0..1600),
    )
        .prop_map(|(mut p, tail)| {
            p.extend(tail);
            p
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn decoders_never_panic(bytes in framed()) {
        let _ = decode::ethernet(&bytes);
        let _ = decode::arp(&bytes);
        let _ = decode::ipv4(&bytes);
        let _ = decode::ipv6(&bytes);
        let _ = decode::dhcp(&bytes);
        let _ = decode::dhcpv6_kind(&bytes);
        let _ = decode::dhcpv6(&bytes);
        if let Some(e) = decode::ethernet(&bytes) {
            prop_assert!(e.vlan_count <= decode::MAX_VLAN_TAGS);
            prop_assert!(e.payload.len() <= bytes.len());
            let _ = decode::arp(e.payload);
            if let Some(ip) = decode::ipv4(e.payload) {
                if let Some(udp) = ip.udp {
                    prop_assert!(udp.payload.len() <= e.payload.len());
                    let _ = decode::dhcp(udp.payload);
                }
            }
            let _ = decode::ipv6(e.payload);
        }
    }

    #[test]
    fn name_messages_are_bounded(bytes in prop::collection::vec(any::<u8>(), 0..1500), netbios in any::<bool>()) {
        if let Some(m) = decode::name_message(&bytes, netbios) {
            prop_assert!(m.questions.len() <= MAX_RECORDS);
            prop_assert!(m.answers.len() <= MAX_RECORDS);
            prop_assert!(m.answer_ipv4.len() <= MAX_RECORDS);
            for n in m.questions.iter().chain(m.answers.iter()) {
                prop_assert!(n.len() <= MAX_NAME_LEN);
            }
        }
    }

    #[test]
    fn dhcp_options_walk_is_bounded(tail in prop::collection::vec(any::<u8>(), 0..1400)) {
        let mut p = vec![0u8; 236];
        p[0] = 2; p[1] = 1; p[2] = 6;
        p.extend_from_slice(&decode::DHCP_MAGIC);
        p.extend(tail);
        let m = decode::dhcp(&p);
        prop_assert!(m.is_some());
    }

    #[test]
    fn binding_file_parser_never_panics(text in "(# rampart-guard bindings v1\n)?([0-9a-f:. a-z_]{0,60}\n){0,8}") {
        let _ = BindingTable::from_text(&text, 4, 0);
    }
}

proptest! {
    // Why fewer cases: each case runs up to 40 frames through the whole state machine.
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn state_machine_never_panics(frames in prop::collection::vec((framed(), any::<bool>()), 0..40)) {
        let mut g = guard();
        let mut now = 1_800_000_000_000_000_000u64;
        g.canary_round(&[1, 2, 3], now);
        for (f, trusted) in frames {
            now += 10_000_000;
            let out = g.on_frame(if trusted { "t" } else { "u" }, &f, now);
            prop_assert!(out.events.len() <= 4);
        }
        let _ = g.tick(now + 10_u64.pow(12));
        prop_assert!(g.bindings().len() <= 8);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Arbitrary option lists after a valid header: the DHCPv6 decoder returns a message or a
    /// named anomaly, never panics, and keeps its bounds.
    #[test]
    fn dhcpv6_decoder_is_bounded(kind in any::<u8>(), opts in prop::collection::vec((0u16..16, prop::collection::vec(any::<u8>(), 0..80), any::<bool>()), 0..24), tail in prop::collection::vec(any::<u8>(), 0..8)) {
        let mut p = vec![kind, 1, 2, 3];
        for (code, value, lie) in &opts {
            p.extend_from_slice(&code.to_be_bytes());
            // Sometimes a length that does not match the value (the decoder must catch it).
            let len = if *lie { value.len() as u16 + 3 } else { value.len() as u16 };
            p.extend_from_slice(&len.to_be_bytes());
            p.extend_from_slice(value);
        }
        p.extend(tail);
        if let Ok(m) = decode::dhcpv6(&p) {
            prop_assert!(m.addresses.len() <= decode::MAX_DHCPV6_ADDRESSES);
            for d in m.client_id.iter().chain(m.server_id.iter()) {
                prop_assert!(!d.is_empty() && d.len() <= decode::MAX_DUID_LEN);
            }
        }
    }

    /// Fully arbitrary bytes too (no header assumptions).
    #[test]
    fn dhcpv6_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1500)) {
        let _ = decode::dhcpv6(&bytes);
    }
}
