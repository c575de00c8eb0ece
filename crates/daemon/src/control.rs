//! The control socket: a Unix stream socket only root can open (mode 0600 in a 0700 directory).
//!
//! One request line, then JSON reply lines. A request is a JSON object with an `op`, or just
//! the op's name when it takes no arguments:
//!
//! | request | reply |
//! |---|---|
//! | `{"op":"status"}` | `{"ok":true,"status":{…}}` |
//! | `{"op":"reload"}` | `{"ok":true,"message":…}` or `{"ok":false,"error":…}` |
//! | `{"op":"confirm","id":ID}` (`id` optional) | as reload |
//! | `{"op":"rollback"}` | as reload |
//! | `{"op":"follow","component":C}` (`component` optional) | `{"ok":true,"following":true}`, then one line per event until the client closes |
//!
//! Anything else gets `{"ok":false,"error":…}`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::daemon::{Request, Shared, RELOAD_TIMEOUT};
use crate::DaemonError;

/// A control request.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// The daemon's status.
    Status,
    /// Validate and apply the policy again, then reload the components.
    Reload,
    /// Keep the pending apply (`rampart confirm`).
    Confirm {
        /// Only if the pending apply is this one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<String>,
    },
    /// Restore the ruleset from before the last apply (`rampart rollback`).
    Rollback,
    /// Stream the events as they are stored (`rampart log`).
    Follow {
        /// Only this component's events.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        component: Option<String>,
    },
}

impl ControlRequest {
    /// Parse one request line: a JSON object, or a bare op name.
    pub fn parse(line: &str) -> Result<Self, String> {
        let line = line.trim();
        let parsed = if line.starts_with('{') {
            serde_json::from_str(line)
        } else {
            serde_json::from_value(serde_json::json!({ "op": line }))
        };
        parsed.map_err(|e| {
            format!("bad request `{line}`: {e} (ops: status, reload, confirm, rollback, follow)")
        })
    }

    /// The request as one line.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Longest request line.
const MAX_REQUEST_BYTES: u64 = 1024;
/// Longest apply id or component name in a request.
const MAX_FIELD_BYTES: usize = 64;

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
    let mut stream = stream;
    let request = ControlRequest::parse(&line).and_then(|r| match &r {
        ControlRequest::Confirm { id: Some(s) } | ControlRequest::Follow { component: Some(s) }
            if s.len() > MAX_FIELD_BYTES =>
        {
            Err(format!("`{s}` is longer than {MAX_FIELD_BYTES} bytes"))
        }
        _ => Ok(r),
    });
    let answer = |outcome: Option<Result<String, String>>| match outcome {
        Some(Ok(msg)) => serde_json::json!({ "ok": true, "message": msg }),
        Some(Err(msg)) => serde_json::json!({ "ok": false, "error": msg }),
        None => serde_json::json!({ "ok": false, "error": "the daemon did not answer in time" }),
    };
    let reply = match request {
        Err(e) => serde_json::json!({ "ok": false, "error": e }),
        Ok(ControlRequest::Status) => {
            let snap = shared
                .snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            serde_json::json!({ "ok": true, "status": snap })
        }
        Ok(ControlRequest::Reload) => answer(shared.request(Request::Reload)),
        Ok(ControlRequest::Confirm { id }) => {
            answer(shared.request(|reply| Request::Confirm(id, reply)))
        }
        Ok(ControlRequest::Rollback) => answer(shared.request(Request::Rollback)),
        Ok(ControlRequest::Follow { component }) => {
            follow(stream, shared, component);
            return;
        }
    };
    let _ = writeln!(stream, "{reply}");
}

/// Stream events to the client until it closes the connection.
fn follow(mut stream: UnixStream, shared: &Shared, component: Option<String>) {
    let Some(events) = shared.follow(component) else {
        let _ = writeln!(
            stream,
            "{}",
            serde_json::json!({ "ok": false, "error": format!("{} clients already follow the events", crate::daemon::MAX_FOLLOWERS) })
        );
        return;
    };
    if writeln!(
        stream,
        "{}",
        serde_json::json!({ "ok": true, "following": true })
    )
    .is_err()
    {
        return;
    }
    let _ = stream.set_write_timeout(Some(Duration::from_secs(5)));
    loop {
        match events.recv_timeout(Duration::from_millis(500)) {
            Ok(line) if line.is_empty() => {}
            Ok(line) => {
                if writeln!(stream, "{line}").is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if client_left(&stream) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Whether the client closed its end (a read would see end of file).
fn client_left(stream: &UnixStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut byte = 0u8;
    // SAFETY: recv into one byte we own, on a socket we own; MSG_PEEK leaves the data and
    // MSG_DONTWAIT never blocks.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => true,
        n if n > 0 => false,
        _ => {
            let e = std::io::Error::last_os_error();
            e.kind() != std::io::ErrorKind::WouldBlock
                && e.kind() != std::io::ErrorKind::Interrupted
        }
    }
}

/// Client side: send `request` to the daemon at `path`, return its reply.
pub fn request(path: &Path, request: &ControlRequest) -> Result<serde_json::Value, DaemonError> {
    let mut stream = connect(path)?;
    stream
        .set_read_timeout(Some(RELOAD_TIMEOUT + Duration::from_secs(5)))
        .map_err(|e| DaemonError::io(path, e))?;
    writeln!(stream, "{}", request.to_line()).map_err(|e| DaemonError::io(path, e))?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| DaemonError::io(path, e))?;
    parse_reply(&line)
}

fn connect(path: &Path) -> Result<UnixStream, DaemonError> {
    UnixStream::connect(path).map_err(|e| {
        DaemonError::Control(format!(
            "cannot reach the daemon at {}: {e}",
            path.display()
        ))
    })
}

fn parse_reply(line: &str) -> Result<serde_json::Value, DaemonError> {
    serde_json::from_str(line)
        .map_err(|e| DaemonError::Control(format!("bad reply `{}`: {e}", line.trim())))
}

/// Whether a daemon answers at `path` (a connection is accepted).
pub fn is_running(path: &Path) -> bool {
    UnixStream::connect(path).is_ok()
}

/// Client side of `follow`: the events (only `component`'s, when given) as they are stored,
/// one JSON line each, from the daemon at `path`. Reading blocks until the next event;
/// [`Events::set_timeout`] bounds the wait.
pub fn follow_events(path: &Path, component: Option<&str>) -> Result<Events, DaemonError> {
    let mut stream = connect(path)?;
    let request = ControlRequest::Follow {
        component: component.map(str::to_string),
    };
    writeln!(stream, "{}", request.to_line()).map_err(|e| DaemonError::io(path, e))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| DaemonError::io(path, e))?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| DaemonError::io(path, e))?;
    let reply = parse_reply(&line)?;
    if reply["ok"].as_bool() != Some(true) {
        return Err(DaemonError::Control(
            reply["error"].as_str().unwrap_or("refused").to_string(),
        ));
    }
    reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| DaemonError::io(path, e))?;
    Ok(Events { reader })
}

/// Events streamed from the daemon ([`follow_events`]).
#[derive(Debug)]
pub struct Events {
    reader: BufReader<UnixStream>,
}

/// Longest event line accepted from the daemon.
const MAX_EVENT_LINE_BYTES: u64 = 512 * 1024;

impl Events {
    /// Wait at most `timeout` for each event (`None`: forever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> std::io::Result<()> {
        self.reader.get_ref().set_read_timeout(timeout)
    }

    /// The next event: `Ok(None)` when the daemon closed the stream; a timeout is an error of
    /// kind `WouldBlock` or `TimedOut`.
    pub fn next_event(&mut self) -> std::io::Result<Option<serde_json::Value>> {
        loop {
            let mut line = Vec::new();
            let n = (&mut self.reader)
                .take(MAX_EVENT_LINE_BYTES)
                .read_until(b'\n', &mut line)?;
            if n == 0 {
                return Ok(None);
            }
            if let Ok(value) = serde_json::from_slice(&line) {
                return Ok(Some(value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_json_objects_or_bare_names() {
        assert_eq!(
            ControlRequest::parse("status\n"),
            Ok(ControlRequest::Status)
        );
        assert_eq!(
            ControlRequest::parse("confirm"),
            Ok(ControlRequest::Confirm { id: None })
        );
        assert_eq!(
            ControlRequest::parse(r#"{"op":"confirm","id":"17-2"}"#),
            Ok(ControlRequest::Confirm {
                id: Some("17-2".into())
            })
        );
        assert_eq!(
            ControlRequest::parse(r#"{"op":"follow","component":"dns"}"#),
            Ok(ControlRequest::Follow {
                component: Some("dns".into())
            })
        );
        let round = ControlRequest::Follow { component: None };
        assert_eq!(ControlRequest::parse(&round.to_line()), Ok(round));
        assert!(ControlRequest::parse("shutdown")
            .unwrap_err()
            .contains("ops: status"));
        assert!(ControlRequest::parse(r#"{"op":"confirm","id":3}"#).is_err());
        assert!(ControlRequest::parse("{").is_err());
    }
}
