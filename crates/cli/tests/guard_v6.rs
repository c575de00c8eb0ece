//! `rampart guard` IPv6 first-hop security end to end, on a real Linux bridge in network
//! namespaces this test creates (and always removes): `sw` holds `br0` with ports `p_srv`
//! (trusted: dnsmasq as the DHCPv6 server, 2001:db8:1::1, also the victim whose neighbour cache
//! is attacked), `p_rog` (untrusted: the attacker, 2001:db8:1::66) and `p_cli` (untrusted: the
//! DHCPv6 client). Addresses are 2001:db8::/32 and link-local.
//!
//! Method, with real frames: the client gets a DHCPv6 lease from dnsmasq (a Rust-crafted
//! SOLICIT/REQUEST exchange over a UDP socket); the guard learns the binding (event, kernel
//! set, bindings file); the attacker's spoofed NA and NS claiming the client's address are
//! dropped, so the victim's neighbour entry keeps the client's MAC, with `nd_inspection_drop`
//! events; legitimate ND (victim ↔ client, victim ↔ attacker's own address) keeps working;
//! a malformed DHCPv6 message is a counted anomaly; an RA from the router MAC listed for
//! `p_rog` reaches the client while the attacker's own RA does not, nor an RA fragmented so
//! its ICMPv6 header is in the second fragment; a SIGHUP reload keeps the
//! IPv6 binding in the kernel; with `ipv6_source_guard`,
//! a datagram from the client's address sent by the attacker is dropped; a restart restores the
//! IPv6 binding and keeps dropping the spoof. Finally, with the guard stopped, the same spoofs
//! poison the victim (so the checks above can fail).
//!
//! Needs root, `ip`, `nft` and `dnsmasq`; skips with a printed reason otherwise.

mod support;

use std::io::{BufRead, BufReader};
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use rampart_guard::craft::{
    dhcpv6, dhcpv6_ia_na, duid_ll, fragmented_router_advertisement, neighbor_advertisement,
    neighbor_solicitation, router_advertisement, udp6_frame,
};
use rampart_guard::decode::{self, dhcpv6_type, Mac};
use support::{bind_to_device, in_ns, ns_sh, sh, Procs, Scratch};

const SRV_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x01]);
const BR_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x02]);
const CLI_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x0c]);
const ROG_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x66]);
/// A router MAC the configuration trusts on `p_rog` (RA guard by MAC); frames with it are
/// sent from the attacker's namespace to stand for a router on that port.
const RTR_MAC: Mac = Mac([2, 0, 0, 0, 0, 0x77]);
const SRV6: &str = "2001:db8:1::1";
const ROG6: &str = "2001:db8:1::66";
/// The attacker's link-local address (EUI-64 of `ROG_MAC`).
const ROG_LL: &str = "fe80::ff:fe00:66";
const ALL_NODES_MAC: Mac = Mac([0x33, 0x33, 0, 0, 0, 1]);

/// The namespaces; deleted on drop (also when an assertion fails).
struct Topology {
    prefix: String,
}

impl Topology {
    fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    fn build(tag: &str) -> Self {
        let topo = Topology {
            prefix: format!("rg6{}{tag}", std::process::id()),
        };
        for n in ["sw", "srv", "rog", "cli"] {
            sh("ip", &["netns", "add", &topo.ns(n)]);
            // The namespace's own sysctls (never the host's): no DAD delay, so link-local
            // and static addresses are usable at once; no autoconfiguration from test RAs.
            ns_sh(
                &topo.ns(n),
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.accept_ra=0",
                    "net.ipv6.conf.default.accept_ra=0",
                ],
            );
            ns_sh(&topo.ns(n), &["ip", "link", "set", "lo", "up"]);
        }
        let sw = topo.ns("sw");
        ns_sh(
            &sw,
            &[
                "ip",
                "link",
                "add",
                "br0",
                "address",
                &BR_MAC.to_string(),
                "type",
                "bridge",
            ],
        );
        for (n, mac) in [("srv", SRV_MAC), ("rog", ROG_MAC), ("cli", CLI_MAC)] {
            let leaf = topo.ns(n);
            let port = format!("p_{n}");
            sh(
                "ip",
                &[
                    "link",
                    "add",
                    "eth0",
                    "netns",
                    &leaf,
                    "address",
                    &mac.to_string(),
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &port,
                    "netns",
                    &sw,
                ],
            );
            ns_sh(&sw, &["ip", "link", "set", &port, "master", "br0", "up"]);
            ns_sh(&leaf, &["ip", "link", "set", "eth0", "up"]);
        }
        ns_sh(&sw, &["ip", "link", "set", "br0", "up"]);
        for (n, addr) in [("srv", SRV6), ("rog", ROG6)] {
            ns_sh(
                &topo.ns(n),
                &[
                    "ip",
                    "-6",
                    "addr",
                    "add",
                    &format!("{addr}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ],
            );
        }
        topo
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in ["sw", "srv", "rog", "cli"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

fn eth0_index() -> u32 {
    // SAFETY: the name is a valid C string.
    unsafe { libc::if_nametoindex(c"eth0".as_ptr()) }
}

/// Send raw frames out of `eth0` of the current namespace.
fn send_frames(frames: &[Vec<u8>], gap_ms: u64) {
    // SAFETY: plain socket/bind/send calls with checked results and valid buffers.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        assert!(fd >= 0);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = eth0_index() as i32;
        let rc = libc::bind(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(rc, 0);
        for f in frames {
            let n = libc::send(fd, f.as_ptr().cast(), f.len(), 0);
            assert_eq!(n, f.len() as isize);
            std::thread::sleep(Duration::from_millis(gap_ms));
        }
        libc::close(fd);
    }
}

/// Send `msg` to All_DHCP_Relay_Agents_and_Servers until a reply of `want` type for `xid`
/// arrives (three tries, 1 s each).
fn dhcpv6_round(s: &UdpSocket, msg: &[u8], xid: u32, want: u8) -> decode::Dhcpv6 {
    let to = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, eth0_index());
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        s.send_to(msg, to).unwrap();
        let end = Instant::now() + Duration::from_secs(1);
        while Instant::now() < end {
            let Ok((n, _)) = s.recv_from(&mut buf) else {
                continue;
            };
            if let Ok(m) = decode::dhcpv6(&buf[..n]) {
                if m.kind == want && m.xid == xid {
                    return m;
                }
            }
        }
    }
    panic!("no DHCPv6 message type {want} for transaction {xid:#x}");
}

/// A DHCPv6 client in the current namespace: SOLICIT, ADVERTISE, REQUEST, REPLY. Returns
/// the leased address and its valid lifetime.
fn dhcpv6_lease() -> (Ipv6Addr, u32) {
    let s = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 546, 0, 0)).unwrap();
    bind_to_device(&s, "eth0");
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let client_id = (1u16, duid_ll(CLI_MAC));
    let elapsed = (8u16, vec![0, 0]);
    let solicit = dhcpv6(
        dhcpv6_type::SOLICIT,
        0x61_6263,
        &[
            client_id.clone(),
            elapsed.clone(),
            (3, dhcpv6_ia_na(1, 0, 0, &[])),
        ],
    );
    let advertise = dhcpv6_round(&s, &solicit, 0x61_6263, dhcpv6_type::ADVERTISE);
    let offered = advertise
        .addresses
        .first()
        .copied()
        .expect("no address offered");
    let request = dhcpv6(
        dhcpv6_type::REQUEST,
        0x64_6566,
        &[
            client_id,
            (2, advertise.server_id.clone().expect("no server id")),
            elapsed,
            (3, dhcpv6_ia_na(1, 0, 0, &[(offered.addr, 0, 0)])),
        ],
    );
    let reply = dhcpv6_round(&s, &request, 0x64_6566, dhcpv6_type::REPLY);
    let leased = reply.addresses.first().copied().expect("no address leased");
    (leased.addr, leased.valid_s)
}

fn dnsmasq6(ns: &str, dir: &Path) -> Child {
    let conf = dir.join("srv.conf");
    std::fs::write(
        &conf,
        format!(
            "port=0\ninterface=eth0\nbind-interfaces\nuser=root\nno-resolv\n\
             dhcp-leasefile={}\npid-file={}\ndhcp-range=2001:db8:1::100,2001:db8:1::1ff,64,1h\n",
            dir.join("srv.leases").display(),
            dir.join("srv.pid").display()
        ),
    )
    .unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns, "dnsmasq", "--no-daemon", "--log-dhcp"])
        .arg(format!("--conf-file={}", conf.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

struct Guard {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Guard {
    fn start(ns: &str, config: &Path) -> (Guard, serde_json::Value) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_rampart"))
            .args(["guard", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let started: serde_json::Value = serde_json::from_str(&line).expect(&line);
        assert_eq!(started["event"], "started", "{line}");
        (Guard { child, stdout }, started)
    }

    /// SIGTERM, then the `stopped` line.
    fn stop(mut self) -> serde_json::Value {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "guard exit {status}");
        serde_json::from_str(&line).expect(&line)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect()
}

/// Wait up to `ms` for an event of `kind` satisfying `pred`.
fn wait_event(
    path: &Path,
    kind: &str,
    ms: u64,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let end = Instant::now() + Duration::from_millis(ms);
    loop {
        if let Some(e) = events(path)
            .into_iter()
            .find(|e| e["detail"]["kind"] == kind && pred(e))
        {
            return e;
        }
        assert!(
            Instant::now() < end,
            "no {kind} event in {ms} ms; events: {:#?}",
            events(path)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Create (or refresh) `ns`'s neighbour entry for `ip` by sending it a datagram.
fn poke6(ns: &str, ip: Ipv6Addr) {
    in_ns(ns, move || {
        let s = UdpSocket::bind("[::]:0").unwrap();
        let _ = s.send_to(b"x", SocketAddrV6::new(ip, 9, 0, 0));
    });
    std::thread::sleep(Duration::from_millis(300));
}

/// `ns`'s neighbour entry for `ip` (empty when there is none).
fn neigh6(ns: &str, ip: Ipv6Addr) -> String {
    ns_sh(
        ns,
        &["ip", "-6", "neigh", "show", &ip.to_string(), "dev", "eth0"],
    )
}

/// Forget `ns`'s neighbour entry for `ip`, then resolve it afresh: poke until the entry has a
/// link-layer address (up to 3 s; a loaded machine answers ND slowly), and return it.
fn resolve6(ns: &str, ip: Ipv6Addr) -> String {
    let _ = Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ip",
            "-6",
            "neigh",
            "del",
            &ip.to_string(),
            "dev",
            "eth0",
        ])
        .stderr(Stdio::null())
        .status();
    let end = Instant::now() + Duration::from_secs(3);
    loop {
        poke6(ns, ip);
        let entry = neigh6(ns, ip);
        if entry.contains("lladdr") || Instant::now() > end {
            return entry;
        }
    }
}

/// The attacker's neighbour-cache poisoning of the victim (`SRV6`) for `lease`: an unsolicited
/// override NA to all nodes, and an NS from the spoofed source with its own MAC as SLLA.
fn spoof_frames(lease: Ipv6Addr) -> Vec<Vec<u8>> {
    let srv6: Ipv6Addr = SRV6.parse().unwrap();
    let na = neighbor_advertisement(
        ROG_MAC,
        ALL_NODES_MAC,
        ROG_LL.parse().unwrap(),
        "ff02::1".parse().unwrap(),
        lease,
        ROG_MAC,
    );
    let ns = neighbor_solicitation(ROG_MAC, SRV_MAC, lease, srv6, srv6, Some(ROG_MAC));
    vec![na.clone(), ns.clone(), na, ns]
}

fn spoof(rog: &str, lease: Ipv6Addr) {
    let frames = spoof_frames(lease);
    in_ns(rog, move || send_frames(&frames, 100));
    std::thread::sleep(Duration::from_millis(300));
}

/// Router advertisements with Ethernet source `mac` that reach `eth0` of `cli` while `rog`
/// sends three of them.
fn ras_reaching(cli: &str, rog: &str, mac: Mac) -> usize {
    let ra = router_advertisement(mac, "fe80::ff:fe00:77".parse().unwrap());
    frames_reaching(cli, rog, vec![ra.clone(), ra.clone(), ra], move |eth| {
        eth.src == mac
            && decode::ipv6(eth.payload)
                .is_some_and(|ip| matches!(ip.upper, decode::Ipv6Upper::Icmpv6 { kind: 134, .. }))
    })
}

/// Fragments of the attacker's fragmented RA (ICMPv6 header only in the second fragment)
/// that reach `eth0` of `cli` while `rog` sends them.
fn ra_fragments_reaching(cli: &str, rog: &str) -> usize {
    let [first, second] = fragmented_router_advertisement(ROG_MAC, ROG_LL.parse().unwrap(), 0x77);
    frames_reaching(cli, rog, vec![first, second], |eth| {
        eth.src == ROG_MAC && decode::ipv6_fragment_next(eth.payload) == Some(60)
    })
}

/// Frames matching `pred` that reach `eth0` of `cli` while `rog` sends `frames`.
fn frames_reaching(
    cli: &str,
    rog: &str,
    frames: Vec<Vec<u8>>,
    pred: impl Fn(&decode::Ethernet<'_>) -> bool + Send + 'static,
) -> usize {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let cli = cli.to_string();
    let counter = std::thread::spawn(move || {
        in_ns(&cli, move || {
            // SAFETY: plain socket/setsockopt/recv calls with checked results and valid buffers.
            unsafe {
                let fd = libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from((0x86ddu16).to_be()),
                );
                assert!(fd >= 0);
                let tv = libc::timeval {
                    tv_sec: 0,
                    tv_usec: 100_000,
                };
                libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    std::ptr::addr_of!(tv).cast(),
                    std::mem::size_of::<libc::timeval>() as u32,
                );
                ready_tx.send(()).unwrap();
                let mut seen = 0;
                let end = Instant::now() + Duration::from_millis(1200);
                let mut buf = [0u8; 1500];
                while Instant::now() < end {
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n <= 0 {
                        continue;
                    }
                    if decode::ethernet(&buf[..n as usize]).is_some_and(|eth| pred(&eth)) {
                        seen += 1;
                    }
                }
                libc::close(fd);
                seen
            }
        })
    });
    ready_rx.recv().unwrap();
    in_ns(rog, move || send_frames(&frames, 50));
    counter.join().unwrap()
}

/// Whether a UDP datagram from `rog` with the (spoofed) IPv6 source `src` reaches a socket on
/// the victim `srv`.
fn spoofed_datagram_reaches(srv: &str, rog: &str, src: Ipv6Addr) -> bool {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let srv = srv.to_string();
    let listener = std::thread::spawn(move || {
        in_ns(&srv, move || {
            let s = UdpSocket::bind("[::]:7777").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1000)))
                .unwrap();
            ready_tx.send(()).unwrap();
            let mut buf = [0u8; 64];
            matches!(s.recv_from(&mut buf), Ok((n, _)) if &buf[..n] == b"spoofed")
        })
    });
    ready_rx.recv().unwrap();
    let frame = udp6_frame(
        ROG_MAC,
        SRV_MAC,
        src,
        SRV6.parse().unwrap(),
        40_000,
        7777,
        b"spoofed",
    );
    in_ns(rog, move || send_frames(&[frame], 0));
    listener.join().unwrap()
}

fn skip_reason() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("needs root".into());
    }
    for tool in ["ip", "nft", "dnsmasq"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
            || Path::new("/usr/sbin").join(tool).exists();
        if !found {
            return Some(format!("needs {tool}"));
        }
    }
    None
}

#[test]
fn dhcpv6_bindings_drive_nd_inspection_and_ra_guard_by_mac() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let scratch = Scratch::new("rampart-guard-v6");
    let dir = scratch.0.clone();
    let topo = Topology::build("a");
    let mut procs = Procs::default();
    let (sw, srv, rog, cli) = (
        topo.ns("sw"),
        topo.ns("srv"),
        topo.ns("rog"),
        topo.ns("cli"),
    );
    procs.0.push(dnsmasq6(&srv, &dir));
    std::thread::sleep(Duration::from_millis(700));

    let events_file = dir.join("events.jsonl");
    let bindings_file = dir.join("bindings");
    let config = dir.join("guard.toml");
    std::fs::write(
        &config,
        format!(
            r#"
bridge = "br0"
trusted_ports = ["p_srv"]
untrusted_ports = ["p_rog", "p_cli"]
bindings_file = "{}"
events_file = "{}"
ipv6_source_guard = true

# A router on p_rog: its RAs pass there (and only there); the attacker's do not.
[[trusted_router]]
mac = "{RTR_MAC}"
port = "p_rog"
"#,
            bindings_file.display(),
            events_file.display()
        ),
    )
    .unwrap();
    let (guard, started) = Guard::start(&sw, &config);
    assert_eq!(started["bindings6"], 0, "{started}");

    // 1. The client gets its lease through the guard; the binding is learned.
    let (lease, valid_s) = in_ns(&cli, dhcpv6_lease);
    assert!(lease.segments()[..4] == [0x2001, 0xdb8, 1, 0], "{lease}");
    assert_eq!(valid_s, 3600);
    let bound = wait_event(&events_file, "dhcpv6_binding_added", 3000, |_| true);
    assert_eq!(bound["detail"]["ip"], lease.to_string(), "{bound}");
    assert_eq!(bound["detail"]["port"], "p_cli");
    assert_eq!(bound["detail"]["mac"], CLI_MAC.to_string());
    assert_eq!(bound["detail"]["duid"], "0003000102000000000c");
    let owners = ns_sh(
        &sw,
        &["nft", "list", "set", "bridge", "rampart_guard", "nd6_owner"],
    );
    assert!(
        owners.contains("\"p_cli\"") && owners.contains(&CLI_MAC.to_string()),
        "binding not in the kernel set: {owners}"
    );
    let saved = std::fs::read_to_string(&bindings_file).unwrap();
    assert!(
        saved.starts_with("# rampart-guard bindings v2")
            && saved.contains(&format!("{CLI_MAC} {lease} p_cli ")),
        "{saved}"
    );
    ns_sh(
        &cli,
        &[
            "ip",
            "-6",
            "addr",
            "add",
            &format!("{lease}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    );

    // 2. Legitimate ND works: the victim resolves the client and the attacker's own address,
    // the client resolves the victim.
    let srv6: Ipv6Addr = SRV6.parse().unwrap();
    let rog6: Ipv6Addr = ROG6.parse().unwrap();
    let entry = resolve6(&srv, lease);
    assert!(
        entry.contains(&CLI_MAC.to_string()),
        "victim → client: {entry:?}"
    );
    let entry = resolve6(&srv, rog6);
    assert!(
        entry.contains(&ROG_MAC.to_string()),
        "victim → attacker: {entry:?}"
    );
    let entry = resolve6(&cli, srv6);
    assert!(
        entry.contains(&SRV_MAC.to_string()),
        "client → victim: {entry:?}"
    );

    // 3. The spoofed NA and NS claiming the client's address are dropped.
    spoof(&rog, lease);
    let entry = neigh6(&srv, lease);
    assert!(
        entry.contains(&CLI_MAC.to_string()),
        "victim's entry for the client was poisoned through the guard: {entry:?}"
    );
    let drop_na = wait_event(&events_file, "nd_inspection_drop", 3000, |e| {
        e["detail"]["field"] == "target"
    });
    assert_eq!(drop_na["techniques"][0], "T1557");
    assert_eq!(drop_na["verdict"], "block");
    assert_eq!(drop_na["detail"]["port"], "p_rog");
    assert_eq!(drop_na["detail"]["ip"], lease.to_string());
    assert_eq!(drop_na["detail"]["bound_mac"], CLI_MAC.to_string());
    assert_eq!(drop_na["detail"]["bound_port"], "p_cli");
    wait_event(&events_file, "nd_inspection_drop", 3000, |e| {
        e["detail"]["field"] == "source" && e["detail"]["nd_type"] == "neighbor_solicitation"
    });
    // A DAD probe for the client's address from the attacker (it would make a client still
    // doing DAD give the address up) is dropped too.
    let dad = neighbor_solicitation(
        ROG_MAC,
        Mac([0x33, 0x33, 0xff, 0, 0, 0]),
        Ipv6Addr::UNSPECIFIED,
        "ff02::1:ff00:0".parse().unwrap(),
        lease,
        None,
    );
    in_ns(&rog, move || send_frames(&[dad], 0));
    wait_event(&events_file, "nd_inspection_drop", 3000, |e| {
        e["detail"]["field"] == "dad_target"
    });
    // IPv6 source guard: a datagram from the client's address sent by the attacker is dropped;
    // one from the attacker's own address arrives.
    assert!(
        !spoofed_datagram_reaches(&srv, &rog, lease),
        "spoofed source passed"
    );
    assert!(
        spoofed_datagram_reaches(&srv, &rog, rog6),
        "attacker's own source"
    );
    let sg = wait_event(&events_file, "ipv6_source_guard_drop", 3000, |_| true);
    assert_eq!(sg["detail"]["ip"], lease.to_string());
    // ND still works after the attack.
    let entry = resolve6(&srv, lease);
    assert!(
        entry.contains(&CLI_MAC.to_string()),
        "after the spoof: {entry:?}"
    );

    // 4. A malformed DHCPv6 message is a counted anomaly.
    let mut bad = dhcpv6(dhcpv6_type::SOLICIT, 0x77, &[(1, duid_ll(CLI_MAC))]);
    bad.extend_from_slice(&[0, 3, 0x7f, 0xff, 0, 0, 0, 1]);
    let frame = udp6_frame(
        CLI_MAC,
        Mac([0x33, 0x33, 0, 1, 0, 2]),
        "fe80::ff:fe00:c".parse().unwrap(),
        "ff02::1:2".parse().unwrap(),
        546,
        547,
        &bad,
    );
    in_ns(&cli, move || send_frames(&[frame], 0));
    let anomaly = wait_event(&events_file, "dhcpv6_malformed", 3000, |_| true);
    assert_eq!(anomaly["detail"]["port"], "p_cli");

    // 5. RA guard by MAC: the listed router's RAs pass on p_rog; the attacker's do not.
    assert_eq!(ras_reaching(&cli, &rog, RTR_MAC), 3, "trusted router MAC");
    assert_eq!(ras_reaching(&cli, &rog, ROG_MAC), 0, "attacker's RA");
    wait_event(&events_file, "rogue_router_advertisement", 3000, |e| {
        e["detail"]["mac"] == ROG_MAC.to_string()
    });
    // An RA whose ICMPv6 header sits in the second fragment (RFC 7113 evasion): neither
    // fragment reaches the client.
    assert_eq!(ra_fragments_reaching(&cli, &rog), 0, "fragmented RA");
    wait_event(&events_file, "fragmented_header_chain_drop", 3000, |_| true);

    let stopped = guard.stop();
    assert!(stopped["dhcpv6_malformed"].as_u64() >= Some(1), "{stopped}");
    let counted = &stopped["kernel_counters"];
    for rule in [
        "ND inspection: neighbour advertisement for an address bound elsewhere",
        "ND inspection: ND from an address bound elsewhere",
        "ND inspection: DAD probe for an address bound elsewhere",
        "IPv6 source guard: source bound elsewhere",
        "IPv6 fragment followed by an extension header on an untrusted port",
        "router advertisement on an untrusted port",
    ] {
        assert!(counted[rule].as_u64() > Some(0), "{rule}: {stopped}");
    }

    // 6. A restart restores the IPv6 binding into the kernel and keeps dropping the spoof.
    let (guard, started) = Guard::start(&sw, &config);
    assert_eq!(started["bindings6"], 1, "{started}");
    poke6(&srv, lease);
    spoof(&rog, lease);
    let entry = neigh6(&srv, lease);
    assert!(
        entry.contains(&CLI_MAC.to_string()),
        "after restart: {entry:?}"
    );
    // SIGHUP reloads in place (here, so the counters above were read before a reload resets
    // them): the new table carries the IPv6 binding, and the spoof stays dropped.
    // SAFETY: signalling our own child by pid.
    unsafe { libc::kill(guard.child.id() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(800));
    let owners = ns_sh(
        &sw,
        &["nft", "list", "set", "bridge", "rampart_guard", "nd6_owner"],
    );
    assert!(
        owners.contains(&CLI_MAC.to_string()),
        "binding lost on reload: {owners}"
    );
    spoof(&rog, lease);
    let entry = neigh6(&srv, lease);
    assert!(
        entry.contains(&CLI_MAC.to_string()),
        "after reload: {entry:?}"
    );
    assert_eq!(guard.stop()["reloads"], 1);

    // 7. Without the guard the same spoofs poison the victim (so the checks above can fail).
    assert_eq!(
        ra_fragments_reaching(&cli, &rog),
        2,
        "baseline: both fragments of the evasive RA reach the client"
    );
    assert!(
        spoofed_datagram_reaches(&srv, &rog, lease),
        "baseline: the spoofed source should arrive"
    );
    resolve6(&srv, lease);
    let frames = spoof_frames(lease);
    let na = frames[0].clone();
    in_ns(&rog, move || send_frames(&[na.clone(), na], 100));
    std::thread::sleep(Duration::from_millis(300));
    let entry = neigh6(&srv, lease);
    assert!(
        entry.contains(&ROG_MAC.to_string()),
        "baseline: the spoofed NA should poison the victim: {entry:?}"
    );
    resolve6(&srv, lease);
    let ns = frames[1].clone();
    in_ns(&rog, move || send_frames(&[ns.clone(), ns], 100));
    std::thread::sleep(Duration::from_millis(300));
    let entry = neigh6(&srv, lease);
    assert!(
        entry.contains(&ROG_MAC.to_string()),
        "baseline: the spoofed NS should poison the victim: {entry:?}"
    );
    drop(procs);
    drop(topo);
}
