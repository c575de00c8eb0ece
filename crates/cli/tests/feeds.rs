//! `rampart feeds update` end to end: a policy with a feed set is compiled and loaded into a
//! network namespace of the test's own, the feed (a local file source) is refreshed into the
//! kernel set, a shrunken new version is refused and the last good one stays enforced, and the
//! policy's own networks are never put in the set. Needs root and nft; skips otherwise.

use std::process::Command;

struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn rampart(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart")
}

fn set_listing(ns: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "table", "inet", "rampart",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn feed_refresh_loads_the_kernel_set_and_keeps_the_last_good_version() {
    if rampart_lab::check_requirements().is_err() {
        eprintln!("skipping: needs root, ip and nft");
        return;
    }
    let dir = std::env::temp_dir().join(format!("rampart-feeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let feed = dir.join("bad.txt");
    let mut lines = String::from("# known-bad hosts\n");
    for i in 1..=40 {
        lines.push_str(&format!("203.0.113.{i}\n"));
    }
    lines.push_str("192.0.2.5\n2001:db8:bad::/48\n");
    std::fs::write(&feed, &lines).unwrap();
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[zones.lan]
interfaces = ["lan0"]
networks = ["192.0.2.0/24", "2001:db8:1::/64"]
trusted = true

[sets.bad]
feed = {{ url = "{}", format = "plain", refresh = "1h" }}

[[rules]]
name = "drop-bad"
direction = "egress"
to = "bad"
action = "drop"
mitigates = ["T1105"]
"#,
            feed.display()
        ),
    )
    .unwrap();
    let ns = Netns(format!("rfeeds-{}", std::process::id()));
    assert!(Command::new("ip")
        .args(["netns", "add", &ns.0])
        .status()
        .unwrap()
        .success());
    let compiled = rampart(&["compile", policy.to_str().unwrap()]);
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ruleset = dir.join("ruleset.nft");
    std::fs::write(&ruleset, &compiled.stdout).unwrap();
    assert!(Command::new("ip")
        .args(["netns", "exec", &ns.0, "nft", "-f"])
        .arg(&ruleset)
        .status()
        .unwrap()
        .success());

    let cache = dir.join("cache");
    let update = |force: bool| {
        let mut args = vec![
            "feeds",
            "update",
            "--policy",
            policy.to_str().unwrap(),
            "--cache-dir",
            cache.to_str().unwrap(),
            "--netns",
            &ns.0,
            "--json",
        ];
        if force {
            args.push("--force");
        }
        rampart(&args)
    };
    let first = update(true);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert!(
        first.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let event: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(event["feed"], "bad", "{stdout}");
    let listing = set_listing(&ns.0);
    assert!(listing.contains("203.0.113.1"), "{listing}");
    assert!(listing.contains("2001:db8:bad::/48"), "{listing}");
    // 192.0.2.5 lies in the policy's own zone: never blocked.
    assert!(!listing.contains("192.0.2.5"), "{listing}");

    // A new version that lost most of its entries is refused; the last good one stays.
    std::fs::write(&feed, "203.0.113.1\n").unwrap();
    let second = update(true);
    assert_eq!(
        second.status.code(),
        Some(1),
        "a refused version is a finding"
    );
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(stdout.contains("refused"), "{stdout}");
    let listing = set_listing(&ns.0);
    assert!(
        listing.contains("203.0.113.40"),
        "last good version lost: {listing}"
    );

    let _ = std::fs::remove_dir_all(&dir);
}
