//! The NFQUEUE protocol classifier ("protocol, not port"): the kernel ruleset marks the packets
//! of connections that application-protocol rules ([`rampart_ir::AppMatch`]) must inspect, one
//! `iptables-nft` NFQUEUE rule hands them to this crate, and it decides each packet with the
//! engine's decoders and payload labeller and the policy's application rules: accept, or drop
//! the packet and mark the connection blocked in conntrack so the kernel drops the rest (marks
//! and queue number per [`rampart_nft::app_queue`]). It owns the pure per-connection core
//! ([`core`], [`table`], [`flow`]: no I/O, time is a parameter), the netlink codecs
//! ([`netlink`]), the socket shell ([`shell`]) and the counters ([`metrics`]). Non-goals: the
//! nft side (marking rules, the NFQUEUE rule and fail-open on "no listener" are the emitter's
//! and nft-apply's), labelling payloads (the engine's), TCP stream reassembly and reject (a
//! rejecting rule drops).

#![deny(missing_docs)]

pub mod core;
pub mod flow;
pub mod metrics;
pub mod netlink;
pub mod shell;
pub mod table;

pub use crate::core::{
    BuildError, Classifier, Counters, Decision, Hook, Labeller, Limits, Orientation, Outcome,
    PacketIn, Verdict,
};
pub use flow::{Tuple, L4};

/// The engine's payload labeller ([`rampart_engine::app::label`]), the one the classifier uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineLabeller;

impl Labeller for EngineLabeller {
    fn label(&self, ip: &rampart_engine::decode::Ip<'_>) -> Option<rampart_ir::AppProtocol> {
        let (l4, payload) = rampart_engine::app::transport_payload(&ip.l4)?;
        rampart_engine::app::label(l4, payload)
    }
}
