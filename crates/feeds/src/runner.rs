//! One feed end to end (the shell the daemon and `rampart feeds update` call): refresh the
//! source, normalise, plan and apply the kernel transaction, and report one [`RefreshEvent`].
//!
//! The runner remembers what it last loaded into the kernel, so later refreshes can be deltas;
//! after a restart the first sync is a full replace. On start (nothing loaded yet) it loads the
//! last good cached version even when the source is not due, failing or refused, so
//! enforcement resumes from the cache without waiting for the network.

use std::time::Duration;

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
    loaded: Option<KernelContents>,
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
            loaded: None,
        }
    }

    /// What the kernel holds according to the last successful sync.
    pub fn loaded(&self) -> Option<&KernelContents> {
        self.loaded.as_ref()
    }

    /// One refresh at `now_unix` (honours the interval unless `force`).
    pub fn tick(&mut self, cache: &Cache, now_unix: u64, force: bool) -> RefreshEvent {
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
