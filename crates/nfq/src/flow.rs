//! Flow identity: the 5-tuple of a packet (ICMP echo: addresses and identifier), its reverse,
//! and the direction-independent key the connection table uses.

use std::net::IpAddr;

use rampart_engine::decode::{Ip, Transport};
use rampart_ir::proto;

/// ICMP echo request / reply types (IPv4).
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMP_ECHO_REPLY: u8 = 0;
/// ICMPv6 echo request / reply types.
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;

/// Transport part of a tuple.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// TCP or UDP ports.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP/ICMPv6 echo, identified by its identifier (as conntrack does).
    Echo {
        /// Echo identifier.
        id: u16,
    },
}

/// A connection's tuple in one orientation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol (6, 17, 1 or 58).
    pub protocol: u8,
    /// Ports or echo identifier.
    pub l4: L4,
}

impl Tuple {
    /// The same connection seen from the other side.
    pub fn reversed(&self) -> Self {
        Self {
            src: self.dst,
            dst: self.src,
            protocol: self.protocol,
            l4: match self.l4 {
                L4::Ports { src, dst } => L4::Ports { src: dst, dst: src },
                echo @ L4::Echo { .. } => echo,
            },
        }
    }

    /// The orientation-independent key: the smaller of the tuple and its reverse.
    pub fn key(&self) -> Tuple {
        let r = self.reversed();
        if r < *self {
            r
        } else {
            *self
        }
    }

    /// Destination port (TCP/UDP), if any.
    pub fn dst_port(&self) -> Option<u16> {
        match self.l4 {
            L4::Ports { dst, .. } => Some(dst),
            L4::Echo { .. } => None,
        }
    }

    /// Source port (TCP/UDP), if any.
    pub fn src_port(&self) -> Option<u16> {
        match self.l4 {
            L4::Ports { src, .. } => Some(src),
            L4::Echo { .. } => None,
        }
    }
}

/// What the classifier can do with a decoded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PacketKind<'a> {
    /// TCP or UDP with this payload (possibly empty).
    Stream {
        /// The tuple as the packet travels.
        tuple: Tuple,
        /// Transport payload.
        payload: &'a [u8],
    },
    /// An ICMP/ICMPv6 echo request (inspected) or reply (not inspected).
    Echo {
        /// The tuple as the packet travels.
        tuple: Tuple,
        /// Whether this is a request.
        request: bool,
        /// Echo data after the identifier and sequence number.
        data: &'a [u8],
    },
    /// Anything else (other ICMP, other protocols, non-first fragments): never inspected.
    Other,
}

/// Classify a decoded IP packet into what the application step can inspect.
pub fn packet_kind<'a>(ip: &Ip<'a>) -> PacketKind<'a> {
    match ip.l4 {
        Transport::Tcp(t) => PacketKind::Stream {
            tuple: Tuple {
                src: ip.src,
                dst: ip.dst,
                protocol: proto::TCP,
                l4: L4::Ports {
                    src: t.src,
                    dst: t.dst,
                },
            },
            payload: t.payload,
        },
        Transport::Udp(u) => PacketKind::Stream {
            tuple: Tuple {
                src: ip.src,
                dst: ip.dst,
                protocol: proto::UDP,
                l4: L4::Ports {
                    src: u.src,
                    dst: u.dst,
                },
            },
            payload: u.payload,
        },
        Transport::Icmp(i) => {
            let (request, reply) = if i.v6 {
                (ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
            } else {
                (ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
            };
            if i.code != 0 || (i.icmp_type != request && i.icmp_type != reply) {
                return PacketKind::Other;
            }
            let Some(id) = i.id else {
                return PacketKind::Other;
            };
            // Why: `rest` starts after the 4-byte ICMP header; identifier and sequence take 4 more.
            let data = i.rest.get(4..).unwrap_or(&[]);
            PacketKind::Echo {
                tuple: Tuple {
                    src: ip.src,
                    dst: ip.dst,
                    protocol: if i.v6 { proto::ICMPV6 } else { proto::ICMP },
                    l4: L4::Echo { id },
                },
                request: i.icmp_type == request,
                data,
            }
        }
        Transport::Fragment | Transport::Other { .. } => PacketKind::Other,
    }
}

/// Protocol name as events spell it (Suricata EVE style).
pub fn proto_event_name(protocol: u8) -> String {
    match protocol {
        proto::TCP => "TCP".into(),
        proto::UDP => "UDP".into(),
        proto::ICMP => "ICMP".into(),
        proto::ICMPV6 => "IPv6-ICMP".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(sp: u16, dp: u16) -> Tuple {
        Tuple {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            protocol: 6,
            l4: L4::Ports { src: sp, dst: dp },
        }
    }

    #[test]
    fn key_is_orientation_independent() {
        let a = t(40000, 443);
        assert_eq!(a.key(), a.reversed().key());
        assert_eq!(a.reversed().reversed(), a);
        assert_ne!(a.key(), t(40001, 443).key());
    }

    #[test]
    fn echo_reverse_keeps_id() {
        let e = Tuple {
            l4: L4::Echo { id: 7 },
            protocol: 1,
            ..t(0, 0)
        };
        assert_eq!(e.reversed().l4, L4::Echo { id: 7 });
        assert_eq!(e.key(), e.reversed().key());
    }
}
