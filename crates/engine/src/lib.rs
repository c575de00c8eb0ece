//! Rampart's userspace engine: the reference semantics of a policy, packet by packet. It owns
//! bounded zero-allocation packet decoders (link layers, IPv4/IPv6, TCP/UDP/ICMP, first-payload
//! protocol sniffers and the application-protocol labeller shared with the NFQUEUE classifier), streaming pcap/pcapng reading, a connection tracker modelled on
//! nf_conntrack, two rule matchers built from the same IR (a linear reference and a fast
//! interval/bit-vector classifier), token buckets, longest-prefix sets, capture replay
//! (`simulate`), per-rule explanations and the ClassBench harness. Non-goals: touching the
//! kernel, reading clocks (time is always a parameter) or files other than through the readers
//! it is handed; printing (the CLI renders).

#![deny(missing_docs)]

pub mod app;
pub mod classbench;
pub mod classifier;
pub mod conntrack;
mod cross;
pub mod decode;
pub mod engine;
pub mod explain;
pub mod hypersplit;
pub mod lpm;
pub mod pcap;
pub mod reasm;
pub mod simulate;
pub mod sniff;
mod tcp_window;
mod v4index;

/// Hash map with a fast, per-process seeded hasher (the engine's hot-path tables).
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub use classifier::PrefetchStage;
pub use engine::{
    AppConn, AppConnState, AppPayload, AppStep, Decision, Engine, EngineOptions, Explanation,
    L4Meta, MatcherKind, Mismatch, OwnerInfo, PacketMeta, Reason, RuleCheck, RuleConns, Step,
    MAX_METER_ENTRIES,
};
