//! `rampart events`: query the daemon's events store (SQLite) by time, component, technique,
//! source, rule and verdict; a table or JSON lines.

use std::path::PathBuf;

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart events`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The daemon's run configuration (to find its store).
    #[arg(long)]
    config: PathBuf,
    /// Only events in the last N seconds.
    #[arg(long, value_name = "SECONDS")]
    last_s: Option<u64>,
    /// Emitting component (dns, jail, nft, daemon, ...).
    #[arg(long)]
    component: Option<String>,
    /// ATT&CK technique (T1071 also matches T1071.004).
    #[arg(long)]
    technique: Option<String>,
    /// Source address.
    #[arg(long)]
    src: Option<String>,
    /// Rule name.
    #[arg(long)]
    rule: Option<String>,
    /// allow, block or alert.
    #[arg(long)]
    verdict: Option<String>,
    /// Most events (newest first; at most 10000).
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// JSON lines instead of a table.
    #[arg(long)]
    json: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = crate::cmd::run::load_config(&args.config)?;
    let path = config.store_path();
    anyhow::ensure!(
        path.exists(),
        "no events store at {} (has `rampart run` run with this configuration?)",
        path.display()
    );
    let store = rampart_daemon::store::Store::open(&path)?;
    let now_ns = rampart_daemon::daemon::unix_now_ns();
    let query = rampart_daemon::store::Query {
        since_ns: args
            .last_s
            .map(|s| now_ns - (s as i64).saturating_mul(1_000_000_000)),
        until_ns: None,
        component: args.component,
        technique: args.technique,
        src_ip: args.src,
        rule: args.rule,
        verdict: args.verdict,
        limit: Some(args.limit),
    };
    let events = store.query(&query).context("query failed")?;
    if args.json {
        for event in &events {
            println!("{event}");
        }
    } else {
        println!(
            "{:<20} {:<8} {:<6} {:<40} {:<30} techniques",
            "time", "component", "verdict", "flow", "rule/reason"
        );
        for e in &events {
            let s = |k: &str| e[k].as_str().unwrap_or("").to_string();
            let flow = if e["src_ip"].is_string() {
                format!("{} -> {}", s("src_ip"), s("dest_ip"))
            } else {
                String::new()
            };
            let why = e["rule"]["name"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| s("reason"));
            let techniques: Vec<&str> = e["techniques"]
                .as_array()
                .map(|a| a.iter().filter_map(|t| t.as_str()).collect())
                .unwrap_or_default();
            let time: String = s("timestamp").replace('T', " ").chars().take(19).collect();
            println!(
                "{time:<20} {:<8} {:<6} {flow:<40} {why:<30} {}",
                s("component"),
                s("verdict"),
                techniques.join(",")
            );
        }
    }
    Ok(Outcome::Clean)
}
