//! `rampart waf` end to end: the real binary in front of a stub upstream on loopback, with a
//! small generated rule set (no shared data needed): a clean request is proxied, an attack is
//! blocked by a rule, a metadata-SSRF target is blocked by the built-in check, and every request
//! yields one JSON event line.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

fn stub_upstream() -> std::net::SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 9\r\nConnection: close\r\n\r\nupstream\n");
        }
    });
    addr
}

/// One request, the whole answer (empty when none came). A failed write is not an error here:
/// a server that refuses the bytes (plain HTTP on the TLS port) may close before the request is
/// written, and every caller asserts on the answer.
fn get(addr: &str, target: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = write!(s, "GET {target} HTTP/1.1\r\nHost: app.example.test\r\nX-CRS-Test: t1\r\nConnection: close\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn proxies_blocks_and_logs() {
    let dir = std::env::temp_dir().join(format!("rampart-waf-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("rules.conf"),
        "SecDefaultAction \"phase:2,log,pass\"\nSecRule ARGS \"@rx (?i)<script\" \"id:100,phase:2,deny,status:403,t:none,t:urlDecodeUni,msg:'script tag',tag:'attack-xss'\"\n",
    )
    .unwrap();
    let up = stub_upstream();
    std::fs::write(
        dir.join("waf.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nrules = [\"{}\"]\n[[routes]]\nname = \"app\"\nupstreams = [\"{up}\"]\n",
            dir.join("rules.conf").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["waf", "--config"])
        .arg(dir.join("waf.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = first["addr"].as_str().unwrap().to_string();

    let ok = get(&addr, "/hello?q=fine");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.ends_with("upstream\n"), "{ok}");
    let ev: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ev["decision"], "allow");
    assert_eq!(ev["x_crs_test"], "t1");
    assert_eq!(ev["route"], "app");

    let bad = get(&addr, "/hello?q=%3Cscript%3Ealert(1)");
    assert!(bad.starts_with("HTTP/1.1 403"), "{bad}");
    let ev: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ev["decision"], "block");
    assert_eq!(ev["rule_ids"], serde_json::json!([100]));
    assert_eq!(ev["techniques"], serde_json::json!(["T1190"]));

    let ssrf = get(&addr, "/fetch?url=http://0xA9FEA9FE/latest/meta-data/");
    assert!(ssrf.starts_with("HTTP/1.1 403"), "{ssrf}");
    let ev: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ev["techniques"], serde_json::json!(["T1552.005"]));

    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_reports_rule_errors_with_location() {
    let dir = std::env::temp_dir().join(format!("rampart-waf-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("bad.conf"),
        "\nSecRule ARGS \"@rx (\" \"id:1,phase:2,pass\"\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("waf.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nrules = [\"{}\"]\n[[routes]]\nname = \"app\"\nupstreams = [\"127.0.0.1:9\"]\n",
            dir.join("bad.conf").display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["waf", "--check", "--config"])
        .arg(dir.join("waf.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.conf:2: regex does not compile"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

fn write_config(dir: &std::path::Path, word: &str, up: std::net::SocketAddr) {
    std::fs::write(
        dir.join("rules.conf"),
        format!("SecRule ARGS \"@contains {word}\" \"id:200,phase:2,deny,status:403,log\"\n"),
    )
    .unwrap();
    std::fs::write(
        dir.join("waf.toml"),
        format!(
            "listen = \"127.0.0.1:0\"\nrules = [\"{}\"]\n[[routes]]\nname = \"app\"\nupstreams = [\"{up}\"]\n",
            dir.join("rules.conf").display()
        ),
    )
    .unwrap();
}

fn status(resp: &str) -> u16 {
    resp.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

/// Wait for the next `reload` event on the child's stdout (request events interleave).
fn next_reload(rx: &std::sync::mpsc::Receiver<String>) -> serde_json::Value {
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("reload event");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"] == "reload" {
            return v;
        }
    }
}

#[test]
fn sighup_reloads_in_place_without_failed_requests() {
    let dir = std::env::temp_dir().join(format!("rampart-waf-reload-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let up = stub_upstream();
    write_config(&dir, "evilone", up);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["waf", "--config"])
        .arg(dir.join("waf.toml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(first["reload_in_place"], true, "{first}");
    let addr = first["addr"].as_str().unwrap().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let hup = |pid: u32| {
        assert!(Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success());
    };
    assert_eq!(status(&get(&addr, "/?q=evilone")), 403);
    assert_eq!(status(&get(&addr, "/?q=eviltwo")), 200);

    // Clients keep sending while the rules are swapped back and forth.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (addr, stop) = (addr.clone(), stop.clone());
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u32, 0u32);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match status(&get(&addr, "/?q=harmless")) {
                        200 => ok += 1,
                        _ => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    for word in ["eviltwo", "evilone", "eviltwo"] {
        write_config(&dir, word, up);
        hup(child.id());
        let ev = next_reload(&rx);
        assert_eq!(ev["ok"], true, "{ev}");
    }
    assert_eq!(status(&get(&addr, "/?q=eviltwo")), 403);
    assert_eq!(status(&get(&addr, "/?q=evilone")), 200);

    // A broken rule file keeps the running rules.
    std::fs::write(dir.join("rules.conf"), "SecRule ARGS \"@rx (\" \"id:1\"\n").unwrap();
    hup(child.id());
    let ev = next_reload(&rx);
    assert_eq!(ev["ok"], false, "{ev}");
    assert!(
        ev["error"].as_str().unwrap().contains("rules.conf:1"),
        "{ev}"
    );
    assert_eq!(status(&get(&addr, "/?q=eviltwo")), 403);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut ok, mut failed) = (0, 0);
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed += f;
    }
    assert!(ok > 0);
    assert_eq!(
        failed, 0,
        "{failed} requests failed across reloads ({ok} ok)"
    );
    let _ = child.kill();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = child.wait();
    let error_lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(error_lines.len(), 1, "{err}");
    assert!(
        error_lines[0].contains("keeping the running configuration"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_reports_exclusions_that_cannot_act() {
    let dir = std::env::temp_dir().join(format!("rampart-waf-excl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("r.conf"),
        "SecRule ARGS \"@contains evil\" \"id:10,phase:2,deny,tag:'attack-x'\"\n",
    )
    .unwrap();
    let base = format!(
        "listen = \"127.0.0.1:0\"\nrules = [\"{}\"]\n[[routes]]\nname = \"app\"\nupstreams = [\"127.0.0.1:9\"]\n",
        dir.join("r.conf").display()
    );
    let check = |extra: &str| {
        std::fs::write(dir.join("waf.toml"), format!("{base}{extra}")).unwrap();
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["waf", "--check", "--config"])
            .arg(dir.join("waf.toml"))
            .output()
            .unwrap()
    };
    let ok =
        check("[[exclusions]]\nroute = \"app\"\nrule_ids = [10]\ntargets = [\"ARGS:password\"]\n");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let bad = check("[[exclusions]]\nroute = \"app\"\nrule_ids = [\"900-999\"]\n");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("waf.toml:6: rule id 900-999 matches no loaded rule"),
        "{err}"
    );
    let bad = check("[[exclusions]]\nroute = \"api\"\nrule_ids = [10]\n");
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("waf.toml:6: exclusion names route \"api\""),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// TLS termination with rustls: a self-signed certificate made with the `openssl` tool, and
/// `curl -k` as the client (both are skipped with a reason when not installed).
#[test]
fn terminates_tls() {
    let have = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
            || Command::new(tool)
                .arg("version")
                .output()
                .is_ok_and(|o| o.status.success())
    };
    if !have("openssl") || !have("curl") {
        eprintln!("skipping: needs the openssl and curl tools");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rampart-waf-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let gen = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=app.example.test",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    let up = stub_upstream();
    write_config(&dir, "evilword", up);
    let mut toml = std::fs::read_to_string(dir.join("waf.toml")).unwrap();
    toml = toml.replacen(
        "[[routes]]",
        &format!(
            "[tls]\ncert_pem = \"{}\"\nkey_pem = \"{}\"\n[[routes]]",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
        1,
    );
    std::fs::write(dir.join("waf.toml"), toml).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["waf", "--config"])
        .arg(dir.join("waf.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = first["addr"].as_str().unwrap().to_string();
    let curl = |version: &str, q: &str| {
        let out = Command::new("curl")
            .args(["-sk", version, "--max-time", "20", "-o", "/dev/null"])
            .args(["-w", "%{http_code} %{scheme} %{http_version}"])
            .arg(format!("https://{addr}/hello?q={q}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    for (version, shown) in [("--http1.1", "1.1"), ("--http2", "2")] {
        assert_eq!(curl(version, "fine"), format!("200 HTTPS {shown}"));
        let ev: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(ev["decision"], "allow");
        assert_eq!(curl(version, "evilword"), format!("403 HTTPS {shown}"));
        let ev: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(ev["decision"], "block");
    }
    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = get(&addr, "/hello?q=fine");
    assert!(!plain.starts_with("HTTP/1.1 200"), "{plain}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}

/// HTTP/2 without TLS (h2c, prior knowledge) next to HTTP/1.1 on the same port, with curl.
#[test]
fn serves_h2c_prior_knowledge() {
    if !Command::new("curl")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        eprintln!("skipping: needs the curl tool");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rampart-waf-h2c-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let up = stub_upstream();
    write_config(&dir, "evilword", up);
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["waf", "--config"])
        .arg(dir.join("waf.toml"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = first["addr"].as_str().unwrap().to_string();
    let curl = |q: &str| {
        let out = Command::new("curl")
            .args(["-s", "--http2-prior-knowledge", "--max-time", "20"])
            .args(["-w", "\n%{http_code} %{http_version}"])
            .arg(format!("http://{addr}/hello?q={q}"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ok = curl("fine");
    assert!(ok.ends_with("upstream\n\n200 2"), "{ok}");
    let ev: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ev["decision"], "allow");
    assert_eq!(ev["route"], "app");
    let bad = curl("evilword");
    assert!(bad.ends_with("403 2"), "{bad}");
    let ev: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(ev["decision"], "block");
    // HTTP/1.1 still works on the same listener.
    let h1 = get(&addr, "/hello?q=fine");
    assert!(h1.starts_with("HTTP/1.1 200"), "{h1}");
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
