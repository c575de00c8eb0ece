//! Frame builders for tests, the lab and fixtures: DHCP and DHCPv6 client and server messages,
//! ARP, neighbour discovery, and the Ethernet/IPv4/IPv6/UDP framing around them. Pure; checksums are computed (IPv4) or left zero
//! (UDP over IPv4, which RFC 768 allows).

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::decode::{Mac, DHCP_MAGIC, ETHERTYPE_ARP, ETHERTYPE_IPV4};

/// A DHCP message (BOOTP layout, RFC 2131) with options 53 and the given extra options.
pub fn dhcp(
    op: u8,
    kind: u8,
    xid: u32,
    chaddr: Mac,
    ciaddr: Ipv4Addr,
    yiaddr: Ipv4Addr,
    options: &[(u8, Vec<u8>)],
) -> Vec<u8> {
    let mut p = vec![0u8; 240];
    p[0] = op;
    p[1] = 1;
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[10] = 0x80; // broadcast flag: answers go to ff:ff:ff:ff:ff:ff
    p[12..16].copy_from_slice(&ciaddr.octets());
    p[16..20].copy_from_slice(&yiaddr.octets());
    p[28..34].copy_from_slice(&chaddr.0);
    p[236..240].copy_from_slice(&DHCP_MAGIC);
    p.extend_from_slice(&[53, 1, kind]);
    for (code, value) in options {
        p.push(*code);
        p.push(value.len().min(255) as u8);
        p.extend_from_slice(&value[..value.len().min(255)]);
    }
    p.push(255);
    p
}

fn checksum(words: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for c in words.chunks(2) {
        let w = u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]);
        sum += u32::from(w);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ethernet + IPv4 + UDP around `payload` (UDP checksum 0: "not computed").
pub fn udp4_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut f = Vec::with_capacity(14 + total);
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&(total.min(0xffff) as u16).to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&dport.to_be_bytes());
    f.extend_from_slice(&(udp_len.min(0xffff) as u16).to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(payload);
    f
}

/// An Ethernet ARP frame.
pub fn arp_frame(
    eth_src: Mac,
    eth_dst: Mac,
    op: u16,
    sender_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&eth_dst.0);
    f.extend_from_slice(&eth_src.0);
    f.extend_from_slice(&ETHERTYPE_ARP.to_be_bytes());
    f.extend_from_slice(&[0, 1, 0x08, 0x00, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&sender_mac.0);
    f.extend_from_slice(&sender_ip.octets());
    f.extend_from_slice(&target_mac.0);
    f.extend_from_slice(&target_ip.octets());
    f
}

/// Ethernet + IPv6 (hop limit 255, no extension headers) around an upper-layer `payload` with
/// next-header `next` (58 ICMPv6, 17 UDP). Checksums are not filled in: these frames exercise
/// filters and decoders, not receiving stacks.
pub fn ipv6_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    next: u8,
    payload: &[u8],
) -> Vec<u8> {
    let mut f = Vec::with_capacity(54 + payload.len());
    f.extend_from_slice(&dst_mac.0);
    f.extend_from_slice(&src_mac.0);
    f.extend_from_slice(&crate::decode::ETHERTYPE_IPV6.to_be_bytes());
    f.extend_from_slice(&[0x60, 0, 0, 0]);
    f.extend_from_slice(&(payload.len().min(0xffff) as u16).to_be_bytes());
    f.push(next);
    f.push(255);
    f.extend_from_slice(&src.octets());
    f.extend_from_slice(&dst.octets());
    f.extend_from_slice(payload);
    f
}

/// A router advertisement (ICMPv6 134) from `src` to all-nodes, router lifetime 1800 s.
pub fn router_advertisement(src_mac: Mac, src: Ipv6Addr) -> Vec<u8> {
    let ra = [134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    ipv6_frame(
        src_mac,
        Mac([0x33, 0x33, 0, 0, 0, 1]),
        src,
        all_nodes,
        58,
        &ra,
    )
}

/// A router advertisement from `src` (router lifetime 1800 s, valid checksum) split into two
/// fragments so that the ICMPv6 header is only in the second one: the fragmentable part
/// starts with a 16-byte destination options header and the first fragment carries only its
/// first 8 bytes (the RFC 7113 RA guard evasion).
pub fn fragmented_router_advertisement(src_mac: Mac, src: Ipv6Addr, id: u32) -> [Vec<u8>; 2] {
    let dst = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let dst_mac = Mac([0x33, 0x33, 0, 0, 0, 1]);
    let mut ra = vec![134, 0, 0, 0, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0];
    let c = icmpv6_checksum(src, dst, &ra);
    ra[2..4].copy_from_slice(&c.to_be_bytes());
    // Destination options: next ICMPv6, length 1 (16 bytes), PadN filling the rest.
    let mut part = vec![58, 1, 1, 12];
    part.extend_from_slice(&[0; 12]);
    part.extend_from_slice(&ra);
    let frag = |offset_units: u16, more: bool, data: &[u8]| {
        let mut v = vec![60, 0];
        v.extend_from_slice(&((offset_units << 3) | u16::from(more)).to_be_bytes());
        v.extend_from_slice(&id.to_be_bytes());
        v.extend_from_slice(data);
        ipv6_frame(src_mac, dst_mac, src, dst, 44, &v)
    };
    [frag(0, true, &part[..8]), frag(1, false, &part[8..])]
}

/// The ICMPv6 checksum (RFC 4443 §2.3: over the pseudo-header and the message).
pub fn icmpv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, message: &[u8]) -> u16 {
    ipv6_checksum(src, dst, 58, message)
}

/// The checksum of an upper-layer `message` (next header `next`) over the IPv6 pseudo-header.
fn ipv6_checksum(src: Ipv6Addr, dst: Ipv6Addr, next: u8, message: &[u8]) -> u16 {
    let mut data = Vec::with_capacity(40 + message.len());
    data.extend_from_slice(&src.octets());
    data.extend_from_slice(&dst.octets());
    data.extend_from_slice(&(message.len() as u32).to_be_bytes());
    data.extend_from_slice(&[0, 0, 0, next]);
    data.extend_from_slice(message);
    checksum(&data)
}

/// Ethernet + IPv6 + UDP around `payload`, hop limit 255 (link-local multicast), with the UDP
/// checksum filled in (mandatory over IPv6: receivers drop a zero checksum).
pub fn udp6_frame(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    payload: &[u8],
) -> Vec<u8> {
    let len = (8 + payload.len()).min(0xffff) as u16;
    let mut udp = Vec::with_capacity(usize::from(len));
    udp.extend_from_slice(&sport.to_be_bytes());
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let c = match ipv6_checksum(src, dst, 17, &udp) {
        // RFC 768: a computed zero is sent as all ones.
        0 => 0xffff,
        c => c,
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(src_mac, dst_mac, src, dst, 17, &udp)
}

/// An unsolicited neighbour advertisement (ICMPv6 136, override flag set) claiming `target`
/// is at `tlla`, with a valid checksum so receiving stacks process it.
pub fn neighbor_advertisement(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    tlla: Mac,
) -> Vec<u8> {
    let mut na = vec![136, 0, 0, 0, 0x20, 0, 0, 0];
    na.extend_from_slice(&target.octets());
    na.extend_from_slice(&[2, 1]);
    na.extend_from_slice(&tlla.0);
    let c = icmpv6_checksum(src, dst, &na);
    na[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(src_mac, dst_mac, src, dst, 58, &na)
}

/// A neighbour solicitation (ICMPv6 135) for `target`, with a source link-layer address
/// option when `slla` is given (RFC 4861 forbids it for DAD probes from `::`), valid checksum.
pub fn neighbor_solicitation(
    src_mac: Mac,
    dst_mac: Mac,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    target: Ipv6Addr,
    slla: Option<Mac>,
) -> Vec<u8> {
    let mut ns = vec![135, 0, 0, 0, 0, 0, 0, 0];
    ns.extend_from_slice(&target.octets());
    if let Some(m) = slla {
        ns.extend_from_slice(&[1, 1]);
        ns.extend_from_slice(&m.0);
    }
    let c = icmpv6_checksum(src, dst, &ns);
    ns[2..4].copy_from_slice(&c.to_be_bytes());
    ipv6_frame(src_mac, dst_mac, src, dst, 58, &ns)
}

/// A DUID-LL (type 3, hardware type 1) for `mac` (RFC 8415 §11.4).
pub fn duid_ll(mac: Mac) -> Vec<u8> {
    let mut d = vec![0, 3, 0, 1];
    d.extend_from_slice(&mac.0);
    d
}

/// A DHCPv6 message (RFC 8415 §8): type, 24-bit transaction id, then the options in order.
pub fn dhcpv6(kind: u8, xid: u32, options: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let x = xid.to_be_bytes();
    let mut p = vec![kind, x[1], x[2], x[3]];
    for (code, value) in options {
        let len = value.len().min(0xffff);
        p.extend_from_slice(&code.to_be_bytes());
        p.extend_from_slice(&(len as u16).to_be_bytes());
        p.extend_from_slice(&value[..len]);
    }
    p
}

/// The value of an IA_NA option (code 3): IAID, T1, T2, then one IAADDR (code 5) per
/// `(address, preferred_s, valid_s)`.
pub fn dhcpv6_ia_na(
    iaid: u32,
    t1_s: u32,
    t2_s: u32,
    addresses: &[(Ipv6Addr, u32, u32)],
) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&iaid.to_be_bytes());
    v.extend_from_slice(&t1_s.to_be_bytes());
    v.extend_from_slice(&t2_s.to_be_bytes());
    for (addr, preferred_s, valid_s) in addresses {
        v.extend_from_slice(&5u16.to_be_bytes());
        v.extend_from_slice(&24u16.to_be_bytes());
        v.extend_from_slice(&addr.octets());
        v.extend_from_slice(&preferred_s.to_be_bytes());
        v.extend_from_slice(&valid_s.to_be_bytes());
    }
    v
}

/// The broadcast MAC.
pub const BROADCAST: Mac = Mac([0xff; 6]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp6_checksum_verifies_over_the_pseudo_header() {
        let (src, dst): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8:20::1".parse().unwrap(),
            "ff02::1:3".parse().unwrap(),
        );
        let f = udp6_frame(
            Mac([2, 0, 0, 0, 0, 1]),
            Mac([0x33, 0x33, 0, 1, 0, 3]),
            src,
            dst,
            50_000,
            5355,
            b"\x12\x34\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00",
        );
        let udp = &f[14 + 40..];
        assert_eq!(u16::from_be_bytes([udp[4], udp[5]]) as usize, udp.len());
        assert_ne!(&udp[6..8], &[0, 0], "IPv6 needs a UDP checksum");
        // Summing a message with its checksum in place gives 0 (the complement of 0xffff).
        assert_eq!(ipv6_checksum(src, dst, 17, udp), 0);
    }
}
