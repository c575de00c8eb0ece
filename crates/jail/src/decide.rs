//! The exec decision, pure: given what the kernel says about the file being executed, which
//! program (if any) it is.

use std::collections::{BTreeSet, HashMap};

use crate::Config;

/// A file's identity: device and inode (what hard links share).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

/// What is known about an exec before deciding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecFacts {
    /// The executed file.
    pub file: FileId,
    /// Its size in bytes.
    pub size_bytes: u64,
}

/// Lookup tables from file identity and content digest to the program index in
/// [`Config::programs`].
#[derive(Clone, Debug, Default)]
pub struct Identities {
    by_file: HashMap<FileId, usize>,
    by_digest: HashMap<[u8; 32], usize>,
    /// Sizes worth hashing: the sizes of configured files of programs that have digests.
    /// `None`: some program has digests but no path, so any size may be a copy.
    digest_sizes: Option<BTreeSet<u64>>,
}

impl Identities {
    /// Build from the configuration and the `stat` of each configured path, given as
    /// `(program index, file, size)`. A file claimed by two programs belongs to the first.
    pub fn build(config: &Config, files: &[(usize, FileId, u64)]) -> Self {
        let mut by_file = HashMap::new();
        for &(program, file, _) in files {
            by_file.entry(file).or_insert(program);
        }
        let mut by_digest = HashMap::new();
        let mut sizes = BTreeSet::new();
        let mut any_size = false;
        for (index, program) in config.programs.iter().enumerate() {
            if program.sha256.is_empty() {
                continue;
            }
            for digest in &program.sha256 {
                by_digest.entry(*digest).or_insert(index);
            }
            let known: Vec<u64> = files
                .iter()
                .filter(|(p, _, _)| *p == index)
                .map(|(_, _, size)| *size)
                .collect();
            if known.is_empty() {
                any_size = true;
            }
            sizes.extend(known);
        }
        let digest_sizes = if by_digest.is_empty() {
            Some(BTreeSet::new())
        } else if any_size {
            None
        } else {
            Some(sizes)
        };
        Self {
            by_file,
            by_digest,
            digest_sizes,
        }
    }

    /// The program whose configured file this is (same inode: the path or a hard link).
    pub fn by_file(&self, file: FileId) -> Option<usize> {
        self.by_file.get(&file).copied()
    }

    /// Whether an exec of a file with these facts must be hashed to decide (it is not a
    /// configured inode, and a copy of a digest-identified program could have this size).
    pub fn wants_digest(&self, facts: ExecFacts) -> bool {
        if self.by_file.contains_key(&facts.file) || self.by_digest.is_empty() {
            return false;
        }
        match &self.digest_sizes {
            None => true,
            Some(sizes) => sizes.contains(&facts.size_bytes),
        }
    }

    /// The program with this content digest.
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<usize> {
        self.by_digest.get(digest).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        Config::from_toml(text).unwrap()
    }

    #[test]
    fn inode_identity_catches_links_and_nothing_else() {
        let config = config("[[program]]\nname = \"a\"\npaths = [\"/x\"]\n");
        let file = FileId { dev: 1, ino: 42 };
        let ids = Identities::build(&config, &[(0, file, 100)]);
        assert_eq!(ids.by_file(file), Some(0));
        assert_eq!(ids.by_file(FileId { dev: 1, ino: 43 }), None);
        assert_eq!(ids.by_file(FileId { dev: 2, ino: 42 }), None);
        let other = ExecFacts {
            file: FileId { dev: 1, ino: 43 },
            size_bytes: 100,
        };
        assert!(
            !ids.wants_digest(other),
            "no digests configured: never hash"
        );
    }

    #[test]
    fn digests_are_checked_only_for_plausible_sizes() {
        let digest = "11".repeat(32);
        let config = config(&format!(
            "watch_mounts = [\"/\"]\n[[program]]\nname = \"a\"\npaths = [\"/x\"]\nsha256 = [\"{digest}\"]\n"
        ));
        let file = FileId { dev: 1, ino: 42 };
        let ids = Identities::build(&config, &[(0, file, 100)]);
        let copy = |size| ExecFacts {
            file: FileId { dev: 1, ino: 7 },
            size_bytes: size,
        };
        assert!(ids.wants_digest(copy(100)));
        assert!(!ids.wants_digest(copy(101)));
        assert!(
            !ids.wants_digest(ExecFacts {
                file,
                size_bytes: 100
            }),
            "known inode: no hash"
        );
        assert_eq!(ids.by_digest(&[0x11; 32]), Some(0));
        assert_eq!(ids.by_digest(&[0x12; 32]), None);
    }

    #[test]
    fn digest_without_path_hashes_every_size() {
        let digest = "22".repeat(32);
        let config = config(&format!(
            "watch_mounts = [\"/\"]\n[[program]]\nname = \"a\"\nsha256 = [\"{digest}\"]\n"
        ));
        let ids = Identities::build(&config, &[]);
        let facts = ExecFacts {
            file: FileId { dev: 3, ino: 9 },
            size_bytes: 12345,
        };
        assert!(ids.wants_digest(facts));
    }
}
