//! `rampart-netlink` owns the netlink plumbing Rampart's kernel-facing shells share: the wire
//! format ([`wire`]: `nlmsghdr` and `nfgenmsg` headers, an attribute builder with nests that
//! refuses what its u16/u32 length fields cannot say, and message/attribute iterators that
//! check every length against the buffer holding it, so malformed input is an error value and
//! never a panic), `NLMSG_ERROR` acknowledgements with the kernel's extended-ack text, and one
//! raw `AF_NETLINK` socket ([`socket`]: open and bind, optionally inside a named network
//! namespace, buffer sizes and timeouts, send, bounded receive into the caller's buffer, and
//! request-and-wait-for-ack). The subsystems it carries (NFQUEUE and ctnetlink in
//! `rampart-nfq`, NFLOG and nf_tables batches in `rampart-nft-apply`) keep their message
//! types, attribute numbers and meanings in those crates. Non-goals: any subsystem's
//! semantics, multicast groups, `rtnetlink`, async I/O, and socket buffers of its own.

#![deny(missing_docs)]

pub mod socket;
pub mod wire;

pub use socket::{Socket, SocketError};
pub use wire::{
    align4, attrs, messages, nfnl_type, Ack, Attr, Attrs, Builder, DecodeError, EncodeError,
    Messages, Msg, NfGenMsg, NETLINK_NETFILTER,
};
