//! `[l2]`: the L2 guard's policy-level settings (trusted/untrusted bridge ports, static ARP and
//! ND bindings, trusted routers, the gateway pin, rate limits, blocked name protocols),
//! resolved into [`rampart_ir::L2Guard`]. Values are checked with the IR's predicates
//! ([`rampart_ir::l2`]), which the guard applies again after merging its runtime configuration;
//! here every problem gets its span. Cross-key rules that depend on that merge (a port list
//! needs a bridge) are left to the guard.

use std::net::IpAddr;

use rampart_ir::{l2, L2Gateway, L2Guard, L2Router, L2Static};

use crate::ast::{self, S};
use crate::diag::{Diags, Report};
use crate::source::{FileId, SourceMap, Span};

fn bad_value(diags: &mut Diags, span: Span, message: String, label: &str, hint: &str) {
    diags.push(
        Report::error("E0192", message)
            .label(span, label)
            .hint(hint),
    );
}

fn ifname(item: &S<String>, what: &str, diags: &mut Diags) -> Option<String> {
    if l2::is_ifname(&item.v) {
        return Some(item.v.clone());
    }
    diags.push(
        Report::error(
            "E0160",
            format!("{what} `{}` is not an interface name", item.v),
        )
        .label(item.span, "not an interface name")
        .hint(format!(
            "1-{} characters of letters, digits, `_`, `.`, `@`, `-` (no wildcards)",
            l2::MAX_IFNAME_LEN
        )),
    );
    None
}

fn mac(item: &S<String>, what: &str, diags: &mut Diags) -> Option<String> {
    match l2::parse_unicast_mac(&item.v) {
        Some(m) => Some(l2::mac_text(m)),
        None => {
            bad_value(
                diags,
                item.span,
                format!("{what} `{}` is not a unicast MAC address", item.v),
                "not a unicast MAC",
                "write `02:00:00:00:00:01`; group (multicast, broadcast) and all-zero addresses own no station",
            );
            None
        }
    }
}

fn ports(
    list: &Option<(Span, Vec<S<String>>)>,
    what: &str,
    diags: &mut Diags,
) -> Option<Vec<String>> {
    let (_, items) = list.as_ref()?;
    let mut out: Vec<String> = Vec::new();
    for item in items {
        if let Some(p) = ifname(item, what, diags) {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    Some(out)
}

fn required<'a>(
    v: &'a Option<S<String>>,
    key: &str,
    what: &str,
    at: Span,
    diags: &mut Diags,
) -> Option<&'a S<String>> {
    if v.is_none() {
        diags.push(
            Report::error("E0004", format!("`{what}` entry has no `{key}`"))
                .label(at, format!("needs `{key}`")),
        );
    }
    v.as_ref()
}

fn statics(
    entries: &Option<Vec<ast::L2EntryDecl>>,
    v6: bool,
    diags: &mut Diags,
) -> Option<Vec<L2Static>> {
    let what = if v6 { "static_nd" } else { "static_arp" };
    let mut out = Vec::new();
    for e in entries.as_ref()? {
        let ip = required(&e.ip, "ip", what, e.span, diags);
        let m = required(&e.mac, "mac", what, e.span, diags);
        let ip = ip.and_then(|ip| match (ip.v.trim().parse::<IpAddr>(), v6) {
            (Ok(IpAddr::V4(a)), false)
                if !a.is_multicast() && !a.is_unspecified() && !a.is_broadcast() =>
            {
                Some(IpAddr::V4(a))
            }
            (Ok(IpAddr::V6(a)), true) if l2::is_unicast_v6(&a) => Some(IpAddr::V6(a)),
            _ => {
                let family = if v6 { "IPv6" } else { "IPv4" };
                bad_value(
                    diags,
                    ip.span,
                    format!("{what}.ip `{}` is not a unicast {family} address", ip.v),
                    &format!("expected a unicast {family} address"),
                    if v6 {
                        "static_nd is for IPv6 (link-local allowed); IPv4 goes in static_arp"
                    } else {
                        "static_arp is for IPv4; IPv6 goes in static_nd"
                    },
                );
                None
            }
        });
        let m = m.and_then(|m| mac(m, &format!("{what}.mac"), diags));
        let port = match &e.port {
            Some(p) => match ifname(p, &format!("{what}.port"), diags) {
                Some(p) => Some(p),
                None => continue,
            },
            None => None,
        };
        if let (Some(ip), Some(mac)) = (ip, m) {
            let entry = L2Static { ip, mac, port };
            if !out.contains(&entry) {
                out.push(entry);
            }
        }
    }
    Some(out)
}

/// Resolve the `[l2]` of every file (one file at most, `E0111`).
pub(crate) fn resolve_l2(
    files: &[(FileId, ast::File)],
    sources: &SourceMap,
    diags: &mut Diags,
) -> Option<L2Guard> {
    let mut first: Option<(&ast::L2Decl, Option<L2Guard>)> = None;
    for (_, f) in files {
        let Some(d) = &f.l2 else { continue };
        // Every declaration is checked, so all its mistakes show in one run.
        let resolved = resolve_one(d, sources, diags);
        match &first {
            Some((earlier, _)) => diags.push(
                Report::error("E0111", "`[l2]` is declared more than once")
                    .label(d.span, "declared again here")
                    .label(earlier.span, "first declared here"),
            ),
            None => first = Some((d, resolved)),
        }
    }
    first.and_then(|(_, resolved)| resolved)
}

fn resolve_one(d: &ast::L2Decl, sources: &SourceMap, diags: &mut Diags) -> Option<L2Guard> {
    let errors_before = diags.error_count();
    for (key, list) in [
        ("trusted_ports", &d.trusted_ports),
        ("untrusted_ports", &d.untrusted_ports),
        ("protected_ipv6", &d.protected_ipv6),
    ] {
        if let Some((span, items)) = list {
            if items.len() > l2::MAX_LIST {
                diags.push(
                    Report::error(
                        "E0005",
                        format!("`{key}` lists more than {} entries", l2::MAX_LIST),
                    )
                    .label(*span, "list too long"),
                );
                return None;
            }
        }
    }
    for (key, list) in [
        ("static_arp", &d.static_arp),
        ("static_nd", &d.static_nd),
        ("trusted_router", &d.trusted_router),
    ] {
        if let Some(items) = list {
            if items.len() > l2::MAX_LIST {
                diags.push(
                    Report::error(
                        "E0005",
                        format!("`{key}` has more than {} entries", l2::MAX_LIST),
                    )
                    .label(items[l2::MAX_LIST].span, "one too many"),
                );
                return None;
            }
        }
    }

    let bridge = d.bridge.as_ref().and_then(|b| ifname(b, "bridge", diags));
    let trusted_ports = ports(&d.trusted_ports, "trusted port", diags);
    let untrusted_ports = ports(&d.untrusted_ports, "untrusted port", diags);
    if let (Some((_, trusted)), Some((_, untrusted))) = (&d.trusted_ports, &d.untrusted_ports) {
        for u in untrusted {
            if let Some(t) = trusted.iter().find(|t| t.v == u.v) {
                diags.push(
                    Report::error(
                        "E0193",
                        format!("port `{}` is listed as trusted and untrusted", u.v),
                    )
                    .label(u.span, "untrusted here")
                    .label(t.span, "trusted here")
                    .hint("a port is either trusted (servers, uplinks) or inspected; remove one"),
                );
            }
        }
    }
    let protected_ipv6 = d.protected_ipv6.as_ref().map(|(_, items)| {
        let mut out = Vec::new();
        for item in items {
            match item.v.trim().parse::<std::net::Ipv6Addr>() {
                Ok(a) if l2::is_unicast_v6(&a) => {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
                _ => bad_value(
                    diags,
                    item.span,
                    format!("protected_ipv6 `{}` is not a unicast IPv6 address", item.v),
                    "expected a unicast IPv6 address",
                    "list the gateway's link-local and global addresses, e.g. `fe80::1`",
                ),
            }
        }
        out
    });
    let static_arp = statics(&d.static_arp, false, diags);
    let static_nd = statics(&d.static_nd, true, diags);
    let trusted_router = d.trusted_router.as_ref().map(|entries| {
        let mut out = Vec::new();
        for e in entries {
            let m = required(&e.mac, "mac", "trusted_router", e.span, diags)
                .and_then(|m| mac(m, "trusted_router.mac", diags));
            let port = match &e.port {
                Some(p) => match ifname(p, "trusted_router.port", diags) {
                    Some(p) => Some(p),
                    None => continue,
                },
                None => None,
            };
            if let Some(mac) = m {
                let r = L2Router { mac, port };
                if !out.contains(&r) {
                    out.push(r);
                }
            }
        }
        out
    });
    let gateway = d.gateway.as_ref().and_then(|g| {
        let ip = required(&g.ip, "ip", "gateway", g.span, diags);
        let m = required(&g.mac, "mac", "gateway", g.span, diags);
        let interface = required(&g.port, "interface", "gateway", g.span, diags);
        let ip = ip.and_then(|ip| match ip.v.trim().parse::<std::net::Ipv4Addr>() {
            Ok(a) if !a.is_multicast() && !a.is_unspecified() && !a.is_broadcast() => Some(a),
            _ => {
                bad_value(
                    diags,
                    ip.span,
                    format!("gateway.ip `{}` is not a unicast IPv4 address", ip.v),
                    "expected the gateway's IPv4 address",
                    "the host role pins the IPv4 gateway's ARP entry",
                );
                None
            }
        });
        let m = m.and_then(|m| mac(m, "gateway.mac", diags));
        let interface = interface.and_then(|i| ifname(i, "gateway.interface", diags));
        Some(L2Gateway {
            ip: ip?,
            mac: m?,
            interface: interface?,
        })
    });
    let mut rate_limit = rampart_ir::L2RateLimit::default();
    for (key, value) in &d.rate_limit {
        let (range, slot) = match key.v.as_str() {
            "dhcp_per_second" => (l2::RATE_PER_SECOND, &mut rate_limit.dhcp_per_second),
            "dhcp_burst" => (l2::RATE_BURST, &mut rate_limit.dhcp_burst),
            "arp_per_second" => (l2::RATE_PER_SECOND, &mut rate_limit.arp_per_second),
            _ => (l2::RATE_BURST, &mut rate_limit.arp_burst),
        };
        match u32::try_from(value.v) {
            Ok(v) if range.contains(&v) => *slot = Some(v),
            _ => diags.push(
                Report::error(
                    "E0143",
                    format!("rate_limit.{} `{}` is out of range", key.v, value.v),
                )
                .label(
                    value.span,
                    format!("expected {}..={}", range.start(), range.end()),
                ),
            ),
        }
    }
    let mut block = rampart_ir::L2Block::default();
    for (key, on) in &d.block {
        let slot = match key.v.as_str() {
            "llmnr" => &mut block.llmnr,
            "nbns" => &mut block.nbns,
            _ => &mut block.mdns,
        };
        *slot = Some(*on);
    }
    if diags.error_count() > errors_before {
        return None;
    }
    Some(L2Guard {
        bridge,
        trusted_ports,
        untrusted_ports,
        protected_ipv6,
        ipv6_source_guard: d.ipv6_source_guard,
        static_arp,
        static_nd,
        trusted_router,
        gateway,
        rate_limit,
        block,
        loc: sources.loc(d.span),
    })
}
