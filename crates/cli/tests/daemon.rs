//! `rampart run` end to end, in namespaces of the test's own: the daemon applies a policy in a
//! gateway namespace and supervises the DNS forwarder (in front of a test upstream) and the
//! NFLOG reader. A client namespace's connection to a dropped port becomes a stored event with
//! its rule and technique. DNS is queried continuously while the policy is reloaded twice (zero
//! failed queries, the kernel ruleset changes) and once with a broken policy (refused, the
//! ruleset unchanged). A killed component is restarted. `/metrics` and the JSON API answer
//! only with the token. The dashboard renders in headless Chromium (screenshot kept in the target
//! directory). Needs root, ip, nft; Chromium for the dashboard part.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const GATEWAY: &str = "192.0.2.1";
const CLIENT: &str = "192.0.2.2";
const TOKEN: &str = "test-token-0123456789abcdef";

struct Cleanup {
    namespaces: Vec<String>,
    daemon: Option<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(daemon) = &mut self.daemon {
            // SAFETY: kill on our own child.
            unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && daemon.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = daemon.kill();
            let _ = daemon.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid namespace descriptor.
        assert_eq!(
            unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) },
            0,
            "setns"
        );
        f()
    })
}

/// A DNS upstream answering every A query with 192.0.2.99.
fn upstream(ns: &str, stop: Arc<AtomicBool>) {
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns(ns, move || {
        let socket = UdpSocket::bind("127.0.0.1:5300").unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 512];
        while !stop.load(Ordering::Relaxed) {
            let Ok((n, peer)) = socket.recv_from(&mut buf) else {
                continue;
            };
            if n < 12 {
                continue;
            }
            let mut reply = buf[..n].to_vec();
            reply[2] = 0x81;
            reply[3] = 0x80;
            reply[7] = 1; // ANCOUNT = 1
            reply[9] = 0; // no authority
            reply[11] = 0; // no additional (drops a client's OPT record)
                           // Keep only header + question.
            let mut end = 12;
            while end < n && buf[end] != 0 {
                end += 1 + buf[end] as usize;
            }
            end += 5;
            reply.truncate(end.min(n));
            reply.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 192, 0, 2, 99]);
            let _ = socket.send_to(&reply, peer);
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// An HTTP origin answering every request with 200 "ok".
fn origin(ns: &str, stop: Arc<AtomicBool>) {
    let (tx, rx) = std::sync::mpsc::channel();
    in_netns(ns, move || {
        let listener = std::net::TcpListener::bind("127.0.0.1:8081").unwrap();
        listener.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        while !stop.load(Ordering::Relaxed) {
            let Ok((mut stream, _)) = listener.accept() else {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            };
            std::thread::spawn(move || {
                stream.set_nonblocking(false).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(2)))
                    .unwrap();
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                    head.push(byte[0]);
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
            });
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// One request through the egress proxy at 127.0.0.1:3128; the status code (0: no answer).
fn through_proxy(target: &str) -> u16 {
    let Ok(mut stream) = TcpStream::connect("127.0.0.1:3128") else {
        return 0;
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let host = target
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or("");
    if write!(
        stream,
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return 0;
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn query(socket: &UdpSocket, id: u16, name: &str) -> bool {
    let mut q = vec![(id >> 8) as u8, id as u8, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.').filter(|l| !l.is_empty()) {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    if socket.send(&q).is_err() {
        return false;
    }
    let mut buf = [0u8; 512];
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match socket.recv(&mut buf) {
            Ok(n) if n >= 12 && buf[0] == (id >> 8) as u8 && buf[1] == id as u8 => {
                return buf[3] & 0x0f == 0 && buf[7] >= 1;
            }
            Ok(_) => continue,
            Err(_) => return false,
        }
    }
    false
}

fn http(ns: &str, addr: SocketAddr, request: String) -> (u16, String) {
    in_netns(ns, move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let status = text
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    })
    .join()
    .unwrap()
}

fn get(ns: &str, addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    http(
        ns,
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: x\r\n{auth}\r\n"),
    )
}

fn rampart(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .unwrap()
}

fn ruleset(ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "table", "inet", "rampart",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn policy_text(feed: &Path, extra_rule: &str) -> String {
    let feed = feed.display();
    format!(
        r#"
[zones.lan]
interfaces = ["gw0"]
networks = ["192.0.2.0/24"]

[sets.known-bad]
feed = {{ url = "{feed}", format = "plain", refresh = "1h" }}

[defaults]
ingress = "drop"
egress = "accept"
forward = "drop"

[[rules]]
name = "known-bad-in"
direction = "ingress"
from = "known-bad"
action = "drop"
mitigates = ["T1105"]

[[rules]]
name = "discard-probe"
direction = "ingress"
from = "lan"
service = "tcp/9"
action = "drop"
log = true
mitigates = ["T1095"]
{extra_rule}
"#
    )
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn status(config: &Path) -> serde_json::Value {
    let out = rampart(&["reload", "--status", "--config", config.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn daemon_applies_supervises_stores_reloads_without_gaps_and_serves_metrics_and_dashboard() {
    if rampart_lab::check_requirements().is_err() {
        eprintln!("skipping: needs root, ip, nft, ping and nsenter");
        return;
    }
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("rampart-daemon-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut guard = Cleanup {
        namespaces: vec![format!("rrun-{id}"), format!("rrunc-{id}")],
        daemon: None,
        dir: dir.clone(),
    };
    let (gw, client) = (guard.namespaces[0].clone(), guard.namespaces[1].clone());
    for ns in [&gw, &client] {
        ok(Command::new("ip").args(["netns", "add", ns]));
        ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
    }
    ok(Command::new("ip").args([
        "-n", &gw, "link", "add", "gw0", "type", "veth", "peer", "name", "cl0", "netns", &client,
    ]));
    ok(Command::new("ip").args([
        "-n",
        &gw,
        "addr",
        "add",
        &format!("{GATEWAY}/24"),
        "dev",
        "gw0",
    ]));
    ok(Command::new("ip").args([
        "-n",
        &client,
        "addr",
        "add",
        &format!("{CLIENT}/24"),
        "dev",
        "cl0",
    ]));
    ok(Command::new("ip").args(["-n", &gw, "link", "set", "gw0", "up"]));
    ok(Command::new("ip").args(["-n", &client, "link", "set", "cl0", "up"]));

    let stop_upstream = Arc::new(AtomicBool::new(false));
    upstream(&gw, stop_upstream.clone());
    origin(&gw, stop_upstream.clone());

    let policy = dir.join("policy.toml");
    let feed = dir.join("known-bad.txt");
    std::fs::write(
        &feed,
        "# test feed\n203.0.113.66\n203.0.113.67\n198.51.100.0/28\n",
    )
    .unwrap();
    std::fs::write(&policy, policy_text(&feed, "")).unwrap();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    std::fs::write(
        dir.join("dns.toml"),
        "listen = [\"127.0.0.1:5353\"]\nupstreams = [{ addr = \"127.0.0.1:5300\" }]\n[cache]\nmax_entries = 0\n[query_log]\npath = \"dns.jsonl\"\nlog_allowed = true\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("egress.toml"),
        "listen = [\"127.0.0.1:3128\"]\n[log]\npath = \"egress.jsonl\"\n[[sources]]\nname = \"local\"\nnetworks = [\"127.0.0.0/8\"]\nallow = [\"127.0.0.1:8081\"]\nallow_addresses = [\"127.0.0.1:8081\"]\n",
    )
    .unwrap();
    let run_config = dir.join("run.toml");
    std::fs::write(
        &run_config,
        "policy = \"policy.toml\"\nstate_dir = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[[component]]\nkind = \"dns\"\nconfig = \"dns.toml\"\n[[component]]\nkind = \"log\"\n[[component]]\nkind = \"feeds\"\ninterval_s = 10\n[[component]]\nkind = \"egress\"\nconfig = \"egress.toml\"\n",
    )
    .unwrap();

    let mut daemon = Command::new("ip")
        .args([
            "netns",
            "exec",
            &gw,
            env!("CARGO_BIN_EXE_rampart"),
            "run",
            "--config",
        ])
        .arg(&run_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(daemon.stdout.take().unwrap());
    guard.daemon = Some(daemon);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let ready: serde_json::Value =
        serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(ready["event"], "ready", "{ready}");
    let http_addr: SocketAddr = ready["http"].as_str().unwrap().parse().unwrap();
    assert!(ruleset(&gw).contains("discard-probe"), "policy not applied");

    wait_for("components ready", Duration::from_secs(15), || {
        status(&run_config)["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ready"] == true)
    });

    // A dropped, logged connection from the client becomes a stored event.
    let _ = in_netns(&client, || {
        let _ = TcpStream::connect_timeout(
            &format!("{GATEWAY}:9").parse().unwrap(),
            Duration::from_millis(300),
        );
    })
    .join();
    wait_for(
        "the NFLOG event in the store",
        Duration::from_secs(10),
        || {
            let out = rampart(&[
                "events",
                "--config",
                run_config.to_str().unwrap(),
                "--technique",
                "T1095",
                "--json",
            ]);
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.contains("discard-probe") && l.contains(CLIENT))
        },
    );

    // Continuous DNS while the policy is reloaded.
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_queries = Arc::new(AtomicBool::new(false));
    let proxied_ok = Arc::new(AtomicU64::new(0));
    let proxied_failed = Arc::new(AtomicU64::new(0));
    let browser = {
        let (ok, failed, stop) = (
            proxied_ok.clone(),
            proxied_failed.clone(),
            stop_queries.clone(),
        );
        in_netns(&gw, move || {
            while !stop.load(Ordering::Relaxed) {
                if through_proxy("http://127.0.0.1:8081/") == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let querier = {
        let (answered, failed, stop) = (answered.clone(), failed.clone(), stop_queries.clone());
        in_netns(&gw, move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect("127.0.0.1:5353").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
            let mut i: u16 = 0;
            while !stop.load(Ordering::Relaxed) {
                i = i.wrapping_add(1);
                if query(&socket, i, &format!("q{i}.example.test")) {
                    answered.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for round in 0..2 {
        std::fs::write(
            &policy,
            policy_text(&feed, &format!(
                "\n[[rules]]\nname = \"added-{round}\"\ndirection = \"ingress\"\nfrom = \"lan\"\nservice = \"tcp/{}\"\naction = \"drop\"\nmitigates = [\"T1095\"]\n",
                1000 + round
            )),
        )
        .unwrap();
        let out = rampart(&["reload", "--config", run_config.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "reload {round}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            ruleset(&gw).contains(&format!("added-{round}")),
            "reload {round} not applied"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let before_bad = ruleset(&gw);
    std::fs::write(
        &policy,
        "[[rules]]\nname = \"broken\"\ndirection = \"sideways\"\n",
    )
    .unwrap();
    let refused = rampart(&["reload", "--config", run_config.to_str().unwrap()]);
    assert_eq!(
        refused.status.code(),
        Some(1),
        "a broken policy must be refused"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("nothing changed"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert_eq!(
        ruleset(&gw).replace(char::is_numeric, ""),
        before_bad.replace(char::is_numeric, ""),
        "the ruleset changed after a refused reload"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop_queries.store(true, Ordering::Relaxed);
    querier.join().unwrap();
    browser.join().unwrap();
    let (proxied_ok, proxied_failed) = (
        proxied_ok.load(Ordering::Relaxed),
        proxied_failed.load(Ordering::Relaxed),
    );
    assert!(
        proxied_ok > 20,
        "only {proxied_ok} requests through the egress proxy"
    );
    assert_eq!(
        proxied_failed, 0,
        "{proxied_failed} proxied requests failed during reloads ({proxied_ok} succeeded)"
    );
    // A destination the egress policy does not allow is refused and stored as an egress event.
    let denied = in_netns(&gw, || through_proxy("http://127.0.0.1:8082/"))
        .join()
        .unwrap();
    assert_eq!(denied, 403);
    let (answered, failed) = (
        answered.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
    );
    assert!(answered > 50, "only {answered} DNS answers");
    assert_eq!(
        failed, 0,
        "{failed} DNS queries failed during reloads ({answered} answered)"
    );

    wait_for(
        "the egress refusal in the store",
        Duration::from_secs(5),
        || {
            let out = rampart(&[
                "events",
                "--config",
                run_config.to_str().unwrap(),
                "--component",
                "egress",
                "--verdict",
                "block",
                "--json",
            ]);
            String::from_utf8_lossy(&out.stdout).contains("8082")
        },
    );

    // The feed refresher ran (after start and after each reload) and its events are stored;
    // the kernel set holds the feed.
    let out = rampart(&[
        "events",
        "--config",
        run_config.to_str().unwrap(),
        "--component",
        "feeds",
        "--json",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("known-bad"),
        "feeds events: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        ruleset(&gw).contains("203.0.113.66"),
        "feed not loaded into the kernel set:\n{}",
        ruleset(&gw)
    );

    // Each component keeps only the capabilities it needs: the DNS forwarder may bind
    // privileged ports (CAP_NET_BIND_SERVICE, bit 10) and nothing else; the NFLOG reader only
    // has CAP_NET_ADMIN (bit 12).
    let components = status(&run_config)["components"].clone();
    for (index, expected) in [(0, 1u64 << 10), (1, 1u64 << 12), (3, 1u64 << 10)] {
        let pid = components[index]["pid"].as_u64().unwrap();
        let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            let line = proc_status.lines().find(|l| l.starts_with(name)).unwrap();
            u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        assert_eq!(
            field("CapBnd:"),
            expected,
            "{}: {proc_status}",
            components[index]["name"]
        );
        assert_eq!(
            field("CapEff:") & !expected,
            0,
            "{} has effective capabilities beyond its set",
            components[index]["name"]
        );
    }

    // A killed component is restarted and the failure is an event.
    let dns_pid = status(&run_config)["components"][0]["pid"]
        .as_u64()
        .unwrap();
    // SAFETY: kill on a process of this test's daemon.
    unsafe { libc::kill(dns_pid as i32, libc::SIGKILL) };
    wait_for("dns restarted", Duration::from_secs(10), || {
        let c = &status(&run_config)["components"][0];
        c["ready"] == true && c["starts"].as_u64() == Some(2) && c["failures"].as_u64() == Some(1)
    });
    let out = rampart(&[
        "events",
        "--config",
        run_config.to_str().unwrap(),
        "--component",
        "daemon",
        "--json",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dns exited"), "{text}");
    assert!(text.contains("reload refused"), "{text}");

    // DNS decisions reach the store through the forwarder's query log.
    let out = rampart(&[
        "events",
        "--config",
        run_config.to_str().unwrap(),
        "--component",
        "dns",
        "--limit",
        "5",
        "--json",
    ]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        5,
        "dns events: {}",
        String::from_utf8_lossy(&out.stdout)
    );

    // HTTP: the token is required; metrics show components, reloads and rule counters (kernel
    // counters start again at each apply, so probe once more after the reloads).
    let _ = in_netns(&client, || {
        let _ = TcpStream::connect_timeout(
            &format!("{GATEWAY}:9").parse().unwrap(),
            Duration::from_millis(300),
        );
    })
    .join();
    assert_eq!(get(&gw, http_addr, "/metrics", None).0, 401);
    assert_eq!(
        get(&gw, http_addr, "/metrics", Some("wrong-token-0123456789")).0,
        401
    );
    let (code, metrics) = get(&gw, http_addr, "/metrics", Some(TOKEN));
    assert_eq!(code, 200);
    for expected in [
        "rampart_component_up{component=\"dns\",kind=\"dns\"} 1",
        "rampart_component_failures_total{component=\"dns\"} 1",
        "rampart_reloads_total{result=\"ok\"} 2",
        "rampart_reloads_total{result=\"refused\"} 1",
    ] {
        assert!(
            metrics.contains(expected),
            "missing {expected} in\n{metrics}"
        );
    }
    let probe = metrics
        .lines()
        .find(|l| l.starts_with("rampart_rule_packets_total{rule=\"discard-probe\""))
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(!probe.ends_with(" 0"), "{probe}");
    let (code, events) = get(
        &gw,
        http_addr,
        "/api/events?technique=T1095&limit=5",
        Some(TOKEN),
    );
    assert_eq!(code, 200);
    assert!(events.contains("discard-probe"), "{events}");

    // The dashboard in headless Chromium.
    match which("chromium").or_else(|| which("chromium-browser")) {
        None => eprintln!(
            "skipping the dashboard part: chromium is not installed (scripts/deps.sh installs it)"
        ),
        Some(chromium) => {
            let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
            let url = format!("http://{http_addr}/?token={TOKEN}");
            let dom = Command::new("ip")
                .args(["netns", "exec", &gw])
                .arg(&chromium)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--virtual-time-budget=8000",
                    "--dump-dom",
                    &url,
                ])
                .output()
                .unwrap();
            let dom = String::from_utf8_lossy(&dom.stdout);
            assert!(
                dom.contains("data-loaded=\"1\""),
                "dashboard did not load its data:\n{dom}"
            );
            for expected in ["T1095", "T1071.004", "discard-probe", ">dns<", ">up<"] {
                assert!(dom.contains(expected), "dashboard lacks {expected}");
            }
            let _ = Command::new("ip")
                .args(["netns", "exec", &gw])
                .arg(&chromium)
                .args([
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--virtual-time-budget=8000",
                    "--window-size=1400,1000",
                ])
                .arg(format!("--screenshot={}", shot.display()))
                .arg(&url)
                .output();
            eprintln!("dashboard screenshot: {}", shot.display());
        }
    }

    // Stop: components go, the control socket is removed.
    let mut daemon = guard.daemon.take().unwrap();
    // SAFETY: kill on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(15);
    while daemon.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "daemon did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(daemon.wait().unwrap().success());
    assert!(!dir.join("state/control.sock").exists());
    stop_upstream.store(true, Ordering::Relaxed);
}

fn proc_field(pid: u64, name: &str) -> Vec<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in {text}"));
    line.split_whitespace()
        .skip(1)
        .map(|v| {
            if name.starts_with("Cap") {
                u64::from_str_radix(v, 16).unwrap()
            } else {
                v.parse().unwrap()
            }
        })
        .collect()
}

fn component<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no component {name} in {status}"))
}

fn text_of(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The daemon owns the confirm window of its applies: `rampart confirm` and `rampart rollback`
/// reach it over the control socket, an unconfirmed reload comes back by itself, and with the
/// daemon gone the same commands act on its state directly. `rampart log` follows the daemon's
/// events. Components run as their own user (nobody) with only their capabilities, ambient:
/// the DNS forwarder still binds port 53. Reloads use SIGHUP for the components that reload in
/// place (the DNS forwarder keeps its process).
#[test]
fn daemon_confirm_rollback_log_and_component_users() {
    if rampart_lab::check_requirements().is_err() {
        eprintln!("skipping: needs root, ip, nft, ping and nsenter");
        return;
    }
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("rampart-daemon-users-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mut guard = Cleanup {
        namespaces: vec![format!("rrunu-{id}")],
        daemon: None,
        dir: dir.clone(),
    };
    let gw = guard.namespaces[0].clone();
    ok(Command::new("ip").args(["netns", "add", &gw]));
    ok(Command::new("ip").args(["-n", &gw, "link", "set", "lo", "up"]));
    // A bridge with one port for the L2 guard, which announces that it reloads in place.
    ok(Command::new("ip").args(["-n", &gw, "link", "add", "br0", "type", "bridge"]));
    ok(Command::new("ip").args([
        "-n", &gw, "link", "add", "gp0", "type", "veth", "peer", "name", "gp0x",
    ]));
    ok(Command::new("ip").args(["-n", &gw, "link", "set", "gp0", "master", "br0"]));
    for link in ["br0", "gp0", "gp0x"] {
        ok(Command::new("ip").args(["-n", &gw, "link", "set", link, "up"]));
    }
    let stop_upstream = Arc::new(AtomicBool::new(false));
    upstream(&gw, stop_upstream.clone());

    let policy = dir.join("policy.toml");
    let policy_with = |extra: &str| {
        format!(
            "[defaults]\ningress = \"accept\"\negress = \"accept\"\nforward = \"drop\"\n\n[[rules]]\nname = \"discard-probe\"\ndirection = \"ingress\"\nservice = \"tcp/9\"\naction = \"drop\"\nlog = true\nmitigates = [\"T1095\"]\n{extra}"
        )
    };
    let extra_rule = "\n[[rules]]\nname = \"unconfirmed\"\ndirection = \"ingress\"\nservice = \"tcp/1001\"\naction = \"drop\"\nmitigates = [\"T1095\"]\n";
    std::fs::write(&policy, policy_with("")).unwrap();
    std::fs::write(
        dir.join("dns.toml"),
        "listen = [\"127.0.0.1:53\"]\nupstreams = [{ addr = \"127.0.0.1:5300\" }]\n[cache]\nmax_entries = 0\n[query_log]\npath = \"dns.jsonl\"\nlog_allowed = true\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("guard.toml"),
        "bridge = \"br0\"\nuntrusted_ports = [\"gp0\"]\nbindings_file = \"guard.bindings\"\nevents_file = \"guard.jsonl\"\n",
    )
    .unwrap();
    let run_config = dir.join("run.toml");
    std::fs::write(
        &run_config,
        "policy = \"policy.toml\"\nstate_dir = \"state\"\nconfirm_s = 10\n[[component]]\nkind = \"guard\"\nconfig = \"guard.toml\"\n[[component]]\nkind = \"dns\"\nconfig = \"dns.toml\"\nuser = \"nobody\"\non_down = \"open\"\n[[component]]\nkind = \"log\"\nuser = 65534\ngroup = \"nogroup\"\n",
    )
    .unwrap();
    let config_arg = run_config.to_str().unwrap().to_string();
    let daemon = Command::new("ip")
        .args([
            "netns",
            "exec",
            &gw,
            env!("CARGO_BIN_EXE_rampart"),
            "run",
            "--config",
        ])
        .arg(&run_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    guard.daemon = Some(daemon);
    let mut stdout = BufReader::new(guard.daemon.as_mut().unwrap().stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("\"ready\""), "{line}");

    // The start applied with a confirm window; confirming goes to the daemon.
    let pending = status(&run_config)["pending"].clone();
    let first_id = pending["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{pending}"))
        .to_string();
    let confirmed = rampart(&["confirm", "--config", &config_arg]);
    assert!(confirmed.status.success(), "{}", text_of(&confirmed));
    assert!(
        String::from_utf8_lossy(&confirmed.stdout).contains(&first_id),
        "{}",
        text_of(&confirmed)
    );
    assert!(status(&run_config)["pending"].is_null());
    let again = rampart(&["confirm", "--config", &config_arg]);
    assert!(
        !again.status.success(),
        "nothing is pending: {}",
        text_of(&again)
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("no pending apply"),
        "{}",
        text_of(&again)
    );

    wait_for("components ready", Duration::from_secs(15), || {
        status(&run_config)["components"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["ready"] == true)
    });

    // Each component runs as nobody with only its capabilities, which are ambient so they
    // survive the change of user; the forwarder answers on port 53.
    let before = status(&run_config);
    for (name, caps) in [("dns", 1u64 << 10), ("log", 1u64 << 12)] {
        let pid = component(&before, name)["pid"].as_u64().unwrap();
        assert_eq!(proc_field(pid, "Uid:"), [65534; 4], "{name}");
        assert_eq!(proc_field(pid, "Gid:"), [65534; 4], "{name}");
        assert_eq!(proc_field(pid, "Groups:"), Vec::<u64>::new(), "{name}");
        for field in ["CapBnd:", "CapPrm:", "CapEff:", "CapAmb:"] {
            assert_eq!(proc_field(pid, field), [caps], "{name} {field}");
        }
    }
    // The forwarder's query log was made writable for it.
    let log_meta = std::fs::metadata(dir.join("dns.jsonl")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&log_meta), 65534);

    // `rampart log` follows the daemon's events: a DNS query becomes a line on its output.
    let mut follower = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args([
            "log",
            "--config",
            &config_arg,
            "--component",
            "dns",
            "--json",
            "--count",
            "1",
            "--timeout-s",
            "20",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Query until the follower has its event (it may connect after the first queries).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut answered = 0;
    while follower.try_wait().unwrap().is_none() && Instant::now() < deadline {
        let ok = in_netns(&gw, || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect("127.0.0.1:53").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(1000)))
                .unwrap();
            query(&socket, 7, "followed.example.test")
        })
        .join()
        .unwrap();
        answered += u32::from(ok);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        answered > 0,
        "the forwarder running as nobody did not answer on :53"
    );
    let mut followed = String::new();
    follower
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed)
        .unwrap();
    assert!(follower.wait().unwrap().success());
    let event: serde_json::Value =
        serde_json::from_str(followed.trim()).unwrap_or_else(|e| panic!("{e}: `{followed}`"));
    assert_eq!(event["component"], "dns", "{event}");
    assert!(followed.contains("followed.example.test"), "{followed}");

    // A reload applies with a new window: SIGHUP for the forwarder (same process), and a
    // rollback through the daemon puts the previous ruleset back.
    std::fs::write(&policy, policy_with(extra_rule)).unwrap();
    let reloaded = rampart(&["reload", "--config", &config_arg]);
    assert!(reloaded.status.success(), "{}", text_of(&reloaded));
    assert!(ruleset(&gw).contains("unconfirmed"));
    let after = status(&run_config);
    let dns = component(&after, "dns");
    assert_eq!(dns["reload_in_place"], true);
    assert_eq!(
        dns["pid"],
        component(&before, "dns")["pid"],
        "dns was restarted"
    );
    assert_eq!(dns["starts"], 1);
    // The guard's kind is restarted unless it announces in-place reload, which it does.
    let guard_now = component(&after, "guard");
    assert_eq!(guard_now["reload_in_place"], true, "{guard_now}");
    assert_eq!(
        guard_now["pid"],
        component(&before, "guard")["pid"],
        "guard was restarted"
    );
    assert_eq!(guard_now["starts"], 1, "{guard_now}");
    let second_id = after["pending"]["id"].as_str().unwrap().to_string();
    assert_ne!(second_id, first_id);
    // While it is pending, another reload is refused and changes nothing.
    let refused = rampart(&["reload", "--config", &config_arg]);
    assert_eq!(refused.status.code(), Some(1), "{}", text_of(&refused));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("pending"),
        "{}",
        text_of(&refused)
    );
    assert_eq!(status(&run_config)["pending"]["id"], second_id.as_str());
    // Found through RAMPART_RUN_CONFIG, without --config.
    let rolled = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("rollback")
        .env("RAMPART_RUN_CONFIG", &run_config)
        .output()
        .unwrap();
    assert!(rolled.status.success(), "{}", text_of(&rolled));
    assert!(
        String::from_utf8_lossy(&rolled.stdout).contains(&second_id),
        "{}",
        text_of(&rolled)
    );
    let kernel = ruleset(&gw);
    assert!(
        !kernel.contains("unconfirmed") && kernel.contains("discard-probe"),
        "{kernel}"
    );
    assert!(status(&run_config)["pending"].is_null());

    // Unconfirmed, a reload comes back by itself at the deadline.
    let reloaded = rampart(&["reload", "--config", &config_arg]);
    assert!(reloaded.status.success(), "{}", text_of(&reloaded));
    let third_id = status(&run_config)["pending"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ruleset(&gw).contains("unconfirmed"));
    wait_for(
        "the unconfirmed apply rolled back",
        Duration::from_secs(20),
        || status(&run_config)["pending"].is_null(),
    );
    let outcome = status(&run_config)["last_confirm"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        outcome.contains(&third_id)
            && (outcome.contains("rolled back") || outcome.contains("not confirmed")),
        "{outcome}"
    );
    let kernel = ruleset(&gw);
    assert!(
        !kernel.contains("unconfirmed") && kernel.contains("discard-probe"),
        "{kernel}"
    );
    let events = rampart(&[
        "events",
        "--config",
        &config_arg,
        "--component",
        "daemon",
        "--json",
    ]);
    let events = String::from_utf8_lossy(&events.stdout);
    for expected in [
        &format!("confirmed apply {first_id}"),
        &second_id,
        &third_id,
    ] {
        assert!(
            events.contains(expected.as_str()),
            "no {expected} in\n{events}"
        );
    }

    // Fail-open DNS: while the forwarder is down (here: it cannot start, its configuration is
    // broken), queries to it go to its upstream unfiltered; once it is back, they are filtered
    // again. Fresh sockets each time: a UDP flow keeps its NAT mapping while conntrack does.
    let down_table = || {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &gw,
                "nft",
                "list",
                "table",
                "inet",
                "rampart_down",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ask = |ns: &str, name: &'static str| {
        in_netns(ns, move || {
            let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
            socket.connect("127.0.0.1:53").unwrap();
            socket
                .set_read_timeout(Some(Duration::from_millis(1000)))
                .unwrap();
            query(&socket, 9, name)
        })
        .join()
        .unwrap()
    };
    assert!(!down_table().contains("dnat"), "{}", down_table());
    let dns_config = std::fs::read_to_string(dir.join("dns.toml")).unwrap();
    std::fs::write(dir.join("dns.toml"), "listen = \"broken\"\n").unwrap();
    let dns_pid = component(&status(&run_config), "dns")["pid"]
        .as_u64()
        .unwrap();
    // SAFETY: kill on a process of this test's daemon.
    unsafe { libc::kill(dns_pid as i32, libc::SIGKILL) };
    wait_for("dns failing open", Duration::from_secs(10), || {
        let s = status(&run_config);
        s["failing_open"] == serde_json::json!(["dns"]) && component(&s, "dns")["ready"] == false
    });
    assert!(
        down_table().contains("ip daddr 127.0.0.1 udp dport 53 counter packets"),
        "{}",
        down_table()
    );
    assert!(
        ask(&gw, "bypassed.example.test"),
        "no answer while the forwarder is down and failing open"
    );
    std::fs::write(dir.join("dns.toml"), &dns_config).unwrap();
    wait_for("dns back and filtering", Duration::from_secs(30), || {
        let s = status(&run_config);
        s["failing_open"] == serde_json::json!([]) && component(&s, "dns")["ready"] == true
    });
    assert!(!down_table().contains("dnat"), "{}", down_table());
    assert!(ask(&gw, "filtered-again.example.test"));
    wait_for("the filtered query logged", Duration::from_secs(10), || {
        std::fs::read_to_string(dir.join("dns.jsonl"))
            .unwrap_or_default()
            .contains("filtered-again.example.test")
    });
    assert!(
        !std::fs::read_to_string(dir.join("dns.jsonl"))
            .unwrap()
            .contains("bypassed.example.test"),
        "the bypassed query went through the forwarder"
    );
    let events = rampart(&[
        "events",
        "--config",
        &config_arg,
        "--component",
        "daemon",
        "--json",
    ]);
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("dns is down: failing open"), "{events}");
    assert!(events.contains("dns is back"), "{events}");

    // With the daemon gone, the same commands act on its state directly.
    let mut daemon = guard.daemon.take().unwrap();
    // SAFETY: kill on our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    assert!(daemon.wait().unwrap().success());
    let local = rampart(&["confirm", "--config", &config_arg]);
    assert!(!local.status.success());
    assert!(
        String::from_utf8_lossy(&local.stderr).contains("no pending apply"),
        "{}",
        text_of(&local)
    );
    stop_upstream.store(true, Ordering::Relaxed);
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

#[test]
fn a_bad_policy_starts_nothing() {
    let dir = std::env::temp_dir().join(format!("rampart-daemon-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "[[rules]]\nname = \"x\"\ndirection = \"sideways\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("run.toml"),
        "policy = \"policy.toml\"\nstate_dir = \"state\"\napply = false\n",
    )
    .unwrap();
    let out = rampart(&["run", "--config", dir.join("run.toml").to_str().unwrap()]);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("policy not applied") && stderr.contains("sideways"),
        "{stderr}"
    );
}

#[test]
fn a_policy_enabling_a_component_nothing_runs_starts_nothing() {
    let dir = std::env::temp_dir().join(format!("rampart-daemon-unrun-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("policy.toml"),
        "[zones.lan]\ninterfaces = [\"lan0\"]\n\n[components]\ndns_filter = true\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("run.toml"),
        "policy = \"policy.toml\"\nstate_dir = \"state\"\napply = false\n[[component]]\nkind = \"log\"\n",
    )
    .unwrap();
    let out = rampart(&["run", "--config", dir.join("run.toml").to_str().unwrap()]);
    let events = dir.join("state").join("events.jsonl");
    let started = events.exists();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("the policy enables `dns_filter`")
            && stderr.contains("policy.toml:5")
            && stderr.contains("elsewhere"),
        "{stderr}"
    );
    assert!(
        !started,
        "the daemon wrote events although it refused to start"
    );
}
