//! Kernel sync: turn a normalised feed into one `nft -f` transaction that replaces (or patches)
//! the contents of the feed's named sets, with no moment without enforcement.
//!
//! * **Atomic.** Every statement of a refresh (all families, all sets) goes into one `nft -f`
//!   script, which the kernel commits as one transaction: packets see either the old or the new
//!   contents. `flush set` + `add element` inside one transaction is therefore gap-free.
//! * **Chunked.** At most [`CHUNK_ELEMENTS`] elements per `add`/`delete element` statement
//!   (large statements hit ENOBUFS; firewalld PR #1544).
//! * **No timeouts.** Elements never carry `timeout`/`expires`: a feed's entries must not lapse
//!   together (cs-firewall-bouncer#509); they leave only when a refresh removes them.
//! * **Interval sets hold maximal ranges.** The kernel (with the emitter's `auto-merge`) keeps
//!   merged ranges, not the CIDRs a feed lists; deleting a CIDR that was merged with a neighbour
//!   fails ("element does not exist"). So the contents are modelled as maximal ranges and
//!   deltas delete and add whole ranges, which is exactly what the kernel holds.
//! * **Delta or full.** With the previous contents known (kept by the caller from its last
//!   successful sync; never read back from the kernel, which costs seconds for big sets), a
//!   refresh whose churn is small becomes `delete element` + `add element`; otherwise, or
//!   when the previous contents are unknown, `flush set` + `add element`.
//!
//! Set names follow `rampart-nft`: feed set `NAME` becomes `set_<ident(NAME)>_v4` / `_v6`
//! (interval) in `table inet <table>`, where `NAME` is the feed's name; the hash sets for single
//! addresses of [`Layout::Split`] are `set_<ident>_v4_hosts` / `_v6_hosts`. The emitter declares
//! both kinds for every feed set (`crates/nft/tests/feed_sets.rs` checks the names agree).

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::cidr::{self, addr, Fam, FamilyRanges, NormalizedNets, Range};

/// Most elements per `add element` / `delete element` statement.
pub const CHUNK_ELEMENTS: usize = 4096;

/// The emitter's identifier mangling (`rampart-nft` `ident`): non-alphanumerics become `_`,
/// at most 64 bytes.
pub fn ident(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out.truncate(64);
    out
}

/// How a feed's addresses are laid out in kernel sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One interval set per family holding everything (the emitter's `_hosts` sets stay empty
    /// and unused).
    IntervalOnly,
    /// Prefixes in the interval set, single addresses in a `_hosts` hash set per family (hash
    /// sets take deltas in constant time per element; interval sets do not with nft 1.0.6).
    Split,
}

/// One kernel set.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRef {
    /// nft table (family `inet`).
    pub table: String,
    /// Set name.
    pub set: String,
    /// Address family of the set.
    pub fam: Fam,
    /// Interval set (ranges) or hash set (single addresses).
    pub interval: bool,
}

/// The kernel sets of feed set `name` in `table` for `layout`.
pub fn feed_sets(table: &str, name: &str, layout: Layout) -> Vec<SetRef> {
    let stem = format!("set_{}", ident(name));
    let mut v = Vec::new();
    for fam in [Fam::V4, Fam::V6] {
        let suffix = match fam {
            Fam::V4 => "v4",
            Fam::V6 => "v6",
        };
        v.push(SetRef {
            table: table.to_string(),
            set: format!("{stem}_{suffix}"),
            fam,
            interval: true,
        });
        if layout == Layout::Split {
            v.push(SetRef {
                table: table.to_string(),
                set: format!("{stem}_{suffix}_hosts"),
                fam,
                interval: false,
            });
        }
    }
    v
}

/// Contents of every set of one feed, as the kernel holds them (maximal ranges per set).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelContents {
    /// Per set (same order as [`feed_sets`]): its sorted, disjoint ranges.
    pub sets: Vec<(SetRef, Vec<Range>)>,
}

impl KernelContents {
    /// Lay out a normalised feed onto `sets`.
    pub fn layout(norm: &NormalizedNets, sets: &[SetRef]) -> Self {
        let split = sets.iter().any(|s| !s.interval);
        let mut out = KernelContents::default();
        for s in sets {
            let nets: &[IpNet] = match (s.fam, s.interval, split) {
                (Fam::V4, true, false) => &norm.nets.v4,
                (Fam::V6, true, false) => &norm.nets.v6,
                (Fam::V4, true, true) => &norm.prefixes.v4,
                (Fam::V6, true, true) => &norm.prefixes.v6,
                (Fam::V4, false, _) => &norm.singles.v4,
                (Fam::V6, false, _) => &norm.singles.v6,
            };
            let ranges = if s.interval {
                FamilyRanges::from_nets(nets).of(s.fam).to_vec()
            } else {
                // A hash set holds single addresses: adjacent singles (e.g. .5 and .6, which no
                // prefix covers alone) must stay separate elements, never a range.
                let mut v: Vec<Range> = nets
                    .iter()
                    .map(|n| cidr::net_range(n).1)
                    .filter(|r| r.start == r.end)
                    .collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            out.sets.push((s.clone(), ranges));
        }
        out
    }

    /// Total kernel elements.
    pub fn elements(&self) -> usize {
        self.sets.iter().map(|(_, r)| r.len()).sum()
    }
}

/// Thresholds for choosing a delta over a full replace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyncOptions {
    /// Largest churn (added + removed elements) relative to the new size for a delta.
    pub max_delta_ratio: f64,
    /// Interval sets larger than this are always fully replaced: nft 1.0.6 reads a whole
    /// interval set back before any `add`/`delete element`, which costs minutes at 1M elements
    /// while a full replace costs seconds.
    pub interval_delta_max_elements: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            max_delta_ratio: 0.10,
            interval_delta_max_elements: 20_000,
        }
    }
}

/// How one set is updated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SetMode {
    /// Nothing changed.
    Unchanged,
    /// `flush set` + `add element`.
    Full,
    /// `delete element` + `add element`.
    Delta,
}

/// The transaction for one refresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncPlan {
    /// The `nft -f` script (empty when nothing changes).
    pub script: String,
    /// Per set: its mode.
    pub modes: Vec<(String, SetMode)>,
    /// Elements added (delta) or loaded (full).
    pub added: u64,
    /// Elements removed (delta) or flushed (full, when the old count is known).
    pub removed: u64,
}

impl SyncPlan {
    /// `full`, `delta`, `mixed` or `unchanged`.
    pub fn mode_name(&self) -> &'static str {
        let full = self.modes.iter().any(|(_, m)| *m == SetMode::Full);
        let delta = self.modes.iter().any(|(_, m)| *m == SetMode::Delta);
        match (full, delta) {
            (true, true) => "mixed",
            (true, false) => "full",
            (false, true) => "delta",
            (false, false) => "unchanged",
        }
    }
}

/// Render one element: a prefix when the range is exactly one, else `a-b`.
fn render(fam: Fam, r: Range, out: &mut String) {
    let mut nets = Vec::new();
    cidr::range_to_nets(fam, r, &mut nets);
    if nets.len() == 1 {
        let n = nets[0];
        if n.prefix_len() == n.max_prefix_len() {
            let _ = write!(out, "{}", n.addr());
        } else {
            let _ = write!(out, "{n}");
        }
    } else {
        let _ = write!(out, "{}-{}", addr(fam, r.start), addr(fam, r.end));
    }
}

fn statements(verb: &str, s: &SetRef, ranges: &[Range], out: &mut String) {
    for chunk in ranges.chunks(CHUNK_ELEMENTS) {
        let _ = write!(out, "{verb} element inet {} {} {{ ", s.table, s.set);
        for (i, r) in chunk.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            render(s.fam, *r, out);
        }
        out.push_str(" }\n");
    }
}

/// Sorted-list difference `a \ b` (exact range equality).
fn diff(a: &[Range], b: &[Range]) -> Vec<Range> {
    let mut out = Vec::new();
    let mut j = 0;
    for r in a {
        while j < b.len() && b[j] < *r {
            j += 1;
        }
        if j >= b.len() || b[j] != *r {
            out.push(*r);
        }
    }
    out
}

/// Plan one transaction from `old` (when known) to `new`.
pub fn plan(old: Option<&KernelContents>, new: &KernelContents, opts: &SyncOptions) -> SyncPlan {
    let mut script = String::new();
    let mut modes = Vec::new();
    let (mut added, mut removed) = (0u64, 0u64);
    for (set, new_ranges) in &new.sets {
        let old_ranges = old.and_then(|o| {
            o.sets
                .iter()
                .find(|(s, _)| s == set)
                .map(|(_, r)| r.as_slice())
        });
        let mode = match old_ranges {
            None => SetMode::Full,
            Some(o) => {
                let del = diff(o, new_ranges);
                let add = diff(new_ranges, o);
                let churn = del.len() + add.len();
                let size = new_ranges.len().max(o.len()).max(1);
                let too_big = set.interval && size > opts.interval_delta_max_elements && churn > 0;
                if churn == 0 {
                    SetMode::Unchanged
                } else if !too_big && (churn as f64) <= opts.max_delta_ratio * size as f64 {
                    statements("delete", set, &del, &mut script);
                    statements("add", set, &add, &mut script);
                    added += add.len() as u64;
                    removed += del.len() as u64;
                    SetMode::Delta
                } else {
                    SetMode::Full
                }
            }
        };
        if mode == SetMode::Full {
            let _ = writeln!(script, "flush set inet {} {}", set.table, set.set);
            statements("add", set, new_ranges, &mut script);
            added += new_ranges.len() as u64;
            removed += old_ranges.map_or(0, |o| o.len() as u64);
        }
        modes.push((set.set.clone(), mode));
    }
    SyncPlan {
        script,
        modes,
        added,
        removed,
    }
}

/// Errors of applying a transaction.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// `nft` could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `nft` rejected the transaction (nothing was changed: the transaction is atomic).
    #[error("nft rejected the transaction (exit {code:?}): {stderr}")]
    Rejected {
        /// Exit code.
        code: Option<i32>,
        /// Its stderr, truncated.
        stderr: String,
    },
}

/// How to run `nft`: optionally inside a named network namespace (`ip netns exec`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NftRunner {
    /// Network namespace name, or `None` for the caller's own namespace.
    pub netns: Option<String>,
}

impl NftRunner {
    fn command(&self) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "nft"]);
                c
            }
            None => Command::new("nft"),
        }
    }

    /// Run `nft -f -` with `script` on stdin; returns the wall time.
    pub fn apply(&self, script: &str) -> Result<Duration, SyncError> {
        self.run(&["-f", "-"], script)
    }

    /// Check `script` without committing (`nft -c -f -`).
    pub fn check(&self, script: &str) -> Result<Duration, SyncError> {
        self.run(&["-c", "-f", "-"], script)
    }

    fn run(&self, args: &[&str], script: &str) -> Result<Duration, SyncError> {
        let start = Instant::now();
        let mut cmd = self.command();
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let program = format!("{:?}", cmd.get_program());
        let mut child = cmd.spawn().map_err(|source| SyncError::Spawn {
            program: program.clone(),
            source,
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A write error means nft exited early; its status and stderr say why.
            let _ = stdin.write_all(script.as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|source| SyncError::Spawn { program, source })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            return Err(SyncError::Rejected {
                code: out.status.code(),
                stderr: crate::parse::truncate(&stderr, 2000),
            });
        }
        Ok(start.elapsed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cidr::normalize;

    fn norm(list: &[&str]) -> NormalizedNets {
        let nets: Vec<IpNet> = list
            .iter()
            .flat_map(|s| crate::parse::parse_ip_token(s).unwrap())
            .collect();
        normalize(&nets, &[])
    }

    #[test]
    fn names_follow_the_emitter() {
        let sets = feed_sets("rampart", "tor-exits", Layout::Split);
        let names: Vec<&str> = sets.iter().map(|s| s.set.as_str()).collect();
        assert_eq!(
            names,
            [
                "set_tor_exits_v4",
                "set_tor_exits_v4_hosts",
                "set_tor_exits_v6",
                "set_tor_exits_v6_hosts"
            ]
        );
    }

    #[test]
    fn full_replace_is_flush_plus_add_with_ranges() {
        let sets = feed_sets("t", "f", Layout::IntervalOnly);
        let k = KernelContents::layout(
            &norm(&[
                "192.0.2.0/24",
                "192.0.3.0/25",
                "198.51.100.7",
                "2001:db8::/64",
            ]),
            &sets,
        );
        let p = plan(None, &k, &SyncOptions::default());
        assert_eq!(
            p.script,
            "flush set inet t set_f_v4\nadd element inet t set_f_v4 { 192.0.2.0-192.0.3.127, 198.51.100.7 }\nflush set inet t set_f_v6\nadd element inet t set_f_v6 { 2001:db8::/64 }\n"
        );
        assert_eq!(p.mode_name(), "full");
        assert!(!p.script.contains("timeout"));
    }

    #[test]
    fn delta_deletes_and_adds_whole_ranges() {
        let sets = feed_sets("t", "f", Layout::Split);
        let mut base: Vec<String> = (1..=100).map(|i| format!("198.51.100.{}", i * 2)).collect();
        base.push("192.0.2.0/24".into());
        let refs: Vec<&str> = base.iter().map(String::as_str).collect();
        let old = KernelContents::layout(&norm(&refs), &sets);
        let mut next = refs.clone();
        next.retain(|s| *s != "198.51.100.50");
        next.push("203.0.113.9");
        next.push("192.0.3.0/24");
        let new = KernelContents::layout(&norm(&next), &sets);
        let p = plan(Some(&old), &new, &SyncOptions::default());
        assert_eq!(
            p.script,
            // The one-element interval set changes by 100%: replaced; the hosts set: patched.
            "flush set inet t set_f_v4\nadd element inet t set_f_v4 { 192.0.2.0/23 }\ndelete element inet t set_f_v4_hosts { 198.51.100.50 }\nadd element inet t set_f_v4_hosts { 203.0.113.9 }\n"
        );
        assert_eq!((p.added, p.removed), (2, 2));
        assert_eq!(p.mode_name(), "mixed");
        let opts = SyncOptions {
            max_delta_ratio: 2.0,
            ..SyncOptions::default()
        };
        let p = plan(Some(&old), &new, &opts);
        assert!(p.script.starts_with(
            "delete element inet t set_f_v4 { 192.0.2.0/24 }\nadd element inet t set_f_v4 { 192.0.2.0/23 }\n"
        ));
        assert_eq!(p.mode_name(), "delta");
        let same = plan(Some(&new), &new, &SyncOptions::default());
        assert!(same.script.is_empty());
    }

    #[test]
    fn big_churn_or_big_interval_set_goes_full() {
        let sets = feed_sets("t", "f", Layout::IntervalOnly);
        let old = KernelContents::layout(&norm(&["192.0.2.1"]), &sets);
        let new = KernelContents::layout(&norm(&["198.51.100.1"]), &sets);
        let p = plan(Some(&old), &new, &SyncOptions::default());
        assert!(p.script.starts_with("flush set inet t set_f_v4\n"));
        let opts = SyncOptions {
            max_delta_ratio: 1.0,
            interval_delta_max_elements: 0,
        };
        assert!(plan(Some(&old), &new, &opts)
            .script
            .starts_with("flush set"));
    }

    #[test]
    fn hash_sets_never_get_ranges() {
        // .5 and .6 are adjacent but not one prefix: two singles, not `a-b` (nft rejects ranges
        // in a set without `flags interval`).
        let sets = feed_sets("t", "f", Layout::Split);
        let k = KernelContents::layout(&norm(&["192.0.2.5", "192.0.2.6"]), &sets);
        let p = plan(None, &k, &SyncOptions::default());
        assert!(p
            .script
            .contains("add element inet t set_f_v4_hosts { 192.0.2.5, 192.0.2.6 }"));
        assert!(!p.script.contains('-'));
    }

    #[test]
    fn chunks_are_bounded() {
        let sets = feed_sets("t", "f", Layout::Split);
        let list: Vec<String> = (0..10_000u32)
            .map(|i| std::net::Ipv4Addr::from(0xC000_0000u32 + i * 2).to_string())
            .collect();
        let refs: Vec<&str> = list.iter().map(String::as_str).collect();
        let k = KernelContents::layout(&norm(&refs), &sets);
        let p = plan(None, &k, &SyncOptions::default());
        let adds: Vec<&str> = p
            .script
            .lines()
            .filter(|l| l.starts_with("add element"))
            .collect();
        assert_eq!(adds.len(), 3);
        assert!(adds.iter().all(|l| l.matches(',').count() < CHUNK_ELEMENTS));
    }
}
