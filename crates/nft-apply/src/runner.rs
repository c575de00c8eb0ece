//! Running `nft`, optionally inside a named network namespace (`ip netns exec NS nft …`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::ApplyError;

/// How to reach `nft`.
#[derive(Clone, Debug)]
pub struct Nft {
    /// The nft binary.
    pub program: PathBuf,
    /// Run inside this named network namespace (tests); `None`: the caller's namespace.
    pub netns: Option<String>,
}

impl Default for Nft {
    fn default() -> Self {
        Self {
            program: PathBuf::from("nft"),
            netns: None,
        }
    }
}

impl Nft {
    /// The runner for namespace `ns`.
    pub fn in_netns(ns: &str) -> Self {
        Self {
            netns: Some(ns.to_string()),
            ..Self::default()
        }
    }

    fn command(&self, program: &Path) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// Run nft with `args`, feeding `stdin`; stdout on success.
    pub fn run(
        &self,
        action: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ApplyError> {
        self.run_program(&self.program.clone(), action, args, stdin)
    }

    /// Run another program (`iptables-nft-restore`, `sysctl`) in the same namespace as nft.
    pub fn run_program(
        &self,
        program: &Path,
        action: &'static str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, ApplyError> {
        let mut cmd = self.command(program);
        cmd.args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|source| ApplyError::Spawn {
            program: program.display().to_string(),
            source,
        })?;
        if let Some(text) = stdin {
            if let Some(mut pipe) = child.stdin.take() {
                // A write error shows up as nft's own failure below.
                let _ = pipe.write_all(text.as_bytes());
            }
        }
        let out = child
            .wait_with_output()
            .map_err(|source| ApplyError::Spawn {
                program: program.display().to_string(),
                source,
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(ApplyError::Nft {
                action,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            })
        }
    }

    /// `nft -c -f FILE`: kernel validation without committing.
    pub fn check_file(&self, path: &Path) -> Result<(), ApplyError> {
        self.run("check", &["-c", "-f", &path.display().to_string()], None)
            .map(|_| ())
    }

    /// `nft -f FILE`: one atomic transaction.
    pub fn apply_file(&self, path: &Path) -> Result<(), ApplyError> {
        self.run("apply", &["-f", &path.display().to_string()], None)
            .map(|_| ())
    }

    /// `nft -j -c -f FILE`: kernel validation of a JSON transaction.
    pub fn check_json_file(&self, path: &Path) -> Result<(), ApplyError> {
        self.run(
            "check",
            &["-j", "-c", "-f", &path.display().to_string()],
            None,
        )
        .map(|_| ())
    }

    /// `nft -j -f FILE`: one atomic transaction in JSON.
    pub fn apply_json_file(&self, path: &Path) -> Result<(), ApplyError> {
        self.run("apply", &["-j", "-f", &path.display().to_string()], None)
            .map(|_| ())
    }

    /// `nft list table inet NAME` (full, with set elements) or `None` when absent.
    pub fn list_table(&self, table: &str, terse: bool) -> Result<Option<String>, ApplyError> {
        let mut args = vec![];
        if terse {
            args.push("-t");
        }
        args.extend(["list", "table", "inet", table]);
        match self.run("list", &args, None) {
            Ok(t) => Ok(Some(t)),
            Err(ApplyError::Nft { stderr, .. }) if stderr.contains("No such file or directory") => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// `nft -j list set inet TABLE NAME`.
    pub fn list_set_json(&self, table: &str, set: &str) -> Result<String, ApplyError> {
        self.run("list", &["-j", "list", "set", "inet", table, set], None)
    }
}

/// Write `text` to `path` atomically (temp file + rename), creating the parent directory.
pub fn write_atomic(path: &Path, text: &str) -> Result<(), ApplyError> {
    let err = |source| ApplyError::State {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(text.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)
}
