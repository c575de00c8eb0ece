//! Decision-event log: a bounded queue to one writer thread appending `rampart_events::Event`
//! JSON lines. A full queue drops (and counts) events instead of stalling the proxy.

use std::fs::OpenOptions;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use rampart_events::{Event, JsonLinesSink, Sink};

/// Handle to the writer thread.
#[derive(Debug)]
pub struct EventLog {
    tx: Option<SyncSender<Event>>,
    thread: Option<JoinHandle<()>>,
}

fn writer(rx: Receiver<Event>, file: std::fs::File) {
    let mut sink = JsonLinesSink::new(BufWriter::new(file));
    while let Ok(first) = rx.recv() {
        let _ = sink.emit(&first);
        while let Ok(ev) = rx.try_recv() {
            let _ = sink.emit(&ev);
        }
        // Queue drained: flush so readers see whole lines promptly.
        if let Ok(mut w) = sink.into_inner() {
            let _ = w.flush();
            sink = JsonLinesSink::new(w);
        } else {
            return;
        }
    }
}

impl EventLog {
    /// Opens `path` for appending and starts the writer.
    pub fn start(path: &Path, queue: usize) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let (tx, rx) = sync_channel(queue.clamp(16, 1 << 20));
        let thread = std::thread::Builder::new()
            .name("rampart-egress-log".into())
            .spawn(move || writer(rx, file))?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues an event; `false` when it was dropped.
    pub fn try_log(&self, ev: Event) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.try_send(ev).is_ok())
    }

    /// Stops the writer after draining the queue.
    pub fn close(&mut self) {
        self.tx.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EventLog {
    fn drop(&mut self) {
        self.close();
    }
}
