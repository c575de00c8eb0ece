//! `rampart egress` end to end: the real binary on 127.0.0.1 port 0 (it prints the bound
//! addresses), real `curl` as the client, real HTTP and TLS origins on 127.0.0.2, and a fake DNS
//! server that hands out rebinding answers (127.0.0.1, 169.254.169.254, ::ffff:127.0.0.1). The
//! test servers live on 127.0.0.2, which the configuration allowlists explicitly (loopback is a
//! denied special range), so every rebinding answer must still be refused. Each request's decision
//! event is checked line by line.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rampart_egress::testkit;

struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn curl_available() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

struct Ctx {
    proxy: String,
    dir: PathBuf,
    events_seen: usize,
}

/// Result of one curl run: HTTP code of the final response (or of the CONNECT), body, headers.
struct Got {
    code: String,
    connect_code: String,
    body: String,
    headers: String,
}

impl Ctx {
    fn curl(&self, args: &[&str]) -> Got {
        let body = self.dir.join("body.out");
        let headers = self.dir.join("headers.out");
        let _ = std::fs::remove_file(&body);
        let _ = std::fs::remove_file(&headers);
        let out = Command::new("curl")
            .env_remove("http_proxy")
            .env_remove("https_proxy")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("no_proxy")
            .env_remove("NO_PROXY")
            .args(["-s", "--max-time", "10", "-x", &self.proxy])
            .args([
                "-o",
                body.to_str().unwrap(),
                "-D",
                headers.to_str().unwrap(),
            ])
            .args(["-w", "%{http_code} %{http_connect}\n"])
            .args(args)
            .output()
            .expect("run curl");
        let w = String::from_utf8_lossy(&out.stdout).to_string();
        // One "-w" line per transfer: the codes of all transfers, the last CONNECT code.
        let code = w
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        let connect_code = w
            .lines()
            .last()
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("")
            .to_string();
        Got {
            code,
            connect_code,
            body: std::fs::read_to_string(&body).unwrap_or_default(),
            headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        }
    }

    /// Waits for the next decision event and returns it.
    fn next_event(&mut self) -> serde_json::Value {
        let path = self.dir.join("events.jsonl");
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            if lines.len() > self.events_seen {
                let v: serde_json::Value =
                    serde_json::from_str(lines[self.events_seen]).expect("event is JSON");
                self.events_seen += 1;
                return v;
            }
            assert!(
                Instant::now() < deadline,
                "no event #{} (have {})",
                self.events_seen + 1,
                lines.len()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn no_more_events(&self) {
        std::thread::sleep(Duration::from_millis(200));
        let text = std::fs::read_to_string(self.dir.join("events.jsonl")).unwrap_or_default();
        assert_eq!(
            text.lines().count(),
            self.events_seen,
            "unexpected extra events:\n{text}"
        );
    }
}

/// Checks the fields every event has, then the decision.
fn check_event(
    ev: &serde_json::Value,
    verdict: &str,
    reason: &str,
    host: &str,
    techniques: &[&str],
) {
    assert_eq!(ev["event_type"], "egress", "{ev}");
    assert_eq!(ev["component"], "egress", "{ev}");
    assert_eq!(ev["src_ip"], "127.0.0.1", "{ev}");
    assert_eq!(ev["proto"], "TCP", "{ev}");
    assert_eq!(ev["verdict"], verdict, "{ev}");
    assert_eq!(ev["reason"], reason, "{ev}");
    assert_eq!(ev["detail"]["host"], host, "{ev}");
    let got: Vec<&str> = ev["techniques"]
        .as_array()
        .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
        .unwrap_or_default();
    assert_eq!(got, techniques, "{ev}");
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)[..64].to_string()
}

fn start_proxy(config: &Path) -> (Proxy, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["egress", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start rampart egress");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening line");
    assert_eq!(v["event"], "listening");
    let proxy = v["proxy"][0].as_str().unwrap().to_string();
    let metrics = v["metrics"].as_str().unwrap().to_string();
    (Proxy(child), proxy, metrics)
}

/// Opens a CONNECT tunnel by hand and sends `first_flight`; returns the proxy's CONNECT answer
/// and whether the tunnel then answered anything before closing.
fn raw_connect(proxy: &str, target: &str, first_flight: &[u8]) -> (String, Vec<u8>) {
    let mut s = TcpStream::connect(proxy).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).unwrap() == 0 {
            break;
        }
        head.push(b[0]);
    }
    let _ = s.write_all(first_flight);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    (String::from_utf8_lossy(&head).to_string(), rest)
}

#[test]
fn egress_proxy_end_to_end_with_curl() {
    if !curl_available() {
        eprintln!("skipping: curl is not installed (apt-get install curl)");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rampart-egress-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();

    let http = testkit::http_origin("127.0.0.2:0").unwrap();
    let tls = testkit::tls_origin("127.0.0.2:0", &["good.test", "other.test"]).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, tls.cert_pem.as_ref().unwrap()).unwrap();
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    let mut answers = HashMap::new();
    for name in [
        "good.test",
        "api.good.test",
        "other.test",
        "dl.updates.good.test",
        "anydesk.com",
    ] {
        answers.insert(name.to_string(), vec![ip("127.0.0.2")]);
    }
    answers.insert("rebind-loopback.test".into(), vec![ip("127.0.0.1")]);
    answers.insert("rebind-metadata.test".into(), vec![ip("169.254.169.254")]);
    answers.insert("rebind-mapped.test".into(), vec![ip("::ffff:127.0.0.1")]);
    answers.insert(
        "rebind-mixed.test".into(),
        vec![ip("127.0.0.2"), ip("::ffff:169.254.169.254")],
    );
    let dns = testkit::fake_dns("127.0.0.1:0", answers).unwrap();

    let config = dir.join("egress.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"

[resolver]
servers = ["{dns}"]
timeout_ms = 1000
attempts = 1

[limits]
head_timeout_ms = 1000

[log]
path = "{events}"

[[users]]
name = "auditor"
password_sha256 = "{hash}"

[[lists]]
name = "remote-access"
entries = ["anydesk.com", "*.teamviewer.com"]
techniques = ["T1219"]

[[lists]]
name = "cloud-storage"
entries = ["mega.nz"]
techniques = ["T1537"]

[[sources]]
name = "audit"
networks = ["127.0.0.0/8"]
identities = ["auditor"]
mode = "report"
allow = ["good.test:*"]
allow_addresses = ["127.0.0.2/32"]
max_upload_bytes = 4096

[[sources]]
name = "servers"
networks = ["127.0.0.0/8"]
allow = ["good.test:*", "*.good.test:*", "anydesk.com:*", "rebind-loopback.test:*",
         "rebind-metadata.test:*", "rebind-mapped.test:*", "rebind-mixed.test:*"]
deny_lists = ["remote-access", "cloud-storage"]
allow_addresses = ["127.0.0.2/32"]
max_upload_bytes = 4096

[[sources.user_agents]]
pattern = "Microsoft BITS/*"
allow = ["*.updates.good.test:*"]
techniques = ["T1197"]
"#,
            dns = dns.addr,
            events = dir.join("events.jsonl").display(),
            hash = sha256_hex("hunter2"),
        ),
    )
    .unwrap();
    let (_proxy, proxy_addr, metrics_addr) = start_proxy(&config);
    let mut cx = Ctx {
        proxy: format!("http://{proxy_addr}"),
        dir: dir.clone(),
        events_seen: 0,
    };
    let hp = http.addr.port();
    let tp = tls.addr.port();

    // 1. Allowed plain HTTP, two requests on one keep-alive connection.
    let g = cx.curl(&[
        &format!("http://good.test:{hp}/a"),
        "-o",
        "/dev/null",
        &format!("http://good.test:{hp}/b"),
    ]);
    assert_eq!(g.code, "200200", "both requests answered");
    assert_eq!(
        g.body,
        format!("http method=GET target=/a host=good.test:{hp} body=0\n")
    );
    for path in ["/a", "/b"] {
        let ev = cx.next_event();
        check_event(&ev, "allow", "allowed", "good.test", &[]);
        assert_eq!(ev["detail"]["source"], "servers");
        assert_eq!(ev["detail"]["resolved"][0], "127.0.0.2");
        assert_eq!(ev["dest_ip"], "127.0.0.2");
        assert_eq!(ev["dest_port"], hp);
        assert_eq!(ev["detail"]["status"], 200);
        assert_eq!(ev["detail"]["proxy_type"], "http", "{path}");
    }
    assert_eq!(http.hits.load(Ordering::SeqCst), 2);

    // 2. Allowed CONNECT with a real TLS handshake (certificate verified by curl).
    let g = cx.curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://good.test:{tp}/secure"),
    ]);
    assert_eq!((g.connect_code.as_str(), g.code.as_str()), ("200", "200"));
    assert_eq!(
        g.body,
        format!("tls method=GET target=/secure host=good.test:{tp} body=0\n")
    );
    let ev = cx.next_event();
    check_event(&ev, "allow", "allowed", "good.test", &[]);
    assert_eq!(ev["detail"]["sni"], "good.test");
    assert_eq!(ev["detail"]["proxy_type"], "connect");

    // 3. Host not on the allowlist: refused before any lookup or connection.
    let g = cx.curl(&[&format!("http://other.test:{hp}/")]);
    assert_eq!(g.code, "403");
    assert!(
        g.headers.contains("X-Rampart-Reason: host_not_allowed"),
        "{}",
        g.headers
    );
    check_event(
        &cx.next_event(),
        "block",
        "host_not_allowed",
        "other.test",
        &["T1071.001", "T1105"],
    );

    // 4. Deny list (remote-access tool) wins over the allowlist.
    let g = cx.curl(&[&format!("http://anydesk.com:{hp}/")]);
    assert_eq!(g.code, "403");
    check_event(
        &cx.next_event(),
        "block",
        "deny_list:remote-access",
        "anydesk.com",
        &["T1219"],
    );

    // 5. Rebinding answers: every special address is refused even though the name is allowed.
    for (name, reason, techniques, addr) in [
        (
            "rebind-loopback.test",
            "address_denied:loopback",
            &["T1190"][..],
            "127.0.0.1",
        ),
        (
            "rebind-metadata.test",
            "address_denied:metadata",
            &["T1552.005", "T1190"][..],
            "169.254.169.254",
        ),
        (
            "rebind-mapped.test",
            "address_denied:loopback",
            &["T1190"][..],
            "::ffff:127.0.0.1",
        ),
        (
            "rebind-mixed.test",
            "address_denied:metadata",
            &["T1552.005", "T1190"][..],
            "::ffff:169.254.169.254",
        ),
    ] {
        let g = cx.curl(&[&format!("http://{name}:{hp}/")]);
        assert_eq!(g.code, "403", "{name}");
        let ev = cx.next_event();
        check_event(&ev, "block", reason, name, techniques);
        assert_eq!(ev["dest_ip"], addr, "the refused address is recorded");
    }
    // ... and through CONNECT.
    let g = cx.curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        &format!("https://rebind-metadata.test:{tp}/"),
    ]);
    assert_eq!(g.connect_code, "403");
    check_event(
        &cx.next_event(),
        "block",
        "address_denied:metadata",
        "rebind-metadata.test",
        &["T1552.005", "T1190"],
    );
    assert_eq!(
        http.hits.load(Ordering::SeqCst),
        2,
        "no refused request reached the origin"
    );

    // 6. CONNECT to an allowed host, ClientHello naming another (domain fronting).
    let tls_hits = tls.hits.load(Ordering::SeqCst);
    let hello = rampart_egress::fuzzing::client_hello(Some("other.test"), false);
    let (head, rest) = raw_connect(&proxy_addr, &format!("good.test:{tp}"), &hello);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        rest.is_empty(),
        "the tunnel closes without relaying: {rest:?}"
    );
    let ev = cx.next_event();
    check_event(&ev, "block", "sni_mismatch", "good.test", &["T1090"]);
    assert_eq!(ev["detail"]["sni"], "other.test");
    // The same with real curl: --connect-to makes it CONNECT to good.test while sending SNI
    // other.test.
    let g = cx.curl(&[
        "-k",
        "--connect-to",
        &format!("other.test:{tp}:good.test:{tp}"),
        &format!("https://other.test:{tp}/"),
    ]);
    assert_ne!(g.code, "200", "domain fronting through curl must fail");
    let ev = cx.next_event();
    check_event(&ev, "block", "sni_mismatch", "good.test", &["T1090"]);
    assert_eq!(ev["detail"]["sni"], "other.test");
    // Missing SNI and a non-TLS first flight.
    let (_, rest) = raw_connect(
        &proxy_addr,
        &format!("good.test:{tp}"),
        &rampart_egress::fuzzing::client_hello(None, false),
    );
    assert!(rest.is_empty());
    check_event(
        &cx.next_event(),
        "block",
        "sni_missing",
        "good.test",
        &["T1090"],
    );
    let (_, rest) = raw_connect(
        &proxy_addr,
        &format!("good.test:{tp}"),
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert!(rest.is_empty());
    check_event(
        &cx.next_event(),
        "block",
        "not_tls",
        "good.test",
        &["T1572"],
    );
    assert_eq!(
        tls.hits.load(Ordering::SeqCst),
        tls_hits,
        "no refused tunnel reached the origin"
    );

    // 7. BITS user agent only to update hosts (T1197).
    let g = cx.curl(&[
        "-A",
        "Microsoft BITS/7.8",
        &format!("http://good.test:{hp}/payload.exe"),
    ]);
    assert_eq!(g.code, "403");
    check_event(
        &cx.next_event(),
        "block",
        "user_agent_not_allowed",
        "good.test",
        &["T1197"],
    );
    let g = cx.curl(&[
        "-A",
        "Microsoft BITS/7.8",
        &format!("http://dl.updates.good.test:{hp}/kb.cab"),
    ]);
    assert_eq!(g.code, "200");
    check_event(
        &cx.next_event(),
        "allow",
        "allowed",
        "dl.updates.good.test",
        &[],
    );

    // 8. WebDAV method.
    let g = cx.curl(&["-X", "PROPFIND", &format!("http://good.test:{hp}/share/")]);
    assert_eq!(g.code, "403");
    check_event(
        &cx.next_event(),
        "block",
        "method_not_allowed",
        "good.test",
        &["T1048", "T1071.001"],
    );

    // 9. Uploads: small passes, oversized refused by Content-Length and mid-stream when chunked.
    let small = dir.join("small.bin");
    std::fs::write(&small, vec![b'a'; 100]).unwrap();
    let big = dir.join("big.bin");
    std::fs::write(&big, vec![b'b'; 5000]).unwrap();
    let g = cx.curl(&[
        "--data-binary",
        &format!("@{}", small.display()),
        &format!("http://good.test:{hp}/up"),
    ]);
    assert_eq!(g.code, "200");
    assert!(
        g.body.contains("method=POST target=/up") && g.body.contains("body=100"),
        "{}",
        g.body
    );
    check_event(&cx.next_event(), "allow", "allowed", "good.test", &[]);
    let before = http.hits.load(Ordering::SeqCst);
    let g = cx.curl(&[
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("http://good.test:{hp}/up"),
    ]);
    assert_eq!(g.code, "413");
    check_event(
        &cx.next_event(),
        "block",
        "upload_too_large",
        "good.test",
        &["T1048", "T1537"],
    );
    let g = cx.curl(&[
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("http://good.test:{hp}/up"),
    ]);
    assert_eq!(g.code, "413");
    check_event(
        &cx.next_event(),
        "block",
        "upload_too_large",
        "good.test",
        &["T1048", "T1537"],
    );
    assert_eq!(
        http.hits.load(Ordering::SeqCst),
        before,
        "no oversized upload completed"
    );

    // 10. Raw IP destination.
    let g = cx.curl(&[&format!("http://127.0.0.2:{hp}/")]);
    assert_eq!(g.code, "403");
    check_event(
        &cx.next_event(),
        "block",
        "raw_ip_not_allowed",
        "127.0.0.2",
        &["T1071.001", "T1105"],
    );

    // 11. Report-only source (selected by proxy-auth identity): violations pass and are reported;
    // address safety still holds.
    let g = cx.curl(&[
        "-U",
        "auditor:hunter2",
        &format!("http://other.test:{hp}/r"),
    ]);
    assert_eq!(g.code, "200");
    let ev = cx.next_event();
    check_event(
        &ev,
        "alert",
        "host_not_allowed",
        "other.test",
        &["T1071.001", "T1105"],
    );
    assert_eq!(ev["detail"]["decision"], "report");
    assert_eq!(ev["detail"]["identity"], "auditor");
    assert_eq!(ev["detail"]["source"], "audit");
    // A chunked upload over the limit is relayed whole in report mode, and reported.
    let g = cx.curl(&[
        "-U",
        "auditor:hunter2",
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", big.display()),
        &format!("http://good.test:{hp}/up"),
    ]);
    assert_eq!(g.code, "200");
    assert!(g.body.contains("body=5000"), "{}", g.body);
    let ev = cx.next_event();
    check_event(
        &ev,
        "alert",
        "upload_too_large",
        "good.test",
        &["T1048", "T1537"],
    );
    assert_eq!(ev["detail"]["bytes_up"], 5000);
    let g = cx.curl(&[
        "-U",
        "auditor:hunter2",
        &format!("http://rebind-loopback.test:{hp}/"),
    ]);
    assert_eq!(g.code, "403");
    check_event(
        &cx.next_event(),
        "block",
        "address_denied:loopback",
        "rebind-loopback.test",
        &["T1190"],
    );
    let g = cx.curl(&["-U", "auditor:wrong", &format!("http://good.test:{hp}/")]);
    assert_eq!(g.code, "407");
    check_event(&cx.next_event(), "block", "auth_failed", "good.test", &[]);

    // 12. Slow client: a head that never completes is cut at head_timeout_ms.
    let mut slow = TcpStream::connect(&proxy_addr).unwrap();
    slow.write_all(b"GET http://good.test/ HTTP/1.1\r\nHost: good")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "closed by the head timeout"
    );
    cx.no_more_events();

    // 13. Metrics.
    let m = Command::new("curl")
        .args([
            "-s",
            "--noproxy",
            "*",
            &format!("http://{metrics_addr}/metrics"),
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&m.stdout);
    let value = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("rampart_egress_{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("metric {name} in {text}"))
    };
    assert_eq!(value("allowed"), 5);
    assert_eq!(value("reported"), 2);
    assert_eq!(value("denied_address"), 6);
    assert_eq!(value("denied_sni"), 4);
    assert_eq!(value("head_timeouts"), 1);
    assert_eq!(
        value("denied") + value("allowed") + value("reported"),
        cx.events_seen as u64
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Deletes the network namespace on drop.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.0])
            .status();
    }
}

fn run_ok(cmd: &mut Command) {
    let st = cmd.status().expect("run command");
    assert!(st.success(), "{cmd:?} failed");
}

/// Transparent mode for real: inside a private network namespace, nft redirects connections to
/// 127.0.0.3 (standing in for "the internet") to the transparent listener; curl connects without
/// any proxy setting. HTTP is routed by Host, TLS by SNI, and the proxy dials its own checked
/// resolution (127.0.0.2), never the address the client picked. A direct connection to the
/// transparent port is refused as a loop. Needs root, `ip`, `nft` and `curl`.
#[test]
fn egress_transparent_mode_with_nft_redirect_in_a_netns() {
    let is_root = unsafe { libc::geteuid() } == 0;
    let have = |bin: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !is_root || !have("ip") || !have("nft") || !curl_available() {
        eprintln!("skipping: needs root, ip, nft and curl");
        return;
    }
    let name = format!("rampart-egress-{}", std::process::id());
    if !Command::new("ip")
        .args(["netns", "add", &name])
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipping: cannot create a network namespace");
        return;
    }
    let ns = Netns(name.clone());
    run_ok(Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]));
    let ns_name = ns.0.clone();
    // Everything below runs on a thread that entered the namespace: sockets it creates and
    // processes it spawns live there.
    let body = std::thread::spawn(move || {
        let f = std::fs::File::open(format!("/var/run/netns/{ns_name}")).expect("netns file");
        use std::os::fd::AsRawFd;
        // SAFETY: a valid namespace fd; setns affects only this thread.
        let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns");
        transparent_body();
    });
    let result = body.join();
    drop(ns);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

fn transparent_body() {
    let dir = std::env::temp_dir().join(format!("rampart-egress-tp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let http = testkit::http_origin("127.0.0.2:0").unwrap();
    let tls = testkit::tls_origin("127.0.0.2:0", &["good.test", "other.test"]).unwrap();
    let cert = dir.join("cert.pem");
    std::fs::write(&cert, tls.cert_pem.as_ref().unwrap()).unwrap();
    let mut answers = HashMap::new();
    for n in ["good.test", "other.test"] {
        answers.insert(n.to_string(), vec!["127.0.0.2".parse::<IpAddr>().unwrap()]);
    }
    let dns = testkit::fake_dns("127.0.0.1:0", answers).unwrap();
    let config = dir.join("egress.toml");
    std::fs::write(
        &config,
        format!(
            r#"
listen = ["127.0.0.1:0"]
transparent_listen = ["127.0.0.1:0"]
metrics_listen = "127.0.0.1:0"
[resolver]
servers = ["{dns}"]
[log]
path = "{events}"
[[sources]]
name = "servers"
networks = ["127.0.0.0/8"]
allow = ["good.test:*"]
allow_addresses = ["127.0.0.2/32"]
"#,
            dns = dns.addr,
            events = dir.join("events.jsonl").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["egress", "--config", config.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let _proxy = Proxy(child);
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    let tport: u16 = v["transparent"][0]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (hp, tp) = (http.addr.port(), tls.addr.port());
    let rules = format!(
        "table ip rampart_egress_test {{\n chain out {{\n  type nat hook output priority -100; policy accept;\n  ip daddr 127.0.0.3 tcp dport {{ {hp}, {tp} }} redirect to :{tport}\n }}\n}}\n"
    );
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(rules.as_bytes())
        .unwrap();
    assert!(nft.wait().unwrap().success(), "nft ruleset loads");
    let mut cx = Ctx {
        proxy: String::new(),
        dir: dir.clone(),
        events_seen: 0,
    };
    let curl = |args: &[&str]| -> String {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "--noproxy",
                "*",
                "-w",
                "\n%{http_code}",
            ])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    // HTTP routed by Host: the client connects to 127.0.0.3, the proxy dials 127.0.0.2.
    let out = curl(&[
        "--resolve",
        &format!("good.test:{hp}:127.0.0.3"),
        &format!("http://good.test:{hp}/t"),
    ]);
    assert!(out.ends_with("\n200"), "{out}");
    assert!(
        out.contains(&format!("http method=GET target=/t host=good.test:{hp}")),
        "{out}"
    );
    let ev = cx.next_event();
    check_event(&ev, "allow", "allowed", "good.test", &[]);
    assert_eq!(ev["detail"]["proxy_type"], "transparent_http");
    assert_eq!(ev["dest_ip"], "127.0.0.2");
    // TLS routed by SNI, certificate verified end to end.
    let out = curl(&[
        "--cacert",
        cert.to_str().unwrap(),
        "--resolve",
        &format!("good.test:{tp}:127.0.0.3"),
        &format!("https://good.test:{tp}/s"),
    ]);
    assert!(out.ends_with("\n200"), "{out}");
    let ev = cx.next_event();
    check_event(&ev, "allow", "allowed", "good.test", &[]);
    assert_eq!(ev["detail"]["proxy_type"], "transparent_tls");
    assert_eq!(ev["detail"]["sni"], "good.test");
    // A name off the allowlist, by SNI and by Host.
    let before = (
        tls.hits.load(Ordering::SeqCst),
        http.hits.load(Ordering::SeqCst),
    );
    let out = curl(&[
        "-k",
        "--resolve",
        &format!("other.test:{tp}:127.0.0.3"),
        &format!("https://other.test:{tp}/"),
    ]);
    assert!(!out.ends_with("\n200"), "{out}");
    check_event(
        &cx.next_event(),
        "block",
        "host_not_allowed",
        "other.test",
        &["T1071.001", "T1105"],
    );
    let out = curl(&[
        "--resolve",
        &format!("other.test:{hp}:127.0.0.3"),
        &format!("http://other.test:{hp}/"),
    ]);
    assert!(out.ends_with("\n403"), "{out}");
    check_event(
        &cx.next_event(),
        "block",
        "host_not_allowed",
        "other.test",
        &["T1071.001", "T1105"],
    );
    assert_eq!(
        (
            tls.hits.load(Ordering::SeqCst),
            http.hits.load(Ordering::SeqCst)
        ),
        before
    );
    // Straight to the transparent port: nothing was redirected, so it would loop.
    let mut direct = TcpStream::connect(("127.0.0.1", tport)).unwrap();
    direct
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = Vec::new();
    let _ = direct.read_to_end(&mut sink);
    let ev = cx.next_event();
    assert_eq!(ev["reason"], "bad_request:transparent_loop", "{ev}");
    let _ = std::fs::remove_dir_all(&dir);
}
