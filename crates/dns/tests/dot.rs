//! DNS-over-TLS upstreams against a real DoT server: Unbound 1.17 (Debian `unbound`) started by
//! the test with `tls-port` and a certificate from a CA generated here with rcgen, forwarding to
//! a small authoritative UDP stub written here. Skips (with a message) when `unbound` is not
//! installed.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rampart_dns::config::{UpstreamConfig, UpstreamProto};
use rampart_dns::wire::{self, rtype, MessageBuilder};
use rampart_dns::{Config, Server};
use tokio::net::UdpSocket;

/// Kills the child and removes the work directory.
struct Guard {
    child: Option<Child>,
    dir: PathBuf,
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unbound_path() -> Option<PathBuf> {
    ["/usr/sbin/unbound", "/usr/bin/unbound"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A CA and a server certificate for `dot.test` and 127.0.0.1, as PEM files in `dir`:
/// (ca.pem, server.pem, server.key). A second, unrelated CA goes to other-ca.pem.
fn make_certs(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.distinguished_name
        .push(DnType::CommonName, "rampart test CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["dot.test".to_string()]).unwrap();
    leaf.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    let other_key = KeyPair::generate().unwrap();
    let mut other = CertificateParams::new(Vec::<String>::new()).unwrap();
    other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let other_cert = other.self_signed(&other_key).unwrap();
    std::fs::write(dir.join("other-ca.pem"), other_cert.pem()).unwrap();
}

/// Authoritative UDP stub: `nx.example` and below → NXDOMAIN, everything else → A 192.0.2.1.
async fn start_stub() -> (SocketAddr, Arc<AtomicU64>) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let Ok(m) = wire::parse(&buf[..n]) else {
                continue;
            };
            let Some(q) = m.question().cloned() else {
                continue;
            };
            let name = q.name.as_str().to_string();
            let b = if name == "nx.example" || name.ends_with(".nx.example") {
                MessageBuilder::new(m.header.id, 0x8583).question(&name, q.qtype)
            } else if q.qtype == rtype::A {
                MessageBuilder::new(m.header.id, 0x8580)
                    .question(&name, q.qtype)
                    .record(0, &name, rtype::A, 300, vec![192, 0, 2, 1])
            } else {
                MessageBuilder::new(m.header.id, 0x8580).question(&name, q.qtype)
            };
            let b = match &m.opt {
                Some(o) => b.opt(o.udp_size.max(512), vec![]),
                None => b,
            };
            if let Some(mut out) = b.build() {
                let qb = &buf[12..m.question_end];
                out[12..12 + qb.len()].copy_from_slice(qb);
                let _ = udp.send_to(&out, peer).await;
            }
        }
    });
    (addr, count)
}

/// A free TCP port for Unbound, below the ephemeral range (32768 and up): a port taken from
/// inside it (bind to port 0, close, hand it over) can be taken by any connection's source port
/// before Unbound binds it, which made these tests fail now and then. Each call in this process
/// starts from a different candidate, so concurrent tests do not pick the same one.
fn free_port() -> u16 {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    const FIRST: u64 = 20_000;
    const SPAN: u64 = 12_000;
    let seed = u64::from(std::process::id()) * 7_919 + CALLS.fetch_add(1, Ordering::SeqCst) * 1_000;
    (0..SPAN)
        .map(|i| (FIRST + (seed + i) % SPAN) as u16)
        .find(|p| StdTcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port in 20000-31999")
}

/// Starts Unbound serving DoT on 127.0.0.1:`port`, forwarding everything to `stub`.
fn start_unbound(bin: &Path, dir: &Path, port: u16, stub: SocketAddr) -> Option<Child> {
    let conf = format!(
        r#"server:
    interface: 127.0.0.1@{port}
    tls-port: {port}
    tls-service-key: "{dir}/server.key"
    tls-service-pem: "{dir}/server.pem"
    do-daemonize: no
    use-syslog: no
    logfile: ""
    chroot: ""
    username: ""
    directory: "{dir}"
    pidfile: ""
    num-threads: 1
    do-ip6: no
    module-config: "iterator"
    do-not-query-localhost: no
    incoming-num-tcp: 64
    tcp-idle-timeout: 30000
forward-zone:
    name: "."
    forward-addr: {stub_ip}@{stub_port}
"#,
        dir = dir.display(),
        stub_ip = stub.ip(),
        stub_port = stub.port(),
    );
    std::fs::write(dir.join("unbound.conf"), conf).unwrap();
    let child = Command::new(bin)
        .arg("-d")
        .arg("-c")
        .arg(dir.join("unbound.conf"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("unbound.log")).ok()?)
        .spawn()
        .ok()?;
    // Ready when it accepts TCP on the TLS port.
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(child);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let log = std::fs::read_to_string(dir.join("unbound.log")).unwrap_or_default();
    panic!("unbound did not start:\n{log}");
}

fn workdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("rampart-dot-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn dot_upstream(port: u16, name: &str, ca: &Path) -> UpstreamConfig {
    UpstreamConfig {
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        proto: UpstreamProto::Dot,
        tls_name: Some(name.into()),
        ca_file: Some(ca.to_path_buf()),
    }
}

fn config(upstreams: Vec<UpstreamConfig>) -> Config {
    let mut cfg = Config::from_toml("listen = [\"127.0.0.1:0\"]\nupstreams = []\n").unwrap();
    cfg.upstreams = upstreams;
    // Why: these tests are about DoT semantics, not speed; a loaded CI machine has left an
    // answer through Unbound waiting past a 1.5 s upstream timeout (twice in dozens of runs).
    cfg.limits.upstream_timeout_ms = 5_000;
    cfg.limits.query_timeout_ms = 8_000;
    cfg.cache.max_entries = 0; // every query goes upstream
    cfg.detector.enabled = false;
    cfg.detector.psl_path = None;
    cfg
}

async fn ask(server: SocketAddr, name: &str, id: u16) -> Option<wire::Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let q = wire::build_query(id, name, rtype::A, Some(1232))?;
    sock.send_to(&q, server).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = wire::parse(&buf[..n]).ok()?;
    (m.header.id == id).then_some(m)
}

fn a_record(m: &wire::Message) -> Option<[u8; 4]> {
    m.answers.iter().find_map(|r| match &r.data {
        wire::RData::A(a) => Some(a.octets()),
        _ => None,
    })
}

fn metric(srv: &rampart_dns::ServerHandle, name: &str) -> u64 {
    srv.metrics()
        .snapshot()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, v)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_upstream_through_unbound_reuses_one_pipelined_connection() {
    let Some(bin) = unbound_path() else {
        eprintln!("skipping: unbound is not installed (apt-get install unbound)");
        return;
    };
    let dir = workdir("reuse");
    make_certs(&dir);
    let (stub, stub_queries) = start_stub().await;
    let port = free_port();
    let child = start_unbound(&bin, &dir, port, stub);
    let _guard = Guard {
        child,
        dir: dir.clone(),
    };
    let srv = Server::start(config(vec![dot_upstream(
        port,
        "dot.test",
        &dir.join("ca.pem"),
    )]))
    .await
    .unwrap();
    let addr = srv.udp_addrs[0];

    // Sequential queries: one TLS connection carries them all.
    for i in 0..20u16 {
        let m = ask(addr, &format!("seq{i}.dot.example"), 100 + i)
            .await
            .unwrap_or_else(|| panic!("no answer for seq{i}"));
        assert_eq!(m.rcode(), 0);
        assert_eq!(a_record(&m), Some([192, 0, 2, 1]));
    }
    let nx = ask(addr, "a.nx.example", 7).await.expect("nx answer");
    assert_eq!(nx.rcode(), 3, "NXDOMAIN passes through DoT");
    assert_eq!(metric(&srv, "upstream_connections"), 1);

    // 200 concurrent queries are pipelined on the same connection.
    let mut tasks = Vec::new();
    for i in 0..200u16 {
        tasks.push(tokio::spawn(async move {
            ask(addr, &format!("par{i}.dot.example"), 1000 + i).await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        if let Some(m) = t.await.unwrap() {
            if a_record(&m) == Some([192, 0, 2, 1]) {
                ok += 1;
            }
        }
    }
    assert_eq!(ok, 200, "every pipelined query answered");
    assert_eq!(
        metric(&srv, "upstream_connections"),
        1,
        "no new connection for concurrent queries"
    );
    assert_eq!(metric(&srv, "upstream_errors"), 0);
    assert!(
        stub_queries.load(Ordering::SeqCst) >= 221,
        "unbound really forwarded them"
    );
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_rejects_wrong_name_or_ca_and_fails_over() {
    let Some(bin) = unbound_path() else {
        eprintln!("skipping: unbound is not installed (apt-get install unbound)");
        return;
    };
    let dir = workdir("verify");
    make_certs(&dir);
    let (stub, _) = start_stub().await;
    let port = free_port();
    let child = start_unbound(&bin, &dir, port, stub);
    let _guard = Guard {
        child,
        dir: dir.clone(),
    };
    // Certificate for dot.test, but we expect other.test: the handshake must fail.
    let wrong_name = Server::start(config(vec![dot_upstream(
        port,
        "other.test",
        &dir.join("ca.pem"),
    )]))
    .await
    .unwrap();
    let m = ask(wrong_name.udp_addrs[0], "x.dot.example", 1)
        .await
        .unwrap();
    assert_eq!(m.rcode(), 2, "SERVFAIL when the name does not verify");
    assert_eq!(
        wire::find_ede(&m).map(|e| e.code),
        Some(wire::ede::NO_REACHABLE_AUTHORITY)
    );
    assert!(metric(&wrong_name, "upstream_errors") >= 1);
    wrong_name.shutdown();

    // Untrusted CA, then a UDP upstream: failover answers.
    let mut ups = vec![dot_upstream(port, "dot.test", &dir.join("other-ca.pem"))];
    ups.push(UpstreamConfig::udp(stub));
    let failover = Server::start(config(ups)).await.unwrap();
    let m = ask(failover.udp_addrs[0], "y.dot.example", 2)
        .await
        .unwrap();
    assert_eq!(a_record(&m), Some([192, 0, 2, 1]));
    assert!(metric(&failover, "upstream_errors") >= 1);
    failover.shutdown();

    // Verification by IP SAN when no tls_name is given.
    let mut by_ip = dot_upstream(port, "unused", &dir.join("ca.pem"));
    by_ip.tls_name = None;
    let srv = Server::start(config(vec![by_ip])).await.unwrap();
    let m = ask(srv.udp_addrs[0], "z.dot.example", 3).await.unwrap();
    assert_eq!(
        a_record(&m),
        Some([192, 0, 2, 1]),
        "rcode {}, EDE {:?}, upstream_errors {}; unbound log:\n{}",
        m.rcode(),
        wire::find_ede(&m).map(|e| (e.code, e.text)),
        metric(&srv, "upstream_errors"),
        std::fs::read_to_string(dir.join("unbound.log")).unwrap_or_default()
    );
    srv.shutdown();

    // A CA file without certificates is a configuration error at start.
    std::fs::write(dir.join("empty.pem"), "not a pem\n").unwrap();
    let err = Server::start(config(vec![dot_upstream(
        port,
        "dot.test",
        &dir.join("empty.pem"),
    )]))
    .await
    .unwrap_err();
    assert!(err.to_string().contains("no certificate"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_reconnects_after_the_server_restarts() {
    let Some(bin) = unbound_path() else {
        eprintln!("skipping: unbound is not installed (apt-get install unbound)");
        return;
    };
    let dir = workdir("restart");
    make_certs(&dir);
    let (stub, _) = start_stub().await;
    let port = free_port();
    let mut guard = Guard {
        child: start_unbound(&bin, &dir, port, stub),
        dir: dir.clone(),
    };
    let mut cfg = config(vec![dot_upstream(port, "dot.test", &dir.join("ca.pem"))]);
    cfg.limits.upstream_fail_threshold = 100; // keep trying the only upstream
    let srv = Server::start(cfg).await.unwrap();
    let addr = srv.udp_addrs[0];
    assert!(ask(addr, "before.dot.example", 1).await.is_some());
    // Restart Unbound: the open connection dies with it.
    if let Some(mut c) = guard.child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    guard.child = start_unbound(&bin, &dir, port, stub);
    let m = ask(addr, "after.dot.example", 2).await.unwrap();
    assert_eq!(a_record(&m), Some([192, 0, 2, 1]), "answered after restart");
    assert_eq!(metric(&srv, "upstream_connections"), 2);
    srv.shutdown();
}
