//! End-to-end tests: the server runs in-process on 127.0.0.1:0, a small authoritative stub
//! written here plays the upstream, and real clients (`dig` when installed, and a plain UDP/TCP
//! socket client) ask the questions.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rampart_dns::config::{
    GroupConfig, ListConfig, ListKind, QueryLogConfig, UpstreamConfig, UpstreamProto,
};
use rampart_dns::wire::{self, rtype, MessageBuilder, RData};
use rampart_dns::{Config, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// The stub upstream's answers, by name.
fn stub_answer(query: &[u8]) -> Option<Vec<u8>> {
    let m = wire::parse(query).ok()?;
    let q = m.question()?.clone();
    let name = q.name.as_str().to_string();
    let id = m.header.id;
    let b = MessageBuilder::new(id, 0x8580).question(&name, q.qtype);
    let b = if name == "nx.example" || name.ends_with(".nx.example") {
        let mut soa = Vec::new();
        wire::encode_name("ns.example", &mut soa)?;
        wire::encode_name("host.example", &mut soa)?;
        for v in [1u32, 3600, 600, 86400, 30] {
            soa.extend_from_slice(&v.to_be_bytes());
        }
        MessageBuilder::new(id, 0x8583)
            .question(&name, q.qtype)
            .record(1, "example", rtype::SOA, 60, soa)
    } else if name == "rebind.example" {
        b.record(0, &name, rtype::A, 300, vec![10, 0, 0, 5])
    } else if name == "cname.example" {
        b.record(
            0,
            &name,
            rtype::CNAME,
            300,
            wire::name_rdata("edge.tracker.example")?,
        )
        .record(0, "edge.tracker.example", rtype::A, 300, vec![192, 0, 2, 7])
    } else if name == "big.example" && q.qtype == rtype::TXT {
        let mut b = b;
        for i in 0..8u8 {
            let mut d = vec![100u8];
            d.extend(std::iter::repeat_n(b'a' + i, 100));
            b = b.record(0, &name, rtype::TXT, 300, d);
        }
        b
    } else if q.qtype == rtype::AAAA {
        b.record(
            0,
            &name,
            rtype::AAAA,
            300,
            "2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .ok()?
                .octets()
                .to_vec(),
        )
    } else {
        b.record(0, &name, rtype::A, 300, vec![192, 0, 2, 1])
    };
    let b = match &m.opt {
        Some(o) => b.opt(o.udp_size.max(512), vec![]),
        None => b,
    };
    let mut out = b.build()?;
    // Keep the client's exact question bytes (case), as real servers do.
    let qb = &query[12..m.question_end];
    out[12..12 + qb.len()].copy_from_slice(qb);
    Some(out)
}

struct Stub {
    addr: SocketAddr,
    queries: Arc<AtomicU64>,
}

async fn start_stub() -> Stub {
    let udp = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let addr = udp.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let queries = Arc::new(AtomicU64::new(0));
    let q = queries.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65535];
        loop {
            let Ok((n, peer)) = udp.recv_from(&mut buf).await else {
                continue;
            };
            q.fetch_add(1, Ordering::SeqCst);
            if let Some(mut r) = stub_answer(&buf[..n]) {
                let limit = wire::parse(&buf[..n])
                    .ok()
                    .and_then(|m| m.opt.map(|o| o.udp_size as usize))
                    .unwrap_or(512);
                if r.len() > limit {
                    let m = wire::parse(&r).unwrap();
                    r = wire::truncate_response(&r, m.question_end);
                }
                // Names under slow.example are answered after 300 ms (pipelining tests).
                let slow = wire::parse(&buf[..n]).ok().and_then(|m| {
                    m.question()
                        .map(|q| q.name.as_str().ends_with("slow.example"))
                });
                if slow == Some(true) {
                    let udp = udp.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        let _ = udp.send_to(&r, peer).await;
                    });
                    continue;
                }
                let _ = udp.send_to(&r, peer).await;
            }
        }
    });
    let q = queries.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = tcp.accept().await else {
                continue;
            };
            let q = q.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).await.is_ok() {
                    let mut m = vec![0u8; u16::from_be_bytes(len) as usize];
                    if s.read_exact(&mut m).await.is_err() {
                        return;
                    }
                    q.fetch_add(1, Ordering::SeqCst);
                    if let Some(r) = stub_answer(&m) {
                        let mut f = (r.len() as u16).to_be_bytes().to_vec();
                        f.extend(r);
                        if s.write_all(&f).await.is_err() {
                            return;
                        }
                    }
                }
            });
        }
    });
    Stub { addr, queries }
}

fn list(name: &str, kind: ListKind, entries: &[&str]) -> ListConfig {
    ListConfig {
        format: None,
        name: name.into(),
        kind,
        path: None,
        entries: entries.iter().map(|s| s.to_string()).collect(),
        max_entries: 1000,
    }
}

fn config(upstreams: Vec<SocketAddr>) -> Config {
    let mut cfg = Config::from_toml("listen = [\"127.0.0.1:0\"]\nupstreams = []\n").unwrap();
    cfg.upstreams = upstreams
        .into_iter()
        .map(|addr| UpstreamConfig {
            tls_name: None,
            ca_file: None,
            addr,
            proto: UpstreamProto::Udp,
        })
        .collect();
    cfg.limits.upstream_timeout_ms = 300;
    cfg.lists = vec![
        list(
            "ads",
            ListKind::Domains,
            &["ads.example", "||tracker.example^"],
        ),
        list("re", ListKind::Regex, &["^banner[0-9]+\\."]),
        list("allow", ListKind::Domains, &["ok.ads.example"]),
    ];
    let mut g = GroupConfig::named("everyone");
    g.block = vec!["ads".into(), "re".into()];
    g.allow = vec!["allow".into()];
    cfg.groups = vec![g];
    cfg.detector.psl_path = None;
    cfg
}

async fn udp_ask(
    server: SocketAddr,
    name: &str,
    qtype: u16,
    edns: Option<u16>,
) -> Option<wire::Message> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let id = rand_id(name);
    let q = wire::build_query(id, name, qtype, edns)?;
    sock.send_to(&q, server).await.ok()?;
    let mut buf = vec![0u8; 65535];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    let m = wire::parse(&buf[..n]).ok()?;
    (m.header.id == id).then_some(m)
}

fn rand_id(name: &str) -> u16 {
    (rampart_dns::domainset::fnv1a(name.as_bytes()) as u16) ^ 0x5a5a
}

async fn tcp_ask(server: SocketAddr, name: &str, qtype: u16) -> Option<wire::Message> {
    let mut s = TcpStream::connect(server).await.ok()?;
    let q = wire::build_query(9, name, qtype, None)?;
    let mut f = (q.len() as u16).to_be_bytes().to_vec();
    f.extend(q);
    s.write_all(&f).await.ok()?;
    let mut len = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len))
        .await
        .ok()?
        .ok()?;
    let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut r).await.ok()?;
    wire::parse(&r).ok()
}

fn dig(server: SocketAddr, args: &[&str]) -> Option<String> {
    let mut cmd = std::process::Command::new("dig");
    cmd.arg(format!("@{}", server.ip()))
        .arg("-p")
        .arg(server.port().to_string())
        .args(["+tries=1", "+time=3"])
        .args(args);
    match cmd.output() {
        Ok(o) => Some(String::from_utf8_lossy(&o.stdout).into_owned()),
        Err(e) => {
            eprintln!("skipping dig part: {e}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dig_sees_blocks_with_ede_and_resolves_allowed_names() {
    let stub = start_stub().await;
    let srv = Server::start(config(vec![stub.addr])).await.unwrap();
    let addr = srv.udp_addrs[0];
    let out = tokio::task::spawn_blocking(move || {
        let blocked = dig(addr, &["x.ads.example", "A"])?;
        let allowed = dig(addr, &["www.allowed.example", "A"])?;
        let tcp = dig(addr, &["+tcp", "tcp.allowed.example", "AAAA"])?;
        let excepted = dig(addr, &["ok.ads.example", "A"])?;
        Some((blocked, allowed, tcp, excepted))
    })
    .await
    .unwrap();
    if let Some((blocked, allowed, tcp, excepted)) = out {
        assert!(blocked.contains("status: NXDOMAIN"), "{blocked}");
        assert!(blocked.contains("EDE: 15 (Blocked)"), "{blocked}");
        assert!(blocked.contains("list ads: ads.example"), "{blocked}");
        assert!(
            allowed.contains("status: NOERROR") && allowed.contains("192.0.2.1"),
            "{allowed}"
        );
        assert!(tcp.contains("2001:db8::1"), "{tcp}");
        assert!(
            excepted.contains("status: NOERROR"),
            "allowlist wins: {excepted}"
        );
    }
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_and_response_checks_over_udp_and_tcp() {
    let stub = start_stub().await;
    let srv = Server::start(config(vec![stub.addr])).await.unwrap();
    let addr = srv.udp_addrs[0];
    let r = udp_ask(addr, "banner12.example.org", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(r.rcode(), 3);
    assert!(wire::find_ede(&r).unwrap().text.contains("regex"));
    // No EDNS in the query: no OPT in the answer.
    let r = udp_ask(addr, "ads.example", rtype::A, None).await.unwrap();
    assert_eq!(r.rcode(), 3);
    assert!(r.opt.is_none());
    // Rebinding: public name answering 10.0.0.5.
    let r = udp_ask(addr, "rebind.example", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(r.rcode(), 3);
    assert!(
        wire::find_ede(&r).unwrap().text.contains("rebinding"),
        "{r:?}"
    );
    // CNAME chain into a blocked domain.
    let r = udp_ask(addr, "cname.example", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(r.rcode(), 3);
    assert!(wire::find_ede(&r)
        .unwrap()
        .text
        .contains("edge.tracker.example"));
    // NXDOMAIN passes through and is cached negatively.
    let before = stub.queries.load(Ordering::SeqCst);
    for _ in 0..3 {
        let r = udp_ask(addr, "a.nx.example", rtype::A, None).await.unwrap();
        assert_eq!(r.rcode(), 3);
        assert!(wire::find_ede(&r).is_none());
    }
    assert_eq!(
        stub.queries.load(Ordering::SeqCst) - before,
        1,
        "negative cache"
    );
    // Positive cache: one upstream query for three client queries, TTL not above the original.
    let before = stub.queries.load(Ordering::SeqCst);
    for _ in 0..3 {
        let r = udp_ask(addr, "cached.example", rtype::A, None)
            .await
            .unwrap();
        assert_eq!(r.answers[0].data, RData::A([192, 0, 2, 1].into()));
        assert!(r.answers[0].ttl <= 300);
    }
    assert_eq!(stub.queries.load(Ordering::SeqCst) - before, 1);
    // Big answer: truncated over plain UDP, whole over TCP.
    let r = udp_ask(addr, "big.example", rtype::TXT, None)
        .await
        .unwrap();
    assert!(r.header.tc());
    let r = tcp_ask(srv.tcp_addrs[0], "big.example", rtype::TXT)
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 8);
    // Blocked over TCP.
    let r = tcp_ask(srv.tcp_addrs[0], "y.tracker.example", rtype::A)
        .await
        .unwrap();
    assert_eq!(r.rcode(), 3);
    // Garbage gets FORMERR (or nothing), and the server keeps serving.
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    sock.send_to(
        &[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0xC0, 12],
        addr,
    )
    .await
    .unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(buf[3] & 0x0F, 1, "FORMERR");
    assert!(n >= 12);
    assert!(udp_ask(addr, "still.example", rtype::A, None)
        .await
        .is_some());
    let snap: std::collections::HashMap<_, _> = srv.metrics().snapshot().into_iter().collect();
    assert_eq!(snap["blocked_query"], 3);
    assert!(snap["blocked_response"] >= 2);
    assert!(snap["cache_hits"] >= 4);
    assert_eq!(snap["malformed"], 1);
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_upstream_reuses_one_connection_and_tc_fallback_uses_tcp() {
    let stub = start_stub().await;
    let mut cfg = config(vec![stub.addr]);
    cfg.upstreams[0].proto = UpstreamProto::Tcp;
    cfg.cache.max_entries = 0;
    let srv = Server::start(cfg).await.unwrap();
    let addr = srv.udp_addrs[0];
    let mut tasks = Vec::new();
    for i in 0..50 {
        tasks.push(tokio::spawn(async move {
            udp_ask(addr, &format!("t{i}.example"), rtype::A, None).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().answers.len(), 1);
    }
    let snap: std::collections::HashMap<_, _> = srv.metrics().snapshot().into_iter().collect();
    assert_eq!(
        snap["upstream_connections"], 1,
        "one pipelined TCP connection"
    );
    assert_eq!(stub.queries.load(Ordering::SeqCst), 50);
    srv.shutdown();

    // UDP upstream, TCP client, answer too big for UDP: the full answer comes over TCP.
    let srv = Server::start(config(vec![stub.addr])).await.unwrap();
    let r = tcp_ask(srv.tcp_addrs[0], "big.example", rtype::TXT)
        .await
        .unwrap();
    assert_eq!(r.answers.len(), 8);
    assert!(!r.header.tc());
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ede_codes_on_every_synthesised_answer() {
    let stub = start_stub().await;
    let mut cfg = config(vec![stub.addr]);
    cfg.groups[0].action = rampart_dns::config::BlockAction::Sinkhole;
    cfg.groups[0].ede_code = wire::ede::FILTERED;
    cfg.groups[0].block_doh_bootstrap = true;
    let srv = Server::start(cfg).await.unwrap();
    let addr = srv.udp_addrs[0];
    let ede = |m: &wire::Message| wire::find_ede(m).map(|e| (e.code, e.text));
    // List and regex blocks carry the group's code; sinkhole answers NOERROR + 0.0.0.0.
    let r = udp_ask(addr, "x.ads.example", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!((r.rcode(), r.answers.len()), (0, 1));
    let (code, text) = ede(&r).unwrap();
    assert_eq!(code, wire::ede::FILTERED);
    assert!(text.contains("list ads"), "{text}");
    let r = udp_ask(addr, "banner1.example", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(ede(&r).unwrap().0, wire::ede::FILTERED);
    // DoH bootstrap: Blocked (15), sinkholed like the rest ...
    let r = udp_ask(addr, "dns.google", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(r.rcode(), 0);
    let (code, text) = ede(&r).unwrap();
    assert_eq!(code, wire::ede::BLOCKED);
    assert!(text.contains("DoH/DoT bootstrap"), "{text}");
    // ... except Mozilla's canary, which must be NXDOMAIN to turn Firefox's DoH off.
    let r = udp_ask(addr, "use-application-dns.net", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(r.rcode(), 3);
    assert_eq!(ede(&r).unwrap().0, wire::ede::BLOCKED);
    // Response checks: Blocked (15).
    let r = udp_ask(addr, "rebind.example", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(ede(&r).unwrap().0, wire::ede::BLOCKED);
    // Unsupported opcode (STATUS): NOTIMP + Not Supported (21).
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut q = wire::build_query(77, "status.example", rtype::A, Some(1232)).unwrap();
    q[2] |= 2 << 3;
    sock.send_to(&q, addr).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = wire::parse(&buf[..n]).unwrap();
    assert_eq!(r.rcode(), 4);
    assert_eq!(ede(&r).unwrap().0, wire::ede::NOT_SUPPORTED);
    srv.shutdown();
    // Every upstream silent: SERVFAIL + No Reachable Authority (22).
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut cfg = config(vec![dead.local_addr().unwrap()]);
    cfg.limits.query_timeout_ms = 400;
    let srv = Server::start(cfg).await.unwrap();
    let r = udp_ask(srv.udp_addrs[0], "lost.example", rtype::A, Some(1232))
        .await
        .unwrap();
    assert_eq!(r.rcode(), 2);
    assert_eq!(ede(&r).unwrap().0, wire::ede::NO_REACHABLE_AUTHORITY);
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_endpoint_serves_counters_and_list_gauges() {
    let stub = start_stub().await;
    let mut cfg = config(vec![stub.addr]);
    cfg.metrics = Some(rampart_dns::config::MetricsConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
    });
    let srv = Server::start(cfg).await.unwrap();
    let m = srv.metrics_addr.unwrap();
    udp_ask(srv.udp_addrs[0], "x.ads.example", rtype::A, None)
        .await
        .unwrap();
    let mut s = TcpStream::connect(m).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    assert!(body.starts_with("HTTP/1.0 200 OK\r\n"), "{body}");
    assert!(body.contains("text/plain; version=0.0.4"));
    assert!(body.contains("\nrampart_dns_queries_udp 1\n"), "{body}");
    assert!(body.contains("\nrampart_dns_blocked_query 1\n"));
    assert!(
        body.contains("rampart_dns_list_entries{list=\"ads\"} 2\n"),
        "{body}"
    );
    // A scraper that never finishes its request is dropped, and the endpoint keeps serving.
    let mut idle = TcpStream::connect(m).await.unwrap();
    idle.write_all(b"GET /").await.unwrap();
    let mut s = TcpStream::connect(m).await.unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await.unwrap();
    let mut again = String::new();
    s.read_to_string(&mut again).await.unwrap();
    assert!(again.contains("rampart_dns_reloads 0"));
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_clients_are_pipelined_and_answered_out_of_order() {
    let stub = start_stub().await;
    let mut cfg = config(vec![stub.addr]);
    cfg.limits.upstream_timeout_ms = 1500;
    let srv = Server::start(cfg).await.unwrap();
    let mut s = TcpStream::connect(srv.tcp_addrs[0]).await.unwrap();
    // One slow forwarded query, then a fast one and a blocked one, back to back.
    let mut batch = Vec::new();
    for (id, name) in [
        (1u16, "a.slow.example"),
        (2, "fast.example"),
        (3, "x.ads.example"),
    ] {
        let q = wire::build_query(id, name, rtype::A, None).unwrap();
        batch.extend_from_slice(&(q.len() as u16).to_be_bytes());
        batch.extend_from_slice(&q);
    }
    let t0 = std::time::Instant::now();
    s.write_all(&batch).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..3 {
        let mut len = [0u8; 2];
        tokio::time::timeout(Duration::from_secs(3), s.read_exact(&mut len))
            .await
            .unwrap()
            .unwrap();
        let mut r = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut r).await.unwrap();
        let m = wire::parse(&r).unwrap();
        order.push((m.header.id, m.rcode(), t0.elapsed()));
    }
    let ids: Vec<u16> = order.iter().map(|o| o.0).collect();
    assert_eq!(
        ids.last(),
        Some(&1),
        "the slow answer comes last: {order:?}"
    );
    assert!(ids.contains(&2) && ids.contains(&3));
    let fast = order.iter().find(|o| o.0 == 2).unwrap();
    assert!(
        fast.2 < Duration::from_millis(250),
        "not held behind the slow one: {order:?}"
    );
    assert_eq!(order.iter().find(|o| o.0 == 3).unwrap().1, 3);
    srv.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_second_upstream() {
    // A bound socket that never answers: the first upstream times out.
    let dead = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stub = start_stub().await;
    let srv = Server::start(config(vec![dead.local_addr().unwrap(), stub.addr]))
        .await
        .unwrap();
    let addr = srv.udp_addrs[0];
    for i in 0..5 {
        let r = udp_ask(addr, &format!("f{i}.example"), rtype::A, None)
            .await
            .unwrap();
        assert_eq!(r.answers.len(), 1);
    }
    let snap: std::collections::HashMap<_, _> = srv.metrics().snapshot().into_iter().collect();
    // After `upstream_fail_threshold` (3) failures the dead upstream is skipped.
    assert_eq!(snap["upstream_errors"], 3);
    srv.shutdown();
    drop(dead);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_answers_everything_consistently() {
    let stub = start_stub().await;
    let cfg_a = config(vec![stub.addr]);
    let mut cfg_b = cfg_a.clone();
    cfg_b.lists[0].entries.push("swap.example".into());
    // A bigger list makes each build take real time, widening any race window.
    let many: Vec<String> = (0..50_000).map(|i| format!("n{i}.bulk.example")).collect();
    cfg_b.lists[0].entries.extend(many);
    let srv = Arc::new(Server::start(cfg_a.clone()).await.unwrap());
    let addr = srv.udp_addrs[0];
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let stop = stop.clone();
        clients.push(tokio::spawn(async move {
            let (mut n, mut lost, mut wrong) = (0u64, 0u64, 0u64);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let (name, want_block) = match i % 3 {
                    0 => (format!("q{c}-{i}.ads.example"), Some(true)),
                    1 => (format!("q{c}-{}.allowed.example", i % 50), Some(false)),
                    _ => ("swap.example".to_string(), None),
                };
                n += 1;
                match udp_ask(addr, &name, rtype::A, Some(1232)).await {
                    None => lost += 1,
                    Some(r) => {
                        if let Some(b) = want_block {
                            if (r.rcode() == 3) != b {
                                wrong += 1;
                            }
                        } else if r.rcode() != 0 && r.rcode() != 3 {
                            wrong += 1;
                        }
                    }
                }
            }
            (n, lost, wrong)
        }));
    }
    for i in 0..10 {
        let cfg = if i % 2 == 0 { &cfg_b } else { &cfg_a };
        srv.reload(cfg).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (mut total, mut lost, mut wrong) = (0, 0, 0);
    for c in clients {
        let (n, l, w) = c.await.unwrap();
        total += n;
        lost += l;
        wrong += w;
    }
    eprintln!("reload under load: {total} queries, {lost} lost, {wrong} wrong");
    assert!(total > 200, "load was generated: {total}");
    assert_eq!(lost, 0);
    assert_eq!(wrong, 0);
    // Last reload was cfg_a: swap.example is allowed again; a failed reload keeps the lists.
    let r = udp_ask(addr, "swap.example", rtype::A, None).await.unwrap();
    assert_eq!(r.rcode(), 0);
    let mut bad = cfg_a.clone();
    bad.groups[0].block.push("nope".into());
    assert!(srv.reload(&bad).await.is_err());
    let r = udp_ask(addr, "ads.example", rtype::A, None).await.unwrap();
    assert_eq!(r.rcode(), 3);
    let snap: std::collections::HashMap<_, _> = srv.metrics().snapshot().into_iter().collect();
    assert_eq!(snap["reloads"], 10);
    assert_eq!(snap["reload_failures"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_detection_logs_and_blocks() {
    let stub = start_stub().await;
    let dir = std::env::temp_dir().join(format!("rampart-dns-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log_path = dir.join("query.jsonl");
    let _ = std::fs::remove_file(&log_path);
    let mut cfg = config(vec![stub.addr]);
    cfg.detector.block_s = 300;
    cfg.query_log = Some(QueryLogConfig {
        path: log_path.clone(),
        max_bytes: 1 << 20,
        log_allowed: false,
        queue: 1024,
    });
    let srv = Server::start(cfg).await.unwrap();
    let addr = srv.udp_addrs[0];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut blocked_at = None;
    for i in 0..60 {
        let mut label = String::new();
        for _ in 0..48 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            label.push(char::from(
                b"abcdefghijklmnopqrstuvwxyz234567"[(x % 32) as usize],
            ));
        }
        let r = udp_ask(
            addr,
            &format!("{label}.leak.example"),
            rtype::TXT,
            Some(1232),
        )
        .await
        .unwrap();
        if r.rcode() == 3 {
            assert!(wire::find_ede(&r).unwrap().text.contains("tunnelling"));
            blocked_at = Some(i);
            break;
        }
    }
    let at = blocked_at.expect("exfil session blocked");
    assert!(at < 50, "detected after {at} queries");
    // The block covers the registered domain for everyone in a tunnel_block group.
    let r = udp_ask(addr, "www.leak.example", rtype::A, None)
        .await
        .unwrap();
    assert_eq!(r.rcode(), 3);
    let r = udp_ask(addr, "ads.example", rtype::A, None).await.unwrap();
    assert_eq!(r.rcode(), 3);
    drop(srv);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let text = std::fs::read_to_string(&log_path).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["event_type"] == "anomaly" && e["detail"]["domain"] == "leak.example"),
        "{text}"
    );
    let block = events
        .iter()
        .find(|e| e["event_type"] == "dns" && e["detail"]["qname"] == "ads.example")
        .unwrap();
    assert_eq!(block["verdict"], "block");
    assert_eq!(block["src_ip"], "127.0.0.1");
    assert_eq!(block["detail"]["list"], "ads");
    assert_eq!(block["techniques"][0], "T1071.004");
    let _ = std::fs::remove_dir_all(&dir);
}
