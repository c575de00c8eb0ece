//! Stage 1a: TOML text to a generic tree that keeps a byte span on every key and value.
//! `toml_edit` does the TOML grammar (and rejects duplicate keys); this module only copies its
//! document into plain data so later stages never touch the TOML library.

use toml_edit::{ImDocument, Item, Value};

use crate::diag::{Diags, Report};
use crate::source::{FileId, Span};

/// A value with its span.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    /// Where the value is written.
    pub span: Span,
    /// The value.
    pub kind: NodeKind,
}

/// TOML value kinds.
#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A boolean.
    Bool(bool),
    /// A date, time or date-time, as written.
    Datetime(String),
    /// An array (also an array of tables).
    Array(Vec<Node>),
    /// A table (also an inline table), keys in document order.
    Table(Vec<Entry>),
}

impl NodeKind {
    /// The TOML type name, for "expected a string, found an integer".
    pub fn type_name(&self) -> &'static str {
        match self {
            NodeKind::Str(_) => "a string",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a float",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Datetime(_) => "a date",
            NodeKind::Array(_) => "an array",
            NodeKind::Table(_) => "a table",
        }
    }
}

/// A key and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The key text.
    pub key: String,
    /// Where the key is written.
    pub key_span: Span,
    /// The value.
    pub value: Node,
}

/// Parse one TOML document. On a syntax error, one `E0001` diagnostic and `None`.
pub(crate) fn parse(file: FileId, text: &str, diags: &mut Diags) -> Option<Node> {
    match ImDocument::parse(text) {
        Ok(doc) => {
            let whole = Span::new(file, 0, 0);
            Some(Node {
                span: whole,
                kind: NodeKind::Table(table_entries(file, doc.as_table(), whole)),
            })
        }
        Err(e) => {
            let range = e.span().unwrap_or(0..0);
            // toml_edit's messages can span lines ("invalid array\nexpected `]`"): keep one line.
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            diags.push(
                Report::error("E0001", format!("invalid TOML: {message}")).label(
                    Span::new(file, range.start, range.end.max(range.start + 1)),
                    "",
                ),
            );
            None
        }
    }
}

fn span_of(file: FileId, range: Option<std::ops::Range<usize>>, fallback: Span) -> Span {
    match range {
        Some(r) => Span::new(file, r.start, r.end),
        None => fallback,
    }
}

fn table_entries(file: FileId, table: &toml_edit::Table, fallback: Span) -> Vec<Entry> {
    let mut out = Vec::new();
    for (key, item) in table.iter() {
        let key_span = table
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map_or(fallback, |r| Span::new(file, r.start, r.end));
        if let Some(value) = item_node(file, item, key_span) {
            out.push(Entry {
                key: key.to_string(),
                key_span,
                value,
            });
        }
    }
    out
}

fn item_node(file: FileId, item: &Item, fallback: Span) -> Option<Node> {
    match item {
        Item::None => None,
        Item::Value(v) => Some(value_node(file, v, fallback)),
        Item::Table(t) => {
            let span = span_of(file, t.span(), fallback);
            Some(Node {
                span,
                kind: NodeKind::Table(table_entries(file, t, span)),
            })
        }
        Item::ArrayOfTables(a) => {
            let span = span_of(file, a.span(), fallback);
            let items = a
                .iter()
                .map(|t| {
                    let tspan = span_of(file, t.span(), span);
                    Node {
                        span: tspan,
                        kind: NodeKind::Table(table_entries(file, t, tspan)),
                    }
                })
                .collect();
            Some(Node {
                span,
                kind: NodeKind::Array(items),
            })
        }
    }
}

fn value_node(file: FileId, v: &Value, fallback: Span) -> Node {
    let span = span_of(file, v.span(), fallback);
    let kind = match v {
        Value::String(s) => NodeKind::Str(s.value().clone()),
        Value::Integer(i) => NodeKind::Int(*i.value()),
        Value::Float(f) => NodeKind::Float(*f.value()),
        Value::Boolean(b) => NodeKind::Bool(*b.value()),
        Value::Datetime(d) => NodeKind::Datetime(d.value().to_string()),
        Value::Array(a) => NodeKind::Array(a.iter().map(|x| value_node(file, x, span)).collect()),
        Value::InlineTable(t) => {
            let mut entries = Vec::new();
            for (key, value) in t.iter() {
                let key_span = t
                    .get_key_value(key)
                    .and_then(|(k, _)| k.span())
                    .map_or(span, |r| Span::new(file, r.start, r.end));
                entries.push(Entry {
                    key: key.to_string(),
                    key_span,
                    value: value_node(file, value, key_span),
                });
            }
            NodeKind::Table(entries)
        }
    };
    Node { span, kind }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::SourceMap;

    #[test]
    fn spans_point_at_values_and_keys() {
        let text = "[zones.dmz]\nnetworks = [\"192.0.2.0/24\"]\n";
        let mut map = SourceMap::new();
        let id = map.add("a.toml", text);
        let mut d = Diags::default();
        let root = parse(id, text, &mut d).unwrap();
        let NodeKind::Table(top) = &root.kind else {
            panic!("not a table")
        };
        let NodeKind::Table(zones) = &top[0].value.kind else {
            panic!()
        };
        assert_eq!(zones[0].key, "dmz");
        let NodeKind::Table(dmz) = &zones[0].value.kind else {
            panic!()
        };
        let nets = &dmz[0];
        assert_eq!(&text[nets.key_span.start..nets.key_span.end], "networks");
        let NodeKind::Array(items) = &nets.value.kind else {
            panic!()
        };
        assert_eq!(
            &text[items[0].span.start..items[0].span.end],
            "\"192.0.2.0/24\""
        );
    }

    #[test]
    fn syntax_errors_are_diagnostics() {
        let mut map = SourceMap::new();
        let id = map.add("a.toml", "a = [\n");
        let mut d = Diags::default();
        assert!(parse(id, "a = [\n", &mut d).is_none());
        assert!(d.has_errors());
    }
}
