//! `rampart jail`: the exec jail for per-program egress in the foreground. It creates the
//! programs' cgroups, moves running instances into them, prints one JSON line naming each
//! program's cgroup (what policy rules put in `owner.cgroup`), then holds every exec of a jailed
//! program until the process is in its cgroup. Stops on SIGINT or SIGTERM and prints its
//! counters as a final JSON line.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart jail`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Jail configuration (TOML; see docs/jail.md).
    #[arg(long)]
    config: PathBuf,
    /// Append one JSON line per jailed or refused exec to this file.
    #[arg(long)]
    events: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = rampart_jail::Config::from_toml(&text)
        .with_context(|| format!("{} is not valid", args.config.display()))?;
    let events: Option<Box<dyn Write + Send>> = match &args.events {
        Some(path) => {
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Some(Box::new(BufWriter::new(file)))
        }
        None => None,
    };
    let mount = rampart_jail::cgroup2_mount()?;
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(signal, request_stop as *const () as libc::sighandler_t);
        }
    }
    let mut jail = rampart_jail::Jail::start(config, &mount, events)?;
    let programs: Vec<_> = jail
        .config()
        .programs
        .iter()
        .map(|p| serde_json::json!({ "name": p.name, "cgroup": jail.config().cgroup_of(p) }))
        .collect();
    println!(
        "{}",
        serde_json::json!({
            "event": "ready",
            "cgroup_mount": mount,
            "programs": programs,
            "running_jailed": jail.stats().running_jailed,
        })
    );
    std::io::stdout().flush()?;
    jail.run(&STOP)?;
    println!(
        "{}",
        serde_json::json!({ "event": "stopped", "stats": jail.stats() })
    );
    Ok(Outcome::Clean)
}
