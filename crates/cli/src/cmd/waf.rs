//! `rampart waf`: the WAF reverse proxy in the foreground. It loads the SecLang files the
//! configuration names (CRS's crs-setup.conf and rules, own rules), prints one JSON line with
//! the bound address, then one JSON event line per request on stdout, and stops on SIGINT or
//! SIGTERM. `--check` loads and validates only (rule errors name file:line).

use std::path::PathBuf;

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::Outcome;

/// Arguments of `rampart waf`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Configuration file (TOML; see docs/waf.md).
    #[arg(long)]
    config: PathBuf,
    /// Load the configuration and rules, report, and exit.
    #[arg(long)]
    check: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let text = std::fs::read_to_string(&args.config)
        .with_context(|| format!("cannot read {}", args.config.display()))?;
    let config = rampart_waf::proxy::Config::from_toml(&text)
        .with_context(|| format!("{} is not valid", args.config.display()))?;
    if args.check {
        let rs = config.load_rules()?;
        for w in &rs.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{}",
            serde_json::json!({ "event": "checked", "rules": rs.rule_count(), "warnings": rs.warnings.len() })
        );
        return Ok(Outcome::Clean);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = rampart_waf::proxy::start(config, Box::new(std::io::stdout())).await?;
        println!(
            "{}",
            serde_json::json!({ "event": "listening", "addr": handle.addr })
        );
        let mut terminate = signal(SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = terminate.recv() => {},
        }
        handle.shutdown();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Clean)
}
