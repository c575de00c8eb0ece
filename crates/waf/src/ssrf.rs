//! Built-in SSRF / instance-metadata protection (ATT&CK T1552.005), independent of CRS: finds
//! cloud metadata endpoints in any form a URL parser or `inet_aton` would accept — dotted,
//! decimal, hex, octal and mixed IPv4, IPv4-mapped/compatible/NAT64 IPv6, `fd00:ec2::254`,
//! metadata host names and wildcard-DNS names embedding the address — after percent-decoding.

use std::net::{Ipv4Addr, Ipv6Addr};

/// ATT&CK technique for cloud instance metadata API access.
pub const TECHNIQUE: &str = "T1552.005";

const METADATA_V4: &[(Ipv4Addr, &str)] = &[
    (
        Ipv4Addr::new(169, 254, 169, 254),
        "169.254.169.254 (AWS/GCP/Azure/OpenStack metadata)",
    ),
    (
        Ipv4Addr::new(169, 254, 170, 2),
        "169.254.170.2 (ECS task metadata)",
    ),
    (
        Ipv4Addr::new(100, 100, 100, 200),
        "100.100.100.200 (Alibaba metadata)",
    ),
    (
        Ipv4Addr::new(192, 0, 0, 192),
        "192.0.0.192 (Oracle metadata)",
    ),
];
const METADATA_V6: &[(Ipv6Addr, &str)] = &[(
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254),
    "fd00:ec2::254 (AWS IPv6 metadata)",
)];
const METADATA_NAMES: &[&str] = &[
    "metadata.google.internal",
    "metadata.goog",
    "metadata",
    "instance-data",
    "instance-data.ec2.internal",
    "metadata.azure.internal",
    "metadata.tencentyun.com",
    "metadata.platformequinix.com",
];
/// Embedded forms used with wildcard DNS services (`169.254.169.254.nip.io`, `a9fea9fe.nip.io`).
const EMBEDDED: &[&str] = &[
    "169.254.169.254",
    "169-254-169-254",
    "a9fea9fe",
    "a9fe-a9fe",
];

/// Upper bound on inspected bytes per value.
const MAX_SCAN_BYTES: usize = 64 * 1024;

fn pct_decode(v: &[u8]) -> Vec<u8> {
    crate::transform::url_decode(v, true)
}

/// Parse an IPv4 address the way `inet_aton` does (1–4 parts; decimal, `0x` hex, `0` octal).
pub fn parse_inet_aton(s: &str) -> Option<Ipv4Addr> {
    if s.is_empty() || s.len() > 64 {
        return None;
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() > 4 || parts.iter().any(|p| p.is_empty()) {
        return None;
    }
    let mut nums = Vec::with_capacity(4);
    for p in &parts {
        let v = if let Some(h) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
            if h.is_empty() {
                0
            } else {
                u64::from_str_radix(h, 16).ok()?
            }
        } else if p.len() > 1 && p.starts_with('0') {
            u64::from_str_radix(&p[1..], 8).ok()?
        } else {
            p.parse::<u64>().ok()?
        };
        nums.push(v);
    }
    let (last, head) = nums.split_last()?;
    let mut out: u64 = 0;
    for (i, n) in head.iter().enumerate() {
        if *n > 255 {
            return None;
        }
        out |= n << (24 - 8 * i);
    }
    let last_bits = 32 - 8 * head.len();
    if *last >= 1u64 << last_bits {
        return None;
    }
    out |= last;
    u32::try_from(out).ok().map(Ipv4Addr::from)
}

fn v4_hit(a: Ipv4Addr) -> Option<&'static str> {
    METADATA_V4.iter().find(|(m, _)| *m == a).map(|(_, d)| *d)
}

fn v6_hit(a: Ipv6Addr) -> Option<&'static str> {
    if let Some((_, d)) = METADATA_V6.iter().find(|(m, _)| *m == a) {
        return Some(d);
    }
    let seg = a.segments();
    // IPv4-mapped (::ffff:a.b.c.d), IPv4-compatible (::a.b.c.d) and NAT64 (64:ff9b::/96).
    let embedded = seg[..5].iter().all(|s| *s == 0) && (seg[5] == 0xffff || seg[5] == 0)
        || seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    if embedded {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            (seg[6] & 0xff) as u8,
            (seg[7] >> 8) as u8,
            (seg[7] & 0xff) as u8,
        );
        return v4_hit(v4);
    }
    None
}

/// Classify one host string (brackets, port and trailing dot allowed).
pub fn classify_host(host: &str, url_context: bool) -> Option<&'static str> {
    let h = host.trim().trim_end_matches('.').to_ascii_lowercase();
    if h.is_empty() {
        return None;
    }
    if let Some(inner) = h.strip_prefix('[') {
        let inner = inner.split(']').next().unwrap_or("");
        let inner = inner.split('%').next().unwrap_or("");
        return inner.parse::<Ipv6Addr>().ok().and_then(v6_hit);
    }
    if h.matches(':').count() >= 2 {
        let inner = h.split('%').next().unwrap_or("");
        return inner.parse::<Ipv6Addr>().ok().and_then(v6_hit);
    }
    let no_port = h.split(':').next().unwrap_or("");
    if METADATA_NAMES.contains(&no_port) && (url_context || no_port.contains('.')) {
        return Some("cloud metadata host name");
    }
    // The address itself (dotted, in any inet_aton form) before the embedded-name check, which
    // would otherwise label a plain `169.254.169.254` as a wildcard-DNS name.
    if no_port.contains('.') {
        if let Some(hit) = parse_inet_aton(no_port).and_then(v4_hit) {
            return Some(hit);
        }
    }
    if no_port.contains('.') && EMBEDDED.iter().any(|e| no_port.contains(e)) {
        return Some("wildcard-DNS name embedding 169.254.169.254");
    }
    // Single-number forms (2852039166, 0xa9fea9fe) are common non-address values; only take
    // them where a URL puts a host.
    if !no_port.contains('.') && !url_context {
        return None;
    }
    parse_inet_aton(no_port).and_then(v4_hit)
}

/// Scan a value (parameter, header, body) for a metadata endpoint; returns what was found.
pub fn scan(value: &[u8]) -> Option<&'static str> {
    let mut v = value[..value.len().min(MAX_SCAN_BYTES)].to_vec();
    for _ in 0..3 {
        let d = pct_decode(&v);
        if d == v {
            break;
        }
        v = d;
    }
    let s = String::from_utf8_lossy(&v).to_ascii_lowercase();
    // URL hosts: after `//` up to the path; strip userinfo.
    let mut rest = s.as_str();
    while let Some(p) = rest.find("//") {
        let after = &rest[p + 2..];
        let end = after
            .find(|c: char| {
                matches!(
                    c,
                    '/' | '?' | '#' | '\\' | ' ' | '"' | '\'' | '<' | '>' | '&'
                )
            })
            .unwrap_or(after.len());
        let authority = &after[..end];
        let host = authority.rsplit('@').next().unwrap_or(authority);
        if let Some(hit) = classify_host(host, true) {
            return Some(hit);
        }
        rest = after;
    }
    // Bare tokens anywhere (`169.254.169.254`, `[::ffff:a9fe:a9fe]`, `metadata.google.internal`).
    for tok in s.split(|c: char| {
        !(c.is_ascii_alphanumeric() || matches!(c, '.' | ':' | '[' | ']' | '-' | '_' | '%'))
    }) {
        if tok.len() < 4 {
            continue;
        }
        if let Some(hit) = classify_host(tok, false) {
            return Some(hit);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_forms_are_found() {
        for v in [
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://0xA9FEA9FE/",
            "http://0251.0376.0251.0376/",
            "http://0xa9.254.43518/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:a9fe:a9fe]/",
            "http://[fd00:ec2::254]/latest",
            "http://metadata.google.internal/computeMetadata/v1/",
            "url=http%3A%2F%2F169.254.169.254%2F",
            "http://169.254.169.254.nip.io/",
            "http://user@169.254.169.254:80/",
            "169.254.169.254",
            "http%253A%252F%252F169.254.169.254",
            "http://[64:ff9b::a9fe:a9fe]/",
        ] {
            assert!(scan(v.as_bytes()).is_some(), "missed {v}");
        }
    }

    #[test]
    fn the_address_is_labelled_as_the_address_and_names_as_names() {
        let address = Some("169.254.169.254 (AWS/GCP/Azure/OpenStack metadata)");
        assert_eq!(scan(b"http://169.254.169.254/latest/meta-data/"), address);
        assert_eq!(scan(b"169.254.169.254"), address);
        assert_eq!(classify_host("169.254.169.254:80", true), address);
        assert_eq!(
            scan(b"http://169.254.169.254.nip.io/"),
            Some("wildcard-DNS name embedding 169.254.169.254")
        );
    }

    #[test]
    fn ordinary_values_pass() {
        for v in [
            "http://example.com/",
            "2852039166",
            "192.0.2.1",
            "metadata",
            "the metadata of the file",
            "http://[2001:db8::1]/",
            "version 1.2.3.4",
        ] {
            assert!(scan(v.as_bytes()).is_none(), "false positive {v}");
        }
    }

    #[test]
    fn inet_aton() {
        assert_eq!(
            parse_inet_aton("2852039166"),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(
            parse_inet_aton("169.254.43518"),
            Some(Ipv4Addr::new(169, 254, 169, 254))
        );
        assert_eq!(parse_inet_aton("256.1.1.1"), None);
        assert_eq!(parse_inet_aton("1.2.3.4.5"), None);
    }
}
