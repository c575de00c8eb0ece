//! Required-literal prefilter for `@rx`: from a pattern's syntax tree, a condition over literal
//! strings that every match must satisfy ("contains `union` and one of `select`/`all`"), so the
//! evaluator can skip the regex when the transformed value lacks them. One Aho-Corasick automaton
//! over every rule's literals scans each distinct value once; a rule then only tests its
//! condition against the set of literals found.
//!
//! The condition is an over-approximation and never a guess: a literal only becomes required
//! when the syntax tree forces it into every match (concatenation, alternation, repetition with a
//! minimum of one). Literals are compared ASCII case-insensitively, which can only let more
//! values through to the regex, never fewer.

use std::collections::{BTreeSet, HashMap};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

/// Most strings an exact set may hold before it turns into a condition.
const EXACT_MAX: usize = 64;
/// Largest byte class expanded into single-byte literals (after ASCII case folding).
const CLASS_MAX: usize = 16;
/// Deepest syntax tree walked; deeper patterns get no prefilter.
const DEPTH_MAX: usize = 200;
/// Shortest literal worth an automaton atom; single bytes are tested in a per-value byte map.
const MIN_ATOM_BYTES: usize = 2;

/// What a scan found in a value: the automaton atoms (sorted) and the bytes present (ASCII
/// letters folded to lower case).
#[derive(Debug, Clone, Default)]
pub struct Found {
    atoms: Vec<u32>,
    bytes: [u64; 4],
    /// Bit map by filter id: the filter's trigger is present.
    triggered: Vec<u64>,
}

impl Found {
    /// Hash of the atoms and bytes found: values with equal signatures pass the same filters
    /// (the trigger bits follow from them), so a filter's verdict can be shared.
    pub fn signature(&self) -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |v: u64| {
            h = (h.rotate_left(5) ^ v).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        };
        for w in self.bytes {
            mix(w);
        }
        mix(self.atoms.len() as u64);
        for a in &self.atoms {
            mix(u64::from(*a));
        }
        h
    }

    /// Whether the scan results are the same (signatures can collide).
    pub fn same_as(&self, other: &Found) -> bool {
        self.bytes == other.bytes && self.atoms == other.atoms
    }

    fn has_byte(&self, b: u8) -> bool {
        self.bytes[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0
    }
}

/// A rule's prefilter: a cheap trigger test, then the full condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// The full condition.
    pub cond: Cond,
    /// Sorted atoms at least one of which every match contains (a necessary condition picked
    /// from the cheapest branch of each conjunction), with `trigger_bytes`.
    pub trigger: Vec<u32>,
    /// Single bytes of the trigger (bit map, lower-case).
    pub trigger_bytes: [u64; 4],
    /// Index in the [`Prefilter`]'s filter table.
    pub id: u32,
    /// The condition is a disjunction of atoms and bytes, the trigger itself: a triggered
    /// value passes without testing the condition again.
    exact: bool,
    /// `cond` in the form [`Filter::passes`] evaluates.
    eval: EvalCond,
}

/// A [`Cond`] prepared for evaluation, for the conditions that are not their own trigger
/// (`Filter::exact`): each conjunction's bytes become one bit-map test and each disjunction's
/// atoms a sorted list (searched from the side with fewer atoms) and its bytes bit maps. CRS's
/// evasion-tolerant command lists make such trees of hundreds of byte conjunctions, evaluated
/// once per distinct scan result.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EvalCond {
    Any,
    Atom(u32),
    /// Every byte of the bit map occurs (a conjunction of bytes: CRS's evasion-tolerant
    /// patterns such as `b[\\'"]*u[\\'"]*s…` require letters, not a literal).
    AllBytes([u64; 4]),
    And(Vec<EvalCond>),
    AnyOf {
        /// Sorted.
        atoms: Vec<u32>,
        bytes: [u64; 4],
        /// Disjuncts that are conjunctions of bytes.
        all_bytes: Vec<[u64; 4]>,
        /// The other disjuncts.
        rest: Vec<EvalCond>,
    },
}

impl EvalCond {
    fn new(c: &Cond) -> Self {
        match c {
            Cond::Any => Self::Any,
            Cond::Atom(a) => Self::Atom(*a),
            Cond::Byte(b) => Self::AllBytes(byte_bit(*b)),
            Cond::And(v) => {
                let mut mask = [0u64; 4];
                let mut rest = Vec::new();
                for d in v.iter().map(Self::new) {
                    match d {
                        Self::AllBytes(m) => or_into(&mut mask, &m),
                        Self::Any => {}
                        other => rest.push(other),
                    }
                }
                if mask != [0; 4] {
                    // The byte test first: the cheapest to fail.
                    rest.insert(0, Self::AllBytes(mask));
                }
                match rest.len() {
                    0 => Self::Any,
                    1 => rest.pop().unwrap_or(Self::Any),
                    _ => Self::And(rest),
                }
            }
            Cond::Or(v) => {
                let mut atoms = Vec::new();
                let mut bytes = [0u64; 4];
                let mut all_bytes = Vec::new();
                let mut rest = Vec::new();
                for d in v.iter().map(Self::new) {
                    match d {
                        Self::Any => return Self::Any,
                        Self::Atom(a) => atoms.push(a),
                        Self::AllBytes(m) if m.iter().map(|w| w.count_ones()).sum::<u32>() == 1 => {
                            or_into(&mut bytes, &m)
                        }
                        Self::AllBytes(m) => all_bytes.push(m),
                        other => rest.push(other),
                    }
                }
                atoms.sort_unstable();
                atoms.dedup();
                Self::AnyOf {
                    atoms,
                    bytes,
                    all_bytes,
                    rest,
                }
            }
        }
    }

    /// Same result as [`Cond::holds`] on the condition this was made from.
    fn holds(&self, found: &Found) -> bool {
        match self {
            Self::Any => true,
            Self::Atom(a) => found.atoms.binary_search(a).is_ok(),
            Self::AllBytes(m) => has_all(&found.bytes, m),
            Self::And(v) => v.iter().all(|c| c.holds(found)),
            Self::AnyOf {
                atoms,
                bytes,
                all_bytes,
                rest,
            } => {
                bytes.iter().zip(&found.bytes).any(|(a, b)| a & b != 0)
                    || all_bytes.iter().any(|m| has_all(&found.bytes, m))
                    || sorted_intersect(atoms, &found.atoms)
                    || rest.iter().any(|c| c.holds(found))
            }
        }
    }
}

fn byte_bit(b: u8) -> [u64; 4] {
    let mut m = [0u64; 4];
    m[usize::from(b >> 6)] = 1u64 << (b & 63);
    m
}

fn or_into(a: &mut [u64; 4], b: &[u64; 4]) {
    for (x, y) in a.iter_mut().zip(b) {
        *x |= y;
    }
}

/// Whether every byte of `mask` is in `present`.
fn has_all(present: &[u64; 4], mask: &[u64; 4]) -> bool {
    present.iter().zip(mask).all(|(p, m)| p & m == *m)
}

/// Whether two sorted lists share an element: the shorter one is searched in the longer.
fn sorted_intersect(a: &[u32], b: &[u32]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    short.iter().any(|x| long.binary_search(x).is_ok())
}

/// Whether `c` holds exactly when one of its trigger atoms or bytes is present.
fn trigger_is_exact(c: &Cond) -> bool {
    match c {
        Cond::Atom(_) | Cond::Byte(_) => true,
        Cond::Or(v) => v.iter().all(trigger_is_exact),
        Cond::Any | Cond::And(_) => false,
    }
}

impl Filter {
    fn new(cond: Cond, atoms: &[Vec<u8>], id: u32) -> Self {
        let (set, _) = trigger(&cond, atoms);
        let mut trigger = Vec::new();
        let mut trigger_bytes = [0u64; 4];
        for t in set {
            match t {
                Trig::Atom(a) => trigger.push(a),
                Trig::Byte(b) => trigger_bytes[usize::from(b >> 6)] |= 1u64 << (b & 63),
            }
        }
        trigger.sort_unstable();
        trigger.dedup();
        Self {
            exact: trigger_is_exact(&cond),
            eval: EvalCond::new(&cond),
            cond,
            trigger,
            trigger_bytes,
            id,
        }
    }

    /// Whether a value with scan result `found` may match.
    pub fn passes(&self, found: &Found) -> bool {
        let i = self.id as usize;
        let triggered = found
            .triggered
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0);
        triggered && (self.exact || self.eval.holds(found))
    }
}

/// One element of a trigger set.
#[derive(Debug, Clone, Copy)]
enum Trig {
    Atom(u32),
    Byte(u8),
}

fn simplify(c: Cond) -> Cond {
    match c {
        Cond::And(v) => {
            let mut out: Vec<Cond> = v
                .into_iter()
                .map(simplify)
                .filter(|c| *c != Cond::Any)
                .collect();
            match out.len() {
                0 => Cond::Any,
                1 => out.pop().unwrap_or(Cond::Any),
                _ => Cond::And(out),
            }
        }
        Cond::Or(v) => {
            let mut out = Vec::new();
            for c in v.into_iter().map(simplify) {
                if c == Cond::Any {
                    return Cond::Any;
                }
                out.push(c);
            }
            match out.len() {
                0 => Cond::Any,
                1 => out.pop().unwrap_or(Cond::Any),
                _ => Cond::Or(out),
            }
        }
        c => c,
    }
}

/// Cost of testing an atom as a trigger: short atoms occur in benign values more often.
fn atom_cost(atom: &[u8]) -> u32 {
    match atom.len() {
        0..=2 => 16,
        3 => 4,
        4 => 2,
        _ => 1,
    }
}

/// A set of atoms one of which is present whenever `c` holds, and its cost. `c` is simplified,
/// so `Any` only occurs at the top (never passed here).
fn trigger(c: &Cond, atoms: &[Vec<u8>]) -> (Vec<Trig>, u32) {
    match c {
        Cond::Any => (Vec::new(), u32::MAX),
        Cond::Byte(b) => (vec![Trig::Byte(*b)], 64),
        Cond::Atom(a) => (
            vec![Trig::Atom(*a)],
            atoms.get(*a as usize).map_or(16, |s| atom_cost(s)),
        ),
        Cond::Or(v) => {
            let mut set = Vec::new();
            let mut cost = 0u32;
            for x in v {
                let (s, c) = trigger(x, atoms);
                set.extend(s);
                cost = cost.saturating_add(c);
            }
            (set, cost)
        }
        Cond::And(v) => v
            .iter()
            .map(|x| trigger(x, atoms))
            .min_by_key(|(_, c)| *c)
            .unwrap_or((Vec::new(), u32::MAX)),
    }
}

/// A condition over literal atoms (indices into the [`Prefilter`]'s atom table).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    /// No requirement.
    Any,
    /// The atom occurs.
    Atom(u32),
    /// The byte occurs (ASCII letters lower-cased).
    Byte(u8),
    /// All hold.
    And(Vec<Cond>),
    /// At least one holds.
    Or(Vec<Cond>),
}

/// Condition over literal strings, before atoms are numbered.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LCond {
    Any,
    Lit(Vec<u8>),
    And(Vec<LCond>),
    Or(Vec<LCond>),
}

enum Info {
    /// The node matches exactly one of these (lower-cased) strings.
    Exact(BTreeSet<Vec<u8>>),
    /// Every match of the node satisfies the condition.
    Req(LCond),
}

fn and(v: Vec<LCond>) -> LCond {
    let mut out: Vec<LCond> = Vec::new();
    for c in v {
        match c {
            LCond::Any => {}
            LCond::And(inner) => out.extend(inner),
            c => out.push(c),
        }
    }
    match out.len() {
        0 => LCond::Any,
        1 => out.pop().unwrap_or(LCond::Any),
        _ => LCond::And(out),
    }
}

fn or(v: Vec<LCond>) -> LCond {
    let mut out: Vec<LCond> = Vec::new();
    for c in v {
        match c {
            LCond::Any => return LCond::Any,
            LCond::Or(inner) => out.extend(inner),
            c => out.push(c),
        }
    }
    match out.len() {
        0 => LCond::Any,
        1 => out.pop().unwrap_or(LCond::Any),
        _ => LCond::Or(out),
    }
}

fn exact_cond(set: &BTreeSet<Vec<u8>>) -> LCond {
    if set.is_empty() || set.iter().any(Vec::is_empty) {
        return LCond::Any;
    }
    or(set.iter().cloned().map(LCond::Lit).collect())
}

fn to_cond(info: Info) -> LCond {
    match info {
        Info::Exact(s) => exact_cond(&s),
        Info::Req(c) => c,
    }
}

fn class_bytes(c: &Class) -> Option<BTreeSet<Vec<u8>>> {
    let mut seen = [false; 256];
    let mut n = 0usize;
    let mut add = |b: u8| {
        let l = b.to_ascii_lowercase();
        if !seen[usize::from(l)] {
            seen[usize::from(l)] = true;
            n += 1;
        }
    };
    match c {
        Class::Bytes(cb) => {
            for r in cb.iter() {
                if usize::from(r.end() - r.start()) > 2 * CLASS_MAX + 2 {
                    return None;
                }
                for b in r.start()..=r.end() {
                    add(b);
                }
            }
        }
        Class::Unicode(cu) => {
            for r in cu.iter() {
                // Non-ASCII scalars are several bytes in UTF-8: no single-byte literal.
                if u32::from(r.end()) > 0x7f || u32::from(r.end()) - u32::from(r.start()) > 14 {
                    return None;
                }
                for b in u32::from(r.start())..=u32::from(r.end()) {
                    add(b as u8);
                }
            }
        }
    }
    if n == 0 || n > CLASS_MAX {
        return None;
    }
    Some(
        (0..=255u8)
            .filter(|b| seen[usize::from(*b)])
            .map(|b| vec![b])
            .collect(),
    )
}

fn info(h: &Hir, depth: usize) -> Info {
    if depth > DEPTH_MAX {
        return Info::Req(LCond::Any);
    }
    match h.kind() {
        HirKind::Empty | HirKind::Look(_) => Info::Exact(BTreeSet::from([Vec::new()])),
        HirKind::Literal(l) => Info::Exact(BTreeSet::from([l.0.to_ascii_lowercase()])),
        HirKind::Class(c) => match class_bytes(c) {
            Some(s) => Info::Exact(s),
            None => Info::Req(LCond::Any),
        },
        HirKind::Capture(c) => info(&c.sub, depth + 1),
        HirKind::Repetition(r) => {
            if r.min == 0 {
                Info::Req(LCond::Any)
            } else if r.min == 1 && r.max == Some(1) {
                info(&r.sub, depth + 1)
            } else {
                Info::Req(to_cond(info(&r.sub, depth + 1)))
            }
        }
        HirKind::Concat(subs) => {
            let mut conds = Vec::new();
            let mut run: BTreeSet<Vec<u8>> = BTreeSet::from([Vec::new()]);
            for s in subs {
                match info(s, depth + 1) {
                    Info::Exact(set) => {
                        if run.len() * set.len() <= EXACT_MAX {
                            let mut cross = BTreeSet::new();
                            for a in &run {
                                for b in &set {
                                    let mut x = a.clone();
                                    x.extend_from_slice(b);
                                    cross.insert(x);
                                }
                            }
                            run = cross;
                        } else {
                            conds.push(exact_cond(&run));
                            run = set;
                        }
                    }
                    Info::Req(c) => {
                        conds.push(exact_cond(&run));
                        conds.push(c);
                        run = BTreeSet::from([Vec::new()]);
                    }
                }
            }
            if conds.is_empty() {
                Info::Exact(run)
            } else {
                conds.push(exact_cond(&run));
                Info::Req(and(conds))
            }
        }
        HirKind::Alternation(subs) => {
            let infos: Vec<Info> = subs.iter().map(|s| info(s, depth + 1)).collect();
            let all_exact = infos.iter().all(|i| matches!(i, Info::Exact(_)));
            if all_exact {
                let mut union = BTreeSet::new();
                for i in &infos {
                    if let Info::Exact(s) = i {
                        union.extend(s.iter().cloned());
                    }
                }
                if union.len() <= EXACT_MAX {
                    return Info::Exact(union);
                }
            }
            Info::Req(or(infos.into_iter().map(to_cond).collect()))
        }
    }
}

/// The literal condition of a pattern compiled with ModSecurity's flags in byte mode, or `None`
/// when the pattern has no required literal (or does not parse the same way).
fn pattern_cond(pattern: &str) -> Option<LCond> {
    let hir = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .dot_matches_new_line(true)
        .multi_line(true)
        .build()
        .parse(pattern)
        .ok()?;
    match to_cond(info(&hir, 0)) {
        LCond::Any => None,
        c => Some(c),
    }
}

/// A pattern's required-literal condition tested directly on one short string (a key regex of
/// a target such as `TX:/^header_name_920450_/`), without an automaton: when it fails the
/// regex cannot match, so the regex engine is not entered.
#[derive(Debug, Clone)]
pub struct LiteralCheck(LCond);

impl LiteralCheck {
    /// The check for a byte-mode pattern; `None` when the pattern requires no literal.
    pub fn for_pattern(pattern: &str) -> Option<Self> {
        pattern_cond(pattern).map(Self)
    }

    /// Whether a match in `hay` is possible (ASCII case-insensitive).
    pub fn may_match(&self, hay: &[u8]) -> bool {
        fn holds(c: &LCond, hay: &[u8]) -> bool {
            match c {
                LCond::Any => true,
                LCond::Lit(l) => match l.split_first() {
                    None => true,
                    // First byte first: most windows differ there.
                    Some((first, _)) => hay.windows(l.len()).any(|w| {
                        w[0].eq_ignore_ascii_case(first) && w.eq_ignore_ascii_case(l.as_slice())
                    }),
                },
                LCond::And(v) => v.iter().all(|c| holds(c, hay)),
                LCond::Or(v) => v.iter().any(|c| holds(c, hay)),
            }
        }
        holds(&self.0, hay)
    }
}

/// Every rule's literal atoms and the automaton that finds them.
#[derive(Debug, Clone)]
pub struct Prefilter {
    atoms: Vec<Vec<u8>>,
    index: HashMap<Vec<u8>, u32>,
    ac: Option<AhoCorasick>,
    /// Filter ids whose trigger holds each atom / each byte.
    atom_post: Vec<Vec<u32>>,
    byte_post: Vec<Vec<u32>>,
    filters: u32,
}

impl Default for Prefilter {
    fn default() -> Self {
        Self::new()
    }
}

impl Prefilter {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            atoms: Vec::new(),
            index: HashMap::new(),
            ac: None,
            atom_post: Vec::new(),
            byte_post: vec![Vec::new(); 256],
            filters: 0,
        }
    }

    /// The filter for a byte-mode pattern (already PCRE-translated), numbering its atoms;
    /// `None` when nothing is required.
    pub fn add_pattern(&mut self, pattern: &str) -> Option<Filter> {
        let c = pattern_cond(pattern)?;
        let cond = simplify(self.number(c));
        if cond == Cond::Any {
            return None;
        }
        Some(self.register(cond))
    }

    /// The filter of an `@pm` phrase list: exact (the operator matches iff a phrase occurs),
    /// `None` when a phrase is too short to be an atom.
    pub fn add_phrases(&mut self, phrases: &[String]) -> Option<Filter> {
        if phrases.is_empty() || phrases.iter().any(String::is_empty) {
            return None;
        }
        let c = LCond::Or(
            phrases
                .iter()
                .map(|p| LCond::Lit(p.as_bytes().to_ascii_lowercase()))
                .collect(),
        );
        let cond = simplify(self.number(c));
        if cond == Cond::Any {
            return None;
        }
        Some(self.register(cond))
    }

    fn register(&mut self, cond: Cond) -> Filter {
        let f = Filter::new(cond, &self.atoms, self.filters);
        self.filters += 1;
        if self.atom_post.len() < self.atoms.len() {
            self.atom_post.resize_with(self.atoms.len(), Vec::new);
        }
        for a in &f.trigger {
            self.atom_post[*a as usize].push(f.id);
        }
        for b in 0..=255u8 {
            if f.trigger_bytes[usize::from(b >> 6)] & (1u64 << (b & 63)) != 0 {
                self.byte_post[usize::from(b)].push(f.id);
            }
        }
        f
    }

    fn number(&mut self, c: LCond) -> Cond {
        match c {
            LCond::Any => Cond::Any,
            LCond::Lit(s) if s.is_empty() => Cond::Any,
            LCond::Lit(s) if s.len() < MIN_ATOM_BYTES => Cond::Byte(s[0].to_ascii_lowercase()),
            LCond::Lit(s) => {
                let next = self.atoms.len() as u32;
                let id = *self.index.entry(s.clone()).or_insert(next);
                if id == next {
                    self.atoms.push(s);
                }
                Cond::Atom(id)
            }
            LCond::And(v) => Cond::And(v.into_iter().map(|c| self.number(c)).collect()),
            LCond::Or(v) => Cond::Or(v.into_iter().map(|c| self.number(c)).collect()),
        }
    }

    /// Build the automaton once every pattern is added.
    pub fn build(&mut self) -> Result<(), String> {
        if self.atoms.is_empty() {
            self.ac = None;
            return Ok(());
        }
        let ac = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .build(&self.atoms)
            .map_err(|e| format!("prefilter automaton: {e}"))?;
        self.ac = Some(ac);
        Ok(())
    }

    /// Number of distinct atoms.
    pub fn atom_count(&self) -> usize {
        self.atoms.len()
    }

    /// The atoms and bytes present in `hay`.
    pub fn scan(&self, hay: &[u8]) -> Found {
        let mut f = Found::default();
        for b in hay {
            let l = b.to_ascii_lowercase();
            f.bytes[usize::from(l >> 6)] |= 1u64 << (l & 63);
        }
        if let Some(ac) = &self.ac {
            for m in ac.find_overlapping_iter(hay) {
                f.atoms.push(m.pattern().as_u32());
            }
        }
        f.atoms.sort_unstable();
        f.atoms.dedup();
        f.triggered = vec![0u64; (self.filters as usize).div_ceil(64)];
        let mut mark = |ids: &[u32]| {
            for id in ids {
                f.triggered[*id as usize / 64] |= 1u64 << (id % 64);
            }
        };
        for a in &f.atoms {
            if let Some(p) = self.atom_post.get(*a as usize) {
                mark(p);
            }
        }
        for (w, word) in f.bytes.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                mark(&self.byte_post[b]);
            }
        }
        f
    }
}

impl Cond {
    /// Whether the condition holds for a value with scan result `found`: the reference that
    /// `Filter::passes`'s prepared form (`EvalCond`) is tested against.
    pub fn holds(&self, found: &Found) -> bool {
        match self {
            Cond::Any => true,
            Cond::Atom(a) => found.atoms.binary_search(a).is_ok(),
            Cond::Byte(b) => found.has_byte(*b),
            Cond::And(v) => v.iter().all(|c| c.holds(found)),
            Cond::Or(v) => v.iter().any(|c| c.holds(found)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lits(p: &str) -> Option<LCond> {
        pattern_cond(p)
    }

    fn l(s: &str) -> LCond {
        LCond::Lit(s.as_bytes().to_vec())
    }

    /// `EvalCond` (byte conjunctions as bit maps, disjunctions as sorted atom lists) gives
    /// the verdict of `Cond::holds` on random conditions and scan results.
    #[test]
    fn eval_cond_agrees_with_cond() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        fn random_cond(next: &mut dyn FnMut(u64) -> u64, depth: u32) -> Cond {
            match if depth == 0 { next(3) } else { next(6) } {
                0 => Cond::Atom(next(12) as u32),
                1 => Cond::Byte(b'a' + next(8) as u8),
                2 => Cond::Any,
                k => {
                    let v = (0..next(5)).map(|_| random_cond(next, depth - 1)).collect();
                    if k == 3 {
                        Cond::Or(v)
                    } else {
                        Cond::And(v)
                    }
                }
            }
        }
        for _ in 0..3000 {
            let c = random_cond(&mut next, 4);
            let e = EvalCond::new(&c);
            for _ in 0..20 {
                let mut f = Found::default();
                for a in 0..12u32 {
                    if next(3) == 0 {
                        f.atoms.push(a);
                    }
                }
                for b in 0..8u8 {
                    if next(2) == 0 {
                        or_into(&mut f.bytes, &byte_bit(b'a' + b));
                    }
                }
                assert_eq!(e.holds(&f), c.holds(&f), "{c:?} on {f:?}");
            }
        }
    }

    #[test]
    fn required_literals() {
        assert_eq!(lits("abc"), Some(l("abc")));
        assert_eq!(lits("(?i)UNION"), Some(l("union")));
        assert_eq!(
            lits(r"union\s+select"),
            Some(LCond::And(vec![
                l("union"),
                LCond::Or(
                    ["\t", "\n", "\x0b", "\x0c", "\r", " "]
                        .iter()
                        .map(|s| l(s))
                        .collect()
                ),
                l("select")
            ]))
        );
        assert_eq!(lits("a|b*"), None, "an optional branch requires nothing");
        assert_eq!(lits(".*"), None);
        assert_eq!(lits("x?y"), Some(l("y")));
        assert_eq!(
            lits("(?:ab|cd)e"),
            Some(LCond::Or(vec![l("abe"), l("cde")]))
        );
        assert_eq!(lits("[a-z]+foo"), Some(l("foo")));
    }

    #[test]
    fn conditions_never_reject_a_match() {
        // Patterns of the shapes CRS uses; each value matches its regex, so the prefilter must
        // let it through.
        let cases: &[(&str, &str)] = &[
            (
                r"(?i)\b(?:union\b.{1,100}?\bselect|sleep\s*\()",
                "1 UNION ALL SELECT",
            ),
            (r"(?i)<script[^>]*>", "<SCRIPT src=x>"),
            (r"(?:\.\./|\.\.\\)+etc", "..\\../etc"),
            (r"^[^a-z]*$", "123"),
            (r"(?i)(?:on(?:error|load))\s*=", "x ONLOAD ="),
            (r"\x{e2}\x80[\x98\x99]", "\u{2019}"),
        ];
        for (p, v) in cases {
            let mut pf = Prefilter::new();
            let translated = crate::ops::translate_pcre(p);
            let cond = pf.add_pattern(&translated);
            pf.build().unwrap();
            let re = crate::ops::compile_rx(p).unwrap();
            assert!(re.is_match(v.as_bytes()), "{p} should match {v}");
            if let Some(c) = cond {
                assert!(c.passes(&pf.scan(v.as_bytes())), "{p} rejected {v}");
            }
        }
    }

    #[test]
    fn rejects_values_without_the_literals() {
        let mut pf = Prefilter::new();
        let c = pf.add_pattern(r"(?i)union\s+select").unwrap();
        pf.build().unwrap();
        assert!(!c.passes(&pf.scan(b"some ordinary text")));
        assert!(c.passes(&pf.scan(b"1 UNION  SeLeCt 2")));
    }

    #[test]
    fn literal_check_of_key_regexes() {
        // CRS's key regexes (compiled case-insensitively, as targets are): the check passes
        // every key the regex matches and rejects keys without the literals.
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "^header_name_920450_",
                &["header_name_920450_x-forwarded-for", "HEADER_NAME_920450_A"],
                &["header_name_920451_a", "anomaly_score"],
            ),
            (
                "MULTIPART_HEADERS_CONTENT_TYPES_*",
                &[
                    "multipart_headers_content_types",
                    "x_Multipart_Headers_Content_Types__",
                ],
                &["multipart_headers", "paranoia_level"],
            ),
            (
                "paramcounter_.*",
                &["paramcounter_a", "PARAMCOUNTER_"],
                &["param_counter"],
            ),
            ("[ab]c", &["Ac", "bc"], &["cc"]),
        ];
        for (p, yes, no) in cases {
            let re = regex::bytes::RegexBuilder::new(p)
                .case_insensitive(true)
                .unicode(false)
                .build()
                .unwrap();
            let c = LiteralCheck::for_pattern(p).unwrap();
            for k in *yes {
                assert!(re.is_match(k.as_bytes()), "{p} should match {k}");
                assert!(c.may_match(k.as_bytes()), "{p}: check rejected {k}");
            }
            for k in *no {
                assert!(!c.may_match(k.as_bytes()), "{p}: check passed {k}");
            }
        }
        assert!(LiteralCheck::for_pattern(".*").is_none());
    }
}
