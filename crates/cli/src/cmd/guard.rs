//! `rampart guard`: the L2 guard in the foreground (see docs/guard.md). It applies its bridge
//! (and host) tables, prints one JSON line `{"event":"started",...}` once it enforces, appends
//! events to the configured file, on SIGHUP re-reads its configuration and switches to it in
//! place (bindings kept; a bad file changes nothing), and on SIGINT/SIGTERM deletes its
//! tables, saves the binding table and prints `{"event":"stopped",...}` with its counters.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart guard`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Configuration file (TOML; see docs/guard.md).
    #[arg(long)]
    config: PathBuf,
    /// Validate the configuration and print the nftables text the guard would apply, then exit.
    #[arg(long)]
    print_ruleset: bool,
}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    // Only atomic stores: async-signal-safe.
    if signal == libc::SIGHUP {
        RELOAD.store(true, Ordering::Relaxed);
    } else {
        STOP.store(true, Ordering::Relaxed);
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = rampart_guard::Config::from_toml(&text)
        .with_context(|| format!("{} is not valid", args.config.display()))?;
    if args.print_ruleset {
        let now_s = rampart_guard::shell::now_ns() / 1_000_000_000;
        let bindings =
            rampart_guard::shell::load_bindings(&config.bindings_file, config.max_bindings, now_s)?;
        if let Some(t) = rampart_guard::ruleset::bridge_table(&config, &bindings, now_s) {
            print!("{t}");
        }
        if let Some(t) = rampart_guard::ruleset::host_table(&config) {
            print!("{t}");
        }
        return Ok(Outcome::Clean);
    }
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: installing a handler that only stores to an atomic; no SA_RESTART, so a
        // blocked poll(2) returns EINTR and the loop sees the flag.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
    let path = args.config.clone();
    let load = move || -> Result<rampart_guard::Config, rampart_guard::GuardError> {
        let text =
            std::fs::read_to_string(&path).map_err(|source| rampart_guard::GuardError::Io {
                path: path.display().to_string(),
                source,
            })?;
        rampart_guard::Config::from_toml(&text)
    };
    let reload = rampart_guard::shell::Reload {
        requested: &RELOAD,
        load: &load,
    };
    let summary = rampart_guard::shell::run(config, &STOP, Some(reload), |started| {
        let mut line = serde_json::to_value(started).unwrap_or_default();
        line["event"] = "started".into();
        println!("{line}");
    })
    .context("rampart guard")?;
    let mut line = serde_json::to_value(&summary).unwrap_or_default();
    line["event"] = "stopped".into();
    println!("{line}");
    Ok(Outcome::Clean)
}
