//! `rampart guard`: the L2 guard in the foreground (see docs/guard.md). It applies its bridge
//! (and host) tables, prints one JSON line `{"event":"started",...}` once it enforces, appends
//! events to the configured file, on SIGHUP re-reads its configuration and switches to it in
//! place (bindings kept; a bad file changes nothing), and on SIGINT/SIGTERM deletes its
//! tables, saves the binding table and prints `{"event":"stopped",...}` with its counters.
//! With `--policy` the port trust, static bindings, rate limits and blocked protocols come from
//! the policy's `[l2]` and are merged with the runtime `--config` (state files, table, canary);
//! a reload re-reads both.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart guard`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).multiple(true).args(["config", "policy"])))]
pub(crate) struct Args {
    /// Configuration file (TOML; see docs/guard.md). With `--policy`: the runtime part (state
    /// files, table, canary); a key also set in the policy's `[l2]` is an error.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Policy whose `[l2]` gives the port trust and the other policy-level settings.
    #[arg(long)]
    policy: Option<PathBuf>,
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

/// The guard's configuration from the file, the policy's `[l2]`, or both merged.
fn load(config: Option<&Path>, policy: Option<&Path>) -> anyhow::Result<rampart_guard::Config> {
    let text = config
        .map(|path| {
            std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
        })
        .transpose()?;
    match (policy, config) {
        (None, Some(path)) => rampart_guard::Config::from_toml(text.as_deref().unwrap_or_default())
            .with_context(|| format!("{} is not valid", path.display())),
        (Some(policy_path), _) => {
            let policy = crate::load::policy(policy_path)?;
            let l2 = policy.l2.as_ref().with_context(|| {
                format!(
                    "{} has no [l2]: give the guard's port trust there, or run with --config alone",
                    policy_path.display()
                )
            })?;
            let policy_name = policy_path.display().to_string();
            let runtime_name = config.map(|p| p.display().to_string());
            rampart_guard::Config::from_policy(
                l2,
                text.as_deref(),
                rampart_guard::config::Sources {
                    policy: &policy_name,
                    runtime: runtime_name.as_deref(),
                },
            )
            .with_context(|| {
                format!(
                    "the guard configuration from {policy_name}{} is not valid",
                    runtime_name
                        .as_deref()
                        .map(|r| format!(" and {r}"))
                        .unwrap_or_default()
                )
            })
        }
        (None, None) => anyhow::bail!("give --config GUARD_TOML, --policy POLICY, or both"),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = load(args.config.as_deref(), args.policy.as_deref())?;
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
    let (config_path, policy_path) = (args.config.clone(), args.policy.clone());
    let load = move || -> Result<rampart_guard::Config, rampart_guard::GuardError> {
        match (&config_path, &policy_path) {
            (Some(path), None) => {
                let text = std::fs::read_to_string(path).map_err(|source| {
                    rampart_guard::GuardError::Io {
                        path: path.display().to_string(),
                        source,
                    }
                })?;
                rampart_guard::Config::from_toml(&text)
            }
            // Why: the reload contract is "a bad file changes nothing"; the whole chain of
            // context (the policy's diagnostics included) goes into the refusal reported.
            _ => load(config_path.as_deref(), policy_path.as_deref())
                .map_err(|e| rampart_guard::GuardError::Config(format!("{e:#}"))),
        }
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
