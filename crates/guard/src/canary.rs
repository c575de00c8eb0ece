//! The poisoner canary (Respounder semantics): ask LLMNR, NBT-NS and mDNS for names that do not
//! exist; nobody honest answers them, so any answer names a poisoner (Responder, Inveigh).
//!
//! Pure: names come from caller-supplied random bits, queries are built as bytes, and answers
//! are matched against the live names. The shell sends the queries and feeds every captured
//! name-service response to [`Canary::match_response`].

use std::collections::VecDeque;

use crate::decode::{NameMessage, NameProtocol};

/// Why: a poisoner answers within milliseconds; keeping names two minutes covers slow or
/// delayed answers without letting the list grow.
pub const NAME_TTL_S: u64 = 120;
/// Why: three protocols per round and a round at most every second over [`NAME_TTL_S`].
pub const MAX_LIVE_NAMES: usize = 512;
/// Prefix of every canary name (15 characters in all: valid for NetBIOS, which allows 15).
pub const NAME_PREFIX: &str = "rgc";

/// One query to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Query {
    /// Protocol (decides destination address and port).
    pub protocol: NameProtocol,
    /// The made-up name asked for.
    pub name: String,
    /// UDP payload.
    pub payload: Vec<u8>,
}

/// Live canary names.
#[derive(Clone, Debug, Default)]
pub struct Canary {
    live: VecDeque<(String, NameProtocol, u64)>,
}

/// A 15-character name from 48 random bits: `rgc` + 12 hex digits.
pub fn make_name(random: u64) -> String {
    format!("{NAME_PREFIX}{:012x}", random & 0xffff_ffff_ffff)
}

fn dns_query(id: u16, flags: u16, labels: &[&str], qtype: u16, qclass: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&flags.to_be_bytes());
    q.extend_from_slice(&[0, 1, 0, 0, 0, 0, 0, 0]);
    for label in labels {
        // Labels are canary names or fixed words, all well under 63 bytes.
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&qclass.to_be_bytes());
    q
}

/// NetBIOS half-ASCII encoding of `name` (upper-cased, space-padded to 15, suffix 0x00).
pub fn nbns_encode(name: &str) -> String {
    let mut raw = [b' '; 16];
    for (slot, b) in raw.iter_mut().zip(name.bytes().take(15)) {
        *slot = b.to_ascii_uppercase();
    }
    raw[15] = 0;
    raw.iter()
        .flat_map(|b| [char::from(b'A' + (b >> 4)), char::from(b'A' + (b & 0x0f))])
        .collect()
}

/// The query for `name` in `protocol`'s wire format.
pub fn query(protocol: NameProtocol, name: &str, id: u16) -> Vec<u8> {
    match protocol {
        // RFC 4795: flags 0, type A, class IN.
        NameProtocol::Llmnr => dns_query(id, 0, &[name], 1, 1),
        // RFC 6762 §5.4: the QU bit (top bit of class) asks for a unicast answer.
        NameProtocol::Mdns => dns_query(0, 0, &[name, "local"], 1, 0x8001),
        // RFC 1002 §4.2.12: broadcast (B) + recursion desired, NB question, class IN.
        NameProtocol::Nbns => dns_query(id, 0x0110, &[&nbns_encode(name)], 0x20, 1),
    }
}

impl Canary {
    /// A round: one query per protocol, each with its own fresh name from `random` (one
    /// 64-bit value per protocol, in order).
    pub fn round(&mut self, protocols: &[NameProtocol], random: &[u64], now_s: u64) -> Vec<Query> {
        self.expire(now_s);
        let mut out = Vec::new();
        for (protocol, r) in protocols.iter().zip(random) {
            let name = make_name(*r);
            if self.live.len() >= MAX_LIVE_NAMES {
                self.live.pop_front();
            }
            self.live.push_back((name.clone(), *protocol, now_s));
            out.push(Query {
                protocol: *protocol,
                payload: query(*protocol, &name, (*r >> 48) as u16),
                name,
            });
        }
        out
    }

    /// Forget names older than [`NAME_TTL_S`].
    pub fn expire(&mut self, now_s: u64) {
        while self
            .live
            .front()
            .is_some_and(|(_, _, at)| now_s.saturating_sub(*at) > NAME_TTL_S)
        {
            self.live.pop_front();
        }
    }

    /// The canary name a response answers, if any: a response (QR=1) whose question or answer
    /// names a live canary name (mDNS names with or without `.local`).
    pub fn match_response(&self, msg: &NameMessage) -> Option<String> {
        if !msg.response {
            return None;
        }
        msg.questions
            .iter()
            .chain(msg.answers.iter())
            .map(|n| n.strip_suffix(".local").unwrap_or(n).trim_end_matches('.'))
            .find(|n| self.live.iter().any(|(live, _, _)| live == n))
            .map(str::to_string)
    }

    /// Number of live names.
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::name_message;

    /// A Responder-style answer: the query echoed with QR set, one A record for the poisoner.
    fn poison(query: &[u8], ip: [u8; 4]) -> Vec<u8> {
        let mut a = query.to_vec();
        a[2] |= 0x80;
        a[7] = 1;
        a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
        a.extend_from_slice(&ip);
        a
    }

    #[test]
    fn any_answer_to_a_canary_name_matches() {
        let mut c = Canary::default();
        let qs = c.round(
            &[NameProtocol::Llmnr, NameProtocol::Nbns, NameProtocol::Mdns],
            &[1, 2, 3],
            100,
        );
        assert_eq!(qs.len(), 3);
        for q in &qs {
            let answer = poison(&q.payload, [192, 0, 2, 66]);
            let msg = name_message(&answer, q.protocol == NameProtocol::Nbns).unwrap();
            assert_eq!(
                c.match_response(&msg),
                Some(q.name.clone()),
                "{:?}",
                q.protocol
            );
            assert_eq!(
                msg.answer_ipv4,
                vec![std::net::Ipv4Addr::new(192, 0, 2, 66)]
            );
            // The query itself (QR=0) is not an answer.
            let msg = name_message(&q.payload, q.protocol == NameProtocol::Nbns).unwrap();
            assert_eq!(c.match_response(&msg), None);
        }
    }

    #[test]
    fn names_expire_and_are_bounded() {
        let mut c = Canary::default();
        let q = c.round(&[NameProtocol::Llmnr], &[9], 0).remove(0);
        let answer = poison(&q.payload, [192, 0, 2, 66]);
        c.expire(NAME_TTL_S + 1);
        assert_eq!(
            c.match_response(&name_message(&answer, false).unwrap()),
            None
        );
        for i in 0..(MAX_LIVE_NAMES as u64 + 10) {
            c.round(&[NameProtocol::Llmnr], &[i], 5);
        }
        assert_eq!(c.live(), MAX_LIVE_NAMES);
    }

    #[test]
    fn canary_names_fit_netbios() {
        assert_eq!(make_name(u64::MAX).len(), 15);
        assert_eq!(nbns_encode("ab").len(), 32);
    }
}
