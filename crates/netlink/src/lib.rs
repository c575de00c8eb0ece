//! Netlink plumbing shared by the shells that talk to the kernel's netfilter subsystems
//! (nftables batches, NFQUEUE, ctnetlink, NFLOG): message and attribute encoding with bounded
//! decoding, and the socket that carries them. It knows no nftables or queue semantics; those
//! stay with the crates that use it.
