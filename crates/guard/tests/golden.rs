//! Golden files for the emitted nftables text: the bridge table (with static entries, restored
//! bindings and name-service blocking), binding updates, the host table and the teardown.
//! Regenerate with `UPDATE_GOLDEN=1 cargo test -p rampart-guard --test golden` and review the
//! diff. When `nft` is present and the test runs as root, each ruleset is also loaded for real
//! inside a private network namespace (`unshare -n`), so the kernel accepts what the goldens say.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rampart_guard::decode::Mac;
use rampart_guard::{ruleset, Binding, Binding6, BindingTable, Change, Config};

const CONFIG: &str = r#"
bridge = "br0"
trusted_ports = ["p_srv", "uplink0"]
untrusted_ports = ["p_cli", "p_rog"]
bindings_file = "/var/lib/rampart/guard.bindings"
events_file = "/var/log/rampart/guard.jsonl"
protected_ipv6 = ["fe80::1", "2001:db8::1"]
ipv6_source_guard = true

[rate_limit]
dhcp_per_second = 5
dhcp_burst = 10

[[static_arp]]
ip = "192.0.2.1"
mac = "02:00:00:00:00:01"
port = "p_srv"

[[static_arp]]
ip = "192.0.2.9"
mac = "02:00:00:00:00:09"

[[static_nd]]
ip = "fe80::1"
mac = "02:00:00:00:00:01"
port = "p_srv"

[[static_nd]]
ip = "2001:db8::9"
mac = "02:00:00:00:00:09"

[[trusted_router]]
mac = "02:00:00:00:00:77"
port = "p_cli"

[[trusted_router]]
mac = "02:00:00:00:00:78"

[gateway]
ip = "192.0.2.1"
mac = "02:00:00:00:00:01"
interface = "eth0"

[block]
llmnr = true
nbns = true
"#;

const NOW_S: u64 = 1_800_000_000;

fn golden(name: &str, actual: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(expected, actual, "{name} differs from its golden file");
}

fn binding6() -> Binding6 {
    Binding6 {
        mac: Mac([2, 0, 0, 0, 0, 0x0c]),
        duid: vec![0, 3, 0, 1, 2, 0, 0, 0, 0, 0x0c],
        ip: "2001:db8:1::100".parse().unwrap(),
        port: "p_cli".into(),
        expires_s: NOW_S + 3600,
    }
}

fn table() -> BindingTable {
    let mut t = BindingTable::new(16);
    t.insert(Binding {
        mac: Mac([2, 0, 0, 0, 0, 0x0c]),
        ip: Ipv4Addr::new(192, 0, 2, 100),
        port: "p_cli".into(),
        expires_s: NOW_S + 3600,
    });
    t.v6_mut().insert(binding6());
    t
}

/// Load `text` into a throwaway network namespace when possible (root + nft + unshare).
fn kernel_accepts(text: &str) {
    let is_root = unsafe_free_is_root();
    if !is_root || Command::new("nft").arg("--version").output().is_err() {
        eprintln!("skipping kernel load: needs root and nft");
        return;
    }
    let mut child = Command::new("unshare")
        .args(["-n", "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "kernel refused:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn unsafe_free_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

#[test]
fn bridge_table_golden() {
    let cfg = Config::from_toml(CONFIG).unwrap();
    let text = ruleset::bridge_table(&cfg, &table(), NOW_S).unwrap();
    golden("bridge_table.nft", &text);
    kernel_accepts(&text);
}

#[test]
fn binding_updates_golden() {
    let cfg = Config::from_toml(CONFIG).unwrap();
    let old = table().iter().next().unwrap().clone();
    let new = Binding {
        port: "p_rog".into(),
        expires_s: NOW_S + 60,
        ..old.clone()
    };
    let changes = vec![
        Change::Bind {
            new: new.clone(),
            old: Some(old),
        },
        Change::Unbind(new),
        // An IPv6 renewal moving the address to another port, then its removal.
        Change::Bind6 {
            new: Binding6 {
                port: "p_rog".into(),
                expires_s: NOW_S + 60,
                ..binding6()
            },
            old: Some(binding6()),
        },
        Change::Unbind6(Binding6 {
            port: "p_rog".into(),
            ..binding6()
        }),
    ];
    let text = ruleset::binding_updates(&cfg, &changes, NOW_S).unwrap();
    golden("binding_updates.nft", &text);
    // Updates apply on top of the table, in one transaction with it.
    let full = ruleset::bridge_table(&cfg, &table(), NOW_S).unwrap() + &text;
    kernel_accepts(&full);
}

#[test]
fn host_table_and_teardown_golden() {
    let cfg = Config::from_toml(CONFIG).unwrap();
    let host = ruleset::host_table(&cfg).unwrap();
    golden("host_table.nft", &host);
    let down = ruleset::teardown(&cfg);
    golden("teardown.nft", &down);
    kernel_accepts(&host);
    kernel_accepts(&(host + &down));
    kernel_accepts(&ruleset::teardown(&cfg));
}

#[test]
fn emitting_twice_is_identical() {
    let cfg = Config::from_toml(CONFIG).unwrap();
    assert_eq!(
        ruleset::bridge_table(&cfg, &table(), NOW_S),
        ruleset::bridge_table(&cfg, &table(), NOW_S)
    );
}

/// The configuration reference in docs/guard.md is valid: its TOML block parses and yields a
/// bridge table (so a documented key cannot drift out of the parser, or into the wrong table).
#[test]
fn documented_configuration_parses() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/guard.md");
    let Ok(doc) = std::fs::read_to_string(&path) else {
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    let start = doc.find("```toml\n").expect("a toml block") + "```toml\n".len();
    let len = doc[start..].find("```").expect("end of the toml block");
    let cfg = Config::from_toml(&doc[start..start + len]).unwrap();
    assert_eq!(cfg.static_nd.len(), 1);
    assert_eq!(cfg.trusted_routers.len(), 1);
    assert!(ruleset::bridge_table(&cfg, &BindingTable::new(4), NOW_S).is_some());
}
