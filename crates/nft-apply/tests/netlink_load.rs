//! Kernel tests (root) of the netlink load path (`rampart_nft_apply::fastload`): a transaction
//! loaded over netlink lists exactly like the same transaction loaded by `nft -f` (whole
//! table, and `nft -j list set` per set) for IPv4 and IPv6, single addresses and prefixes,
//! overlapping and adjacent inputs, hash, masked-hash and interval sets, static and feed sets;
//! a batch the kernel refuses changes nothing; `apply` takes the path on its own for big
//! transactions. Each case uses namespaces it creates (unique names, removed on drop). Skips
//! with a printed reason when not root or nft is missing.

mod support;

use rampart_ir::*;
use rampart_nft::{emit, EmitOptions};
use rampart_nft_apply::fastload::{self, Skipped};
use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::StateDir;
use rampart_nft_apply::txn;
use support::*;

macro_rules! skip_unless_kernel {
    () => {
        if let Some(reason) = unavailable() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// Elements with every shape the encoder must get right: singles, prefixes of several
/// lengths (some numerous enough for masked hash sets), overlapping prefixes (a /25 inside a
/// /24), adjacent prefixes that aggregate (/25 + /25) and adjacent ones that cannot (/26 at
/// .64 and .128), and, as set data only (no traffic), prefixes reaching the top of the
/// address space (no end element).
fn mixed_elements() -> Vec<IpNet> {
    let mut v = Vec::new();
    for i in (0..256u32).step_by(2) {
        v.push(net(&format!("198.51.100.{i}/32")));
    }
    for i in 0..300u32 {
        v.push(net(&format!("2001:db8:1:{:x}::/64", i * 2)));
        v.push(net(&format!("2001:db8:2::{:x}/128", i * 3 + 1)));
    }
    for i in 0..80u32 {
        v.push(net(&format!("2001:db8:{:x}::/48", 0x100 + i * 2)));
    }
    for s in [
        "203.0.113.0/25",
        "203.0.113.128/25",
        "192.0.2.64/26",
        "192.0.2.128/26",
        "192.0.2.0/27",
        "192.0.2.0/28",
        "198.51.100.0/25",
        "255.255.255.0/24",
        "ffff::/16",
        "2001:db8:ff00::/40",
        "2001:db8:ff00:100::/56",
    ] {
        v.push(net(s));
    }
    v
}

fn policy() -> Policy {
    let elems = mixed_elements();
    let mut feed_snapshot: Vec<IpNet> = (0..200u32)
        .map(|i| net(&format!("203.0.113.{}/32", i)))
        .collect();
    feed_snapshot.extend((0..100u32).map(|i| net(&format!("2001:db8:9:{:x}::/64", i))));
    feed_snapshot.push(net("2001:db8:9::/60"));
    Policy {
        sets: vec![
            AddressSet {
                name: "mixed".into(),
                elements: IpNet::aggregate(&elems),
                source: SetSource::Inline,
                except: vec![],
                loc: SourceLoc::default(),
            },
            AddressSet {
                name: "intel".into(),
                elements: IpNet::aggregate(&feed_snapshot),
                source: SetSource::Feed {
                    name: "intel".into(),
                    url: "/dev/null".into(),
                    format: "plain".into(),
                    refresh_s: 3600,
                },
                except: vec![],
                loc: SourceLoc::default(),
            },
        ],
        rules: vec![
            Rule {
                from: vec![Peer::Set(SetId(0))],
                ..Rule::new("block-mixed", Direction::Ingress, Action::Drop)
            },
            Rule {
                from: vec![Peer::Set(SetId(1))],
                ..Rule::new("block-intel", Direction::Ingress, Action::Drop)
            },
        ],
        ..Policy::default()
    }
}

fn without_handles(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("handle");
            m.values_mut().for_each(without_handles);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_handles),
        _ => {}
    }
}

fn set_json(lab: &Lab, ns: &str, set: &str) -> serde_json::Value {
    let mut v: serde_json::Value =
        serde_json::from_str(&lab.exec_ok(ns, &format!("nft -j list set inet rampart {set}")))
            .unwrap();
    without_handles(&mut v);
    v
}

#[test]
fn netlink_load_lists_exactly_like_nft_for_every_set_shape() {
    skip_unless_kernel!();
    let text = emit(&policy(), &EmitOptions::default()).unwrap();
    let mut lab = Lab::new("nl");
    let by_nft = lab.ns("a");
    let by_netlink = lab.ns("b");
    let f = lab.write("t.nft", &text);
    lab.exec_ok(&by_nft, &format!("nft -f {}", f.display()));

    let p = fastload::prepare(&Nft::default(), &text, "rampart", 0, &lab.dir)
        .unwrap()
        .unwrap_or_else(|s| panic!("not prepared: {s:?}"));
    assert!(p.source_elements > 500, "{}", p.source_elements);
    fastload::load(&p, Some(&by_netlink)).unwrap();

    let list = |ns: &str| lab.exec_ok(ns, "nft list table inet rampart");
    let (a, b) = (list(&by_nft), list(&by_netlink));
    assert_eq!(a, b, "table listings differ");
    // Every shape is present, so the comparison covers it.
    for want in [
        "2001:db8:1::",           // masked /64 hash set
        "198.51.100.0/25",        // overlap absorbed, v4 prefix in an interval set
        "203.0.113.0/24",         // adjacent /25s aggregated
        "192.0.2.64-192.0.2.191", // adjacent, not one prefix: auto-merge joins them
        "255.255.255.0/24",       // open interval, IPv4
        "ffff::/16",              // open interval, IPv6
        "198.51.100.130",         // single addresses
        "2001:db8:2::4",
    ] {
        assert!(a.contains(want), "missing {want} in:\n{a}");
    }
    let sets: Vec<String> = a
        .lines()
        .filter_map(|l| l.trim().strip_prefix("set "))
        .map(|l| l.trim_end_matches(" {").to_string())
        .collect();
    assert!(sets.len() >= 6, "{sets:?}");
    for s in &sets {
        assert_eq!(
            set_json(&lab, &by_nft, s),
            set_json(&lab, &by_netlink, s),
            "set {s}"
        );
    }
}

#[test]
fn interval_sets_without_auto_merge_keep_adjacent_ranges_apart() {
    skip_unless_kernel!();
    let mut lab = Lab::new("nm");
    let by_nft = lab.ns("a");
    let by_netlink = lab.ns("b");
    let mut text = String::from(
        "table inet rampart {\n}\ndelete table inet rampart\ntable inet rampart {\n\tset a4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t}\n\tset a6 {\n\t\ttype ipv6_addr\n\t\tflags interval\n\t}\n}\n",
    );
    let v4: Vec<String> = (0..100u32)
        .map(|i| format!("198.51.100.{}/30", i * 4 % 256))
        .chain([
            "192.0.2.7".into(),
            "192.0.2.8/29".into(),
            "255.255.255.254/31".into(),
        ])
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let v6: Vec<String> = (0..100u32)
        .map(|i| format!("2001:db8:0:{:x}::/64", i))
        .chain(["2001:db8:1::1".into(), "ffff:ffff::/32".into()])
        .collect();
    text.push_str(&format!(
        "add element inet rampart a4 {{ {} }}\n",
        v4.join(", ")
    ));
    text.push_str(&format!(
        "add element inet rampart a6 {{ {} }}\n",
        v6.join(", ")
    ));
    let f = lab.write("t.nft", &text);
    lab.exec_ok(&by_nft, &format!("nft -f {}", f.display()));
    let p = fastload::prepare(&Nft::default(), &text, "rampart", 0, &lab.dir)
        .unwrap()
        .unwrap();
    fastload::load(&p, Some(&by_netlink)).unwrap();
    for s in ["a4", "a6"] {
        assert_eq!(
            set_json(&lab, &by_nft, s),
            set_json(&lab, &by_netlink, s),
            "set {s}"
        );
    }
    let listed = lab.exec_ok(&by_netlink, "nft list set inet rampart a6");
    assert!(
        listed.contains("2001:db8::/64") && listed.contains("2001:db8:0:1::/64"),
        "{listed}"
    );
    assert!(listed.contains("ffff:ffff::/32"), "{listed}");
}

/// Statements Rampart's emitter does not write today, replayed all the same: concatenated
/// interval keys, a verdict map jumping to a chain, named counter/limit/quota objects, a set
/// with timeouts, anonymous interval sets, `ct count`, `log`.
const EDGE_TABLE: &str = r#"table inet rampart {
}
delete table inet rampart
table inet rampart {
	set big { type ipv4_addr; flags interval; }
	set cc { type ipv4_addr . inet_service; flags interval; elements = { 192.0.2.0/24 . 22-25, 198.51.100.1 . 80 } }
	map vm { type inet_service : verdict; elements = { 22 : jump c2, 80 : drop } }
	set tm { type ipv4_addr; flags timeout; timeout 1h; elements = { 192.0.2.9 timeout 10m } }
	counter cnt { }
	limit lim { rate 10/second }
	quota q { over 100 mbytes }
	chain c2 {
		counter accept
	}
	chain input {
		type filter hook input priority filter; policy accept;
		tcp dport { 137-139, 445, 1000-2000 } counter drop
		ip saddr . tcp dport @cc counter name cnt accept
		tcp dport vmap @vm
		ip saddr @big limit name lim drop
		meta l4proto udp quota name q drop
		ip6 saddr { 2001:db8::/32, 2001:db8:1::1 } log prefix "x" group 5 drop
		ct state new ct count over 10 drop
	}
}
add element inet rampart big { 192.0.2.0/25, 198.51.100.0/24 }
"#;

fn without_expiry(listing: &str) -> String {
    let mut words: Vec<&str> = Vec::new();
    let mut it = listing.split(' ');
    while let Some(w) = it.next() {
        if w == "expires" {
            it.next();
        } else {
            words.push(w);
        }
    }
    words.join(" ")
}

#[test]
fn other_statement_kinds_replay_exactly() {
    skip_unless_kernel!();
    let mut lab = Lab::new("ne");
    let by_nft = lab.ns("a");
    let by_netlink = lab.ns("b");
    let f = lab.write("edge.nft", EDGE_TABLE);
    lab.exec_ok(&by_nft, &format!("nft -f {}", f.display()));
    let p = fastload::prepare(&Nft::default(), EDGE_TABLE, "rampart", 0, &lab.dir)
        .unwrap()
        .unwrap_or_else(|s| panic!("not prepared: {s:?}"));
    fastload::load(&p, Some(&by_netlink)).unwrap();
    let list = |ns: &str| without_expiry(&lab.exec_ok(ns, "nft list table inet rampart"));
    let (a, b) = (list(&by_nft), list(&by_netlink));
    assert_eq!(a, b);
    assert!(
        a.contains("192.0.2.0/24 . 22-25") && a.contains("22 : jump c2"),
        "{a}"
    );
}

#[test]
fn a_batch_the_kernel_refuses_leaves_the_running_table_untouched() {
    skip_unless_kernel!();
    let mut lab = Lab::new("nr");
    let ns = lab.ns("a");
    let old = "table inet rampart {\n\tset keep {\n\t\ttype ipv4_addr\n\t\telements = { 192.0.2.1 }\n\t}\n}\n";
    let f = lab.write("old.nft", old);
    lab.exec_ok(&ns, &format!("nft -f {}", f.display()));
    let before = lab.exec_ok(&ns, "nft list table inet rampart");
    // A set declared with room for 100 elements, given 300: the table part loads (and
    // verifies) in the scratch namespace, the kernel refuses the elements in the real one.
    let mut text = String::from(
        "table inet rampart {\n}\ndelete table inet rampart\ntable inet rampart {\n\tset s {\n\t\ttype ipv4_addr\n\t\tsize 100\n\t}\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\tip saddr @s drop\n\t}\n}\n",
    );
    let elems: Vec<String> = (0..300u32)
        .map(|i| format!("198.51.100.{}", i % 256))
        .chain((0..44u32).map(|i| format!("203.0.113.{i}")))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    text.push_str(&format!(
        "add element inet rampart s {{ {} }}\n",
        elems.join(", ")
    ));
    let p = fastload::prepare(&Nft::default(), &text, "rampart", 0, &lab.dir)
        .unwrap()
        .unwrap();
    let err = fastload::load(&p, Some(&ns)).unwrap_err().to_string();
    assert!(err.contains("elements of set s"), "{err}");
    assert_eq!(lab.exec_ok(&ns, "nft list table inet rampart"), before);
    // nft refuses it too: the netlink path is not stricter than the reference.
    let f = lab.write("new.nft", &text);
    assert!(!lab
        .exec(&ns, &format!("nft -f {}", f.display()))
        .status
        .success());
}

#[test]
fn transactions_outside_the_path_stay_with_nft() {
    skip_unless_kernel!();
    let lab = Lab::new("nf");
    let small = emit(&policy(), &EmitOptions::default()).unwrap();
    assert!(matches!(
        fastload::prepare(&Nft::default(), &small, "rampart", 1_000_000, &lab.dir).unwrap(),
        Err(Skipped::Small)
    ));
    // A second table in the transaction: not replayed, nft loads it.
    let two = format!("{small}table inet other {{\n\tchain c {{\n\t}}\n}}\n");
    assert!(matches!(
        fastload::prepare(&Nft::default(), &two, "rampart", 0, &lab.dir).unwrap(),
        Err(Skipped::Fallback(_))
    ));
    // A table of another family (the emitter writes netdev/bridge tables for some features).
    let netdev = format!("{small}table netdev other {{\n\tchain c {{\n\t}}\n}}\n");
    assert!(matches!(
        fastload::prepare(&Nft::default(), &netdev, "rampart", 0, &lab.dir).unwrap(),
        Err(Skipped::Fallback(_))
    ));
    // An element nft would refuse for the set's type is not sent.
    let bad = small.replacen("198.51.100.130", "2001:db8::1", 1);
    assert!(matches!(
        fastload::prepare(&Nft::default(), &bad, "rampart", 0, &lab.dir).unwrap(),
        Err(Skipped::Fallback(_))
    ));
}

#[test]
fn apply_loads_big_transactions_over_netlink_and_rolls_back_with_nft() {
    skip_unless_kernel!();
    let mut lab = Lab::new("na");
    let ns = lab.ns("a");
    let nft = Nft::in_netns(&ns);
    let state = StateDir::new(lab.dir.join("state"));
    let small = emit(&policy(), &EmitOptions::default()).unwrap();
    let req = |text: String| txn::ApplyRequest {
        text,
        table: "rampart".into(),
        map: Default::default(),
        confirm: None,
        watcher: None,
        queue: Vec::new(),
        sysctls: Vec::new(),
    };
    txn::apply(&nft, &state, &req(small)).unwrap();
    let before = lab.exec_ok(&ns, "nft list table inet rampart");
    // 120k single IPv6 addresses: above the threshold.
    let mut big = policy();
    big.sets[0].elements = IpNet::aggregate(
        &(0..120_000u32)
            .map(|i| {
                let a = (0x2001_0db8_0007u128 << 80) | u128::from(i * 2 + 1);
                IpNet::V6(Ipv6Net::new(a.into(), 128).unwrap())
            })
            .collect::<Vec<_>>(),
    );
    let big_text = emit(&big, &EmitOptions::default()).unwrap();
    txn::apply(&nft, &state, &req(big_text.clone())).unwrap();
    let log = std::fs::read_to_string(state.file("history.log")).unwrap_or_default();
    assert!(
        log.contains("loads over netlink (120000 elements)"),
        "history:\n{log}"
    );
    let live = lab.exec_ok(&ns, "nft list table inet rampart");
    let scratch = lab.ns("ref");
    let f = lab.write("big.nft", &big_text);
    lab.exec_ok(&scratch, &format!("nft -f {}", f.display()));
    assert_eq!(live, lab.exec_ok(&scratch, "nft list table inet rampart"));
    // Rollback (nft text) restores the small table exactly.
    txn::rollback(&nft, &state, "rampart").unwrap();
    assert_eq!(lab.exec_ok(&ns, "nft list table inet rampart"), before);
    // That rollback saved the big table it replaced as a netlink batch (no 120k-element text
    // listing); rolling back again restores it byte for byte, and once more the small one.
    let log = std::fs::read_to_string(state.file("history.log")).unwrap_or_default();
    assert!(
        log.contains("snapshot of the live table as a netlink batch"),
        "history:\n{log}"
    );
    assert!(state.file("previous.batch").exists());
    assert!(!state.file("previous.nft").exists());
    txn::rollback(&nft, &state, "rampart").unwrap();
    assert_eq!(lab.exec_ok(&ns, "nft list table inet rampart"), live);
    txn::rollback(&nft, &state, "rampart").unwrap();
    assert_eq!(lab.exec_ok(&ns, "nft list table inet rampart"), before);
}

#[test]
fn confirm_timeout_restores_a_big_table_from_its_netlink_snapshot() {
    skip_unless_kernel!();
    let mut lab = Lab::new("nc");
    let ns = lab.ns("a");
    let tool = env!("CARGO_BIN_EXE_rampart-nft-tool");
    let mut big = policy();
    big.sets[0].elements = IpNet::aggregate(
        &(0..110_000u32)
            .map(|i| {
                let a = (0x2001_0db8_0008u128 << 80) | u128::from(i * 2 + 1);
                IpNet::V6(Ipv6Net::new(a.into(), 128).unwrap())
            })
            .collect::<Vec<_>>(),
    );
    let big_f = lab.write("big.nft", &emit(&big, &EmitOptions::default()).unwrap());
    let small_f = lab.write(
        "small.nft",
        &emit(&policy(), &EmitOptions::default()).unwrap(),
    );
    let sd = lab.dir.join("state");
    let sd = sd.display();
    lab.exec_ok(
        &ns,
        &format!("{tool} apply {} --state-dir {sd}", big_f.display()),
    );
    let before = lab.exec_ok(&ns, "nft list table inet rampart");
    lab.exec_ok(
        &ns,
        &format!(
            "{tool} apply {} --state-dir {sd} --confirm-ms 1500",
            small_f.display()
        ),
    );
    assert_ne!(lab.exec_ok(&ns, "nft list table inet rampart"), before);
    assert!(
        wait_until(std::time::Duration::from_secs(20), || lab
            .exec_ok(&ns, "nft list table inet rampart")
            == before),
        "the big table did not come back"
    );
}
