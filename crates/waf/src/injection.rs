//! `@detectSQLi` and `@detectXSS`, written for this project (not a libinjection port).
//!
//! SQLi: the input is tokenized as SQL three times — as written, as if it continued a
//! single-quoted string and as if it continued a double-quoted one (the contexts an injected
//! value lands in) — into a fingerprint of token classes (`s` string, `n` number, `k` keyword,
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
const LOGIC: &[&str] = &["and", "or", "xor", "not", "div", "mod"];
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
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b == b'.' || b >= 0x80
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
                word: String::new(),
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
                word: String::new(),
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
                out.push(Token {
                    tok,
                    word: String::new(),
                });
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
            | b'~' | b':' => {
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
                let mut j = i;
                while j < input.len() && (input[j].is_ascii_alphanumeric() || input[j] == b'.') {
                    j += 1;
                }
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
            c if is_word(c) => {
                let mut j = i;
                while j < input.len() && is_word(input[j]) {
                    j += 1;
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

fn classify(word: &str, call: bool) -> Tok {
    if word == "union" {
        Tok::Union
    } else if VERBS.contains(&word) && !call {
        Tok::Verb
    } else if LOGIC.contains(&word) {
        Tok::Logic
    } else if OP_WORDS.contains(&word) {
        Tok::Op
    } else if call {
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

/// The SQL-injection shapes, on one context's tokens.
fn sqli_shape(toks: &[Token], quoted: bool) -> bool {
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
        return match next.tok {
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
                // `admin'--`; a measurement such as `7" #2` is not a break-out.
                n == 2
                    && !toks[0]
                        .word
                        .trim_end()
                        .ends_with(|c: char| c.is_ascii_digit())
            }
            Tok::Op if is_cmp(next) => toks.get(2).is_some_and(|x| {
                matches!(x.tok, Tok::Str { .. } | Tok::Num | Tok::Var) || is_dangerous_call(x)
            }),
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
                    | "dbms_pipe.receive_message"
                    | "utl_inaddr.get_host_address"
            )
        {
            return true;
        }
        if a.tok == Tok::Verb && (i == 0 || t[i - 1] != Tok::Bare) && verb_shape(toks, i) {
            return true;
        }
        // Tautology after a value: 1 OR 1=1, 1) OR (1=1, @a AND sleep(1)
        if matches!(a.tok, Tok::Num | Tok::Close | Tok::Var)
            && toks.get(i + 1).is_some_and(is_real_logic)
        {
            let rest = &toks[i + 2..];
            let cmp = rest.iter().take(6).any(is_cmp);
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
    for (quote, quoted) in [(None, false), (Some(b'\''), true), (Some(b'"'), true)] {
        if quoted && !input.contains(&quote.unwrap_or(0)) {
            continue;
        }
        let raw = tokenize(input, quote);
        // Inline comments separate tokens (`/**/`); only a trailing comment is part of a shape.
        let ends_in_comment = raw.last().is_some_and(|t| t.tok == Tok::Comment);
        let mut toks: Vec<Token> = raw.into_iter().filter(|t| t.tok != Tok::Comment).collect();
        if ends_in_comment {
            toks.push(Token {
                tok: Tok::Comment,
                word: String::new(),
            });
        }
        if sqli_shape(&toks, quoted) {
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
        if strong_bad {
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
        ] {
            assert!(detect_sqli(s.as_bytes()).is_some(), "missed {s}");
        }
        for s in [
            "O'Brien",
            "hello world",
            "it's a nice day",
            "select a product",
            "1-2",
            "rock and roll",
            "2024-01-01",
            "john@example.com",
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
        ] {
            assert!(detect_xss(s.as_bytes()), "missed {s}");
        }
        for s in [
            "a < b and c > d",
            "hello",
            "<b>bold</b>",
            "x=1&y=2",
            "onion rings",
        ] {
            assert!(!detect_xss(s.as_bytes()), "false positive {s}");
        }
    }
}
