//! Run CRS's go-ftw regression suite directly through the engine and report the pass rate.
//!
//! `cargo run --release -p rampart-waf --example ftw -- [--crs DIR] [--overrides FILE]
//!  [--failures FILE] [--filter TEXT] [--dump FILE]` (`--dump`: every case's status and matched
//!  rules, to diff the engine's results before and after a change to evaluation)

use std::path::{Path, PathBuf};
use std::time::Instant;

use rampart_waf::ftw;
use rampart_waf::{files, Engine, RuleSet};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(p);
        }
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut crs = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/waf/crs"
    ));
    let mut overrides = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/ftw-overrides.yaml"));
    let mut failures_out: Option<PathBuf> = None;
    let mut filter = String::new();
    let mut dump: Option<PathBuf> = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--crs" => crs = args.next().ok_or("--crs DIR")?.into(),
            "--overrides" => overrides = args.next().ok_or("--overrides FILE")?.into(),
            "--failures" => failures_out = Some(args.next().ok_or("--failures FILE")?.into()),
            "--filter" => filter = args.next().ok_or("--filter TEXT")?,
            "--dump" => dump = Some(args.next().ok_or("--dump FILE")?.into()),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let t0 = Instant::now();
    let mut rs = RuleSet::new();
    files::add_files(&mut rs, &[crs.join("crs-setup.conf.example")])?;
    files::add_inline(
        &mut rs,
        "crs-test-settings.conf",
        ftw::CRS_TEST_SETTINGS,
        &crs,
    )?;
    files::add_files(&mut rs, &[crs.join("rules/*.conf")])?;
    rs.finish()?;
    let nrules = rs.rule_count();
    for w in &rs.warnings {
        eprintln!("warning: {w}");
    }
    let engine = Engine::new(rs);
    let load_ms = t0.elapsed().as_millis();
    let ovr = match std::fs::read_to_string(&overrides) {
        Ok(t) => ftw::parse_overrides(&t)?,
        Err(_) => Vec::new(),
    };
    let mut paths = Vec::new();
    yaml_files(&crs.join("tests/regression/tests"), &mut paths);
    let (mut total, mut passed, mut covered, mut fixed) = (0usize, 0usize, 0usize, 0usize);
    let mut fail_lines = Vec::new();
    let mut dump_lines = Vec::new();
    let t1 = Instant::now();
    for p in &paths {
        if !filter.is_empty() && !p.to_string_lossy().contains(&filter) {
            continue;
        }
        let text = std::fs::read_to_string(p)?;
        let cases = match ftw::parse_file(&text) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("{}: {e}", p.display());
                continue;
            }
        };
        for c in cases {
            total += 1;
            let r = ftw::run_case(&engine, &c);
            if dump.is_some() {
                dump_lines.push(format!("{}-{}\t{}", r.rule_id, r.test_id, r.trace));
            }
            let o = ftw::overridden(&ovr, &r);
            if r.passed {
                passed += 1;
                if o.is_some() {
                    fixed += 1;
                    fail_lines.push(format!(
                        "{}-{}\tPASSES-DESPITE-OVERRIDE",
                        r.rule_id, r.test_id
                    ));
                }
            } else {
                if o.is_some() {
                    covered += 1;
                }
                fail_lines.push(format!(
                    "{}-{}\t{}\t{}",
                    r.rule_id,
                    r.test_id,
                    if o.is_some() { "overridden" } else { "FAIL" },
                    r.reason
                ));
            }
        }
    }
    let run_ms = t1.elapsed().as_millis();
    let pct = |n: usize| {
        if total == 0 {
            0.0
        } else {
            100.0 * n as f64 / total as f64
        }
    };
    println!(
        "rules loaded: {nrules} in {load_ms} ms; tests: {total} in {run_ms} ms\npassed: {passed} ({:.2}%)\npassed or overridden with a reason: {} ({:.2}%)\nunexplained failures: {}\noverrides that now pass: {fixed}",
        pct(passed),
        passed + covered,
        pct(passed + covered),
        total - passed - covered
    );
    if let Some(f) = dump {
        std::fs::write(f, dump_lines.join("\n") + "\n")?;
    }
    if let Some(f) = failures_out {
        std::fs::write(f, fail_lines.join("\n") + "\n")?;
    }
    Ok(())
}
