//! Typed refresh events: one [`RefreshEvent`] per feed refresh attempt, convertible into a
//! `rampart_events::Event` (`event_type` `feed`, component `feeds`).

use serde::{Deserialize, Serialize};

use rampart_events::{Event, Verdict};

/// How a refresh ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RefreshStatus {
    /// A new version was accepted and loaded.
    Updated,
    /// The source said nothing changed (HTTP 304 or identical content).
    NotModified,
    /// Not due yet (refresh interval).
    NotDue {
        /// Seconds until due.
        due_in_s: u64,
    },
    /// The new version failed a sanity check; the last good version stays loaded.
    Refused {
        /// Why.
        reason: String,
    },
    /// Fetching failed; the last good version (if any) stays loaded.
    FetchFailed {
        /// Why.
        reason: String,
    },
    /// Loading into the kernel failed; what was enforced before stays (the transaction is
    /// atomic).
    KernelFailed {
        /// Why.
        reason: String,
    },
}

/// One refresh, with its counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshEvent {
    /// Feed name.
    pub feed: String,
    /// Outcome.
    pub status: RefreshStatus,
    /// Kernel elements after the refresh.
    pub elements: u64,
    /// Elements added by this refresh.
    pub added: u64,
    /// Elements removed by this refresh.
    pub removed: u64,
    /// Entries the new version held (before normalisation).
    pub entries: u64,
    /// Lines rejected as malformed.
    pub rejected_lines: u64,
    /// Lines rejected as unsupported syntax.
    pub unsupported_lines: u64,
    /// Prefixes removed by the allowlist.
    pub subtracted: u64,
    /// `full` or `delta` when the kernel was written, else empty.
    pub sync_mode: String,
    /// Wall time of the kernel transaction in milliseconds (0 when none).
    pub sync_ms: u64,
}

impl RefreshEvent {
    /// An event for `feed` with the given status and zero counts.
    pub fn new(feed: &str, status: RefreshStatus) -> Self {
        Self {
            feed: feed.to_string(),
            status,
            elements: 0,
            added: 0,
            removed: 0,
            entries: 0,
            rejected_lines: 0,
            unsupported_lines: 0,
            subtracted: 0,
            sync_mode: String::new(),
            sync_ms: 0,
        }
    }

    /// The shared event shape; `timestamp` is RFC 3339 (time is the caller's input).
    pub fn to_event(&self, timestamp: &str) -> Event {
        let (verdict, reason) = match &self.status {
            RefreshStatus::Updated => (
                Verdict::Allow,
                format!(
                    "feed {} updated: {} elements (+{} -{})",
                    self.feed, self.elements, self.added, self.removed
                ),
            ),
            RefreshStatus::NotModified => {
                (Verdict::Allow, format!("feed {} not modified", self.feed))
            }
            RefreshStatus::NotDue { due_in_s } => (
                Verdict::Allow,
                format!("feed {} not due for {due_in_s} s", self.feed),
            ),
            RefreshStatus::Refused { reason } => (
                Verdict::Alert,
                format!(
                    "feed {} new version refused: {reason}; last good version kept",
                    self.feed
                ),
            ),
            RefreshStatus::FetchFailed { reason } => (
                Verdict::Alert,
                format!(
                    "feed {} fetch failed: {reason}; last good version kept",
                    self.feed
                ),
            ),
            RefreshStatus::KernelFailed { reason } => (
                Verdict::Alert,
                format!(
                    "feed {} kernel update failed: {reason}; previous contents kept",
                    self.feed
                ),
            ),
        };
        let detail = match serde_json::to_value(self) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        Event {
            timestamp: timestamp.to_string(),
            event_type: "feed".into(),
            component: "feeds".into(),
            flow: None,
            verdict,
            rule: None,
            techniques: Vec::new(),
            reason,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_is_an_alert_with_counts_in_detail() {
        let mut e = RefreshEvent::new(
            "tor",
            RefreshStatus::Refused {
                reason: "shrank by 80% (limit 50%)".into(),
            },
        );
        e.elements = 900;
        let ev = e.to_event("2026-11-27T21:00:00Z");
        assert_eq!(ev.verdict, Verdict::Alert);
        assert_eq!(ev.event_type, "feed");
        assert!(ev.reason.contains("last good version kept"));
        assert_eq!(ev.detail["elements"], 900);
        assert_eq!(ev.detail["status"]["kind"], "refused");
    }
}
