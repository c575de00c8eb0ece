//! Bounded, allocation-free packet decoders: link layers (Ethernet II with up to two VLAN tags,
//! Linux cooked SLL/SLL2, raw IP, BSD loopback), ARP, IPv4 (options, fragments), IPv6 (a
//! bounded extension-header chain, fragments), TCP (flags, options), UDP, ICMP and ICMPv6
//! (including the packet quoted in error messages).
//!
//! Every decoder borrows the input and returns either a [`Packet`] or an [`Anomaly`]: malformed
//! input is a value, never a panic. Lengths taken from headers are checked against the bytes
//! actually present before use.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;

/// Most VLAN tags followed (802.1ad outer + 802.1Q inner).
pub const MAX_VLAN_TAGS: usize = 2;
/// Most IPv6 extension headers followed before giving up.
// Why: RFC 8200 recommends each header at most once (Destination Options twice); 8 covers every
// legal chain and bounds the work an attacker can make us do per packet.
pub const MAX_EXT_HEADERS: usize = 8;

/// Capture link types the decoders understand (pcap `LINKTYPE_*` numbers in [`LinkType::from_pcap`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkType {
    /// Ethernet II (1).
    Ethernet,
    /// Raw IPv4 or IPv6, version from the first nibble (101; 12 and 14 on some systems).
    Raw,
    /// Raw IPv4 (228).
    Ipv4,
    /// Raw IPv6 (229).
    Ipv6,
    /// Linux cooked capture v1 (113).
    Sll,
    /// Linux cooked capture v2 (276).
    Sll2,
    /// BSD loopback, host-order family (0).
    Null,
    /// OpenBSD loopback, network-order family (108).
    Loop,
}

impl LinkType {
    /// Map a pcap/pcapng link type number.
    pub fn from_pcap(linktype: u32) -> Option<Self> {
        Some(match linktype {
            0 => LinkType::Null,
            1 => LinkType::Ethernet,
            12 | 14 | 101 => LinkType::Raw,
            108 => LinkType::Loop,
            113 => LinkType::Sll,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            276 => LinkType::Sll2,
            _ => return None,
        })
    }
}

/// The layer an anomaly was found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Link header.
    Link,
    /// VLAN tag.
    Vlan,
    /// ARP.
    Arp,
    /// IPv4.
    Ipv4,
    /// IPv6 (or an extension header).
    Ipv6,
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP/ICMPv6.
    Icmp,
}

/// Why a packet could not be (fully) decoded or classified. Counted, never fatal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "layer")]
#[non_exhaustive]
pub enum Anomaly {
    /// Fewer bytes than the header needs.
    Truncated(Layer),
    /// The capture's link type is not supported.
    UnsupportedLinkType,
    /// More than [`MAX_VLAN_TAGS`] VLAN tags.
    TooManyVlanTags,
    /// IP version nibble does not match the link's claim.
    BadIpVersion,
    /// IPv4 IHL below 5 or past the packet.
    BadIpv4HeaderLength,
    /// IP total/payload length smaller than the header.
    BadIpLength,
    /// More than [`MAX_EXT_HEADERS`] IPv6 extension headers.
    TooManyExtensionHeaders,
    /// TCP data offset below 5 or past the packet.
    BadTcpHeaderLength,
    /// UDP length field below 8.
    BadUdpLength,
    /// ARP with unexpected hardware/protocol sizes.
    BadArp,
    /// Non-first fragment whose first fragment was not seen.
    OrphanFragment,
    /// TCP flag combination nf_conntrack rejects (e.g. SYN+FIN, none).
    InvalidTcpFlags,
    /// A record of the capture file itself was malformed and skipped.
    BadCaptureRecord,
    /// Not IP (or ARP): nothing to classify.
    NotIp,
}

impl Anomaly {
    /// Stable snake_case name for counters and events.
    pub fn name(self) -> String {
        match self {
            Anomaly::Truncated(l) => format!("truncated_{}", layer_name(l)),
            other => {
                let v = serde_json::to_value(other).unwrap_or_default();
                v.get("kind")
                    .and_then(|k| k.as_str())
                    .unwrap_or("unknown")
                    .to_owned()
            }
        }
    }
}

fn layer_name(l: Layer) -> &'static str {
    match l {
        Layer::Link => "link",
        Layer::Vlan => "vlan",
        Layer::Arp => "arp",
        Layer::Ipv4 => "ipv4",
        Layer::Ipv6 => "ipv6",
        Layer::Tcp => "tcp",
        Layer::Udp => "udp",
        Layer::Icmp => "icmp",
    }
}

/// TCP flag bits.
pub mod tcp_flags {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// PSH.
    pub const PSH: u8 = 0x08;
    /// ACK.
    pub const ACK: u8 = 0x10;
    /// URG.
    pub const URG: u8 = 0x20;
}

/// A decoded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// VLAN ids, outermost first; `vlan_count` are valid.
    pub vlans: [u16; MAX_VLAN_TAGS],
    /// Number of VLAN tags.
    pub vlan_count: u8,
    /// Network layer.
    pub l3: L3<'a>,
}

/// Network layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L3<'a> {
    /// ARP.
    Arp(Arp),
    /// IPv4 or IPv6.
    Ip(Ip<'a>),
    /// Something else (ethertype given).
    Other {
        /// Ethertype or link protocol.
        ethertype: u16,
    },
}

/// An ARP packet (Ethernet/IPv4 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sender_mac: [u8; 6],
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: [u8; 6],
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

/// Fragment information.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frag {
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// Offset in bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
}

/// An IP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ip<'a> {
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// Upper-layer protocol (after IPv6 extension headers).
    pub protocol: u8,
    /// TTL / hop limit.
    pub ttl: u8,
    /// Length of the IP packet per its header.
    pub len: u32,
    /// Present when the packet is a fragment (first or later).
    pub frag: Option<Frag>,
    /// IPv4 options present.
    pub has_options: bool,
    /// Number of IPv6 extension headers walked.
    pub ext_headers: u8,
    /// Transport layer.
    pub l4: Transport<'a>,
}

/// Transport layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport<'a> {
    /// TCP.
    Tcp(Tcp<'a>),
    /// UDP.
    Udp(Udp<'a>),
    /// ICMP or ICMPv6.
    Icmp(Icmp<'a>),
    /// A non-first fragment: no transport header.
    Fragment,
    /// Another protocol.
    Other {
        /// Bytes after the IP header(s).
        payload: &'a [u8],
    },
}

/// A TCP segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp<'a> {
    /// Source port.
    pub src: u16,
    /// Destination port.
    pub dst: u16,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number.
    pub ack: u32,
    /// Flags (see [`tcp_flags`]).
    pub flags: u8,
    /// Window.
    pub window: u16,
    /// MSS option.
    pub mss: Option<u16>,
    /// Window scale option.
    pub wscale: Option<u8>,
    /// SACK permitted option.
    pub sack_permitted: bool,
    /// The header carries options (data offset over 5 words).
    pub has_options: bool,
    /// Right edges of the first SACK option's blocks (at most [`MAX_SACK_BLOCKS`]).
    pub sack_edges: [u32; MAX_SACK_BLOCKS],
    /// How many of `sack_edges` are valid.
    pub sack_blocks: u8,
    /// Data bytes per the IP header's length (the payload slice holds fewer when the capture
    /// was cut short): conntrack's sequence space.
    pub data_len: u32,
    /// Payload.
    pub payload: &'a [u8],
}

/// SACK blocks an option holds at most (40 option bytes: 2 + 4 × 8).
pub const MAX_SACK_BLOCKS: usize = 4;

/// A UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Udp<'a> {
    /// Source port.
    pub src: u16,
    /// Destination port.
    pub dst: u16,
    /// Payload.
    pub payload: &'a [u8],
}

/// The header quoted inside an ICMP error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IcmpInner {
    /// Source of the quoted packet.
    pub src: IpAddr,
    /// Destination of the quoted packet.
    pub dst: IpAddr,
    /// Its protocol.
    pub protocol: u8,
    /// Its ports (TCP/UDP) or ICMP echo id in `src_port`.
    pub ports: Option<(u16, u16)>,
}

/// An ICMP or ICMPv6 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Icmp<'a> {
    /// ICMPv6?
    pub v6: bool,
    /// Type.
    pub icmp_type: u8,
    /// Code.
    pub code: u8,
    /// Echo/timestamp/info identifier for query messages.
    pub id: Option<u16>,
    /// The quoted packet of an error message, when decodable.
    pub inner: Option<IcmpInner>,
    /// Bytes after the 4-byte header.
    pub rest: &'a [u8],
}

impl Icmp<'_> {
    /// Whether this is an error message that quotes another packet.
    pub fn is_error(&self) -> bool {
        if self.v6 {
            self.icmp_type < 128
        } else {
            matches!(self.icmp_type, 3 | 4 | 5 | 11 | 12)
        }
    }
}

#[inline]
fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

#[inline]
fn be32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

pub(crate) fn ipv6_at(b: &[u8], off: usize) -> Option<Ipv6Addr> {
    let s: [u8; 16] = b.get(off..off + 16)?.try_into().ok()?;
    Some(Ipv6Addr::from(s))
}

pub(crate) fn ipv4_at(b: &[u8], off: usize) -> Option<Ipv4Addr> {
    be32(b, off).map(Ipv4Addr::from)
}

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;

/// Decode one captured frame of link type `link`.
pub fn decode(link: LinkType, data: &[u8]) -> Result<Packet<'_>, Anomaly> {
    let mut pkt = Packet {
        vlans: [0; MAX_VLAN_TAGS],
        vlan_count: 0,
        l3: L3::Other { ethertype: 0 },
    };
    let (ethertype, rest) = link_split(link, data, &mut pkt.vlans, &mut pkt.vlan_count)?;
    pkt.l3 = match ethertype {
        ETH_IPV4 => L3::Ip(decode_ipv4(rest)?),
        ETH_IPV6 => L3::Ip(decode_ipv6(rest)?),
        ETH_ARP => L3::Arp(decode_arp(rest)?),
        other => L3::Other { ethertype: other },
    };
    Ok(pkt)
}

/// The link layer of `data`: the ethertype (or its equivalent) and the bytes after the link
/// header, with VLAN tags stored in `vlans` (`count` of them).
#[inline(always)]
fn link_split<'a>(
    link: LinkType,
    data: &'a [u8],
    vlans: &mut [u16; MAX_VLAN_TAGS],
    count: &mut u8,
) -> Result<(u16, &'a [u8]), Anomaly> {
    Ok(match link {
        LinkType::Ethernet => {
            let mut et = be16(data, 12).ok_or(Anomaly::Truncated(Layer::Link))?;
            let mut off = 14;
            while matches!(et, ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD) {
                if usize::from(*count) == MAX_VLAN_TAGS {
                    return Err(Anomaly::TooManyVlanTags);
                }
                let tci = be16(data, off).ok_or(Anomaly::Truncated(Layer::Vlan))?;
                et = be16(data, off + 2).ok_or(Anomaly::Truncated(Layer::Vlan))?;
                vlans[usize::from(*count)] = tci & 0x0fff;
                *count += 1;
                off += 4;
            }
            (et, &data[off..])
        }
        LinkType::Sll => {
            let et = be16(data, 14).ok_or(Anomaly::Truncated(Layer::Link))?;
            (et, &data[16..])
        }
        LinkType::Sll2 => {
            let et = be16(data, 0).ok_or(Anomaly::Truncated(Layer::Link))?;
            if data.len() < 20 {
                return Err(Anomaly::Truncated(Layer::Link));
            }
            (et, &data[20..])
        }
        LinkType::Raw => {
            let v = data.first().ok_or(Anomaly::Truncated(Layer::Link))? >> 4;
            match v {
                4 => (ETH_IPV4, data),
                6 => (ETH_IPV6, data),
                _ => return Err(Anomaly::BadIpVersion),
            }
        }
        LinkType::Ipv4 => (ETH_IPV4, data),
        LinkType::Ipv6 => (ETH_IPV6, data),
        LinkType::Null | LinkType::Loop => {
            let raw: [u8; 4] = data
                .get(..4)
                .and_then(|s| s.try_into().ok())
                .ok_or(Anomaly::Truncated(Layer::Link))?;
            // Either byte order: AF_INET is 2 everywhere; AF_INET6 is 24, 28 or 30.
            let fam = if link == LinkType::Loop {
                u32::from_be_bytes(raw)
            } else {
                u32::from_le_bytes(raw).min(u32::from_be_bytes(raw))
            };
            let et = match fam {
                2 => ETH_IPV4,
                24 | 28 | 30 => ETH_IPV6,
                other => other as u16,
            };
            (et, &data[4..])
        }
    })
}

/// The IPv4 or IPv6 packet a frame carries (the bytes after its link header and VLAN tags),
/// or `None` for other frames.
pub fn ip_packet(link: LinkType, data: &[u8]) -> Option<&[u8]> {
    let (mut vlans, mut count) = ([0; MAX_VLAN_TAGS], 0);
    match link_split(link, data, &mut vlans, &mut count).ok()? {
        (ETH_IPV4 | ETH_IPV6, rest) => Some(rest),
        _ => None,
    }
}

/// What an IP packet's checksums say, checked as Linux's receive path checks them (see
/// [`check_checksums`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Checksums {
    /// The IPv4 header checksum is wrong: `ip_rcv` drops the packet before any netfilter hook.
    pub bad_ipv4_header: bool,
    /// The transport checksum (TCP, UDP unless its checksum is 0, ICMP, ICMPv6) is wrong:
    /// conntrack calls the packet invalid in prerouting (`nf_conntrack_checksum`, on by
    /// default).
    pub bad_transport: bool,
}

/// The checksums of IPv4 or IPv6 packet `b` (the bytes from its IP header on). Only what can
/// be checked is: a header or a transport layer the capture cut short, a fragment's transport
/// layer (checked on the reassembled datagram instead) and other protocols are not bad.
///
/// As the kernel sums them (`nf_ip_checksum`, `nf_ip6_checksum`): over the whole IP payload
/// after the header chain (bytes past the IP length, such as Ethernet padding, excluded), with
/// the pseudo-header's length being that payload's for TCP, UDP and ICMPv6; ICMP over IPv4
/// has no pseudo-header.
pub fn check_checksums(b: &[u8]) -> Checksums {
    let mut out = Checksums::default();
    match b.first().map(|v| v >> 4) {
        Some(4) => {
            if b.len() < 20 {
                return out;
            }
            let ihl = usize::from(b[0] & 0x0f) * 4;
            let total = usize::from(be16(b, 2).unwrap_or(0));
            if ihl < 20 || ihl > total || total > b.len() {
                return out;
            }
            out.bad_ipv4_header = fold_sum(ones_sum(&b[..ihl], 0)) != 0xffff;
            let fragment = be16(b, 6).unwrap_or(0) & 0x3fff != 0;
            if !fragment {
                let pseudo = ones_sum(&b[12..20], u32::from(b[9]) + (total - ihl) as u32);
                out.bad_transport = transport_bad(b[9], &b[ihl..total], pseudo, false);
            }
        }
        Some(6) => {
            if b.len() < 40 {
                return out;
            }
            let end = 40 + usize::from(be16(b, 4).unwrap_or(0));
            if end > b.len() {
                return out;
            }
            let Ok(chain) = ipv6_chain(b, end) else {
                return out;
            };
            // An atomic fragment (offset 0, no more) is not reassembled: it is checked alone.
            if chain.frag.is_some_and(|f| f.offset != 0 || f.more) || chain.off > end {
                return out;
            }
            let len = (end - chain.off) as u32;
            let pseudo = ones_sum(
                &b[8..40],
                u32::from(chain.next) + (len >> 16) + (len & 0xffff),
            );
            out.bad_transport = transport_bad(chain.next, &b[chain.off..end], pseudo, true);
        }
        _ => {}
    }
    out
}

/// Whether transport layer `l4` of protocol `protocol` fails its checksum; `pseudo` is the
/// pseudo-header's sum (unused by ICMP over IPv4).
fn transport_bad(protocol: u8, l4: &[u8], pseudo: u32, v6: bool) -> bool {
    match protocol {
        6 if l4.len() >= 20 => fold_sum(ones_sum(l4, pseudo)) != 0xffff,
        // A zero UDP checksum means "none" to conntrack, in IPv6 too (`udp_error`).
        17 if l4.len() >= 8 && be16(l4, 6) != Some(0) => fold_sum(ones_sum(l4, pseudo)) != 0xffff,
        1 if !v6 && !l4.is_empty() => fold_sum(ones_sum(l4, 0)) != 0xffff,
        58 if v6 && !l4.is_empty() => fold_sum(ones_sum(l4, pseudo)) != 0xffff,
        _ => false,
    }
}

/// The 16-bit big-endian words of `data` (an odd last byte padded with zero) summed into
/// `acc` without folding.
// Why u64 inside: 64 KiB of words cannot overflow it, and the caller's u32 accumulators stay
// small (a pseudo-header and one packet).
fn ones_sum(data: &[u8], acc: u32) -> u32 {
    let mut sum = u64::from(acc);
    let mut words = data.chunks_exact(2);
    for w in &mut words {
        sum += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = words.remainder() {
        sum += u64::from(*last) << 8;
    }
    while sum > 0xffff_ffff {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// A ones'-complement sum folded to 16 bits (0xffff for data whose checksum is right).
fn fold_sum(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// What Linux's receive path makes of a packet's IP options: IPv4 header options
/// (`ip_rcv_options`, after prerouting, for packets it delivers or forwards; see
/// [`ipv4_options`]) or IPv6 hop-by-hop options (`ipv6_parse_hopopts`, before prerouting; see
/// [`ipv6_hop_by_hop`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IpOptions {
    /// None, or options it accepts (record route, timestamps, router alert, padding, unknown
    /// types it may skip).
    #[default]
    Accepted,
    /// Options it rejects as malformed: a bad length or pointer, a repeated option, an IPv4
    /// timestamp overflow count of 15, more than 7 bytes of IPv6 padding or padding that is
    /// not zero, more than 8 IPv6 options. The packet is dropped (parameter problem).
    Malformed,
    /// IPv4 loose or strict source routing: dropped while `accept_source_route` is off, as it
    /// is by default (`net.ipv4.conf.all.accept_source_route=0`).
    SourceRoute,
    /// A security label (IPv4 CIPSO, IPv6 CALIPSO): dropped unless its DOI is configured (none
    /// is by default).
    SecurityLabel,
    /// An IPv6 option of a type the stack does not know whose two high bits say "discard"
    /// (01, 10 or 11).
    UnknownOption,
}

impl IpOptions {
    /// Stable snake_case name for counters and events, per family.
    pub fn name(self, v6: bool) -> &'static str {
        match (self, v6) {
            (IpOptions::Accepted, false) => "ipv4_options_accepted",
            (IpOptions::Accepted, true) => "ipv6_hop_by_hop_accepted",
            (IpOptions::Malformed, false) => "ipv4_options_malformed",
            (IpOptions::Malformed, true) => "ipv6_hop_by_hop_malformed",
            (IpOptions::SourceRoute, _) => "ipv4_source_route",
            (IpOptions::SecurityLabel, false) => "ipv4_cipso_option",
            (IpOptions::SecurityLabel, true) => "ipv6_calipso_option",
            (IpOptions::UnknownOption, _) => "ipv6_unknown_option",
        }
    }
}

/// IPv6 hop-by-hop option types the receive path knows.
mod hbh {
    pub const PAD1: u8 = 0;
    pub const PADN: u8 = 1;
    pub const ROUTER_ALERT: u8 = 5;
    pub const CALIPSO: u8 = 7;
    pub const IOAM: u8 = 0x31;
    pub const JUMBO: u8 = 0xc2;
}

/// Non-padding hop-by-hop options the receive path takes (`net.ipv6.max_hbh_opts_number`,
/// default 8).
pub const MAX_HOP_BY_HOP_OPTIONS: usize = 8;

/// The hop-by-hop options of IPv6 packet `b` (from its first byte), walked as the receive
/// path's `ip6_parse_tlv` does for the first extension header. Anything else (no hop-by-hop
/// header, a header the capture cut) is accepted: nothing to check.
pub fn ipv6_hop_by_hop(b: &[u8]) -> IpOptions {
    use IpOptions::*;
    if b.len() < 48 || b[0] >> 4 != 6 || b[6] != 0 {
        return Accepted;
    }
    let end = 40 + (usize::from(b[41]) + 1) * 8;
    if b.len() < end {
        return Accepted;
    }
    // Offsets from the IPv6 header's start: alignment rules are stated in them.
    let (mut off, mut padding, mut options) = (42usize, 0usize, 0usize);
    while off < end {
        let left = end - off;
        if b[off] == hbh::PAD1 {
            padding += 1;
            if padding > 7 {
                return Malformed;
            }
            off += 1;
            continue;
        }
        if left < 2 {
            return Malformed;
        }
        let len = usize::from(b[off + 1]) + 2;
        if len > left {
            return Malformed;
        }
        let option = &b[off..off + len];
        if option[0] == hbh::PADN {
            padding += len;
            if padding > 7 || option[2..].iter().any(|&x| x != 0) {
                return Malformed;
            }
        } else {
            options += 1;
            if options > MAX_HOP_BY_HOP_OPTIONS {
                return Malformed;
            }
            match option[0] {
                hbh::ROUTER_ALERT if len != 4 => return Malformed,
                hbh::ROUTER_ALERT => {}
                // In-situ OAM, off unless enabled on the interface: ignored if aligned.
                hbh::IOAM if off % 4 != 0 => return Malformed,
                hbh::IOAM => {}
                hbh::JUMBO => {
                    let payload_len = u16::from_be_bytes([b[4], b[5]]);
                    let jumbo_len = option
                        .get(2..6)
                        .map_or(0, |v| u32::from_be_bytes([v[0], v[1], v[2], v[3]]));
                    let fits = (b.len() - 40) as u64 >= u64::from(jumbo_len);
                    if len != 6 || off % 4 != 2 || jumbo_len <= 65_535 || payload_len != 0 || !fits
                    {
                        return Malformed;
                    }
                }
                hbh::CALIPSO => return SecurityLabel,
                // Unknown: the two high bits say skip (00) or discard (anything else).
                t if t >> 6 != 0 => return UnknownOption,
                _ => {}
            }
            padding = 0;
        }
        off += len;
    }
    Accepted
}

/// The options of IPv4 header `header` (from its first byte; at least its IHL's bytes, else
/// nothing is checked), walked as the receive path's `__ip_options_compile` does.
pub fn ipv4_options(header: &[u8]) -> IpOptions {
    use IpOptions::*;
    let ihl = usize::from(header.first().map_or(0, |v| v & 0x0f)) * 4;
    if ihl <= 20 || header.len() < ihl {
        return Accepted;
    }
    let opts = &header[20..ihl];
    let (mut at, mut srr, mut rr, mut ts) = (0usize, false, false, false);
    while at < opts.len() {
        let left = opts.len() - at;
        match opts[at] {
            0 => break,
            1 => {
                at += 1;
                continue;
            }
            _ => {}
        }
        if left < 2 {
            return Malformed;
        }
        let len = usize::from(opts[at + 1]);
        if len < 2 || len > left {
            return Malformed;
        }
        let o = &opts[at..at + len];
        let ptr = |min_len: usize| o.get(2).filter(|_| len >= min_len).map(|p| usize::from(*p));
        match o[0] {
            // Loose and strict source route.
            131 | 137 => match ptr(3) {
                Some(p) if p >= 4 && !srr => srr = true,
                _ => return Malformed,
            },
            // Record route.
            7 => match ptr(3) {
                Some(p) if !rr && p >= 4 && (p > len || p + 3 <= len) => rr = true,
                _ => return Malformed,
            },
            // Timestamp.
            68 => {
                let Some(p) = ptr(4).filter(|p| !ts && *p >= 5) else {
                    return Malformed;
                };
                if p <= len {
                    if p + 3 > len {
                        return Malformed;
                    }
                    match o[3] & 0x0f {
                        // Timestamps only.
                        0 => ts = true,
                        // With addresses, prespecified or not: room for both.
                        1 | 3 if p + 7 > len => return Malformed,
                        1 | 3 => ts = true,
                        // Other flags: accepted on receive, and not remembered.
                        _ => {}
                    }
                } else if o[3] >> 4 == 15 {
                    return Malformed;
                } else {
                    ts = true;
                }
            }
            // Router alert.
            148 if len < 4 => return Malformed,
            134 => return SecurityLabel,
            _ => {}
        }
        at += len;
    }
    if srr {
        SourceRoute
    } else {
        Accepted
    }
}

/// What IP reassembly needs of one fragment (see [`fragment_view`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragmentView<'a> {
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// IPv4: the header's protocol; IPv6: the fragment header's next header.
    pub protocol: u8,
    /// Identification (16 bits for IPv4, 32 for IPv6).
    pub id: u32,
    /// Offset of this fragment's data in the datagram, bytes.
    pub offset: u32,
    /// More fragments follow.
    pub more: bool,
    /// Bytes of data this fragment carries per its IP header.
    pub data_len: u32,
    /// The captured part of that data (shorter when the capture cut the packet).
    pub data: &'a [u8],
    /// What comes before the data: the IPv4 header with its options, or the IPv6 header and
    /// the extension headers before the fragment header.
    pub header: &'a [u8],
    /// IPv6: where in `header` the next-header byte naming the fragment header is.
    pub next_header_at: Option<usize>,
}

/// The fragment fields of a frame, or `None` when it is not an IP fragment (or its IP
/// header is malformed: [`decode`] reports that). Parses the link and IP headers only, so it
/// also works on a first fragment too short for its transport header.
pub fn fragment_view(link: LinkType, data: &[u8]) -> Option<FragmentView<'_>> {
    let (mut vlans, mut count) = ([0; MAX_VLAN_TAGS], 0);
    let (ethertype, b) = link_split(link, data, &mut vlans, &mut count).ok()?;
    match ethertype {
        ETH_IPV4 => {
            if b.len() < 20 || b[0] >> 4 != 4 {
                return None;
            }
            let ihl = usize::from(b[0] & 0x0f) * 4;
            let total = usize::from(be16(b, 2)?);
            if ihl < 20 || ihl > b.len() || total < ihl {
                return None;
            }
            let field = be16(b, 6)?;
            let (offset, more) = (u32::from(field & 0x1fff) * 8, field & 0x2000 != 0);
            if offset == 0 && !more {
                return None;
            }
            Some(FragmentView {
                src: IpAddr::V4(ipv4_at(b, 12)?),
                dst: IpAddr::V4(ipv4_at(b, 16)?),
                protocol: b[9],
                id: u32::from(be16(b, 4)?),
                offset,
                more,
                data_len: (total - ihl) as u32,
                data: &b[ihl..total.min(b.len())],
                header: &b[..ihl],
                next_header_at: None,
            })
        }
        ETH_IPV6 => {
            if b.len() < 40 || b[0] >> 4 != 6 {
                return None;
            }
            let end_declared = 40 + usize::from(be16(b, 4)?);
            let end = end_declared.min(b.len());
            let (mut next, mut next_at, mut off) = (b[6], 6, 40);
            for _ in 0..MAX_EXT_HEADERS {
                let len = match next {
                    0 | 43 | 60 | 135 | 139 | 140 => (usize::from(*b.get(off + 1)?) + 1) * 8,
                    51 => (usize::from(*b.get(off + 1)?) + 2) * 4,
                    44 => {
                        let field = be16(b, off + 2)?;
                        if off + 8 > end {
                            return None;
                        }
                        return Some(FragmentView {
                            src: IpAddr::V6(ipv6_at(b, 8)?),
                            dst: IpAddr::V6(ipv6_at(b, 24)?),
                            protocol: b[off],
                            id: be32(b, off + 4)?,
                            offset: u32::from(field >> 3) * 8,
                            more: field & 1 != 0,
                            data_len: (end_declared - off - 8) as u32,
                            data: &b[off + 8..end],
                            header: &b[..off],
                            next_header_at: Some(next_at),
                        });
                    }
                    _ => return None,
                };
                if off + len > end {
                    return None;
                }
                next = b[off];
                next_at = off;
                off += len;
            }
            None
        }
        _ => None,
    }
}

/// What [`peek_ipv4`] reads: source, destination, and the TCP/UDP ports if present.
pub type PeekV4 = (Ipv4Addr, Ipv4Addr, Option<(u16, u16)>);

/// The IPv4 source and destination (and TCP/UDP ports, when the header is there) of an
/// Ethernet (at most one VLAN tag) or raw IPv4 frame, read without decoding or validating
/// anything else: a hint for prefetching (batched replay), never a substitute for [`decode`].
/// `None` for anything else or a short frame.
#[inline]
pub fn peek_ipv4(link: LinkType, data: &[u8]) -> Option<PeekV4> {
    let off = match link {
        LinkType::Ethernet => match be16(data, 12)? {
            ETH_IPV4 => 14,
            ETH_VLAN if be16(data, 16)? == ETH_IPV4 => 18,
            _ => return None,
        },
        LinkType::Ipv4 | LinkType::Raw => 0,
        _ => return None,
    };
    let vihl = *data.get(off)?;
    if vihl >> 4 != 4 {
        return None;
    }
    let src = ipv4_at(data, off + 12)?;
    let dst = ipv4_at(data, off + 16)?;
    let l4 = off + usize::from(vihl & 0x0f) * 4;
    let ports = match data.get(off + 9) {
        Some(&(6 | 17)) => be16(data, l4).zip(be16(data, l4 + 2)),
        _ => None,
    };
    Some((src, dst, ports))
}

fn decode_arp(b: &[u8]) -> Result<Arp, Anomaly> {
    if b.len() < 28 {
        return Err(Anomaly::Truncated(Layer::Arp));
    }
    if be16(b, 0) != Some(1) || be16(b, 2) != Some(ETH_IPV4) || b[4] != 6 || b[5] != 4 {
        return Err(Anomaly::BadArp);
    }
    let mac = |off: usize| -> [u8; 6] {
        let mut m = [0u8; 6];
        m.copy_from_slice(&b[off..off + 6]);
        m
    };
    Ok(Arp {
        op: be16(b, 6).unwrap_or(0),
        sender_mac: mac(8),
        sender_ip: ipv4_at(b, 14).unwrap_or(Ipv4Addr::UNSPECIFIED),
        target_mac: mac(18),
        target_ip: ipv4_at(b, 24).unwrap_or(Ipv4Addr::UNSPECIFIED),
    })
}

/// Decode an IPv4 packet (header and transport).
pub fn decode_ipv4(b: &[u8]) -> Result<Ip<'_>, Anomaly> {
    if b.len() < 20 {
        return Err(Anomaly::Truncated(Layer::Ipv4));
    }
    if b[0] >> 4 != 4 {
        return Err(Anomaly::BadIpVersion);
    }
    let ihl = usize::from(b[0] & 0x0f) * 4;
    if ihl < 20 || ihl > b.len() {
        return Err(Anomaly::BadIpv4HeaderLength);
    }
    let total = usize::from(be16(b, 2).unwrap_or(0));
    if total < ihl {
        return Err(Anomaly::BadIpLength);
    }
    // Captured bytes may be fewer (snap length) or more (Ethernet padding) than `total`.
    let end = total.min(b.len());
    let frag_field = be16(b, 6).unwrap_or(0);
    let offset = u32::from(frag_field & 0x1fff) * 8;
    let more = frag_field & 0x2000 != 0;
    let frag = (offset != 0 || more).then_some(Frag {
        id: u32::from(be16(b, 4).unwrap_or(0)),
        offset,
        more,
    });
    let protocol = b[9];
    let src = IpAddr::V4(ipv4_at(b, 12).ok_or(Anomaly::Truncated(Layer::Ipv4))?);
    let dst = IpAddr::V4(ipv4_at(b, 16).ok_or(Anomaly::Truncated(Layer::Ipv4))?);
    let l4 = if offset != 0 {
        Transport::Fragment
    } else {
        decode_transport(protocol, &b[ihl..end], total - ihl, false)?
    };
    Ok(Ip {
        src,
        dst,
        protocol,
        ttl: b[8],
        len: total as u32,
        frag,
        has_options: ihl > 20,
        ext_headers: 0,
        l4,
    })
}

/// Decode an IPv6 packet, walking at most [`MAX_EXT_HEADERS`] extension headers.
pub fn decode_ipv6(b: &[u8]) -> Result<Ip<'_>, Anomaly> {
    if b.len() < 40 {
        return Err(Anomaly::Truncated(Layer::Ipv6));
    }
    if b[0] >> 4 != 6 {
        return Err(Anomaly::BadIpVersion);
    }
    let payload_len = usize::from(be16(b, 4).unwrap_or(0));
    let end = (40 + payload_len).min(b.len());
    let src = IpAddr::V6(ipv6_at(b, 8).ok_or(Anomaly::Truncated(Layer::Ipv6))?);
    let dst = IpAddr::V6(ipv6_at(b, 24).ok_or(Anomaly::Truncated(Layer::Ipv6))?);
    let Ipv6Chain {
        next,
        off,
        frag,
        count,
    } = ipv6_chain(b, end)?;
    if frag.is_some_and(|f| f.offset != 0) {
        return Ok(Ip {
            src,
            dst,
            protocol: next,
            ttl: b[7],
            len: (40 + payload_len) as u32,
            frag,
            has_options: false,
            ext_headers: count,
            l4: Transport::Fragment,
        });
    }
    let declared = (40 + payload_len).saturating_sub(off);
    let l4 = decode_transport(next, &b[off.min(end)..end], declared, true)?;
    Ok(Ip {
        src,
        dst,
        protocol: next,
        ttl: b[7],
        len: (40 + payload_len) as u32,
        frag,
        has_options: false,
        ext_headers: count,
        l4,
    })
}

/// An IPv6 header chain walked to its upper layer (or to a non-first fragment's data).
struct Ipv6Chain {
    /// The upper-layer protocol (a non-first fragment: its fragment header's next header).
    next: u8,
    /// Where the upper layer (or the fragment's data) starts.
    off: usize,
    /// The fragment header's fields, if there is one.
    frag: Option<Frag>,
    /// Extension headers walked.
    count: u8,
}

/// Walks the extension headers of IPv6 packet `b` (whose payload ends at `end`), at most
/// [`MAX_EXT_HEADERS`] of them, stopping at the upper layer or after the fragment header of
/// a non-first fragment.
fn ipv6_chain(b: &[u8], end: usize) -> Result<Ipv6Chain, Anomaly> {
    let mut next = b[6];
    let mut off = 40;
    let mut frag = None;
    let mut count = 0u8;
    loop {
        match next {
            // Hop-by-hop, routing, destination options, mobility, HIP, shim6.
            0 | 43 | 60 | 135 | 139 | 140 => {
                if usize::from(count) == MAX_EXT_HEADERS {
                    return Err(Anomaly::TooManyExtensionHeaders);
                }
                let nh = *b.get(off).ok_or(Anomaly::Truncated(Layer::Ipv6))?;
                let len =
                    (usize::from(*b.get(off + 1).ok_or(Anomaly::Truncated(Layer::Ipv6))?) + 1) * 8;
                if off + len > end {
                    return Err(Anomaly::Truncated(Layer::Ipv6));
                }
                next = nh;
                off += len;
                count += 1;
            }
            // Authentication header: length in 4-byte units minus 2.
            51 => {
                if usize::from(count) == MAX_EXT_HEADERS {
                    return Err(Anomaly::TooManyExtensionHeaders);
                }
                let nh = *b.get(off).ok_or(Anomaly::Truncated(Layer::Ipv6))?;
                let len =
                    (usize::from(*b.get(off + 1).ok_or(Anomaly::Truncated(Layer::Ipv6))?) + 2) * 4;
                if off + len > end {
                    return Err(Anomaly::Truncated(Layer::Ipv6));
                }
                next = nh;
                off += len;
                count += 1;
            }
            44 => {
                if usize::from(count) == MAX_EXT_HEADERS {
                    return Err(Anomaly::TooManyExtensionHeaders);
                }
                if off + 8 > end {
                    return Err(Anomaly::Truncated(Layer::Ipv6));
                }
                let nh = b[off];
                let field = be16(b, off + 2).unwrap_or(0);
                let offset = u32::from(field >> 3) * 8;
                frag = Some(Frag {
                    id: be32(b, off + 4).unwrap_or(0),
                    offset,
                    more: field & 1 != 0,
                });
                next = nh;
                off += 8;
                count += 1;
                if offset != 0 {
                    break;
                }
            }
            _ => break,
        }
    }
    Ok(Ipv6Chain {
        next,
        off,
        frag,
        count,
    })
}

/// `declared`: the transport layer's length per the IP header (`b` may be shorter).
fn decode_transport(
    protocol: u8,
    b: &[u8],
    declared: usize,
    v6: bool,
) -> Result<Transport<'_>, Anomaly> {
    match protocol {
        6 => decode_tcp(b, declared).map(Transport::Tcp),
        17 => {
            if b.len() < 8 {
                return Err(Anomaly::Truncated(Layer::Udp));
            }
            let len = usize::from(be16(b, 4).unwrap_or(0));
            // Length 0 is legal for IPv6 jumbograms only; treat as "to the end".
            if len != 0 && len < 8 {
                return Err(Anomaly::BadUdpLength);
            }
            let end = if len == 0 { b.len() } else { len.min(b.len()) };
            Ok(Transport::Udp(Udp {
                src: be16(b, 0).unwrap_or(0),
                dst: be16(b, 2).unwrap_or(0),
                payload: &b[8..end],
            }))
        }
        1 if !v6 => decode_icmp(b, false).map(Transport::Icmp),
        58 if v6 => decode_icmp(b, true).map(Transport::Icmp),
        _ => Ok(Transport::Other { payload: b }),
    }
}

fn decode_tcp(b: &[u8], declared: usize) -> Result<Tcp<'_>, Anomaly> {
    if b.len() < 20 {
        return Err(Anomaly::Truncated(Layer::Tcp));
    }
    let doff = usize::from(b[12] >> 4) * 4;
    if doff < 20 || doff > b.len() {
        return Err(Anomaly::BadTcpHeaderLength);
    }
    let mut tcp = Tcp {
        src: be16(b, 0).unwrap_or(0),
        dst: be16(b, 2).unwrap_or(0),
        seq: be32(b, 4).unwrap_or(0),
        ack: be32(b, 8).unwrap_or(0),
        flags: b[13] & 0x3f,
        window: be16(b, 14).unwrap_or(0),
        mss: None,
        wscale: None,
        sack_permitted: false,
        has_options: doff > 20,
        sack_edges: [0; MAX_SACK_BLOCKS],
        sack_blocks: 0,
        data_len: u32::try_from(declared.max(b.len()) - doff).unwrap_or(u32::MAX),
        payload: &b[doff..],
    };
    // Options: bounded by the header length; malformed options end the walk (as Linux does).
    let opts = &b[20..doff];
    let mut i = 0;
    while i < opts.len() {
        match opts[i] {
            0 => break,
            1 => i += 1,
            kind => {
                let Some(&len) = opts.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > opts.len() {
                    break;
                }
                match (kind, len) {
                    (2, 4) => tcp.mss = be16(opts, i + 2),
                    (3, 3) => tcp.wscale = Some(opts[i + 2]),
                    (4, 2) => tcp.sack_permitted = true,
                    // SACK: 2 + 8 per block; only the first SACK option counts (as Linux).
                    (5, l) if tcp.sack_blocks == 0 && l >= 10 && (l - 2) % 8 == 0 => {
                        for (k, block) in opts[i + 2..i + l].chunks_exact(8).enumerate() {
                            if k < MAX_SACK_BLOCKS {
                                tcp.sack_edges[k] = be32(block, 4).unwrap_or(0);
                                tcp.sack_blocks = k as u8 + 1;
                            }
                        }
                    }
                    _ => {}
                }
                i += len;
            }
        }
    }
    Ok(tcp)
}

fn decode_icmp(b: &[u8], v6: bool) -> Result<Icmp<'_>, Anomaly> {
    if b.len() < 4 {
        return Err(Anomaly::Truncated(Layer::Icmp));
    }
    let mut icmp = Icmp {
        v6,
        icmp_type: b[0],
        code: b[1],
        id: None,
        inner: None,
        rest: &b[4..],
    };
    let query = if v6 {
        matches!(icmp.icmp_type, 128 | 129 | 139 | 140)
    } else {
        matches!(icmp.icmp_type, 0 | 8 | 13 | 14 | 15 | 16 | 17 | 18)
    };
    if query {
        icmp.id = be16(b, 4);
    }
    if icmp.is_error() {
        // The quoted packet starts after the 8-byte header; decode what is there.
        if let Some(q) = b.get(8..) {
            icmp.inner = quoted(q, v6);
        }
    }
    Ok(icmp)
}

fn quoted(q: &[u8], v6: bool) -> Option<IcmpInner> {
    let (src, dst, protocol, l4): (IpAddr, IpAddr, u8, &[u8]) = if v6 {
        let src = ipv6_at(q, 8)?;
        let dst = ipv6_at(q, 24)?;
        // The quoted upper layer lies behind the extension headers, as conntrack's
        // `ipv6_skip_exthdr` finds it: hop-by-hop, routing, destination options, AH, and a
        // first fragment's header (a later fragment quotes no upper-layer header).
        let (mut next, mut off) = (*q.get(6)?, 40usize);
        for _ in 0..MAX_EXT_HEADERS {
            let len = match next {
                0 | 43 | 60 => (usize::from(*q.get(off + 1)?) + 1) * 8,
                51 => (usize::from(*q.get(off + 1)?) + 2) * 4,
                44 if be16(q, off + 2)? & 0xfff8 == 0 => 8,
                _ => break,
            };
            next = *q.get(off)?;
            off += len;
        }
        (src.into(), dst.into(), next, q.get(off..)?)
    } else {
        if *q.first()? >> 4 != 4 {
            return None;
        }
        let ihl = usize::from(q[0] & 0x0f) * 4;
        (
            ipv4_at(q, 12)?.into(),
            ipv4_at(q, 16)?.into(),
            *q.get(9)?,
            q.get(ihl.max(20)..)?,
        )
    };
    let ports = match protocol {
        6 | 17 => Some((be16(l4, 0)?, be16(l4, 2)?)),
        1 | 58 => be16(l4, 4).map(|id| (id, 0)),
        _ => None,
    };
    Some(IcmpInner {
        src,
        dst,
        protocol,
        ports,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet + IPv4 + TCP SYN 192.0.2.5:51515 -> 203.0.113.7:445 with MSS option.
    pub(crate) fn syn_frame() -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let ip_start = f.len();
        f.extend_from_slice(&[0x45, 0, 0, 44, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0]);
        f.extend_from_slice(&[192, 0, 2, 5, 203, 0, 113, 7]);
        f.extend_from_slice(&51515u16.to_be_bytes());
        f.extend_from_slice(&445u16.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x60, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend_from_slice(&[2, 4, 0x05, 0xb4]);
        assert_eq!(f.len() - ip_start, 44);
        f
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Packets with right checksums, computed by a separate implementation (192.0.2.5 ->
    /// 203.0.113.7, 2001:db8::1 -> 2001:db8::2; odd payload lengths, so the last byte is
    /// padded); where the upper layer starts, and where its checksum sits in it.
    const RIGHT: [(&str, &str, usize, usize); 6] = [
        ("IPv4 TCP", "4500002b1234400040062a8cc0000205cb0071079c40005000000064000000005002ffff507b0000616263", 20, 16),
        ("IPv4 UDP", "450000211234400040112a8bc0000205cb00710714e90035000da8d668656c6c6f", 20, 6),
        ("IPv4 ICMP", "4500001f1234400040012a9dc0000205cb0071070800057e0007000178797a", 20, 2),
        ("IPv6 UDP behind destination options", "6000000000153c4020010db800000000000000000000000120010db8000000000000000000000002110001040000000014e90035000d4b6f68656c6c6f", 48, 6),
        ("IPv6 ICMPv6", "60000000000b3a4020010db800000000000000000000000120010db8000000000000000000000002800031c30007000178797a", 40, 2),
        ("IPv6 TCP", "600000000017064020010db800000000000000000000000120010db80000000000000000000000029c40005000000064000000005002fffff3130000616263", 40, 16),
    ];

    #[test]
    fn right_checksums_pass_and_any_flipped_bit_fails() {
        for (name, h, upper, at) in RIGHT {
            let p = hex(h);
            assert_eq!(check_checksums(&p), Checksums::default(), "{name}");
            // Ethernet padding past the IP length is not summed.
            let mut padded = p.clone();
            padded.extend_from_slice(&[0xaa; 6]);
            assert_eq!(
                check_checksums(&padded),
                Checksums::default(),
                "{name} padded"
            );
            let v4 = p[0] >> 4 == 4;
            let icmp4 = v4 && p[9] == 1;
            for byte in 0..p.len() {
                for bit in 0..8 {
                    let mut q = p.clone();
                    q[byte] ^= 1 << bit;
                    let got = check_checksums(&q);
                    let what = format!("{name}: byte {byte} bit {bit}: {got:?}");
                    // IPv4: every header field but version, length and protocol (which
                    // change what is parsed) is under the header checksum.
                    if v4 && (4..20).contains(&byte) && byte != 9 {
                        assert!(got.bad_ipv4_header, "{what}");
                    }
                    // The addresses are in the pseudo-header (not ICMP over IPv4's).
                    let address = if v4 {
                        (12..20).contains(&byte)
                    } else {
                        (8..40).contains(&byte)
                    };
                    if (address && !icmp4) || byte >= upper {
                        assert!(got.bad_transport, "{what}");
                    }
                    // Fields no checksum covers: IPv6's flow label and hop limit, and the
                    // option bytes of an extension header.
                    let uncovered =
                        !v4 && ((1..4).contains(&byte) || byte == 7 || (42..upper).contains(&byte));
                    if uncovered {
                        assert_eq!(got, Checksums::default(), "{what}");
                    }
                }
            }
            // The checksum field itself names where it sits.
            let mut q = p.clone();
            q[upper + at] ^= 0x01;
            assert!(check_checksums(&q).bad_transport, "{name}: checksum field");
        }
    }

    #[test]
    fn ipv4_options_as_the_receive_path_judges_them() {
        use IpOptions::*;
        let header = |options: &[u8]| {
            let mut h = vec![
                0x45 + (options.len() / 4) as u8,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                64,
                17,
                0,
                0,
            ];
            h.extend_from_slice(&[192, 0, 2, 5, 203, 0, 113, 7]);
            h.extend_from_slice(options);
            h
        };
        // The cases the kernel test sends through a router (crafted capture), and more.
        let cases: [(&[u8], IpOptions, &str); 21] = [
            (&[7, 7, 4, 0, 0, 0, 0, 0], Accepted, "record route"),
            (
                &[131, 7, 4, 203, 0, 113, 7, 0],
                SourceRoute,
                "loose source route",
            ),
            (
                &[137, 7, 4, 203, 0, 113, 7, 0],
                SourceRoute,
                "strict source route",
            ),
            (&[7, 1, 0, 0], Malformed, "length 1"),
            (&[68, 40, 5, 0], Malformed, "length past the header"),
            (&[148, 4, 0, 0], Accepted, "router alert"),
            (&[0x9e, 4, 0, 0], Accepted, "unknown type"),
            (&[134, 8, 0, 0, 0, 1, 0, 0], SecurityLabel, "CIPSO"),
            (
                &[68, 8, 9, 0xf0, 0, 0, 0, 0],
                Malformed,
                "full timestamp, overflow 15",
            ),
            (
                &[68, 8, 9, 0xe0, 0, 0, 0, 0],
                Accepted,
                "full timestamp, overflow 14",
            ),
            (&[1, 1, 1, 0], Accepted, "no-ops"),
            (
                &[7, 7, 3, 0, 0, 0, 0, 0],
                Malformed,
                "record route pointer 3",
            ),
            (&[7, 7, 8, 0, 0, 0, 0, 0], Accepted, "record route full"),
            (
                &[7, 7, 5, 0, 0, 0, 0, 0],
                Malformed,
                "record route slot past its end",
            ),
            (&[7, 3, 4, 7, 3, 4, 0, 0], Malformed, "record route twice"),
            (
                &[0, 7, 1, 0],
                Accepted,
                "end of options: the rest is not looked at",
            ),
            (
                &[1, 1, 1, 7],
                Malformed,
                "an option with no room for its length",
            ),
            (
                &[68, 12, 5, 1, 0, 0, 0, 0, 0, 0, 0, 0],
                Accepted,
                "timestamps with addresses",
            ),
            (
                &[68, 8, 5, 1, 0, 0, 0, 0],
                Malformed,
                "timestamp with an address, no room",
            ),
            (&[148, 2, 0, 0], Malformed, "router alert of length 2"),
            (
                &[131, 3, 4, 137, 3, 4, 0, 0],
                Malformed,
                "two source routes",
            ),
        ];
        for (options, want, what) in cases {
            assert_eq!(ipv4_options(&header(options)), want, "{what}");
        }
        // No options, or a header the capture cut: nothing to reject.
        assert_eq!(ipv4_options(&header(&[])), Accepted);
        let cut = header(&[131, 7, 4, 203, 0, 113, 7, 0]);
        assert_eq!(ipv4_options(&cut[..24]), Accepted);
    }

    #[test]
    fn ipv6_hop_by_hop_options_as_the_receive_path_judges_them() {
        use IpOptions::*;
        // An IPv6 header (payload length as given), then a hop-by-hop header with `options`
        // (a multiple of 8 minus 2 bytes), then 8 bytes of UDP.
        let packet = |options: &[u8], payload_len: u16| {
            let mut p = vec![0x60, 0, 0, 0];
            p.extend_from_slice(&payload_len.to_be_bytes());
            p.extend_from_slice(&[0, 64]);
            p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5]);
            p.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 7]);
            p.extend_from_slice(&[17, ((options.len() + 2) / 8 - 1) as u8]);
            p.extend_from_slice(options);
            p.extend_from_slice(&[0x17, 0x71, 0, 53, 0, 8, 0, 0]);
            p
        };
        let nine: Vec<u8> = [0x1e, 0]
            .repeat(9)
            .into_iter()
            .chain([1, 2, 0, 0])
            .collect();
        let eight: Vec<u8> = [0x1e, 0]
            .repeat(8)
            .into_iter()
            .chain([1, 4, 0, 0, 0, 0])
            .collect();
        // The kernel test's cases (crafted capture), in its order, and more.
        let cases: [(&[u8], IpOptions, &str); 20] = [
            (&[1, 4, 0, 0, 0, 0], Accepted, "6 bytes of padding"),
            (&[0x1e, 4, 0, 0, 0, 0], Accepted, "unknown, skip"),
            (&[0x5e, 4, 0, 0, 0, 0], UnknownOption, "unknown, discard"),
            (
                &[0x9e, 4, 0, 0, 0, 0],
                UnknownOption,
                "unknown, discard and tell",
            ),
            (
                &[0xde, 4, 0, 0, 0, 0],
                UnknownOption,
                "unknown, discard and tell unicast",
            ),
            (&[1, 4, 0, 0, 1, 0], Malformed, "padding that is not zero"),
            (&[0; 6], Accepted, "six Pad1"),
            (&[0; 14], Malformed, "eight Pad1 in a row"),
            (&[5, 2, 0, 0, 1, 0], Accepted, "router alert"),
            (&[5, 3, 0, 0, 0, 0], Malformed, "router alert of length 3"),
            (&[0x1e, 10, 0, 0, 0, 0], Malformed, "option past the header"),
            (
                &[7, 8, 0, 0, 0, 1, 0, 0, 0, 0, 1, 2, 0, 0],
                SecurityLabel,
                "CALIPSO",
            ),
            (&nine, Malformed, "nine options"),
            (&eight, Accepted, "eight options"),
            (&[0x31, 4, 0, 0, 0, 0], Malformed, "IOAM not 4-aligned"),
            (&[1, 0, 0x31, 2, 0, 0], Accepted, "IOAM aligned (ignored)"),
            (
                &[0xc2, 4, 0, 1, 0, 0],
                Malformed,
                "jumbo with a payload length",
            ),
            (
                &[1, 0, 1, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                Malformed,
                "8 bytes of PadN",
            ),
            (
                &[0x1e, 0, 1, 0, 0, 0],
                Accepted,
                "padding counted afresh after an option",
            ),
            (
                &[0x1e, 0, 0, 0, 0, 0x5e],
                Malformed,
                "an option with no room for its length",
            ),
        ];
        for (options, want, what) in cases {
            let p = packet(options, (options.len() + 2 + 8) as u16);
            assert_eq!(ipv6_hop_by_hop(&p), want, "{what}");
        }
        // A real jumbogram: payload length 0, the jumbo length above 65,535 and all there.
        let mut jumbo = packet(&[0xc2, 4, 0, 1, 0, 8], 0);
        jumbo.resize(40 + 65_544, 0);
        assert_eq!(ipv6_hop_by_hop(&jumbo), Accepted);
        jumbo.truncate(40 + 65_543);
        assert_eq!(
            ipv6_hop_by_hop(&jumbo),
            Malformed,
            "jumbogram longer than the packet"
        );
        // No hop-by-hop header, or one the capture cut: nothing to reject.
        let mut other = packet(&[0x5e, 4, 0, 0, 0, 0], 16);
        other[6] = 60;
        assert_eq!(ipv6_hop_by_hop(&other), Accepted);
        let cut = packet(&[0x5e, 4, 0, 0, 0, 0], 16);
        assert_eq!(ipv6_hop_by_hop(&cut[..44]), Accepted);
    }

    #[test]
    fn what_cannot_be_checked_is_not_bad() {
        let udp4 = hex(RIGHT[1].1);
        // A zero UDP checksum is "none", over IPv4 and IPv6 alike (conntrack's udp_error).
        let mut none = udp4.clone();
        none[26..28].copy_from_slice(&[0, 0]);
        none[30] ^= 0xff;
        assert_eq!(check_checksums(&none), Checksums::default());
        let mut none6 = hex(RIGHT[3].1);
        none6[54..56].copy_from_slice(&[0, 0]);
        assert_eq!(check_checksums(&none6), Checksums::default());
        // A capture cut short: neither checked.
        let tcp4 = hex(RIGHT[0].1);
        assert_eq!(
            check_checksums(&tcp4[..tcp4.len() - 1]),
            Checksums::default()
        );
        assert_eq!(check_checksums(&tcp4[..15]), Checksums::default());
        // An IPv4 fragment's transport layer waits for its datagram; its header is checked.
        let mut frag = tcp4.clone();
        frag[6] |= 0x20; // more fragments
        let c = check_checksums(&frag);
        assert!(c.bad_ipv4_header && !c.bad_transport);
        // An IPv6 first fragment is not checked alone; an atomic fragment (offset 0, no
        // more) is.
        let tcp6 = hex(RIGHT[5].1);
        let with_frag = |more: u8, corrupt: bool| {
            let mut p = tcp6[..40].to_vec();
            p[6] = 44;
            p[4..6].copy_from_slice(&((tcp6.len() - 40 + 8) as u16).to_be_bytes());
            p.extend_from_slice(&[6, 0, 0, more, 0, 0, 0, 9]);
            p.extend_from_slice(&tcp6[40..]);
            if corrupt {
                let last = p.len() - 1;
                p[last] ^= 0x40;
            }
            p
        };
        assert!(!check_checksums(&with_frag(1, true)).bad_transport);
        assert!(!check_checksums(&with_frag(0, false)).bad_transport);
        assert!(check_checksums(&with_frag(0, true)).bad_transport);
        // Other protocols carry no checksum conntrack checks.
        let mut gre = tcp4.clone();
        gre[9] = 47;
        gre[35] ^= 0xff;
        let c = check_checksums(&gre);
        assert!(c.bad_ipv4_header && !c.bad_transport);
    }

    #[test]
    fn decodes_ethernet_ipv4_tcp_syn() {
        let f = syn_frame();
        let p = decode(LinkType::Ethernet, &f).unwrap();
        let L3::Ip(ip) = p.l3 else { panic!() };
        assert_eq!(ip.src, "192.0.2.5".parse::<IpAddr>().unwrap());
        let Transport::Tcp(t) = ip.l4 else { panic!() };
        assert_eq!(
            (t.src, t.dst, t.flags, t.mss),
            (51515, 445, tcp_flags::SYN, Some(1460))
        );
    }

    #[test]
    fn peek_reads_what_decode_reads_and_never_panics() {
        let f = syn_frame();
        let (src, dst, ports) = peek_ipv4(LinkType::Ethernet, &f).unwrap();
        assert_eq!(
            (src.to_string(), dst.to_string(), ports),
            ("192.0.2.5".into(), "203.0.113.7".into(), Some((51515, 445)))
        );
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x14]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(
            peek_ipv4(LinkType::Ethernet, &tagged),
            Some((src, dst, ports))
        );
        assert_eq!(peek_ipv4(LinkType::Ipv4, &f[14..]), Some((src, dst, ports)));
        // Every truncation: a hint or nothing, never a panic; no ports without the header.
        for n in 0..f.len() {
            let p = peek_ipv4(LinkType::Ethernet, &f[..n]);
            assert_eq!(p.is_some(), n >= 34, "{n}");
            assert_eq!(p.and_then(|p| p.2).is_some(), n >= 38, "{n}");
        }
        assert_eq!(peek_ipv4(LinkType::Sll, &f), None);
    }

    #[test]
    fn vlan_tags_are_followed_and_bounded() {
        let f = syn_frame();
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x88, 0xa8, 0x00, 0x0a, 0x81, 0x00, 0x00, 0x14]);
        tagged.extend_from_slice(&f[12..]);
        let p = decode(LinkType::Ethernet, &tagged).unwrap();
        assert_eq!((p.vlan_count, p.vlans), (2, [10, 20]));
        let mut three = f[..12].to_vec();
        three.extend_from_slice(&[0x81, 0, 0, 1, 0x81, 0, 0, 2, 0x81, 0, 0, 3]);
        three.extend_from_slice(&f[12..]);
        assert_eq!(
            decode(LinkType::Ethernet, &three),
            Err(Anomaly::TooManyVlanTags)
        );
    }

    #[test]
    fn truncations_are_anomalies() {
        let f = syn_frame();
        for n in 0..f.len() {
            let r = decode(LinkType::Ethernet, &f[..n]);
            assert!(r.is_err(), "prefix {n} decoded");
        }
    }

    #[test]
    fn ipv6_extension_chain_and_fragments() {
        // IPv6, hop-by-hop (8 bytes) -> fragment (offset 0, M) -> UDP.
        let mut b = vec![0x60, 0, 0, 0, 0, 0, 0, 64];
        b.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        b.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        b.extend_from_slice(&[17, 0, 0, 1, 0, 0, 0, 9]);
        b.extend_from_slice(&[0, 53, 0, 53, 0, 8, 0, 0]);
        let plen = (b.len() - 40) as u16;
        b[4..6].copy_from_slice(&plen.to_be_bytes());
        let ip = decode_ipv6(&b).unwrap();
        assert_eq!(ip.protocol, 17);
        assert_eq!(ip.ext_headers, 2);
        assert_eq!(ip.frag.map(|f| (f.id, f.more)), Some((9, true)));
        assert!(matches!(ip.l4, Transport::Udp(u) if u.dst == 53));
        // Later fragment: offset 8, no transport.
        b[50..52].copy_from_slice(&(1u16 << 3).to_be_bytes());
        assert_eq!(decode_ipv6(&b).unwrap().l4, Transport::Fragment);
    }

    #[test]
    fn icmp_error_quotes_inner_tuple() {
        let f = syn_frame();
        let inner = &f[14..14 + 28];
        let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(inner);
        let t = decode_transport(1, &icmp, icmp.len(), false).unwrap();
        let Transport::Icmp(i) = t else { panic!() };
        assert!(i.is_error());
        let inner = i.inner.unwrap();
        assert_eq!((inner.protocol, inner.ports), (6, Some((51515, 445))));
    }

    #[test]
    fn icmpv6_errors_quote_the_upper_layer_behind_extension_headers() {
        // A quoted IPv6 packet: destination options (8 bytes), then a fragment header, then
        // UDP 5353 -> 53. A first fragment quotes its ports; a later one quotes none.
        let quote = |frag_offset: u16| {
            let mut q = vec![0x60, 0, 0, 0, 0, 32, 60, 64];
            q.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
            q.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
            q.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
            q.extend_from_slice(&[17, 0]);
            q.extend_from_slice(&(frag_offset | 1).to_be_bytes());
            q.extend_from_slice(&[0, 0, 0, 9]);
            q.extend_from_slice(&[0x14, 0xe9, 0, 53, 0, 16, 0, 0]);
            let mut icmp = vec![1, 4, 0, 0, 0, 0, 0, 0];
            icmp.extend_from_slice(&q);
            let Transport::Icmp(i) = decode_transport(58, &icmp, icmp.len(), true).unwrap() else {
                panic!()
            };
            i.inner.unwrap()
        };
        let first = quote(0);
        assert_eq!((first.protocol, first.ports), (17, Some((5353, 53))));
        let later = quote(8);
        assert_eq!((later.protocol, later.ports), (44, None));
    }

    #[test]
    fn anomaly_names() {
        assert_eq!(Anomaly::Truncated(Layer::Tcp).name(), "truncated_tcp");
        assert_eq!(Anomaly::OrphanFragment.name(), "orphan_fragment");
    }
}
