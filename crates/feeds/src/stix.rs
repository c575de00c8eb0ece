//! STIX 2.1 bundles: the subset that maps onto IP and domain blocklists.
//!
//! * `indicator` objects with `pattern_type` `stix` (or absent) whose pattern is one or more
//!   observation expressions `[...]` joined by `OR`, each holding comparisons joined by `OR`,
//!   each comparison `ipv4-addr:value`, `ipv6-addr:value`, `domain-name:value` or `url:value`
//!   `=` a quoted string. `url` yields its host (an address or a domain, exact).
//! * `observed-data` objects: embedded `objects` (STIX 2.0 style) and `object_refs` to
//!   top-level `ipv4-addr`/`ipv6-addr`/`domain-name`/`url` objects of the same bundle.
//! * Revoked indicators are skipped. Anything else (`AND`, `FOLLOWEDBY`, qualifiers, other
//!   operators and object types, other pattern languages) is reported as unsupported; one
//!   unsupported comparison rejects the whole indicator, since a partial OR would block too much
//!   and a partial AND too little.
//!
//! Errors use the 1-based index of the object in `objects` as the line number and its `id` as
//! the text.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::domain::{self, DomainAction, DomainRule, Scope};
use crate::parse::{parse_ip_token, LineReason, Parsed};

/// Longest pattern string accepted.
pub const MAX_PATTERN_BYTES: usize = 64 * 1024;

/// One value a pattern or observable yields.
#[derive(Debug, PartialEq)]
enum Observable {
    Net(IpNet),
    Domain(String),
}

pub(crate) fn parse_bundle(data: &[u8], file: &str, out: &mut Parsed) {
    let doc: Value = match serde_json::from_slice(data) {
        Ok(v) => v,
        Err(e) => {
            out.reject(
                file,
                e.line() as u64,
                "",
                LineReason::Syntax(format!("invalid JSON: {e}")),
            );
            return;
        }
    };
    let objects: Vec<Value> = match &doc {
        Value::Object(m) if m.get("type").and_then(Value::as_str) == Some("bundle") => {
            match m.get("objects") {
                Some(Value::Array(a)) => a.clone(),
                None => Vec::new(),
                _ => {
                    out.reject(
                        file,
                        0,
                        "",
                        LineReason::Syntax("\"objects\" is not an array".into()),
                    );
                    return;
                }
            }
        }
        // A bare array of objects or a single object are accepted too.
        Value::Array(a) => a.clone(),
        Value::Object(_) => vec![doc.clone()],
        _ => {
            out.reject(file, 0, "", LineReason::Syntax("not a STIX bundle".into()));
            return;
        }
    };
    let by_id: HashMap<&str, &Value> = objects
        .iter()
        .filter_map(|o| o.get("id").and_then(Value::as_str).map(|id| (id, o)))
        .collect();
    for (i, obj) in objects.iter().enumerate() {
        let line = i as u64 + 1;
        out.stats.lines += 1;
        let id = obj
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj.get("type").and_then(Value::as_str).unwrap_or("");
        let result = match kind {
            "indicator" => indicator(obj),
            "observed-data" => observed_data(obj, &by_id),
            _ => {
                out.stats.ignored += 1;
                continue;
            }
        };
        match result {
            Ok(None) => out.stats.ignored += 1,
            Ok(Some(obs)) => {
                out.stats.used += 1;
                for o in obs {
                    match o {
                        Observable::Net(n) => out.nets.push(n),
                        Observable::Domain(name) => out.domains.push(DomainRule {
                            name,
                            scope: Scope::Exact,
                            action: DomainAction::Block,
                        }),
                    }
                }
            }
            Err(reason) => out.reject(file, line, &id, reason),
        }
    }
}

fn indicator(obj: &Value) -> Result<Option<Vec<Observable>>, LineReason> {
    if obj.get("revoked").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    match obj.get("pattern_type").and_then(Value::as_str) {
        None | Some("stix") => {}
        Some(other) => {
            return Err(LineReason::Unsupported(format!(
                "pattern_type {}",
                crate::parse::truncate(other, 30)
            )))
        }
    }
    let pattern = obj
        .get("pattern")
        .and_then(Value::as_str)
        .ok_or(LineReason::Syntax("indicator without a pattern".into()))?;
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(LineReason::Syntax("pattern too long".into()));
    }
    parse_pattern(pattern).map(Some)
}

fn observed_data(
    obj: &Value,
    by_id: &HashMap<&str, &Value>,
) -> Result<Option<Vec<Observable>>, LineReason> {
    let mut out = Vec::new();
    let mut skipped = 0usize;
    if let Some(Value::Object(embedded)) = obj.get("objects") {
        for o in embedded.values() {
            match sco(o)? {
                Some(v) => out.push(v),
                None => skipped += 1,
            }
        }
    }
    if let Some(Value::Array(refs)) = obj.get("object_refs") {
        for r in refs {
            let Some(target) = r.as_str().and_then(|id| by_id.get(id)) else {
                skipped += 1;
                continue;
            };
            match sco(target)? {
                Some(v) => out.push(v),
                None => skipped += 1,
            }
        }
    }
    if out.is_empty() {
        return if skipped > 0 {
            Err(LineReason::Unsupported(
                "observed-data without address, domain or URL observables".into(),
            ))
        } else {
            Ok(None)
        };
    }
    Ok(Some(out))
}

/// A cyber-observable object of a supported type.
fn sco(o: &Value) -> Result<Option<Observable>, LineReason> {
    let kind = o.get("type").and_then(Value::as_str).unwrap_or("");
    let Some(value) = o.get("value").and_then(Value::as_str) else {
        return Ok(None);
    };
    match kind {
        "ipv4-addr" | "ipv6-addr" | "domain-name" | "url" => observable(kind, value).map(Some),
        _ => Ok(None),
    }
}

fn observable(kind: &str, value: &str) -> Result<Observable, LineReason> {
    match kind {
        "ipv4-addr" | "ipv6-addr" => {
            let nets = parse_ip_token(value)?;
            let net = nets
                .into_iter()
                .next()
                .ok_or(LineReason::BadAddress(value.into()))?;
            let family_ok = matches!(
                (kind, &net),
                ("ipv4-addr", IpNet::V4(_)) | ("ipv6-addr", IpNet::V6(_))
            );
            if !family_ok {
                return Err(LineReason::BadAddress(format!("{kind} holds {net}")));
            }
            Ok(Observable::Net(net))
        }
        "domain-name" => Ok(Observable::Domain(
            domain::normalize_domain(value).map_err(LineReason::BadDomain)?,
        )),
        "url" => url_host(value),
        _ => Err(LineReason::Unsupported(format!("object type {kind}"))),
    }
}

/// The host of a URL: an address (`[v6]` included) or a domain.
fn url_host(url: &str) -> Result<Observable, LineReason> {
    let bad = || LineReason::Syntax(format!("bad URL {}", crate::parse::truncate(url, 60)));
    let rest = url.split_once("://").map(|(_, r)| r).ok_or_else(bad)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let hostport = authority
        .rsplit_once('@')
        .map(|(_, h)| h)
        .unwrap_or(authority);
    let host = if let Some(v6) = hostport.strip_prefix('[') {
        v6.split_once(']').map(|(h, _)| h).ok_or_else(bad)?
    } else {
        hostport.split(':').next().unwrap_or("")
    };
    if host.is_empty() {
        return Err(bad());
    }
    if let Ok(a) = host.parse::<IpAddr>() {
        return Ok(Observable::Net(IpNet::from(a)));
    }
    Ok(Observable::Domain(
        domain::normalize_domain(host).map_err(LineReason::BadDomain)?,
    ))
}

/// Tokens of the STIX patterning subset.
#[derive(Debug, PartialEq)]
enum Tok {
    LBracket,
    RBracket,
    LParen,
    RParen,
    Word(String),
    Str(String),
    Op(String),
}

fn tokenize(p: &str) -> Result<Vec<Tok>, LineReason> {
    let mut toks = Vec::new();
    let mut chars = p.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            c if c.is_whitespace() => {}
            '[' => toks.push(Tok::LBracket),
            ']' => toks.push(Tok::RBracket),
            '(' => toks.push(Tok::LParen),
            ')' => toks.push(Tok::RParen),
            '\'' => {
                let mut s = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, e)) => s.push(e),
                            None => return Err(LineReason::Syntax("unterminated string".into())),
                        },
                        Some((_, '\'')) => break,
                        Some((_, ch)) => s.push(ch),
                        None => return Err(LineReason::Syntax("unterminated string".into())),
                    }
                }
                toks.push(Tok::Str(s));
            }
            '=' | '!' | '<' | '>' => {
                let mut op = c.to_string();
                if let Some((_, '=')) = chars.peek() {
                    op.push('=');
                    chars.next();
                }
                toks.push(Tok::Op(op));
            }
            _ => {
                let mut w = c.to_string();
                while let Some((_, n)) = chars.peek() {
                    if n.is_whitespace()
                        || matches!(n, '[' | ']' | '(' | ')' | '\'' | '=' | '!' | '<' | '>')
                    {
                        break;
                    }
                    w.push(*n);
                    chars.next();
                }
                toks.push(Tok::Word(w));
            }
        }
    }
    Ok(toks)
}

/// Parse `[a:value = 'x' OR b:value = 'y'] OR [...]`.
fn parse_pattern(pattern: &str) -> Result<Vec<Observable>, LineReason> {
    let toks = tokenize(pattern)?;
    let unsupported = |what: &str| Err(LineReason::Unsupported(format!("pattern {what}")));
    let mut out = Vec::new();
    let mut i = 0usize;
    let mut expect_observation = true;
    while i < toks.len() {
        if !expect_observation {
            match &toks[i] {
                Tok::Word(w) if w.eq_ignore_ascii_case("OR") => {
                    expect_observation = true;
                    i += 1;
                    continue;
                }
                Tok::Word(w) => {
                    return unsupported(&format!("operator {}", crate::parse::truncate(w, 20)))
                }
                _ => {
                    return Err(LineReason::Syntax(
                        "expected OR between observations".into(),
                    ))
                }
            }
        }
        match &toks[i] {
            Tok::LBracket => i += 1,
            Tok::LParen => return unsupported("grouping with parentheses"),
            _ => return Err(LineReason::Syntax("expected '['".into())),
        }
        // Comparisons joined by OR until ']'.
        loop {
            let path = match toks.get(i) {
                Some(Tok::Word(w)) => w.clone(),
                Some(Tok::LParen) => return unsupported("grouping with parentheses"),
                _ => return Err(LineReason::Syntax("expected an object path".into())),
            };
            let op = match toks.get(i + 1) {
                Some(Tok::Op(o)) => o.clone(),
                Some(Tok::Word(w)) => {
                    return unsupported(&format!("operator {}", crate::parse::truncate(w, 20)))
                }
                _ => return Err(LineReason::Syntax("expected an operator".into())),
            };
            if op != "=" {
                return unsupported(&format!("operator {op}"));
            }
            let value = match toks.get(i + 2) {
                Some(Tok::Str(s)) => s.clone(),
                _ => return Err(LineReason::Syntax("expected a quoted value".into())),
            };
            let Some((kind, prop)) = path.split_once(':') else {
                return Err(LineReason::Syntax("object path without ':'".into()));
            };
            if prop != "value" {
                return unsupported(&format!("property {}", crate::parse::truncate(&path, 40)));
            }
            if !matches!(kind, "ipv4-addr" | "ipv6-addr" | "domain-name" | "url") {
                return unsupported(&format!("object type {}", crate::parse::truncate(kind, 30)));
            }
            out.push(observable(kind, &value)?);
            i += 3;
            match toks.get(i) {
                Some(Tok::RBracket) => {
                    i += 1;
                    break;
                }
                Some(Tok::Word(w)) if w.eq_ignore_ascii_case("OR") => i += 1,
                Some(Tok::Word(w)) => {
                    return unsupported(&format!("operator {}", crate::parse::truncate(w, 20)))
                }
                _ => return Err(LineReason::Syntax("expected ']' or OR".into())),
            }
        }
        expect_observation = false;
    }
    if expect_observation {
        return Err(LineReason::Syntax("empty or dangling pattern".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::Format;
    use crate::parse::parse_bytes;

    #[test]
    fn patterns() {
        let p = |s: &str| parse_pattern(s);
        assert_eq!(
            p("[ipv4-addr:value = '192.0.2.1']").unwrap(),
            vec![Observable::Net("192.0.2.1/32".parse().unwrap())]
        );
        assert_eq!(
            p("[ipv4-addr:value = '198.51.100.0/24' OR ipv6-addr:value = '2001:db8::1'] OR [domain-name:value = 'Evil.Example.com']").unwrap().len(),
            3
        );
        assert_eq!(
            p("[url:value = 'http://user@[2001:db8::2]:8080/x']").unwrap(),
            vec![Observable::Net("2001:db8::2/128".parse().unwrap())]
        );
        assert_eq!(
            p("[url:value = 'https://c2.example.net/gate.php?id=1']").unwrap(),
            vec![Observable::Domain("c2.example.net".into())]
        );
        assert!(matches!(
            p("[ipv4-addr:value = '192.0.2.1' AND ipv4-addr:value = '192.0.2.2']"),
            Err(LineReason::Unsupported(_))
        ));
        assert!(matches!(
            p("[file:hashes.MD5 = 'abc']"),
            Err(LineReason::Unsupported(_))
        ));
        assert!(matches!(
            p("[ipv4-addr:value != '192.0.2.1']"),
            Err(LineReason::Unsupported(_))
        ));
        assert!(matches!(
            p("[ipv4-addr:value = '192.0.2.1'] FOLLOWEDBY [ipv4-addr:value = '192.0.2.2']"),
            Err(LineReason::Unsupported(_))
        ));
        assert!(matches!(
            p("[ipv4-addr:value = '2001:db8::1']"),
            Err(LineReason::BadAddress(_))
        ));
        assert!(matches!(
            p("[ipv4-addr:value = '192.0.2.1'"),
            Err(LineReason::Syntax(_))
        ));
        assert!(matches!(p(""), Err(LineReason::Syntax(_))));
        assert!(p("[domain-name:value = 'it\\'s.example']").is_err());
    }

    #[test]
    fn bundle() {
        let doc = r#"{"type":"bundle","id":"bundle--1","objects":[
          {"type":"indicator","id":"indicator--1","pattern_type":"stix","pattern":"[ipv4-addr:value = '192.0.2.10']"},
          {"type":"indicator","id":"indicator--2","pattern":"[domain-name:value = 'c2.example.com']","revoked":true},
          {"type":"indicator","id":"indicator--3","pattern_type":"snort","pattern":"alert ip any any"},
          {"type":"ipv6-addr","id":"ipv6-addr--1","value":"2001:db8::66"},
          {"type":"domain-name","id":"domain-name--1","value":"bad.example.org"},
          {"type":"observed-data","id":"observed-data--1","object_refs":["ipv6-addr--1","domain-name--1"]},
          {"type":"observed-data","id":"observed-data--2","objects":{"0":{"type":"ipv4-addr","value":"203.0.113.5"}}},
          {"type":"malware","id":"malware--1"}
        ]}"#;
        let r = parse_bytes(doc.as_bytes(), &Format::Stix, "b.json");
        let nets: Vec<String> = r.nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            nets,
            ["192.0.2.10/32", "2001:db8::66/128", "203.0.113.5/32"]
        );
        assert_eq!(r.domains.len(), 1);
        assert_eq!(r.domains[0].name, "bad.example.org");
        assert_eq!(r.stats.unsupported, 1);
        assert_eq!(r.errors[0].line, 3);
        assert_eq!(r.errors[0].text, "indicator--3");
    }

    #[test]
    fn bad_json_is_one_error() {
        let r = parse_bytes(b"{\"type\": \"bundle\", ", &Format::Stix, "b.json");
        assert_eq!(r.stats.rejected, 1);
        assert!(r.nets.is_empty());
    }
}
