//! `rampart classify`: the NFQUEUE protocol classifier in the foreground, in the current network
//! namespace. It binds the queue the emitted ruleset feeds (`rampart_nft::app_queue`), prints one
//! JSON line once bound, decides each queued packet with the policy's application-protocol
//! rules, writes one event per blocked connection, reloads the policy on SIGHUP (a bad policy
//! keeps the running one and says why), writes Prometheus counters on SIGUSR1 (with
//! `--metrics`), and on SIGINT/SIGTERM unbinds and prints a final stats line. With
//! several queues (the policy's `classifier_queues`, which the ruleset spreads over with
//! `--queue-balance A:B`, or `--queues N`) it binds N consecutive queues, one thread and socket
//! pair per queue, all deciding with one shared classifier; this (main) thread only
//! coordinates: signals, reloads, metrics.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use rampart_nfq::metrics::{prometheus, stats_json, Snapshot};
use rampart_nfq::shell::{
    lock, Conntrack, Control, Queue, QueueOptions, Runner, ShellCounters, Stopped, SystemClock,
};
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
    /// Bind this many consecutive queues from `--queue` (the queue rule's `--queue-balance
    /// A:B`), one thread each; the kernel keeps every connection on one queue. Default: the
    /// policy's `classifier_queues` (the count the compiled queue rules spread over).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..=i64::from(rampart_ir::MAX_CLASSIFIER_QUEUES)))]
    queues: Option<u16>,
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

/// How often the coordinating thread looks at the signal flags.
const COORDINATOR_TICK: Duration = Duration::from_millis(50);
/// How long a metrics dump waits for every queue thread to hand over its counters.
const DUMP_WAIT: Duration = Duration::from_secs(2);

type SharedSink = Mutex<Box<dyn rampart_events::Sink + Send>>;

/// Events from any queue thread, one at a time, into the one sink.
struct LockedSink<'a>(&'a SharedSink);

impl rampart_events::Sink for LockedSink<'_> {
    fn emit(&mut self, event: &rampart_events::Event) -> Result<(), rampart_events::EventError> {
        lock(self.0).emit(event)
    }
}

/// What the coordinator and one queue thread share.
#[derive(Default)]
struct Worker {
    /// Stop/reload/dump for this thread (set by the coordinator).
    control: Control,
    /// The thread's counters as of its last hand-over.
    published: Mutex<ShellCounters>,
    /// Hand-overs so far (a dump waits for it to move).
    generation: AtomicU64,
    /// A fatal problem (the thread stopped early).
    failed: AtomicBool,
}

/// Marks a queue thread failed when it unwinds, so the coordinator stops the others (the
/// panic then ends the process when the threads are joined).
struct FailGuard<'a>(&'a AtomicBool);

impl Drop for FailGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Relaxed);
        }
    }
}

/// One queue's loop: run until stopped, apply reloads to its own queue, hand over counters on
/// dumps and at the end.
fn queue_thread(
    mut runner: Runner,
    classifier: &Mutex<Classifier<EngineLabeller>>,
    worker: &Worker,
    fail_open: &AtomicBool,
    clock: &SystemClock,
    sink: &SharedSink,
) {
    let _guard = FailGuard(&worker.failed);
    let mut events = LockedSink(sink);
    loop {
        let stopped = runner.run(classifier, &worker.control, clock, &mut events);
        match stopped {
            Stopped::Stop => break,
            Stopped::Dump => {}
            Stopped::Reload => {
                runner.forget_interfaces();
                let want = fail_open.load(Ordering::Relaxed);
                if want != runner.queue().options().fail_open {
                    if let Err(err) = runner.queue_mut().set_fail_open(want) {
                        eprintln!(
                            "rampart classify: cannot change fail-open on queue {}: {err}",
                            runner.queue().options().queue
                        );
                    }
                }
            }
        }
        *lock(&worker.published) = runner.counters.clone();
        worker.generation.fetch_add(1, Ordering::Release);
    }
    if let Err(err) = runner.queue().unbind() {
        eprintln!(
            "rampart classify: unbinding queue {} failed ({err}); the socket close unbinds anyway",
            runner.queue().options().queue
        );
    }
    *lock(&worker.published) = runner.counters.clone();
    worker.generation.fetch_add(1, Ordering::Release);
}

/// Ask every queue thread for its counters (waiting at most [`DUMP_WAIT`]) and add them up;
/// also each queue's own.
fn collect(workers: &[Worker], ask: bool) -> (ShellCounters, Vec<ShellCounters>) {
    if ask {
        let before: Vec<u64> = workers
            .iter()
            .map(|w| w.generation.load(Ordering::Acquire))
            .collect();
        for w in workers {
            w.control.dump.store(true, Ordering::Relaxed);
        }
        let deadline = Instant::now() + DUMP_WAIT;
        while Instant::now() < deadline
            && workers.iter().zip(&before).any(|(w, b)| {
                w.generation.load(Ordering::Acquire) == *b && !w.failed.load(Ordering::Relaxed)
            })
        {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let per_queue: Vec<ShellCounters> =
        workers.iter().map(|w| lock(&w.published).clone()).collect();
    let mut total = ShellCounters::default();
    for c in &per_queue {
        total.add(c);
    }
    (total, per_queue)
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let policy = load(&args.policy)?;
    let queues = args.queues.unwrap_or(policy.defaults.classifier_queues);
    if queues != policy.defaults.classifier_queues {
        eprintln!(
            "rampart classify: binding {queues} queues while {} spreads its queue rules over {}: packets on queues without a listener are {}",
            args.policy.display(),
            policy.defaults.classifier_queues,
            if policy.defaults.classifier_fail_open { "let through uninspected" } else { "dropped" }
        );
    }
    let limits = Limits {
        max_conns: args.max_conns,
        idle_timeout_ms: args.idle_timeout_s.saturating_mul(1000),
    };
    let classifier = Classifier::new(&policy, EngineLabeller, limits)?;
    if classifier.app_rule_count() == 0 {
        eprintln!(
            "rampart classify: {} has no application-protocol rules; every queued packet will be let through",
            args.policy.display()
        );
    }
    let app_rules = classifier.app_rule_count();
    let classifier = Mutex::new(classifier);
    let sink: SharedSink = Mutex::new(match &args.events {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            Box::new(rampart_events::JsonLinesSink::new(
                std::io::LineWriter::new(file),
            ))
        }
        None => Box::new(rampart_events::JsonLinesSink::new(std::io::sink())),
    });
    let fail_open = AtomicBool::new(policy.defaults.classifier_fail_open);
    let last = args.queue.checked_add(queues - 1).with_context(|| {
        format!(
            "--queue {} with {queues} queues runs past queue 65535",
            args.queue
        )
    })?;
    // Bind every queue before saying "bound": a queue that cannot be bound fails the start.
    let mut runners = Vec::with_capacity(usize::from(queues));
    let mut conntrack = true;
    for q in args.queue..=last {
        let queue = Queue::bind(QueueOptions::new(q, fail_open.load(Ordering::Relaxed)))
            .with_context(|| {
                format!("cannot bind NFQUEUE {q} (run as root; is another classifier bound?)")
            })?;
        let ct = match Conntrack::open() {
            Ok(ct) => Some(ct),
            Err(err) => {
                if conntrack {
                    eprintln!("rampart classify: no ctnetlink ({err}); connections are tracked in userspace only and no conntrack marks are set");
                }
                conntrack = false;
                None
            }
        };
        runners.push(Runner::new(queue, ct));
    }
    let conntrack = runners.iter().all(Runner::has_conntrack);
    let control = Arc::new(Control::default());
    spawn_signal_thread(Arc::clone(&control))?;
    let workers: Vec<Worker> = runners.iter().map(|_| Worker::default()).collect();
    let clock = SystemClock::default();
    println!(
        "{}",
        serde_json::json!({
            "event": "bound",
            "queue": args.queue,
            "queues": queues,
            "app_rules": app_rules,
            "fail_open": fail_open.load(Ordering::Relaxed),
            "conntrack": conntrack,
        })
    );
    std::thread::scope(|scope| {
        for (runner, worker) in runners.into_iter().zip(&workers) {
            let (classifier, fail_open, clock, sink) = (&classifier, &fail_open, &clock, &sink);
            let name = format!("rampart-nfq-{}", runner.queue().options().queue);
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    queue_thread(runner, classifier, worker, fail_open, clock, sink)
                });
            if let Err(err) = spawned {
                worker.failed.store(true, Ordering::Relaxed);
                control.stop.store(true, Ordering::Relaxed);
                eprintln!("rampart classify: cannot start a queue thread: {err}");
            }
        }
        coordinate(&args, queues, &control, &workers, &classifier, &fail_open);
        for w in &workers {
            w.control.stop.store(true, Ordering::Relaxed);
        }
    });
    let (shell, per_queue) = collect(&workers, false);
    let c = lock(&classifier);
    let snap = Snapshot {
        core: c.counters(),
        shell: &shell,
        table: c.table_stats(),
        policy: c.policy(),
    };
    if let Some(path) = &args.metrics {
        write_metrics(path, &prometheus(&snap));
    }
    let per_queue: Vec<serde_json::Value> = per_queue
        .iter()
        .zip(args.queue..)
        .map(|(s, q)| serde_json::json!({ "queue": q, "packets": s.packets }))
        .collect();
    println!(
        "{}",
        serde_json::json!({ "event": "stopped", "stats": stats_json(&snap), "per_queue": per_queue })
    );
    Ok(Outcome::Clean)
}

/// The main thread while the queue threads run: signals in, reloads and metrics out.
fn coordinate(
    args: &Args,
    queues: u16,
    control: &Control,
    workers: &[Worker],
    classifier: &Mutex<Classifier<EngineLabeller>>,
    fail_open: &AtomicBool,
) {
    loop {
        if control.stop.load(Ordering::Relaxed) {
            return;
        }
        if control.dump.swap(false, Ordering::Relaxed) {
            if let Some(path) = &args.metrics {
                let (shell, _) = collect(workers, true);
                let c = lock(classifier);
                let snap = Snapshot {
                    core: c.counters(),
                    shell: &shell,
                    table: c.table_stats(),
                    policy: c.policy(),
                };
                write_metrics(path, &prometheus(&snap));
            }
        }
        if control.reload.swap(false, Ordering::Relaxed) {
            let reloaded = load(&args.policy).and_then(|p| {
                lock(classifier)
                    .replace_policy(&p)
                    .map(|()| p)
                    .map_err(anyhow::Error::from)
            });
            match reloaded {
                Ok(p) => {
                    fail_open.store(p.defaults.classifier_fail_open, Ordering::Relaxed);
                    if p.defaults.classifier_queues != queues {
                        // Threads and sockets are bound at start; a reload cannot add or
                        // remove them.
                        eprintln!(
                            "rampart classify: the policy now spreads over {} queues; {queues} stay bound until a restart",
                            p.defaults.classifier_queues
                        );
                    }
                    // Each queue thread forgets its interface names and sets fail-open on its
                    // own queue.
                    for w in workers {
                        w.control.reload.store(true, Ordering::Relaxed);
                    }
                    eprintln!(
                        "rampart classify: reloaded {} ({} application-protocol rules)",
                        args.policy.display(),
                        lock(classifier).app_rule_count()
                    );
                }
                Err(err) => eprintln!(
                    "rampart classify: reload refused, still classifying with the previous policy: {err:#}"
                ),
            }
        }
        if workers.iter().any(|w| w.failed.load(Ordering::Relaxed)) {
            return;
        }
        std::thread::sleep(COORDINATOR_TICK);
    }
}
