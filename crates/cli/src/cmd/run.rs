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
