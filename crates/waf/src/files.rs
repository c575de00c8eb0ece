//! The file-system shell around [`RuleSet`] loading: reads configuration files (with `*` globs in
//! the file name part), resolves `Include` and `@pmFromFile` paths relative to the including file.

use std::path::{Path, PathBuf};

use crate::rules::{DataFiles, RuleSet};
use crate::LoadError;

/// Largest configuration or data file read (CRS's biggest is < 1 MiB).
const MAX_FILE_BYTES: u64 = 16 << 20;

fn read_text(path: &Path) -> Result<String, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| LoadError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(LoadError::Io {
            path: path.display().to_string(),
            message: format!("larger than {MAX_FILE_BYTES} bytes"),
        });
    }
    let bytes = std::fs::read(path).map_err(|e| LoadError::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Expand a path whose file-name part may contain `*`; sorted; no match → empty.
pub fn expand_glob(pattern: &Path) -> Vec<PathBuf> {
    let name = pattern
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return if pattern.exists() {
            vec![pattern.to_path_buf()]
        } else {
            Vec::new()
        };
    }
    let dir = pattern.parent().unwrap_or(Path::new("."));
    let parts: Vec<&str> = name.split('*').collect();
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    let n = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    glob_match(&parts, &n)
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn glob_match(parts: &[&str], name: &str) -> bool {
    let Some((first, rest)) = parts.split_first() else {
        return name.is_empty();
    };
    let Some(mut s) = name.strip_prefix(first) else {
        return false;
    };
    for (i, p) in rest.iter().enumerate() {
        if i == rest.len() - 1 {
            return s.ends_with(p);
        }
        match s.find(p) {
            Some(pos) => s = &s[pos + p.len()..],
            None => return false,
        }
    }
    s.is_empty()
}

struct Fs;

impl DataFiles for Fs {
    fn read(&self, from: &str, name: &str) -> Option<String> {
        let base = Path::new(from).parent().unwrap_or(Path::new("."));
        let p = if Path::new(name).is_absolute() {
            PathBuf::from(name)
        } else {
            base.join(name)
        };
        read_text(&p).ok()
    }

    fn include(&self, from: &str, pattern: &str) -> Option<Vec<(String, String)>> {
        let base = Path::new(from).parent().unwrap_or(Path::new("."));
        let p = if Path::new(pattern).is_absolute() {
            PathBuf::from(pattern)
        } else {
            base.join(pattern)
        };
        let files = expand_glob(&p);
        if files.is_empty() {
            return None;
        }
        files
            .into_iter()
            .map(|f| read_text(&f).ok().map(|t| (f.display().to_string(), t)))
            .collect()
    }
}

/// Load configuration files in order (each may be a `dir/*.conf` pattern).
pub fn load(paths: &[PathBuf]) -> Result<RuleSet, LoadError> {
    let mut rs = RuleSet::new();
    add_files(&mut rs, paths)?;
    rs.finish()?;
    Ok(rs)
}

/// Add configuration files (patterns allowed) to `rs`.
pub fn add_files(rs: &mut RuleSet, paths: &[PathBuf]) -> Result<(), LoadError> {
    for p in paths {
        let files = expand_glob(p);
        if files.is_empty() {
            return Err(LoadError::Io {
                path: p.display().to_string(),
                message: "no such file".into(),
            });
        }
        for f in files {
            let text = read_text(&f)?;
            rs.add_text(&f.display().to_string(), &text, &Fs)?;
        }
    }
    Ok(())
}

/// Add configuration text that is not a file (e.g. generated settings), with data files and
/// includes resolved relative to `dir`.
pub fn add_inline(rs: &mut RuleSet, name: &str, text: &str, dir: &Path) -> Result<(), LoadError> {
    let pseudo = dir.join(name);
    rs.add_text(&pseudo.display().to_string(), text, &Fs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globbing() {
        assert!(glob_match(&["REQUEST-", ".conf"], "REQUEST-901-X.conf"));
        assert!(!glob_match(
            &["REQUEST-", ".conf"],
            "REQUEST-901.conf.example"
        ));
        assert!(glob_match(&["", ""], "anything"));
    }

    #[test]
    fn loads_from_disk_with_data_and_include() {
        let dir = std::env::temp_dir().join(format!("rampart-waf-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("rules")).unwrap();
        std::fs::write(dir.join("rules/words.data"), "# c\nevil\n").unwrap();
        std::fs::write(
            dir.join("rules/A.conf"),
            "SecRule ARGS \"@pmFromFile words.data\" \"id:1,phase:2,pass\"\n",
        )
        .unwrap();
        std::fs::write(dir.join("main.conf"), "Include rules/*.conf\n").unwrap();
        let rs = load(&[dir.join("main.conf")]).unwrap();
        assert_eq!(rs.rule_count(), 1);
        std::fs::write(
            dir.join("bad.conf"),
            "SecRule ARGS \"@pmFromFile nope.data\" \"id:2\"\n",
        )
        .unwrap();
        let e = load(&[dir.join("bad.conf")]).unwrap_err();
        assert!(e.to_string().contains("bad.conf:1:"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
