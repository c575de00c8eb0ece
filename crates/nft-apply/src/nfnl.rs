//! nf_tables netlink messages, pure: building one `NFNL` batch (`NFNL_MSG_BATCH_BEGIN` …
//! `NFNL_MSG_BATCH_END`, one kernel transaction), encoding set elements (hash sets: one key per
//! element; interval sets: a start key and, unless the range runs to the end of the address
//! space, an end key flagged `NFT_SET_ELEM_INTERVAL_END`, exactly as nft 1.0.6 sends them),
//! parsing the kernel's replies (dumps, errors), and turning a dumped object back into the
//! message that creates it. No I/O: the socket lives in [`crate::nlsock`].
//!
//! Wire format (all netlink headers in host byte order, nf_tables attribute values in network
//! byte order): `nlmsghdr` (len u32, type u16, flags u16, seq u32, pid u32), `nfgenmsg`
//! (family u8, version u8, res_id be16), then attributes (len u16, type u16, value, padded to 4).

use std::net::IpAddr;

use rampart_netlink::wire::{
    self, Builder, EncodeError, NLA_F_NESTED, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REQUEST,
};

pub use rampart_netlink::wire::{Ack, Attr, NLMSG_DONE, NLMSG_ERROR};
pub use rampart_netlink::NETLINK_NETFILTER;

/// nf_tables' subsystem id.
pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

/// `NFPROTO_INET`.
pub const NFPROTO_INET: u8 = 1;

/// nf_tables message types (`enum nf_tables_msg_types`).
#[allow(missing_docs)]
pub mod msg {
    pub const NEWTABLE: u16 = 0;
    pub const GETTABLE: u16 = 1;
    pub const DELTABLE: u16 = 2;
    pub const NEWCHAIN: u16 = 3;
    pub const GETCHAIN: u16 = 4;
    pub const NEWRULE: u16 = 6;
    pub const GETRULE: u16 = 7;
    pub const NEWSET: u16 = 9;
    pub const GETSET: u16 = 10;
    pub const NEWSETELEM: u16 = 12;
    pub const GETSETELEM: u16 = 13;
    pub const NEWOBJ: u16 = 18;
    pub const GETOBJ: u16 = 19;
    pub const NEWFLOWTABLE: u16 = 22;
    pub const GETFLOWTABLE: u16 = 23;
}

// Attribute numbers (linux/netfilter/nf_tables.h).
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_RULE_TABLE: u16 = 1;
#[cfg(test)]
const NFTA_RULE_HANDLE: u16 = 3;
#[cfg(test)]
const NFTA_RULE_POSITION: u16 = 6;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_ID: u16 = 10;
const NFTA_SET_USERDATA: u16 = 13;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_FLAGS: u16 = 3;
const NFTA_SET_ELEM_EXPIRATION: u16 = 5;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_OBJ_TABLE: u16 = 1;

/// `NFT_SET_INTERVAL`.
pub const NFT_SET_INTERVAL: u32 = 0x4;
/// `NFT_SET_ELEM_INTERVAL_END`.
pub const NFT_SET_ELEM_INTERVAL_END: u32 = 0x1;
/// libnftnl's set user data: `NFTNL_UDATA_SET_MERGE_ELEMENTS` (nft's `auto-merge`).
const UDATA_SET_MERGE_ELEMENTS: u8 = 2;
/// libnftnl's element user data `NFTNL_UDATA_SET_ELEM_FLAGS` = `NFTNL_SET_ELEM_F_INTERVAL_OPEN`:
/// nft marks a range that runs to the end of the address space (it has no end element) so
/// that it lists as a prefix.
const ELEM_UDATA_INTERVAL_OPEN: [u8; 6] = [1, 4, 1, 0, 0, 0];

/// Why: a nested attribute's length is a u16, so one `NEWSETELEM` carries at most 64 KiB of
/// elements; nft stays well below too.
pub const MAX_ELEMENTS_BYTES_PER_MESSAGE: usize = 60_000;

/// An nf_tables message of type `ty` (subsystem added) under construction.
fn nft_msg(ty: u16, flags: u16, seq: u32, family: u8) -> Builder {
    Builder::new(
        wire::nfnl_type(NFNL_SUBSYS_NFTABLES, ty),
        flags,
        seq,
        family,
        0,
    )
}

/// The attributes in `buf`; `None` when one is malformed (length out of bounds).
pub fn attrs(buf: &[u8]) -> Option<Vec<Attr<'_>>> {
    wire::attrs(buf).collect::<Result<_, _>>().ok()
}

fn attr_str(list: &[Attr<'_>], ty: u16) -> Option<String> {
    list.iter()
        .find(|a| a.ty == ty)
        .and_then(|a| a.str())
        .map(str::to_string)
}

fn attr_be32(list: &[Attr<'_>], ty: u16) -> Option<u32> {
    list.iter().find(|a| a.ty == ty)?.be32().ok()
}

/// One netlink message from a reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// nf_tables message type (subsystem stripped; compare control messages such as
    /// `NLMSG_ERROR`/`NLMSG_DONE` with `raw_ty`, their numbers overlap).
    pub ty: u16,
    /// The full `nlmsg_type`.
    pub raw_ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// Sequence number.
    pub seq: u32,
    /// Payload after the netlink header (for nf_tables: `nfgenmsg` then attributes).
    pub payload: &'a [u8],
}

impl<'a> Message<'a> {
    fn wire(&self) -> wire::Msg<'a> {
        wire::Msg {
            ty: self.raw_ty,
            flags: self.flags,
            seq: self.seq,
            pid: 0,
            payload: self.payload,
        }
    }

    /// For an `NLMSG_ERROR`: the error (errno 0 = ack), the sequence number it answers, and
    /// the kernel's extended-ack text when there is one; `None` when malformed.
    pub fn ack(&self) -> Option<Ack> {
        self.wire().ack().ok()
    }
}

/// Split a receive buffer into messages; `None` when a length is out of bounds.
pub fn messages(buf: &[u8]) -> Option<Vec<Message<'_>>> {
    wire::messages(buf)
        .map(|m| {
            m.map(|m| Message {
                ty: if m.ty >> 8 == NFNL_SUBSYS_NFTABLES {
                    m.ty & 0xff
                } else {
                    m.ty
                },
                raw_ty: m.ty,
                flags: m.flags,
                seq: m.seq,
                payload: m.payload,
            })
        })
        .collect::<Result<_, _>>()
        .ok()
}

/// A request: `GET*` dump of the table's objects of one kind (`table` filter where the kernel
/// supports it), or of one set's elements.
pub fn dump_request(
    ty: u16,
    seq: u32,
    table: &str,
    set: Option<&str>,
) -> Result<Vec<u8>, EncodeError> {
    // Tables of every family (NFPROTO_UNSPEC): callers must see any other table; the rest
    // are inet objects.
    let family = if ty == msg::GETTABLE { 0 } else { NFPROTO_INET };
    let mut m = nft_msg(ty, NLM_F_REQUEST | NLM_F_DUMP, seq, family);
    match (ty, set) {
        (msg::GETSETELEM, Some(s)) => {
            m.attr_strz(NFTA_SET_ELEM_LIST_TABLE, table)
                .attr_strz(NFTA_SET_ELEM_LIST_SET, s);
        }
        (msg::GETTABLE, _) => {}
        _ => {
            m.attr_strz(1, table); // NFTA_{CHAIN,RULE,SET,OBJ}_TABLE
        }
    }
    m.finish()
}

/// What a dumped object is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dumped {
    /// Message type (`NEWTABLE`, `NEWCHAIN`, …).
    pub ty: u16,
    /// Family from `nfgenmsg`.
    pub family: u8,
    /// The object's table (for tables: its name).
    pub table: String,
    /// Attributes to send back (payload after `nfgenmsg`), handles and counters removed.
    pub attrs: Vec<u8>,
}

/// Attributes a creating message carries (what nft sends). Everything else the kernel reports
/// is left out: handles, use counts, positions, padding, base-chain counters, and attributes
/// newer kernels only report (a set's backend type and element count are refused on input).
fn kept(ty: u16, attr: u16) -> bool {
    match ty {
        msg::NEWTABLE => matches!(attr, 1 | 2 | 6), // NAME, FLAGS, USERDATA
        // TABLE, NAME, HOOK, POLICY, TYPE, USERDATA
        msg::NEWCHAIN => matches!(attr, 1 | 3 | 4 | 5 | 7 | 12),
        // TABLE, CHAIN, EXPRESSIONS, COMPAT, USERDATA
        msg::NEWRULE => matches!(attr, 1 | 2 | 4 | 5 | 7),
        // TABLE … DESC, TIMEOUT, GC_INTERVAL, USERDATA, OBJ_TYPE, EXPR, EXPRESSIONS
        msg::NEWSET => matches!(attr, 1..=9 | 11 | 12 | 13 | 15 | 17 | 18),
        msg::NEWSETELEM => matches!(attr, 1..=3), // LIST_TABLE, LIST_SET, LIST_ELEMENTS
        msg::NEWOBJ => matches!(attr, 1..=4 | 8), // TABLE, NAME, TYPE, DATA, USERDATA
        _ => false,
    }
}

/// Elements of a dumped `NEWSETELEM`, without `NFTA_SET_ELEM_EXPIRATION` (the remaining time
/// of a timed element; a new element starts from its timeout).
fn filter_elements(out: &mut Builder, value: &[u8]) -> Option<()> {
    for e in attrs(value)? {
        if e.ty != NFTA_LIST_ELEM {
            e.encode_into(out);
            continue;
        }
        out.begin_nest(NFTA_LIST_ELEM);
        for f in attrs(e.value)? {
            if f.ty != NFTA_SET_ELEM_EXPIRATION {
                f.encode_into(out);
            }
        }
        out.end_nest();
    }
    Some(())
}

/// A dumped nf_tables message as the object that creates it again; `None` when malformed.
pub fn parse_dumped(m: &Message<'_>) -> Option<Dumped> {
    let family = *m.payload.first()?;
    let list = attrs(m.payload.get(4..)?)?;
    let table_attr = match m.ty {
        msg::NEWTABLE => NFTA_TABLE_NAME,
        msg::NEWCHAIN => NFTA_CHAIN_TABLE,
        msg::NEWRULE => NFTA_RULE_TABLE,
        msg::NEWSET => NFTA_SET_TABLE,
        msg::NEWSETELEM => NFTA_SET_ELEM_LIST_TABLE,
        msg::NEWOBJ => NFTA_OBJ_TABLE,
        _ => 1,
    };
    let table = attr_str(&list, table_attr)?;
    let mut out = Builder::attributes();
    for a in &list {
        // An empty nest (a set without size, a set element dump of an empty set) is what
        // the kernel reports for "nothing"; on input it is invalid.
        if !kept(m.ty, a.ty) || (a.raw_ty & NLA_F_NESTED != 0 || a.ty == 9) && a.value.is_empty() {
            continue;
        }
        if m.ty == msg::NEWSETELEM && a.ty == NFTA_SET_ELEM_LIST_ELEMENTS {
            out.begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            filter_elements(&mut out, a.value)?;
            out.end_nest();
        } else {
            a.encode_into(&mut out);
        }
    }
    Some(Dumped {
        ty: m.ty,
        family,
        table,
        // Why it cannot fail: the output is a subset of attributes that fit before.
        attrs: out.finish().ok()?,
    })
}

/// `NFTA_TABLE_FLAGS` of a dumped table.
pub fn table_flags(d: &Dumped) -> Option<u32> {
    if d.ty != msg::NEWTABLE {
        return None;
    }
    attr_be32(&attrs(&d.attrs)?, 2)
}

impl Dumped {
    /// A `NEWSETELEM` that carries at least one element (anything else: true).
    pub fn has_elements(&self) -> bool {
        self.ty != msg::NEWSETELEM
            || attrs(&self.attrs)
                .and_then(|a| wire::find(&a, NFTA_SET_ELEM_LIST_ELEMENTS).map(|v| !v.is_empty()))
                .unwrap_or(false)
    }
}

/// What the element encoder needs to know about a set, read from its dumped `NEWSET`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetInfo {
    /// Set name.
    pub name: String,
    /// `NFTA_SET_FLAGS`.
    pub flags: u32,
    /// Key length in bytes (4: IPv4 address, 16: IPv6 address).
    pub key_len: u32,
    /// nft's `auto-merge` (set user data).
    pub auto_merge: bool,
}

impl SetInfo {
    /// From a dumped `NEWSET` (its attributes after `nfgenmsg`).
    pub fn from_dumped(d: &Dumped) -> Option<SetInfo> {
        if d.ty != msg::NEWSET {
            return None;
        }
        let list = attrs(&d.attrs)?;
        let mut auto_merge = false;
        if let Some(mut u) = wire::find(&list, NFTA_SET_USERDATA) {
            // libnftnl TLVs: type u8, length u8, value.
            while u.len() >= 2 {
                let (t, l) = (u[0], usize::from(u[1]));
                let Some(v) = u.get(2..2 + l) else { break };
                if t == UDATA_SET_MERGE_ELEMENTS && v.iter().any(|b| *b != 0) {
                    auto_merge = true;
                }
                u = &u[2 + l..];
            }
        }
        Some(SetInfo {
            name: attr_str(&list, NFTA_SET_NAME)?,
            flags: attr_be32(&list, NFTA_SET_FLAGS).unwrap_or(0),
            key_len: attr_be32(&list, NFTA_SET_KEY_LEN)?,
            auto_merge,
        })
    }

    /// Interval set?
    pub fn interval(&self) -> bool {
        self.flags & NFT_SET_INTERVAL != 0
    }
}

/// Why an element cannot be encoded (the caller falls back to nft).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementError(pub String);

/// An address or prefix as (network address as a big-endian integer, prefix length, key bytes).
fn parse_element(e: &str, key_len: u32) -> Result<(u128, u8), ElementError> {
    let bad = || {
        ElementError(format!(
            "set element `{e}` does not fit a {key_len}-byte key"
        ))
    };
    let (addr, len) = match e.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| bad())?)),
        None => (e, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let (value, bits) = match (addr, key_len) {
        (IpAddr::V4(a), 4) => (u128::from(u32::from(a)), 32u8),
        (IpAddr::V6(a), 16) => (u128::from(a), 128u8),
        _ => return Err(bad()),
    };
    let len = len.unwrap_or(bits);
    if len > bits {
        return Err(bad());
    }
    let host_bits = u32::from(bits - len);
    let host_mask = match host_bits {
        0 => 0,
        128.. => u128::MAX,
        b => (1u128 << b) - 1,
    };
    if value & host_mask != 0 {
        return Err(ElementError(format!("set element `{e}` has host bits set")));
    }
    Ok((value, len))
}

fn key_bytes(value: u128, key_len: u32) -> Vec<u8> {
    if key_len == 4 {
        (value as u32).to_be_bytes().to_vec()
    } else {
        value.to_be_bytes().to_vec()
    }
}

/// One kernel element: key, flags, user data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    /// Key bytes (network order).
    pub key: Vec<u8>,
    /// `NFTA_SET_ELEM_FLAGS` (0: attribute omitted, as nft does).
    pub flags: u32,
    /// Open interval marker (range to the end of the address space).
    pub open: bool,
}

/// The kernel elements for `elements` (addresses or `address/len`, as the emitter prints them)
/// in set `set`. Hash sets: one element per address (prefixes refused). Interval sets: the
/// elements are sorted, overlapping ones merged, adjacent ones merged when the set has
/// `auto-merge` (as nft does; kept apart otherwise, as nft does), and each range becomes a
/// start element and an end element (`INTERVAL_END`, key = first address after the range),
/// in ascending order; a range reaching the top of the address space has no end element and
/// carries nft's open-interval marker.
pub fn encode_elements(set: &SetInfo, elements: &[&str]) -> Result<Vec<Element>, ElementError> {
    if set.key_len != 4 && set.key_len != 16 {
        return Err(ElementError(format!(
            "set {} has a {}-byte key; only addresses are loaded over netlink",
            set.name, set.key_len
        )));
    }
    if !set.interval() {
        return elements
            .iter()
            .map(|e| {
                let (v, len) = parse_element(e, set.key_len)?;
                if u32::from(len) != set.key_len * 8 {
                    return Err(ElementError(format!(
                        "prefix `{e}` in hash set {}",
                        set.name
                    )));
                }
                Ok(Element {
                    key: key_bytes(v, set.key_len),
                    flags: 0,
                    open: false,
                })
            })
            .collect();
    }
    let bits = set.key_len * 8;
    let top: u128 = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    // Inclusive ranges.
    let mut ranges: Vec<(u128, u128)> = elements
        .iter()
        .map(|e| {
            let (v, len) = parse_element(e, set.key_len)?;
            let host_bits = bits - u32::from(len);
            let last = if host_bits == 128 {
                u128::MAX
            } else {
                v | ((1u128 << host_bits) - 1)
            };
            Ok((v, last))
        })
        .collect::<Result<_, ElementError>>()?;
    ranges.sort_unstable();
    let mut merged: Vec<(u128, u128)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some((_, pb)) if a <= *pb || (set.auto_merge && *pb != top && a == *pb + 1) => {
                *pb = (*pb).max(b);
            }
            _ => merged.push((a, b)),
        }
    }
    let mut out = Vec::with_capacity(merged.len() * 2);
    for (a, b) in merged {
        let open = b == top;
        out.push(Element {
            key: key_bytes(a, set.key_len),
            flags: 0,
            open,
        });
        if !open {
            out.push(Element {
                key: key_bytes(b + 1, set.key_len),
                flags: NFT_SET_ELEM_INTERVAL_END,
                open: false,
            });
        }
    }
    Ok(out)
}

fn put_element(b: &mut Builder, e: &Element) {
    b.begin_nest(NFTA_LIST_ELEM)
        .begin_nest(NFTA_SET_ELEM_KEY)
        .attr(NFTA_DATA_VALUE, &e.key)
        .end_nest();
    if e.flags != 0 {
        b.attr_be32(NFTA_SET_ELEM_FLAGS, e.flags);
    }
    if e.open {
        b.attr(NFTA_SET_ELEM_USERDATA, &ELEM_UDATA_INTERVAL_OPEN);
    }
    b.end_nest();
}

/// One batch (one kernel transaction) under construction.
#[derive(Debug)]
pub struct Batch {
    buf: Vec<u8>,
    seq: u32,
    last_start: Option<usize>,
    /// What each sequence number carries, for error messages (index: seq − first).
    pub what: Vec<String>,
    first_seq: u32,
    set_ids: u32,
    /// The first message that could not be encoded ([`Batch::finish`] reports it).
    error: Option<EncodeError>,
}

/// BATCH_BEGIN/END: their `nfgenmsg` `res_id` names the subsystem the batch is for.
fn batch_marker(ty: u16, seq: u32) -> Builder {
    Builder::new(ty, NLM_F_REQUEST, seq, 0, NFNL_SUBSYS_NFTABLES)
}

impl Batch {
    /// A batch whose messages are numbered from `first_seq` (BATCH_BEGIN takes it).
    pub fn new(first_seq: u32) -> Self {
        let mut b = Self {
            buf: Vec::new(),
            seq: first_seq.wrapping_add(1),
            last_start: None,
            what: vec!["batch begin".into()],
            first_seq,
            set_ids: 0,
            error: None,
        };
        b.append(batch_marker(NFNL_MSG_BATCH_BEGIN, first_seq).finish());
        b
    }

    fn append(&mut self, m: Result<Vec<u8>, EncodeError>) {
        match m {
            Ok(bytes) => self.buf.extend_from_slice(&bytes),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
    }

    fn push(&mut self, mut m: Builder, what: String) {
        self.last_start = Some(self.buf.len());
        self.append(m.finish());
        self.what.push(what);
        self.seq = self.seq.wrapping_add(1);
    }

    /// `NEWTABLE name` without `NLM_F_EXCL`: creates the table when absent, so the following
    /// delete cannot fail (the text transaction's `table inet t {}`).
    pub fn ensure_table(&mut self, family: u8, name: &str) {
        let mut m = nft_msg(
            msg::NEWTABLE,
            NLM_F_REQUEST | NLM_F_CREATE,
            self.seq,
            family,
        );
        m.attr_strz(NFTA_TABLE_NAME, name);
        self.push(m, format!("create table {name}"));
    }

    /// `DELTABLE name`.
    pub fn delete_table(&mut self, family: u8, name: &str) {
        let mut m = nft_msg(msg::DELTABLE, NLM_F_REQUEST, self.seq, family);
        m.attr_strz(NFTA_TABLE_NAME, name);
        self.push(m, format!("delete table {name}"));
    }

    /// Re-create a dumped object (rules are appended to their chain in the order given).
    pub fn recreate(&mut self, d: &Dumped) {
        let mut flags = NLM_F_REQUEST | NLM_F_CREATE;
        if d.ty == msg::NEWRULE {
            flags |= NLM_F_APPEND;
        }
        let mut m = nft_msg(d.ty, flags, self.seq, d.family);
        m.raw(&d.attrs);
        if d.ty == msg::NEWSET {
            // The kernel requires a batch-local set id (rules here refer to sets by name).
            self.set_ids += 1;
            m.attr_be32(NFTA_SET_ID, self.set_ids);
        }
        let (kind, name_attr) = match d.ty {
            msg::NEWTABLE => ("table", 1),
            msg::NEWCHAIN => ("chain", 3),
            msg::NEWRULE => ("rule in chain", 2),
            msg::NEWSET => ("set", 2),
            msg::NEWSETELEM => ("elements of set", 2),
            _ => ("object", 2),
        };
        let name = attrs(&d.attrs)
            .and_then(|a| attr_str(&a, name_attr))
            .unwrap_or_default();
        self.push(m, format!("{kind} {name} (table {})", d.table));
    }

    /// `NEWSETELEM` messages for `elements` of `set` (chunked below the nested-length limit).
    pub fn add_elements(&mut self, family: u8, table: &str, set: &str, elements: &[Element]) {
        let mut rest = elements;
        while !rest.is_empty() {
            let mut m = nft_msg(
                msg::NEWSETELEM,
                NLM_F_REQUEST | NLM_F_CREATE,
                self.seq,
                family,
            );
            m.attr_strz(NFTA_SET_ELEM_LIST_TABLE, table)
                .attr_strz(NFTA_SET_ELEM_LIST_SET, set)
                .begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS);
            let body_start = m.len();
            let mut n = 0;
            while n < rest.len() && m.len() - body_start < MAX_ELEMENTS_BYTES_PER_MESSAGE {
                put_element(&mut m, &rest[n]);
                n += 1;
            }
            m.end_nest();
            self.push(m, format!("{n} elements of set {set}"));
            rest = &rest[n..];
        }
    }

    /// Number of messages between BEGIN and END.
    pub fn len(&self) -> usize {
        self.what.len() - 1
    }

    /// No messages?
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sequence number of the BATCH_BEGIN message.
    pub fn first_seq(&self) -> u32 {
        self.first_seq
    }

    /// Close the batch: the last message asks for an ack (delivered only after the commit, so
    /// its arrival means every error of the batch has already been reported), then
    /// BATCH_END. Returns the bytes and the sequence number whose ack ends the exchange, or
    /// the first message that could not be encoded.
    pub fn finish(mut self) -> Result<(Vec<u8>, u32, Vec<String>), EncodeError> {
        let acked = self.seq.wrapping_sub(1);
        if let Some(s) = self.last_start {
            // nlmsg_flags sit at bytes 6..8 of the header.
            if let Some(f) = self.buf.get_mut(s + 6..s + 8) {
                let flags = u16::from_ne_bytes([f[0], f[1]]) | NLM_F_ACK;
                f.copy_from_slice(&flags.to_ne_bytes());
            }
        }
        let end = batch_marker(NFNL_MSG_BATCH_END, self.seq).finish();
        self.append(end);
        match self.error {
            Some(e) => Err(e),
            None => Ok((self.buf, acked, self.what)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(interval: bool, key_len: u32, auto_merge: bool) -> SetInfo {
        SetInfo {
            name: "s".into(),
            flags: if interval { NFT_SET_INTERVAL } else { 0 },
            key_len,
            auto_merge,
        }
    }

    fn keys(els: &[Element]) -> Vec<(String, u32, bool)> {
        els.iter()
            .map(|e| {
                let k = if e.key.len() == 4 {
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(e.key.as_slice()).unwrap())
                        .to_string()
                } else {
                    std::net::Ipv6Addr::from(<[u8; 16]>::try_from(e.key.as_slice()).unwrap())
                        .to_string()
                };
                (k, e.flags, e.open)
            })
            .collect()
    }

    #[test]
    fn interval_elements_match_what_nft_sends() {
        // `nft --debug=netlink` for { 192.0.2.0/25, 192.0.2.128/26, 198.51.100.7,
        // 203.0.113.0/24 } into an auto-merge set: 000200c0 : 0, c00200c0 : 1, 076433c6 : 0,
        // 086433c6 : 1, 007100cb : 0, 007200cb : 1.
        let s = info(true, 4, true);
        let e = encode_elements(
            &s,
            &[
                "203.0.113.0/24",
                "192.0.2.128/26",
                "198.51.100.7",
                "192.0.2.0/25",
            ],
        )
        .unwrap();
        assert_eq!(
            keys(&e),
            vec![
                ("192.0.2.0".into(), 0, false),
                ("192.0.2.192".into(), 1, false),
                ("198.51.100.7".into(), 0, false),
                ("198.51.100.8".into(), 1, false),
                ("203.0.113.0".into(), 0, false),
                ("203.0.114.0".into(), 1, false),
            ]
        );
        // Without auto-merge adjacent prefixes stay apart (end and start share a key), and a
        // range to the top of the space has no end element but the open marker.
        let s = info(true, 16, false);
        let e = encode_elements(&s, &["2001:db8:0:1::/64", "2001:db8::/64", "ffff::/16"]).unwrap();
        assert_eq!(
            keys(&e),
            vec![
                ("2001:db8::".into(), 0, false),
                ("2001:db8:0:1::".into(), 1, false),
                ("2001:db8:0:1::".into(), 0, false),
                ("2001:db8:0:2::".into(), 1, false),
                ("ffff::".into(), 0, true),
            ]
        );
        // Overlaps merge whatever the flag; ::/0 is one open element.
        let e = encode_elements(&s, &["2001:db8::/32", "2001:db8:1::/48"]).unwrap();
        assert_eq!(e.len(), 2);
        let e = encode_elements(&s, &["::/0"]).unwrap();
        assert_eq!(keys(&e), vec![("::".into(), 0, true)]);
    }

    #[test]
    fn hash_elements_refuse_prefixes_and_wrong_families() {
        let s = info(false, 16, false);
        let e = encode_elements(&s, &["2001:db8::1"]).unwrap();
        assert_eq!(keys(&e), vec![("2001:db8::1".into(), 0, false)]);
        assert!(encode_elements(&s, &["2001:db8::/64"]).is_err());
        assert!(encode_elements(&s, &["192.0.2.1"]).is_err());
        assert!(encode_elements(&info(true, 4, false), &["192.0.2.1/24"]).is_err());
        assert!(encode_elements(&info(true, 4, false), &["192.0.2.0/33"]).is_err());
        assert!(encode_elements(&info(false, 6, false), &["192.0.2.1"]).is_err());
        assert!(encode_elements(&s, &["x\"y"]).is_err());
    }

    #[test]
    fn batch_bytes_are_exact() {
        let s = info(true, 4, false);
        let els = encode_elements(&s, &["192.0.2.0/24"]).unwrap();
        let mut b = Batch::new(100);
        b.add_elements(NFPROTO_INET, "t", "s", &els);
        let (bytes, acked, what) = b.finish().unwrap();
        assert_eq!(acked, 101);
        assert_eq!(what, vec!["batch begin", "2 elements of set s"]);
        let mut want: Vec<u8> = Vec::new();
        let ne16 = |v: u16| v.to_ne_bytes();
        let ne32 = |v: u32| v.to_ne_bytes();
        // BATCH_BEGIN: len 20, type 0x10, flags REQUEST, seq 100, pid 0, nfgenmsg
        // (AF_UNSPEC, v0, res_id = htons(NFNL_SUBSYS_NFTABLES)).
        want.extend(ne32(20));
        want.extend(ne16(0x10));
        want.extend(ne16(1));
        want.extend(ne32(100));
        want.extend(ne32(0));
        want.extend([0, 0, 0, 10]);
        // NEWSETELEM (0x0a0c), REQUEST|CREATE|ACK, seq 101, family inet.
        let body: Vec<u8> = [
            // NFTA_SET_ELEM_LIST_TABLE "t\0" (len 6, padded to 8)
            &[6u8, 0, 1, 0, b't', 0, 0, 0][..],
            // NFTA_SET_ELEM_LIST_SET "s\0"
            &[6, 0, 2, 0, b's', 0, 0, 0],
            // NFTA_SET_ELEM_LIST_ELEMENTS (nested) len 4 + 16 + 24
            &[44, 0, 3, 0x80],
            // element 1: LIST_ELEM(len 16) > KEY(len 12) > DATA_VALUE(len 8) c0 00 02 00
            &[16, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 192, 0, 2, 0],
            // element 2: + FLAGS be32 1 (INTERVAL_END); key 192.0.3.0
            &[
                24, 0, 1, 0x80, 12, 0, 1, 0x80, 8, 0, 1, 0, 192, 0, 3, 0, 8, 0, 3, 0, 0, 0, 0, 1,
            ],
        ]
        .concat();
        want.extend(ne32(16 + 4 + body.len() as u32));
        want.extend(ne16(0x0a0c));
        want.extend(ne16(0x1 | 0x400 | 0x4));
        want.extend(ne32(101));
        want.extend(ne32(0));
        want.extend([1, 0, 0, 0]);
        want.extend(&body);
        // BATCH_END.
        want.extend(ne32(20));
        want.extend(ne16(0x11));
        want.extend(ne16(1));
        want.extend(ne32(102));
        want.extend(ne32(0));
        want.extend([0, 0, 0, 10]);
        if cfg!(target_endian = "little") {
            assert_eq!(bytes, want);
        }
        // Whatever the endianness, the bytes parse back.
        let msgs = messages(&bytes).unwrap();
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[1].ty, msg::NEWSETELEM);
        assert_eq!(msgs[1].seq, 101);
    }

    #[test]
    fn big_element_lists_are_chunked_below_the_nested_limit() {
        let s = info(false, 16, false);
        let addrs: Vec<String> = (0..10_000u32)
            .map(|i| format!("2001:db8::{:x}:{:x}", i >> 16, i & 0xffff))
            .collect();
        let refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let els = encode_elements(&s, &refs).unwrap();
        let mut b = Batch::new(1);
        b.add_elements(NFPROTO_INET, "t", "s", &els);
        let (bytes, _, _) = b.finish().unwrap();
        let msgs = messages(&bytes).unwrap();
        let mut total = 0;
        for m in &msgs[1..msgs.len() - 1] {
            let a = attrs(&m.payload[4..]).unwrap();
            let list = wire::find(&a, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
            assert!(list.len() < 65_535);
            total += attrs(list).unwrap().len();
        }
        assert_eq!(total, 10_000);
    }

    #[test]
    fn dumped_objects_lose_handles_positions_and_expirations() {
        // A dumped rule: TABLE "t", CHAIN "c", HANDLE, POSITION, USERDATA.
        let mut payload = vec![NFPROTO_INET, 0, 0, 0];
        payload.extend(
            Builder::attributes()
                .attr_strz(NFTA_RULE_TABLE, "t")
                .attr_strz(2, "c")
                .attr(NFTA_RULE_HANDLE, &7u64.to_be_bytes())
                .attr(NFTA_RULE_POSITION, &6u64.to_be_bytes())
                .attr(7, b"x")
                .finish()
                .unwrap(),
        );
        let m = Message {
            ty: msg::NEWRULE,
            raw_ty: 0x0a06,
            flags: 0,
            seq: 0,
            payload: &payload,
        };
        let d = parse_dumped(&m).unwrap();
        assert_eq!(d.table, "t");
        let kept: Vec<u16> = attrs(&d.attrs).unwrap().iter().map(|a| a.ty).collect();
        assert_eq!(kept, vec![1, 2, 7]);
        // A dumped element with an expiration keeps key and timeout only.
        let mut payload = vec![NFPROTO_INET, 0, 0, 0];
        payload.extend(
            Builder::attributes()
                .attr_strz(NFTA_SET_ELEM_LIST_TABLE, "t")
                .begin_nest(NFTA_SET_ELEM_LIST_ELEMENTS)
                .begin_nest(NFTA_LIST_ELEM)
                .attr(NFTA_SET_ELEM_KEY, &[1, 2, 3, 4])
                .attr(4, &60_000u64.to_be_bytes())
                .attr(NFTA_SET_ELEM_EXPIRATION, &5u64.to_be_bytes())
                .end_nest()
                .end_nest()
                .finish()
                .unwrap(),
        );
        let m = Message {
            ty: msg::NEWSETELEM,
            raw_ty: 0x0a0c,
            flags: 0,
            seq: 0,
            payload: &payload,
        };
        let d = parse_dumped(&m).unwrap();
        let top = attrs(&d.attrs).unwrap();
        let list = wire::find(&top, NFTA_SET_ELEM_LIST_ELEMENTS).unwrap();
        let e = attrs(list).unwrap();
        let inner: Vec<u16> = attrs(e[0].value).unwrap().iter().map(|a| a.ty).collect();
        assert_eq!(inner, vec![NFTA_SET_ELEM_KEY, 4]);
        // Malformed input is refused, not a panic.
        assert!(attrs(&[9, 0, 1, 0]).is_none());
        assert!(messages(&[40, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).is_none());
        let bad = Message {
            ty: msg::NEWRULE,
            raw_ty: 0,
            flags: 0,
            seq: 0,
            payload: &[1],
        };
        assert!(parse_dumped(&bad).is_none());
    }

    #[test]
    fn set_info_reads_flags_key_length_and_auto_merge() {
        let a = Builder::attributes()
            .attr_strz(NFTA_SET_TABLE, "t")
            .attr_strz(NFTA_SET_NAME, "zone_lan_v4")
            .attr_be32(NFTA_SET_FLAGS, NFT_SET_INTERVAL)
            .attr_be32(NFTA_SET_KEY_LEN, 4)
            .attr(
                NFTA_SET_USERDATA,
                &[0, 4, 1, 0, 0, 0, UDATA_SET_MERGE_ELEMENTS, 4, 1, 0, 0, 0],
            )
            .finish()
            .unwrap();
        let d = Dumped {
            ty: msg::NEWSET,
            family: NFPROTO_INET,
            table: "t".into(),
            attrs: a,
        };
        let s = SetInfo::from_dumped(&d).unwrap();
        assert_eq!(
            s,
            SetInfo {
                name: "zone_lan_v4".into(),
                flags: NFT_SET_INTERVAL,
                key_len: 4,
                auto_merge: true
            }
        );
    }
}
