//! `rampart coverage`: for each of the 50 M1037 techniques, whether the policy's rules and
//! components really provide the mitigation.
//!
//! Each technique has a static [`requirement`]: traffic queries that must be blocked or
//! restricted, other checks (feeds referenced, stateful defaults, ...), and components it needs.
//! Queries are answered by evaluating the policy in order over the query's region (exactly as
//! the packet path would), so a rule tagged `mitigates = ["T1187"]` that *accepts* SMB to the
//! internet, or one that is fully shadowed, provides nothing; an untagged rule that blocks the
//! traffic does.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::rc::Rc;

use rampart_attack::{Technique, TECHNIQUES};
use rampart_ir::{
    proto, Action, ComponentKind, Direction, Family, IpNet, Peer, Policy, RuleId, SetSource,
    SourceLoc,
};
use serde::Serialize;

use crate::check::svc;
use crate::engine::{limited, Analysis, Decision};
use crate::model::{Model, Term};
use crate::space::{Dim, Ranges, Region};

/// Coverage status of one technique.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "components", rename_all = "snake_case")]
pub enum Status {
    /// The policy fully provides what the technique's mitigation asks of L3/L4 filtering.
    Enforced,
    /// Some of it.
    Partial,
    /// None of it.
    NotCovered,
    /// A userspace component is required and not enabled.
    NeedsComponent(Vec<ComponentKind>),
}

impl Status {
    /// Short name for tables.
    pub fn label(&self) -> String {
        match self {
            Status::Enforced => "enforced".into(),
            Status::Partial => "partial".into(),
            Status::NotCovered => "not covered".into(),
            Status::NeedsComponent(k) => format!(
                "needs {}",
                k.iter().map(|k| k.as_str()).collect::<Vec<_>>().join("+")
            ),
        }
    }

    /// Navigator score.
    pub fn score(&self) -> u32 {
        match self {
            Status::Enforced => 100,
            Status::Partial => 50,
            Status::NeedsComponent(_) => 25,
            Status::NotCovered => 0,
        }
    }

    fn color(&self) -> &'static str {
        match self {
            Status::Enforced => "#31a354",
            Status::Partial => "#fdae6b",
            Status::NeedsComponent(_) => "#9ecae1",
            Status::NotCovered => "#de2d26",
        }
    }
}

/// A rule that provides (part of) a technique's mitigation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleRef {
    /// Rule id.
    pub id: RuleId,
    /// Rule name.
    pub name: String,
    /// Where it is written.
    pub loc: SourceLoc,
}

/// A component that provides (part of) a technique's mitigation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ComponentRef {
    /// Which component.
    pub kind: ComponentKind,
    /// Where it is enabled.
    pub loc: SourceLoc,
}

/// Coverage of one technique.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TechniqueCoverage {
    /// Technique id.
    pub id: &'static str,
    /// Technique name.
    pub name: &'static str,
    /// Status.
    #[serde(flatten)]
    pub status: Status,
    /// Rules that block (or narrowly allow) the technique's traffic.
    pub rules: Vec<RuleRef>,
    /// Default verdicts that block part of it (`forward drop`, ...).
    pub defaults: Vec<String>,
    /// Components that provide part of it.
    pub components: Vec<ComponentRef>,
    /// Rules tagged with this technique that provide nothing for it, with the reason.
    pub tagged_without_effect: Vec<String>,
    /// One line: why this status.
    pub rationale: String,
}

/// Coverage of all techniques.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Coverage {
    /// Mitigation id (`M1037`).
    pub mitigation: &'static str,
    /// One entry per catalogue technique, in catalogue order.
    pub techniques: Vec<TechniqueCoverage>,
    /// Count per status label.
    pub summary: CoverageSummary,
}

/// Counts per status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CoverageSummary {
    /// Enforced.
    pub enforced: usize,
    /// Partial.
    pub partial: usize,
    /// Needs a component.
    pub needs_component: usize,
    /// Not covered.
    pub not_covered: usize,
}

/// Which packets a query is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// Any address/interface.
    Any,
    /// Outside every trusted zone.
    Untrusted,
    /// Inside a public-facing zone.
    PublicFacing,
    /// The cloud instance metadata endpoint (169.254.169.254, fd00:ec2::254).
    Metadata,
}

/// What the policy must do with a query's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Nothing accepted.
    Blocked,
    /// Accepted only by rules whose source is narrow (allowlisted sources).
    NarrowSources,
    /// Accepted only by rules whose destination is narrow (allowlisted destinations).
    NarrowDestinations,
    /// Accepted only by rules naming specific services or narrow destinations: no blanket
    /// "allow everything out".
    Allowlisted,
    /// Accepted only by rules with an owner constraint.
    OwnerScoped,
}

/// Services of a query: `(protocol, sport lo, sport hi, dport lo, dport hi)`.
pub type Svc = (u8, u16, u16, u16, u16);

/// A traffic question: in these directions, from/to these sides, these services.
#[derive(Clone, Copy, Debug)]
pub struct Query {
    /// Directions asked about.
    pub dirs: &'static [Direction],
    /// Source side.
    pub src: Side,
    /// Destination side.
    pub dst: Side,
    /// Services; empty: all traffic. `NON_TCP_UDP` means every protocol except TCP and UDP.
    pub svcs: &'static [Svc],
    /// What must happen.
    pub expect: Expect,
}

/// Marker service list meaning "every protocol except TCP and UDP".
pub const NON_TCP_UDP: &[Svc] = &[(0, 0, 0, 0, 0)];

/// A check a technique needs.
#[derive(Clone, Copy, Debug)]
pub enum Check {
    /// A traffic query.
    Traffic(Query),
    /// A live rule with a rate or connection limit in ingress or forward.
    RateLimits,
    /// A live drop/reject rule referencing a feed set (`tor`: a Tor feed).
    FeedDrop {
        /// Require a Tor feed.
        tor: bool,
    },
    /// Stateful prelude on and ingress/forward defaults not accept.
    Stateful,
    /// A live egress rule scoped to a socket owner.
    OwnerEgress,
    /// Forward default not accept.
    ForwardDefaultDrop,
}

/// What a technique requires.
#[derive(Clone, Copy, Debug)]
pub struct Requirement {
    /// Checks on rules and defaults.
    pub checks: &'static [Check],
    /// Components needed: every group needs one of its kinds.
    pub components: &'static [&'static [ComponentKind]],
    /// Why the status can never exceed partial, if it cannot.
    pub cap: Option<&'static str>,
    /// What the requirement means, one line.
    pub why: &'static str,
}

use Direction::{Egress as EG, Forward as FW, Ingress as IN};

const OUT: &[Direction] = &[EG, FW];
const INTO: &[Direction] = &[IN, FW];
const ALL: &[Direction] = &[IN, EG, FW];

use Expect::*;
use Side::*;

const fn tcp(p: u16) -> Svc {
    (proto::TCP, 0, 65535, p, p)
}
const fn udp(p: u16) -> Svc {
    (proto::UDP, 0, 65535, p, p)
}

const fn q(
    dirs: &'static [Direction],
    src: Side,
    dst: Side,
    svcs: &'static [Svc],
    expect: Expect,
) -> Check {
    Check::Traffic(Query {
        dirs,
        src,
        dst,
        svcs,
        expect,
    })
}

const fn req(
    checks: &'static [Check],
    components: &'static [&'static [ComponentKind]],
    cap: Option<&'static str>,
    why: &'static str,
) -> Requirement {
    Requirement {
        checks,
        components,
        cap,
        why,
    }
}

const WEB: &[Svc] = &[tcp(80), tcp(443), udp(443)];
const DNS: &[Svc] = &[udp(53), tcp(53), tcp(853), udp(853)];
const SMB_NB: &[Svc] = &[tcp(445), tcp(139), udp(137), udp(138)];
const VNC: &[Svc] = &[tcp(5900), tcp(5800), tcp(5500)];
const DOS_CAP: &str = "floods need rate limits, SYN cookies/synproxy and upstream filtering; \
                       the DoS protections are not modelled yet";
const DL: ComponentKind = ComponentKind::DnsFilter;
const EP: ComponentKind = ComponentKind::EgressProxy;

/// The static technique → requirement table. Parent techniques also combine their
/// sub-techniques (see [`coverage`]).
const TABLE: &[(&[&str], Requirement)] = &[
        (&["T1557"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1557.001"], req(
            &[q(ALL, Any, Any, &[udp(5355), tcp(5355), udp(137), udp(138), tcp(139)], Blocked)],
            &[],
            Some("SMB signing against relay is a host setting outside the firewall"),
            "LLMNR (5355) and NetBIOS (137-139) blocked in every direction",
        )),
        (&["T1557.002"], req(
            &[],
            &[&[ComponentKind::L2Guard]],
            None,
            "ARP inspection is layer 2: needs the L2 guard",
        )),
        (&["T1557.003"], req(
            &[q(INTO, Untrusted, Any, &[(proto::UDP, 67, 67, 68, 68)], Blocked)],
            &[&[ComponentKind::L2Guard]],
            None,
            "DHCP server replies (udp 67→68) from untrusted sources blocked, plus DHCP snooping",
        )),
        (&["T1071"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1071.001"], req(
            &[q(OUT, PublicFacing, Untrusted, WEB, NarrowDestinations)],
            &[&[EP]],
            None,
            "web egress from public-facing zones only to allowlisted destinations, via the egress proxy",
        )),
        (&["T1071.002"], req(
            &[q(OUT, Any, Untrusted, &[tcp(20), tcp(21), udp(69), tcp(989), tcp(990)], NarrowDestinations)],
            &[],
            Some("SFTP runs over SSH (tcp/22) and is not told apart at L4"),
            "FTP/FTPS/TFTP egress only to allowlisted destinations",
        )),
        (&["T1071.003"], req(
            &[q(
                OUT,
                Any,
                Untrusted,
                &[tcp(25), tcp(110), tcp(143), tcp(465), tcp(587), tcp(993), tcp(995)],
                NarrowDestinations,
            )],
            &[],
            None,
            "SMTP/IMAP/POP3 egress only to allowlisted mail servers",
        )),
        (&["T1071.004"], req(
            &[q(OUT, Any, Untrusted, DNS, NarrowDestinations)],
            &[&[DL]],
            None,
            "DNS/DoT only to the designated resolvers, which filter names (DNS filter)",
        )),
        (&["T1071.005"], req(
            &[q(OUT, Any, Untrusted, &[tcp(1883), tcp(8883)], NarrowDestinations)],
            &[],
            Some("MQTT on irregular ports needs first-payload classification"),
            "MQTT egress only to allowlisted brokers",
        )),
        (&["T1197"], req(
            &[q(OUT, Any, Untrusted, WEB, NarrowDestinations)],
            &[&[EP]],
            None,
            "BITS rides HTTP(S): direct web egress closed, web only through the egress proxy",
        )),
        (&["T1530"], req(
            &[q(OUT, Any, Untrusted, &[tcp(443)], NarrowDestinations)],
            &[],
            Some("cloud-side IP allowlisting is outside this host"),
            "HTTPS egress to cloud storage only to allowlisted endpoints",
        )),
        (&["T1602"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1602.001"], req(
            &[q(INTO, Untrusted, Any, &[udp(161), udp(162), tcp(161), tcp(162)], Blocked)],
            &[],
            None,
            "SNMP from outside the trusted zones blocked",
        )),
        (&["T1602.002"], req(
            &[q(INTO, Untrusted, Any, &[udp(69), tcp(23), tcp(830), tcp(6513), udp(161)], Blocked)],
            &[],
            None,
            "config-repository protocols (TFTP, telnet, NETCONF, SNMP) from outside blocked",
        )),
        (&["T1499", "T1499.001", "T1499.002", "T1499.003"], req(
            &[Check::RateLimits],
            &[],
            Some(DOS_CAP),
            "rate or connection limits on ingress/forward",
        )),
        (&["T1499.004"], req(
            &[Check::Stateful, Check::RateLimits],
            &[],
            Some(DOS_CAP),
            "stateful filtering drops invalid packets; limits bound exploitation attempts",
        )),
        (&["T1498", "T1498.001"], req(
            &[Check::RateLimits],
            &[],
            Some("volumetric floods must be filtered upstream (ISP/CDN)"),
            "rate limits on ingress/forward",
        )),
        (&["T1498.002"], req(
            &[
                q(
                    INTO,
                    Untrusted,
                    Any,
                    &[
                        (proto::UDP, 19, 19, 0, 65535),
                        (proto::UDP, 123, 123, 0, 65535),
                        (proto::UDP, 389, 389, 0, 65535),
                        (proto::UDP, 1900, 1900, 0, 65535),
                        (proto::UDP, 11211, 11211, 0, 65535),
                    ],
                    Blocked,
                ),
                Check::RateLimits,
            ],
            &[],
            Some("volumetric floods must be filtered upstream (ISP/CDN)"),
            "unsolicited reflector replies (chargen, NTP, CLDAP, SSDP, memcached) blocked",
        )),
        (&["T1048", "T1048.001", "T1048.002", "T1048.003"], req(
            &[q(OUT, Any, Untrusted, &[], Allowlisted)],
            &[],
            None,
            "egress default-deny: only named services or allowlisted destinations leave",
        )),
        (&["T1190"], req(
            &[q(OUT, PublicFacing, Untrusted, &[], NarrowDestinations)],
            &[&[ComponentKind::Waf]],
            None,
            "public-facing zones reach only allowlisted destinations; the WAF screens requests",
        )),
        (&["T1187"], req(
            &[q(OUT, Any, Untrusted, SMB_NB, NarrowDestinations)],
            &[],
            Some("WebDAV over HTTP is not told apart from web traffic at L4"),
            "SMB/NetBIOS (139, 445, 137) egress to untrusted networks blocked or allowlisted",
        )),
        (&["T1105"], req(
            &[q(OUT, Any, Untrusted, &[], Allowlisted)],
            &[&[EP]],
            None,
            "egress allowlisted and web downloads via the egress proxy",
        )),
        (&["T1570"], req(
            &[q(INTO, Any, Any, &[tcp(445), tcp(139)], NarrowSources)],
            &[],
            None,
            "SMB accepted only from allowlisted sources",
        )),
        (&["T1599", "T1599.001"], req(
            &[Check::ForwardDefaultDrop, Check::Stateful],
            &[],
            Some("detecting a bridged boundary is outside packet filtering"),
            "the host filters what it forwards (default drop, stateful)",
        )),
        (&["T1095"], req(
            &[q(OUT, Any, Untrusted, NON_TCP_UDP, Allowlisted)],
            &[],
            None,
            "non-TCP/UDP protocols (ICMP, GRE, raw IP) do not leave unless explicitly allowed",
        )),
        (&["T1572"], req(
            &[q(OUT, Any, Untrusted, DNS, NarrowDestinations)],
            &[&[DL]],
            None,
            "DNS only via designated resolvers with the DNS filter against DNS tunnels",
        )),
        (&["T1090"], req(
            &[Check::FeedDrop { tor: false }],
            &[&[ComponentKind::Feeds]],
            None,
            "traffic to known anonymity/C2 addresses dropped using refreshed feeds",
        )),
        (&["T1090.003"], req(
            &[Check::FeedDrop { tor: true }],
            &[&[ComponentKind::Feeds]],
            None,
            "traffic to Tor relays/exits dropped using a refreshed Tor feed",
        )),
        (&["T1219", "T1219.002"], req(
            &[q(
                OUT,
                Any,
                Untrusted,
                &[tcp(3389), udp(3389), tcp(5900), tcp(5938), tcp(6568), tcp(7070)],
                NarrowDestinations,
            )],
            &[&[EP]],
            None,
            "remote-access tool ports (RDP, VNC, TeamViewer, AnyDesk) closed outbound; web via proxy",
        )),
        (&["T1021"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1021.002"], req(
            &[q(INTO, Any, Any, &[tcp(445), tcp(139)], NarrowSources)],
            &[],
            None,
            "SMB accepted only from allowlisted sources",
        )),
        (&["T1021.005"], req(
            &[q(INTO, Any, Any, VNC, NarrowSources)],
            &[],
            None,
            "VNC ports 5900/5800/5500 blocked or allowed only from allowlisted sources",
        )),
        (&["T1218"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1218.012"], req(
            &[Check::OwnerEgress],
            &[],
            Some("verclsid.exe is Windows; on Linux only per-owner egress rules apply"),
            "egress restricted per program (socket owner/cgroup)",
        )),
        (&["T1205", "T1205.001"], req(
            &[Check::Stateful],
            &[],
            None,
            "stateful default-deny: knocking packets open nothing",
        )),
        (&["T1205.002"], req(
            &[Check::Stateful],
            &[],
            Some("raw socket filters see packets before netfilter drops them"),
            "stateful default-deny limits what a socket-filter implant can receive",
        )),
        (&["T1537"], req(
            &[q(OUT, Any, Untrusted, &[], Allowlisted)],
            &[],
            None,
            "egress allowlisted so data cannot be pushed to arbitrary cloud accounts",
        )),
        (&["T1552"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1552.005"], req(
            &[q(&[EG, FW], Any, Metadata, &[], OwnerScoped)],
            &[&[ComponentKind::Waf, EP]],
            None,
            "metadata API reachable only for allowed owners; WAF/egress proxy against SSRF",
        )),
];

/// The requirement of a technique (`None` for ids outside the catalogue).
pub fn requirement(id: &str) -> Option<Requirement> {
    TABLE
        .iter()
        .find(|(ids, _)| ids.contains(&id))
        .map(|(_, r)| *r)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    Unmet,
    Partly,
    Met,
}

#[derive(Default)]
struct Evidence {
    /// The technique being evaluated.
    tech: &'static str,
    rules: BTreeSet<RuleId>,
    defaults: BTreeSet<String>,
    notes: Vec<String>,
}

fn side_terms(m: &Model<'_>, side: Side) -> (Vec<Term>, Vec<Term>) {
    let policy = m.policy;
    match side {
        Side::Any => (m.side_terms(&[]), vec![]),
        Side::Untrusted => {
            let trusted: Vec<Peer> = policy
                .zones
                .iter()
                .enumerate()
                .filter(|(_, z)| z.trusted)
                .map(|(i, _)| Peer::Zone(rampart_ir::ZoneId(i as u32)))
                .collect();
            let excl = if trusted.is_empty() {
                vec![]
            } else {
                m.side_terms(&trusted)
            };
            (m.side_terms(&[]), excl)
        }
        Side::PublicFacing => {
            let pf: Vec<Peer> = policy
                .zones
                .iter()
                .enumerate()
                .filter(|(_, z)| z.public_facing)
                .map(|(i, _)| Peer::Zone(rampart_ir::ZoneId(i as u32)))
                .collect();
            if pf.is_empty() {
                (vec![], vec![])
            } else {
                (m.side_terms(&pf), vec![])
            }
        }
        Side::Metadata => {
            let nets: Vec<Peer> = ["169.254.169.254/32", "fd00:ec2::254/128"]
                .iter()
                .filter_map(|s| s.parse::<IpNet>().ok())
                .map(Peer::Net)
                .collect();
            (m.side_terms(&nets), vec![])
        }
    }
}

fn query_region(m: &Model<'_>, dir: Direction, qy: &Query) -> Region {
    let (src, src_ex) = side_terms(m, qy.src);
    let (dst, dst_ex) = side_terms(m, qy.dst);
    let any = m.side_terms(&[]);
    let all_traffic = m.region_of(dir, Family::Any, &src, &dst, &[]);
    let mut r = if qy.svcs.is_empty() {
        all_traffic
    } else if std::ptr::eq(qy.svcs, NON_TCP_UDP) {
        let mut r = all_traffic;
        for c in &mut r.cubes {
            let p = c.get(Dim::Proto).subtract(&Ranges::from_intervals([
                (u128::from(proto::TCP), u128::from(proto::TCP)),
                (u128::from(proto::UDP), u128::from(proto::UDP)),
            ]));
            c.dims[Dim::Proto as usize] = p;
        }
        Region::new(r.cubes)
    } else {
        let mut cubes = Vec::new();
        for &(p, slo, shi, dlo, dhi) in qy.svcs {
            let mut s = svc(p, dlo, dhi);
            s.src_ports = vec![rampart_ir::PortRange { lo: slo, hi: shi }];
            cubes.extend(m.region_of(dir, Family::Any, &src, &dst, &[s]).cubes);
        }
        Region::new(cubes)
    };
    if !src_ex.is_empty() {
        let ex = m.region_of(dir, Family::Any, &src_ex, &any, &[]);
        r = r.subtract(&ex, crate::engine::MAX_CUBES).unwrap_or(r);
    }
    if !dst_ex.is_empty() {
        let ex = m.region_of(dir, Family::Any, &any, &dst_ex, &[]);
        r = r.subtract(&ex, crate::engine::MAX_CUBES).unwrap_or(r);
    }
    // Conntrack/owner: queries are about new connections of anyone.
    r
}

/// Whether a side of a rule is narrow: named, non-feed peers of bounded size or trusted zones.
fn narrow_side(m: &Model<'_>, peers: &[Peer]) -> bool {
    const V4_MAX: u128 = 1 << 16;
    const V6_MAX: u128 = 1 << 80;
    if peers.is_empty() {
        return false;
    }
    peers.iter().all(|p| match p {
        Peer::Zone(z) => m.policy.zones.get(z.0 as usize).is_some_and(|z| z.trusted),
        _ => {
            let t = m.peer_term(p);
            t.v4.count() <= V4_MAX && t.v6.count() <= V6_MAX
        }
    })
}

/// A traffic question without its expectation: direction, sides, services.
type QueryKey = (Direction, Side, Side, Vec<Svc>);

/// Shared state of one coverage run: the analysis and a cache of decided queries (many
/// techniques ask the same traffic question).
struct Ctx<'a, 'p> {
    an: &'a Analysis<'p>,
    cache: RefCell<HashMap<QueryKey, Rc<Decision>>>,
}

impl Ctx<'_, '_> {
    fn decide(&self, dir: Direction, qy: &Query) -> Option<Rc<Decision>> {
        let key = (dir, qy.src, qy.dst, qy.svcs.to_vec());
        if let Some(d) = self.cache.borrow().get(&key) {
            return Some(d.clone());
        }
        let region = query_region(&self.an.model, dir, qy);
        let d = if region.is_empty() {
            None
        } else {
            Some(Rc::new(self.an.decide(dir, &region)))
        };
        if let Some(d) = &d {
            self.cache.borrow_mut().insert(key, d.clone());
        }
        d
    }
}

fn eval_query(cx: &Ctx<'_, '_>, qy: &Query, ev: &mut Evidence) -> Outcome {
    let an = cx.an;
    let m = &an.model;
    let policy = m.policy;
    let mut any_blocked = false;
    let mut any_broad = false;
    let mut any_region = false;
    for &dir in qy.dirs {
        let Some(d) = cx.decide(dir, qy) else {
            continue;
        };
        any_region = true;
        if d.unknown {
            ev.notes.push(format!("{dir}: too complex to decide"));
            any_broad = true;
        }
        for (who, _) in &d.blocked {
            any_blocked = true;
            match who {
                Some(id) => {
                    // For "all traffic" questions every service-specific deny blocks a
                    // sliver; list only blanket denies and rules tagged with the technique.
                    let r = policy.rule(*id);
                    if !qy.svcs.is_empty()
                        || r.services.is_empty()
                        || r.mitigates.iter().any(|m| m.0 == ev.tech)
                    {
                        ev.rules.insert(*id);
                    }
                }
                None => {
                    ev.defaults.insert(format!(
                        "{dir} default {}",
                        policy.defaults.for_direction(dir).as_str()
                    ));
                }
            }
        }
        for (who, _) in &d.accepted {
            let narrow = match who {
                None => false,
                Some(id) => {
                    let r = policy.rule(*id);
                    match qy.expect {
                        Expect::Blocked => false,
                        Expect::NarrowSources => narrow_side(m, &r.from),
                        Expect::NarrowDestinations => narrow_side(m, &r.to),
                        Expect::Allowlisted => {
                            narrow_side(m, &r.to)
                                || (!r.services.is_empty()
                                    && r.services.iter().all(|s| s.protocol.is_some()))
                        }
                        Expect::OwnerScoped => r.owner.is_some(),
                    }
                }
            };
            if narrow {
                // Narrow accepts are part of the allowlist design; list those that name
                // services (an "allow everything to X" rule is not a mitigation).
                if let Some(id) = who {
                    if !policy.rule(*id).services.is_empty() {
                        ev.rules.insert(*id);
                    }
                }
            } else {
                any_broad = true;
                let who = match who {
                    Some(id) => format!("rule `{}`", policy.rule(*id).name),
                    None => format!("the {dir} default"),
                };
                let note = format!("{who} accepts part of it");
                if !ev.notes.contains(&note) {
                    ev.notes.push(note);
                }
            }
        }
    }
    if !any_region {
        ev.notes.push(match (qy.src, qy.dst) {
            (Side::PublicFacing, _) => "no public-facing zone in the policy".into(),
            _ => "no traffic of this kind can reach the rules".into(),
        });
        return Outcome::Unmet;
    }
    match (any_blocked, any_broad) {
        (_, false) => Outcome::Met,
        (true, true) => Outcome::Partly,
        (false, true) => Outcome::Unmet,
    }
}

fn live(an: &Analysis<'_>, id: RuleId) -> bool {
    !an.facts[id.0 as usize].dead()
}

fn eval_check(cx: &Ctx<'_, '_>, c: &Check, ev: &mut Evidence) -> Outcome {
    let an = cx.an;
    let policy = an.model.policy;
    let d = &policy.defaults;
    match c {
        Check::Traffic(qy) => eval_query(cx, qy, ev),
        Check::RateLimits => {
            let ids: Vec<RuleId> = (0..policy.rules.len() as u32)
                .map(RuleId)
                .filter(|&id| {
                    let r = policy.rule(id);
                    r.direction != Direction::Egress && limited(policy, id) && live(an, id)
                })
                .collect();
            if ids.is_empty() {
                ev.notes.push("no rate or connection limits".into());
                Outcome::Unmet
            } else {
                ev.rules.extend(ids);
                Outcome::Met
            }
        }
        Check::FeedDrop { tor } => {
            let is_feed = |p: &Peer| match p {
                Peer::Set(s) => policy
                    .sets
                    .get(s.0 as usize)
                    .is_some_and(|s| match &s.source {
                        SetSource::Feed { name, format, .. } => {
                            !tor || format == "tor" || name.to_lowercase().contains("tor")
                        }
                        _ => false,
                    }),
                _ => false,
            };
            let ids: Vec<RuleId> = policy
                .rules
                .iter()
                .enumerate()
                .map(|(i, r)| (RuleId(i as u32), r))
                .filter(|(id, r)| {
                    r.action != Action::Accept
                        && !limited(policy, *id)
                        && live(an, *id)
                        && r.from.iter().chain(&r.to).any(is_feed)
                })
                .map(|(id, _)| id)
                .collect();
            if ids.is_empty() {
                ev.notes.push(if *tor {
                    "no live drop rule uses a Tor feed set".into()
                } else {
                    "no live drop rule uses a feed set".into()
                });
                Outcome::Unmet
            } else {
                ev.rules.extend(ids);
                Outcome::Met
            }
        }
        Check::Stateful => {
            if d.stateful && d.ingress != Action::Accept && d.forward != Action::Accept {
                ev.defaults
                    .insert("stateful default-deny ingress/forward".into());
                Outcome::Met
            } else {
                ev.notes
                    .push("defaults are not stateful default-deny".into());
                Outcome::Unmet
            }
        }
        Check::OwnerEgress => {
            let ids: Vec<RuleId> = policy
                .rules_in(Direction::Egress)
                .filter(|(id, r)| r.owner.is_some() && live(an, *id))
                .map(|(id, _)| id)
                .collect();
            if ids.is_empty() {
                ev.notes.push("no owner-scoped egress rules".into());
                Outcome::Unmet
            } else {
                ev.rules.extend(ids);
                Outcome::Met
            }
        }
        Check::ForwardDefaultDrop => {
            if d.forward != Action::Accept {
                ev.defaults
                    .insert(format!("forward default {}", d.forward.as_str()));
                Outcome::Met
            } else {
                ev.notes.push("forward default is accept".into());
                Outcome::Unmet
            }
        }
    }
}

fn combine(statuses: &[Status]) -> Status {
    if statuses.is_empty() {
        return Status::NotCovered;
    }
    if statuses.iter().all(|s| *s == Status::Enforced) {
        return Status::Enforced;
    }
    if statuses.iter().all(|s| *s == Status::NotCovered) {
        return Status::NotCovered;
    }
    if statuses
        .iter()
        .all(|s| matches!(s, Status::NeedsComponent(_) | Status::NotCovered))
    {
        let mut kinds: Vec<ComponentKind> = statuses
            .iter()
            .flat_map(|s| match s {
                Status::NeedsComponent(k) => k.clone(),
                _ => vec![],
            })
            .collect();
        kinds.sort();
        kinds.dedup();
        return Status::NeedsComponent(kinds);
    }
    Status::Partial
}

fn rule_ref(policy: &Policy, id: RuleId) -> RuleRef {
    let r = policy.rule(id);
    RuleRef {
        id,
        name: r.name.clone(),
        loc: r.loc.clone(),
    }
}

fn own_coverage(cx: &Ctx<'_, '_>, t: &Technique, rq: &Requirement) -> TechniqueCoverage {
    let an = cx.an;
    let policy = an.model.policy;
    let mut ev = Evidence {
        tech: t.id,
        ..Evidence::default()
    };
    let outcomes: Vec<Outcome> = rq
        .checks
        .iter()
        .map(|c| eval_check(cx, c, &mut ev))
        .collect();
    let rule_status = if outcomes.is_empty() || outcomes.iter().all(|o| *o == Outcome::Met) {
        Status::Enforced
    } else if outcomes.iter().any(|o| *o != Outcome::Unmet) {
        Status::Partial
    } else {
        Status::NotCovered
    };
    let mut components = Vec::new();
    let mut missing = Vec::new();
    for group in rq.components {
        let present: Vec<ComponentRef> = policy
            .components
            .iter()
            .filter(|c| group.contains(&c.kind))
            .map(|c| ComponentRef {
                kind: c.kind,
                loc: c.loc.clone(),
            })
            .collect();
        if present.is_empty() {
            if let Some(k) = group.first() {
                missing.push(*k);
            }
        }
        components.extend(present);
    }
    let mut status = if missing.is_empty() {
        rule_status.clone()
    } else {
        Status::NeedsComponent(missing)
    };
    let mut rationale = rq.why.to_string();
    if let (Some(cap), Status::Enforced) = (rq.cap, &status) {
        status = Status::Partial;
        let _ = write!(rationale, "; at most partial: {cap}");
    }
    if !ev.notes.is_empty() {
        let _ = write!(rationale, "; {}", ev.notes.join("; "));
    }
    let tagged_without_effect = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (RuleId(i as u32), r))
        .filter(|(id, r)| r.mitigates.iter().any(|m| m.0 == t.id) && !ev.rules.contains(id))
        .map(|(id, r)| {
            let why = if an.facts[id.0 as usize].dead() {
                "never decides (shadowed or empty)"
            } else if rq.checks.is_empty() {
                "the technique is met by components, not rules"
            } else {
                "does not block or narrowly allow this technique's traffic"
            };
            format!("{} ({}): {why}", r.name, r.loc)
        })
        .collect();
    TechniqueCoverage {
        id: t.id,
        name: t.name,
        status,
        rules: ev.rules.iter().map(|&id| rule_ref(policy, id)).collect(),
        defaults: ev.defaults.into_iter().collect(),
        components,
        tagged_without_effect,
        rationale,
    }
}

/// Coverage of every catalogue technique.
pub fn coverage(policy: &Policy) -> Coverage {
    let an = Analysis::new(policy);
    let cx = Ctx {
        an: &an,
        cache: RefCell::new(HashMap::new()),
    };
    let mut techniques: Vec<TechniqueCoverage> = Vec::with_capacity(TECHNIQUES.len());
    for t in TECHNIQUES {
        let rq = requirement(t.id).unwrap_or(Requirement {
            checks: &[],
            components: &[],
            cap: None,
            why: "no requirement known",
        });
        techniques.push(own_coverage(&cx, t, &rq));
    }
    // Parents: own requirement (when it has checks or components) combined with sub-techniques.
    for i in 0..techniques.len() {
        let t = &TECHNIQUES[i];
        if t.is_sub_technique() {
            continue;
        }
        let subs: Vec<usize> = TECHNIQUES
            .iter()
            .enumerate()
            .filter(|(_, s)| s.parent() == Some(t.id))
            .map(|(j, _)| j)
            .collect();
        if subs.is_empty() {
            continue;
        }
        let own_counts =
            requirement(t.id).is_some_and(|r| !r.checks.is_empty() || !r.components.is_empty());
        let mut statuses: Vec<Status> =
            subs.iter().map(|&j| techniques[j].status.clone()).collect();
        if own_counts {
            statuses.push(techniques[i].status.clone());
        }
        let status = combine(&statuses);
        let mut rules: Vec<RuleRef> = techniques[i].rules.clone();
        let mut comps = techniques[i].components.clone();
        let mut defaults = techniques[i].defaults.clone();
        for &j in &subs {
            for r in &techniques[j].rules {
                if !rules.contains(r) {
                    rules.push(r.clone());
                }
            }
            for c in &techniques[j].components {
                if !comps.contains(c) {
                    comps.push(c.clone());
                }
            }
            for d in &techniques[j].defaults {
                if !defaults.contains(d) {
                    defaults.push(d.clone());
                }
            }
        }
        rules.sort_by_key(|r| r.id);
        let sub_text: Vec<String> = subs
            .iter()
            .map(|&j| format!("{} {}", techniques[j].id, techniques[j].status.label()))
            .collect();
        let tech = &mut techniques[i];
        tech.rationale = if own_counts {
            format!(
                "{}; sub-techniques: {}",
                tech.rationale,
                sub_text.join(", ")
            )
        } else {
            format!("derived from sub-techniques: {}", sub_text.join(", "))
        };
        tech.status = status;
        tech.rules = rules;
        tech.components = comps;
        tech.defaults = defaults;
    }
    let mut summary = CoverageSummary::default();
    for t in &techniques {
        match t.status {
            Status::Enforced => summary.enforced += 1,
            Status::Partial => summary.partial += 1,
            Status::NeedsComponent(_) => summary.needs_component += 1,
            Status::NotCovered => summary.not_covered += 1,
        }
    }
    Coverage {
        mitigation: rampart_attack::MITIGATION_ID,
        techniques,
        summary,
    }
}

fn provided_by(t: &TechniqueCoverage) -> String {
    let mut parts: Vec<String> = t.rules.iter().map(|r| r.name.clone()).collect();
    parts.extend(t.components.iter().map(|c| c.kind.as_str().to_string()));
    parts.extend(t.defaults.iter().cloned());
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(", ")
    }
}

impl Coverage {
    /// Terminal table: id, name, status, provided by.
    pub fn render_table(&self) -> String {
        let rows: Vec<[String; 4]> = self
            .techniques
            .iter()
            .map(|t| {
                [
                    t.id.to_string(),
                    t.name.to_string(),
                    t.status.label(),
                    provided_by(t),
                ]
            })
            .collect();
        let header = ["ID", "TECHNIQUE", "STATUS", "PROVIDED BY"];
        let mut widths = header.map(|h| h.chars().count());
        for r in &rows {
            for (k, c) in r.iter().enumerate().take(3) {
                widths[k] = widths[k].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let line = |out: &mut String, cols: [&str; 4]| {
            for (k, c) in cols.iter().enumerate().take(3) {
                let pad = widths[k].saturating_sub(c.chars().count());
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            }
            out.push_str(cols[3]);
            out.push('\n');
        };
        line(&mut out, header);
        for r in &rows {
            line(&mut out, [&r[0], &r[1], &r[2], &r[3]]);
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "\n{} techniques: {} enforced, {} partial, {} need a component, {} not covered",
            self.techniques.len(),
            s.enforced,
            s.partial,
            s.needs_component,
            s.not_covered
        );
        out
    }
}

/// An ATT&CK Navigator layer (format 4.5, enterprise-attack) for the coverage.
pub fn navigator_layer(cov: &Coverage, name: &str) -> serde_json::Value {
    use serde_json::json;
    let techniques: Vec<serde_json::Value> = cov
        .techniques
        .iter()
        .map(|t| {
            let mut comment = format!("{}: {}", t.status.label(), t.rationale);
            if !t.rules.is_empty() {
                let rules: Vec<String> = t
                    .rules
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.loc))
                    .collect();
                let _ = write!(comment, "\nrules: {}", rules.join(", "));
            }
            if !t.components.is_empty() {
                let c: Vec<String> = t
                    .components
                    .iter()
                    .map(|c| format!("{} ({})", c.kind.as_str(), c.loc))
                    .collect();
                let _ = write!(comment, "\ncomponents: {}", c.join(", "));
            }
            let has_subs = TECHNIQUES.iter().any(|s| s.parent() == Some(t.id));
            let mut v = json!({
                "techniqueID": t.id,
                "score": t.status.score(),
                "color": t.status.color(),
                "comment": comment,
                "enabled": true,
                "metadata": [
                    {"name": "status", "value": t.status.label()},
                    {"name": "rules", "value": t.rules.len().to_string()},
                ],
                "links": [],
                "showSubtechniques": has_subs,
            });
            if !has_subs {
                if let Some(obj) = v.as_object_mut() {
                    obj.remove("showSubtechniques");
                }
            }
            v
        })
        .collect();
    json!({
        "name": name,
        "versions": {"attack": "16", "navigator": "5.1.0", "layer": "4.5"},
        "domain": "enterprise-attack",
        "description": format!(
            "Rampart coverage of {} {}: {} enforced, {} partial, {} need a component, {} not covered",
            cov.mitigation,
            rampart_attack::MITIGATION_NAME,
            cov.summary.enforced,
            cov.summary.partial,
            cov.summary.needs_component,
            cov.summary.not_covered
        ),
        "filters": {"platforms": ["Linux", "Windows", "macOS", "Network Devices", "IaaS", "Containers"]},
        "sorting": 0,
        "layout": {"layout": "side", "aggregateFunction": "average", "showID": true, "showName": true,
                    "showAggregateScores": false, "countUnscored": false, "expandedSubtechniques": "annotated"},
        "hideDisabled": false,
        "techniques": techniques,
        "gradient": {"colors": ["#de2d26", "#fdae6b", "#31a354"], "minValue": 0, "maxValue": 100},
        "legendItems": [
            {"label": "enforced", "color": Status::Enforced.color()},
            {"label": "partial", "color": Status::Partial.color()},
            {"label": "needs a component", "color": Status::NeedsComponent(vec![]).color()},
            {"label": "not covered", "color": Status::NotCovered.color()},
        ],
        "metadata": [
            {"name": "generator", "value": "rampart coverage"},
            {"name": "mitigation", "value": cov.mitigation},
        ],
        "links": [],
        "showTacticRowBackground": false,
        "tacticRowBackground": "#dddddd",
        "selectTechniquesAcrossTactics": true,
        "selectSubtechniquesWithParent": false,
        "selectVisibleTechniques": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_technique_has_a_requirement() {
        for t in TECHNIQUES {
            assert!(requirement(t.id).is_some(), "{} has no requirement", t.id);
        }
        assert!(requirement("T9999").is_none());
    }

    #[test]
    fn combine_statuses() {
        use Status::*;
        assert_eq!(combine(&[Enforced, Enforced]), Enforced);
        assert_eq!(combine(&[Enforced, NotCovered]), Partial);
        assert_eq!(combine(&[NotCovered, NotCovered]), NotCovered);
        assert_eq!(
            combine(&[NeedsComponent(vec![ComponentKind::Waf]), NotCovered]),
            NeedsComponent(vec![ComponentKind::Waf])
        );
    }
}
