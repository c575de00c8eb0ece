//! The own @detectSQLi / @detectXSS against libinjection's published test data, when present:
//! detection on the attack lines and flags on the benign `false_positives.txt` must stay within
//! the measured bounds (lines are URL-encoded input, decoded as CRS's transformations do).

use std::path::PathBuf;

use rampart_waf::injection::{detect_sqli, detect_xss};
use rampart_waf::transform::url_decode;

fn data_dir() -> Option<PathBuf> {
    let base = std::env::var_os("RAMPART_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let d = base.join("waf/libinjection");
    d.is_dir().then_some(d)
}

fn lines(dir: &std::path::Path, prefix: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
        })
        .collect();
    paths.sort();
    for p in paths {
        for l in std::fs::read(&p).unwrap().split(|b| *b == b'\n') {
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            if !l.is_empty() && !l.starts_with(b"#") {
                out.push(url_decode(l, true));
            }
        }
    }
    out
}

fn rate(set: &[Vec<u8>], f: impl Fn(&[u8]) -> bool) -> f64 {
    set.iter().filter(|v| f(v)).count() as f64 / set.len().max(1) as f64
}

#[test]
fn detection_and_false_positive_rates() {
    let Some(dir) = data_dir() else {
        eprintln!("skipping: libinjection data not found (set RAMPART_SHARED_DATA)");
        return;
    };
    let sqli = lines(&dir, "sqli-");
    let xss = lines(&dir, "xss-");
    let benign = lines(&dir, "false_positives");
    assert!(sqli.len() > 1000 && xss.len() > 500 && benign.len() > 100);
    let s = rate(&sqli, |v| detect_sqli(v).is_some());
    let x = rate(&xss, detect_xss);
    let fs = rate(&benign, |v| detect_sqli(v).is_some());
    let fx = rate(&benign, detect_xss);
    eprintln!("sqli {s:.3} xss {x:.3} benign-as-sqli {fs:.3} benign-as-xss {fx:.3}");
    // Measured 2026-11-28: 0.995 / 0.989 / 0.020 / 0.000 (SQLi was 0.965 and XSS 0.985
    // before the expression-shaped break-outs and cut-off URL attributes; benign-as-SQLi was
    // 0.026 before the "<3" and "#2 MOM" shapes were dropped).
    assert!(s >= 0.99, "SQLi detection {s}");
    assert!(x >= 0.985, "XSS detection {x}");
    assert!(fs <= 0.025, "SQLi false positives {fs}");
    assert!(fx <= 0.01, "XSS false positives {fx}");
}
