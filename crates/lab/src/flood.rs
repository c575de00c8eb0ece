//! Floods with legitimate clients measured during them: a raw-socket SYN sender (random
//! spoofed sources or the flooding host's own address) paced to a packet rate, a server that
//! answers every connection, a paced legitimate client that counts completed exchanges, and
//! samplers for the gateway's conntrack table and the machine's softirq time. Everything runs
//! on threads that enter the lab's namespaces; nothing touches the host's namespace.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::in_namespace;
use crate::payload::{Payload, PAYLOAD_MAX_BYTES};
use crate::traffic::Endpoint;
use crate::LabError;

/// Highest flood rate a scenario may ask for (Why: the lab shares two cores with CI).
pub const FLOOD_RATE_MAX_PPS: u32 = 200_000;
/// Longest flood a scenario may ask for.
pub const FLOOD_DURATION_MAX_MS: u32 = 5_000;
/// Most legitimate connections measured per flood case.
pub const LEGIT_CONNECTIONS_MAX: u32 = 1_000;
/// How long one legitimate connection may take to connect, and then to get its reply. Why 3 s:
/// a real client retransmits a lost SYN after 1 s and a lost segment after 200 ms+; 3 s allows
/// one such retransmission, so "completed" means what a patient user sees, not "never lost a
/// packet".
pub const LEGIT_WAIT_MS: u64 = 3_000;

/// Spoofed IPv6 sources of a random-source flood: `2001:db8:f000::/36`, inside the
/// documentation prefix and outside every lab segment.
pub const RANDOM_V6_BASE: Ipv6Addr = Ipv6Addr::new(0x2001, 0x0db8, 0xf000, 0, 0, 0, 0, 0);
/// Spoofed IPv4 sources of a random-source flood: 203.0.113.64-255, the part of TEST-NET-3 no
/// lab segment uses (192 addresses: too few to stay under per-source limits, so IPv4 random
/// floods also exercise bans).
pub const RANDOM_V4_FIRST: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 64);

/// Routes that make the spoofed sources silent on the gateway (`blackhole`: no ICMP
/// unreachable), as on the internet where a spoofed address's SYN-ACKs vanish. Without them
/// the server would get an ICMP error per SYN-ACK and drop the half-open connection at once,
/// and no flood could ever fill its SYN queue.
pub const SPOOFED_ROUTES: [&str; 3] = ["2001:db8:f000::/36", "203.0.113.64/26", "203.0.113.128/25"];

/// What one flood case measured, for the scoreboard.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct FloodMeasure {
    /// SYNs sent by the flooder.
    pub flood_packets: u64,
    /// Achieved flood rate, packets per second.
    pub flood_pps: u64,
    /// Legitimate exchanges attempted during the flood.
    pub legit_attempts: u32,
    /// Legitimate exchanges that completed (connect, request, reply).
    pub legit_ok: u32,
    /// `legit_ok / legit_attempts`.
    pub success_ratio: f64,
    /// Largest conntrack table size seen on the gateway during the flood.
    pub conntrack_peak: u64,
    /// SYNs the gateway's SYN proxy answered with a cookie during the flood (its
    /// `syn_received` counter): the flood's and the legitimate clients'.
    pub proxied_syns: u64,
    /// Share of all CPU time spent in softirq during the flood, in percent (whole machine).
    pub softirq_pct: f64,
    /// When the flooding source appeared in a ban set, milliseconds after the flood started
    /// (`None`: never, or not asked).
    pub banned_after_ms: Option<u64>,
    /// Addresses in the gateway's ban sets when the flood ended: what auto-ban caught. A
    /// random-source flood under the per-source caps bans nobody, so what kept the server
    /// reachable was the SYN proxy.
    pub banned_sources: u64,
}

/// Where flood packets claim to come from.
#[derive(Clone, Copy, Debug)]
pub enum Sources {
    /// A fresh random spoofed address per packet (see [`RANDOM_V6_BASE`], [`RANDOM_V4_FIRST`]).
    Random,
    /// The flooding host's own address.
    Own(IpAddr),
}

/// A small xorshift generator: the flood needs cheap variety, not cryptographic randomness.
struct Rng(u64);

impl Rng {
    fn seeded() -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        Rng(t | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        acc += u32::from(word);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    !(acc as u16)
}

/// A TCP SYN header (20 bytes, no options) with its checksum over the pseudo header.
fn tcp_syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) -> [u8; 20] {
    let mut t = [0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&seq.to_be_bytes());
    t[12] = 5 << 4;
    t[13] = 0x02; // SYN
    t[14..16].copy_from_slice(&64_240u16.to_be_bytes());
    let csum = fold(sum16(&t, tcp_pseudo_header_sum(src, dst)));
    t[16..18].copy_from_slice(&csum.to_be_bytes());
    t
}

/// The one's-complement sum (unfolded) of the pseudo-header of a 20-byte TCP segment from
/// `src` to `dst`: both addresses, the protocol and the length (0 for mixed families).
fn tcp_pseudo_header_sum(src: IpAddr, dst: IpAddr) -> u32 {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => sum16(&d.octets(), sum16(&s.octets(), 0)) + 6 + 20,
        (IpAddr::V6(s), IpAddr::V6(d)) => sum16(&d.octets(), sum16(&s.octets(), 0)) + 20 + 6,
        _ => 0,
    }
}

/// An IPv6 SYN as a NIC with checksum offload hands it over: Ethernet header, IPv6 header and
/// TCP header whose checksum field holds only the pseudo-header sum, preceded by the
/// `virtio_net_hdr` that tells a `PACKET_VNET_HDR` packet socket the checksum is partial
/// (`VIRTIO_NET_HDR_F_NEEDS_CSUM` from the TCP header, field at offset 16).
pub fn syn_frame_v6(
    link: &FloodLink,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport: u16,
    dport: u16,
    seq: u32,
) -> Vec<u8> {
    const ETH_LEN: u16 = 14;
    const IPV6_LEN: u16 = 40;
    let mut f = Vec::with_capacity(VNET_HDR_LEN + 74);
    f.push(VIRTIO_NET_HDR_F_NEEDS_CSUM);
    f.push(0); // gso_type: none
    f.extend_from_slice(&0u16.to_le_bytes()); // hdr_len
    f.extend_from_slice(&0u16.to_le_bytes()); // gso_size
    f.extend_from_slice(&(ETH_LEN + IPV6_LEN).to_le_bytes()); // csum_start
    f.extend_from_slice(&16u16.to_le_bytes()); // csum_offset
    f.extend_from_slice(&link.next_hop_mac);
    f.extend_from_slice(&link.own_mac);
    f.extend_from_slice(&0x86ddu16.to_be_bytes());
    let mut packet = syn_packet(IpAddr::V6(src), IpAddr::V6(dst), sport, dport, seq);
    // CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not its complement.
    let partial = !fold(tcp_pseudo_header_sum(IpAddr::V6(src), IpAddr::V6(dst)));
    packet[40 + 16..40 + 18].copy_from_slice(&partial.to_be_bytes());
    f.extend_from_slice(&packet);
    f
}

/// Length of `struct virtio_net_hdr`.
const VNET_HDR_LEN: usize = 10;
/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;

/// The link a flood leaves by: the flooder's interface and the next hop's MAC address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodLink {
    /// Interface index in the flooder's namespace.
    pub ifindex: i32,
    /// The interface's own MAC address.
    pub own_mac: [u8; 6],
    /// The next hop's MAC address (the gateway's, or the destination's when on-link).
    pub next_hop_mac: [u8; 6],
}

fn ip_json(ns: &str, args: &[&str]) -> Result<serde_json::Value, LabError> {
    let out = crate::netns::run_in(ns, "ip", args)?;
    serde_json::from_slice(&out.stdout).map_err(|e| LabError::Traffic {
        message: format!("`ip {}` in {ns} printed no JSON: {e}", args.join(" ")),
    })
}

fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let bytes: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    bytes.try_into().ok()
}

/// The link namespace `ns` reaches `dst` by (`ip route get`, then the neighbour table; an
/// unresolved next hop is resolved with one ping).
pub fn flood_link(ns: &str, dst: IpAddr) -> Result<FloodLink, LabError> {
    let family = if dst.is_ipv6() { "-6" } else { "-4" };
    let dst_text = dst.to_string();
    let route = ip_json(ns, &["-j", family, "route", "get", &dst_text])?;
    let route = &route[0];
    let missing = |what: &str| LabError::Traffic {
        message: format!("no {what} toward {dst} in {ns}"),
    };
    let dev = route["dev"]
        .as_str()
        .ok_or_else(|| missing("route"))?
        .to_string();
    let next_hop = route["gateway"].as_str().unwrap_or(&dst_text).to_string();
    let link = ip_json(ns, &["-j", "link", "show", "dev", &dev])?;
    let ifindex = link[0]["ifindex"]
        .as_i64()
        .and_then(|i| i32::try_from(i).ok())
        .ok_or_else(|| missing("interface index"))?;
    let own_mac = link[0]["address"]
        .as_str()
        .and_then(parse_mac)
        .ok_or_else(|| missing("interface address"))?;
    let lookup = || -> Result<Option<[u8; 6]>, LabError> {
        let neigh = ip_json(ns, &["-j", family, "neigh", "show", &next_hop, "dev", &dev])?;
        Ok(neigh[0]["lladdr"].as_str().and_then(parse_mac))
    };
    let next_hop_mac = match lookup()? {
        Some(mac) => mac,
        None => {
            // Any answer or none: the solicitation alone fills the neighbour entry.
            let _ = crate::netns::run_in(ns, "ping", &["-c", "1", "-W", "1", &next_hop]);
            lookup()?.ok_or_else(|| missing("neighbour entry for the next hop"))?
        }
    };
    Ok(FloodLink {
        ifindex,
        own_mac,
        next_hop_mac,
    })
}

/// A packet socket on `link` that sends whole frames behind a `virtio_net_hdr`.
fn vnet_packet_socket(link: &FloodLink) -> Result<Socket, LabError> {
    // Protocol 0: this socket only sends (it receives nothing).
    let socket = Socket::new(Domain::PACKET, Type::RAW, Some(Protocol::from(0)))
        .map_err(io_err("packet socket"))?;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&socket);
    let on: libc::c_int = 1;
    // SAFETY: a valid socket, a pointer to a live c_int and its size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_PACKET,
            libc::PACKET_VNET_HDR,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_err("PACKET_VNET_HDR")(std::io::Error::last_os_error()));
    }
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_ifindex = link.ifindex;
    // SAFETY: a valid socket, a pointer to a live sockaddr_ll and its size.
    let rc = unsafe {
        libc::bind(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io_err("bind packet socket")(std::io::Error::last_os_error()));
    }
    Ok(socket)
}

/// A whole SYN packet (IP header included) from `src` to `dst`.
pub fn syn_packet(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) -> Vec<u8> {
    let tcp = tcp_syn(src, dst, sport, dport, seq);
    let mut p = Vec::with_capacity(60);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            // The kernel fills the IPv4 header checksum of IP_HDRINCL packets; fill it anyway
            // so the bytes are a valid packet on their own.
            let csum = fold(sum16(&p, 0));
            p[10..12].copy_from_slice(&csum.to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
        }
        _ => {}
    }
    p.extend_from_slice(&tcp);
    p
}

fn io_err(what: &'static str) -> impl Fn(std::io::Error) -> LabError {
    move |source| LabError::Spawn {
        command: what.to_string(),
        source,
    }
}

/// Send SYNs to `dst:port` from namespace `ns` at `rate_pps` until `stop` is set or
/// `duration_ms` passes; returns the number sent. IPv6 floods need `link` ([`flood_link`],
/// resolved by the caller before it starts timing: resolving a next hop can take a second).
///
/// IPv6 SYNs leave as frames with a partial checksum, as a NIC with checksum offload delivers
/// them. Why: the kernel's nft `synproxy` verifies a SYN whose checksum is not yet known
/// (CHECKSUM_NONE, which is what a raw socket's packet is over veth) with the IPv4
/// pseudo-header (`nf_ip_checksum`) also for IPv6, so it silently drops every such IPv6 SYN
/// before proxying it; the flood would never reach the proxy it is meant to load.
#[allow(clippy::too_many_arguments)]
pub fn spawn_flood(
    ns: &str,
    dst: IpAddr,
    port: u16,
    sources: Sources,
    rate_pps: u32,
    duration_ms: u32,
    stop: Arc<AtomicBool>,
    link: Option<FloodLink>,
) -> std::thread::JoinHandle<Result<u64, LabError>> {
    in_namespace(ns, move || {
        if dst.is_ipv6() && link.is_none() {
            return Err(LabError::Traffic {
                message: format!("an IPv6 flood to {dst} needs its link resolved first"),
            });
        }
        let domain = if dst.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let socket = match &link {
            Some(link) => vnet_packet_socket(link)?,
            // IPPROTO_RAW: the packet carries its own IP header (spoofed sources).
            None => Socket::new(domain, Type::RAW, Some(Protocol::from(libc::IPPROTO_RAW)))
                .map_err(io_err("raw socket"))?,
        };
        let target: socket2::SockAddr = SocketAddr::new(dst, 0).into();
        let mut rng = Rng::seeded();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(u64::from(duration_ms));
        let mut sent: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let due = (now - start).as_micros() as u64 * u64::from(rate_pps) / 1_000_000;
            while sent < due {
                let r = rng.next();
                let src = match sources {
                    Sources::Own(a) => a,
                    Sources::Random => match dst {
                        IpAddr::V6(_) => {
                            let base = u128::from(RANDOM_V6_BASE);
                            // 92 random bits below the /36.
                            let low = (u128::from(r) << 28 ^ u128::from(rng.next()))
                                & ((1u128 << 92) - 1);
                            IpAddr::V6(Ipv6Addr::from(base | low))
                        }
                        IpAddr::V4(_) => {
                            let first = u32::from(RANDOM_V4_FIRST);
                            IpAddr::V4(Ipv4Addr::from(first + (r % 192) as u32))
                        }
                    },
                };
                let sport = 1024 + (r >> 32) as u16 % 60_000;
                let seq = (r >> 16) as u32;
                let sent_ok = match (&link, src, dst) {
                    (Some(link), IpAddr::V6(s), IpAddr::V6(d)) => socket
                        .send(&syn_frame_v6(link, s, d, sport, port, seq))
                        .is_ok(),
                    _ => socket
                        .send_to(&syn_packet(src, dst, sport, port, seq), &target)
                        .is_ok(),
                };
                // A full socket buffer under flood is expected: count only what left.
                if sent_ok {
                    sent += 1;
                } else {
                    break;
                }
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        Ok(sent)
    })
}

/// Most connections a request flood keeps waiting for their handshake (Why: bounds the
/// flooder's sockets once the gateway drops its SYNs).
pub const REQUEST_FLOOD_PENDING_MAX: usize = 1_024;

/// How long a request flood's connection may wait for its handshake before it is abandoned.
const REQUEST_FLOOD_CONNECT_MS: u64 = 300;

/// An application-layer flood from namespace `ns`: open TCP connections from `src` to
/// `dst:port` at `rate_pps` (non-blocking, so a dropped handshake never slows the pace), send
/// `request` on each as soon as it is established, and close it, until `stop` is set or
/// `duration_ms` passes. Returns the connections opened; `requested` counts the requests
/// that were sent on established connections.
#[allow(clippy::too_many_arguments)]
pub fn spawn_request_flood(
    ns: &str,
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    request: Vec<u8>,
    rate_pps: u32,
    duration_ms: u32,
    stop: Arc<AtomicBool>,
    requested: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Result<u64, LabError>> {
    in_namespace(ns, move || {
        let domain = if dst.is_ipv6() {
            Domain::IPV6
        } else {
            Domain::IPV4
        };
        let target: socket2::SockAddr = SocketAddr::new(dst, port).into();
        let local: socket2::SockAddr = SocketAddr::new(src, 0).into();
        let start = Instant::now();
        let deadline = start + Duration::from_millis(u64::from(duration_ms));
        let patience = Duration::from_millis(REQUEST_FLOOD_CONNECT_MS);
        let mut pending: std::collections::VecDeque<(Instant, Socket)> =
            std::collections::VecDeque::new();
        let mut opened: u64 = 0;
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let due = (now - start).as_micros() as u64 * u64::from(rate_pps) / 1_000_000;
            while opened < due && pending.len() < REQUEST_FLOOD_PENDING_MAX {
                let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
                    .map_err(io_err("tcp socket"))?;
                socket.bind(&local).map_err(io_err("bind"))?;
                socket
                    .set_nonblocking(true)
                    .map_err(io_err("nonblocking"))?;
                // EINPROGRESS: the handshake completes (or not) while the pace goes on.
                let _ = socket.connect(&target);
                pending.push_back((now, socket));
                opened += 1;
            }
            // A connecting socket's send fails with EAGAIN until the handshake completes; a
            // refused or reset one fails otherwise and is dropped. Dropping closes it.
            pending.retain(|(since, socket)| match socket.send(&request) {
                Ok(_) => {
                    requested.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => since.elapsed() < patience,
                Err(_) => false,
            });
            std::thread::sleep(Duration::from_micros(500));
        }
        Ok(opened)
    })
}

/// What a flood case's server did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections answered with the reply.
    pub served: u64,
    /// `accept` calls that failed with a connection's own network error (retried).
    pub transient_errors: u64,
}

/// The errors accept(2) says to treat like EAGAIN on TCP: a pending connection's network
/// error (and an aborted or interrupted accept).
fn is_transient_accept_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::ENETDOWN
                | libc::EPROTO
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

/// A server in `server.ns` answering every connection on `port` with `payload`'s reply until
/// `stop` is set.
pub fn spawn_server(
    server: &Endpoint,
    port: u16,
    payload: Payload,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<ServerCounts, LabError>>, LabError> {
    let addr = SocketAddr::new(server.addr, port);
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = in_namespace(&server.ns, move || {
        let socket = Socket::new(
            if addr.is_ipv6() {
                Domain::IPV6
            } else {
                Domain::IPV4
            },
            Type::STREAM,
            Some(Protocol::TCP),
        )
        .map_err(io_err("tcp socket"))?;
        socket
            .set_reuse_address(true)
            .map_err(io_err("SO_REUSEADDR"))?;
        socket.bind(&addr.into()).map_err(io_err("bind"))?;
        // A small backlog, like an appliance: an unprotected server's SYN queue fills at once.
        socket.listen(16).map_err(io_err("listen"))?;
        socket
            .set_nonblocking(true)
            .map_err(io_err("nonblocking"))?;
        let _ = ready_tx.send(());
        let request = Arc::new(payload.request(true));
        let reply = Arc::new(payload.reply(true));
        let served = Arc::new(AtomicU64::new(0));
        let mut transient_errors = 0u64;
        let mut accepted = 0u64;
        let mut handlers = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            match socket.accept() {
                Ok((conn, _)) => {
                    accepted += 1;
                    // One thread per connection, so a client whose request is slow (a lost
                    // segment being retransmitted) never holds up the others.
                    let (request, reply, served) = (
                        Arc::clone(&request),
                        Arc::clone(&reply),
                        Arc::clone(&served),
                    );
                    handlers.push(std::thread::spawn(move || {
                        let _ = conn.set_nonblocking(false);
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(LEGIT_WAIT_MS)));
                        let mut stream: std::net::TcpStream = conn.into();
                        if read_exactly(&mut stream, request.len()).as_deref() == Some(&request[..])
                        {
                            let _ = stream.write_all(&reply);
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                    }));
                    // Bounded: reap finished handlers as we go.
                    handlers.retain(|h| !h.is_finished());
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                // accept(2): Linux passes a pending connection's network error on as
                // accept's own; retry as for EAGAIN (the one connection is lost, the server
                // is not).
                Err(e) if is_transient_accept_error(&e) => {
                    transient_errors += 1;
                }
                Err(e) => return Err(io_err("accept")(e)),
            }
        }
        for h in handlers {
            let _ = h.join();
        }
        Ok(ServerCounts {
            accepted,
            served: served.load(Ordering::Relaxed),
            transient_errors,
        })
    });
    match ready_rx.recv_timeout(Duration::from_secs(3)) {
        Ok(()) => Ok(handle),
        Err(_) => Err(match handle.join() {
            Ok(Err(e)) => e,
            _ => LabError::Traffic {
                message: "the flood case's server did not start".into(),
            },
        }),
    }
}

/// Read `n` bytes (or what arrived before the timeout).
pub fn read_exactly(stream: &mut std::net::TcpStream, n: usize) -> Option<Vec<u8>> {
    Some(read_up_to(stream, n).0)
}

/// Read `n` bytes (at most [`PAYLOAD_MAX_BYTES`]), or what arrived before the end of the stream
/// or an error, which is returned beside them.
fn read_up_to(stream: &mut std::net::TcpStream, n: usize) -> (Vec<u8>, Option<std::io::Error>) {
    let mut buf = vec![0u8; n.min(PAYLOAD_MAX_BYTES)];
    let mut got = 0;
    let mut error = None;
    while got < buf.len() {
        match stream.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    buf.truncate(got);
    (buf, error)
}

/// Outcome of the legitimate exchanges of a flood case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LegitCounts {
    /// Completed (connect, request, reply).
    pub ok: u32,
    /// The handshake did not complete in time.
    pub connect_failed: u32,
    /// Connected, but the reply did not arrive (or arrived cut).
    pub reply_failed: u32,
    /// Of `reply_failed`, those whose connection was reset or refused (the rest timed out or
    /// were cut).
    pub reply_reset: u32,
    /// The client ports of the connections whose reply failed.
    pub reply_failed_ports: Vec<u16>,
}

/// `count` exchanges from `client` to `server:port`, started evenly over `spread_ms`, each on
/// its own thread (a slow one never delays the next), each with [`LEGIT_WAIT_MS`] to connect
/// and as long again for the reply: what a patient real client would wait.
pub fn spawn_legit(
    client: &Endpoint,
    server: &Endpoint,
    port: u16,
    payload: Payload,
    count: u32,
    spread_ms: u32,
) -> std::thread::JoinHandle<Result<LegitCounts, LabError>> {
    let server_addr = SocketAddr::new(server.addr, port);
    let client_addr = SocketAddr::new(client.addr, 0);
    let ns = client.ns.clone();
    std::thread::spawn(move || {
        let start = Instant::now();
        let mut attempts = Vec::with_capacity(count as usize);
        for i in 0..count {
            let due = start
                + Duration::from_millis(
                    u64::from(spread_ms) * u64::from(i) / u64::from(count.max(1)),
                );
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            attempts.push(in_namespace(&ns, move || {
                Ok(one_exchange(client_addr, server_addr, payload))
            }));
        }
        let mut counts = LegitCounts::default();
        for a in attempts {
            match a.join() {
                Ok(Ok(Attempt::Ok)) => counts.ok += 1,
                Ok(Ok(Attempt::ConnectFailed)) => counts.connect_failed += 1,
                Ok(Ok(Attempt::ReplyFailed { reset, port })) => {
                    counts.reply_failed += 1;
                    counts.reply_reset += u32::from(reset);
                    counts.reply_failed_ports.push(port);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(LabError::Traffic {
                        message: "a legitimate client thread panicked".into(),
                    })
                }
            }
        }
        Ok(counts)
    })
}

enum Attempt {
    Ok,
    ConnectFailed,
    ReplyFailed {
        /// The connection was reset (or refused) rather than left waiting.
        reset: bool,
        /// The client's port.
        port: u16,
    },
}

fn one_exchange(client: SocketAddr, server: SocketAddr, payload: Payload) -> Attempt {
    let request = payload.request(true);
    let reply = payload.reply(true);
    // The port comes from `connect` (see `traffic::tcp_client_socket`): a 4-tuple reused
    // while the gateway still tracks its predecessor hangs behind a SYN proxy.
    let Ok(socket) = crate::traffic::tcp_client_socket(client) else {
        return Attempt::ConnectFailed;
    };
    if socket
        .connect_timeout(&server.into(), Duration::from_millis(LEGIT_WAIT_MS))
        .is_err()
    {
        return Attempt::ConnectFailed;
    }
    let port = socket
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .map_or(0, |a| a.port());
    let mut stream: std::net::TcpStream = socket.into();
    let _ = stream.set_read_timeout(Some(Duration::from_millis(LEGIT_WAIT_MS)));
    if let Err(e) = stream.write_all(&request) {
        return Attempt::ReplyFailed {
            reset: is_reset(&e),
            port,
        };
    }
    match read_up_to(&mut stream, reply.len()) {
        (got, None) if got == reply => Attempt::Ok,
        (_, error) => Attempt::ReplyFailed {
            reset: error.as_ref().is_some_and(is_reset),
            port,
        },
    }
}

fn is_reset(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::ConnectionRefused
            | std::io::ErrorKind::ConnectionAborted
            | std::io::ErrorKind::BrokenPipe
    )
}

/// Largest `nf_conntrack_count` of namespace `ns` sampled every 50 ms until `stop`.
pub fn spawn_conntrack_sampler(
    ns: &str,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<Result<u64, LabError>> {
    in_namespace(ns, move || {
        let peak = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            // /proc/sys/net follows the reading thread's network namespace.
            if let Ok(text) = std::fs::read_to_string("/proc/sys/net/netfilter/nf_conntrack_count")
            {
                if let Ok(n) = text.trim().parse::<u64>() {
                    peak.fetch_max(n, Ordering::Relaxed);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(peak.load(Ordering::Relaxed))
    })
}

/// Kernel counters that say where a flood case's legitimate connections were lost, read in
/// one namespace: the TCP MIB (`Tcp*`, `TcpExt*` from `netstat`/`snmp`) and the SYN proxy's
/// per-CPU statistics summed (`synproxy_*`). Read before and after a flood; the case's detail
/// names the ones that moved when it fails.
pub type NetCounters = std::collections::BTreeMap<String, u64>;

/// The SYN proxy and TCP counters that locate a lost connection, in the order a failed case's
/// detail prints them.
pub const LOSS_COUNTERS: [&str; 15] = [
    "synproxy_syn_received",
    "synproxy_cookie_valid",
    "synproxy_cookie_invalid",
    "synproxy_cookie_retrans",
    "synproxy_conn_reopened",
    "TcpExtListenOverflows",
    "TcpExtListenDrops",
    "TcpExtTCPReqQFullDrop",
    "TcpExtTCPAbortOnData",
    "TcpExtTCPAbortOnTimeout",
    "TcpOutRsts",
    "TcpAttemptFails",
    "TcpEstabResets",
    "TcpRetransSegs",
    "TcpExtTCPTimeouts",
];

/// Read [`NetCounters`] inside namespace `ns`.
pub fn read_net_counters(ns: &str) -> std::thread::JoinHandle<Result<NetCounters, LabError>> {
    in_namespace(ns, || {
        // `/proc/thread-self/net` follows this thread's network namespace (`/proc/self/net`
        // follows the process's first thread, which never left the host's).
        let mut counters = NetCounters::new();
        for file in ["netstat", "snmp"] {
            if let Ok(text) = std::fs::read_to_string(format!("/proc/thread-self/net/{file}")) {
                parse_mib_pairs(&text, &mut counters);
            }
        }
        let synproxy = std::fs::read_to_string("/proc/thread-self/net/stat/synproxy").ok();
        if let Some(sp) = synproxy
            .as_deref()
            .and_then(rampart_nft_apply::status::parse_synproxy_stats)
        {
            for (name, value) in [
                ("synproxy_syn_received", sp.syn_received),
                ("synproxy_cookie_valid", sp.cookie_valid),
                ("synproxy_cookie_invalid", sp.cookie_invalid),
                ("synproxy_cookie_retrans", sp.cookie_retrans),
                ("synproxy_conn_reopened", sp.conn_reopened),
            ] {
                counters.insert(name.to_string(), value);
            }
        }
        Ok(counters)
    })
}

/// `/proc/net/netstat` and `/proc/net/snmp` come as line pairs: `Prefix: names…` then
/// `Prefix: values…`. Keys are the prefix and the name joined (`TcpExtListenDrops`).
fn parse_mib_pairs(text: &str, out: &mut NetCounters) {
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        let (Some((prefix, names)), Some((_, values))) =
            (names.split_once(':'), values.split_once(':'))
        else {
            continue;
        };
        for (name, value) in names.split_whitespace().zip(values.split_whitespace()) {
            // Negative values (`MaxConn -1`) are limits, not counters.
            if let Ok(v) = value.parse::<u64>() {
                out.insert(format!("{prefix}{name}"), v);
            }
        }
    }
}

/// How much counter `name` grew from `before` to `after` (0 when absent).
pub fn counter_delta(before: &NetCounters, after: &NetCounters, name: &str) -> u64 {
    after
        .get(name)
        .copied()
        .unwrap_or(0)
        .saturating_sub(before.get(name).copied().unwrap_or(0))
}

/// The [`LOSS_COUNTERS`] that moved from `before` to `after`, as `name +delta` items.
pub fn moved_counters(before: &NetCounters, after: &NetCounters) -> Vec<String> {
    LOSS_COUNTERS
        .iter()
        .filter_map(|name| {
            let delta = counter_delta(before, after, name);
            (delta > 0).then(|| format!("{name} +{delta}"))
        })
        .collect()
}

/// One tracked TCP connection to a server: its TCP state and the client's port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrackedConn {
    /// Conntrack's TCP state name (`TIME_WAIT`, …).
    pub state: String,
    /// The original direction's source port.
    pub client_port: u16,
}

/// The gateway's tracked TCP connections to `server:port` (`/proc/net/nf_conntrack`, inside
/// namespace `ns`).
pub fn tracked_conns_to(
    ns: &str,
    server: SocketAddr,
) -> std::thread::JoinHandle<Result<Vec<TrackedConn>, LabError>> {
    in_namespace(ns, move || {
        let text =
            std::fs::read_to_string("/proc/thread-self/net/nf_conntrack").unwrap_or_default();
        Ok(parse_tracked_conns(&text, server))
    })
}

/// `conns` counted by state, as `STATE n` items.
pub fn count_states(conns: &[TrackedConn]) -> Vec<String> {
    let mut states = std::collections::BTreeMap::<&str, u64>::new();
    for c in conns {
        *states.entry(c.state.as_str()).or_insert(0) += 1;
    }
    states
        .into_iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect()
}

fn parse_tracked_conns(text: &str, server: SocketAddr) -> Vec<TrackedConn> {
    // The kernel prints addresses fully expanded: IPv6 as eight 4-digit groups.
    let addr = match server.ip() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => a
            .segments()
            .iter()
            .map(|g| format!("{g:04x}"))
            .collect::<Vec<_>>()
            .join(":"),
    };
    let dst = format!("dst={addr}");
    let dport = format!("dport={}", server.port());
    let mut conns = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `ipv6 10 tcp 6 TIMEOUT STATE src=… dst=… sport=… dport=…`: the first tuple is the
        // original direction.
        if fields.get(2) != Some(&"tcp") {
            continue;
        }
        let original: Vec<&str> = fields.iter().skip(6).take(4).copied().collect();
        if original.contains(&dst.as_str()) && original.contains(&dport.as_str()) {
            let client_port = original
                .iter()
                .find_map(|f| f.strip_prefix("sport=")?.parse().ok());
            if let (Some(state), Some(client_port)) = (fields.get(5), client_port) {
                conns.push(TrackedConn {
                    state: (*state).to_string(),
                    client_port,
                });
            }
        }
    }
    conns
}

/// (softirq, total) jiffies of the whole machine from `/proc/stat`.
pub fn cpu_times() -> (u64, u64) {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let softirq = fields.get(6).copied().unwrap_or(0);
    (softirq, fields.iter().take(8).sum())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one's-complement sum over a packet with a correct checksum folds to zero.
    fn verifies(bytes: &[u8], pseudo: u32) -> bool {
        fold(sum16(bytes, pseudo)) == 0
    }

    #[test]
    fn syn_packets_have_valid_checksums() {
        let s4: IpAddr = "203.0.113.70".parse().unwrap();
        let d4: IpAddr = "203.0.113.10".parse().unwrap();
        let p = syn_packet(s4, d4, 40_000, 443, 7);
        assert_eq!(p.len(), 40);
        assert!(verifies(&p[..20], 0), "IPv4 header checksum");
        let mut pseudo = sum16(&[203, 0, 113, 70, 203, 0, 113, 10], 0);
        pseudo += 6 + 20;
        assert!(verifies(&p[20..], pseudo), "TCP checksum");
        assert_eq!(p[33], 0x02, "SYN only");

        let s6: IpAddr = "2001:db8:f000::1".parse().unwrap();
        let d6: IpAddr = "2001:db8:10::10".parse().unwrap();
        let p = syn_packet(s6, d6, 40_000, 443, 7);
        assert_eq!(p.len(), 60);
        let (IpAddr::V6(s), IpAddr::V6(d)) = (s6, d6) else {
            unreachable!()
        };
        let mut pseudo = sum16(&s.octets(), 0);
        pseudo = sum16(&d.octets(), pseudo);
        pseudo += 20 + 6;
        assert!(verifies(&p[40..], pseudo));
    }

    #[test]
    fn mib_pairs_parse_and_moved_counters_name_the_deltas() {
        let mut c = NetCounters::new();
        parse_mib_pairs(
            "TcpExt: SyncookiesSent ListenOverflows ListenDrops\nTcpExt: 0 3 4\nTcp: RtoAlgorithm MaxConn OutRsts\nTcp: 1 -1 7\n",
            &mut c,
        );
        assert_eq!(c.get("TcpExtListenOverflows"), Some(&3));
        assert_eq!(c.get("TcpOutRsts"), Some(&7));
        assert_eq!(c.get("TcpMaxConn"), None, "a limit, not a counter");
        let before = c.clone();
        c.insert("TcpExtListenDrops".into(), 9);
        assert_eq!(moved_counters(&before, &c), ["TcpExtListenDrops +5"]);
    }

    #[test]
    fn conntrack_states_count_the_original_direction() {
        let text = "\
ipv6     10 tcp      6 117 TIME_WAIT src=2001:0db8:0030:0000:0000:0000:0000:0010 dst=2001:0db8:0010:0000:0000:0000:0000:0010 sport=40000 dport=443 src=2001:0db8:0010:0000:0000:0000:0000:0010 dst=2001:0db8:0030:0000:0000:0000:0000:0010 sport=443 dport=40000 [ASSURED] mark=0 zone=0 use=2
ipv6     10 tcp      6 3 SYN_SENT src=2001:0db8:0030:0000:0000:0000:0000:0010 dst=2001:0db8:0010:0000:0000:0000:0000:0010 sport=40002 dport=443 src=2001:0db8:0010:0000:0000:0000:0000:0010 dst=2001:0db8:0030:0000:0000:0000:0000:0010 sport=443 dport=40002 mark=0 zone=0 use=2
ipv6     10 tcp      6 117 TIME_WAIT src=2001:0db8:0010:0000:0000:0000:0000:0010 dst=2001:0db8:0030:0000:0000:0000:0000:0010 sport=50000 dport=443 src=2001:0db8:0030:0000:0000:0000:0000:0010 dst=2001:0db8:0010:0000:0000:0000:0000:0010 sport=443 dport=50000 mark=0 zone=0 use=2
ipv4     2 udp      17 29 src=192.0.2.1 dst=192.0.2.2 sport=1 dport=443 src=192.0.2.2 dst=192.0.2.1 sport=443 dport=1 mark=0 zone=0 use=2
";
        let server: SocketAddr = "[2001:db8:10::10]:443".parse().unwrap();
        let conns = parse_tracked_conns(text, server);
        assert_eq!(conns.len(), 2);
        assert_eq!(conns[0].client_port, 40000);
        assert_eq!(count_states(&conns), ["SYN_SENT 1", "TIME_WAIT 1"]);
    }

    #[test]
    fn ipv6_frames_carry_a_partial_checksum_behind_a_vnet_header() {
        let link = FloodLink {
            ifindex: 2,
            own_mac: [2, 0, 0, 0, 0, 1],
            next_hop_mac: [2, 0, 0, 0, 0, 2],
        };
        let (s, d): (Ipv6Addr, Ipv6Addr) = (
            "2001:db8:f000::1".parse().unwrap(),
            "2001:db8:10::10".parse().unwrap(),
        );
        let f = syn_frame_v6(&link, s, d, 40_000, 443, 7);
        assert_eq!(f.len(), VNET_HDR_LEN + 14 + 40 + 20);
        assert_eq!(f[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(
            u16::from_le_bytes([f[6], f[7]]),
            54,
            "csum_start: the TCP header"
        );
        assert_eq!(
            u16::from_le_bytes([f[8], f[9]]),
            16,
            "csum_offset: its checksum"
        );
        let eth = &f[VNET_HDR_LEN..];
        assert_eq!(&eth[..6], &link.next_hop_mac);
        assert_eq!(&eth[6..12], &link.own_mac);
        assert_eq!(&eth[12..14], &[0x86, 0xdd]);
        // Completing the checksum as the device would (sum over the segment with the
        // partial value in place) gives the full checksum `syn_packet` computes.
        let tcp = &eth[14 + 40..];
        let completed = fold(sum16(tcp, 0));
        let full = syn_packet(IpAddr::V6(s), IpAddr::V6(d), 40_000, 443, 7);
        assert_eq!(completed.to_be_bytes(), [full[56], full[57]]);
        assert_eq!(&tcp[..16], &full[40..56]);
    }

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("e6:16:67:8e:84:53"),
            Some([0xe6, 0x16, 0x67, 0x8e, 0x84, 0x53])
        );
        assert_eq!(parse_mac("e6:16:67"), None);
        assert_eq!(parse_mac("zz:16:67:8e:84:53"), None);
    }

    #[test]
    fn cpu_times_read_proc_stat() {
        let (soft, total) = cpu_times();
        assert!(total >= soft);
    }
}
