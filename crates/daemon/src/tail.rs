//! Following JSON-lines files that components append to.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;

use serde_json::Value;

/// Longest event line accepted; longer lines are skipped and counted.
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Most bytes read from one file per poll (the rest next time).
const MAX_READ_BYTES: u64 = 4 * 1024 * 1024;

/// A file being followed from an offset.
#[derive(Debug)]
pub struct Tail {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    skipping: bool,
    /// Lines that were not JSON objects or were too long.
    pub malformed: u64,
}

impl Tail {
    /// Follow `path` from its current end (events written before the daemon started are not
    /// re-imported), or from the start if it does not exist yet.
    pub fn from_end(path: PathBuf) -> Self {
        let offset = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        Self {
            path,
            offset,
            partial: Vec::new(),
            skipping: false,
            malformed: 0,
        }
    }

    /// New complete lines since the last poll, parsed. A truncated (rotated) file is followed
    /// from its start.
    pub fn poll(&mut self) -> Vec<Value> {
        let Ok(mut file) = File::open(&self.path) else {
            return Vec::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        if len < self.offset {
            self.offset = 0;
            self.partial.clear();
            self.skipping = false;
        }
        if len == self.offset || file.seek(SeekFrom::Start(self.offset)).is_err() {
            return Vec::new();
        }
        let mut chunk = Vec::new();
        let Ok(read) = file.take(MAX_READ_BYTES).read_to_end(&mut chunk) else {
            return Vec::new();
        };
        self.offset += read as u64;
        let mut out = Vec::new();
        for byte_line in chunk.split_inclusive(|b| *b == b'\n') {
            let complete = byte_line.last() == Some(&b'\n');
            if self.skipping {
                if complete {
                    self.skipping = false;
                }
                continue;
            }
            self.partial.extend_from_slice(byte_line);
            if self.partial.len() > MAX_LINE_BYTES {
                self.malformed += 1;
                self.partial.clear();
                self.skipping = !complete;
                continue;
            }
            if !complete {
                break;
            }
            let line = std::mem::take(&mut self.partial);
            match serde_json::from_slice::<Value>(&line) {
                Ok(value @ Value::Object(_)) => out.push(value),
                _ if line.iter().all(u8::is_ascii_whitespace) => {}
                _ => self.malformed += 1,
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn follows_appends_partial_lines_truncation_and_garbage() {
        let dir = std::env::temp_dir().join(format!("rampart-tail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("e.jsonl");
        std::fs::write(&path, "{\"old\":1}\n").unwrap();
        let mut tail = Tail::from_end(path.clone());
        assert!(tail.poll().is_empty(), "old lines are not re-imported");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"a\":1}\nnot json\n{\"b\":").unwrap();
        let got = tail.poll();
        assert_eq!(got, vec![serde_json::json!({"a": 1})]);
        assert_eq!(tail.malformed, 1);
        f.write_all(b"2}\n").unwrap();
        assert_eq!(tail.poll(), vec![serde_json::json!({"b": 2})]);
        let long = format!(
            "{{\"x\":\"{}\"}}\n{{\"c\":3}}\n",
            "y".repeat(MAX_LINE_BYTES)
        );
        f.write_all(long.as_bytes()).unwrap();
        assert_eq!(tail.poll(), vec![serde_json::json!({"c": 3})]);
        assert_eq!(tail.malformed, 2);
        std::fs::write(&path, "{\"d\":4}\n").unwrap();
        assert_eq!(
            tail.poll(),
            vec![serde_json::json!({"d": 4})],
            "truncated file followed from its start"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
