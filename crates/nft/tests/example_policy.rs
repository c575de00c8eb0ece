//! Golden test for the example policy `examples/m1037-baseline/policy.toml`, compiled through
//! the real policy front-end. Regenerate with `UPDATE_GOLDEN=1`. When root with nft, the
//! expected ruleset is kernel-checked (`unshare -n nft -c -f`); `socket cgroupv2` matches are
//! stripped for that check when their cgroup does not exist on this machine (nft resolves the
//! path at load time).

use std::path::Path;
use std::process::Command;

use rampart_ir::Date;
use rampart_nft::{emit, EmitOptions};

#[test]
fn m1037_baseline_compiles_to_the_golden_ruleset() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rel = "examples/m1037-baseline/policy.toml";
    if !root.join(rel).exists() {
        eprintln!("skipping: {rel} not present");
        return;
    }
    // Relative path so the comments (file:line) do not depend on the checkout location.
    std::env::set_current_dir(&root).unwrap();
    let loaded = match rampart_policy::load_file(Path::new(rel)) {
        Ok(l) => l,
        Err(e) => panic!(
            "example policy does not load: {} diagnostics",
            e.diagnostics.len()
        ),
    };
    let opts = EmitOptions {
        today: Some(Date {
            year: 2026,
            month: 11,
            day: 27,
        }),
        ..EmitOptions::default()
    };
    let text = emit(&loaded.policy, &opts).unwrap();
    assert_eq!(
        emit(&loaded.policy, &opts).unwrap(),
        text,
        "not deterministic"
    );
    // Every rule shows up by index: as a verdict comment, or as an expired/never-matches note.
    for i in 0..loaded.policy.rules.len() {
        assert!(
            text.contains(&format!("\"#{i} ")) || text.contains(&format!(": #{i} ")),
            "rule #{i} missing"
        );
    }
    // The golden records the IR it was made from, so a failure says whether the example (or a
    // profile) changed or the emitter did; either way the diff must be reviewed and recorded.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/example_m1037_baseline");
    let golden = dir.join("expected.nft");
    let ir = serde_json::to_string_pretty(&loaded.policy).unwrap() + "\n";
    if std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&golden, &text).unwrap();
        std::fs::write(dir.join("ir.json"), &ir).unwrap();
    } else {
        let recorded_ir = std::fs::read_to_string(dir.join("ir.json")).unwrap_or_default();
        assert!(
            recorded_ir == ir,
            "the example's IR changed since {} was recorded: review with UPDATE_GOLDEN=1 and the diff",
            golden.display()
        );
        let want = std::fs::read_to_string(&golden).expect("golden missing: UPDATE_GOLDEN=1");
        assert!(
            want == text,
            "example ruleset differs from {} (UPDATE_GOLDEN=1 to review):\n{text}",
            golden.display()
        );
    }

    let root_user = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    let nft = Command::new("nft")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !root_user || !nft {
        eprintln!("skipping nft -c: needs root and nft");
        return;
    }
    let mut checked = String::new();
    let mut stripped = 0;
    for line in text.lines() {
        let mut l = line.to_string();
        while let Some(start) = l.find("socket cgroupv2 level ") {
            let rest = &l[start..];
            let q1 = rest.find('"').unwrap();
            let q2 = q1 + 1 + rest[q1 + 1..].find('"').unwrap();
            let path = &rest[q1 + 1..q2];
            if Path::new("/sys/fs/cgroup").join(path).exists() {
                break;
            }
            l = format!("{}{}", &l[..start], &rest[q2 + 2..]);
            stripped += 1;
        }
        checked.push_str(&l);
        checked.push('\n');
    }
    if stripped > 0 {
        eprintln!(
            "note: {stripped} socket cgroupv2 match(es) stripped for nft -c (cgroup absent here)"
        );
    }
    let tmp = std::env::temp_dir().join(format!("rampart-example-{}.nft", std::process::id()));
    std::fs::write(&tmp, &checked).unwrap();
    let out = Command::new("unshare")
        .args(["-n", "nft", "-c", "-f"])
        .arg(&tmp)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&tmp);
    assert!(
        out.status.success(),
        "nft -c rejected the example: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Comments carry the policy's path (`file:line`); loaded from a long absolute path every
/// comment must still fit nft's 127-byte limit, or the kernel refuses the whole ruleset.
#[test]
fn comments_fit_nft_limit_when_the_policy_path_is_long() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/m1037-baseline");
    if !src.join("policy.toml").exists() {
        eprintln!("skipping: examples/m1037-baseline not present");
        return;
    }
    let dir = std::env::temp_dir()
        .join(format!(
            "rampart-long-{}-{}",
            std::process::id(),
            "p".repeat(60)
        ))
        .join("a-variant-of-the-baseline-with-a-long-directory-name");
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&src).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let loaded = rampart_policy::load_file(&dir.join("policy.toml"));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    let loaded = loaded.unwrap_or_else(|e| panic!("{} diagnostics", e.diagnostics.len()));
    let text = emit(&loaded.policy, &EmitOptions::default()).unwrap();
    let mut comments = 0;
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("comment \"") {
            let body = &rest[at + 9..];
            let end = body.find('"').expect("unterminated comment");
            assert!(end <= 127, "{end}-byte comment: {}", &body[..end]);
            comments += 1;
            rest = &body[end + 1..];
        }
    }
    assert!(
        text.contains(": claims its SYNs first\""),
        "no SYN-claim line"
    );
    assert!(comments > 50, "only {comments} comments");
}
