//! The I/O shell: two netlink sockets (the queue, and ctnetlink for orientation look-ups and
//! conntrack marks), interface names, and the receive → classify → verdict → mark loop. All
//! decisions are the pure core's; this module only moves bytes. Several queues (iptables
//! `--queue-balance`) run one [`Runner`] each, on its own thread with its own sockets; they
//! share one classifier (one connection table) behind a mutex, held only for the pure
//! decision, never across a system call.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use rampart_netlink::{EncodeError, Socket};

use rampart_events::Sink;
use rampart_nft::app_queue::{MARK_MASK, REJECT_MARK};

use crate::core::{tuple_of, Classifier, Hook, Labeller, Orientation, PacketIn, Verdict};
use crate::flow::Tuple;
use crate::netlink::{self, Message, NfVerdict};

/// Shell failures (setting up the queue; the packet loop itself counts errors and goes on).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShellError {
    /// A socket call failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The kernel refused a queue configuration request.
    #[error("the kernel refused {what} for queue {queue}: {source}")]
    Refused {
        /// Which request.
        what: &'static str,
        /// Queue number.
        queue: u16,
        /// The errno as an error.
        source: io::Error,
    },
}

/// How to bind the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueOptions {
    /// Queue number.
    pub queue: u16,
    /// Bytes copied per packet (from the IP header).
    pub copy_range: u32,
    /// Most packets waiting in the kernel queue.
    pub max_len: u32,
    /// Accept instead of drop when the queue overflows (`NFQA_CFG_F_FAIL_OPEN`).
    pub fail_open: bool,
}

impl QueueOptions {
    /// Defaults for queue `queue`.
    pub fn new(queue: u16, fail_open: bool) -> Self {
        // Why: the labeller reads at most 2048 payload bytes; 4096 covers IPv6 + TCP options in
        // front of that. 4096 queued packets is the kernel default (NFQNL_QMAX_DEFAULT 1024)
        // times four, for bursts of new connections.
        Self {
            queue,
            copy_range: 4096,
            max_len: 4096,
            fail_open,
        }
    }
}

/// A bound `NETLINK_NETFILTER` socket with a 1 s receive timeout and, when `rcvbuf_bytes` is
/// not 0, that receive buffer.
fn open_socket(rcvbuf_bytes: usize) -> io::Result<Socket> {
    let sock = Socket::open(netlink::NETLINK_NETFILTER)?;
    // Why: requests wait for their answer with a blocking recv; a kernel that never answers
    // must not hang the loop.
    sock.set_recv_timeout(Some(Duration::from_secs(1)))?;
    if rcvbuf_bytes > 0 {
        // Best effort: a smaller buffer only means earlier overflow (fail-open/closed per flag).
        let _ = sock.set_recv_buffer(rcvbuf_bytes);
    }
    Ok(sock)
}

/// Send a request and wait for its acknowledgement; `Ok(Some(orig))` hands back the conntrack
/// answer that came before the ack. Packets arriving meanwhile are not expected on this socket
/// (callers use one socket per role).
fn request(
    sock: &Socket,
    msg: Result<Vec<u8>, EncodeError>,
    seq: u32,
    buf: &mut [u8],
) -> io::Result<Option<Option<Tuple>>> {
    let msg = msg.map_err(io::Error::other)?;
    let mut answer = None;
    sock.request(&msg, seq, buf, |m| {
        let m = netlink::parse_message(m);
        if let Ok(Message::Conntrack { orig, .. }) = m {
            answer = Some(orig);
        }
    })?;
    Ok(answer)
}

/// Send a message that needs no answer.
fn send(sock: &Socket, msg: Result<Vec<u8>, EncodeError>) -> io::Result<()> {
    sock.send(&msg.map_err(io::Error::other)?)?;
    Ok(())
}

/// ctnetlink: orientation look-ups and conntrack marks.
#[derive(Debug)]
pub struct Conntrack {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// What a conntrack look-up said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The connection, with its original tuple.
    Found(Tuple),
    /// Not (yet) in the table: an unconfirmed first packet.
    Missing,
}

impl Conntrack {
    /// Open a ctnetlink socket.
    pub fn open() -> io::Result<Self> {
        Ok(Self {
            sock: open_socket(0)?,
            seq: 1,
            buf: vec![0; 16 * 1024],
        })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1).max(1);
        self.seq
    }

    /// The connection a packet with tuple `t` belongs to.
    pub fn lookup(&mut self, t: &Tuple) -> io::Result<Lookup> {
        let seq = self.next_seq();
        match request(&self.sock, netlink::ct_get(t, seq), seq, &mut self.buf) {
            Ok(Some(Some(orig))) => Ok(Lookup::Found(orig)),
            Ok(_) => Ok(Lookup::Missing),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Lookup::Missing),
            Err(e) => Err(e),
        }
    }

    /// Set Rampart's mark bits on the connection `t` belongs to; `Ok(false)` when it is not in
    /// the table (an unconfirmed connection whose first packet was dropped).
    pub fn set_mark(&mut self, t: &Tuple, mark: u32) -> io::Result<bool> {
        let seq = self.next_seq();
        match request(
            &self.sock,
            netlink::ct_set_mark(t, mark, MARK_MASK, seq),
            seq,
            &mut self.buf,
        ) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// A bound NFQUEUE.
#[derive(Debug)]
pub struct Queue {
    sock: Socket,
    options: QueueOptions,
}

impl Queue {
    /// Bind queue `options.queue` in the current network namespace.
    pub fn bind(options: QueueOptions) -> Result<Self, ShellError> {
        let io_err = |what| move |source| ShellError::Io { what, source };
        // Why: 8 MiB holds ~2000 full copies; bursts beyond that fail open or closed per flag.
        let sock = open_socket(8 << 20).map_err(io_err("cannot open a netlink socket"))?;
        let mut buf = vec![0u8; 8192];
        let refused = |what| {
            move |source| ShellError::Refused {
                what,
                queue: options.queue,
                source,
            }
        };
        request(
            &sock,
            netlink::config_cmd(options.queue, netlink::CMD_BIND, 1),
            1,
            &mut buf,
        )
        .map_err(refused("the bind"))?;
        let mut flags = netlink::CFG_F_GSO;
        if options.fail_open {
            flags |= netlink::CFG_F_FAIL_OPEN;
        }
        request(
            &sock,
            netlink::config_params(
                options.queue,
                options.copy_range,
                options.max_len,
                flags,
                netlink::CFG_F_GSO | netlink::CFG_F_FAIL_OPEN,
                2,
            ),
            2,
            &mut buf,
        )
        .map_err(refused("copy mode and flags"))?;
        Ok(Self { sock, options })
    }

    /// The options it was bound with.
    pub fn options(&self) -> QueueOptions {
        self.options
    }

    /// Change fail-open on the live queue. Not waited for: the acknowledgement arrives among
    /// the packets and the loop skips it (waiting here would strand queued packets).
    pub fn set_fail_open(&mut self, fail_open: bool) -> io::Result<()> {
        self.options.fail_open = fail_open;
        let mut flags = netlink::CFG_F_GSO;
        if fail_open {
            flags |= netlink::CFG_F_FAIL_OPEN;
        }
        send(
            &self.sock,
            netlink::config_params(
                self.options.queue,
                self.options.copy_range,
                self.options.max_len,
                flags,
                netlink::CFG_F_GSO | netlink::CFG_F_FAIL_OPEN,
                4,
            ),
        )
    }

    /// Unbind (the kernel does it too when the socket closes).
    pub fn unbind(&self) -> io::Result<()> {
        send(
            &self.sock,
            netlink::config_cmd(self.options.queue, netlink::CMD_UNBIND, 3),
        )
    }
}

/// Counters of the shell itself.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShellCounters {
    /// Packets received from the queue.
    pub packets: u64,
    /// Messages that did not parse.
    pub malformed: u64,
    /// Receive errors (ENOBUFS: the kernel could not deliver; those packets were dropped or,
    /// failing open, accepted).
    pub recv_errors: u64,
    /// Verdicts that could not be sent.
    pub verdict_errors: u64,
    /// Conntrack orientation look-ups.
    pub ct_lookups: u64,
    /// Look-ups that failed (not "missing").
    pub ct_lookup_errors: u64,
    /// Conntrack marks set.
    pub ct_marks_set: u64,
    /// Marks not set because the connection was not in the table (unconfirmed first packet).
    pub ct_marks_missing: u64,
    /// Marks that failed otherwise.
    pub ct_mark_errors: u64,
    /// Events that could not be written.
    pub event_errors: u64,
}

impl ShellCounters {
    /// Add `other` (another queue's counters) to these.
    pub fn add(&mut self, other: &ShellCounters) {
        self.packets += other.packets;
        self.malformed += other.malformed;
        self.recv_errors += other.recv_errors;
        self.verdict_errors += other.verdict_errors;
        self.ct_lookups += other.ct_lookups;
        self.ct_lookup_errors += other.ct_lookup_errors;
        self.ct_marks_set += other.ct_marks_set;
        self.ct_marks_missing += other.ct_marks_missing;
        self.ct_mark_errors += other.ct_mark_errors;
        self.event_errors += other.event_errors;
    }
}

/// The shared classifier, whichever thread held it last. Why not fail on poison: a panic
/// elsewhere leaves the table consistent between whole calls, and the verdicts must go on.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Flags the caller's signal handling sets.
#[derive(Debug, Default)]
pub struct Control {
    /// Stop the loop.
    pub stop: AtomicBool,
    /// Reload requested (the loop returns [`Stopped::Reload`]).
    pub reload: AtomicBool,
    /// Metrics dump requested (the loop returns [`Stopped::Dump`]).
    pub dump: AtomicBool,
}

/// Why [`Runner::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stopped {
    /// `stop` was set.
    Stop,
    /// `reload` was set (cleared on return).
    Reload,
    /// `dump` was set (cleared on return).
    Dump,
}

/// Clock readings the loop takes (monotonic for the table, wall clock for events).
pub trait Clock {
    /// Monotonic milliseconds.
    fn now_ms(&self) -> u64;
    /// Nanoseconds since the Unix epoch.
    fn unix_ns(&self) -> u64;
}

/// The system clocks.
#[derive(Debug)]
pub struct SystemClock {
    start: std::time::Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        Self {
            start: std::time::Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }
    fn unix_ns(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

/// The packet loop.
#[derive(Debug)]
pub struct Runner {
    queue: Queue,
    ct: Option<Conntrack>,
    buf: Vec<u8>,
    ifnames: HashMap<u32, Option<String>>,
    /// Shell counters.
    pub counters: ShellCounters,
}

/// Most interface names cached (cleared when full and on reload).
const MAX_IFNAMES: usize = 1024;

impl Runner {
    /// A runner over a bound queue; `ct` is `None` when ctnetlink is unavailable (then
    /// orientation comes from the table alone and no conntrack marks are set).
    pub fn new(queue: Queue, ct: Option<Conntrack>) -> Self {
        Self {
            queue,
            ct,
            // Why: one datagram holds several queued packets of up to copy_range bytes each.
            buf: vec![0; 256 * 1024],
            ifnames: HashMap::new(),
            counters: ShellCounters::default(),
        }
    }

    /// The queue.
    pub fn queue(&self) -> &Queue {
        &self.queue
    }

    /// The queue, to reconfigure it.
    pub fn queue_mut(&mut self) -> &mut Queue {
        &mut self.queue
    }

    /// Whether conntrack (orientation look-ups, marks) is in use.
    pub fn has_conntrack(&self) -> bool {
        self.ct.is_some()
    }

    /// Forget cached interface names (interfaces may be renamed).
    pub fn forget_interfaces(&mut self) {
        self.ifnames.clear();
    }

    fn ifname(&mut self, index: Option<u32>) -> Option<String> {
        let index = index?;
        if self.ifnames.len() >= MAX_IFNAMES {
            self.ifnames.clear();
        }
        self.ifnames
            .entry(index)
            .or_insert_with(|| {
                let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
                // SAFETY: name has IF_NAMESIZE bytes as if_indextoname requires.
                let p = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
                if p.is_null() {
                    return None;
                }
                // SAFETY: on success the buffer holds a NUL-terminated name.
                let s = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
                Some(s.to_string_lossy().into_owned())
            })
            .clone()
    }

    /// Receive, classify and verdict packets until `control` asks otherwise.
    pub fn run<L: Labeller>(
        &mut self,
        classifier: &Mutex<Classifier<L>>,
        control: &Control,
        clock: &dyn Clock,
        events: &mut dyn Sink,
    ) -> Stopped {
        let mut last_expire_ms = clock.now_ms();
        loop {
            if control.stop.load(Ordering::Relaxed) {
                return Stopped::Stop;
            }
            if control.reload.swap(false, Ordering::Relaxed) {
                return Stopped::Reload;
            }
            if control.dump.swap(false, Ordering::Relaxed) {
                return Stopped::Dump;
            }
            let now_ms = clock.now_ms();
            if now_ms.saturating_sub(last_expire_ms) >= 1000 {
                lock(classifier).expire(now_ms);
                last_expire_ms = now_ms;
            }
            // Why: try first, poll only when idle; under load every poll would be a wasted
            // syscall.
            let n = match self.queue.sock.recv(&mut self.buf, false) {
                Ok(0) => {
                    if self.queue.sock.wait(200).is_err() {
                        self.counters.recv_errors += 1;
                    }
                    continue;
                }
                Ok(n) => n,
                Err(_) => {
                    self.counters.recv_errors += 1;
                    continue;
                }
            };
            // Why: the packets borrow `buf`; copy it out of self so `self` stays usable.
            let buf = std::mem::take(&mut self.buf);
            for m in netlink::messages(&buf[..n]) {
                match m {
                    Ok(Message::Packet(p)) => {
                        self.handle(classifier, &p, clock, events);
                    }
                    Ok(_) => {}
                    Err(_) => self.counters.malformed += 1,
                }
            }
            self.buf = buf;
        }
    }

    fn handle<L: Labeller>(
        &mut self,
        classifier: &Mutex<Classifier<L>>,
        p: &netlink::QueuedPacket<'_>,
        clock: &dyn Clock,
        events: &mut dyn Sink,
    ) {
        let now_ms = clock.now_ms();
        let tuple = tuple_of(p.payload);
        let mut orientation = Orientation::Unknown;
        if let (Some(t), Some(ct)) = (tuple, self.ct.as_mut()) {
            let known = lock(classifier).knows(&t, now_ms);
            if !known {
                self.counters.ct_lookups += 1;
                match ct.lookup(&t) {
                    Ok(Lookup::Found(orig)) if orig == t => orientation = Orientation::Original,
                    Ok(Lookup::Found(orig)) => orientation = Orientation::Reply { orig },
                    Ok(Lookup::Missing) => orientation = Orientation::Original,
                    Err(_) => self.counters.ct_lookup_errors += 1,
                }
            }
        }
        let iif = self.ifname(p.indev);
        let oif = self.ifname(p.outdev);
        let pkt = PacketIn {
            hook: Hook::from_nf(p.hook).unwrap_or(Hook::Input),
            iif: iif.as_deref(),
            oif: oif.as_deref(),
            orientation,
            data: p.payload,
        };
        self.counters.packets += 1;
        // Why one lock for both: the event describes this decision under the policy that made
        // it (a reload on another thread may replace the policy right after).
        let (d, event) = {
            let mut c = lock(classifier);
            let d = c.classify(&pkt, now_ms);
            let event = c.block_event(&d, clock.unix_ns());
            (d, event)
        };
        let msg = match d.verdict {
            Verdict::Accept => netlink::verdict(p.queue, p.id, NfVerdict::Accept),
            Verdict::Drop => netlink::verdict(p.queue, p.id, NfVerdict::Drop),
            // Accepted towards the ruleset's app_reject chain, which rejects it.
            Verdict::Reject => {
                netlink::verdict_with_mark(p.queue, p.id, (p.mark & !MARK_MASK) | REJECT_MARK)
            }
        };
        if send(&self.queue.sock, msg).is_err() {
            self.counters.verdict_errors += 1;
        }
        // Why after the verdict: an accepted first packet is confirmed into the conntrack table
        // only once it passes the rest of the hooks, which the verdict triggers synchronously.
        if let (Some(mark), Some((orig, _)), Some(ct)) = (d.ct_mark, d.conn, self.ct.as_mut()) {
            match ct.set_mark(&orig, mark) {
                Ok(true) => self.counters.ct_marks_set += 1,
                Ok(false) => self.counters.ct_marks_missing += 1,
                Err(_) => self.counters.ct_mark_errors += 1,
            }
        }
        if let Some(ev) = event {
            if events.emit(&ev).is_err() {
                self.counters.event_errors += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_counters_add_up_field_by_field() {
        let one = ShellCounters {
            packets: 1,
            malformed: 2,
            recv_errors: 3,
            verdict_errors: 4,
            ct_lookups: 5,
            ct_lookup_errors: 6,
            ct_marks_set: 7,
            ct_marks_missing: 8,
            ct_mark_errors: 9,
            event_errors: 10,
        };
        let mut sum = ShellCounters::default();
        sum.add(&one);
        sum.add(&one);
        assert_eq!(
            sum,
            ShellCounters {
                packets: 2,
                malformed: 4,
                recv_errors: 6,
                verdict_errors: 8,
                ct_lookups: 10,
                ct_lookup_errors: 12,
                ct_marks_set: 14,
                ct_marks_missing: 16,
                ct_mark_errors: 18,
                event_errors: 20,
            }
        );
    }

    #[test]
    fn a_poisoned_classifier_lock_still_hands_out_the_value() {
        let m = Mutex::new(5);
        let _ = std::thread::scope(|s| {
            s.spawn(|| {
                let _g = m.lock().unwrap();
                panic!("poison it");
            })
            .join()
        });
        assert!(m.is_poisoned());
        assert_eq!(*lock(&m), 5);
    }
}
