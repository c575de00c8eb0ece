//! What a table needs besides itself, applied next to it in the same network namespace:
//! namespace-local sysctls (the SYN proxy's `tcp_syncookies`/`nf_conntrack_tcp_loose`,
//! conntrack accounting for application-protocol rules) and the `iptables-nft` NFQUEUE rules
//! that queue the packets the table marks ([`rampart_nft::app_queue`]). Nothing here touches a
//! rule it did not create: queue rules are found by their `rampart-nfq:<table>` comment.

use std::path::Path;

use rampart_nft::app_queue::{queue_comment, QueueRule, QUEUE_TABLE};

use crate::runner::Nft;
use crate::ApplyError;

/// Why: a sysctl name is a dotted path of a few short words; anything longer is not one.
const SYSCTL_NAME_MAX_BYTES: usize = 128;

fn check_name(name: &str) -> Result<(), ApplyError> {
    let ok = !name.is_empty()
        && name.len() <= SYSCTL_NAME_MAX_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApplyError::Sysctl {
            name: name.to_string(),
            reason: "not a sysctl name".into(),
        })
    }
}

/// The current value of sysctl `name` in the runner's namespace.
pub fn read_sysctl(nft: &Nft, name: &str) -> Result<String, ApplyError> {
    check_name(name)?;
    nft.run_program(Path::new("sysctl"), "sysctl", &["-n", name], None)
        .map(|v| v.trim().to_string())
        .map_err(|e| ApplyError::Sysctl {
            name: name.to_string(),
            reason: e.to_string(),
        })
}

/// Set each `(name, value)` in the runner's namespace (only where it differs) and verify it
/// took. Returns the values it replaced, for [`restore_sysctls`]. On any failure, the values
/// changed so far are put back and the error names the setting: the caller must refuse to
/// apply a table that depends on it.
pub fn set_sysctls(
    nft: &Nft,
    wanted: &[(String, String)],
) -> Result<Vec<(String, String)>, ApplyError> {
    let mut changed: Vec<(String, String)> = Vec::new();
    for (name, value) in wanted {
        let result = (|| {
            let old = read_sysctl(nft, name)?;
            if old == *value {
                return Ok(None);
            }
            nft.run_program(
                Path::new("sysctl"),
                "sysctl",
                &["-qw", &format!("{name}={value}")],
                None,
            )
            .map_err(|e| ApplyError::Sysctl {
                name: name.clone(),
                reason: e.to_string(),
            })?;
            let now = read_sysctl(nft, name)?;
            if now != *value {
                return Err(ApplyError::Sysctl {
                    name: name.clone(),
                    reason: format!("wrote {value} but it reads {now}"),
                });
            }
            Ok(Some(old))
        })();
        match result {
            Ok(Some(old)) => changed.push((name.clone(), old)),
            Ok(None) => {}
            Err(e) => {
                restore_sysctls(nft, &changed);
                return Err(e);
            }
        }
    }
    Ok(changed)
}

/// Put back values returned by [`set_sysctls`] (best effort: used on the failure path).
pub fn restore_sysctls(nft: &Nft, old: &[(String, String)]) {
    for (name, value) in old.iter().rev() {
        let _ = nft.run_program(
            Path::new("sysctl"),
            "sysctl",
            &["-qw", &format!("{name}={value}")],
            None,
        );
    }
}

fn iptables(v6: bool) -> &'static str {
    if v6 {
        "ip6tables-nft"
    } else {
        "iptables-nft"
    }
}

/// (family, name) of every table in the runner's namespace. Over netlink (a table dump only):
/// `nft list tables` fetches every set element first, 13 s with a million of them; `nft` is
/// the fallback when netlink is not available.
fn table_names(nft: &Nft) -> Result<Vec<(String, String)>, ApplyError> {
    let family = |f: u8| match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "other",
    };
    match crate::nlsock::NlSocket::open_in(nft.netns.as_deref())
        .and_then(|mut s| s.dump(crate::nfnl::msg::GETTABLE, "", None))
    {
        Ok(t) => Ok(t
            .into_iter()
            .map(|d| (family(d.family).to_string(), d.table))
            .collect()),
        Err(_) => Ok(nft
            .run("list", &["list", "tables"], None)?
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("table"), Some(f), Some(n)) => Some((f.to_string(), n.to_string())),
                    _ => None,
                }
            })
            .collect()),
    }
}

/// Rampart's live queue rules for `table` (both families), as `iptables -S` prints them.
/// Absent `security` tables mean none (and nothing is created by looking).
pub fn live_queue_rules(nft: &Nft, table: &str) -> Result<Vec<QueueRule>, ApplyError> {
    let tables = table_names(nft)?;
    let marker = format!("--comment {}", queue_comment(table));
    let mut out = Vec::new();
    for v6 in [false, true] {
        let fam = if v6 { "ip6" } else { "ip" };
        if !tables.iter().any(|(f, n)| f == fam && n == QUEUE_TABLE) {
            continue;
        }
        let listing = nft.run_program(
            Path::new(iptables(v6)),
            "queue list",
            &["-t", QUEUE_TABLE, "-S"],
            None,
        )?;
        for line in listing.lines() {
            // iptables prints comments quoted; ours has no spaces, so unquoting gives back the
            // spec exactly as `queue_rules` wrote it.
            let words: Vec<&str> = line
                .split_whitespace()
                .map(|w| w.trim_matches('"'))
                .collect();
            // Exact word match: `rampart-nfq:rampart` must not pick up `rampart-nfq:rampart2`.
            let ours = words
                .windows(2)
                .any(|w| format!("{} {}", w[0], w[1]) == marker);
            if words.first() == Some(&"-A") && ours {
                out.push(QueueRule {
                    v6,
                    spec: words.join(" "),
                });
            }
        }
    }
    out.sort();
    Ok(out)
}

fn restore_script(delete: &[&QueueRule], add: &[&QueueRule]) -> String {
    let mut s = format!("*{QUEUE_TABLE}\n");
    for r in delete {
        s.push_str("-D ");
        s.push_str(r.spec.strip_prefix("-A ").unwrap_or(&r.spec));
        s.push('\n');
    }
    for r in add {
        s.push_str(&r.spec);
        s.push('\n');
    }
    s.push_str("COMMIT\n");
    s
}

fn replace_family(
    nft: &Nft,
    v6: bool,
    old: &[QueueRule],
    new: &[QueueRule],
) -> Result<bool, ApplyError> {
    let del: Vec<&QueueRule> = old.iter().filter(|r| r.v6 == v6).collect();
    let add: Vec<&QueueRule> = new.iter().filter(|r| r.v6 == v6).collect();
    if del == add {
        return Ok(false);
    }
    let program = format!("{}-restore", iptables(v6));
    nft.run_program(
        Path::new(&program),
        "queue rules",
        &["--noflush"],
        Some(&restore_script(&del, &add)),
    )?;
    Ok(true)
}

/// Replace Rampart's queue rules `old` (as listed by [`live_queue_rules`]) by `new`: one
/// `iptables-nft-restore --noflush` transaction per family; if the second family fails, the
/// first is put back, so a failure leaves the old rules.
pub fn replace_queue_rules(
    nft: &Nft,
    old: &[QueueRule],
    new: &[QueueRule],
) -> Result<(), ApplyError> {
    let v4_changed = replace_family(nft, false, old, new)?;
    if let Err(e) = replace_family(nft, true, old, new) {
        if v4_changed {
            let _ = replace_family(nft, false, new, old);
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_script_deletes_then_adds() {
        let a = QueueRule {
            v6: false,
            spec: "-A INPUT -m mark --mark 0x100000/0xf00000 -j NFQUEUE --queue-num 4210".into(),
        };
        let b = QueueRule {
            spec: format!("{} --queue-bypass", a.spec),
            ..a.clone()
        };
        assert_eq!(
            restore_script(&[&a], &[&b]),
            "*security\n-D INPUT -m mark --mark 0x100000/0xf00000 -j NFQUEUE --queue-num 4210\n\
             -A INPUT -m mark --mark 0x100000/0xf00000 -j NFQUEUE --queue-num 4210 --queue-bypass\nCOMMIT\n"
        );
    }

    #[test]
    fn sysctl_names_are_checked() {
        assert!(check_name("net.netfilter.nf_conntrack_tcp_loose").is_ok());
        assert!(check_name("net.ipv4.tcp_syncookies=0").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(&"a".repeat(200)).is_err());
    }
}
