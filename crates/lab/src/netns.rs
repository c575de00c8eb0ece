//! Network namespaces, veth pairs and bridges for the range, and running code inside them.
//!
//! Every namespace the lab creates is named `rlab-<pid>-<name>` ([`run_prefix`]): two runs on
//! one machine (each its own process) never share a namespace, and a run's leftovers (a crash,
//! `--keep`) are recognised by their owner's pid being gone, so the next run (or `rampart lab
//! down`) removes them without touching a live run's range. Interface names are unaffected:
//! they live inside the namespaces. Nothing here touches the host's own namespace except
//! creating veth peers that are moved into lab namespaces at once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

use crate::LabError;

/// Prefix of every namespace the lab creates (followed by the owning process's pid and `-`).
pub const PREFIX: &str = "rlab-";

/// This process's namespace prefix, `rlab-<pid>-`. One process plays one range at a time.
pub fn run_prefix() -> &'static str {
    static RUN_PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    RUN_PREFIX.get_or_init(|| format!("{PREFIX}{}-", std::process::id()))
}

/// The pid of the run that owns namespace `name` (`rlab-<pid>-…`); None for a name of the
/// fixed-name era (`rlab-gw`) or not the lab's.
pub fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, short) = rest.split_once('-')?;
    if short.is_empty() || pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// Whether process `pid` is alive (its `/proc` entry exists).
fn alive(pid: u32) -> bool {
    std::path::Path::new("/proc").join(pid.to_string()).exists()
}

/// Whether lab namespace `name` is left over: its owner is gone (or it predates per-run
/// names), and it is not this process's own.
pub fn is_stale(name: &str) -> bool {
    if !name.starts_with(PREFIX) || name.starts_with(run_prefix()) {
        return false;
    }
    owner_pid(name).is_none_or(|pid| !alive(pid))
}

/// Run a command and fail with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<Output, LabError> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: format!("{program} {}", args.join(" ")),
            source,
        })?;
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command: format!("{program} {}", args.join(" ")),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output)
}

/// Run a command inside namespace `ns` (full name, with prefix).
pub fn run_in(ns: &str, program: &str, args: &[&str]) -> Result<Output, LabError> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

/// Namespaces created by this run; removed on drop (also on panic unwinding).
#[derive(Debug, Default)]
pub struct Namespaces {
    names: Vec<String>,
    keep: bool,
}

impl Namespaces {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Create namespace `run_prefix() + short` with loopback up, and remember it for teardown.
    pub fn add(&mut self, short: &str) -> Result<String, LabError> {
        let name = format!("{}{short}", run_prefix());
        run("ip", &["netns", "add", &name])?;
        self.names.push(name.clone());
        run_in(&name, "ip", &["link", "set", "lo", "up"])?;
        // Why: duplicate address detection keeps every new link-local address tentative for
        // about a second, so the first IPv6 flows of a fresh range would stall and look
        // blocked. These are this namespace's own sysctls; the host's are untouched.
        run_in(
            &name,
            "sysctl",
            &[
                "-qw",
                "net.ipv6.conf.all.accept_dad=0",
                "net.ipv6.conf.default.accept_dad=0",
            ],
        )?;
        Ok(name)
    }

    /// Leave the namespaces in place when dropped (`rampart lab --keep`).
    pub fn keep(&mut self) {
        self.keep = true;
    }

    /// Names created so far.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        for name in self.names.iter().rev() {
            // Deleting a namespace also deletes the veth ends inside it (and so their peers).
            let _ = Command::new("ip")
                .args(["netns", "del", name])
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Remove every lab namespace left behind by an earlier run whose process is gone (a crash,
/// `--keep`; `rampart lab down`), and this process's own. A live run's range is left alone.
/// Returns the names removed.
pub fn teardown_all() -> Result<Vec<String>, LabError> {
    let listing = run("ip", &["netns", "list"])?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if is_stale(name) || name.starts_with(run_prefix()) {
            run("ip", &["netns", "del", name])?;
            removed.push(name.to_string());
        }
    }
    Ok(removed)
}

/// Run `f` on a new thread that has entered namespace `ns`; sockets it creates live there.
///
/// Only the calling thread's namespace changes with `setns`, so the process and other threads
/// stay where they are.
pub fn in_namespace<T, F>(ns: &str, f: F) -> std::thread::JoinHandle<Result<T, LabError>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, LabError> + Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = File::open(&path).map_err(|source| LabError::Spawn {
            command: format!("open {path}"),
            source,
        })?;
        // SAFETY: `file` is an open namespace file descriptor for the duration of the call, and
        // CLONE_NEWNET only switches this thread's network namespace.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        if rc != 0 {
            return Err(LabError::Spawn {
                command: format!("setns {path}"),
                source: std::io::Error::last_os_error(),
            });
        }
        f()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_are_named_per_run_and_leftovers_are_recognised() {
        let own = format!("{}gw", run_prefix());
        assert_eq!(owner_pid(&own), Some(std::process::id()));
        assert!(
            !is_stale(&own),
            "this run's own namespace is not a leftover"
        );
        // The fixed-name era and a dead owner's range are leftovers.
        assert_eq!(owner_pid("rlab-gw"), None);
        assert_eq!(owner_pid("rlab-corp-ws1"), None);
        assert!(is_stale("rlab-gw"));
        assert!(is_stale("rlab-corp-ws1"));
        // pid_max is at most 2^22: this pid never exists.
        assert!(is_stale("rlab-4294967-gw"));
        // A live process's range (pid 1 always exists) is not.
        assert!(!is_stale("rlab-1-gw"));
        // Not the lab's.
        assert!(!is_stale("other-gw"));
        assert_eq!(owner_pid("rlab-12-"), None);
    }
}
