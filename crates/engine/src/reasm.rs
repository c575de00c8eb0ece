//! IP reassembly as the kernel's conntrack defragmentation does it (`nf_defrag_ipv4` through
//! `ip_defrag`, `nf_defrag_ipv6` through `nf_ct_frag6_gather`): with conntrack in use, the
//! ruleset never sees a fragment, only whole datagrams, and a datagram that never completes,
//! overlaps itself or outgrows 64 KiB never passes at all. Pure: fragments and time in,
//! outcomes out; every queue, fragment and byte is bounded.
//!
//! The checks follow Linux 6.x: `ip_frag_queue` (IPv4) and `nf_ct_frag6_queue` (IPv6) for the
//! length rules, `inet_frag_queue_insert` for duplicates (dropped alone) and overlaps (the
//! whole datagram dropped, RFC 5722), a queue's timer started when it is created
//! (`ipfrag_time`, 30 s), and a memory ceiling past which fragments are refused.

use std::collections::VecDeque;
use std::net::IpAddr;

use crate::decode::FragmentView;
use crate::FastMap;

/// Datagrams being reassembled at once.
// Why: the kernel bounds reassembly by memory (ipfrag_high_thresh, 4 MiB); a queue per
// minimum-size fragment of that budget is far below this, so the count only guards the map.
pub const MAX_QUEUES: usize = 65_536;
/// Fragment data held across all queues, bytes (Linux `ipfrag_high_thresh`'s default).
// Why: the kernel counts each skb's truesize, so it refuses earlier than this data-only count
// would; reassembly of ordinary traffic never comes near either.
pub const MAX_HELD_BYTES: usize = 4 * 1024 * 1024;
/// How long a datagram may take to complete (Linux `ipfrag_time`, 30 s), from its first
/// fragment's arrival.
pub const TIMEOUT_NS: u64 = 30_000_000_000;
/// An IPv4 queue restarts (its fragments dropped) when its source's fragment count moved by
/// more than this since the queue's previous fragment, i.e. when at least this many of the
/// source's other fragments came in between (Linux `ipfrag_max_dist`, 64).
pub const MAX_DIST: u32 = 64;
/// IPv4 sources whose fragment count is kept for [`MAX_DIST`] (the kernel's inet_peer
/// entries); past this the counts start over.
pub const MAX_PEERS: usize = 65_536;
/// Largest IPv4 datagram / IPv6 payload (64 KiB − 1).
const MAX_LEN: u32 = 65_535;

/// A datagram's identity: addresses, protocol (IPv4 only: IPv6 queues are keyed without it,
/// as `nf_ct_frag6` does) and identification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QueueKey {
    /// Source.
    pub src: IpAddr,
    /// Destination.
    pub dst: IpAddr,
    /// IPv4 protocol; 0 for IPv6.
    pub protocol: u8,
    /// Identification.
    pub id: u32,
}

impl QueueKey {
    /// The key of a fragment.
    pub fn of(f: &FragmentView<'_>) -> Self {
        Self {
            src: f.src,
            dst: f.dst,
            protocol: if f.src.is_ipv4() { f.protocol } else { 0 },
            id: f.id,
        }
    }
}

/// Why fragments were dropped by reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropCause {
    /// A fragment overlaps data already queued without being a duplicate of one run: the
    /// whole datagram is dropped.
    Overlap,
    /// A fragment repeats data already queued: only it is dropped.
    Duplicate,
    /// The lengths disagree (a second last fragment, data past the last fragment's end, an
    /// empty fragment, IPv6 data not a multiple of 8 before the end: see
    /// [`Outcome::Unaligned`]).
    BadLength,
    /// The datagram would exceed 65,535 bytes.
    Oversize,
    /// The datagram did not complete within [`TIMEOUT_NS`].
    Timeout,
    /// Reassembly memory ([`MAX_HELD_BYTES`] / [`MAX_QUEUES`]) is full.
    MemoryFull,
    /// An IPv4 queue restarted: [`MAX_DIST`] or more fragments from its source arrived
    /// between two of its own (`ip_frag_too_far`); what it held is dropped.
    TooFar,
}

impl DropCause {
    /// Stable name (anomaly counters).
    pub fn name(self) -> &'static str {
        match self {
            DropCause::Overlap => "fragment_overlap",
            DropCause::Duplicate => "fragment_duplicate",
            DropCause::BadLength => "fragment_bad_length",
            DropCause::Oversize => "fragment_oversize",
            DropCause::Timeout => "fragment_timeout",
            DropCause::MemoryFull => "fragment_memory_full",
            DropCause::TooFar => "fragment_too_far",
        }
    }
}

/// What one fragment did. `T` is the caller's token for each fragment (what it needs to
/// account for it later); tokens come back exactly once, in arrival order within a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome<T> {
    /// Queued; the datagram is not complete yet.
    Queued,
    /// The datagram is complete: its bytes (the first fragment's IP header, lengths and
    /// fragment fields rewritten, then the data) and the tokens of all its fragments.
    Complete {
        /// The reassembled IP datagram.
        datagram: Vec<u8>,
        /// Every fragment's token, this one last.
        tokens: Vec<T>,
    },
    /// IPv6 data before the end not a multiple of 8: the datagram queued so far is dropped
    /// and this fragment goes on alone, unreassembled.
    Unaligned {
        /// The queued fragments' tokens (dropped).
        dropped: Vec<T>,
        /// This fragment's token (judged alone).
        token: T,
    },
    /// Fragments dropped: this one alone (duplicate, some length errors, memory) or with the
    /// whole datagram queued so far.
    Dropped {
        /// Why.
        cause: DropCause,
        /// The dropped fragments' tokens (this one last).
        tokens: Vec<T>,
    },
}

/// One datagram being reassembled.
#[derive(Debug)]
struct Queue<T> {
    /// The timer's generation in `deadlines`.
    generation: u64,
    /// IPv4: its source's fragment count at this queue's last fragment.
    rid: u32,
    /// Runs of contiguous data, sorted, as `inet_frag_queue_insert` keeps them: a fragment
    /// that starts where the last run ends extends it, any other starts its own.
    runs: Vec<(u32, u32)>,
    /// (offset, data) of each fragment.
    pieces: Vec<(u32, Vec<u8>)>,
    /// Data bytes received (`meat`).
    received: u32,
    /// End of the datagram's data: the last fragment's end, or the furthest end so far.
    len: u32,
    first_in: bool,
    last_in: bool,
    /// The first fragment's header, and where its fragment-header next-header byte is (IPv6).
    first_header: Vec<u8>,
    next_header_at: Option<usize>,
    /// IPv6: the fragment header's next header.
    next_header: u8,
    tokens: Vec<T>,
}

/// Reassembly state: the queues, their timers and the memory they hold.
#[derive(Debug)]
pub struct Reassembler<T> {
    queues: FastMap<QueueKey, Queue<T>>,
    /// (deadline, key, generation) in creation order: deadlines never decrease.
    deadlines: VecDeque<(u64, QueueKey, u64)>,
    held_bytes: usize,
    next_generation: u64,
    /// IPv4 fragments seen per source (`inet_peer.rid`).
    peers: FastMap<IpAddr, u32>,
    /// Queues restarted by [`MAX_DIST`] since the last [`Reassembler::take_restarted`].
    restarted: Vec<(QueueKey, Vec<T>)>,
}

impl<T> Default for Reassembler<T> {
    fn default() -> Self {
        Self {
            queues: FastMap::default(),
            deadlines: VecDeque::new(),
            held_bytes: 0,
            next_generation: 0,
            peers: FastMap::default(),
            restarted: Vec::new(),
        }
    }
}

impl<T> Reassembler<T> {
    /// No datagram pending.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Data bytes held.
    pub fn held_bytes(&self) -> usize {
        self.held_bytes
    }

    /// The fragments dropped because their queue restarted ([`DropCause::TooFar`]) since the
    /// last call (call after each [`Reassembler::fragment`]).
    pub fn take_restarted(&mut self) -> Vec<(QueueKey, Vec<T>)> {
        std::mem::take(&mut self.restarted)
    }

    /// Datagrams whose timer ran out by `now_ns`, with their tokens (call before
    /// [`Reassembler::fragment`] at each new time).
    pub fn expire(&mut self, now_ns: u64) -> Vec<(QueueKey, Vec<T>)> {
        let mut out = Vec::new();
        while let Some(&(deadline, key, generation)) = self.deadlines.front() {
            if deadline > now_ns {
                break;
            }
            self.deadlines.pop_front();
            if self.queues.get(&key).map(|q| q.generation) == Some(generation) {
                if let Some(q) = self.remove(&key) {
                    out.push((key, q.tokens));
                }
            }
        }
        out
    }

    /// Every pending datagram (end of input: none of them can complete now).
    pub fn drain(&mut self) -> Vec<(QueueKey, Vec<T>)> {
        self.deadlines.clear();
        self.held_bytes = 0;
        let mut all: Vec<(u64, QueueKey, Vec<T>)> = self
            .queues
            .drain()
            .map(|(k, q)| (q.generation, k, q.tokens))
            .collect();
        all.sort_by_key(|(g, _, _)| *g);
        all.into_iter().map(|(_, k, t)| (k, t)).collect()
    }

    fn remove(&mut self, key: &QueueKey) -> Option<Queue<T>> {
        let q = self.queues.remove(key)?;
        self.held_bytes -= q.pieces.iter().map(|(_, d)| d.len()).sum::<usize>();
        Some(q)
    }

    /// `ip_frag_too_far`: count the fragment for its source; when the count moved by more
    /// than [`MAX_DIST`] since this queue's last fragment, restart the queue
    /// (`ip_frag_reinit`: its fragments dropped, its timer started again).
    fn too_far(&mut self, key: &QueueKey, now_ns: u64) {
        if self.peers.len() >= MAX_PEERS && !self.peers.contains_key(&key.src) {
            self.peers.clear();
        }
        let count = self.peers.entry(key.src).or_insert(0);
        *count = count.wrapping_add(1);
        let end = *count;
        let Some(q) = self.queues.get_mut(key) else {
            return;
        };
        let start = std::mem::replace(&mut q.rid, end);
        if q.pieces.is_empty() || end.wrapping_sub(start) <= MAX_DIST {
            return;
        }
        let held: usize = q.pieces.iter().map(|(_, d)| d.len()).sum();
        let tokens = std::mem::take(&mut q.tokens);
        q.runs.clear();
        q.pieces.clear();
        q.received = 0;
        q.len = 0;
        q.first_in = false;
        q.last_in = false;
        q.first_header.clear();
        q.next_header_at = None;
        q.generation = self.next_generation;
        self.next_generation += 1;
        self.deadlines
            .push_back((now_ns.saturating_add(TIMEOUT_NS), *key, q.generation));
        self.held_bytes -= held;
        self.restarted.push((*key, tokens));
    }

    fn kill(&mut self, key: &QueueKey, cause: DropCause, token: T) -> Outcome<T> {
        let mut tokens = self.remove(key).map(|q| q.tokens).unwrap_or_default();
        tokens.push(token);
        Outcome::Dropped { cause, tokens }
    }

    /// Queue one fragment arriving at `now_ns` (after [`Reassembler::expire`]).
    pub fn fragment(&mut self, f: &FragmentView<'_>, token: T, now_ns: u64) -> Outcome<T> {
        let key = QueueKey::of(f);
        let v6 = f.next_header_at.is_some();
        let offset = f.offset;
        let mut end = offset.saturating_add(f.data_len);
        if v6 && end > MAX_LEN {
            return Outcome::Dropped {
                cause: DropCause::Oversize,
                tokens: vec![token],
            };
        }
        if !self.queues.contains_key(&key) {
            if self.queues.len() >= MAX_QUEUES || self.held_bytes > MAX_HELD_BYTES {
                return Outcome::Dropped {
                    cause: DropCause::MemoryFull,
                    tokens: vec![token],
                };
            }
            let generation = self.next_generation;
            self.next_generation += 1;
            self.deadlines
                .push_back((now_ns.saturating_add(TIMEOUT_NS), key, generation));
            self.queues.insert(
                key,
                Queue {
                    generation,
                    rid: 0,
                    runs: Vec::new(),
                    pieces: Vec::new(),
                    received: 0,
                    len: 0,
                    first_in: false,
                    last_in: false,
                    first_header: Vec::new(),
                    next_header_at: None,
                    next_header: 0,
                    tokens: Vec::new(),
                },
            );
        } else if self.held_bytes > MAX_HELD_BYTES {
            return Outcome::Dropped {
                cause: DropCause::MemoryFull,
                tokens: vec![token],
            };
        }
        if !v6 {
            self.too_far(&key, now_ns);
        }
        let Some(q) = self.queues.get_mut(&key) else {
            unreachable!("inserted above")
        };
        // The length rules: (cause, whether the whole datagram goes). IPv4 kills the queue
        // on any of them; IPv6 drops the fragment alone, except for data that is not a
        // multiple of 8 before the end.
        let mut error = None;
        if !f.more {
            if end < q.len || (q.last_in && end != q.len) {
                error = Some(!v6);
            } else {
                q.last_in = true;
                q.len = end;
            }
        } else {
            if end & 7 != 0 {
                if v6 {
                    // `nf_ct_frag6_queue` kills the queue and returns -EPROTO, on which
                    // `nf_ct_frag6_gather` lets this fragment go on unreassembled.
                    let dropped = self.remove(&key).map(|q| q.tokens).unwrap_or_default();
                    return Outcome::Unaligned { dropped, token };
                }
                end &= !7;
            }
            if error.is_none() && end > q.len {
                if q.last_in {
                    error = Some(!v6);
                } else {
                    q.len = end;
                }
            }
        }
        if error.is_none() && end == offset {
            error = Some(!v6);
        }
        if let Some(kills) = error {
            if kills {
                return self.kill(&key, DropCause::BadLength, token);
            }
            return Outcome::Dropped {
                cause: DropCause::BadLength,
                tokens: vec![token],
            };
        }
        // `inet_frag_queue_insert`.
        match insert_run(&mut q.runs, offset, end) {
            Insert::Duplicate => {
                return Outcome::Dropped {
                    cause: DropCause::Duplicate,
                    tokens: vec![token],
                }
            }
            Insert::Overlap => return self.kill(&key, DropCause::Overlap, token),
            Insert::Done => {}
        }
        let want = (end - offset) as usize;
        let mut data = f.data[..f.data.len().min(want)].to_vec();
        // A capture cut short: the missing bytes were on the wire; zeros stand in for them.
        data.resize(want, 0);
        self.held_bytes += data.len();
        q.pieces.push((offset, data));
        q.received += end - offset;
        q.tokens.push(token);
        if offset == 0 {
            q.first_in = true;
            q.first_header = f.header.to_vec();
            q.next_header_at = f.next_header_at;
            q.next_header = f.protocol;
        }
        if !(q.first_in && q.last_in && q.received == q.len) {
            return Outcome::Queued;
        }
        let Some(mut q) = self.remove(&key) else {
            unreachable!("present above")
        };
        let header_len = q.first_header.len() as u32;
        let too_big = if v6 {
            header_len - 40 + q.len > MAX_LEN
        } else {
            header_len + q.len > MAX_LEN
        };
        if too_big {
            return Outcome::Dropped {
                cause: DropCause::Oversize,
                tokens: q.tokens,
            };
        }
        q.pieces.sort_by_key(|(o, _)| *o);
        let mut datagram = q.first_header;
        if let Some(at) = q.next_header_at {
            datagram[at] = q.next_header;
            let payload = (header_len - 40 + q.len) as u16;
            datagram[4..6].copy_from_slice(&payload.to_be_bytes());
        } else {
            let total = (header_len + q.len) as u16;
            datagram[2..4].copy_from_slice(&total.to_be_bytes());
            // Keep DF, clear MF and the offset.
            datagram[6] &= 0x40;
            datagram[7] = 0;
        }
        for (_, d) in &q.pieces {
            datagram.extend_from_slice(d);
        }
        Outcome::Complete {
            datagram,
            tokens: q.tokens,
        }
    }
}

enum Insert {
    Done,
    Duplicate,
    Overlap,
}

/// `inet_frag_queue_insert` on runs `[start, end)`: appended to the last run when the
/// fragment starts at its end, a run of its own elsewhere; a duplicate lies within one run;
/// anything else that touches queued data overlaps.
fn insert_run(runs: &mut Vec<(u32, u32)>, offset: u32, end: u32) -> Insert {
    let Some(&(_, last_end)) = runs.last() else {
        runs.push((offset, end));
        return Insert::Done;
    };
    if last_end < end {
        // Goes past the end: it cannot lie within a run.
        if offset < last_end {
            return Insert::Overlap;
        }
        if offset == last_end {
            if let Some(last) = runs.last_mut() {
                last.1 = end;
            }
        } else {
            runs.push((offset, end));
        }
        return Insert::Done;
    }
    // Runs are disjoint and sorted: the first whose end is past `offset` is the only one
    // that can hold the fragment.
    let i = runs.partition_point(|&(_, e)| e <= offset);
    match runs.get(i) {
        Some(&(s, e)) if s < end => {
            if offset >= s && end <= e {
                Insert::Duplicate
            } else {
                Insert::Overlap
            }
        }
        _ => {
            runs.insert(i, (offset, end));
            Insert::Done
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{self, fragment_view, LinkType, Transport};

    /// An IPv4 fragment of `data` (the datagram's data) at `offset`, `len` bytes.
    fn v4(id: u16, data: &[u8], offset: usize, len: usize, more: bool) -> Vec<u8> {
        let piece = &data[offset..(offset + len).min(data.len())];
        let mut b = vec![0x45, 0];
        b.extend_from_slice(&((20 + piece.len()) as u16).to_be_bytes());
        b.extend_from_slice(&id.to_be_bytes());
        let field = (offset / 8) as u16 | if more { 0x2000 } else { 0 };
        b.extend_from_slice(&field.to_be_bytes());
        b.extend_from_slice(&[64, 17, 0, 0, 192, 0, 2, 5, 198, 51, 100, 7]);
        b.extend_from_slice(piece);
        b
    }

    /// An IPv6 fragment (a destination-options header before the fragment header).
    fn v6(id: u32, data: &[u8], offset: usize, len: usize, more: bool) -> Vec<u8> {
        let piece = &data[offset..(offset + len).min(data.len())];
        let mut b = vec![0x60, 0, 0, 0];
        b.extend_from_slice(&((8 + 8 + piece.len()) as u16).to_be_bytes());
        b.extend_from_slice(&[60, 64]);
        let a: std::net::Ipv6Addr = "2001:db8:1::5".parse().unwrap();
        let z: std::net::Ipv6Addr = "2001:db8:2::7".parse().unwrap();
        b.extend_from_slice(&a.octets());
        b.extend_from_slice(&z.octets());
        b.extend_from_slice(&[44, 0, 1, 4, 0, 0, 0, 0]);
        let field = (offset as u16) | u16::from(more);
        b.extend_from_slice(&[17, 0]);
        b.extend_from_slice(&field.to_be_bytes());
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(piece);
        b
    }

    fn udp(len: usize) -> Vec<u8> {
        let mut d = vec![0x30, 0x39, 0x14, 0xe9];
        d.extend_from_slice(&(len as u16).to_be_bytes());
        d.extend_from_slice(&[0, 0]);
        d.extend((8..len).map(|i| i as u8));
        d
    }

    fn feed(r: &mut Reassembler<usize>, pkt: &[u8], token: usize, now_ns: u64) -> Outcome<usize> {
        let link = if pkt[0] >> 4 == 4 {
            LinkType::Ipv4
        } else {
            LinkType::Ipv6
        };
        let f = fragment_view(link, pkt).expect("a fragment");
        r.fragment(&f, token, now_ns)
    }

    fn complete(o: Outcome<usize>) -> (Vec<u8>, Vec<usize>) {
        match o {
            Outcome::Complete { datagram, tokens } => (datagram, tokens),
            other => panic!("not complete: {other:?}"),
        }
    }

    #[test]
    fn in_order_and_reversed_ipv4_datagrams_come_out_whole() {
        let data = udp(40);
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0]] {
            let parts = [
                v4(7, &data, 0, 16, true),
                v4(7, &data, 16, 16, true),
                v4(7, &data, 32, 8, false),
            ];
            let mut r = Reassembler::default();
            assert_eq!(feed(&mut r, &parts[order[0]], order[0], 0), Outcome::Queued);
            assert_eq!(feed(&mut r, &parts[order[1]], order[1], 1), Outcome::Queued);
            let (dg, tokens) = complete(feed(&mut r, &parts[order[2]], order[2], 2));
            assert_eq!(tokens, order.to_vec());
            assert!(r.is_empty() && r.held_bytes() == 0);
            let ip = decode::decode_ipv4(&dg).unwrap();
            assert_eq!((ip.len, ip.frag), (60, None));
            match ip.l4 {
                Transport::Udp(u) => {
                    assert_eq!((u.src, u.dst, u.payload), (12345, 5353, &data[8..]))
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn ipv6_datagram_keeps_its_extension_headers_and_decodes() {
        let data = udp(56);
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v6(9, &data, 24, 32, false), 1, 0),
            Outcome::Queued
        );
        let (dg, tokens) = complete(feed(&mut r, &v6(9, &data, 0, 24, true), 0, 0));
        assert_eq!(tokens, [1, 0]);
        let ip = decode::decode_ipv6(&dg).unwrap();
        assert_eq!((ip.frag, ip.ext_headers, ip.len), (None, 1, 40 + 8 + 56));
        assert!(matches!(ip.l4, Transport::Udp(u) if u.dst == 5353 && u.payload == &data[8..]));
    }

    #[test]
    fn a_tiny_first_fragment_still_yields_the_whole_transport_header() {
        // RFC 1858: the TCP header split so that the first fragment has only the ports.
        let mut tcp = vec![
            0x30, 0x39, 0x00, 0x16, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        tcp.extend_from_slice(b"hello!!!");
        let mut r = Reassembler::default();
        let mut first = v4(3, &tcp, 0, 8, true);
        first[9] = 6;
        let mut rest = v4(3, &tcp, 8, 20, false);
        rest[9] = 6;
        assert!(
            decode::decode_ipv4(&first).is_err(),
            "alone, the first fragment is truncated"
        );
        assert_eq!(feed(&mut r, &first, 0, 0), Outcome::Queued);
        let (dg, _) = complete(feed(&mut r, &rest, 1, 0));
        match decode::decode_ipv4(&dg).unwrap().l4 {
            Transport::Tcp(t) => assert_eq!((t.dst, t.flags), (22, 0x02)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_overlap_drops_the_whole_datagram_and_a_duplicate_only_itself() {
        let data = udp(40);
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v4(1, &data, 0, 16, true), 0, 0),
            Outcome::Queued
        );
        // Exactly the same fragment again: dropped alone.
        assert_eq!(
            feed(&mut r, &v4(1, &data, 0, 16, true), 1, 0),
            Outcome::Dropped {
                cause: DropCause::Duplicate,
                tokens: vec![1]
            }
        );
        assert_eq!(
            feed(&mut r, &v4(1, &data, 16, 16, true), 2, 0),
            Outcome::Queued
        );
        // Within the run 0..32: a duplicate too.
        assert_eq!(
            feed(&mut r, &v4(1, &data, 8, 16, true), 3, 0),
            Outcome::Dropped {
                cause: DropCause::Duplicate,
                tokens: vec![3]
            }
        );
        // 24..40 overlaps 24..32 and goes past: the datagram is gone.
        assert_eq!(
            feed(&mut r, &v4(1, &data, 24, 16, false), 4, 0),
            Outcome::Dropped {
                cause: DropCause::Overlap,
                tokens: vec![0, 2, 4]
            }
        );
        assert!(r.is_empty() && r.held_bytes() == 0);
        // The same id afterwards starts a new datagram.
        assert_eq!(
            feed(&mut r, &v4(1, &data, 32, 8, false), 5, 0),
            Outcome::Queued
        );
    }

    #[test]
    fn data_repeated_across_two_runs_is_an_overlap_as_in_the_kernel() {
        // Filled out of order, 0..8 | 8..16 | 16..24 are three runs, so 0..16 is not within one.
        let data = udp(40);
        let mut r = Reassembler::default();
        for (i, off) in [16usize, 0, 8].into_iter().enumerate() {
            assert_eq!(
                feed(&mut r, &v4(2, &data, off, 8, true), i, 0),
                Outcome::Queued
            );
        }
        assert!(matches!(
            feed(&mut r, &v4(2, &data, 0, 16, true), 3, 0),
            Outcome::Dropped { cause: DropCause::Overlap, tokens } if tokens == [0, 1, 2, 3]
        ));
        // In order, 0..24 is one run and the same fragment is a duplicate.
        for (i, off) in [0usize, 8, 16].into_iter().enumerate() {
            assert_eq!(
                feed(&mut r, &v4(4, &data, off, 8, true), i, 0),
                Outcome::Queued
            );
        }
        assert!(matches!(
            feed(&mut r, &v4(4, &data, 0, 16, true), 3, 0),
            Outcome::Dropped {
                cause: DropCause::Duplicate,
                ..
            }
        ));
    }

    #[test]
    fn length_errors_kill_ipv4_queues_and_drop_single_ipv6_fragments() {
        let data = udp(48);
        // Two last fragments with different ends.
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v4(5, &data, 0, 16, true), 0, 0),
            Outcome::Queued
        );
        assert_eq!(
            feed(&mut r, &v4(5, &data, 32, 16, false), 1, 0),
            Outcome::Queued
        );
        assert_eq!(
            feed(&mut r, &v4(5, &data, 16, 8, false), 2, 0),
            Outcome::Dropped {
                cause: DropCause::BadLength,
                tokens: vec![0, 1, 2]
            }
        );
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v6(5, &data, 0, 16, true), 0, 0),
            Outcome::Queued
        );
        assert_eq!(
            feed(&mut r, &v6(5, &data, 32, 16, false), 1, 0),
            Outcome::Queued
        );
        assert_eq!(
            feed(&mut r, &v6(5, &data, 16, 8, false), 2, 0),
            Outcome::Dropped {
                cause: DropCause::BadLength,
                tokens: vec![2]
            }
        );
        let (dg, tokens) = complete(feed(&mut r, &v6(5, &data, 16, 16, true), 3, 0));
        assert_eq!((tokens, dg.len()), (vec![0, 1, 3], 40 + 8 + 48));
        // Data before the end not a multiple of 8: IPv4 rounds it down, IPv6 drops the queue.
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v4(6, &data, 0, 20, true), 0, 0),
            Outcome::Queued
        );
        // 20 bytes queued as 16, so 16..48 completes it.
        let (dg, tokens) = complete(feed(&mut r, &v4(6, &data, 16, 32, false), 1, 0));
        assert_eq!((tokens, &dg[20..]), (vec![0, 1], &data[..]));
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v6(6, &data, 32, 16, false), 0, 0),
            Outcome::Queued
        );
        assert_eq!(
            feed(&mut r, &v6(6, &data, 0, 20, true), 1, 0),
            Outcome::Unaligned {
                dropped: vec![0],
                token: 1
            }
        );
        assert!(r.is_empty() && r.held_bytes() == 0);
    }

    #[test]
    fn datagrams_past_64_kib_are_dropped() {
        let data = vec![0u8; 65_600];
        // IPv4: the last fragment takes the data to 65,528 + 100 bytes.
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v4(8, &data, 65_528, 100, false), 1, 0),
            Outcome::Queued
        );
        let mut first = v4(8, &data, 0, 65_528, true);
        // (The first fragment's own total length cannot exceed 64 KiB: only its claimed
        // extent matters here, so shrink it to 8 bytes of data at offset 0 and fill the
        // gap with 8-byte-aligned pieces.)
        first.truncate(20 + 8);
        first[2..4].copy_from_slice(&28u16.to_be_bytes());
        assert_eq!(feed(&mut r, &first, 0, 0), Outcome::Queued);
        let mut off = 8;
        let mut t = 2;
        let last = loop {
            let len = (65_528 - off).min(65_000);
            let o = feed(&mut r, &v4(8, &data, off, len, true), t, 0);
            off += len;
            t += 1;
            if off == 65_528 {
                break o;
            }
            assert_eq!(o, Outcome::Queued);
        };
        assert!(
            matches!(last, Outcome::Dropped { cause: DropCause::Oversize, tokens } if tokens.len() == t)
        );
        // IPv6: a fragment reaching past 65,535 is refused on arrival.
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v6(8, &data, 65_528, 100, false), 0, 0),
            Outcome::Dropped {
                cause: DropCause::Oversize,
                tokens: vec![0]
            }
        );
    }

    #[test]
    fn a_datagram_has_30_seconds_from_its_first_fragment() {
        let data = udp(40);
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v4(9, &data, 32, 8, false), 0, 1_000),
            Outcome::Queued
        );
        assert_eq!(
            feed(&mut r, &v4(10, &data, 32, 8, false), 1, 2_000),
            Outcome::Queued
        );
        assert!(r.expire(1_000 + TIMEOUT_NS - 1).is_empty());
        assert_eq!(
            feed(&mut r, &v4(9, &data, 0, 32, true), 2, TIMEOUT_NS).clone_tokens(),
            vec![0, 2]
        );
        let gone = r.expire(2_000 + TIMEOUT_NS);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].0.id, gone[0].1.clone()), (10, vec![1]));
        assert!(r.is_empty());
        assert_eq!(
            feed(&mut r, &v4(11, &data, 32, 8, false), 3, 5),
            Outcome::Queued
        );
        assert_eq!(
            r.drain()
                .into_iter()
                .map(|(k, t)| (k.id, t))
                .collect::<Vec<_>>(),
            [(11, vec![3])]
        );
        assert_eq!(r.held_bytes(), 0);
    }

    #[test]
    fn an_ipv4_queue_restarts_after_64_other_fragments_from_its_source() {
        let data = udp(40);
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v4(100, &data, 0, 16, true), 0, 0),
            Outcome::Queued
        );
        // 63 fragments of other datagrams from the same source: still within the distance.
        for i in 0..63u16 {
            let o = feed(
                &mut r,
                &v4(200 + i, &data, 32, 8, false),
                1 + usize::from(i),
                0,
            );
            assert_eq!(o, Outcome::Queued);
        }
        assert_eq!(
            feed(&mut r, &v4(100, &data, 16, 16, true), 65, 0),
            Outcome::Queued
        );
        assert!(r.take_restarted().is_empty());
        // 64 more: the next fragment of datagram 100 finds its queue too far behind.
        for i in 0..64u16 {
            let o = feed(
                &mut r,
                &v4(300 + i, &data, 32, 8, false),
                66 + usize::from(i),
                0,
            );
            assert_eq!(o, Outcome::Queued);
        }
        assert_eq!(
            feed(&mut r, &v4(100, &data, 32, 8, false), 131, 0),
            Outcome::Queued
        );
        let restarted = r.take_restarted();
        assert_eq!(restarted.len(), 1);
        assert_eq!(
            (restarted[0].0.id, restarted[0].1.clone()),
            (100, vec![0, 65])
        );
        // The restarted queue completes from fresh fragments.
        assert_eq!(
            feed(&mut r, &v4(100, &data, 16, 16, true), 132, 0),
            Outcome::Queued
        );
        let (_, tokens) = complete(feed(&mut r, &v4(100, &data, 0, 16, true), 133, 0));
        assert_eq!(tokens, [131, 132, 133]);
        // IPv6 has no such distance.
        let mut r = Reassembler::default();
        assert_eq!(
            feed(&mut r, &v6(100, &data, 0, 16, true), 0, 0),
            Outcome::Queued
        );
        for i in 0..200u32 {
            assert_eq!(
                feed(&mut r, &v6(200 + i, &data, 32, 8, false), 1, 0),
                Outcome::Queued
            );
        }
        let (_, tokens) = complete(feed(&mut r, &v6(100, &data, 16, 24, false), 2, 0));
        assert_eq!(tokens, [0, 2]);
        assert!(r.take_restarted().is_empty());
    }

    #[test]
    fn reassembly_memory_is_bounded() {
        let data = vec![7u8; 1_480];
        let mut r = Reassembler::default();
        let mut refused = 0;
        for id in 0..4_000u16 {
            match feed(&mut r, &v4(id, &data, 0, 1_480, true), usize::from(id), 0) {
                Outcome::Queued => {}
                Outcome::Dropped {
                    cause: DropCause::MemoryFull,
                    tokens,
                } => {
                    assert_eq!(tokens, [usize::from(id)]);
                    refused += 1;
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(
            r.held_bytes() <= MAX_HELD_BYTES + 1_480,
            "{}",
            r.held_bytes()
        );
        assert_eq!(refused, 4_000 - (MAX_HELD_BYTES / 1_480 + 1));
    }

    impl Outcome<usize> {
        fn clone_tokens(&self) -> Vec<usize> {
            match self {
                Outcome::Complete { tokens, .. } | Outcome::Dropped { tokens, .. } => {
                    tokens.clone()
                }
                Outcome::Unaligned { dropped, token } => [&dropped[..], &[*token]].concat(),
                Outcome::Queued => vec![],
            }
        }
    }
}
