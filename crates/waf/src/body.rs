//! Request body processors (urlencoded, multipart, JSON, XML) and the HTTP/1.x request parser
//! the regression runner and the proxy share. All bounded: counts and nesting are capped.

use crate::transform::url_decode;

/// Upper bound on arguments produced by one parser (beyond `SecArgumentsLimit`).
pub const MAX_ARGS: usize = 10_000;
/// Upper bound on JSON/XML nesting.
pub const MAX_DEPTH: usize = 256;

/// `a=1&b=2` → pairs, `+` and `%XX` decoded; a parameter without `=` has an empty value.
pub fn parse_urlencoded(s: &[u8], out: &mut Vec<(String, Vec<u8>)>) {
    for part in s.split(|b| *b == b'&') {
        if part.is_empty() {
            continue;
        }
        if out.len() >= MAX_ARGS {
            break;
        }
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(p) => (&part[..p], &part[p + 1..]),
            None => (part, &b""[..]),
        };
        out.push((
            String::from_utf8_lossy(&url_decode(k, false)).into_owned(),
            url_decode(v, false),
        ));
    }
}

/// Result of multipart parsing.
#[derive(Debug, Default, Clone)]
pub struct Multipart {
    /// Non-file fields.
    pub args: Vec<(String, Vec<u8>)>,
    /// File fields: (field name, file name, size).
    pub files: Vec<(String, Vec<u8>, usize)>,
    /// Part headers: (field name, full header line).
    pub part_headers: Vec<(String, Vec<u8>)>,
    /// Any structural problem.
    pub error: Option<String>,
}

/// Extract a parameter (`boundary`, `name`, `filename`) from a header value.
pub fn header_param(value: &[u8], param: &str) -> Option<Vec<u8>> {
    let lower = value.to_ascii_lowercase();
    let pat = format!("{param}=");
    let mut from = 0;
    while let Some(p) = find(&lower[from..], pat.as_bytes()) {
        let at = from + p;
        // Must be a whole parameter name (preceded by ';' or whitespace or start).
        let ok = at == 0 || matches!(lower[at - 1], b';' | b' ' | b'\t');
        let vstart = at + pat.len();
        if ok {
            let rest = &value[vstart..];
            if let Some(r) = rest.strip_prefix(b"\"") {
                let end = r.iter().position(|b| *b == b'"').unwrap_or(r.len());
                return Some(r[..end].to_vec());
            }
            let end = rest
                .iter()
                .position(|b| *b == b';' || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            return Some(rest[..end].to_vec());
        }
        from = vstart;
    }
    None
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parse `multipart/form-data` with `boundary`.
pub fn parse_multipart(body: &[u8], boundary: &[u8]) -> Multipart {
    let mut m = Multipart::default();
    if boundary.is_empty() {
        m.error = Some("multipart without boundary".into());
        return m;
    }
    let mut delim = b"--".to_vec();
    delim.extend_from_slice(boundary);
    let Some(first) = find(body, &delim) else {
        m.error = Some("boundary not found".into());
        return m;
    };
    let mut pos = first + delim.len();
    let mut closed = false;
    for _ in 0..MAX_ARGS {
        if body[pos..].starts_with(b"--") {
            closed = true;
            break;
        }
        // Skip the line break after the delimiter.
        if body[pos..].starts_with(b"\r\n") {
            pos += 2;
        } else if body[pos..].starts_with(b"\n") {
            pos += 1;
        }
        let Some(next) = find(&body[pos..], &delim) else {
            m.error = Some("unterminated part".into());
            break;
        };
        let part = &body[pos..pos + next];
        // Strip the line break that belongs to the next delimiter.
        let part = part
            .strip_suffix(b"\r\n")
            .or_else(|| part.strip_suffix(b"\n"))
            .unwrap_or(part);
        let (head, content) = match find(part, b"\r\n\r\n") {
            Some(p) => (&part[..p], &part[p + 4..]),
            None => match find(part, b"\n\n") {
                Some(p) => (&part[..p], &part[p + 2..]),
                None => (part, &b""[..]),
            },
        };
        let mut name = None;
        let mut filename = None;
        let mut lines = Vec::new();
        for line in head.split(|b| *b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            lines.push(line.to_vec());
            let lower = line.to_ascii_lowercase();
            if lower.starts_with(b"content-disposition:") {
                name = header_param(&line[20..], "name");
                filename = header_param(&line[20..], "filename");
            }
        }
        let name_s = String::from_utf8_lossy(&name.unwrap_or_default()).into_owned();
        for l in lines {
            m.part_headers.push((name_s.clone(), l));
        }
        match filename {
            Some(f) => m.files.push((name_s, f, content.len())),
            None => m.args.push((name_s, content.to_vec())),
        }
        pos += next + delim.len();
        if pos > body.len() {
            break;
        }
    }
    if !closed && m.error.is_none() {
        m.error = Some("missing final boundary".into());
    }
    m
}

/// Parse JSON into `json.a.b` arguments; array elements carry the array's name, as
/// libmodsecurity names them (so `ARGS_NAMES` ends with the key the client sent).
pub fn parse_json(body: &[u8], out: &mut Vec<(String, Vec<u8>)>) -> Result<(), String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    fn walk(
        v: &serde_json::Value,
        path: &mut String,
        depth: usize,
        out: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<(), String> {
        if depth > MAX_DEPTH {
            return Err("JSON nesting too deep".into());
        }
        if out.len() >= MAX_ARGS {
            return Ok(());
        }
        match v {
            serde_json::Value::Object(map) => {
                for (k, child) in map {
                    let len = path.len();
                    path.push('.');
                    path.push_str(k);
                    walk(child, path, depth + 1, out)?;
                    path.truncate(len);
                }
            }
            serde_json::Value::Array(items) => {
                for child in items {
                    walk(child, path, depth + 1, out)?;
                }
            }
            serde_json::Value::String(s) => out.push((path.clone(), s.as_bytes().to_vec())),
            serde_json::Value::Null => out.push((path.clone(), Vec::new())),
            other => out.push((path.clone(), other.to_string().into_bytes())),
        }
        Ok(())
    }
    let mut path = "json".to_string();
    walk(&v, &mut path, 0, out)
}

/// Minimal XML: text content (concatenated, for `XML:/*`) and attribute values (`XML://@*`).
#[derive(Debug, Default, Clone)]
pub struct Xml {
    /// Concatenated character data.
    pub text: Vec<u8>,
    /// Attribute values.
    pub attrs: Vec<Vec<u8>>,
}

/// Decode XML character and predefined entity references, as an XML parser reports values.
pub fn xml_unescape(v: &[u8]) -> Vec<u8> {
    if !v.contains(&b'&') {
        return v.to_vec();
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&' {
            if let Some(end) = v[i..].iter().take(12).position(|b| *b == b';') {
                let ent = &v[i + 1..i + end];
                let decoded: Option<Vec<u8>> = match ent {
                    b"lt" => Some(b"<".to_vec()),
                    b"gt" => Some(b">".to_vec()),
                    b"amp" => Some(b"&".to_vec()),
                    b"quot" => Some(b"\"".to_vec()),
                    b"apos" => Some(b"'".to_vec()),
                    [b'#', b'x' | b'X', hex @ ..] => std::str::from_utf8(hex)
                        .ok()
                        .and_then(|h| u32::from_str_radix(h, 16).ok())
                        .and_then(char::from_u32)
                        .map(|c| c.to_string().into_bytes()),
                    [b'#', dec @ ..] => std::str::from_utf8(dec)
                        .ok()
                        .and_then(|d| d.parse::<u32>().ok())
                        .and_then(char::from_u32)
                        .map(|c| c.to_string().into_bytes()),
                    _ => None,
                };
                if let Some(d) = decoded {
                    out.extend_from_slice(&d);
                    i += end + 1;
                    continue;
                }
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

/// Parse XML leniently; errors on unbalanced markup.
pub fn parse_xml(body: &[u8]) -> Result<Xml, String> {
    let mut x = Xml::default();
    let mut i = 0;
    let mut depth: usize = 0;
    let mut seen_root = false;
    while i < body.len() {
        if body[i] == b'<' {
            let rest = &body[i..];
            if rest.starts_with(b"<!--") {
                i += find(&body[i..], b"-->").map_or(body.len(), |p| p + 3);
                continue;
            }
            if rest.starts_with(b"<![CDATA[") {
                let end = find(&body[i + 9..], b"]]>").ok_or("unterminated CDATA")?;
                x.text.extend_from_slice(&body[i + 9..i + 9 + end]);
                i += 9 + end + 3;
                continue;
            }
            let end = body[i..]
                .iter()
                .position(|b| *b == b'>')
                .ok_or("unterminated tag")?;
            let tag = &body[i + 1..i + end];
            if tag.starts_with(b"?") || tag.starts_with(b"!") {
                i += end + 1;
                continue;
            }
            if let Some(stripped) = tag.strip_prefix(b"/") {
                let _ = stripped;
                depth = depth.checked_sub(1).ok_or("unbalanced end tag")?;
            } else {
                seen_root = true;
                let self_closing = tag.ends_with(b"/");
                collect_attrs(tag, &mut x.attrs);
                if !self_closing {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err("XML nesting too deep".into());
                    }
                }
            }
            i += end + 1;
        } else {
            let end = body[i..]
                .iter()
                .position(|b| *b == b'<')
                .unwrap_or(body.len() - i);
            if depth > 0 {
                x.text.extend_from_slice(&xml_unescape(&body[i..i + end]));
            }
            i += end;
        }
    }
    if depth != 0 || !seen_root {
        return Err("unbalanced XML".into());
    }
    Ok(x)
}

fn collect_attrs(tag: &[u8], out: &mut Vec<Vec<u8>>) {
    let mut i = 0;
    while i < tag.len() {
        if tag[i] == b'=' {
            let mut j = i + 1;
            while j < tag.len() && tag[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < tag.len() && (tag[j] == b'"' || tag[j] == b'\'') {
                let q = tag[j];
                let end = tag[j + 1..]
                    .iter()
                    .position(|b| *b == q)
                    .unwrap_or(tag.len() - j - 1);
                out.push(xml_unescape(&tag[j + 1..j + 1 + end]));
                i = j + 1 + end + 1;
                continue;
            }
        }
        i += 1;
    }
}

/// A parsed HTTP request.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Method as sent.
    pub method: String,
    /// Request target as sent (path + query, or absolute URI).
    pub target: Vec<u8>,
    /// Protocol (`HTTP/1.1`).
    pub protocol: String,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body (de-chunked).
    pub body: Vec<u8>,
    /// Client address.
    pub remote_addr: String,
    /// Client port.
    pub remote_port: u16,
    /// Server port.
    pub server_port: u16,
}

impl Request {
    /// First header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }
}

/// A response the rules inspect in phases 3 and 4.
#[derive(Debug, Clone, Default)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Protocol.
    pub protocol: String,
    /// Headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Errors from [`parse_raw_request`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RawError {
    /// No blank line ending the header block.
    #[error("incomplete header block")]
    Incomplete,
    /// Request line is not `METHOD TARGET VERSION`.
    #[error("malformed request line")]
    RequestLine,
    /// Bad chunked encoding.
    #[error("malformed chunked body")]
    Chunked,
}

/// Parse raw HTTP/1.x bytes (as the regression tests' `encoded_request` carry them).
/// Lenient like a permissive server: header lines without a colon are skipped.
pub fn parse_raw_request(raw: &[u8]) -> Result<Request, RawError> {
    let (head, rest) = match find(raw, b"\r\n\r\n") {
        Some(p) => (&raw[..p], &raw[p + 4..]),
        None => match find(raw, b"\n\n") {
            Some(p) => (&raw[..p], &raw[p + 2..]),
            None => {
                if raw.ends_with(b"\r\n") || raw.ends_with(b"\n") {
                    (raw, &b""[..])
                } else {
                    return Err(RawError::Incomplete);
                }
            }
        },
    };
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let line = lines.next().ok_or(RawError::RequestLine)?;
    let parts: Vec<&[u8]> = line
        .split(|b| *b == b' ')
        .filter(|p| !p.is_empty())
        .collect();
    let (method, target, protocol) = match parts.as_slice() {
        [m, t, p] => (*m, *t, *p),
        [m, t] => (*m, *t, &b"HTTP/0.9"[..]),
        _ => return Err(RawError::RequestLine),
    };
    let mut req = Request {
        method: String::from_utf8_lossy(method).into_owned(),
        target: target.to_vec(),
        protocol: String::from_utf8_lossy(protocol).into_owned(),
        ..Request::default()
    };
    for l in lines {
        if l.is_empty() {
            continue;
        }
        if (l[0] == b' ' || l[0] == b'\t') && !req.headers.is_empty() {
            // Obsolete line folding: append to the previous header's value.
            if let Some(last) = req.headers.last_mut() {
                last.1.push(b' ');
                last.1.extend_from_slice(trim_bytes(l));
            }
            continue;
        }
        if let Some(p) = l.iter().position(|b| *b == b':') {
            req.headers.push((
                String::from_utf8_lossy(&l[..p]).into_owned(),
                trim_bytes(&l[p + 1..]).to_vec(),
            ));
        }
    }
    let chunked = req
        .header("transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().windows(7).any(|w| w == b"chunked"));
    if chunked {
        req.body = dechunk(rest)?;
    } else {
        let len = req
            .header("content-length")
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse::<usize>().ok());
        // Without Content-Length or chunked coding a request has no body (RFC 9112 6.3).
        req.body = match len {
            Some(n) => rest[..n.min(rest.len())].to_vec(),
            None => Vec::new(),
        };
    }
    Ok(req)
}

fn trim_bytes(v: &[u8]) -> &[u8] {
    let s = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let e = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(s, |p| p + 1);
    &v[s..e.max(s)]
}

/// Decode a chunked body.
pub fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, RawError> {
    let mut out = Vec::new();
    loop {
        let nl = find(data, b"\n").ok_or(RawError::Chunked)?;
        let line = data[..nl].strip_suffix(b"\r").unwrap_or(&data[..nl]);
        let size_s = line.split(|b| *b == b';').next().unwrap_or(b"");
        let size = usize::from_str_radix(
            std::str::from_utf8(size_s)
                .map_err(|_| RawError::Chunked)?
                .trim(),
            16,
        )
        .map_err(|_| RawError::Chunked)?;
        data = &data[nl + 1..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size {
            return Err(RawError::Chunked);
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size..];
        data = data
            .strip_prefix(b"\r\n")
            .or_else(|| data.strip_prefix(b"\n"))
            .unwrap_or(data);
    }
}

/// Why the HTTP front end refuses a request with 400 before any rule runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrontReject {
    /// Request line not `METHOD SP TARGET SP HTTP/x.y`, or a method with non-token bytes.
    #[error("malformed request line")]
    RequestLine,
    /// Version not `HTTP/d[.d]` with major ≥ 1.
    #[error("unsupported HTTP version")]
    Version,
    /// Target not origin-, absolute-, authority- (CONNECT) or asterisk-form, or has a fragment.
    #[error("malformed request target")]
    Target,
    /// Header name with non-token bytes, or a value with CR/LF/NUL.
    #[error("malformed header")]
    Header,
    /// Empty or malformed Host.
    #[error("malformed Host header")]
    Host,
    /// Both Content-Length and Transfer-Encoding (request smuggling guard).
    #[error("both Content-Length and Transfer-Encoding")]
    ContentLengthAndChunked,
    /// Several different Content-Length values.
    #[error("conflicting Content-Length headers")]
    ContentLength,
    /// Obsolete line folding.
    #[error("obsolete header line folding")]
    ObsFold,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Strict checks a front-end server applies to raw request bytes (what Apache/nginx answer 400
/// to), including the request-smuggling guards.
pub fn front_check(raw: &[u8]) -> Result<(), FrontReject> {
    let head_end = find(raw, b"\r\n\r\n").map_or(raw.len(), |p| p + 2);
    let head = &raw[..head_end];
    let mut lines = head.split(|b| *b == b'\n');
    let line = lines.next().unwrap_or(b"");
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let (method, target, version) = match parts.as_slice() {
        // A request line without a version is HTTP/0.9.
        [m, t, v] if !v.is_empty() => (*m, *t, Some(*v)),
        [m, t, _] | [m, t] => (*m, *t, None),
        _ => return Err(FrontReject::RequestLine),
    };
    if method.is_empty() || !method.iter().all(|b| is_tchar(*b)) || target.is_empty() {
        return Err(FrontReject::RequestLine);
    }
    if let Some(v) = version {
        let ok = v.len() >= 6
            && v.starts_with(b"HTTP/")
            && v[5].is_ascii_digit()
            && v[5] != b'0'
            && match &v[6..] {
                [] => true,
                [b'.', d] => d.is_ascii_digit(),
                _ => false,
            };
        if !ok {
            return Err(FrontReject::Version);
        }
    }
    let connect = method == b"CONNECT";
    let target_ok = if connect {
        let s = String::from_utf8_lossy(target);
        s.rsplit_once(':').is_some_and(|(h, p)| {
            !h.is_empty() && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
        })
    } else {
        target == b"*"
            || target.starts_with(b"/")
            || target.to_ascii_lowercase().starts_with(b"http://")
            || target.to_ascii_lowercase().starts_with(b"https://")
    };
    if !target_ok || target.contains(&b'#') {
        return Err(FrontReject::Target);
    }
    let mut content_lengths: Vec<&[u8]> = Vec::new();
    let mut chunked = false;
    for l in lines {
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        if l.is_empty() {
            continue;
        }
        if l[0] == b' ' || l[0] == b'\t' {
            return Err(FrontReject::ObsFold);
        }
        let Some(p) = l.iter().position(|b| *b == b':') else {
            return Err(FrontReject::Header);
        };
        let (name, value) = (&l[..p], trim_bytes(&l[p + 1..]));
        if name.is_empty() || !name.iter().all(|b| is_tchar(*b)) {
            return Err(FrontReject::Header);
        }
        if value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            return Err(FrontReject::Header);
        }
        if name.eq_ignore_ascii_case(b"host") {
            // HTTP/1.0 allows an empty Host; HTTP/1.1 does not (RFC 9112 3.2).
            let ok = (value.is_empty() && version != Some(b"HTTP/1.1"))
                || !value.is_empty()
                    && value
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._:[]~!$&'()*+,;=".contains(b));
            if !ok {
                return Err(FrontReject::Host);
            }
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths.push(value);
        }
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = true;
        }
    }
    if chunked && !content_lengths.is_empty() {
        return Err(FrontReject::ContentLengthAndChunked);
    }
    if content_lengths.windows(2).any(|w| w[0] != w[1])
        || content_lengths
            .iter()
            .any(|v| v.is_empty() || !v.iter().all(u8::is_ascii_digit))
    {
        return Err(FrontReject::ContentLength);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded() {
        let mut out = Vec::new();
        parse_urlencoded(b"a=1+2&b&c=%41", &mut out);
        assert_eq!(out[0], ("a".into(), b"1 2".to_vec()));
        assert_eq!(out[1], ("b".into(), b"".to_vec()));
        assert_eq!(out[2], ("c".into(), b"A".to_vec()));
    }

    #[test]
    fn multipart() {
        let body = b"--xx\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nhello\r\n--xx\r\nContent-Disposition: form-data; name=\"f\"; filename=\"x.php\"\r\nContent-Type: text/plain\r\n\r\n<?php\r\n--xx--\r\n";
        let m = parse_multipart(body, b"xx");
        assert_eq!(m.error, None);
        assert_eq!(m.args, vec![("a".to_string(), b"hello".to_vec())]);
        assert_eq!(m.files, vec![("f".to_string(), b"x.php".to_vec(), 5)]);
        assert_eq!(m.part_headers.len(), 3);
    }

    #[test]
    fn json_and_xml() {
        let mut out = Vec::new();
        parse_json(br#"{"a":{"b":[1,"x"]}}"#, &mut out).unwrap();
        assert_eq!(out[0], ("json.a.b".into(), b"1".to_vec()));
        assert_eq!(out[1], ("json.a.b".into(), b"x".to_vec()));
        assert!(parse_json(b"{", &mut out).is_err());
        let x =
            parse_xml(b"<?xml version=\"1.0\"?><a k=\"v&#x7B;&quot;\">t&lt;<b>u</b></a>").unwrap();
        assert_eq!(x.text, b"t<u");
        assert_eq!(x.attrs, vec![b"v{\"".to_vec()]);
        assert!(parse_xml(b"<a><b></a>").is_err());
    }

    #[test]
    fn raw_requests() {
        let r = parse_raw_request(
            b"POST /p?q=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.body, b"abc");
        assert_eq!(r.header("host"), Some(&b"x"[..]));
        assert_eq!(parse_raw_request(b"GET").unwrap_err(), RawError::Incomplete);
    }

    #[test]
    fn front_checks() {
        let ok = b"GET /a?b=1 HTTP/1.1\r\nHost: example.test\r\n\r\n";
        assert_eq!(front_check(ok), Ok(()));
        let cases: &[(&[u8], FrontReject)] = &[
            (b"\tGET / HTTP/1.1\r\nHost: x\r\n\r\n", FrontReject::RequestLine),
            (b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", FrontReject::Version),
            (b"GET / JUNK/1.0\r\nHost: x\r\n\r\n", FrontReject::Version),
            (b"GET /#frag HTTP/1.1\r\nHost: x\r\n\r\n", FrontReject::Target),
            (b"CONNECT example.test HTTP/1.1\r\nHost: x\r\n\r\n", FrontReject::Target),
            (b"GET / HTTP/1.1\r\nHost: x%1F\r\n\r\n", FrontReject::Host),
            (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n", FrontReject::Header),
            (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", FrontReject::ObsFold),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                FrontReject::ContentLengthAndChunked,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
                FrontReject::ContentLength,
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(
                front_check(raw),
                Err(*want),
                "{}",
                String::from_utf8_lossy(raw)
            );
        }
    }
}
