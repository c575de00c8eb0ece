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

/// Load an example with file names relative to the repository root, as `rampart check
/// examples/...` run from the root would name them.
fn load_from_root(rel: &str) -> Result<rampart_policy::Loaded, rampart_policy::LoadError> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut read = |name: &str| std::fs::read_to_string(root.join(name));
    rampart_policy::load_with(rel, &mut read)
}

fn golden(path: &Path, actual: &str) {
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(path)
        .unwrap_or_else(|_| panic!("{} missing (UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(expected, actual, "{} differs", path.display());
}

#[test]
fn broken_example_reports_every_mistake_with_locations() {
    let err = match load_from_root("examples/broken/policy.toml") {
        Ok(_) => panic!("the broken example must not load"),
        Err(e) => e,
    };
    let codes: Vec<&str> = err.diagnostics.iter().map(|d| d.code).collect();
    for code in [
        "E0101", "E0102", "E0104", "E0105", "E0121", "E0130", "E0140", "E0141", "E0142", "E0145",
        "W0201",
    ] {
        assert!(codes.contains(&code), "missing {code} in {codes:?}");
    }
    assert!(err.to_string().contains("did you mean `dmz`?"));
    golden(&example("broken/expected.err"), &(err.to_string() + "\n"));
}

#[test]
fn broken_semantic_example_loads_with_only_the_overlap_warning() {
    let loaded = match load_from_root("examples/broken-semantic/policy.toml") {
        Ok(l) => l,
        Err(e) => panic!("must load:\n{e}"),
    };
    let codes: Vec<&str> = loaded.warnings.iter().map(|d| d.code).collect();
    assert_eq!(codes, vec!["W0201"]);
}
