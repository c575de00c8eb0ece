//! `explain` support: parsing a flow written as text (`tcp 192.0.2.5:51515 -> 203.0.113.7:445`,
//! `udp [2001:db8::1]:5353 -> [2001:db8::2]:53`, `icmp 192.0.2.1 -> 192.0.2.2 type
//! echo-request`) and rendering an [`Explanation`] for the terminal.

use std::fmt::Write;
use std::net::IpAddr;

use rampart_ir::{Action, CtState, Direction};

use crate::engine::{proto_name, Engine, Explanation, L4Meta, PacketMeta, Reason};

/// A flow parsed from text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowSpec {
    /// Protocol number.
    pub protocol: u8,
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Ports or ICMP type.
    pub l4: L4Meta,
}

/// Errors parsing a flow.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FlowParseError {
    /// The text does not have the `PROTO SRC -> DST [type T [code C]]` shape.
    #[error("expected `PROTO SRC[:PORT] -> DST[:PORT] [type T [code C]]`, got {0:?}")]
    Shape(String),
    /// Unknown protocol name.
    #[error("unknown protocol {0:?} (tcp, udp, icmp, icmpv6 or a number)")]
    Protocol(String),
    /// An address or port did not parse.
    #[error("bad endpoint {0:?}")]
    Endpoint(String),
    /// Source and destination are of different families.
    #[error("source and destination must both be IPv4 or both IPv6")]
    MixedFamilies,
    /// A TCP/UDP flow needs both ports.
    #[error("{0} flows need ports on both ends (ADDR:PORT, [V6ADDR]:PORT)")]
    MissingPorts(String),
    /// Unknown ICMP type name.
    #[error("unknown icmp type {0:?}")]
    IcmpType(String),
}

fn endpoint(s: &str) -> Result<(IpAddr, Option<u16>), FlowParseError> {
    let bad = || FlowParseError::Endpoint(s.to_owned());
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, after) = rest.split_once(']').ok_or_else(bad)?;
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| bad())?),
            None if after.is_empty() => None,
            None => return Err(bad()),
        };
        return Ok((addr, port));
    }
    if let Ok(addr) = s.parse::<IpAddr>() {
        return Ok((addr, None));
    }
    let (addr, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    Ok((IpAddr::V4(addr), Some(port.parse().map_err(|_| bad())?)))
}

fn icmp_type(name: &str, v6: bool) -> Option<u8> {
    if let Ok(n) = name.parse() {
        return Some(n);
    }
    let n = name.to_ascii_lowercase().replace('_', "-");
    Some(match (n.as_str(), v6) {
        ("echo-reply", false) => 0,
        ("echo-reply", true) => 129,
        ("destination-unreachable", false) => 3,
        ("destination-unreachable", true) => 1,
        ("redirect", false) => 5,
        ("redirect", true) => 137,
        ("echo-request", false) => 8,
        ("echo-request", true) => 128,
        ("router-advertisement", false) => 9,
        ("router-advertisement", true) => 134,
        ("router-solicitation", false) => 10,
        ("router-solicitation", true) => 133,
        ("time-exceeded", false) => 11,
        ("time-exceeded", true) => 3,
        ("parameter-problem", false) => 12,
        ("parameter-problem", true) => 4,
        ("timestamp-request", false) => 13,
        ("timestamp-reply", false) => 14,
        ("packet-too-big", true) => 2,
        ("neighbour-solicitation" | "neighbor-solicitation" | "nd-neighbor-solicit", true) => 135,
        ("neighbour-advertisement" | "neighbor-advertisement" | "nd-neighbor-advert", true) => 136,
        _ => return None,
    })
}

/// Parse a flow written as text.
pub fn parse_flow(text: &str) -> Result<FlowSpec, FlowParseError> {
    let tok: Vec<&str> = text.split_whitespace().collect();
    let shape = || FlowParseError::Shape(text.to_owned());
    let (proto_tok, rest) = match tok.as_slice() {
        ["proto", p, rest @ ..] => (*p, rest),
        [p, rest @ ..] => (*p, rest),
        [] => return Err(shape()),
    };
    let [src, "->", dst, tail @ ..] = rest else {
        return Err(shape());
    };
    let (src, sport) = endpoint(src)?;
    let (dst, dport) = endpoint(dst)?;
    if src.is_ipv6() != dst.is_ipv6() {
        return Err(FlowParseError::MixedFamilies);
    }
    let v6 = src.is_ipv6();
    let protocol: u8 = match proto_tok.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "icmp" if v6 => 58,
        "icmp" => 1,
        "icmpv6" | "ipv6-icmp" => 58,
        other => other
            .parse()
            .map_err(|_| FlowParseError::Protocol(other.to_owned()))?,
    };
    let l4 = match protocol {
        6 | 17 => match (sport, dport) {
            (Some(s), Some(d)) => L4Meta::Ports { src: s, dst: d },
            _ => return Err(FlowParseError::MissingPorts(proto_name(protocol))),
        },
        1 | 58 => {
            let mut t = if v6 { 128 } else { 8 };
            let mut code = 0;
            let mut it = tail.iter();
            while let Some(k) = it.next() {
                let v = it.next().ok_or_else(shape)?;
                match *k {
                    "type" => t = icmp_type(v, v6).ok_or(FlowParseError::IcmpType((*v).into()))?,
                    "code" => code = v.parse().map_err(|_| shape())?,
                    _ => return Err(shape()),
                }
            }
            L4Meta::Icmp { icmp_type: t, code }
        }
        _ => L4Meta::None,
    };
    if !matches!(protocol, 1 | 58) && !tail.is_empty() {
        return Err(shape());
    }
    Ok(FlowSpec {
        protocol,
        src,
        dst,
        l4,
    })
}

fn ct_name(s: CtState) -> &'static str {
    match s {
        CtState::New => "new",
        CtState::Established => "established",
        CtState::Related => "related",
        CtState::Invalid => "invalid",
        CtState::Untracked => "untracked",
    }
}

/// One-line rendering of a flow.
pub fn flow_text(meta: &PacketMeta<'_>) -> String {
    let ep = |a: IpAddr, p: Option<u16>| match (a, p) {
        (IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
        (a, Some(p)) => format!("{a}:{p}"),
        (a, None) => a.to_string(),
    };
    let (sp, dp) = match meta.l4 {
        L4Meta::Ports { src, dst } => (Some(src), Some(dst)),
        _ => (None, None),
    };
    let mut s = format!(
        "{} {} -> {}",
        proto_name(meta.protocol),
        ep(meta.src, sp),
        ep(meta.dst, dp)
    );
    if let L4Meta::Icmp { icmp_type, code } = meta.l4 {
        let _ = write!(s, " type {icmp_type} code {code}");
    }
    s
}

fn action_upper(a: Action) -> &'static str {
    match a {
        Action::Accept => "ACCEPT",
        Action::Drop => "DROP",
        Action::Reject => "REJECT",
    }
}

fn direction_name(d: Direction) -> &'static str {
    d.as_str()
}

/// Render an explanation for the terminal.
pub fn render_text(engine: &Engine, meta: &PacketMeta<'_>, ex: &Explanation) -> String {
    let policy = engine.policy();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "flow:       {} ({}, iif {}, oif {}, ct state {})",
        flow_text(meta),
        direction_name(meta.direction),
        meta.iif.unwrap_or("-"),
        meta.oif.unwrap_or("-"),
        ct_name(meta.ct_state)
    );
    let d = ex.decision;
    match (d.reason, d.rule) {
        (Reason::Rule, Some(id)) => {
            let r = &policy.rules[id.0 as usize];
            let _ = writeln!(
                out,
                "verdict:    {} by rule #{} {} at {}",
                action_upper(d.action),
                id.0,
                r.name,
                r.loc
            );
        }
        (Reason::Rule, None) | (Reason::Default, _) => {
            let _ = writeln!(
                out,
                "verdict:    {} by the {} default (no rule matched) at {}",
                action_upper(d.action),
                direction_name(meta.direction),
                policy.defaults.loc
            );
        }
        (reason, Some(id)) => {
            let r = &policy.rules[id.0 as usize];
            let _ = writeln!(
                out,
                "verdict:    {} by {} (rule #{} {} at {})",
                action_upper(d.action),
                reason.as_str(),
                id.0,
                r.name,
                r.loc
            );
        }
        (reason, None) => {
            let _ = writeln!(
                out,
                "verdict:    {} before the rules: {} at {}",
                action_upper(d.action),
                reason.as_str(),
                policy.defaults.loc
            );
        }
    }
    let _ = writeln!(
        out,
        "techniques: {}",
        if ex.techniques.is_empty() {
            "-".to_owned()
        } else {
            ex.techniques.join(", ")
        }
    );
    if let Some(step) = d.app {
        let _ = writeln!(
            out,
            "app:        labelled {} by rule #{} {}: {}",
            step.label.map_or("unrecognised", |l| l.as_str()),
            step.rule.0,
            policy.rules[step.rule.0 as usize].name,
            if step.action == Action::Accept {
                "accept (inspection of the connection ends; the packet continues)"
            } else {
                "the connection is blocked"
            }
        );
    }
    for st in &ex.steps {
        let _ = writeln!(out, "prelude:    {}: {}", st.step, st.detail);
    }
    if ex.considered.is_empty() {
        if d.reason != Reason::Rule && d.reason != Reason::Default && d.reason != Reason::Ban {
            let _ = writeln!(out, "rules:      not reached");
        } else {
            let _ = writeln!(
                out,
                "rules:      none in {}",
                direction_name(meta.direction)
            );
        }
        return out;
    }
    let _ = writeln!(
        out,
        "rules considered ({}):",
        direction_name(meta.direction)
    );
    let width = ex
        .considered
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0);
    let loc_width = ex.considered.iter().map(|c| c.loc.len()).max().unwrap_or(0);
    for c in &ex.considered {
        let banned = d.reason == Reason::Ban && d.rule == Some(c.rule);
        let outcome = match (&c.mismatch, &c.detail) {
            (Some(m), Some(detail)) if banned => format!("BAN -> drop ({}): {detail}", m.as_str()),
            (None, _) => format!(
                "MATCH -> {}",
                policy.rules[c.rule.0 as usize].action.as_str()
            ),
            (Some(m), Some(detail)) => format!("no ({}): {detail}", m.as_str()),
            (Some(m), None) => format!("no ({})", m.as_str()),
        };
        let _ = writeln!(
            out,
            "  #{:<4} {:<width$}  {:<loc_width$}  {}",
            c.rule.0,
            c.name,
            c.loc,
            outcome,
            width = width,
            loc_width = loc_width
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_forms() {
        let f = parse_flow("tcp 192.0.2.5:51515 -> 203.0.113.7:445").unwrap();
        assert_eq!(f.protocol, 6);
        assert_eq!(
            f.l4,
            L4Meta::Ports {
                src: 51515,
                dst: 445
            }
        );
        let f = parse_flow("udp [2001:db8::1]:5353 -> [2001:db8::2]:53").unwrap();
        assert_eq!((f.protocol, f.src.is_ipv6()), (17, true));
        let f = parse_flow("icmp 192.0.2.1 -> 192.0.2.2 type echo-request").unwrap();
        assert_eq!(
            f.l4,
            L4Meta::Icmp {
                icmp_type: 8,
                code: 0
            }
        );
        let f = parse_flow("icmp 2001:db8::1 -> 2001:db8::2 type neighbour-solicitation").unwrap();
        assert_eq!(
            (f.protocol, f.l4),
            (
                58,
                L4Meta::Icmp {
                    icmp_type: 135,
                    code: 0
                }
            )
        );
        let f = parse_flow("proto 47 192.0.2.1 -> 192.0.2.2").unwrap();
        assert_eq!((f.protocol, f.l4), (47, L4Meta::None));
    }

    #[test]
    fn rejects_bad_flows() {
        assert!(matches!(
            parse_flow("tcp 192.0.2.5 -> 203.0.113.7:445"),
            Err(FlowParseError::MissingPorts(_))
        ));
        assert_eq!(
            parse_flow("tcp 192.0.2.5:1 -> [2001:db8::1]:2"),
            Err(FlowParseError::MixedFamilies)
        );
        assert!(matches!(
            parse_flow("sctp 192.0.2.5:1 -> 192.0.2.6:2"),
            Err(FlowParseError::Protocol(_))
        ));
        assert!(matches!(
            parse_flow("tcp 192.0.2.5:1 => 192.0.2.6:2"),
            Err(FlowParseError::Shape(_))
        ));
        assert!(matches!(
            parse_flow("icmp 192.0.2.5 -> 192.0.2.6 type bogus"),
            Err(FlowParseError::IcmpType(_))
        ));
        assert!(matches!(
            parse_flow("tcp 192.0.2.5:99999 -> 192.0.2.6:2"),
            Err(FlowParseError::Endpoint(_))
        ));
    }
}
