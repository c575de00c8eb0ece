//! SecLang text → directives: line continuation, comments, quoting, and the three parts of a
//! `SecRule` (targets, operator, actions). Pure: the caller hands in file names and contents.

use crate::LoadError;

/// One directive with its source location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// File name as given by the caller (used in error messages).
    pub file: String,
    /// 1-based line where the directive starts.
    pub line: usize,
    /// Directive name as written (`SecRule`, `SecAction`, …).
    pub name: String,
    /// Arguments after unquoting (`\"` inside double quotes becomes `"`; other escapes are kept).
    pub args: Vec<String>,
}

/// Upper bound on one logical line (continuations joined); CRS's longest is ~8 KiB.
const MAX_LOGICAL_LINE_BYTES: usize = 1 << 20;

/// Split a configuration file into directives.
pub fn directives(file: &str, text: &str) -> Result<Vec<Directive>, LoadError> {
    let mut out = Vec::new();
    let mut logical = String::new();
    let mut start_line = 0usize;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        if logical.is_empty() {
            let trimmed = raw.trim_start();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            start_line = line_no;
        }
        let (body, continued) = match raw.strip_suffix('\\') {
            Some(b) => (b, true),
            None => (raw, false),
        };
        logical.push_str(body);
        if logical.len() > MAX_LOGICAL_LINE_BYTES {
            return Err(LoadError::Syntax {
                file: file.to_string(),
                line: start_line,
                message: "logical line longer than 1 MiB".into(),
            });
        }
        if continued {
            continue;
        }
        let parts = split_args(&logical).map_err(|message| LoadError::Syntax {
            file: file.to_string(),
            line: start_line,
            message,
        })?;
        logical.clear();
        let mut it = parts.into_iter();
        if let Some(name) = it.next() {
            out.push(Directive {
                file: file.to_string(),
                line: start_line,
                name,
                args: it.collect(),
            });
        }
    }
    if !logical.trim().is_empty() {
        return Err(LoadError::Syntax {
            file: file.to_string(),
            line: start_line,
            message: "file ends inside a continued line".into(),
        });
    }
    Ok(out)
}

/// Whitespace-separated words; double-quoted words may contain spaces and `\"`.
fn split_args(line: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut word = String::new();
        if first == '"' {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.peek() {
                        Some('"') => {
                            word.push('"');
                            chars.next();
                        }
                        Some(&n) => {
                            word.push('\\');
                            word.push(n);
                            chars.next();
                        }
                        None => word.push('\\'),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => word.push(c),
                }
            }
            if !closed {
                return Err("unterminated double quote".into());
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
        }
        out.push(word);
    }
    Ok(out)
}

/// One parsed action `name[:value]` (value unquoted from `'…'`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawAction {
    /// Action name, lower-cased.
    pub name: String,
    /// Value, if any.
    pub value: Option<String>,
}

/// Split an action list `id:1,phase:2,msg:'a, b',t:none`.
pub fn split_actions(text: &str) -> Result<Vec<RawAction>, String> {
    let mut out = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i].is_whitespace() || bytes[i] == ',') {
            i += 1;
        }
        if i >= bytes.len() {
            break;
        }
        let mut name = String::new();
        while i < bytes.len() && bytes[i] != ':' && bytes[i] != ',' {
            name.push(bytes[i]);
            i += 1;
        }
        let name = name.trim().to_ascii_lowercase();
        let mut value = None;
        if i < bytes.len() && bytes[i] == ':' {
            i += 1;
            while i < bytes.len() && bytes[i] == ' ' {
                i += 1;
            }
            let mut v = String::new();
            if i < bytes.len() && bytes[i] == '\'' {
                i += 1;
                let mut closed = false;
                while i < bytes.len() {
                    let c = bytes[i];
                    if c == '\\' && i + 1 < bytes.len() && bytes[i + 1] == '\'' {
                        v.push('\'');
                        i += 2;
                        continue;
                    }
                    if c == '\'' {
                        closed = true;
                        i += 1;
                        break;
                    }
                    v.push(c);
                    i += 1;
                }
                if !closed {
                    return Err(format!("unterminated quote in action {name}"));
                }
                // Anything up to the next comma after the closing quote is ignored whitespace.
                while i < bytes.len() && bytes[i] != ',' {
                    i += 1;
                }
            } else {
                while i < bytes.len() && bytes[i] != ',' {
                    v.push(bytes[i]);
                    i += 1;
                }
                v = v.trim_end().to_string();
            }
            value = Some(v);
        }
        if name.is_empty() {
            return Err("empty action name".into());
        }
        out.push(RawAction { name, value });
    }
    Ok(out)
}

/// One target as written: `!REQUEST_COOKIES:/__utm/`, `&TX:foo`, `ARGS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTarget {
    /// `&` prefix: count the values instead of inspecting them.
    pub count: bool,
    /// `!` prefix: exclude from the rule's other targets.
    pub exclude: bool,
    /// Collection or variable name, upper-cased.
    pub name: String,
    /// Key: plain, or `/regex/` (kept with slashes).
    pub key: Option<String>,
}

/// Split `A|!B:x|C:/re|gex/|D:'quoted'`.
pub fn split_targets(text: &str) -> Result<Vec<RawTarget>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let mut count = false;
        let mut exclude = false;
        while i < chars.len() && (chars[i] == '!' || chars[i] == '&' || chars[i] == ' ') {
            if chars[i] == '!' {
                exclude = true;
            } else if chars[i] == '&' {
                count = true;
            }
            i += 1;
        }
        let mut name = String::new();
        while i < chars.len() && chars[i] != ':' && chars[i] != '|' {
            name.push(chars[i]);
            i += 1;
        }
        let mut key = None;
        if i < chars.len() && chars[i] == ':' {
            i += 1;
            let mut k = String::new();
            // XML keys are XPath expressions (`/*`, `//@*`), never regexes.
            let xpath = name.trim().eq_ignore_ascii_case("XML");
            if !xpath && i < chars.len() && chars[i] == '/' {
                k.push('/');
                i += 1;
                let mut closed = false;
                while i < chars.len() {
                    let c = chars[i];
                    if c == '\\' && i + 1 < chars.len() {
                        k.push(c);
                        k.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    k.push(c);
                    i += 1;
                    if c == '/' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(format!("unterminated /regex/ key in target {name}"));
                }
            } else if i < chars.len() && chars[i] == '\'' {
                i += 1;
                while i < chars.len() && chars[i] != '\'' {
                    k.push(chars[i]);
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && chars[i] != '|' {
                    k.push(chars[i]);
                    i += 1;
                }
            }
            key = Some(k);
        }
        while i < chars.len() && chars[i] != '|' {
            i += 1;
        }
        i += 1;
        let name = name.trim().to_ascii_uppercase();
        if name.is_empty() {
            return Err("empty target name".into());
        }
        out.push(RawTarget {
            count,
            exclude,
            name,
            key,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_and_quotes() {
        let text = "# c\nSecRule ARGS \"@rx a\\\"b\" \\\n    \"id:1,\\\n    msg:'x, y'\"\n\nSecMarker END\n";
        let d = directives("f.conf", text).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[0].line, 2);
        assert_eq!(d[0].args, vec!["ARGS", "@rx a\"b", "id:1,    msg:'x, y'"]);
        assert_eq!(d[1].name, "SecMarker");
        assert_eq!(d[1].line, 6);
    }

    #[test]
    fn unterminated_quote_is_located() {
        let err = directives("f.conf", "\nSecRule ARGS \"@rx a").unwrap_err();
        assert!(err.to_string().starts_with("f.conf:2:"), "{err}");
    }

    #[test]
    fn actions_with_quotes_and_escapes() {
        let a = split_actions("id:1, msg:'a, \\'b\\'',t:none,setvar:tx.x=+1,chain").unwrap();
        assert_eq!(a.len(), 5);
        assert_eq!(a[1].value.as_deref(), Some("a, 'b'"));
        assert_eq!(a[3].value.as_deref(), Some("tx.x=+1"));
        assert_eq!(a[4].value, None);
    }

    #[test]
    fn targets_with_regex_keys_containing_bars() {
        let t = split_targets("ARGS|!REQUEST_COOKIES:/^(a|b)$/|&TX:foo|XML:/*").unwrap();
        assert_eq!(t.len(), 4);
        assert!(t[1].exclude);
        assert_eq!(t[1].key.as_deref(), Some("/^(a|b)$/"));
        assert!(t[2].count);
        assert_eq!(t[3].key.as_deref(), Some("/*"));
    }
}
