//! The shipped examples: the baseline loads cleanly, the broken copy fails with its findings.

use std::path::Path;

use rampart_ir::{Direction, RuleOrigin};

fn example(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../examples")
        .join(rel)
}

#[test]
fn baseline_loads_without_errors_or_warnings() {
    let loaded = match rampart_policy::load_file(&example("m1037-baseline/policy.toml")) {
        Ok(l) => l,
        Err(e) => panic!("baseline must load:\n{e}"),
    };
    assert!(
        loaded.warnings.is_empty(),
        "{}",
        rampart_policy::render_all(&loaded.warnings, &loaded.sources)
    );
    let p = &loaded.policy;
    assert_eq!(p.zones.len(), 6);
    assert!(p
        .zone_by_name("dmz")
        .is_some_and(|z| p.zone(z).public_facing));
    // Every profile rule names its techniques and profile part.
    for r in &p.rules {
        if let RuleOrigin::Profile { profile, part } = &r.origin {
            assert!(!r.mitigates.is_empty(), "{}", r.name);
            assert_eq!(r.name, format!("{profile}/{part}"));
        }
    }
    assert!(p.profiles.len() >= 10);
    for u in &p.profiles {
        for id in &u.rules {
            assert!(
                matches!(&p.rule(*id).origin, RuleOrigin::Profile { profile, .. } if *profile == u.name)
            );
        }
    }
    // Profile rules come first, user rules after.
    let first_user = p
        .rules
        .iter()
        .position(|r| r.origin == RuleOrigin::User)
        .unwrap();
    assert!(p.rules[first_user..]
        .iter()
        .all(|r| r.origin == RuleOrigin::User));
    assert!(p.rules_in(Direction::Egress).count() > 0);
}
