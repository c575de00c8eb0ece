//! The range's topology: parsed from `lab/topology.toml` (embedded in the binary) and built as
//! namespaces, veth pairs and bridges around a gateway namespace.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::netns::{run_in, run_prefix, Namespaces};
use crate::LabError;

/// The topology shipped with Rampart.
pub const DEFAULT_TOPOLOGY: &str = include_str!("../../../lab/topology.toml");

/// Name of the gateway host in scenarios: it resolves to the gateway's address on the client's
/// segment.
pub const GATEWAY: &str = "gw";

/// The whole range.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Segments, one per gateway interface.
    #[serde(rename = "segment")]
    pub segments: Vec<Segment>,
}

/// One gateway interface and the hosts behind it.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// Segment name (also the namespace name of non-bridged segments).
    pub name: String,
    /// Gateway interface name (a bridge when `bridge`).
    pub iface: String,
    /// A bridge with one namespace per host.
    #[serde(default)]
    pub bridge: bool,
    /// Gateway addresses with prefix length, IPv4 and IPv6.
    pub gateway: Vec<IpNet>,
    /// Hosts.
    pub hosts: Vec<HostSpec>,
}

/// A host as written in the topology.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// Name used by scenarios.
    pub name: String,
    /// Addresses (one IPv4, one IPv6 at most each).
    pub addrs: Vec<IpAddr>,
}

/// Where a host lives once the range is up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    /// Scenario name.
    pub name: String,
    /// Full namespace name.
    pub ns: String,
    /// Its IPv4 address, if any.
    pub v4: Option<IpAddr>,
    /// Its IPv6 address, if any.
    pub v6: Option<IpAddr>,
    /// Segment name.
    pub segment: String,
}

impl Host {
    /// The address of the family asked for.
    pub fn addr(&self, v6: bool) -> Option<IpAddr> {
        if v6 {
            self.v6
        } else {
            self.v4
        }
    }
}

impl Topology {
    /// Parse a topology file.
    pub fn parse(text: &str) -> Result<Self, LabError> {
        let topology: Topology = toml::from_str(text).map_err(|e| LabError::Topology {
            message: e.to_string(),
        })?;
        topology.validate()?;
        Ok(topology)
    }

    fn validate(&self) -> Result<(), LabError> {
        let mut names = std::collections::BTreeSet::new();
        for segment in &self.segments {
            if segment.iface.len() > 12 {
                // Why: bridge ports are named `<iface>p<n>`, and Linux caps names at 15 bytes.
                return Err(LabError::Topology {
                    message: format!("interface name `{}` longer than 12 bytes", segment.iface),
                });
            }
            for host in &segment.hosts {
                if !names.insert(host.name.clone()) || host.name == GATEWAY {
                    return Err(LabError::Topology {
                        message: format!("host name `{}` used twice", host.name),
                    });
                }
            }
        }
        Ok(())
    }

    /// Namespace of the gateway.
    pub fn gateway_ns() -> String {
        format!("{}gw", run_prefix())
    }

    /// Every host with its namespace and addresses.
    pub fn hosts(&self) -> Vec<Host> {
        let mut hosts = Vec::new();
        for segment in &self.segments {
            for spec in &segment.hosts {
                let ns = if segment.bridge {
                    format!("{}{}", run_prefix(), spec.name)
                } else {
                    format!("{}{}", run_prefix(), segment.name)
                };
                hosts.push(Host {
                    name: spec.name.clone(),
                    ns,
                    v4: spec.addrs.iter().copied().find(IpAddr::is_ipv4),
                    v6: spec.addrs.iter().copied().find(IpAddr::is_ipv6),
                    segment: segment.name.clone(),
                });
            }
        }
        hosts
    }

    /// The host named `name`; `gw` resolves to the gateway's addresses on `client_segment`.
    pub fn host(&self, name: &str, client_segment: &str) -> Option<Host> {
        if name == GATEWAY {
            let segment = self.segments.iter().find(|s| s.name == client_segment)?;
            let addr = |v6: bool| {
                segment
                    .gateway
                    .iter()
                    .map(IpNet::addr)
                    .find(|a| a.is_ipv6() == v6)
            };
            return Some(Host {
                name: GATEWAY.into(),
                ns: Self::gateway_ns(),
                v4: addr(false),
                v6: addr(true),
                segment: client_segment.into(),
            });
        }
        self.hosts().into_iter().find(|h| h.name == name)
    }

    /// Create every namespace, link, address and route. The returned guard removes them.
    pub fn build(&self) -> Result<Namespaces, LabError> {
        let mut namespaces = Namespaces::new();
        let gw = namespaces.add("gw")?;
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"] {
            run_in(&gw, "sysctl", &["-qw", key])?;
        }
        for segment in &self.segments {
            if segment.bridge {
                self.build_bridged(segment, &gw, &mut namespaces)?;
            } else {
                self.build_flat(segment, &gw, &mut namespaces)?;
            }
            for net in &segment.gateway {
                add_addr(&gw, &segment.iface, &net.to_string())?;
            }
            run_in(&gw, "ip", &["link", "set", &segment.iface, "up"])?;
            // Hosts outside the segment's prefix (the metadata address) are on-link routes.
            for spec in &segment.hosts {
                for addr in &spec.addrs {
                    if !segment.gateway.iter().any(|n| n.contains(addr)) {
                        let host = host_prefix(*addr);
                        run_in(&gw, "ip", &["route", "add", &host, "dev", &segment.iface])?;
                    }
                }
            }
        }
        wait_links_ready(&namespaces)?;
        Ok(namespaces)
    }

    fn build_flat(
        &self,
        segment: &Segment,
        gw: &str,
        namespaces: &mut Namespaces,
    ) -> Result<(), LabError> {
        let ns = namespaces.add(&segment.name)?;
        link_veth(gw, &segment.iface, &ns)?;
        for spec in &segment.hosts {
            for addr in &spec.addrs {
                add_addr(&ns, "eth0", &host_in_segment(*addr, segment))?;
            }
        }
        host_up_and_routes(&ns, segment)
    }

    fn build_bridged(
        &self,
        segment: &Segment,
        gw: &str,
        namespaces: &mut Namespaces,
    ) -> Result<(), LabError> {
        run_in(gw, "ip", &["link", "add", &segment.iface, "type", "bridge"])?;
        for (index, spec) in segment.hosts.iter().enumerate() {
            let ns = namespaces.add(&spec.name)?;
            let port = format!("{}p{}", segment.iface, index + 1);
            link_veth(gw, &port, &ns)?;
            run_in(gw, "ip", &["link", "set", &port, "master", &segment.iface])?;
            run_in(gw, "ip", &["link", "set", &port, "up"])?;
            for addr in &spec.addrs {
                add_addr(&ns, "eth0", &host_in_segment(*addr, segment))?;
            }
            host_up_and_routes(&ns, segment)?;
        }
        Ok(())
    }
}

/// The longest a fresh range may take to bring its links operationally up. The kernel's link watcher
/// is rate-limited to about one pass a second across the whole machine, so ~1 s is normal.
const LINKS_READY_TIMEOUT_MS: u64 = 5_000;
/// How often the links are checked while waiting.
const LINKS_READY_POLL_MS: u64 = 20;

/// Wait until every link that is up in the range's namespaces is operationally up.
///
/// Why: a link whose carrier just came up stays operationally down until the kernel's link
/// watcher runs (the same pass activates its transmit queue), ~0.65 s later for the range's
/// bridge when many links change at once. A bridge in that state received a neighbour
/// solicitation and sent no advertisement, so the range's first IPv6 flow stalled for a second
/// and a case the ruleset allows looked blocked (or a blocked one blocked for the wrong reason).
fn wait_links_ready(namespaces: &Namespaces) -> Result<(), LabError> {
    let started = std::time::Instant::now();
    let timeout = std::time::Duration::from_millis(LINKS_READY_TIMEOUT_MS);
    for ns in namespaces.names() {
        loop {
            let output = run_in(ns, "ip", &["-j", "link", "show", "up"])?;
            let not_ready =
                links_not_ready(&String::from_utf8_lossy(&output.stdout)).map_err(|message| {
                    LabError::Topology {
                        message: format!("`ip -j link show up` in {ns}: {message}"),
                    }
                })?;
            if not_ready.is_empty() {
                break;
            }
            if started.elapsed() >= timeout {
                return Err(LabError::Topology {
                    message: format!(
                        "links in {ns} still not operationally up after {LINKS_READY_TIMEOUT_MS} ms: {}",
                        not_ready.join(", ")
                    ),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(LINKS_READY_POLL_MS));
        }
    }
    Ok(())
}

/// One link as `ip -j link` reports it (only the fields the readiness check reads).
#[derive(Debug, Deserialize)]
struct LinkState {
    ifname: String,
    #[serde(default)]
    operstate: String,
}

/// The links in `ip -j link show up` output whose operational state is neither up nor unknown
/// (loopback and some virtual links report unknown), each as `name (state S)`.
fn links_not_ready(json: &str) -> Result<Vec<String>, String> {
    let links: Vec<LinkState> = serde_json::from_str(json).map_err(|e| e.to_string())?;
    Ok(links
        .into_iter()
        .filter(|link| link.operstate != "UP" && link.operstate != "UNKNOWN")
        .map(|link| format!("{} (state {})", link.ifname, link.operstate))
        .collect())
}

/// A veth pair: `gw_side` in the gateway, `eth0` in `ns`.
fn link_veth(gw: &str, gw_side: &str, ns: &str) -> Result<(), LabError> {
    run_in(
        gw,
        "ip",
        &[
            "link", "add", gw_side, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )?;
    Ok(())
}

fn add_addr(ns: &str, dev: &str, cidr: &str) -> Result<(), LabError> {
    if cidr.contains(':') {
        // Why nodad: duplicate address detection would hold IPv6 addresses tentative for ~1 s.
        run_in(ns, "ip", &["-6", "addr", "add", cidr, "dev", dev, "nodad"])?;
    } else {
        run_in(ns, "ip", &["addr", "add", cidr, "dev", dev])?;
    }
    Ok(())
}

fn host_prefix(addr: IpAddr) -> String {
    match addr {
        IpAddr::V4(a) => format!("{a}/32"),
        IpAddr::V6(a) => format!("{a}/128"),
    }
}

/// The host's address with the segment's prefix length when it lies in the segment.
fn host_in_segment(addr: IpAddr, segment: &Segment) -> String {
    match segment.gateway.iter().find(|n| n.contains(&addr)) {
        Some(net) => format!("{addr}/{}", net.prefix_len()),
        None => host_prefix(addr),
    }
}

fn host_up_and_routes(ns: &str, segment: &Segment) -> Result<(), LabError> {
    run_in(ns, "ip", &["link", "set", "eth0", "up"])?;
    for net in &segment.gateway {
        let via = net.addr().to_string();
        if net.addr().is_ipv6() {
            run_in(ns, "ip", &["-6", "route", "add", "default", "via", &via])?;
        } else {
            run_in(ns, "ip", &["route", "add", "default", "via", &via])?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_ready_only_when_operationally_up() {
        // The gateway of a failing range test run, right after the build: the bridge's ports
        // are up, the bridge itself is not yet.
        let json = r#"[
            {"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"qdisc":"noqueue","operstate":"UNKNOWN"},
            {"ifindex":4,"ifname":"corp0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"qdisc":"noqueue","operstate":"DOWN"},
            {"ifindex":5,"ifname":"corp0p1","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"qdisc":"noqueue","operstate":"UP"},
            {"ifindex":6,"ifname":"wan0","flags":["BROADCAST","MULTICAST","UP","LOWER_UP"],"qdisc":"noqueue","operstate":"LOWERLAYERDOWN"}
        ]"#;
        assert_eq!(
            links_not_ready(json).unwrap(),
            ["corp0 (state DOWN)", "wan0 (state LOWERLAYERDOWN)"]
        );
        let ready = r#"[{"ifname":"eth0","operstate":"UP"},{"ifname":"lo","operstate":"UNKNOWN"}]"#;
        assert!(links_not_ready(ready).unwrap().is_empty());
        // A link without an operational state is not taken as ready.
        let missing = r#"[{"ifname":"eth0"}]"#;
        assert_eq!(links_not_ready(missing).unwrap(), ["eth0 (state )"]);
        assert!(links_not_ready("not json").is_err());
    }

    #[test]
    fn default_topology_parses_and_names_are_unique() {
        let topology = Topology::parse(DEFAULT_TOPOLOGY).unwrap();
        assert_eq!(topology.segments.len(), 6);
        let hosts = topology.hosts();
        assert!(hosts.iter().all(|h| h.v4.is_some() && h.v6.is_some()));
        let ws1 = topology.host("corp-ws1", "corp").unwrap();
        assert_eq!(ws1.ns, format!("rlab-{}-corp-ws1", std::process::id()));
        let web = topology.host("public-web", "corp").unwrap();
        assert_eq!(web.ns, format!("rlab-{}-internet", std::process::id()));
        let gw = topology.host("gw", "admin").unwrap();
        assert_eq!(gw.v4, Some("192.0.2.193".parse().unwrap()));
        assert_eq!(gw.v6, Some("2001:db8:40::1".parse().unwrap()));
    }

    #[test]
    fn every_address_is_a_documentation_or_lab_owned_address() {
        let topology = Topology::parse(DEFAULT_TOPOLOGY).unwrap();
        let allowed: Vec<IpNet> = [
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8::/32",
            // The metadata address exists only inside the range's internet namespace.
            "169.254.169.254/32",
            "fd00:ec2::254/128",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for host in topology.hosts() {
            for addr in [host.v4, host.v6].into_iter().flatten() {
                assert!(allowed.iter().any(|n| n.contains(&addr)), "{addr}");
            }
        }
    }

    #[test]
    fn duplicate_host_names_are_rejected() {
        let text = r#"
[[segment]]
name = "a"
iface = "a0"
gateway = ["192.0.2.1/24"]
hosts = [{ name = "x", addrs = ["192.0.2.2"] }, { name = "x", addrs = ["192.0.2.3"] }]
"#;
        assert!(Topology::parse(text).is_err());
    }
}
