//! `rampart run`: the daemon. Applies the policy, supervises the components the run
//! configuration lists, stores their events, serves the control socket and (optionally) the
//! loopback HTTP listener with `/metrics` and the dashboard. SIGHUP reloads (a bad policy
//! changes nothing and says why); SIGINT/SIGTERM stop the components and the daemon. Prints one
//! JSON line when ready (with the HTTP address, so tests can ask for port 0).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart run`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Run configuration (TOML; see docs/daemon.md).
    #[arg(long)]
    config: PathBuf,
}

static STOP: AtomicBool = AtomicBool::new(false);
static HANGUP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

extern "C" fn on_hangup(_signal: libc::c_int) {
    HANGUP.store(true, Ordering::Relaxed);
}

pub(crate) fn load_config(path: &Path) -> anyhow::Result<rampart_daemon::RunConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() {
        std::env::current_dir()?
    } else {
        base
    };
    rampart_daemon::RunConfig::from_toml(&text, &base)
        .with_context(|| format!("{} is not valid", path.display()))
}

/// Where `rampart confirm`, `rollback` and `log` act.
pub(crate) enum Target {
    /// A running daemon: over its control socket.
    Daemon(rampart_daemon::RunConfig),
    /// Directly on a state directory (`None`: the default) and table (`None`: the default).
    Local {
        state_dir: Option<PathBuf>,
        table: Option<String>,
    },
}

/// The run configuration looked for when none is given: `$RAMPART_RUN_CONFIG` (`true`: set
/// explicitly), else the packaged service's.
fn default_run_config() -> (PathBuf, bool) {
    match std::env::var_os("RAMPART_RUN_CONFIG").filter(|p| !p.is_empty()) {
        Some(path) => (PathBuf::from(path), true),
        None => (PathBuf::from("/etc/rampart/run.toml"), false),
    }
}

/// Decide where a command acts. `--config` names a daemon: its control socket when it runs,
/// else its state directory and table directly. An explicit `--state-dir` means the standalone
/// state. With neither, a daemon of the default run configuration that answers gets the
/// request; otherwise the standalone default (so nothing changes where no daemon runs).
pub(crate) fn target(config: Option<&Path>, state_dir: Option<&Path>) -> anyhow::Result<Target> {
    if let Some(path) = config {
        let config = load_config(path)?;
        if rampart_daemon::control::is_running(&config.control_socket()) {
            return Ok(Target::Daemon(config));
        }
        return Ok(Target::Local {
            state_dir: Some(rampart_daemon::daemon::nft_state_dir(&config)),
            table: Some(config.table),
        });
    }
    if state_dir.is_none() {
        let (path, explicit) = default_run_config();
        // A missing, unreadable or invalid packaged configuration is not this command's
        // business: it simply means no daemon to talk to. One named by the environment is.
        let config = match load_config(&path) {
            Ok(config) => Some(config),
            Err(e) if explicit => return Err(e.context("RAMPART_RUN_CONFIG")),
            Err(_) => None,
        };
        if let Some(config) = config {
            if rampart_daemon::control::is_running(&config.control_socket()) {
                return Ok(Target::Daemon(config));
            }
        }
    }
    Ok(Target::Local {
        state_dir: state_dir.map(Path::to_path_buf),
        table: None,
    })
}

/// Send `request` to the daemon; its message on success, its error as the command's error.
pub(crate) fn ask(
    config: &rampart_daemon::RunConfig,
    request: &rampart_daemon::control::ControlRequest,
) -> anyhow::Result<String> {
    let reply = rampart_daemon::control::request(&config.control_socket(), request)?;
    match reply["ok"].as_bool() {
        Some(true) => Ok(reply["message"].as_str().unwrap_or("done").to_string()),
        _ => anyhow::bail!(
            "the daemon refused: {}",
            reply["error"].as_str().unwrap_or("no reason given")
        ),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = load_config(&args.config)?;
    let token = match &config.http {
        Some(http) => {
            let text = std::fs::read_to_string(&http.token_file).with_context(|| {
                format!(
                    "cannot read the HTTP token file {}",
                    http.token_file.display()
                )
            })?;
            let token = text.lines().next().unwrap_or("").trim().to_string();
            anyhow::ensure!(
                token.len() >= 16,
                "{}: the token must be at least 16 characters",
                http.token_file.display()
            );
            Some(token)
        }
        None => None,
    };
    let exe = std::env::current_exe().context("cannot locate the rampart binary")?;
    let control = config.control_socket();
    let http = config.http.clone();
    let (mut daemon, handle) = rampart_daemon::Daemon::start(config, exe, token)?;
    rampart_daemon::control::serve(&control, daemon.shared())?;
    let http_addr = match http {
        Some(http) => Some(rampart_daemon::http::serve(http.listen, daemon.shared())?),
        None => None,
    };
    for (signal, handler) in [
        (libc::SIGINT, on_stop as extern "C" fn(libc::c_int)),
        (libc::SIGTERM, on_stop),
        (libc::SIGHUP, on_hangup),
    ] {
        // SAFETY: the handlers only store to atomics, which is async-signal-safe.
        unsafe {
            libc::signal(signal, handler as *const () as libc::sighandler_t);
        }
    }
    println!(
        "{}",
        serde_json::json!({ "event": "ready", "control": control, "http": http_addr.map(|a| a.to_string()) })
    );
    // Bridge the process-wide signal flags to the daemon's handle.
    let stop = handle.stop.clone();
    let hangup = handle.hangup.clone();
    std::thread::spawn(move || loop {
        if STOP.load(Ordering::Relaxed) {
            stop.store(true, Ordering::Relaxed);
            return;
        }
        if HANGUP.swap(false, Ordering::Relaxed) {
            hangup.store(true, Ordering::Relaxed);
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    });
    daemon.run(&handle)?;
    let _ = std::fs::remove_file(&control);
    Ok(Outcome::Clean)
}
