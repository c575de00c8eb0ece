//! Prefix sets with longest-prefix lookup, for address sets of a million prefixes and more.
//!
//! Prefixes form a laminar family (two prefixes are nested or disjoint), so the address space
//! splits into segments, each covered by one longest prefix (or none). A lookup is one binary
//! search over the segment starts: 20 steps for a million IPv4 prefixes, no per-lookup
//! allocation, 8 bytes per segment for IPv4.

use std::net::IpAddr;

use ipnet::IpNet;

const NONE: u32 = u32::MAX;

trait Key: Copy + Ord {
    const MAX: Self;
    fn to_u128(self) -> u128;
    fn from_u128(v: u128) -> Self;
}

impl Key for u32 {
    const MAX: Self = u32::MAX;
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
    fn from_u128(v: u128) -> Self {
        v as u32
    }
}

impl Key for u128 {
    const MAX: Self = u128::MAX;
    fn to_u128(self) -> u128 {
        self
    }
    fn from_u128(v: u128) -> Self {
        v
    }
}

#[derive(Clone, Debug, Default)]
struct Segments<K> {
    starts: Vec<K>,
    /// Index into the prefix list of the longest prefix covering the segment, or `NONE`.
    best: Vec<u32>,
}

impl<K: Key> Segments<K> {
    /// `prefixes`: (start, end, index), any order.
    fn build(mut prefixes: Vec<(K, K, u32)>) -> Self {
        // Wider prefixes first at equal start, so nested ones are pushed above them.
        prefixes.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let mut seg = Segments {
            starts: Vec::new(),
            best: Vec::new(),
        };
        let zero = K::from_u128(0);
        seg.emit(zero, NONE);
        let mut stack: Vec<(K, K, u32)> = Vec::new();
        for p in prefixes {
            while let Some(&top) = stack.last() {
                if top.1 >= p.0 {
                    break;
                }
                stack.pop();
                let below = stack.last().map_or(NONE, |t| t.2);
                seg.emit(K::from_u128(top.1.to_u128() + 1), below);
            }
            if let Some(top) = stack.last() {
                if top.0 == p.0 && top.1 == p.1 {
                    continue; // duplicate prefix: keep the first
                }
            }
            stack.push(p);
            seg.emit(p.0, p.2);
        }
        while let Some(top) = stack.pop() {
            if top.1 == K::MAX {
                continue;
            }
            let below = stack.last().map_or(NONE, |t| t.2);
            seg.emit(K::from_u128(top.1.to_u128() + 1), below);
        }
        seg
    }

    fn emit(&mut self, pos: K, value: u32) {
        if self.starts.last() == Some(&pos) {
            self.best.pop();
            self.starts.pop();
        }
        if self.best.last() == Some(&value) {
            return;
        }
        self.starts.push(pos);
        self.best.push(value);
    }

    #[inline]
    fn lookup(&self, key: K) -> u32 {
        let k = self.starts.partition_point(|&s| s <= key);
        if k == 0 {
            NONE
        } else {
            self.best[k - 1]
        }
    }

    /// Inclusive intervals covered by some prefix.
    fn covered(&self) -> Vec<(u128, u128)> {
        let mut out = Vec::new();
        for (i, &s) in self.starts.iter().enumerate() {
            if self.best[i] == NONE {
                continue;
            }
            let end = self
                .starts
                .get(i + 1)
                .map_or(K::MAX.to_u128(), |n| n.to_u128() - 1);
            out.push((s.to_u128(), end));
        }
        out
    }
}

/// An address set: members (prefixes) minus exceptions, with longest-prefix lookup.
#[derive(Clone, Debug, Default)]
pub struct PrefixSet {
    prefixes: Vec<IpNet>,
    v4: Segments<u32>,
    v6: Segments<u128>,
    except_v4: Segments<u32>,
    except_v6: Segments<u128>,
}

fn v4_range(net: &ipnet::Ipv4Net) -> (u32, u32) {
    (u32::from(net.network()), u32::from(net.broadcast()))
}

fn v6_range(net: &ipnet::Ipv6Net) -> (u128, u128) {
    (u128::from(net.network()), u128::from(net.broadcast()))
}

fn split(nets: &[IpNet]) -> (Segments<u32>, Segments<u128>) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (i, net) in nets.iter().enumerate() {
        match net {
            IpNet::V4(n) => {
                let (a, b) = v4_range(n);
                v4.push((a, b, i as u32));
            }
            IpNet::V6(n) => {
                let (a, b) = v6_range(n);
                v6.push((a, b, i as u32));
            }
        }
    }
    (Segments::build(v4), Segments::build(v6))
}

impl PrefixSet {
    /// A set of `elements` minus `except` (addresses in an exception never match).
    pub fn new(elements: &[IpNet], except: &[IpNet]) -> Self {
        let (v4, v6) = split(elements);
        let (except_v4, except_v6) = split(except);
        Self {
            prefixes: elements.to_vec(),
            v4,
            v6,
            except_v4,
            except_v6,
        }
    }

    /// Number of prefixes given (before exceptions).
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// Whether no prefix was given.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// The longest member prefix containing `addr`, ignoring exceptions.
    pub fn longest_match(&self, addr: IpAddr) -> Option<IpNet> {
        let idx = match addr {
            IpAddr::V4(a) => self.v4.lookup(u32::from(a)),
            IpAddr::V6(a) => self.v6.lookup(u128::from(a)),
        };
        (idx != NONE).then(|| self.prefixes[idx as usize])
    }

    /// Whether `addr` is in the set: inside a member prefix and outside every exception.
    #[inline]
    pub fn contains(&self, addr: IpAddr) -> bool {
        match addr {
            IpAddr::V4(a) => {
                let k = u32::from(a);
                self.v4.lookup(k) != NONE && self.except_v4.lookup(k) == NONE
            }
            IpAddr::V6(a) => {
                let k = u128::from(a);
                self.v6.lookup(k) != NONE && self.except_v6.lookup(k) == NONE
            }
        }
    }

    /// Disjoint, sorted inclusive intervals of IPv4 members (as integers), exceptions removed.
    pub fn intervals_v4(&self) -> Vec<(u128, u128)> {
        subtract(&self.v4.covered(), &self.except_v4.covered())
    }

    /// Disjoint, sorted inclusive intervals of IPv6 members, exceptions removed.
    pub fn intervals_v6(&self) -> Vec<(u128, u128)> {
        subtract(&self.v6.covered(), &self.except_v6.covered())
    }
}

/// `a` minus `b`; both sorted and disjoint.
pub(crate) fn subtract(a: &[(u128, u128)], b: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    let mut j = 0;
    for &(lo, hi) in a {
        let mut lo = lo;
        while j < b.len() && b[j].1 < lo {
            j += 1;
        }
        let mut k = j;
        let mut done = false;
        while k < b.len() && b[k].0 <= hi {
            if b[k].0 > lo {
                out.push((lo, b[k].0 - 1));
            }
            if b[k].1 >= hi {
                done = true;
                break;
            }
            lo = b[k].1 + 1;
            k += 1;
        }
        if !done {
            out.push((lo, hi));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn longest_match_prefers_the_narrowest_prefix() {
        let set = PrefixSet::new(
            &nets(&[
                "192.0.2.0/24",
                "192.0.2.128/25",
                "192.0.2.200/32",
                "0.0.0.0/0",
                "2001:db8::/32",
            ]),
            &[],
        );
        let lm = |a: &str| set.longest_match(a.parse().unwrap()).map(|n| n.to_string());
        assert_eq!(lm("192.0.2.1").as_deref(), Some("192.0.2.0/24"));
        assert_eq!(lm("192.0.2.129").as_deref(), Some("192.0.2.128/25"));
        assert_eq!(lm("192.0.2.200").as_deref(), Some("192.0.2.200/32"));
        assert_eq!(lm("192.0.2.201").as_deref(), Some("192.0.2.128/25"));
        assert_eq!(lm("198.51.100.1").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(lm("2001:db8::1").as_deref(), Some("2001:db8::/32"));
        assert_eq!(lm("2001:db9::1"), None);
    }

    #[test]
    fn exceptions_are_removed() {
        let set = PrefixSet::new(&nets(&["198.51.100.0/24"]), &nets(&["198.51.100.64/26"]));
        assert!(set.contains("198.51.100.1".parse().unwrap()));
        assert!(!set.contains("198.51.100.65".parse().unwrap()));
        assert!(set.contains("198.51.100.200".parse().unwrap()));
        let base = u128::from(u32::from(std::net::Ipv4Addr::new(198, 51, 100, 0)));
        assert_eq!(
            set.intervals_v4(),
            vec![(base, base + 63), (base + 128, base + 255)]
        );
    }

    #[test]
    fn matches_linear_scan_on_random_prefixes() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let list: Vec<IpNet> = (0..2000)
            .map(|_| {
                let len = (next() % 25 + 8) as u8;
                let addr = std::net::Ipv4Addr::from((next() as u32) & 0xc0ff_ffff);
                IpNet::V4(ipnet::Ipv4Net::new(addr, len).unwrap().trunc())
            })
            .collect();
        let set = PrefixSet::new(&list, &[]);
        for _ in 0..20_000 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from((next() as u32) & 0xc0ff_ffff));
            let want = list
                .iter()
                .filter(|n| n.contains(&addr))
                .map(|n| n.prefix_len())
                .max();
            assert_eq!(set.longest_match(addr).map(|n| n.prefix_len()), want);
            assert_eq!(set.contains(addr), want.is_some());
        }
    }

    #[test]
    fn subtract_edges() {
        assert_eq!(subtract(&[(0, 10)], &[(0, 10)]), vec![]);
        assert_eq!(subtract(&[(0, 10)], &[(3, 4)]), vec![(0, 2), (5, 10)]);
        assert_eq!(
            subtract(&[(0, 10), (20, 30)], &[(5, 25)]),
            vec![(0, 4), (26, 30)]
        );
        assert_eq!(subtract(&[(0, u128::MAX)], &[(0, 0)]), vec![(1, u128::MAX)]);
    }
}
