//! The nf_tables exchanges over `rampart-netlink`'s socket: dumps, and sending one batch and
//! waiting for its verdict (the first error, or the final ack), in a chosen network namespace.

use std::time::Duration;

use rampart_netlink::{Socket, SocketError};

use crate::nfnl::{self, Dumped, Message, NLMSG_DONE, NLMSG_ERROR};
use crate::ApplyError;

/// Why: dump replies come in messages of up to a few pages; a batch's errors are small
/// (`NETLINK_CAP_ACK`).
const RECV_BUFFER_BYTES: usize = 1 << 20;
/// Why: the kernel can take a few seconds for a million elements; longer means it is gone.
const RECV_TIMEOUT: Duration = Duration::from_secs(60);
/// Why: receive room for the kernel's replies while it works through a big batch.
const SOCKET_RCVBUF_BYTES: usize = 8 << 20;

impl From<SocketError> for ApplyError {
    fn from(e: SocketError) -> Self {
        ApplyError::Netlink(e.to_string())
    }
}

/// A `NETLINK_NETFILTER` socket for nf_tables dumps and batches.
#[derive(Debug)]
pub struct NlSocket {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl NlSocket {
    /// A socket in the calling thread's network namespace.
    pub fn open() -> Result<Self, ApplyError> {
        Self::setup(Socket::open(nfnl::NETLINK_NETFILTER)?)
    }

    fn setup(sock: Socket) -> Result<Self, ApplyError> {
        // Errors echo only the header, with the kernel's message text.
        sock.set_extended_acks();
        // Best effort: a smaller buffer only risks ENOBUFS on huge batches.
        let _ = sock.set_recv_buffer(SOCKET_RCVBUF_BYTES);
        sock.set_recv_timeout(Some(RECV_TIMEOUT))?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Self {
            sock,
            seq: seed,
            buf: vec![0; RECV_BUFFER_BYTES],
        })
    }

    /// A socket in network namespace `ns` (`/run/netns/NS`, as `ip netns` names them), or in
    /// the caller's when `None`. The socket stays in that namespace for its whole life; the
    /// caller's threads keep theirs.
    pub fn open_in(ns: Option<&str>) -> Result<Self, ApplyError> {
        match ns {
            None => Self::open(),
            Some(ns) => Self::setup(Socket::open_in_netns(nfnl::NETLINK_NETFILTER, ns)?),
        }
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn recv(&mut self) -> Result<usize, ApplyError> {
        match self.sock.recv(&mut self.buf, true)? {
            0 => Err(ApplyError::Netlink(format!(
                "recv: no answer within {} s",
                RECV_TIMEOUT.as_secs()
            ))),
            n => Ok(n),
        }
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
        let req = nfnl::dump_request(ty, seq, table, set)
            .map_err(|e| ApplyError::Netlink(format!("dump request: {e}")))?;
        self.sock.send(&req)?;
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
                        let ack = m.ack().ok_or_else(|| {
                            ApplyError::Netlink("malformed error in a dump reply".into())
                        })?;
                        if ack.errno != 0 {
                            return Err(errno_error("dump", ack.errno, ack.text));
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
        // Best effort: the send below reports a batch that does not fit.
        let _ = self
            .sock
            .set_send_buffer(bytes.len().saturating_add(1 << 16));
        self.sock.send(bytes)?;
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
                let Some(ack) = m.ack() else {
                    continue;
                };
                if ack.errno != 0 && first_error.is_none() {
                    let about = ack
                        .seq
                        .checked_sub(first_seq)
                        .and_then(|i| what.get(i as usize))
                        .map(String::as_str)
                        .unwrap_or("batch");
                    first_error = Some(errno_error(about, ack.errno, ack.text));
                }
                if ack.seq == acked_seq {
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

fn errno_error(about: &str, errno: i32, text: Option<String>) -> ApplyError {
    let os = std::io::Error::from_raw_os_error(errno);
    ApplyError::Netlink(match text {
        Some(t) => format!("{about}: {os} ({t})"),
        None => format!("{about}: {os}"),
    })
}
