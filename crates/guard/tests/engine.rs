//! The guard's state machine driven with crafted frames: learning from a DHCP exchange,
//! rogue servers on untrusted ports, spoofed releases, chaddr spoofing, the starvation rate
//! limit, DAI against learned and static bindings, arpwatch events and the canary.

use std::net::Ipv4Addr;

use rampart_guard::canary::query;
use rampart_guard::craft::{arp_frame, dhcp, udp4_frame, BROADCAST};
use rampart_guard::decode::{Mac, NameProtocol, ARP_REPLY, ARP_REQUEST};
use rampart_guard::{BindingTable, Change, Config, Guard};

const SRV: Mac = Mac([2, 0, 0, 0, 0, 0x01]);
const CLI: Mac = Mac([2, 0, 0, 0, 0, 0x0c]);
const ROG: Mac = Mac([2, 0, 0, 0, 0, 0x66]);
const GW_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const LEASE_IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);
const T0: u64 = 1_800_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;

fn config() -> Config {
    Config::from_toml(
        r#"
bridge = "br0"
trusted_ports = ["p_srv"]
untrusted_ports = ["p_cli", "p_rog"]
bindings_file = "/nonexistent/b"
events_file = "/nonexistent/e"
[[static_arp]]
ip = "192.0.2.1"
mac = "02:00:00:00:00:01"
port = "p_srv"
[canary]
source = "192.0.2.2"
"#,
    )
    .unwrap()
}

fn client(kind: u8, xid: u32, chaddr: Mac, eth: Mac) -> Vec<u8> {
    let msg = dhcp(
        1,
        kind,
        xid,
        chaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &[],
    );
    udp4_frame(
        eth,
        BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        68,
        67,
        &msg,
    )
}

fn server(
    kind: u8,
    xid: u32,
    chaddr: Mac,
    from: Mac,
    server_ip: Ipv4Addr,
    lease_s: u32,
) -> Vec<u8> {
    let msg = dhcp(
        2,
        kind,
        xid,
        chaddr,
        Ipv4Addr::UNSPECIFIED,
        LEASE_IP,
        &[
            (54, server_ip.octets().to_vec()),
            (51, lease_s.to_be_bytes().to_vec()),
        ],
    );
    udp4_frame(
        from,
        BROADCAST,
        server_ip,
        Ipv4Addr::BROADCAST,
        67,
        68,
        &msg,
    )
}

fn kinds(out: &rampart_guard::Output) -> Vec<String> {
    out.events
        .iter()
        .map(|e| e.detail["kind"].as_str().unwrap().to_string())
        .collect()
}

fn learned() -> Guard {
    let mut g = Guard::new(config(), BindingTable::new(16));
    g.on_frame("p_cli", &client(1, 42, CLI, CLI), T0);
    g.on_frame("p_cli", &client(3, 42, CLI, CLI), T0);
    let out = g.on_frame("p_srv", &server(5, 42, CLI, SRV, GW_IP, 600), T0);
    assert_eq!(kinds(&out), ["dhcp_binding_added"]);
    assert!(matches!(&out.changes[..], [Change::Bind { .. }]));
    g
}

#[test]
fn ack_on_trusted_port_learns_binding_on_the_request_port() {
    let g = learned();
    let b = g.bindings().of_mac(&CLI).unwrap();
    assert_eq!(
        (b.ip, b.port.as_str(), b.expires_s),
        (LEASE_IP, "p_cli", T0 / SEC + 600)
    );
}

#[test]
fn rogue_offer_on_untrusted_port_is_an_event_and_never_learned() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    g.on_frame("p_cli", &client(1, 42, CLI, CLI), T0);
    let out = g.on_frame(
        "p_rog",
        &server(5, 42, CLI, ROG, Ipv4Addr::new(192, 0, 2, 66), 600),
        T0,
    );
    assert_eq!(kinds(&out), ["rogue_dhcp_server"]);
    let e = &out.events[0];
    assert_eq!(e.detail["mac"], "02:00:00:00:00:66");
    assert_eq!(e.detail["server_ip"], "192.0.2.66");
    assert_eq!(e.verdict, rampart_events::Verdict::Block);
    assert!(g.bindings().is_empty());
    // A flood of rogue frames is one event per window.
    let again = g.on_frame(
        "p_rog",
        &server(2, 43, CLI, ROG, Ipv4Addr::new(192, 0, 2, 66), 600),
        T0 + SEC,
    );
    assert!(again.events.is_empty());
}

#[test]
fn release_from_a_foreign_port_keeps_the_binding_own_port_removes_it() {
    let mut g = learned();
    let out = g.on_frame("p_rog", &client(7, 1, CLI, CLI), T0 + SEC);
    assert_eq!(kinds(&out), ["dhcp_release_foreign_port"]);
    assert_eq!(g.bindings().len(), 1);
    let out = g.on_frame("p_cli", &client(7, 1, CLI, CLI), T0 + 2 * SEC);
    assert_eq!(kinds(&out), ["dhcp_binding_removed"]);
    assert!(g.bindings().is_empty());
}

#[test]
fn release_with_client_address_from_a_foreign_port_is_dropped() {
    let mut g = learned();
    let msg = dhcp(
        1,
        7,
        5,
        CLI,
        LEASE_IP,
        Ipv4Addr::UNSPECIFIED,
        &[(54, GW_IP.octets().to_vec())],
    );
    let frame = udp4_frame(ROG, SRV, LEASE_IP, GW_IP, 68, 67, &msg);
    let out = g.on_frame("p_rog", &frame, T0 + SEC);
    assert_eq!(kinds(&out), ["dhcp_foreign_port_drop"]);
    assert_eq!(out.events[0].detail["bound_port"], "p_cli");
    assert_eq!(g.bindings().len(), 1);
    // The same release from the client's own port is honoured.
    let frame = udp4_frame(CLI, SRV, LEASE_IP, GW_IP, 68, 67, &msg);
    assert_eq!(
        kinds(&g.on_frame("p_cli", &frame, T0 + SEC)),
        ["dhcp_binding_removed"]
    );
}

#[test]
fn chaddr_spoofing_is_reported_and_not_learned() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    let out = g.on_frame("p_rog", &client(3, 9, CLI, ROG), T0);
    assert_eq!(kinds(&out), ["dhcp_chaddr_mismatch"]);
    let out = g.on_frame("p_srv", &server(5, 9, CLI, SRV, GW_IP, 600), T0);
    assert!(out.changes.is_empty());
}

#[test]
fn starvation_flood_trips_the_per_port_limit_once() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    let mut events = Vec::new();
    for i in 0..200u32 {
        let mac = Mac([2, 0, 0, 1, (i >> 8) as u8, i as u8]);
        events.extend(kinds(&g.on_frame("p_rog", &client(1, i, mac, mac), T0)));
    }
    assert_eq!(
        events,
        ["dhcp_rate_exceeded"],
        "burst 20 passes, then one event"
    );
    // Another port is unaffected.
    assert!(g
        .on_frame("p_cli", &client(1, 1, CLI, CLI), T0)
        .events
        .is_empty());
}

#[test]
fn gateway_spoof_is_dropped_and_bound_client_arp_passes() {
    let mut g = learned();
    let spoof = arp_frame(ROG, CLI, ARP_REPLY, ROG, GW_IP, CLI, LEASE_IP);
    let out = g.on_frame("p_rog", &spoof, T0 + SEC);
    assert_eq!(kinds(&out), ["arp_inspection_drop"]);
    assert_eq!(out.events[0].detail["bound_mac"], "02:00:00:00:00:01");
    assert_eq!(out.events[0].detail["mac"], "02:00:00:00:00:66");
    let legit = arp_frame(CLI, BROADCAST, ARP_REQUEST, CLI, LEASE_IP, Mac::ZERO, GW_IP);
    let out = g.on_frame("p_cli", &legit, T0 + SEC);
    assert_eq!(kinds(&out), ["new_station"]);
    // The same pair from the attacker's port is not the binding.
    let moved = arp_frame(CLI, BROADCAST, ARP_REQUEST, CLI, LEASE_IP, Mac::ZERO, GW_IP);
    assert_eq!(
        kinds(&g.on_frame("p_rog", &moved, T0 + SEC)),
        ["arp_inspection_drop"]
    );
}

#[test]
fn flip_flop_on_a_trusted_port_is_reported() {
    let mut g = learned();
    let a = arp_frame(SRV, BROADCAST, ARP_REQUEST, SRV, GW_IP, Mac::ZERO, LEASE_IP);
    let b = arp_frame(ROG, BROADCAST, ARP_REQUEST, ROG, GW_IP, Mac::ZERO, LEASE_IP);
    let mut seen = Vec::new();
    for (i, f) in [&a, &b, &a].iter().enumerate() {
        seen.extend(kinds(&g.on_frame("p_srv", f, T0 + i as u64 * SEC)));
    }
    assert_eq!(
        seen,
        ["new_station", "changed_ethernet_address", "flip_flop"]
    );
}

#[test]
fn answer_to_a_canary_name_names_the_poisoner() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    let queries = g.canary_round(&[11, 22, 33], T0);
    assert_eq!(queries.len(), 3);
    let q = queries
        .iter()
        .find(|q| q.protocol == NameProtocol::Llmnr)
        .unwrap();
    let mut answer = query(NameProtocol::Llmnr, &q.name, 7);
    answer[2] |= 0x80;
    answer[7] = 1;
    answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 192, 0, 2, 66]);
    let frame = udp4_frame(
        ROG,
        SRV,
        Ipv4Addr::new(192, 0, 2, 66),
        Ipv4Addr::new(192, 0, 2, 2),
        5355,
        40000,
        &answer,
    );
    let out = g.on_frame("p_rog", &frame, T0 + SEC);
    assert_eq!(kinds(&out), ["name_poisoner"]);
    let e = &out.events[0];
    assert_eq!(e.detail["mac"], "02:00:00:00:00:66");
    assert_eq!(e.detail["ip"], "192.0.2.66");
    assert_eq!(e.detail["name"], q.name.as_str());
    assert_eq!(e.techniques[0].0, "T1557.001");
    // An answer for a name the canary never asked is not evidence.
    let other = query(NameProtocol::Llmnr, "fileserver", 7);
    let mut other = other;
    other[2] |= 0x80;
    let frame = udp4_frame(
        SRV,
        ROG,
        GW_IP,
        Ipv4Addr::new(192, 0, 2, 2),
        5355,
        40000,
        &other,
    );
    assert!(g.on_frame("p_srv", &frame, T0 + SEC).events.is_empty());
}

#[test]
fn bindings_expire_on_tick() {
    let mut g = learned();
    assert!(g.tick(T0 + 599 * SEC).changes.is_empty());
    let out = g.tick(T0 + 600 * SEC);
    assert_eq!(kinds(&out), ["dhcp_binding_expired"]);
    assert!(g.bindings().is_empty());
}

#[test]
fn host_role_reports_gateway_spoof_only() {
    let cfg = Config::from_toml(
        "bindings_file = \"/x\"\nevents_file = \"/y\"\n[gateway]\nip = \"192.0.2.1\"\nmac = \"02:00:00:00:00:01\"\ninterface = \"eth0\"\n",
    )
    .unwrap();
    let mut g = Guard::new(cfg, BindingTable::new(4));
    let spoof = arp_frame(ROG, CLI, ARP_REPLY, ROG, GW_IP, CLI, LEASE_IP);
    let out = g.on_host_frame("eth0", &spoof, T0);
    assert_eq!(kinds(&out), ["gateway_arp_spoof"]);
    assert_eq!(out.events[0].detail["bound_mac"], "02:00:00:00:00:01");
    let real = arp_frame(SRV, CLI, ARP_REPLY, SRV, GW_IP, CLI, LEASE_IP);
    assert_eq!(kinds(&g.on_host_frame("eth0", &real, T0)), ["new_station"]);
    let other = arp_frame(
        ROG,
        BROADCAST,
        ARP_REQUEST,
        ROG,
        Ipv4Addr::new(192, 0, 2, 66),
        Mac::ZERO,
        LEASE_IP,
    );
    assert_eq!(kinds(&g.on_host_frame("eth0", &other, T0)), ["new_station"]);
}

#[test]
fn arp_flood_trips_the_per_port_arp_limit() {
    let mut g = learned();
    let req = arp_frame(CLI, BROADCAST, ARP_REQUEST, CLI, LEASE_IP, Mac::ZERO, GW_IP);
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen.extend(kinds(&g.on_frame("p_cli", &req, T0 + SEC)));
    }
    assert_eq!(
        seen,
        ["new_station", "arp_rate_exceeded"],
        "burst 30 passes, then one event"
    );
    // Trusted ports are not limited.
    let gw = arp_frame(SRV, BROADCAST, ARP_REQUEST, SRV, GW_IP, Mac::ZERO, LEASE_IP);
    let trusted: Vec<String> = (0..100)
        .flat_map(|_| kinds(&g.on_frame("p_srv", &gw, T0 + SEC)))
        .collect();
    assert_eq!(trusted, ["new_station"]);
}

#[test]
fn neighbour_advertisement_for_a_protected_address_is_dropped_on_untrusted_ports() {
    let cfg = Config::from_toml(
        "bridge = \"br0\"\ntrusted_ports = [\"p_srv\"]\nbindings_file = \"/x\"\nevents_file = \"/y\"\nprotected_ipv6 = [\"fe80::1\"]\n",
    )
    .unwrap();
    let mut g = Guard::new(cfg, BindingTable::new(4));
    let gw6: std::net::Ipv6Addr = "fe80::1".parse().unwrap();
    let rog6: std::net::Ipv6Addr = "fe80::66".parse().unwrap();
    let all: std::net::Ipv6Addr = "ff02::1".parse().unwrap();
    let spoof = rampart_guard::craft::neighbor_advertisement(
        ROG,
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        rog6,
        all,
        gw6,
        ROG,
    );
    let out = g.on_frame("p_rog", &spoof, T0);
    assert_eq!(kinds(&out), ["nd_spoof_drop"]);
    assert_eq!(out.events[0].detail["ip"], "fe80::1");
    // The real gateway on its trusted port, and NAs for other addresses, pass.
    let real = rampart_guard::craft::neighbor_advertisement(
        SRV,
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        gw6,
        all,
        gw6,
        SRV,
    );
    assert!(g.on_frame("p_srv", &real, T0).events.is_empty());
    let own = rampart_guard::craft::neighbor_advertisement(
        ROG,
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        rog6,
        all,
        rog6,
        ROG,
    );
    assert!(g.on_frame("p_rog", &own, T0).events.is_empty());
    // Sourcing packets from the protected address on an untrusted port is dropped too.
    let src_spoof = rampart_guard::craft::neighbor_advertisement(
        ROG,
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        gw6,
        all,
        rog6,
        ROG,
    );
    assert_eq!(
        kinds(&g.on_frame("p_rog", &src_spoof, T0)),
        ["nd_spoof_drop"]
    );
}
