//! Compiled rule set: SecLang directives → rules with compiled operators, transformations,
//! targets and actions. Loading is pure: the caller supplies file texts and a resolver for
//! `@pmFromFile`/`@ipMatchFromFile` data files.

use std::collections::HashMap;

use regex::bytes::{Regex, RegexBuilder};

use crate::ops::Operator;
use crate::seclang::{self, Directive, RawAction, RawTarget};
use crate::transform::Transform;
use crate::LoadError;

/// SecRuleEngine / ctl:ruleEngine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EngineMode {
    /// Rules run and disruptive actions take effect.
    On,
    /// Rules run, nothing is blocked.
    DetectionOnly,
    /// Rules do not run.
    Off,
}

impl EngineMode {
    fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "on" => Some(Self::On),
            "off" => Some(Self::Off),
            "detectiononly" => Some(Self::DetectionOnly),
            _ => None,
        }
    }
}

/// A piece of text with `%{VAR.key}` macros.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MacroText {
    /// Literal and variable parts, in order.
    pub parts: Vec<MacroPart>,
}

/// One part of a [`MacroText`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MacroPart {
    /// Literal text.
    Lit(String),
    /// `%{NAME}` or `%{NAME.key}`; name upper-cased.
    Var {
        /// Collection or variable name (`TX`, `MATCHED_VAR`, `RULE`, …).
        name: String,
        /// Key inside the collection, if any.
        key: Option<String>,
    },
}

impl MacroText {
    /// Parse `a %{tx.b} c`.
    pub fn parse(s: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = s;
        while let Some(pos) = rest.find("%{") {
            let Some(end) = rest[pos..].find('}') else {
                break;
            };
            if pos > 0 {
                parts.push(MacroPart::Lit(rest[..pos].to_string()));
            }
            let inner = &rest[pos + 2..pos + end];
            let (name, key) = match inner.find(['.', ':']) {
                Some(i) => (&inner[..i], Some(inner[i + 1..].to_string())),
                None => (inner, None),
            };
            parts.push(MacroPart::Var {
                name: name.to_ascii_uppercase(),
                key,
            });
            rest = &rest[pos + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(MacroPart::Lit(rest.to_string()));
        }
        Self { parts }
    }

    /// The text when it contains no macro.
    pub fn literal(&self) -> Option<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                MacroPart::Lit(s) => out.push_str(s),
                MacroPart::Var { .. } => return None,
            }
        }
        Some(out)
    }
}

/// A collection or single variable a rule can inspect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VarName(pub String);

/// How a target selects keys inside a collection.
#[derive(Debug, Clone)]
pub enum KeySel {
    /// Case-insensitive key equality.
    Name(String),
    /// Key regex (`/…/`), with its required-literal check (tested before the regex).
    Regex(Regex, Option<crate::prefilter::LiteralCheck>),
    /// XPath for `XML:` (only `/*` and `//@*`-style forms are understood).
    XPath(String),
}

impl KeySel {
    fn parse(name: &str, key: &str) -> Result<Self, String> {
        if name == "XML" {
            return Ok(Self::XPath(key.to_string()));
        }
        if key.len() >= 2 && key.starts_with('/') && key.ends_with('/') {
            let pattern = &key[1..key.len() - 1];
            let re = RegexBuilder::new(pattern)
                .case_insensitive(true)
                .unicode(false)
                .build()
                .map_err(|e| format!("key regex {key}: {e}"))?;
            return Ok(Self::Regex(
                re,
                crate::prefilter::LiteralCheck::for_pattern(pattern),
            ));
        }
        Ok(Self::Name(key.to_ascii_lowercase()))
    }

    /// Whether this selector picks `key`.
    pub fn matches(&self, key: &str) -> bool {
        match self {
            Self::Name(n) => n.eq_ignore_ascii_case(key),
            Self::Regex(re, check) => {
                check.as_ref().is_none_or(|c| c.may_match(key.as_bytes()))
                    && re.is_match(key.as_bytes())
            }
            Self::XPath(_) => true,
        }
    }
}

/// One target of a rule.
#[derive(Debug, Clone)]
pub struct Target {
    /// Variable or collection name, upper-cased.
    pub name: String,
    /// Key selector.
    pub key: Option<KeySel>,
    /// `&`: count.
    pub count: bool,
    /// `!`: exclusion.
    pub exclude: bool,
}

/// Variables the evaluator knows; anything else is a load error.
const KNOWN_VARS: &[&str] = &[
    "ARGS",
    "ARGS_NAMES",
    "ARGS_GET",
    "ARGS_GET_NAMES",
    "ARGS_POST",
    "ARGS_POST_NAMES",
    "ARGS_COMBINED_SIZE",
    "REQUEST_HEADERS",
    "REQUEST_HEADERS_NAMES",
    "REQUEST_COOKIES",
    "REQUEST_COOKIES_NAMES",
    "REQUEST_URI",
    "REQUEST_URI_RAW",
    "REQUEST_FILENAME",
    "REQUEST_BASENAME",
    "REQUEST_LINE",
    "REQUEST_METHOD",
    "REQUEST_PROTOCOL",
    "REQUEST_BODY",
    "REQUEST_BODY_LENGTH",
    "QUERY_STRING",
    "FILES",
    "FILES_NAMES",
    "FILES_SIZES",
    "FILES_COMBINED_SIZE",
    "FILES_TMPNAMES",
    "MULTIPART_PART_HEADERS",
    "MULTIPART_STRICT_ERROR",
    "MULTIPART_UNMATCHED_BOUNDARY",
    "MULTIPART_FILENAME",
    "MULTIPART_NAME",
    "REQBODY_PROCESSOR",
    "REQBODY_ERROR",
    "REQBODY_ERROR_MSG",
    "REQBODY_PROCESSOR_ERROR",
    "XML",
    "TX",
    "IP",
    "GLOBAL",
    "SESSION",
    "USER",
    "RESOURCE",
    "ENV",
    "GEO",
    "RULE",
    "REMOTE_ADDR",
    "REMOTE_PORT",
    "REMOTE_HOST",
    "SERVER_NAME",
    "SERVER_ADDR",
    "SERVER_PORT",
    "UNIQUE_ID",
    "DURATION",
    "TIME",
    "TIME_EPOCH",
    "RESPONSE_HEADERS",
    "RESPONSE_HEADERS_NAMES",
    "RESPONSE_BODY",
    "RESPONSE_STATUS",
    "RESPONSE_PROTOCOL",
    "RESPONSE_CONTENT_TYPE",
    "RESPONSE_CONTENT_LENGTH",
    "STATUS_LINE",
    "MATCHED_VAR",
    "MATCHED_VAR_NAME",
    "MATCHED_VARS",
    "MATCHED_VARS_NAMES",
    "FULL_REQUEST",
    "FULL_REQUEST_LENGTH",
    "AUTH_TYPE",
    "WEBSERVER_ERROR_LOG",
    "INBOUND_DATA_ERROR",
    "OUTBOUND_DATA_ERROR",
    "HIGHEST_SEVERITY",
    "STATUS",
];

impl Target {
    fn from_raw(raw: &RawTarget) -> Result<Self, String> {
        if !KNOWN_VARS.contains(&raw.name.as_str()) {
            return Err(format!("unknown variable {}", raw.name));
        }
        let key = match &raw.key {
            Some(k) => Some(KeySel::parse(&raw.name, k)?),
            None => None,
        };
        Ok(Self {
            name: raw.name.clone(),
            key,
            count: raw.count,
            exclude: raw.exclude,
        })
    }

    /// Whether exclusion `self` removes the (collection, key) pair.
    pub fn excludes(&self, collection: &str, key: &str) -> bool {
        self.name == collection && self.key.as_ref().is_none_or(|k| k.matches(key))
    }
}

/// Disruptive action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Disruptive {
    /// Continue.
    Pass,
    /// Use the phase's default disruptive action.
    Block,
    /// Stop and answer with `status` (default 403).
    Deny,
    /// Close the connection.
    Drop,
    /// Stop rule processing and let the request through.
    Allow,
    /// Redirect (treated as deny with status 302).
    Redirect,
}

/// `setvar` operation.
#[derive(Debug, Clone)]
pub enum SetVarOp {
    /// `=value`.
    Set(MacroText),
    /// `=+value`.
    Add(MacroText),
    /// `=-value`.
    Sub(MacroText),
    /// `!coll.key`.
    Delete,
}

/// `setvar:coll.key=…`.
#[derive(Debug, Clone)]
pub struct SetVar {
    /// Collection (`TX`, `IP`, …), upper-cased.
    pub collection: String,
    /// Key (may contain macros).
    pub key: MacroText,
    /// Operation.
    pub op: SetVarOp,
}

/// Inclusive id ranges (`ctl:ruleRemoveById=1-99`).
pub type IdRanges = Vec<(u64, u64)>;

/// `ctl:` action.
#[derive(Debug, Clone)]
pub enum Ctl {
    /// `ruleEngine=…`.
    RuleEngine(EngineMode),
    /// `ruleRemoveById=…`.
    RuleRemoveById(IdRanges),
    /// `ruleRemoveByTag=…`.
    RuleRemoveByTag(String),
    /// `ruleRemoveTargetById=id;TARGET`.
    RuleRemoveTargetById(IdRanges, Target),
    /// `ruleRemoveTargetByTag=tag;TARGET`.
    RuleRemoveTargetByTag(String, Target),
    /// `requestBodyProcessor=…`.
    RequestBodyProcessor(String),
    /// `requestBodyAccess=On|Off`.
    RequestBodyAccess(bool),
    /// `forceRequestBodyVariable=On|Off`.
    ForceRequestBodyVariable(bool),
    /// Settings with no effect here (`auditEngine`, `auditLogParts`, `debugLogLevel`).
    Ignored,
}

/// Actions of one rule (or chain link).
#[derive(Debug, Clone, Default)]
pub struct Actions {
    /// `id`.
    pub id: u64,
    /// `phase` (1–5).
    pub phase: u8,
    /// Disruptive action, if written.
    pub disruptive: Option<Disruptive>,
    /// `status`.
    pub status: Option<u16>,
    /// `chain`.
    pub chain: bool,
    /// `t:` list after `t:none` resets.
    pub transforms: Vec<Transform>,
    /// `msg`.
    pub msg: Option<MacroText>,
    /// `logdata`.
    pub logdata: Option<MacroText>,
    /// `tag`s.
    pub tags: Vec<String>,
    /// `severity` (0–7, or name mapped to number).
    pub severity: Option<u8>,
    /// `setvar`s in order.
    pub setvars: Vec<SetVar>,
    /// `ctl`s in order.
    pub ctls: Vec<Ctl>,
    /// `skip`.
    pub skip: u32,
    /// `skipAfter`.
    pub skip_after: Option<String>,
    /// `capture`.
    pub capture: bool,
    /// `multiMatch`.
    pub multi_match: bool,
    /// `log` / `nolog` (None = default).
    pub log: Option<bool>,
    /// `ver`.
    pub ver: Option<String>,
}

fn severity_number(s: &str) -> Option<u8> {
    match s.to_ascii_uppercase().as_str() {
        "EMERGENCY" => Some(0),
        "ALERT" => Some(1),
        "CRITICAL" => Some(2),
        "ERROR" => Some(3),
        "WARNING" => Some(4),
        "NOTICE" => Some(5),
        "INFO" => Some(6),
        "DEBUG" => Some(7),
        n => n.parse().ok().filter(|v| *v <= 7),
    }
}

/// Parse `1 5-9,12` into inclusive id ranges.
pub fn parse_ranges(s: &str) -> Result<IdRanges, String> {
    let mut out = Vec::new();
    for part in s.split([' ', ',']).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let a: u64 = a
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id {part}"))?;
        let b: u64 = b
            .trim()
            .parse()
            .map_err(|_| format!("bad rule id {part}"))?;
        out.push((a.min(b), a.max(b)));
    }
    if out.is_empty() {
        return Err("empty rule id list".into());
    }
    Ok(out)
}

/// Whether `id` is in any of the ranges.
pub fn in_ranges(ranges: &IdRanges, id: u64) -> bool {
    ranges.iter().any(|(a, b)| *a <= id && id <= *b)
}

/// Parse one exclusion target (`ARGS:password`, `REQUEST_COOKIES:/^sess/`) as an excluding
/// [`Target`].
pub fn parse_ctl_target(s: &str) -> Result<Target, String> {
    let raws = seclang::split_targets(s)?;
    let [raw] = raws.as_slice() else {
        return Err(format!("expected one target in {s}"));
    };
    let mut t = Target::from_raw(raw)?;
    t.exclude = true;
    Ok(t)
}

fn parse_ctl(v: &str) -> Result<Ctl, String> {
    let (name, value) = v
        .split_once('=')
        .ok_or_else(|| format!("ctl without '=': {v}"))?;
    let on = |s: &str| s.eq_ignore_ascii_case("on");
    Ok(match name.trim().to_ascii_lowercase().as_str() {
        "ruleengine" => Ctl::RuleEngine(
            EngineMode::parse(value).ok_or_else(|| format!("bad ruleEngine {value}"))?,
        ),
        "ruleremovebyid" => Ctl::RuleRemoveById(parse_ranges(value)?),
        "ruleremovebytag" => Ctl::RuleRemoveByTag(value.to_string()),
        "ruleremovetargetbyid" => {
            let (ids, target) = value
                .split_once(';')
                .ok_or_else(|| format!("ruleRemoveTargetById needs id;TARGET: {value}"))?;
            Ctl::RuleRemoveTargetById(parse_ranges(ids)?, parse_ctl_target(target)?)
        }
        "ruleremovetargetbytag" => {
            let (tag, target) = value
                .split_once(';')
                .ok_or_else(|| format!("ruleRemoveTargetByTag needs tag;TARGET: {value}"))?;
            Ctl::RuleRemoveTargetByTag(tag.to_string(), parse_ctl_target(target)?)
        }
        "requestbodyprocessor" => Ctl::RequestBodyProcessor(value.to_ascii_uppercase()),
        "requestbodyaccess" => Ctl::RequestBodyAccess(on(value)),
        "forcerequestbodyvariable" => Ctl::ForceRequestBodyVariable(on(value)),
        "auditengine" | "auditlogparts" | "debugloglevel" | "responsebodyaccess" => Ctl::Ignored,
        other => return Err(format!("unsupported ctl:{other}")),
    })
}

fn parse_setvar(v: &str) -> Result<SetVar, String> {
    let (delete, v) = match v.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (lhs, rhs) = match v.split_once('=') {
        Some((l, r)) => (l, Some(r)),
        None => (v, None),
    };
    let (coll, key) = lhs
        .split_once('.')
        .ok_or_else(|| format!("setvar without collection: {v}"))?;
    let op = if delete {
        SetVarOp::Delete
    } else {
        match rhs {
            None => SetVarOp::Set(MacroText::parse("1")),
            Some(r) => {
                if let Some(x) = r.strip_prefix('+') {
                    SetVarOp::Add(MacroText::parse(x))
                } else if let Some(x) = r.strip_prefix('-') {
                    SetVarOp::Sub(MacroText::parse(x))
                } else {
                    SetVarOp::Set(MacroText::parse(r))
                }
            }
        }
    };
    Ok(SetVar {
        collection: coll.trim().to_ascii_uppercase(),
        key: MacroText::parse(&key.trim().to_ascii_lowercase()),
        op,
    })
}

/// Apply one raw action to `a`.
fn apply_action(a: &mut Actions, act: &RawAction) -> Result<(), String> {
    let val = || {
        act.value
            .clone()
            .ok_or_else(|| format!("action {} needs a value", act.name))
    };
    match act.name.as_str() {
        "id" => a.id = val()?.trim().parse().map_err(|_| "bad id".to_string())?,
        "phase" => {
            let v = val()?;
            a.phase = match v.trim().to_ascii_lowercase().as_str() {
                "request" => 2,
                "response" => 4,
                "logging" => 5,
                n => n
                    .parse()
                    .ok()
                    .filter(|p| (1..=5).contains(p))
                    .ok_or_else(|| format!("bad phase {v}"))?,
            }
        }
        "pass" => a.disruptive = Some(Disruptive::Pass),
        "block" => a.disruptive = Some(Disruptive::Block),
        "deny" => a.disruptive = Some(Disruptive::Deny),
        "drop" => a.disruptive = Some(Disruptive::Drop),
        "allow" => a.disruptive = Some(Disruptive::Allow),
        "redirect" => a.disruptive = Some(Disruptive::Redirect),
        "status" => a.status = Some(val()?.trim().parse().map_err(|_| "bad status")?),
        "chain" => a.chain = true,
        "t" => {
            let v = val()?;
            if v.eq_ignore_ascii_case("none") {
                a.transforms.clear();
            } else {
                a.transforms.push(
                    Transform::parse(&v).ok_or_else(|| format!("unknown transformation t:{v}"))?,
                );
            }
        }
        "msg" => a.msg = Some(MacroText::parse(&val()?)),
        "logdata" => a.logdata = Some(MacroText::parse(&val()?)),
        "tag" => a.tags.push(val()?),
        "severity" => {
            let v = val()?;
            a.severity = Some(severity_number(&v).ok_or_else(|| format!("bad severity {v}"))?);
        }
        "setvar" => a.setvars.push(parse_setvar(&val()?)?),
        "ctl" => a.ctls.push(parse_ctl(&val()?)?),
        "skip" => a.skip = val()?.trim().parse().map_err(|_| "bad skip")?,
        "skipafter" => a.skip_after = Some(val()?),
        "capture" => a.capture = true,
        "multimatch" => a.multi_match = true,
        "log" => a.log = Some(true),
        "nolog" => a.log = Some(false),
        "ver" => a.ver = Some(val()?),
        // Accepted with no effect in this engine: audit logging, persistence, metadata.
        "auditlog"
        | "noauditlog"
        | "rev"
        | "maturity"
        | "accuracy"
        | "initcol"
        | "expirevar"
        | "setenv"
        | "setuid"
        | "setsid"
        | "sanitisematched"
        | "sanitisearg"
        | "sanitisematchedbytes"
        | "deprecatevar"
        | "exec"
        | "append"
        | "prepend"
        | "xmlns"
        | "logdata_none" => {}
        other => return Err(format!("unknown action {other}")),
    }
    Ok(())
}

/// One rule or chain link.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Source file.
    pub file: String,
    /// Source line.
    pub line: usize,
    /// Targets (inspected and excluded); empty for `SecAction`.
    pub targets: Vec<Target>,
    /// Operator; `None` for `SecAction` (always matches).
    pub op: Option<Operator>,
    /// Actions.
    pub actions: Actions,
    /// Next chain link.
    pub chained: Option<Box<Rule>>,
    /// Interned id of the `t:` chain (set by [`crate::Engine::new`]; 0 = no transformation).
    pub chain_id: u32,
    /// Interned id of the target list when its values can be cached per phase (set by
    /// [`crate::Engine::new`]; `u32::MAX` = gathered anew each time: TX, MATCHED_VARS, counts, …).
    pub target_group: u32,
    /// Required-literal condition of an `@rx` operator (set by [`crate::Engine::new`]).
    pub prefilter: Option<crate::prefilter::Filter>,
    /// Ids of `actions.tags` in the engine's tag table (set by [`crate::Engine::new`]), so
    /// that a tag selector is one bit test per tag.
    pub tag_ids: Vec<u32>,
}

impl Rule {
    /// Rule id (of the chain starter).
    pub fn id(&self) -> u64 {
        self.actions.id
    }
}

/// A rule or a marker in load order.
#[derive(Debug, Clone)]
pub enum Item {
    /// A rule (chain starter).
    Rule(Box<Rule>),
    /// `SecMarker`.
    Marker(String),
}

/// The loaded configuration.
#[derive(Debug, Clone)]
pub struct RuleSet {
    /// Rules and markers in load order.
    pub items: Vec<Item>,
    /// `SecRuleEngine`.
    pub engine: EngineMode,
    /// `SecRequestBodyAccess`.
    pub request_body_access: bool,
    /// `SecResponseBodyAccess`.
    pub response_body_access: bool,
    /// `SecResponseBodyMimeType` (lower-cased).
    pub response_mime_types: Vec<String>,
    /// `SecRequestBodyLimit` in bytes.
    pub request_body_limit_bytes: usize,
    /// `SecResponseBodyLimit` in bytes.
    pub response_body_limit_bytes: usize,
    /// `SecArgumentsLimit`.
    pub arguments_limit: usize,
    /// `SecComponentSignature` values.
    pub components: Vec<String>,
    /// Load-time notes that are not errors (e.g. a regex that needed Unicode mode).
    pub warnings: Vec<String>,
    /// Default actions per phase (index = phase).
    defaults: [Option<Actions>; 6],
    /// Open chain: index of item whose last link awaits its next link.
    open_chain: bool,
}

/// A rule file or configuration text handed to [`RuleSet::add_text`].
pub trait DataFiles {
    /// Read a data file named relative to the rule file `from` (e.g. `ssrf.data`).
    fn read(&self, from: &str, name: &str) -> Option<String>;

    /// Resolve an `Include` pattern written in `from` to (file name, text) pairs, in order.
    /// `None` means includes are not available (the directive is then an error).
    fn include(&self, _from: &str, _pattern: &str) -> Option<Vec<(String, String)>> {
        None
    }
}

impl<F: Fn(&str, &str) -> Option<String>> DataFiles for F {
    fn read(&self, from: &str, name: &str) -> Option<String> {
        self(from, name)
    }
}

impl Default for RuleSet {
    fn default() -> Self {
        Self::new()
    }
}

impl RuleSet {
    /// Empty rule set with ModSecurity's defaults (engine Off until configured, like ModSecurity).
    pub fn new() -> Self {
        Self {
            items: Vec::new(),
            engine: EngineMode::On,
            request_body_access: true,
            response_body_access: true,
            response_mime_types: vec!["text/plain".into(), "text/html".into()],
            request_body_limit_bytes: 13_107_200,
            response_body_limit_bytes: 524_288,
            arguments_limit: 1000,
            components: Vec::new(),
            warnings: Vec::new(),
            defaults: Default::default(),
            open_chain: false,
        }
    }

    /// Number of rules (chain starters).
    pub fn rule_count(&self) -> usize {
        self.items
            .iter()
            .filter(|i| matches!(i, Item::Rule(_)))
            .count()
    }

    /// Iterate over rules.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.items.iter().filter_map(|i| match i {
            Item::Rule(r) => Some(r.as_ref()),
            Item::Marker(_) => None,
        })
    }

    /// Add one configuration file's text (directives in order).
    pub fn add_text(
        &mut self,
        file: &str,
        text: &str,
        data: &dyn DataFiles,
    ) -> Result<(), LoadError> {
        for d in seclang::directives(file, text)? {
            self.add_directive(&d, data)?;
        }
        Ok(())
    }

    /// Finish loading: an unterminated chain is an error; a `ctl:ruleRemove*ById` that names
    /// no loaded rule is reported in [`RuleSet::warnings`] (an exclusion that can never act).
    pub fn finish(&mut self) -> Result<(), LoadError> {
        if self.open_chain {
            if let Some(Item::Rule(r)) = self.items.last() {
                return Err(LoadError::Syntax {
                    file: r.file.clone(),
                    line: r.line,
                    message: "chain action on the last rule with no rule following".into(),
                });
            }
        }
        let ids: Vec<u64> = self.rules().map(Rule::id).collect();
        let mut notes = Vec::new();
        for r in self.rules() {
            let mut link = Some(r);
            while let Some(l) = link {
                for c in &l.actions.ctls {
                    let (what, ranges) = match c {
                        Ctl::RuleRemoveById(rg) => ("ruleRemoveById", rg),
                        Ctl::RuleRemoveTargetById(rg, _) => ("ruleRemoveTargetById", rg),
                        _ => continue,
                    };
                    if !ids.iter().any(|id| in_ranges(ranges, *id)) {
                        notes.push(format!(
                            "{}:{}: ctl:{what} names no loaded rule ({ranges:?})",
                            l.file, l.line
                        ));
                    }
                }
                link = l.chained.as_deref();
            }
        }
        self.warnings.extend(notes);
        Ok(())
    }

    fn add_directive(&mut self, d: &Directive, data: &dyn DataFiles) -> Result<(), LoadError> {
        let err = |message: String| LoadError::Syntax {
            file: d.file.clone(),
            line: d.line,
            message,
        };
        let arg = |i: usize| -> Result<&str, LoadError> {
            d.args
                .get(i)
                .map(String::as_str)
                .ok_or_else(|| err(format!("{} needs argument {}", d.name, i + 1)))
        };
        let onoff = |s: &str| -> Result<bool, LoadError> {
            match s.to_ascii_lowercase().as_str() {
                "on" => Ok(true),
                "off" => Ok(false),
                _ => Err(err(format!("{} expects On or Off, got {s}", d.name))),
            }
        };
        let name = d.name.to_ascii_lowercase();
        if self.open_chain && name != "secrule" {
            return Err(err(format!(
                "{} follows a rule with 'chain'; a SecRule must follow",
                d.name
            )));
        }
        match name.as_str() {
            "secrule" => {
                let targets = arg(0)?;
                let op = arg(1)?;
                let actions = d.args.get(2).map(String::as_str).unwrap_or("");
                if d.args.len() > 3 {
                    return Err(err("SecRule takes at most 3 arguments".into()));
                }
                self.add_rule(d, Some((targets, op)), actions, data)?;
            }
            "secaction" => {
                self.add_rule(d, None, arg(0)?, data)?;
            }
            "secmarker" => self.items.push(Item::Marker(arg(0)?.to_string())),
            "include" => {
                let files = data.include(&d.file, arg(0)?).ok_or_else(|| {
                    err(format!("Include {}: no such file", arg(0).unwrap_or("")))
                })?;
                for (name, text) in files {
                    self.add_text(&name, &text, data)?;
                }
            }
            "secdefaultaction" => {
                let mut a = Actions::default();
                for act in seclang::split_actions(arg(0)?).map_err(err)? {
                    apply_action(&mut a, &act).map_err(err)?;
                }
                if a.phase == 0 {
                    return Err(err("SecDefaultAction needs a phase".into()));
                }
                if a.disruptive.is_none() {
                    return Err(err("SecDefaultAction needs a disruptive action".into()));
                }
                let ph = usize::from(a.phase);
                self.defaults[ph] = Some(a);
            }
            "secruleengine" => {
                self.engine = EngineMode::parse(arg(0)?)
                    .ok_or_else(|| err(format!("bad SecRuleEngine {}", arg(0).unwrap_or(""))))?;
            }
            "secrequestbodyaccess" => self.request_body_access = onoff(arg(0)?)?,
            "secresponsebodyaccess" => self.response_body_access = onoff(arg(0)?)?,
            "secresponsebodymimetype" => {
                self.response_mime_types = d.args.iter().map(|s| s.to_ascii_lowercase()).collect()
            }
            "secresponsebodymimetypesclear" => self.response_mime_types.clear(),
            "secrequestbodylimit" => {
                self.request_body_limit_bytes =
                    arg(0)?.parse().map_err(|_| err("bad limit".into()))?
            }
            "secresponsebodylimit" => {
                self.response_body_limit_bytes =
                    arg(0)?.parse().map_err(|_| err("bad limit".into()))?
            }
            "secargumentslimit" => {
                self.arguments_limit = arg(0)?.parse().map_err(|_| err("bad limit".into()))?
            }
            "seccomponentsignature" => self.components.push(arg(0)?.to_string()),
            "secruleremovebyid" => {
                let ranges = parse_ranges(&d.args.join(" ")).map_err(err)?;
                self.items.retain(|i| match i {
                    Item::Rule(r) => !in_ranges(&ranges, r.id()),
                    Item::Marker(_) => true,
                });
            }
            "secruleremovebytag" => {
                let tag = arg(0)?.to_string();
                self.items.retain(|i| match i {
                    Item::Rule(r) => !r.actions.tags.iter().any(|t| tag_matches(&tag, t)),
                    Item::Marker(_) => true,
                });
            }
            "secruleremovebymsg" => {
                let msg = arg(0)?.to_string();
                self.items.retain(|i| match i {
                    Item::Rule(r) => r
                        .actions
                        .msg
                        .as_ref()
                        .and_then(MacroText::literal)
                        .is_none_or(|m| m != msg),
                    Item::Marker(_) => true,
                });
            }
            "secruleupdatetargetbyid" | "secruleupdatetargetbytag" => {
                let sel = arg(0)?.to_string();
                let raws = seclang::split_targets(arg(1)?).map_err(err)?;
                let mut targets = Vec::new();
                for r in &raws {
                    targets.push(Target::from_raw(r).map_err(err)?);
                }
                let by_id = name == "secruleupdatetargetbyid";
                let ranges = if by_id {
                    Some(parse_ranges(&sel).map_err(err)?)
                } else {
                    None
                };
                let mut hit = false;
                for item in &mut self.items {
                    if let Item::Rule(r) = item {
                        let sel_hit = match &ranges {
                            Some(rg) => in_ranges(rg, r.id()),
                            None => r.actions.tags.iter().any(|t| tag_matches(&sel, t)),
                        };
                        if sel_hit {
                            hit = true;
                            r.targets.extend(targets.iter().cloned());
                        }
                    }
                }
                if !hit {
                    return Err(err(format!("{} {sel}: no loaded rule matches", d.name)));
                }
            }
            "secruleupdateactionbyid" => {
                let ranges = parse_ranges(arg(0)?).map_err(err)?;
                let acts = seclang::split_actions(arg(1)?).map_err(err)?;
                let mut hit = false;
                for item in &mut self.items {
                    if let Item::Rule(r) = item {
                        if in_ranges(&ranges, r.id()) {
                            hit = true;
                            for a in &acts {
                                if a.name == "id" || a.name == "phase" {
                                    return Err(err("cannot update id or phase".into()));
                                }
                                if a.name == "t" && r.actions.transforms.is_empty() {
                                    // fallthrough: apply normally
                                }
                                apply_action(&mut r.actions, a).map_err(err)?;
                            }
                        }
                    }
                }
                if !hit {
                    return Err(err(format!(
                        "SecRuleUpdateActionById {}: no loaded rule",
                        arg(0)?
                    )));
                }
            }
            // Settings that concern logging, storage or PCRE and have no effect in this engine.
            "seccollectiontimeout"
            | "secauditengine"
            | "secauditlog"
            | "secauditlogparts"
            | "secauditlogtype"
            | "secauditlogstoragedir"
            | "secauditlogrelevantstatus"
            | "secauditlogformat"
            | "secauditlogfilemode"
            | "secauditlogdirmode"
            | "secdebuglog"
            | "secdebugloglevel"
            | "sectmpdir"
            | "secdatadir"
            | "secuploaddir"
            | "secuploadkeepfiles"
            | "secuploadfilemode"
            | "secpcrematchlimit"
            | "secpcrematchlimitrecursion"
            | "secrequestbodynofileslimit"
            | "secrequestbodyinmemorylimit"
            | "secrequestbodylimitaction"
            | "secresponsebodylimitaction"
            | "secargumentseparator"
            | "seccookieformat"
            | "secunicodemapfile"
            | "secstatusengine"
            | "sectmpsaveuploadedfiles"
            | "secxmlexternalentity"
            | "secwebappid"
            | "secserversignature"
            | "secrequestbodyjsondepthlimit"
            | "secgeolookupdb"
            | "sechashengine" => {}
            _ => {
                return Err(LoadError::UnknownDirective {
                    file: d.file.clone(),
                    line: d.line,
                    name: d.name.clone(),
                })
            }
        }
        Ok(())
    }

    fn add_rule(
        &mut self,
        d: &Directive,
        rule: Option<(&str, &str)>,
        actions: &str,
        data: &dyn DataFiles,
    ) -> Result<(), LoadError> {
        let err = |message: String| LoadError::Syntax {
            file: d.file.clone(),
            line: d.line,
            message,
        };
        let mut targets = Vec::new();
        let mut op = None;
        if let Some((t, o)) = rule {
            for raw in seclang::split_targets(t).map_err(err)? {
                targets.push(Target::from_raw(&raw).map_err(err)?);
            }
            let parsed = Operator::parse(o, &d.file, data).map_err(|e| match e {
                crate::ops::OpError::Regex(p, m) => LoadError::Regex {
                    file: d.file.clone(),
                    line: d.line,
                    pattern: p,
                    message: m,
                },
                crate::ops::OpError::Other(m) => err(m),
            })?;
            if parsed.unicode_regex {
                self.warnings.push(format!(
                    "{}:{}: regex compiled in Unicode mode (classes match characters, not bytes)",
                    d.file, d.line
                ));
            }
            op = Some(parsed);
        }
        let raw_actions = seclang::split_actions(actions).map_err(err)?;
        let mut a = Actions::default();
        let is_link = self.open_chain;
        if !is_link {
            // Defaults first (ModSecurity merges the phase's SecDefaultAction into each rule);
            // the phase is only known after reading the rule's own actions.
            let phase = raw_actions
                .iter()
                .rev()
                .find(|x| x.name == "phase")
                .and_then(|x| x.value.as_deref())
                .map(|v| match v.trim().to_ascii_lowercase().as_str() {
                    "request" => 2,
                    "response" => 4,
                    "logging" => 5,
                    n => n.parse().unwrap_or(2),
                })
                .unwrap_or(2u8);
            if let Some(def) = self.defaults.get(usize::from(phase)).cloned().flatten() {
                a.transforms = def.transforms.clone();
                a.log = def.log;
            }
            a.phase = phase;
        }
        for act in &raw_actions {
            apply_action(&mut a, act).map_err(err)?;
        }
        if !is_link {
            if a.id == 0 {
                return Err(err("rule has no id".into()));
            }
            if self.rules().any(|r| r.id() == a.id) {
                return Err(err(format!("duplicate rule id {}", a.id)));
            }
            let default_disruptive = self
                .defaults
                .get(usize::from(a.phase))
                .cloned()
                .flatten()
                .and_then(|x| x.disruptive)
                .unwrap_or(Disruptive::Pass);
            match a.disruptive {
                None | Some(Disruptive::Block) => a.disruptive = Some(default_disruptive),
                _ => {}
            }
        } else if a.id != 0 || a.phase != 0 {
            return Err(err("a chained rule may not carry id or phase".into()));
        }
        let chain = a.chain;
        let new_rule = Rule {
            file: d.file.clone(),
            line: d.line,
            targets,
            op,
            actions: a,
            chained: None,
            chain_id: 0,
            target_group: u32::MAX,
            prefilter: None,
            tag_ids: Vec::new(),
        };
        if is_link {
            let Some(Item::Rule(head)) = self.items.last_mut() else {
                return Err(err("chained rule without a starter".into()));
            };
            append_link(head, new_rule);
        } else {
            self.items.push(Item::Rule(Box::new(new_rule)));
        }
        self.open_chain = chain;
        Ok(())
    }

    /// Index from marker name to item index, and from rule id to item index.
    pub fn marker_index(&self) -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (i, item) in self.items.iter().enumerate() {
            match item {
                Item::Marker(name) => {
                    m.entry(name.clone()).or_insert(i);
                }
                Item::Rule(r) => {
                    m.entry(r.id().to_string()).or_insert(i);
                }
            }
        }
        m
    }
}

fn append_link(link: &mut Rule, new: Rule) {
    match link.chained {
        Some(ref mut next) => append_link(next, new),
        None => link.chained = Some(Box::new(new)),
    }
}

/// Tag selector match: ModSecurity treats the selector as a regex; plain tags match exactly.
pub fn tag_matches(selector: &str, tag: &str) -> bool {
    if selector == tag {
        return true;
    }
    if !selector.contains([
        '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '|', '^', '$',
    ]) {
        return false;
    }
    match Regex::new(selector) {
        Ok(re) => re.is_match(tag.as_bytes()),
        Err(_) => false,
    }
}

/// A tag selector classified once (literal or regex), for selectors tested against many rules.
#[derive(Debug, Clone)]
pub struct TagSel {
    text: String,
    re: Option<Regex>,
}

impl TagSel {
    /// Classify `selector`: a selector with regex metacharacters is also tried as a regex
    /// (one that does not compile matches by equality only).
    pub fn new(selector: &str) -> Self {
        let re = if selector.contains([
            '\\', '.', '+', '*', '?', '(', ')', '[', ']', '{', '}', '|', '^', '$',
        ]) {
            Regex::new(selector).ok()
        } else {
            None
        };
        Self {
            text: selector.to_string(),
            re,
        }
    }

    /// Whether `tag` is selected.
    pub fn matches(&self, tag: &str) -> bool {
        self.text == tag
            || self
                .re
                .as_ref()
                .is_some_and(|re| re.is_match(tag.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_data(_: &str, _: &str) -> Option<String> {
        None
    }

    #[test]
    fn chain_defaults_and_errors() {
        let mut rs = RuleSet::new();
        rs.add_text(
            "a.conf",
            "SecDefaultAction \"phase:2,log,pass\"\nSecRule ARGS \"@rx a\" \"id:1,phase:2,block,chain\"\n  SecRule ARGS_NAMES \"@streq b\" \"setvar:tx.x=+1\"\nSecMarker END\n",
            &no_data,
        )
        .unwrap();
        rs.finish().unwrap();
        assert_eq!(rs.rule_count(), 1);
        let r = rs.rules().next().unwrap();
        assert_eq!(r.actions.disruptive, Some(Disruptive::Pass));

        let mut rs = RuleSet::new();
        rs.add_text(
            "e.conf",
            "SecRule ARGS \"@rx a\" \"id:5,phase:1,pass,ctl:ruleRemoveById=5,ctl:ruleRemoveTargetById=77;ARGS:x\"\n",
            &no_data,
        )
        .unwrap();
        rs.finish().unwrap();
        assert_eq!(rs.warnings.len(), 1, "{:?}", rs.warnings);
        assert!(rs.warnings[0].starts_with("e.conf:1: ctl:ruleRemoveTargetById"));
        assert!(r.chained.is_some());

        let mut rs = RuleSet::new();
        let e = rs
            .add_text("b.conf", "\n\nSecFoo bar\n", &no_data)
            .unwrap_err();
        assert_eq!(e.to_string(), "b.conf:3: unknown directive SecFoo");

        let mut rs = RuleSet::new();
        let e = rs
            .add_text("c.conf", "SecRule ARGS \"@rx (\" \"id:2\"\n", &no_data)
            .unwrap_err();
        assert!(e.to_string().starts_with("c.conf:1: regex"), "{e}");

        let mut rs = RuleSet::new();
        let e = rs
            .add_text("d.conf", "SecRule NOPE \"@rx a\" \"id:3\"\n", &no_data)
            .unwrap_err();
        assert!(e.to_string().contains("unknown variable NOPE"), "{e}");
    }

    #[test]
    fn update_target_and_remove() {
        let mut rs = RuleSet::new();
        rs.add_text(
            "a.conf",
            "SecRule ARGS \"@rx a\" \"id:1,phase:2,pass\"\nSecRule ARGS \"@rx a\" \"id:2,phase:2,pass\"\nSecRuleUpdateTargetById 1 \"!ARGS:foo\"\nSecRuleRemoveById 2\n",
            &no_data,
        )
        .unwrap();
        assert_eq!(rs.rule_count(), 1);
        let r = rs.rules().next().unwrap();
        assert_eq!(r.targets.len(), 2);
        assert!(r.targets[1].exclude);
        let e = rs
            .add_text(
                "a.conf",
                "SecRuleUpdateTargetById 99 \"!ARGS:x\"\n",
                &no_data,
            )
            .unwrap_err();
        assert!(e.to_string().contains("no loaded rule"), "{e}");
    }

    #[test]
    fn macros() {
        let m = MacroText::parse("Score %{TX.anomaly_score} for %{MATCHED_VAR_NAME}!");
        assert_eq!(m.parts.len(), 5);
        assert_eq!(
            m.parts[1],
            MacroPart::Var {
                name: "TX".into(),
                key: Some("anomaly_score".into())
            }
        );
    }
}
