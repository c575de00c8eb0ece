//! `@detectSQLi` and `@detectXSS`, written for this project (not a libinjection port).
//!
//! SQLi: the input is tokenized as SQL four times — as written, as if it continued a
//! single-quoted string, a double-quoted one or a backtick-quoted identifier (the contexts an
//! injected value lands in) — into a fingerprint of token classes (`s` string, `n` number, `k` keyword,
//! `U` UNION, `E` statement verb, `f` function, `v` variable, `o` operator, `&` logic, `c`
//! comment, `;`, `(`, `)`, `,`, `b` bare word). A fingerprint is SQLi when it contains a shape
//! that only appears in injected SQL (a quote context broken out of and followed by SQL, UNION
//! SELECT, stacked statements, tautologies, time-delay functions, full queries).
//!
//! XSS: an HTML tokenizer run in the data context and in the three attribute-value contexts
//! flags dangerous tags, event-handler and style attributes, and URL attributes whose value is a
//! `javascript:`/`vbscript:`/`data:` URL.

/// Upper bound on tokens inspected per context (inputs are bounded by the caller too).
const MAX_TOKENS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tok {
    Str { closed: bool },
    Num,
    Keyword,
    Union,
    Verb,
    Func,
    Var,
    Op,
    Logic,
    Comment,
    Semi,
    Open,
    Close,
    Comma,
    Bare,
}

impl Tok {
    fn ch(self) -> char {
        match self {
            Tok::Str { .. } => 's',
            Tok::Num => 'n',
            Tok::Keyword => 'k',
            Tok::Union => 'U',
            Tok::Verb => 'E',
            Tok::Func => 'f',
            Tok::Var => 'v',
            Tok::Op => 'o',
            Tok::Logic => '&',
            Tok::Comment => 'c',
            Tok::Semi => ';',
            Tok::Open => '(',
            Tok::Close => ')',
            Tok::Comma => ',',
            Tok::Bare => 'b',
        }
    }
}

const VERBS: &[&str] = &[
    "select", "insert", "update", "delete", "drop", "create", "alter", "exec", "execute",
    "declare", "shutdown", "truncate", "replace", "rename", "grant", "revoke", "merge", "call",
    "handler", "load", "waitfor",
];
const KEYWORDS: &[&str] = &[
    "from",
    "where",
    "into",
    "values",
    "order",
    "group",
    "by",
    "having",
    "limit",
    "offset",
    "table",
    "database",
    "as",
    "join",
    "inner",
    "outer",
    "left",
    "right",
    "on",
    "set",
    "case",
    "when",
    "then",
    "else",
    "end",
    "null",
    "is",
    "distinct",
    "all",
    "top",
    "procedure",
    "delay",
    "outfile",
    "dumpfile",
    "information_schema",
    "sysobjects",
    "syscolumns",
    "begin",
    "if",
    "exists",
    "between",
    "escape",
    "collate",
    "true",
    "false",
    "asc",
    "desc",
    "column",
    "schema",
    "use",
    "show",
    "sleep",
];
/// `eqv` is MS Access's logical equivalence (`foo' Eqv StrComp(…)`); its `imp` is left out:
/// "imp" is an everyday word in ad-tech query strings (impressions).
const LOGIC: &[&str] = &["and", "or", "xor", "eqv", "not", "div", "mod"];
const OP_WORDS: &[&str] = &["like", "rlike", "regexp", "sounds", "in"];
/// Functions whose presence after a break-out is itself the attack (time, file, error based).
const DANGEROUS_FUNCS: &[&str] = &[
    "sleep",
    "benchmark",
    "pg_sleep",
    "load_file",
    "extractvalue",
    "updatexml",
    "dbms_pipe",
    "utl_inaddr",
    "utl_http",
    "xp_cmdshell",
    "version",
    "database",
    "user",
    "current_user",
    "system_user",
    "char",
    "chr",
    "concat",
    "concat_ws",
    "group_concat",
    "ascii",
    "substring",
    "substr",
    "mid",
    "ord",
    "hex",
    "unhex",
    "md5",
    "count",
    "if",
    "ifnull",
    "cast",
    "convert",
    "randomblob",
    "row_count",
    "exp",
    "floor",
    "rand",
    "name_const",
    "elt",
    "make_set",
    "geometrycollection",
    "polygon",
    "multipoint",
    "json_keys",
    "gtid_subset",
    "schema",
    "length",
    "len",
    "iif",
    "case",
    "nvl",
    "coalesce",
    "sqlite_version",
    "@@version",
];

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.' || (b >= 0x80 && b != 0xa0)
}

/// `%uHHHH` at `i`: one character of text as `t:utf8toUnicode` writes it (942100 runs on
/// every intermediate value), part of a word rather than a modulo operator.
fn uni_escape(input: &[u8], i: usize) -> bool {
    input.get(i) == Some(&b'%')
        && matches!(input.get(i + 1), Some(b'u' | b'U'))
        && input.len() >= i + 6
        && input[i + 2..i + 6].iter().all(u8::is_ascii_hexdigit)
}

/// Words that end a number glued to them (`1e0UNION`, `1and`): SQL lexes a numeric literal
/// and then a keyword, so `1e0UNION SELECT` is a UNION.
const GLUED_KEYWORDS: &[&str] = &[
    "union", "and", "or", "xor", "div", "mod", "select", "from", "where", "limit", "order",
    "group", "having", "like", "rlike", "regexp", "is", "not", "into", "between",
];

/// End of a numeric literal starting at `i` (a digit): `0x…`/`0b…`, digits with an optional
/// fraction, exponent and float suffix (`f`/`d`), or — when what follows is not a keyword
/// glued to the number — the whole alphanumeric run (hex ids, versions, `1st`).
fn number_end(input: &[u8], i: usize) -> usize {
    let n = input.len();
    let run_end = |mut j: usize| {
        while j < n && (input[j].is_ascii_alphanumeric() || input[j] == b'.') {
            j += 1;
        }
        j
    };
    let whole = run_end(i);
    let mut j = i;
    if input[i] == b'0' && i + 1 < n && matches!(input[i + 1], b'x' | b'X' | b'b' | b'B') {
        return whole;
    }
    while j < n && input[j].is_ascii_digit() {
        j += 1;
    }
    if j < n && input[j] == b'.' {
        j += 1;
        while j < n && input[j].is_ascii_digit() {
            j += 1;
        }
    }
    if j < n && matches!(input[j], b'e' | b'E') {
        let mut k = j + 1;
        if k < n && matches!(input[k], b'+' | b'-') {
            k += 1;
        }
        if k < n && input[k].is_ascii_digit() {
            while k < n && input[k].is_ascii_digit() {
                k += 1;
            }
            j = k;
        }
    }
    let glued = |from: usize| {
        let mut e = from;
        while e < n && input[e].is_ascii_alphabetic() {
            e += 1;
        }
        e > from
            && (e == n || !is_word(input[e]))
            && GLUED_KEYWORDS.contains(
                &String::from_utf8_lossy(&input[from..e])
                    .to_ascii_lowercase()
                    .as_str(),
            )
    };
    if j < whole {
        if glued(j) {
            return j;
        }
        if matches!(input[j], b'f' | b'F' | b'd' | b'D') && glued(j + 1) {
            return j + 1;
        }
    }
    whole
}

struct Token {
    tok: Tok,
    word: String,
}

fn tokenize(input: &[u8], quote: Option<u8>) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    if let Some(q) = quote {
        // The value continues a string opened by the application.
        let (end, closed) = scan_string(input, 0, q);
        out.push(Token {
            tok: Tok::Str { closed },
            word: String::from_utf8_lossy(&input[..end.saturating_sub(1)]).into_owned(),
        });
        i = end;
    }
    while i < input.len() && out.len() < MAX_TOKENS {
        let c = input[i];
        if c.is_ascii_whitespace() || c == 0x0b || c == 0xa0 || c == 0 {
            i += 1;
            continue;
        }
        let rest = &input[i..];
        if rest.starts_with(b"--") || c == b'#' {
            out.push(Token {
                tok: Tok::Comment,
                // `--` glued to text (`1---`, `ab--cd`) is not a MySQL comment; record it.
                word: if c == b'#' {
                    "#"
                } else if rest.get(2).is_none_or(|b| b.is_ascii_whitespace()) {
                    "--"
                } else {
                    "--+"
                }
                .into(),
            });
            while i < input.len() && input[i] != b'\n' {
                i += 1;
            }
            continue;
        }
        if rest.starts_with(b"/*") {
            // MySQL executable comments /*! … */ are SQL: keep tokenizing inside.
            if rest.starts_with(b"/*!") {
                i += 3;
                while i < input.len() && input[i].is_ascii_digit() {
                    i += 1;
                }
                continue;
            }
            out.push(Token {
                tok: Tok::Comment,
                word: "/*".into(),
            });
            match input[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i = i + 2 + p + 2,
                None => i = input.len(),
            }
            continue;
        }
        if rest.starts_with(b"*/") {
            i += 2;
            continue;
        }
        match c {
            b'\'' | b'"' | b'`' => {
                let (end, closed) = scan_string(input, i + 1, c);
                let tok = if c == b'`' {
                    Tok::Bare
                } else {
                    Tok::Str { closed }
                };
                // A literal's word is its quote character, then for an unclosed one the
                // start of its text (the context's first string keeps its text instead).
                let mut word = char::from(c).to_string();
                if !closed {
                    let text = String::from_utf8_lossy(&input[i + 1..end.min(i + 17)]);
                    word.push_str(text.trim());
                }
                out.push(Token { tok, word });
                i = end;
            }
            b';' => {
                out.push(Token {
                    tok: Tok::Semi,
                    word: String::new(),
                });
                i += 1;
            }
            b'(' => {
                out.push(Token {
                    tok: Tok::Open,
                    word: String::new(),
                });
                i += 1;
            }
            b')' => {
                out.push(Token {
                    tok: Tok::Close,
                    word: String::new(),
                });
                i += 1;
            }
            b',' => {
                out.push(Token {
                    tok: Tok::Comma,
                    word: String::new(),
                });
                i += 1;
            }
            b'@' => {
                let mut j = i + 1;
                while j < input.len() && (input[j] == b'@' || is_word(input[j])) {
                    j += 1;
                }
                out.push(Token {
                    tok: Tok::Var,
                    word: String::from_utf8_lossy(&input[i..j]).to_ascii_lowercase(),
                });
                i = j.max(i + 1);
            }
            b'&' | b'|' if i + 1 < input.len() && input[i + 1] == c => {
                out.push(Token {
                    tok: Tok::Logic,
                    word: String::new(),
                });
                i += 2;
            }
            b'=' | b'<' | b'>' | b'!' | b'+' | b'-' | b'*' | b'/' | b'%' | b'^' | b'|' | b'&'
            | b'~' | b':'
                if !uni_escape(input, i) =>
            {
                let mut j = i + 1;
                while j < input.len() && b"=<>!".contains(&input[j]) && j - i < 3 {
                    j += 1;
                }
                out.push(Token {
                    tok: Tok::Op,
                    word: String::from_utf8_lossy(&input[i..j]).into_owned(),
                });
                i = j;
            }
            b'0'..=b'9' => {
                let j = number_end(input, i);
                out.push(Token {
                    tok: Tok::Num,
                    word: String::new(),
                });
                i = j;
            }
            b'.' if i + 1 < input.len() && input[i + 1].is_ascii_digit() => {
                let mut j = i + 1;
                while j < input.len() && input[j].is_ascii_digit() {
                    j += 1;
                }
                out.push(Token {
                    tok: Tok::Num,
                    word: String::new(),
                });
                i = j;
            }
            c if is_word(c) || uni_escape(input, i) => {
                let mut j = i;
                while j < input.len() && (is_word(input[j]) || uni_escape(input, j)) {
                    j += if input[j] == b'%' { 6 } else { 1 };
                }
                let word = String::from_utf8_lossy(&input[i..j]).to_ascii_lowercase();
                let mut k = j;
                while k < input.len() && input[k].is_ascii_whitespace() {
                    k += 1;
                }
                let call = k < input.len() && input[k] == b'(';
                let tok = classify(&word, call);
                out.push(Token { tok, word });
                i = j;
            }
            _ => {
                i += 1;
            }
        }
    }
    out
}

/// SQL functions called without parentheses (`CURRENT_USER`, `UTC_DATE`).
const NILADIC_FUNCS: &[&str] = &[
    "current_user",
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "utc_date",
    "utc_time",
    "utc_timestamp",
    "session_user",
    "system_user",
];

/// Clause keywords stay keywords before a parenthesis (`having (1 or 1)`).
const CLAUSE_WORDS: &[&str] = &[
    "from", "where", "having", "on", "values", "into", "by", "when", "then", "else", "limit", "as",
    "exists",
];

fn classify(word: &str, call: bool) -> Tok {
    if word == "union" {
        Tok::Union
    } else if word == "select" || (VERBS.contains(&word) && !call) {
        // `SELECT(1)` is still a SELECT; `insert(…)`/`replace(…)` are also string functions.
        Tok::Verb
    } else if LOGIC.contains(&word) {
        Tok::Logic
    } else if OP_WORDS.contains(&word) {
        Tok::Op
    } else if (call && !CLAUSE_WORDS.contains(&word)) || NILADIC_FUNCS.contains(&word) {
        Tok::Func
    } else if KEYWORDS.contains(&word) {
        Tok::Keyword
    } else {
        Tok::Bare
    }
}

/// Scan a quoted string starting after the opening quote; returns (index after it, closed).
fn scan_string(input: &[u8], mut i: usize, q: u8) -> (usize, bool) {
    while i < input.len() {
        if input[i] == b'\\' {
            i += 2;
            continue;
        }
        if input[i] == q {
            if i + 1 < input.len() && input[i + 1] == q {
                i += 2;
                continue;
            }
            return (i + 1, true);
        }
        i += 1;
    }
    (input.len(), false)
}

fn is_cmp(t: &Token) -> bool {
    (t.tok == Tok::Keyword && t.word == "between")
        || t.tok == Tok::Op
            && matches!(
                t.word.as_str(),
                "=" | "<"
                    | ">"
                    | "<="
                    | ">="
                    | "!="
                    | "<>"
                    | "<=>"
                    | "=="
                    | "like"
                    | "rlike"
                    | "regexp"
                    | "sounds"
            )
}

fn is_dangerous_call(t: &Token) -> bool {
    t.tok == Tok::Func && DANGEROUS_FUNCS.contains(&t.word.as_str())
}

fn is_real_logic(t: &Token) -> bool {
    t.tok == Tok::Logic && !matches!(t.word.as_str(), "not" | "div" | "mod")
}

/// `SELECT … FROM`, `DROP TABLE`, `INSERT INTO … VALUES`, … starting at `toks[i]`.
fn verb_shape(toks: &[Token], i: usize) -> bool {
    let w = toks[i].word.as_str();
    let rest = &toks[i + 1..];
    let has = |kw: &str| rest.iter().take(64).any(|x| x.word == kw);
    match w {
        "select" => {
            has("from")
                || rest.first().is_some_and(|x| {
                    (matches!(x.tok, Tok::Func | Tok::Var | Tok::Num | Tok::Open)
                        && (x.tok != Tok::Num || rest.len() > 1))
                        || matches!(
                            x.word.as_str(),
                            "case" | "null" | "distinct" | "all" | "top"
                        )
                })
        }
        "call" => rest.first().is_some_and(|x| x.tok == Tok::Func),
        "insert" | "replace" => has("into") && has("values"),
        "delete" => has("from") && rest.len() > 1,
        "drop" | "create" | "alter" | "truncate" => {
            rest.first().is_some_and(|x| {
                matches!(
                    x.word.as_str(),
                    "table" | "database" | "procedure" | "user" | "schema" | "view" | "function"
                )
            }) && rest.len() > 1
        }
        "exec" | "execute" => rest.first().is_some_and(|x| {
            x.word.starts_with("xp_") || x.word.starts_with("sp_") || x.tok == Tok::Open
        }),
        "shutdown" => i > 0,
        "declare" => rest.first().is_some_and(|x| x.tok == Tok::Var),
        "waitfor" => rest
            .first()
            .is_some_and(|x| x.word == "delay" || x.word == "time"),
        _ => false,
    }
}

fn union_select(toks: &[Token], i: usize) -> bool {
    let mut j = i + 1;
    while j < toks.len() && matches!(toks[j].tok, Tok::Keyword | Tok::Open | Tok::Comment) {
        j += 1;
    }
    j < toks.len() && toks[j].tok == Tok::Verb && toks[j].word == "select"
}

/// After a logic operator at `toks[i]`: an operand compared, a call, a parenthesis, or a
/// lone operand ending the input or followed by a comment.
fn logic_tail(toks: &[Token], i: usize) -> bool {
    let Some(a) = toks.get(i + 1) else {
        return false;
    };
    if a.tok == Tok::Func || a.tok == Tok::Open {
        return a.tok == Tok::Open || is_dangerous_call(a) || toks.get(i + 2).is_some();
    }
    let operand = matches!(a.tok, Tok::Num | Tok::Str { .. } | Tok::Var)
        || (a.tok == Tok::Keyword && matches!(a.word.as_str(), "true" | "false" | "null"))
        || a.tok == Tok::Bare;
    if !operand {
        return false;
    }
    match toks.get(i + 2) {
        None => a.tok != Tok::Bare,
        Some(b) if is_cmp(b) => toks.get(i + 3).is_some_and(|c| {
            matches!(
                c.tok,
                Tok::Num
                    | Tok::Str { .. }
                    | Tok::Var
                    | Tok::Func
                    | Tok::Bare
                    | Tok::Open
                    | Tok::Keyword
            )
        }),
        Some(b) => {
            a.tok != Tok::Bare && matches!(b.tok, Tok::Comment | Tok::Semi)
                || (b.tok == Tok::Op
                    && b.word == "in"
                    && toks.get(i + 3).is_some_and(|c| c.tok == Tok::Open))
        }
    }
}

/// What [`scan_expr`] saw: a run of tokens that parses as one SQL expression.
#[derive(Debug, Default)]
struct Expr {
    /// Index of the first token that is not part of the expression.
    end: usize,
    /// The expression ended on a complete operand (not after an operator).
    complete: bool,
    /// `AND`/`OR`/`XOR`/`&&`/`||`.
    logic: usize,
    /// Comparisons: `=`, `<`, `LIKE`, `IS`, `BETWEEN`, …
    cmp: usize,
    /// Operators only SQL (or code) uses between values: `^`, `|`, `&`, `<<`, `%`, `DIV`, `IN`, …
    sql_op: usize,
    /// Operands other than bare words: numbers, strings, variables, functions, NULL/TRUE/FALSE.
    literal: usize,
    /// Stopped at a parenthesised `SELECT` where an operand belonged.
    subquery: bool,
}

const ARITH: &[&str] = &["+", "-", "*", "/"];

/// Parse `toks[start..]` as an SQL expression — operands joined by binary operators, with
/// unary prefixes, parentheses, calls and `IS [NOT] NULL` / `NOT LIKE` / `SOUNDS LIKE` forms —
/// and stop at the first token that does not fit. `after_operand`: `toks[start-1]` was an
/// operand already. Prose fails fast: two words in a row are not an expression.
fn scan_expr(toks: &[Token], start: usize, after_operand: bool) -> Expr {
    let mut e = Expr::default();
    let mut want_operand = !after_operand;
    let mut depth = 0usize;
    let mut i = start;
    let word = |i: usize| toks.get(i).map_or("", |t| t.word.as_str());
    while i < toks.len() {
        let t = &toks[i];
        if want_operand {
            match t.tok {
                Tok::Num | Tok::Var => e.literal += 1,
                Tok::Str { .. } => e.literal += 1,
                Tok::Keyword
                    if matches!(t.word.as_str(), "null" | "true" | "false" | "unknown") =>
                {
                    e.literal += 1
                }
                Tok::Bare if t.word == "binary" => {
                    i += 1;
                    continue;
                }
                // Keywords that are also common identifiers (`column`, `table`).
                Tok::Bare | Tok::Keyword
                    if t.tok == Tok::Bare
                        || matches!(
                            t.word.as_str(),
                            "column" | "table" | "schema" | "database"
                        ) => {}
                Tok::Func => {
                    e.literal += 1;
                    if toks.get(i + 1).is_some_and(|x| x.tok == Tok::Open) {
                        if toks.get(i + 2).is_some_and(|x| x.tok == Tok::Close) {
                            i += 2;
                        } else {
                            depth += 1;
                            i += 2;
                            continue;
                        }
                    }
                }
                Tok::Open => {
                    if toks
                        .get(i + 1)
                        .is_some_and(|x| x.tok == Tok::Verb && x.word == "select")
                    {
                        e.subquery = true;
                        break;
                    }
                    depth += 1;
                    i += 1;
                    continue;
                }
                Tok::Op if t.word.bytes().all(|b| b"-+!~".contains(&b)) => {
                    i += 1;
                    continue;
                }
                Tok::Logic if t.word == "not" => {
                    i += 1;
                    continue;
                }
                _ => break,
            }
            want_operand = false;
            i += 1;
            continue;
        }
        match t.tok {
            Tok::Op => {
                if is_cmp(t) {
                    e.cmp += 1;
                } else if !ARITH.contains(&t.word.as_str()) {
                    e.sql_op += 1;
                }
                if t.word == "sounds" && word(i + 1) == "like" {
                    i += 1;
                }
            }
            Tok::Logic if t.word == "not" => {
                // `NOT LIKE`, `NOT IN`, `NOT BETWEEN`, `NOT REGEXP`
                let next = toks.get(i + 1);
                if !next.is_some_and(|x| x.tok == Tok::Op || x.word == "between") {
                    break;
                }
                e.cmp += 1;
                i += 1;
            }
            Tok::Logic if matches!(t.word.as_str(), "div" | "mod") => e.sql_op += 1,
            Tok::Logic => e.logic += 1,
            // `-1' /ID having 1< 1 and …`: a clause joining two conditions.
            Tok::Keyword if matches!(t.word.as_str(), "having" | "where") => e.logic += 1,
            Tok::Keyword if t.word == "is" => {
                e.cmp += 1;
                if word(i + 1) == "not" {
                    i += 1;
                }
            }
            Tok::Keyword if t.word == "between" => e.cmp += 1,
            Tok::Close => {
                depth = depth.saturating_sub(1);
                i += 1;
                continue;
            }
            Tok::Comma if depth > 0 => {}
            // Adjacent string literals concatenate (`'a' 'b'`).
            Tok::Str { .. } if matches!(toks[i - 1].tok, Tok::Str { .. }) => {
                e.literal += 1;
                i += 1;
                continue;
            }
            _ => break,
        }
        want_operand = true;
        i += 1;
    }
    e.end = i;
    e.complete = !want_operand;
    e
}

/// A break-out that is a whole expression fitted between the application's `quote`s: it ends
/// on the application's closing quote (an unclosed string of that quote) or a comment, e.g.
/// `1' OR '1' XOR '0`, `aa' or column=+!1 #`, `A' DIV 'B`. `toks[start-1]` is an operand.
fn quoted_expression(toks: &[Token], start: usize, quote: u8) -> bool {
    let e = scan_expr(toks, start, true);
    // `+A' sounds like(select …`: the operator chain leads into a subquery.
    if e.subquery && e.end > start {
        return true;
    }
    // `'-(-1 or -1) and 1=0 union`, `test'-1/1/**/union(select table)`
    if e.complete
        && e.end > start
        && toks.get(e.end).is_some_and(|t| t.tok == Tok::Union)
        && (e.end + 1 == toks.len() || union_select(toks, e.end))
    {
        return true;
    }
    // `' OR UserID IS NOT 2`: the break-out's condition runs to the end of the value.
    if e.complete && e.end == toks.len() && e.logic > 0 && e.cmp > 0 && e.literal > 0 {
        return true;
    }
    let commented = toks.last().is_some_and(|t| t.tok == Tok::Comment);
    // `x' and email is NULL; --`: the statement ended before the comment.
    let semi = commented && toks.get(e.end).is_some_and(|t| t.tok == Tok::Semi);
    if !e.complete
        || e.end <= start
        || e.end + usize::from(semi) + usize::from(commented) != toks.len()
    {
        return false;
    }
    let last = &toks[e.end - 1];
    let fits_quote = matches!(last.tok, Tok::Str { closed: false })
        && last.word.as_bytes().first() == Some(&quote);
    // `1' OR 1&"1`: logic, then a string of the other quote left open with text in it.
    let other_quote = matches!(last.tok, Tok::Str { closed: false })
        && last.word.as_bytes().first() != Some(&quote)
        && last.word.len() > 1;
    if other_quote && e.logic > 0 {
        return true;
    }
    if !(fits_quote || commented) {
        return false;
    }
    if quote == b'"' {
        // Double quotes are also inch marks (`16" or 18"`) and quoted search words
        // (`SHABBY "AND WHITE"`): need logic, and text after the last quote unless commented.
        let tail_empty = fits_quote && last.word.len() == 1;
        return e.logic > 0 && (commented || !tail_empty);
    }
    // `'…' OP '…` with any operator; longer shapes need an operator prose does not use.
    // (Not when the tail is a run of doubled quotes: `DK'*`.) Arithmetic alone needs
    // two operators and text after the closing quote: `1'*column-0-'0`.
    let arith_chain = e.end >= start + 4
        && last.word.len() > 1
        && toks[start..e.end].iter().all(|t| t.tok != Tok::Bare);
    arith_chain
        || (e.end == start + 2
            && toks[start].tok == Tok::Op
            && !last
                .word
                .as_bytes()
                .get(1..)
                .unwrap_or_default()
                .starts_with(&[quote]))
        || e.logic + e.cmp + e.sql_op > 0
}

/// A comparison starting at `toks[j]`: `[(|unary]* operand [arith operand]* [)]* CMP
/// [(|unary]* operand`. Returns for each side 1 when it is a literal (not a bare word).
fn comparison_after(toks: &[Token], j: usize) -> Option<(usize, usize)> {
    let operand = |i: &mut usize| -> Option<usize> {
        while toks.get(*i).is_some_and(|t| {
            t.tok == Tok::Open
                || (t.tok == Tok::Op && t.word.bytes().all(|b| b"-+!~".contains(&b)))
                || t.word == "not"
        }) {
            *i += 1;
        }
        let t = toks.get(*i)?;
        let lit = match t.tok {
            Tok::Num | Tok::Str { .. } | Tok::Var | Tok::Func => 1,
            Tok::Keyword if matches!(t.word.as_str(), "null" | "true" | "false") => 1,
            Tok::Bare => 0,
            _ => return None,
        };
        *i += 1;
        if t.tok == Tok::Func && toks.get(*i).is_some_and(|x| x.tok == Tok::Open) {
            // Skip the call's arguments.
            let mut depth = 0usize;
            while let Some(x) = toks.get(*i) {
                *i += 1;
                match x.tok {
                    Tok::Open => depth += 1,
                    Tok::Close => {
                        depth = depth.saturating_sub(1);
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
            }
        }
        while toks.get(*i).is_some_and(|t| t.tok == Tok::Close) {
            *i += 1;
        }
        Some(lit)
    };
    let mut i = j;
    let mut left = operand(&mut i)?;
    while toks
        .get(i)
        .is_some_and(|t| t.tok == Tok::Op && ARITH.contains(&t.word.as_str()))
    {
        i += 1;
        left = left.max(operand(&mut i)?);
    }
    let c = toks.get(i)?;
    if c.tok == Tok::Keyword && c.word == "is" {
        // `column IS [NOT] NULL` tests a column: count its left side as a literal.
        left = 1;
        i += 1;
        if toks.get(i).is_some_and(|t| t.word == "not") {
            i += 1;
        }
    } else if c.word == "not" && toks.get(i + 1).is_some_and(|t| is_cmp(t) || t.word == "in") {
        // `NOT LIKE`, `NOT BETWEEN`, `NOT IN`
        i += 2;
    } else if is_cmp(c) {
        i += if c.word == "sounds" && toks.get(i + 1).is_some_and(|t| t.word == "like") {
            2
        } else {
            1
        };
    } else {
        return None;
    }
    let right = operand(&mut i)?;
    Some((left, right))
}

/// `toks[i]` begins the value: nothing before it but opening parentheses, optionally after
/// a `name=` (a value that is itself a query-string pair, `p=end and …`).
fn value_start(toks: &[Token], i: usize) -> bool {
    let skip = if i >= 2 && toks[0].tok == Tok::Bare && toks[1].word == "=" {
        2
    } else {
        0
    };
    i >= skip && toks[skip..i].iter().all(|x| x.tok == Tok::Open)
}

/// Shapes of a value used as written (numeric context, or carrying its own quotes).
fn plain_shapes(toks: &[Token]) -> bool {
    let n = toks.len();
    let commented = toks.last().is_some_and(|t| t.tok == Tok::Comment);
    let body = n - usize::from(commented);
    let e = scan_expr(toks, 0, false);
    if e.complete && e.end == body && body > 0 {
        let first = &toks[0];
        let last = &toks[body - 1];
        // `'1' OR '1'='1`: the value brings both quotes of its own break-out.
        if matches!(first.tok, Tok::Str { closed: true })
            && matches!(last.tok, Tok::Str { closed: false })
            && e.logic > 0
        {
            return true;
        }
        // `1--`, `1 * 1/*`, `@@version--`, `.1or-UTC_DATE--`: an expression ended by a
        // comment that cuts off the rest of the application's query.
        if commented
            && matches!(toks[n - 1].word.as_str(), "--" | "/*")
            && e.literal > 0
            && last.tok != Tok::Bare
        {
            return true;
        }
        // `HOPE AND 8=3`, `1 || user_id is not null`: logic over a comparison of values.
        if e.logic > 0
            && e.cmp > 0
            && (0..body)
                .any(|j| is_real_logic(&toks[j]) && comparison_after(toks, j + 1) == Some((1, 1)))
        {
            return true;
        }
    }
    for i in 0..n {
        let t = &toks[i];
        let prev = i.checked_sub(1).map(|p| &toks[p]);
        let value_before = prev.is_some_and(|p| {
            matches!(
                p.tok,
                Tok::Num | Tok::Close | Tok::Var | Tok::Str { closed: true }
            )
        });
        let word_at = |j: usize| toks.get(j).map_or("", |x| x.word.as_str());
        match t.tok {
            // `-1 union`, `-1 union/*`, `1/1/**/union(select …)`, `-6374 union 1,2,3--`
            Tok::Union
                if value_before
                    && toks.get(i + 1).is_none_or(|x| {
                        matches!(x.tok, Tok::Comment | Tok::Num | Tok::Open)
                            || matches!(x.word.as_str(), "all" | "distinct")
                    }) =>
            {
                return true;
            }
            // `1 order by 1`, `26544 group by 19--`, `1234.5) ORDER BY 1`
            Tok::Keyword
                if matches!(t.word.as_str(), "order" | "group")
                    && word_at(i + 1) == "by"
                    && prev.is_some_and(|p| matches!(p.tok, Tok::Num | Tok::Close))
                    && toks.get(i + 2).is_some_and(|x| {
                        x.tok == Tok::Num || (x.tok == Tok::Bare && toks.len() > i + 3)
                    }) =>
            {
                return true;
            }
            // `14/**/or(1)group by`: a condition joined by logic, then the clause cut off.
            Tok::Keyword
                if matches!(t.word.as_str(), "order" | "group")
                    && word_at(i + 1) == "by"
                    && prev.is_some_and(|p| p.tok == Tok::Close)
                    && i + 2 + usize::from(commented) == n
                    && toks[..i].iter().any(is_real_logic) =>
            {
                return true;
            }
            // `PHPX AND CHAR(124) USER …`: logic, then a character built from its code.
            Tok::Logic
                if is_real_logic(t)
                    && toks.get(i + 1).is_some_and(|x| {
                        x.tok == Tok::Func && matches!(x.word.as_str(), "char" | "chr")
                    })
                    && toks.get(i + 2).is_some_and(|x| x.tok == Tok::Open)
                    && toks.get(i + 3).is_some_and(|x| x.tok == Tok::Num)
                    && toks.get(i + 4).is_some_and(|x| x.tok == Tok::Close) =>
            {
                return true;
            }
            // `limit 0,1--`
            Tok::Keyword
                if t.word == "limit"
                    && i == 0
                    && commented
                    && toks.get(1).is_some_and(|x| x.tok == Tok::Num) =>
            {
                return true;
            }
            // `19 version() LIMIT 1,1`: a call's result limited to one row.
            Tok::Keyword
                if t.word == "limit"
                    && prev.is_some_and(|p| p.tok == Tok::Close)
                    && toks.get(i + 1).is_some_and(|x| x.tok == Tok::Num)
                    && toks.get(i + 2).is_some_and(|x| x.tok == Tok::Comma)
                    && toks.get(i + 3).is_some_and(|x| x.tok == Tok::Num)
                    && i + 4 + usize::from(commented) == n =>
            {
                return true;
            }
            // `3 where prod.id=3/*`, `id having (1 or 1)`
            Tok::Keyword if matches!(t.word.as_str(), "where" | "having") && i > 0 => {
                let prev_ok = prev.is_some_and(|p| {
                    matches!(p.tok, Tok::Num | Tok::Close | Tok::Bare)
                        && (i == 1 || p.tok != Tok::Bare)
                });
                let x = scan_expr(toks, i + 1, false);
                if prev_ok
                    && x.complete
                    && x.end + usize::from(commented) == n
                    && x.logic + x.cmp > 0
                    && x.literal > 0
                {
                    return true;
                }
            }
            // `1) from users where …`: the rest of a query after closing a call.
            Tok::Keyword
                if t.word == "from"
                    && prev.is_some_and(|p| p.tok == Tok::Close)
                    && toks.get(i + 1).is_some_and(|x| x.tok == Tok::Bare)
                    && matches!(word_at(i + 2), "where" | "limit" | "order" | "group") =>
            {
                return true;
            }
            // `1 into outfile '…'`
            Tok::Keyword
                if t.word == "into" && matches!(word_at(i + 1), "outfile" | "dumpfile") =>
            {
                return true;
            }
            // `1 ) ) as jdhz where 2021 = 2021`: closing the application's parentheses and
            // aliasing the derived table, then a condition running to the end of the value.
            Tok::Keyword
                if t.word == "as"
                    && prev.is_some_and(|p| p.tok == Tok::Close)
                    && toks.get(i + 1).is_some_and(|x| x.tok == Tok::Bare)
                    && matches!(word_at(i + 2), "where" | "having") =>
            {
                let x = scan_expr(toks, i + 3, false);
                if x.complete && x.end + usize::from(commented) == n && x.cmp > 0 && x.literal > 1 {
                    return true;
                }
            }
            // `iif(9229=4158,1,1/0)`, `if(1=1,…`: a conditional on a comparison of literals
            // opening the value (error- and boolean-based probes).
            Tok::Func
                if i == 0
                    && matches!(t.word.as_str(), "iif" | "if")
                    && toks.get(1).is_some_and(|x| x.tok == Tok::Open)
                    && comparison_after(toks, 2) == Some((1, 1))
                    && toks[2..].iter().any(|x| x.tok == Tok::Comma) =>
            {
                return true;
            }
            // `end and 'hizd' = 'hizd`, `end and ((("a" = "a`: closing a CASE of the
            // application's, then a tautology on literals.
            Tok::Keyword
                if t.word == "end"
                    && value_start(toks, i)
                    && toks.get(i + 1).is_some_and(is_real_logic)
                    && comparison_after(toks, i + 2) == Some((1, 1)) =>
            {
                return true;
            }
            // `case when … then … end` opening the value, also inside parentheses.
            Tok::Keyword if t.word == "case" && value_start(toks, i) => {
                let has = |w: &str| toks.iter().any(|x| x.word == w);
                if has("when") && has("then") && has("end") {
                    return true;
                }
            }
            // `LENGTH(version())`: a fingerprinting call nested in another call.
            Tok::Func
                if toks.get(i + 1).is_some_and(|x| x.tok == Tok::Open)
                    && toks.get(i + 2).is_some_and(is_dangerous_call)
                    && toks.get(i + 3).is_some_and(|x| x.tok == Tok::Open) =>
            {
                return true;
            }
            // `1; if exists (`, `1;do (1=1)`
            Tok::Semi
                if i > 0
                    && ((word_at(i + 1) == "if"
                        && toks
                            .get(i + 2)
                            .is_some_and(|x| x.word == "exists" || x.tok == Tok::Open))
                        || (word_at(i + 1) == "do"
                            && toks.get(i + 2).is_some_and(|x| x.tok == Tok::Open))) =>
            {
                return true;
            }
            _ => {}
        }
    }
    false
}

/// The SQL-injection shapes, on one context's tokens.
fn sqli_shape(toks: &[Token], quote: Option<u8>) -> bool {
    let quoted = quote.is_some();
    let t: Vec<Tok> = toks.iter().map(|x| x.tok).collect();
    let n = t.len();
    if n == 0 {
        return false;
    }
    if quoted {
        // Broke out of a string: the first token is the application's closed string.
        if !matches!(t[0], Tok::Str { closed: true }) || n < 2 {
            return false;
        }
        // `1')))  or …`: closing the application's parentheses too.
        let mut k = 1;
        while k < n && t[k] == Tok::Close {
            k += 1;
        }
        if k >= n {
            return false;
        }
        let toks = &toks[k - 1..];
        let n = toks.len();
        let next = &toks[1];
        let after_is_select = |j: usize| {
            toks.get(j).is_some_and(|x| x.tok == Tok::Open)
                && toks
                    .get(j + 1)
                    .is_some_and(|x| x.tok == Tok::Verb && x.word == "select")
        };
        let hit = match next.tok {
            Tok::Comma | Tok::Open => {
                after_is_select(1)
                    || toks.get(2).is_some_and(|x| {
                        x.tok == Tok::Open || x.word == "case" || is_dangerous_call(x)
                    })
            }
            Tok::Semi
                if toks.get(2).is_some_and(|x| {
                    x.tok == Tok::Func
                        || matches!(x.word.as_str(), "begin" | "declare" | "if" | "exec")
                }) =>
            {
                true
            }
            Tok::Logic => is_real_logic(next) && logic_tail(toks, 1),
            Tok::Union => union_select(toks, 1),
            Tok::Semi => toks.get(2).is_some_and(|x| {
                x.tok == Tok::Comment || (x.tok == Tok::Verb && verb_shape(toks, 2))
            }),
            Tok::Verb => verb_shape(toks, 1),
            Tok::Comment => {
                // `admin'--`, `1'--`; a measurement such as `7" #2` is not a break-out, nor a
                // quoted phrase starting with a number sign (`"#2 MOM"`: nothing precedes the
                // double quote, so no string of the application's is cut off).
                n == 2
                    && (next.word != "#"
                        || !(toks[0]
                            .word
                            .trim_end()
                            .ends_with(|c: char| c.is_ascii_digit())
                            || (quote == Some(b'"') && toks[0].word.is_empty())))
            }
            // `' = '`, `x' > 0x1`; not a number followed by a string (`"<3"`, a quoted heart:
            // `3 ""` is no SQL).
            Tok::Op if is_cmp(next) => toks.get(2).is_some_and(|x| {
                (matches!(x.tok, Tok::Str { .. } | Tok::Num | Tok::Var) || is_dangerous_call(x))
                    && !(x.tok == Tok::Num
                        && toks
                            .get(3)
                            .is_some_and(|y| matches!(y.tok, Tok::Str { .. })))
            }),
            // `1' in boolean mode) and 3787=7750--`: breaking out of MySQL's full-text
            // `AGAINST('…' IN BOOLEAN MODE)` and its parenthesis.
            Tok::Op
                if next.word == "in"
                    && toks.get(2).is_some_and(|x| x.word == "boolean")
                    && toks.get(3).is_some_and(|x| x.word == "mode")
                    && toks.get(4).is_some_and(|x| x.tok == Tok::Close)
                    && toks.len() > 5 =>
            {
                true
            }
            Tok::Op => toks.get(2).is_some_and(is_dangerous_call) || after_is_select(2),
            Tok::Keyword => {
                let w = next.word.as_str();
                let after = toks.get(2);
                match w {
                    "order" | "group" => after.is_some_and(|x| x.word == "by"),
                    "having" | "where" => after.is_some_and(|x| x.tok != Tok::Bare) && n > 3,
                    "limit" => after.is_some_and(|x| x.tok == Tok::Num),
                    "into" => after.is_some_and(|x| x.word == "outfile" || x.word == "dumpfile"),
                    "procedure" => after.is_some_and(|x| x.tok == Tok::Func),
                    // `') as xyz where 1=1`
                    "as" => toks.get(3).is_some_and(|x| {
                        matches!(
                            x.word.as_str(),
                            "where" | "union" | "order" | "group" | "having"
                        )
                    }),
                    _ => false,
                }
            }
            Tok::Close => toks.get(2).is_some_and(|x| {
                matches!(x.tok, Tok::Union | Tok::Semi | Tok::Comment)
                    || (is_real_logic(x) && logic_tail(toks, 2))
            }),
            Tok::Func => is_dangerous_call(next),
            _ => false,
        };
        // Backticks also mark code in prose (Markdown): only the clause shapes above.
        return hit || quote.is_some_and(|q| q != b'`' && quoted_expression(toks, 1, q));
    }
    if plain_shapes(toks) {
        return true;
    }
    for i in 0..n {
        let a = &toks[i];
        if a.tok == Tok::Union && union_select(toks, i) {
            return true;
        }
        if a.tok == Tok::Semi
            && toks.get(i + 1).is_some_and(|x| {
                (x.tok == Tok::Verb && (verb_shape(toks, i + 1) || x.word == "select"))
                    || (i > 0 && matches!(x.word.as_str(), "begin" | "declare"))
            })
        {
            return true;
        }
        if i == 0
            && is_real_logic(a)
            && logic_tail(toks, 0)
            && (toks.get(2).is_some_and(is_cmp) || toks.get(1).is_some_and(is_dangerous_call))
        {
            return true;
        }
        if a.tok == Tok::Func
            && matches!(
                a.word.as_str(),
                "sleep"
                    | "benchmark"
                    | "pg_sleep"
                    | "load_file"
                    | "extractvalue"
                    | "updatexml"
                    | "xp_cmdshell"
                    | "randomblob"
                    | "dbms_pipe.receive_message"
                    | "utl_inaddr.get_host_address"
            )
        {
            return true;
        }
        // After a word only when the statement is cut off by a SQL comment: `x select 1 -- `.
        let cut = toks
            .last()
            .is_some_and(|x| x.tok == Tok::Comment && matches!(x.word.as_str(), "--" | "/*"));
        if a.tok == Tok::Verb && (i == 0 || t[i - 1] != Tok::Bare || cut) && verb_shape(toks, i) {
            return true;
        }
        // Tautology after a value: 1 OR 1=1, 1) OR (1=1, @a AND sleep(1)
        if matches!(a.tok, Tok::Num | Tok::Close | Tok::Var)
            && toks.get(i + 1).is_some_and(is_real_logic)
        {
            let rest = &toks[i + 2..];
            // The comparison must be the condition right after the logic (`1 OR 1=1`), not
            // one further on in unrelated text (`(and vicinity)||3113039&cd20=…`).
            let cmp = comparison_after(toks, i + 2).is_some();
            let call = rest.first().is_some_and(is_dangerous_call);
            let paren = rest.first().is_some_and(|x| x.tok == Tok::Open);
            if (cmp
                && rest.first().is_some_and(|x| {
                    matches!(
                        x.tok,
                        Tok::Num | Tok::Open | Tok::Str { .. } | Tok::Var | Tok::Func
                    )
                }))
                || call
                || (paren && cmp)
            {
                return true;
            }
        }
        if a.tok == Tok::Close && toks.get(i + 1).is_some_and(|x| x.tok == Tok::Comment) && i > 0 {
            return true;
        }
    }
    false
}

/// Detect SQL injection; returns the fingerprint of the context that matched.
pub fn detect_sqli(input: &[u8]) -> Option<String> {
    let input = &input[..input.len().min(64 * 1024)];
    // A backtick-quoted identifier is a context too (`` `/**/where/**/1=1 ``, sqlmap's
    // boundary for identifiers built from input).
    for (quote, quoted) in [
        (None, false),
        (Some(b'\''), true),
        (Some(b'"'), true),
        (Some(b'`'), true),
    ] {
        if quoted && !input.contains(&quote.unwrap_or(0)) {
            continue;
        }
        let raw = tokenize(input, quote);
        // Inline comments separate tokens (`/**/`); only a trailing comment is part of a shape.
        let trailing_comment = raw
            .last()
            .filter(|t| t.tok == Tok::Comment)
            .map(|t| t.word.clone());
        let mut toks: Vec<Token> = raw.into_iter().filter(|t| t.tok != Tok::Comment).collect();
        if let Some(word) = trailing_comment {
            toks.push(Token {
                tok: Tok::Comment,
                word,
            });
        }
        if sqli_shape(&toks, quote) {
            return Some(toks.iter().take(8).map(|t| t.tok.ch()).collect());
        }
    }
    None
}

const BAD_TAGS: &[&str] = &[
    "script", "iframe", "frame", "frameset", "object", "embed", "applet", "meta", "link", "style",
    "base", "svg", "math", "xml", "xss", "import", "vmlframe", "isindex", "animate", "set",
    "handler", "listener", "template", "form", "video", "audio", "source", "img", "image", "body",
    "marquee", "details", "input", "button", "textarea", "select", "keygen", "portal", "a",
];
const URL_ATTRS: &[&str] = &[
    "href",
    "src",
    "action",
    "formaction",
    "data",
    "xlink:href",
    "background",
    "lowsrc",
    "dynsrc",
    "from",
    "to",
    "values",
    "by",
    "poster",
    "codebase",
    "srcdoc",
    "folder",
    "content",
    "attributename",
    "xmlns",
    "code",
    "archive",
    "classid",
    "lang",
    "location",
    "sandbox",
];

/// Decode the HTML character references browsers accept in URL attributes, including the
/// HTML5 named ones attackers use to hide `javascript:` (`&colon;`, `&lpar;`).
fn html_attr_decode(v: &[u8]) -> Vec<u8> {
    let named: &[(&[u8], u8)] = &[
        (b"colon", b':'),
        (b"lpar", b'('),
        (b"rpar", b')'),
        (b"period", b'.'),
        (b"tab", b'\t'),
        (b"newline", b'\n'),
        (b"sol", b'/'),
        (b"bsol", b'\\'),
        (b"comma", b','),
        (b"quot", b'"'),
        (b"apos", b'\''),
        (b"amp", b'&'),
        (b"lt", b'<'),
        (b"gt", b'>'),
    ];
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'&' {
            let rest = &v[i + 1..];
            if let Some((name, b)) = named
                .iter()
                .find(|(n, _)| rest.len() >= n.len() && rest[..n.len()].eq_ignore_ascii_case(n))
            {
                out.push(*b);
                i += 1 + name.len();
                if v.get(i) == Some(&b';') {
                    i += 1;
                }
                continue;
            }
            if rest.first() == Some(&b'#') {
                let (hex, start) = match rest.get(1) {
                    Some(b'x' | b'X') => (true, 2),
                    _ => (false, 1),
                };
                let mut j = start;
                let mut val: u32 = 0;
                while j < rest.len() && j < start + 8 {
                    let d = rest[j];
                    let dv = if hex {
                        (d as char).to_digit(16)
                    } else {
                        (d as char).to_digit(10)
                    };
                    match dv {
                        Some(x) => val = val.saturating_mul(if hex { 16 } else { 10 }) + x,
                        None => break,
                    }
                    j += 1;
                }
                if j > start {
                    out.push((val & 0xff) as u8);
                    i += 1 + j;
                    if v.get(i) == Some(&b';') {
                        i += 1;
                    }
                    continue;
                }
            }
        }
        out.push(v[i]);
        i += 1;
    }
    out
}

fn dangerous_url(v: &[u8]) -> bool {
    let v = &html_attr_decode(v);
    let cleaned: Vec<u8> = v
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace() && *b > 0x20 && *b != 0x7f)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    cleaned.starts_with(b"javascript:")
        || cleaned.starts_with(b"vbscript:")
        || cleaned.starts_with(b"data:")
        || cleaned.starts_with(b"livescript:")
        || cleaned.starts_with(b"mocha:")
}

fn script_scheme_name(v: &[u8]) -> bool {
    let cleaned: Vec<u8> = v
        .iter()
        .copied()
        .filter(|b| *b > 0x20 && *b != 0x7f)
        .map(|b| b.to_ascii_lowercase())
        .collect();
    matches!(
        cleaned.as_slice(),
        b"javascript" | b"vbscript" | b"livescript"
    )
}

/// Parse attributes from `i` until `>`; returns true on a dangerous attribute.
fn attrs_dangerous(input: &[u8], mut i: usize, tag_is_bad: bool) -> bool {
    let n = input.len();
    loop {
        while i < n && (input[i].is_ascii_whitespace() || input[i] == b'/' || input[i] == 0) {
            i += 1;
        }
        if i >= n || input[i] == b'>' {
            return false;
        }
        let start = i;
        while i < n
            && !input[i].is_ascii_whitespace()
            && input[i] != b'='
            && input[i] != b'>'
            && (i == start || input[i] != b'/')
        {
            i += 1;
        }
        let name: Vec<u8> = input[start..i].to_ascii_lowercase();
        while i < n && (input[i].is_ascii_whitespace() || input[i] == b'/') {
            i += 1;
        }
        let mut value: &[u8] = b"";
        let has_value = i < n && input[i] == b'=';
        if has_value {
            i += 1;
            while i < n && input[i].is_ascii_whitespace() {
                i += 1;
            }
            if i < n && (input[i] == b'"' || input[i] == b'\'' || input[i] == b'`') {
                let q = input[i];
                let vs = i + 1;
                i = vs;
                while i < n && input[i] != q {
                    i += 1;
                }
                value = &input[vs..i.min(n)];
                i += 1;
            } else {
                let vs = i;
                while i < n && !input[i].is_ascii_whitespace() && input[i] != b'>' {
                    i += 1;
                }
                value = &input[vs..i];
            }
        }
        // An event handler needs a value (`onerror=…`); a word like "Online" is not one.
        // A namespace prefix (`x:ontimer`) does not change that.
        let local: &[u8] = match name.iter().rposition(|b| *b == b':') {
            Some(p) if !name.starts_with(b"xlink") && !name.starts_with(b"xmlns") => &name[p + 1..],
            _ => &name,
        };
        if has_value
            && local.len() > 2
            && local.starts_with(b"on")
            && local[2..].iter().all(u8::is_ascii_alphabetic)
        {
            return true;
        }
        // SVG animation retargeting an event handler: `<set attributeName="onmouseover" to=…>`.
        if name == b"attributename" && value.len() > 2 && value[..2].eq_ignore_ascii_case(b"on") {
            return true;
        }
        if name == b"style" && has_value && (tag_is_bad || !value.is_empty()) {
            return true;
        }
        let name_s = String::from_utf8_lossy(&name);
        if URL_ATTRS.contains(&name_s.as_ref()) && dangerous_url(value) {
            return true;
        }
        // The value runs to the end of the input and is exactly a script scheme's name: the
        // rest (`&colon;alert…`) was cut off by the query-string `&` it was written with.
        if URL_ATTRS.contains(&name_s.as_ref()) && i >= n && script_scheme_name(value) {
            return true;
        }
        // IE data binding (`datasrc`/`datafld` with `dataformatas=html`) renders fetched
        // data as markup.
        if has_value && matches!(name.as_slice(), b"datasrc" | b"dataformatas") {
            return true;
        }
        if name.is_empty() {
            i += 1;
        }
    }
}

fn xss_from(input: &[u8], start: usize) -> bool {
    let n = input.len();
    let mut i = start;
    while i < n {
        if input[i] != b'<' {
            i += 1;
            continue;
        }
        let mut j = i + 1;
        if j < n && input[j] == b'/' {
            j += 1;
        }
        if j < n && input[j] == b'!' {
            // Comments and doctype: IE conditional comments and `<!-- … -->` hiding markup.
            let rest = input[j..].to_ascii_lowercase();
            if rest.starts_with(b"![cdata[")
                || rest.starts_with(b"!--[if")
                || rest.starts_with(b"!--<")
                || rest.windows(6).any(|w| w == b"import")
                || rest.starts_with(b"!entity")
                || rest.starts_with(b"!doctype")
            {
                return true;
            }
            i = j;
            continue;
        }
        if j < n && input[j] == b'?' {
            let rest = input[j..].to_ascii_lowercase();
            if rest.starts_with(b"?xml") || rest.starts_with(b"?import") {
                return true;
            }
        }
        let ts = j;
        while j < n && (input[j].is_ascii_alphanumeric() || input[j] == b':' || input[j] == b'-') {
            j += 1;
        }
        if j == ts {
            i += 1;
            continue;
        }
        let tag = String::from_utf8_lossy(&input[ts..j]).to_ascii_lowercase();
        let local = tag.rsplit(':').next().unwrap_or(&tag).to_string();
        let bad = BAD_TAGS.contains(&local.as_str());
        let strong_bad = matches!(
            local.as_str(),
            "script"
                | "iframe"
                | "frame"
                | "frameset"
                | "object"
                | "embed"
                | "applet"
                | "meta"
                | "base"
                | "xss"
                | "import"
                | "vmlframe"
                | "isindex"
                | "handler"
                | "listener"
                | "style"
                | "svg"
                | "math"
                | "xml"
                | "link"
                | "portal"
        );
        // XSLT and SVG elements by namespace prefix (`<xsl:template match="/">`): XSLT runs
        // script through extension elements, SVG carries its own script and event model.
        if strong_bad || tag.starts_with("xsl:") || tag.starts_with("svg:") {
            return true;
        }
        if attrs_dangerous(input, j, bad) {
            return true;
        }
        i = j;
    }
    false
}

/// Detect cross-site scripting.
pub fn detect_xss(input: &[u8]) -> bool {
    let input = &input[..input.len().min(64 * 1024)];
    if xss_from(input, 0) {
        return true;
    }
    // Attribute-value contexts: the value closes the application's quote and adds attributes.
    for q in [b'"', b'\'', b'`'] {
        if let Some(p) = input.iter().position(|b| *b == q) {
            if attrs_dangerous(input, p + 1, false) {
                return true;
            }
        }
    }
    // Unquoted attribute value context: `x onerror=alert(1)` / a bare javascript: URL.
    if let Some(p) = input.iter().position(|b| b.is_ascii_whitespace()) {
        if attrs_dangerous(input, p + 1, false) {
            return true;
        }
    }
    dangerous_url(input) && input.len() > 11 && input.iter().any(|b| *b == b'(' || *b == b'`')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqli_examples() {
        for s in [
            "1' or '1'='1",
            "1 OR 1=1",
            "' union select 1,2,3--",
            "1; drop table users",
            "admin'--",
            "1 and sleep(5)",
            "x' AND extractvalue(1,concat(0x5c,user()))-- -",
            "1) or (1=1",
            "SELECT password FROM users",
            // Numbers glued to keywords, comments ending an expression, ORDER BY probing.
            "1e0UNION SELECT 2",
            "-1 union/*",
            "1 order by 1--",
            "1--",
            "@@version--",
            "HOPE AND 8=3",
            // Break-outs that fit the application's closing quote.
            "A' DIV 'B",
            "1' OR '1' XOR '0",
            "aa' or column=+!1 #1",
            "asd\" or @@version^\"0",
            "'1' OR '1'='1",
            "LENGTH(version())",
            "(SELECT (1) FROM DUAL)",
            "1 into outfile ('asd')",
            "id having (1 or 1)",
            "'-(-1 or -1) and 1=0 union",
            "test'-1/1/**/union(select table)",
            "' OR UserID IS NOT 2",
            "1'*column-0-'0",
            "+A' sounds like(select case(1=1)when'1'then'A'end) and '1",
            "-1' /ID having 1< 1 and 1 like 1/'1 ",
            "1) from users where username='ad1min')",
            "1 and 1 not between 0 and 1",
            "1 AND 1 SOUNDS LIKE 1",
            "1 AND 1 NOT LIKE 0",
            "-123 inion select 1 -- ",
            "19 version() LIMIT 1,1",
            "1' OR 1&\"1",
            // A condition, then GROUP BY cut off; CHAR() after logic; SQLite's heavy query.
            "14/**/or(1)group\tby",
            "PHPX AND CHAR(124) USER CHAR(124)=0 AND XX=X",
            "RANDOMBLOB(500000000/2)",
            "foo' Eqv StrComp(username, 0x12+0x34+0xab+0xcd,0) Imp 'a",
            // sqlmap boundaries: derived-table alias, IIF, CASE end, full-text mode.
            "1  )   as jdhz where 2021  =  2021",
            "1   )    )    as zoso where 3633  =  3633",
            "iif  (  9229  =  4158,1,1/0  )  ",
            "end and 'hizd'  =  'hizd",
            "end and    (    (   \"dmgj\"  =  \"dmgj",
            "1' in boolean mode) and 3787=7750--",
            "(CaSE/**/wheN/**/2269=8610/**/thEn/**/''/**/ELSe/**/NUll/**/eNd)",
            "p=end and 'hizd'  =  'hizd",
            "x' and email is NULL; --",
            // Backtick-quoted identifier break-outs.
            "`/**/whERE/**/3698=3698/**/Or/**/6035=6035",
            "-6391`/**/wheRE/**/8298=8298/**/ORdER/**/bY/**/1210#",
        ] {
            assert!(detect_sqli(s.as_bytes()).is_some(), "missed {s}");
        }
        // A raw no-break space (Latin-1 0xA0) separates words.
        assert!(detect_sqli(b"1\xa0UNION\xa0SELECT\xa02--").is_some());
        for s in [
            "O'Brien",
            "hello world",
            "it's a nice day",
            "select a product",
            "1-2",
            "rock and roll",
            "2024-01-01",
            "john@example.com",
            // CCPA strings, tokens, quoted search words, inch marks, 942100's %u text.
            "1---",
            "y-551JDJFE2umM9oyJbi06pN6H4FCm2g--~A",
            "1611-IioXXIG1ti8rspL2vbXFy--",
            "SHABBY \"AND WHITE\"",
            "necklace length 16\" or 18\"",
            "'-\"8 TRACK PL",
            "MISTERGLAS.DK'*'''''''''''",
            "%u05ea%u05d5: '%u05de%u05d1%u05e8' | Sacara",
            "I'm here and you're there",
            "pages (1) group by topic",
            "14 (1) group by",
            "salt and char",
            "randomblob",
            "(see note 1) as shown where",
            "if (you = me, call)",
            "the end and all",
            "x=end and more",
            // Markdown code spans.
            "use `foo` where needed",
            "`code` or text and `more code` = 1",
            "run `ls -la` and then `cd /tmp`",
            "it's done and dusted; --",
            "in boolean mode",
            "please select 1 item",
            // Logic followed by a comparison only further on in unrelated text.
            "London (and vicinity)||3113039&cd20=page",
            "Passwords must be between 8 and 200 characters long.&field=signupUsername",
            "627523cc-92e9-47f0-8747-a3beba6f38d4&&callback=bc_json606",
            // A quoted heart and a quoted phrase starting with a number sign.
            "\"<3\"",
            "\"#2 MOM\"",
        ] {
            assert!(detect_sqli(s.as_bytes()).is_none(), "false positive {s}");
        }
    }

    #[test]
    fn xss_examples() {
        for s in [
            "<script>alert(1)</script>",
            "<img src=x onerror=alert(1)>",
            "\" onmouseover=\"alert(1)",
            "<a href=\"javascript:alert(1)\">x</a>",
            "<svg/onload=alert(1)>",
            "javascript:alert(1)",
            // Cut off by a query-string `&`: `<a href="jAvAsCrIpT&colon;alert…`.
            "<a href=\"jAvAsCrIpT",
            "<a href=javascript",
            "<div datafld=\"b\" dataformatas=\"html\" datasrc=\"#X\"></div>",
            // Namespaced XSLT / SVG elements.
            "<xsl:template match=\"/\">",
            "<svg:script>alert(1)</svg:script>",
        ] {
            assert!(detect_xss(s.as_bytes()), "missed {s}");
        }
        for s in [
            "a < b and c > d",
            "hello",
            "<b>bold</b>",
            "x=1&y=2",
            "onion rings",
            "<a href=\"/javascript-guide\">",
            "learn javascript",
            "xsl:template",
        ] {
            assert!(!detect_xss(s.as_bytes()), "false positive {s}");
        }
    }
}
