//! The emitter declares exactly the kernel sets `rampart-feeds` fills for a feed in the split
//! layout (`feeds::sync::feed_sets(table, name, Layout::Split)`): same names, same family, same
//! kind (interval or hash), and every rule that names the feed set matches all of them. A
//! mismatch would make a refresh fail ("No such file or directory") or, worse, fill a set no
//! rule looks at.

use std::collections::BTreeMap;

use rampart_feeds::cidr::Fam;
use rampart_feeds::source::FeedSpec;
use rampart_feeds::sync::{feed_sets, Layout, SetRef};
use rampart_ir::*;
use rampart_nft::{emit, EmitOptions};

/// A declared set as the emitted text shows it.
#[derive(Debug, PartialEq, Eq)]
struct Declared {
    fam: Fam,
    interval: bool,
    elements: Option<String>,
    sized: bool,
}

/// Every `set NAME { ... }` block of the ruleset text.
fn declared_sets(text: &str) -> BTreeMap<String, Declared> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("set ")
            .and_then(|r| r.strip_suffix(" {"))
        else {
            continue;
        };
        let mut d = Declared {
            fam: Fam::V4,
            interval: false,
            elements: None,
            sized: false,
        };
        for body in lines.by_ref() {
            let body = body.trim();
            if body == "}" {
                break;
            }
            if body == "type ipv6_addr" {
                d.fam = Fam::V6;
            }
            if body == "flags interval" {
                d.interval = true;
            }
            if body.starts_with("size ") {
                d.sized = true;
            }
            if let Some(e) = body.strip_prefix("elements = ") {
                d.elements = Some(e.to_string());
            }
        }
        out.insert(name.to_string(), d);
    }
    out
}

fn policy_text() -> &'static str {
    r#"
[zones.lan]
interfaces = ["lan0"]
networks = ["192.0.2.0/24"]
trusted = true

[sets."tor-exits.v2"]
feed = { url = "https://example.com/tor.txt", format = "tor", refresh = "1h" }

[sets.bad]
elements = ["203.0.113.7", "198.51.100.0/24", "2001:db8:beef::1", "2001:db8:bad::/48"]
feed = { url = "https://example.com/bad.txt", format = "plain", refresh = "1h" }

[sets.office]
elements = ["198.51.100.9", "203.0.113.0/25"]

[[rules]]
name = "drop-bad"
direction = "ingress"
from = ["tor-exits.v2", "bad", "office"]
action = "drop"
mitigates = ["T1105"]
"#
}

fn load() -> Policy {
    let text = policy_text();
    let loaded = rampart_policy::load_with("policy.toml", &mut |p: &str| {
        if p == "policy.toml" {
            Ok(text.to_string())
        } else {
            Err(std::io::Error::new(std::io::ErrorKind::NotFound, p))
        }
    });
    match loaded {
        Ok(l) => l.policy,
        Err(e) => panic!("policy does not load: {:?}", e.diagnostics),
    }
}

/// The sets the feeds runner writes for every feed set of `policy`, by the name it uses.
fn runner_sets(policy: &Policy, table: &str) -> Vec<SetRef> {
    policy
        .sets
        .iter()
        .filter(|s| matches!(s.source, SetSource::Feed { .. }))
        .flat_map(|s| {
            let spec = FeedSpec::from_ir(s, &[]).unwrap();
            feed_sets(table, &spec.name, Layout::Split)
        })
        .collect()
}

#[test]
fn emitter_declares_the_split_layout_sets_the_feeds_runner_writes() {
    let policy = load();
    let opts = EmitOptions {
        table: "rampart_t".into(),
        ..EmitOptions::default()
    };
    let text = emit(&policy, &opts).unwrap();
    assert!(text.contains("table inet rampart_t {"), "{text}");
    let declared = declared_sets(&text);
    let wanted = runner_sets(&policy, &opts.table);
    assert_eq!(wanted.len(), 8, "two feeds, two families, two kinds");
    for s in &wanted {
        assert_eq!(s.table, opts.table);
        let d = declared
            .get(&s.set)
            .unwrap_or_else(|| panic!("{} not declared:\n{text}", s.set));
        assert_eq!((d.fam, d.interval), (s.fam, s.interval), "{}", s.set);
        // A size would cap the set at its compile-time snapshot.
        assert!(!d.sized, "{} has a size", s.set);
        // Every feed set is one alternative of the rule.
        let reference = format!("@{}", s.set);
        assert!(
            text.lines()
                .any(|l| l.contains(" saddr ") && l.split_whitespace().any(|w| w == reference)),
            "no rule matches {reference}:\n{text}"
        );
    }
    // Feed sets declared by the emitter are exactly those (the rest are the static set's).
    let feed_declared: Vec<&String> = declared
        .keys()
        .filter(|n| n.starts_with("set_tor_exits_v2_") || n.starts_with("set_bad_"))
        .collect();
    let mut wanted_names: Vec<&String> = wanted.iter().map(|s| &s.set).collect();
    wanted_names.sort();
    assert_eq!(feed_declared, wanted_names);
    assert!(declared.contains_key("set_office_v4_hosts"));
}

#[test]
fn feed_snapshot_is_placed_as_the_sync_places_it() {
    let policy = load();
    let text = emit(&policy, &EmitOptions::default()).unwrap();
    let declared = declared_sets(&text);
    let elements = |n: &str| declared[n].elements.clone();
    assert_eq!(
        elements("set_bad_v4_hosts").as_deref(),
        Some("{ 203.0.113.7 }")
    );
    assert_eq!(
        elements("set_bad_v4").as_deref(),
        Some("{ 198.51.100.0/24 }")
    );
    assert_eq!(
        elements("set_bad_v6_hosts").as_deref(),
        Some("{ 2001:db8:beef::1 }")
    );
    assert_eq!(
        elements("set_bad_v6").as_deref(),
        Some("{ 2001:db8:bad::/48 }")
    );
    // A feed with no snapshot: all four sets exist, empty.
    for n in [
        "set_tor_exits_v2_v4",
        "set_tor_exits_v2_v4_hosts",
        "set_tor_exits_v2_v6",
        "set_tor_exits_v2_v6_hosts",
    ] {
        assert_eq!(elements(n), None, "{n}");
    }
}

#[test]
fn feed_sets_are_named_after_the_feed_the_runner_refreshes() {
    // The IR allows a feed set whose feed has another name; the runner names kernel sets after
    // the feed, so the emitter must too.
    let set = AddressSet {
        name: "blocklist".into(),
        elements: vec![],
        source: SetSource::Feed {
            name: "spamhaus-drop".into(),
            url: "https://example.com/drop.txt".into(),
            format: "spamhaus".into(),
            refresh_s: 3600,
        },
        except: vec![],
        loc: SourceLoc {
            file: "policy.toml".into(),
            line: 1,
            col: 1,
        },
    };
    let mut rule = load().rules.pop().unwrap();
    rule.from = vec![Peer::Set(SetId(0))];
    let policy = Policy {
        sets: vec![set],
        rules: vec![rule],
        ..Policy::default()
    };
    let text = emit(&policy, &EmitOptions::default()).unwrap();
    let declared = declared_sets(&text);
    let wanted = runner_sets(&policy, "rampart");
    let names: Vec<&String> = declared.keys().collect();
    let mut wanted_names: Vec<&String> = wanted.iter().map(|s| &s.set).collect();
    wanted_names.sort();
    assert_eq!(names, wanted_names, "{text}");
}
