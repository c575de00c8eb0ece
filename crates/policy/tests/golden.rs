//! Golden tests: each directory under `tests/golden/` holds a `policy.toml` (plus any files it
//! includes or reads) and either `expected.ir.json` (it must load; warnings, if any, go to
//! `expected.warn`) or `expected.err` (it must fail with exactly these diagnostics).
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p rampart-policy --test golden`.

use std::fs;
use std::path::{Path, PathBuf};

fn update() -> bool {
    std::env::var_os("UPDATE_GOLDEN").is_some()
}

/// Compare `actual` with the golden file, or write it when updating.
fn check(path: &Path, actual: &str, failures: &mut Vec<String>) {
    if update() {
        fs::write(path, actual).unwrap();
        return;
    }
    match fs::read_to_string(path) {
        Ok(expected) if expected == actual => {}
        Ok(expected) => {
            let first = expected
                .lines()
                .zip(actual.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(expected.lines().count().min(actual.lines().count()));
            failures.push(format!(
                "{}: differs from line {}\n--- expected\n{}\n--- actual\n{}",
                path.display(),
                first + 1,
                expected
                    .lines()
                    .skip(first)
                    .take(6)
                    .collect::<Vec<_>>()
                    .join("\n"),
                actual
                    .lines()
                    .skip(first)
                    .take(6)
                    .collect::<Vec<_>>()
                    .join("\n"),
            ));
        }
        Err(_) => failures.push(format!(
            "{}: missing (run with UPDATE_GOLDEN=1)",
            path.display()
        )),
    }
}

fn remove_stale(path: &Path, failures: &mut Vec<String>) {
    if path.exists() {
        if update() {
            fs::remove_file(path).unwrap();
        } else {
            failures.push(format!(
                "{}: should not exist for this outcome",
                path.display()
            ));
        }
    }
}

/// Load `policy.toml` of a case with every path resolved inside the case directory.
fn load_case(dir: &Path) -> Result<rampart_policy::Loaded, rampart_policy::LoadError> {
    let mut read = |name: &str| fs::read_to_string(dir.join(name));
    rampart_policy::load_with("policy.toml", &mut read)
}

fn cases() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let mut dirs: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("policy.toml").exists())
        .collect();
    dirs.sort();
    dirs
}

#[test]
fn golden_cases() {
    let mut failures = Vec::new();
    let mut must_fail = 0;
    let dirs = cases();
    for dir in &dirs {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let expect_fail = name.starts_with("fail-");
        match load_case(dir) {
            Ok(loaded) => {
                if expect_fail {
                    failures.push(format!("{name}: loaded but its name says it must fail"));
                }
                let json = serde_json::to_string_pretty(&loaded.policy).unwrap() + "\n";
                check(&dir.join("expected.ir.json"), &json, &mut failures);
                remove_stale(&dir.join("expected.err"), &mut failures);
                if loaded.warnings.is_empty() {
                    remove_stale(&dir.join("expected.warn"), &mut failures);
                } else {
                    let text = rampart_policy::render_all(&loaded.warnings, &loaded.sources);
                    check(&dir.join("expected.warn"), &text, &mut failures);
                }
            }
            Err(e) => {
                must_fail += 1;
                if !expect_fail {
                    failures.push(format!("{name}: failed to load:\n{e}"));
                }
                check(
                    &dir.join("expected.err"),
                    &(e.to_string() + "\n"),
                    &mut failures,
                );
                remove_stale(&dir.join("expected.ir.json"), &mut failures);
                remove_stale(&dir.join("expected.warn"), &mut failures);
            }
        }
    }
    assert!(dirs.len() >= 25, "only {} golden cases", dirs.len());
    assert!(must_fail >= 12, "only {must_fail} must-fail cases");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Loading the same sources twice gives the same IR (no hidden state, no ordering noise).
#[test]
fn loading_is_deterministic() {
    for dir in cases() {
        if let (Ok(a), Ok(b)) = (load_case(&dir), load_case(&dir)) {
            assert_eq!(a.policy, b.policy, "{}", dir.display());
        }
    }
}
