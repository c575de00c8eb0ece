//! The NFQUEUE protocol classifier: the kernel marks the first packets of flows the policy wants
//! classified by protocol rather than port, an `iptables-nft` NFQUEUE rule hands them to this
//! shell, and it decides each with the engine's first-payload sniffers and the policy's
//! application-protocol rules (accept, drop, or mark), failing open or closed as the policy says.
//! The verdict logic is pure; the netlink queue handling is the shell.
