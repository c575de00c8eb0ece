//! Netlink codecs for the two kernel interfaces the shell talks to, as pure functions over
//! bytes: nfnetlink_queue (bind a queue, copy mode, flags, packets in, verdicts out) and
//! ctnetlink (look a connection up by tuple, set bits of its mark). Parsing is bounds-checked
//! everywhere: a malformed message is an error value, never a panic.
//!
//! Why hand-written rather than the `nfq` crate: on this kernel `NFQA_CFG_F_CONNTRACK` is
//! refused (`CONFIG_NETFILTER_NETLINK_GLUE_CT` is off), so the conntrack mark cannot ride on
//! the verdict; it is set through ctnetlink instead, which `nfq` does not speak, and `nfq`
//! asserts (panics) on short attributes. The generic wire format (headers, attribute builder,
//! bounded splitting, acknowledgements) is `rampart-netlink`'s; this module owns the two
//! subsystems' message types, attribute numbers and meanings.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rampart_netlink::wire::{
    self, Attrs, Builder, DecodeError, EncodeError, NLMSG_DONE, NLMSG_ERROR, NLM_F_ACK,
    NLM_F_REQUEST,
};

use crate::flow::{Tuple, L4};

pub use rampart_netlink::NETLINK_NETFILTER;

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const NFNL_SUBSYS_QUEUE: u16 = 3;

const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;

const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_MARK: u16 = 3;
const NFQA_IFINDEX_INDEV: u16 = 5;
const NFQA_IFINDEX_OUTDEV: u16 = 6;
const NFQA_PAYLOAD: u16 = 10;
const NFQA_CAP_LEN: u16 = 13;

const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQA_CFG_MASK: u16 = 4;
const NFQA_CFG_FLAGS: u16 = 5;

/// `NFQNL_CFG_CMD_BIND`.
pub const CMD_BIND: u8 = 1;
/// `NFQNL_CFG_CMD_UNBIND`.
pub const CMD_UNBIND: u8 = 2;
const NFQNL_COPY_PACKET: u8 = 2;

/// `NFQA_CFG_F_FAIL_OPEN`: accept instead of drop when the queue or socket buffer is full.
pub const CFG_F_FAIL_OPEN: u32 = 1;
/// `NFQA_CFG_F_GSO`: hand over GSO packets unsegmented (we only read their start).
pub const CFG_F_GSO: u32 = 4;

const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_MARK: u16 = 8;
const CTA_MARK_MASK: u16 = 21;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Packet verdicts (`NF_DROP`, `NF_ACCEPT`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NfVerdict {
    /// `NF_DROP`.
    Drop = 0,
    /// `NF_ACCEPT`.
    Accept = 1,
}

/// Malformed netlink input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// A header, attribute or value claims more bytes than there are.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A queued packet without its packet header attribute.
    #[error("queued packet without NFQA_PACKET_HDR")]
    NoPacketHeader,
}

fn queue_msg(msg: u16) -> u16 {
    wire::nfnl_type(NFNL_SUBSYS_QUEUE, msg)
}

fn ct_msg(msg: u16) -> u16 {
    wire::nfnl_type(NFNL_SUBSYS_CTNETLINK, msg)
}

/// Bind (`CMD_BIND`) or unbind (`CMD_UNBIND`) queue `queue`; acknowledged.
pub fn config_cmd(queue: u16, cmd: u8, seq: u32) -> Result<Vec<u8>, EncodeError> {
    Builder::new(
        queue_msg(NFQNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        queue,
    )
    .attr(NFQA_CFG_CMD, &[cmd, 0, 0, 0])
    .finish()
}

/// Copy mode "packet" with at most `copy_range` bytes per packet, a queue of at most
/// `max_len` packets, and `flags` (within `mask`); acknowledged.
pub fn config_params(
    queue: u16,
    copy_range: u32,
    max_len: u32,
    flags: u32,
    mask: u32,
    seq: u32,
) -> Result<Vec<u8>, EncodeError> {
    let mut params = copy_range.to_be_bytes().to_vec();
    params.push(NFQNL_COPY_PACKET);
    Builder::new(
        queue_msg(NFQNL_MSG_CONFIG),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        0,
        queue,
    )
    .attr(NFQA_CFG_PARAMS, &params)
    .attr(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())
    .attr(NFQA_CFG_MASK, &mask.to_be_bytes())
    .attr(NFQA_CFG_FLAGS, &flags.to_be_bytes())
    .finish()
}

/// The verdict for packet `packet_id` of queue `queue` (not acknowledged: errors still come
/// back as `NLMSG_ERROR`).
pub fn verdict(queue: u16, packet_id: u32, verdict: NfVerdict) -> Result<Vec<u8>, EncodeError> {
    let mut hdr = (verdict as u32).to_be_bytes().to_vec();
    hdr.extend_from_slice(&packet_id.to_be_bytes());
    Builder::new(queue_msg(NFQNL_MSG_VERDICT), NLM_F_REQUEST, 0, 0, queue)
        .attr(NFQA_VERDICT_HDR, &hdr)
        .finish()
}

/// An accept verdict for packet `packet_id` that also sets the packet's mark to `mark`
/// (`NFQA_MARK`; the rest of the hook's chains see it).
pub fn verdict_with_mark(queue: u16, packet_id: u32, mark: u32) -> Result<Vec<u8>, EncodeError> {
    let mut hdr = (NfVerdict::Accept as u32).to_be_bytes().to_vec();
    hdr.extend_from_slice(&packet_id.to_be_bytes());
    Builder::new(queue_msg(NFQNL_MSG_VERDICT), NLM_F_REQUEST, 0, 0, queue)
        .attr(NFQA_VERDICT_HDR, &hdr)
        .attr(NFQA_MARK, &mark.to_be_bytes())
        .finish()
}

fn tuple_attrs(b: &mut Builder, t: &Tuple) {
    b.begin_nest(CTA_TUPLE_ORIG).begin_nest(CTA_TUPLE_IP);
    match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            b.attr(CTA_IP_V4_SRC, &s.octets())
                .attr(CTA_IP_V4_DST, &d.octets());
        }
        (s, d) => {
            b.attr(CTA_IP_V6_SRC, &v6(s).octets())
                .attr(CTA_IP_V6_DST, &v6(d).octets());
        }
    }
    b.end_nest().begin_nest(CTA_TUPLE_PROTO);
    b.attr(CTA_PROTO_NUM, &[t.protocol]);
    match t.l4 {
        L4::Ports { src, dst } => {
            b.attr(CTA_PROTO_SRC_PORT, &src.to_be_bytes())
                .attr(CTA_PROTO_DST_PORT, &dst.to_be_bytes());
        }
        L4::Echo { id } if t.src.is_ipv4() => {
            // Why: conntrack keys an echo session by its request (type 8, code 0) and id.
            b.attr(CTA_PROTO_ICMP_ID, &id.to_be_bytes())
                .attr(CTA_PROTO_ICMP_TYPE, &[8])
                .attr(CTA_PROTO_ICMP_CODE, &[0]);
        }
        L4::Echo { id } => {
            b.attr(CTA_PROTO_ICMPV6_ID, &id.to_be_bytes())
                .attr(CTA_PROTO_ICMPV6_TYPE, &[128])
                .attr(CTA_PROTO_ICMPV6_CODE, &[0]);
        }
    }
    b.end_nest().end_nest();
}

fn v6(a: IpAddr) -> Ipv6Addr {
    match a {
        IpAddr::V6(v) => v,
        IpAddr::V4(v) => v.to_ipv6_mapped(),
    }
}

fn family(t: &Tuple) -> u8 {
    if t.src.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

/// Look up the connection a packet with tuple `t` belongs to (either direction); the answer is
/// a `CT_NEW` message carrying the original tuple, or an error (`ENOENT`: not confirmed yet).
pub fn ct_get(t: &Tuple, seq: u32) -> Result<Vec<u8>, EncodeError> {
    let mut b = Builder::new(
        ct_msg(IPCTNL_MSG_CT_GET),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family(t),
        0,
    );
    tuple_attrs(&mut b, t);
    b.finish()
}

/// Set the bits `mask` of the mark of the existing connection `t` belongs to, to `mark`
/// (other bits kept: the kernel computes `(old & !mask) ^ mark`); acknowledged.
pub fn ct_set_mark(t: &Tuple, mark: u32, mask: u32, seq: u32) -> Result<Vec<u8>, EncodeError> {
    let mut b = Builder::new(
        ct_msg(IPCTNL_MSG_CT_NEW),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family(t),
        0,
    );
    tuple_attrs(&mut b, t);
    b.attr(CTA_MARK, &(mark & mask).to_be_bytes())
        .attr(CTA_MARK_MASK, &mask.to_be_bytes());
    b.finish()
}

/// A packet handed over by the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueuedPacket<'a> {
    /// Queue number.
    pub queue: u16,
    /// Packet id for the verdict.
    pub id: u32,
    /// Netfilter hook number (`NF_INET_*`).
    pub hook: u8,
    /// Packet mark.
    pub mark: u32,
    /// Input interface index, when any.
    pub indev: Option<u32>,
    /// Output interface index, when any.
    pub outdev: Option<u32>,
    /// The packet from the IP header, at most the copy range.
    pub payload: &'a [u8],
    /// Original length when the payload was truncated.
    pub cap_len: Option<u32>,
}

/// One message received from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// A queued packet.
    Packet(QueuedPacket<'a>),
    /// An acknowledgement (`errno` 0) or error for the request with sequence `seq`.
    Ack {
        /// Sequence number of the request.
        seq: u32,
        /// 0 on success, else the positive errno.
        errno: i32,
    },
    /// A conntrack entry (answer to [`ct_get`]) with its original tuple, when it parsed.
    Conntrack {
        /// Sequence number of the request.
        seq: u32,
        /// The original-direction tuple.
        orig: Option<Tuple>,
    },
    /// Anything else (ignored).
    Other,
}

/// Split a receive buffer into messages (bounded: see [`rampart_netlink::wire::messages`]).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Message<'_>, ParseError>> {
    wire::messages(buf).map(|m| parse_message(&m?))
}

/// One received message, as the queue and conntrack subsystems mean it.
pub fn parse_message<'a>(m: &wire::Msg<'a>) -> Result<Message<'a>, ParseError> {
    match m.ty {
        NLMSG_ERROR => {
            let ack = m.ack()?;
            Ok(Message::Ack {
                seq: ack.seq,
                errno: ack.errno,
            })
        }
        NLMSG_DONE => Ok(Message::Other),
        k if k == queue_msg(NFQNL_MSG_PACKET) => {
            let (g, a) = m.nfgen()?;
            parse_packet(g.res_id, a).map(Message::Packet)
        }
        k if k == ct_msg(IPCTNL_MSG_CT_NEW) => {
            let (_, a) = m.nfgen()?;
            let mut orig = None;
            for a in a {
                let a = a?;
                if a.ty == CTA_TUPLE_ORIG {
                    orig = parse_tuple(a.nested())?;
                }
            }
            Ok(Message::Conntrack { seq: m.seq, orig })
        }
        _ => Ok(Message::Other),
    }
}

fn parse_packet(queue: u16, attrs: Attrs<'_>) -> Result<QueuedPacket<'_>, ParseError> {
    let mut p = QueuedPacket {
        queue,
        id: 0,
        hook: 0,
        mark: 0,
        indev: None,
        outdev: None,
        payload: &[],
        cap_len: None,
    };
    let mut have_hdr = false;
    for a in attrs {
        let a = a?;
        match a.ty {
            NFQA_PACKET_HDR => {
                // struct nfqnl_msg_packet_hdr: packet_id be32, hw_protocol be16, hook u8.
                p.id = a.be32()?;
                p.hook = *a.value.get(6).ok_or(DecodeError::Short {
                    what: "NFQA_PACKET_HDR",
                    need: 7,
                    got: a.value.len(),
                })?;
                have_hdr = true;
            }
            NFQA_MARK => p.mark = a.be32()?,
            NFQA_IFINDEX_INDEV => p.indev = a.be32().ok(),
            NFQA_IFINDEX_OUTDEV => p.outdev = a.be32().ok(),
            NFQA_PAYLOAD => p.payload = a.value,
            NFQA_CAP_LEN => p.cap_len = a.be32().ok(),
            _ => {}
        }
    }
    if !have_hdr {
        return Err(ParseError::NoPacketHeader);
    }
    Ok(p)
}

fn parse_tuple(attrs: Attrs<'_>) -> Result<Option<Tuple>, ParseError> {
    let (mut src, mut dst, mut proto) = (None, None, None);
    let (mut sport, mut dport, mut id) = (None, None, None);
    for a in attrs {
        let a = a?;
        match a.ty {
            CTA_TUPLE_IP => {
                for a in a.nested() {
                    let a = a?;
                    let v = a.value;
                    let addr = match (a.ty, v.len()) {
                        (CTA_IP_V4_SRC | CTA_IP_V4_DST, 4) => {
                            Some(IpAddr::V4(Ipv4Addr::new(v[0], v[1], v[2], v[3])))
                        }
                        (CTA_IP_V6_SRC | CTA_IP_V6_DST, 16) => {
                            let mut o = [0u8; 16];
                            o.copy_from_slice(v);
                            Some(IpAddr::V6(Ipv6Addr::from(o)))
                        }
                        _ => None,
                    };
                    match a.ty {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = addr,
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = addr,
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for a in a.nested() {
                    let a = a?;
                    match a.ty {
                        CTA_PROTO_NUM => proto = a.u8().ok(),
                        CTA_PROTO_SRC_PORT => sport = a.be16().ok(),
                        CTA_PROTO_DST_PORT => dport = a.be16().ok(),
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => id = a.be16().ok(),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let (Some(src), Some(dst), Some(protocol)) = (src, dst, proto) else {
        return Ok(None);
    };
    let l4 = match (sport, dport, id) {
        (Some(s), Some(d), _) => L4::Ports { src: s, dst: d },
        (_, _, Some(id)) => L4::Echo { id },
        _ => return Ok(None),
    };
    Ok(Some(Tuple {
        src,
        dst,
        protocol,
        l4,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_netlink::wire::{attrs, NFGEN_HDRLEN, NLA_HDRLEN, NLMSG_HDRLEN};

    fn tcp_tuple() -> Tuple {
        Tuple {
            src: "192.0.2.1".parse().unwrap(),
            dst: "192.0.2.2".parse().unwrap(),
            protocol: 6,
            l4: L4::Ports {
                src: 40000,
                dst: 8080,
            },
        }
    }

    /// Turn a request into the kernel's answer shape: a CT_NEW message with the same attributes.
    fn as_ct_answer(req: &[u8], seq: u32) -> Vec<u8> {
        let mut m = req.to_vec();
        m[4..6].copy_from_slice(&ct_msg(IPCTNL_MSG_CT_NEW).to_ne_bytes());
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        m
    }

    #[test]
    fn ct_request_tuple_round_trips_v4_v6_and_echo() {
        let v6 = Tuple {
            src: "2001:db8::1".parse().unwrap(),
            dst: "2001:db8::2".parse().unwrap(),
            protocol: 17,
            l4: L4::Ports { src: 5353, dst: 53 },
        };
        let echo = Tuple {
            protocol: 1,
            l4: L4::Echo { id: 4242 },
            ..tcp_tuple()
        };
        for t in [tcp_tuple(), v6, echo] {
            let answer = as_ct_answer(&ct_get(&t, 7).unwrap(), 7);
            let msgs: Vec<_> = messages(&answer).collect();
            assert_eq!(
                msgs,
                vec![Ok(Message::Conntrack {
                    seq: 7,
                    orig: Some(t)
                })]
            );
        }
    }

    #[test]
    fn mark_request_carries_masked_mark() {
        let m = ct_set_mark(&tcp_tuple(), 0x0020_0000, 0x00f0_0000, 9).unwrap();
        assert_eq!(&m[0..4], &(m.len() as u32).to_ne_bytes());
        let body = &m[NLMSG_HDRLEN + NFGEN_HDRLEN..];
        let got: Vec<(u16, Vec<u8>)> = attrs(body)
            .map(|a| a.unwrap())
            .map(|a| (a.ty, a.value.to_vec()))
            .collect();
        assert!(got.contains(&(CTA_MARK, vec![0x00, 0x20, 0, 0])));
        assert!(got.contains(&(CTA_MARK_MASK, vec![0x00, 0xf0, 0, 0])));
    }

    fn packet_msg(id: u32, hook: u8, payload: &[u8]) -> Vec<u8> {
        let mut hdr = id.to_be_bytes().to_vec();
        hdr.extend_from_slice(&0x0800u16.to_be_bytes());
        hdr.push(hook);
        Builder::new(queue_msg(NFQNL_MSG_PACKET), 0, 0, AF_INET, 4210)
            .attr(NFQA_PACKET_HDR, &hdr)
            .attr(NFQA_MARK, &0x0010_0000u32.to_be_bytes())
            .attr(NFQA_IFINDEX_INDEV, &3u32.to_be_bytes())
            .attr(NFQA_PAYLOAD, payload)
            .finish()
            .unwrap()
    }

    #[test]
    fn packets_and_acks_parse_from_one_buffer() {
        let mut buf = packet_msg(17, 1, b"\x45abc");
        buf.extend(packet_msg(18, 3, b"\x45d"));
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&0u16.to_ne_bytes());
        err.extend_from_slice(&0u32.to_ne_bytes());
        err.extend_from_slice(&0u32.to_ne_bytes());
        err.extend_from_slice(&(-16i32).to_ne_bytes());
        err.extend_from_slice(&config_cmd(4210, CMD_BIND, 5).unwrap()[..16]);
        buf.extend(err);
        let msgs: Vec<_> = messages(&buf).map(|m| m.unwrap()).collect();
        assert_eq!(msgs.len(), 3);
        let Message::Packet(p) = msgs[0] else {
            panic!("{:?}", msgs[0])
        };
        assert_eq!(
            (p.queue, p.id, p.hook, p.mark, p.indev, p.payload),
            (4210, 17, 1, 0x0010_0000, Some(3), &b"\x45abc"[..])
        );
        assert_eq!(msgs[2], Message::Ack { seq: 5, errno: 16 });
    }

    #[test]
    fn verdict_with_mark_carries_the_mark() {
        let v = verdict_with_mark(4210, 7, 0x0020_0001).unwrap();
        assert_eq!(
            v.len(),
            NLMSG_HDRLEN + NFGEN_HDRLEN + 2 * NLA_HDRLEN + 8 + 4
        );
        assert_eq!(&v[24..32], &[0, 0, 0, 1, 0, 0, 0, 7]);
        assert_eq!(&v[32..34], &8u16.to_ne_bytes());
        assert_eq!(&v[34..36], &NFQA_MARK.to_ne_bytes());
        assert_eq!(&v[36..40], &0x0020_0001u32.to_be_bytes());
    }

    #[test]
    fn verdict_layout() {
        let v = verdict(4210, 0x0102_0304, NfVerdict::Drop).unwrap();
        assert_eq!(v.len(), NLMSG_HDRLEN + NFGEN_HDRLEN + NLA_HDRLEN + 8);
        assert_eq!(&v[18..20], &4210u16.to_be_bytes());
        assert_eq!(&v[24..32], &[0, 0, 0, 0, 1, 2, 3, 4]);
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let good = packet_msg(1, 1, b"\x45\x00\x00\x14");
        for cut in 0..good.len() {
            let mut b = good[..cut].to_vec();
            if b.len() >= 4 {
                // Claim the original length: the message now overruns the buffer.
                b[0..4].copy_from_slice(&(good.len() as u32).to_ne_bytes());
            }
            for m in messages(&b) {
                let _ = m;
            }
        }
        let mut lying_attr = good.clone();
        lying_attr[NLMSG_HDRLEN + NFGEN_HDRLEN..][..2].copy_from_slice(&0xffffu16.to_ne_bytes());
        assert_eq!(
            messages(&lying_attr).next(),
            Some(Err(ParseError::Decode(DecodeError::TruncatedAttribute {
                claimed: 0xffff,
                available: good.len() - NLMSG_HDRLEN - NFGEN_HDRLEN
            })))
        );
        // A packet header too short for its hook byte, and a packet without one.
        let short_hdr = Builder::new(queue_msg(NFQNL_MSG_PACKET), 0, 0, AF_INET, 1)
            .attr(NFQA_PACKET_HDR, &[0, 0, 0, 1, 8, 0])
            .finish()
            .unwrap();
        assert!(matches!(
            messages(&short_hdr).next(),
            Some(Err(ParseError::Decode(DecodeError::Short { .. })))
        ));
        let no_hdr = Builder::new(queue_msg(NFQNL_MSG_PACKET), 0, 0, AF_INET, 1)
            .attr(NFQA_PAYLOAD, b"\x45")
            .finish()
            .unwrap();
        assert_eq!(
            messages(&no_hdr).next(),
            Some(Err(ParseError::NoPacketHeader))
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            for m in messages(&b) {
                let _ = m;
            }
        }
    }
}
