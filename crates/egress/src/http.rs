//! Bounded HTTP/1.x message-head parsing (pure): proxy request heads (absolute-form,
//! authority-form for CONNECT, origin-form for transparent mode), response heads, body framing
//! and chunk-size lines. Every length is capped by a named constant or a caller-given limit;
//! ambiguous framing that enables request smuggling (both `Content-Length` and
//! `Transfer-Encoding`, conflicting lengths, obsolete line folding, bare CR or LF) is an error,
//! never a guess.

use std::net::IpAddr;

/// Hard cap on a message head (request line + headers). Why: squid's default
/// `request_header_max_size` is 64 KB; nginx's `large_client_header_buffers` default is 4×8 KB.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// Hard cap on the number of header fields. Why: hyper and Go both default to 100.
pub const MAX_HEADERS: usize = 100;
/// Longest method token. Why: the longest registered method (`UPDATEREDIRECTREF`) has 17.
pub const MAX_METHOD_LEN: usize = 32;
/// Longest chunk-size line including extensions. Why: a size needs at most 16 hex digits;
/// extensions are ignored and anything longer is abuse.
pub const MAX_CHUNK_LINE: usize = 1024;
/// Longest accepted host name (RFC 1035 presentation form).
pub const MAX_HOST_LEN: usize = 253;

/// Why a head was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HeadError {
    /// The head did not end within the byte limit.
    #[error("message head larger than the limit")]
    TooLarge,
    /// More header fields than the limit.
    #[error("too many header fields")]
    TooManyHeaders,
    /// Request or status line is malformed.
    #[error("malformed start line")]
    BadStartLine,
    /// A header line is malformed (no colon, bad name, bad byte, obsolete folding).
    #[error("malformed header field")]
    BadHeader,
    /// Line ended with a bare LF or contains a bare CR.
    #[error("bare CR or LF in the head")]
    BareLineEnding,
    /// Unsupported HTTP version.
    #[error("unsupported HTTP version")]
    BadVersion,
    /// The request target is not usable (scheme, userinfo, host, port).
    #[error("malformed request target")]
    BadTarget,
    /// Content-Length and Transfer-Encoding together, conflicting lengths, or an unsupported
    /// transfer coding.
    #[error("ambiguous or unsupported message framing")]
    BadFraming,
}

/// A destination host.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A DNS name: lower case, no trailing dot, validated characters.
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name(n) => f.write_str(n),
            Self::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
            Self::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Request target forms (RFC 9112 §3.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `http://host[:port]/path?query` (forward proxy).
    Absolute {
        /// Host.
        host: Host,
        /// Port (80 when absent).
        port: u16,
        /// Path and query, starting with `/`.
        path: String,
    },
    /// `host:port` (CONNECT).
    Authority {
        /// Host.
        host: Host,
        /// Port.
        port: u16,
    },
    /// `/path?query` (transparent mode; the host comes from the Host header).
    Origin(String),
}

/// A parsed request head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token as sent (case-sensitive per RFC 9110).
    pub method: String,
    /// Target.
    pub target: Target,
    /// Minor version (0 or 1 of HTTP/1.x).
    pub minor: u8,
    /// Header fields in order (names as sent).
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes the head occupied, including the final CRLF CRLF.
    pub head_len: usize,
}

/// A parsed response head.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// Minor version.
    pub minor: u8,
    /// Header fields in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Bytes the head occupied.
    pub head_len: usize,
}

/// How a message body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyLen {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn split_lines(head: &[u8]) -> Result<Vec<&[u8]>, HeadError> {
    // `head` excludes the final empty line's CRLF CRLF terminator except one CRLF.
    let mut lines = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < head.len() {
        match head[i] {
            b'\r' => {
                if head.get(i + 1) != Some(&b'\n') {
                    return Err(HeadError::BareLineEnding);
                }
                lines.push(&head[start..i]);
                i += 2;
                start = i;
            }
            b'\n' => return Err(HeadError::BareLineEnding),
            _ => i += 1,
        }
    }
    if start < head.len() {
        lines.push(&head[start..]);
    }
    Ok(lines)
}

fn parse_headers(lines: &[&[u8]], max_headers: usize) -> Result<Vec<(String, Vec<u8>)>, HeadError> {
    if lines.len() > max_headers {
        return Err(HeadError::TooManyHeaders);
    }
    let mut out = Vec::with_capacity(lines.len());
    for line in lines {
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            // Obsolete line folding (RFC 9112 §5.2): a proxy must reject or replace it.
            return Err(HeadError::BadHeader);
        }
        let colon = line
            .iter()
            .position(|b| *b == b':')
            .ok_or(HeadError::BadHeader)?;
        let name = &line[..colon];
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(HeadError::BadHeader);
        }
        let value = trim(&line[colon + 1..]);
        if value.iter().any(|b| *b == 0 || *b == b'\r' || *b == b'\n') {
            return Err(HeadError::BadHeader);
        }
        // The name is ASCII (tchar), so this cannot fail.
        let name = String::from_utf8_lossy(name).into_owned();
        out.push((name, value.to_vec()));
    }
    Ok(out)
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map_or(start, |e| e + 1);
    &v[start..end.max(start)]
}

fn parse_version(v: &[u8]) -> Result<u8, HeadError> {
    match v {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        _ => Err(HeadError::BadVersion),
    }
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more (unless
/// `buf` already holds `max_bytes`, which is [`HeadError::TooLarge`]).
pub fn parse_request_head(
    buf: &[u8],
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<RequestHead>, HeadError> {
    let max_bytes = max_bytes.min(MAX_HEAD_BYTES);
    let window = &buf[..buf.len().min(max_bytes)];
    let Some(end) = find_head_end(window) else {
        return if buf.len() >= max_bytes {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let lines = split_lines(&buf[..end - 2])?;
    let (first, rest) = lines.split_first().ok_or(HeadError::BadStartLine)?;
    let mut parts = first.split(|b| *b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::BadStartLine);
    };
    if method.is_empty() || method.len() > MAX_METHOD_LEN || !method.iter().all(|b| is_tchar(*b)) {
        return Err(HeadError::BadStartLine);
    }
    let minor = parse_version(version)?;
    let method = String::from_utf8_lossy(method).into_owned();
    let target = parse_target(&method, target)?;
    let headers = parse_headers(rest, max_headers.min(MAX_HEADERS))?;
    Ok(Some(RequestHead {
        method,
        target,
        minor,
        headers,
        head_len: end,
    }))
}

fn parse_target(method: &str, raw: &[u8]) -> Result<Target, HeadError> {
    if raw.is_empty() || !raw.iter().all(|b| b.is_ascii_graphic()) {
        return Err(HeadError::BadTarget);
    }
    // All bytes are ASCII graphic, so this is valid UTF-8.
    let text = std::str::from_utf8(raw).map_err(|_| HeadError::BadTarget)?;
    if method == "CONNECT" {
        let (host, port) = parse_authority(text, None)?;
        return Ok(Target::Authority { host, port });
    }
    if text.starts_with('/') {
        return Ok(Target::Origin(text.to_string()));
    }
    let lower_scheme = text.get(..7).map(|s| s.to_ascii_lowercase());
    if lower_scheme.as_deref() != Some("http://") {
        // https:// in absolute-form would ask the proxy to originate TLS; not offered.
        return Err(HeadError::BadTarget);
    }
    let rest = &text[7..];
    let split = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(split);
    if path.starts_with('#') {
        return Err(HeadError::BadTarget);
    }
    let (host, port) = parse_authority(authority, Some(80))?;
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    Ok(Target::Absolute { host, port, path })
}

/// Parses `host[:port]` (IPv6 in brackets). `default_port` applies when the port is absent;
/// `None` makes the port mandatory (CONNECT).
pub fn parse_authority(text: &str, default_port: Option<u16>) -> Result<(Host, u16), HeadError> {
    if text.contains('@') {
        // Userinfo in a proxy target is a classic confusion vector (`http://good@evil/`).
        return Err(HeadError::BadTarget);
    }
    let (host_text, port_text) = if let Some(rest) = text.strip_prefix('[') {
        let close = rest.find(']').ok_or(HeadError::BadTarget)?;
        let after = &rest[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(HeadError::BadTarget),
        };
        let ip: std::net::Ipv6Addr = rest[..close].parse().map_err(|_| HeadError::BadTarget)?;
        return Ok((Host::Ip(IpAddr::V6(ip)), parse_port(port, default_port)?));
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (text, None),
        }
    };
    let port = parse_port(port_text, default_port)?;
    Ok((parse_host(host_text)?, port))
}

fn parse_port(text: Option<&str>, default_port: Option<u16>) -> Result<u16, HeadError> {
    match text {
        None => default_port.ok_or(HeadError::BadTarget),
        Some(p) if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) => {
            Err(HeadError::BadTarget)
        }
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => Err(HeadError::BadTarget),
            Ok(n) => Ok(n),
        },
    }
}

/// Validates a host name or IPv4 literal. Names whose last label is numeric or hex
/// (`0x7f.1`, `2130706433`) are refused: resolvers' `inet_aton` reads them as IPv4.
pub fn parse_host(text: &str) -> Result<Host, HeadError> {
    if let Ok(ip) = text.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(ip)));
    }
    let name = text.strip_suffix('.').unwrap_or(text);
    if name.is_empty() || name.len() > MAX_HOST_LEN {
        return Err(HeadError::BadTarget);
    }
    for label in name.split('.') {
        if label.is_empty()
            || label.len() > 63
            || !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(HeadError::BadTarget);
        }
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    let lower_last = last.to_ascii_lowercase();
    if last.bytes().all(|b| b.is_ascii_digit())
        || (lower_last.starts_with("0x") && lower_last[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(HeadError::BadTarget);
    }
    Ok(Host::Name(name.to_ascii_lowercase()))
}

/// Values of every header named `name` (case-insensitive).
pub fn header_values<'a>(
    headers: &'a [(String, Vec<u8>)],
    name: &'a str,
) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_slice())
}

/// The single value of `name`, if present exactly once.
pub fn header_one<'a>(headers: &'a [(String, Vec<u8>)], name: &'a str) -> Option<&'a [u8]> {
    let mut it = header_values(headers, name);
    let first = it.next()?;
    it.next().is_none().then_some(first)
}

/// Whether a comma-separated header (e.g. `Connection`) carries `token`.
pub fn has_token(headers: &[(String, Vec<u8>)], name: &str, token: &str) -> bool {
    header_values(headers, name).any(|v| {
        v.split(|b| *b == b',')
            .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
    })
}

fn framing(headers: &[(String, Vec<u8>)]) -> Result<Option<BodyLen>, HeadError> {
    let te: Vec<&[u8]> = header_values(headers, "transfer-encoding").collect();
    let cl: Vec<&[u8]> = header_values(headers, "content-length").collect();
    if !te.is_empty() {
        if !cl.is_empty() || te.len() != 1 || !te[0].eq_ignore_ascii_case(b"chunked") {
            return Err(HeadError::BadFraming);
        }
        return Ok(Some(BodyLen::Chunked));
    }
    if cl.is_empty() {
        return Ok(None);
    }
    let mut len: Option<u64> = None;
    for v in cl {
        for part in v.split(|b| *b == b',') {
            let p = trim(part);
            if p.is_empty() || p.len() > 19 || !p.iter().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::BadFraming);
            }
            let n: u64 = std::str::from_utf8(p)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or(HeadError::BadFraming)?;
            if len.is_some_and(|l| l != n) {
                return Err(HeadError::BadFraming);
            }
            len = Some(n);
        }
    }
    Ok(len.map(BodyLen::Length))
}

impl RequestHead {
    /// Body framing of the request (no length headers: no body).
    pub fn body_len(&self) -> Result<BodyLen, HeadError> {
        Ok(match framing(&self.headers)? {
            None | Some(BodyLen::Length(0)) => BodyLen::Empty,
            Some(b) => b,
        })
    }

    /// First value of a header as text (lossy).
    pub fn header_text(&self, name: &str) -> Option<String> {
        header_values(&self.headers, name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Parses a response head; same contract as [`parse_request_head`].
pub fn parse_response_head(
    buf: &[u8],
    max_bytes: usize,
    max_headers: usize,
) -> Result<Option<ResponseHead>, HeadError> {
    let max_bytes = max_bytes.min(MAX_HEAD_BYTES);
    let window = &buf[..buf.len().min(max_bytes)];
    let Some(end) = find_head_end(window) else {
        return if buf.len() >= max_bytes {
            Err(HeadError::TooLarge)
        } else {
            Ok(None)
        };
    };
    let lines = split_lines(&buf[..end - 2])?;
    let (first, rest) = lines.split_first().ok_or(HeadError::BadStartLine)?;
    if first.len() < 12 || first[8] != b' ' {
        return Err(HeadError::BadStartLine);
    }
    let minor = parse_version(&first[..8])?;
    let code = &first[9..12];
    if !code.iter().all(|b| b.is_ascii_digit()) || first.get(12).is_some_and(|b| *b != b' ') {
        return Err(HeadError::BadStartLine);
    }
    let status = code
        .iter()
        .fold(0u16, |acc, b| acc * 10 + u16::from(b - b'0'));
    if !(100..=999).contains(&status) {
        return Err(HeadError::BadStartLine);
    }
    let headers = parse_headers(rest, max_headers.min(MAX_HEADERS))?;
    Ok(Some(ResponseHead {
        status,
        minor,
        headers,
        head_len: end,
    }))
}

impl ResponseHead {
    /// Body framing of this response to a request with `method` (RFC 9112 §6.3).
    pub fn body_len(&self, method: &str) -> Result<BodyLen, HeadError> {
        if method == "HEAD" || (100..200).contains(&self.status) || matches!(self.status, 204 | 304)
        {
            return Ok(BodyLen::Empty);
        }
        Ok(match framing(&self.headers)? {
            Some(BodyLen::Length(0)) => BodyLen::Empty,
            Some(b) => b,
            None => BodyLen::UntilClose,
        })
    }
}

/// Parses a chunk-size line without its CRLF (`1a;ext=1` → 26). Extensions are ignored.
pub fn parse_chunk_size_line(line: &[u8]) -> Result<u64, HeadError> {
    if line.len() > MAX_CHUNK_LINE {
        return Err(HeadError::BadFraming);
    }
    let digits_end = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    let digits = &line[..digits_end];
    if digits.is_empty() || digits.len() > 15 {
        // 15 hex digits = 2^60 bytes: larger sizes are abuse and could overflow counters.
        return Err(HeadError::BadFraming);
    }
    let rest = &line[digits_end..];
    if !(rest.is_empty() || rest[0] == b';' || rest[0] == b' ' || rest[0] == b'\t') {
        return Err(HeadError::BadFraming);
    }
    if rest.iter().any(|b| *b == b'\r' || *b == b'\n' || *b == 0) {
        return Err(HeadError::BadFraming);
    }
    let mut v: u64 = 0;
    for b in digits {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(HeadError::BadFraming),
        };
        v = (v << 4) | u64::from(d);
    }
    Ok(v)
}

/// Hop-by-hop fields a proxy must not forward (RFC 9110 §7.6.1), plus proxy credentials.
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

/// Serialises the request head to send upstream: origin-form target, `Host` set to the target
/// authority (RFC 9112 §3.2.2: a proxy replaces a disagreeing Host), hop-by-hop fields and the
/// fields named in `Connection` removed, framing headers kept as parsed.
pub fn upstream_request_head(head: &RequestHead, host: &Host, port: u16, path: &str) -> Vec<u8> {
    let listed: Vec<String> = header_values(&head.headers, "connection")
        .flat_map(|v| v.split(|b| *b == b',').map(trim))
        .map(|t| String::from_utf8_lossy(t).to_ascii_lowercase())
        .collect();
    let mut out = Vec::with_capacity(head.head_len + 64);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.to_string().as_bytes());
    if port != 80 {
        out.extend_from_slice(format!(":{port}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in &head.headers {
        let lower = name.to_ascii_lowercase();
        if lower == "host" || HOP_BY_HOP.contains(&lower.as_str()) || listed.contains(&lower) {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if head.minor == 0 && !has_token(&head.headers, "connection", "keep-alive") {
        // An HTTP/1.0 client closes after the response; say so upstream.
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(text: &str) -> Result<Option<RequestHead>, HeadError> {
        parse_request_head(text.as_bytes(), MAX_HEAD_BYTES, MAX_HEADERS)
    }

    #[test]
    fn absolute_form() {
        let h =
            req("GET http://Example.COM:8080/a?b HTTP/1.1\r\nHost: x\r\nUser-Agent: curl\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(
            h.target,
            Target::Absolute {
                host: Host::Name("example.com".into()),
                port: 8080,
                path: "/a?b".into()
            }
        );
        assert_eq!(h.headers.len(), 2);
        assert_eq!(h.body_len().unwrap(), BodyLen::Empty);
        let up = upstream_request_head(&h, &Host::Name("example.com".into()), 8080, "/a?b");
        assert_eq!(
            String::from_utf8(up).unwrap(),
            "GET /a?b HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: curl\r\n\r\n"
        );
    }

    #[test]
    fn connect_form_and_ipv6() {
        let h = req("CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(
            h.target,
            Target::Authority {
                host: Host::Ip("2001:db8::1".parse().unwrap()),
                port: 443
            }
        );
        assert_eq!(
            req("CONNECT example.com HTTP/1.1\r\n\r\n"),
            Err(HeadError::BadTarget)
        );
    }

    #[test]
    fn incomplete_and_too_large() {
        assert_eq!(req("GET http://a.example/ HTTP/1.1\r\nHost: a"), Ok(None));
        let big = format!(
            "GET http://a.example/ HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(200)
        );
        assert_eq!(
            parse_request_head(big.as_bytes(), 100, MAX_HEADERS),
            Err(HeadError::TooLarge)
        );
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let both = req("POST http://a.example/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(both.body_len(), Err(HeadError::BadFraming));
        let two = req(
            "POST http://a.example/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(two.body_len(), Err(HeadError::BadFraming));
        let same = req("POST http://a.example/ HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(same.body_len(), Ok(BodyLen::Length(3)));
        let gzip =
            req("POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(gzip.body_len(), Err(HeadError::BadFraming));
        assert_eq!(
            req("GET http://a.example/ HTTP/1.1\r\nX: a\r\n b\r\n\r\n"),
            Err(HeadError::BadHeader)
        );
        assert_eq!(
            req("GET http://a.example/ HTTP/1.1\nX: a\r\n\r\n"),
            Err(HeadError::BareLineEnding)
        );
        assert_eq!(
            req("GET http://a.example/ HTTP/1.1\r\nX : a\r\n\r\n"),
            Err(HeadError::BadHeader)
        );
    }

    #[test]
    fn targets_that_confuse_are_refused() {
        for bad in [
            "GET http://user@a.example/ HTTP/1.1\r\n\r\n",
            "GET https://a.example/ HTTP/1.1\r\n\r\n",
            "GET http://0x7f.1/ HTTP/1.1\r\n\r\n",
            "GET http://2130706433/ HTTP/1.1\r\n\r\n",
            "GET http://a.example:0/ HTTP/1.1\r\n\r\n",
            "GET http://a.example:99999/ HTTP/1.1\r\n\r\n",
            "GET http://a%2eexample/ HTTP/1.1\r\n\r\n",
            "GET http://a..example/ HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(req(bad), Err(HeadError::BadTarget), "{bad}");
        }
        assert_eq!(
            req("GET http://a.example/ HTTP/2.0\r\n\r\n"),
            Err(HeadError::BadVersion)
        );
    }

    #[test]
    fn hop_by_hop_fields_are_dropped() {
        let h = req("GET http://a.example/ HTTP/1.1\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nProxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n")
            .unwrap()
            .unwrap();
        let up = String::from_utf8(upstream_request_head(
            &h,
            &Host::Name("a.example".into()),
            80,
            "/",
        ))
        .unwrap();
        assert_eq!(
            up,
            "GET / HTTP/1.1\r\nHost: a.example\r\nAccept: */*\r\n\r\n"
        );
    }

    #[test]
    fn response_framing() {
        let r = parse_response_head(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            MAX_HEAD_BYTES,
            MAX_HEADERS,
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.head_len, 38);
        assert_eq!(r.body_len("GET"), Ok(BodyLen::Length(5)));
        assert_eq!(r.body_len("HEAD"), Ok(BodyLen::Empty));
        let c = parse_response_head(b"HTTP/1.1 200 OK\r\n\r\n", MAX_HEAD_BYTES, MAX_HEADERS)
            .unwrap()
            .unwrap();
        assert_eq!(c.body_len("GET"), Ok(BodyLen::UntilClose));
        let nc = parse_response_head(
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            MAX_HEAD_BYTES,
            MAX_HEADERS,
        )
        .unwrap()
        .unwrap();
        assert_eq!(nc.body_len("GET"), Ok(BodyLen::Empty));
        assert_eq!(
            parse_response_head(b"HTTP/1.1 2000 OK\r\n\r\n", MAX_HEAD_BYTES, MAX_HEADERS),
            Err(HeadError::BadStartLine)
        );
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(parse_chunk_size_line(b"1a"), Ok(26));
        assert_eq!(parse_chunk_size_line(b"0;ext=1"), Ok(0));
        assert_eq!(
            parse_chunk_size_line(b"FFFFFFFFFFFFFFF"),
            Ok(0x0fff_ffff_ffff_ffff)
        );
        assert!(parse_chunk_size_line(b"1FFFFFFFFFFFFFFF").is_err());
        assert!(parse_chunk_size_line(b"").is_err());
        assert!(parse_chunk_size_line(b"-1").is_err());
        assert!(parse_chunk_size_line(b"1x").is_err());
    }
}
