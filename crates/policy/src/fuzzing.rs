//! Fuzzing entry points (STYLE P7): the logic lives here so stable proptest tests and a
//! future `cargo fuzz` target (one line calling [`check_text`]) share it. Each function panics
//! only when an invariant of the front-end is broken, which is what a fuzzer looks for.

use rampart_ir::{Policy, RuleOrigin, SetSource, SourceLoc};

use crate::{load_with, render_all, to_toml};

/// The policy with everything the printer cannot carry cleared: source locations, service
/// display names (and the duplicates that only they told apart), rule origins, profile uses,
/// set file origins, jail, program and `[l2]` locations, and the `/` of profile rule names ([`crate::print::flat_rule_name`]).
pub fn normalize(policy: &Policy) -> Policy {
    let mut p = policy.clone();
    let blank = SourceLoc::default();
    for z in &mut p.zones {
        z.loc = blank.clone();
    }
    for s in &mut p.sets {
        s.loc = blank.clone();
        if let SetSource::File { .. } = s.source {
            s.source = SetSource::Inline;
        }
    }
    for r in &mut p.rules {
        r.loc = blank.clone();
        r.origin = RuleOrigin::User;
        r.name = crate::print::flat_rule_name(&r.name);
        let mut services = Vec::with_capacity(r.services.len());
        for mut m in std::mem::take(&mut r.services) {
            m.service = None;
            // Two alternatives that differed only by display name are one once it is gone.
            if !services.contains(&m) {
                services.push(m);
            }
        }
        r.services = services;
    }
    for c in &mut p.components {
        c.loc = blank.clone();
    }
    if let Some(j) = &mut p.jail {
        j.loc = blank.clone();
        for program in &mut j.programs {
            program.loc = blank.clone();
        }
    }
    if let Some(l2) = &mut p.l2 {
        l2.loc = blank.clone();
    }
    p.defaults.loc = blank;
    p.profiles.clear();
    p
}

/// Load `text` as a single policy file (every include resolves to the same text, so include
/// handling is exercised too) and check the invariants:
///
/// * loading never panics, and neither does rendering its diagnostics;
/// * success carries no error diagnostics, failure carries at least one;
/// * every label points at a real line of a loaded file;
/// * a loaded policy that prints ([`to_toml`]) loads again to the same policy (normalised), and
///   printing that gives the same text (a fixed point).
pub fn check_text(text: &str) {
    let mut read = |_: &str| Ok::<String, std::io::Error>(text.to_string());
    match load_with("fuzz.toml", &mut read) {
        Ok(loaded) => {
            assert!(loaded.warnings.iter().all(|d| !d.is_error()));
            check_labels(&loaded.warnings, &loaded.sources);
            let _ = render_all(&loaded.warnings, &loaded.sources);
            check_round_trip(&loaded.policy);
        }
        Err(e) => {
            assert!(e.diagnostics.iter().any(|d| d.is_error()));
            check_labels(&e.diagnostics, &e.sources);
            let _ = e.to_string();
        }
    }
}

/// Print, reload, compare; print again, compare text.
pub fn check_round_trip(policy: &Policy) {
    let Ok(printed) = to_toml(policy) else {
        return;
    };
    let mut read = |_: &str| Ok::<String, std::io::Error>(printed.clone());
    let reloaded = match load_with("printed.toml", &mut read) {
        Ok(l) => l.policy,
        Err(e) => panic!("printed policy does not load:\n{e}\n--- printed\n{printed}"),
    };
    assert_eq!(
        normalize(policy),
        normalize(&reloaded),
        "round trip changed the policy; printed:\n{printed}"
    );
    let once = to_toml(&normalize(policy)).unwrap_or_default();
    let twice = to_toml(&normalize(&reloaded)).unwrap_or_default();
    assert_eq!(once, twice, "printing is not a fixed point");
}

fn check_labels(diags: &[crate::Diagnostic], sources: &crate::SourceMap) {
    for d in diags {
        for l in &d.labels {
            let file = sources
                .by_name(&l.loc.file)
                .unwrap_or_else(|| panic!("label in unknown file {}", l.loc.file));
            assert!(l.loc.line >= 1 && l.loc.col >= 1 && l.len >= 1);
            assert!(
                file.line(l.loc.line).is_some() || file.text().is_empty(),
                "label beyond the end of {}: {:?}",
                l.loc.file,
                l.loc
            );
        }
    }
}
