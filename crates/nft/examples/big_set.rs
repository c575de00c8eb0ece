//! Generate the benchmark ruleset for `bench/nft-sets.sh`: one policy with an address set of N
//! mixed entries (half single addresses, half /64 prefixes, random and unique, all inside the
//! 2001:db8::/32 documentation range), compiled by the real emitter. Modes:
//!
//! * `rampart N` — Rampart's transaction (hash set for singles, interval set for prefixes,
//!   elements in `add element` chunks, one `nft -f`).
//! * `elements N` — the same entries, one per line (for the naive loaders).
//! * a third argument `v4`: IPv4 entries instead (see [`entries_v4`]).
//!
//! Deterministic: a fixed xorshift seed.

use rampart_ir::{
    Action, AddressSet, Direction, IpNet, Ipv4Net, Ipv6Net, Peer, Policy, Rule, SetId, SetSource,
    SourceLoc,
};

/// IPv4 variant: singles in 240.0.0.0/5 and /24 prefixes in 248.0.0.0/5 (the reserved,
/// never-routed class E range: only ever loaded into a throwaway namespace, no traffic).
fn entries_v4(n: usize) -> Vec<IpNet> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = next() as u32;
        let net = if out.len() % 2 == 0 {
            Ipv4Net::new((0xf000_0000 | (r & 0x07ff_ffff)).into(), 32).unwrap()
        } else {
            Ipv4Net::new((0xf800_0000 | (r & 0x07ff_ff00)).into(), 24).unwrap()
        };
        if seen.insert(net) {
            out.push(IpNet::V4(net));
        }
    }
    out
}

fn entries(n: usize) -> Vec<IpNet> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let r = next();
        let single = out.len() % 2 == 0;
        // 2001:db8:XXXX:XXXX::/64 — 32 random bits below the /32.
        let hi: u128 = (0x2001_0db8u128 << 96) | (u128::from(r as u32) << 64);
        let net = if single {
            let lo = u128::from(next() | 1);
            Ipv6Net::new((hi | lo).into(), 128).unwrap()
        } else {
            Ipv6Net::new(hi.into(), 64).unwrap()
        };
        if seen.insert(net) {
            out.push(IpNet::V6(net));
        }
    }
    out
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = args.first().map(String::as_str).unwrap_or("rampart");
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let v4 = args.get(2).is_some_and(|f| f == "v4");
    let elems = if v4 { entries_v4(n) } else { entries(n) };
    if mode == "elements" {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        for e in &elems {
            let _ = writeln!(
                out,
                "{}",
                if e.prefix_len() == 128 {
                    e.addr().to_string()
                } else {
                    e.to_string()
                }
            );
        }
        return;
    }
    let policy = Policy {
        sets: vec![AddressSet {
            name: "blocklist".into(),
            elements: IpNet::aggregate(&elems),
            source: SetSource::Inline,
            except: vec![],
            loc: SourceLoc::default(),
        }],
        rules: vec![Rule {
            from: vec![Peer::Set(SetId(0))],
            ..Rule::new("block", Direction::Ingress, Action::Drop)
        }],
        ..Policy::default()
    };
    match rampart_nft::emit(&policy, &rampart_nft::EmitOptions::default()) {
        Ok(text) => print!("{text}"),
        Err(e) => {
            eprintln!("big_set: {e}");
            std::process::exit(2);
        }
    }
}
