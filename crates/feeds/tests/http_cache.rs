//! Sources and cache against a local HTTP server (127.0.0.1:0, no internet): conditional
//! requests, refresh interval, last-good cache, and the sanity checks that refuse a shrunken or
//! empty version while keeping the last good one.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use rampart_feeds::event::RefreshStatus;
use rampart_feeds::source::{refresh, Cache, FeedSpec};
use rampart_feeds::Format;

/// Removes a temporary directory when the test ends, pass or fail.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Default)]
struct Served {
    body: Vec<u8>,
    etag: String,
    status: u16,
    requests: u32,
    conditional: u32,
}

/// A one-thread HTTP/1.1 server answering every request from `state` (Connection: close).
fn serve(state: Arc<Mutex<Served>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut if_none_match = None;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("if-none-match:") {
                    if_none_match = Some(v.trim().to_string());
                }
            }
            let mut s = state.lock().unwrap();
            s.requests += 1;
            let response = if s.status != 200 {
                format!(
                    "HTTP/1.1 {} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    s.status
                )
                .into_bytes()
            } else if if_none_match.as_deref() == Some(s.etag.to_ascii_lowercase().as_str()) {
                s.conditional += 1;
                format!(
                    "HTTP/1.1 304 Not Modified\r\nETag: {}\r\nConnection: close\r\n\r\n",
                    s.etag
                )
                .into_bytes()
            } else {
                let mut r = format!(
                    "HTTP/1.1 200 OK\r\nETag: {}\r\nLast-Modified: Fri, 27 Nov 2026 20:00:00 GMT\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    s.etag,
                    s.body.len()
                )
                .into_bytes();
                r.extend_from_slice(&s.body);
                r
            };
            let _ = stream.write_all(&response);
        }
    });
    format!("http://{addr}/feed.txt")
}

fn list(n: u32) -> Vec<u8> {
    let mut s = String::from("# test feed\n");
    for i in 0..n {
        s.push_str(&format!("198.51.100.{}\n", i % 250));
    }
    s.push_str("not-an-address\n");
    s.into_bytes()
}

#[test]
fn refresh_cycle_with_conditional_requests_and_sanity_checks() {
    let state = Arc::new(Mutex::new(Served {
        body: list(100),
        etag: "\"v1\"".into(),
        status: 200,
        ..Served::default()
    }));
    let url = serve(state.clone());
    let dir = std::env::temp_dir().join(format!("rampart-feeds-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = TempDir(dir.clone());
    let cache = Cache::new(&dir);
    let spec = FeedSpec {
        name: "test".into(),
        url,
        format: Format::Plain,
        refresh_s: 3600,
        max_shrink_pct: 50,
        allow: vec![],
    };

    // 1. First fetch: accepted, cached, bad line counted.
    let r = refresh(&spec, &cache, 1_000, false);
    assert_eq!(r.event.status, RefreshStatus::Updated);
    assert_eq!(r.event.entries, 100);
    assert_eq!(r.event.rejected_lines, 1);
    assert!(r.changed);
    assert_eq!(cache.meta("test").unwrap().etag.as_deref(), Some("\"v1\""));

    // 2. Not due yet: no request at all.
    let r = refresh(&spec, &cache, 1_500, false);
    assert_eq!(r.event.status, RefreshStatus::NotDue { due_in_s: 3100 });
    assert_eq!(r.current.unwrap().nets.len(), 100);
    assert_eq!(state.lock().unwrap().requests, 1);

    // 3. Due: conditional request answered 304.
    let r = refresh(&spec, &cache, 5_000, false);
    assert_eq!(r.event.status, RefreshStatus::NotModified);
    assert_eq!(state.lock().unwrap().conditional, 1);
    assert_eq!(r.current.unwrap().nets.len(), 100);

    // 4. Shrinks by 70%: refused, last good kept, reason recorded.
    {
        let mut s = state.lock().unwrap();
        s.body = list(30);
        s.etag = "\"v2\"".into();
    }
    let r = refresh(&spec, &cache, 10_000, true);
    match &r.event.status {
        RefreshStatus::Refused { reason } => assert!(reason.contains("70% fewer"), "{reason}"),
        other => panic!("expected refusal, got {other:?}"),
    }
    assert_eq!(r.current.as_ref().unwrap().nets.len(), 100);
    assert!(!r.changed);
    assert!(cache.meta("test").unwrap().last_refusal.is_some());
    assert_eq!(cache.meta("test").unwrap().etag.as_deref(), Some("\"v1\""));

    // 5. Empty: refused.
    {
        let mut s = state.lock().unwrap();
        s.body = b"# nothing today\n".to_vec();
        s.etag = "\"v3\"".into();
    }
    let r = refresh(&spec, &cache, 20_000, true);
    assert!(
        matches!(r.event.status, RefreshStatus::Refused { .. }),
        "{:?}",
        r.event.status
    );
    assert_eq!(r.current.unwrap().nets.len(), 100);

    // 6. Server error: fetch failed, last good kept.
    state.lock().unwrap().status = 500;
    let r = refresh(&spec, &cache, 30_000, true);
    assert!(matches!(r.event.status, RefreshStatus::FetchFailed { .. }));
    assert_eq!(r.current.unwrap().nets.len(), 100);

    // 7. A moderate shrink (40%) is accepted.
    {
        let mut s = state.lock().unwrap();
        s.status = 200;
        s.body = list(60);
        s.etag = "\"v4\"".into();
    }
    let r = refresh(&spec, &cache, 40_000, true);
    assert_eq!(r.event.status, RefreshStatus::Updated);
    assert_eq!(r.current.unwrap().nets.len(), 60);
    assert_eq!(cache.meta("test").unwrap().entries, 60);
    assert_eq!(cache.list(), vec!["test".to_string()]);

    // Events serialise to the shared shape.
    let ev = r.event.to_event("2026-11-27T21:00:00Z");
    assert_eq!(ev.event_type, "feed");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn file_sources_and_identical_content() {
    let dir = std::env::temp_dir().join(format!("rampart-feeds-file-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let feed = dir.join("feed.netset");
    std::fs::write(&feed, list(10)).unwrap();
    let cache = Cache::new(dir.join("cache"));
    let spec = FeedSpec {
        name: "file".into(),
        url: feed.display().to_string(),
        format: Format::Plain,
        refresh_s: 0,
        max_shrink_pct: 50,
        allow: vec![],
    };
    assert_eq!(
        refresh(&spec, &cache, 1, false).event.status,
        RefreshStatus::Updated
    );
    assert_eq!(
        refresh(&spec, &cache, 2, false).event.status,
        RefreshStatus::NotModified
    );
    std::fs::remove_file(&feed).unwrap();
    let r = refresh(&spec, &cache, 3, false);
    assert!(matches!(r.event.status, RefreshStatus::FetchFailed { .. }));
    assert_eq!(r.current.unwrap().nets.len(), 10);
    let _ = std::fs::remove_dir_all(&dir);
}
