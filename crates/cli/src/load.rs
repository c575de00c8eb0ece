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
    date_from_unix_days((secs / 86_400) as i64)
}

/// Civil date of a day count since 1970-01-01 (Howard Hinnant's days-to-civil algorithm).
fn date_from_unix_days(days: i64) -> Date {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    Date {
        year: year as u16,
        month: month as u8,
        day: day as u8,
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_days_to_civil_dates() {
        let d = |y, m, dd| Date {
            year: y,
            month: m,
            day: dd,
        };
        assert_eq!(date_from_unix_days(0), d(1970, 1, 1));
        assert_eq!(date_from_unix_days(59), d(1970, 3, 1));
        assert_eq!(date_from_unix_days(11_016), d(2000, 2, 29));
        assert_eq!(date_from_unix_days(20_784), d(2026, 11, 27));
        assert_eq!(date_from_unix_days(20_819), d(2027, 1, 1));
    }
}
