//! Constant folding of rules whose outcome is the same in every transaction.
//!
//! CRS starts each transaction with ~30 rules that only set TX defaults (`901*`) and gates
//! every rule file with paranoia-level checks (`SecRule TX:DETECTION_PARANOIA_LEVEL "@lt 2"
//! "…,skipAfter:END-…"`): ~90 of the ~280 chains a small GET runs read nothing but TX
//! variables that no request can change. [`analyse`] walks the phases in order, tracking
//! which TX keys hold the same value in every transaction at each point, and evaluates each
//! rule that reads only such keys once, when the engine is built. A transaction then applies
//! the recorded effect ([`Fold`]) instead of evaluating the rule; everything after the
//! evaluation (removal checks, logging, disruptive actions, `skipAfter`) runs exactly as for
//! any other rule.
//!
//! Why the recorded effect is what evaluation would do: a folded rule reads only TX keys
//! (targets, operator and `setvar` macros; `MATCHED_VAR` and `RULE` only in `setvar`s,
//! where they name the rule's own match) and has no `ctl` unless it is a lone `SecAction`
//! (whose `ctl`s the transaction then runs as evaluation would). A key is *known* at a point when
//! every path to it gives it the same value (or leaves it unset). A rule that is not folded
//! makes every key it may write unknown (its literal `setvar` keys, the literal prefix of a
//! macro key, `TX:0`–`TX:9` for `capture`). A folded rule's writes stay known only while
//! every earlier rule certainly ran and it cannot have been removed (no earlier rule could
//! skip, stop or allow, no `ctl:ruleEngine=Off`, no `ctl:ruleRemoveById/ByTag` naming it);
//! otherwise its writes make their keys unknown too. What the analysis cannot see is
//! checked per transaction ([`crate::tx`]): configured exclusions, runtime target removals
//! and phases that did not run (e.g. no response phases before logging) turn folding off for
//! the rest of that transaction.

use std::collections::{BTreeMap, HashSet};

use crate::ops::OpKind;
use crate::rules::{
    in_ranges, Ctl, Disruptive, EngineMode, IdRanges, KeySel, MacroPart, MacroText, Rule, SetVarOp,
    TagSel,
};

/// The recorded effect of evaluating one folded chain.
#[derive(Debug, Clone)]
pub(crate) struct Fold {
    /// Whether the chain matched.
    pub matched: bool,
    /// TX keys written (`Some`) or deleted (`None`) by the evaluation, in key order.
    pub writes: Vec<(String, Option<Vec<u8>>)>,
    /// `MATCHED_VAR` (name, value) after the evaluation, when the evaluation set it.
    pub matched_var: Option<(String, Vec<u8>)>,
    /// `MATCHED_VARS` after the evaluation.
    pub matched_vars: Vec<(String, Vec<u8>)>,
}

/// What is known of TX at one point of the rule order.
#[derive(Debug, Default)]
pub(crate) struct KnownTx {
    /// Known keys that are set, with their value. A known key not listed here is unset.
    pub values: BTreeMap<String, Vec<u8>>,
    /// Keys that may differ between transactions.
    unknown: HashSet<String>,
    /// Key prefixes that may differ (a `setvar` key with a macro after this literal prefix).
    unknown_prefixes: Vec<String>,
    /// Every key may differ (a `setvar` key that starts with a macro).
    all_unknown: bool,
    /// Every rule before this point certainly ran to completion.
    definite: bool,
    /// Rules an earlier `ctl:ruleRemoveById` may have removed.
    removed_ids: Vec<IdRanges>,
    /// Rules an earlier `ctl:ruleRemoveByTag` may have removed.
    removed_tags: Vec<TagSel>,
}

impl KnownTx {
    /// The state before the first rule of phase 1: TX is empty in every transaction.
    pub fn start() -> Self {
        Self {
            definite: true,
            ..Self::default()
        }
    }

    /// Whether `key` (lower case) has the same value (or is unset) in every transaction.
    pub fn is_known(&self, key: &str) -> bool {
        !self.all_unknown
            && !self.unknown.contains(key)
            && !self
                .unknown_prefixes
                .iter()
                .any(|p| key.starts_with(p.as_str()))
    }

    fn forget(&mut self, key: &str) {
        self.values.remove(key);
        self.unknown.insert(key.to_string());
    }

    fn forget_prefix(&mut self, prefix: &str) {
        if prefix.is_empty() {
            self.all_unknown = true;
            self.values.clear();
            return;
        }
        self.values.retain(|k, _| !k.starts_with(prefix));
        self.unknown_prefixes.push(prefix.to_string());
    }

    /// Whether `rule` certainly runs when it is reached.
    fn certainly_runs(&self, rule: &Rule) -> bool {
        self.definite
            && !self.removed_ids.iter().any(|r| in_ranges(r, rule.id()))
            && !self
                .removed_tags
                .iter()
                .any(|sel| rule.actions.tags.iter().any(|t| sel.matches(t)))
    }

    /// Account for a folded rule's effect.
    pub fn apply_fold(&mut self, rule: &Rule, fold: &Fold) {
        let runs = self.certainly_runs(rule);
        for (k, v) in &fold.writes {
            match (runs, v) {
                (true, Some(v)) => {
                    self.values.insert(k.clone(), v.clone());
                }
                (true, None) => {
                    self.values.remove(k);
                }
                (false, _) => self.forget(k),
            }
        }
        if fold.matched {
            self.note_ctls(rule);
            if may_leave_order(rule) {
                self.definite = false;
            }
        }
    }

    /// Account for the `ctl`s of a rule that may run.
    fn note_ctls(&mut self, rule: &Rule) {
        let mut link = Some(rule);
        while let Some(l) = link {
            for c in &l.actions.ctls {
                match c {
                    Ctl::RuleRemoveById(r) => self.removed_ids.push(r.clone()),
                    Ctl::RuleRemoveByTag(t) => self.removed_tags.push(TagSel::new(t)),
                    // Stops every later rule. (`On`/`DetectionOnly` only decide whether a
                    // deny stops the phase, and a rule that may deny counts as leaving the
                    // order already; target removals and body settings change no order.)
                    Ctl::RuleEngine(EngineMode::Off) => self.definite = false,
                    _ => {}
                }
            }
            link = l.chained.as_deref();
        }
    }

    /// Account for a rule evaluated per transaction: whatever it may write is unknown
    /// afterwards, and if it may skip, stop or change what runs, later rules may not run.
    pub fn apply_runtime(&mut self, rule: &Rule) {
        let mut link = Some(rule);
        while let Some(l) = link {
            for sv in &l.actions.setvars {
                if sv.collection != "TX" {
                    continue;
                }
                match sv.key.literal() {
                    Some(k) => self.forget(&k.to_ascii_lowercase()),
                    None => self.forget_prefix(&literal_prefix(&sv.key).to_ascii_lowercase()),
                }
            }
            if l.actions.capture {
                for i in 0..10 {
                    self.forget(&i.to_string());
                }
            }
            link = l.chained.as_deref();
        }
        self.note_ctls(rule);
        if may_leave_order(rule) {
            self.definite = false;
        }
    }
}

/// Whether a matching `rule` may make later rules not run (skip, stop, allow); its `ctl`s
/// are accounted for in [`KnownTx::apply_runtime`].
fn may_leave_order(rule: &Rule) -> bool {
    let a = &rule.actions;
    a.skip > 0
        || a.skip_after.is_some()
        || matches!(
            a.disruptive,
            Some(Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect | Disruptive::Allow)
        )
}

/// The literal text of `m` before its first macro.
fn literal_prefix(m: &MacroText) -> String {
    let mut out = String::new();
    for p in &m.parts {
        match p {
            MacroPart::Lit(l) => out.push_str(l),
            MacroPart::Var { .. } => break,
        }
    }
    out
}

/// Adds the TX keys `m` reads to `reads`; false when it reads anything else. `own_match`
/// allows `MATCHED_VAR`, `MATCHED_VAR_NAME` and `RULE` (in a `setvar`, they name the rule's
/// own match, which folding records).
fn macro_reads(m: &MacroText, own_match: bool, reads: &mut Vec<String>) -> bool {
    for p in &m.parts {
        let MacroPart::Var { name, key } = p else {
            continue;
        };
        match (name.as_str(), key) {
            ("TX", Some(k)) => reads.push(k.to_ascii_lowercase()),
            ("MATCHED_VAR" | "MATCHED_VAR_NAME", None) | ("RULE", Some(_)) if own_match => {}
            _ => return false,
        }
    }
    true
}

/// The macro parameter of an operator, if it has one.
fn op_param(kind: &OpKind) -> Option<&MacroText> {
    match kind {
        OpKind::BeginsWith(m)
        | OpKind::EndsWith(m)
        | OpKind::Contains(m)
        | OpKind::ContainsWord(m)
        | OpKind::StrEq(m)
        | OpKind::Within(m)
        | OpKind::Eq(m)
        | OpKind::Ge(m)
        | OpKind::Gt(m)
        | OpKind::Le(m)
        | OpKind::Lt(m) => Some(m),
        _ => None,
    }
}

/// The TX keys (lower case) a chain reads, when it reads nothing but named TX keys, has no
/// `setvar` outside TX, and has `ctl`s only if it is a lone `SecAction` (whose `ctl`s then
/// run in every transaction: the folded effect runs them too); `None` when it cannot be
/// folded.
pub(crate) fn tx_reads(rule: &Rule) -> Option<Vec<String>> {
    let mut reads = Vec::new();
    let mut link = Some(rule);
    let lone_action = rule.op.is_none() && rule.chained.is_none();
    while let Some(l) = link {
        if !l.actions.ctls.is_empty() && !lone_action {
            return None;
        }
        for t in l.targets.iter().filter(|t| !t.exclude) {
            match (t.name.as_str(), &t.key) {
                ("TX", Some(KeySel::Name(k))) => reads.push(k.to_ascii_lowercase()),
                _ => return None,
            }
        }
        if let Some(op) = &l.op {
            if let Some(m) = op_param(&op.kind) {
                if !macro_reads(m, false, &mut reads) {
                    return None;
                }
            }
        }
        for sv in &l.actions.setvars {
            if sv.collection != "TX" || !macro_reads(&sv.key, true, &mut reads) {
                return None;
            }
            match &sv.op {
                SetVarOp::Delete => {}
                SetVarOp::Set(m) => {
                    if !macro_reads(m, true, &mut reads) {
                        return None;
                    }
                }
                SetVarOp::Add(m) | SetVarOp::Sub(m) => {
                    // The current value is read too: the key must be literal to know which.
                    let k = sv.key.literal()?;
                    reads.push(k.to_ascii_lowercase());
                    if !macro_reads(m, true, &mut reads) {
                        return None;
                    }
                }
            }
        }
        link = l.chained.as_deref();
    }
    Some(reads)
}

/// The writes that turn `before` into `after`.
pub(crate) fn diff(
    before: &BTreeMap<String, Vec<u8>>,
    after: &BTreeMap<String, Vec<u8>>,
) -> Vec<(String, Option<Vec<u8>>)> {
    let mut out: Vec<(String, Option<Vec<u8>>)> = after
        .iter()
        .filter(|(k, v)| before.get(*k) != Some(*v))
        .map(|(k, v)| (k.clone(), Some(v.clone())))
        .collect();
    out.extend(
        before
            .keys()
            .filter(|k| !after.contains_key(*k))
            .map(|k| (k.clone(), None)),
    );
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
