//! The ATT&CK side of Rampart: the machine-readable catalogue of the 50 technique rows that
//! mitigation M1037 "Filter Network Traffic" addresses (id, name, the seed page's mitigation
//! text), and lookups over it. Pure data; it knows nothing of policies. Coverage computation
//! lives in `rampart-analysis`, which pairs this catalogue with a policy.

#![deny(missing_docs)]

mod catalogue;

pub use catalogue::TECHNIQUES;
use serde::Serialize;

/// The mitigation every technique here is addressed by.
pub const MITIGATION_ID: &str = "M1037";
/// Its name.
pub const MITIGATION_NAME: &str = "Filter Network Traffic";

/// One technique row of the seed page.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Technique {
    /// Technique id, `T1234` or `T1234.001`.
    pub id: &'static str,
    /// ATT&CK name.
    pub name: &'static str,
    /// The seed's mitigation text for this technique (`-` where the seed has none).
    pub mitigation: &'static str,
}

impl Technique {
    /// The parent technique id (`T1557` for `T1557.001`), or `None` for a parent technique.
    pub fn parent(&self) -> Option<&'static str> {
        self.id.split_once('.').map(|(parent, _)| parent)
    }

    /// Whether this is a sub-technique.
    pub fn is_sub_technique(&self) -> bool {
        self.id.contains('.')
    }
}

/// The technique with this id (exact, case-sensitive `T` prefix).
pub fn lookup(id: &str) -> Option<&'static Technique> {
    TECHNIQUES.iter().find(|t| t.id == id)
}

/// Sub-techniques of a parent technique listed in the catalogue.
pub fn sub_techniques(parent: &str) -> impl Iterator<Item = &'static Technique> + '_ {
    TECHNIQUES
        .iter()
        .filter(move |t| t.parent() == Some(parent))
}

/// The catalogue ids closest to `id` by edit distance, for "did you mean" hints (at most 3,
/// only those within distance 2).
pub fn suggest(id: &str) -> Vec<&'static str> {
    let mut scored: Vec<(usize, &'static str)> = TECHNIQUES
        .iter()
        .map(|t| (edit_distance(id, t.id), t.id))
        .filter(|(d, _)| *d <= 2)
        .collect();
    scored.sort();
    scored.into_iter().take(3).map(|(_, id)| id).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_has_the_fifty_seed_rows_once_each() {
        assert_eq!(TECHNIQUES.len(), 50);
        let mut ids: Vec<_> = TECHNIQUES.iter().map(|t| t.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 50);
    }

    #[test]
    fn ids_are_well_formed_and_parents_are_listed() {
        for t in TECHNIQUES {
            let (base, sub) = t.id.split_once('.').unwrap_or((t.id, ""));
            assert!(base.len() == 5 && base.starts_with('T'), "{}", t.id);
            assert!(base[1..].chars().all(|c| c.is_ascii_digit()), "{}", t.id);
            assert!(sub.is_empty() || (sub.len() == 3 && sub.chars().all(|c| c.is_ascii_digit())));
            if let Some(parent) = t.parent() {
                assert!(lookup(parent).is_some(), "{} has no parent row", t.id);
            }
            assert!(!t.name.is_empty() && !t.mitigation.is_empty());
        }
    }

    #[test]
    fn seed_texts_are_carried_verbatim() {
        let t = lookup("T1021.005").unwrap();
        assert_eq!(t.name, "VNC");
        assert!(t.mitigation.starts_with("VNC defaults to TCP ports 5900"));
        assert_eq!(lookup("T1187").unwrap().name, "Forced Authentication");
        assert_eq!(sub_techniques("T1557").count(), 3);
    }

    #[test]
    fn suggestions_for_typos() {
        assert_eq!(suggest("T1188").first(), Some(&"T1187"));
        assert!(suggest("T1187").contains(&"T1187"));
        assert!(suggest("T1557.01").contains(&"T1557.001"));
        assert!(suggest("X9999.999").is_empty());
    }
}
