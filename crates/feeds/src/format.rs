//! Feed formats: names as written in policies (`SetSource::Feed::format`), options, and
//! detection from content.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::domain::Scope;

/// A feed format with its options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", rename_all = "snake_case")]
pub enum Format {
    /// One IP, CIDR or `a-b` range per line; `#` and `;` comments. Also FireHOL `.netset` /
    /// `.ipset` and ET lists.
    Plain,
    /// Spamhaus DROP/EDROP text (`CIDR ; SBLnnn`) or its JSON-lines form (`{"cidr": …}`).
    Spamhaus,
    /// Tor exit lists: plain IPs or the bulk exit-list format (`ExitAddress IP date`).
    Tor,
    /// ipsum: `IP<TAB>count`; entries on fewer than `min_count` lists are skipped.
    Ipsum {
        /// Minimum number of source lists (ipsum "level").
        min_count: u32,
    },
    /// CSV with the address in one column.
    Csv {
        /// 1-based column holding the IP/CIDR.
        column: usize,
        /// Skip the first non-comment line.
        header: bool,
        /// Field separator.
        delimiter: char,
    },
    /// hosts file: `0.0.0.0 name…`, `127.0.0.1 name`, `:: name`.
    Hosts,
    /// One domain per line; `*.x` and `.x` mean the subtree, a bare name means `plain_scope`.
    Domains {
        /// Scope of bare names.
        plain_scope: Scope,
    },
    /// AdBlock/AdGuard DNS-mappable rules: `||x^`, `@@||x^`, `$important`; others unsupported.
    Adblock,
    /// dnsmasq `address=/x/…`, `server=/x/`, `local=/x/`.
    Dnsmasq,
    /// unbound `local-zone: "x" type`.
    Unbound,
    /// RPZ zone file (QNAME and RPZ-IP triggers).
    Rpz,
    /// STIX 2.1 JSON bundle.
    Stix,
}

/// What a format yields.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedKind {
    /// Addresses and prefixes.
    Ip,
    /// Domain rules.
    Domain,
    /// Both (RPZ, STIX).
    Mixed,
}

impl Format {
    /// The short name (`plain`, `ipsum`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Format::Plain => "plain",
            Format::Spamhaus => "spamhaus",
            Format::Tor => "tor",
            Format::Ipsum { .. } => "ipsum",
            Format::Csv { .. } => "csv",
            Format::Hosts => "hosts",
            Format::Domains { .. } => "domains",
            Format::Adblock => "adblock",
            Format::Dnsmasq => "dnsmasq",
            Format::Unbound => "unbound",
            Format::Rpz => "rpz",
            Format::Stix => "stix",
        }
    }

    /// What the format yields.
    pub fn kind(&self) -> FeedKind {
        match self {
            Format::Plain | Format::Spamhaus | Format::Tor | Format::Ipsum { .. } => FeedKind::Ip,
            Format::Csv { .. } => FeedKind::Ip,
            Format::Hosts
            | Format::Domains { .. }
            | Format::Adblock
            | Format::Dnsmasq
            | Format::Unbound => FeedKind::Domain,
            Format::Rpz | Format::Stix => FeedKind::Mixed,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::Ipsum { min_count } => write!(f, "ipsum:min={min_count}"),
            Format::Csv {
                column,
                header,
                delimiter,
            } => {
                write!(f, "csv:column={column}")?;
                if *header {
                    f.write_str(",header")?;
                }
                if *delimiter != ',' {
                    write!(f, ",delimiter={delimiter}")?;
                }
                Ok(())
            }
            Format::Domains {
                plain_scope: Scope::Subtree,
            } => f.write_str("domains:subtree"),
            other => f.write_str(other.name()),
        }
    }
}

/// A format string could not be understood.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown feed format {0:?} (expected plain|netset|ipset|spamhaus|tor|ipsum[:min=N]|csv:column=N[,header][,delimiter=C]|hosts|domains[:subtree]|wildcard|adblock|dnsmasq|unbound|rpz|stix)")]
pub struct FormatError(pub String);

impl FromStr for Format {
    type Err = FormatError;

    /// `name` or `name:opt,opt=value`, e.g. `ipsum:min=3`, `csv:column=2,header`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || FormatError(s.chars().take(100).collect());
        let (name, opts) = match s.split_once(':') {
            Some((n, o)) => (n, o),
            None => (s, ""),
        };
        let opts: Vec<(&str, &str)> = opts
            .split(',')
            .filter(|o| !o.is_empty())
            .map(|o| o.split_once('=').unwrap_or((o, "")))
            .collect();
        let no_opts = |f: Format| if opts.is_empty() { Ok(f) } else { Err(err()) };
        match name.trim().to_ascii_lowercase().as_str() {
            "plain" | "netset" | "ipset" | "ip" | "et" => no_opts(Format::Plain),
            "spamhaus" | "drop" | "edrop" => no_opts(Format::Spamhaus),
            "tor" => no_opts(Format::Tor),
            "ipsum" => {
                let mut min_count = 1;
                for (k, v) in opts {
                    match k {
                        "min" | "min_count" | "level" => {
                            min_count = v.parse().map_err(|_| err())?;
                        }
                        _ => return Err(err()),
                    }
                }
                Ok(Format::Ipsum { min_count })
            }
            "csv" => {
                let (mut column, mut header, mut delimiter) = (1usize, false, ',');
                for (k, v) in opts {
                    match k {
                        "column" | "col" => {
                            column = v.parse().map_err(|_| err())?;
                            if column == 0 || column > 1024 {
                                return Err(err());
                            }
                        }
                        "header" => header = true,
                        "delimiter" | "sep" => {
                            let mut cs = v.chars();
                            delimiter = match (cs.next(), cs.next()) {
                                (Some(c), None) => c,
                                _ if v == "tab" => '\t',
                                _ => return Err(err()),
                            };
                        }
                        _ => return Err(err()),
                    }
                }
                Ok(Format::Csv {
                    column,
                    header,
                    delimiter,
                })
            }
            "hosts" => no_opts(Format::Hosts),
            "domains" | "wildcard" => match opts.as_slice() {
                [] => Ok(Format::Domains {
                    plain_scope: Scope::Exact,
                }),
                [("subtree", "")] => Ok(Format::Domains {
                    plain_scope: Scope::Subtree,
                }),
                _ => Err(err()),
            },
            "adblock" | "adguard" | "abp" => no_opts(Format::Adblock),
            "dnsmasq" => no_opts(Format::Dnsmasq),
            "unbound" => no_opts(Format::Unbound),
            "rpz" => no_opts(Format::Rpz),
            "stix" | "stix2" => no_opts(Format::Stix),
            _ => Err(err()),
        }
    }
}

/// How many bytes [`detect`] looks at.
pub const DETECT_PREFIX_BYTES: usize = 64 * 1024;

/// Guess the format from the start of the content. Returns `None` when nothing fits.
///
/// Structural markers win (STIX JSON, bulk exit list, RPZ, unbound, dnsmasq, AdBlock); then the
/// shape of the first data lines decides between ipsum, spamhaus, CSV, hosts, plain IPs and
/// plain domains.
pub fn detect(content: &[u8]) -> Option<Format> {
    let head = &content[..content.len().min(DETECT_PREFIX_BYTES)];
    let text = String::from_utf8_lossy(head);
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') && text.contains("\"type\"") {
        if text.contains("\"bundle\"") || text.contains("\"indicator\"") {
            return Some(Format::Stix);
        }
        if text.contains("\"cidr\"") {
            return Some(Format::Spamhaus);
        }
    }
    let data: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('!'))
        .take(200)
        .collect();
    if data.is_empty() {
        return None;
    }
    let any = |p: &dyn Fn(&str) -> bool| data.iter().any(|l| p(l));
    let share = |p: &dyn Fn(&str) -> bool| data.iter().filter(|l| p(l)).count() * 2 >= data.len();
    if any(&|l| l.starts_with("ExitAddress ") || l.starts_with("ExitNode ")) {
        return Some(Format::Tor);
    }
    if any(&|l| l.contains(".rpz-ip") || l.contains("rpz-passthru") || l.starts_with("$ORIGIN"))
        || (any(&|l| l.contains(" SOA ") || l.starts_with("$TTL")) && any(&|l| l.contains("CNAME")))
    {
        return Some(Format::Rpz);
    }
    if any(&|l| l.starts_with("local-zone:")) {
        return Some(Format::Unbound);
    }
    if any(&|l| l.starts_with("address=/") || l.starts_with("server=/") || l.starts_with("local=/"))
    {
        return Some(Format::Dnsmasq);
    }
    if any(&|l| l.starts_with("||") || l.starts_with("@@||") || l.starts_with("[Adblock")) {
        return Some(Format::Adblock);
    }
    let first_token = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
    let is_ip_token = |t: &str| crate::parse::parse_ip_token(t).is_ok();
    if share(&|l| {
        let mut it = l.split('\t');
        matches!((it.next(), it.next()), (Some(ip), Some(n)) if is_ip_token(ip) && n.trim().parse::<u32>().is_ok())
    }) {
        return Some(Format::Ipsum { min_count: 1 });
    }
    if share(&|l| {
        l.split_once(';')
            .is_some_and(|(a, b)| is_ip_token(a.trim()) && b.trim().starts_with("SBL"))
    }) {
        return Some(Format::Spamhaus);
    }
    if share(&|l| {
        let mut toks = l.split_whitespace();
        matches!((toks.next(), toks.next()), (Some(ip), Some(name)) if ip.parse::<std::net::IpAddr>().is_ok() && !name.starts_with('#') && !is_ip_token(name))
    }) {
        return Some(Format::Hosts);
    }
    if share(&|l| is_ip_token(&first_token(l))) {
        return Some(Format::Plain);
    }
    // CSV: the first column (1-based) whose values are addresses in most data lines.
    for delimiter in [',', ';', '\t'] {
        let rows: Vec<Vec<&str>> = data
            .iter()
            .filter(|l| l.contains(delimiter))
            .map(|l| l.split(delimiter).collect())
            .collect();
        if rows.len() * 2 < data.len() || rows.is_empty() {
            continue;
        }
        let width = rows.iter().map(Vec::len).max().unwrap_or(0).min(64);
        for col in 0..width {
            let hits = rows
                .iter()
                .filter(|r| {
                    r.get(col)
                        .is_some_and(|v| is_ip_token(v.trim().trim_matches('"')))
                })
                .count();
            if hits * 2 >= rows.len() {
                let header = !rows[0]
                    .get(col)
                    .is_some_and(|v| is_ip_token(v.trim().trim_matches('"')));
                return Some(Format::Csv {
                    column: col + 1,
                    header,
                    delimiter,
                });
            }
        }
    }
    if share(&|l| {
        crate::domain::parse_pattern(&first_token(l), Scope::Exact, Scope::Subtree).is_ok()
    }) {
        return Some(Format::Domains {
            plain_scope: Scope::Exact,
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in [
            "plain",
            "spamhaus",
            "tor",
            "ipsum:min=3",
            "csv:column=2,header",
            "csv:column=1,delimiter=;",
            "hosts",
            "domains",
            "domains:subtree",
            "adblock",
            "dnsmasq",
            "unbound",
            "rpz",
            "stix",
        ] {
            let f: Format = s.parse().unwrap();
            assert_eq!(f.to_string(), s);
        }
        assert_eq!("netset".parse::<Format>().unwrap(), Format::Plain);
        assert!("csv:column=0".parse::<Format>().is_err());
        assert!("plain:x".parse::<Format>().is_err());
        assert!("nope".parse::<Format>().is_err());
    }

    #[test]
    fn detection() {
        let d = |s: &str| detect(s.as_bytes());
        assert_eq!(d("# c\n192.0.2.0/24\n198.51.100.1\n"), Some(Format::Plain));
        assert_eq!(d("192.0.2.0/24 ; SBL1\n"), Some(Format::Spamhaus));
        assert_eq!(
            d("# x\n192.0.2.1\t3\n192.0.2.2\t1\n"),
            Some(Format::Ipsum { min_count: 1 })
        );
        assert_eq!(
            d("ExitNode AB\nExitAddress 192.0.2.1 2024-01-01 00:00:00\n"),
            Some(Format::Tor)
        );
        assert_eq!(d("0.0.0.0 ads.example.com\n"), Some(Format::Hosts));
        assert_eq!(
            d("ads.example.com\nexample.org\n"),
            Some(Format::Domains {
                plain_scope: Scope::Exact
            })
        );
        assert_eq!(d("! t\n||ads.example.com^\n"), Some(Format::Adblock));
        assert_eq!(d("server=/ads.example.com/\n"), Some(Format::Dnsmasq));
        assert_eq!(
            d("server:\nlocal-zone: \"x.example.\" always_nxdomain\n"),
            Some(Format::Unbound)
        );
        assert_eq!(
            d("$TTL 300\n@ SOA a. b. 1 2 3 4 5\nbad.example CNAME .\n"),
            Some(Format::Rpz)
        );
        assert_eq!(
            d("{\"type\": \"bundle\", \"objects\": []}"),
            Some(Format::Stix)
        );
        assert_eq!(
            d("first,ip,port\n2024-01-01,192.0.2.1,443\n2024-01-02,192.0.2.2,80\n"),
            Some(Format::Csv {
                column: 2,
                header: true,
                delimiter: ','
            })
        );
        assert_eq!(d("# only comments\n"), None);
    }
}
