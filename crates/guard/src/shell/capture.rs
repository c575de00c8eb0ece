//! Packet input: one `AF_PACKET` socket per bridge port.
//!
//! Why AF_PACKET on the ports rather than NFLOG from the bridge table: packet taps run in
//! `__netif_receive_skb` before the bridge's rx handler, so the guard sees every frame that
//! *enters* a port — including the ones its own table then drops (rogue offers, spoofed ARP,
//! poisoner answers to the canary) — with the port known from the socket, without a log rule
//! per frame type, and without depending on how nfnetlink_log reports bridge ports. Sniffing
//! the bridge device itself would miss unicast between ports. Outgoing copies are skipped so
//! each frame is seen once, at its ingress port.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::GuardError;

/// Why: a standard Ethernet frame plus two VLAN tags; larger (jumbo, GRO-merged) frames are
/// truncated, and every decoder copes with truncation. DHCP, ARP and name-service messages
/// fit easily.
pub const MAX_FRAME_LEN: usize = 2048;

fn os(what: impl Into<String>) -> GuardError {
    GuardError::Socket {
        what: what.into(),
        source: std::io::Error::last_os_error(),
    }
}

/// The interface index of `name`, or an error naming it.
pub fn ifindex(name: &str) -> Result<u32, GuardError> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| GuardError::Config(format!("bad interface name {name:?}")))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        return Err(GuardError::Socket {
            what: format!("interface {name}"),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(idx)
}

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BpfInsn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant.
    pub k: u32,
}

const LD_H_ABS: u16 = 0x28;
const LD_B_ABS: u16 = 0x30;
const LD_H_IND: u16 = 0x48;
const LDX_B_MSH: u16 = 0xb1;
const JEQ_K: u16 = 0x15;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> BpfInsn {
    BpfInsn { code, jt, jf, k }
}

/// Index of the drop instruction in [`SOCKET_FILTER`].
const DROP: u8 = 25;
/// Index of the accept instruction.
const ACCEPT: u8 = 26;

/// `jeq k` at index `at` jumping to `target` when equal, else to the next instruction.
const fn jeq_to(at: u8, k: u32, target: u8) -> BpfInsn {
    insn(JEQ_K, target - at - 1, 0, k)
}

/// The socket filter: only what the guard decodes reaches userspace — ARP, tagged frames,
/// non-TCP IPv6 (ICMPv6 RA, DHCPv6, LLMNR/mDNS; extension headers are walked in userspace),
/// and unfragmented IPv4 UDP from or to ports 67, 68, 137, 5353, 5355. Why: every other frame
/// on a busy bridge would otherwise be copied to the guard for nothing.
pub const SOCKET_FILTER: [BpfInsn; 27] = [
    insn(LD_H_ABS, 0, 0, 12),
    jeq_to(1, 0x0806, ACCEPT),
    jeq_to(2, 0x8100, ACCEPT),
    jeq_to(3, 0x88a8, ACCEPT),
    jeq_to(4, 0x86dd, 6),
    insn(JEQ_K, 8 - 5 - 1, DROP - 5 - 1, 0x0800),
    // 6: IPv6 next header
    insn(LD_B_ABS, 0, 0, 20),
    insn(JEQ_K, DROP - 7 - 1, ACCEPT - 7 - 1, 6),
    // 8: IPv4 protocol, fragment offset, ports
    insn(LD_B_ABS, 0, 0, 23),
    insn(JEQ_K, 0, DROP - 9 - 1, 17),
    insn(LD_H_ABS, 0, 0, 20),
    insn(JSET_K, DROP - 11 - 1, 0, 0x1fff),
    insn(LDX_B_MSH, 0, 0, 14),
    insn(LD_H_IND, 0, 0, 14),
    jeq_to(14, 67, ACCEPT),
    jeq_to(15, 68, ACCEPT),
    jeq_to(16, 137, ACCEPT),
    jeq_to(17, 5353, ACCEPT),
    jeq_to(18, 5355, ACCEPT),
    insn(LD_H_IND, 0, 0, 16),
    jeq_to(20, 67, ACCEPT),
    jeq_to(21, 68, ACCEPT),
    jeq_to(22, 137, ACCEPT),
    jeq_to(23, 5353, ACCEPT),
    jeq_to(24, 5355, ACCEPT),
    // 25: drop, 26: accept (whole frame)
    insn(RET_K, 0, 0, 0),
    insn(RET_K, 0, 0, 0x0004_0000),
];

/// Run a classic BPF program over `frame` (the subset of opcodes [`SOCKET_FILTER`] uses);
/// the number of bytes it would accept. Used by tests to check the filter without a kernel.
pub fn run_filter(program: &[BpfInsn], frame: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let byte = |at: usize| frame.get(at).copied().map(u32::from);
    let half = |at: usize| {
        Some(u32::from(u16::from_be_bytes([
            *frame.get(at)?,
            *frame.get(at + 1)?,
        ])))
    };
    // Every jump goes forward, so the loop ends within program.len() steps.
    while let Some(i) = program.get(pc) {
        pc += 1;
        let loaded = match i.code {
            LD_H_ABS => half(i.k as usize),
            LD_B_ABS => byte(i.k as usize),
            LD_H_IND => half(x as usize + i.k as usize),
            LDX_B_MSH => {
                x = u32::from(frame.get(i.k as usize).copied().unwrap_or(0) & 0x0f) * 4;
                continue;
            }
            JEQ_K | JSET_K => {
                let hit = if i.code == JEQ_K {
                    a == i.k
                } else {
                    a & i.k != 0
                };
                pc += usize::from(if hit { i.jt } else { i.jf });
                continue;
            }
            RET_K => return i.k,
            _ => return 0,
        };
        // The kernel returns 0 (drop) when a load falls outside the packet.
        let Some(v) = loaded else { return 0 };
        a = v;
    }
    0
}

fn attach_filter(fd: i32, port: &str) -> Result<(), GuardError> {
    let mut program: Vec<libc::sock_filter> = SOCKET_FILTER
        .iter()
        .map(|i| libc::sock_filter {
            code: i.code,
            jt: i.jt,
            jf: i.jf,
            k: i.k,
        })
        .collect();
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points at `program`, which outlives the call; the kernel copies it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::addr_of!(fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as u32,
        )
    };
    if rc < 0 {
        return Err(os(format!("socket filter on {port}")));
    }
    Ok(())
}

/// `SIOCGSTAMPNS` (`asm-generic/sockios.h`, the `SIOCGSTAMPNS_OLD` number, which is the
/// native-`timespec` variant): the receive time of the last frame read. Not exported by libc.
const SIOCGSTAMPNS: libc::c_ulong = 0x8907;

/// A packet socket receiving every frame that enters one port.
#[derive(Debug)]
pub struct PortSocket {
    fd: OwnedFd,
    /// The port's name.
    pub port: String,
    /// Keep only frames this host sends (the bridge device: a local DHCP server's replies);
    /// otherwise only frames received.
    pub outgoing: bool,
}

impl PortSocket {
    /// Open and bind to `port` (non-blocking), keeping frames that enter it.
    pub fn open(port: &str) -> Result<Self, GuardError> {
        Self::open_direction(port, false)
    }

    /// Open on the bridge device, keeping the frames the host itself sends into the bridge
    /// (replies of a DHCP server running on the bridge, the host's own ARP).
    pub fn open_outgoing(bridge: &str) -> Result<Self, GuardError> {
        Self::open_direction(bridge, true)
    }

    fn open_direction(port: &str, outgoing: bool) -> Result<Self, GuardError> {
        let index = ifindex(port)?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // Protocol 0 receives nothing until bind(), so no frame from another interface and
        // no unfiltered frame is queued before the filter and the binding are in place.
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(os(format!("packet socket for {port}")));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        attach_filter(fd.as_raw_fd(), port)?;
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = proto;
        addr.sll_ifindex = index as i32;
        // SAFETY: `addr` is a valid sockaddr_ll and the length matches it.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if rc < 0 {
            return Err(os(format!("bind packet socket to {port}")));
        }
        // The first SIOCGSTAMPNS switches receive timestamps on for the socket (it reports
        // "no frame yet", which is expected); from then on each frame read carries its time.
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec the ioctl writes into.
        let _ = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCGSTAMPNS as _, &mut ts) };
        Ok(Self {
            fd,
            port: port.to_string(),
            outgoing,
        })
    }

    /// The descriptor, for poll(2).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Kernel receive time of the frame last returned by [`PortSocket::recv`], nanoseconds
    /// since the Unix epoch; 0 when the kernel has none.
    pub fn last_rx_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec the ioctl writes into.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), SIOCGSTAMPNS as _, &mut ts) };
        if rc < 0 {
            return 0;
        }
        u64::try_from(ts.tv_sec)
            .unwrap_or(0)
            .saturating_mul(1_000_000_000)
            .saturating_add(u64::try_from(ts.tv_nsec).unwrap_or(0))
    }

    /// Receive one frame of this socket's direction into `buf`; `Ok(None)` when nothing more
    /// is queued. Frames of the other direction (a port's outgoing copies) are skipped here
    /// rather than reported as "nothing queued": stopping at one would leave the frames behind
    /// it for the next poll round, after frames from other ports that arrived later (a REQUEST
    /// queued behind the ADVERTISE's outgoing copy would then be handled after the REPLY).
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, GuardError> {
        for _ in 0..MAX_SKIPPED_COPIES {
            // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: `buf` and `from` are valid for writes of the given lengths.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_TRUNC,
                    std::ptr::addr_of_mut!(from).cast(),
                    &mut len,
                )
            };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.kind() == std::io::ErrorKind::WouldBlock
                    || err.kind() == std::io::ErrorKind::Interrupted
                {
                    return Ok(None);
                }
                return Err(GuardError::Socket {
                    what: format!("receive on {}", self.port),
                    source: err,
                });
            }
            if (from.sll_pkttype == libc::PACKET_OUTGOING) != self.outgoing {
                continue;
            }
            // MSG_TRUNC returns the real length; the buffer holds at most its own size.
            return Ok(Some((n as usize).min(buf.len())));
        }
        Ok(None)
    }
}

/// Why: bounds the frames of the other direction skipped in one [`PortSocket::recv`], so a
/// port flooding outgoing copies cannot hold the loop; the rest is read next round.
pub const MAX_SKIPPED_COPIES: usize = 1024;

/// Wait until one of `fds` is readable or `timeout_ms` passes; the readable indices.
pub fn poll_readable(fds: &[i32], timeout_ms: i32) -> Result<Vec<usize>, GuardError> {
    let mut polls: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `polls` is a valid array of `polls.len()` pollfd structs.
    let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, timeout_ms) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(Vec::new());
        }
        return Err(GuardError::Socket {
            what: "poll".into(),
            source: err,
        });
    }
    Ok(polls
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents & (libc::POLLIN | libc::POLLERR) != 0)
        .map(|(i, _)| i)
        .collect())
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::craft::{arp_frame, dhcp, router_advertisement, udp4_frame, BROADCAST};
    use crate::decode::{Mac, ARP_REQUEST};

    const A: Mac = Mac([2, 0, 0, 0, 0, 1]);

    fn udp(sport: u16, dport: u16) -> Vec<u8> {
        udp4_frame(
            A,
            BROADCAST,
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::BROADCAST,
            sport,
            dport,
            b"xxxx",
        )
    }

    #[test]
    fn filter_passes_what_the_guard_decodes() {
        let accepted = |f: &[u8]| run_filter(&SOCKET_FILTER, f) > 0;
        let offer = dhcp(
            2,
            2,
            1,
            A,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[],
        );
        assert!(accepted(&udp4_frame(
            A,
            BROADCAST,
            Ipv4Addr::new(192, 0, 2, 1),
            Ipv4Addr::BROADCAST,
            67,
            68,
            &offer
        )));
        assert!(accepted(&udp(68, 67)));
        assert!(accepted(&udp(5355, 40000)));
        assert!(accepted(&udp(40000, 5353)));
        assert!(accepted(&udp(137, 137)));
        assert!(accepted(&arp_frame(
            A,
            BROADCAST,
            ARP_REQUEST,
            A,
            Ipv4Addr::new(192, 0, 2, 1),
            Mac::ZERO,
            Ipv4Addr::new(192, 0, 2, 2)
        )));
        assert!(accepted(&router_advertisement(
            A,
            "fe80::1".parse().unwrap()
        )));
    }

    #[test]
    fn filter_drops_the_rest() {
        let accepted = |f: &[u8]| run_filter(&SOCKET_FILTER, f) > 0;
        assert!(!accepted(&udp(40000, 53)));
        let mut tcp = udp(67, 68);
        tcp[14 + 9] = 6;
        assert!(!accepted(&tcp), "TCP to port 67 is not DHCP");
        let mut frag = udp(67, 68);
        frag[14 + 7] = 8; // fragment offset 8: no UDP header here
        assert!(!accepted(&frag));
        let mut ip6tcp = router_advertisement(A, "fe80::1".parse().unwrap());
        ip6tcp[20] = 6;
        assert!(!accepted(&ip6tcp));
        assert!(!accepted(&[0u8; 10]), "short frame");
        let mut other = udp(67, 68);
        other[12] = 0x88;
        other[13] = 0xcc; // LLDP
        assert!(!accepted(&other));
    }

    #[test]
    fn filter_jumps_stay_inside_the_program() {
        for (i, insn) in SOCKET_FILTER.iter().enumerate() {
            if insn.code == JEQ_K || insn.code == JSET_K {
                assert!(
                    i + 1 + usize::from(insn.jt.max(insn.jf)) < SOCKET_FILTER.len(),
                    "insn {i}"
                );
            }
        }
        assert_eq!(SOCKET_FILTER[usize::from(DROP)].k, 0);
        assert!(SOCKET_FILTER[usize::from(ACCEPT)].k > 0);
    }
}
