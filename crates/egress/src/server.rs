//! The tokio shell: listeners, the per-connection HTTP/1 loop (absolute-form requests with
//! keep-alive, CONNECT tunnels), resolution, the dial to checked addresses, body relays, the
//! ClientHello peek, metrics and one decision event per request. Every read has a deadline and
//! every buffer a cap from [`Limits`] or the parsers' constants.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rampart_events::{Event, Flow, Verdict};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::config::{Config, Limits};
use crate::eventlog::EventLog;
use crate::http::{self, BodyLen, HeadError, Host, RequestHead, Target};
use crate::metrics::Metrics;
use crate::policy::{Action, Decision, Policy, Reason, RequestFacts, SourceMatch};
use crate::resolve::Resolver;
use crate::tls::{self, Peek};
use crate::EgressError;

/// Bytes read from a socket per call.
const READ_CHUNK: usize = 16 * 1024;
/// Cap on a metrics-endpoint request head.
const MAX_METRICS_REQUEST: usize = 8 * 1024;

/// Reads every list file of `cfg` and compiles the policy (blocking I/O).
pub fn load_policy(cfg: &Config) -> Result<Policy, EgressError> {
    let mut texts = HashMap::new();
    for l in &cfg.lists {
        if let Some(path) = &l.path {
            let data = std::fs::read(path).map_err(|source| EgressError::ListRead {
                name: l.name.clone(),
                path: path.display().to_string(),
                source,
            })?;
            texts.insert(l.name.clone(), data);
        }
    }
    Policy::build(cfg, &texts)
}

struct Shared {
    policy: RwLock<Arc<Policy>>,
    limits: Limits,
    resolver: Resolver,
    metrics: Metrics,
    log: Option<EventLog>,
    conns: Arc<Semaphore>,
    /// Every address this proxy listens on (transparent-mode loop guard).
    own_addrs: Vec<SocketAddr>,
}

impl Shared {
    fn policy(&self) -> Arc<Policy> {
        match self.policy.read() {
            Ok(p) => p.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }
}

/// Entry point.
#[derive(Debug)]
pub struct Server;

/// A running proxy.
pub struct ServerHandle {
    shared: Arc<Shared>,
    /// Bound proxy addresses (in `listen` order).
    pub proxy_addrs: Vec<SocketAddr>,
    /// Bound transparent-mode addresses (in `transparent_listen` order).
    pub transparent_addrs: Vec<SocketAddr>,
    /// Bound metrics address.
    pub metrics_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("proxy_addrs", &self.proxy_addrs)
            .field("metrics_addr", &self.metrics_addr)
            .finish()
    }
}

impl Server {
    /// Loads the policy, binds the listeners and spawns the accept loops (needs a tokio
    /// runtime).
    pub async fn start(cfg: Config) -> Result<ServerHandle, EgressError> {
        let policy = load_policy(&cfg)?;
        let log = match &cfg.log {
            Some(l) => {
                Some(
                    EventLog::start(&l.path, l.queue).map_err(|source| EgressError::Log {
                        path: l.path.display().to_string(),
                        source,
                    })?,
                )
            }
            None => None,
        };
        let mut listeners = Vec::new();
        for (addrs, transparent) in [(&cfg.listen, false), (&cfg.transparent_listen, true)] {
            for addr in addrs {
                let l = TcpListener::bind(addr)
                    .await
                    .map_err(|source| EgressError::Bind {
                        addr: *addr,
                        source,
                    })?;
                let bound = l.local_addr().map_err(|source| EgressError::Bind {
                    addr: *addr,
                    source,
                })?;
                listeners.push((l, bound, transparent));
            }
        }
        let shared = Arc::new(Shared {
            policy: RwLock::new(Arc::new(policy)),
            limits: cfg.limits.clone(),
            resolver: Resolver::new(cfg.resolver.clone()),
            metrics: Metrics::default(),
            log,
            conns: Arc::new(Semaphore::new(cfg.limits.max_connections.max(1))),
            own_addrs: listeners.iter().map(|(_, a, _)| *a).collect(),
        });
        let mut tasks = Vec::new();
        let mut proxy_addrs = Vec::new();
        let mut transparent_addrs = Vec::new();
        for (l, bound, transparent) in listeners {
            if transparent {
                transparent_addrs.push(bound);
            } else {
                proxy_addrs.push(bound);
            }
            tasks.push(tokio::spawn(accept_loop(shared.clone(), l, transparent)));
        }
        let mut metrics_addr = None;
        if let Some(addr) = cfg.metrics_listen {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| EgressError::Bind { addr, source })?;
            metrics_addr = Some(
                l.local_addr()
                    .map_err(|source| EgressError::Bind { addr, source })?,
            );
            tasks.push(tokio::spawn(metrics_loop(shared.clone(), l)));
        }
        Ok(ServerHandle {
            shared,
            proxy_addrs,
            transparent_addrs,
            metrics_addr,
            tasks,
        })
    }
}

impl ServerHandle {
    /// Counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// Re-reads lists and re-compiles the policy from `cfg`, then swaps it in; on error the
    /// running policy stays. Listeners, limits, resolver and log settings are not changed.
    pub async fn reload(&self, cfg: &Config) -> Result<(), EgressError> {
        let cfg = cfg.clone();
        let policy = tokio::task::spawn_blocking(move || load_policy(&cfg))
            .await
            .map_err(|e| EgressError::Config(format!("reload task failed: {e}")))??;
        match self.shared.policy.write() {
            Ok(mut p) => *p = Arc::new(policy),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(policy),
        }
        Ok(())
    }

    /// Stops accepting (open connections finish on their own deadlines).
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept_loop(sh: Arc<Shared>, listener: TcpListener, transparent: bool) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            // Accept errors (EMFILE...) are transient; back off briefly instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = sh.conns.clone().try_acquire_owned() else {
            Metrics::inc(&sh.metrics.connections_refused);
            drop(stream);
            continue;
        };
        Metrics::inc(&sh.metrics.connections);
        let _ = stream.set_nodelay(true);
        let sh = sh.clone();
        tokio::spawn(async move {
            if transparent {
                handle_transparent(&sh, stream, peer).await;
            } else {
                handle_client(&sh, Peer::new(stream), peer, None).await;
            }
            drop(permit);
        });
    }
}

async fn metrics_loop(sh: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 1024];
            let read = async {
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < MAX_METRICS_REQUEST {
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                true
            };
            if !matches!(
                tokio::time::timeout(Duration::from_secs(5), read).await,
                Ok(true)
            ) {
                return;
            }
            let resp = if buf.starts_with(b"GET /metrics ") {
                let body = sh.metrics.render();
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".into()
            };
            let _ = stream.write_all(resp.as_bytes()).await;
        });
    }
}

/// A socket with a read buffer; `buf[start..]` is received but not consumed.
struct Peer {
    s: TcpStream,
    buf: Vec<u8>,
    start: usize,
}

#[derive(Debug)]
enum ReadErr {
    Eof,
    Timeout,
    Io,
    TooLong,
    Framing,
}

impl Peer {
    fn new(s: TcpStream) -> Self {
        Self {
            s,
            buf: Vec::with_capacity(READ_CHUNK),
            start: 0,
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start = (self.start + n).min(self.buf.len());
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
    }

    /// Reads more bytes before `deadline`; `Err(Eof)` on a closed socket.
    async fn fill(&mut self, deadline: tokio::time::Instant) -> Result<usize, ReadErr> {
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let r = tokio::time::timeout_at(deadline, self.s.read(&mut self.buf[old..])).await;
        match r {
            Err(_) => {
                self.buf.truncate(old);
                Err(ReadErr::Timeout)
            }
            Ok(Err(_)) => {
                self.buf.truncate(old);
                Err(ReadErr::Io)
            }
            Ok(Ok(0)) => {
                self.buf.truncate(old);
                Err(ReadErr::Eof)
            }
            Ok(Ok(n)) => {
                self.buf.truncate(old + n);
                Ok(n)
            }
        }
    }

    /// Reads one CRLF-terminated line (returned with its CRLF), at most `max` bytes.
    async fn line(&mut self, max: usize, wait: Duration) -> Result<Vec<u8>, ReadErr> {
        loop {
            if let Some(p) = self.pending().windows(2).position(|w| w == b"\r\n") {
                let line = self.pending()[..p + 2].to_vec();
                self.consume(p + 2);
                return Ok(line);
            }
            if self.pending().len() > max {
                return Err(ReadErr::TooLong);
            }
            self.fill(tokio::time::Instant::now() + wait).await?;
        }
    }

    /// Copies exactly `n` bytes to `dst`.
    async fn copy_exact(
        &mut self,
        dst: &mut TcpStream,
        mut n: u64,
        wait: Duration,
    ) -> Result<u64, ReadErr> {
        let total = n;
        while n > 0 {
            if self.pending().is_empty() {
                self.fill(tokio::time::Instant::now() + wait).await?;
            }
            let take = self
                .pending()
                .len()
                .min(usize::try_from(n).unwrap_or(usize::MAX));
            dst.write_all(&self.pending()[..take])
                .await
                .map_err(|_| ReadErr::Io)?;
            self.consume(take);
            n -= take as u64;
        }
        Ok(total)
    }

    /// Copies until EOF.
    async fn copy_to_end(&mut self, dst: &mut TcpStream, wait: Duration) -> Result<u64, ReadErr> {
        let mut total = 0u64;
        loop {
            if !self.pending().is_empty() {
                let n = self.pending().len();
                dst.write_all(self.pending())
                    .await
                    .map_err(|_| ReadErr::Io)?;
                self.consume(n);
                total += n as u64;
            }
            match self.fill(tokio::time::Instant::now() + wait).await {
                Ok(_) => {}
                Err(ReadErr::Eof) => return Ok(total),
                Err(e) => return Err(e),
            }
        }
    }

    /// Relays a chunked body; stops with `Err(Overrun)`-like `Ok(None)` before forwarding a
    /// chunk that would take the total past `limit`.
    async fn relay_chunked(
        &mut self,
        dst: &mut TcpStream,
        limit: Option<u64>,
        wait: Duration,
    ) -> Result<Option<u64>, ReadErr> {
        let mut total = 0u64;
        loop {
            let line = self.line(http::MAX_CHUNK_LINE, wait).await?;
            let size = http::parse_chunk_size_line(&line[..line.len() - 2])
                .map_err(|_| ReadErr::Framing)?;
            total = total.saturating_add(size);
            if limit.is_some_and(|l| total > l) {
                return Ok(None);
            }
            dst.write_all(&line).await.map_err(|_| ReadErr::Io)?;
            if size == 0 {
                let mut trailer_bytes = 0usize;
                loop {
                    let l = self.line(http::MAX_CHUNK_LINE, wait).await?;
                    trailer_bytes += l.len();
                    if trailer_bytes > http::MAX_HEAD_BYTES {
                        return Err(ReadErr::TooLong);
                    }
                    dst.write_all(&l).await.map_err(|_| ReadErr::Io)?;
                    if l == b"\r\n" {
                        return Ok(Some(total));
                    }
                }
            }
            self.copy_exact(dst, size, wait).await?;
            let crlf = self.line(2, wait).await?;
            if crlf != b"\r\n" {
                return Err(ReadErr::Framing);
            }
            dst.write_all(b"\r\n").await.map_err(|_| ReadErr::Io)?;
        }
    }
}

/// What one request did, for its event.
#[derive(Default)]
struct Record {
    kind: &'static str,
    source: Option<String>,
    identity: Option<String>,
    method: Option<String>,
    host: Option<String>,
    port: Option<u16>,
    user_agent: Option<String>,
    resolved: Vec<IpAddr>,
    dialed: Option<IpAddr>,
    status: Option<u16>,
    sni: Option<String>,
    bytes_up: u64,
    bytes_down: u64,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn emit(sh: &Shared, peer: SocketAddr, rec: &Record, d: &Decision) {
    match d.action {
        Action::Allow => Metrics::inc(&sh.metrics.allowed),
        Action::Deny => Metrics::inc(&sh.metrics.denied),
        Action::Report => Metrics::inc(&sh.metrics.reported),
    }
    let Some(log) = &sh.log else {
        return;
    };
    let verdict = match d.action {
        Action::Allow => Verdict::Allow,
        Action::Deny => Verdict::Block,
        Action::Report => Verdict::Alert,
    };
    let mut detail = serde_json::Map::new();
    let mut put = |k: &str, v: serde_json::Value| {
        if !v.is_null() {
            detail.insert(k.into(), v);
        }
    };
    put("proxy_type", rec.kind.into());
    put(
        "decision",
        serde_json::to_value(d.action).unwrap_or_default(),
    );
    put("source", rec.source.clone().into());
    put("identity", rec.identity.clone().into());
    put("method", rec.method.clone().into());
    put("host", rec.host.clone().into());
    put("user_agent", rec.user_agent.clone().into());
    put(
        "resolved",
        rec.resolved
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .into(),
    );
    put("status", rec.status.into());
    put("sni", rec.sni.clone().into());
    put("bytes_up", rec.bytes_up.into());
    put("bytes_down", rec.bytes_down.into());
    let event = Event {
        timestamp: rampart_events::rfc3339_utc(now_ns()),
        event_type: "egress".into(),
        component: "egress".into(),
        flow: Some(Flow {
            src_ip: peer.ip(),
            src_port: Some(peer.port()),
            dest_ip: rec.dialed.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
            dest_port: rec.port,
            proto: "TCP".into(),
        }),
        verdict,
        rule: None,
        techniques: d.techniques.clone(),
        reason: d.reason.code(),
        detail,
    };
    if !log.try_log(event) {
        Metrics::inc(&sh.metrics.log_dropped);
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        413 => "Content Too Large",
        502 => "Bad Gateway",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

fn error_response(status: u16, d: &Decision, host: &str, close: bool) -> Vec<u8> {
    let body = format!(
        "Egress proxying is denied to host '{host}': {}.\n",
        d.reason.code()
    );
    let mut out = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Rampart-Reason: {}\r\n",
        status_text(status),
        body.len(),
        d.reason.code()
    );
    if status == 407 {
        out.push_str("Proxy-Authenticate: Basic realm=\"rampart-egress\"\r\n");
    }
    if close {
        out.push_str("Connection: close\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Status for a refusal.
fn status_for(reason: &Reason) -> u16 {
    match reason {
        Reason::AuthRequired | Reason::AuthFailed => 407,
        Reason::BadRequest(_) => 400,
        Reason::UploadTooLarge => 413,
        Reason::ResolveFailed | Reason::ConnectFailed => 502,
        _ => 403,
    }
}

fn head_error_name(e: HeadError) -> &'static str {
    match e {
        HeadError::TooLarge => "head_too_large",
        HeadError::TooManyHeaders => "too_many_headers",
        HeadError::BadStartLine => "bad_start_line",
        HeadError::BadHeader => "bad_header",
        HeadError::BareLineEnding => "bare_line_ending",
        HeadError::BadVersion => "bad_version",
        HeadError::BadTarget => "bad_target",
        HeadError::BadFraming => "bad_framing",
    }
}

/// An upstream connection kept for reuse by the next request to the same host and port.
struct Upstream {
    host: Host,
    port: u16,
    addr: IpAddr,
    peer: Peer,
}

/// The request loop of one client connection. `transparent` carries the original destination
/// for connections redirected to a transparent listener (origin-form requests, host from the
/// Host header, port from the original destination).
async fn handle_client(
    sh: &Shared,
    mut client: Peer,
    peer_addr: SocketAddr,
    transparent: Option<SocketAddr>,
) {
    let mut upstream: Option<Upstream> = None;
    let lim = &sh.limits;
    for n in 0..lim.max_requests_per_connection.max(1) {
        // Wait for the first byte of the next request (idle keep-alive), then give the whole
        // head `head_timeout_ms` (slow-client guard).
        if client.pending().is_empty() {
            let first_wait = if n == 0 {
                lim.head_timeout_ms
            } else {
                lim.idle_timeout_ms
            };
            if client
                .fill(tokio::time::Instant::now() + Shared::ms(first_wait))
                .await
                .is_err()
            {
                return;
            }
        }
        let head_deadline = tokio::time::Instant::now() + Shared::ms(lim.head_timeout_ms);
        let head = loop {
            match http::parse_request_head(client.pending(), lim.max_head_bytes, lim.max_headers) {
                Ok(Some(h)) => break Ok(h),
                Ok(None) => match client.fill(head_deadline).await {
                    Ok(_) => {}
                    Err(ReadErr::Timeout) => {
                        Metrics::inc(&sh.metrics.head_timeouts);
                        return;
                    }
                    Err(_) => return,
                },
                Err(e) => break Err(e),
            }
        };
        let head = match head {
            Ok(h) => h,
            Err(e) => {
                Metrics::inc(&sh.metrics.bad_requests);
                let d = Decision::deny(Reason::BadRequest(head_error_name(e)), &[]);
                let rec = Record {
                    kind: "http",
                    ..Record::default()
                };
                emit(sh, peer_addr, &rec, &d);
                let _ = client.s.write_all(&error_response(400, &d, "", true)).await;
                return;
            }
        };
        client.consume(head.head_len);
        let keep = match head.target {
            Target::Authority { .. } if head.method == "CONNECT" && transparent.is_none() => {
                Metrics::inc(&sh.metrics.requests_connect);
                handle_connect(sh, client, peer_addr, head).await;
                return;
            }
            _ => {
                Metrics::inc(&sh.metrics.requests_http);
                handle_http(
                    sh,
                    &mut client,
                    peer_addr,
                    &head,
                    &mut upstream,
                    transparent,
                )
                .await
            }
        };
        if !keep {
            return;
        }
    }
}

/// Source selection and authentication shared by HTTP and CONNECT. `Err` carries the refusal.
fn identify(
    policy: &Policy,
    peer: SocketAddr,
    head: &RequestHead,
    rec: &mut Record,
) -> Result<usize, Decision> {
    let auth = http::header_one(&head.headers, "proxy-authorization");
    let identity = match policy.authenticate(auth) {
        Ok(id) => id,
        Err(()) => return Err(Decision::deny(Reason::AuthFailed, &[])),
    };
    rec.identity = identity.clone();
    match policy.select_source(peer.ip(), identity.as_deref()) {
        SourceMatch::Source(i) => {
            rec.source = Some(policy.sources[i].name.clone());
            Ok(i)
        }
        SourceMatch::AuthRequired => Err(Decision::deny(Reason::AuthRequired, &[])),
        SourceMatch::NoSource => Err(Decision::deny(Reason::NoSource, &[])),
    }
}

/// Resolves `host`, checks every address, and dials the checked ones in order.
async fn resolve_and_dial(
    sh: &Shared,
    policy: &Policy,
    src: usize,
    host: &Host,
    port: u16,
    rec: &mut Record,
) -> Result<(TcpStream, IpAddr), Decision> {
    let addrs = match host {
        Host::Ip(ip) => vec![*ip],
        Host::Name(name) => match sh.resolver.lookup(name).await {
            Ok(a) => a,
            Err(_) => {
                Metrics::inc(&sh.metrics.resolve_failures);
                return Err(Decision::deny(Reason::ResolveFailed, &[]));
            }
        },
    };
    rec.resolved = addrs.clone();
    let checked = match policy.decide_addresses(src, port, &addrs) {
        Ok(c) => c,
        Err((d, at)) => {
            if matches!(d.reason, Reason::ResolveFailed) {
                Metrics::inc(&sh.metrics.resolve_failures);
            } else {
                Metrics::inc(&sh.metrics.denied_address);
            }
            rec.dialed = at;
            return Err(d);
        }
    };
    for ip in checked {
        let sa = SocketAddr::new(ip, port);
        match tokio::time::timeout(
            Shared::ms(sh.limits.connect_timeout_ms),
            TcpStream::connect(sa),
        )
        .await
        {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                rec.dialed = Some(ip);
                return Ok((s, ip));
            }
            _ => continue,
        }
    }
    Metrics::inc(&sh.metrics.upstream_failures);
    Err(Decision::deny(Reason::ConnectFailed, &[]))
}

/// One plain-HTTP request; returns whether the client connection stays open.
async fn handle_http(
    sh: &Shared,
    client: &mut Peer,
    peer_addr: SocketAddr,
    head: &RequestHead,
    upstream: &mut Option<Upstream>,
    transparent: Option<SocketAddr>,
) -> bool {
    let policy = sh.policy();
    let lim = &sh.limits;
    let mut rec = Record {
        kind: if transparent.is_some() {
            "transparent_http"
        } else {
            "http"
        },
        method: Some(head.method.clone()),
        user_agent: head.header_text("user-agent"),
        ..Record::default()
    };
    let body = head.body_len();
    let has_body = !matches!(body, Ok(BodyLen::Empty));
    let client_close = http::has_token(&head.headers, "connection", "close")
        || (head.minor == 0 && !http::has_token(&head.headers, "connection", "keep-alive"));
    // Refusals close the connection when a request body is still unread.
    let close_on_refusal = has_body || client_close;
    let target = match (&head.target, transparent) {
        (Target::Absolute { host, port, path }, None) => Some((host.clone(), *port, path.clone())),
        (Target::Origin(path), Some(orig)) => http::header_one(&head.headers, "host")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| http::parse_authority(v, Some(orig.port())).ok())
            // The port is where the client really connected, not what Host claims.
            .map(|(host, _)| (host, orig.port(), path.clone())),
        _ => None,
    };
    let (host, port, path) = match target {
        Some(t) => t,
        None => {
            Metrics::inc(&sh.metrics.bad_requests);
            let why = if transparent.is_some() {
                "no_usable_host"
            } else {
                "not_absolute_form"
            };
            let d = Decision::deny(Reason::BadRequest(why), &[]);
            refuse_http(sh, peer_addr, client, rec, d, true).await;
            return false;
        }
    };
    rec.host = Some(host.to_string());
    rec.port = Some(port);
    let src = match identify(&policy, peer_addr, head, &mut rec) {
        Ok(s) => s,
        Err(d) => return refuse_http(sh, peer_addr, client, rec, d, close_on_refusal).await,
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            Metrics::inc(&sh.metrics.bad_requests);
            let d = Decision::deny(Reason::BadRequest(head_error_name(e)), &[]);
            refuse_http(sh, peer_addr, client, rec, d, true).await;
            return false;
        }
    };
    let facts = RequestFacts {
        connect: false,
        method: &head.method,
        host: &host,
        port,
        user_agent: rec.user_agent.as_deref(),
        body,
    };
    let decision = policy.decide_request(src, &facts);
    if !decision.proceeds() {
        return refuse_http(sh, peer_addr, client, rec, decision, close_on_refusal).await;
    }
    // Reuse the kept upstream only for the same host and port: its address was checked when
    // it was dialled, and reusing it needs no second lookup.
    // A kept connection the origin has meanwhile closed (or that has stray bytes) is dropped
    // before use rather than failing the request.
    let reuse = upstream.as_ref().is_some_and(|u| {
        u.host == host && u.port == port && u.peer.pending().is_empty() && still_open(&u.peer.s)
    });
    if !reuse {
        *upstream = None;
        match resolve_and_dial(sh, &policy, src, &host, port, &mut rec).await {
            Ok((s, ip)) => {
                *upstream = Some(Upstream {
                    host: host.clone(),
                    port,
                    addr: ip,
                    peer: Peer::new(s),
                })
            }
            Err(d) => return refuse_http(sh, peer_addr, client, rec, d, close_on_refusal).await,
        }
    }
    let Some(up) = upstream.as_mut() else {
        return false;
    };
    rec.dialed = Some(up.addr);
    if rec.resolved.is_empty() {
        rec.resolved = vec![up.addr];
    }
    let expect_continue = http::has_token(&head.headers, "expect", "100-continue");
    let mut up_head = http::upstream_request_head(head, &host, port, &path);
    if expect_continue {
        // The proxy has decided; answer the client's Expect itself so it does not stall, and
        // do not ask the origin for a second interim response.
        strip_header(&mut up_head, b"expect");
        if client
            .s
            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
    }
    let wait = Shared::ms(lim.response_timeout_ms);
    let mut final_decision = decision;
    let sent = async {
        up.peer
            .s
            .write_all(&up_head)
            .await
            .map_err(|_| ReadErr::Io)?;
        match body {
            BodyLen::Empty | BodyLen::UntilClose => Ok(Some(0)),
            BodyLen::Length(n) => client.copy_exact(&mut up.peer.s, n, wait).await.map(Some),
            BodyLen::Chunked => {
                // Only enforcing sources stop the stream at the limit; report-only sources
                // relay it whole and the total is judged afterwards.
                let limit = policy
                    .sources
                    .get(src)
                    .filter(|s| s.mode == crate::config::Mode::Enforce)
                    .map(|s| s.max_upload_bytes);
                client.relay_chunked(&mut up.peer.s, limit, wait).await
            }
        }
    }
    .await;
    match sent {
        Ok(Some(n)) => {
            rec.bytes_up = n;
            let over = policy
                .sources
                .get(src)
                .is_some_and(|s| body == BodyLen::Chunked && n > s.max_upload_bytes);
            if over && final_decision.action == Action::Allow {
                final_decision = policy.decide_upload_overrun(src);
            }
        }
        Ok(None) => {
            // Chunked upload went past an enforcing source's limit: the upstream connection is
            // cut mid-body, so the origin never sees a complete request.
            *upstream = None;
            let d = policy.decide_upload_overrun(src);
            refuse_http(sh, peer_addr, client, rec, d, true).await;
            return false;
        }
        Err(_) => {
            Metrics::inc(&sh.metrics.upstream_failures);
            *upstream = None;
            let d = Decision::deny(Reason::ConnectFailed, &[]);
            refuse_http(sh, peer_addr, client, rec, d, true).await;
            return false;
        }
    }
    // Response: forward interim 1xx heads, then the final head and its body.
    let resp = loop {
        let deadline = tokio::time::Instant::now() + wait;
        let parsed = loop {
            match http::parse_response_head(up.peer.pending(), lim.max_head_bytes, lim.max_headers)
            {
                Ok(Some(h)) => break Ok(h),
                Ok(None) => {
                    if up.peer.fill(deadline).await.is_err() {
                        break Err(());
                    }
                }
                Err(_) => break Err(()),
            }
        };
        let Ok(r) = parsed else {
            Metrics::inc(&sh.metrics.upstream_failures);
            *upstream = None;
            let d = Decision::deny(Reason::ConnectFailed, &[]);
            refuse_http(sh, peer_addr, client, rec, d, true).await;
            return false;
        };
        let bytes = up.peer.pending()[..r.head_len].to_vec();
        up.peer.consume(r.head_len);
        if r.status == 101 {
            // Upgrade was stripped from the request; a 101 is a protocol violation.
            *upstream = None;
            return false;
        }
        if client.s.write_all(&bytes).await.is_err() {
            *upstream = None;
            return false;
        }
        if r.status >= 200 {
            break r;
        }
    };
    rec.status = Some(resp.status);
    let framing = resp.body_len(&head.method);
    let copied = match framing {
        Ok(BodyLen::Empty) => Ok(0),
        Ok(BodyLen::Length(n)) => up.peer.copy_exact(&mut client.s, n, wait).await,
        Ok(BodyLen::Chunked) => up
            .peer
            .relay_chunked(&mut client.s, None, wait)
            .await
            .map(|v| v.unwrap_or(0)),
        Ok(BodyLen::UntilClose) => up.peer.copy_to_end(&mut client.s, wait).await,
        Err(_) => Err(ReadErr::Framing),
    };
    let body_ok = copied.is_ok();
    rec.bytes_down = copied.unwrap_or(0);
    emit(sh, peer_addr, &rec, &final_decision);
    let upstream_reusable = body_ok
        && !matches!(framing, Ok(BodyLen::UntilClose))
        && !http::has_token(&resp.headers, "connection", "close")
        && resp.minor == 1;
    if !upstream_reusable {
        *upstream = None;
    }
    body_ok
        && !client_close
        && !matches!(framing, Ok(BodyLen::UntilClose))
        && !http::has_token(&resp.headers, "connection", "close")
}

/// Whether a kept upstream connection is idle and open: nothing to read, no EOF.
fn still_open(s: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(s.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Emits the refusal's event and answers it; returns whether the connection stays open.
async fn refuse_http(
    sh: &Shared,
    peer_addr: SocketAddr,
    client: &mut Peer,
    rec: Record,
    d: Decision,
    close: bool,
) -> bool {
    emit(sh, peer_addr, &rec, &d);
    let host = rec.host.clone().unwrap_or_default();
    let bytes = error_response(status_for(&d.reason), &d, &host, close);
    client.s.write_all(&bytes).await.is_ok() && !close
}

/// Removes one header (case-insensitive name) from a serialised head.
fn strip_header(head: &mut Vec<u8>, lower_name: &[u8]) {
    let mut out = Vec::with_capacity(head.len());
    for line in head.split_inclusive(|b| *b == b'\n') {
        let is_it = line.len() > lower_name.len()
            && line[..lower_name.len()].eq_ignore_ascii_case(lower_name)
            && line[lower_name.len()] == b':';
        if !is_it {
            out.extend_from_slice(line);
        }
    }
    *head = out;
}

async fn handle_connect(sh: &Shared, mut client: Peer, peer_addr: SocketAddr, head: RequestHead) {
    let policy = sh.policy();
    let lim = &sh.limits;
    let Target::Authority { host, port } = head.target.clone() else {
        return;
    };
    let mut rec = Record {
        kind: "connect",
        method: Some(head.method.clone()),
        host: Some(host.to_string()),
        port: Some(port),
        user_agent: head.header_text("user-agent"),
        ..Record::default()
    };
    let src = match identify(&policy, peer_addr, &head, &mut rec) {
        Ok(s) => s,
        Err(d) => return refuse_connect(sh, peer_addr, client, rec, d).await,
    };
    let facts = RequestFacts {
        connect: true,
        method: "CONNECT",
        host: &host,
        port,
        user_agent: rec.user_agent.as_deref(),
        body: BodyLen::Empty,
    };
    let pre = policy.decide_request(src, &facts);
    if !pre.proceeds() {
        return refuse_connect(sh, peer_addr, client, rec, pre).await;
    }
    let (mut up, _ip) = match resolve_and_dial(sh, &policy, src, &host, port, &mut rec).await {
        Ok(v) => v,
        Err(d) => return refuse_connect(sh, peer_addr, client, rec, d).await,
    };
    if client
        .s
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_err()
    {
        return;
    }
    let skip_peek = policy
        .sources
        .get(src)
        .is_some_and(|s| s.allows_non_tls(port));
    let decision = if skip_peek {
        pre
    } else {
        let deadline = tokio::time::Instant::now() + Shared::ms(lim.client_hello_timeout_ms);
        let peek = loop {
            let p = tls::peek_client_hello(client.pending());
            if p != Peek::Incomplete {
                break p;
            }
            if client.pending().len() >= tls::MAX_CLIENT_HELLO_BYTES
                || client.fill(deadline).await.is_err()
            {
                break tls::peek_client_hello(client.pending());
            }
        };
        if let Peek::Hello(h) = &peek {
            rec.sni = h.sni.clone();
        }
        let d = policy.decide_hello(src, &host, port, &peek);
        // A report on the ClientHello outranks an allow from the request check, and the
        // request check's report survives an allowed ClientHello.
        match (d.action, pre.action) {
            (Action::Allow, Action::Report) => pre,
            _ => d,
        }
    };
    if !decision.proceeds() {
        Metrics::inc(&sh.metrics.denied_sni);
        emit(sh, peer_addr, &rec, &decision);
        // The tunnel is already open for the client; closing both sides is the refusal.
        return;
    }
    emit(sh, peer_addr, &rec, &decision);
    if !client.pending().is_empty() {
        if up.write_all(client.pending()).await.is_err() {
            return;
        }
        let n = client.pending().len();
        client.consume(n);
    }
    splice(client.s, up, Shared::ms(lim.tunnel_idle_timeout_ms)).await;
}

async fn refuse_connect(
    sh: &Shared,
    peer_addr: SocketAddr,
    mut client: Peer,
    rec: Record,
    d: Decision,
) {
    emit(sh, peer_addr, &rec, &d);
    let bytes = error_response(
        status_for(&d.reason),
        &d,
        rec.host.as_deref().unwrap_or(""),
        true,
    );
    let _ = client.s.write_all(&bytes).await;
}

/// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST` (linux/netfilter_ipv4.h, netfilter_ipv6.h).
const SO_ORIGINAL_DST: libc::c_int = 80;

/// The destination a redirected connection was originally sent to: `SO_ORIGINAL_DST` for nft
/// `redirect`/`dnat`, else the socket's local address (nft `tproxy` keeps the original
/// destination as the local address).
fn original_dst(s: &TcpStream) -> Option<SocketAddr> {
    use std::os::fd::AsRawFd;
    let local = s.local_addr().ok()?;
    let fd = s.as_raw_fd();
    if local.is_ipv4() {
        // SAFETY: sockaddr_in is plain old data; zeroed is a valid value.
        let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        // SAFETY: fd is an open socket owned by `s`; the pointer and length describe `sa`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in).cast(),
                &mut len,
            )
        };
        if r == 0 {
            let ip = Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr));
            return Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(sa.sin_port)));
        }
    } else {
        // SAFETY: sockaddr_in6 is plain old data; zeroed is a valid value.
        let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        // SAFETY: fd is an open socket owned by `s`; the pointer and length describe `sa`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                SO_ORIGINAL_DST,
                (&mut sa as *mut libc::sockaddr_in6).cast(),
                &mut len,
            )
        };
        if r == 0 {
            let ip = std::net::Ipv6Addr::from(sa.sin6_addr.s6_addr);
            return Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(sa.sin6_port)));
        }
    }
    Some(local)
}

/// A connection redirected to a transparent listener: TLS is routed by the ClientHello's SNI
/// (resolved and checked by the proxy, so the client's own choice of address is ignored), HTTP
/// by the Host header; both use the original destination port.
async fn handle_transparent(sh: &Shared, stream: TcpStream, peer_addr: SocketAddr) {
    let lim = &sh.limits;
    let orig = original_dst(&stream);
    let mut client = Peer::new(stream);
    let mut rec = Record {
        kind: "transparent",
        ..Record::default()
    };
    let Some(orig) = orig.filter(|o| !sh.own_addrs.contains(o)) else {
        // Not redirected: a direct connection to the transparent port would loop.
        emit(
            sh,
            peer_addr,
            &rec,
            &Decision::deny(Reason::BadRequest("transparent_loop"), &[]),
        );
        return;
    };
    rec.port = Some(orig.port());
    let deadline = tokio::time::Instant::now() + Shared::ms(lim.client_hello_timeout_ms);
    if client.fill(deadline).await.is_err() {
        return;
    }
    if client.pending().first() != Some(&0x16) {
        // Not TLS: serve it as HTTP (a request head that does not parse is answered 400).
        handle_client(sh, client, peer_addr, Some(orig)).await;
        return;
    }
    rec.kind = "transparent_tls";
    let peek = loop {
        let p = tls::peek_client_hello(client.pending());
        if p != Peek::Incomplete
            || client.pending().len() >= tls::MAX_CLIENT_HELLO_BYTES
            || client.fill(deadline).await.is_err()
        {
            break p;
        }
    };
    let policy = sh.policy();
    let host = match &peek {
        Peek::Hello(h) => {
            rec.sni = h.sni.clone();
            match h.sni.as_deref().map(http::parse_host) {
                Some(Ok(host)) => host,
                Some(Err(_)) => Host::Ip(orig.ip()),
                // No SNI: the only destination known is the address the client chose.
                None => Host::Ip(orig.ip()),
            }
        }
        _ => Host::Ip(orig.ip()),
    };
    rec.host = Some(host.to_string());
    let src = match policy.select_source(peer_addr.ip(), None) {
        SourceMatch::Source(i) => {
            rec.source = Some(policy.sources[i].name.clone());
            i
        }
        SourceMatch::AuthRequired => {
            return emit(
                sh,
                peer_addr,
                &rec,
                &Decision::deny(Reason::AuthRequired, &[]),
            )
        }
        SourceMatch::NoSource => {
            return emit(sh, peer_addr, &rec, &Decision::deny(Reason::NoSource, &[]))
        }
    };
    let facts = RequestFacts {
        connect: true,
        method: "CONNECT",
        host: &host,
        port: orig.port(),
        user_agent: None,
        body: BodyLen::Empty,
    };
    let mut decision = policy.decide_request(src, &facts);
    if decision.proceeds() {
        let hello = policy.decide_hello(src, &host, orig.port(), &peek);
        if hello.action != Action::Allow {
            decision = hello;
        }
    }
    if !decision.proceeds() {
        if matches!(
            decision.reason,
            Reason::SniMissing
                | Reason::NotTls
                | Reason::MalformedClientHello
                | Reason::SniMismatch
        ) {
            Metrics::inc(&sh.metrics.denied_sni);
        }
        return emit(sh, peer_addr, &rec, &decision);
    }
    let mut up = match resolve_and_dial(sh, &policy, src, &host, orig.port(), &mut rec).await {
        Ok((s, _)) => s,
        Err(d) => return emit(sh, peer_addr, &rec, &d),
    };
    emit(sh, peer_addr, &rec, &decision);
    if up.write_all(client.pending()).await.is_err() {
        return;
    }
    let n = client.pending().len();
    client.consume(n);
    splice(client.s, up, Shared::ms(lim.tunnel_idle_timeout_ms)).await;
}

/// Copies both directions until both end or the tunnel is idle (no bytes either way) for
/// `idle`.
async fn splice(a: TcpStream, b: TcpStream, idle: Duration) {
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    async fn pump(
        mut r: tokio::net::tcp::OwnedReadHalf,
        mut w: tokio::net::tcp::OwnedWriteHalf,
        last: Arc<AtomicU64>,
        started: Instant,
        idle: Duration,
    ) {
        let mut buf = vec![0u8; READ_CHUNK];
        loop {
            match tokio::time::timeout(idle, r.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    last.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    if w.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                Err(_) => {
                    let since = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
                    if since >= idle.as_millis() as u64 {
                        break;
                    }
                }
            }
        }
        let _ = w.shutdown().await;
    }
    let one = pump(ar, bw, last.clone(), started, idle);
    let two = pump(br, aw, last, started, idle);
    tokio::join!(one, two);
}
