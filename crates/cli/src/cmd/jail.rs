//! `rampart jail`: the exec jail for per-program egress in the foreground. The programs come
//! from the jail's own configuration (`--config`) or from a policy's `[[programs]]` and
//! `[jail]` (`--policy`, the same file `rampart apply` loads, so rules and jail agree on the
//! cgroups by construction). It creates the programs' cgroups, moves running instances into them, prints one JSON line naming each
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
#[command(group(clap::ArgGroup::new("programs").required(true).args(["config", "policy"])))]
pub(crate) struct Args {
    /// Jail configuration (TOML; see docs/jail.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Policy whose `[[programs]]` and `[jail]` say what to jail (see docs/policy.md).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Append one JSON line per jailed or refused exec to this file.
    #[arg(long)]
    events: Option<PathBuf>,
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = match (&args.config, &args.policy) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            rampart_jail::Config::from_toml(&text)
                .with_context(|| format!("{} is not valid", path.display()))?
        }
        (None, Some(path)) => {
            let policy = crate::load::policy(path)?;
            rampart_jail::Config::from_policy(&policy)
                .with_context(|| format!("{} cannot drive the jail", path.display()))?
        }
        // clap's group makes exactly one of them present; say so anyway rather than panic.
        _ => anyhow::bail!("give exactly one of --config JAIL_TOML or --policy POLICY"),
    };
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
