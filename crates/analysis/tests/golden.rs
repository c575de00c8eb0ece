//! Golden tests: hand-built IR policies in, findings and coverage out. Regenerate the expected
//! files with `UPDATE_GOLDEN=1 cargo test -p rampart-analysis --test golden`.

mod golden_util;
mod support;

use golden_util::golden;

use rampart_analysis::{check, coverage, navigator_layer, Detail, Severity, Status};
use rampart_ir::{proto, Action, ComponentKind, Direction, Family, Limit, Policy, RateUnit};
use support::*;

const TODAY: rampart_ir::Date = rampart_ir::Date {
    year: 2026,
    month: 11,
    day: 27,
};

/// A small organisation with a gateway: internet, corp, dmz (public-facing), iot, admin set.
fn small_org() -> Policy {
    let mut b = B::new();
    let internet = b.zone("internet", &["eth0"], &[], false);
    let corp = b.zone(
        "corp",
        &["eth1"],
        &["192.0.2.0/25", "2001:db8:1::/64"],
        true,
    );
    let dmz = b.zone_full(
        "dmz",
        &["eth2"],
        &["198.51.100.0/28", "2001:db8:2::/64"],
        true,
        true,
    );
    let iot = b.zone("iot", &["eth3"], &["192.0.2.128/26"], false);
    let admin = b.set("admin", &["203.0.113.0/29", "2001:db8:ad::/64"]);
    let resolvers = b.set("resolvers", &["203.0.113.53/32", "2001:db8:53::53/128"]);
    b.component(ComponentKind::DnsFilter);

    b.rule(
        "smb-egress/block",
        Direction::Forward,
        vec![],
        vec![internet.clone()],
        vec![
            named(tcp(445), "smb"),
            named(tcp(139), "netbios-ssn"),
            named(udp(137), "netbios-ns"),
        ],
        Action::Drop,
    )
    .mitigates = tech(&["T1187"]);
    b.rule(
        "smb-partner",
        Direction::Forward,
        vec![corp.clone()],
        vec![internet.clone()],
        vec![named(tcp(445), "smb")],
        Action::Accept,
    )
    .mitigates = tech(&["T1187"]);
    b.rule(
        "ssh-admin",
        Direction::Ingress,
        vec![admin.clone()],
        vec![],
        vec![named(tcp(22), "ssh")],
        Action::Accept,
    );
    b.rule(
        "ssh-corp",
        Direction::Ingress,
        vec![corp.clone()],
        vec![],
        vec![named(tcp(22), "ssh")],
        Action::Accept,
    )
    .family = Family::V4;
    b.rule(
        "iot-mqtt",
        Direction::Forward,
        vec![iot.clone()],
        vec![internet.clone()],
        vec![named(tcp(8883), "mqtts")],
        Action::Accept,
    );
    b.rule(
        "rdp-anywhere",
        Direction::Ingress,
        vec![],
        vec![],
        vec![named(tcp(3389), "rdp")],
        Action::Accept,
    );
    b.rule(
        "dmz-out",
        Direction::Forward,
        vec![dmz.clone()],
        vec![internet.clone()],
        vec![],
        Action::Accept,
    );
    b.rule(
        "web-in",
        Direction::Forward,
        vec![internet.clone()],
        vec![dmz.clone()],
        vec![named(tcp(443), "https"), named(tcp(80), "http")],
        Action::Accept,
    );
    b.rule(
        "web-in-again",
        Direction::Forward,
        vec![internet.clone()],
        vec![dmz.clone()],
        vec![named(tcp(443), "https")],
        Action::Accept,
    );
    b.rule(
        "block-ssh-probe",
        Direction::Forward,
        vec![internet.clone()],
        vec![peer_net("198.51.100.0/29")],
        vec![named(tcp(22), "ssh")],
        Action::Drop,
    );
    b.rule(
        "ssh-to-dmz",
        Direction::Forward,
        vec![internet.clone()],
        vec![dmz.clone()],
        vec![named(tcp(22), "ssh")],
        Action::Accept,
    );
    b.rule(
        "vendor-temp",
        Direction::Ingress,
        vec![peer_net("203.0.113.77/32")],
        vec![],
        vec![named(tcp(8443), "https-alt")],
        Action::Accept,
    )
    .expires = Some(date(2026, 11, 1));
    b.rule(
        "audit-temp",
        Direction::Ingress,
        vec![admin.clone()],
        vec![],
        vec![named(tcp(9100), "node-exporter")],
        Action::Accept,
    )
    .expires = Some(date(2026, 12, 5));
    b.rule(
        "telnet-drop",
        Direction::Ingress,
        vec![],
        vec![],
        vec![named(tcp(23), "telnet")],
        Action::Drop,
    );
    b.rule(
        "dns-resolvers",
        Direction::Egress,
        vec![],
        vec![resolvers.clone()],
        vec![named(udp(53), "dns"), named(tcp(53), "dns")],
        Action::Accept,
    );
    b.rule(
        "dns-other",
        Direction::Egress,
        vec![],
        vec![],
        vec![
            named(udp(53), "dns"),
            named(tcp(53), "dns"),
            named(tcp(853), "dot"),
            named(udp(853), "doq"),
        ],
        Action::Drop,
    )
    .mitigates = tech(&["T1071.004"]);
    b.rule(
        "syn-budget",
        Direction::Ingress,
        vec![internet.clone()],
        vec![],
        vec![l4(proto::TCP, &[(443, 443)])],
        Action::Accept,
    )
    .limit = Some(Limit {
        rate: 100,
        per_s: 1,
        burst: 200,
        unit: RateUnit::Packets,
        per_source: true,
    });
    b.rule(
        "https-in",
        Direction::Ingress,
        vec![internet],
        vec![],
        vec![named(tcp(443), "https")],
        Action::Drop,
    );
    b.build()
}

fn peer_net(s: &str) -> rampart_ir::Peer {
    rampart_ir::Peer::Net(net(s))
}

fn stateless_accept() -> Policy {
    let mut b = B::new();
    b.p.defaults.ingress = Action::Accept;
    b.p.defaults.forward = Action::Accept;
    b.p.defaults.stateful = false;
    b.zone_full("dmz", &["eth2"], &["198.51.100.0/28"], true, true);
    b.rule(
        "ssh-in",
        Direction::Ingress,
        vec![],
        vec![],
        vec![tcp(22)],
        Action::Accept,
    );
    // Only packets the stateful prelude decides: with `stateful = false` this still matches.
    b.rule(
        "icmp-v6-only",
        Direction::Ingress,
        vec![],
        vec![],
        vec![l4(proto::ICMP, &[])],
        Action::Accept,
    )
    .family = Family::V6;
    b.build()
}

fn json(v: &impl serde::Serialize) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("serialise");
    s.push('\n');
    s
}

#[test]
fn small_org_check_golden() {
    let p = small_org();
    let report = check(&p, TODAY);
    golden("small_org.check.txt", &report.render_text(&p));
    golden("small_org.check.json", &json(&report));
}

#[test]
fn small_org_coverage_golden() {
    let p = small_org();
    let cov = coverage(&p);
    golden("small_org.coverage.txt", &cov.render_table());
    golden("small_org.coverage.json", &json(&cov));
    golden(
        "small_org.navigator.json",
        &json(&navigator_layer(&cov, "small org")),
    );
}

/// A row that needs a component names the missing components and the enabled ones under
/// different keys: with one key twice, JSON readers keep only the last and lose the other list.
#[test]
fn coverage_json_has_no_duplicate_keys() {
    let p = small_org();
    let text = serde_json::to_string(&coverage(&p)).unwrap();
    let mut needs_component = 0;
    for row in text.split("{\"id\":").skip(1) {
        assert!(row.matches("\"components\":").count() <= 1, "{row}");
        if row.contains("\"needs_component\"") {
            needs_component += 1;
            assert!(row.contains("\"missing_components\":"), "{row}");
        }
    }
    assert!(
        needs_component > 0,
        "the fixture must exercise a needs-component row"
    );
}

#[test]
fn stateless_accept_golden() {
    let p = stateless_accept();
    let report = check(&p, TODAY);
    golden("stateless_accept.check.txt", &report.render_text(&p));
    golden("stateless_accept.check.json", &json(&report));
}

fn codes_for(report: &rampart_analysis::Report, p: &Policy, rule: &str) -> Vec<&'static str> {
    report
        .findings
        .iter()
        .filter(|f| f.rule.is_some_and(|id| p.rule(id).name == rule))
        .map(|f| f.code)
        .collect()
}

#[test]
fn small_org_findings_name_the_right_rules() {
    let p = small_org();
    let r = check(&p, TODAY);
    assert_eq!(codes_for(&r, &p, "smb-partner"), ["shadowed"]);
    let shadowed = r.findings.iter().find(|f| f.code == "shadowed").unwrap();
    assert_eq!(shadowed.severity, Severity::Error);
    assert_eq!(shadowed.loc.to_string(), "policy.toml:10:1");
    let Detail::Overlaps { overlaps, .. } = &shadowed.detail else {
        panic!("shadowed without overlaps")
    };
    assert_eq!(overlaps[0].name, "smb-egress/block");
    assert_eq!(
        overlaps[0].part[0],
        "tcp/445 from corp (192.0.2.0/25 iif eth1) to internet (oif eth0)"
    );
    assert!(r.render_text(&p).contains(
        "tcp/445 from corp (192.0.2.0/25 iif eth1) to internet (oif eth0) is already dropped \
         by rule `smb-egress/block` (policy.toml:9:1)"
    ));
    assert_eq!(codes_for(&r, &p, "ssh-corp"), ["ipv4-only"]);
    assert!(codes_for(&r, &p, "iot-mqtt").contains(&"ipv4-only"));
    assert_eq!(codes_for(&r, &p, "rdp-anywhere"), ["risky-accept"]);
    assert!(codes_for(&r, &p, "dmz-out").contains(&"public-facing-egress"));
    assert_eq!(codes_for(&r, &p, "web-in-again"), ["redundant"]);
    assert_eq!(codes_for(&r, &p, "ssh-to-dmz"), ["partially-shadowed"]);
    assert_eq!(codes_for(&r, &p, "vendor-temp"), ["ipv4-only", "expired"]);
    assert_eq!(codes_for(&r, &p, "audit-temp"), ["expires-soon"]);
    // Default ingress is drop, nothing later accepts telnet: the rule changes nothing.
    assert_eq!(codes_for(&r, &p, "telnet-drop"), ["redundant"]);
    // A rate-limited accept never shadows: the later drop still decides (and, the ingress
    // default being drop, is redundant).
    assert_eq!(codes_for(&r, &p, "https-in"), ["redundant"]);
    assert_eq!(codes_for(&r, &p, "ssh-admin"), Vec::<&str>::new());
    assert!(r
        .findings
        .iter()
        .any(|f| f.code == "zone-ipv4-only" && f.message.contains("`iot`")));
}

#[test]
fn stateless_accept_defaults_and_empty_rules() {
    let p = stateless_accept();
    let r = check(&p, TODAY);
    let codes: Vec<_> = r.findings.iter().map(|f| f.code).collect();
    assert_eq!(
        codes
            .iter()
            .filter(|c| **c == "default-accept-stateless")
            .count(),
        2
    );
    assert!(codes.contains(&"public-facing-egress"));
    assert_eq!(codes_for(&r, &p, "icmp-v6-only"), ["empty-match"]);
}

#[test]
fn coverage_verifies_rules_instead_of_trusting_tags() {
    let p = small_org();
    let cov = coverage(&p);
    let t = |id: &str| cov.techniques.iter().find(|t| t.id == id).unwrap();
    let t1187 = t("T1187");
    assert!(t1187
        .primary_rules
        .iter()
        .any(|r| r.name == "smb-egress/block"));
    assert!(!t1187
        .primary_rules
        .iter()
        .chain(&t1187.incidental_rules)
        .any(|r| r.name == "smb-partner"));
    assert!(t1187.tagged_without_effect[0].starts_with("smb-partner"));
    // Host DNS goes only to the resolvers and the DNS filter is on, but `dmz-out` lets the dmz
    // resolve anywhere, and the rationale says so.
    assert_eq!(t("T1071.004").status, Status::Partial);
    assert!(t("T1071.004")
        .rationale
        .contains("rule `dmz-out` accepts part of it"));
    // `dns-resolvers` narrows DNS but is not tagged for T1071.004: incidental.
    assert!(t("T1071.004")
        .incidental_rules
        .iter()
        .any(|r| r.name == "dns-resolvers"));
    // No L2 guard.
    assert_eq!(
        t("T1557.002").status,
        Status::NeedsComponent(vec![ComponentKind::L2Guard])
    );
    // dmz-out lets the public-facing zone reach the internet.
    assert!(matches!(t("T1190").status, Status::NeedsComponent(_)));
    // RDP is accepted from anywhere on ingress: remote-desktop (egress) unaffected, VNC is
    // dropped by the ingress default.
    assert_eq!(t("T1021.005").status, Status::Enforced);
    assert_eq!(cov.techniques.len(), 50);
}

#[test]
fn coverage_of_a_tagged_but_shadowed_rule_does_not_count() {
    let mut b = B::new();
    let internet = b.zone("internet", &["eth0"], &[], false);
    b.p.defaults.egress = Action::Accept;
    b.p.defaults.forward = Action::Accept;
    b.rule(
        "allow-all-out",
        Direction::Egress,
        vec![],
        vec![],
        vec![],
        Action::Accept,
    );
    b.rule(
        "smb-block",
        Direction::Egress,
        vec![],
        vec![internet],
        vec![tcp(445), tcp(139), udp(137)],
        Action::Drop,
    )
    .mitigates = tech(&["T1187"]);
    let p = b.build();
    let cov = coverage(&p);
    let t = cov.techniques.iter().find(|t| t.id == "T1187").unwrap();
    assert_eq!(t.status, Status::NotCovered);
    assert!(t.tagged_without_effect[0].contains("never decides"));
    let r = check(&p, TODAY);
    assert_eq!(codes_for(&r, &p, "smb-block"), ["shadowed"]);
}

#[test]
fn navigator_layer_has_the_4_5_shape() {
    let cov = coverage(&small_org());
    let layer = navigator_layer(&cov, "small org");
    validate_layer(&layer).unwrap();
    // A broken layer is rejected, so the validator is not vacuous.
    let mut broken = layer.clone();
    broken["techniques"][0]["score"] = serde_json::json!("high");
    assert!(validate_layer(&broken).is_err());
    let mut broken = layer;
    broken["versions"]["layer"] = serde_json::json!("4.4");
    assert!(validate_layer(&broken).is_err());
}

/// Checks the keys and types ATT&CK Navigator's layer format 4.5 defines for what we emit.
fn validate_layer(v: &serde_json::Value) -> Result<(), String> {
    use serde_json::Value;
    let obj = v.as_object().ok_or("layer is not an object")?;
    let s = |o: &serde_json::Map<String, Value>, k: &str| -> Result<String, String> {
        o.get(k)
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or(format!("`{k}` missing or not a string"))
    };
    let is_color = |c: &str| {
        c.len() == 7 && c.starts_with('#') && c[1..].chars().all(|x| x.is_ascii_hexdigit())
    };
    s(obj, "name")?;
    if s(obj, "domain")? != "enterprise-attack" {
        return Err("domain".into());
    }
    let versions = obj
        .get("versions")
        .and_then(Value::as_object)
        .ok_or("versions")?;
    if s(versions, "layer")? != "4.5" {
        return Err("layer version".into());
    }
    s(versions, "attack")?;
    s(versions, "navigator")?;
    for k in [
        "hideDisabled",
        "showTacticRowBackground",
        "selectTechniquesAcrossTactics",
    ] {
        obj.get(k)
            .and_then(Value::as_bool)
            .ok_or(format!("`{k}` not a bool"))?;
    }
    let sorting = obj
        .get("sorting")
        .and_then(Value::as_u64)
        .ok_or("sorting")?;
    if sorting > 3 {
        return Err("sorting out of range".into());
    }
    let gradient = obj
        .get("gradient")
        .and_then(Value::as_object)
        .ok_or("gradient")?;
    let colors = gradient
        .get("colors")
        .and_then(Value::as_array)
        .ok_or("gradient.colors")?;
    if colors.len() < 2 || !colors.iter().all(|c| c.as_str().is_some_and(is_color)) {
        return Err("gradient colors".into());
    }
    gradient
        .get("minValue")
        .and_then(Value::as_f64)
        .ok_or("minValue")?;
    gradient
        .get("maxValue")
        .and_then(Value::as_f64)
        .ok_or("maxValue")?;
    for item in obj
        .get("legendItems")
        .and_then(Value::as_array)
        .ok_or("legendItems")?
    {
        let item = item.as_object().ok_or("legend item")?;
        s(item, "label")?;
        if !is_color(&s(item, "color")?) {
            return Err("legend color".into());
        }
    }
    for m in obj
        .get("metadata")
        .and_then(Value::as_array)
        .ok_or("metadata")?
    {
        let m = m.as_object().ok_or("metadata item")?;
        s(m, "name")?;
        s(m, "value")?;
    }
    let techniques = obj
        .get("techniques")
        .and_then(Value::as_array)
        .ok_or("techniques")?;
    if techniques.len() != 50 {
        return Err(format!("{} techniques", techniques.len()));
    }
    for t in techniques {
        let t = t.as_object().ok_or("technique")?;
        let id = s(t, "techniqueID")?;
        if !id.starts_with('T') || rampart_attack::lookup(&id).is_none() {
            return Err(format!("unknown technique {id}"));
        }
        let score = t
            .get("score")
            .and_then(Value::as_f64)
            .ok_or("score not a number")?;
        if !(0.0..=100.0).contains(&score) {
            return Err("score range".into());
        }
        if !is_color(&s(t, "color")?) {
            return Err("technique color".into());
        }
        s(t, "comment")?;
        t.get("enabled").and_then(Value::as_bool).ok_or("enabled")?;
        if let Some(show) = t.get("showSubtechniques") {
            show.as_bool().ok_or("showSubtechniques")?;
        }
        if t.contains_key("tactic") {
            s(t, "tactic")?;
        }
    }
    Ok(())
}

#[test]
fn owners_conntrack_and_limits_are_treated_conservatively() {
    use rampart_ir::{CtState, Owner};
    let mut b = B::new();
    let internet = b.zone("internet", &["eth0"], &[], false);
    let root = Owner {
        uids: vec![0],
        gids: vec![],
        cgroups: vec![],
    };
    let web = Owner {
        uids: vec![],
        gids: vec![33],
        cgroups: vec![],
    };
    b.rule(
        "root-https",
        Direction::Egress,
        vec![],
        vec![internet.clone()],
        vec![tcp(443)],
        Action::Accept,
    )
    .owner = Some(root.clone());
    // Same owner, same packets: covered.
    b.rule(
        "root-https-again",
        Direction::Egress,
        vec![],
        vec![internet.clone()],
        vec![tcp(443)],
        Action::Drop,
    )
    .owner = Some(root);
    // A different owner constraint may match other sockets: not shadowed.
    b.rule(
        "web-https",
        Direction::Egress,
        vec![],
        vec![internet.clone()],
        vec![tcp(443)],
        Action::Drop,
    )
    .owner = Some(web);
    // No owner constraint: more than any owner-scoped rule covers.
    b.rule(
        "any-https",
        Direction::Egress,
        vec![],
        vec![internet.clone()],
        vec![tcp(443)],
        Action::Drop,
    );
    // Only established packets: the stateful prelude accepts them before any rule.
    b.rule(
        "established-only",
        Direction::Ingress,
        vec![],
        vec![],
        vec![tcp(22)],
        Action::Accept,
    )
    .ct_states = vec![CtState::Established];
    b.rule(
        "limited-accept",
        Direction::Ingress,
        vec![internet.clone()],
        vec![],
        vec![tcp(80)],
        Action::Accept,
    )
    .limit = Some(Limit {
        rate: 10,
        per_s: 1,
        burst: 0,
        unit: RateUnit::Packets,
        per_source: false,
    });
    b.rule(
        "http-accept",
        Direction::Ingress,
        vec![internet],
        vec![],
        vec![tcp(80)],
        Action::Accept,
    );
    let p = b.build();
    let r = check(&p, TODAY);
    assert_eq!(codes_for(&r, &p, "root-https-again"), ["shadowed"]);
    assert!(!codes_for(&r, &p, "web-https").contains(&"shadowed"));
    assert!(!codes_for(&r, &p, "any-https").contains(&"shadowed"));
    assert!(!codes_for(&r, &p, "any-https").contains(&"redundant"));
    assert_eq!(codes_for(&r, &p, "established-only"), ["empty-match"]);
    // The limited accept may not match, so the unlimited one still decides...
    assert!(codes_for(&r, &p, "http-accept").is_empty());
    // ...and the limited one is redundant: the later accept takes whatever it lets through.
    assert_eq!(codes_for(&r, &p, "limited-accept"), ["redundant"]);
}
