//! The `rampart dns` configuration (TOML). Every field has a bounded default; see `docs/dns.md`
//! for the schema with an example.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// Whole configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Addresses to serve on (UDP and TCP each). Port 0 picks a free port (tests).
    pub listen: Vec<SocketAddr>,
    /// Upstream resolvers, tried in order (failover); at least one.
    pub upstreams: Vec<UpstreamConfig>,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// Answer cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// Named lists.
    #[serde(default)]
    pub lists: Vec<ListConfig>,
    /// Policy groups, matched by client address in order; a group with no `clients` matches
    /// everyone (put it last).
    #[serde(default)]
    pub groups: Vec<GroupConfig>,
    /// Tunnelling / exfiltration detector.
    #[serde(default)]
    pub detector: DetectorConfig,
    /// Query log (JSON lines of `rampart_events::Event`).
    #[serde(default)]
    pub query_log: Option<QueryLogConfig>,
    /// Prometheus scrape endpoint (plain HTTP, any path answers the counters).
    #[serde(default)]
    pub metrics: Option<MetricsConfig>,
}

/// Prometheus scrape endpoint settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address to serve on (port 0 picks a free port).
    pub listen: SocketAddr,
}

impl Config {
    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, crate::DnsError> {
        toml::from_str(text).map_err(|e| crate::DnsError::Config(e.to_string()))
    }
}

/// Upstream transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProto {
    /// UDP, retrying over TCP when the answer is truncated.
    #[default]
    Udp,
    /// TCP only, on a reused, pipelined connection.
    Tcp,
    /// DNS over TLS (RFC 7858), on a reused, pipelined connection; the certificate is checked
    /// against `ca_file` and `tls_name`.
    Dot,
}

/// CA bundle used for DoT upstreams without `ca_file` (Debian's `ca-certificates`).
pub const DEFAULT_CA_FILE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Address and port.
    pub addr: SocketAddr,
    /// Transport.
    #[serde(default)]
    pub proto: UpstreamProto,
    /// DoT: the name the server's certificate must carry (also sent as SNI). Without it the
    /// certificate must carry the address as an IP SAN.
    #[serde(default)]
    pub tls_name: Option<String>,
    /// DoT: PEM file of the CAs to trust (default [`DEFAULT_CA_FILE`]).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

impl UpstreamConfig {
    /// A UDP upstream at `addr`.
    pub fn udp(addr: SocketAddr) -> Self {
        Self {
            addr,
            proto: UpstreamProto::Udp,
            tls_name: None,
            ca_file: None,
        }
    }
}

/// Limits on everything that grows with traffic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Queries forwarded and not yet answered, across all clients.
    pub max_inflight: usize,
    /// Per-attempt upstream timeout.
    pub upstream_timeout_ms: u64,
    /// Total time spent on one query across failover attempts.
    pub query_timeout_ms: u64,
    /// Concurrent TCP client connections.
    pub max_tcp_connections: usize,
    /// Idle time before a TCP client connection is closed.
    pub tcp_idle_timeout_ms: u64,
    /// Queries answered per TCP connection before it is closed.
    pub max_queries_per_tcp_connection: u32,
    /// Consecutive failures after which an upstream is skipped for `upstream_down_ms`.
    pub upstream_fail_threshold: u32,
    /// How long a failing upstream is skipped.
    pub upstream_down_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_inflight: 4096,
            upstream_timeout_ms: 1500,
            query_timeout_ms: 4000,
            max_tcp_connections: 256,
            tcp_idle_timeout_ms: 10_000,
            max_queries_per_tcp_connection: 1000,
            upstream_fail_threshold: 3,
            upstream_down_ms: 5000,
        }
    }
}

/// Cache settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Entries (0 disables the cache).
    pub max_entries: usize,
    /// TTLs below this are raised (seconds).
    pub min_ttl_s: u32,
    /// TTLs above this are lowered (seconds).
    pub max_ttl_s: u32,
    /// Cap on negative-answer TTL (NXDOMAIN/NODATA, RFC 2308), seconds.
    pub max_negative_ttl_s: u32,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            max_entries: 65_536,
            min_ttl_s: 0,
            max_ttl_s: 86_400,
            max_negative_ttl_s: 900,
        }
    }
}

/// What a list holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListKind {
    /// Domain names (plain, hosts, `*.x`, `=x`, `||x^`, or a feeds format: see `format`).
    Domains,
    /// Regular expressions over the normalised name (Rust `regex` syntax), one per line.
    Regex,
    /// IP prefixes (answers pointing into them are blocked), one per line.
    Ips,
}

/// A named list, read from `path` and/or given inline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// Name referenced by groups.
    pub name: String,
    /// Content kind.
    pub kind: ListKind,
    /// File to read (re-read on reload).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// Inline entries, same syntax as file lines.
    #[serde(default)]
    pub entries: Vec<String>,
    /// Cap on entries taken from this list.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// `domains` lists: `auto` (default; Rampart's mixed line syntax) or a `rampart-feeds`
    /// domain format (`hosts`, `domains`, `domains:subtree`, `wildcard`, `adblock`, `dnsmasq`,
    /// `unbound`, `rpz`, `stix`). See [`crate::lists`].
    #[serde(default)]
    pub format: Option<String>,
}

fn default_max_entries() -> usize {
    5_000_000
}

/// What a block answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockAction {
    /// NXDOMAIN.
    #[default]
    Nxdomain,
    /// REFUSED (clients may retry elsewhere; use with forced DNS).
    Refused,
    /// NOERROR with the sinkhole address for A/AAAA, NODATA for other types.
    Sinkhole,
}

/// A policy group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    /// Name (appears in the query log).
    pub name: String,
    /// Client networks. Empty: every client.
    #[serde(default)]
    pub clients: Vec<IpNet>,
    /// Lists whose names are blocked (`domains` or `regex` lists).
    #[serde(default)]
    pub block: Vec<String>,
    /// Lists whose names are always allowed (win over everything).
    #[serde(default)]
    pub allow: Vec<String>,
    /// `ips` lists: answers pointing into them are blocked.
    #[serde(default)]
    pub block_answer_ips: Vec<String>,
    /// Block action.
    #[serde(default)]
    pub action: BlockAction,
    /// Sinkhole IPv4 address.
    #[serde(default = "default_sink_v4")]
    pub sinkhole_v4: Ipv4Addr,
    /// Sinkhole IPv6 address.
    #[serde(default = "default_sink_v6")]
    pub sinkhole_v6: Ipv6Addr,
    /// TTL of synthesised answers (seconds).
    #[serde(default = "default_block_ttl")]
    pub block_ttl_s: u32,
    /// EDE info code for list blocks (15 Blocked, 16 Censored, 17 Filtered, 18 Prohibited).
    #[serde(default = "default_ede")]
    pub ede_code: u16,
    /// Block public names that answer with private/loopback/link-local/CGNAT/metadata/ULA/mapped
    /// addresses.
    #[serde(default = "default_true")]
    pub rebinding_guard: bool,
    /// Name suffixes allowed to answer with private addresses (internal zones).
    #[serde(default = "default_rebinding_allow")]
    pub rebinding_allow: Vec<String>,
    /// Re-check every CNAME target of an answer against the block lists.
    #[serde(default = "default_true")]
    pub check_cname_chain: bool,
    /// Block the bootstrap names of public DoH/DoT resolvers (and Firefox's canary domain).
    #[serde(default)]
    pub block_doh_bootstrap: bool,
    /// Honour the detector's temporary blocks for this group.
    #[serde(default = "default_true")]
    pub tunnel_block: bool,
}

fn default_sink_v4() -> Ipv4Addr {
    Ipv4Addr::UNSPECIFIED
}
fn default_sink_v6() -> Ipv6Addr {
    Ipv6Addr::UNSPECIFIED
}
fn default_block_ttl() -> u32 {
    60
}
fn default_ede() -> u16 {
    crate::wire::ede::BLOCKED
}
fn default_true() -> bool {
    true
}
fn default_rebinding_allow() -> Vec<String> {
    [
        "lan",
        "local",
        "home.arpa",
        "internal",
        "localdomain",
        "in-addr.arpa",
        "ip6.arpa",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

impl GroupConfig {
    /// A group with defaults and the given name.
    pub fn named(name: &str) -> Self {
        Self {
            name: name.to_string(),
            clients: Vec::new(),
            block: Vec::new(),
            allow: Vec::new(),
            block_answer_ips: Vec::new(),
            action: BlockAction::default(),
            sinkhole_v4: default_sink_v4(),
            sinkhole_v6: default_sink_v6(),
            block_ttl_s: default_block_ttl(),
            ede_code: default_ede(),
            rebinding_guard: true,
            rebinding_allow: default_rebinding_allow(),
            check_cname_chain: true,
            block_doh_bootstrap: false,
            tunnel_block: true,
        }
    }

    /// Whether `client` belongs to this group.
    pub fn contains(&self, client: IpAddr) -> bool {
        self.clients.is_empty() || self.clients.iter().any(|n| n.contains(&client))
    }
}

/// Detector settings (see `docs/dns.md` for how they were chosen).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectorConfig {
    /// Run the detector.
    pub enabled: bool,
    /// Information budget per (client, registered domain), in bits of unique-name entropy.
    pub budget_bits: f64,
    /// Budget refill: the bucket drains this many bits per second (a leak slower than this is
    /// never flagged).
    pub drain_bits_per_s: f64,
    /// Unique subdomains needed before the budget can flag.
    pub min_unique: u32,
    /// Weight of bits from TXT/NULL/MX/CNAME/SRV/ANY/private-type queries.
    pub odd_type_weight: f64,
    /// NULL-type queries with unique names that flag on their own.
    pub null_unique_flag: u32,
    /// Most (client, domain) states kept; the least recently seen are evicted beyond it.
    pub max_states: usize,
    /// Temporary block after a detection, seconds (0: alert only).
    pub block_s: u64,
    /// Registered domains never scored (DNSBLs, AV lookups; reverse zones are always exempt).
    pub exempt: Vec<String>,
    /// Public suffix list file; the built-in fallback is used when absent or unreadable.
    pub psl_path: Option<PathBuf>,
}

impl Default for DetectorConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            budget_bits: 2000.0,
            drain_bits_per_s: 1.0,
            min_unique: 16,
            odd_type_weight: 2.0,
            null_unique_flag: 3,
            max_states: 65_536,
            block_s: 0,
            exempt: [
                "spamhaus.org",
                "sorbs.net",
                "spamcop.net",
                "barracudacentral.org",
                "sophosxl.net",
                "mcafee.com",
                "surbl.org",
                "uribl.com",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            psl_path: Some(PathBuf::from(crate::psl::DEBIAN_PSL_PATH)),
        }
    }
}

/// Query log settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryLogConfig {
    /// File to append JSON lines to; rotated to `<path>.1` at `max_bytes`.
    pub path: PathBuf,
    /// Rotation size.
    #[serde(default = "default_log_bytes")]
    pub max_bytes: u64,
    /// Log allowed queries too (blocks and detections are always logged).
    #[serde(default)]
    pub log_allowed: bool,
    /// Events buffered between the resolver and the writer; more are dropped and counted.
    #[serde(default = "default_log_queue")]
    pub queue: usize,
}

fn default_log_bytes() -> u64 {
    64 * 1024 * 1024
}
fn default_log_queue() -> usize {
    8192
}
