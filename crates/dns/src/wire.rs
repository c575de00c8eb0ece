//! DNS wire codec: a bounded parser for the parts of a message a filter decides on, and builders
//! for the responses the filter synthesises (NXDOMAIN, REFUSED, sinkhole, Extended DNS Errors).
//!
//! The parser never panics and never allocates more than the message length allows: names are
//! capped at 255 wire bytes and 127 labels, compression pointers must point strictly backwards
//! (so they cannot loop) and at most [`MAX_POINTER_HOPS`] are followed, record counts are
//! bounded by [`MAX_RECORDS`]. Problems are reported as [`Anomaly`] values (Suricata's
//! `dns` anomaly events are the model): fatal ones as the error, tolerated ones in
//! [`Message::anomalies`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Largest DNS message (TCP length prefix is 16 bits).
pub const MAX_MESSAGE_BYTES: usize = 65_535;
/// Largest encoded name (RFC 1035 §2.3.4).
pub const MAX_NAME_WIRE_BYTES: usize = 255;
/// Most labels a 255-byte name can hold (root excluded).
pub const MAX_LABELS: usize = 127;
/// Most compression pointers followed in one name.
pub const MAX_POINTER_HOPS: usize = 64;
/// Most resource records parsed from one message (all sections together).
pub const MAX_RECORDS: usize = 1024;
/// Most questions accepted (real clients send exactly one).
pub const MAX_QUESTIONS: usize = 4;

/// Record types the filter cares about by name.
pub mod rtype {
    /// IPv4 address.
    pub const A: u16 = 1;
    /// Name server.
    pub const NS: u16 = 2;
    /// Canonical name.
    pub const CNAME: u16 = 5;
    /// Start of authority.
    pub const SOA: u16 = 6;
    /// Null record (iodine's favourite).
    pub const NULL: u16 = 10;
    /// Pointer.
    pub const PTR: u16 = 12;
    /// Mail exchanger.
    pub const MX: u16 = 15;
    /// Text.
    pub const TXT: u16 = 16;
    /// IPv6 address.
    pub const AAAA: u16 = 28;
    /// Service locator.
    pub const SRV: u16 = 33;
    /// Delegation name.
    pub const DNAME: u16 = 39;
    /// EDNS pseudo-record.
    pub const OPT: u16 = 41;
    /// Service binding.
    pub const SVCB: u16 = 64;
    /// HTTPS service binding.
    pub const HTTPS: u16 = 65;
    /// Any (meta query).
    pub const ANY: u16 = 255;
}

/// Response codes used by the filter.
pub mod rcode {
    /// No error.
    pub const NOERROR: u8 = 0;
    /// Format error.
    pub const FORMERR: u8 = 1;
    /// Server failure.
    pub const SERVFAIL: u8 = 2;
    /// Name does not exist.
    pub const NXDOMAIN: u8 = 3;
    /// Not implemented.
    pub const NOTIMP: u8 = 4;
    /// Refused.
    pub const REFUSED: u8 = 5;
}

/// EDNS option code of Extended DNS Errors (RFC 8914).
pub const EDNS_OPTION_EDE: u16 = 15;

/// Something odd about a message. Fatal ones are returned as the parse error; the others are
/// collected in [`Message::anomalies`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Anomaly {
    /// The message ends inside a structure (header, name, record).
    Truncated,
    /// The message is longer than 65535 bytes.
    Oversized,
    /// A name is longer than 255 wire bytes.
    NameTooLong,
    /// A name has more than 127 labels.
    TooManyLabels,
    /// A compression pointer points at or after itself, or too many hops were followed.
    PointerLoop,
    /// A label length byte uses the reserved 0x40/0x80 types.
    BadLabelType,
    /// More questions than [`MAX_QUESTIONS`] or zero questions in a query.
    QuestionCount,
    /// More records than [`MAX_RECORDS`].
    TooManyRecords,
    /// A record's RDATA does not fit its declared type (A not 4 bytes, name overruns, ...).
    BadRdata,
    /// More than one OPT record, or OPT outside the additional section or not at the root.
    BadOpt,
    /// Bytes left after the last section.
    TrailingBytes,
    /// A label contains bytes outside letters, digits, `-` and `_` (kept, escaped as `\DDD`).
    OddLabelBytes,
}

impl Anomaly {
    /// Stable snake_case name for events and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Anomaly::Truncated => "truncated",
            Anomaly::Oversized => "oversized",
            Anomaly::NameTooLong => "name_too_long",
            Anomaly::TooManyLabels => "too_many_labels",
            Anomaly::PointerLoop => "pointer_loop",
            Anomaly::BadLabelType => "bad_label_type",
            Anomaly::QuestionCount => "question_count",
            Anomaly::TooManyRecords => "too_many_records",
            Anomaly::BadRdata => "bad_rdata",
            Anomaly::BadOpt => "bad_opt",
            Anomaly::TrailingBytes => "trailing_bytes",
            Anomaly::OddLabelBytes => "odd_label_bytes",
        }
    }
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A fatal parse failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed DNS message: {0}")]
pub struct ParseError(pub Anomaly);

/// The fixed 12-byte header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// Transaction id.
    pub id: u16,
    /// Flag word (QR, opcode, AA, TC, RD, RA, Z, AD, CD, RCODE).
    pub flags: u16,
    /// Question count.
    pub qdcount: u16,
    /// Answer count.
    pub ancount: u16,
    /// Authority count.
    pub nscount: u16,
    /// Additional count.
    pub arcount: u16,
}

impl Header {
    /// Whether this is a response.
    pub fn is_response(&self) -> bool {
        self.flags & 0x8000 != 0
    }
    /// The opcode (0 = QUERY).
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }
    /// Truncated flag.
    pub fn tc(&self) -> bool {
        self.flags & 0x0200 != 0
    }
    /// Recursion desired.
    pub fn rd(&self) -> bool {
        self.flags & 0x0100 != 0
    }
    /// The low 4 bits of the response code.
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xF) as u8
    }
}

/// A domain name in presentation form: lower-case, labels joined by `.`, no trailing dot, the
/// root as the empty string; bytes other than letters, digits, `-`, `_` and `*` escaped as `\DDD`
/// (so a label containing a dot cannot masquerade as two labels).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(pub String);

impl Name {
    /// The presentation text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str(".")
        } else {
            f.write_str(&self.0)
        }
    }
}

/// One question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    /// The queried name.
    pub name: Name,
    /// QTYPE.
    pub qtype: u16,
    /// QCLASS.
    pub qclass: u16,
}

/// Decoded RDATA of the types the filter inspects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// A target name (CNAME, NS, PTR, DNAME).
    Name(Name),
    /// MX preference and exchange.
    Mx(u16, Name),
    /// TXT character-strings (total bytes bounded by the record length).
    Txt(Vec<Vec<u8>>),
    /// SOA: only the MINIMUM field (negative caching needs it).
    Soa {
        /// MINIMUM (negative-answer TTL, RFC 2308).
        minimum: u32,
    },
    /// Anything else, kept as its length only (the bytes stay in the original message).
    Other(usize),
}

/// One resource record (not OPT).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name.
    pub name: Name,
    /// Type.
    pub rtype: u16,
    /// Class.
    pub class: u16,
    /// TTL in seconds.
    pub ttl: u32,
    /// Decoded data.
    pub data: RData,
    /// Byte offset of the TTL field in the message (the cache rewrites TTLs in place).
    pub ttl_offset: usize,
}

/// The EDNS OPT pseudo-record.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Opt {
    /// Requestor's UDP payload size.
    pub udp_size: u16,
    /// Upper 8 bits of the extended rcode.
    pub ext_rcode: u8,
    /// EDNS version.
    pub version: u8,
    /// DNSSEC OK flag.
    pub dnssec_ok: bool,
    /// Options as (code, data).
    pub options: Vec<(u16, Vec<u8>)>,
}

/// A parsed message.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Message {
    /// Header.
    pub header: Header,
    /// Questions.
    pub questions: Vec<Question>,
    /// Answer section.
    pub answers: Vec<Record>,
    /// Authority section.
    pub authority: Vec<Record>,
    /// Additional section (without OPT).
    pub additional: Vec<Record>,
    /// EDNS OPT, if present.
    pub opt: Option<Opt>,
    /// Byte offset just after the question section (responses copy the question bytes).
    pub question_end: usize,
    /// Tolerated anomalies, each at most once.
    pub anomalies: Vec<Anomaly>,
}

impl Message {
    /// The first question, if any.
    pub fn question(&self) -> Option<&Question> {
        self.questions.first()
    }

    /// The full response code including the EDNS extension bits.
    pub fn rcode(&self) -> u16 {
        let ext = self.opt.as_ref().map_or(0, |o| o.ext_rcode as u16);
        (ext << 4) | self.header.rcode() as u16
    }

    fn note(&mut self, anomaly: Anomaly) {
        if !self.anomalies.contains(&anomaly) {
            self.anomalies.push(anomaly);
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, Anomaly> {
        let b = *self.buf.get(self.pos).ok_or(Anomaly::Truncated)?;
        self.pos += 1;
        Ok(b)
    }
    fn u16(&mut self) -> Result<u16, Anomaly> {
        let hi = self.u8()? as u16;
        let lo = self.u8()? as u16;
        Ok((hi << 8) | lo)
    }
    fn u32(&mut self) -> Result<u32, Anomaly> {
        let hi = self.u16()? as u32;
        let lo = self.u16()? as u32;
        Ok((hi << 16) | lo)
    }
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], Anomaly> {
        let end = self.pos.checked_add(n).ok_or(Anomaly::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(Anomaly::Truncated)?;
        self.pos = end;
        Ok(s)
    }
}

fn is_plain_label_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'*'
}

/// Reads a possibly compressed name starting at `start`; returns the name, the offset after it
/// (in the original stream, not after a pointer target) and whether odd bytes were seen.
pub fn read_name(buf: &[u8], start: usize) -> Result<(Name, usize, bool), Anomaly> {
    let mut out = String::new();
    let mut pos = start;
    let mut end_after: Option<usize> = None;
    let mut wire_len = 1usize; // the root byte
    let mut labels = 0usize;
    let mut hops = 0usize;
    let mut odd = false;
    loop {
        let len = *buf.get(pos).ok_or(Anomaly::Truncated)?;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    let after = end_after.unwrap_or(pos + 1);
                    return Ok((Name(out), after, odd));
                }
                let n = len as usize;
                let label = buf.get(pos + 1..pos + 1 + n).ok_or(Anomaly::Truncated)?;
                wire_len += n + 1;
                labels += 1;
                if wire_len > MAX_NAME_WIRE_BYTES {
                    return Err(Anomaly::NameTooLong);
                }
                if labels > MAX_LABELS {
                    return Err(Anomaly::TooManyLabels);
                }
                if !out.is_empty() {
                    out.push('.');
                }
                for &b in label {
                    if is_plain_label_byte(b) {
                        out.push(b.to_ascii_lowercase() as char);
                    } else {
                        odd = true;
                        out.push('\\');
                        out.push((b'0' + b / 100) as char);
                        out.push((b'0' + (b / 10) % 10) as char);
                        out.push((b'0' + b % 10) as char);
                    }
                }
                pos += 1 + n;
            }
            0xC0 => {
                let lo = *buf.get(pos + 1).ok_or(Anomaly::Truncated)? as usize;
                let target = (((len & 0x3F) as usize) << 8) | lo;
                // Strictly backwards pointers cannot form a loop; the hop cap bounds work.
                if target >= pos || hops >= MAX_POINTER_HOPS {
                    return Err(Anomaly::PointerLoop);
                }
                hops += 1;
                if end_after.is_none() {
                    end_after = Some(pos + 2);
                }
                pos = target;
            }
            _ => return Err(Anomaly::BadLabelType),
        }
    }
}

fn read_record(r: &mut Reader<'_>, msg: &mut Message) -> Result<(Record, usize, usize), Anomaly> {
    let (name, after, odd) = read_name(r.buf, r.pos)?;
    if odd {
        msg.note(Anomaly::OddLabelBytes);
    }
    r.pos = after;
    let rtype = r.u16()?;
    let class = r.u16()?;
    let ttl_offset = r.pos;
    let ttl = r.u32()?;
    let rdlen = r.u16()? as usize;
    let rd_start = r.pos;
    let rdata = r.bytes(rdlen)?;
    let rd_end = r.pos;
    let data = match rtype {
        rtype::A => match <[u8; 4]>::try_from(rdata) {
            Ok(a) => RData::A(Ipv4Addr::from(a)),
            Err(_) => {
                msg.note(Anomaly::BadRdata);
                RData::Other(rdlen)
            }
        },
        rtype::AAAA => match <[u8; 16]>::try_from(rdata) {
            Ok(a) => RData::Aaaa(Ipv6Addr::from(a)),
            Err(_) => {
                msg.note(Anomaly::BadRdata);
                RData::Other(rdlen)
            }
        },
        rtype::CNAME | rtype::NS | rtype::PTR | rtype::DNAME => {
            match read_name(&r.buf[..rd_end], rd_start) {
                Ok((n, end, _)) if end == rd_end => RData::Name(n),
                _ => {
                    msg.note(Anomaly::BadRdata);
                    RData::Other(rdlen)
                }
            }
        }
        rtype::MX if rdlen >= 3 => {
            let pref = u16::from_be_bytes([rdata[0], rdata[1]]);
            match read_name(&r.buf[..rd_end], rd_start + 2) {
                Ok((n, end, _)) if end == rd_end => RData::Mx(pref, n),
                _ => {
                    msg.note(Anomaly::BadRdata);
                    RData::Other(rdlen)
                }
            }
        }
        rtype::SOA => {
            let names = read_name(&r.buf[..rd_end], rd_start)
                .and_then(|(_, e, _)| read_name(&r.buf[..rd_end], e));
            match names {
                Ok((_, e, _)) if e + 20 == rd_end => {
                    let m = &r.buf[rd_end - 4..rd_end];
                    RData::Soa {
                        minimum: u32::from_be_bytes([m[0], m[1], m[2], m[3]]),
                    }
                }
                _ => {
                    msg.note(Anomaly::BadRdata);
                    RData::Other(rdlen)
                }
            }
        }
        rtype::TXT => {
            let mut parts = Vec::new();
            let mut i = 0usize;
            let mut ok = true;
            while i < rdata.len() {
                let n = rdata[i] as usize;
                match rdata.get(i + 1..i + 1 + n) {
                    Some(s) => parts.push(s.to_vec()),
                    None => {
                        ok = false;
                        break;
                    }
                }
                i += 1 + n;
            }
            if ok {
                RData::Txt(parts)
            } else {
                msg.note(Anomaly::BadRdata);
                RData::Other(rdlen)
            }
        }
        _ => RData::Other(rdlen),
    };
    Ok((
        Record {
            name,
            rtype,
            class,
            ttl,
            data,
            ttl_offset,
        },
        rd_start,
        rd_end,
    ))
}

fn parse_opt(rec: &Record, rdata: &[u8]) -> Result<Opt, Anomaly> {
    let mut options = Vec::new();
    let mut i = 0usize;
    while i < rdata.len() {
        let head = rdata.get(i..i + 4).ok_or(Anomaly::BadOpt)?;
        let code = u16::from_be_bytes([head[0], head[1]]);
        let len = u16::from_be_bytes([head[2], head[3]]) as usize;
        let data = rdata.get(i + 4..i + 4 + len).ok_or(Anomaly::BadOpt)?;
        options.push((code, data.to_vec()));
        i += 4 + len;
    }
    Ok(Opt {
        udp_size: rec.class,
        ext_rcode: (rec.ttl >> 24) as u8,
        version: (rec.ttl >> 16) as u8,
        dnssec_ok: rec.ttl & 0x8000 != 0,
        options,
    })
}

/// Parses a whole message. Fatal problems are errors; tolerated ones land in `anomalies`.
pub fn parse(buf: &[u8]) -> Result<Message, ParseError> {
    parse_inner(buf).map_err(ParseError)
}

fn parse_inner(buf: &[u8]) -> Result<Message, Anomaly> {
    if buf.len() > MAX_MESSAGE_BYTES {
        return Err(Anomaly::Oversized);
    }
    let mut r = Reader { buf, pos: 0 };
    let header = Header {
        id: r.u16()?,
        flags: r.u16()?,
        qdcount: r.u16()?,
        ancount: r.u16()?,
        nscount: r.u16()?,
        arcount: r.u16()?,
    };
    let mut msg = Message {
        header,
        ..Message::default()
    };
    if header.qdcount as usize > MAX_QUESTIONS {
        return Err(Anomaly::QuestionCount);
    }
    let total = header.ancount as usize + header.nscount as usize + header.arcount as usize;
    if total > MAX_RECORDS {
        return Err(Anomaly::TooManyRecords);
    }
    for _ in 0..header.qdcount {
        let (name, after, odd) = read_name(buf, r.pos)?;
        if odd {
            msg.note(Anomaly::OddLabelBytes);
        }
        r.pos = after;
        let qtype = r.u16()?;
        let qclass = r.u16()?;
        msg.questions.push(Question {
            name,
            qtype,
            qclass,
        });
    }
    msg.question_end = r.pos;
    for section in 0..3u8 {
        let count = match section {
            0 => header.ancount,
            1 => header.nscount,
            _ => header.arcount,
        };
        for _ in 0..count {
            let (rec, rd_start, rd_end) = read_record(&mut r, &mut msg)?;
            if rec.rtype == rtype::OPT {
                if section != 2 || msg.opt.is_some() || !rec.name.0.is_empty() {
                    msg.note(Anomaly::BadOpt);
                    continue;
                }
                match parse_opt(&rec, &buf[rd_start..rd_end]) {
                    Ok(opt) => msg.opt = Some(opt),
                    Err(a) => msg.note(a),
                }
                continue;
            }
            match section {
                0 => msg.answers.push(rec),
                1 => msg.authority.push(rec),
                _ => msg.additional.push(rec),
            }
        }
    }
    if r.pos != buf.len() {
        msg.note(Anomaly::TrailingBytes);
    }
    Ok(msg)
}

/// Reads just the header id and the first question without touching the rest (hot path).
pub fn peek_question(buf: &[u8]) -> Result<(u16, Question, usize), ParseError> {
    let head = buf.get(..12).ok_or(ParseError(Anomaly::Truncated))?;
    let id = u16::from_be_bytes([head[0], head[1]]);
    let qd = u16::from_be_bytes([head[4], head[5]]);
    if qd != 1 {
        return Err(ParseError(Anomaly::QuestionCount));
    }
    let (name, after, _) = read_name(buf, 12).map_err(ParseError)?;
    let t = buf
        .get(after..after + 4)
        .ok_or(ParseError(Anomaly::Truncated))?;
    Ok((
        id,
        Question {
            name,
            qtype: u16::from_be_bytes([t[0], t[1]]),
            qclass: u16::from_be_bytes([t[2], t[3]]),
        },
        after + 4,
    ))
}

/// Encodes a presentation-form name (as produced by [`read_name`]) into uncompressed wire
/// form. Returns `None` for names that are not valid (empty labels, over-long, bad escapes).
pub fn encode_name(name: &str, out: &mut Vec<u8>) -> Option<()> {
    let start = out.len();
    if !name.is_empty() {
        for label in split_labels(name)? {
            if label.is_empty() || label.len() > 63 {
                out.truncate(start);
                return None;
            }
            out.push(label.len() as u8);
            out.extend_from_slice(&label);
        }
    }
    out.push(0);
    if out.len() - start > MAX_NAME_WIRE_BYTES {
        out.truncate(start);
        return None;
    }
    Some(())
}

fn split_labels(name: &str) -> Option<Vec<Vec<u8>>> {
    let bytes = name.as_bytes();
    let mut labels = Vec::new();
    let mut cur = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                labels.push(std::mem::take(&mut cur));
                i += 1;
            }
            b'\\' => {
                let d = bytes.get(i + 1..i + 4)?;
                if !d.iter().all(u8::is_ascii_digit) {
                    return None;
                }
                let v =
                    (d[0] - b'0') as u32 * 100 + (d[1] - b'0') as u32 * 10 + (d[2] - b'0') as u32;
                cur.push(u8::try_from(v).ok()?);
                i += 4;
            }
            b => {
                cur.push(b);
                i += 1;
            }
        }
        if labels.len() > MAX_LABELS {
            return None;
        }
    }
    labels.push(cur);
    Some(labels)
}

/// Builds a query (used by tests, the benchmark stub and health probes).
pub fn build_query(id: u16, name: &str, qtype: u16, edns_udp_size: Option<u16>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(edns_udp_size.is_some() as u16).to_be_bytes());
    encode_name(name, &mut out)?;
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&1u16.to_be_bytes());
    if let Some(size) = edns_udp_size {
        push_opt(&mut out, size, &[]);
    }
    Some(out)
}

fn push_opt(out: &mut Vec<u8>, udp_size: u16, options: &[(u16, Vec<u8>)]) {
    out.push(0);
    out.extend_from_slice(&rtype::OPT.to_be_bytes());
    out.extend_from_slice(&udp_size.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    let len: usize = options.iter().map(|(_, d)| 4 + d.len()).sum();
    out.extend_from_slice(&(len.min(u16::MAX as usize) as u16).to_be_bytes());
    for (code, data) in options {
        out.extend_from_slice(&code.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
    }
}

/// An Extended DNS Error (RFC 8914) to attach when the client speaks EDNS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ede {
    /// INFO-CODE: 15 Blocked, 16 Censored, 17 Filtered, 18 Prohibited, ...
    pub code: u16,
    /// EXTRA-TEXT (UTF-8, truncated to 200 bytes).
    pub text: String,
}

/// EDE info codes (RFC 8914 §4).
pub mod ede {
    /// Other.
    pub const OTHER: u16 = 0;
    /// Blocked by the operator's policy.
    pub const BLOCKED: u16 = 15;
    /// Censored (external requirement).
    pub const CENSORED: u16 = 16;
    /// Filtered at the client's request.
    pub const FILTERED: u16 = 17;
    /// Prohibited (client not authorised).
    pub const PROHIBITED: u16 = 18;
    /// Not Supported (the operation, e.g. an opcode, is not supported).
    pub const NOT_SUPPORTED: u16 = 21;
    /// No Reachable Authority (every upstream failed or timed out).
    pub const NO_REACHABLE_AUTHORITY: u16 = 22;
    /// Network Error (an upstream answered with something unusable).
    pub const NETWORK_ERROR: u16 = 23;
}

/// Answer data for a synthesised response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SynthAnswer {
    /// An A record for the question name.
    A(Ipv4Addr),
    /// An AAAA record for the question name.
    Aaaa(Ipv6Addr),
}

/// Builds a response to `query` (whose raw bytes are `query_bytes`; the question section is
/// copied verbatim so 0x20 case randomisation survives) with `rcode`, the given answers (owner =
/// the question name via a compression pointer), and an OPT carrying `ede` when the query had
/// EDNS.
pub fn build_response(
    query: &Message,
    query_bytes: &[u8],
    rcode_value: u8,
    answers: &[SynthAnswer],
    ttl_s: u32,
    ede_opt: Option<&Ede>,
) -> Vec<u8> {
    let qsection = query_bytes.get(12..query.question_end).unwrap_or(&[]);
    let has_question = !query.questions.is_empty() && !qsection.is_empty();
    let mut out = Vec::with_capacity(64 + qsection.len());
    out.extend_from_slice(&query.header.id.to_be_bytes());
    // QR, opcode copied, RD copied, RA set, CD copied.
    let flags = 0x8000
        | (query.header.flags & 0x7800)
        | (query.header.flags & 0x0100)
        | 0x0080
        | (query.header.flags & 0x0010)
        | (rcode_value as u16 & 0xF);
    out.extend_from_slice(&flags.to_be_bytes());
    let qd = if has_question {
        query.header.qdcount
    } else {
        0
    };
    let an = if has_question { answers.len() } else { 0 };
    out.extend_from_slice(&qd.to_be_bytes());
    out.extend_from_slice(&(an as u16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(query.opt.is_some() as u16).to_be_bytes());
    if has_question {
        out.extend_from_slice(qsection);
        for a in answers {
            out.extend_from_slice(&[0xC0, 0x0C]);
            let (t, data): (u16, Vec<u8>) = match a {
                SynthAnswer::A(ip) => (rtype::A, ip.octets().to_vec()),
                SynthAnswer::Aaaa(ip) => (rtype::AAAA, ip.octets().to_vec()),
            };
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&ttl_s.to_be_bytes());
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
    }
    if query.opt.is_some() {
        let mut options = Vec::new();
        if let Some(e) = ede_opt {
            let mut data = e.code.to_be_bytes().to_vec();
            let text = e.text.as_bytes();
            let mut cut = text.len().min(200);
            while cut > 0 && !e.text.is_char_boundary(cut) {
                cut -= 1;
            }
            data.extend_from_slice(&text[..cut]);
            options.push((EDNS_OPTION_EDE, data));
        }
        push_opt(&mut out, 1232, &options);
    }
    out
}

/// Turns `response` into a truncated (TC=1) reply carrying only header and question, for UDP
/// clients whose buffer is too small (they retry over TCP).
pub fn truncate_response(response: &[u8], question_end: usize) -> Vec<u8> {
    let end = question_end.min(response.len());
    let mut out = response[..end].to_vec();
    if out.len() >= 12 {
        out[2] |= 0x02;
        for b in &mut out[6..12] {
            *b = 0;
        }
    }
    out
}

/// One record for [`MessageBuilder`]: owner, type, TTL, RDATA.
type BuiltRecord = (String, u16, u32, Vec<u8>);
/// EDNS options as (code, data).
type EdnsOptions = Vec<(u16, Vec<u8>)>;

/// Generic message encoder for tests and the stub upstream: uncompressed names, RDATA given as
/// bytes.

#[derive(Clone, Debug, Default)]
pub struct MessageBuilder {
    id: u16,
    flags: u16,
    question: Option<(String, u16)>,
    sections: [Vec<BuiltRecord>; 3],
    opt: Option<(u16, EdnsOptions)>,
}

impl MessageBuilder {
    /// A message with this id and flag word.
    pub fn new(id: u16, flags: u16) -> Self {
        Self {
            id,
            flags,
            ..Self::default()
        }
    }
    /// Sets the question.
    pub fn question(mut self, name: &str, qtype: u16) -> Self {
        self.question = Some((name.to_string(), qtype));
        self
    }
    /// Adds a record to section 0 (answer), 1 (authority) or 2 (additional).
    pub fn record(
        mut self,
        section: usize,
        name: &str,
        rtype: u16,
        ttl: u32,
        rdata: Vec<u8>,
    ) -> Self {
        if let Some(s) = self.sections.get_mut(section) {
            s.push((name.to_string(), rtype, ttl, rdata));
        }
        self
    }
    /// Adds an OPT record.
    pub fn opt(mut self, udp_size: u16, options: Vec<(u16, Vec<u8>)>) -> Self {
        self.opt = Some((udp_size, options));
        self
    }
    /// Encodes; `None` when a name is invalid or the message exceeds 65535 bytes.
    pub fn build(&self) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        out.extend_from_slice(&self.id.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&(self.question.is_some() as u16).to_be_bytes());
        out.extend_from_slice(&(self.sections[0].len() as u16).to_be_bytes());
        out.extend_from_slice(&(self.sections[1].len() as u16).to_be_bytes());
        let ar = self.sections[2].len() + self.opt.is_some() as usize;
        out.extend_from_slice(&(ar as u16).to_be_bytes());
        if let Some((name, qtype)) = &self.question {
            encode_name(name, &mut out)?;
            out.extend_from_slice(&qtype.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
        }
        for section in &self.sections {
            for (name, t, ttl, data) in section {
                encode_name(name, &mut out)?;
                out.extend_from_slice(&t.to_be_bytes());
                out.extend_from_slice(&1u16.to_be_bytes());
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&u16::try_from(data.len()).ok()?.to_be_bytes());
                out.extend_from_slice(data);
            }
        }
        if let Some((size, options)) = &self.opt {
            push_opt(&mut out, *size, options);
        }
        (out.len() <= MAX_MESSAGE_BYTES).then_some(out)
    }
}

/// RDATA for a name-valued record (CNAME/NS/PTR), uncompressed.
pub fn name_rdata(name: &str) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    encode_name(name, &mut v)?;
    Some(v)
}

/// The EDE option of a parsed message, if any.
pub fn find_ede(msg: &Message) -> Option<Ede> {
    let opt = msg.opt.as_ref()?;
    let (_, data) = opt.options.iter().find(|(c, _)| *c == EDNS_OPTION_EDE)?;
    let code = u16::from_be_bytes([*data.first()?, *data.get(1)?]);
    Some(Ede {
        code,
        text: String::from_utf8_lossy(data.get(2..).unwrap_or(&[])).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_round_trip_and_question_peek() {
        let q = build_query(0x1234, "www.Example.com", rtype::AAAA, Some(1232)).unwrap();
        let m = parse(&q).unwrap();
        assert_eq!(m.header.id, 0x1234);
        assert!(m.header.rd());
        assert_eq!(m.questions[0].name.as_str(), "www.example.com");
        assert_eq!(m.questions[0].qtype, rtype::AAAA);
        assert_eq!(m.opt.as_ref().unwrap().udp_size, 1232);
        assert!(m.anomalies.is_empty());
        let (id, pq, end) = peek_question(&q).unwrap();
        assert_eq!(
            (id, pq, end),
            (0x1234, m.questions[0].clone(), m.question_end)
        );
    }

    #[test]
    fn compression_pointers_followed_and_loops_rejected() {
        // Response with answer owner = pointer to question, CNAME target compressed.
        let mut msg = build_query(1, "a.example.com", rtype::A, None).unwrap();
        msg[2] |= 0x80;
        msg[7] = 1; // ancount
        msg.extend_from_slice(&[
            0xC0, 0x0C, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6, 3, b'c', b'd', b'n', 0xC0, 0x0E,
        ]);
        let m = parse(&msg).unwrap();
        assert_eq!(m.answers[0].name.as_str(), "a.example.com");
        assert_eq!(
            m.answers[0].data,
            RData::Name(Name("cdn.example.com".into()))
        );
        // Self pointer.
        let mut bad = vec![0u8; 12];
        bad[5] = 1;
        bad.extend_from_slice(&[0xC0, 12, 0, 1, 0, 1]);
        assert_eq!(parse(&bad), Err(ParseError(Anomaly::PointerLoop)));
        // Forward pointer.
        let mut fwd = vec![0u8; 12];
        fwd[5] = 1;
        fwd.extend_from_slice(&[0xC0, 14, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&fwd), Err(ParseError(Anomaly::PointerLoop)));
    }

    #[test]
    fn long_names_and_label_types_rejected() {
        let mut m = vec![0u8; 12];
        m[5] = 1;
        for _ in 0..130 {
            m.extend_from_slice(&[1, b'a']);
        }
        m.push(0);
        m.extend_from_slice(&[0, 1, 0, 1]);
        assert_eq!(parse(&m), Err(ParseError(Anomaly::NameTooLong)));
        let mut b = vec![0u8; 12];
        b[5] = 1;
        b.extend_from_slice(&[0x41, 0, 0, 1, 0, 1]);
        assert_eq!(parse(&b), Err(ParseError(Anomaly::BadLabelType)));
    }

    #[test]
    fn odd_bytes_are_escaped_not_split() {
        let mut m = vec![0u8; 12];
        m[5] = 1;
        m.extend_from_slice(&[3, b'a', b'.', b'b', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1]);
        let p = parse(&m).unwrap();
        assert_eq!(p.questions[0].name.as_str(), "a\\046b.com");
        assert!(p.anomalies.contains(&Anomaly::OddLabelBytes));
        let mut enc = Vec::new();
        encode_name(p.questions[0].name.as_str(), &mut enc).unwrap();
        assert_eq!(&enc[..], &m[12..21]);
    }

    #[test]
    fn synthesised_response_carries_ede() {
        let q = build_query(7, "ads.example.net", rtype::A, Some(4096)).unwrap();
        let qm = parse(&q).unwrap();
        let ede_v = Ede {
            code: ede::BLOCKED,
            text: "rampart: list ads".into(),
        };
        let r = build_response(&qm, &q, rcode::NXDOMAIN, &[], 60, Some(&ede_v));
        let rm = parse(&r).unwrap();
        assert!(rm.header.is_response());
        assert_eq!(rm.rcode(), rcode::NXDOMAIN as u16);
        assert_eq!(rm.questions, qm.questions);
        assert_eq!(find_ede(&rm), Some(ede_v));
        let s = build_response(
            &qm,
            &q,
            rcode::NOERROR,
            &[SynthAnswer::A(Ipv4Addr::UNSPECIFIED)],
            60,
            None,
        );
        let sm = parse(&s).unwrap();
        assert_eq!(sm.answers[0].data, RData::A(Ipv4Addr::UNSPECIFIED));
        assert!(sm.anomalies.is_empty());
        let t = truncate_response(&s, sm.question_end);
        let tm = parse(&t).unwrap();
        assert!(tm.header.tc());
        assert!(tm.answers.is_empty());
    }
}
