//! `rampart explain` on the example policy for the prelude steps the engine models: a source
//! over `conn_limit` is banned by the rule that has `ban`, and an ICMP echo carrying a tunnel is
//! dropped by an application-protocol rule, with the steps named in the output.

use std::process::Command;

fn explain(args: &[&str]) -> (bool, String) {
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/m1037-baseline/policy.toml"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["explain", "--policy", policy])
        .args(args)
        .output()
        .expect("run rampart explain");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn conn_limit_refusal_bans_the_source() {
    let flow = "tcp 198.51.100.9:40000 -> 203.0.113.10:443";
    let common = ["--iface-in", "wan0", "--iface-out", "dmz0"];
    let (ok, text) = explain(&[&[flow][..], &common, &["--src-conns", "63"]].concat());
    assert!(ok, "{text}");
    // web-in is proxied: its conn_limit and ban gate the SYNs the proxy answers.
    assert!(
        text.contains("ACCEPT by SYN answered by the SYN proxy (rule #93 web-in"),
        "{text}"
    );
    let (ok, text) = explain(&[&[flow][..], &common, &["--src-conns", "64"]].concat());
    assert!(!ok, "{text}");
    assert!(
        text.contains("DROP by limit exceeded: source banned"),
        "{text}"
    );
    assert!(
        text.contains("syn proxy: SYN refused by conn_limit: source banned"),
        "{text}"
    );
}

#[test]
fn icmp_tunnel_is_dropped_by_an_application_rule() {
    let flow = "icmp 203.0.113.9 -> 198.51.100.80 type echo-request";
    let common = ["--iface-in", "wan0", "--iface-out", "dmz0"];
    let (ok, text) = explain(&[&[flow][..], &common, &["--app", "icmp_tunnel"]].concat());
    assert!(!ok, "{text}");
    assert!(text.contains("DROP by application-protocol rule"), "{text}");
    assert!(text.contains("app:        labelled icmp_tunnel"), "{text}");
    // Unrecognised echo data is not a tunnel: the rules decide as without --app.
    let (_, plain) = explain(&[&[flow][..], &common].concat());
    let (_, unknown) = explain(&[&[flow][..], &common, &["--app", "unknown"]].concat());
    let verdict = |t: &str| {
        t.lines()
            .find(|l| l.starts_with("verdict:"))
            .map(str::to_owned)
    };
    assert_eq!(verdict(&plain), verdict(&unknown));
    let (ok, text) = explain(&[flow, "--app", "bogus"]);
    assert!(
        !ok && text.contains("unknown application protocol"),
        "{text}"
    );
}
