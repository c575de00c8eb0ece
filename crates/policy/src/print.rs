//! The way back: print an IR policy as policy-language TOML. Every rule is printed as a plain
//! `[[rules]]` entry (profile rules included, so the output is the *flattened* policy), set
//! files are inlined, and services become literals. Loading the output gives the same policy
//! up to source locations, service display names and rule origins; the round-trip property test
//! relies on that.

use std::fmt::Write as _;

use rampart_ir::{
    proto, Action, CtState, Direction, Family, L4Match, Peer, Policy, RateUnit, SetSource,
};

/// Why a policy cannot be printed in the policy language.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum PrintError {
    /// Source ports on a protocol without ports (the IR allows it; the language cannot say it).
    #[error("rule `{rule}` matches source ports on a protocol without ports")]
    SourcePorts {
        /// The rule.
        rule: String,
    },
    /// A service alternative without a protocol: only "no services" can mean any traffic.
    #[error("rule `{rule}` has a service alternative without a protocol")]
    AnyProtocolService {
        /// The rule.
        rule: String,
    },
    /// A peer refers to a zone or set id that does not exist.
    #[error("rule `{rule}` refers to a zone or set that does not exist")]
    DanglingPeer {
        /// The rule.
        rule: String,
    },
}

/// `[l2]` and its sub-tables, only the keys the policy sets.
fn print_l2(out: &mut String, l2: &rampart_ir::L2Guard) {
    let _ = writeln!(out, "\n[l2]");
    if let Some(b) = &l2.bridge {
        let _ = writeln!(out, "bridge = {}", q(b));
    }
    for (key, ports) in [
        ("trusted_ports", &l2.trusted_ports),
        ("untrusted_ports", &l2.untrusted_ports),
    ] {
        if let Some(p) = ports {
            let _ = writeln!(out, "{key} = {}", list(p, |x| q(x)));
        }
    }
    if let Some(a) = &l2.protected_ipv6 {
        let _ = writeln!(out, "protected_ipv6 = {}", list(a, |x| q(&x.to_string())));
    }
    if let Some(on) = l2.ipv6_source_guard {
        let _ = writeln!(out, "ipv6_source_guard = {on}");
    }
    // Why: an empty array of tables has no `[[...]]` form; an inline empty array keeps "set
    // to nothing" (which overrides nothing in the guard's merge) distinct from "not set".
    for (key, empty) in [
        (
            "static_arp",
            l2.static_arp.as_ref().is_some_and(Vec::is_empty),
        ),
        (
            "static_nd",
            l2.static_nd.as_ref().is_some_and(Vec::is_empty),
        ),
        (
            "trusted_router",
            l2.trusted_router.as_ref().is_some_and(Vec::is_empty),
        ),
    ] {
        if empty {
            let _ = writeln!(out, "{key} = []");
        }
    }
    let r = &l2.rate_limit;
    let rates = [
        ("dhcp_per_second", r.dhcp_per_second),
        ("dhcp_burst", r.dhcp_burst),
        ("arp_per_second", r.arp_per_second),
        ("arp_burst", r.arp_burst),
    ];
    if rates.iter().any(|(_, v)| v.is_some()) {
        let _ = writeln!(out, "\n[l2.rate_limit]");
        for (key, v) in rates {
            if let Some(v) = v {
                let _ = writeln!(out, "{key} = {v}");
            }
        }
    }
    let b = &l2.block;
    let blocks = [("llmnr", b.llmnr), ("nbns", b.nbns), ("mdns", b.mdns)];
    if blocks.iter().any(|(_, v)| v.is_some()) {
        let _ = writeln!(out, "\n[l2.block]");
        for (key, v) in blocks {
            if let Some(v) = v {
                let _ = writeln!(out, "{key} = {v}");
            }
        }
    }
    if let Some(g) = &l2.gateway {
        let _ = writeln!(out, "\n[l2.gateway]");
        let _ = writeln!(
            out,
            "ip = {}\nmac = {}\ninterface = {}",
            q(&g.ip.to_string()),
            q(&g.mac),
            q(&g.interface)
        );
    }
    for (key, entries) in [("static_arp", &l2.static_arp), ("static_nd", &l2.static_nd)] {
        for s in entries.iter().flatten() {
            let _ = writeln!(out, "\n[[l2.{key}]]");
            let _ = writeln!(out, "ip = {}\nmac = {}", q(&s.ip.to_string()), q(&s.mac));
            if let Some(p) = &s.port {
                let _ = writeln!(out, "port = {}", q(p));
            }
        }
    }
    if let Some(routers) = &l2.trusted_router {
        for r in routers {
            let _ = writeln!(out, "\n[[l2.trusted_router]]");
            let _ = writeln!(out, "mac = {}", q(&r.mac));
            if let Some(p) = &r.port {
                let _ = writeln!(out, "port = {}", q(p));
            }
        }
    }
}

/// The name a rule gets in flattened output: profile rules are named `profile/part`, and `/` is
/// reserved for them, so it becomes `.` (`smb-egress.smb.egress`).
pub fn flat_rule_name(name: &str) -> String {
    name.replace('/', ".")
}

/// A TOML basic string.
fn q(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn list<T>(items: &[T], f: impl Fn(&T) -> String) -> String {
    let parts: Vec<String> = items.iter().map(f).collect();
    format!("[{}]", parts.join(", "))
}

fn action(a: Action) -> &'static str {
    a.as_str()
}

/// The literal service syntax for one match.
fn literal(m: &L4Match, rule: &str) -> Result<String, PrintError> {
    let Some(p) = m.protocol else {
        return Err(PrintError::AnyProtocolService { rule: rule.into() });
    };
    let list = |v: &[rampart_ir::PortRange]| {
        if v.is_empty() {
            "any".to_string()
        } else {
            v.iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(",")
        }
    };
    let ports = || {
        if m.src_ports.is_empty() {
            list(&m.dst_ports)
        } else {
            format!("{}->{}", list(&m.src_ports), list(&m.dst_ports))
        }
    };
    let types = || {
        m.icmp_types
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let head = match p {
        proto::TCP => Some("tcp"),
        proto::UDP => Some("udp"),
        132 => Some("sctp"),
        _ => None,
    };
    let ported = !m.src_ports.is_empty() || !m.dst_ports.is_empty();
    if head.is_none() && !m.src_ports.is_empty() {
        return Err(PrintError::SourcePorts { rule: rule.into() });
    }
    Ok(match (head, p) {
        (Some(h), _) if !ported => h.to_string(),
        (Some(h), _) => format!("{h}/{}", ports()),
        (None, proto::ICMP) if m.icmp_types.is_empty() => "icmp".into(),
        (None, proto::ICMP) => format!("icmp/{}", types()),
        (None, proto::ICMPV6) if m.icmp_types.is_empty() => "icmpv6".into(),
        (None, proto::ICMPV6) => format!("icmpv6/{}", types()),
        (None, p) => format!("proto/{p}"),
    })
}

/// Print `policy` as one self-contained policy file.
pub fn to_toml(policy: &Policy) -> Result<String, PrintError> {
    let mut out = String::new();
    let d = &policy.defaults;
    let _ = writeln!(out, "[defaults]");
    let _ = writeln!(out, "ingress = {}", q(action(d.ingress)));
    let _ = writeln!(out, "egress = {}", q(action(d.egress)));
    let _ = writeln!(out, "forward = {}", q(action(d.forward)));
    let _ = writeln!(out, "stateful = {}", d.stateful);
    let _ = writeln!(out, "allow_loopback = {}", d.allow_loopback);
    let _ = writeln!(out, "allow_icmpv6_essential = {}", d.allow_icmpv6_essential);
    if !d.never_ban.is_empty() {
        let _ = writeln!(
            out,
            "never_ban = {}",
            list(&d.never_ban, |n| q(&n.to_string()))
        );
    }
    if d.classifier_fail_open {
        let _ = writeln!(out, "classifier_fail_open = true");
    }
    if d.classifier_queues != 1 {
        let _ = writeln!(out, "classifier_queues = {}", d.classifier_queues);
    }
    if !policy.components.is_empty() {
        let _ = writeln!(out, "\n[components]");
        for c in &policy.components {
            let _ = writeln!(out, "{} = true", c.kind.as_str());
        }
    }
    if let Some(j) = &policy.jail {
        let _ = writeln!(out, "\n[jail]");
        let _ = writeln!(out, "cgroup_root = {}", q(&j.cgroup_root));
        if !j.watch_mounts.is_empty() {
            let _ = writeln!(out, "watch_mounts = {}", list(&j.watch_mounts, |m| q(m)));
        }
        for p in &j.programs {
            let _ = writeln!(out, "\n[[programs]]");
            let _ = writeln!(out, "name = {}", q(&p.name));
            if !p.paths.is_empty() {
                let _ = writeln!(out, "paths = {}", list(&p.paths, |x| q(x)));
            }
            if !p.sha256.is_empty() {
                let _ = writeln!(out, "sha256 = {}", list(&p.sha256, |d| q(&d.to_string())));
            }
            if !p.mitigates.is_empty() {
                let _ = writeln!(out, "mitigates = {}", list(&p.mitigates, |t| q(&t.0)));
            }
        }
    }
    if let Some(l2) = &policy.l2 {
        print_l2(&mut out, l2);
    }
    for z in &policy.zones {
        let _ = writeln!(out, "\n[zones.{}]", q(&z.name));
        if !z.interfaces.is_empty() {
            let _ = writeln!(out, "interfaces = {}", list(&z.interfaces, |s| q(s)));
        }
        if !z.networks.is_empty() {
            let _ = writeln!(
                out,
                "networks = {}",
                list(&z.networks, |n| q(&n.to_string()))
            );
        }
        if z.trusted {
            let _ = writeln!(out, "trusted = true");
        }
        if z.public_facing {
            let _ = writeln!(out, "public_facing = true");
        }
        if let Some(desc) = &z.description {
            let _ = writeln!(out, "description = {}", q(desc));
        }
    }
    for s in &policy.sets {
        let _ = writeln!(out, "\n[sets.{}]", q(&s.name));
        match &s.source {
            SetSource::Feed {
                url,
                format,
                refresh_s,
                ..
            } => {
                let _ = writeln!(
                    out,
                    "feed = {{ url = {}, format = {}, refresh = {} }}",
                    q(url),
                    q(format),
                    q(&format!("{refresh_s}s"))
                );
                // Members known at compile time (a snapshot) travel as elements.
                if !s.elements.is_empty() {
                    let _ = writeln!(
                        out,
                        "elements = {}",
                        list(&s.elements, |n| q(&n.to_string()))
                    );
                }
            }
            SetSource::Inline | SetSource::File { .. } => {
                let _ = writeln!(
                    out,
                    "elements = {}",
                    list(&s.elements, |n| q(&n.to_string()))
                );
            }
        }
        if !s.except.is_empty() {
            let _ = writeln!(out, "except = {}", list(&s.except, |n| q(&n.to_string())));
        }
    }
    for r in &policy.rules {
        let peer = |p: &Peer| -> Option<String> {
            Some(match p {
                Peer::Zone(id) => q(&policy.zones.get(id.0 as usize)?.name),
                Peer::Set(id) => q(&policy.sets.get(id.0 as usize)?.name),
                Peer::Net(n) => q(&n.to_string()),
            })
        };
        let peers = |ps: &[Peer]| -> Result<String, PrintError> {
            let v: Option<Vec<String>> = ps.iter().map(peer).collect();
            v.map(|v| format!("[{}]", v.join(", ")))
                .ok_or_else(|| PrintError::DanglingPeer {
                    rule: r.name.clone(),
                })
        };
        let _ = writeln!(out, "\n[[rules]]");
        let _ = writeln!(out, "name = {}", q(&flat_rule_name(&r.name)));
        let dir = match r.direction {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Forward => "forward",
        };
        let _ = writeln!(out, "direction = {}", q(dir));
        if !r.from.is_empty() {
            let _ = writeln!(out, "from = {}", peers(&r.from)?);
        }
        if !r.to.is_empty() {
            let _ = writeln!(out, "to = {}", peers(&r.to)?);
        }
        if !r.services.is_empty() {
            let lits: Result<Vec<String>, PrintError> =
                r.services.iter().map(|m| literal(m, &r.name)).collect();
            let _ = writeln!(out, "service = {}", list(&lits?, |s| q(s)));
        }
        match r.family {
            Family::Any => {}
            Family::V4 => {
                let _ = writeln!(out, "family = \"ipv4\"");
            }
            Family::V6 => {
                let _ = writeln!(out, "family = \"ipv6\"");
            }
        }
        if !r.ct_states.is_empty() {
            let names = r.ct_states.iter().map(|s| match s {
                CtState::New => "new",
                CtState::Established => "established",
                CtState::Related => "related",
                CtState::Invalid => "invalid",
                CtState::Untracked => "untracked",
            });
            let v: Vec<String> = names.map(q).collect();
            let _ = writeln!(out, "state = [{}]", v.join(", "));
        }
        if let Some(o) = &r.owner {
            let _ = writeln!(
                out,
                "owner = {{ uid = {}, gid = {}, cgroup = {} }}",
                list(&o.uids, |u| u.to_string()),
                list(&o.gids, |g| g.to_string()),
                list(&o.cgroups, |c| q(c))
            );
        }
        if let Some(l) = &r.limit {
            let period = match l.per_s {
                1 => "second",
                60 => "minute",
                3600 => "hour",
                _ => "day",
            };
            let rate = match l.unit {
                RateUnit::Packets => format!("{}/{period}", l.rate),
                RateUnit::Bytes => format!("{} bytes/{period}", l.rate),
            };
            let _ = writeln!(
                out,
                "limit = {{ rate = {}, burst = {}, per_source = {} }}",
                q(&rate),
                l.burst,
                l.per_source
            );
        }
        if let Some(c) = r.conn_limit {
            let _ = writeln!(out, "conn_limit = {c}");
        }
        if let Some(sp) = &r.synproxy {
            let _ = writeln!(
                out,
                "synproxy = {{ mss = {}, wscale = {}, timestamp = {}, sack_perm = {} }}",
                sp.mss, sp.wscale, sp.timestamp, sp.sack_perm
            );
        }
        if let Some(b) = &r.ban {
            let _ = writeln!(out, "ban = {}", q(&duration_text(b.timeout_s)));
        }
        if let Some(a) = &r.app {
            let key = if a.negate { "app_not" } else { "app" };
            let _ = writeln!(out, "{key} = {}", list(&a.protocols, |p| q(p.as_str())));
        }
        let _ = writeln!(out, "action = {}", q(action(r.action)));
        if r.log {
            let _ = writeln!(out, "log = true");
        }
        if !r.mitigates.is_empty() {
            let _ = writeln!(out, "mitigates = {}", list(&r.mitigates, |t| q(&t.0)));
        }
        if let Some(e) = &r.expires {
            let _ = writeln!(out, "expires = {e}");
        }
        if let Some(desc) = &r.description {
            let _ = writeln!(out, "description = {}", q(desc));
        }
    }
    Ok(out)
}

/// A duration in the largest unit that divides it exactly (`600` → `10m`).
pub fn duration_text(seconds: u32) -> String {
    for (unit, len) in [("d", 86_400), ("h", 3_600), ("m", 60)] {
        if seconds != 0 && seconds % len == 0 {
            return format!("{}{unit}", seconds / len);
        }
    }
    format!("{seconds}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_in_the_largest_exact_unit() {
        assert_eq!(duration_text(600), "10m");
        assert_eq!(duration_text(90), "90s");
        assert_eq!(duration_text(7_200), "2h");
        assert_eq!(duration_text(2 * 86_400), "2d");
    }

    #[test]
    fn quoting_escapes_everything_toml_needs() {
        assert_eq!(q("a\"b\\c\nd\u{1}"), "\"a\\\"b\\\\c\\nd\\u0001\"");
    }
}
