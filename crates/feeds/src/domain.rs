//! Domain-name normalisation and wildcard semantics shared by every domain-list parser (and
//! meant for the DNS filter): lower-case ASCII, no trailing dot, IDNA (UTS #46) → punycode,
//! label ≤ 63 and name ≤ 253 octets.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest name in presentation form without the trailing dot (RFC 1035 §2.3.4: 255 octets on
/// the wire, i.e. 253 characters of text).
pub const MAX_NAME_LEN: usize = 253;
/// Longest label (RFC 1035 §2.3.4).
pub const MAX_LABEL_LEN: usize = 63;

/// Why a name was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", content = "detail", rename_all = "snake_case")]
pub enum DomainError {
    /// Nothing left after trimming.
    #[error("empty name")]
    Empty,
    /// The whole name is longer than 253 characters.
    #[error("name longer than {MAX_NAME_LEN} characters")]
    TooLong,
    /// A label is empty (`a..b`) or longer than 63 characters.
    #[error("label {0:?} is empty or longer than {MAX_LABEL_LEN} characters")]
    BadLabel(String),
    /// A character outside letters, digits, `-` and `_`.
    #[error("invalid character {0:?}")]
    BadChar(char),
    /// IDNA (UTS #46) processing failed.
    #[error("invalid internationalised name")]
    Idna,
    /// An IP address where a name was expected.
    #[error("IP address where a domain name was expected")]
    IpAddress,
    /// A wildcard anywhere but as the whole first label.
    #[error("wildcard only allowed as the whole first label (`*.example.com`)")]
    BadWildcard,
}

/// Which names a rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Only the name itself.
    Exact,
    /// The name and every name below it (AdBlock `||x^`, dnsmasq `/x/`, unbound local-zone,
    /// hagezi wildcard `*.x`).
    Subtree,
    /// Only names strictly below it, not the name itself (RPZ `*.x`).
    SubdomainsOnly,
}

/// What the DNS filter should answer for a matching name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DomainAction {
    /// Block: NXDOMAIN (or the filter's configured block answer, e.g. a sinkhole).
    Block,
    /// Answer NODATA (RPZ `CNAME *.`).
    NoData,
    /// Drop the query without answering (RPZ `rpz-drop.`).
    Drop,
    /// Exception: never block (AdBlock `@@`, RPZ `rpz-passthru.`, unbound `transparent`).
    Allow,
}

/// One normalised domain rule.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DomainRule {
    /// Normalised name (ASCII, lower case, no trailing dot).
    pub name: String,
    /// Which names it covers.
    pub scope: Scope,
    /// What to do with them.
    pub action: DomainAction,
}

impl DomainRule {
    /// Whether `qname` (already normalised) falls under this rule's scope.
    pub fn covers(&self, qname: &str) -> bool {
        let below = qname.len() > self.name.len()
            && qname.ends_with(self.name.as_str())
            && qname.as_bytes()[qname.len() - self.name.len() - 1] == b'.';
        match self.scope {
            Scope::Exact => qname == self.name,
            Scope::Subtree => qname == self.name || below,
            Scope::SubdomainsOnly => below,
        }
    }
}

/// Normalise one domain name: trim, drop one trailing dot, IDNA to punycode, lower-case, and
/// validate lengths and characters. IP addresses are rejected.
pub fn normalize_domain(input: &str) -> Result<String, DomainError> {
    let s = input.trim();
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() {
        return Err(DomainError::Empty);
    }
    // Bound the work before IDNA: anything this long cannot become a valid name.
    if s.len() > MAX_NAME_LEN * 4 {
        return Err(DomainError::TooLong);
    }
    if s.parse::<IpAddr>().is_ok() {
        return Err(DomainError::IpAddress);
    }
    let ascii = if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        idna::domain_to_ascii(s).map_err(|_| DomainError::Idna)?
    };
    validate_ascii(&ascii)?;
    Ok(ascii)
}

fn validate_ascii(name: &str) -> Result<(), DomainError> {
    if name.is_empty() {
        return Err(DomainError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(DomainError::TooLong);
    }
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL_LEN {
            return Err(DomainError::BadLabel(truncate(label, 80)));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return if c == '*' {
                Err(DomainError::BadWildcard)
            } else {
                Err(DomainError::BadChar(c))
            };
        }
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// Parse a name that may carry a wildcard or a leading dot.
///
/// * `*.example.com` → `example.com` with `wildcard_scope` (lists disagree: hagezi wildcard
///   lists mean the apex too, RPZ means only subdomains);
/// * `.example.com` (squidGuard/UT1 suffix form) → [`Scope::Subtree`];
/// * `example.com` → `plain_scope`.
pub fn parse_pattern(
    input: &str,
    plain_scope: Scope,
    wildcard_scope: Scope,
) -> Result<(String, Scope), DomainError> {
    let s = input.trim();
    if let Some(rest) = s.strip_prefix("*.") {
        return Ok((normalize_domain(rest)?, wildcard_scope));
    }
    if let Some(rest) = s.strip_prefix('.') {
        return Ok((normalize_domain(rest)?, Scope::Subtree));
    }
    Ok((normalize_domain(s)?, plain_scope))
}

/// Dedupe domain rules and drop rules made redundant by a covering subtree rule with the same
/// action (e.g. `ads.example.com` under `||example.com^`). The result is sorted by name.
pub fn dedupe_rules(rules: &mut Vec<DomainRule>) {
    use std::collections::HashSet;
    rules.sort();
    rules.dedup();
    let subtrees: HashSet<(&str, DomainAction)> = rules
        .iter()
        .filter(|r| r.scope == Scope::Subtree)
        .map(|r| (r.name.as_str(), r.action))
        .collect();
    let covered = |r: &DomainRule| -> bool {
        // Walk the parents of the name (and the name itself for non-Subtree rules).
        let mut rest = r.name.as_str();
        if r.scope != Scope::Subtree && subtrees.contains(&(rest, r.action)) {
            return true;
        }
        while let Some(idx) = rest.find('.') {
            rest = &rest[idx + 1..];
            if subtrees.contains(&(rest, r.action)) {
                return true;
            }
        }
        false
    };
    let keep: Vec<bool> = rules.iter().map(|r| !covered(r)).collect();
    let mut i = 0;
    rules.retain(|_| {
        let k = keep[i];
        i += 1;
        k
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_trailing_dot_and_idna() {
        assert_eq!(normalize_domain("Example.COM.").unwrap(), "example.com");
        assert_eq!(
            normalize_domain("bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("XN--BCHER-KVA.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_domain("_dmarc.example.com").unwrap(),
            "_dmarc.example.com"
        );
    }

    #[test]
    fn lengths_are_enforced() {
        let label63 = "a".repeat(63);
        assert!(normalize_domain(&format!("{label63}.example")).is_ok());
        let label64 = "a".repeat(64);
        assert!(matches!(
            normalize_domain(&format!("{label64}.example")),
            Err(DomainError::BadLabel(_))
        ));
        let long = vec!["abcdefghi"; 26].join("."); // 259 chars
        assert_eq!(normalize_domain(&long), Err(DomainError::TooLong));
        assert_eq!(
            normalize_domain("a..b"),
            Err(DomainError::BadLabel(String::new()))
        );
        assert_eq!(normalize_domain("192.0.2.1"), Err(DomainError::IpAddress));
        assert_eq!(
            normalize_domain("a b.example"),
            Err(DomainError::BadChar(' '))
        );
        assert_eq!(
            normalize_domain("a.*.example"),
            Err(DomainError::BadWildcard)
        );
        assert_eq!(normalize_domain("."), Err(DomainError::Empty));
    }

    #[test]
    fn wildcard_semantics() {
        let sub = DomainRule {
            name: "example.com".into(),
            scope: Scope::SubdomainsOnly,
            action: DomainAction::Block,
        };
        assert!(sub.covers("a.example.com"));
        assert!(!sub.covers("example.com"));
        assert!(!sub.covers("badexample.com"));
        let tree = DomainRule {
            scope: Scope::Subtree,
            ..sub.clone()
        };
        assert!(tree.covers("example.com") && tree.covers("x.y.example.com"));
        let exact = DomainRule {
            scope: Scope::Exact,
            ..sub
        };
        assert!(exact.covers("example.com") && !exact.covers("a.example.com"));
        assert_eq!(
            parse_pattern("*.Example.com", Scope::Exact, Scope::Subtree).unwrap(),
            ("example.com".into(), Scope::Subtree)
        );
        assert_eq!(
            parse_pattern(".example.com", Scope::Exact, Scope::SubdomainsOnly).unwrap(),
            ("example.com".into(), Scope::Subtree)
        );
    }

    #[test]
    fn dedupe_drops_covered_names() {
        let r = |n: &str, scope| DomainRule {
            name: n.into(),
            scope,
            action: DomainAction::Block,
        };
        let mut rules = vec![
            r("ads.example.com", Scope::Exact),
            r("example.com", Scope::Subtree),
            r("example.com", Scope::Exact),
            r("example.org", Scope::Exact),
            r("example.org", Scope::Exact),
        ];
        dedupe_rules(&mut rules);
        assert_eq!(
            rules,
            vec![
                r("example.com", Scope::Subtree),
                r("example.org", Scope::Exact)
            ]
        );
    }
}
