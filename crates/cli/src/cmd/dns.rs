//! `rampart dns`: the filtering DNS forwarder in the foreground. It prints one JSON line with
//! the addresses it bound (so callers that ask for port 0 learn the real ports), reloads its
//! configuration and lists on SIGHUP — a bad configuration keeps the running one and says why —
//! and stops on SIGINT or SIGTERM.

use std::path::PathBuf;

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart dns`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Forwarder configuration (TOML; see docs/dns.md).
    #[arg(long)]
    config: PathBuf,
}

fn read_config(path: &PathBuf) -> anyhow::Result<rampart_dns::Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    rampart_dns::Config::from_toml(&text)
        .with_context(|| format!("{} is not valid", path.display()))
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = read_config(&args.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = rampart_dns::Server::start(config).await?;
        println!(
            "{}",
            serde_json::json!({ "event": "listening", "udp": handle.udp_addrs, "tcp": handle.tcp_addrs, "metrics": handle.metrics_addr })
        );
        let server = &handle;
        let config_path = &args.config;
        crate::serve::until_stopped(move || async move {
            let reloaded = match read_config(config_path) {
                Ok(config) => server.reload(&config).await.map_err(anyhow::Error::from),
                Err(err) => Err(err),
            };
            match reloaded {
                Ok(()) => eprintln!("rampart dns: reloaded {}", config_path.display()),
                Err(err) => eprintln!(
                    "rampart dns: reload refused, still serving the previous configuration: {err:#}"
                ),
            }
        })
        .await?;
        handle.shutdown();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Clean)
}
