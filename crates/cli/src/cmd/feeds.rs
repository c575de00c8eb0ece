//! `rampart feeds`: check feed files, list a policy's feed sets, refresh them into the kernel,
//! and show what is cached. The parsing, sanity checks, cache and kernel sync live in
//! `rampart-feeds`; this is the shell around them.

use std::path::PathBuf;

use anyhow::Context;
use rampart_feeds::runner::FeedRunner;
use rampart_feeds::source::{Cache, FeedSpec};
use rampart_feeds::sync::{Layout, NftRunner};
use rampart_feeds::Format;

use crate::Outcome;

/// Where feeds are cached when `--cache-dir` is not given.
const DEFAULT_CACHE_DIR: &str = "/var/lib/rampart/feeds";

/// Feed subcommands.
#[derive(clap::Subcommand, Debug)]
pub(crate) enum Command {
    /// Parse a feed file and report entries, aggregation and every rejected line (file:line).
    Check {
        /// The feed file.
        file: PathBuf,
        /// Format (`plain`, `netset`, `spamhaus`, `tor`, `ipsum:min=3`, `csv:column=2,header`,
        /// `hosts`, `domains`, `adblock`, `rpz`, `stix`, ...); detected from content when absent.
        #[arg(long)]
        format: Option<String>,
        /// Prefixes never to block (repeatable).
        #[arg(long = "allow", value_name = "CIDR")]
        allow: Vec<ipnet::IpNet>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the policy's feed sets with their cached state.
    List {
        /// Policy file.
        #[arg(long)]
        policy: PathBuf,
        /// Cache directory.
        #[arg(long, default_value = DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
    },
    /// Refresh the policy's feeds (when due, or all with `--force`) and load them into the
    /// kernel sets of the applied ruleset, each in one transaction.
    Update {
        /// Policy file.
        #[arg(long)]
        policy: PathBuf,
        /// Cache directory.
        #[arg(long, default_value = DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
        /// Refresh even when not due.
        #[arg(long)]
        force: bool,
        /// Network namespace whose kernel sets to write (default: this one).
        #[arg(long)]
        netns: Option<String>,
        /// Print the refresh events as JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Show the cached last good version of one feed.
    Show {
        /// Feed name.
        name: String,
        /// Policy file (for the feed's format and allowlist).
        #[arg(long)]
        policy: PathBuf,
        /// Cache directory.
        #[arg(long, default_value = DEFAULT_CACHE_DIR)]
        cache_dir: PathBuf,
    },
}

pub(crate) fn run(command: Command) -> anyhow::Result<Outcome> {
    match command {
        Command::Check {
            file,
            format,
            allow,
            json,
        } => check(file, format, &allow, json),
        Command::List { policy, cache_dir } => list(policy, cache_dir),
        Command::Update {
            policy,
            cache_dir,
            force,
            netns,
            json,
        } => update(policy, cache_dir, force, netns, json),
        Command::Show {
            name,
            policy,
            cache_dir,
        } => show(&name, policy, cache_dir),
    }
}

fn parse_format(format: Option<String>) -> anyhow::Result<Option<Format>> {
    format
        .map(|f| f.parse::<Format>().map_err(|e| anyhow::anyhow!("{e}")))
        .transpose()
}

fn check(
    file: PathBuf,
    format: Option<String>,
    allow: &[ipnet::IpNet],
    json: bool,
) -> anyhow::Result<Outcome> {
    let report = rampart_feeds::check_file(&file, parse_format(format)?, allow)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "{}: format {}{}",
            report.file,
            report.format,
            if report.detected { " (detected)" } else { "" }
        );
        let s = &report.stats;
        println!(
            "  lines {}: used {}, ignored {}, filtered {}, rejected {}, unsupported {}",
            s.lines, s.used, s.ignored, s.filtered, s.rejected, s.unsupported
        );
        println!(
            "  addresses: {} entries -> {} IPv4 + {} IPv6 kernel elements ({} single addresses, {} prefixes)",
            report.raw_nets, report.v4_elements, report.v6_elements, report.singles, report.prefixes
        );
        if report.domains_block + report.domains_allow > 0 {
            println!(
                "  domains: {} blocked, {} allowed (exceptions)",
                report.domains_block, report.domains_allow
            );
        }
        for net in &report.subtracted {
            println!("  never blocked (allowlist): {net}");
        }
        for error in &report.errors {
            println!("  {error}");
        }
        if s.errors_dropped > 0 {
            println!("  ... and {} more rejected lines", s.errors_dropped);
        }
    }
    Ok(if report.stats.rejected > 0 {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// The feed sets of a policy as specs; the policy's own zone networks are never blocked.
fn feed_specs(policy: &rampart_ir::Policy) -> anyhow::Result<Vec<FeedSpec>> {
    let own: Vec<ipnet::IpNet> = policy
        .zones
        .iter()
        .flat_map(|z| z.networks.iter().copied())
        .collect();
    policy
        .sets
        .iter()
        .filter(|s| matches!(s.source, rampart_ir::SetSource::Feed { .. }))
        .map(|s| FeedSpec::from_ir(s, &own).with_context(|| format!("feed set `{}`", s.name)))
        .collect()
}

fn list(policy: PathBuf, cache_dir: PathBuf) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&policy)?;
    let cache = Cache::new(cache_dir);
    let specs = feed_specs(&policy)?;
    if specs.is_empty() {
        println!("the policy has no feed sets");
    }
    for spec in specs {
        let state = match cache.meta(&spec.name) {
            Some(meta) => format!(
                "cached: {} entries fetched at unix {}{}",
                meta.entries,
                meta.fetched_at_unix,
                meta.last_refusal
                    .map(|r| format!("; last new version refused: {r}"))
                    .unwrap_or_default()
            ),
            None => "not fetched yet".to_string(),
        };
        println!(
            "{:<24} {:<12} every {:>6} s  {}  {}",
            spec.name, spec.format, spec.refresh_s, spec.url, state
        );
    }
    Ok(Outcome::Clean)
}

fn update(
    policy: PathBuf,
    cache_dir: PathBuf,
    force: bool,
    netns: Option<String>,
    json: bool,
) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&policy)?;
    std::fs::create_dir_all(&cache_dir)
        .with_context(|| format!("cannot create {}", cache_dir.display()))?;
    let cache = Cache::new(cache_dir);
    let now_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut problems = false;
    for spec in feed_specs(&policy)? {
        let mut runner = FeedRunner::new(
            spec,
            "rampart",
            Layout::Split,
            NftRunner {
                netns: netns.clone(),
            },
        );
        let event = runner.tick(&cache, now_unix, force);
        problems |= matches!(
            event.status,
            rampart_feeds::event::RefreshStatus::Refused { .. }
                | rampart_feeds::event::RefreshStatus::FetchFailed { .. }
                | rampart_feeds::event::RefreshStatus::KernelFailed { .. }
        );
        if json {
            println!("{}", serde_json::to_string(&event)?);
        } else {
            println!(
                "{:<24} {:?}: {} elements (+{} -{}), {} entries, {} rejected lines{}",
                event.feed,
                event.status,
                event.elements,
                event.added,
                event.removed,
                event.entries,
                event.rejected_lines,
                if event.sync_mode.is_empty() {
                    String::new()
                } else {
                    format!(", {} sync in {} ms", event.sync_mode, event.sync_ms)
                }
            );
        }
    }
    Ok(if problems {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

fn show(name: &str, policy: PathBuf, cache_dir: PathBuf) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&policy)?;
    let spec = feed_specs(&policy)?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| anyhow::anyhow!("the policy has no feed named `{name}`"))?;
    let cache = Cache::new(cache_dir);
    let Some((meta, report)) =
        rampart_feeds::check::show(&cache, &spec.name, &spec.format, &spec.allow)
    else {
        anyhow::bail!("feed `{name}` has no cached version yet (run `rampart feeds update`)");
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "meta": meta, "report": report }))?
    );
    Ok(Outcome::Clean)
}
