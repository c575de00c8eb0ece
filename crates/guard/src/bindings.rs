//! The DHCP snooping binding table: which MAC holds which IPv4 lease on which bridge port
//! until when. Learned from DHCPACKs arriving on trusted ports for clients whose request was
//! seen on a port (the pending table); removed on RELEASE/DECLINE from the binding's own port,
//! on NAK, and at expiry. Bounded; persisted as text so a restart keeps the leases.
//!
//! Time is an input (`now_s`, seconds since the Unix epoch).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use crate::bindings6::{parse_duid_hex, Binding6, Bindings6};
use crate::decode::Mac;
use crate::GuardError;

/// One binding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    /// Client MAC (DHCP `chaddr`).
    pub mac: Mac,
    /// Leased address (`yiaddr` of the ACK).
    pub ip: Ipv4Addr,
    /// Bridge port the client's request came in on.
    pub port: String,
    /// Lease end, seconds since the Unix epoch.
    pub expires_s: u64,
}

/// A client request seen on a port, waiting for the server's ACK.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending {
    port: String,
    xid: u32,
    seen_s: u64,
}

/// Why: a DHCP exchange completes in well under a second; clients retry for about a minute
/// before giving up, so an ACK more than 60 s after its request is not an answer to it.
pub const PENDING_TTL_S: u64 = 60;
/// Why: pending entries come from untrusted ports, so an attacker can create many (random
/// `chaddr` starvation); the cap keeps memory flat and the oldest entries go first.
pub const MAX_PENDING: usize = 1024;
/// Why: RFC 2131 leases are 32-bit seconds; 0xffffffff means infinite. One year is longer
/// than any real lease and keeps nft timeouts within range.
pub const MAX_LEASE_S: u64 = 365 * 86_400;
/// Lease assumed when an ACK carries no option 51.
pub const DEFAULT_LEASE_S: u64 = 3_600;

/// What a change to the table did (the shell mirrors it into the kernel set).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// A binding was added or renewed (the old one, if any, was for the same MAC).
    Bind {
        /// The new binding.
        new: Binding,
        /// The binding it replaces.
        old: Option<Binding>,
    },
    /// A binding was removed (release, decline, NAK, expiry, eviction).
    Unbind(Binding),
    /// An IPv6 address was bound or renewed (DHCPv6 REPLY); the old binding, if any, was for
    /// the same address.
    Bind6 {
        /// The new binding.
        new: Binding6,
        /// The binding it replaces.
        old: Option<Binding6>,
    },
    /// An IPv6 binding was removed (valid lifetime 0, release, decline, expiry, eviction).
    Unbind6(Binding6),
}

/// The binding table plus the pending requests.
#[derive(Clone, Debug, Default)]
pub struct BindingTable {
    by_mac: BTreeMap<Mac, Binding>,
    // Index IP → MAC; one DHCP lease per address, so one MAC per IP.
    by_ip: BTreeMap<Ipv4Addr, Mac>,
    pending: BTreeMap<Mac, Pending>,
    max: usize,
    // DHCPv6 bindings (own pending table, same bound).
    v6: Bindings6,
}

impl BindingTable {
    /// An empty table holding at most `max` bindings.
    pub fn new(max: usize) -> Self {
        Self {
            by_mac: BTreeMap::new(),
            by_ip: BTreeMap::new(),
            pending: BTreeMap::new(),
            max: max.max(1),
            v6: Bindings6::new(max),
        }
    }

    /// The DHCPv6 bindings.
    pub fn v6(&self) -> &Bindings6 {
        &self.v6
    }

    /// The DHCPv6 bindings, to learn into.
    pub fn v6_mut(&mut self) -> &mut Bindings6 {
        &mut self.v6
    }

    /// Number of bindings.
    pub fn len(&self) -> usize {
        self.by_mac.len()
    }

    /// True when there are no bindings.
    pub fn is_empty(&self) -> bool {
        self.by_mac.is_empty()
    }

    /// Bindings in MAC order.
    pub fn iter(&self) -> impl Iterator<Item = &Binding> {
        self.by_mac.values()
    }

    /// The binding of `mac`.
    pub fn of_mac(&self, mac: &Mac) -> Option<&Binding> {
        self.by_mac.get(mac)
    }

    /// The binding holding `ip`.
    pub fn of_ip(&self, ip: Ipv4Addr) -> Option<&Binding> {
        self.by_ip.get(&ip).and_then(|m| self.by_mac.get(m))
    }

    fn remove_mac(&mut self, mac: &Mac) -> Option<Binding> {
        let b = self.by_mac.remove(mac)?;
        self.by_ip.remove(&b.ip);
        Some(b)
    }

    /// True when (`port`, `mac`, `ip`) is a live binding at `now_s`.
    pub fn allows(&self, port: &str, mac: &Mac, ip: Ipv4Addr, now_s: u64) -> bool {
        self.by_mac
            .get(mac)
            .is_some_and(|b| b.ip == ip && b.port == port && b.expires_s > now_s)
    }

    /// A client message (DISCOVER/REQUEST) from `mac` on `port`.
    pub fn note_request(&mut self, mac: Mac, port: &str, xid: u32, now_s: u64) {
        if !self.pending.contains_key(&mac) && self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.seen_s)
                .map(|(m, _)| *m)
            {
                self.pending.remove(&oldest);
            }
        }
        self.pending.insert(
            mac,
            Pending {
                port: port.to_string(),
                xid,
                seen_s: now_s,
            },
        );
    }

    /// A DHCPACK from a trusted port: completes the binding when a matching request is
    /// pending (same MAC and transaction), else `None`. Evicts the binding closest to expiry
    /// when full.
    pub fn ack(
        &mut self,
        mac: Mac,
        ip: Ipv4Addr,
        xid: u32,
        lease_s: Option<u32>,
        now_s: u64,
    ) -> Vec<Change> {
        let Some(pending) = self.pending.get(&mac) else {
            return Vec::new();
        };
        if pending.xid != xid || now_s.saturating_sub(pending.seen_s) > PENDING_TTL_S {
            return Vec::new();
        }
        let port = pending.port.clone();
        self.pending.remove(&mac);
        let lease = lease_s.map_or(DEFAULT_LEASE_S, u64::from).min(MAX_LEASE_S);
        self.insert(Binding {
            mac,
            ip,
            port,
            expires_s: now_s.saturating_add(lease),
        })
    }

    /// Insert a binding (learned or loaded); another MAC holding the same IP is unbound,
    /// since a DHCP server leases an address to one client at a time.
    pub fn insert(&mut self, binding: Binding) -> Vec<Change> {
        let mut changes = Vec::new();
        let stale: Vec<Mac> = self
            .by_ip
            .get(&binding.ip)
            .filter(|m| **m != binding.mac)
            .copied()
            .into_iter()
            .collect();
        for m in stale {
            if let Some(b) = self.remove_mac(&m) {
                changes.push(Change::Unbind(b));
            }
        }
        if !self.by_mac.contains_key(&binding.mac) && self.by_mac.len() >= self.max {
            if let Some(victim) = self
                .by_mac
                .values()
                .min_by_key(|b| b.expires_s)
                .map(|b| b.mac)
            {
                if let Some(b) = self.remove_mac(&victim) {
                    changes.push(Change::Unbind(b));
                }
            }
        }
        let old = self.by_mac.insert(binding.mac, binding.clone());
        if let Some(old) = &old {
            self.by_ip.remove(&old.ip);
        }
        self.by_ip.insert(binding.ip, binding.mac);
        changes.push(Change::Bind { new: binding, old });
        changes
    }

    /// RELEASE or DECLINE from `mac` on `port`: removes the binding only when it is on that
    /// port. `Err(binding)` when the message came from another port (a spoofed release).
    pub fn release(&mut self, mac: &Mac, port: &str) -> Result<Option<Binding>, Binding> {
        self.pending.remove(mac);
        match self.by_mac.get(mac) {
            Some(b) if b.port != port => Err(b.clone()),
            Some(_) => Ok(self.remove_mac(mac)),
            None => Ok(None),
        }
    }

    /// NAK from a trusted port: the client's lease is not valid.
    pub fn nak(&mut self, mac: &Mac) -> Option<Binding> {
        self.pending.remove(mac);
        self.remove_mac(mac)
    }

    /// Remove expired bindings (IPv4 and IPv6) and stale pending requests.
    pub fn expire(&mut self, now_s: u64) -> Vec<Change> {
        self.pending
            .retain(|_, p| now_s.saturating_sub(p.seen_s) <= PENDING_TTL_S);
        let gone: Vec<Mac> = self
            .by_mac
            .values()
            .filter(|b| b.expires_s <= now_s)
            .map(|b| b.mac)
            .collect();
        let mut changes: Vec<Change> = gone
            .into_iter()
            .filter_map(|m| self.remove_mac(&m))
            .map(Change::Unbind)
            .collect();
        changes.extend(self.v6.expire(now_s));
        changes
    }

    /// The persisted form: a header line, then one binding per line, IPv4 as
    /// `MAC IP PORT EXPIRES_UNIX_S` and IPv6 as `MAC IPV6 PORT EXPIRES_UNIX_S DUID_HEX`. The
    /// header says v1 while there are no IPv6 bindings, so an older guard still reads the file;
    /// with IPv6 lines it says v2 (an older guard refuses it, naming line 1, rather than
    /// dropping leases silently).
    pub fn to_text(&self) -> String {
        let mut out = String::from(if self.v6.is_empty() {
            HEADER
        } else {
            HEADER_V2
        });
        out.push('\n');
        for b in self.by_mac.values() {
            out.push_str(&format!("{} {} {} {}\n", b.mac, b.ip, b.port, b.expires_s));
        }
        for b in self.v6.iter() {
            out.push_str(&format!(
                "{} {} {} {} {}\n",
                b.mac,
                b.ip,
                b.port,
                b.expires_s,
                crate::bindings6::duid_hex(&b.duid)
            ));
        }
        out
    }

    /// Load the persisted form; expired entries are dropped. A malformed file is an error
    /// naming the line (the caller keeps the file untouched).
    pub fn from_text(text: &str, max: usize, now_s: u64) -> Result<Self, GuardError> {
        let mut table = Self::new(max);
        let mut lines = text.lines().enumerate();
        match lines.next() {
            Some((_, h)) if h.trim() == HEADER || h.trim() == HEADER_V2 => {}
            _ => {
                return Err(GuardError::BindingsFile {
                    line: 1,
                    reason: format!("expected header {HEADER:?} or {HEADER_V2:?}"),
                })
            }
        }
        for (i, line) in lines {
            let line_no = i + 1;
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let bad = |reason: &str| GuardError::BindingsFile {
                line: line_no,
                reason: reason.to_string(),
            };
            let fields: Vec<&str> = line.split_ascii_whitespace().collect();
            if let [mac, ip, port, expires, duid] = fields[..] {
                let mac = Mac::parse(mac).ok_or_else(|| bad("bad MAC"))?;
                let ip: std::net::Ipv6Addr = ip.parse().map_err(|_| bad("bad IPv6 address"))?;
                if port.is_empty() || port.len() > crate::config::MAX_IFNAME_LEN {
                    return Err(bad("bad port name"));
                }
                let expires_s: u64 = expires.parse().map_err(|_| bad("bad expiry"))?;
                let duid = parse_duid_hex(duid).ok_or_else(|| bad("bad DUID"))?;
                if table.v6.len() >= max {
                    return Err(bad("more IPv6 bindings than max_bindings"));
                }
                if expires_s > now_s {
                    if table.v6.of_ip(ip, now_s).is_some() {
                        return Err(bad("duplicate IPv6 address"));
                    }
                    table.v6.insert(Binding6 {
                        mac,
                        duid,
                        ip,
                        port: port.to_string(),
                        expires_s,
                    });
                }
                continue;
            }
            let [mac, ip, port, expires] = fields[..] else {
                return Err(bad(
                    "expected MAC IP PORT EXPIRES_UNIX_S (IPv4) or MAC IPV6 PORT EXPIRES_UNIX_S DUID_HEX",
                ));
            };
            let mac = Mac::parse(mac).ok_or_else(|| bad("bad MAC"))?;
            let ip: Ipv4Addr = ip.parse().map_err(|_| bad("bad IPv4 address"))?;
            if port.is_empty() || port.len() > crate::config::MAX_IFNAME_LEN {
                return Err(bad("bad port name"));
            }
            let expires_s: u64 = expires.parse().map_err(|_| bad("bad expiry"))?;
            if table.by_mac.contains_key(&mac) {
                return Err(bad("duplicate MAC"));
            }
            if table.by_mac.len() >= max {
                return Err(bad("more bindings than max_bindings"));
            }
            if expires_s > now_s {
                if table.by_ip.contains_key(&ip) {
                    return Err(bad("duplicate IP"));
                }
                table.by_ip.insert(ip, mac);
                table.by_mac.insert(
                    mac,
                    Binding {
                        mac,
                        ip,
                        port: port.to_string(),
                        expires_s,
                    },
                );
            }
        }
        Ok(table)
    }
}

/// First line of the persisted binding file (IPv4 bindings only).
pub const HEADER: &str = "# rampart-guard bindings v1";
/// First line of the persisted binding file when it holds IPv6 bindings.
pub const HEADER_V2: &str = "# rampart-guard bindings v2";

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([2, 0, 0, 0, 0, 0x0c]);
    const IP: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 100);

    #[test]
    fn ack_without_a_request_is_not_learned() {
        let mut t = BindingTable::new(8);
        assert!(t.ack(MAC, IP, 7, Some(60), 1000).is_empty());
        assert!(t.is_empty());
    }

    #[test]
    fn request_then_ack_binds_to_the_request_port() {
        let mut t = BindingTable::new(8);
        t.note_request(MAC, "p_cli", 7, 1000);
        let c = t.ack(MAC, IP, 7, Some(60), 1001);
        assert!(matches!(&c[..], [Change::Bind { old: None, .. }]));
        assert!(t.allows("p_cli", &MAC, IP, 1002));
        assert!(!t.allows("p_rog", &MAC, IP, 1002));
        assert!(!t.allows("p_cli", &MAC, IP, 1061), "expired");
    }

    #[test]
    fn ack_for_another_transaction_is_ignored() {
        let mut t = BindingTable::new(8);
        t.note_request(MAC, "p_cli", 7, 1000);
        assert!(t.ack(MAC, IP, 8, Some(60), 1001).is_empty());
    }

    #[test]
    fn release_from_another_port_keeps_the_binding() {
        let mut t = BindingTable::new(8);
        t.note_request(MAC, "p_cli", 7, 1000);
        t.ack(MAC, IP, 7, Some(600), 1000);
        assert!(t.release(&MAC, "p_rog").is_err());
        assert_eq!(t.len(), 1);
        assert!(t.release(&MAC, "p_cli").unwrap().is_some());
        assert!(t.is_empty());
    }

    #[test]
    fn table_is_bounded_and_evicts_soonest_expiry() {
        let mut t = BindingTable::new(2);
        for (i, lease) in [(1u8, 100u32), (2, 50), (3, 200)] {
            let mac = Mac([2, 0, 0, 0, 0, i]);
            t.note_request(mac, "p", u32::from(i), 0);
            t.ack(
                mac,
                Ipv4Addr::new(192, 0, 2, i),
                u32::from(i),
                Some(lease),
                0,
            );
        }
        assert_eq!(t.len(), 2);
        assert!(t.of_mac(&Mac([2, 0, 0, 0, 0, 2])).is_none());
    }

    #[test]
    fn persisted_text_round_trips_and_drops_expired() {
        let mut t = BindingTable::new(8);
        t.note_request(MAC, "p_cli", 7, 1000);
        t.ack(MAC, IP, 7, Some(600), 1000);
        let text = t.to_text();
        let back = BindingTable::from_text(&text, 8, 1001).unwrap();
        assert_eq!(
            back.iter().collect::<Vec<_>>(),
            t.iter().collect::<Vec<_>>()
        );
        assert!(BindingTable::from_text(&text, 8, 1600).unwrap().is_empty());
    }

    #[test]
    fn ip_index_follows_every_change() {
        let mut t = BindingTable::new(2);
        let other = Mac([2, 0, 0, 0, 0, 0x0d]);
        t.note_request(MAC, "p_cli", 7, 0);
        t.ack(MAC, IP, 7, Some(60), 0);
        assert_eq!(t.of_ip(IP).map(|b| b.mac), Some(MAC));
        // The address moves to another client: the first binding goes.
        t.note_request(other, "p_cli", 8, 1);
        let c = t.ack(other, IP, 8, Some(60), 1);
        assert!(matches!(&c[0], Change::Unbind(b) if b.mac == MAC));
        assert_eq!(t.of_ip(IP).map(|b| b.mac), Some(other));
        // Renewal with a new address drops the old index entry.
        t.note_request(other, "p_cli", 9, 2);
        t.ack(other, Ipv4Addr::new(192, 0, 2, 101), 9, Some(60), 2);
        assert!(t.of_ip(IP).is_none());
        assert!(t.expire(100).len() == 1 && t.of_ip(Ipv4Addr::new(192, 0, 2, 101)).is_none());
    }

    #[test]
    fn ipv6_bindings_persist_under_a_v2_header() {
        let mut t = BindingTable::new(8);
        t.note_request(MAC, "p_cli", 7, 1000);
        t.ack(MAC, IP, 7, Some(600), 1000);
        assert!(t.to_text().starts_with(HEADER), "v1 while IPv4 only");
        let duid = [0u8, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c];
        t.v6_mut().note_request(&duid, MAC, "p_cli", 9, 1000);
        let a = crate::decode::Dhcpv6Address {
            addr: "2001:db8:1::100".parse().unwrap(),
            preferred_s: 300,
            valid_s: 600,
        };
        assert_eq!(t.v6_mut().reply(&duid, 9, &[a], 1000).len(), 1);
        let text = t.to_text();
        assert!(text.starts_with(HEADER_V2), "{text}");
        assert!(
            text.contains("02:00:00:00:00:0c 2001:db8:1::100 p_cli 1600 0003000102000000000c\n"),
            "{text}"
        );
        let back = BindingTable::from_text(&text, 8, 1001).unwrap();
        assert_eq!(
            back.v6().iter().collect::<Vec<_>>(),
            t.v6().iter().collect::<Vec<_>>()
        );
        assert_eq!(back.len(), 1);
        assert!(BindingTable::from_text(&text, 8, 1600)
            .unwrap()
            .v6()
            .is_empty());
        let bad = format!("{HEADER_V2}\n02:00:00:00:00:0c 2001:db8:1::100 p_cli 1600 xyz\n");
        let e = BindingTable::from_text(&bad, 8, 0).unwrap_err();
        assert!(e.to_string().contains("DUID"), "{e}");
    }

    #[test]
    fn corrupt_file_names_the_line() {
        let text = format!("{HEADER}\n02:00:00:00:00:01 192.0.2.5 p_cli 99999\n\nnonsense here\n");
        let e = BindingTable::from_text(&text, 8, 0).unwrap_err();
        assert!(matches!(e, GuardError::BindingsFile { line: 4, .. }), "{e}");
        let e = BindingTable::from_text("garbage\n", 8, 0).unwrap_err();
        assert!(matches!(e, GuardError::BindingsFile { line: 1, .. }), "{e}");
    }
}
