//! The range itself, on the real kernel: build the topology, load a small hand-written ruleset
//! into the gateway, play blocked and allowed cases over TCP, UDP and ICMP in both families,
//! and check the observations and the counter evidence. Needs root, `ip`, `nft` and `ping`;
//! skips with a printed reason otherwise.

use rampart_lab::scenario::{Expectation, Scenario};
use rampart_lab::topology::{Topology, DEFAULT_TOPOLOGY};
use rampart_lab::{check_requirements, LabRun};

const RULESET: &str = r##"
table inet rampart {
    chain forward {
        type filter hook forward priority filter; policy accept;
        ct state established,related accept
        tcp dport 445 counter drop comment "#0 test-smb-drop"
        udp dport 137 counter reject comment "#1 test-netbios-reject"
        iifname "wan0" icmp type echo-request counter drop comment "#2 test-icmp4-in"
        iifname "wan0" icmpv6 type echo-request counter drop comment "#3 test-icmp6-in"
        tcp dport 80 counter accept comment "#4 test-web"
    }
}
"##;

const SCENARIO: &str = r#"
id = "range-selftest"
techniques = ["T1187"]
summary = "The lab's own machinery."

[[case]]
name = "tcp blocked by drop"
from = "corp-ws1"
to = "public-web"
traffic = "tcp/445"
expect = "blocked"

[[case]]
name = "tcp allowed"
from = "corp-ws1"
to = "public-web"
traffic = "tcp/80"
expect = "allowed"

[[case]]
name = "udp blocked by reject, bridged"
from = "corp-ws1"
to = "corp-ws2"
traffic = "udp/137"
expect = "blocked"

[[case]]
name = "udp allowed to the gateway"
from = "corp-ws1"
to = "gw"
traffic = "udp/5000"
expect = "allowed"

[[case]]
name = "icmp blocked inbound"
from = "attacker"
to = "corp-ws1"
traffic = "icmp/echo"
expect = "blocked"

[[case]]
name = "icmp allowed outbound"
from = "corp-ws1"
to = "public-web"
traffic = "icmp/echo"
expect = "allowed"

[[case]]
name = "metadata host reachable off-link"
from = "admin-ws"
to = "metadata"
traffic = "tcp/80"
expect = "allowed"
"#;

#[test]
fn range_plays_real_traffic_through_the_gateway() {
    if let Err(reason) = check_requirements() {
        eprintln!("skipping: {reason}");
        return;
    }
    // Another run's range (its owner, pid 1, is alive) must survive this run; a crashed run's
    // (its pid cannot exist) must be cleaned up by it.
    let live_other = "rlab-1-rangetest";
    let crashed = "rlab-4294967-rangetest";
    let _other_ranges = NetnsGuard(vec![live_other, crashed]);
    for name in [live_other, crashed] {
        let status = std::process::Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap();
        assert!(status.success(), "ip netns add {name}");
    }
    let scenario = Scenario::parse("range-selftest.toml", SCENARIO).unwrap();
    let board = LabRun {
        topology: Topology::parse(DEFAULT_TOPOLOGY).unwrap(),
        scenarios: vec![scenario],
        ruleset: RULESET,
        policy_name: "selftest".into(),
        keep: false,
        cgroups: None,
        progress: None,
        gateway: rampart_lab::GatewaySetup::default(),
    }
    .run()
    .unwrap();
    let report = board.render_text(false);
    assert!(board.all_passed(), "{report}");
    assert_eq!(board.cases.len(), 14, "{report}");
    let smb = board
        .cases
        .iter()
        .find(|c| c.case == "tcp blocked by drop")
        .unwrap();
    assert_eq!(smb.observed, Expectation::Blocked);
    assert!(
        smb.evidence.iter().any(|e| e.comment == "#0 test-smb-drop"),
        "{report}"
    );
    let reject = board
        .cases
        .iter()
        .find(|c| c.case.starts_with("udp blocked"))
        .unwrap();
    assert!(reject.detail.contains("unreachable"), "{report}");
    assert!(
        reject
            .evidence
            .iter()
            .any(|e| e.comment == "#1 test-netbios-reject"),
        "{report}"
    );
    // Fresh namespaces must not need a second chance: a first attempt that fails for a flow
    // the ruleset allows would mean a blocked expectation could pass for the wrong reason.
    for case in &board.cases {
        assert!(!case.detail.contains("retry"), "{report}");
    }
    // Nothing is left behind.
    let left = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(
        !left.contains(rampart_lab::netns::run_prefix()),
        "namespaces left behind: {left}"
    );
    assert!(left.contains(live_other), "a live run's range was removed");
    assert!(
        !left.contains(crashed),
        "a crashed run's range was left: {left}"
    );
}

/// Namespaces a test created, removed when it ends (also on failure).
struct NetnsGuard(Vec<&'static str>);

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", name])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}
