//! The shell: cgroupfs, fanotify and `/proc`. Every permission event gets an answer (an exec
//! left unanswered would hang the process forever), and an exec that cannot be jailed is
//! refused rather than let run outside its cgroup.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use rampart_events::{Event, Verdict};
use sha2::{Digest, Sha256};

use crate::{Config, ExecFacts, FileId, Identities, JailError};

/// Bytes read from the fanotify descriptor at once (many events fit).
const EVENT_BUFFER_BYTES: usize = 16 * 1024;
/// Size of `struct fanotify_event_metadata` (FAN_EVENT_METADATA_LEN).
const EVENT_METADATA_BYTES: usize = 24;
/// Largest file hashed to recognise a copy; larger execs are not hashed (and counted).
const MAX_HASHED_FILE_BYTES: u64 = 512 * 1024 * 1024;
/// How long `run` sleeps in `poll` before looking at its stop flag again.
const POLL_INTERVAL_MS: i32 = 200;

/// Counters of a running jail.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct JailStats {
    /// Exec permission events answered.
    pub execs_seen: u64,
    /// Execs of a jailed program moved into its cgroup.
    pub execs_jailed: u64,
    /// Execs refused because the process could not be moved.
    pub execs_refused: u64,
    /// Already running processes moved at startup.
    pub running_jailed: u64,
    /// Files hashed to look for copies.
    pub files_hashed: u64,
    /// Files too large (or unreadable) to hash.
    pub files_not_hashed: u64,
    /// Events lost by the kernel queue (FAN_Q_OVERFLOW).
    pub queue_overflows: u64,
}

/// The cgroup v2 mount point, from `/proc/self/mountinfo`.
pub fn cgroup2_mount() -> Result<PathBuf, JailError> {
    let text = fs::read_to_string("/proc/self/mountinfo").map_err(|_| JailError::NoCgroup2)?;
    for line in text.lines() {
        // mountinfo: "... mount_point options ... - fstype source super_options"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() == Some("cgroup2") {
            if let Some(mount) = left.split_whitespace().nth(4) {
                return Ok(PathBuf::from(mount));
            }
        }
    }
    Err(JailError::NoCgroup2)
}

/// A running exec jail.
pub struct Jail {
    config: Config,
    identities: Identities,
    /// Per program: its cgroup's `cgroup.procs` file.
    procs_files: Vec<PathBuf>,
    fanotify: OwnedFd,
    events: Option<Box<dyn Write + Send>>,
    stats: JailStats,
}

impl std::fmt::Debug for Jail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jail")
            .field("programs", &self.config.programs.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Jail {
    /// Create the cgroups, watch the programs, and move already running instances into their
    /// cgroups. From the moment this returns, every exec of a watched file waits for
    /// [`Jail::run`] to answer it, so call `run` promptly.
    pub fn start(
        config: Config,
        cgroup_mount: &Path,
        events: Option<Box<dyn Write + Send>>,
    ) -> Result<Self, JailError> {
        let mut files = Vec::new();
        for (index, program) in config.programs.iter().enumerate() {
            for path in &program.paths {
                let meta = fs::metadata(path).map_err(|source| JailError::Program {
                    program: program.name.clone(),
                    path: path.clone(),
                    source,
                })?;
                let file = FileId {
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                files.push((index, file, meta.len()));
            }
        }
        let identities = Identities::build(&config, &files);
        let mut procs_files = Vec::with_capacity(config.programs.len());
        for program in &config.programs {
            let dir = cgroup_mount.join(config.cgroup_of(program));
            fs::create_dir_all(&dir).map_err(|source| JailError::Cgroup {
                path: dir.clone(),
                source,
            })?;
            procs_files.push(dir.join("cgroup.procs"));
        }
        let fanotify = fanotify_init()?;
        for program in &config.programs {
            for path in &program.paths {
                fanotify_mark(&fanotify, path, false)?;
            }
        }
        for mount in &config.watch_mounts {
            fanotify_mark(&fanotify, mount, true)?;
        }
        let mut jail = Self {
            config,
            identities,
            procs_files,
            fanotify,
            events,
            stats: JailStats::default(),
        };
        jail.jail_running()?;
        Ok(jail)
    }

    /// Counters so far.
    pub fn stats(&self) -> JailStats {
        self.stats
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Answer exec events until `stop` is set.
    pub fn run(&mut self, stop: &AtomicBool) -> Result<(), JailError> {
        let mut buffer = vec![0u8; EVENT_BUFFER_BYTES];
        while !stop.load(Ordering::Relaxed) {
            let mut poll = libc::pollfd {
                fd: self.fanotify.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `poll` is a valid pollfd for the duration of the call and nfds is 1.
            let ready = unsafe { libc::poll(&mut poll, 1, POLL_INTERVAL_MS) };
            if ready < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(JailError::Fanotify {
                    what: "poll",
                    source: err,
                });
            }
            if ready == 0 {
                continue;
            }
            self.drain(&mut buffer)?;
        }
        Ok(())
    }

    fn drain(&mut self, buffer: &mut [u8]) -> Result<(), JailError> {
        loop {
            // SAFETY: `buffer` is valid for writes of `buffer.len()` bytes.
            let n = unsafe {
                libc::read(
                    self.fanotify.as_raw_fd(),
                    buffer.as_mut_ptr().cast(),
                    buffer.len(),
                )
            };
            if n < 0 {
                let err = io::Error::last_os_error();
                return match err.kind() {
                    io::ErrorKind::WouldBlock => Ok(()),
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(JailError::Fanotify {
                        what: "read",
                        source: err,
                    }),
                };
            }
            let n = n as usize;
            if n == 0 {
                return Ok(());
            }
            let mut offset = 0;
            while offset + EVENT_METADATA_BYTES <= n {
                let Some(meta) = EventMetadata::parse(&buffer[offset..n]) else {
                    break;
                };
                self.handle(&meta)?;
                offset += meta.event_len;
            }
        }
    }

    fn handle(&mut self, meta: &EventMetadata) -> Result<(), JailError> {
        if meta.mask & libc::FAN_Q_OVERFLOW != 0 {
            self.stats.queue_overflows += 1;
        }
        if meta.fd < 0 {
            return Ok(());
        }
        // SAFETY: the kernel handed us this descriptor in the event and nothing else owns it;
        // OwnedFd closes it exactly once when `file` drops.
        let file = unsafe { OwnedFd::from_raw_fd(meta.fd) };
        if meta.mask & libc::FAN_OPEN_EXEC_PERM == 0 {
            return Ok(());
        }
        self.stats.execs_seen += 1;
        let program = self.identify(&file);
        let allow = match program {
            None => true,
            Some(index) => self.jail_pid(index, meta.pid, &file),
        };
        respond(&self.fanotify, file.as_raw_fd(), allow)
    }

    fn identify(&mut self, file: &OwnedFd) -> Option<usize> {
        let stat = fstat(file.as_raw_fd()).ok()?;
        let facts = ExecFacts {
            file: FileId {
                dev: stat.st_dev,
                ino: stat.st_ino,
            },
            size_bytes: u64::try_from(stat.st_size).unwrap_or(0),
        };
        if let Some(index) = self.identities.by_file(facts.file) {
            return Some(index);
        }
        if !self.identities.wants_digest(facts) {
            return None;
        }
        if facts.size_bytes > MAX_HASHED_FILE_BYTES {
            self.stats.files_not_hashed += 1;
            return None;
        }
        match sha256_of(file.as_raw_fd()) {
            Ok(digest) => {
                self.stats.files_hashed += 1;
                self.identities.by_digest(&digest)
            }
            Err(_) => {
                self.stats.files_not_hashed += 1;
                None
            }
        }
    }

    /// Move `pid` into program `index`'s cgroup; true when it is there.
    fn jail_pid(&mut self, index: usize, pid: i32, file: &OwnedFd) -> bool {
        let moved = fs::write(&self.procs_files[index], format!("{pid}\n"));
        let path = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let program = &self.config.programs[index];
        let cgroup = self.config.cgroup_of(program);
        let (verdict, reason) = match &moved {
            Ok(()) => {
                self.stats.execs_jailed += 1;
                (
                    Verdict::Alert,
                    format!(
                        "exec of program `{}` jailed in cgroup {cgroup}",
                        program.name
                    ),
                )
            }
            Err(err) => {
                self.stats.execs_refused += 1;
                (
                    Verdict::Block,
                    format!(
                        "exec of program `{}` refused: cannot move pid {pid} into {cgroup}: {err}",
                        program.name
                    ),
                )
            }
        };
        let mut detail = serde_json::Map::new();
        detail.insert("pid".into(), pid.into());
        detail.insert("program".into(), program.name.clone().into());
        detail.insert("path".into(), path.into());
        detail.insert("cgroup".into(), cgroup.into());
        self.emit("exec", verdict, program.mitigates.clone(), reason, detail);
        moved.is_ok()
    }

    /// Startup: processes already running a watched file (by inode) join their cgroups.
    fn jail_running(&mut self) -> Result<(), JailError> {
        let Ok(entries) = fs::read_dir("/proc") else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            // Kernel threads and processes that exited in the meantime have no readable exe.
            let Ok(meta) = fs::metadata(entry.path().join("exe")) else {
                continue;
            };
            let Some(index) = self.identities.by_file(FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            }) else {
                continue;
            };
            let cgroup = self.config.cgroup_of(&self.config.programs[index]);
            let program = self.config.programs[index].name.clone();
            let mitigates = self.config.programs[index].mitigates.clone();
            match fs::write(&self.procs_files[index], format!("{pid}\n")) {
                Ok(()) => {
                    self.stats.running_jailed += 1;
                    let mut detail = serde_json::Map::new();
                    detail.insert("pid".into(), pid.into());
                    detail.insert("program".into(), program.clone().into());
                    detail.insert("cgroup".into(), cgroup.clone().into());
                    self.emit(
                        "exec",
                        Verdict::Alert,
                        mitigates,
                        format!("running program `{program}` jailed in cgroup {cgroup} at startup"),
                        detail,
                    );
                }
                // It exited between the scan and the move.
                Err(err) if err.raw_os_error() == Some(libc::ESRCH) => {}
                Err(source) => {
                    return Err(JailError::Cgroup {
                        path: self.procs_files[index].clone(),
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn emit(
        &mut self,
        event_type: &str,
        verdict: Verdict,
        techniques: Vec<rampart_ir::TechniqueId>,
        reason: String,
        detail: serde_json::Map<String, serde_json::Value>,
    ) {
        let Some(out) = self.events.as_mut() else {
            return;
        };
        let now_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let event = Event {
            timestamp: rampart_events::rfc3339_utc(now_ns),
            event_type: event_type.into(),
            component: "jail".into(),
            flow: None,
            verdict,
            rule: None,
            techniques,
            reason,
            detail,
        };
        // An event that cannot be written must not hold up the exec being answered; the
        // counters still record it.
        if let Ok(line) = serde_json::to_string(&event) {
            let _ = writeln!(out, "{line}").and_then(|()| out.flush());
        }
    }
}

/// One parsed `struct fanotify_event_metadata`.
struct EventMetadata {
    event_len: usize,
    mask: u64,
    fd: RawFd,
    pid: i32,
}

impl EventMetadata {
    /// Parse the event at the start of `bytes`; `None` if it is truncated, of another version,
    /// or claims a length that does not fit.
    fn parse(bytes: &[u8]) -> Option<Self> {
        let u32_at = |at: usize| {
            bytes
                .get(at..at + 4)
                .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
        };
        let event_len = u32_at(0)? as usize;
        let version = *bytes.get(4)?;
        if version != libc::FANOTIFY_METADATA_VERSION
            || event_len < EVENT_METADATA_BYTES
            || event_len > bytes.len()
        {
            return None;
        }
        let mask_bytes: [u8; 8] = bytes.get(8..16)?.try_into().ok()?;
        Some(Self {
            event_len,
            mask: u64::from_ne_bytes(mask_bytes),
            fd: u32_at(16)? as i32,
            pid: u32_at(20)? as i32,
        })
    }
}

fn fanotify_init() -> Result<OwnedFd, JailError> {
    let flags = libc::FAN_CLASS_CONTENT | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as u32;
    // SAFETY: plain syscall with flag arguments; the result is checked before use.
    let fd = unsafe { libc::fanotify_init(flags, event_flags) };
    if fd < 0 {
        return Err(JailError::Fanotify {
            what: "init",
            source: io::Error::last_os_error(),
        });
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn fanotify_mark(fanotify: &OwnedFd, path: &Path, mount: bool) -> Result<(), JailError> {
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|_| JailError::Fanotify {
        what: "mark",
        source: io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"),
    })?;
    let mut flags = libc::FAN_MARK_ADD;
    if mount {
        flags |= libc::FAN_MARK_MOUNT;
    }
    // SAFETY: `cpath` is a valid NUL-terminated string for the call; the descriptor is ours.
    let rc = unsafe {
        libc::fanotify_mark(
            fanotify.as_raw_fd(),
            flags,
            libc::FAN_OPEN_EXEC_PERM,
            libc::AT_FDCWD,
            cpath.as_ptr(),
        )
    };
    if rc < 0 {
        let source = io::Error::last_os_error();
        return Err(JailError::Fanotify {
            what: if mount { "mark (mount)" } else { "mark" },
            source: io::Error::new(source.kind(), format!("{}: {source}", path.display())),
        });
    }
    Ok(())
}

fn respond(fanotify: &OwnedFd, fd: RawFd, allow: bool) -> Result<(), JailError> {
    let response = libc::fanotify_response {
        fd,
        response: if allow {
            libc::FAN_ALLOW
        } else {
            libc::FAN_DENY
        },
    };
    let size = std::mem::size_of::<libc::fanotify_response>();
    // SAFETY: `response` is a plain repr(C) struct valid for reads of `size` bytes.
    let written = unsafe {
        libc::write(
            fanotify.as_raw_fd(),
            (&response as *const libc::fanotify_response).cast(),
            size,
        )
    };
    if written != size as isize {
        return Err(JailError::Fanotify {
            what: "response",
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
    // SAFETY: `stat` points to writable memory of the right size; fstat fills it on success.
    let rc = unsafe { libc::fstat(fd, stat.as_mut_ptr()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstat returned 0, so it initialised the struct.
    Ok(unsafe { stat.assume_init() })
}

/// SHA-256 of the file behind `fd`, read from offset 0 through a duplicate so the event's
/// descriptor offset does not matter.
fn sha256_of(fd: RawFd) -> io::Result<[u8; 32]> {
    // SAFETY: dup of a descriptor we own for the duration of the call; the duplicate is owned
    // by the File below and closed once.
    let dup = unsafe { libc::dup(fd) };
    if dup < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh descriptor owned by nothing else.
    let mut file = unsafe { fs::File::from_raw_fd(dup) };
    file.seek(SeekFrom::Start(0))?;
    let mut hasher = Sha256::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        hasher.update(&chunk[..n]);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata_bytes(len: u32, version: u8, mask: u64, fd: i32, pid: i32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&len.to_ne_bytes());
        b.push(version);
        b.push(0);
        b.extend_from_slice(&(EVENT_METADATA_BYTES as u16).to_ne_bytes());
        b.extend_from_slice(&mask.to_ne_bytes());
        b.extend_from_slice(&fd.to_ne_bytes());
        b.extend_from_slice(&pid.to_ne_bytes());
        b
    }

    #[test]
    fn parses_event_metadata_and_refuses_bad_lengths() {
        let good = metadata_bytes(
            24,
            libc::FANOTIFY_METADATA_VERSION,
            libc::FAN_OPEN_EXEC_PERM,
            7,
            1234,
        );
        let meta = EventMetadata::parse(&good).unwrap();
        assert_eq!((meta.event_len, meta.fd, meta.pid), (24, 7, 1234));
        assert_eq!(meta.mask, libc::FAN_OPEN_EXEC_PERM);
        assert!(EventMetadata::parse(&good[..20]).is_none());
        let long = metadata_bytes(4096, libc::FANOTIFY_METADATA_VERSION, 0, 7, 1);
        assert!(
            EventMetadata::parse(&long).is_none(),
            "length beyond the buffer"
        );
        let short = metadata_bytes(8, libc::FANOTIFY_METADATA_VERSION, 0, 7, 1);
        assert!(
            EventMetadata::parse(&short).is_none(),
            "length below the header"
        );
        let old = metadata_bytes(24, 2, 0, 7, 1);
        assert!(EventMetadata::parse(&old).is_none(), "other version");
    }

    #[test]
    fn finds_a_cgroup2_mount_here() {
        // Every supported host has one; on this machine it is /sys/fs/cgroup/unified.
        let mount = cgroup2_mount().unwrap();
        assert!(mount.join("cgroup.procs").exists(), "{}", mount.display());
    }
}
