//! `rampart classify`: the NFQUEUE protocol classifier in the foreground, in the current network
//! namespace. It binds the queue the emitted ruleset feeds (`rampart_nft::app_queue`), prints one
//! JSON line once bound, decides each queued packet with the policy's application-protocol
//! rules, writes one event per blocked connection, reloads the policy on SIGHUP (a bad policy
//! keeps the running one and says why), writes Prometheus counters on SIGUSR1 (with
//! `--metrics`), and on SIGINT/SIGTERM unbinds and prints a final stats line.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context;
use rampart_nfq::metrics::{prometheus, stats_json, Snapshot};
use rampart_nfq::shell::{Conntrack, Control, Queue, QueueOptions, Runner, Stopped, SystemClock};
use rampart_nfq::{Classifier, EngineLabeller, Limits};

use crate::Outcome;

/// Arguments of `rampart classify`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file (its application-protocol rules and `classifier_fail_open` are used).
    #[arg(long)]
    policy: PathBuf,
    /// NFQUEUE number (the emitted ruleset's `app_queue::QUEUE_NUM` by default).
    #[arg(long, default_value_t = rampart_nft::app_queue::QUEUE_NUM)]
    queue: u16,
    /// Append one JSON event per blocked connection to this file.
    #[arg(long)]
    events: Option<PathBuf>,
    /// Write Prometheus counters to this file on SIGUSR1 and on exit.
    #[arg(long)]
    metrics: Option<PathBuf>,
    /// Most connections tracked at once.
    #[arg(long, default_value_t = Limits::default().max_conns)]
    max_conns: usize,
    /// Forget connections idle this many seconds.
    #[arg(long, default_value_t = Limits::default().idle_timeout_ms / 1000)]
    idle_timeout_s: u64,
}

fn load(path: &Path) -> anyhow::Result<rampart_ir::Policy> {
    crate::load::policy(path)
}

fn spawn_signal_thread(control: Arc<Control>) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the signal runtime")?;
    // Why: register the handlers before the "bound" line so a signal sent right after it is
    // never the default action (which would kill the process without unbinding).
    let (mut int, mut term, mut hup, mut usr1) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
            signal(SignalKind::user_defined1())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("rampart-classify-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                loop {
                    tokio::select! {
                        _ = int.recv() => { control.stop.store(true, Ordering::Relaxed); break; }
                        _ = term.recv() => { control.stop.store(true, Ordering::Relaxed); break; }
                        _ = hup.recv() => control.reload.store(true, Ordering::Relaxed),
                        _ = usr1.recv() => control.dump.store(true, Ordering::Relaxed),
                    }
                }
            })
        })
        .context("cannot start the signal thread")?;
    Ok(())
}

fn write_metrics(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, path));
    if let Err(err) = written {
        eprintln!("rampart classify: cannot write {}: {err}", path.display());
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let policy = load(&args.policy)?;
    let limits = Limits {
        max_conns: args.max_conns,
        idle_timeout_ms: args.idle_timeout_s.saturating_mul(1000),
    };
    let mut classifier = Classifier::new(&policy, EngineLabeller, limits)?;
    if classifier.app_rule_count() == 0 {
        eprintln!(
            "rampart classify: {} has no application-protocol rules; every queued packet will be let through",
            args.policy.display()
        );
    }
    let mut events = match &args.events {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Some(rampart_events::JsonLinesSink::new(
                std::io::LineWriter::new(file),
            ))
        }
        None => None,
    };
    let mut discard = rampart_events::JsonLinesSink::new(std::io::sink());
    let fail_open = policy.defaults.classifier_fail_open;
    let queue = Queue::bind(QueueOptions::new(args.queue, fail_open)).with_context(|| {
        format!(
            "cannot bind NFQUEUE {} (run as root; is another classifier bound?)",
            args.queue
        )
    })?;
    let ct = match Conntrack::open() {
        Ok(ct) => Some(ct),
        Err(err) => {
            eprintln!("rampart classify: no ctnetlink ({err}); connections are tracked in userspace only and no conntrack marks are set");
            None
        }
    };
    let mut runner = Runner::new(queue, ct);
    let control = Arc::new(Control::default());
    spawn_signal_thread(Arc::clone(&control))?;
    println!(
        "{}",
        serde_json::json!({
            "event": "bound",
            "queue": args.queue,
            "app_rules": classifier.app_rule_count(),
            "fail_open": fail_open,
            "conntrack": runner.has_conntrack(),
        })
    );
    let clock = SystemClock::default();
    loop {
        let sink: &mut dyn rampart_events::Sink = match events.as_mut() {
            Some(s) => s,
            None => &mut discard,
        };
        match runner.run(&mut classifier, &control, &clock, sink) {
            Stopped::Stop => break,
            Stopped::Dump => {
                if let Some(path) = &args.metrics {
                    let (core, shell) = (classifier.counters(), &runner.counters);
                    let snap = Snapshot {
                        core,
                        shell,
                        table: classifier.table_stats(),
                        policy: classifier.policy(),
                    };
                    write_metrics(path, &prometheus(&snap));
                }
            }
            Stopped::Reload => {
                let reloaded = load(&args.policy).and_then(|p| {
                    classifier
                        .replace_policy(&p)
                        .map(|()| p)
                        .map_err(anyhow::Error::from)
                });
                match reloaded {
                    Ok(p) => {
                        runner.forget_interfaces();
                        if p.defaults.classifier_fail_open != runner.queue().options().fail_open {
                            if let Err(err) = runner.queue_mut().set_fail_open(p.defaults.classifier_fail_open) {
                                eprintln!("rampart classify: cannot change fail-open on the queue: {err}");
                            }
                        }
                        eprintln!(
                            "rampart classify: reloaded {} ({} application-protocol rules)",
                            args.policy.display(),
                            classifier.app_rule_count()
                        );
                    }
                    Err(err) => eprintln!(
                        "rampart classify: reload refused, still classifying with the previous policy: {err:#}"
                    ),
                }
            }
        }
    }
    if let Err(err) = runner.queue().unbind() {
        eprintln!("rampart classify: unbind failed ({err}); the socket close unbinds anyway");
    }
    let snap = Snapshot {
        core: classifier.counters(),
        shell: &runner.counters,
        table: classifier.table_stats(),
        policy: classifier.policy(),
    };
    if let Some(path) = &args.metrics {
        write_metrics(path, &prometheus(&snap));
    }
    println!(
        "{}",
        serde_json::json!({ "event": "stopped", "stats": stats_json(&snap) })
    );
    Ok(Outcome::Clean)
}
