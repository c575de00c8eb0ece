//! `rampart`: the one binary. A thin shell over the library crates: it parses arguments,
//! reads files, talks to the kernel through the shell crates, and maps every outcome to an exit
//! code in one place ([`Outcome::exit_code`]): 0 ok, 1 findings or blocked, 2 invalid input or
//! error.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cmd;
mod load;
mod serve;

/// mimalloc instead of glibc malloc: the WAF's rule engine allocates per transaction, and with
/// glibc's allocator (`_int_malloc`, `malloc_consolidate`) that was about a fifth of a small
/// GET's CPU time; mimalloc took the in-process CRS evaluation of that GET from ~90 to ~71 µs
/// (docs/waf.md, session 7). Its defaults hold on to memory, see [`tune_allocator`].
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (numbering of `mi_option_e`, mimalloc v3), in ms.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory over speed, except on the WAF's request path. With mimalloc's defaults on a kernel
/// with transparent huge pages always on, `rampart dns` held 74 MiB after loading a 1M-domain
/// list where the same code under glibc holds 38 MiB (target ≤ 50 MiB per million), and the
/// WAF 67 MiB under load: mimalloc's arenas fill whole 2 MiB huge pages. Without THP and
/// with freed pages returned at once (`purge_delay` 0, read when mimalloc next purges) the
/// forwarder holds 42 MiB. The WAF keeps mimalloc's 1 s purge delay (returning pages at once
/// cost ~5% of its small-GET throughput); without THP it holds 42 MiB under load at the same
/// throughput (docs/waf.md, session 7).
fn tune_allocator(command: &Command) {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments and only sets a flag of this
    // process (inherited by its children); a failure leaves THP as it was, which is harmless.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
    if !matches!(command, Command::Waf(_)) {
        // SAFETY: `mi_option_set` stores an integer that mimalloc reads when it next purges;
        // no other thread of this process runs yet.
        unsafe {
            libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0);
        }
    }
}

/// What a subcommand concluded, when it did not fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything as expected.
    Clean,
    /// The command ran and found something the user must look at (findings, blocked flows,
    /// failed scenarios, a refused apply).
    Findings,
}

impl Outcome {
    fn exit_code(self) -> ExitCode {
        match self {
            Outcome::Clean => ExitCode::from(0),
            Outcome::Findings => ExitCode::from(1),
        }
    }
}

/// Exit code for invalid input and every other error.
const EXIT_ERROR: u8 = 2;

#[derive(Parser, Debug)]
#[command(
    name = "rampart",
    version,
    about = "Filter network traffic (ATT&CK M1037) from one declarative policy, and prove it.",
    propagate_version = true
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Validate a policy and analyse it: shadowed and redundant rules, IPv4/IPv6 gaps, risky accepts.
    Check(cmd::check::Args),
    /// ATT&CK M1037 coverage of a policy: terminal table, JSON or an ATT&CK Navigator layer.
    Coverage(cmd::coverage::Args),
    /// Compile a policy to an nftables ruleset (printed, not applied).
    Compile(cmd::compile::Args),
    /// Show what applying a policy would change in the live kernel ruleset.
    Plan(cmd::plan::Args),
    /// Apply a policy atomically, optionally with confirm-or-rollback.
    Apply(cmd::apply::Args),
    /// Confirm a pending `apply --confirm`, cancelling its rollback.
    Confirm(cmd::confirm::Args),
    /// Restore the previously applied ruleset.
    Rollback(cmd::rollback::Args),
    /// Per-rule packet and byte counters, mapped back to policy rules and techniques.
    Status(cmd::status::Args),
    /// Follow NFLOG drops and print each with its policy rule, file:line and technique.
    Log(cmd::log::Args),
    /// Replay a pcap/pcapng capture through the policy and report verdicts per flow, rule and technique.
    Simulate(cmd::simulate::Args),
    /// Explain the verdict for one flow, rule by rule.
    Explain(cmd::explain::Args),
    /// Run the filtering DNS forwarder (block lists, rebinding guard, tunnelling detection).
    Dns(cmd::dns::Args),
    /// Run the daemon: apply the policy, supervise its components, store events, serve metrics and the dashboard.
    Run(cmd::run::Args),
    /// Ask the running daemon to reload the policy (a bad policy changes nothing), or show its status.
    Reload(cmd::reload::Args),
    /// Query the daemon's events store by time, component, technique, source, rule and verdict.
    Events(cmd::events::Args),
    /// Run the egress (forward) proxy: per-source destination allowlists, SSRF-safe resolution, SNI checked against CONNECT.
    Egress(cmd::egress::Args),
    /// Run the WAF reverse proxy with the OWASP Core Rule Set.
    Waf(cmd::waf::Args),
    /// Run the L2 guard on a bridge: DHCP snooping, ARP inspection, poisoner detection.
    Guard(cmd::guard::Args),
    /// Run the exec jail: per-program egress (processes of named programs land in their cgroup before they run).
    Jail(cmd::jail::Args),
    /// Run the NFQUEUE protocol classifier: filter protocols wherever they run, not by port.
    Classify(cmd::classify::Args),
    /// Threat-intel feeds: check files, list, refresh into the kernel, show the cache.
    #[command(subcommand)]
    Feeds(cmd::feeds::Command),
    /// Play the ATT&CK range in network namespaces against a policy and score it per technique.
    Lab(cmd::lab::Args),
    /// Shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    Completions(cmd::completions::Args),
    /// Write man pages for rampart and every subcommand.
    Man(cmd::man::Args),
    /// Benchmarks (ClassBench classification).
    #[command(subcommand)]
    Bench(cmd::bench::Command),
}

fn main() -> ExitCode {
    restore_default_sigpipe();
    let cli = Cli::parse();
    tune_allocator(&cli.command);
    let result = match cli.command {
        Command::Check(args) => cmd::check::run(args),
        Command::Coverage(args) => cmd::coverage::run(args),
        Command::Compile(args) => cmd::compile::run(args),
        Command::Plan(args) => cmd::plan::run(args),
        Command::Apply(args) => cmd::apply::run(args),
        Command::Confirm(args) => cmd::confirm::run(args),
        Command::Rollback(args) => cmd::rollback::run(args),
        Command::Status(args) => cmd::status::run(args),
        Command::Log(args) => cmd::log::run(args),
        Command::Simulate(args) => cmd::simulate::run(args),
        Command::Explain(args) => cmd::explain::run(args),
        Command::Dns(args) => cmd::dns::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Reload(args) => cmd::reload::run(args),
        Command::Events(args) => cmd::events::run(args),
        Command::Egress(args) => cmd::egress::run(args),
        Command::Waf(args) => cmd::waf::run(args),
        Command::Guard(args) => cmd::guard::run(args),
        Command::Jail(args) => cmd::jail::run(args),
        Command::Classify(args) => cmd::classify::run(args),
        Command::Feeds(command) => cmd::feeds::run(command),
        Command::Lab(args) => cmd::lab::run(args),
        Command::Completions(args) => cmd::completions::run(args),
        Command::Man(args) => cmd::man::run(args),
        Command::Bench(command) => cmd::bench::run(command),
    };
    match result {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            // A closed pipe (`rampart ... | head`) is not an error worth a message.
            if is_broken_pipe(&err) {
                return ExitCode::from(0);
            }
            eprintln!("rampart: {err:#}");
            ExitCode::from(EXIT_ERROR)
        }
    }
}

/// Rust ignores SIGPIPE, so `rampart … | head` would make every `print!` panic once `head`
/// exits. Restoring the default makes a closed pipe end the process quietly, as it does for
/// other Unix tools.
fn restore_default_sigpipe() {
    // SAFETY: called first thing in `main`, before any thread exists; setting a signal's
    // disposition to SIG_DFL has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
