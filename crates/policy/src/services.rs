//! The built-in service catalogue (IANA ports of the services the M1037 seed talks about) and
//! the literal service syntax (`tcp/22`, `udp/1000-2000`, `tcp/80,443`, `icmp/echo-request`,
//! `icmpv6/128`, `proto/47`). Pure data and parsing.

use rampart_ir::{proto, L4Match, PortRange};
use serde::Serialize;

/// A named service of the built-in catalogue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct NamedService {
    /// Name as written in policies.
    pub name: &'static str,
    /// Its protocol/port alternatives in literal syntax.
    pub spec: &'static [&'static str],
    /// What it is, and caveats.
    pub description: &'static str,
}

impl NamedService {
    /// The service as IR matches, each tagged with the service name.
    pub fn matches(&self) -> Vec<L4Match> {
        self.spec
            .iter()
            .filter_map(|s| parse_literal(s).ok())
            .map(|mut m| {
                m.service = Some(self.name.to_string());
                m
            })
            .collect()
    }
}

macro_rules! svc {
    ($name:literal, [$($spec:literal),+], $desc:literal) => {
        NamedService { name: $name, spec: &[$($spec),+], description: $desc }
    };
}

/// Every built-in service, sorted by name.
pub const CATALOGUE: &[NamedService] = &[
    svc!("ah", ["proto/51"], "IPsec Authentication Header (IP protocol 51)."),
    svc!("anydesk", ["tcp/7070"], "AnyDesk remote desktop direct connections (remote access tool, T1219)."),
    svc!("bits", ["tcp/80", "tcp/443"], "Background Intelligent Transfer Service: plain HTTP/HTTPS, indistinguishable from web traffic at L4; restrict it by destination or via the egress proxy."),
    svc!("dhcp", ["udp/67-68"], "DHCPv4 server (67) and client (68)."),
    svc!("dhcpv6", ["udp/546-547"], "DHCPv6 client (546) and server (547)."),
    svc!("dns", ["udp/53", "tcp/53"], "Domain Name System."),
    svc!("doh", ["tcp/443", "udp/443"], "DNS over HTTPS: HTTPS to the resolver; only meaningful together with a set of DoH endpoint addresses."),
    svc!("doq", ["udp/853"], "DNS over QUIC."),
    svc!("dot", ["tcp/853"], "DNS over TLS."),
    svc!("esp", ["proto/50"], "IPsec Encapsulating Security Payload (IP protocol 50)."),
    svc!("ftp", ["tcp/20-21"], "FTP data (20) and control (21)."),
    svc!("ftps", ["tcp/989-990"], "FTP over TLS, implicit mode."),
    svc!("gre", ["proto/47"], "Generic Routing Encapsulation (IP protocol 47)."),
    svc!("http", ["tcp/80"], "HTTP."),
    svc!("http-alt", ["tcp/8080"], "HTTP alternate port, common for proxies."),
    svc!("https", ["tcp/443", "udp/443"], "HTTPS, including HTTP/3 over QUIC (udp/443)."),
    svc!("imap", ["tcp/143"], "IMAP."),
    svc!("imaps", ["tcp/993"], "IMAP over TLS."),
    svc!("ipip", ["proto/4"], "IPv4-in-IPv4 encapsulation (IP protocol 4)."),
    svc!("ipsec", ["udp/500", "udp/4500", "proto/50", "proto/51"], "IPsec: IKE (udp/500), NAT traversal (udp/4500), ESP and AH."),
    svc!("ipv6-in-ipv4", ["proto/41"], "6in4/6to4 tunnels (IP protocol 41)."),
    svc!("kerberos", ["tcp/88", "udp/88"], "Kerberos KDC."),
    svc!("ldap", ["tcp/389", "udp/389"], "LDAP and CLDAP."),
    svc!("ldaps", ["tcp/636"], "LDAP over TLS."),
    svc!("llmnr", ["udp/5355", "tcp/5355"], "Link-Local Multicast Name Resolution (poisoning target, T1557.001)."),
    svc!("mdns", ["udp/5353"], "Multicast DNS."),
    svc!("mqtt", ["tcp/1883"], "MQTT publish/subscribe."),
    svc!("mqtts", ["tcp/8883"], "MQTT over TLS."),
    svc!("msrpc", ["tcp/135"], "Microsoft RPC endpoint mapper."),
    svc!("mssql", ["tcp/1433"], "Microsoft SQL Server."),
    svc!("mysql", ["tcp/3306"], "MySQL/MariaDB."),
    svc!("netbios", ["udp/137", "udp/138", "tcp/139"], "All NetBIOS services: name (udp/137), datagram (udp/138), session (tcp/139)."),
    svc!("netbios-dgm", ["udp/138"], "NetBIOS datagram service."),
    svc!("netbios-ns", ["udp/137"], "NetBIOS name service (NBT-NS, poisoning target, T1557.001)."),
    svc!("netbios-ssn", ["tcp/139"], "NetBIOS session service (SMB over NetBIOS)."),
    svc!("nfs", ["tcp/2049", "udp/2049"], "Network File System."),
    svc!("ntp", ["udp/123"], "Network Time Protocol."),
    svc!("openvpn", ["udp/1194", "tcp/1194"], "OpenVPN."),
    svc!("ping", ["icmp/echo-request", "icmpv6/echo-request"], "ICMP and ICMPv6 echo requests."),
    svc!("pop3", ["tcp/110"], "POP3."),
    svc!("pop3s", ["tcp/995"], "POP3 over TLS."),
    svc!("postgres", ["tcp/5432"], "PostgreSQL."),
    svc!("rdp", ["tcp/3389", "udp/3389"], "Remote Desktop Protocol."),
    svc!("redis", ["tcp/6379"], "Redis."),
    svc!("rsync", ["tcp/873"], "rsync daemon."),
    svc!("sftp", ["tcp/22"], "SFTP (runs over SSH: the same port as `ssh`)."),
    svc!("sip", ["udp/5060", "tcp/5060"], "SIP signalling."),
    svc!("smb", ["tcp/445"], "SMB over TCP (including SMBv1; versions are not distinguishable at L4)."),
    svc!("smtp", ["tcp/25"], "SMTP relay."),
    svc!("smtps", ["tcp/465"], "SMTP submission over implicit TLS."),
    svc!("snmp", ["udp/161"], "SNMP agent."),
    svc!("snmp-trap", ["udp/162"], "SNMP traps."),
    svc!("socks", ["tcp/1080"], "SOCKS proxy."),
    svc!("ssh", ["tcp/22"], "Secure Shell."),
    svc!("submission", ["tcp/587"], "Mail submission."),
    svc!("syslog", ["udp/514"], "Syslog."),
    svc!("teamviewer", ["tcp/5938", "udp/5938"], "TeamViewer (remote access tool, T1219)."),
    svc!("telnet", ["tcp/23"], "Telnet."),
    svc!("tftp", ["udp/69"], "Trivial FTP (network device configuration transfer)."),
    svc!("tor", ["tcp/9001", "tcp/9030", "tcp/9050-9051", "tcp/9150"], "Tor ORPort (9001), DirPort (9030), SOCKS and control ports (9050-9051, 9150). Relays can use any port: pair with a Tor address feed."),
    svc!("vnc", ["tcp/5900-5903", "tcp/5800", "tcp/5500"], "VNC servers (5900-5903), browser access (5800), listening viewer (5500)."),
    svc!("webdav", ["tcp/80", "tcp/443"], "WebDAV: HTTP/HTTPS, indistinguishable from web traffic at L4; filter it by destination or in the egress proxy."),
    svc!("winrm", ["tcp/5985-5986"], "Windows Remote Management (HTTP 5985, HTTPS 5986)."),
    svc!("wireguard", ["udp/51820"], "WireGuard default port."),
    svc!("wpad", ["udp/53", "tcp/53", "tcp/80"], "Web Proxy Auto-Discovery: found via DNS (`wpad.<domain>`) or DHCP option 252, fetched over HTTP; blocking this blocks DNS and HTTP, so prefer filtering the `wpad` name in the DNS filter."),
    svc!("x11", ["tcp/6000-6063"], "X11 display servers."),
];

/// The built-in service named `name`.
pub fn lookup(name: &str) -> Option<&'static NamedService> {
    CATALOGUE.iter().find(|s| s.name == name)
}

/// ICMP (v4) type names, nft spelling.
pub const ICMP_TYPES: &[(&str, u8)] = &[
    ("echo-reply", 0),
    ("destination-unreachable", 3),
    ("source-quench", 4),
    ("redirect", 5),
    ("echo-request", 8),
    ("router-advertisement", 9),
    ("router-solicitation", 10),
    ("time-exceeded", 11),
    ("parameter-problem", 12),
    ("timestamp-request", 13),
    ("timestamp-reply", 14),
    ("info-request", 15),
    ("info-reply", 16),
    ("address-mask-request", 17),
    ("address-mask-reply", 18),
];

/// ICMPv6 type names, nft spelling.
pub const ICMPV6_TYPES: &[(&str, u8)] = &[
    ("destination-unreachable", 1),
    ("packet-too-big", 2),
    ("time-exceeded", 3),
    ("parameter-problem", 4),
    ("echo-request", 128),
    ("echo-reply", 129),
    ("mld-listener-query", 130),
    ("mld-listener-report", 131),
    ("mld-listener-done", 132),
    ("nd-router-solicit", 133),
    ("nd-router-advert", 134),
    ("nd-neighbor-solicit", 135),
    ("nd-neighbor-advert", 136),
    ("nd-redirect", 137),
    ("router-renumbering", 138),
    ("mld2-listener-report", 143),
];

/// IP protocol names accepted after `proto/`.
pub const PROTOCOL_NAMES: &[(&str, u8)] = &[
    ("icmp", proto::ICMP),
    ("igmp", 2),
    ("ipip", 4),
    ("tcp", proto::TCP),
    ("udp", proto::UDP),
    ("ipv6", 41),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("icmpv6", proto::ICMPV6),
    ("ospf", 89),
    ("pim", 103),
    ("vrrp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udplite", 136),
];

/// Protocol words that may stand alone or before `/` with ports.
const PORT_PROTOCOLS: &[(&str, u8)] = &[("tcp", proto::TCP), ("udp", proto::UDP), ("sctp", 132)];

/// Why a service literal was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LiteralError {
    /// Diagnostic code.
    pub code: &'static str,
    /// Message.
    pub message: String,
    /// Hint.
    pub hint: Option<String>,
}

fn err(code: &'static str, message: String, hint: Option<&str>) -> LiteralError {
    LiteralError {
        code,
        message,
        hint: hint.map(str::to_string),
    }
}

/// Whether `s` is written in literal syntax (rather than naming a service).
pub fn is_literal(s: &str) -> bool {
    s.contains('/') || matches!(s, "tcp" | "udp" | "sctp" | "icmp" | "icmpv6")
}

/// Parse one literal service (`tcp/22`, `udp/1000-2000`, `tcp/80,443`, `udp/67->68` (source
/// port 67 to destination port 68), `icmp/echo-request`, `icmpv6/128`, `proto/47`, or a bare
/// `tcp`/`udp`/`sctp`/`icmp`/`icmpv6`).
pub fn parse_literal(s: &str) -> Result<L4Match, LiteralError> {
    let (head, tail) = match s.split_once('/') {
        Some((h, t)) => (h, Some(t)),
        None => (s, None),
    };
    let mut m = L4Match {
        protocol: None,
        src_ports: Vec::new(),
        dst_ports: Vec::new(),
        icmp_types: Vec::new(),
        service: None,
    };
    if let Some(&(_, p)) = PORT_PROTOCOLS.iter().find(|(n, _)| *n == head) {
        m.protocol = Some(p);
        if let Some(t) = tail {
            // `SRC->DST` names source ports too (`udp/67->68`); `any` on either side is any.
            let (src, dst) = match t.split_once("->") {
                Some((src, dst)) => (Some(src.trim()), dst.trim()),
                None => (None, t),
            };
            let ports_or_any = |x: &str| {
                if x == "any" {
                    Ok(Vec::new())
                } else {
                    parse_ports(x)
                }
            };
            if let Some(src) = src {
                m.src_ports = ports_or_any(src)?;
                m.dst_ports = ports_or_any(dst)?;
            } else {
                m.dst_ports = parse_ports(dst)?;
            }
        }
        return Ok(m);
    }
    match head {
        "icmp" | "icmpv6" => {
            let (p, table) = if head == "icmp" {
                (proto::ICMP, ICMP_TYPES)
            } else {
                (proto::ICMPV6, ICMPV6_TYPES)
            };
            m.protocol = Some(p);
            if let Some(t) = tail {
                for item in t.split(',') {
                    let item = item.trim();
                    let ty = table
                        .iter()
                        .find(|(n, _)| *n == item)
                        .map(|(_, v)| *v)
                        .or_else(|| item.parse::<u8>().ok());
                    match ty {
                        Some(v) => {
                            if !m.icmp_types.contains(&v) {
                                m.icmp_types.push(v);
                            }
                        }
                        None => {
                            let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                            return Err(LiteralError {
                                code: "E0124",
                                message: format!("unknown {head} type `{item}`"),
                                hint: crate::diag::did_you_mean(item, names.iter().copied())
                                    .or_else(|| {
                                        Some(format!(
                                            "use a number 0-255 or one of: {}",
                                            names.join(", ")
                                        ))
                                    }),
                            });
                        }
                    }
                }
                m.icmp_types.sort_unstable();
            }
            Ok(m)
        }
        "proto" => {
            let t = tail.unwrap_or("").trim();
            let p = PROTOCOL_NAMES
                .iter()
                .find(|(n, _)| *n == t)
                .map(|(_, v)| *v)
                .or_else(|| t.parse::<u8>().ok());
            match p {
                Some(p) => {
                    m.protocol = Some(p);
                    Ok(m)
                }
                None => Err(err(
                    "E0123",
                    format!("bad protocol `{t}` in `{s}`"),
                    Some("write `proto/N` with N in 0-255, or a name such as `proto/gre`"),
                )),
            }
        }
        _ => Err(LiteralError {
            code: "E0123",
            message: format!("unknown protocol `{head}` in service `{s}`"),
            hint: crate::diag::did_you_mean(
                head,
                ["tcp", "udp", "sctp", "icmp", "icmpv6", "proto"],
            )
            .or_else(|| {
                Some("literal services are tcp/PORTS, udp/PORTS, sctp/PORTS, icmp/TYPE, icmpv6/TYPE or proto/N".into())
            }),
        }),
    }
}

/// `22`, `80,443`, `1000-2000`, mixed; sorted and merged.
pub fn parse_ports(t: &str) -> Result<Vec<PortRange>, LiteralError> {
    let mut out: Vec<PortRange> = Vec::new();
    for item in t.split(',') {
        let item = item.trim();
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (port(a.trim(), item)?, port(b.trim(), item)?),
            None => {
                let p = port(item, item)?;
                (p, p)
            }
        };
        if lo > hi {
            return Err(err(
                "E0122",
                format!("port range `{item}` is reversed"),
                Some(&format!("write `{hi}-{lo}`")),
            ));
        }
        out.push(PortRange { lo, hi });
    }
    Ok(merge_ports(out))
}

fn port(s: &str, item: &str) -> Result<u16, LiteralError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err(
            "E0122",
            format!("bad port `{item}`"),
            Some("ports are numbers 0-65535, ranges `lo-hi`, lists `80,443`"),
        ));
    }
    s.parse::<u16>().map_err(|_| {
        err(
            "E0122",
            format!("port `{s}` is out of range"),
            Some("ports are 0-65535"),
        )
    })
}

/// Sort and merge overlapping or adjacent ranges.
pub fn merge_ports(mut v: Vec<PortRange>) -> Vec<PortRange> {
    v.sort();
    let mut out: Vec<PortRange> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if u32::from(r.lo) <= u32::from(last.hi) + 1 => {
                last.hi = last.hi.max(r.hi);
            }
            _ => out.push(r),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_sorted_unique_and_parses() {
        for w in CATALOGUE.windows(2) {
            assert!(w[0].name < w[1].name, "{} !< {}", w[0].name, w[1].name);
        }
        for s in CATALOGUE {
            assert_eq!(s.matches().len(), s.spec.len(), "{}", s.name);
        }
    }

    #[test]
    fn literals() {
        let m = parse_literal("tcp/80,443,8000-8010,8005").unwrap();
        assert_eq!(m.protocol, Some(6));
        assert_eq!(
            m.dst_ports,
            vec![
                PortRange::single(80),
                PortRange::single(443),
                PortRange { lo: 8000, hi: 8010 }
            ]
        );
        assert_eq!(
            parse_literal("icmpv6/echo-request,1").unwrap().icmp_types,
            vec![1, 128]
        );
        assert_eq!(parse_literal("proto/gre").unwrap().protocol, Some(47));
        assert_eq!(parse_literal("udp").unwrap().dst_ports, vec![]);
        let dhcp = parse_literal("udp/67->68").unwrap();
        assert_eq!(
            (dhcp.src_ports, dhcp.dst_ports),
            (vec![PortRange::single(67)], vec![PortRange::single(68)])
        );
        let any_dst = parse_literal("tcp/1024-65535->any").unwrap();
        assert_eq!(
            any_dst.src_ports,
            vec![PortRange {
                lo: 1024,
                hi: 65535
            }]
        );
        assert!(any_dst.dst_ports.is_empty());
        assert_eq!(parse_literal("udp/67->").unwrap_err().code, "E0122");
        assert_eq!(parse_literal("tcp/70000").unwrap_err().code, "E0122");
        assert_eq!(parse_literal("tcp/90-80").unwrap_err().code, "E0122");
        assert_eq!(parse_literal("tpc/80").unwrap_err().code, "E0123");
        assert_eq!(parse_literal("icmp/echo-requst").unwrap_err().code, "E0124");
        assert_eq!(parse_literal("proto/300").unwrap_err().code, "E0123");
    }

    #[test]
    fn netbios_is_the_three_services() {
        let all: Vec<_> = lookup("netbios").unwrap().matches();
        assert_eq!(all.len(), 3);
        assert_eq!(
            lookup("smb").unwrap().matches()[0].dst_ports,
            vec![PortRange::single(445)]
        );
    }
}
