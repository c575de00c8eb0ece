//! A connection tracker modelled on Linux nf_conntrack: the TCP state machine with its
//! invalid-transition and invalid-flag detection and its sequence-window check
//! (`tcp_window`), UDP and ICMP pseudo-connections, ICMP errors as `related`, the kernel's
//! default timeouts, a bounded table, and what the kernel's `conn_limit` sets count.
//!
//! Like the kernel, an existing entry is updated by every packet before filtering, while a new
//! entry is only kept ("confirmed") when the first packet is accepted: call
//! [`Conntrack::track`] before classification and [`Conntrack::confirm`] after. Not modelled:
//! helpers (FTP data is never `related`), zones and NAT.

use crate::FastMap;
use std::net::IpAddr;

use rampart_ir::CtState;

use crate::decode::{tcp_flags, Ip, Transport};
use crate::engine::{AppConnState, RuleConns, MAX_METER_ENTRIES};
use crate::tcp_window::{self, class, side_flags, Phase, Segment, Verdict};

/// Default table size.
// Why: nf_conntrack_max is 262,144 on a typical 8+ GiB machine.
pub const DEFAULT_MAX_ENTRIES: usize = 262_144;
/// How many entries an insertion into a full table looks at to find one to evict.
// Why: the kernel's early_drop scans a bounded number of buckets too; a small constant keeps
// insertion O(1).
const EVICTION_SCAN: usize = 64;

const S: u64 = 1_000_000_000;
/// Identical segments in a row after which a connection gets the retransmission timeout
/// (`nf_conntrack_tcp_max_retrans`).
const MAX_RETRANS: u8 = 3;

/// nf_conntrack's default timeouts, in seconds.
pub mod timeouts {
    /// TCP SYN sent.
    pub const TCP_SYN_SENT: u64 = 120;
    /// TCP SYN received.
    pub const TCP_SYN_RECV: u64 = 60;
    /// TCP established (5 days).
    pub const TCP_ESTABLISHED: u64 = 432_000;
    /// TCP FIN wait.
    pub const TCP_FIN_WAIT: u64 = 120;
    /// TCP close wait.
    pub const TCP_CLOSE_WAIT: u64 = 60;
    /// TCP last ACK.
    pub const TCP_LAST_ACK: u64 = 30;
    /// TCP time wait.
    pub const TCP_TIME_WAIT: u64 = 120;
    /// TCP close (also any connection after a RST).
    pub const TCP_CLOSE: u64 = 10;
    /// TCP established before any reply (a mid-stream pickup), `tcp_timeout_unacknowledged`.
    pub const TCP_UNACK: u64 = 300;
    /// TCP after [`super::MAX_RETRANS`] identical segments (`tcp_timeout_max_retrans`).
    pub const TCP_RETRANS: u64 = 300;
    /// UDP before a reply.
    pub const UDP: u64 = 30;
    /// UDP after a reply (`udp_timeout_stream`).
    pub const UDP_STREAM: u64 = 120;
    /// ICMP / ICMPv6.
    pub const ICMP: u64 = 30;
    /// Other protocols.
    pub const GENERIC: u64 = 600;
}

/// TCP conntrack states (kernel names).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpState {
    /// SYN_SENT.
    SynSent,
    /// SYN_RECV.
    SynRecv,
    /// ESTABLISHED.
    Established,
    /// FIN_WAIT.
    FinWait,
    /// CLOSE_WAIT.
    CloseWait,
    /// LAST_ACK.
    LastAck,
    /// TIME_WAIT.
    TimeWait,
    /// CLOSE.
    Close,
    /// SYN_SENT2 (simultaneous open).
    SynSent2,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Next {
    To(TcpState),
    Ignore,
    Invalid,
}

use Next::{Ignore as IG, Invalid as IV};
use TcpState::*;

const fn t(s: TcpState) -> Next {
    Next::To(s)
}

/// `TCP[dir][packet][state]`, from nf_conntrack_proto_tcp.c `tcp_conntracks` (state order
/// NONE, SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE,
/// SYN_SENT2; packet order syn, synack, fin, ack, rst, none).
const TCP: [[[Next; 10]; 6]; 2] = [
    [
        // original
        [
            t(SynSent),
            t(SynSent),
            IG,
            IG,
            IG,
            IG,
            IG,
            t(SynSent),
            t(SynSent),
            t(SynSent2),
        ],
        [IV, IV, t(SynRecv), IV, IV, IV, IV, IV, IV, t(SynRecv)],
        [
            IV,
            IV,
            t(FinWait),
            t(FinWait),
            t(LastAck),
            t(LastAck),
            t(LastAck),
            t(TimeWait),
            t(Close),
            IV,
        ],
        [
            t(Established),
            IV,
            t(Established),
            t(Established),
            t(CloseWait),
            t(CloseWait),
            t(TimeWait),
            t(TimeWait),
            t(Close),
            IV,
        ],
        [
            IV,
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
        ],
        [IV; 10],
    ],
    [
        // reply
        [
            IV,
            t(SynSent2),
            IV,
            IV,
            IV,
            IV,
            IV,
            t(SynSent),
            IV,
            t(SynSent2),
        ],
        [IV, t(SynRecv), IG, IG, IG, IG, IG, IG, IG, t(SynRecv)],
        [
            IV,
            IV,
            t(FinWait),
            t(FinWait),
            t(LastAck),
            t(LastAck),
            t(LastAck),
            t(TimeWait),
            t(Close),
            IV,
        ],
        [
            IV,
            IG,
            t(SynRecv),
            t(Established),
            t(CloseWait),
            t(CloseWait),
            t(TimeWait),
            t(TimeWait),
            t(Close),
            IG,
        ],
        [
            IV,
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
            t(Close),
        ],
        [IV; 10],
    ],
];

fn state_index(s: Option<TcpState>) -> usize {
    match s {
        None => 0,
        Some(SynSent) => 1,
        Some(SynRecv) => 2,
        Some(Established) => 3,
        Some(FinWait) => 4,
        Some(CloseWait) => 5,
        Some(LastAck) => 6,
        Some(TimeWait) => 7,
        Some(Close) => 8,
        Some(SynSent2) => 9,
    }
}

fn tcp_timeout(s: TcpState) -> u64 {
    use timeouts::*;
    match s {
        SynSent | SynSent2 => TCP_SYN_SENT,
        SynRecv => TCP_SYN_RECV,
        Established => TCP_ESTABLISHED,
        FinWait => TCP_FIN_WAIT,
        CloseWait => TCP_CLOSE_WAIT,
        LastAck => TCP_LAST_ACK,
        TimeWait => TCP_TIME_WAIT,
        Close => TCP_CLOSE,
    }
}

/// The timeout of a connection entering `new` on an accepted segment of class `index`: 300 s
/// after three identical segments in a row, 10 s after a RST, 300 s while data is
/// unacknowledged or the last window was zero, else the state's own (these only shorten it).
fn tcp_timeout_after(w: &tcp_window::Window, index: u8, new: TcpState) -> u64 {
    let normal = tcp_timeout(new);
    let unacked = (w.sides[0].flags | w.sides[1].flags) & side_flags::DATA_UNACKNOWLEDGED != 0;
    if w.retrans >= MAX_RETRANS && normal > timeouts::TCP_RETRANS {
        timeouts::TCP_RETRANS
    } else if index == class::RST {
        timeouts::TCP_CLOSE
    } else if unacked && normal > timeouts::TCP_UNACK {
        timeouts::TCP_UNACK
    } else if w.last_win == 0 && normal > timeouts::TCP_RETRANS {
        timeouts::TCP_RETRANS
    } else {
        normal
    }
}

/// Whether nf_conntrack's `tcp_error` accepts this flag combination (PSH ignored).
pub fn tcp_flags_valid(flags: u8) -> bool {
    use tcp_flags::*;
    let f = flags & !PSH & 0x3f;
    matches!(
        f,
        x if x == SYN
            || x == SYN | URG
            || x == SYN | ACK
            || x == RST
            || x == RST | ACK
            || x == FIN | ACK
            || x == FIN | ACK | URG
            || x == ACK
            || x == ACK | URG
    )
}

/// The segment's [`class`] (the row of `TCP` it takes).
fn packet_index(flags: u8) -> u8 {
    use tcp_flags::*;
    if flags & RST != 0 {
        class::RST
    } else if flags & SYN != 0 {
        if flags & ACK != 0 {
            class::SYNACK
        } else {
            class::SYN
        }
    } else if flags & FIN != 0 {
        class::FIN
    } else if flags & ACK != 0 {
        class::ACK
    } else {
        class::NONE
    }
}

/// A connection's original-direction tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Tuple {
    /// Originator.
    pub src: IpAddr,
    /// Responder.
    pub dst: IpAddr,
    /// Protocol.
    pub proto: u8,
    /// Source port (ICMP: query id).
    pub sport: u16,
    /// Destination port (ICMP: 0).
    pub dport: u16,
}

impl Tuple {
    fn reversed(self) -> Self {
        // An ICMP query's "ports" are (identifier, 0) in both directions: the kernel's tuple
        // keeps the identifier on both sides, so a reply finds its request.
        let icmp = matches!(self.proto, 1 | 58);
        Self {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            sport: if icmp { self.sport } else { self.dport },
            dport: if icmp { self.dport } else { self.sport },
        }
    }
}

impl Tuple {
    /// The key a connection whose original tuple is `self` is stored under in [`Table`], and
    /// whether that key is the reverse of `self`: the lesser of the two orientations, so that
    /// a packet in either direction computes the same key.
    fn canonical(self) -> (Self, bool) {
        let r = self.reversed();
        let order = |t: &Self| (t.src, t.sport, t.dst, t.dport);
        if order(&r) < order(&self) {
            (r, true)
        } else {
            (self, false)
        }
    }
}

/// The connections, each under one key whatever the direction of a packet looking for it.
/// The kernel hashes both tuples of a connection; a map keyed by the original tuple alone would
/// need a second probe for every packet it does not hold in that orientation (every new flow
/// and every reply), and on a table of 100k connections a probe is a cache miss. Here each
/// connection is stored under [`Tuple::canonical`] with its orientation beside it: one probe.
/// The accessors take a connection's *original* tuple and see an entry only in that
/// orientation, as a map keyed by original tuples would; [`Table::find_either`] is the
/// lookup in both.
#[derive(Clone, Debug, Default)]
struct Table {
    map: FastMap<Tuple, Slot>,
}

#[derive(Clone, Copy, Debug)]
struct Slot {
    entry: Entry,
    /// The key is the connection's reply tuple (its original tuple reversed).
    reversed: bool,
}

impl Table {
    fn len(&self) -> usize {
        self.map.len()
    }

    fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The entry of the connection whose original tuple is `original`.
    fn get(&self, original: &Tuple) -> Option<&Entry> {
        let (key, reversed) = original.canonical();
        self.map
            .get(&key)
            .filter(|s| s.reversed == reversed)
            .map(|s| &s.entry)
    }

    fn get_mut(&mut self, original: &Tuple) -> Option<&mut Entry> {
        let (key, reversed) = original.canonical();
        self.map
            .get_mut(&key)
            .filter(|s| s.reversed == reversed)
            .map(|s| &mut s.entry)
    }

    fn contains_key(&self, original: &Tuple) -> bool {
        self.get(original).is_some()
    }

    /// Store the connection whose original tuple is `original` (replacing its entry).
    fn insert(&mut self, original: Tuple, entry: Entry) {
        let (key, reversed) = original.canonical();
        let old = self.map.insert(key, Slot { entry, reversed });
        debug_assert!(
            old.is_none_or(|s| s.reversed == reversed),
            "a connection replaced its own reverse"
        );
    }

    /// Store a new connection unless one holds `original` in either orientation; whether it
    /// was stored. One hash.
    fn insert_new(&mut self, original: Tuple, entry: Entry) -> bool {
        let (key, reversed) = original.canonical();
        match self.map.entry(key) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(Slot { entry, reversed });
                true
            }
            std::collections::hash_map::Entry::Occupied(_) => false,
        }
    }

    fn remove(&mut self, original: &Tuple) -> Option<Entry> {
        let (key, reversed) = original.canonical();
        if self.map.get(&key)?.reversed != reversed {
            return None;
        }
        self.map.remove(&key).map(|s| s.entry)
    }

    /// The connection a packet with tuple `t` belongs to in either direction: its original
    /// tuple, whether `t` is its reply direction, and its entry.
    fn find_either(&self, t: Tuple) -> Option<(Tuple, bool, &Entry)> {
        let (key, reversed) = t.canonical();
        let s = self.map.get(&key)?;
        let original = if s.reversed { key.reversed() } else { key };
        Some((original, s.reversed != reversed, &s.entry))
    }

    /// Every connection with its original tuple.
    fn iter(&self) -> impl Iterator<Item = (Tuple, &Entry)> {
        self.map
            .iter()
            .map(|(k, s)| (if s.reversed { k.reversed() } else { *k }, &s.entry))
    }
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    tcp: Option<TcpState>,
    seen_reply: bool,
    expires_ns: u64,
    /// Packets of the connection so far, both directions (nft `ct packets`).
    packets: u32,
    /// What application-protocol rules decided for it (nft: the conntrack mark).
    app: AppConnState,
    /// Payload packets of it that application-protocol rules inspected (the inspection budget
    /// used; the classifier counts the same).
    app_inspected: u32,
    /// The last application protocol recognised in each direction (original, reply): an
    /// unrecognised payload inherits it (see the IR's `AppMatch`).
    app_labels: [Option<rampart_ir::AppProtocol>; 2],
    /// TCP sequence windows (unused for other protocols).
    window: tcp_window::Window,
    /// The kernel's ASSURED bit: a TCP connection whose handshake completed.
    assured: bool,
}

impl Entry {
    /// A new connection's entry: its first packet counted, no reply seen, its application
    /// protocol still being inspected.
    fn new(tcp: Option<TcpState>, window: tcp_window::Window, expires_ns: u64) -> Self {
        Self {
            tcp,
            seen_reply: false,
            expires_ns,
            packets: 1,
            app: AppConnState::Inspecting,
            app_inspected: 0,
            app_labels: [None, None],
            window,
            assured: false,
        }
    }

    /// TCP `TIME_WAIT` or `CLOSE`: the kernel's connection limits no longer count it.
    fn closed(&self) -> bool {
        matches!(self.tcp, Some(TcpState::TimeWait) | Some(TcpState::Close))
    }
}

/// The tracker's view of one packet, to be passed back to [`Conntrack::confirm`].
#[derive(Clone, Copy, Debug)]
pub struct Tracked {
    /// Conntrack state for the rules.
    pub state: CtState,
    /// Whether the packet travels in the reply direction of its connection.
    pub reply: bool,
    /// The connection's tuple, if it has or would have one.
    pub tuple: Option<Tuple>,
    /// A new entry to insert if the packet is accepted.
    pending: Option<(Tuple, Entry)>,
    /// Why the state is invalid, when it is.
    pub invalid_reason: Option<&'static str>,
    /// The packet belongs to an entry the table holds (it was counted in it).
    pub has_entry: bool,
    /// 1-based index of the packet in its connection (both directions; 1 for a proposal,
    /// 0 when it belongs to none).
    pub packet_index: u32,
    /// The connection's application-protocol state.
    pub app: AppConnState,
    /// The last application protocol recognised in this packet's direction of its connection.
    pub app_label: Option<rampart_ir::AppProtocol>,
    /// Payload packets of its connection application-protocol rules inspected before this one.
    pub app_inspected: u32,
}

impl Tracked {
    /// A packet in `state` of connection `tuple` (if any), proposing nothing.
    fn seen(state: CtState, reply: bool, tuple: Option<Tuple>) -> Self {
        Self {
            state,
            reply,
            tuple,
            pending: None,
            invalid_reason: None,
            has_entry: false,
            packet_index: 0,
            app: AppConnState::Inspecting,
            app_label: None,
            app_inspected: 0,
        }
    }

    /// A packet whose transport checksum is wrong: invalid, with no connection (the kernel
    /// looks no further, so nothing in the table changes).
    pub fn bad_checksum() -> Self {
        Self::invalid("bad checksum", None)
    }

    fn invalid(reason: &'static str, tuple: Option<Tuple>) -> Self {
        Self {
            invalid_reason: Some(reason),
            ..Self::seen(CtState::Invalid, false, tuple)
        }
    }
}

/// Counters of the tracker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct CtStats {
    /// Entries confirmed.
    pub inserted: u64,
    /// Entries removed on timeout.
    pub expired: u64,
    /// Entries evicted from a full table.
    pub evicted: u64,
    /// New connections not tracked because the table was full of replied entries.
    pub table_full: u64,
}

/// The connection table.
#[derive(Clone, Debug)]
pub struct Conntrack {
    map: Table,
    limits: ConnLimitSets,
    /// `nf_conntrack_tcp_be_liberal`: out-of-window TCP segments are not invalid.
    be_liberal: bool,
    max_entries: usize,
    stats: CtStats,
}

/// What the kernel's connection-limit sets hold (`add @connlimit_N { saddr ct count over C }`,
/// one set per `conn_limit` rule and family, keyed by the packet's source): each statement a
/// packet reaches adds its connection to the source's list; the kernel drops a listed
/// connection once conntrack no longer holds it or it is closed (TCP `TIME_WAIT`/`CLOSE`), and
/// a source whose list is empty leaves the set (its garbage collection, within a second).
/// Here the counts change at once: the kernel's lists settle when the next connection is
/// added and by that collection, so a source that closes more than 8 counted connections
/// between two new ones may briefly be counted high there.
#[derive(Clone, Debug, Default)]
struct ConnLimitSets {
    /// Per counted connection: each (rule, source) whose list holds it.
    by_conn: FastMap<Tuple, Vec<(u32, IpAddr)>>,
    /// Per (source, rule): its counted connections (absent: the set does not hold it).
    by_src: FastMap<(IpAddr, u32), u32>,
    /// Per (rule, IPv6): the sources its set holds (at most [`MAX_METER_ENTRIES`], the
    /// emitted sets' size).
    sources: FastMap<(u32, bool), usize>,
}

impl Default for Conntrack {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_ENTRIES)
    }
}

impl Conntrack {
    /// A table holding at most `max_entries` connections.
    pub fn new(max_entries: usize) -> Self {
        Self {
            map: Table::default(),
            limits: ConnLimitSets::default(),
            be_liberal: false,
            max_entries: max_entries.max(1),
            stats: CtStats::default(),
        }
    }

    /// `nf_conntrack_tcp_be_liberal`: with it, TCP segments outside the sequence window are
    /// not invalid (the kernel's default is off, as here).
    pub fn set_tcp_be_liberal(&mut self, on: bool) {
        self.be_liberal = on;
    }

    /// Connections tracked now.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> CtStats {
        self.stats
    }

    /// How rule `rule`'s connection-limit set sees source `src` (the packet's source) for a
    /// packet of connection `tuple` (`None`: a packet without one).
    pub fn rule_conns(&self, src: IpAddr, tuple: Option<Tuple>, rule: u32) -> RuleConns {
        let l = &self.limits;
        let held = l.by_src.get(&(src, rule)).copied().unwrap_or(0);
        if held == 0 {
            let sources = l.sources.get(&(rule, src.is_ipv6())).copied().unwrap_or(0);
            return RuleConns {
                rule,
                others: 0,
                untrackable: sources >= MAX_METER_ENTRIES,
            };
        }
        let own = tuple
            .and_then(|t| l.by_conn.get(&t))
            .is_some_and(|c| c.contains(&(rule, src)));
        RuleConns {
            rule,
            others: held - u32::from(own),
            untrackable: false,
        }
    }

    /// Count connection `tuple` under source `src` in the sets of `rules`, the `conn_limit`
    /// rules whose statement its accepted packet reached
    /// ([`crate::Engine::conn_limit_rules_reached`]). A connection the table does not hold
    /// (not confirmed, or the table was full) or that is closed is not counted, as the
    /// kernel drops it from the list; one already counted is not counted twice.
    pub fn count_conn_limits(&mut self, tuple: Tuple, src: IpAddr, rules: &[u32]) {
        if rules.is_empty() || self.map.get(&tuple).is_none_or(Entry::closed) {
            return;
        }
        let l = &mut self.limits;
        for &rule in rules {
            if l.by_conn
                .get(&tuple)
                .is_some_and(|c| c.contains(&(rule, src)))
            {
                continue;
            }
            let held = l.by_src.entry((src, rule)).or_insert(0);
            if *held == 0 {
                let sources = l.sources.entry((rule, src.is_ipv6())).or_insert(0);
                if *sources >= MAX_METER_ENTRIES {
                    // The set is full: the kernel's `add` fails and counts nothing.
                    l.by_src.remove(&(src, rule));
                    continue;
                }
                *sources += 1;
            }
            *held += 1;
            l.by_conn.entry(tuple).or_default().push((rule, src));
        }
    }

    /// Take connection `tuple` out of every connection-limit set that counts it.
    fn uncount(&mut self, tuple: &Tuple) {
        let l = &mut self.limits;
        let Some(counted) = l.by_conn.remove(tuple) else {
            return;
        };
        for (rule, src) in counted {
            let Some(held) = l.by_src.get_mut(&(src, rule)) else {
                continue;
            };
            *held -= 1;
            if *held == 0 {
                l.by_src.remove(&(src, rule));
                if let Some(n) = l.sources.get_mut(&(rule, src.is_ipv6())) {
                    *n -= 1;
                }
            }
        }
    }

    fn remove(&mut self, key: &Tuple) {
        if self.map.remove(key).is_some() && !self.limits.by_conn.is_empty() {
            self.uncount(key);
        }
    }

    /// Find the live entry for `t` in either direction, dropping it if expired.
    fn find(&mut self, t: Tuple, now_ns: u64) -> Option<(Tuple, bool)> {
        let (key, reply, e) = self.map.find_either(t)?;
        if e.expires_ns <= now_ns {
            self.remove(&key);
            self.stats.expired += 1;
            return None;
        }
        Some((key, reply))
    }

    fn established_or_new(e: &Entry, reply: bool) -> CtState {
        if reply || e.seen_reply {
            CtState::Established
        } else {
            CtState::New
        }
    }

    /// Look a packet up, update an existing connection (counting the packet in it), and
    /// propose a new one.
    pub fn track(&mut self, ip: &Ip<'_>, now_ns: u64) -> Tracked {
        let mut t = self.track_state(ip, now_ns);
        if !self.limits.by_conn.is_empty() {
            // A connection that just closed no longer counts against any `conn_limit`.
            if let Some(k) = t.tuple {
                if self.map.get(&k).is_some_and(Entry::closed) {
                    self.uncount(&k);
                }
            }
        }
        if t.pending.is_some() {
            t.packet_index = 1;
        } else if matches!(t.state, CtState::New | CtState::Established) {
            if let Some(e) = t.tuple.and_then(|k| self.map.get_mut(&k)) {
                e.packets = e.packets.saturating_add(1);
                t.has_entry = true;
                t.packet_index = e.packets;
                t.app = e.app;
                t.app_label = e.app_labels[usize::from(t.reply)];
                t.app_inspected = e.app_inspected;
            }
        }
        t
    }

    /// Record the application protocol recognised on a packet of connection `tuple` in its
    /// original (`reply` false) or reply direction.
    pub fn set_app_label(&mut self, tuple: Tuple, reply: bool, label: rampart_ir::AppProtocol) {
        if let Some(e) = self.map.get_mut(&tuple) {
            e.app_labels[usize::from(reply)] = Some(label);
        }
    }

    /// Count a payload packet of connection `tuple` that application-protocol rules inspected
    /// (its inspection budget, [`rampart_ir::APP_INSPECT_MAX_PACKETS`]).
    pub fn note_app_inspected(&mut self, tuple: Tuple) {
        if let Some(e) = self.map.get_mut(&tuple) {
            e.app_inspected = e.app_inspected.saturating_add(1);
        }
    }

    /// Record what application-protocol rules decided for the connection `tuple`.
    pub fn set_app(&mut self, tuple: Tuple, state: AppConnState) {
        if let Some(e) = self.map.get_mut(&tuple) {
            e.app = state;
        }
    }

    /// Confirm the connection a SYN proxy's completing ACK creates: established, with the
    /// server's reply seen (the proxy completed the server-side handshake).
    pub fn confirm_established(&mut self, tracked: &Tracked) {
        let Some((key, mut entry)) = tracked.pending else {
            return;
        };
        entry.tcp = Some(TcpState::Established);
        entry.seen_reply = true;
        // The proposal of a bare ACK (loose pickup) already carries the established timeout.
        let fixed = Tracked {
            pending: Some((key, entry)),
            ..*tracked
        };
        self.confirm(&fixed, true);
    }

    fn track_state(&mut self, ip: &Ip<'_>, now_ns: u64) -> Tracked {
        let base = |sport: u16, dport: u16| Tuple {
            src: ip.src,
            dst: ip.dst,
            proto: ip.protocol,
            sport,
            dport,
        };
        match &ip.l4 {
            Transport::Tcp(tcp) => {
                let tuple = base(tcp.src, tcp.dst);
                if !tcp_flags_valid(tcp.flags) {
                    return Tracked::invalid("invalid TCP flag combination", Some(tuple));
                }
                self.track_tcp(tuple, tcp, now_ns)
            }
            Transport::Udp(udp) => {
                let tuple = base(udp.src, udp.dst);
                self.simple(tuple, timeouts::UDP, timeouts::UDP_STREAM, now_ns)
            }
            Transport::Icmp(icmp) => {
                if icmp.is_error() {
                    let Some(inner) = icmp.inner else {
                        return Tracked::invalid("ICMP error without a quoted packet", None);
                    };
                    let (sp, dp) = inner.ports.unwrap_or((0, 0));
                    let t = Tuple {
                        src: inner.src,
                        dst: inner.dst,
                        proto: inner.protocol,
                        sport: sp,
                        dport: if matches!(inner.protocol, 1 | 58) {
                            0
                        } else {
                            dp
                        },
                    };
                    return match self.find(t, now_ns) {
                        Some((key, _)) => Tracked::seen(CtState::Related, false, Some(key)),
                        None => Tracked::invalid("ICMP error for an unknown connection", None),
                    };
                }
                let (request, reply_type) = if icmp.v6 {
                    (
                        matches!(icmp.icmp_type, 128 | 139),
                        matches!(icmp.icmp_type, 129 | 140),
                    )
                } else {
                    (
                        matches!(icmp.icmp_type, 8 | 13 | 15 | 17),
                        matches!(icmp.icmp_type, 0 | 14 | 16 | 18),
                    )
                };
                let tuple = base(icmp.id.unwrap_or(0), 0);
                if request {
                    match self.find(tuple, now_ns) {
                        Some((key, reply)) => self.refresh(key, reply, timeouts::ICMP, now_ns),
                        None => self.propose(tuple, None, timeouts::ICMP, now_ns),
                    }
                } else if reply_type {
                    match self.find(tuple, now_ns) {
                        Some((key, true)) => self.refresh(key, true, timeouts::ICMP, now_ns),
                        _ => Tracked::invalid("ICMP reply without a request", Some(tuple)),
                    }
                } else {
                    Tracked::invalid("ICMP type conntrack does not track", Some(tuple))
                }
            }
            Transport::Other { .. } => {
                let tuple = base(0, 0);
                self.simple(tuple, timeouts::GENERIC, timeouts::GENERIC, now_ns)
            }
            Transport::Fragment => Tracked::seen(CtState::Untracked, false, None),
        }
    }

    /// A TCP segment of connection `tuple` (its own orientation): the kernel's state table,
    /// its special cases, and the sequence-window check (`tcp_window`).
    fn track_tcp(&mut self, tuple: Tuple, tcp: &crate::decode::Tcp<'_>, now_ns: u64) -> Tracked {
        let seg = Segment::of(tcp);
        let index = packet_index(tcp.flags);
        let passed = |state, reply, key| Tracked::seen(state, reply, Some(key));
        let Some((key, reply)) = self.find(tuple, now_ns) else {
            return self.open_tcp(tuple, &seg, index, now_ns);
        };
        let Some(mut e) = self.map.get(&key).copied() else {
            return Tracked::invalid("conntrack entry vanished", Some(key));
        };
        let dir = usize::from(reply);
        let stored = e.tcp;
        let mut old = stored;
        let shown = Self::established_or_new(&e, reply);
        let w = &mut e.window;
        let mut next = TCP[dir][usize::from(index)][state_index(old)];
        if next == Next::To(SynSent) && matches!(old, Some(TimeWait) | Some(Close)) {
            let closing = (w.sides[0].flags | w.sides[1].flags) & side_flags::CLOSE_INIT != 0;
            if closing || (usize::from(w.last_dir) == dir && w.last_index == class::RST) {
                // A SYN reopening a closed or aborted connection: the old entry goes and the
                // packet starts a new one (kernel: -NF_REPEAT).
                self.remove(&key);
                return self.open_tcp(tuple, &seg, index, now_ns);
            }
            next = Next::Ignore;
        }
        let mut skip_window = false;
        match next {
            Next::Ignore => {
                let resync = index == class::SYNACK
                    && w.last_index == class::SYN
                    && usize::from(w.last_dir) != dir
                    && seg.ack == w.last_end;
                if resync {
                    // This SYN-ACK answers a SYN we ignored: client and server are in sync
                    // and we were not; take the SYN's annotated values.
                    old = Some(SynSent);
                    next = Next::To(SynRecv);
                    let ld = usize::from(w.last_dir);
                    w.sides[ld].end = w.last_end;
                    w.sides[ld].max_end = w.last_end;
                    w.sides[ld].max_win = u32::from(w.last_win).max(1);
                    w.sides[ld].scale = w.last_wscale;
                    w.last_flags &= !side_flags::EXP_CHALLENGE_ACK;
                    w.sides[ld].flags = w.last_flags;
                    let keep = w.sides[dir].flags & side_flags::BE_LIBERAL;
                    w.sides[dir] = tcp_window::Side {
                        flags: keep,
                        ..Default::default()
                    };
                } else {
                    w.last_index = index;
                    w.last_dir = dir as u8;
                    w.last_seq = seg.seq;
                    w.last_end = seg.end;
                    w.last_win = seg.window;
                    if index == class::SYN && dir == 0 {
                        // Note the SYN's options, for a SYN-ACK that may answer it.
                        let mut side = tcp_window::Side::default();
                        tcp_window::take_options(&mut side, &seg);
                        w.last_flags =
                            side.flags & (side_flags::WINDOW_SCALE | side_flags::SACK_PERM);
                        w.last_wscale = side.scale;
                        if old == Some(LastAck) {
                            w.last_flags |= side_flags::EXP_CHALLENGE_ACK;
                        }
                    }
                    if old == Some(SynSent) && index == class::ACK && dir == 1 {
                        // Possibly a challenge ACK answering the SYN.
                        w.last_ack = seg.ack;
                    }
                    // A passed reply counts as seen, as for every accepted packet.
                    e.seen_reply |= reply;
                    self.map.insert(key, e);
                    return passed(shown, reply, key);
                }
            }
            Next::Invalid => {
                return Tracked::invalid("invalid TCP state transition", Some(key));
            }
            Next::To(TimeWait)
                if old == Some(LastAck)
                    && index == class::ACK
                    && usize::from(w.last_dir) != dir
                    && w.last_index == class::SYN
                    && w.last_flags & side_flags::EXP_CHALLENGE_ACK != 0 =>
            {
                // An RFC 5961 challenge ACK, not the last ACK of the close.
                w.last_flags &= !side_flags::EXP_CHALLENGE_ACK;
                e.seen_reply |= reply;
                self.map.insert(key, e);
                return passed(shown, reply, key);
            }
            Next::To(SynSent2) => w.last_flags |= side_flags::SIMULTANEOUS_OPEN,
            Next::To(SynRecv)
                if dir == 1
                    && index == class::ACK
                    && w.last_flags & side_flags::SIMULTANEOUS_OPEN != 0 =>
            {
                next = Next::To(Established);
            }
            Next::To(Close) if index == class::RST => {
                if matches!(
                    stored,
                    Some(FinWait) | Some(LastAck) | Some(TimeWait) | Some(Close) | Some(CloseWait)
                ) {
                    // Closing: the tuple may be reused already; no validation.
                    skip_window = true;
                } else {
                    let established = stored == Some(Established) && e.assured;
                    let peer_max_ack = w.sides[1 - dir].max_ack;
                    let mut checked = false;
                    if w.sides[1 - dir].flags & side_flags::MAXACK_SET != 0
                        && w.last_index != class::SYN
                    {
                        checked = true;
                        if seg.seq == 0 && !established {
                            // Likely answering a SYN let through: to the window check.
                        } else if tcp_window::before(seg.seq, peer_max_ack) {
                            return Tracked::invalid("TCP RST before the peer's ACK", Some(key));
                        } else if !established
                            || seg.seq == peer_max_ack
                            || (w.last_index == class::ACK
                                && usize::from(w.last_dir) == dir
                                && seg.seq == w.last_end)
                        {
                            // An exact RST, or the end of a segment train.
                        } else {
                            // Not exact: keep the state for a possible challenge ACK.
                            next = Next::To(stored.unwrap_or(Close));
                            checked = false;
                        }
                    }
                    if !checked {
                        let answers_ignored = ((e.seen_reply && w.last_index == class::SYN)
                            || (!e.assured && w.last_index == class::ACK))
                            && seg.ack == w.last_end;
                        let answers_challenge = old == Some(SynSent)
                            && w.last_index == class::ACK
                            && w.last_dir == 1
                            && seg.seq == w.last_ack;
                        // RST to a SYN or ACK let through while out of sync: no window check.
                        skip_window = answers_ignored || answers_challenge;
                    }
                }
            }
            _ => {}
        }
        let Next::To(new) = next else {
            return Tracked::invalid("invalid TCP state transition", Some(key));
        };
        if !skip_window {
            let phase = match stored {
                Some(SynSent) => Phase::SynSent,
                Some(SynRecv) => Phase::SynRecv,
                _ => Phase::Other,
            };
            match tcp_window::check(w, dir, index, &seg, phase, self.be_liberal) {
                Verdict::Accept => {}
                Verdict::Ignore => {
                    e.seen_reply |= reply;
                    self.map.insert(key, e);
                    return passed(shown, reply, key);
                }
                Verdict::Invalid(why) => {
                    Self::invalid_fin_or_rst(&mut e, dir, index, now_ns);
                    self.map.insert(key, e);
                    return Tracked::invalid(why, Some(key));
                }
            }
        }
        self.settle_tcp(key, e, reply, index, old, new, now_ns);
        passed(shown, reply, key)
    }

    /// After an accepted segment: the new state, its timeout (shortened while data is
    /// unacknowledged, after retransmissions, a zero window or a RST), and the kernel's
    /// "a RST before any reply deletes the connection".
    #[allow(clippy::too_many_arguments)] // Why: the state change's inputs, each used once.
    fn settle_tcp(
        &mut self,
        key: Tuple,
        mut e: Entry,
        reply: bool,
        index: u8,
        old: Option<TcpState>,
        new: TcpState,
        now_ns: u64,
    ) {
        let dir = usize::from(reply);
        let w = &mut e.window;
        w.last_index = index;
        w.last_dir = dir as u8;
        e.tcp = Some(new);
        if old != Some(new) && new == FinWait {
            w.sides[dir].flags |= side_flags::CLOSE_INIT;
        }
        let mut timeout_s = tcp_timeout_after(w, index, new);
        if !e.seen_reply {
            if index == class::RST {
                // "If only reply is a RST ... delete the conntrack immediately" (the RST
                // itself passes).
                self.remove(&key);
                return;
            }
            if reply {
                e.seen_reply = true;
            }
            if index == class::SYN && old == Some(SynSent) {
                // A retransmitted SYN does not renew the timeout.
                self.map.insert(key, e);
                return;
            }
            if new == Established {
                // Picked up mid-stream and not answered yet.
                timeout_s = timeout_s.min(timeouts::TCP_UNACK);
            }
        } else if !e.assured
            && matches!(old, Some(SynRecv) | Some(Established))
            && new == Established
        {
            e.assured = true;
        }
        e.expires_ns = now_ns + timeout_s * S;
        self.map.insert(key, e);
    }

    /// An out-of-window FIN or RST answering the peer's FIN or RST on an assured connection
    /// shortens its timeout to 300 s (so dead connections do not stay 5 days).
    fn invalid_fin_or_rst(e: &mut Entry, dir: usize, index: u8, now_ns: u64) {
        if !e.assured || !matches!(index, class::FIN | class::RST) {
            return;
        }
        let w = &mut e.window;
        if usize::from(w.last_dir) != dir && matches!(w.last_index, class::FIN | class::RST) {
            let left_ns = e.expires_ns.saturating_sub(now_ns);
            if left_ns > timeouts::TCP_UNACK * S {
                e.expires_ns = now_ns + timeouts::TCP_UNACK * S;
            }
        } else {
            w.last_index = index;
            w.last_dir = dir as u8;
        }
    }

    /// The first segment of a connection: a SYN opens one, a segment picked up mid-stream
    /// (ACK) too, with liberal windows; anything else is invalid.
    fn open_tcp(&mut self, tuple: Tuple, seg: &Segment, index: u8, now_ns: u64) -> Tracked {
        let pickup = match TCP[0][usize::from(index)][0] {
            Next::To(SynSent) => false,
            Next::To(Established) => true,
            _ => return Tracked::invalid("TCP packet cannot start a connection", Some(tuple)),
        };
        let mut e = Entry::new(None, tcp_window::open(seg, pickup), 0);
        let new = if pickup { Established } else { SynSent };
        let v = tcp_window::check(&mut e.window, 0, index, seg, Phase::Other, self.be_liberal);
        if v != Verdict::Accept {
            return Tracked::invalid("TCP first segment out of window", Some(tuple));
        }
        // As `settle_tcp` for a first packet (no reply yet, never a RST here).
        e.window.last_index = index;
        e.window.last_dir = 0;
        e.tcp = Some(new);
        let mut timeout_s = tcp_timeout_after(&e.window, index, new);
        if new == Established {
            timeout_s = timeout_s.min(timeouts::TCP_UNACK);
        }
        e.expires_ns = now_ns + timeout_s * S;
        let mut t = self.propose(tuple, Some(new), timeout_s, now_ns);
        if let Some((_, pending)) = t.pending.as_mut() {
            *pending = e;
        }
        t
    }

    fn simple(&mut self, tuple: Tuple, unreplied_s: u64, replied_s: u64, now_ns: u64) -> Tracked {
        match self.find(tuple, now_ns) {
            Some((key, reply)) => {
                let seen = reply || self.map.get(&key).is_some_and(|e| e.seen_reply);
                self.refresh(
                    key,
                    reply,
                    if seen { replied_s } else { unreplied_s },
                    now_ns,
                )
            }
            None => self.propose(tuple, None, unreplied_s, now_ns),
        }
    }

    fn refresh(&mut self, key: Tuple, reply: bool, timeout_s: u64, now_ns: u64) -> Tracked {
        let mut state = CtState::New;
        if let Some(e) = self.map.get_mut(&key) {
            state = Self::established_or_new(e, reply);
            e.seen_reply |= reply;
            e.expires_ns = now_ns + timeout_s * S;
        }
        Tracked::seen(state, reply, Some(key))
    }

    fn propose(&self, tuple: Tuple, tcp: Option<TcpState>, timeout_s: u64, now_ns: u64) -> Tracked {
        Tracked {
            state: CtState::New,
            reply: false,
            tuple: Some(tuple),
            pending: Some((
                tuple,
                Entry::new(tcp, tcp_window::Window::default(), now_ns + timeout_s * S),
            )),
            invalid_reason: None,
            has_entry: false,
            packet_index: 0,
            app: AppConnState::Inspecting,
            app_label: None,
            app_inspected: 0,
        }
    }

    /// Keep the proposed connection if the packet was accepted.
    pub fn confirm(&mut self, tracked: &Tracked, accepted: bool) {
        let Some((key, entry)) = tracked.pending else {
            return;
        };
        if !accepted {
            return;
        }
        if self.map.len() < self.max_entries {
            // One hash: insert unless present.
            if self.map.insert_new(key, entry) {
                self.stats.inserted += 1;
            }
            return;
        }
        if self.map.contains_key(&key) {
            return;
        }
        {
            // Early drop: an unreplied connection among the first few looked at.
            let victim = self
                .map
                .iter()
                .take(EVICTION_SCAN)
                .find(|(_, e)| !e.seen_reply)
                .map(|(k, _)| k);
            match victim {
                Some(v) => {
                    self.remove(&v);
                    self.stats.evicted += 1;
                }
                None => {
                    self.stats.table_full += 1;
                    return;
                }
            }
        }
        self.map.insert(key, entry);
        self.stats.inserted += 1;
    }

    /// Remove every entry that expired at `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        let dead: Vec<Tuple> = self
            .map
            .iter()
            .filter(|(_, e)| e.expires_ns <= now_ns)
            .map(|(k, _)| k)
            .collect();
        for k in dead {
            self.remove(&k);
            self.stats.expired += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Tcp, Udp};
    use tcp_flags::*;

    fn ip(src: &str, dst: &str, l4: Transport<'static>) -> Ip<'static> {
        Ip {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: match l4 {
                Transport::Tcp(_) => 6,
                Transport::Udp(_) => 17,
                _ => 1,
            },
            ttl: 64,
            len: 60,
            frag: None,
            has_options: false,
            ext_headers: 0,
            l4,
        }
    }

    fn tcp(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> Ip<'static> {
        ip(
            src,
            dst,
            Transport::Tcp(Tcp {
                src: sp,
                dst: dp,
                seq: 0,
                ack: 0,
                flags,
                window: 0,
                mss: None,
                wscale: None,
                sack_permitted: false,
                has_options: false,
                sack_edges: [0; crate::decode::MAX_SACK_BLOCKS],
                sack_blocks: 0,
                data_len: 0,
                payload: &[],
            }),
        )
    }

    const A: &str = "192.0.2.5";
    const B: &str = "203.0.113.7";

    fn icmp(src: &str, dst: &str, icmp_type: u8, id: u16) -> Ip<'static> {
        let v6 = src.contains(':');
        let mut p = ip(
            src,
            dst,
            Transport::Icmp(crate::decode::Icmp {
                v6,
                icmp_type,
                code: 0,
                id: Some(id),
                inner: None,
                rest: &[],
            }),
        );
        p.protocol = if v6 { 58 } else { 1 };
        p
    }

    #[test]
    fn a_rst_before_any_reply_deletes_the_connection() {
        // Refused: the server's RST is the only reply. It passes, and the entry is gone, so
        // what follows from the server cannot start a connection (nf_conntrack_tcp: "If only
        // reply is a RST ... delete the conntrack immediately").
        let mut ct = Conntrack::default();
        let syn = ct.track(&tcp(A, 1000, B, 80, SYN), 0);
        ct.confirm(&syn, true);
        let rst = ct.track(&tcp(B, 80, A, 1000, RST | ACK), 1);
        assert_eq!((rst.state, rst.reply), (CtState::Established, true));
        assert!(ct.is_empty());
        assert_eq!(
            ct.track(&tcp(B, 80, A, 1000, FIN | ACK), 2).state,
            CtState::Invalid
        );
        // The client aborting before any reply: the same.
        let syn = ct.track(&tcp(A, 1001, B, 80, SYN), 3);
        ct.confirm(&syn, true);
        assert_eq!(ct.track(&tcp(A, 1001, B, 80, RST), 4).state, CtState::New);
        assert!(ct.is_empty());
        // After a reply, a RST closes the connection and keeps it 10 s.
        let syn = ct.track(&tcp(A, 1002, B, 80, SYN), 5);
        ct.confirm(&syn, true);
        ct.track(&tcp(B, 80, A, 1002, SYN | ACK), 6);
        let rst = ct.track(&tcp(A, 1002, B, 80, RST), 7);
        assert_eq!(rst.state, CtState::Established);
        assert_eq!(ct.len(), 1);
        ct.expire(7 + timeouts::TCP_CLOSE * S - 1);
        assert_eq!(ct.len(), 1);
        ct.expire(7 + timeouts::TCP_CLOSE * S);
        assert!(ct.is_empty());
    }

    #[test]
    fn unanswered_connections_keep_short_timeouts() {
        // A mid-stream pickup (loose ACK) lives 300 s until a reply, not 5 days.
        let mut ct = Conntrack::default();
        let ack = ct.track(&tcp(A, 2000, B, 80, ACK), 0);
        ct.confirm(&ack, true);
        ct.track(&tcp(A, 2000, B, 80, ACK), 10 * S);
        ct.expire(10 * S + timeouts::TCP_UNACK * S);
        assert!(ct.is_empty(), "unanswered pickup expires after 300 s");
        let open = |ct: &mut Conntrack, port: u16, window: u16| {
            let with = |mut p: Ip<'static>| {
                if let Transport::Tcp(t) = &mut p.l4 {
                    t.window = window;
                }
                p
            };
            let ack = ct.track(&with(tcp(A, port, B, 80, ACK)), 0);
            ct.confirm(&ack, true);
            ct.track(&with(tcp(B, 80, A, port, ACK)), S);
            ct.track(&with(tcp(A, port, B, 80, ACK)), 2 * S);
        };
        open(&mut ct, 2001, 65_535);
        ct.expire(2 * S + timeouts::TCP_UNACK * S);
        assert_eq!(ct.len(), 1, "answered: the established timeout");
        // The same with a zero window: the retransmission timeout (300 s), as the kernel.
        let mut ct = Conntrack::default();
        open(&mut ct, 2002, 0);
        ct.expire(2 * S + timeouts::TCP_RETRANS * S);
        assert!(ct.is_empty(), "zero window: 300 s");
        // A retransmitted SYN does not renew the SYN_SENT timeout.
        let mut ct = Conntrack::default();
        let syn = ct.track(&tcp(A, 3000, B, 80, SYN), 0);
        ct.confirm(&syn, true);
        ct.track(&tcp(A, 3000, B, 80, SYN), 100 * S);
        ct.expire(timeouts::TCP_SYN_SENT * S);
        assert!(ct.is_empty(), "expires 120 s after the first SYN");
    }

    /// A TCP segment with real sequence numbers: `len` data bytes, window 65,535.
    #[allow(clippy::too_many_arguments)] // Why: a segment's header fields, each named.
    fn segment(
        src: &str,
        sp: u16,
        dst: &str,
        dp: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        len: u32,
    ) -> Ip<'static> {
        let mut p = tcp(src, sp, dst, dp, flags);
        if let Transport::Tcp(t) = &mut p.l4 {
            t.seq = seq;
            t.ack = ack;
            t.window = 65_535;
            t.data_len = len;
        }
        p
    }

    #[test]
    fn segments_outside_the_window_are_invalid_unless_liberal() {
        for liberal in [false, true] {
            let mut ct = Conntrack::default();
            ct.set_tcp_be_liberal(liberal);
            let syn = ct.track(&segment(A, 1000, B, 80, SYN, 100, 0, 0), 0);
            ct.confirm(&syn, true);
            let synack = ct.track(&segment(B, 80, A, 1000, SYN | ACK, 9000, 101, 0), 1);
            assert_eq!(synack.state, CtState::Established);
            let ack = ct.track(&segment(A, 1000, B, 80, ACK, 101, 9001, 0), 2);
            assert_eq!(ack.state, CtState::Established);
            let data = ct.track(&segment(A, 1000, B, 80, ACK, 101, 9001, 1_000), 3);
            assert_eq!(data.state, CtState::Established, "in window");
            // Far beyond what the server's window allows (a gap in the capture, or a blind
            // injection).
            let ahead = ct.track(&segment(A, 1000, B, 80, ACK, 5_000_000, 9001, 100), 4);
            // Acknowledging data the client never sent.
            let bogus_ack = ct.track(&segment(B, 80, A, 1000, ACK, 9001, 900_000, 0), 5);
            if liberal {
                assert_eq!(ahead.state, CtState::Established);
                assert_eq!(bogus_ack.state, CtState::Established);
            } else {
                assert_eq!(
                    (ahead.state, ahead.invalid_reason),
                    (
                        CtState::Invalid,
                        Some("TCP sequence over the receiver's window")
                    )
                );
                assert_eq!(
                    (bogus_ack.state, bogus_ack.invalid_reason),
                    (CtState::Invalid, Some("TCP ACK of data not seen yet"))
                );
            }
            // The connection itself goes on.
            let reply = ct.track(&segment(B, 80, A, 1000, ACK, 9001, 1101, 500), 6);
            assert_eq!(reply.state, CtState::Established, "liberal={liberal}");
        }
    }

    #[test]
    fn legitimate_conversations_never_leave_the_window() {
        // Generated well-behaved TCP conversations (random initial sequence numbers, some
        // right below 2^32 so they wrap; window scaling offered by both, one or neither; bursts
        // of data both ways up to the advertised windows; retransmissions; SACK offered): no
        // segment may be invalid, and the close must end in TIME_WAIT. (Segments the window
        // check only ignores pass too, as in the kernel; sequence comparisons that do not wrap
        // fail this test at once.)
        use crate::classbench::SplitMix64;

        /// One conversation between A:40000 and B:80, direction 0 = A's segments.
        struct Talk {
            ct: Conntrack,
            rng: SplitMix64,
            seed: u64,
            scales: [Option<u8>; 2],
            /// The window (bytes) each direction last advertised.
            window: [u32; 2],
            now_ns: u64,
        }

        impl Talk {
            fn send(&mut self, d: usize, flags: u8, seq: u32, ack: u32, len: u32) {
                let ends = [(A, 40_000u16), (B, 80u16)];
                let scaled = self.scales.iter().all(Option::is_some);
                let syn = flags & SYN != 0;
                // A window of 1 KiB up to what the scale allows.
                let shift = if scaled && !syn {
                    self.scales[d].unwrap_or(0)
                } else {
                    0
                };
                let field = self.rng.range(1_024 >> shift.min(10), 65_535) as u16;
                self.window[d] = u32::from(field) << shift;
                let (src, dst) = (ends[d], ends[1 - d]);
                let mut p = segment(src.0, src.1, dst.0, dst.1, flags, seq, ack, len);
                if let Transport::Tcp(tcp) = &mut p.l4 {
                    tcp.window = field;
                    if syn {
                        tcp.has_options = true;
                        tcp.wscale = self.scales[d];
                        tcp.sack_permitted = true;
                    }
                }
                self.now_ns += 1_000_000;
                let tracked = self.ct.track(&p, self.now_ns);
                assert_ne!(
                    tracked.state,
                    CtState::Invalid,
                    "seed {}: {:?} from {} seq {seq} ack {ack} len {len}",
                    self.seed,
                    tracked.invalid_reason,
                    src.0
                );
                self.ct.confirm(&tracked, true);
            }
        }

        for seed in 0..300u64 {
            let mut rng = SplitMix64::new(seed);
            let mut isn = || {
                if rng.range(0, 2) == 0 {
                    u32::MAX - rng.range(0, 3_000) as u32
                } else {
                    rng.next_u64() as u32
                }
            };
            // next[d]: the next sequence number direction d sends.
            let mut next = [isn(), isn()];
            let offer =
                |rng: &mut SplitMix64| (rng.range(0, 2) > 0).then(|| rng.range(0, 14) as u8);
            let scales = [offer(&mut rng), offer(&mut rng)];
            let mut talk = Talk {
                ct: Conntrack::default(),
                rng,
                seed,
                scales,
                window: [0; 2],
                now_ns: 0,
            };
            talk.send(0, SYN, next[0], 0, 0);
            next[0] = next[0].wrapping_add(1);
            talk.send(1, SYN | ACK, next[1], next[0], 0);
            next[1] = next[1].wrapping_add(1);
            talk.send(0, ACK, next[0], next[1], 0);
            let mut last = [(next[0], 0u32), (next[1], 0u32)];
            for _ in 0..talk.rng.range(10, 60) {
                let d = talk.rng.range(0, 1) as usize;
                let ack = next[1 - d];
                if talk.rng.range(0, 9) == 0 {
                    // Retransmit the last segment this side sent.
                    let (seq, len) = last[d];
                    talk.send(d, ACK | PSH, seq, ack, len);
                    continue;
                }
                // A burst of up to 40 segments, filling up to the window the peer last
                // advertised (its scale applied), before the peer acknowledges them all.
                let mut room = talk.window[1 - d];
                for _ in 0..talk.rng.range(1, 40) {
                    let len = talk.rng.range(0, u64::from(room.min(1_460))) as u32;
                    talk.send(d, ACK | PSH, next[d], ack, len);
                    last[d] = (next[d], len);
                    next[d] = next[d].wrapping_add(len);
                    room -= len;
                }
                talk.send(1 - d, ACK, next[1 - d], next[d], 0);
            }
            // Close: A's FIN, B's ACK and FIN, A's ACK.
            talk.send(0, FIN | ACK, next[0], next[1], 0);
            next[0] = next[0].wrapping_add(1);
            talk.send(1, ACK, next[1], next[0], 0);
            talk.send(1, FIN | ACK, next[1], next[0], 0);
            next[1] = next[1].wrapping_add(1);
            talk.send(0, ACK, next[0], next[1], 0);
            let key = Tuple {
                src: A.parse().unwrap(),
                dst: B.parse().unwrap(),
                proto: 6,
                sport: 40_000,
                dport: 80,
            };
            assert_eq!(
                talk.ct.map.get(&key).unwrap().tcp,
                Some(TimeWait),
                "seed {seed}"
            );
        }
    }

    #[test]
    fn a_syn_ack_answering_an_ignored_syn_resynchronises() {
        // Conntrack holds an established connection; client and server start over on the
        // same ports. The new SYN is ignored (passes, no state change); the SYN-ACK that
        // acknowledges it puts conntrack back in sync (SYN_RECV), and the handshake goes on.
        let mut ct = Conntrack::default();
        let syn = ct.track(&segment(A, 1000, B, 80, SYN, 100, 0, 0), 0);
        ct.confirm(&syn, true);
        ct.track(&segment(B, 80, A, 1000, SYN | ACK, 9000, 101, 0), 1);
        ct.track(&segment(A, 1000, B, 80, ACK, 101, 9001, 0), 2);
        let again = ct.track(&segment(A, 1000, B, 80, SYN, 777_000, 0, 0), 3);
        assert_eq!(again.state, CtState::Established, "ignored: passes");
        let synack = ct.track(&segment(B, 80, A, 1000, SYN | ACK, 50_000, 777_001, 0), 4);
        assert_eq!(synack.state, CtState::Established);
        let ack = ct.track(&segment(A, 1000, B, 80, ACK, 777_001, 50_001, 0), 5);
        assert_eq!(ack.state, CtState::Established);
        let data = ct.track(&segment(A, 1000, B, 80, ACK, 777_001, 50_001, 300), 6);
        assert_eq!(
            data.state,
            CtState::Established,
            "the new numbers are in window"
        );
    }

    #[test]
    fn echo_replies_belong_to_their_requests() {
        for (a, b, req, rep) in [(A, B, 8, 0), ("2001:db8::5", "2001:db8:1::7", 128, 129)] {
            let mut ct = Conntrack::default();
            let request = ct.track(&icmp(a, b, req, 7), 0);
            assert_eq!(request.state, CtState::New);
            ct.confirm(&request, true);
            let reply = ct.track(&icmp(b, a, rep, 7), 1);
            assert_eq!(
                (reply.state, reply.reply),
                (CtState::Established, true),
                "{a}"
            );
            let again = ct.track(&icmp(a, b, req, 7), 2);
            assert_eq!(again.state, CtState::Established, "{a}: next request");
            let other = ct.track(&icmp(b, a, rep, 8), 3);
            assert_eq!(other.state, CtState::Invalid, "{a}: another identifier");
        }
    }

    fn conns(ct: &Conntrack, src: &str, rule: u32) -> u32 {
        ct.rule_conns(src.parse().unwrap(), None, rule).others
    }

    #[test]
    fn conn_limit_sets_count_accepted_connections_per_rule_until_they_end() {
        let mut ct = Conntrack::default();
        let a: IpAddr = A.parse().unwrap();
        let syn = ct.track(&tcp(A, 1000, B, 80, SYN), 0);
        let t = syn.tuple.unwrap();
        ct.count_conn_limits(t, a, &[7]);
        assert_eq!(
            conns(&ct, A, 7),
            0,
            "an unconfirmed connection is not counted"
        );
        ct.confirm(&syn, true);
        ct.count_conn_limits(t, a, &[7, 9]);
        ct.count_conn_limits(t, a, &[7]);
        assert_eq!(conns(&ct, A, 7), 1, "counted once per rule");
        assert_eq!(conns(&ct, A, 9), 1);
        assert_eq!(
            conns(&ct, A, 8),
            0,
            "a rule it did not reach does not count it"
        );
        assert_eq!(
            ct.rule_conns(a, Some(t), 7).others,
            0,
            "its own packets see the others"
        );
        // The reply direction's source (the server) has an element of its own.
        let b: IpAddr = B.parse().unwrap();
        ct.count_conn_limits(t, b, &[7]);
        assert_eq!((conns(&ct, B, 7), conns(&ct, A, 7)), (1, 1));
        // Gone from the table: gone from every set.
        ct.expire(timeouts::TCP_SYN_SENT * S + 1);
        assert!(ct.is_empty());
        assert_eq!(
            (conns(&ct, A, 7), conns(&ct, A, 9), conns(&ct, B, 7)),
            (0, 0, 0)
        );
        assert!(ct.limits.by_conn.is_empty() && ct.limits.by_src.is_empty());
        assert!(ct.limits.sources.values().all(|&n| n == 0));

        // Closed (TIME_WAIT): no longer counted, though conntrack keeps it for 120 s.
        let syn = ct.track(&tcp(A, 1001, B, 80, SYN), 0);
        ct.confirm(&syn, true);
        ct.count_conn_limits(syn.tuple.unwrap(), a, &[7]);
        ct.track(&tcp(B, 80, A, 1001, SYN | ACK), 1);
        ct.track(&tcp(A, 1001, B, 80, ACK), 2);
        ct.track(&tcp(A, 1001, B, 80, FIN | ACK), 3);
        assert_eq!(conns(&ct, A, 7), 1, "FIN_WAIT still counts");
        ct.track(&tcp(B, 80, A, 1001, FIN | ACK), 4);
        ct.track(&tcp(A, 1001, B, 80, ACK), 5);
        assert_eq!(ct.len(), 1);
        assert_eq!(conns(&ct, A, 7), 0, "TIME_WAIT does not count");
        ct.count_conn_limits(syn.tuple.unwrap(), a, &[7]);
        assert_eq!(
            conns(&ct, A, 7),
            0,
            "nor can a closed connection be counted again"
        );
    }

    #[test]
    fn a_full_conn_limit_set_takes_no_new_source_until_one_leaves() {
        let mut ct = Conntrack::new(MAX_METER_ENTRIES + 8);
        let src = |i: usize| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
        let mut tuples = Vec::new();
        for i in 0..=MAX_METER_ENTRIES {
            let syn = ct.track(&tcp(&src(i), 1000, B, 80, SYN), 0);
            ct.confirm(&syn, true);
            let t = syn.tuple.unwrap();
            ct.count_conn_limits(t, t.src, &[3]);
            tuples.push(t);
        }
        let last = src(MAX_METER_ENTRIES);
        let view = ct.rule_conns(last.parse().unwrap(), None, 3);
        assert_eq!(
            (view.others, view.untrackable),
            (0, true),
            "not counted: set full"
        );
        assert!(!ct.rule_conns(src(0).parse().unwrap(), None, 3).untrackable);
        assert_eq!(conns(&ct, &src(0), 3), 1);
        assert!(
            !ct.rule_conns(last.parse().unwrap(), None, 4).untrackable,
            "another rule's set has room"
        );
        let v6 = ct.rule_conns("2001:db8::1".parse().unwrap(), None, 3);
        assert!(!v6.untrackable, "the IPv6 set is another set");
        // One source leaves: the next new source is counted.
        ct.remove(&tuples[0]);
        assert!(!ct.rule_conns(last.parse().unwrap(), None, 3).untrackable);
        let t = tuples[MAX_METER_ENTRIES];
        ct.count_conn_limits(t, t.src, &[3]);
        assert_eq!(conns(&ct, &last, 3), 1);
        assert!(ct.rule_conns(src(0).parse().unwrap(), None, 3).untrackable);
    }

    #[test]
    fn tcp_handshake_and_teardown() {
        let mut ct = Conntrack::default();
        let syn = ct.track(&tcp(A, 1000, B, 80, SYN), 0);
        assert_eq!(syn.state, CtState::New);
        ct.confirm(&syn, true);
        let again = ct.track(&tcp(A, 1000, B, 80, SYN), 1);
        assert_eq!(again.state, CtState::New, "retransmitted SYN is still new");
        let synack = ct.track(&tcp(B, 80, A, 1000, SYN | ACK), 2);
        assert_eq!((synack.state, synack.reply), (CtState::Established, true));
        let ack = ct.track(&tcp(A, 1000, B, 80, ACK), 3);
        assert_eq!(ack.state, CtState::Established);
        let fin = ct.track(&tcp(A, 1000, B, 80, FIN | ACK), 4);
        assert_eq!(fin.state, CtState::Established);
        assert_eq!(ct.len(), 1);
    }

    #[test]
    fn dropped_syn_creates_no_entry_and_synack_alone_is_invalid() {
        let mut ct = Conntrack::default();
        let syn = ct.track(&tcp(A, 1000, B, 80, SYN), 0);
        ct.confirm(&syn, false);
        assert!(ct.is_empty());
        let synack = ct.track(&tcp(B, 80, A, 1000, SYN | ACK), 1);
        assert_eq!(synack.state, CtState::Invalid);
        // Mid-stream ACK is picked up as new (nf_conntrack_tcp_loose=1).
        assert_eq!(ct.track(&tcp(A, 1001, B, 80, ACK), 2).state, CtState::New);
    }

    #[test]
    fn invalid_flags_and_transitions() {
        let mut ct = Conntrack::default();
        assert_eq!(
            ct.track(&tcp(A, 1, B, 2, SYN | FIN), 0).state,
            CtState::Invalid
        );
        assert_eq!(ct.track(&tcp(A, 1, B, 2, 0), 0).state, CtState::Invalid);
        assert_eq!(
            ct.track(&tcp(A, 1, B, 2, FIN | PSH | URG), 0).state,
            CtState::Invalid
        );
        let syn = ct.track(&tcp(A, 1, B, 2, SYN), 0);
        ct.confirm(&syn, true);
        // ACK from the originator while only SYN_SENT: invalid transition.
        assert_eq!(ct.track(&tcp(A, 1, B, 2, ACK), 1).state, CtState::Invalid);
    }

    #[test]
    fn timeouts_expire_entries() {
        let mut ct = Conntrack::default();
        let u = |s, sp, d, dp| {
            ip(
                s,
                d,
                Transport::Udp(Udp {
                    src: sp,
                    dst: dp,
                    payload: &[],
                }),
            )
        };
        let q = ct.track(&u(A, 5000, B, 53), 0);
        ct.confirm(&q, true);
        assert_eq!(ct.track(&u(B, 53, A, 5000), S).state, CtState::Established);
        // Replied UDP lives 120 s; after that the next packet is new again.
        assert_eq!(
            ct.track(&u(A, 5000, B, 53), 100 * S).state,
            CtState::Established
        );
        assert_eq!(ct.track(&u(A, 5000, B, 53), 221 * S).state, CtState::New);
    }

    #[test]
    fn bounded_table_evicts_unreplied() {
        let mut ct = Conntrack::new(4);
        for p in 0..10u16 {
            let t = ct.track(&tcp(A, 1000 + p, B, 80, SYN), 0);
            ct.confirm(&t, true);
        }
        assert_eq!(ct.len(), 4);
        assert_eq!(ct.stats().evicted, 6);
    }

    fn entry(expires_ns: u64) -> Entry {
        Entry::new(None, tcp_window::Window::default(), expires_ns)
    }

    /// Tuples that exercise the canonical order: both families, ICMP (whose reverse keeps its
    /// identifier), equal addresses with different ports, and a tuple that is its own reverse.
    fn tuples() -> Vec<Tuple> {
        let t = |src: &str, sport, dst: &str, dport, proto| Tuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport,
            dport,
        };
        vec![
            t(A, 40000, B, 443, 6),
            t(B, 443, A, 40000, 6),
            t(A, 53, B, 53, 17),
            t(A, 7, B, 0, 1),
            t(B, 7, A, 0, 1),
            t(A, 1000, A, 2000, 17),
            t(A, 2000, A, 1000, 17),
            t(A, 5000, A, 5000, 17),
            t("2001:db8::1", 80, "2001:db8::2", 1024, 6),
            t("2001:db8::2", 1024, "2001:db8::1", 80, 6),
            t("2001:db8::1", 9, "2001:db8::2", 0, 58),
        ]
    }

    #[test]
    fn one_key_finds_a_connection_from_either_direction() {
        for original in tuples() {
            let mut table = Table::default();
            table.insert(original, entry(7));
            let reverse = original.reversed();
            assert_eq!(table.len(), 1);
            let found = |table: &Table, t| {
                table
                    .find_either(t)
                    .map(|(o, reply, e)| (o, reply, e.expires_ns))
            };
            assert_eq!(
                found(&table, original),
                Some((original, false, 7)),
                "{original:?}"
            );
            let own_reverse = reverse == original;
            assert_eq!(
                found(&table, reverse),
                Some((original, !own_reverse, 7)),
                "{original:?}"
            );
            assert!(table.get(&original).is_some());
            // The accessors see the connection only under its original tuple.
            assert_eq!(table.get(&reverse).is_some(), own_reverse, "{original:?}");
            assert!(!table.insert_new(reverse, entry(9)), "{original:?}");
            assert_eq!(table.iter().map(|(t, _)| t).collect::<Vec<_>>(), [original]);
            if !own_reverse {
                assert!(table.remove(&reverse).is_none(), "{original:?}");
            }
            assert_eq!(table.remove(&original).map(|e| e.expires_ns), Some(7));
            assert!(
                table.is_empty()
                    && found(&table, original).is_none()
                    && found(&table, reverse).is_none()
            );
        }
    }

    proptest::proptest! {
        /// The table against a map keyed by original tuples, looked up in both orientations
        /// (what it replaces), under random inserts, removals and lookups.
        #[test]
        fn table_agrees_with_a_map_of_original_tuples(
            ops in proptest::collection::vec((0u8..4, 0usize..11, proptest::bool::ANY), 1..60)
        ) {
            let universe = tuples();
            let mut table = Table::default();
            let mut model: FastMap<Tuple, Entry> = FastMap::default();
            for (n, (op, i, flip)) in ops.into_iter().enumerate() {
                let t = if flip { universe[i].reversed() } else { universe[i] };
                let model_find = |m: &FastMap<Tuple, Entry>| {
                    [(t, false), (t.reversed(), true)]
                        .into_iter()
                        .find_map(|(k, reply)| m.get(&k).map(|e| (k, reply, e.expires_ns)))
                };
                match op {
                    0 => {
                        // New connections are only stored when neither orientation is held.
                        let free = !model.contains_key(&t) && !model.contains_key(&t.reversed());
                        proptest::prop_assert_eq!(table.insert_new(t, entry(n as u64)), free);
                        if free {
                            model.insert(t, entry(n as u64));
                        }
                    }
                    1 => proptest::prop_assert_eq!(
                        table.remove(&t).map(|e| e.expires_ns),
                        model.remove(&t).map(|e| e.expires_ns)
                    ),
                    2 => {
                        if model.contains_key(&t) {
                            table.insert(t, entry(1000 + n as u64));
                            model.insert(t, entry(1000 + n as u64));
                        }
                    }
                    _ => proptest::prop_assert_eq!(
                        table
                            .find_either(t)
                            .map(|(o, reply, e)| (o, reply, e.expires_ns)),
                        model_find(&model)
                    ),
                }
                proptest::prop_assert_eq!(table.len(), model.len());
                proptest::prop_assert_eq!(
                    table.get(&t).map(|e| e.expires_ns),
                    model.get(&t).map(|e| e.expires_ns)
                );
                let mut listed: Vec<(Tuple, u64)> =
                    table.iter().map(|(t, e)| (t, e.expires_ns)).collect();
                let mut expected: Vec<(Tuple, u64)> =
                    model.iter().map(|(t, e)| (*t, e.expires_ns)).collect();
                listed.sort_by_key(|(t, _)| (t.src, t.sport, t.dst, t.dport, t.proto));
                expected.sort_by_key(|(t, _)| (t.src, t.sport, t.dst, t.dport, t.proto));
                proptest::prop_assert_eq!(listed, expected);
            }
        }
    }
}
