//! The ICMPv6 part of the prelude (IR `Defaults::allow_icmpv6_essential`): on ingress and
//! egress the essential types pass before any rule, on forward only neighbour discovery does —
//! bridged NDP crosses the forward hook with br_netfilter, so a forward default drop must not
//! break IPv6 on bridges, while nothing else ICMPv6 is let through a router by the prelude. The
//! nft emitter compiles the same (crates/nft golden `defaults_only`).

use rampart_engine::{Engine, L4Meta, MatcherKind, PacketMeta};
use rampart_ir::{Action, Direction, Policy};

fn icmpv6(direction: Direction, icmp_type: u8) -> PacketMeta<'static> {
    let mut meta = PacketMeta::new(
        direction,
        "2001:db8:20::10".parse().unwrap(),
        "ff02::1:ff00:11".parse().unwrap(),
        rampart_ir::proto::ICMPV6,
        L4Meta::Icmp { icmp_type, code: 0 },
    );
    // Conntrack does not track neighbour discovery: the prelude must accept it before the
    // invalid check would drop it.
    meta.ct_state = rampart_ir::CtState::Invalid;
    meta.iif = Some("corp0");
    meta.oif = Some("corp0");
    meta
}

#[test]
fn forward_accepts_neighbour_discovery_only() {
    let policy = Policy::default();
    for kind in [MatcherKind::Fast, MatcherKind::Reference] {
        let mut engine = Engine::new(&policy);
        for nd in [133u8, 134, 135, 136] {
            let d = engine.classify_with(kind, &icmpv6(Direction::Forward, nd), 0);
            assert_eq!(d.action, Action::Accept, "type {nd} on forward");
        }
        // Packet too big, echo request: essential on the host, not let through a router.
        for other in [2u8, 128] {
            let d = engine.classify_with(kind, &icmpv6(Direction::Forward, other), 0);
            assert_eq!(d.action, Action::Drop, "type {other} on forward");
        }
        let d = engine.classify_with(kind, &icmpv6(Direction::Ingress, 2), 0);
        assert_eq!(d.action, Action::Accept, "packet too big on ingress");
    }
}

#[test]
fn disabled_essentials_accept_nothing_early() {
    let mut policy = Policy::default();
    policy.defaults.allow_icmpv6_essential = false;
    let mut engine = Engine::new(&policy);
    let d = engine.classify(&icmpv6(Direction::Forward, 135), 0);
    assert_eq!(d.action, Action::Drop);
}
