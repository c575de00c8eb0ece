//! Diagnostic over the corpora in ../shared/data/waf (ignored by default; needs the data):
//! prints each attack payload that CRS at PL1 in blocking mode lets through, and each benign
//! request it blocks with the rule ids that scored, so misses and false positives can be
//! grouped by cause. Same request form as `examples/corpus.rs` (`GET /get?q=<payload>`).
//!
//! `cargo test --release -p rampart-waf --test corpus_diag -- --ignored --nocapture`
//! (env `DIAG_SETS=sqli,xss,legit,fp,patt-xss,patt-sqli,patt-cmdi,ml-mal` selects sets; default the first four; `DIAG_FORM=peer` sends
//! every line percent-encoded into `q=`). `bench/waf-corpus.sh` lists where Rampart and
//! nginx + ModSecurity disagree on the same requests.

use std::path::{Path, PathBuf};

use rampart_waf::injection::{detect_sqli, detect_xss};
use rampart_waf::transform::{url_decode, Transform};
use rampart_waf::{files, Engine, Request, RuleSet, TxOptions};

fn data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("RAMPART_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let d = base.join("waf");
    d.join("crs/rules").is_dir().then_some(d)
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
    let mut ps: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    ps.sort();
    ps.into_iter()
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                n.starts_with(prefix) && n.ends_with(".txt")
            })
        })
        .flat_map(|p| lines(&p))
        .collect()
}

fn json_strings(p: &Path) -> Vec<Vec<u8>> {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .map(|v| v.into_iter().map(String::into_bytes).collect())
        .unwrap_or_default()
}

#[test]
#[ignore = "diagnostic over ../shared/data/waf; run with --ignored --nocapture"]
fn print_misses_and_false_positives() {
    let Some(data) = data_dir() else {
        eprintln!("skipping: ../shared/data/waf not found (set RAMPART_SHARED_DATA)");
        return;
    };
    let crs = data.join("crs");
    let mut rs = RuleSet::new();
    files::add_files(&mut rs, &[crs.join("crs-setup.conf.example")]).unwrap();
    files::add_inline(
        &mut rs,
        "diag-settings.conf",
        "SecRuleEngine On\nSecAction \"id:8800001,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=1\"\n",
        &crs,
    )
    .unwrap();
    files::add_files(&mut rs, &[crs.join("rules/*.conf")]).unwrap();
    rs.finish().unwrap();
    let e = Engine::new(rs);
    let li = data.join("libinjection");
    let want = std::env::var("DIAG_SETS").unwrap_or_else(|_| "sqli,xss,legit,fp".into());
    // `DIAG_FORM=peer`: every line percent-encoded whole into `q=` (anchors.md §4.3 wording of
    // the nginx + ModSecurity run) instead of the corpus runner's form.
    let peer_form = std::env::var("DIAG_FORM").is_ok_and(|f| f == "peer");
    // (key, payloads, whole query string?, attack?)
    let sets = [
        ("sqli", dir_lines(&li, "sqli-"), false, true),
        ("xss", dir_lines(&li, "xss-"), false, true),
        (
            "legit",
            json_strings(&data.join("modsec-learn/legitimate_test.json")),
            true,
            false,
        ),
        ("fp", lines(&li.join("false_positives.txt")), false, false),
        // PayloadsAllTheThings lines are raw payloads: percent-encoded whole, as the runner does.
        (
            "patt-xss",
            dir_lines(&data.join("payloadsallthethings/xss"), ""),
            false,
            true,
        ),
        (
            "patt-sqli",
            dir_lines(&data.join("payloadsallthethings/sqli"), ""),
            false,
            true,
        ),
        (
            "patt-cmdi",
            dir_lines(&data.join("payloadsallthethings/command-injection"), ""),
            false,
            true,
        ),
        (
            "ml-mal",
            json_strings(&data.join("modsec-learn/malicious_test.json")),
            true,
            true,
        ),
    ];
    for (key, payloads, whole, attack) in sets {
        if !want.split(',').any(|w| w == key) {
            continue;
        }
        let mut n = 0;
        for p in &payloads {
            let q = if peer_form || key.starts_with("patt-") {
                format!("q={}", pct_encode(p))
            } else if whole {
                target_safe(p)
            } else {
                format!("q={}", target_safe(p))
            };
            let req = request(&q);
            let mut tx = e.transaction(&req, &TxOptions::default());
            tx.process_request(&req);
            let blocked = tx.intervention.is_some();
            if blocked != attack {
                n += 1;
                let ids: Vec<u64> = tx
                    .matched
                    .iter()
                    .filter(|m| m.logged && m.id < 949000)
                    .map(|m| m.id)
                    .collect();
                if !attack {
                    for m in tx.matched.iter().filter(|m| m.logged && m.id < 949000) {
                        let d: String = m.matched_data.chars().take(120).collect();
                        println!("  rule {} {} = {d:?}", m.id, m.matched_var_name);
                    }
                }
                let dec = url_decode(p, true);
                println!(
                    "{key}\t{ids:?}\tsqli={:?}\txss={}\t{}",
                    detect_sqli(&dec),
                    detect_xss(&dec),
                    String::from_utf8_lossy(p)
                );
            }
        }
        println!("{key}: {n}/{} wrong", payloads.len());
    }
}

/// `DIAG_INPUT='line1\nline2'`: the operators' verdicts on each line taken as a query-string
/// value: URL-decoded once (argument parsing), then 942100's `utf8toUnicode,urlDecodeUni`.
#[test]
#[ignore = "diagnostic; run with --ignored --nocapture"]
fn print_verdicts_for_inputs() {
    for l in std::env::var("DIAG_INPUT").unwrap_or_default().lines() {
        let arg = url_decode(l.as_bytes(), false);
        let uni = Transform::Utf8ToUnicode.apply(&arg);
        let dec = url_decode(&uni, true);
        println!("sqli-on-utf8toUnicode-only={:?}", detect_sqli(&uni));
        println!(
            "sqli={:?} xss={} {:?}",
            detect_sqli(&dec),
            detect_xss(&dec),
            String::from_utf8_lossy(&dec)
        );
    }
}
