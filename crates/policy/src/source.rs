//! Source files and byte spans: every diagnostic points into a [`SourceMap`].

use rampart_ir::SourceLoc;

/// Index of a file in a [`SourceMap`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub(crate) u32);

/// A byte range in one source file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Span {
    /// The file.
    pub file: FileId,
    /// First byte.
    pub start: usize,
    /// One past the last byte.
    pub end: usize,
}

impl Span {
    /// A span covering `start..end` of `file`.
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Self { file, start, end }
    }
}

/// One loaded source file (a policy file, an included file, or a set file).
#[derive(Clone, Debug)]
pub struct SourceFile {
    name: String,
    text: String,
    line_starts: Vec<usize>,
}

impl SourceFile {
    /// The file name as the user (or the including file) named it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The text of 1-based line `line`, without its line terminator.
    pub fn line(&self, line: u32) -> Option<&str> {
        let idx = (line as usize).checked_sub(1)?;
        let start = *self.line_starts.get(idx)?;
        let end = self
            .line_starts
            .get(idx + 1)
            .copied()
            .unwrap_or(self.text.len());
        let s = self.text.get(start..end)?;
        Some(s.trim_end_matches(['\n', '\r']))
    }

    /// 1-based line and character column of byte offset `offset` (clamped into the text).
    pub fn line_col(&self, offset: usize) -> (u32, u32) {
        let offset = offset.min(self.text.len());
        let idx = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts.get(idx).copied().unwrap_or(0);
        let mut end = offset;
        while end > start && !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let col = self.text.get(start..end).map_or(0, |s| s.chars().count());
        (idx as u32 + 1, col as u32 + 1)
    }
}

/// All files read while loading one policy, so diagnostics can show their lines.
#[derive(Clone, Debug, Default)]
pub struct SourceMap {
    files: Vec<SourceFile>,
}

impl SourceMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a file and return its id.
    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        self.files.push(SourceFile {
            name: name.into(),
            text,
            line_starts,
        });
        FileId(self.files.len() as u32 - 1)
    }

    /// The file with this id.
    pub fn file(&self, id: FileId) -> &SourceFile {
        &self.files[id.0 as usize]
    }

    /// The first file with this name.
    pub fn by_name(&self, name: &str) -> Option<&SourceFile> {
        self.files.iter().find(|f| f.name == name)
    }

    /// All files in load order.
    pub fn files(&self) -> impl Iterator<Item = &SourceFile> {
        self.files.iter()
    }

    /// The start of `span` as a [`SourceLoc`].
    pub fn loc(&self, span: Span) -> SourceLoc {
        let file = self.file(span.file);
        let (line, col) = file.line_col(span.start);
        SourceLoc {
            file: file.name.clone(),
            line,
            col,
        }
    }

    /// Length of `span` in characters, cut at the end of its first line (at least 1).
    pub fn underline_len(&self, span: Span) -> u32 {
        let text = self.file(span.file).text();
        let start = span.start.min(text.len());
        let end = span.end.clamp(start, text.len());
        let s = text.get(start..end).unwrap_or("");
        let first = s.split('\n').next().unwrap_or("");
        (first.trim_end_matches('\r').chars().count() as u32).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_characters() {
        let mut map = SourceMap::new();
        let id = map.add("a.toml", "ab\nçd = 1\n");
        let f = map.file(id);
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(3), (2, 1));
        // 'ç' is two bytes: byte 5 is the 'd', column 2.
        assert_eq!(f.line_col(5), (2, 2));
        assert_eq!(f.line(2), Some("çd = 1"));
        assert_eq!(f.line(9), None);
        let span = Span::new(id, 3, 11);
        assert_eq!(map.underline_len(span), 6);
    }
}
