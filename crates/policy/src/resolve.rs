//! Stage 2: validate the typed trees of all files and resolve names into the IR. Zones, sets
//! and services get ids; addresses, ports, dates and rates are parsed and range-checked; rules
//! are checked for impossible combinations (family mismatches, owner outside egress); profiles
//! are expanded ([`crate::profiles`]). Every problem is a diagnostic; the IR is only handed out
//! when there are none of severity error.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use rampart_ir::{
    proto, Action, AddressSet, AppMatch, AppProtocol, Ban, Component, ComponentKind, CtState, Date,
    Defaults, Direction, Family, L4Match, Limit, Owner, Peer, Policy, RateUnit, Rule, RuleId,
    RuleOrigin, SetId, SetSource, SourceLoc, Synproxy, TechniqueId, Zone, ZoneId,
};

use crate::ast::{self, S};
use crate::diag::{did_you_mean, Diags, Report};
use crate::limits::*;
use crate::services;
use crate::source::{FileId, SourceMap, Span};

/// IP family bit set: which families a peer or service can match.
pub(crate) const V4: u8 = 1;
pub(crate) const V6: u8 = 2;
pub(crate) const BOTH: u8 = V4 | V6;

fn family_name(mask: u8) -> &'static str {
    match mask {
        V4 => "IPv4",
        V6 => "IPv6",
        BOTH => "IPv4 and IPv6",
        _ => "no family",
    }
}

/// What a name in `from`/`to` refers to.
#[derive(Clone, Copy, Debug)]
enum Named {
    Zone(ZoneId),
    Set(SetId),
}

/// Name tables and resolved declarations, shared with profile expansion.
pub(crate) struct Ctx<'a> {
    pub sources: &'a SourceMap,
    pub zones: Vec<Zone>,
    pub sets: Vec<AddressSet>,
    names: HashMap<String, (Named, Span)>,
    services: HashMap<String, (Vec<L4Match>, Span)>,
    zone_spans: Vec<Span>,
    /// Families each set's elements cover (feeds: both, as unknown at compile time).
    set_families: Vec<u8>,
    /// Declared programs, for `owner.program`.
    pub programs: crate::programs::Programs,
}

/// The resolved fields of a rule with their spans, for [`Ctx::check_rule`].
pub(crate) struct RuleParts<'x> {
    pub from: &'x [(Peer, Span)],
    pub to: &'x [(Peer, Span)],
    pub services: &'x [(Vec<L4Match>, Span)],
    pub family_span: Option<Span>,
    pub rule_span: Span,
}

/// A rule candidate with its spans, before ids are assigned.
pub(crate) struct Candidate {
    pub rule: Rule,
    pub name_span: Span,
}

impl Ctx<'_> {
    pub fn loc(&self, span: Span) -> SourceLoc {
        self.sources.loc(span)
    }

    /// Resolve `from`/`to` entries. `"any"` alone means any (empty list).
    pub fn peers(&self, items: &[S<String>], diags: &mut Diags) -> Vec<(Peer, Span)> {
        let mut out = Vec::new();
        let any_at = items.iter().find(|i| i.v == "any");
        if let Some(any) = any_at {
            if items.len() > 1 {
                diags.push(
                    Report::error("E0145", "`any` cannot be combined with other peers")
                        .label(any.span, "`any` already matches everything")
                        .hint("remove `any`, or write only `any`"),
                );
            }
            return out;
        }
        for item in items {
            let s = item.v.trim();
            if looks_like_address(s) {
                match parse_net(s) {
                    Ok(net) => out.push((Peer::Net(net), item.span)),
                    Err(e) => diags.push(e.at(item.span)),
                }
                continue;
            }
            match self.names.get(s) {
                Some((Named::Zone(id), _)) => out.push((Peer::Zone(*id), item.span)),
                Some((Named::Set(id), _)) => out.push((Peer::Set(*id), item.span)),
                None => {
                    // A service name in `from`/`to` is a common slip: say so.
                    let is_service = self.services.contains_key(s) || services::lookup(s).is_some();
                    let hint = if is_service {
                        Some(format!(
                            "`{s}` is a service: write it in `service`, not in `from`/`to`"
                        ))
                    } else {
                        did_you_mean(s, self.names.keys().map(String::as_str)).or_else(|| {
                            Some(
                                "peers are zone names, set names, addresses/prefixes, or `any`"
                                    .into(),
                            )
                        })
                    };
                    diags.push(
                        Report::error("E0101", format!("unknown zone or set `{s}`"))
                            .label(item.span, "no zone or set has this name")
                            .hint_opt(hint),
                    );
                }
            }
        }
        out
    }

    /// Families a peer can match.
    pub fn peer_family(&self, peer: &Peer) -> u8 {
        match peer {
            Peer::Net(n) => net_family(n),
            Peer::Zone(id) => {
                let z = &self.zones[id.0 as usize];
                if z.networks.is_empty() {
                    BOTH
                } else {
                    z.networks.iter().fold(0, |m, n| m | net_family(n))
                }
            }
            Peer::Set(id) => self.set_families[id.0 as usize],
        }
    }

    /// Resolve `service` entries into IR matches (literals, user services, catalogue).
    pub fn services(&self, items: &[S<String>], diags: &mut Diags) -> Vec<(Vec<L4Match>, Span)> {
        let mut out = Vec::new();
        for item in items {
            let s = item.v.trim();
            if let Some(m) = self.service(s, item.span, diags) {
                out.push((m, item.span));
            }
        }
        out
    }

    fn service(&self, s: &str, span: Span, diags: &mut Diags) -> Option<Vec<L4Match>> {
        if services::is_literal(s) {
            return match services::parse_literal(s) {
                Ok(m) => Some(vec![m]),
                Err(e) => {
                    diags.push(
                        Report::error(e.code, e.message)
                            .label(span, "not a valid service")
                            .hint_opt(e.hint),
                    );
                    None
                }
            };
        }
        if let Some((m, _)) = self.services.get(s) {
            return Some(m.clone());
        }
        if let Some(named) = services::lookup(s) {
            return Some(named.matches());
        }
        let candidates = services::CATALOGUE
            .iter()
            .map(|n| n.name)
            .chain(self.services.keys().map(String::as_str));
        let hint = if self.names.contains_key(s) {
            Some(format!(
                "`{s}` is a zone or set: write it in `from`/`to`, not in `service`"
            ))
        } else {
            did_you_mean(s, candidates)
        };
        diags.push(
            Report::error("E0102", format!("unknown service `{s}`"))
                .label(span, "not a built-in or declared service")
                .hint_opt(hint.or_else(|| {
                    Some(
                        "write a literal such as `tcp/8443`, or declare it under [services]".into(),
                    )
                })),
        );
        None
    }

    pub fn zone_ids_where(&self, pred: impl Fn(&Zone) -> bool) -> Vec<ZoneId> {
        self.zones
            .iter()
            .enumerate()
            .filter(|(_, z)| pred(z))
            .map(|(i, _)| ZoneId(i as u32))
            .collect()
    }

    /// Check one rule for family mismatches and dead peers; push diagnostics.
    pub fn check_rule(&self, rule: &Rule, parts: &RuleParts<'_>, diags: &mut Diags) {
        let RuleParts {
            from,
            to,
            services,
            family_span,
            rule_span,
        } = *parts;
        let fam_mask = match rule.family {
            Family::Any => BOTH,
            Family::V4 => V4,
            Family::V6 => V6,
        };
        // Each element that cannot match the explicit family is an error of its own.
        if rule.family != Family::Any {
            for (peer, span) in from.iter().chain(to.iter()) {
                let pf = self.peer_family(peer);
                if pf & fam_mask == 0 {
                    diags.push(
                        Report::error(
                            "E0130",
                            format!(
                                "`{}` has only {} addresses but the rule is restricted to {}",
                                self.peer_name(peer),
                                family_name(pf),
                                family_name(fam_mask)
                            ),
                        )
                        .label(*span, format!("{} only", family_name(pf)))
                        .label(family_span.unwrap_or(rule_span), "family set here"),
                    );
                }
            }
            for (ms, span) in services {
                let sf = ms.iter().fold(0, |m, x| m | service_family(x));
                if sf & fam_mask == 0 {
                    diags.push(
                        Report::error(
                            "E0130",
                            format!(
                                "service matches only {} but the rule is restricted to {}",
                                family_name(sf),
                                family_name(fam_mask)
                            ),
                        )
                        .label(*span, format!("{} only", family_name(sf)))
                        .label(family_span.unwrap_or(rule_span), "family set here")
                        .hint("ICMP (`icmp/...`) is IPv4; ICMPv6 (`icmpv6/...`) is IPv6"),
                    );
                }
            }
        }
        // The rule as a whole: the families every field allows must intersect.
        let side = |peers: &[(Peer, Span)]| {
            if peers.is_empty() {
                BOTH
            } else {
                peers.iter().fold(0, |m, (p, _)| m | self.peer_family(p))
            }
        };
        let svc = if services.is_empty() {
            BOTH
        } else {
            services
                .iter()
                .flat_map(|(ms, _)| ms.iter())
                .fold(0, |m, x| m | service_family(x))
        };
        let (f, t) = (side(from), side(to));
        let all = fam_mask & f & t & svc;
        if all == 0 && rule.family == Family::Any {
            let mut r = Report::error(
                "E0131",
                format!(
                    "rule `{}` can never match: its fields allow no common address family",
                    rule.name
                ),
            )
            .label(rule_span, "this rule");
            for (what, mask, items) in [("from", f, from), ("to", t, to)] {
                if let Some((_, span)) = items.first() {
                    r = r.label(*span, format!("`{what}` is {}", family_name(mask)));
                }
            }
            if let Some((_, span)) = services.first() {
                r = r.label(*span, format!("services are {}", family_name(svc)));
            }
            diags.push(r);
        }
        // Zones that list interfaces never match on the side that has no interface.
        let (side_name, side_peers) = match rule.direction {
            Direction::Ingress => ("destination of an ingress", to),
            Direction::Egress => ("source of an egress", from),
            Direction::Forward => ("", &[][..]),
        };
        for (peer, span) in side_peers {
            if let Peer::Zone(id) = peer {
                let z = &self.zones[id.0 as usize];
                if !z.interfaces.is_empty() {
                    diags.push(
                        Report::warning(
                            "W0204",
                            format!("zone `{}` never matches as the {side_name} rule", z.name),
                        )
                        .label(*span, "this peer never matches")
                        .label(self.zone_spans[id.0 as usize], "the zone lists interfaces")
                        .hint(if rule.direction == Direction::Ingress {
                            "ingress packets have no output interface; leave `to` empty (this host) or name addresses"
                        } else {
                            "egress packets have no input interface; leave `from` empty (this host) or name addresses"
                        }),
                    );
                }
            }
        }
    }

    /// The address families a rule can match at all (0: none), from its family, peers and
    /// services.
    pub fn rule_families(&self, rule: &Rule) -> u8 {
        let fam = match rule.family {
            Family::Any => BOTH,
            Family::V4 => V4,
            Family::V6 => V6,
        };
        let side = |peers: &[Peer]| {
            if peers.is_empty() {
                BOTH
            } else {
                peers.iter().fold(0, |m, p| m | self.peer_family(p))
            }
        };
        let svc = if rule.services.is_empty() {
            BOTH
        } else {
            rule.services.iter().fold(0, |m, x| m | service_family(x))
        };
        fam & side(&rule.from) & side(&rule.to) & svc
    }

    fn peer_name(&self, peer: &Peer) -> String {
        match peer {
            Peer::Zone(id) => self.zones[id.0 as usize].name.clone(),
            Peer::Set(id) => self.sets[id.0 as usize].name.clone(),
            Peer::Net(n) => n.to_string(),
        }
    }
}

pub(crate) fn service_family(m: &L4Match) -> u8 {
    match m.protocol {
        Some(proto::ICMP) => V4,
        Some(proto::ICMPV6) => V6,
        _ => BOTH,
    }
}

fn net_family(n: &IpNet) -> u8 {
    match n {
        IpNet::V4(_) => V4,
        IpNet::V6(_) => V6,
    }
}

/// An error found while parsing one value, placed later.
pub(crate) struct ValueError {
    code: &'static str,
    message: String,
    label: String,
    hint: Option<String>,
}

impl ValueError {
    fn new(code: &'static str, message: String, label: &str, hint: Option<String>) -> Self {
        Self {
            code,
            message,
            label: label.into(),
            hint,
        }
    }

    pub fn at(self, span: Span) -> Report {
        Report::error(self.code, self.message)
            .label(span, self.label)
            .hint_opt(self.hint)
    }
}

/// Whether a peer string is meant as an address (names start with a letter).
pub(crate) fn looks_like_address(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_digit()) || s.contains(':')
}

/// `192.0.2.1`, `192.0.2.0/24`, `2001:db8::/32`; host bits must be clear.
pub(crate) fn parse_net(s: &str) -> Result<IpNet, ValueError> {
    let s = s.trim();
    if s.contains('/') {
        let net: IpNet = s.parse().map_err(|_| {
            ValueError::new(
                "E0120",
                format!("`{s}` is not a valid address prefix"),
                "bad prefix",
                Some(
                    "write an address or a prefix such as `192.0.2.0/24` or `2001:db8::/32`".into(),
                ),
            )
        })?;
        let network = net.trunc();
        if network != net {
            return Err(ValueError::new(
                "E0121",
                format!("prefix `{s}` has host bits set"),
                "host bits set",
                Some(format!(
                    "did you mean `{network}`? (or `{}` for the single host)",
                    match net.addr() {
                        IpAddr::V4(a) => a.to_string(),
                        IpAddr::V6(a) => a.to_string(),
                    }
                )),
            ));
        }
        Ok(net)
    } else {
        let addr: IpAddr = s.parse().map_err(|_| {
            ValueError::new(
                "E0120",
                format!("`{s}` is not a valid IP address"),
                "bad address",
                Some("write an IPv4 or IPv6 address, or a prefix".into()),
            )
        })?;
        Ok(IpNet::from(addr))
    }
}

/// Names of zones, sets, services, rules: a letter, then letters, digits, `-`, `_`, `.`.
pub(crate) fn check_name(what: &str, name: &S<String>, diags: &mut Diags) -> bool {
    let n = &name.v;
    let problem = if n.is_empty() {
        Some("is empty".to_string())
    } else if n.chars().count() > MAX_NAME_LEN {
        Some(format!("is longer than {MAX_NAME_LEN} characters"))
    } else if !n.starts_with(|c: char| c.is_ascii_alphabetic()) {
        Some("must start with a letter".to_string())
    } else if !n
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        Some("may contain only letters, digits, `-`, `_` and `.`".to_string())
    } else if n == "any" {
        Some("is reserved (`any` means every address)".to_string())
    } else {
        None
    };
    match problem {
        Some(p) => {
            diags.push(
                Report::error("E0144", format!("{what} name `{n}` {p}"))
                    .label(name.span, "invalid name"),
            );
            false
        }
        None => true,
    }
}

fn check_description(d: &Option<S<String>>, diags: &mut Diags) -> Option<String> {
    let d = d.as_ref()?;
    if d.v.chars().count() > MAX_DESCRIPTION_LEN {
        diags.push(
            Report::error(
                "E0005",
                format!("description is longer than {MAX_DESCRIPTION_LEN} characters"),
            )
            .label(d.span, "too long"),
        );
        return None;
    }
    Some(d.v.clone())
}

pub(crate) fn parse_action(s: &S<String>, diags: &mut Diags) -> Option<Action> {
    match s.v.as_str() {
        "accept" => Some(Action::Accept),
        "drop" => Some(Action::Drop),
        "reject" => Some(Action::Reject),
        other => {
            diags.push(
                Report::error("E0145", format!("unknown action `{other}`"))
                    .label(s.span, "expected accept, drop or reject")
                    .hint_opt(did_you_mean(other, ["accept", "drop", "reject"])),
            );
            None
        }
    }
}

pub(crate) fn parse_direction(s: &S<String>, diags: &mut Diags) -> Option<Direction> {
    match s.v.as_str() {
        "ingress" => Some(Direction::Ingress),
        "egress" => Some(Direction::Egress),
        "forward" => Some(Direction::Forward),
        other => {
            diags.push(
                Report::error("E0145", format!("unknown direction `{other}`"))
                    .label(s.span, "expected ingress, egress or forward")
                    .hint_opt(
                        did_you_mean(other, ["ingress", "egress", "forward"]).or_else(|| {
                            Some(
                                "ingress: to this host; egress: from it; forward: through it"
                                    .into(),
                            )
                        }),
                    ),
            );
            None
        }
    }
}

/// `2027-01-31` (a TOML date, or a string).
pub(crate) fn parse_date(s: &S<String>, diags: &mut Diags) -> Option<Date> {
    let bad = |diags: &mut Diags, why: &str| {
        diags.push(
            Report::error("E0142", format!("bad date `{}`: {why}", s.v))
                .label(s.span, "expected YYYY-MM-DD")
                .hint("write a calendar date such as 2027-01-31 (UTC, no time)"),
        );
        None
    };
    let parts: Vec<&str> = s.v.split('-').collect();
    if parts.len() != 3
        || parts[0].len() != 4
        || parts[1].len() != 2
        || parts[2].len() != 2
        || !parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return bad(diags, "not in YYYY-MM-DD form");
    }
    let (Ok(year), Ok(month), Ok(day)) = (
        parts[0].parse::<u16>(),
        parts[1].parse::<u8>(),
        parts[2].parse::<u8>(),
    ) else {
        return bad(diags, "not a number");
    };
    if !(1970..=9999).contains(&year) {
        return bad(diags, "year out of range 1970-9999");
    }
    if !(1..=12).contains(&month) {
        return bad(diags, "month out of range 1-12");
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if day == 0 || day > days {
        return bad(diags, &format!("day out of range 1-{days} for that month"));
    }
    Some(Date { year, month, day })
}

/// `"10/minute"` (packets) or `"512 kbytes/second"` (bytes).
pub(crate) fn parse_rate(s: &S<String>, diags: &mut Diags) -> Option<(u64, u32, RateUnit)> {
    let bad = |diags: &mut Diags, why: String| {
        diags.push(
            Report::error("E0143", format!("bad rate `{}`: {why}", s.v))
                .label(s.span, "bad rate")
                .hint("write N/second, N/minute, N/hour or N/day (packets), or `N kbytes/second` (bytes, also bytes and mbytes)"),
        );
        None
    };
    let Some((amount, period)) = s.v.split_once('/') else {
        return bad(diags, "missing `/period`".into());
    };
    let per_s = match period.trim() {
        "second" | "s" => 1,
        "minute" | "m" => 60,
        "hour" | "h" => 3600,
        "day" | "d" => 86_400,
        other => return bad(diags, format!("unknown period `{other}`")),
    };
    let amount = amount.trim();
    let (num, unit) = match amount.split_once(char::is_whitespace) {
        Some((n, u)) => (n.trim(), Some(u.trim())),
        None => (amount, None),
    };
    let Ok(n) = num.parse::<u64>() else {
        return bad(diags, format!("`{num}` is not a whole number"));
    };
    let (mult, unit) = match unit {
        None | Some("packets") => (1, RateUnit::Packets),
        Some("bytes") => (1, RateUnit::Bytes),
        Some("kbytes") => (1024, RateUnit::Bytes),
        Some("mbytes") => (1024 * 1024, RateUnit::Bytes),
        Some(other) => return bad(diags, format!("unknown unit `{other}`")),
    };
    let rate = n.saturating_mul(mult);
    if rate == 0 || rate > MAX_RATE {
        return bad(diags, format!("rate must be 1..={MAX_RATE}"));
    }
    Some((rate, per_s, unit))
}

/// Resolve an `owner` table; `program` names become their jail cgroups.
pub(crate) fn resolve_owner(
    o: &ast::OwnerDecl,
    programs: &crate::programs::Programs,
    diags: &mut Diags,
) -> Option<Owner> {
    let mut owner = Owner::default();
    let mut ok = true;
    for (list, out, what) in [
        (&o.uid, &mut owner.uids, "uid"),
        (&o.gid, &mut owner.gids, "gid"),
    ] {
        for id in list {
            // Why: (u32)-1 is the kernel's "no id" marker and never owns a socket.
            match u32::try_from(id.v) {
                Ok(v) if v != u32::MAX => out.push(v),
                _ => {
                    ok = false;
                    diags.push(
                        Report::error("E0145", format!("{what} `{}` is out of range", id.v))
                            .label(id.span, format!("{what}s are 0-4294967294")),
                    );
                }
            }
        }
    }
    for c in &o.cgroup {
        let p = &c.v;
        let why = if p.is_empty() {
            Some("is empty")
        } else if p.starts_with('/') {
            Some("must be relative to the cgroup2 mount (no leading `/`)")
        } else if p
            .split('/')
            .any(|seg| seg == ".." || seg == "." || seg.is_empty())
        {
            Some("has empty, `.` or `..` components")
        } else if p.len() > MAX_CGROUP_LEN {
            Some("is too long")
        } else {
            None
        };
        match why {
            Some(why) => {
                ok = false;
                diags.push(
                    Report::error("E0145", format!("cgroup path `{p}` {why}"))
                        .label(c.span, "bad cgroup path")
                        .hint("write e.g. `system.slice/nginx.service`"),
                );
            }
            None => {
                programs.check_literal_cgroup(c, diags);
                owner.cgroups.push(p.clone());
            }
        }
    }
    for name in &o.program {
        match programs.cgroup(name, diags) {
            Some(cgroup) => {
                if !owner.cgroups.contains(&cgroup) {
                    owner.cgroups.push(cgroup);
                }
            }
            None => ok = false,
        }
    }
    if owner.uids.is_empty() && owner.gids.is_empty() && owner.cgroups.is_empty() && ok {
        diags.push(
            Report::error("E0145", "`owner` lists no uid, gid, cgroup or program")
                .label(o.span, "empty owner")
                .hint("remove `owner`, or list at least one uid, gid, cgroup or program"),
        );
        return None;
    }
    ok.then_some(owner)
}

fn check_interface(i: &S<String>, diags: &mut Diags) -> bool {
    let n = &i.v;
    let star = n.find('*');
    let why = if n.is_empty() {
        Some("is empty".to_string())
    } else if n.len() > MAX_IFNAME_LEN {
        Some(format!(
            "is longer than {MAX_IFNAME_LEN} bytes (Linux IFNAMSIZ)"
        ))
    } else if n
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c == ':' || c == '"')
    {
        Some("contains whitespace, `/`, `:` or `\"`".to_string())
    } else if star.is_some_and(|p| p != n.len() - 1) {
        Some("may use `*` only as the last character".to_string())
    } else if n == "*" {
        Some("is only a wildcard; leave `interfaces` empty to match any".to_string())
    } else {
        None
    };
    match why {
        Some(why) => {
            diags.push(
                Report::error("E0160", format!("interface name `{n}` {why}"))
                    .label(i.span, "bad interface name"),
            );
            false
        }
        None => true,
    }
}

/// Subtract `except` from `nets` exactly (splitting prefixes), then aggregate.
///
/// After aggregation the prefixes are disjoint and ordered by (address, length), so for each
/// excepted prefix only a contiguous range (the prefixes inside it) and one predecessor (the
/// prefix holding it, if any) can be affected: O((n + m) log n) instead of O(n * m).
pub(crate) fn subtract(nets: &[IpNet], except: &[IpNet]) -> Vec<IpNet> {
    use std::collections::BTreeSet;
    let mut cur: BTreeSet<IpNet> = IpNet::aggregate(&nets.to_vec()).into_iter().collect();
    for ex in except {
        let (lo, hi) = match ex {
            IpNet::V4(n) => (
                IpNet::V4(ipnet::Ipv4Net::new_assert(n.network(), 0)),
                IpNet::V4(ipnet::Ipv4Net::new_assert(n.broadcast(), 32)),
            ),
            IpNet::V6(n) => (
                IpNet::V6(ipnet::Ipv6Net::new_assert(n.network(), 0)),
                IpNet::V6(ipnet::Ipv6Net::new_assert(n.broadcast(), 128)),
            ),
        };
        // Prefixes that start inside `ex` lie inside it (they are disjoint from any prefix
        // holding `ex`, and no prefix both starts inside `ex` and is larger than it).
        let inside: Vec<IpNet> = cur
            .range(lo..=hi)
            .copied()
            .filter(|n| ex.contains(n))
            .collect();
        for n in inside {
            cur.remove(&n);
        }
        // At most one prefix holds `ex`: the last one starting at or before it.
        if let Some(holder) = cur.range(..=*ex).next_back().copied() {
            // `ex` itself, if present, went with the prefixes inside it.
            if holder.contains(ex) {
                cur.remove(&holder);
                let mut parts = Vec::new();
                split_out(holder, *ex, &mut parts);
                cur.extend(parts);
            }
        }
    }
    IpNet::aggregate(&cur.into_iter().collect())
}

/// Push the parts of `n` that are not in `ex` (which `n` strictly contains).
fn split_out(n: IpNet, ex: IpNet, out: &mut Vec<IpNet>) {
    let mut n = n;
    // Walk down from n towards ex; at each level keep the half that does not hold ex.
    while n.prefix_len() < ex.prefix_len() {
        let Ok(mut halves) = n.subnets(n.prefix_len() + 1) else {
            return;
        };
        let (Some(a), Some(b)) = (halves.next(), halves.next()) else {
            return;
        };
        if a.contains(&ex) {
            out.push(b);
            n = a;
        } else {
            out.push(a);
            n = b;
        }
    }
}

fn resolve_defaults(
    files: &[(FileId, ast::File)],
    sources: &SourceMap,
    diags: &mut Diags,
) -> Defaults {
    let mut d = Defaults {
        loc: SourceLoc {
            file: files
                .last()
                .map(|(id, _)| sources.file(*id).name().to_string())
                .unwrap_or_default(),
            line: 1,
            col: 1,
        },
        ..Defaults::default()
    };
    let mut seen: Option<Span> = None;
    for (_, f) in files {
        let Some(decl) = &f.defaults else { continue };
        if let Some(first) = seen {
            diags.push(
                Report::error("E0111", "`[defaults]` is declared more than once")
                    .label(decl.span, "declared again here")
                    .label(first, "first declared here")
                    .hint("keep a single [defaults] table across the policy and its includes"),
            );
            continue;
        }
        seen = Some(decl.span);
        d.loc = sources.loc(decl.span);
        for (field, out) in [
            (&decl.ingress, &mut d.ingress),
            (&decl.egress, &mut d.egress),
            (&decl.forward, &mut d.forward),
        ] {
            if let Some(s) = field {
                if let Some(a) = parse_action(s, diags) {
                    *out = a;
                }
            }
        }
        if let Some(b) = decl.stateful {
            d.stateful = b;
        }
        if let Some(b) = decl.allow_loopback {
            d.allow_loopback = b;
        }
        if let Some(b) = decl.allow_icmpv6_essential {
            d.allow_icmpv6_essential = b;
        }
        if let Some(b) = decl.classifier_fail_open {
            d.classifier_fail_open = b;
        }
        if let Some(n) = &decl.classifier_queues {
            match u16::try_from(n.v) {
                Ok(q) if (1..=rampart_ir::MAX_CLASSIFIER_QUEUES).contains(&q) => {
                    d.classifier_queues = q
                }
                _ => diags.push(
                    Report::error(
                        "E0187",
                        format!("classifier_queues `{}` is out of range", n.v),
                    )
                    .label(
                        n.span,
                        format!("expected 1..={}", rampart_ir::MAX_CLASSIFIER_QUEUES),
                    )
                    .hint("one queue per classifier thread; more than the machine's cores only add contention"),
                ),
            }
        }
    }
    d
}

/// `never_ban`: zones (their networks), sets (their compile-time members) and addresses.
fn resolve_never_ban(
    ctx: &Ctx<'_>,
    files: &[(FileId, ast::File)],
    diags: &mut Diags,
) -> Vec<IpNet> {
    // Only the first [defaults] counts; a second one is already an error.
    let Some((span, items)) = files
        .iter()
        .find_map(|(_, f)| f.defaults.as_ref())
        .and_then(|d| d.never_ban.as_ref())
    else {
        return Vec::new();
    };
    if items.iter().any(|i| i.v == "any") {
        diags.push(
            Report::error("E0186", "`never_ban` cannot be `any`")
                .label(*span, "would make every ban a no-op")
                .hint("list the management networks, monitoring hosts and upstreams that must never be banned"),
        );
        return Vec::new();
    }
    let mut nets = Vec::new();
    for (peer, pspan) in ctx.peers(items, diags) {
        match peer {
            Peer::Net(n) => nets.push(n),
            Peer::Zone(id) => {
                let z = &ctx.zones[id.0 as usize];
                if z.networks.is_empty() {
                    diags.push(
                        Report::error(
                            "E0186",
                            format!("zone `{}` has no networks to exempt from bans", z.name),
                        )
                        .label(pspan, "bans are by source address")
                        .hint("give the zone `networks`, or list the addresses here"),
                    );
                }
                nets.extend(z.networks.iter().copied());
            }
            Peer::Set(id) => {
                let s = &ctx.sets[id.0 as usize];
                if matches!(s.source, SetSource::Feed { .. }) {
                    diags.push(
                        Report::error(
                            "E0186",
                            format!("feed set `{}` cannot be used in `never_ban`", s.name),
                        )
                        .label(pspan, "its members change at run time")
                        .hint("the ban exemptions are fixed when the policy is compiled: use an inline or file set"),
                    );
                }
                nets.extend(s.elements.iter().copied());
            }
        }
    }
    IpNet::aggregate(&nets)
}

/// Resolve every file (in include-expanded order) into a policy.
pub(crate) fn resolve(
    files: &[(FileId, ast::File)],
    sources: &SourceMap,
    diags: &mut Diags,
) -> Policy {
    let mut defaults = resolve_defaults(files, sources, diags);
    let mut ctx = Ctx {
        sources,
        zones: Vec::new(),
        sets: Vec::new(),
        names: HashMap::new(),
        services: HashMap::new(),
        zone_spans: Vec::new(),
        set_families: Vec::new(),
        programs: crate::programs::Programs::default(),
    };
    let mut zone_net_spans: Vec<Vec<(IpNet, Span)>> = Vec::new();
    let decl_count: usize = files
        .iter()
        .map(|(_, f)| f.zones.len() + f.sets.len() + f.services.len() + f.profiles.len())
        .sum();
    if decl_count > MAX_DECLARATIONS {
        diags.push(Report::error(
            "E0005",
            format!("more than {MAX_DECLARATIONS} zones, sets, services and profiles"),
        ));
        return Policy::default();
    }

    // Zones and sets share one namespace: both may appear in `from`/`to`.
    let claim = |ctx: &mut Ctx<'_>,
                 what: &str,
                 name: &S<String>,
                 named: Named,
                 diags: &mut Diags|
     -> bool {
        if !check_name(what, name, diags) {
            return false;
        }
        if let Some((prev, span)) = ctx.names.get(&name.v) {
            let prev_what = match prev {
                Named::Zone(_) => "zone",
                Named::Set(_) => "set",
            };
            diags.push(
                Report::error("E0110", format!("duplicate name `{}`", name.v))
                    .label(name.span, format!("{what} declared here"))
                    .label(
                        *span,
                        format!("{prev_what} with the same name declared here"),
                    )
                    .hint("zones and sets share one namespace; rename one of them"),
            );
            return false;
        }
        ctx.names.insert(name.v.clone(), (named, name.span));
        true
    };

    for (_, f) in files {
        for z in &f.zones {
            let id = ZoneId(ctx.zones.len() as u32);
            if !claim(&mut ctx, "zone", &z.name, Named::Zone(id), diags) {
                continue;
            }
            let mut interfaces = Vec::new();
            for i in &z.interfaces {
                if check_interface(i, diags) && !interfaces.contains(&i.v) {
                    interfaces.push(i.v.clone());
                }
            }
            let mut nets = Vec::new();
            for n in &z.networks {
                match parse_net(&n.v) {
                    Ok(net) => nets.push((net, n.span)),
                    Err(e) => diags.push(e.at(n.span)),
                }
            }
            if z.interfaces.is_empty() && z.networks.is_empty() {
                diags.push(
                    Report::warning(
                        "W0203",
                        format!("zone `{}` lists neither interfaces nor networks", z.name.v),
                    )
                    .label(z.name.span, "matches every packet")
                    .hint("add `interfaces` or `networks`, or use `any` in rules instead"),
                );
            }
            let networks = IpNet::aggregate(&nets.iter().map(|(n, _)| *n).collect());
            ctx.zones.push(Zone {
                name: z.name.v.clone(),
                interfaces,
                networks,
                trusted: z.trusted,
                public_facing: z.public_facing,
                description: check_description(&z.description, diags),
                loc: ctx.loc(z.name.span),
            });
            ctx.zone_spans.push(z.name.span);
            zone_net_spans.push(nets);
        }
    }
    // Overlapping zones: a packet from the overlap belongs to both; say where.
    for i in 0..zone_net_spans.len() {
        for j in (i + 1)..zone_net_spans.len() {
            if let Some((a, sa, b, sb)) = first_overlap(&zone_net_spans[i], &zone_net_spans[j]) {
                diags.push(
                    Report::warning(
                        "W0201",
                        format!(
                            "zones `{}` and `{}` overlap: `{b}` and `{a}`",
                            ctx.zones[j].name, ctx.zones[i].name
                        ),
                    )
                    .label(sb, format!("in zone `{}`", ctx.zones[j].name))
                    .label(
                        sa,
                        format!("overlaps this network of zone `{}`", ctx.zones[i].name),
                    )
                    .hint("addresses in the overlap match both zones; make the networks disjoint"),
                );
            }
        }
    }

    for (_, f) in files {
        for s in &f.sets {
            let id = SetId(ctx.sets.len() as u32);
            if !claim(&mut ctx, "set", &s.name, Named::Set(id), diags) {
                continue;
            }
            // Members come from `elements` or `file` (not both); a `feed` fills the set at run
            // time and may come with either as the members known at compile time (a snapshot).
            let problem = match (s.elements.is_some(), s.file.is_some(), s.feed.is_some()) {
                (true, true, _) => Some("has both `elements` and `file`"),
                (false, false, false) => Some("has no members: give `elements`, `file` or `feed`"),
                _ => None,
            };
            if let Some(problem) = problem {
                diags.push(
                    Report::error("E0151", format!("set `{}` {problem}", s.name.v))
                        .label(s.name.span, "members come from one place")
                        .hint("use `elements` or `file` for the members, optionally with a `feed`"),
                );
            }
            let mut elements = Vec::new();
            let listed: &[S<String>] = if s.file.is_some() {
                &s.file_elements
            } else {
                s.elements.as_deref().unwrap_or(&[])
            };
            for e in listed {
                match parse_net(&e.v) {
                    Ok(n) => elements.push(n),
                    Err(err) => diags.push(err.at(e.span)),
                }
            }
            let mut except = Vec::new();
            for e in &s.except {
                match parse_net(&e.v) {
                    Ok(n) => except.push(n),
                    Err(err) => diags.push(err.at(e.span)),
                }
            }
            // A feed decides the run-time source; a snapshot file only seeds the elements.
            let source = if let Some(feed) = &s.feed {
                resolve_feed(&s.name.v, feed, diags)
            } else if let Some(file) = &s.file {
                SetSource::File {
                    path: file.v.clone(),
                }
            } else {
                SetSource::Inline
            };
            let is_feed = matches!(source, SetSource::Feed { .. });
            let elements = subtract(&elements, &except);
            let fam = if is_feed || elements.is_empty() {
                BOTH
            } else {
                elements.iter().fold(0, |m, n| m | net_family(n))
            };
            ctx.sets.push(AddressSet {
                name: s.name.v.clone(),
                elements,
                source,
                except: IpNet::aggregate(&except),
                loc: ctx.loc(s.name.span),
            });
            ctx.set_families.push(fam);
        }
    }

    let never_ban = resolve_never_ban(&ctx, files, diags);

    for (_, f) in files {
        for s in &f.services {
            if !check_name("service", &s.name, diags) {
                continue;
            }
            if services::lookup(&s.name.v).is_some() || services::is_literal(&s.name.v) {
                diags.push(
                    Report::error(
                        "E0110",
                        format!("service `{}` redefines a built-in service", s.name.v),
                    )
                    .label(s.name.span, "built-in name")
                    .hint("choose another name; built-in services cannot be redefined"),
                );
                continue;
            }
            if let Some((_, prev)) = ctx.services.get(&s.name.v) {
                diags.push(
                    Report::error("E0110", format!("duplicate service `{}`", s.name.v))
                        .label(s.name.span, "declared again here")
                        .label(*prev, "first declared here"),
                );
                continue;
            }
            if s.ports.is_empty() {
                diags.push(
                    Report::error("E0004", format!("service `{}` has no `ports`", s.name.v))
                        .label(s.name.span, "missing `ports`"),
                );
                continue;
            }
            let mut ms = Vec::new();
            for (m, _) in ctx.services(&s.ports, diags) {
                for mut x in m {
                    x.service = Some(s.name.v.clone());
                    ms.push(x);
                }
            }
            ctx.services.insert(s.name.v.clone(), (ms, s.name.span));
        }
    }

    let (jail, programs) = crate::programs::resolve_jail(files, sources, diags);
    let l2 = crate::l2::resolve_l2(files, sources, diags);
    ctx.programs = programs;

    // Rules: profiles placed before user rules, user rules in file order, profiles placed after.
    let mut before: Vec<Candidate> = Vec::new();
    let mut user: Vec<Candidate> = Vec::new();
    let mut after: Vec<Candidate> = Vec::new();
    let mut profile_uses = Vec::new();
    let mut profile_seen: HashMap<String, Span> = HashMap::new();
    for (_, f) in files {
        for p in &f.profiles {
            if let Some(first) = profile_seen.get(&p.name.v) {
                diags.push(
                    Report::error(
                        "E0110",
                        format!("profile `{}` is enabled more than once", p.name.v),
                    )
                    .label(p.name.span, "enabled again here")
                    .label(*first, "first enabled here")
                    .hint("merge the two tables; each profile is enabled once"),
                );
                continue;
            }
            profile_seen.insert(p.name.v.clone(), p.name.span);
            if let Some(exp) = crate::profiles::expand(&ctx, p, diags) {
                let slot = if exp.after { &mut after } else { &mut before };
                let start = slot.len();
                slot.extend(exp.rules);
                profile_uses.push((exp.use_, exp.after, start, slot.len()));
            }
        }
        for r in &f.rules {
            if let Some(c) = resolve_rule(&ctx, r, diags) {
                user.push(c);
            }
        }
    }

    let total = before.len() + user.len() + after.len();
    if total > MAX_RULES {
        diags.push(Report::error(
            "E0005",
            format!("more than {MAX_RULES} rules"),
        ));
        return Policy::default();
    }
    let mut rules = Vec::with_capacity(total);
    let mut seen: HashMap<String, Span> = HashMap::new();
    let before_len = before.len();
    let user_len = user.len();
    let mut app_spans: Vec<Span> = Vec::new();
    for c in before.into_iter().chain(user).chain(after) {
        if c.rule.app.is_some() {
            app_spans.push(c.name_span);
        }
        if let Some(prev) = seen.get(&c.rule.name) {
            diags.push(
                Report::error("E0110", format!("duplicate rule name `{}`", c.rule.name))
                    .label(c.name_span, "used again here")
                    .label(*prev, "first used here")
                    .hint("rule names identify rules in logs and analysis; make them unique"),
            );
        } else {
            seen.insert(c.rule.name.clone(), c.name_span);
        }
        rules.push(c.rule);
    }
    let mut profiles = Vec::new();
    for (mut u, is_after, start, end) in profile_uses {
        let base = if is_after { before_len + user_len } else { 0 };
        u.rules = (start..end).map(|i| RuleId((base + i) as u32)).collect();
        profiles.push(u);
    }

    let mut components: Vec<Component> = Vec::new();
    let mut comp_seen: Option<Span> = None;
    for (_, f) in files {
        let Some(c) = &f.components else { continue };
        if let Some(first) = comp_seen {
            diags.push(
                Report::error("E0111", "`[components]` is declared more than once")
                    .label(c.span, "declared again here")
                    .label(first, "first declared here"),
            );
            continue;
        }
        comp_seen = Some(c.span);
        for (name, on) in &c.enabled {
            if !on {
                continue;
            }
            let kind = match name.v.as_str() {
                "dns_filter" => ComponentKind::DnsFilter,
                "waf" => ComponentKind::Waf,
                "egress_proxy" => ComponentKind::EgressProxy,
                "l2_guard" => ComponentKind::L2Guard,
                "feeds" => ComponentKind::Feeds,
                _ => ComponentKind::ProtocolClassifier,
            };
            components.push(Component {
                kind,
                loc: ctx.loc(name.span),
            });
        }
    }

    defaults.never_ban = never_ban;
    classifier_warning(&rules, &app_spans, &components, &defaults, diags);
    // Why: after an error a rule's owner may be missing, so "no rule names it" could be false.
    if let (Some(jail), false) = (&jail, diags.has_errors()) {
        crate::programs::unused_programs(jail, &ctx.programs, &rules, diags);
    }
    Policy {
        zones: ctx.zones,
        sets: ctx.sets,
        rules,
        defaults,
        components,
        profiles,
        jail,
        l2,
    }
}

/// Application-protocol rules without the classifier component: say what happens to the
/// traffic they inspect, which depends on `classifier_fail_open`.
fn classifier_warning(
    rules: &[Rule],
    app_spans: &[Span],
    components: &[Component],
    defaults: &Defaults,
    diags: &mut Diags,
) {
    let count = rules.iter().filter(|r| r.app.is_some()).count();
    let Some(first) = app_spans.first() else {
        return;
    };
    if count == 0
        || components
            .iter()
            .any(|c| c.kind == ComponentKind::ProtocolClassifier)
    {
        return;
    }
    let consequence = if defaults.classifier_fail_open {
        "with `classifier_fail_open = true` the packets they inspect pass uninspected, so these rules do nothing"
    } else {
        "with `classifier_fail_open = false` (the default) every packet they must inspect is dropped while no classifier runs, so those connections fail"
    };
    diags.push(
        Report::warning(
            "W0209",
            format!(
                "{count} application-protocol rule(s) but `[components] protocol_classifier` is not enabled"
            ),
        )
        .label(*first, "first application-protocol rule")
        .hint(format!(
            "{consequence}; enable `protocol_classifier = true` under [components] and run `rampart classify`"
        )),
    );
}

fn first_overlap(a: &[(IpNet, Span)], b: &[(IpNet, Span)]) -> Option<(IpNet, Span, IpNet, Span)> {
    for (na, sa) in a {
        for (nb, sb) in b {
            if na.contains(nb) || nb.contains(na) {
                return Some((*na, *sa, *nb, *sb));
            }
        }
    }
    None
}

/// Feed formats the feeds component understands.
pub const FEED_FORMATS: &[&str] = &["plain", "netset", "spamhaus", "tor", "ipsum", "csv", "stix"];

fn resolve_feed(name: &str, feed: &ast::FeedDecl, diags: &mut Diags) -> SetSource {
    let url = match &feed.url {
        Some(u) => {
            if u.v.starts_with("http://") {
                diags.push(
                    Report::error("E0152", "feed URLs must use https://")
                        .label(u.span, "plain http can be tampered with in transit")
                        .hint(format!(
                            "write `{}`",
                            u.v.replacen("http://", "https://", 1)
                        )),
                );
            } else if u.v.is_empty() || (u.v.contains("://") && !u.v.starts_with("https://")) {
                diags.push(
                    Report::error("E0152", format!("unsupported feed URL `{}`", u.v))
                        .label(u.span, "expected https://... or a file path"),
                );
            }
            u.v.clone()
        }
        None => {
            diags.push(
                Report::error("E0004", "feed has no `url`").label(feed.span, "missing `url`"),
            );
            String::new()
        }
    };
    let format = match &feed.format {
        Some(f) if FEED_FORMATS.contains(&f.v.as_str()) => f.v.clone(),
        Some(f) => {
            diags.push(
                Report::error("E0152", format!("unknown feed format `{}`", f.v))
                    .label(f.span, "unknown format")
                    .hint_opt(
                        did_you_mean(&f.v, FEED_FORMATS.iter().copied())
                            .or_else(|| Some(format!("formats: {}", FEED_FORMATS.join(", ")))),
                    ),
            );
            f.v.clone()
        }
        None => "plain".to_string(),
    };
    let refresh_s = match &feed.refresh {
        Some(r) => match parse_duration_s(&r.v) {
            Some(s) if (MIN_FEED_REFRESH_S..=MAX_FEED_REFRESH_S).contains(&s) => s,
            _ => {
                diags.push(
                    Report::error("E0152", format!("bad refresh interval `{}`", r.v))
                        .label(r.span, "expected 1m .. 7d")
                        .hint("write a number with a unit: 90s, 30m, 1h, 1d (between 1m and 7d)"),
                );
                3600
            }
        },
        None => 3600,
    };
    SetSource::Feed {
        name: name.to_string(),
        url,
        format,
        refresh_s,
    }
}

pub(crate) fn parse_duration_s(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn missing(what: &str, span: Span, diags: &mut Diags) {
    diags.push(
        Report::error("E0004", format!("rule has no `{what}`"))
            .label(span, format!("this rule needs `{what}`")),
    );
}

fn resolve_rule(ctx: &Ctx<'_>, r: &ast::RuleDecl, diags: &mut Diags) -> Option<Candidate> {
    let before = diags.error_count();
    let name = match &r.name {
        Some(n) => {
            check_name("rule", n, diags);
            n.clone()
        }
        None => {
            missing("name", r.span, diags);
            S {
                v: String::new(),
                span: r.span,
            }
        }
    };
    let direction = match &r.direction {
        Some(d) => parse_direction(d, diags),
        None => {
            missing("direction", r.span, diags);
            None
        }
    };
    let action = match &r.action {
        Some(a) => parse_action(a, diags),
        None => {
            missing("action", r.span, diags);
            None
        }
    };
    let from = ctx.peers(&r.from, diags);
    let to = ctx.peers(&r.to, diags);
    let services = ctx.services(&r.service, diags);
    let family = match &r.family {
        None => Family::Any,
        Some(f) => match f.v.as_str() {
            "any" => Family::Any,
            "ipv4" => Family::V4,
            "ipv6" => Family::V6,
            other => {
                diags.push(
                    Report::error("E0145", format!("unknown family `{other}`"))
                        .label(f.span, "expected ipv4, ipv6 or any")
                        .hint_opt(did_you_mean(other, ["ipv4", "ipv6", "any"])),
                );
                Family::Any
            }
        },
    };
    let mut ct_states = Vec::new();
    for s in &r.state {
        let st = match s.v.as_str() {
            "new" => CtState::New,
            "established" => CtState::Established,
            "related" => CtState::Related,
            "invalid" => CtState::Invalid,
            "untracked" => CtState::Untracked,
            other => {
                diags.push(
                    Report::error("E0145", format!("unknown connection state `{other}`"))
                        .label(
                            s.span,
                            "expected new, established, related, invalid or untracked",
                        )
                        .hint_opt(did_you_mean(
                            other,
                            ["new", "established", "related", "invalid", "untracked"],
                        )),
                );
                continue;
            }
        };
        if !ct_states.contains(&st) {
            ct_states.push(st);
        }
    }
    ct_states.sort();
    let owner = r.owner.as_ref().and_then(|o| {
        if direction.is_some_and(|d| d != Direction::Egress) {
            diags.push(
                Report::error("E0140", "`owner` applies only to egress rules")
                    .label(
                        o.span,
                        "socket owner is known only for locally generated packets",
                    )
                    .hint("set `direction = \"egress\"`, or remove `owner`"),
            );
            None
        } else {
            resolve_owner(o, &ctx.programs, diags)
        }
    });
    let limit = r.limit.as_ref().and_then(|l| {
        // Check burst even when the rate is bad, so both problems are reported in one run.
        let burst = match &l.burst {
            None => Some(0),
            Some(b) => match u64::try_from(b.v) {
                Ok(v) if v <= MAX_RATE => Some(v),
                _ => {
                    diags.push(
                        Report::error("E0143", format!("burst `{}` is out of range", b.v))
                            .label(b.span, format!("expected 0..={MAX_RATE}")),
                    );
                    None
                }
            },
        };
        let Some(rate) = &l.rate else {
            diags.push(
                Report::error("E0004", "`limit` has no `rate`").label(l.span, "missing `rate`"),
            );
            return None;
        };
        let (rate, per_s, unit) = parse_rate(rate, diags)?;
        Some(Limit {
            rate,
            per_s,
            burst: burst?,
            unit,
            per_source: l.per_source,
        })
    });
    let conn_limit = r
        .conn_limit
        .as_ref()
        .and_then(|c| match u32::try_from(c.v) {
            Ok(v) if (1..=MAX_CONN_LIMIT).contains(&v) => Some(v),
            _ => {
                diags.push(
                    Report::error("E0143", format!("conn_limit `{}` is out of range", c.v))
                        .label(c.span, format!("expected 1..={MAX_CONN_LIMIT}")),
                );
                None
            }
        });
    let synproxy = r.synproxy.as_ref().and_then(|d| resolve_synproxy(d, diags));
    let ban = r.ban.as_ref().and_then(|b| resolve_ban(b, diags));
    let app = resolve_app(r, diags);
    if app.is_some() {
        app_rule_restrictions(r, diags);
    }
    let mitigates = techniques(&r.mitigates, diags);
    let expires = r.expires.as_ref().and_then(|d| parse_date(d, diags));
    if let Some(c) = &r.counter {
        diags.push(
            Report::warning(
                "W0202",
                "`counter` is accepted but not carried into the IR yet",
            )
            .label(c.span, "has no effect")
            .hint("backends may still count every rule; remove the key to silence this"),
        );
    }
    let description = check_description(&r.description, diags);
    let rule = Rule {
        name: name.v.clone(),
        direction: direction?,
        from: from.iter().map(|(p, _)| p.clone()).collect(),
        to: to.iter().map(|(p, _)| p.clone()).collect(),
        services: rule_services(&services, family),
        family,
        ct_states,
        owner,
        limit,
        conn_limit,
        synproxy,
        ban,
        app,
        action: action?,
        log: r.log,
        mitigates,
        expires,
        description,
        origin: RuleOrigin::User,
        loc: ctx.loc(r.span),
    };
    ctx.check_rule(
        &rule,
        &RuleParts {
            from: &from,
            to: &to,
            services: &services,
            family_span: r.family.as_ref().map(|f| f.span),
            rule_span: r.span,
        },
        diags,
    );
    check_protections(
        &rule,
        &Protections {
            synproxy: r.synproxy.as_ref().map(|s| s.span),
            ban: r.ban.as_ref().map(|b| b.span),
            app: r.app.as_ref().or(r.app_not.as_ref()).map(|(s, _)| *s),
            services: &services,
            rule_span: r.span,
        },
        diags,
    );
    if diags.error_count() > before {
        return None;
    }
    Some(Candidate {
        rule,
        name_span: name.span,
    })
}

/// Where a rule's DoS and application-protocol keys are written, for [`check_protections`].
/// Profile rules point every span at the profile's header.
pub(crate) struct Protections<'x> {
    pub synproxy: Option<Span>,
    pub ban: Option<Span>,
    pub app: Option<Span>,
    pub services: &'x [(Vec<L4Match>, Span)],
    pub rule_span: Span,
}

/// Check the combinations the IR allows for `synproxy`, `ban` and `app` (see the IR docs of
/// [`Synproxy`], [`Ban`] and [`AppMatch`]): SYN proxy only on TCP accept rules with destination
/// ports in ingress/forward; ban only on accept rules in ingress/forward that have a
/// per-source limit or a connection cap; application protocols the rule's services can carry.
pub(crate) fn check_protections(rule: &Rule, at: &Protections<'_>, diags: &mut Diags) {
    let span_of_service = |m: &L4Match| {
        at.services
            .iter()
            .find(|(ms, _)| ms.contains(m))
            .map(|(_, s)| *s)
    };
    if rule.synproxy.is_some() {
        let key = at.synproxy.unwrap_or(at.rule_span);
        let problem = if rule.direction == Direction::Egress {
            Some((
                "`synproxy` applies only to ingress and forward rules".to_string(),
                "the SYN proxy answers connections coming in; set `direction = \"ingress\"` or `\"forward\"`".to_string(),
            ))
        } else if rule.action != Action::Accept {
            Some((
                format!("`synproxy` on a `{}` rule", rule.action.as_str()),
                "the SYN proxy completes handshakes the rule accepts; use it on `action = \"accept\"`".into(),
            ))
        } else if rule.services.is_empty() {
            Some((
                "`synproxy` needs TCP services with destination ports".into(),
                "name the protected services, e.g. `service = [\"https\"]`".into(),
            ))
        } else {
            None
        };
        if let Some((msg, hint)) = problem {
            diags.push(
                Report::error("E0180", msg)
                    .label(key, "SYN proxy cannot apply here")
                    .hint(hint),
            );
        } else {
            for m in &rule.services {
                if m.protocol != Some(proto::TCP) || m.dst_ports.is_empty() {
                    let mut r = Report::error(
                        "E0180",
                        format!(
                            "`synproxy` needs TCP services with destination ports, not `{}`",
                            service_display(m)
                        ),
                    )
                    .label(key, "SYN proxy set here");
                    if let Some(s) = span_of_service(m) {
                        r = r.label(s, "not TCP with destination ports");
                    }
                    diags.push(r.hint(
                        "SYN cookies exist only for TCP: name TCP ports (`tcp/443`, not `https`, which includes QUIC on udp/443) and put other protocols in a rule of their own",
                    ));
                    break;
                }
            }
        }
    }
    if rule.ban.is_some() {
        let key = at.ban.unwrap_or(at.rule_span);
        let per_source_limit = rule.limit.as_ref().is_some_and(|l| l.per_source);
        let problem = if rule.direction == Direction::Egress {
            Some((
                "`ban` applies only to ingress and forward rules".to_string(),
                "bans drop sources coming in; egress has no outside source to ban".to_string(),
            ))
        } else if rule.action != Action::Accept {
            Some((
                format!("`ban` on a `{}` rule", rule.action.as_str()),
                "a source is banned when it exceeds what an accept rule allows; use `action = \"accept\"`".into(),
            ))
        } else if rule.limit.is_some() && !per_source_limit && rule.conn_limit.is_none() {
            Some((
                "`ban` needs a per-source limit or a `conn_limit`; this limit is shared".into(),
                "a shared bucket would ban whichever source finds it empty: set `per_source = true` in `limit`".into(),
            ))
        } else if !per_source_limit && rule.conn_limit.is_none() {
            Some((
                "`ban` needs a per-source limit or a `conn_limit`".into(),
                "add `limit = { rate = \"20/second\", burst = 40, per_source = true }` or `conn_limit = 50`: a source over it is banned".into(),
            ))
        } else {
            None
        };
        if let Some((msg, hint)) = problem {
            diags.push(
                Report::error("E0182", msg)
                    .label(key, "nothing to ban on")
                    .hint(hint),
            );
        }
    }
    if let Some(app) = &rule.app {
        let key = at.app.unwrap_or(at.rule_span);
        // A protocol the rule's services can never carry: ICMP tunnels ride ICMP echo, the
        // other protocols TCP or UDP payloads.
        let carries = |p: AppProtocol| {
            rule.services.is_empty()
                || rule.services.iter().any(|m| match m.protocol {
                    None => true,
                    Some(proto::ICMP) | Some(proto::ICMPV6) => p == AppProtocol::IcmpTunnel,
                    Some(proto::TCP) | Some(proto::UDP) => p != AppProtocol::IcmpTunnel,
                    Some(_) => false,
                })
        };
        if !app.negate {
            let dead: Vec<&str> = app
                .protocols
                .iter()
                .filter(|p| !carries(**p))
                .map(|p| p.as_str())
                .collect();
            if !dead.is_empty() {
                diags.push(
                    Report::warning(
                        "W0208",
                        format!(
                            "rule `{}` can never see {} on its services",
                            rule.name,
                            dead.iter()
                                .map(|d| format!("`{d}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    )
                    .label(key, "protocol not carried by the services")
                    .hint("`icmp_tunnel` is ICMP echo; every other protocol is TCP or UDP payload"),
                );
            }
        }
    }
}

fn service_display(m: &L4Match) -> String {
    let p = match m.protocol {
        Some(proto::TCP) => "tcp".to_string(),
        Some(proto::UDP) => "udp".to_string(),
        Some(proto::ICMP) => "icmp".to_string(),
        Some(proto::ICMPV6) => "icmpv6".to_string(),
        Some(p) => format!("proto/{p}"),
        None => "any protocol".to_string(),
    };
    match (&m.service, m.dst_ports.is_empty()) {
        (Some(name), _) => format!("{name} ({p})"),
        (None, true) => p,
        (None, false) => format!(
            "{p}/{}",
            m.dst_ports
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Longest ban, in seconds (30 days).
pub const MAX_BAN_S: u64 = 30 * 86_400;

fn resolve_synproxy(d: &ast::SynproxyDecl, diags: &mut Diags) -> Option<Synproxy> {
    if !d.enabled {
        return None;
    }
    let mut s = Synproxy::default();
    if let Some(m) = &d.mss {
        match u16::try_from(m.v) {
            Ok(v) if v >= 536 => s.mss = v,
            _ => diags.push(
                Report::error("E0181", format!("synproxy mss `{}` is out of range", m.v))
                    .label(m.span, "expected 536..=65535")
                    .hint("use the server's own MSS: 1460 on Ethernet, 1440 for IPv6"),
            ),
        }
    }
    if let Some(w) = &d.wscale {
        match u8::try_from(w.v) {
            Ok(v) if v <= 14 => s.wscale = v,
            _ => diags.push(
                Report::error(
                    "E0181",
                    format!("synproxy wscale `{}` is out of range", w.v),
                )
                .label(w.span, "expected 0..=14")
                .hint("use the server's own window scale (Linux: 7)"),
            ),
        }
    }
    if let Some(b) = d.timestamp {
        s.timestamp = b;
    }
    if let Some(b) = d.sack_perm {
        s.sack_perm = b;
    }
    Some(s)
}

fn resolve_ban(b: &ast::BanDecl, diags: &mut Diags) -> Option<Ban> {
    let Some(t) = &b.timeout else {
        diags.push(
            Report::error("E0004", "`ban` has no `timeout`").label(b.span, "missing `timeout`"),
        );
        return None;
    };
    match parse_duration_s(&t.v) {
        Some(s) if (1..=MAX_BAN_S).contains(&s) => Some(Ban {
            timeout_s: s as u32,
        }),
        _ => {
            diags.push(
                Report::error("E0183", format!("bad ban timeout `{}`", t.v))
                    .label(t.span, "expected 1s .. 30d")
                    .hint("write a number with a unit: 90s, 10m, 1h, 1d (between 1s and 30d)"),
            );
            None
        }
    }
}

/// Parse application protocol names (E0184 with did-you-mean for unknown ones).
pub(crate) fn app_protocols(items: &[S<String>], diags: &mut Diags) -> Option<Vec<AppProtocol>> {
    let mut out = Vec::new();
    let mut ok = true;
    for item in items {
        match AppProtocol::from_name(item.v.trim()) {
            Some(p) => {
                if !out.contains(&p) {
                    out.push(p);
                }
            }
            None => {
                ok = false;
                let known = || AppProtocol::ALL.iter().map(|p| p.as_str());
                let hint = if item.v.starts_with('!') {
                    Some("negate with `app_not = [...]` instead of `!`".to_string())
                } else {
                    did_you_mean(item.v.trim(), known()).or_else(|| {
                        Some(format!(
                            "protocols: {}",
                            known().collect::<Vec<_>>().join(", ")
                        ))
                    })
                };
                diags.push(
                    Report::error(
                        "E0184",
                        format!("unknown application protocol `{}`", item.v),
                    )
                    .label(item.span, "not a protocol the classifier recognises")
                    .hint_opt(hint),
                );
            }
        }
    }
    out.sort();
    ok.then_some(out)
}

fn resolve_app(r: &ast::RuleDecl, diags: &mut Diags) -> Option<AppMatch> {
    let (list, negate) = match (&r.app, &r.app_not) {
        (None, None) => return None,
        (Some(a), Some(n)) => {
            diags.push(
                Report::error("E0185", "a rule has either `app` or `app_not`, not both")
                    .label(n.0, "`app_not` here")
                    .label(a.0, "`app` here")
                    .hint("`app` matches the listed protocols, `app_not` everything else; write two rules for both"),
            );
            return None;
        }
        (Some(a), None) => (a, false),
        (None, Some(n)) => (n, true),
    };
    if list.1.is_empty() {
        let key = if negate { "app_not" } else { "app" };
        diags.push(
            Report::error("E0185", format!("`{key}` lists no protocol"))
                .label(list.0, "empty list")
                .hint("list protocols such as `[\"ssh\", \"rdp\"]`, or remove the key"),
        );
        return None;
    }
    let protocols = app_protocols(&list.1, diags)?;
    Some(AppMatch { protocols, negate })
}

/// Application-protocol rules run in the prelude over the first packets of every connection
/// (IR: [`AppMatch`]): keys that need first-match position or a socket are refused there.
fn app_rule_restrictions(r: &ast::RuleDecl, diags: &mut Diags) {
    let app_span = r.app.as_ref().or(r.app_not.as_ref()).map(|(s, _)| *s);
    let mut refuse = |what: &str, span: Span, why: &str| {
        let mut rep = Report::error(
            "E0185",
            format!("`{what}` cannot be used on an application-protocol rule"),
        )
        .label(span, why);
        if let Some(a) = app_span {
            rep = rep.label(a, "this makes it an application-protocol rule");
        }
        diags.push(rep.hint(
            "application-protocol rules run before the conntrack check on the first packets of every connection; put the other keys on a normal rule",
        ));
    };
    if let Some(s) = r.state.first() {
        refuse(
            "state",
            s.span,
            "app rules see every state of the first packets",
        );
    }
    if let Some(l) = &r.limit {
        refuse("limit", l.span, "not defined for app rules");
    }
    if let Some(c) = &r.conn_limit {
        refuse("conn_limit", c.span, "not defined for app rules");
    }
    if let Some(s) = &r.synproxy {
        if s.enabled {
            refuse("synproxy", s.span, "not defined for app rules");
        }
    }
    if let Some(b) = &r.ban {
        refuse("ban", b.span, "not defined for app rules");
    }
    if let Some(o) = &r.owner {
        refuse("owner", o.span, "not defined for app rules");
    }
}

/// The rule's L4 alternatives, without those an explicit family makes dead (`ping` under
/// `family = "ipv6"` keeps only its ICMPv6 part), so the IR holds no alternative that can
/// never match.
fn rule_services(services: &[(Vec<L4Match>, Span)], family: Family) -> Vec<L4Match> {
    let keep = match family {
        Family::Any => BOTH,
        Family::V4 => V4,
        Family::V6 => V6,
    };
    dedup(
        services
            .iter()
            .flat_map(|(m, _)| m.iter())
            .filter(|m| service_family(m) & keep != 0)
            .cloned()
            .collect(),
    )
}

pub(crate) fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// Check technique ids against the seed catalogue.
pub(crate) fn techniques(items: &[S<String>], diags: &mut Diags) -> Vec<TechniqueId> {
    let mut out = Vec::new();
    for t in items {
        if rampart_attack::lookup(&t.v).is_some() {
            let id = TechniqueId(t.v.clone());
            if !out.contains(&id) {
                out.push(id);
            }
        } else {
            let sugg = rampart_attack::suggest(&t.v);
            diags.push(
                Report::error(
                    "E0141",
                    format!("technique `{}` is not in the M1037 catalogue", t.v),
                )
                .label(t.span, "unknown technique id")
                .hint(if sugg.is_empty() {
                    "`rampart coverage --list` shows the 50 technique ids M1037 addresses"
                        .to_string()
                } else {
                    format!(
                        "did you mean {}?",
                        sugg.iter()
                            .map(|s| format!("`{s}`"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )
                }),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn subtract_splits_prefixes_exactly() {
        let out = subtract(&[n("192.0.2.0/24")], &[n("192.0.2.128/26")]);
        assert_eq!(out, vec![n("192.0.2.0/25"), n("192.0.2.192/26")]);
        assert_eq!(subtract(&[n("192.0.2.0/24")], &[n("192.0.0.0/16")]), vec![]);
        assert_eq!(
            subtract(&[n("2001:db8::/32")], &[n("192.0.2.0/24")]),
            vec![n("2001:db8::/32")]
        );
    }

    /// Reference: the set of addresses of a list of IPv4 prefixes inside 192.0.2.0/24.
    fn addrs(nets: &[IpNet]) -> Vec<u8> {
        (0..=255u8)
            .filter(|o| {
                let a: IpAddr = format!("192.0.2.{o}").parse().unwrap();
                nets.iter().any(|n| n.contains(&a))
            })
            .collect()
    }

    proptest::proptest! {
        /// Exact subtraction against brute force over one /24.
        #[test]
        fn subtract_matches_brute_force(
            nets in proptest::collection::vec((0u8..=255, 24u8..=32), 0..8),
            except in proptest::collection::vec((0u8..=255, 24u8..=32), 0..8),
        ) {
            let mk = |v: &Vec<(u8, u8)>| -> Vec<IpNet> {
                v.iter()
                    .map(|(o, l)| IpNet::from(ipnet::Ipv4Net::new_assert(format!("192.0.2.{o}").parse().unwrap(), *l)).trunc())
                    .collect()
            };
            let (n, e) = (mk(&nets), mk(&except));
            let got = subtract(&n, &e);
            let want: Vec<u8> = addrs(&n).into_iter().filter(|a| !addrs(&e).contains(a)).collect();
            proptest::prop_assert_eq!(addrs(&got), want);
            // Aggregated: no two results overlap.
            for (i, a) in got.iter().enumerate() {
                for b in &got[i + 1..] {
                    proptest::prop_assert!(!a.contains(b) && !b.contains(a));
                }
            }
        }
    }

    #[test]
    fn nets_and_host_bits() {
        assert_eq!(parse_net("192.0.2.7").ok(), Some(n("192.0.2.7/32")));
        let e = parse_net("192.0.2.7/24").err().unwrap();
        assert_eq!(e.code, "E0121");
        assert!(e.hint.unwrap().contains("192.0.2.0/24"));
        assert_eq!(parse_net("192.0.2.300").err().unwrap().code, "E0120");
        assert_eq!(parse_net("2001:db8::1/32").err().unwrap().code, "E0121");
    }

    #[test]
    fn dates_respect_leap_years() {
        let mut d = Diags::default();
        let span = Span::new(crate::source::FileId(0), 0, 1);
        let date = |s: &str, d: &mut Diags| parse_date(&S { v: s.into(), span }, d);
        assert_eq!(
            date("2028-02-29", &mut d),
            Some(Date {
                year: 2028,
                month: 2,
                day: 29
            })
        );
        assert_eq!(date("2000-02-29", &mut d).map(|x| x.day), Some(29));
        assert!(!d.has_errors());
        assert_eq!(date("2100-02-29", &mut d), None);
        assert_eq!(date("2027-13-01", &mut d), None);
        assert_eq!(date("2027-1-01", &mut d), None);
        assert_eq!(d.error_count(), 3);
    }

    #[test]
    fn rates() {
        let mut d = Diags::default();
        let span = Span::new(crate::source::FileId(0), 0, 1);
        let rate = |s: &str, d: &mut Diags| parse_rate(&S { v: s.into(), span }, d);
        assert_eq!(rate("10/minute", &mut d), Some((10, 60, RateUnit::Packets)));
        assert_eq!(
            rate("2 mbytes/second", &mut d),
            Some((2 << 20, 1, RateUnit::Bytes))
        );
        assert_eq!(rate("5/d", &mut d), Some((5, 86_400, RateUnit::Packets)));
        assert!(!d.has_errors());
        for bad in [
            "10",
            "x/second",
            "10/week",
            "10 furlongs/second",
            "0/second",
        ] {
            assert_eq!(rate(bad, &mut d), None, "{bad}");
        }
        assert_eq!(d.error_count(), 5);
    }

    #[test]
    fn names() {
        let mut d = Diags::default();
        let span = Span::new(crate::source::FileId(0), 0, 1);
        for good in ["corp", "web-servers", "a_b.c", "Z9"] {
            assert!(
                check_name(
                    "zone",
                    &S {
                        v: good.into(),
                        span
                    },
                    &mut d
                ),
                "{good}"
            );
        }
        for bad in ["", "9x", "any", "a/b", "a b", &"x".repeat(MAX_NAME_LEN + 1)] {
            assert!(
                !check_name(
                    "zone",
                    &S {
                        v: bad.to_string(),
                        span
                    },
                    &mut d
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_s("1h"), Some(3600));
        assert_eq!(parse_duration_s("90s"), Some(90));
        assert_eq!(parse_duration_s("h"), None);
        assert_eq!(parse_duration_s("5w"), None);
    }
}
