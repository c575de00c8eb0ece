//! Helpers the `rampart` binary's namespace tests share: running commands (in a namespace),
//! running a closure on a thread inside a namespace, and guards that remove scratch directories
//! and kill child processes on drop, also when an assertion fails. Each test file includes this
//! module (`mod support;`) and uses the part it needs.

// Every test binary compiles this module and uses only part of it.
#![allow(dead_code)]

use std::io::Write;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

/// Run `program` and require success; the output on failure names the command and its stderr.
pub fn sh(program: &str, args: &[&str]) -> Output {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Run a command in namespace `ns` and require success; its stdout.
pub fn ns_sh(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["netns", "exec", ns];
    full.extend_from_slice(args);
    String::from_utf8_lossy(&sh("ip", &full).stdout).into_owned()
}

/// Run a command in namespace `ns` with `stdin` as its input and require success.
pub fn ns_sh_stdin(ns: &str, args: &[&str], stdin: &str) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}\n{stdin}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run `f` on a thread inside namespace `ns` (sockets it opens live there).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace fd affects only this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}");
        f()
    })
    .join()
    .unwrap()
}

/// Bind a UDP socket to an interface (SO_BINDTODEVICE), e.g. to send link-local multicast.
pub fn bind_to_device(socket: &UdpSocket, dev: &str) {
    // SAFETY: the name is valid for its length; SO_BINDTODEVICE reads that many bytes.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            dev.as_ptr().cast(),
            dev.len() as u32,
        )
    };
    assert_eq!(rc, 0);
}

/// A scratch directory below the temporary directory, removed on drop. Declare it before the
/// processes that use it, so it outlives them.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// `<tmp>/<name>-<pid>`, emptied first.
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Child processes killed (and reaped) on drop.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
