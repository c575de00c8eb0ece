//! `Policy::uses_conntrack` (which decides whether the engine reassembles fragments, as the
//! kernel's nf_defrag does once conntrack is in use) agrees with the emitted ruleset: true
//! exactly when some emitted statement (comments aside) is a `ct` expression.

use std::path::Path;

use rampart_ir::*;
use rampart_nft::{emit, EmitOptions};

/// Whether the ruleset text has a `ct` expression outside comments.
fn emits_ct(ruleset: &str) -> bool {
    ruleset.lines().any(|line| {
        let code = line.trim_start();
        if code.starts_with('#') {
            return false;
        }
        let code = code.split(" comment \"").next().unwrap_or("");
        code.split_whitespace().any(|w| w == "ct")
    })
}

fn base(stateful: bool) -> Policy {
    let mut p = Policy::default();
    p.defaults.stateful = stateful;
    p.defaults.allow_loopback = false;
    p.defaults.allow_icmpv6_essential = false;
    p
}

fn tcp(port: u16) -> L4Match {
    L4Match {
        protocol: Some(proto::TCP),
        src_ports: vec![],
        dst_ports: vec![PortRange { lo: port, hi: port }],
        icmp_types: vec![],
        service: None,
    }
}

fn per_source_limit() -> Limit {
    Limit {
        rate: 10,
        per_s: 1,
        burst: 0,
        unit: RateUnit::Packets,
        per_source: true,
    }
}

#[test]
fn uses_conntrack_matches_the_emitted_ct_expressions() {
    type Variant = (&'static str, bool, fn(&mut Rule));
    let variants: [Variant; 10] = [
        ("plain accept", false, |_| {}),
        ("stateful prelude", true, |_| {}),
        ("connection states", false, |r| {
            r.ct_states = vec![CtState::New]
        }),
        ("connection limit", false, |r| r.conn_limit = Some(8)),
        ("SYN proxy", false, |r| {
            r.synproxy = Some(Synproxy::default())
        }),
        ("application match", false, |r| {
            r.app = Some(AppMatch {
                protocols: vec![AppProtocol::Tls],
                negate: true,
            });
            r.action = Action::Drop;
        }),
        ("rate limit", false, |r| r.limit = Some(per_source_limit())),
        ("logged", false, |r| r.log = true),
        ("ban", false, |r| {
            r.limit = Some(per_source_limit());
            r.ban = Some(Ban { timeout_s: 60 });
        }),
        ("drop", false, |r| r.action = Action::Drop),
    ];
    let mut with_ct = 0;
    for (what, stateful, change) in variants {
        for dir in [Direction::Ingress, Direction::Forward] {
            let mut p = base(stateful);
            let mut r = Rule::new("r", dir, Action::Accept);
            r.services = vec![tcp(443)];
            change(&mut r);
            p.rules.push(r);
            let text = emit(&p, &EmitOptions::default()).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                p.uses_conntrack(),
                emits_ct(&text),
                "{what} ({dir:?}):\n{text}"
            );
            with_ct += usize::from(p.uses_conntrack());
        }
    }
    assert_eq!(
        with_ct, 10,
        "five variants use conntrack, in two directions"
    );
}

#[test]
fn the_example_policy_uses_conntrack_and_its_ruleset_says_so() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("examples/m1037-baseline/policy.toml");
    let loaded = rampart_policy::load_file(&path).expect("the example policy loads");
    let text = emit(&loaded.policy, &EmitOptions::default()).unwrap();
    assert!(loaded.policy.uses_conntrack() && emits_ct(&text));
}
