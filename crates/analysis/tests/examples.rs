//! The repository's example policies through the real front-end (`rampart-policy`) and the
//! analysis: golden check/coverage output, and the findings `examples/broken-semantic` exists
//! to provoke. Regenerate with `UPDATE_GOLDEN=1`.

mod golden_util;

use std::path::PathBuf;

use golden_util::golden;
use rampart_analysis::{check, coverage, navigator_layer, Detail, Status};

const TODAY: rampart_ir::Date = rampart_ir::Date {
    year: 2026,
    month: 11,
    day: 27,
};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Loads an example with paths relative to the workspace root, so locations in the output do
/// not depend on where the checkout lives.
fn load(rel: &str) -> Option<rampart_policy::Loaded> {
    let root = workspace_root();
    if !root.join(rel).exists() {
        eprintln!("skipping: {rel} not present");
        return None;
    }
    let loaded =
        rampart_policy::load_with(rel, &mut |p: &str| std::fs::read_to_string(root.join(p)));
    match loaded {
        Ok(l) => Some(l),
        Err(e) => panic!("{rel} does not load:\n{e}"),
    }
}

#[test]
fn baseline_check_and_coverage_golden() {
    let Some(l) = load("examples/m1037-baseline/policy.toml") else {
        return;
    };
    let report = check(&l.policy, TODAY);
    golden("baseline.check.txt", &report.render_text(&l.policy));
    let cov = coverage(&l.policy);
    golden("baseline.coverage.txt", &cov.render_table());
    let mut layer =
        serde_json::to_string_pretty(&navigator_layer(&cov, "m1037-baseline")).expect("serialise");
    layer.push('\n');
    golden("baseline.navigator.json", &layer);
    // The baseline enables the DNS filter, WAF, egress proxy, L2 guard and feeds; the
    // techniques that only need a component must not be reported as missing one that is on.
    for t in &cov.techniques {
        if let Status::NeedsComponent(kinds) = &t.status {
            for k in kinds {
                assert!(
                    !l.policy.components.iter().any(|c| c.kind == *k),
                    "{} says it needs {k:?}, which the baseline enables",
                    t.id
                );
            }
        }
    }
}

#[test]
fn broken_semantic_findings_with_locations() {
    let Some(l) = load("examples/broken-semantic/policy.toml") else {
        return;
    };
    let p = &l.policy;
    let report = check(p, TODAY);
    let text = report.render_text(p);
    golden("broken_semantic.check.txt", &text);
    let mut json = serde_json::to_string_pretty(&report).expect("serialise");
    json.push('\n');
    golden("broken_semantic.check.json", &json);
    let find = |code: &str, rule: &str| {
        report
            .findings
            .iter()
            .find(|f| f.code == code && f.rule.is_some_and(|id| p.rule(id).name == rule))
            .unwrap_or_else(|| panic!("no `{code}` finding for `{rule}`:\n{text}"))
    };
    let shadowed = find("shadowed", "corp-to-web-shadowed");
    assert!(shadowed.loc.file.ends_with("broken-semantic/policy.toml"));
    assert!(shadowed.loc.line > 0);
    let Detail::Overlaps { overlaps, .. } = &shadowed.detail else {
        panic!("shadowed finding without overlaps")
    };
    assert_eq!(overlaps[0].name, "corp-to-dmz");
    assert!(overlaps[0].loc.line > 0 && overlaps[0].loc.line < shadowed.loc.line);
    find("redundant", "web-in-again");
    let v4 = find("ipv4-only", "iot-ntp-v4-only");
    assert!(v4.loc.line > 0);
    find("risky-accept", "guest-smb");
    find("public-facing-egress", "dmz-out");
    find("expired", "old-vendor-access");
    assert!(text.contains(
        "is already accepted by rule `corp-to-dmz` (examples/broken-semantic/policy.toml:"
    ));
    let cov = coverage(p);
    golden("broken_semantic.coverage.txt", &cov.render_table());
}
