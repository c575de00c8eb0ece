//! Scenarios as data: one TOML file per scenario under `lab/scenarios/`, each naming its ATT&CK
//! techniques and its cases — the attack (expected blocked) and its legitimate twin (expected
//! allowed) — as traffic between named hosts of the topology.

use serde::{Deserialize, Serialize};

use crate::flood::{FLOOD_DURATION_MAX_MS, FLOOD_RATE_MAX_PPS, LEGIT_CONNECTIONS_MAX};
use crate::payload::Payload;
use crate::LabError;

/// Most knock packets before one case.
pub const KNOCKS_MAX: usize = 16;
/// Largest ICMP echo payload a case may send (below every lab MTU).
pub const ICMP_BYTES_MAX: u16 = 1_400;

/// Upper bound on cases in one scenario file (Why: keeps one file's run under a few seconds).
pub const CASES_PER_SCENARIO_MAX: usize = 16;

/// The scenarios shipped with Rampart, embedded so the binary runs the lab from anywhere.
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "admin-ingress.toml",
        include_str!("../../../lab/scenarios/admin-ingress.toml"),
    ),
    (
        "application-flood.toml",
        include_str!("../../../lab/scenarios/application-flood.toml"),
    ),
    (
        "arp-inspection.toml",
        include_str!("../../../lab/scenarios/arp-inspection.toml"),
    ),
    (
        "anonymity.toml",
        include_str!("../../../lab/scenarios/anonymity.toml"),
    ),
    (
        "bits-jobs.toml",
        include_str!("../../../lab/scenarios/bits-jobs.toml"),
    ),
    (
        "cloud-metadata.toml",
        include_str!("../../../lab/scenarios/cloud-metadata.toml"),
    ),
    (
        "cloud-storage.toml",
        include_str!("../../../lab/scenarios/cloud-storage.toml"),
    ),
    (
        "cloud-transfer.toml",
        include_str!("../../../lab/scenarios/cloud-transfer.toml"),
    ),
    (
        "dhcp-snooping.toml",
        include_str!("../../../lab/scenarios/dhcp-snooping.toml"),
    ),
    (
        "dns-resolvers.toml",
        include_str!("../../../lab/scenarios/dns-resolvers.toml"),
    ),
    (
        "encrypted-exfil.toml",
        include_str!("../../../lab/scenarios/encrypted-exfil.toml"),
    ),
    (
        "file-transfer.toml",
        include_str!("../../../lab/scenarios/file-transfer.toml"),
    ),
    (
        "flood-ban.toml",
        include_str!("../../../lab/scenarios/flood-ban.toml"),
    ),
    (
        "known-bad.toml",
        include_str!("../../../lab/scenarios/known-bad.toml"),
    ),
    (
        "legacy-name-resolution.toml",
        include_str!("../../../lab/scenarios/legacy-name-resolution.toml"),
    ),
    (
        "mail-egress.toml",
        include_str!("../../../lab/scenarios/mail-egress.toml"),
    ),
    (
        "mqtt.toml",
        include_str!("../../../lab/scenarios/mqtt.toml"),
    ),
    (
        "name-poisoning.toml",
        include_str!("../../../lab/scenarios/name-poisoning.toml"),
    ),
    (
        "port-knocking.toml",
        include_str!("../../../lab/scenarios/port-knocking.toml"),
    ),
    (
        "program-egress.toml",
        include_str!("../../../lab/scenarios/program-egress.toml"),
    ),
    (
        "protocols-on-odd-ports.toml",
        include_str!("../../../lab/scenarios/protocols-on-odd-ports.toml"),
    ),
    (
        "public-server-egress.toml",
        include_str!("../../../lab/scenarios/public-server-egress.toml"),
    ),
    (
        "reflection-amplification.toml",
        include_str!("../../../lab/scenarios/reflection-amplification.toml"),
    ),
    ("rdp.toml", include_str!("../../../lab/scenarios/rdp.toml")),
    (
        "segmentation.toml",
        include_str!("../../../lab/scenarios/segmentation.toml"),
    ),
    (
        "service-exploitation.toml",
        include_str!("../../../lab/scenarios/service-exploitation.toml"),
    ),
    (
        "smb-egress.toml",
        include_str!("../../../lab/scenarios/smb-egress.toml"),
    ),
    (
        "smb1.toml",
        include_str!("../../../lab/scenarios/smb1.toml"),
    ),
    (
        "socket-filters.toml",
        include_str!("../../../lab/scenarios/socket-filters.toml"),
    ),
    (
        "snmp-management.toml",
        include_str!("../../../lab/scenarios/snmp-management.toml"),
    ),
    (
        "stateful-ingress.toml",
        include_str!("../../../lab/scenarios/stateful-ingress.toml"),
    ),
    (
        "syn-flood.toml",
        include_str!("../../../lab/scenarios/syn-flood.toml"),
    ),
    (
        "tunnels-on-standard-ports.toml",
        include_str!("../../../lab/scenarios/tunnels-on-standard-ports.toml"),
    ),
    ("vnc.toml", include_str!("../../../lab/scenarios/vnc.toml")),
    (
        "webdav-egress.toml",
        include_str!("../../../lab/scenarios/webdav-egress.toml"),
    ),
    (
        "web-exploitation.toml",
        include_str!("../../../lab/scenarios/web-exploitation.toml"),
    ),
];

/// One scenario file.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Stable id (the file stem).
    pub id: String,
    /// ATT&CK techniques the scenario exercises.
    pub techniques: Vec<String>,
    /// One sentence on what is proven.
    pub summary: String,
    /// Cases, attack and legitimate twin.
    #[serde(rename = "case")]
    pub cases: Vec<Case>,
}

/// One flow to play.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Case {
    /// What the case does.
    pub name: String,
    /// Client host.
    pub from: String,
    /// Server host (`gw` = the gateway itself).
    pub to: String,
    /// What is played (default `flow`: an exchange of `traffic`).
    #[serde(default)]
    pub kind: CaseKind,
    /// `tcp/PORT`, `udp/PORT` or `icmp/echo` (flows only).
    #[serde(default)]
    pub traffic: String,
    /// Expected result.
    pub expect: Expectation,
    /// Families to play; default both.
    #[serde(default = "both_families")]
    pub families: Vec<FamilyName>,
    /// What the client and server say (default: the lab's own request and reply lines).
    #[serde(default)]
    pub payload: Payload,
    /// ICMP echo payload size in bytes (`icmp/echo` only; default: ping's 56).
    #[serde(default)]
    pub icmp_bytes: Option<u16>,
    /// Packets the client sends to the server first (`tcp/PORT` SYNs, `udp/PORT` datagrams):
    /// a port-knocking sequence that must open nothing.
    #[serde(default)]
    pub knock: Vec<String>,
    /// Run the client as its own process on the client host (tcp flows only): as a uid, and/or
    /// as a program the per-program jail holds (its cgroup is what policy rules match).
    #[serde(default)]
    pub process: Option<ClientProcess>,
    /// A detection the L2 guard must report while the case plays (`detail.kind` of a guard
    /// event, e.g. `name_poisoner`); the case fails without it.
    #[serde(default)]
    pub detection: Option<String>,
    /// The client's source port (`udp/PORT` flows only; default: an ephemeral port): what
    /// an amplifier's reflected answer comes from (53 for DNS, 123 for NTP, 11211 for
    /// memcached), so a policy must judge it by state, not by the well-known source port.
    #[serde(default)]
    pub from_port: Option<u16>,
    /// Play the case as a flood: a flooder sends SYNs to the server's port while the client
    /// runs many exchanges; the case is allowed when enough of them complete.
    #[serde(default)]
    pub flood: Option<Flood>,
    /// `http` cases: the component the request goes through.
    #[serde(default)]
    pub via: Option<Via>,
    /// `http` cases: the request the client sends.
    #[serde(default)]
    pub http: Option<HttpRequest>,
}

/// The Rampart component an `http` case's request goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// `rampart egress` on the range's `egress-proxy` host (tcp/8080, the baseline's
    /// `http-alt`): the client sends an absolute-form request to it; `to` is the origin that
    /// serves the URL's name (the lab's DNS answers it with `to`'s addresses) on the case's
    /// port.
    Egress,
    /// `rampart waf` on `to` at the case's port, in front of the lab's web application on
    /// `to` (tcp/[`crate::component::APP_PORT`]): the client sends an origin-form request.
    Waf,
}

impl Via {
    /// Lower-case name (`egress`, `waf`).
    pub fn label(self) -> &'static str {
        match self {
            Via::Egress => "egress",
            Via::Waf => "waf",
        }
    }
}

/// An HTTP/1.1 request, as the client puts it on the wire.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpRequest {
    /// Method (`GET`, `HEAD`, `POST`, `BITS_POST`, ...); default `GET`.
    #[serde(default = "default_method")]
    pub method: String,
    /// Host name of the URL (and the `Host` header).
    pub host: String,
    /// Path and query, already percent-encoded as sent (starts with `/`).
    pub path: String,
    /// Further header lines, `Name: value` (the lab adds `Host`, `Content-Length` and
    /// `Connection: close`).
    #[serde(default)]
    pub headers: Vec<String>,
    /// Request body (sent with its `Content-Length`).
    #[serde(default)]
    pub body: String,
}

fn default_method() -> String {
    "GET".into()
}

/// Longest method of an `http` case.
pub const HTTP_METHOD_MAX: usize = 32;
/// Longest path of an `http` case.
pub const HTTP_PATH_MAX: usize = 2_048;
/// Most extra header lines of an `http` case.
pub const HTTP_HEADERS_MAX: usize = 16;
/// Longest header line or body of an `http` case.
pub const HTTP_FIELD_MAX: usize = 4_096;

impl HttpRequest {
    /// What is wrong with it, if anything: a token method, a DNS-style host, a printable
    /// path starting with `/`, `Name: value` headers without CR/LF, bounded sizes.
    pub fn problem(&self) -> Option<String> {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        };
        let printable = |s: &str| s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if self.method.len() > HTTP_METHOD_MAX || !token(&self.method) {
            return Some(format!(
                "method `{}` is not a token of at most {HTTP_METHOD_MAX} bytes",
                self.method
            ));
        }
        if self.host.is_empty()
            || self.host.len() > 253
            || !self
                .host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b))
        {
            return Some(format!("host `{}` is not a lower-case DNS name", self.host));
        }
        if !self.path.starts_with('/')
            || self.path.len() > HTTP_PATH_MAX
            || !printable(&self.path)
            || self.path.contains(' ')
        {
            return Some(format!(
                "path `{}` is not a percent-encoded /path of at most {HTTP_PATH_MAX} bytes",
                self.path
            ));
        }
        if self.headers.len() > HTTP_HEADERS_MAX {
            return Some(format!("at most {HTTP_HEADERS_MAX} headers"));
        }
        for h in &self.headers {
            let ok = h.len() <= HTTP_FIELD_MAX
                && printable(h)
                && h.split_once(": ").is_some_and(|(name, _)| token(name));
            if !ok {
                return Some(format!("header `{h}` is not `Name: value`"));
            }
        }
        if self.body.len() > HTTP_FIELD_MAX {
            return Some(format!("the body is over {HTTP_FIELD_MAX} bytes"));
        }
        None
    }
}

/// What a case plays.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum CaseKind {
    /// An exchange of `traffic` between two hosts (the default).
    #[default]
    Flow,
    /// `from` broadcasts a DHCPDISCOVER; allowed when an offer from `to` reaches it (`gw`: the
    /// gateway's dnsmasq; a host: rogue offers for the client's transaction sent from there).
    Dhcp,
    /// `from` claims the gateway's IPv4 address towards `to` with forged ARP; allowed when
    /// `to`'s neighbour entry for the gateway ends up with `from`'s MAC (`from = "gw"`: the
    /// gateway's own ARP, allowed when the entry has the gateway's MAC).
    ArpSpoof,
    /// `from` sends `http` through the component `via` names; allowed when the origin served
    /// it and its answer reached the client. `detection` names a technique the component's
    /// event for the request must carry.
    Http,
    /// A poisoner on `to` answers every LLMNR/NBT-NS/mDNS query with its own address while
    /// `from` asks LLMNR for a name (over the case's family); allowed when an answer reaches
    /// `from`.
    NamePoison,
}

impl CaseKind {
    /// Cases the L2 guard is started for.
    pub fn is_l2(self) -> bool {
        !matches!(self, CaseKind::Flow | CaseKind::Http)
    }
}

/// The client as its own process.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClientProcess {
    /// Run as this uid (and gid); default root.
    #[serde(default)]
    pub uid: Option<u32>,
    /// Run as this program of the jail (a copy of the shell the jail holds at exec and puts in
    /// cgroup `rampart.jail/<program>`); default: the system shell.
    #[serde(default)]
    pub program: Option<String>,
}

/// Longest jail program name (the jail's own limit).
pub const PROGRAM_NAME_MAX: usize = 64;

/// A SYN flood played during a case.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Flood {
    /// Host whose namespace sends the flood.
    pub from: String,
    /// `random` spoofed sources, or the flooding host's `own` address.
    pub sources: FloodSourceKind,
    /// SYNs per second.
    pub rate_pps: u32,
    /// How long the flood lasts.
    pub duration_ms: u32,
    /// Legitimate exchanges the client runs during the flood.
    pub connections: u32,
    /// The case counts as allowed when at least this share of them complete (0-1).
    #[serde(default = "default_success")]
    pub success_threshold: f64,
    /// With `own` sources: the flooding address must be in a ban set within this many ms.
    #[serde(default)]
    pub ban_within_ms: Option<u64>,
    /// An application-layer flood instead of raw SYNs: the flooder completes TCP handshakes
    /// from its own address and sends the case's request on every connection (needs
    /// `sources = "own"`: a spoofed source cannot complete a handshake).
    #[serde(default)]
    pub requests: bool,
    /// Turn SYN cookies off in the server's namespace for the case (a server that cannot
    /// protect itself, like many appliances), restored afterwards.
    #[serde(default)]
    pub server_without_syncookies: bool,
}

fn default_success() -> f64 {
    0.99
}

/// Where flood packets come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FloodSourceKind {
    /// Random spoofed sources.
    Random,
    /// The flooding host's own address.
    Own,
}

fn both_families() -> Vec<FamilyName> {
    vec![FamilyName::Ipv4, FamilyName::Ipv6]
}

/// An address family to play a case in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FamilyName {
    /// IPv4.
    Ipv4,
    /// IPv6.
    Ipv6,
}

/// Expected or observed outcome of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Expectation {
    /// The exchange completes.
    Allowed,
    /// The exchange does not complete.
    Blocked,
}

/// Parsed traffic of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Traffic {
    /// A TCP connection with a request and a reply.
    Tcp(u16),
    /// A UDP datagram and its reply.
    Udp(u16),
    /// ICMP (v6) echo request and reply.
    IcmpEcho,
}

impl Traffic {
    /// Parse `tcp/445`, `udp/53`, `icmp/echo`.
    pub fn parse(text: &str) -> Option<Self> {
        let (proto, rest) = text.split_once('/')?;
        match proto {
            "tcp" => rest.parse().ok().filter(|p| *p != 0).map(Traffic::Tcp),
            "udp" => rest.parse().ok().filter(|p| *p != 0).map(Traffic::Udp),
            "icmp" if rest == "echo" => Some(Traffic::IcmpEcho),
            _ => None,
        }
    }
}

impl Scenario {
    /// Parse one scenario file; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self, LabError> {
        let scenario: Scenario = toml::from_str(text).map_err(|e| LabError::Scenario {
            file: file.into(),
            message: e.to_string(),
        })?;
        let bad = |message: String| LabError::Scenario {
            file: file.into(),
            message,
        };
        if scenario.cases.is_empty() || scenario.cases.len() > CASES_PER_SCENARIO_MAX {
            return Err(bad(format!(
                "a scenario has 1 to {CASES_PER_SCENARIO_MAX} cases, this one {}",
                scenario.cases.len()
            )));
        }
        for technique in &scenario.techniques {
            if rampart_attack::lookup(technique).is_none() {
                return Err(bad(format!(
                    "technique {technique} is not an M1037 technique"
                )));
            }
        }
        for case in &scenario.cases {
            if case.kind.is_l2() {
                let problem = if !case.traffic.is_empty() {
                    Some("an L2 case has no traffic")
                } else if case.families != [FamilyName::Ipv4] && case.kind != CaseKind::NamePoison {
                    Some("DHCP and ARP cases play families = [\"ipv4\"]")
                } else if case.process.is_some()
                    || case.flood.is_some()
                    || !case.knock.is_empty()
                    || case.via.is_some()
                    || case.http.is_some()
                {
                    Some("an L2 case has no process, flood, knock or http")
                } else if case.to == crate::topology::GATEWAY && case.kind != CaseKind::Dhcp {
                    Some("only a dhcp case may name the gateway as `to`")
                } else if case.from == crate::topology::GATEWAY && case.kind != CaseKind::ArpSpoof {
                    Some("only an arp-spoof case may name the gateway as `from`")
                } else {
                    None
                };
                if let Some(p) = problem {
                    return Err(bad(format!("case `{}`: {p}", case.name)));
                }
                continue;
            }
            if case.kind == CaseKind::Http {
                let problem = match (&case.via, &case.http) {
                    (None, _) | (_, None) => Some("an http case names `via` and `http`".into()),
                    (_, Some(h)) => h.problem(),
                };
                let problem = problem.or_else(|| {
                    if !matches!(Traffic::parse(&case.traffic), Some(Traffic::Tcp(_))) {
                        Some("an http case plays tcp/PORT".into())
                    } else if case.process.is_some()
                        || case.flood.is_some()
                        || !case.knock.is_empty()
                        || case.payload != Payload::Plain
                        || case.from == crate::topology::GATEWAY
                        || case.to == crate::topology::GATEWAY
                    {
                        Some("an http case has no process, flood, knock or payload, and no gateway end".into())
                    } else if case
                        .detection
                        .as_ref()
                        .is_some_and(|t| rampart_attack::lookup(t).is_none())
                    {
                        Some("its detection is an M1037 technique the component's event carries".into())
                    } else if case.detection.is_some() && case.expect == Expectation::Allowed {
                        Some("a detection is for a case expected blocked".into())
                    } else {
                        None
                    }
                });
                if let Some(p) = problem {
                    return Err(bad(format!("case `{}`: {p}", case.name)));
                }
                continue;
            }
            if case.via.is_some() || case.http.is_some() {
                return Err(bad(format!(
                    "case `{}`: `via` and `http` are for kind = \"http\"",
                    case.name
                )));
            }
            if case.detection.is_some() {
                return Err(bad(format!(
                    "case `{}`: detection is for L2 and http cases",
                    case.name
                )));
            }
            if let Some(p) = &case.process {
                let name_ok = p.program.as_ref().is_none_or(|n| {
                    !n.is_empty()
                        && n.len() <= PROGRAM_NAME_MAX
                        && n.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b)
                        })
                });
                if !matches!(Traffic::parse(&case.traffic), Some(Traffic::Tcp(_)))
                    || case.payload != Payload::Plain
                    || case.flood.is_some()
                    || !name_ok
                {
                    return Err(bad(format!(
                        "case `{}`: a process client plays plain tcp/PORT, and its program is [a-z0-9_-]{{1,{PROGRAM_NAME_MAX}}}",
                        case.name
                    )));
                }
            }
            if Traffic::parse(&case.traffic).is_none() {
                return Err(bad(format!(
                    "case `{}`: traffic `{}` is not tcp/PORT, udp/PORT or icmp/echo",
                    case.name, case.traffic
                )));
            }
            if case.families.is_empty() {
                return Err(bad(format!("case `{}` plays no family", case.name)));
            }
            let traffic = Traffic::parse(&case.traffic);
            if case.icmp_bytes.is_some_and(|b| b > ICMP_BYTES_MAX)
                || (case.icmp_bytes.is_some() && traffic != Some(Traffic::IcmpEcho))
            {
                return Err(bad(format!(
                    "case `{}`: icmp_bytes is for icmp/echo, at most {ICMP_BYTES_MAX}",
                    case.name
                )));
            }
            if case.payload != Payload::Plain && traffic == Some(Traffic::IcmpEcho) {
                return Err(bad(format!(
                    "case `{}`: payloads are for tcp/udp traffic",
                    case.name
                )));
            }
            if case.from_port.is_some_and(|p| p == 0)
                || (case.from_port.is_some() && !matches!(traffic, Some(Traffic::Udp(_))))
            {
                return Err(bad(format!(
                    "case `{}`: from_port is a non-zero source port of a udp/PORT flow",
                    case.name
                )));
            }
            if case.knock.len() > KNOCKS_MAX
                || case
                    .knock
                    .iter()
                    .any(|k| !matches!(Traffic::parse(k), Some(Traffic::Tcp(_) | Traffic::Udp(_))))
            {
                return Err(bad(format!(
                    "case `{}`: knock is up to {KNOCKS_MAX} tcp/PORT or udp/PORT entries",
                    case.name
                )));
            }
            if let Some(f) = &case.flood {
                let problem = if !matches!(traffic, Some(Traffic::Tcp(_))) {
                    Some("a flood case plays tcp/PORT".to_string())
                } else if f.rate_pps == 0 || f.rate_pps > FLOOD_RATE_MAX_PPS {
                    Some(format!("rate_pps is 1..={FLOOD_RATE_MAX_PPS}"))
                } else if f.duration_ms == 0 || f.duration_ms > FLOOD_DURATION_MAX_MS {
                    Some(format!("duration_ms is 1..={FLOOD_DURATION_MAX_MS}"))
                } else if f.connections == 0 || f.connections > LEGIT_CONNECTIONS_MAX {
                    Some(format!("connections is 1..={LEGIT_CONNECTIONS_MAX}"))
                } else if !(0.0..=1.0).contains(&f.success_threshold) {
                    Some("success_threshold is 0..=1".into())
                } else if f.requests && f.sources != FloodSourceKind::Own {
                    Some("a request flood needs sources = \"own\"".into())
                } else if f.ban_within_ms.is_some() && f.sources != FloodSourceKind::Own {
                    Some("ban_within_ms needs sources = \"own\"".into())
                } else {
                    None
                };
                if let Some(p) = problem {
                    return Err(bad(format!("case `{}`: {p}", case.name)));
                }
            }
        }
        Ok(scenario)
    }

    /// The built-in scenarios.
    pub fn builtin() -> Result<Vec<Scenario>, LabError> {
        BUILTIN
            .iter()
            .map(|(file, text)| Scenario::parse(file, text))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::{Topology, DEFAULT_TOPOLOGY};

    #[test]
    fn builtin_scenarios_parse_and_name_real_hosts() {
        let topology = Topology::parse(DEFAULT_TOPOLOGY).unwrap();
        let scenarios = Scenario::builtin().unwrap();
        assert_eq!(scenarios.len(), BUILTIN.len());
        for scenario in &scenarios {
            let file_stem = format!("{}.toml", scenario.id);
            assert!(
                BUILTIN.iter().any(|(f, _)| *f == file_stem),
                "{}",
                scenario.id
            );
            for case in &scenario.cases {
                for (a, b) in [(&case.from, &case.to), (&case.to, &case.from)] {
                    if a == "gw" {
                        continue;
                    }
                    let host = topology
                        .host(a, "")
                        .unwrap_or_else(|| panic!("{}: unknown host {a}", scenario.id));
                    assert!(
                        topology.host(b, &host.segment).is_some(),
                        "{}: unknown host {b}",
                        scenario.id
                    );
                }
                assert!(case.from != "gw" || case.to != "gw", "{}", scenario.id);
                if let Some(f) = &case.flood {
                    assert!(
                        topology.host(&f.from, "").is_some(),
                        "{}: {}",
                        scenario.id,
                        f.from
                    );
                }
            }
        }
    }

    #[test]
    fn every_scenario_has_an_attack_and_a_legitimate_twin() {
        for scenario in Scenario::builtin().unwrap() {
            let blocked = scenario
                .cases
                .iter()
                .any(|c| c.expect == Expectation::Blocked);
            let allowed = scenario
                .cases
                .iter()
                .any(|c| c.expect == Expectation::Allowed);
            assert!(blocked && allowed, "{} lacks a twin", scenario.id);
        }
    }

    #[test]
    fn traffic_forms() {
        assert_eq!(Traffic::parse("tcp/445"), Some(Traffic::Tcp(445)));
        assert_eq!(Traffic::parse("udp/53"), Some(Traffic::Udp(53)));
        assert_eq!(Traffic::parse("icmp/echo"), Some(Traffic::IcmpEcho));
        assert_eq!(Traffic::parse("tcp/0"), None);
        assert_eq!(Traffic::parse("tcp/70000"), None);
        assert_eq!(Traffic::parse("sctp/1"), None);
    }

    #[test]
    fn bad_scenarios_say_what_is_wrong() {
        let err = Scenario::parse(
            "x.toml",
            "id='x'\ntechniques=['T9999']\nsummary='s'\n[[case]]\nname='n'\nfrom='a'\nto='b'\ntraffic='tcp/1'\nexpect='allowed'\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("T9999"), "{err}");
        let err = Scenario::parse(
            "x.toml",
            "id='x'\ntechniques=[]\nsummary='s'\n[[case]]\nname='n'\nfrom='a'\nto='b'\ntraffic='tcp/x'\nexpect='allowed'\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("tcp/x"), "{err}");
        let err = Scenario::parse(
            "x.toml",
            "id='x'\ntechniques=[]\nsummary='s'\n[[case]]\nname='n'\nfrom='a'\nto='b'\ntraffic='tcp/1'\nfrom_port=53\nexpect='allowed'\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("from_port"), "{err}");
        let ok = Scenario::parse(
            "x.toml",
            "id='x'\ntechniques=[]\nsummary='s'\n[[case]]\nname='n'\nfrom='a'\nto='b'\ntraffic='udp/40000'\nfrom_port=53\nexpect='blocked'\n",
        )
        .unwrap();
        assert_eq!(ok.cases[0].from_port, Some(53));
    }

    #[test]
    fn http_cases_are_checked() {
        let case = |extra: &str| {
            Scenario::parse(
                "x.toml",
                &format!("id='x'\ntechniques=['T1197']\nsummary='s'\n[[case]]\nname='n'\nfrom='corp-ws1'\nto='public-web'\ntraffic='tcp/80'\nexpect='blocked'\n{extra}"),
            )
        };
        let ok = case("kind='http'\nvia='egress'\ndetection='T1197'\nhttp={host='a.example', path='/x', method='BITS_POST', headers=['User-Agent: Microsoft BITS/7.8']}\n").unwrap();
        let request = ok.cases[0].http.as_ref().unwrap();
        assert_eq!(request.method, "BITS_POST");
        assert_eq!(ok.cases[0].via, Some(Via::Egress));
        for (extra, needle) in [
            ("kind='http'\nhttp={host='a.example', path='/x'}\n", "via"),
            (
                "kind='http'\nvia='waf'\nhttp={host='A.example', path='/x'}\n",
                "host",
            ),
            (
                "kind='http'\nvia='waf'\nhttp={host='a.example', path='x'}\n",
                "path",
            ),
            (
                "kind='http'\nvia='waf'\nhttp={host='a.example', path='/x y'}\n",
                "path",
            ),
            (
                "kind='http'\nvia='waf'\nhttp={host='a.example', path='/', method='GET X'}\n",
                "method",
            ),
            (
                "kind='http'\nvia='waf'\nhttp={host='a.example', path='/', headers=['NoColon']}\n",
                "header",
            ),
            (
                "kind='http'\nvia='waf'\ndetection='T9999'\nhttp={host='a.example', path='/'}\n",
                "technique",
            ),
            (
                "kind='http'\nvia='waf'\npayload='tls'\nhttp={host='a.example', path='/'}\n",
                "payload",
            ),
            ("via='waf'\n", "kind"),
            ("detection='T1197'\n", "detection"),
        ] {
            let err = case(extra).unwrap_err().to_string();
            assert!(err.contains(needle), "{extra}: {err}");
        }
    }
}
