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

/// A packet socket receiving every frame that enters one port.
#[derive(Debug)]
pub struct PortSocket {
    fd: OwnedFd,
    /// The port's name.
    pub port: String,
}

impl PortSocket {
    /// Open and bind to `port` (non-blocking).
    pub fn open(port: &str) -> Result<Self, GuardError> {
        let index = ifindex(port)?;
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(proto),
            )
        };
        if raw < 0 {
            return Err(os(format!("packet socket for {port}")));
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
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
        Ok(Self {
            fd,
            port: port.to_string(),
        })
    }

    /// The descriptor, for poll(2).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// Receive one ingress frame into `buf`; `Ok(None)` when nothing is queued or the frame
    /// was an outgoing copy.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Option<usize>, GuardError> {
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
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        // MSG_TRUNC returns the real length; the buffer holds at most its own size.
        Ok(Some((n as usize).min(buf.len())))
    }
}

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
