//! The I/O shell around the pure [`Guard`]: it applies the emitted tables with
//! `nft -f` (one transaction each), pins the gateway's neighbour entry, reads frames from the
//! bridge ports ([`capture`]), sends canary queries, mirrors binding changes into the kernel
//! set, persists the table, writes events, and on stop deletes what it created.

pub mod capture;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rampart_events::{JsonLinesSink, Sink};

use crate::bindings::BindingTable;
use crate::canary::Query;
use crate::config::Config;
use crate::decode::NameProtocol;
use crate::engine::{Guard, Output};
use crate::{ruleset, GuardError};

/// Run `nft -f -` with `text` as one transaction.
pub fn nft_apply(action: &str, text: &str) -> Result<(), GuardError> {
    let fail = |stderr: String| GuardError::Nft {
        action: action.to_string(),
        stderr,
    };
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("cannot run nft: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A write error shows up as nft's own failure below.
        let _ = stdin.write_all(text.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(format!("cannot wait for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GuardError + '_ {
    move |source| GuardError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Load the persisted binding table; a missing file is an empty table, a malformed one an
/// error naming the line (the file is left as it is).
pub fn load_bindings(path: &Path, max: usize, now_s: u64) -> Result<BindingTable, GuardError> {
    match std::fs::read_to_string(path) {
        Ok(text) => BindingTable::from_text(&text, max, now_s).map_err(|e| match e {
            GuardError::BindingsFile { line, reason } => GuardError::BindingsFile {
                line,
                reason: format!("{}: {reason}", path.display()),
            },
            other => other,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BindingTable::new(max)),
        Err(e) => Err(io(path)(e)),
    }
}

/// Persist the table: write a temporary file, fsync, keep the current file as `<path>.prev`,
/// rename into place. A crash at any point leaves a complete file at `path` or `.prev`.
pub fn save_bindings(path: &Path, table: &BindingTable) -> Result<(), GuardError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    let tmp = path.with_extension("tmp");
    {
        let mut f = File::create(&tmp).map_err(io(&tmp))?;
        f.write_all(table.to_text().as_bytes()).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
    }
    if path.exists() {
        let prev = path.with_extension("prev");
        std::fs::copy(path, &prev).map_err(io(&prev))?;
    }
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// Nanoseconds since the Unix epoch (the shell is where the clock is read).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn random_u64s(n: usize) -> Vec<u64> {
    let mut bytes = vec![0u8; n * 8];
    let ok = File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !ok {
        // Why: unpredictable names matter only against a poisoner that whitelists canary
        // names; the clock is a weak but working fallback.
        let t = now_ns();
        return (0..n as u64)
            .map(|i| t.rotate_left(17).wrapping_mul(i + 0x9e37_79b9))
            .collect();
    }
    bytes
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
        .collect()
}

/// The canary's sender: a packet socket on the canary interface that writes complete frames
/// (Ethernet + IPv4 + UDP) from the configured source address. Why a packet socket and not a
/// UDP socket: the host's own firewall is expected to drop LLMNR/NBT-NS/mDNS egress (the
/// `legacy-name-resolution` profile does), which would silence a UDP-socket canary exactly
/// where it is deployed; frames written to a packet socket bypass the IP output path. Answers
/// are read by the port sockets before any filter, so a dropped answer is still seen.
struct CanarySocket {
    fd: std::os::fd::OwnedFd,
    ifindex: u32,
    mac: crate::decode::Mac,
    source: Ipv4Addr,
    source6: Option<Ipv6Addr>,
}

impl CanarySocket {
    fn open(
        source: Ipv4Addr,
        source6: Option<Ipv6Addr>,
        interface: &str,
    ) -> Result<Self, GuardError> {
        use std::os::fd::FromRawFd;
        let what = |w: &str| format!("canary socket {w} ({source} on {interface})");
        // The source must be a local address: bind(2) says so (the probe socket is closed).
        UdpSocket::bind(SocketAddrV4::new(source, 0)).map_err(|e| GuardError::Socket {
            what: what("source address"),
            source: e,
        })?;
        let ifindex = capture::ifindex(interface)?;
        let mac_path = format!("/sys/class/net/{interface}/address");
        let mac = std::fs::read_to_string(&mac_path)
            .ok()
            .and_then(|t| crate::decode::Mac::parse(t.trim()))
            .ok_or_else(|| GuardError::Socket {
                what: what("MAC address"),
                source: std::io::Error::other(format!("cannot read {mac_path}")),
            })?;
        // Protocol 0: the socket only sends, it never queues received frames.
        // SAFETY: plain socket(2) call; the result is checked below.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(GuardError::Socket {
                what: what("packet socket"),
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        Ok(Self {
            fd,
            ifindex,
            mac,
            source,
            source6,
        })
    }

    fn send(&self, q: &Query, sport: u16) -> Result<(), GuardError> {
        use crate::decode::Mac;
        let (dst_mac, dst, dport) = match q.protocol {
            NameProtocol::Llmnr => (
                Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfc]),
                Ipv4Addr::new(224, 0, 0, 252),
                5355,
            ),
            NameProtocol::Mdns => (
                Mac([0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb]),
                Ipv4Addr::new(224, 0, 0, 251),
                5353,
            ),
            NameProtocol::Nbns => (crate::craft::BROADCAST, Ipv4Addr::BROADCAST, 137),
        };
        let frame = crate::craft::udp4_frame(
            self.mac,
            dst_mac,
            self.source,
            dst,
            sport,
            dport,
            &q.payload,
        );
        let what = |to: String| format!("canary {} query to {to}", q.protocol.name());
        self.send_frame(&frame, dst_mac, || what(dst.to_string()))?;
        // Over IPv6 too when configured (NBT-NS has no IPv6 transport).
        let group6 = match q.protocol {
            NameProtocol::Llmnr => Some(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 3)),
            NameProtocol::Mdns => Some(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 0xfb)),
            NameProtocol::Nbns => None,
        };
        if let (Some(src6), Some(dst6)) = (self.source6, group6) {
            // 33:33 and the group's low 32 bits (RFC 2464).
            let o = dst6.octets();
            let mac6 = Mac([0x33, 0x33, o[12], o[13], o[14], o[15]]);
            let frame =
                crate::craft::udp6_frame(self.mac, mac6, src6, dst6, sport, dport, &q.payload);
            self.send_frame(&frame, mac6, || what(dst6.to_string()))?;
        }
        Ok(())
    }

    fn send_frame(
        &self,
        frame: &[u8],
        dst_mac: crate::decode::Mac,
        what: impl FnOnce() -> String,
    ) -> Result<(), GuardError> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = self.ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&dst_mac.0);
        // SAFETY: `frame` and `addr` are valid for the lengths given.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(GuardError::Socket {
                what: what(),
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(())
    }
}

/// What the guard set up, reported once it is enforcing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Started {
    /// Ports captured.
    pub ports: Vec<String>,
    /// Bindings restored from the persisted file.
    pub bindings: usize,
    /// IPv6 (DHCPv6) bindings restored from the persisted file.
    pub bindings6: usize,
    /// nft tables owned (family and name).
    pub tables: Vec<String>,
    /// SIGHUP re-reads the configuration and switches to it in place, bindings kept (the
    /// daemon signals instead of restarting components that say so).
    pub reload_in_place: bool,
}

/// Counters of a run.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Summary {
    /// Frames read from the ports.
    pub frames: u64,
    /// Events written.
    pub events: u64,
    /// Binding changes mirrored into the kernel.
    pub binding_changes: u64,
    /// Canary queries sent.
    pub canary_queries: u64,
    /// Reloads applied in place.
    pub reloads: u64,
    /// Reloads refused (bad configuration, missing port, nft refusal); the running
    /// configuration stayed.
    pub reloads_refused: u64,
    /// DHCPv6 messages that did not decode (malformed options; each is also reported as a
    /// `dhcpv6_malformed` event, de-duplicated).
    pub dhcpv6_malformed: u64,
    /// Longest `nft -f` set update (binding change → kernel), milliseconds.
    pub set_update_ms_max: u64,
    /// Packets counted by each commented rule of the guard's tables (all drops but the DAI
    /// probe exemption), read just before the tables are deleted: kernel evidence to set
    /// beside the events.
    pub kernel_counters: std::collections::BTreeMap<String, u64>,
}

/// Packets counted per rule comment in `nft -j list table FAMILY NAME` output (rules without a
/// comment or counter are skipped; equal comments add up).
pub fn counters_by_comment(json: &str) -> std::collections::BTreeMap<String, u64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return out;
    };
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    for item in items {
        let rule = &item["rule"];
        let Some(comment) = rule["comment"].as_str() else {
            continue;
        };
        let packets: u64 = rule["expr"]
            .as_array()
            .map(|exprs| {
                exprs
                    .iter()
                    .filter_map(|e| e["counter"]["packets"].as_u64())
                    .sum()
            })
            .unwrap_or(0);
        *out.entry(comment.to_string()).or_insert(0) += packets;
    }
    out
}

fn read_counters(family: &str, table: &str) -> std::collections::BTreeMap<String, u64> {
    Command::new("nft")
        .args(["-j", "list", "table", family, table])
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| counters_by_comment(&String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default()
}

/// Removes the kernel state the guard created when dropped (also on error paths), so a failed
/// start does not leave a half-configured bridge behind. A crash (SIGKILL) skips this by
/// design: the table stays and keeps enforcing (docs/guard.md, failure semantics).
struct KernelState {
    cfg: Config,
    neighbour_pinned: bool,
}

impl KernelState {
    fn unpin(&mut self) {
        if let (true, Some(g)) = (self.neighbour_pinned, &self.cfg.gateway) {
            let _ = Command::new("ip")
                .args(["neigh", "del", &g.ip.to_string(), "dev", &g.interface])
                .stderr(Stdio::null())
                .status();
        }
        self.neighbour_pinned = false;
    }
}

impl Drop for KernelState {
    fn drop(&mut self) {
        let text = ruleset::teardown(&self.cfg);
        if !text.is_empty() {
            if let Err(e) = nft_apply("teardown", &text) {
                eprintln!("rampart guard: teardown failed: {e}");
            }
        }
        self.unpin();
    }
}

/// Pin the gateway's neighbour entry (host role).
fn pin_neighbour(g: &crate::config::Gateway) -> Result<(), GuardError> {
    let status = Command::new("ip")
        .args([
            "neigh",
            "replace",
            &g.ip.to_string(),
            "lladdr",
            &g.mac.to_string(),
            "nud",
            "permanent",
            "dev",
            &g.interface,
        ])
        .status()
        .map_err(|source| GuardError::Socket {
            what: "ip neigh replace".into(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(GuardError::Nft {
            action: format!("pin neighbour {} on {}", g.ip, g.interface),
            stderr: format!("ip neigh replace exited with {status}"),
        })
    }
}

/// Reload in place (SIGHUP): `requested` is set by the signal handler, `load` re-reads and
/// validates the configuration file.
pub struct Reload<'a> {
    /// Set when a reload is asked for; the loop clears it.
    pub requested: &'a AtomicBool,
    /// Re-read the configuration.
    pub load: &'a dyn Fn() -> Result<Config, GuardError>,
}

/// The frame sources of one configuration: listed ports, unlisted bridge members, the bridge
/// device's outgoing side, and the host interface.
struct Sockets {
    sockets: Vec<capture::PortSocket>,
    bridge_ports: std::collections::BTreeSet<String>,
    host_interface: Option<String>,
}

fn open_sockets(cfg: &Config) -> Result<Sockets, GuardError> {
    // Listed ports first: a missing port fails before any kernel state changes.
    let mut sockets = Vec::new();
    for port in cfg.ports() {
        sockets.push(capture::PortSocket::open(port)?);
    }
    // Bridge members the configuration does not list are untrusted in the kernel; read them
    // too, or their clients' leases would never be learned and DAI would drop their ARP.
    let mut bridge_ports: std::collections::BTreeSet<String> = cfg.ports().cloned().collect();
    if let Some(bridge) = &cfg.bridge {
        for port in bridge_members(bridge) {
            if bridge_ports.insert(port.clone()) {
                match capture::PortSocket::open(&port) {
                    Ok(s) => sockets.push(s),
                    Err(e) => eprintln!("rampart guard: unlisted port {port}: {e}"),
                }
            }
        }
        // The host's own frames into the bridge: a DHCP server running on the bridge device
        // answers from here, never through a port's ingress.
        sockets.push(capture::PortSocket::open_outgoing(bridge)?);
    }
    // Host role: the gateway's interface is read too (gateway spoof and station events),
    // unless it is already a bridge port.
    if let Some(g) = cfg
        .gateway
        .as_ref()
        .filter(|g| !bridge_ports.contains(&g.interface))
    {
        sockets.push(capture::PortSocket::open(&g.interface)?);
    }
    Ok(Sockets {
        sockets,
        bridge_ports,
        host_interface: cfg.gateway.as_ref().map(|g| g.interface.clone()),
    })
}

fn open_events(cfg: &Config) -> Result<File, GuardError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(&cfg.events_file)
        .map_err(io(&cfg.events_file))
}

fn open_canary(cfg: &Config) -> Result<Option<CanarySocket>, GuardError> {
    cfg.canary
        .as_ref()
        .map(|c| CanarySocket::open(c.source, c.source6, &c.interface))
        .transpose()
}

/// What a reload replaces once every part of the new configuration is ready.
struct Reloaded {
    cfg: Config,
    sockets: Sockets,
    events: File,
    canary: Option<CanarySocket>,
}

/// Prepare and apply a new configuration: open its sockets, events file and canary first, then
/// replace the tables in ONE nft transaction (old tables deleted, new ones created with every
/// current binding as an element), so the kernel never has a moment without a table and no
/// binding is lost. Any failure leaves the running configuration and tables as they were.
fn reload_to(
    new: Config,
    kernel: &mut KernelState,
    bindings: &BindingTable,
    now_s: u64,
) -> Result<Reloaded, GuardError> {
    let sockets = open_sockets(&new)?;
    let events = open_events(&new)?;
    let canary = open_canary(&new)?;
    let mut text = ruleset::teardown(&kernel.cfg);
    if let Some(t) = ruleset::bridge_table(&new, bindings, now_s) {
        text.push_str(&t);
    }
    if let Some(t) = ruleset::host_table(&new) {
        text.push_str(&t);
    }
    nft_apply("reload tables", &text)?;
    if kernel.cfg.gateway != new.gateway {
        kernel.unpin();
        if let Some(g) = &new.gateway {
            pin_neighbour(g)?;
            kernel.neighbour_pinned = true;
        }
    }
    kernel.cfg = new.clone();
    Ok(Reloaded {
        cfg: new,
        sockets,
        events,
        canary,
    })
}

fn tables_of(cfg: &Config) -> Vec<String> {
    let mut tables = Vec::new();
    if cfg.bridge.is_some() {
        tables.push(format!("bridge {}", cfg.table));
    }
    if cfg.gateway.is_some() {
        tables.push(format!("arp {}_host", cfg.table));
    }
    tables
}

/// Why: a port added to the bridge is untrusted in the kernel at once; reading it within five
/// seconds means its first DHCP exchange is almost always learned.
const PORT_RESCAN_S: u64 = 5;
/// Why: no real bridge has more ports; the cap bounds the directory walk.
const MAX_BRIDGE_PORTS: usize = 4096;

/// The ports of `bridge` (from sysfs `brif`), sorted.
pub fn bridge_members(bridge: &str) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{bridge}/brif"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .take(MAX_BRIDGE_PORTS)
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Why: 200 ms bounds how late expiry, canary rounds and the stop flag are noticed while
/// keeping an idle guard asleep.
const POLL_MS: i32 = 200;

/// Run the guard until `stop` is set. `started` is called once the tables are applied and
/// the sockets open (the CLI prints it, tests wait for it). With `reload`, a set flag makes
/// the guard re-read its configuration and switch to it in place ([`Reload`]).
pub fn run(
    cfg: Config,
    stop: &AtomicBool,
    reload: Option<Reload<'_>>,
    started: impl FnOnce(&Started),
) -> Result<Summary, GuardError> {
    let now = now_ns();
    let table = load_bindings(&cfg.bindings_file, cfg.max_bindings, now / 1_000_000_000)?;
    let mut events_out = open_events(&cfg)?;
    let mut socks = open_sockets(&cfg)?;
    let mut canary_socket = open_canary(&cfg)?;
    // The bridge table is applied before the teardown guard exists: if nft refuses it, the
    // transaction left the kernel as it was (a crashed run's table keeps enforcing) and
    // nothing must be deleted.
    if let Some(text) = ruleset::bridge_table(&cfg, &table, now / 1_000_000_000) {
        nft_apply("apply bridge table", &text)?;
    }
    let mut kernel = KernelState {
        cfg: cfg.clone(),
        neighbour_pinned: false,
    };
    if let (Some(text), Some(g)) = (ruleset::host_table(&cfg), &cfg.gateway) {
        nft_apply("apply host table", &text)?;
        pin_neighbour(g)?;
        kernel.neighbour_pinned = true;
    }
    let restored = table.len();
    let restored6 = table.v6().len();
    let mut cfg = cfg;
    let mut guard = Guard::new(cfg.clone(), table);
    started(&Started {
        ports: socks
            .sockets
            .iter()
            .filter(|s| !s.outgoing)
            .map(|s| s.port.clone())
            .collect(),
        bindings: restored,
        bindings6: restored6,
        tables: tables_of(&cfg),
        reload_in_place: reload.is_some(),
    });

    let mut summary = Summary::default();
    let mut buf = vec![0u8; capture::MAX_FRAME_LEN];
    let mut last_tick_s = 0;
    let mut next_canary_s = 0;
    let mut next_rescan_s = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(r) = reload
            .as_ref()
            .filter(|r| r.requested.swap(false, Ordering::Relaxed))
        {
            let outcome = (r.load)().and_then(|new| {
                reload_to(new, &mut kernel, guard.bindings(), now_ns() / 1_000_000_000)
            });
            match outcome {
                Ok(done) => {
                    if done.cfg.bindings_file != cfg.bindings_file {
                        if let Err(e) = save_bindings(&done.cfg.bindings_file, guard.bindings()) {
                            eprintln!("rampart guard: cannot save bindings: {e}");
                        }
                    }
                    cfg = done.cfg;
                    guard.reconfigure(cfg.clone());
                    socks = done.sockets;
                    events_out = done.events;
                    canary_socket = done.canary;
                    next_canary_s = 0;
                    summary.reloads += 1;
                    eprintln!(
                        "rampart guard: configuration reloaded in place ({} bindings kept)",
                        guard.bindings().len()
                    );
                }
                Err(e) => {
                    summary.reloads_refused += 1;
                    eprintln!(
                        "rampart guard: reload refused, the running configuration stays: {e}"
                    );
                }
            }
        }
        let fds: Vec<i32> = socks.sockets.iter().map(|s| s.raw_fd()).collect();
        let ready = capture::poll_readable(&fds, POLL_MS)?;
        let mut batch = Output::default();
        let mut gone = Vec::new();
        // Why collect and sort: sockets are drained one after another, so a server's reply read
        // on one port could be handled before the client's request that entered another port
        // first (a DHCPv6 REPLY would then find no pending request). The kernel's receive time
        // restores the order the frames had on the wire; frames without one keep socket order.
        let mut frames: Vec<(u64, usize, Vec<u8>)> = Vec::new();
        for i in ready {
            let socket = &socks.sockets[i];
            // Drain what is queued, bounded so one busy port cannot starve the loop.
            for _ in 0..256 {
                let n = match socket.recv(&mut buf) {
                    Ok(Some(n)) => n,
                    Ok(None) => break,
                    Err(e) => {
                        // A port removed from the bridge (or deleted) must not stop the guard.
                        eprintln!("rampart guard: {e}; no longer reading {}", socket.port);
                        gone.push(i);
                        break;
                    }
                };
                frames.push((socket.last_rx_ns(), i, buf[..n].to_vec()));
            }
        }
        frames.sort_by_key(|f| f.0);
        for (_, i, frame) in &frames {
            let socket = &socks.sockets[*i];
            summary.frames += 1;
            let out = if !socket.outgoing
                && socks.host_interface.as_deref() == Some(socket.port.as_str())
                && !socks.bridge_ports.contains(&socket.port)
            {
                guard.on_host_frame(&socket.port, frame, now_ns())
            } else {
                guard.on_frame(&socket.port, frame, now_ns())
            };
            batch.changes.extend(out.changes);
            batch.events.extend(out.events);
        }
        for i in gone.into_iter().rev() {
            let s = socks.sockets.remove(i);
            socks.bridge_ports.remove(&s.port);
        }
        let now = now_ns();
        let now_s = now / 1_000_000_000;
        if let (Some(bridge), true) = (&cfg.bridge, now_s >= next_rescan_s) {
            next_rescan_s = now_s + PORT_RESCAN_S;
            for port in bridge_members(bridge) {
                if !socks.bridge_ports.contains(&port) {
                    if let Ok(s) = capture::PortSocket::open(&port) {
                        eprintln!("rampart guard: new bridge port {port}, reading it");
                        socks.bridge_ports.insert(port);
                        socks.sockets.push(s);
                    }
                }
            }
        }
        if now_s != last_tick_s {
            last_tick_s = now_s;
            let out = guard.tick(now);
            batch.changes.extend(out.changes);
            batch.events.extend(out.events);
        }
        if let (Some(sock), Some(c)) = (&canary_socket, &cfg.canary) {
            if now_s >= next_canary_s {
                next_canary_s = now_s + c.interval_s;
                let random = random_u64s(c.protocols.len() + 1);
                let queries = guard.canary_round(&random[..c.protocols.len()], now);
                // An ephemeral source port per round, as a resolver would use.
                let sport = 49_152 + (random[c.protocols.len()] % 16_384) as u16;
                for q in &queries {
                    match sock.send(q, sport) {
                        Ok(()) => summary.canary_queries += 1,
                        Err(e) => eprintln!("rampart guard: {e}"),
                    }
                }
            }
        }
        if !batch.changes.is_empty() {
            if let Some(text) = ruleset::binding_updates(&cfg, &batch.changes, now_s) {
                // A refused update leaves the kernel set behind the table; say so and keep
                // running (the next full apply on restart re-asserts every binding).
                let started = std::time::Instant::now();
                if let Err(e) = nft_apply("update dai_bindings", &text) {
                    eprintln!("rampart guard: {e}");
                }
                let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                summary.set_update_ms_max = summary.set_update_ms_max.max(ms);
            }
            summary.binding_changes += batch.changes.len() as u64;
            // Why not fatal: stopping would delete the table (fail open) over a full disk;
            // the kernel set is current, and the next successful save catches up.
            if let Err(e) = save_bindings(&cfg.bindings_file, guard.bindings()) {
                eprintln!("rampart guard: cannot save bindings: {e}");
            }
        }
        if !batch.events.is_empty() {
            // One write per batch, so readers never see half a line.
            let mut sink = JsonLinesSink::new(Vec::new());
            for e in &batch.events {
                sink.emit(e)?;
            }
            // Why not fatal: as for the bindings, enforcement matters more than the log.
            match sink.into_inner().map(|bytes| events_out.write_all(&bytes)) {
                Ok(Ok(())) => summary.events += batch.events.len() as u64,
                Ok(Err(e)) => eprintln!("rampart guard: cannot write events: {e}"),
                Err(e) => eprintln!("rampart guard: cannot write events: {e}"),
            }
        }
    }
    save_bindings(&cfg.bindings_file, guard.bindings())?;
    summary.dhcpv6_malformed = guard.malformed_dhcpv6();
    if cfg.bridge.is_some() {
        summary
            .kernel_counters
            .extend(read_counters("bridge", &cfg.table));
    }
    if cfg.gateway.is_some() {
        summary
            .kernel_counters
            .extend(read_counters("arp", &format!("{}_host", cfg.table)));
    }
    drop(kernel);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    #[test]
    fn counters_are_summed_per_comment() {
        // Shape of `nft -j list table bridge rampart_guard` (nft 1.0.6), trimmed.
        let json = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},
          {"table":{"family":"bridge","name":"rampart_guard","handle":1}},
          {"rule":{"family":"bridge","table":"rampart_guard","chain":"prerouting","handle":5,
            "comment":"DHCP server message on an untrusted port",
            "expr":[{"match":{}},{"counter":{"packets":3,"bytes":900}},{"drop":null}]}},
          {"rule":{"family":"bridge","table":"rampart_guard","chain":"dai","handle":9,
            "expr":[{"counter":{"packets":7,"bytes":420}},{"drop":null}]}}]}"#;
        let c = super::counters_by_comment(json);
        assert_eq!(c.len(), 1);
        assert_eq!(c["DHCP server message on an untrusted port"], 3);
        assert!(super::counters_by_comment("not json").is_empty());
    }
}
