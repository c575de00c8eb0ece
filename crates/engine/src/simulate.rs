//! Capture replay: decode each record, track connections, classify, and account verdicts per
//! flow, rule, technique and anomaly. Pure apart from the events sink it is handed; memory is
//! bounded by the flow table, conntrack and fragment table limits, whatever the capture size.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use ipnet::IpNet;
use rampart_events::{Event, Flow, RuleRef, Sink, Verdict};
use rampart_ir::{Action, CtState, Direction, RuleId};
use serde::Serialize;

use crate::app;
use crate::classifier::PrefetchStage;
use crate::conntrack::{Conntrack, CtStats, Tracked, Tuple};
use crate::decode::{self, Anomaly, Frag, IpOptions, Layer, LinkType, Transport, L3};
use crate::engine::{
    proto_name, AppConn, AppConnState, AppPayload, Decision, Engine, L4Meta, MatcherKind,
    PacketMeta, Reason, RuleConns,
};
use crate::pcap::Record;
use crate::reasm::{Outcome, QueueKey, Reassembler};
use crate::sniff;
use crate::FastMap;

/// Flows remembered for per-flow reporting and sniffing.
// Why: ~150 bytes per flow keeps the table near 150 MiB at worst; a spoofed SYN flood beyond
// that resets the table (counted) instead of growing without bound.
pub const DEFAULT_MAX_FLOWS: usize = 1_000_000;
/// First fragments remembered without reassembly (to count orphan fragments).
// Why: the kernel's ipfrag_high_thresh (4 MiB) holds a few thousand datagrams; 65,536 ids is
// generous and bounded.
pub const MAX_FRAG_DATAGRAMS: usize = 65_536;
/// How long a first fragment is remembered without reassembly (Linux `ipfrag_time`, 30 s).
pub const FRAG_TIMEOUT_NS: u64 = crate::reasm::TIMEOUT_NS;
/// Flow samples kept for the report (all flows still go to the events sink).
pub const MAX_FLOW_SAMPLES: usize = 10_000;
/// Anomaly events emitted per anomaly kind (all are counted).
pub const MAX_ANOMALY_EVENTS_PER_KIND: u64 = 100;
/// [`Simulator::process_batch`] requests a record's address-index lines this many records
/// before processing it...
// Why: one replayed packet takes ~0.5 us, so 8 packets ahead covers a DRAM miss twice over
// while the lines (two per packet, per stage) stay well inside L1.
pub const PREFETCH_INDEX_AHEAD: usize = 8;
/// ...and its interval lines (which the index entry locates) this many records before.
pub const PREFETCH_ENTRIES_AHEAD: usize = 4;

/// How replay maps packets to hooks and interfaces.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// Evaluate every packet in this direction.
    pub direction: Option<Direction>,
    /// This host's addresses: to one = ingress, from one = egress, else forward.
    pub local: Vec<IpNet>,
    /// Input interface for every packet (ingress/forward).
    pub iif: Option<String>,
    /// Output interface for every packet (egress/forward).
    pub oif: Option<String>,
    /// Interface by network: a source in the network arrived on it, a destination in it
    /// leaves by it. First match wins; overrides `iif`/`oif`.
    pub iface_by_net: Vec<(IpNet, String)>,
    /// Matcher to use.
    pub matcher: MatcherKind,
    /// Conntrack table size (0: default).
    pub conntrack_max: usize,
    /// Flow table size (0: default).
    pub max_flows: usize,
    /// Skip building events (when nobody reads them); counters are unaffected.
    pub no_events: bool,
    /// Reassemble IP fragments before judging them, as the kernel does once conntrack is in
    /// use (`None`: when the policy uses conntrack, [`rampart_ir::Policy::uses_conntrack`]).
    /// Set it when another table on the host loads conntrack anyway.
    pub reassemble: Option<bool>,
    /// The gateway runs with `nf_conntrack_tcp_be_liberal=1`: TCP segments outside the
    /// sequence window are not invalid (off by default, as in the kernel).
    pub tcp_be_liberal: bool,
    /// Check checksums as the gateway's receive path does (`nf_conntrack_checksum=1`, the
    /// kernel's default, on traffic from the wire): an IPv4 header checksum that is wrong
    /// drops the packet before the ruleset, a wrong TCP, UDP, ICMP or ICMPv6 checksum makes
    /// it conntrack-invalid. Ingress and forward only (the kernel trusts its own output). Off
    /// by default: captures taken on a sending host carry checksums its NIC fills in later.
    pub verify_checksums: bool,
}

/// Per-rule totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct RuleTotals {
    /// Rule id.
    pub id: u32,
    /// Rule name.
    pub name: String,
    /// `file:line:col`.
    pub loc: String,
    /// Action.
    pub action: String,
    /// Techniques.
    pub techniques: Vec<String>,
    /// Packets decided.
    pub packets: u64,
    /// Flows whose first verdict it gave.
    pub flows: u64,
}

/// Per-technique totals.
#[derive(Clone, Debug, Default, Serialize)]
pub struct TechniqueTotals {
    /// Packets blocked by rules mitigating it.
    pub packets_blocked: u64,
    /// Packets allowed by rules naming it.
    pub packets_allowed: u64,
    /// Flows blocked.
    pub flows_blocked: u64,
}

/// One flow's verdict.
#[derive(Clone, Debug, Serialize)]
pub struct FlowVerdict {
    /// First packet time, ns.
    pub first_ts_ns: u64,
    /// Originator.
    pub src: IpAddr,
    /// Originator port.
    pub src_port: Option<u16>,
    /// Responder.
    pub dst: IpAddr,
    /// Responder port.
    pub dst_port: Option<u16>,
    /// Protocol name.
    pub proto: String,
    /// Hook.
    pub direction: Direction,
    /// First verdict.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// Deciding rule.
    pub rule: Option<String>,
    /// Its location.
    pub loc: Option<String>,
    /// Techniques.
    pub techniques: Vec<String>,
    /// Application protocol from the first payload, when recognised.
    pub app: Option<String>,
    /// Packets seen (while the flow stayed in the table).
    pub packets: u64,
    /// Packets blocked.
    pub blocked: u64,
}

/// Totals of a replay.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Records read.
    pub packets: u64,
    /// Bytes captured.
    pub bytes: u64,
    /// IP packets classified.
    pub classified: u64,
    /// Packets allowed.
    pub allowed: u64,
    /// Packets blocked.
    pub blocked: u64,
    /// ARP packets (not filtered by an inet ruleset).
    pub arp: u64,
    /// Other non-IP frames.
    pub non_ip: u64,
    /// Flows seen.
    pub flows: u64,
    /// Flows whose first packet was allowed.
    pub flows_allowed: u64,
    /// Flows whose first packet was blocked.
    pub flows_blocked: u64,
    /// Times the flow table was full and reset.
    pub flow_table_resets: u64,
    /// Packets by direction.
    pub by_direction: BTreeMap<String, u64>,
    /// Packets by decision reason.
    pub by_reason: BTreeMap<String, u64>,
    /// Invalid conntrack state reasons.
    pub ct_invalid: BTreeMap<String, u64>,
    /// Sources banned (each ban, including a banned source banned again after its ban ended).
    pub bans: u64,
    /// Per rule that decided at least one packet, by rule id.
    pub rules: BTreeMap<u32, RuleTotals>,
    /// Per technique.
    pub techniques: BTreeMap<String, TechniqueTotals>,
    /// Flows by application protocol.
    pub apps: BTreeMap<String, u64>,
    /// Anomalies by kind.
    pub anomalies: BTreeMap<String, u64>,
    /// Conntrack counters.
    pub conntrack: CtStats,
    /// First flows (up to [`MAX_FLOW_SAMPLES`]).
    pub flow_samples: Vec<FlowVerdict>,
    /// First and last packet time, ns.
    pub time_span_ns: Option<(u64, u64)>,
    /// Datagrams reassembled from fragments (and judged once each).
    pub reassembled: u64,
    /// Fragments dropped by reassembly (overlaps, bad lengths, oversize, memory, incomplete).
    pub fragments_dropped: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    a: (IpAddr, u16),
    b: (IpAddr, u16),
    proto: u8,
}

impl FlowKey {
    fn new(src: IpAddr, sp: u16, dst: IpAddr, dp: u16, proto: u8) -> Self {
        let (a, b) = if (src, sp) <= (dst, dp) {
            ((src, sp), (dst, dp))
        } else {
            ((dst, dp), (src, sp))
        };
        Self { a, b, proto }
    }
}

/// A flow's record: 8 bytes, so that the IPv4 table's slots are 24.
#[derive(Clone, Copy, Debug)]
struct FlowState {
    action: Action,
    sniffed: bool,
    /// Index of its sample in the report's flow samples, [`NO_SAMPLE`] for none.
    sample: u32,
}

const NO_SAMPLE: u32 = u32::MAX;

/// The replay's flow records, both directions of a flow under one key. IPv4 flows, almost all
/// of a typical capture, are keyed by 16 bytes (24-byte slots) rather than by a 42-byte key of
/// `IpAddr`s (56-byte slots). On a capture with a new flow per packet the table is looked up
/// once a packet at a random place, a cache miss: [`Flows::prefetch`] asks for the slot as
/// soon as the packet is decoded, so that the miss overlaps conntrack and classification
/// instead of stalling the accounting after them.
#[derive(Debug, Default)]
struct Flows {
    v4: FlowTable<[u64; 2]>,
    v6: FlowTable<FlowKey>,
}

/// One family's flow records: a SwissTable (hashbrown's) keyed by `K`.
#[derive(Debug)]
struct FlowTable<K> {
    table: hashbrown::HashTable<(K, FlowState)>,
    hasher: foldhash::fast::RandomState,
}

impl<K> Default for FlowTable<K> {
    fn default() -> Self {
        Self {
            table: hashbrown::HashTable::new(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Copy> FlowTable<K> {
    fn hash(&self, key: &K) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn contains_key(&self, key: &K) -> bool {
        self.table.find(self.hash(key), |(k, _)| k == key).is_some()
    }

    /// Start loading the slot `key` would be found in. The probe compares no key (that read
    /// is the miss to hide): it takes the first slot whose 7-bit tag matches, `key`'s own
    /// unless another key with the same tag comes first (a wasted hint, never a wrong
    /// answer). A key with no matching tag is new, and its insertion reads no slot.
    fn prefetch(&self, key: &K) {
        if let Some(slot) = self.table.find(self.hash(key), |_| true) {
            crate::classifier::prefetch_any(slot);
        }
    }

    fn get_or_insert_with(
        &mut self,
        key: K,
        new: impl FnOnce() -> FlowState,
    ) -> (&mut FlowState, bool) {
        use std::hash::BuildHasher;
        let hash = self.hash(&key);
        let hasher = &self.hasher;
        let rehash = |(k, _): &(K, FlowState)| hasher.hash_one(k);
        match self.table.entry(hash, |(k, _)| *k == key, rehash) {
            hashbrown::hash_table::Entry::Occupied(slot) => (&mut slot.into_mut().1, false),
            hashbrown::hash_table::Entry::Vacant(slot) => {
                (&mut slot.insert((key, new())).into_mut().1, true)
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnyFlowKey {
    V4([u64; 2]),
    V6(FlowKey),
}

impl AnyFlowKey {
    fn new(src: IpAddr, sp: u16, dst: IpAddr, dp: u16, proto: u8) -> Self {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let (s, d) = (u32::from(s), u32::from(d));
                let ((a, ap), (b, bp)) = if (s, sp) <= (d, dp) {
                    ((s, sp), (d, dp))
                } else {
                    ((d, dp), (s, sp))
                };
                Self::V4([
                    u64::from(a) << 32 | u64::from(ap) << 16 | u64::from(bp),
                    u64::from(b) << 8 | u64::from(proto),
                ])
            }
            _ => Self::V6(FlowKey::new(src, sp, dst, dp, proto)),
        }
    }
}

impl Flows {
    fn len(&self) -> usize {
        self.v4.table.len() + self.v6.table.len()
    }

    fn clear(&mut self) {
        self.v4.table.clear();
        self.v6.table.clear();
    }

    fn contains_key(&self, key: &AnyFlowKey) -> bool {
        match key {
            AnyFlowKey::V4(k) => self.v4.contains_key(k),
            AnyFlowKey::V6(k) => self.v6.contains_key(k),
        }
    }

    fn prefetch(&self, key: &AnyFlowKey) {
        match key {
            AnyFlowKey::V4(k) => self.v4.prefetch(k),
            AnyFlowKey::V6(k) => self.v6.prefetch(k),
        }
    }

    /// The record of flow `key`, made by `new` if there is none; whether it was made.
    fn get_or_insert_with(
        &mut self,
        key: AnyFlowKey,
        new: impl FnOnce() -> FlowState,
    ) -> (&mut FlowState, bool) {
        match key {
            AnyFlowKey::V4(k) => self.v4.get_or_insert_with(k, new),
            AnyFlowKey::V6(k) => self.v6.get_or_insert_with(k, new),
        }
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct RuleCounter {
    allowed: u64,
    blocked: u64,
    flows: u64,
    flows_blocked: u64,
}

const REASONS: [Reason; 22] = [
    Reason::Rule,
    Reason::Default,
    Reason::CtInvalid,
    Reason::CtEstablished,
    Reason::CtRelated,
    Reason::Loopback,
    Reason::Icmpv6Essential,
    Reason::Reassembly,
    Reason::ReassemblyTimeout,
    Reason::BadIpChecksum,
    Reason::NotRouted,
    Reason::Martian,
    Reason::IpOptions,
    Reason::TtlExceeded,
    Reason::Banned,
    Reason::Ban,
    Reason::SynproxyAnswered,
    Reason::SynproxyReply,
    Reason::SynproxyEstablished,
    Reason::SynproxyDrop,
    Reason::AppRule,
    Reason::AppBlocked,
];

/// `r`'s place in [`REASONS`] (a match, so a new reason cannot be left out).
fn reason_index(r: Reason) -> usize {
    match r {
        Reason::Rule => 0,
        Reason::Default => 1,
        Reason::CtInvalid => 2,
        Reason::CtEstablished => 3,
        Reason::CtRelated => 4,
        Reason::Loopback => 5,
        Reason::Icmpv6Essential => 6,
        Reason::Reassembly => 7,
        Reason::ReassemblyTimeout => 8,
        Reason::BadIpChecksum => 9,
        Reason::NotRouted => 10,
        Reason::Martian => 11,
        Reason::IpOptions => 12,
        Reason::TtlExceeded => 13,
        Reason::Banned => 14,
        Reason::Ban => 15,
        Reason::SynproxyAnswered => 16,
        Reason::SynproxyReply => 17,
        Reason::SynproxyEstablished => 18,
        Reason::SynproxyDrop => 19,
        Reason::AppRule => 20,
        Reason::AppBlocked => 21,
    }
}

/// What the receive path found in a packet before the ruleset sees it.
#[derive(Clone, Copy, Debug, Default)]
struct Received {
    /// A wrong transport checksum (only looked for with `verify_checksums`).
    bad_transport: bool,
    /// Its IPv4 options.
    options: IpOptions,
}

const UNSPECIFIED_V4: IpAddr = IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED);

/// A destination every host receives for itself and never forwards: the limited broadcast
/// (`ip_route_input_slow`'s `brd_input`) and the all-nodes groups every interface joins
/// (224.0.0.1, ff02::1).
fn always_received(dst: IpAddr) -> bool {
    match dst {
        IpAddr::V4(v) => v.is_broadcast() || v == std::net::Ipv4Addr::new(224, 0, 0, 1),
        IpAddr::V6(v) => v.segments() == [0xff02, 0, 0, 0, 0, 0, 0, 1],
    }
}

/// A group address: IPv4 multicast or the limited broadcast, IPv6 multicast.
fn is_group(a: IpAddr) -> bool {
    match a {
        IpAddr::V4(v) => v.is_multicast() || v.is_broadcast(),
        IpAddr::V6(v) => v.is_multicast(),
    }
}

/// What routing drops before the input or forward hook, whatever the host's routes: a packet
/// from a group address (a martian source, `ip_route_input_slow`; IPv6's `ip6_rcv_core`), and
/// a forwarded one to a group address (no multicast routing: the host receives a group
/// packet for itself, as ingress, or not at all).
fn not_routed(src: IpAddr, dst: IpAddr, dir: Direction) -> bool {
    dir != Direction::Egress && (is_group(src) || (dir == Direction::Forward && is_group(dst)))
}

/// An address the IP stack drops whatever the host's routes ([`Reason::Martian`]), as kernel
/// 6.18 does with its default sysctls (`route_localnet=0`; checked in the real-capture
/// test): a loopback address on a packet that is not between two of them (such a packet came
/// from the wire: `ip_route_input_slow`'s martians, `ip6_rcv_core`), IPv4's 0.0.0.0 as source
/// unless to a group (the limited broadcast, or a local group the host joined, which
/// `ip_mc_validate_source` accepts; forwarded, it is not routed anyway) or to 0.0.0.0 (the
/// host receives both), or as destination; an IPv6 multicast destination of interface-local
/// or reserved scope (`ip6_rcv_core`); on forward, an IPv6 unspecified or link-local source
/// (`ip6_forward`).
/// Not martian here, as the kernel routes them: the rest of 0.0.0.0/8, 240.0.0.0/4,
/// 169.254.0.0/16, IPv4-mapped and -compatible IPv6. A link-local IPv6 destination is judged
/// by the rules: its fate depends on the host's on-link routes and neighbours.
fn martian(src: IpAddr, dst: IpAddr, dir: Direction) -> bool {
    if dir == Direction::Egress {
        return false;
    }
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            s.is_loopback() != d.is_loopback()
                || (s.is_unspecified() && !d.is_unspecified() && !is_group(dst))
                || (d.is_unspecified() && !s.is_unspecified())
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let scope = d.segments()[0] & 0x000f;
            s.is_loopback() != d.is_loopback()
                || (d.is_multicast() && scope <= 1)
                || (dir == Direction::Forward && (s.is_unspecified() || s.is_unicast_link_local()))
        }
        _ => false,
    }
}

/// A forwarded packet whose TTL or hop limit is at most 1: `ip_forward` / `ip6_forward` drop
/// it (and answer time exceeded) before the forward hook, so no rule sees it.
fn ttl_exceeded(dir: Direction, ttl: u8) -> Option<Decision> {
    (dir == Direction::Forward && ttl <= 1)
        .then(|| Decision::prelude(Action::Drop, Reason::TtlExceeded))
}

/// A packet's IP fields without a transport layer replay looks at: one the stack drops, a
/// fragment judged alone, a datagram that does not decode.
fn bare_ip(src: IpAddr, dst: IpAddr, protocol: u8, ttl: u8, len: u32) -> decode::Ip<'static> {
    decode::Ip {
        src,
        dst,
        protocol,
        ttl,
        len,
        frag: None,
        has_options: false,
        ext_headers: 0,
        l4: Transport::Fragment,
    }
}

/// The TTL (IPv4) or hop limit (IPv6) of the IP header `header` starts with (0 if too short).
fn header_ttl(header: &[u8]) -> u8 {
    match header.first().map(|v| v >> 4) {
        Some(4) => header.get(8).copied().unwrap_or(0),
        Some(6) => header.get(7).copied().unwrap_or(0),
        _ => 0,
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
        Direction::Forward => 2,
    }
}

/// The replay state machine.
#[derive(Debug)]
pub struct Simulator {
    rule_counters: Vec<RuleCounter>,
    by_direction: [u64; 3],
    by_reason: [u64; REASONS.len()],
    engine: Engine,
    ct: Conntrack,
    cfg: SimConfig,
    flows: Flows,
    max_flows: usize,
    /// Without reassembly: first fragments seen, until when (for the orphan anomaly).
    first_frags: FastMap<(IpAddr, IpAddr, u8, u32), u64>,
    /// Whether fragments are reassembled before judging (see [`SimConfig::reassemble`]).
    reassemble: bool,
    reasm: Reassembler<FragToken>,
    last_ts: u64,
    report: Report,
    anomaly_events: HashMap<String, u64>,
    has_app_rules: bool,
    /// Scratch: the packet's view of each `conn_limit` rule's set ([`PacketMeta::rule_conns`]).
    rule_conns: Vec<RuleConns>,
    /// Scratch: the `conn_limit` rules an accepted packet reached.
    conn_limits_reached: Vec<u32>,
}

/// Errors from the events sink.
pub type SinkError = rampart_events::EventError;

/// What [`Simulator::judge`] found: the hook, the TCP/UDP ports and the decision.
type Judged = (Direction, Option<(u16, u16)>, Decision);

/// What the replay keeps of a fragment held for reassembly, to account for it later.
#[derive(Clone, Copy, Debug)]
struct FragToken {
    ts: u64,
    protocol: u8,
}

/// Events nobody reads ([`Simulator::finish`] after the capture's sink is gone).
struct Discard;

impl Sink for Discard {
    fn emit(&mut self, _: &Event) -> Result<(), SinkError> {
        Ok(())
    }
}

fn rfc3339(ts_ns: u64) -> String {
    rampart_events::rfc3339_utc(ts_ns)
}

impl Simulator {
    /// A replay of `engine`'s policy.
    pub fn new(engine: Engine, cfg: SimConfig) -> Self {
        let mut ct = if cfg.conntrack_max == 0 {
            Conntrack::default()
        } else {
            Conntrack::new(cfg.conntrack_max)
        };
        ct.set_tcp_be_liberal(cfg.tcp_be_liberal);
        let max_flows = if cfg.max_flows == 0 {
            DEFAULT_MAX_FLOWS
        } else {
            cfg.max_flows
        };
        let has_app_rules = engine.has_app_rules();
        let reassemble = cfg
            .reassemble
            .unwrap_or_else(|| engine.policy().uses_conntrack());
        Self {
            rule_counters: vec![RuleCounter::default(); engine.policy().rules.len()],
            by_direction: [0; 3],
            by_reason: [0; REASONS.len()],
            engine,
            ct,
            cfg,
            flows: Flows::default(),
            max_flows,
            first_frags: FastMap::default(),
            reassemble,
            reasm: Reassembler::default(),
            last_ts: 0,
            report: Report::default(),
            anomaly_events: HashMap::new(),
            has_app_rules,
            rule_conns: Vec::new(),
            conn_limits_reached: Vec::new(),
        }
    }

    /// The report so far.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// End of the capture: the datagrams still being reassembled can no longer complete, so
    /// their fragments are accounted as dropped (the kernel holds them until its 30 s timer
    /// and none passes). [`Simulator::finish`] does this too, without events.
    pub fn end_of_capture(&mut self, sink: &mut dyn Sink) -> Result<(), SinkError> {
        let ts = self.last_ts;
        for (key, tokens) in self.reasm.drain() {
            self.fragments_dropped(
                key,
                "fragment_incomplete",
                Reason::ReassemblyTimeout,
                tokens,
                ts,
                sink,
            )?;
        }
        Ok(())
    }

    /// Finish and return the report.
    pub fn finish(mut self) -> Report {
        let _ = self.end_of_capture(&mut Discard);
        self.report.conntrack = self.ct.stats();
        let r = &mut self.report;
        for (i, n) in self.by_direction.iter().enumerate() {
            if *n > 0 {
                r.by_direction
                    .insert(Direction::ALL[i].as_str().to_owned(), *n);
            }
        }
        for (i, n) in self.by_reason.iter().enumerate() {
            if *n > 0 {
                r.by_reason.insert(REASONS[i].as_str().to_owned(), *n);
            }
        }
        let policy = self.engine.policy();
        for (id, c) in self.rule_counters.iter().enumerate() {
            if c.allowed + c.blocked == 0 {
                continue;
            }
            let rule = &policy.rules[id];
            r.rules.insert(
                id as u32,
                RuleTotals {
                    id: id as u32,
                    name: rule.name.clone(),
                    loc: rule.loc.to_string(),
                    action: rule.action.as_str().to_owned(),
                    techniques: rule.mitigates.iter().map(|t| t.0.clone()).collect(),
                    packets: c.allowed + c.blocked,
                    flows: c.flows,
                },
            );
            for tech in &rule.mitigates {
                let t = r.techniques.entry(tech.0.clone()).or_default();
                t.packets_allowed += c.allowed;
                t.packets_blocked += c.blocked;
                t.flows_blocked += c.flows_blocked;
            }
        }
        self.report
    }

    fn ban_event(
        &mut self,
        src: IpAddr,
        d: Decision,
        ts: u64,
        flow: &dyn Fn() -> Flow,
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        self.report.bans += 1;
        if self.cfg.no_events {
            return Ok(());
        }
        let policy = self.engine.policy();
        let Some(id) = d.rule else {
            return Ok(());
        };
        let r = &policy.rules[id.0 as usize];
        let mut detail = serde_json::Map::new();
        detail.insert("src_ip".into(), src.to_string().into());
        if let Some(b) = &r.ban {
            detail.insert("timeout_s".into(), b.timeout_s.into());
        }
        sink.emit(&Event {
            timestamp: rfc3339(ts),
            event_type: "ban".into(),
            component: "engine".into(),
            flow: Some(flow()),
            verdict: Verdict::Block,
            rule: Some(RuleRef {
                id,
                name: r.name.clone(),
                loc: r.loc.clone(),
            }),
            techniques: r.mitigates.clone(),
            reason: format!("source {src} exceeded the limit of rule {}", r.name),
            detail,
        })
    }

    /// Record a capture-level anomaly (a skipped record).
    pub fn capture_anomaly(&mut self, sink: &mut dyn Sink) -> Result<(), SinkError> {
        self.anomaly(Anomaly::BadCaptureRecord, None, self.last_ts, sink)
    }

    fn anomaly(
        &mut self,
        a: Anomaly,
        flow: Option<Flow>,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        self.anomaly_named(a.name(), flow, ts, sink)
    }

    fn anomaly_named(
        &mut self,
        name: String,
        flow: Option<Flow>,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        *self.report.anomalies.entry(name.clone()).or_insert(0) += 1;
        let n = self.anomaly_events.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n <= MAX_ANOMALY_EVENTS_PER_KIND {
            sink.emit(&Event {
                timestamp: rfc3339(ts),
                event_type: "anomaly".into(),
                component: "engine".into(),
                flow,
                verdict: Verdict::Alert,
                rule: None,
                techniques: vec![],
                reason: name,
                detail: serde_json::Map::new(),
            })?;
        }
        Ok(())
    }

    fn direction(&self, src: IpAddr, dst: IpAddr) -> Direction {
        if let Some(d) = self.cfg.direction {
            return d;
        }
        if self.cfg.local.iter().any(|n| n.contains(&dst)) {
            Direction::Ingress
        } else if self.cfg.local.iter().any(|n| n.contains(&src)) {
            Direction::Egress
        } else if always_received(dst) || (src, dst) == (UNSPECIFIED_V4, UNSPECIFIED_V4) {
            // From and to 0.0.0.0: `ip_route_input_slow` takes it as a broadcast.
            Direction::Ingress
        } else {
            Direction::Forward
        }
    }

    /// Process records in order, exactly as [`Simulator::process`] one after the other would
    /// (same report, events and state), with prefetch hints: the address-field index lines of
    /// record `i + PREFETCH_INDEX_AHEAD` and the interval lines of record
    /// `i + PREFETCH_ENTRIES_AHEAD` are requested before record `i` is processed, so the
    /// blocklist lookup's two dependent cache misses overlap with other packets' work.
    pub fn process_batch(
        &mut self,
        recs: &[Record<'_>],
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        let hint = |sim: &Self, rec: &Record<'_>, stage: PrefetchStage| {
            let Some(link) = LinkType::from_pcap(rec.linktype) else {
                return;
            };
            if let Some((src, dst, ports)) = decode::peek_ipv4(link, rec.data) {
                let dir = sim.direction(IpAddr::V4(src), IpAddr::V4(dst));
                sim.engine.prefetch_v4(Some(dir), src, dst, ports, stage);
            }
        };
        for r in recs.iter().take(PREFETCH_INDEX_AHEAD) {
            hint(self, r, PrefetchStage::Index);
        }
        for r in recs.iter().take(PREFETCH_ENTRIES_AHEAD) {
            hint(self, r, PrefetchStage::Entries);
        }
        for (i, rec) in recs.iter().enumerate() {
            if let Some(r) = recs.get(i + PREFETCH_INDEX_AHEAD) {
                hint(self, r, PrefetchStage::Index);
            }
            if let Some(r) = recs.get(i + PREFETCH_ENTRIES_AHEAD) {
                hint(self, r, PrefetchStage::Entries);
            }
            self.process(rec, sink)?;
        }
        Ok(())
    }

    /// Process one capture record.
    pub fn process(&mut self, rec: &Record<'_>, sink: &mut dyn Sink) -> Result<(), SinkError> {
        let ts = rec.ts_ns.max(self.last_ts);
        self.last_ts = ts;
        self.report.packets += 1;
        self.report.bytes += rec.data.len() as u64;
        match &mut self.report.time_span_ns {
            Some((_, last)) => *last = ts,
            None => self.report.time_span_ns = Some((ts, ts)),
        }
        if !self.reasm.is_empty() {
            for (key, tokens) in self.reasm.expire(ts) {
                self.fragments_dropped(
                    key,
                    "fragment_timeout",
                    Reason::ReassemblyTimeout,
                    tokens,
                    ts,
                    sink,
                )?;
            }
        }
        let Some(link) = LinkType::from_pcap(rec.linktype) else {
            return self.anomaly(Anomaly::UnsupportedLinkType, None, ts, sink);
        };
        let mut rx = Received::default();
        if self.cfg.verify_checksums {
            if let Some(l3) = decode::ip_packet(link, rec.data) {
                let sums = decode::check_checksums(l3);
                if sums.bad_ipv4_header
                    && self.early_drop(
                        l3,
                        "bad_ipv4_header_checksum",
                        Reason::BadIpChecksum,
                        ts,
                        sink,
                    )?
                {
                    return Ok(());
                }
                rx.bad_transport = sums.bad_transport;
            }
        }
        let pkt = match decode::decode(link, rec.data) {
            Ok(p) => p,
            Err(a) => {
                // A first fragment too short for its own transport header (RFC 1858's tiny
                // fragment): reassembly completes it; without reassembly the rules see what it
                // holds (its ports, if their 4 bytes are there), as nft's transport
                // expressions do.
                if let Some(f) = decode::fragment_view(link, rec.data) {
                    if self.hop_by_hop_drop(f.header, ts, sink)? {
                        return Ok(());
                    }
                    if self.reassemble {
                        return self.fragment(&f, ts, sink);
                    }
                    self.remember_first_fragment((f.src, f.dst, f.protocol, f.id), ts);
                    return self.lone_fragment(&f, CtState::Untracked, ts, sink);
                }
                return self.anomaly(a, None, ts, sink);
            }
        };
        let ip = match pkt.l3 {
            L3::Ip(ip) => ip,
            L3::Arp(_) => {
                self.report.arp += 1;
                return Ok(());
            }
            L3::Other { .. } => {
                self.report.non_ip += 1;
                return Ok(());
            }
        };
        if ip.ext_headers > 0 {
            if let Some(l3) = decode::ip_packet(link, rec.data) {
                if self.hop_by_hop_drop(l3, ts, sink)? {
                    return Ok(());
                }
            }
        }
        if self.reassemble && ip.frag.is_some() {
            if let Some(f) = decode::fragment_view(link, rec.data) {
                return self.fragment(&f, ts, sink);
            }
        }
        if ip.has_options {
            rx.options =
                decode::ip_packet(link, rec.data).map_or(IpOptions::Accepted, decode::ipv4_options);
        }
        let (dir, ports, decision) = self.judge(&ip, rx, ts, sink)?;
        self.account(dir, &ip, ports, decision, ts, sink)
    }

    /// IPv6 packet `l3`'s hop-by-hop options, if the receive path rejects them: it drops the
    /// packet before prerouting ([`Simulator::early_drop`]); `true` when it did.
    fn hop_by_hop_drop(
        &mut self,
        l3: &[u8],
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<bool, SinkError> {
        match decode::ipv6_hop_by_hop(l3) {
            IpOptions::Accepted => Ok(false),
            rejected => self.early_drop(l3, rejected.name(true), Reason::IpOptions, ts, sink),
        }
    }

    /// A packet `l3` (IPv4 or IPv6) the kernel drops on ingress and forward before any hook
    /// (`ip_rcv` / `ip6_rcv_core`), so before conntrack and reassembly: counted as anomaly
    /// `anomaly` and accounted as dropped for `reason`. `false` (nothing done) on egress, or
    /// when `l3` is too short for its addresses.
    fn early_drop(
        &mut self,
        l3: &[u8],
        anomaly: &str,
        reason: Reason,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<bool, SinkError> {
        let ip = if l3.first().is_some_and(|v| v >> 4 == 6) {
            let (Some(src), Some(dst)) = (decode::ipv6_at(l3, 8), decode::ipv6_at(l3, 24)) else {
                return Ok(false);
            };
            let len = 40 + u32::from(u16::from_be_bytes([l3[4], l3[5]]));
            bare_ip(IpAddr::V6(src), IpAddr::V6(dst), l3[6], l3[7], len)
        } else {
            let (Some(src), Some(dst)) = (decode::ipv4_at(l3, 12), decode::ipv4_at(l3, 16)) else {
                return Ok(false);
            };
            let len = u32::from(u16::from_be_bytes([l3[2], l3[3]]));
            bare_ip(IpAddr::V4(src), IpAddr::V4(dst), l3[9], l3[8], len)
        };
        let dir = self.direction(ip.src, ip.dst);
        if dir == Direction::Egress {
            return Ok(false);
        }
        let flow = event_flow(ip.src, ip.dst, ip.protocol, None);
        self.anomaly_named(anomaly.into(), Some(flow), ts, sink)?;
        let decision = Decision::prelude(Action::Drop, reason);
        self.account(dir, &ip, None, decision, ts, sink)?;
        Ok(true)
    }

    /// One fragment into reassembly; a completed datagram is judged once and each of its
    /// fragments accounted with that verdict, dropped ones as blocked.
    fn fragment(
        &mut self,
        f: &decode::FragmentView<'_>,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        if f.offset == 0 && f.next_header_at.is_some() && upper_header_truncated(f.protocol, f.data)
        {
            // RFC 8200 4.5: an IPv6 first fragment without its whole upper-layer header is
            // not reassembled (nf_ct_frag6_gather lets it through alone); conntrack cannot
            // parse it, so it is invalid, and the rest of its datagram never completes.
            let flow = event_flow(f.src, f.dst, f.protocol, None);
            self.anomaly_named("fragment_truncated_first".into(), Some(flow), ts, sink)?;
            return self.lone_fragment(f, CtState::Invalid, ts, sink);
        }
        let token = FragToken {
            ts,
            protocol: f.protocol,
        };
        let outcome = self.reasm.fragment(f, token, ts);
        for (key, tokens) in self.reasm.take_restarted() {
            self.fragments_dropped(
                key,
                "fragment_too_far",
                Reason::Reassembly,
                tokens,
                ts,
                sink,
            )?;
        }
        match outcome {
            Outcome::Queued => Ok(()),
            Outcome::Unaligned { dropped, .. } => {
                let key = QueueKey::of(f);
                self.fragments_dropped(
                    key,
                    "fragment_bad_length",
                    Reason::Reassembly,
                    dropped,
                    ts,
                    sink,
                )?;
                // Conntrack cannot use it either way (a first fragment's transport header
                // disagrees with what it carries; a later one has none), so it is invalid.
                self.lone_fragment(f, CtState::Invalid, ts, sink)
            }
            Outcome::Dropped { cause, tokens } => {
                let key = QueueKey::of(f);
                self.fragments_dropped(key, cause.name(), Reason::Reassembly, tokens, ts, sink)
            }
            Outcome::Complete { datagram, tokens } => {
                let decoded = if f.src.is_ipv4() {
                    decode::decode_ipv4(&datagram)
                } else {
                    decode::decode_ipv6(&datagram)
                };
                let ip = match decoded {
                    Ok(ip) => ip,
                    Err(a) => {
                        // The datagram does not decode: counted, then judged without ports.
                        // A transport header cut by its own lengths is conntrack-invalid; an
                        // IPv6 header chain the decoder gives up on (nested fragment headers)
                        // is tracked by conntrack's generic tracker, so new.
                        self.anomaly(a, None, ts, sink)?;
                        let ct = match a {
                            Anomaly::Truncated(Layer::Tcp | Layer::Udp | Layer::Icmp)
                            | Anomaly::BadTcpHeaderLength
                            | Anomaly::BadUdpLength
                            | Anomaly::InvalidTcpFlags => CtState::Invalid,
                            _ => CtState::New,
                        };
                        let ttl = header_ttl(&datagram);
                        let len = datagram.len() as u32;
                        let ip = bare_ip(f.src, f.dst, f.protocol, ttl, len);
                        let dir = self.direction(ip.src, ip.dst);
                        let options = decode::ipv4_options(&datagram);
                        let decision =
                            self.classify_alone(&ip, dir, L4Meta::None, ct, options, ts, sink)?;
                        for t in tokens {
                            self.account(dir, &ip, None, decision, t.ts, sink)?;
                        }
                        return Ok(());
                    }
                };
                self.report.reassembled += 1;
                // Conntrack checks the reassembled datagram's transport checksum, and the
                // receive path its options (the first fragment's header).
                let rx = Received {
                    bad_transport: self.cfg.verify_checksums
                        && decode::check_checksums(&datagram).bad_transport,
                    options: decode::ipv4_options(&datagram),
                };
                let (dir, ports, decision) = self.judge(&ip, rx, ts, sink)?;
                for t in tokens {
                    self.account(dir, &ip, ports, decision, t.ts, sink)?;
                }
                Ok(())
            }
        }
    }

    /// A fragment judged on its own, in connection state `ct_state`: the rules see a first
    /// fragment's ports when it holds their 4 bytes (nft's transport expressions load just the
    /// bytes they compare), nothing past them, and no ports of a later fragment.
    fn lone_fragment(
        &mut self,
        f: &decode::FragmentView<'_>,
        ct_state: CtState,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        let ports = match (f.offset, f.protocol, f.data) {
            (0, 6 | 17, [a, b, c, d, ..]) => {
                Some((u16::from_be_bytes([*a, *b]), u16::from_be_bytes([*c, *d])))
            }
            _ => None,
        };
        let len = f.header.len() as u32 + f.data_len;
        let ip = decode::Ip {
            frag: Some(Frag {
                id: f.id,
                offset: f.offset,
                more: f.more,
            }),
            ..bare_ip(f.src, f.dst, f.protocol, header_ttl(f.header), len)
        };
        let dir = self.direction(ip.src, ip.dst);
        let l4 = ports.map_or(L4Meta::None, |(src, dst)| L4Meta::Ports { src, dst });
        let options = decode::ipv4_options(f.header);
        let decision = self.classify_alone(&ip, dir, l4, ct_state, options, ts, sink)?;
        self.account(dir, &ip, ports, decision, ts, sink)
    }

    /// What the IP stack drops after prerouting and before the input or forward hook's
    /// rules: martian addresses ([`martian`]; IPv6 drops its own before prerouting, which
    /// changes nothing here: the packet never reaches a rule or conntrack's confirmation), what
    /// routing does not route ([`not_routed`]), IPv4 options `ip_rcv_options`
    /// rejects (on ingress and forward, counted as the anomaly they name), then a forwarded
    /// packet's TTL of at most 1.
    fn stack_drop(
        &mut self,
        ip: &decode::Ip<'_>,
        ports: Option<(u16, u16)>,
        dir: Direction,
        options: IpOptions,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<Option<Decision>, SinkError> {
        if martian(ip.src, ip.dst, dir) {
            return Ok(Some(Decision::prelude(Action::Drop, Reason::Martian)));
        }
        if not_routed(ip.src, ip.dst, dir) {
            return Ok(Some(Decision::prelude(Action::Drop, Reason::NotRouted)));
        }
        if dir != Direction::Egress && options != IpOptions::Accepted {
            let flow = event_flow(ip.src, ip.dst, ip.protocol, ports);
            self.anomaly_named(options.name(false).into(), Some(flow), ts, sink)?;
            return Ok(Some(Decision::prelude(Action::Drop, Reason::IpOptions)));
        }
        Ok(ttl_exceeded(dir, ip.ttl))
    }

    /// The engine's decision for a packet that conntrack does not track as usual.
    #[allow(clippy::too_many_arguments)] // Why: the packet, its hook and what the stack found.
    fn classify_alone(
        &mut self,
        ip: &decode::Ip<'_>,
        dir: Direction,
        l4: L4Meta,
        ct_state: CtState,
        options: IpOptions,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<Decision, SinkError> {
        let ports = match l4 {
            L4Meta::Ports { src, dst } => Some((src, dst)),
            _ => None,
        };
        if let Some(d) = self.stack_drop(ip, ports, dir, options, ts, sink)? {
            return Ok(d);
        }
        let (iif, oif) = ifaces(&self.cfg, dir, ip.src, ip.dst);
        let mut meta = PacketMeta::new(dir, ip.src, ip.dst, ip.protocol, l4);
        meta.iif = iif;
        meta.oif = oif;
        meta.ct_state = ct_state;
        meta.len = ip.len;
        Ok(self.engine.classify_with(self.cfg.matcher, &meta, ts))
    }

    /// Account dropped fragments (`tokens`) of datagram `key` as blocked, with one anomaly.
    fn fragments_dropped(
        &mut self,
        key: QueueKey,
        anomaly: &str,
        reason: Reason,
        tokens: Vec<FragToken>,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        let Some(protocol) = tokens.first().map(|t| t.protocol) else {
            return Ok(());
        };
        let ip = bare_ip(key.src, key.dst, protocol, 0, 0);
        let flow = event_flow(ip.src, ip.dst, protocol, None);
        self.anomaly_named(anomaly.to_owned(), Some(flow), ts, sink)?;
        self.report.fragments_dropped += tokens.len() as u64;
        let dir = self.direction(ip.src, ip.dst);
        let decision = Decision::prelude(Action::Drop, reason);
        for t in tokens {
            self.account(dir, &ip, None, decision, t.ts, sink)?;
        }
        Ok(())
    }

    /// The verdict for one IP packet (a whole datagram when reassembling): conntrack, then the
    /// engine. Returns the hook, the TCP/UDP ports and the decision.
    #[inline(always)]
    fn judge(
        &mut self,
        ip: &decode::Ip<'_>,
        rx: Received,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<Judged, SinkError> {
        let ip = *ip;
        let dir = self.direction(ip.src, ip.dst);
        let (l4, ports) = match &ip.l4 {
            Transport::Tcp(t) => (
                L4Meta::Ports {
                    src: t.src,
                    dst: t.dst,
                },
                Some((t.src, t.dst)),
            ),
            Transport::Udp(u) => (
                L4Meta::Ports {
                    src: u.src,
                    dst: u.dst,
                },
                Some((u.src, u.dst)),
            ),
            Transport::Icmp(i) => (
                L4Meta::Icmp {
                    icmp_type: i.icmp_type,
                    code: i.code,
                },
                None,
            ),
            Transport::Fragment | Transport::Other { .. } => (L4Meta::None, None),
        };
        // Every judged packet is accounted (`account`, last): start loading its flow's record.
        let (sp, dp) = ports.unwrap_or((0, 0));
        self.flows
            .prefetch(&AnyFlowKey::new(ip.src, sp, ip.dst, dp, ip.protocol));
        if let Some(d) = self.stack_drop(&ip, ports, dir, rx.options, ts, sink)? {
            // Conntrack saw it in prerouting, but the entry it proposed is never confirmed.
            return Ok((dir, ports, d));
        }
        let flow = || event_flow(ip.src, ip.dst, ip.protocol, ports);
        let decision = if matches!(ip.l4, Transport::Fragment) {
            // Without reassembly (with it, fragments never get here) a fragment without a
            // whole transport header is judged alone, without ports: nft's transport
            // expressions do not match it, and no conntrack entry covers it.
            let key = ip.frag.map(|f| (ip.src, ip.dst, ip.protocol, f.id));
            if let (Some(k), Some(f)) = (key, ip.frag) {
                let seen = self.first_frags.get(&k).is_some_and(|exp| *exp > ts);
                if f.offset == 0 {
                    self.remember_first_fragment(k, ts);
                } else if !seen {
                    self.anomaly(Anomaly::OrphanFragment, Some(flow()), ts, sink)?;
                }
            }
            let (iif, oif) = ifaces(&self.cfg, dir, ip.src, ip.dst);
            let mut meta = PacketMeta::new(dir, ip.src, ip.dst, ip.protocol, l4);
            meta.iif = iif;
            meta.oif = oif;
            meta.ct_state = CtState::Untracked;
            meta.len = ip.len;
            self.engine.classify_with(self.cfg.matcher, &meta, ts)
        } else {
            // A wrong transport checksum makes the packet invalid before conntrack looks at
            // its connection, in prerouting only (`tcp_error`, `udp_error`, `icmp_error`).
            let tracked = if rx.bad_transport
                && dir != Direction::Egress
                && matches!(
                    ip.l4,
                    Transport::Tcp(_) | Transport::Udp(_) | Transport::Icmp(_)
                ) {
                Tracked::bad_checksum()
            } else {
                self.ct.track(&ip, ts)
            };
            if let Some(r) = tracked.invalid_reason {
                *self.report.ct_invalid.entry(r.to_owned()).or_insert(0) += 1;
            }
            let (iif, oif) = ifaces(&self.cfg, dir, ip.src, ip.dst);
            let mut meta = PacketMeta::new(dir, ip.src, ip.dst, ip.protocol, l4);
            meta.iif = iif;
            meta.oif = oif;
            meta.ct_state = tracked.state;
            meta.ct_entry = tracked.has_entry;
            meta.len = ip.len;
            let conn_limited = !self.engine.conn_limit_rules(dir).is_empty();
            // Under the stateful prelude an established or related packet never reaches a
            // rule's cap: no view needed.
            let answered_before_rules = self.engine.policy().defaults.stateful
                && matches!(tracked.state, CtState::Established | CtState::Related);
            if conn_limited && !answered_before_rules {
                self.rule_conns.clear();
                for &rule in self.engine.conn_limit_rules(dir) {
                    let view = self.ct.rule_conns(ip.src, tracked.tuple, rule);
                    self.rule_conns.push(view);
                }
                meta.rule_conns = Some(&self.rule_conns);
            }
            if let Transport::Tcp(t) = &ip.l4 {
                meta.tcp_flags = t.flags;
            }
            if self.has_app_rules && tracked.packet_index > 0 {
                if let Some((l4, data)) = app::transport_payload(&ip.l4) {
                    meta.payload = AppPayload::Bytes { l4, data };
                }
                meta.app_conn = Some(AppConn {
                    reply: tracked.reply,
                    packet_index: tracked.app_inspected.saturating_add(1),
                    state: tracked.app,
                    last_label: tracked.app_label,
                });
            }
            let d = self.engine.classify_with(self.cfg.matcher, &meta, ts);
            match d.reason {
                // The proxy answered for the server: nothing is tracked yet.
                Reason::SynproxyAnswered | Reason::SynproxyReply => {}
                Reason::SynproxyEstablished => self.ct.confirm_established(&tracked),
                _ => self.ct.confirm(&tracked, d.action == Action::Accept),
            }
            if conn_limited && d.action == Action::Accept {
                if let Some(tuple) = tracked.tuple {
                    count_conn_limits(
                        &self.engine,
                        &mut self.ct,
                        &mut self.conn_limits_reached,
                        &meta,
                        d,
                        tuple,
                    );
                }
            }
            if let (Some(conn), Some(tuple)) = (meta.app_conn, tracked.tuple) {
                let inspecting = conn.state == AppConnState::Inspecting
                    && conn.packet_index <= rampart_ir::APP_INSPECT_MAX_PACKETS;
                if let (true, AppPayload::Bytes { l4, data }) = (inspecting, meta.payload) {
                    if let Some(label) = app::label(l4, data) {
                        self.ct.set_app_label(tuple, conn.reply, label);
                    }
                    // The inspection budget counts TCP/UDP payload packets (as the classifier
                    // does); echo requests are always inspected and use none of it.
                    if matches!(l4, app::L4::Tcp | app::L4::Udp) && !data.is_empty() {
                        self.ct.note_app_inspected(tuple);
                    }
                }
            }
            if let (Some(step), Some(tuple)) = (d.app, tracked.tuple) {
                if step.action != Action::Accept {
                    self.ct.set_app(tuple, AppConnState::Blocked(step.rule));
                } else if d.action == Action::Accept {
                    self.ct.set_app(tuple, AppConnState::Accepted(step.rule));
                }
            }
            if d.reason == Reason::Ban {
                self.ban_event(ip.src, d, ts, &flow, sink)?;
            }
            d
        };
        if let Some(f) = ip.frag {
            if f.offset == 0 {
                self.remember_first_fragment((ip.src, ip.dst, ip.protocol, f.id), ts);
            }
        }
        Ok((dir, ports, decision))
    }

    fn remember_first_fragment(&mut self, key: (IpAddr, IpAddr, u8, u32), ts: u64) {
        if self.first_frags.len() >= MAX_FRAG_DATAGRAMS {
            self.first_frags.retain(|_, exp| *exp > ts);
        }
        if self.first_frags.len() < MAX_FRAG_DATAGRAMS {
            self.first_frags.insert(key, ts + FRAG_TIMEOUT_NS);
        }
    }

    fn account(
        &mut self,
        dir: Direction,
        ip: &decode::Ip<'_>,
        ports: Option<(u16, u16)>,
        decision: Decision,
        ts: u64,
        sink: &mut dyn Sink,
    ) -> Result<(), SinkError> {
        let (payload, udp) = match &ip.l4 {
            Transport::Tcp(t) => (t.payload, false),
            Transport::Udp(u) => (u.payload, true),
            _ => (&[][..], false),
        };
        let flow = || event_flow(ip.src, ip.dst, ip.protocol, ports);
        let allowed = decision.action == Action::Accept;
        let r = &mut self.report;
        r.classified += 1;
        if allowed {
            r.allowed += 1;
        } else {
            r.blocked += 1;
        }
        self.by_direction[dir_index(dir)] += 1;
        self.by_reason[reason_index(decision.reason)] += 1;
        let policy = self.engine.policy();
        let rule = decision.rule.map(|id| (id, &policy.rules[id.0 as usize]));
        if let Some(c) = decision
            .rule
            .and_then(|id| self.rule_counters.get_mut(id.0 as usize))
        {
            if allowed {
                c.allowed += 1;
            } else {
                c.blocked += 1;
            }
        }
        // Flow accounting.
        let (sp, dp) = ports.unwrap_or((0, 0));
        let key = AnyFlowKey::new(ip.src, sp, ip.dst, dp, ip.protocol);
        if self.flows.len() >= self.max_flows && !self.flows.contains_key(&key) {
            self.flows.clear();
            r.flow_table_resets += 1;
        }
        let rule_counters = &mut self.rule_counters;
        let (st, new) = self.flows.get_or_insert_with(key, || {
            r.flows += 1;
            if allowed {
                r.flows_allowed += 1;
            } else {
                r.flows_blocked += 1;
            }
            if let Some(c) = decision
                .rule
                .and_then(|id| rule_counters.get_mut(id.0 as usize))
            {
                c.flows += 1;
                if !allowed {
                    c.flows_blocked += 1;
                }
            }
            let sample = if r.flow_samples.len() < MAX_FLOW_SAMPLES {
                r.flow_samples.push(FlowVerdict {
                    first_ts_ns: ts,
                    src: ip.src,
                    src_port: ports.map(|p| p.0),
                    dst: ip.dst,
                    dst_port: ports.map(|p| p.1),
                    proto: proto_name(ip.protocol),
                    direction: dir,
                    action: decision.action,
                    reason: decision.reason,
                    rule: rule.map(|(_, r)| r.name.clone()),
                    loc: rule.map(|(_, r)| r.loc.to_string()),
                    techniques: rule
                        .map(|(_, r)| r.mitigates.iter().map(|t| t.0.clone()).collect())
                        .unwrap_or_default(),
                    app: None,
                    packets: 0,
                    blocked: 0,
                });
                (r.flow_samples.len() - 1) as u32
            } else {
                NO_SAMPLE
            };
            FlowState {
                action: decision.action,
                sample,
                sniffed: false,
            }
        });
        // A new flow is reported (an event) and sniffed at its first payload; a known one when
        // its verdict changes.
        let emit = new || st.action != decision.action;
        st.action = decision.action;
        let sniff_now = !st.sniffed && !payload.is_empty();
        st.sniffed |= sniff_now;
        let st = *st;
        if st.sample != NO_SAMPLE {
            if let Some(s) = r.flow_samples.get_mut(st.sample as usize) {
                s.packets += 1;
                if !allowed {
                    s.blocked += 1;
                }
            }
        }
        if sniff_now {
            if let Some(info) = sniff::sniff(payload, udp, sp, dp) {
                let name = info.name().to_owned();
                *r.apps.entry(name.clone()).or_insert(0) += 1;
                let app_detail = app_fields(&info);
                if st.sample != NO_SAMPLE {
                    if let Some(s) = r.flow_samples.get_mut(st.sample as usize) {
                        s.app = Some(describe_app(&name, &app_detail));
                    }
                }
                if !self.cfg.no_events {
                    sink.emit(&Event {
                        timestamp: rfc3339(ts),
                        event_type: "app".into(),
                        component: "engine".into(),
                        flow: Some(flow()),
                        verdict: decision.action.into(),
                        rule: None,
                        techniques: vec![],
                        reason: format!("first payload is {name}"),
                        detail: app_detail,
                    })?;
                }
            }
        }
        if emit && !self.cfg.no_events {
            let mut detail = serde_json::Map::new();
            detail.insert("direction".into(), dir.as_str().into());
            detail.insert("action".into(), decision.action.as_str().into());
            let policy = self.engine.policy();
            let rule = decision.rule.map(|id: RuleId| {
                let r = &policy.rules[id.0 as usize];
                RuleRef {
                    id,
                    name: r.name.clone(),
                    loc: r.loc.clone(),
                }
            });
            let techniques = decision
                .rule
                .map(|id| policy.rules[id.0 as usize].mitigates.clone())
                .unwrap_or_default();
            let reason = match decision.rule {
                Some(_) => format!("rule {}", decision.action.as_str()),
                None if decision.reason == Reason::Default => {
                    format!("default {} on {}", decision.action.as_str(), dir.as_str())
                }
                None => decision.reason.as_str().to_owned(),
            };
            sink.emit(&Event {
                timestamp: rfc3339(ts),
                event_type: "flow".into(),
                component: "engine".into(),
                flow: Some(flow()),
                verdict: decision.action.into(),
                rule,
                techniques,
                reason,
                detail,
            })?;
        }
        Ok(())
    }
}

/// Whether an IPv6 first fragment's `data` (after its fragment header, whose next header is
/// `next`) misses part of its upper-layer header: `ipv6_frag_thdr_truncated`, which skips the
/// extension headers the kernel knows (`ipv6_skip_exthdr`: hop-by-hop, routing, fragment,
/// authentication, destination options) and needs TCP 20 bytes, UDP and ICMPv6 8, anything
/// else 1. An extension header it cannot read, "no next header" or a later fragment header
/// mean "not truncated", as in the kernel.
fn upper_header_truncated(mut next: u8, data: &[u8]) -> bool {
    let mut off = 0usize;
    // Each step moves at least 8 bytes into `data`, so this ends.
    while matches!(next, 0 | 43 | 44 | 51 | 60) {
        let (Some(&nh), Some(&len)) = (data.get(off), data.get(off + 1)) else {
            return false;
        };
        let step = match next {
            44 => {
                let Some(field) = data.get(off + 2..off + 4) else {
                    return false;
                };
                if u16::from_be_bytes([field[0], field[1]]) & !7 != 0 {
                    return false;
                }
                8
            }
            51 => (usize::from(len) + 2) * 4,
            _ => (usize::from(len) + 1) * 8,
        };
        next = nh;
        off += step;
    }
    if next == 59 {
        return false;
    }
    let need = match next {
        6 => 20,
        17 | 58 => 8,
        _ => 1,
    };
    off + need > data.len()
}

fn ifaces(
    cfg: &SimConfig,
    dir: Direction,
    src: IpAddr,
    dst: IpAddr,
) -> (Option<&str>, Option<&str>) {
    let by_net = |a: IpAddr| {
        cfg.iface_by_net
            .iter()
            .find(|(n, _)| n.contains(&a))
            .map(|(_, i)| i.as_str())
    };
    let lo = |a: IpAddr| a.is_loopback().then_some("lo");
    let iif = lo(src).or_else(|| by_net(src)).or(cfg.iif.as_deref());
    let oif = lo(dst).or_else(|| by_net(dst)).or(cfg.oif.as_deref());
    match dir {
        Direction::Ingress => (iif, None),
        Direction::Egress => (None, oif),
        Direction::Forward => (iif, oif),
    }
}

/// Count an accepted packet's connection in the sets of the `conn_limit` rules whose statement
/// it reached (the kernel adds it to each; see [`RuleConns`]).
fn count_conn_limits(
    engine: &Engine,
    ct: &mut Conntrack,
    reached: &mut Vec<u32>,
    meta: &PacketMeta<'_>,
    d: Decision,
    tuple: Tuple,
) {
    match d.reason {
        Reason::Rule => engine.conn_limit_rules_reached(meta, d.rule, reached),
        Reason::Default => engine.conn_limit_rules_reached(meta, None, reached),
        // The proxied SYN reached its rule's statement (earlier rules whose static fields match
        // a bare SYN claim it, so it reached no other) and the connection exists from the
        // completing ACK on.
        Reason::SynproxyEstablished => {
            reached.clear();
            let limited = engine.conn_limit_rules(meta.direction);
            reached.extend(d.rule.map(|r| r.0).filter(|r| limited.contains(r)));
        }
        _ => return,
    }
    ct.count_conn_limits(tuple, meta.src, reached);
}

/// The flow an event names.
fn event_flow(src: IpAddr, dst: IpAddr, protocol: u8, ports: Option<(u16, u16)>) -> Flow {
    Flow {
        src_ip: src,
        src_port: ports.map(|p| p.0),
        dest_ip: dst,
        dest_port: ports.map(|p| p.1),
        proto: event_proto(protocol),
    }
}

fn event_proto(p: u8) -> String {
    match p {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "IPv6-ICMP".into(),
        other => other.to_string(),
    }
}

fn app_fields(info: &sniff::AppInfo<'_>) -> serde_json::Map<String, serde_json::Value> {
    let mut m = match serde_json::to_value(info) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    if let sniff::AppInfo::Dns { qname_wire, .. } = info {
        let mut s = String::new();
        sniff::dns_name(qname_wire, &mut s);
        m.insert("qname".into(), s.into());
    }
    m
}

fn describe_app(name: &str, detail: &serde_json::Map<String, serde_json::Value>) -> String {
    let extra: Vec<String> = detail
        .iter()
        .filter(|(k, v)| *k != "app_proto" && !v.is_null())
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect();
    if extra.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({})", extra.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> impl proptest::strategy::Strategy<Value = (IpAddr, u16)> {
        use proptest::prelude::*;
        // Few addresses and ports, so that equal ones and swapped pairs come up often.
        let v4 = (0u32..4).prop_map(|i| IpAddr::from([192, 0, 2, i as u8]));
        let v6 = (0u16..3).prop_map(|i| IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, i]));
        (prop_oneof![3 => v4, 1 => v6], 0u16..3)
    }

    proptest::proptest! {
        /// The packed IPv4 flow key names a flow exactly as the `IpAddr` key it stands for:
        /// both directions alike, any other difference apart.
        #[test]
        fn flow_keys_identify_flows_in_both_directions(
            a in endpoint(), b in endpoint(), c in endpoint(), d in endpoint(),
            p in 0u8..3, q in 0u8..3,
        ) {
            let key = |(s, sp): (IpAddr, u16), (d, dp): (IpAddr, u16), proto| {
                AnyFlowKey::new(s, sp, d, dp, proto)
            };
            proptest::prop_assert_eq!(key(a, b, p), key(b, a, p));
            let same = FlowKey::new(a.0, a.1, b.0, b.1, p) == FlowKey::new(c.0, c.1, d.0, d.1, q);
            proptest::prop_assert_eq!(key(a, b, p) == key(c, d, q), same);
        }
    }

    #[test]
    fn flow_records_are_found_again_and_prefetching_changes_nothing() {
        let mut flows = Flows::default();
        let state = |sample| FlowState {
            action: Action::Accept,
            sniffed: false,
            sample,
        };
        let keys: Vec<AnyFlowKey> = (0..2_000u32)
            .map(|i| {
                let src = IpAddr::from([10, 0, (i >> 8) as u8, i as u8]);
                let dst: IpAddr = if i % 3 == 0 {
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 1, i as u16])
                } else {
                    IpAddr::from([198, 51, 100, 7])
                };
                let src = if dst.is_ipv6() {
                    IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 2, i as u16])
                } else {
                    src
                };
                AnyFlowKey::new(src, 1024 + i as u16, dst, 443, 6)
            })
            .collect();
        for (i, k) in keys.iter().enumerate() {
            flows.prefetch(k);
            assert!(!flows.contains_key(k));
            let (st, new) = flows.get_or_insert_with(*k, || state(i as u32));
            assert!(new && st.sample == i as u32);
        }
        assert_eq!(flows.len(), keys.len());
        for (i, k) in keys.iter().enumerate() {
            flows.prefetch(k);
            let (st, new) = flows.get_or_insert_with(*k, || state(u32::MAX - 1));
            assert!(!new && st.sample == i as u32, "flow {i}");
        }
        flows.clear();
        assert_eq!(flows.len(), 0);
        assert!(keys.iter().all(|k| !flows.contains_key(k)));
    }

    #[test]
    fn every_reason_has_its_own_counter() {
        for (i, r) in REASONS.iter().enumerate() {
            assert_eq!(reason_index(*r), i, "{r:?}");
        }
    }

    #[test]
    fn upper_header_truncation_skips_extension_headers_as_the_kernel_does() {
        let tcp = [0u8; 20];
        assert!(!upper_header_truncated(6, &tcp));
        assert!(upper_header_truncated(6, &tcp[..19]));
        assert!(upper_header_truncated(17, &tcp[..7]));
        assert!(!upper_header_truncated(17, &tcp[..8]));
        // A destination-options header (8 bytes, next TCP) after the fragment header.
        let mut dst = vec![6, 0, 0, 0, 0, 0, 0, 0];
        dst.extend_from_slice(&tcp[..12]);
        assert!(upper_header_truncated(60, &dst));
        dst.extend_from_slice(&tcp[12..]);
        assert!(!upper_header_truncated(60, &dst));
        // An extension header the data cannot hold the start of, "no next header", a nested
        // later fragment: not truncated (the kernel's skip fails or stops).
        assert!(!upper_header_truncated(60, &[6]));
        assert!(!upper_header_truncated(59, &[]));
        assert!(!upper_header_truncated(44, &[6, 0, 0, 8, 0, 0, 0, 1]));
        // A nested first fragment header is skipped like any other.
        assert!(upper_header_truncated(44, &[6, 0, 0, 0, 0, 0, 0, 1, 0, 0]));
        // Protocols without a known header need one byte.
        assert!(upper_header_truncated(47, &[]));
        assert!(!upper_header_truncated(47, &[0]));
    }

    #[test]
    fn rfc3339_formats_epoch_times() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339(1_764_273_600_123_456_789),
            "2025-11-27T20:00:00.123456Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }
}
