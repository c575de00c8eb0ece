//! Loading a policy file into the IR, with diagnostics rendered for the terminal, and the other
//! facts about the machine that pure crates take as inputs (today's date, the cgroup2 layout).
//! Every subcommand that takes a policy goes through [`policy`] or [`policy_with_warnings`].

use std::path::Path;

use rampart_ir::Date;

/// A loaded policy and the warnings its validation produced.
pub(crate) struct LoadedPolicy {
    /// The IR.
    pub(crate) policy: rampart_ir::Policy,
    /// Warnings, rendered with file:line:col and the offending text underlined.
    pub(crate) warnings_text: String,
    /// The same warnings as data (for `--json`).
    pub(crate) warnings: Vec<rampart_policy::Diagnostic>,
}

/// Load, validate and lower the policy at `path`. Warnings go to stderr. On invalid input the
/// error carries every diagnostic, rendered with file:line:col and the offending text underlined.
pub(crate) fn policy(path: &Path) -> anyhow::Result<rampart_ir::Policy> {
    let loaded = policy_with_warnings(path)?;
    if !loaded.warnings_text.is_empty() {
        eprint!("{}", loaded.warnings_text);
    }
    Ok(loaded.policy)
}

/// Like [`policy`] but hands the warnings to the caller.
pub(crate) fn policy_with_warnings(path: &Path) -> anyhow::Result<LoadedPolicy> {
    match rampart_policy::load_file(path) {
        Ok(loaded) => Ok(LoadedPolicy {
            warnings_text: rampart_policy::render_all(&loaded.warnings, &loaded.sources),
            warnings: loaded.warnings,
            policy: loaded.policy,
        }),
        Err(err) => Err(anyhow::anyhow!(
            "{}{} is not a valid policy ({} problems)",
            rampart_policy::render_all(&err.diagnostics, &err.sources),
            path.display(),
            err.diagnostics.len()
        )),
    }
}

/// Today's date in UTC, from the system clock (the one place the CLI reads it for analysis).
pub(crate) fn today() -> Date {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Date::from_unix_days((secs / 86_400) as i64)
}

/// Where nft resolves `socket cgroupv2` paths from: `/sys/fs/cgroup` itself on a pure cgroup2
/// host, its `unified` directory on a hybrid v1/v2 host.
pub(crate) fn cgroup2_prefix() -> String {
    let unified = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    let pure = Path::new("/sys/fs/cgroup/cgroup.controllers");
    if !pure.exists() && unified.exists() {
        "unified".into()
    } else {
        String::new()
    }
}

/// nft resolves `socket cgroupv2` paths to cgroup ids when a ruleset loads, so a rule naming a
/// cgroup that does not exist yet makes the whole transaction fail with nft's terse "cgroupv2
/// path fails". Say which rule, where, and what to do instead, before anything is applied.
pub(crate) fn require_owner_cgroups(policy: &rampart_ir::Policy) -> anyhow::Result<()> {
    let root = Path::new("/sys/fs/cgroup").join(cgroup2_prefix());
    let missing = missing_owner_cgroups(policy, &root);
    if missing.is_empty() {
        return Ok(());
    }
    let lines: Vec<String> = missing
        .iter()
        .map(|(rule, path)| {
            let rule = policy.rule(*rule);
            format!(
                "{}: rule `{}` names cgroup `{path}`, which does not exist under {}",
                rule.loc,
                rule.name,
                root.display()
            )
        })
        .collect();
    anyhow::bail!(
        "{}\nnft resolves cgroups when the ruleset loads: start the unit that creates them \
         (or create the cgroup) before applying; nothing was changed",
        lines.join("\n")
    )
}

/// (rule, cgroup) pairs of owner matches whose cgroup directory is absent under `root`.
fn missing_owner_cgroups(
    policy: &rampart_ir::Policy,
    root: &Path,
) -> Vec<(rampart_ir::RuleId, String)> {
    policy
        .rules
        .iter()
        .enumerate()
        .flat_map(|(i, rule)| {
            rule.owner
                .iter()
                .flat_map(|o| o.cgroups.iter())
                .filter(|path| !root.join(path.trim_start_matches('/')).is_dir())
                .map(move |path| (rampart_ir::RuleId(i as u32), path.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_owner_cgroups_are_named_with_their_rule() {
        let root = std::env::temp_dir().join(format!("rampart-cg-{}", std::process::id()));
        std::fs::create_dir_all(root.join("system.slice/present.service")).unwrap();
        let rule = |name: &str, cgroup: &str| rampart_ir::Rule {
            owner: Some(rampart_ir::Owner {
                cgroups: vec![cgroup.into()],
                ..rampart_ir::Owner::default()
            }),
            ..rampart_ir::Rule::new(
                name,
                rampart_ir::Direction::Egress,
                rampart_ir::Action::Accept,
            )
        };
        let policy = rampart_ir::Policy {
            rules: vec![
                rule("ok", "system.slice/present.service"),
                rule("gone", "system.slice/absent.service"),
            ],
            ..rampart_ir::Policy::default()
        };
        let missing = missing_owner_cgroups(&policy, &root);
        std::fs::remove_dir_all(&root).unwrap();
        assert_eq!(
            missing,
            vec![(
                rampart_ir::RuleId(1),
                "system.slice/absent.service".to_string()
            )]
        );
    }
}
