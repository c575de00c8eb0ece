//! The scoreboard: per case (expected, observed, evidence) and per technique of M1037 (proven,
//! failed, or not yet addressed by any scenario), rendered as a terminal table, JSON or a
//! self-contained HTML page.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::Serialize;

use crate::scenario::{Expectation, FamilyName, Scenario};

/// A rule whose counter moved while a case played.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Evidence {
    /// `family table chain`.
    pub chain: String,
    /// nft rule handle.
    pub handle: u64,
    /// The rule's comment (policy rule name, file:line, techniques).
    pub comment: String,
}

/// One played case.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CaseResult {
    /// Scenario id.
    pub scenario: String,
    /// Techniques of the scenario.
    pub techniques: Vec<String>,
    /// Case name.
    pub case: String,
    /// Family played.
    pub family: FamilyName,
    /// Client host and address.
    pub from: String,
    /// Server host and address.
    pub to: String,
    /// Traffic played.
    pub traffic: String,
    /// Expected result.
    pub expected: Expectation,
    /// Observed result.
    pub observed: Expectation,
    /// How the exchange went.
    pub detail: String,
    /// Rules whose counters moved.
    pub evidence: Vec<Evidence>,
    /// Flood cases: what was measured (legitimate success ratio, flood rate, conntrack, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measure: Option<crate::flood::FloodMeasure>,
    /// L2 cases: the detection the guard had to report, and whether it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detection: Option<Detection>,
}

/// A detection a case requires from the L2 guard.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Detection {
    /// The event's `detail.kind`.
    pub kind: String,
    /// The guard reported it while the case played.
    pub seen: bool,
}

impl CaseResult {
    /// Observed as expected, and the required detection (if any) reported.
    pub fn passed(&self) -> bool {
        self.expected == self.observed && self.detection.as_ref().is_none_or(|d| d.seen)
    }
}

/// Status of one technique in the lab.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TechniqueStatus {
    /// Every case of every scenario for it behaved as expected.
    Proven,
    /// At least one case did not.
    Failed,
    /// No scenario plays it yet.
    NotYetAddressed,
}

impl TechniqueStatus {
    fn label(self) -> &'static str {
        match self {
            TechniqueStatus::Proven => "proven",
            TechniqueStatus::Failed => "FAILED",
            TechniqueStatus::NotYetAddressed => "not yet addressed",
        }
    }
}

/// One technique row.
#[derive(Clone, Debug, Serialize)]
pub struct TechniqueRow {
    /// Technique id.
    pub id: &'static str,
    /// Technique name.
    pub name: &'static str,
    /// Status.
    pub status: TechniqueStatus,
    /// Scenarios that play it.
    pub scenarios: Vec<String>,
    /// Cases passed / played.
    pub passed: usize,
    /// Cases played.
    pub played: usize,
}

/// The whole result.
#[derive(Clone, Debug, Serialize)]
pub struct Scoreboard {
    /// Policy played.
    pub policy: String,
    /// Every case.
    pub cases: Vec<CaseResult>,
    /// Every M1037 technique.
    pub techniques: Vec<TechniqueRow>,
    /// Cases passed.
    pub passed: usize,
    /// Cases failed.
    pub failed: usize,
}

impl Scoreboard {
    /// Score `cases` over the M1037 catalogue.
    pub fn new(policy: String, scenarios: &[Scenario], cases: Vec<CaseResult>) -> Self {
        let mut by_technique: BTreeMap<&str, (Vec<String>, usize, usize)> = BTreeMap::new();
        for scenario in scenarios {
            for technique in &scenario.techniques {
                let entry = by_technique.entry(technique.as_str()).or_default();
                entry.0.push(scenario.id.clone());
            }
        }
        for case in &cases {
            for technique in &case.techniques {
                if let Some(entry) = by_technique.get_mut(technique.as_str()) {
                    entry.2 += 1;
                    if case.passed() {
                        entry.1 += 1;
                    }
                }
            }
        }
        let techniques = rampart_attack::TECHNIQUES
            .iter()
            .map(|t| {
                let (scenarios, passed, played) =
                    by_technique.get(t.id).cloned().unwrap_or_default();
                let status = if played == 0 {
                    TechniqueStatus::NotYetAddressed
                } else if passed == played {
                    TechniqueStatus::Proven
                } else {
                    TechniqueStatus::Failed
                };
                TechniqueRow {
                    id: t.id,
                    name: t.name,
                    status,
                    scenarios,
                    passed,
                    played,
                }
            })
            .collect();
        let passed = cases.iter().filter(|c| c.passed()).count();
        let failed = cases.len() - passed;
        Self {
            policy,
            cases,
            techniques,
            passed,
            failed,
        }
    }

    /// All cases behaved as expected.
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }

    /// Terminal rendering; `colour` adds ANSI colours (the caller decides: a tty or not).
    pub fn render_text(&self, colour: bool) -> String {
        let paint = |text: &str, code: &str| {
            if colour {
                format!("\x1b[{code}m{text}\x1b[0m")
            } else {
                text.to_string()
            }
        };
        let mut out = String::new();
        let _ = writeln!(out, "Rampart lab scoreboard — policy {}\n", self.policy);
        let _ = writeln!(
            out,
            "{:<4}  {:<22}  {:<4}  {:<8}  {:<8}  case / evidence",
            "", "scenario", "fam", "expected", "observed"
        );
        for case in &self.cases {
            let mark = if case.passed() {
                paint("ok", "32")
            } else {
                paint("FAIL", "31;1")
            };
            let pad = if case.passed() { "  " } else { "" };
            let _ = writeln!(
                out,
                "{mark}{pad}    {:<22}  {:<4}  {:<8}  {:<8}  {} ({} -> {}, {})",
                case.scenario,
                if case.family == FamilyName::Ipv6 {
                    "v6"
                } else {
                    "v4"
                },
                expectation(case.expected),
                expectation(case.observed),
                case.case,
                case.from,
                case.to,
                case.traffic
            );
            let evidence = if case.evidence.is_empty() {
                format!("{}; no rule counter moved", case.detail)
            } else {
                let rules: Vec<&str> = case.evidence.iter().map(|e| e.comment.as_str()).collect();
                format!("{}; rule: {}", case.detail, rules.join(" | "))
            };
            let _ = writeln!(out, "{:>58}{}", "", evidence);
        }
        let _ = writeln!(out, "\nATT&CK M1037 techniques");
        for row in &self.techniques {
            let status = match row.status {
                TechniqueStatus::Proven => paint(row.status.label(), "32"),
                TechniqueStatus::Failed => paint(row.status.label(), "31;1"),
                TechniqueStatus::NotYetAddressed => paint(row.status.label(), "33"),
            };
            let detail = if row.played == 0 {
                String::new()
            } else {
                format!(
                    "{}/{} cases; {}",
                    row.passed,
                    row.played,
                    row.scenarios.join(", ")
                )
            };
            let _ = writeln!(
                out,
                "  {:<10} {:<55} {}  {}",
                row.id, row.name, status, detail
            );
        }
        let proven = self
            .techniques
            .iter()
            .filter(|t| t.status == TechniqueStatus::Proven)
            .count();
        let open = self
            .techniques
            .iter()
            .filter(|t| t.status == TechniqueStatus::NotYetAddressed)
            .count();
        let _ = writeln!(
            out,
            "\n{} passed, {} failed; {proven} techniques proven, {open} not yet addressed",
            self.passed, self.failed
        );
        out
    }

    /// A self-contained HTML page: the technique matrix and per-case details.
    pub fn render_html(&self) -> String {
        let mut out = String::new();
        let _ = write!(
            out,
            "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Rampart lab — {policy}</title>\n<style>\n{STYLE}</style></head><body>\n\
<h1>Rampart lab scoreboard</h1>\n<p class=\"meta\">Policy <code>{policy}</code> — \
{passed} cases passed, {failed} failed.</p>\n<h2>ATT&amp;CK M1037 techniques</h2>\n<div class=\"matrix\">\n",
            policy = html(&self.policy),
            passed = self.passed,
            failed = self.failed,
        );
        for row in &self.techniques {
            let class = match row.status {
                TechniqueStatus::Proven => "proven",
                TechniqueStatus::Failed => "failed",
                TechniqueStatus::NotYetAddressed => "open",
            };
            let _ = writeln!(
                out,
                "<div class=\"cell {class}\" title=\"{scen}\"><b>{id}</b><span>{name}</span><em>{status}{count}</em></div>",
                id = row.id,
                name = html(row.name),
                status = row.status.label(),
                scen = html(&row.scenarios.join(", ")),
                count = if row.played > 0 {
                    format!(" · {}/{}", row.passed, row.played)
                } else {
                    String::new()
                },
            );
        }
        out.push_str("</div>\n<h2>Cases</h2>\n<table>\n<tr><th></th><th>scenario</th><th>case</th><th>family</th><th>flow</th><th>expected</th><th>observed</th><th>evidence</th></tr>\n");
        for case in &self.cases {
            let evidence = if case.evidence.is_empty() {
                "no rule counter moved".to_string()
            } else {
                case.evidence
                    .iter()
                    .map(|e| format!("<code>{}</code>", html(&e.comment)))
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            let _ = writeln!(
                out,
                "<tr class=\"{cls}\"><td>{mark}</td><td>{scenario}</td><td>{name}<br><small>{techniques}</small></td><td>{family}</td><td>{from} → {to}<br><small>{traffic}</small></td><td>{expected}</td><td>{observed}<br><small>{detail}</small></td><td>{evidence}</td></tr>",
                cls = if case.passed() { "pass" } else { "fail" },
                mark = if case.passed() { "✔" } else { "✘" },
                scenario = html(&case.scenario),
                name = html(&case.case),
                techniques = html(&case.techniques.join(", ")),
                family = if case.family == FamilyName::Ipv6 { "IPv6" } else { "IPv4" },
                from = html(&case.from),
                to = html(&case.to),
                traffic = html(&case.traffic),
                expected = expectation(case.expected),
                observed = expectation(case.observed),
                detail = html(&case.detail),
            );
        }
        out.push_str("</table>\n</body></html>\n");
        out
    }
}

fn expectation(e: Expectation) -> &'static str {
    match e {
        Expectation::Allowed => "allowed",
        Expectation::Blocked => "blocked",
    }
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2rem;color:#1d2430;background:#fafbfc}
h1{margin-bottom:.2rem}.meta{color:#555}
.matrix{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:6px;margin:1rem 0 2rem}
.cell{border-radius:6px;padding:8px;font-size:12px;display:flex;flex-direction:column;gap:3px;border:1px solid #0001}
.cell b{font-size:13px}.cell em{font-style:normal;font-weight:600}
.proven{background:#d4f4dd}.failed{background:#ffd6d6}.open{background:#eceff3;color:#666}
table{border-collapse:collapse;width:100%;font-size:13px;background:#fff}
th,td{border-bottom:1px solid #e3e6ea;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#f0f2f5}tr.fail td{background:#fff0f0}small{color:#666}code{font-size:11px}
";

#[cfg(test)]
mod tests {
    use super::*;

    fn case(technique: &str, expected: Expectation, observed: Expectation) -> CaseResult {
        CaseResult {
            scenario: "smb-egress".into(),
            techniques: vec![technique.into()],
            case: "SMB <to> internet".into(),
            family: FamilyName::Ipv4,
            from: "corp-ws1 192.0.2.10".into(),
            to: "public-web 203.0.113.10".into(),
            traffic: "tcp/445".into(),
            expected,
            observed,
            detail: "connect timed out".into(),
            evidence: vec![],
            measure: None,
            detection: None,
        }
    }

    fn scenario(technique: &str) -> Scenario {
        Scenario {
            id: "smb-egress".into(),
            techniques: vec![technique.into()],
            summary: String::new(),
            cases: vec![],
        }
    }

    #[test]
    fn a_missing_detection_fails_the_case() {
        let mut c = case("T1557.001", Expectation::Blocked, Expectation::Blocked);
        assert!(c.passed());
        c.detection = Some(Detection {
            kind: "name_poisoner".into(),
            seen: false,
        });
        assert!(!c.passed(), "blocked but undetected is a failure");
        c.detection = Some(Detection {
            kind: "name_poisoner".into(),
            seen: true,
        });
        assert!(c.passed());
    }

    #[test]
    fn techniques_are_scored_and_unplayed_ones_listed_as_open() {
        let board = Scoreboard::new(
            "p".into(),
            &[scenario("T1187")],
            vec![
                case("T1187", Expectation::Blocked, Expectation::Blocked),
                case("T1187", Expectation::Allowed, Expectation::Allowed),
            ],
        );
        assert!(board.all_passed());
        assert_eq!(board.techniques.len(), 50);
        let row = board.techniques.iter().find(|t| t.id == "T1187").unwrap();
        assert_eq!(row.status, TechniqueStatus::Proven);
        assert_eq!((row.passed, row.played), (2, 2));
        let open = board.techniques.iter().find(|t| t.id == "T1498").unwrap();
        assert_eq!(open.status, TechniqueStatus::NotYetAddressed);
        let text = board.render_text(false);
        assert!(text.contains("not yet addressed"));
        assert!(text.contains("2 passed, 0 failed"));
    }

    #[test]
    fn a_wrong_observation_fails_the_technique_and_the_board() {
        let board = Scoreboard::new(
            "p".into(),
            &[scenario("T1187")],
            vec![case("T1187", Expectation::Blocked, Expectation::Allowed)],
        );
        assert!(!board.all_passed());
        let row = board.techniques.iter().find(|t| t.id == "T1187").unwrap();
        assert_eq!(row.status, TechniqueStatus::Failed);
        assert!(board.render_text(false).contains("FAIL"));
    }

    #[test]
    fn html_is_escaped_and_complete() {
        let board = Scoreboard::new(
            "<p>".into(),
            &[scenario("T1187")],
            vec![case("T1187", Expectation::Blocked, Expectation::Blocked)],
        );
        let page = board.render_html();
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("&lt;p&gt;"));
        assert!(page.contains("SMB &lt;to&gt; internet"));
        assert!(page.trim_end().ends_with("</html>"));
        assert_eq!(page.matches("class=\"cell ").count(), 50);
    }
}
