//! Network namespaces, veth pairs and bridges for the range, and running code inside them.
//!
//! Everything the lab creates is named with [`PREFIX`], so `rampart lab down` (and the drop guard
//! of [`Namespaces`]) can find and remove all of it, also after a crash. Nothing here touches the
//! host's own namespace except creating veth peers that are moved into lab namespaces at once.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};

use crate::LabError;

/// Prefix of every namespace the lab creates.
pub const PREFIX: &str = "rlab-";

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

    /// Create namespace `PREFIX + short` with loopback up, and remember it for teardown.
    pub fn add(&mut self, short: &str) -> Result<String, LabError> {
        let name = format!("{PREFIX}{short}");
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

/// Remove every lab namespace left behind by an earlier run (`rampart lab down`). Returns the
/// names removed.
pub fn teardown_all() -> Result<Vec<String>, LabError> {
    let listing = run("ip", &["netns", "list"])?;
    let mut removed = Vec::new();
    for line in String::from_utf8_lossy(&listing.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if name.starts_with(PREFIX) {
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
