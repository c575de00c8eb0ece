//! The jail's configuration: which programs, which cgroups. Pure: parsing and validation only.
//! It comes from the jail's own TOML ([`Config::from_toml`]) or from a policy's `[[programs]]`
//! and `[jail]` ([`Config::from_policy`]); both are validated by one implementation, the IR's
//! [`rampart_ir::Jail::check`], so a policy and a `jail.toml` accept exactly the same programs.

use std::path::PathBuf;

use rampart_ir::{jail_limits, Sha256, SourceLoc, TechniqueId};
use serde::Deserialize;

use crate::JailError;

/// Most programs one jail handles.
pub const MAX_PROGRAMS: usize = jail_limits::MAX_PROGRAMS;
/// Most paths (hard links count once anyway) per program.
pub const MAX_PATHS_PER_PROGRAM: usize = jail_limits::MAX_PATHS_PER_PROGRAM;

/// The validated configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Parent cgroup of the per-program cgroups, relative to the cgroup v2 mount
    /// (default `rampart.jail`).
    pub cgroup_root: String,
    /// Mounts on which every exec is checked against the programs' SHA-256 digests (catches
    /// copies). Empty: only the configured paths' inodes are watched.
    pub watch_mounts: Vec<PathBuf>,
    /// The programs.
    pub programs: Vec<Program>,
}

/// One jailed program.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Program {
    /// Name; the cgroup is `<cgroup_root>/<name>`.
    pub name: String,
    /// Executable paths (each path's inode is watched, so hard links are caught).
    pub paths: Vec<PathBuf>,
    /// SHA-256 digests that identify copies of the program on `watch_mounts`.
    pub sha256: Vec<[u8; 32]>,
    /// Techniques jailing this program mitigates (for events).
    pub mitigates: Vec<TechniqueId>,
}

impl Config {
    /// The cgroup of `program`, relative to the cgroup v2 mount: what policy rules put in
    /// `owner.cgroups` (prefixed with the mount's path below `/sys/fs/cgroup`, e.g. `unified/`,
    /// on hybrid hosts).
    pub fn cgroup_of(&self, program: &Program) -> String {
        format!("{}/{}", self.cgroup_root, program.name)
    }

    /// Parse and validate TOML. Unknown keys are errors; every error names the key or program.
    pub fn from_toml(text: &str) -> Result<Self, JailError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| JailError::Config(e.to_string()))?;
        Self::from_jail(&raw.into_ir()?)
    }

    /// The jail a loaded policy declares (its `[[programs]]` and `[jail]`).
    pub fn from_policy(policy: &rampart_ir::Policy) -> Result<Self, JailError> {
        match &policy.jail {
            Some(jail) => Self::from_jail(jail),
            None => Err(err(
                "the policy declares no [[programs]]: a jail with nothing to jail is a mistake",
            )),
        }
    }

    /// Validate an IR jail ([`rampart_ir::Jail::check`]) and take it as the configuration.
    pub fn from_jail(jail: &rampart_ir::Jail) -> Result<Self, JailError> {
        jail.check().map_err(|e| JailError::Config(e.to_string()))?;
        Ok(Config {
            cgroup_root: jail.cgroup_root.clone(),
            watch_mounts: jail.watch_mounts.iter().map(PathBuf::from).collect(),
            programs: jail
                .programs
                .iter()
                .map(|p| Program {
                    name: p.name.clone(),
                    paths: p.paths.iter().map(PathBuf::from).collect(),
                    sha256: p.sha256.iter().map(|d| d.0).collect(),
                    mitigates: p.mitigates.clone(),
                })
                .collect(),
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cgroup_root: Option<String>,
    #[serde(default)]
    watch_mounts: Vec<String>,
    #[serde(default)]
    program: Vec<RawProgram>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    name: String,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    sha256: Vec<String>,
    #[serde(default)]
    mitigates: Vec<String>,
}

fn err(msg: impl Into<String>) -> JailError {
    JailError::Config(msg.into())
}

impl RawConfig {
    /// The IR form; only what the IR cannot represent (a digest that is not hex) is checked
    /// here, the rest by [`rampart_ir::Jail::check`].
    fn into_ir(self) -> Result<rampart_ir::Jail, JailError> {
        // Why: bound the work before converting digests of an oversized list.
        if self.program.len() > MAX_PROGRAMS {
            return Err(err(format!("at most {MAX_PROGRAMS} programs")));
        }
        let programs = self
            .program
            .into_iter()
            .map(|raw| {
                if raw.sha256.len() > jail_limits::MAX_DIGESTS_PER_PROGRAM {
                    return Err(err(format!(
                        "program `{}`: at most {} sha256 digests",
                        raw.name,
                        jail_limits::MAX_DIGESTS_PER_PROGRAM
                    )));
                }
                let sha256 = raw
                    .sha256
                    .iter()
                    .map(|hex| {
                        Sha256::from_hex(hex).ok_or_else(|| {
                            err(format!(
                                "program `{}`: sha256 `{hex}` is not 64 hex digits",
                                raw.name
                            ))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(rampart_ir::Program {
                    name: raw.name,
                    paths: raw.paths,
                    sha256,
                    mitigates: raw.mitigates.into_iter().map(TechniqueId).collect(),
                    loc: SourceLoc::default(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rampart_ir::Jail {
            cgroup_root: self
                .cgroup_root
                .unwrap_or_else(|| jail_limits::DEFAULT_CGROUP_ROOT.into()),
            watch_mounts: self.watch_mounts,
            programs,
            loc: SourceLoc::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
cgroup_root = "rampart.jail"
[[program]]
name = "verclsid"
paths = ["/usr/local/bin/verclsid"]
mitigates = ["T1218.012"]
"#;

    #[test]
    fn accepts_a_minimal_config_and_names_the_cgroup() {
        let config = Config::from_toml(GOOD).unwrap();
        assert_eq!(config.programs.len(), 1);
        assert_eq!(
            config.cgroup_of(&config.programs[0]),
            "rampart.jail/verclsid"
        );
        assert_eq!(
            config.programs[0].mitigates,
            vec![TechniqueId("T1218.012".into())]
        );
    }

    fn error_of(text: &str) -> String {
        Config::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn rejects_what_would_silently_do_nothing_or_escape() {
        assert!(error_of("cgroup_root = \"x\"\n").contains("nothing to jail"));
        assert!(error_of("[[program]]\nname = \"a\"\n").contains("give paths, sha256"));
        assert!(
            error_of("[[program]]\nname = \"a\"\npaths = [\"rel/bin\"]\n").contains("not absolute")
        );
        assert!(
            error_of("[[program]]\nname = \"A b\"\npaths = [\"/bin/x\"]\n")
                .contains("program name")
        );
        assert!(
            error_of("cgroup_root = \"../x\"\n[[program]]\nname = \"a\"\npaths = [\"/x\"]\n")
                .contains("cgroup_root")
        );
        assert!(
            error_of("cgroup_root = \"/abs\"\n[[program]]\nname = \"a\"\npaths = [\"/x\"]\n")
                .contains("cgroup_root")
        );
        assert!(error_of("[[program]]\nname = \"a\"\npaths = [\"/x\"]\n[[program]]\nname = \"a\"\npaths = [\"/y\"]\n")
            .contains("declared twice"));
        assert!(error_of("[[program]]\nname = \"a\"\nsha256 = [\"zz\"]\n").contains("64 hex"));
        let digest = "ab".repeat(32);
        assert!(error_of(&format!(
            "[[program]]\nname = \"a\"\nsha256 = [\"{digest}\"]\n"
        ))
        .contains("watch_mounts is empty"));
        assert!(
            error_of("watch_mounts = [\"/\"]\n[[program]]\nname = \"a\"\npaths = [\"/x\"]\n")
                .contains("no program has sha256")
        );
        assert!(
            error_of("[[program]]\nname = \"a\"\npaths = [\"/x\"]\nmitigates = [\"X1\"]\n")
                .contains("technique id")
        );
        assert!(
            error_of("colour = 1\n[[program]]\nname = \"a\"\npaths = [\"/x\"]\n")
                .contains("unknown field")
        );
    }

    #[test]
    fn builds_the_same_config_from_a_policy_as_from_its_toml() {
        let digest = "cd".repeat(32);
        let policy_text = format!(
            "[jail]\ncgroup_root = \"rampart.jail\"\nwatch_mounts = [\"/\"]\n\n\
             [[programs]]\nname = \"verclsid\"\npaths = [\"/usr/local/bin/verclsid\"]\n\
             sha256 = [\"{digest}\"]\nmitigates = [\"T1218.012\"]\n\n\
             [[rules]]\nname = \"no-egress\"\ndirection = \"egress\"\naction = \"reject\"\n\
             owner = {{ program = [\"verclsid\"] }}\n"
        );
        let mut read = |_: &str| Ok::<String, std::io::Error>(policy_text.clone());
        let loaded =
            rampart_policy::load_with("policy.toml", &mut read).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        let from_policy = Config::from_policy(&loaded.policy).unwrap();
        let from_toml = Config::from_toml(&format!(
            "watch_mounts = [\"/\"]\n{}sha256 = [\"{digest}\"]\n",
            GOOD.replace("cgroup_root = \"rampart.jail\"\n", "")
        ))
        .unwrap();
        assert_eq!(from_policy, from_toml);
        // The rule names exactly the cgroup the jail puts the program in.
        let cgroup = from_policy.cgroup_of(&from_policy.programs[0]);
        let owner = loaded.policy.rules[0].owner.as_ref().unwrap();
        assert_eq!(owner.cgroups, vec![cgroup]);
    }

    #[test]
    fn a_policy_without_programs_or_with_a_broken_jail_is_refused() {
        let empty = rampart_ir::Policy::default();
        assert!(Config::from_policy(&empty)
            .unwrap_err()
            .to_string()
            .contains("declares no [[programs]]"));
        // A hand-built IR is checked too, not trusted.
        let policy = rampart_ir::Policy {
            jail: Some(rampart_ir::Jail {
                cgroup_root: "../escape".into(),
                watch_mounts: Vec::new(),
                programs: Vec::new(),
                loc: SourceLoc::default(),
            }),
            ..rampart_ir::Policy::default()
        };
        assert!(Config::from_policy(&policy)
            .unwrap_err()
            .to_string()
            .contains("cgroup_root"));
    }

    #[test]
    fn parses_digests_exactly() {
        let digest = format!("{}{}", "00".repeat(31), "fF");
        let text =
            format!("watch_mounts = [\"/\"]\n[[program]]\nname = \"a\"\nsha256 = [\"{digest}\"]\n");
        let config = Config::from_toml(&text).unwrap();
        let mut expected = [0u8; 32];
        expected[31] = 0xff;
        assert_eq!(config.programs[0].sha256, vec![expected]);
    }
}
