//! The per-packet decisions that do not own state of their own: Dynamic ARP Inspection (the
//! userspace mirror of the kernel's DAI chain), ND inspection (its IPv6 analogue), arpwatch-style station tracking, the per-port
//! DHCP token bucket (mirror of the kernel's `limit rate over`), and event de-duplication.

use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::bindings::BindingTable;
use crate::bindings6::Bindings6;
use crate::config::{StaticEntry, StaticNd};
use crate::decode::{Arp, Mac};

/// Why DAI let an ARP packet through or dropped it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DaiVerdict {
    /// From a trusted port: not inspected.
    AllowTrusted,
    /// Sender IP 0.0.0.0: an RFC 5227 address probe, which claims nothing.
    AllowProbe,
    /// The pair is a static entry.
    AllowStatic,
    /// The pair is a live DHCP snooping binding on this port.
    AllowBinding,
    /// The Ethernet source and the ARP sender MAC differ (both must be bound).
    DropSourceMismatch,
    /// The sender IP is bound to another MAC or port.
    DropContradicts {
        /// The MAC the IP is bound to.
        bound_mac: Mac,
        /// The port it is bound on ("*" for a port-less static entry).
        bound_port: String,
    },
    /// Nothing binds the sender IP.
    DropUnbound,
}

impl DaiVerdict {
    /// True for the allow variants.
    pub fn allows(&self) -> bool {
        matches!(
            self,
            Self::AllowTrusted | Self::AllowProbe | Self::AllowStatic | Self::AllowBinding
        )
    }
}

fn static_allows(statics: &[StaticEntry], port: Option<&str>, mac: &Mac, ip: Ipv4Addr) -> bool {
    statics
        .iter()
        .any(|s| s.ip == ip && s.mac == *mac && s.port.as_deref() == port)
}

/// The DAI decision for `arp` carried in a frame from `eth_src` arriving on `port`. It is the
/// same test the kernel chain makes: both (Ethernet source, sender IP) and (ARP sender MAC,
/// sender IP) must be allowed by a static entry or by a live binding on this port.
pub fn dai(
    arp: &Arp,
    eth_src: Mac,
    port: &str,
    trusted: bool,
    bindings: &BindingTable,
    statics: &[StaticEntry],
    now_s: u64,
) -> DaiVerdict {
    if trusted {
        return DaiVerdict::AllowTrusted;
    }
    if arp.sender_ip.is_unspecified() {
        return DaiVerdict::AllowProbe;
    }
    let ip = arp.sender_ip;
    // The kernel has two sets: port-less static pairs, and per-port pairs (port-bound static
    // entries plus learned bindings). Both MACs must hit the same set.
    let portless = |m: &Mac| static_allows(statics, None, m, ip);
    let on_port =
        |m: &Mac| static_allows(statics, Some(port), m, ip) || bindings.allows(port, m, ip, now_s);
    if portless(&eth_src) && portless(&arp.sender_mac) {
        return DaiVerdict::AllowStatic;
    }
    if on_port(&eth_src) && on_port(&arp.sender_mac) {
        return if static_allows(statics, Some(port), &eth_src, ip) {
            DaiVerdict::AllowStatic
        } else {
            DaiVerdict::AllowBinding
        };
    }
    if eth_src != arp.sender_mac {
        return DaiVerdict::DropSourceMismatch;
    }
    if let Some(s) = statics.iter().find(|s| s.ip == ip) {
        return DaiVerdict::DropContradicts {
            bound_mac: s.mac,
            bound_port: s.port.clone().unwrap_or_else(|| "*".into()),
        };
    }
    if let Some(b) = bindings.of_ip(ip).filter(|b| b.expires_s > now_s) {
        return DaiVerdict::DropContradicts {
            bound_mac: b.mac,
            bound_port: b.port.clone(),
        };
    }
    DaiVerdict::DropUnbound
}

/// Which field of a neighbour discovery message claimed a bound address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NdField {
    /// The target of a neighbour advertisement.
    Target,
    /// The target of a duplicate address detection probe (NS from `::`): answering or
    /// probing for a bound address from elsewhere would make its owner give it up.
    DadTarget,
    /// The IPv6 source of a router/neighbour solicitation or neighbour advertisement.
    Source,
}

impl NdField {
    /// Name used in events.
    pub fn name(self) -> &'static str {
        match self {
            Self::Target => "target",
            Self::DadTarget => "dad_target",
            Self::Source => "source",
        }
    }
}

/// The ND inspection decision (the IPv6 analogue of DAI).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NdVerdict {
    /// Not ND, from a trusted port, or every claimed address is unbound or bound to this MAC
    /// on this port.
    Allow,
    /// A claimed address is bound to another MAC or port.
    Drop {
        /// The address claimed.
        ip: Ipv6Addr,
        /// Where the message claimed it.
        field: NdField,
        /// The MAC it is bound to.
        bound_mac: Mac,
        /// The port it is bound on ("*" for a port-less static entry).
        bound_port: String,
    },
}

/// ICMPv6 types of router solicitation, neighbour solicitation and advertisement.
const ND_RS: u8 = 133;
const ND_NS: u8 = 135;
const ND_NA: u8 = 136;

/// `Err((owner MAC, owner port))` when `ip` is bound (static entry or live DHCPv6 binding)
/// and (`mac`, `port`) is not one of its owners; `Ok` when unbound or owned. The kernel test:
/// `nd6_bound` hit, `nd6_owner` (port-bound) miss, `nd6_static` (port-less) miss.
pub fn nd_owner(
    ip: Ipv6Addr,
    mac: &Mac,
    port: &str,
    bindings: &Bindings6,
    statics: &[StaticNd],
    now_s: u64,
) -> Result<(), (Mac, String)> {
    let live = bindings.of_ip(ip, now_s);
    let owned = statics
        .iter()
        .any(|s| s.ip == ip && s.mac == *mac && s.port.as_deref().is_none_or(|p| p == port))
        || live.is_some_and(|b| b.mac == *mac && b.port == port);
    if owned {
        return Ok(());
    }
    if let Some(s) = statics.iter().find(|s| s.ip == ip) {
        return Err((s.mac, s.port.clone().unwrap_or_else(|| "*".into())));
    }
    match live {
        Some(b) => Err((b.mac, b.port.clone())),
        None => Ok(()),
    }
}

/// ND inspection for an ICMPv6 message of type `kind` (with `target` for NS/NA) from IPv6
/// source `src` in a frame from `eth_src` arriving on `port`: a neighbour advertisement's
/// target, a DAD probe's target and the source of RS/NS/NA must each be unbound or bound to
/// this MAC on this port. Link-local addresses are only bound by static entries (DHCPv6 does
/// not assign them), so unbound link-local claims pass.
#[allow(clippy::too_many_arguments)] // Why: the decoded fields of one frame, kept apart.
pub fn nd_inspect(
    kind: u8,
    target: Option<Ipv6Addr>,
    src: Ipv6Addr,
    eth_src: Mac,
    port: &str,
    trusted: bool,
    bindings: &Bindings6,
    statics: &[StaticNd],
    now_s: u64,
) -> NdVerdict {
    if trusted || !matches!(kind, ND_RS | ND_NS | ND_NA) {
        return NdVerdict::Allow;
    }
    let mut claims: Vec<(Ipv6Addr, NdField)> = Vec::with_capacity(2);
    match (kind, target) {
        (ND_NA, Some(t)) => claims.push((t, NdField::Target)),
        (ND_NS, Some(t)) if src.is_unspecified() => claims.push((t, NdField::DadTarget)),
        _ => {}
    }
    if !src.is_unspecified() {
        claims.push((src, NdField::Source));
    }
    for (ip, field) in claims {
        if let Err((bound_mac, bound_port)) = nd_owner(ip, &eth_src, port, bindings, statics, now_s)
        {
            return NdVerdict::Drop {
                ip,
                field,
                bound_mac,
                bound_port,
            };
        }
    }
    NdVerdict::Allow
}

/// What the station table noticed (arpwatch's report kinds).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum StationChange {
    /// First time this IP is seen.
    NewStation,
    /// The IP moved to a new MAC.
    ChangedAddress {
        /// The MAC it had.
        old: Mac,
    },
    /// The IP went back to the MAC it had before the last change, within the window.
    FlipFlop {
        /// The MAC it had just before.
        old: Mac,
    },
}

#[derive(Clone, Debug)]
struct Station {
    mac: Mac,
    previous: Option<Mac>,
    changed_s: u64,
    seen_s: u64,
}

/// Why: arpwatch reports a flip-flop when an address returns to its previous MAC; a change
/// back after ten minutes is more likely a replaced NIC or failover than a contest.
pub const FLIP_FLOP_WINDOW_S: u64 = 600;
/// Why: one /22 worth of stations; the least recently seen is forgotten first.
pub const MAX_STATIONS: usize = 1024;

/// IP → MAC history of the segment (arpwatch semantics).
#[derive(Clone, Debug, Default)]
pub struct Stations {
    by_ip: BTreeMap<Ipv4Addr, Station>,
}

impl Stations {
    /// Record that `ip` was claimed by `mac`; returns what changed, if anything reportable.
    pub fn observe(&mut self, ip: Ipv4Addr, mac: Mac, now_s: u64) -> Option<StationChange> {
        if ip.is_unspecified() || mac.is_group() {
            return None;
        }
        if let Some(s) = self.by_ip.get_mut(&ip) {
            s.seen_s = now_s;
            if s.mac == mac {
                return None;
            }
            let old = s.mac;
            let flip =
                s.previous == Some(mac) && now_s.saturating_sub(s.changed_s) <= FLIP_FLOP_WINDOW_S;
            s.previous = Some(old);
            s.mac = mac;
            s.changed_s = now_s;
            return Some(if flip {
                StationChange::FlipFlop { old }
            } else {
                StationChange::ChangedAddress { old }
            });
        }
        if self.by_ip.len() >= MAX_STATIONS {
            if let Some(oldest) = self
                .by_ip
                .iter()
                .min_by_key(|(_, s)| s.seen_s)
                .map(|(ip, _)| *ip)
            {
                self.by_ip.remove(&oldest);
            }
        }
        self.by_ip.insert(
            ip,
            Station {
                mac,
                previous: None,
                changed_s: now_s,
                seen_s: now_s,
            },
        );
        Some(StationChange::NewStation)
    }

    /// Number of stations known.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// True when no station is known.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// Per-port token buckets with the kernel's `limit rate over R/second burst B packets`
/// semantics: a port starts with B tokens, gains R per second up to B, and each message takes
/// one; a message finding no token is over the limit.
#[derive(Clone, Debug)]
pub struct RateLimiter {
    per_second: u64,
    burst: u64,
    // Tokens in thousandths, so refill at sub-second spacing is exact.
    buckets: HashMap<String, (u64, u64)>,
}

/// Why: each bucket is keyed by a configured or observed bridge port; ports are few, but the
/// cap makes an unexpected flood of names harmless.
pub const MAX_BUCKETS: usize = 1024;

impl RateLimiter {
    /// A limiter with `per_second` sustained and `burst` messages.
    pub fn new(per_second: u32, burst: u32) -> Self {
        Self {
            per_second: u64::from(per_second.max(1)),
            burst: u64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Take one token for `port` at `now_ms`; false when the port is over its limit.
    pub fn admit(&mut self, port: &str, now_ms: u64) -> bool {
        let full = self.burst * 1000;
        if !self.buckets.contains_key(port) && self.buckets.len() >= MAX_BUCKETS {
            self.buckets.clear();
        }
        let (tokens, last) = self
            .buckets
            .entry(port.to_string())
            .or_insert((full, now_ms));
        let elapsed = now_ms.saturating_sub(*last);
        *tokens = (*tokens + elapsed.saturating_mul(self.per_second)).min(full);
        *last = now_ms;
        if *tokens >= 1000 {
            *tokens -= 1000;
            true
        } else {
            false
        }
    }
}

/// Suppresses repeats of the same event key within a window, so an attacker's flood becomes
/// one event per window (with a count of what was suppressed).
#[derive(Clone, Debug, Default)]
pub struct Dedupe {
    last: HashMap<String, (u64, u64)>,
}

/// Why: ten seconds keeps a flood to a handful of lines a minute while a new attack on
/// another key still shows at once.
pub const DEDUPE_WINDOW_S: u64 = 10;
/// Why: keys include attacker-chosen MACs; past this many, forget all (a burst of events is
/// better than unbounded memory).
pub const MAX_DEDUPE_KEYS: usize = 4096;

impl Dedupe {
    /// `Some(suppressed_since_last)` when an event for `key` should be emitted now.
    pub fn admit(&mut self, key: &str, now_s: u64) -> Option<u64> {
        if !self.last.contains_key(key) && self.last.len() >= MAX_DEDUPE_KEYS {
            self.last.clear();
        }
        match self.last.get_mut(key) {
            Some((at, suppressed)) if now_s.saturating_sub(*at) < DEDUPE_WINDOW_S => {
                *suppressed += 1;
                None
            }
            Some((at, suppressed)) => {
                let n = *suppressed;
                *at = now_s;
                *suppressed = 0;
                Some(n)
            }
            None => {
                self.last.insert(key.to_string(), (now_s, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::ARP_REPLY;

    const CLI: Mac = Mac([2, 0, 0, 0, 0, 0x0c]);
    const ROG: Mac = Mac([2, 0, 0, 0, 0, 0x66]);
    const GW: Mac = Mac([2, 0, 0, 0, 0, 0x01]);

    fn reply(mac: Mac, ip: [u8; 4]) -> Arp {
        Arp {
            op: ARP_REPLY,
            sender_mac: mac,
            sender_ip: Ipv4Addr::from(ip),
            target_mac: CLI,
            target_ip: Ipv4Addr::new(192, 0, 2, 100),
        }
    }

    fn table() -> BindingTable {
        let mut t = BindingTable::new(8);
        t.note_request(CLI, "p_cli", 1, 0);
        t.ack(CLI, Ipv4Addr::new(192, 0, 2, 100), 1, Some(600), 0);
        t
    }

    #[test]
    fn gateway_spoof_contradicts_the_static_entry() {
        let statics = vec![StaticEntry {
            ip: Ipv4Addr::new(192, 0, 2, 1),
            mac: GW,
            port: Some("p_srv".into()),
        }];
        let v = dai(
            &reply(ROG, [192, 0, 2, 1]),
            ROG,
            "p_rog",
            false,
            &table(),
            &statics,
            1,
        );
        assert_eq!(
            v,
            DaiVerdict::DropContradicts {
                bound_mac: GW,
                bound_port: "p_srv".into()
            }
        );
        // The real gateway on its own port passes even when that port is untrusted.
        let v = dai(
            &reply(GW, [192, 0, 2, 1]),
            GW,
            "p_srv",
            false,
            &table(),
            &statics,
            1,
        );
        assert_eq!(v, DaiVerdict::AllowStatic);
    }

    #[test]
    fn bound_client_passes_only_on_its_port_and_before_expiry() {
        let t = table();
        let a = reply(CLI, [192, 0, 2, 100]);
        assert_eq!(
            dai(&a, CLI, "p_cli", false, &t, &[], 10),
            DaiVerdict::AllowBinding
        );
        assert!(!dai(&a, CLI, "p_rog", false, &t, &[], 10).allows());
        assert!(!dai(&a, CLI, "p_cli", false, &t, &[], 600).allows());
        assert_eq!(
            dai(&a, CLI, "p_rog", true, &t, &[], 10),
            DaiVerdict::AllowTrusted
        );
    }

    #[test]
    fn sender_mac_and_ethernet_source_must_both_be_bound() {
        let v = dai(
            &reply(CLI, [192, 0, 2, 100]),
            ROG,
            "p_cli",
            false,
            &table(),
            &[],
            1,
        );
        assert_eq!(v, DaiVerdict::DropSourceMismatch);
        let probe = reply(ROG, [0, 0, 0, 0]);
        assert_eq!(
            dai(&probe, ROG, "p_rog", false, &table(), &[], 1),
            DaiVerdict::AllowProbe
        );
    }

    #[test]
    fn nd_inspection_checks_target_dad_and_source_against_bindings_and_statics() {
        let mut b6 = Bindings6::new(8);
        let duid = [0u8, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c];
        let ip: Ipv6Addr = "2001:db8:1::100".parse().unwrap();
        let other: Ipv6Addr = "2001:db8:1::66".parse().unwrap();
        b6.note_request(&duid, CLI, "p_cli", 1, 0);
        b6.reply(
            &duid,
            1,
            &[crate::decode::Dhcpv6Address {
                addr: ip,
                preferred_s: 60,
                valid_s: 120,
            }],
            0,
        );
        let gw_ll: Ipv6Addr = "fe80::1".parse().unwrap();
        let statics = vec![StaticNd {
            ip: gw_ll,
            mac: GW,
            port: None,
        }];
        let na = |t, src, mac, port: &str, now| {
            nd_inspect(136, Some(t), src, mac, port, false, &b6, &statics, now)
        };
        // The owner on its port passes; the rogue claiming it from its port does not.
        assert_eq!(na(ip, ip, CLI, "p_cli", 1), NdVerdict::Allow);
        assert_eq!(
            na(ip, other, ROG, "p_rog", 1),
            NdVerdict::Drop {
                ip,
                field: NdField::Target,
                bound_mac: CLI,
                bound_port: "p_cli".into()
            }
        );
        // The right MAC on the wrong port is still a spoof (a forged Ethernet source).
        assert!(matches!(
            na(ip, other, CLI, "p_rog", 1),
            NdVerdict::Drop { .. }
        ));
        // Unbound addresses (the rogue's own, unbound link-local) pass; after expiry too.
        assert_eq!(na(other, other, ROG, "p_rog", 1), NdVerdict::Allow);
        let ll: Ipv6Addr = "fe80::66".parse().unwrap();
        assert_eq!(na(ll, ll, ROG, "p_rog", 1), NdVerdict::Allow);
        assert_eq!(na(ip, other, ROG, "p_rog", 120), NdVerdict::Allow);
        // A port-less static entry binds a link-local address on every port.
        assert_eq!(na(gw_ll, gw_ll, GW, "p_any", 1), NdVerdict::Allow);
        assert!(
            matches!(na(gw_ll, ll, ROG, "p_rog", 1), NdVerdict::Drop { bound_port, .. } if bound_port == "*")
        );
        // NS: an ordinary solicitation for a bound target passes; a DAD probe does not, nor a
        // solicitation sourced from the bound address.
        let ns = |t, src, mac| nd_inspect(135, Some(t), src, mac, "p_rog", false, &b6, &statics, 1);
        assert_eq!(ns(ip, other, ROG), NdVerdict::Allow);
        assert!(matches!(
            ns(ip, Ipv6Addr::UNSPECIFIED, ROG),
            NdVerdict::Drop {
                field: NdField::DadTarget,
                ..
            }
        ));
        assert!(matches!(
            ns(other, ip, ROG),
            NdVerdict::Drop {
                field: NdField::Source,
                ..
            }
        ));
        // Trusted ports and non-ND messages are not inspected.
        assert_eq!(
            nd_inspect(136, Some(ip), ip, ROG, "p_srv", true, &b6, &statics, 1),
            NdVerdict::Allow
        );
        assert_eq!(
            nd_inspect(128, None, ip, ROG, "p_rog", false, &b6, &statics, 1),
            NdVerdict::Allow
        );
    }

    #[test]
    fn stations_report_new_change_and_flip_flop() {
        let mut s = Stations::default();
        let ip = Ipv4Addr::new(192, 0, 2, 1);
        assert_eq!(s.observe(ip, GW, 0), Some(StationChange::NewStation));
        assert_eq!(s.observe(ip, GW, 1), None);
        assert_eq!(
            s.observe(ip, ROG, 2),
            Some(StationChange::ChangedAddress { old: GW })
        );
        assert_eq!(
            s.observe(ip, GW, 3),
            Some(StationChange::FlipFlop { old: ROG })
        );
        assert_eq!(
            s.observe(ip, ROG, 3 + FLIP_FLOP_WINDOW_S + 1),
            Some(StationChange::ChangedAddress { old: GW })
        );
    }

    #[test]
    fn rate_limiter_matches_burst_then_rate() {
        let mut r = RateLimiter::new(10, 20);
        let admitted = (0..100).filter(|_| r.admit("p", 0)).count();
        assert_eq!(admitted, 20, "burst only at one instant");
        // 1 s later: 10 more tokens.
        let admitted = (0..100).filter(|_| r.admit("p", 1000)).count();
        assert_eq!(admitted, 10);
        assert!(r.admit("q", 1000), "ports are independent");
    }

    #[test]
    fn dedupe_counts_suppressed() {
        let mut d = Dedupe::default();
        assert_eq!(d.admit("k", 0), Some(0));
        assert_eq!(d.admit("k", 1), None);
        assert_eq!(d.admit("k", 2), None);
        assert_eq!(d.admit("k", DEDUPE_WINDOW_S), Some(2));
    }
}
