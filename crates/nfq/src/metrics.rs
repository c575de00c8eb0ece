//! Counters as Prometheus text (exposition format 0.0.4) and as one JSON stats object.

use std::fmt::Write;

use rampart_ir::{AppProtocol, Policy};

use crate::core::{Counters, Outcome};
use crate::shell::ShellCounters;

/// Everything worth counting at one moment.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    /// Classifier counters.
    pub core: &'a Counters,
    /// Shell counters.
    pub shell: &'a ShellCounters,
    /// Connections held, evicted, expired.
    pub table: (usize, u64, u64),
    /// The policy (rule names for per-rule counters).
    pub policy: &'a Policy,
}

fn label_name(slot: usize) -> &'static str {
    AppProtocol::ALL
        .get(slot)
        .map_or("unrecognised", |p| p.as_str())
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text.
pub fn prometheus(s: &Snapshot<'_>) -> String {
    let mut o = String::new();
    let mut counter = |name: &str, help: &str, rows: Vec<(String, u64)>| {
        let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter");
        for (labels, v) in rows {
            let _ = writeln!(o, "{name}{labels} {v}");
        }
    };
    let c = s.core;
    counter(
        "rampart_nfq_packets_total",
        "Queued packets by verdict.",
        vec![
            ("{verdict=\"accept\"}".into(), c.accepted),
            ("{verdict=\"drop\"}".into(), c.dropped),
        ],
    );
    counter(
        "rampart_nfq_outcomes_total",
        "Queued packets by outcome.",
        Outcome::ALL
            .iter()
            .zip(c.by_outcome)
            .map(|(o, v)| (format!("{{outcome=\"{}\"}}", o.as_str()), v))
            .collect(),
    );
    counter(
        "rampart_nfq_inspected_total",
        "Inspected packets by application-protocol label.",
        c.by_label
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("{{label=\"{}\"}}", label_name(i)), *v))
            .collect(),
    );
    counter(
        "rampart_nfq_rule_decisions_total",
        "Connections decided (blocked or accepted) per application rule.",
        c.by_rule
            .iter()
            .map(|(id, v)| {
                let name = s.policy.rules.get(id.0 as usize).map_or("?", |r| &r.name);
                (format!("{{rule=\"{}\"}}", escape(name)), *v)
            })
            .collect(),
    );
    let sh = s.shell;
    for (name, help, v) in [
        (
            "rampart_nfq_malformed_total",
            "Netlink messages that did not parse.",
            sh.malformed,
        ),
        (
            "rampart_nfq_recv_errors_total",
            "Receive errors (ENOBUFS: packets lost to the fail-open/closed setting).",
            sh.recv_errors,
        ),
        (
            "rampart_nfq_verdict_errors_total",
            "Verdicts that could not be sent.",
            sh.verdict_errors,
        ),
        (
            "rampart_nfq_ct_lookups_total",
            "Conntrack orientation look-ups.",
            sh.ct_lookups,
        ),
        (
            "rampart_nfq_ct_lookup_errors_total",
            "Conntrack look-ups that failed.",
            sh.ct_lookup_errors,
        ),
        (
            "rampart_nfq_ct_marks_set_total",
            "Conntrack marks set.",
            sh.ct_marks_set,
        ),
        (
            "rampart_nfq_ct_marks_missing_total",
            "Marks not set: connection not in the conntrack table.",
            sh.ct_marks_missing,
        ),
        (
            "rampart_nfq_ct_mark_errors_total",
            "Marks that failed.",
            sh.ct_mark_errors,
        ),
        (
            "rampart_nfq_event_errors_total",
            "Events that could not be written.",
            sh.event_errors,
        ),
        (
            "rampart_nfq_conns_evicted_total",
            "Connections evicted from the full table.",
            s.table.1,
        ),
        (
            "rampart_nfq_conns_expired_total",
            "Connections forgotten after the idle timeout.",
            s.table.2,
        ),
    ] {
        counter(name, help, vec![(String::new(), v)]);
    }
    let _ = writeln!(
        o,
        "# HELP rampart_nfq_conns Connections in the table.\n# TYPE rampart_nfq_conns gauge\nrampart_nfq_conns {}",
        s.table.0
    );
    o
}

/// The same numbers as one JSON object.
pub fn stats_json(s: &Snapshot<'_>) -> serde_json::Value {
    let c = s.core;
    let sh = s.shell;
    let outcomes: serde_json::Map<String, serde_json::Value> = Outcome::ALL
        .iter()
        .zip(c.by_outcome)
        .map(|(o, v)| (o.as_str().to_string(), v.into()))
        .collect();
    let labels: serde_json::Map<String, serde_json::Value> = c
        .by_label
        .iter()
        .enumerate()
        .filter(|(_, v)| **v > 0)
        .map(|(i, v)| (label_name(i).to_string(), (*v).into()))
        .collect();
    let rules: serde_json::Map<String, serde_json::Value> = c
        .by_rule
        .iter()
        .map(|(id, v)| {
            let name = s.policy.rules.get(id.0 as usize).map_or("?", |r| &r.name);
            (name.to_string(), (*v).into())
        })
        .collect();
    serde_json::json!({
        "packets": c.packets,
        "accepted": c.accepted,
        "dropped": c.dropped,
        "outcomes": outcomes,
        "labels": labels,
        "rules": rules,
        "conns": s.table.0,
        "conns_evicted": s.table.1,
        "conns_expired": s.table.2,
        "malformed": sh.malformed,
        "recv_errors": sh.recv_errors,
        "verdict_errors": sh.verdict_errors,
        "ct_lookups": sh.ct_lookups,
        "ct_lookup_errors": sh.ct_lookup_errors,
        "ct_marks_set": sh.ct_marks_set,
        "ct_marks_missing": sh.ct_marks_missing,
        "ct_mark_errors": sh.ct_mark_errors,
        "event_errors": sh.event_errors,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_ir::{Action, Direction, Rule, RuleId};

    #[test]
    fn prometheus_text_has_every_family_and_escapes_names() {
        let policy = Policy {
            rules: vec![Rule::new("a\"b", Direction::Ingress, Action::Drop)],
            ..Policy::default()
        };
        let core = Counters {
            packets: 3,
            accepted: 2,
            dropped: 1,
            by_rule: vec![(RuleId(0), 1)],
            ..Counters::default()
        };
        let shell = ShellCounters::default();
        let snap = Snapshot {
            core: &core,
            shell: &shell,
            table: (5, 1, 2),
            policy: &policy,
        };
        let text = prometheus(&snap);
        assert!(text.contains("rampart_nfq_packets_total{verdict=\"drop\"} 1\n"));
        assert!(text.contains("rampart_nfq_rule_decisions_total{rule=\"a\\\"b\"} 1\n"));
        assert!(text.contains("rampart_nfq_inspected_total{label=\"unrecognised\"} 0\n"));
        assert!(text.contains("rampart_nfq_conns 5\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            assert!(
                line.rsplit_once(' ')
                    .is_some_and(|(_, v)| v.parse::<u64>().is_ok()),
                "{line}"
            );
        }
        let j = stats_json(&snap);
        assert_eq!(j["rules"]["a\"b"], 1);
        assert_eq!(j["conns_evicted"], 1);
    }
}
