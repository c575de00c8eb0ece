//! The Rampart policy front-end: it owns the policy *language* (TOML files with includes,
//! zones, address sets, services, rules, defaults, built-in profiles and components) and turns
//! it into the IR ([`rampart_ir::Policy`]) in separate stages: TOML text → spanned generic tree
//! ([`syntax`]) → typed syntax tree ([`ast`]) → validated, name-resolved IR ([`resolve`], with
//! [`profiles`] expansion). Every problem becomes a [`Diagnostic`] with file:line:col, the
//! offending text underlined and a hint; all diagnostics of all files are reported in one run.
//! Non-goals: semantic analysis of the resulting rule set (shadowing, coverage: that is
//! `rampart-analysis`), emitting nftables, and fetching feeds. Only [`load_file`] touches the
//! file system; [`load_with`] is the pure core.

#![deny(missing_docs)]

pub mod ast;
mod diag;
pub mod fuzzing;
mod l2;
pub mod limits;
pub mod print;
pub mod profiles;
mod programs;
pub mod resolve;
pub mod services;
mod source;
pub mod syntax;

use std::fmt;

pub use diag::{render_all, Diagnostic, Label, Severity};
pub use print::{to_toml, PrintError};
pub use profiles::{ParamInfo, ParamKind, PartInfo, ProfileInfo};
pub use services::NamedService;
pub use source::{FileId, SourceFile, SourceMap, Span};

use diag::{Diags, Report};
use limits::{MAX_FILES, MAX_FILE_BYTES, MAX_INCLUDE_DEPTH, MAX_SET_ELEMENTS, MAX_SET_FILE_LINES};

/// A policy that loaded without errors.
#[derive(Debug)]
pub struct Loaded {
    /// The resolved policy.
    pub policy: rampart_ir::Policy,
    /// Warnings (never errors).
    pub warnings: Vec<Diagnostic>,
    /// Every file read, for rendering the warnings.
    pub sources: SourceMap,
}

/// A policy that did not load: every diagnostic found (errors and warnings).
#[derive(Debug)]
pub struct LoadError {
    /// All diagnostics, in the order found.
    pub diagnostics: Vec<Diagnostic>,
    /// Every file read, for rendering.
    pub sources: SourceMap,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(render_all(&self.diagnostics, &self.sources).trim_end())
    }
}

impl std::error::Error for LoadError {}

/// Read a policy file and its includes and set files from disk and load it.
pub fn load_file(path: &std::path::Path) -> Result<Loaded, LoadError> {
    let root = path.to_string_lossy().into_owned();
    load_with(&root, &mut |p: &str| read_bounded(std::path::Path::new(p)))
}

fn read_bounded(path: &std::path::Path) -> Result<String, std::io::Error> {
    use std::io::Read;
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    // Why: read one byte past the limit so an oversized file is detected without reading it all.
    file.take(MAX_FILE_BYTES as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > MAX_FILE_BYTES {
        return Err(std::io::Error::new(
            std::io::ErrorKind::FileTooLarge,
            format!("file is larger than {} MiB", MAX_FILE_BYTES >> 20),
        ));
    }
    String::from_utf8(buf).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "file is not valid UTF-8")
    })
}

/// The built-in service catalogue.
pub fn service_catalogue() -> &'static [NamedService] {
    services::CATALOGUE
}

/// The built-in profiles.
pub fn profiles() -> &'static [ProfileInfo] {
    profiles::PROFILES
}

/// Load a policy from in-memory sources. `root` names the policy file; `read` returns the
/// text of a file given its path (`root` itself, includes and set files, each resolved
/// relative to the file that names it).
pub fn load_with(
    root: &str,
    read: &mut dyn FnMut(&str) -> Result<String, std::io::Error>,
) -> Result<Loaded, LoadError> {
    let mut loader = Loader {
        read,
        sources: SourceMap::new(),
        diags: Diags::default(),
        files: Vec::new(),
        loaded: Vec::new(),
        stack: Vec::new(),
    };
    loader.load(root.to_string(), None, 0);
    loader.read_set_files();
    let Loader {
        sources,
        mut diags,
        files,
        ..
    } = loader;
    let policy = resolve::resolve(&files, &sources, &mut diags);
    let has_errors = diags.has_errors();
    let diagnostics = diags.finish(&sources);
    if has_errors {
        Err(LoadError {
            diagnostics,
            sources,
        })
    } else {
        Ok(Loaded {
            policy,
            warnings: diagnostics,
            sources,
        })
    }
}

struct Loader<'r> {
    read: &'r mut dyn FnMut(&str) -> Result<String, std::io::Error>,
    sources: SourceMap,
    diags: Diags,
    /// Parsed files in include-expanded order (includes before the including file's content).
    files: Vec<(FileId, ast::File)>,
    /// Path keys ([`path_key`]) of files already loaded.
    loaded: Vec<(String, Option<Span>)>,
    /// The include chain being loaded: (name, include span).
    stack: Vec<(String, Option<Span>)>,
}

impl Loader<'_> {
    fn read_text(&mut self, name: &str, at: Option<Span>, what: &str) -> Option<String> {
        let text = match (self.read)(name) {
            Ok(t) => t,
            Err(e) => {
                let mut r = Report::error("E0011", format!("cannot read {what} `{name}`: {e}"));
                if let Some(span) = at {
                    r = r.label(span, "named here");
                }
                self.diags.push(r);
                return None;
            }
        };
        if text.len() > MAX_FILE_BYTES {
            let mut r = Report::error(
                "E0005",
                format!(
                    "{what} `{name}` is larger than {} MiB",
                    MAX_FILE_BYTES >> 20
                ),
            );
            if let Some(span) = at {
                r = r.label(span, "named here");
            }
            self.diags.push(r);
            return None;
        }
        if self.sources.files().count() >= MAX_FILES {
            let mut r = Report::error("E0005", format!("more than {MAX_FILES} files loaded"));
            if let Some(span) = at {
                r = r.label(span, "one too many");
            }
            self.diags.push(r);
            return None;
        }
        Some(text)
    }

    fn load(&mut self, name: String, at: Option<Span>, depth: usize) {
        let key = path_key(&name);
        if let Some(pos) = self.stack.iter().position(|(n, _)| path_key(n) == key) {
            let chain: Vec<&str> = self.stack[pos..]
                .iter()
                .map(|(n, _)| n.as_str())
                .chain([name.as_str()])
                .collect();
            let mut r = Report::error("E0010", format!("include cycle: {}", chain.join(" → ")));
            if let Some(span) = at {
                r = r.label(span, "closes the cycle");
            }
            for (_, span) in self.stack[pos + 1..].iter().rev() {
                if let Some(span) = span {
                    r = r.label(*span, "included here");
                }
            }
            self.diags.push(r.hint("remove one of the includes"));
            return;
        }
        if let Some((_, first)) = self.loaded.iter().find(|(n, _)| *n == key) {
            let mut r = Report::warning(
                "W0207",
                format!("`{name}` is included more than once; loaded once"),
            );
            if let Some(span) = at {
                r = r.label(span, "included again here");
            }
            if let Some(first) = first {
                r = r.label(*first, "first included here");
            }
            self.diags.push(r);
            return;
        }
        if depth > MAX_INCLUDE_DEPTH {
            let mut r = Report::error(
                "E0012",
                format!("includes nest deeper than {MAX_INCLUDE_DEPTH} levels"),
            );
            if let Some(span) = at {
                r = r.label(span, "too deep");
            }
            self.diags.push(r);
            return;
        }
        let what = if at.is_some() {
            "included file"
        } else {
            "policy file"
        };
        let Some(text) = self.read_text(&name, at, what) else {
            return;
        };
        let id = self.sources.add(name.clone(), text);
        self.loaded.push((key, at));
        let text = self.sources.file(id).text().to_string();
        let Some(root) = syntax::parse(id, &text, &mut self.diags) else {
            return;
        };
        let file = ast::file_from_node(&root, &mut self.diags);
        self.stack.push((name.clone(), at));
        for inc in &file.includes {
            if inc.v.trim().is_empty() {
                self.diags
                    .push(Report::error("E0013", "empty include path").label(inc.span, "empty"));
                continue;
            }
            let path = join_path(&name, &inc.v);
            self.load(path, Some(inc.span), depth + 1);
        }
        self.stack.pop();
        self.files.push((id, file));
    }

    fn read_set_files(&mut self) {
        let mut jobs = Vec::new();
        for (fi, (id, f)) in self.files.iter().enumerate() {
            for (si, s) in f.sets.iter().enumerate() {
                if let Some(path) = &s.file {
                    if s.elements.is_none() {
                        let name = self.sources.file(*id).name().to_string();
                        jobs.push((fi, si, join_path(&name, &path.v), path.span));
                    }
                }
            }
        }
        for (fi, si, path, span) in jobs {
            let Some(text) = self.read_text(&path, Some(span), "set file") else {
                continue;
            };
            let id = self.sources.add(path.clone(), text);
            let elements =
                set_file_elements(id, self.sources.file(id).text(), span, &mut self.diags);
            let set = &mut self.files[fi].1.sets[si];
            set.file_elements = elements;
            set.file = Some(ast::S {
                v: path,
                span: set.file.as_ref().map_or(span, |f| f.span),
            });
        }
    }
}

/// Parse a set file: one address or prefix per line, `#` starts a comment.
fn set_file_elements(
    id: FileId,
    text: &str,
    named_at: Span,
    diags: &mut Diags,
) -> Vec<ast::S<String>> {
    let mut out = Vec::new();
    let mut offset = 0;
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let start = offset;
        offset += line.len();
        if i >= MAX_SET_FILE_LINES || out.len() >= MAX_SET_ELEMENTS {
            diags.push(
                Report::error(
                    "E0005",
                    format!("set file has more than {MAX_SET_FILE_LINES} lines or {MAX_SET_ELEMENTS} elements"),
                )
                .label(named_at, "set file named here"),
            );
            break;
        }
        let content = line.split('#').next().unwrap_or("");
        let trimmed = content.trim();
        if trimmed.is_empty() {
            continue;
        }
        let lead = content.len() - content.trim_start().len();
        let s = start + lead;
        out.push(ast::S {
            v: trimmed.to_string(),
            span: Span::new(id, s, s + trimmed.len()),
        });
    }
    out
}

/// Resolve `path` relative to the directory of `from`. `.` and empty segments are dropped;
/// `..` is kept, because collapsing it lexically is wrong when a directory is a symlink.
pub fn join_path(from: &str, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        match from.rfind('/') {
            Some(i) => format!("{}/{}", &from[..i], path),
            None => path.to_string(),
        }
    };
    let absolute = joined.starts_with('/');
    let body = joined
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect::<Vec<_>>()
        .join("/");
    if absolute {
        format!("/{body}")
    } else {
        body
    }
}

/// A lexical identity for a path (`a/x/../b` is `a/b`), used only to detect include cycles
/// and repeated includes.
fn path_key(path: &str) -> String {
    let absolute = path.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|p| *p != "..") {
                    parts.pop();
                } else if !absolute {
                    parts.push("..");
                }
            }
            s => parts.push(s),
        }
    }
    let body = parts.join("/");
    if absolute {
        format!("/{body}")
    } else {
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_paths_lexically() {
        assert_eq!(join_path("policy.toml", "zones.toml"), "zones.toml");
        assert_eq!(
            join_path("ex/a/policy.toml", "../b/z.toml"),
            "ex/a/../b/z.toml"
        );
        assert_eq!(path_key("ex/a/../b/z.toml"), "ex/b/z.toml");
        assert_eq!(path_key("../z.toml"), "../z.toml");
        assert_eq!(join_path("ex/policy.toml", "./z.toml"), "ex/z.toml");
        assert_eq!(join_path("ex/policy.toml", "/etc/z.toml"), "/etc/z.toml");
        assert_eq!(join_path("p.toml", "../z.toml"), "../z.toml");
        assert_eq!(join_path("a//b/./p.toml", "z.toml"), "a/b/z.toml");
    }
}
