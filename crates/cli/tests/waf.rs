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

fn get(addr: &str, target: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {target} HTTP/1.1\r\nHost: app.example.test\r\nX-CRS-Test: t1\r\nConnection: close\r\n\r\n").unwrap();
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
