//! Diagnostics: what went wrong, where (file:line:col with the text underlined), and a hint.
//!
//! Stages record [`Report`]s against byte [`Span`]s; [`Diags::finish`] turns them into
//! [`Diagnostic`]s (file/line/column) once every source is in the [`SourceMap`].

use std::fmt::Write as _;

use rampart_ir::SourceLoc;
use serde::Serialize;

use crate::source::{SourceMap, Span};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// The policy is invalid; nothing is produced.
    Error,
    /// The policy loads, but something is probably not what the author meant.
    Warning,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// A place in the source with the text to print under it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Label {
    /// Where the labelled text starts.
    pub loc: SourceLoc,
    /// Length of the labelled text in characters (on its first line).
    pub len: u32,
    /// What to say about it (may be empty).
    pub text: String,
}

/// One finding of the policy front-end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Stable code (`E0101`, `W0201`, ...); `docs/policy.md` lists them all.
    pub code: &'static str,
    /// One-line message.
    pub message: String,
    /// Labelled places; the primary (offending) one first.
    pub labels: Vec<Label>,
    /// A suggestion (`did you mean `dmz`?`).
    pub hint: Option<String>,
}

impl Diagnostic {
    /// Plain-text rendering in the style of rustc and nft: header, `-->` location, the source
    /// line with the offending text underlined, then the hint.
    pub fn render(&self, sources: &SourceMap) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{}[{}]: {}",
            self.severity.as_str(),
            self.code,
            self.message
        );
        let width = self
            .labels
            .iter()
            .map(|l| l.loc.line.to_string().len())
            .max()
            .unwrap_or(1);
        let pad = " ".repeat(width);
        for (i, label) in self.labels.iter().enumerate() {
            let arrow = if i == 0 { "-->" } else { ":::" };
            let _ = writeln!(out, "{pad}{arrow} {}", label.loc);
            let line = sources
                .by_name(&label.loc.file)
                .and_then(|f| f.line(label.loc.line));
            if let Some(line) = line {
                let marker = if i == 0 { '^' } else { '-' };
                let col = label.loc.col.saturating_sub(1) as usize;
                // Tabs keep their width in the underline so it lines up with the text.
                let lead: String = line
                    .chars()
                    .take(col)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let under: String =
                    std::iter::repeat_n(marker, label.len.max(1) as usize).collect();
                let _ = writeln!(out, "{pad} |");
                let _ = writeln!(out, "{:>width$} | {line}", label.loc.line);
                let text = if label.text.is_empty() {
                    String::new()
                } else {
                    format!(" {}", label.text)
                };
                let _ = writeln!(out, "{pad} | {lead}{under}{text}");
            } else if !label.text.is_empty() {
                let _ = writeln!(out, "{pad} = note: {}", label.text);
            }
        }
        if let Some(hint) = &self.hint {
            let _ = writeln!(out, "{pad} = hint: {hint}");
        }
        out
    }

    /// Whether this is an error.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// Render several diagnostics, separated by blank lines, followed by a summary line.
pub fn render_all(diags: &[Diagnostic], sources: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(sources));
        out.push('\n');
    }
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    if errors > 0 || warnings > 0 {
        let _ = writeln!(out, "{errors} error(s), {warnings} warning(s)");
    }
    out
}

/// A diagnostic in span form, before line/column are known.
#[derive(Clone, Debug)]
pub(crate) struct Report {
    pub severity: Severity,
    pub code: &'static str,
    pub message: String,
    pub labels: Vec<(Span, String)>,
    pub hint: Option<String>,
}

impl Report {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Error,
            code,
            message: message.into(),
            labels: Vec::new(),
            hint: None,
        }
    }

    pub fn warning(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(code, message)
        }
    }

    pub fn label(mut self, span: Span, text: impl Into<String>) -> Self {
        self.labels.push((span, text.into()));
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

/// Collects reports from every stage.
#[derive(Debug, Default)]
pub(crate) struct Diags {
    reports: Vec<Report>,
}

impl Diags {
    pub fn push(&mut self, report: Report) {
        // Why: a hostile or generated policy can produce an error per element; past this many
        // nobody reads them and memory would grow with the input.
        if self.reports.len() < crate::limits::MAX_DIAGNOSTICS {
            self.reports.push(report);
        }
    }

    pub fn error_count(&self) -> usize {
        self.reports
            .iter()
            .filter(|r| r.severity == Severity::Error)
            .count()
    }

    /// Change the code of reports pushed since `start` (an index from `len`-like counting of
    /// errors) from `from` to `to`.
    pub fn recode_since(&mut self, start_errors: usize, from: &'static str, to: &'static str) {
        let mut seen = 0;
        for r in &mut self.reports {
            if r.severity == Severity::Error {
                if seen >= start_errors && r.code == from {
                    r.code = to;
                }
                seen += 1;
            }
        }
    }

    pub fn has_errors(&self) -> bool {
        self.reports.iter().any(|r| r.severity == Severity::Error)
    }

    pub fn finish(self, sources: &SourceMap) -> Vec<Diagnostic> {
        self.reports
            .into_iter()
            .map(|r| Diagnostic {
                severity: r.severity,
                code: r.code,
                message: r.message,
                labels: r
                    .labels
                    .into_iter()
                    .map(|(span, text)| Label {
                        loc: sources.loc(span),
                        len: sources.underline_len(span),
                        text,
                    })
                    .collect(),
                hint: r.hint,
            })
            .collect()
    }
}

/// Optimal-string-alignment distance (Levenshtein plus adjacent transpositions, so `crop` is
/// one edit from `corp`), for "did you mean" hints.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for i in 0..=a.len() {
        d[i * w] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(w) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// The closest candidate to `word`, if it is close enough to be a plausible typo.
pub(crate) fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    // Why: names are short; a third of the length (at least 1, at most 3) catches typos and
    // transpositions without suggesting unrelated names.
    let max = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .filter(|c| !c.is_empty())
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= max)
        // Ties go to the candidate with the same first letter (`htps` → `https`, not `ftps`).
        .min_by_key(|(d, c)| (*d, c.chars().next() != word.chars().next(), c.to_string()))
        .map(|(_, c)| format!("did you mean `{c}`?"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_are_close_only() {
        assert_eq!(
            did_you_mean("dmzz", ["dmz", "corp"]),
            Some("did you mean `dmz`?".into())
        );
        assert_eq!(did_you_mean("internet", ["dmz", "corp"]), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("crop", "corp"), 1);
        assert_eq!(
            did_you_mean("htps", ["ftps", "https", "http"]),
            Some("did you mean `https`?".into())
        );
    }

    #[test]
    fn render_underlines_the_offending_text() {
        let mut map = SourceMap::new();
        let id = map.add("x.toml", "a = 1\nfrom = [\"dmzz\"]\n");
        let mut d = Diags::default();
        d.push(
            Report::error("E0101", "unknown zone or set `dmzz`")
                .label(Span::new(id, 14, 20), "not defined")
                .hint("did you mean `dmz`?"),
        );
        let out = render_all(&d.finish(&map), &map);
        let expected = "error[E0101]: unknown zone or set `dmzz`\n --> x.toml:2:9\n  |\n2 | from = [\"dmzz\"]\n  |         ^^^^^^ not defined\n  = hint: did you mean `dmz`?\n\n1 error(s), 0 warning(s)\n";
        assert_eq!(out, expected);
    }
}
