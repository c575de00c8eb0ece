//! Apply, confirm, rollback and the detached rollback watcher.
//!
//! State machine (files in [`StateDir`]):
//!
//! ```text
//!   apply ──check fails──▶ (unchanged)
//!     │ snapshot live → previous.nft candidate; nft -f (atomic)
//!     ├─ no --confirm ──▶ APPLIED
//!     └─ --confirm T ───▶ PENDING (pending.json, watcher spawned with setsid)
//!            ├─ rampart confirm: rename pending→confirmed ──▶ APPLIED
//!            └─ deadline: watcher renames pending→rolling, nft -f previous.nft ──▶ ROLLED BACK
//!   rollback (manual): cancels a pending apply, restores previous.nft, and saves the
//!   table it replaced as the new previous.nft (so a second rollback undoes the first).
//! ```

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rampart_nft::app_queue::QueueRule;
use rampart_nft::plan::{diff, Change, Listing};

use crate::extras;
use crate::runner::Nft;
use crate::state::{unix_now, Pending, RuleMap, StateDir};
use crate::ApplyError;

/// How to start the rollback watcher: a program and its arguments; an argument `{id}` is
/// replaced by the apply id (also in env `RAMPART_PENDING_ID`). The CLI re-executes itself
/// (`rampart rollback --pending {id} --state-dir DIR`).
#[derive(Clone, Debug)]
pub struct WatcherCommand {
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
}

/// The restore transaction for a listing (`None`: the table was absent).
pub fn restore_text(table: &str, listing: Option<&str>) -> String {
    let mut out = format!("table inet {table} {{\n}}\ndelete table inet {table}\n");
    if let Some(l) = listing {
        out.push_str(l);
        if !l.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

/// A saved way back to the live table.
#[derive(Clone, Debug)]
enum Previous {
    /// An nft transaction (`previous.nft`).
    Text(String),
    /// A netlink batch (`previous.batch`, [`crate::fastload::snapshot_live`]): used for tables
    /// with ≥ 100k elements, whose text listing and check cost tens of seconds.
    Batch(Vec<u8>),
}

/// Snapshot the live table: a netlink batch for big tables (verified replay), else a restore
/// transaction that `nft -c` accepts. When the listing cannot be reloaded (nft 1.0.6 prints
/// `socket cgroupv2` as a number it cannot parse back), fall back to the last applied
/// transaction.
fn snapshot(nft: &Nft, state: &StateDir, table: &str) -> Result<Previous, ApplyError> {
    match crate::fastload::snapshot_live(nft, table, crate::fastload::NETLINK_MIN_ELEMENTS) {
        Ok(Some(batch)) => {
            state.log(&format!(
                "snapshot of the live table as a netlink batch ({} bytes)",
                batch.len()
            ));
            return Ok(Previous::Batch(batch));
        }
        Ok(None) => {}
        Err(e) => state.log(&format!("netlink snapshot not used: {e}")),
    }
    let live = nft.list_table(table, false)?;
    let text = restore_text(table, live.as_deref());
    let path = state.file("snapshot.nft");
    state.write("snapshot.nft", &text)?;
    match nft.check_file(&path) {
        Ok(()) => Ok(Previous::Text(text)),
        Err(e) => match state.read("applied.nft")? {
            Some(applied) => {
                state.log(&format!("snapshot not reloadable ({e}); using applied.nft"));
                Ok(Previous::Text(applied))
            }
            None => Err(ApplyError::Unrestorable(e.to_string())),
        },
    }
}

/// Save `p` as the way back (exactly one of `previous.nft` / `previous.batch` exists after).
fn write_previous(state: &StateDir, p: &Previous) -> Result<(), ApplyError> {
    match p {
        Previous::Text(t) => {
            state.write("previous.nft", t)?;
            let _ = std::fs::remove_file(state.file("previous.batch"));
        }
        Previous::Batch(b) => {
            let path = state.file("previous.batch");
            let tmp = state.file("previous.batch.tmp");
            std::fs::write(&tmp, b)
                .and_then(|()| std::fs::rename(&tmp, &path))
                .map_err(|source| ApplyError::State {
                    path: path.display().to_string(),
                    source,
                })?;
            let _ = std::fs::remove_file(state.file("previous.nft"));
        }
    }
    Ok(())
}

fn read_previous(state: &StateDir) -> Result<Option<Previous>, ApplyError> {
    let path = state.file("previous.batch");
    match std::fs::read(&path) {
        Ok(b) => return Ok(Some(Previous::Batch(b))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(ApplyError::State {
                path: path.display().to_string(),
                source,
            })
        }
    }
    Ok(state.read("previous.nft")?.map(Previous::Text))
}

/// What to apply.
#[derive(Clone, Debug)]
pub struct ApplyRequest {
    /// The compiled transaction.
    pub text: String,
    /// nft table name.
    pub table: String,
    /// Rule map for status and log.
    pub map: RuleMap,
    /// Confirm window; `None`: apply for good.
    pub confirm: Option<Duration>,
    /// How to start the watcher (required with `confirm`).
    pub watcher: Option<WatcherCommand>,
    /// The NFQUEUE rules the table needs (`rampart_nft::app_queue::queue_rules`); Rampart's
    /// live queue rules are replaced by exactly these (none: removed).
    pub queue: Vec<QueueRule>,
    /// Sysctls the table needs in this namespace
    /// (`rampart_nft::app_queue::required_sysctls`); the apply is refused if one cannot be set.
    pub sysctls: Vec<(String, String)>,
}

/// Result of an apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    /// Apply id.
    pub id: String,
    /// Pending confirmation deadline (unix ms), when `--confirm` was given.
    pub pending: Option<u128>,
    /// The watcher's pid.
    pub watcher_pid: Option<u32>,
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

/// Check, snapshot, apply atomically, and (with a confirm window) start the watcher.
pub fn apply(nft: &Nft, state: &StateDir, req: &ApplyRequest) -> Result<Applied, ApplyError> {
    if let Some(p) = state.read_json::<Pending>("pending.json")? {
        return Err(ApplyError::Nft {
            action: "apply",
            stderr: format!(
                "apply {} is still pending confirmation; run `rampart confirm` or `rampart rollback` first",
                p.id
            ),
        });
    }
    if req.confirm.is_some() && req.watcher.is_none() {
        return Err(ApplyError::NoPending(Some(
            "(a confirm window needs a watcher command)".into(),
        )));
    }
    state.write("staged.nft", &req.text)?;
    // Big transactions go to the kernel over netlink: nft parses only the table part, in a
    // scratch namespace, where its replay is verified; that load is the check. Else JSON
    // (verified the same way), else the text.
    let fast = match crate::fastload::prepare(
        nft,
        &req.text,
        &req.table,
        crate::fastload::NETLINK_MIN_ELEMENTS,
        &state.root,
    ) {
        Ok(Ok(p)) => {
            state.log(&format!(
                "staged transaction loads over netlink ({} elements)",
                p.source_elements
            ));
            Some(p)
        }
        Ok(Err(crate::fastload::Skipped::Small)) => None,
        Ok(Err(crate::fastload::Skipped::Fallback(why))) => {
            state.log(&format!("netlink load not used: {why}"));
            None
        }
        Err(e) => {
            state.log(&format!("netlink load not used: {e}"));
            None
        }
    };
    let json = match fast {
        Some(_) => None,
        None => crate::json::to_json(
            nft,
            &req.text,
            &req.table,
            crate::json::JSON_MIN_ELEMENTS,
            &state.root,
        )?,
    };
    match (&fast, &json) {
        (Some(_), _) => {}
        (None, Some(j)) => {
            state.write("staged.json", j)?;
            nft.check_json_file(&state.file("staged.json"))?;
            state.log("staged transaction loads as JSON");
        }
        (None, None) => nft.check_file(&state.file("staged.nft"))?,
    }
    let previous = snapshot(nft, state, &req.table)?;
    let mut new_queue = req.queue.clone();
    new_queue.sort();
    let old_queue = extras::live_queue_rules(nft, &req.table)?;
    // Order: settings, then queue rules, then the table; each failure undoes the steps before
    // it, so a failed apply leaves the old table, the old queue rules and the old settings.
    let old_sysctls = extras::set_sysctls(nft, &req.sysctls)?;
    if let Err(e) = extras::replace_queue_rules(nft, &old_queue, &new_queue) {
        extras::restore_sysctls(nft, &old_sysctls);
        return Err(e);
    }
    let loaded = match (&fast, &json) {
        (Some(p), _) => match crate::fastload::load(p, nft.netns.as_deref()) {
            Ok(()) => Ok(()),
            Err(e) => {
                // The kernel applied nothing; nft's own path gets the final word (and, if the
                // transaction is really refused, reports it in nft's terms).
                state.log(&format!("netlink load failed ({e}); loading with nft"));
                nft.check_file(&state.file("staged.nft"))
                    .and_then(|()| nft.apply_file(&state.file("staged.nft")))
            }
        },
        (None, Some(_)) => nft.apply_json_file(&state.file("staged.json")),
        (None, None) => nft.apply_file(&state.file("staged.nft")),
    };
    let _ = std::fs::remove_file(state.file("staged.json"));
    if let Err(e) = loaded {
        let _ = extras::replace_queue_rules(nft, &new_queue, &old_queue);
        extras::restore_sysctls(nft, &old_sysctls);
        return Err(e);
    }
    let id = format!("{}-{}", unix_now(), std::process::id());
    state.write_json("previous.queue.json", &old_queue)?;
    state.write_json("previous.sysctls.json", &old_sysctls)?;
    write_previous(state, &previous)?;
    state.claim("staged.nft", "applied.nft")?;
    state.write_json("applied.json", &req.map)?;
    let _ = std::fs::remove_file(state.file("snapshot.nft"));
    state.log(&format!("applied {id}"));
    let Some(window) = req.confirm else {
        return Ok(Applied {
            id,
            pending: None,
            watcher_pid: None,
        });
    };
    let deadline = now_ms() + window.as_millis();
    state.write_json(
        "pending.json",
        &Pending {
            id: id.clone(),
            deadline_unix_ms: deadline,
            table: req.table.clone(),
        },
    )?;
    let spawned = match &req.watcher {
        Some(w) => spawn_watcher(state, w, &id),
        None => Err(ApplyError::NoPending(Some(id.clone()))),
    };
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            // No watcher, no safety net: undo now rather than leave an unguarded apply.
            let _ = rollback_pending(nft, state, &id);
            return Err(e);
        }
    };
    state.log(&format!(
        "pending {id} until {deadline} (watcher pid {pid})"
    ));
    Ok(Applied {
        id,
        pending: Some(deadline),
        watcher_pid: Some(pid),
    })
}

/// How the watcher is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Launcher {
    /// A transient systemd service (`systemd-run`): survives the end of the login session even
    /// where logind kills every process of a closed session (`KillUserProcesses=yes`), which a
    /// new session (`setsid`) does not escape.
    Systemd,
    /// A child in a new session (`setsid`): survives the applier's death and the terminal's
    /// hangup.
    Setsid,
}

/// Systemd only when it is running (`/run/systemd/system`), `systemd-run` exists, and the
/// applier is in PID 1's network namespace: a transient unit runs in PID 1's namespaces, so from
/// any other namespace (containers, `ip netns exec`) it would restore the wrong ruleset.
/// `RAMPART_WATCHER=setsid|systemd` overrides the choice.
fn pick_launcher(
    forced: Option<&str>,
    systemd_booted: bool,
    has_systemd_run: bool,
    same_netns_as_pid1: bool,
) -> Launcher {
    match forced {
        Some("setsid") => Launcher::Setsid,
        Some("systemd") => Launcher::Systemd,
        _ if systemd_booted && has_systemd_run && same_netns_as_pid1 => Launcher::Systemd,
        _ => Launcher::Setsid,
    }
}

fn launcher() -> Launcher {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let same =
        matches!((ns("/proc/self/ns/net"), ns("/proc/1/ns/net")), (Some(a), Some(b)) if a == b);
    let has_run = std::env::var_os("PATH").is_some_and(|paths| {
        std::env::split_paths(&paths).any(|d| d.join("systemd-run").is_file())
    });
    pick_launcher(
        std::env::var("RAMPART_WATCHER").ok().as_deref(),
        Path::new("/run/systemd/system").is_dir(),
        has_run,
        same,
    )
}

fn spawn_watcher(state: &StateDir, w: &WatcherCommand, id: &str) -> Result<u32, ApplyError> {
    if launcher() == Launcher::Systemd {
        match spawn_watcher_systemd(w, id) {
            Ok(pid) => return Ok(pid),
            Err(e) => state.log(&format!("systemd-run failed ({e}); using setsid")),
        }
    }
    let log_path = state.file("watcher.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|source| ApplyError::State {
            path: log_path.display().to_string(),
            source,
        })?;
    let log2 = log.try_clone().map_err(|source| ApplyError::State {
        path: log_path.display().to_string(),
        source,
    })?;
    let mut cmd = Command::new(&w.program);
    cmd.args(
        w.args
            .iter()
            .map(|a| if a == "{id}" { id } else { a.as_str() }),
    )
    .env("RAMPART_PENDING_ID", id)
    .stdin(Stdio::null())
    .stdout(log)
    .stderr(log2);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent; a new session
    // means neither the applier's death nor its terminal's hangup reaches the watcher.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| ApplyError::Spawn {
        program: w.program.display().to_string(),
        source,
    })?;
    Ok(child.id())
}

/// `systemd-run --unit rampart-rollback-ID --collect …`; the watcher's pid (its unit's MainPID).
fn spawn_watcher_systemd(w: &WatcherCommand, id: &str) -> Result<u32, ApplyError> {
    let unit = format!(
        "rampart-rollback-{}",
        id.chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect::<String>()
    );
    let out = Command::new("systemd-run")
        .args(["--quiet", "--collect", "--no-ask-password", "--unit", &unit])
        .arg(format!("--setenv=RAMPART_PENDING_ID={id}"))
        .arg(&w.program)
        .args(
            w.args
                .iter()
                .map(|a| if a == "{id}" { id } else { a.as_str() }),
        )
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ApplyError::Spawn {
            program: "systemd-run".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(ApplyError::Nft {
            action: "watch",
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let pid = Command::new("systemctl")
        .args(["show", "--property", "MainPID", "--value", &unit])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(0);
    Ok(pid)
}

/// Outcome of the watcher.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchOutcome {
    /// `rampart confirm` came first.
    Confirmed,
    /// The deadline passed; the previous table is back.
    RolledBack,
    /// Another apply or a manual rollback replaced this one.
    Superseded,
}

/// Why: the watcher polls the pending file this often, so a confirm is noticed quickly.
const WATCH_POLL: Duration = Duration::from_millis(100);

/// Wait for confirmation of apply `id`; restore the previous table at the deadline.
pub fn watch(nft: &Nft, state: &StateDir, id: &str) -> Result<WatchOutcome, ApplyError> {
    loop {
        let pending = state.read_json::<Pending>("pending.json")?;
        let Some(p) = pending else {
            let confirmed = state
                .read_json::<Pending>("confirmed.json")?
                .is_some_and(|c| c.id == id);
            return Ok(if confirmed {
                WatchOutcome::Confirmed
            } else {
                WatchOutcome::Superseded
            });
        };
        if p.id != id {
            return Ok(WatchOutcome::Superseded);
        }
        let now = now_ms();
        if now >= p.deadline_unix_ms {
            return rollback_pending(nft, state, id).map(|_| WatchOutcome::RolledBack);
        }
        let left =
            Duration::from_millis((p.deadline_unix_ms - now).min(u128::from(u64::MAX)) as u64);
        std::thread::sleep(left.min(WATCH_POLL));
    }
}

/// Claim pending `id` and restore `previous.nft`.
fn rollback_pending(nft: &Nft, state: &StateDir, id: &str) -> Result<(), ApplyError> {
    if !state.claim("pending.json", "rolling.json")? {
        return Err(ApplyError::NoPending(Some(id.to_string())));
    }
    let table = state
        .read_json::<Pending>("rolling.json")?
        .map(|p| p.table)
        .unwrap_or_else(|| "rampart".into());
    let result = restore_previous(nft, state, &table).map(|_| ());
    let _ = std::fs::remove_file(state.file("rolling.json"));
    match &result {
        Ok(()) => state.log(&format!("rolled back {id}")),
        Err(e) => state.log(&format!("rollback of {id} FAILED: {e}")),
    }
    result
}

/// Restore `previous.nft`, the previous queue rules and the sysctl values the apply replaced.
/// Returns the sysctl values this replaced (the next `previous.sysctls.json`, so a second
/// manual rollback sets them again).
fn restore_previous(
    nft: &Nft,
    state: &StateDir,
    table: &str,
) -> Result<Vec<(String, String)>, ApplyError> {
    let Some(prev) = read_previous(state)? else {
        return Err(ApplyError::NoPrevious(state.root.display().to_string()));
    };
    let live_queue = extras::live_queue_rules(nft, table)?;
    match &prev {
        Previous::Text(_) => nft.apply_file(&state.file("previous.nft"))?,
        Previous::Batch(b) => crate::fastload::restore_batch(b, nft.netns.as_deref())?,
    }
    // A state dir from before queue rules existed has no file: the previous state had none.
    let prev_queue: Vec<QueueRule> = state.read_json("previous.queue.json")?.unwrap_or_default();
    extras::replace_queue_rules(nft, &live_queue, &prev_queue)?;
    // Settings last: the restored table no longer needs the values the apply set. Absent file
    // (a state dir from before settings were recorded): nothing to put back.
    let prev_sysctls: Vec<(String, String)> = state
        .read_json("previous.sysctls.json")?
        .unwrap_or_default();
    extras::set_sysctls(nft, &prev_sysctls)
}

/// `rampart confirm`: make the pending apply permanent. `id`: only if it is this one.
pub fn confirm(state: &StateDir, id: Option<&str>) -> Result<String, ApplyError> {
    let Some(p) = state.read_json::<Pending>("pending.json")? else {
        return Err(ApplyError::NoPending(id.map(str::to_string)));
    };
    if let Some(want) = id {
        if want != p.id {
            return Err(ApplyError::NoPending(Some(want.to_string())));
        }
    }
    if !state.claim("pending.json", "confirmed.json")? {
        return Err(ApplyError::NoPending(Some(p.id)));
    }
    state.log(&format!("confirmed {}", p.id));
    Ok(p.id)
}

/// `rampart rollback`: cancel any pending apply and restore the previous table; the table it
/// replaces becomes the new previous one.
pub fn rollback(nft: &Nft, state: &StateDir, table: &str) -> Result<(), ApplyError> {
    let prev = read_previous(state)?
        .ok_or_else(|| ApplyError::NoPrevious(state.root.display().to_string()))?;
    // A saved batch is checked by the kernel as it loads (all or nothing).
    if let Previous::Text(_) = prev {
        nft.check_file(&state.file("previous.nft"))?;
    }
    let current = snapshot(nft, state, table)?;
    let current_queue = extras::live_queue_rules(nft, table)?;
    let cancelled = state.claim("pending.json", "rolling.json")?;
    let replaced_sysctls = restore_previous(nft, state, table)?;
    write_previous(state, &current)?;
    state.write_json("previous.queue.json", &current_queue)?;
    state.write_json("previous.sysctls.json", &replaced_sysctls)?;
    match &prev {
        Previous::Text(t) => state.write("applied.nft", t)?,
        // No transaction text for what a batch restored: nothing stale may stand in for it.
        Previous::Batch(_) => {
            let _ = std::fs::remove_file(state.file("applied.nft"));
        }
    }
    let _ = std::fs::remove_file(state.file("rolling.json"));
    let _ = std::fs::remove_file(state.file("snapshot.nft"));
    state.log(if cancelled {
        "manual rollback (cancelled a pending apply)"
    } else {
        "manual rollback"
    });
    Ok(())
}

/// `rampart plan`: changes from the live table to the compiled transaction `text`. The compiled
/// side is loaded into a scratch network namespace (`unshare -n`) and listed back, so both sides
/// are in nft's canonical form; `wanted_elements` (from the emitter) stand in for listing the
/// scratch sets, and live static sets are listed one by one with `-j`.
pub fn plan(
    nft: &Nft,
    state: &StateDir,
    table: &str,
    text: &str,
    wanted_elements: &std::collections::BTreeMap<String, Vec<String>>,
) -> Result<Vec<Change>, ApplyError> {
    state.write("plan.nft", text)?;
    let path = state.file("plan.nft");
    let out = Command::new("unshare")
        .args([
            "-n",
            "sh",
            "-c",
            "\"$0\" -f \"$1\" && \"$0\" -t list table inet \"$2\"",
        ])
        .arg(&nft.program)
        .arg(&path)
        .arg(table)
        .output()
        .map_err(|source| ApplyError::Spawn {
            program: "unshare".into(),
            source,
        })?;
    let _ = std::fs::remove_file(&path);
    if !out.status.success() {
        return Err(ApplyError::Nft {
            action: "plan",
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let mut wanted = Listing::parse_terse(&String::from_utf8_lossy(&out.stdout));
    for (name, elems) in wanted_elements {
        if let Some(b) = wanted.blocks.get_mut(&format!("set {name}")) {
            b.elements = Some(elems.iter().cloned().collect());
        }
    }
    let live = match nft.list_table(table, true)? {
        None => None,
        Some(t) => {
            let mut l = Listing::parse_terse(&t);
            for name in l.static_sets() {
                if wanted_elements.contains_key(&name) {
                    let json = nft.list_set_json(table, &name)?;
                    l.attach_elements(&name, &json)?;
                }
            }
            Some(l)
        }
    };
    Ok(diff(live.as_ref(), &wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_text_wraps_listing_or_deletes() {
        assert_eq!(
            restore_text("t", None),
            "table inet t {\n}\ndelete table inet t\n"
        );
        let r = restore_text("t", Some("table inet t {\n}"));
        assert!(r.ends_with("delete table inet t\ntable inet t {\n}\n"));
    }

    #[test]
    fn watcher_uses_systemd_only_where_it_restores_the_right_namespace() {
        assert_eq!(pick_launcher(None, true, true, true), Launcher::Systemd);
        assert_eq!(pick_launcher(None, true, true, false), Launcher::Setsid);
        assert_eq!(pick_launcher(None, false, true, true), Launcher::Setsid);
        assert_eq!(pick_launcher(None, true, false, true), Launcher::Setsid);
        assert_eq!(
            pick_launcher(Some("setsid"), true, true, true),
            Launcher::Setsid
        );
        assert_eq!(
            pick_launcher(Some("systemd"), false, false, false),
            Launcher::Systemd
        );
    }

    #[test]
    fn confirm_and_claim_are_exclusive() {
        let dir = std::env::temp_dir().join(format!("rampart-txn-{}", std::process::id()));
        let state = StateDir::new(&dir);
        let p = Pending {
            id: "a".into(),
            deadline_unix_ms: 0,
            table: "t".into(),
        };
        state.write_json("pending.json", &p).unwrap();
        assert!(matches!(
            confirm(&state, Some("b")),
            Err(ApplyError::NoPending(_))
        ));
        assert_eq!(confirm(&state, None).unwrap(), "a");
        assert!(!state.claim("pending.json", "rolling.json").unwrap());
        assert!(matches!(
            confirm(&state, None),
            Err(ApplyError::NoPending(None))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
