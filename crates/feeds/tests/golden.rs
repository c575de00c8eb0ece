//! Golden check reports for the committed corpus (`fuzz-corpus/`): format detection, counts,
//! normalised elements and every line error, as pretty JSON in `tests/golden/<file>.json`.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p rampart-feeds --test golden`.

use std::path::Path;

use rampart_feeds::check_bytes;

#[test]
fn corpus_reports_match_golden() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut names: Vec<String> = std::fs::read_dir(root.join("fuzz-corpus"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut failures = Vec::new();
    for name in names {
        let data = std::fs::read(root.join("fuzz-corpus").join(&name)).unwrap();
        let allow = ["192.0.2.128/25".parse().unwrap()];
        let text = match check_bytes(&data, &name, None, &allow) {
            Some(r) => serde_json::to_string_pretty(&r).unwrap() + "\n",
            None => "null\n".to_string(),
        };
        let golden = root.join("tests/golden").join(format!("{name}.json"));
        if update {
            std::fs::create_dir_all(golden.parent().unwrap()).unwrap();
            std::fs::write(&golden, &text).unwrap();
            continue;
        }
        match std::fs::read_to_string(&golden) {
            Ok(want) if want == text => {}
            Ok(want) => failures.push(format!(
                "{name}: differs\n--- want\n{want}\n+++ got\n{text}"
            )),
            Err(_) => failures.push(format!("{name}: missing {}", golden.display())),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
