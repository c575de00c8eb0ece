//! The typed event model every Rampart component emits into, and a JSON-lines sink for it.
//!
//! An [`Event`] says what happened to which [`Flow`], which policy rule decided it (with its
//! file:line), which ATT&CK techniques that concerns, and the verdict. Field names follow
//! Suricata's EVE JSON where an equivalent exists (`timestamp`, `event_type`, `src_ip`,
//! `src_port`, `dest_ip`, `dest_port`, `proto`) so SIEM shippers that read EVE can read these.
//! Time is an input: events carry the timestamp the caller gives them. Non-goals: storage,
//! rotation, querying (the daemon owns those).

#![deny(missing_docs)]

use std::io::Write;
use std::net::IpAddr;

use rampart_ir::{Action, RuleId, SourceLoc, TechniqueId};
use serde::{Deserialize, Serialize};

/// The five-tuple (or less, for protocols without ports) an event is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Flow {
    /// Source address.
    pub src_ip: IpAddr,
    /// Source port (TCP/UDP), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src_port: Option<u16>,
    /// Destination address.
    pub dest_ip: IpAddr,
    /// Destination port (TCP/UDP), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dest_port: Option<u16>,
    /// Protocol name (`TCP`, `UDP`, `ICMP`, `IPv6-ICMP`) or number as text.
    pub proto: String,
}

/// The policy rule an event is attributed to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleRef {
    /// Rule index in the IR.
    pub id: RuleId,
    /// Rule name.
    pub name: String,
    /// Where the rule is written.
    pub loc: SourceLoc,
}

/// What a component decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Let through.
    Allow,
    /// Stopped (dropped, rejected, NXDOMAIN'd, 403'd...).
    Block,
    /// Only observed (detection-only modes, anomalies).
    Alert,
}

impl From<Action> for Verdict {
    fn from(action: Action) -> Self {
        match action {
            Action::Accept => Verdict::Allow,
            Action::Drop | Action::Reject => Verdict::Block,
        }
    }
}

/// One event.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339 timestamp, or for replayed captures the capture's own packet time.
    pub timestamp: String,
    /// Kind of event: `flow` (engine/kernel verdicts), `anomaly`, `dns`, `http`, `egress`,
    /// `ban`, `l2`, `feed`, ...
    pub event_type: String,
    /// Emitting component (`engine`, `nft`, `dns`, `waf`, ...).
    pub component: String,
    /// The flow, when the event is about one.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub flow: Option<Flow>,
    /// The decision.
    pub verdict: Verdict,
    /// The deciding rule, when a policy rule decided (absent for defaults and detections).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<RuleRef>,
    /// ATT&CK techniques concerned.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub techniques: Vec<TechniqueId>,
    /// Human-readable reason (`default drop on forward`, `invalid conntrack state`, ...).
    pub reason: String,
    /// Component-specific fields.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty", default)]
    pub detail: serde_json::Map<String, serde_json::Value>,
}

/// RFC 3339 UTC timestamp with microseconds (`2026-11-27T20:00:00.123456Z`) for `unix_ns`
/// nanoseconds since the epoch: the format of [`Event::timestamp`]. Time is an input.
pub fn rfc3339_utc(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let micros = (unix_ns % 1_000_000_000) / 1_000;
    let date = rampart_ir::Date::from_unix_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{date}T{:02}:{:02}:{:02}.{micros:06}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Errors of the sinks.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// Writing the event failed.
    #[error("cannot write event: {0}")]
    Write(#[from] std::io::Error),
    /// Serialising the event failed (a non-string map key, which the model does not produce).
    #[error("cannot serialise event: {0}")]
    Serialise(#[from] serde_json::Error),
}

/// Something that accepts events.
pub trait Sink {
    /// Record one event.
    fn emit(&mut self, event: &Event) -> Result<(), EventError>;
}

/// Writes one JSON object per line.
#[derive(Debug)]
pub struct JsonLinesSink<W: Write> {
    out: W,
    written: u64,
}

impl<W: Write> JsonLinesSink<W> {
    /// A sink writing to `out` (wrap files in a `BufWriter`).
    pub fn new(out: W) -> Self {
        Self { out, written: 0 }
    }

    /// Number of events written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flush and return the writer.
    pub fn into_inner(mut self) -> Result<W, EventError> {
        self.out.flush()?;
        Ok(self.out)
    }
}

impl<W: Write> Sink for JsonLinesSink<W> {
    fn emit(&mut self, event: &Event) -> Result<(), EventError> {
        serde_json::to_writer(&mut self.out, event)?;
        self.out.write_all(b"\n")?;
        self.written += 1;
        Ok(())
    }
}

/// Keeps events in memory (tests, small reports).
#[derive(Debug, Default)]
pub struct VecSink {
    /// Events in emission order.
    pub events: Vec<Event>,
}

impl Sink for VecSink {
    fn emit(&mut self, event: &Event) -> Result<(), EventError> {
        self.events.push(event.clone());
        Ok(())
    }
}

/// Declares `pub struct Metrics` with one lock-free counter per field, plus `render` (Prometheus
/// text exposition, every name prefixed with `$prefix`) and `snapshot` ((name, value) pairs).
/// The components' counters share this one definition so their exposition format cannot drift.
///
/// ```
/// rampart_events::prometheus_counters! {
///     prefix = "rampart_demo_",
///     allowed => "Requests allowed.",
/// }
/// let m = Metrics::default();
/// m.allowed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
/// assert!(m.render().contains("rampart_demo_allowed 1\n"));
/// ```
#[macro_export]
macro_rules! prometheus_counters {
    (prefix = $prefix:literal, $($field:ident => $help:literal),* $(,)?) => {
        /// Counters of one component (lock-free atomics).
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $field: ::std::sync::atomic::AtomicU64,)*
        }

        impl Metrics {
            /// Prometheus text exposition of every counter.
            pub fn render(&self) -> String {
                use ::std::fmt::Write as _;
                let mut out = String::new();
                $(
                    let name = concat!($prefix, stringify!($field));
                    let _ = writeln!(out, "# HELP {name} {}", $help);
                    let _ = writeln!(out, "# TYPE {name} counter");
                    let _ = writeln!(out, "{name} {}", self.$field.load(::std::sync::atomic::Ordering::Relaxed));
                )*
                out
            }

            /// (name, value) pairs, for tests and JSON.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(::std::sync::atomic::Ordering::Relaxed)),)*]
            }

            /// Adds one to a counter.
            pub fn inc(counter: &::std::sync::atomic::AtomicU64) {
                counter.fetch_add(1, ::std::sync::atomic::Ordering::Relaxed);
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            timestamp: "2026-11-27T20:00:00.000000Z".into(),
            event_type: "flow".into(),
            component: "engine".into(),
            flow: Some(Flow {
                src_ip: "192.0.2.5".parse().unwrap(),
                src_port: Some(51515),
                dest_ip: "203.0.113.7".parse().unwrap(),
                dest_port: Some(445),
                proto: "TCP".into(),
            }),
            verdict: Verdict::Block,
            rule: Some(RuleRef {
                id: RuleId(3),
                name: "smb-egress/block".into(),
                loc: SourceLoc {
                    file: "policy.toml".into(),
                    line: 12,
                    col: 1,
                },
            }),
            techniques: vec![TechniqueId("T1187".into())],
            reason: "rule".into(),
            detail: serde_json::Map::new(),
        }
    }

    #[test]
    fn json_lines_are_eve_shaped_and_round_trip() {
        let mut sink = JsonLinesSink::new(Vec::new());
        sink.emit(&sample()).unwrap();
        sink.emit(&sample()).unwrap();
        assert_eq!(sink.written(), 2);
        let bytes = sink.into_inner().unwrap();
        let text = String::from_utf8(bytes).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let value: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        // EVE field names at the top level, so EVE readers find them.
        assert_eq!(value["src_ip"], "192.0.2.5");
        assert_eq!(value["dest_port"], 445);
        assert_eq!(value["proto"], "TCP");
        assert_eq!(value["verdict"], "block");
        assert_eq!(value["rule"]["loc"]["line"], 12);
        assert_eq!(value["techniques"][0], "T1187");
        assert!(value.get("detail").is_none(), "empty detail is omitted");
        let back: Event = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(back, sample());
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_utc(1_795_809_600_123_456_789),
            "2026-11-27T20:00:00.123456Z"
        );
        assert_eq!(
            rfc3339_utc(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
    }

    #[test]
    fn verdict_from_action() {
        assert_eq!(Verdict::from(Action::Accept), Verdict::Allow);
        assert_eq!(Verdict::from(Action::Reject), Verdict::Block);
        assert_eq!(Verdict::from(Action::Drop), Verdict::Block);
    }
}
