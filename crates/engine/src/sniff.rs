//! First-payload protocol sniffers: given the first payload of a flow, say which application
//! protocol it speaks and pull out the one or two fields that matter for filtering (TLS SNI and
//! ALPN, HTTP Host, DNS query name, SSH/VNC banners, SMB dialect family, MQTT client id, DHCP
//! message type). Borrowing, bounded, allocation-free; a payload that is not clearly the
//! protocol yields `None` rather than a guess.

use serde::Serialize;

/// Longest banner or name we report.
// Why: SSH banners are at most 255 bytes (RFC 4253 §4.2); DNS names 255; SNI host names 255.
pub const MAX_FIELD_LEN: usize = 255;

/// What the first payload looks like.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "app_proto", rename_all = "snake_case")]
pub enum AppInfo<'a> {
    /// DNS query or response.
    Dns {
        /// Query name in wire format labels (render with [`dns_name`]).
        #[serde(skip)]
        qname_wire: &'a [u8],
        /// Query type.
        qtype: u16,
        /// QR bit.
        response: bool,
    },
    /// TLS ClientHello.
    Tls {
        /// Server name indication.
        sni: Option<&'a str>,
        /// First ALPN protocol offered.
        alpn: Option<&'a str>,
    },
    /// HTTP/1.x request.
    Http {
        /// Method.
        method: &'a str,
        /// Request target.
        target: &'a str,
        /// Host header.
        host: Option<&'a str>,
    },
    /// SMB negotiate.
    Smb {
        /// 1 for SMB1 (`\xffSMB`), 2 for SMB2/3 (`\xfeSMB`).
        version: u8,
    },
    /// SSH identification string.
    Ssh {
        /// The banner line without CR LF.
        banner: &'a str,
    },
    /// RDP: TPKT + X.224 connection request.
    Rdp {
        /// `Cookie: mstshash=` user name, when present.
        cookie: Option<&'a str>,
    },
    /// VNC RFB protocol version banner.
    Vnc {
        /// `RFB 003.008`.
        version: &'a str,
    },
    /// MQTT CONNECT.
    Mqtt {
        /// Protocol level (4 = 3.1.1, 5 = 5.0).
        level: u8,
        /// Client identifier.
        client_id: &'a str,
    },
    /// DHCP (BOOTP with the magic cookie).
    Dhcp {
        /// DHCP message type option (1 discover ... 8 inform).
        msg_type: Option<u8>,
    },
}

impl AppInfo<'_> {
    /// Protocol name.
    pub fn name(&self) -> &'static str {
        match self {
            AppInfo::Dns { .. } => "dns",
            AppInfo::Tls { .. } => "tls",
            AppInfo::Http { .. } => "http",
            AppInfo::Smb { .. } => "smb",
            AppInfo::Ssh { .. } => "ssh",
            AppInfo::Rdp { .. } => "rdp",
            AppInfo::Vnc { .. } => "vnc",
            AppInfo::Mqtt { .. } => "mqtt",
            AppInfo::Dhcp { .. } => "dhcp",
        }
    }
}

/// Render a DNS wire-format name (as in [`AppInfo::Dns`]) as dotted text into `out`.
pub fn dns_name(wire: &[u8], out: &mut String) {
    let mut i = 0;
    while let Some(&len) = wire.get(i) {
        let len = usize::from(len);
        if len == 0 || len > 63 {
            break;
        }
        let Some(label) = wire.get(i + 1..i + 1 + len) else {
            break;
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.extend(label.iter().map(|&c| {
            if c.is_ascii_graphic() {
                char::from(c.to_ascii_lowercase())
            } else {
                '?'
            }
        }));
        i += 1 + len;
    }
}

fn ascii(b: &[u8]) -> Option<&str> {
    if b.len() > MAX_FIELD_LEN || !b.iter().all(|c| c.is_ascii_graphic() || *c == b' ') {
        return None;
    }
    std::str::from_utf8(b).ok()
}

/// Sniff the first payload of a flow. `udp` and the ports steer ambiguous cases (DNS and DHCP
/// are recognised only on UDP).
pub fn sniff(payload: &[u8], udp: bool, sport: u16, dport: u16) -> Option<AppInfo<'_>> {
    if payload.is_empty() {
        return None;
    }
    if udp {
        if matches!((sport, dport), (67 | 68, 67 | 68)) {
            if let Some(d) = dhcp(payload) {
                return Some(d);
            }
        }
        if sport == 53 || dport == 53 || sport == 5353 || dport == 5353 {
            return dns(payload);
        }
        return None;
    }
    tls(payload)
        .or_else(|| http(payload))
        .or_else(|| smb(payload))
        .or_else(|| ssh(payload))
        .or_else(|| vnc(payload))
        .or_else(|| rdp(payload))
        .or_else(|| mqtt(payload))
        .or_else(|| {
            // DNS over TCP: 2-byte length prefix.
            if sport == 53 || dport == 53 {
                dns(payload.get(2..)?)
            } else {
                None
            }
        })
}

fn dns(b: &[u8]) -> Option<AppInfo<'_>> {
    if b.len() < 12 {
        return None;
    }
    let flags = u16::from_be_bytes([b[2], b[3]]);
    let qd = u16::from_be_bytes([b[4], b[5]]);
    if qd != 1 || (flags >> 11) & 0xf > 5 {
        return None;
    }
    let mut i = 12;
    let mut total = 0;
    loop {
        let len = usize::from(*b.get(i)?);
        if len == 0 {
            break;
        }
        if len > 63 {
            return None;
        }
        total += len + 1;
        if total > MAX_FIELD_LEN {
            return None;
        }
        i += len + 1;
    }
    let qname_wire = &b[12..=i];
    let qtype = u16::from_be_bytes([*b.get(i + 1)?, *b.get(i + 2)?]);
    Some(AppInfo::Dns {
        qname_wire,
        qtype,
        response: flags & 0x8000 != 0,
    })
}

fn tls(b: &[u8]) -> Option<AppInfo<'_>> {
    // Record: type 22 (handshake), version 3.x, length; handshake type 1 (ClientHello).
    if b.len() < 9 || b[0] != 22 || b[1] != 3 || b[5] != 1 {
        return None;
    }
    let rec_len = usize::from(u16::from_be_bytes([b[3], b[4]]));
    let hs = b.get(5..(5 + rec_len).min(b.len()))?;
    let mut i = 4 + 2 + 32; // handshake header, client version, random
    let sid = usize::from(*hs.get(i)?);
    i += 1 + sid;
    let cs = usize::from(u16::from_be_bytes([*hs.get(i)?, *hs.get(i + 1)?]));
    i += 2 + cs;
    let comp = usize::from(*hs.get(i)?);
    i += 1 + comp;
    let mut sni = None;
    let mut alpn = None;
    if let (Some(&a), Some(&c)) = (hs.get(i), hs.get(i + 1)) {
        let ext_total = usize::from(u16::from_be_bytes([a, c]));
        i += 2;
        let end = (i + ext_total).min(hs.len());
        while i + 4 <= end {
            let typ = u16::from_be_bytes([hs[i], hs[i + 1]]);
            let len = usize::from(u16::from_be_bytes([hs[i + 2], hs[i + 3]]));
            let body = hs.get(i + 4..(i + 4 + len).min(end))?;
            match typ {
                // server_name list: len(2) type(1)=0 name_len(2) name
                0 if body.len() >= 5 && body[2] == 0 => {
                    let n = usize::from(u16::from_be_bytes([body[3], body[4]]));
                    sni = body.get(5..5 + n).and_then(ascii);
                }
                16 if body.len() >= 3 => {
                    let n = usize::from(body[2]);
                    alpn = body.get(3..3 + n).and_then(ascii);
                }
                _ => {}
            }
            i += 4 + len;
        }
    }
    Some(AppInfo::Tls { sni, alpn })
}

const HTTP_METHODS: [&str; 9] = [
    "GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

fn http(b: &[u8]) -> Option<AppInfo<'_>> {
    // Why: request lines beyond 8 KiB are rejected by common servers; look no further.
    let head = &b[..b.len().min(8192)];
    let line_end = head.iter().position(|&c| c == b'\n')?;
    let line = std::str::from_utf8(&head[..line_end])
        .ok()?
        .trim_end_matches('\r');
    let mut parts = line.splitn(3, ' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let version = parts.next()?;
    if !HTTP_METHODS.contains(&method) || !version.starts_with("HTTP/1.") {
        return None;
    }
    let mut host = None;
    let rest = &head[line_end + 1..];
    for hl in rest.split(|&c| c == b'\n') {
        let hl = hl.strip_suffix(b"\r").unwrap_or(hl);
        if hl.is_empty() {
            break;
        }
        if hl.len() > 5 && hl[..5].eq_ignore_ascii_case(b"host:") {
            host = ascii(trim(&hl[5..]));
            break;
        }
    }
    Some(AppInfo::Http {
        method,
        target,
        host,
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let s = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let e = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(s, |e| e + 1);
    &b[s..e.max(s)]
}

fn smb(b: &[u8]) -> Option<AppInfo<'_>> {
    // NetBIOS session message (type 0) + 3-byte length, then the SMB magic.
    if b.len() < 8 || b[0] != 0 {
        return None;
    }
    match &b[4..8] {
        [0xff, b'S', b'M', b'B'] => Some(AppInfo::Smb { version: 1 }),
        [0xfe, b'S', b'M', b'B'] => Some(AppInfo::Smb { version: 2 }),
        _ => None,
    }
}

fn banner_line(b: &[u8]) -> Option<&str> {
    let end = b
        .iter()
        .take(MAX_FIELD_LEN)
        .position(|&c| c == b'\n')
        .unwrap_or(b.len().min(MAX_FIELD_LEN));
    let line = &b[..end];
    ascii(line.strip_suffix(b"\r").unwrap_or(line))
}

fn ssh(b: &[u8]) -> Option<AppInfo<'_>> {
    if !b.starts_with(b"SSH-") {
        return None;
    }
    Some(AppInfo::Ssh {
        banner: banner_line(b)?,
    })
}

fn vnc(b: &[u8]) -> Option<AppInfo<'_>> {
    if b.len() < 12 || !b.starts_with(b"RFB ") || b[11] != b'\n' {
        return None;
    }
    Some(AppInfo::Vnc {
        version: std::str::from_utf8(&b[..11]).ok()?,
    })
}

fn rdp(b: &[u8]) -> Option<AppInfo<'_>> {
    // TPKT version 3, then X.224 Connection Request (code 0xE0).
    if b.len() < 11 || b[0] != 3 || b[1] != 0 || b[5] & 0xf0 != 0xe0 {
        return None;
    }
    let cookie = b[11..]
        .strip_prefix(b"Cookie: mstshash=")
        .and_then(banner_line);
    Some(AppInfo::Rdp { cookie })
}

fn mqtt(b: &[u8]) -> Option<AppInfo<'_>> {
    if b.first()? >> 4 != 1 {
        return None;
    }
    // Remaining length: up to 4 bytes of 7-bit groups.
    let mut i = 1;
    let mut remaining = 0usize;
    for shift in 0..4 {
        let c = *b.get(i)?;
        remaining |= usize::from(c & 0x7f) << (7 * shift);
        i += 1;
        if c & 0x80 == 0 {
            break;
        }
    }
    let _ = remaining;
    let name_len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
    let name = b.get(i + 2..i + 2 + name_len)?;
    if name != b"MQTT" && name != b"MQIsdp" {
        return None;
    }
    i += 2 + name_len;
    let level = *b.get(i)?;
    i += 1 + 1 + 2; // level, flags, keepalive
    if level == 5 {
        // Properties: variable byte integer length.
        let mut plen = 0usize;
        for shift in 0..4 {
            let c = *b.get(i)?;
            plen |= usize::from(c & 0x7f) << (7 * shift);
            i += 1;
            if c & 0x80 == 0 {
                break;
            }
        }
        i += plen;
    }
    let id_len = usize::from(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]));
    let client_id = b.get(i + 2..i + 2 + id_len).and_then(ascii).unwrap_or("");
    Some(AppInfo::Mqtt { level, client_id })
}

fn dhcp(b: &[u8]) -> Option<AppInfo<'_>> {
    if b.len() < 240 || b[236..240] != [99, 130, 83, 99] {
        return None;
    }
    let mut i = 240;
    let mut msg_type = None;
    while i < b.len() {
        match b[i] {
            0 => i += 1,
            255 => break,
            code => {
                let len = usize::from(*b.get(i + 1)?);
                if code == 53 && len == 1 {
                    msg_type = b.get(i + 2).copied();
                }
                i += 2 + len;
            }
        }
    }
    Some(AppInfo::Dhcp { msg_type })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client_hello(sni: &str, alpn: &str) -> Vec<u8> {
        let mut ext = Vec::new();
        let name = sni.as_bytes();
        ext.extend_from_slice(&[0, 0]);
        ext.extend_from_slice(&((name.len() + 5) as u16).to_be_bytes());
        ext.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
        ext.push(0);
        ext.extend_from_slice(&(name.len() as u16).to_be_bytes());
        ext.extend_from_slice(name);
        let a = alpn.as_bytes();
        ext.extend_from_slice(&[0, 16]);
        ext.extend_from_slice(&((a.len() + 3) as u16).to_be_bytes());
        ext.extend_from_slice(&((a.len() + 1) as u16).to_be_bytes());
        ext.push(a.len() as u8);
        ext.extend_from_slice(a);
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0u8; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    }

    #[test]
    fn tls_client_hello_sni_and_alpn() {
        let ch = client_hello("www.example.com", "h2");
        assert_eq!(
            sniff(&ch, false, 50000, 443),
            Some(AppInfo::Tls {
                sni: Some("www.example.com"),
                alpn: Some("h2")
            })
        );
        // Truncations never panic and never invent fields.
        for n in 0..ch.len() {
            let _ = sniff(&ch[..n], false, 50000, 443);
        }
    }

    #[test]
    fn http_request_line_and_host() {
        let req = b"GET /index.html HTTP/1.1\r\nUser-Agent: x\r\nHost: example.com\r\n\r\n";
        assert_eq!(
            sniff(req, false, 50000, 80),
            Some(AppInfo::Http {
                method: "GET",
                target: "/index.html",
                host: Some("example.com")
            })
        );
    }

    #[test]
    fn banners_and_magic() {
        assert_eq!(
            sniff(b"SSH-2.0-OpenSSH_9.2\r\n", false, 22, 50000),
            Some(AppInfo::Ssh {
                banner: "SSH-2.0-OpenSSH_9.2"
            })
        );
        assert_eq!(
            sniff(b"RFB 003.008\n", false, 5900, 50000),
            Some(AppInfo::Vnc {
                version: "RFB 003.008"
            })
        );
        assert_eq!(
            sniff(
                &[0, 0, 0, 0x54, 0xfe, b'S', b'M', b'B', 0x40],
                false,
                5,
                445
            ),
            Some(AppInfo::Smb { version: 2 })
        );
        assert_eq!(
            sniff(
                &[0, 0, 0, 0x54, 0xff, b'S', b'M', b'B', 0x72],
                false,
                5,
                445
            ),
            Some(AppInfo::Smb { version: 1 })
        );
        let rdp = b"\x03\x00\x00\x2b\x26\xe0\x00\x00\x00\x00\x00Cookie: mstshash=alice\r\n";
        assert_eq!(
            sniff(rdp, false, 50000, 3389),
            Some(AppInfo::Rdp {
                cookie: Some("alice")
            })
        );
        let mqtt = b"\x10\x12\x00\x04MQTT\x04\x02\x00\x3c\x00\x06client";
        assert_eq!(
            sniff(mqtt, false, 50000, 1883),
            Some(AppInfo::Mqtt {
                level: 4,
                client_id: "client"
            })
        );
    }

    #[test]
    fn dns_query_name() {
        // Query for example.com A.
        let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01";
        let Some(AppInfo::Dns {
            qname_wire, qtype, ..
        }) = sniff(q, true, 50000, 53)
        else {
            panic!()
        };
        let mut s = String::new();
        dns_name(qname_wire, &mut s);
        assert_eq!((s.as_str(), qtype), ("example.com", 1));
    }

    #[test]
    fn dhcp_message_type() {
        let mut b = vec![0u8; 240];
        b[0] = 1;
        b[236..240].copy_from_slice(&[99, 130, 83, 99]);
        b.extend_from_slice(&[53, 1, 1, 255]);
        assert_eq!(
            sniff(&b, true, 68, 67),
            Some(AppInfo::Dhcp { msg_type: Some(1) })
        );
    }
}
