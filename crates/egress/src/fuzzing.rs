//! Stable-toolchain fuzzing entry points and byte builders for tests (`cargo fuzz` needs
//! nightly): the parsers take arbitrary bytes and must return, never panic; the builders make
//! well-formed ClientHellos so tests (including the `rampart` CLI tests) can send a chosen SNI.

use crate::http;
use crate::tls;

/// Runs every parser on `data`; returns a value derived from the results so the calls cannot be
/// optimised away.
pub fn run_all(data: &[u8]) -> usize {
    let mut n = 0;
    if let tls::Peek::Hello(h) = tls::peek_client_hello(data) {
        n += h.sni.map_or(0, |s| s.len());
    }
    if let Ok(Some(head)) = http::parse_request_head(data, http::MAX_HEAD_BYTES, http::MAX_HEADERS)
    {
        n += head.headers.len();
        let _ = head.body_len();
    }
    if let Ok(Some(head)) = http::parse_response_head(data, http::MAX_HEAD_BYTES, http::MAX_HEADERS)
    {
        n += usize::from(head.status);
        let _ = head.body_len("GET");
    }
    if let Ok(v) = http::parse_chunk_size_line(data) {
        n += v as usize & 1;
    }
    n
}

/// Offset of the extensions-length field in [`client_hello`]'s output.
const EXT_LEN_OFFSET: usize = 5 + 4 + 2 + 32 + 1 + 32 + 2 + 4 + 2;

/// A `server_name` extension (type, length, list) for `name`.
pub fn sni_extension(name: &str) -> Vec<u8> {
    let n = name.as_bytes();
    let mut list = vec![0x00];
    list.extend_from_slice(&(n.len() as u16).to_be_bytes());
    list.extend_from_slice(n);
    let mut data = (list.len() as u16).to_be_bytes().to_vec();
    data.extend_from_slice(&list);
    let mut ext = vec![0x00, 0x00];
    ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
    ext.extend_from_slice(&data);
    ext
}

/// A single-record TLS 1.3-style ClientHello with an optional SNI and an optional (dummy) ECH
/// extension.
pub fn client_hello(sni: Option<&str>, ech: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&[0x03, 0x03]);
    body.extend_from_slice(&[0x42; 32]);
    body.push(32);
    body.extend_from_slice(&[0x24; 32]);
    body.extend_from_slice(&[0x00, 0x04, 0x13, 0x01, 0x13, 0x02]);
    body.extend_from_slice(&[0x01, 0x00]);
    let mut exts = Vec::new();
    if let Some(name) = sni {
        exts.extend_from_slice(&sni_extension(name));
    }
    // supported_versions: TLS 1.3.
    exts.extend_from_slice(&[0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x04]);
    if ech {
        exts.extend_from_slice(&[0xfe, 0x0d, 0x00, 0x02, 0x00, 0x00]);
    }
    body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
    body.extend_from_slice(&exts);
    let mut hs = vec![0x01];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

/// Appends an extension to a [`client_hello`] output, fixing the three length fields.
pub fn append_extension(hello: &mut Vec<u8>, ext: &[u8]) {
    hello.extend_from_slice(ext);
    let bump = |hello: &mut Vec<u8>, at: usize, width: usize| {
        let mut v = 0usize;
        for i in 0..width {
            v = (v << 8) | usize::from(hello[at + i]);
        }
        v += ext.len();
        for i in 0..width {
            hello[at + i] = (v >> (8 * (width - 1 - i))) as u8;
        }
    };
    bump(hello, 3, 2);
    bump(hello, 6, 3);
    bump(hello, EXT_LEN_OFFSET, 2);
}
