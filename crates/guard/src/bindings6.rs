//! The DHCPv6 snooping binding table: which client (MAC and DUID) holds which IPv6 address on
//! which bridge port until when. Learned from REPLY messages arriving on trusted ports for a
//! client whose SOLICIT/REQUEST/RENEW/REBIND was seen on a port with the same DUID and
//! transaction id (the pending table); an address is removed when a REPLY gives it valid
//! lifetime 0, on RELEASE/DECLINE from the binding's own port and client, and at expiry. One
//! client may hold several addresses (several IA_NAs or IAADDRs); an address has one owner.
//! Bounded; persisted with the IPv4 table ([`crate::bindings`]).
//!
//! Time is an input (`now_s`, seconds since the Unix epoch).

use std::collections::BTreeMap;
use std::net::Ipv6Addr;

use crate::bindings::{Change, MAX_LEASE_S, MAX_PENDING, PENDING_TTL_S};
use crate::decode::{Dhcpv6Address, Mac};

/// One IPv6 binding.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding6 {
    /// The client's MAC: the Ethernet source of its request (the DUID need not contain one).
    pub mac: Mac,
    /// The client's DUID (Client Identifier option), at most [`crate::decode::MAX_DUID_LEN`].
    pub duid: Vec<u8>,
    /// The leased address (IAADDR of the REPLY).
    pub ip: Ipv6Addr,
    /// Bridge port the client's request came in on.
    pub port: String,
    /// End of the valid lifetime, seconds since the Unix epoch.
    pub expires_s: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Pending6 {
    mac: Mac,
    port: String,
    xid: u32,
    seen_s: u64,
}

/// The DUID as lower-case hex (persisted form and events).
pub fn duid_hex(duid: &[u8]) -> String {
    duid.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parse [`duid_hex`] output; `None` unless 1..=MAX_DUID_LEN bytes of even-length hex.
pub fn parse_duid_hex(text: &str) -> Option<Vec<u8>> {
    if text.is_empty() || text.len() % 2 != 0 || text.len() > 2 * crate::decode::MAX_DUID_LEN {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect()
}

/// A RELEASE/DECLINE naming an address bound to another port or client: kept, reported.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ForeignRelease {
    /// The binding that was kept.
    pub kept: Binding6,
}

/// The IPv6 bindings plus the pending client requests.
#[derive(Clone, Debug, Default)]
pub struct Bindings6 {
    by_ip: BTreeMap<Ipv6Addr, Binding6>,
    pending: BTreeMap<Vec<u8>, Pending6>,
    max: usize,
}

impl Bindings6 {
    /// An empty table holding at most `max` addresses.
    pub fn new(max: usize) -> Self {
        Self {
            by_ip: BTreeMap::new(),
            pending: BTreeMap::new(),
            max: max.max(1),
        }
    }

    /// Number of bound addresses.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    /// True when nothing is bound.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }

    /// Bindings in address order.
    pub fn iter(&self) -> impl Iterator<Item = &Binding6> {
        self.by_ip.values()
    }

    /// The live binding of `ip` at `now_s`.
    pub fn of_ip(&self, ip: Ipv6Addr, now_s: u64) -> Option<&Binding6> {
        self.by_ip.get(&ip).filter(|b| b.expires_s > now_s)
    }

    /// A client message (SOLICIT, REQUEST, RENEW, REBIND, CONFIRM) from `mac` on `port`.
    pub fn note_request(&mut self, duid: &[u8], mac: Mac, port: &str, xid: u32, now_s: u64) {
        if !self.pending.contains_key(duid) && self.pending.len() >= MAX_PENDING {
            if let Some(oldest) = self
                .pending
                .iter()
                .min_by_key(|(_, p)| p.seen_s)
                .map(|(d, _)| d.clone())
            {
                self.pending.remove(&oldest);
            }
        }
        self.pending.insert(
            duid.to_vec(),
            Pending6 {
                mac,
                port: port.to_string(),
                xid,
                seen_s: now_s,
            },
        );
    }

    /// A REPLY from a trusted port for `duid`'s transaction `xid`: binds each address with a
    /// valid lifetime (capped at [`MAX_LEASE_S`]) to the requester's MAC and port, and unbinds
    /// addresses of this client given valid lifetime 0. Nothing without a matching request.
    pub fn reply(
        &mut self,
        duid: &[u8],
        xid: u32,
        addresses: &[Dhcpv6Address],
        now_s: u64,
    ) -> Vec<Change> {
        let Some(p) = self.pending.get(duid) else {
            return Vec::new();
        };
        if p.xid != xid || now_s.saturating_sub(p.seen_s) > PENDING_TTL_S {
            return Vec::new();
        }
        let p = p.clone();
        self.pending.remove(duid);
        let mut changes = Vec::new();
        for a in addresses {
            if a.addr.is_unspecified() || a.addr.is_multicast() {
                continue;
            }
            if a.valid_s == 0 {
                if self.by_ip.get(&a.addr).is_some_and(|b| b.duid == duid) {
                    changes.extend(self.by_ip.remove(&a.addr).map(Change::Unbind6));
                }
                continue;
            }
            let lease = u64::from(a.valid_s).min(MAX_LEASE_S);
            changes.extend(self.insert(Binding6 {
                mac: p.mac,
                duid: duid.to_vec(),
                ip: a.addr,
                port: p.port.clone(),
                expires_s: now_s.saturating_add(lease),
            }));
        }
        changes
    }

    /// Insert a binding (learned or loaded): the address's previous owner, if another client,
    /// is replaced; when full, the binding closest to expiry goes.
    pub fn insert(&mut self, binding: Binding6) -> Vec<Change> {
        let mut changes = Vec::new();
        if !self.by_ip.contains_key(&binding.ip) && self.by_ip.len() >= self.max {
            if let Some(victim) = self
                .by_ip
                .values()
                .min_by_key(|b| b.expires_s)
                .map(|b| b.ip)
            {
                changes.extend(self.by_ip.remove(&victim).map(Change::Unbind6));
            }
        }
        let old = self.by_ip.insert(binding.ip, binding.clone());
        changes.push(Change::Bind6 { new: binding, old });
        changes
    }

    /// RELEASE or DECLINE from `duid` (Ethernet source `mac`) on `port` naming `addresses`:
    /// each address bound to this client on this port is unbound; one bound elsewhere (another
    /// port, MAC or DUID) is kept and returned as foreign.
    pub fn release(
        &mut self,
        duid: &[u8],
        mac: Mac,
        port: &str,
        addresses: &[Dhcpv6Address],
    ) -> (Vec<Change>, Vec<ForeignRelease>) {
        self.pending.remove(duid);
        let mut changes = Vec::new();
        let mut foreign = Vec::new();
        for a in addresses {
            match self.by_ip.get(&a.addr) {
                Some(b) if b.duid == duid && b.mac == mac && b.port == port => {
                    changes.extend(self.by_ip.remove(&a.addr).map(Change::Unbind6));
                }
                Some(b) => foreign.push(ForeignRelease { kept: b.clone() }),
                None => {}
            }
        }
        (changes, foreign)
    }

    /// Remove expired bindings and stale pending requests.
    pub fn expire(&mut self, now_s: u64) -> Vec<Change> {
        self.pending
            .retain(|_, p| now_s.saturating_sub(p.seen_s) <= PENDING_TTL_S);
        let gone: Vec<Ipv6Addr> = self
            .by_ip
            .values()
            .filter(|b| b.expires_s <= now_s)
            .map(|b| b.ip)
            .collect();
        gone.into_iter()
            .filter_map(|ip| self.by_ip.remove(&ip))
            .map(Change::Unbind6)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = Mac([2, 0, 0, 0, 0, 0x0c]);
    const DUID: &[u8] = &[0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c];

    fn addr(valid_s: u32) -> Dhcpv6Address {
        Dhcpv6Address {
            addr: "2001:db8:1::100".parse().unwrap(),
            preferred_s: valid_s / 2,
            valid_s,
        }
    }

    #[test]
    fn reply_binds_only_a_pending_transaction() {
        let mut t = Bindings6::new(8);
        assert!(
            t.reply(DUID, 7, &[addr(600)], 1000).is_empty(),
            "no request"
        );
        t.note_request(DUID, MAC, "p_cli", 7, 1000);
        assert!(t.reply(DUID, 8, &[addr(600)], 1000).is_empty(), "other xid");
        let c = t.reply(DUID, 7, &[addr(600)], 1001);
        assert!(
            matches!(&c[..], [Change::Bind6 { old: None, new }] if new.port == "p_cli" && new.mac == MAC && new.expires_s == 1601)
        );
        assert!(t.of_ip(addr(0).addr, 1600).is_some());
        assert!(t.of_ip(addr(0).addr, 1601).is_none(), "expired");
        assert_eq!(t.expire(1601).len(), 1);
    }

    #[test]
    fn valid_lifetime_zero_unbinds_and_releases_need_the_owner() {
        let mut t = Bindings6::new(8);
        t.note_request(DUID, MAC, "p_cli", 7, 0);
        t.reply(DUID, 7, &[addr(600)], 0);
        let (c, foreign) = t.release(DUID, Mac([2, 0, 0, 0, 0, 0x66]), "p_rog", &[addr(0)]);
        assert!(c.is_empty());
        assert_eq!(foreign.len(), 1, "spoofed release is kept");
        t.note_request(DUID, MAC, "p_cli", 8, 1);
        let c = t.reply(DUID, 8, &[addr(0)], 1);
        assert!(matches!(&c[..], [Change::Unbind6(_)]));
        assert!(t.is_empty());
    }

    #[test]
    fn table_is_bounded() {
        let mut t = Bindings6::new(2);
        for i in 1..=3u16 {
            let duid = vec![0, 3, 0, 1, 2, 0, 0, 0, 0, i as u8];
            t.note_request(&duid, MAC, "p", u32::from(i), 0);
            let a = Dhcpv6Address {
                addr: Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, i),
                preferred_s: 10,
                valid_s: 100 + u32::from(i),
            };
            t.reply(&duid, u32::from(i), &[a], 0);
        }
        assert_eq!(t.len(), 2);
        assert!(t
            .of_ip(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 1), 0)
            .is_none());
    }

    #[test]
    fn duid_hex_round_trips_and_is_bounded() {
        assert_eq!(parse_duid_hex(&duid_hex(DUID)).as_deref(), Some(DUID));
        assert!(parse_duid_hex("").is_none());
        assert!(parse_duid_hex("abc").is_none());
        assert!(parse_duid_hex("zz").is_none());
        assert!(parse_duid_hex(&"00".repeat(131)).is_none());
    }
}
