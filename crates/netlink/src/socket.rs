//! The I/O half: one raw `AF_NETLINK` socket, bound with a kernel-assigned port id, in the
//! caller's network namespace or a named one. Buffers are the caller's (sized by the caller's
//! bounds); requests that want an acknowledgement wait for it a bounded number of datagrams.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Duration;

use thiserror::Error;

use crate::wire::{self, DecodeError, Msg, NLMSG_ERROR};

/// `SOL_NETLINK` (not in every libc version).
const SOL_NETLINK: libc::c_int = 270;
/// `NETLINK_CAP_ACK`: errors echo only the request's header.
const NETLINK_CAP_ACK: libc::c_int = 10;
/// `NETLINK_EXT_ACK`: errors carry the kernel's explanation.
const NETLINK_EXT_ACK: libc::c_int = 11;

/// Why: the kernel answers a request with at most a couple of datagrams (an answer and the
/// ack); anything unrelated in between (queued packets, log lines on a shared socket) is
/// skipped, but not forever.
pub const MAX_DATAGRAMS_PER_REQUEST: usize = 64;
/// Why: `ip netns` names are file names under `/run/netns`.
pub const MAX_NETNS_NAME_BYTES: usize = 255;

/// Socket failures.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SocketError {
    /// A system call failed.
    #[error("{op}: {source}")]
    Os {
        /// The call (`socket`, `bind`, `send`, …).
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel took only part of a message.
    #[error("short send: {sent} of {len} bytes")]
    ShortSend {
        /// Bytes sent.
        sent: usize,
        /// Bytes offered.
        len: usize,
    },
    /// A network namespace name that is not a plain `ip netns` name.
    #[error("bad network namespace name `{0}`")]
    BadNamespace(String),
    /// Entering the named network namespace failed.
    #[error("network namespace {path}: {source}")]
    Namespace {
        /// `/run/netns/NAME`.
        path: String,
        /// The cause.
        source: io::Error,
    },
    /// The kernel answered the request with an error.
    #[error("{}{}", io::Error::from_raw_os_error(*errno), text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    Refused {
        /// Positive errno.
        errno: i32,
        /// The kernel's extended-ack text.
        text: Option<String>,
    },
    /// No acknowledgement within the receive timeout or [`MAX_DATAGRAMS_PER_REQUEST`].
    #[error("no netlink acknowledgement")]
    NoAck,
    /// The answer did not parse.
    #[error(transparent)]
    Malformed(#[from] DecodeError),
}

impl SocketError {
    /// The errno behind the error, when there is one (OS call or kernel refusal).
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            SocketError::Os { source, .. } | SocketError::Namespace { source, .. } => {
                source.raw_os_error()
            }
            SocketError::Refused { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

impl From<SocketError> for io::Error {
    fn from(e: SocketError) -> Self {
        match e {
            SocketError::Os { source, .. } => source,
            SocketError::Refused { errno, .. } => io::Error::from_raw_os_error(errno),
            SocketError::NoAck => io::Error::new(io::ErrorKind::TimedOut, e),
            other => io::Error::other(other),
        }
    }
}

fn os(op: &'static str) -> SocketError {
    SocketError::Os {
        op,
        source: io::Error::last_os_error(),
    }
}

/// One bound netlink socket.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
}

impl Socket {
    /// A socket of netlink `protocol` ([`crate::NETLINK_NETFILTER`]) in the calling thread's
    /// network namespace, bound (the kernel assigns the port id).
    pub fn open(protocol: i32) -> Result<Self, SocketError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        if raw < 0 {
            return Err(os("socket"));
        }
        // SAFETY: raw is a fresh descriptor owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain data; all-zero is a valid value (pid 0: kernel assigns).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr is a valid sockaddr_nl of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os("bind"));
        }
        Ok(Self { fd })
    }

    /// A socket in network namespace `ns` (`/run/netns/NS`, as `ip netns` names them). It stays
    /// in that namespace for its whole life; the switch happens on a short-lived thread, so the
    /// caller's threads keep their namespace.
    pub fn open_in_netns(protocol: i32, ns: &str) -> Result<Self, SocketError> {
        if ns.is_empty() || ns.contains('/') || ns == ".." || ns.len() > MAX_NETNS_NAME_BYTES {
            return Err(SocketError::BadNamespace(ns.to_owned()));
        }
        let path = format!("/run/netns/{ns}");
        let file = std::fs::File::open(&path).map_err(|source| SocketError::Namespace {
            path: path.clone(),
            source,
        })?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this (short-lived) thread only, with a namespace descriptor
                // that stays open across the call.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(SocketError::Namespace {
                        path: path.clone(),
                        source: io::Error::last_os_error(),
                    });
                }
                Self::open(protocol)
            })
            .join()
            .unwrap_or_else(|_| {
                Err(SocketError::Namespace {
                    path: path.clone(),
                    source: io::Error::other("namespace thread panicked"),
                })
            })
        })
    }

    fn setsockopt_int(
        &self,
        level: libc::c_int,
        name: libc::c_int,
        value: libc::c_int,
        op: &'static str,
    ) -> Result<(), SocketError> {
        // SAFETY: fd is an open socket; the value is a c_int living across the call, and its
        // size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                (&value as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os(op));
        }
        Ok(())
    }

    /// Errors echo only the request's header (`NETLINK_CAP_ACK`) and carry the kernel's
    /// explanation (`NETLINK_EXT_ACK`). Best effort: older kernels lack them.
    pub fn set_extended_acks(&self) {
        let _ = self.setsockopt_int(SOL_NETLINK, NETLINK_CAP_ACK, 1, "NETLINK_CAP_ACK");
        let _ = self.setsockopt_int(SOL_NETLINK, NETLINK_EXT_ACK, 1, "NETLINK_EXT_ACK");
    }

    /// Receive buffer of `bytes`: `SO_RCVBUFFORCE` (root lifts the `rmem_max` cap), else the
    /// capped `SO_RCVBUF`.
    pub fn set_recv_buffer(&self, bytes: usize) -> Result<(), SocketError> {
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        self.setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, v, "SO_RCVBUFFORCE")
            .or_else(|_| self.setsockopt_int(libc::SOL_SOCKET, libc::SO_RCVBUF, v, "SO_RCVBUF"))
    }

    /// Send buffer of `bytes` (forced when allowed, as [`Socket::set_recv_buffer`]).
    pub fn set_send_buffer(&self, bytes: usize) -> Result<(), SocketError> {
        let v = bytes.min(i32::MAX as usize) as libc::c_int;
        self.setsockopt_int(libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, v, "SO_SNDBUFFORCE")
            .or_else(|_| self.setsockopt_int(libc::SOL_SOCKET, libc::SO_SNDBUF, v, "SO_SNDBUF"))
    }

    /// How long a waiting receive blocks (`None`: forever).
    pub fn set_recv_timeout(&self, timeout: Option<Duration>) -> Result<(), SocketError> {
        let tv = match timeout {
            Some(d) => libc::timeval {
                tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
                tv_usec: d.subsec_micros() as libc::suseconds_t,
            },
            None => libc::timeval {
                tv_sec: 0,
                tv_usec: 0,
            },
        };
        // SAFETY: tv is a valid timeval living across the call, and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(os("SO_RCVTIMEO"));
        }
        Ok(())
    }

    /// Send one datagram (one or more messages) to the kernel.
    pub fn send(&self, bytes: &[u8]) -> Result<(), SocketError> {
        // SAFETY: bytes is a valid buffer of the length passed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(os("send"));
        }
        if n as usize != bytes.len() {
            return Err(SocketError::ShortSend {
                sent: n as usize,
                len: bytes.len(),
            });
        }
        Ok(())
    }

    /// Receive one datagram into `buf` (a longer one is cut to `buf`'s length; the message
    /// split then reports the cut message as truncated). `wait`: block up to the receive
    /// timeout; otherwise return at once. `Ok(0)`: nothing arrived in time.
    pub fn recv(&self, buf: &mut [u8], wait: bool) -> Result<usize, SocketError> {
        let flags = if wait { 0 } else { libc::MSG_DONTWAIT };
        // SAFETY: buf is a valid writable buffer of the length passed.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::WouldBlock {
                return Ok(0);
            }
            return Err(SocketError::Os {
                op: "recv",
                source: e,
            });
        }
        Ok(n as usize)
    }

    /// Wait up to `timeout_ms` for something to read; `Ok(false)` on timeout or a signal.
    pub fn wait(&self, timeout_ms: i32) -> Result<bool, SocketError> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, count 1.
        let rc = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(false);
            }
            return Err(SocketError::Os {
                op: "poll",
                source: e,
            });
        }
        Ok(rc > 0)
    }

    /// Send `msg` (sent with `NLM_F_ACK` and sequence `seq`) and wait for its
    /// acknowledgement; every other message with that sequence (the answer to a `GET`) is
    /// handed to `on_answer` first. Unrelated messages are skipped. A refusal is
    /// [`SocketError::Refused`] with the kernel's errno.
    pub fn request(
        &self,
        msg: &[u8],
        seq: u32,
        buf: &mut [u8],
        mut on_answer: impl FnMut(&Msg<'_>),
    ) -> Result<(), SocketError> {
        self.send(msg)?;
        for _ in 0..MAX_DATAGRAMS_PER_REQUEST {
            let n = self.recv(buf, true)?;
            if n == 0 {
                return Err(SocketError::NoAck);
            }
            for m in wire::messages(&buf[..n]) {
                let Ok(m) = m else {
                    // Why: the rest of this datagram cannot be located; the ack may still be
                    // in the next one.
                    break;
                };
                if m.ty == NLMSG_ERROR {
                    let Ok(ack) = m.ack() else { continue };
                    if ack.seq != seq {
                        continue;
                    }
                    if ack.errno != 0 {
                        return Err(SocketError::Refused {
                            errno: ack.errno,
                            text: ack.text,
                        });
                    }
                    return Ok(());
                }
                if m.seq == seq {
                    on_answer(&m);
                }
            }
        }
        Err(SocketError::NoAck)
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Builder, NETLINK_NETFILTER, NLM_F_ACK, NLM_F_REQUEST};

    /// Whether this process may open netfilter sockets (root); tests that need it skip
    /// otherwise.
    fn netfilter_socket() -> Option<Socket> {
        match Socket::open(NETLINK_NETFILTER) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("skipping: cannot open a netfilter netlink socket: {e}");
                None
            }
        }
    }

    #[test]
    fn a_request_to_an_unknown_subsystem_is_refused_with_its_errno() {
        let Some(s) = netfilter_socket() else { return };
        s.set_extended_acks();
        s.set_recv_timeout(Some(Duration::from_secs(5))).unwrap();
        // Subsystem 0xff does not exist: nfnetlink answers EINVAL (or EOPNOTSUPP) to the
        // acknowledged request rather than staying silent.
        let msg = Builder::new(0xff01, NLM_F_REQUEST | NLM_F_ACK, 77, 0, 0)
            .finish()
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let mut answers = 0;
        let e = s.request(&msg, 77, &mut buf, |_| answers += 1).unwrap_err();
        assert_eq!(answers, 0);
        assert!(
            matches!(e, SocketError::Refused { errno, .. } if errno == libc::EINVAL || errno == libc::EOPNOTSUPP),
            "{e:?}"
        );
        assert!(e.raw_os_error().is_some());
        // Nothing left: a non-waiting receive returns at once.
        assert_eq!(s.recv(&mut buf, false).unwrap(), 0);
        assert!(!s.wait(10).unwrap());
    }

    #[test]
    fn namespace_names_are_checked_before_use() {
        for bad in ["", "a/b", "..", &"x".repeat(MAX_NETNS_NAME_BYTES + 1)] {
            assert!(matches!(
                Socket::open_in_netns(NETLINK_NETFILTER, bad),
                Err(SocketError::BadNamespace(_))
            ));
        }
        assert!(matches!(
            Socket::open_in_netns(NETLINK_NETFILTER, "rampart-netlink-test-absent"),
            Err(SocketError::Namespace { .. })
        ));
    }
}
