//! What happens to a component's traffic while it is down, when the run configuration makes it a
//! choice (`on_down`). Fail-closed (the default) adds nothing: nothing listens, so the traffic the
//! component would have handled fails. Fail-open for the DNS forwarder: while it is not ready,
//! queries to its listen addresses are DNAT-ed to its first plain (UDP/TCP) upstream, answered
//! unfiltered, from a table of the daemon's own (`inet <table>_down`, NAT priority -110, before
//! any NAT of the policy). The ruleset text is built here (pure); the daemon loads it with
//! `nft -f` whenever the set of down fail-open components changes.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;

use crate::DaemonError;

/// One redirect while the component is down: queries to `listen` go to `upstream`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Redirect {
    /// An address the forwarder listens on (an unspecified address: any local address).
    pub listen: SocketAddr,
    /// Where its queries go instead.
    pub upstream: SocketAddr,
}

/// A fail-open component and its redirects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailOpen {
    /// Component name.
    pub component: String,
    /// Its redirects.
    pub redirects: Vec<Redirect>,
}

/// The daemon's own table for fail-open redirects, next to the policy's table.
pub fn table_name(policy_table: &str) -> String {
    format!("{policy_table}_down")
}

/// The redirects of a DNS forwarder configuration (TOML text): each listen address to the
/// first plain upstream of the same family. Refused when there is none (DoT upstreams cannot
/// take a client's plain query) or a listen port is 0 (unknown until bound).
pub fn dns_redirects(config_text: &str, config_path: &Path) -> Result<Vec<Redirect>, DaemonError> {
    let fail = |msg: String| {
        DaemonError::Config(format!(
            "{}: on_down = \"open\": {msg}",
            config_path.display()
        ))
    };
    let value: toml::Value = toml::from_str(config_text).map_err(|e| fail(e.to_string()))?;
    let listen: Vec<SocketAddr> = value
        .get("listen")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| fail("no `listen` list".into()))?
        .iter()
        .map(|v| {
            v.as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| fail(format!("listen {v} is not ADDR:PORT")))
        })
        .collect::<Result<_, _>>()?;
    let plain: Vec<SocketAddr> = value
        .get("upstreams")
        .and_then(toml::Value::as_array)
        .map(|ups| {
            ups.iter()
                .filter(|u| {
                    matches!(
                        u.get("proto").and_then(toml::Value::as_str),
                        None | Some("udp") | Some("tcp")
                    )
                })
                .filter_map(|u| u.get("addr")?.as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let mut redirects = Vec::new();
    for addr in listen {
        if addr.port() == 0 {
            return Err(fail(format!(
                "listen {addr}: port 0 is only known once bound"
            )));
        }
        let Some(upstream) = plain.iter().find(|u| u.is_ipv4() == addr.is_ipv4()) else {
            return Err(fail(format!(
                "no plain (udp or tcp) upstream of the same family as listen {addr} to send its queries to while it is down"
            )));
        };
        redirects.push(Redirect {
            listen: addr,
            upstream: *upstream,
        });
    }
    Ok(redirects)
}

/// The table (replacing any previous version, in one transaction) with the redirects of the
/// components in `down`.
pub fn ruleset(policy_table: &str, fail_open: &[FailOpen], down: &BTreeSet<String>) -> String {
    let table = table_name(policy_table);
    let mut rules = String::new();
    for component in fail_open.iter().filter(|c| down.contains(&c.component)) {
        for r in &component.redirects {
            let (family, target) = match r.upstream {
                SocketAddr::V4(a) => ("ip", format!("{}:{}", a.ip(), a.port())),
                SocketAddr::V6(a) => ("ip6", format!("[{}]:{}", a.ip(), a.port())),
            };
            let destination = if r.listen.ip().is_unspecified() {
                let nfproto = if family == "ip" { "ipv4" } else { "ipv6" };
                format!("meta nfproto {nfproto} fib daddr type local")
            } else {
                format!("{family} daddr {}", r.listen.ip())
            };
            for proto in ["udp", "tcp"] {
                rules.push_str(&format!(
                    "    {destination} {proto} dport {} counter dnat {family} to {target} comment \"{} down\"\n",
                    r.listen.port(),
                    component.component
                ));
            }
        }
    }
    let mut text = format!("table inet {table} {{\n}}\ndelete table inet {table}\n");
    text.push_str(&format!("table inet {table} {{\n"));
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        text.push_str(&format!(
            "  chain {chain} {{\n    type nat hook {hook} priority -110; policy accept;\n{rules}  }}\n"
        ));
    }
    text.push_str("}\n");
    text
}

/// The command that removes the table (when no component fails open any more).
pub fn removal(policy_table: &str) -> String {
    let table = table_name(policy_table);
    format!("table inet {table} {{\n}}\ndelete table inet {table}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_pair_each_listen_address_with_a_plain_upstream_of_its_family() {
        let text = "listen = [\"127.0.0.1:53\", \"[::1]:53\"]\nupstreams = [{ addr = \"192.0.2.53:853\", proto = \"dot\" }, { addr = \"192.0.2.54:53\" }, { addr = \"[2001:db8::53]:53\", proto = \"tcp\" }]\n";
        let redirects = dns_redirects(text, Path::new("dns.toml")).unwrap();
        assert_eq!(
            redirects,
            [
                Redirect {
                    listen: "127.0.0.1:53".parse().unwrap(),
                    upstream: "192.0.2.54:53".parse().unwrap()
                },
                Redirect {
                    listen: "[::1]:53".parse().unwrap(),
                    upstream: "[2001:db8::53]:53".parse().unwrap()
                },
            ]
        );
        let only_dot = "listen = [\"127.0.0.1:53\"]\nupstreams = [{ addr = \"192.0.2.53:853\", proto = \"dot\" }]\n";
        assert!(dns_redirects(only_dot, Path::new("d"))
            .unwrap_err()
            .to_string()
            .contains("no plain"));
        let port_zero = "listen = [\"127.0.0.1:0\"]\nupstreams = [{ addr = \"192.0.2.53:53\" }]\n";
        assert!(dns_redirects(port_zero, Path::new("d"))
            .unwrap_err()
            .to_string()
            .contains("port 0"));
    }

    #[test]
    fn only_down_components_are_redirected() {
        let fail_open = [FailOpen {
            component: "dns".into(),
            redirects: vec![
                Redirect {
                    listen: "127.0.0.1:53".parse().unwrap(),
                    upstream: "192.0.2.54:53".parse().unwrap(),
                },
                Redirect {
                    listen: "[::]:53".parse().unwrap(),
                    upstream: "[2001:db8::53]:53".parse().unwrap(),
                },
            ],
        }];
        let up = ruleset("rampart", &fail_open, &BTreeSet::new());
        assert!(up.starts_with(
            "table inet rampart_down {\n}\ndelete table inet rampart_down\ntable inet rampart_down {"
        ));
        assert!(!up.contains("dnat"), "{up}");
        let down = ruleset("rampart", &fail_open, &BTreeSet::from(["dns".to_string()]));
        assert!(
            down.contains("ip daddr 127.0.0.1 udp dport 53 counter dnat ip to 192.0.2.54:53"),
            "{down}"
        );
        assert!(
            down.contains(
                "meta nfproto ipv6 fib daddr type local tcp dport 53 counter dnat ip6 to [2001:db8::53]:53"
            ),
            "{down}"
        );
        // Both hooks: clients on other hosts (prerouting) and on this one (output).
        assert_eq!(down.matches("dnat ip to 192.0.2.54:53").count(), 4);
    }
}
