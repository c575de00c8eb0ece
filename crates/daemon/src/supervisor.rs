//! Components as supervised child processes of the one `rampart` binary: start, readiness
//! (the component's first JSON line on stdout), restart with backoff, reload, stop.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{Account, ComponentKind, RunConfig};

/// Longest line read from a component's stdout; longer lines are dropped.
const MAX_STDOUT_LINE_BYTES: usize = 64 * 1024;
/// The ready line said nothing about `reload_in_place`.
const ANNOUNCED_NOTHING: u8 = 0;
/// The ready line said `"reload_in_place": true`.
const ANNOUNCED_IN_PLACE: u8 = 1;
/// The ready line said `"reload_in_place": false`.
const ANNOUNCED_RESTART: u8 = 2;
/// How long a stopping component gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Restart delays: `min_ms` after the first failure, doubling up to `max_ms`; a component that
/// stayed up for `healthy_after_ms` has its failure count reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// First delay.
    pub min_ms: u64,
    /// Largest delay.
    pub max_ms: u64,
    /// Uptime after which a component counts as healthy again.
    pub healthy_after_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            min_ms: 200,
            max_ms: 30_000,
            healthy_after_ms: 60_000,
        }
    }
}

impl Backoff {
    /// Delay before restart number `consecutive_failures` (1 = first failure).
    pub fn delay_ms(&self, consecutive_failures: u32) -> u64 {
        let doublings = consecutive_failures.saturating_sub(1).min(32);
        self.min_ms
            .saturating_mul(1u64 << doublings)
            .min(self.max_ms)
    }
}

/// Where a component's events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventsFrom {
    /// A JSON-lines file it appends to (tailed by the daemon).
    File(PathBuf),
    /// Its stdout (every JSON object line after the ready line).
    Stdout,
    /// It has no events.
    None,
}

/// How to run one component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spec {
    /// Unique name.
    pub name: String,
    /// What it is.
    pub kind: ComponentKind,
    /// Arguments after the binary.
    pub args: Vec<OsString>,
    /// Its events.
    pub events: EventsFrom,
    /// For periodic jobs: seconds between successful runs.
    pub interval_s: Option<u32>,
    /// Working directory: its configuration file's directory, so relative paths in a
    /// component's configuration mean the same to the component and to the daemon.
    pub cwd: Option<PathBuf>,
    /// Run as this user (with `group`, or the user's primary group).
    pub user: Option<Account>,
    /// Run with this group.
    pub group: Option<Account>,
    /// Files the component appends to (its events file): created if absent and given to its
    /// user when it runs as one.
    pub writable_files: Vec<PathBuf>,
    /// Directories it writes in (the feeds cache): created if absent and, with their direct
    /// entries, given to its user when it runs as one.
    pub writable_dirs: Vec<PathBuf>,
}

/// The command line of each configured component.
pub fn specs(config: &RunConfig) -> Vec<Spec> {
    config
        .components
        .iter()
        .map(|c| {
            let mut args: Vec<OsString> = vec![c.kind.as_str().into()];
            let events_file = config.component_events(&c.name);
            let events = match c.kind {
                ComponentKind::Feeds => {
                    args.extend([
                        "update".into(),
                        "--json".into(),
                        "--policy".into(),
                        config.policy.clone().into(),
                    ]);
                    args.extend(["--cache-dir".into(), config.state_dir.join("feeds").into()]);
                    EventsFrom::Stdout
                }
                ComponentKind::Log => {
                    // `--nflog`: read the kernel even though a daemon (this one) runs; without
                    // it `rampart log` would follow this daemon's own events.
                    args.extend([
                        "--nflog".into(),
                        "--json".into(),
                        "--policy".into(),
                        config.policy.clone().into(),
                    ]);
                    EventsFrom::Stdout
                }
                ComponentKind::Classify => {
                    args.extend(["--policy".into(), config.policy.clone().into()]);
                    args.extend(["--events".into(), events_file.clone().into()]);
                    EventsFrom::File(events_file)
                }
                _ => {
                    if c.from_policy {
                        args.extend(["--policy".into(), config.policy.clone().into()]);
                    }
                    if let Some(path) = &c.config {
                        args.extend(["--config".into(), path.clone().into()]);
                    }
                    match c.kind {
                        // These write their events where their own configuration says; follow
                        // that file.
                        ComponentKind::Dns => {
                            config_events_path(c.config.as_deref(), &["query_log", "path"])
                        }
                        ComponentKind::Egress => {
                            config_events_path(c.config.as_deref(), &["log", "path"])
                        }
                        ComponentKind::Guard => {
                            config_events_path(c.config.as_deref(), &["events_file"])
                        }
                        // One event line per request on stdout, after its listening line.
                        ComponentKind::Waf => EventsFrom::Stdout,
                        _ => {
                            args.extend(["--events".into(), events_file.clone().into()]);
                            EventsFrom::File(events_file)
                        }
                    }
                }
            };
            let cwd = c
                .config
                .as_deref()
                .and_then(std::path::Path::parent)
                .map(std::path::Path::to_path_buf);
            let writable_files = match &events {
                EventsFrom::File(path) => vec![path.clone()],
                _ => Vec::new(),
            };
            let writable_dirs = if c.kind == ComponentKind::Feeds {
                vec![config.state_dir.join("feeds")]
            } else {
                Vec::new()
            };
            Spec {
                name: c.name.clone(),
                kind: c.kind,
                args,
                events,
                interval_s: c.interval_s,
                cwd,
                user: c.user.clone(),
                group: c.group.clone(),
                writable_files,
                writable_dirs,
            }
        })
        .collect()
}

/// The events file a component's configuration names at `keys` (e.g. `[query_log] path`),
/// resolved against the configuration's directory; no file configured: no events.
fn config_events_path(config: Option<&std::path::Path>, keys: &[&str]) -> EventsFrom {
    let found = || -> Option<PathBuf> {
        let config = config?;
        let text = std::fs::read_to_string(config).ok()?;
        let mut value: &toml::Value = &toml::from_str::<toml::Value>(&text).ok()?;
        for key in keys {
            value = value.get(key)?;
        }
        let path = PathBuf::from(value.as_str()?);
        Some(if path.is_absolute() {
            path
        } else {
            config.parent()?.join(path)
        })
    };
    found().map_or(EventsFrom::None, EventsFrom::File)
}

/// What the daemon knows about one component.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct ComponentStatus {
    /// Name.
    pub name: String,
    /// Kind (subcommand).
    pub kind: String,
    /// Running process id.
    pub pid: Option<u32>,
    /// Running and has printed its ready line.
    pub ready: bool,
    /// Times started.
    pub starts: u64,
    /// Times it exited without being asked to.
    pub failures: u64,
    /// The last unexpected exit.
    pub last_exit: Option<String>,
    /// Milliseconds until the next (re)start, while waiting.
    pub restart_in_ms: Option<u64>,
    /// Periodic jobs: when the last run succeeded (unix seconds).
    pub last_success_unix_s: Option<u64>,
    /// A reload sends it SIGHUP (it announced `"reload_in_place": true`, or announced nothing
    /// and its kind has always
    /// reloads in place) rather than restarting it.
    pub reload_in_place: bool,
    /// The uid and gid it runs as, when not the daemon's.
    pub uid: Option<u32>,
    /// The gid it runs as, when not the daemon's.
    pub gid: Option<u32>,
}

struct Slot {
    spec: Spec,
    child: Option<Child>,
    ready: Arc<AtomicBool>,
    /// What the component's ready line announced about `reload_in_place` (one of the
    /// `ANNOUNCED_*` values); reset at each start.
    announced_in_place: Arc<AtomicU8>,
    started_at: Option<Instant>,
    next_start: Option<Instant>,
    consecutive_failures: u32,
    status: ComponentStatus,
}

/// The supervisor. Drive it with [`Supervisor::tick`].
pub struct Supervisor {
    exe: PathBuf,
    backoff: Backoff,
    slots: Vec<Slot>,
    events: Sender<Value>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("components", &self.slots.len())
            .finish()
    }
}

fn daemon_event(verdict: &str, reason: String, component: &str) -> Value {
    serde_json::json!({
        "timestamp": rampart_events::rfc3339_utc(crate::daemon::unix_now_ns() as u64),
        "event_type": "component",
        "component": "daemon",
        "verdict": verdict,
        "reason": reason,
        "detail": { "component": component },
    })
}

impl Supervisor {
    /// A supervisor for `specs`, running `exe` (the `rampart` binary); daemon events about the
    /// components go to `events`.
    pub fn new(exe: PathBuf, specs: Vec<Spec>, backoff: Backoff, events: Sender<Value>) -> Self {
        let now = Instant::now();
        let slots = specs
            .into_iter()
            .map(|spec| Slot {
                status: ComponentStatus {
                    name: spec.name.clone(),
                    kind: spec.kind.as_str().into(),
                    ..Default::default()
                },
                spec,
                child: None,
                ready: Arc::new(AtomicBool::new(false)),
                announced_in_place: Arc::new(AtomicU8::new(ANNOUNCED_NOTHING)),
                started_at: None,
                next_start: Some(now),
                consecutive_failures: 0,
            })
            .collect();
        Self {
            exe,
            backoff,
            slots,
            events,
        }
    }

    /// The components' specs.
    pub fn specs(&self) -> impl Iterator<Item = &Spec> {
        self.slots.iter().map(|s| &s.spec)
    }

    /// Reap exited components, schedule restarts, start what is due.
    pub fn tick(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if let Some(child) = slot.child.as_mut() {
                if let Ok(Some(exit)) = child.try_wait() {
                    slot.child = None;
                    if let (true, Some(interval_s)) = (exit.success(), slot.spec.interval_s) {
                        // A periodic job that finished: due again after its interval.
                        slot.consecutive_failures = 0;
                        slot.status.last_success_unix_s =
                            Some((crate::daemon::unix_now_ns() / 1_000_000_000) as u64);
                        slot.next_start = Some(now + Duration::from_secs(u64::from(interval_s)));
                        continue;
                    }
                    slot.ready.store(false, Ordering::Relaxed);
                    let uptime = slot
                        .started_at
                        .map(|t| now.duration_since(t))
                        .unwrap_or_default();
                    if uptime.as_millis() as u64 >= self.backoff.healthy_after_ms {
                        slot.consecutive_failures = 0;
                    }
                    slot.consecutive_failures += 1;
                    slot.status.failures += 1;
                    let delay = self.backoff.delay_ms(slot.consecutive_failures);
                    slot.next_start = Some(now + Duration::from_millis(delay));
                    let reason = format!(
                        "{} exited ({exit}) after {} ms; restart in {delay} ms",
                        slot.spec.name,
                        uptime.as_millis()
                    );
                    slot.status.last_exit = Some(reason.clone());
                    let _ = self
                        .events
                        .send(daemon_event("alert", reason, &slot.spec.name));
                }
            }
            if slot.child.is_none() && slot.next_start.is_some_and(|t| t <= now) {
                slot.next_start = None;
                slot.ready.store(false, Ordering::Relaxed);
                slot.announced_in_place
                    .store(ANNOUNCED_NOTHING, Ordering::Relaxed);
                match start(
                    &self.exe,
                    &slot.spec,
                    Readiness {
                        ready: slot.ready.clone(),
                        in_place: slot.announced_in_place.clone(),
                    },
                    self.events.clone(),
                ) {
                    Ok((child, ids)) => {
                        slot.status.uid = ids.map(|(uid, _)| uid);
                        slot.status.gid = ids.map(|(_, gid)| gid);
                        slot.status.starts += 1;
                        slot.started_at = Some(now);
                        let _ = self.events.send(daemon_event(
                            "allow",
                            format!("{} started (pid {})", slot.spec.name, child.id()),
                            &slot.spec.name,
                        ));
                        slot.child = Some(child);
                    }
                    Err(err) => {
                        slot.consecutive_failures += 1;
                        slot.status.failures += 1;
                        let delay = self.backoff.delay_ms(slot.consecutive_failures);
                        slot.next_start = Some(now + Duration::from_millis(delay));
                        let reason = format!(
                            "{} could not start: {err}; retry in {delay} ms",
                            slot.spec.name
                        );
                        slot.status.last_exit = Some(reason.clone());
                        let _ = self
                            .events
                            .send(daemon_event("alert", reason, &slot.spec.name));
                    }
                }
            }
        }
    }

    /// Status of every component.
    pub fn status(&self, now: Instant) -> Vec<ComponentStatus> {
        self.slots
            .iter()
            .map(|slot| {
                let mut status = slot.status.clone();
                status.pid = slot.child.as_ref().map(Child::id);
                status.ready = if slot.spec.interval_s.is_some() {
                    // A job is healthy while its last run succeeded and it is not failing now.
                    status.last_success_unix_s.is_some() && slot.consecutive_failures == 0
                } else {
                    slot.child.is_some()
                        && (slot.ready.load(Ordering::Relaxed)
                            || !slot.spec.kind.prints_ready_line())
                };
                status.reload_in_place = slot.reloads_in_place();
                status.restart_in_ms = slot
                    .next_start
                    .map(|t| t.saturating_duration_since(now).as_millis() as u64);
                status
            })
            .collect()
    }

    /// Apply a new policy to the components: SIGHUP to those that reload in place, a restart
    /// (not counted as a failure) for the others.
    pub fn reload(&mut self, now: Instant) {
        for slot in &mut self.slots {
            if slot.spec.interval_s.is_some() {
                // Jobs run again right away: a new ruleset starts with the policy's snapshot
                // sets, which the refresh brings back to the latest good feeds.
                if slot.child.is_none() {
                    slot.next_start = Some(now);
                }
                continue;
            }
            // SIGHUP only once it is ready: before that it may not handle the signal yet
            // (SIGHUP's default action ends a process), and a restart costs nothing.
            let in_place = slot.reloads_in_place() && slot.ready.load(Ordering::Relaxed);
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            if in_place {
                // SAFETY: kill on a child we spawned and have not reaped.
                unsafe { libc::kill(child.id() as i32, libc::SIGHUP) };
            } else {
                stop_child(child);
                slot.child = None;
                slot.ready.store(false, Ordering::Relaxed);
                slot.next_start = Some(now);
            }
        }
        self.tick(now);
    }

    /// Stop every component (SIGTERM, then SIGKILL after a grace period).
    pub fn shutdown(&mut self) {
        for slot in &mut self.slots {
            if let Some(child) = slot.child.as_mut() {
                stop_child(child);
            }
            slot.child = None;
            slot.next_start = None;
        }
    }
}

impl Slot {
    /// What the component announced decides; a component that announced nothing keeps its
    /// kind's behaviour from before the protocol.
    fn reloads_in_place(&self) -> bool {
        match self.announced_in_place.load(Ordering::Relaxed) {
            ANNOUNCED_IN_PLACE => true,
            ANNOUNCED_RESTART => false,
            _ => self.spec.kind.reloads_on_hangup(),
        }
    }
}

fn stop_child(child: &mut Child) {
    // SAFETY: kill on a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A component's stdout line as an event: event-shaped lines (with `component`) as they are;
/// other JSON objects (e.g. `feeds update` reports) wrapped, whole, in `detail`.
fn as_event(kind: ComponentKind, value: Value) -> Value {
    if value.get("component").is_some() {
        return value;
    }
    let mut summary = value.to_string();
    if summary.len() > 200 {
        let mut cut = 200;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
    }
    serde_json::json!({
        "timestamp": rampart_events::rfc3339_utc(crate::daemon::unix_now_ns() as u64),
        "event_type": kind.as_str(),
        "component": kind.as_str(),
        "verdict": "allow",
        "reason": summary,
        "detail": value,
    })
}

/// Every capability this kernel knows except `keep`.
fn capabilities_to_drop(keep: &[u32]) -> std::io::Result<Vec<u32>> {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")?
        .trim()
        .parse()
        .map_err(|_| std::io::Error::other("unreadable /proc/sys/kernel/cap_last_cap"))?;
    Ok((0..=last.min(63))
        .filter(|cap| !keep.contains(cap))
        .collect())
}

/// What the stdout reader learns from a component's first JSON line.
struct Readiness {
    /// It printed its first JSON line.
    ready: Arc<AtomicBool>,
    /// What that line said about `reload_in_place`.
    in_place: Arc<AtomicU8>,
}

/// Look up `user` (and `group`, else the user's primary group) in the system databases.
pub fn resolve_ids(user: &Account, group: Option<&Account>) -> std::io::Result<(u32, u32)> {
    let not_found = |what: &str, name: &str| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no {what} `{name}` in the system databases"),
        )
    };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let (uid, primary_gid) = match user {
        Account::Id(uid) => {
            // A numeric uid need not have a passwd entry; its group then defaults to the same
            // number.
            // SAFETY: getpwuid_r with a zeroed passwd, a buffer we own and its length.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = unsafe {
                libc::getpwuid_r(*uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found)
            };
            let gid = if rc == 0 && !found.is_null() {
                pwd.pw_gid
            } else {
                *uid
            };
            (*uid, gid)
        }
        Account::Name(name) => {
            let c_name =
                std::ffi::CString::new(name.as_str()).map_err(|_| not_found("user", name))?;
            // SAFETY: as above, with a NUL-terminated name.
            let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::passwd = std::ptr::null_mut();
            let rc = unsafe {
                libc::getpwnam_r(
                    c_name.as_ptr(),
                    &mut pwd,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                )
            };
            if rc != 0 || found.is_null() {
                return Err(not_found("user", name));
            }
            (pwd.pw_uid, pwd.pw_gid)
        }
    };
    let gid = match group {
        None => primary_gid,
        Some(Account::Id(gid)) => *gid,
        Some(Account::Name(name)) => {
            let c_name =
                std::ffi::CString::new(name.as_str()).map_err(|_| not_found("group", name))?;
            // SAFETY: getgrnam_r with a zeroed group, a buffer we own and its length.
            let mut grp: libc::group = unsafe { std::mem::zeroed() };
            let mut found: *mut libc::group = std::ptr::null_mut();
            let rc = unsafe {
                libc::getgrnam_r(
                    c_name.as_ptr(),
                    &mut grp,
                    buf.as_mut_ptr(),
                    buf.len(),
                    &mut found,
                )
            };
            if rc != 0 || found.is_null() {
                return Err(not_found("group", name));
            }
            grp.gr_gid
        }
    };
    Ok((uid, gid))
}

/// Create what the component writes (events files, the feeds cache directory) and, when it
/// runs as `ids`, give it to that user: the file itself, and a directory with its direct
/// entries.
fn prepare_writable(spec: &Spec, ids: Option<(u32, u32)>) -> std::io::Result<()> {
    use std::os::unix::fs::chown;
    for path in &spec.writable_files {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        if let Some((uid, gid)) = ids {
            chown(path, Some(uid), Some(gid))?;
        }
    }
    for dir in &spec.writable_dirs {
        std::fs::create_dir_all(dir)?;
        if let Some((uid, gid)) = ids {
            chown(dir, Some(uid), Some(gid))?;
            for entry in std::fs::read_dir(dir)?.flatten() {
                chown(entry.path(), Some(uid), Some(gid))?;
            }
        }
    }
    Ok(())
}

/// `capset(2)` header and data (version 3: two 32-bit words per set).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// The capability sets (low and high words) holding exactly `caps`.
fn cap_words(caps: &[u32]) -> [CapData; 2] {
    let mut data = [CapData::default(); 2];
    for &cap in caps {
        let word = &mut data[(cap / 32).min(1) as usize];
        let bit = 1u32 << (cap % 32);
        word.effective |= bit;
        word.permitted |= bit;
        word.inheritable |= bit;
    }
    data
}

/// Signals whose disposition a component starts with reset to the default (see `start`'s pre-exec
/// step): the ones Rampart's components and the supervisor use.
const RESET_SIGNALS: [libc::c_int; 6] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

fn start(
    exe: &PathBuf,
    spec: &Spec,
    readiness: Readiness,
    events: Sender<Value>,
) -> std::io::Result<(Child, Option<(u32, u32)>)> {
    let ids = match &spec.user {
        Some(user) => Some(resolve_ids(user, spec.group.as_ref())?),
        None => None,
    };
    prepare_writable(spec, ids)?;
    let mut command = Command::new(exe);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let keep = spec.kind.capabilities().to_vec();
    let drop = capabilities_to_drop(&keep)?;
    let words = cap_words(&keep);
    // SAFETY: the closure runs between fork and exec and only makes system calls (signal,
    // prctl, setgroups, setresgid, setresuid, capset), which are async-signal-safe, on data
    // prepared before the fork; it allocates nothing.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            let check = |rc: libc::c_long| {
                if rc != 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            // Why: an ignored signal stays ignored across exec, so a daemon started under
            // `nohup` (SIGHUP ignored) would hand that on, and a component that keeps the
            // disposition it inherits (a shell's `trap`, for one) would never see the reload
            // signal. std already resets the signal mask and SIGPIPE; these are the rest.
            for sig in RESET_SIGNALS {
                if libc::signal(sig, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for &cap in &drop {
                check(libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0).into())?;
            }
            let Some((uid, gid)) = ids else {
                return Ok(());
            };
            // Keep the permitted set across the uid change, then narrow every set to the
            // component's capabilities and make them ambient: a non-root process keeps
            // ambient capabilities across exec (no file capabilities needed), so a DNS
            // forwarder running as nobody can still bind port 53.
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0).into())?;
            check(libc::setgroups(0, std::ptr::null()).into())?;
            check(libc::setresgid(gid, gid, gid).into())?;
            check(libc::setresuid(uid, uid, uid).into())?;
            let header = CapHeader {
                version: LINUX_CAPABILITY_VERSION_3,
                pid: 0,
            };
            check(libc::syscall(libc::SYS_capset, &header, words.as_ptr()))?;
            for &cap in &keep {
                check(
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        cap as libc::c_ulong,
                        0,
                        0,
                    )
                    .into(),
                )?;
            }
            Ok(())
        });
    }
    let mut child = command
        .args(&spec.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take();
    let forward = spec.events == EventsFrom::Stdout;
    let prints_ready = spec.kind.prints_ready_line();
    let kind = spec.kind;
    let Readiness { ready, in_place } = readiness;
    std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        let mut first = true;
        loop {
            line.clear();
            match reader
                .by_ref()
                .take(MAX_STDOUT_LINE_BYTES as u64)
                .read_until(b'\n', &mut line)
            {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line.last() != Some(&b'\n') && line.len() >= MAX_STDOUT_LINE_BYTES {
                // Overlong line: skip the rest of it.
                let mut rest = Vec::new();
                let _ = reader.read_until(b'\n', &mut rest);
                continue;
            }
            let Ok(value) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            if first {
                first = false;
                // The reload protocol: a component says in its first line whether SIGHUP
                // reloads it in place.
                match value.get("reload_in_place") {
                    Some(Value::Bool(true)) => {
                        in_place.store(ANNOUNCED_IN_PLACE, Ordering::Relaxed)
                    }
                    Some(Value::Bool(false)) => {
                        in_place.store(ANNOUNCED_RESTART, Ordering::Relaxed)
                    }
                    _ => {}
                }
            }
            if prints_ready && !ready.load(Ordering::Relaxed) {
                ready.store(true, Ordering::Relaxed);
                if value.get("component").is_none() {
                    continue;
                }
            }
            if forward {
                let _ = events.send(as_event(kind, value));
            }
        }
    });
    Ok((child, ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stdout_reports_become_events_and_events_stay_as_they_are() {
        let event = serde_json::json!({"component": "nft", "verdict": "block"});
        assert_eq!(as_event(ComponentKind::Log, event.clone()), event);
        let report = serde_json::json!({"feed": "known-bad", "status": {"kind": "updated"}});
        let wrapped = as_event(ComponentKind::Feeds, report.clone());
        assert_eq!(wrapped["component"], "feeds");
        assert_eq!(wrapped["detail"], report);
        assert!(wrapped["reason"].as_str().unwrap().contains("known-bad"));
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let b = Backoff::default();
        assert_eq!(b.delay_ms(1), 200);
        assert_eq!(b.delay_ms(2), 400);
        assert_eq!(b.delay_ms(5), 3_200);
        assert_eq!(b.delay_ms(9), 30_000);
        assert_eq!(b.delay_ms(u32::MAX), 30_000);
        assert_eq!(b.delay_ms(0), 200);
    }

    #[test]
    fn command_lines_follow_each_components_contract() {
        let config = RunConfig::from_toml(
            "policy = \"p.toml\"\nstate_dir = \"/s\"\n[[component]]\nkind = \"dns\"\nconfig = \"d.toml\"\n[[component]]\nkind = \"log\"\n[[component]]\nkind = \"jail\"\nconfig = \"j.toml\"\n[[component]]\nkind = \"feeds\"\ninterval_s = 60\n",
            std::path::Path::new("/etc/r"),
        )
        .unwrap();
        let specs = specs(&config);
        let args = |i: usize| {
            specs[i]
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(args(0), "dns --config /etc/r/d.toml");
        assert_eq!(specs[0].events, EventsFrom::None);
        assert_eq!(args(1), "log --nflog --json --policy /etc/r/p.toml");
        assert_eq!(specs[1].events, EventsFrom::Stdout);
        assert_eq!(
            args(2),
            "jail --config /etc/r/j.toml --events /s/events/jail.jsonl"
        );
        assert_eq!(
            specs[2].events,
            EventsFrom::File("/s/events/jail.jsonl".into())
        );
        assert_eq!(
            args(3),
            "feeds update --json --policy /etc/r/p.toml --cache-dir /s/feeds"
        );
        assert_eq!(specs[3].events, EventsFrom::Stdout);
        assert_eq!(specs[3].interval_s, Some(60));
    }

    #[test]
    fn jail_and_guard_can_take_their_policy_settings_from_the_run_policy() {
        let config = RunConfig::from_toml(
            "policy = \"p.toml\"\nstate_dir = \"/s\"\n[[component]]\nkind = \"jail\"\nfrom_policy = true\n[[component]]\nkind = \"guard\"\nconfig = \"g.toml\"\nfrom_policy = true\n",
            std::path::Path::new("/etc/r"),
        )
        .unwrap();
        let specs = specs(&config);
        let args = |i: usize| {
            specs[i]
                .args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            args(0),
            "jail --policy /etc/r/p.toml --events /s/events/jail.jsonl"
        );
        assert_eq!(
            args(1),
            "guard --policy /etc/r/p.toml --config /etc/r/g.toml"
        );
    }
}
