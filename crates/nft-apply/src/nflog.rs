//! NFLOG reader over a raw `NETLINK_NETFILTER` socket (no libnetfilter_log): bind to one group,
//! copy the first bytes of each packet, parse prefix, interfaces and the IP/L4 header.
//!
//! The parsing half ([`parse_messages`], [`parse_packet_headers`]) is pure and unit-tested on
//! hand-built bytes; [`NflogSocket`] is the I/O half.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::ApplyError;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_IFINDEX_INDEV: u16 = 4;
const NFULA_IFINDEX_OUTDEV: u16 = 5;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
const NLA_TYPE_MASK: u16 = 0x3fff;
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

fn attrs(mut buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while buf.len() >= 4 {
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let ty = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            break;
        }
        out.push((ty, &buf[4..len]));
        let aligned = (len + 3) & !3;
        if aligned >= buf.len() {
            break;
        }
        buf = &buf[aligned..];
    }
    out
}

/// Parse every NFLOG packet message in one netlink datagram. Malformed parts are skipped.
pub fn parse_messages(mut buf: &[u8]) -> Vec<LoggedPacket> {
    let mut out = Vec::new();
    while buf.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let ty = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < NLMSG_HDRLEN || len > buf.len() {
            break;
        }
        let body = &buf[NLMSG_HDRLEN..len];
        if ty == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET && body.len() >= 4 {
            let family = body[0];
            let mut p = LoggedPacket {
                prefix: String::new(),
                family,
                iif: None,
                oif: None,
                headers: None,
            };
            for (aty, val) in attrs(&body[4..]) {
                match aty {
                    NFULA_PREFIX => {
                        let end = val.iter().position(|&b| b == 0).unwrap_or(val.len());
                        p.prefix = String::from_utf8_lossy(&val[..end]).into_owned();
                    }
                    NFULA_IFINDEX_INDEV if val.len() >= 4 => {
                        p.iif = Some(u32::from_be_bytes([val[0], val[1], val[2], val[3]]));
                    }
                    NFULA_IFINDEX_OUTDEV if val.len() >= 4 => {
                        p.oif = Some(u32::from_be_bytes([val[0], val[1], val[2], val[3]]));
                    }
                    NFULA_PAYLOAD => p.headers = parse_packet_headers(val),
                    NFULA_PACKET_HDR => {}
                    _ => {}
                }
            }
            out.push(p);
        }
        let aligned = (len + 3) & !3;
        if aligned >= buf.len() {
            break;
        }
        buf = &buf[aligned..];
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

fn config_message(group: u16, seq: u32, attr_type: u16, payload: &[u8]) -> Vec<u8> {
    let attr_len = 4 + payload.len();
    let attr_aligned = (attr_len + 3) & !3;
    let total = NLMSG_HDRLEN + 4 + attr_aligned;
    let mut m = Vec::with_capacity(total);
    m.extend_from_slice(&(total as u32).to_ne_bytes());
    m.extend_from_slice(&((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG).to_ne_bytes());
    m.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    // nfgenmsg: family AF_UNSPEC, version 0, res_id = group (big endian).
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&group.to_be_bytes());
    m.extend_from_slice(&(attr_len as u16).to_ne_bytes());
    m.extend_from_slice(&attr_type.to_ne_bytes());
    m.extend_from_slice(payload);
    m.resize(total, 0);
    m
}

/// A socket bound to one NFLOG group.
#[derive(Debug)]
pub struct NflogSocket {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl NflogSocket {
    /// Open a netlink socket in the current network namespace and bind it to `group`.
    pub fn bind(group: u16) -> Result<Self, ApplyError> {
        let s = NflogSocket {
            fd: crate::nlsock::open_netfilter_socket()?,
            buf: vec![0u8; RECV_BUF],
        };
        s.request(config_message(
            group,
            1,
            NFULA_CFG_CMD,
            &[NFULNL_CFG_CMD_BIND],
        ))?;
        let mut mode = COPY_RANGE.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        s.request(config_message(group, 2, NFULA_CFG_MODE, &mode))?;
        Ok(s)
    }

    fn request(&self, msg: Vec<u8>) -> Result<(), ApplyError> {
        // SAFETY: msg is a valid buffer of msg.len() bytes.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(ApplyError::Netlink(format!(
                "send: {}",
                std::io::Error::last_os_error()
            )));
        }
        let mut ack = [0u8; 512];
        // SAFETY: ack is a valid writable buffer of its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), ack.as_mut_ptr().cast(), ack.len(), 0) };
        if n < (NLMSG_HDRLEN + 4) as isize {
            return Err(ApplyError::Netlink(format!(
                "no ack: {}",
                std::io::Error::last_os_error()
            )));
        }
        let ty = u16::from_ne_bytes([ack[4], ack[5]]);
        if ty == NLMSG_ERROR {
            let code = i32::from_ne_bytes([ack[16], ack[17], ack[18], ack[19]]);
            if code != 0 {
                // The kernel allows one listener per group: EPERM/EBUSY mean it is taken.
                let hint = if -code == libc::EPERM || -code == libc::EBUSY {
                    " (the group already has a listener: another `rampart log`, ulogd, ...)"
                } else {
                    ""
                };
                return Err(ApplyError::Netlink(format!(
                    "NFLOG config refused: {}{hint}",
                    std::io::Error::from_raw_os_error(-code)
                )));
            }
        }
        Ok(())
    }

    /// Set a receive timeout (None: block forever).
    pub fn set_timeout(&self, timeout: Option<std::time::Duration>) -> Result<(), ApplyError> {
        let tv = match timeout {
            Some(d) => libc::timeval {
                tv_sec: d.as_secs() as libc::time_t,
                tv_usec: d.subsec_micros() as libc::suseconds_t,
            },
            None => libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
        };
        // SAFETY: tv is a valid timeval and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const libc::timeval as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        if rc < 0 {
            return Err(ApplyError::Netlink(format!(
                "setsockopt: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Receive the next batch of logged packets; `Ok(empty)` on timeout.
    pub fn recv(&mut self) -> Result<Vec<LoggedPacket>, ApplyError> {
        // SAFETY: buf is a valid writable buffer of its length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                return Ok(Vec::new());
            }
            // ENOBUFS: the kernel dropped logs because we were slow; keep reading.
            if e.raw_os_error() == Some(libc::ENOBUFS) {
                return Ok(Vec::new());
            }
            return Err(ApplyError::Netlink(format!("recv: {e}")));
        }
        Ok(parse_messages(&self.buf[..n as usize]))
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

    fn attr(ty: u16, val: &[u8]) -> Vec<u8> {
        let len = 4 + val.len();
        let mut v = (len as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(val);
        v.resize((len + 3) & !3, 0);
        v
    }

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
        body.extend(attr(NFULA_PREFIX, b"rampart:3:\0"));
        body.extend(attr(NFULA_IFINDEX_INDEV, &2u32.to_be_bytes()));
        body.extend(attr(NFULA_PAYLOAD, &ip));
        let total = NLMSG_HDRLEN + body.len();
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
        assert_eq!(config_message(5, 1, NFULA_CFG_CMD, &[1]).len(), 28);
    }
}
