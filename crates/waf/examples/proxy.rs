//! The proxy of `rampart waf` without the CLI around it (same `proxy::start`, same
//! single-threaded runtime), for benchmarks while the workspace binary cannot be built.
//!
//! `cargo run --release -p rampart-waf --example proxy -- waf.toml`

/// The allocator the `rampart` binary uses, so this measures what it ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args().nth(1).ok_or("usage: proxy CONFIG")?;
    let text = std::fs::read_to_string(&path)?;
    let config = rampart_waf::proxy::Config::from_toml_named(&path, &text)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let handle = rampart_waf::proxy::start(config, Box::new(std::io::stdout())).await?;
        println!(
            "{}",
            serde_json::json!({ "event": "listening", "addr": handle.addr })
        );
        std::future::pending::<()>().await;
        Ok::<_, Box<dyn std::error::Error>>(())
    })
}
