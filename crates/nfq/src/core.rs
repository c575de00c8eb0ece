//! The pure classifier: the policy's application-protocol rules, a bounded connection table and
//! a labeller decide, packet by packet, accept or drop, which rule decided, and which conntrack
//! mark the kernel should carry for the connection. No I/O; time is a parameter.

use std::net::IpAddr;

use rampart_engine::decode::{decode_ipv4, decode_ipv6, Ip};
use rampart_events::{Event, Flow, RuleRef, Verdict as EventVerdict};
use rampart_ir::{
    Action, AppProtocol, Direction, Family, L4Match, Peer, Policy, RuleId, APP_INSPECT_MAX_PACKETS,
};
use rampart_nft::app_queue::{ACCEPTED_CT_MARK, BLOCKED_CT_MARK};

use crate::flow::{packet_kind, proto_event_name, PacketKind, Tuple, L4};
use crate::table::{ConnState, ConnTable};

/// Names a packet's payload with at most one application protocol.
pub trait Labeller {
    /// The label of `ip`'s payload (`None`: unrecognised or nothing to label).
    fn label(&self, ip: &Ip<'_>) -> Option<AppProtocol>;
}

impl<F: Fn(&Ip<'_>) -> Option<AppProtocol>> Labeller for F {
    fn label(&self, ip: &Ip<'_>) -> Option<AppProtocol> {
        self(ip)
    }
}

/// The netfilter hook a packet was queued from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `prerouting` (treated as ingress: queue from `input`/`forward` to tell them apart).
    Prerouting,
    /// `input`.
    Input,
    /// `forward`.
    Forward,
    /// `output`.
    Output,
    /// `postrouting` (treated as egress).
    Postrouting,
}

impl Hook {
    /// The hook with the kernel's `NF_INET_*` number.
    pub fn from_nf(n: u8) -> Option<Self> {
        Some(match n {
            0 => Hook::Prerouting,
            1 => Hook::Input,
            2 => Hook::Forward,
            3 => Hook::Output,
            4 => Hook::Postrouting,
            _ => return None,
        })
    }

    fn direction(self) -> Direction {
        match self {
            Hook::Prerouting | Hook::Input => Direction::Ingress,
            Hook::Forward => Direction::Forward,
            Hook::Output | Hook::Postrouting => Direction::Egress,
        }
    }
}

/// Which way a packet travels relative to its connection, when the caller knows (conntrack).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Orientation {
    /// Not known: a packet of a connection the table does not hold is taken as its first.
    Unknown,
    /// Original direction.
    Original,
    /// Reply direction of the connection whose original tuple is `orig` (differs from the
    /// reversed packet tuple under NAT).
    Reply {
        /// The original-direction tuple.
        orig: Tuple,
    },
}

/// One queued packet.
#[derive(Clone, Copy, Debug)]
pub struct PacketIn<'a> {
    /// Where it was queued.
    pub hook: Hook,
    /// Input interface name, when any.
    pub iif: Option<&'a str>,
    /// Output interface name, when any.
    pub oif: Option<&'a str>,
    /// Orientation, when known.
    pub orientation: Orientation,
    /// The packet from its IP header on (as NFQUEUE delivers it; possibly truncated).
    pub data: &'a [u8],
}

/// Packet verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Let it continue (to the rest of the ruleset).
    Accept,
    /// Drop it.
    Drop,
    /// Reject it (an application rule with `action = "reject"`): the shell accepts it with
    /// `REJECT_MARK` in the packet mark and the ruleset's `app_reject_<hook>` chain rejects it.
    Reject,
}

/// Why a packet got its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An application rule dropped the connection with this packet.
    Blocked,
    /// The connection was blocked earlier.
    AlreadyBlocked,
    /// An application rule accepted the connection (or this echo request).
    Accepted,
    /// Inspected; no rule decided yet.
    Inspected,
    /// The inspection budget ran out without a decision.
    Exhausted,
    /// No application rule can match this connection (addresses, ports, zones, family).
    NoCandidateRule,
    /// Not inspected: no payload, an echo reply, or inspection already ended.
    NotInspected,
    /// Could not be decoded (or not TCP/UDP/ICMP echo): let through and counted.
    Undecodable,
}

impl Outcome {
    /// Snake-case name (metrics, events).
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Blocked => "blocked",
            Outcome::AlreadyBlocked => "already_blocked",
            Outcome::Accepted => "accepted",
            Outcome::Inspected => "inspected",
            Outcome::Exhausted => "exhausted",
            Outcome::NoCandidateRule => "no_candidate_rule",
            Outcome::NotInspected => "not_inspected",
            Outcome::Undecodable => "undecodable",
        }
    }

    /// Every outcome (for metrics).
    pub const ALL: [Outcome; 8] = [
        Outcome::Blocked,
        Outcome::AlreadyBlocked,
        Outcome::Accepted,
        Outcome::Inspected,
        Outcome::Exhausted,
        Outcome::NoCandidateRule,
        Outcome::NotInspected,
        Outcome::Undecodable,
    ];
}

/// What to do with one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The packet verdict.
    pub verdict: Verdict,
    /// Conntrack mark bits (within `app_queue::MARK_MASK`) to set on the connection.
    pub ct_mark: Option<u32>,
    /// Why.
    pub outcome: Outcome,
    /// The application rule that decided (blocked or accepted), if one did.
    pub rule: Option<RuleId>,
    /// The packet's label, when it was inspected.
    pub label: Option<AppProtocol>,
    /// The connection's original tuple and direction, when the packet belongs to one.
    pub conn: Option<(Tuple, Direction)>,
}

impl Decision {
    fn pass(outcome: Outcome) -> Self {
        Self {
            verdict: Verdict::Accept,
            ct_mark: None,
            outcome,
            rule: None,
            label: None,
            conn: None,
        }
    }
}

/// Table limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most connections tracked at once.
    pub max_conns: usize,
    /// Connections idle this long are forgotten.
    pub idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        // Why: 65 536 entries of ~100 B is ~6 MiB; conntrack's own default max on a small host is
        // of the same order. 300 s is conntrack's UDP stream timeout ballpark (120 s) doubled, and
        // inspection of a connection ends after a handful of packets anyway.
        Self {
            max_conns: 65_536,
            idle_timeout_ms: 300_000,
        }
    }
}

/// Counters (monotonic).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Packets seen.
    pub packets: u64,
    /// Packets accepted.
    pub accepted: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets per outcome, indexed like [`Outcome::ALL`].
    pub by_outcome: [u64; 8],
    /// Inspected packets per label (index of [`AppProtocol::ALL`]; the last slot: unrecognised).
    pub by_label: [u64; 12],
    /// Decisions per application rule (blocked or accepted connections), by rule position.
    pub by_rule: Vec<(RuleId, u64)>,
}

/// One application rule, resolved for matching.
#[derive(Clone, Debug)]
struct AppRule {
    id: RuleId,
    direction: Direction,
    from: Vec<Peer>,
    to: Vec<Peer>,
    services: Vec<L4Match>,
    family: Family,
    protocols: Vec<AppProtocol>,
    negate: bool,
    action: Action,
}

impl AppRule {
    fn label_matches(&self, label: Option<AppProtocol>) -> bool {
        let listed = label.is_some_and(|l| self.protocols.contains(&l));
        listed != self.negate
    }
}

/// Per-connection data the classifier keeps in the table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnData {
    direction: Direction,
    /// Positions in `Classifier::rules` whose static fields match the connection, in order.
    candidates: Vec<u16>,
    /// Last recognised label per orientation (0 original, 1 reply): an unrecognised payload
    /// after a recognised one continues that protocol (a TCP stream's later segments).
    last_label: [Option<AppProtocol>; 2],
    /// The rule that decided.
    rule: Option<RuleId>,
}

/// The classifier.
#[derive(Debug)]
pub struct Classifier<L> {
    policy: Policy,
    rules: Vec<AppRule>,
    table: ConnTable<ConnData>,
    labeller: L,
    counters: Counters,
    limits: Limits,
}

/// Errors building a classifier.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuildError {
    /// More application rules than the classifier indexes.
    #[error("the policy has {0} application-protocol rules; at most {max} are supported", max = MAX_APP_RULES)]
    TooManyRules(usize),
}

/// Most application rules (positions are kept as `u16` per connection).
pub const MAX_APP_RULES: usize = 4096;

impl<L: Labeller> Classifier<L> {
    /// A classifier for `policy`'s application-protocol rules.
    pub fn new(policy: &Policy, labeller: L, limits: Limits) -> Result<Self, BuildError> {
        let rules: Vec<AppRule> = policy
            .rules
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let app = r.app.as_ref()?;
                Some(AppRule {
                    id: RuleId(i as u32),
                    direction: r.direction,
                    from: r.from.clone(),
                    to: r.to.clone(),
                    services: r.services.clone(),
                    family: r.family,
                    protocols: app.protocols.clone(),
                    negate: app.negate,
                    action: r.action,
                })
            })
            .collect();
        if rules.len() > MAX_APP_RULES {
            return Err(BuildError::TooManyRules(rules.len()));
        }
        let by_rule = rules.iter().map(|r| (r.id, 0)).collect();
        Ok(Self {
            policy: policy.clone(),
            rules,
            table: ConnTable::new(limits.max_conns, limits.idle_timeout_ms),
            labeller,
            counters: Counters {
                by_rule,
                ..Counters::default()
            },
            limits,
        })
    }

    /// Replace the policy (reload). Connections decided under the old policy are forgotten;
    /// counters are kept for rules that still exist by name.
    pub fn replace_policy(&mut self, policy: &Policy) -> Result<(), BuildError>
    where
        L: Clone,
    {
        let mut next = Classifier::new(policy, self.labeller.clone(), self.limits)?;
        next.counters.packets = self.counters.packets;
        next.counters.accepted = self.counters.accepted;
        next.counters.dropped = self.counters.dropped;
        next.counters.by_outcome = self.counters.by_outcome;
        next.counters.by_label = self.counters.by_label;
        for (id, n) in &mut next.counters.by_rule {
            let name = &policy.rule(*id).name;
            if let Some((_, old)) = self
                .counters
                .by_rule
                .iter()
                .find(|(old_id, _)| &self.policy.rule(*old_id).name == name)
            {
                *n = *old;
            }
        }
        *self = next;
        Ok(())
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Number of application-protocol rules.
    pub fn app_rule_count(&self) -> usize {
        self.rules.len()
    }

    /// Counters so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Connections held, evicted and expired so far.
    pub fn table_stats(&self) -> (usize, u64, u64) {
        (self.table.len(), self.table.evicted(), self.table.expired())
    }

    /// Forget idle connections (bounded work; call periodically).
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.table.expire(now_ms, 4096)
    }

    /// Whether the table holds the connection `tuple` belongs to (then the caller need not ask
    /// conntrack for the orientation).
    pub fn knows(&self, tuple: &Tuple, now_ms: u64) -> bool {
        self.table.contains(tuple, now_ms)
    }

    /// Decide one packet.
    pub fn classify(&mut self, pkt: &PacketIn<'_>, now_ms: u64) -> Decision {
        let d = self.decide(pkt, now_ms);
        self.counters.packets += 1;
        match d.verdict {
            Verdict::Accept => self.counters.accepted += 1,
            Verdict::Drop | Verdict::Reject => self.counters.dropped += 1,
        }
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == d.outcome) {
            self.counters.by_outcome[i] += 1;
        }
        if matches!(d.outcome, Outcome::Blocked | Outcome::Accepted) {
            if let Some(id) = d.rule {
                if let Some((_, n)) = self.counters.by_rule.iter_mut().find(|(r, _)| *r == id) {
                    *n += 1;
                }
            }
        }
        d
    }

    fn decide(&mut self, pkt: &PacketIn<'_>, now_ms: u64) -> Decision {
        let Some(ip) = decode_l3(pkt.data) else {
            return Decision::pass(Outcome::Undecodable);
        };
        let (tuple, payload, echo_request) = match packet_kind(&ip) {
            PacketKind::Stream { tuple, payload } => (tuple, payload, false),
            PacketKind::Echo {
                tuple,
                request,
                data: _,
            } => (tuple, &[][..], request),
            PacketKind::Other => return Decision::pass(Outcome::Undecodable),
        };
        let is_echo = matches!(tuple.l4, L4::Echo { .. });
        // Why: for echo the "payload" that matters is the whole message; the labeller sees `ip`.
        let carries_data = if is_echo {
            echo_request
        } else {
            !payload.is_empty()
        };

        if !self.table.contains(&tuple, now_ms) {
            let (orig, reply) = match pkt.orientation {
                Orientation::Reply { orig } => (orig, true),
                Orientation::Original | Orientation::Unknown => (tuple, false),
            };
            if is_echo && !echo_request && !reply {
                // An echo reply we never saw the request of: nothing to inspect.
                return Decision::pass(Outcome::NotInspected);
            }
            let direction = if reply {
                match pkt.hook.direction() {
                    Direction::Ingress => Direction::Egress,
                    Direction::Egress => Direction::Ingress,
                    Direction::Forward => Direction::Forward,
                }
            } else {
                pkt.hook.direction()
            };
            // Interfaces of the original direction: a reply leaves by the interface the
            // original came in on, and vice versa.
            let (iif, oif) = if reply {
                (pkt.oif, pkt.iif)
            } else {
                (pkt.iif, pkt.oif)
            };
            let candidates = self.candidates(direction, &orig, iif, oif);
            let no_candidates = candidates.is_empty();
            let conn = self.table.insert(
                orig,
                ConnData {
                    direction,
                    candidates,
                    last_label: [None, None],
                    rule: None,
                },
                now_ms,
            );
            if no_candidates && !is_echo {
                conn.state = ConnState::Accepted;
                return Decision {
                    ct_mark: Some(ACCEPTED_CT_MARK),
                    conn: Some((orig, direction)),
                    ..Decision::pass(Outcome::NoCandidateRule)
                };
            }
        }
        let Some(conn) = self.table.get_mut(&tuple, now_ms) else {
            // Why: the entry was inserted or found just above with the same `now_ms`.
            return Decision::pass(Outcome::Undecodable);
        };
        let conn_ref = Some((conn.orig, conn.data.direction));
        match conn.state {
            ConnState::Blocked => {
                return Decision {
                    verdict: Verdict::Drop,
                    ct_mark: None,
                    outcome: Outcome::AlreadyBlocked,
                    rule: conn.data.rule,
                    label: None,
                    conn: conn_ref,
                }
            }
            ConnState::Accepted | ConnState::Exhausted => {
                return Decision {
                    conn: conn_ref,
                    ..Decision::pass(Outcome::NotInspected)
                }
            }
            ConnState::Inspecting => {}
        }
        if !carries_data {
            return Decision {
                conn: conn_ref,
                ..Decision::pass(Outcome::NotInspected)
            };
        }
        if conn.data.candidates.is_empty() {
            return Decision {
                conn: conn_ref,
                ..Decision::pass(Outcome::NoCandidateRule)
            };
        }
        let side = usize::from(tuple != conn.orig);
        let mut label = self.labeller.label(&ip);
        match label {
            Some(l) => conn.data.last_label[side] = Some(l),
            None => label = conn.data.last_label[side],
        }
        let slot = label
            .and_then(|l| AppProtocol::ALL.iter().position(|p| *p == l))
            .unwrap_or(AppProtocol::ALL.len());
        self.counters.by_label[slot] += 1;
        if !is_echo {
            conn.inspected = conn.inspected.saturating_add(1);
        }
        let decided = conn
            .data
            .candidates
            .iter()
            .filter_map(|&i| self.rules.get(usize::from(i)))
            .find(|r| r.label_matches(label));
        match decided {
            Some(rule) if rule.action == Action::Accept => {
                let ct_mark = if is_echo {
                    // Why: every echo request is inspected; accepting one says nothing of the next.
                    None
                } else {
                    conn.state = ConnState::Accepted;
                    conn.data.rule = Some(rule.id);
                    Some(ACCEPTED_CT_MARK)
                };
                Decision {
                    verdict: Verdict::Accept,
                    ct_mark,
                    outcome: Outcome::Accepted,
                    rule: Some(rule.id),
                    label,
                    conn: conn_ref,
                }
            }
            Some(rule) => {
                conn.state = ConnState::Blocked;
                conn.data.rule = Some(rule.id);
                Decision {
                    // The packet that decided gets the rule's action; the connection's later
                    // packets are dropped (IR `AppMatch`), by the table and the BLOCKED mark.
                    verdict: if rule.action == Action::Reject {
                        Verdict::Reject
                    } else {
                        Verdict::Drop
                    },
                    ct_mark: Some(BLOCKED_CT_MARK),
                    outcome: Outcome::Blocked,
                    rule: Some(rule.id),
                    label,
                    conn: conn_ref,
                }
            }
            None if !is_echo && conn.inspected >= APP_INSPECT_MAX_PACKETS => {
                conn.state = ConnState::Exhausted;
                Decision {
                    verdict: Verdict::Accept,
                    ct_mark: Some(ACCEPTED_CT_MARK),
                    outcome: Outcome::Exhausted,
                    rule: None,
                    label,
                    conn: conn_ref,
                }
            }
            None => Decision {
                label,
                conn: conn_ref,
                ..Decision::pass(Outcome::Inspected)
            },
        }
    }

    /// Application rules of `direction` whose static fields match the original tuple.
    fn candidates(
        &self,
        direction: Direction,
        orig: &Tuple,
        iif: Option<&str>,
        oif: Option<&str>,
    ) -> Vec<u16> {
        let (iif, oif) = match direction {
            Direction::Ingress => (iif, None),
            Direction::Egress => (None, oif),
            Direction::Forward => (iif, oif),
        };
        self.rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.direction == direction)
            .filter(|(_, r)| match r.family {
                Family::Any => true,
                Family::V4 => orig.src.is_ipv4(),
                Family::V6 => orig.src.is_ipv6(),
            })
            .filter(|(_, r)| side_matches(&self.policy, &r.from, orig.src, iif))
            .filter(|(_, r)| side_matches(&self.policy, &r.to, orig.dst, oif))
            .filter(|(_, r)| {
                r.services.is_empty() || r.services.iter().any(|s| service_matches(s, orig))
            })
            .map(|(i, _)| i as u16)
            .collect()
    }

    /// The event for a connection this decision blocked (`None` unless `outcome` is
    /// [`Outcome::Blocked`]). `unix_ns` is the wall-clock time to stamp it with.
    pub fn block_event(&self, d: &Decision, unix_ns: u64) -> Option<Event> {
        if d.outcome != Outcome::Blocked {
            return None;
        }
        let (orig, direction) = d.conn?;
        let id = d.rule?;
        let rule = self.policy.rules.get(id.0 as usize)?;
        let label = d.label.map_or("unrecognised", AppProtocol::as_str);
        let mut detail = serde_json::Map::new();
        detail.insert("label".into(), label.into());
        detail.insert("direction".into(), direction.as_str().into());
        if let Some(app) = &rule.app {
            let listed: Vec<&str> = app.protocols.iter().map(|p| p.as_str()).collect();
            detail.insert(
                "app_match".into(),
                format!(
                    "{}{}",
                    if app.negate { "not " } else { "" },
                    listed.join(",")
                )
                .into(),
            );
        }
        Some(Event {
            timestamp: rampart_events::rfc3339_utc(unix_ns),
            event_type: "app".into(),
            component: "nfq".into(),
            flow: Some(Flow {
                src_ip: orig.src,
                src_port: orig.src_port(),
                dest_ip: orig.dst,
                dest_port: orig.dst_port(),
                proto: proto_event_name(orig.protocol),
            }),
            verdict: EventVerdict::Block,
            rule: Some(RuleRef {
                id,
                name: rule.name.clone(),
                loc: rule.loc.clone(),
            }),
            techniques: rule.mitigates.clone(),
            reason: format!(
                "application protocol {label} matched rule {} ({})",
                rule.name,
                rule.action.as_str()
            ),
            detail,
        })
    }
}

/// Decode an IP packet (version from the first nibble).
pub fn decode_l3(data: &[u8]) -> Option<Ip<'_>> {
    match data.first()? >> 4 {
        4 => decode_ipv4(data).ok(),
        6 => decode_ipv6(data).ok(),
        _ => None,
    }
}

/// The tuple of a queued packet, if it is one the classifier tracks.
pub fn tuple_of(data: &[u8]) -> Option<Tuple> {
    let ip = decode_l3(data)?;
    match packet_kind(&ip) {
        PacketKind::Stream { tuple, .. } | PacketKind::Echo { tuple, .. } => Some(tuple),
        PacketKind::Other => None,
    }
}

fn iface_matches(pattern: &str, iface: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => iface.starts_with(prefix),
        None => pattern == iface,
    }
}

fn side_matches(policy: &Policy, peers: &[Peer], addr: IpAddr, iface: Option<&str>) -> bool {
    peers.is_empty()
        || peers.iter().any(|p| match p {
            Peer::Net(n) => n.contains(&addr),
            Peer::Set(s) => policy
                .sets
                .get(s.0 as usize)
                .is_some_and(|set| set.elements.iter().any(|n| n.contains(&addr))),
            Peer::Zone(z) => policy.zones.get(z.0 as usize).is_some_and(|zone| {
                (zone.interfaces.is_empty()
                    || iface.is_some_and(|i| zone.interfaces.iter().any(|p| iface_matches(p, i))))
                    && (zone.networks.is_empty() || zone.networks.iter().any(|n| n.contains(&addr)))
            }),
        })
}

fn service_matches(s: &L4Match, orig: &Tuple) -> bool {
    if let Some(p) = s.protocol {
        let family_ok = match p {
            rampart_ir::proto::ICMP => orig.src.is_ipv4(),
            rampart_ir::proto::ICMPV6 => orig.src.is_ipv6(),
            _ => true,
        };
        if orig.protocol != p || !family_ok {
            return false;
        }
    }
    let ports_ok = |ranges: &[rampart_ir::PortRange], port: Option<u16>| {
        ranges.is_empty() || port.is_some_and(|p| ranges.iter().any(|r| r.contains(p)))
    };
    if !ports_ok(&s.src_ports, orig.src_port()) || !ports_ok(&s.dst_ports, orig.dst_port()) {
        return false;
    }
    if !s.icmp_types.is_empty() {
        // Why: the echo connections the classifier tracks are keyed by their request.
        let request = if orig.protocol == rampart_ir::proto::ICMPV6 {
            128
        } else {
            8
        };
        return matches!(orig.l4, L4::Echo { .. }) && s.icmp_types.contains(&request);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_ir::{AppMatch, PortRange, Rule, TechniqueId};

    /// Test labeller: the first payload byte names the protocol ('S' ssh, 'H' http, 'T' tls),
    /// and echo data of at least 512 bytes is a tunnel. Real labelling is the engine's.
    fn fake_label(ip: &Ip<'_>) -> Option<AppProtocol> {
        match packet_kind(ip) {
            PacketKind::Stream { payload, .. } => match payload.first()? {
                b'S' => Some(AppProtocol::Ssh),
                b'H' => Some(AppProtocol::Http),
                b'T' => Some(AppProtocol::Tls),
                _ => None,
            },
            PacketKind::Echo { data, .. } if data.len() >= 512 => Some(AppProtocol::IcmpTunnel),
            _ => None,
        }
    }

    const CLIENT: [u8; 4] = [192, 0, 2, 10];
    const SERVER: [u8; 4] = [192, 0, 2, 20];

    fn ipv4(src: [u8; 4], dst: [u8; 4], protocol: u8, l4: &[u8]) -> Vec<u8> {
        let total = 20 + l4.len();
        let mut p = vec![
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0x40,
            0,
            64,
            protocol,
            0,
            0,
        ];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(l4);
        p
    }

    fn tcp(src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&sp.to_be_bytes());
        l4.extend_from_slice(&dp.to_be_bytes());
        l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        l4.extend_from_slice(payload);
        ipv4(src, dst, 6, &l4)
    }

    fn echo(src: [u8; 4], dst: [u8; 4], request: bool, id: u16, data_len: usize) -> Vec<u8> {
        let mut l4 = vec![if request { 8 } else { 0 }, 0, 0, 0];
        l4.extend_from_slice(&id.to_be_bytes());
        l4.extend_from_slice(&[0, 1]);
        l4.extend(std::iter::repeat_n(0x61, data_len));
        ipv4(src, dst, 1, &l4)
    }

    fn app_rule(
        name: &str,
        port: Option<u16>,
        protocols: &[AppProtocol],
        negate: bool,
        action: Action,
    ) -> Rule {
        Rule {
            services: port
                .map(|p| {
                    vec![L4Match {
                        protocol: Some(6),
                        src_ports: vec![],
                        dst_ports: vec![PortRange::single(p)],
                        icmp_types: vec![],
                        service: None,
                    }]
                })
                .unwrap_or_default(),
            app: Some(AppMatch {
                protocols: protocols.to_vec(),
                negate,
            }),
            mitigates: vec![TechniqueId("T1572".into())],
            ..Rule::new(name, Direction::Ingress, action)
        }
    }

    fn policy() -> Policy {
        Policy {
            rules: vec![
                Rule::new("plain", Direction::Ingress, Action::Accept),
                app_rule(
                    "no-ssh-8080",
                    Some(8080),
                    &[AppProtocol::Ssh],
                    false,
                    Action::Drop,
                ),
                app_rule(
                    "tls-only-443",
                    Some(443),
                    &[AppProtocol::Tls],
                    true,
                    Action::Drop,
                ),
                Rule {
                    services: vec![L4Match {
                        protocol: Some(1),
                        src_ports: vec![],
                        dst_ports: vec![],
                        icmp_types: vec![],
                        service: None,
                    }],
                    ..app_rule(
                        "no-icmp-tunnel",
                        None,
                        &[AppProtocol::IcmpTunnel],
                        false,
                        Action::Drop,
                    )
                },
            ],
            ..Policy::default()
        }
    }

    type Fake = fn(&Ip<'_>) -> Option<AppProtocol>;

    fn classifier() -> Classifier<Fake> {
        Classifier::new(&policy(), fake_label as Fake, Limits::default()).unwrap()
    }

    fn input(data: &[u8]) -> PacketIn<'_> {
        PacketIn {
            hook: Hook::Input,
            iif: Some("eth0"),
            oif: None,
            orientation: Orientation::Unknown,
            data,
        }
    }

    fn output_reply(data: &[u8], orig: Tuple) -> PacketIn<'_> {
        PacketIn {
            hook: Hook::Output,
            iif: None,
            oif: Some("eth0"),
            orientation: Orientation::Reply { orig },
            data,
        }
    }

    #[test]
    fn a_rejecting_rule_rejects_the_deciding_packet_and_drops_the_rest() {
        let mut p = policy();
        p.rules[1].action = Action::Reject;
        let mut c = Classifier::new(&p, fake_label as Fake, Limits::default()).unwrap();
        let banner = tcp(SERVER, CLIENT, 8080, 40000, b"SSH-2.0-OpenSSH_9.2\r\n");
        let orig = tuple_of(&banner).unwrap().reversed();
        let d = c.classify(&output_reply(&banner, orig), 1);
        assert_eq!(
            (d.verdict, d.outcome, d.ct_mark),
            (Verdict::Reject, Outcome::Blocked, Some(BLOCKED_CT_MARK))
        );
        // The retransmission (or anything else of the connection) is dropped, not rejected.
        let d2 = c.classify(&output_reply(&banner, orig), 2);
        assert_eq!(
            (d2.verdict, d2.outcome),
            (Verdict::Drop, Outcome::AlreadyBlocked)
        );
    }

    #[test]
    fn only_app_rules_are_loaded() {
        assert_eq!(classifier().app_rule_count(), 3);
    }

    #[test]
    fn ssh_banner_in_reply_direction_blocks_and_marks() {
        let mut c = classifier();
        let banner = tcp(SERVER, CLIENT, 8080, 40000, b"SSH-2.0-OpenSSH_9.2\r\n");
        let orig = tuple_of(&banner).unwrap().reversed();
        let d = c.classify(&output_reply(&banner, orig), 1);
        assert_eq!(d.verdict, Verdict::Drop);
        assert_eq!(d.outcome, Outcome::Blocked);
        assert_eq!(d.ct_mark, Some(BLOCKED_CT_MARK));
        assert_eq!(d.rule, Some(RuleId(1)));
        assert_eq!(d.conn, Some((orig, Direction::Ingress)));
        let ev = c.block_event(&d, 1_800_000_000_000_000_000).unwrap();
        assert_eq!(ev.rule.unwrap().name, "no-ssh-8080");
        assert_eq!(ev.flow.unwrap().dest_port, Some(8080));
        assert_eq!(ev.detail["label"], "ssh");
        assert_eq!(ev.techniques, vec![TechniqueId("T1572".into())]);
        // Every later packet of the connection, either way, is dropped without a new event.
        let later = tcp(CLIENT, SERVER, 40000, 8080, b"HELLO");
        let d2 = c.classify(&input(&later), 2);
        assert_eq!(
            (d2.verdict, d2.outcome),
            (Verdict::Drop, Outcome::AlreadyBlocked)
        );
        assert!(c.block_event(&d2, 0).is_none());
    }

    #[test]
    fn http_on_8080_is_inspected_until_the_budget_then_released() {
        let mut c = classifier();
        let req = tcp(CLIENT, SERVER, 40001, 8080, b"HTTP-ish GET");
        let d = c.classify(&input(&req), 1);
        assert_eq!(
            (d.verdict, d.outcome),
            (Verdict::Accept, Outcome::Inspected)
        );
        assert_eq!(d.label, Some(AppProtocol::Http));
        for i in 2..APP_INSPECT_MAX_PACKETS {
            let d = c.classify(&input(&req), u64::from(i));
            assert_eq!(d.outcome, Outcome::Inspected, "packet {i}");
        }
        let d = c.classify(&input(&req), 100);
        assert_eq!(d.outcome, Outcome::Exhausted);
        assert_eq!(d.ct_mark, Some(ACCEPTED_CT_MARK));
        let d = c.classify(&input(&tcp(CLIENT, SERVER, 40001, 8080, b"SSH-late")), 101);
        assert_eq!(
            (d.verdict, d.outcome),
            (Verdict::Accept, Outcome::NotInspected)
        );
    }

    #[test]
    fn negated_rule_drops_non_tls_but_continuation_segments_keep_the_label() {
        let mut c = classifier();
        let hello = tcp(CLIENT, SERVER, 40002, 443, b"T\x16\x03\x01");
        assert_eq!(c.classify(&input(&hello), 1).verdict, Verdict::Accept);
        // A later unrecognised segment of the same stream continues TLS.
        let cont = tcp(CLIENT, SERVER, 40002, 443, b"\x00\x01more");
        let d = c.classify(&input(&cont), 2);
        assert_eq!(
            (d.verdict, d.label),
            (Verdict::Accept, Some(AppProtocol::Tls))
        );
        // Plain HTTP on 443 is dropped.
        let http = tcp(CLIENT, SERVER, 40003, 443, b"HTTP GET /");
        let d = c.classify(&input(&http), 3);
        assert_eq!((d.verdict, d.rule), (Verdict::Drop, Some(RuleId(2))));
    }

    #[test]
    fn no_candidate_rule_releases_the_connection_at_once() {
        let mut c = classifier();
        let p = tcp(CLIENT, SERVER, 40004, 22, b"SSH-2.0-x");
        let d = c.classify(&input(&p), 1);
        assert_eq!(
            (d.verdict, d.outcome),
            (Verdict::Accept, Outcome::NoCandidateRule)
        );
        assert_eq!(d.ct_mark, Some(ACCEPTED_CT_MARK));
    }

    #[test]
    fn empty_segments_are_not_counted() {
        let mut c = classifier();
        let ack = tcp(CLIENT, SERVER, 40005, 8080, b"");
        for t in 0..20 {
            let d = c.classify(&input(&ack), t);
            assert_eq!(d.outcome, Outcome::NotInspected);
        }
        let banner = tcp(SERVER, CLIENT, 8080, 40005, b"SSH-2.0-x");
        let d = c.classify(&output_reply(&banner, tuple_of(&ack).unwrap()), 30);
        assert_eq!(d.verdict, Verdict::Drop);
    }

    #[test]
    fn every_echo_request_is_inspected() {
        let mut c = classifier();
        for seq in 0..20u64 {
            let d = c.classify(&input(&echo(CLIENT, SERVER, true, 9, 56)), seq);
            assert_eq!(
                (d.verdict, d.outcome),
                (Verdict::Accept, Outcome::Inspected),
                "{seq}"
            );
            assert_eq!(d.ct_mark, None);
        }
        let d = c.classify(&input(&echo(CLIENT, SERVER, true, 9, 1000)), 30);
        assert_eq!((d.verdict, d.outcome), (Verdict::Drop, Outcome::Blocked));
        let d = c.classify(&input(&echo(CLIENT, SERVER, true, 9, 56)), 31);
        assert_eq!(d.verdict, Verdict::Drop, "the echo session stays blocked");
        let d = c.classify(&input(&echo(CLIENT, SERVER, true, 10, 56)), 32);
        assert_eq!(
            d.verdict,
            Verdict::Accept,
            "another identifier is another session"
        );
        let d = c.classify(&input(&echo(SERVER, CLIENT, false, 77, 56)), 33);
        assert_eq!(d.outcome, Outcome::NotInspected, "unsolicited reply");
    }

    #[test]
    fn garbage_is_let_through_and_counted() {
        let mut c = classifier();
        for junk in [&b""[..], b"\x45", b"\x60\x00", b"\xff\xff\xff"] {
            let d = c.classify(&input(junk), 0);
            assert_eq!(
                (d.verdict, d.outcome),
                (Verdict::Accept, Outcome::Undecodable)
            );
        }
        assert_eq!(c.counters().by_outcome[7], 4);
    }

    #[test]
    fn reload_forgets_decisions_and_keeps_counters_by_name() {
        let mut c = classifier();
        let banner = tcp(SERVER, CLIENT, 8080, 40006, b"SSH-2.0-x");
        let orig = tuple_of(&banner).unwrap().reversed();
        assert_eq!(
            c.classify(&output_reply(&banner, orig), 1).verdict,
            Verdict::Drop
        );
        let mut p = policy();
        p.rules.remove(0);
        c.replace_policy(&p).unwrap();
        assert_eq!(
            c.counters().by_rule[0],
            (RuleId(0), 1),
            "no-ssh-8080 moved to id 0"
        );
        assert_eq!(c.table_stats().0, 0);
        assert_eq!(c.counters().dropped, 1);
    }

    #[test]
    fn full_table_evicts_and_stays_bounded() {
        let limits = Limits {
            max_conns: 16,
            idle_timeout_ms: 1_000,
        };
        let mut c = Classifier::new(&policy(), fake_label as Fake, limits).unwrap();
        for port in 0..1000u16 {
            let p = tcp(CLIENT, SERVER, 10_000 + port, 8080, b"HTTP");
            c.classify(&input(&p), u64::from(port));
        }
        let (len, evicted, _) = c.table_stats();
        assert_eq!(len, 16);
        assert_eq!(evicted, 1000 - 16);
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Whatever bytes arrive, the classifier answers without panicking, keeps its table
            /// bounded, and a blocked connection never gets an accept afterwards.
            #[test]
            fn arbitrary_traffic_is_safe_and_blocks_stick(
                packets in proptest::collection::vec(
                    (0u16..6, any::<bool>(), prop_oneof![Just(b'S'), Just(b'H'), Just(b'x')], 0usize..3),
                    1..200,
                ),
                junk in proptest::collection::vec(any::<u8>(), 0..80),
            ) {
                let limits = Limits { max_conns: 4, idle_timeout_ms: 1_000_000 };
                let mut c = Classifier::new(&policy(), fake_label as Fake, limits).unwrap();
                let mut blocked = std::collections::HashSet::new();
                let _ = c.classify(&input(&junk), 0);
                for (i, (port, reply, first, len)) in packets.into_iter().enumerate() {
                    let payload: Vec<u8> = std::iter::once(first).chain(std::iter::repeat_n(b'.', len)).take(len).collect();
                    let sport = 20_000 + port;
                    let p = if reply {
                        tcp(SERVER, CLIENT, 8080, sport, &payload)
                    } else {
                        tcp(CLIENT, SERVER, sport, 8080, &payload)
                    };
                    let orientation = if reply {
                        Orientation::Reply { orig: tuple_of(&p).unwrap().reversed() }
                    } else {
                        Orientation::Original
                    };
                    let pkt = PacketIn { hook: if reply { Hook::Output } else { Hook::Input }, iif: None, oif: None, orientation, data: &p };
                    let known = c.knows(&tuple_of(&p).unwrap(), i as u64);
                    let d = c.classify(&pkt, i as u64);
                    prop_assert!(c.table_stats().0 <= 4);
                    if known && blocked.contains(&sport) {
                        prop_assert_eq!(d.verdict, Verdict::Drop);
                    }
                    if !known {
                        blocked.remove(&sport);
                    }
                    if d.verdict == Verdict::Drop {
                        prop_assert!(d.rule.is_some());
                        blocked.insert(sport);
                    }
                }
            }
        }
    }
}
