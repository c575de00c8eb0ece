//! Lowering of IR rules into [`Region`]s of the packet space, and back into words.
//!
//! Interfaces become atoms: one per exact name the policy mentions, one per wildcard prefix
//! ("names matching `br*` that no longer wildcard and no exact name claims"), one for "any
//! other name" and one for "no interface" (the output interface on ingress, the input
//! interface on egress). Every name falls in exactly one atom, so zone matching stays exact.
//! Socket owners are opaque atoms: each distinct [`Owner`] value is one atom plus "other",
//! which makes two owner constraints overlap only when they are identical — exact for
//! shadowing (never claims coverage that is not there), and the callers that need an
//! over-approximation of overlap handle owners themselves.

use std::net::IpAddr;

use rampart_ir::{
    proto, CtState, Direction, Family, IpNet, L4Match, Owner, Peer, Policy, Rule, RuleId,
};

use crate::space::{range_to_prefixes, Cube, Dim, Fam, Ranges, Region, NDIM};

/// One alternative of a rule side: interface atoms × addresses per family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Term {
    pub ifaces: Ranges,
    pub v4: Ranges,
    pub v6: Ranges,
}

impl Term {
    pub(crate) fn addrs(&self, fam: Fam) -> &Ranges {
        match fam {
            Fam::V4 => &self.v4,
            Fam::V6 => &self.v6,
        }
    }
}

/// The packet-space view of a policy.
pub struct Model<'p> {
    pub(crate) policy: &'p Policy,
    /// Exact interface names, sorted.
    exact: Vec<String>,
    /// Wildcard prefixes (without `*`), sorted.
    wild: Vec<String>,
    /// Distinct owners.
    owners: Vec<Owner>,
    /// Every rule's region, indexed by rule id.
    regions: Vec<Region>,
    /// Routing assumption per family (index `Fam as usize`): destination ranges and the output
    /// interfaces packets to them can leave through (see [`Model::new`]).
    routes: [Vec<(Ranges, Ranges)>; 2],
}

fn ct_atom(s: CtState) -> u128 {
    s.index() as u128
}

const CT_NAMES: [&str; 5] = ["new", "established", "related", "invalid", "untracked"];

pub(crate) fn net_to_ranges(nets: &[IpNet]) -> (Ranges, Ranges) {
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for n in nets {
        match n {
            IpNet::V4(n) => v4.push((
                u128::from(u32::from(n.network())),
                u128::from(u32::from(n.broadcast())),
            )),
            IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
        }
    }
    (Ranges::from_intervals(v4), Ranges::from_intervals(v6))
}

impl<'p> Model<'p> {
    /// Builds the model and every rule's region.
    pub fn new(policy: &'p Policy) -> Self {
        let mut exact = Vec::new();
        let mut wild = Vec::new();
        for z in &policy.zones {
            for i in &z.interfaces {
                match i.strip_suffix('*') {
                    Some(p) => wild.push(p.to_string()),
                    None => exact.push(i.clone()),
                }
            }
        }
        exact.sort();
        exact.dedup();
        wild.sort();
        wild.dedup();
        let mut owners: Vec<Owner> = Vec::new();
        for r in &policy.rules {
            if let Some(o) = &r.owner {
                if !owners.contains(o) {
                    owners.push(o.clone());
                }
            }
        }
        let mut m = Model {
            policy,
            exact,
            wild,
            owners,
            regions: Vec::new(),
            routes: [Vec::new(), Vec::new()],
        };
        m.routes = [Fam::V4, Fam::V6].map(|fam| m.build_routes(fam));
        m.regions = policy.rules.iter().map(|r| m.build_region(r)).collect();
        m
    }

    /// Routing assumption: a packet to an address of a zone that lists interfaces and
    /// networks leaves through one of that zone's interfaces (routes follow the zone map, as
    /// on a gateway whose zones are its attached networks). Addresses in no such zone may
    /// leave anywhere. Without this, a rule "to zone dmz" could never shadow a rule "to a set
    /// inside dmz", because the set's packets might in theory leave through another port.
    fn build_routes(&self, fam: Fam) -> Vec<(Ranges, Ranges)> {
        let mut routes = Vec::new();
        let mut routed = Ranges::empty();
        for (i, z) in self.policy.zones.iter().enumerate() {
            if z.interfaces.is_empty() || z.networks.is_empty() {
                continue;
            }
            let t = self.peer_term(&Peer::Zone(rampart_ir::ZoneId(i as u32)));
            let nets = t.addrs(fam).clone();
            if nets.is_empty() {
                continue;
            }
            routed = routed.union(&nets);
            routes.push((nets, t.ifaces));
        }
        let rest = Ranges::interval(0, fam.addr_max()).subtract(&routed);
        if !rest.is_empty() {
            routes.push((rest, self.all_ifaces()));
        }
        routes
    }

    /// Applies the routing assumption to a cube of a direction with an output interface.
    fn routed(&self, dir: Direction, c: Cube, out: &mut Vec<Cube>) {
        if dir == Direction::Ingress || c.is_empty() {
            out.push(c);
            return;
        }
        for (dst, oif) in &self.routes[c.fam as usize] {
            let mut piece = c.clone();
            piece.dims[Dim::Dst as usize] = c.get(Dim::Dst).intersect(dst);
            piece.dims[Dim::Oif as usize] = c.get(Dim::Oif).intersect(oif);
            if !piece.is_empty() {
                out.push(piece);
            }
        }
    }

    /// The region of a rule.
    pub fn region(&self, id: RuleId) -> &Region {
        &self.regions[id.0 as usize]
    }

    fn atom_other(&self) -> u128 {
        (self.exact.len() + self.wild.len()) as u128
    }

    fn atom_none(&self) -> u128 {
        self.atom_other() + 1
    }

    fn all_ifaces(&self) -> Ranges {
        Ranges::interval(0, self.atom_none())
    }

    /// Interface atoms that exist in a direction on one side.
    fn iface_universe(&self, dir: Direction, input: bool) -> Ranges {
        let has = match dir {
            Direction::Ingress => input,
            Direction::Egress => !input,
            Direction::Forward => true,
        };
        if has {
            Ranges::interval(0, self.atom_other())
        } else {
            Ranges::single(self.atom_none())
        }
    }

    fn pattern_atoms(&self, pattern: &str) -> Ranges {
        match pattern.strip_suffix('*') {
            None => match self.exact.binary_search_by(|e| e.as_str().cmp(pattern)) {
                Ok(i) => Ranges::single(i as u128),
                Err(_) => Ranges::empty(),
            },
            Some(prefix) => {
                let mut atoms = Vec::new();
                for (i, e) in self.exact.iter().enumerate() {
                    if e.starts_with(prefix) {
                        atoms.push((i as u128, i as u128));
                    }
                }
                for (i, w) in self.wild.iter().enumerate() {
                    if w.starts_with(prefix) {
                        let a = (self.exact.len() + i) as u128;
                        atoms.push((a, a));
                    }
                }
                Ranges::from_intervals(atoms)
            }
        }
    }

    /// The atom an interface name falls in (`None`: no interface).
    pub fn iface_atom(&self, name: Option<&str>) -> u128 {
        let Some(name) = name else {
            return self.atom_none();
        };
        if let Ok(i) = self.exact.binary_search_by(|e| e.as_str().cmp(name)) {
            return i as u128;
        }
        // The longest wildcard prefix claims the name.
        self.wild
            .iter()
            .enumerate()
            .filter(|(_, w)| name.starts_with(w.as_str()))
            .max_by_key(|(_, w)| w.len())
            .map_or(self.atom_other(), |(i, _)| (self.exact.len() + i) as u128)
    }

    /// Name of an interface atom.
    fn atom_name(&self, a: u128) -> String {
        let a = a as usize;
        if a < self.exact.len() {
            self.exact[a].clone()
        } else if a < self.exact.len() + self.wild.len() {
            format!("{}*", self.wild[a - self.exact.len()])
        } else if a == self.exact.len() + self.wild.len() {
            "(other)".into()
        } else {
            "(none)".into()
        }
    }

    pub(crate) fn peer_term(&self, peer: &Peer) -> Term {
        match peer {
            Peer::Zone(z) => {
                let Some(zone) = self.policy.zones.get(z.0 as usize) else {
                    return Term {
                        ifaces: Ranges::empty(),
                        v4: Ranges::empty(),
                        v6: Ranges::empty(),
                    };
                };
                let ifaces = if zone.interfaces.is_empty() {
                    self.all_ifaces()
                } else {
                    zone.interfaces
                        .iter()
                        .fold(Ranges::empty(), |acc, p| acc.union(&self.pattern_atoms(p)))
                };
                let (v4, v6) = if zone.networks.is_empty() {
                    (
                        Ranges::interval(0, Fam::V4.addr_max()),
                        Ranges::interval(0, Fam::V6.addr_max()),
                    )
                } else {
                    net_to_ranges(&zone.networks)
                };
                Term { ifaces, v4, v6 }
            }
            Peer::Set(s) => {
                let (v4, v6) = match self.policy.sets.get(s.0 as usize) {
                    Some(set) => net_to_ranges(&set.elements),
                    None => (Ranges::empty(), Ranges::empty()),
                };
                Term {
                    ifaces: self.all_ifaces(),
                    v4,
                    v6,
                }
            }
            Peer::Net(n) => {
                let (v4, v6) = net_to_ranges(std::slice::from_ref(n));
                Term {
                    ifaces: self.all_ifaces(),
                    v4,
                    v6,
                }
            }
        }
    }

    /// Terms of one side, merged by interface set. Empty side: any.
    pub(crate) fn side_terms(&self, peers: &[Peer]) -> Vec<Term> {
        if peers.is_empty() {
            return vec![Term {
                ifaces: self.all_ifaces(),
                v4: Ranges::interval(0, Fam::V4.addr_max()),
                v6: Ranges::interval(0, Fam::V6.addr_max()),
            }];
        }
        let mut out: Vec<Term> = Vec::new();
        for p in peers {
            let t = self.peer_term(p);
            match out.iter_mut().find(|o| o.ifaces == t.ifaces) {
                Some(o) => {
                    o.v4 = o.v4.union(&t.v4);
                    o.v6 = o.v6.union(&t.v6);
                }
                None => out.push(t),
            }
        }
        out
    }

    fn ct_universe(&self) -> Ranges {
        if self.policy.defaults.stateful {
            // Only new and untracked packets get past the stateful prelude.
            Ranges::from_intervals([(0, 0), (4, 4)])
        } else {
            Ranges::interval(0, 4)
        }
    }

    fn owner_universe(&self, dir: Direction) -> Ranges {
        let other = self.owners.len() as u128;
        if dir == Direction::Egress {
            Ranges::interval(0, other)
        } else {
            // Only locally generated packets have a socket owner.
            Ranges::single(other)
        }
    }

    /// The whole space of packets reaching the rules of a direction, one cube per family.
    pub fn universe(&self, dir: Direction) -> Region {
        let mut cubes = Vec::new();
        for fam in Fam::BOTH {
            self.routed(dir, self.cube(dir, fam, None, None, None), &mut cubes);
        }
        Region::new(cubes)
    }

    /// A cube of a direction: universe restricted by optional (iif, src), (oif, dst) and
    /// service; ct/owner at their universe.
    fn cube(
        &self,
        dir: Direction,
        fam: Fam,
        src: Option<(&Ranges, &Ranges)>,
        dst: Option<(&Ranges, &Ranges)>,
        svc: Option<&L4Match>,
    ) -> Cube {
        let full_addr = Ranges::interval(0, fam.addr_max());
        let mut dims: [Ranges; NDIM] = std::array::from_fn(|_| Ranges::empty());
        let iu = self.iface_universe(dir, true);
        let ou = self.iface_universe(dir, false);
        let (si, sa) = match src {
            Some((i, a)) => (i.intersect(&iu), a.intersect(&full_addr)),
            None => (iu.clone(), full_addr.clone()),
        };
        let (di, da) = match dst {
            Some((i, a)) => (i.intersect(&ou), a.intersect(&full_addr)),
            None => (ou.clone(), full_addr.clone()),
        };
        dims[Dim::Src as usize] = sa;
        dims[Dim::Dst as usize] = da;
        dims[Dim::Iif as usize] = si;
        dims[Dim::Oif as usize] = di;
        let (p, sp, dp, it) = svc_dims(svc, fam);
        dims[Dim::Proto as usize] = p;
        dims[Dim::Sport as usize] = sp;
        dims[Dim::Dport as usize] = dp;
        dims[Dim::Icmp as usize] = it;
        dims[Dim::Ct as usize] = self.ct_universe();
        dims[Dim::Owner as usize] = self.owner_universe(dir);
        Cube { fam, dims }
    }

    /// Region of arbitrary sides and services in a direction (used for rules and queries).
    pub(crate) fn region_of(
        &self,
        dir: Direction,
        family: Family,
        from: &[Term],
        to: &[Term],
        services: &[L4Match],
    ) -> Region {
        let fams: &[Fam] = match family {
            Family::Any => &Fam::BOTH,
            Family::V4 => &[Fam::V4],
            Family::V6 => &[Fam::V6],
        };
        let any = [L4Match {
            protocol: None,
            src_ports: vec![],
            dst_ports: vec![],
            icmp_types: vec![],
            service: None,
        }];
        let svcs: &[L4Match] = if services.is_empty() { &any } else { services };
        let mut cubes = Vec::new();
        for &fam in fams {
            for s in from {
                for d in to {
                    for svc in svcs {
                        let c = self.cube(
                            dir,
                            fam,
                            Some((&s.ifaces, s.addrs(fam))),
                            Some((&d.ifaces, d.addrs(fam))),
                            Some(svc),
                        );
                        self.routed(dir, c, &mut cubes);
                    }
                }
            }
        }
        Region::new(cubes)
    }

    fn build_region(&self, r: &Rule) -> Region {
        let from = self.side_terms(&r.from);
        let to = self.side_terms(&r.to);
        let mut region = self.region_of(r.direction, r.family, &from, &to, &r.services);
        let ct = self.ct_universe();
        let ct = if r.ct_states.is_empty() {
            ct
        } else {
            ct.intersect(&Ranges::from_intervals(
                r.ct_states.iter().map(|&s| (ct_atom(s), ct_atom(s))),
            ))
        };
        let owner = match &r.owner {
            None => self.owner_universe(r.direction),
            Some(o) => {
                let idx = self.owners.iter().position(|x| x == o).unwrap_or(0) as u128;
                self.owner_universe(r.direction)
                    .intersect(&Ranges::single(idx))
            }
        };
        for c in &mut region.cubes {
            c.dims[Dim::Ct as usize] = ct.clone();
            c.dims[Dim::Owner as usize] = owner.clone();
        }
        Region::new(region.cubes)
    }

    /// Human description of a cube, e.g. `tcp/445 from 192.0.2.0/26 to any (IPv4)`.
    pub fn describe(&self, dir: Direction, c: &Cube) -> String {
        let mut s = describe_service(c);
        let full = Ranges::interval(0, c.fam.addr_max());
        let iu = self.iface_universe(dir, true);
        let ou = self.iface_universe(dir, false);
        let src_any = *c.get(Dim::Src) == full && *c.get(Dim::Iif) == iu;
        let dst_any = *c.get(Dim::Dst) == full && *c.get(Dim::Oif) == ou;
        if !src_any {
            s.push_str(" from ");
            s.push_str(&self.describe_side(c.fam, c.get(Dim::Src), c.get(Dim::Iif), &iu, "iif"));
        }
        if !dst_any {
            s.push_str(" to ");
            s.push_str(&self.describe_side(c.fam, c.get(Dim::Dst), c.get(Dim::Oif), &ou, "oif"));
        }
        if src_any && dst_any {
            s.push_str(match c.fam {
                Fam::V4 => " over IPv4",
                Fam::V6 => " over IPv6",
            });
        }
        if *c.get(Dim::Ct) != self.ct_universe() {
            let names: Vec<&str> = (0..5u128)
                .filter(|&a| c.get(Dim::Ct).contains(a))
                .map(|a| CT_NAMES[a as usize])
                .collect();
            s.push_str(&format!(" ct state {}", names.join(",")));
        }
        if *c.get(Dim::Owner) != self.owner_universe(dir) {
            let names: Vec<String> = (0..self.owners.len() as u128)
                .filter(|&a| c.get(Dim::Owner).contains(a))
                .map(|a| describe_owner(&self.owners[a as usize]))
                .collect();
            s.push_str(&format!(" owner {}", names.join(" or ")));
        }
        s
    }

    fn describe_side(
        &self,
        fam: Fam,
        addrs: &Ranges,
        ifaces: &Ranges,
        universe: &Ranges,
        kw: &str,
    ) -> String {
        let full = Ranges::interval(0, fam.addr_max());
        // The side is exactly one zone: say so.
        for (i, z) in self.policy.zones.iter().enumerate() {
            let t = self.peer_term(&Peer::Zone(rampart_ir::ZoneId(i as u32)));
            // An interface-only zone on the output side covers the addresses routed to no
            // other zone (see `build_routes`).
            let unrouted = kw == "oif"
                && z.networks.is_empty()
                && self.routes[fam as usize]
                    .last()
                    .is_some_and(|(rest, oif)| *oif == self.all_ifaces() && rest == addrs);
            if !z.interfaces.is_empty()
                && t.ifaces.intersect(universe) == *ifaces
                && (t.addrs(fam) == addrs || unrouted)
            {
                let mut detail = Vec::new();
                if !z.networks.is_empty() {
                    detail.push(prefixes_text(fam, addrs, 4));
                }
                detail.push(format!("{kw} {}", z.interfaces.join(",")));
                return format!("{} ({})", z.name, detail.join(" "));
            }
        }
        let mut parts = Vec::new();
        if *addrs != full {
            parts.push(self.describe_addrs(fam, addrs));
        }
        if ifaces != universe {
            let names: Vec<String> = ifaces
                .intervals()
                .iter()
                .flat_map(|&(l, h)| l..=h)
                .take(8)
                .map(|a| self.atom_name(a))
                .collect();
            parts.push(format!("{kw} {}", names.join(",")));
        }
        if parts.is_empty() {
            "any".into()
        } else {
            parts.join(" ")
        }
    }

    /// Addresses as a zone/set name when they equal one, else as prefixes.
    pub(crate) fn describe_addrs(&self, fam: Fam, addrs: &Ranges) -> String {
        for z in &self.policy.zones {
            if z.networks.is_empty() {
                continue;
            }
            let (v4, v6) = net_to_ranges(&z.networks);
            let zr = if fam == Fam::V4 { v4 } else { v6 };
            if !zr.is_empty() && zr == *addrs {
                return format!("{} ({})", z.name, prefixes_text(fam, addrs, 4));
            }
        }
        for set in &self.policy.sets {
            let (v4, v6) = net_to_ranges(&set.elements);
            let sr = if fam == Fam::V4 { v4 } else { v6 };
            if !sr.is_empty() && sr == *addrs {
                return format!("@{} ({})", set.name, prefixes_text(fam, addrs, 4));
            }
        }
        prefixes_text(fam, addrs, 6)
    }
}

fn describe_owner(o: &Owner) -> String {
    let mut parts = Vec::new();
    if !o.uids.is_empty() {
        parts.push(format!(
            "uid {}",
            o.uids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if !o.gids.is_empty() {
        parts.push(format!(
            "gid {}",
            o.gids
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ));
    }
    if !o.cgroups.is_empty() {
        parts.push(format!("cgroup {}", o.cgroups.join(",")));
    }
    parts.join(" ")
}

/// Prefix list text, at most `max` prefixes then `(+N more)`; a set that is most of the
/// address space is written as `any except ...`.
pub(crate) fn prefixes_text(fam: Fam, addrs: &Ranges, max: usize) -> String {
    let complement = Ranges::interval(0, fam.addr_max()).subtract(addrs);
    let count = |r: &Ranges| -> usize {
        r.intervals()
            .iter()
            .map(|&(l, h)| range_to_prefixes(l, h, fam.bits()).len())
            .sum()
    };
    if !complement.is_empty() && !addrs.is_empty() && count(&complement) < count(addrs) {
        return format!("any except {}", plain_prefixes_text(fam, &complement, max));
    }
    plain_prefixes_text(fam, addrs, max)
}

fn plain_prefixes_text(fam: Fam, addrs: &Ranges, max: usize) -> String {
    let mut all = Vec::new();
    for &(lo, hi) in addrs.intervals() {
        for (net, len) in range_to_prefixes(lo, hi, fam.bits()) {
            all.push((net, len));
            if all.len() > max {
                break;
            }
        }
        if all.len() > max {
            break;
        }
    }
    let total: usize = if all.len() > max {
        addrs
            .intervals()
            .iter()
            .map(|&(l, h)| range_to_prefixes(l, h, fam.bits()).len())
            .sum()
    } else {
        all.len()
    };
    let mut text: Vec<String> = all
        .iter()
        .take(max)
        .map(|&(net, len)| format!("{}/{}", addr_text(fam, net), len))
        .collect();
    if total > max {
        text.push(format!("(+{} more)", total - max));
    }
    text.join(",")
}

fn addr_text(fam: Fam, v: u128) -> String {
    let ip: IpAddr = match fam {
        Fam::V4 => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        Fam::V6 => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    };
    ip.to_string()
}

fn ports_text(r: &Ranges) -> String {
    r.intervals()
        .iter()
        .map(|&(l, h)| {
            if l == h {
                format!("{l}")
            } else {
                format!("{l}-{h}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn proto_name(p: u128) -> String {
    match p as u8 {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        proto::ICMP => "icmp".into(),
        proto::ICMPV6 => "icmpv6".into(),
        other => format!("proto {other}"),
    }
}

fn describe_service(c: &Cube) -> String {
    let p = c.get(Dim::Proto);
    let full_port = Ranges::interval(0, 65535);
    let full_byte = Ranges::interval(0, 255);
    if *p == full_byte {
        return "all traffic".into();
    }
    if let [(lo, hi)] = p.intervals() {
        if lo == hi {
            let name = proto_name(*lo);
            let pn = *lo as u8;
            let mut s = name;
            if pn == proto::TCP || pn == proto::UDP {
                if *c.get(Dim::Dport) != full_port {
                    s.push('/');
                    s.push_str(&ports_text(c.get(Dim::Dport)));
                }
                if *c.get(Dim::Sport) != full_port {
                    s.push_str(" sport ");
                    s.push_str(&ports_text(c.get(Dim::Sport)));
                }
            } else if (pn == proto::ICMP || pn == proto::ICMPV6) && *c.get(Dim::Icmp) != full_byte {
                s.push_str(" type ");
                s.push_str(&ports_text(c.get(Dim::Icmp)));
            }
            return s;
        }
    }
    let count = p.count();
    if count > 128 {
        let not = full_byte.subtract(p);
        let names: Vec<String> = not
            .intervals()
            .iter()
            .flat_map(|&(l, h)| l..=h)
            .take(6)
            .map(proto_name)
            .collect();
        format!("all protocols except {}", names.join(","))
    } else {
        let names: Vec<String> = p
            .intervals()
            .iter()
            .flat_map(|&(l, h)| l..=h)
            .take(6)
            .map(proto_name)
            .collect();
        format!("protocols {}", names.join(","))
    }
}

/// Service dimensions (proto, sport, dport, icmp) of one L4 alternative in one family.
/// Ports are only constrained for TCP/UDP, ICMP types only for ICMP/ICMPv6; for other
/// protocols those dimensions stay full, which keeps every region independent of the
/// dimensions a protocol does not have and therefore keeps the arithmetic exact.
fn svc_dims(svc: Option<&L4Match>, fam: Fam) -> (Ranges, Ranges, Ranges, Ranges) {
    let full_port = Ranges::interval(0, 65535);
    let full_byte = Ranges::interval(0, 255);
    let Some(svc) = svc else {
        return (full_byte.clone(), full_port.clone(), full_port, full_byte);
    };
    let Some(p) = svc.protocol else {
        return (full_byte.clone(), full_port.clone(), full_port, full_byte);
    };
    // ICMP only exists in IPv4 and ICMPv6 only in IPv6.
    let proto_ok =
        !((p == proto::ICMP && fam == Fam::V6) || (p == proto::ICMPV6 && fam == Fam::V4));
    let pr = if proto_ok {
        Ranges::single(u128::from(p))
    } else {
        Ranges::empty()
    };
    let ports = |v: &[rampart_ir::PortRange]| {
        if v.is_empty() {
            full_port.clone()
        } else {
            Ranges::from_intervals(v.iter().map(|r| (u128::from(r.lo), u128::from(r.hi))))
        }
    };
    let (sp, dp) = if p == proto::TCP || p == proto::UDP {
        (ports(&svc.src_ports), ports(&svc.dst_ports))
    } else {
        (full_port.clone(), full_port.clone())
    };
    let it = if (p == proto::ICMP || p == proto::ICMPV6) && !svc.icmp_types.is_empty() {
        Ranges::from_intervals(
            svc.icmp_types
                .iter()
                .map(|&t| (u128::from(t), u128::from(t))),
        )
    } else {
        full_byte
    };
    (pr, sp, dp, it)
}
