//! The daemon's main loop: apply the policy, supervise components, move events into the store,
//! answer control and HTTP requests, reload on request.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

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

/// A request from the control socket or the HTTP API to the main loop.
#[derive(Debug)]
pub enum Request {
    /// Re-read and apply the policy, then reload the components; the reply says what happened.
    Reload(Sender<Result<String, String>>),
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
}

/// How long a reload may take before a requester is told it timed out.
pub const RELOAD_TIMEOUT: Duration = Duration::from_secs(120);

impl Shared {
    /// Ask the main loop to reload and wait for its answer: `None` when it did not answer within
    /// [`RELOAD_TIMEOUT`] (or is gone).
    pub fn request_reload(&self) -> Option<Result<String, String>> {
        let (tx, rx) = channel();
        let sent = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(Request::Reload(tx));
        sent.ok()
            .and_then(|()| rx.recv_timeout(RELOAD_TIMEOUT).ok())
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

fn nft_state_dir(config: &RunConfig) -> PathBuf {
    config.state_dir.join("nft")
}

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

fn make_private_dir(path: &Path) -> Result<(), DaemonError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(path).map_err(|e| DaemonError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| DaemonError::io(path, e))
}

/// Apply `policy` with `rampart apply`; the kernel is unchanged when it fails.
fn apply(exe: &Path, config: &RunConfig) -> Result<String, DaemonError> {
    let out = Command::new(exe)
        .arg("apply")
        .arg(&config.policy)
        .args(["--table", &config.table, "--state-dir"])
        .arg(nft_state_dir(config))
        .output()
        .map_err(|e| DaemonError::io(exe, e))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(DaemonError::Apply(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// Validate the policy without touching anything (`rampart check`: exit 0 or 1 = valid).
fn validate(exe: &Path, policy: &Path) -> Result<(), DaemonError> {
    let out = Command::new(exe)
        .arg("check")
        .arg(policy)
        .output()
        .map_err(|e| DaemonError::io(exe, e))?;
    match out.status.code() {
        Some(0) | Some(1) => Ok(()),
        _ => Err(DaemonError::Apply(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        )),
    }
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
        make_private_dir(&config.state_dir)?;
        std::fs::create_dir_all(config.state_dir.join("events"))
            .map_err(|e| DaemonError::io(&config.state_dir, e))?;
        validate(&exe, &config.policy)?;
        if config.apply {
            apply(&exe, &config)?;
        }
        let store = Store::open(&config.store_path())?;
        if let Some(dir) = config.events_jsonl.parent() {
            std::fs::create_dir_all(dir).map_err(|e| DaemonError::io(dir, e))?;
        }
        let jsonl = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&config.events_jsonl)
            .map_err(|e| DaemonError::io(&config.events_jsonl, e))?;
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
        });
        let handle = DaemonHandle {
            stop: Arc::new(AtomicBool::new(false)),
            hangup: Arc::new(AtomicBool::new(false)),
        };
        let daemon = Self {
            shared,
            requests,
            events_tx,
            events_rx,
            supervisor,
            tails,
            store,
            jsonl,
            started: Instant::now(),
        };
        daemon.daemon_event("allow", "daemon started; policy applied".into());
        Ok((daemon, handle))
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
        let config = &self.shared.config;
        let result = validate(&self.shared.exe, &config.policy).and_then(|()| {
            if config.apply {
                apply(&self.shared.exe, config)
            } else {
                Ok(String::new())
            }
        });
        let outcome = match result {
            Ok(_) => {
                self.supervisor.reload(Instant::now());
                *self
                    .shared
                    .coverage
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) =
                    coverage(&self.shared.exe, &config.policy);
                Ok(format!("reloaded {}", config.policy.display()))
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
                }
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
            {
                let mut snap = self
                    .shared
                    .snapshot
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                snap.components = self.supervisor.status(now);
            }
            std::thread::sleep(TICK);
        }
        self.daemon_event("allow", "daemon stopping".into());
        self.supervisor.shutdown();
        self.move_events();
        Ok(())
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
        if self.store.insert(&batch, unix_now_ns()).is_err() {
            let mut snap = self
                .shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            snap.store_errors += batch.len() as u64;
        }
    }

    /// Seconds since start.
    pub fn uptime_s(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
