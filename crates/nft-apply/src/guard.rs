//! Lockout guard: a small reference evaluator of the IR for one *new* flow, used to refuse a
//! policy that would cut the operator's SSH session (`SSH_CONNECTION`) or a `--keep-reachable`
//! address. It implements the IR crate doc's semantics directly (prelude aside: a new flow),
//! with one deliberate bias: what cannot be known for the flow (socket owner, rate and
//! connection budgets, an interface the caller could not determine) counts against the flow:
//! such accept rules are treated as not matching and such drop/reject rules as matching. So the
//! guard may refuse a policy that would in fact keep the session, never the other way round.

use std::net::IpAddr;

use rampart_ir::{
    net_contains, proto, Action, Date, Direction, Family, L4Match, Peer, Policy, Rule, RuleId,
    ICMPV6_ESSENTIAL_TYPES,
};

/// A new flow to evaluate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// Hook.
    pub direction: Direction,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol.
    pub protocol: u8,
    /// Source port (TCP/UDP), 0 otherwise.
    pub src_port: u16,
    /// Destination port (TCP/UDP), 0 otherwise.
    pub dst_port: u16,
    /// ICMP type (ICMP/ICMPv6).
    pub icmp_type: Option<u8>,
    /// Input interface when known.
    pub iif: Option<String>,
    /// Output interface when known.
    pub oif: Option<String>,
}

/// The guard's conclusion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Verdict.
    pub action: Action,
    /// Deciding rule; `None` for built-ins and the default.
    pub rule: Option<RuleId>,
    /// Why, for the message.
    pub reason: String,
}

/// Evaluate a new flow pessimistically (see the module doc). `today`: expired rules skipped.
pub fn evaluate(policy: &Policy, flow: &Flow, today: Option<Date>) -> Decision {
    let d = &policy.defaults;
    if d.allow_loopback {
        let lo = match flow.direction {
            Direction::Ingress => flow.iif.as_deref() == Some("lo"),
            Direction::Egress => flow.oif.as_deref() == Some("lo"),
            Direction::Forward => false,
        };
        if lo {
            return Decision {
                action: Action::Accept,
                rule: None,
                reason: "loopback".into(),
            };
        }
    }
    if d.allow_icmpv6_essential
        && flow.direction != Direction::Forward
        && flow.protocol == proto::ICMPV6
        && flow.src.is_ipv6()
        && flow
            .icmp_type
            .is_some_and(|t| ICMPV6_ESSENTIAL_TYPES.contains(&t))
    {
        return Decision {
            action: Action::Accept,
            rule: None,
            reason: "icmpv6 essential".into(),
        };
    }
    // Application-protocol rules (prelude, before the rules): a new connection they inspect
    // depends on the classifier. Pessimistic: failing closed, it counts as dropped, since the
    // classifier may not be running when the policy is applied.
    if !d.classifier_fail_open {
        for (id, rule) in policy.rules_in(flow.direction) {
            let expired = matches!((today, rule.expires), (Some(t), Some(e)) if e < t);
            if rule.app.is_none() || expired {
                continue;
            }
            let mut statik = rule.clone();
            statik.action = Action::Drop;
            statik.app = None;
            statik.ct_states.clear();
            if rule_matches(policy, &statik, flow) {
                return Decision {
                    action: Action::Drop,
                    rule: Some(id),
                    reason: format!(
                        "application-protocol rule `{}` ({}:{}) inspects it and fails closed (dropped whenever `rampart classify` is not running)",
                        rule.name, rule.loc.file, rule.loc.line
                    ),
                };
            }
        }
    }
    for (id, rule) in policy.rules_in(flow.direction) {
        if let (Some(t), Some(e)) = (today, rule.expires) {
            if e < t {
                continue;
            }
        }
        // Not first-match rules: handled above.
        if rule.app.is_some() {
            continue;
        }
        if rule_matches(policy, rule, flow) {
            return Decision {
                action: rule.action,
                rule: Some(id),
                reason: format!("rule `{}` ({}:{})", rule.name, rule.loc.file, rule.loc.line),
            };
        }
    }
    Decision {
        action: d.for_direction(flow.direction),
        rule: None,
        reason: format!("default {}", flow.direction),
    }
}

fn rule_matches(policy: &Policy, rule: &Rule, flow: &Flow) -> bool {
    // Pessimism: unknowns favour drops.
    let unknown = rule.action != Action::Accept;
    match rule.family {
        Family::V4 if !flow.src.is_ipv4() => return false,
        Family::V6 if !flow.src.is_ipv6() => return false,
        _ => {}
    }
    if !rule.ct_states.is_empty()
        && !rule
            .ct_states
            .iter()
            .any(|s| matches!(s, rampart_ir::CtState::New))
    {
        return false;
    }
    let has_owner = rule
        .owner
        .as_ref()
        .is_some_and(|o| !o.uids.is_empty() || !o.gids.is_empty() || !o.cgroups.is_empty());
    if (has_owner || rule.limit.is_some() || rule.conn_limit.is_some()) && !unknown {
        return false;
    }
    if !side_matches(policy, &rule.from, flow, true, unknown) {
        return false;
    }
    if !side_matches(policy, &rule.to, flow, false, unknown) {
        return false;
    }
    rule.services.is_empty() || rule.services.iter().any(|s| service_matches(s, flow))
}

fn iface_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(stem) => name.starts_with(stem),
        None => pattern == name,
    }
}

fn side_matches(policy: &Policy, peers: &[Peer], flow: &Flow, src: bool, unknown: bool) -> bool {
    if peers.is_empty() {
        return true;
    }
    let addr = if src { flow.src } else { flow.dst };
    peers.iter().any(|p| match p {
        Peer::Net(n) => net_contains(n, addr),
        Peer::Set(id) => policy
            .sets
            .get(id.0 as usize)
            .is_some_and(|s| s.elements.iter().any(|n| net_contains(n, addr))),
        Peer::Zone(id) => {
            let Some(z) = policy.zones.get(id.0 as usize) else {
                return false;
            };
            let iface_ok = if z.interfaces.is_empty() {
                true
            } else {
                let absent = matches!(
                    (src, flow.direction),
                    (true, Direction::Egress) | (false, Direction::Ingress)
                );
                let known = if src { &flow.iif } else { &flow.oif };
                match (absent, known) {
                    (true, _) => false,
                    (false, Some(name)) => z.interfaces.iter().any(|i| iface_matches(i, name)),
                    (false, None) => unknown,
                }
            };
            iface_ok && (z.networks.is_empty() || z.networks.iter().any(|n| net_contains(n, addr)))
        }
    })
}

fn service_matches(s: &L4Match, flow: &Flow) -> bool {
    let Some(p) = s.protocol else {
        return true;
    };
    if p != flow.protocol {
        return false;
    }
    match p {
        proto::ICMP if !flow.src.is_ipv4() => return false,
        proto::ICMPV6 if !flow.src.is_ipv6() => return false,
        _ => {}
    }
    let ports = |ranges: &[rampart_ir::PortRange], port: u16| {
        ranges.is_empty() || ranges.iter().any(|r| r.contains(port))
    };
    if (p == proto::TCP || p == proto::UDP)
        && !(ports(&s.src_ports, flow.src_port) && ports(&s.dst_ports, flow.dst_port))
    {
        return false;
    }
    s.icmp_types.is_empty() || flow.icmp_type.is_some_and(|t| s.icmp_types.contains(&t))
}

/// Parse `SSH_CONNECTION` (`client_ip client_port server_ip server_port`) into the ingress flow
/// of a *new* SSH connection from the same client to the same server port.
pub fn ssh_flow(ssh_connection: &str, iif: Option<String>) -> Option<Flow> {
    let mut it = ssh_connection.split_whitespace();
    // Link-local addresses carry a zone (`fe80::1%eth0`): the zone is not part of the address.
    let addr = |s: &str| s.split('%').next().and_then(|a| a.parse::<IpAddr>().ok());
    let client: IpAddr = addr(it.next()?)?;
    let cport: u16 = it.next()?.parse().ok()?;
    let server: IpAddr = addr(it.next()?)?;
    let sport: u16 = it.next()?.parse().ok()?;
    Some(Flow {
        direction: Direction::Ingress,
        src: client,
        dst: server,
        protocol: proto::TCP,
        src_port: cport,
        dst_port: sport,
        icmp_type: None,
        iif,
        oif: None,
    })
}

/// The flows that must stay allowed for `flow` (an ingress connection) to work: the ingress
/// flow itself and, when the policy is stateless, the egress replies.
pub fn required_flows(policy: &Policy, flow: &Flow) -> Vec<Flow> {
    let mut v = vec![flow.clone()];
    if !policy.defaults.stateful {
        v.push(Flow {
            direction: Direction::Egress,
            src: flow.dst,
            dst: flow.src,
            protocol: flow.protocol,
            src_port: flow.dst_port,
            dst_port: flow.src_port,
            icmp_type: None,
            iif: None,
            oif: flow.iif.clone(),
        });
    }
    v
}

/// Every required flow the policy would not accept, with the reason.
pub fn lockouts(policy: &Policy, flow: &Flow, today: Option<Date>) -> Vec<(Flow, Decision)> {
    required_flows(policy, flow)
        .into_iter()
        .map(|f| {
            let d = evaluate(policy, &f, today);
            (f, d)
        })
        .filter(|(_, d)| d.action != Action::Accept)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_ir::{PortRange, SourceLoc, Zone, ZoneId};

    fn rule(action: Action) -> Rule {
        Rule {
            services: vec![L4Match {
                protocol: Some(proto::TCP),
                src_ports: vec![],
                dst_ports: vec![PortRange::single(22)],
                icmp_types: vec![],
                service: None,
            }],
            ..Rule::new("r", Direction::Ingress, action)
        }
    }

    fn flow() -> Flow {
        ssh_flow("192.0.2.5 50000 198.51.100.1 22", Some("eth0".into())).unwrap()
    }

    #[test]
    fn default_drop_locks_out_and_ssh_rule_saves() {
        let mut p = Policy::default();
        assert_eq!(lockouts(&p, &flow(), None).len(), 1);
        p.rules.push(rule(Action::Accept));
        assert!(lockouts(&p, &flow(), None).is_empty());
    }

    #[test]
    fn fail_closed_app_rules_on_the_flow_lock_out_unless_fail_open() {
        let mut p = Policy::default();
        p.rules.push(rule(Action::Accept));
        let mut app = rule(Action::Drop);
        app.app = Some(rampart_ir::AppMatch {
            protocols: vec![rampart_ir::AppProtocol::Ssh],
            negate: true,
        });
        p.rules.insert(0, app);
        let l = lockouts(&p, &flow(), None);
        assert_eq!(l.len(), 1);
        assert!(l[0].1.reason.contains("fails closed"), "{}", l[0].1.reason);
        p.defaults.classifier_fail_open = true;
        assert!(
            lockouts(&p, &flow(), None).is_empty(),
            "an app rule is not a first-match drop"
        );
    }

    #[test]
    fn pessimistic_about_unknowns() {
        let mut p = Policy::default();
        let mut limited = rule(Action::Accept);
        limited.conn_limit = Some(3);
        p.rules.push(limited);
        assert_eq!(
            lockouts(&p, &flow(), None).len(),
            1,
            "limited accept not trusted"
        );
        p.zones.push(Zone {
            name: "wan".into(),
            interfaces: vec!["eth*".into()],
            networks: vec![],
            trusted: false,
            public_facing: false,
            description: None,
            loc: SourceLoc::default(),
        });
        let mut drop = rule(Action::Drop);
        drop.from = vec![Peer::Zone(ZoneId(0))];
        let mut accept = rule(Action::Accept);
        accept.name = "ok".into();
        p.rules = vec![drop, accept];
        let mut f = flow();
        assert_eq!(evaluate(&p, &f, None).action, Action::Drop);
        f.iif = Some("wlan0".into());
        assert_eq!(evaluate(&p, &f, None).action, Action::Accept);
        f.iif = None;
        assert_eq!(
            evaluate(&p, &f, None).action,
            Action::Drop,
            "unknown iface: assume drop matches"
        );
    }

    #[test]
    fn stateless_policy_needs_egress_reply() {
        let mut p = Policy::default();
        p.defaults.stateful = false;
        p.defaults.egress = Action::Drop;
        p.rules.push(rule(Action::Accept));
        let l = lockouts(&p, &flow(), None);
        assert_eq!(l.len(), 1);
        assert_eq!(l[0].0.direction, Direction::Egress);
    }

    #[test]
    fn ssh_connection_parse_rejects_garbage() {
        assert!(ssh_flow("nope", None).is_none());
        assert!(ssh_flow("2001:db8::1 1 2001:db8::2 22", None).is_some());
        let ll = ssh_flow("fe80::1%eth0 5000 fe80::2%eth0 22", None).unwrap();
        assert_eq!(ll.src, "fe80::1".parse::<IpAddr>().unwrap());
    }
}
