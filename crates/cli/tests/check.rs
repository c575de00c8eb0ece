//! `rampart check` and `rampart coverage` with the real binary on the DoS and
//! application-protocol fields: diagnostics for misuse (exit 2), a SYN proxy behind a blocklist
//! (no finding: the proxy acts at its rule's place), and coverage naming the SYN proxy, ban and app rules as providers.

use std::path::PathBuf;
use std::process::Command;

fn write_policy(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("policy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn rampart(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(args)
        .output()
        .expect("run rampart");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ZONES: &str = r#"
[zones.internet]
interfaces = ["wan0"]

[zones.dmz]
interfaces = ["dmz0"]
networks = ["203.0.113.0/26", "2001:db8:10::/64"]

[sets.blocklist]
elements = ["198.51.100.66", "2001:db8:bad::/48"]
"#;

#[test]
fn misuse_of_synproxy_ban_and_app_is_an_error_with_its_code() {
    let path = write_policy(
        "misuse",
        &format!(
            "{ZONES}\n[[rules]]\nname = \"out\"\ndirection = \"egress\"\nservice = \"tcp/443\"\naction = \"accept\"\nsynproxy = true\n\n[[rules]]\nname = \"b\"\ndirection = \"forward\"\nservice = \"tcp/443\"\naction = \"accept\"\nban = \"10m\"\n\n[[rules]]\nname = \"a\"\ndirection = \"forward\"\napp = [\"shh\"]\naction = \"drop\"\n"
        ),
    );
    let (code, _, err) = rampart(&["check", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{err}");
    for needle in ["E0180", "E0182", "E0184", "did you mean `ssh`?"] {
        assert!(err.contains(needle), "{needle} missing:\n{err}");
    }
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn a_syn_proxy_after_a_blocklist_is_no_finding_and_coverage_names_the_providers() {
    let path = write_policy(
        "preempt",
        &format!(
            r#"{ZONES}
[components]
protocol_classifier = true

[profiles.known-bad]
sets = ["blocklist"]

[profiles.protocol-not-port]

[[rules]]
name = "web-in"
direction = "forward"
from = "internet"
to = "dmz"
service = "tcp/443"
action = "accept"
synproxy = true
limit = {{ rate = "50/second", burst = 100, per_source = true }}
ban = "10m"
"#
        ),
    );
    let p = path.to_str().unwrap();
    let (code, out, err) = rampart(&["check", p]);
    // The blocklist before the proxied rule decides its sources' SYNs: nothing to report
    // (notes only, exit 0).
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(!out.contains("synproxy-"), "{out}");

    let (code, out, err) = rampart(&["coverage", "--json", p]);
    assert!(code == Some(0) || code == Some(1), "{err}");
    let cov: serde_json::Value = serde_json::from_str(&out).expect("coverage JSON");
    let tech = |id: &str| {
        cov["techniques"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .cloned()
            .unwrap()
    };
    let primary = |id: &str| -> Vec<String> {
        tech(id)["primary_rules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(tech("T1499.001")["status"], "enforced");
    assert!(primary("T1499.001").contains(&"web-in".to_string()));
    assert!(primary("T1071.005")
        .iter()
        .any(|r| r == "protocol-not-port/mqtt.forward"));
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
}

#[test]
fn check_run_loads_every_component_configuration_and_names_the_broken_ones() {
    let policy = write_policy("run", &format!("{ZONES}\n"));
    let dir = policy.parent().unwrap().to_path_buf();
    std::fs::write(
        dir.join("r.conf"),
        "SecRule ARGS \"@contains evil\" \"id:10,phase:2,deny,tag:'attack-x'\"\n",
    )
    .unwrap();
    let waf = |exclusion_ids: &str| {
        std::fs::write(
            dir.join("waf.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\nrules = [\"r.conf\"]\n[[routes]]\nname = \"app\"\nupstreams = [\"127.0.0.1:9\"]\n[[exclusions]]\nroute = \"app\"\nrule_ids = [{exclusion_ids}]\n"
            ),
        )
        .unwrap();
    };
    // The WAF resolves its rule files against its working directory; give it an absolute one.
    let waf_abs = |exclusion_ids: &str| {
        waf(exclusion_ids);
        let text = std::fs::read_to_string(dir.join("waf.toml"))
            .unwrap()
            .replace(
                "\"r.conf\"",
                &format!("\"{}\"", dir.join("r.conf").display()),
            );
        std::fs::write(dir.join("waf.toml"), text).unwrap();
    };
    std::fs::write(
        dir.join("run.toml"),
        "policy = \"policy.toml\"\nstate_dir = \"state\"\napply = false\n[[component]]\nkind = \"waf\"\nconfig = \"waf.toml\"\n[[component]]\nkind = \"log\"\n",
    )
    .unwrap();
    let run_toml = dir.join("run.toml");
    let run = run_toml.to_str().unwrap();

    waf_abs("10");
    let (code, out, err) = rampart(&["check", "--run", run, "--json"]);
    assert!(code == Some(0) || code == Some(1), "{code:?} {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let components = report["components"].as_array().unwrap();
    assert_eq!(components.len(), 2, "{report}");
    assert_eq!(components[0]["kind"], "waf");
    assert_eq!(components[0]["ok"], true, "{report}");
    // The same count `rampart waf --check` gives for that configuration.
    let (_, waf_out, _) = rampart(&[
        "waf",
        "--check",
        "--config",
        dir.join("waf.toml").to_str().unwrap(),
    ]);
    let waf_checked: serde_json::Value = serde_json::from_str(&waf_out).unwrap();
    assert_eq!(
        components[0]["summary"],
        format!("ok, {} rules, 0 warnings", waf_checked["rules"]),
        "{report}"
    );
    assert_eq!(components[1]["summary"], "reads the policy");

    // An exclusion that selects no loaded rule: the deployment does not check, and the error
    // names the WAF configuration's file and line.
    waf_abs("\"900-999\"");
    let (code, out, err) = rampart(&["check", "--run", run]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains("waf.toml:6: rule id 900-999 matches no loaded rule"),
        "{out}"
    );
    assert!(
        err.contains("1 component configuration(s) do not load: waf"),
        "{err}"
    );

    // A policy and --run together, or neither, is a usage error.
    let (code, _, _) = rampart(&["check"]);
    assert_eq!(code, Some(2));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_run_reads_the_waf_tls_certificate_and_key() {
    let policy = write_policy("tls", &format!("{ZONES}\n"));
    let dir = policy.parent().unwrap().to_path_buf();
    std::fs::write(
        dir.join("r.conf"),
        "SecRule ARGS \"@contains evil\" \"id:10,phase:2,deny\"\n",
    )
    .unwrap();
    let waf = |cert: &std::path::Path, key: &std::path::Path| {
        std::fs::write(
            dir.join("waf.toml"),
            format!(
                "listen = \"127.0.0.1:0\"\nrules = [\"{}\"]\n[tls]\ncert_pem = \"{}\"\nkey_pem = \"{}\"\n[[routes]]\nname = \"app\"\nupstreams = [\"127.0.0.1:9\"]\n",
                dir.join("r.conf").display(),
                cert.display(),
                key.display()
            ),
        )
        .unwrap();
    };
    std::fs::write(
        dir.join("run.toml"),
        "policy = \"policy.toml\"\nstate_dir = \"state\"\napply = false\n[[component]]\nkind = \"waf\"\nconfig = \"waf.toml\"\n",
    )
    .unwrap();
    let run_toml = dir.join("run.toml");
    let run = run_toml.to_str().unwrap();
    let waf_check = || {
        rampart(&[
            "waf",
            "--check",
            "--config",
            dir.join("waf.toml").to_str().unwrap(),
        ])
    };

    // A certificate file that is not there: the deployment does not check, the error names it,
    // and `rampart waf --check` refuses it too.
    let missing = dir.join("missing-cert.pem");
    waf(&missing, &dir.join("key.pem"));
    let (code, out, err) = rampart(&["check", "--run", run]);
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(
        out.contains(&format!("tls: {}", missing.display())),
        "{out}"
    );
    assert!(
        err.contains("1 component configuration(s) do not load: waf"),
        "{err}"
    );
    let (code, out, err) = waf_check();
    assert_ne!(code, Some(0), "{out}");
    assert!(
        err.contains(&format!("tls: {}", missing.display())),
        "{err}"
    );

    // A file that holds no PEM certificate.
    let junk = dir.join("junk.pem");
    std::fs::write(&junk, "not a certificate\n").unwrap();
    waf(&junk, &junk);
    let (code, out, _) = rampart(&["check", "--run", run]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(&format!(
            "tls: {}: no certificate in the file",
            junk.display()
        )),
        "{out}"
    );

    // With a real certificate: a key file without a key is named, and a good pair checks.
    let have_openssl = Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_openssl {
        eprintln!("skipping the certificate cases: needs the openssl tool");
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
    let gen = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=app.example.test",
            "-keyout",
        ])
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .output()
        .unwrap();
    assert!(
        gen.status.success(),
        "{}",
        String::from_utf8_lossy(&gen.stderr)
    );
    waf(&dir.join("cert.pem"), &junk);
    let (code, out, _) = rampart(&["check", "--run", run]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains(&format!("tls: {}", junk.display())), "{out}");
    waf(&dir.join("cert.pem"), &dir.join("key.pem"));
    let (code, out, err) = rampart(&["check", "--run", run, "--json"]);
    assert!(code == Some(0) || code == Some(1), "{code:?} {out} {err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["components"][0]["ok"], true, "{report}");
    let (code, out, err) = waf_check();
    assert_eq!(code, Some(0), "{out}{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_run_requires_a_component_for_everything_the_policy_enables() {
    // `waf = true` is line 13 of the file (ZONES, a blank line, `[components]`).
    let policy = write_policy(
        "enabled",
        &format!("{ZONES}\n[components]\nwaf = true\nfeeds = true\n"),
    );
    let dir = policy.parent().unwrap().to_path_buf();
    let run_toml = dir.join("run.toml");
    let run = run_toml.to_str().unwrap();
    let write_run = |extra: &str| {
        std::fs::write(
            &run_toml,
            format!("policy = \"policy.toml\"\nstate_dir = \"state\"\napply = false\n{extra}[[component]]\nkind = \"feeds\"\n"),
        )
        .unwrap();
    };

    // The policy enables the WAF and nothing runs it: exit 2, naming it and where it is enabled.
    write_run("");
    let (code, out, err) = rampart(&["check", "--run", run]);
    assert_eq!(code, Some(2), "{out}{err}");
    let policy_str = policy.to_str().unwrap();
    assert!(
        err.contains(&format!(
            "the policy enables `waf` ({policy_str}:13) but the run configuration runs no component for it"
        )),
        "{err}"
    );
    assert!(!err.contains("`feeds`"), "{err}");

    // Declared to run elsewhere: the deployment checks.
    write_run("elsewhere = [\"waf\"]\n");
    let (code, out, err) = rampart(&["check", "--run", run]);
    assert!(code == Some(0) || code == Some(1), "{code:?} {out}{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
