//! `rampart dns`: the filtering DNS forwarder in the foreground. It prints one JSON line with
//! the addresses it bound (so callers that ask for port 0 learn the real ports), reloads its
//! configuration and lists on SIGHUP — a bad configuration keeps the running one and says why —
//! and stops on SIGINT or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart dns`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Forwarder configuration (TOML; see docs/dns.md).
    #[arg(long)]
    config: PathBuf,
}

fn read_config(path: &Path) -> anyhow::Result<rampart_dns::Config> {
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
        crate::serve::until_stopped_reloading(
            "dns",
            "configuration",
            &args.config,
            read_config,
            async |config| handle.reload(config).await,
        )
        .await?;
        handle.shutdown();
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Clean)
}
