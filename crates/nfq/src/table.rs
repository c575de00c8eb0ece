//! The bounded per-connection table: one entry per connection (both orientations share it),
//! least-recently-used eviction when full, and an idle timeout. Time is an input (`now_ms`).
//!
//! Eviction is a lazy LRU: every entry has exactly one ticket in a FIFO queue; when the oldest
//! ticket is stale (the entry was used since the ticket was issued) it is re-issued at the back
//! instead of evicting, so each insertion costs amortised O(1) and the queue never holds more
//! tickets than the table holds entries.

use std::collections::{HashMap, VecDeque};

use crate::flow::Tuple;

/// Where a connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnState {
    /// Still being inspected.
    Inspecting,
    /// An application rule dropped it: every later packet is dropped.
    Blocked,
    /// An application rule accepted it: no more inspection.
    Accepted,
    /// The inspection budget ran out without a decision: no more inspection.
    Exhausted,
}

/// One connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Conn<V> {
    /// The connection's original-direction tuple.
    pub orig: Tuple,
    /// Where it stands.
    pub state: ConnState,
    /// Payload-carrying packets inspected so far (both directions).
    pub inspected: u32,
    /// Caller data (the classifier keeps the candidate rules and per-direction labels here).
    pub data: V,
    last_used_ms: u64,
    /// Ticket of the latest use.
    ticket: u64,
    /// The one ticket of this entry that sits in the queue.
    queued: u64,
}

/// Why an entry left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// Idle longer than the timeout.
    Expired,
    /// Evicted to make room.
    Evicted,
}

/// The table.
#[derive(Debug)]
pub struct ConnTable<V> {
    map: HashMap<Tuple, Conn<V>>,
    queue: VecDeque<(Tuple, u64)>,
    next_ticket: u64,
    capacity: usize,
    idle_timeout_ms: u64,
    evicted: u64,
    expired: u64,
}

impl<V> ConnTable<V> {
    /// A table holding at most `capacity` connections (at least 1), forgetting connections idle
    /// for `idle_timeout_ms`.
    pub fn new(capacity: usize, idle_timeout_ms: u64) -> Self {
        let capacity = capacity.max(1);
        Self {
            map: HashMap::with_capacity(capacity.min(1 << 16)),
            queue: VecDeque::with_capacity(capacity.min(1 << 16)),
            next_ticket: 0,
            capacity,
            idle_timeout_ms,
            evicted: 0,
            expired: 0,
        }
    }

    /// Connections held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Connections evicted to make room, so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Connections forgotten after the idle timeout, so far.
    pub fn expired(&self) -> u64 {
        self.expired
    }

    fn is_idle(&self, conn: &Conn<V>, now_ms: u64) -> bool {
        idle(self.idle_timeout_ms, conn.last_used_ms, now_ms)
    }

    /// The connection `tuple` belongs to (either orientation), marking it used. An idle entry
    /// is reported absent (it is replaced by the next insert or removed by expiry).
    pub fn get_mut(&mut self, tuple: &Tuple, now_ms: u64) -> Option<&mut Conn<V>> {
        let key = tuple.key();
        match self.map.get(&key) {
            None => return None,
            Some(conn) if self.is_idle(conn, now_ms) => return None,
            Some(_) => {}
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let conn = self.map.get_mut(&key)?;
        conn.last_used_ms = now_ms;
        conn.ticket = ticket;
        Some(conn)
    }

    /// Whether the connection `tuple` belongs to is held (without marking it used).
    pub fn contains(&self, tuple: &Tuple, now_ms: u64) -> bool {
        self.map
            .get(&tuple.key())
            .is_some_and(|c| !self.is_idle(c, now_ms))
    }

    /// Insert a new connection with original tuple `orig`, making room if needed; returns it.
    /// An existing entry for the same connection is replaced.
    pub fn insert(&mut self, orig: Tuple, data: V, now_ms: u64) -> &mut Conn<V> {
        let key = orig.key();
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        let queued = match self.map.get(&key) {
            Some(old) => {
                if self.is_idle(old, now_ms) {
                    self.expired += 1;
                }
                old.queued
            }
            None => {
                while self.map.len() >= self.capacity {
                    if self.pop_oldest(now_ms).is_none() {
                        break;
                    }
                }
                self.queue.push_back((key, ticket));
                ticket
            }
        };
        let conn = Conn {
            orig,
            state: ConnState::Inspecting,
            inspected: 0,
            data,
            last_used_ms: now_ms,
            ticket,
            queued,
        };
        self.map.insert(key, conn);
        // Why: the key was inserted just above.
        match self.map.get_mut(&key) {
            Some(conn) => conn,
            None => unreachable!("entry inserted above"),
        }
    }

    /// Remove the least recently used connection; returns why (idle or evicted).
    fn pop_oldest(&mut self, now_ms: u64) -> Option<Removal> {
        // Why: each entry has one ticket, so at most len() re-issues happen before a removal.
        let mut budget = self.queue.len() + 1;
        while let Some((key, ticket)) = self.queue.pop_front() {
            budget -= 1;
            let Some(conn) = self.map.get_mut(&key) else {
                continue;
            };
            if conn.ticket != ticket && budget > 0 {
                conn.queued = conn.ticket;
                self.queue.push_back((key, conn.ticket));
                continue;
            }
            let was_idle = idle(self.idle_timeout_ms, conn.last_used_ms, now_ms);
            self.map.remove(&key);
            return Some(if was_idle {
                self.expired += 1;
                Removal::Expired
            } else {
                self.evicted += 1;
                Removal::Evicted
            });
        }
        None
    }

    /// Forget every connection idle longer than the timeout; returns how many. Cost is bounded
    /// by `max_steps` queue tickets so a periodic caller never stalls the packet path.
    pub fn expire(&mut self, now_ms: u64, max_steps: usize) -> usize {
        let mut removed = 0;
        for _ in 0..max_steps {
            let Some(&(key, ticket)) = self.queue.front() else {
                break;
            };
            let Some(conn) = self.map.get_mut(&key) else {
                self.queue.pop_front();
                continue;
            };
            if conn.ticket != ticket {
                conn.queued = conn.ticket;
                self.queue.pop_front();
                self.queue.push_back((key, conn.ticket));
                continue;
            }
            if !idle(self.idle_timeout_ms, conn.last_used_ms, now_ms) {
                // Why: tickets are in use order, so the oldest live ticket not idle means none is.
                break;
            }
            self.queue.pop_front();
            self.map.remove(&key);
            self.expired += 1;
            removed += 1;
        }
        removed
    }

    /// Drop every entry (policy reload keeps nothing decided under the old policy).
    pub fn clear(&mut self) {
        self.map.clear();
        self.queue.clear();
    }

    #[cfg(test)]
    fn queue_len(&self) -> usize {
        self.queue.len()
    }
}

fn idle(timeout_ms: u64, last_used_ms: u64, now_ms: u64) -> bool {
    now_ms.saturating_sub(last_used_ms) > timeout_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::L4;
    use proptest::prelude::*;

    fn tuple(port: u16) -> Tuple {
        Tuple {
            src: "198.51.100.1".parse().unwrap(),
            dst: "198.51.100.2".parse().unwrap(),
            protocol: 17,
            l4: L4::Ports { src: port, dst: 53 },
        }
    }

    #[test]
    fn both_orientations_share_an_entry() {
        let mut t = ConnTable::new(4, 1_000);
        t.insert(tuple(1000), (), 0).state = ConnState::Blocked;
        let back = t.get_mut(&tuple(1000).reversed(), 10).unwrap();
        assert_eq!(back.state, ConnState::Blocked);
        assert_eq!(back.orig, tuple(1000));
    }

    #[test]
    fn full_table_evicts_least_recently_used() {
        let mut t = ConnTable::new(3, 1_000_000);
        for p in 1..=3 {
            t.insert(tuple(p), (), u64::from(p));
        }
        // Touch 1 so 2 is now the least recently used.
        assert!(t.get_mut(&tuple(1), 10).is_some());
        t.insert(tuple(4), (), 11);
        assert_eq!(t.len(), 3);
        assert!(t.contains(&tuple(1), 12));
        assert!(!t.contains(&tuple(2), 12));
        assert!(t.contains(&tuple(3), 12));
        assert_eq!(t.evicted(), 1);
    }

    #[test]
    fn idle_entries_expire() {
        let mut t = ConnTable::new(8, 100);
        t.insert(tuple(1), (), 0);
        t.insert(tuple(2), (), 50);
        assert_eq!(t.expire(120, 100), 1);
        assert!(!t.contains(&tuple(1), 120));
        assert!(t.contains(&tuple(2), 120));
        assert!(t.get_mut(&tuple(2), 500).is_none(), "idle on lookup");
        t.insert(tuple(2), (), 500);
        assert_eq!(t.expired(), 2);
        assert_eq!(t.len(), 1);
    }

    proptest! {
        #[test]
        fn never_exceeds_capacity_and_queue_matches(
            cap in 1usize..16,
            ops in proptest::collection::vec((0u16..40, any::<bool>(), 0u64..50), 0..300),
        ) {
            let mut t = ConnTable::new(cap, 200);
            let mut now = 0;
            for (port, touch, dt) in ops {
                now += dt;
                if touch {
                    let _ = t.get_mut(&tuple(port), now);
                } else if !t.contains(&tuple(port), now) {
                    t.insert(tuple(port), (), now);
                }
                if dt % 7 == 0 {
                    t.expire(now, 5);
                }
                prop_assert!(t.len() <= cap);
                prop_assert_eq!(t.queue_len(), t.len());
            }
        }
    }
}
