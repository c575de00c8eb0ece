//! `rampart check`: findings about a policy (shadowing, redundancy, IPv4-only scope, risky
//! accepts, public-facing egress, expiry, risky defaults).

use std::borrow::Cow;
use std::fmt::Write as _;

use rampart_ir::{
    proto, Action, Date, Direction, Family, L4Match, Peer, Policy, PortRange, Rule, RuleId,
    SetSource, SourceLoc,
};
use serde::Serialize;

use crate::engine::{limited, Analysis, EXACT_CUBES, MAX_CUBES};
use crate::model::{net_to_ranges, Model, Term};
use crate::space::{Dim, Fam, Ranges, Region};

/// Rules expiring within this many days get an `expires-soon` note.
pub const EXPIRY_NOTICE_DAYS: i64 = 14;

/// Parts of a region spelled out per overlap, at most.
const MAX_PARTS_SHOWN: usize = 3;

/// Overlapping rules spelled out per finding, at most (the rest are counted).
const MAX_OVERLAPS_SHOWN: usize = 8;

/// How serious a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Almost certainly a bug in the policy.
    Error,
    /// Probably unintended or risky.
    Warning,
    /// Worth knowing.
    Info,
}

impl Severity {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// An earlier (or later) rule that decides part of the finding's rule, and that part.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overlap {
    /// The other rule; `None` for the direction's default verdict.
    pub rule: Option<RuleId>,
    /// Its name (`default` for the default verdict).
    pub name: String,
    /// Its verdict.
    pub action: Action,
    /// Where it is written.
    pub loc: SourceLoc,
    /// The overlapping part, one description per cube (at most a few, see `more`).
    pub part: Vec<String>,
    /// How many further cubes were not spelled out.
    pub more: usize,
}

/// Structured detail of a finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Detail {
    /// Nothing beyond the message.
    None,
    /// Rules (or the default) that decide parts of this rule.
    Overlaps {
        /// The overlaps in evaluation order (at most a few, see `more_rules`).
        overlaps: Vec<Overlap>,
        /// How many further rules overlap and are not listed.
        more_rules: usize,
    },
    /// Expiry date.
    Expiry {
        /// The rule's expiry date.
        expires: Date,
        /// Days from `today` to the expiry (negative: already expired).
        days_left: i64,
    },
    /// Address-family scope.
    Scope {
        /// Zones, sets or networks that only have IPv4 addresses.
        ipv4_only: Vec<String>,
    },
    /// Exposed services and where they are reachable from / to.
    Exposure {
        /// Services (`smb tcp/445`, ...).
        services: Vec<String>,
        /// Sources or destinations (`any`, `zone internet`, ...).
        peers: Vec<String>,
    },
}

/// One finding.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// Stable code (`shadowed`, `redundant`, ...), documented in `docs/analysis.md`.
    pub code: &'static str,
    /// Severity.
    pub severity: Severity,
    /// The rule the finding is about, if any.
    pub rule: Option<RuleId>,
    /// Other rules involved.
    pub related: Vec<RuleId>,
    /// Where to look: the rule's location, or the zone's/set's/defaults'.
    pub loc: SourceLoc,
    /// One-line summary.
    pub message: String,
    /// Structured detail.
    pub detail: Detail,
}

/// Finding counts per severity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Errors.
    pub errors: usize,
    /// Warnings.
    pub warnings: usize,
    /// Infos.
    pub infos: usize,
}

/// All findings of a policy, in rule order within each kind of check.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// The date expiry was judged against.
    pub today: Date,
    /// Number of rules analysed.
    pub rules: usize,
    /// Counts.
    pub summary: Summary,
    /// The findings.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether there is any error or warning.
    pub fn has_problems(&self) -> bool {
        self.summary.errors + self.summary.warnings > 0
    }

    /// Terminal text: one paragraph per finding.
    pub fn render_text(&self, policy: &Policy) -> String {
        let mut out = String::new();
        for f in &self.findings {
            let _ = write!(out, "{}: {}[{}]: ", f.loc, f.severity.as_str(), f.code);
            if let Some(id) = f.rule {
                if let Some(r) = policy.rules.get(id.0 as usize) {
                    let _ = write!(out, "rule `{}` ({}): ", r.name, r.direction);
                }
            }
            out.push_str(&f.message);
            out.push('\n');
            match &f.detail {
                Detail::Overlaps {
                    overlaps,
                    more_rules,
                } => {
                    for o in overlaps {
                        let verb = past_tense(o.action);
                        for p in &o.part {
                            let who = match o.rule {
                                Some(_) => format!("rule `{}` ({})", o.name, o.loc),
                                None => format!("the {} default ({})", o.name, o.loc),
                            };
                            let _ = writeln!(out, "    {p} is {verb} by {who}");
                        }
                        if o.more > 0 {
                            let _ = writeln!(out, "    ... and {} more part(s) of it", o.more);
                        }
                    }
                    if *more_rules > 0 {
                        let _ = writeln!(out, "    ... and {more_rules} more rule(s)");
                    }
                }
                Detail::Expiry { expires, days_left } => {
                    let _ = writeln!(out, "    expires {expires} ({days_left} day(s) from today)");
                }
                Detail::Scope { ipv4_only } => {
                    let _ = writeln!(out, "    IPv4-only: {}", ipv4_only.join(", "));
                }
                Detail::Exposure { services, peers } => {
                    let _ = writeln!(out, "    services: {}", services.join(", "));
                    let _ = writeln!(out, "    peers: {}", peers.join(", "));
                }
                Detail::None => {}
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} rule(s) checked: {} error(s), {} warning(s), {} note(s)",
            self.rules, self.summary.errors, self.summary.warnings, self.summary.infos
        );
        out
    }
}

fn past_tense(a: Action) -> &'static str {
    match a {
        Action::Accept => "already accepted",
        Action::Drop => "already dropped",
        Action::Reject => "already rejected",
    }
}

/// Analyses a policy. `today` decides which rules count as expired.
pub fn check(policy: &Policy, today: Date) -> Report {
    let an = Analysis::new(policy);
    let mut findings = Vec::new();
    defaults_findings(policy, &mut findings);
    scope_findings_for_named(policy, &mut findings);
    for (i, rule) in policy.rules.iter().enumerate() {
        let id = RuleId(i as u32);
        shadow_findings(&an, id, rule, &mut findings);
        ipv4_only_finding(&an, id, rule, &mut findings);
        // An application-protocol `accept` exempts a connection from later app rules; it
        // opens nothing, so the accept checks do not apply to it.
        if rule.app.is_none() {
            risky_accept_finding(&an, id, rule, &mut findings);
            public_facing_finding(&an, id, rule, &mut findings);
        }
        expiry_finding(id, rule, today, &mut findings);
    }
    // Profiles state explicit denies on purpose (their own counters, log prefixes and
    // technique tags), so their redundancies are notes; user rules keep the warning.
    for f in &mut findings {
        if f.code == "redundant" {
            if let Some(id) = f.rule {
                if matches!(
                    policy.rule(id).origin,
                    rampart_ir::RuleOrigin::Profile { .. }
                ) {
                    f.severity = Severity::Info;
                }
            }
        }
    }
    let mut summary = Summary::default();
    for f in &findings {
        match f.severity {
            Severity::Error => summary.errors += 1,
            Severity::Warning => summary.warnings += 1,
            Severity::Info => summary.infos += 1,
        }
    }
    Report {
        today,
        rules: policy.rules.len(),
        summary,
        findings,
    }
}

fn overlap_of(m: &Model<'_>, dir: Direction, rule: Option<RuleId>, part: &Region) -> Overlap {
    let policy = m.policy;
    let (name, action, loc) = match rule {
        Some(id) => {
            let r = policy.rule(id);
            (r.name.clone(), r.action, r.loc.clone())
        }
        None => (
            dir.as_str().to_string(),
            policy.defaults.for_direction(dir),
            policy.defaults.loc.clone(),
        ),
    };
    let mut parts: Vec<String> = part
        .cubes
        .iter()
        .take(MAX_PARTS_SHOWN)
        .map(|c| m.describe(dir, c))
        .collect();
    parts.dedup();
    Overlap {
        rule,
        name,
        action,
        loc,
        part: parts,
        more: part.cubes.len().saturating_sub(MAX_PARTS_SHOWN),
    }
}

fn finding(
    code: &'static str,
    severity: Severity,
    rule: Option<(RuleId, &Rule)>,
    loc: Option<&SourceLoc>,
    message: String,
    detail: Detail,
) -> Finding {
    Finding {
        code,
        severity,
        rule: rule.map(|(id, _)| id),
        related: vec![],
        loc: loc
            .cloned()
            .or_else(|| rule.map(|(_, r)| r.loc.clone()))
            .unwrap_or_default(),
        message,
        detail,
    }
}

fn shadow_findings(an: &Analysis<'_>, id: RuleId, rule: &Rule, out: &mut Vec<Finding>) {
    let m = &an.model;
    let facts = &an.facts[id.0 as usize];
    let dir = rule.direction;
    let policy = m.policy;
    if facts.empty {
        out.push(finding(
            "empty-match",
            Severity::Warning,
            Some((id, rule)),
            None,
            "can never match: its fields exclude each other (e.g. an interface zone on the side \
             this direction has no interface, ICMP with family ipv6, or only conntrack states \
             the stateful prelude already decides)"
                .into(),
            Detail::None,
        ));
        return;
    }
    if facts.effective.is_none() && !facts.live_witness {
        let mut f = finding(
            "analysis-limit",
            Severity::Info,
            Some((id, rule)),
            None,
            format!(
                "shadowing not decided: the remainder after earlier rules needs more than \
                 {EXACT_CUBES} boxes and no uncovered packet was found; results for this rule \
                 are incomplete"
            ),
            Detail::None,
        );
        f.related = facts.hits.clone();
        out.push(f);
        return;
    }
    // Unknown remainder but proven live: what follows works on the rule's whole region,
    // which is a superset of what it decides (sound for the redundancy check).
    let effective = facts.effective.as_ref().unwrap_or_else(|| m.region(id));
    let names = |os: &[(RuleId, &Region)]| {
        let mut v: Vec<String> = os
            .iter()
            .take(MAX_OVERLAPS_SHOWN)
            .map(|(h, _)| format!("`{}`", policy.rule(*h).name))
            .collect();
        if os.len() > MAX_OVERLAPS_SHOWN {
            v.push(format!("and {} more", os.len() - MAX_OVERLAPS_SHOWN));
        }
        v.join(", ")
    };
    let describe = |os: &[(RuleId, &Region)]| Detail::Overlaps {
        overlaps: os
            .iter()
            .take(MAX_OVERLAPS_SHOWN)
            .map(|(h, part)| overlap_of(m, dir, Some(*h), part))
            .collect(),
        more_rules: os.len().saturating_sub(MAX_OVERLAPS_SHOWN),
    };
    if effective.is_empty() {
        let parts = an.hit_parts(id);
        let all: Vec<(RuleId, &Region)> = parts.iter().map(|(h, p)| (*h, p)).collect();
        let differing: Vec<(RuleId, &Region)> = all
            .iter()
            .copied()
            .filter(|(h, _)| policy.rule(*h).action != rule.action)
            .collect();
        let mut f = if differing.is_empty() {
            finding(
                "redundant",
                Severity::Warning,
                Some((id, rule)),
                None,
                format!(
                    "never decides: everything it matches is already {} by earlier rule(s) {}; \
                     removing it changes nothing",
                    past_tense(rule.action).trim_start_matches("already "),
                    names(&all)
                ),
                describe(&all),
            )
        } else {
            finding(
                "shadowed",
                Severity::Error,
                Some((id, rule)),
                None,
                format!(
                    "is fully shadowed and never decides: earlier rule(s) {} match everything it \
                     matches, {} with a different verdict than its `{}`",
                    names(&all),
                    names(&differing),
                    rule.action.as_str()
                ),
                describe(&all),
            )
        };
        f.related = facts.hits.clone();
        out.push(f);
        return;
    }
    synproxy_claimed_finding(an, id, rule, out);
    // Only the differing hits are reported for a live rule; their parts were kept.
    let differing: Vec<(RuleId, &Region)> = facts
        .hits
        .iter()
        .zip(&facts.differing_parts)
        .filter_map(|(h, p)| p.as_ref().map(|p| (*h, p)))
        .collect();
    if !differing.is_empty() {
        let mut f = finding(
            "partially-shadowed",
            // Carving exceptions with an earlier rule is the normal idiom, so this is a note;
            // the text names the rule and the part so an unintended overlap stands out.
            Severity::Info,
            Some((id, rule)),
            None,
            format!(
                "is partially shadowed: part of what it would {} is decided earlier by {}",
                rule.action.as_str(),
                names(&differing)
            ),
            describe(&differing),
        );
        f.related = differing.iter().map(|(h, _)| *h).collect();
        out.push(f);
    }
    // An app rule that matches nothing falls through to the conntrack step and the normal
    // rules, not to a default verdict: "redundant by later rules" has no meaning for it.
    if rule.app.is_none() {
        redundant_by_later(an, id, rule, effective, out);
    }
}

/// A SYN proxy acts at its rule's place (IR: `Synproxy`): a SYN that an earlier rule's static
/// fields match is not proxied. An earlier drop or reject deciding part of the proxied traffic
/// is what the policy says (a blocklist before the web site) and is not reported; an earlier
/// *accepting* rule lets that part in without SYN-flood protection, and an earlier *limited*
/// rule lets its overflow reach the proxy rule, which then accepts it unproxied.
fn synproxy_claimed_finding(an: &Analysis<'_>, id: RuleId, rule: &Rule, out: &mut Vec<Finding>) {
    if rule.synproxy.is_none() {
        return;
    }
    let m = &an.model;
    let policy = m.policy;
    let region = m.region(id);
    let earlier: Vec<(RuleId, Region)> = policy
        .rules_in(rule.direction)
        .take_while(|(e, _)| *e != id)
        .filter(|(e, r)| {
            r.app.is_none()
                && r.synproxy.is_none()
                && (r.action == Action::Accept || limited(policy, *e))
        })
        .filter_map(|(e, _)| {
            let part = region.intersect(m.region(e));
            (!part.is_empty()).then_some((e, part))
        })
        .collect();
    if earlier.is_empty() {
        return;
    }
    let names: Vec<String> = earlier
        .iter()
        .take(MAX_OVERLAPS_SHOWN)
        .map(|(e, _)| format!("`{}`", policy.rule(*e).name))
        .collect();
    let mut f = finding(
        "synproxy-claimed",
        Severity::Warning,
        Some((id, rule)),
        None,
        format!(
            "earlier rule(s) {} match part of its SYNs first, so that part is not proxied \
             (accepted without SYN-flood protection{})",
            names.join(", "),
            if earlier.iter().any(|(e, _)| limited(policy, *e)) {
                ", or, over an earlier rule's limit, by this rule unproxied"
            } else {
                ""
            }
        ),
        Detail::Overlaps {
            overlaps: earlier
                .iter()
                .take(MAX_OVERLAPS_SHOWN)
                .map(|(e, part)| overlap_of(m, rule.direction, Some(*e), part))
                .collect(),
            more_rules: earlier.len().saturating_sub(MAX_OVERLAPS_SHOWN),
        },
    );
    f.related = earlier.iter().map(|(e, _)| *e).collect();
    out.push(f);
}

/// A rule is redundant when the rules after it (or the default) decide everything it decides
/// the same way: walk later rules; a different-verdict rule touching what is left ends it.
fn redundant_by_later(
    an: &Analysis<'_>,
    id: RuleId,
    rule: &Rule,
    effective: &Region,
    out: &mut Vec<Finding>,
) {
    let m = &an.model;
    let policy = m.policy;
    let dir = rule.direction;
    let mut remaining = effective.clone();
    let mut covering: Vec<(Option<RuleId>, Region)> = Vec::new();
    for lid in an.later_overlapping(id) {
        let later = policy.rule(lid);
        let lr = owner_relaxed(m, rule, later, m.region(lid));
        if !remaining.overlaps(lr.as_ref()) {
            continue;
        }
        if later.action != rule.action {
            return;
        }
        if limited(policy, lid) {
            continue;
        }
        let exact = m.region(lid);
        let part = remaining.intersect(exact);
        if part.is_empty() {
            continue;
        }
        if remaining.subtract_in_place(exact, MAX_CUBES).is_err() {
            return;
        }
        covering.push((Some(lid), part));
        if remaining.is_empty() {
            break;
        }
    }
    if !remaining.is_empty() {
        if policy.defaults.for_direction(dir) != rule.action || rule.log {
            return;
        }
        covering.push((None, remaining));
    }
    let overlaps: Vec<Overlap> = covering
        .iter()
        .take(MAX_OVERLAPS_SHOWN)
        .map(|(r, part)| overlap_of(m, dir, *r, part))
        .collect();
    let more_rules = covering.len().saturating_sub(MAX_OVERLAPS_SHOWN);
    let mut who: Vec<String> = overlaps
        .iter()
        .map(|o| match o.rule {
            Some(_) => format!("rule `{}`", o.name),
            None => format!("the {} default", o.name),
        })
        .collect();
    if more_rules > 0 {
        who.push(format!("{more_rules} more rule(s)"));
    }
    let mut f = finding(
        "redundant",
        Severity::Warning,
        Some((id, rule)),
        None,
        format!(
            "is redundant: without it {} would {} the same packets; removing it changes nothing",
            who.join(" and "),
            rule.action.as_str()
        ),
        Detail::Overlaps {
            overlaps,
            more_rules,
        },
    );
    f.related = covering.iter().filter_map(|(r, _)| *r).collect();
    out.push(f);
}

/// Owners are opaque atoms, so two different owner constraints look disjoint; when deciding
/// whether a different-verdict rule *may* intersect, treat them as overlapping.
fn owner_relaxed<'r>(m: &Model<'_>, a: &Rule, b: &Rule, region: &'r Region) -> Cow<'r, Region> {
    match (&a.owner, &b.owner) {
        (Some(x), Some(y)) if x != y => {
            let full = m.universe(b.direction);
            let owner_full = full
                .cubes
                .first()
                .map(|c| c.get(Dim::Owner).clone())
                .unwrap_or_default();
            let mut r = region.clone();
            for c in &mut r.cubes {
                c.dims[Dim::Owner as usize] = owner_full.clone();
            }
            Cow::Owned(r)
        }
        _ => Cow::Borrowed(region),
    }
}

fn defaults_findings(policy: &Policy, out: &mut Vec<Finding>) {
    let d = &policy.defaults;
    for dir in [Direction::Ingress, Direction::Forward] {
        if d.for_direction(dir) == Action::Accept && !d.stateful {
            out.push(finding(
                "default-accept-stateless",
                Severity::Warning,
                None,
                Some(&d.loc),
                format!(
                    "the {dir} default is accept and the stateful prelude is off: every packet no \
                     rule drops gets in, including invalid ones; make the default drop and \
                     enable `stateful`"
                ),
                Detail::None,
            ));
        }
    }
    if d.forward == Action::Accept {
        let pf: Vec<String> = policy
            .zones
            .iter()
            .filter(|z| z.public_facing)
            .map(|z| format!("zone {}", z.name))
            .collect();
        if !pf.is_empty() {
            out.push(finding(
                "public-facing-egress",
                Severity::Warning,
                None,
                Some(&d.loc),
                format!(
                    "the forward default is accept: new connections from public-facing {} to \
                     any destination fall to it (T1190, T1071.001)",
                    pf.join(", ")
                ),
                Detail::Exposure {
                    services: vec!["all traffic".into()],
                    peers: pf,
                },
            ));
        }
    }
}

fn scope_findings_for_named(policy: &Policy, out: &mut Vec<Finding>) {
    for z in &policy.zones {
        let (v4, v6) = net_to_ranges(&z.networks);
        if !v4.is_empty() && v6.is_empty() {
            out.push(finding(
                "zone-ipv4-only",
                Severity::Warning,
                None,
                Some(&z.loc),
                format!(
                    "zone `{}` has IPv4 networks but no IPv6 networks: rules naming it match no \
                     IPv6 traffic, which falls to the defaults; add its IPv6 prefixes",
                    z.name
                ),
                Detail::Scope {
                    ipv4_only: vec![format!("zone {}", z.name)],
                },
            ));
        }
    }
    for s in &policy.sets {
        if matches!(s.source, SetSource::Feed { .. }) {
            continue;
        }
        let (v4, v6) = net_to_ranges(&s.elements);
        if !v4.is_empty() && v6.is_empty() {
            out.push(finding(
                "zone-ipv4-only",
                Severity::Info,
                None,
                Some(&s.loc),
                format!(
                    "set `{}` has IPv4 members but no IPv6 members: rules naming it match no IPv6 \
                     traffic",
                    s.name
                ),
                Detail::Scope {
                    ipv4_only: vec![format!("set {}", s.name)],
                },
            ));
        }
    }
}

fn peer_name(policy: &Policy, p: &Peer) -> String {
    match p {
        Peer::Zone(z) => policy
            .zones
            .get(z.0 as usize)
            .map_or_else(|| "?".into(), |z| z.name.clone()),
        Peer::Set(s) => policy
            .sets
            .get(s.0 as usize)
            .map_or_else(|| "?".into(), |s| format!("@{}", s.name)),
        Peer::Net(n) => n.to_string(),
    }
}

fn side_text(policy: &Policy, peers: &[Peer]) -> String {
    if peers.is_empty() {
        "any".into()
    } else {
        peers
            .iter()
            .map(|p| peer_name(policy, p))
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub(crate) fn service_text(s: &L4Match) -> String {
    let base = match s.protocol {
        None => return "all traffic".into(),
        Some(proto::TCP) => "tcp",
        Some(proto::UDP) => "udp",
        Some(proto::ICMP) => "icmp",
        Some(proto::ICMPV6) => "icmpv6",
        Some(p) => return format!("proto {p}"),
    };
    let ports: Vec<String> = s.dst_ports.iter().map(PortRange::to_string).collect();
    let mut t = base.to_string();
    if !ports.is_empty() {
        t.push('/');
        t.push_str(&ports.join(","));
    }
    if !s.icmp_types.is_empty() {
        let types: Vec<String> = s.icmp_types.iter().map(u8::to_string).collect();
        t.push_str(&format!(" type {}", types.join(",")));
    }
    match &s.service {
        Some(name) => format!("{name} ({t})"),
        None => t,
    }
}

fn services_text(services: &[L4Match]) -> String {
    if services.is_empty() {
        "all traffic".into()
    } else {
        services
            .iter()
            .map(service_text)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn ipv4_only_finding(an: &Analysis<'_>, id: RuleId, rule: &Rule, out: &mut Vec<Finding>) {
    let m = &an.model;
    let policy = m.policy;
    let region = m.region(id);
    let has = |f: Fam| region.cubes.iter().any(|c| c.fam == f);
    if !has(Fam::V4) || has(Fam::V6) {
        return;
    }
    // ICMP is IPv4-only by definition; its IPv6 counterpart is a separate ICMPv6 rule.
    if !rule.services.is_empty()
        && rule
            .services
            .iter()
            .all(|s| s.protocol == Some(proto::ICMP))
    {
        return;
    }
    let peers: Vec<&Peer> = rule.from.iter().chain(&rule.to).collect();
    // Feed sets are often IPv4-only lists; that is the feed's business, not the policy's.
    if peers.iter().any(|p| match p {
        Peer::Set(s) => policy
            .sets
            .get(s.0 as usize)
            .is_some_and(|s| matches!(s.source, SetSource::Feed { .. })),
        _ => false,
    }) {
        return;
    }
    let verb = format!("{}s", rule.action.as_str());
    let app = match &rule.app {
        None => String::new(),
        Some(a) => format!(
            "{}{} payloads on ",
            if a.negate { "non-" } else { "" },
            a.protocols
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join("/")
        ),
    };
    let what = format!(
        "{verb} {app}{} from {} to {}",
        services_text(&rule.services),
        side_text(policy, &rule.from),
        side_text(policy, &rule.to)
    );
    let default = if rule.app.is_some() {
        "is not inspected by it".to_string()
    } else {
        format!(
            "falls to the default ({})",
            policy.defaults.for_direction(rule.direction).as_str()
        )
    };
    if rule.family == Family::V4 {
        let from = m.side_terms(&rule.from);
        let to = m.side_terms(&rule.to);
        let mirror = m.region_of(rule.direction, Family::V6, &from, &to, &rule.services);
        if !mirror.is_empty() {
            let counterpart = Region::new(
                policy
                    .rules_in(rule.direction)
                    .filter(|(l, r)| {
                        *l != id
                            && r.action == rule.action
                            && !limited(policy, *l)
                            && match (&r.app, &rule.app) {
                                (None, None) => true,
                                (Some(a), Some(b)) => crate::engine::app_covers(a, b),
                                _ => false,
                            }
                    })
                    .flat_map(|(l, _)| m.region(l).cubes.iter().filter(|c| c.fam == Fam::V6))
                    .cloned()
                    .collect(),
            );
            let mirror = relax_ct_owner(&mirror);
            let counterpart = relax_ct_owner(&counterpart);
            if mirror.is_subset(&counterpart, MAX_CUBES).unwrap_or(false) {
                return;
            }
            out.push(finding(
                "ipv4-only",
                Severity::Warning,
                Some((id, rule)),
                None,
                format!(
                    "{what} over IPv4 only (family = ipv4) and no other rule covers the IPv6 \
                     side; IPv6 traffic {} {default}",
                    from_phrase(policy, rule)
                ),
                Detail::Scope {
                    ipv4_only: vec![format!("rule {}", rule.name)],
                },
            ));
            return;
        }
    }
    let mut culprits = Vec::new();
    let mut named = false;
    for p in &peers {
        let (v4, v6) = match p {
            Peer::Zone(z) => {
                let Some(zone) = policy.zones.get(z.0 as usize) else {
                    continue;
                };
                if zone.networks.is_empty() {
                    continue;
                }
                net_to_ranges(&zone.networks)
            }
            Peer::Set(s) => match policy.sets.get(s.0 as usize) {
                Some(set) => net_to_ranges(&set.elements),
                None => continue,
            },
            Peer::Net(n) => net_to_ranges(std::slice::from_ref(n)),
        };
        if !v4.is_empty() && v6.is_empty() {
            named |= !matches!(p, Peer::Net(_));
            culprits.push(match p {
                Peer::Zone(_) => format!("zone {}", peer_name(policy, p)),
                Peer::Set(_) => format!("set {}", peer_name(policy, p).trim_start_matches('@')),
                Peer::Net(n) => n.to_string(),
            });
        }
    }
    if culprits.is_empty() {
        culprits.push(format!("rule family {:?}", rule.family).to_lowercase());
    }
    out.push(finding(
        "ipv4-only",
        if named {
            Severity::Warning
        } else {
            Severity::Info
        },
        Some((id, rule)),
        None,
        format!(
            "{what} over IPv4 only ({} has no IPv6 addresses); IPv6 traffic {} {default}",
            culprits.join(", "),
            from_phrase(policy, rule)
        ),
        Detail::Scope {
            ipv4_only: culprits,
        },
    ));
}

fn from_phrase(policy: &Policy, rule: &Rule) -> String {
    match (rule.from.is_empty(), rule.to.is_empty()) {
        (false, _) => format!("from {}", side_text(policy, &rule.from)),
        (true, false) => format!("to {}", side_text(policy, &rule.to)),
        (true, true) => "of this kind".into(),
    }
}

/// Conntrack and owner dimensions set to everything, so a counterpart comparison only looks
/// at addresses, interfaces and services.
fn relax_ct_owner(r: &Region) -> Region {
    let mut r = r.clone();
    for c in &mut r.cubes {
        c.dims[Dim::Ct as usize] = Ranges::interval(0, 4);
        c.dims[Dim::Owner as usize] = Ranges::interval(0, u128::from(u32::MAX));
    }
    r
}

/// Protocols the seed calls abused, with the ports they use.
pub const RISKY_SERVICES: &[(&str, u8, u16)] = &[
    ("smb/smbv1", proto::TCP, 445),
    ("netbios-ssn", proto::TCP, 139),
    ("netbios-ns", proto::UDP, 137),
    ("netbios-dgm", proto::UDP, 138),
    ("msrpc", proto::TCP, 135),
    ("msrpc", proto::UDP, 135),
    ("telnet", proto::TCP, 23),
    ("vnc", proto::TCP, 5900),
    ("vnc-http", proto::TCP, 5800),
    ("vnc-listen", proto::TCP, 5500),
    ("rdp", proto::TCP, 3389),
    ("rdp", proto::UDP, 3389),
    ("snmp", proto::UDP, 161),
    ("snmp-trap", proto::UDP, 162),
];

pub(crate) fn svc(p: u8, lo: u16, hi: u16) -> L4Match {
    L4Match {
        protocol: Some(p),
        src_ports: vec![],
        dst_ports: vec![PortRange { lo, hi }],
        icmp_types: vec![],
        service: None,
    }
}

fn risky_accept_finding(an: &Analysis<'_>, id: RuleId, rule: &Rule, out: &mut Vec<Finding>) {
    if rule.action != Action::Accept || rule.direction == Direction::Egress {
        return;
    }
    let m = &an.model;
    let policy = m.policy;
    let mut sources: Vec<(String, Vec<Term>)> = Vec::new();
    if rule.from.is_empty() {
        sources.push(("any".into(), m.side_terms(&[])));
    }
    for p in &rule.from {
        let untrusted = match p {
            Peer::Zone(z) => policy.zones.get(z.0 as usize).is_some_and(|z| !z.trusted),
            Peer::Net(n) => n.prefix_len() == 0,
            Peer::Set(_) => false,
        };
        if untrusted {
            let label = match p {
                Peer::Zone(_) => format!("zone {} (untrusted)", peer_name(policy, p)),
                _ => format!("any ({})", peer_name(policy, p)),
            };
            sources.push((label, m.side_terms(std::slice::from_ref(p))));
        }
    }
    if sources.is_empty() {
        return;
    }
    let decided = an.decided(id);
    let any = m.side_terms(&[]);
    let mut services = Vec::new();
    let mut peers = Vec::new();
    for (label, terms) in &sources {
        let mut hit_here = false;
        for &(name, p, port) in RISKY_SERVICES {
            let q = m.region_of(
                rule.direction,
                Family::Any,
                terms,
                &any,
                &[svc(p, port, port)],
            );
            if decided.overlaps(&q) {
                let text = format!(
                    "{name} {}/{port}",
                    if p == proto::TCP { "tcp" } else { "udp" }
                );
                if !services.contains(&text) {
                    services.push(text);
                }
                hit_here = true;
            }
        }
        if hit_here {
            peers.push(label.clone());
        }
    }
    if services.is_empty() {
        return;
    }
    out.push(finding(
        "risky-accept",
        Severity::Warning,
        Some((id, rule)),
        None,
        format!(
            "accepts protocols the seed calls abused ({}) from {}; allow them only from trusted \
             management ranges (T1021.002, T1021.005, T1187, T1602.001)",
            services.join(", "),
            peers.join(", ")
        ),
        Detail::Exposure { services, peers },
    ));
}

/// Destinations wider than this many addresses count as "anywhere" for public-facing egress.
const NARROW_V4_ADDRS: u128 = 1 << 16;
const NARROW_V6_ADDRS: u128 = 1 << 80;

fn public_facing_finding(an: &Analysis<'_>, id: RuleId, rule: &Rule, out: &mut Vec<Finding>) {
    if rule.action != Action::Accept || rule.direction == Direction::Ingress {
        return;
    }
    if !rule.ct_states.is_empty() && !rule.ct_states.contains(&rampart_ir::CtState::New) {
        return;
    }
    let m = &an.model;
    let policy = m.policy;
    let pf: Vec<&Peer> = rule
        .from
        .iter()
        .filter(|p| match p {
            Peer::Zone(z) => policy
                .zones
                .get(z.0 as usize)
                .is_some_and(|z| z.public_facing),
            _ => false,
        })
        .collect();
    if pf.is_empty() {
        return;
    }
    let mut broad: Vec<(String, Vec<Term>)> = Vec::new();
    if rule.to.is_empty() {
        broad.push(("any destination".into(), m.side_terms(&[])));
    }
    for p in &rule.to {
        let label = match p {
            Peer::Zone(z) => match policy.zones.get(z.0 as usize) {
                Some(zone) if !zone.trusted => Some(format!("zone {} (untrusted)", zone.name)),
                _ => None,
            },
            _ => {
                let t = m.peer_term(p);
                (t.v4.count() > NARROW_V4_ADDRS || t.v6.count() > NARROW_V6_ADDRS)
                    .then(|| format!("{} (broad)", peer_name(policy, p)))
            }
        };
        if let Some(label) = label {
            broad.push((label, m.side_terms(std::slice::from_ref(p))));
        }
    }
    let src_terms: Vec<Term> = pf
        .iter()
        .flat_map(|p| m.side_terms(std::slice::from_ref(*p)))
        .collect();
    let decided = an.decided(id);
    let mut peers = Vec::new();
    for (label, terms) in &broad {
        let q = m.region_of(
            rule.direction,
            rule.family,
            &src_terms,
            terms,
            &rule.services,
        );
        if decided.overlaps(&q) {
            peers.push(label.clone());
        }
    }
    if peers.is_empty() {
        return;
    }
    let from: Vec<String> = pf.iter().map(|p| peer_name(policy, p)).collect();
    let services = if rule.services.is_empty() {
        vec!["all traffic".to_string()]
    } else {
        rule.services.iter().map(service_text).collect()
    };
    out.push(finding(
        "public-facing-egress",
        Severity::Warning,
        Some((id, rule)),
        None,
        format!(
            "accepts new connections from public-facing {} to {} ({}); restrict egress of \
             public-facing servers to a narrow allowlist (T1190, T1071.001)",
            from.join(", "),
            peers.join(", "),
            services.join(", ")
        ),
        Detail::Exposure { services, peers },
    ));
}

fn expiry_finding(id: RuleId, rule: &Rule, today: Date, out: &mut Vec<Finding>) {
    let Some(expires) = rule.expires else {
        return;
    };
    let days_left = expires.unix_days() - today.unix_days();
    let detail = Detail::Expiry { expires, days_left };
    if expires < today {
        out.push(finding(
            "expired",
            Severity::Warning,
            Some((id, rule)),
            None,
            format!(
                "expired on {expires} ({} day(s) ago); remove it or extend `expires`",
                -days_left
            ),
            detail,
        ));
    } else if days_left <= EXPIRY_NOTICE_DAYS {
        out.push(finding(
            "expires-soon",
            Severity::Info,
            Some((id, rule)),
            None,
            format!("expires on {expires}, in {days_left} day(s)"),
            detail,
        ));
    }
}
