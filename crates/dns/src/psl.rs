//! Public Suffix List: registered-domain (eTLD+1) computation. Parses the standard
//! `public_suffix_list.dat` text (Debian ships it at [`DEBIAN_PSL_PATH`]); [`PublicSuffixList::builtin`]
//! is a small fallback for tests and hosts without the package.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a as a `Hasher`: the PSL table is fixed data from a file, so hash flooding through
/// lookups can only lengthen probes among its ~10k entries; SipHash's cost is not needed here.
#[derive(Default)]
pub struct FnvHasher(u64);

impl Hasher for FnvHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for &b in bytes {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

type FastSet = HashSet<String, BuildHasherDefault<FnvHasher>>;

/// Where Debian's `publicsuffix` package installs the list.
pub const DEBIAN_PSL_PATH: &str = "/usr/share/publicsuffix/public_suffix_list.dat";

const BUILTIN: &str = "com\nnet\norg\nedu\ngov\nio\nde\nfr\nuk\nco.uk\nac.uk\njp\nco.jp\nau\ncom.au\nru\ncn\ncom.cn\nbr\ncom.br\nin\nco.in\ninfo\nbiz\nxyz\nexample\ntest\ninvalid\nlocal\narpa\nin-addr.arpa\nip6.arpa\ngithub.io\ncloudfront.net\nappspot.com\nblogspot.com\nherokuapp.com\n*.compute.amazonaws.com\n";

/// A parsed list.
#[derive(Clone, Debug, Default)]
pub struct PublicSuffixList {
    rules: FastSet,
    wildcards: FastSet,
    exceptions: FastSet,
}

impl PublicSuffixList {
    /// Parses list text (comments `//`, one rule per line, `*.` wildcards, `!` exceptions).
    /// Non-ASCII (IDN) rules are skipped; queried names are in A-label form anyway.
    pub fn parse(text: &str) -> Self {
        let mut psl = Self::default();
        for line in text.lines() {
            let rule = line.split_whitespace().next().unwrap_or("");
            if rule.is_empty() || rule.starts_with("//") || !rule.is_ascii() || rule.len() > 253 {
                continue;
            }
            let rule = rule.to_ascii_lowercase();
            if let Some(r) = rule.strip_prefix('!') {
                psl.exceptions.insert(r.to_string());
            } else if let Some(r) = rule.strip_prefix("*.") {
                psl.wildcards.insert(r.to_string());
            } else {
                psl.rules.insert(rule);
            }
        }
        psl
    }

    /// The built-in fallback list (common TLDs and a few multi-label suffixes).
    pub fn builtin() -> Self {
        Self::parse(BUILTIN)
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.rules.len() + self.wildcards.len() + self.exceptions.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Length in bytes of the public suffix of `name` (normalised, no trailing dot). Unlisted
    /// TLDs count as a one-label suffix (the PSL's implicit `*` rule).
    pub fn suffix_len(&self, name: &str) -> usize {
        // Walk suffixes from the longest (whole name) to the shortest; the first hit is the
        // longest matching rule.
        let mut start = 0usize;
        let bytes = name.as_bytes();
        loop {
            let suffix = &name[start..];
            if self.exceptions.contains(suffix) {
                // The exception's parent is the public suffix.
                return suffix
                    .find('.')
                    .map_or(suffix.len(), |d| suffix.len() - d - 1);
            }
            if self.rules.contains(suffix) {
                return suffix.len();
            }
            if let Some(d) = suffix.find('.') {
                if self.wildcards.contains(&suffix[d + 1..]) {
                    return suffix.len();
                }
            }
            match bytes[start..].iter().position(|&b| b == b'.') {
                Some(d) => start += d + 1,
                None => return suffix.len(),
            }
        }
    }

    /// The registered domain (eTLD+1) of `name`, or `None` when `name` is itself a public
    /// suffix (or empty).
    pub fn registered_domain<'a>(&self, name: &'a str) -> Option<&'a str> {
        if name.is_empty() {
            return None;
        }
        let sl = self.suffix_len(name);
        if sl >= name.len() {
            return None;
        }
        let head = &name[..name.len() - sl - 1];
        let start = head.rfind('.').map_or(0, |d| d + 1);
        Some(&name[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registered_domains() {
        let p = PublicSuffixList::parse("com\nuk\nco.uk\n*.ck\n!www.ck\ngithub.io\n// c\n");
        assert_eq!(p.registered_domain("a.b.example.com"), Some("example.com"));
        assert_eq!(p.registered_domain("example.com"), Some("example.com"));
        assert_eq!(p.registered_domain("com"), None);
        assert_eq!(p.registered_domain("x.bbc.co.uk"), Some("bbc.co.uk"));
        assert_eq!(p.registered_domain("a.b.foo.ck"), Some("b.foo.ck"));
        assert_eq!(p.registered_domain("www.ck"), Some("www.ck"));
        assert_eq!(p.registered_domain("u.github.io"), Some("u.github.io"));
        assert_eq!(p.registered_domain("x.y.unlisted"), Some("y.unlisted"));
    }

    #[test]
    fn debian_list_when_present() {
        match std::fs::read_to_string(DEBIAN_PSL_PATH) {
            Ok(text) => {
                let p = PublicSuffixList::parse(&text);
                assert!(p.len() > 5000);
                assert_eq!(
                    p.registered_domain("d1.cloudfront.net"),
                    Some("d1.cloudfront.net")
                );
                assert_eq!(
                    p.registered_domain("a.b.example.co.uk"),
                    Some("example.co.uk")
                );
            }
            Err(e) => eprintln!("skipping: {DEBIAN_PSL_PATH}: {e}"),
        }
    }
}
