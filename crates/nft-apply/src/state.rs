//! The state directory (`/run/rampart` by default; `RAMPART_STATE_DIR` or `--state-dir`).
//!
//! Files (all written atomically with temp + rename):
//! * `applied.nft`: the transaction Rampart applied last.
//! * `applied.json`: the rule map of that apply ([`RuleMap`]), for `status` and `log`.
//! * `previous.nft`: the restore transaction for the state before the last apply or rollback
//!   (the byte-exact `nft list table` output wrapped in create+delete, or just the delete when the
//!   table was absent).
//! * `pending.json`: an apply awaiting `rampart confirm` ([`Pending`]). Confirm renames it to
//!   `confirmed.json`; the watcher renames it to `rolling.json` before restoring. Whoever renames
//!   first wins, so confirm and rollback can never both happen.
//! * `history.log`: one line per transition, for humans.

use std::path::{Path, PathBuf};

use rampart_ir::Policy;
use serde::{Deserialize, Serialize};

use crate::runner::write_atomic;
use crate::ApplyError;

/// The state directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    /// Its path.
    pub root: PathBuf,
}

/// Default location.
pub const DEFAULT_STATE_DIR: &str = "/run/rampart";

/// Why: state files are small; a multi-gigabyte one is corrupt or hostile.
const MAX_JSON_BYTES: u64 = 64 * 1024 * 1024;

impl StateDir {
    /// A state directory at `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// From `--state-dir`, else `RAMPART_STATE_DIR`, else `/run/rampart`.
    pub fn resolve(flag: Option<&Path>) -> Self {
        if let Some(p) = flag {
            return Self::new(p);
        }
        match std::env::var_os("RAMPART_STATE_DIR") {
            Some(p) if !p.is_empty() => Self::new(PathBuf::from(p)),
            _ => Self::new(DEFAULT_STATE_DIR),
        }
    }

    /// Path of a file in the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Read a text file, `None` when absent.
    pub fn read(&self, name: &str) -> Result<Option<String>, ApplyError> {
        let path = self.file(name);
        match std::fs::read_to_string(&path) {
            Ok(t) => Ok(Some(t)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ApplyError::State {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// Write a text file atomically.
    pub fn write(&self, name: &str, text: &str) -> Result<(), ApplyError> {
        write_atomic(&self.file(name), text)
    }

    /// Read and parse a JSON file, `None` when absent.
    pub fn read_json<T: for<'de> Deserialize<'de>>(
        &self,
        name: &str,
    ) -> Result<Option<T>, ApplyError> {
        let path = self.file(name);
        match std::fs::metadata(&path) {
            Ok(m) if m.len() > MAX_JSON_BYTES => {
                return Err(ApplyError::CorruptState {
                    path: path.display().to_string(),
                    reason: format!("{} bytes", m.len()),
                })
            }
            _ => {}
        }
        let Some(text) = self.read(name)? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ApplyError::CorruptState {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Write a JSON file atomically.
    pub fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), ApplyError> {
        let text = serde_json::to_string_pretty(value).map_err(|e| ApplyError::CorruptState {
            path: self.file(name).display().to_string(),
            reason: e.to_string(),
        })?;
        self.write(name, &(text + "\n"))
    }

    /// Atomically rename `from` to `to`; `Ok(false)` when `from` does not exist.
    pub fn claim(&self, from: &str, to: &str) -> Result<bool, ApplyError> {
        match std::fs::rename(self.file(from), self.file(to)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(ApplyError::State {
                path: self.file(from).display().to_string(),
                source,
            }),
        }
    }

    /// Append a line to `history.log` (best effort: history is for humans).
    pub fn log(&self, line: &str) {
        use std::io::Write;
        let _ = std::fs::create_dir_all(&self.root);
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file("history.log"))
        {
            let _ = writeln!(f, "{} {line}", unix_now());
        }
    }
}

/// Seconds since the epoch (this is the I/O shell: it may read the clock).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An apply awaiting confirmation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// Apply id.
    pub id: String,
    /// Unix time (ms) after which the watcher restores `previous.nft`.
    pub deadline_unix_ms: u128,
    /// The nft table.
    pub table: String,
}

/// One policy rule as the kernel knows it: its index (in comments and log prefixes), name,
/// location, techniques.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleInfo {
    /// Index in the IR (`#N` in comments, `rampart:N:` in log prefixes).
    pub index: u32,
    /// Rule name.
    pub name: String,
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: u32,
    /// Source column.
    pub col: u32,
    /// Technique ids.
    pub techniques: Vec<String>,
    /// `accept`, `drop`, `reject`.
    pub action: String,
    /// `ingress`, `egress`, `forward`.
    pub direction: String,
}

/// The rule map written at apply time.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleMap {
    /// nft table.
    pub table: String,
    /// Rules by index.
    pub rules: Vec<RuleInfo>,
}

impl RuleMap {
    /// The map of `policy`.
    pub fn from_policy(policy: &Policy, table: &str) -> Self {
        Self {
            table: table.to_string(),
            rules: policy
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| RuleInfo {
                    index: i as u32,
                    name: r.name.clone(),
                    file: r.loc.file.clone(),
                    line: r.loc.line,
                    col: r.loc.col,
                    techniques: r.mitigates.iter().map(|t| t.0.clone()).collect(),
                    action: r.action.as_str().to_string(),
                    direction: r.direction.as_str().to_string(),
                })
                .collect(),
        }
    }

    /// The rule with index `i`.
    pub fn get(&self, i: u32) -> Option<&RuleInfo> {
        self.rules.iter().find(|r| r.index == i)
    }
}
