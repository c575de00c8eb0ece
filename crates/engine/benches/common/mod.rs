//! Workload shared by the `simulate` bench and the `replay_time` example: the example policy
//! plus a 100k-prefix blocklist, and a generated packet mix.
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use rampart_engine::classbench::SplitMix64;
use rampart_engine::decode::{self, Transport};
use rampart_engine::pcap::Record;
use rampart_engine::simulate::{SimConfig, Simulator};
use rampart_engine::{Engine, L4Meta, PacketMeta};
use rampart_ir::{Action, AddressSet, Direction, IpNet, Ipv4Net, Peer, SetId, SetSource};

pub const PACKETS: usize = 100_000;
pub const BLOCKLIST: usize = 100_000;

pub fn policy() -> rampart_ir::Policy {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples/m1037-baseline/policy.toml");
    let mut p = rampart_policy::load_file(&path)
        .map(|l| l.policy)
        .unwrap_or_else(|_| panic!("cannot load {}", path.display()));
    // A 100k-prefix blocklist, checked first in forward and ingress.
    let mut rng = SplitMix64::new(5);
    let elements: Vec<IpNet> = (0..BLOCKLIST)
        .map(|_| {
            let a = Ipv4Addr::from(rng.next_u64() as u32);
            IpNet::V4(
                Ipv4Net::new(a, if rng.range(0, 9) == 0 { 24 } else { 32 })
                    .unwrap()
                    .trunc(),
            )
        })
        .collect();
    p.sets.push(AddressSet {
        name: "bench-blocklist".into(),
        elements,
        source: SetSource::Inline,
        except: vec![],
        loc: Default::default(),
    });
    let set = SetId((p.sets.len() - 1) as u32);
    for dir in [Direction::Ingress, Direction::Forward] {
        let mut r = p.rules[0].clone();
        r.name = format!("bench-blocklist-{dir}");
        r.direction = dir;
        r.from = vec![Peer::Set(set)];
        r.to = vec![];
        r.services = vec![];
        r.ct_states = vec![];
        r.limit = None;
        r.conn_limit = None;
        r.owner = None;
        r.action = Action::Drop;
        p.rules.insert(0, r);
    }
    p
}

/// Ethernet frames: 45% TCP, 35% UDP, 10% ICMP, 10% IPv6 TCP; addresses from the example's
/// zones, the internet and the blocklist's space.
pub fn frames() -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(11);
    let local = [
        [192u8, 0, 2, 5],
        [192, 0, 2, 130],
        [203, 0, 113, 10],
        [198, 51, 100, 140],
    ];
    let ports = [22u16, 53, 80, 443, 445, 3389, 8080, 25, 123, 5900];
    (0..PACKETS)
        .map(|_| {
            let kind = rng.range(0, 99);
            let ext = Ipv4Addr::from(rng.next_u64() as u32).octets();
            let loc = local[rng.range(0, 3) as usize];
            let (src, dst) = if rng.range(0, 1) == 0 {
                (loc, ext)
            } else {
                (ext, loc)
            };
            let dport = ports[rng.range(0, 9) as usize];
            let sport = 1024 + rng.range(0, 60000) as u16;
            let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
            if kind >= 90 {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0, 0, 20, 6, 64]);
                let s: Ipv6Addr = "2001:db8:20::5".parse().unwrap();
                let d = Ipv6Addr::from(u128::from(rng.next_u64()) | (0x2001_0db8u128 << 96));
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
                f.extend_from_slice(&sport.to_be_bytes());
                f.extend_from_slice(&dport.to_be_bytes());
                f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
                return f;
            }
            let (proto, l4): (u8, Vec<u8>) = if kind < 45 {
                let mut t = sport.to_be_bytes().to_vec();
                t.extend_from_slice(&dport.to_be_bytes());
                let flags = if rng.range(0, 3) == 0 { 0x02 } else { 0x10 };
                t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 1, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
                (6, t)
            } else if kind < 80 {
                let mut u = sport.to_be_bytes().to_vec();
                u.extend_from_slice(&dport.to_be_bytes());
                u.extend_from_slice(&[0, 16, 0, 0]);
                u.extend_from_slice(&[0x12, 0x34, 1, 0, 0, 1, 0, 0]);
                (17, u)
            } else {
                (1, vec![8, 0, 0, 0, 0, 1, 0, 1])
            };
            let total = (20 + l4.len()) as u16;
            f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
            f.extend_from_slice(&src);
            f.extend_from_slice(&dst);
            f.extend_from_slice(&l4);
            f
        })
        .collect()
}

pub fn meta_of<'a>(ip: &decode::Ip<'a>) -> PacketMeta<'static> {
    let l4 = match ip.l4 {
        Transport::Tcp(t) => L4Meta::Ports {
            src: t.src,
            dst: t.dst,
        },
        Transport::Udp(u) => L4Meta::Ports {
            src: u.src,
            dst: u.dst,
        },
        Transport::Icmp(i) => L4Meta::Icmp {
            icmp_type: i.icmp_type,
            code: i.code,
        },
        _ => L4Meta::None,
    };
    let local = |a: IpAddr| matches!(a, IpAddr::V4(v) if v.octets()[0] == 192);
    let dir = if local(ip.dst) {
        Direction::Ingress
    } else {
        Direction::Forward
    };
    let mut m = PacketMeta::new(dir, ip.src, ip.dst, ip.protocol, l4);
    m.iif = Some("wan0");
    m.oif = if dir == Direction::Forward {
        Some("corp0")
    } else {
        None
    };
    m.len = ip.len;
    m
}

/// The replay of this workload: a gateway between the internet (`wan0`) and the LAN
/// (`corp0`, 192.0.2.0/24 local), no events.
pub fn simulator(policy: &rampart_ir::Policy) -> Simulator {
    Simulator::new(
        Engine::new(policy),
        SimConfig {
            local: vec!["192.0.2.0/24".parse().unwrap()],
            iif: Some("wan0".into()),
            oif: Some("corp0".into()),
            no_events: true,
            ..SimConfig::default()
        },
    )
}

/// One pass of `frames` through `sim`, one frame a microsecond after `*ts_ns` (advanced).
pub fn replay_pass(
    sim: &mut Simulator,
    frames: &[Vec<u8>],
    ts_ns: &mut u64,
    sink: &mut dyn rampart_events::Sink,
) {
    for f in frames {
        *ts_ns += 1000;
        let rec = Record {
            ts_ns: *ts_ns,
            linktype: 1,
            data: f,
            orig_len: f.len() as u32,
        };
        sim.process(&rec, sink).unwrap();
    }
}
