//! The events store: every component's events in an SQLite database with retention limits.
//! Events are kept whole (their JSON line) plus the columns queries filter on.

use std::path::{Path, PathBuf};

use rusqlite::{params, params_from_iter, Connection};
use serde_json::Value;

use crate::DaemonError;

/// Most rows one query returns.
pub const MAX_QUERY_ROWS: u32 = 10_000;

/// Filters for [`Store::query`]; every `None` means "any". Results are newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Query {
    /// Events at or after this time (ns since the epoch).
    pub since_ns: Option<i64>,
    /// Events before this time.
    pub until_ns: Option<i64>,
    /// Emitting component (`dns`, `jail`, `nft`, `daemon`, ...).
    pub component: Option<String>,
    /// ATT&CK technique id; `T1071` also matches its sub-techniques.
    pub technique: Option<String>,
    /// Source address.
    pub src_ip: Option<String>,
    /// Rule name.
    pub rule: Option<String>,
    /// `allow`, `block` or `alert`.
    pub verdict: Option<String>,
    /// Most rows (capped at [`MAX_QUERY_ROWS`]; default 100).
    pub limit: Option<u32>,
}

impl Query {
    /// The SQL and its parameters (pure; tested without a database).
    pub fn to_sql(&self) -> (String, Vec<String>) {
        let mut sql = String::from("SELECT json FROM events WHERE 1=1");
        let mut args = Vec::new();
        if let Some(since) = self.since_ns {
            sql.push_str(" AND ts_ns >= CAST(? AS INTEGER)");
            args.push(since.to_string());
        }
        if let Some(until) = self.until_ns {
            sql.push_str(" AND ts_ns < CAST(? AS INTEGER)");
            args.push(until.to_string());
        }
        for (column, value) in [
            ("component", &self.component),
            ("src_ip", &self.src_ip),
            ("rule", &self.rule),
            ("verdict", &self.verdict),
        ] {
            if let Some(value) = value {
                sql.push_str(&format!(" AND {column} = ?"));
                args.push(value.clone());
            }
        }
        if let Some(technique) = &self.technique {
            // Techniques are stored as ",T1071,T1071.004,": an exact id or its sub-techniques.
            sql.push_str(" AND (instr(techniques, ?) > 0 OR instr(techniques, ?) > 0)");
            args.push(format!(",{technique},"));
            args.push(format!(",{technique}."));
        }
        let limit = self.limit.unwrap_or(100).clamp(1, MAX_QUERY_ROWS);
        sql.push_str(&format!(" ORDER BY ts_ns DESC, id DESC LIMIT {limit}"));
        (sql, args)
    }
}

/// Aggregates for metrics and the dashboard.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    /// Rows in the store.
    pub rows: u64,
    /// (component, verdict, count).
    pub by_component_verdict: Vec<(String, String, u64)>,
    /// (technique, count), most first.
    pub by_technique: Vec<(String, u64)>,
    /// Blocked events per source address, top 10.
    pub top_blocked_sources: Vec<(String, u64)>,
    /// Blocked events per destination address, top 10.
    pub top_blocked_destinations: Vec<(String, u64)>,
    /// Blocked events per domain or host name, top 10.
    pub top_blocked_names: Vec<(String, u64)>,
}

/// The SQLite events database.
pub struct Store {
    path: PathBuf,
    conn: Connection,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

fn text(value: &Value, pointer: &str) -> Option<String> {
    match value.pointer(pointer)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Nanoseconds since the epoch of an RFC 3339 UTC timestamp (`2026-11-27T20:00:00.123456Z`).
pub fn parse_rfc3339_ns(ts: &str) -> Option<i64> {
    let b = ts.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| ts.get(r)?.parse::<i64>().ok();
    let date = rampart_ir::Date {
        year: u16::try_from(num(0..4)?).ok()?,
        month: u8::try_from(num(5..7)?).ok()?,
        day: u8::try_from(num(8..10)?).ok()?,
    };
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&date.month)
        || !(1..=31).contains(&date.day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let rest = ts.get(19..)?;
    let (frac, zone) = match rest.strip_prefix('.') {
        Some(r) => {
            let digits = r.bytes().take_while(u8::is_ascii_digit).count();
            (&r[..digits], &r[digits..])
        }
        None => ("", rest),
    };
    if zone != "Z" || frac.len() > 9 {
        return None;
    }
    let frac_ns = if frac.is_empty() {
        0
    } else {
        frac.parse::<i64>().ok()? * 10_i64.pow(9 - frac.len() as u32)
    };
    let secs = date.unix_days() * 86_400 + hour * 3600 + minute * 60 + second;
    Some(secs * 1_000_000_000 + frac_ns)
}

impl Store {
    /// Open (creating) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, DaemonError> {
        let wrap = |source| DaemonError::Store {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(wrap)?;
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             PRAGMA synchronous=NORMAL;
             CREATE TABLE IF NOT EXISTS events(
               id INTEGER PRIMARY KEY,
               ts TEXT NOT NULL,
               ts_ns INTEGER NOT NULL,
               event_type TEXT,
               component TEXT,
               verdict TEXT,
               src_ip TEXT,
               dest_ip TEXT,
               name TEXT,
               rule TEXT,
               techniques TEXT NOT NULL,
               reason TEXT,
               json TEXT NOT NULL);
             CREATE INDEX IF NOT EXISTS events_ts ON events(ts_ns);
             CREATE INDEX IF NOT EXISTS events_component ON events(component, ts_ns);",
        )
        .map_err(wrap)?;
        Ok(Self {
            path: path.to_path_buf(),
            conn,
        })
    }

    fn wrap(&self, source: rusqlite::Error) -> DaemonError {
        DaemonError::Store {
            path: self.path.clone(),
            source,
        }
    }

    /// Insert events (one JSON object each) in one transaction. An event without a parseable
    /// timestamp is stored at `now_ns`. Returns how many were stored.
    pub fn insert(&mut self, events: &[Value], now_ns: i64) -> Result<usize, DaemonError> {
        let tx = self.conn.transaction().map_err(|e| DaemonError::Store {
            path: self.path.clone(),
            source: e,
        })?;
        {
            let mut stmt = tx
                .prepare_cached(
                    "INSERT INTO events(ts, ts_ns, event_type, component, verdict, src_ip, dest_ip, name, rule, techniques, reason, json)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(|e| DaemonError::Store { path: self.path.clone(), source: e })?;
            for event in events {
                let ts = text(event, "/timestamp").unwrap_or_default();
                let ts_ns = parse_rfc3339_ns(&ts).unwrap_or(now_ns);
                let techniques: Vec<String> = event
                    .get("techniques")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(|t| t.as_str().map(str::to_string))
                            .collect()
                    })
                    .unwrap_or_default();
                let techniques = if techniques.is_empty() {
                    String::new()
                } else {
                    format!(",{},", techniques.join(","))
                };
                let name = [
                    "/detail/qname",
                    "/detail/domain",
                    "/detail/host",
                    "/dns/rrname",
                    "/http/hostname",
                ]
                .iter()
                .find_map(|p| text(event, p));
                stmt.execute(params![
                    ts,
                    ts_ns,
                    text(event, "/event_type"),
                    text(event, "/component"),
                    text(event, "/verdict"),
                    text(event, "/src_ip"),
                    text(event, "/dest_ip"),
                    name,
                    text(event, "/rule/name"),
                    techniques,
                    text(event, "/reason"),
                    event.to_string(),
                ])
                .map_err(|e| DaemonError::Store {
                    path: self.path.clone(),
                    source: e,
                })?;
            }
        }
        tx.commit().map_err(|e| DaemonError::Store {
            path: self.path.clone(),
            source: e,
        })?;
        Ok(events.len())
    }

    /// Enforce the retention limits; returns the rows deleted.
    pub fn retain(
        &mut self,
        max_rows: u64,
        max_age_days: u32,
        now_ns: i64,
    ) -> Result<u64, DaemonError> {
        let cutoff = now_ns - i64::from(max_age_days) * 86_400 * 1_000_000_000;
        let mut deleted = self
            .conn
            .execute("DELETE FROM events WHERE ts_ns < ?1", params![cutoff])
            .map_err(|e| self.wrap(e))? as u64;
        let max_rows = i64::try_from(max_rows).unwrap_or(i64::MAX);
        deleted += self
            .conn
            .execute(
                "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY ts_ns DESC, id DESC LIMIT -1 OFFSET ?1)",
                params![max_rows],
            )
            .map_err(|e| self.wrap(e))? as u64;
        Ok(deleted)
    }

    /// Events matching `query`, newest first, as stored.
    pub fn query(&self, query: &Query) -> Result<Vec<Value>, DaemonError> {
        let (sql, args) = query.to_sql();
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.wrap(e))?;
        let rows = stmt
            .query_map(params_from_iter(args.iter()), |row| row.get::<_, String>(0))
            .map_err(|e| self.wrap(e))?;
        let mut out = Vec::new();
        for row in rows {
            let json = row.map_err(|e| self.wrap(e))?;
            out.push(serde_json::from_str(&json).unwrap_or(Value::String(json)));
        }
        Ok(out)
    }

    /// Aggregates for `/metrics` and the dashboard.
    pub fn summary(&self) -> Result<Summary, DaemonError> {
        let rows: i64 = self
            .conn
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .map_err(|e| self.wrap(e))?;
        let mut summary = Summary {
            rows: rows as u64,
            ..Summary::default()
        };
        let mut stmt = self
            .conn
            .prepare("SELECT coalesce(component,''), coalesce(verdict,''), count(*) FROM events GROUP BY 1, 2 ORDER BY 1, 2")
            .map_err(|e| self.wrap(e))?;
        summary.by_component_verdict = stmt
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? as u64))
            })
            .map_err(|e| self.wrap(e))?
            .collect::<Result<_, _>>()
            .map_err(|e| self.wrap(e))?;
        let mut stmt = self
            .conn
            .prepare("SELECT techniques, count(*) FROM events WHERE techniques != '' GROUP BY 1")
            .map_err(|e| self.wrap(e))?;
        let mut techniques = std::collections::BTreeMap::<String, u64>::new();
        let groups = stmt
            .query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
            })
            .map_err(|e| self.wrap(e))?;
        for group in groups {
            let (list, count) = group.map_err(|e| self.wrap(e))?;
            for technique in list.split(',').filter(|t| !t.is_empty()) {
                *techniques.entry(technique.to_string()).or_default() += count;
            }
        }
        let mut by_technique: Vec<_> = techniques.into_iter().collect();
        by_technique.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        summary.by_technique = by_technique;
        for (column, slot) in [
            ("src_ip", &mut summary.top_blocked_sources),
            ("dest_ip", &mut summary.top_blocked_destinations),
            ("name", &mut summary.top_blocked_names),
        ] {
            let sql = format!(
                "SELECT {column}, count(*) FROM events WHERE verdict = 'block' AND {column} IS NOT NULL GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 10"
            );
            let mut stmt = self.conn.prepare(&sql).map_err(|e| self.wrap(e))?;
            *slot = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? as u64)))
                .map_err(|e| self.wrap(e))?
                .collect::<Result<_, _>>()
                .map_err(|e| self.wrap(e))?;
        }
        Ok(summary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DAY_NS: i64 = 86_400 * 1_000_000_000;

    fn event(ts: &str, component: &str, verdict: &str, techniques: &[&str], src: &str) -> Value {
        json!({"timestamp": ts, "event_type": "flow", "component": component, "verdict": verdict,
               "techniques": techniques, "src_ip": src, "dest_ip": "203.0.113.9",
               "rule": {"id": 1, "name": "r1", "loc": {"file": "p", "line": 1, "col": 1}},
               "reason": "test", "detail": {"qname": "bad.example"}})
    }

    #[test]
    fn parses_timestamps_exactly() {
        assert_eq!(parse_rfc3339_ns("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_ns("1970-01-02T00:00:01.5Z"),
            Some(DAY_NS + 1_500_000_000)
        );
        assert_eq!(
            parse_rfc3339_ns("2026-11-27T20:00:00.123456Z"),
            Some(1_795_809_600_123_456_000)
        );
        for bad in [
            "",
            "2026-11-27 20:00:00Z",
            "2026-13-01T00:00:00Z",
            "2026-11-27T20:00:00+01:00",
            "2026-11-27T25:00:00Z",
        ] {
            assert_eq!(parse_rfc3339_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn builds_queries_with_bound_parameters_only() {
        let query = Query {
            component: Some("dns' OR 1=1 --".into()),
            technique: Some("T1071".into()),
            limit: Some(1_000_000),
            ..Query::default()
        };
        let (sql, args) = query.to_sql();
        assert!(!sql.contains("OR 1=1"), "{sql}");
        assert_eq!(args, vec!["dns' OR 1=1 --", ",T1071,", ",T1071."]);
        assert!(sql.ends_with(&format!("LIMIT {MAX_QUERY_ROWS}")));
    }

    #[test]
    fn stores_queries_summarises_and_retains() {
        let dir = std::env::temp_dir().join(format!("rampart-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("events.sqlite");
        let _ = std::fs::remove_file(&path);
        let mut store = Store::open(&path).unwrap();
        let now = parse_rfc3339_ns("2026-11-27T12:00:00Z").unwrap();
        let events = vec![
            event(
                "2026-11-27T11:00:00Z",
                "dns",
                "block",
                &["T1071.004"],
                "192.0.2.10",
            ),
            event(
                "2026-11-27T11:30:00Z",
                "nft",
                "block",
                &["T1071"],
                "192.0.2.10",
            ),
            event(
                "2026-11-27T11:40:00Z",
                "nft",
                "allow",
                &["T1105"],
                "192.0.2.11",
            ),
            event(
                "2026-10-01T00:00:00Z",
                "nft",
                "block",
                &["T1105"],
                "192.0.2.12",
            ),
            json!({"component": "daemon", "verdict": "alert", "reason": "no timestamp"}),
        ];
        assert_eq!(store.insert(&events, now).unwrap(), 5);
        let t1071 = store
            .query(&Query {
                technique: Some("T1071".into()),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(t1071.len(), 2, "T1071 matches itself and T1071.004");
        assert_eq!(t1071[0]["component"], "nft", "newest first");
        let exact = store
            .query(&Query {
                technique: Some("T1071.004".into()),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(exact.len(), 1);
        let t107 = store
            .query(&Query {
                technique: Some("T107".into()),
                ..Query::default()
            })
            .unwrap();
        assert!(t107.is_empty(), "no prefix matches across ids");
        let from_src = store
            .query(&Query {
                src_ip: Some("192.0.2.10".into()),
                verdict: Some("block".into()),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(from_src.len(), 2);
        let window = store
            .query(&Query {
                since_ns: Some(parse_rfc3339_ns("2026-11-27T11:15:00Z").unwrap()),
                until_ns: Some(now - 1),
                ..Query::default()
            })
            .unwrap();
        assert_eq!(window.len(), 2);
        let summary = store.summary().unwrap();
        assert_eq!(summary.rows, 5);
        assert_eq!(
            summary.top_blocked_sources[0],
            ("192.0.2.10".to_string(), 2)
        );
        assert_eq!(summary.top_blocked_names[0], ("bad.example".to_string(), 3));
        assert!(summary.by_technique.contains(&("T1105".to_string(), 2)));
        // Retention: the October event is older than 30 days; then cap at 2 rows.
        assert_eq!(store.retain(1_000, 30, now).unwrap(), 1);
        assert_eq!(store.retain(2, 30, now).unwrap(), 2);
        let left = store.query(&Query::default()).unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(
            left[0]["reason"], "no timestamp",
            "stored at now, the newest"
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
