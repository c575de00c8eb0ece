//! Components as supervised child processes of the one `rampart` binary: start, readiness
//! (the component's first JSON line on stdout), restart with backoff, reload, stop.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::{ComponentKind, RunConfig};

/// Longest line read from a component's stdout; longer lines are dropped.
const MAX_STDOUT_LINE_BYTES: usize = 64 * 1024;
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
                    args.extend([
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
            Spec {
                name: c.name.clone(),
                kind: c.kind,
                args,
                events,
                interval_s: c.interval_s,
                cwd,
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
}

struct Slot {
    spec: Spec,
    child: Option<Child>,
    ready: Arc<AtomicBool>,
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
                match start(
                    &self.exe,
                    &slot.spec,
                    slot.ready.clone(),
                    self.events.clone(),
                ) {
                    Ok(child) => {
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
            let Some(child) = slot.child.as_mut() else {
                continue;
            };
            if slot.spec.kind.reloads_on_hangup() {
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

fn start(
    exe: &PathBuf,
    spec: &Spec,
    ready: Arc<AtomicBool>,
    events: Sender<Value>,
) -> std::io::Result<Child> {
    if let EventsFrom::File(path) = &spec.events {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
    }
    let mut command = Command::new(exe);
    if let Some(cwd) = &spec.cwd {
        command.current_dir(cwd);
    }
    let drop = capabilities_to_drop(spec.kind.capabilities())?;
    // SAFETY: the closure runs between fork and exec and only calls prctl, which is
    // async-signal-safe, on data prepared before the fork.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
            for &cap in &drop {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
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
    std::thread::spawn(move || {
        let Some(stdout) = stdout else { return };
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
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
    Ok(child)
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
        assert_eq!(args(1), "log --json --policy /etc/r/p.toml");
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
}
