//! Bounded decoders for the frames the guard inspects: Ethernet (up to two VLAN tags), ARP,
//! IPv4/IPv6 with UDP, DHCPv4 (BOOTP header and options), the DHCPv6 message type, ICMPv6 type
//! (enough for RA guard) and DNS-format name-service messages (LLMNR, mDNS, NBT-NS).
//!
//! Every decoder takes a byte slice and returns `None` (or a partial result) on anything short or
//! malformed; none allocates more than a named limit and none panics (proptests drive them with
//! arbitrary bytes). Only what a decision needs is decoded.

use std::net::{Ipv4Addr, Ipv6Addr};

/// A MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    /// The all-zero address (unset ARP target hardware addresses).
    pub const ZERO: Mac = Mac([0; 6]);

    /// Parse `aa:bb:cc:dd:ee:ff` (case-insensitive, `-` accepted as separator).
    pub fn parse(text: &str) -> Option<Mac> {
        let mut out = [0u8; 6];
        let mut parts = text.split([':', '-']);
        for byte in &mut out {
            let part = parts.next()?;
            if part.len() != 2 {
                return None;
            }
            *byte = u8::from_str_radix(part, 16).ok()?;
        }
        parts.next().is_none().then_some(Mac(out))
    }

    /// True for group (multicast/broadcast) addresses: they never own a station.
    pub fn is_group(&self) -> bool {
        self.0[0] & 0x01 != 0
    }
}

impl std::fmt::Display for Mac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// EtherType of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// EtherType of ARP.
pub const ETHERTYPE_ARP: u16 = 0x0806;
/// EtherType of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86dd;
/// EtherType of an 802.1Q tag.
pub const ETHERTYPE_VLAN: u16 = 0x8100;
/// EtherType of an 802.1ad (QinQ) service tag.
pub const ETHERTYPE_QINQ: u16 = 0x88a8;

/// Why: two tags cover 802.1Q and QinQ; a third tag is not forwarded by any sane access
/// switch, and stopping there bounds the loop.
pub const MAX_VLAN_TAGS: usize = 2;

/// An Ethernet frame header after VLAN tags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ethernet<'a> {
    /// Destination MAC.
    pub dst: Mac,
    /// Source MAC.
    pub src: Mac,
    /// VLAN IDs of the tags seen (outermost first); `0` entries mean "no tag".
    pub vlans: [u16; MAX_VLAN_TAGS],
    /// Number of tags seen.
    pub vlan_count: usize,
    /// EtherType after the tags.
    pub ethertype: u16,
    /// The rest of the frame.
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

fn mac_at(b: &[u8], at: usize) -> Option<Mac> {
    let s = b.get(at..at.checked_add(6)?)?;
    let mut m = [0u8; 6];
    m.copy_from_slice(s);
    Some(Mac(m))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    be32(b, at).map(Ipv4Addr::from)
}

fn ipv6_at(b: &[u8], at: usize) -> Option<Ipv6Addr> {
    let s = b.get(at..at.checked_add(16)?)?;
    let mut a = [0u8; 16];
    a.copy_from_slice(s);
    Some(Ipv6Addr::from(a))
}

/// Decode an Ethernet II header and up to [`MAX_VLAN_TAGS`] VLAN tags.
pub fn ethernet(frame: &[u8]) -> Option<Ethernet<'_>> {
    let dst = mac_at(frame, 0)?;
    let src = mac_at(frame, 6)?;
    let mut ethertype = be16(frame, 12)?;
    let mut at = 14;
    let mut vlans = [0u16; MAX_VLAN_TAGS];
    let mut vlan_count = 0;
    while (ethertype == ETHERTYPE_VLAN || ethertype == ETHERTYPE_QINQ) && vlan_count < MAX_VLAN_TAGS
    {
        let tci = be16(frame, at)?;
        vlans[vlan_count] = tci & 0x0fff;
        vlan_count += 1;
        ethertype = be16(frame, at + 2)?;
        at += 4;
    }
    Some(Ethernet {
        dst,
        src,
        vlans,
        vlan_count,
        ethertype,
        payload: frame.get(at..)?,
    })
}

/// ARP operation: request.
pub const ARP_REQUEST: u16 = 1;
/// ARP operation: reply.
pub const ARP_REPLY: u16 = 2;

/// An Ethernet/IPv4 ARP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// Operation (1 request, 2 reply).
    pub op: u16,
    /// Sender hardware address (SHA).
    pub sender_mac: Mac,
    /// Sender protocol address (SPA).
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (THA).
    pub target_mac: Mac,
    /// Target protocol address (TPA).
    pub target_ip: Ipv4Addr,
}

/// Decode an ARP payload; only Ethernet (htype 1, hlen 6) over IPv4 (ptype 0x0800, plen 4).
pub fn arp(payload: &[u8]) -> Option<Arp> {
    if be16(payload, 0)? != 1
        || be16(payload, 2)? != ETHERTYPE_IPV4
        || *payload.get(4)? != 6
        || *payload.get(5)? != 4
    {
        return None;
    }
    Some(Arp {
        op: be16(payload, 6)?,
        sender_mac: mac_at(payload, 8)?,
        sender_ip: ipv4_at(payload, 14)?,
        target_mac: mac_at(payload, 18)?,
        target_ip: ipv4_at(payload, 24)?,
    })
}

/// A UDP datagram inside IPv4 or IPv6.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// UDP payload (bounded by the UDP length field and the captured bytes).
    pub payload: &'a [u8],
}

fn udp(segment: &[u8]) -> Option<Udp<'_>> {
    let src_port = be16(segment, 0)?;
    let dst_port = be16(segment, 2)?;
    let len = usize::from(be16(segment, 4)?);
    // Why: a UDP length shorter than the header is malformed; a longer one than captured is
    // truncation, and the decoders below cope with a short payload.
    if len < 8 {
        return None;
    }
    let end = len.min(segment.len());
    Some(Udp {
        src_port,
        dst_port,
        payload: segment.get(8..end)?,
    })
}

/// An IPv4 packet's addresses and, when it is an unfragmented (or first-fragment) UDP
/// datagram, the UDP part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4<'a> {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// IP protocol number.
    pub protocol: u8,
    /// The UDP datagram, if protocol 17 and fragment offset 0.
    pub udp: Option<Udp<'a>>,
}

/// Decode an IPv4 header (with options) and its UDP datagram.
pub fn ipv4(packet: &[u8]) -> Option<Ipv4<'_>> {
    let vihl = *packet.first()?;
    if vihl >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    if ihl < 20 {
        return None;
    }
    let total = usize::from(be16(packet, 2)?);
    let frag_offset = be16(packet, 6)? & 0x1fff;
    let protocol = *packet.get(9)?;
    let src = ipv4_at(packet, 12)?;
    let dst = ipv4_at(packet, 16)?;
    let end = total.min(packet.len());
    let body = packet.get(ihl..end.max(ihl))?;
    let udp = if protocol == 17 && frag_offset == 0 {
        udp(body)
    } else {
        None
    };
    Some(Ipv4 {
        src,
        dst,
        protocol,
        udp,
    })
}

/// Why: RFC 8200 puts no limit on the extension-header chain; eight covers every legitimate
/// combination (hop-by-hop, routing, fragment, destination options twice, AH, ESP) and bounds
/// the walk.
pub const MAX_IPV6_EXT_HEADERS: usize = 8;

/// What follows the IPv6 header chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ipv6Upper<'a> {
    /// A UDP datagram.
    Udp(Udp<'a>),
    /// An ICMPv6 message: type and code.
    Icmpv6 {
        /// ICMPv6 type (134 = router advertisement).
        kind: u8,
        /// ICMPv6 code.
        code: u8,
        /// Target address of a neighbour solicitation (135) or advertisement (136).
        target: Option<Ipv6Addr>,
    },
    /// A non-first fragment or an unparsed protocol (number given).
    Other(u8),
}

/// An IPv6 packet's addresses and upper layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv6<'a> {
    /// Source address.
    pub src: Ipv6Addr,
    /// Destination address.
    pub dst: Ipv6Addr,
    /// Upper layer, after at most [`MAX_IPV6_EXT_HEADERS`] extension headers.
    pub upper: Ipv6Upper<'a>,
}

/// Decode an IPv6 header and walk its extension headers (bounded).
pub fn ipv6(packet: &[u8]) -> Option<Ipv6<'_>> {
    if *packet.first()? >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(be16(packet, 4)?);
    let mut next = *packet.get(6)?;
    let src = ipv6_at(packet, 8)?;
    let dst = ipv6_at(packet, 24)?;
    let end = (40 + payload_len).min(packet.len());
    let mut body = packet.get(40..end.max(40))?;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            // hop-by-hop, routing, destination options: (next, len in 8-octet units - 1)
            0 | 43 | 60 => {
                let len = (usize::from(*body.get(1)?) + 1) * 8;
                next = *body.first()?;
                body = body.get(len..)?;
            }
            44 => {
                let offset = be16(body, 2)? >> 3;
                next = *body.first()?;
                body = body.get(8..)?;
                if offset != 0 {
                    return Some(Ipv6 {
                        src,
                        dst,
                        upper: Ipv6Upper::Other(44),
                    });
                }
            }
            17 => {
                return Some(Ipv6 {
                    src,
                    dst,
                    upper: udp(body).map_or(Ipv6Upper::Other(17), Ipv6Upper::Udp),
                })
            }
            58 => {
                return Some(Ipv6 {
                    src,
                    dst,
                    upper: Ipv6Upper::Icmpv6 {
                        kind: *body.first()?,
                        code: *body.get(1)?,
                        target: matches!(body.first(), Some(135 | 136))
                            .then(|| ipv6_at(body, 8))
                            .flatten(),
                    },
                })
            }
            other => {
                return Some(Ipv6 {
                    src,
                    dst,
                    upper: Ipv6Upper::Other(other),
                })
            }
        }
    }
    Some(Ipv6 {
        src,
        dst,
        upper: Ipv6Upper::Other(next),
    })
}

/// The Next Header field of the packet's IPv6 fragment header (the first header of the
/// fragmentable part), when the packet has one within [`MAX_IPV6_EXT_HEADERS`]; `None`
/// otherwise. An extension header there (hop-by-hop 0, routing 43, fragment 44, destination
/// options 60) is how an RA is pushed out of the first fragment (RFC 7113 evasion).
pub fn ipv6_fragment_next(packet: &[u8]) -> Option<u8> {
    if *packet.first()? >> 4 != 6 {
        return None;
    }
    let mut next = *packet.get(6)?;
    let mut body = packet.get(40..)?;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        match next {
            0 | 43 | 60 => {
                let len = (usize::from(*body.get(1)?) + 1) * 8;
                next = *body.first()?;
                body = body.get(len..)?;
            }
            44 => return body.first().copied(),
            _ => return None,
        }
    }
    None
}

/// True for the extension headers that must not follow a fragment header on an untrusted port.
pub fn is_chained_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 60)
}

/// ICMPv6 type of a neighbour advertisement.
pub const ICMPV6_NEIGHBOR_ADVERTISEMENT: u8 = 136;

/// ICMPv6 type of a router advertisement.
pub const ICMPV6_ROUTER_ADVERTISEMENT: u8 = 134;

/// DHCP message types (option 53).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DhcpKind {
    /// DHCPDISCOVER (1).
    Discover,
    /// DHCPOFFER (2).
    Offer,
    /// DHCPREQUEST (3).
    Request,
    /// DHCPDECLINE (4).
    Decline,
    /// DHCPACK (5).
    Ack,
    /// DHCPNAK (6).
    Nak,
    /// DHCPRELEASE (7).
    Release,
    /// DHCPINFORM (8).
    Inform,
    /// Any other value (lease query and friends), or BOOTP without option 53.
    Other(u8),
}

impl DhcpKind {
    fn from_code(code: u8) -> Self {
        match code {
            1 => Self::Discover,
            2 => Self::Offer,
            3 => Self::Request,
            4 => Self::Decline,
            5 => Self::Ack,
            6 => Self::Nak,
            7 => Self::Release,
            8 => Self::Inform,
            other => Self::Other(other),
        }
    }

    /// The name used in events (`DHCPACK`, ...).
    pub fn name(&self) -> String {
        match self {
            Self::Discover => "DHCPDISCOVER".into(),
            Self::Offer => "DHCPOFFER".into(),
            Self::Request => "DHCPREQUEST".into(),
            Self::Decline => "DHCPDECLINE".into(),
            Self::Ack => "DHCPACK".into(),
            Self::Nak => "DHCPNAK".into(),
            Self::Release => "DHCPRELEASE".into(),
            Self::Inform => "DHCPINFORM".into(),
            Self::Other(code) => format!("DHCP({code})"),
        }
    }
}

/// Why: the options field of a 1500-byte frame holds at most ~1200 bytes, so even one-byte
/// options cannot exceed this; a larger count means a loop or garbage.
pub const MAX_DHCP_OPTIONS: usize = 256;

/// The BOOTP magic cookie before DHCP options.
pub const DHCP_MAGIC: [u8; 4] = [0x63, 0x82, 0x53, 0x63];

/// The fields of a DHCPv4 message the guard uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcp {
    /// BOOTP op: 1 request (client), 2 reply (server).
    pub op: u8,
    /// Transaction ID.
    pub xid: u32,
    /// Client IP (`ciaddr`): set in RENEW/REBIND, RELEASE, INFORM.
    pub ciaddr: Ipv4Addr,
    /// Your IP (`yiaddr`): the address being leased.
    pub yiaddr: Ipv4Addr,
    /// Client hardware address (first 6 bytes of `chaddr`, when `hlen` is 6).
    pub chaddr: Mac,
    /// Option 53; `Other(0)` when absent (plain BOOTP).
    pub kind: DhcpKind,
    /// Option 51, lease time in seconds.
    pub lease_s: Option<u32>,
    /// Option 54, server identifier.
    pub server_id: Option<Ipv4Addr>,
    /// Option 50, requested IP.
    pub requested_ip: Option<Ipv4Addr>,
    /// True when the options walk stopped early (truncated, too many options, no END).
    pub truncated: bool,
}

/// Decode a DHCPv4 message (BOOTP fixed part, cookie, options up to [`MAX_DHCP_OPTIONS`]).
pub fn dhcp(payload: &[u8]) -> Option<Dhcp> {
    let op = *payload.first()?;
    if !(op == 1 || op == 2) || *payload.get(1)? != 1 || *payload.get(2)? != 6 {
        return None;
    }
    let mut msg = Dhcp {
        op,
        xid: be32(payload, 4)?,
        ciaddr: ipv4_at(payload, 12)?,
        yiaddr: ipv4_at(payload, 16)?,
        chaddr: mac_at(payload, 28)?,
        kind: DhcpKind::Other(0),
        lease_s: None,
        server_id: None,
        requested_ip: None,
        truncated: false,
    };
    if payload.get(236..240)? != DHCP_MAGIC {
        return Some(msg);
    }
    let options = payload.get(240..)?;
    let mut at = 0;
    let mut ended = false;
    for _ in 0..MAX_DHCP_OPTIONS {
        let Some(&code) = options.get(at) else { break };
        match code {
            0 => at += 1,
            255 => {
                ended = true;
                break;
            }
            _ => {
                let Some(&len) = options.get(at + 1) else {
                    break;
                };
                let Some(value) = options.get(at + 2..at + 2 + usize::from(len)) else {
                    break;
                };
                match (code, len) {
                    (53, 1) => msg.kind = DhcpKind::from_code(value[0]),
                    (51, 4) => msg.lease_s = be32(value, 0),
                    (54, 4) => msg.server_id = ipv4_at(value, 0),
                    (50, 4) => msg.requested_ip = ipv4_at(value, 0),
                    _ => {}
                }
                at += 2 + usize::from(len);
            }
        }
    }
    msg.truncated = !ended;
    Some(msg)
}

/// DHCPv6 message type (first byte of the UDP payload), when present.
pub fn dhcpv6_kind(payload: &[u8]) -> Option<u8> {
    payload.first().copied()
}

/// DHCPv6 message types (RFC 8415 §7.3) the guard acts on.
pub mod dhcpv6_type {
    /// SOLICIT (client).
    pub const SOLICIT: u8 = 1;
    /// ADVERTISE (server).
    pub const ADVERTISE: u8 = 2;
    /// REQUEST (client).
    pub const REQUEST: u8 = 3;
    /// CONFIRM (client).
    pub const CONFIRM: u8 = 4;
    /// RENEW (client).
    pub const RENEW: u8 = 5;
    /// REBIND (client).
    pub const REBIND: u8 = 6;
    /// REPLY (server): carries the leases.
    pub const REPLY: u8 = 7;
    /// RELEASE (client).
    pub const RELEASE: u8 = 8;
    /// DECLINE (client).
    pub const DECLINE: u8 = 9;
    /// RELAY-FORW (relay agent to server).
    pub const RELAY_FORW: u8 = 12;
    /// RELAY-REPL (server to relay agent).
    pub const RELAY_REPL: u8 = 13;
}

/// Why: RFC 8415 §11.1 caps a DUID at 128 octets plus its 2-octet type.
pub const MAX_DUID_LEN: usize = 130;
/// Why: a REPLY carries client and server identifiers, a few IAs, a status and a handful of
/// configuration options; 64 top-level options is beyond any real message and bounds the walk.
pub const MAX_DHCPV6_OPTIONS: usize = 64;
/// Why: addresses kept per message across all IA_NAs; servers hand out one or two per IA, and
/// the cap bounds what one frame can make the guard bind.
pub const MAX_DHCPV6_ADDRESSES: usize = 16;
/// Why: options inside one IA_NA (IAADDRs, status); as bounded as the top level.
pub const MAX_DHCPV6_IA_OPTIONS: usize = 32;

/// One IAADDR (option 5) of an IA_NA.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dhcpv6Address {
    /// The address.
    pub addr: Ipv6Addr,
    /// Preferred lifetime, seconds.
    pub preferred_s: u32,
    /// Valid lifetime, seconds (0: the address is no longer valid).
    pub valid_s: u32,
}

/// The fields of a DHCPv6 message the guard uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dhcpv6 {
    /// Message type ([`dhcpv6_type`]).
    pub kind: u8,
    /// 24-bit transaction id (0 for relay messages).
    pub xid: u32,
    /// Client Identifier (option 1): the client's DUID.
    pub client_id: Option<Vec<u8>>,
    /// Server Identifier (option 2): the server's DUID.
    pub server_id: Option<Vec<u8>>,
    /// Top-level Status Code (option 13), when present.
    pub status: Option<u16>,
    /// IAADDRs of IA_NAs whose own status (if any) is Success, and whose IAADDR status (if
    /// any) is Success, at most [`MAX_DHCPV6_ADDRESSES`].
    pub addresses: Vec<Dhcpv6Address>,
}

/// Why a DHCPv6 message could not be decoded (reported as an anomaly, never a panic).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dhcpv6Malformed {
    /// Shorter than the 4-byte header (34 for relay messages).
    Short,
    /// An option header or value runs past the end of its container.
    Overrun {
        /// The option code.
        code: u16,
    },
    /// An option whose length is wrong for its code (IA_NA under 12, IAADDR under 24, a status
    /// under 2, a DUID empty or over [`MAX_DUID_LEN`]).
    BadLength {
        /// The option code.
        code: u16,
    },
    /// More options than [`MAX_DHCPV6_OPTIONS`] (or [`MAX_DHCPV6_IA_OPTIONS`] in one IA).
    TooManyOptions,
    /// The same identifier option twice.
    Duplicate {
        /// The option code.
        code: u16,
    },
}

impl std::fmt::Display for Dhcpv6Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Short => write!(f, "message shorter than its header"),
            Self::Overrun { code } => write!(f, "option {code} runs past its container"),
            Self::BadLength { code } => write!(f, "option {code} has an invalid length"),
            Self::TooManyOptions => write!(f, "too many options"),
            Self::Duplicate { code } => write!(f, "option {code} appears twice"),
        }
    }
}

/// Walk a DHCPv6 option list: `(code, value)` pairs, bounded by `max`; an option whose header or
/// value runs past `data` is an error, as are leftover bytes shorter than a header.
fn dhcpv6_options(data: &[u8], max: usize) -> Result<Vec<(u16, &[u8])>, Dhcpv6Malformed> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        if out.len() >= max {
            return Err(Dhcpv6Malformed::TooManyOptions);
        }
        let code = be16(data, at).ok_or(Dhcpv6Malformed::Overrun { code: 0 })?;
        let len = usize::from(be16(data, at + 2).ok_or(Dhcpv6Malformed::Overrun { code })?);
        let value = data
            .get(at + 4..at + 4 + len)
            .ok_or(Dhcpv6Malformed::Overrun { code })?;
        out.push((code, value));
        at += 4 + len;
    }
    Ok(out)
}

/// DHCPv6 option codes used here (RFC 8415 §21).
const OPT_CLIENTID: u16 = 1;
const OPT_SERVERID: u16 = 2;
const OPT_IA_NA: u16 = 3;
const OPT_IAADDR: u16 = 5;
const OPT_STATUS_CODE: u16 = 13;

fn duid(code: u16, value: &[u8]) -> Result<Vec<u8>, Dhcpv6Malformed> {
    if value.is_empty() || value.len() > MAX_DUID_LEN {
        return Err(Dhcpv6Malformed::BadLength { code });
    }
    Ok(value.to_vec())
}

fn status(value: &[u8]) -> Result<u16, Dhcpv6Malformed> {
    be16(value, 0).ok_or(Dhcpv6Malformed::BadLength {
        code: OPT_STATUS_CODE,
    })
}

/// The Ethernet address inside a DUID-LLT (type 1) or DUID-LL (type 3) with hardware type 1;
/// `None` for other DUID types (DUID-EN, DUID-UUID) and other hardware types.
pub fn duid_mac(duid: &[u8]) -> Option<Mac> {
    let at = match (be16(duid, 0)?, be16(duid, 2)?) {
        (1, 1) => 8,
        (3, 1) => 4,
        _ => return None,
    };
    (duid.len() == at + 6).then(|| mac_at(duid, at)).flatten()
}

/// Decode a DHCPv6 message (RFC 8415): header, client and server identifiers, status, and the
/// addresses of its IA_NAs. Every length is checked against its container; anything that does
/// not fit is [`Dhcpv6Malformed`]. Relay messages (RELAY-FORW, RELAY-REPL) are decoded to their
/// type only: the guard learns from the REPLY the relay agent sends to the client.
pub fn dhcpv6(payload: &[u8]) -> Result<Dhcpv6, Dhcpv6Malformed> {
    let kind = *payload.first().ok_or(Dhcpv6Malformed::Short)?;
    let mut msg = Dhcpv6 {
        kind,
        xid: 0,
        client_id: None,
        server_id: None,
        status: None,
        addresses: Vec::new(),
    };
    if kind == dhcpv6_type::RELAY_FORW || kind == dhcpv6_type::RELAY_REPL {
        // hop-count, link-address, peer-address, then options.
        return payload.get(..34).map(|_| msg).ok_or(Dhcpv6Malformed::Short);
    }
    let header = payload.get(..4).ok_or(Dhcpv6Malformed::Short)?;
    msg.xid = u32::from_be_bytes([0, header[1], header[2], header[3]]);
    for (code, value) in dhcpv6_options(payload.get(4..).unwrap_or_default(), MAX_DHCPV6_OPTIONS)? {
        match code {
            OPT_CLIENTID | OPT_SERVERID => {
                let slot = if code == OPT_CLIENTID {
                    &mut msg.client_id
                } else {
                    &mut msg.server_id
                };
                if slot.is_some() {
                    return Err(Dhcpv6Malformed::Duplicate { code });
                }
                *slot = Some(duid(code, value)?);
            }
            OPT_STATUS_CODE => msg.status = Some(status(value)?),
            OPT_IA_NA => {
                // IAID, T1, T2, then IA_NA options.
                let inner = value.get(12..).ok_or(Dhcpv6Malformed::BadLength { code })?;
                let mut ia_ok = true;
                let mut found = Vec::new();
                for (icode, ivalue) in dhcpv6_options(inner, MAX_DHCPV6_IA_OPTIONS)? {
                    match icode {
                        OPT_STATUS_CODE => ia_ok &= status(ivalue)? == 0,
                        OPT_IAADDR => {
                            let bad = Dhcpv6Malformed::BadLength { code: icode };
                            let addr = ipv6_at(ivalue, 0).ok_or(bad)?;
                            let preferred_s = be32(ivalue, 16).ok_or(bad)?;
                            let valid_s = be32(ivalue, 20).ok_or(bad)?;
                            // IAADDR options (a status) follow the fixed part.
                            let mut addr_ok = true;
                            for (acode, avalue) in dhcpv6_options(
                                ivalue.get(24..).unwrap_or_default(),
                                MAX_DHCPV6_IA_OPTIONS,
                            )? {
                                if acode == OPT_STATUS_CODE {
                                    addr_ok &= status(avalue)? == 0;
                                }
                            }
                            if addr_ok {
                                found.push(Dhcpv6Address {
                                    addr,
                                    preferred_s,
                                    valid_s,
                                });
                            }
                        }
                        _ => {}
                    }
                }
                if ia_ok {
                    let room = MAX_DHCPV6_ADDRESSES.saturating_sub(msg.addresses.len());
                    msg.addresses.extend(found.into_iter().take(room));
                }
            }
            _ => {}
        }
    }
    Ok(msg)
}

/// DHCPv6 message types sent by servers and relays towards clients (ADVERTISE 2, REPLY 7,
/// RECONFIGURE 10, RELAY-REPL 13).
pub fn dhcpv6_is_server_message(kind: u8) -> bool {
    matches!(kind, 2 | 7 | 10 | 13)
}

/// Why: RFC 1035 caps names at 255 octets; the guard only compares names against its own
/// canary names, which are much shorter.
pub const MAX_NAME_LEN: usize = 255;
/// Why: compression pointers can loop; real messages chain two or three.
pub const MAX_NAME_POINTERS: usize = 16;
/// Why: canary answers carry one question and a handful of answers; more records are not
/// needed to find the name, and the cap bounds work per frame.
pub const MAX_RECORDS: usize = 16;

/// A DNS-format message (LLMNR, mDNS, NBT-NS): header bits and the owner names of its
/// questions and answers, lower-cased, NBT-NS names decoded from their half-ASCII form.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NameMessage {
    /// Message ID.
    pub id: u16,
    /// QR bit: true for responses.
    pub response: bool,
    /// Question names.
    pub questions: Vec<String>,
    /// Answer owner names.
    pub answers: Vec<String>,
    /// IPv4 addresses in A answers (NBT-NS: the NB record's address).
    pub answer_ipv4: Vec<Ipv4Addr>,
}

/// Read a (possibly compressed) name at `at`; returns the name and the offset after it.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    let mut after = None;
    let mut pointers = 0;
    loop {
        let len = *msg.get(at)?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Some((name, after.unwrap_or(at + 1)));
                }
                let label = msg.get(at + 1..at + 1 + usize::from(len))?;
                if name.len() + label.len() + 1 > MAX_NAME_LEN {
                    return None;
                }
                if !name.is_empty() {
                    name.push('.');
                }
                for &b in label {
                    name.push(char::from(b.to_ascii_lowercase()));
                }
                at += 1 + usize::from(len);
            }
            0xc0 => {
                pointers += 1;
                if pointers > MAX_NAME_POINTERS {
                    return None;
                }
                let target = usize::from(be16(msg, at)? & 0x3fff);
                after.get_or_insert(at + 2);
                at = target;
            }
            _ => return None,
        }
    }
}

/// Decode the NetBIOS half-ASCII encoding (32 letters 'A'..'P' → 16 bytes), trimming the
/// space padding and the suffix byte; returns the name lower-cased. Other names are returned
/// unchanged.
pub fn nbns_decode(name: &str) -> String {
    let first = name.split('.').next().unwrap_or("");
    let bytes = first.as_bytes();
    if bytes.len() != 32 || !bytes.iter().all(|b| (b'a'..=b'p').contains(b)) {
        return name.to_string();
    }
    let mut out = String::new();
    for pair in bytes.chunks(2).take(15) {
        let b = ((pair[0] - b'a') << 4) | (pair[1] - b'a');
        out.push(char::from(b.to_ascii_lowercase()));
    }
    out.trim_end_matches(' ').to_string()
}

/// Decode a DNS-format message; `netbios` decodes half-ASCII names (NBT-NS on port 137).
pub fn name_message(msg: &[u8], netbios: bool) -> Option<NameMessage> {
    let id = be16(msg, 0)?;
    let flags = be16(msg, 2)?;
    let qd = usize::from(be16(msg, 4)?).min(MAX_RECORDS);
    let an = usize::from(be16(msg, 6)?).min(MAX_RECORDS);
    let mut out = NameMessage {
        id,
        response: flags & 0x8000 != 0,
        questions: Vec::new(),
        answers: Vec::new(),
        answer_ipv4: Vec::new(),
    };
    let fix = |n: String| if netbios { nbns_decode(&n) } else { n };
    let mut at = 12;
    for _ in 0..qd {
        let Some((name, next)) = read_name(msg, at) else {
            return Some(out);
        };
        out.questions.push(fix(name));
        at = next + 4;
    }
    for _ in 0..an {
        let Some((name, next)) = read_name(msg, at) else {
            return Some(out);
        };
        out.answers.push(fix(name));
        let (Some(rtype), Some(rdlen)) = (be16(msg, next), be16(msg, next + 8)) else {
            return Some(out);
        };
        let rdata = next + 10;
        match rtype {
            // A: 4 bytes; NB (0x20): flags(2) + IPv4(4), possibly repeated.
            1 if rdlen == 4 => out.answer_ipv4.extend(ipv4_at(msg, rdata)),
            0x20 if rdlen >= 6 => out.answer_ipv4.extend(ipv4_at(msg, rdata + 2)),
            _ => {}
        }
        at = rdata + usize::from(rdlen);
    }
    Some(out)
}

/// Name-service protocols the canary speaks.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum NameProtocol {
    /// LLMNR, UDP 5355 (RFC 4795).
    Llmnr,
    /// NetBIOS name service, UDP 137.
    Nbns,
    /// Multicast DNS, UDP 5353 (RFC 6762).
    Mdns,
}

impl NameProtocol {
    /// The protocol's UDP port.
    pub fn port(self) -> u16 {
        match self {
            Self::Llmnr => 5355,
            Self::Nbns => 137,
            Self::Mdns => 5353,
        }
    }

    /// The protocol whose port is `port`.
    pub fn from_port(port: u16) -> Option<Self> {
        match port {
            5355 => Some(Self::Llmnr),
            137 => Some(Self::Nbns),
            5353 => Some(Self::Mdns),
            _ => None,
        }
    }

    /// Lower-case name used in events and config.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llmnr => "llmnr",
            Self::Nbns => "nbns",
            Self::Mdns => "mdns",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DHCPACK as dnsmasq 2.90 sends it (built by hand from the RFC 2131 layout: op 2,
    /// yiaddr 192.0.2.100, chaddr 02:00:00:00:00:0c, options 53=5, 54, 51=3600, END).
    fn ack() -> Vec<u8> {
        let mut p = vec![0u8; 240];
        p[0] = 2;
        p[1] = 1;
        p[2] = 6;
        p[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
        p[16..20].copy_from_slice(&[192, 0, 2, 100]);
        p[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 0x0c]);
        p[236..240].copy_from_slice(&DHCP_MAGIC);
        p.extend_from_slice(&[53, 1, 5, 54, 4, 192, 0, 2, 1, 51, 4, 0, 0, 0x0e, 0x10, 255]);
        p
    }

    #[test]
    fn dhcp_ack_fields() {
        let m = dhcp(&ack()).unwrap();
        assert_eq!(m.kind, DhcpKind::Ack);
        assert_eq!(m.yiaddr, Ipv4Addr::new(192, 0, 2, 100));
        assert_eq!(m.chaddr, Mac([2, 0, 0, 0, 0, 0x0c]));
        assert_eq!(m.lease_s, Some(3600));
        assert_eq!(m.server_id, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(!m.truncated);
    }

    #[test]
    fn dhcp_options_truncated_are_flagged_not_fatal() {
        let mut p = ack();
        p.truncate(p.len() - 6);
        let m = dhcp(&p).unwrap();
        assert_eq!(m.kind, DhcpKind::Ack);
        assert!(m.truncated);
        assert_eq!(m.lease_s, None);
    }

    /// A DHCPv6 REPLY as dnsmasq sends it: client id (DUID-LL), server id, one IA_NA with
    /// one IAADDR (preferred 1800 s, valid 3600 s).
    fn reply6() -> Vec<u8> {
        let mut p = vec![7, 0xab, 0xcd, 0xef];
        p.extend_from_slice(&[0, 1, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c]);
        p.extend_from_slice(&[0, 2, 0, 10, 0, 3, 0, 1, 2, 0, 0, 0, 0, 0x01]);
        let mut iaaddr = vec![0, 5, 0, 24];
        iaaddr.extend_from_slice(&"2001:db8:1::100".parse::<Ipv6Addr>().unwrap().octets());
        iaaddr.extend_from_slice(&1800u32.to_be_bytes());
        iaaddr.extend_from_slice(&3600u32.to_be_bytes());
        p.extend_from_slice(&[0, 3]);
        p.extend_from_slice(&((12 + iaaddr.len()) as u16).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0x07, 0x08, 0, 0, 0x0b, 0x40]);
        p.extend_from_slice(&iaaddr);
        p
    }

    #[test]
    fn dhcpv6_reply_fields() {
        let m = dhcpv6(&reply6()).unwrap();
        assert_eq!(m.kind, dhcpv6_type::REPLY);
        assert_eq!(m.xid, 0xabcdef);
        assert_eq!(
            m.client_id.as_deref(),
            Some(&[0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c][..])
        );
        assert_eq!(m.server_id.as_ref().map(Vec::len), Some(10));
        assert_eq!(
            m.addresses,
            vec![Dhcpv6Address {
                addr: "2001:db8:1::100".parse().unwrap(),
                preferred_s: 1800,
                valid_s: 3600
            }]
        );
    }

    #[test]
    fn dhcpv6_malformed_lengths_are_errors_not_panics() {
        let good = reply6();
        // Truncated anywhere inside an option: an overrun (or short header), never a panic.
        for cut in 1..good.len() {
            let r = dhcpv6(&good[..cut]);
            if cut < 4 {
                assert_eq!(r, Err(Dhcpv6Malformed::Short), "cut {cut}");
            } else if cut > 4 && cut != 18 && cut != 32 {
                assert!(r.is_err(), "cut {cut}: {r:?}");
            }
        }
        // IA_NA shorter than its fixed 12 bytes.
        let short_ia = [7, 0, 0, 1, 0, 3, 0, 4, 0, 0, 0, 1];
        assert_eq!(
            dhcpv6(&short_ia),
            Err(Dhcpv6Malformed::BadLength { code: 3 })
        );
        // Empty DUID; duplicate client id.
        assert_eq!(
            dhcpv6(&[1, 0, 0, 1, 0, 1, 0, 0]),
            Err(Dhcpv6Malformed::BadLength { code: 1 })
        );
        assert_eq!(
            dhcpv6(&[1, 0, 0, 1, 0, 1, 0, 1, 9, 0, 1, 0, 1, 9]),
            Err(Dhcpv6Malformed::Duplicate { code: 1 })
        );
        // More options than the bound.
        let mut many = vec![1, 0, 0, 1];
        for _ in 0..=MAX_DHCPV6_OPTIONS {
            many.extend_from_slice(&[0, 99, 0, 0]);
        }
        assert_eq!(dhcpv6(&many), Err(Dhcpv6Malformed::TooManyOptions));
    }

    #[test]
    fn duid_mac_reads_ll_and_llt_only() {
        let m = Mac([2, 0, 0, 0, 0, 0x0c]);
        assert_eq!(duid_mac(&[0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c]), Some(m));
        assert_eq!(
            duid_mac(&[0, 1, 0, 1, 9, 9, 9, 9, 2, 0, 0, 0, 0, 0x0c]),
            Some(m)
        );
        assert_eq!(duid_mac(&[0, 2, 0, 0, 0, 9, 1, 2, 3]), None, "DUID-EN");
        assert_eq!(
            duid_mac(&[0, 3, 0, 6, 2, 0, 0, 0, 0, 0x0c]),
            None,
            "not Ethernet"
        );
        assert_eq!(duid_mac(&[0, 3, 0, 1, 2, 0]), None, "short");
    }

    #[test]
    fn dhcpv6_failed_status_hides_the_addresses() {
        let mut p = reply6();
        // Append a NoAddrsAvail (2) status inside the IA_NA: grow the IA_NA length by 6.
        let ia_len_at = 4 + 14 + 14 + 2;
        let len = u16::from_be_bytes([p[ia_len_at], p[ia_len_at + 1]]) + 6;
        p[ia_len_at..ia_len_at + 2].copy_from_slice(&len.to_be_bytes());
        p.extend_from_slice(&[0, 13, 0, 2, 0, 2]);
        assert!(dhcpv6(&p).unwrap().addresses.is_empty());
    }

    #[test]
    fn fragment_next_header_is_found_behind_unfragmentable_headers() {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, 0, 255];
        p.extend_from_slice(&[0; 32]);
        // Hop-by-hop (8 bytes) then fragment header whose next is destination options.
        p.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        p.extend_from_slice(&[60, 0, 0, 1, 0, 0, 0, 7]);
        assert_eq!(ipv6_fragment_next(&p), Some(60));
        assert!(is_chained_extension(60));
        p[40] = 58; // hop-by-hop → ICMPv6: no fragment header
        assert_eq!(ipv6_fragment_next(&p), None);
        assert_eq!(ipv6_fragment_next(&p[..45]), None);
    }

    #[test]
    fn mac_parse_and_display_round_trip() {
        let m = Mac::parse("02:AA:bb:00:01:ff").unwrap();
        assert_eq!(m.to_string(), "02:aa:bb:00:01:ff");
        assert!(Mac::parse("02:aa:bb:00:01").is_none());
        assert!(Mac::parse("02:aa:bb:00:01:ff:00").is_none());
        assert!(Mac::parse("0g:aa:bb:00:01:ff").is_none());
    }

    #[test]
    fn vlan_tags_are_skipped_and_recorded() {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0x81, 0x00, 0x00, 0x0a, 0x08, 0x06]);
        f.extend_from_slice(&[0; 28]);
        let e = ethernet(&f).unwrap();
        assert_eq!(e.vlan_count, 1);
        assert_eq!(e.vlans[0], 10);
        assert_eq!(e.ethertype, ETHERTYPE_ARP);
        assert_eq!(e.payload.len(), 28);
    }

    #[test]
    fn name_compression_loop_is_bounded() {
        // Header, QDCOUNT 1, then a pointer to itself at offset 12.
        let msg = [0, 1, 0x80, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1];
        let m = name_message(&msg, false).unwrap();
        assert!(m.response);
        assert!(m.questions.is_empty());
    }

    #[test]
    fn nbns_names_are_decoded() {
        // "WPAD" padded with spaces to 15 bytes plus suffix 0x00, half-ASCII encoded.
        let mut raw = *b"WPAD           \0";
        raw[15] = 0;
        let enc: String = raw
            .iter()
            .flat_map(|b| [char::from(b'a' + (b >> 4)), char::from(b'a' + (b & 0x0f))])
            .collect();
        assert_eq!(nbns_decode(&enc), "wpad");
    }
}
