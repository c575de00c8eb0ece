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
    proto, Action, AppProtocol, ComponentKind, Direction, Family, IpNet, Peer, Policy, RuleId,
    SetSource, SourceLoc,
};
use serde::Serialize;

use crate::check::svc;
use crate::engine::{limited, Analysis, Decision};
use crate::model::{Model, Term};
use crate::space::{Dim, Ranges, Region};

/// Coverage status of one technique.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(
    tag = "status",
    content = "missing_components",
    rename_all = "snake_case"
)]
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
    /// Rules that do the technique's job: rules that block (or narrowly allow) part of its
    /// traffic *and* are tagged for it (`mitigates`, or their profile's techniques, names the
    /// technique, its parent or one of its sub-techniques), plus rules a non-traffic check
    /// selects (rate-limited, feed-drop, owner-scoped egress rules).
    pub primary_rules: Vec<RuleRef>,
    /// Rules that block (or narrowly allow) part of the technique's traffic without being
    /// tagged for it (a metadata-API deny that also drops a sliver of DHCP, ...). They count
    /// for the status exactly like primary rules; they are listed apart so the reader can tell
    /// which rules were written for the technique.
    pub incidental_rules: Vec<RuleRef>,
    /// Default verdicts that block part of it (`forward drop`, ...) or that a check names
    /// (stateful default-deny). Always primary: a direction's default is the policy's own
    /// answer for that direction.
    pub defaults: Vec<String>,
    /// Components that provide part of it (only those the requirement names).
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
    /// A live SYN-proxy accept rule (ingress or forward).
    Synproxy,
    /// A live rule that bans sources over its limits.
    Bans,
    /// A live drop/reject application-protocol rule that matches one of these payload labels,
    /// with the protocol classifier component enabled. `required: false` only lists the rules
    /// as providers without changing the status.
    App {
        /// Labels any of which the rule must match.
        labels: &'static [AppProtocol],
        /// Whether `app_not` rules count (they match these labels among everything else that
        /// is not their protocol: "only DNS on 53" stops tunnels, but is not written against
        /// MQTT or VNC).
        negated: bool,
        /// Whether the status depends on it.
        required: bool,
    },
}

impl Check {
    /// Whether the technique's status depends on this check.
    fn required(&self) -> bool {
        !matches!(
            self,
            Check::App {
                required: false,
                ..
            }
        )
    }
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
const DOS_CAP: &str = "application-layer floods (many requests on few connections) need \
                       request limits in the WAF; connection caps bound only connections";
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
            &[
                q(OUT, Any, Untrusted, &[tcp(1883), tcp(8883)], NarrowDestinations),
                Check::App { labels: &[AppProtocol::Mqtt], negated: false, required: true },
            ],
            &[],
            None,
            "MQTT egress only to allowlisted brokers, and MQTT on irregular ports dropped by its payload",
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
        (&["T1499"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1499.001"], req(
            &[Check::Synproxy, Check::Bans],
            &[],
            None,
            "SYN proxy (SYN cookies) on exposed TCP services; flooding sources auto-banned",
        )),
        (&["T1499.002"], req(
            &[Check::RateLimits, Check::Bans],
            &[],
            None,
            "per-source connection rate/concurrency caps on exposed services, with auto-ban",
        )),
        (&["T1499.003"], req(
            &[Check::RateLimits, Check::Bans],
            &[],
            Some(DOS_CAP),
            "per-source caps with auto-ban bound connection floods",
        )),
        (&["T1499.004"], req(
            &[Check::Stateful, Check::RateLimits],
            &[],
            Some(DOS_CAP),
            "stateful filtering drops invalid packets; limits bound exploitation attempts",
        )),
        (&["T1498"], req(&[], &[], None, "derived from its sub-techniques")),
        (&["T1498.001"], req(
            &[Check::RateLimits, Check::Bans, Check::Synproxy],
            &[],
            Some("volumetric floods must be filtered upstream (ISP/CDN)"),
            "per-source limits with auto-ban and a SYN proxy on ingress/forward",
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
                Check::Bans,
            ],
            &[],
            Some("volumetric floods must be filtered upstream (ISP/CDN)"),
            "unsolicited reflector replies (chargen, NTP, CLDAP, SSDP, memcached) blocked; limits with auto-ban",
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
            &[
                q(OUT, Any, Untrusted, NON_TCP_UDP, Allowlisted),
                Check::App { labels: &[AppProtocol::IcmpTunnel], negated: false, required: false },
            ],
            &[],
            None,
            "non-TCP/UDP protocols (ICMP, GRE, raw IP) do not leave unless explicitly allowed",
        )),
        (&["T1572"], req(
            &[
                q(OUT, Any, Untrusted, DNS, NarrowDestinations),
                Check::App { labels: &[AppProtocol::Ssh, AppProtocol::IcmpTunnel], negated: true, required: true },
            ],
            &[&[DL]],
            None,
            "DNS only via designated resolvers with the DNS filter against DNS tunnels; tunnels on standard ports (non-DNS on 53, non-TLS on 443, ICMP tunnels) dropped by payload",
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
            &[
                q(INTO, Any, Any, &[tcp(445), tcp(139)], NarrowSources),
                Check::App { labels: &[AppProtocol::Smb1], negated: false, required: false },
            ],
            &[],
            None,
            "SMB accepted only from allowlisted sources",
        )),
        (&["T1021.005"], req(
            &[
                q(INTO, Any, Any, VNC, NarrowSources),
                Check::App { labels: &[AppProtocol::Vnc], negated: false, required: false },
            ],
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
    /// Rules that decide part of a traffic query (primary or incidental).
    rules: BTreeSet<RuleId>,
    /// Rules a non-traffic check selects by their own properties: always primary.
    named: BTreeSet<RuleId>,
    defaults: BTreeSet<String>,
    notes: Vec<String>,
    /// Per traffic query that was (partly) met: the rules listed for it and whether a default
    /// decided part of it.
    decided: Vec<(BTreeSet<RuleId>, bool)>,
}

/// Parent id of a sub-technique id (`T1557.003` → `T1557`).
fn parent_id(id: &str) -> Option<&str> {
    id.split_once('.').map(|(p, _)| p)
}

/// Whether a technique tag concerns `tech`: the technique itself, its parent or one of its
/// sub-techniques. Siblings do not count (`T1557.001` is not a tag for `T1557.003`).
fn tag_concerns(tag: &str, tech: &str) -> bool {
    tag == tech || parent_id(tech) == Some(tag) || parent_id(tag) == Some(tech)
}

/// Whether rule `id` is tagged for `tech`, through its own `mitigates` or through the
/// techniques of the profile that produced it.
fn tagged_for(policy: &Policy, id: RuleId, tech: &str) -> bool {
    let r = policy.rule(id);
    r.mitigates.iter().any(|m| tag_concerns(&m.0, tech))
        || policy
            .profiles
            .iter()
            .any(|p| p.rules.contains(&id) && p.techniques.iter().any(|m| tag_concerns(&m.0, tech)))
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
    let mut listed: BTreeSet<RuleId> = BTreeSet::new();
    let mut by_default = false;
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
                    // sliver; list only blanket denies and rules tagged for the technique.
                    if !qy.svcs.is_empty()
                        || policy.rule(*id).services.is_empty()
                        || tagged_for(policy, *id, ev.tech)
                    {
                        listed.insert(*id);
                    }
                }
                None => {
                    by_default = true;
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
                        listed.insert(*id);
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
    let outcome = match (any_blocked, any_broad) {
        (_, false) => Outcome::Met,
        (true, true) => Outcome::Partly,
        (false, true) => Outcome::Unmet,
    };
    if outcome != Outcome::Unmet {
        ev.decided.push((listed.clone(), by_default));
    }
    ev.rules.extend(listed);
    outcome
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
                ev.named.extend(ids);
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
                ev.named.extend(ids);
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
                ev.named.extend(ids);
                Outcome::Met
            }
        }
        Check::Synproxy => {
            let ids: Vec<RuleId> = (0..policy.rules.len() as u32)
                .map(RuleId)
                .filter(|&id| {
                    let r = policy.rule(id);
                    r.synproxy.is_some() && r.action == Action::Accept && live(an, id)
                })
                .collect();
            if ids.is_empty() {
                ev.notes.push("no SYN proxy on any service".into());
                Outcome::Unmet
            } else {
                ev.named.extend(ids);
                Outcome::Met
            }
        }
        Check::Bans => {
            let ids: Vec<RuleId> = (0..policy.rules.len() as u32)
                .map(RuleId)
                .filter(|&id| policy.rule(id).ban.is_some() && live(an, id))
                .collect();
            if ids.is_empty() {
                ev.notes.push("no auto-ban on any limit".into());
                Outcome::Unmet
            } else {
                ev.named.extend(ids);
                Outcome::Met
            }
        }
        Check::App {
            labels, negated, ..
        } => {
            let ids: Vec<RuleId> = (0..policy.rules.len() as u32)
                .map(RuleId)
                .filter(|&id| {
                    let r = policy.rule(id);
                    r.action != Action::Accept
                        && live(an, id)
                        && r.app.as_ref().is_some_and(|a| {
                            (!a.negate || *negated)
                                && labels.iter().any(|l| a.protocols.contains(l) != a.negate)
                        })
                })
                .collect();
            let classifier = policy
                .components
                .iter()
                .any(|c| c.kind == ComponentKind::ProtocolClassifier);
            let names: Vec<&str> = labels.iter().map(|l| l.as_str()).collect();
            if ids.is_empty() {
                ev.notes.push(format!(
                    "no application-protocol rule drops {} payloads",
                    names.join("/")
                ));
                Outcome::Unmet
            } else if !classifier {
                ev.notes.push(
                    "application-protocol rules need the protocol_classifier component".into(),
                );
                Outcome::Unmet
            } else {
                ev.named.extend(ids);
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

/// The first `shown` items joined, then `+N more`.
fn abbreviate(items: &[String], shown: usize) -> String {
    let mut out = items
        .iter()
        .take(shown)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > shown {
        let _ = write!(out, ", +{} more", items.len() - shown);
    }
    out
}

/// Splits the rules providing part of `tech` into primary (named by a check, or tagged for the
/// technique) and incidental (the rest of `deciding`), each in rule order.
fn split_rules(
    policy: &Policy,
    tech: &str,
    named: &BTreeSet<RuleId>,
    deciding: &BTreeSet<RuleId>,
) -> (Vec<RuleRef>, Vec<RuleRef>) {
    let primary: BTreeSet<RuleId> = named
        .iter()
        .copied()
        .chain(
            deciding
                .iter()
                .copied()
                .filter(|&id| tagged_for(policy, id, tech)),
        )
        .collect();
    let incidental = deciding.iter().filter(|id| !primary.contains(id));
    (
        primary.iter().map(|&id| rule_ref(policy, id)).collect(),
        incidental.map(|&id| rule_ref(policy, id)).collect(),
    )
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
        .filter_map(|c| {
            let notes = ev.notes.len();
            let o = eval_check(cx, c, &mut ev);
            if c.required() {
                Some(o)
            } else {
                // Optional: its rules are listed when present, its absence is no gap.
                ev.notes.truncate(notes);
                None
            }
        })
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
    // A query (partly) met only through rules written for something else: the status is
    // right (the traffic is decided), but nothing in the policy was meant for this technique.
    let untagged_only: BTreeSet<RuleId> = ev
        .decided
        .iter()
        .filter(|(ids, by_default)| {
            !by_default && !ids.is_empty() && !ids.iter().any(|&id| tagged_for(policy, id, t.id))
        })
        .flat_map(|(ids, _)| ids.iter().copied())
        .collect();
    if !untagged_only.is_empty() {
        let names: Vec<String> = untagged_only
            .iter()
            .map(|&id| format!("`{}`", policy.rule(id).name))
            .collect();
        let _ = write!(
            rationale,
            "; its traffic is decided only by rules not tagged for it: {}",
            abbreviate(&names, 3)
        );
    }
    let (primary_rules, incidental_rules) = split_rules(policy, t.id, &ev.named, &ev.rules);
    let tagged_without_effect = policy
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| (RuleId(i as u32), r))
        .filter(|(id, r)| {
            r.mitigates.iter().any(|m| m.0 == t.id)
                && !ev.rules.contains(id)
                && !ev.named.contains(id)
        })
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
        primary_rules,
        incidental_rules,
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
        // A sub-technique's primary rules are tagged for it or for this parent, so they stay
        // primary here; its incidental ones become primary when tagged for this parent or a
        // sibling sub-technique.
        let mut named: BTreeSet<RuleId> = BTreeSet::new();
        let mut deciding: BTreeSet<RuleId> = BTreeSet::new();
        for &j in std::iter::once(&i).chain(&subs) {
            named.extend(techniques[j].primary_rules.iter().map(|r| r.id));
            deciding.extend(techniques[j].incidental_rules.iter().map(|r| r.id));
        }
        let (primary_rules, incidental_rules) = split_rules(policy, t.id, &named, &deciding);
        let mut comps = techniques[i].components.clone();
        let mut defaults = techniques[i].defaults.clone();
        for &j in &subs {
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
        tech.primary_rules = primary_rules;
        tech.incidental_rules = incidental_rules;
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

/// Primary providers shown in the table before `+N more`.
const PROVIDERS_SHOWN: usize = 4;
/// The table's "provided by" column wraps at this many characters.
const PROVIDERS_WIDTH: usize = 100;

/// The "provided by" column of one technique, as wrapped lines: primary rules, components and
/// defaults (the first [`PROVIDERS_SHOWN`], then `+N more`), then `(+M incidental)`.
fn provided_by(t: &TechniqueCoverage) -> Vec<String> {
    let mut parts: Vec<String> = t.primary_rules.iter().map(|r| r.name.clone()).collect();
    parts.extend(t.components.iter().map(|c| c.kind.as_str().to_string()));
    parts.extend(t.defaults.iter().cloned());
    let mut tokens: Vec<String> = parts.iter().take(PROVIDERS_SHOWN).cloned().collect();
    if parts.len() > PROVIDERS_SHOWN {
        tokens.push(format!("+{} more", parts.len() - PROVIDERS_SHOWN));
    }
    if tokens.is_empty() {
        tokens.push("-".into());
    }
    let last = tokens.len() - 1;
    for tok in &mut tokens[..last] {
        tok.push(',');
    }
    if !t.incidental_rules.is_empty() {
        tokens.push(format!("(+{} incidental)", t.incidental_rules.len()));
    }
    // Greedy wrap at token boundaries; a token longer than the width gets a line of its own.
    let mut lines: Vec<String> = Vec::new();
    let mut cur = String::new();
    for tok in tokens {
        if !cur.is_empty() && cur.chars().count() + 1 + tok.chars().count() > PROVIDERS_WIDTH {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(&tok);
    }
    lines.push(cur);
    lines
}

impl Coverage {
    /// Terminal table: id, name, status, provided by.
    pub fn render_table(&self) -> String {
        let rows: Vec<([String; 3], Vec<String>)> = self
            .techniques
            .iter()
            .map(|t| {
                (
                    [t.id.to_string(), t.name.to_string(), t.status.label()],
                    provided_by(t),
                )
            })
            .collect();
        let header = ["ID", "TECHNIQUE", "STATUS"];
        let mut widths = header.map(|h| h.chars().count());
        for (r, _) in &rows {
            for (k, c) in r.iter().enumerate() {
                widths[k] = widths[k].max(c.chars().count());
            }
        }
        let indent = " ".repeat(widths.iter().map(|w| w + 2).sum());
        let mut out = String::new();
        let line = |out: &mut String, cols: [&str; 3], provided: &[String]| {
            for (k, c) in cols.iter().enumerate() {
                let pad = widths[k].saturating_sub(c.chars().count());
                out.push_str(c);
                out.push_str(&" ".repeat(pad + 2));
            }
            for (n, l) in provided.iter().enumerate() {
                if n > 0 {
                    out.push('\n');
                    out.push_str(&indent);
                }
                out.push_str(l);
            }
            out.push('\n');
        };
        line(&mut out, header, &["PROVIDED BY".to_string()]);
        for (r, provided) in &rows {
            line(&mut out, [&r[0], &r[1], &r[2]], provided);
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
            if !t.primary_rules.is_empty() {
                let rules: Vec<String> = t
                    .primary_rules
                    .iter()
                    .map(|r| format!("{} ({})", r.name, r.loc))
                    .collect();
                let _ = write!(comment, "\nrules: {}", rules.join(", "));
            }
            if !t.incidental_rules.is_empty() {
                let _ = write!(
                    comment,
                    "\nalso decided by {} rule(s) not tagged for it",
                    t.incidental_rules.len()
                );
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
                    {"name": "rules", "value": t.primary_rules.len().to_string()},
                    {"name": "incidental rules", "value": t.incidental_rules.len().to_string()},
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

    #[test]
    fn tags_concern_the_technique_its_parent_and_its_subs_not_siblings() {
        assert!(tag_concerns("T1557.003", "T1557.003"));
        assert!(tag_concerns("T1557", "T1557.003"));
        assert!(tag_concerns("T1557.003", "T1557"));
        assert!(!tag_concerns("T1557.001", "T1557.003"));
        assert!(!tag_concerns("T1552.005", "T1557.003"));
        assert!(!tag_concerns("T1552", "T1557"));
    }

    use rampart_ir::{Component, L4Match, PortRange, Rule, TechniqueId, Zone};

    fn at(line: u32) -> SourceLoc {
        SourceLoc {
            file: "policy.toml".into(),
            line,
            col: 1,
        }
    }

    /// DHCP server replies (udp 67→68).
    fn dhcp_reply() -> L4Match {
        L4Match {
            protocol: Some(proto::UDP),
            src_ports: vec![PortRange { lo: 67, hi: 67 }],
            dst_ports: vec![PortRange { lo: 68, hi: 68 }],
            icmp_types: vec![],
            service: None,
        }
    }

    fn rule(
        name: &str,
        direction: Direction,
        from: Vec<Peer>,
        to: Vec<Peer>,
        services: Vec<L4Match>,
        mitigates: &[&str],
    ) -> Rule {
        Rule {
            from,
            to,
            services,
            mitigates: mitigates
                .iter()
                .map(|m| TechniqueId(m.to_string()))
                .collect(),
            loc: at(10),
            ..Rule::new(name, direction, Action::Drop)
        }
    }

    /// A gateway with an untrusted `internet` zone, accept defaults (so only rules decide),
    /// the L2 guard on, and a metadata-API deny (tagged T1552.005) placed before `rules`.
    fn gateway(rules: Vec<Rule>) -> Policy {
        let mut p = Policy::default();
        p.defaults.ingress = Action::Accept;
        p.defaults.forward = Action::Accept;
        p.defaults.egress = Action::Accept;
        p.zones.push(Zone {
            name: "internet".into(),
            interfaces: vec!["eth0".into()],
            networks: vec![],
            trusted: false,
            public_facing: false,
            description: None,
            loc: at(2),
        });
        p.components.push(Component {
            kind: ComponentKind::L2Guard,
            loc: at(3),
        });
        let metadata: Vec<Peer> = ["169.254.169.254/32", "fd00:ec2::254/128"]
            .iter()
            .filter_map(|s| s.parse::<IpNet>().ok())
            .map(Peer::Net)
            .collect();
        p.rules.push(rule(
            "metadata-api/deny.forward",
            Direction::Forward,
            vec![],
            metadata,
            vec![],
            &["T1552", "T1552.005"],
        ));
        p.rules.extend(rules);
        p
    }

    fn names(rs: &[RuleRef]) -> Vec<&str> {
        rs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_rule_tagged_for_another_technique_is_incidental_a_tagged_one_primary() {
        let p = gateway(
            [Direction::Ingress, Direction::Forward]
                .into_iter()
                .map(|dir| {
                    rule(
                        &format!("dhcp-servers/deny.{dir}"),
                        dir,
                        vec![],
                        vec![],
                        vec![dhcp_reply()],
                        &["T1557.003"],
                    )
                })
                .collect(),
        );
        let cov = coverage(&p);
        let t = |id: &str| cov.techniques.iter().find(|t| t.id == id).unwrap();
        let dhcp = t("T1557.003");
        assert_eq!(dhcp.status, Status::Enforced);
        assert_eq!(
            names(&dhcp.primary_rules),
            ["dhcp-servers/deny.ingress", "dhcp-servers/deny.forward"]
        );
        // The metadata deny drops the DHCP replies addressed to 169.254.169.254: it decides
        // a sliver of the question, but it was not written for DHCP spoofing.
        assert_eq!(names(&dhcp.incidental_rules), ["metadata-api/deny.forward"]);
        assert!(!dhcp.rationale.contains("not tagged for it"));
        // The parent keeps the split; the table shows primary first, incidental as a count.
        let parent = t("T1557");
        assert_eq!(
            names(&parent.incidental_rules),
            ["metadata-api/deny.forward"]
        );
        assert_eq!(parent.primary_rules.len(), 2);
        let table = cov.render_table();
        let row = table.lines().find(|l| l.starts_with("T1557.003 ")).unwrap();
        assert!(row.ends_with(
            "dhcp-servers/deny.ingress, dhcp-servers/deny.forward, l2_guard (+1 incidental)"
        ));
        // For the metadata technique the same rule is primary.
        assert_eq!(
            names(&t("T1552.005").primary_rules),
            ["metadata-api/deny.forward"]
        );
        assert!(t("T1552.005").incidental_rules.is_empty());
    }

    #[test]
    fn status_from_untagged_rules_only_is_kept_and_said() {
        let p = gateway(
            [Direction::Ingress, Direction::Forward]
                .into_iter()
                .map(|dir| {
                    rule(
                        &format!("block-inbound.{dir}"),
                        dir,
                        vec![],
                        vec![],
                        vec![],
                        &["T1090"],
                    )
                })
                .collect(),
        );
        let cov = coverage(&p);
        let dhcp = cov.techniques.iter().find(|t| t.id == "T1557.003").unwrap();
        // The traffic really is blocked, so the status stays enforced ...
        assert_eq!(dhcp.status, Status::Enforced);
        assert!(dhcp.primary_rules.is_empty());
        assert_eq!(
            names(&dhcp.incidental_rules),
            [
                "metadata-api/deny.forward",
                "block-inbound.ingress",
                "block-inbound.forward"
            ]
        );
        // ... and the rationale says nothing in the policy was written for it.
        assert!(
            dhcp.rationale
                .contains("its traffic is decided only by rules not tagged for it"),
            "{}",
            dhcp.rationale
        );
    }

    #[test]
    fn provided_by_wraps_and_abbreviates() {
        let r = |i: u32| RuleRef {
            id: RuleId(i),
            name: format!("a-rather-long-profile-name/part-{i:02}.forward"),
            loc: at(i),
        };
        let t = TechniqueCoverage {
            id: "T1557",
            name: "Adversary-in-the-Middle",
            status: Status::Partial,
            primary_rules: (0..6).map(r).collect(),
            incidental_rules: (6..9).map(r).collect(),
            defaults: vec!["forward default drop".into()],
            components: vec![],
            tagged_without_effect: vec![],
            rationale: String::new(),
        };
        let lines = provided_by(&t);
        assert!(lines.iter().all(|l| l.chars().count() <= PROVIDERS_WIDTH));
        let text = lines.join(" ");
        assert!(text.contains("part-03.forward, +3 more (+3 incidental)"));
        assert!(!text.contains("part-04"));
    }
}
