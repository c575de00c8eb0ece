//! The Rampart intermediate representation: the one resolved, validated form of a policy that
//! every backend consumes (analysis, the userspace engine, the nftables emitter, coverage, the
//! lab). It owns the *meaning* of a policy and nothing else: no parsing, no I/O, no clock.
//!
//! Semantics every consumer must implement identically (the engine and the nft emitter are
//! tested against each other on this):
//!
//! * A packet is evaluated in exactly one [`Direction`]: `Ingress` (to this host; nft `input`),
//!   `Egress` (from this host; nft `output`), `Forward` (through it; nft `forward`).
//! * Prelude per direction, in this order: loopback accept ([`Defaults::allow_loopback`]);
//!   essential ICMPv6 accept ([`Defaults::allow_icmpv6_essential`]; before the conntrack check
//!   because conntrack does not track neighbour discovery and would call it invalid); banned
//!   source drop (ingress and forward only; see [`Ban`]); SYN proxy (see [`Synproxy`]; it
//!   acts only on SYNs whose first statically matching rule is a SYN-proxy rule);
//!   application-protocol rules (see [`AppMatch`]); then, when [`Defaults::stateful`] is true,
//!   conntrack state `invalid` → drop and `established` or `related` → accept. Only packets of
//!   state `new` (or untracked) reach the rules.
//! * Then the rules of that direction, in [`Policy::rules`] order; the first rule whose every
//!   field matches decides. A rule with a [`Limit`] matches only while its budget allows
//!   (pf/nft `limit rate` semantics: over the limit the packet falls through to later rules).
//!   Within a rule the static fields are tested first, then [`Rule::conn_limit`], then the
//!   limit, so a token is only taken by a packet that matched everything else.
//!   A rule with a [`Ban`] does not fall through when its limit refuses a packet: the source
//!   is banned and the packet dropped.
//! * No rule matched: the direction's default ([`Defaults`]).
//! * Field semantics: an empty list means "any". Within one list, elements are OR-ed; different
//!   fields are AND-ed. See [`Peer`] for how zones, sets and networks match and [`L4Match`] for
//!   protocols and ports.
//!
//! Everything here is plain data with `serde::Serialize`, so `--json` output and golden files are
//! a serialisation away.

#![deny(missing_docs)]

use std::fmt;
use std::net::IpAddr;

pub use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use serde::{Deserialize, Serialize};

/// A place in a policy source file. `line` and `col` are 1-based; `col` counts characters.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SourceLoc {
    /// The file as the user named it (relative paths stay relative).
    pub file: String,
    /// 1-based line.
    pub line: u32,
    /// 1-based column.
    pub col: u32,
}

impl fmt::Display for SourceLoc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.col)
    }
}

/// An ATT&CK technique id such as `T1187` or `T1557.001` (validated against the seed catalogue
/// by the policy crate before it gets here).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TechniqueId(pub String);

impl fmt::Display for TechniqueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Index of a zone in [`Policy::zones`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ZoneId(pub u32);

/// Index of an address set in [`Policy::sets`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SetId(pub u32);

/// Index of a rule in [`Policy::rules`]; also its evaluation order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RuleId(pub u32);

/// The whole resolved policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// Zones, indexed by [`ZoneId`].
    pub zones: Vec<Zone>,
    /// Named address sets, indexed by [`SetId`].
    pub sets: Vec<AddressSet>,
    /// All rules of all directions in evaluation order, indexed by [`RuleId`]. Rules of one
    /// direction never affect packets of another.
    pub rules: Vec<Rule>,
    /// Default verdicts and the stateful prelude.
    pub defaults: Defaults,
    /// Userspace components the policy enables (DNS filter, WAF, ...), for coverage and the daemon.
    pub components: Vec<Component>,
    /// Profiles that were expanded into rules, for reporting.
    pub profiles: Vec<ProfileUse>,
    /// The exec jail (per-program egress) the policy configures: `None` when it names no
    /// programs. Rules reach a program through its cgroup ([`Jail::cgroup_of`]) in
    /// [`Owner::cgroups`], so no backend needs this; the jail itself and coverage do.
    /// Left out of serialised output when `None` (older IR JSON stays byte-identical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jail: Option<Jail>,
    /// The L2 guard's policy-level settings (`[l2]`: port trust, static bindings, rate limits,
    /// blocked name protocols); `None` when the policy has no `[l2]`. Only the guard consumes
    /// it. Left out of serialised output when `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l2: Option<L2Guard>,
}

impl Policy {
    /// Whether the compiled ruleset uses connection tracking: the stateful prelude, a rule
    /// with connection states, a connection limit, a SYN proxy or an application match (each
    /// compiles to a `ct` expression). With conntrack in use the kernel reassembles IP
    /// fragments before any rule sees them (`nf_defrag_ipv4`/`nf_defrag_ipv6`), so rules judge
    /// whole datagrams; without it each fragment is judged alone, and only the first carries
    /// ports. Expired rules count too (the emitter keeps them unless told the date).
    pub fn uses_conntrack(&self) -> bool {
        self.defaults.stateful
            || self.rules.iter().any(|r| {
                !r.ct_states.is_empty()
                    || r.conn_limit.is_some()
                    || r.synproxy.is_some()
                    || r.app.is_some()
            })
    }

    /// The zone with this id.
    pub fn zone(&self, id: ZoneId) -> &Zone {
        &self.zones[id.0 as usize]
    }

    /// The set with this id.
    pub fn set(&self, id: SetId) -> &AddressSet {
        &self.sets[id.0 as usize]
    }

    /// The rule with this id.
    pub fn rule(&self, id: RuleId) -> &Rule {
        &self.rules[id.0 as usize]
    }

    /// The zone named `name`.
    pub fn zone_by_name(&self, name: &str) -> Option<ZoneId> {
        self.zones
            .iter()
            .position(|z| z.name == name)
            .map(|i| ZoneId(i as u32))
    }

    /// The set named `name`.
    pub fn set_by_name(&self, name: &str) -> Option<SetId> {
        self.sets
            .iter()
            .position(|s| s.name == name)
            .map(|i| SetId(i as u32))
    }

    /// Rules of one direction with their ids, in evaluation order.
    pub fn rules_in(&self, direction: Direction) -> impl Iterator<Item = (RuleId, &Rule)> + '_ {
        self.rules
            .iter()
            .enumerate()
            .filter(move |(_, r)| r.direction == direction)
            .map(|(i, r)| (RuleId(i as u32), r))
    }
}

/// A named network segment: a set of interfaces and/or address ranges.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Zone {
    /// Unique name (`corp`, `dmz`, `internet`, ...).
    pub name: String,
    /// Interface names (exact, or a trailing `*` wildcard as in nft `iifname "br*"`). Empty: any.
    pub interfaces: Vec<String>,
    /// Networks of the zone, IPv4 and IPv6 together, aggregated and sorted. Empty: any address.
    pub networks: Vec<IpNet>,
    /// Whether the zone is trusted (internal, managed). `internet`/`guest` are not.
    pub trusted: bool,
    /// Whether hosts in this zone serve the public (a DMZ): their egress should be restricted.
    pub public_facing: bool,
    /// Free-form description.
    pub description: Option<String>,
    /// Where the zone was declared.
    pub loc: SourceLoc,
}

/// A named set of addresses and prefixes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AddressSet {
    /// Unique name; also the nft set name stem.
    pub name: String,
    /// Resolved members after allowlist subtraction, aggregated, sorted. For feed sets this is
    /// whatever was known at compile time (possibly empty); the feeds refresher fills the kernel
    /// set at run time.
    pub elements: Vec<IpNet>,
    /// Where the members come from.
    pub source: SetSource,
    /// Prefixes removed from the set whatever the source says (never block these).
    pub except: Vec<IpNet>,
    /// Where the set was declared.
    pub loc: SourceLoc,
}

/// Where an address set's members come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SetSource {
    /// Listed inline in the policy.
    Inline,
    /// Read from a file (one address/prefix per line, `#` comments) at compile time.
    File {
        /// The path as written in the policy, resolved relative to the policy file.
        path: String,
    },
    /// Filled by the threat-intel feeds component at run time.
    Feed {
        /// Feed name.
        name: String,
        /// `https://` URL or file path.
        url: String,
        /// Parser to use (`plain`, `netset`, `spamhaus`, `tor`, `ipsum`, `csv`, `stix`, ...).
        format: String,
        /// Refresh interval in seconds.
        refresh_s: u64,
    },
}

/// One side (source or destination) of a rule: OR of peers. Empty list: any.
///
/// Matching a [`Peer::Zone`] on the source side: the input interface matches one of the zone's
/// interfaces (when it has any) AND the source address lies in one of its networks (when it has
/// any). On the destination side the same with the output interface and destination address.
/// Directions without that interface (no output interface on ingress, no input interface on
/// egress) never match a zone that lists interfaces.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Peer {
    /// A zone by id.
    Zone(ZoneId),
    /// An address set by id: the address lies in one of its elements.
    Set(SetId),
    /// A literal network.
    Net(IpNet),
}

/// IANA protocol numbers the IR names.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
}

/// An inclusive port range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PortRange {
    /// First port, inclusive.
    pub lo: u16,
    /// Last port, inclusive (`lo <= hi`).
    pub hi: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self { lo: port, hi: port }
    }

    /// Whether `port` lies in the range.
    pub fn contains(&self, port: u16) -> bool {
        self.lo <= port && port <= self.hi
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.lo == self.hi {
            write!(f, "{}", self.lo)
        } else {
            write!(f, "{}-{}", self.lo, self.hi)
        }
    }
}

/// One protocol/port alternative of a rule (a rule's `services` are OR-ed).
///
/// * `protocol` is the IP protocol number (IPv4 protocol / IPv6 next header after extension
///   headers). `None` means any protocol; then ports and ICMP types must be empty.
/// * `src_ports`/`dst_ports` (only for TCP/UDP; empty: any) are OR-ed ranges.
/// * `icmp_types` (only for ICMP/ICMPv6; empty: any type) are OR-ed. ICMP (1) only matches IPv4
///   packets, ICMPv6 (58) only IPv6 packets.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct L4Match {
    /// Protocol number; `None` = any.
    pub protocol: Option<u8>,
    /// Source port ranges (TCP/UDP only). Empty: any.
    pub src_ports: Vec<PortRange>,
    /// Destination port ranges (TCP/UDP only). Empty: any.
    pub dst_ports: Vec<PortRange>,
    /// ICMP or ICMPv6 types. Empty: any.
    pub icmp_types: Vec<u8>,
    /// The catalogue service name this came from (`smb`, `ssh`, ...), for display.
    pub service: Option<String>,
}

/// Which traffic a rule governs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// To this host (nft `input`).
    Ingress,
    /// From this host (nft `output`).
    Egress,
    /// Routed or bridged through this host (nft `forward`).
    Forward,
}

impl Direction {
    /// All directions in a fixed order.
    pub const ALL: [Direction; 3] = [Direction::Ingress, Direction::Egress, Direction::Forward];

    /// Lower-case name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
            Direction::Forward => "forward",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Restriction to one IP family.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// IPv4 and IPv6.
    #[default]
    Any,
    /// IPv4 only.
    V4,
    /// IPv6 only.
    V6,
}

/// Conntrack states a rule may require.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CtState {
    /// First packet of a flow.
    New,
    /// Part of a known flow.
    Established,
    /// Related to a known flow (ICMP errors, FTP data).
    Related,
    /// Not valid for any known flow.
    Invalid,
    /// Not tracked.
    Untracked,
}

impl CtState {
    /// Every state, in [`CtState::index`] order.
    pub const ALL: [CtState; 5] = [
        CtState::New,
        CtState::Established,
        CtState::Related,
        CtState::Invalid,
        CtState::Untracked,
    ];

    /// Dense position of the state (in [`CtState::ALL`]), for tables keyed by state.
    #[inline(always)]
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What a rule does with a matching packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Let it through.
    Accept,
    /// Discard silently.
    Drop,
    /// Discard and tell the sender (TCP RST, ICMP port/admin unreachable).
    Reject,
}

impl Action {
    /// Lower-case name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "accept",
            Action::Drop => "drop",
            Action::Reject => "reject",
        }
    }
}

/// Local socket owner constraints (egress only). OR within a list, AND across non-empty lists.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    /// Socket owner uids.
    pub uids: Vec<u32>,
    /// Socket owner gids.
    pub gids: Vec<u32>,
    /// cgroup v2 paths relative to the cgroup2 mount (e.g. `system.slice/nginx.service`).
    pub cgroups: Vec<String>,
}

/// The unit of a rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RateUnit {
    /// Packets.
    Packets,
    /// Bytes.
    Bytes,
}

/// A token-bucket rate limit: `rate` units per `per_s` seconds, bucket size `burst`.
///
/// Semantics (identical to nft `limit rate N/unit burst B` and per-source meters): the bucket
/// starts full at `burst` tokens (or `rate` when `burst` is 0), refills continuously at
/// `rate / per_s` tokens per second, and a packet that finds at least its cost (1 packet, or its
/// length in bytes) takes it and *matches*; otherwise the rule does not match.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Limit {
    /// Units per period.
    pub rate: u64,
    /// Period length in seconds (1, 60, 3600, 86400).
    pub per_s: u32,
    /// Bucket size; 0 means "same as rate".
    pub burst: u64,
    /// What is counted.
    pub unit: RateUnit,
    /// One bucket per source address (nft meter / dynamic set) instead of one shared bucket.
    pub per_source: bool,
}

/// SYN-flood protection for a TCP accept rule (nft `synproxy`; the kernel answers SYNs with SYN
/// cookies and opens the connection to the server only after the client's ACK proves the
/// handshake).
///
/// Semantics: valid only on `accept` rules in `ingress` or `forward` whose services are all TCP
/// with destination ports. The proxy takes effect at its rule's place in rule order: a bare SYN
/// (no conntrack entry) is *proxied* when the first rule of the direction whose static fields
/// match it is a SYN-proxy rule. Static fields here: zones, peers, family, services and
/// conntrack states (the SYN is `new`); limits, connection caps and bans are not consulted, and
/// application-protocol rules do not take part. The prelude step "SYN proxy" (before the
/// conntrack check) answers a proxied SYN itself and creates **no** conntrack entry (so a
/// spoofed-source flood fills nothing); the client's ACK that completes a cookie handshake
/// creates the connection (state `established` from then on); any other untracked or invalid
/// packet matching a SYN-proxy rule's static fields is dropped. `limit`, `conn_limit` and `ban`
/// of the rule apply to the SYNs it proxies. A SYN that an earlier rule's static fields match
/// is not proxied: it is tracked (`new`) and goes through the rules like any packet, so an
/// earlier drop or reject decides it (a blocklist keeps working), and if it falls through (an
/// earlier rule's limit refused it) and reaches the SYN-proxy rule, that rule matches it as an
/// ordinary accept rule (its own limit, cap and ban applying), unproxied.
/// `rampart check` reports earlier rules that claim part of a proxied rule's traffic
/// (`synproxy-claimed`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Synproxy {
    /// MSS announced in the SYN-ACK (must match what the server would say; 1460 on Ethernet).
    pub mss: u16,
    /// Window scale announced (0-14).
    pub wscale: u8,
    /// Announce and keep TCP timestamps. Off by default: on kernel 6.18 the server drops the
    /// proxy's handshake ACK when timestamps are proxied (its TSecr does not echo the server's
    /// SYN-ACK), and every connection then waits ~1 s for the server's SYN-ACK retransmission.
    pub timestamp: bool,
    /// Announce SACK permitted.
    pub sack_perm: bool,
}

impl Default for Synproxy {
    fn default() -> Self {
        Self {
            mss: 1460,
            wscale: 7,
            timestamp: false,
            sack_perm: true,
        }
    }
}

/// Auto-ban (pf `overload`, fail2ban without the log parsing): a source that exceeds the rule's
/// per-source [`Limit`] or [`Rule::conn_limit`] is put in the policy-wide ban set for
/// `timeout_s` seconds.
///
/// Semantics: valid only on `accept` rules in `ingress` or `forward` that have a per-source
/// `limit` or a `conn_limit`. A packet that matches the rule's static fields but is refused by
/// its `conn_limit` or `limit` adds its source address to the ban set (an address already there
/// gets its timeout restarted) and is dropped, unless the source is in
/// [`Defaults::never_ban`]: such a source is never banned and its refused packet falls through
/// to later rules like any limited rule's. While banned, every ingress and forward packet from
/// that address is dropped in the prelude, whatever its conntrack state. Bans are events
/// (nft: NFLOG with a `ban` prefix; engine: a ban event).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ban {
    /// How long a ban lasts, in seconds (1 s to 30 days).
    pub timeout_s: u32,
}

/// Application protocols recognised from a packet's payload by the first-payload sniffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppProtocol {
    /// A DNS message (header and question section parse).
    Dns,
    /// A TLS record (handshake, alert, change-cipher-spec or application data, TLS 1.0-1.3).
    Tls,
    /// An HTTP/1.x request line or status line.
    Http,
    /// An SSH identification string (`SSH-2.0-…`).
    Ssh,
    /// RDP: TPKT + X.224 connection request.
    Rdp,
    /// A VNC RFB protocol version banner (`RFB 003.00x`).
    Vnc,
    /// An MQTT CONNECT packet.
    Mqtt,
    /// An SMB1 message that is neither a NEGOTIATE request (multi-dialect clients open with one
    /// and still get SMB2) nor anything from SMB2/3; this includes SMB1 NEGOTIATE responses.
    Smb1,
    /// An SMB2/3 message (or an SMB1 NEGOTIATE request).
    Smb2,
    /// A DHCP/BOOTP message.
    Dhcp,
    /// ICMP echo carrying a tunnel: ptunnel's magic, or a payload of at least
    /// [`ICMP_TUNNEL_PAYLOAD_MIN_BYTES`].
    IcmpTunnel,
}

impl AppProtocol {
    /// Every protocol, in declaration order.
    pub const ALL: [AppProtocol; 11] = [
        AppProtocol::Dns,
        AppProtocol::Tls,
        AppProtocol::Http,
        AppProtocol::Ssh,
        AppProtocol::Rdp,
        AppProtocol::Vnc,
        AppProtocol::Mqtt,
        AppProtocol::Smb1,
        AppProtocol::Smb2,
        AppProtocol::Dhcp,
        AppProtocol::IcmpTunnel,
    ];

    /// Name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            AppProtocol::Dns => "dns",
            AppProtocol::Tls => "tls",
            AppProtocol::Http => "http",
            AppProtocol::Ssh => "ssh",
            AppProtocol::Rdp => "rdp",
            AppProtocol::Vnc => "vnc",
            AppProtocol::Mqtt => "mqtt",
            AppProtocol::Smb1 => "smb1",
            AppProtocol::Smb2 => "smb2",
            AppProtocol::Dhcp => "dhcp",
            AppProtocol::IcmpTunnel => "icmp_tunnel",
        }
    }

    /// The protocol named `name` (as written in policies).
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

/// ICMP echo payloads of at least this many bytes are labelled [`AppProtocol::IcmpTunnel`]
/// (Linux `ping` sends 56, Windows 32; tunnels fill the MTU).
pub const ICMP_TUNNEL_PAYLOAD_MIN_BYTES: usize = 512;

/// The inspection budget of a connection: how many of its payload-carrying TCP/UDP packets
/// (both directions together, retransmissions included) application-protocol rules inspect
/// before giving up on it. A connection still undecided after that many inspected packets is
/// *released*: treated as accepted by the application step (inspection ends, nothing of it is
/// inspected or dropped by application rules any more). Packets without payload (handshakes,
/// pure ACKs) neither use the budget nor are inspected, so a silent connection costs nothing.
pub const APP_INSPECT_MAX_PACKETS: u32 = 8;

/// Protocol, not port: the rule matches on what a packet's payload *is*.
///
/// Semantics: rules with `app` are not first-match rules for `new` packets. They form, per
/// direction and in policy order, the prelude step "application-protocol rules", which sees
/// every payload-carrying packet of a connection (both directions, matched against the
/// connection's original-direction addresses, ports and zones) until the connection is
/// decided, and every ICMP echo request. A connection is *decided* when an app rule matched
/// one of its packets, or when it has used its inspection budget
/// ([`APP_INSPECT_MAX_PACKETS`] inspected payload packets) without a match: it is then
/// released as if accepted. The packet's payload is labelled
/// with at most one [`AppProtocol`] (or none: unrecognised); an unrecognised payload inherits
/// the label last recognised on the same connection in the same direction, because continuation
/// segments (the rest of a certificate chain, an HTTP body) are not recognisable on their own
/// (the classifier and the engine both do this). The rule's `app` matches when the
/// label is in `protocols` (with `negate`: when it is not, including unrecognised). The first app
/// rule whose fields all match decides: `drop` drops this packet, `reject` rejects it (as a
/// reject rule would: a TCP reset to its sender, else ICMP administratively prohibited), and
/// both drop every later packet of the connection (whatever its payload, retransmissions
/// included); `accept` ends inspection
/// of the connection (later packets are not inspected). No app rule matched: the packet
/// continues to the conntrack step. In the kernel the packets of an undecided connection are
/// sent to userspace over NFQUEUE until the classifier has recorded its decision in the
/// conntrack mark (the classifier answers packets queued in between from its own table, so a
/// blocked connection's retransmission cannot slip through while the mark is being set); when
/// no classifier is listening, packets to be inspected are dropped unless
/// [`Defaults::classifier_fail_open`] (failing closed, a connection is then never decided and
/// all its payload is dropped).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AppMatch {
    /// Protocols; OR-ed.
    pub protocols: Vec<AppProtocol>,
    /// Match packets whose label is *not* one of `protocols`.
    pub negate: bool,
}

/// A calendar date (UTC), used for rule expiry. Time is an input: nothing here reads a clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Date {
    /// Year, e.g. 2026.
    pub year: u16,
    /// Month 1-12.
    pub month: u8,
    /// Day 1-31.
    pub day: u8,
}

impl Date {
    /// The civil date `days` days after 1970-01-01 (proleptic Gregorian; Howard Hinnant's
    /// days-to-civil algorithm).
    pub fn from_unix_days(days: i64) -> Self {
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year: year as u16,
            month: month as u8,
            day: day as u8,
        }
    }

    /// Days since 1970-01-01 (the inverse of [`Date::from_unix_days`]). An out-of-range month
    /// or day is clamped to 1-12 / 1-31 rather than wrapping.
    pub fn unix_days(self) -> i64 {
        let y = i64::from(self.year) - i64::from(self.month <= 2);
        let m = i64::from(self.month.clamp(1, 12));
        let day = i64::from(self.day.clamp(1, 31));
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }
}

impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

/// Where a rule came from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RuleOrigin {
    /// Written by the user.
    User,
    /// Expanded from a built-in profile.
    Profile {
        /// Profile name (`smb-egress`, ...).
        profile: String,
        /// Part of the profile (each profile rule has a stable part name).
        part: String,
    },
}

/// One filtering rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Unique, stable name (user-given, or `profile/part` for profile rules).
    pub name: String,
    /// Which hook the rule lives in.
    pub direction: Direction,
    /// Source side; empty = any.
    pub from: Vec<Peer>,
    /// Destination side; empty = any.
    pub to: Vec<Peer>,
    /// Protocol/port alternatives; empty = any traffic.
    pub services: Vec<L4Match>,
    /// Family restriction.
    pub family: Family,
    /// Required conntrack states; empty = any state that reaches the rules (normally `new`).
    pub ct_states: Vec<CtState>,
    /// Local owner constraints (egress only).
    pub owner: Option<Owner>,
    /// Rate limit: the rule matches only within it.
    pub limit: Option<Limit>,
    /// Per-source concurrent connection cap: the rule matches only while the source has fewer
    /// than this many tracked connections (nft `ct count`).
    pub conn_limit: Option<u32>,
    /// SYN-flood protection (TCP accept rules only).
    pub synproxy: Option<Synproxy>,
    /// Auto-ban of sources that exceed `limit` or `conn_limit`.
    pub ban: Option<Ban>,
    /// Application-protocol match: makes this an application-protocol rule (see [`AppMatch`]).
    pub app: Option<AppMatch>,
    /// The verdict.
    pub action: Action,
    /// Log matches (NFLOG, rate limited, prefix identifying the rule).
    pub log: bool,
    /// ATT&CK techniques this rule mitigates.
    pub mitigates: Vec<TechniqueId>,
    /// The rule stops applying after this date (analysis reports expired rules; backends skip
    /// them only when told the date).
    pub expires: Option<Date>,
    /// Human description.
    pub description: Option<String>,
    /// Where the rule came from.
    pub origin: RuleOrigin,
    /// Where the rule is written (for profiles: where the profile is enabled).
    pub loc: SourceLoc,
}

impl Rule {
    /// A user rule of `direction` that matches every packet reaching the rules and applies
    /// `action`: every list empty (any), no owner, limit, log, techniques, expiry or location.
    /// Builders set the fields they need with struct-update syntax.
    pub fn new(name: impl Into<String>, direction: Direction, action: Action) -> Self {
        Self {
            name: name.into(),
            direction,
            from: Vec::new(),
            to: Vec::new(),
            services: Vec::new(),
            family: Family::Any,
            ct_states: Vec::new(),
            owner: None,
            limit: None,
            conn_limit: None,
            synproxy: None,
            ban: None,
            app: None,
            action,
            log: false,
            mitigates: Vec::new(),
            expires: None,
            description: None,
            origin: RuleOrigin::User,
            loc: SourceLoc::default(),
        }
    }
}

/// Default verdicts and the stateful prelude.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Defaults {
    /// Verdict for ingress packets no rule matched.
    pub ingress: Action,
    /// Verdict for egress packets no rule matched.
    pub egress: Action,
    /// Verdict for forwarded packets no rule matched.
    pub forward: Action,
    /// Stateful prelude on every direction: invalid → drop, established/related → accept.
    pub stateful: bool,
    /// Always accept loopback traffic (`iif lo` ingress, `oif lo` egress) before any rule.
    pub allow_loopback: bool,
    /// Accept the ICMPv6 types IPv6 cannot work without before any rule:
    /// [`ICMPV6_ESSENTIAL_TYPES`] in ingress and egress, and in forward only neighbour discovery
    /// ([`ICMPV6_NEIGHBOUR_DISCOVERY_TYPES`]). Why forward: with `br_netfilter`, frames bridged
    /// between two ports of a bridge cross the forward hook, so a forward default drop would
    /// silently break IPv6 on every bridge; neighbour discovery is link-local (hop limit 255)
    /// and never routed, so accepting it on forward lets nothing through a router.
    pub allow_icmpv6_essential: bool,
    /// Sources that are never banned (see [`Ban`]): management networks, monitoring, the
    /// gateway's own upstreams.
    pub never_ban: Vec<IpNet>,
    /// When the NFQUEUE classifier is not running, let packets that application-protocol rules
    /// would inspect through (`true`) instead of dropping them (`false`, the default).
    pub classifier_fail_open: bool,
    /// How many consecutive NFQUEUE queues application-protocol rules spread over (the queue
    /// rules' `--queue-balance Q:Q+N-1`; 1 to [`MAX_CLASSIFIER_QUEUES`], default 1). The
    /// classifier binds the same number, one thread each; the kernel keeps every connection on
    /// one queue (a hash of the address pair and protocol, the same in both directions).
    #[serde(default = "one_queue", skip_serializing_if = "is_one_queue")]
    pub classifier_queues: u16,
    /// Where the defaults are declared (or the policy file when implicit).
    pub loc: SourceLoc,
}

/// Most queues the classifier spreads over. Why: one thread and two sockets per queue; past
/// the machine's cores more queues only add contention.
pub const MAX_CLASSIFIER_QUEUES: u16 = 64;

fn one_queue() -> u16 {
    1
}

fn is_one_queue(queues: &u16) -> bool {
    *queues == 1
}

impl Defaults {
    /// The default verdict of a direction.
    pub fn for_direction(&self, direction: Direction) -> Action {
        match direction {
            Direction::Ingress => self.ingress,
            Direction::Egress => self.egress,
            Direction::Forward => self.forward,
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            ingress: Action::Drop,
            egress: Action::Accept,
            forward: Action::Drop,
            stateful: true,
            allow_loopback: true,
            allow_icmpv6_essential: true,
            never_ban: Vec::new(),
            classifier_fail_open: false,
            classifier_queues: 1,
            loc: SourceLoc::default(),
        }
    }
}

/// ICMPv6 types accepted by [`Defaults::allow_icmpv6_essential`]: destination unreachable (1),
/// packet too big (2), time exceeded (3), parameter problem (4), router solicitation (133),
/// router advertisement (134), neighbour solicitation (135), neighbour advertisement (136).
pub const ICMPV6_ESSENTIAL_TYPES: [u8; 8] = [1, 2, 3, 4, 133, 134, 135, 136];

/// ICMPv6 neighbour discovery types accepted on forward by [`Defaults::allow_icmpv6_essential`]:
/// router solicitation (133), router advertisement (134), neighbour solicitation (135),
/// neighbour advertisement (136).
pub const ICMPV6_NEIGHBOUR_DISCOVERY_TYPES: [u8; 4] = [133, 134, 135, 136];

/// A userspace component the policy enables.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Which component.
    pub kind: ComponentKind,
    /// Where it is enabled in the policy.
    pub loc: SourceLoc,
}

/// Kinds of userspace components.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// Filtering DNS forwarder.
    DnsFilter,
    /// WAF reverse proxy.
    Waf,
    /// Egress (forward) proxy.
    EgressProxy,
    /// L2 guard (DHCP snooping, ARP inspection).
    L2Guard,
    /// Threat-intel feeds refresher.
    Feeds,
    /// First-payload protocol classification via NFQUEUE.
    ProtocolClassifier,
}

impl ComponentKind {
    /// Name as written in policies.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::DnsFilter => "dns_filter",
            ComponentKind::Waf => "waf",
            ComponentKind::EgressProxy => "egress_proxy",
            ComponentKind::L2Guard => "l2_guard",
            ComponentKind::Feeds => "feeds",
            ComponentKind::ProtocolClassifier => "protocol_classifier",
        }
    }
}

/// A profile enabled in the policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProfileUse {
    /// Profile name.
    pub name: String,
    /// Techniques the profile addresses.
    pub techniques: Vec<TechniqueId>,
    /// Rules it produced.
    pub rules: Vec<RuleId>,
    /// Parts the user excluded.
    pub excluded_parts: Vec<String>,
    /// Where it is enabled.
    pub loc: SourceLoc,
}

/// Bounds and defaults of a [`Jail`]. A program name becomes a cgroup directory name and the
/// jail holds one fanotify mark per path, so everything is bounded.
pub mod jail_limits {
    /// The parent cgroup of the per-program cgroups when the policy names none.
    pub const DEFAULT_CGROUP_ROOT: &str = "rampart.jail";
    /// Most programs one jail handles.
    pub const MAX_PROGRAMS: usize = 256;
    /// Most paths per program (hard links of one path count once anyway).
    pub const MAX_PATHS_PER_PROGRAM: usize = 64;
    /// Most SHA-256 digests per program.
    pub const MAX_DIGESTS_PER_PROGRAM: usize = 64;
    /// Most mounts watched for copies.
    pub const MAX_WATCH_MOUNTS: usize = 16;
    /// Longest program name in bytes (it becomes a cgroup directory name).
    pub const MAX_NAME_BYTES: usize = 64;
    /// Deepest cgroup root, in path components.
    pub const MAX_ROOT_COMPONENTS: usize = 4;
    /// Longest program path or watched mount, in bytes (Linux `PATH_MAX`).
    pub const MAX_PATH_BYTES: usize = 4096;
}

/// A SHA-256 digest; serialised as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    /// Parse 64 hex digits (either case). `None` for anything else.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let bytes = hex.as_bytes();
        if bytes.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, pair) in bytes.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16)?;
            let lo = (pair[1] as char).to_digit(16)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }
}

impl fmt::Display for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256({self})")
    }
}

impl Serialize for Sha256 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Sha256 {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Sha256::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a SHA-256 digest is 64 hex digits"))
    }
}

/// The exec jail a policy configures (ATT&CK T1218/T1218.012, per-program egress; the shell is
/// crate `rampart-jail`). Each [`Program`] gets the cgroup `<cgroup_root>/<name>` below the
/// cgroup v2 mount, every exec of it is moved there before it runs, and rules match that cgroup
/// in [`Owner::cgroups`] (nft `socket cgroupv2`).
///
/// Invariants ([`Jail::check`] tests them; the policy front-end and the jail's own TOML both
/// hold them): 1 to [`jail_limits::MAX_PROGRAMS`] programs with unique names of
/// `[a-z0-9_-]{1,64}`; each with absolute paths and/or digests within the per-program bounds;
/// `cgroup_root` a relative path of 1-4 components of letters, digits, `.`, `-`, `_`;
/// absolute `watch_mounts`, which are given exactly when some program has a digest (digests
/// without a watched mount would never see a copy, and a watched mount without digests could
/// match nothing).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jail {
    /// Parent cgroup of the per-program cgroups, relative to the cgroup v2 mount.
    pub cgroup_root: String,
    /// Absolute mount points on which every exec is checked against the programs' digests.
    pub watch_mounts: Vec<String>,
    /// The programs, in declaration order.
    pub programs: Vec<Program>,
    /// Where the jail settings are declared (the first program when there is no `[jail]`).
    pub loc: SourceLoc,
}

/// One jailed program.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Program {
    /// Name; the cgroup is `<cgroup_root>/<name>`.
    pub name: String,
    /// Absolute executable paths (the jail watches each path's inode, so hard links are caught).
    pub paths: Vec<String>,
    /// Digests that identify copies of the program on [`Jail::watch_mounts`].
    pub sha256: Vec<Sha256>,
    /// Techniques jailing this program mitigates (for events and coverage).
    pub mitigates: Vec<TechniqueId>,
    /// Where the program is declared.
    pub loc: SourceLoc,
}

/// Why a [`Jail`] breaks its invariants; the message names the key or program.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum JailInvalid {
    /// No programs: a jail with nothing to jail is a mistake.
    NoPrograms,
    /// More than [`jail_limits::MAX_PROGRAMS`] programs.
    TooManyPrograms,
    /// Two programs share a name.
    DuplicateProgram(String),
    /// A program name that cannot be a cgroup directory name.
    ProgramName(String),
    /// A program with neither paths nor digests.
    NothingIdentifies(String),
    /// A program with more paths or digests than allowed (program, what).
    TooMany(String, &'static str),
    /// A program path that is not absolute (program, path).
    RelativePath(String, String),
    /// A technique id that is not shaped like one (program, id).
    TechniqueId(String, String),
    /// A bad `cgroup_root`.
    CgroupRoot(String),
    /// More than [`jail_limits::MAX_WATCH_MOUNTS`] watched mounts.
    TooManyMounts,
    /// A watched mount that is not absolute.
    RelativeMount(String),
    /// Watched mounts without any digest.
    MountsWithoutDigests,
    /// A digest without watched mounts (the program with it).
    DigestsWithoutMounts(String),
}

impl fmt::Display for JailInvalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use jail_limits::*;
        match self {
            JailInvalid::NoPrograms => {
                f.write_str("no programs: a jail with nothing to jail is a mistake")
            }
            JailInvalid::TooManyPrograms => write!(f, "at most {MAX_PROGRAMS} programs"),
            JailInvalid::DuplicateProgram(n) => write!(f, "program `{n}` is declared twice"),
            JailInvalid::ProgramName(n) => write!(
                f,
                "program name `{n}`: 1-{MAX_NAME_BYTES} characters of a-z, 0-9, '-', '_'"
            ),
            JailInvalid::NothingIdentifies(n) => {
                write!(f, "program `{n}`: give paths, sha256 or both")
            }
            JailInvalid::TooMany(n, what) => {
                let max = if *what == "paths" {
                    MAX_PATHS_PER_PROGRAM
                } else {
                    MAX_DIGESTS_PER_PROGRAM
                };
                write!(f, "program `{n}`: at most {max} {what}")
            }
            JailInvalid::RelativePath(n, p) => {
                write!(
                    f,
                    "program `{n}`: path `{p}` is not absolute (or longer than {MAX_PATH_BYTES} bytes)"
                )
            }
            JailInvalid::TechniqueId(n, id) => write!(
                f,
                "program `{n}`: `{id}` is not an ATT&CK technique id (T1234 or T1234.001)"
            ),
            JailInvalid::CgroupRoot(r) => write!(
                f,
                "cgroup_root `{r}`: a relative path of 1-{MAX_ROOT_COMPONENTS} components of \
                 letters, digits, '.', '-', '_'"
            ),
            JailInvalid::TooManyMounts => {
                write!(f, "watch_mounts: at most {MAX_WATCH_MOUNTS} mounts")
            }
            JailInvalid::RelativeMount(m) => {
                write!(f, "watch_mounts: `{m}` is not an absolute path")
            }
            JailInvalid::MountsWithoutDigests => f.write_str(
                "watch_mounts is set but no program has sha256: nothing could match a copy",
            ),
            JailInvalid::DigestsWithoutMounts(n) => write!(
                f,
                "program `{n}` has sha256 but watch_mounts is empty: copies would never be seen"
            ),
        }
    }
}

impl std::error::Error for JailInvalid {}

impl Jail {
    /// The cgroup of `program`, relative to the cgroup v2 mount: what rules put in
    /// [`Owner::cgroups`] (nft resolves it below the mount nft sees, `unified/` on hybrid hosts).
    pub fn cgroup_of(&self, program: &Program) -> String {
        format!("{}/{}", self.cgroup_root, program.name)
    }

    /// The program named `name`.
    pub fn program(&self, name: &str) -> Option<&Program> {
        self.programs.iter().find(|p| p.name == name)
    }

    /// Every invariant of the type (see [`Jail`]); the first broken one.
    pub fn check(&self) -> Result<(), JailInvalid> {
        Jail::check_cgroup_root(&self.cgroup_root)?;
        if self.watch_mounts.len() > jail_limits::MAX_WATCH_MOUNTS {
            return Err(JailInvalid::TooManyMounts);
        }
        for mount in &self.watch_mounts {
            if !Jail::is_absolute_path(mount) {
                return Err(JailInvalid::RelativeMount(mount.clone()));
            }
        }
        if self.programs.is_empty() {
            return Err(JailInvalid::NoPrograms);
        }
        if self.programs.len() > jail_limits::MAX_PROGRAMS {
            return Err(JailInvalid::TooManyPrograms);
        }
        for (i, program) in self.programs.iter().enumerate() {
            program.check()?;
            if self.programs[..i].iter().any(|p| p.name == program.name) {
                return Err(JailInvalid::DuplicateProgram(program.name.clone()));
            }
        }
        let with_digest = self.programs.iter().find(|p| !p.sha256.is_empty());
        match (with_digest, self.watch_mounts.is_empty()) {
            (None, false) => Err(JailInvalid::MountsWithoutDigests),
            (Some(p), true) => Err(JailInvalid::DigestsWithoutMounts(p.name.clone())),
            _ => Ok(()),
        }
    }

    /// Whether `name` may name a program (and so a cgroup directory).
    pub fn check_program_name(name: &str) -> Result<(), JailInvalid> {
        let ok = !name.is_empty()
            && name.len() <= jail_limits::MAX_NAME_BYTES
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(())
        } else {
            Err(JailInvalid::ProgramName(name.to_string()))
        }
    }

    /// Whether `root` may be the jail's cgroup root.
    pub fn check_cgroup_root(root: &str) -> Result<(), JailInvalid> {
        let components: Vec<&str> = root.split('/').collect();
        let valid = !root.is_empty()
            && components.len() <= jail_limits::MAX_ROOT_COMPONENTS
            && components.iter().all(|c| {
                !c.is_empty()
                    && *c != "."
                    && *c != ".."
                    && c.len() <= jail_limits::MAX_NAME_BYTES
                    && c.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            });
        if valid {
            Ok(())
        } else {
            Err(JailInvalid::CgroupRoot(root.to_string()))
        }
    }

    /// Whether `path` is an absolute path of at most [`jail_limits::MAX_PATH_BYTES`] bytes
    /// without NUL (what a program path and a watched mount must be).
    pub fn is_absolute_path(path: &str) -> bool {
        path.starts_with('/') && path.len() <= jail_limits::MAX_PATH_BYTES && !path.contains('\0')
    }

    /// Whether `id` is shaped like an ATT&CK technique id (`T1234` or `T1234.001`); whether it
    /// exists is the policy front-end's business (it knows the catalogue).
    pub fn is_technique_id(id: &str) -> bool {
        let Some(rest) = id.strip_prefix('T') else {
            return false;
        };
        let (main, sub) = match rest.split_once('.') {
            Some((main, sub)) => (main, Some(sub)),
            None => (rest, None),
        };
        main.len() == 4
            && main.bytes().all(|b| b.is_ascii_digit())
            && sub.is_none_or(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
    }
}

impl Program {
    /// The invariants of one program (name, identities, bounds, technique id shapes).
    pub fn check(&self) -> Result<(), JailInvalid> {
        Jail::check_program_name(&self.name)?;
        if self.paths.is_empty() && self.sha256.is_empty() {
            return Err(JailInvalid::NothingIdentifies(self.name.clone()));
        }
        if self.paths.len() > jail_limits::MAX_PATHS_PER_PROGRAM {
            return Err(JailInvalid::TooMany(self.name.clone(), "paths"));
        }
        if self.sha256.len() > jail_limits::MAX_DIGESTS_PER_PROGRAM {
            return Err(JailInvalid::TooMany(self.name.clone(), "sha256 digests"));
        }
        if let Some(p) = self.paths.iter().find(|p| !Jail::is_absolute_path(p)) {
            return Err(JailInvalid::RelativePath(self.name.clone(), p.clone()));
        }
        if let Some(id) = self.mitigates.iter().find(|t| !Jail::is_technique_id(&t.0)) {
            return Err(JailInvalid::TechniqueId(self.name.clone(), id.0.clone()));
        }
        Ok(())
    }
}

/// The L2 guard's policy-level settings (ATT&CK T1557 and sub-techniques; the shell is crate
/// `rampart-guard`): which bridge ports are trusted, which station bindings are static, rate
/// limits and blocked name protocols. Runtime settings (state and event files, the nft table
/// name, the canary) stay in the guard's own configuration, which is merged with this: every
/// field is `None` when the policy does not set it, and a key set in both places is an error
/// of the merge. Names and values here are already valid ([`l2`] holds the predicates the
/// front-end and the guard share); cross-key rules that depend on the merge (a port list needs
/// a bridge) are the guard's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Guard {
    /// The bridge whose ports are guarded (switch role).
    pub bridge: Option<String>,
    /// Trusted bridge ports (DHCP servers, routers, uplinks): not inspected.
    pub trusted_ports: Option<Vec<String>>,
    /// Untrusted bridge ports the guard watches (every port not trusted is untrusted in the
    /// kernel).
    pub untrusted_ports: Option<Vec<String>>,
    /// IPv6 addresses only trusted ports may claim (ND spoofing guard).
    pub protected_ipv6: Option<Vec<std::net::Ipv6Addr>>,
    /// Drop any IPv6 packet from an untrusted port whose source is bound elsewhere.
    pub ipv6_source_guard: Option<bool>,
    /// Static IPv4 bindings Dynamic ARP Inspection accepts.
    pub static_arp: Option<Vec<L2Static>>,
    /// Static IPv6 bindings ND inspection accepts.
    pub static_nd: Option<Vec<L2Static>>,
    /// Routers whose advertisements pass on untrusted ports.
    pub trusted_router: Option<Vec<L2Router>>,
    /// Host role: the gateway's pinned IPv4/MAC pair.
    pub gateway: Option<L2Gateway>,
    /// Per-port rate limits (each `None` when not set).
    pub rate_limit: L2RateLimit,
    /// Name-service protocols kept off the segment (each `None` when not set).
    pub block: L2Block,
    /// Where `[l2]` is declared.
    pub loc: SourceLoc,
}

/// A static binding: `ip` belongs to `mac` (on `port` only, or on any port).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Static {
    /// The address (IPv4 for ARP, IPv6 for ND).
    pub ip: IpAddr,
    /// Unicast MAC, lower-case `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Bridge port the binding is tied to.
    pub port: Option<String>,
}

/// A router whose RAs are accepted on untrusted ports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Router {
    /// Unicast MAC, lower-case.
    pub mac: String,
    /// The port it must arrive on.
    pub port: Option<String>,
}

/// The gateway pin of the host role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Gateway {
    /// Gateway IPv4 address.
    pub ip: std::net::Ipv4Addr,
    /// Gateway MAC, lower-case.
    pub mac: String,
    /// Interface towards the gateway.
    pub interface: String,
}

/// Per-untrusted-port rate limits, within [`l2::RATE_PER_SECOND`] and [`l2::RATE_BURST`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2RateLimit {
    /// DHCP client messages per second.
    pub dhcp_per_second: Option<u32>,
    /// DHCP burst.
    pub dhcp_burst: Option<u32>,
    /// ARP packets per second.
    pub arp_per_second: Option<u32>,
    /// ARP burst.
    pub arp_burst: Option<u32>,
}

/// Name-service protocols blocked on the bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct L2Block {
    /// LLMNR (UDP 5355).
    pub llmnr: Option<bool>,
    /// NetBIOS name and datagram service (UDP 137, 138).
    pub nbns: Option<bool>,
    /// mDNS (UDP 5353).
    pub mdns: Option<bool>,
}

/// What an [`L2Guard`] value must be: the predicates the policy front-end (with spans) and the
/// guard's configuration (after the merge) both apply.
pub mod l2 {
    /// Longest interface name (IFNAMSIZ 16 minus the NUL).
    pub const MAX_IFNAME_LEN: usize = 15;
    /// Most entries in one `[l2]` list (ports, static entries, routers, addresses).
    pub const MAX_LIST: usize = 4096;
    /// Allowed per-second rates.
    pub const RATE_PER_SECOND: std::ops::RangeInclusive<u32> = 1..=2048;
    /// Allowed bursts.
    pub const RATE_BURST: std::ops::RangeInclusive<u32> = 1..=4096;

    /// Whether `name` can be a Linux interface (bridge port) name the guard puts in nft text:
    /// 1-15 of `[A-Za-z0-9_.@-]`.
    pub fn is_ifname(name: &str) -> bool {
        !name.is_empty()
            && name.len() <= MAX_IFNAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.@".contains(&b))
    }

    /// Parse a MAC written `aa:bb:cc:dd:ee:ff` (either case, `-` accepted); `None` for anything
    /// else and for group (multicast, broadcast) and all-zero addresses, which own no station.
    pub fn parse_unicast_mac(text: &str) -> Option<[u8; 6]> {
        let mut out = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut out {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        let unicast = out[0] & 1 == 0 && out != [0; 6];
        (parts.next().is_none() && unicast).then_some(out)
    }

    /// The canonical text of a MAC (lower-case, `:`-separated).
    pub fn mac_text(mac: [u8; 6]) -> String {
        let m = mac;
        format!(
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }

    /// Whether `ip` may be claimed by a station (not unspecified, not multicast).
    pub fn is_unicast_v6(ip: &std::net::Ipv6Addr) -> bool {
        !ip.is_unspecified() && !ip.is_multicast()
    }
}

/// Whether `addr` lies in `net` (family-aware; an IPv4 address never matches an IPv6 net).
pub fn net_contains(net: &IpNet, addr: IpAddr) -> bool {
    net.contains(&addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_range_contains_bounds() {
        let r = PortRange { lo: 137, hi: 139 };
        assert!(!r.contains(136));
        assert!(r.contains(137));
        assert!(r.contains(139));
        assert!(!r.contains(140));
        assert_eq!(r.to_string(), "137-139");
        assert_eq!(PortRange::single(445).to_string(), "445");
    }

    #[test]
    fn rules_in_keeps_order_and_ids() {
        let mk = |name: &str, direction| Rule::new(name, direction, Action::Accept);
        let policy = Policy {
            rules: vec![
                mk("a", Direction::Ingress),
                mk("b", Direction::Egress),
                mk("c", Direction::Ingress),
            ],
            ..Policy::default()
        };
        let ingress: Vec<_> = policy
            .rules_in(Direction::Ingress)
            .map(|(id, r)| (id.0, r.name.clone()))
            .collect();
        assert_eq!(ingress, vec![(0, "a".into()), (2, "c".into())]);
    }

    #[test]
    fn dates_convert_to_and_from_unix_days() {
        let d = |year, month, day| Date { year, month, day };
        for (days, date) in [
            (0, d(1970, 1, 1)),
            (59, d(1970, 3, 1)),
            (11_016, d(2000, 2, 29)),
            (20_784, d(2026, 11, 27)),
            (20_819, d(2027, 1, 1)),
        ] {
            assert_eq!(Date::from_unix_days(days), date);
            assert_eq!(date.unix_days(), days);
        }
        for days in (0..200_000).step_by(37) {
            assert_eq!(Date::from_unix_days(days).unix_days(), days);
        }
        assert_eq!(d(2000, 3, 1).unix_days() - d(2000, 2, 28).unix_days(), 2);
    }

    fn program(name: &str, paths: &[&str]) -> Program {
        Program {
            name: name.into(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            sha256: Vec::new(),
            mitigates: vec![TechniqueId("T1218.012".into())],
            loc: SourceLoc::default(),
        }
    }

    fn jail(programs: Vec<Program>) -> Jail {
        Jail {
            cgroup_root: jail_limits::DEFAULT_CGROUP_ROOT.into(),
            watch_mounts: Vec::new(),
            programs,
            loc: SourceLoc::default(),
        }
    }

    #[test]
    fn jail_invariants_name_what_is_wrong() {
        let good = jail(vec![program("verclsid", &["/usr/bin/verclsid"])]);
        assert_eq!(good.check(), Ok(()));
        assert_eq!(good.cgroup_of(&good.programs[0]), "rampart.jail/verclsid");
        let err = |j: Jail| j.check().unwrap_err().to_string();
        assert!(err(jail(vec![])).contains("nothing to jail"));
        assert!(err(jail(vec![program("Bad Name", &["/x"])])).contains("program name"));
        assert!(err(jail(vec![program("a", &[])])).contains("give paths, sha256"));
        assert!(err(jail(vec![program("a", &["rel/x"])])).contains("not absolute"));
        assert!(
            err(jail(vec![program("a", &["/x"]), program("a", &["/y"])]))
                .contains("declared twice")
        );
        let mut bad_id = program("a", &["/x"]);
        bad_id.mitigates = vec![TechniqueId("X1".into())];
        assert!(err(jail(vec![bad_id])).contains("technique id"));
        for root in ["", "/abs", "../x", "a/b/c/d/e", "a//b", "sp ace"] {
            let mut j = good.clone();
            j.cgroup_root = root.into();
            assert!(err(j).contains("cgroup_root"), "{root:?}");
        }
        let mut digests = good.clone();
        digests.programs[0].sha256 = vec![Sha256([7; 32])];
        assert!(err(digests.clone()).contains("watch_mounts is empty"));
        digests.watch_mounts = vec!["/".into()];
        assert_eq!(digests.check(), Ok(()));
        digests.watch_mounts = vec!["mnt".into()];
        assert!(err(digests).contains("not an absolute path"));
        let mut mounts = good.clone();
        mounts.watch_mounts = vec!["/".into()];
        assert!(err(mounts).contains("no program has sha256"));
        let many = jail(
            (0..=jail_limits::MAX_PROGRAMS)
                .map(|i| program(&format!("p{i}"), &["/x"]))
                .collect(),
        );
        assert!(err(many).contains("at most 256 programs"));
    }

    #[test]
    fn sha256_parses_prints_and_serialises_as_hex() {
        let hex = format!("{}{}", "00".repeat(31), "fF");
        let digest = Sha256::from_hex(&hex).unwrap();
        let mut bytes = [0u8; 32];
        bytes[31] = 0xff;
        assert_eq!(digest, Sha256(bytes));
        assert_eq!(digest.to_string(), hex.to_lowercase());
        assert_eq!(Sha256::from_hex("zz"), None);
        assert_eq!(Sha256::from_hex(&"g".repeat(64)), None);
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{}\"", hex.to_lowercase()));
        assert_eq!(serde_json::from_str::<Sha256>(&json).unwrap(), digest);
        assert!(serde_json::from_str::<Sha256>("\"ab\"").is_err());
    }

    #[test]
    fn a_policy_without_jail_serialises_as_before() {
        let json = serde_json::to_value(Policy::default()).unwrap();
        assert!(json.get("jail").is_none());
        let back: Policy = serde_json::from_value(json).unwrap();
        assert_eq!(back, Policy::default());
    }

    #[test]
    fn l2_predicates() {
        assert!(l2::is_ifname("br0") && l2::is_ifname("veth.1@x"));
        assert!(
            !l2::is_ifname("") && !l2::is_ifname("br0; flush") && !l2::is_ifname(&"a".repeat(16))
        );
        assert_eq!(
            l2::parse_unicast_mac("02:00:00:00:00:0A"),
            Some([2, 0, 0, 0, 0, 10])
        );
        assert_eq!(
            l2::parse_unicast_mac("02-00-00-00-00-0a"),
            Some([2, 0, 0, 0, 0, 10])
        );
        for bad in [
            "ff:ff:ff:ff:ff:ff",
            "01:00:5e:00:00:01",
            "00:00:00:00:00:00",
            "02:00:00:00:00",
            "02:00:00:00:00:00:01",
            "2:0:0:0:0:1",
        ] {
            assert_eq!(l2::parse_unicast_mac(bad), None, "{bad}");
        }
        assert_eq!(l2::mac_text([2, 0, 0, 0, 0, 0xab]), "02:00:00:00:00:ab");
        assert!(!l2::is_unicast_v6(&"ff02::1".parse().unwrap()));
        assert!(l2::is_unicast_v6(&"fe80::1".parse().unwrap()));
    }

    #[test]
    fn ipv4_address_never_matches_ipv6_net() {
        let v6: IpNet = "::/0".parse().unwrap();
        assert!(!net_contains(&v6, "192.0.2.1".parse().unwrap()));
        let v4: IpNet = "0.0.0.0/0".parse().unwrap();
        assert!(net_contains(&v4, "192.0.2.1".parse().unwrap()));
    }
}
