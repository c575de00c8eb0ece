//! Repository rules as tests: the architecture map names every workspace member, and every crate
//! opens with a crate-level doc comment saying what it owns.

use std::fs;
use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/cli sits two levels below the workspace root")
        .to_path_buf()
}

fn members() -> Vec<String> {
    let manifest = fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
    let start = manifest
        .find("members = [")
        .expect("workspace members list");
    let end = start + manifest[start..].find(']').unwrap();
    manifest[start..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"'))
        .map(|line| line.trim_end_matches(',').trim_end_matches('"').to_string())
        .collect()
}

#[test]
fn architecture_map_names_every_workspace_member() {
    let map = fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    let members = members();
    assert!(members.len() >= 8, "parsed members: {members:?}");
    let missing: Vec<_> = members
        .iter()
        .filter(|m| !map.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not mention {missing:?}"
    );
}

#[test]
fn every_crate_has_a_crate_doc() {
    for member in members() {
        let dir = workspace_root().join(&member).join("src");
        let root = ["lib.rs", "main.rs"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{member} has no lib.rs or main.rs"));
        let text = fs::read_to_string(&root).unwrap();
        let first = text.lines().next().unwrap_or("");
        assert!(
            first.starts_with("//!"),
            "{} must open with a //! crate doc",
            root.display()
        );
        assert!(
            !text.contains("placeholder"),
            "{} still carries a placeholder doc",
            root.display()
        );
    }
}
