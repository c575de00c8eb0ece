//! Per-rule counters from the terse listing (`nft -t list table`), mapped back to policy rules
//! through the `#N name file:line T…` comments and the rule map saved at apply time.

use serde::Serialize;

use crate::state::RuleMap;

/// One counter row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    /// Rule index, or `None` for built-ins (prelude, defaults).
    pub index: Option<u32>,
    /// Rule name (from the map, else the comment).
    pub name: String,
    /// `file:line` when known.
    pub loc: Option<String>,
    /// Techniques.
    pub techniques: Vec<String>,
    /// Chain the counter lives in.
    pub chain: String,
    /// Packets.
    pub packets: u64,
    /// Bytes.
    pub bytes: u64,
}

/// Sources currently banned, per ban set (`ban_v4`, `ban_v6`) present in the terse listing:
/// (set name, element count). The ban sets are bounded (`meter_size`), so listing them is cheap.
pub fn banned(
    nft: &crate::runner::Nft,
    table: &str,
    listing: &str,
) -> Result<Vec<(String, usize)>, crate::ApplyError> {
    let mut out = Vec::new();
    for set in ["ban_v4", "ban_v6"] {
        if !listing.lines().any(|l| l.trim() == format!("set {set} {{")) {
            continue;
        }
        let json = nft.list_set_json(table, set)?;
        out.push((
            set.to_string(),
            rampart_nft::plan::parse_set_elements(&json)?.len(),
        ));
    }
    Ok(out)
}

/// Parse counters with comments out of a terse table listing.
pub fn counters(listing: &str, map: Option<&RuleMap>) -> Vec<CounterRow> {
    let mut out = Vec::new();
    let mut chain = String::new();
    for raw in listing.lines() {
        let line = raw.trim();
        if let Some(rest) = line.strip_prefix("chain ") {
            chain = rest.trim_end_matches('{').trim().to_string();
            continue;
        }
        let Some((packets, bytes)) = counter_values(line) else {
            continue;
        };
        let Some(comment) = comment_of(line) else {
            continue;
        };
        let index = comment
            .strip_prefix('#')
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.parse::<u32>().ok());
        let info = index.and_then(|i| map.and_then(|m| m.get(i)));
        let row = match (index, info) {
            (Some(i), Some(info)) => CounterRow {
                index: Some(i),
                name: info.name.clone(),
                loc: Some(format!("{}:{}", info.file, info.line)),
                techniques: info.techniques.clone(),
                chain: chain.clone(),
                packets,
                bytes,
            },
            (Some(i), None) => {
                // Fall back to the comment: `#N name file:line T1,T2`.
                let words: Vec<&str> = comment.split_whitespace().collect();
                let techniques = words
                    .last()
                    .filter(|w| w.starts_with('T'))
                    .map(|w| w.split(',').map(str::to_string).collect())
                    .unwrap_or_default();
                CounterRow {
                    index: Some(i),
                    name: words.get(1).copied().unwrap_or_default().to_string(),
                    loc: words.get(2).map(|s| s.to_string()),
                    techniques,
                    chain: chain.clone(),
                    packets,
                    bytes,
                }
            }
            (None, _) => CounterRow {
                index: None,
                name: comment.to_string(),
                loc: None,
                techniques: Vec::new(),
                chain: chain.clone(),
                packets,
                bytes,
            },
        };
        out.push(row);
    }
    out
}

/// The kernel's SYN proxy counters of one network namespace (`/proc/net/stat/synproxy`, summed
/// over CPUs). `cookie_invalid` rising while clients complain is the sign of handshakes the
/// proxy cannot finish (a forged ACK, or a cookie rewritten on the way, docs/nft.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SynproxyStats {
    /// SYNs answered with a cookie.
    pub syn_received: u64,
    /// ACKs whose cookie did not verify (dropped).
    pub cookie_invalid: u64,
    /// ACKs whose cookie verified (the proxy then opened the server side).
    pub cookie_valid: u64,
    /// SYNs to a server sent again on a client's retransmitted ACK.
    pub cookie_retrans: u64,
    /// Connections reopened from a closed entry.
    pub conn_reopened: u64,
}

/// Where the kernel keeps [`SynproxyStats`] for the reading process's network namespace.
pub const SYNPROXY_STATS_PATH: &str = "/proc/net/stat/synproxy";

/// Parse `/proc/net/stat/synproxy`: a header line of names, then one line of hexadecimal
/// counters per CPU (summed). `None` when the header names none of the counters.
pub fn parse_synproxy_stats(text: &str) -> Option<SynproxyStats> {
    let mut lines = text.lines();
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let mut stats = SynproxyStats::default();
    let mut known = false;
    for line in lines {
        for (name, value) in names.iter().zip(line.split_whitespace()) {
            let field = match *name {
                "syn_received" => &mut stats.syn_received,
                "cookie_invalid" => &mut stats.cookie_invalid,
                "cookie_valid" => &mut stats.cookie_valid,
                "cookie_retrans" => &mut stats.cookie_retrans,
                "conn_reopened" => &mut stats.conn_reopened,
                _ => continue,
            };
            known = true;
            *field = field.saturating_add(u64::from_str_radix(value, 16).unwrap_or(0));
        }
    }
    known.then_some(stats)
}

fn counter_values(line: &str) -> Option<(u64, u64)> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let i = words
        .windows(5)
        .position(|w| w[0] == "counter" && w[1] == "packets" && w[3] == "bytes")?;
    Some((words[i + 2].parse().ok()?, words[i + 4].parse().ok()?))
}

fn comment_of(line: &str) -> Option<&str> {
    let start = line.find("comment \"")? + "comment \"".len();
    let rest = &line[start..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RuleInfo;

    const LISTING: &str = "table inet rampart {\n\tchain rule_3_verdict {\n\t\tcounter packets 7 bytes 420 drop comment \"#3 llmnr-block policy.toml:9 T1557.001\"\n\t}\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tct state invalid counter packets 1 bytes 40 drop comment \"rampart prelude: invalid\"\n\t\ttcp dport 22 counter packets 2 bytes 120 accept comment \"#0 ssh p.toml:4 T1021\"\n\t}\n}\n";

    #[test]
    fn synproxy_stats_sum_the_cpus() {
        let text = "entries\t\tsyn_received\tcookie_invalid\tcookie_valid\tcookie_retrans\tconn_reopened\n00000000\t00000027\t00000001\t00000026\t00000000\t00000000\n00000000\t0000003d\t00000000\t0000003d\t00000002\t00000001\n";
        assert_eq!(
            parse_synproxy_stats(text),
            Some(SynproxyStats {
                syn_received: 100,
                cookie_invalid: 1,
                cookie_valid: 99,
                cookie_retrans: 2,
                conn_reopened: 1,
            })
        );
        assert_eq!(parse_synproxy_stats(""), None);
        assert_eq!(parse_synproxy_stats("entries\n00000000\n"), None);
    }

    #[test]
    fn maps_counters_to_rules() {
        let map = RuleMap {
            table: "rampart".into(),
            rules: vec![RuleInfo {
                index: 3,
                name: "llmnr-block".into(),
                file: "policy.toml".into(),
                line: 9,
                col: 1,
                techniques: vec!["T1557.001".into()],
                action: "drop".into(),
                direction: "egress".into(),
            }],
        };
        let rows = counters(LISTING, Some(&map));
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].name, "llmnr-block");
        assert_eq!(rows[0].packets, 7);
        assert_eq!(rows[0].chain, "rule_3_verdict");
        assert_eq!(rows[1].index, None);
        assert_eq!(rows[2].name, "ssh");
        assert_eq!(rows[2].loc.as_deref(), Some("p.toml:4"));
        assert_eq!(rows[2].techniques, vec!["T1021".to_string()]);
        assert_eq!(rows[2].bytes, 120);
    }
}
