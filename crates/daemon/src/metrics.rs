//! Prometheus text exposition of the daemon's state. Pure: the numbers come in, text goes out.

use std::fmt::Write;

use crate::store::Summary;
use crate::supervisor::ComponentStatus;

/// One kernel rule's counters (from the applied ruleset).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RuleCounter {
    /// Policy rule name.
    pub rule: String,
    /// Technique ids, comma-separated.
    pub techniques: String,
    /// Packets matched.
    pub packets: u64,
    /// Bytes matched.
    pub bytes: u64,
}

/// Everything `/metrics` shows.
#[derive(Clone, Debug, Default)]
pub struct MetricsInput<'a> {
    /// Components.
    pub components: &'a [ComponentStatus],
    /// Events store aggregates.
    pub summary: Option<&'a Summary>,
    /// Kernel rule counters.
    pub rules: &'a [RuleCounter],
    /// Successful reloads.
    pub reloads_ok: u64,
    /// Refused reloads (bad policy; nothing changed).
    pub reloads_failed: u64,
    /// Seconds since the daemon started.
    pub uptime_s: u64,
    /// Components down whose traffic bypasses them now (`on_down = "open"`).
    pub failing_open: &'a [String],
    /// An apply awaits `rampart confirm`.
    pub apply_pending: bool,
}

/// Escape a label value (backslash, double quote, newline).
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render the exposition text.
pub fn render(input: &MetricsInput<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# HELP rampart_up_seconds Seconds since the daemon started.\n# TYPE rampart_up_seconds gauge\nrampart_up_seconds {}", input.uptime_s);
    let _ = writeln!(out, "# HELP rampart_component_up Whether the component runs and reported ready.\n# TYPE rampart_component_up gauge");
    for c in input.components {
        let _ = writeln!(
            out,
            "rampart_component_up{{component=\"{}\",kind=\"{}\"}} {}",
            label(&c.name),
            label(&c.kind),
            u8::from(c.ready)
        );
    }
    let _ = writeln!(out, "# HELP rampart_component_starts_total Times the component was started.\n# TYPE rampart_component_starts_total counter");
    for c in input.components {
        let _ = writeln!(
            out,
            "rampart_component_starts_total{{component=\"{}\"}} {}",
            label(&c.name),
            c.starts
        );
    }
    let _ = writeln!(out, "# HELP rampart_component_failures_total Unexpected exits or failed starts.\n# TYPE rampart_component_failures_total counter");
    for c in input.components {
        let _ = writeln!(
            out,
            "rampart_component_failures_total{{component=\"{}\"}} {}",
            label(&c.name),
            c.failures
        );
    }
    let _ = writeln!(out, "# HELP rampart_component_failing_open Whether the component is down and its traffic bypasses it (on_down = \"open\").\n# TYPE rampart_component_failing_open gauge");
    for c in input.components {
        let _ = writeln!(
            out,
            "rampart_component_failing_open{{component=\"{}\"}} {}",
            label(&c.name),
            u8::from(input.failing_open.contains(&c.name))
        );
    }
    let _ = writeln!(out, "# HELP rampart_apply_pending Whether an apply awaits rampart confirm (rolled back at its deadline otherwise).\n# TYPE rampart_apply_pending gauge\nrampart_apply_pending {}", u8::from(input.apply_pending));
    let _ = writeln!(out, "# HELP rampart_reloads_total Policy reloads by result.\n# TYPE rampart_reloads_total counter\nrampart_reloads_total{{result=\"ok\"}} {}\nrampart_reloads_total{{result=\"refused\"}} {}", input.reloads_ok, input.reloads_failed);
    if let Some(summary) = input.summary {
        let _ = writeln!(out, "# HELP rampart_events_stored Events in the store.\n# TYPE rampart_events_stored gauge\nrampart_events_stored {}", summary.rows);
        let _ = writeln!(out, "# HELP rampart_events Stored events by component and verdict.\n# TYPE rampart_events gauge");
        for (component, verdict, count) in &summary.by_component_verdict {
            let _ = writeln!(
                out,
                "rampart_events{{component=\"{}\",verdict=\"{}\"}} {count}",
                label(component),
                label(verdict)
            );
        }
        let _ = writeln!(out, "# HELP rampart_technique_events Stored events per ATT&CK technique.\n# TYPE rampart_technique_events gauge");
        for (technique, count) in &summary.by_technique {
            let _ = writeln!(
                out,
                "rampart_technique_events{{technique=\"{}\"}} {count}",
                label(technique)
            );
        }
    }
    let _ = writeln!(out, "# HELP rampart_rule_packets_total Packets matched by each kernel rule.\n# TYPE rampart_rule_packets_total counter");
    for r in input.rules {
        let _ = writeln!(
            out,
            "rampart_rule_packets_total{{rule=\"{}\",techniques=\"{}\"}} {}",
            label(&r.rule),
            label(&r.techniques),
            r.packets
        );
    }
    let _ = writeln!(out, "# HELP rampart_rule_bytes_total Bytes matched by each kernel rule.\n# TYPE rampart_rule_bytes_total counter");
    for r in input.rules {
        let _ = writeln!(
            out,
            "rampart_rule_bytes_total{{rule=\"{}\",techniques=\"{}\"}} {}",
            label(&r.rule),
            label(&r.techniques),
            r.bytes
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition_with_escaped_labels() {
        let components = vec![ComponentStatus {
            name: "dns".into(),
            kind: "dns".into(),
            ready: true,
            starts: 2,
            failures: 1,
            ..Default::default()
        }];
        let summary = Summary {
            rows: 3,
            by_component_verdict: vec![("nft".into(), "block".into(), 3)],
            by_technique: vec![("T1071".into(), 3)],
            ..Summary::default()
        };
        let rules = vec![RuleCounter {
            rule: "we\"ird\\name".into(),
            techniques: "T1071,T1105".into(),
            packets: 7,
            bytes: 420,
        }];
        let text = render(&MetricsInput {
            components: &components,
            summary: Some(&summary),
            rules: &rules,
            reloads_ok: 1,
            reloads_failed: 2,
            uptime_s: 9,
            failing_open: &["dns".to_string()],
            apply_pending: true,
        });
        for expected in [
            "rampart_component_up{component=\"dns\",kind=\"dns\"} 1",
            "rampart_component_failures_total{component=\"dns\"} 1",
            "rampart_reloads_total{result=\"refused\"} 2",
            "rampart_component_failing_open{component=\"dns\"} 1",
            "rampart_apply_pending 1",
            "rampart_events{component=\"nft\",verdict=\"block\"} 3",
            "rampart_technique_events{technique=\"T1071\"} 3",
            "rampart_rule_packets_total{rule=\"we\\\"ird\\\\name\",techniques=\"T1071,T1105\"} 7",
        ] {
            assert!(text.contains(expected), "missing {expected} in\n{text}");
        }
        // Every sample line is `name{labels} value` or `name value`.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
