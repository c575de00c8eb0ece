//! Packaging artefacts are generated from, or checked against, the real CLI: completions and man
//! pages come from the clap definitions, and the systemd unit only uses flags `rampart` has.

use std::process::Command;

fn rampart(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn completions_name_every_subcommand() {
    let out = rampart(&["completions", "bash"]);
    assert!(out.status.success());
    let script = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "check", "compile", "apply", "run", "reload", "events", "lab", "jail", "dns",
    ] {
        assert!(script.contains(sub), "bash completion lacks {sub}");
    }
    assert_eq!(
        rampart(&["completions", "tcsh"]).status.code(),
        Some(2),
        "unknown shell is an error"
    );
}

#[test]
fn man_pages_cover_every_subcommand() {
    let dir = std::env::temp_dir().join(format!("rampart-man-{}", std::process::id()));
    let out = rampart(&["man", "--out", dir.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "rampart.1",
        "rampart-run.1",
        "rampart-apply.1",
        "rampart-feeds-update.1",
        "rampart-jail.1",
    ] {
        let text =
            std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is not a man page"
        );
    }
    let run = std::fs::read_to_string(dir.join("rampart-run.1")).unwrap();
    assert!(run.contains("config"), "rampart-run.1 lacks --config");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn systemd_unit_uses_only_real_flags() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../packaging/systemd/rampart.service"
    ))
    .unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart");
    let words: Vec<&str> = exec.split_whitespace().collect();
    assert!(words[0].ends_with("/rampart"));
    let help = rampart(&[words[1], "--help"]);
    assert!(
        help.status.success(),
        "`rampart {}` is not a subcommand",
        words[1]
    );
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in words.iter().filter(|w| w.starts_with("--")) {
        assert!(help.contains(flag), "rampart {} has no {flag}", words[1]);
    }
    assert!(
        unit.contains("ExecReload=/bin/kill -HUP $MAINPID"),
        "reload must be SIGHUP, which `rampart run` handles"
    );
    for hardening in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "CapabilityBoundingSet=",
        "RestrictAddressFamilies=",
    ] {
        assert!(unit.contains(hardening), "unit lacks {hardening}");
    }
}
