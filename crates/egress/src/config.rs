//! The `rampart egress` configuration (TOML). Unknown keys are errors; every limit has a bounded
//! default. `docs/egress.md` is the reference with an example.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Proxy listeners (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// Transparent-mode listeners: connections redirected here by nft (`redirect`, `dnat` or
    /// `tproxy`); TLS is routed by SNI, HTTP by Host, on the original destination port.
    #[serde(default)]
    pub transparent_listen: Vec<SocketAddr>,
    /// Where to serve Prometheus text metrics (`GET /metrics`); off when absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// Name resolution.
    #[serde(default)]
    pub resolver: ResolverConfig,
    /// Resource limits and timeouts.
    #[serde(default)]
    pub limits: Limits,
    /// Decision-event log (JSON lines).
    #[serde(default)]
    pub log: Option<LogConfig>,
    /// Proxy-auth (Basic) users.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// Named domain deny lists.
    #[serde(default)]
    pub lists: Vec<ListConfig>,
    /// Address rules denied for every source (`CIDR`, `IP`, `IP:port`, `[IPv6]:port`).
    #[serde(default)]
    pub deny_addresses: Vec<String>,
    /// Policy per source, matched in order.
    pub sources: Vec<SourceConfig>,
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, crate::EgressError> {
        toml::from_str(text).map_err(|e| crate::EgressError::Config(e.to_string()))
    }
}

/// Resolver settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResolverConfig {
    /// DNS servers queried over UDP, in order. Empty: the system resolver (getaddrinfo).
    pub servers: Vec<SocketAddr>,
    /// Per-attempt timeout.
    pub timeout_ms: u64,
    /// Attempts per server.
    pub attempts: u32,
    /// Cached names (0 disables the cache).
    pub cache_max_entries: usize,
    /// Cap on the TTL of cached answers.
    pub cache_max_ttl_s: u32,
    /// TTL given to system-resolver answers (getaddrinfo reports none).
    pub system_ttl_s: u32,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            timeout_ms: 2000,
            attempts: 2,
            cache_max_entries: 4096,
            cache_max_ttl_s: 300,
            system_ttl_s: 30,
        }
    }
}

/// Limits on everything that grows with traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Concurrent client connections; beyond it new connections are closed at once.
    pub max_connections: usize,
    /// Largest request or response head (capped at 64 KiB).
    pub max_head_bytes: usize,
    /// Most header fields per head (capped at 100).
    pub max_headers: usize,
    /// Time a client has to send a complete request head (slow-client guard).
    pub head_timeout_ms: u64,
    /// Idle time on a keep-alive client connection between requests.
    pub idle_timeout_ms: u64,
    /// Upstream TCP connect timeout (per address).
    pub connect_timeout_ms: u64,
    /// Time to wait for the upstream response head, and between body reads.
    pub response_timeout_ms: u64,
    /// Time a CONNECT client has to send its TLS ClientHello.
    pub client_hello_timeout_ms: u64,
    /// Idle time after which a tunnel is closed.
    pub tunnel_idle_timeout_ms: u64,
    /// Requests served on one client connection before it is closed.
    pub max_requests_per_connection: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_head_bytes: 32 * 1024,
            max_headers: 100,
            head_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            connect_timeout_ms: 5_000,
            response_timeout_ms: 30_000,
            client_hello_timeout_ms: 5_000,
            tunnel_idle_timeout_ms: 300_000,
            max_requests_per_connection: 10_000,
        }
    }
}

/// Decision log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// File the JSON lines are appended to.
    pub path: PathBuf,
    /// Events queued for the writer; beyond it events are dropped and counted.
    #[serde(default = "default_log_queue")]
    pub queue: usize,
}

fn default_log_queue() -> usize {
    8192
}

/// A proxy-auth user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// User name (the identity in events and in `sources.identities`).
    pub name: String,
    /// Lower-case hex SHA-256 of the password (`printf %s PASS | sha256sum`).
    pub password_sha256: String,
}

/// A named domain list.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// Name referenced by `sources.deny_lists`.
    pub name: String,
    /// File to read (any domain format `rampart-feeds` parses).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// `rampart-feeds` format of the file and entries (`domains`, `hosts`, `adblock`, ...).
    #[serde(default = "default_list_format")]
    pub format: String,
    /// Inline entries (same format).
    #[serde(default)]
    pub entries: Vec<String>,
    /// ATT&CK techniques a hit concerns (e.g. `T1219` for remote-access tools).
    #[serde(default)]
    pub techniques: Vec<String>,
    /// Cap on rules taken from this list.
    #[serde(default = "default_list_max")]
    pub max_entries: usize,
}

fn default_list_format() -> String {
    "domains".into()
}
fn default_list_max() -> usize {
    1_000_000
}

/// What a source's violations do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse requests that break the policy.
    #[default]
    Enforce,
    /// Let them through and record what enforcement would have refused.
    Report,
    /// Skip the policy (destination-address safety still applies).
    Open,
}

/// A user-agent rule: requests whose `User-Agent` matches `pattern` may only go to `allow`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentRule {
    /// Glob over the whole User-Agent (`*` matches any run of characters, case-insensitive).
    pub pattern: String,
    /// Destinations these clients may reach (same syntax as `sources.allow`).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Techniques a refusal concerns.
    #[serde(default)]
    pub techniques: Vec<String>,
}

/// Policy for one source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// Name (in events).
    pub name: String,
    /// Client networks; empty matches every client.
    #[serde(default)]
    pub networks: Vec<IpNet>,
    /// Proxy-auth users this source applies to; empty matches anyone, `"*"` any authenticated
    /// user.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Enforcement mode.
    #[serde(default)]
    pub mode: Mode,
    /// Allowed destinations: `host`, `*.domain` (subdomains), `*`, IP or CIDR, each with an
    /// optional `:port`, `:p1,p2` or `:*` (default ports 80 and 443).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Names of `lists` whose domains are refused (they win over `allow`).
    #[serde(default)]
    pub deny_lists: Vec<String>,
    /// Special-purpose address ranges this source may still reach (`CIDR`, `IP:port`).
    #[serde(default)]
    pub allow_addresses: Vec<String>,
    /// Methods allowed for plain HTTP requests.
    #[serde(default = "default_methods")]
    pub allow_methods: Vec<String>,
    /// Largest request body (Content-Length or chunked total).
    #[serde(default = "default_max_upload")]
    pub max_upload_bytes: u64,
    /// Refuse CONNECT tunnels whose ClientHello carries no SNI.
    #[serde(default = "default_true")]
    pub require_sni: bool,
    /// CONNECT ports where a non-TLS first flight is allowed (e.g. 22); elsewhere refused.
    #[serde(default)]
    pub allow_non_tls_ports: Vec<u16>,
    /// User-agent rules.
    #[serde(default = "default_user_agents")]
    pub user_agents: Vec<UserAgentRule>,
}

fn default_true() -> bool {
    true
}
fn default_max_upload() -> u64 {
    10 * 1024 * 1024
}
/// Methods allowed by default: the ones ordinary web clients send. WebDAV methods (`PROPFIND`,
/// `MKCOL`, `COPY`, `MOVE`, `LOCK`...) and `TRACE` are refused unless listed.
pub fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}
/// Default user-agent rule: BITS (T1197) only to Microsoft update hosts.
pub fn default_user_agents() -> Vec<UserAgentRule> {
    vec![UserAgentRule {
        pattern: "Microsoft BITS/*".into(),
        allow: vec![
            "*.windowsupdate.com".into(),
            "*.update.microsoft.com".into(),
            "*.delivery.mp.microsoft.com".into(),
        ],
        techniques: vec!["T1197".into()],
    }]
}
