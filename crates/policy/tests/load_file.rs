//! The file-system shell: paths relative to the including file, unreadable files, size bound.

use std::path::PathBuf;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "rampart-policy-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn includes_and_set_files_resolve_relative_to_their_file() {
    let tmp = TempDir::new("rel");
    let conf = tmp.0.join("conf");
    std::fs::create_dir_all(conf.join("lists")).unwrap();
    std::fs::write(
        tmp.0.join("policy.toml"),
        "include = [\"conf/sets.toml\"]\n",
    )
    .unwrap();
    std::fs::write(
        conf.join("sets.toml"),
        "[sets.bad]\nfile = \"lists/bad.txt\"\n\n[[rules]]\nname = \"x\"\ndirection = \"egress\"\nto = \"bad\"\naction = \"drop\"\n",
    )
    .unwrap();
    std::fs::write(conf.join("lists/bad.txt"), "198.51.100.66\n").unwrap();
    let loaded =
        rampart_policy::load_file(&tmp.0.join("policy.toml")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded.policy.sets[0].elements[0].to_string(),
        "198.51.100.66/32"
    );
    assert!(loaded
        .sources
        .files()
        .any(|f| f.name().ends_with("conf/lists/bad.txt")));
}

#[test]
fn unreadable_inputs_are_diagnostics() {
    let tmp = TempDir::new("bad");
    // A directory is not a policy file.
    let err = rampart_policy::load_file(&tmp.0).unwrap_err();
    assert_eq!(err.diagnostics[0].code, "E0011");
    // Not UTF-8.
    std::fs::write(tmp.0.join("latin1.toml"), b"# caf\xe9\n").unwrap();
    let err = rampart_policy::load_file(&tmp.0.join("latin1.toml")).unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    // Over the size bound: reported without reading the whole file.
    let big = tmp.0.join("big.toml");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(rampart_policy::limits::MAX_FILE_BYTES as u64 + 1)
        .unwrap();
    let err = rampart_policy::load_file(&big).unwrap_err();
    assert!(err.to_string().contains("larger than 16 MiB"), "{err}");
}
