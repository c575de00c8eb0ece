//! The guard's TOML configuration: parsed strictly (unknown keys are errors), then validated
//! into [`Config`] with parsed addresses and bounded numbers. The policy-level part (port trust,
//! static bindings, rate limits, blocked protocols) may instead come from a policy's `[l2]`
//! ([`Config::from_policy`]): it is merged key by key with the runtime TOML, a key set in both
//! is an error naming both places, and the merged result goes through the same validation. The
//! value predicates (interface names, unicast MACs, rate bounds) are the IR's
//! ([`rampart_ir::l2`]), which the policy front-end applies too.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::Deserialize;

use crate::decode::{Mac, NameProtocol};
use crate::GuardError;

/// Why: Linux interface names are at most 15 bytes (IFNAMSIZ 16 with the NUL); nft `ifname`
/// set elements have the same size.
pub const MAX_IFNAME_LEN: usize = rampart_ir::l2::MAX_IFNAME_LEN;
/// Why: Dell S6100 caps its snooping table at 4000 entries; a bridge with more leases than
/// that is beyond what the guard is designed for, and the cap bounds memory and the nft set.
pub const DEFAULT_MAX_BINDINGS: usize = 4096;
/// Hard ceiling for `max_bindings`.
pub const MAX_BINDINGS_LIMIT: usize = 65_536;

/// Every key optional, so a key's presence is known for the merge with a policy's `[l2]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    bridge: Option<String>,
    trusted_ports: Option<Vec<String>>,
    untrusted_ports: Option<Vec<String>>,
    bindings_file: Option<PathBuf>,
    events_file: Option<PathBuf>,
    max_bindings: Option<usize>,
    #[serde(default)]
    rate_limit: RawRateLimit,
    static_arp: Option<Vec<RawStatic>>,
    gateway: Option<RawGateway>,
    protected_ipv6: Option<Vec<std::net::Ipv6Addr>>,
    static_nd: Option<Vec<RawStaticNd>>,
    trusted_router: Option<Vec<RawRouter>>,
    ipv6_source_guard: Option<bool>,
    canary: Option<RawCanary>,
    #[serde(default)]
    block: RawBlock,
    table: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    dhcp_per_second: Option<u32>,
    dhcp_burst: Option<u32>,
    arp_per_second: Option<u32>,
    arp_burst: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStatic {
    ip: Ipv4Addr,
    mac: String,
    port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStaticNd {
    ip: std::net::Ipv6Addr,
    mac: String,
    port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRouter {
    mac: String,
    port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGateway {
    ip: Ipv4Addr,
    mac: String,
    interface: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCanary {
    source: Ipv4Addr,
    source6: Option<std::net::Ipv6Addr>,
    interface: Option<String>,
    interval_s: Option<u64>,
    protocols: Option<Vec<NameProtocol>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBlock {
    llmnr: Option<bool>,
    nbns: Option<bool>,
    mdns: Option<bool>,
}

/// Per-port DHCP client-message rate limit (starvation guard).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained client messages per second per untrusted port.
    pub per_second: u32,
    /// Burst allowance in messages.
    pub burst: u32,
}

/// Why: Cisco's default DHCP snooping limit is 15 pps on access ports and most vendors accept
/// 1–2048; 10/s with a burst of 20 lets a port's clients all renew at once after a reboot.
pub const DEFAULT_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 10,
    burst: 20,
};

/// Why: Cisco's DAI default is 15 ARP packets per second on untrusted ports; a burst of 30
/// covers a host resolving its gateway, DNS servers and peers right after link-up.
pub const DEFAULT_ARP_RATE_LIMIT: RateLimit = RateLimit {
    per_second: 15,
    burst: 30,
};

/// A static ARP entry: the pair is allowed by DAI (on `port` only, or on any port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticEntry {
    /// Sender IP.
    pub ip: Ipv4Addr,
    /// Sender MAC.
    pub mac: Mac,
    /// Bridge port, when the entry is tied to one.
    pub port: Option<String>,
}

/// A static IPv6 neighbour entry for ND inspection: `ip` may be claimed (NA target, DAD,
/// ND source) only by `mac` (on `port` only, or on any port).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StaticNd {
    /// The IPv6 address (link-local allowed: this is how link-local addresses are inspected).
    pub ip: std::net::Ipv6Addr,
    /// The MAC that owns it.
    pub mac: Mac,
    /// Bridge port, when the entry is tied to one.
    pub port: Option<String>,
}

/// A router whose advertisements are accepted on untrusted ports (RA guard by source MAC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedRouter {
    /// Ethernet source of its RAs.
    pub mac: Mac,
    /// The port it must arrive on; without it the MAC is trusted on every port (a MAC is
    /// easily forged, so prefer naming the port).
    pub port: Option<String>,
}

/// Host mode: the gateway's IP↔MAC pin (arp-family table and a permanent neighbour entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gateway {
    /// Gateway IPv4 address.
    pub ip: Ipv4Addr,
    /// Gateway MAC.
    pub mac: Mac,
    /// Interface towards the gateway.
    pub interface: String,
}

/// The poisoner canary.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Canary {
    /// Local IPv4 address the queries are sent from (must be configured on `interface`).
    pub source: Ipv4Addr,
    /// Local IPv6 address (link-local or global, on `interface`): when set, LLMNR and mDNS
    /// are asked over IPv6 too (ff02::1:3 and ff02::fb), where Responder answers as well.
    pub source6: Option<std::net::Ipv6Addr>,
    /// Interface to send on (default: the bridge).
    pub interface: String,
    /// Seconds between rounds.
    pub interval_s: u64,
    /// Protocols queried each round.
    pub protocols: Vec<NameProtocol>,
}

/// Why: a round every 30 s finds a poisoner quickly while adding three small multicast
/// packets per interval to the segment (Respounder's default loop is of the same order).
pub const DEFAULT_CANARY_INTERVAL_S: u64 = 30;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Bridge whose ports are guarded (bridge mode), if any.
    pub bridge: Option<String>,
    /// Trusted ports (DHCP servers, uplinks): no snooping or ARP checks.
    pub trusted_ports: BTreeSet<String>,
    /// Untrusted ports the guard watches; every port not trusted is untrusted in the kernel.
    pub untrusted_ports: BTreeSet<String>,
    /// Where the binding table is persisted.
    pub bindings_file: PathBuf,
    /// Where events are appended (JSON lines).
    pub events_file: PathBuf,
    /// Maximum bindings kept.
    pub max_bindings: usize,
    /// Per-port DHCP rate limit.
    pub rate_limit: RateLimit,
    /// Per-port ARP rate limit (untrusted ports).
    pub arp_rate_limit: RateLimit,
    /// Static ARP entries.
    pub static_arp: Vec<StaticEntry>,
    /// Host-mode gateway pin.
    pub gateway: Option<Gateway>,
    /// IPv6 addresses only trusted ports may claim (the gateway's link-local and global
    /// addresses): neighbour advertisements for them, and packets from them, arriving on
    /// untrusted ports are dropped (ND spoofing guard).
    pub protected_ipv6: BTreeSet<std::net::Ipv6Addr>,
    /// Static IPv6 neighbour entries for ND inspection.
    pub static_nd: Vec<StaticNd>,
    /// Routers whose RAs pass on untrusted ports (by MAC, optionally tied to a port).
    pub trusted_routers: Vec<TrustedRouter>,
    /// IPv6 source guard: any IPv6 packet (not only ND) from an untrusted port whose source is
    /// bound to another MAC or port is dropped. Off by default.
    pub ipv6_source_guard: bool,
    /// Poisoner canary.
    pub canary: Option<Canary>,
    /// Name-service protocols kept off the segment.
    pub block: BTreeSet<NameProtocol>,
    /// Name of the bridge table (default `rampart_guard`); the host table is `<table>_host`.
    pub table: String,
}

fn ifname(field: &str, name: &str) -> Result<String, GuardError> {
    if rampart_ir::l2::is_ifname(name) {
        Ok(name.to_string())
    } else {
        Err(GuardError::Config(format!(
            "{field}: {name:?} is not an interface name (1-{MAX_IFNAME_LEN} of [A-Za-z0-9_.@-])"
        )))
    }
}

fn mac(field: &str, text: &str) -> Result<Mac, GuardError> {
    rampart_ir::l2::parse_unicast_mac(text)
        .map(Mac)
        .ok_or_else(|| GuardError::Config(format!("{field}: {text:?} is not a unicast MAC")))
}

/// Where the two halves of a merged configuration come from, for error messages.
#[derive(Clone, Copy, Debug)]
pub struct Sources<'a> {
    /// The policy file as the user named it.
    pub policy: &'a str,
    /// The runtime configuration file, when one is given.
    pub runtime: Option<&'a str>,
}

impl Config {
    /// Parse and validate TOML text.
    pub fn from_toml(text: &str) -> Result<Self, GuardError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| GuardError::Config(e.to_string()))?;
        raw.validate()
    }

    /// The policy's `[l2]` merged with the runtime TOML (`runtime_text`; `None`: no runtime
    /// file, so `bindings_file` and `events_file` are missing and reported). A key set in both
    /// is an error naming both places (all such keys in one message); then the merged whole is
    /// validated exactly as [`Config::from_toml`] validates a file.
    pub fn from_policy(
        l2: &rampart_ir::L2Guard,
        runtime_text: Option<&str>,
        sources: Sources<'_>,
    ) -> Result<Self, GuardError> {
        let mut raw: RawConfig = match runtime_text {
            Some(text) => toml::from_str(text).map_err(|e| GuardError::Config(e.to_string()))?,
            None => RawConfig::default(),
        };
        merge(&mut raw, l2, sources)?;
        raw.validate()
    }
}

/// Move every key the policy sets into `raw`; a key already there is a conflict.
fn merge(
    raw: &mut RawConfig,
    l2: &rampart_ir::L2Guard,
    sources: Sources<'_>,
) -> Result<(), GuardError> {
    let mut both: Vec<&str> = Vec::new();
    fn take<T>(key: &'static str, ours: &mut Option<T>, policy: Option<T>, both: &mut Vec<&str>) {
        if let Some(value) = policy {
            if ours.is_some() {
                both.push(key);
            } else {
                *ours = Some(value);
            }
        }
    }
    take("bridge", &mut raw.bridge, l2.bridge.clone(), &mut both);
    take(
        "trusted_ports",
        &mut raw.trusted_ports,
        l2.trusted_ports.clone(),
        &mut both,
    );
    take(
        "untrusted_ports",
        &mut raw.untrusted_ports,
        l2.untrusted_ports.clone(),
        &mut both,
    );
    take(
        "protected_ipv6",
        &mut raw.protected_ipv6,
        l2.protected_ipv6.clone(),
        &mut both,
    );
    take(
        "ipv6_source_guard",
        &mut raw.ipv6_source_guard,
        l2.ipv6_source_guard,
        &mut both,
    );
    let v4 = |s: &rampart_ir::L2Static| match s.ip {
        std::net::IpAddr::V4(ip) => Ok(RawStatic {
            ip,
            mac: s.mac.clone(),
            port: s.port.clone(),
        }),
        std::net::IpAddr::V6(ip) => Err(GuardError::Config(format!(
            "policy [l2] static_arp: {ip} is not an IPv4 address"
        ))),
    };
    let v6 = |s: &rampart_ir::L2Static| match s.ip {
        std::net::IpAddr::V6(ip) => Ok(RawStaticNd {
            ip,
            mac: s.mac.clone(),
            port: s.port.clone(),
        }),
        std::net::IpAddr::V4(ip) => Err(GuardError::Config(format!(
            "policy [l2] static_nd: {ip} is not an IPv6 address"
        ))),
    };
    let static_arp = l2
        .static_arp
        .as_ref()
        .map(|v| v.iter().map(v4).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    take("static_arp", &mut raw.static_arp, static_arp, &mut both);
    let static_nd = l2
        .static_nd
        .as_ref()
        .map(|v| v.iter().map(v6).collect::<Result<Vec<_>, _>>())
        .transpose()?;
    take("static_nd", &mut raw.static_nd, static_nd, &mut both);
    let routers = l2.trusted_router.as_ref().map(|v| {
        v.iter()
            .map(|r| RawRouter {
                mac: r.mac.clone(),
                port: r.port.clone(),
            })
            .collect()
    });
    take(
        "trusted_router",
        &mut raw.trusted_router,
        routers,
        &mut both,
    );
    let gateway = l2.gateway.as_ref().map(|g| RawGateway {
        ip: g.ip,
        mac: g.mac.clone(),
        interface: g.interface.clone(),
    });
    take("gateway", &mut raw.gateway, gateway, &mut both);
    let r = &l2.rate_limit;
    let rl = &mut raw.rate_limit;
    take(
        "rate_limit.dhcp_per_second",
        &mut rl.dhcp_per_second,
        r.dhcp_per_second,
        &mut both,
    );
    take(
        "rate_limit.dhcp_burst",
        &mut rl.dhcp_burst,
        r.dhcp_burst,
        &mut both,
    );
    take(
        "rate_limit.arp_per_second",
        &mut rl.arp_per_second,
        r.arp_per_second,
        &mut both,
    );
    take(
        "rate_limit.arp_burst",
        &mut rl.arp_burst,
        r.arp_burst,
        &mut both,
    );
    let b = &l2.block;
    take("block.llmnr", &mut raw.block.llmnr, b.llmnr, &mut both);
    take("block.nbns", &mut raw.block.nbns, b.nbns, &mut both);
    take("block.mdns", &mut raw.block.mdns, b.mdns, &mut both);
    if both.is_empty() {
        return Ok(());
    }
    Err(GuardError::Config(format!(
        "{} set both in the policy's [l2] ({}, declared at {}) and in {}: give each key in one place (port trust belongs in the policy)",
        both.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", "),
        sources.policy,
        l2.loc,
        sources.runtime.unwrap_or("the runtime configuration"),
    )))
}

impl RawConfig {
    fn validate(self) -> Result<Config, GuardError> {
        let raw = self;
        let bindings_file = raw.bindings_file.ok_or_else(|| {
            GuardError::Config(
                "bindings_file is required (the guard's runtime configuration names it)".into(),
            )
        })?;
        let events_file = raw.events_file.ok_or_else(|| {
            GuardError::Config(
                "events_file is required (the guard's runtime configuration names it)".into(),
            )
        })?;
        let bridge = raw
            .bridge
            .as_deref()
            .map(|b| ifname("bridge", b))
            .transpose()?;
        let trusted_ports = raw
            .trusted_ports
            .unwrap_or_default()
            .iter()
            .map(|p| ifname("trusted_ports", p))
            .collect::<Result<BTreeSet<_>, _>>()?;
        let untrusted_ports = raw
            .untrusted_ports
            .unwrap_or_default()
            .iter()
            .map(|p| ifname("untrusted_ports", p))
            .collect::<Result<BTreeSet<_>, _>>()?;
        if let Some(both) = trusted_ports.intersection(&untrusted_ports).next() {
            return Err(GuardError::Config(format!(
                "port {both:?} is listed as trusted and untrusted"
            )));
        }
        if bridge.is_none() && raw.gateway.is_none() {
            return Err(GuardError::Config(
                "nothing to guard: set `bridge` (switch role) or `[gateway]` (host role)".into(),
            ));
        }
        let protected_ipv6 = raw.protected_ipv6.unwrap_or_default();
        let static_nd_raw = raw.static_nd.unwrap_or_default();
        let trusted_router_raw = raw.trusted_router.unwrap_or_default();
        let ipv6_source_guard = raw.ipv6_source_guard.unwrap_or(false);
        if bridge.is_none() && !protected_ipv6.is_empty() {
            return Err(GuardError::Config("protected_ipv6 needs `bridge`".into()));
        }
        if let Some(bad) = protected_ipv6
            .iter()
            .find(|a| !rampart_ir::l2::is_unicast_v6(a))
        {
            return Err(GuardError::Config(format!(
                "protected_ipv6: {bad} is not a unicast address"
            )));
        }
        if bridge.is_none() && !(trusted_ports.is_empty() && untrusted_ports.is_empty()) {
            return Err(GuardError::Config(
                "trusted_ports/untrusted_ports need `bridge`".into(),
            ));
        }
        let max_bindings = raw.max_bindings.unwrap_or(DEFAULT_MAX_BINDINGS);
        if max_bindings == 0 || max_bindings > MAX_BINDINGS_LIMIT {
            return Err(GuardError::Config(format!(
                "max_bindings must be 1..={MAX_BINDINGS_LIMIT}"
            )));
        }
        let rate_limit = RateLimit {
            per_second: raw
                .rate_limit
                .dhcp_per_second
                .unwrap_or(DEFAULT_RATE_LIMIT.per_second),
            burst: raw
                .rate_limit
                .dhcp_burst
                .unwrap_or(DEFAULT_RATE_LIMIT.burst),
        };
        let (per_second, burst) = (rampart_ir::l2::RATE_PER_SECOND, rampart_ir::l2::RATE_BURST);
        if !per_second.contains(&rate_limit.per_second) || !burst.contains(&rate_limit.burst) {
            return Err(GuardError::Config(
                "rate_limit: dhcp_per_second must be 1..=2048 and dhcp_burst 1..=4096".into(),
            ));
        }
        let arp_rate_limit = RateLimit {
            per_second: raw
                .rate_limit
                .arp_per_second
                .unwrap_or(DEFAULT_ARP_RATE_LIMIT.per_second),
            burst: raw
                .rate_limit
                .arp_burst
                .unwrap_or(DEFAULT_ARP_RATE_LIMIT.burst),
        };
        if !per_second.contains(&arp_rate_limit.per_second)
            || !burst.contains(&arp_rate_limit.burst)
        {
            return Err(GuardError::Config(
                "rate_limit: arp_per_second must be 1..=2048 and arp_burst 1..=4096".into(),
            ));
        }
        let mut static_arp = Vec::new();
        for s in raw.static_arp.iter().flatten() {
            let port = s
                .port
                .as_deref()
                .map(|p| ifname("static_arp.port", p))
                .transpose()?;
            static_arp.push(StaticEntry {
                ip: s.ip,
                mac: mac("static_arp.mac", &s.mac)?,
                port,
            });
        }
        if bridge.is_none()
            && (!static_nd_raw.is_empty() || !trusted_router_raw.is_empty() || ipv6_source_guard)
        {
            return Err(GuardError::Config(
                "static_nd/trusted_router/ipv6_source_guard need `bridge`".into(),
            ));
        }
        let mut static_nd = Vec::new();
        for s in &static_nd_raw {
            if !rampart_ir::l2::is_unicast_v6(&s.ip) {
                return Err(GuardError::Config(format!(
                    "static_nd.ip: {} is not a unicast address",
                    s.ip
                )));
            }
            static_nd.push(StaticNd {
                ip: s.ip,
                mac: mac("static_nd.mac", &s.mac)?,
                port: s
                    .port
                    .as_deref()
                    .map(|p| ifname("static_nd.port", p))
                    .transpose()?,
            });
        }
        let mut trusted_routers = Vec::new();
        for r in &trusted_router_raw {
            trusted_routers.push(TrustedRouter {
                mac: mac("trusted_router.mac", &r.mac)?,
                port: r
                    .port
                    .as_deref()
                    .map(|p| ifname("trusted_router.port", p))
                    .transpose()?,
            });
        }
        let gateway = raw
            .gateway
            .map(|g| -> Result<Gateway, GuardError> {
                Ok(Gateway {
                    ip: g.ip,
                    mac: mac("gateway.mac", &g.mac)?,
                    interface: ifname("gateway.interface", &g.interface)?,
                })
            })
            .transpose()?;
        let canary = match raw.canary {
            None => None,
            Some(c) => {
                let interface = match (c.interface.as_deref(), bridge.as_deref()) {
                    (Some(i), _) | (None, Some(i)) => ifname("canary.interface", i)?,
                    (None, None) => {
                        return Err(GuardError::Config(
                            "canary.interface is required without `bridge`".into(),
                        ))
                    }
                };
                let interval_s = c.interval_s.unwrap_or(DEFAULT_CANARY_INTERVAL_S);
                if !(1..=86_400).contains(&interval_s) {
                    return Err(GuardError::Config(
                        "canary.interval_s must be 1..=86400".into(),
                    ));
                }
                let mut protocols = c.protocols.unwrap_or_else(|| {
                    vec![NameProtocol::Llmnr, NameProtocol::Nbns, NameProtocol::Mdns]
                });
                protocols.sort();
                protocols.dedup();
                if let Some(a) = c.source6.filter(|a| a.is_multicast() || a.is_unspecified()) {
                    return Err(GuardError::Config(format!(
                        "canary.source6: {a} is not a unicast address"
                    )));
                }
                Some(Canary {
                    source: c.source,
                    source6: c.source6,
                    interface,
                    interval_s,
                    protocols,
                })
            }
        };
        let mut block = BTreeSet::new();
        for (on, p) in [
            (raw.block.llmnr, NameProtocol::Llmnr),
            (raw.block.nbns, NameProtocol::Nbns),
            (raw.block.mdns, NameProtocol::Mdns),
        ] {
            if on == Some(true) {
                block.insert(p);
            }
        }
        let table = raw.table.unwrap_or_else(|| "rampart_guard".into());
        if table.is_empty()
            || table.len() > 32
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(GuardError::Config(format!(
                "table: {table:?} must be 1-32 of [A-Za-z0-9_]"
            )));
        }
        Ok(Config {
            bridge,
            trusted_ports,
            untrusted_ports,
            bindings_file,
            events_file,
            max_bindings,
            rate_limit,
            arp_rate_limit,
            static_arp,
            gateway,
            protected_ipv6: protected_ipv6.into_iter().collect(),
            static_nd,
            trusted_routers,
            ipv6_source_guard,
            canary,
            block,
            table,
        })
    }
}

impl Config {
    /// True when `port` is trusted. The bridge device itself is: frames read there are the
    /// ones this host sends into the bridge (e.g. its own DHCP server's replies).
    pub fn is_trusted(&self, port: &str) -> bool {
        self.trusted_ports.contains(port) || self.bridge.as_deref() == Some(port)
    }

    /// True when a router advertisement from `mac` on `port` is allowed: a trusted port, or a
    /// `[[trusted_router]]` entry for the MAC (on that port, or port-less).
    pub fn ra_allowed(&self, port: &str, mac: &Mac) -> bool {
        self.is_trusted(port)
            || self
                .trusted_routers
                .iter()
                .any(|r| r.mac == *mac && r.port.as_deref().is_none_or(|p| p == port))
    }

    /// Every port the guard watches (trusted and untrusted).
    pub fn ports(&self) -> impl Iterator<Item = &String> {
        self.trusted_ports.iter().chain(self.untrusted_ports.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
bridge = "br0"
trusted_ports = ["p_srv"]
untrusted_ports = ["p_cli"]
bindings_file = "/tmp/b"
events_file = "/tmp/e"
"#;

    #[test]
    fn canary_source6_must_be_unicast() {
        let base = "bridge = \"br0\"\nbindings_file = \"/tmp/b\"\nevents_file = \"/tmp/e\"\n[canary]\nsource = \"192.0.2.1\"\n";
        let ok = Config::from_toml(&format!("{base}source6 = \"2001:db8::1\"\n")).unwrap();
        assert_eq!(
            ok.canary.unwrap().source6,
            Some("2001:db8::1".parse().unwrap())
        );
        let err = Config::from_toml(&format!("{base}source6 = \"ff02::1\"\n")).unwrap_err();
        assert!(err.to_string().contains("canary.source6"), "{err}");
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml(MINIMAL).unwrap();
        assert_eq!(c.rate_limit, DEFAULT_RATE_LIMIT);
        assert_eq!(c.max_bindings, DEFAULT_MAX_BINDINGS);
        assert_eq!(c.table, "rampart_guard");
        assert!(c.is_trusted("p_srv") && !c.is_trusted("p_cli"));
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_toml(&format!("{MINIMAL}\nbrigde = \"x\"\n")).unwrap_err();
        assert!(e.to_string().contains("brigde"), "{e}");
        let e = Config::from_toml(&format!("{MINIMAL}\n[rate_limit]\ndhcp_pps = 3\n")).unwrap_err();
        assert!(e.to_string().contains("dhcp_pps"), "{e}");
    }

    #[test]
    fn port_both_trusted_and_untrusted_is_refused() {
        let text = MINIMAL.replace("[\"p_cli\"]", "[\"p_srv\"]");
        assert!(Config::from_toml(&text).is_err());
    }

    #[test]
    fn static_nd_and_trusted_routers_are_parsed_and_checked() {
        let text = format!(
            "{MINIMAL}\n[[static_nd]]\nip = \"fe80::1\"\nmac = \"02:00:00:00:00:01\"\nport = \"p_srv\"\n\
             [[trusted_router]]\nmac = \"02:00:00:00:00:77\"\nport = \"p_cli\"\n\
             [[trusted_router]]\nmac = \"02:00:00:00:00:78\"\n"
        );
        let c = Config::from_toml(&text).unwrap();
        assert_eq!(c.static_nd.len(), 1);
        let r77 = Mac([2, 0, 0, 0, 0, 0x77]);
        let r78 = Mac([2, 0, 0, 0, 0, 0x78]);
        assert!(c.ra_allowed("p_cli", &r77));
        assert!(!c.ra_allowed("p_other", &r77), "tied to its port");
        assert!(c.ra_allowed("p_other", &r78), "port-less");
        assert!(!c.ra_allowed("p_cli", &Mac([2, 0, 0, 0, 0, 0x66])));
        assert!(
            c.ra_allowed("p_srv", &Mac([2, 0, 0, 0, 0, 0x66])),
            "trusted port"
        );
        let bad =
            format!("{MINIMAL}\n[[static_nd]]\nip = \"ff02::1\"\nmac = \"02:00:00:00:00:01\"\n");
        assert!(Config::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("static_nd.ip"));
        let bad = format!("{MINIMAL}\n[[trusted_router]]\nmac = \"02:00:00:00:00:01\"\nvlan = 3\n");
        assert!(Config::from_toml(&bad)
            .unwrap_err()
            .to_string()
            .contains("vlan"));
    }

    fn policy_l2() -> rampart_ir::L2Guard {
        rampart_ir::L2Guard {
            bridge: Some("br0".into()),
            trusted_ports: Some(vec!["p_srv".into()]),
            untrusted_ports: Some(vec!["p_cli".into()]),
            static_arp: Some(vec![rampart_ir::L2Static {
                ip: "192.0.2.1".parse().unwrap(),
                mac: "02:00:00:00:00:01".into(),
                port: Some("p_srv".into()),
            }]),
            rate_limit: rampart_ir::L2RateLimit {
                dhcp_per_second: Some(5),
                ..rampart_ir::L2RateLimit::default()
            },
            block: rampart_ir::L2Block {
                llmnr: Some(true),
                ..rampart_ir::L2Block::default()
            },
            loc: rampart_ir::SourceLoc {
                file: "policy.toml".into(),
                line: 4,
                col: 1,
            },
            ..rampart_ir::L2Guard::default()
        }
    }

    const SOURCES: Sources<'static> = Sources {
        policy: "policy.toml",
        runtime: Some("runtime.toml"),
    };

    #[test]
    fn policy_l2_merged_with_runtime_equals_the_whole_file() {
        let runtime = "bindings_file = \"/tmp/b\"\nevents_file = \"/tmp/e\"\ntable = \"t1\"\n[rate_limit]\narp_burst = 50\n";
        let merged = Config::from_policy(&policy_l2(), Some(runtime), SOURCES).unwrap();
        let whole = Config::from_toml(&format!(
            "{MINIMAL}table = \"t1\"\n[rate_limit]\narp_burst = 50\ndhcp_per_second = 5\n\
             [block]\nllmnr = true\n[[static_arp]]\nip = \"192.0.2.1\"\nmac = \"02:00:00:00:00:01\"\nport = \"p_srv\"\n"
        ))
        .unwrap();
        assert_eq!(merged, whole);
        assert!(merged.is_trusted("p_srv") && !merged.is_trusted("p_cli"));
        assert_eq!(merged.rate_limit.per_second, 5);
        assert_eq!(merged.arp_rate_limit.burst, 50);
    }

    #[test]
    fn a_key_in_both_places_is_refused_naming_both() {
        let runtime = format!("{MINIMAL}[rate_limit]\ndhcp_per_second = 9\n[block]\nmdns = true\n");
        let e = Config::from_policy(&policy_l2(), Some(&runtime), SOURCES)
            .unwrap_err()
            .to_string();
        for needle in [
            "`bridge`",
            "`trusted_ports`",
            "`untrusted_ports`",
            "`rate_limit.dhcp_per_second`",
            "policy.toml",
            "policy.toml:4:1",
            "runtime.toml",
        ] {
            assert!(e.contains(needle), "{needle}: {e}");
        }
        assert!(!e.contains("block.mdns"), "{e}");
    }

    #[test]
    fn the_merge_is_validated_like_a_file() {
        // No runtime file: the state files are missing.
        let e = Config::from_policy(&policy_l2(), None, SOURCES)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bindings_file is required"), "{e}");
        // Cross-key rules apply to the merged whole: ports without a bridge.
        let mut no_bridge = policy_l2();
        no_bridge.bridge = None;
        let runtime = "bindings_file = \"/b\"\nevents_file = \"/e\"\n[gateway]\nip = \"192.0.2.1\"\nmac = \"02:00:00:00:00:01\"\ninterface = \"eth0\"\n";
        let e = Config::from_policy(&no_bridge, Some(runtime), SOURCES)
            .unwrap_err()
            .to_string();
        assert!(e.contains("need `bridge`"), "{e}");
        // A hand-built IR is not trusted: an IPv6 static_arp entry is refused.
        let mut bad = policy_l2();
        bad.static_arp.as_mut().unwrap()[0].ip = "2001:db8::1".parse().unwrap();
        let runtime = "bindings_file = \"/b\"\nevents_file = \"/e\"\n";
        assert!(Config::from_policy(&bad, Some(runtime), SOURCES)
            .unwrap_err()
            .to_string()
            .contains("not an IPv4 address"));
    }

    #[test]
    fn bad_names_and_macs_are_refused() {
        assert!(Config::from_toml(&MINIMAL.replace("br0", "br0; flush ruleset")).is_err());
        let text =
            format!("{MINIMAL}\n[[static_arp]]\nip = \"192.0.2.1\"\nmac = \"ff:ff:ff:ff:ff:ff\"\n");
        assert!(Config::from_toml(&text).is_err());
    }
}
