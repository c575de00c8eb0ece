//! Blocking-mode detection and false-positive rates on the attack and benign corpora in
//! ../shared/data/waf, one payload per `GET /get?q=<percent-encoded payload>` with browser-like
//! headers (the request form used for the nginx + ModSecurity peer), CRS at paranoia 1,
//! `SecRuleEngine On`, anomaly threshold 5. Also reports the own @detectSQLi/@detectXSS
//! operators directly on libinjection's data.
//!
//! `cargo run --release -p rampart-waf --example corpus -- [--data DIR] [--pl N] [--dump FILE]`
//! (`--dump`: one line per request with every matched rule, to diff the engine's results
//! before and after a change to evaluation)

use std::io::Write;
use std::path::{Path, PathBuf};

use rampart_waf::{files, injection, Engine, Request, RuleSet, TxOptions};

fn pct_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn request(query: &str) -> Request {
    let h = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
    Request {
        method: "GET".into(),
        target: format!("/get?{query}").into_bytes(),
        protocol: "HTTP/1.1".into(),
        headers: vec![
            h("Host", "localhost"),
            h(
                "User-Agent",
                "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            ),
            h(
                "Accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            ),
            h("Accept-Language", "en-US,en;q=0.5"),
            h("Accept-Encoding", "gzip, deflate"),
            h("Connection", "keep-alive"),
        ],
        remote_addr: "192.0.2.10".into(),
        remote_port: 40000,
        server_port: 80,
        ..Request::default()
    }
}

/// Percent-encode only the bytes a request target cannot carry (the corpora's "URL-encoded"
/// lines still hold spaces and other raw bytes).
fn target_safe(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b <= 0x20 || b >= 0x7f || b"#\"<>\\^`{|}".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// Whether the request is blocked, and the rules that scored; with `dump`, one line with every
/// matched rule (logged or not), its message, matched variable and data, and the decision.
fn blocked(e: &Engine, query: &str, dump: Option<&mut dyn std::io::Write>) -> (bool, Vec<u64>) {
    let req = request(query);
    if let Err(why) = rampart_waf::body::front_check(&raw(&req)) {
        eprintln!("front end rejects {query}: {why}");
        return (true, Vec::new());
    }
    let mut tx = e.transaction(&req, &TxOptions::default());
    tx.process_request(&req);
    if let Some(out) = dump {
        let mut line = format!("{query}\t{:?}", tx.intervention.as_ref().map(|i| i.rule_id));
        for m in &tx.matched {
            line.push_str(&format!(
                "\t{}|{}|{}|{}|{}|{:?}",
                m.id, m.msg, m.logdata, m.matched_var_name, m.matched_data, m.tags
            ));
        }
        line.push_str(&format!(
            "\tscore={:?}",
            tx.tx_var("blocking_inbound_anomaly_score")
                .map(String::from_utf8_lossy)
        ));
        // A dump that cannot be written is reported once at the end by the caller's flush.
        let _ = writeln!(out, "{line}");
    }
    let ids = tx
        .matched
        .iter()
        .filter(|m| m.logged && m.id < 949000)
        .map(|m| m.id)
        .collect();
    (tx.intervention.is_some(), ids)
}

fn raw(r: &Request) -> Vec<u8> {
    let mut v = format!(
        "{} {} {}\r\n",
        r.method,
        String::from_utf8_lossy(&r.target),
        r.protocol
    )
    .into_bytes();
    for (k, val) in &r.headers {
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(b": ");
        v.extend_from_slice(val);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v
}

fn lines(p: &Path) -> Vec<Vec<u8>> {
    std::fs::read(p)
        .map(|b| {
            b.split(|c| *c == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
                .collect()
        })
        .unwrap_or_default()
}

fn dir_lines(d: &Path, prefix: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut ps: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    ps.sort();
    for p in ps {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(prefix) && name.ends_with(".txt") {
            out.extend(lines(&p));
        }
    }
    out
}

fn json_strings(p: &Path) -> Vec<Vec<u8>> {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .map(|v| v.into_iter().map(String::into_bytes).collect())
        .unwrap_or_default()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut data = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/waf"
    ));
    let mut pl = 1u8;
    let mut dump: Option<std::io::BufWriter<std::fs::File>> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().ok_or("--data DIR")?.into(),
            "--pl" => pl = args.next().ok_or("--pl N")?.parse()?,
            "--dump" => {
                let f = std::fs::File::create(args.next().ok_or("--dump FILE")?)?;
                dump = Some(std::io::BufWriter::new(f));
            }
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let crs = data.join("crs");
    let mut rs = RuleSet::new();
    files::add_files(&mut rs, &[crs.join("crs-setup.conf.example")])?;
    files::add_inline(
        &mut rs,
        "bench-settings.conf",
        &format!("SecRuleEngine On\nSecAction \"id:8800001,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level={pl}\"\n"),
        &crs,
    )?;
    files::add_files(&mut rs, &[crs.join("rules/*.conf")])?;
    rs.finish()?;
    let e = Engine::new(rs);
    let patt = data.join("payloadsallthethings");
    let li = data.join("libinjection");
    // (name, payloads, already URL-encoded, attack?)
    let sets: Vec<(&str, Vec<Vec<u8>>, bool, bool)> = vec![
        ("libinjection sqli", dir_lines(&li, "sqli-"), true, true),
        ("libinjection xss", dir_lines(&li, "xss-"), true, true),
        (
            "PayloadsAllTheThings sqli",
            dir_lines(&patt.join("sqli"), ""),
            false,
            true,
        ),
        (
            "PayloadsAllTheThings xss",
            dir_lines(&patt.join("xss"), ""),
            false,
            true,
        ),
        (
            "PayloadsAllTheThings traversal",
            dir_lines(&patt.join("directory-traversal"), ""),
            false,
            true,
        ),
        (
            "PayloadsAllTheThings file inclusion",
            dir_lines(&patt.join("file-inclusion"), ""),
            false,
            true,
        ),
        (
            "PayloadsAllTheThings command injection",
            dir_lines(&patt.join("command-injection"), ""),
            false,
            true,
        ),
        (
            "CRS ssrf.data",
            lines(&crs.join("rules/ssrf.data")),
            false,
            true,
        ),
        (
            "modsec-learn malicious_test",
            json_strings(&data.join("modsec-learn/malicious_test.json")),
            true,
            true,
        ),
        (
            "modsec-learn legitimate_test (benign)",
            json_strings(&data.join("modsec-learn/legitimate_test.json")),
            true,
            false,
        ),
        (
            "libinjection false_positives (benign)",
            lines(&li.join("false_positives.txt")),
            true,
            false,
        ),
    ];
    println!("blocking mode, paranoia {pl}, threshold 5; GET /get?q=<payload>");
    for (name, payloads, encoded, _attack) in &sets {
        if payloads.is_empty() {
            println!("{name}: no data");
            continue;
        }
        let t = std::time::Instant::now();
        let mut hits = 0usize;
        let mut by_rule: std::collections::BTreeMap<u64, usize> = Default::default();
        for p in payloads {
            let q = if name.starts_with("modsec-learn") {
                // Whole query strings.
                target_safe(p)
            } else if *encoded {
                format!("q={}", target_safe(p))
            } else {
                format!("q={}", pct_encode(p))
            };
            let (b, ids) = blocked(&e, &q, dump.as_mut().map(|d| d as &mut dyn std::io::Write));
            if b {
                hits += 1;
                for id in ids {
                    *by_rule.entry(id).or_default() += 1;
                }
            }
        }
        if !_attack {
            let mut top: Vec<(u64, usize)> = by_rule.into_iter().collect();
            top.sort_by_key(|e| std::cmp::Reverse(e.1));
            top.truncate(8);
            println!("  rules in blocked benign requests: {top:?}");
        }
        println!(
            "{name}: {hits}/{} blocked ({:.1}%), {:.0} µs/request",
            payloads.len(),
            100.0 * hits as f64 / payloads.len() as f64,
            t.elapsed().as_micros() as f64 / payloads.len() as f64
        );
    }
    if let Some(mut d) = dump {
        d.flush()?;
    }
    // The operators alone on libinjection's data (inputs URL-decoded first, as CRS does).
    let dec = |l: &[u8]| rampart_waf::transform::url_decode(l, true);
    for (name, set, sqli) in [
        (
            "@detectSQLi on libinjection sqli-*",
            dir_lines(&li, "sqli-"),
            true,
        ),
        (
            "@detectSQLi on libinjection false_positives",
            lines(&li.join("false_positives.txt")),
            true,
        ),
        (
            "@detectXSS on libinjection xss-*",
            dir_lines(&li, "xss-"),
            false,
        ),
        (
            "@detectXSS on libinjection false_positives",
            lines(&li.join("false_positives.txt")),
            false,
        ),
    ] {
        let hits = set
            .iter()
            .filter(|l| {
                let v = dec(l);
                if sqli {
                    injection::detect_sqli(&v).is_some()
                } else {
                    injection::detect_xss(&v)
                }
            })
            .count();
        println!(
            "{name}: {hits}/{} flagged ({:.1}%)",
            set.len(),
            100.0 * hits as f64 / set.len().max(1) as f64
        );
    }
    Ok(())
}
