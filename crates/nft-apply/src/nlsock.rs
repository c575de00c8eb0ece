//! The thin socket shell around [`crate::nfnl`]: a `NETLINK_NETFILTER` socket opened in a
//! chosen network namespace, dumps, and sending one batch and waiting for its verdict.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use crate::nfnl::{self, Dumped, Message, NLMSG_DONE, NLMSG_ERROR};
use crate::ApplyError;

/// Why: dump replies come in messages of up to a few pages; a batch's errors are small
/// (`NETLINK_CAP_ACK`).
const RECV_BUFFER_BYTES: usize = 1 << 20;
/// Why: the kernel can take a few seconds for a million elements; longer means it is gone.
const RECV_TIMEOUT: Duration = Duration::from_secs(60);
/// Why: receive room for the kernel's replies while it works through a big batch.
const SOCKET_RCVBUF_BYTES: usize = 8 << 20;

const SOL_NETLINK: libc::c_int = 270;
const NETLINK_CAP_ACK: libc::c_int = 10;
const NETLINK_EXT_ACK: libc::c_int = 11;

fn os_err(what: &str) -> ApplyError {
    ApplyError::Netlink(format!("{what}: {}", std::io::Error::last_os_error()))
}

/// A `NETLINK_NETFILTER` socket.
#[derive(Debug)]
pub struct NlSocket {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

fn setsockopt_int(fd: i32, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: fd is an open socket; the option value is a valid c_int for the call's duration.
    unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// A bound `NETLINK_NETFILTER` socket in the calling thread's network namespace (the kernel
/// assigns the port id). The batch socket here and the NFLOG reader both start from it.
pub(crate) fn open_netfilter_socket() -> Result<OwnedFd, ApplyError> {
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            nfnl::NETLINK_NETFILTER,
        )
    };
    if raw < 0 {
        return Err(os_err("socket"));
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
        return Err(os_err("bind"));
    }
    Ok(fd)
}

impl NlSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, ApplyError> {
        let fd = open_netfilter_socket()?;
        let f = fd.as_raw_fd();
        // Errors echo only the header, with the kernel's message text.
        setsockopt_int(f, SOL_NETLINK, NETLINK_CAP_ACK, 1);
        setsockopt_int(f, SOL_NETLINK, NETLINK_EXT_ACK, 1);
        if !setsockopt_int(
            f,
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            SOCKET_RCVBUF_BYTES as libc::c_int,
        ) {
            setsockopt_int(
                f,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                SOCKET_RCVBUF_BYTES as libc::c_int,
            );
        }
        let tv = libc::timeval {
            tv_sec: RECV_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: tv is a valid timeval for the call's duration.
        unsafe {
            libc::setsockopt(
                f,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            );
        }
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Self {
            fd,
            seq: seed,
            buf: vec![0; RECV_BUFFER_BYTES],
        })
    }

    /// A socket in network namespace `ns` (`/run/netns/NS`, as `ip netns` names them), or in
    /// the caller's when `None`. The socket stays in that namespace for its whole life; the
    /// namespace switch happens on a short-lived thread, so the caller's threads keep theirs.
    pub fn open_in(ns: Option<&str>) -> Result<Self, ApplyError> {
        let Some(ns) = ns else {
            return Self::open();
        };
        if ns.is_empty() || ns.contains('/') || ns.len() > 255 {
            return Err(ApplyError::Netlink(format!("bad namespace name `{ns}`")));
        }
        let path = format!("/run/netns/{ns}");
        let file =
            std::fs::File::open(&path).map_err(|e| ApplyError::Netlink(format!("{path}: {e}")))?;
        std::thread::scope(|s| {
            s.spawn(|| {
                // SAFETY: setns on this thread only, with a namespace file descriptor.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(os_err("setns"));
                }
                Self::open()
            })
            .join()
            .map_err(|_| ApplyError::Netlink("namespace thread panicked".into()))?
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&self, bytes: &[u8]) -> Result<(), ApplyError> {
        // SAFETY: bytes is a valid buffer of the length passed.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(os_err("send"));
        }
        if n as usize != bytes.len() {
            return Err(ApplyError::Netlink(format!(
                "short send: {n} of {} bytes",
                bytes.len()
            )));
        }
        Ok(())
    }

    fn recv(&mut self) -> Result<usize, ApplyError> {
        // SAFETY: self.buf is a valid writable buffer of the length passed.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(os_err("recv"));
        }
        Ok(n as usize)
    }

    /// Dump objects of type `ty` (a `GET*` message) of table `table` (or one set's elements),
    /// as the objects that re-create them.
    pub fn dump(
        &mut self,
        ty: u16,
        table: &str,
        set: Option<&str>,
    ) -> Result<Vec<Dumped>, ApplyError> {
        let seq = self.next_seq();
        self.send(&nfnl::dump_request(ty, seq, table, set))?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            let msgs = nfnl::messages(&self.buf[..n])
                .ok_or_else(|| ApplyError::Netlink("malformed dump reply".into()))?;
            for m in msgs {
                if m.seq != seq {
                    continue;
                }
                // Control messages by their full type: with the subsystem stripped, NEWCHAIN
                // and DELTABLE would read as NLMSG_DONE and NLMSG_ERROR.
                match m.raw_ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let (code, _, text) = nfnl::parse_error(m.payload).unwrap_or((-1, 0, None));
                        if code != 0 {
                            return Err(errno_error("dump", code, text));
                        }
                    }
                    _ => out
                        .push(nfnl::parse_dumped(&m).ok_or_else(|| {
                            ApplyError::Netlink("malformed dumped object".into())
                        })?),
                }
            }
        }
    }

    /// Send one finished batch (`nfnl::Batch::finish`) and wait for its outcome: `Ok` when the
    /// kernel committed it; otherwise the first error, naming the message it was about.
    pub fn transact(
        &mut self,
        bytes: &[u8],
        acked_seq: u32,
        first_seq: u32,
        what: &[String],
    ) -> Result<(), ApplyError> {
        let f = self.fd.as_raw_fd();
        let want = (bytes.len() + (1 << 16)).min(i32::MAX as usize) as libc::c_int;
        if !setsockopt_int(f, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, want) {
            setsockopt_int(f, libc::SOL_SOCKET, libc::SO_SNDBUF, want);
        }
        self.send(bytes)?;
        let mut first_error: Option<ApplyError> = None;
        loop {
            let n = match self.recv() {
                Ok(n) => n,
                // No final ack after an error: the kernel rejected the batch as a whole.
                Err(e) => return Err(first_error.unwrap_or(e)),
            };
            let msgs: Vec<Message<'_>> = nfnl::messages(&self.buf[..n])
                .ok_or_else(|| ApplyError::Netlink("malformed batch reply".into()))?;
            let mut done = false;
            for m in msgs {
                if m.raw_ty != NLMSG_ERROR {
                    continue;
                }
                let Some((code, seq, text)) = nfnl::parse_error(m.payload) else {
                    continue;
                };
                if code != 0 && first_error.is_none() {
                    let about = seq
                        .checked_sub(first_seq)
                        .and_then(|i| what.get(i as usize))
                        .map(String::as_str)
                        .unwrap_or("batch");
                    first_error = Some(errno_error(about, code, text));
                }
                if seq == acked_seq {
                    done = true;
                }
            }
            if done {
                return match first_error {
                    Some(e) => Err(e),
                    None => Ok(()),
                };
            }
        }
    }

    /// The first sequence number a batch may use.
    pub fn next_free_seq(&self) -> u32 {
        self.seq.wrapping_add(1)
    }

    /// Mark `n` sequence numbers from [`NlSocket::next_free_seq`] as used.
    pub fn consume_seq(&mut self, n: u32) {
        self.seq = self.seq.wrapping_add(n);
    }
}

fn errno_error(about: &str, code: i32, text: Option<String>) -> ApplyError {
    let os = std::io::Error::from_raw_os_error(code.saturating_neg());
    ApplyError::Netlink(match text {
        Some(t) => format!("{about}: {os} ({t})"),
        None => format!("{about}: {os}"),
    })
}
