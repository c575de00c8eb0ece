//! The foreground loop the long-running proxies (`dns`, `egress`, `waf`) share: serve until
//! SIGINT or SIGTERM, and run the component's reload on every SIGHUP. Why one loop: the signal
//! set and its meaning are part of the contract with `rampart run` (SIGHUP reloads in place,
//! SIGTERM stops cleanly), so they must not drift between components.

use std::future::Future;

use tokio::signal::unix::{signal, SignalKind};

/// Wait for SIGINT or SIGTERM, calling `on_hangup` for each SIGHUP in between (one at a time:
/// a SIGHUP arriving during a reload is handled after it).
pub(crate) async fn until_stopped<F, Fut>(mut on_hangup: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => on_hangup().await,
        }
    }
}
