//! Application-protocol labelling for application-protocol rules ([`rampart_ir::AppMatch`]):
//! "protocol, not port". Given one packet's transport and payload, [`label`] says which
//! [`AppProtocol`] the payload *is* — or `None` (unrecognised) — following the definitions on
//! [`AppProtocol`] in the IR. It is the single labeller shared by the engine (`simulate`,
//! `explain`) and the NFQUEUE classifier (`rampart-nfq`), so the kernel path and the offline
//! prediction cannot disagree about what a payload is.
//!
//! Properties callers may rely on (stable API):
//!
//! * **Pure and bounded**: no allocation, no I/O, no panics on any input; it reads at most the
//!   first [`MAX_INSPECT_BYTES`] bytes of the payload (plus, for the ICMP size test, the length).
//! * **Ports and direction are not inputs** on purpose: the label depends on the bytes alone
//!   (and on TCP vs UDP vs ICMP echo), so SSH on 8022 is SSH and non-DNS on 53 is not DNS.
//!   Signatures are structural (magic numbers, header fields that must be consistent), strict
//!   enough that a random payload is almost never labelled.
//! * **At most one label**: signatures are tried strongest first (fixed magic numbers before
//!   short headers), so a payload that could fit two definitions gets the stronger one.
//!
//! Per-packet, not per-stream: a TCP segment that starts in the middle of a TLS record or an
//! HTTP body is unrecognised. The IR's inspection budget ([`rampart_ir::APP_INSPECT_MAX_PACKETS`]),
//! `accept` ending inspection and label inheritance are what keep later segments of a
//! recognised connection from being judged on their own.

use rampart_ir::{AppProtocol, ICMP_TUNNEL_PAYLOAD_MIN_BYTES};

use crate::decode::{self, Transport};

/// The most payload bytes any signature reads. Why: every signature is anchored at the start
/// of the payload; an HTTP request line or a TLS ClientHello prefix fits easily, and bounding
/// the scan keeps the classifier's per-packet cost constant whatever the MTU.
pub const MAX_INSPECT_BYTES: usize = 2048;

/// ptunnel's packet magic (`kPing_tunnel_magic`), big-endian at ICMP echo payload offset 0.
pub const PTUNNEL_MAGIC: [u8; 4] = [0xd5, 0x20, 0x08, 0x80];

/// The transport a payload arrived on — all [`label`] needs besides the bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum L4 {
    /// TCP; the payload is the segment's data (after the TCP header and options).
    Tcp,
    /// UDP; the payload is the datagram's data (after the 8-byte UDP header).
    Udp,
    /// ICMP (IPv4) of this type; for echo request (8) and echo reply (0) the payload is the
    /// echo data after the 8-byte header (type, code, checksum, identifier, sequence).
    Icmp {
        /// ICMP type.
        icmp_type: u8,
    },
    /// ICMPv6 of this type; for echo request (128) and echo reply (129) the payload is the echo
    /// data after the 8-byte header.
    Icmpv6 {
        /// ICMPv6 type.
        icmp_type: u8,
    },
    /// Any other IP protocol (never labelled).
    Other,
}

/// Label one packet's payload with the application protocol it carries, per the IR's
/// [`AppProtocol`] definitions; `None` when it is none of them (or empty).
///
/// TCP: SMB (NetBIOS/direct-TCP framing + `\xffSMB` / `\xfeSMB` / `\xfdSMB` / `\xfcSMB`), SSH
/// identification string, VNC RFB banner, HTTP/1.x request or status line, TLS record (types
/// 20–23, TLS 1.0–1.3), RDP (TPKT + X.224 connection request), MQTT CONNECT, then DNS over TCP
/// (length prefix + DNS message). UDP: DHCP/BOOTP (magic cookie), then DNS. ICMP/ICMPv6 echo
/// request or reply: ptunnel magic, or at least [`ICMP_TUNNEL_PAYLOAD_MIN_BYTES`] of data.
///
/// SMB1 vs SMB2 (M1037's SMBv1 example): an SMB1 NEGOTIATE *request* is labelled
/// [`AppProtocol::Smb2`] (multi-dialect clients open with it and are answered in SMB2); every
/// other SMB1 message, including a NEGOTIATE response, is [`AppProtocol::Smb1`].
pub fn label(l4: L4, payload: &[u8]) -> Option<AppProtocol> {
    if payload.is_empty() {
        return None;
    }
    let full_len = payload.len();
    let b = &payload[..full_len.min(MAX_INSPECT_BYTES)];
    match l4 {
        L4::Tcp => smb(b)
            .or_else(|| ssh(b).then_some(AppProtocol::Ssh))
            .or_else(|| vnc(b).then_some(AppProtocol::Vnc))
            .or_else(|| http(b).then_some(AppProtocol::Http))
            .or_else(|| tls(b).then_some(AppProtocol::Tls))
            .or_else(|| rdp(b).then_some(AppProtocol::Rdp))
            .or_else(|| mqtt_connect(b).then_some(AppProtocol::Mqtt))
            .or_else(|| dns_over_tcp(b).then_some(AppProtocol::Dns)),
        L4::Udp => dhcp(b)
            .then_some(AppProtocol::Dhcp)
            .or_else(|| dns(b).then_some(AppProtocol::Dns)),
        L4::Icmp { icmp_type: 0 | 8 }
        | L4::Icmpv6 {
            icmp_type: 128 | 129,
        } => (b.starts_with(&PTUNNEL_MAGIC) || full_len >= ICMP_TUNNEL_PAYLOAD_MIN_BYTES)
            .then_some(AppProtocol::IcmpTunnel),
        L4::Icmp { .. } | L4::Icmpv6 { .. } | L4::Other => None,
    }
}

/// Label a raw IP packet (IPv4 or IPv6 header first, as NFQUEUE delivers it): decodes the
/// headers with the engine's bounded decoders and calls [`label`] on the transport payload.
/// `None` for undecodable packets, non-first fragments and payload-less packets.
pub fn label_ip(packet: &[u8]) -> Option<AppProtocol> {
    let ip = match packet.first()? >> 4 {
        4 => decode::decode_ipv4(packet).ok()?,
        6 => decode::decode_ipv6(packet).ok()?,
        _ => return None,
    };
    let (l4, payload) = transport_payload(&ip.l4)?;
    label(l4, payload)
}

/// The [`L4`] and payload [`label`] expects for a decoded transport layer (`None` for
/// fragments). ICMP payloads are the bytes after the 8-byte echo header.
pub fn transport_payload<'a>(t: &Transport<'a>) -> Option<(L4, &'a [u8])> {
    match t {
        Transport::Tcp(tcp) => Some((L4::Tcp, tcp.payload)),
        Transport::Udp(udp) => Some((L4::Udp, udp.payload)),
        Transport::Icmp(icmp) => {
            let l4 = if icmp.v6 {
                L4::Icmpv6 {
                    icmp_type: icmp.icmp_type,
                }
            } else {
                L4::Icmp {
                    icmp_type: icmp.icmp_type,
                }
            };
            // `rest` starts after type/code/checksum; echo adds identifier and sequence.
            Some((l4, icmp.rest.get(4..).unwrap_or(&[])))
        }
        Transport::Other { payload } => Some((L4::Other, payload)),
        Transport::Fragment => None,
    }
}

fn be16(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(off)?, *b.get(off + 1)?]))
}

fn smb(b: &[u8]) -> Option<AppProtocol> {
    // Direct TCP / NetBIOS session message: type 0, then a 3-byte length, then the SMB header.
    if b.len() < 8 || b[0] != 0 {
        return None;
    }
    let smb = &b[4..];
    match smb[..4] {
        [0xff, b'S', b'M', b'B'] => {
            // SMB1 header: magic, command (1), status (4), flags (1) ... 32 bytes in all.
            if smb.len() < 32 {
                return None;
            }
            const NEGOTIATE: u8 = 0x72;
            const FLAGS_REPLY: u8 = 0x80;
            if smb[4] == NEGOTIATE && smb[9] & FLAGS_REPLY == 0 {
                Some(AppProtocol::Smb2)
            } else {
                Some(AppProtocol::Smb1)
            }
        }
        // SMB2/3 sync or async header: StructureSize 64 (little-endian) right after the magic.
        [0xfe, b'S', b'M', b'B'] => {
            (smb.len() >= 64 && smb[4] == 64 && smb[5] == 0).then_some(AppProtocol::Smb2)
        }
        // SMB3 transform (encrypted) header, 52 bytes.
        [0xfd, b'S', b'M', b'B'] => (smb.len() >= 52).then_some(AppProtocol::Smb2),
        // SMB 3.1.1 compression transform header, 16 bytes.
        [0xfc, b'S', b'M', b'B'] => (smb.len() >= 16).then_some(AppProtocol::Smb2),
        _ => None,
    }
}

/// The identification line (RFC 4253 §4.2): `SSH-protoversion-softwareversion`, printable,
/// at most 255 bytes including CR LF.
fn ssh(b: &[u8]) -> bool {
    let Some(rest) = b.strip_prefix(b"SSH-") else {
        return false;
    };
    // protoversion: digits '.' digits ("2.0", "1.99", "1.5"), then '-'.
    let Some(dash) = rest.iter().take(8).position(|&c| c == b'-') else {
        return false;
    };
    let version = &rest[..dash];
    let Some(dot) = version.iter().position(|&c| c == b'.') else {
        return false;
    };
    let (major, minor) = (&version[..dot], &version[dot + 1..]);
    if major.is_empty() || minor.is_empty() || !major.iter().chain(minor).all(u8::is_ascii_digit) {
        return false;
    }
    let line = &b[..b.len().min(255)];
    let end = line.iter().position(|&c| c == b'\r' || c == b'\n');
    let text = &line[..end.unwrap_or(line.len())];
    // A software version must follow, and the line must end within 255 bytes unless the
    // segment was cut first.
    text.len() > 4 + dash + 1
        && text.iter().all(|&c| c.is_ascii_graphic() || c == b' ')
        && (end.is_some() || b.len() < 255)
}

/// `RFB xxx.yyy\n` (RFC 6143 §7.1.1), sent by both server and client.
fn vnc(b: &[u8]) -> bool {
    b.len() >= 12
        && b.starts_with(b"RFB ")
        && b[4..7].iter().all(u8::is_ascii_digit)
        && b[7] == b'.'
        && b[8..11].iter().all(u8::is_ascii_digit)
        && b[11] == b'\n'
}

/// An HTTP/1.x request line (`METHOD SP target SP HTTP/1.x CRLF`) or status line
/// (`HTTP/1.x SP 3DIGIT`). A request line cut by the segment end (a long URL) is accepted when
/// the method is a registered one and the target so far is printable.
fn http(b: &[u8]) -> bool {
    if let Some(rest) = b.strip_prefix(b"HTTP/1.") {
        return rest.len() >= 5
            && matches!(rest[0], b'0' | b'1')
            && rest[1] == b' '
            && rest[2..5].iter().all(u8::is_ascii_digit);
    }
    let Some(sp) = b.iter().take(21).position(|&c| c == b' ') else {
        return false;
    };
    let method = &b[..sp];
    if method.is_empty() || !method.iter().all(|&c| c.is_ascii_uppercase() || c == b'-') {
        return false;
    }
    let rest = &b[sp + 1..];
    match rest.iter().position(|&c| c == b'\n') {
        Some(nl) => {
            let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
            let Some(vsp) = line.iter().rposition(|&c| c == b' ') else {
                return false;
            };
            let (target, version) = (&line[..vsp], &line[vsp + 1..]);
            !target.is_empty()
                && target.iter().all(u8::is_ascii_graphic)
                && (version == b"HTTP/1.0" || version == b"HTTP/1.1")
        }
        None => {
            const METHODS: [&[u8]; 9] = [
                b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT",
                b"TRACE",
            ];
            // Only a long line can legitimately be cut; a short unterminated one is not HTTP.
            METHODS.contains(&method)
                && rest.len() >= 256
                && matches!(rest.first(), Some(b'/' | b'*' | b'h' | b'H'))
                && rest
                    .iter()
                    .all(|&c| c.is_ascii_graphic() || c == b' ' || c == b'\r')
        }
    }
}

/// A TLS record header: content type change-cipher-spec (20), alert (21), handshake (22) or
/// application data (23); version 3.1–3.4 (TLS 1.0–1.3); a length within the TLSCiphertext
/// maximum. A ClientHello may carry record version 3.0 (RFC 5246 Appendix E) when its own
/// client_version is TLS 1.0 or later.
fn tls(b: &[u8]) -> bool {
    if b.len() < 5 || !(20..=23).contains(&b[0]) || b[1] != 3 {
        return false;
    }
    let len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    if len == 0 || len > 16_384 + 2_048 {
        return false;
    }
    match b[2] {
        1..=4 => match b[0] {
            // ChangeCipherSpec is one byte, 1; a plaintext alert two bytes (encrypted ones more).
            20 => len == 1 && b.get(5).is_none_or(|&c| c == 1),
            21 => len >= 2,
            // Handshake (possibly encrypted, e.g. a TLS 1.2 Finished) and application data.
            _ => true,
        },
        // SSL 3.0 record version: only a ClientHello announcing TLS 1.0+ inside.
        0 => {
            b[0] == 22
                && b.get(5) == Some(&1)
                && b.get(9) == Some(&3)
                && b.get(10).is_some_and(|&v| v >= 1)
        }
        _ => false,
    }
}

/// TPKT (version 3, reserved 0, length ≥ 11) carrying an X.224 Connection Request TPDU
/// (length indicator = TPKT length − 5, code 0xE0).
fn rdp(b: &[u8]) -> bool {
    if b.len() < 11 || b[0] != 3 || b[1] != 0 {
        return false;
    }
    let tpkt_len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    tpkt_len >= 11 && usize::from(b[4]) + 5 == tpkt_len && b[5] & 0xf0 == 0xe0
}

/// MQTT CONNECT: fixed header 0x10, remaining length (1–4 byte varint), protocol name "MQTT"
/// (levels 4 and 5) or "MQIsdp" (level 3).
fn mqtt_connect(b: &[u8]) -> bool {
    if b.first() != Some(&0x10) {
        return false;
    }
    let mut i = 1;
    let mut remaining = 0usize;
    let mut done = false;
    for shift in 0..4 {
        let Some(&c) = b.get(i) else { return false };
        remaining |= usize::from(c & 0x7f) << (7 * shift);
        i += 1;
        if c & 0x80 == 0 {
            done = true;
            break;
        }
    }
    // Variable header: name length (2) + name + level (1) + flags (1) + keep-alive (2).
    if !done || remaining < 10 {
        return false;
    }
    let Some(name_len) = be16(b, i) else {
        return false;
    };
    let name_start = i + 2;
    let Some(name) = b.get(name_start..name_start + usize::from(name_len)) else {
        return false;
    };
    let Some(&level) = b.get(name_start + usize::from(name_len)) else {
        return false;
    };
    let Some(&flags) = b.get(name_start + usize::from(name_len) + 1) else {
        return false;
    };
    // Connect flags bit 0 is reserved and must be 0.
    flags & 1 == 0
        && match name {
            b"MQTT" => level == 4 || level == 5,
            b"MQIsdp" => level == 3,
            _ => false,
        }
}

/// DNS over TCP: a 2-byte message length (at least a header), then a DNS message.
fn dns_over_tcp(b: &[u8]) -> bool {
    matches!(be16(b, 0), Some(n) if n >= 12) && dns(&b[2..])
}

/// A DNS message (RFC 1035 §4.1): a 12-byte header with exactly one question, a known opcode,
/// the reserved Z bit clear, record counts that could fit the message, and a question section
/// that parses (uncompressed labels ≤ 63 bytes, name ≤ 255, then type and class).
fn dns(b: &[u8]) -> bool {
    if b.len() < 12 {
        return false;
    }
    let flags = u16::from_be_bytes([b[2], b[3]]);
    let opcode = (flags >> 11) & 0xf;
    let z = flags & 0x0040;
    let counts = [be16(b, 4), be16(b, 6), be16(b, 8), be16(b, 10)];
    let [Some(qd), Some(an), Some(ns), Some(ar)] = counts else {
        return false;
    };
    // Opcodes: query, inverse query, status, notify, update.
    if qd != 1 || !matches!(opcode, 0 | 1 | 2 | 4 | 5) || z != 0 {
        return false;
    }
    // Every resource record takes at least 11 bytes; a UDP/TCP DNS message is at most 64 KiB.
    if (usize::from(an) + usize::from(ns) + usize::from(ar)) * 11 > 65_535 {
        return false;
    }
    let mut i = 12;
    let mut name_len = 0usize;
    loop {
        let Some(&len) = b.get(i) else { return false };
        let len = usize::from(len);
        if len == 0 {
            break;
        }
        if len > 63 {
            return false;
        }
        name_len += len + 1;
        if name_len > 255 {
            return false;
        }
        i += len + 1;
    }
    let (Some(qtype), Some(qclass)) = (be16(b, i + 1), be16(b, i + 3)) else {
        return false;
    };
    // Class IN, CH, HS, NONE, ANY; mDNS sets the top bit of the class (unicast response).
    qtype != 0 && matches!(qclass & 0x7fff, 1 | 3 | 4 | 254 | 255)
}

/// DHCP/BOOTP (RFC 2131): op 1 (request) or 2 (reply), hardware address length ≤ 16, and the
/// magic cookie 99.130.83.99 after the 236-byte fixed part.
fn dhcp(b: &[u8]) -> bool {
    b.len() >= 240 && matches!(b[0], 1 | 2) && b[2] <= 16 && b[236..240] == [99, 130, 83, 99]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn client_hello(record_version: u8, client_version: u8) -> Vec<u8> {
        let mut body = vec![3, client_version];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, record_version];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    fn smb1(command: u8, flags: u8) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0x54, 0xff, b'S', b'M', b'B', command];
        b.extend_from_slice(&[0; 4]); // status
        b.push(flags);
        b.resize(4 + 32 + 3, 0);
        b
    }

    fn smb2() -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0x66, 0xfe, b'S', b'M', b'B', 64, 0];
        b.resize(4 + 64 + 36, 0);
        b
    }

    fn dns_query() -> Vec<u8> {
        b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01"
            .to_vec()
    }

    fn dhcp_discover() -> Vec<u8> {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[1] = 1;
        b[2] = 6;
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, 1, 255]);
        b
    }

    #[test]
    fn each_protocol_is_recognised() {
        use AppProtocol::*;
        let cases: Vec<(L4, Vec<u8>, AppProtocol)> = vec![
            (L4::Udp, dns_query(), Dns),
            (L4::Tcp, [&[0u8, 29][..], &dns_query()].concat(), Dns),
            (L4::Tcp, client_hello(1, 3), Tls),
            (L4::Tcp, client_hello(0, 3), Tls),
            (L4::Tcp, vec![23, 3, 3, 0, 32, 0xaa, 0xbb], Tls),
            (L4::Tcp, vec![20, 3, 3, 0, 1, 1], Tls),
            (L4::Tcp, vec![21, 3, 3, 0, 2, 2, 40], Tls),
            (L4::Tcp, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(), Http),
            (L4::Tcp, b"PROPFIND /x HTTP/1.1\r\n".to_vec(), Http),
            (L4::Tcp, b"HTTP/1.1 200 OK\r\n".to_vec(), Http),
            (L4::Tcp, b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n".to_vec(), Ssh),
            (L4::Tcp, b"SSH-1.99-Cisco-1.25\n".to_vec(), Ssh),
            (
                L4::Tcp,
                b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=a\r\n".to_vec(),
                Rdp,
            ),
            (L4::Tcp, b"RFB 003.008\n".to_vec(), Vnc),
            (
                L4::Tcp,
                b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06client".to_vec(),
                Mqtt,
            ),
            (
                L4::Tcp,
                b"\x10\x14\x00\x06MQIsdp\x03\x02\x00\x3c\x00\x06client".to_vec(),
                Mqtt,
            ),
            (L4::Tcp, smb1(0x72, 0x18), Smb2), // NEGOTIATE request
            (L4::Tcp, smb1(0x72, 0x98), Smb1), // NEGOTIATE response
            (L4::Tcp, smb1(0x73, 0x18), Smb1), // SESSION_SETUP_ANDX
            (L4::Tcp, smb1(0x25, 0x98), Smb1), // TRANS response
            (L4::Tcp, smb2(), Smb2),
            (L4::Udp, dhcp_discover(), Dhcp),
            (
                L4::Icmp { icmp_type: 8 },
                vec![0xd5, 0x20, 0x08, 0x80, 0, 0],
                IcmpTunnel,
            ),
            (L4::Icmp { icmp_type: 0 }, vec![0x41; 512], IcmpTunnel),
            (L4::Icmpv6 { icmp_type: 128 }, vec![0; 1400], IcmpTunnel),
        ];
        for (l4, payload, want) in cases {
            assert_eq!(label(l4, &payload), Some(want), "{l4:?} {payload:?}");
        }
    }

    #[test]
    fn near_misses_are_unrecognised() {
        let cases: Vec<(L4, Vec<u8>)> = vec![
            (L4::Tcp, Vec::new()),
            (L4::Udp, b"hello world, this is not dns at all".to_vec()),
            // A DNS query on TCP without its length prefix is not DNS over TCP.
            (L4::Tcp, dns_query()),
            // DNS is not recognised on ICMP; TLS not on UDP (DTLS is not TLS).
            (L4::Icmp { icmp_type: 8 }, dns_query()),
            (L4::Udp, client_hello(1, 3)),
            (L4::Tcp, vec![22, 3, 5, 0, 10, 1]), // unknown TLS version
            (L4::Tcp, vec![24, 3, 3, 0, 10, 1]), // heartbeat is not listed
            (L4::Tcp, vec![23, 3, 3, 0, 0]),     // empty record
            (L4::Tcp, client_hello(0, 0)),       // SSL 3.0 ClientHello
            (L4::Tcp, b"GET / HTTP/2.0\r\n".to_vec()),
            (L4::Tcp, b"get / HTTP/1.1\r\n".to_vec()),
            (L4::Tcp, b"GET /short".to_vec()),
            (L4::Tcp, b"SSH-2.0\r\n".to_vec()),
            (L4::Tcp, b"SSH-x.y-foo\r\n".to_vec()),
            (L4::Tcp, b"RFB 3.8\n".to_vec()),
            (
                L4::Tcp,
                b"\x03\x00\x00\x2b\x20\xe0\x00\x00\x00\x00\x00".to_vec(),
            ), // LI mismatch
            (
                L4::Tcp,
                b"\x10\x12\x00\x04MQTX\x04\x02\x00\x3c\x00\x06client".to_vec(),
            ),
            (
                L4::Tcp,
                b"\x30\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06client".to_vec(),
            ), // PUBLISH
            (L4::Tcp, vec![0, 0, 0, 9, 0xff, b'S', b'M', b'B', 0x72]), // truncated SMB1
            (L4::Tcp, vec![0, 0, 0, 9, 0xfe, b'S', b'M', b'B', 0x40, 0]), // truncated SMB2
            (L4::Udp, vec![0u8; 300]),                                 // no DHCP cookie
            (L4::Icmp { icmp_type: 8 }, vec![0x10; 56]),               // Linux ping
            (L4::Icmp { icmp_type: 8 }, vec![0x61; 511]),
            (L4::Icmp { icmp_type: 3 }, vec![0xd5, 0x20, 0x08, 0x80]), // not echo
            (L4::Icmpv6 { icmp_type: 135 }, vec![0; 600]),
            (L4::Other, b"SSH-2.0-x\r\n".to_vec()),
        ];
        for (l4, payload) in cases {
            assert_eq!(label(l4, &payload), None, "{l4:?} {payload:?}");
        }
    }

    #[test]
    fn labels_do_not_depend_on_anything_past_the_inspection_window() {
        let mut req = b"GET / HTTP/1.1\r\n".to_vec();
        req.resize(MAX_INSPECT_BYTES + 5000, b'x');
        assert_eq!(label(L4::Tcp, &req), Some(AppProtocol::Http));
        // ...except the ICMP size test, which is about the length.
        assert_eq!(
            label(L4::Icmp { icmp_type: 8 }, &vec![0; MAX_INSPECT_BYTES + 1]),
            Some(AppProtocol::IcmpTunnel)
        );
    }

    #[test]
    fn long_request_line_cut_by_the_segment_is_http() {
        let mut req = b"GET /".to_vec();
        req.resize(1400, b'a');
        assert_eq!(label(L4::Tcp, &req), Some(AppProtocol::Http));
        req[700] = 0; // binary in a "URL": not HTTP
        assert_eq!(label(L4::Tcp, &req), None);
    }

    #[test]
    fn random_payloads_are_almost_never_labelled() {
        // Structural signatures, not guesses: uniformly random payloads of typical sizes must
        // essentially never get a label (each false label would be a wrongly judged packet).
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut labelled = 0;
        for i in 0..20_000 {
            let len = 1 + (next() % 1400) as usize;
            let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let l4 = if i % 2 == 0 { L4::Tcp } else { L4::Udp };
            labelled += usize::from(label(l4, &payload).is_some());
        }
        assert!(
            labelled <= 2,
            "{labelled} of 20000 random payloads labelled"
        );
    }

    fn ipv4(protocol: u8, l4: &[u8]) -> Vec<u8> {
        let total = (20 + l4.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 1, 0, 0, 64, protocol, 0, 0, 192, 0, 2, 1, 203, 0, 113, 7]);
        p.extend_from_slice(l4);
        p
    }

    #[test]
    fn raw_ip_packets_as_nfqueue_delivers_them() {
        let mut tcp = vec![
            0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff,
        ];
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(&client_hello(1, 3));
        assert_eq!(label_ip(&ipv4(6, &tcp)), Some(AppProtocol::Tls));

        let q = dns_query();
        let mut udp = vec![0xc3, 0x50, 0, 53];
        udp.extend_from_slice(&((8 + q.len()) as u16).to_be_bytes());
        udp.extend_from_slice(&[0, 0]);
        udp.extend_from_slice(&q);
        assert_eq!(label_ip(&ipv4(17, &udp)), Some(AppProtocol::Dns));

        let mut echo = vec![8, 0, 0, 0, 0, 1, 0, 1];
        echo.extend_from_slice(&PTUNNEL_MAGIC);
        echo.extend_from_slice(&[0; 24]);
        assert_eq!(label_ip(&ipv4(1, &echo)), Some(AppProtocol::IcmpTunnel));
        // The magic must be at echo-data offset 0, not in the identifier/sequence.
        let mut shifted = vec![8, 0, 0, 0];
        shifted.extend_from_slice(&PTUNNEL_MAGIC);
        shifted.extend_from_slice(&[0; 24]);
        assert_eq!(label_ip(&ipv4(1, &shifted)), None);

        assert_eq!(label_ip(&[]), None);
        assert_eq!(label_ip(&[0x45]), None);
        assert_eq!(label_ip(&[0x75; 60]), None);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

        #[test]
        fn never_panics_and_is_deterministic(
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
            kind in 0u8..5,
            icmp_type in any::<u8>(),
        ) {
            let l4 = match kind {
                0 => L4::Tcp,
                1 => L4::Udp,
                2 => L4::Icmp { icmp_type },
                3 => L4::Icmpv6 { icmp_type },
                _ => L4::Other,
            };
            let first = label(l4, &payload);
            prop_assert_eq!(first, label(l4, &payload));
            if l4 == L4::Other || payload.is_empty() {
                prop_assert_eq!(first, None);
            }
            let _ = label_ip(&payload);
        }

        #[test]
        fn mutated_signatures_never_panic(
            seed in 0usize..8,
            flips in proptest::collection::vec((any::<u16>(), any::<u8>()), 0..6),
            cut in any::<u16>(),
        ) {
            let mut p = match seed {
                0 => dns_query(),
                1 => client_hello(1, 3),
                2 => smb1(0x72, 0),
                3 => smb2(),
                4 => dhcp_discover(),
                5 => b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06client".to_vec(),
                6 => b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=a\r\n".to_vec(),
                _ => b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
            };
            for (at, v) in flips {
                let n = p.len();
                p[usize::from(at) % n] = v;
            }
            p.truncate(usize::from(cut) % (p.len() + 1));
            for l4 in [L4::Tcp, L4::Udp] {
                let _ = label(l4, &p);
                let mut framed = vec![0, p.len().min(65535) as u8];
                framed.extend_from_slice(&p);
                let _ = label(l4, &framed);
            }
        }
    }
}
