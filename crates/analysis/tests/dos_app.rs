//! Analysis of the DoS and application-protocol fields: application-protocol rules form their
//! own prelude list (never shadowing or shadowed by first-match rules, only by earlier app
//! rules that match every label they match), and coverage recognises SYN proxies, bans and
//! app rules as the providers of the DoS and protocol-not-port rows.

use rampart_analysis::{check, coverage, Status};
use rampart_ir::{Date, Policy};

const TODAY: Date = Date {
    year: 2026,
    month: 11,
    day: 27,
};

fn load(text: &str) -> Policy {
    let mut read = |_: &str| Ok::<String, std::io::Error>(text.to_string());
    match rampart_policy::load_with("p.toml", &mut read) {
        Ok(l) => l.policy,
        Err(e) => panic!("{e}"),
    }
}

const ZONES: &str = r#"
[zones.internet]
interfaces = ["wan0"]

[zones.dmz]
interfaces = ["dmz0"]
networks = ["203.0.113.0/26", "2001:db8:10::/64"]
"#;

fn findings_of(policy: &Policy, rule: &str) -> Vec<String> {
    let report = check(policy, TODAY);
    report
        .findings
        .iter()
        .filter(|f| f.rule.is_some_and(|id| policy.rule(id).name == rule))
        .map(|f| format!("{}: {}", f.code, f.message))
        .collect()
}

#[test]
fn app_rules_and_first_match_rules_never_shadow_each_other() {
    let p = load(&format!(
        r#"{ZONES}
[components]
protocol_classifier = true

[[rules]]
name = "drop-all"
direction = "forward"
action = "drop"

[[rules]]
name = "no-ssh-offport"
direction = "forward"
service = "tcp/2000-3000"
app = "ssh"
action = "drop"

[[rules]]
name = "web-in"
direction = "forward"
to = "dmz"
service = "tcp/443"
action = "accept"
"#
    ));
    // The app rule comes after a drop-everything rule but is a prelude step: not shadowed.
    assert!(
        findings_of(&p, "no-ssh-offport").is_empty(),
        "{:?}",
        findings_of(&p, "no-ssh-offport")
    );
    // The first-match accept is shadowed by drop-all, not by the app rule.
    let web = findings_of(&p, "web-in");
    assert!(
        web.iter()
            .any(|f| f.starts_with("shadowed") && f.contains("drop-all")),
        "{web:?}"
    );
    assert!(!web.iter().any(|f| f.contains("no-ssh-offport")), "{web:?}");
}

#[test]
fn app_rules_shadow_each_other_only_when_the_labels_are_covered() {
    let p = load(&format!(
        r#"{ZONES}
[components]
protocol_classifier = true

[[rules]]
name = "no-remote-offport"
direction = "forward"
service = "tcp/2000-3000"
app = ["ssh", "rdp"]
action = "drop"

[[rules]]
name = "ssh-ok"
direction = "forward"
service = "tcp/2222"
app = "ssh"
action = "accept"

[[rules]]
name = "vnc-offport"
direction = "forward"
service = "tcp/2000-3000"
app = "vnc"
action = "drop"

[[rules]]
name = "not-dns"
direction = "forward"
service = "udp/53"
app_not = "dns"
action = "drop"

[[rules]]
name = "ssh-on-53"
direction = "forward"
service = "udp/53"
app = "ssh"
action = "drop"
"#
    ));
    let ssh = findings_of(&p, "ssh-ok");
    assert!(
        ssh.iter()
            .any(|f| f.starts_with("shadowed") && f.contains("no-remote-offport")),
        "{ssh:?}"
    );
    // Different labels: no overlap in the label dimension, nothing reported.
    assert!(
        findings_of(&p, "vnc-offport").is_empty(),
        "{:?}",
        findings_of(&p, "vnc-offport")
    );
    // `app_not = dns` matches SSH payloads too: the later SSH rule never decides.
    let on53 = findings_of(&p, "ssh-on-53");
    assert!(
        on53.iter()
            .any(|f| f.starts_with("redundant") && f.contains("not-dns")),
        "{on53:?}"
    );
}

#[test]
fn ipv4_only_app_rules_are_family_gaps() {
    let p = load(&format!(
        r#"{ZONES}
[components]
protocol_classifier = true

[[rules]]
name = "no-tunnels-v4"
direction = "forward"
service = "udp/53"
family = "ipv4"
app_not = "dns"
action = "drop"
"#
    ));
    let f = findings_of(&p, "no-tunnels-v4");
    assert!(
        f.iter().any(|f| f.starts_with("ipv4-only")
            && f.contains("non-dns payloads")
            && f.contains("is not inspected")),
        "{f:?}"
    );
}

fn status(p: &Policy, id: &str) -> (Status, Vec<String>, String) {
    let c = coverage(p);
    let t = c.techniques.iter().find(|t| t.id == id).unwrap();
    (
        t.status.clone(),
        t.primary_rules.iter().map(|r| r.name.clone()).collect(),
        t.rationale.clone(),
    )
}

#[test]
fn coverage_recognises_synproxy_bans_and_app_rules() {
    let base = format!(
        r#"{ZONES}
[profiles.syn-flood]
services = ["tcp/443"]
to = ["dmz"]

[profiles.flood-limits]
services = ["tcp/80"]
to = ["dmz"]

[profiles.protocol-not-port]
[profiles.icmp-tunnels]

[profiles.dns-resolvers]
resolvers = ["203.0.113.53", "2001:db8:10::53"]
"#
    );
    let without = load(&base);
    let (s, primary, _) = status(&without, "T1499.001");
    assert_eq!(s, Status::Enforced);
    assert!(
        primary.contains(&"syn-flood/synproxy.forward".to_string()),
        "{primary:?}"
    );
    assert!(
        primary.contains(&"flood-limits/limit.forward".to_string()),
        "{primary:?}"
    );
    let (s, _, _) = status(&without, "T1499.002");
    assert_eq!(s, Status::Enforced);
    // App rules without the classifier do not count.
    let (s, _, why) = status(&without, "T1071.005");
    assert_ne!(s, Status::Enforced);
    assert!(why.contains("protocol_classifier"), "{why}");

    let with = load(&format!(
        "{base}\n[components]\nprotocol_classifier = true\ndns_filter = true\n"
    ));
    let (s, primary, why) = status(&with, "T1572");
    assert_eq!(s, Status::Enforced, "{why}");
    assert!(
        primary.iter().any(|r| r.starts_with("protocol-not-port/")),
        "{primary:?}"
    );
    assert!(
        primary.iter().any(|r| r.starts_with("icmp-tunnels/")),
        "{primary:?}"
    );
    let (_, primary, _) = status(&with, "T1021.005");
    assert!(
        primary.iter().any(|r| r == "protocol-not-port/vnc.forward"),
        "{primary:?}"
    );

    // Without any DoS mechanism the flood rows say what is missing.
    let none = load(ZONES);
    let (s, _, why) = status(&none, "T1499.001");
    assert_eq!(s, Status::NotCovered);
    assert!(why.contains("no SYN proxy"), "{why}");
}

#[test]
fn a_syn_proxy_after_a_deny_is_fine_after_an_accept_it_is_claimed() {
    let p = load(&format!(
        r#"{ZONES}
[sets.blocklist]
elements = ["198.51.100.66", "2001:db8:bad::/48"]

[profiles.known-bad]
sets = ["blocklist"]

[[rules]]
name = "web-in"
direction = "forward"
from = "internet"
to = "dmz"
service = "tcp/443"
action = "accept"
synproxy = true
"#
    ));
    // The proxy acts at its rule's place: the blocklist before it decides its sources' SYNs.
    let f = findings_of(&p, "web-in");
    assert!(!f.iter().any(|f| f.starts_with("synproxy")), "{f:?}");
    // An earlier accept for part of the same traffic takes those SYNs unproxied.
    let q = load(&format!(
        r#"{ZONES}
[[rules]]
name = "partner-https"
direction = "forward"
from = "198.51.100.0/24"
to = "dmz"
service = "tcp/443"
action = "accept"

[[rules]]
name = "web-in"
direction = "forward"
from = "internet"
to = "dmz"
service = "tcp/443"
action = "accept"
synproxy = true
"#
    ));
    let f = findings_of(&q, "web-in");
    assert!(
        f.iter()
            .any(|f| f.starts_with("synproxy-claimed") && f.contains("partner-https")),
        "{f:?}"
    );
}
