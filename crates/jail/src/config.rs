//! The jail's configuration: which programs, which cgroups. Pure: parsing and validation only.

use std::collections::BTreeSet;
use std::path::PathBuf;

use rampart_ir::TechniqueId;
use serde::Deserialize;

use crate::JailError;

/// Most programs one jail handles.
pub const MAX_PROGRAMS: usize = 256;
/// Most paths (hard links count once anyway) per program.
pub const MAX_PATHS_PER_PROGRAM: usize = 64;
/// Most SHA-256 digests per program.
const MAX_DIGESTS_PER_PROGRAM: usize = 64;
/// Most mounts watched for copies.
const MAX_WATCH_MOUNTS: usize = 16;
/// Longest program name (it becomes a cgroup directory name).
const MAX_NAME_BYTES: usize = 64;
/// Deepest cgroup root (in path components).
const MAX_ROOT_COMPONENTS: usize = 4;

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
        raw.validate()
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cgroup_root: Option<String>,
    #[serde(default)]
    watch_mounts: Vec<PathBuf>,
    #[serde(default)]
    program: Vec<RawProgram>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProgram {
    name: String,
    #[serde(default)]
    paths: Vec<PathBuf>,
    #[serde(default)]
    sha256: Vec<String>,
    #[serde(default)]
    mitigates: Vec<String>,
}

fn err(msg: impl Into<String>) -> JailError {
    JailError::Config(msg.into())
}

impl RawConfig {
    fn validate(self) -> Result<Config, JailError> {
        let cgroup_root = self.cgroup_root.unwrap_or_else(|| "rampart.jail".into());
        validate_cgroup_root(&cgroup_root)?;
        if self.watch_mounts.len() > MAX_WATCH_MOUNTS {
            return Err(err(format!(
                "watch_mounts: at most {MAX_WATCH_MOUNTS} mounts"
            )));
        }
        for mount in &self.watch_mounts {
            if !mount.is_absolute() {
                return Err(err(format!(
                    "watch_mounts: `{}` is not an absolute path",
                    mount.display()
                )));
            }
        }
        if self.program.is_empty() {
            return Err(err(
                "no [[program]]: a jail with nothing to jail is a mistake",
            ));
        }
        if self.program.len() > MAX_PROGRAMS {
            return Err(err(format!("at most {MAX_PROGRAMS} programs")));
        }
        let mut names = BTreeSet::new();
        let mut programs = Vec::with_capacity(self.program.len());
        for raw in self.program {
            let program = raw.validate()?;
            if !names.insert(program.name.clone()) {
                return Err(err(format!("program `{}` is declared twice", program.name)));
            }
            programs.push(program);
        }
        let any_digest = programs.iter().any(|p| !p.sha256.is_empty());
        if !self.watch_mounts.is_empty() && !any_digest {
            return Err(err(
                "watch_mounts is set but no program has sha256: nothing could match a copy",
            ));
        }
        if any_digest && self.watch_mounts.is_empty() {
            let named = programs
                .iter()
                .find(|p| !p.sha256.is_empty())
                .map(|p| p.name.clone());
            return Err(err(format!(
                "program `{}` has sha256 but watch_mounts is empty: copies would never be seen",
                named.unwrap_or_default()
            )));
        }
        Ok(Config {
            cgroup_root,
            watch_mounts: self.watch_mounts,
            programs,
        })
    }
}

impl RawProgram {
    fn validate(self) -> Result<Program, JailError> {
        let name = self.name;
        if name.is_empty()
            || name.len() > MAX_NAME_BYTES
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return Err(err(format!(
                "program name `{name}`: 1-{MAX_NAME_BYTES} characters of a-z, 0-9, '-', '_'"
            )));
        }
        if self.paths.is_empty() && self.sha256.is_empty() {
            return Err(err(format!("program `{name}`: give paths, sha256 or both")));
        }
        if self.paths.len() > MAX_PATHS_PER_PROGRAM {
            return Err(err(format!(
                "program `{name}`: at most {MAX_PATHS_PER_PROGRAM} paths"
            )));
        }
        for path in &self.paths {
            if !path.is_absolute() {
                return Err(err(format!(
                    "program `{name}`: path `{}` is not absolute",
                    path.display()
                )));
            }
        }
        if self.sha256.len() > MAX_DIGESTS_PER_PROGRAM {
            return Err(err(format!(
                "program `{name}`: at most {MAX_DIGESTS_PER_PROGRAM} sha256 digests"
            )));
        }
        let sha256 = self
            .sha256
            .iter()
            .map(|hex| {
                parse_sha256(hex).ok_or_else(|| {
                    err(format!(
                        "program `{name}`: sha256 `{hex}` is not 64 hex digits"
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mitigates = self
            .mitigates
            .into_iter()
            .map(|id| {
                if rampart_attack_like_id(&id) {
                    Ok(TechniqueId(id))
                } else {
                    Err(err(format!(
                        "program `{name}`: `{id}` is not an ATT&CK technique id (T1234 or T1234.001)"
                    )))
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Program {
            name,
            paths: self.paths,
            sha256,
            mitigates,
        })
    }
}

fn validate_cgroup_root(root: &str) -> Result<(), JailError> {
    let components: Vec<&str> = root.split('/').collect();
    let valid = !root.is_empty()
        && components.len() <= MAX_ROOT_COMPONENTS
        && components.iter().all(|c| {
            !c.is_empty()
                && *c != "."
                && *c != ".."
                && c.len() <= MAX_NAME_BYTES
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        });
    if valid {
        Ok(())
    } else {
        Err(err(format!(
            "cgroup_root `{root}`: a relative path of 1-{MAX_ROOT_COMPONENTS} components of \
             letters, digits, '.', '-', '_'"
        )))
    }
}

fn rampart_attack_like_id(id: &str) -> bool {
    let Some(rest) = id.strip_prefix('T') else {
        return false;
    };
    let (main, sub) = match rest.split_once('.') {
        Some((main, sub)) => (main, Some(sub)),
        None => (rest, None),
    };
    main.len() == 4
        && main.bytes().all(|b| b.is_ascii_digit())
        && sub.is_none_or(|s| s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit()))
}

fn parse_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
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
