//! Loading big transactions as nft JSON. nft 1.0.6 spends about a third less userspace time
//! per set element reading JSON than reading its text syntax (docs/nft.md, "Big sets"), which
//! matters for million-element sets. The emitter writes text; this module turns a transaction
//! with many elements into the equivalent JSON one: the table without its `add element`
//! statements is loaded into a scratch network namespace (`unshare -n`) and listed back with
//! `nft -j`, handles are stripped, and the elements are appended as JSON chunks. The result is
//! only used when loading its table part back (again in a scratch namespace) lists exactly as
//! the text does, except for what nft 1.0.6's JSON cannot carry and Rampart does not need: set
//! comments and `auto-merge` (Rampart's writers only ever add aggregated, non-overlapping
//! elements; `rampart plan` ignores both). Any other difference keeps the text (nft 1.0.6 does
//! not round-trip every statement through JSON, e.g. `socket cgroupv2`).

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};

use crate::runner::{write_atomic, Nft};
use crate::ApplyError;

/// Why: the JSON path costs two small scratch-namespace loads (tens of ms); below this many
/// elements text is as fast.
pub const JSON_MIN_ELEMENTS: usize = 100_000;
/// Why: the same chunking as the emitter's text (ENOBUFS stays away).
const ELEMENTS_PER_COMMAND: usize = 4096;

/// The transaction's `add element inet <table> <set> { … }` statements, as (set, elements), and
/// the rest of the text.
pub fn split_elements<'a>(text: &'a str, table: &str) -> (String, Vec<(&'a str, Vec<&'a str>)>) {
    let stem = format!("add element inet {table} ");
    let mut head = String::new();
    let mut elements: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in text.lines() {
        let parsed = line.strip_prefix(&stem).and_then(|rest| {
            let (set, body) = rest.split_once(" { ")?;
            let body = body.strip_suffix(" }")?;
            Some((set, body.split(", ").collect::<Vec<_>>()))
        });
        match parsed {
            Some((set, elems)) => match elements.last_mut() {
                Some((last, v)) if *last == set => v.extend(elems),
                _ => elements.push((set, elems)),
            },
            None => {
                head.push_str(line);
                head.push('\n');
            }
        }
    }
    (head, elements)
}

/// A listing without the set declaration lines nft 1.0.6's JSON drops (standalone `comment`
/// lines, which only sets have in Rampart's tables, and `auto-merge`).
pub fn without_json_losses(listing: &str) -> String {
    listing
        .lines()
        .filter(|l| {
            let t = l.trim();
            !(t == "auto-merge" || t.starts_with("comment \""))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Append element `e` (an address or `address/length`, as the emitter prints them) as JSON.
/// Anything else is refused rather than escaped: the emitter never writes it.
fn push_element(out: &mut String, e: &str) -> Result<(), ApplyError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
    };
    match e.split_once('/') {
        Some((addr, len)) if plain(addr) && len.parse::<u8>().is_ok() => {
            out.push_str("{\"prefix\":{\"addr\":\"");
            out.push_str(addr);
            out.push_str("\",\"len\":");
            out.push_str(len);
            out.push_str("}}");
            Ok(())
        }
        None if plain(e) => {
            out.push('"');
            out.push_str(e);
            out.push('"');
            Ok(())
        }
        _ => Err(ApplyError::Netlink(format!("unexpected set element `{e}`"))),
    }
}

#[cfg(test)]
fn element_json(e: &str) -> Value {
    match e.split_once('/') {
        Some((addr, len)) => match len.parse::<u8>() {
            Ok(len) => json!({ "prefix": { "addr": addr, "len": len } }),
            Err(_) => Value::String(e.to_string()),
        },
        None => Value::String(e.to_string()),
    }
}

fn strip_handles(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("handle");
            for x in m.values_mut() {
                strip_handles(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strip_handles),
        _ => {}
    }
}

/// A scratch network namespace (`unshare -n`) running a fixed script: it loads the table text,
/// writes its JSON and text listings, waits for the JSON form, loads that (replacing the table)
/// and writes its text listing. One namespace for both steps: creating one costs more wall time
/// than the loads themselves.
const SCRATCH_SCRIPT: &str = r#"
nft="$0"; dir="$1"; table="$2"
"$nft" -f "$dir/json-head.nft" || exit 1
"$nft" -j list table inet "$table" > "$dir/json-listing.json" || exit 1
"$nft" list table inet "$table" > "$dir/json-listing.txt" || exit 1
echo ready
read go || exit 1
"$nft" -j -f "$dir/json-head.json" || exit 1
"$nft" list table inet "$table" > "$dir/json-back.txt" || exit 1
echo done
"#;

fn spawn_err(source: std::io::Error) -> ApplyError {
    ApplyError::Spawn {
        program: "unshare".into(),
        source,
    }
}

/// The JSON form of transaction `text` for table `table`, or `None` when it has fewer than
/// `min_elements` set elements or its JSON form does not load back like the text. `work` is a
/// directory for the scratch files.
pub fn to_json(
    nft: &Nft,
    text: &str,
    table: &str,
    min_elements: usize,
    work: &Path,
) -> Result<Option<String>, ApplyError> {
    use std::io::{BufRead, BufReader, Write};
    use std::process::Stdio;

    let (head, elements) = split_elements(text, table);
    let count: usize = elements.iter().map(|(_, v)| v.len()).sum();
    if count < min_elements {
        return Ok(None);
    }
    let dir = work.join(format!("json-{}", std::process::id()));
    write_atomic(&dir.join("json-head.nft"), &head)?;
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", SCRATCH_SCRIPT])
        .arg(&nft.program)
        .arg(&dir)
        .arg(table)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_err)?;
    let result = (|| -> Result<Option<String>, ApplyError> {
        let mut lines = BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| ApplyError::Netlink("scratch namespace: no stdout".into()))?,
        )
        .lines();
        let step = |l: Option<std::io::Result<String>>, want: &str| match l {
            Some(Ok(l)) if l == want => Ok(()),
            _ => Err(ApplyError::Nft {
                action: "json",
                stderr: format!("scratch namespace stopped before `{want}`"),
            }),
        };
        if step(lines.next(), "ready").is_err() {
            // The table part does not load in a scratch namespace (e.g. a `socket cgroupv2`
            // path that exists only in the real one): keep the text, whose own check reports.
            return Ok(None);
        }
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name)).map_err(|source| ApplyError::State {
                path: dir.join(name).display().to_string(),
                source,
            })
        };
        let mut listing: Value = serde_json::from_str(&read("json-listing.json")?)
            .map_err(|e| ApplyError::Netlink(format!("nft -j listing: {e}")))?;
        strip_handles(&mut listing);
        let items = listing
            .get_mut("nftables")
            .and_then(Value::as_array_mut)
            .map(std::mem::take)
            .unwrap_or_default();
        let table_obj = json!({ "family": "inet", "name": table });
        let mut cmds = vec![
            json!({ "add": { "table": table_obj } }),
            json!({ "delete": { "table": table_obj } }),
        ];
        cmds.extend(
            items
                .into_iter()
                .filter(|i| i.get("metainfo").is_none())
                .map(|i| json!({ "add": i })),
        );
        let head_json = serde_json::to_string(&json!({ "nftables": cmds }))
            .map_err(|e| ApplyError::Netlink(e.to_string()))?;
        write_atomic(&dir.join("json-head.json"), &head_json)?;
        if let Some(stdin) = child.stdin.as_mut() {
            let _ = stdin.write_all(b"go\n");
        }
        if step(lines.next(), "done").is_err() {
            // nft refused its own JSON: keep the text.
            return Ok(None);
        }
        let same = without_json_losses(&read("json-back.txt")?).trim()
            == without_json_losses(&read("json-listing.txt")?).trim();
        if !same {
            return Ok(None);
        }
        // The element commands are written directly: a million `serde_json::Value`s would cost
        // as much as a third of what the JSON path saves.
        let mut out = head_json;
        let close = out
            .rfind("]}")
            .ok_or_else(|| ApplyError::Netlink("unexpected JSON transaction shape".into()))?;
        out.truncate(close);
        for (set, elems) in &elements {
            for chunk in elems.chunks(ELEMENTS_PER_COMMAND) {
                let obj = json!({ "family": "inet", "table": table, "name": set });
                let obj =
                    serde_json::to_string(&obj).map_err(|e| ApplyError::Netlink(e.to_string()))?;
                out.push_str(",{\"add\":{\"element\":");
                out.push_str(&obj[..obj.len() - 1]);
                out.push_str(",\"elem\":[");
                for (i, e) in chunk.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    push_element(&mut out, e)?;
                }
                out.push_str("]}}}");
            }
        }
        out.push_str("]}");
        Ok(Some(out))
    })();
    drop(child.stdin.take());
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_element_statements_and_keeps_the_rest() {
        let text = "table inet t {\n}\ndelete table inet t\ntable inet t {\n\tset s {\n\t}\n}\n\
                    add element inet t s { 192.0.2.1, 192.0.2.2 }\n\
                    add element inet t s { 192.0.2.3 }\n\
                    add element inet t p { 2001:db8::/64 }\n\
                    add element inet other s { 192.0.2.9 }\n";
        let (head, elems) = split_elements(text, "t");
        assert!(
            head.ends_with("}\nadd element inet other s { 192.0.2.9 }\n"),
            "{head}"
        );
        assert_eq!(
            elems,
            vec![
                ("s", vec!["192.0.2.1", "192.0.2.2", "192.0.2.3"]),
                ("p", vec!["2001:db8::/64"])
            ]
        );
        assert_eq!(
            element_json("2001:db8::/64"),
            json!({"prefix": {"addr": "2001:db8::", "len": 64}})
        );
        assert_eq!(element_json("192.0.2.1"), json!("192.0.2.1"));
        for e in ["2001:db8::/64", "192.0.2.1", "::"] {
            let mut out = String::new();
            push_element(&mut out, e).unwrap();
            assert_eq!(
                serde_json::from_str::<Value>(&out).unwrap(),
                element_json(e)
            );
        }
        assert!(push_element(&mut String::new(), "a\"b").is_err());
    }

    #[test]
    fn handles_are_stripped_and_only_set_comment_lines_are_ignored() {
        let mut v = json!({"nftables": [{"rule": {"handle": 4, "expr": [{"x": {"handle": 1}}]}}]});
        strip_handles(&mut v);
        assert_eq!(v, json!({"nftables": [{"rule": {"expr": [{"x": {}}]}}]}));
        let listing = "\tset s {\n\t\tflags interval\n\t\tauto-merge\n\t\tcomment \"x\"\n\t}\n\
                       \t\tip saddr @s drop comment \"#1 r\"\n";
        assert_eq!(
            without_json_losses(listing),
            "\tset s {\n\t\tflags interval\n\t}\n\t\tip saddr @s drop comment \"#1 r\""
        );
    }
}
