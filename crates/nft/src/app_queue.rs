//! The contract between the emitted ruleset and the NFQUEUE classifier (`rampart-nfq`) for
//! application-protocol rules ([`rampart_ir::AppMatch`]).
//!
//! This kernel has no nft `queue` statement, so the ruleset *marks* the packets that
//! application-protocol rules must inspect and one `iptables-nft` rule (installed by
//! `rampart-nft-apply` next to the table) queues packets carrying that mark:
//! `iptables-nft -A <chain> -m mark --mark INSPECT_MARK/MARK_MASK -j NFQUEUE --queue-num
//! QUEUE_NUM [--queue-bypass]` (`--queue-bypass` when the policy fails open). The classifier
//! marks a connection it blocked with `BLOCKED_CT_MARK` in the conntrack mark, and the ruleset
//! drops packets of such connections before anything else in the application step.
//!
//! Only the bits in [`MARK_MASK`] are Rampart's; the others are left to whoever else uses marks
//! (Docker, WireGuard, policy routing).

/// Bits of the packet mark and conntrack mark that Rampart uses.
pub const MARK_MASK: u32 = 0x00f0_0000;
/// Packet mark: "send to the classifier".
pub const INSPECT_MARK: u32 = 0x0010_0000;
/// Conntrack mark: "the classifier blocked this connection".
pub const BLOCKED_CT_MARK: u32 = 0x0020_0000;
/// Conntrack mark: "the classifier accepted this connection; stop inspecting it".
pub const ACCEPTED_CT_MARK: u32 = 0x0030_0000;
/// The NFQUEUE number the classifier listens on.
pub const QUEUE_NUM: u16 = 4210;
