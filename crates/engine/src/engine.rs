//! Policy evaluation: the prelude, the two rule matchers, rate limits and explanations.

use crate::FastMap;
use std::net::{IpAddr, Ipv4Addr};

use rampart_ir::{
    Action, AppMatch, AppProtocol, CtState, Date, Direction, Family, L4Match, Limit, Owner, Peer,
    Policy, RateUnit, RuleId, APP_INSPECT_MAX_PACKETS, ICMPV6_ESSENTIAL_TYPES,
    ICMPV6_NEIGHBOUR_DISCOVERY_TYPES,
};
use serde::Serialize;

use crate::app;

use crate::classifier::{
    Classifier, FieldKind, Partition, PrefetchStage, Rows, RuleIntervals, MAX_DIRECT_SIZE,
};
use crate::cross::{Fields128, Fields32, HookTables, SubChecks};
use crate::decode::tcp_flags;
use crate::lpm::PrefixSet;

/// Port value used in the classifier key when a packet has no ports.
const NO_PORT: u128 = 65536;
/// ICMP type value used when a packet is not ICMP/ICMPv6.
const NO_ICMP: u128 = 256;
/// Values of the ICMP type field (0..=255 and [`NO_ICMP`]): the classifier's third field is
/// `protocol * ICMP_SPAN + icmp type`, one lookup for both.
// Why: every packet looked both up, and the ICMP type only ever narrows a protocol (ICMP or
// ICMPv6 services); one 65,792-entry table costs one lookup and one AND instead of two.
const ICMP_SPAN: u128 = NO_ICMP + 1;
/// Per-source meters keep at most this many sources per rule.
// Why: the emitter sizes the rule's nft meter set so. When it is full, the kernel's `limit rate
// over` check of a new source fails to add it and so does not match: the source is not
// limited (nor banned) and gets the rule's verdict. We do the same (see `dynamic`).
pub const MAX_METER_ENTRIES: usize = 65_536;
/// The ban set holds at most this many sources.
// Why: the nft dynamic set behind it has a bounded size too; when it is full an add fails and
// the refused packet falls through like a never-ban source's (see docs/engine.md).
pub const MAX_BAN_ENTRIES: usize = 65_536;
/// How long a SYN cookie the proxy sent stays valid, in nanoseconds.
// Why: Linux accepts cookies up to MAX_SYNCOOKIE_AGE (2) minute-counter ticks old.
pub const SYNCOOKIE_VALID_NS: u64 = 120_000_000_000;
/// Slots of the direct-mapped table that stands in for the cookie check (a power of two).
// Why: the kernel keeps no state per SYN; the engine must remember which handshakes it answered
// to tell a completing ACK from a forged one, so it uses a fixed-size table (2 MiB) where a
// colliding newer SYN overwrites an older one: constant memory under a spoofed flood.
pub const SYNCOOKIE_SLOTS: usize = 1 << 16;
/// Default byte budget of the fast matcher's cross-product tables (all hooks and families);
/// a hook whose tables would not fit keeps the bit-vector scan.
// Why: a policy's hooks need a few KiB to a few hundred KiB; the budget bounds memory and
// build time for policies whose field classes multiply out (thousands of distinct sets).
pub const CROSS_TABLE_BYTES: usize = 4 << 20;
/// Interface names remembered with their class (per engine); later new names are classed on
/// every packet.
// Why: a gateway has a handful of interfaces; a capture replay sees the same few names on
// every packet, so comparing against a short list beats matching every pattern.
const IFACE_CACHE: usize = 64;

/// The transport part of a packet as the rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum L4Meta {
    /// TCP or UDP with ports.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP or ICMPv6.
    Icmp {
        /// Type.
        icmp_type: u8,
        /// Code.
        code: u8,
    },
    /// Nothing the rules can match on (other protocols, non-first fragments).
    None,
}

/// Local socket owner of an egress packet (absent in captures).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct OwnerInfo {
    /// uid.
    pub uid: u32,
    /// gid.
    pub gid: u32,
    /// cgroup v2 path relative to the mount.
    pub cgroup: String,
}

/// Everything the policy can match on for one packet.
#[derive(Clone, Copy, Debug)]
pub struct PacketMeta<'a> {
    /// The hook the packet is evaluated in.
    pub direction: Direction,
    /// Input interface (absent on egress).
    pub iif: Option<&'a str>,
    /// Output interface (absent on ingress).
    pub oif: Option<&'a str>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address (same family as `src`).
    pub dst: IpAddr,
    /// IP protocol / IPv6 upper-layer next header.
    pub protocol: u8,
    /// Ports or ICMP type.
    pub l4: L4Meta,
    /// Conntrack state (`Untracked` when no tracker runs).
    pub ct_state: CtState,
    /// Packet length in bytes (for byte-rate limits).
    pub len: u32,
    /// Socket owner, when known.
    pub owner: Option<&'a OwnerInfo>,
    /// The source's connections every `conn_limit` rule counts when `rule_conns` is `None`
    /// (`explain --src-conns`; connections other than this packet's own).
    pub src_conns: u32,
    /// Per `conn_limit` rule, how its kernel set counts the source (a replay's conntrack
    /// fills it in, see [`RuleConns`]); a rule it does not list counts none. `None`: every
    /// such rule counts `src_conns`.
    pub rule_conns: Option<&'a [RuleConns]>,
    /// TCP flags ([`tcp_flags`]; 0 for other protocols). The SYN proxy step tells a bare SYN
    /// and a handshake-completing ACK from other segments by them.
    pub tcp_flags: u8,
    /// Whether the connection tracker holds an entry this packet belongs to (a `new` packet
    /// without one only proposes a connection). `established` and `related` imply one.
    pub ct_entry: bool,
    /// The payload as application-protocol rules inspect it.
    pub payload: AppPayload<'a>,
    /// The packet's connection as application-protocol rules see it; `None` when there is
    /// none (invalid or untracked packets, or a caller without a tracker): not inspected.
    pub app_conn: Option<AppConn>,
}

/// How one `conn_limit` rule's kernel set (`add @connlimit_N_v4 { ip saddr ct count over C }`)
/// sees a packet's source. The kernel counts, per rule, the connections whose packets reached
/// that statement and were accepted, while they live and are not closed (TCP `TIME_WAIT` or
/// `CLOSE`); connections the source opened through other rules do not count.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleConns {
    /// The rule.
    pub rule: u32,
    /// The source's counted connections other than this packet's own.
    pub others: u32,
    /// The rule's set for the packet's family is full and does not hold the source: the
    /// kernel cannot add it, so the cap neither refuses nor counts the connection.
    pub untrackable: bool,
}

impl PacketMeta<'_> {
    /// The source's connections rule `rule`'s cap counts, and whether it cannot count them.
    fn conns_for(&self, rule: u32) -> (u32, bool) {
        match self.rule_conns {
            None => (self.src_conns, false),
            Some(list) => list
                .iter()
                .find(|c| c.rule == rule)
                .map_or((0, false), |c| (c.others, c.untrackable)),
        }
    }
}

/// A packet's payload for application-protocol rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AppPayload<'a> {
    /// No payload to inspect.
    None,
    /// Raw bytes, labelled by [`app::label`] when an application-protocol rule needs them
    /// (ICMP: the echo data after the 8-byte header).
    Bytes {
        /// Transport, as [`app::label`] takes it.
        l4: app::L4,
        /// The payload.
        data: &'a [u8],
    },
    /// An already computed label (`None`: unrecognised), e.g. from `explain --app`.
    Label(Option<AppProtocol>),
}

/// What application-protocol rules decided so far for a connection (kept with its conntrack
/// entry; nft keeps it in the conntrack mark).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "state", content = "rule", rename_all = "snake_case")]
pub enum AppConnState {
    /// Undecided: its payload packets are inspected while its budget
    /// ([`APP_INSPECT_MAX_PACKETS`] inspected payload packets) lasts.
    #[default]
    Inspecting,
    /// An accepting application-protocol rule ended inspection.
    Accepted(RuleId),
    /// A dropping application-protocol rule blocked the connection: every later packet drops.
    Blocked(RuleId),
}

/// A packet's connection as application-protocol rules see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AppConn {
    /// The packet travels in the connection's reply direction (rules are matched against the
    /// original direction's addresses, ports, interfaces and hook).
    pub reply: bool,
    /// This packet's 1-based position in the connection's inspection budget: one more than
    /// the payload packets of the connection (both directions) application-protocol rules
    /// inspected before it. A payload packet at a position beyond
    /// [`APP_INSPECT_MAX_PACKETS`] is not inspected (the connection was released).
    pub packet_index: u32,
    /// Earlier decisions of application-protocol rules.
    pub state: AppConnState,
    /// The last application protocol recognised on this connection in this packet's direction;
    /// an unrecognised payload inherits it.
    pub last_label: Option<AppProtocol>,
}

impl AppConn {
    /// The first packet of a new connection.
    pub fn first() -> Self {
        Self {
            reply: false,
            packet_index: 1,
            state: AppConnState::Inspecting,
            last_label: None,
        }
    }
}

/// An application-protocol rule that matched a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct AppStep {
    /// The rule.
    pub rule: RuleId,
    /// The payload's label (`None`: unrecognised).
    pub label: Option<AppProtocol>,
    /// The rule's action: `accept` ended inspection (the packet went on to the conntrack
    /// step and the rules), `drop`/`reject` dropped it and blocked the connection.
    pub action: Action,
}

impl<'a> PacketMeta<'a> {
    /// A packet with the given addresses and transport, state `new`, no interfaces.
    pub fn new(direction: Direction, src: IpAddr, dst: IpAddr, protocol: u8, l4: L4Meta) -> Self {
        Self {
            direction,
            iif: None,
            oif: None,
            src,
            dst,
            protocol,
            l4,
            ct_state: CtState::New,
            len: 64,
            owner: None,
            src_conns: 0,
            rule_conns: None,
            // A new TCP flow's first packet is its SYN.
            tcp_flags: if protocol == rampart_ir::proto::TCP {
                tcp_flags::SYN
            } else {
                0
            },
            ct_entry: false,
            payload: AppPayload::None,
            app_conn: None,
        }
    }

    /// The same packet seen in its connection's original direction: addresses, ports and
    /// interfaces swapped, and the hook the original direction is evaluated in.
    fn original_direction(&self) -> Self {
        let mut m = *self;
        m.src = self.dst;
        m.dst = self.src;
        m.iif = self.oif;
        m.oif = self.iif;
        if let L4Meta::Ports { src, dst } = self.l4 {
            m.l4 = L4Meta::Ports { src: dst, dst: src };
        }
        m.direction = match self.direction {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
            Direction::Forward => Direction::Forward,
        };
        m
    }

    fn is_v6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// [`PacketMeta::key`] of an IPv4 packet, in 32 bits (`None` for IPv6).
    fn key32(&self) -> Option<[u32; 5]> {
        let (IpAddr::V4(src), IpAddr::V4(dst)) = (self.src, self.dst) else {
            return None;
        };
        let (sp, dp, icmp) = match self.l4 {
            L4Meta::Ports { src, dst } => (u32::from(src), u32::from(dst), NO_ICMP as u32),
            L4Meta::Icmp { icmp_type, .. } => {
                (NO_PORT as u32, NO_PORT as u32, u32::from(icmp_type))
            }
            L4Meta::None => (NO_PORT as u32, NO_PORT as u32, NO_ICMP as u32),
        };
        Some([
            u32::from(src),
            u32::from(dst),
            u32::from(self.protocol) * ICMP_SPAN as u32 + icmp,
            sp,
            dp,
        ])
    }

    fn key(&self) -> [u128; 5] {
        let (sp, dp, icmp) = match self.l4 {
            L4Meta::Ports { src, dst } => (u128::from(src), u128::from(dst), NO_ICMP),
            L4Meta::Icmp { icmp_type, .. } => (NO_PORT, NO_PORT, u128::from(icmp_type)),
            L4Meta::None => (NO_PORT, NO_PORT, NO_ICMP),
        };
        [
            addr_key(self.src),
            addr_key(self.dst),
            u128::from(self.protocol) * ICMP_SPAN + icmp,
            sp,
            dp,
        ]
    }
}

fn addr_key(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

/// Why a verdict was reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// A policy rule matched.
    Rule,
    /// No rule matched: the direction's default.
    Default,
    /// Stateful prelude: conntrack state `invalid`.
    CtInvalid,
    /// Stateful prelude: conntrack state `established`.
    CtEstablished,
    /// Stateful prelude: conntrack state `related`.
    CtRelated,
    /// Loopback traffic accepted by `allow_loopback`.
    Loopback,
    /// Essential ICMPv6 accepted by `allow_icmpv6_essential`.
    Icmpv6Essential,
    /// A fragment IP reassembly dropped: it overlaps its datagram's data, its lengths
    /// disagree, the datagram outgrows 64 KiB or reassembly memory is full.
    Reassembly,
    /// A fragment of a datagram that never completed (the kernel drops it when its 30 s
    /// reassembly timer runs out; at the end of a capture, still incomplete).
    ReassemblyTimeout,
    /// The IPv4 header checksum is wrong: the IP stack drops the packet before the ruleset
    /// (replay with checksum verification only).
    BadIpChecksum,
    /// IP options the IP stack rejects: IPv4 options (malformed, source routing, a CIPSO
    /// label), dropped after prerouting, or IPv6 hop-by-hop options (malformed, a CALIPSO
    /// label, an unknown option marked "discard"), dropped before it.
    IpOptions,
    /// Routing does not pass the packet on: it comes from a group (multicast or broadcast)
    /// address, or is forwarded to one (there is no multicast routing).
    NotRouted,
    /// An address no packet from the wire may carry: the IP stack drops it, whatever the
    /// host's routes, before the input or forward hook (IPv6: before prerouting). A loopback
    /// address (127.0.0.0/8, ::1) on a packet not between two of them, the IPv4 unspecified
    /// address as source (but to the limited broadcast or to 0.0.0.0) or destination, an IPv6
    /// multicast destination of interface-local or reserved scope, and on forward an IPv6
    /// unspecified or link-local source.
    Martian,
    /// A forwarded packet's TTL or hop limit is at most 1: the IP stack drops it (answering
    /// time exceeded) before the forward hook.
    TtlExceeded,
    /// The source is in the ban set (`rule`: the rule that banned it).
    Banned,
    /// The rule's `limit` or `conn_limit` refused the packet and its `ban` banned the source.
    Ban,
    /// SYN proxy: a bare SYN answered by the gateway with a cookie (no conntrack entry).
    SynproxyAnswered,
    /// SYN proxy: the SYN-ACK of a handshake the proxy answered (sent by the gateway itself).
    SynproxyReply,
    /// SYN proxy: an ACK completing a cookie handshake created the connection.
    SynproxyEstablished,
    /// SYN proxy: another packet without a connection to the proxied ports.
    SynproxyDrop,
    /// An application-protocol rule matched the payload's label and dropped the packet.
    AppRule,
    /// An application-protocol rule blocked this connection earlier.
    AppBlocked,
}

impl Reason {
    /// Short human text.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule => "rule",
            Reason::Default => "default policy",
            Reason::CtInvalid => "conntrack state invalid",
            Reason::CtEstablished => "conntrack state established",
            Reason::CtRelated => "conntrack state related",
            Reason::Loopback => "loopback",
            Reason::Icmpv6Essential => "essential ICMPv6",
            Reason::Reassembly => "fragment dropped by IP reassembly",
            Reason::ReassemblyTimeout => "fragment of a datagram that never completed",
            Reason::BadIpChecksum => "IPv4 header checksum wrong: dropped by the IP stack",
            Reason::IpOptions => "IP options rejected: dropped by the IP stack",
            Reason::NotRouted => {
                "not routed: from or forwarded to a multicast or broadcast address"
            }
            Reason::Martian => "martian address: dropped by the IP stack",
            Reason::TtlExceeded => "TTL exceeded: dropped by the IP stack before the forward hook",
            Reason::Banned => "source banned",
            Reason::Ban => "limit exceeded: source banned",
            Reason::SynproxyAnswered => "SYN answered by the SYN proxy",
            Reason::SynproxyReply => "SYN-ACK sent by the SYN proxy",
            Reason::SynproxyEstablished => "SYN proxy handshake completed",
            Reason::SynproxyDrop => "no connection to a SYN-proxied port",
            Reason::AppRule => "application-protocol rule",
            Reason::AppBlocked => "connection blocked by an application-protocol rule",
        }
    }
}

/// The outcome for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Decision {
    /// What happens to the packet.
    pub action: Action,
    /// The deciding rule, when a rule decided.
    pub rule: Option<RuleId>,
    /// Why.
    pub reason: Reason,
    /// The application-protocol rule that matched this packet, if one did.
    pub app: Option<AppStep>,
}

impl Decision {
    fn new(action: Action, rule: Option<RuleId>, reason: Reason) -> Self {
        Self {
            action,
            rule,
            reason,
            app: None,
        }
    }

    /// A verdict reached before the rules (prelude) or by a rule, without an app step.
    pub fn prelude(action: Action, reason: Reason) -> Self {
        Self::new(action, None, reason)
    }
}

/// Which matcher evaluates the rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MatcherKind {
    /// Linear first-match over the IR, field by field.
    Reference,
    /// Interval lookup + bit-vector intersection ([`crate::classifier`]).
    #[default]
    Fast,
}

/// Options of an [`Engine`].
#[derive(Clone, Debug, Default)]
pub struct EngineOptions {
    /// Today's date: rules that expired before it are skipped. `None`: expiry is ignored.
    pub today: Option<Date>,
}

/// The field of a rule that did not match a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mismatch {
    /// The rule expired before [`EngineOptions::today`].
    Expired,
    /// Address family restriction.
    Family,
    /// Source side (`from`).
    From,
    /// Destination side (`to`).
    To,
    /// Protocol of every service.
    Protocol,
    /// Source port.
    SrcPort,
    /// Destination port.
    DstPort,
    /// ICMP type.
    IcmpType,
    /// Required conntrack state.
    CtState,
    /// Socket owner.
    Owner,
    /// The source already has `conn_limit` connections.
    ConnLimit,
    /// The rate limit's bucket is empty.
    Limit,
    /// The payload's label is not what the application-protocol rule asks for.
    App,
}

impl Mismatch {
    /// Field name as shown to users.
    pub fn as_str(self) -> &'static str {
        match self {
            Mismatch::Expired => "expires",
            Mismatch::Family => "family",
            Mismatch::From => "from",
            Mismatch::To => "to",
            Mismatch::Protocol => "protocol",
            Mismatch::SrcPort => "source port",
            Mismatch::DstPort => "destination port",
            Mismatch::IcmpType => "icmp type",
            Mismatch::CtState => "ct state",
            Mismatch::Owner => "owner",
            Mismatch::ConnLimit => "conn_limit",
            Mismatch::Limit => "limit",
            Mismatch::App => "app",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum IfPattern {
    Exact(String),
    Prefix(String),
}

impl IfPattern {
    fn new(s: &str) -> Self {
        match s.strip_suffix('*') {
            Some(p) => IfPattern::Prefix(p.to_owned()),
            None => IfPattern::Exact(s.to_owned()),
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            IfPattern::Exact(e) => e == name,
            IfPattern::Prefix(p) => name.starts_with(p.as_str()),
        }
    }
}

fn iface_ok(patterns: &[IfPattern], iface: Option<&str>) -> bool {
    iface.is_some_and(|name| patterns.iter().any(|p| p.matches(name)))
}

/// One alternative of a rule after expansion (from-choice × to-choice × service).
#[derive(Clone, Debug)]
struct Sub {
    rule: u32,
    iif: Option<Vec<IfPattern>>,
    oif: Option<Vec<IfPattern>>,
}

#[derive(Clone, Debug)]
struct Compiled {
    classifier: Classifier,
    subs: Vec<Sub>,
}

/// A final cross-product set's answer (see [`crate::cross`]).
#[derive(Clone, Copy, Debug)]
struct Cell {
    /// The decision when no flag sends the packet to the bit-vector path.
    decision: Decision,
    /// [`CELL_SLOW`], [`CELL_SYN_FIRST`], [`CELL_SYN_ANY`].
    flags: u8,
}

/// The rule scan's answer depends on the packet's owner or on limits (or their ban).
const CELL_SLOW: u8 = 1;
/// A bare SYN's first static match may be a SYN-proxy rule (the proxy step acts).
const CELL_SYN_FIRST: u8 = 2;
/// Some SYN-proxy alternative matches statically (the proxy step acts on non-SYN segments).
const CELL_SYN_ANY: u8 = 4;

/// The fast matcher's cross-product tables and the interface classes they index.
#[derive(Clone, Debug)]
struct Cross {
    /// `[direction][family]`, `None` where the budget did not allow them.
    hooks: [[Option<HookTables<Cell>>; 2]; 3],
    /// Per direction: the IPv4 field lookups specialised for these tables, where the
    /// classifier's layouts allow them.
    fields32: [Option<Fields32>; 3],
    /// Per direction: the same for IPv6.
    fields128: [Option<Fields128>; 3],
    /// Distinct interface patterns of all alternatives (at most 64).
    patterns: Vec<IfPattern>,
    /// Interface class `k`'s pattern mask; class 0 is "no interface" (`None`).
    masks: Vec<Option<u64>>,
    /// Interface names seen (of at most 16 bytes), by [`name_key`], with their class.
    cache: Vec<(NameKey, u8)>,
    /// The last name seen as input (0) and as output (1) interface, by [`name_key`]
    /// ([`NO_KEY`] before the first), with its class and whether it is `lo`.
    last_names: [(NameKey, u8, u8); 2],
}

/// An interface name of at most 16 bytes in three words: its length and two (possibly
/// overlapping) loads that together cover every byte, so equal keys mean equal names.
// Why: names compared through `bcmp` cost ~35 instructions a packet (two names); two loads
// and three compares per cached name cost a few.
type NameKey = (usize, u64, u64);

/// A [`NameKey`] no name has (none is longer than 16 bytes): the memo before the first name.
const NO_KEY: NameKey = (usize::MAX, 0, 0);

/// A packet's interface classes and whether each interface is the loopback `lo`.
#[derive(Clone, Copy, Debug)]
struct IfacePair {
    iif: usize,
    oif: usize,
    /// Bit 0: the input interface is `lo`; bit 1: the output interface is.
    lo: u8,
}

/// Per [`dir_index`], the [`IfacePair::lo`] bit the loopback prelude tests: ingress the
/// input interface, egress the output interface, forward none (see `prelude_static`).
const LOOPBACK_BIT: [u8; 3] = [1, 2, 0];

/// See [`NameKey`]; `None` for names longer than 16 bytes.
#[inline(always)]
fn name_key(name: &str) -> Option<NameKey> {
    let b = name.as_bytes();
    let n = b.len();
    let word = |s: &[u8]| -> u64 {
        match s.len() {
            8 => u64::from_le_bytes(s.try_into().unwrap_or([0; 8])),
            4 => u64::from(u32::from_le_bytes(s.try_into().unwrap_or([0; 4]))),
            _ => s
                .iter()
                .enumerate()
                .fold(0, |k, (i, &x)| k | u64::from(x) << (8 * i)),
        }
    };
    match n {
        0..=3 => Some((n, word(b), 0)),
        4..=7 => Some((n, word(&b[..4]), word(&b[n - 4..]))),
        8..=16 => Some((n, word(&b[..8]), word(&b[n - 8..]))),
        _ => None,
    }
}

impl Cross {
    /// The interface class of `name`; `None` when its mask is not a class (cannot happen:
    /// every name's mask is one of `masks`, see `iface_masks`).
    #[inline(always)]
    fn iface_class(&mut self, name: Option<&str>) -> Option<usize> {
        let Some(name) = name else {
            return Some(0);
        };
        if self.patterns.is_empty() {
            // No alternative names an interface: every class answers alike.
            return Some(0);
        }
        let key = name_key(name);
        if let Some(key) = key {
            if let Some((_, k)) = self.cache.iter().find(|(n, _)| *n == key) {
                return Some(usize::from(*k));
            }
        }
        self.classify_name(name, key)
    }

    /// The classes of a packet's interfaces, each from a memo of the last name seen there.
    // Why: a capture replay or a gateway's hook sees the same name at each place on run after
    // run of packets; one key comparison replaces a cache scan and the loopback name test.
    #[inline(always)]
    fn iface_pair(&mut self, iif: Option<&str>, oif: Option<&str>) -> Option<IfacePair> {
        let (iif, lo_in) = self.iface_memo(iif, 0)?;
        let (oif, lo_out) = self.iface_memo(oif, 1)?;
        Some(IfacePair {
            iif,
            oif,
            lo: lo_in | lo_out << 1,
        })
    }

    /// One interface's class and whether it is `lo`, through memo `at` (0 input, 1 output).
    // Why no branch on whether the packet has the interface: a hook can see packets with and
    // without it in random order (this engine's ingress and forward share the memo of the
    // output interface), and a mispredicted branch costs more than the whole memo test. No
    // interface reads a 4-byte placeholder (the usual names' `name_key` arm) and the answers
    // are combined arithmetically; only a real miss branches.
    #[inline(always)]
    fn iface_memo(&mut self, name: Option<&str>, at: usize) -> Option<(usize, u8)> {
        let none = name.is_none();
        let key = name_key(name.unwrap_or("none"));
        let (memo, class, lo) = self.last_names[at];
        let differs = key.map_or(1, |k| {
            (k.0 ^ memo.0) as u64 | (k.1 ^ memo.1) | (k.2 ^ memo.2)
        });
        if u64::from(!none) & u64::from(differs != 0) != 0 {
            return self.iface_memo_miss(name, at);
        }
        // All ones when there is an interface.
        let some = u8::from(!none).wrapping_neg();
        Some((usize::from(class & some), lo & some))
    }

    #[cold]
    fn iface_memo_miss(&mut self, name: Option<&str>, at: usize) -> Option<(usize, u8)> {
        let class = self.iface_class(name)?;
        let lo = u8::from(name == Some("lo"));
        if let Some(key) = name.and_then(name_key) {
            self.last_names[at] = (key, u8::try_from(class).ok()?, lo);
        }
        Some((class, lo))
    }

    #[cold]
    fn classify_name(&mut self, name: &str, key: Option<NameKey>) -> Option<usize> {
        let mask = pattern_mask(&self.patterns, name);
        let k = self.masks.iter().position(|&m| m == Some(mask))?;
        if let Some(key) = key {
            if self.cache.len() < IFACE_CACHE {
                self.cache.push((key, k as u8));
            }
        }
        Some(k)
    }

    fn memory_bytes(&self) -> usize {
        self.hooks
            .iter()
            .flatten()
            .flatten()
            .map(HookTables::memory_bytes)
            .sum::<usize>()
            + self
                .fields32
                .iter()
                .flatten()
                .map(Fields32::memory_bytes)
                .sum::<usize>()
            + self
                .fields128
                .iter()
                .flatten()
                .map(Fields128::memory_bytes)
                .sum::<usize>()
    }
}

/// Bit `i` set when `patterns[i]` matches `name`.
fn pattern_mask(patterns: &[IfPattern], name: &str) -> u64 {
    patterns
        .iter()
        .enumerate()
        .filter(|(_, p)| p.matches(name))
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// Every pattern mask an interface name can have, plus "no interface" (`None`) first. A name
/// equal to an exact pattern has that pattern's name's mask; any other name matches exactly
/// the prefix patterns that are prefixes of the longest one it matches (they are prefixes of
/// one string), i.e. the mask of that prefix's prefix patterns; or none.
fn iface_masks(patterns: &[IfPattern]) -> Vec<Option<u64>> {
    let mut masks: Vec<u64> = vec![0];
    for p in patterns {
        masks.push(match p {
            IfPattern::Exact(e) => pattern_mask(patterns, e),
            IfPattern::Prefix(pre) => patterns
                .iter()
                .enumerate()
                .filter(|(_, q)| matches!(q, IfPattern::Prefix(q) if pre.starts_with(q.as_str())))
                .fold(0, |m, (i, _)| m | 1 << i),
        });
    }
    masks.sort_unstable();
    masks.dedup();
    std::iter::once(None)
        .chain(masks.into_iter().map(Some))
        .collect()
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens_scaled: u128,
    last_ns: u64,
}

const NS_PER_S: u128 = 1_000_000_000;

fn limit_scale(limit: &Limit) -> u128 {
    u128::from(limit.per_s.max(1)) * NS_PER_S
}

fn limit_capacity(limit: &Limit) -> u128 {
    let burst = if limit.burst == 0 {
        limit.rate
    } else {
        limit.burst
    };
    u128::from(burst) * limit_scale(limit)
}

impl Bucket {
    fn full(limit: &Limit, now_ns: u64) -> Self {
        Self {
            tokens_scaled: limit_capacity(limit),
            last_ns: now_ns,
        }
    }

    fn refill(&mut self, limit: &Limit, now_ns: u64) {
        if now_ns > self.last_ns {
            let elapsed = u128::from(now_ns - self.last_ns);
            let add = elapsed.saturating_mul(u128::from(limit.rate));
            self.tokens_scaled = self
                .tokens_scaled
                .saturating_add(add)
                .min(limit_capacity(limit));
            self.last_ns = now_ns;
        }
    }

    fn take(&mut self, limit: &Limit, cost: u64, now_ns: u64) -> bool {
        self.refill(limit, now_ns);
        let cost_scaled = u128::from(cost) * limit_scale(limit);
        if self.tokens_scaled >= cost_scaled {
            self.tokens_scaled -= cost_scaled;
            true
        } else {
            false
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Meters {
    shared: FastMap<u32, Bucket>,
    per_source: FastMap<u32, FastMap<IpAddr, Bucket>>,
}

/// Per-rule data the matchers share.
#[derive(Clone, Debug)]
struct RuleRt {
    active: bool,
    ct_states: Vec<CtState>,
    owner: Option<Owner>,
    limit: Option<Limit>,
    conn_limit: Option<u32>,
    ban_timeout_s: Option<u32>,
    /// Application-protocol rules act in the prelude, not in the rule scan. (A SYN-proxy rule
    /// is also an ordinary accept rule of the scan: a tracked SYN that an earlier rule claimed
    /// and let fall through reaches it there.)
    prelude_only: bool,
    /// A SYN-proxy rule (in `Engine::synproxy_rules` when active).
    synproxy: bool,
}

#[derive(Clone, Copy, Debug, Default)]
struct Cookie {
    key: u64,
    answered_ns: u64,
    rule: u32,
}

/// Side effects of a decision, applied by `classify` and ignored by `explain`.
#[derive(Clone, Copy, Debug, Default)]
struct Effect {
    ban: Option<(IpAddr, u64, u32)>,
    cookie: Option<Cookie>,
}

/// A packet's classifier rows, looked up at most once per decision.
#[derive(Debug, Default)]
struct RowCache {
    looked_up: bool,
    found: bool,
    rows: Rows,
}

/// The rule scan's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hit {
    Rule(u32),
    /// The rule's limits refused the packet and its `ban` bans the source.
    Ban(u32),
    None,
}

/// What `explain` records while deciding.
#[derive(Debug, Default)]
struct Trace {
    steps: Vec<Step>,
    considered: Vec<RuleCheck>,
}

impl Trace {
    fn step(&mut self, step: &'static str, rule: Option<RuleId>, detail: String) {
        self.steps.push(Step { step, rule, detail });
    }
}

fn app_matches(m: &AppMatch, label: Option<AppProtocol>) -> bool {
    label.is_some_and(|l| m.protocols.contains(&l)) != m.negate
}

fn label_name(label: Option<AppProtocol>) -> &'static str {
    label.map_or("unrecognised", AppProtocol::as_str)
}

/// Key of a handshake in the SYN cookie stand-in (never 0, the empty slot).
fn cookie_key(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> u64 {
    let mut h = 0x9e37_79b9_7f4a_7c15u64;
    let a = addr_key(src);
    let b = addr_key(dst);
    for w in [
        a as u64,
        (a >> 64) as u64,
        b as u64,
        (b >> 64) as u64,
        (u64::from(sport) << 16) | u64::from(dport) | (u64::from(src.is_ipv6()) << 32),
    ] {
        h = (h ^ w).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 31;
    }
    h.max(1)
}

/// One prelude step as `explain` reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Step {
    /// `banned source`, `syn proxy` or `application rules`.
    pub step: &'static str,
    /// The rule involved, if any.
    pub rule: Option<RuleId>,
    /// What happened.
    pub detail: String,
}

/// A compiled policy plus its rate-limit state.
#[derive(Clone, Debug)]
pub struct Engine {
    policy: Policy,
    sets: Vec<PrefixSet>,
    zones: Vec<(Vec<IfPattern>, PrefixSet)>,
    rules: Vec<RuleRt>,
    /// `[direction][family]` with family 0 = IPv4, 1 = IPv6.
    compiled: [[Compiled; 2]; 3],
    /// The IPv4 source addresses' atoms, when the hooks' IPv4 classifiers share them (their
    /// first field is then the atom).
    src_atoms: Option<Partition>,
    /// Rate-limit state; boxed so a classification moves a pointer, not two maps (`None`
    /// only while a decision borrows it).
    meters: Option<Box<Meters>>,
    sub_count: usize,
    never_ban: PrefixSet,
    /// Banned source → (ban ends at, banning rule).
    bans: FastMap<IpAddr, (u64, u32)>,
    /// Direct-mapped SYN cookie stand-in (empty unless a rule has `synproxy`).
    cookies: Vec<Cookie>,
    /// Per direction: rules with `synproxy`, in policy order.
    synproxy_rules: [Vec<u32>; 3],
    /// Per direction: the rules that can claim a bare SYN before a SYN proxy sees it (active,
    /// not application-protocol rules), in policy order, up to the last `synproxy` rule.
    syn_claimers: [Vec<u32>; 3],
    /// Per direction: rules with `app`, in policy order.
    app_rules: [Vec<u32>; 3],
    /// Per direction: active rules with `conn_limit`, in policy order.
    conn_limit_rules: [Vec<u32>; 3],
    /// The fast matcher's cross-product tables (`None`: none built, e.g. > 64 interface
    /// patterns).
    cross: Option<Box<Cross>>,
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
        Direction::Forward => 2,
    }
}

const FULL_V4: (u128, u128) = (0, u32::MAX as u128);
const FULL_V6: (u128, u128) = (0, u128::MAX);

struct Choice {
    ifaces: Option<Vec<IfPattern>>,
    addrs: Vec<(u128, u128)>,
}

fn net_interval(net: &rampart_ir::IpNet, v6: bool) -> Option<(u128, u128)> {
    match (net, v6) {
        (rampart_ir::IpNet::V4(n), false) => Some((
            u128::from(u32::from(n.network())),
            u128::from(u32::from(n.broadcast())),
        )),
        (rampart_ir::IpNet::V6(n), true) => {
            Some((u128::from(n.network()), u128::from(n.broadcast())))
        }
        _ => None,
    }
}

impl Engine {
    /// Compile `policy` with default options.
    pub fn new(policy: &Policy) -> Self {
        Self::with_options(policy, EngineOptions::default())
    }

    /// Compile `policy`.
    pub fn with_options(policy: &Policy, options: EngineOptions) -> Self {
        Self::with_table_budget(policy, options, CROSS_TABLE_BYTES)
    }

    /// Compile `policy`, giving the fast matcher's cross-product tables at most `bytes`
    /// ([`CROSS_TABLE_BYTES`] by default; hooks that do not fit keep the bit-vector scan,
    /// with identical decisions). For tests and tuning.
    pub fn with_table_budget(policy: &Policy, options: EngineOptions, bytes: usize) -> Self {
        let sets: Vec<PrefixSet> = policy
            .sets
            .iter()
            .map(|s| PrefixSet::new(&s.elements, &s.except))
            .collect();
        let zones: Vec<(Vec<IfPattern>, PrefixSet)> = policy
            .zones
            .iter()
            .map(|z| {
                (
                    z.interfaces.iter().map(|i| IfPattern::new(i)).collect(),
                    PrefixSet::new(&z.networks, &[]),
                )
            })
            .collect();
        let rules: Vec<RuleRt> = policy
            .rules
            .iter()
            .map(|r| RuleRt {
                active: match (options.today, r.expires) {
                    (Some(today), Some(exp)) => exp >= today,
                    _ => true,
                },
                ct_states: r.ct_states.clone(),
                owner: r.owner.clone(),
                limit: r.limit.clone(),
                conn_limit: r.conn_limit,
                ban_timeout_s: r.ban.as_ref().map(|b| b.timeout_s),
                prelude_only: r.app.is_some(),
                synproxy: r.synproxy.is_some() && r.app.is_none(),
            })
            .collect();
        let by_dir = |want: fn(&rampart_ir::Rule) -> bool| {
            Direction::ALL.map(|d| {
                (0..policy.rules.len() as u32)
                    .filter(|&i| {
                        let r = &policy.rules[i as usize];
                        r.direction == d && want(r) && rules[i as usize].active
                    })
                    .collect::<Vec<u32>>()
            })
        };
        // A rule with both is an application-protocol rule (the IR allows synproxy on plain
        // TCP accept rules only).
        let synproxy_rules = by_dir(|r| r.synproxy.is_some() && r.app.is_none());
        let app_rules = by_dir(|r| r.app.is_some());
        let conn_limit_rules = by_dir(|r| r.conn_limit.is_some() && r.app.is_none());
        let mut syn_claimers = by_dir(|r| r.app.is_none());
        for (claimers, proxies) in syn_claimers.iter_mut().zip(&synproxy_rules) {
            claimers.retain(|&i| proxies.last().is_some_and(|&last| i <= last));
        }
        let cookies = if synproxy_rules.iter().any(|v| !v.is_empty()) {
            vec![Cookie::default(); SYNCOOKIE_SLOTS]
        } else {
            Vec::new()
        };
        let mut sub_count = 0;
        let mut v4 = Direction::ALL.map(|dir| expand(policy, &sets, &rules, dir, false));
        let src_atoms = share_src_v4(&mut v4);
        let mut v4 = v4.map(Some);
        let compiled = Direction::ALL.map(|dir| {
            let d = dir_index(dir);
            [false, true].map(|v6| {
                let e = match v4[d].take() {
                    Some(e) if !v6 => e,
                    _ => expand(policy, &sets, &rules, dir, true),
                };
                sub_count += e.0.len();
                finish(e)
            })
        });
        let cross = build_cross(policy, &rules, &compiled, bytes);
        Self {
            policy: policy.clone(),
            sets,
            zones,
            rules,
            compiled,
            src_atoms,
            meters: Some(Box::default()),
            sub_count,
            never_ban: PrefixSet::new(&policy.defaults.never_ban, &[]),
            bans: FastMap::default(),
            cookies,
            synproxy_rules,
            syn_claimers,
            app_rules,
            conn_limit_rules,
            cross,
        }
    }

    /// The active `conn_limit` rules of hook `direction`, in policy order (the ones a replay
    /// fills [`PacketMeta::rule_conns`] for).
    pub fn conn_limit_rules(&self, direction: Direction) -> &[u32] {
        &self.conn_limit_rules[dir_index(direction)]
    }

    /// The `conn_limit` rules whose `add @connlimit_N` statement a packet reached when the rule
    /// scan decided it at rule `upto` (`None`: it went through every rule, to the default
    /// policy), in policy order, into `out`. Each such statement adds the packet's connection
    /// to its rule's set, even when it was over the cap and a later rule accepted it.
    pub fn conn_limit_rules_reached(
        &self,
        meta: &PacketMeta<'_>,
        upto: Option<RuleId>,
        out: &mut Vec<u32>,
    ) {
        out.clear();
        for &r in self.conn_limit_rules(meta.direction) {
            if upto.is_some_and(|u| r > u.0) {
                break;
            }
            if self.static_mismatch(r as usize, meta).is_none() {
                out.push(r);
            }
        }
    }

    /// The policy this engine was compiled from.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Number of expanded rule alternatives across all directions and families.
    pub fn alternative_count(&self) -> usize {
        self.sub_count
    }

    /// Approximate bytes of the fast matcher's lookup structures.
    pub fn memory_bytes(&self) -> usize {
        self.compiled
            .iter()
            .flatten()
            .map(|c| c.classifier.memory_bytes())
            .sum::<usize>()
            + self.src_atoms.as_ref().map_or(0, Partition::memory_bytes)
            + self.cross.as_ref().map_or(0, |c| c.memory_bytes())
    }

    /// Hooks × families (of 6) that have cross-product tables. For tests.
    pub fn table_hooks(&self) -> usize {
        self.cross
            .as_ref()
            .map_or(0, |c| c.hooks.iter().flatten().flatten().count())
    }

    /// Forget all rate-limit state.
    pub fn reset_meters(&mut self) {
        self.meters = Some(Box::default());
    }

    /// Whether any rule is an application-protocol rule (callers can skip building payload
    /// views when not).
    pub fn has_app_rules(&self) -> bool {
        self.app_rules.iter().any(|v| !v.is_empty())
    }

    /// Whether any rule has a SYN proxy.
    pub fn has_synproxy(&self) -> bool {
        !self.cookies.is_empty()
    }

    /// Put `src` in the ban set from `now_ns` until `until_ns`, as if `rule` had banned it
    /// (tests, and `explain` of a banned source). Returns false when the set is full.
    pub fn ban(&mut self, src: IpAddr, now_ns: u64, until_ns: u64, rule: RuleId) -> bool {
        self.insert_ban(src, until_ns, rule.0, now_ns)
    }

    /// The ban on `src` at `now_ns`: (ban ends at, banning rule).
    pub fn banned(&self, src: IpAddr, now_ns: u64) -> Option<(u64, RuleId)> {
        self.bans
            .get(&src)
            .filter(|(until, _)| *until > now_ns)
            .map(|&(until, rule)| (until, RuleId(rule)))
    }

    /// Sources banned at `now_ns`.
    pub fn ban_count(&self, now_ns: u64) -> usize {
        self.bans
            .values()
            .filter(|(until, _)| *until > now_ns)
            .count()
    }

    fn insert_ban(&mut self, src: IpAddr, until_ns: u64, rule: u32, now_ns: u64) -> bool {
        if !self.bans.contains_key(&src) && self.bans.len() >= MAX_BAN_ENTRIES {
            self.bans.retain(|_, (until, _)| *until > now_ns);
            if self.bans.len() >= MAX_BAN_ENTRIES {
                return false;
            }
        }
        self.bans.insert(src, (until_ns, rule));
        true
    }

    /// Classify with the fast matcher. `now_ns` (nanoseconds, any epoch, non-decreasing)
    /// drives the token buckets, the ban set and the SYN cookies.
    pub fn classify(&mut self, meta: &PacketMeta<'_>, now_ns: u64) -> Decision {
        self.classify_with(MatcherKind::Fast, meta, now_ns)
    }

    /// Prefetch hint for a later classification of an IPv4 packet from `src` to `dst` (with
    /// TCP/UDP `ports`, if any) in `direction` (every direction when `None`): the field-index
    /// lines that lookup will read. Batched replay issues [`PrefetchStage::Index`] several
    /// packets ahead and [`PrefetchStage::Entries`] a few packets later. Never changes a
    /// decision.
    #[inline]
    pub fn prefetch_v4(
        &self,
        direction: Option<Direction>,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        ports: Option<(u16, u16)>,
        stage: PrefetchStage,
    ) {
        let (src, dst) = (u128::from(u32::from(src)), u128::from(u32::from(dst)));
        let one = |d: Direction| {
            // Field order of `PacketMeta::key`.
            let c = &self.compiled[dir_index(d)][0].classifier;
            match &self.src_atoms {
                Some(p) => p.prefetch(src, stage),
                None => c.prefetch_field(0, src, stage),
            }
            c.prefetch_field(1, dst, stage);
            if let Some((sp, dp)) = ports {
                c.prefetch_field(3, u128::from(sp), stage);
                c.prefetch_field(4, u128::from(dp), stage);
            }
        };
        match direction {
            Some(d) => one(d),
            None => Direction::ALL.into_iter().for_each(one),
        }
    }

    /// Classify with the chosen matcher.
    pub fn classify_with(
        &mut self,
        kind: MatcherKind,
        meta: &PacketMeta<'_>,
        now_ns: u64,
    ) -> Decision {
        if kind == MatcherKind::Fast {
            if let Some(d) = self.classify_by_tables(meta, now_ns) {
                return d;
            }
        }
        let mut meters = self.meters.take().unwrap_or_default();
        let mut effect = Effect::default();
        let decision = self.decide(kind, &mut meters, meta, now_ns, &mut effect, None);
        self.meters = Some(meters);
        if let Some((src, until, rule)) = effect.ban {
            self.insert_ban(src, until, rule, now_ns);
        }
        if let Some(c) = effect.cookie {
            if !self.cookies.is_empty() {
                let slot = (c.key as usize) & (self.cookies.len() - 1);
                self.cookies[slot] = c;
            }
        }
        decision
    }

    /// The fast matcher's decision from the cross-product tables, or `None` when the packet
    /// needs the full evaluation (an application-protocol step that acts, a banned source, a
    /// SYN proxy or limit or owner that could act, no tables for its hook). Reads no mutable
    /// state but the interface-name cache and changes none: a `Some` is exactly what `decide`
    /// returns, with no effect. Public for the differential tests.
    #[doc(hidden)]
    #[inline(always)]
    pub fn classify_by_tables(&mut self, meta: &PacketMeta<'_>, now_ns: u64) -> Option<Decision> {
        if let Some(conn) = meta.app_conn {
            // The application step must not act: a connection accepted earlier, or one whose
            // packet it does not inspect.
            match conn.state {
                AppConnState::Accepted(_) => {}
                AppConnState::Inspecting if !self.app_inspects(meta, conn) => {}
                _ => return None,
            }
        }
        let pair = self.cross.as_deref_mut()?.iface_pair(meta.iif, meta.oif)?;
        let (ii, oi) = (pair.iif, pair.oif);
        let d = dir_index(meta.direction);
        // `prelude_static`, with the loopback test from the memo.
        let defaults = &self.policy.defaults;
        if defaults.allow_loopback && pair.lo & LOOPBACK_BIT[d] != 0 {
            return Some(Decision::prelude(Action::Accept, Reason::Loopback));
        }
        if defaults.allow_icmpv6_essential && meta.is_v6() {
            if let Some(d) = self.prelude_static(meta) {
                return Some(d);
            }
        }
        if meta.direction != Direction::Egress
            && !self.bans.is_empty()
            && self.banned(meta.src, now_ns).is_some()
        {
            return None;
        }
        let stateful = self.policy.defaults.stateful;
        if stateful && matches!(meta.ct_state, CtState::Established | CtState::Related) {
            // An entry exists, so the SYN proxy step passes; no application step (above).
            return self.prelude_conntrack(meta);
        }
        let ct = meta.ct_state.index();
        let cross = self.cross.as_deref()?;
        let cell = match meta.key32() {
            Some(mut key) => {
                if let Some(p) = &self.src_atoms {
                    key[0] = p.atom32(key[0]) as u32;
                }
                let hook = cross.hooks[d][0].as_ref()?;
                match &cross.fields32[d] {
                    Some(f) => hook.cell32(f, &key, ii, oi, ct)?,
                    None => {
                        hook.cell(self.compiled[d][0].classifier.classes32(&key)?, ii, oi, ct)?
                    }
                }
            }
            None => {
                let (IpAddr::V6(src), IpAddr::V6(dst)) = (meta.src, meta.dst) else {
                    return None;
                };
                let hook = cross.hooks[d][1].as_ref()?;
                let k = match &cross.fields128[d] {
                    Some(f) => {
                        let (sp, dp, icmp) = match meta.l4 {
                            L4Meta::Ports { src, dst } => {
                                (u32::from(src), u32::from(dst), NO_ICMP as u32)
                            }
                            L4Meta::Icmp { icmp_type, .. } => {
                                (NO_PORT as u32, NO_PORT as u32, u32::from(icmp_type))
                            }
                            L4Meta::None => (NO_PORT as u32, NO_PORT as u32, NO_ICMP as u32),
                        };
                        let proto = u32::from(meta.protocol) * ICMP_SPAN as u32 + icmp;
                        f.classes(u128::from(src), u128::from(dst), [proto, sp, dp])
                    }
                    None => self.compiled[d][1].classifier.classes(&meta.key())?,
                };
                hook.cell(k, ii, oi, ct)?
            }
        };
        // The SYN proxy step (no entry: not established/related, see above), the invalid
        // state and the flags, tested together: one rarely taken branch instead of several
        // that follow the traffic mix. 0/1 integers and products, not `&&` or `if`, which
        // the compiler turns into branches (the protocol's would mispredict on every other
        // packet of a TCP/UDP mix).
        use tcp_flags::{ACK, FIN, RST, SYN};
        let proxied = u8::from(meta.protocol == rampart_ir::proto::TCP)
            & u8::from(!self.cookies.is_empty())
            & u8::from(!meta.ct_entry)
            & u8::from(matches!(meta.l4, L4Meta::Ports { .. }));
        let flags = meta.tcp_flags & (SYN | ACK | RST | FIN);
        // CELL_SYN_FIRST for a bare SYN, CELL_SYN_ANY otherwise.
        let acts = CELL_SYN_ANY - (CELL_SYN_ANY - CELL_SYN_FIRST) * u8::from(flags == SYN);
        let proxy_acts = proxied & u8::from(meta.direction != Direction::Egress);
        let syn_ack = proxied & u8::from(flags == SYN | ACK);
        let invalid = u8::from(stateful) & u8::from(meta.ct_state == CtState::Invalid);
        let exceptional =
            (cell.flags & (CELL_SLOW | (acts * proxy_acts))) | (syn_ack << 4) | (invalid << 5);
        if exceptional != 0 {
            // In `decide`'s order: the proxy step, then the conntrack prelude, then the rules.
            if syn_ack != 0 || cell.flags & (acts * proxy_acts) != 0 {
                return None;
            }
            if invalid != 0 {
                return self.prelude_conntrack(meta);
            }
            return None;
        }
        Some(cell.decision)
    }

    /// The whole evaluation: prelude steps in the IR's order, then the rules, then the
    /// default. Reads the ban set and cookies, sets in `effect` what to add to them (it is
    /// left alone otherwise). With `trace` (explain), records the prelude steps and every rule
    /// considered.
    #[inline(always)]
    fn decide(
        &self,
        kind: MatcherKind,
        meters: &mut Meters,
        meta: &PacketMeta<'_>,
        now_ns: u64,
        effect: &mut Effect,
        mut trace: Option<&mut Trace>,
    ) -> Decision {
        // The fast matcher looks the packet's fields up once, for the SYN proxy step and the
        // rule scan (`explain` traces the reference path).
        let mut rows = RowCache::default();
        let fast_rows = kind == MatcherKind::Fast && trace.is_none();
        if let Some(d) = self.prelude_static(meta) {
            return d;
        }
        if meta.direction != Direction::Egress && !self.bans.is_empty() {
            if let Some((until, rule)) = self.banned(meta.src, now_ns) {
                if let Some(t) = trace.as_deref_mut() {
                    t.step(
                        "banned source",
                        Some(rule),
                        format!(
                            "{} is banned (by rule #{} {}) for {} s more",
                            meta.src,
                            rule.0,
                            self.rule_name(rule),
                            (until - now_ns).div_ceil(1_000_000_000)
                        ),
                    );
                }
                return Decision::new(Action::Drop, Some(rule), Reason::Banned);
            }
        }
        if meta.protocol == rampart_ir::proto::TCP && !self.cookies.is_empty() {
            if let Some(r) = self.synproxy_step(
                meters,
                meta,
                now_ns,
                fast_rows.then_some(&mut rows),
                trace.as_deref_mut(),
            ) {
                *effect = r.1;
                return r.0;
            }
        }
        let mut app_step = None;
        if let Some(conn) = meta.app_conn {
            match conn.state {
                AppConnState::Blocked(rule) => {
                    if let Some(t) = trace.as_deref_mut() {
                        t.step(
                            "application rules",
                            Some(rule).filter(|r| (r.0 as usize) < self.policy.rules.len()),
                            format!(
                                "connection blocked earlier by rule #{} {}",
                                rule.0,
                                self.rule_name(rule)
                            ),
                        );
                    }
                    // The state comes from the caller: never index with an unknown rule.
                    let rule = ((rule.0 as usize) < self.policy.rules.len()).then_some(rule);
                    return Decision::new(Action::Drop, rule, Reason::AppBlocked);
                }
                AppConnState::Accepted(_) => {}
                AppConnState::Inspecting => {
                    if let Some(step) =
                        self.app_step(meters, meta, conn, now_ns, trace.as_deref_mut())
                    {
                        if step.action != Action::Accept {
                            return Decision {
                                action: step.action,
                                rule: Some(step.rule),
                                reason: Reason::AppRule,
                                app: Some(step),
                            };
                        }
                        app_step = Some(step);
                    }
                }
            }
        }
        if let Some(mut d) = self.prelude_conntrack(meta) {
            d.app = app_step;
            return d;
        }
        let hit = match kind {
            MatcherKind::Reference => self.reference_match(meters, meta, now_ns, trace),
            MatcherKind::Fast => self.fast_match(meters, meta, now_ns, &mut rows),
        };
        let mut d = match hit {
            Hit::Rule(id) => Decision::new(
                self.policy.rules[id as usize].action,
                Some(RuleId(id)),
                Reason::Rule,
            ),
            Hit::Ban(id) => {
                *effect = self.ban_effect(id, meta.src, now_ns);
                Decision::new(Action::Drop, Some(RuleId(id)), Reason::Ban)
            }
            Hit::None => Decision::new(
                self.policy.defaults.for_direction(meta.direction),
                None,
                Reason::Default,
            ),
        };
        d.app = app_step;
        d
    }

    fn rule_name(&self, rule: RuleId) -> &str {
        self.policy
            .rules
            .get(rule.0 as usize)
            .map_or("?", |r| r.name.as_str())
    }

    fn ban_effect(&self, rule: u32, src: IpAddr, now_ns: u64) -> Effect {
        let timeout_s = self.rules[rule as usize].ban_timeout_s.unwrap_or(0);
        Effect {
            ban: Some((
                src,
                now_ns.saturating_add(u64::from(timeout_s) * 1_000_000_000),
                rule,
            )),
            cookie: None,
        }
    }

    /// Whether a packet refused by rule `rule`'s limits bans its source (instead of falling
    /// through): the rule has `ban`, the source is not in `never_ban`, and the set has room.
    fn bans_source(&self, rule: u32, src: IpAddr, now_ns: u64) -> bool {
        self.rules[rule as usize].ban_timeout_s.is_some()
            && !self.never_ban.contains(src)
            && (self.bans.len() < MAX_BAN_ENTRIES
                || self.bans.contains_key(&src)
                || self.bans.values().any(|(until, _)| *until <= now_ns))
    }

    fn cookie(&self, key: u64, now_ns: u64) -> Option<Cookie> {
        let c = *self
            .cookies
            .get((key as usize) & (self.cookies.len().max(1) - 1))?;
        (c.key == key && now_ns >= c.answered_ns && now_ns - c.answered_ns <= SYNCOOKIE_VALID_NS)
            .then_some(c)
    }

    /// The SYN proxy step (see [`rampart_ir::Synproxy`]) for a TCP packet.
    fn synproxy_step(
        &self,
        meters: &mut Meters,
        meta: &PacketMeta<'_>,
        now_ns: u64,
        rows: Option<&mut RowCache>,
        mut trace: Option<&mut Trace>,
    ) -> Option<(Decision, Effect)> {
        use tcp_flags::{ACK, FIN, RST, SYN};
        let has_entry =
            meta.ct_entry || matches!(meta.ct_state, CtState::Established | CtState::Related);
        let L4Meta::Ports { src: sp, dst: dp } = meta.l4 else {
            return None;
        };
        if has_entry {
            return None;
        }
        let flags = meta.tcp_flags & (SYN | ACK | RST | FIN);
        let mut note = |rule: u32, detail: String| {
            if let Some(t) = trace.as_deref_mut() {
                t.step("syn proxy", Some(RuleId(rule)), detail);
            }
        };
        // The SYN-ACK of a handshake the proxy answered is the gateway's own (any hook).
        if flags == SYN | ACK {
            if let Some(c) = self.cookie(cookie_key(meta.dst, meta.src, dp, sp), now_ns) {
                note(
                    c.rule,
                    "SYN-ACK of a handshake the SYN proxy answered".into(),
                );
                return Some((
                    Decision::new(Action::Accept, Some(RuleId(c.rule)), Reason::SynproxyReply),
                    Effect::default(),
                ));
            }
        }
        if meta.direction == Direction::Egress {
            return None;
        }
        let i = match rows {
            Some(cache) => self.fast_proxy_rule(meta, flags == SYN, cache)?,
            None => {
                let d = dir_index(meta.direction);
                let matches = |j: &u32| self.static_mismatch(*j as usize, meta).is_none();
                let p = self.synproxy_rules[d].iter().copied().find(matches)?;
                if flags == SYN {
                    // The proxy acts at its rule's place in rule order: a bare SYN is proxied
                    // only when the first rule whose static fields match it is a SYN-proxy
                    // rule. Otherwise it stays tracked and goes through the rules (an earlier
                    // drop drops it).
                    let first = self.syn_claimers[d].iter().copied().find(matches);
                    if let Some(j) = first.filter(|&j| j != p) {
                        note(
                            p,
                            format!(
                                "bare SYN claimed first by earlier rule {} (its static fields match): not proxied, decided by the rules",
                                self.policy.rules[j as usize].name
                            ),
                        );
                        return None;
                    }
                }
                p
            }
        };
        let rule = Some(RuleId(i));
        let key = cookie_key(meta.src, meta.dst, sp, dp);
        if flags == SYN {
            return Some(
                match dynamic(&self.rules[i as usize], i, meters, meta, now_ns) {
                    None => {
                        note(
                            i,
                            "bare SYN answered with a SYN cookie; no conntrack entry".into(),
                        );
                        (
                            Decision::new(Action::Accept, rule, Reason::SynproxyAnswered),
                            Effect {
                                ban: None,
                                cookie: Some(Cookie {
                                    key,
                                    answered_ns: now_ns,
                                    rule: i,
                                }),
                            },
                        )
                    }
                    Some(m) if self.bans_source(i, meta.src, now_ns) => {
                        note(i, format!("SYN refused by {}: source banned", m.as_str()));
                        (
                            Decision::new(Action::Drop, rule, Reason::Ban),
                            self.ban_effect(i, meta.src, now_ns),
                        )
                    }
                    Some(m) => {
                        note(i, format!("SYN refused by {}: dropped", m.as_str()));
                        (
                            Decision::new(Action::Drop, rule, Reason::SynproxyDrop),
                            Effect::default(),
                        )
                    }
                },
            );
        }
        if flags == ACK && self.cookie(key, now_ns).is_some() {
            note(
                i,
                "ACK completes a cookie handshake: connection established".into(),
            );
            return Some((
                Decision::new(Action::Accept, rule, Reason::SynproxyEstablished),
                Effect::default(),
            ));
        }
        note(
            i,
            "neither a bare SYN nor an ACK completing a cookie handshake, and no connection".into(),
        );
        Some((
            Decision::new(Action::Drop, rule, Reason::SynproxyDrop),
            Effect::default(),
        ))
    }

    /// The rule that acts in the SYN proxy step, from the fast matcher's rows: for a bare SYN
    /// the first rule whose static fields match, when it is a SYN-proxy rule (the reference
    /// path's "first claimer is the proxy rule": SYN-proxy rules are claimers, and no rule
    /// after the last one can be the first match while a proxy rule matches); otherwise the
    /// first SYN-proxy rule whose static fields match.
    fn fast_proxy_rule(
        &self,
        meta: &PacketMeta<'_>,
        syn: bool,
        cache: &mut RowCache,
    ) -> Option<u32> {
        let (c, rows) = self.rows(meta, cache);
        let s = c.classifier.first_match_in(rows?, |s| {
            let sub = &c.subs[s as usize];
            (syn || self.rules[sub.rule as usize].synproxy) && self.static_ok(sub, meta)
        })?;
        let rule = c.subs[s as usize].rule;
        self.rules[rule as usize].synproxy.then_some(rule)
    }

    /// The compiled matcher for `meta`'s hook and family, and `meta`'s rows in it (looked up
    /// once per packet).
    #[inline(always)]
    fn rows<'c>(
        &self,
        meta: &PacketMeta<'_>,
        cache: &'c mut RowCache,
    ) -> (&Compiled, Option<&'c Rows>) {
        let c = &self.compiled[dir_index(meta.direction)][usize::from(meta.is_v6())];
        if !cache.looked_up {
            cache.looked_up = true;
            cache.found = match meta.key32() {
                Some(mut key) => {
                    if let Some(p) = &self.src_atoms {
                        key[0] = p.atom32(key[0]) as u32;
                    }
                    c.classifier.fill_rows32(&key, &mut cache.rows)
                }
                None => {
                    // IPv6, or (never from a decoder) mixed families.
                    let mut key = meta.key();
                    if let (Some(p), IpAddr::V4(_)) = (&self.src_atoms, meta.src) {
                        key[0] = p.atom(key[0]) as u128;
                    }
                    c.classifier.fill_rows(&key, &mut cache.rows)
                }
            };
        }
        (c, cache.found.then_some(&cache.rows))
    }

    /// The checks of an alternative the classifier does not index, static part: interfaces,
    /// conntrack state, owner.
    #[inline(always)]
    fn static_ok(&self, sub: &Sub, meta: &PacketMeta<'_>) -> bool {
        if let Some(p) = &sub.iif {
            if !iface_ok(p, meta.iif) {
                return false;
            }
        }
        if let Some(p) = &sub.oif {
            if !iface_ok(p, meta.oif) {
                return false;
            }
        }
        residual_static(&self.rules[sub.rule as usize], meta).is_none()
    }

    /// Whether the application-protocol step inspects `meta` of a connection still being
    /// inspected: an ICMP echo request, or a TCP/UDP payload within the inspection budget,
    /// with application rules in the connection's original direction. (The step decides
    /// nothing otherwise.)
    #[inline(always)]
    fn app_inspects(&self, meta: &PacketMeta<'_>, conn: AppConn) -> bool {
        let echo_request = match (meta.protocol, meta.l4) {
            (rampart_ir::proto::ICMP, L4Meta::Icmp { icmp_type: 8, .. }) => !meta.is_v6(),
            (rampart_ir::proto::ICMPV6, L4Meta::Icmp { icmp_type: 128, .. }) => meta.is_v6(),
            _ => false,
        };
        let has_payload = match meta.payload {
            AppPayload::None => false,
            AppPayload::Label(_) => true,
            AppPayload::Bytes { l4, data } => {
                matches!(l4, app::L4::Tcp | app::L4::Udp) && !data.is_empty()
            }
        };
        let inspected =
            echo_request || (has_payload && conn.packet_index <= APP_INSPECT_MAX_PACKETS);
        let orig_direction = match (conn.reply, meta.direction) {
            (true, Direction::Ingress) => Direction::Egress,
            (true, Direction::Egress) => Direction::Ingress,
            (_, d) => d,
        };
        inspected && !self.app_rules[dir_index(orig_direction)].is_empty()
    }

    /// The application-protocol step for a connection still being inspected.
    fn app_step(
        &self,
        meters: &mut Meters,
        meta: &PacketMeta<'_>,
        conn: AppConn,
        now_ns: u64,
        mut trace: Option<&mut Trace>,
    ) -> Option<AppStep> {
        if !self.app_inspects(meta, conn) {
            return None;
        }
        let orig = if conn.reply {
            meta.original_direction()
        } else {
            *meta
        };
        let rules = &self.app_rules[dir_index(orig.direction)];
        let own = match meta.payload {
            AppPayload::Bytes { l4, data } => app::label(l4, data),
            AppPayload::Label(l) => l,
            AppPayload::None => None,
        };
        // Continuation segments (the rest of a certificate chain, an HTTP body) are not
        // recognisable on their own: they keep the protocol last recognised this way.
        let label = own.or(conn.last_label);
        for &i in rules {
            let Some(m) = &self.policy.rules[i as usize].app else {
                continue;
            };
            let app_mismatch = || (!app_matches(m, label)).then_some(Mismatch::App);
            let mismatch = if trace.is_some() {
                // A trace names the first field that differs, in rule order.
                self.static_mismatch(i as usize, &orig)
                    .or_else(app_mismatch)
            } else {
                // Only whether it matches counts: the label (one comparison) before the
                // static fields (a walk over the rule's addresses and services). Both are
                // pure; `dynamic`, which takes tokens, stays last either way.
                app_mismatch().or_else(|| self.static_mismatch(i as usize, &orig))
            }
            .or_else(|| dynamic(&self.rules[i as usize], i, meters, &orig, now_ns));
            if let Some(t) = trace.as_deref_mut() {
                let detail = match mismatch {
                    None => format!(
                        "payload labelled {} matches: {}",
                        label_name(label),
                        self.policy.rules[i as usize].action.as_str()
                    ),
                    Some(Mismatch::App) => format!(
                        "payload labelled {} is {}in {{{}}}",
                        label_name(label),
                        if m.negate { "" } else { "not " },
                        m.protocols
                            .iter()
                            .map(|p| p.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Some(other) => format!(
                        "no ({}): {}",
                        other.as_str(),
                        self.mismatch_detail(i as usize, other, &orig)
                    ),
                };
                t.step("application rules", Some(RuleId(i)), detail);
            }
            if mismatch.is_none() {
                return Some(AppStep {
                    rule: RuleId(i),
                    label,
                    action: self.policy.rules[i as usize].action,
                });
            }
        }
        None
    }

    /// Loopback and essential ICMPv6 (before everything else).
    fn prelude_static(&self, meta: &PacketMeta<'_>) -> Option<Decision> {
        let d = &self.policy.defaults;
        if d.allow_loopback {
            let lo = match meta.direction {
                Direction::Ingress => meta.iif == Some("lo"),
                Direction::Egress => meta.oif == Some("lo"),
                Direction::Forward => false,
            };
            if lo {
                return Some(Decision::prelude(Action::Accept, Reason::Loopback));
            }
        }
        if d.allow_icmpv6_essential && meta.is_v6() {
            if let L4Meta::Icmp { icmp_type, .. } = meta.l4 {
                // Forward sees only bridged neighbour discovery (see the IR's Defaults doc).
                let accepted: &[u8] = if meta.direction == Direction::Forward {
                    &ICMPV6_NEIGHBOUR_DISCOVERY_TYPES
                } else {
                    &ICMPV6_ESSENTIAL_TYPES
                };
                if meta.protocol == rampart_ir::proto::ICMPV6 && accepted.contains(&icmp_type) {
                    return Some(Decision::prelude(Action::Accept, Reason::Icmpv6Essential));
                }
            }
        }
        None
    }

    /// The stateful prelude: invalid → drop, established/related → accept.
    fn prelude_conntrack(&self, meta: &PacketMeta<'_>) -> Option<Decision> {
        if !self.policy.defaults.stateful {
            return None;
        }
        match meta.ct_state {
            CtState::Invalid => Some(Decision::prelude(Action::Drop, Reason::CtInvalid)),
            CtState::Established => Some(Decision::prelude(Action::Accept, Reason::CtEstablished)),
            CtState::Related => Some(Decision::prelude(Action::Accept, Reason::CtRelated)),
            CtState::New | CtState::Untracked => None,
        }
    }

    fn fast_match(
        &self,
        meters: &mut Meters,
        meta: &PacketMeta<'_>,
        now_ns: u64,
        cache: &mut RowCache,
    ) -> Hit {
        let (c, rows) = self.rows(meta, cache);
        let Some(rows) = rows else {
            return Hit::None;
        };
        // A rule whose dynamic checks failed fails as a whole; skip its other alternatives so
        // its bucket is asked once, exactly as the reference matcher asks it.
        let mut failed_rule = u32::MAX;
        let mut ban = false;
        let hit = c
            .classifier
            .first_match_in(rows, |s| {
                let sub = &c.subs[s as usize];
                if sub.rule == failed_rule || !self.static_ok(sub, meta) {
                    return false;
                }
                let rt = &self.rules[sub.rule as usize];
                if dynamic(rt, sub.rule, meters, meta, now_ns).is_some() {
                    if self.bans_source(sub.rule, meta.src, now_ns) {
                        ban = true;
                        return true;
                    }
                    failed_rule = sub.rule;
                    return false;
                }
                true
            })
            .map(|s| c.subs[s as usize].rule);
        match hit {
            Some(r) if ban => Hit::Ban(r),
            Some(r) => Hit::Rule(r),
            None => Hit::None,
        }
    }

    fn reference_match(
        &self,
        meters: &mut Meters,
        meta: &PacketMeta<'_>,
        now_ns: u64,
        mut trace: Option<&mut Trace>,
    ) -> Hit {
        for (i, rule) in self.policy.rules.iter().enumerate() {
            if rule.direction != meta.direction || self.rules[i].prelude_only {
                continue;
            }
            let id = i as u32;
            let mismatch = self
                .static_mismatch(i, meta)
                .or_else(|| dynamic(&self.rules[i], id, meters, meta, now_ns));
            let ban = mismatch.is_some_and(|m| {
                matches!(m, Mismatch::Limit | Mismatch::ConnLimit)
                    && self.bans_source(id, meta.src, now_ns)
            });
            if let Some(t) = trace.as_deref_mut() {
                let detail = match (mismatch, ban) {
                    (Some(m), true) => Some(format!(
                        "{}; source banned for {} s",
                        self.mismatch_detail(i, m, meta),
                        self.rules[i].ban_timeout_s.unwrap_or(0)
                    )),
                    (Some(m), false) => Some(self.mismatch_detail(i, m, meta)),
                    (None, _) => None,
                };
                t.considered.push(RuleCheck {
                    rule: RuleId(id),
                    name: rule.name.clone(),
                    loc: rule.loc.to_string(),
                    mismatch,
                    detail,
                });
            }
            if ban {
                return Hit::Ban(id);
            }
            if mismatch.is_none() {
                return Hit::Rule(id);
            }
        }
        Hit::None
    }

    /// The first static field of rule `i` that does not match, in evaluation order.
    fn static_mismatch(&self, i: usize, meta: &PacketMeta<'_>) -> Option<Mismatch> {
        let rule = &self.policy.rules[i];
        let rt = &self.rules[i];
        if !rt.active {
            return Some(Mismatch::Expired);
        }
        let fam_ok = match rule.family {
            Family::Any => true,
            Family::V4 => !meta.is_v6(),
            Family::V6 => meta.is_v6(),
        };
        if !fam_ok {
            return Some(Mismatch::Family);
        }
        if !self.side_matches(&rule.from, meta.src, meta.iif) {
            return Some(Mismatch::From);
        }
        if !self.side_matches(&rule.to, meta.dst, meta.oif) {
            return Some(Mismatch::To);
        }
        if let Some(m) = services_mismatch(&rule.services, meta) {
            return Some(m);
        }
        residual_static(rt, meta)
    }

    fn side_matches(&self, peers: &[Peer], addr: IpAddr, iface: Option<&str>) -> bool {
        peers.is_empty()
            || peers.iter().any(|p| match p {
                Peer::Net(n) => n.contains(&addr),
                Peer::Set(s) => self
                    .sets
                    .get(s.0 as usize)
                    .is_some_and(|s| s.contains(addr)),
                Peer::Zone(z) => self.zones.get(z.0 as usize).is_some_and(|(ifs, nets)| {
                    (ifs.is_empty() || iface_ok(ifs, iface))
                        && (nets.is_empty() || nets.contains(addr))
                }),
            })
    }

    /// Explain the verdict for `meta` at `now_ns = 0` (see [`Engine::explain_at`]).
    pub fn explain(&self, meta: &PacketMeta<'_>) -> Explanation {
        self.explain_at(meta, 0)
    }

    /// Explain the verdict for `meta` at `now_ns`: the prelude steps that applied (ban set,
    /// SYN proxy, application-protocol rules), then every rule of its direction up to the
    /// deciding one, with the field that did not match. Rate limits are evaluated against
    /// fresh (full) buckets and do not consume tokens; nothing is banned or remembered.
    pub fn explain_at(&self, meta: &PacketMeta<'_>, now_ns: u64) -> Explanation {
        let mut trace = Trace::default();
        let decision = self.decide(
            MatcherKind::Reference,
            &mut Meters::default(),
            meta,
            now_ns,
            &mut Effect::default(),
            Some(&mut trace),
        );
        let techniques = decision
            .rule
            .map(|r| {
                self.policy.rules[r.0 as usize]
                    .mitigates
                    .iter()
                    .map(|t| t.0.clone())
                    .collect()
            })
            .unwrap_or_default();
        Explanation {
            decision,
            steps: trace.steps,
            considered: trace.considered,
            techniques,
        }
    }

    fn mismatch_detail(&self, i: usize, m: Mismatch, meta: &PacketMeta<'_>) -> String {
        let rule = &self.policy.rules[i];
        let peers = |list: &[Peer]| {
            list.iter()
                .map(|p| match p {
                    Peer::Net(n) => n.to_string(),
                    Peer::Set(s) => format!(
                        "set {}",
                        self.policy.sets.get(s.0 as usize).map_or("?", |s| &s.name)
                    ),
                    Peer::Zone(z) => format!(
                        "zone {}",
                        self.policy.zones.get(z.0 as usize).map_or("?", |z| &z.name)
                    ),
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        match m {
            Mismatch::Expired => format!(
                "rule expired on {}",
                rule.expires.map(|d| d.to_string()).unwrap_or_default()
            ),
            Mismatch::Family => format!(
                "rule is {} only",
                if rule.family == Family::V4 {
                    "IPv4"
                } else {
                    "IPv6"
                }
            ),
            Mismatch::From => format!(
                "source {} (iif {}) is not in [{}]",
                meta.src,
                meta.iif.unwrap_or("-"),
                peers(&rule.from)
            ),
            Mismatch::To => format!(
                "destination {} (oif {}) is not in [{}]",
                meta.dst,
                meta.oif.unwrap_or("-"),
                peers(&rule.to)
            ),
            Mismatch::Protocol => format!(
                "protocol {} is not {}",
                proto_name(meta.protocol),
                rule.services
                    .iter()
                    .map(|s| s.protocol.map_or("any".to_owned(), proto_name))
                    .collect::<Vec<_>>()
                    .join("/")
            ),
            Mismatch::SrcPort | Mismatch::DstPort => {
                let (port, ranges): (Option<u16>, Vec<String>) = match (m, meta.l4) {
                    (Mismatch::SrcPort, L4Meta::Ports { src, .. }) => (Some(src), vec![]),
                    (Mismatch::DstPort, L4Meta::Ports { dst, .. }) => (Some(dst), vec![]),
                    _ => (None, vec![]),
                };
                let mut ranges = ranges;
                for s in &rule.services {
                    let list = if m == Mismatch::SrcPort {
                        &s.src_ports
                    } else {
                        &s.dst_ports
                    };
                    ranges.extend(list.iter().map(|r| r.to_string()));
                }
                ranges.dedup();
                format!(
                    "{} {} is not in {{{}}}",
                    m.as_str(),
                    port.map_or("(none)".to_owned(), |p| p.to_string()),
                    ranges.join(", ")
                )
            }
            Mismatch::IcmpType => {
                let t = match meta.l4 {
                    L4Meta::Icmp { icmp_type, .. } => icmp_type.to_string(),
                    _ => "(none)".into(),
                };
                let mut types: Vec<String> = rule
                    .services
                    .iter()
                    .flat_map(|s| s.icmp_types.iter().map(|t| t.to_string()))
                    .collect();
                types.dedup();
                format!("icmp type {t} is not in {{{}}}", types.join(", "))
            }
            Mismatch::CtState => format!(
                "ct state {:?} is not in {:?}",
                meta.ct_state, rule.ct_states
            )
            .to_lowercase(),
            Mismatch::Owner => "socket owner unknown or different".into(),
            Mismatch::ConnLimit => format!(
                "source has {} connections (limit {})",
                meta.conns_for(i as u32).0,
                rule.conn_limit.unwrap_or(0)
            ),
            Mismatch::Limit => "rate limit exhausted".into(),
            Mismatch::App => "the payload's label does not match".into(),
        }
    }
}

/// Protocol name for display.
pub fn proto_name(p: u8) -> String {
    match p {
        rampart_ir::proto::ICMP => "icmp".into(),
        rampart_ir::proto::TCP => "tcp".into(),
        rampart_ir::proto::UDP => "udp".into(),
        rampart_ir::proto::ICMPV6 => "icmpv6".into(),
        other => other.to_string(),
    }
}

fn services_mismatch(services: &[L4Match], meta: &PacketMeta<'_>) -> Option<Mismatch> {
    if services.is_empty() {
        return None;
    }
    let mut best: Option<Mismatch> = None;
    for s in services {
        let m = service_mismatch(s, meta);
        match m {
            None => return None,
            Some(Mismatch::Protocol) => {
                best.get_or_insert(Mismatch::Protocol);
            }
            Some(other) => {
                if best.is_none() || best == Some(Mismatch::Protocol) {
                    best = Some(other);
                }
            }
        }
    }
    best
}

fn service_mismatch(s: &L4Match, meta: &PacketMeta<'_>) -> Option<Mismatch> {
    if let Some(p) = s.protocol {
        let family_ok = match p {
            rampart_ir::proto::ICMP => !meta.is_v6(),
            rampart_ir::proto::ICMPV6 => meta.is_v6(),
            _ => true,
        };
        if meta.protocol != p || !family_ok {
            return Some(Mismatch::Protocol);
        }
    }
    let ports = match meta.l4 {
        L4Meta::Ports { src, dst } => Some((src, dst)),
        _ => None,
    };
    if !s.src_ports.is_empty()
        && !ports.is_some_and(|(sp, _)| s.src_ports.iter().any(|r| r.contains(sp)))
    {
        return Some(Mismatch::SrcPort);
    }
    if !s.dst_ports.is_empty()
        && !ports.is_some_and(|(_, dp)| s.dst_ports.iter().any(|r| r.contains(dp)))
    {
        return Some(Mismatch::DstPort);
    }
    if !s.icmp_types.is_empty() {
        let ok = match meta.l4 {
            L4Meta::Icmp { icmp_type, .. } => s.icmp_types.contains(&icmp_type),
            _ => false,
        };
        if !ok {
            return Some(Mismatch::IcmpType);
        }
    }
    None
}

/// Checks the classifier does not index: conntrack state and owner.
#[inline(always)]
fn residual_static(rt: &RuleRt, meta: &PacketMeta<'_>) -> Option<Mismatch> {
    if !rt.ct_states.is_empty() && !rt.ct_states.contains(&meta.ct_state) {
        return Some(Mismatch::CtState);
    }
    if let Some(owner) = &rt.owner {
        let ok = meta.owner.is_some_and(|o| {
            (owner.uids.is_empty() || owner.uids.contains(&o.uid))
                && (owner.gids.is_empty() || owner.gids.contains(&o.gid))
                && (owner.cgroups.is_empty() || owner.cgroups.contains(&o.cgroup))
        });
        if !ok {
            return Some(Mismatch::Owner);
        }
    }
    None
}

/// Connection cap, then the token bucket (which consumes only when everything else matched).
fn dynamic(
    rt: &RuleRt,
    rule: u32,
    meters: &mut Meters,
    meta: &PacketMeta<'_>,
    now_ns: u64,
) -> Option<Mismatch> {
    if let Some(cap) = rt.conn_limit {
        // A source its full set cannot hold is not limited (the kernel's `add` fails and the
        // "over" check does not match).
        let (others, untrackable) = meta.conns_for(rule);
        if !untrackable && others >= cap {
            return Some(Mismatch::ConnLimit);
        }
    }
    if let Some(limit) = &rt.limit {
        let cost = match limit.unit {
            RateUnit::Packets => 1,
            RateUnit::Bytes => u64::from(meta.len),
        };
        let ok = if limit.per_source {
            let map = meters.per_source.entry(rule).or_default();
            if !map.contains_key(&meta.src) && map.len() >= MAX_METER_ENTRIES {
                // Evict sources whose bucket has refilled: they are indistinguishable from new.
                map.retain(|_, b| {
                    let mut b2 = *b;
                    b2.refill(limit, now_ns);
                    b2.tokens_scaled < limit_capacity(limit)
                });
            }
            if !map.contains_key(&meta.src) && map.len() >= MAX_METER_ENTRIES {
                // No room to track the source: not limited (a spoofed flood that fills the
                // meter must not lock out, or get banned, every new source).
                true
            } else {
                map.entry(meta.src)
                    .or_insert_with(|| Bucket::full(limit, now_ns))
                    .take(limit, cost, now_ns)
            }
        } else {
            meters
                .shared
                .entry(rule)
                .or_insert_with(|| Bucket::full(limit, now_ns))
                .take(limit, cost, now_ns)
        };
        if !ok {
            return Some(Mismatch::Limit);
        }
    }
    None
}

fn side_choices(policy: &Policy, sets: &[PrefixSet], peers: &[Peer], v6: bool) -> Vec<Choice> {
    let full = if v6 { FULL_V6 } else { FULL_V4 };
    if peers.is_empty() {
        return vec![Choice {
            ifaces: None,
            addrs: vec![full],
        }];
    }
    let mut merged: Vec<(u128, u128)> = Vec::new();
    let mut with_ifaces = Vec::new();
    for p in peers {
        match p {
            Peer::Net(n) => merged.extend(net_interval(n, v6)),
            Peer::Set(s) => {
                if let Some(set) = sets.get(s.0 as usize) {
                    merged.extend(if v6 {
                        set.intervals_v6()
                    } else {
                        set.intervals_v4()
                    });
                }
            }
            Peer::Zone(z) => {
                let Some(zone) = policy.zones.get(z.0 as usize) else {
                    continue;
                };
                let addrs: Vec<(u128, u128)> = if zone.networks.is_empty() {
                    vec![full]
                } else {
                    zone.networks
                        .iter()
                        .filter_map(|n| net_interval(n, v6))
                        .collect()
                };
                if zone.interfaces.is_empty() {
                    merged.extend(addrs);
                } else if !addrs.is_empty() {
                    with_ifaces.push(Choice {
                        ifaces: Some(zone.interfaces.iter().map(|i| IfPattern::new(i)).collect()),
                        addrs,
                    });
                }
            }
        }
    }
    let mut out = Vec::new();
    if !merged.is_empty() {
        out.push(Choice {
            ifaces: None,
            addrs: merged,
        });
    }
    out.extend(with_ifaces);
    out
}

/// A hook's and family's alternatives before the classifier is built: subs, their interval
/// lists per field, and the field kinds.
type Expanded = (Vec<Sub>, Vec<RuleIntervals>, [FieldKind; 5]);

/// Below this many elementary intervals a shared IPv4 source partition is searched directly
/// (as the classifiers' own small fields are); from [`SHARE_FROM`] on it replaces per-hook
/// indexes. In between each hook keeps its own field.
const SHARE_SMALL: usize = 32;
/// See [`SHARE_SMALL`].
// Why: a blocklist set used in two hooks was indexed twice (2 × ~0.7 MB); one partition of
// the source addresses into atoms serves every hook, whose classifier then maps an atom to its
// class in a table of a few bytes. Mid-sized fields would trade a small search for an index.
const SHARE_FROM: usize = 4096;

/// Replace the IPv4 source field of every hook's alternatives by atoms of one shared
/// partition, when that pays (see [`SHARE_SMALL`]); returns the partition.
fn share_src_v4(v4: &mut [Expanded]) -> Option<Partition> {
    let lists: Vec<Vec<(u128, u128)>> = v4
        .iter()
        .flat_map(|(_, intervals, _)| intervals.iter().map(|r| r[0].clone()))
        .collect();
    if lists.is_empty() {
        return None;
    }
    let part = Partition::build(FieldKind::V4, &lists);
    let n = part.intervals();
    if (SHARE_SMALL < n && n < SHARE_FROM) || part.atoms() > MAX_DIRECT_SIZE as usize {
        return None;
    }
    let mut atoms = part.lists_as_atoms().into_iter();
    for (_, intervals, kinds) in v4.iter_mut() {
        for r in intervals.iter_mut() {
            r[0] = atoms.next().unwrap_or_default();
        }
        kinds[0] = FieldKind::Direct {
            size: part.atoms() as u32,
        };
    }
    Some(part)
}

/// The cross-product tables of every hook and family within `bytes` (see [`crate::cross`]).
fn build_cross(
    policy: &Policy,
    rules: &[RuleRt],
    compiled: &[[Compiled; 2]; 3],
    bytes: usize,
) -> Option<Box<Cross>> {
    let mut patterns: Vec<IfPattern> = Vec::new();
    for sub in compiled.iter().flatten().flat_map(|c| &c.subs) {
        for p in sub.iif.iter().chain(&sub.oif).flatten() {
            if !patterns.contains(p) {
                patterns.push(p.clone());
            }
        }
    }
    if patterns.len() > 64 {
        return None;
    }
    let masks = iface_masks(&patterns);
    let mut left = bytes;
    let hooks = Direction::ALL.map(|dir| {
        let d = dir_index(dir);
        [0, 1].map(|fam| {
            let c = &compiled[d][fam];
            let checks: Vec<SubChecks> = c
                .subs
                .iter()
                .map(|sub| {
                    let mask = |p: &Option<Vec<IfPattern>>| {
                        p.as_ref().map(|list| {
                            list.iter()
                                .filter_map(|x| patterns.iter().position(|y| y == x))
                                .fold(0u64, |m, i| m | 1 << i)
                        })
                    };
                    let rt = &rules[sub.rule as usize];
                    SubChecks {
                        iif: mask(&sub.iif),
                        oif: mask(&sub.oif),
                        ct: CtState::ALL
                            .iter()
                            .enumerate()
                            .filter(|(_, s)| rt.ct_states.is_empty() || rt.ct_states.contains(s))
                            .fold(0u8, |m, (i, _)| m | 1 << i),
                    }
                })
                .collect();
            let default = Decision::new(policy.defaults.for_direction(dir), None, Reason::Default);
            HookTables::build(&c.classifier, &checks, &masks, &mut left, |set| {
                cell_of(policy, rules, &c.subs, set, default)
            })
        })
    });
    let fields32 = Direction::ALL.map(|dir| {
        let d = dir_index(dir);
        Fields32::new(&compiled[d][0].classifier, hooks[d][0].as_ref()?)
    });
    let fields128 = Direction::ALL.map(|dir| {
        let d = dir_index(dir);
        hooks[d][1].as_ref()?;
        Fields128::new(&compiled[d][1].classifier)
    });
    Some(Box::new(Cross {
        hooks,
        fields32,
        fields128,
        patterns,
        masks,
        cache: Vec::new(),
        last_names: [(NO_KEY, 0, 0); 2],
    }))
}

/// The answer for a final set of alternatives (bit `s`: alternative `s` passes every static
/// check but the owner), as the fast path of `decide` would reach it.
fn cell_of(
    policy: &Policy,
    rules: &[RuleRt],
    subs: &[Sub],
    set: &[u64],
    default: Decision,
) -> Cell {
    let mut flags = 0;
    let mut decision = default;
    let members = set.iter().enumerate().flat_map(|(w, &word)| {
        (0..64)
            .filter(move |b| word >> b & 1 != 0)
            .map(move |b| w * 64 + b)
    });
    let mut decided = false;
    for s in members {
        let Some(sub) = subs.get(s) else { break };
        let rt = &rules[sub.rule as usize];
        if rt.synproxy {
            flags |= CELL_SYN_ANY;
        }
        if decided {
            continue;
        }
        if rt.owner.is_some() {
            // Matches or not by the packet's owner: the scan may stop here or go on.
            flags |= CELL_SLOW;
            if rt.synproxy {
                flags |= CELL_SYN_FIRST;
            }
            continue;
        }
        if rt.synproxy {
            flags |= CELL_SYN_FIRST;
        }
        if rt.limit.is_some() || rt.conn_limit.is_some() {
            flags |= CELL_SLOW;
        }
        decision = Decision::new(
            policy.rules[sub.rule as usize].action,
            Some(RuleId(sub.rule)),
            Reason::Rule,
        );
        decided = true;
    }
    Cell { decision, flags }
}

fn finish((subs, intervals, kinds): Expanded) -> Compiled {
    // Shapes and sizes are fixed by `expand` and `share_src_v4`, so building cannot fail;
    // fall back to an empty classifier rather than panic if that ever changes.
    let classifier = Classifier::build(&kinds, &intervals)
        .or_else(|_| Classifier::build(&kinds, &[]))
        .unwrap_or_else(|_| unreachable_empty());
    Compiled { classifier, subs }
}

fn expand(
    policy: &Policy,
    sets: &[PrefixSet],
    rules: &[RuleRt],
    dir: Direction,
    v6: bool,
) -> Expanded {
    let kinds = [
        if v6 { FieldKind::V6 } else { FieldKind::V4 },
        if v6 { FieldKind::V6 } else { FieldKind::V4 },
        FieldKind::Direct {
            size: (256 * ICMP_SPAN) as u32,
        },
        FieldKind::Direct { size: 65537 },
        FieldKind::Direct { size: 65537 },
    ];
    let port_list = |ranges: &[rampart_ir::PortRange]| -> Vec<(u128, u128)> {
        if ranges.is_empty() {
            vec![(0, NO_PORT)]
        } else {
            ranges
                .iter()
                .map(|r| (u128::from(r.lo), u128::from(r.hi)))
                .collect()
        }
    };
    let mut subs = Vec::new();
    let mut intervals: Vec<RuleIntervals> = Vec::new();
    for (i, rule) in policy.rules.iter().enumerate() {
        if rule.direction != dir || !rules[i].active || rules[i].prelude_only {
            continue;
        }
        let fam_ok = match rule.family {
            Family::Any => true,
            Family::V4 => !v6,
            Family::V6 => v6,
        };
        if !fam_ok {
            continue;
        }
        let from = side_choices(policy, sets, &rule.from, v6);
        let to = side_choices(policy, sets, &rule.to, v6);
        let any_service = L4Match {
            protocol: None,
            src_ports: vec![],
            dst_ports: vec![],
            icmp_types: vec![],
            service: None,
        };
        let services: Vec<&L4Match> = if rule.services.is_empty() {
            vec![&any_service]
        } else {
            rule.services.iter().collect()
        };
        for f in &from {
            for t in &to {
                for s in &services {
                    let protos = match s.protocol {
                        None => 0..=255,
                        Some(rampart_ir::proto::ICMP) if v6 => continue,
                        Some(rampart_ir::proto::ICMPV6) if !v6 => continue,
                        Some(p) => u128::from(p)..=u128::from(p),
                    };
                    // protocol × ICMP type, as the key's third field combines them.
                    let proto_icmp: Vec<(u128, u128)> = if s.icmp_types.is_empty() {
                        vec![(
                            *protos.start() * ICMP_SPAN,
                            *protos.end() * ICMP_SPAN + NO_ICMP,
                        )]
                    } else {
                        protos
                            .flat_map(|p| {
                                s.icmp_types.iter().map(move |&t| {
                                    let v = p * ICMP_SPAN + u128::from(t);
                                    (v, v)
                                })
                            })
                            .collect()
                    };
                    subs.push(Sub {
                        rule: i as u32,
                        iif: f.ifaces.clone(),
                        oif: t.ifaces.clone(),
                    });
                    intervals.push(vec![
                        f.addrs.clone(),
                        t.addrs.clone(),
                        proto_icmp,
                        port_list(&s.src_ports),
                        port_list(&s.dst_ports),
                    ]);
                }
            }
        }
    }
    (subs, intervals, kinds)
}

#[cold]
fn unreachable_empty() -> Classifier {
    // Direct sizes and field counts are constants within range; an empty build cannot fail.
    match Classifier::build(&[FieldKind::Direct { size: 1 }], &[]) {
        Ok(c) => c,
        Err(e) => panic!("empty classifier build failed: {e}"),
    }
}

/// One rule looked at by [`Engine::explain`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleCheck {
    /// The rule.
    pub rule: RuleId,
    /// Its name.
    pub name: String,
    /// Where it is written.
    pub loc: String,
    /// The first field that did not match; `None`: the rule matched.
    pub mismatch: Option<Mismatch>,
    /// Human detail of the mismatch.
    pub detail: Option<String>,
}

/// The result of [`Engine::explain`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    /// The verdict.
    pub decision: Decision,
    /// Prelude steps that looked at the packet (ban set, SYN proxy, application rules).
    pub steps: Vec<Step>,
    /// Rules of the packet's direction in order, up to and including the deciding one (empty
    /// when the prelude decided).
    pub considered: Vec<RuleCheck>,
    /// Techniques of the deciding rule.
    pub techniques: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_ir::{AddressSet, IpNet, Ipv4Net, Rule, SetId, SetSource};

    /// A policy whose ingress and forward rules drop sources in a set of `n` /32s.
    fn set_policy(n: u32) -> Policy {
        let mut p = Policy::default();
        p.sets.push(AddressSet {
            name: "s".into(),
            elements: (0..n)
                .map(|i| {
                    let a =
                        Ipv4Addr::from(0x0a00_0000 + i.wrapping_mul(2_654_435_761) % 0x00ff_ffff);
                    IpNet::V4(Ipv4Net::new(a, 32).unwrap())
                })
                .collect(),
            source: SetSource::Inline,
            except: vec![],
            loc: Default::default(),
        });
        for dir in [Direction::Ingress, Direction::Forward] {
            let mut r = Rule::new("drop", dir, Action::Drop);
            r.from = vec![Peer::Set(SetId(0))];
            p.rules.push(r);
        }
        p
    }

    #[test]
    fn hooks_share_the_source_partition_when_small_or_large() {
        // Few intervals: shared (searched directly); a mid-sized field: each hook its own;
        // thousands: shared. Either way fast and reference agree in and around the set.
        for (n, shared) in [(5u32, true), (300, false), (5000, true)] {
            let p = set_policy(n);
            let mut e = Engine::new(&p);
            assert_eq!(e.src_atoms.is_some(), shared, "{n} prefixes");
            for i in 0..2 * n {
                let a = 0x0a00_0000 + (i / 2).wrapping_mul(2_654_435_761) % 0x00ff_ffff + i % 2;
                for dir in Direction::ALL {
                    let m = PacketMeta::new(
                        dir,
                        IpAddr::V4(Ipv4Addr::from(a)),
                        "192.0.2.1".parse().unwrap(),
                        17,
                        L4Meta::Ports { src: 1, dst: 2 },
                    );
                    let fast = e.classify_with(MatcherKind::Fast, &m, 0);
                    assert_eq!(fast, e.classify_with(MatcherKind::Reference, &m, 0));
                    assert_eq!(
                        fast.reason == Reason::Rule,
                        i % 2 == 0 && dir != Direction::Egress,
                        "{n} {a:#x} {dir}"
                    );
                }
            }
        }
    }
}
