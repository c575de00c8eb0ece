//! The wire format, pure: building messages (`nlmsghdr`, `nfgenmsg`, attributes with nesting)
//! and splitting received bytes back into messages and attributes without ever reading past a
//! buffer. Netlink headers are in host byte order; nfnetlink attribute values are usually in
//! network byte order (the `be*` helpers), which is the caller's business.
//!
//! Layout: `nlmsghdr` (len u32, type u16, flags u16, seq u32, pid u32), for nfnetlink an
//! `nfgenmsg` (family u8, version u8, res_id be16), then attributes (len u16, type u16, value,
//! padded to 4 bytes). A nested attribute's value is itself a list of attributes.

use thiserror::Error;

/// `NETLINK_NETFILTER`: the protocol of every nfnetlink subsystem (queue, conntrack, log,
/// nf_tables).
pub const NETLINK_NETFILTER: i32 = 12;

/// Bytes of `struct nlmsghdr`.
pub const NLMSG_HDRLEN: usize = 16;
/// Bytes of `struct nfgenmsg`.
pub const NFGEN_HDRLEN: usize = 4;
/// Bytes of `struct nlattr` (the attribute header).
pub const NLA_HDRLEN: usize = 4;
/// The largest attribute value: an attribute's length (header included) is a u16.
pub const MAX_ATTR_VALUE_BYTES: usize = u16::MAX as usize - NLA_HDRLEN;
/// The largest message this crate builds. Why: the kernel's own socket buffers are far
/// smaller; a message this large is a caller bug, reported instead of sent.
pub const MAX_MESSAGE_BYTES: usize = 1 << 30;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_MULTI`: part of a multipart answer.
pub const NLM_F_MULTI: u16 = 0x2;
/// `NLM_F_ACK`: ask for an acknowledgement.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_CAPPED` (on `NLMSG_ERROR`): only the request's header is echoed.
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` (on `NLMSG_ERROR`): extended-ack attributes follow the echo.
pub const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLM_F_DUMP` (`NLM_F_ROOT | NLM_F_MATCH`).
pub const NLM_F_DUMP: u16 = 0x300;
/// `NLM_F_CREATE`.
pub const NLM_F_CREATE: u16 = 0x400;
/// `NLM_F_APPEND`.
pub const NLM_F_APPEND: u16 = 0x800;

/// `NLMSG_ERROR`: an error, or an acknowledgement when its code is 0.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`: the end of a dump.
pub const NLMSG_DONE: u16 = 3;

/// `NLA_F_NESTED`: the value is a list of attributes.
pub const NLA_F_NESTED: u16 = 0x8000;
/// `NLA_F_NET_BYTEORDER`.
pub const NLA_F_NET_BYTEORDER: u16 = 0x4000;
/// The attribute type without its two flag bits.
pub const NLA_TYPE_MASK: u16 = 0x3fff;

/// `NFNETLINK_V0`: the only `nfgenmsg` version.
pub const NFNETLINK_V0: u8 = 0;

/// `NLMSGERR_ATTR_MSG`: the extended-ack text.
const NLMSGERR_ATTR_MSG: u16 = 1;

/// Malformed bytes from the kernel (or anywhere else): every length is checked against the
/// buffer that holds it.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// A message header claims a length below the header size or beyond the buffer.
    #[error("truncated netlink message: its header claims {claimed} bytes, {available} there")]
    TruncatedMessage {
        /// Length in the header.
        claimed: usize,
        /// Bytes left in the buffer.
        available: usize,
    },
    /// An attribute header claims a length below the header size or beyond its container.
    #[error("truncated netlink attribute: its header claims {claimed} bytes, {available} there")]
    TruncatedAttribute {
        /// Length in the attribute header.
        claimed: usize,
        /// Bytes left in the container.
        available: usize,
    },
    /// A fixed-size field (header, integer value) is shorter than its type.
    #[error("netlink {what} needs {need} bytes, has {got}")]
    Short {
        /// Which field.
        what: &'static str,
        /// Bytes needed.
        need: usize,
        /// Bytes present.
        got: usize,
    },
}

/// A message that cannot be encoded: it would not fit the wire format's length fields.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// An attribute (or a nest with everything in it) longer than a u16 length can say.
    #[error("netlink attribute {kind:#x} would be {len} bytes (at most 65535)")]
    AttributeTooLong {
        /// Attribute type (flags included).
        kind: u16,
        /// Its length with header.
        len: usize,
    },
    /// A message longer than [`MAX_MESSAGE_BYTES`].
    #[error("netlink message would be {0} bytes (at most {MAX_MESSAGE_BYTES})")]
    MessageTooLong(usize),
    /// `end_nest` without `begin_nest`, or `finish` with a nest still open.
    #[error("unbalanced netlink attribute nesting")]
    UnbalancedNest,
}

/// `n` rounded up to the 4-byte alignment of messages and attributes.
pub fn align4(n: usize) -> usize {
    n.saturating_add(3) & !3
}

/// The nfnetlink message type of message `msg` of subsystem `subsys`.
pub fn nfnl_type(subsys: u16, msg: u16) -> u16 {
    (subsys << 8) | (msg & 0xff)
}

/// Builds one netlink message (or a bare attribute list) with attributes and nests.
///
/// Errors do not interrupt the chain: the first one is kept, nothing more is written for the
/// offending call, and [`Builder::finish`] returns it, so a malformed message is never handed
/// out.
#[derive(Debug)]
pub struct Builder {
    buf: Vec<u8>,
    /// Whether `buf` starts with an `nlmsghdr` whose length `finish` fills in.
    message: bool,
    nests: Vec<usize>,
    error: Option<EncodeError>,
}

impl Builder {
    /// A message of type `ty` with `flags` and sequence `seq`, with an `nfgenmsg` header
    /// (`family`, version 0, `res_id` in network order).
    pub fn new(ty: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Self {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.push(family);
        buf.push(NFNETLINK_V0);
        buf.extend_from_slice(&res_id.to_be_bytes());
        Self {
            buf,
            message: true,
            nests: Vec::new(),
            error: None,
        }
    }

    /// A bare attribute list (no headers), e.g. the value of a nest assembled separately.
    pub fn attributes() -> Self {
        Self {
            buf: Vec::new(),
            message: false,
            nests: Vec::new(),
            error: None,
        }
    }

    fn fail(&mut self, e: EncodeError) {
        self.error.get_or_insert(e);
    }

    /// Append attribute `kind` (written as given, flags included) with `value`.
    pub fn attr(&mut self, kind: u16, value: &[u8]) -> &mut Self {
        let len = NLA_HDRLEN + value.len();
        let Ok(len16) = u16::try_from(len) else {
            self.fail(EncodeError::AttributeTooLong { kind, len });
            return self;
        };
        self.buf.extend_from_slice(&len16.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(value);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Append a NUL-terminated string attribute.
    pub fn attr_strz(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = Vec::with_capacity(s.len() + 1);
        v.extend_from_slice(s.as_bytes());
        v.push(0);
        self.attr(kind, &v)
    }

    /// Append attribute `kind` with a big-endian u32 value.
    pub fn attr_be32(&mut self, kind: u16, value: u32) -> &mut Self {
        self.attr(kind, &value.to_be_bytes())
    }

    /// Append already encoded attributes as they are (e.g. copied from a dump).
    pub fn raw(&mut self, encoded: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(encoded);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Open nest `kind` (`NLA_F_NESTED` is added); attributes until [`Builder::end_nest`] go
    /// inside it.
    pub fn begin_nest(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    /// Close the innermost open nest.
    pub fn end_nest(&mut self) -> &mut Self {
        let Some(start) = self.nests.pop() else {
            self.fail(EncodeError::UnbalancedNest);
            return self;
        };
        let len = self.buf.len() - start;
        match u16::try_from(len) {
            Ok(l) => self.buf[start..start + 2].copy_from_slice(&l.to_ne_bytes()),
            Err(_) => {
                let kind = u16::from_ne_bytes([self.buf[start + 2], self.buf[start + 3]]);
                self.fail(EncodeError::AttributeTooLong { kind, len });
            }
        }
        self
    }

    /// Bytes written so far (message headers included).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Nothing written yet (only possible for [`Builder::attributes`]).
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The finished bytes (the message length filled in), or the first encoding error. The
    /// builder is left empty.
    pub fn finish(&mut self) -> Result<Vec<u8>, EncodeError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        if !self.nests.is_empty() {
            return Err(EncodeError::UnbalancedNest);
        }
        let mut buf = std::mem::take(&mut self.buf);
        if self.message {
            let len = buf.len();
            let len32 = u32::try_from(len)
                .ok()
                .filter(|_| len <= MAX_MESSAGE_BYTES)
                .ok_or(EncodeError::MessageTooLong(len))?;
            buf[0..4].copy_from_slice(&len32.to_ne_bytes());
        }
        Ok(buf)
    }
}

/// `N` bytes at `off`, or why not.
fn array<const N: usize>(b: &[u8], off: usize, what: &'static str) -> Result<[u8; N], DecodeError> {
    b.get(off..off.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(DecodeError::Short {
            what,
            need: off.saturating_add(N),
            got: b.len(),
        })
}

/// Split the next length-prefixed unit off `rest`: its header (`hdr_len` bytes) and its body
/// (up to the `len` the header claims), then skip the padding. A length below the header or
/// beyond `rest` empties `rest` and is `Err((claimed, available))`.
#[allow(clippy::type_complexity)]
fn take<'a>(
    rest: &mut &'a [u8],
    hdr_len: usize,
    len: usize,
) -> Result<(&'a [u8], &'a [u8]), (usize, usize)> {
    let b = *rest;
    if len < hdr_len || len > b.len() {
        *rest = &[];
        return Err((len, b.len()));
    }
    *rest = b.get(align4(len)..).unwrap_or(&[]);
    Ok((&b[..hdr_len], &b[hdr_len..len]))
}

/// One attribute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Type without `NLA_F_NESTED`/`NLA_F_NET_BYTEORDER`.
    pub ty: u16,
    /// The type field as sent (flags kept), to copy the attribute as it is.
    pub raw_ty: u16,
    /// The value (padding excluded).
    pub value: &'a [u8],
}

impl<'a> Attr<'a> {
    /// Whether `NLA_F_NESTED` is set.
    pub fn is_nested(&self) -> bool {
        self.raw_ty & NLA_F_NESTED != 0
    }

    /// The attributes inside (a nest's value).
    pub fn nested(&self) -> Attrs<'a> {
        attrs(self.value)
    }

    /// The first byte.
    pub fn u8(&self) -> Result<u8, DecodeError> {
        Ok(array::<1>(self.value, 0, "u8 attribute")?[0])
    }

    /// A big-endian u16 (the first two bytes).
    pub fn be16(&self) -> Result<u16, DecodeError> {
        array(self.value, 0, "be16 attribute").map(u16::from_be_bytes)
    }

    /// A big-endian u32 (the first four bytes).
    pub fn be32(&self) -> Result<u32, DecodeError> {
        array(self.value, 0, "be32 attribute").map(u32::from_be_bytes)
    }

    /// A big-endian u64 (the first eight bytes).
    pub fn be64(&self) -> Result<u64, DecodeError> {
        array(self.value, 0, "be64 attribute").map(u64::from_be_bytes)
    }

    /// The value up to its first NUL, when it is UTF-8.
    pub fn str(&self) -> Option<&'a str> {
        let v = self.value.split(|b| *b == 0).next().unwrap_or(self.value);
        std::str::from_utf8(v).ok()
    }

    /// The attribute encoded again (header, value, padding), flags kept.
    pub fn encode_into(&self, b: &mut Builder) {
        b.attr(self.raw_ty, self.value);
    }
}

/// Iterates the attributes of a buffer. A malformed attribute yields one error and ends the
/// iteration (what follows it cannot be located); fewer than 4 trailing bytes are padding.
#[derive(Clone, Debug)]
pub struct Attrs<'a> {
    rest: &'a [u8],
}

/// The attributes in `buf`.
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { rest: buf }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        if b.len() < NLA_HDRLEN {
            // Padding, not an attribute.
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([b[0], b[1]]));
        Some(
            take(&mut self.rest, NLA_HDRLEN, len)
                .map(|(head, value)| {
                    let raw_ty = u16::from_ne_bytes([head[2], head[3]]);
                    Attr {
                        ty: raw_ty & NLA_TYPE_MASK,
                        raw_ty,
                        value,
                    }
                })
                .map_err(|(claimed, available)| DecodeError::TruncatedAttribute {
                    claimed,
                    available,
                }),
        )
    }
}

/// The value of the first attribute of type `ty` in an already split list.
pub fn find<'a>(list: &[Attr<'a>], ty: u16) -> Option<&'a [u8]> {
    list.iter().find(|a| a.ty == ty).map(|a| a.value)
}

/// The `nfgenmsg` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NfGenMsg {
    /// Address family (`AF_*`/`NFPROTO_*`).
    pub family: u8,
    /// Always [`NFNETLINK_V0`].
    pub version: u8,
    /// Resource id (queue number, log group, subsystem of a batch), host order.
    pub res_id: u16,
}

/// One message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Msg<'a> {
    /// `nlmsg_type` as sent (for nfnetlink: subsystem << 8 | message).
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid`.
    pub pid: u32,
    /// Everything after the netlink header (padding excluded).
    pub payload: &'a [u8],
}

impl<'a> Msg<'a> {
    /// The nfnetlink view: the `nfgenmsg` header and the attributes after it.
    pub fn nfgen(&self) -> Result<(NfGenMsg, Attrs<'a>), DecodeError> {
        let h: [u8; NFGEN_HDRLEN] = array(self.payload, 0, "nfgenmsg")?;
        Ok((
            NfGenMsg {
                family: h[0],
                version: h[1],
                res_id: u16::from_be_bytes([h[2], h[3]]),
            },
            attrs(&self.payload[NFGEN_HDRLEN..]),
        ))
    }

    /// For an `NLMSG_ERROR`: the outcome it reports.
    pub fn ack(&self) -> Result<Ack, DecodeError> {
        parse_ack(self)
    }
}

/// Iterates the messages of a receive buffer (one datagram may carry several). A message whose
/// length does not fit yields one error and ends the iteration; fewer than 16 trailing bytes are
/// ignored.
#[derive(Clone, Debug)]
pub struct Messages<'a> {
    rest: &'a [u8],
}

/// The messages in `buf`.
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages { rest: buf }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<Msg<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        let b = self.rest;
        if b.len() < NLMSG_HDRLEN {
            // Padding, not a message.
            return None;
        }
        let len = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize;
        Some(
            take(&mut self.rest, NLMSG_HDRLEN, len)
                .map(|(h, payload)| Msg {
                    ty: u16::from_ne_bytes([h[4], h[5]]),
                    flags: u16::from_ne_bytes([h[6], h[7]]),
                    seq: u32::from_ne_bytes([h[8], h[9], h[10], h[11]]),
                    pid: u32::from_ne_bytes([h[12], h[13], h[14], h[15]]),
                    payload,
                })
                .map_err(|(claimed, available)| DecodeError::TruncatedMessage {
                    claimed,
                    available,
                }),
        )
    }
}

/// What an `NLMSG_ERROR` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    /// 0 for an acknowledgement, else the positive errno.
    pub errno: i32,
    /// The sequence number of the request it answers (from the echoed request header; the
    /// error message's own when the echo is missing).
    pub seq: u32,
    /// The kernel's extended-ack text, when it sent one.
    pub text: Option<String>,
}

fn parse_ack(m: &Msg<'_>) -> Result<Ack, DecodeError> {
    let code = i32::from_ne_bytes(array(m.payload, 0, "NLMSG_ERROR code")?);
    let echo = m.payload.get(4..).unwrap_or(&[]);
    // Why: the kernel echoes the request's header (its seq is the one we track) and, without
    // NETLINK_CAP_ACK, the whole request after it.
    let seq = array(echo, 8, "echoed header")
        .map(u32::from_ne_bytes)
        .unwrap_or(m.seq);
    let mut text = None;
    if m.flags & NLM_F_ACK_TLVS != 0 {
        let echoed_len = if m.flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            array(echo, 0, "echoed header").map_or(NLMSG_HDRLEN, |l| u32::from_ne_bytes(l) as usize)
        };
        let tlvs = echo.get(align4(echoed_len)..).unwrap_or(&[]);
        text = attrs(tlvs)
            .map_while(Result::ok)
            .find(|a| a.ty == NLMSGERR_ATTR_MSG)
            .and_then(|a| a.str())
            .map(str::to_owned);
    }
    Ok(Ack {
        errno: code.saturating_abs(),
        seq,
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn header_layout_is_exact() {
        let m = Builder::new(0x0302, NLM_F_REQUEST | NLM_F_ACK, 7, 2, 4210)
            .attr(1, &[1, 0, 0, 0])
            .finish()
            .unwrap();
        assert_eq!(m.len(), NLMSG_HDRLEN + NFGEN_HDRLEN + NLA_HDRLEN + 4);
        assert_eq!(&m[0..4], &(m.len() as u32).to_ne_bytes());
        assert_eq!(&m[4..6], &0x0302u16.to_ne_bytes());
        assert_eq!(&m[6..8], &5u16.to_ne_bytes());
        assert_eq!(&m[8..12], &7u32.to_ne_bytes());
        assert_eq!(&m[12..16], &[0; 4]);
        assert_eq!(&m[16..20], &[2, 0, 0x10, 0x72]);
        assert_eq!(&m[20..22], &8u16.to_ne_bytes());
        let msgs: Vec<_> = messages(&m).collect();
        assert_eq!(msgs.len(), 1);
        let msg = msgs[0].clone().unwrap();
        assert_eq!((msg.ty, msg.flags, msg.seq, msg.pid), (0x0302, 5, 7, 0));
        let (g, a) = msg.nfgen().unwrap();
        assert_eq!(
            g,
            NfGenMsg {
                family: 2,
                version: 0,
                res_id: 4210
            }
        );
        let got: Vec<_> = a.map(|a| a.map(|a| (a.raw_ty, a.value.to_vec()))).collect();
        assert_eq!(got, vec![Ok((1, vec![1, 0, 0, 0]))]);
    }

    #[test]
    fn values_are_padded_and_nests_hold_their_length() {
        let b = Builder::attributes()
            .attr_strz(1, "t")
            .begin_nest(3)
            .begin_nest(1)
            .attr_be32(1, 0xc000_0200)
            .end_nest()
            .attr(2, &[9])
            .end_nest()
            .finish()
            .unwrap();
        let want = [
            &[6u8, 0, 1, 0, b't', 0, 0, 0][..],
            &[4 + 12 + 8, 0, 3, 0x80],
            &[12, 0, 1, 0x80, 8, 0, 1, 0, 0xc0, 0, 2, 0],
            &[5, 0, 2, 0, 9, 0, 0, 0],
        ]
        .concat();
        if cfg!(target_endian = "little") {
            assert_eq!(b, want);
        }
        let top: Vec<_> = attrs(&b).map(Result::unwrap).collect();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].str(), Some("t"));
        assert!(top[1].is_nested());
        let inner: Vec<_> = top[1].nested().map(Result::unwrap).collect();
        assert_eq!(inner[1].u8(), Ok(9));
        let deepest: Vec<_> = inner[0].nested().map(Result::unwrap).collect();
        assert_eq!(deepest[0].be32(), Ok(0xc000_0200));
    }

    #[test]
    fn oversized_attributes_and_nests_are_refused_not_truncated() {
        let big = vec![0u8; MAX_ATTR_VALUE_BYTES + 1];
        assert_eq!(
            Builder::new(1, 0, 0, 0, 0).attr(7, &big).finish(),
            Err(EncodeError::AttributeTooLong {
                kind: 7,
                len: u16::MAX as usize + 1
            })
        );
        // The largest value that fits is fine.
        let fits = vec![0u8; MAX_ATTR_VALUE_BYTES];
        let m = Builder::attributes().attr(7, &fits).finish().unwrap();
        assert_eq!(attrs(&m).next().unwrap().unwrap().value.len(), fits.len());
        // A nest whose content overflows its u16 length.
        let half = vec![0u8; 40_000];
        let e = Builder::attributes()
            .begin_nest(3)
            .attr(1, &half)
            .attr(1, &half)
            .end_nest()
            .finish();
        assert!(matches!(
            e,
            Err(EncodeError::AttributeTooLong { kind: 0x8003, .. })
        ));
        assert_eq!(
            Builder::attributes().end_nest().finish(),
            Err(EncodeError::UnbalancedNest)
        );
        assert_eq!(
            Builder::attributes().begin_nest(1).finish(),
            Err(EncodeError::UnbalancedNest)
        );
    }

    #[test]
    fn truncated_and_lying_attributes_are_errors() {
        let good = Builder::attributes()
            .attr(1, b"abcdef")
            .attr(2, &[1, 2, 3, 4])
            .finish()
            .unwrap();
        // Every cut: the iteration ends, with an error when a header claims more than is there.
        for cut in 0..good.len() {
            let got: Vec<_> = attrs(&good[..cut]).collect();
            assert!(got.len() <= 2, "cut {cut}");
            if (4..10).contains(&cut) || (16..20).contains(&cut) {
                assert!(
                    matches!(
                        got.last(),
                        Some(Err(DecodeError::TruncatedAttribute { .. }))
                    ),
                    "cut {cut}: {got:?}"
                );
            }
        }
        // A length below the header size, and one beyond the buffer.
        let mut under = good.clone();
        under[0..2].copy_from_slice(&3u16.to_ne_bytes());
        assert_eq!(
            attrs(&under).next(),
            Some(Err(DecodeError::TruncatedAttribute {
                claimed: 3,
                available: good.len()
            }))
        );
        let mut over = good.clone();
        over[0..2].copy_from_slice(&0xffffu16.to_ne_bytes());
        let mut it = attrs(&over);
        assert!(matches!(
            it.next(),
            Some(Err(DecodeError::TruncatedAttribute {
                claimed: 0xffff,
                ..
            }))
        ));
        assert_eq!(it.next(), None, "nothing after a malformed attribute");
        // A lying attribute inside a nest is reported when the nest is read.
        let nest = Builder::attributes()
            .begin_nest(1)
            .raw(&[200, 0, 1, 0, 0, 0, 0, 0])
            .end_nest()
            .finish()
            .unwrap();
        let outer = attrs(&nest).next().unwrap().unwrap();
        assert!(matches!(
            outer.nested().next(),
            Some(Err(DecodeError::TruncatedAttribute { claimed: 200, .. }))
        ));
        // Integer accessors check the value's size.
        let short = Attr {
            ty: 1,
            raw_ty: 1,
            value: &[1, 2, 3],
        };
        assert_eq!(
            short.be32(),
            Err(DecodeError::Short {
                what: "be32 attribute",
                need: 4,
                got: 3
            })
        );
        assert_eq!(short.be16(), Ok(0x0102));
        assert!(short.be64().is_err());
    }

    #[test]
    fn truncated_and_lying_messages_are_errors() {
        let one = Builder::new(0x0100, 0, 1, 2, 0)
            .attr(1, &[0; 5])
            .finish()
            .unwrap();
        let mut two = one.clone();
        two.extend(&one);
        assert_eq!(messages(&two).filter(|m| m.is_ok()).count(), 2);
        for cut in 0..two.len() {
            let got: Vec<_> = messages(&two[..cut]).collect();
            let whole = cut / one.len();
            assert_eq!(got.iter().filter(|m| m.is_ok()).count(), whole, "cut {cut}");
        }
        let mut lying = one.clone();
        lying[0..4].copy_from_slice(&u32::MAX.to_ne_bytes());
        assert!(matches!(
            messages(&lying).next(),
            Some(Err(DecodeError::TruncatedMessage { .. }))
        ));
        lying[0..4].copy_from_slice(&4u32.to_ne_bytes());
        assert!(matches!(
            messages(&lying).next(),
            Some(Err(DecodeError::TruncatedMessage { claimed: 4, .. }))
        ));
        let no_nfgen = Msg {
            ty: 0,
            flags: 0,
            seq: 0,
            pid: 0,
            payload: &[1, 2],
        };
        assert!(no_nfgen.nfgen().is_err());
    }

    fn error_msg(code: i32, flags: u16, echo: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        let len = NLMSG_HDRLEN + 4 + echo.len() + tlvs.len();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&flags.to_ne_bytes());
        m.extend_from_slice(&99u32.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&code.to_ne_bytes());
        m.extend_from_slice(echo);
        m.extend_from_slice(tlvs);
        m
    }

    #[test]
    fn acks_and_errors_carry_errno_sequence_and_text() {
        let req = Builder::new(0x0a00, NLM_F_REQUEST | NLM_F_ACK, 42, 1, 0)
            .attr_strz(1, "t")
            .finish()
            .unwrap();
        let text = Builder::attributes()
            .attr_strz(NLMSGERR_ATTR_MSG, "File exists")
            .finish()
            .unwrap();
        // Capped (NETLINK_CAP_ACK): header only, then the text.
        let m = error_msg(-17, NLM_F_CAPPED | NLM_F_ACK_TLVS, &req[..16], &text);
        let msg = messages(&m).next().unwrap().unwrap();
        assert_eq!(
            msg.ack(),
            Ok(Ack {
                errno: 17,
                seq: 42,
                text: Some("File exists".into())
            })
        );
        // Not capped: the whole request is echoed before the text.
        let m = error_msg(-17, NLM_F_ACK_TLVS, &req, &text);
        let msg = messages(&m).next().unwrap().unwrap();
        assert_eq!(msg.ack().unwrap().text.as_deref(), Some("File exists"));
        // A plain ack, without TLVs: no text even when bytes follow.
        let m = error_msg(0, NLM_F_CAPPED, &req[..16], &text);
        let msg = messages(&m).next().unwrap().unwrap();
        assert_eq!(
            msg.ack(),
            Ok(Ack {
                errno: 0,
                seq: 42,
                text: None
            })
        );
        // No echo: the error's own sequence. No code: an error.
        let m = error_msg(-1, 0, &[], &[]);
        assert_eq!(messages(&m).next().unwrap().unwrap().ack().unwrap().seq, 99);
        let short = Msg {
            ty: NLMSG_ERROR,
            flags: 0,
            seq: 0,
            pid: 0,
            payload: &[1, 2],
        };
        assert!(short.ack().is_err());
    }

    /// A tree of attributes for the round-trip property.
    #[derive(Clone, Debug)]
    enum Node {
        Leaf(u16, Vec<u8>),
        Nest(u16, Vec<Node>),
    }

    fn node() -> impl Strategy<Value = Node> {
        let leaf = (0u16..0x3fff, proptest::collection::vec(any::<u8>(), 0..40))
            .prop_map(|(t, v)| Node::Leaf(t, v));
        leaf.prop_recursive(3, 24, 4, |inner| {
            (0u16..0x3fff, proptest::collection::vec(inner, 0..4))
                .prop_map(|(t, c)| Node::Nest(t, c))
        })
    }

    fn write(b: &mut Builder, n: &Node) {
        match n {
            Node::Leaf(t, v) => {
                b.attr(*t, v);
            }
            Node::Nest(t, c) => {
                b.begin_nest(*t);
                for n in c {
                    write(b, n);
                }
                b.end_nest();
            }
        }
    }

    fn check(a: &Attr<'_>, n: &Node) {
        match n {
            Node::Leaf(t, v) => {
                assert_eq!((a.ty, a.raw_ty, a.value), (*t, *t, v.as_slice()));
            }
            Node::Nest(t, c) => {
                assert_eq!((a.ty, a.is_nested()), (*t, true));
                let inner: Vec<_> = a.nested().collect::<Result<_, _>>().unwrap();
                assert_eq!(inner.len(), c.len());
                for (a, n) in inner.iter().zip(c) {
                    check(a, n);
                }
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..400)) {
            for m in messages(&b) {
                let Ok(m) = m else { continue };
                let _ = m.ack();
                if let Ok((_, a)) = m.nfgen() {
                    for a in a.flatten() {
                        let _ = (a.u8(), a.be16(), a.be32(), a.be64(), a.str());
                        for inner in a.nested() {
                            let _ = inner;
                        }
                    }
                }
            }
            for a in attrs(&b) {
                let _ = a;
            }
        }

        #[test]
        fn what_the_builder_writes_parses_back(
            ty in any::<u16>(),
            seq in any::<u32>(),
            family in any::<u8>(),
            res_id in any::<u16>(),
            tree in proptest::collection::vec(node(), 0..6),
        ) {
            let mut b = Builder::new(ty, NLM_F_REQUEST, seq, family, res_id);
            for n in &tree {
                write(&mut b, n);
            }
            let bytes = b.finish().unwrap();
            // Two messages back to back split apart again.
            let mut two = bytes.clone();
            two.extend(&bytes);
            let msgs: Vec<_> = messages(&two).collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(msgs.len(), 2);
            let m = msgs[1];
            prop_assert_eq!((m.ty, m.flags, m.seq), (ty, NLM_F_REQUEST, seq));
            let (g, a) = m.nfgen().unwrap();
            prop_assert_eq!((g.family, g.res_id), (family, res_id));
            let top: Vec<_> = a.collect::<Result<_, _>>().unwrap();
            prop_assert_eq!(top.len(), tree.len());
            for (a, n) in top.iter().zip(&tree) {
                check(a, n);
            }
        }
    }
}
