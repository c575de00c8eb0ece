//! Name resolution for the proxy: a small DNS-over-UDP client (A and AAAA queried together,
//! answers matched by id and question, CNAME chains followed only inside the answer, every count
//! and pointer bounded) with a TTL cache, or the system resolver when no servers are configured.
//! Resolution happens once per new upstream connection; the policy checks every address it
//! returns and the shell dials only those checked addresses.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::config::ResolverConfig;

/// Most answer records read from one response. Why: real A/AAAA answers carry a handful;
/// anything larger is abuse of the parser.
pub const MAX_ANSWERS: usize = 64;
/// Most compression-pointer jumps while reading one name (loop guard).
pub const MAX_POINTER_HOPS: usize = 32;
/// Most addresses kept per name.
pub const MAX_ADDRS: usize = 32;
/// Largest DNS message accepted over UDP (EDNS payloads above this are not requested).
pub const MAX_UDP_MESSAGE: usize = 4096;

const TYPE_A: u16 = 1;
const TYPE_CNAME: u16 = 5;
const TYPE_AAAA: u16 = 28;
const CLASS_IN: u16 = 1;

/// Why a lookup failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No answer within the timeout from any server.
    #[error("resolver timed out")]
    Timeout,
    /// The server answered with an error rcode (SERVFAIL, REFUSED...).
    #[error("resolver answered rcode {0}")]
    Rcode(u8),
    /// The answer was malformed or did not match the question.
    #[error("malformed resolver answer: {0}")]
    Malformed(&'static str),
    /// The answer was truncated (TCP fallback is not implemented; refused rather than guessed).
    #[error("truncated resolver answer")]
    Truncated,
    /// Socket error.
    #[error("resolver socket error: {0}")]
    Io(String),
}

/// Builds a recursive query for `name` (already validated: labels ≤ 63, total ≤ 253).
pub fn build_query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len().min(63) as u8);
        q.extend_from_slice(&label.as_bytes()[..label.len().min(63)]);
    }
    q.push(0);
    q.extend_from_slice(&qtype.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    q
}

fn u16_at(msg: &[u8], pos: usize) -> Result<u16, ResolveError> {
    msg.get(pos..pos + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(ResolveError::Malformed("truncated field"))
}

/// Reads a (possibly compressed) name at `pos`; returns it lower-cased and the position after
/// it in the original byte stream.
pub fn read_name(msg: &[u8], mut pos: usize) -> Result<(String, usize), ResolveError> {
    let mut name = String::new();
    let mut end: Option<usize> = None;
    let mut hops = 0;
    loop {
        let len = *msg
            .get(pos)
            .ok_or(ResolveError::Malformed("name overruns"))?;
        match len & 0xc0 {
            0x00 => {
                if len == 0 {
                    return Ok((name, end.unwrap_or(pos + 1)));
                }
                let label = msg
                    .get(pos + 1..pos + 1 + usize::from(len))
                    .ok_or(ResolveError::Malformed("label overruns"))?;
                if !name.is_empty() {
                    name.push('.');
                }
                for b in label {
                    name.push(char::from(b.to_ascii_lowercase()));
                }
                if name.len() > 255 {
                    return Err(ResolveError::Malformed("name too long"));
                }
                pos += 1 + usize::from(len);
            }
            0xc0 => {
                hops += 1;
                if hops > MAX_POINTER_HOPS {
                    return Err(ResolveError::Malformed("pointer loop"));
                }
                let target = usize::from(u16_at(msg, pos)? & 0x3fff);
                if end.is_none() {
                    end = Some(pos + 2);
                }
                if target >= pos {
                    // Only backward pointers: forward ones enable loops and are never needed.
                    return Err(ResolveError::Malformed("forward pointer"));
                }
                pos = target;
            }
            _ => return Err(ResolveError::Malformed("bad label type")),
        }
    }
}

/// Addresses and the smallest TTL from one answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// A/AAAA addresses for the name (through CNAMEs inside the answer).
    pub addrs: Vec<IpAddr>,
    /// Smallest TTL among the records used.
    pub ttl_s: u32,
}

/// Parses a response to [`build_query`]`(id, name, qtype)`. NXDOMAIN and NODATA give an empty
/// answer.
pub fn parse_answer(msg: &[u8], id: u16, name: &str, qtype: u16) -> Result<Answer, ResolveError> {
    if msg.len() < 12 || msg.len() > MAX_UDP_MESSAGE {
        return Err(ResolveError::Malformed("message size"));
    }
    if u16_at(msg, 0)? != id {
        return Err(ResolveError::Malformed("id mismatch"));
    }
    let flags = u16_at(msg, 2)?;
    if flags & 0x8000 == 0 || (flags >> 11) & 0xf != 0 {
        return Err(ResolveError::Malformed("not a query response"));
    }
    if flags & 0x0200 != 0 {
        return Err(ResolveError::Truncated);
    }
    let rcode = (flags & 0xf) as u8;
    if u16_at(msg, 4)? != 1 {
        return Err(ResolveError::Malformed("question count"));
    }
    let (qname, mut pos) = read_name(msg, 12)?;
    if qname != name.trim_end_matches('.').to_ascii_lowercase()
        || u16_at(msg, pos)? != qtype
        || u16_at(msg, pos + 2)? != CLASS_IN
    {
        return Err(ResolveError::Malformed("question mismatch"));
    }
    pos += 4;
    match rcode {
        0 => {}
        3 => return Ok(Answer::default()),
        r => return Err(ResolveError::Rcode(r)),
    }
    let ancount = usize::from(u16_at(msg, 6)?);
    if ancount > MAX_ANSWERS {
        return Err(ResolveError::Malformed("too many answers"));
    }
    let mut owners = vec![qname];
    let mut out = Answer {
        addrs: Vec::new(),
        ttl_s: u32::MAX,
    };
    for _ in 0..ancount {
        let (owner, p) = read_name(msg, pos)?;
        let rtype = u16_at(msg, p)?;
        let class = u16_at(msg, p + 2)?;
        let ttl = msg
            .get(p + 4..p + 8)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or(ResolveError::Malformed("truncated ttl"))?;
        let rdlen = usize::from(u16_at(msg, p + 8)?);
        let rdata_at = p + 10;
        let rdata = msg
            .get(rdata_at..rdata_at + rdlen)
            .ok_or(ResolveError::Malformed("rdata overruns"))?;
        pos = rdata_at + rdlen;
        if class != CLASS_IN || !owners.contains(&owner) {
            continue;
        }
        match (rtype, rdata.len()) {
            (TYPE_A, 4) if qtype == TYPE_A => {
                out.addrs.push(IpAddr::V4(Ipv4Addr::new(
                    rdata[0], rdata[1], rdata[2], rdata[3],
                )));
                out.ttl_s = out.ttl_s.min(ttl);
            }
            (TYPE_AAAA, 16) if qtype == TYPE_AAAA => {
                let mut b = [0u8; 16];
                b.copy_from_slice(rdata);
                out.addrs.push(IpAddr::V6(Ipv6Addr::from(b)));
                out.ttl_s = out.ttl_s.min(ttl);
            }
            (TYPE_CNAME, _) => {
                let (target, _) = read_name(msg, rdata_at)?;
                if owners.len() < 16 && !owners.contains(&target) {
                    owners.push(target);
                }
                out.ttl_s = out.ttl_s.min(ttl);
            }
            (TYPE_A | TYPE_AAAA, _) if rtype == qtype => {
                return Err(ResolveError::Malformed("address length"));
            }
            _ => {}
        }
        if out.addrs.len() >= MAX_ADDRS {
            break;
        }
    }
    if out.ttl_s == u32::MAX {
        out.ttl_s = 0;
    }
    Ok(out)
}

/// The resolver used by the proxy.
#[derive(Debug)]
pub struct Resolver {
    cfg: ResolverConfig,
    cache: Mutex<HashMap<String, (Vec<IpAddr>, Instant)>>,
    seed: std::collections::hash_map::RandomState,
    counter: std::sync::atomic::AtomicU64,
}

impl Resolver {
    /// A resolver for `cfg`.
    pub fn new(cfg: ResolverConfig) -> Self {
        Self {
            cfg,
            cache: Mutex::new(HashMap::new()),
            seed: std::collections::hash_map::RandomState::new(),
            counter: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn random_u16(&self) -> u16 {
        // SipHash with a per-process random key over a counter: unpredictable query ids
        // without a dependency on an RNG crate.
        let mut h = self.seed.build_hasher();
        h.write_u64(
            self.counter
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        );
        h.finish() as u16
    }

    /// All addresses of `name` (A then AAAA), from the cache when fresh.
    pub async fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        let now = Instant::now();
        if self.cfg.cache_max_entries > 0 {
            if let Ok(cache) = self.cache.lock() {
                if let Some((addrs, until)) = cache.get(name) {
                    if *until > now {
                        return Ok(addrs.clone());
                    }
                }
            }
        }
        let (addrs, ttl_s) = if self.cfg.servers.is_empty() {
            let found = tokio::net::lookup_host((name, 0))
                .await
                .map_err(|e| ResolveError::Io(e.to_string()))?;
            let mut v: Vec<IpAddr> = found.map(|sa| sa.ip()).collect();
            v.dedup();
            v.truncate(MAX_ADDRS);
            (v, self.cfg.system_ttl_s)
        } else {
            self.query_servers(name).await?
        };
        if self.cfg.cache_max_entries > 0 && ttl_s > 0 {
            if let Ok(mut cache) = self.cache.lock() {
                if cache.len() >= self.cfg.cache_max_entries {
                    cache.retain(|_, (_, until)| *until > now);
                    if cache.len() >= self.cfg.cache_max_entries {
                        cache.clear();
                    }
                }
                let ttl = Duration::from_secs(u64::from(ttl_s.min(self.cfg.cache_max_ttl_s)));
                cache.insert(name.to_string(), (addrs.clone(), now + ttl));
            }
        }
        Ok(addrs)
    }

    async fn query_servers(&self, name: &str) -> Result<(Vec<IpAddr>, u32), ResolveError> {
        let mut last = ResolveError::Timeout;
        for server in &self.cfg.servers {
            for _ in 0..self.cfg.attempts.max(1) {
                match self.query_one(*server, name).await {
                    Ok(v) => return Ok(v),
                    Err(e) => last = e,
                }
            }
        }
        Err(last)
    }

    async fn query_one(
        &self,
        server: SocketAddr,
        name: &str,
    ) -> Result<(Vec<IpAddr>, u32), ResolveError> {
        let bind: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(bind)
            .await
            .map_err(|e| ResolveError::Io(e.to_string()))?;
        sock.connect(server)
            .await
            .map_err(|e| ResolveError::Io(e.to_string()))?;
        let id_a = self.random_u16();
        let id_aaaa = id_a.wrapping_add(1 + (self.random_u16() % 0xfffe));
        for (id, t) in [(id_a, TYPE_A), (id_aaaa, TYPE_AAAA)] {
            sock.send(&build_query(id, name, t))
                .await
                .map_err(|e| ResolveError::Io(e.to_string()))?;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.cfg.timeout_ms);
        let mut a: Option<Answer> = None;
        let mut aaaa: Option<Answer> = None;
        let mut buf = vec![0u8; MAX_UDP_MESSAGE];
        while a.is_none() || aaaa.is_none() {
            let n = match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                Err(_) => return Err(ResolveError::Timeout),
                Ok(Err(e)) => return Err(ResolveError::Io(e.to_string())),
                Ok(Ok(n)) => n,
            };
            let msg = &buf[..n];
            let id = msg.get(..2).map(|b| u16::from_be_bytes([b[0], b[1]]));
            // Answers with a foreign id are ignored (spoofing noise), not fatal.
            if id == Some(id_a) && a.is_none() {
                a = Some(parse_answer(msg, id_a, name, TYPE_A)?);
            } else if id == Some(id_aaaa) && aaaa.is_none() {
                aaaa = Some(parse_answer(msg, id_aaaa, name, TYPE_AAAA)?);
            }
        }
        let (a, aaaa) = (a.unwrap_or_default(), aaaa.unwrap_or_default());
        let ttl = match (a.addrs.is_empty(), aaaa.addrs.is_empty()) {
            (false, false) => a.ttl_s.min(aaaa.ttl_s),
            (false, true) => a.ttl_s,
            (true, false) => aaaa.ttl_s,
            (true, true) => 0,
        };
        let mut addrs = a.addrs;
        addrs.extend(aaaa.addrs);
        addrs.truncate(MAX_ADDRS);
        Ok((addrs, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(id: u16, name: &str, qtype: u16, answers: &[(&str, u16, Vec<u8>)]) -> Vec<u8> {
        let mut m = build_query(id, name, qtype);
        m[2] = 0x81;
        m[3] = 0x80;
        m[7] = answers.len() as u8;
        for (owner, t, rdata) in answers {
            for l in owner.split('.') {
                m.push(l.len() as u8);
                m.extend_from_slice(l.as_bytes());
            }
            m.push(0);
            m.extend_from_slice(&t.to_be_bytes());
            m.extend_from_slice(&CLASS_IN.to_be_bytes());
            m.extend_from_slice(&60u32.to_be_bytes());
            m.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            m.extend_from_slice(rdata);
        }
        m
    }

    fn wire_name(n: &str) -> Vec<u8> {
        let mut v = Vec::new();
        for l in n.split('.') {
            v.push(l.len() as u8);
            v.extend_from_slice(l.as_bytes());
        }
        v.push(0);
        v
    }

    #[test]
    fn follows_cname_inside_answer_only() {
        let m = response(
            7,
            "www.example.com",
            TYPE_A,
            &[
                ("www.example.com", TYPE_CNAME, wire_name("edge.example.net")),
                ("edge.example.net", TYPE_A, vec![192, 0, 2, 1]),
                ("unrelated.example", TYPE_A, vec![127, 0, 0, 1]),
            ],
        );
        let a = parse_answer(&m, 7, "www.example.com", TYPE_A).unwrap();
        assert_eq!(a.addrs, vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.ttl_s, 60);
    }

    #[test]
    fn rejects_mismatches() {
        let m = response(
            7,
            "a.example",
            TYPE_A,
            &[("a.example", TYPE_A, vec![1, 2, 3, 4])],
        );
        assert!(parse_answer(&m, 8, "a.example", TYPE_A).is_err());
        assert!(parse_answer(&m, 7, "b.example", TYPE_A).is_err());
        assert!(parse_answer(&m, 7, "a.example", TYPE_AAAA).is_err());
        let mut tc = m.clone();
        tc[2] |= 0x02;
        assert_eq!(
            parse_answer(&tc, 7, "a.example", TYPE_A),
            Err(ResolveError::Truncated)
        );
        let mut nx = m.clone();
        nx[3] = 0x83;
        assert_eq!(
            parse_answer(&nx, 7, "a.example", TYPE_A),
            Ok(Answer::default())
        );
        let mut sf = m;
        sf[3] = 0x82;
        assert_eq!(
            parse_answer(&sf, 7, "a.example", TYPE_A),
            Err(ResolveError::Rcode(2))
        );
    }

    #[test]
    fn pointer_loops_and_truncation_are_errors() {
        let mut m = build_query(1, "a.example", TYPE_A);
        m[2] = 0x81;
        m[7] = 1;
        // Answer owner is a pointer to itself.
        let at = m.len();
        m.extend_from_slice(&[0xc0 | (at >> 8) as u8, at as u8]);
        m.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 1, 2, 3, 4]);
        assert!(parse_answer(&m, 1, "a.example", TYPE_A).is_err());
        let full = response(
            1,
            "a.example",
            TYPE_A,
            &[("a.example", TYPE_A, vec![1, 2, 3, 4])],
        );
        for n in 0..full.len() {
            assert!(
                parse_answer(&full[..n], 1, "a.example", TYPE_A).is_err(),
                "{n}"
            );
        }
    }

    #[test]
    fn compressed_owner_names() {
        let mut m = build_query(3, "a.example", TYPE_AAAA);
        m[2] = 0x81;
        m[7] = 1;
        m.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 5, 0, 16]);
        m.extend_from_slice(&"2001:db8::5".parse::<Ipv6Addr>().unwrap().octets());
        let a = parse_answer(&m, 3, "a.example", TYPE_AAAA).unwrap();
        assert_eq!(a.addrs, vec!["2001:db8::5".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.ttl_s, 5);
    }
}
