//! The evaluator: one [`Transaction`] per request, run phase by phase over a [`RuleSet`].
//! Pure: the request and response come in as data, the result goes out as data.

use std::collections::{BTreeMap, HashMap};

use crate::body::{self, Request, Response};
use crate::ops::{Expand, Operator};
use crate::rules::{
    in_ranges, Ctl, Disruptive, EngineMode, IdRanges, Item, KeySel, MacroPart, MacroText, Rule,
    RuleSet, SetVarOp, TagSel, Target,
};
use crate::transform::Transform;

/// Longest matched-data excerpt kept in a [`MatchedRule`].
pub const MATCHED_DATA_MAX_BYTES: usize = 200;

/// One rule that matched (the whole chain).
#[derive(Debug, Clone, serde::Serialize)]
pub struct MatchedRule {
    /// Rule id.
    pub id: u64,
    /// Phase.
    pub phase: u8,
    /// Expanded `msg` (empty when the rule does not log).
    pub msg: String,
    /// Expanded `logdata` (truncated; empty when the rule does not log).
    pub logdata: String,
    /// Severity number.
    pub severity: Option<u8>,
    /// Tags (empty when the rule does not log).
    pub tags: Vec<String>,
    /// Whether the rule logs (`log`/`nolog`).
    pub logged: bool,
    /// Name of the last matched variable (empty when the rule does not log).
    pub matched_var_name: String,
    /// Value of the last matched variable (truncated; empty when the rule does not log).
    pub matched_data: String,
}

/// A disruptive action that took effect.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Intervention {
    /// HTTP status to answer with.
    pub status: u16,
    /// Rule that decided.
    pub rule_id: u64,
    /// Phase it happened in.
    pub phase: u8,
    /// The action.
    pub action: Disruptive,
}

/// Per-transaction inputs that are not part of the request.
#[derive(Debug, Clone, Default)]
pub struct TxOptions {
    /// `UNIQUE_ID`.
    pub unique_id: String,
    /// Request start, milliseconds since the epoch (`TIME_EPOCH`); time is a parameter.
    pub now_ms: u64,
}

type Pairs = Vec<(String, Vec<u8>)>;

/// Request/response collections a value can come from (by position, without copying).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Src {
    ArgsGet,
    ArgsPost,
    Headers,
    Cookies,
    Files,
    FilesSizes,
    PartHeaders,
    RespHeaders,
    Env,
}

/// One value a rule inspects: a reference into a collection, or an owned value.
#[derive(Clone)]
enum Val {
    Pair {
        coll: &'static str,
        src: Src,
        idx: usize,
        names: bool,
    },
    /// A request/response scalar (`REQUEST_URI`, `REQUEST_BODY`, …), by name.
    Scalar(&'static str),
    Owned(String, Vec<u8>),
}

/// Number of [`Src`] kinds (slot arithmetic of the transformation cache).
const NSRC: usize = 9;

/// Marks an empty slot in the per-chain transformation cache.
const NO_STR: u32 = u32::MAX;

/// Values of the request/response variables.
#[derive(Debug, Default)]
struct Vars {
    args_get: Pairs,
    args_post: Pairs,
    headers: Pairs,
    cookies: Pairs,
    files: Pairs,
    files_sizes: Pairs,
    part_headers: Pairs,
    xml: Option<body::Xml>,
    resp_headers: Pairs,
    scalars: HashMap<&'static str, Vec<u8>, MixHash>,
    env: Pairs,
}

/// A transaction.
pub struct Transaction<'r> {
    eng: &'r Engine,
    rs: &'r RuleSet,
    engine: EngineMode,
    request_body_access: bool,
    body_processor: Option<String>,
    force_body_variable: bool,
    removed_ids: Vec<IdRanges>,
    removed_tags: Vec<TagBits>,
    removed_targets_by_id: Vec<(IdRanges, Target)>,
    removed_targets_by_tag: Vec<(TagBits, Target)>,
    /// The runtime target exclusions that apply to the current chain: indices into
    /// `removed_targets_by_id`, then (offset by `EXCLUSION_TAG_BASE`) `removed_targets_by_tag`.
    active_exclusions: Vec<u32>,
    /// The same set as a bit map (bit i: `removed_targets_by_id[i]`, bit 32 + j:
    /// `removed_targets_by_tag[j]`), part of a target group's cache key: chains with the same
    /// exclusions share gathered values. `EXCLUSIONS_UNCACHED` when an index is past 31.
    exclusion_mask: u64,
    vars: Vars,
    tx: BTreeMap<String, Vec<u8>>,
    persistent: HashMap<String, BTreeMap<String, Vec<u8>>>,
    matched_var: (String, Vec<u8>),
    matched_vars: Vec<(String, Vec<u8>)>,
    current_rule: (u64, String),
    /// Rules that matched, in order.
    pub matched: Vec<MatchedRule>,
    /// The disruptive action that took effect, if any.
    pub intervention: Option<Intervention>,
    allowed: bool,
    phase_done: u8,
    /// Whether recorded effects of folded rules may stand in for their evaluation: no
    /// configured exclusion, no runtime removal of a TX target, and every phase so far ran
    /// in order.
    folds_usable: bool,
    strs_bytes: usize,
    /// Incremented each time the string caches start over.
    strs_gen: u64,
    /// Reused buffer of setvar expansions.
    scratch: Vec<u8>,
    /// Transformation caches (taken from and returned to the thread's pool).
    caches: Caches,
}

/// A cached group's range in `Caches::gvals` (or `Caches::gathered_vals`): start and length.
type GroupVals = (u32, u32);

/// The cache key already carries an FNV hash of the value: mix the words instead of SipHash.
#[derive(Default, Clone, Copy)]
struct MixHash;

impl std::hash::BuildHasher for MixHash {
    type Hasher = MixHasher;
    fn build_hasher(&self) -> MixHasher {
        MixHasher(0)
    }
}

/// See [`MixHash`].
struct MixHasher(u64);

impl std::hash::Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = (self.0.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }
}

/// `Transaction::active_exclusions` entries at or past this are `removed_targets_by_tag`
/// indices.
const EXCLUSION_TAG_BASE: u32 = 1 << 31;

/// `Transaction::exclusion_mask` of a set that has no bit map (an index past 31).
const EXCLUSIONS_UNCACHED: u64 = u64::MAX;

/// Bit `base + i` of an exclusion mask, or every bit (uncacheable) when `i` is past 31.
fn exclusion_bit(i: usize, base: u32) -> u64 {
    if i < 32 {
        1u64 << (base as usize + i)
    } else {
        EXCLUSIONS_UNCACHED
    }
}

/// Upper bound on the bytes of transformed values kept per transaction; past it the caches
/// start over.
const STRS_MAX_BYTES: usize = 32 << 20;

/// Cache sets a thread keeps for its next transactions. A proxy worker evaluates one
/// transaction at a time (the request phases of one, then the response phases of another), so
/// two sets let every transaction start with allocated tables.
const CACHE_POOL_SETS: usize = 2;

/// Largest cache set (by capacity, approximately) a thread keeps; the caches of a large
/// request are freed as before.
const CACHE_POOL_SET_MAX_BYTES: usize = 1 << 20;

/// A transaction's transformation caches, moved out so that their allocations (vectors,
/// hash tables grown to their working size) serve the thread's next transaction instead of
/// being freed and grown again; a CRS transaction fills about a dozen of them.
#[derive(Default)]
struct Caches {
    /// Transformed values, by string id: CRS applies the same chains to the same values in
    /// hundreds of rules, so each (value, chain) is transformed once per transaction, each
    /// chain prefix is shared, and a transformation that changes nothing adds no string.
    strs: Vec<Vec<u8>>,
    /// Prefilter atoms present in each string (computed on first need).
    str_atoms: Vec<u32>,
    /// Per string: the id of a string whose scan result it shares (`NO_STR`: none). The scan
    /// is ASCII case-insensitive, so a string that only `lowercase`/`uppercase` made from
    /// another is not scanned again.
    scan_alias: Vec<u32>,
    /// Distinct scan results (many values share one: same atoms, same bytes) and, per scan
    /// result, the verdict of each filter tested so far (2 bits: known, passes).
    founds: Vec<(crate::prefilter::Found, Vec<u64>)>,
    found_ids: HashMap<u64, u32, MixHash>,
    /// First string id by content hash.
    str_ids: HashMap<u64, u32, MixHash>,
    /// Per chain id: string id by collection slot (`(idx * 2 + names) * NSRC + src`).
    pcache: Vec<Vec<u32>>,
    /// (scalar name address, chain id) → string id; cleared whenever scalars may change.
    scache: HashMap<(usize, u32), u32, MixHash>,
    /// (target group, chain id, exclusion mask) → the group's values and their transformed
    /// string ids as a range of `gvals`, for the current phase.
    gcache: HashMap<(u32, u32, u64), GroupVals, MixHash>,
    /// Every cached group's values (as indices into `gathered_vals`) and string ids, back to
    /// back (one buffer per transaction instead of two vectors and a shared pointer per
    /// group; 8 bytes an entry, as a form's groups reach 10^4–10^5 entries).
    gvals: Vec<(u32, u32)>,
    /// (target group, exclusion mask) → the group's gathered values (before any
    /// transformation) as a range of `gathered_vals`: rules with the same targets and other
    /// `t:` chains gather once per phase.
    gathered: HashMap<(u32, u64), GroupVals, MixHash>,
    gathered_vals: Vec<Val>,
    /// Reused buffer of the values a group gathers before they are resolved.
    gather_buf: Vec<Val>,
    /// Reused buffer of the values a link inspects.
    values_buf: Vec<Val>,
}

impl Caches {
    /// Empty every cache, keeping its allocation. Empty `pcache` rows read as "not cached",
    /// like missing ones.
    fn clear(&mut self) {
        self.strs.clear();
        self.str_atoms.clear();
        self.scan_alias.clear();
        self.founds.clear();
        self.found_ids.clear();
        self.str_ids.clear();
        for row in &mut self.pcache {
            row.clear();
        }
        self.scache.clear();
        self.clear_groups();
        self.gather_buf.clear();
        self.values_buf.clear();
    }

    /// Empty the target-group caches (values gathered and resolved for the current phase).
    fn clear_groups(&mut self) {
        self.gcache.clear();
        self.gvals.clear();
        self.gathered.clear();
        self.gathered_vals.clear();
    }

    /// Approximate bytes held (capacities).
    fn capacity_bytes(&self) -> usize {
        use std::mem::size_of;
        let map_entry = 24;
        self.strs.capacity() * size_of::<Vec<u8>>()
            + (self.str_atoms.capacity() + self.scan_alias.capacity()) * 4
            + self.founds.capacity() * size_of::<(crate::prefilter::Found, Vec<u64>)>()
            + (self.found_ids.capacity()
                + self.str_ids.capacity()
                + self.scache.capacity()
                + self.gcache.capacity()
                + self.gathered.capacity())
                * map_entry
            + self.pcache.capacity() * size_of::<Vec<u32>>()
            + self.pcache.iter().map(|r| r.capacity() * 4).sum::<usize>()
            + self.gvals.capacity() * size_of::<(u32, u32)>()
            + (self.gathered_vals.capacity()
                + self.gather_buf.capacity()
                + self.values_buf.capacity())
                * size_of::<Val>()
    }
}

thread_local! {
    static CACHE_POOL: std::cell::RefCell<Vec<Caches>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keep `c`'s allocations for the thread's next transaction (bounded in count and size).
fn recycle_caches(mut c: Caches) {
    c.clear();
    if c.capacity_bytes() > CACHE_POOL_SET_MAX_BYTES {
        return;
    }
    // `try_with`: during thread teardown the pool may be gone; the caches are then freed.
    let _ = CACHE_POOL.try_with(|p| {
        if let Ok(mut p) = p.try_borrow_mut() {
            if p.len() < CACHE_POOL_SETS {
                p.push(c);
            }
        }
    });
}

/// A cleared cache set from the thread's pool, or a new one.
fn pooled_caches() -> Caches {
    CACHE_POOL
        .try_with(|p| p.try_borrow_mut().ok().and_then(|mut p| p.pop()))
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn fnv1a(v: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in v {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Compiled rule set plus its marker index, shared across transactions.
#[derive(Debug)]
pub struct Engine {
    /// Rules.
    pub rules: RuleSet,
    /// Interned transformation chains: chain id → (parent chain id, last transformation);
    /// id 0 is the empty chain.
    chains: Vec<(u32, Option<Transform>)>,
    /// Required-literal atoms of every `@rx` and their automaton.
    prefilter: crate::prefilter::Prefilter,
    /// Per target group ([`Rule::target_group`]): whether it inspects `XML` (whose values are
    /// not cached, so the group is gathered anew when a request has an XML body).
    group_has_xml: Vec<bool>,
    /// Item indices of the rules (chain starters) of each phase (index = phase), in load order.
    phase_rules: Vec<Vec<u32>>,
    /// Per item: the item index of the marker its `skipAfter` names (`None`: no `skipAfter`,
    /// or a marker that does not exist), resolved once instead of hashing the name per match.
    skip_targets: Vec<Option<usize>>,
    /// Per item: the recorded effect of a rule whose outcome is the same in every
    /// transaction (`crate::fold`); empty when folding is off.
    folds: Vec<Option<crate::fold::Fold>>,
    /// Every distinct tag of the loaded rules → its id ([`Rule::tag_ids`]).
    tag_table: HashMap<String, u32>,
    /// The tag bit map of every selector a rule's `ctl:ruleRemove*ByTag` names, computed at
    /// load instead of per request.
    ctl_tag_sels: HashMap<String, TagBits>,
}

/// Which of the engine's tags a tag selector picks: bit `id` for each tag id it matches.
type TagBits = std::sync::Arc<[u64]>;

/// Whether a rule with tag ids `ids` has a tag `bits` selects.
fn has_selected_tag(bits: &[u64], ids: &[u32]) -> bool {
    ids.iter().any(|&t| {
        bits.get(t as usize / 64)
            .is_some_and(|w| w & (1u64 << (t % 64)) != 0)
    })
}

/// Whether the values of target `t` depend only on the request/response (not on TX,
/// MATCHED_*, RULE or counts), so a phase can gather them once for every rule with the same
/// targets.
fn target_cacheable(t: &Target) -> bool {
    if t.exclude {
        return true;
    }
    !t.count
        && !matches!(
            t.name.as_str(),
            "MATCHED_VARS"
                | "MATCHED_VARS_NAMES"
                | "MATCHED_VAR"
                | "MATCHED_VAR_NAME"
                | "TX"
                | "IP"
                | "GLOBAL"
                | "SESSION"
                | "USER"
                | "RESOURCE"
                | "RULE"
                | "GEO"
        )
}

impl Engine {
    /// Wrap a loaded rule set: intern every link's transformation chain and compute each
    /// `@rx`'s required-literal condition.
    pub fn new(mut rules: RuleSet) -> Self {
        let markers = rules.marker_index();
        let mut chains: Vec<(u32, Option<Transform>)> = vec![(0, None)];
        let mut chain_ids: HashMap<(u32, Transform), u32> = HashMap::new();
        let mut prefilter = crate::prefilter::Prefilter::new();
        let mut group_ids: HashMap<String, u32> = HashMap::new();
        let mut group_has_xml: Vec<bool> = Vec::new();
        let mut tag_table: HashMap<String, u32> = HashMap::new();
        for item in &mut rules.items {
            let Item::Rule(rule) = item else { continue };
            let mut link: Option<&mut Rule> = Some(rule.as_mut());
            while let Some(l) = link {
                let mut id = 0u32;
                for t in &l.actions.transforms {
                    let next = chains.len() as u32;
                    id = *chain_ids.entry((id, *t)).or_insert_with(|| {
                        chains.push((id, Some(*t)));
                        next
                    });
                }
                l.chain_id = id;
                l.tag_ids = l
                    .actions
                    .tags
                    .iter()
                    .map(|t| {
                        let next = tag_table.len() as u32;
                        *tag_table.entry(t.clone()).or_insert(next)
                    })
                    .collect();
                l.target_group = if l.op.is_some() && l.targets.iter().all(target_cacheable) {
                    let key = format!("{:?}", l.targets);
                    let next = group_has_xml.len() as u32;
                    let g = *group_ids.entry(key).or_insert(next);
                    if g == next {
                        group_has_xml.push(l.targets.iter().any(|t| !t.exclude && t.name == "XML"));
                    }
                    g
                } else {
                    u32::MAX
                };
                l.prefilter = match &l.op {
                    Some(op) if !op.unicode_regex => match &op.kind {
                        crate::ops::OpKind::Rx(re) => prefilter.add_pattern(re.as_str()),
                        crate::ops::OpKind::Pm(_) => prefilter.add_phrases(&op.phrases),
                        _ => None,
                    },
                    _ => None,
                };
                link = l.chained.as_deref_mut();
            }
        }
        if prefilter.build().is_err() {
            // Without an automaton no condition can be tested: run every regex.
            prefilter = crate::prefilter::Prefilter::new();
            for item in &mut rules.items {
                let Item::Rule(rule) = item else { continue };
                let mut link: Option<&mut Rule> = Some(rule.as_mut());
                while let Some(l) = link {
                    l.prefilter = None;
                    link = l.chained.as_deref_mut();
                }
            }
        }
        let mut phase_rules: Vec<Vec<u32>> = vec![Vec::new(); 6];
        for (i, item) in rules.items.iter().enumerate() {
            if let Item::Rule(r) = item {
                if let Some(list) = phase_rules.get_mut(usize::from(r.actions.phase)) {
                    list.push(i as u32);
                }
            }
        }
        let skip_targets = rules
            .items
            .iter()
            .map(|item| match item {
                Item::Rule(r) => r
                    .actions
                    .skip_after
                    .as_ref()
                    .and_then(|m| markers.get(m).copied()),
                Item::Marker(_) => None,
            })
            .collect();
        let mut engine = Self {
            skip_targets,
            phase_rules,
            rules,
            chains,
            prefilter,
            group_has_xml,
            folds: Vec::new(),
            tag_table,
            ctl_tag_sels: HashMap::new(),
        };
        let mut sels: Vec<String> = Vec::new();
        for item in &engine.rules.items {
            let Item::Rule(rule) = item else { continue };
            let mut link: Option<&Rule> = Some(rule);
            while let Some(l) = link {
                for c in &l.actions.ctls {
                    match c {
                        Ctl::RuleRemoveByTag(t) | Ctl::RuleRemoveTargetByTag(t, _) => {
                            sels.push(t.clone())
                        }
                        _ => {}
                    }
                }
                link = l.chained.as_deref();
            }
        }
        sels.sort_unstable();
        sels.dedup();
        for sel in sels {
            let bits = engine.compute_tag_bits(&sel);
            engine.ctl_tag_sels.insert(sel, bits);
        }
        engine.folds = engine.compute_folds();
        engine
    }

    /// The same engine evaluating every rule in every transaction (no constant folding): the
    /// reference the folded engine is checked against.
    pub fn without_folding(mut self) -> Self {
        self.folds.clear();
        self
    }

    /// Number of rules whose evaluation is folded into a recorded effect.
    pub fn folded_rules(&self) -> usize {
        self.folds.iter().filter(|f| f.is_some()).count()
    }

    /// Walk the phases in order and evaluate, once, each rule that reads only TX keys known
    /// to be the same in every transaction at its place (see `crate::fold`).
    fn compute_folds(&self) -> Vec<Option<crate::fold::Fold>> {
        /// A `MATCHED_VAR` name no rule can produce: tells whether an evaluation set it.
        const UNSET: &str = "\u{0}unset";
        let mut folds: Vec<Option<crate::fold::Fold>> = vec![None; self.rules.items.len()];
        let mut known = crate::fold::KnownTx::start();
        let req = Request::default();
        let mut tx = Transaction::new(self, &req, &TxOptions::default());
        for list in self.phase_rules.iter().skip(1) {
            for &i in list {
                let Some(Item::Rule(rule)) = self.rules.items.get(i as usize) else {
                    continue;
                };
                let foldable = crate::fold::tx_reads(rule)
                    .is_some_and(|reads| reads.iter().all(|k| known.is_known(k)));
                if !foldable {
                    known.apply_runtime(rule);
                    continue;
                }
                tx.tx.clone_from(&known.values);
                tx.matched_var = (UNSET.to_string(), Vec::new());
                tx.matched_vars.clear();
                let matched = tx.eval_chain(rule);
                let fold = crate::fold::Fold {
                    matched,
                    writes: crate::fold::diff(&known.values, &tx.tx),
                    matched_var: (tx.matched_var.0 != UNSET).then(|| tx.matched_var.clone()),
                    matched_vars: tx.matched_vars.clone(),
                };
                known.apply_fold(rule, &fold);
                if let Some(slot) = folds.get_mut(i as usize) {
                    *slot = Some(fold);
                }
            }
        }
        folds
    }

    /// Start a transaction for `req`.
    pub fn transaction(&self, req: &Request, opts: &TxOptions) -> Transaction<'_> {
        Transaction::new(self, req, opts)
    }

    /// The tags tag selector `selector` picks (literal or regex, as [`TagSel`]).
    fn tag_bits(&self, selector: &str) -> TagBits {
        match self.ctl_tag_sels.get(selector) {
            Some(b) => b.clone(),
            None => self.compute_tag_bits(selector),
        }
    }

    fn compute_tag_bits(&self, selector: &str) -> TagBits {
        let sel = TagSel::new(selector);
        let mut bits = vec![0u64; self.tag_table.len().div_ceil(64)];
        for (tag, &id) in &self.tag_table {
            if sel.matches(tag) {
                bits[id as usize / 64] |= 1u64 << (id % 64);
            }
        }
        bits.into()
    }

    /// Number of distinct prefilter literals (for diagnostics).
    pub fn prefilter_atoms(&self) -> usize {
        self.prefilter.atom_count()
    }
}

fn content_type_main(v: &[u8]) -> String {
    let s = String::from_utf8_lossy(v).to_ascii_lowercase();
    s.split(';').next().unwrap_or("").trim().to_string()
}

fn truncate(v: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&v[..v.len().min(max)]).into_owned()
}

impl Drop for Transaction<'_> {
    fn drop(&mut self) {
        recycle_caches(std::mem::take(&mut self.caches));
    }
}

impl<'r> Transaction<'r> {
    fn new(eng: &'r Engine, req: &Request, opts: &TxOptions) -> Self {
        let rs = &eng.rules;
        let mut vars = Vars::default();
        let target = req.target.clone();
        // Absolute-form targets: REQUEST_URI drops scheme and authority.
        let uri: Vec<u8> = {
            let lower = target.to_ascii_lowercase();
            if lower.starts_with(b"http://") || lower.starts_with(b"https://") {
                let after = &target[lower.iter().position(|b| *b == b':').unwrap_or(0) + 3..];
                match after.iter().position(|b| *b == b'/') {
                    Some(p) => after[p..].to_vec(),
                    None => b"/".to_vec(),
                }
            } else {
                target.clone()
            }
        };
        let (path, query) = match uri.iter().position(|b| *b == b'?') {
            Some(p) => (&uri[..p], Some(&uri[p + 1..])),
            None => (&uri[..], None),
        };
        // A fragment never reaches a server, but test clients may send one: it ends the path.
        let path = match path.iter().position(|b| *b == b'#') {
            Some(p) => &path[..p],
            None => path,
        };
        let filename = crate::transform::url_decode(path, false);
        let basename = match filename.iter().rposition(|b| *b == b'/' || *b == b'\\') {
            Some(p) => filename[p + 1..].to_vec(),
            None => filename.clone(),
        };
        if let Some(q) = query {
            body::parse_urlencoded(q, &mut vars.args_get);
            vars.args_get.truncate(rs.arguments_limit);
        }
        let s = &mut vars.scalars;
        s.insert("REQUEST_METHOD", req.method.as_bytes().to_vec());
        s.insert("REQUEST_PROTOCOL", req.protocol.as_bytes().to_vec());
        let mut line = req.method.as_bytes().to_vec();
        line.push(b' ');
        line.extend_from_slice(&target);
        line.push(b' ');
        line.extend_from_slice(req.protocol.as_bytes());
        s.insert("REQUEST_LINE", line);
        s.insert("REQUEST_URI", uri.clone());
        s.insert("REQUEST_URI_RAW", target.clone());
        s.insert("REQUEST_FILENAME", filename);
        s.insert("REQUEST_BASENAME", basename);
        s.insert(
            "QUERY_STRING",
            query.map(<[u8]>::to_vec).unwrap_or_default(),
        );
        s.insert("REMOTE_ADDR", req.remote_addr.as_bytes().to_vec());
        s.insert("REMOTE_HOST", req.remote_addr.as_bytes().to_vec());
        s.insert("REMOTE_PORT", req.remote_port.to_string().into_bytes());
        s.insert("SERVER_PORT", req.server_port.to_string().into_bytes());
        s.insert("SERVER_ADDR", b"127.0.0.1".to_vec());
        s.insert("UNIQUE_ID", opts.unique_id.as_bytes().to_vec());
        s.insert("TIME_EPOCH", (opts.now_ms / 1000).to_string().into_bytes());
        s.insert("DURATION", b"0".to_vec());
        s.insert("REQBODY_ERROR", b"0".to_vec());
        s.insert("REQBODY_PROCESSOR_ERROR", b"0".to_vec());
        s.insert("MULTIPART_STRICT_ERROR", b"0".to_vec());
        s.insert("MULTIPART_UNMATCHED_BOUNDARY", b"0".to_vec());
        s.insert("INBOUND_DATA_ERROR", b"0".to_vec());
        s.insert("OUTBOUND_DATA_ERROR", b"0".to_vec());
        let mut full_len = 0usize;
        for (k, v) in &req.headers {
            full_len += k.len() + v.len() + 4;
            vars.headers.push((k.clone(), v.clone()));
            if k.eq_ignore_ascii_case("cookie") {
                for c in v.split(|b| *b == b';') {
                    let c = c.strip_prefix(b" ").unwrap_or(c);
                    if c.is_empty() {
                        continue;
                    }
                    let (name, val) = match c.iter().position(|b| *b == b'=') {
                        Some(p) => (&c[..p], &c[p + 1..]),
                        None => (c, &b""[..]),
                    };
                    vars.cookies.push((
                        String::from_utf8_lossy(name).trim().to_string(),
                        val.to_vec(),
                    ));
                }
            }
            if k.eq_ignore_ascii_case("host") {
                let host = v.split(|b| *b == b':').next().unwrap_or(b"").to_vec();
                vars.scalars.insert("SERVER_NAME", host);
            }
        }
        vars.scalars.insert(
            "FULL_REQUEST_LENGTH",
            (full_len + req.body.len()).to_string().into_bytes(),
        );
        let ct = req
            .header("content-type")
            .map(content_type_main)
            .unwrap_or_default();
        let processor = match ct.as_str() {
            "application/x-www-form-urlencoded" => Some("URLENCODED".to_string()),
            "multipart/form-data" => Some("MULTIPART".to_string()),
            // JSON and XML are parsed by content type, as ModSecurity's recommended
            // configuration (its rules 200000/200001, phase 1) does.
            c if c.contains("json") => Some("JSON".to_string()),
            c if c.ends_with("/xml") || c.ends_with("+xml") => Some("XML".to_string()),
            _ => None,
        };
        let mut t = Self {
            eng,
            rs,
            engine: rs.engine,
            request_body_access: rs.request_body_access,
            body_processor: processor,
            force_body_variable: false,
            removed_ids: Vec::new(),
            removed_tags: Vec::new(),
            removed_targets_by_id: Vec::new(),
            removed_targets_by_tag: Vec::new(),
            active_exclusions: Vec::new(),
            exclusion_mask: 0,
            vars,
            tx: BTreeMap::new(),
            persistent: HashMap::new(),
            matched_var: (String::new(), Vec::new()),
            matched_vars: Vec::new(),
            current_rule: (0, String::new()),
            matched: Vec::new(),
            intervention: None,
            allowed: false,
            phase_done: 0,
            folds_usable: true,
            strs_bytes: 0,
            strs_gen: 0,
            scratch: Vec::new(),
            caches: pooled_caches(),
        };
        t.stash_body(req);
        t
    }

    fn stash_body(&mut self, req: &Request) {
        self.vars.scalars.insert(
            "REQUEST_BODY_LENGTH",
            req.body.len().to_string().into_bytes(),
        );
        self.vars.scalars.insert(
            "REQBODY_PROCESSOR",
            self.body_processor.clone().unwrap_or_default().into_bytes(),
        );
    }

    /// Run phases 1 and 2 on the request (body processed between them).
    pub fn process_request(&mut self, req: &Request) {
        self.run_phase(1);
        if self.intervention.is_none() {
            self.process_body(req);
            self.run_phase(2);
        }
    }

    fn process_body(&mut self, req: &Request) {
        let ct_raw = req.header("content-type").unwrap_or(b"").to_vec();
        self.vars.scalars.insert(
            "REQBODY_PROCESSOR",
            self.body_processor.clone().unwrap_or_default().into_bytes(),
        );
        if !self.request_body_access || req.body.is_empty() {
            return;
        }
        let limit = self.rs.request_body_limit_bytes;
        let b = &req.body[..req.body.len().min(limit)];
        // ModSecurity fills REQUEST_BODY for URL-encoded bodies, or when a rule forces it
        // (CRS 901340 does for bodies no processor understands); XML, JSON and multipart
        // bodies are inspected through their parsed variables instead.
        let force = self.force_body_variable;
        if force || self.body_processor.as_deref() == Some("URLENCODED") {
            self.vars.scalars.insert("REQUEST_BODY", b.to_vec());
        }
        let mut error: Option<String> = None;
        match self.body_processor.as_deref() {
            Some("URLENCODED") => body::parse_urlencoded(b, &mut self.vars.args_post),
            Some("MULTIPART") => {
                let boundary = body::header_param(&ct_raw, "boundary").unwrap_or_default();
                let m = body::parse_multipart(b, &boundary);
                self.vars.args_post.extend(m.args);
                let mut combined = 0usize;
                for (name, fname, size) in m.files {
                    combined += size;
                    self.vars.files.push((name.clone(), fname));
                    self.vars
                        .files_sizes
                        .push((name, size.to_string().into_bytes()));
                }
                self.vars
                    .scalars
                    .insert("FILES_COMBINED_SIZE", combined.to_string().into_bytes());
                self.vars.part_headers = m.part_headers;
                if let Some(e) = m.error {
                    self.vars
                        .scalars
                        .insert("MULTIPART_STRICT_ERROR", b"1".to_vec());
                    error = Some(e);
                }
            }
            Some("JSON") => {
                if let Err(e) = body::parse_json(b, &mut self.vars.args_post) {
                    error = Some(e);
                }
            }
            Some("XML") => match body::parse_xml(b) {
                Ok(x) => self.vars.xml = Some(x),
                Err(e) => error = Some(e),
            },
            _ => {}
        }
        self.vars.args_post.truncate(self.rs.arguments_limit);
        if let Some(e) = error {
            self.vars.scalars.insert("REQBODY_ERROR", b"1".to_vec());
            self.vars
                .scalars
                .insert("REQBODY_PROCESSOR_ERROR", b"1".to_vec());
            self.vars
                .scalars
                .insert("REQBODY_ERROR_MSG", e.into_bytes());
        }
        let combined: usize = self
            .vars
            .args_get
            .iter()
            .chain(self.vars.args_post.iter())
            .map(|(k, v)| k.len() + v.len())
            .sum();
        self.vars
            .scalars
            .insert("ARGS_COMBINED_SIZE", combined.to_string().into_bytes());
    }

    /// Free the transformation caches of the request phases (transformed values, scan
    /// results, gathered target groups). A proxy calls this before it waits for the upstream:
    /// the response phases inspect other values, and a request in flight should hold no
    /// more memory than its own data. Results do not change: the caches refill on demand.
    pub fn release_caches(&mut self) {
        // The allocations go to this thread's pool (bounded), where the next transaction
        // evaluated here takes them.
        recycle_caches(std::mem::take(&mut self.caches));
        self.strs_bytes = 0;
        self.strs_gen += 1;
    }

    /// Run phases 3 and 4 on the response.
    pub fn process_response(&mut self, resp: &Response) {
        if self.intervention.is_some() {
            return;
        }
        if self.caches.strs.capacity() == 0 {
            // The caches were released while the upstream answered: take a pooled set.
            self.caches = pooled_caches();
        }
        let s = &mut self.vars.scalars;
        s.insert("RESPONSE_STATUS", resp.status.to_string().into_bytes());
        s.insert("STATUS", resp.status.to_string().into_bytes());
        s.insert("RESPONSE_PROTOCOL", resp.protocol.as_bytes().to_vec());
        s.insert(
            "STATUS_LINE",
            format!("{} {}", resp.protocol, resp.status).into_bytes(),
        );
        self.vars.resp_headers = resp.headers.clone();
        self.caches.pcache.clear();
        self.caches.clear_groups();
        let ct = resp
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.vars
            .scalars
            .insert("RESPONSE_CONTENT_TYPE", ct.clone());
        self.vars.scalars.insert(
            "RESPONSE_CONTENT_LENGTH",
            resp.body.len().to_string().into_bytes(),
        );
        self.run_phase(3);
        if self.intervention.is_some() {
            return;
        }
        let main = content_type_main(&ct);
        if self.rs.response_body_access
            && (self.rs.response_mime_types.contains(&main)
                || (main.is_empty() && !resp.body.is_empty()))
        {
            let limit = self.rs.response_body_limit_bytes;
            self.vars.scalars.insert(
                "RESPONSE_BODY",
                resp.body[..resp.body.len().min(limit)].to_vec(),
            );
        }
        self.run_phase(4);
    }

    /// Run phase 5.
    pub fn finish(&mut self) {
        let saved = self.intervention.take();
        self.allowed = false;
        self.run_phase(5);
        if saved.is_some() {
            self.intervention = saved;
        }
    }

    /// Apply a configured exclusion before any phase runs: without targets the rules selected
    /// by `ids` or `tags` do not run; with targets, those targets are removed from them (the
    /// same effect as `ctl:ruleRemoveById`/`ruleRemoveByTag`/`ruleRemoveTarget*`).
    pub fn exclude(&mut self, ids: &IdRanges, tags: &[String], targets: &[Target]) {
        // Folding assumed every rule runs with every target.
        self.folds_usable = false;
        if targets.is_empty() {
            if !ids.is_empty() {
                self.removed_ids.push(ids.clone());
            }
            for t in tags {
                let bits = self.eng.tag_bits(t);
                self.removed_tags.push(bits);
            }
            return;
        }
        for t in targets {
            if !ids.is_empty() {
                self.removed_targets_by_id.push((ids.clone(), t.clone()));
            }
            for tag in tags {
                let bits = self.eng.tag_bits(tag);
                self.removed_targets_by_tag.push((bits, t.clone()));
            }
        }
    }

    /// A TX variable's value.
    pub fn tx_var(&self, key: &str) -> Option<&[u8]> {
        self.tx.get(&key.to_ascii_lowercase()).map(Vec::as_slice)
    }

    /// The engine mode in force (after `ctl:ruleEngine`).
    pub fn engine_mode(&self) -> EngineMode {
        self.engine
    }

    fn rule_removed(&self, rule: &Rule) -> bool {
        let id = rule.id();
        self.removed_ids.iter().any(|r| in_ranges(r, id))
            || self
                .removed_tags
                .iter()
                .any(|bits| has_selected_tag(bits, &rule.tag_ids))
    }

    fn run_phase(&mut self, phase: u8) {
        if self.engine == EngineMode::Off || self.phase_done >= phase {
            return;
        }
        if phase != self.phase_done + 1 {
            // A phase did not run (a response was never seen, or an earlier phase stopped):
            // the folded effects assumed it did.
            self.folds_usable = false;
        }
        self.phase_done = phase;
        // Scalars are set between phases: their cached transformations start over.
        self.caches.scache.clear();
        self.caches.clear_groups();
        if self.allowed && phase < 5 {
            return;
        }
        let rs = self.rs;
        let eng = self.eng;
        let Some(list) = eng.phase_rules.get(usize::from(phase)) else {
            return;
        };
        let mut pos = 0;
        let mut skip = 0u32;
        while pos < list.len() {
            let i = list[pos] as usize;
            let Some(Item::Rule(rule)) = rs.items.get(i) else {
                pos += 1;
                continue;
            };
            if skip > 0 {
                skip -= 1;
                pos += 1;
                continue;
            }
            if self.rule_removed(rule) {
                pos += 1;
                continue;
            }
            let fold = if self.folds_usable {
                eng.folds.get(i).and_then(Option::as_ref)
            } else {
                None
            };
            let matched = match fold {
                Some(f) => self.apply_fold(rule, f),
                None => self.eval_chain(rule),
            };
            if !matched {
                pos += 1;
                continue;
            }
            self.record(rule, phase);
            if self.engine == EngineMode::Off {
                return;
            }
            let a = &rule.actions;
            match a.disruptive {
                Some(Disruptive::Deny | Disruptive::Drop | Disruptive::Redirect)
                    if self.engine == EngineMode::On && phase < 5 =>
                {
                    let action = a.disruptive.unwrap_or(Disruptive::Deny);
                    self.intervention = Some(Intervention {
                        status: a.status.unwrap_or(if action == Disruptive::Redirect {
                            302
                        } else {
                            403
                        }),
                        rule_id: rule.id(),
                        phase,
                        action,
                    });
                    return;
                }
                Some(Disruptive::Allow) if self.engine == EngineMode::On => {
                    self.allowed = true;
                    return;
                }
                _ => {}
            }
            if a.skip_after.is_some() {
                match eng.skip_targets.get(i).copied().flatten() {
                    Some(idx) if idx > i => {
                        // The first rule of this phase after the marker.
                        pos = list.partition_point(|&r| (r as usize) <= idx);
                        continue;
                    }
                    // A marker behind us or missing: skip to the end of the phase.
                    _ => return,
                }
            }
            skip = a.skip;
            pos += 1;
        }
    }

    fn record(&mut self, rule: &Rule, phase: u8) {
        let a = &rule.actions;
        self.current_rule = (rule.id(), String::new());
        let logged = a.log != Some(false);
        if !logged {
            // Nothing reads a `nolog` match beyond its id (events, the CRS harness and the
            // corpus runner all keep logged matches only): skip msg, logdata, tags and data.
            // (`current_rule` is reset by the next chain before anything reads `RULE.msg`.)
            self.matched.push(MatchedRule {
                id: rule.id(),
                phase,
                msg: String::new(),
                logdata: String::new(),
                severity: a.severity,
                tags: Vec::new(),
                logged,
                matched_var_name: String::new(),
                matched_data: String::new(),
            });
            return;
        }
        let msg = a
            .msg
            .as_ref()
            .map(|m| String::from_utf8_lossy(&self.expand(m)).into_owned())
            .unwrap_or_default();
        self.current_rule.1 = msg.clone();
        let logdata = a
            .logdata
            .as_ref()
            .map(|m| truncate(&self.expand(m), 512))
            .unwrap_or_default();
        self.matched.push(MatchedRule {
            id: rule.id(),
            phase,
            msg,
            logdata,
            severity: a.severity,
            tags: a.tags.clone(),
            logged,
            matched_var_name: self.matched_var.0.clone(),
            matched_data: truncate(&self.matched_var.1, MATCHED_DATA_MAX_BYTES),
        });
    }

    /// Apply a folded chain's recorded effect, as `eval_chain` would have produced it.
    fn apply_fold(&mut self, rule: &Rule, f: &crate::fold::Fold) -> bool {
        self.current_rule.0 = rule.id();
        self.current_rule.1.clear();
        self.active_exclusions.clear();
        self.exclusion_mask = 0;
        for (k, v) in &f.writes {
            match v {
                Some(v) => match self.tx.get_mut(k) {
                    Some(slot) => {
                        slot.clear();
                        slot.extend_from_slice(v);
                    }
                    None => {
                        self.tx.insert(k.clone(), v.clone());
                    }
                },
                None => {
                    self.tx.remove(k);
                }
            }
        }
        if let Some((name, value)) = &f.matched_var {
            self.matched_var.0.clone_from(name);
            self.matched_var.1.clone_from(value);
        }
        if !rule.actions.ctls.is_empty() {
            // A lone `SecAction` (see `crate::fold::tx_reads`): its ctls run after its
            // setvars, as in `eval_link`.
            self.run_ctls(rule);
        }
        self.matched_vars.truncate(f.matched_vars.len());
        for (j, (name, value)) in f.matched_vars.iter().enumerate() {
            match self.matched_vars.get_mut(j) {
                Some(slot) => {
                    slot.0.clone_from(name);
                    slot.1.clone_from(value);
                }
                None => self.matched_vars.push((name.clone(), value.clone())),
            }
        }
        f.matched
    }

    /// Evaluate a chain; true when every link matched.
    fn eval_chain(&mut self, rule: &'r Rule) -> bool {
        self.current_rule = (rule.id(), String::new());
        self.matched_vars.clear();
        let starter_id = rule.id();
        self.resolve_exclusions(starter_id, &rule.tag_ids);
        let mut link: &'r Rule = rule;
        loop {
            if !self.eval_link(link) {
                return false;
            }
            match &link.chained {
                Some(next) => link = next,
                None => return true,
            }
        }
    }

    fn target_excluded(&self, rule: &Rule, coll: &str, key: &str) -> bool {
        rule.targets
            .iter()
            .any(|t| t.exclude && t.excludes(coll, key))
            || self
                .active_exclusions
                .iter()
                .any(|&e| self.exclusion_target(e).excludes(coll, key))
    }

    /// The runtime target exclusions (`ctl:ruleRemoveTarget*`) that apply to this chain,
    /// resolved once per rule instead of once per value.
    fn resolve_exclusions(&mut self, starter_id: u64, tag_ids: &[u32]) {
        self.active_exclusions.clear();
        self.exclusion_mask = 0;
        for (i, (r, _)) in self.removed_targets_by_id.iter().enumerate() {
            if in_ranges(r, starter_id) {
                self.active_exclusions.push(i as u32);
                self.exclusion_mask |= exclusion_bit(i, 0);
            }
        }
        for (j, (bits, _)) in self.removed_targets_by_tag.iter().enumerate() {
            if has_selected_tag(bits, tag_ids) {
                self.active_exclusions.push(EXCLUSION_TAG_BASE + j as u32);
                self.exclusion_mask |= exclusion_bit(j, 32);
            }
        }
    }

    /// The target an active exclusion removes.
    fn exclusion_target(&self, e: u32) -> &Target {
        match e.checked_sub(EXCLUSION_TAG_BASE) {
            Some(j) => &self.removed_targets_by_tag[j as usize].1,
            None => &self.removed_targets_by_id[e as usize].1,
        }
    }

    /// Gather (name, value) for a target, honouring exclusions.
    fn gather(
        &self,
        rule: &Rule,
        t: &Target,
        prev_matched: &[(String, Vec<u8>)],
        out: &mut Vec<Val>,
    ) {
        let name = t.name.as_str();
        let sel = t.key.as_ref();
        let start = out.len();
        let keyed = |src: Src, coll: &'static str, names: bool, out: &mut Vec<Val>| {
            for (idx, (k, _)) in self.pairs(src).iter().enumerate() {
                if sel.is_some_and(|s| !s.matches(k)) {
                    continue;
                }
                if self.target_excluded(rule, coll, k) {
                    continue;
                }
                out.push(Val::Pair {
                    coll,
                    src,
                    idx,
                    names,
                });
            }
        };
        let v = &self.vars;
        match name {
            "ARGS" => {
                keyed(Src::ArgsGet, "ARGS", false, out);
                keyed(Src::ArgsPost, "ARGS", false, out);
            }
            "ARGS_GET" => keyed(Src::ArgsGet, "ARGS_GET", false, out),
            "ARGS_POST" => keyed(Src::ArgsPost, "ARGS_POST", false, out),
            "ARGS_NAMES" => {
                keyed(Src::ArgsGet, "ARGS_NAMES", true, out);
                keyed(Src::ArgsPost, "ARGS_NAMES", true, out);
            }
            "ARGS_GET_NAMES" => keyed(Src::ArgsGet, "ARGS_GET_NAMES", true, out),
            "ARGS_POST_NAMES" => keyed(Src::ArgsPost, "ARGS_POST_NAMES", true, out),
            "REQUEST_HEADERS" => keyed(Src::Headers, "REQUEST_HEADERS", false, out),
            "REQUEST_HEADERS_NAMES" => keyed(Src::Headers, "REQUEST_HEADERS_NAMES", true, out),
            "REQUEST_COOKIES" => keyed(Src::Cookies, "REQUEST_COOKIES", false, out),
            "REQUEST_COOKIES_NAMES" => keyed(Src::Cookies, "REQUEST_COOKIES_NAMES", true, out),
            "FILES" => keyed(Src::Files, "FILES", false, out),
            "FILES_NAMES" => keyed(Src::Files, "FILES_NAMES", true, out),
            "FILES_SIZES" => keyed(Src::FilesSizes, "FILES_SIZES", false, out),
            "MULTIPART_PART_HEADERS" => {
                keyed(Src::PartHeaders, "MULTIPART_PART_HEADERS", false, out)
            }
            "RESPONSE_HEADERS" => keyed(Src::RespHeaders, "RESPONSE_HEADERS", false, out),
            "RESPONSE_HEADERS_NAMES" => {
                keyed(Src::RespHeaders, "RESPONSE_HEADERS_NAMES", true, out)
            }
            "ENV" => keyed(Src::Env, "ENV", false, out),
            "MATCHED_VARS" => {
                for (k, val) in prev_matched {
                    if sel.is_some_and(|s| !s.matches(k)) {
                        continue;
                    }
                    if self.target_excluded(rule, "MATCHED_VARS", k) {
                        continue;
                    }
                    out.push(Val::Owned(format!("MATCHED_VARS:{k}"), val.clone()));
                }
            }
            "MATCHED_VARS_NAMES" => {
                for (k, _) in prev_matched {
                    if sel.is_none_or(|s| s.matches(k)) {
                        out.push(Val::Owned(
                            format!("MATCHED_VARS_NAMES:{k}"),
                            k.as_bytes().to_vec(),
                        ));
                    }
                }
            }
            "MATCHED_VAR" => {
                if !self.matched_var.0.is_empty() {
                    out.push(Val::Owned("MATCHED_VAR".into(), self.matched_var.1.clone()));
                }
            }
            "MATCHED_VAR_NAME" => {
                if !self.matched_var.0.is_empty() {
                    out.push(Val::Owned(
                        "MATCHED_VAR_NAME".into(),
                        self.matched_var.0.as_bytes().to_vec(),
                    ));
                }
            }
            "TX" if matches!(sel, Some(KeySel::Name(_))) => {
                // One named key: a lookup instead of a walk over every TX variable (the
                // paranoia-level gates of every CRS file read TX this way).
                if let Some(KeySel::Name(n)) = sel {
                    let lower;
                    let key: &str = if n.bytes().any(|b| b.is_ascii_uppercase()) {
                        lower = n.to_ascii_lowercase();
                        &lower
                    } else {
                        n
                    };
                    if let Some((k, val)) = self.tx.get_key_value(key) {
                        if !self.target_excluded(rule, "TX", k) {
                            out.push(Val::Owned(format!("TX:{k}"), val.clone()));
                        }
                    }
                }
            }
            "TX" => {
                // TX keys are lower case and sorted: a key regex anchored on a literal prefix
                // (`TX:/^header_name_920450_/`) can only match keys in that range.
                let prefix = match sel {
                    Some(KeySel::Regex(re, _)) => anchored_prefix(re.as_str()),
                    _ => None,
                };
                let keys: Box<dyn Iterator<Item = (&String, &Vec<u8>)>> = match &prefix {
                    Some(p) => Box::new(
                        self.tx
                            .range::<str, _>((
                                std::ops::Bound::Included(p.as_str()),
                                std::ops::Bound::Unbounded,
                            ))
                            .take_while(|(k, _)| k.starts_with(p.as_str())),
                    ),
                    None => Box::new(self.tx.iter()),
                };
                for (k, val) in keys {
                    if sel.is_some_and(|s| !s.matches(k)) {
                        continue;
                    }
                    if self.target_excluded(rule, "TX", k) {
                        continue;
                    }
                    out.push(Val::Owned(format!("TX:{k}"), val.clone()));
                }
            }
            "IP" | "GLOBAL" | "SESSION" | "USER" | "RESOURCE" => {
                if let Some(m) = self.persistent.get(name) {
                    for (k, val) in m {
                        if sel.is_none_or(|s| s.matches(k)) {
                            out.push(Val::Owned(format!("{name}:{k}"), val.clone()));
                        }
                    }
                }
            }
            "XML" => {
                if let Some(x) = &v.xml {
                    let xpath = match sel {
                        Some(KeySel::XPath(p)) => p.as_str(),
                        _ => "/*",
                    };
                    if xpath.contains('@') {
                        for a in &x.attrs {
                            out.push(Val::Owned(format!("XML:{xpath}"), a.clone()));
                        }
                    } else {
                        out.push(Val::Owned(format!("XML:{xpath}"), x.text.clone()));
                    }
                }
            }
            "RULE" => {
                let val = match sel {
                    Some(KeySel::Name(k)) if k == "id" => self.current_rule.0.to_string(),
                    Some(KeySel::Name(k)) if k == "msg" => self.current_rule.1.clone(),
                    _ => String::new(),
                };
                out.push(Val::Owned("RULE".into(), val.into_bytes()));
            }
            "GEO" => {}
            scalar => {
                if let Some((name, _)) = v.scalars.get_key_value(scalar) {
                    if !self.target_excluded(rule, scalar, "") {
                        out.push(Val::Scalar(name));
                    }
                }
            }
        }
        if t.count {
            let n = out.len() - start;
            out.truncate(start);
            out.push(Val::Owned(format!("&{name}"), n.to_string().into_bytes()));
        }
    }

    fn pairs(&self, src: Src) -> &Pairs {
        let v = &self.vars;
        match src {
            Src::ArgsGet => &v.args_get,
            Src::ArgsPost => &v.args_post,
            Src::Headers => &v.headers,
            Src::Cookies => &v.cookies,
            Src::Files => &v.files,
            Src::FilesSizes => &v.files_sizes,
            Src::PartHeaders => &v.part_headers,
            Src::RespHeaders => &v.resp_headers,
            Src::Env => &v.env,
        }
    }

    fn val_bytes<'a>(&'a self, v: &'a Val) -> &'a [u8] {
        match v {
            Val::Pair {
                src, idx, names, ..
            } => match self.pairs(*src).get(*idx) {
                Some((k, val)) => {
                    if *names {
                        k.as_bytes()
                    } else {
                        val.as_slice()
                    }
                }
                None => &[],
            },
            Val::Scalar(n) => self.vars.scalars.get(n).map_or(&[], Vec::as_slice),
            Val::Owned(_, b) => b.as_slice(),
        }
    }

    fn val_name(&self, v: &Val) -> String {
        match v {
            Val::Pair { coll, src, idx, .. } => {
                let k = self.pairs(*src).get(*idx).map_or("", |(k, _)| k.as_str());
                format!("{coll}:{k}")
            }
            Val::Scalar(n) => (*n).to_string(),
            Val::Owned(n, _) => n.clone(),
        }
    }

    /// Add a derived string; past the byte budget every cache starts over first.
    fn push_str(&mut self, v: Vec<u8>) -> u32 {
        // Equal contents share one id, so each distinct string is scanned once.
        let h = fnv1a(&v);
        if let Some(&id) = self.caches.str_ids.get(&h) {
            if self.caches.strs.get(id as usize).is_some_and(|s| *s == v) {
                return id;
            }
        }
        if self.strs_bytes + v.len() > STRS_MAX_BYTES
            || self.caches.strs.len() >= NO_STR as usize - 1
        {
            // The scratch buffers it also empties are taken out while in use.
            self.caches.clear();
            self.strs_gen += 1;
            self.strs_bytes = 0;
        }
        self.strs_bytes += v.len();
        self.caches.strs.push(v);
        self.caches.str_atoms.push(NO_STR);
        self.caches.scan_alias.push(NO_STR);
        let id = (self.caches.strs.len() - 1) as u32;
        self.caches.str_ids.entry(h).or_insert(id);
        id
    }

    /// The string id of value `v` after transformation chain `chain`, computed once per
    /// transaction; `None` for values that are not cached (TX, MATCHED_VARS, …: they change
    /// while rules run).
    fn resolve(&mut self, v: &Val, chain: u32) -> Option<u32> {
        let slot = match v {
            Val::Pair {
                src, idx, names, ..
            } => Some((idx * 2 + usize::from(*names)) * NSRC + *src as usize),
            Val::Scalar(_) => None,
            Val::Owned(..) => return None,
        };
        let skey = match v {
            Val::Scalar(n) => (n.as_ptr() as usize, chain),
            _ => (0, 0),
        };
        let cached = match slot {
            Some(sl) => self
                .caches
                .pcache
                .get(chain as usize)
                .and_then(|c| c.get(sl))
                .copied()
                .filter(|x| *x != NO_STR),
            None => self.caches.scache.get(&skey).copied(),
        };
        if let Some(id) = cached {
            return Some(id);
        }
        let id = if chain == 0 {
            let raw = self.val_bytes(v).to_vec();
            self.push_str(raw)
        } else {
            let (parent, t) = self.eng.chains.get(chain as usize).copied()?;
            let p = self.resolve(v, parent)?;
            let changed = match t {
                Some(t) => t.apply_changed(&self.caches.strs[p as usize]),
                None => None,
            };
            match changed {
                Some(out) => {
                    let gen_before = self.strs_gen;
                    let fresh = self.caches.strs.len();
                    let id = self.push_str(out);
                    if matches!(t, Some(Transform::Lowercase | Transform::Uppercase))
                        && self.strs_gen == gen_before
                        && id as usize == fresh
                    {
                        // A new string that differs from `p` only in ASCII case: same scan.
                        self.caches.scan_alias[fresh] = p;
                    }
                    id
                }
                None => p,
            }
        };
        match slot {
            Some(sl) => {
                let c = chain as usize;
                if self.caches.pcache.len() <= c {
                    self.caches.pcache.resize_with(c + 1, Vec::new);
                }
                let row = &mut self.caches.pcache[c];
                if row.len() <= sl {
                    row.resize(sl + 1, NO_STR);
                }
                row[sl] = id;
            }
            None => {
                self.caches.scache.insert(skey, id);
            }
        }
        Some(id)
    }

    /// Whether `v`'s transformations are cached (request/response collections and scalars).
    fn cacheable(&self, v: &Val) -> bool {
        !matches!(v, Val::Owned(..))
    }

    /// Whether the link's required literals occur in string `id` (always true without a
    /// prefilter).
    fn prefilter_passes(&mut self, link: &Rule, id: u32) -> bool {
        let Some(filter) = &link.prefilter else {
            return true;
        };
        let fid = self.found_id(id);
        let (found, verdicts) = &mut self.caches.founds[fid as usize];
        let bit = filter.id as usize * 2;
        let (w, b) = (bit / 64, bit % 64);
        if let Some(v) = verdicts.get(w) {
            if v & (1u64 << b) != 0 {
                return v & (1u64 << (b + 1)) != 0;
            }
        }
        let pass = filter.passes(found);
        if verdicts.len() <= w {
            verdicts.resize(w + 1, 0);
        }
        verdicts[w] |= (1u64 << b) | (u64::from(pass) << (b + 1));
        pass
    }

    /// The index in `founds` of string `id`'s scan result (scanning it on first need, or
    /// taking the result of the string it is an ASCII-case variant of).
    fn found_id(&mut self, id: u32) -> u32 {
        let i = id as usize;
        let mut fid = self.caches.str_atoms.get(i).copied().unwrap_or(NO_STR);
        if fid == NO_STR {
            let alias = self.caches.scan_alias.get(i).copied().unwrap_or(NO_STR);
            if alias < id {
                // Aliases point to older strings only, so this ends.
                let f = self.found_id(alias);
                self.caches.str_atoms[i] = f;
                return f;
            }
            let found = self.eng.prefilter.scan(&self.caches.strs[i]);
            let sig = found.signature();
            fid = match self.caches.found_ids.get(&sig) {
                Some(&f) if self.caches.founds[f as usize].0.same_as(&found) => f,
                _ => {
                    let f = self.caches.founds.len() as u32;
                    self.caches.founds.push((found, Vec::new()));
                    self.caches.found_ids.entry(sig).or_insert(f);
                    f
                }
            };
            self.caches.str_atoms[i] = fid;
        }
        fid
    }

    /// The values of `link`'s target group and their string ids after its transformation
    /// chain, gathered once per phase; `None` when they must be gathered per rule.
    fn group_values(&mut self, link: &Rule) -> Option<GroupVals> {
        let g = link.target_group;
        if g == u32::MAX
            || self.exclusion_mask == EXCLUSIONS_UNCACHED
            || (self.vars.xml.is_some()
                && self
                    .eng
                    .group_has_xml
                    .get(g as usize)
                    .copied()
                    .unwrap_or(true))
        {
            return None;
        }
        // The exclusions in force are part of the key: chains that share targets and
        // exclusions (CRS's xss-perf-disable rules after 941010) share the gathered values.
        let key = (g, link.chain_id, self.exclusion_mask);
        if let Some(&c) = self.caches.gcache.get(&key) {
            return Some(c);
        }
        // Gathering depends on the targets and exclusions only, not on the `t:` chain.
        let gkey = (g, self.exclusion_mask);
        let (gstart, glen) = match self.caches.gathered.get(&gkey) {
            Some(&r) => r,
            None => {
                let mut values = std::mem::take(&mut self.caches.gather_buf);
                values.clear();
                for t in link.targets.iter().filter(|t| !t.exclude) {
                    self.gather(link, t, &[], &mut values);
                }
                if !values.iter().all(|v| self.cacheable(v)) {
                    self.caches.gather_buf = values;
                    return None;
                }
                let start = self.caches.gathered_vals.len();
                self.caches.gathered_vals.append(&mut values);
                self.caches.gather_buf = values;
                let r = (
                    start as u32,
                    (self.caches.gathered_vals.len() - start) as u32,
                );
                self.caches.gathered.insert(gkey, r);
                r
            }
        };
        let gen_before = self.strs_gen;
        let start = self.caches.gvals.len();
        let mut complete = true;
        for i in gstart as usize..(gstart + glen) as usize {
            let v = self.caches.gathered_vals[i].clone();
            let Some(id) = self.resolve(&v, link.chain_id) else {
                complete = false;
                break;
            };
            if self.strs_gen != gen_before {
                // `resolve` started the caches over (`gathered_vals` is empty now).
                complete = false;
                break;
            }
            self.caches.gvals.push((i as u32, id));
        }
        if self.strs_gen != gen_before {
            // The string budget ran out while resolving and the caches started over: the
            // ids gathered before that are stale, and no cached range refers to `gvals`.
            self.caches.gvals.clear();
            return None;
        }
        if !complete {
            self.caches.gvals.truncate(start);
            return None;
        }
        let range = (start as u32, (self.caches.gvals.len() - start) as u32);
        self.caches.gcache.insert(key, range);
        Some(range)
    }

    /// A link that reads one named TX variable (or its count) with no transformation,
    /// capture or multiMatch: the paranoia-level gates and setup checks CRS runs in every
    /// phase. The operator runs on the stored value without copying it and a match is written
    /// into the reused `MATCHED_VAR(S)` buffers; the result, the variables and the actions run
    /// are those of the general path (no value: no match; one value). `None` when the link
    /// has another shape.
    fn eval_tx_link(&mut self, link: &'r Rule, op: &Operator) -> Option<bool> {
        let [t] = link.targets.as_slice() else {
            return None;
        };
        let a = &link.actions;
        if t.exclude
            || t.name != "TX"
            || !a.transforms.is_empty()
            || a.capture
            || a.multi_match
            || !self.active_exclusions.is_empty()
        {
            return None;
        }
        let Some(KeySel::Name(key)) = &t.key else {
            return None;
        };
        if key.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let found = self.tx.get_key_value(key.as_str());
        let value: &[u8] = match (t.count, found) {
            (true, Some(_)) => b"1",
            (true, None) => b"0",
            (false, Some((_, v))) => v,
            (false, None) => return Some(false),
        };
        if !op.eval(value, &*self, None) {
            return Some(false);
        }
        let mv = &mut self.matched_var;
        mv.0.clear();
        match found {
            Some((k, _)) if !t.count => {
                mv.0.push_str("TX:");
                mv.0.push_str(k);
            }
            _ => mv.0.push_str("&TX"),
        }
        mv.1.clear();
        mv.1.extend_from_slice(value);
        self.matched_vars.truncate(1);
        if self.matched_vars.is_empty() {
            self.matched_vars.push((String::new(), Vec::new()));
        }
        let entry = &mut self.matched_vars[0];
        entry.0.clone_from(&self.matched_var.0);
        entry.1.clone_from(&self.matched_var.1);
        self.run_setvars(link);
        self.run_ctls(link);
        Some(true)
    }

    // The value loop indexes `values` or the cached group in `gvals`, whichever holds them.
    #[allow(clippy::needless_range_loop)]
    fn eval_link(&mut self, link: &'r Rule) -> bool {
        let Some(op) = &link.op else {
            // SecAction: always matches.
            self.run_link_actions(link);
            return true;
        };
        if let Some(matched) = self.eval_tx_link(link, op) {
            return matched;
        }
        let prev = std::mem::take(&mut self.matched_vars);
        let mut values: Vec<Val> = std::mem::take(&mut self.caches.values_buf);
        values.clear();
        let transforms = &link.actions.transforms;
        let multi = link.actions.multi_match && !transforms.is_empty();
        let cached = if multi { None } else { self.group_values(link) };
        // A cached group's values stay in `gvals` through this loop: only resolving a value
        // that is not cached or a `ctl` (after the loop) can start the caches over.
        let gen_at_start = self.strs_gen;
        if cached.is_none() {
            for t in link.targets.iter().filter(|t| !t.exclude) {
                self.gather(link, t, &prev, &mut values);
            }
        }
        let mut any = false;
        let mut new_matched: Vec<(String, Vec<u8>)> = Vec::new();
        let want_caps = link.actions.capture;
        let count = cached.map_or(values.len(), |(_, len)| len as usize);
        for i in 0..count {
            // The value is borrowed by index where it is used, so that a cached group is not
            // copied out of `gvals`; `values` is empty when the group is cached.
            let known_id = cached.map(|(start, _)| self.caches.gvals[start as usize + i].1);
            // (matched value, captures) when the operator matched this value.
            let hit: Option<(Vec<u8>, Vec<Vec<u8>>)> = if multi && self.cacheable(&values[i]) {
                // The original value and every intermediate value that changed: the distinct
                // string ids along the chain, shortest prefix first.
                let mut ids = Vec::new();
                let mut c = link.chain_id;
                loop {
                    if let Some(id) = self.resolve(&values[i], c) {
                        if ids.last() != Some(&id) {
                            ids.push(id);
                        }
                    }
                    if c == 0 {
                        break;
                    }
                    c = self.eng.chains.get(c as usize).map_or(0, |x| x.0);
                }
                let mut found = None;
                for id in ids.into_iter().rev() {
                    let raw = self.prefilter_passes(link, id);
                    let cand: &[u8] = &self.caches.strs[id as usize];
                    let mut caps = Vec::new();
                    let m = if raw {
                        op.eval(cand, &*self, want_caps.then_some(&mut caps))
                    } else {
                        op.negated
                    };
                    if m {
                        found = Some((cand.to_vec(), caps));
                        break;
                    }
                }
                found
            } else if multi {
                let cands = transformed(self.val_bytes(&values[i]), transforms, true);
                let mut found = None;
                for cand in cands {
                    let mut caps = Vec::new();
                    if op.eval(&cand, &*self, want_caps.then_some(&mut caps)) {
                        found = Some((cand, caps));
                        break;
                    }
                }
                found
            } else if let Some(id) = known_id.or_else(|| self.resolve(&values[i], link.chain_id)) {
                if !self.prefilter_passes(link, id) {
                    // The regex cannot match: the operator's raw result is false.
                    op.negated
                        .then(|| (self.caches.strs[id as usize].clone(), Vec::new()))
                } else {
                    let cand: &[u8] = &self.caches.strs[id as usize];
                    let mut caps = Vec::new();
                    op.eval(cand, &*self, want_caps.then_some(&mut caps))
                        .then(|| (cand.to_vec(), caps))
                }
            } else {
                let cand = transformed(self.val_bytes(&values[i]), transforms, false)
                    .pop()
                    .unwrap_or_default();
                let mut caps = Vec::new();
                op.eval(&cand, &*self, want_caps.then_some(&mut caps))
                    .then_some((cand, caps))
            };
            let Some((cand, caps)) = hit else {
                continue;
            };
            any = true;
            if want_caps && !caps.is_empty() {
                for (i, c) in caps.into_iter().enumerate() {
                    self.tx.insert(i.to_string(), c);
                }
            }
            let name = match cached {
                Some((start, _)) => {
                    debug_assert_eq!(self.strs_gen, gen_at_start, "cached group values moved");
                    let gi = self.caches.gvals[start as usize + i].0 as usize;
                    self.val_name(&self.caches.gathered_vals[gi])
                }
                None => self.val_name(&values[i]),
            };
            new_matched.push((name.clone(), cand.clone()));
            self.matched_var = (name, cand);
            // Non-disruptive actions run once per matched value (ModSecurity v3).
            self.run_setvars(link);
        }
        self.caches.values_buf = values;
        if any {
            self.matched_vars = new_matched;
            self.run_ctls(link);
        } else {
            self.matched_vars = prev;
        }
        any
    }

    fn run_link_actions(&mut self, link: &Rule) {
        self.run_setvars(link);
        self.run_ctls(link);
    }

    fn run_setvars(&mut self, link: &Rule) {
        // Values are expanded into one reused buffer and copied into the existing slot, so a
        // setvar on a variable that exists allocates nothing.
        let mut buf = std::mem::take(&mut self.scratch);
        for sv in &link.actions.setvars {
            // A literal lower-case key (most CRS setvars) is used as written, without a copy.
            let key: std::borrow::Cow<'_, str> = match sv.key.parts.as_slice() {
                [MacroPart::Lit(l)] if !l.bytes().any(|b| b.is_ascii_uppercase()) => {
                    std::borrow::Cow::Borrowed(l.as_str())
                }
                _ => std::borrow::Cow::Owned(
                    String::from_utf8_lossy(&self.expand(&sv.key)).to_ascii_lowercase(),
                ),
            };
            buf.clear();
            let delete = match &sv.op {
                SetVarOp::Delete => true,
                SetVarOp::Set(m) => {
                    self.expand_into(m, &mut buf);
                    false
                }
                SetVarOp::Add(m) | SetVarOp::Sub(m) => {
                    self.expand_into(m, &mut buf);
                    let delta = crate::ops::to_int(&buf);
                    let cur = self
                        .coll_get(&sv.collection, &key)
                        .map(|v| crate::ops::to_int(v))
                        .unwrap_or(0);
                    let v = if matches!(sv.op, SetVarOp::Add(_)) {
                        cur.saturating_add(delta)
                    } else {
                        cur.saturating_sub(delta)
                    };
                    buf.clear();
                    push_int(&mut buf, v);
                    false
                }
            };
            let store = if sv.collection == "TX" {
                &mut self.tx
            } else {
                self.persistent.entry(sv.collection.clone()).or_default()
            };
            if delete {
                store.remove(&*key);
            } else {
                match store.get_mut(&*key) {
                    Some(slot) => {
                        slot.clear();
                        slot.extend_from_slice(&buf);
                    }
                    None => {
                        store.insert(key.into_owned(), buf.clone());
                    }
                }
            }
        }
        self.scratch = buf;
    }

    fn coll_get(&self, coll: &str, key: &str) -> Option<&Vec<u8>> {
        if coll == "TX" {
            self.tx.get(key)
        } else {
            self.persistent.get(coll).and_then(|m| m.get(key))
        }
    }

    fn run_ctls(&mut self, link: &Rule) {
        for c in &link.actions.ctls {
            match c {
                Ctl::RuleEngine(m) => self.engine = *m,
                Ctl::RuleRemoveById(r) => self.removed_ids.push(r.clone()),
                Ctl::RuleRemoveByTag(t) => {
                    let bits = self.eng.tag_bits(t);
                    self.removed_tags.push(bits)
                }
                Ctl::RuleRemoveTargetById(r, t) => {
                    self.folds_usable &= !removes_tx(t);
                    self.removed_targets_by_id.push((r.clone(), t.clone()))
                }
                Ctl::RuleRemoveTargetByTag(tag, t) => {
                    self.folds_usable &= !removes_tx(t);
                    let bits = self.eng.tag_bits(tag);
                    self.removed_targets_by_tag.push((bits, t.clone()))
                }
                Ctl::RequestBodyProcessor(p) => {
                    self.caches.scache.clear();
                    self.caches.clear_groups();
                    self.body_processor = Some(p.clone());
                    self.vars
                        .scalars
                        .insert("REQBODY_PROCESSOR", p.clone().into_bytes());
                }
                Ctl::RequestBodyAccess(on) => self.request_body_access = *on,
                Ctl::ForceRequestBodyVariable(on) => self.force_body_variable = *on,
                Ctl::Ignored => {}
            }
        }
    }

    /// Append the value of macro `%{name.key}` to `out`.
    fn lookup_macro_into(&self, name: &str, key: Option<&str>, out: &mut Vec<u8>) {
        match (name, key) {
            ("TX", Some(k)) => {
                if let Some(v) = self.tx.get(&*lower(k)) {
                    out.extend_from_slice(v);
                }
            }
            ("MATCHED_VAR", None) => out.extend_from_slice(&self.matched_var.1),
            ("MATCHED_VAR_NAME", None) => out.extend_from_slice(self.matched_var.0.as_bytes()),
            ("RULE", Some(k)) => match &*lower(k) {
                "id" => push_uint(out, self.current_rule.0),
                "msg" => out.extend_from_slice(self.current_rule.1.as_bytes()),
                _ => {}
            },
            (coll @ ("IP" | "GLOBAL" | "SESSION" | "USER" | "RESOURCE"), Some(k)) => {
                if let Some(v) = self.persistent.get(coll).and_then(|m| m.get(&*lower(k))) {
                    out.extend_from_slice(v);
                }
            }
            (coll, key) => {
                let pairs: Option<&Pairs> = match coll {
                    "REQUEST_HEADERS" => Some(&self.vars.headers),
                    "REQUEST_COOKIES" => Some(&self.vars.cookies),
                    "ARGS" | "ARGS_GET" => Some(&self.vars.args_get),
                    "ARGS_POST" => Some(&self.vars.args_post),
                    "RESPONSE_HEADERS" => Some(&self.vars.resp_headers),
                    _ => None,
                };
                let found = match (pairs, key) {
                    (Some(p), Some(k)) => p
                        .iter()
                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v)
                        .or_else(|| {
                            (coll == "ARGS")
                                .then(|| {
                                    self.vars
                                        .args_post
                                        .iter()
                                        .find(|(n, _)| n.eq_ignore_ascii_case(k))
                                        .map(|(_, v)| v)
                                })
                                .flatten()
                        }),
                    _ => self.vars.scalars.get(coll),
                };
                if let Some(v) = found {
                    out.extend_from_slice(v);
                }
            }
        }
    }
}

/// The lower-case literal every key matched by case-insensitive key regex `pattern` starts
/// with, when the pattern is anchored (`^`) and has no alternation; `None` otherwise.
fn anchored_prefix(pattern: &str) -> Option<String> {
    let rest = pattern.strip_prefix('^')?;
    if pattern.contains('|') {
        return None;
    }
    let mut p: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
        .collect();
    if matches!(rest[p.len()..].chars().next(), Some('?' | '*' | '{')) {
        // The last character is optional (or counted): not part of every match.
        p.pop();
    }
    (!p.is_empty()).then(|| p.to_ascii_lowercase())
}

/// Whether removing target `t` may change what a folded rule reads: folded rules read only
/// TX (CRS's own runtime removals name request variables, which leave folding on).
fn removes_tx(t: &Target) -> bool {
    t.name == "TX"
}

/// `k` in ASCII lower case; keys are written in lower case almost always, so a copy is made
/// only when needed.
fn lower(k: &str) -> std::borrow::Cow<'_, str> {
    if k.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(k.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(k)
    }
}

/// Append the decimal form of `n` (what `n.to_string()` gives) without allocating.
fn push_uint(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append the decimal form of `v` (what `v.to_string()` gives) without allocating.
fn push_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    push_uint(out, v.unsigned_abs());
}

impl Expand for Transaction<'_> {
    fn expand(&self, m: &MacroText) -> Vec<u8> {
        let mut out = Vec::new();
        self.expand_into(m, &mut out);
        out
    }

    fn expand_into(&self, m: &MacroText, out: &mut Vec<u8>) {
        for p in &m.parts {
            match p {
                MacroPart::Lit(s) => out.extend_from_slice(s.as_bytes()),
                MacroPart::Var { name, key } => self.lookup_macro_into(name, key.as_deref(), out),
            }
        }
    }
}

/// The values an operator sees: the fully transformed value, or with `multiMatch` the original
/// and every intermediate value that changed.
fn transformed(value: &[u8], ts: &[Transform], multi: bool) -> Vec<Vec<u8>> {
    if !multi {
        let mut v = value.to_vec();
        for t in ts {
            v = t.apply(&v);
        }
        return vec![v];
    }
    let mut out = vec![value.to_vec()];
    let mut v = value.to_vec();
    for t in ts {
        let n = t.apply(&v);
        if n != v {
            out.push(n.clone());
        }
        v = n;
    }
    out
}

/// Evaluate a whole request (and optional response) and return the finished transaction's
/// results; convenience for tests and the regression runner.
pub fn evaluate(
    engine: &Engine,
    req: &Request,
    resp: Option<&Response>,
    opts: &TxOptions,
) -> (Vec<MatchedRule>, Option<Intervention>) {
    let mut tx = engine.transaction(req, opts);
    tx.process_request(req);
    if let Some(r) = resp {
        tx.process_response(r);
    }
    tx.finish();
    (std::mem::take(&mut tx.matched), tx.intervention.take())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(text: &str) -> Engine {
        let mut rs = RuleSet::new();
        rs.add_text("t.conf", text, &|_: &str, _: &str| None)
            .unwrap();
        rs.finish().unwrap();
        Engine::new(rs)
    }

    fn get(uri: &str) -> Request {
        Request {
            method: "GET".into(),
            target: uri.as_bytes().to_vec(),
            protocol: "HTTP/1.1".into(),
            headers: vec![("Host".into(), b"example.test".to_vec())],
            ..Request::default()
        }
    }

    fn ids(e: &Engine, r: &Request) -> Vec<u64> {
        evaluate(e, r, None, &TxOptions::default())
            .0
            .iter()
            .map(|m| m.id)
            .collect()
    }

    /// Caches recycled from earlier transactions on the thread (the pool) must not change a
    /// result: a request evaluated after others, and after its caches were released between
    /// the request and response phases, matches what it matches on a fresh thread.
    #[test]
    fn pooled_caches_change_no_result() {
        let e = engine(
            r#"
SecRuleEngine On
SecResponseBodyAccess On
SecRule ARGS|REQUEST_HEADERS "@rx (?i)<script" "id:1,phase:2,pass,t:none,t:urlDecodeUni,t:lowercase"
SecRule ARGS_NAMES "@rx ^evil" "id:2,phase:2,pass,t:lowercase"
SecRule REQUEST_URI "@contains admin" "id:3,phase:1,pass,t:none,t:lowercase"
SecRule RESPONSE_BODY "@contains secret" "id:4,phase:4,pass,t:none,t:lowercase"
"#,
        );
        let resp = Response {
            status: 200,
            protocol: "HTTP/1.1".into(),
            headers: vec![("content-type".into(), b"text/html".to_vec())],
            body: b"the SECRET".to_vec(),
        };
        // (target, extra headers): the cases differ in how many values they have, so the
        // string ids a stale cache entry would name differ from case to case.
        let run = |(uri, extra): (&str, usize), release: bool| {
            let mut r = get(uri);
            for i in 0..extra {
                r.headers.push((
                    format!("X-Extra-{i}"),
                    format!("v{i} <Script>").into_bytes(),
                ));
            }
            let mut tx = e.transaction(&r, &TxOptions::default());
            tx.process_request(&r);
            if release {
                tx.release_caches();
            }
            tx.process_response(&resp);
            tx.finish();
            tx.matched.iter().map(|m| m.id).collect::<Vec<_>>()
        };
        let cases = [
            ("/admin?a=%3Cscript%3E&evilname=1", 0),
            ("/x?b=hello", 0),
            ("/ADMIN?", 3),
            ("/y?q=<SCRIPT>&evil=2&z=3", 5),
            ("/z?k=plain", 1),
        ];
        // Fresh thread: no pooled caches.
        let fresh: Vec<Vec<u64>> = std::thread::scope(|sc| {
            cases
                .iter()
                .map(|c| sc.spawn(|| run(*c, false)).join().unwrap())
                .collect()
        });
        assert_eq!(fresh[0], vec![3, 1, 2, 4]);
        assert_eq!(fresh[1], vec![4]);
        assert_eq!(fresh[4], vec![1, 4]);
        // Same thread, pooled caches, in both orders, with and without the release.
        for release in [false, true] {
            for c in cases.iter().chain(cases.iter().rev()) {
                let i = cases.iter().position(|x| x == c).unwrap();
                assert_eq!(run(*c, release), fresh[i], "{c:?} release={release}");
            }
        }
    }

    /// A set taken from the pool holds nothing of the transaction that returned it (string
    /// ids, scan verdicts and chain ids mean nothing to another engine), only allocations;
    /// and a set past the size bound is not kept.
    #[test]
    fn recycled_caches_are_empty() {
        std::thread::spawn(|| {
            let e = engine(
                r#"
SecRule ARGS "@rx (?i)<script" "id:1,phase:2,pass,t:none,t:lowercase"
SecRule REQUEST_HEADERS "@contains x" "id:2,phase:1,pass,t:none,t:urlDecode"
SecRule REQUEST_URI "@contains y" "id:3,phase:2,pass,t:none,t:lowercase"
"#,
            );
            let r = get("/?a=%3Cscript%3E&b=2");
            let mut tx = e.transaction(&r, &TxOptions::default());
            tx.process_request(&r);
            let c = std::mem::take(&mut tx.caches);
            assert!(!c.strs.is_empty() && !c.str_ids.is_empty() && !c.pcache.is_empty());
            assert!(!c.founds.is_empty() && !c.gcache.is_empty() && !c.gvals.is_empty());
            assert!(!c.scache.is_empty());
            recycle_caches(c);
            let p = pooled_caches();
            assert!(p.strs.capacity() > 0, "the allocation is kept");
            assert!(p.strs.is_empty() && p.str_atoms.is_empty() && p.scan_alias.is_empty());
            assert!(p.founds.is_empty() && p.found_ids.is_empty() && p.str_ids.is_empty());
            assert!(p.pcache.iter().all(Vec::is_empty) && p.scache.is_empty());
            assert!(p.gcache.is_empty() && p.gvals.is_empty());
            assert!(p.gather_buf.is_empty() && p.values_buf.is_empty());
            // Over the bound: freed, not pooled.
            let mut big = Caches::default();
            big.strs
                .reserve(CACHE_POOL_SET_MAX_BYTES / std::mem::size_of::<Vec<u8>>() + 1);
            recycle_caches(big);
            assert_eq!(pooled_caches().strs.capacity(), 0);
            // At most CACHE_POOL_SETS sets.
            for _ in 0..CACHE_POOL_SETS + 2 {
                let mut c = Caches::default();
                c.strs.reserve(1);
                recycle_caches(c);
            }
            assert_eq!(CACHE_POOL.with(|p| p.borrow().len()), CACHE_POOL_SETS);
        })
        .join()
        .unwrap();
    }

    /// Chains with the same targets share gathered values only when the same runtime
    /// exclusions apply to them.
    #[test]
    fn group_cache_keys_on_the_exclusions_in_force() {
        let e = engine(
            r#"
SecRule REQUEST_FILENAME "@rx ." "id:1,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=perf;ARGS:a,ctl:ruleRemoveTargetById=13;ARGS:b"
SecRule ARGS "@contains bad" "id:10,phase:2,pass,tag:'perf'"
SecRule ARGS "@contains bad" "id:11,phase:2,pass"
SecRule ARGS "@contains bad" "id:12,phase:2,pass,tag:'perf'"
SecRule ARGS "@contains bad" "id:13,phase:2,pass"
SecRule ARGS "@contains bad" "id:14,phase:2,pass,tag:'perf'"
"#,
        );
        assert_eq!(ids(&e, &get("/?a=bad")), vec![1, 11, 13]);
        assert_eq!(ids(&e, &get("/?b=bad")), vec![1, 10, 11, 12, 14]);
        assert_eq!(ids(&e, &get("/?a=bad&b=bad")), vec![1, 10, 11, 12, 13, 14]);
    }

    /// Tag selectors (literal and regex, from a `ctl` and from a configured exclusion) pick
    /// the rules whose tags they match, through the engine's tag table.
    #[test]
    fn tag_selectors_pick_rules_by_tag() {
        let e = engine(
            r#"
SecRule ARGS:go "@streq 1" "id:1,phase:1,pass,nolog,ctl:ruleRemoveByTag=attack-sqli"
SecRule ARGS:go "@streq 2" "id:2,phase:1,pass,nolog,ctl:ruleRemoveByTag=^paranoia-level/[23]$"
SecRule ARGS:go "@streq 3" "id:3,phase:1,pass,nolog,ctl:ruleRemoveTargetByTag=attack-.*;ARGS:a"
SecRule ARGS "@contains x" "id:10,phase:2,pass,tag:'attack-sqli',tag:'paranoia-level/1'"
SecRule ARGS "@contains x" "id:11,phase:2,pass,tag:'attack-xss',tag:'paranoia-level/2'"
SecRule ARGS "@contains x" "id:12,phase:2,pass,tag:'paranoia-level/3'"
SecRule ARGS "@contains x" "id:13,phase:2,pass,tag:'paranoia-level/23'"
"#,
        );
        assert_eq!(ids(&e, &get("/?go=1&a=x")), vec![1, 11, 12, 13]);
        assert_eq!(ids(&e, &get("/?go=2&a=x")), vec![2, 10, 13]);
        assert_eq!(ids(&e, &get("/?go=3&a=x")), vec![3, 12, 13]);
        // A configured exclusion's selector is not among the ctl selectors computed at load.
        let r = get("/?a=x");
        let mut tx = e.transaction(&r, &TxOptions::default());
        tx.exclude(&IdRanges::default(), &["attack-xss".to_string()], &[]);
        tx.process_request(&r);
        let got: Vec<u64> = tx.matched.iter().map(|m| m.id).collect();
        assert_eq!(got, vec![10, 12, 13]);
    }

    #[test]
    fn args_transform_chain_and_score() {
        let e = engine(
            r#"
SecRuleEngine On
SecRule ARGS "@rx <script" "id:1,phase:2,pass,t:none,t:lowercase,setvar:tx.score=+5,msg:'XSS in %{MATCHED_VAR_NAME}'"
SecRule TX:score "@ge 5" "id:2,phase:2,deny,status:403"
"#,
        );
        let (m, i) = evaluate(&e, &get("/?a=%3CSCRIPT%3E"), None, &TxOptions::default());
        assert_eq!(m.iter().map(|m| m.id).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(m[0].msg, "XSS in ARGS:a");
        assert_eq!(i.unwrap().status, 403);
        assert!(ids(&e, &get("/?a=hello")).is_empty());
    }

    #[test]
    fn exclusions_skip_and_ctl() {
        let e = engine(
            r#"
SecRule REQUEST_FILENAME "@streq /admin" "id:10,phase:1,pass,nolog,ctl:ruleRemoveTargetById=20;ARGS:pw"
SecRule ARGS|!ARGS:safe "@contains evil" "id:20,phase:2,pass"
SecRule ARGS "@contains skip" "id:30,phase:2,pass,skipAfter:END"
SecRule ARGS "@contains skip" "id:31,phase:2,pass"
SecMarker END
SecRule &ARGS "@eq 2" "id:40,phase:2,pass,chain"
  SecRule ARGS_NAMES "@streq b" "t:none"
"#,
        );
        assert_eq!(ids(&e, &get("/x?safe=evil")), Vec::<u64>::new());
        assert_eq!(ids(&e, &get("/x?pw=evil")), vec![20]);
        assert_eq!(ids(&e, &get("/admin?pw=evil")), vec![10]);
        assert_eq!(ids(&e, &get("/x?a=skip&b=1")), vec![30, 40]);
    }

    #[test]
    fn detection_only_does_not_block() {
        let e =
            engine("SecRuleEngine DetectionOnly\nSecRule ARGS \"@rx x\" \"id:1,phase:1,deny\"\n");
        let (m, i) = evaluate(&e, &get("/?a=x"), None, &TxOptions::default());
        assert_eq!(m.len(), 1);
        assert!(i.is_none());
    }

    #[test]
    fn captures_and_macros() {
        let e = engine(
            r#"
SecRule REQUEST_HEADERS_NAMES "@rx ^.*$" "id:1,phase:1,pass,capture,t:lowercase,setvar:'tx.h_%{tx.0}=/%{tx.0}/',chain"
  SecRule TX:/^h_/ "@within /host/ /x-bad/" "setvar:tx.hit=%{MATCHED_VAR}"
"#,
        );
        let mut r = get("/");
        r.headers.push(("X-Bad".into(), b"1".to_vec()));
        let mut tx = e.transaction(&r, &TxOptions::default());
        tx.process_request(&r);
        assert_eq!(tx.matched.len(), 1);
        assert_eq!(tx.tx_var("h_x-bad"), Some(&b"/x-bad/"[..]));
        assert!(tx.tx_var("hit").is_some());
    }

    #[test]
    fn bodies() {
        let e = engine(
            "SecRule ARGS_POST:a \"@streq 1\" \"id:1,phase:2,pass\"\nSecRule ARGS:json.k \"@streq v\" \"id:2,phase:2,pass\"\nSecRule FILES \"@endsWith .php\" \"id:3,phase:2,pass\"\n",
        );
        let mut r = get("/");
        r.method = "POST".into();
        r.headers.push((
            "Content-Type".into(),
            b"application/x-www-form-urlencoded".to_vec(),
        ));
        r.body = b"a=1".to_vec();
        assert_eq!(ids(&e, &r), vec![1]);
        r.headers.pop();
        r.headers
            .push(("Content-Type".into(), b"application/json".to_vec()));
        r.body = br#"{"k":"v"}"#.to_vec();
        assert_eq!(ids(&e, &r), vec![2]);
        r.headers.pop();
        r.headers.push((
            "Content-Type".into(),
            b"multipart/form-data; boundary=b".to_vec(),
        ));
        r.body = b"--b\r\nContent-Disposition: form-data; name=\"f\"; filename=\"s.php\"\r\n\r\nx\r\n--b--\r\n".to_vec();
        assert_eq!(ids(&e, &r), vec![3]);
    }

    /// Everything a transaction produced that anything reads: the matched rules with their
    /// messages and data, the intervention and the final TX collection.
    fn outcome(e: &Engine, r: &Request, response: bool, exclude: Option<IdRanges>) -> String {
        let mut tx = e.transaction(r, &TxOptions::default());
        if let Some(ids) = exclude {
            tx.exclude(&ids, &[], &[]);
        }
        tx.process_request(r);
        if response {
            tx.process_response(&Response {
                status: 200,
                protocol: "HTTP/1.1".into(),
                headers: vec![("Content-Type".into(), b"text/plain".to_vec())],
                body: b"ok".to_vec(),
            });
        }
        tx.finish();
        format!("{:?}\n{:?}\n{:?}", tx.matched, tx.intervention, tx.tx)
    }

    fn folded_ids(e: &Engine) -> Vec<u64> {
        e.rules
            .items
            .iter()
            .zip(&e.folds)
            .filter_map(|(item, f)| match (item, f) {
                (Item::Rule(r), Some(_)) => Some(r.id()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn constant_rules_are_folded_and_change_nothing() {
        let text = r#"
SecRuleEngine On
SecAction "id:1,phase:1,pass,nolog,setvar:tx.pl=1,setvar:tx.limit=5"
SecRule &TX:pl "@eq 0" "id:2,phase:1,pass,nolog,setvar:tx.pl=4"
SecRule TX:pl "@lt 2" "id:3,phase:1,pass,nolog,skipAfter:END-PL2"
SecRule ARGS "@rx pl2" "id:4,phase:1,pass,setvar:tx.score=+1"
SecMarker END-PL2
SecRule ARGS "@rx (a)(t+)ack" "id:5,phase:2,pass,capture,msg:'attack %{MATCHED_VAR}',setvar:tx.score=+5,setvar:'tx.seen_%{tx.1}=1'"
SecRule TX:seen_a "@eq 1" "id:6,phase:2,pass,log,msg:'seen'"
SecRule TX:score "@ge %{tx.limit}" "id:7,phase:2,deny,status:403,msg:'score %{TX.score}'"
SecRule TX:pl "@ge 1" "id:8,phase:2,pass,log,msg:'pl %{tx.pl}',setvar:tx.phase2=%{MATCHED_VAR}"
SecRule REQUEST_FILENAME "@streq /off" "id:9,phase:2,pass,nolog,ctl:ruleRemoveTargetById=10;TX:pl"
SecRule TX:pl "@eq 1" "id:10,phase:2,pass,log,msg:'pl still 1'"
SecRule TX:phase2 "@eq 1" "id:11,phase:5,pass,log,msg:'logging'"
"#;
        let folded = engine(text);
        // 1–3 read only constants; 8 and 10 read `pl`, which nothing but 1 writes. 6 reads a
        // key whose name 5 builds from a capture, 7 a score, 11 what 8 wrote after a rule
        // that may have skipped it: evaluated per request.
        assert_eq!(folded_ids(&folded), vec![1, 2, 3, 8, 10]);
        let reference = engine(text).without_folding();
        assert_eq!(reference.folded_rules(), 0);
        let requests = [
            "/?x=attack",
            "/?x=pl2&y=attttack",
            "/off?x=attack",
            "/?x=hello",
        ];
        for uri in requests {
            for response in [false, true] {
                for exclude in [None, Some(vec![(3, 3)]), Some(vec![(8, 8)])] {
                    assert_eq!(
                        outcome(&folded, &get(uri), response, exclude.clone()),
                        outcome(&reference, &get(uri), response, exclude.clone()),
                        "{uri} response {response} exclude {exclude:?}"
                    );
                }
            }
        }
        // The target removal on /off reaches folded rule 10: evaluated, it no longer matches.
        let (m, _) = evaluate(&folded, &get("/off"), None, &TxOptions::default());
        assert!(m.iter().all(|m| m.id != 10), "{m:?}");
        let (m, i) = evaluate(&folded, &get("/?x=attack"), None, &TxOptions::default());
        assert_eq!(
            m.iter().map(|m| m.id).collect::<Vec<_>>(),
            vec![1, 3, 5, 6, 7]
        );
        assert_eq!(i.map(|i| i.rule_id), Some(7));
    }

    #[test]
    fn a_phase_that_did_not_run_turns_folding_off() {
        // Everything is constant, but phase 3 runs only when a response is seen: without
        // one, the logging rule must not see what phase 3 would have set.
        let text = r#"
SecAction "id:20,phase:3,pass,nolog,setvar:tx.r=1"
SecRule TX:r "@eq 1" "id:21,phase:5,pass,log,msg:'r'"
"#;
        let folded = engine(text);
        assert_eq!(folded_ids(&folded), vec![20, 21]);
        let reference = engine(text).without_folding();
        for response in [false, true] {
            let got = outcome(&folded, &get("/"), response, None);
            assert_eq!(got, outcome(&reference, &get("/"), response, None));
            assert_eq!(got.contains("id: 21"), response, "{got}");
        }
    }

    #[test]
    fn a_rule_a_ctl_may_remove_keeps_its_writes_unknown() {
        // 30 runs in every transaction and removes 32: `a` stays 1, so 33 must be evaluated
        // (or fold to "matched"), never folded from 32's write.
        let text = r#"
SecAction "id:30,phase:1,pass,nolog,ctl:ruleRemoveById=32,setvar:tx.a=1"
SecAction "id:31,phase:1,pass,nolog,setvar:tx.b=1"
SecAction "id:32,phase:1,pass,nolog,setvar:tx.a=2"
SecRule TX:a "@eq 1" "id:33,phase:2,pass,log,msg:'a is 1'"
SecRule TX:b "@eq 1" "id:34,phase:2,pass,log,msg:'b is 1'"
"#;
        let folded = engine(text);
        assert_eq!(folded_ids(&folded), vec![30, 31, 32, 34]);
        let reference = engine(text).without_folding();
        let got = outcome(&folded, &get("/"), false, None);
        assert_eq!(got, outcome(&reference, &get("/"), false, None));
        assert!(got.contains("id: 33") && got.contains("id: 34"), "{got}");
    }

    #[test]
    fn key_regex_prefixes() {
        assert_eq!(
            anchored_prefix("^header_name_920450_").as_deref(),
            Some("header_name_920450_")
        );
        assert_eq!(anchored_prefix("^Ab-c.d").as_deref(), Some("ab-c"));
        assert_eq!(anchored_prefix("^abc?").as_deref(), Some("ab"));
        assert_eq!(anchored_prefix("^ab*").as_deref(), Some("a"));
        assert_eq!(anchored_prefix("^a{0,2}"), None);
        assert_eq!(anchored_prefix("^ab|cd"), None);
        assert_eq!(anchored_prefix("ab"), None);
        assert_eq!(anchored_prefix("^(?:ab)"), None);
        // Same keys through the range as through the walk, upper-case pattern included.
        let e = engine(
            r#"
SecAction "id:1,phase:1,pass,nolog,setvar:tx.h_a=1,setvar:tx.h_b=2,setvar:tx.ha=3,setvar:tx.g=4,setvar:tx.i=5"
SecRule TX:/^H_/ "@rx ." "id:2,phase:1,pass,log,multiMatch,setvar:tx.n=+1"
SecRule TX:n "@eq 2" "id:3,phase:1,pass,log"
"#,
        );
        assert_eq!(ids(&e, &get("/")), vec![1, 2, 3]);
    }
}
