//! HTTP cases through Rampart's userspace components: `rampart egress` on the range's
//! egress-proxy host (with the lab's DNS, dnsmasq on the resolver host, answering the cases'
//! names) and `rampart waf` in front of a web application on the public web server. This
//! module writes their configuration from `lab/components/`, runs the origin server, the
//! client's request and reads the component's decision event for the request.
//!
//! A request counts as allowed only when the origin served it *and* its answer (status 200 and
//! the origin's marker header) reached the client; an attack counts as blocked only when the
//! origin never saw it, whatever the client was told.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use crate::netns::in_namespace;
use crate::scenario::{HttpRequest, Via};
use crate::topology::Host;
use crate::traffic::Endpoint;
use crate::LabError;

/// The range's egress proxy host (a name of `lab/topology.toml`).
pub const EGRESS_HOST: &str = "egress-proxy";
/// The egress proxy's port: the baseline's `http-alt`, which `clients-to-proxy` opens.
pub const EGRESS_PORT: u16 = 8080;
/// The host the lab's DNS runs on, for the egress proxy's lookups.
pub const RESOLVER_HOST: &str = "resolver";
/// The port of the web application behind the WAF, on the WAF's own host.
pub const APP_PORT: u16 = 8081;

/// The egress proxy's policy for the range (sources, allowlists, the BITS rule).
pub const EGRESS_CONFIG: &str = include_str!("../../../lab/components/egress.toml");
/// The WAF's settings for the range.
pub const WAF_CONFIG: &str = include_str!("../../../lab/components/waf.toml");
/// The WAF's rules for the range.
pub const WAF_RULES: &str = include_str!("../../../lab/components/waf-rules.conf");

/// The header the lab's origin marks its answers with (a refusal never carries it).
pub const ORIGIN_HEADER: &str = "X-Rampart-Lab-Origin";

/// How long the client waits for the whole answer.
const ANSWER_WAIT_MS: u64 = 3_000;
/// How long the lab waits for a component's event about a request. Why: the egress proxy
/// writes an allowed request's event after relaying the answer, through a writer thread.
pub const EVENT_WAIT_MS: u64 = 2_000;
/// Largest answer (head and body) the client reads.
const ANSWER_MAX_BYTES: usize = 64 * 1024;
/// Largest request head the origin reads.
const REQUEST_HEAD_MAX_BYTES: usize = 16 * 1024;
/// Largest events file the lab reads (a run writes a few dozen events).
const EVENTS_MAX_BYTES: u64 = 4 << 20;

fn io_err(what: &str) -> impl Fn(std::io::Error) -> LabError + '_ {
    move |source| LabError::Spawn {
        command: what.to_string(),
        source,
    }
}

fn config_err(message: String) -> LabError {
    LabError::Topology { message }
}

fn socket_addr_string(addr: IpAddr, port: u16) -> String {
    SocketAddr::new(addr, port).to_string()
}

fn both(host: &Host) -> Vec<IpAddr> {
    [host.v4, host.v6].into_iter().flatten().collect()
}

/// `rampart egress`'s configuration: [`EGRESS_CONFIG`] plus the run's listeners (the proxy
/// host's addresses on [`EGRESS_PORT`]), resolver (the resolver host's port 53) and event log.
/// `open`: every source in `open` mode (the policy off; address safety stays on).
pub fn egress_config(
    proxy: &Host,
    resolver: &Host,
    events: &Path,
    open: bool,
) -> Result<String, LabError> {
    let mut table: toml::Table = EGRESS_CONFIG
        .parse()
        .map_err(|e| config_err(format!("lab/components/egress.toml: {e}")))?;
    let listen: Vec<toml::Value> = both(proxy)
        .into_iter()
        .map(|a| toml::Value::String(socket_addr_string(a, EGRESS_PORT)))
        .collect();
    table.insert("listen".into(), toml::Value::Array(listen));
    let servers: Vec<toml::Value> = both(resolver)
        .into_iter()
        .map(|a| toml::Value::String(socket_addr_string(a, 53)))
        .collect();
    let mut resolver_table = toml::Table::new();
    resolver_table.insert("servers".into(), toml::Value::Array(servers));
    resolver_table.insert("timeout_ms".into(), toml::Value::Integer(1_000));
    table.insert("resolver".into(), toml::Value::Table(resolver_table));
    let mut log = toml::Table::new();
    log.insert(
        "path".into(),
        toml::Value::String(events.display().to_string()),
    );
    table.insert("log".into(), toml::Value::Table(log));
    if open {
        if let Some(toml::Value::Array(sources)) = table.get_mut("sources") {
            for source in sources.iter_mut() {
                if let toml::Value::Table(s) = source {
                    s.insert("mode".into(), toml::Value::String("open".into()));
                }
            }
        }
    }
    toml::to_string(&table).map_err(|e| config_err(format!("egress configuration: {e}")))
}

/// The proxy host's addresses as the preferred source of its namespace's default routes, for
/// as long as this lives. Why: a flat segment's hosts share one namespace, and an unbound
/// socket there (the proxy's upstream connections) would leave from the segment's first
/// address (the public web server's, which the baseline keeps off the internet); a real proxy
/// host leaves from its own address. Restored (no preferred source) when dropped.
pub struct RouteSource {
    ns: String,
    routes: Vec<(bool, String)>,
}

impl RouteSource {
    /// Prefer `host`'s addresses on the default routes (via `gateways`) of its namespace.
    pub fn set(host: &Host, gateways: &[ipnet::IpNet]) -> Result<Self, LabError> {
        let mut guard = RouteSource {
            ns: host.ns.clone(),
            routes: Vec::new(),
        };
        for net in gateways {
            let v6 = net.addr().is_ipv6();
            let Some(src) = host.addr(v6) else { continue };
            let via = net.addr().to_string();
            let family = if v6 { "-6" } else { "-4" };
            crate::netns::run_in(
                &host.ns,
                "ip",
                &[
                    family,
                    "route",
                    "replace",
                    "default",
                    "via",
                    &via,
                    "src",
                    &src.to_string(),
                ],
            )?;
            guard.routes.push((v6, via));
        }
        Ok(guard)
    }
}

impl Drop for RouteSource {
    fn drop(&mut self) {
        for (v6, via) in &self.routes {
            let family = if *v6 { "-6" } else { "-4" };
            let _ = crate::netns::run_in(
                &self.ns,
                "ip",
                &[family, "route", "replace", "default", "via", via],
            );
        }
    }
}

/// dnsmasq as the lab's DNS server on the resolver host: authoritative answers (A and AAAA)
/// for each `(name, host)`, nothing else (no upstream, no hosts file, no DHCP).
pub fn dns_config(resolver: &Host, names: &[(String, Host)], dir: &Path) -> String {
    let mut text = format!(
        "port=53\nbind-interfaces\nno-resolv\nno-hosts\nuser=root\nlocal-ttl=60\npid-file={}\n",
        dir.join("dns.pid").display()
    );
    for addr in both(resolver) {
        text.push_str(&format!("listen-address={addr}\n"));
    }
    for (name, host) in names {
        let addrs: Vec<String> = both(host).iter().map(ToString::to_string).collect();
        text.push_str(&format!("host-record={name},{}\n", addrs.join(",")));
    }
    text
}

/// `rampart waf`'s configuration: [`WAF_CONFIG`] plus the listener (every address of the
/// WAF's host on `port`), the rules file and one route to `upstream`. `detection_only`: the
/// WAF logs but blocks nothing and the SSRF check is off.
pub fn waf_config(
    port: u16,
    rules: &Path,
    upstream: SocketAddr,
    detection_only: bool,
) -> Result<String, LabError> {
    let mut table: toml::Table = WAF_CONFIG
        .parse()
        .map_err(|e| config_err(format!("lab/components/waf.toml: {e}")))?;
    // Every address of the host's namespace, both families (IPv4 arrives mapped): the WAF
    // runs only while its scenario plays, so it takes the port from no other case.
    table.insert("listen".into(), toml::Value::String(format!("[::]:{port}")));
    table.insert(
        "rules".into(),
        toml::Value::Array(vec![toml::Value::String(rules.display().to_string())]),
    );
    let mut route = toml::Table::new();
    route.insert("name".into(), toml::Value::String("app".into()));
    route.insert(
        "upstreams".into(),
        toml::Value::Array(vec![toml::Value::String(upstream.to_string())]),
    );
    table.insert(
        "routes".into(),
        toml::Value::Array(vec![toml::Value::Table(route)]),
    );
    if detection_only {
        table.insert("mode".into(), toml::Value::String("DetectionOnly".into()));
        table.insert("ssrf_protection".into(), toml::Value::Boolean(false));
    }
    toml::to_string(&table).map_err(|e| config_err(format!("waf configuration: {e}")))
}

/// The request's bytes: absolute-form to the egress proxy (`http://host[:port]/path`),
/// origin-form to the WAF; `Host`, `Content-Length` (with a body, or for a method that
/// carries one) and `Connection: close` added.
pub fn request_bytes(request: &HttpRequest, via: Via, port: u16) -> Vec<u8> {
    let authority = if port == 80 {
        request.host.clone()
    } else {
        format!("{}:{port}", request.host)
    };
    let target = match via {
        Via::Egress => format!("http://{authority}{}", request.path),
        Via::Waf => request.path.clone(),
    };
    let mut text = format!(
        "{} {target} HTTP/1.1\r\nHost: {authority}\r\n",
        request.method
    );
    for header in &request.headers {
        text.push_str(header);
        text.push_str("\r\n");
    }
    if !request.body.is_empty() || !matches!(request.method.as_str(), "GET" | "HEAD") {
        text.push_str(&format!("Content-Length: {}\r\n", request.body.len()));
    }
    text.push_str("Connection: close\r\n\r\n");
    text.push_str(&request.body);
    text.into_bytes()
}

/// What the client got.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Answer {
    /// The client's local port (the egress proxy's event names it).
    pub local_port: u16,
    /// The status code, when an answer head arrived.
    pub status: Option<u16>,
    /// The answer carried the origin's marker header.
    pub from_origin: bool,
    /// `X-Rampart-Reason` of a refusal by the egress proxy.
    pub reason: Option<String>,
    /// Why no answer arrived (connect failed, timed out, ...).
    pub failure: Option<String>,
}

/// Send `request` from `client` to `server` and read the answer (head, and the body its
/// `Content-Length` announces), waiting `connect_wait_ms` for the handshake.
pub fn ask(
    client: &Endpoint,
    server: SocketAddr,
    request: Vec<u8>,
    connect_wait_ms: u64,
) -> Result<Answer, LabError> {
    let client_addr = SocketAddr::new(client.addr, 0);
    join(in_namespace(&client.ns, move || {
        let socket = crate::traffic::tcp_client_socket(client_addr)?;
        if let Err(e) =
            socket.connect_timeout(&server.into(), Duration::from_millis(connect_wait_ms))
        {
            return Ok(Answer {
                failure: Some(crate::traffic::connect_detail(&e)),
                ..Answer::default()
            });
        }
        let local_port = socket
            .local_addr()
            .ok()
            .and_then(|a| a.as_socket())
            .map_or(0, |a| a.port());
        let mut stream: std::net::TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(ANSWER_WAIT_MS)))
            .map_err(io_err("read timeout"))?;
        if stream.write_all(&request).is_err() {
            return Ok(Answer {
                local_port,
                failure: Some("connection reset while sending the request".into()),
                ..Answer::default()
            });
        }
        let bytes = read_answer(&mut stream);
        let mut answer = parse_answer(&bytes);
        answer.local_port = local_port;
        Ok(answer)
    }))
}

/// Read an HTTP answer: the head, then as much body as `Content-Length` says (or until the
/// server closes), bounded by [`ANSWER_MAX_BYTES`] and the stream's read timeout.
fn read_answer(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_millis(ANSWER_WAIT_MS);
    while bytes.len() < ANSWER_MAX_BYTES && Instant::now() < deadline {
        if let Some(end) = head_end(&bytes) {
            let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
            let length = head.lines().find_map(|l| {
                l.strip_prefix("content-length:")
                    .and_then(|v| v.trim().parse::<usize>().ok())
            });
            if length.is_some_and(|n| bytes.len() >= end + n) {
                break;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    bytes
}

/// Offset just past the head's blank line.
fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

/// Status, origin marker and refusal reason of an answer.
pub fn parse_answer(bytes: &[u8]) -> Answer {
    let Some(end) = head_end(bytes) else {
        return Answer {
            failure: Some(if bytes.is_empty() {
                "no answer (connection closed or timed out)".into()
            } else {
                "an incomplete answer".into()
            }),
            ..Answer::default()
        };
    };
    let head = String::from_utf8_lossy(&bytes[..end]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.get(2..5))
        .and_then(|code| code.parse().ok());
    let mut answer = Answer {
        status,
        ..Answer::default()
    };
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case(ORIGIN_HEADER) {
            answer.from_origin = true;
        } else if name.eq_ignore_ascii_case("X-Rampart-Reason") {
            answer.reason = Some(value.trim().to_string());
        }
    }
    if status.is_none() {
        answer.failure = Some("an answer that is not HTTP/1.x".into());
    }
    answer
}

/// The lab's origin: listens on `addrs` in namespace `ns` until `stop`, answers every request
/// `200` with the marker header, and returns the request lines it served. Returns once it
/// listens.
pub fn spawn_origin(
    ns: &str,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<Vec<String>, LabError>>, LabError> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let handle = in_namespace(ns, move || {
        let mut listeners = Vec::new();
        for addr in &addrs {
            let socket = socket2::Socket::new(
                socket2::Domain::for_address(*addr),
                socket2::Type::STREAM,
                Some(socket2::Protocol::TCP),
            )
            .map_err(io_err("origin socket"))?;
            socket
                .set_reuse_address(true)
                .map_err(io_err("SO_REUSEADDR"))?;
            if addr.is_ipv6() {
                socket.set_only_v6(true).map_err(io_err("IPV6_V6ONLY"))?;
            }
            socket
                .bind(&(*addr).into())
                .map_err(io_err("origin bind"))?;
            socket.listen(16).map_err(io_err("origin listen"))?;
            socket
                .set_nonblocking(true)
                .map_err(io_err("nonblocking"))?;
            listeners.push(std::net::TcpListener::from(socket));
        }
        let _ = ready_tx.send(());
        let served = Arc::new(Mutex::new(Vec::new()));
        while !stop.load(Ordering::Relaxed) {
            let mut idle = true;
            for listener in &listeners {
                if let Ok((conn, _)) = listener.accept() {
                    idle = false;
                    if let Some(line) = serve_one(conn) {
                        if let Ok(mut s) = served.lock() {
                            s.push(line);
                        }
                    }
                }
            }
            if idle {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let served = served.lock().map(|s| s.clone()).unwrap_or_default();
        Ok(served)
    });
    match ready_rx.recv_timeout(Duration::from_millis(ANSWER_WAIT_MS)) {
        Ok(()) => Ok(handle),
        Err(_) => Err(match join(handle) {
            Err(e) => e,
            Ok(_) => LabError::Traffic {
                message: "the origin did not start listening".into(),
            },
        }),
    }
}

/// Read one request (head and `Content-Length` body) and answer it; its request line.
fn serve_one(conn: std::net::TcpStream) -> Option<String> {
    let mut conn = conn;
    conn.set_nonblocking(false).ok()?;
    conn.set_read_timeout(Some(Duration::from_millis(ANSWER_WAIT_MS)))
        .ok()?;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = head_end(&bytes) {
            break end;
        }
        if bytes.len() > REQUEST_HEAD_MAX_BYTES {
            return None;
        }
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&bytes[..end]).into_owned();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0)
        .min(ANSWER_MAX_BYTES);
    while bytes.len() < end + length {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => bytes.extend_from_slice(&buf[..n]),
        }
    }
    let line = head.lines().next().unwrap_or("").to_string();
    let head_only = line.starts_with("HEAD ");
    let body = b"rampart-lab origin\n";
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{ORIGIN_HEADER}: 1\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        answer.extend_from_slice(body);
    }
    let _ = conn.write_all(&answer);
    Some(line)
}

/// A component's decision event about one request, as the scoreboard shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// `allow`, `block`, `alert` (egress) or the WAF's `decision`.
    pub verdict: String,
    /// The reason code (egress) or the WAF's rule ids / SSRF target.
    pub reason: String,
    /// The event's ATT&CK techniques.
    pub techniques: Vec<String>,
}

/// Size of an events file now (0 when it does not exist yet).
pub fn events_offset(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn events_since(path: &Path, offset: u64) -> Vec<serde_json::Value> {
    use std::io::Seek;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    if file.seek(std::io::SeekFrom::Start(offset)).is_err() {
        return Vec::new();
    }
    let mut text = String::new();
    let _ = file.take(EVENTS_MAX_BYTES).read_to_string(&mut text);
    // Only whole lines: the writer may be in the middle of one.
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The event `via` wrote about the request after `offset` in `path`: the egress proxy's by the
/// client's port, the WAF's by method and target. Waits up to [`EVENT_WAIT_MS`].
pub fn wait_decision(
    path: &Path,
    offset: u64,
    via: Via,
    request: &HttpRequest,
    local_port: u16,
) -> Option<Decision> {
    let end = Instant::now() + Duration::from_millis(EVENT_WAIT_MS);
    loop {
        let found = events_since(path, offset).into_iter().find(|e| match via {
            Via::Egress => {
                e["component"] == "egress" && e["src_port"].as_u64() == Some(u64::from(local_port))
            }
            Via::Waf => {
                e["event"] == "waf"
                    && e["method"] == request.method.as_str()
                    && e["uri"] == request.path.as_str()
            }
        });
        if let Some(e) = found {
            return Some(decision_of(via, &e));
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn decision_of(via: Via, e: &serde_json::Value) -> Decision {
    let techniques = e["techniques"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let text = |v: &serde_json::Value| v.as_str().unwrap_or("").to_string();
    match via {
        Via::Egress => Decision {
            verdict: text(&e["verdict"]),
            reason: text(&e["reason"]),
            techniques,
        },
        Via::Waf => {
            let rules: Vec<String> = e["rule_ids"]
                .as_array()
                .map(|a| a.iter().map(ToString::to_string).collect())
                .unwrap_or_default();
            let reason = match e["ssrf_target"].as_str() {
                Some(target) => format!("metadata SSRF target: {target}"),
                None if rules.is_empty() => "no rule matched".into(),
                None => format!("rules {}", rules.join(",")),
            };
            Decision {
                verdict: text(&e["decision"]),
                reason,
                techniques,
            }
        }
    }
}

fn join<T>(handle: std::thread::JoinHandle<Result<T, LabError>>) -> Result<T, LabError> {
    handle.join().map_err(|_| LabError::Traffic {
        message: "an HTTP thread panicked".into(),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Topology, DEFAULT_TOPOLOGY};

    fn host(name: &str) -> Host {
        Topology::parse(DEFAULT_TOPOLOGY)
            .unwrap()
            .host(name, "")
            .unwrap()
    }

    #[test]
    fn egress_configuration_loads_and_keeps_the_bits_rule() {
        let text = egress_config(
            &host(EGRESS_HOST),
            &host(RESOLVER_HOST),
            Path::new("/tmp/x/egress.jsonl"),
            false,
        )
        .unwrap();
        let cfg = rampart_egress::Config::from_toml(&text).unwrap();
        assert_eq!(
            cfg.listen,
            [
                "203.0.113.20:8080".parse::<SocketAddr>().unwrap(),
                "[2001:db8:10::20]:8080".parse().unwrap()
            ]
        );
        assert_eq!(cfg.resolver.servers[0], "203.0.113.53:53".parse().unwrap());
        assert!(cfg.sources.iter().all(|s| {
            s.mode == rampart_egress::config::Mode::Enforce
                && s.user_agents
                    .iter()
                    .any(|u| u.pattern == "Microsoft BITS/*" && u.techniques == ["T1197"])
        }));
        let open = egress_config(
            &host(EGRESS_HOST),
            &host(RESOLVER_HOST),
            Path::new("/tmp/x/egress.jsonl"),
            true,
        )
        .unwrap();
        let cfg = rampart_egress::Config::from_toml(&open).unwrap();
        assert!(cfg
            .sources
            .iter()
            .all(|s| s.mode == rampart_egress::config::Mode::Open));
    }

    #[test]
    fn waf_configuration_and_rules_load() {
        let dir = std::env::temp_dir().join(format!("rampart-lab-waf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = dir.join("waf-rules.conf");
        std::fs::write(&rules, WAF_RULES).unwrap();
        for detection_only in [false, true] {
            let text = waf_config(
                80,
                &rules,
                "203.0.113.10:8081".parse().unwrap(),
                detection_only,
            )
            .unwrap();
            let cfg = rampart_waf::proxy::Config::from_toml_named("waf.toml", &text).unwrap();
            assert_eq!(cfg.ssrf_protection, !detection_only);
            assert_eq!(cfg.routes.len(), 1);
            let rs = cfg.load_rules().unwrap();
            assert!(rs.warnings.is_empty(), "{:?}", rs.warnings);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dns_configuration_answers_each_name_with_both_addresses() {
        let text = dns_config(
            &host(RESOLVER_HOST),
            &[("files.example.net".into(), host("public-web"))],
            Path::new("/tmp/x"),
        );
        assert!(text.contains("listen-address=203.0.113.53\n"), "{text}");
        assert!(
            text.contains("host-record=files.example.net,198.51.100.20,2001:db8:ff::20\n"),
            "{text}"
        );
    }

    #[test]
    fn requests_are_absolute_form_to_the_proxy_and_origin_form_to_the_waf() {
        let request = HttpRequest {
            method: "BITS_POST".into(),
            host: "files.example.net".into(),
            path: "/up".into(),
            headers: vec!["User-Agent: Microsoft BITS/7.8".into()],
            body: String::new(),
        };
        let proxy = String::from_utf8(request_bytes(&request, Via::Egress, 80)).unwrap();
        assert!(
            proxy.starts_with("BITS_POST http://files.example.net/up HTTP/1.1\r\nHost: files.example.net\r\nUser-Agent: Microsoft BITS/7.8\r\nContent-Length: 0\r\n"),
            "{proxy}"
        );
        let waf = String::from_utf8(request_bytes(&request, Via::Waf, 8080)).unwrap();
        assert!(
            waf.starts_with("BITS_POST /up HTTP/1.1\r\nHost: files.example.net:8080\r\n"),
            "{waf}"
        );
        assert!(waf.ends_with("Connection: close\r\n\r\n"));
    }

    #[test]
    fn answers_are_parsed_for_status_origin_and_reason() {
        let a = parse_answer(
            b"HTTP/1.1 403 Forbidden\r\nX-Rampart-Reason: user_agent_not_allowed\r\n\r\nno",
        );
        assert_eq!(a.status, Some(403));
        assert_eq!(a.reason.as_deref(), Some("user_agent_not_allowed"));
        assert!(!a.from_origin);
        let a = parse_answer(b"HTTP/1.1 200 OK\r\nx-rampart-lab-origin: 1\r\n\r\n");
        assert_eq!(a.status, Some(200));
        assert!(a.from_origin);
        assert!(parse_answer(b"").failure.is_some());
        assert!(parse_answer(b"HTTP/1.1 200").failure.is_some());
        assert!(parse_answer(b"SSH-2.0-x\r\n\r\n").status.is_none());
    }

    #[test]
    fn decisions_name_reason_and_techniques() {
        let e: serde_json::Value = serde_json::from_str(
            r#"{"component":"egress","verdict":"block","reason":"user_agent_not_allowed","techniques":["T1197"],"src_port":4000}"#,
        )
        .unwrap();
        let d = decision_of(Via::Egress, &e);
        assert_eq!(d.reason, "user_agent_not_allowed");
        assert_eq!(d.techniques, ["T1197"]);
        let e: serde_json::Value = serde_json::from_str(
            r#"{"event":"waf","decision":"block","rule_ids":[942100],"ssrf_target":null,"techniques":["T1190"]}"#,
        )
        .unwrap();
        assert_eq!(decision_of(Via::Waf, &e).reason, "rules 942100");
    }
}
