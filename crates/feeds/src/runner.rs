//! One feed end to end (the shell the daemon and `rampart feeds update` call): refresh the
//! source, normalise, plan and apply the kernel transaction, and report one [`RefreshEvent`].
//!
//! The runner remembers what it last loaded into the kernel, so later refreshes can be deltas;
//! after a restart the first sync is a full replace. On start (nothing loaded yet) it loads the
//! last good cached version even when the source is not due, failing or refused, so
//! enforcement resumes from the cache without waiting for the network.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cidr::normalize;
use crate::event::{RefreshEvent, RefreshStatus};
use crate::format::FeedKind;
use crate::parse::Parsed;
use crate::source::{refresh, Cache, FeedSpec};
use crate::sync::{feed_sets, plan, KernelContents, Layout, NftRunner, SetRef, SyncOptions};

/// A feed bound to its kernel sets.
#[derive(Debug)]
pub struct FeedRunner {
    /// The feed.
    pub spec: FeedSpec,
    /// Its kernel sets.
    pub sets: Vec<SetRef>,
    /// How to run nft.
    pub nft: NftRunner,
    /// Delta/full thresholds.
    pub opts: SyncOptions,
    /// Counters over all ticks.
    pub metrics: FeedMetrics,
    loaded: Option<KernelContents>,
}

/// Per-feed counters and gauges, updated by every [`FeedRunner::tick`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedMetrics {
    /// Ticks that ended `Updated`.
    pub updated: u64,
    /// Ticks that ended `NotModified`.
    pub not_modified: u64,
    /// Ticks that ended `NotDue`.
    pub not_due: u64,
    /// New versions refused by a sanity check.
    pub refused: u64,
    /// Failed fetches.
    pub fetch_failed: u64,
    /// Rejected kernel transactions.
    pub kernel_failed: u64,
    /// Kernel transactions applied.
    pub syncs: u64,
    /// Elements added over all syncs.
    pub elements_added: u64,
    /// Elements removed over all syncs.
    pub elements_removed: u64,
    /// Kernel elements now.
    pub elements: u64,
    /// Unix time of the last accepted version (0: never).
    pub last_update_unix: u64,
    /// Duration of the last kernel transaction.
    pub last_sync_ms: u64,
}

impl FeedMetrics {
    fn record(&mut self, e: &RefreshEvent, now_unix: u64) {
        match e.status {
            RefreshStatus::Updated => {
                self.updated += 1;
                self.last_update_unix = now_unix;
            }
            RefreshStatus::NotModified => self.not_modified += 1,
            RefreshStatus::NotDue { .. } => self.not_due += 1,
            RefreshStatus::Refused { .. } => self.refused += 1,
            RefreshStatus::FetchFailed { .. } => self.fetch_failed += 1,
            RefreshStatus::KernelFailed { .. } => self.kernel_failed += 1,
        }
        if !e.sync_mode.is_empty() {
            self.syncs += 1;
            self.elements_added += e.added;
            self.elements_removed += e.removed;
            self.last_sync_ms = e.sync_ms;
        }
        self.elements = e.elements;
    }
}

type Getter = fn(&FeedMetrics) -> u64;

/// Render metrics of several feeds in the Prometheus text format (the feed name is the only
/// label besides the outcome: bounded by the policy).
pub fn render_prometheus(feeds: &[(&str, &FeedMetrics)]) -> String {
    let mut out = String::new();
    let outcomes: [(&str, Getter); 6] = [
        ("updated", |m| m.updated),
        ("not_modified", |m| m.not_modified),
        ("not_due", |m| m.not_due),
        ("refused", |m| m.refused),
        ("fetch_failed", |m| m.fetch_failed),
        ("kernel_failed", |m| m.kernel_failed),
    ];
    let clean = |f: &str| -> String {
        f.chars()
            .filter(|c| *c != '"' && *c != '\\' && *c != '\n')
            .collect()
    };
    let name = "rampart_feed_refreshes_total";
    let _ = writeln!(
        out,
        "# HELP {name} Refresh attempts by outcome.\n# TYPE {name} counter"
    );
    for (feed, m) in feeds {
        for (outcome, get) in outcomes {
            let _ = writeln!(
                out,
                "{name}{{feed=\"{}\",outcome=\"{outcome}\"}} {}",
                clean(feed),
                get(m)
            );
        }
    }
    let series: [(&str, &str, &str, Getter); 6] = [
        (
            "rampart_feed_syncs_total",
            "counter",
            "Kernel transactions applied.",
            |m| m.syncs,
        ),
        (
            "rampart_feed_elements_added_total",
            "counter",
            "Kernel elements added.",
            |m| m.elements_added,
        ),
        (
            "rampart_feed_elements_removed_total",
            "counter",
            "Kernel elements removed.",
            |m| m.elements_removed,
        ),
        (
            "rampart_feed_elements",
            "gauge",
            "Kernel elements now.",
            |m| m.elements,
        ),
        (
            "rampart_feed_last_update_timestamp_seconds",
            "gauge",
            "Last accepted version.",
            |m| m.last_update_unix,
        ),
        (
            "rampart_feed_last_sync_milliseconds",
            "gauge",
            "Duration of the last kernel transaction.",
            |m| m.last_sync_ms,
        ),
    ];
    for (name, kind, help, get) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (feed, m) in feeds {
            let _ = writeln!(out, "{name}{{feed=\"{}\"}} {}", clean(feed), get(m));
        }
    }
    out
}

impl FeedRunner {
    /// A runner for `spec` writing the sets of `table` in `layout`.
    pub fn new(spec: FeedSpec, table: &str, layout: Layout, nft: NftRunner) -> Self {
        let sets = feed_sets(table, &spec.name, layout);
        Self {
            spec,
            sets,
            nft,
            opts: SyncOptions::default(),
            metrics: FeedMetrics::default(),
            loaded: None,
        }
    }

    /// What the kernel holds according to the last successful sync.
    pub fn loaded(&self) -> Option<&KernelContents> {
        self.loaded.as_ref()
    }

    /// One refresh at `now_unix` (honours the interval unless `force`).
    pub fn tick(&mut self, cache: &Cache, now_unix: u64, force: bool) -> RefreshEvent {
        let event = self.tick_inner(cache, now_unix, force);
        self.metrics.record(&event, now_unix);
        event
    }

    fn tick_inner(&mut self, cache: &Cache, now_unix: u64, force: bool) -> RefreshEvent {
        let r = refresh(&self.spec, cache, now_unix, force);
        let mut event = r.event;
        let Some(current) = r.current else {
            return event;
        };
        if self.spec.format.kind() == FeedKind::Domain {
            // Domain feeds feed the DNS filter, not kernel sets.
            return event;
        }
        if !(r.changed || self.loaded.is_none()) {
            if let Some(l) = &self.loaded {
                event.elements = l.elements() as u64;
            }
            return event;
        }
        self.sync(&current, &mut event);
        event
    }

    fn sync(&mut self, current: &Parsed, event: &mut RefreshEvent) {
        let mut allow = self.spec.allow.clone();
        allow.extend_from_slice(&current.allow_nets);
        let norm = normalize(&current.nets, &allow);
        let next = KernelContents::layout(&norm, &self.sets);
        let p = plan(self.loaded.as_ref(), &next, &self.opts);
        event.subtracted = norm.subtracted.removed.len() as u64;
        let took = if p.script.is_empty() {
            Ok(Duration::ZERO)
        } else {
            self.nft.apply(&p.script)
        };
        match took {
            Ok(d) => {
                event.elements = next.elements() as u64;
                event.added = p.added;
                event.removed = p.removed;
                event.sync_mode = p.mode_name().to_string();
                event.sync_ms = d.as_millis() as u64;
                self.loaded = Some(next);
            }
            Err(e) => {
                // The transaction is atomic: the kernel still holds what it held.
                event.status = RefreshStatus::KernelFailed {
                    reason: e.to_string(),
                };
                if let Some(l) = &self.loaded {
                    event.elements = l.elements() as u64;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_count_outcomes_and_render() {
        let mut m = FeedMetrics::default();
        let mut e = RefreshEvent::new("tor", RefreshStatus::Updated);
        e.sync_mode = "full".into();
        e.added = 10;
        e.elements = 10;
        m.record(&e, 100);
        m.record(
            &RefreshEvent::new(
                "tor",
                RefreshStatus::Refused {
                    reason: "empty".into(),
                },
            ),
            200,
        );
        assert_eq!(
            (m.updated, m.refused, m.syncs, m.last_update_unix),
            (1, 1, 1, 100)
        );
        let text = render_prometheus(&[("tor", &m)]);
        assert!(text.contains("rampart_feed_refreshes_total{feed=\"tor\",outcome=\"refused\"} 1"));
        assert!(text.contains("rampart_feed_elements_added_total{feed=\"tor\"} 10"));
        assert!(text.contains("# TYPE rampart_feed_elements gauge"));
    }
}
