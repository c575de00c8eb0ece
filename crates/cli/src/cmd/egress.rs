//! `rampart egress`: the egress (forward) proxy in the foreground. It prints one JSON line with
//! the addresses it bound (so callers that ask for port 0 learn the real ports), reloads its
//! policy and lists on SIGHUP — a bad configuration keeps the running one and says why — and
//! stops on SIGINT or SIGTERM.

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart egress`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Proxy configuration (TOML; see docs/egress.md).
    #[arg(long)]
    config: PathBuf,
}

fn read_config(path: &Path) -> anyhow::Result<rampart_egress::Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    rampart_egress::Config::from_toml(&text)
        .with_context(|| format!("{} is not valid", path.display()))
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = read_config(&args.config)?;
    // One worker thread per core the process may use (taskset pins benchmarks to one).
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let handle = rampart_egress::Server::start(config).await?;
        println!(
            "{}",
            serde_json::json!({
                "event": "listening",
                "proxy": handle.proxy_addrs,
                "transparent": handle.transparent_addrs,
                "metrics": handle.metrics_addr,
            })
        );
        crate::serve::until_stopped_reloading(
            "egress",
            "policy",
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
