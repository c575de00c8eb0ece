//! `rampart waf`'s I/O shell: an HTTP/1.1 and HTTP/2 reverse proxy (hyper 1.x + tokio; h2c by
//! prior knowledge, TLS termination with rustls, `h2` or `http/1.1` by ALPN) that runs every
//! request through the engine, routes by host and path prefix to upstream pools, enforces size
//! and time limits and request-smuggling guards, blocks metadata-SSRF targets itself, and writes
//! one JSON event line per request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::conn::auto;
use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use crate::body::{Request, Response};
use crate::rules::{EngineMode, RuleSet};
use crate::tx::{Engine, TxOptions};
use crate::{files, ssrf, LoadError};

/// Size and time limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest request target.
    pub max_uri_bytes: usize,
    /// Largest header block (names + values).
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest request body.
    pub max_body_bytes: usize,
    /// Largest upstream response body.
    pub max_response_bytes: usize,
    /// Time to receive the request head (slowloris guard).
    pub header_timeout_ms: u64,
    /// Time to receive the request body.
    pub body_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: 8192,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            max_body_bytes: 1 << 20,
            max_response_bytes: 4 << 20,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
        }
    }
}

/// One route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Route name (events carry it).
    pub name: String,
    /// Host to match (without port); absent = any.
    #[serde(default)]
    pub host: Option<String>,
    /// Path prefix; absent = `/`.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Upstream `host:port` addresses, used round-robin.
    pub upstreams: Vec<SocketAddr>,
    /// Upstream connect + response timeout.
    #[serde(default = "default_upstream_timeout")]
    pub timeout_ms: u64,
}

fn default_upstream_timeout() -> u64 {
    30_000
}

/// A rule id or an inclusive range (`942100`, `"942100-942199"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IdSpec {
    /// One id.
    Id(u64),
    /// `"942100"` or `"942100-942199"`.
    Text(String),
}

/// A per-route exclusion: the rules it selects (by id/range or tag) do not run on the route,
/// or, with `targets`, do not inspect those targets there.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exclusion {
    /// Route name; absent = every route.
    #[serde(default)]
    pub route: Option<String>,
    /// Narrower path prefix inside the route.
    #[serde(default)]
    pub path_prefix: Option<String>,
    /// Rule ids or ranges.
    #[serde(default)]
    pub rule_ids: Vec<IdSpec>,
    /// Rule tags (`attack-sqli`, `paranoia-level/2`, …).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Targets to remove from the selected rules (`ARGS:password`); empty = remove the rules.
    #[serde(default)]
    pub targets: Vec<String>,
}

/// An [`Exclusion`] parsed for the evaluator, with where it was written.
#[derive(Debug, Clone)]
pub struct CompiledExclusion {
    /// `file:line` of the `[[exclusions]]` table.
    pub at: String,
    /// Route name, if restricted.
    pub route: Option<String>,
    /// Path prefix, if restricted.
    pub path_prefix: Option<String>,
    /// Selected ids.
    pub ids: crate::rules::IdRanges,
    /// Selected tags.
    pub tags: Vec<String>,
    /// Targets to remove (empty = remove the rules).
    pub targets: Vec<crate::rules::Target>,
    /// Target texts as written (for reports).
    pub target_texts: Vec<String>,
}

impl CompiledExclusion {
    fn applies(&self, route: &str, path: &str) -> bool {
        self.route.as_deref().is_none_or(|r| r == route)
            && self
                .path_prefix
                .as_deref()
                .is_none_or(|p| path.starts_with(p))
    }
}

/// TLS termination: PEM files read at start (a reload keeps the running certificate; changing
/// the files named here needs a restart, as `listen` does).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// Certificate chain, PEM, leaf first.
    pub cert_pem: PathBuf,
    /// Private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_pem: PathBuf,
}

/// `rampart waf` configuration (TOML).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub listen: SocketAddr,
    /// `On` (block) or `DetectionOnly`.
    #[serde(default = "default_mode")]
    pub mode: String,
    /// CRS blocking paranoia level (1–4).
    #[serde(default = "default_pl")]
    pub paranoia_level: u8,
    /// Inbound anomaly threshold (CRS default 5).
    #[serde(default)]
    pub inbound_anomaly_threshold: Option<u32>,
    /// SecLang files in load order (`crs-setup.conf`, `rules/*.conf`, own rules); globs allowed.
    pub rules: Vec<PathBuf>,
    /// Built-in metadata-SSRF protection.
    #[serde(default = "yes")]
    pub ssrf_protection: bool,
    /// Serve HTTPS (HTTP/1.1 over TLS, rustls) instead of plain HTTP.
    #[serde(default)]
    pub tls: Option<TlsFiles>,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// Routes, first match wins.
    pub routes: Vec<Route>,
    /// Per-route rule and target exclusions.
    #[serde(default)]
    pub exclusions: Vec<toml::Spanned<Exclusion>>,
    /// Exclusions checked against the routes (filled by [`Config::from_toml_named`]).
    #[serde(skip)]
    pub compiled_exclusions: Vec<CompiledExclusion>,
}

fn default_mode() -> String {
    "On".into()
}
fn default_pl() -> u8 {
    1
}
fn yes() -> bool {
    true
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// TOML syntax or schema.
    #[error("configuration: {0}")]
    Toml(String),
    /// Semantically invalid.
    #[error("configuration: {0}")]
    Invalid(String),
    /// Rules did not load.
    #[error(transparent)]
    Rules(#[from] LoadError),
    /// Exclusions that could never act (naming no route, no loaded rule, or a target no
    /// selected rule inspects), one `file:line: …` each.
    #[error("{}", .0.join("\n"))]
    Exclusions(Vec<String>),
    /// A `[tls]` certificate or key file that does not read or parse (or a key that does not
    /// go with the certificate); `path` names the file.
    #[error("tls: {}: {reason}", .path.display())]
    Tls {
        /// The PEM file at fault.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

fn compile_exclusion(
    ex: &Exclusion,
    at: &str,
    routes: &[Route],
) -> Result<CompiledExclusion, String> {
    if let Some(r) = &ex.route {
        if !routes.iter().any(|x| &x.name == r) {
            return Err(format!("exclusion names route \"{r}\", which no route has"));
        }
    }
    if let Some(p) = &ex.path_prefix {
        if !p.starts_with('/') {
            return Err(format!(
                "exclusion path_prefix \"{p}\" does not start with /"
            ));
        }
    }
    if ex.rule_ids.is_empty() && ex.tags.is_empty() {
        return Err("exclusion selects no rule (give rule_ids or tags)".into());
    }
    let mut ids = Vec::new();
    for spec in &ex.rule_ids {
        let text = match spec {
            IdSpec::Id(n) => n.to_string(),
            IdSpec::Text(t) => t.clone(),
        };
        ids.extend(crate::rules::parse_ranges(&text)?);
    }
    let mut targets = Vec::new();
    for t in &ex.targets {
        targets.push(crate::rules::parse_ctl_target(t).map_err(|e| format!("target {t}: {e}"))?);
    }
    Ok(CompiledExclusion {
        at: at.to_string(),
        route: ex.route.clone(),
        path_prefix: ex.path_prefix.clone(),
        ids,
        tags: ex.tags.clone(),
        targets,
        target_texts: ex.targets.clone(),
    })
}

/// Every collection a rule's chain inspects.
fn inspected(rule: &crate::rules::Rule) -> Vec<&str> {
    let mut out = Vec::new();
    let mut link = Some(rule);
    while let Some(l) = link {
        out.extend(
            l.targets
                .iter()
                .filter(|t| !t.exclude)
                .map(|t| t.name.as_str()),
        );
        link = l.chained.as_deref();
    }
    out
}

/// The exclusions that can never act against a loaded rule set: an id range or tag that
/// selects no loaded rule, or a target that none of the selected rules inspects.
pub fn check_exclusions(exclusions: &[CompiledExclusion], rs: &RuleSet) -> Vec<String> {
    let mut errors = Vec::new();
    for ex in exclusions {
        for (a, b) in &ex.ids {
            if !rs.rules().any(|r| (*a..=*b).contains(&r.id())) {
                let id = if a == b {
                    a.to_string()
                } else {
                    format!("{a}-{b}")
                };
                errors.push(format!("{}: rule id {id} matches no loaded rule", ex.at));
            }
        }
        for tag in &ex.tags {
            if !rs.rules().any(|r| {
                r.actions
                    .tags
                    .iter()
                    .any(|t| crate::rules::tag_matches(tag, t))
            }) {
                errors.push(format!("{}: tag \"{tag}\" matches no loaded rule", ex.at));
            }
        }
        for (t, text) in ex.targets.iter().zip(&ex.target_texts) {
            let hit = rs.rules().any(|r| {
                (crate::rules::in_ranges(&ex.ids, r.id())
                    || r.actions
                        .tags
                        .iter()
                        .any(|tg| ex.tags.iter().any(|sel| crate::rules::tag_matches(sel, tg))))
                    && inspected(r).contains(&t.name.as_str())
            });
            if !hit {
                errors.push(format!(
                    "{}: target {text} is inspected by none of the selected rules",
                    ex.at
                ));
            }
        }
    }
    errors
}

impl Config {
    /// Parse TOML.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_named("waf.toml", text)
    }

    /// Parse TOML read from `source` (named in `file:line` reports).
    pub fn from_toml_named(source: &str, text: &str) -> Result<Self, ConfigError> {
        let mut c: Config = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        let mut errors = Vec::new();
        for ex in &c.exclusions {
            let line = text[..ex.span().start.min(text.len())]
                .matches('\n')
                .count()
                + 1;
            let at = format!("{source}:{line}");
            match compile_exclusion(ex.get_ref(), &at, &c.routes) {
                Ok(ce) => c.compiled_exclusions.push(ce),
                Err(e) => errors.push(format!("{at}: {e}")),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError::Exclusions(errors));
        }
        if !(1..=4).contains(&c.paranoia_level) {
            return Err(ConfigError::Invalid("paranoia_level must be 1..=4".into()));
        }
        if c.routes.is_empty() || c.routes.iter().any(|r| r.upstreams.is_empty()) {
            return Err(ConfigError::Invalid(
                "at least one route, each with an upstream".into(),
            ));
        }
        if !matches!(c.mode.as_str(), "On" | "DetectionOnly") {
            return Err(ConfigError::Invalid("mode is On or DetectionOnly".into()));
        }
        Ok(c)
    }

    /// Read and parse the `[tls]` certificate chain and key as serving would (PEM, at least
    /// one certificate, a key rustls accepts for it), so a check fails on a file that would
    /// stop the start; `Ok` without `[tls]`.
    pub fn check_tls(&self) -> Result<(), ConfigError> {
        match &self.tls {
            Some(files) => load_tls(files).map(drop),
            None => Ok(()),
        }
    }

    /// Load the rule set the configuration names, with the mode and paranoia settings applied
    /// after the first file (CRS's crs-setup.conf) so they override its defaults.
    pub fn load_rules(&self) -> Result<RuleSet, ConfigError> {
        let mut rs = RuleSet::new();
        let (first, rest) = self
            .rules
            .split_first()
            .ok_or_else(|| ConfigError::Invalid("rules: at least one file".into()))?;
        files::add_files(&mut rs, std::slice::from_ref(first))?;
        let mut settings = format!(
            "SecRuleEngine {}\nSecAction \"id:8800001,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level={}",
            self.mode, self.paranoia_level
        );
        if let Some(t) = self.inbound_anomaly_threshold {
            settings.push_str(&format!(",setvar:tx.inbound_anomaly_score_threshold={t}"));
        }
        settings.push_str("\"\n");
        let dir = first.parent().map(PathBuf::from).unwrap_or_default();
        files::add_inline(&mut rs, "rampart-settings.conf", &settings, &dir)?;
        files::add_files(&mut rs, rest)?;
        rs.finish()?;
        let errors = check_exclusions(&self.compiled_exclusions, &rs);
        if !errors.is_empty() {
            return Err(ConfigError::Exclusions(errors));
        }
        Ok(rs)
    }
}

/// A configuration and the engine built from it; requests hold the one that was current when
/// they arrived, so a reload never changes the rules under an in-flight request.
struct Live {
    config: Config,
    engine: Engine,
}

struct State {
    live: RwLock<Arc<Live>>,
    listen: SocketAddr,
    tls_files: Option<TlsFiles>,
    pool: Pool,
    rr: AtomicUsize,
    seq: AtomicU64,
    events: Mutex<Box<dyn std::io::Write + Send>>,
}

impl State {
    fn current(&self) -> Arc<Live> {
        match self.live.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

/// A running proxy.
pub struct Handle {
    /// Bound address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    state: Arc<State>,
}

/// What a reload changed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Reloaded {
    /// Rules (chain starters) now loaded.
    pub rules: usize,
    /// Load-time warnings of the new rule set.
    pub warnings: Vec<String>,
}

impl Handle {
    /// Stop accepting.
    pub fn shutdown(&self) {
        self.task.abort();
    }

    /// Swap in a new configuration and rule set for requests that arrive from now on, keeping
    /// the listener (requests in flight finish with the rules they started with). On any
    /// error the running configuration stays. The listen address cannot change in place.
    /// Loading the rules is CPU work: call it off the request path (e.g. `spawn_blocking`).
    pub fn reload(&self, config: Config) -> Result<Reloaded, ConfigError> {
        if config.listen != self.state.listen
            && !(config.listen.port() == 0 && config.listen.ip() == self.state.listen.ip())
        {
            return Err(ConfigError::Invalid(format!(
                "listen cannot change on reload ({} -> {}); restart instead",
                self.state.listen, config.listen
            )));
        }
        if config.tls != self.state.tls_files {
            return Err(ConfigError::Invalid(
                "tls cannot change on reload; restart instead".into(),
            ));
        }
        let rs = config.load_rules()?;
        let out = Reloaded {
            rules: rs.rule_count(),
            warnings: rs.warnings.clone(),
        };
        let live = Arc::new(Live {
            engine: Engine::new(rs),
            config,
        });
        match self.state.live.write() {
            Ok(mut g) => *g = live,
            Err(poisoned) => *poisoned.into_inner() = live,
        }
        Ok(out)
    }
}

/// Start the proxy; events go to `events` (one JSON object per line).
pub async fn start(
    config: Config,
    events: Box<dyn std::io::Write + Send>,
) -> Result<Handle, ConfigError> {
    let rs = config.load_rules()?;
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let tls_files = config.tls.clone();
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| ConfigError::Invalid(format!("cannot listen on {}: {e}", config.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let state = Arc::new(State {
        live: RwLock::new(Arc::new(Live {
            engine: Engine::new(rs),
            config,
        })),
        listen: addr,
        tls_files,
        pool: Pool::default(),
        rr: AtomicUsize::new(0),
        seq: AtomicU64::new(0),
        events: Mutex::new(events),
    });
    let accept_state = state.clone();
    let task = tokio::spawn(async move {
        let state = accept_state;
        loop {
            let Ok((stream, remote)) = listener.accept().await else {
                continue;
            };
            let st = state.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let header_timeout =
                    Duration::from_millis(st.current().config.limits.header_timeout_ms);
                match tls {
                    None => serve(st, stream, remote).await,
                    Some(acceptor) => {
                        // The handshake counts against the request-head time limit.
                        if let Ok(Ok(s)) =
                            tokio::time::timeout(header_timeout, acceptor.accept(stream)).await
                        {
                            serve(st, s, remote).await;
                        }
                    }
                }
            });
        }
    });
    Ok(Handle { addr, task, state })
}

/// Serve one client connection (plain or TLS): HTTP/1.1, or HTTP/2 when the client starts
/// with the HTTP/2 preface (h2c prior knowledge, or `h2` chosen by ALPN over TLS).
async fn serve<S>(st: Arc<State>, stream: S, remote: SocketAddr)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = st.current().config.limits.clone();
    let header_timeout = Duration::from_millis(limits.header_timeout_ms);
    let svc = service_fn(move |req| {
        let st = st.clone();
        async move { Ok::<_, std::convert::Infallible>(handle(st, req, remote).await) }
    });
    let mut builder = auto::Builder::new(hyper_util::rt::TokioExecutor::new());
    builder
        .http1()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(hyper_util::rt::TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(128);
    let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
}

/// The TLS acceptor for `files`: certificate chain and key from PEM, ALPN `http/1.1`.
fn load_tls(files: &TlsFiles) -> Result<tokio_rustls::TlsAcceptor, ConfigError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |what: &std::path::Path, e: String| ConfigError::Tls {
        path: what.to_path_buf(),
        reason: e,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert_pem)
        .map_err(|e| bad(&files.cert_pem, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&files.cert_pem, e.to_string()))?;
    if certs.is_empty() {
        return Err(bad(&files.cert_pem, "no certificate in the file".into()));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_pem)
        .map_err(|e| bad(&files.key_pem, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Invalid(format!("tls: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(&files.cert_pem, e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}

fn simple(status: u16, body: &str) -> hyper::Response<Full<Bytes>> {
    let mut r = hyper::Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::FORBIDDEN);
    r
}

fn pick_route<'a>(routes: &'a [Route], host: &str, path: &str) -> Option<&'a Route> {
    routes.iter().find(|r| {
        r.host
            .as_deref()
            .is_none_or(|h| h.eq_ignore_ascii_case(host))
            && path.starts_with(r.path_prefix.as_deref().unwrap_or("/"))
    })
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
];

struct Event {
    status: u16,
    decision: &'static str,
    route: String,
    reason: Option<String>,
    ssrf: Option<&'static str>,
}

async fn handle(
    st: Arc<State>,
    req: hyper::Request<Incoming>,
    remote: SocketAddr,
) -> hyper::Response<Full<Bytes>> {
    let live = st.current();
    let lim = &live.config.limits;
    let (parts, body) = req.into_parts();
    let target = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut wreq = Request {
        method: parts.method.as_str().to_string(),
        target: target.as_bytes().to_vec(),
        protocol: format!("{:?}", parts.version),
        remote_addr: remote.ip().to_string(),
        remote_port: remote.port(),
        server_port: st.listen.port(),
        ..Request::default()
    };
    let mut header_bytes = 0usize;
    // HTTP/2 carries the host in `:authority`: present it as the Host header, to the rules
    // and to the upstream (HTTP/1.1), as an HTTP/1.1 request would have it.
    let mut parts = parts;
    if !parts.headers.contains_key(hyper::header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = hyper::header::HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(hyper::header::HOST, v);
            }
        }
    }
    for (k, v) in &parts.headers {
        header_bytes += k.as_str().len() + v.len();
        wreq.headers
            .push((k.as_str().to_string(), v.as_bytes().to_vec()));
    }
    let host = wreq
        .header("host")
        .map(|h| {
            String::from_utf8_lossy(h)
                .split(':')
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let route = pick_route(&live.config.routes, &host, &path).cloned();
    let route_name = route.as_ref().map(|r| r.name.clone()).unwrap_or_default();
    let reject = |status: u16, reason: &str, wreq: &Request| {
        emit(
            &st,
            wreq,
            &[],
            None,
            &Event {
                status,
                decision: "reject",
                route: route_name.clone(),
                reason: Some(reason.to_string()),
                ssrf: None,
            },
        );
        simple(status, reason)
    };
    if target.len() > lim.max_uri_bytes {
        return reject(414, "request target too long", &wreq);
    }
    if header_bytes > lim.max_header_bytes {
        return reject(431, "request header fields too large", &wreq);
    }
    let has_te = parts.headers.contains_key(hyper::header::TRANSFER_ENCODING);
    let cls: Vec<_> = parts
        .headers
        .get_all(hyper::header::CONTENT_LENGTH)
        .iter()
        .collect();
    if has_te && !cls.is_empty() {
        return reject(400, "both Content-Length and Transfer-Encoding", &wreq);
    }
    if cls.windows(2).any(|w| w[0] != w[1]) {
        return reject(400, "conflicting Content-Length headers", &wreq);
    }
    let collected = tokio::time::timeout(
        Duration::from_millis(lim.body_timeout_ms),
        Limited::new(body, lim.max_body_bytes).collect(),
    )
    .await;
    wreq.body = match collected {
        Ok(Ok(b)) => b.to_bytes().to_vec(),
        Ok(Err(_)) => return reject(413, "request body too large", &wreq),
        Err(_) => return reject(408, "request body timeout", &wreq),
    };
    let opts = TxOptions {
        unique_id: format!("r{}", st.seq.fetch_add(1, Ordering::Relaxed)),
        now_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    };
    let mut tx = live.engine.transaction(&wreq, &opts);
    for ex in &live.config.compiled_exclusions {
        if ex.applies(&route_name, &path) {
            tx.exclude(&ex.ids, &ex.tags, &ex.targets);
        }
    }
    tx.process_request(&wreq);
    let blocking = tx.engine_mode() == EngineMode::On;
    let ssrf_hit = if live.config.ssrf_protection {
        std::iter::once(wreq.target.as_slice())
            .chain(wreq.headers.iter().map(|(_, v)| v.as_slice()))
            .chain(std::iter::once(wreq.body.as_slice()))
            .find_map(ssrf::scan)
    } else {
        None
    };
    let finish = |tx: &mut crate::tx::Transaction<'_>, ev: Event| {
        tx.finish();
        emit(&st, &wreq, &tx.matched, Some(tx), &ev);
    };
    if let Some(i) = tx.intervention.clone() {
        finish(
            &mut tx,
            Event {
                status: i.status,
                decision: "block",
                route: route_name,
                reason: None,
                ssrf: ssrf_hit,
            },
        );
        return simple(i.status, "blocked by rampart waf\n");
    }
    if let (Some(what), true) = (ssrf_hit, blocking) {
        finish(
            &mut tx,
            Event {
                status: 403,
                decision: "block",
                route: route_name,
                reason: Some(format!("metadata SSRF target: {what}")),
                ssrf: ssrf_hit,
            },
        );
        return simple(403, "blocked by rampart waf\n");
    }
    let Some(route) = route else {
        finish(
            &mut tx,
            Event {
                status: 404,
                decision: "reject",
                route: String::new(),
                reason: Some("no route".into()),
                ssrf: ssrf_hit,
            },
        );
        return simple(404, "no route\n");
    };
    tx.release_caches();
    let upstream = route.upstreams[st.rr.fetch_add(1, Ordering::Relaxed) % route.upstreams.len()];
    let resp = tokio::time::timeout(
        Duration::from_millis(route.timeout_ms),
        forward(
            &st.pool,
            upstream,
            &parts,
            &target,
            wreq.body.clone(),
            lim.max_response_bytes,
        ),
    )
    .await;
    let resp = match resp {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            finish(
                &mut tx,
                Event {
                    status: 502,
                    decision: "error",
                    route: route.name.clone(),
                    reason: Some(e),
                    ssrf: ssrf_hit,
                },
            );
            return simple(502, "bad gateway\n");
        }
        Err(_) => {
            finish(
                &mut tx,
                Event {
                    status: 504,
                    decision: "error",
                    route: route.name.clone(),
                    reason: Some("upstream timeout".into()),
                    ssrf: ssrf_hit,
                },
            );
            return simple(504, "gateway timeout\n");
        }
    };
    tx.process_response(&resp);
    if let Some(i) = tx.intervention.clone() {
        finish(
            &mut tx,
            Event {
                status: i.status,
                decision: "block",
                route: route.name.clone(),
                reason: None,
                ssrf: ssrf_hit,
            },
        );
        return simple(i.status, "blocked by rampart waf\n");
    }
    let decision = if tx.matched.iter().any(|m| m.logged) {
        "detect"
    } else {
        "allow"
    };
    finish(
        &mut tx,
        Event {
            status: resp.status,
            decision,
            route: route.name.clone(),
            reason: None,
            ssrf: ssrf_hit,
        },
    );
    let mut out = hyper::Response::new(Full::new(Bytes::from(resp.body)));
    *out.status_mut() =
        hyper::StatusCode::from_u16(resp.status).unwrap_or(hyper::StatusCode::BAD_GATEWAY);
    for (k, v) in resp.headers {
        if HOP_BY_HOP.contains(&k.to_ascii_lowercase().as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (
            hyper::header::HeaderName::from_bytes(k.as_bytes()),
            hyper::header::HeaderValue::from_bytes(&v),
        ) {
            out.headers_mut().append(n, v);
        }
    }
    out
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle upstream connections kept per upstream address.
const POOL_IDLE_MAX: usize = 64;

/// Keep-alive connections to upstreams, reused across requests (a new TCP connection per
/// request costs more than the proxying itself).
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<SocketAddr, Vec<Sender>>>,
}

impl Pool {
    fn take(&self, upstream: SocketAddr) -> Option<Sender> {
        let mut g = self.idle.lock().ok()?;
        let list = g.get_mut(&upstream)?;
        while let Some(s) = list.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    fn put(&self, upstream: SocketAddr, s: Sender) {
        if let Ok(mut g) = self.idle.lock() {
            let list = g.entry(upstream).or_default();
            if list.len() < POOL_IDLE_MAX {
                list.push(s);
            }
        }
    }
}

async fn connect(upstream: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(upstream)
        .await
        .map_err(|e| format!("connect {upstream}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {upstream}: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn forward(
    pool: &Pool,
    upstream: SocketAddr,
    parts: &hyper::http::request::Parts,
    target: &str,
    body: Vec<u8>,
    max_response_bytes: usize,
) -> Result<Response, String> {
    let body = Bytes::from(body);
    let build = || {
        let mut b = hyper::Request::builder()
            .method(parts.method.clone())
            .uri(target);
        for (k, v) in &parts.headers {
            if HOP_BY_HOP.contains(&k.as_str()) {
                continue;
            }
            b = b.header(k, v);
        }
        b.body(Full::new(body.clone())).map_err(|e| e.to_string())
    };
    let (mut sender, pooled) = match pool.take(upstream) {
        Some(s) => (s, true),
        None => (connect(upstream).await?, false),
    };
    let resp = match sender.send_request(build()?).await {
        Ok(r) => r,
        // A pooled connection the upstream closed while idle: the request was not sent, so
        // one retry on a fresh connection cannot duplicate it.
        Err(e) if pooled && e.is_canceled() => {
            sender = connect(upstream).await?;
            sender
                .send_request(build()?)
                .await
                .map_err(|e| format!("upstream {upstream}: {e}"))?
        }
        Err(e) => return Err(format!("upstream {upstream}: {e}")),
    };
    let (rp, rb) = resp.into_parts();
    let body = Limited::new(rb, max_response_bytes)
        .collect()
        .await
        .map_err(|_| "upstream response too large".to_string())?
        .to_bytes()
        .to_vec();
    let closing = rp
        .headers
        .get(hyper::header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    if !closing {
        pool.put(upstream, sender);
    }
    Ok(Response {
        status: rp.status.as_u16(),
        protocol: format!("{:?}", rp.version),
        headers: rp
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
    })
}

/// ATT&CK techniques for a set of matched rules: T1190 for CRS attack rules, T1552.005 for
/// metadata SSRF (CRS 934110/934120/934190 or the built-in check).
fn techniques(matched: &[crate::tx::MatchedRule], ssrf: bool) -> Vec<&'static str> {
    let mut t = Vec::new();
    if matched
        .iter()
        .any(|m| m.logged && m.tags.iter().any(|tag| tag.starts_with("attack-")))
    {
        t.push("T1190");
    }
    if ssrf
        || matched
            .iter()
            .any(|m| matches!(m.id, 934110 | 934120 | 934190))
    {
        t.push(ssrf::TECHNIQUE);
    }
    t
}

/// One event line. Fields in alphabetical order: the line reads as the `serde_json::Value`
/// map it replaced (sorted keys), without building that tree on every request.
#[derive(serde::Serialize)]
struct EventLine<'a> {
    client: &'a str,
    decision: &'a str,
    event: &'static str,
    matched: Vec<MatchedOut<'a>>,
    messages: Vec<&'a str>,
    method: &'a str,
    reason: Option<&'a str>,
    route: &'a str,
    rule_ids: Vec<u64>,
    scores: Scores,
    ssrf_target: Option<&'static str>,
    status: u16,
    techniques: Vec<&'static str>,
    uri: std::borrow::Cow<'a, str>,
    x_crs_test: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Serialize)]
struct MatchedOut<'a> {
    data: &'a str,
    id: u64,
    severity: Option<u8>,
    var: &'a str,
}

#[derive(serde::Serialize)]
struct Scores {
    inbound: i64,
    lfi: i64,
    outbound: i64,
    rce: i64,
    rfi: i64,
    sql_injection: i64,
    xss: i64,
}

fn emit(
    st: &State,
    req: &Request,
    matched: &[crate::tx::MatchedRule],
    tx: Option<&crate::tx::Transaction<'_>>,
    ev: &Event,
) {
    let score = |k: &str| {
        tx.and_then(|t| t.tx_var(k))
            .map(crate::ops::to_int)
            .unwrap_or(0)
    };
    let logged: Vec<&crate::tx::MatchedRule> = matched.iter().filter(|m| m.logged).collect();
    let line = EventLine {
        client: &req.remote_addr,
        decision: ev.decision,
        event: "waf",
        matched: logged
            .iter()
            .map(|m| MatchedOut {
                data: &m.matched_data,
                id: m.id,
                severity: m.severity,
                var: &m.matched_var_name,
            })
            .collect(),
        messages: logged.iter().map(|m| m.msg.as_str()).collect(),
        method: &req.method,
        reason: ev.reason.as_deref(),
        route: &ev.route,
        rule_ids: logged.iter().map(|m| m.id).collect(),
        scores: Scores {
            inbound: score("blocking_inbound_anomaly_score"),
            lfi: score("lfi_score"),
            outbound: score("blocking_outbound_anomaly_score"),
            rce: score("rce_score"),
            rfi: score("rfi_score"),
            sql_injection: score("sql_injection_score"),
            xss: score("xss_score"),
        },
        ssrf_target: ev.ssrf,
        status: ev.status,
        techniques: techniques(matched, ev.ssrf.is_some()),
        uri: String::from_utf8_lossy(&req.target[..req.target.len().min(2048)]),
        x_crs_test: req.header("x-crs-test").map(String::from_utf8_lossy),
    };
    let mut buf = Vec::with_capacity(512);
    if serde_json::to_writer(&mut buf, &line).is_err() {
        return;
    }
    buf.push(b'\n');
    if let Ok(mut w) = st.events.lock() {
        let _ = w.write_all(&buf);
        let _ = w.flush();
    }
}

use std::io::Write as _;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_validation() {
        let ok = r#"
listen = "127.0.0.1:0"
rules = ["/x/crs-setup.conf"]
[[routes]]
name = "app"
upstreams = ["127.0.0.1:9000"]
"#;
        let c = Config::from_toml(ok).unwrap();
        assert_eq!(c.paranoia_level, 1);
        assert_eq!(c.limits.max_body_bytes, 1 << 20);
        assert!(Config::from_toml(&ok.replace("listen", "lisen")).is_err());
        assert!(Config::from_toml(&format!("paranoia_level = 7\n{ok}")).is_err());
    }

    #[test]
    fn exclusions_that_cannot_act_are_errors() {
        let base = r#"listen = "127.0.0.1:0"
rules = ["/x/r.conf"]
[[routes]]
name = "app"
upstreams = ["127.0.0.1:9000"]
"#;
        let e = Config::from_toml_named(
            "w.toml",
            &format!("{base}[[exclusions]]\nroute = \"nope\"\nrule_ids = [1]\n"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("w.toml:6: exclusion names route \"nope\""),
            "{e}"
        );
        let c = Config::from_toml_named(
            "w.toml",
            &format!(
                "{base}[[exclusions]]\nroute = \"app\"\nrule_ids = [\"10-19\"]\ntargets = [\"ARGS:password\"]\n\
                 [[exclusions]]\nrule_ids = [99]\n\
                 [[exclusions]]\ntags = [\"attack-none\"]\n\
                 [[exclusions]]\nrule_ids = [10]\ntargets = [\"REQUEST_COOKIES:x\"]\n"
            ),
        )
        .unwrap();
        let mut rs = RuleSet::new();
        rs.add_text(
            "r.conf",
            "SecRule ARGS \"@contains evil\" \"id:10,phase:2,deny,tag:'attack-x'\"\n",
            &|_: &str, _: &str| None,
        )
        .unwrap();
        rs.finish().unwrap();
        let errors = check_exclusions(&c.compiled_exclusions, &rs);
        assert_eq!(
            errors,
            vec![
                "w.toml:10: rule id 99 matches no loaded rule".to_string(),
                "w.toml:12: tag \"attack-none\" matches no loaded rule".to_string(),
                "w.toml:14: target REQUEST_COOKIES:x is inspected by none of the selected rules"
                    .to_string(),
            ]
        );

        // Enforcement: the target exclusion stops rule 10 on ARGS:password only.
        let engine = Engine::new(rs);
        let ex = &c.compiled_exclusions[0];
        assert!(ex.applies("app", "/login"));
        assert!(!ex.applies("other", "/login"));
        let req = |q: &str| Request {
            method: "GET".into(),
            target: format!("/login?{q}").into_bytes(),
            protocol: "HTTP/1.1".into(),
            headers: vec![("Host".into(), b"example.test".to_vec())],
            ..Request::default()
        };
        let run = |r: &Request, exclude: bool| {
            let mut tx = engine.transaction(r, &TxOptions::default());
            if exclude {
                tx.exclude(&ex.ids, &ex.tags, &ex.targets);
            }
            tx.process_request(r);
            tx.intervention.is_some()
        };
        assert!(run(&req("password=evil"), false));
        assert!(!run(&req("password=evil"), true));
        assert!(run(&req("user=evil"), true));
        // Without targets the rule does not run at all.
        let mut tx = engine.transaction(&req("user=evil"), &TxOptions::default());
        tx.exclude(&ex.ids, &[], &[]);
        tx.process_request(&req("user=evil"));
        assert!(tx.intervention.is_none());
    }

    #[test]
    fn event_line_is_the_sorted_key_object_it_replaced() {
        let line = EventLine {
            client: "192.0.2.10",
            decision: "block",
            event: "waf",
            matched: vec![MatchedOut {
                data: "x\"y",
                id: 942100,
                severity: Some(2),
                var: "ARGS:q",
            }],
            messages: vec!["SQL Injection"],
            method: "GET",
            reason: None,
            route: "app",
            rule_ids: vec![942100],
            scores: Scores {
                inbound: 5,
                lfi: 0,
                outbound: 0,
                rce: 0,
                rfi: 0,
                sql_injection: 5,
                xss: 0,
            },
            ssrf_target: Some("169.254.169.254"),
            status: 403,
            techniques: vec!["T1190"],
            uri: "/?q=1".into(),
            x_crs_test: Some("t1".into()),
        };
        let value = serde_json::json!({
            "event": "waf", "x_crs_test": "t1", "client": "192.0.2.10", "method": "GET",
            "uri": "/?q=1", "route": "app", "status": 403, "decision": "block", "reason": null,
            "rule_ids": [942100], "messages": ["SQL Injection"],
            "matched": [{"id": 942100, "var": "ARGS:q", "data": "x\"y", "severity": 2}],
            "scores": {"inbound": 5, "outbound": 0, "sql_injection": 5, "xss": 0, "rce": 0,
                       "lfi": 0, "rfi": 0},
            "ssrf_target": "169.254.169.254", "techniques": ["T1190"],
        });
        assert_eq!(serde_json::to_string(&line).unwrap(), value.to_string());
    }

    #[test]
    fn routing() {
        let r = |name: &str, host: Option<&str>, p: Option<&str>| Route {
            name: name.into(),
            host: host.map(str::to_string),
            path_prefix: p.map(str::to_string),
            upstreams: vec!["127.0.0.1:1".parse().unwrap()],
            timeout_ms: 1,
        };
        let routes = vec![
            r("api", Some("api.example.test"), Some("/v1")),
            r("any", None, None),
        ];
        assert_eq!(
            pick_route(&routes, "api.example.test", "/v1/x")
                .unwrap()
                .name,
            "api"
        );
        assert_eq!(
            pick_route(&routes, "api.example.test", "/v2").unwrap().name,
            "any"
        );
    }
}
