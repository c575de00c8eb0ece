//! The tokio shell: UDP and TCP listeners, the forwarding path, cache, detector, query log and
//! atomic list reloads.
//!
//! Forwarding passes the client's original message bytes upstream; only the 16-bit id is
//! replaced by a random one (one shared socket per upstream multiplexes queries, as numa and
//! dnsdist do) and restored in the answer, whose question is checked against the query's.
//! Upstreams are tried in order; one that failed `upstream_fail_threshold` times in a row is
//! skipped for `upstream_down_ms`. Every length, count and wait is bounded by [`Limits`].

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rampart_events::{Event, Flow, Verdict};
use rampart_ir::TechniqueId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{oneshot, Semaphore};

use crate::cache::{key_of, Cache};
use crate::config::{BlockAction, Config, Limits, UpstreamProto, DEFAULT_CA_FILE};
use crate::detector::{Detection, Detector};
use crate::engine::{sinkhole_answer, Block, Decision, Engine, Reason};
use crate::metrics::Metrics;
use crate::psl::PublicSuffixList;
use crate::querylog::{rfc3339, QueryLog};
use crate::stream::{self, StreamUpstream, Transport};
use crate::wire::{self, rcode, Ede, Message};
use crate::DnsError;

/// Streams every list file of `cfg` into a new engine (blocking; call off the reactor for big
/// lists). Files are read through a 64 KiB buffer, never whole.
pub fn load_engine(cfg: &Config) -> Result<Engine, DnsError> {
    Engine::build_with(cfg, &mut |l: &crate::config::ListConfig| {
        let Some(path) = &l.path else {
            return Ok(None);
        };
        let err = |source| DnsError::ListRead {
            name: l.name.clone(),
            path: path.display().to_string(),
            source,
        };
        let file = std::fs::File::open(path).map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        let reader = std::io::BufReader::with_capacity(64 * 1024, file);
        Ok(Some((Box::new(reader) as Box<dyn std::io::BufRead>, size)))
    })
}

fn load_psl(cfg: &Config) -> PublicSuffixList {
    cfg.detector
        .psl_path
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .map(|t| PublicSuffixList::parse(&t))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(PublicSuffixList::builtin)
}

#[derive(Debug)]
struct UpstreamState {
    addr: SocketAddr,
    proto: UpstreamProto,
    udp: Option<Arc<UdpSocket>>,
    // TCP (also the truncation fallback of a UDP upstream) or DoT; connects lazily.
    stream: StreamUpstream,
    pending: Mutex<HashMap<u16, oneshot::Sender<Vec<u8>>>>,
    consecutive_failures: AtomicU32,
    down_until_ms: AtomicU64,
}

struct Shared {
    engine: ArcSwap<Engine>,
    generation: AtomicU64,
    limits: Limits,
    cache: Cache,
    detector: Mutex<Detector>,
    upstreams: Vec<UpstreamState>,
    inflight: Semaphore,
    tcp_conns: Semaphore,
    metrics: Metrics,
    log: Option<QueryLog>,
    started: Instant,
    rng: Mutex<u64>,
}

/// What the server answers and how, for one query.
struct Outcome {
    bytes: Vec<u8>,
    question_end: usize,
}

/// Largest UDP answer the client accepts: its EDNS size (at least 512), else 512.
fn udp_limit(query: &Message) -> usize {
    query
        .opt
        .as_ref()
        .map_or(512, |o| (o.udp_size as usize).max(512))
}

impl Shared {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn random_u16(&self) -> u16 {
        let Ok(mut s) = self.rng.lock() else {
            return 0x5a5a;
        };
        // xorshift64*: ids only need to be unpredictable to off-path spoofers without a
        // view of the socket; seeded from the clock and the process id.
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        (s.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 48) as u16
    }

    fn log_event(&self, ev: Event) {
        if let Some(log) = &self.log {
            // Blocks, detections and failures are important; allowed-query records are routine.
            let important = ev.verdict != Verdict::Allow;
            if !log.try_log(ev, important) {
                Metrics::inc(&self.metrics.log_dropped);
            }
        }
    }
}

/// A running server.
pub struct ServerHandle {
    shared: Arc<Shared>,
    /// Bound UDP addresses (in `listen` order).
    pub udp_addrs: Vec<SocketAddr>,
    /// Bound TCP addresses (in `listen` order).
    pub tcp_addrs: Vec<SocketAddr>,
    /// Bound Prometheus endpoint, if configured.
    pub metrics_addr: Option<SocketAddr>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("udp", &self.udp_addrs)
            .field("tcp", &self.tcp_addrs)
            .finish()
    }
}

/// Namespace for [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Loads the lists, binds every listener and starts serving in the current tokio runtime.
    pub async fn start(cfg: Config) -> Result<ServerHandle, DnsError> {
        if cfg.upstreams.is_empty() {
            return Err(DnsError::Config("at least one upstream is required".into()));
        }
        if cfg.listen.is_empty() {
            return Err(DnsError::Config(
                "at least one listen address is required".into(),
            ));
        }
        let cfg2 = cfg.clone();
        let engine = tokio::task::spawn_blocking(move || load_engine(&cfg2))
            .await
            .map_err(|e| DnsError::Config(format!("list loader panicked: {e}")))??;
        let psl = load_psl(&cfg);
        let mut upstreams = Vec::new();
        for u in &cfg.upstreams {
            let udp = if u.proto == UpstreamProto::Udp {
                let bind: SocketAddr = if u.addr.is_ipv4() {
                    ([0, 0, 0, 0], 0).into()
                } else {
                    ([0u16; 8], 0).into()
                };
                let s = UdpSocket::bind(bind).await?;
                s.connect(u.addr).await?;
                Some(Arc::new(s))
            } else {
                None
            };
            let transport = if u.proto == UpstreamProto::Dot {
                let ca = u.ca_file.clone().unwrap_or_else(|| DEFAULT_CA_FILE.into());
                Transport::Tls {
                    connector: stream::tls_connector(&ca)?,
                    name: stream::server_name(u.tls_name.as_deref(), u.addr)?,
                }
            } else {
                Transport::Tcp
            };
            let idle = Duration::from_millis(cfg.limits.tcp_idle_timeout_ms.max(1));
            upstreams.push(UpstreamState {
                addr: u.addr,
                proto: u.proto,
                udp,
                stream: StreamUpstream::new(u.addr, transport, idle),
                pending: Mutex::new(HashMap::new()),
                consecutive_failures: AtomicU32::new(0),
                down_until_ms: AtomicU64::new(0),
            });
        }
        let log = match &cfg.query_log {
            Some(l) => Some(QueryLog::start(l)?),
            None => None,
        };
        let seed = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            ^ ((std::process::id() as u64) << 32)
            | 1;
        let shared = Arc::new(Shared {
            engine: ArcSwap::from_pointee(engine),
            generation: AtomicU64::new(1),
            limits: cfg.limits.clone(),
            cache: Cache::new(cfg.cache.clone()),
            detector: Mutex::new(Detector::new(cfg.detector.clone(), psl)),
            upstreams,
            inflight: Semaphore::new(cfg.limits.max_inflight.max(1)),
            tcp_conns: Semaphore::new(cfg.limits.max_tcp_connections.max(1)),
            metrics: Metrics::default(),
            log,
            started: Instant::now(),
            rng: Mutex::new(seed),
        });
        let mut tasks = Vec::new();
        for (i, u) in shared.upstreams.iter().enumerate() {
            if let Some(sock) = &u.udp {
                let sock = sock.clone();
                let sh = shared.clone();
                tasks.push(tokio::spawn(
                    async move { upstream_reader(sh, i, sock).await },
                ));
            }
        }
        let mut udp_addrs = Vec::new();
        let mut tcp_addrs = Vec::new();
        for addr in &cfg.listen {
            let (udp, tcp, bound) = bind_udp_and_tcp(*addr).await?;
            udp_addrs.push(bound);
            tcp_addrs.push(tcp.local_addr()?);
            let udp = Arc::new(udp);
            let sh = shared.clone();
            tasks.push(tokio::spawn(async move { udp_loop(sh, udp).await }));
            let sh = shared.clone();
            tasks.push(tokio::spawn(async move { tcp_loop(sh, tcp).await }));
        }
        let metrics_addr = match &cfg.metrics {
            Some(m) => {
                let l = TcpListener::bind(m.listen)
                    .await
                    .map_err(|source| DnsError::Bind {
                        addr: m.listen,
                        source,
                    })?;
                let bound = l.local_addr()?;
                let sh = shared.clone();
                tasks.push(tokio::spawn(async move { metrics_loop(sh, l).await }));
                Some(bound)
            }
            None => None,
        };
        Ok(ServerHandle {
            shared,
            udp_addrs,
            tcp_addrs,
            metrics_addr,
            tasks,
        })
    }
}

impl ServerHandle {
    /// Re-reads every list of `cfg` and swaps the new engine in atomically. Queries in flight
    /// finish on the engine they started with; none sees a half-built list. On error the old
    /// lists stay. Only `lists` and `groups` are taken from `cfg`.
    pub async fn reload(&self, cfg: &Config) -> Result<(), DnsError> {
        let cfg = cfg.clone();
        let built = tokio::task::spawn_blocking(move || load_engine(&cfg))
            .await
            .map_err(|e| DnsError::Config(format!("list loader panicked: {e}")));
        match built {
            Ok(Ok(engine)) => {
                self.shared.engine.store(Arc::new(engine));
                self.shared.generation.fetch_add(1, Ordering::SeqCst);
                Metrics::inc(&self.shared.metrics.reloads);
                Ok(())
            }
            Ok(Err(e)) | Err(e) => {
                Metrics::inc(&self.shared.metrics.reload_failures);
                Err(e)
            }
        }
    }

    /// The counters.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The current engine (for list statistics).
    pub fn engine(&self) -> Arc<Engine> {
        self.shared.engine.load_full()
    }

    /// Stops every listener and task.
    pub fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Runs a server for `cfg` until `shutdown` resolves, then stops it. This is the entry point
/// for `rampart dns --config FILE`: `rampart_dns::serve(Config::from_toml(&text)?, ctrl_c)`.
pub async fn serve(cfg: Config, shutdown: impl Future<Output = ()>) -> Result<(), DnsError> {
    let handle = Server::start(cfg).await?;
    shutdown.await;
    handle.shutdown();
    Ok(())
}

/// The Prometheus text: the counters, then per-list gauges of the current lists.
fn exposition(sh: &Shared) -> String {
    use std::fmt::Write as _;
    let mut out = sh.metrics.render();
    let engine = sh.engine.load();
    let _ = writeln!(
        out,
        "# HELP rampart_dns_list_entries Entries of each list after de-duplication."
    );
    let _ = writeln!(out, "# TYPE rampart_dns_list_entries gauge");
    for st in engine.list_stats() {
        let _ = writeln!(
            out,
            "rampart_dns_list_entries{{list=\"{}\"}} {}",
            st.name.escape_default(),
            st.entries
        );
    }
    let _ = writeln!(
        out,
        "# HELP rampart_dns_list_heap_bytes Heap bytes of each domain list."
    );
    let _ = writeln!(out, "# TYPE rampart_dns_list_heap_bytes gauge");
    for st in engine.list_stats() {
        let _ = writeln!(
            out,
            "rampart_dns_list_heap_bytes{{list=\"{}\"}} {}",
            st.name.escape_default(),
            st.heap_bytes
        );
    }
    out
}

/// Most concurrent scrape connections; more are closed at once.
const MAX_METRICS_CONNECTIONS: usize = 8;
/// Most request bytes read from a scraper.
const MAX_METRICS_REQUEST_BYTES: usize = 8192;

async fn metrics_loop(sh: Arc<Shared>, listener: TcpListener) {
    let slots = Arc::new(Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let sh = sh.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // Read the request head (bounded in size and time); its content does not matter.
            let mut req = Vec::with_capacity(512);
            let mut buf = [0u8; 1024];
            let read_head = async {
                while req.len() < MAX_METRICS_REQUEST_BYTES {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return false,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                    if req.windows(4).any(|w| w == b"\r\n\r\n")
                        || req.windows(2).any(|w| w == b"\n\n")
                    {
                        return true;
                    }
                }
                false
            };
            let complete = tokio::time::timeout(Duration::from_secs(2), read_head)
                .await
                .unwrap_or(false);
            if !complete {
                return;
            }
            let body = exposition(&sh);
            let head = format!(
                "HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = tokio::time::timeout(Duration::from_secs(2), async {
                stream.write_all(head.as_bytes()).await?;
                stream.write_all(body.as_bytes()).await?;
                stream.shutdown().await
            })
            .await;
        });
    }
}

async fn upstream_reader(sh: Arc<Shared>, idx: usize, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; wire::MAX_MESSAGE_BYTES];
    loop {
        let n = match sock.recv(&mut buf).await {
            Ok(n) => n,
            Err(_) => {
                // ICMP port unreachable surfaces here on Linux; keep reading.
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        if n < 12 {
            continue;
        }
        let id = u16::from_be_bytes([buf[0], buf[1]]);
        let tx = sh.upstreams[idx]
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(&id));
        if let Some(tx) = tx {
            let _ = tx.send(buf[..n].to_vec());
        }
    }
}

/// Tries at binding a listen address whose port is 0 (the port the UDP socket gets may already
/// be taken for TCP, by any connection's ephemeral port).
const LISTEN_PORT_ATTEMPTS: u32 = 16;

/// UDP and TCP sockets on the same address and port. With port 0, the port the UDP bind picks
/// is tried for TCP, and on `AddrInUse` the pair is tried again with a new port (a fixed port
/// fails at once).
async fn bind_udp_and_tcp(
    addr: SocketAddr,
) -> Result<(UdpSocket, TcpListener, SocketAddr), DnsError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let udp = UdpSocket::bind(addr)
            .await
            .map_err(|source| DnsError::Bind { addr, source })?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp, bound)),
            Err(e)
                if addr.port() == 0
                    && e.kind() == std::io::ErrorKind::AddrInUse
                    && attempt < LISTEN_PORT_ATTEMPTS =>
            {
                continue
            }
            Err(source) => {
                return Err(DnsError::Bind {
                    addr: bound,
                    source,
                })
            }
        }
    }
}

async fn udp_loop(sh: Arc<Shared>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; wire::MAX_MESSAGE_BYTES];
    let Ok(local) = sock.local_addr() else {
        return;
    };
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(v) => v,
            Err(_) => continue,
        };
        Metrics::inc(&sh.metrics.queries_udp);
        let query = &buf[..n];
        match fast_path(&sh, query, peer, local, "UDP") {
            FastPath::Done(Some(out), limit) => {
                let _ = sock.send_to(&fit_udp(limit, out), peer).await;
            }
            FastPath::Done(None, _) => {}
            FastPath::Forward(ctx) => {
                let sh = sh.clone();
                let sock = sock.clone();
                let limit = udp_limit(&ctx.query);
                tokio::spawn(async move {
                    if let Some(out) = forward(&sh, ctx).await {
                        let _ = sock.send_to(&fit_udp(limit, out), peer).await;
                    }
                });
            }
        }
    }
}

/// Truncates an answer that exceeds what the UDP client can take (512, or its EDNS size).
fn fit_udp(limit: usize, out: Outcome) -> Vec<u8> {
    if out.bytes.len() > limit {
        wire::truncate_response(&out.bytes, out.question_end)
    } else {
        out.bytes
    }
}

async fn tcp_loop(sh: Arc<Shared>, listener: TcpListener) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let Ok(permit) = sh.tcp_conns.try_acquire() else {
            drop(stream);
            continue;
        };
        permit.forget();
        let sh = sh.clone();
        tokio::spawn(async move {
            let _ = tcp_conn(&sh, stream, peer).await;
            sh.tcp_conns.add_permits(1);
        });
    }
}

/// Most queries of one TCP client connection in progress at once (RFC 7766 §6.2.1.1
/// pipelining); the connection stops reading while this many are pending.
pub const MAX_TCP_PIPELINE: usize = 64;

fn frame(out: &Outcome) -> Vec<u8> {
    let n = out.bytes.len().min(u16::MAX as usize);
    let mut framed = Vec::with_capacity(n + 2);
    framed.extend_from_slice(&(n as u16).to_be_bytes());
    framed.extend_from_slice(&out.bytes[..n]);
    framed
}

/// One TCP client connection. Queries are pipelined: each is answered as soon as its answer is
/// ready (possibly out of order, matched by the client through the message id), with at most
/// [`MAX_TCP_PIPELINE`] in progress.
async fn tcp_conn(sh: &Arc<Shared>, stream: TcpStream, peer: SocketAddr) -> std::io::Result<()> {
    let local = stream.local_addr()?;
    let idle = Duration::from_millis(sh.limits.tcp_idle_timeout_ms.max(1));
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(MAX_TCP_PIPELINE);
    let writer = tokio::spawn(async move {
        while let Some(framed) = rx.recv().await {
            // A client that stops reading is dropped after the idle time.
            match tokio::time::timeout(idle, wr.write_all(&framed)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
        let _ = wr.shutdown().await;
    });
    let slots = Arc::new(Semaphore::new(MAX_TCP_PIPELINE));
    for _ in 0..sh.limits.max_queries_per_tcp_connection.max(1) {
        if tx.is_closed() {
            break;
        }
        let mut len = [0u8; 2];
        match tokio::time::timeout(idle, rd.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let n = u16::from_be_bytes(len) as usize;
        let mut query = vec![0u8; n];
        match tokio::time::timeout(idle, rd.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => break,
        }
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        Metrics::inc(&sh.metrics.queries_tcp);
        match fast_path(sh, &query, peer, local, "TCP") {
            FastPath::Done(out, _) => {
                if let Some(out) = out {
                    if tx.send(frame(&out)).await.is_err() {
                        break;
                    }
                }
                drop(permit);
            }
            FastPath::Forward(ctx) => {
                let sh = sh.clone();
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(out) = forward(&sh, ctx).await {
                        let _ = tx.send(frame(&out)).await;
                    }
                    drop(permit);
                });
            }
        }
    }
    // Answers still in progress keep their sender; the writer ends after the last one.
    drop(tx);
    let _ = writer.await;
    Ok(())
}

struct ForwardCtx {
    query: Message,
    bytes: Vec<u8>,
    peer: SocketAddr,
    local: SocketAddr,
    proto: &'static str,
    engine: Arc<Engine>,
    generation: u64,
    started: Instant,
}

enum FastPath {
    /// Answered without upstream (or dropped), with the client's UDP size limit.
    Done(Option<Outcome>, usize),
    Forward(Box<ForwardCtx>),
}

fn event(
    sh: &Shared,
    peer: SocketAddr,
    local: SocketAddr,
    proto: &str,
    verdict: Verdict,
    reason: String,
) -> Event {
    let _ = sh;
    Event {
        timestamp: rfc3339(SystemTime::now()),
        event_type: "dns".into(),
        component: "dns".into(),
        flow: Some(Flow {
            src_ip: peer.ip(),
            src_port: Some(peer.port()),
            dest_ip: local.ip(),
            dest_port: Some(local.port()),
            proto: proto.into(),
        }),
        verdict,
        rule: None,
        techniques: Vec::new(),
        reason,
        detail: serde_json::Map::new(),
    }
}

fn detail_query(ev: &mut Event, q: &wire::Question, group: &str) {
    ev.detail.insert("qname".into(), q.name.as_str().into());
    ev.detail.insert("qtype".into(), q.qtype.into());
    ev.detail.insert("group".into(), group.into());
}

fn log_detection(sh: &Shared, peer: SocketAddr, local: SocketAddr, proto: &str, d: &Detection) {
    Metrics::inc(&sh.metrics.tunnel_detections);
    if sh.log.is_none() {
        return;
    }
    let mut ev = event(
        sh,
        peer,
        local,
        proto,
        Verdict::Alert,
        format!("dns tunnelling/exfiltration suspected under {}", d.domain),
    );
    ev.event_type = "anomaly".into();
    ev.techniques = vec![
        TechniqueId("T1048.003".into()),
        TechniqueId("T1071.004".into()),
        TechniqueId("T1572".into()),
    ];
    ev.detail.insert("domain".into(), d.domain.clone().into());
    ev.detail.insert("rule".into(), d.rule.into());
    ev.detail.insert("queries".into(), d.queries.into());
    ev.detail
        .insert("unique_subdomains".into(), d.unique.into());
    ev.detail.insert(
        "info_bits".into(),
        serde_json::Value::from(d.level_bits.round()),
    );
    ev.detail.insert(
        "odd_type_share".into(),
        serde_json::Value::from(d.odd_type_share),
    );
    sh.log_event(ev);
}

fn block_response(engine: &Engine, query: &Message, bytes: &[u8], b: &Block) -> Outcome {
    let g = engine.group(b.group);
    let qtype = query.question().map_or(0, |q| q.qtype);
    let ede = Ede {
        code: b.ede_code,
        text: format!("rampart: {}", b.reason.describe()),
    };
    let (rc, answers) = match b.action {
        BlockAction::Nxdomain => (rcode::NXDOMAIN, Vec::new()),
        BlockAction::Refused => (rcode::REFUSED, Vec::new()),
        BlockAction::Sinkhole => (
            rcode::NOERROR,
            sinkhole_answer(g, qtype).into_iter().collect(),
        ),
    };
    let out = wire::build_response(query, bytes, rc, &answers, g.block_ttl_s, Some(&ede));
    Outcome {
        bytes: out,
        question_end: query.question_end,
    }
}

#[allow(clippy::too_many_arguments)]
fn log_block(
    sh: &Shared,
    engine: &Engine,
    peer: SocketAddr,
    local: SocketAddr,
    proto: &str,
    q: &wire::Question,
    b: &Block,
    stage: &str,
) {
    let mut ev = event(sh, peer, local, proto, Verdict::Block, b.reason.describe());
    ev.techniques = vec![TechniqueId(b.reason.technique().into())];
    detail_query(&mut ev, q, &engine.group(b.group).name);
    ev.detail.insert("stage".into(), stage.into());
    ev.detail
        .insert("reason_code".into(), b.reason.code().into());
    ev.detail.insert(
        "action".into(),
        format!("{:?}", b.action).to_lowercase().into(),
    );
    ev.detail.insert("ede".into(), b.ede_code.into());
    match &b.reason {
        Reason::List { list, entry } => {
            ev.detail.insert("list".into(), list.clone().into());
            ev.detail.insert("entry".into(), entry.clone().into());
        }
        Reason::Regex { list, .. } | Reason::AnswerIp { list, .. } => {
            ev.detail.insert("list".into(), list.clone().into());
        }
        _ => {}
    }
    sh.log_event(ev);
}

fn formerr(bytes: &[u8], rc: u8) -> Option<Outcome> {
    // Echo id and opcode only; no question (it could not be parsed).
    let head = bytes.get(..4)?;
    if head[2] & 0x80 != 0 {
        return None; // never answer responses (reflection loops)
    }
    let mut out = vec![
        head[0],
        head[1],
        0x80 | (head[2] & 0x79),
        rc,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    out[3] = rc & 0x0F;
    Some(Outcome {
        bytes: out,
        question_end: 12,
    })
}

fn fast_path(
    sh: &Arc<Shared>,
    bytes: &[u8],
    peer: SocketAddr,
    local: SocketAddr,
    proto: &'static str,
) -> FastPath {
    let query = match wire::parse(bytes) {
        Ok(q) if !q.header.is_response() => q,
        Ok(_) => return FastPath::Done(None, 512),
        Err(_) => {
            Metrics::inc(&sh.metrics.malformed);
            return FastPath::Done(formerr(bytes, rcode::FORMERR), 512);
        }
    };
    if query.header.opcode() != 0 {
        return FastPath::Done(
            Some(Outcome {
                bytes: wire::build_response(
                    &query,
                    bytes,
                    rcode::NOTIMP,
                    &[],
                    0,
                    Some(&Ede {
                        code: wire::ede::NOT_SUPPORTED,
                        text: format!("rampart: opcode {} not supported", query.header.opcode()),
                    }),
                ),
                question_end: query.question_end,
            }),
            udp_limit(&query),
        );
    }
    let Some(q) = query.question().cloned() else {
        Metrics::inc(&sh.metrics.malformed);
        return FastPath::Done(formerr(bytes, rcode::FORMERR), 512);
    };
    let now_ms = sh.now_ms();
    let engine = sh.engine.load_full();
    let client = peer.ip();
    let mut decision = engine.decide_query(client, q.name.as_str());
    // Only queries that will leave the resolver can carry data out: names the lists already
    // block are not scored (this also keeps list-blocked floods from churning detector state).
    if let Decision::Allow { group, allowed_by } = &decision {
        let (detection, temp_block) = match sh.detector.lock() {
            Ok(mut d) => {
                let det = d.observe(now_ms, client, q.name.as_str(), q.qtype);
                (det, d.temp_blocked(now_ms, q.name.as_str()))
            }
            Err(_) => (None, None),
        };
        if let Some(d) = &detection {
            log_detection(sh, peer, local, proto, d);
        }
        if let (None, Some(domain)) = (allowed_by, temp_block) {
            if engine.group(*group).tunnel_block {
                decision = Decision::Block(Block {
                    group: *group,
                    reason: Reason::Tunnel { domain },
                    action: engine.group(*group).action,
                    ede_code: wire::ede::BLOCKED,
                });
            }
        }
    }
    let group = match &decision {
        Decision::Block(b) => {
            Metrics::inc(&sh.metrics.blocked_query);
            log_block(sh, &engine, peer, local, proto, &q, b, "query");
            return FastPath::Done(
                Some(block_response(&engine, &query, bytes, b)),
                udp_limit(&query),
            );
        }
        Decision::Allow { group, .. } => *group,
    };
    let generation = sh.generation.load(Ordering::SeqCst);
    if let Some(key) = key_of(&query) {
        let qsec = bytes.get(12..query.question_end).unwrap_or(&[]);
        if let Some(hit) = sh
            .cache
            .get(now_ms, &key, query.header.id, qsec, generation)
        {
            Metrics::inc(&sh.metrics.cache_hits);
            Metrics::inc(&sh.metrics.allowed);
            if sh.log.as_ref().is_some_and(|l| l.log_allowed) {
                let mut ev = event(sh, peer, local, proto, Verdict::Allow, "cache".into());
                detail_query(&mut ev, &q, &engine.group(group).name);
                ev.detail.insert("cached".into(), true.into());
                sh.log_event(ev);
            }
            return FastPath::Done(
                Some(Outcome {
                    bytes: hit.bytes,
                    question_end: hit.question_end,
                }),
                udp_limit(&query),
            );
        }
    }
    Metrics::inc(&sh.metrics.cache_misses);
    FastPath::Forward(Box::new(ForwardCtx {
        query,
        bytes: bytes.to_vec(),
        peer,
        local,
        proto,
        engine,
        generation,
        started: Instant::now(),
    }))
}

fn same_question(query: &[u8], q_end: usize, resp: &[u8]) -> bool {
    match (query.get(4..q_end), resp.get(4..6), resp.get(12..q_end)) {
        (Some(qd_and_rest), Some(rqd), Some(rq)) => {
            qd_and_rest[..2] == *rqd && rq.eq_ignore_ascii_case(&query[12..q_end])
        }
        _ => false,
    }
}

async fn ask_udp(
    sh: &Shared,
    up: &UpstreamState,
    ctx: &ForwardCtx,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let sock = up.udp.as_ref()?;
    let (tx, rx) = oneshot::channel();
    let mut id = sh.random_u16();
    {
        let mut p = up.pending.lock().ok()?;
        let mut tries = 0;
        while p.contains_key(&id) {
            id = id.wrapping_add(1);
            tries += 1;
            if tries > 65_535 {
                return None;
            }
        }
        p.insert(id, tx);
    }
    let mut out = ctx.bytes.clone();
    out[0..2].copy_from_slice(&id.to_be_bytes());
    if sock.send(&out).await.is_err() {
        up.pending.lock().ok()?.remove(&id);
        return None;
    }
    let got = tokio::time::timeout(timeout, rx).await;
    let resp = match got {
        Ok(Ok(r)) => r,
        _ => {
            if let Ok(mut p) = up.pending.lock() {
                p.remove(&id);
            }
            return None;
        }
    };
    if !same_question(&ctx.bytes, ctx.query.question_end, &resp) {
        return None;
    }
    let mut resp = resp;
    resp[0..2].copy_from_slice(&ctx.query.header.id.to_be_bytes());
    Some(resp)
}

async fn ask_stream(
    sh: &Shared,
    up: &UpstreamState,
    ctx: &ForwardCtx,
    timeout: Duration,
) -> Option<Vec<u8>> {
    let mut resp = up
        .stream
        .query(
            &ctx.bytes,
            sh.random_u16(),
            timeout,
            &sh.metrics.upstream_connections,
        )
        .await?;
    if !same_question(&ctx.bytes, ctx.query.question_end, &resp) {
        return None;
    }
    resp[0..2].copy_from_slice(&ctx.query.header.id.to_be_bytes());
    Some(resp)
}

async fn forward(sh: &Arc<Shared>, ctx: Box<ForwardCtx>) -> Option<Outcome> {
    let Ok(_permit) = sh.inflight.try_acquire() else {
        Metrics::inc(&sh.metrics.overload_drops);
        return Some(Outcome {
            bytes: wire::build_response(
                &ctx.query,
                &ctx.bytes,
                rcode::REFUSED,
                &[],
                0,
                Some(&Ede {
                    code: wire::ede::OTHER,
                    text: "rampart: overloaded (max_inflight queries in flight)".into(),
                }),
            ),
            question_end: ctx.query.question_end,
        });
    };
    let per_try = Duration::from_millis(sh.limits.upstream_timeout_ms.max(1));
    let deadline = ctx.started + Duration::from_millis(sh.limits.query_timeout_ms.max(1));
    let now_ms = sh.now_ms();
    // Healthy upstreams first, in configured order; down ones only as a last resort.
    let healthy = |i: &usize| sh.upstreams[*i].down_until_ms.load(Ordering::Relaxed) <= now_ms;
    let mut order: Vec<usize> = (0..sh.upstreams.len()).filter(healthy).collect();
    order.extend((0..sh.upstreams.len()).filter(|i| !healthy(i)));
    let mut answer: Option<(Vec<u8>, usize)> = None;
    for i in order {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let up = &sh.upstreams[i];
        let t = per_try.min(left);
        let mut resp = match up.proto {
            UpstreamProto::Udp => ask_udp(sh, up, &ctx, t).await,
            UpstreamProto::Tcp | UpstreamProto::Dot => ask_stream(sh, up, &ctx, t).await,
        };
        // A truncated UDP answer for a TCP client: fetch the full answer over TCP.
        if ctx.proto == "TCP"
            && resp
                .as_ref()
                .is_some_and(|r| r.len() > 3 && r[2] & 0x02 != 0)
        {
            let left = deadline.saturating_duration_since(Instant::now());
            resp = ask_stream(sh, up, &ctx, per_try.min(left)).await.or(resp);
        }
        match resp {
            Some(r) => {
                up.consecutive_failures.store(0, Ordering::Relaxed);
                answer = Some((r, i));
                break;
            }
            None => {
                Metrics::inc(&sh.metrics.upstream_errors);
                let f = up.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if f >= sh.limits.upstream_fail_threshold.max(1) {
                    up.down_until_ms
                        .store(sh.now_ms() + sh.limits.upstream_down_ms, Ordering::Relaxed);
                }
            }
        }
    }
    let q = ctx.query.question().cloned()?;
    let Some((resp, upstream)) = answer else {
        Metrics::inc(&sh.metrics.servfail);
        if sh.log.is_some() {
            let mut ev = event(
                sh,
                ctx.peer,
                ctx.local,
                ctx.proto,
                Verdict::Alert,
                "all upstreams failed".into(),
            );
            detail_query(
                &mut ev,
                &q,
                &ctx.engine.group(ctx.engine.group_of(ctx.peer.ip())).name,
            );
            sh.log_event(ev);
        }
        return Some(Outcome {
            bytes: wire::build_response(
                &ctx.query,
                &ctx.bytes,
                rcode::SERVFAIL,
                &[],
                0,
                Some(&Ede {
                    code: wire::ede::NO_REACHABLE_AUTHORITY,
                    text: "rampart: no upstream answered".into(),
                }),
            ),
            question_end: ctx.query.question_end,
        });
    };
    let Ok(parsed) = wire::parse(&resp) else {
        Metrics::inc(&sh.metrics.upstream_errors);
        return Some(Outcome {
            bytes: wire::build_response(
                &ctx.query,
                &ctx.bytes,
                rcode::SERVFAIL,
                &[],
                0,
                Some(&Ede {
                    code: wire::ede::NETWORK_ERROR,
                    text: "rampart: malformed upstream answer".into(),
                }),
            ),
            question_end: ctx.query.question_end,
        });
    };
    match ctx
        .engine
        .check_response(ctx.peer.ip(), q.name.as_str(), &parsed)
    {
        Decision::Block(b) => {
            Metrics::inc(&sh.metrics.blocked_response);
            log_block(
                sh,
                &ctx.engine,
                ctx.peer,
                ctx.local,
                ctx.proto,
                &q,
                &b,
                "response",
            );
            Some(block_response(&ctx.engine, &ctx.query, &ctx.bytes, &b))
        }
        Decision::Allow { group, .. } => {
            Metrics::inc(&sh.metrics.allowed);
            if let Some(key) = key_of(&ctx.query) {
                sh.cache
                    .insert(sh.now_ms(), key, &resp, &parsed, ctx.generation);
            }
            if sh.log.as_ref().is_some_and(|l| l.log_allowed) {
                let mut ev = event(
                    sh,
                    ctx.peer,
                    ctx.local,
                    ctx.proto,
                    Verdict::Allow,
                    "forwarded".into(),
                );
                detail_query(&mut ev, &q, &ctx.engine.group(group).name);
                ev.detail.insert(
                    "upstream".into(),
                    sh.upstreams[upstream].addr.to_string().into(),
                );
                ev.detail.insert("rcode".into(), parsed.rcode().into());
                ev.detail.insert(
                    "latency_us".into(),
                    (ctx.started.elapsed().as_micros() as u64).into(),
                );
                sh.log_event(ev);
            }
            Some(Outcome {
                bytes: resp,
                question_end: parsed.question_end,
            })
        }
    }
}
