//! The L2 guard: DHCP snooping (trusted/untrusted bridge ports, a persisted binding table learned
//! from DHCPACKs, per-port rate limits, DHCPv6/RA guard), Dynamic ARP Inspection against the
//! bindings and static entries, arpwatch-style flip-flop events, and an LLMNR/NBT-NS/mDNS poisoner
//! canary. Frame decoding and the binding/inspection decisions are pure; the shell owns the bridge-
//! family nftables table it emits and the packet sockets it reads.
