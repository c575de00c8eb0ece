//! A go-ftw-compatible regression runner core: reads CRS's YAML test files, builds each stage's
//! raw HTTP request the way go-ftw sends it, runs it through the engine (with an albedo-style
//! `/reflect` backend for response tests), and checks `expect_ids`, `no_expect_ids`, `status`
//! and log regexes. Pure: file texts in, results out. Overrides (justified expected failures)
//! follow CRS's per-engine overrides format.

use base64::Engine as _;
use yaml_rust2::{Yaml, YamlLoader};

use crate::body::{parse_raw_request, Request, Response};
use crate::tx::{Engine, MatchedRule, TxOptions};

/// The CRS test-suite configuration (tests/regression/README): DetectionOnly, paranoia 4,
/// fixed argument limits. Loaded after crs-setup.conf and before the rules.
pub const CRS_TEST_SETTINGS: &str = r#"SecAction "id:900005,phase:1,nolog,pass,ctl:ruleEngine=DetectionOnly,ctl:ruleRemoveById=910000,setvar:tx.blocking_paranoia_level=4,setvar:tx.crs_validate_utf8_encoding=1,setvar:tx.arg_name_length=100,setvar:tx.arg_length=400,setvar:tx.total_arg_length=64000,setvar:tx.max_num_args=255,setvar:tx.max_file_size=64100,setvar:tx.combined_file_sizes=65535"
"#;

/// One stage's expectations.
#[derive(Debug, Clone, Default)]
pub struct Expect {
    /// Rule ids that must be logged.
    pub expect_ids: Vec<u64>,
    /// Rule ids that must not be logged.
    pub no_expect_ids: Vec<u64>,
    /// Allowed response statuses (empty = any).
    pub status: Vec<u16>,
    /// Regex the log must match.
    pub match_regex: Option<String>,
    /// Regex the log must not match.
    pub no_match_regex: Option<String>,
    /// The request is expected to fail at the HTTP level.
    pub expect_error: bool,
}

/// One test stage.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Raw request bytes as go-ftw would send them.
    pub raw: Vec<u8>,
    /// Expectations.
    pub expect: Expect,
}

/// One test case.
#[derive(Debug, Clone)]
pub struct Case {
    /// `rule_id` of the file.
    pub rule_id: u64,
    /// `test_id`.
    pub test_id: u64,
    /// Stages.
    pub stages: Vec<Stage>,
}

fn y_str(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Real(r) => Some(r.clone()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

fn y_ids(y: &Yaml) -> Vec<u64> {
    match y {
        Yaml::Array(a) => a
            .iter()
            .filter_map(Yaml::as_i64)
            .map(|i| i as u64)
            .collect(),
        Yaml::Integer(i) => vec![*i as u64],
        _ => Vec::new(),
    }
}

/// Build the raw request of a stage input the way go-ftw does.
fn build_raw(input: &Yaml) -> Result<Vec<u8>, String> {
    if let Some(enc) = y_str(&input["encoded_request"]) {
        let clean: String = enc.chars().filter(|c| !c.is_whitespace()).collect();
        return base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|e| format!("encoded_request: {e}"));
    }
    let method = y_str(&input["method"]).unwrap_or_else(|| "GET".into());
    let uri = y_str(&input["uri"]).unwrap_or_else(|| "/".into());
    let version = y_str(&input["version"]).unwrap_or_else(|| "HTTP/1.1".into());
    let data = y_str(&input["data"]).unwrap_or_default();
    let autocomplete = input["autocomplete_headers"].as_bool().unwrap_or(true);
    let mut raw = format!("{method} {uri} {version}\r\n").into_bytes();
    let mut names = Vec::new();
    if let Yaml::Hash(h) = &input["headers"] {
        for (k, v) in h {
            let (Some(k), Some(v)) = (y_str(k), y_str(v)) else {
                continue;
            };
            names.push(k.to_ascii_lowercase());
            raw.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
        }
    }
    if autocomplete {
        if !names.iter().any(|n| n == "connection") {
            raw.extend_from_slice(b"Connection: close\r\n");
        }
        if !names.iter().any(|n| n == "content-length") {
            raw.extend_from_slice(format!("Content-Length: {}\r\n", data.len()).as_bytes());
        }
        if !data.is_empty() && !names.iter().any(|n| n == "content-type") {
            raw.extend_from_slice(b"Content-Type: application/x-www-form-urlencoded\r\n");
        }
    }
    raw.extend_from_slice(b"\r\n");
    raw.extend_from_slice(data.as_bytes());
    Ok(raw)
}

/// Parse one go-ftw YAML file into cases.
pub fn parse_file(text: &str) -> Result<Vec<Case>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for doc in docs {
        let rule_id = doc["rule_id"].as_i64().unwrap_or(0) as u64;
        let Yaml::Array(tests) = &doc["tests"] else {
            continue;
        };
        for t in tests {
            let test_id = t["test_id"].as_i64().unwrap_or(0) as u64;
            let mut stages = Vec::new();
            if let Yaml::Array(ss) = &t["stages"] {
                for s in ss {
                    // v1 format nests the stage under `stage:`.
                    let s = if s["stage"].is_badvalue() {
                        s
                    } else {
                        &s["stage"]
                    };
                    let raw = build_raw(&s["input"])?;
                    let out_y = &s["output"];
                    let log = &out_y["log"];
                    let expect = Expect {
                        expect_ids: y_ids(&log["expect_ids"]),
                        no_expect_ids: y_ids(&log["no_expect_ids"]),
                        status: match &out_y["status"] {
                            Yaml::Integer(i) => vec![*i as u16],
                            Yaml::Array(a) => a
                                .iter()
                                .filter_map(Yaml::as_i64)
                                .map(|i| i as u16)
                                .collect(),
                            _ => Vec::new(),
                        },
                        match_regex: y_str(&log["match_regex"]),
                        no_match_regex: y_str(&log["no_match_regex"]),
                        expect_error: out_y["expect_error"].as_bool().unwrap_or(false),
                    };
                    stages.push(Stage { raw, expect });
                }
            }
            out.push(Case {
                rule_id,
                test_id,
                stages,
            });
        }
    }
    Ok(out)
}

/// Result of one case.
#[derive(Debug, Clone)]
pub struct CaseResult {
    /// `rule_id`.
    pub rule_id: u64,
    /// `test_id`.
    pub test_id: u64,
    /// Passed.
    pub passed: bool,
    /// Why it failed (empty when passed).
    pub reason: String,
    /// Per stage: the status and every matched rule (logged or not) with its log line, so two
    /// engine versions can be compared case by case.
    pub trace: String,
}

/// The albedo-style backend: `POST /reflect` with `{"status","headers","body","encodedBody"}`
/// answers with exactly that; anything else gets 200 and an empty text body.
pub fn echo_backend(req: &Request) -> Response {
    let path = req.target.split(|b| *b == b'?').next().unwrap_or(b"");
    let mut resp = Response {
        status: 200,
        protocol: "HTTP/1.1".into(),
        headers: vec![("Content-Type".into(), b"text/plain; charset=utf-8".to_vec())],
        body: Vec::new(),
    };
    if path == b"/reflect" {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&req.body) {
            if let Some(s) = v.get("status").and_then(serde_json::Value::as_u64) {
                resp.status = u16::try_from(s).unwrap_or(200);
            }
            if let Some(h) = v.get("headers").and_then(serde_json::Value::as_object) {
                for (k, val) in h {
                    let val = val.as_str().unwrap_or("").as_bytes().to_vec();
                    resp.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(k));
                    resp.headers.push((k.clone(), val));
                }
            }
            if let Some(b) = v.get("body").and_then(serde_json::Value::as_str) {
                resp.body = b.as_bytes().to_vec();
            }
            if let Some(b) = v.get("encodedBody").and_then(serde_json::Value::as_str) {
                resp.body = base64::engine::general_purpose::STANDARD
                    .decode(b)
                    .unwrap_or_default();
            }
        }
    }
    resp
}

/// Render matched rules as ModSecurity-style log lines (what `match_regex` is written against).
pub fn log_text(matched: &[MatchedRule]) -> String {
    let mut s = String::new();
    for m in matched.iter().filter(|m| m.logged) {
        s.push_str(&format!(
            "[id \"{}\"] [msg \"{}\"] [data \"{}\"] [severity \"{}\"]{}\n",
            m.id,
            log_escape(&m.msg),
            log_escape(&m.logdata),
            m.severity.unwrap_or(0),
            m.tags
                .iter()
                .map(|t| format!(" [tag \"{t}\"]"))
                .collect::<String>()
        ));
    }
    s
}

/// Escape control bytes as ModSecurity's error log does (`\x0d`), so one rule is one line.
fn log_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

/// Run one case through the engine, directly (no sockets).
pub fn run_case(engine: &Engine, case: &Case) -> CaseResult {
    let mut failures = Vec::new();
    let mut trace = String::new();
    for (si, stage) in case.stages.iter().enumerate() {
        if crate::body::front_check(&stage.raw).is_err() {
            // The front end answers 400 before any rule runs, as the reference servers do.
            if !stage.expect.status.is_empty() && !stage.expect.status.contains(&400) {
                failures.push(format!(
                    "stage {si}: rejected with 400, expected {:?}",
                    stage.expect.status
                ));
            }
            for id in &stage.expect.expect_ids {
                failures.push(format!(
                    "stage {si}: rejected with 400 before rules; expected {id}"
                ));
            }
            continue;
        }
        let req = match parse_raw_request(&stage.raw) {
            Ok(mut r) => {
                r.remote_addr = "127.0.0.1".into();
                r.remote_port = 40000;
                r.server_port = 80;
                r
            }
            Err(e) => {
                if stage.expect.expect_error || stage.expect.expect_ids.is_empty() {
                    continue;
                }
                failures.push(format!("stage {si}: request does not parse: {e}"));
                continue;
            }
        };
        let opts = TxOptions {
            unique_id: format!("ftw{}x{}", case.rule_id, case.test_id),
            now_ms: 0,
        };
        let mut tx = engine.transaction(&req, &opts);
        tx.process_request(&req);
        let status = match &tx.intervention {
            Some(i) => i.status,
            None => {
                let resp = echo_backend(&req);
                tx.process_response(&resp);
                tx.intervention.as_ref().map_or(resp.status, |i| i.status)
            }
        };
        tx.finish();
        let logged: Vec<u64> = tx
            .matched
            .iter()
            .filter(|m| m.logged)
            .map(|m| m.id)
            .collect();
        for id in &stage.expect.expect_ids {
            if !logged.contains(id) {
                failures.push(format!("stage {si}: expected {id}, not logged"));
            }
        }
        for id in &stage.expect.no_expect_ids {
            if logged.contains(id) {
                failures.push(format!("stage {si}: {id} logged but must not be"));
            }
        }
        if !stage.expect.status.is_empty() && !stage.expect.status.contains(&status) {
            failures.push(format!(
                "stage {si}: status {status}, expected {:?}",
                stage.expect.status
            ));
        }
        let log = log_text(&tx.matched);
        trace.push_str(&format!("stage {si}: status {status}; ids"));
        for m in &tx.matched {
            trace.push_str(&format!(" {}", m.id));
        }
        trace.push_str("; ");
        trace.push_str(&log);
        if let Some(re) = &stage.expect.match_regex {
            if !regex::Regex::new(re).is_ok_and(|r| r.is_match(&log)) {
                failures.push(format!("stage {si}: log does not match {re}"));
            }
        }
        if let Some(re) = &stage.expect.no_match_regex {
            if regex::Regex::new(re).is_ok_and(|r| r.is_match(&log)) {
                failures.push(format!("stage {si}: log matches {re} (logged {logged:?})"));
            }
        }
    }
    CaseResult {
        rule_id: case.rule_id,
        test_id: case.test_id,
        passed: failures.is_empty(),
        reason: failures.join("; "),
        trace,
    }
}

/// One override: tests expected to fail here, with the reason.
#[derive(Debug, Clone)]
pub struct Override {
    /// `rule_id`.
    pub rule_id: u64,
    /// `test_ids` (empty = all tests of the rule).
    pub test_ids: Vec<u64>,
    /// Why.
    pub reason: String,
}

/// Parse an overrides file (`test_overrides: [{rule_id, test_ids, reason}]`).
pub fn parse_overrides(text: &str) -> Result<Vec<Override>, String> {
    let docs = YamlLoader::load_from_str(text).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for doc in docs {
        if let Yaml::Array(items) = &doc["test_overrides"] {
            for it in items {
                let reason = y_str(&it["reason"]).unwrap_or_default();
                if reason.trim().is_empty() {
                    return Err("override without a reason".into());
                }
                out.push(Override {
                    rule_id: it["rule_id"].as_i64().unwrap_or(0) as u64,
                    test_ids: y_ids(&it["test_ids"]),
                    reason,
                });
            }
        }
    }
    Ok(out)
}

/// Whether a result is covered by an override.
pub fn overridden<'a>(ovr: &'a [Override], r: &CaseResult) -> Option<&'a Override> {
    ovr.iter().find(|o| {
        o.rule_id == r.rule_id && (o.test_ids.is_empty() || o.test_ids.contains(&r.test_id))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::RuleSet;

    const SAMPLE: &str = r#"
rule_id: 100
tests:
  - test_id: 1
    stages:
      - input:
          dest_addr: 127.0.0.1
          headers:
            Host: localhost
          method: POST
          uri: "/post"
          data: "q=evil"
        output:
          log:
            expect_ids: [100]
  - test_id: 2
    stages:
      - input:
          uri: "/get?q=fine"
          headers:
            Host: localhost
        output:
          log:
            no_expect_ids: [100]
  - test_id: 3
    stages:
      - input:
          method: POST
          uri: "/reflect"
          data: '{"body": "secret leak"}'
          headers:
            Host: localhost
            Content-Type: application/json
        output:
          log:
            expect_ids: [200]
"#;

    #[test]
    fn runs_cases() {
        let mut rs = RuleSet::new();
        rs.add_text(
            "t.conf",
            "SecRule ARGS \"@streq evil\" \"id:100,phase:2,pass,log\"\nSecRule RESPONSE_BODY \"@contains leak\" \"id:200,phase:4,pass\"\n",
            &|_: &str, _: &str| None,
        )
        .unwrap();
        let e = Engine::new(rs);
        let cases = parse_file(SAMPLE).unwrap();
        assert_eq!(cases.len(), 3);
        for c in &cases {
            let r = run_case(&e, c);
            assert!(r.passed, "{} {}", c.test_id, r.reason);
        }
        let ovr = parse_overrides(
            "test_overrides:\n  - rule_id: 100\n    test_ids: [2]\n    reason: x\n",
        )
        .unwrap();
        let r = CaseResult {
            rule_id: 100,
            test_id: 2,
            passed: false,
            reason: String::new(),
            trace: String::new(),
        };
        assert!(overridden(&ovr, &r).is_some());
        assert!(parse_overrides("test_overrides:\n  - rule_id: 1\n").is_err());
    }
}
