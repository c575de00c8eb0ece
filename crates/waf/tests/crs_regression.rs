//! CRS v4 regression tests (go-ftw YAML) through the engine, when the shared data is present:
//! a sample of rule files must pass completely, except the cases listed with a reason in
//! `ftw-overrides.yaml`. The full run is `bench/waf-ftw.sh`.

use std::path::PathBuf;

use rampart_waf::{files, ftw, Engine, RuleSet};

fn crs_dir() -> Option<PathBuf> {
    let base = std::env::var_os("RAMPART_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data"));
    let crs = base.join("waf/crs");
    crs.join("rules").is_dir().then_some(crs)
}

fn engine(crs: &std::path::Path) -> Engine {
    engine_with(crs, ftw::CRS_TEST_SETTINGS)
}

fn engine_with(crs: &std::path::Path, settings: &str) -> Engine {
    let mut rs = RuleSet::new();
    files::add_files(&mut rs, &[crs.join("crs-setup.conf.example")]).unwrap();
    files::add_inline(&mut rs, "settings.conf", settings, crs).unwrap();
    files::add_files(&mut rs, &[crs.join("rules/*.conf")]).unwrap();
    rs.finish().unwrap();
    // CRS v4 needs no Unicode-mode regex; the only note is the test settings' removal of
    // 910000, a CRS 3 rule that v4 no longer has (the exclusion is reported, not silent).
    assert!(
        rs.warnings
            .iter()
            .all(|w| w.contains("ctl:ruleRemoveById names no loaded rule ([(910000, 910000)])")),
        "{:?}",
        rs.warnings
    );
    Engine::new(rs)
}

#[test]
fn crs_loads_and_sample_passes() {
    let Some(crs) = crs_dir() else {
        eprintln!("skipping: CRS data not found (set RAMPART_SHARED_DATA)");
        return;
    };
    let e = engine(&crs);
    assert!(e.rules.rule_count() > 600, "{}", e.rules.rule_count());
    let ovr = ftw::parse_overrides(include_str!("../ftw-overrides.yaml")).unwrap();
    let tests = crs.join("tests/regression/tests");
    let sample = [
        "REQUEST-920-PROTOCOL-ENFORCEMENT/920181.yaml",
        "REQUEST-920-PROTOCOL-ENFORCEMENT/920100.yaml",
        "REQUEST-920-PROTOCOL-ENFORCEMENT/920430.yaml",
        "REQUEST-934-APPLICATION-ATTACK-GENERIC/934110.yaml",
        "REQUEST-941-APPLICATION-ATTACK-XSS/941100.yaml",
        "REQUEST-942-APPLICATION-ATTACK-SQLI/942100.yaml",
        "REQUEST-942-APPLICATION-ATTACK-SQLI/942430.yaml",
        "REQUEST-944-APPLICATION-ATTACK-JAVA/944120.yaml",
        "RESPONSE-951-DATA-LEAKAGES-SQL/951110.yaml",
    ];
    let (mut ran, mut failed) = (0, Vec::new());
    for f in sample {
        let p = tests.join(f);
        let Ok(text) = std::fs::read_to_string(&p) else {
            // The shared copy holds part of the suite; a held-out file is not an error.
            eprintln!("skipping {f}: not in this copy");
            continue;
        };
        for case in ftw::parse_file(&text).unwrap() {
            ran += 1;
            let r = ftw::run_case(&e, &case);
            if !r.passed && ftw::overridden(&ovr, &r).is_none() {
                failed.push(format!("{}-{}: {}", r.rule_id, r.test_id, r.reason));
            }
        }
    }
    assert!(ran > 20, "only {ran} cases ran");
    assert!(failed.is_empty(), "{failed:#?}");
}

/// Constant folding (rules that read only TX values no request can change are evaluated
/// once, when the engine is built) changes no case's outcome: every case of every third
/// test file gives the same statuses and matched rules (logged or not) as the engine that
/// evaluates every rule, under the CRS test settings (DetectionOnly, paranoia 4) and under
/// paranoia 1 blocking (where the paranoia gates skip).
#[test]
fn folding_changes_no_outcome() {
    let Some(crs) = crs_dir() else {
        eprintln!("skipping: CRS data not found (set RAMPART_SHARED_DATA)");
        return;
    };
    let mut files = Vec::new();
    for dir in std::fs::read_dir(crs.join("tests/regression/tests")).unwrap() {
        for f in std::fs::read_dir(dir.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "yaml") {
                files.push(p);
            }
        }
    }
    files.sort();
    let cases: Vec<ftw::Case> = files
        .iter()
        .step_by(3)
        .flat_map(|p| ftw::parse_file(&std::fs::read_to_string(p).unwrap()).unwrap())
        .collect();
    assert!(cases.len() > 500, "only {} cases", cases.len());
    let pl1 = "SecRuleEngine On\nSecAction \"id:900000,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=1\"\n";
    for (name, settings) in [
        ("test settings", ftw::CRS_TEST_SETTINGS),
        ("PL1 blocking", pl1),
    ] {
        let folded = engine_with(&crs, settings);
        let reference = engine_with(&crs, settings).without_folding();
        assert!(
            folded.folded_rules() > 100,
            "{name}: {}",
            folded.folded_rules()
        );
        for case in &cases {
            let (a, b) = (
                ftw::run_case(&folded, case),
                ftw::run_case(&reference, case),
            );
            assert_eq!(a.trace, b.trace, "{name}: {}-{}", a.rule_id, a.test_id);
        }
    }
}
