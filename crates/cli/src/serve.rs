//! The foreground loop the long-running proxies (`dns`, `egress`, `waf`) share: serve until
//! SIGINT or SIGTERM, and run the component's reload on every SIGHUP. Why one loop: the signal
//! set and its meaning are part of the contract with `rampart run` (SIGHUP reloads in place,
//! SIGTERM stops cleanly), so they must not drift between components.

use std::future::Future;
use std::path::Path;

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

/// [`until_stopped`] for a component whose reload is "read the configuration file again, hand
/// it to the running server": each SIGHUP reads `path` with `read` and applies it with
/// `apply`; success or refusal is one line on stderr, and a refused configuration leaves the
/// running one in place (the server's `reload` is all-or-nothing).
pub(crate) async fn until_stopped_reloading<C, E>(
    component: &str,
    what: &str,
    path: &Path,
    read: impl Fn(&Path) -> anyhow::Result<C>,
    apply: impl AsyncFn(&C) -> Result<(), E>,
) -> anyhow::Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    until_stopped(|| async {
        let reloaded = match read(path) {
            Ok(config) => apply(&config).await.map_err(anyhow::Error::from),
            Err(err) => Err(err),
        };
        match reloaded {
            Ok(()) => eprintln!("rampart {component}: reloaded {}", path.display()),
            Err(err) => eprintln!(
                "rampart {component}: reload refused, still serving the previous {what}: {err:#}"
            ),
        }
    })
    .await
}
