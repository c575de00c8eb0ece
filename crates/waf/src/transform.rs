//! SecLang transformations (`t:`), byte in, byte out, with ModSecurity's semantics.

use base64::Engine as _;

/// One transformation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transform {
    /// `lowercase`
    Lowercase,
    /// `uppercase`
    Uppercase,
    /// `urlDecode`
    UrlDecode,
    /// `urlDecodeUni`
    UrlDecodeUni,
    /// `htmlEntityDecode`
    HtmlEntityDecode,
    /// `jsDecode`
    JsDecode,
    /// `cssDecode`
    CssDecode,
    /// `base64Decode`
    Base64Decode,
    /// `base64DecodeExt`
    Base64DecodeExt,
    /// `base64Encode`
    Base64Encode,
    /// `hexDecode`
    HexDecode,
    /// `hexEncode`
    HexEncode,
    /// `sqlHexDecode`
    SqlHexDecode,
    /// `cmdLine`
    CmdLine,
    /// `compressWhitespace`
    CompressWhitespace,
    /// `removeWhitespace`
    RemoveWhitespace,
    /// `removeNulls`
    RemoveNulls,
    /// `replaceNulls`
    ReplaceNulls,
    /// `replaceComments`
    ReplaceComments,
    /// `removeComments`
    RemoveComments,
    /// `removeCommentsChar`
    RemoveCommentsChar,
    /// `normalizePath` / `normalisePath`
    NormalizePath,
    /// `normalizePathWin` / `normalisePathWin`
    NormalizePathWin,
    /// `utf8toUnicode`
    Utf8ToUnicode,
    /// `length`
    Length,
    /// `sha1`
    Sha1,
    /// `trim`
    Trim,
    /// `trimLeft`
    TrimLeft,
    /// `trimRight`
    TrimRight,
    /// `escapeSeqDecode`
    EscapeSeqDecode,
}

impl Transform {
    /// Parse a transformation name (case-insensitive).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name.trim().to_ascii_lowercase().as_str() {
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            "urldecode" => Self::UrlDecode,
            "urldecodeuni" => Self::UrlDecodeUni,
            "htmlentitydecode" => Self::HtmlEntityDecode,
            "jsdecode" => Self::JsDecode,
            "cssdecode" => Self::CssDecode,
            "base64decode" => Self::Base64Decode,
            "base64decodeext" => Self::Base64DecodeExt,
            "base64encode" => Self::Base64Encode,
            "hexdecode" => Self::HexDecode,
            "hexencode" => Self::HexEncode,
            "sqlhexdecode" => Self::SqlHexDecode,
            "cmdline" => Self::CmdLine,
            "compresswhitespace" => Self::CompressWhitespace,
            "removewhitespace" => Self::RemoveWhitespace,
            "removenulls" => Self::RemoveNulls,
            "replacenulls" => Self::ReplaceNulls,
            "replacecomments" => Self::ReplaceComments,
            "removecomments" => Self::RemoveComments,
            "removecommentschar" => Self::RemoveCommentsChar,
            "normalizepath" | "normalisepath" => Self::NormalizePath,
            "normalizepathwin" | "normalisepathwin" => Self::NormalizePathWin,
            "utf8tounicode" => Self::Utf8ToUnicode,
            "length" => Self::Length,
            "sha1" => Self::Sha1,
            "trim" => Self::Trim,
            "trimleft" => Self::TrimLeft,
            "trimright" => Self::TrimRight,
            "escapeseqdecode" => Self::EscapeSeqDecode,
            _ => return None,
        })
    }

    /// Whether the transformation certainly leaves `input` unchanged (a cheap scan that saves
    /// the allocation; `false` means "maybe changes").
    pub fn is_noop(self, input: &[u8]) -> bool {
        match self {
            Self::Lowercase => !input.iter().any(u8::is_ascii_uppercase),
            Self::Uppercase => !input.iter().any(u8::is_ascii_lowercase),
            Self::UrlDecode | Self::UrlDecodeUni => !input.iter().any(|b| *b == b'%' || *b == b'+'),
            Self::HtmlEntityDecode => !input.contains(&b'&'),
            Self::JsDecode | Self::CssDecode => !input.contains(&b'\\'),
            Self::RemoveNulls | Self::ReplaceNulls => !input.contains(&0),
            Self::Utf8ToUnicode => input.is_ascii(),
            Self::RemoveWhitespace => !input.iter().any(|b| is_space(*b) || *b == 0xa0),
            Self::CompressWhitespace => {
                !input
                    .iter()
                    .any(|b| (is_space(*b) && *b != b' ') || *b == 0xa0)
                    && !input.windows(2).any(|w| w == b"  ")
            }
            _ => false,
        }
    }

    /// Apply to `input`; `None` when the result equals the input.
    pub fn apply_changed(self, input: &[u8]) -> Option<Vec<u8>> {
        if self.is_noop(input) {
            return None;
        }
        let out = self.apply(input);
        (out != input).then_some(out)
    }

    /// Apply to `input`.
    pub fn apply(self, input: &[u8]) -> Vec<u8> {
        match self {
            Self::Lowercase => input.to_ascii_lowercase(),
            Self::Uppercase => input.to_ascii_uppercase(),
            Self::UrlDecode => url_decode(input, false),
            Self::UrlDecodeUni => url_decode(input, true),
            Self::HtmlEntityDecode => html_entity_decode(input),
            Self::JsDecode => js_decode(input),
            Self::CssDecode => css_decode(input),
            Self::Base64Decode => base64_decode(input, false),
            Self::Base64DecodeExt => base64_decode(input, true),
            Self::Base64Encode => base64::engine::general_purpose::STANDARD
                .encode(input)
                .into_bytes(),
            Self::HexDecode => hex_decode(input),
            Self::HexEncode => hex_encode(input),
            Self::SqlHexDecode => sql_hex_decode(input),
            Self::CmdLine => cmd_line(input),
            Self::CompressWhitespace => compress_whitespace(input),
            Self::RemoveWhitespace => input
                .iter()
                .copied()
                .filter(|b| !is_space(*b) && *b != 0xa0)
                .collect(),
            Self::RemoveNulls => input.iter().copied().filter(|b| *b != 0).collect(),
            Self::ReplaceNulls => input
                .iter()
                .map(|b| if *b == 0 { b' ' } else { *b })
                .collect(),
            Self::ReplaceComments => replace_comments(input),
            Self::RemoveComments => remove_comments(input),
            Self::RemoveCommentsChar => remove_comments_char(input),
            Self::NormalizePath => normalize_path(input, false),
            Self::NormalizePathWin => normalize_path(input, true),
            Self::Utf8ToUnicode => utf8_to_unicode(input),
            Self::Length => input.len().to_string().into_bytes(),
            Self::Sha1 => sha1_smol::Sha1::from(input).digest().bytes().to_vec(),
            Self::Trim => trim(input, true, true),
            Self::TrimLeft => trim(input, true, false),
            Self::TrimRight => trim(input, false, true),
            Self::EscapeSeqDecode => escape_seq_decode(input),
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn hex2(a: u8, b: u8) -> Option<u8> {
    Some(hexval(a)? << 4 | hexval(b)?)
}

/// A `%uHHHH`/`\uHHHH` code point as one byte: full-width ASCII maps to ASCII, otherwise the
/// low byte (ModSecurity without a unicode map).
fn uni_byte(cp: u32) -> u8 {
    if (0xff01..=0xff5e).contains(&cp) {
        (cp - 0xfee0) as u8
    } else {
        (cp & 0xff) as u8
    }
}

/// `urlDecode` / `urlDecodeUni`.
pub fn url_decode(input: &[u8], uni: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c == b'%' {
            if uni
                && i + 5 < input.len()
                && (input[i + 1] == b'u' || input[i + 1] == b'U')
                && input[i + 2..i + 6].iter().all(|b| hexval(*b).is_some())
            {
                let cp = input[i + 2..i + 6]
                    .iter()
                    .fold(0u32, |acc, b| acc << 4 | u32::from(hexval(*b).unwrap_or(0)));
                out.push(uni_byte(cp));
                i += 6;
                continue;
            }
            if i + 2 < input.len() {
                if let Some(v) = hex2(input[i + 1], input[i + 2]) {
                    out.push(v);
                    i += 3;
                    continue;
                }
            }
            out.push(c);
            i += 1;
        } else if c == b'+' {
            out.push(b' ');
            i += 1;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn named_entity(name: &[u8]) -> Option<u8> {
    Some(match name.to_ascii_lowercase().as_slice() {
        b"quot" => b'"',
        b"amp" => b'&',
        b"lt" => b'<',
        b"gt" => b'>',
        b"nbsp" => 0xa0,
        b"apos" => b'\'',
        _ => return None,
    })
}

fn html_entity_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'&' && i + 1 < input.len() {
            if input[i + 1] == b'#' {
                let (hex, start) = if i + 2 < input.len() && (input[i + 2] | 0x20) == b'x' {
                    (true, i + 3)
                } else {
                    (false, i + 2)
                };
                let mut j = start;
                while j < input.len()
                    && (if hex {
                        input[j].is_ascii_hexdigit()
                    } else {
                        input[j].is_ascii_digit()
                    })
                {
                    j += 1;
                }
                if j > start {
                    let digits = &input[start..j];
                    let mut v: u32 = 0;
                    for d in digits {
                        v = v
                            .saturating_mul(if hex { 16 } else { 10 })
                            .saturating_add(u32::from(hexval(*d).unwrap_or(0)));
                    }
                    out.push((v & 0xff) as u8);
                    i = if j < input.len() && input[j] == b';' {
                        j + 1
                    } else {
                        j
                    };
                    continue;
                }
            } else {
                let mut j = i + 1;
                while j < input.len() && input[j].is_ascii_alphanumeric() && j - i <= 8 {
                    j += 1;
                }
                if let Some(v) = named_entity(&input[i + 1..j]) {
                    out.push(v);
                    i = if j < input.len() && input[j] == b';' {
                        j + 1
                    } else {
                        j
                    };
                    continue;
                }
            }
        }
        out.push(input[i]);
        i += 1;
    }
    out
}

fn js_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let n = input[i + 1];
        if (n == b'u' || n == b'U')
            && i + 5 < input.len()
            && input[i + 2..i + 6].iter().all(|b| hexval(*b).is_some())
        {
            let cp = input[i + 2..i + 6]
                .iter()
                .fold(0u32, |acc, b| acc << 4 | u32::from(hexval(*b).unwrap_or(0)));
            out.push(uni_byte(cp));
            i += 6;
        } else if (n == b'x' || n == b'X') && i + 3 < input.len() {
            match hex2(input[i + 2], input[i + 3]) {
                Some(v) => {
                    out.push(v);
                    i += 4;
                }
                None => {
                    out.push(n);
                    i += 2;
                }
            }
        } else if (b'0'..=b'7').contains(&n) {
            let mut j = i + 1;
            let mut v: u32 = 0;
            while j < input.len() && j < i + 4 && (b'0'..=b'7').contains(&input[j]) {
                v = v * 8 + u32::from(input[j] - b'0');
                j += 1;
            }
            out.push((v & 0xff) as u8);
            i = j;
        } else {
            out.push(match n {
                b'a' => 7,
                b'b' => 8,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                other => other,
            });
            i += 2;
        }
    }
    out
}

fn css_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if i + 1 >= input.len() {
            // A trailing backslash is dropped.
            i += 1;
            continue;
        }
        let mut j = i + 1;
        while j < input.len() && j < i + 7 && input[j].is_ascii_hexdigit() {
            j += 1;
        }
        let nhex = j - (i + 1);
        if nhex > 0 {
            let digits = &input[i + 1..j];
            let cp = digits
                .iter()
                .fold(0u32, |acc, b| acc << 4 | u32::from(hexval(*b).unwrap_or(0)));
            let b = if nhex >= 5 || (nhex == 4 && (0xff01..=0xff5e).contains(&cp)) {
                uni_byte(cp)
            } else {
                (cp & 0xff) as u8
            };
            out.push(b);
            // One whitespace character after a hex escape is part of it.
            if j < input.len() && is_space(input[j]) {
                j += 1;
            }
            i = j;
        } else if input[i + 1] == b'\n' {
            i += 2;
        } else {
            out.push(input[i + 1]);
            i += 2;
        }
    }
    out
}

fn base64_decode(input: &[u8], ext: bool) -> Vec<u8> {
    let mut chars: Vec<u8> = Vec::with_capacity(input.len());
    for &b in input {
        let valid = b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
        if valid {
            chars.push(b);
        } else if b == b'=' {
            break;
        } else if b == b'-' || b == b'_' {
            chars.push(if b == b'-' { b'+' } else { b'/' });
        } else if !ext {
            break;
        }
    }
    // Decode as many complete bits as there are; a trailing single char carries no byte.
    let mut out = Vec::with_capacity(chars.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in chars {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        acc = acc << 6 | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

fn hex_decode(input: &[u8]) -> Vec<u8> {
    input
        .chunks(2)
        .filter_map(|c| if c.len() == 2 { hex2(c[0], c[1]) } else { None })
        .collect()
}

fn hex_encode(input: &[u8]) -> Vec<u8> {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut out = Vec::with_capacity(input.len() * 2);
    for b in input {
        out.push(H[usize::from(b >> 4)]);
        out.push(H[usize::from(b & 15)]);
    }
    out
}

fn sql_hex_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'0'
            && i + 3 < input.len()
            && (input[i + 1] | 0x20) == b'x'
            && input[i + 2].is_ascii_hexdigit()
            && input[i + 3].is_ascii_hexdigit()
        {
            let mut j = i + 2;
            while j + 1 < input.len() {
                match hex2(input[j], input[j + 1]) {
                    Some(v) => {
                        out.push(v);
                        j += 2;
                    }
                    None => break,
                }
            }
            i = j;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn cmd_line(input: &[u8]) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        match b {
            b'\\' | b'"' | b'\'' | b'^' => {}
            b' ' | b',' | b';' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c => {
                if !space {
                    out.push(b' ');
                    space = true;
                }
            }
            b'/' | b'(' => {
                if space {
                    out.pop();
                }
                space = false;
                out.push(b);
            }
            other => {
                space = false;
                out.push(other.to_ascii_lowercase());
            }
        }
    }
    out
}

fn compress_whitespace(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut space = false;
    for &b in input {
        if is_space(b) || b == 0xa0 {
            if !space {
                out.push(b' ');
            }
            space = true;
        } else {
            out.push(b);
            space = false;
        }
    }
    out
}

fn replace_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] == b'/' && i + 1 < input.len() && input[i + 1] == b'*' {
            match input[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i = i + 2 + p + 2,
                None => i = input.len(),
            }
            out.push(b' ');
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn remove_comments(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/*") {
            match input[i + 2..].windows(2).position(|w| w == b"*/") {
                Some(p) => i = i + 2 + p + 2,
                None => i = input.len(),
            }
        } else if rest.starts_with(b"<!--") {
            match input[i + 4..].windows(3).position(|w| w == b"-->") {
                Some(p) => i = i + 4 + p + 3,
                None => i = input.len(),
            }
        } else if rest.starts_with(b"--") || rest[0] == b'#' {
            // To the end of the line.
            while i < input.len() && input[i] != b'\n' {
                i += 1;
            }
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

fn remove_comments_char(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let rest = &input[i..];
        if rest.starts_with(b"/*") || rest.starts_with(b"*/") || rest.starts_with(b"--") {
            i += 2;
        } else if rest.starts_with(b"<!--") {
            i += 4;
        } else if rest.starts_with(b"-->") {
            i += 3;
        } else if rest[0] == b'#' {
            i += 1;
        } else {
            out.push(input[i]);
            i += 1;
        }
    }
    out
}

/// Collapse `//`, `/./` and resolve `/../` (never above the root for absolute paths).
pub fn normalize_path(input: &[u8], win: bool) -> Vec<u8> {
    let path: Vec<u8> = if win {
        input
            .iter()
            .map(|b| if *b == b'\\' { b'/' } else { *b })
            .collect()
    } else {
        input.to_vec()
    };
    if path.is_empty() {
        return path;
    }
    let absolute = path[0] == b'/';
    let trailing = path.ends_with(b"/")
        || path.ends_with(b"/.")
        || path.ends_with(b"/..")
        || path == b"."
        || path == b"..";
    let mut segs: Vec<&[u8]> = Vec::new();
    for seg in path.split(|b| *b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                if segs.last().is_some_and(|s| *s != b"..") {
                    segs.pop();
                } else if !absolute {
                    segs.push(seg);
                }
            }
            s => segs.push(s),
        }
    }
    let mut out = Vec::with_capacity(path.len());
    if absolute {
        out.push(b'/');
    }
    out.extend_from_slice(&segs.join(&b'/'));
    if trailing && !out.ends_with(b"/") && !segs.is_empty() {
        out.push(b'/');
    }
    out
}

fn utf8_to_unicode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let b = input[i];
        let len = match b {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => 1,
        };
        if len > 1 && i + len <= input.len() {
            if let Ok(s) = std::str::from_utf8(&input[i..i + len]) {
                if let Some(c) = s.chars().next() {
                    out.extend_from_slice(format!("%u{:04x}", u32::from(c)).as_bytes());
                    i += len;
                    continue;
                }
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn trim(input: &[u8], left: bool, right: bool) -> Vec<u8> {
    let mut s = input;
    if left {
        while let [first, rest @ ..] = s {
            if is_space(*first) {
                s = rest;
            } else {
                break;
            }
        }
    }
    if right {
        while let [rest @ .., last] = s {
            if is_space(*last) {
                s = rest;
            } else {
                break;
            }
        }
    }
    s.to_vec()
}

fn escape_seq_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'\\' || i + 1 >= input.len() {
            out.push(input[i]);
            i += 1;
            continue;
        }
        let n = input[i + 1];
        match n {
            b'a' => out.push(7),
            b'b' => out.push(8),
            b'f' => out.push(0x0c),
            b'n' => out.push(b'\n'),
            b'r' => out.push(b'\r'),
            b't' => out.push(b'\t'),
            b'v' => out.push(0x0b),
            b'\\' | b'?' | b'\'' | b'"' => out.push(n),
            b'x' | b'X' if i + 3 < input.len() => {
                if let Some(v) = hex2(input[i + 2], input[i + 3]) {
                    out.push(v);
                    i += 4;
                    continue;
                }
                out.push(b'\\');
                out.push(n);
            }
            b'0'..=b'7' => {
                let mut j = i + 1;
                let mut v: u32 = 0;
                while j < input.len() && j < i + 4 && (b'0'..=b'7').contains(&input[j]) {
                    v = v * 8 + u32::from(input[j] - b'0');
                    j += 1;
                }
                out.push((v & 0xff) as u8);
                i = j;
                continue;
            }
            _ => {
                out.push(b'\\');
                out.push(n);
            }
        }
        i += 2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str, input: &str) -> String {
        String::from_utf8_lossy(&Transform::parse(name).unwrap().apply(input.as_bytes()))
            .into_owned()
    }

    #[test]
    fn decoders() {
        assert_eq!(t("urlDecode", "a%20b+c%zz%4"), "a b c%zz%4");
        assert_eq!(t("urlDecodeUni", "%u0041%uff1c"), "A<");
        assert_eq!(
            t("htmlEntityDecode", "&lt;&#x41;&#66&quot;&bogus;"),
            "<AB\"&bogus;"
        );
        assert_eq!(t("jsDecode", "\\x41\\u0042\\n\\'\\101"), "AB\n'A");
        assert_eq!(t("cssDecode", "\\41 b\\\"\\00003c"), "Ab\"<");
        assert_eq!(t("base64Decode", "YWxlcnQoMSk="), "alert(1)");
        assert_eq!(t("base64DecodeExt", "YWx.lcnQoMSk"), "alert(1)");
        assert_eq!(t("hexDecode", "414243"), "ABC");
        assert_eq!(t("sqlHexDecode", "x 0x414243 y"), "x ABC y");
        assert_eq!(t("escapeSeqDecode", "a\\x41\\n\\q"), "aA\n\\q");
    }

    #[test]
    fn normalisers() {
        assert_eq!(t("cmdLine", "C^Md.Exe  /C  \"DiR\""), "cmd.exe/c dir");
        assert_eq!(t("compressWhitespace", "a \t\n b"), "a b");
        assert_eq!(t("removeWhitespace", " a b "), "ab");
        assert_eq!(t("replaceComments", "a/*x*/b/*c"), "a b ");
        assert_eq!(t("removeCommentsChar", "a/*b*/c--d#e"), "abcde");
        assert_eq!(t("normalizePath", "/a/./b//../c/"), "/a/c/");
        assert_eq!(t("normalizePath", "/../../etc/passwd"), "/etc/passwd");
        assert_eq!(t("normalizePathWin", "a\\..\\..\\b"), "../b");
        assert_eq!(t("utf8toUnicode", "a\u{e9}"), "a%u00e9");
        assert_eq!(t("length", "abcd"), "4");
        assert_eq!(t("lowercase", "AbC"), "abc");
        assert_eq!(
            hex_encode(&Transform::Sha1.apply(b"abc")),
            b"a9993e364706816aba3e25717850c26c9cd0d89d"
        );
    }

    #[test]
    fn noop_scan_agrees_with_apply() {
        // Deterministic byte strings over an alphabet rich in the bytes transformations act on.
        let alphabet = b"aZ09 %+&#;\\/\t\n\x00\xa0\xc3\xa9'\"<>.-*";
        let names = [
            "lowercase",
            "uppercase",
            "urlDecode",
            "urlDecodeUni",
            "htmlEntityDecode",
            "jsDecode",
            "cssDecode",
            "removeNulls",
            "replaceNulls",
            "utf8toUnicode",
            "removeWhitespace",
            "compressWhitespace",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..4000 {
            let len = (seed % 12) as usize;
            let mut v = Vec::new();
            for _ in 0..len {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                v.push(alphabet[(seed % alphabet.len() as u64) as usize]);
            }
            seed = seed.wrapping_add(0x9e37_79b9);
            for n in names {
                let t = Transform::parse(n).unwrap();
                if t.is_noop(&v) {
                    assert_eq!(t.apply(&v), v, "{n} changed {v:?}");
                }
                assert_eq!(
                    t.apply_changed(&v).unwrap_or_else(|| v.clone()),
                    t.apply(&v),
                    "{n} on {v:?}"
                );
            }
        }
    }
}
