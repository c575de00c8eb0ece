//! NFLOG reader over a raw `NETLINK_NETFILTER` socket (no libnetfilter_log): bind to one group,
//! copy the first bytes of each packet, parse prefix, interfaces and the IP/L4 header.
//!
//! The parsing half ([`parse_messages`], [`parse_packet_headers`]) is pure and unit-tested on
//! hand-built bytes; [`NflogSocket`] is the I/O half.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rampart_netlink::wire::{self, Builder, EncodeError, NLM_F_ACK, NLM_F_REQUEST};
use rampart_netlink::{Socket, SocketError};

use crate::ApplyError;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
/// Why: enough for IPv6 + extension-free TCP/UDP headers; nothing more is parsed.
pub const COPY_RANGE: u32 = 128;
/// Why: one receive buffer; the kernel batches several log messages per datagram.
const RECV_BUF: usize = 65536;

/// One logged packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedPacket {
    /// The log prefix (`rampart:N:`).
    pub prefix: String,
    /// NFPROTO family of the hook (2 IPv4, 10 IPv6).
    pub family: u8,
    /// Input interface index.
    pub iif: Option<u32>,
    /// Output interface index.
    pub oif: Option<u32>,
    /// Parsed headers when the payload was an IP packet.
    pub headers: Option<Headers>,
}

/// IP and L4 header fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Headers {
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// IP protocol / IPv6 next header.
    pub protocol: u8,
    /// TCP/UDP source port.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port.
    pub dst_port: Option<u16>,
    /// ICMP/ICMPv6 type.
    pub icmp_type: Option<u8>,
}

impl LoggedPacket {
    /// The rule index in a `rampart:N:` prefix (or a `rampart:ban:N:` one).
    pub fn rule_index(&self) -> Option<u32> {
        let rest = self
            .prefix
            .strip_prefix(rampart_nft::BAN_LOG_PREFIX_STEM)
            .or_else(|| self.prefix.strip_prefix(rampart_nft::LOG_PREFIX_STEM))?;
        rest.split(':').next()?.parse().ok()
    }

    /// Whether this is a ban (the source was just put in the ban set by the rule).
    pub fn is_ban(&self) -> bool {
        self.prefix.starts_with(rampart_nft::BAN_LOG_PREFIX_STEM)
    }
}

/// Parse every NFLOG packet message in one netlink datagram. Malformed parts are skipped: a
/// message or attribute whose length does not fit ends the walk, what came before is kept.
pub fn parse_messages(buf: &[u8]) -> Vec<LoggedPacket> {
    let mut out = Vec::new();
    for m in wire::messages(buf).map_while(Result::ok) {
        if m.ty != wire::nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_PACKET) {
            continue;
        }
        let Ok((g, attrs)) = m.nfgen() else {
            continue;
        };
        let mut p = LoggedPacket {
            prefix: String::new(),
            family: g.family,
            iif: None,
            oif: None,
            headers: None,
        };
        for a in attrs.map_while(Result::ok) {
            match a.ty {
                NFULA_PREFIX => {
                    let end = a
                        .value
                        .iter()
                        .position(|&b| b == 0)
                        .unwrap_or(a.value.len());
                    p.prefix = String::from_utf8_lossy(&a.value[..end]).into_owned();
                }
                NFULA_IFINDEX_INDEV => p.iif = a.be32().ok().or(p.iif),
                NFULA_IFINDEX_OUTDEV => p.oif = a.be32().ok().or(p.oif),
                NFULA_PAYLOAD => p.headers = parse_packet_headers(a.value),
                _ => {}
            }
        }
        out.push(p);
    }
    out
}

/// Parse an IPv4 or IPv6 packet's addresses, protocol and first L4 fields.
pub fn parse_packet_headers(pkt: &[u8]) -> Option<Headers> {
    let version = pkt.first()? >> 4;
    let (src, dst, protocol, l4) = match version {
        4 => {
            let ihl = usize::from(pkt[0] & 0x0f) * 4;
            if pkt.len() < 20 || ihl < 20 {
                return None;
            }
            let src = Ipv4Addr::new(pkt[12], pkt[13], pkt[14], pkt[15]);
            let dst = Ipv4Addr::new(pkt[16], pkt[17], pkt[18], pkt[19]);
            (
                IpAddr::V4(src),
                IpAddr::V4(dst),
                pkt[9],
                pkt.get(ihl..).unwrap_or(&[]),
            )
        }
        6 => {
            if pkt.len() < 40 {
                return None;
            }
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&pkt[8..24]);
            d.copy_from_slice(&pkt[24..40]);
            (
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                pkt[6],
                &pkt[40..],
            )
        }
        _ => return None,
    };
    let port = |i: usize| l4.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (src_port, dst_port, icmp_type) = match protocol {
        6 | 17 | 132 | 136 => (port(0), port(2), None),
        1 | 58 => (None, None, l4.first().copied()),
        _ => (None, None, None),
    };
    Some(Headers {
        src,
        dst,
        protocol,
        src_port,
        dst_port,
        icmp_type,
    })
}

fn config_message(
    group: u16,
    seq: u32,
    attr_type: u16,
    payload: &[u8],
) -> Result<Vec<u8>, EncodeError> {
    // nfgenmsg: family AF_UNSPEC, version 0, res_id = group.
    Builder::new(
        wire::nfnl_type(NFNL_SUBSYS_ULOG, NFULNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        group,
    )
    .attr(attr_type, payload)
    .finish()
}

/// A socket bound to one NFLOG group.
#[derive(Debug)]
pub struct NflogSocket {
    sock: Socket,
    buf: Vec<u8>,
}

impl NflogSocket {
    /// Open a netlink socket in the current network namespace and bind it to `group`.
    pub fn bind(group: u16) -> Result<Self, ApplyError> {
        let mut s = NflogSocket {
            sock: Socket::open(rampart_netlink::NETLINK_NETFILTER)?,
            buf: vec![0u8; RECV_BUF],
        };
        s.request(
            config_message(group, 1, NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]),
            1,
        )?;
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        s.request(config_message(group, 2, NFULA_CFG_MODE, &mode), 2)?;
        Ok(s)
    }

    fn request(&mut self, msg: Result<Vec<u8>, EncodeError>, seq: u32) -> Result<(), ApplyError> {
        let msg = msg.map_err(|e| ApplyError::Netlink(format!("NFLOG config: {e}")))?;
        match self.sock.request(&msg, seq, &mut self.buf, |_| {}) {
            Ok(()) => Ok(()),
            Err(SocketError::Refused { errno, .. }) => {
                // The kernel allows one listener per group: EPERM/EBUSY mean it is taken.
                let hint = if errno == libc::EPERM || errno == libc::EBUSY {
                    " (the group already has a listener: another `rampart log`, ulogd, ...)"
                } else {
                    ""
                };
                Err(ApplyError::Netlink(format!(
                    "NFLOG config refused: {}{hint}",
                    std::io::Error::from_raw_os_error(errno)
                )))
            }
            Err(e) => Err(ApplyError::Netlink(format!("NFLOG config: {e}"))),
        }
    }

    /// Set a receive timeout (None: block forever).
    pub fn set_timeout(&self, timeout: Option<std::time::Duration>) -> Result<(), ApplyError> {
        Ok(self.sock.set_recv_timeout(timeout)?)
    }

    /// Receive the next batch of logged packets; `Ok(empty)` on timeout.
    pub fn recv(&mut self) -> Result<Vec<LoggedPacket>, ApplyError> {
        match self.sock.recv(&mut self.buf, true) {
            Ok(n) => Ok(parse_messages(&self.buf[..n])),
            // ENOBUFS: the kernel dropped logs because we were slow; keep reading.
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOBUFS | libc::ETIMEDOUT)) => {
                Ok(Vec::new())
            }
            Err(e) => Err(ApplyError::Netlink(e.to_string())),
        }
    }
}

/// Interface name of an index in the current namespace (best effort).
pub fn ifname(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf has IF_NAMESIZE bytes as if_indextoname requires.
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: on success the buffer holds a NUL-terminated name.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built NFLOG message: IPv4 UDP 192.0.2.5:5000 → 198.51.100.7:5355, prefix
    /// `rampart:3:`, input interface 2.
    fn message() -> Vec<u8> {
        let mut ip = vec![
            0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 192, 0, 2, 5, 198, 51, 100, 7,
        ];
        ip.extend_from_slice(&5000u16.to_be_bytes());
        ip.extend_from_slice(&5355u16.to_be_bytes());
        ip.extend_from_slice(&[0, 8, 0, 0]);
        let mut body = vec![2, 0, 0, 1];
        body.extend(
            Builder::attributes()
                .attr(NFULA_PREFIX, b"rampart:3:\0")
                .attr_be32(NFULA_IFINDEX_INDEV, 2)
                .attr(NFULA_PAYLOAD, &ip)
                .finish()
                .unwrap(),
        );
        let total = wire::NLMSG_HDRLEN + body.len();
        let mut m = (total as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&(NFNL_SUBSYS_ULOG << 8).to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend(body);
        m
    }

    #[test]
    fn parses_prefix_interface_and_headers() {
        let mut two = message();
        two.extend(message());
        let pkts = parse_messages(&two);
        assert_eq!(pkts.len(), 2);
        let p = &pkts[0];
        assert_eq!(p.prefix, "rampart:3:");
        assert_eq!(p.rule_index(), Some(3));
        assert!(!p.is_ban());
        let ban = LoggedPacket {
            prefix: "rampart:ban:12:".into(),
            ..p.clone()
        };
        assert_eq!(ban.rule_index(), Some(12));
        assert!(ban.is_ban());
        assert_eq!(p.rule_index(), Some(3));
        assert_eq!(p.iif, Some(2));
        let h = p.headers.as_ref().unwrap();
        assert_eq!(h.src, "192.0.2.5".parse::<IpAddr>().unwrap());
        assert_eq!(h.dst_port, Some(5355));
        assert_eq!(h.protocol, 17);
    }

    #[test]
    fn truncated_input_is_skipped_not_panicking() {
        let m = message();
        for cut in 0..m.len() {
            let _ = parse_messages(&m[..cut]);
        }
        assert!(parse_packet_headers(&[0x60; 10]).is_none());
        assert_eq!(config_message(5, 1, NFULA_CFG_CMD, &[1]).unwrap().len(), 28);
    }
}
