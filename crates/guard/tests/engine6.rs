//! The guard's IPv6 first-hop security driven with crafted frames: DHCPv6 snooping (bindings
//! learned from a trusted REPLY for a request seen on a port, valid-lifetime expiry, releases,
//! malformed messages as anomalies), ND inspection against those bindings and static entries,
//! and RA guard by source MAC.

use std::net::Ipv6Addr;

use rampart_guard::craft::{
    dhcpv6, dhcpv6_ia_na, duid_ll, fragmented_router_advertisement, neighbor_advertisement,
    neighbor_solicitation, router_advertisement, udp6_frame,
};
use rampart_guard::decode::{dhcpv6_type as t, Mac};
use rampart_guard::{BindingTable, Change, Config, Guard};

const SRV: Mac = Mac([2, 0, 0, 0, 0, 0x01]);
const CLI: Mac = Mac([2, 0, 0, 0, 0, 0x0c]);
const ROG: Mac = Mac([2, 0, 0, 0, 0, 0x66]);
const RTR: Mac = Mac([2, 0, 0, 0, 0, 0x77]);
const T0: u64 = 1_800_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const XID: u32 = 0x00ab_cdef;

fn lease() -> Ipv6Addr {
    "2001:db8:1::100".parse().unwrap()
}
fn ll(last: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, last)
}
fn all_nodes() -> Ipv6Addr {
    "ff02::1".parse().unwrap()
}
const ALL_NODES_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 1]);

fn config() -> Config {
    Config::from_toml(
        r#"
bridge = "br0"
trusted_ports = ["p_srv"]
untrusted_ports = ["p_cli", "p_rog"]
bindings_file = "/nonexistent/b"
events_file = "/nonexistent/e"
[[static_nd]]
ip = "fe80::1"
mac = "02:00:00:00:00:01"
port = "p_srv"
[[trusted_router]]
mac = "02:00:00:00:00:77"
port = "p_rog"
"#,
    )
    .unwrap()
}

fn kinds(out: &rampart_guard::Output) -> Vec<String> {
    out.events
        .iter()
        .map(|e| e.detail["kind"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A client message from `CLI`'s link-local address to All_DHCP_Relay_Agents_and_Servers.
fn client6(kind: u8, xid: u32, eth: Mac, addresses: &[(Ipv6Addr, u32, u32)]) -> Vec<u8> {
    let mut options = vec![(1u16, duid_ll(CLI))];
    if !addresses.is_empty() {
        options.push((3, dhcpv6_ia_na(1, 0, 0, addresses)));
    }
    udp6_frame(
        eth,
        Mac([0x33, 0x33, 0, 1, 0, 2]),
        ll(0xc),
        "ff02::1:2".parse().unwrap(),
        546,
        547,
        &dhcpv6(kind, xid, &options),
    )
}

fn reply6(xid: u32, valid_s: u32) -> Vec<u8> {
    let msg = dhcpv6(
        t::REPLY,
        xid,
        &[
            (1, duid_ll(CLI)),
            (2, duid_ll(SRV)),
            (
                3,
                dhcpv6_ia_na(1, 900, 1440, &[(lease(), valid_s / 2, valid_s)]),
            ),
        ],
    );
    udp6_frame(SRV, CLI, ll(1), ll(0xc), 547, 546, &msg)
}

fn learned() -> Guard {
    let mut g = Guard::new(config(), BindingTable::new(16));
    let out = g.on_frame("p_cli", &client6(t::REQUEST, XID, CLI, &[]), T0);
    assert!(out.events.is_empty(), "{:?}", kinds(&out));
    let out = g.on_frame("p_srv", &reply6(XID, 3600), T0 + SEC / 10);
    assert_eq!(kinds(&out), ["dhcpv6_binding_added"]);
    assert!(
        matches!(&out.changes[..], [Change::Bind6 { new, old: None }]
        if new.ip == lease() && new.mac == CLI && new.port == "p_cli")
    );
    let e = &out.events[0];
    assert_eq!(e.detail["ip"], "2001:db8:1::100");
    assert_eq!(e.detail["duid"], "00030001".to_string() + "02000000000c");
    assert_eq!(e.detail["expires_unix_s"], T0 / SEC + 3600);
    g
}

#[test]
fn trusted_reply_to_a_seen_request_learns_the_binding() {
    let g = learned();
    assert_eq!(g.bindings().v6().len(), 1);
}

#[test]
fn reply_from_an_untrusted_port_or_without_request_is_not_learned() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    // No request seen: a REPLY from the trusted server binds nothing.
    let out = g.on_frame("p_srv", &reply6(XID, 3600), T0);
    assert!(out.changes.is_empty());
    // A request, then the rogue's REPLY: dropped by the kernel, an event, never learned.
    g.on_frame("p_cli", &client6(t::SOLICIT, XID, CLI, &[]), T0);
    let mut rogue = reply6(XID, 3600);
    rogue[6..12].copy_from_slice(&ROG.0);
    let out = g.on_frame("p_rog", &rogue, T0 + 1);
    assert_eq!(kinds(&out), ["rogue_dhcpv6_server"]);
    assert!(out.changes.is_empty());
    // Another transaction id: not an answer to the pending request.
    let out = g.on_frame("p_srv", &reply6(XID + 1, 3600), T0 + 2);
    assert!(out.changes.is_empty());
}

#[test]
fn spoofed_na_for_a_bound_address_is_dropped_with_an_event_and_legit_nd_passes() {
    let mut g = learned();
    let now = T0 + SEC;
    // The rogue claims the client's address (unsolicited, override).
    let na = neighbor_advertisement(ROG, ALL_NODES_MAC, ll(0x66), all_nodes(), lease(), ROG);
    let out = g.on_frame("p_rog", &na, now);
    assert_eq!(kinds(&out), ["nd_inspection_drop"]);
    let e = &out.events[0];
    assert_eq!(e.techniques[0].0, "T1557");
    assert_eq!(e.verdict, rampart_events::Verdict::Block);
    assert_eq!(e.detail["ip"], "2001:db8:1::100");
    assert_eq!(e.detail["field"], "target");
    assert_eq!(e.detail["nd_type"], "neighbor_advertisement");
    assert_eq!(e.detail["bound_mac"], CLI.to_string());
    assert_eq!(e.detail["bound_port"], "p_cli");
    // Even with the client's MAC forged as Ethernet source, the port gives it away.
    let forged = neighbor_advertisement(CLI, ALL_NODES_MAC, ll(0x66), all_nodes(), lease(), CLI);
    assert_eq!(
        kinds(&g.on_frame("p_rog", &forged, now)),
        ["nd_inspection_drop"]
    );
    // A solicitation sourced from the client's address, and a DAD probe for it.
    let ns = neighbor_solicitation(ROG, ALL_NODES_MAC, lease(), ll(1), ll(1), Some(ROG));
    let out = g.on_frame("p_rog", &ns, now + 11 * SEC);
    assert_eq!(out.events[0].detail["field"], "source");
    let dad = neighbor_solicitation(
        ROG,
        ALL_NODES_MAC,
        Ipv6Addr::UNSPECIFIED,
        all_nodes(),
        lease(),
        None,
    );
    let out = g.on_frame("p_rog", &dad, now + 25 * SEC);
    assert_eq!(out.events[0].detail["field"], "dad_target");
    // Legitimate ND: the owner answering for itself, the rogue for its own unbound address,
    // anyone soliciting the client's address.
    let own = neighbor_advertisement(CLI, SRV, lease(), ll(1), lease(), CLI);
    assert!(g.on_frame("p_cli", &own, now).events.is_empty());
    let rogue_own = neighbor_advertisement(ROG, SRV, ll(0x66), ll(1), ll(0x66), ROG);
    assert!(g.on_frame("p_rog", &rogue_own, now).events.is_empty());
    let ask = neighbor_solicitation(
        ROG,
        ALL_NODES_MAC,
        ll(0x66),
        all_nodes(),
        lease(),
        Some(ROG),
    );
    assert!(g.on_frame("p_rog", &ask, now).events.is_empty());
    // The gateway's link-local address is a static entry: claimed from p_rog, dropped.
    let gw = neighbor_advertisement(ROG, ALL_NODES_MAC, ll(0x66), all_nodes(), ll(1), ROG);
    let out = g.on_frame("p_rog", &gw, now);
    assert_eq!(out.events[0].detail["bound_port"], "p_srv");
}

#[test]
fn valid_lifetime_expires_on_tick_and_zero_lifetime_unbinds() {
    let mut g = learned();
    let out = g.tick(T0 + 3601 * SEC);
    assert_eq!(kinds(&out), ["dhcpv6_binding_expired"]);
    assert!(matches!(&out.changes[..], [Change::Unbind6(b)] if b.ip == lease()));
    // After expiry, the address is free: a NA for it is no longer inspected.
    let na = neighbor_advertisement(ROG, ALL_NODES_MAC, ll(0x66), all_nodes(), lease(), ROG);
    assert!(g.on_frame("p_rog", &na, T0 + 3602 * SEC).events.is_empty());

    let mut g = learned();
    g.on_frame(
        "p_cli",
        &client6(t::RENEW, XID + 1, CLI, &[(lease(), 0, 0)]),
        T0 + SEC,
    );
    let out = g.on_frame("p_srv", &reply6(XID + 1, 0), T0 + SEC);
    assert_eq!(kinds(&out), ["dhcpv6_binding_removed"]);
}

#[test]
fn release_only_from_the_owner_port_removes_the_binding() {
    let mut g = learned();
    // The client's DUID from the attacker's MAC: someone else's identity.
    let spoofed = client6(t::RELEASE, 9, ROG, &[(lease(), 0, 0)]);
    let out = g.on_frame("p_rog", &spoofed, T0 + SEC);
    assert_eq!(kinds(&out), ["dhcpv6_duid_mismatch"]);
    assert_eq!(g.bindings().v6().len(), 1);
    // With the client's MAC forged as well, the port gives it away.
    let forged = client6(t::RELEASE, 9, CLI, &[(lease(), 0, 0)]);
    let out = g.on_frame("p_rog", &forged, T0 + SEC);
    assert_eq!(kinds(&out), ["dhcpv6_release_foreign_port"]);
    assert_eq!(out.events[0].detail["bound_port"], "p_cli");
    assert_eq!(g.bindings().v6().len(), 1);
    let own = client6(t::RELEASE, 10, CLI, &[(lease(), 0, 0)]);
    let out = g.on_frame("p_cli", &own, T0 + 2 * SEC);
    assert_eq!(kinds(&out), ["dhcpv6_binding_removed"]);
    assert!(g.bindings().v6().is_empty());
}

#[test]
fn a_request_with_another_clients_duid_is_reported_and_not_learned() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    // The attacker replays the client's DUID-LL from its own MAC and port.
    let out = g.on_frame("p_rog", &client6(t::REQUEST, XID, ROG, &[]), T0);
    assert_eq!(kinds(&out), ["dhcpv6_duid_mismatch"]);
    assert_eq!(out.events[0].detail["client_mac"], CLI.to_string());
    // The server's REPLY to it binds nothing (no pending request was recorded).
    let out = g.on_frame("p_srv", &reply6(XID, 3600), T0 + SEC / 10);
    assert!(out.changes.is_empty(), "{:?}", kinds(&out));
}

#[test]
fn malformed_dhcpv6_is_a_counted_anomaly_not_learned() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    g.on_frame("p_cli", &client6(t::REQUEST, XID, CLI, &[]), T0);
    let mut bad = dhcpv6(t::REPLY, XID, &[(1, duid_ll(CLI))]);
    // An IA_NA whose length runs past the message.
    bad.extend_from_slice(&[0, 3, 0x10, 0, 0, 0, 0, 1]);
    let frame = udp6_frame(SRV, CLI, ll(1), ll(0xc), 547, 546, &bad);
    let out = g.on_frame("p_srv", &frame, T0 + 1);
    assert_eq!(kinds(&out), ["dhcpv6_malformed"]);
    assert_eq!(
        out.events[0].detail["anomaly"],
        "option 3 runs past its container"
    );
    assert!(out.changes.is_empty());
    // Repeats are de-duplicated as events but all counted.
    let out = g.on_frame("p_srv", &frame, T0 + 2);
    assert!(out.events.is_empty());
    assert_eq!(g.malformed_dhcpv6(), 2);
}

#[test]
fn router_advertisements_pass_by_trusted_mac_on_its_port_only() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    let from_rtr = router_advertisement(RTR, ll(0x77));
    assert!(g.on_frame("p_rog", &from_rtr, T0).events.is_empty());
    // The same MAC on another untrusted port, and another MAC on the router's port: rogue.
    assert_eq!(
        kinds(&g.on_frame("p_cli", &from_rtr, T0)),
        ["rogue_router_advertisement"]
    );
    let rogue = router_advertisement(ROG, ll(0x66));
    assert_eq!(
        kinds(&g.on_frame("p_rog", &rogue, T0)),
        ["rogue_router_advertisement"]
    );
}

#[test]
fn dhcpv6_client_flood_trips_the_per_port_limit() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    let mut limited = 0;
    for i in 0..100u32 {
        let out = g.on_frame(
            "p_cli",
            &client6(t::SOLICIT, i, CLI, &[]),
            T0 + u64::from(i) * 1_000_000,
        );
        limited += kinds(&out)
            .iter()
            .filter(|k| *k == "dhcp_rate_exceeded")
            .count();
    }
    assert_eq!(limited, 1, "one event per window");
}

#[test]
fn ipv6_source_guard_drops_any_packet_from_a_bound_address_elsewhere_when_enabled() {
    let udp_from = |mac: Mac, src: Ipv6Addr| {
        udp6_frame(
            mac,
            SRV,
            src,
            "2001:db8:1::1".parse().unwrap(),
            40_000,
            9,
            b"x",
        )
    };
    // Off (the default): a spoofed UDP source is not the guard's business.
    let mut g = learned();
    assert!(g
        .on_frame("p_rog", &udp_from(ROG, lease()), T0 + SEC)
        .events
        .is_empty());
    // On: dropped with an event; the owner and unbound sources pass.
    let mut cfg = config();
    cfg.ipv6_source_guard = true;
    g.reconfigure(cfg);
    let out = g.on_frame("p_rog", &udp_from(ROG, lease()), T0 + SEC);
    assert_eq!(kinds(&out), ["ipv6_source_guard_drop"]);
    assert_eq!(out.events[0].detail["bound_port"], "p_cli");
    assert!(g
        .on_frame("p_cli", &udp_from(CLI, lease()), T0 + SEC)
        .events
        .is_empty());
    assert!(g
        .on_frame("p_rog", &udp_from(ROG, ll(0x66)), T0 + SEC)
        .events
        .is_empty());
}

#[test]
fn fragmented_ra_with_the_icmpv6_header_in_the_second_fragment_is_dropped() {
    let mut g = Guard::new(config(), BindingTable::new(16));
    let [first, second] = fragmented_router_advertisement(ROG, ll(0x66), 7);
    let out = g.on_frame("p_rog", &first, T0);
    assert_eq!(kinds(&out), ["fragmented_header_chain_drop"]);
    assert_eq!(out.events[0].detail["next_header"], 60);
    // The second fragment carries the same fragment header (next header 60): dropped too,
    // one event per window.
    assert!(g.on_frame("p_rog", &second, T0 + 1).events.is_empty());
    // From a trusted port: not inspected.
    assert!(g.on_frame("p_srv", &first, T0).events.is_empty());
}
