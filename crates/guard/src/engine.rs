//! The guard's state machine: one captured frame (with the bridge port it arrived on) in,
//! binding changes and events out. It makes the same decisions as the kernel table (so the
//! events say what the kernel did) plus what the kernel cannot do: learn bindings, notice
//! chaddr spoofing and releases from foreign ports, track stations, match canary answers.
//!
//! Time is an input: `now_ns`, nanoseconds since the Unix epoch.

use std::net::{IpAddr, Ipv4Addr};

use rampart_events::{Event, Flow, Verdict};
use rampart_ir::TechniqueId;
use serde_json::{json, Map, Value};

use crate::bindings::{BindingTable, Change};
use crate::canary::{Canary, Query};
use crate::config::Config;
use crate::decode::{self, DhcpKind, Ipv6Upper, Mac, NameProtocol};
use crate::inspect::{self, DaiVerdict, Dedupe, NdVerdict, RateLimiter, StationChange, Stations};

/// What one input produced.
#[derive(Debug, Default)]
pub struct Output {
    /// Binding changes, to mirror into the kernel set and persist.
    pub changes: Vec<Change>,
    /// Events to write.
    pub events: Vec<Event>,
}

/// The guard's whole state.
#[derive(Debug)]
pub struct Guard {
    cfg: Config,
    bindings: BindingTable,
    stations: Stations,
    rate: RateLimiter,
    rate6: RateLimiter,
    arp_rate: RateLimiter,
    canary: Canary,
    dedupe: Dedupe,
    malformed_dhcpv6: u64,
}

struct Ev<'a> {
    kind: &'a str,
    verdict: Verdict,
    technique: &'a str,
    reason: String,
    port: &'a str,
    mac: Option<Mac>,
    flow: Option<Flow>,
    extra: Vec<(&'a str, Value)>,
}

fn event(now_ns: u64, ev: Ev<'_>) -> Event {
    let mut detail = Map::new();
    detail.insert("kind".into(), json!(ev.kind));
    detail.insert("port".into(), json!(ev.port));
    if let Some(m) = ev.mac {
        detail.insert("mac".into(), json!(m.to_string()));
    }
    for (k, v) in ev.extra {
        detail.insert(k.into(), v);
    }
    Event {
        timestamp: rampart_events::rfc3339_utc(now_ns),
        event_type: "l2".into(),
        component: "guard".into(),
        flow: ev.flow,
        verdict: ev.verdict,
        rule: None,
        techniques: vec![TechniqueId(ev.technique.into())],
        reason: ev.reason,
        detail,
    }
}

fn dai_drop_event<'a>(
    verdict: &DaiVerdict,
    arp: &decode::Arp,
    eth_src: Mac,
    port: &'a str,
) -> Ev<'a> {
    let why = match verdict {
        DaiVerdict::DropSourceMismatch => format!(
            "Ethernet source {eth_src} differs from ARP sender {}",
            arp.sender_mac
        ),
        DaiVerdict::DropContradicts {
            bound_mac,
            bound_port,
        } => format!(
            "{} claimed by {} but bound to {bound_mac} on {bound_port}",
            arp.sender_ip, arp.sender_mac
        ),
        _ => format!(
            "{} claimed by {} has no binding on {port}",
            arp.sender_ip, arp.sender_mac
        ),
    };
    let mut extra = vec![
        ("ip", json!(arp.sender_ip.to_string())),
        ("arp_sender_mac", json!(arp.sender_mac.to_string())),
        ("arp_target_ip", json!(arp.target_ip.to_string())),
        ("arp_op", json!(arp.op)),
    ];
    if let DaiVerdict::DropContradicts {
        bound_mac,
        bound_port,
    } = verdict
    {
        extra.push(("bound_mac", json!(bound_mac.to_string())));
        extra.push(("bound_port", json!(bound_port)));
    }
    Ev {
        kind: "arp_inspection_drop",
        verdict: Verdict::Block,
        technique: "T1557.002",
        reason: format!("ARP dropped: {why}"),
        port,
        mac: Some(eth_src),
        flow: None,
        extra,
    }
}

fn udp_flow(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> Option<Flow> {
    Some(Flow {
        src_ip: src,
        src_port: Some(sport),
        dest_ip: dst,
        dest_port: Some(dport),
        proto: "UDP".into(),
    })
}

impl Guard {
    /// A guard over `cfg` starting from `bindings` (loaded from the persisted file).
    pub fn new(cfg: Config, bindings: BindingTable) -> Self {
        let rate = RateLimiter::new(cfg.rate_limit.per_second, cfg.rate_limit.burst);
        // The kernel keeps DHCPv6 client messages in their own per-port bucket (`@dhcp6_rate`).
        let rate6 = RateLimiter::new(cfg.rate_limit.per_second, cfg.rate_limit.burst);
        let arp_rate = RateLimiter::new(cfg.arp_rate_limit.per_second, cfg.arp_rate_limit.burst);
        Self {
            cfg,
            bindings,
            stations: Stations::default(),
            rate,
            rate6,
            arp_rate,
            canary: Canary::default(),
            dedupe: Dedupe::default(),
            malformed_dhcpv6: 0,
        }
    }

    /// Switch to a new configuration in place (SIGHUP reload): the bindings, stations, pending
    /// canary names and de-duplication state are kept; the rate limiters start afresh only
    /// when their limits changed.
    pub fn reconfigure(&mut self, cfg: Config) {
        if cfg.rate_limit != self.cfg.rate_limit {
            self.rate = RateLimiter::new(cfg.rate_limit.per_second, cfg.rate_limit.burst);
            self.rate6 = RateLimiter::new(cfg.rate_limit.per_second, cfg.rate_limit.burst);
        }
        if cfg.arp_rate_limit != self.cfg.arp_rate_limit {
            self.arp_rate =
                RateLimiter::new(cfg.arp_rate_limit.per_second, cfg.arp_rate_limit.burst);
        }
        self.cfg = cfg;
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The binding table.
    pub fn bindings(&self) -> &BindingTable {
        &self.bindings
    }

    /// DHCPv6 messages that failed to decode (each also an event, de-duplicated).
    pub fn malformed_dhcpv6(&self) -> u64 {
        self.malformed_dhcpv6
    }

    /// Expire bindings and pending requests.
    pub fn tick(&mut self, now_ns: u64) -> Output {
        let now_s = now_ns / 1_000_000_000;
        self.canary.expire(now_s);
        let changes = self.bindings.expire(now_s);
        let events = changes
            .iter()
            .filter_map(|c| match c {
                Change::Unbind(b) => Some(event(
                    now_ns,
                    Ev {
                        kind: "dhcp_binding_expired",
                        verdict: Verdict::Allow,
                        technique: "T1557.003",
                        reason: format!("lease of {} for {} expired", b.ip, b.mac),
                        port: &b.port,
                        mac: Some(b.mac),
                        flow: None,
                        extra: vec![("ip", json!(b.ip.to_string()))],
                    },
                )),
                Change::Unbind6(b) => Some(event(
                    now_ns,
                    Ev {
                        kind: "dhcpv6_binding_expired",
                        verdict: Verdict::Allow,
                        technique: "T1557.003",
                        reason: format!("valid lifetime of {} for {} expired", b.ip, b.mac),
                        port: &b.port,
                        mac: Some(b.mac),
                        flow: None,
                        extra: vec![
                            ("ip", json!(b.ip.to_string())),
                            ("duid", json!(crate::bindings6::duid_hex(&b.duid))),
                        ],
                    },
                )),
                Change::Bind { .. } | Change::Bind6 { .. } => None,
            })
            .collect();
        Output { changes, events }
    }

    /// A canary round: one query per configured protocol (`random`: one value each).
    pub fn canary_round(&mut self, random: &[u64], now_ns: u64) -> Vec<Query> {
        let Some(c) = &self.cfg.canary else {
            return Vec::new();
        };
        let protocols = c.protocols.clone();
        self.canary
            .round(&protocols, random, now_ns / 1_000_000_000)
    }

    /// Host role: one frame received on the gateway's interface. ARP claiming the gateway's
    /// IP with another MAC is what the host table drops (event `gateway_arp_spoof`); other ARP
    /// feeds the station table (arpwatch events).
    pub fn on_host_frame(&mut self, interface: &str, frame: &[u8], now_ns: u64) -> Output {
        let mut out = Output::default();
        let Some(gw) = self.cfg.gateway.clone() else {
            return out;
        };
        let Some(eth) = decode::ethernet(frame) else {
            return out;
        };
        if eth.ethertype != decode::ETHERTYPE_ARP || eth.vlan_count > 0 {
            return out;
        }
        let Some(arp) = decode::arp(eth.payload) else {
            return out;
        };
        if arp.sender_ip == gw.ip && arp.sender_mac != gw.mac {
            self.emit_once(
                &mut out,
                now_ns,
                format!("gw-spoof/{}", arp.sender_mac),
                || Ev {
                    kind: "gateway_arp_spoof",
                    verdict: Verdict::Block,
                    technique: "T1557.002",
                    reason: format!(
                        "ARP claims gateway {} is at {} (pinned {}): dropped",
                        gw.ip, arp.sender_mac, gw.mac
                    ),
                    port: interface,
                    mac: Some(eth.src),
                    flow: None,
                    extra: vec![
                        ("ip", json!(gw.ip.to_string())),
                        ("arp_sender_mac", json!(arp.sender_mac.to_string())),
                        ("bound_mac", json!(gw.mac.to_string())),
                    ],
                },
            );
            return out;
        }
        self.track_station(&mut out, interface, &arp, now_ns);
        out
    }

    /// One frame captured on bridge `port` (ingress direction).
    pub fn on_frame(&mut self, port: &str, frame: &[u8], now_ns: u64) -> Output {
        let mut out = Output::default();
        let Some(eth) = decode::ethernet(frame) else {
            return out;
        };
        let trusted = self.cfg.is_trusted(port);
        if eth.vlan_count > 0 {
            // The kernel drops tagged frames from untrusted ports before any other check.
            if !trusted {
                self.emit_once(&mut out, now_ns, format!("vlan/{port}/{}", eth.src), || {
                    Ev {
                        kind: "tagged_frame_dropped",
                        verdict: Verdict::Block,
                        technique: "T1557",
                        reason: format!(
                            "802.1Q-tagged frame from {} on untrusted port {port}",
                            eth.src
                        ),
                        port,
                        mac: Some(eth.src),
                        flow: None,
                        extra: vec![("vlan", json!(eth.vlans[0]))],
                    }
                });
            }
            return out;
        }
        match eth.ethertype {
            decode::ETHERTYPE_ARP => {
                if let Some(arp) = decode::arp(eth.payload) {
                    self.on_arp(&mut out, port, trusted, eth.src, &arp, now_ns);
                }
            }
            decode::ETHERTYPE_IPV4 => {
                if let Some(ip) = decode::ipv4(eth.payload) {
                    if let Some(udp) = ip.udp {
                        self.on_udp4(&mut out, port, trusted, eth.src, &ip, &udp, now_ns);
                    }
                }
            }
            decode::ETHERTYPE_IPV6 => {
                // The kernel drops a fragment whose fragmentable part starts with another
                // extension header before any other IPv6 check: that is how an RA (or NA) is
                // pushed out of the first fragment, past `icmpv6 type` matches (RFC 7113).
                if let Some(next) = decode::ipv6_fragment_next(eth.payload)
                    .filter(|n| !trusted && decode::is_chained_extension(*n))
                {
                    self.emit_once(&mut out, now_ns, format!("frag6/{port}/{}", eth.src), || Ev {
                        kind: "fragmented_header_chain_drop",
                        verdict: Verdict::Block,
                        technique: "T1557",
                        reason: format!(
                            "IPv6 fragment with extension header {next} after the fragment header from {} on untrusted port {port} dropped (RA guard evasion)",
                            eth.src
                        ),
                        port,
                        mac: Some(eth.src),
                        flow: None,
                        extra: vec![("next_header", json!(next))],
                    });
                    return out;
                }
                if let Some(ip) = decode::ipv6(eth.payload) {
                    self.on_ipv6(&mut out, port, trusted, eth.src, &ip, now_ns);
                }
            }
            _ => {}
        }
        out
    }

    /// Emit the event `make` builds unless `key` was reported within the de-duplication
    /// window; the event is only built when it is emitted (floods cost a lookup, not a format).
    fn emit_once<'a>(
        &mut self,
        out: &mut Output,
        now_ns: u64,
        key: String,
        make: impl FnOnce() -> Ev<'a>,
    ) {
        if let Some(suppressed) = self.dedupe.admit(&key, now_ns / 1_000_000_000) {
            let mut ev = make();
            if suppressed > 0 {
                ev.extra.push(("suppressed", json!(suppressed)));
            }
            out.events.push(event(now_ns, ev));
        }
    }

    fn on_arp(
        &mut self,
        out: &mut Output,
        port: &str,
        trusted: bool,
        eth_src: Mac,
        arp: &decode::Arp,
        now_ns: u64,
    ) {
        let now_s = now_ns / 1_000_000_000;
        // The kernel's DAI chain starts with the per-port ARP rate limit.
        if !trusted && !self.arp_rate.admit(port, now_ns / 1_000_000) {
            let limit = self.cfg.arp_rate_limit;
            self.emit_once(out, now_ns, format!("arp-rate/{port}"), || Ev {
                kind: "arp_rate_exceeded",
                verdict: Verdict::Block,
                technique: "T1557.002",
                reason: format!(
                    "ARP on {port} over {}/s (burst {}): dropped",
                    limit.per_second, limit.burst
                ),
                port,
                mac: Some(eth_src),
                flow: None,
                extra: vec![],
            });
            return;
        }
        let verdict = inspect::dai(
            arp,
            eth_src,
            port,
            trusted,
            &self.bindings,
            &self.cfg.static_arp,
            now_s,
        );
        if !verdict.allows() {
            let key = format!("dai/{port}/{eth_src}/{}", arp.sender_ip);
            self.emit_once(out, now_ns, key, || {
                dai_drop_event(&verdict, arp, eth_src, port)
            });
            return;
        }
        // Only ARP the kernel let through reaches the station table: dropped spoofs have their
        // own event and must not make the real owner look like a flip-flop afterwards.
        self.track_station(out, port, arp, now_ns);
    }

    fn track_station(&mut self, out: &mut Output, port: &str, arp: &decode::Arp, now_ns: u64) {
        let now_s = now_ns / 1_000_000_000;
        let Some(change) = self.stations.observe(arp.sender_ip, arp.sender_mac, now_s) else {
            return;
        };
        let (kind, verdict, reason, old) = match change {
            StationChange::NewStation => (
                "new_station",
                Verdict::Allow,
                format!("new station {} at {}", arp.sender_ip, arp.sender_mac),
                None,
            ),
            StationChange::ChangedAddress { old } => (
                "changed_ethernet_address",
                Verdict::Alert,
                format!("{} moved from {old} to {}", arp.sender_ip, arp.sender_mac),
                Some(old),
            ),
            StationChange::FlipFlop { old } => (
                "flip_flop",
                Verdict::Alert,
                format!(
                    "{} flip-flopped from {old} back to {}",
                    arp.sender_ip, arp.sender_mac
                ),
                Some(old),
            ),
        };
        let mut extra = vec![("ip", json!(arp.sender_ip.to_string()))];
        if let Some(old) = old {
            extra.push(("old_mac", json!(old.to_string())));
        }
        out.events.push(event(
            now_ns,
            Ev {
                kind,
                verdict,
                technique: "T1557.002",
                reason,
                port,
                mac: Some(arp.sender_mac),
                flow: None,
                extra,
            },
        ));
    }

    #[allow(clippy::too_many_arguments)] // Why: the decoded layers of one frame, kept apart.
    fn on_udp4(
        &mut self,
        out: &mut Output,
        port: &str,
        trusted: bool,
        eth_src: Mac,
        ip: &decode::Ipv4<'_>,
        udp: &decode::Udp<'_>,
        now_ns: u64,
    ) {
        let now_s = now_ns / 1_000_000_000;
        let flow = udp_flow(
            IpAddr::V4(ip.src),
            udp.src_port,
            IpAddr::V4(ip.dst),
            udp.dst_port,
        );
        if let Some(protocol) = NameProtocol::from_port(udp.src_port) {
            self.on_name_response(
                out,
                port,
                eth_src,
                IpAddr::V4(ip.src),
                protocol,
                udp,
                now_ns,
            );
            return;
        }
        if udp.src_port == 67 {
            let msg = decode::dhcp(udp.payload);
            if !trusted {
                let kind = msg.as_ref().map_or("DHCP".into(), |m| m.kind.name());
                let mut extra = vec![
                    ("server_ip", json!(ip.src.to_string())),
                    ("dhcp_type", json!(kind)),
                ];
                if let Some(m) = &msg {
                    extra.push(("offered_ip", json!(m.yiaddr.to_string())));
                    extra.push(("client_mac", json!(m.chaddr.to_string())));
                }
                self.emit_once(out, now_ns, format!("rogue-dhcp/{port}/{eth_src}"), || Ev {
                    kind: "rogue_dhcp_server",
                    verdict: Verdict::Block,
                    technique: "T1557.003",
                    reason: format!(
                        "{kind} from {} ({eth_src}) on untrusted port {port} dropped",
                        ip.src
                    ),
                    port,
                    mac: Some(eth_src),
                    flow,
                    extra,
                });
                return;
            }
            let Some(msg) = msg else { return };
            match msg.kind {
                DhcpKind::Ack if !msg.yiaddr.is_unspecified() => {
                    let changes =
                        self.bindings
                            .ack(msg.chaddr, msg.yiaddr, msg.xid, msg.lease_s, now_s);
                    for c in &changes {
                        self.binding_event(out, c, now_ns);
                    }
                    out.changes.extend(changes);
                }
                DhcpKind::Nak => {
                    if let Some(b) = self.bindings.nak(&msg.chaddr) {
                        let c = Change::Unbind(b);
                        self.binding_event(out, &c, now_ns);
                        out.changes.push(c);
                    }
                }
                _ => {}
            }
            return;
        }
        if udp.src_port == 68 && udp.dst_port == 67 && !trusted {
            // Kernel rule before the rate limit: a message with a client address (RELEASE,
            // RENEW, REBIND, INFORM) for a MAC bound to another port is dropped.
            if let Some(msg) = decode::dhcp(udp.payload) {
                let owner = self
                    .bindings
                    .of_mac(&msg.chaddr)
                    .filter(|b| b.port != port && b.expires_s > now_s)
                    .cloned();
                if let (false, Some(b)) = (msg.ciaddr.is_unspecified(), owner) {
                    self.emit_once(out, now_ns, format!("foreign/{port}/{}", b.mac), || Ev {
                        kind: "dhcp_foreign_port_drop",
                        verdict: Verdict::Block,
                        technique: "T1557.003",
                        reason: format!(
                            "{} for {} ({}) from {port} dropped: bound on {}",
                            msg.kind.name(),
                            b.mac,
                            msg.ciaddr,
                            b.port
                        ),
                        port,
                        mac: Some(eth_src),
                        flow,
                        extra: vec![
                            ("client_mac", json!(b.mac.to_string())),
                            ("ip", json!(b.ip.to_string())),
                            ("dhcp_type", json!(msg.kind.name())),
                            ("bound_port", json!(b.port)),
                        ],
                    });
                    return;
                }
            }
            if !self.rate.admit(port, now_ns / 1_000_000) {
                let limit = self.cfg.rate_limit;
                self.emit_once(
                    out,
                    now_ns,
                    format!("dhcp-rate/{port}"),
                    || Ev {
                        kind: "dhcp_rate_exceeded",
                        verdict: Verdict::Block,
                        technique: "T1557.003",
                        reason: format!(
                            "DHCP client messages on {port} over {}/s (burst {}): dropped (starvation guard)",
                            limit.per_second, limit.burst
                        ),
                        port,
                        mac: Some(eth_src),
                        flow,
                        extra: vec![],
                    },
                );
                return;
            }
            let Some(msg) = decode::dhcp(udp.payload) else {
                return;
            };
            if msg.chaddr != eth_src {
                self.emit_once(out, now_ns, format!("chaddr/{port}/{eth_src}"), || Ev {
                    kind: "dhcp_chaddr_mismatch",
                    verdict: Verdict::Alert,
                    technique: "T1557.003",
                    reason: format!(
                        "{} with chaddr {} sent by {eth_src} on {port}",
                        msg.kind.name(),
                        msg.chaddr
                    ),
                    port,
                    mac: Some(eth_src),
                    flow: flow.clone(),
                    extra: vec![("client_mac", json!(msg.chaddr.to_string()))],
                });
                // Not learned: a binding for a MAC that did not send the request would let
                // the sender claim someone else's lease.
                return;
            }
            match msg.kind {
                DhcpKind::Discover | DhcpKind::Request => {
                    self.bindings.note_request(msg.chaddr, port, msg.xid, now_s);
                }
                DhcpKind::Release | DhcpKind::Decline => match self.bindings.release(&msg.chaddr, port) {
                    Ok(Some(b)) => {
                        let c = Change::Unbind(b);
                        self.binding_event(out, &c, now_ns);
                        out.changes.push(c);
                    }
                    Ok(None) => {}
                    Err(b) => self.emit_once(
                        out,
                        now_ns,
                        format!("foreign-release/{port}/{}", b.mac),
                        || Ev {
                            kind: "dhcp_release_foreign_port",
                            verdict: Verdict::Alert,
                            technique: "T1557.003",
                            reason: format!(
                                "{} for {} arrived on {port} but the binding is on {}: binding kept",
                                msg.kind.name(),
                                b.mac,
                                b.port
                            ),
                            port,
                            mac: Some(eth_src),
                            flow,
                            extra: vec![("ip", json!(b.ip.to_string()))],
                        },
                    ),
                },
                _ => {}
            }
        }
    }

    fn binding6_event(&self, out: &mut Output, kind: &str, b: &crate::Binding6, now_ns: u64) {
        let reason = if kind == "dhcpv6_binding_added" {
            format!("{} leased to {} on {}", b.ip, b.mac, b.port)
        } else {
            format!("binding of {} to {} on {} removed", b.ip, b.mac, b.port)
        };
        out.events.push(event(
            now_ns,
            Ev {
                kind,
                verdict: Verdict::Allow,
                technique: "T1557.003",
                reason,
                port: &b.port,
                mac: Some(b.mac),
                flow: None,
                extra: vec![
                    ("ip", json!(b.ip.to_string())),
                    ("duid", json!(crate::bindings6::duid_hex(&b.duid))),
                    ("expires_unix_s", json!(b.expires_s)),
                ],
            },
        ));
    }

    fn binding_event(&self, out: &mut Output, change: &Change, now_ns: u64) {
        let (kind, b, reason) = match change {
            Change::Bind { new, .. } => (
                "dhcp_binding_added",
                new,
                format!("{} leased to {} on {}", new.ip, new.mac, new.port),
            ),
            Change::Unbind(b) => (
                "dhcp_binding_removed",
                b,
                format!("binding of {} to {} on {} removed", b.ip, b.mac, b.port),
            ),
            Change::Bind6 { new, .. } => {
                return self.binding6_event(out, "dhcpv6_binding_added", new, now_ns)
            }
            Change::Unbind6(b) => {
                return self.binding6_event(out, "dhcpv6_binding_removed", b, now_ns)
            }
        };
        out.events.push(event(
            now_ns,
            Ev {
                kind,
                verdict: Verdict::Allow,
                technique: "T1557.003",
                reason,
                port: &b.port,
                mac: Some(b.mac),
                flow: None,
                extra: vec![
                    ("ip", json!(b.ip.to_string())),
                    ("expires_unix_s", json!(b.expires_s)),
                ],
            },
        ));
    }

    fn on_ipv6(
        &mut self,
        out: &mut Output,
        port: &str,
        trusted: bool,
        eth_src: Mac,
        ip: &decode::Ipv6<'_>,
        now_ns: u64,
    ) {
        if !trusted && self.cfg.protected_ipv6.contains(&ip.src) {
            let src = ip.src;
            self.emit_once(out, now_ns, format!("nd-src/{port}/{eth_src}/{src}"), || Ev {
                kind: "nd_spoof_drop",
                verdict: Verdict::Block,
                technique: "T1557",
                reason: format!("packet from protected {src} sent by {eth_src} on untrusted port {port} dropped"),
                port,
                mac: Some(eth_src),
                flow: None,
                extra: vec![("ip", json!(src.to_string()))],
            });
            return;
        }
        if let Ipv6Upper::Icmpv6 {
            kind: decode::ICMPV6_NEIGHBOR_ADVERTISEMENT,
            target: Some(target),
            ..
        } = ip.upper
        {
            if !trusted && self.cfg.protected_ipv6.contains(&target) {
                self.emit_once(out, now_ns, format!("nd/{port}/{eth_src}/{target}"), || Ev {
                    kind: "nd_spoof_drop",
                    verdict: Verdict::Block,
                    technique: "T1557",
                    reason: format!("neighbour advertisement for protected {target} from {eth_src} on untrusted port {port} dropped"),
                    port,
                    mac: Some(eth_src),
                    flow: None,
                    extra: vec![("ip", json!(target.to_string()))],
                });
                return;
            }
        }
        if let Ipv6Upper::Icmpv6 { kind, target, .. } = ip.upper {
            let verdict = inspect::nd_inspect(
                kind,
                target,
                ip.src,
                eth_src,
                port,
                trusted,
                self.bindings.v6(),
                &self.cfg.static_nd,
                now_ns / 1_000_000_000,
            );
            if let NdVerdict::Drop {
                ip: claimed,
                field,
                bound_mac,
                bound_port,
            } = verdict
            {
                let nd_type = match kind {
                    133 => "router_solicitation",
                    135 => "neighbor_solicitation",
                    _ => "neighbor_advertisement",
                };
                self.emit_once(out, now_ns, format!("nd6/{port}/{eth_src}/{claimed}/{}", field.name()), || Ev {
                    kind: "nd_inspection_drop",
                    verdict: Verdict::Block,
                    technique: "T1557",
                    reason: format!(
                        "{} dropped: {claimed} ({}) claimed by {eth_src} on {port} but bound to {bound_mac} on {bound_port}",
                        nd_type.replace('_', " "),
                        field.name()
                    ),
                    port,
                    mac: Some(eth_src),
                    flow: Some(Flow {
                        src_ip: IpAddr::V6(ip.src),
                        src_port: None,
                        dest_ip: IpAddr::V6(ip.dst),
                        dest_port: None,
                        proto: "IPv6-ICMP".into(),
                    }),
                    extra: vec![
                        ("ip", json!(claimed.to_string())),
                        ("nd_type", json!(nd_type)),
                        ("field", json!(field.name())),
                        ("bound_mac", json!(bound_mac.to_string())),
                        ("bound_port", json!(bound_port)),
                    ],
                });
                return;
            }
        }
        // The kernel drops rogue RAs and DHCPv6 server messages before the source guard.
        let server_drop = match ip.upper {
            Ipv6Upper::Icmpv6 { kind, .. } => {
                kind == decode::ICMPV6_ROUTER_ADVERTISEMENT && !self.cfg.ra_allowed(port, &eth_src)
            }
            Ipv6Upper::Udp(udp) => udp.src_port == 547 && !trusted,
            Ipv6Upper::Other(_) => false,
        };
        if self.cfg.ipv6_source_guard && !trusted && !server_drop && !ip.src.is_unspecified() {
            if let Err((bound_mac, bound_port)) = inspect::nd_owner(
                ip.src,
                &eth_src,
                port,
                self.bindings.v6(),
                &self.cfg.static_nd,
                now_ns / 1_000_000_000,
            ) {
                let src = ip.src;
                self.emit_once(out, now_ns, format!("src6/{port}/{eth_src}/{src}"), || Ev {
                    kind: "ipv6_source_guard_drop",
                    verdict: Verdict::Block,
                    technique: "T1557",
                    reason: format!(
                        "IPv6 packet from {src} sent by {eth_src} on {port} dropped: {src} is bound to {bound_mac} on {bound_port}"
                    ),
                    port,
                    mac: Some(eth_src),
                    flow: Some(Flow {
                        src_ip: IpAddr::V6(ip.src),
                        src_port: None,
                        dest_ip: IpAddr::V6(ip.dst),
                        dest_port: None,
                        proto: "IPv6".into(),
                    }),
                    extra: vec![
                        ("ip", json!(src.to_string())),
                        ("bound_mac", json!(bound_mac.to_string())),
                        ("bound_port", json!(bound_port)),
                    ],
                });
                return;
            }
        }
        match ip.upper {
            Ipv6Upper::Icmpv6 { kind, .. }
                if kind == decode::ICMPV6_ROUTER_ADVERTISEMENT
                    && !self.cfg.ra_allowed(port, &eth_src) =>
            {
                self.emit_once(out, now_ns, format!("ra/{port}/{eth_src}"), || Ev {
                    kind: "rogue_router_advertisement",
                    verdict: Verdict::Block,
                    technique: "T1557",
                    reason: format!(
                        "router advertisement from {} ({eth_src}) on untrusted port {port} dropped",
                        ip.src
                    ),
                    port,
                    mac: Some(eth_src),
                    flow: Some(Flow {
                        src_ip: IpAddr::V6(ip.src),
                        src_port: None,
                        dest_ip: IpAddr::V6(ip.dst),
                        dest_port: None,
                        proto: "IPv6-ICMP".into(),
                    }),
                    extra: vec![],
                });
            }
            Ipv6Upper::Udp(udp) => {
                let flow = udp_flow(
                    IpAddr::V6(ip.src),
                    udp.src_port,
                    IpAddr::V6(ip.dst),
                    udp.dst_port,
                );
                if let Some(protocol) = NameProtocol::from_port(udp.src_port) {
                    self.on_name_response(
                        out,
                        port,
                        eth_src,
                        IpAddr::V6(ip.src),
                        protocol,
                        &udp,
                        now_ns,
                    );
                } else if udp.src_port == 547 && trusted {
                    self.on_dhcpv6_server(out, port, eth_src, &udp, now_ns);
                } else if udp.src_port == 546 && udp.dst_port == 547 && !trusted {
                    self.on_dhcpv6_client(out, port, eth_src, &udp, flow, now_ns);
                } else if udp.src_port == 547 && !trusted {
                    let kind = decode::dhcpv6_kind(udp.payload).unwrap_or(0);
                    self.emit_once(
                        out,
                        now_ns,
                        format!("rogue-dhcp6/{port}/{eth_src}"),
                        || Ev {
                            kind: "rogue_dhcpv6_server",
                            verdict: Verdict::Block,
                            technique: "T1557.003",
                            reason: format!(
                                "DHCPv6 {} message type {kind} from {} on untrusted port {port} dropped",
                                if decode::dhcpv6_is_server_message(kind) { "server" } else { "relay/other" },
                                ip.src
                            ),
                            port,
                            mac: Some(eth_src),
                            flow,
                            extra: vec![("dhcpv6_type", json!(kind))],
                        },
                    );
                }
            }
            _ => {}
        }
    }

    /// Count and report a DHCPv6 message that does not decode.
    fn dhcpv6_malformed(
        &mut self,
        out: &mut Output,
        port: &str,
        eth_src: Mac,
        kind: u8,
        why: decode::Dhcpv6Malformed,
        now_ns: u64,
    ) {
        self.malformed_dhcpv6 += 1;
        self.emit_once(out, now_ns, format!("dhcp6-bad/{port}/{eth_src}"), || Ev {
            kind: "dhcpv6_malformed",
            verdict: Verdict::Alert,
            technique: "T1557.003",
            reason: format!(
                "malformed DHCPv6 message type {kind} from {eth_src} on {port}: {why}; not learned"
            ),
            port,
            mac: Some(eth_src),
            flow: None,
            extra: vec![
                ("dhcpv6_type", json!(kind)),
                ("anomaly", json!(why.to_string())),
            ],
        });
    }

    /// A DHCPv6 message from a server on a trusted port: a REPLY completes pending requests.
    fn on_dhcpv6_server(
        &mut self,
        out: &mut Output,
        port: &str,
        eth_src: Mac,
        udp: &decode::Udp<'_>,
        now_ns: u64,
    ) {
        if decode::dhcpv6_kind(udp.payload) != Some(decode::dhcpv6_type::REPLY) {
            return;
        }
        let msg = match decode::dhcpv6(udp.payload) {
            Ok(m) => m,
            Err(why) => {
                let kind = decode::dhcpv6_kind(udp.payload).unwrap_or(0);
                self.dhcpv6_malformed(out, port, eth_src, kind, why, now_ns);
                return;
            }
        };
        let Some(duid) = &msg.client_id else { return };
        let changes =
            self.bindings
                .v6_mut()
                .reply(duid, msg.xid, &msg.addresses, now_ns / 1_000_000_000);
        for c in &changes {
            self.binding_event(out, c, now_ns);
        }
        out.changes.extend(changes);
    }

    /// A DHCPv6 client message from an untrusted port: after the kernel's per-port rate limit,
    /// requests are noted (to be completed by the REPLY) and releases applied to the sender's
    /// own bindings.
    fn on_dhcpv6_client(
        &mut self,
        out: &mut Output,
        port: &str,
        eth_src: Mac,
        udp: &decode::Udp<'_>,
        flow: Option<Flow>,
        now_ns: u64,
    ) {
        use decode::dhcpv6_type as t;
        if !self.rate6.admit(port, now_ns / 1_000_000) {
            let limit = self.cfg.rate_limit;
            self.emit_once(out, now_ns, format!("dhcp6-rate/{port}"), || Ev {
                kind: "dhcp_rate_exceeded",
                verdict: Verdict::Block,
                technique: "T1557.003",
                reason: format!(
                    "DHCPv6 client messages on {port} over {}/s (burst {}): dropped (starvation guard)",
                    limit.per_second, limit.burst
                ),
                port,
                mac: Some(eth_src),
                flow,
                extra: vec![],
            });
            return;
        }
        let msg = match decode::dhcpv6(udp.payload) {
            Ok(m) => m,
            Err(why) => {
                let kind = decode::dhcpv6_kind(udp.payload).unwrap_or(0);
                self.dhcpv6_malformed(out, port, eth_src, kind, why, now_ns);
                return;
            }
        };
        let Some(duid) = &msg.client_id else { return };
        let now_s = now_ns / 1_000_000_000;
        // A DUID naming another Ethernet address than the sender's is someone else's
        // identity: the server would hand the sender that client's addresses, and learning
        // them here would bind the victim's address to the attacker (the DHCPv6 form of chaddr
        // spoofing). Not learned; reported.
        if let Some(duid_mac) = decode::duid_mac(duid).filter(|m| *m != eth_src) {
            self.emit_once(out, now_ns, format!("duid/{port}/{eth_src}"), || Ev {
                kind: "dhcpv6_duid_mismatch",
                verdict: Verdict::Alert,
                technique: "T1557.003",
                reason: format!(
                    "DHCPv6 message type {} with the DUID of {duid_mac} sent by {eth_src} on {port}: not learned",
                    msg.kind
                ),
                port,
                mac: Some(eth_src),
                flow: flow.clone(),
                extra: vec![
                    ("duid", json!(crate::bindings6::duid_hex(duid))),
                    ("client_mac", json!(duid_mac.to_string())),
                ],
            });
            return;
        }
        match msg.kind {
            t::SOLICIT | t::REQUEST | t::CONFIRM | t::RENEW | t::REBIND => {
                self.bindings
                    .v6_mut()
                    .note_request(duid, eth_src, port, msg.xid, now_s);
            }
            t::RELEASE | t::DECLINE => {
                let (changes, foreign) =
                    self.bindings
                        .v6_mut()
                        .release(duid, eth_src, port, &msg.addresses);
                for c in &changes {
                    self.binding_event(out, c, now_ns);
                }
                out.changes.extend(changes);
                for f in foreign {
                    let b = f.kept;
                    self.emit_once(out, now_ns, format!("foreign-release6/{port}/{}", b.ip), || Ev {
                        kind: "dhcpv6_release_foreign_port",
                        verdict: Verdict::Alert,
                        technique: "T1557.003",
                        reason: format!(
                            "DHCPv6 {} for {} from {eth_src} on {port}, but it is bound to {} on {}: binding kept",
                            if msg.kind == t::RELEASE { "RELEASE" } else { "DECLINE" },
                            b.ip,
                            b.mac,
                            b.port
                        ),
                        port,
                        mac: Some(eth_src),
                        flow: flow.clone(),
                        extra: vec![
                            ("ip", json!(b.ip.to_string())),
                            ("bound_mac", json!(b.mac.to_string())),
                            ("bound_port", json!(b.port)),
                        ],
                    });
                }
            }
            _ => {}
        }
    }

    #[allow(clippy::too_many_arguments)] // Why: the decoded layers of one frame, kept apart.
    fn on_name_response(
        &mut self,
        out: &mut Output,
        port: &str,
        eth_src: Mac,
        src: IpAddr,
        protocol: NameProtocol,
        udp: &decode::Udp<'_>,
        now_ns: u64,
    ) {
        let Some(msg) = decode::name_message(udp.payload, protocol == NameProtocol::Nbns) else {
            return;
        };
        let Some(name) = self.canary.match_response(&msg) else {
            return;
        };
        let answered: Vec<String> = msg.answer_ipv4.iter().map(Ipv4Addr::to_string).collect();
        let blocked = self.cfg.block.contains(&protocol);
        out.events.push(event(
            now_ns,
            Ev {
                kind: "name_poisoner",
                verdict: if blocked { Verdict::Block } else { Verdict::Alert },
                technique: "T1557.001",
                reason: format!(
                    "{} answered the {} canary name {name:?}: a poisoner at {src} ({eth_src}) on {port}",
                    protocol.name().to_uppercase(),
                    protocol.name()
                ),
                port,
                mac: Some(eth_src),
                flow: None,
                extra: vec![
                    ("ip", json!(src.to_string())),
                    ("protocol", json!(protocol.name())),
                    ("name", json!(name)),
                    ("answered_ips", json!(answered)),
                ],
            },
        ));
    }
}
