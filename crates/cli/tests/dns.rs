//! `rampart dns` end to end, hickory-harness style: the real binary on 127.0.0.1 port 0 (it
//! prints the bound addresses), a stub upstream started by the test, real UDP queries. A listed
//! name is answered NXDOMAIN without reaching the upstream; others are forwarded; a reload with a
//! broken configuration keeps the running one.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A query for `name` type A with id `id` (RFC 1035 wire format, no EDNS).
fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]); // RD; QDCOUNT 1
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]); // root, type A, class IN
    q
}

/// Stub upstream: answers every query with one A record 192.0.2.1 and counts the queries.
fn stub_upstream(stop: Arc<AtomicBool>, seen: Arc<AtomicUsize>) -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let port = socket.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            seen.fetch_add(1, Ordering::Relaxed);
            let mut answer = buf[..n].to_vec();
            answer[2] |= 0x80; // QR
            answer[3] = 0x80; // RA, NOERROR
            answer[7] = 1; // ANCOUNT 1
            answer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1]);
            let _ = socket.send_to(&answer, from);
        }
    });
    port
}

fn ask(server: &str, id: u16, name: &str) -> Vec<u8> {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    client.send_to(&query(id, name), server).unwrap();
    let mut buf = [0u8; 1500];
    let n = client.recv(&mut buf).expect("an answer");
    assert_eq!(&buf[..2], &id.to_be_bytes(), "answer to our query");
    buf[..n].to_vec()
}

fn rcode(answer: &[u8]) -> u8 {
    answer[3] & 0x0f
}

#[test]
fn dns_blocks_listed_names_forwards_others_and_survives_a_bad_reload() {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicUsize::new(0));
    let upstream = stub_upstream(Arc::clone(&stop), Arc::clone(&seen));
    let dir = std::env::temp_dir().join(format!("rampart-dns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("dns.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = ["127.0.0.1:0"]
upstreams = [{{ addr = "127.0.0.1:{upstream}" }}]

[[lists]]
name = "bad"
kind = "domains"
entries = ["blocked.example"]

[[groups]]
name = "everyone"
block = ["bad"]
"#
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["dns", "--config"])
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    let started: serde_json::Value = serde_json::from_str(&first).expect(&first);
    assert_eq!(started["event"], "listening");
    let addr = started["udp"][0].as_str().unwrap().to_string();

    let allowed = ask(&addr, 0x1111, "allowed.example");
    assert_eq!(rcode(&allowed), 0);
    assert!(allowed.ends_with(&[192, 0, 2, 1]), "{allowed:?}");
    let forwarded = seen.load(Ordering::Relaxed);
    assert!(forwarded >= 1);

    let blocked = ask(&addr, 0x2222, "www.blocked.example");
    assert_eq!(rcode(&blocked), 3, "NXDOMAIN for a listed name's subdomain");
    assert_eq!(
        seen.load(Ordering::Relaxed),
        forwarded,
        "never asked upstream"
    );

    // A broken configuration on reload changes nothing.
    std::fs::write(&config, "listen = [").unwrap();
    // SAFETY: kill(2) with a child pid we own and a valid signal number.
    unsafe {
        libc::kill(server.0.id() as libc::pid_t, libc::SIGHUP);
    }
    std::thread::sleep(Duration::from_millis(300));
    let still = ask(&addr, 0x3333, "blocked.example");
    assert_eq!(rcode(&still), 3, "the running configuration still blocks");

    drop(server);
    stop.store(true, Ordering::Relaxed);
    let _ = std::fs::remove_dir_all(&dir);
}
