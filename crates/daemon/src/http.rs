//! The admin HTTP listener (loopback by default, bearer token required on every path):
//! `/metrics` (Prometheus text), `/api/status`, `/api/summary`, `/api/coverage`, `/api/events`,
//! `POST /api/reload`, and `/` (the dashboard, one self-contained page: no external assets).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{unix_now_ns, Shared};
use crate::metrics::{self, MetricsInput};
use crate::store::{Query, Store};
use crate::DaemonError;

/// Largest request head.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most connections served at once; more are answered 503.
const MAX_CONNECTIONS: usize = 32;
/// Per-connection read timeout (slow clients are dropped).
const READ_TIMEOUT: Duration = Duration::from_secs(5);

const DASHBOARD: &str = include_str!("dashboard.html");

/// Bind and serve on a thread; returns the bound address (port 0 picks one).
pub fn serve(listen: SocketAddr, shared: Arc<Shared>) -> Result<SocketAddr, DaemonError> {
    let listener = TcpListener::bind(listen).map_err(|e| DaemonError::io(listen.to_string(), e))?;
    let bound = listener
        .local_addr()
        .map_err(|e| DaemonError::io(listen.to_string(), e))?;
    let active = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                let mut stream = stream;
                let _ = respond(&mut stream, 503, "text/plain", b"busy\n");
                continue;
            }
            let shared = shared.clone();
            let active = active.clone();
            std::thread::spawn(move || {
                handle(stream, &shared);
                active.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    Ok(bound)
}

/// A parsed request head.
#[derive(Debug, PartialEq, Eq)]
pub struct Head {
    /// Method.
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Decoded query parameters.
    pub query: Vec<(String, String)>,
    /// The bearer token from `Authorization`, if any.
    pub bearer: Option<String>,
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse a request head (pure).
pub fn parse_head(head: &str) -> Option<Head> {
    let mut lines = head.split("\r\n");
    let mut request = lines.next()?.split(' ');
    let method = request.next()?.to_string();
    let target = request.next()?;
    if !request.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let query = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let bearer = lines.find_map(|line| {
        let (name, value) = line.split_once(':')?;
        if !name.trim().eq_ignore_ascii_case("authorization") {
            return None;
        }
        value
            .trim()
            .strip_prefix("Bearer ")
            .map(|t| t.trim().to_string())
    });
    Some(Head {
        method,
        path: path.to_string(),
        query,
        bearer,
    })
}

fn same_token(a: &str, b: &str) -> bool {
    // Length is not secret; compare every byte so timing does not reveal the prefix.
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn respond(
    stream: &mut TcpStream,
    status: u16,
    content_type: &str,
    body: &[u8],
) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        503 => "Service Unavailable",
        _ => "Internal Server Error",
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nContent-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    stream.write_all(body)
}

fn read_head(stream: &mut TcpStream) -> Option<String> {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        if buf.len() >= MAX_HEAD_BYTES {
            return None;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    String::from_utf8(buf[..end].to_vec()).ok()
}

fn handle(mut stream: TcpStream, shared: &Shared) {
    let Some(head) = read_head(&mut stream).as_deref().and_then(parse_head) else {
        let _ = respond(&mut stream, 400, "text/plain", b"bad request\n");
        return;
    };
    let token_ok = match &shared.token {
        None => false,
        Some(token) => {
            let given = head.bearer.clone().or_else(|| {
                head.query
                    .iter()
                    .find(|(k, _)| k == "token")
                    .map(|(_, v)| v.clone())
            });
            given.is_some_and(|g| same_token(&g, token))
        }
    };
    if !token_ok {
        let _ = respond(
            &mut stream,
            401,
            "text/plain",
            b"token required (Authorization: Bearer, or ?token=)\n",
        );
        return;
    }
    let json = |v: &serde_json::Value| v.to_string().into_bytes();
    let result = match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/") => respond(
            &mut stream,
            200,
            "text/html; charset=utf-8",
            DASHBOARD.as_bytes(),
        ),
        ("GET", "/metrics") => {
            let snap = shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let summary = Store::open(&shared.config.store_path())
                .and_then(|s| s.summary())
                .ok();
            let rules = shared.rule_counters();
            let uptime_s =
                ((unix_now_ns() / 1_000_000_000) as u64).saturating_sub(snap.started_unix_s);
            let text = metrics::render(&MetricsInput {
                components: &snap.components,
                summary: summary.as_ref(),
                rules: &rules,
                reloads_ok: snap.reloads_ok,
                reloads_failed: snap.reloads_failed,
                uptime_s,
                failing_open: &snap.failing_open,
                apply_pending: snap.pending.is_some(),
            });
            respond(
                &mut stream,
                200,
                "text/plain; version=0.0.4",
                text.as_bytes(),
            )
        }
        ("GET", "/api/status") => {
            let snap = shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            respond(
                &mut stream,
                200,
                "application/json",
                &json(&serde_json::json!(snap)),
            )
        }
        ("GET", "/api/summary") => {
            match Store::open(&shared.config.store_path()).and_then(|s| s.summary()) {
                Ok(summary) => respond(
                    &mut stream,
                    200,
                    "application/json",
                    &json(&serde_json::json!(summary)),
                ),
                Err(err) => respond(&mut stream, 500, "text/plain", err.to_string().as_bytes()),
            }
        }
        ("GET", "/api/coverage") => {
            let coverage = shared
                .coverage
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            respond(&mut stream, 200, "application/json", &json(&coverage))
        }
        ("GET", "/api/events") => {
            let get = |key: &str| {
                head.query
                    .iter()
                    .find(|(k, v)| k == key && !v.is_empty())
                    .map(|(_, v)| v.clone())
            };
            let query = Query {
                since_ns: get("since_ns").and_then(|v| v.parse().ok()),
                until_ns: get("until_ns").and_then(|v| v.parse().ok()),
                component: get("component"),
                technique: get("technique"),
                src_ip: get("src"),
                rule: get("rule"),
                verdict: get("verdict"),
                limit: get("limit").and_then(|v| v.parse().ok()),
            };
            match Store::open(&shared.config.store_path()).and_then(|s| s.query(&query)) {
                Ok(events) => respond(
                    &mut stream,
                    200,
                    "application/json",
                    &json(&serde_json::json!(events)),
                ),
                Err(err) => respond(&mut stream, 500, "text/plain", err.to_string().as_bytes()),
            }
        }
        ("POST", "/api/reload") => match shared.request_reload() {
            Some(Ok(msg)) => respond(
                &mut stream,
                200,
                "application/json",
                &json(&serde_json::json!({"ok": true, "message": msg})),
            ),
            Some(Err(msg)) => respond(
                &mut stream,
                409,
                "application/json",
                &json(&serde_json::json!({"ok": false, "error": msg})),
            ),
            None => respond(
                &mut stream,
                503,
                "text/plain",
                b"the daemon did not answer in time\n",
            ),
        },
        (
            _,
            "/" | "/metrics" | "/api/status" | "/api/summary" | "/api/coverage" | "/api/events"
            | "/api/reload",
        ) => respond(&mut stream, 405, "text/plain", b"method not allowed\n"),
        _ => respond(&mut stream, 404, "text/plain", b"not found\n"),
    };
    let _ = result;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads_tokens_and_queries() {
        let head = parse_head("GET /api/events?technique=T1071&src=192.0.2.1&x=a%20b+c HTTP/1.1\r\nHost: x\r\nauthorization: Bearer  s3cret \r\n").unwrap();
        assert_eq!(head.path, "/api/events");
        assert_eq!(head.bearer.as_deref(), Some("s3cret"));
        assert_eq!(head.query[2], ("x".to_string(), "a b c".to_string()));
        assert!(parse_head("GET /\r\n").is_none());
        assert!(parse_head("GET / SPDY/9\r\n").is_none());
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
        assert_eq!(percent_decode("%41%"), "A%");
    }

    #[test]
    fn token_comparison_is_exact() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "abcd"));
        assert!(!same_token("", "a"));
    }
}
