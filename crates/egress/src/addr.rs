//! Special-purpose address classification (pure): which resolved addresses the proxy may connect
//! to. The table follows the IANA IPv4/IPv6 special-purpose registries (RFC 6890 and later
//! additions) rather than "is global unicast" heuristics, because Go's and Rust's helpers differ
//! (Go calls 192.0.2/24, 198.18/15, 240/4 and 0/8 global; Rust does not unwrap `::ffff:a.b.c.d`
//! on its own). IPv4-mapped addresses are classified as the IPv4 address they carry; NAT64,
//! 6to4 and Teredo addresses are denied as such and additionally checked for an embedded
//! metadata address, so an allowlist entry can never open the cloud metadata service.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;
use serde::Serialize;

/// Why an address is special (not a public unicast destination).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Special {
    /// `0.0.0.0/8` (RFC 1122 "this network", includes 0.0.0.0) and `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 `10/8`, `172.16/12`, `192.168/16`.
    Private,
    /// RFC 6598 shared address space `100.64.0.0/10` (carrier-grade NAT).
    SharedCgnat,
    /// `169.254.0.0/16`, `fe80::/10`.
    LinkLocal,
    /// Cloud instance metadata: `169.254.169.254`, `fd00:ec2::254` (never allowlistable).
    Metadata,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// RFC 5737 `192.0.2/24`, `198.51.100/24`, `203.0.113/24`; RFC 3849 `2001:db8::/32`;
    /// RFC 9637 `3fff::/20`.
    Documentation,
    /// RFC 2544 `198.18.0.0/15` (also handed out by fake-IP proxies).
    Benchmarking,
    /// `192.0.0.0/24` IETF protocol assignments, `240.0.0.0/4`, `192.88.99.0/24` (deprecated
    /// 6to4 relay anycast), `100::/64` discard, `2001::/23` IETF assignments, `fec0::/10`
    /// site-local, `5f00::/16` SRv6 SIDs.
    Reserved,
    /// `fc00::/7` unique local addresses.
    UniqueLocal,
    /// `::a.b.c.d` (deprecated IPv4-compatible form, RFC 4291 §2.5.5.1).
    Ipv4Compatible,
    /// `64:ff9b::/96` and `64:ff9b:1::/48` (NAT64, RFC 6052 / RFC 8215).
    Nat64,
    /// `2002::/16` (6to4, RFC 3056).
    SixToFour,
    /// `2001::/32` (Teredo, RFC 4380).
    Teredo,
}

impl Special {
    /// Stable snake_case name (event reasons, metrics).
    pub fn name(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Loopback => "loopback",
            Self::Private => "private",
            Self::SharedCgnat => "shared_cgnat",
            Self::LinkLocal => "link_local",
            Self::Metadata => "metadata",
            Self::Multicast => "multicast",
            Self::Broadcast => "broadcast",
            Self::Documentation => "documentation",
            Self::Benchmarking => "benchmarking",
            Self::Reserved => "reserved",
            Self::UniqueLocal => "unique_local",
            Self::Ipv4Compatible => "ipv4_compatible",
            Self::Nat64 => "nat64",
            Self::SixToFour => "six_to_four",
            Self::Teredo => "teredo",
        }
    }
}

const METADATA_V4: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);

fn in4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn in6(ip: Ipv6Addr, net: [u16; 8], len: u32) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u128::MAX << (128 - len)
    };
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

/// Special class of an IPv4 address, `None` for public unicast.
pub fn special_v4(ip: Ipv4Addr) -> Option<Special> {
    // Order matters only where ranges nest: metadata inside link-local.
    let table: &[([u8; 4], u32, Special)] = &[
        ([169, 254, 169, 254], 32, Special::Metadata),
        ([255, 255, 255, 255], 32, Special::Broadcast),
        ([0, 0, 0, 0], 8, Special::Unspecified),
        ([10, 0, 0, 0], 8, Special::Private),
        ([100, 64, 0, 0], 10, Special::SharedCgnat),
        ([127, 0, 0, 0], 8, Special::Loopback),
        ([169, 254, 0, 0], 16, Special::LinkLocal),
        ([172, 16, 0, 0], 12, Special::Private),
        ([192, 0, 0, 0], 24, Special::Reserved),
        ([192, 0, 2, 0], 24, Special::Documentation),
        ([192, 88, 99, 0], 24, Special::Reserved),
        ([192, 168, 0, 0], 16, Special::Private),
        ([198, 18, 0, 0], 15, Special::Benchmarking),
        ([198, 51, 100, 0], 24, Special::Documentation),
        ([203, 0, 113, 0], 24, Special::Documentation),
        ([224, 0, 0, 0], 4, Special::Multicast),
        ([240, 0, 0, 0], 4, Special::Reserved),
    ];
    table
        .iter()
        .find(|(net, len, _)| in4(ip, *net, *len))
        .map(|(_, _, s)| *s)
}

/// The IPv4 address an IPv6 address carries by construction (mapped, compatible, NAT64, 6to4,
/// Teredo client), if any.
pub fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    if in6(ip, [0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96)
        || in6(ip, [0, 0, 0, 0, 0, 0, 0, 0], 96)
        || in6(ip, [0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48)
    {
        return Some(Ipv4Addr::from(bits as u32));
    }
    if in6(ip, [0x2002, 0, 0, 0, 0, 0, 0, 0], 16) {
        return Some(Ipv4Addr::from((bits >> 80) as u32));
    }
    if in6(ip, [0x2001, 0, 0, 0, 0, 0, 0, 0], 32) {
        // Teredo stores the client's public IPv4 address bit-inverted in the last 32 bits.
        return Some(Ipv4Addr::from(!(bits as u32)));
    }
    None
}

/// Special class of an IPv6 address, `None` for public unicast. IPv4-mapped addresses take
/// the class of the IPv4 address they carry.
pub fn special_v6(ip: Ipv6Addr) -> Option<Special> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return special_v4(v4);
    }
    if ip == METADATA_V6 {
        return Some(Special::Metadata);
    }
    if ip.is_unspecified() {
        return Some(Special::Unspecified);
    }
    if ip.is_loopback() {
        return Some(Special::Loopback);
    }
    let table: &[([u16; 8], u32, Special)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, Special::Ipv4Compatible),
        ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, Special::Nat64),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, Special::Nat64),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, Special::Reserved),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 32, Special::Teredo),
        ([0x2001, 0, 0, 0, 0, 0, 0, 0], 23, Special::Reserved),
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            Special::Documentation,
        ),
        ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, Special::SixToFour),
        ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Special::Documentation),
        ([0x5f00, 0, 0, 0, 0, 0, 0, 0], 16, Special::Reserved),
        ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Special::UniqueLocal),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Special::LinkLocal),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Special::Reserved),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Special::Multicast),
    ];
    table
        .iter()
        .find(|(net, len, _)| in6(ip, *net, *len))
        .map(|(_, _, s)| *s)
}

/// Special class of any address.
pub fn special(ip: IpAddr) -> Option<Special> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

/// Whether `ip` is, or carries, a cloud metadata address.
pub fn is_metadata(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4 == METADATA_V4,
        IpAddr::V6(v6) => v6 == METADATA_V6 || embedded_v4(v6) == Some(METADATA_V4),
    }
}

/// The address to compare with rules and to dial: IPv4-mapped IPv6 becomes IPv4 (so
/// `::ffff:127.0.0.1` meets the same rules as `127.0.0.1`).
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// An address rule: a prefix, optionally restricted to one port (`10.0.0.1:321`,
/// `[2001:db8::1]:443`, `10.0.0.0/8`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddrRule {
    /// Prefix (IPv4-mapped prefixes are stored as IPv4).
    pub net: IpNet,
    /// Port restriction.
    pub port: Option<u16>,
}

impl AddrRule {
    /// Parses `CIDR`, `IP`, `IP:port` or `[IPv6]:port`.
    pub fn parse(text: &str) -> Option<Self> {
        let t = text.trim();
        if let Ok(net) = t.parse::<IpNet>() {
            return Some(Self {
                net: canonical_net(net),
                port: None,
            });
        }
        if let Ok(ip) = t.parse::<IpAddr>() {
            return Some(Self {
                net: IpNet::from(canonical(ip)),
                port: None,
            });
        }
        if let Ok(sa) = t.parse::<SocketAddr>() {
            return Some(Self {
                net: IpNet::from(canonical(sa.ip())),
                port: Some(sa.port()),
            });
        }
        None
    }

    /// Whether the rule covers `ip` (canonical) on `port`.
    pub fn covers(&self, ip: IpAddr, port: u16) -> bool {
        self.net.contains(&ip) && self.port.is_none_or(|p| p == port)
    }
}

fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if v6.prefix_len() >= 96 {
            if let Some(v4) = v6.addr().to_ipv4_mapped() {
                if let Ok(n) = ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96) {
                    return IpNet::V4(n.trunc());
                }
            }
        }
    }
    net
}

/// Outcome of checking one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "verdict", content = "class", rename_all = "snake_case")]
pub enum AddrVerdict {
    /// Public unicast, no rule involved.
    AllowPublic,
    /// Covered by an allow rule.
    AllowListed,
    /// Covered by a deny rule (deny rules win over allow rules).
    DenyListed,
    /// Special-purpose address, not allowlisted.
    DenySpecial(Special),
}

impl AddrVerdict {
    /// Whether the proxy may connect.
    pub fn allows(self) -> bool {
        matches!(self, Self::AllowPublic | Self::AllowListed)
    }
}

/// Classifies `ip:port` against the special-purpose table and the rules. Order: metadata (always
/// denied, allow rules cannot open it) → deny rules → allow rules → special ranges → public.
pub fn classify(ip: IpAddr, port: u16, allow: &[AddrRule], deny: &[AddrRule]) -> AddrVerdict {
    if is_metadata(ip) {
        return AddrVerdict::DenySpecial(Special::Metadata);
    }
    let c = canonical(ip);
    if deny.iter().any(|r| r.covers(c, port)) {
        return AddrVerdict::DenyListed;
    }
    if allow.iter().any(|r| r.covers(c, port)) {
        return AddrVerdict::AllowListed;
    }
    match special(c) {
        Some(s) => AddrVerdict::DenySpecial(s),
        None => AddrVerdict::AllowPublic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(list: &[&str]) -> Vec<AddrRule> {
        list.iter().map(|s| AddrRule::parse(s).unwrap()).collect()
    }

    /// Smokescreen's `TestClassifyAddr` (pkg/smokescreen/smokescreen_test.go) as facts: the same
    /// allow/deny configuration and expectations, mapped onto this classifier's verdicts
    /// (Smokescreen's `ipDenyNotGlobalUnicast`/`ipDenyPrivateRange` become the specific class).
    #[test]
    fn smokescreen_classify_addr_cases() {
        let allow = rules(&[
            "8.8.9.0/24",
            "10.0.1.0/24",
            "172.16.1.0/24",
            "192.168.1.0/24",
            "127.0.1.0/24",
            "10.0.0.1:321",
        ]);
        let deny = rules(&["1.1.1.1/32", "8.8.8.8:321"]);
        use AddrVerdict::*;
        use Special::*;
        let cases: &[(&str, u16, AddrVerdict)] = &[
            ("8.8.8.8", 1, AllowPublic),
            ("8.8.9.8", 1, AllowListed),
            ("10.0.0.1", 1, DenySpecial(Private)),
            ("10.0.0.1", 321, AllowListed),
            ("10.0.1.1", 1, AllowListed),
            ("172.16.0.1", 1, DenySpecial(Private)),
            ("172.16.1.1", 1, AllowListed),
            ("192.168.0.1", 1, DenySpecial(Private)),
            ("192.168.1.1", 1, AllowListed),
            ("8.8.8.8", 321, DenyListed),
            ("1.1.1.1", 1, DenyListed),
            ("127.0.0.1", 1, DenySpecial(Loopback)),
            ("127.255.255.255", 1, DenySpecial(Loopback)),
            ("::1", 1, DenySpecial(Loopback)),
            ("127.0.1.1", 1, AllowListed),
            ("169.254.169.254", 1, DenySpecial(Metadata)),
            ("255.255.255.255", 1, DenySpecial(Broadcast)),
            ("ff02:0:0:0:0:0:0:2", 1, DenySpecial(Multicast)),
            // TestMostSpecificIPPolicySafetyChecks: CGNAT and NAT64 embedding.
            ("100.64.0.1", 443, DenySpecial(SharedCgnat)),
            ("64:ff9b::1", 443, DenySpecial(Nat64)),
            // Mapped forms meet the IPv4 rules ("mapped tie"/"mapped port").
            ("::ffff:10.0.0.1", 321, AllowListed),
            ("::ffff:8.8.8.8", 321, DenyListed),
            ("::ffff:127.0.0.1", 1, DenySpecial(Loopback)),
        ];
        for (ip, port, want) in cases {
            let got = classify(ip.parse().unwrap(), *port, &allow, &deny);
            assert_eq!(got, *want, "{ip}:{port}");
        }
    }

    /// Every range in the table with an address inside and its neighbours just outside.
    #[test]
    fn special_table_boundaries() {
        use Special::*;
        let cases: &[(&str, Option<Special>)] = &[
            ("0.0.0.0", Some(Unspecified)),
            ("0.255.255.254", Some(Unspecified)),
            ("1.0.0.0", None),
            ("9.255.255.255", None),
            ("10.0.0.0", Some(Private)),
            ("10.255.255.255", Some(Private)),
            ("11.0.0.0", None),
            ("100.63.255.254", None),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.254", Some(SharedCgnat)),
            ("100.128.0.1", None),
            ("126.255.255.255", None),
            ("127.0.0.1", Some(Loopback)),
            ("128.0.0.0", None),
            ("169.253.255.255", None),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.169.253", Some(LinkLocal)),
            ("169.254.169.254", Some(Metadata)),
            ("169.255.0.0", None),
            ("172.15.255.255", None),
            ("172.16.0.0", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("172.32.0.0", None),
            ("192.0.0.8", Some(Reserved)),
            ("192.0.1.1", None),
            ("192.0.2.5", Some(Documentation)),
            ("192.0.3.5", None),
            ("192.88.98.1", None),
            ("192.88.99.1", Some(Reserved)),
            ("192.88.100.1", None),
            ("192.167.255.255", None),
            ("192.168.0.1", Some(Private)),
            ("192.169.0.0", None),
            ("198.17.255.254", None),
            ("198.18.0.1", Some(Benchmarking)),
            ("198.19.255.254", Some(Benchmarking)),
            ("198.20.0.1", None),
            ("198.51.100.5", Some(Documentation)),
            ("198.51.101.5", None),
            ("203.0.112.5", None),
            ("203.0.113.5", Some(Documentation)),
            ("203.0.114.5", None),
            ("223.255.255.255", None),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.255", Some(Multicast)),
            ("240.0.0.1", Some(Reserved)),
            ("254.255.255.254", Some(Reserved)),
            ("255.255.255.254", Some(Reserved)),
            ("255.255.255.255", Some(Broadcast)),
            ("8.8.8.8", None),
            ("::", Some(Unspecified)),
            ("::1", Some(Loopback)),
            ("::2", Some(Ipv4Compatible)),
            ("::7f00:1", Some(Ipv4Compatible)),
            ("::1:0:0:0", None),
            ("::ffff:10.0.0.1", Some(Private)),
            ("::ffff:8.8.8.8", None),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("64:ff9b::a9fe:a9fe", Some(Nat64)),
            ("64:ff9b::808:808", Some(Nat64)),
            ("64:ff9b:1::1", Some(Nat64)),
            ("64:ff9a:ffff::1", None),
            ("100::1", Some(Reserved)),
            ("100:0:0:1::1", None),
            ("2001::1", Some(Teredo)),
            ("2001:1::1", Some(Reserved)),
            ("2001:1ff::1", Some(Reserved)),
            ("2001:200::1", None),
            ("2001:db8::1", Some(Documentation)),
            ("2001:db9::1", None),
            ("2002::1", Some(SixToFour)),
            ("2002:ffff::1", Some(SixToFour)),
            ("2003::1", None),
            ("2606:4700:4700::1111", None),
            ("3ffe:ffff::1", None),
            ("3fff::1", Some(Documentation)),
            ("3fff:1000::1", None),
            ("5f00::1", Some(Reserved)),
            ("fbff::1", None),
            ("fc00::1", Some(UniqueLocal)),
            ("fd00:ec2::254", Some(Metadata)),
            ("fdff::1", Some(UniqueLocal)),
            ("fe00::1", None),
            ("fe7f::1", None),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("fec0::1", Some(Reserved)),
            ("feff::1", Some(Reserved)),
            ("ff02::1", Some(Multicast)),
            ("ff0e::1", Some(Multicast)),
        ];
        for (ip, want) in cases {
            assert_eq!(special(ip.parse().unwrap()), *want, "{ip}");
        }
    }

    #[test]
    fn metadata_is_never_allowlisted_in_any_spelling() {
        let allow = rules(&["0.0.0.0/0", "::/0"]);
        for ip in [
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:a9fe:a9fe::1",
            // Teredo: client address bit-inverted (169.254.169.254 → 56.1.86.1 = 0x5601_5601).
            "2001:0:4136:e378:8000:63bf:5601:5601",
            "fd00:ec2::254",
        ] {
            assert_eq!(
                classify(ip.parse().unwrap(), 80, &allow, &[]),
                AddrVerdict::DenySpecial(Special::Metadata),
                "{ip}"
            );
        }
    }

    #[test]
    fn deny_rules_win_over_allow_rules() {
        let allow = rules(&["10.0.0.0/24"]);
        let deny = rules(&["10.0.0.5"]);
        let ip: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(classify(ip, 443, &allow, &deny), AddrVerdict::DenyListed);
        let other: IpAddr = "10.0.0.6".parse().unwrap();
        assert_eq!(
            classify(other, 443, &allow, &deny),
            AddrVerdict::AllowListed
        );
    }

    #[test]
    fn mapped_allow_rules_are_stored_as_ipv4() {
        let r = AddrRule::parse("::ffff:10.0.0.5/128").unwrap();
        assert_eq!(r.net, "10.0.0.5/32".parse::<IpNet>().unwrap());
        let r = AddrRule::parse("[2001:db8::1]:443").unwrap();
        assert_eq!(r.port, Some(443));
        assert!(AddrRule::parse("not-an-ip").is_none());
    }
}
