//! The pure decision core: which source a client belongs to, whether its request may leave,
//! whether the resolved addresses are safe, and whether a tunnel's ClientHello matches its
//! CONNECT host. No I/O and no clock: the shell passes in everything it observed and records
//! the returned [`Decision`] as one event.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use rampart_feeds::{DomainAction, Scope};
use rampart_ir::TechniqueId;
use serde::Serialize;

use crate::addr::{classify, AddrRule, AddrVerdict, Special};
use crate::config::{Config, Mode, SourceConfig};
use crate::http::{BodyLen, Host};
use crate::tls::Peek;
use crate::EgressError;

/// What happens to the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Forwarded.
    Allow,
    /// Refused.
    Deny,
    /// Forwarded, but enforcement would have refused it (report-only source).
    Report,
}

/// Why (stable snake_case codes via [`Reason::code`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// Every check passed.
    Allowed,
    /// The source is in open mode (only address safety applies).
    OpenMode,
    /// No source matches the client address and identity.
    NoSource,
    /// A source for this client requires proxy authentication and none was given.
    AuthRequired,
    /// Proxy-Authorization was present but wrong.
    AuthFailed,
    /// Destination host not on the source's allowlist.
    HostNotAllowed,
    /// Host allowed, port not.
    PortNotAllowed,
    /// IP-literal destination not covered by an IP/CIDR allow entry.
    RawIpNotAllowed,
    /// Host on a deny list (the list's name).
    DenyList(String),
    /// Method not in `allow_methods`.
    MethodNotAllowed,
    /// A user-agent rule matched and the destination is not among its hosts.
    UserAgentNotAllowed,
    /// Request body larger than `max_upload_bytes`.
    UploadTooLarge,
    /// A resolved address is special-purpose or deny-listed.
    AddressDenied(AddrVerdict),
    /// The name resolved to no address (or resolution failed).
    ResolveFailed,
    /// Connecting to every checked address failed.
    ConnectFailed,
    /// The ClientHello's SNI differs from the CONNECT host (domain fronting).
    SniMismatch,
    /// The ClientHello carries no SNI and the source requires one.
    SniMissing,
    /// The tunnel did not start with a TLS ClientHello.
    NotTls,
    /// The ClientHello is malformed or too large.
    MalformedClientHello,
    /// The request head was malformed (the parser's reason).
    BadRequest(&'static str),
}

impl Reason {
    /// Stable code: `deny_list:NAME`, `address_denied:CLASS`, or the variant in snake_case.
    pub fn code(&self) -> String {
        match self {
            Self::Allowed => "allowed".into(),
            Self::OpenMode => "open_mode".into(),
            Self::NoSource => "no_source".into(),
            Self::AuthRequired => "auth_required".into(),
            Self::AuthFailed => "auth_failed".into(),
            Self::HostNotAllowed => "host_not_allowed".into(),
            Self::PortNotAllowed => "port_not_allowed".into(),
            Self::RawIpNotAllowed => "raw_ip_not_allowed".into(),
            Self::DenyList(name) => format!("deny_list:{name}"),
            Self::MethodNotAllowed => "method_not_allowed".into(),
            Self::UserAgentNotAllowed => "user_agent_not_allowed".into(),
            Self::UploadTooLarge => "upload_too_large".into(),
            Self::AddressDenied(AddrVerdict::DenySpecial(s)) => {
                format!("address_denied:{}", s.name())
            }
            Self::AddressDenied(_) => "address_denied:deny_listed".into(),
            Self::ResolveFailed => "resolve_failed".into(),
            Self::ConnectFailed => "connect_failed".into(),
            Self::SniMismatch => "sni_mismatch".into(),
            Self::SniMissing => "sni_missing".into(),
            Self::NotTls => "not_tls".into(),
            Self::MalformedClientHello => "malformed_client_hello".into(),
            Self::BadRequest(why) => format!("bad_request:{why}"),
        }
    }
}

/// A decision with its reason and the ATT&CK techniques it concerns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Allow, deny or report.
    pub action: Action,
    /// Why.
    pub reason: Reason,
    /// Techniques concerned (empty for plain allows).
    pub techniques: Vec<TechniqueId>,
}

impl Decision {
    /// An allow.
    pub fn allow(reason: Reason) -> Self {
        Self {
            action: Action::Allow,
            reason,
            techniques: Vec::new(),
        }
    }

    /// A refusal regardless of mode (address safety, malformed input, no source).
    pub fn deny(reason: Reason, techniques: &[&str]) -> Self {
        Self {
            action: Action::Deny,
            reason,
            techniques: ids(techniques),
        }
    }

    /// Whether the request goes ahead.
    pub fn proceeds(&self) -> bool {
        self.action != Action::Deny
    }
}

fn ids(list: &[&str]) -> Vec<TechniqueId> {
    list.iter().map(|t| TechniqueId((*t).to_string())).collect()
}

/// A destination pattern's host part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: every name (IP literals still need an IP/CIDR entry).
    AnyName,
    /// `example.com`.
    Exact(String),
    /// `*.example.com`: names strictly below it.
    Below(String),
    /// An IP or CIDR (IP-literal destinations).
    Net(IpNet),
}

/// A destination pattern (`host[:ports]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DestPattern {
    /// Host part.
    pub host: HostPattern,
    /// Allowed ports; `None` = any.
    pub ports: Option<Vec<u16>>,
}

/// Ports a pattern without `:port` allows.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

impl DestPattern {
    /// Parses `host`, `*.domain`, `*`, `IP`, `CIDR`, `[IPv6 or CIDR]`, each with an optional
    /// `:port`, `:p1,p2` or `:*`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let bad = || format!("bad destination pattern {t:?}");
        let (host_text, port_text) = if let Some(rest) = t.strip_prefix('[') {
            let close = rest.find(']').ok_or_else(bad)?;
            let after = &rest[close + 1..];
            let ports = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad()),
            };
            (&rest[..close], ports)
        } else if t.parse::<IpNet>().is_ok() || t.parse::<IpAddr>().is_ok() {
            (t, None)
        } else {
            match t.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (t, None),
            }
        };
        let ports = match port_text {
            None => Some(DEFAULT_PORTS.to_vec()),
            Some("*") => None,
            Some(list) => Some(
                list.split(',')
                    .map(|p| p.trim().parse::<u16>().ok().filter(|p| *p != 0))
                    .collect::<Option<Vec<u16>>>()
                    .ok_or_else(bad)?,
            ),
        };
        let host = if host_text == "*" {
            HostPattern::AnyName
        } else if let Ok(net) = host_text.parse::<IpNet>() {
            HostPattern::Net(net)
        } else if let Ok(ip) = host_text.parse::<IpAddr>() {
            HostPattern::Net(IpNet::from(ip))
        } else if let Some(rest) = host_text.strip_prefix("*.") {
            HostPattern::Below(
                rampart_feeds::normalize_domain(rest).map_err(|e| format!("{}: {e}", bad()))?,
            )
        } else {
            HostPattern::Exact(
                rampart_feeds::normalize_domain(host_text)
                    .map_err(|e| format!("{}: {e}", bad()))?,
            )
        };
        Ok(Self { host, ports })
    }

    fn host_matches(&self, host: &Host) -> bool {
        match (&self.host, host) {
            (HostPattern::AnyName, Host::Name(_)) => true,
            (HostPattern::Exact(p), Host::Name(n)) => p == n,
            (HostPattern::Below(p), Host::Name(n)) => {
                n.len() > p.len() + 1
                    && n.ends_with(p.as_str())
                    && n.as_bytes()[n.len() - p.len() - 1] == b'.'
            }
            (HostPattern::Net(net), Host::Ip(ip)) => net.contains(&crate::addr::canonical(*ip)),
            _ => false,
        }
    }

    fn port_matches(&self, port: u16) -> bool {
        self.ports.as_ref().is_none_or(|p| p.contains(&port))
    }
}

/// Case-insensitive glob where `*` matches any run of characters.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|b| *b == b'*')
}

/// A domain deny list: name → rules at that name.
#[derive(Clone, Debug, Default)]
pub struct DomainList {
    /// List name.
    pub name: String,
    rules: HashMap<String, Vec<(Scope, DomainAction)>>,
    /// Techniques a hit concerns.
    pub techniques: Vec<TechniqueId>,
}

impl DomainList {
    /// Number of names with rules.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the list is empty.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Whether `name` is blocked (an allow exception at the same or a closer name wins).
    pub fn blocks(&self, name: &str) -> bool {
        let mut suffix = name;
        let mut is_self = true;
        loop {
            if let Some(rules) = self.rules.get(suffix) {
                for (scope, action) in rules {
                    let applies = match scope {
                        Scope::Exact => is_self,
                        Scope::Subtree => true,
                        Scope::SubdomainsOnly => !is_self,
                    };
                    if applies {
                        return *action != DomainAction::Allow;
                    }
                }
            }
            match suffix.find('.') {
                Some(i) => {
                    suffix = &suffix[i + 1..];
                    is_self = false;
                }
                None => return false,
            }
        }
    }
}

struct UaRule {
    pattern: String,
    allow: Vec<DestPattern>,
    techniques: Vec<TechniqueId>,
}

/// One compiled source.
pub struct Source {
    /// Name.
    pub name: String,
    networks: Vec<IpNet>,
    identities: Vec<String>,
    /// Mode.
    pub mode: Mode,
    allow: Vec<DestPattern>,
    deny_lists: Vec<usize>,
    allow_addresses: Vec<AddrRule>,
    allow_methods: Vec<String>,
    /// Largest request body.
    pub max_upload_bytes: u64,
    require_sni: bool,
    allow_non_tls_ports: Vec<u16>,
    user_agents: Vec<UaRule>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("name", &self.name).finish()
    }
}

impl Source {
    /// Whether non-TLS tunnels are allowed to `port` (the shell then skips the ClientHello
    /// peek, so server-first protocols work).
    pub fn allows_non_tls(&self, port: u16) -> bool {
        self.mode == Mode::Open || self.allow_non_tls_ports.contains(&port)
    }
}

/// Which source a client is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceMatch {
    /// Index into [`Policy::sources`].
    Source(usize),
    /// A source for this address needs an authenticated identity.
    AuthRequired,
    /// Nothing matches.
    NoSource,
}

/// What the pre-resolution check sees of a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestFacts<'a> {
    /// Whether this is a CONNECT.
    pub connect: bool,
    /// Method.
    pub method: &'a str,
    /// Destination host.
    pub host: &'a Host,
    /// Destination port.
    pub port: u16,
    /// User-Agent, if sent.
    pub user_agent: Option<&'a str>,
    /// Request body framing.
    pub body: BodyLen,
}

/// The compiled policy.
#[derive(Debug)]
pub struct Policy {
    /// Sources in match order.
    pub sources: Vec<Source>,
    /// Deny lists.
    pub lists: Vec<DomainList>,
    users: HashMap<String, [u8; 32]>,
    deny_addresses: Vec<AddrRule>,
}

const T_WEB: &str = "T1071.001";
const T_TOOL_TRANSFER: &str = "T1105";
const T_EXPLOIT_PUBLIC: &str = "T1190";
const T_METADATA: &str = "T1552.005";
const T_EXFIL_ALT: &str = "T1048";
const T_CLOUD_ACCOUNT: &str = "T1537";
const T_PROXY: &str = "T1090";
const T_TUNNEL: &str = "T1572";
const T_BITS: &str = "T1197";

/// The method of BITS upload jobs (`Create-Session`, `Fragment`, `Close-Session` packets). Only
/// BITS sends it, so a refused one is a BITS job whatever its user agent claims.
pub const BITS_UPLOAD_METHOD: &str = "BITS_POST";

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let t = text.trim();
    if t.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in t.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

fn addr_rules(list: &[String]) -> Result<Vec<AddrRule>, EgressError> {
    list.iter()
        .map(|s| {
            AddrRule::parse(s).ok_or_else(|| EgressError::Config(format!("bad address rule {s:?}")))
        })
        .collect()
}

impl Policy {
    /// Compiles a configuration; `list_texts` holds the contents of each list's `path` by list
    /// name (the shell reads the files).
    pub fn build(cfg: &Config, list_texts: &HashMap<String, Vec<u8>>) -> Result<Self, EgressError> {
        let bad = |m: String| EgressError::Config(m);
        let mut lists = Vec::new();
        let mut list_index = HashMap::new();
        for l in &cfg.lists {
            let format: rampart_feeds::Format =
                l.format.parse().map_err(|e: rampart_feeds::FormatError| {
                    bad(format!("list {}: {}", l.name, e.0))
                })?;
            let mut rules: HashMap<String, Vec<(Scope, DomainAction)>> = HashMap::new();
            let mut add = |data: &[u8]| {
                let parsed = rampart_feeds::parse_bytes(data, &format, &l.name);
                for r in parsed.domains {
                    rules.entry(r.name).or_default().push((r.scope, r.action));
                }
            };
            if let Some(text) = list_texts.get(&l.name) {
                add(text);
            }
            if !l.entries.is_empty() {
                add(l.entries.join("\n").as_bytes());
            }
            if rules.len() > l.max_entries {
                return Err(bad(format!(
                    "list {} has {} names, more than max_entries {}",
                    l.name,
                    rules.len(),
                    l.max_entries
                )));
            }
            // Allow exceptions first so they win at the same name.
            for v in rules.values_mut() {
                v.sort_by_key(|(_, a)| *a != DomainAction::Allow);
            }
            if list_index.insert(l.name.clone(), lists.len()).is_some() {
                return Err(bad(format!("duplicate list name {}", l.name)));
            }
            lists.push(DomainList {
                name: l.name.clone(),
                rules,
                techniques: l
                    .techniques
                    .iter()
                    .map(|t| TechniqueId(t.clone()))
                    .collect(),
            });
        }
        let mut users = HashMap::new();
        for u in &cfg.users {
            let hash = parse_hex32(&u.password_sha256).ok_or_else(|| {
                bad(format!(
                    "user {}: password_sha256 is not 64 hex digits",
                    u.name
                ))
            })?;
            if u.name.is_empty() || u.name.contains(':') {
                return Err(bad(format!("user name {:?} is empty or has ':'", u.name)));
            }
            users.insert(u.name.clone(), hash);
        }
        let deny_addresses = addr_rules(&cfg.deny_addresses)?;
        if cfg.sources.is_empty() {
            return Err(bad("at least one [[sources]] entry is needed".into()));
        }
        let mut sources = Vec::new();
        for s in &cfg.sources {
            sources.push(Self::build_source(s, &list_index)?);
        }
        Ok(Self {
            sources,
            lists,
            users,
            deny_addresses,
        })
    }

    fn build_source(
        s: &SourceConfig,
        list_index: &HashMap<String, usize>,
    ) -> Result<Source, EgressError> {
        let bad = |m: String| EgressError::Config(format!("source {}: {m}", s.name));
        let patterns = |list: &[String]| -> Result<Vec<DestPattern>, EgressError> {
            list.iter()
                .map(|p| DestPattern::parse(p).map_err(bad))
                .collect()
        };
        let deny_lists = s
            .deny_lists
            .iter()
            .map(|n| {
                list_index
                    .get(n)
                    .copied()
                    .ok_or_else(|| bad(format!("unknown list {n}")))
            })
            .collect::<Result<_, _>>()?;
        let user_agents = s
            .user_agents
            .iter()
            .map(|u| {
                Ok(UaRule {
                    pattern: u.pattern.clone(),
                    allow: patterns(&u.allow)?,
                    techniques: u
                        .techniques
                        .iter()
                        .map(|t| TechniqueId(t.clone()))
                        .collect(),
                })
            })
            .collect::<Result<_, EgressError>>()?;
        Ok(Source {
            name: s.name.clone(),
            networks: s.networks.clone(),
            identities: s.identities.clone(),
            mode: s.mode,
            allow: patterns(&s.allow)?,
            deny_lists,
            allow_addresses: addr_rules(&s.allow_addresses)?,
            allow_methods: s.allow_methods.clone(),
            max_upload_bytes: s.max_upload_bytes,
            require_sni: s.require_sni,
            allow_non_tls_ports: s.allow_non_tls_ports.clone(),
            user_agents,
        })
    }

    /// Whether any user is configured (the shell then asks clients for credentials).
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Checks a `Proxy-Authorization` value: `Ok(Some(user))` when the Basic credentials are
    /// right, `Ok(None)` when no header was sent, `Err(())` when they are wrong or malformed.
    #[allow(clippy::result_unit_err)]
    pub fn authenticate(&self, header: Option<&[u8]>) -> Result<Option<String>, ()> {
        use base64::Engine;
        let Some(value) = header else {
            return Ok(None);
        };
        let text = std::str::from_utf8(value).map_err(|_| ())?;
        let (scheme, b64) = text.trim().split_once(' ').ok_or(())?;
        if !scheme.eq_ignore_ascii_case("basic") || b64.len() > 1024 {
            return Err(());
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| ())?;
        let raw = String::from_utf8(raw).map_err(|_| ())?;
        let (user, pass) = raw.split_once(':').ok_or(())?;
        let want = self.users.get(user).ok_or(())?;
        let got = ring::digest::digest(&ring::digest::SHA256, pass.as_bytes());
        // Constant-time compare: the hash is secret-derived.
        let diff = got
            .as_ref()
            .iter()
            .zip(want.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        if diff == 0 {
            Ok(Some(user.to_string()))
        } else {
            Err(())
        }
    }

    /// The first source whose networks contain `client` and whose identities admit `identity`.
    pub fn select_source(&self, client: IpAddr, identity: Option<&str>) -> SourceMatch {
        let client = crate::addr::canonical(client);
        let mut auth_would_help = false;
        for (i, s) in self.sources.iter().enumerate() {
            if !(s.networks.is_empty() || s.networks.iter().any(|n| n.contains(&client))) {
                continue;
            }
            let ok = s.identities.is_empty()
                || identity.is_some_and(|id| s.identities.iter().any(|x| x == "*" || x == id));
            if ok {
                return SourceMatch::Source(i);
            }
            if identity.is_none() {
                auth_would_help = true;
            }
        }
        if auth_would_help {
            SourceMatch::AuthRequired
        } else {
            SourceMatch::NoSource
        }
    }

    fn apply_mode(mode: Mode, reason: Reason, techniques: Vec<TechniqueId>) -> Decision {
        let action = match mode {
            Mode::Enforce => Action::Deny,
            Mode::Report | Mode::Open => Action::Report,
        };
        Decision {
            action,
            reason,
            techniques,
        }
    }

    /// Pre-resolution policy: deny lists, allowlist (host, port, raw IP), user agent, method,
    /// upload size. The first violation decides; report-only sources get [`Action::Report`].
    pub fn decide_request(&self, src: usize, facts: &RequestFacts<'_>) -> Decision {
        let Some(s) = self.sources.get(src) else {
            return Decision::deny(Reason::NoSource, &[]);
        };
        if s.mode == Mode::Open {
            return Decision::allow(Reason::OpenMode);
        }
        match self.violation(s, facts) {
            None => Decision::allow(Reason::Allowed),
            Some((reason, techniques)) => Self::apply_mode(s.mode, reason, techniques),
        }
    }

    fn violation(&self, s: &Source, f: &RequestFacts<'_>) -> Option<(Reason, Vec<TechniqueId>)> {
        if let Host::Name(name) = f.host {
            for &li in &s.deny_lists {
                let list = &self.lists[li];
                if list.blocks(name) {
                    let mut t = list.techniques.clone();
                    if t.is_empty() {
                        t = ids(&[T_WEB]);
                    }
                    return Some((Reason::DenyList(list.name.clone()), t));
                }
            }
        }
        let host_hits: Vec<&DestPattern> =
            s.allow.iter().filter(|p| p.host_matches(f.host)).collect();
        if host_hits.is_empty() {
            let reason = match f.host {
                Host::Ip(_) => Reason::RawIpNotAllowed,
                Host::Name(_) => Reason::HostNotAllowed,
            };
            return Some((reason, ids(&[T_WEB, T_TOOL_TRANSFER])));
        }
        if !host_hits.iter().any(|p| p.port_matches(f.port)) {
            return Some((Reason::PortNotAllowed, ids(&[T_WEB])));
        }
        if let Some(ua) = f.user_agent {
            for rule in &s.user_agents {
                if glob_match(&rule.pattern, ua)
                    && !rule
                        .allow
                        .iter()
                        .any(|p| p.host_matches(f.host) && p.port_matches(f.port))
                {
                    let mut t = rule.techniques.clone();
                    if t.is_empty() {
                        t = ids(&[T_WEB]);
                    }
                    return Some((Reason::UserAgentNotAllowed, t));
                }
            }
        }
        if !f.connect && !s.allow_methods.iter().any(|m| m == f.method) {
            let techniques = if f.method == BITS_UPLOAD_METHOD {
                ids(&[T_BITS, T_EXFIL_ALT])
            } else {
                ids(&[T_EXFIL_ALT, T_WEB])
            };
            return Some((Reason::MethodNotAllowed, techniques));
        }
        if let BodyLen::Length(n) = f.body {
            if n > s.max_upload_bytes {
                return Some((Reason::UploadTooLarge, ids(&[T_EXFIL_ALT, T_CLOUD_ACCOUNT])));
            }
        }
        None
    }

    /// The decision when a chunked upload passes `max_upload_bytes` mid-stream.
    pub fn decide_upload_overrun(&self, src: usize) -> Decision {
        let mode = self.sources.get(src).map_or(Mode::Enforce, |s| s.mode);
        if mode == Mode::Open {
            return Decision::allow(Reason::OpenMode);
        }
        Self::apply_mode(
            mode,
            Reason::UploadTooLarge,
            ids(&[T_EXFIL_ALT, T_CLOUD_ACCOUNT]),
        )
    }

    /// Checks every resolved address; returns the addresses to dial (in the given order) or
    /// the refusal. Address safety is enforced in every mode, and one bad address refuses the
    /// whole answer: a name that mixes public and internal addresses is a rebinding attempt.
    pub fn decide_addresses(
        &self,
        src: usize,
        port: u16,
        addrs: &[IpAddr],
    ) -> Result<Vec<IpAddr>, (Decision, Option<IpAddr>)> {
        let allow: &[AddrRule] = self
            .sources
            .get(src)
            .map_or(&[], |s| s.allow_addresses.as_slice());
        if addrs.is_empty() {
            return Err((Decision::deny(Reason::ResolveFailed, &[]), None));
        }
        let mut out = Vec::with_capacity(addrs.len());
        for &ip in addrs {
            let verdict = classify(ip, port, allow, &self.deny_addresses);
            if !verdict.allows() {
                let t: &[&str] = match verdict {
                    AddrVerdict::DenySpecial(Special::Metadata) => &[T_METADATA, T_EXPLOIT_PUBLIC],
                    _ => &[T_EXPLOIT_PUBLIC],
                };
                return Err((Decision::deny(Reason::AddressDenied(verdict), t), Some(ip)));
            }
            let c = crate::addr::canonical(ip);
            if !out.contains(&c) {
                out.push(c);
            }
        }
        Ok(out)
    }

    /// Checks a tunnel's first flight against its CONNECT host. `peek` is what
    /// [`crate::tls::peek_client_hello`] said when the shell stopped reading ([`Peek::Incomplete`]
    /// after a timeout or EOF counts as not TLS).
    pub fn decide_hello(&self, src: usize, host: &Host, port: u16, peek: &Peek) -> Decision {
        let Some(s) = self.sources.get(src) else {
            return Decision::deny(Reason::NoSource, &[]);
        };
        if s.mode == Mode::Open {
            return Decision::allow(Reason::OpenMode);
        }
        let violation = match peek {
            Peek::Hello(h) => match (&h.sni, host) {
                (Some(sni), Host::Name(name)) if sni == name => None,
                (Some(_), _) => Some((Reason::SniMismatch, ids(&[T_PROXY]))),
                (None, Host::Ip(_)) => None,
                (None, Host::Name(_)) if !s.require_sni => None,
                (None, Host::Name(_)) => Some((Reason::SniMissing, ids(&[T_PROXY]))),
            },
            Peek::NotTls | Peek::Incomplete if s.allow_non_tls_ports.contains(&port) => None,
            Peek::NotTls | Peek::Incomplete => Some((Reason::NotTls, ids(&[T_TUNNEL]))),
            Peek::Malformed(_) => Some((Reason::MalformedClientHello, ids(&[T_TUNNEL]))),
        };
        match violation {
            None => Decision::allow(Reason::Allowed),
            Some((reason, t)) => Self::apply_mode(s.mode, reason, t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::ClientHello;

    const CFG: &str = r#"
listen = ["127.0.0.1:0"]
deny_addresses = ["198.51.100.66"]

[[users]]
name = "alice"
# sha256("secret")
password_sha256 = "2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b"

[[lists]]
name = "rat"
entries = ["||anydesk.com^", "||teamviewer.com^", "@@||ok.teamviewer.com^"]
format = "adblock"
techniques = ["T1219"]

[[lists]]
name = "cloud"
entries = ["mega.nz", "transfer.sh"]
techniques = ["T1537"]

[[sources]]
name = "build"
networks = ["192.0.2.0/24"]
identities = ["alice"]
allow = ["*.github.com", "*", "203.0.113.0/24:443"]
deny_lists = ["rat", "cloud"]

[[sources]]
name = "web"
networks = ["192.0.2.0/24", "2001:db8::/32"]
allow = ["api.example.com", "*.updates.example.net:443", "files.example.org:*"]
deny_lists = ["rat", "cloud"]
allow_addresses = ["127.0.0.2/32"]
max_upload_bytes = 1000

[[sources.user_agents]]
pattern = "Microsoft BITS/*"
allow = ["*.updates.example.net:443"]
techniques = ["T1197"]

[[sources]]
name = "audit"
networks = ["198.51.100.0/24"]
mode = "report"
allow = ["api.example.com"]

[[sources]]
name = "lab"
networks = ["203.0.113.0/24"]
mode = "open"
"#;

    fn policy() -> Policy {
        let cfg = Config::from_toml(CFG).unwrap();
        Policy::build(&cfg, &HashMap::new()).unwrap()
    }

    fn name(n: &str) -> Host {
        Host::Name(n.into())
    }

    fn facts<'a>(host: &'a Host, port: u16) -> RequestFacts<'a> {
        RequestFacts {
            connect: false,
            method: "GET",
            host,
            port,
            user_agent: Some("curl/8"),
            body: BodyLen::Empty,
        }
    }

    #[test]
    fn source_selection_and_auth() {
        let p = policy();
        let web: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(p.select_source(web, None), SourceMatch::Source(1));
        assert_eq!(p.select_source(web, Some("alice")), SourceMatch::Source(0));
        assert_eq!(
            p.select_source("::ffff:192.0.2.9".parse().unwrap(), None),
            SourceMatch::Source(1)
        );
        assert_eq!(
            p.select_source("10.9.9.9".parse().unwrap(), None),
            SourceMatch::NoSource
        );
        use base64::Engine;
        let hdr = |s: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(s)
            )
        };
        assert_eq!(
            p.authenticate(Some(hdr("alice:secret").as_bytes())),
            Ok(Some("alice".into()))
        );
        assert_eq!(p.authenticate(Some(hdr("alice:wrong").as_bytes())), Err(()));
        assert_eq!(p.authenticate(Some(hdr("bob:secret").as_bytes())), Err(()));
        assert_eq!(p.authenticate(Some(b"Bearer x")), Err(()));
        assert_eq!(p.authenticate(None), Ok(None));
    }

    #[test]
    fn auth_required_when_only_identity_sources_match() {
        let cfg = Config::from_toml(
            "listen=[\"127.0.0.1:0\"]\n[[sources]]\nname=\"a\"\nidentities=[\"*\"]\nallow=[\"*\"]\n",
        )
        .unwrap();
        let p = Policy::build(&cfg, &HashMap::new()).unwrap();
        let c: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(p.select_source(c, None), SourceMatch::AuthRequired);
        assert_eq!(p.select_source(c, Some("x")), SourceMatch::Source(0));
    }

    #[test]
    fn allowlist_hosts_ports_and_raw_ips() {
        let p = policy();
        let d = |h: &Host, port| p.decide_request(1, &facts(h, port));
        assert_eq!(d(&name("api.example.com"), 443).action, Action::Allow);
        assert_eq!(d(&name("api.example.com"), 80).action, Action::Allow);
        assert_eq!(
            d(&name("api.example.com"), 8443).reason,
            Reason::PortNotAllowed
        );
        assert_eq!(
            d(&name("x.api.example.com"), 443).reason,
            Reason::HostNotAllowed
        );
        assert_eq!(d(&name("a.updates.example.net"), 443).action, Action::Allow);
        assert_eq!(
            d(&name("a.updates.example.net"), 80).reason,
            Reason::PortNotAllowed
        );
        // `*.x` means strictly below x.
        assert_eq!(
            d(&name("updates.example.net"), 443).reason,
            Reason::HostNotAllowed
        );
        assert_eq!(d(&name("files.example.org"), 2222).action, Action::Allow);
        let ip = Host::Ip("203.0.113.5".parse().unwrap());
        assert_eq!(d(&ip, 443).reason, Reason::RawIpNotAllowed);
        // Source 0 allows that CIDR on 443 only, and `*` does not cover IP literals.
        assert_eq!(p.decide_request(0, &facts(&ip, 443)).action, Action::Allow);
        assert_eq!(
            p.decide_request(0, &facts(&ip, 80)).reason,
            Reason::PortNotAllowed
        );
        let other = Host::Ip("8.8.8.8".parse().unwrap());
        assert_eq!(
            p.decide_request(0, &facts(&other, 443)).reason,
            Reason::RawIpNotAllowed
        );
        assert_eq!(
            d(&name("evil.example"), 80).techniques,
            ids(&["T1071.001", "T1105"])
        );
    }

    #[test]
    fn deny_lists_win_and_carry_their_techniques() {
        let p = policy();
        let dec = p.decide_request(0, &facts(&name("anydesk.com"), 443));
        assert_eq!(dec.action, Action::Deny);
        assert_eq!(dec.reason.code(), "deny_list:rat");
        assert_eq!(dec.techniques, ids(&["T1219"]));
        let sub = p.decide_request(0, &facts(&name("x.teamviewer.com"), 443));
        assert_eq!(sub.reason, Reason::DenyList("rat".into()));
        // The adblock exception keeps one name open.
        assert_eq!(
            p.decide_request(0, &facts(&name("ok.teamviewer.com"), 443))
                .action,
            Action::Allow
        );
        let cloud = p.decide_request(0, &facts(&name("mega.nz"), 443));
        assert_eq!(cloud.reason.code(), "deny_list:cloud");
        assert_eq!(cloud.techniques, ids(&["T1537"]));
    }

    #[test]
    fn request_properties() {
        let p = policy();
        let h = name("api.example.com");
        let mut f = facts(&h, 443);
        f.user_agent = Some("Microsoft BITS/7.8");
        let bits = p.decide_request(1, &f);
        assert_eq!(bits.reason, Reason::UserAgentNotAllowed);
        assert_eq!(bits.techniques, ids(&["T1197"]));
        let upd = name("dl.updates.example.net");
        let mut ok = facts(&upd, 443);
        ok.user_agent = Some("microsoft bits/7.8");
        assert_eq!(p.decide_request(1, &ok).action, Action::Allow);
        let mut dav = facts(&h, 443);
        dav.method = "PROPFIND";
        let refused = p.decide_request(1, &dav);
        assert_eq!(refused.reason, Reason::MethodNotAllowed);
        assert_eq!(refused.techniques, ids(&["T1048", "T1071.001"]));
        // A BITS upload is a BITS job even behind a browser's user agent, and even to a host
        // the BITS rule allows (BITS downloads from update hosts; it never uploads to them).
        for (host, ua) in [(&h, "Mozilla/5.0"), (&upd, "Microsoft BITS/7.8")] {
            let mut bits_up = facts(host, 443);
            bits_up.method = "BITS_POST";
            bits_up.user_agent = Some(ua);
            let refused = p.decide_request(1, &bits_up);
            assert_eq!(refused.reason, Reason::MethodNotAllowed, "{ua}");
            assert_eq!(refused.techniques, ids(&["T1197", "T1048"]), "{ua}");
        }
        let mut connect = facts(&h, 443);
        connect.connect = true;
        connect.method = "CONNECT";
        assert_eq!(p.decide_request(1, &connect).action, Action::Allow);
        let mut up = facts(&h, 443);
        up.method = "POST";
        up.body = BodyLen::Length(1001);
        let big = p.decide_request(1, &up);
        assert_eq!(big.reason, Reason::UploadTooLarge);
        assert_eq!(big.techniques, ids(&["T1048", "T1537"]));
        up.body = BodyLen::Length(1000);
        assert_eq!(p.decide_request(1, &up).action, Action::Allow);
        assert_eq!(p.decide_upload_overrun(1).action, Action::Deny);
    }

    #[test]
    fn modes() {
        let p = policy();
        let rep = p.decide_request(2, &facts(&name("evil.example"), 443));
        assert_eq!(rep.action, Action::Report);
        assert_eq!(rep.reason, Reason::HostNotAllowed);
        assert!(rep.proceeds());
        let open = p.decide_request(3, &facts(&name("evil.example"), 443));
        assert_eq!(open, Decision::allow(Reason::OpenMode));
        // Address safety is not a mode question.
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        for src in 0..4 {
            let (d, at) = p.decide_addresses(src, 80, &[meta]).unwrap_err();
            assert_eq!(d.action, Action::Deny);
            assert_eq!(d.reason.code(), "address_denied:metadata");
            assert_eq!(d.techniques, ids(&["T1552.005", "T1190"]));
            assert_eq!(at, Some(meta));
        }
    }

    #[test]
    fn address_checks() {
        let p = policy();
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        assert_eq!(
            p.decide_addresses(1, 80, &[ip("127.0.0.2"), ip("::ffff:127.0.0.2")]),
            Ok(vec![ip("127.0.0.2")])
        );
        for bad in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "10.1.1.1",
            "fd00:ec2::254",
            "::1",
        ] {
            let r = p.decide_addresses(1, 80, &[ip("127.0.0.2"), ip(bad)]);
            assert!(r.is_err(), "{bad}");
        }
        let (d, _) = p
            .decide_addresses(1, 80, &[ip("198.51.100.66")])
            .unwrap_err();
        assert_eq!(d.reason.code(), "address_denied:deny_listed");
        let (d, _) = p.decide_addresses(1, 80, &[]).unwrap_err();
        assert_eq!(d.reason, Reason::ResolveFailed);
        assert_eq!(
            p.decide_addresses(1, 80, &[ip("93.184.215.14")]),
            Ok(vec![ip("93.184.215.14")])
        );
    }

    #[test]
    fn client_hello_checks() {
        let p = policy();
        let hello = |sni: Option<&str>| {
            Peek::Hello(ClientHello {
                sni: sni.map(String::from),
                ech: false,
            })
        };
        let h = name("api.example.com");
        assert_eq!(
            p.decide_hello(1, &h, 443, &hello(Some("api.example.com")))
                .action,
            Action::Allow
        );
        let m = p.decide_hello(1, &h, 443, &hello(Some("evil.example")));
        assert_eq!(
            (m.action, m.reason.clone()),
            (Action::Deny, Reason::SniMismatch)
        );
        assert_eq!(m.techniques, ids(&["T1090"]));
        assert_eq!(
            p.decide_hello(1, &h, 443, &hello(None)).reason,
            Reason::SniMissing
        );
        assert_eq!(
            p.decide_hello(1, &h, 443, &Peek::NotTls).reason,
            Reason::NotTls
        );
        assert_eq!(
            p.decide_hello(1, &h, 443, &Peek::Incomplete).reason,
            Reason::NotTls
        );
        assert_eq!(
            p.decide_hello(1, &h, 443, &Peek::Malformed("x")).reason,
            Reason::MalformedClientHello
        );
        let ipc = Host::Ip("203.0.113.5".parse().unwrap());
        assert_eq!(
            p.decide_hello(0, &ipc, 443, &hello(None)).action,
            Action::Allow
        );
        assert_eq!(
            p.decide_hello(0, &ipc, 443, &hello(Some("a.example")))
                .reason,
            Reason::SniMismatch
        );
        assert_eq!(
            p.decide_hello(2, &h, 443, &hello(Some("x.example"))).action,
            Action::Report
        );
    }

    #[test]
    fn patterns_and_globs() {
        assert!(DestPattern::parse("a.example:0").is_err());
        assert!(DestPattern::parse("a.example:x").is_err());
        assert!(DestPattern::parse("a b.example").is_err());
        let p = DestPattern::parse("[2001:db8::/32]:443,8443").unwrap();
        assert_eq!(p.ports, Some(vec![443, 8443]));
        assert_eq!(
            DestPattern::parse("2001:db8::1").unwrap().ports,
            Some(DEFAULT_PORTS.to_vec())
        );
        assert!(glob_match("Microsoft BITS/*", "Microsoft BITS/7.8"));
        assert!(glob_match("*bits*", "Microsoft BITS/7.8"));
        assert!(!glob_match("Microsoft BITS/*", "curl/8.0"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn config_errors_are_reported() {
        let unknown = Config::from_toml("listen=[]\nsources=[]\nbogus=1\n");
        assert!(unknown.is_err());
        let cfg = Config::from_toml("listen=[]\n[[sources]]\nname=\"a\"\ndeny_lists=[\"nope\"]\n")
            .unwrap();
        assert!(Policy::build(&cfg, &HashMap::new()).is_err());
    }
}
