//! The daemon's main loop: apply the policy, supervise components, move events into the store,
//! answer control and HTTP requests, reload on request.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::{Pending, StateDir};
use rampart_nft_apply::txn::{self, WatchOutcome};
use serde_json::Value;

use crate::config::OnDown;
use crate::failover::{self, FailOpen};
use crate::metrics::RuleCounter;
use crate::store::Store;
use crate::supervisor::{self, Backoff, ComponentStatus, EventsFrom, Supervisor};
use crate::tail::Tail;
use crate::{DaemonError, RunConfig};

/// How often the loop wakes to reap components and move events.
const TICK: Duration = Duration::from_millis(100);
/// How often retention limits are enforced.
const RETENTION_EVERY: Duration = Duration::from_secs(60);

/// Nanoseconds since the epoch, now (the shell reads the clock; the pure parts take it).
pub fn unix_now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// A reply to a [`Request`]: what happened, or why nothing did.
pub type Reply = Sender<Result<String, String>>;

/// A request from the control socket or the HTTP API to the main loop.
#[derive(Debug)]
pub enum Request {
    /// Re-read and apply the policy, then reload the components; the reply says what happened.
    Reload(Reply),
    /// Keep the pending apply (only if its id is the given one), cancelling its rollback.
    Confirm(Option<String>, Reply),
    /// Restore the ruleset from before the last apply (cancelling a pending one).
    Rollback(Reply),
}

/// Most clients following the events at once (`rampart log` on the control socket).
pub const MAX_FOLLOWERS: usize = 16;
/// Events queued for a follower that reads slower than they come; beyond this its events are
/// dropped (and counted) rather than slowing the daemon.
pub const FOLLOW_QUEUE: usize = 4096;

/// A client following the events.
#[derive(Debug)]
pub struct Follower {
    /// Only this component's events (the event's `component` field).
    pub component: Option<String>,
    /// Where the event lines go.
    pub tx: SyncSender<String>,
}

/// An apply waiting for `rampart confirm`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PendingApply {
    /// The apply id (`rampart confirm ID`).
    pub id: String,
    /// When it is rolled back unless confirmed (unix milliseconds).
    pub deadline_unix_ms: u64,
}

/// What the control socket and the HTTP API show.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Snapshot {
    /// The policy file.
    pub policy: PathBuf,
    /// Whether the daemon applies the policy to the kernel.
    pub apply: bool,
    /// Unix seconds at start.
    pub started_unix_s: u64,
    /// Components.
    pub components: Vec<ComponentStatus>,
    /// Successful reloads.
    pub reloads_ok: u64,
    /// Refused reloads.
    pub reloads_failed: u64,
    /// The last reload's outcome.
    pub last_reload: Option<String>,
    /// Events that could not be stored (store errors), kept in the JSON-lines file.
    pub store_errors: u64,
    /// The apply awaiting `rampart confirm` (run configuration `confirm_s`).
    pub pending: Option<PendingApply>,
    /// What became of the last apply that needed confirmation.
    pub last_confirm: Option<String>,
    /// Events not delivered to slow followers.
    pub follow_dropped: u64,
    /// Components down whose traffic bypasses them now (`on_down = "open"`).
    pub failing_open: Vec<String>,
}

/// State shared by the main loop and the listeners.
#[derive(Debug)]
pub struct Shared {
    /// Status.
    pub snapshot: Mutex<Snapshot>,
    /// The run configuration.
    pub config: RunConfig,
    /// The `rampart` binary.
    pub exe: PathBuf,
    /// ATT&CK coverage of the policy in force (`rampart coverage --json`).
    pub coverage: Mutex<Value>,
    /// Requests to the main loop.
    pub requests: Mutex<Sender<Request>>,
    /// HTTP bearer token, when HTTP is enabled.
    pub token: Option<String>,
    /// Clients following the events.
    pub followers: Mutex<Vec<Follower>>,
}

/// How long a reload may take before a requester is told it timed out.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

impl Shared {
    /// Ask the main loop to reload and wait for its answer: `None` when it did not answer within
    /// [`RELOAD_TIMEOUT`] (or is gone).
    pub fn request_reload(&self) -> Option<Result<String, String>> {
        self.request(Request::Reload)
    }

    /// Send the main loop the request `make` builds around a reply channel and wait for the
    /// answer: `None` when it did not answer within [`RELOAD_TIMEOUT`] (or is gone).
    pub fn request(&self, make: impl FnOnce(Reply) -> Request) -> Option<Result<String, String>> {
        let (tx, rx) = channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(make(tx));
        sent.ok()
            .and_then(|()| rx.recv_timeout(RELOAD_TIMEOUT).ok())
    }

    /// Start following the events (only `component`'s, when given): the returned receiver gets
    /// each event as one JSON line. `None` when [`MAX_FOLLOWERS`] already follow.
    pub fn follow(&self, component: Option<String>) -> Option<Receiver<String>> {
        let mut followers = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        followers.retain(|f| {
            // A probe that is never delivered: a follower whose client left is found here.
            !matches!(
                f.tx.try_send(String::new()),
                Err(TrySendError::Disconnected(_))
            )
        });
        if followers.len() >= MAX_FOLLOWERS {
            return None;
        }
        let (tx, rx) = sync_channel(FOLLOW_QUEUE);
        followers.push(Follower { component, tx });
        Some(rx)
    }

    /// Kernel rule counters of the applied ruleset (`rampart status --json`); empty when the
    /// daemon does not apply or the table is missing.
    pub fn rule_counters(&self) -> Vec<RuleCounter> {
        if !self.config.apply {
            return Vec::new();
        }
        let Ok(out) = Command::new(&self.exe)
            .args([
                "status",
                "--json",
                "--table",
                &self.config.table,
                "--state-dir",
            ])
            .arg(nft_state_dir(&self.config))
            .output()
        else {
            return Vec::new();
        };
        let Ok(value) = serde_json::from_slice::<Value>(&out.stdout) else {
            return Vec::new();
        };
        value["rules"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter(|r| r["index"].is_u64())
                    .map(|r| RuleCounter {
                        rule: r["name"].as_str().unwrap_or_default().to_string(),
                        techniques: r["techniques"]
                            .as_array()
                            .map(|t| {
                                t.iter()
                                    .filter_map(Value::as_str)
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default(),
                        packets: r["packets"].as_u64().unwrap_or(0),
                        bytes: r["bytes"].as_u64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Where the daemon's applies keep their state (`rampart apply --state-dir`).
pub fn nft_state_dir(config: &RunConfig) -> PathBuf {
    config.state_dir.join("nft")
}

/// How the daemon's own confirm timer ended for one apply id.
type WatchResult = (String, Result<WatchOutcome, String>);

/// The running daemon.
pub struct Daemon {
    shared: Arc<Shared>,
    requests: Receiver<Request>,
    events_tx: Sender<Value>,
    events_rx: Receiver<Value>,
    supervisor: Supervisor,
    tails: Vec<Tail>,
    store: Store,
    jsonl: std::fs::File,
    started: Instant,
    watch_tx: Sender<WatchResult>,
    watch_rx: Receiver<WatchResult>,
    fail_open: Vec<FailOpen>,
    /// The fail-open components whose redirects are loaded (`None`: the table is not loaded).
    failing_open: Option<std::collections::BTreeSet<String>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("policy", &self.shared.config.policy)
            .finish()
    }
}

/// Handles for the caller: ask the loop to stop or reload from a signal handler.
#[derive(Clone, Debug)]
pub struct DaemonHandle {
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// Set to reload (SIGHUP).
    pub hangup: Arc<AtomicBool>,
}

fn make_dir(path: &Path, mode: u32) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(|e| DaemonError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| DaemonError::io(path, e))
}

/// Make `path` readable and writable by root only, when it exists.
fn make_private_file(path: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(DaemonError::io(path, e)),
        _ => Ok(()),
    }
}

/// Apply `policy` with `rampart apply` (with the configured confirm window); the kernel is
/// unchanged when it fails.
fn apply(exe: &Path, config: &RunConfig) -> Result<String, DaemonError> {
    let mut command = Command::new(exe);
    command
        .arg("apply")
        .arg(&config.policy)
        .args(["--table", &config.table, "--state-dir"])
        .arg(nft_state_dir(config));
    if let Some(window_s) = config.confirm_s {
        command.arg("--confirm").arg(format!("{window_s}s"));
    }
    let out = command.output().map_err(|e| DaemonError::io(exe, e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(DaemonError::Apply(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// The fail-open redirects of each `on_down = "open"` component, from its configuration.
fn fail_open_routes(config: &RunConfig) -> Result<Vec<FailOpen>, DaemonError> {
    config
        .components
        .iter()
        .filter(|c| c.on_down == OnDown::Open)
        .filter_map(|c| c.config.as_deref().map(|path| (c, path)))
        .map(|(c, path)| {
            let text = std::fs::read_to_string(path).map_err(|e| DaemonError::io(path, e))?;
            Ok(FailOpen {
                component: c.name.clone(),
                redirects: failover::dns_redirects(&text, path)?,
            })
        })
        .collect()
}

/// Load an nft transaction from `text` (`nft -f -`).
fn nft_load(text: &str) -> Result<(), String> {
    use std::process::Stdio;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(text.as_bytes())
            .map_err(|e| format!("nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// Validate the policy without touching anything (`rampart check`: exit 0 or 1 = valid), and
/// require a component for everything it enables ([`RunConfig::check_components`]).
fn validate(exe: &Path, config: &RunConfig) -> Result<(), DaemonError> {
    let out = Command::new(exe)
        .arg("check")
        .arg(&config.policy)
        .output()
        .map_err(|e| DaemonError::io(exe, e))?;
    match out.status.code() {
        Some(0) | Some(1) => {}
        _ => {
            return Err(DaemonError::Apply(
                String::from_utf8_lossy(&out.stderr).trim().to_string(),
            ))
        }
    }
    let loaded =
        rampart_policy::load_file(&config.policy).map_err(|e| DaemonError::Apply(e.to_string()))?;
    config.check_components(&loaded.policy)
}

fn coverage(exe: &Path, policy: &Path) -> Value {
    Command::new(exe)
        .args(["coverage", "--json"])
        .arg(policy)
        .output()
        .ok()
        .and_then(|out| serde_json::from_slice(&out.stdout).ok())
        .unwrap_or(Value::Null)
}

impl Daemon {
    /// Validate and apply the policy, open the store, and prepare the components (they start
    /// on the first [`Daemon::run`] tick). Nothing is started when the policy is bad.
    pub fn start(
        config: RunConfig,
        exe: PathBuf,
        token: Option<String>,
    ) -> Result<(Self, DaemonHandle), DaemonError> {
        // Components running as their own users reach their events files in the state
        // directory through it: then it (and events/) may be traversed, not listed, by others;
        // everything else in it stays root's alone.
        let traverse = config.components.iter().any(|c| c.user.is_some());
        let dir_mode = if traverse { 0o711 } else { 0o700 };
        make_dir(&config.state_dir, dir_mode)?;
        make_dir(&config.state_dir.join("events"), dir_mode)?;
        make_dir(&nft_state_dir(&config), 0o700)?;
        let fail_open = fail_open_routes(&config)?;
        validate(&exe, &config)?;
        if config.apply {
            apply(&exe, &config)?;
        }
        let store = Store::open(&config.store_path())?;
        for suffix in ["", "-wal", "-shm"] {
            let mut path = config.store_path().into_os_string();
            path.push(suffix);
            make_private_file(Path::new(&path))?;
        }
        if let Some(dir) = config.events_jsonl.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DaemonError::io(dir, e))?;
        }
        let jsonl = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.events_jsonl)
            .map_err(|e| DaemonError::io(&config.events_jsonl, e))?;
        make_private_file(&config.events_jsonl)?;
        let (events_tx, events_rx) = channel();
        let specs = supervisor::specs(&config);
        let tails = specs
            .iter()
            .filter_map(|s| match &s.events {
                EventsFrom::File(path) => Some(Tail::from_end(path.clone())),
                _ => None,
            })
            .collect();
        let supervisor = Supervisor::new(exe.clone(), specs, Backoff::default(), events_tx.clone());
        let (requests_tx, requests) = channel();
        let shared = Arc::new(Shared {
            snapshot: Mutex::new(Snapshot {
                policy: config.policy.clone(),
                apply: config.apply,
                started_unix_s: (unix_now_ns() / 1_000_000_000) as u64,
                ..Snapshot::default()
            }),
            coverage: Mutex::new(coverage(&exe, &config.policy)),
            config,
            exe,
            requests: Mutex::new(requests_tx),
            token,
            followers: Mutex::new(Vec::new()),
        });
        let handle = DaemonHandle {
            stop: Arc::new(AtomicBool::new(false)),
            hangup: Arc::new(AtomicBool::new(false)),
        };
        let (watch_tx, watch_rx) = channel();
        let mut daemon = Self {
            shared,
            requests,
            events_tx,
            events_rx,
            supervisor,
            tails,
            store,
            jsonl,
            started: Instant::now(),
            watch_tx,
            watch_rx,
            fail_open,
            failing_open: None,
        };
        let pending = daemon.track_pending();
        daemon.daemon_event(
            "allow",
            match pending {
                Some(p) => format!(
                    "daemon started; policy applied as {}, rolled back unless `rampart confirm` by {} ms",
                    p.id, p.deadline_unix_ms
                ),
                None => "daemon started; policy applied".into(),
            },
        );
        Ok((daemon, handle))
    }

    fn nft_state(&self) -> StateDir {
        StateDir::new(nft_state_dir(&self.shared.config))
    }

    fn set_pending(&self, pending: Option<PendingApply>, outcome: Option<String>) {
        let mut snap = self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        snap.pending = pending;
        if outcome.is_some() {
            snap.last_confirm = outcome;
        }
    }

    fn pending(&self) -> Option<PendingApply> {
        self.shared
            .snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pending
            .clone()
    }

    /// After an apply: note the apply awaiting confirmation, and time it. The daemon's timer is
    /// the nft-apply watcher's loop on a thread of the daemon; the detached watcher
    /// `rampart apply` starts is still there, so a daemon that dies does not leave an
    /// unconfirmed ruleset in place. Whichever reaches the deadline first restores the previous
    /// ruleset; the other finds nothing pending.
    fn track_pending(&mut self) -> Option<PendingApply> {
        self.shared.config.confirm_s?;
        let pending = self
            .nft_state()
            .read_json::<Pending>("pending.json")
            .ok()
            .flatten()?;
        let tracked = PendingApply {
            id: pending.id.clone(),
            deadline_unix_ms: u64::try_from(pending.deadline_unix_ms).unwrap_or(u64::MAX),
        };
        self.set_pending(Some(tracked.clone()), None);
        let state = self.nft_state();
        let tx = self.watch_tx.clone();
        std::thread::spawn(move || {
            let outcome =
                txn::watch(&Nft::default(), &state, &pending.id).map_err(|e| e.to_string());
            let _ = tx.send((pending.id, outcome));
        });
        Some(tracked)
    }

    /// The daemon's confirm timer ended: report what happened unless a request of ours already
    /// settled it.
    fn watch_ended(&mut self, id: String, outcome: Result<WatchOutcome, String>) {
        if self.pending().is_none_or(|p| p.id != id) {
            return;
        }
        let window_s = self.shared.config.confirm_s.unwrap_or_default();
        let state = self.nft_state();
        let still_pending = || {
            state
                .read_json::<Pending>("pending.json")
                .ok()
                .flatten()
                .is_some_and(|p| p.id == id)
        };
        let confirmed = || {
            state
                .read_json::<Pending>("confirmed.json")
                .ok()
                .flatten()
                .is_some_and(|p| p.id == id)
        };
        let (verdict, message) = match outcome {
            Ok(WatchOutcome::RolledBack) => (
                "alert",
                format!("apply {id} was not confirmed within {window_s} s: the previous ruleset is back"),
            ),
            Ok(WatchOutcome::Confirmed) => ("allow", format!("apply {id} confirmed")),
            // The timer lost a race (the detached watcher claimed the apply first) or failed:
            // the state files say what became of the apply.
            _ if confirmed() => ("allow", format!("apply {id} confirmed")),
            Err(e) if still_pending() => {
                // Still pending: the detached watcher keeps timing it.
                self.daemon_event(
                    "alert",
                    format!("the daemon's confirm timer of apply {id} failed ({e}); the watcher `rampart apply` started still times it"),
                );
                return;
            }
            _ => (
                "alert",
                format!("apply {id} was not confirmed: rolled back outside the daemon (by the watcher `rampart apply` started, or a standalone rollback)"),
            ),
        };
        self.set_pending(None, Some(message.clone()));
        self.daemon_event(verdict, message);
    }

    /// `rampart confirm` through the control socket.
    pub fn confirm(&mut self, id: Option<&str>) -> Result<String, String> {
        if !self.shared.config.apply {
            return Err("this daemon does not apply the policy (apply = false)".into());
        }
        match txn::confirm(&self.nft_state(), id) {
            Ok(confirmed) => {
                let message = format!("confirmed apply {confirmed}; the rollback is cancelled");
                self.set_pending(None, Some(message.clone()));
                self.daemon_event("allow", message.clone());
                Ok(message)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// `rampart rollback` through the control socket: cancel a pending apply and restore the
    /// ruleset from before the last apply. The components keep running as they are.
    pub fn rollback(&mut self) -> Result<String, String> {
        let config = &self.shared.config;
        if !config.apply {
            return Err("this daemon does not apply the policy (apply = false)".into());
        }
        let cancelled = self.pending();
        match txn::rollback(&Nft::default(), &self.nft_state(), &config.table) {
            Ok(()) => {
                let message = match cancelled {
                    Some(p) => format!(
                        "rolled back table inet {} (cancelled pending apply {})",
                        config.table, p.id
                    ),
                    None => format!(
                        "rolled back table inet {} to the previous version",
                        config.table
                    ),
                };
                self.set_pending(None, Some(message.clone()));
                self.daemon_event("alert", message.clone());
                Ok(message)
            }
            Err(e) => Err(format!("rollback failed: {e}")),
        }
    }

    /// State shared with listeners (control socket, HTTP).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn daemon_event(&self, verdict: &str, reason: String) {
        let _ = self.events_tx.send(serde_json::json!({
            "timestamp": rampart_events::rfc3339_utc(unix_now_ns() as u64),
            "event_type": "daemon",
            "component": "daemon",
            "verdict": verdict,
            "reason": reason,
        }));
    }

    /// Re-read and apply the policy, then reload the components. A bad policy changes nothing.
    pub fn reload(&mut self) -> Result<String, String> {
        let shared = self.shared.clone();
        let config = &shared.config;
        let result = validate(&self.shared.exe, config).and_then(|()| {
            if config.apply {
                apply(&self.shared.exe, config)
            } else {
                Ok(String::new())
            }
        });
        let outcome = match result {
            Ok(_) => {
                // The forwarder's configuration may name other addresses now.
                match fail_open_routes(config) {
                    Ok(routes) => {
                        self.fail_open = routes;
                        self.failing_open = None;
                    }
                    Err(e) => self.daemon_event(
                        "alert",
                        format!("fail-open redirects kept as they were: {e}"),
                    ),
                }
                let pending = self.track_pending();
                self.supervisor.reload(Instant::now());
                *self
                    .shared
                    .coverage
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) =
                    coverage(&self.shared.exe, &config.policy);
                Ok(match pending {
                    Some(p) => format!(
                        "reloaded {} as apply {}; it is rolled back unless `rampart confirm` within {} s",
                        config.policy.display(),
                        p.id,
                        config.confirm_s.unwrap_or_default()
                    ),
                    None => format!("reloaded {}", config.policy.display()),
                })
            }
            Err(err) => Err(format!("reload refused, nothing changed: {err}")),
        };
        {
            let mut snap = self
                .shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            match &outcome {
                Ok(msg) => {
                    snap.reloads_ok += 1;
                    snap.last_reload = Some(msg.clone());
                }
                Err(msg) => {
                    snap.reloads_failed += 1;
                    snap.last_reload = Some(msg.clone());
                }
            }
        }
        match &outcome {
            Ok(msg) => self.daemon_event("allow", msg.clone()),
            Err(msg) => self.daemon_event("block", msg.clone()),
        }
        outcome
    }

    /// Run until `handle.stop` is set; SIGHUP-style reloads via `handle.hangup`.
    pub fn run(&mut self, handle: &DaemonHandle) -> Result<(), DaemonError> {
        let mut last_retention = Instant::now();
        while !handle.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            self.supervisor.tick(now);
            if handle.hangup.swap(false, Ordering::Relaxed) {
                let _ = self.reload();
            }
            while let Ok(request) = self.requests.try_recv() {
                match request {
                    Request::Reload(reply) => {
                        let _ = reply.send(self.reload());
                    }
                    Request::Confirm(id, reply) => {
                        let _ = reply.send(self.confirm(id.as_deref()));
                    }
                    Request::Rollback(reply) => {
                        let _ = reply.send(self.rollback());
                    }
                }
            }
            while let Ok((id, outcome)) = self.watch_rx.try_recv() {
                self.watch_ended(id, outcome);
            }
            self.move_events();
            if now.duration_since(last_retention) >= RETENTION_EVERY {
                last_retention = now;
                let config = &self.shared.config;
                let _ = self.store.retain(
                    config.store_max_rows,
                    config.store_max_age_days,
                    unix_now_ns(),
                );
            }
            let components = self.supervisor.status(now);
            let down = components
                .iter()
                .filter(|c| !c.ready)
                .map(|c| c.name.clone())
                .collect();
            self.update_fail_open(&down);
            {
                let mut snap = self
                    .shared
                    .snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                snap.components = components;
            }
            std::thread::sleep(TICK);
        }
        self.daemon_event("allow", "daemon stopping".into());
        self.supervisor.shutdown();
        // Stopped components are down: fail-open ones keep failing open.
        let all = self.fail_open.iter().map(|f| f.component.clone()).collect();
        self.update_fail_open(&all);
        self.move_events();
        Ok(())
    }

    /// Load the fail-open redirects of the components in `down` (those that fail open) when
    /// that set changed; each change is an event.
    fn update_fail_open(&mut self, down: &std::collections::BTreeSet<String>) {
        if self.fail_open.is_empty() {
            return;
        }
        let wanted: std::collections::BTreeSet<String> = self
            .fail_open
            .iter()
            .filter(|f| down.contains(&f.component))
            .map(|f| f.component.clone())
            .collect();
        if self.failing_open.as_ref() == Some(&wanted) {
            return;
        }
        let table = &self.shared.config.table;
        let text = failover::ruleset(table, &self.fail_open, &wanted);
        let previous = self.failing_open.take().unwrap_or_default();
        match nft_load(&text) {
            Ok(()) => {
                for f in &self.fail_open {
                    let targets = || {
                        f.redirects
                            .iter()
                            .map(|r| format!("{} -> {}", r.listen, r.upstream))
                            .collect::<Vec<_>>()
                            .join(", ")
                    };
                    match (previous.contains(&f.component), wanted.contains(&f.component)) {
                        (false, true) => self.daemon_event(
                            "alert",
                            format!(
                                "{} is down: failing open, its queries go unfiltered to the upstream ({})",
                                f.component,
                                targets()
                            ),
                        ),
                        (true, false) => self.daemon_event(
                            "allow",
                            format!("{} is back: its queries are filtered again", f.component),
                        ),
                        _ => {}
                    }
                }
                self.shared
                    .snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .failing_open = wanted.iter().cloned().collect();
            }
            Err(e) => self.daemon_event(
                "alert",
                format!("could not load the fail-open redirects (failing closed): {e}"),
            ),
        }
        // Also on failure: retried at the next change rather than every tick.
        self.failing_open = Some(wanted);
    }

    fn move_events(&mut self) {
        let mut batch: Vec<Value> = self.events_rx.try_iter().collect();
        for tail in &mut self.tails {
            batch.extend(tail.poll());
        }
        if batch.is_empty() {
            return;
        }
        for event in &batch {
            let _ = writeln!(self.jsonl, "{event}");
        }
        let _ = self.jsonl.flush();
        self.publish(&batch);
        if self.store.insert(&batch, unix_now_ns()).is_err() {
            let mut snap = self
                .shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            snap.store_errors += batch.len() as u64;
        }
    }

    /// Hand each event to the followers that want it; forget followers that left.
    fn publish(&self, batch: &[Value]) {
        let mut followers = self
            .shared
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if followers.is_empty() {
            return;
        }
        let mut dropped = 0u64;
        for event in batch {
            let line = event.to_string();
            followers.retain(|f| {
                if f.component
                    .as_deref()
                    .is_some_and(|c| event["component"].as_str() != Some(c))
                {
                    return true;
                }
                match f.tx.try_send(line.clone()) {
                    Ok(()) => true,
                    Err(TrySendError::Full(_)) => {
                        dropped += 1;
                        true
                    }
                    Err(TrySendError::Disconnected(_)) => false,
                }
            });
        }
        drop(followers);
        if dropped > 0 {
            self.shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .follow_dropped += dropped;
        }
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
