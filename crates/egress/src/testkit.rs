//! Test support (hidden from docs): small blocking servers the egress tests — and the `rampart`
//! CLI tests, which cannot add dev-dependencies — run on loopback: an HTTP/1.1 origin that
//! echoes what it received, a TLS origin with a fresh self-signed certificate, and a fake DNS
//! server with fixed (e.g. rebinding) answers. Not for production use.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::http;

/// A running test server; stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// Bound address.
    pub addr: SocketAddr,
    /// Requests (or queries) served.
    pub hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    /// PEM of the self-signed certificate (TLS servers only).
    pub cert_pem: Option<String>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept/recv.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
        if let Ok(s) = UdpSocket::bind("127.0.0.1:0") {
            let _ = s.send_to(&[0u8; 12], self.addr);
        }
    }
}

/// Reads one request (head + Content-Length or chunked body) from `r`; `None` on EOF, error or
/// an incomplete body.
fn read_request<R: Read>(r: &mut R, buf: &mut Vec<u8>) -> Option<(http::RequestHead, Vec<u8>)> {
    let mut chunk = [0u8; 8192];
    let mut more = |r: &mut R, buf: &mut Vec<u8>| -> Option<()> {
        let n = r.read(&mut chunk).ok().filter(|n| *n > 0)?;
        buf.extend_from_slice(&chunk[..n]);
        Some(())
    };
    let head = loop {
        match http::parse_request_head(buf, http::MAX_HEAD_BYTES, http::MAX_HEADERS) {
            Ok(Some(head)) => break head,
            Ok(None) => more(r, buf)?,
            Err(_) => return None,
        }
    };
    buf.drain(..head.head_len);
    let mut body = Vec::new();
    match head.body_len().ok()? {
        http::BodyLen::Length(n) => {
            let n = usize::try_from(n).ok()?;
            while buf.len() < n {
                more(r, buf)?;
            }
            body.extend(buf.drain(..n));
        }
        http::BodyLen::Chunked => loop {
            let line_end = loop {
                if let Some(p) = buf.windows(2).position(|w| w == b"\r\n") {
                    break p;
                }
                more(r, buf)?;
            };
            let size = usize::try_from(http::parse_chunk_size_line(&buf[..line_end]).ok()?).ok()?;
            buf.drain(..line_end + 2);
            if size == 0 {
                // No trailers in tests: expect the final CRLF.
                while buf.len() < 2 {
                    more(r, buf)?;
                }
                buf.drain(..2);
                break;
            }
            while buf.len() < size + 2 {
                more(r, buf)?;
            }
            body.extend(buf.drain(..size));
            buf.drain(..2);
        },
        _ => {}
    }
    Some((head, body))
}

fn describe(head: &http::RequestHead, body: &[u8], tag: &str) -> Vec<u8> {
    let target = match &head.target {
        http::Target::Origin(p) => p.clone(),
        other => format!("{other:?}"),
    };
    let text = format!(
        "{tag} method={} target={} host={} body={}\n",
        head.method,
        target,
        head.header_text("host").unwrap_or_default(),
        body.len()
    );
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
        text.len()
    )
    .into_bytes();
    if head.method != "HEAD" {
        out.extend_from_slice(text.as_bytes());
    }
    out
}

fn serve_stream<S: Read + Write>(mut s: S, hits: &AtomicUsize, tag: &str) {
    let mut buf = Vec::new();
    while let Some((head, body)) = read_request(&mut s, &mut buf) {
        hits.fetch_add(1, Ordering::SeqCst);
        if s.write_all(&describe(&head, &body, tag)).is_err() {
            return;
        }
        let _ = s.flush();
    }
}

/// An HTTP/1.1 keep-alive origin on `bind` answering `200` with
/// `http method=M target=T host=H body=N`.
pub fn http_origin(bind: &str) -> std::io::Result<TestServer> {
    let l = TcpListener::bind(bind)?;
    let addr = l.local_addr()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (h, st) = (hits.clone(), stop.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            if st.load(Ordering::SeqCst) {
                return;
            }
            let Ok(s) = s else { continue };
            let h = h.clone();
            std::thread::spawn(move || serve_stream(s, &h, "http"));
        }
    });
    Ok(TestServer {
        addr,
        hits,
        stop,
        cert_pem: None,
    })
}

/// A TLS origin on `bind` with a self-signed certificate for `names`; answers like
/// [`http_origin`] with the tag `tls`.
pub fn tls_origin(bind: &str, names: &[&str]) -> std::io::Result<TestServer> {
    let err = |e: String| std::io::Error::other(e);
    let cert =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .map_err(|e| err(e.to_string()))?;
    let cert_pem = cert.cert.pem();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| err(e.to_string()))?;
    let config = Arc::new(config);
    let l = TcpListener::bind(bind)?;
    let addr = l.local_addr()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (h, st) = (hits.clone(), stop.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            if st.load(Ordering::SeqCst) {
                return;
            }
            let Ok(s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let h = h.clone();
            std::thread::spawn(move || serve_stream(rustls::StreamOwned::new(conn, s), &h, "tls"));
        }
    });
    Ok(TestServer {
        addr,
        hits,
        stop,
        cert_pem: Some(cert_pem),
    })
}

/// A fake DNS server on `bind` answering A/AAAA queries from `answers` (name → addresses;
/// unknown names get NXDOMAIN).
pub fn fake_dns(bind: &str, answers: HashMap<String, Vec<IpAddr>>) -> std::io::Result<TestServer> {
    let sock = UdpSocket::bind(bind)?;
    let addr = sock.local_addr()?;
    let hits = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let (h, st) = (hits.clone(), stop.clone());
    let answers = Arc::new(Mutex::new(answers));
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            if st.load(Ordering::SeqCst) {
                return;
            }
            let q = &buf[..n];
            let Ok((name, end)) = crate::resolve::read_name(q, 12) else {
                continue;
            };
            if q.len() < end + 4 {
                continue;
            }
            h.fetch_add(1, Ordering::SeqCst);
            let qtype = u16::from_be_bytes([q[end], q[end + 1]]);
            let mut resp = q[..end + 4].to_vec();
            resp[2] = 0x81;
            resp[3] = 0x80;
            resp[6..12].copy_from_slice(&[0, 0, 0, 0, 0, 0]);
            let found = answers.lock().ok().and_then(|a| a.get(&name).cloned());
            match found {
                None => resp[3] = 0x83,
                Some(addrs) => {
                    let mut count = 0u16;
                    for ip in addrs {
                        let (t, data) = match ip {
                            IpAddr::V4(v4) if qtype == 1 => (1u16, v4.octets().to_vec()),
                            IpAddr::V6(v6) if qtype == 28 => (28u16, v6.octets().to_vec()),
                            _ => continue,
                        };
                        resp.extend_from_slice(&[0xc0, 12]);
                        resp.extend_from_slice(&t.to_be_bytes());
                        resp.extend_from_slice(&[0, 1, 0, 0, 0, 30]);
                        resp.extend_from_slice(&(data.len() as u16).to_be_bytes());
                        resp.extend_from_slice(&data);
                        count += 1;
                    }
                    resp[6..8].copy_from_slice(&count.to_be_bytes());
                }
            }
            let _ = sock.send_to(&resp, from);
        }
    });
    Ok(TestServer {
        addr,
        hits,
        stop,
        cert_pem: None,
    })
}
