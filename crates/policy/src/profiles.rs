//! Built-in profiles: rule packs for the M1037 rows that L3/L4 filtering can meet. Each
//! profile states the technique ids it mitigates, takes parameters (zones, sets, addresses,
//! services, owners) and expands into named parts, one rule each, that users can exclude or
//! re-verdict. Profile rules carry `RuleOrigin::Profile` and the location of `[profiles.X]`.

use rampart_ir::{
    proto, Action, AppMatch, AppProtocol, Ban, Direction, Family, L4Match, Limit, Peer, PortRange,
    ProfileUse, RateUnit, Rule, RuleOrigin, Synproxy,
};
use serde::Serialize;

use crate::ast::{self, as_bool, as_str, as_str_list, as_table, Fields, S};
use crate::diag::{did_you_mean, Diags, Report};
use crate::resolve::{self, parse_net, Candidate, Ctx};

/// What a parameter holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamKind {
    /// Zone names, set names, addresses or `any` (like a rule's `from`/`to`).
    Peers,
    /// Services (like a rule's `service`).
    Services,
    /// A socket owner table `{ uid = [...], gid = [...], cgroup = [...] }`.
    Owner,
    /// A rate like a limit's: `"20/second"`.
    Rate,
    /// A positive integer.
    Count,
    /// A duration: `"90s"`, `"10m"`, `"1h"`, `"1d"`.
    Duration,
    /// A boolean.
    Bool,
}

/// A profile parameter.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ParamInfo {
    /// Key in `[profiles.NAME]`.
    pub name: &'static str,
    /// Its type.
    pub kind: ParamKind,
    /// Whether the profile cannot be enabled without it.
    pub required: bool,
    /// What it means, and its default.
    pub description: &'static str,
}

/// Where a part's source or destination comes from.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum PeerSpec {
    /// Any address.
    Any,
    /// The value of a parameter (any when the parameter is optional and not given).
    Param(&'static str),
    /// The parameter if given, else every zone with `public_facing = true`.
    ParamOrPublicZones(&'static str),
    /// The parameter if given, else every zone with `trusted = true`.
    ParamOrTrustedZones(&'static str),
    /// Fixed addresses.
    Fixed(&'static [&'static str]),
}

/// What a part matches at L4.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum ServiceSpec {
    /// Any traffic.
    Any,
    /// Catalogue services.
    Named(&'static [&'static str]),
    /// A `Services` parameter, else these catalogue services.
    ParamOr(&'static str, &'static [&'static str]),
    /// DHCP server-to-client replies: udp 67→68 and udp 547→546.
    DhcpServerReplies,
    /// A required `Services` parameter.
    Param(&'static str),
    /// Service literals (`tcp/443`).
    Literal(&'static [&'static str]),
    /// TCP to every destination port except those of these catalogue services (the protocol
    /// on a port it does not own).
    TcpExcept(&'static [&'static str]),
}

/// What a part adds to its rule beyond addresses and services.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Protect {
    /// Nothing.
    None,
    /// SYN proxy with the default parameters.
    Synproxy,
    /// The profile's per-source `rate`/`burst`, `conn_limit` and `ban` parameters (and a SYN
    /// proxy when its `synproxy` parameter is true).
    Limits,
    /// An application-protocol match (see [`rampart_ir::AppMatch`]).
    App {
        /// Protocols.
        protocols: &'static [AppProtocol],
        /// Match every label except these.
        negate: bool,
    },
}

/// One part of a profile: becomes one rule named `PROFILE/PART`.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PartInfo {
    /// `group.direction`, e.g. `smb.egress`.
    pub name: &'static str,
    /// Hook.
    pub direction: Direction,
    /// Accept (true) or deny (false, `drop` unless overridden).
    pub allow: bool,
    /// Source.
    pub from: PeerSpec,
    /// Destination.
    pub to: PeerSpec,
    /// Services.
    pub services: ServiceSpec,
    /// The part is only produced when this parameter is given.
    pub needs: Option<&'static str>,
    /// Whether the `owner` parameter applies to it.
    pub owner: bool,
    /// The part is left out when this parameter is given.
    pub unless: Option<&'static str>,
    /// SYN proxy, limits and ban, or an application-protocol match.
    pub protect: Protect,
    /// What it does.
    pub description: &'static str,
}

/// A built-in profile.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ProfileInfo {
    /// Name as written in `[profiles.NAME]`.
    pub name: &'static str,
    /// ATT&CK techniques (ids of the seed catalogue) every rule of it mitigates.
    pub techniques: &'static [&'static str],
    /// Profile-specific parameters (the common ones are in [`COMMON_PARAMS`]).
    pub parameters: &'static [ParamInfo],
    /// Its parts, in rule order.
    pub parts: &'static [PartInfo],
    /// What it enforces.
    pub description: &'static str,
    /// Placed after the user rules unless the user says `placement = "before"` (catch-all
    /// parts that would otherwise swallow every user rule).
    pub after_by_default: bool,
}

/// Parameters every profile accepts.
pub const COMMON_PARAMS: &[(&str, &str)] = &[
    ("exclude", "parts to leave out: a part name (`smb.egress`) or a group (`smb`, every direction of it)"),
    ("placement", "`before` (default) puts the profile's rules before all user rules; `after` puts them after"),
    ("action", "verdict for the deny parts: `drop` (default) or `reject`"),
    ("actions", "per-part or per-group verdict override, e.g. `{ \"smb.egress\" = \"reject\", allow = \"drop\" }`"),
    ("log", "log matches of every part (default false)"),
];

use Direction::{Egress, Forward, Ingress};
use PeerSpec::{Any, Fixed, Param, ParamOrPublicZones, ParamOrTrustedZones};

const fn part(
    name: &'static str,
    direction: Direction,
    allow: bool,
    from: PeerSpec,
    to: PeerSpec,
    services: ServiceSpec,
    description: &'static str,
) -> PartInfo {
    PartInfo {
        name,
        direction,
        allow,
        from,
        to,
        services,
        needs: None,
        owner: false,
        unless: None,
        protect: Protect::None,
        description,
    }
}

const fn unless(mut p: PartInfo, param: &'static str) -> PartInfo {
    p.unless = Some(param);
    p
}

const fn protect(mut p: PartInfo, protect: Protect) -> PartInfo {
    p.protect = protect;
    p
}

const fn app(protocols: &'static [AppProtocol], negate: bool) -> Protect {
    Protect::App { protocols, negate }
}

const fn needs(mut p: PartInfo, param: &'static str) -> PartInfo {
    p.needs = Some(param);
    p
}

const fn with_owner(mut p: PartInfo) -> PartInfo {
    p.owner = true;
    p
}

const fn peers(name: &'static str, required: bool, description: &'static str) -> ParamInfo {
    ParamInfo {
        name,
        kind: ParamKind::Peers,
        required,
        description,
    }
}

const SMB: ServiceSpec = ServiceSpec::Named(&["smb"]);
const NB_NS: ServiceSpec = ServiceSpec::Named(&["netbios-ns"]);
const NB_DGM: ServiceSpec = ServiceSpec::Named(&["netbios-dgm"]);
const NB_SSN: ServiceSpec = ServiceSpec::Named(&["netbios-ssn"]);
const LLMNR: ServiceSpec = ServiceSpec::Named(&["llmnr"]);
const MDNS: ServiceSpec = ServiceSpec::Named(&["mdns"]);
const DNS_ALL: ServiceSpec = ServiceSpec::Named(&["dns", "dot", "doq"]);
const MAIL: ServiceSpec = ServiceSpec::Named(&[
    "smtp",
    "submission",
    "smtps",
    "imap",
    "imaps",
    "pop3",
    "pop3s",
]);
const FILE_XFER: ServiceSpec = ServiceSpec::ParamOr("services", &["ftp", "ftps", "sftp", "tftp"]);
const MQTT: ServiceSpec = ServiceSpec::Named(&["mqtt", "mqtts"]);
const VNC: ServiceSpec = ServiceSpec::Named(&["vnc"]);
const ADMIN: ServiceSpec = ServiceSpec::ParamOr("services", &["ssh", "rdp", "vnc", "winrm"]);
const RAT: ServiceSpec = ServiceSpec::Named(&["teamviewer", "anydesk"]);
const MGMT: ServiceSpec = ServiceSpec::Named(&["snmp", "ssh", "telnet", "tftp"]);
const TOR: ServiceSpec = ServiceSpec::Named(&["tor"]);
const TELNET: ServiceSpec = ServiceSpec::Named(&["telnet"]);
const BITS: ServiceSpec = ServiceSpec::Named(&["bits"]);
const HTTPS: ServiceSpec = ServiceSpec::Named(&["https"]);
const HTTPS_AND_QUIC: ServiceSpec = ServiceSpec::Literal(&["tcp/443", "udp/443"]);
const TUNNELS: ServiceSpec = ServiceSpec::Named(&["gre", "ipip", "ipv6-in-ipv4"]);
const METADATA: &[&str] = &["169.254.169.254", "fd00:ec2::254"];
const PROTECTED: ServiceSpec = ServiceSpec::Param("services");
const DNS_PORTS: ServiceSpec = ServiceSpec::Named(&["dns"]);
const TLS_PORTS: ServiceSpec = ServiceSpec::Literal(&["tcp/443", "tcp/853"]);
const OFF_SSH: ServiceSpec = ServiceSpec::TcpExcept(&["ssh"]);
const OFF_RDP: ServiceSpec = ServiceSpec::TcpExcept(&["rdp"]);
const OFF_VNC: ServiceSpec = ServiceSpec::TcpExcept(&["vnc"]);
const OFF_MQTT: ServiceSpec = ServiceSpec::TcpExcept(&["mqtt", "mqtts"]);
const OFF_SMB: ServiceSpec = ServiceSpec::TcpExcept(&["smb", "netbios-ssn"]);
const SMB_PORTS: ServiceSpec = ServiceSpec::Named(&["smb", "netbios-ssn"]);
const PING: ServiceSpec = ServiceSpec::Named(&["ping"]);
const APP_DNS: Protect = app(&[AppProtocol::Dns], true);
const APP_TLS: Protect = app(&[AppProtocol::Tls], true);
const APP_SSH: Protect = app(&[AppProtocol::Ssh], false);
const APP_RDP: Protect = app(&[AppProtocol::Rdp], false);
const APP_VNC: Protect = app(&[AppProtocol::Vnc], false);
const APP_MQTT: Protect = app(&[AppProtocol::Mqtt], false);
const APP_SMB: Protect = app(&[AppProtocol::Smb1, AppProtocol::Smb2], false);
const APP_SMB1: Protect = app(&[AppProtocol::Smb1], false);
const APP_ICMP_TUNNEL: Protect = app(&[AppProtocol::IcmpTunnel], false);

const fn kind(name: &'static str, kind: ParamKind, description: &'static str) -> ParamInfo {
    ParamInfo {
        name,
        kind,
        required: false,
        description,
    }
}

/// Every built-in profile.
pub const PROFILES: &[ProfileInfo] = &[
    ProfileInfo {
        name: "smb-egress",
        after_by_default: false,
        techniques: &["T1187", "T1021.002", "T1570", "T1048.003"],
        description: "Drop SMB and NetBIOS (tcp/445, udp/137, udp/138, tcp/139) from this host and from routed segments towards the given destinations (normally the internet zone). WebDAV forced authentication rides on HTTP/HTTPS and cannot be told apart at L4: use the egress proxy component for it.",
        parameters: &[
            peers("to", true, "destinations SMB must not reach, e.g. `[\"internet\"]`"),
            peers("from", false, "sources of forwarded traffic the forward parts apply to (default: any)"),
        ],
        parts: &[
            part("smb.egress", Egress, false, Any, Param("to"), SMB, "SMB from this host"),
            part("smb.forward", Forward, false, Param("from"), Param("to"), SMB, "routed SMB"),
            part("netbios-ns.egress", Egress, false, Any, Param("to"), NB_NS, "NetBIOS name service from this host"),
            part("netbios-ns.forward", Forward, false, Param("from"), Param("to"), NB_NS, "routed NetBIOS name service"),
            part("netbios-dgm.egress", Egress, false, Any, Param("to"), NB_DGM, "NetBIOS datagrams from this host"),
            part("netbios-dgm.forward", Forward, false, Param("from"), Param("to"), NB_DGM, "routed NetBIOS datagrams"),
            part("netbios-ssn.egress", Egress, false, Any, Param("to"), NB_SSN, "NetBIOS sessions from this host"),
            part("netbios-ssn.forward", Forward, false, Param("from"), Param("to"), NB_SSN, "routed NetBIOS sessions"),
        ],
    },
    ProfileInfo {
        name: "legacy-name-resolution",
        after_by_default: false,
        techniques: &["T1557", "T1557.001"],
        description: "Drop LLMNR, NBT-NS and mDNS in every direction: the broadcast/multicast name protocols that LLMNR/NBT-NS poisoning answers.",
        parameters: &[],
        parts: &[
            part("llmnr.ingress", Ingress, false, Any, Any, LLMNR, "LLMNR to this host"),
            part("llmnr.egress", Egress, false, Any, Any, LLMNR, "LLMNR from this host"),
            part("llmnr.forward", Forward, false, Any, Any, LLMNR, "routed LLMNR"),
            part("netbios-ns.ingress", Ingress, false, Any, Any, NB_NS, "NBT-NS to this host"),
            part("netbios-ns.egress", Egress, false, Any, Any, NB_NS, "NBT-NS from this host"),
            part("netbios-ns.forward", Forward, false, Any, Any, NB_NS, "routed NBT-NS"),
            part("mdns.ingress", Ingress, false, Any, Any, MDNS, "mDNS to this host"),
            part("mdns.egress", Egress, false, Any, Any, MDNS, "mDNS from this host"),
            part("mdns.forward", Forward, false, Any, Any, MDNS, "routed mDNS"),
        ],
    },
    ProfileInfo {
        name: "remote-admin",
        after_by_default: false,
        techniques: &["T1021", "T1021.005", "T1219", "T1219.002"],
        description: "Remote administration (SSH, RDP, VNC, WinRM by default) reaches this host and routed segments only from the admin peers; everyone else is denied. Outbound remote-access tools (TeamViewer, AnyDesk ports) are denied.",
        parameters: &[
            peers("admin", true, "where administrators connect from (zone, set or prefixes)"),
            peers("to", false, "routed destinations the forward parts protect (default: any)"),
            ParamInfo { name: "services", kind: ParamKind::Services, required: false, description: "admin services (default `[\"ssh\", \"rdp\", \"vnc\", \"winrm\"]`)" },
        ],
        parts: &[
            part("allow.ingress", Ingress, true, Param("admin"), Any, ADMIN, "admin services to this host from the admin peers"),
            part("allow.forward", Forward, true, Param("admin"), Param("to"), ADMIN, "routed admin services from the admin peers"),
            part("deny.ingress", Ingress, false, Any, Any, ADMIN, "admin services to this host from anyone else"),
            part("deny.forward", Forward, false, Any, Param("to"), ADMIN, "routed admin services from anyone else"),
            part("tools.egress", Egress, false, Any, Any, RAT, "remote-access tools from this host"),
            part("tools.forward", Forward, false, Any, Any, RAT, "routed remote-access tools"),
        ],
    },
    ProfileInfo {
        name: "dns-resolvers",
        after_by_default: false,
        techniques: &["T1071.004", "T1048", "T1572"],
        description: "DNS, DNS over TLS and DNS over QUIC only to the designated resolvers; elsewhere denied, so DNS tunnels must pass the resolvers (and the DNS filter component).",
        parameters: &[
            peers("resolvers", true, "the designated resolvers"),
            peers("from", false, "routed clients the forward parts apply to (default: any)"),
        ],
        parts: &[
            part("allow.egress", Egress, true, Any, Param("resolvers"), DNS_ALL, "this host to the resolvers"),
            part("allow.forward", Forward, true, Param("from"), Param("resolvers"), DNS_ALL, "routed clients to the resolvers"),
            part("deny.egress", Egress, false, Any, Any, DNS_ALL, "this host to any other resolver"),
            part("deny.forward", Forward, false, Param("from"), Any, DNS_ALL, "routed clients to any other resolver"),
        ],
    },
    ProfileInfo {
        name: "doh-endpoints",
        after_by_default: false,
        techniques: &["T1071.004", "T1572"],
        description: "Forced DNS, the DNS-over-HTTPS part: HTTPS and QUIC to known DoH endpoints (typically a feed set of resolver addresses) denied, so clients cannot resolve around the designated resolvers and the DNS filter. Pair with `dns-resolvers`.",
        parameters: &[
            peers("endpoints", true, "the DoH endpoints (a set, typically fed from a DoH-server list)"),
            peers("from", false, "routed clients the forward part applies to (default: any)"),
        ],
        parts: &[
            part("deny.egress", Egress, false, Any, Param("endpoints"), HTTPS_AND_QUIC, "this host to a DoH endpoint"),
            part("deny.forward", Forward, false, Param("from"), Param("endpoints"), HTTPS_AND_QUIC, "routed clients to a DoH endpoint"),
        ],
    },
    ProfileInfo {
        name: "public-server-egress",
        after_by_default: false,
        techniques: &["T1190", "T1071.001", "T1105"],
        description: "New outbound connections from public-facing zones go only to the egress proxy (and `also_allow`); everything else they initiate is denied. Replies to inbound connections are unaffected (stateful prelude).",
        parameters: &[
            peers("from", false, "the public-facing sources (default: every zone with `public_facing = true`)"),
            peers("proxy", true, "the egress proxy"),
            ParamInfo { name: "proxy_service", kind: ParamKind::Services, required: false, description: "proxy port(s) (default `[\"http-alt\"]`)" },
            peers("also_allow", false, "other destinations they may reach, e.g. the DNS resolvers"),
        ],
        parts: &[
            part("proxy.forward", Forward, true, ParamOrPublicZones("from"), Param("proxy"), ServiceSpec::ParamOr("proxy_service", &["http-alt"]), "public servers to the proxy"),
            needs(part("also-allow.forward", Forward, true, ParamOrPublicZones("from"), Param("also_allow"), ServiceSpec::Any, "public servers to `also_allow`"), "also_allow"),
            part("deny.forward", Forward, false, ParamOrPublicZones("from"), Any, ServiceSpec::Any, "any other new outbound connection from public servers"),
        ],
    },
    ProfileInfo {
        name: "mail-egress",
        after_by_default: false,
        techniques: &["T1071.003"],
        description: "SMTP, submission, IMAP and POP3 (plain and TLS) only to the trusted mail relays.",
        parameters: &[
            peers("relays", true, "trusted mail servers"),
            peers("from", false, "routed sources the forward parts apply to (default: any)"),
        ],
        parts: &[
            part("allow.egress", Egress, true, Any, Param("relays"), MAIL, "this host to the relays"),
            part("allow.forward", Forward, true, Param("from"), Param("relays"), MAIL, "routed mail to the relays"),
            part("deny.egress", Egress, false, Any, Any, MAIL, "mail from this host elsewhere"),
            part("deny.forward", Forward, false, Param("from"), Any, MAIL, "routed mail elsewhere"),
        ],
    },
    ProfileInfo {
        name: "file-transfer-egress",
        after_by_default: false,
        techniques: &["T1071.002"],
        description: "FTP, FTPS, SFTP and TFTP only to trusted destinations. SFTP shares tcp/22 with SSH, so outbound SSH to untrusted destinations is denied too; set `services = [\"ftp\", \"ftps\", \"tftp\"]` to leave SSH alone.",
        parameters: &[
            peers("to", false, "trusted destinations (default: every zone with `trusted = true`)"),
            ParamInfo {
                name: "services",
                kind: ParamKind::Services,
                required: false,
                description: "file-transfer services (default `[\"ftp\", \"ftps\", \"sftp\", \"tftp\"]`)",
            },
            peers("from", false, "routed sources the forward parts apply to (default: any)"),
        ],
        parts: &[
            part("allow.egress", Egress, true, Any, ParamOrTrustedZones("to"), FILE_XFER, "this host to trusted destinations"),
            part("allow.forward", Forward, true, Param("from"), ParamOrTrustedZones("to"), FILE_XFER, "routed transfers to trusted destinations"),
            part("deny.egress", Egress, false, Any, Any, FILE_XFER, "file transfers from this host elsewhere"),
            part("deny.forward", Forward, false, Param("from"), Any, FILE_XFER, "routed file transfers elsewhere"),
        ],
    },
    ProfileInfo {
        name: "mqtt",
        after_by_default: false,
        techniques: &["T1071.005"],
        description: "MQTT (1883, 8883) only to the listed brokers. MQTT on irregular ports needs the protocol classifier component.",
        parameters: &[
            peers("brokers", true, "the allowed MQTT brokers"),
            peers("from", false, "routed sources the forward parts apply to (default: any)"),
        ],
        parts: &[
            part("allow.egress", Egress, true, Any, Param("brokers"), MQTT, "this host to the brokers"),
            part("allow.forward", Forward, true, Param("from"), Param("brokers"), MQTT, "routed MQTT to the brokers"),
            part("deny.egress", Egress, false, Any, Any, MQTT, "MQTT from this host elsewhere"),
            part("deny.forward", Forward, false, Param("from"), Any, MQTT, "routed MQTT elsewhere"),
        ],
    },
    ProfileInfo {
        name: "vnc",
        after_by_default: false,
        techniques: &["T1021.005"],
        description: "Block the VNC ports (5900-5903, 5800, 5500) in every direction, except inbound from `allow_from` when given.",
        parameters: &[peers("allow_from", false, "peers that may still reach VNC on this host and routed segments")],
        parts: &[
            needs(part("allow.ingress", Ingress, true, Param("allow_from"), Any, VNC, "VNC to this host from `allow_from`"), "allow_from"),
            needs(part("allow.forward", Forward, true, Param("allow_from"), Any, VNC, "routed VNC from `allow_from`"), "allow_from"),
            part("deny.ingress", Ingress, false, Any, Any, VNC, "VNC to this host"),
            part("deny.egress", Egress, false, Any, Any, VNC, "VNC from this host"),
            part("deny.forward", Forward, false, Any, Any, VNC, "routed VNC"),
        ],
    },
    ProfileInfo {
        name: "snmp-management",
        after_by_default: false,
        techniques: &["T1602", "T1602.001", "T1602.002"],
        description: "SNMP, SSH, Telnet and TFTP (configuration repository protocols) reach devices only from the management peers.",
        parameters: &[
            peers("management", true, "management stations"),
            peers("devices", false, "routed network devices the forward parts protect (default: any)"),
        ],
        parts: &[
            part("allow.ingress", Ingress, true, Param("management"), Any, MGMT, "management protocols to this host from management"),
            part("allow.forward", Forward, true, Param("management"), Param("devices"), MGMT, "management protocols to devices from management"),
            part("deny.ingress", Ingress, false, Any, Any, MGMT, "management protocols to this host from anyone else"),
            part("deny.forward", Forward, false, Any, Param("devices"), MGMT, "management protocols to devices from anyone else"),
        ],
    },
    ProfileInfo {
        name: "metadata-api",
        after_by_default: false,
        techniques: &["T1552", "T1552.005"],
        description: "The cloud instance metadata API (169.254.169.254, fd00:ec2::254) is reachable only by the listed local owners; routed access (containers, VMs) is denied.",
        parameters: &[ParamInfo { name: "owner", kind: ParamKind::Owner, required: false, description: "socket owners allowed to query it: `{ uid = [...], gid = [...], cgroup = [...] }` (default: nobody)" }],
        parts: &[
            with_owner(needs(part("allow.egress", Egress, true, Any, Fixed(METADATA), ServiceSpec::Any, "the listed owners on this host"), "owner")),
            part("deny.egress", Egress, false, Any, Fixed(METADATA), ServiceSpec::Any, "everyone else on this host"),
            part("deny.forward", Forward, false, Any, Fixed(METADATA), ServiceSpec::Any, "routed access"),
        ],
    },
    ProfileInfo {
        name: "dhcp-servers",
        after_by_default: false,
        techniques: &["T1557.003"],
        description: "DHCP and DHCPv6 server replies (udp 67→68, 547→546) are accepted only from the listed servers; rogue server replies are dropped.",
        parameters: &[peers("servers", true, "the legitimate DHCP/DHCPv6 servers")],
        parts: &[
            part("allow.ingress", Ingress, true, Param("servers"), Any, ServiceSpec::DhcpServerReplies, "replies to this host from the servers"),
            part("allow.forward", Forward, true, Param("servers"), Any, ServiceSpec::DhcpServerReplies, "routed replies from the servers"),
            part("deny.ingress", Ingress, false, Any, Any, ServiceSpec::DhcpServerReplies, "replies to this host from anyone else"),
            part("deny.forward", Forward, false, Any, Any, ServiceSpec::DhcpServerReplies, "routed replies from anyone else"),
        ],
    },
    ProfileInfo {
        name: "anonymity-feeds",
        after_by_default: false,
        techniques: &["T1090", "T1090.003"],
        description: "Drop traffic to and from anonymity networks (Tor relays and exits, open proxies) listed in sets, usually feed sets, plus the default Tor ports.",
        parameters: &[peers("sets", true, "sets of anonymity-network addresses")],
        parts: &[
            part("to.egress", Egress, false, Any, Param("sets"), ServiceSpec::Any, "this host to them"),
            part("to.forward", Forward, false, Any, Param("sets"), ServiceSpec::Any, "routed traffic to them"),
            part("from.ingress", Ingress, false, Param("sets"), Any, ServiceSpec::Any, "them to this host"),
            part("from.forward", Forward, false, Param("sets"), Any, ServiceSpec::Any, "them through this host"),
            part("tor-ports.egress", Egress, false, Any, Any, TOR, "Tor ports from this host"),
            part("tor-ports.forward", Forward, false, Any, Any, TOR, "routed Tor ports"),
        ],
    },
    ProfileInfo {
        name: "known-bad",
        after_by_default: false,
        techniques: &["T1071", "T1105", "T1498", "T1499"],
        description: "Drop traffic to and from known-bad addresses (C2, malware hosting, DoS sources) listed in sets, usually feed sets.",
        parameters: &[peers("sets", true, "sets of known-bad addresses")],
        parts: &[
            part("to.egress", Egress, false, Any, Param("sets"), ServiceSpec::Any, "this host to them"),
            part("to.forward", Forward, false, Any, Param("sets"), ServiceSpec::Any, "routed traffic to them"),
            part("from.ingress", Ingress, false, Param("sets"), Any, ServiceSpec::Any, "them to this host"),
            part("from.forward", Forward, false, Param("sets"), Any, ServiceSpec::Any, "them through this host"),
        ],
    },
    ProfileInfo {
        name: "telnet-legacy",
        after_by_default: false,
        techniques: &["T1021"],
        description: "Block Telnet (tcp/23) in every direction.",
        parameters: &[],
        parts: &[
            part("telnet.ingress", Ingress, false, Any, Any, TELNET, "Telnet to this host"),
            part("telnet.egress", Egress, false, Any, Any, TELNET, "Telnet from this host"),
            part("telnet.forward", Forward, false, Any, Any, TELNET, "routed Telnet"),
        ],
    },
    ProfileInfo {
        name: "bits",
        after_by_default: false,
        techniques: &["T1197"],
        description: "Servers that must not run arbitrary BITS jobs reach HTTP/HTTPS only at the allowed update servers or proxy. BITS is HTTP at L4, so this restricts all web traffic of `from`.",
        parameters: &[
            peers("from", true, "the restricted hosts (routed)"),
            peers("allowed", true, "legitimate BITS destinations (update servers, proxy)"),
        ],
        parts: &[
            part("allow.egress", Egress, true, Any, Param("allowed"), BITS, "this host to the allowed destinations"),
            part("allow.forward", Forward, true, Param("from"), Param("allowed"), BITS, "restricted hosts to the allowed destinations"),
            part("deny.egress", Egress, false, Any, Any, BITS, "this host elsewhere"),
            part("deny.forward", Forward, false, Param("from"), Any, BITS, "restricted hosts elsewhere"),
        ],
    },
    ProfileInfo {
        name: "cloud-storage",
        after_by_default: false,
        techniques: &["T1530", "T1537"],
        description: "The given hosts reach HTTPS only at the allowed cloud destinations (their own buckets/VPC endpoints), so data cannot be moved to other cloud accounts.",
        parameters: &[
            peers("from", true, "hosts holding sensitive data (routed)"),
            peers("allowed", true, "approved cloud storage endpoints"),
        ],
        parts: &[
            part("allow.egress", Egress, true, Any, Param("allowed"), HTTPS, "this host to the approved endpoints"),
            part("allow.forward", Forward, true, Param("from"), Param("allowed"), HTTPS, "the hosts to the approved endpoints"),
            part("deny.egress", Egress, false, Any, Any, HTTPS, "this host elsewhere"),
            part("deny.forward", Forward, false, Param("from"), Any, HTTPS, "the hosts elsewhere"),
        ],
    },
    ProfileInfo {
        name: "tunnel-protocols",
        after_by_default: false,
        techniques: &["T1095", "T1572"],
        description: "Drop GRE, IP-in-IP and 6in4 (non-application tunnel protocols) across the boundary.",
        parameters: &[
            peers("to", false, "destinations (default: any)"),
            peers("from", false, "routed sources (default: any)"),
        ],
        parts: &[
            part("tunnels.egress", Egress, false, Any, Param("to"), TUNNELS, "tunnels from this host"),
            part("tunnels.forward", Forward, false, Param("from"), Param("to"), TUNNELS, "routed tunnels"),
        ],
    },
    ProfileInfo {
        name: "syn-flood",
        after_by_default: false,
        techniques: &["T1498", "T1499.001", "T1499.002"],
        description: "Accept the given TCP services through the kernel SYN proxy: the gateway answers every SYN with a SYN cookie and opens the connection to the server only after the client's ACK proves the handshake, so a spoofed-source SYN flood fills neither the server's backlog nor the conntrack table. Legitimate clients keep connecting during the flood.",
        parameters: &[
            ParamInfo { name: "services", kind: ParamKind::Services, required: true, description: "the TCP services to protect, e.g. `[\"https\"]`" },
            peers("to", false, "routed servers to protect (forward); without it the services on this host (ingress)"),
            peers("from", false, "clients the protection (and acceptance) applies to (default: any)"),
        ],
        parts: &[
            unless(protect(part("synproxy.ingress", Ingress, true, Param("from"), Any, PROTECTED, "the services on this host, through the SYN proxy"), Protect::Synproxy), "to"),
            needs(protect(part("synproxy.forward", Forward, true, Param("from"), Param("to"), PROTECTED, "the routed servers' services, through the SYN proxy"), Protect::Synproxy), "to"),
        ],
    },
    ProfileInfo {
        name: "flood-limits",
        after_by_default: false,
        techniques: &["T1498.001", "T1498.002", "T1499.002", "T1499.003"],
        description: "Accept the given services with per-source caps: new connections per second (`rate`, `burst`) and concurrent connections (`conn_limit`). A source over a cap is banned for `ban` (all its packets dropped in the prelude), except the `[defaults] never_ban` networks. With `synproxy = true` the SYNs also go through the SYN proxy.",
        parameters: &[
            ParamInfo { name: "services", kind: ParamKind::Services, required: true, description: "the services to protect" },
            peers("to", false, "routed servers to protect (forward); without it the services on this host (ingress)"),
            peers("from", false, "clients the caps apply to (default: any)"),
            kind("rate", ParamKind::Rate, "new connections per source (default `\"20/second\"`)"),
            kind("burst", ParamKind::Count, "bucket size per source (default 40)"),
            kind("conn_limit", ParamKind::Count, "concurrent connections per source (default 64)"),
            kind("ban", ParamKind::Duration, "how long a source over a cap is banned (default `\"10m\"`)"),
            kind("synproxy", ParamKind::Bool, "also put the SYNs through the SYN proxy (TCP services only; default false)"),
        ],
        parts: &[
            unless(protect(part("limit.ingress", Ingress, true, Param("from"), Any, PROTECTED, "the services on this host, capped per source"), Protect::Limits), "to"),
            needs(protect(part("limit.forward", Forward, true, Param("from"), Param("to"), PROTECTED, "the routed servers' services, capped per source"), Protect::Limits), "to"),
        ],
    },
    ProfileInfo {
        name: "protocol-not-port",
        after_by_default: false,
        techniques: &["T1095", "T1572", "T1021.005", "T1071.004", "T1071.005"],
        description: "Filter protocols by what the first payload is, not by port (application-protocol rules; needs the `protocol_classifier` component): non-DNS on port 53 and non-TLS on 443/853 (tunnels on standard ports), and SSH, RDP, VNC, MQTT and SMB on any port that is not theirs. Exclude a group (`ssh`, `vnc`, ...) to allow it on unusual ports.",
        parameters: &[
            peers("from", false, "routed sources the forward parts apply to (default: any)"),
            peers("to", false, "destinations (default: any)"),
        ],
        parts: &[
            protect(part("dns.egress", Egress, false, Any, Param("to"), DNS_PORTS, "non-DNS payload on port 53 from this host"), APP_DNS),
            protect(part("dns.forward", Forward, false, Param("from"), Param("to"), DNS_PORTS, "routed non-DNS payload on port 53"), APP_DNS),
            protect(part("tls.egress", Egress, false, Any, Param("to"), TLS_PORTS, "non-TLS payload on tcp/443 and tcp/853 from this host"), APP_TLS),
            protect(part("tls.forward", Forward, false, Param("from"), Param("to"), TLS_PORTS, "routed non-TLS payload on tcp/443 and tcp/853"), APP_TLS),
            protect(part("ssh.egress", Egress, false, Any, Param("to"), OFF_SSH, "SSH on a port other than 22 from this host"), APP_SSH),
            protect(part("ssh.forward", Forward, false, Param("from"), Param("to"), OFF_SSH, "routed SSH on a port other than 22"), APP_SSH),
            protect(part("rdp.egress", Egress, false, Any, Param("to"), OFF_RDP, "RDP on a port other than 3389 from this host"), APP_RDP),
            protect(part("rdp.forward", Forward, false, Param("from"), Param("to"), OFF_RDP, "routed RDP on a port other than 3389"), APP_RDP),
            protect(part("vnc.egress", Egress, false, Any, Param("to"), OFF_VNC, "VNC (RFB) on a port other than 5900-5903, 5800, 5500 from this host"), APP_VNC),
            protect(part("vnc.forward", Forward, false, Param("from"), Param("to"), OFF_VNC, "routed VNC (RFB) on a port other than 5900-5903, 5800, 5500"), APP_VNC),
            protect(part("mqtt.egress", Egress, false, Any, Param("to"), OFF_MQTT, "MQTT on a port other than 1883/8883 from this host"), APP_MQTT),
            protect(part("mqtt.forward", Forward, false, Param("from"), Param("to"), OFF_MQTT, "routed MQTT on a port other than 1883/8883"), APP_MQTT),
            protect(part("smb.egress", Egress, false, Any, Param("to"), OFF_SMB, "SMB on a port other than 445/139 from this host"), APP_SMB),
            protect(part("smb.forward", Forward, false, Param("from"), Param("to"), OFF_SMB, "routed SMB on a port other than 445/139"), APP_SMB),
        ],
    },
    ProfileInfo {
        name: "smb1",
        after_by_default: false,
        techniques: &["T1021.002", "T1570"],
        description: "M1037's example: no SMBv1. Drops SMB1 messages other than the NEGOTIATE request, and SMB1 NEGOTIATE responses, on tcp/445 and tcp/139, so an SMB1-only session dies at negotiation while multi-dialect clients still upgrade to SMB2/3 (application-protocol rules; needs the `protocol_classifier` component).",
        parameters: &[
            peers("from", false, "routed sources (default: any)"),
            peers("to", false, "destinations (default: any)"),
        ],
        parts: &[
            protect(part("smb1.ingress", Ingress, false, Param("from"), Any, SMB_PORTS, "SMB1 to and from this host's SMB server"), APP_SMB1),
            protect(part("smb1.egress", Egress, false, Any, Param("to"), SMB_PORTS, "SMB1 from this host"), APP_SMB1),
            protect(part("smb1.forward", Forward, false, Param("from"), Param("to"), SMB_PORTS, "routed SMB1"), APP_SMB1),
        ],
    },
    ProfileInfo {
        name: "icmp-tunnels",
        after_by_default: false,
        techniques: &["T1095", "T1572"],
        description: "Drop ICMP echo requests that carry a tunnel: ptunnel's magic or a payload of 512 bytes or more (Linux ping sends 56, Windows 32). Ordinary pings pass to the normal rules (application-protocol rules; needs the `protocol_classifier` component).",
        parameters: &[
            peers("from", false, "routed sources (default: any)"),
            peers("to", false, "destinations (default: any)"),
        ],
        parts: &[
            protect(part("tunnel.ingress", Ingress, false, Param("from"), Any, PING, "ICMP tunnels to this host"), APP_ICMP_TUNNEL),
            protect(part("tunnel.egress", Egress, false, Any, Param("to"), PING, "ICMP tunnels from this host"), APP_ICMP_TUNNEL),
            protect(part("tunnel.forward", Forward, false, Param("from"), Param("to"), PING, "routed ICMP tunnels"), APP_ICMP_TUNNEL),
        ],
    },
    ProfileInfo {
        name: "default-deny",
        after_by_default: true,
        techniques: &["T1205", "T1205.001", "T1205.002"],
        description: "Stateful default-deny made explicit: after every user rule, drop (and with `log = true`, log) whatever new ingress and forwarded traffic is left, whatever the defaults say. No packet sequence opens anything: the ruleset holds no state a port knock or magic packet could create, and replies pass only through the conntrack prelude. Placed after the user rules unless `placement = \"before\"`.",
        parameters: &[],
        parts: &[
            part("deny.ingress", Ingress, false, Any, Any, ServiceSpec::Any, "anything else to this host"),
            part("deny.forward", Forward, false, Any, Any, ServiceSpec::Any, "anything else through this host"),
        ],
    },
];

/// The profile named `name`.
pub fn lookup(name: &str) -> Option<&'static ProfileInfo> {
    PROFILES.iter().find(|p| p.name == name)
}

/// A profile expanded into rule candidates.
pub(crate) struct Expansion {
    pub rules: Vec<Candidate>,
    pub after: bool,
    pub use_: ProfileUse,
}

fn param_error(code: &'static str, msg: String, span: crate::source::Span, label: &str) -> Report {
    Report::error(code, msg).label(span, label)
}

/// Expand one `[profiles.NAME]` table.
pub(crate) fn expand(
    ctx: &Ctx<'_>,
    decl: &ast::ProfileDecl,
    diags: &mut Diags,
) -> Option<Expansion> {
    let name = &decl.name;
    let Some(info) = lookup(&name.v) else {
        diags.push(
            Report::error("E0103", format!("unknown profile `{}`", name.v))
                .label(name.span, "not a built-in profile")
                .hint_opt(
                    did_you_mean(&name.v, PROFILES.iter().map(|p| p.name)).or_else(|| {
                        Some(format!(
                            "profiles: {}",
                            PROFILES
                                .iter()
                                .map(|p| p.name)
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))
                    }),
                ),
        );
        return None;
    };
    let errors_before = diags.error_count();
    let mut f = Fields::new(&decl.params);
    let is_part_or_group = |s: &str| {
        info.parts
            .iter()
            .any(|p| p.name == s || p.name.split('.').next() == Some(s))
    };
    let part_names = || {
        info.parts
            .iter()
            .flat_map(|p| [p.name, p.name.split('.').next().unwrap_or(p.name)])
    };
    let unknown_part = |s: &S<String>, diags: &mut Diags| {
        diags.push(
            Report::error(
                "E0105",
                format!("profile `{}` has no part `{}`", info.name, s.v),
            )
            .label(s.span, "unknown part")
            .hint_opt(did_you_mean(&s.v, part_names()).or_else(|| {
                Some(format!(
                    "parts: {}",
                    info.parts
                        .iter()
                        .map(|p| p.name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            })),
        );
    };

    let mut excluded: Vec<String> = Vec::new();
    if let Some(e) = f.take("exclude") {
        for s in as_str_list(e, diags) {
            if is_part_or_group(&s.v) {
                excluded.push(s.v.clone());
            } else {
                unknown_part(&s, diags);
            }
        }
    }
    let mut after = info.after_by_default;
    if let Some(e) = f.take("placement") {
        if let Some(s) = as_str(e, diags) {
            match s.v.as_str() {
                "before" => after = false,
                "after" => after = true,
                other => diags.push(param_error(
                    "E0170",
                    format!("unknown placement `{other}`"),
                    s.span,
                    "expected `before` or `after`",
                )),
            }
        }
    }
    let deny_action = |s: &S<String>, diags: &mut Diags| -> Option<Action> {
        let a = resolve::parse_action(s, diags)?;
        Some(a)
    };
    let mut default_deny = Action::Drop;
    if let Some(e) = f.take("action") {
        if let Some(s) = as_str(e, diags) {
            match deny_action(&s, diags) {
                Some(Action::Accept) => diags.push(
                    param_error("E0170", "a profile's deny parts cannot be turned into accepts wholesale".into(), s.span, "expected `drop` or `reject`")
                        .hint("exclude the parts you do not want, or override single parts with `actions`"),
                ),
                Some(a) => default_deny = a,
                None => {}
            }
        }
    }
    let mut overrides: Vec<(String, Action)> = Vec::new();
    if let Some(e) = f.take("actions") {
        if let Some(t) = as_table(e, diags) {
            for entry in t {
                let key = S {
                    v: entry.key.clone(),
                    span: entry.key_span,
                };
                if !is_part_or_group(&key.v) {
                    unknown_part(&key, diags);
                    continue;
                }
                if let Some(s) = as_str(entry, diags) {
                    if let Some(a) = deny_action(&s, diags) {
                        overrides.push((key.v, a));
                    }
                }
            }
        }
    }
    let log = f
        .take("log")
        .and_then(|e| as_bool(e, diags))
        .unwrap_or(false);

    // Profile-specific parameters.
    let mut peer_params: Vec<(&'static str, Vec<Peer>)> = Vec::new();
    let mut svc_params: Vec<(&'static str, Vec<L4Match>)> = Vec::new();
    let mut owner = None;
    let mut rate: Option<(u64, u32, RateUnit)> = None;
    let mut counts: Vec<(&'static str, u32)> = Vec::new();
    let mut ban_s: Option<u32> = None;
    let mut flags: Vec<(&'static str, bool)> = Vec::new();
    for p in info.parameters {
        let Some(e) = f.take(p.name) else {
            if p.required {
                diags.push(
                    Report::error(
                        "E0170",
                        format!("profile `{}` needs parameter `{}`", info.name, p.name),
                    )
                    .label(name.span, format!("`{}` missing", p.name))
                    .hint(format!("`{}`: {}", p.name, p.description)),
                );
            }
            continue;
        };
        match p.kind {
            ParamKind::Peers => {
                let items = as_str_list(e, diags);
                let ps = ctx.peers(&items, diags);
                peer_params.push((p.name, ps.into_iter().map(|(p, _)| p).collect()));
            }
            ParamKind::Services => {
                let items = as_str_list(e, diags);
                let ms = ctx.services(&items, diags);
                svc_params.push((p.name, ms.into_iter().flat_map(|(m, _)| m).collect()));
            }
            ParamKind::Owner => {
                if let Some(o) = ast::owner(e, diags) {
                    owner = resolve::resolve_owner(&o, &ctx.programs, diags);
                }
            }
            ParamKind::Rate => {
                if let Some(text) = as_str(e, diags) {
                    rate = resolve::parse_rate(&text, diags);
                }
            }
            ParamKind::Count => {
                if let Some(n) = ast::as_int(e, diags) {
                    match u32::try_from(n.v) {
                        Ok(v) if (1..=crate::limits::MAX_CONN_LIMIT).contains(&v) => {
                            counts.push((p.name, v))
                        }
                        _ => diags.push(param_error(
                            "E0170",
                            format!("`{}` `{}` is out of range", p.name, n.v),
                            n.span,
                            &format!("expected 1..={}", crate::limits::MAX_CONN_LIMIT),
                        )),
                    }
                }
            }
            ParamKind::Duration => {
                if let Some(text) = as_str(e, diags) {
                    match resolve::parse_duration_s(&text.v) {
                        Some(v) if (1..=resolve::MAX_BAN_S).contains(&v) => ban_s = Some(v as u32),
                        _ => diags.push(
                            param_error(
                                "E0170",
                                format!("bad duration `{}`", text.v),
                                text.span,
                                "expected 1s .. 30d",
                            )
                            .hint("write a number with a unit: 90s, 10m, 1h, 1d"),
                        ),
                    }
                }
            }
            ParamKind::Bool => {
                if let Some(b) = as_bool(e, diags) {
                    flags.push((p.name, b));
                }
            }
        }
    }
    let mut allowed: Vec<&str> = COMMON_PARAMS.iter().map(|(n, _)| *n).collect();
    allowed.extend(info.parameters.iter().map(|p| p.name));
    unknown_params(f, info.name, &allowed, diags);
    if diags.error_count() > errors_before {
        return None;
    }

    let given = |n: &str| {
        peer_params.iter().any(|(k, _)| *k == n)
            || svc_params.iter().any(|(k, _)| *k == n)
            || (n == "owner" && owner.is_some())
    };
    let peer_list = |spec: PeerSpec| -> Vec<Peer> {
        match spec {
            Any => Vec::new(),
            Param(n) => peer_params
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            ParamOrPublicZones(n) => match peer_params.iter().find(|(k, _)| *k == n) {
                Some((_, v)) => v.clone(),
                None => ctx
                    .zone_ids_where(|z| z.public_facing)
                    .into_iter()
                    .map(Peer::Zone)
                    .collect(),
            },
            ParamOrTrustedZones(n) => match peer_params.iter().find(|(k, _)| *k == n) {
                Some((_, v)) => v.clone(),
                None => ctx
                    .zone_ids_where(|z| z.trusted)
                    .into_iter()
                    .map(Peer::Zone)
                    .collect(),
            },
            Fixed(addrs) => addrs
                .iter()
                .filter_map(|a| parse_net(a).ok())
                .map(Peer::Net)
                .collect(),
        }
    };
    // A default that resolves to nothing would silently widen the part to "any".
    for part in info.parts {
        for spec in [part.from, part.to] {
            let (ParamOrPublicZones(n) | ParamOrTrustedZones(n)) = spec else {
                continue;
            };
            if !given(n) && peer_list(spec).is_empty() {
                let what = if matches!(spec, ParamOrPublicZones(_)) {
                    "public_facing"
                } else {
                    "trusted"
                };
                diags.push(
                    Report::error(
                        "E0170",
                        format!(
                            "profile `{}` needs `{n}`: no zone is marked `{what} = true`",
                            info.name
                        ),
                    )
                    .label(name.span, format!("`{n}` missing"))
                    .hint(format!("set `{n}` or mark zones `{what} = true`")),
                );
                return None;
            }
        }
    }

    let mut rules = Vec::new();
    let mut excluded_parts = Vec::new();
    let techniques: Vec<_> = info
        .techniques
        .iter()
        .map(|t| rampart_ir::TechniqueId((*t).to_string()))
        .collect();
    let loc = ctx.loc(name.span);
    for part in info.parts {
        let group = part.name.split('.').next().unwrap_or(part.name);
        if excluded.iter().any(|e| e == part.name || e == group) {
            excluded_parts.push(part.name.to_string());
            continue;
        }
        if part.needs.is_some_and(|n| !given(n)) || part.unless.is_some_and(given) {
            continue;
        }
        let services = match part.services {
            ServiceSpec::Any => Vec::new(),
            ServiceSpec::Named(names) => named(names),
            ServiceSpec::ParamOr(n, default) => svc_params
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| named(default)),
            ServiceSpec::DhcpServerReplies => dhcp_replies(),
            ServiceSpec::Param(n) => svc_params
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            ServiceSpec::Literal(lits) => lits
                .iter()
                .filter_map(|l| crate::services::parse_literal(l).ok())
                .collect(),
            ServiceSpec::TcpExcept(names) => tcp_except(names),
        };
        let count = |n: &str, default: u32| {
            counts
                .iter()
                .find(|(k, _)| *k == n)
                .map_or(default, |(_, v)| *v)
        };
        let (mut limit, mut conn_limit, mut synproxy, mut ban, mut app_match) =
            (None, None, None, None, None);
        match part.protect {
            Protect::None => {}
            Protect::Synproxy => synproxy = Some(Synproxy::default()),
            Protect::Limits => {
                let (r, per_s, unit) = rate.unwrap_or((20, 1, RateUnit::Packets));
                limit = Some(Limit {
                    rate: r,
                    per_s,
                    burst: u64::from(count("burst", 40)),
                    unit,
                    per_source: true,
                });
                conn_limit = Some(count("conn_limit", 64));
                ban = Some(Ban {
                    timeout_s: ban_s.unwrap_or(600),
                });
                if flags.iter().any(|(k, b)| *k == "synproxy" && *b) {
                    synproxy = Some(Synproxy::default());
                }
            }
            Protect::App { protocols, negate } => {
                app_match = Some(AppMatch {
                    protocols: protocols.to_vec(),
                    negate,
                })
            }
        }
        let base = if part.allow {
            Action::Accept
        } else {
            default_deny
        };
        // The most specific override wins: exact part name over group.
        let action = overrides
            .iter()
            .find(|(k, _)| k == part.name)
            .or_else(|| overrides.iter().find(|(k, _)| k == group))
            .map_or(base, |(_, a)| *a);
        let candidate = Candidate {
            rule: Rule {
                name: format!("{}/{}", info.name, part.name),
                direction: part.direction,
                from: peer_list(part.from),
                to: peer_list(part.to),
                services: resolve::dedup(services),
                family: Family::Any,
                ct_states: Vec::new(),
                owner: if part.owner { owner.clone() } else { None },
                limit,
                conn_limit,
                synproxy,
                ban,
                app: app_match,
                action,
                log,
                mitigates: techniques.clone(),
                expires: None,
                description: Some(format!("{}: {}", info.name, part.description)),
                origin: RuleOrigin::Profile {
                    profile: info.name.to_string(),
                    part: part.name.to_string(),
                },
                loc: loc.clone(),
            },
            name_span: name.span,
        };
        // Parameters of different families can leave a part nothing to match (resolvers only
        // IPv4, clients only IPv6): say so and leave the dead rule out of the IR.
        if ctx.rule_families(&candidate.rule) == 0 {
            diags.push(
                Report::warning(
                    "W0205",
                    format!(
                        "part `{}` of profile `{}` can never match (its parameters share no address family) and is left out",
                        part.name, info.name
                    ),
                )
                .label(name.span, "profile enabled here")
                .hint("give IPv4 and IPv6 addresses for every zone, set or prefix the profile uses"),
            );
            continue;
        }
        // Parameters the profile cannot check by kind (a UDP service under a SYN proxy): the
        // same checks as a user rule, pointing at the profile.
        let before_check = diags.error_count();
        resolve::check_protections(
            &candidate.rule,
            &resolve::Protections {
                synproxy: None,
                ban: None,
                app: None,
                services: &[],
                rule_span: name.span,
            },
            diags,
        );
        if diags.error_count() > before_check {
            return None;
        }
        rules.push(candidate);
    }
    Some(Expansion {
        rules,
        after,
        use_: ProfileUse {
            name: info.name.to_string(),
            techniques,
            rules: Vec::new(),
            excluded_parts,
            loc,
        },
    })
}

fn unknown_params(f: Fields<'_>, profile: &str, allowed: &[&str], diags: &mut Diags) {
    let before = diags.error_count();
    f.finish(&format!("profile `{profile}`"), allowed, diags);
    // Re-code the generic unknown-key errors as unknown profile parameters.
    diags.recode_since(before, "E0002", "E0104");
}

fn named(names: &[&str]) -> Vec<L4Match> {
    names
        .iter()
        .filter_map(|n| crate::services::lookup(n))
        .flat_map(|s| s.matches())
        .collect()
}

/// TCP to every port except the TCP ports of the named catalogue services.
fn tcp_except(names: &[&str]) -> Vec<L4Match> {
    let mut own: Vec<PortRange> = named(names)
        .into_iter()
        .filter(|m| m.protocol == Some(proto::TCP))
        .flat_map(|m| m.dst_ports)
        .collect();
    own.sort();
    let mut ranges = Vec::new();
    // Port 0 is not a real destination port; start at 1.
    let mut next: u32 = 1;
    for r in own {
        if u32::from(r.lo) > next {
            ranges.push(PortRange {
                lo: next as u16,
                hi: r.lo - 1,
            });
        }
        next = next.max(u32::from(r.hi) + 1);
    }
    if next <= 65_535 {
        ranges.push(PortRange {
            lo: next as u16,
            hi: 65_535,
        });
    }
    vec![L4Match {
        protocol: Some(proto::TCP),
        src_ports: Vec::new(),
        dst_ports: ranges,
        icmp_types: Vec::new(),
        service: None,
    }]
}

fn dhcp_replies() -> Vec<L4Match> {
    let m = |src: u16, dst: u16, name: &str| L4Match {
        protocol: Some(proto::UDP),
        src_ports: vec![PortRange::single(src)],
        dst_ports: vec![PortRange::single(dst)],
        icmp_types: Vec::new(),
        service: Some(name.to_string()),
    };
    vec![m(67, 68, "dhcp"), m(547, 546, "dhcpv6")]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_except_is_the_exact_complement() {
        let m = &tcp_except(&["vnc"])[0];
        let lo_hi: Vec<(u16, u16)> = m.dst_ports.iter().map(|r| (r.lo, r.hi)).collect();
        assert_eq!(
            lo_hi,
            vec![(1, 5499), (5501, 5799), (5801, 5899), (5904, 65535)]
        );
        let ssh = &tcp_except(&["ssh"])[0];
        assert!(!ssh.dst_ports.iter().any(|r| r.contains(22)));
        assert!(ssh.dst_ports.iter().any(|r| r.contains(2222)));
    }

    #[test]
    fn every_profile_is_well_formed() {
        let mut names: Vec<_> = PROFILES.iter().map(|p| p.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), PROFILES.len());
        for p in PROFILES {
            assert!(!p.techniques.is_empty(), "{}", p.name);
            for t in p.techniques {
                assert!(rampart_attack::lookup(t).is_some(), "{}: {t}", p.name);
            }
            let mut parts: Vec<_> = p.parts.iter().map(|x| x.name).collect();
            parts.sort_unstable();
            parts.dedup();
            assert_eq!(parts.len(), p.parts.len(), "{}", p.name);
            for part in p.parts {
                assert!(part.name.contains('.'), "{}", part.name);
                for spec in [part.from, part.to] {
                    if let Param(n) | ParamOrPublicZones(n) | ParamOrTrustedZones(n) = spec {
                        assert!(p.parameters.iter().any(|x| x.name == n), "{}: {n}", p.name);
                    }
                }
                if let ServiceSpec::Named(ns)
                | ServiceSpec::ParamOr(_, ns)
                | ServiceSpec::TcpExcept(ns) = part.services
                {
                    for n in ns {
                        assert!(crate::services::lookup(n).is_some(), "{n}");
                    }
                }
                if let ServiceSpec::Literal(ls) = part.services {
                    for l in ls {
                        assert!(crate::services::parse_literal(l).is_ok(), "{l}");
                    }
                }
                if let ServiceSpec::Param(n) = part.services {
                    assert!(p.parameters.iter().any(|x| x.name == n), "{}: {n}", p.name);
                }
                for n in part.needs.iter().chain(part.unless.iter()) {
                    assert!(p.parameters.iter().any(|x| x.name == *n), "{}: {n}", p.name);
                }
            }
        }
    }
}
