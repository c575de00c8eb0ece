//! Bounded query log: a fixed-capacity queue between the resolver and one writer thread that
//! appends `rampart_events::Event` JSON lines and rotates the file to `<path>.1` at `max_bytes`.
//! When the queue is full events are dropped and counted, never blocking a query; routine
//! events (allowed queries) already give way at half capacity, so blocks and detections keep
//! their room.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{SystemTime, UNIX_EPOCH};

use rampart_events::Event;

use crate::config::QueryLogConfig;

/// Handle to the writer.
#[derive(Debug)]
pub struct QueryLog {
    tx: Option<SyncSender<Event>>,
    // Events queued and not yet written; routine (allowed-query) events are refused once the
    // queue is half full so blocks and detections always find room.
    queued: Arc<AtomicUsize>,
    capacity: usize,
    thread: Option<JoinHandle<()>>,
    /// Whether allowed queries are logged.
    pub log_allowed: bool,
}

fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

fn writer(rx: Receiver<Event>, path: PathBuf, max_bytes: u64, queued: Arc<AtomicUsize>) {
    let Ok(file) = open(&path) else {
        return;
    };
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = BufWriter::new(file);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(ev) = next.take() {
            queued.fetch_sub(1, Ordering::Relaxed);
            let Ok(mut line) = serde_json::to_vec(&ev) else {
                continue;
            };
            line.push(b'\n');
            if size > 0 && size + line.len() as u64 > max_bytes {
                let _ = out.flush();
                let mut rotated = path.clone().into_os_string();
                rotated.push(".1");
                let _ = std::fs::rename(&path, rotated);
                let Ok(f) = open(&path) else {
                    return;
                };
                out = BufWriter::new(f);
                size = 0;
            }
            if out.write_all(&line).is_ok() {
                size += line.len() as u64;
            }
            next = rx.try_recv().ok();
        }
        // Queue drained: flush so readers see whole lines promptly.
        let _ = out.flush();
    }
    let _ = out.flush();
}

impl QueryLog {
    /// Starts the writer thread.
    pub fn start(cfg: &QueryLogConfig) -> std::io::Result<Self> {
        // Fail early if the file cannot be opened.
        drop(open(&cfg.path)?);
        let capacity = cfg.queue.max(2);
        let (tx, rx) = sync_channel(capacity);
        let path = cfg.path.clone();
        let max = cfg.max_bytes.max(4096);
        let queued = Arc::new(AtomicUsize::new(0));
        let q = queued.clone();
        let thread = std::thread::Builder::new()
            .name("rampart-dns-log".into())
            .spawn(move || writer(rx, path, max, q))?;
        Ok(Self {
            tx: Some(tx),
            queued,
            capacity,
            thread: Some(thread),
            log_allowed: cfg.log_allowed,
        })
    }

    /// Queues an event; returns `false` when it was dropped (queue full or writer gone).
    /// Routine events (`important == false`) are dropped once the queue is half full.
    pub fn try_log(&self, ev: Event, important: bool) -> bool {
        let Some(tx) = self.tx.as_ref() else {
            return false;
        };
        if !important && self.queued.load(Ordering::Relaxed) >= self.capacity / 2 {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        match tx.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued.fetch_sub(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Stops the writer after it drained the queue, flushing the file.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for QueryLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// RFC 3339 UTC timestamp with microseconds for `t`.
pub fn rfc3339(t: SystemTime) -> String {
    let since_epoch = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    rampart_events::rfc3339_utc(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ev(i: u32) -> Event {
        Event {
            timestamp: rfc3339(UNIX_EPOCH),
            event_type: "dns".into(),
            component: "dns".into(),
            flow: None,
            verdict: rampart_events::Verdict::Block,
            rule: None,
            techniques: Vec::new(),
            reason: format!("event {i} {}", "x".repeat(100)),
            detail: serde_json::Map::new(),
        }
    }

    #[test]
    fn rotates_at_the_byte_cap_and_never_blocks() {
        let dir = std::env::temp_dir().join(format!("rampart-dns-qlog-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.jsonl");
        let cfg = QueryLogConfig {
            path: path.clone(),
            max_bytes: 4096,
            log_allowed: false,
            queue: 4,
        };
        let mut log = QueryLog::start(&cfg).unwrap();
        let mut accepted = 0;
        for i in 0..200 {
            if log.try_log(ev(i), i % 2 == 0) {
                accepted += 1;
            } else {
                // Queue full: the caller moves on; give the writer a moment.
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        log.close();
        assert!(accepted > 0);
        let cur = std::fs::metadata(&path).unwrap().len();
        let mut rotated = path.clone().into_os_string();
        rotated.push(".1");
        let old = std::fs::metadata(&rotated).map(|m| m.len()).unwrap_or(0);
        assert!(cur <= 4096 && old <= 4096, "{cur} {old}");
        assert!(old > 0, "rotation happened");
        for line in std::fs::read_to_string(&path).unwrap().lines() {
            let _: Event = serde_json::from_str(line).unwrap();
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_809_600_123_456);
        assert_eq!(rfc3339(t), "2026-11-27T20:00:00.123456Z");
    }
}
