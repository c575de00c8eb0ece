//! Playing one case with real sockets: a server thread inside the destination namespace bound to
//! the destination address, a client thread inside the source namespace bound to the source
//! address. An exchange counts as allowed only when the request reached the server *and* the
//! reply reached the client, so a policy that lets one direction through but not the other is
//! seen as blocked.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::flood::read_exactly;
use crate::netns::{in_namespace, run_in};
use crate::payload::Payload;
use crate::scenario::{Expectation, Traffic};
use crate::LabError;

/// How long a first attempt waits for a TCP handshake, a UDP reply or an echo reply. Why: the
/// range is veth pairs on one machine with microsecond round trips, and a TCP handshake
/// completes in the kernel whatever the scheduler does; every dropped flow waits this long
/// once, so it sets the lab's run time (about 60 blocked flows).
pub const FIRST_WAIT_MS: u64 = 500;

/// How long a retry waits. A flow expected to pass that did not is played once more with this
/// patience, so a loaded machine cannot make an allowed flow look blocked.
pub const RETRY_WAIT_MS: u64 = 2_000;

/// How long a client waits for the reply once a TCP connection stands, on a first attempt:
/// only allowed and payload-filtered flows get here. Allowed replies arrive in milliseconds
/// (also through the protocol classifier); a payload-filtered flow waits this long once, so it
/// sets the cost of every "protocol, not port" case. A retry waits [`RETRY_WAIT_MS`].
const REPLY_AFTER_CONNECT_MS: u64 = 700;

/// How long a server waits for its one client (longer than any client wait).
const SERVER_WAIT_MS: u64 = RETRY_WAIT_MS + RETRY_WAIT_MS + 500;

/// How often a waiting server looks at its stop flag.
const SERVER_POLL_MS: u64 = 10;

/// What happened to one exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Allowed (completed) or blocked.
    pub result: Expectation,
    /// How it went (`reply received`, `connect timed out`, `connection refused`, ...).
    pub detail: String,
}

/// One endpoint of an exchange.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// Full namespace name.
    pub ns: String,
    /// Address to bind.
    pub addr: IpAddr,
}

/// What one exchange says: the traffic, the payloads, the ICMP echo size.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    /// Protocol and port.
    pub traffic: Traffic,
    /// Request and reply.
    pub payload: Payload,
    /// ICMP echo payload bytes (`None`: ping's default).
    pub icmp_bytes: Option<u16>,
    /// The client's UDP source port (0: ephemeral).
    pub client_port: u16,
}

/// Play `exchange` from `client` to `server`, waiting `wait_ms` for the handshake, datagram
/// reply or echo reply, and observe the result.
pub fn play(
    exchange: Exchange,
    client: &Endpoint,
    server: &Endpoint,
    wait_ms: u64,
) -> Result<Observation, LabError> {
    match exchange.traffic {
        Traffic::Tcp(port) => play_tcp(port, exchange.payload, client, server, wait_ms),
        Traffic::Udp(port) => play_udp(
            port,
            exchange.client_port,
            exchange.payload,
            client,
            server,
            wait_ms,
        ),
        Traffic::IcmpEcho => play_icmp(client, server, exchange.icmp_bytes, wait_ms),
    }
}

/// Send each knock (a SYN to `tcp/PORT`, a datagram to `udp/PORT`) from `client` to `server`
/// without waiting for answers: a port-knocking sequence.
pub fn knock(knocks: &[Traffic], client: &Endpoint, server: &Endpoint) -> Result<(), LabError> {
    let knocks = knocks.to_vec();
    let (client_addr, server_addr) = (client.addr, server.addr);
    join(in_namespace(&client.ns, move || {
        for k in knocks {
            match k {
                Traffic::Tcp(port) => {
                    let socket = bound_socket(SocketAddr::new(client_addr, 0), true, false)?;
                    socket
                        .set_nonblocking(true)
                        .map_err(io_err("nonblocking"))?;
                    // The SYN leaves with the non-blocking connect; nobody waits for an answer.
                    let _ = socket.connect(&SocketAddr::new(server_addr, port).into());
                    std::thread::sleep(Duration::from_millis(20));
                }
                Traffic::Udp(port) => {
                    let socket = bound_socket(SocketAddr::new(client_addr, 0), false, false)?;
                    let _ = socket.send_to(b"knock", &SocketAddr::new(server_addr, port).into());
                    std::thread::sleep(Duration::from_millis(20));
                }
                Traffic::IcmpEcho => {}
            }
        }
        Ok(())
    }))
}

fn domain(addr: IpAddr) -> Domain {
    if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    }
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::Spawn {
        command: what.to_string(),
        source,
    }
}

/// One exchange: `serve` runs on a thread inside the server's namespace (it reports that it
/// listens through `ready`, and returns once served, or once `stop` is set or its own deadline
/// passes); `ask` runs inside the client's namespace and observes. As soon as the client has its
/// answer the server is told to stop, so a flow the firewall dropped costs only the client's wait.
fn exchange<S, C>(
    server_ns: &str,
    client_ns: &str,
    serve: S,
    ask: C,
) -> Result<Observation, LabError>
where
    S: FnOnce(mpsc::Sender<()>, Arc<AtomicBool>) -> Result<bool, LabError> + Send + 'static,
    C: FnOnce() -> Result<Observation, LabError> + Send + 'static,
{
    let (ready_tx, ready_rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let server_stop = Arc::clone(&stop);
    let server_thread = in_namespace(server_ns, move || serve(ready_tx, server_stop));
    let server_thread = wait_ready(ready_rx, server_thread)?;
    let observation = join(in_namespace(client_ns, ask));
    stop.store(true, Ordering::Relaxed);
    let _ = join(server_thread)?;
    observation
}

/// A socket bound to `addr` (address reuse on for servers, so consecutive cases can reuse a
/// port). A TCP client socket bound to port 0 gets its port from `connect`, as a real client's
/// does (see [`tcp_client_socket`]).
fn bound_socket(addr: SocketAddr, tcp: bool, server: bool) -> Result<Socket, LabError> {
    if tcp && !server {
        return tcp_client_socket(addr);
    }
    let (ty, protocol, what) = if tcp {
        (Type::STREAM, Protocol::TCP, "tcp socket")
    } else {
        (Type::DGRAM, Protocol::UDP, "udp socket")
    };
    let socket = Socket::new(domain(addr.ip()), ty, Some(protocol)).map_err(io_err(what))?;
    if server {
        socket
            .set_reuse_address(true)
            .map_err(io_err("SO_REUSEADDR"))?;
    }
    socket.bind(&addr.into()).map_err(io_err("bind"))?;
    Ok(socket)
}

/// A TCP client socket bound to `addr`'s address; with port 0 the port is left to `connect`
/// (`IP_BIND_ADDRESS_NO_PORT`).
///
/// Why: `bind` to port 0 draws a random free port without knowing the destination, so two
/// connections of one run to the same server can get the same 4-tuple. The gateway still holds
/// the first one in conntrack (TIME_WAIT, two minutes); a SYN-proxied SYN is untracked, so the
/// proxy's cookie SYN-ACK runs into that old entry, gets the old connection's sequence
/// adjustment, and the client's ACK then fails the cookie check: the connection hangs with a
/// zero window. `connect` picks ports per destination in sequence (as every real client's
/// stack does), so a 4-tuple is not reused within thousands of connections.
pub(crate) fn tcp_client_socket(addr: SocketAddr) -> Result<Socket, LabError> {
    let socket = Socket::new(domain(addr.ip()), Type::STREAM, Some(Protocol::TCP))
        .map_err(io_err("tcp socket"))?;
    if addr.port() == 0 {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket, a pointer to a live c_int and its size. SOL_IP options apply
        // to IPv6 TCP sockets too (the kernel passes them to the IPv4 handler).
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                libc::SOL_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                std::ptr::addr_of!(on).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io_err("IP_BIND_ADDRESS_NO_PORT")(
                std::io::Error::last_os_error(),
            ));
        }
    }
    socket.bind(&addr.into()).map_err(io_err("bind"))?;
    Ok(socket)
}

/// Whether the server should give up waiting.
fn give_up(stop: &AtomicBool, deadline: std::time::Instant) -> bool {
    stop.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline
}

fn server_deadline() -> std::time::Instant {
    std::time::Instant::now() + Duration::from_millis(SERVER_WAIT_MS)
}

fn play_tcp(
    port: u16,
    payload: Payload,
    client: &Endpoint,
    server: &Endpoint,
    wait_ms: u64,
) -> Result<Observation, LabError> {
    let server_addr = SocketAddr::new(server.addr, port);
    let client_addr = SocketAddr::new(client.addr, 0);
    let (request, reply) = (payload.request(true), payload.reply(true));
    let (server_request, server_reply) = (request.clone(), reply.clone());
    let serve = tcp_serve(server_addr, server_request, server_reply);
    let ask = move || {
        let socket = bound_socket(client_addr, true, false)?;
        if let Err(e) = socket.connect_timeout(&server_addr.into(), Duration::from_millis(wait_ms))
        {
            return Ok(blocked(connect_detail(&e)));
        }
        let mut stream: std::net::TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(
                REPLY_AFTER_CONNECT_MS.max(wait_ms),
            )))
            .map_err(io_err("read timeout"))?;
        if stream.write_all(&request).is_err() {
            return Ok(blocked("connection reset after connect".into()));
        }
        Ok(match read_exactly(&mut stream, reply.len()) {
            Some(got) if got == reply => allowed("connected, request and reply exchanged"),
            Some(got) if !got.is_empty() => blocked("connected but the reply was cut".into()),
            _ => blocked("connected but no reply".into()),
        })
    };
    exchange(&server.ns, &client.ns, serve, ask)
}

/// The TCP server side of an exchange: accept one connection, read the request, answer.
fn tcp_serve(
    server_addr: SocketAddr,
    server_request: Vec<u8>,
    server_reply: Vec<u8>,
) -> impl FnOnce(mpsc::Sender<()>, Arc<AtomicBool>) -> Result<bool, LabError> + Send + 'static {
    move |ready: mpsc::Sender<()>, stop: Arc<AtomicBool>| {
        let socket = bound_socket(server_addr, true, true)?;
        socket.listen(4).map_err(io_err("tcp listen"))?;
        socket
            .set_nonblocking(true)
            .map_err(io_err("nonblocking"))?;
        let _ = ready.send(());
        let deadline = server_deadline();
        loop {
            match socket.accept() {
                Ok((conn, _)) => {
                    conn.set_nonblocking(false).map_err(io_err("blocking"))?;
                    conn.set_read_timeout(Some(Duration::from_millis(SERVER_WAIT_MS)))
                        .map_err(io_err("read timeout"))?;
                    let mut stream: std::net::TcpStream = conn.into();
                    let got = read_exactly(&mut stream, server_request.len());
                    let served = got.as_deref() == Some(&server_request[..]);
                    if served {
                        let _ = stream.write_all(&server_reply);
                    }
                    return Ok(served);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if give_up(&stop, deadline) {
                        return Ok(false);
                    }
                    std::thread::sleep(Duration::from_millis(SERVER_POLL_MS));
                }
                Err(e) => return Err(io_err("accept")(e)),
            }
        }
    }
}

/// The client of a process flow: who runs it and which program it is.
#[derive(Clone, Debug)]
pub struct ClientCommand {
    /// Run as this uid and gid (`setpriv`); None: as the lab (root).
    pub uid: Option<u32>,
    /// The shell the client runs as (`bash`, or a copy the jail holds).
    pub program: std::path::PathBuf,
    /// How the program is named in details.
    pub label: String,
}

/// What the client process runs: connect with bash's `/dev/tcp`, send the request line, read
/// the reply line. Exit 3: connect failed; 4: no reply.
const CLIENT_SCRIPT: &str = r#"exec 3<>"/dev/tcp/$RLAB_ADDR/$RLAB_PORT" || exit 3
printf '%s\n' "$RLAB_REQUEST" >&3
IFS= read -r -t "$RLAB_WAIT_S" reply <&3 || exit 4
printf '%s\n' "$reply""#;

/// How long a client process may take to start (exec, the jail's verdict) besides its wait.
const PROCESS_START_MS: u64 = 500;

/// Play a plain TCP exchange whose client is its own process (`client` names the uid and the
/// program), so socket-owner matches (uid, cgroup) see a real process.
pub fn play_tcp_process(
    port: u16,
    command: &ClientCommand,
    client: &Endpoint,
    server: &Endpoint,
    wait_ms: u64,
) -> Result<Observation, LabError> {
    let server_addr = SocketAddr::new(server.addr, port);
    let payload = Payload::Plain;
    let (request, reply) = (payload.request(true), payload.reply(true));
    let serve = tcp_serve(server_addr, request.clone(), reply.clone());
    let command = command.clone();
    let request_line = String::from_utf8_lossy(&request).trim_end().to_string();
    let ask = move || {
        let wait_s = format!("{:.1}", wait_ms.max(REPLY_AFTER_CONNECT_MS) as f64 / 1000.0);
        let limit_s = format!("{:.1}", (wait_ms + PROCESS_START_MS) as f64 / 1000.0);
        let mut argv: Vec<String> = Vec::new();
        if let Some(uid) = command.uid {
            argv.extend([
                "setpriv".into(),
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "--".into(),
            ]);
        }
        argv.extend([
            "timeout".into(),
            limit_s,
            command.program.display().to_string(),
            "-c".into(),
            CLIENT_SCRIPT.into(),
        ]);
        // Spawned from this thread, the child starts in the client's namespace.
        let output = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .env("RLAB_ADDR", server_addr.ip().to_string())
            .env("RLAB_PORT", port.to_string())
            .env("RLAB_REQUEST", &request_line)
            .env("RLAB_WAIT_S", wait_s)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(io_err("client process"))?;
        let who = match command.uid {
            Some(uid) => format!("{} as uid {uid}", command.label),
            None => format!("{} as root", command.label),
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        Ok(match output.status.code() {
            Some(0) if output.stdout == reply => {
                allowed(&format!("{who}: connected, request and reply exchanged"))
            }
            Some(124) => blocked(format!("{who}: connect timed out")),
            Some(3) if stderr.contains("refused") => {
                blocked(format!("{who}: connection refused (reset)"))
            }
            Some(4) => blocked(format!("{who}: connected but no reply")),
            Some(126) => blocked(format!("{who}: exec refused ({})", stderr.trim())),
            code => blocked(format!(
                "{who}: client exited {code:?}: {}",
                stderr.lines().next().unwrap_or("")
            )),
        })
    };
    exchange(&server.ns, &client.ns, serve, ask)
}

fn allowed(detail: &str) -> Observation {
    Observation {
        result: Expectation::Allowed,
        detail: detail.into(),
    }
}

fn blocked(detail: String) -> Observation {
    Observation {
        result: Expectation::Blocked,
        detail,
    }
}

pub(crate) fn connect_detail(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => "connect timed out".into(),
        std::io::ErrorKind::ConnectionRefused => "connection refused (reset)".into(),
        _ => format!("connect failed: {e}"),
    }
}

fn play_udp(
    port: u16,
    client_port: u16,
    payload: Payload,
    client: &Endpoint,
    server: &Endpoint,
    wait_ms: u64,
) -> Result<Observation, LabError> {
    let server_addr = SocketAddr::new(server.addr, port);
    let client_addr = SocketAddr::new(client.addr, client_port);
    let (request, reply) = (payload.request(false), payload.reply(false));
    let (server_request, server_reply) = (request.clone(), reply.clone());
    let serve = move |ready: mpsc::Sender<()>, stop: Arc<AtomicBool>| {
        let socket = bound_socket(server_addr, false, true)?;
        // Short reads so the stop flag is seen promptly.
        socket
            .set_read_timeout(Some(Duration::from_millis(SERVER_POLL_MS)))
            .map_err(io_err("read timeout"))?;
        let socket: std::net::UdpSocket = socket.into();
        let _ = ready.send(());
        let deadline = server_deadline();
        let mut buf = [0u8; crate::payload::PAYLOAD_MAX_BYTES];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) if buf[..n] == server_request[..] => {
                    let _ = socket.send_to(&server_reply, from);
                    return Ok(true);
                }
                Ok(_) => return Ok(false),
                Err(_) if give_up(&stop, deadline) => return Ok(false),
                Err(_) => {}
            }
        }
    };
    let ask = move || {
        let socket = bound_socket(client_addr, false, false)?;
        socket
            .set_read_timeout(Some(Duration::from_millis(wait_ms)))
            .map_err(io_err("read timeout"))?;
        let socket: std::net::UdpSocket = socket.into();
        socket.connect(server_addr).map_err(io_err("udp connect"))?;
        if let Err(e) = socket.send(&request) {
            return Ok(blocked(format!("send failed: {e}")));
        }
        let mut buf = [0u8; crate::payload::PAYLOAD_MAX_BYTES];
        Ok(match socket.recv(&mut buf) {
            Ok(n) if buf[..n] == reply[..] => allowed("datagram and reply exchanged"),
            Ok(_) => blocked("unexpected reply".into()),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                blocked("ICMP unreachable (rejected)".into())
            }
            Err(_) => blocked("no reply within the timeout".into()),
        })
    };
    exchange(&server.ns, &client.ns, serve, ask)
}

fn play_icmp(
    client: &Endpoint,
    server: &Endpoint,
    icmp_bytes: Option<u16>,
    wait_ms: u64,
) -> Result<Observation, LabError> {
    // Why ping: an ICMP echo needs a raw or ping socket; iputils' ping is the real client a
    // user would run, and the lab's dependency check installs it.
    let wait_s = format!("{:.1}", wait_ms as f64 / 1000.0);
    let family = if server.addr.is_ipv6() { "-6" } else { "-4" };
    let size = icmp_bytes.map(|b| b.to_string());
    let client_addr = client.addr.to_string();
    let server_addr = server.addr.to_string();
    let mut args = vec![
        family,
        "-n",
        "-q",
        "-c",
        "1",
        "-W",
        &wait_s,
        "-I",
        &client_addr,
    ];
    if let Some(size) = &size {
        args.extend_from_slice(&["-s", size]);
    }
    args.push(&server_addr);
    let result = run_in(&client.ns, "ping", &args);
    Ok(match result {
        Ok(_) => Observation {
            result: Expectation::Allowed,
            detail: "echo reply received".into(),
        },
        Err(LabError::CommandFailed { .. }) => Observation {
            result: Expectation::Blocked,
            detail: "no echo reply".into(),
        },
        Err(other) => return Err(other),
    })
}

/// Wait until the server listens; when it cannot (address in use, no such address), its own
/// error is the answer.
fn wait_ready(
    ready: mpsc::Receiver<()>,
    server: std::thread::JoinHandle<Result<bool, LabError>>,
) -> Result<std::thread::JoinHandle<Result<bool, LabError>>, LabError> {
    match ready.recv_timeout(Duration::from_millis(SERVER_WAIT_MS)) {
        Ok(()) => Ok(server),
        Err(_) => Err(match join(server) {
            Err(e) => e,
            Ok(_) => LabError::Traffic {
                message: "the server did not start listening".into(),
            },
        }),
    }
}

fn join<T>(handle: std::thread::JoinHandle<Result<T, LabError>>) -> Result<T, LabError> {
    handle.join().map_err(|_| LabError::Traffic {
        message: "a traffic thread panicked".into(),
    })?
}
