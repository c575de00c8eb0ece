//! The control socket: a Unix stream socket only root can open (mode 0600 in a 0700 directory).
//! One request line, one JSON reply line: `status` or `reload`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::daemon::{Shared, RELOAD_TIMEOUT};
use crate::DaemonError;

/// Longest request line.
const MAX_REQUEST_BYTES: u64 = 256;

/// Bind the socket (replacing a stale one) and serve it on a thread.
pub fn serve(path: &Path, shared: Arc<Shared>) -> Result<(), DaemonError> {
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(DaemonError::Control(format!(
                "{} is in use: is another `rampart run` running?",
                path.display()
            )));
        }
        std::fs::remove_file(path).map_err(|e| DaemonError::io(path, e))?;
    }
    let listener = UnixListener::bind(path).map_err(|e| DaemonError::io(path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| DaemonError::io(path, e))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = shared.clone();
            std::thread::spawn(move || handle(stream, &shared));
        }
    });
    Ok(())
}

fn handle(stream: UnixStream, shared: &Shared) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    let Ok(reader_stream) = stream.try_clone() else {
        return;
    };
    if BufReader::new(reader_stream.take(MAX_REQUEST_BYTES))
        .read_line(&mut line)
        .is_err()
    {
        return;
    }
    let reply = match line.trim() {
        "status" => {
            let snap = shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            serde_json::json!({ "ok": true, "status": snap })
        }
        "reload" => match shared.request_reload() {
            Some(Ok(msg)) => serde_json::json!({ "ok": true, "message": msg }),
            Some(Err(msg)) => serde_json::json!({ "ok": false, "error": msg }),
            None => {
                serde_json::json!({ "ok": false, "error": "the daemon did not answer in time" })
            }
        },
        other => {
            serde_json::json!({ "ok": false, "error": format!("unknown request `{other}` (status, reload)") })
        }
    };
    let mut stream = stream;
    let _ = writeln!(stream, "{reply}");
}

/// Client side: send `request` to the daemon at `path`, return its reply.
pub fn request(path: &Path, request: &str) -> Result<serde_json::Value, DaemonError> {
    let mut stream = UnixStream::connect(path).map_err(|e| {
        DaemonError::Control(format!(
            "cannot reach the daemon at {}: {e}",
            path.display()
        ))
    })?;
    stream
        .set_read_timeout(Some(RELOAD_TIMEOUT + Duration::from_secs(5)))
        .map_err(|e| DaemonError::io(path, e))?;
    writeln!(stream, "{request}").map_err(|e| DaemonError::io(path, e))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| DaemonError::io(path, e))?;
    serde_json::from_str(&line)
        .map_err(|e| DaemonError::Control(format!("bad reply `{}`: {e}", line.trim())))
}
