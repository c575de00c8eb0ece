//! The nftables text the guard owns, emitted by pure functions: the bridge-family table
//! (`table bridge rampart_guard`) with the DHCP/RA guard, the per-port DHCP rate limit, the
//! DAI chain and its sets, ND inspection and its sets; the arp-family host table pinning the gateway; set-element updates
//! that mirror binding-table changes; and the teardown.
//!
//! Why prerouting at priority -200: it runs once per frame with the ingress port as `iifname`
//! (bridge `forward` runs once per egress port, so a rate limit there counts floods twice).
//! Bridge tables on the target kernel have no conntrack and no `reject`, so every verdict is
//! `drop`.

use std::fmt::Write as _;

use crate::bindings::{Binding, BindingTable, Change};
use crate::bindings6::Binding6;
use crate::config::Config;
use crate::decode::NameProtocol;

fn quoted_set<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<String> = items.map(|s| format!("\"{s}\"")).collect();
    v.join(", ")
}

/// A MAC as the 48-bit number the raw-payload sets hold.
fn mac_number(m: &crate::decode::Mac) -> String {
    let v = m.0.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
    format!("0x{v:012x}")
}

fn remaining(b: &Binding, now_s: u64) -> Option<u64> {
    b.expires_s.checked_sub(now_s).filter(|s| *s > 0)
}

fn mac_element(b: &Binding, now_s: u64) -> Option<String> {
    remaining(b, now_s).map(|left| format!("{} timeout {left}s", mac_number(&b.mac)))
}

fn owner_element(b: &Binding, now_s: u64) -> Option<String> {
    remaining(b, now_s)
        .map(|left| format!("\"{}\" . {} timeout {left}s", b.port, mac_number(&b.mac)))
}

/// An IPv6 address as the 128-bit number the raw-payload sets hold (nft 1.0.6 has no
/// `icmpv6 taddr`, so the NA/NS target is matched as `@th,64,128`).
fn addr_number(a: &std::net::Ipv6Addr) -> String {
    format!("0x{:032x}", u128::from(*a))
}

fn remaining6(b: &Binding6, now_s: u64) -> Option<u64> {
    b.expires_s.checked_sub(now_s).filter(|s| *s > 0)
}

/// The `nd6_owner` key of a binding: port . MAC . address.
fn owner6_key(port: &str, mac: &crate::decode::Mac, ip: &std::net::Ipv6Addr) -> String {
    format!("\"{port}\" . {mac} . {}", addr_number(ip))
}

fn static_nd_has_ip(cfg: &Config, ip: &std::net::Ipv6Addr) -> bool {
    cfg.static_nd.iter().any(|e| e.ip == *ip)
}

fn static_nd_has_owner(cfg: &Config, b: &Binding6) -> bool {
    cfg.static_nd
        .iter()
        .any(|e| e.ip == b.ip && e.mac == b.mac && e.port.as_deref() == Some(b.port.as_str()))
}

fn elements(v: &[String]) -> String {
    if v.is_empty() {
        String::new()
    } else {
        format!("\n\t\telements = {{ {} }}", v.join(",\n\t\t\t     "))
    }
}

fn binding_element(b: &Binding, now_s: u64) -> Option<String> {
    let left = b.expires_s.checked_sub(now_s).filter(|s| *s > 0)?;
    Some(format!(
        "\"{}\" . {} . {} timeout {}s",
        b.port, b.mac, b.ip, left
    ))
}

/// The bridge table, complete, as one `nft -f` transaction that replaces any previous copy
/// (declare, delete, re-create: nft 1.0.6 has no `destroy`). `None` without a bridge.
pub fn bridge_table(cfg: &Config, bindings: &BindingTable, now_s: u64) -> Option<String> {
    cfg.bridge.as_ref()?;
    let t = &cfg.table;
    let mut s = String::new();
    let _ = writeln!(s, "table bridge {t} {{\n}}\ndelete table bridge {t}");
    let _ = writeln!(s, "table bridge {t} {{");
    let _ = writeln!(
        s,
        "\tcomment \"rampart guard: DHCP snooping, RA guard, dynamic ARP inspection\""
    );
    let trusted = if cfg.trusted_ports.is_empty() {
        String::new()
    } else {
        format!(
            "\n\t\telements = {{ {} }}",
            quoted_set(cfg.trusted_ports.iter())
        )
    };
    let _ = writeln!(s, "\tset trusted_ports {{\n\t\ttype ifname{trusted}\n\t}}");
    let portless: Vec<String> = cfg
        .static_arp
        .iter()
        .filter(|e| e.port.is_none())
        .map(|e| format!("{} . {}", e.mac, e.ip))
        .collect();
    let portless = if portless.is_empty() {
        String::new()
    } else {
        format!("\n\t\telements = {{ {} }}", portless.join(", "))
    };
    let _ = writeln!(
        s,
        "\tset dai_static {{\n\t\ttype ether_addr . ipv4_addr{portless}\n\t}}"
    );
    let mut per_port: Vec<String> = cfg
        .static_arp
        .iter()
        .filter_map(|e| {
            e.port
                .as_ref()
                .map(|p| format!("\"{p}\" . {} . {}", e.mac, e.ip))
        })
        .collect();
    per_port.extend(bindings.iter().filter_map(|b| binding_element(b, now_s)));
    let per_port = if per_port.is_empty() {
        String::new()
    } else {
        format!("\n\t\telements = {{ {} }}", per_port.join(",\n\t\t\t     "))
    };
    let _ = writeln!(
        s,
        "\tset dai_bindings {{\n\t\ttype ifname . ether_addr . ipv4_addr\n\t\tflags timeout{per_port}\n\t}}"
    );
    // chaddr (`@th,288,48`: UDP header 8 bytes + BOOTP offset 28) of every bound client, and
    // the port it is bound on: client messages with a client address set (RELEASE, RENEW,
    // REBIND, INFORM) for a MAC bound elsewhere are dropped.
    let macs: Vec<String> = bindings
        .iter()
        .filter_map(|b| mac_element(b, now_s))
        .collect();
    let owners: Vec<String> = bindings
        .iter()
        .filter_map(|b| owner_element(b, now_s))
        .collect();
    for (set, typ, elements) in [
        ("dhcp_bound", "@th,288,48", macs),
        ("dhcp_owner", "iifname . @th,288,48", owners),
    ] {
        let elements = if elements.is_empty() {
            String::new()
        } else {
            format!("\n\t\telements = {{ {} }}", elements.join(",\n\t\t\t     "))
        };
        let _ = writeln!(
            s,
            "\tset {set} {{\n\t\ttypeof {typ}\n\t\tflags timeout{elements}\n\t}}"
        );
    }
    let protected = if cfg.protected_ipv6.is_empty() {
        String::new()
    } else {
        let v: Vec<String> = cfg.protected_ipv6.iter().map(|a| a.to_string()).collect();
        format!("\n\t\telements = {{ {} }}", v.join(", "))
    };
    let _ = writeln!(
        s,
        "\tset nd_protected {{\n\t\ttypeof ip6 saddr{protected}\n\t}}"
    );
    // The same addresses as 128-bit numbers: nft 1.0.6 has no `icmpv6 taddr`, and a raw
    // payload lookup needs an integer-typed set.
    let targets = if cfg.protected_ipv6.is_empty() {
        String::new()
    } else {
        let v: Vec<String> = cfg
            .protected_ipv6
            .iter()
            .map(|a| format!("0x{:032x}", u128::from(*a)))
            .collect();
        format!("\n\t\telements = {{ {} }}", v.join(", "))
    };
    let _ = writeln!(
        s,
        "\tset nd_targets {{\n\t\ttypeof @th,64,128{targets}\n\t}}"
    );
    // ND inspection: every bound address (static entries permanent, DHCPv6 bindings with
    // their remaining valid lifetime), its owners on a port, and port-less static owners.
    let mut bound6: Vec<String> = Vec::new();
    let mut seen6 = std::collections::BTreeSet::new();
    for e in &cfg.static_nd {
        if seen6.insert(e.ip) {
            bound6.push(addr_number(&e.ip));
        }
    }
    let mut owners6: Vec<String> = cfg
        .static_nd
        .iter()
        .filter_map(|e| e.port.as_ref().map(|p| owner6_key(p, &e.mac, &e.ip)))
        .collect();
    for b in bindings.v6().iter() {
        let Some(left) = remaining6(b, now_s) else {
            continue;
        };
        if seen6.insert(b.ip) {
            bound6.push(format!("{} timeout {left}s", addr_number(&b.ip)));
        }
        if !static_nd_has_owner(cfg, b) {
            owners6.push(format!(
                "{} timeout {left}s",
                owner6_key(&b.port, &b.mac, &b.ip)
            ));
        }
    }
    let portless6: Vec<String> = cfg
        .static_nd
        .iter()
        .filter(|e| e.port.is_none())
        .map(|e| format!("{} . {}", e.mac, addr_number(&e.ip)))
        .collect();
    for (set, typ, flags, els) in [
        ("nd6_bound", "@th,64,128", "\n\t\tflags timeout", bound6),
        (
            "nd6_owner",
            "iifname . ether saddr . @th,64,128",
            "\n\t\tflags timeout",
            owners6,
        ),
        ("nd6_static", "ether saddr . @th,64,128", "", portless6),
    ] {
        let _ = writeln!(
            s,
            "\tset {set} {{\n\t\ttypeof {typ}{flags}{}\n\t}}",
            elements(&els)
        );
    }
    // RA guard by source MAC: routers allowed on untrusted ports (any port, or their own).
    let ra_any: Vec<String> = cfg
        .trusted_routers
        .iter()
        .filter(|r| r.port.is_none())
        .map(|r| r.mac.to_string())
        .collect();
    let ra_port: Vec<String> = cfg
        .trusted_routers
        .iter()
        .filter_map(|r| r.port.as_ref().map(|p| format!("\"{p}\" . {}", r.mac)))
        .collect();
    let _ = writeln!(
        s,
        "\tset ra_sources_any {{\n\t\ttype ether_addr{}\n\t}}",
        elements(&ra_any)
    );
    let _ = writeln!(
        s,
        "\tset ra_sources {{\n\t\ttype ifname . ether_addr{}\n\t}}",
        elements(&ra_port)
    );
    for set in ["dhcp_rate", "dhcp6_rate", "arp_rate"] {
        let _ = writeln!(
            s,
            "\tset {set} {{\n\t\ttype ifname\n\t\tflags dynamic,timeout\n\t\ttimeout 1m\n\t}}"
        );
    }
    let rl = cfg.rate_limit;
    let untrusted = "iifname != @trusted_ports";
    let _ = writeln!(
        s,
        "\tchain prerouting {{\n\t\ttype filter hook prerouting priority -200; policy accept;"
    );
    let source_guard = if cfg.ipv6_source_guard {
        format!("\n\t\t{untrusted} ether type ip6 @nh,64,128 @nd6_bound iifname . ether saddr . @nh,64,128 != @nd6_owner ether saddr . @nh,64,128 != @nd6_static counter drop comment \"IPv6 source guard: source bound elsewhere\"")
    } else {
        String::new()
    };
    let rules = [
        format!("{untrusted} ether type {{ 8021q, 8021ad }} counter drop comment \"tagged frame on an untrusted port\""),
        // A fragmentable part starting with an extension header can push the ICMPv6 header
        // out of the first fragment, past `icmpv6 type` (RA guard evasion, RFC 7113).
        format!("{untrusted} ether type ip6 frag nexthdr {{ 0, 43, 44, 60 }} counter drop comment \"IPv6 fragment followed by an extension header on an untrusted port\""),
        format!("{untrusted} ether type ip udp sport 67 counter drop comment \"DHCP server message on an untrusted port\""),
        format!("{untrusted} ether type ip6 udp sport 547 counter drop comment \"DHCPv6 server message on an untrusted port\""),
        format!("{untrusted} ether type ip6 icmpv6 type nd-router-advert ether saddr != @ra_sources_any iifname . ether saddr != @ra_sources counter drop comment \"router advertisement on an untrusted port\""),
        // The NA target sits at ICMPv6 offset 8 (`@th,64,128`); a spoofed advertisement or
        // any packet sourced from a protected address is dropped.
        format!("{untrusted} ether type ip6 icmpv6 type nd-neighbor-advert @th,64,128 @nd_targets counter drop comment \"neighbour advertisement for a protected IPv6 address on an untrusted port\""),
        format!("{untrusted} ether type ip6 ip6 saddr @nd_protected counter drop comment \"protected IPv6 source on an untrusted port\""),
        // ND inspection (the IPv6 analogue of DAI): an address in nd6_bound may be claimed only
        // by one of its owners: as NA target, as DAD probe target (NS from ::), or as the
        // source of RS/NS/NA (`@nh,64,128` is the IPv6 source as a number, to share the sets).
        format!("{untrusted} ether type ip6 icmpv6 type nd-neighbor-advert @th,64,128 @nd6_bound iifname . ether saddr . @th,64,128 != @nd6_owner ether saddr . @th,64,128 != @nd6_static counter drop comment \"ND inspection: neighbour advertisement for an address bound elsewhere\""),
        format!("{untrusted} ether type ip6 icmpv6 type nd-neighbor-solicit ip6 saddr :: @th,64,128 @nd6_bound iifname . ether saddr . @th,64,128 != @nd6_owner ether saddr . @th,64,128 != @nd6_static counter drop comment \"ND inspection: DAD probe for an address bound elsewhere\""),
        format!("{untrusted} ether type ip6 icmpv6 type {{ nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert }} @nh,64,128 @nd6_bound iifname . ether saddr . @nh,64,128 != @nd6_owner ether saddr . @nh,64,128 != @nd6_static counter drop comment \"ND inspection: ND from an address bound elsewhere\"{source_guard}"),
        format!("{untrusted} ether type ip udp sport 68 udp dport 67 @th,160,32 != 0 @th,288,48 @dhcp_bound iifname . @th,288,48 != @dhcp_owner counter drop comment \"DHCP release/renew for a MAC bound to another port\""),
        format!("{untrusted} ether type ip udp sport 68 udp dport 67 update @dhcp_rate {{ iifname limit rate over {}/second burst {} packets }} counter drop comment \"DHCP client rate limit\"", rl.per_second, rl.burst),
        format!("{untrusted} ether type ip6 udp sport 546 udp dport 547 update @dhcp6_rate {{ iifname limit rate over {}/second burst {} packets }} counter drop comment \"DHCPv6 client rate limit\"", rl.per_second, rl.burst),
        format!("{untrusted} ether type arp jump dai"),
    ];
    for r in rules {
        let _ = writeln!(s, "\t\t{r}");
    }
    for p in &cfg.block {
        let port = p.port();
        let ports = if *p == NameProtocol::Nbns {
            "{ 137, 138 }".to_string()
        } else {
            port.to_string()
        };
        for fam in ["ip", "ip6"] {
            if *p == NameProtocol::Nbns && fam == "ip6" {
                continue; // NetBIOS has no IPv6 transport.
            }
            let _ = writeln!(
                s,
                "\t\tether type {fam} udp dport {ports} counter drop comment \"{} blocked\"",
                p.name()
            );
            let _ = writeln!(
                s,
                "\t\tether type {fam} udp sport {ports} counter drop comment \"{} blocked\"",
                p.name()
            );
        }
    }
    let _ = writeln!(s, "\t}}");
    // Client messages go only towards trusted ports (Cisco semantics): a rogue server on an
    // untrusted port never even sees the DISCOVER it would answer, and clients do not learn
    // each other's requests.
    let _ = writeln!(
        s,
        "\tchain forward {{\n\t\ttype filter hook forward priority -200; policy accept;"
    );
    let _ = writeln!(s, "\t\toifname != @trusted_ports ether type ip udp sport 68 udp dport 67 counter drop comment \"DHCP client message towards an untrusted port\"");
    let _ = writeln!(s, "\t\toifname != @trusted_ports ether type ip6 udp sport 546 udp dport 547 counter drop comment \"DHCPv6 client message towards an untrusted port\"");
    let _ = writeln!(s, "\t}}");
    let _ = writeln!(s, "\tchain dai {{");
    let arl = cfg.arp_rate_limit;
    let _ = writeln!(
        s,
        "\t\tupdate @arp_rate {{ iifname limit rate over {}/second burst {} packets }} counter drop comment \"ARP rate limit\"",
        arl.per_second, arl.burst
    );
    for r in [
        "arp saddr ip 0.0.0.0 return comment \"RFC 5227 probe\"",
        "ether saddr . arp saddr ip @dai_static arp saddr ether . arp saddr ip @dai_static return",
        "iifname . ether saddr . arp saddr ip @dai_bindings iifname . arp saddr ether . arp saddr ip @dai_bindings return",
        "counter drop comment \"ARP sender not bound to this port\"",
    ] {
        let _ = writeln!(s, "\t\t{r}");
    }
    let _ = writeln!(s, "\t}}\n}}");
    Some(s)
}

/// Element updates mirroring `changes` into `dai_bindings`, as one transaction. A renewal is
/// `add` (no error if present) + `delete` + `add` with the new timeout, because `add` of an
/// existing element does not refresh its timeout. `None` when there is nothing to do.
pub fn binding_updates(cfg: &Config, changes: &[Change], now_s: u64) -> Option<String> {
    cfg.bridge.as_ref()?;
    let t = &cfg.table;
    let mut s = String::new();
    let key = |b: &Binding| format!("\"{}\" . {} . {}", b.port, b.mac, b.ip);
    // The chaddr sets: replace (add, delete, add with timeout) or remove, like dai_bindings.
    let owner = |s: &mut String, b: &Binding, add: bool| {
        let keys = [
            ("dhcp_bound", mac_number(&b.mac), mac_element(b, now_s)),
            (
                "dhcp_owner",
                format!("\"{}\" . {}", b.port, mac_number(&b.mac)),
                owner_element(b, now_s),
            ),
        ];
        for (set, k, el) in keys {
            let _ = writeln!(s, "add element bridge {t} {set} {{ {k} }}");
            let _ = writeln!(s, "delete element bridge {t} {set} {{ {k} }}");
            if let (true, Some(el)) = (add, el) {
                let _ = writeln!(s, "add element bridge {t} {set} {{ {el} }}");
            }
        }
    };
    // The ND inspection sets: replace or remove, leaving static entries' elements alone.
    let nd6 = |s: &mut String, b: &Binding6, add: bool| {
        let left = remaining6(b, now_s).filter(|_| add);
        if !static_nd_has_ip(cfg, &b.ip) {
            let k = addr_number(&b.ip);
            let _ = writeln!(s, "add element bridge {t} nd6_bound {{ {k} }}");
            let _ = writeln!(s, "delete element bridge {t} nd6_bound {{ {k} }}");
            if let Some(left) = left {
                let _ = writeln!(
                    s,
                    "add element bridge {t} nd6_bound {{ {k} timeout {left}s }}"
                );
            }
        }
        if !static_nd_has_owner(cfg, b) {
            let k = owner6_key(&b.port, &b.mac, &b.ip);
            let _ = writeln!(s, "add element bridge {t} nd6_owner {{ {k} }}");
            let _ = writeln!(s, "delete element bridge {t} nd6_owner {{ {k} }}");
            if let Some(left) = left {
                let _ = writeln!(
                    s,
                    "add element bridge {t} nd6_owner {{ {k} timeout {left}s }}"
                );
            }
        }
    };
    for c in changes {
        match c {
            Change::Bind { new, old } => {
                if let Some(old) = old {
                    owner(&mut s, old, false);
                }
                owner(&mut s, new, true);
            }
            Change::Unbind(b) => owner(&mut s, b, false),
            Change::Bind6 { new, old } => {
                // The old owner of the address goes first (its nd6_bound element is re-added
                // with the new timeout right after).
                if let Some(old) = old {
                    nd6(&mut s, old, false);
                }
                nd6(&mut s, new, true);
            }
            Change::Unbind6(b) => nd6(&mut s, b, false),
        }
    }
    for c in changes {
        match c {
            Change::Bind { new, old } => {
                if let Some(old) = old {
                    if key(old) != key(new) {
                        let _ =
                            writeln!(s, "add element bridge {t} dai_bindings {{ {} }}", key(old));
                        let _ = writeln!(
                            s,
                            "delete element bridge {t} dai_bindings {{ {} }}",
                            key(old)
                        );
                    }
                }
                if let Some(el) = binding_element(new, now_s) {
                    let _ = writeln!(s, "add element bridge {t} dai_bindings {{ {} }}", key(new));
                    let _ = writeln!(
                        s,
                        "delete element bridge {t} dai_bindings {{ {} }}",
                        key(new)
                    );
                    let _ = writeln!(s, "add element bridge {t} dai_bindings {{ {el} }}");
                }
            }
            Change::Bind6 { .. } | Change::Unbind6(_) => {}
            Change::Unbind(b) => {
                // A port-bound static entry with the same key must survive an unbind.
                let is_static = cfg
                    .static_arp
                    .iter()
                    .any(|e| e.port.as_deref() == Some(&b.port) && e.mac == b.mac && e.ip == b.ip);
                if !is_static {
                    let _ = writeln!(s, "add element bridge {t} dai_bindings {{ {} }}", key(b));
                    let _ = writeln!(s, "delete element bridge {t} dai_bindings {{ {} }}", key(b));
                }
            }
        }
    }
    (!s.is_empty()).then_some(s)
}

/// Host role: an arp-family table dropping ARP that claims the gateway's IP with another MAC
/// (both the Ethernet-level sender address and the ARP sender must be the pinned MAC).
/// `None` without `[gateway]`.
pub fn host_table(cfg: &Config) -> Option<String> {
    let g = cfg.gateway.as_ref()?;
    let t = format!("{}_host", cfg.table);
    let mut s = String::new();
    let _ = writeln!(s, "table arp {t} {{\n}}\ndelete table arp {t}");
    let _ = writeln!(s, "table arp {t} {{");
    let _ = writeln!(s, "\tcomment \"rampart guard: gateway ARP pin\"");
    let _ = writeln!(
        s,
        "\tset pinned {{\n\t\ttype ether_addr . ipv4_addr\n\t\telements = {{ {} . {} }}\n\t}}",
        g.mac, g.ip
    );
    let _ = writeln!(
        s,
        "\tset protected {{\n\t\ttype ipv4_addr\n\t\telements = {{ {} }}\n\t}}",
        g.ip
    );
    let _ = writeln!(
        s,
        "\tchain input {{\n\t\ttype filter hook input priority 0; policy accept;"
    );
    let _ = writeln!(
        s,
        "\t\tiifname \"{}\" arp saddr ip @protected arp saddr ether . arp saddr ip != @pinned counter drop comment \"gateway ARP spoof\"",
        g.interface
    );
    let _ = writeln!(s, "\t}}\n}}");
    Some(s)
}

/// The teardown: deletes the tables the guard owns (declaring them first so the delete
/// cannot fail on an absent table).
pub fn teardown(cfg: &Config) -> String {
    let mut s = String::new();
    if cfg.bridge.is_some() {
        let _ = writeln!(
            s,
            "table bridge {0} {{\n}}\ndelete table bridge {0}",
            cfg.table
        );
    }
    if cfg.gateway.is_some() {
        let _ = writeln!(
            s,
            "table arp {0}_host {{\n}}\ndelete table arp {0}_host",
            cfg.table
        );
    }
    s
}
