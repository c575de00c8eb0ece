//! `rampart waf`: the WAF reverse proxy in the foreground. It loads the SecLang files the
//! configuration names (CRS's crs-setup.conf and rules, own rules), prints one JSON line with
//! the bound address, then one JSON event line per request on stdout, and stops on SIGINT or
//! SIGTERM. Exclusions that could never act (a route no route has, an id or tag no loaded rule
//! carries, a target no selected rule inspects) are errors with `file:line`, for `--check`,
//! start and reload alike. SIGHUP reloads the configuration file and its rules in place: new requests use the
//! new rules, requests in flight finish with the old ones, the listener stays open, and a
//! configuration that does not load keeps the running one (one `error:` line on stderr and a
//! `reload` event with `"ok":false`). The ready line says `"reload_in_place":true` so a
//! supervisor sends SIGHUP instead of restarting. `--check` loads and validates only (rule
//! errors name file:line; the `[tls]` certificate and key are read and parsed, and an error
//! names the file).

use std::path::PathBuf;

use anyhow::Context;

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
    let config =
        rampart_waf::proxy::Config::from_toml_named(&args.config.display().to_string(), &text)
            .with_context(|| format!("{} is not valid", args.config.display()))?;
    if args.check {
        config.check_tls()?;
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
            serde_json::json!({ "event": "listening", "addr": handle.addr, "reload_in_place": true })
        );
        let handle = std::sync::Arc::new(handle);
        let config_path = &args.config;
        crate::serve::until_stopped(|| {
            let h = handle.clone();
            let path = config_path.clone();
            async move {
                // Rule loading is CPU work: off the runtime thread that serves requests.
                let result = tokio::task::spawn_blocking(move || reload(&h, &path)).await;
                let line = match result {
                    Ok(Ok(r)) => serde_json::json!({
                        "event": "reload", "ok": true, "rules": r.rules, "warnings": r.warnings.len()
                    }),
                    Ok(Err(e)) => {
                        let e = one_line(&e);
                        eprintln!("error: reload of {} failed, keeping the running configuration: {e}", config_path.display());
                        serde_json::json!({ "event": "reload", "ok": false, "error": e })
                    }
                    Err(e) => {
                        eprintln!("error: reload of {} failed, keeping the running configuration: {e}", config_path.display());
                        serde_json::json!({ "event": "reload", "ok": false, "error": e.to_string() })
                    }
                };
                println!("{line}");
            }
        })
        .await?;
        handle.shutdown();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Clean)
}

fn reload(
    handle: &rampart_waf::proxy::Handle,
    path: &std::path::Path,
) -> Result<rampart_waf::proxy::Reloaded, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let config = rampart_waf::proxy::Config::from_toml_named(&path.display().to_string(), &text)
        .map_err(|e| e.to_string())?;
    handle.reload(config).map_err(|e| e.to_string())
}

/// Regex compiler messages span lines; a log line must not.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
