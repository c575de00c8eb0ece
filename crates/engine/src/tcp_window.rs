//! TCP sequence-window tracking as Linux conntrack does it (`nf_conntrack_proto_tcp.c`,
//! `tcp_in_window` and the per-direction `ip_ct_tcp_state`), for [`crate::conntrack`].
//!
//! Each direction keeps the highest sequence end it sent, the highest end the peer's window
//! allows, its largest window and highest ACK. A segment must lie in the peer's window and
//! acknowledge only data that was seen; otherwise conntrack marks it invalid (the stateful
//! prelude drops it) or ignores it (it passes without changing the connection), unless the
//! direction is liberal (`nf_conntrack_tcp_be_liberal=1`, or a connection picked up
//! mid-stream). All arithmetic is modulo 2^32, as sequence numbers are.

use crate::decode::Tcp;

/// Per-direction flags (the kernel's `IP_CT_TCP_FLAG_*` meanings).
pub(crate) mod side_flags {
    /// The direction sent a window scale option.
    pub const WINDOW_SCALE: u8 = 0x01;
    /// The direction allows SACK.
    pub const SACK_PERM: u8 = 0x02;
    /// The direction started the close (sent the first FIN).
    pub const CLOSE_INIT: u8 = 0x04;
    /// Out-of-window segments of this direction are accepted.
    pub const BE_LIBERAL: u8 = 0x08;
    /// The direction sent data not acknowledged yet.
    pub const DATA_UNACKNOWLEDGED: u8 = 0x10;
    /// `max_ack` holds an ACK.
    pub const MAXACK_SET: u8 = 0x20;
    /// (In `last_flags` only.) An RFC 5961 challenge ACK may answer the ignored SYN.
    pub const EXP_CHALLENGE_ACK: u8 = 0x40;
    /// (In `last_flags` only.) Simultaneous open seen.
    pub const SIMULTANEOUS_OPEN: u8 = 0x80;
}
use side_flags::*;

/// Segment classes, the rows of conntrack's state table (the kernel's `tcp_bit_set`).
pub(crate) mod class {
    /// SYN without ACK.
    pub const SYN: u8 = 0;
    /// SYN with ACK.
    pub const SYNACK: u8 = 1;
    /// FIN (no SYN, no RST).
    pub const FIN: u8 = 2;
    /// ACK only.
    pub const ACK: u8 = 3;
    /// RST.
    pub const RST: u8 = 4;
    /// None of them.
    pub const NONE: u8 = 5;
}

/// The ACK window below the peer's end that is still acceptable, at least 66,000 bytes.
const MAX_ACK_WINDOW_MIN: u32 = 66_000;
/// Largest window scale (RFC 7323).
const MAX_WSCALE: u8 = 14;

/// `a` comes before `b` in sequence space.
pub(crate) fn before(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a` comes after `b` in sequence space.
pub(crate) fn after(a: u32, b: u32) -> bool {
    before(b, a)
}

/// What one direction of a connection has shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Side {
    /// Highest sequence end sent.
    pub end: u32,
    /// Highest sequence end the peer's window allows.
    pub max_end: u32,
    /// Largest window (scaled) advertised plus SACKed bytes; 0: nothing seen yet.
    pub max_win: u32,
    /// Highest ACK sent.
    pub max_ack: u32,
    /// Window scale in effect.
    pub scale: u8,
    /// [`side_flags`].
    pub flags: u8,
}

/// A connection's window state, and the annotations of the last in-window or ignored segment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// Original (0) and reply (1) direction.
    pub sides: [Side; 2],
    /// Packet class of the last segment (see [`crate::conntrack`]'s `packet_index`).
    pub last_index: u8,
    /// Its direction.
    pub last_dir: u8,
    pub last_seq: u32,
    pub last_ack: u32,
    pub last_end: u32,
    pub last_win: u16,
    pub last_wscale: u8,
    pub last_flags: u8,
    /// Identical ACK segments in a row.
    pub retrans: u8,
}

/// What the window check says of a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// In window: the connection moves on.
    Accept,
    /// Passes, but does not move the connection (old or overlapping data).
    Ignore,
    /// Conntrack marks it invalid.
    Invalid(&'static str),
}

/// The fields of one segment the tracker uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Segment {
    pub seq: u32,
    pub ack: u32,
    pub window: u16,
    pub syn: bool,
    pub ack_flag: bool,
    pub rst: bool,
    /// Sequence end: seq + data + SYN + FIN.
    pub end: u32,
    pub has_options: bool,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    sack_edges: [u32; crate::decode::MAX_SACK_BLOCKS],
    sack_blocks: u8,
}

impl Segment {
    /// The segment of a decoded TCP header.
    pub fn of(tcp: &Tcp<'_>) -> Self {
        use crate::decode::tcp_flags::{ACK, FIN, RST, SYN};
        let syn = tcp.flags & SYN != 0;
        let fin = tcp.flags & FIN != 0;
        Self {
            seq: tcp.seq,
            ack: tcp.ack,
            window: tcp.window,
            syn,
            ack_flag: tcp.flags & ACK != 0,
            rst: tcp.flags & RST != 0,
            end: tcp
                .seq
                .wrapping_add(tcp.data_len)
                .wrapping_add(u32::from(syn))
                .wrapping_add(u32::from(fin)),
            has_options: tcp.has_options,
            wscale: tcp.wscale,
            sack_permitted: tcp.sack_permitted,
            sack_edges: tcp.sack_edges,
            sack_blocks: tcp.sack_blocks,
        }
    }

    /// The highest right edge of its SACK blocks after `ack`, else `ack`.
    fn sack(&self, ack: u32) -> u32 {
        let mut sack = ack;
        for &edge in &self.sack_edges[..usize::from(self.sack_blocks)] {
            if after(edge, sack) {
                sack = edge;
            }
        }
        sack
    }
}

/// A side's window scale and SACK permission from a segment's options (the segment resets
/// them when it carries any option).
pub(crate) fn take_options(side: &mut Side, seg: &Segment) {
    if !seg.has_options {
        return;
    }
    side.scale = 0;
    side.flags &= BE_LIBERAL;
    if seg.sack_permitted {
        side.flags |= SACK_PERM;
    }
    if let Some(ws) = seg.wscale {
        side.scale = ws.min(MAX_WSCALE);
        side.flags |= WINDOW_SCALE;
    }
}

/// The window state of a connection its first packet opens: a SYN, or (`pickup`) a segment
/// seen mid-connection, which makes both directions liberal (its history is unknown).
pub(crate) fn open(seg: &Segment, pickup: bool) -> Window {
    let mut w = Window::default();
    let s = &mut w.sides[0];
    s.end = seg.end;
    s.max_win = u32::from(seg.window).max(1);
    if pickup {
        s.max_end = seg.end.wrapping_add(s.max_win);
        w.sides[0].flags = SACK_PERM | BE_LIBERAL;
        w.sides[1].flags = SACK_PERM | BE_LIBERAL;
    } else {
        s.max_end = seg.end;
        take_options(s, seg);
    }
    w.last_index = class::NONE;
    w
}

fn init_sender(sender: &mut Side, receiver: &mut Side, seg: &Segment, reply: bool) {
    sender.end = seg.end;
    sender.max_end = seg.end;
    sender.max_win = u32::from(seg.window).max(1);
    take_options(sender, seg);
    // Window scaling applies only when both sides offered it.
    if reply && !(sender.flags & WINDOW_SCALE != 0 && receiver.flags & WINDOW_SCALE != 0) {
        sender.scale = 0;
        receiver.scale = 0;
    }
}

fn max_ack_window(sender: &Side) -> u32 {
    sender.max_win.max(MAX_ACK_WINDOW_MIN)
}

/// Where the connection's stored TCP state is, as far as the window check cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// SYN_SENT.
    SynSent,
    /// SYN_RECV.
    SynRecv,
    /// Any other state (or none yet).
    Other,
}

/// The window check of segment `seg` sent in direction `dir` (1: reply) of [`class`]
/// `index`, the connection's stored state being in
/// `phase`; updates `w` as the kernel does. `liberal`: `nf_conntrack_tcp_be_liberal`.
pub(crate) fn check(
    w: &mut Window,
    dir: usize,
    index: u8,
    seg: &Segment,
    phase: Phase,
    liberal: bool,
) -> Verdict {
    // The two directions are worked on as copies and written back on every outcome (the
    // kernel keeps what it learned even from a segment it calls invalid).
    let (mut sender, mut receiver) = (w.sides[dir], w.sides[1 - dir]);
    let verdict = check_sides(
        w,
        (&mut sender, &mut receiver),
        dir,
        index,
        seg,
        (phase, liberal),
    );
    w.sides[dir] = sender;
    w.sides[1 - dir] = receiver;
    verdict
}

fn check_sides(
    w: &mut Window,
    (s, r): (&mut Side, &mut Side),
    dir: usize,
    index: u8,
    seg: &Segment,
    (phase, liberal): (Phase, bool),
) -> Verdict {
    let mut seq = seg.seq;
    let mut ack = seg.ack;
    let mut sack = ack;
    let mut end = seg.end;
    let mut win = u32::from(seg.window);
    if r.flags & SACK_PERM != 0 {
        sack = seg.sack(ack);
    }
    if s.max_win == 0 {
        if seg.syn {
            init_sender(s, r, seg, dir == 1);
            if !seg.ack_flag {
                // Simultaneous open.
                return Verdict::Accept;
            }
        } else {
            // Mid-connection: learn what we can from this segment.
            s.end = end;
            let swin = win << s.scale;
            s.max_win = swin.max(1);
            s.max_end = end.wrapping_add(s.max_win);
            if r.max_win == 0 {
                // Nothing seen the other way yet: let the ACK checks pass until then.
                r.end = sack;
                r.max_end = sack;
            } else if sack == r.end.wrapping_add(1) {
                // Likely the answer to a keepalive.
                r.end = r.end.wrapping_add(1);
            }
        }
    } else if seg.syn && after(end, s.end) && phase != Phase::Other {
        // A re-sent SYN or SYN-ACK with new numbers or options.
        init_sender(s, r, seg, dir == 1);
        if dir == 1 && !seg.ack_flag {
            return Verdict::Accept;
        }
    }
    if !seg.ack_flag || (seg.rst && ack == 0) {
        // No ACK (or a RST with a zero one): as if it acknowledged what was seen.
        ack = r.end;
        sack = r.end;
    }
    let liberal = liberal || s.flags & BE_LIBERAL != 0;
    let fail = |v: Verdict| if liberal { Verdict::Accept } else { v };
    if seg.rst && seq == 0 && phase == Phase::SynSent {
        // A RST answering a SYN.
        seq = s.end;
        end = s.end;
    }
    if !before(seq, s.max_end.wrapping_add(1)) {
        let overshot = end.wrapping_sub(s.max_end).wrapping_add(1);
        let ack_ok = after(sack, r.end.wrapping_sub(max_ack_window(s)).wrapping_sub(1));
        let in_recv_win =
            r.max_win != 0 && after(end, s.end.wrapping_sub(r.max_win).wrapping_sub(1));
        if in_recv_win && ack_ok && overshot <= r.max_win && before(sack, r.end.wrapping_add(1)) {
            // A sender overrunning the receive window: keep its end so the peer's ACK of
            // this data stays acceptable.
            s.end = end;
            s.flags |= DATA_UNACKNOWLEDGED;
            return fail(Verdict::Ignore);
        }
        return fail(Verdict::Invalid("TCP sequence over the receiver's window"));
    }
    if !before(sack, r.end.wrapping_add(1)) {
        return fail(Verdict::Invalid("TCP ACK of data not seen yet"));
    }
    let in_recv_win = r.max_win == 0 || after(end, s.end.wrapping_sub(r.max_win).wrapping_sub(1));
    if !in_recv_win {
        // Already acknowledged data retransmitted.
        return fail(Verdict::Ignore);
    }
    if !after(sack, r.end.wrapping_sub(max_ack_window(s)).wrapping_sub(1)) {
        // An overly delayed ACK.
        return fail(Verdict::Ignore);
    }
    if !seg.syn {
        win <<= s.scale;
    }
    let swin = win.wrapping_add(sack.wrapping_sub(ack));
    if s.max_win < swin {
        s.max_win = swin;
    }
    if after(end, s.end) {
        s.end = end;
        s.flags |= DATA_UNACKNOWLEDGED;
    }
    if seg.ack_flag {
        if s.flags & MAXACK_SET == 0 {
            s.max_ack = ack;
            s.flags |= MAXACK_SET;
        } else if after(ack, s.max_ack) {
            s.max_ack = ack;
        }
    }
    if r.max_win != 0 && after(end, s.max_end) {
        r.max_win = r.max_win.wrapping_add(end.wrapping_sub(s.max_end));
    }
    if after(sack.wrapping_add(win), r.max_end.wrapping_sub(1)) {
        r.max_end = sack.wrapping_add(win);
        if win == 0 {
            r.max_end = r.max_end.wrapping_add(1);
        }
    }
    if ack == r.end {
        r.flags &= !DATA_UNACKNOWLEDGED;
    }
    if index == class::ACK {
        let same = usize::from(w.last_dir) == dir
            && w.last_seq == seq
            && w.last_ack == ack
            && w.last_end == end
            && w.last_win == seg.window;
        if same {
            w.retrans = w.retrans.saturating_add(1);
        } else {
            w.last_dir = dir as u8;
            w.last_seq = seq;
            w.last_ack = ack;
            w.last_end = end;
            w.last_win = seg.window;
            w.retrans = 0;
        }
    }
    Verdict::Accept
}
