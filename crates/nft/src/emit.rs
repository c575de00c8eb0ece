//! The emitter: IR → nft transaction text.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ipnet::IpNet;
use rampart_ir::{
    proto, Action, AddressSet, CtState, Date, Direction, Family, L4Match, Limit, Peer, Policy,
    PortRange, RateUnit, Rule, SetSource, Zone, ZoneId, ICMPV6_ESSENTIAL_TYPES,
    ICMPV6_NEIGHBOUR_DISCOVERY_TYPES,
};

use crate::app_queue::{
    ACCEPTED_CT_MARK, BLOCKED_CT_MARK, INSPECT_CT_MARK, INSPECT_MARK, MARK_MASK, REJECT_MARK,
    REJECT_PRIORITY,
};
use crate::EmitError;

/// Every NFLOG prefix Rampart emits starts with this, followed by the rule index and `:`.
pub const LOG_PREFIX_STEM: &str = "rampart:";
/// NFLOG prefix stem of a ban (a source put in `ban_v4`/`ban_v6`), followed by the rule index
/// and `:`; logged once per ban, since a banned source is dropped before it reaches the rule.
pub const BAN_LOG_PREFIX_STEM: &str = "rampart:ban:";
/// Why: the IR bounds ban timeouts to 1 s … 30 days.
const BAN_TIMEOUT_MAX_S: u32 = 30 * 86_400;
/// TCP flags test for a bare SYN (no ACK, RST or FIN).
const BARE_SYN: &str = "tcp flags & (fin | syn | rst | ack) == syn";

/// Why: nft 1.0.6 refuses comments of 128 bytes or more (`NFTNL_UDATA_COMMENT_MAXLEN`).
const COMMENT_MAX_BYTES: usize = 127;
/// Why: IFNAMSIZ is 16 including the NUL.
const IFNAME_MAX_BYTES: usize = 15;
/// Why: a rule is a product of peer, service and family alternatives; past this the policy
/// should use a set, and the ruleset would be unreadable anyway.
const MAX_ALTERNATIVES_PER_RULE: usize = 256;
/// Why: sets up to this size are written inline in the set declaration for readability;
/// bigger ones go to `add element` statements after the table.
const INLINE_ELEMENTS_MAX: usize = 64;
/// Why: firewalld PR #1544 / anchors §1.3: ≤ 5,000 elements per statement avoids ENOBUFS.
const ELEMENTS_PER_STATEMENT: usize = 4096;
/// Why: a zone-pair chain pays off (readability, one zone lookup) from this many rules on.
const ZONE_CHAIN_MIN_RULES: usize = 3;
/// Why: below this many prefixes of one length an interval set loads fast enough and keeps
/// the ruleset to one lookup; above it, a masked hash set per length is several times faster
/// to load (bench/nft-sets.sh).
const PREFIX_HASH_MIN: usize = 256;
/// Why: bounded so a long cgroup path cannot make an unbounded statement (PATH_MAX is 4096).
const CGROUP_PATH_MAX_BYTES: usize = 4096;

/// Knobs of the emitter. Everything that depends on the machine or the date is here, so
/// [`emit`] stays a pure function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmitOptions {
    /// Today's date (UTC). When set, rules whose `expires` lies before it are emitted as a
    /// comment only. When `None`, every rule is emitted.
    pub today: Option<Date>,
    /// nft table name (family `inet`). `rampart` in production; tests may pick another.
    pub table: String,
    /// NFLOG group for `log` rules.
    pub log_group: u16,
    /// Rate limit of the separate log rule, in log lines per second (per policy rule).
    pub log_rate_per_s: u32,
    /// Burst of the log rule's limit.
    pub log_burst: u32,
    /// Path prefix of the cgroup2 mount relative to `/sys/fs/cgroup`, as nft 1.0.6 resolves
    /// `socket cgroupv2` paths there: `""` on a pure cgroup2 host, `"unified"` on a hybrid one.
    pub cgroup2_prefix: String,
    /// Maximum elements of each dynamic set (per-source meters and connection counters).
    pub meter_size: u32,
}

impl Default for EmitOptions {
    fn default() -> Self {
        Self {
            today: None,
            table: "rampart".into(),
            log_group: 1037,
            log_rate_per_s: 10,
            log_burst: 20,
            cgroup2_prefix: String::new(),
            meter_size: 65536,
        }
    }
}

/// Compile `policy` to one nft transaction (text for `nft -f`).
///
/// Layout: `table inet <t> {}` + `delete table inet <t>` + the full table, so the table is
/// replaced atomically and nothing outside it is touched. Inside: named sets for zones and
/// address sets (per family; prefixes in interval sets, single addresses in hash sets), named
/// limit objects and dynamic sets for rate and connection limits, one base chain per
/// direction (`input`, `output`, `forward`; priority `filter`; policy = the default) holding
/// the stateful prelude, loopback and ICMPv6 essentials, then the rules in IR order. A rule that
/// needs more than one nft rule (several peer/service/family alternatives), a limit, logging or
/// a protocol-dependent reject gets its own chains `rule_N` (the "over the cap" checks, entered
/// with `jump` so a refusal falls through; `rule_N_refused` bans), and `rule_N_verdict`
/// (rate-limited NFLOG rule, then the counted verdict), so counters, limits and logs exist once
/// per policy rule.
pub fn emit(policy: &Policy, opts: &EmitOptions) -> Result<String, EmitError> {
    Emitter::new(policy, opts)?.run()
}

/// The elements of every static named set the emitter would create (zones and inline/file
/// address sets; not feed sets, whose members change at run time), keyed by nft set name, in
/// the canonical text nft prints (`192.0.2.1`, `198.51.100.0/24`). `rampart plan` compares
/// these with the live sets.
pub fn static_set_elements(
    policy: &Policy,
    opts: &EmitOptions,
) -> Result<BTreeMap<String, Vec<String>>, EmitError> {
    let e = Emitter::new(policy, opts)?;
    Ok(e.sets
        .iter()
        .filter(|s| !s.feed)
        .map(|s| (s.name.clone(), s.elements.iter().map(net_text).collect()))
        .collect())
}

/// The feed sets the emitter declares (refilled at run time by `rampart-feeds`) with their
/// compile-time snapshot elements, in the same form as [`static_set_elements`]. Applying the
/// table replaces a feed set's live elements by this snapshot until the next refresh, so
/// `rampart plan` shows that difference as counts (and a short sample).
pub fn feed_set_elements(
    policy: &Policy,
    opts: &EmitOptions,
) -> Result<BTreeMap<String, Vec<String>>, EmitError> {
    let e = Emitter::new(policy, opts)?;
    Ok(e.sets
        .iter()
        .filter(|s| s.feed)
        .map(|s| (s.name.clone(), s.elements.iter().map(net_text).collect()))
        .collect())
}

/// The comment Rampart attaches to rule `index`'s verdict: `<name> <file>:<line> <T…,T…>`,
/// sanitised (no quotes or control characters) and cut to nft's limit on a character boundary.
pub fn rule_comment(index: usize, rule: &Rule) -> String {
    rule_comment_within(index, rule, COMMENT_MAX_BYTES)
}

/// Why: the raw chain's SYN-claim lines append [`SYN_CLAIM_SUFFIX`] to a rule's comment, which
/// must still fit nft's limit when the rule's own comment already fills it (long paths).
const SYN_CLAIM_SUFFIX: &str = ": claims its SYNs first";

/// [`rule_comment`] cut to `max_bytes` instead of nft's whole limit, so a suffix fits after it.
fn rule_comment_within(index: usize, rule: &Rule, max_bytes: usize) -> String {
    let techniques: Vec<&str> = rule.mitigates.iter().map(|t| t.0.as_str()).collect();
    let mut tail = format!(" {}:{}", rule.loc.file, rule.loc.line);
    if !techniques.is_empty() {
        tail.push(' ');
        tail.push_str(&techniques.join(","));
    }
    let head = format!("#{index} {}", rule.name);
    let tail = sanitize_comment(&tail);
    let head = sanitize_comment(&head);
    // Keep the location and techniques whole when the name is what makes it long.
    let budget = max_bytes.saturating_sub(tail.len());
    let text = if head.len() <= budget {
        format!("{head}{tail}")
    } else if budget >= 12 {
        format!("{}~{tail}", truncate_bytes(&head, budget - 1))
    } else {
        format!("{head}{tail}")
    };
    truncate_bytes(&text, max_bytes).to_string()
}

fn sanitize_comment(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == '"' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

fn truncate_bytes(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An nft identifier from a policy name: ASCII alphanumerics and `_`, everything else `_`.
fn ident(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    // Why: keep set names bounded (nft allows 255; listings stay readable).
    truncate_bytes(&out, 64).to_string()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Fam {
    Any,
    V4,
    V6,
}

impl Fam {
    fn meet(self, other: Fam) -> Option<Fam> {
        match (self, other) {
            (Fam::Any, x) | (x, Fam::Any) => Some(x),
            (a, b) if a == b => Some(a),
            _ => None,
        }
    }
    fn of_net(net: &IpNet) -> Fam {
        match net {
            IpNet::V4(_) => Fam::V4,
            IpNet::V6(_) => Fam::V6,
        }
    }
    fn suffix(self) -> &'static str {
        match self {
            Fam::V4 => "v4",
            Fam::V6 => "v6",
            Fam::Any => "any",
        }
    }
    fn addr_kw(self) -> &'static str {
        match self {
            Fam::V6 => "ip6",
            _ => "ip",
        }
    }
}

/// One conjunction of matches (an alternative of a rule side, a service, or a whole rule).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Cond {
    fam: Fam,
    iif: Option<String>,
    oif: Option<String>,
    saddr: Option<String>,
    daddr: Option<String>,
    /// Protocol and port/type matches.
    l4: Option<String>,
    /// What the protocol is known to be, for choosing a reject flavour.
    l4_kind: L4Kind,
    /// Owner matches.
    owner: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum L4Kind {
    Unknown,
    Tcp,
    NotTcp,
}

impl Cond {
    fn any() -> Self {
        Cond {
            fam: Fam::Any,
            iif: None,
            oif: None,
            saddr: None,
            daddr: None,
            l4: None,
            l4_kind: L4Kind::Unknown,
            owner: Vec::new(),
        }
    }
    fn is_any(&self) -> bool {
        *self == Cond::any()
    }
    /// AND of two conditions; `None` when the families exclude each other.
    fn and(&self, other: &Cond) -> Option<Cond> {
        let fam = self.fam.meet(other.fam)?;
        let pick = |a: &Option<String>, b: &Option<String>| a.clone().or_else(|| b.clone());
        let mut owner = self.owner.clone();
        owner.extend(other.owner.iter().cloned());
        Some(Cond {
            fam,
            iif: pick(&self.iif, &other.iif),
            oif: pick(&self.oif, &other.oif),
            saddr: pick(&self.saddr, &other.saddr),
            daddr: pick(&self.daddr, &other.daddr),
            l4: pick(&self.l4, &other.l4),
            l4_kind: if self.l4_kind != L4Kind::Unknown {
                self.l4_kind
            } else {
                other.l4_kind
            },
            owner,
        })
    }
    fn render(&self, ct: Option<&str>) -> String {
        let mut parts: Vec<String> = Vec::new();
        let has_addr = self.saddr.is_some() || self.daddr.is_some();
        let l4_implies_family = self
            .l4
            .as_deref()
            .is_some_and(|l| l.starts_with("meta nfproto"));
        match self.fam {
            Fam::V4 if !has_addr && !l4_implies_family => parts.push("meta nfproto ipv4".into()),
            Fam::V6 if !has_addr && !l4_implies_family => parts.push("meta nfproto ipv6".into()),
            _ => {}
        }
        parts.extend(self.iif.iter().cloned());
        parts.extend(self.oif.iter().cloned());
        parts.extend(self.saddr.iter().cloned());
        parts.extend(self.daddr.iter().cloned());
        if let Some(ct) = ct {
            parts.push(ct.to_string());
        }
        parts.extend(self.l4.iter().cloned());
        parts.extend(self.owner.iter().cloned());
        parts.join(" ")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Src,
    Dst,
}

/// A named address set as emitted: name, family, interval or hash, elements.
struct NftSet {
    name: String,
    fam: Fam,
    interval: bool,
    elements: Vec<IpNet>,
    comment: String,
    /// Filled at run time by the feeds refresher.
    feed: bool,
}

/// Per IR set: the lookups it became, per family (`@name`, or `& mask @name` for a hash set
/// of network addresses of one prefix length).
#[derive(Default, Clone)]
struct SetParts {
    v4: Vec<String>,
    v6: Vec<String>,
}

struct Emitter<'a> {
    policy: &'a Policy,
    opts: &'a EmitOptions,
    table: String,
    sets: Vec<NftSet>,
    zone_parts: Vec<SetParts>,
    set_parts: Vec<SetParts>,
}

impl<'a> Emitter<'a> {
    fn new(policy: &'a Policy, opts: &'a EmitOptions) -> Result<Self, EmitError> {
        if opts.table.is_empty()
            || opts.table.len() > 64
            || !opts
                .table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            || opts.table.starts_with(|c: char| c.is_ascii_digit())
        {
            return Err(EmitError::BadTableName(opts.table.clone()));
        }
        let mut e = Emitter {
            policy,
            opts,
            table: opts.table.clone(),
            sets: Vec::new(),
            zone_parts: Vec::new(),
            set_parts: Vec::new(),
        };
        e.build_sets()?;
        e.validate_features()?;
        if e.ban_used() {
            for fam in [Fam::V4, Fam::V6] {
                let elements = family_nets(&policy.defaults.never_ban, fam);
                if elements.is_empty() {
                    continue;
                }
                e.sets.push(NftSet {
                    name: format!("never_ban_{}", fam.suffix()),
                    fam,
                    interval: true,
                    elements,
                    comment: sanitize_comment(&format!(
                        "never banned {}:{}",
                        policy.defaults.loc.file, policy.defaults.loc.line
                    )),
                    feed: false,
                });
            }
        }
        Ok(e)
    }

    fn build_sets(&mut self) -> Result<(), EmitError> {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        let mut claim = |nft: String, owner: &str| -> Result<(), EmitError> {
            if let Some(prev) = names.insert(nft.clone(), owner.to_string()) {
                return Err(EmitError::NameCollision {
                    first: prev,
                    second: owner.to_string(),
                    nft_name: nft,
                });
            }
            Ok(())
        };
        for zone in &self.policy.zones {
            validate_interfaces(zone)?;
            let stem = format!("zone_{}", ident(&zone.name));
            claim(stem.clone(), &format!("zone {}", zone.name))?;
            let mut parts = SetParts::default();
            for fam in [Fam::V4, Fam::V6] {
                let elements = family_nets(&zone.networks, fam);
                if elements.is_empty() {
                    continue;
                }
                let name = format!("{stem}_{}", fam.suffix());
                self.sets.push(NftSet {
                    name: name.clone(),
                    fam,
                    interval: true,
                    elements,
                    comment: sanitize_comment(&format!(
                        "zone {} {}:{}",
                        zone.name, zone.loc.file, zone.loc.line
                    )),
                    feed: false,
                });
                push_part(&mut parts, fam, name);
            }
            self.zone_parts.push(parts);
        }
        for set in &self.policy.sets {
            // A feed set is named after its feed: `rampart-feeds` derives the kernel set names
            // from the feed's name (`feeds::sync::feed_sets`), so the emitter must declare the
            // same ones (the policy compiler gives both the set's name anyway).
            let named_by = match &set.source {
                SetSource::Feed { name, .. } => name,
                _ => &set.name,
            };
            let stem = format!("set_{}", ident(named_by));
            claim(stem.clone(), &format!("set {}", set.name))?;
            let parts = self.build_address_set(set, &stem);
            self.set_parts.push(parts);
        }
        Ok(())
    }

    fn build_address_set(&mut self, set: &AddressSet, stem: &str) -> SetParts {
        let mut parts = SetParts::default();
        let comment = sanitize_comment(&format!(
            "set {} {}:{}",
            set.name, set.loc.file, set.loc.line
        ));
        let is_feed = matches!(set.source, SetSource::Feed { .. });
        for fam in [Fam::V4, Fam::V6] {
            // `except` wins whatever the source says (normally already subtracted upstream).
            let elements = subtract(&family_nets(&set.elements, fam), &set.except);
            if is_feed {
                // Feed sets are refilled at run time by `rampart-feeds` in its split layout
                // (`feeds::sync::feed_sets(.., Layout::Split)`): per family an interval set for
                // prefixes and a `_hosts` hash set for single addresses, both present even when
                // empty. A compile-time snapshot is placed the way the sync places it: singles
                // in `_hosts`, every prefix in the interval set. No masked `_pN` sets here: the
                // sync neither fills nor flushes them, so their entries would outlive the feed.
                let (singles, prefixes): (Vec<IpNet>, Vec<IpNet>) = elements
                    .into_iter()
                    .partition(|n| n.prefix_len() == n.max_prefix_len());
                for (name, interval, elements) in [
                    (format!("{stem}_{}", fam.suffix()), true, prefixes),
                    (format!("{stem}_{}_hosts", fam.suffix()), false, singles),
                ] {
                    self.sets.push(NftSet {
                        name: name.clone(),
                        fam,
                        interval,
                        elements,
                        comment: comment.clone(),
                        feed: true,
                    });
                    push_part(&mut parts, fam, name);
                }
                continue;
            }
            let (singles, prefixes): (Vec<IpNet>, Vec<IpNet>) = elements
                .into_iter()
                .partition(|n| n.prefix_len() == n.max_prefix_len());
            // Prefix lengths with many members become hash sets of network addresses matched
            // through a mask (`ip saddr & 255.255.255.0 @…_p24`): hash sets load several times
            // faster than interval sets (docs/nft.md, bench). The rest stay in an interval set.
            let mut by_len: BTreeMap<u8, Vec<IpNet>> = BTreeMap::new();
            for p in prefixes {
                by_len.entry(p.prefix_len()).or_default().push(p);
            }
            let mut interval_rest = Vec::new();
            for (len, nets) in by_len {
                if nets.len() < PREFIX_HASH_MIN {
                    interval_rest.extend(nets);
                    continue;
                }
                let name = format!("{stem}_{}_p{len}", fam.suffix());
                let mask = match nets[0] {
                    IpNet::V4(n) => n.netmask().to_string(),
                    IpNet::V6(n) => n.netmask().to_string(),
                };
                self.sets.push(NftSet {
                    name: name.clone(),
                    fam,
                    interval: false,
                    elements: nets
                        .iter()
                        .map(|n| IpNet::new(n.network(), n.max_prefix_len()).unwrap_or(*n))
                        .collect(),
                    comment: comment.clone(),
                    feed: false,
                });
                push_lookup(&mut parts, fam, format!("& {mask} @{name}"));
            }
            interval_rest.sort();
            let prefixes = interval_rest;
            if !prefixes.is_empty() {
                let name = format!("{stem}_{}", fam.suffix());
                self.sets.push(NftSet {
                    name: name.clone(),
                    fam,
                    interval: true,
                    elements: prefixes,
                    comment: comment.clone(),
                    feed: false,
                });
                push_part(&mut parts, fam, name);
            }
            if !singles.is_empty() {
                let name = format!("{stem}_{}_hosts", fam.suffix());
                self.sets.push(NftSet {
                    name: name.clone(),
                    fam,
                    interval: false,
                    elements: singles,
                    comment: comment.clone(),
                    feed: false,
                });
                push_part(&mut parts, fam, name);
            }
        }
        parts
    }

    fn run(self) -> Result<String, EmitError> {
        let mut body = String::new();
        let mut extra_chains = String::new();
        let mut objects = String::new();
        let mut chains: [String; 3] = Default::default();
        let mut after_table = String::new();

        let mut group_names: BTreeMap<String, usize> = BTreeMap::new();
        for dir in Direction::ALL {
            let rules: Vec<(usize, &Rule)> = self
                .policy
                .rules
                .iter()
                .enumerate()
                // Application-protocol rules are not first-match rules: they live in the
                // prelude's application step (`app_<hook>`).
                .filter(|(_, r)| r.direction == dir && r.app.is_none())
                .collect();
            let chain = &mut chains[dir_index(dir)];
            let mut i = 0;
            while i < rules.len() {
                let key = zone_pair(rules[i].1);
                let mut j = i + 1;
                while key.is_some() && j < rules.len() && zone_pair(rules[j].1) == key {
                    j += 1;
                }
                match key {
                    Some(pair) if j - i >= ZONE_CHAIN_MIN_RULES => self.emit_zone_group(
                        dir,
                        pair,
                        &rules[i..j],
                        chain,
                        &mut extra_chains,
                        &mut objects,
                        &mut group_names,
                    )?,
                    _ => {
                        for (index, rule) in &rules[i..j] {
                            self.emit_one(*index, rule, chain, &mut extra_chains, &mut objects)?;
                        }
                    }
                }
                i = j;
            }
        }

        // Sets.
        for set in &self.sets {
            let _ = writeln!(body, "\tset {} {{", set.name);
            let ty = if set.fam == Fam::V6 {
                "ipv6_addr"
            } else {
                "ipv4_addr"
            };
            let _ = writeln!(body, "\t\ttype {ty}");
            // Not for feed sets: a declared size caps the set, and a feed may grow past its
            // compile-time snapshot.
            if !set.interval && !set.feed && set.elements.len() > INLINE_ELEMENTS_MAX {
                // Presize the kernel hash table: without the hint it rehashes as it grows,
                // which more than doubled the kernel time of a 1M-element load (docs/nft.md).
                let _ = writeln!(body, "\t\tsize {}", set.elements.len().next_power_of_two());
            }
            if set.interval {
                let _ = writeln!(body, "\t\tflags interval");
                let _ = writeln!(body, "\t\tauto-merge");
            }
            let _ = writeln!(
                body,
                "\t\tcomment \"{}\"",
                truncate_bytes(&set.comment, COMMENT_MAX_BYTES)
            );
            if !set.elements.is_empty() && set.elements.len() <= INLINE_ELEMENTS_MAX {
                let _ = writeln!(body, "\t\telements = {{ {} }}", join_nets(&set.elements));
            }
            let _ = writeln!(body, "\t}}\n");
            if set.elements.len() > INLINE_ELEMENTS_MAX {
                for chunk in set.elements.chunks(ELEMENTS_PER_STATEMENT) {
                    let _ = writeln!(
                        after_table,
                        "add element inet {} {} {{ {} }}",
                        self.table,
                        set.name,
                        join_nets(chunk)
                    );
                }
            }
        }
        body.push_str(&self.ban_objects());
        body.push_str(&objects);
        body.push_str(&extra_chains);

        let mut synproxy_base: [String; 3] = Default::default();
        let mut notrack = String::new();
        for dir in [Direction::Ingress, Direction::Forward] {
            let (base, pre) = self.synproxy_step(dir, &mut body)?;
            synproxy_base[dir_index(dir)] = base;
            notrack.push_str(&pre);
        }
        if !notrack.is_empty() {
            // SYNs the proxy answers must not create conntrack entries (a spoofed flood would
            // fill the table): untracked from the start, before conntrack runs.
            let _ = writeln!(
                body,
                "\tchain synproxy_notrack {{\n\t\ttype filter hook prerouting priority raw; policy accept;\n{notrack}\t}}\n"
            );
            // The proxy's cookie SYN-ACK leaves through the output hook with no conntrack
            // entry and no socket. Left to conntrack, it is looked up by its tuple: when the
            // client reuses the 4-tuple of an earlier proxied connection still tracked in
            // TIME_WAIT, it is attached to that stale entry, whose sequence adjustment then
            // rewrites the cookie, and the client's ACK fails the cookie check (the connection
            // hangs). Untrack it before conntrack runs. A local server's own SYN-ACK has a
            // socket (`meta skuid` matches) and stays tracked.
            let ports = ports_text(&self.synproxy_ports());
            let _ = writeln!(
                body,
                "\tchain synproxy_notrack_out {{\n\t\ttype filter hook output priority raw; policy accept;\n\t\ttcp sport {ports} tcp flags & (fin | syn | rst | ack) == syn | ack meta skuid >= 0 return comment \"a local socket's own SYN-ACK\"\n\t\ttcp sport {ports} tcp flags & (fin | syn | rst | ack) == syn | ack counter notrack comment \"rampart synproxy: the cookie SYN-ACK\"\n\t}}\n"
            );
        }
        let app = self.app_used();
        if app {
            for (dir, hook) in [
                (Direction::Ingress, "input"),
                (Direction::Egress, "output"),
                (Direction::Forward, "forward"),
            ] {
                body.push_str(&self.app_chain(dir, hook)?);
            }
            if self.app_reject_used() {
                for hook in ["input", "output", "forward"] {
                    // The classifier accepts a packet a rejecting application rule blocked with
                    // REJECT_MARK set; the reject happens here, after the queue rules.
                    let _ = writeln!(
                        body,
                        "\tchain app_reject_{hook} {{\n\t\ttype filter hook {hook} priority {REJECT_PRIORITY}; policy accept;\n\t\tmeta mark & 0x{MARK_MASK:08x} == 0x{REJECT_MARK:08x} meta l4proto tcp counter reject with tcp reset comment \"rampart app: rejected by the classifier\"\n\t\tmeta mark & 0x{MARK_MASK:08x} == 0x{REJECT_MARK:08x} counter reject with icmpx admin-prohibited comment \"rampart app: rejected by the classifier\"\n\t}}\n"
                    );
                }
            }
        }
        let synproxy_ports = self.synproxy_ports();

        let defaults = &self.policy.defaults;
        for dir in Direction::ALL {
            let hook = match dir {
                Direction::Ingress => "input",
                Direction::Egress => "output",
                Direction::Forward => "forward",
            };
            let default = defaults.for_direction(dir);
            let policy_kw = if default == Action::Accept {
                "accept"
            } else {
                "drop"
            };
            let _ = writeln!(body, "\tchain {hook} {{");
            let _ = writeln!(
                body,
                "\t\ttype filter hook {hook} priority filter; policy {policy_kw};"
            );
            // Order as in the engine: loopback and essential ICMPv6 are accepted before the
            // stateful prelude ("always"), so an invalid-state packet on lo or an unsolicited
            // packet-too-big still passes; then invalid → drop, established/related → accept.
            if defaults.allow_loopback {
                match dir {
                    Direction::Ingress => {
                        let _ =
                            writeln!(body, "\t\tiif \"lo\" accept comment \"rampart: loopback\"");
                    }
                    Direction::Egress => {
                        let _ =
                            writeln!(body, "\t\toif \"lo\" accept comment \"rampart: loopback\"");
                    }
                    Direction::Forward => {}
                }
            }
            if defaults.allow_icmpv6_essential {
                // Forward sees only bridged neighbour discovery (see the IR's Defaults doc).
                let (types, what): (&[u8], &str) = if dir == Direction::Forward {
                    (
                        &ICMPV6_NEIGHBOUR_DISCOVERY_TYPES,
                        "bridged neighbour discovery",
                    )
                } else {
                    (&ICMPV6_ESSENTIAL_TYPES, "icmpv6 essential")
                };
                let types: Vec<String> = types.iter().map(u8::to_string).collect();
                let _ = writeln!(
                    body,
                    "\t\tmeta nfproto ipv6 meta l4proto ipv6-icmp icmpv6 type {{ {} }} accept comment \"rampart: {what}\"",
                    types.join(", ")
                );
            }
            if dir != Direction::Egress && self.ban_used() {
                for fam in [Fam::V4, Fam::V6] {
                    let _ = writeln!(
                        body,
                        "\t\t{} saddr @ban_{} counter drop comment \"rampart prelude: banned source\"",
                        fam.addr_kw(),
                        fam.suffix()
                    );
                }
            }
            if dir == Direction::Egress && !synproxy_ports.is_empty() {
                // The proxy opens the server side of a verified connection with a SYN from
                // the client's address, sent through the output hook: let it out.
                // Its cookie SYN-ACK to the client leaves untracked-turned-invalid (conntrack
                // cannot adopt a SYN-ACK it never saw a SYN for): let that out too.
                let ports = ports_text(&synproxy_ports);
                let _ = writeln!(
                    body,
                    "\t\ttcp sport {ports} tcp flags & (fin | syn | rst | ack) == syn | ack ct state invalid,untracked counter accept comment \"rampart prelude: synproxy cookie to client\""
                );
                let _ = writeln!(
                    body,
                    "\t\tfib saddr type != local tcp dport {ports} {BARE_SYN} ct state new counter accept comment \"rampart prelude: synproxy to server\""
                );
            }
            body.push_str(&synproxy_base[dir_index(dir)]);
            if app {
                let _ = writeln!(body, "\t\tjump app_{hook}");
            }
            if defaults.stateful {
                let _ = writeln!(
                    body,
                    "\t\tct state invalid counter drop comment \"rampart prelude: invalid\""
                );
                let _ = writeln!(body, "\t\tct state established,related counter accept comment \"rampart prelude: established,related\"");
            }
            body.push_str(&chains[dir_index(dir)]);
            let dflt_comment = format!("rampart default {} {}", dir.as_str(), default.as_str());
            match default {
                Action::Reject => {
                    let _ = writeln!(body, "\t\tcounter comment \"{dflt_comment}\"");
                    let _ = writeln!(body, "\t\treject with tcp reset");
                    let _ = writeln!(body, "\t\treject with icmpx admin-prohibited");
                }
                _ => {
                    let _ = writeln!(body, "\t\tcounter comment \"{dflt_comment}\"");
                }
            }
            let _ = writeln!(body, "\t}}");
            if dir != Direction::Forward {
                body.push('\n');
            }
        }

        let mut out = String::new();
        let _ = writeln!(
            out,
            "# Generated by rampart from {} rules; replaces table inet {} atomically.",
            self.policy.rules.len(),
            self.table
        );
        let _ = writeln!(out, "table inet {} {{\n}}", self.table);
        let _ = writeln!(out, "delete table inet {}", self.table);
        let _ = writeln!(out, "table inet {} {{", self.table);
        out.push_str(&body);
        out.push_str("}\n");
        out.push_str(&after_table);
        Ok(out)
    }

    /// A rule, or its "expired" note.
    fn emit_one(
        &self,
        index: usize,
        rule: &Rule,
        chain: &mut String,
        extra: &mut String,
        objects: &mut String,
    ) -> Result<(), EmitError> {
        if let (Some(today), Some(expires)) = (self.opts.today, rule.expires) {
            if expires < today {
                let _ = writeln!(
                    chain,
                    "\t\t# expired {expires}: {}",
                    rule_comment(index, rule)
                );
                return Ok(());
            }
        }
        self.emit_rule(index, rule, chain, extra, objects)
    }

    /// Consecutive rules with the same zone pair: one chain `<hook>_<from>_to_<to>` entered when
    /// the pair matches, holding the rules without their peers (evaluation order unchanged: a
    /// rule in the chain decides, or the packet returns and continues after the jump).
    #[allow(clippy::too_many_arguments)]
    fn emit_zone_group(
        &self,
        dir: Direction,
        pair: (Option<ZoneId>, Option<ZoneId>),
        rules: &[(usize, &Rule)],
        chain: &mut String,
        extra: &mut String,
        objects: &mut String,
        names: &mut BTreeMap<String, usize>,
    ) -> Result<(), EmitError> {
        let zone_name = |z: Option<ZoneId>| -> String {
            z.and_then(|id| self.policy.zones.get(id.0 as usize))
                .map(|z| ident(&z.name))
                .unwrap_or_else(|| "any".into())
        };
        let hook = match dir {
            Direction::Ingress => "input",
            Direction::Egress => "output",
            Direction::Forward => "forward",
        };
        let mut name = format!("{hook}_{}_to_{}", zone_name(pair.0), zone_name(pair.1));
        let n = names.entry(name.clone()).or_insert(0);
        *n += 1;
        if *n > 1 {
            name = format!("{name}_{n}");
        }
        let mut probe = rules[0].1.clone();
        probe.services.clear();
        probe.family = Family::Any;
        probe.owner = None;
        let alts = self.alternatives(&probe)?;
        if alts.is_empty() {
            for (index, rule) in rules {
                self.emit_one(*index, rule, chain, extra, objects)?;
            }
            return Ok(());
        }
        for a in &alts {
            let _ = writeln!(
                chain,
                "\t\t{}",
                join_nonempty(&[&a.render(None), &format!("jump {name}")])
            );
        }
        let mut body = String::new();
        for (index, rule) in rules {
            let mut inner = (*rule).clone();
            inner.from.clear();
            inner.to.clear();
            self.emit_one(*index, &inner, &mut body, extra, objects)?;
        }
        let _ = writeln!(extra, "\tchain {name} {{\n{body}\t}}\n");
        Ok(())
    }

    fn emit_rule(
        &self,
        index: usize,
        rule: &Rule,
        chain: &mut String,
        extra: &mut String,
        objects: &mut String,
    ) -> Result<(), EmitError> {
        let comment = rule_comment(index, rule);
        let alts = self.alternatives(rule)?;
        if alts.is_empty() {
            let _ = writeln!(
                chain,
                "\t\t# never matches in {} (peer/family constraints exclude each other): {comment}",
                rule.direction
            );
            return Ok(());
        }
        let ct = ct_states(&rule.ct_states);
        let over = self.over_checks(index, rule, objects)?;
        let reject_kinds: Vec<L4Kind> = alts.iter().map(|a| a.l4_kind).collect();
        let simple_reject =
            rule.action != Action::Reject || reject_kinds.iter().all(|k| *k != L4Kind::Unknown);
        if alts.len() == 1 && over.is_empty() && !rule.log && simple_reject {
            let a = &alts[0];
            let m = a.render(ct.as_deref());
            let verdict = verdict_text(rule.action, a.l4_kind);
            let _ = writeln!(
                chain,
                "\t\t{}",
                join_nonempty(&[&m, "counter", verdict, &format!("comment \"{comment}\"")])
            );
            return Ok(());
        }
        let verdict_chain = format!("rule_{index}_verdict");
        let entry = if over.is_empty() {
            format!("goto {verdict_chain}")
        } else {
            format!("jump rule_{index}")
        };
        for a in &alts {
            let m = a.render(ct.as_deref());
            let _ = writeln!(chain, "\t\t{}", join_nonempty(&[&m, &entry]));
        }
        if !over.is_empty() {
            // Each check matches a source that is over the cap or the rate. Refused: ban the
            // source and drop (never-ban sources, and every source of a rule without a ban,
            // fall through to later rules, as for any limited rule). A source the per-source
            // sets cannot hold (full) matches no check and gets the rule's verdict unlimited:
            // a spoofed flood that fills them must not lock out, or ban, new sources.
            let bans = self.ban_lines(index, rule);
            let refused = if bans.is_empty() {
                "return".to_string()
            } else {
                format!("goto rule_{index}_refused")
            };
            let _ = writeln!(extra, "\tchain rule_{index} {{");
            for g in &over {
                let _ = writeln!(extra, "\t\t{g} {refused}");
            }
            let _ = writeln!(extra, "\t\tgoto {verdict_chain}\n\t}}\n");
            if !bans.is_empty() {
                let _ = writeln!(extra, "\tchain rule_{index}_refused {{");
                for b in &bans {
                    let _ = writeln!(extra, "\t\t{b}");
                }
                let _ = writeln!(extra, "\t}}\n");
            }
        }
        let _ = writeln!(extra, "\tchain {verdict_chain} {{");
        if rule.log {
            let _ = writeln!(
                extra,
                "\t\tlimit rate {}/second burst {} packets log group {} prefix \"{LOG_PREFIX_STEM}{index}:\"",
                self.opts.log_rate_per_s.max(1),
                self.opts.log_burst.max(1),
                self.opts.log_group
            );
        }
        let all_kind = if reject_kinds.iter().all(|k| *k == L4Kind::Tcp) {
            L4Kind::Tcp
        } else if reject_kinds.iter().all(|k| *k == L4Kind::NotTcp) {
            L4Kind::NotTcp
        } else {
            L4Kind::Unknown
        };
        if rule.action == Action::Reject && all_kind == L4Kind::Unknown {
            let _ = writeln!(extra, "\t\tcounter comment \"{comment}\"");
            let _ = writeln!(extra, "\t\treject with tcp reset");
            let _ = writeln!(extra, "\t\treject with icmpx admin-prohibited");
        } else {
            let _ = writeln!(
                extra,
                "\t\tcounter {} comment \"{comment}\"",
                verdict_text(rule.action, all_kind)
            );
        }
        let _ = writeln!(extra, "\t}}\n");
        Ok(())
    }

    /// The rule's "over the cap" checks (limits and connection caps), one nft rule each; a
    /// packet matching any is refused. Empty when the rule has neither.
    fn over_checks(
        &self,
        index: usize,
        rule: &Rule,
        objects: &mut String,
    ) -> Result<Vec<String>, EmitError> {
        let (lines, objs) = self.over_check_parts(index, rule)?;
        objects.push_str(&objs);
        Ok(lines)
    }

    /// The refusal checks of a rule with a limit or a connection cap, in evaluation order (the
    /// cap, then the rate), and the stateful objects they use (declared once, by the rule's own
    /// chain; the SYN proxy step of the same rule reuses the checks, so both share one bucket
    /// and one connection counter per source). Each check is one statement that matches a
    /// packet over the cap or the limit (`ct count over`, `limit rate over`): a per-source set
    /// that is full fails its statement, so an untracked source matches no check.
    fn over_check_parts(
        &self,
        index: usize,
        rule: &Rule,
    ) -> Result<(Vec<String>, String), EmitError> {
        let mut objects = String::new();
        let objects = &mut objects;
        if rule.limit.is_none() && rule.conn_limit.is_none() {
            return Ok((Vec::new(), String::new()));
        }
        let mut shared_limit = None;
        let mut meter_stmt = None;
        if let Some(limit) = &rule.limit {
            let spec = limit_spec(&rule.name, limit)?;
            if limit.per_source {
                meter_stmt = Some((spec, meter_timeout_s(limit)));
            } else {
                let name = format!("limit_{index}");
                let _ = writeln!(objects, "\tlimit {name} {{\n\t\trate over {spec}\n\t}}\n");
                shared_limit = Some(format!("limit name \"{name}\""));
            }
        }
        if let Some(0) = rule.conn_limit {
            return Err(EmitError::ZeroConnLimit {
                rule: rule.name.clone(),
            });
        }
        let per_family = meter_stmt.is_some() || rule.conn_limit.is_some();
        if !per_family {
            return Ok((shared_limit.into_iter().collect(), objects.clone()));
        }
        let mut caps = Vec::new();
        let mut meters = Vec::new();
        for fam in [Fam::V4, Fam::V6] {
            let key = format!("{} saddr", fam.addr_kw());
            let ty = if fam == Fam::V6 {
                "ipv6_addr"
            } else {
                "ipv4_addr"
            };
            if let Some(n) = rule.conn_limit {
                let set = format!("connlimit_{index}_{}", fam.suffix());
                let _ = writeln!(
                    objects,
                    "\tset {set} {{\n\t\ttype {ty}\n\t\tsize {}\n\t\tflags dynamic\n\t}}\n",
                    self.opts.meter_size
                );
                caps.push(format!("add @{set} {{ {key} ct count over {n} }}"));
            }
            if let Some((spec, timeout_s)) = &meter_stmt {
                let set = format!("meter_{index}_{}", fam.suffix());
                let _ = writeln!(
                    objects,
                    "\tset {set} {{\n\t\ttype {ty}\n\t\tsize {}\n\t\tflags dynamic,timeout\n\t\ttimeout {timeout_s}s\n\t}}\n",
                    self.opts.meter_size
                );
                meters.push(format!("update @{set} {{ {key} limit rate over {spec} }}"));
            }
        }
        let mut out = caps;
        out.extend(meters);
        out.extend(shared_limit);
        Ok((out, objects.clone()))
    }

    /// Whether a rule is emitted at all (not expired as of `opts.today`).
    fn is_live(&self, rule: &Rule) -> bool {
        !matches!((self.opts.today, rule.expires), (Some(today), Some(exp)) if exp < today)
    }

    fn ban_used(&self) -> bool {
        self.policy
            .rules
            .iter()
            .any(|r| r.ban.is_some() && self.is_live(r))
    }

    /// Check SYN proxy, ban and application-protocol rules against the IR's constraints.
    fn validate_features(&self) -> Result<(), EmitError> {
        for rule in &self.policy.rules {
            let in_or_fwd = matches!(rule.direction, Direction::Ingress | Direction::Forward);
            if let Some(sp) = &rule.synproxy {
                let bad = |reason| EmitError::BadSynproxy {
                    rule: rule.name.clone(),
                    reason,
                };
                if rule.action != Action::Accept {
                    return Err(bad("needs an accept rule"));
                }
                if !in_or_fwd {
                    return Err(bad("only works on ingress and forward rules"));
                }
                let tcp_ports = !rule.services.is_empty()
                    && rule
                        .services
                        .iter()
                        .all(|s| s.protocol == Some(proto::TCP) && !s.dst_ports.is_empty());
                if !tcp_ports {
                    return Err(bad(
                        "needs every service to be TCP with destination ports (a SYN proxy cannot answer for UDP or any port)",
                    ));
                }
                if rule.app.is_some() {
                    return Err(bad("cannot be combined with an application-protocol match"));
                }
                if sp.mss < 536 || sp.wscale > 14 {
                    return Err(bad("parameters out of range (mss 536-65535, wscale 0-14)"));
                }
            }
            if let Some(ban) = &rule.ban {
                let bad = |reason| EmitError::BadBan {
                    rule: rule.name.clone(),
                    reason,
                };
                if rule.action != Action::Accept || !in_or_fwd {
                    return Err(bad("needs an accept rule in ingress or forward"));
                }
                let per_source = rule.limit.as_ref().is_some_and(|l| l.per_source);
                if !per_source && rule.conn_limit.is_none() {
                    return Err(bad(
                        "needs a per-source limit or a connection cap to ban on",
                    ));
                }
                if ban.timeout_s == 0 || ban.timeout_s > BAN_TIMEOUT_MAX_S {
                    return Err(bad("timeout must be between 1 s and 30 days"));
                }
            }
            if let Some(app) = &rule.app {
                let bad = |reason| EmitError::BadAppRule {
                    rule: rule.name.clone(),
                    reason,
                };
                if app.protocols.is_empty() && !app.negate {
                    return Err(bad("lists no protocol, so it never matches"));
                }
                if rule.limit.is_some() || rule.conn_limit.is_some() || rule.ban.is_some() {
                    return Err(bad(
                        "cannot carry a limit, connection cap or ban (the classifier decides per connection)",
                    ));
                }
                if rule.owner.as_ref().is_some_and(|o| {
                    !(o.uids.is_empty() && o.gids.is_empty() && o.cgroups.is_empty())
                }) {
                    return Err(bad(
                        "cannot carry an owner match (reply packets have no local owner)",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The ban statements of rule `index` (one per family), or none when it has no ban.
    fn ban_lines(&self, index: usize, rule: &Rule) -> Vec<String> {
        let Some(ban) = &rule.ban else {
            return Vec::new();
        };
        let comment = rule_comment(index, rule);
        let mut out = Vec::new();
        for fam in [Fam::V4, Fam::V6] {
            let kw = fam.addr_kw();
            let exempt = if family_nets(&self.policy.defaults.never_ban, fam).is_empty() {
                String::new()
            } else {
                format!("{kw} saddr != @never_ban_{} ", fam.suffix())
            };
            out.push(format!(
                "meta nfproto {} {exempt}update @ban_{} {{ {kw} saddr timeout {}s }} log group {} prefix \"{BAN_LOG_PREFIX_STEM}{index}:\" counter drop comment \"{comment}\"",
                if fam == Fam::V4 { "ipv4" } else { "ipv6" },
                fam.suffix(),
                ban.timeout_s,
                self.opts.log_group
            ));
        }
        out
    }

    /// Objects of the ban feature: the dynamic ban sets.
    fn ban_objects(&self) -> String {
        let mut out = String::new();
        if !self.ban_used() {
            return out;
        }
        for fam in [Fam::V4, Fam::V6] {
            let ty = if fam == Fam::V6 {
                "ipv6_addr"
            } else {
                "ipv4_addr"
            };
            let _ = writeln!(
                out,
                "\tset ban_{} {{\n\t\ttype {ty}\n\t\tsize {}\n\t\tflags dynamic,timeout\n\t\tcomment \"rampart auto-ban: sources over a rule's limit\"\n\t}}\n",
                fam.suffix(),
                self.opts.meter_size
            );
        }
        out
    }

    /// The SYN proxy step of `dir`'s base chain, the raw-priority notrack rules for it, and its
    /// `synproxy_N` chains. Returns (base-chain lines, prerouting lines).
    fn synproxy_step(
        &self,
        dir: Direction,
        extra: &mut String,
    ) -> Result<(String, String), EmitError> {
        let mut base = String::new();
        let mut pre = String::new();
        let local = match dir {
            Direction::Ingress => "fib daddr type local",
            _ => "fib daddr type != local",
        };
        let lo = if self.policy.defaults.allow_loopback {
            "iif != \"lo\" "
        } else {
            ""
        };
        // Before routing there is no output interface: a destination zone's interfaces are
        // matched on the route the kernel will pick.
        let routed = |a: &Cond| {
            let mut r = a.clone();
            r.oif = a
                .oif
                .as_ref()
                .map(|o| o.replacen("oifname", "fib daddr oifname", 1));
            r.render(None)
        };
        let last_proxy = self
            .policy
            .rules
            .iter()
            .rposition(|r| r.synproxy.is_some() && r.direction == dir && self.is_live(r));
        let Some(last_proxy) = last_proxy else {
            return Ok((base, pre));
        };
        // Why: a rule whose TCP ports no proxy rule of the direction serves cannot claim a SYN
        // a proxy would answer; leaving it out keeps the raw chain short on big policies.
        let proxy_ports: Vec<PortRange> = self
            .policy
            .rules
            .iter()
            .filter(|r| r.synproxy.is_some() && r.direction == dir && self.is_live(r))
            .flat_map(|r| r.services.iter().flat_map(|s| s.dst_ports.iter().copied()))
            .collect();
        for (index, rule) in self.policy.rules.iter().enumerate().take(last_proxy + 1) {
            if rule.direction != dir || !self.is_live(rule) || rule.app.is_some() {
                continue;
            }
            let comment = rule_comment(index, rule);
            let Some(sp) = &rule.synproxy else {
                let claim_comment = format!(
                    "{}{SYN_CLAIM_SUFFIX}",
                    rule_comment_within(index, rule, COMMENT_MAX_BYTES - SYN_CLAIM_SUFFIX.len())
                );
                // The proxy acts at its rule's place in rule order (IR `Synproxy`): a bare SYN
                // whose static fields an earlier rule matches first stays tracked, so that rule
                // (a blocklist drop, say) decides it in the filter chain as for any new packet.
                if let Some(claim) = syn_claim(rule).filter(|c| ports_may_meet(c, &proxy_ports)) {
                    for a in self.alternatives(&claim)? {
                        let _ = writeln!(
                            pre,
                            "\t\t{lo}{local} {} {BARE_SYN} return comment \"{claim_comment}\"",
                            routed(&a)
                        );
                    }
                }
                continue;
            };
            let mut statik = rule.clone();
            statik.ct_states.clear();
            let alts = self.alternatives(&statik)?;
            let mut stmt = format!("synproxy mss {} wscale {}", sp.mss, sp.wscale);
            if sp.timestamp {
                stmt.push_str(" timestamp");
            }
            if sp.sack_perm {
                stmt.push_str(" sack-perm");
            }
            let (over, _) = self.over_check_parts(index, rule)?;
            let gated = !over.is_empty();
            if gated {
                // A SYN over the cap or the rate is refused (and its source banned); any other,
                // also one whose source the full per-source sets cannot hold, is proxied: the
                // cookies need no state, and a spoofed flood that fills the sets must not lock
                // out new clients.
                let _ = writeln!(extra, "\tchain synproxy_{index} {{");
                for g in &over {
                    let _ = writeln!(extra, "\t\t{g} goto synproxy_{index}_refused");
                }
                let _ = writeln!(extra, "\t\t{stmt} comment \"{comment}\"\n\t}}\n");
                let _ = writeln!(extra, "\tchain synproxy_{index}_refused {{");
                for b in self.ban_lines(index, rule) {
                    let _ = writeln!(extra, "\t\t{b}");
                }
                let _ = writeln!(
                    extra,
                    "\t\tcounter drop comment \"rampart synproxy #{index}: SYN over the limit\""
                );
                let _ = writeln!(extra, "\t}}\n");
            }
            for a in &alts {
                let _ = writeln!(
                    pre,
                    "\t\t{lo}{local} {} {BARE_SYN} counter notrack comment \"{comment}\"",
                    routed(a)
                );
                let m = a.render(Some("ct state invalid,untracked"));
                if gated {
                    let _ = writeln!(base, "\t\t{m} {BARE_SYN} jump synproxy_{index}");
                }
                let _ = writeln!(base, "\t\t{m} {stmt} comment \"{comment}\"");
                let _ = writeln!(
                    base,
                    "\t\t{m} counter drop comment \"rampart synproxy #{index}: not a handshake\""
                );
            }
        }
        Ok((base, pre))
    }

    /// Destination ports of every live SYN proxy rule (for the output-chain accept of the SYN
    /// the proxy sends to the server on behalf of a verified client).
    fn synproxy_ports(&self) -> Vec<PortRange> {
        let mut v = Vec::new();
        for rule in &self.policy.rules {
            if rule.synproxy.is_some() && self.is_live(rule) {
                for s in &rule.services {
                    v.extend(s.dst_ports.iter().copied());
                }
            }
        }
        normalize_ports(&v)
    }

    /// The application-protocol step of `dir`: chain `app_<hook>` (returns its text).
    fn app_chain(&self, dir: Direction, hook: &str) -> Result<String, EmitError> {
        let field = !MARK_MASK;
        let mut out = String::new();
        let _ = writeln!(out, "\tchain app_{hook} {{");
        let _ = writeln!(
            out,
            "\t\tct mark & 0x{MARK_MASK:08x} == 0x{BLOCKED_CT_MARK:08x} counter drop comment \"rampart app: connection blocked by the classifier\""
        );
        let _ = writeln!(
            out,
            "\t\tct mark & 0x{MARK_MASK:08x} == 0x{ACCEPTED_CT_MARK:08x} return"
        );
        let set_ct = format!("ct mark set ct mark & 0x{field:08x} | 0x{INSPECT_CT_MARK:08x}");
        let set_pkt = format!("meta mark set meta mark & 0x{field:08x} | 0x{INSPECT_MARK:08x}");
        for (index, rule) in self.policy.rules.iter().enumerate() {
            if rule.app.is_none() || rule.direction != dir || !self.is_live(rule) {
                continue;
            }
            let comment = rule_comment(index, rule);
            let mut statik = rule.clone();
            statik.ct_states.clear();
            // Connections: TCP/UDP services of the rule (all of them when it lists none).
            let mut conns = statik.clone();
            conns.services = if rule.services.is_empty() {
                vec![any_port(proto::TCP), any_port(proto::UDP)]
            } else {
                rule.services
                    .iter()
                    .filter(|s| matches!(s.protocol, Some(proto::TCP) | Some(proto::UDP) | None))
                    .map(|s| match s.protocol {
                        None => vec![any_port(proto::TCP), any_port(proto::UDP)],
                        Some(_) => vec![s.clone()],
                    })
                    .collect::<Vec<_>>()
                    .concat()
            };
            if !conns.services.is_empty() {
                for a in self.alternatives(&conns)? {
                    let _ = writeln!(
                        out,
                        "\t\t{} {set_ct} comment \"{comment}\"",
                        a.render(Some("ct state new ct direction original"))
                    );
                }
            }
            // ICMP echo requests: every one is inspected (tunnels keep one echo id).
            let mut echo = statik;
            echo.services = Vec::new();
            let admits = |p: u8, t: u8| {
                rule.services.is_empty()
                    || rule.services.iter().any(|s| {
                        s.protocol.is_none()
                            || (s.protocol == Some(p)
                                && (s.icmp_types.is_empty() || s.icmp_types.contains(&t)))
                    })
            };
            if admits(proto::ICMP, 8) {
                echo.services.push(icmp_type(proto::ICMP, 8));
            }
            if admits(proto::ICMPV6, 128) {
                echo.services.push(icmp_type(proto::ICMPV6, 128));
            }
            if !echo.services.is_empty() {
                for a in self.alternatives(&echo)? {
                    let _ = writeln!(
                        out,
                        "\t\t{} {set_pkt} comment \"{comment}\"",
                        a.render(None)
                    );
                }
            }
        }
        // Why no packet count: every payload packet of an undecided connection goes to the
        // classifier until it sets ACCEPTED/BLOCKED in the conntrack mark (the inspection
        // budget is the classifier's), so a blocked connection's retransmission arriving before
        // the mark lands is still queued and dropped from the classifier's table.
        let _ = writeln!(
            out,
            "\t\tct mark & 0x{MARK_MASK:08x} == 0x{INSPECT_CT_MARK:08x} meta l4proto {{ tcp, udp }} @ih,0,8 >= 0 {set_pkt} comment \"rampart app: payload to inspect\""
        );
        let _ = writeln!(out, "\t}}\n");
        Ok(out)
    }

    fn app_reject_used(&self) -> bool {
        self.policy
            .rules
            .iter()
            .any(|r| r.app.is_some() && r.action == Action::Reject && self.is_live(r))
    }

    fn app_used(&self) -> bool {
        self.policy
            .rules
            .iter()
            .any(|r| r.app.is_some() && self.is_live(r))
    }

    fn alternatives(&self, rule: &Rule) -> Result<Vec<Cond>, EmitError> {
        let from = self.side(rule, &rule.from, Side::Src)?;
        let to = self.side(rule, &rule.to, Side::Dst)?;
        let svc = services(rule)?;
        let owner = self.owner(rule)?;
        let rule_fam = match rule.family {
            Family::Any => Fam::Any,
            Family::V4 => Fam::V4,
            Family::V6 => Fam::V6,
        };
        let count = from.len() * to.len() * svc.len() * owner.len();
        if count > MAX_ALTERNATIVES_PER_RULE * 2 {
            return Err(EmitError::TooManyAlternatives {
                rule: rule.name.clone(),
                count,
                limit: MAX_ALTERNATIVES_PER_RULE,
            });
        }
        let mut out: Vec<Cond> = Vec::new();
        let base = Cond {
            fam: rule_fam,
            ..Cond::any()
        };
        for f in &from {
            for t in &to {
                for s in &svc {
                    for o in &owner {
                        let c = base
                            .and(f)
                            .and_then(|c| c.and(t))
                            .and_then(|c| c.and(s))
                            .and_then(|c| c.and(o));
                        if let Some(c) = c {
                            if !out.contains(&c) {
                                out.push(c);
                            }
                        }
                    }
                }
            }
        }
        if out.len() > MAX_ALTERNATIVES_PER_RULE {
            return Err(EmitError::TooManyAlternatives {
                rule: rule.name.clone(),
                count: out.len(),
                limit: MAX_ALTERNATIVES_PER_RULE,
            });
        }
        Ok(out)
    }

    fn side(&self, rule: &Rule, peers: &[Peer], side: Side) -> Result<Vec<Cond>, EmitError> {
        if peers.is_empty() {
            return Ok(vec![Cond::any()]);
        }
        let dir_kw = match side {
            Side::Src => "saddr",
            Side::Dst => "daddr",
        };
        let mk = |fam: Fam, iface: Option<String>, addr: Option<String>| {
            let mut c = Cond { fam, ..Cond::any() };
            match side {
                Side::Src => {
                    c.iif = iface;
                    c.saddr = addr;
                }
                Side::Dst => {
                    c.oif = iface;
                    c.daddr = addr;
                }
            }
            c
        };
        let mut out: Vec<Cond> = Vec::new();
        let mut literal: Vec<IpNet> = Vec::new();
        for peer in peers {
            match peer {
                Peer::Net(n) => literal.push(*n),
                Peer::Zone(id) => {
                    let zone = self.policy.zones.get(id.0 as usize).ok_or_else(|| {
                        EmitError::DanglingReference {
                            rule: rule.name.clone(),
                            what: "zone",
                            id: id.0,
                        }
                    })?;
                    let iface = if zone.interfaces.is_empty() {
                        None
                    } else {
                        // No output interface on ingress, no input interface on egress: a zone
                        // that lists interfaces never matches there.
                        let absent = matches!(
                            (side, rule.direction),
                            (Side::Src, Direction::Egress) | (Side::Dst, Direction::Ingress)
                        );
                        if absent {
                            continue;
                        }
                        let kw = if side == Side::Src {
                            "iifname"
                        } else {
                            "oifname"
                        };
                        Some(format!("{kw} {}", iface_set(&zone.interfaces)))
                    };
                    if zone.networks.is_empty() {
                        out.push(mk(Fam::Any, iface, None));
                        continue;
                    }
                    let parts = &self.zone_parts[id.0 as usize];
                    for (fam, names) in [(Fam::V4, &parts.v4), (Fam::V6, &parts.v6)] {
                        for name in names {
                            out.push(mk(
                                fam,
                                iface.clone(),
                                Some(format!("{} {dir_kw} {name}", fam.addr_kw())),
                            ));
                        }
                    }
                }
                Peer::Set(id) => {
                    let parts = self.set_parts.get(id.0 as usize).ok_or_else(|| {
                        EmitError::DanglingReference {
                            rule: rule.name.clone(),
                            what: "set",
                            id: id.0,
                        }
                    })?;
                    for (fam, names) in [(Fam::V4, &parts.v4), (Fam::V6, &parts.v6)] {
                        for name in names {
                            out.push(mk(
                                fam,
                                None,
                                Some(format!("{} {dir_kw} {name}", fam.addr_kw())),
                            ));
                        }
                    }
                }
            }
        }
        for fam in [Fam::V4, Fam::V6] {
            let nets = family_nets(&literal, fam);
            if nets.is_empty() {
                continue;
            }
            let text = if nets.len() == 1 {
                net_text(&nets[0])
            } else {
                format!("{{ {} }}", join_nets(&nets))
            };
            out.push(mk(
                fam,
                None,
                Some(format!("{} {dir_kw} {text}", fam.addr_kw())),
            ));
        }
        if out.iter().any(Cond::is_any) {
            return Ok(vec![Cond::any()]);
        }
        let mut dedup: Vec<Cond> = Vec::new();
        for c in out {
            if !dedup.contains(&c) {
                dedup.push(c);
            }
        }
        Ok(dedup)
    }

    fn owner(&self, rule: &Rule) -> Result<Vec<Cond>, EmitError> {
        let Some(owner) = &rule.owner else {
            return Ok(vec![Cond::any()]);
        };
        if owner.uids.is_empty() && owner.gids.is_empty() && owner.cgroups.is_empty() {
            return Ok(vec![Cond::any()]);
        }
        if rule.direction != Direction::Egress {
            return Err(EmitError::OwnerOutsideEgress {
                rule: rule.name.clone(),
                direction: rule.direction.to_string(),
            });
        }
        let mut base = Vec::new();
        if !owner.uids.is_empty() {
            base.push(format!("meta skuid {}", num_set(&owner.uids)));
        }
        if !owner.gids.is_empty() {
            base.push(format!("meta skgid {}", num_set(&owner.gids)));
        }
        if owner.cgroups.is_empty() {
            return Ok(vec![Cond {
                owner: base,
                ..Cond::any()
            }]);
        }
        let mut out = Vec::new();
        for path in &owner.cgroups {
            let trimmed = path.trim_matches('/');
            let bad = trimmed.is_empty()
                || trimmed.len() > CGROUP_PATH_MAX_BYTES
                || trimmed
                    .split('/')
                    .any(|c| c.is_empty() || c == "." || c == "..")
                || trimmed
                    .chars()
                    .any(|c| c == '"' || c == '\\' || c.is_control());
            if bad {
                return Err(EmitError::BadCgroupPath {
                    rule: rule.name.clone(),
                    path: path.clone(),
                });
            }
            let level = trimmed.split('/').count();
            let prefix = self.opts.cgroup2_prefix.trim_matches('/');
            let full = if prefix.is_empty() {
                trimmed.to_string()
            } else {
                format!("{prefix}/{trimmed}")
            };
            let mut stmts = base.clone();
            stmts.push(format!("socket cgroupv2 level {level} \"{full}\""));
            out.push(Cond {
                owner: stmts,
                ..Cond::any()
            });
        }
        Ok(out)
    }
}

fn any_port(protocol: u8) -> L4Match {
    L4Match {
        protocol: Some(protocol),
        src_ports: Vec::new(),
        dst_ports: Vec::new(),
        icmp_types: Vec::new(),
        service: None,
    }
}

fn icmp_type(protocol: u8, t: u8) -> L4Match {
    L4Match {
        icmp_types: vec![t],
        ..any_port(protocol)
    }
}

/// The zone pair of a rule whose sides are each empty or exactly one zone (not both empty).
fn zone_pair(rule: &Rule) -> Option<(Option<ZoneId>, Option<ZoneId>)> {
    let side = |peers: &[Peer]| -> Option<Option<ZoneId>> {
        match peers {
            [] => Some(None),
            [Peer::Zone(z)] => Some(Some(*z)),
            _ => None,
        }
    };
    let pair = (side(&rule.from)?, side(&rule.to)?);
    if pair == (None, None) {
        return None;
    }
    Some(pair)
}

fn push_part(parts: &mut SetParts, fam: Fam, name: String) {
    push_lookup(parts, fam, format!("@{name}"));
}

fn push_lookup(parts: &mut SetParts, fam: Fam, name: String) {
    match fam {
        Fam::V6 => parts.v6.push(name),
        _ => parts.v4.push(name),
    }
}

fn dir_index(d: Direction) -> usize {
    match d {
        Direction::Ingress => 0,
        Direction::Egress => 1,
        Direction::Forward => 2,
    }
}

fn family_nets(nets: &[IpNet], fam: Fam) -> Vec<IpNet> {
    let picked: Vec<IpNet> = nets
        .iter()
        .filter(|n| Fam::of_net(n) == fam)
        .map(|n| n.trunc())
        .collect();
    IpNet::aggregate(&picked)
}

/// `nets` minus every prefix in `except`, as aggregated prefixes.
fn subtract(nets: &[IpNet], except: &[IpNet]) -> Vec<IpNet> {
    if except.is_empty() {
        return nets.to_vec();
    }
    let mut work: Vec<IpNet> = nets.to_vec();
    for ex in except.iter().map(|e| e.trunc()) {
        let mut next = Vec::with_capacity(work.len());
        for n in work {
            if ex.contains(&n) {
                continue;
            }
            if !n.contains(&ex) {
                next.push(n);
                continue;
            }
            // Split n into its two halves until the excluded prefix is isolated.
            let mut cur = n;
            while cur.prefix_len() < ex.prefix_len() {
                let Ok(mut halves) = cur.subnets(cur.prefix_len() + 1) else {
                    break;
                };
                let (Some(a), Some(b)) = (halves.next(), halves.next()) else {
                    break;
                };
                let (keep, descend) = if a.contains(&ex) { (b, a) } else { (a, b) };
                next.push(keep);
                cur = descend;
            }
        }
        work = next;
    }
    IpNet::aggregate(&work)
}

fn net_text(n: &IpNet) -> String {
    if n.prefix_len() == n.max_prefix_len() {
        n.addr().to_string()
    } else {
        n.to_string()
    }
}

fn join_nets(nets: &[IpNet]) -> String {
    nets.iter().map(net_text).collect::<Vec<_>>().join(", ")
}

fn num_set(v: &[u32]) -> String {
    let mut v = v.to_vec();
    v.sort_unstable();
    v.dedup();
    if v.len() == 1 {
        v[0].to_string()
    } else {
        format!(
            "{{ {} }}",
            v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
        )
    }
}

fn join_nonempty(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn validate_interfaces(zone: &Zone) -> Result<(), EmitError> {
    for name in &zone.interfaces {
        let stem = name.strip_suffix('*').unwrap_or(name);
        let ok = !name.is_empty()
            && name.len() <= IFNAME_MAX_BYTES
            && !stem.contains('*')
            && stem
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\' && c != '/');
        if !ok {
            return Err(EmitError::BadInterface {
                zone: zone.name.clone(),
                name: name.clone(),
            });
        }
    }
    Ok(())
}

fn iface_set(names: &[String]) -> String {
    let mut v: Vec<&String> = names.iter().collect();
    v.sort();
    v.dedup();
    if v.len() == 1 {
        format!("\"{}\"", v[0])
    } else {
        format!(
            "{{ {} }}",
            v.iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn ct_states(states: &[CtState]) -> Option<String> {
    if states.is_empty() {
        return None;
    }
    let mut v: Vec<CtState> = states.to_vec();
    v.sort();
    v.dedup();
    let names: Vec<&str> = v
        .iter()
        .map(|s| match s {
            CtState::New => "new",
            CtState::Established => "established",
            CtState::Related => "related",
            CtState::Invalid => "invalid",
            CtState::Untracked => "untracked",
        })
        .collect();
    Some(if names.len() == 1 {
        format!("ct state {}", names[0])
    } else {
        format!("ct state {{ {} }}", names.join(", "))
    })
}

fn verdict_text(action: Action, kind: L4Kind) -> &'static str {
    match (action, kind) {
        (Action::Accept, _) => "accept",
        (Action::Drop, _) => "drop",
        (Action::Reject, L4Kind::Tcp) => "reject with tcp reset",
        (Action::Reject, _) => "reject with icmpx admin-prohibited",
    }
}

fn unit_name(per_s: u32) -> Option<&'static str> {
    Some(match per_s {
        1 => "second",
        60 => "minute",
        3600 => "hour",
        86400 => "day",
        604800 => "week",
        _ => return None,
    })
}

/// `N/unit burst B packets` or `N bytes/unit [burst B bytes]` with the IR's bucket semantics.
fn limit_spec(rule: &str, limit: &Limit) -> Result<String, EmitError> {
    let unit = unit_name(limit.per_s).ok_or_else(|| EmitError::UnsupportedRatePeriod {
        rule: rule.to_string(),
        per_s: limit.per_s,
    })?;
    let bucket = if limit.burst == 0 {
        limit.rate
    } else {
        limit.burst
    };
    let bad = || EmitError::BadLimit {
        rule: rule.to_string(),
        rate: limit.rate,
        burst: limit.burst,
    };
    if limit.rate == 0 {
        return Err(bad());
    }
    match limit.unit {
        RateUnit::Packets => {
            // The kernel's packet bucket holds exactly `burst` packets.
            if bucket > u64::from(u32::MAX) {
                return Err(bad());
            }
            Ok(format!("{}/{unit} burst {bucket} packets", limit.rate))
        }
        RateUnit::Bytes => {
            // The kernel's byte bucket holds `rate + burst` bytes.
            if bucket < limit.rate {
                return Err(EmitError::ByteBucketBelowRate {
                    rule: rule.to_string(),
                    rate: limit.rate,
                    burst: limit.burst,
                });
            }
            let extra = bucket - limit.rate;
            if extra > u64::from(u32::MAX) {
                return Err(bad());
            }
            if extra == 0 {
                Ok(format!("{} bytes/{unit}", limit.rate))
            } else {
                Ok(format!("{} bytes/{unit} burst {extra} bytes", limit.rate))
            }
        }
    }
}

/// Idle timeout of a per-source meter element: at least the time an empty bucket needs to
/// refill, so expiring an element (which recreates it full) never grants more than the IR's
/// token bucket would.
fn meter_timeout_s(limit: &Limit) -> u64 {
    let bucket = if limit.burst == 0 {
        limit.rate
    } else {
        limit.burst
    };
    let refill_s = bucket
        .saturating_mul(u64::from(limit.per_s))
        .div_ceil(limit.rate.max(1));
    refill_s.max(60)
}

/// Source ports and destination ports (`None`: any) of a TCP/UDP service.
type PortKey = (Vec<PortRange>, Option<Vec<PortRange>>);

/// Service alternatives (OR). Merges same-protocol services where the result is equivalent.
fn services(rule: &Rule) -> Result<Vec<Cond>, EmitError> {
    if rule.services.is_empty() {
        return Ok(vec![Cond::any()]);
    }
    // (protocol, src ports) → dst ports (None = any).
    let mut ported: BTreeMap<(u8, Vec<PortRange>), Option<Vec<PortRange>>> = BTreeMap::new();
    // icmp protocol → types (None = any).
    let mut icmp: BTreeMap<u8, Option<Vec<u8>>> = BTreeMap::new();
    let mut bare: Vec<u8> = Vec::new();
    for s in &rule.services {
        check_service(rule, s)?;
        let Some(p) = s.protocol else {
            return Ok(vec![Cond::any()]);
        };
        match p {
            proto::TCP | proto::UDP => {
                let mut src = s.src_ports.clone();
                src.sort();
                src.dedup();
                let entry = ported.entry((p, src)).or_insert_with(|| Some(Vec::new()));
                if s.dst_ports.is_empty() {
                    *entry = None;
                } else if let Some(v) = entry {
                    v.extend(s.dst_ports.iter().copied());
                }
            }
            proto::ICMP | proto::ICMPV6 => {
                let entry = icmp.entry(p).or_insert_with(|| Some(Vec::new()));
                if s.icmp_types.is_empty() {
                    *entry = None;
                } else if let Some(v) = entry {
                    v.extend(s.icmp_types.iter().copied());
                }
            }
            other => bare.push(other),
        }
    }
    let mut out = Vec::new();
    // Merge tcp and udp entries with identical ports into `meta l4proto { tcp, udp } th …`.
    let mut merged: BTreeMap<PortKey, Vec<u8>> = BTreeMap::new();
    for ((p, src), dst) in ported {
        let dst = dst.map(|d| normalize_ports(&d));
        merged.entry((src, dst)).or_default().push(p);
    }
    for ((src, dst), protos) in merged {
        let both = protos.len() == 2;
        let name = if protos[0] == proto::TCP {
            "tcp"
        } else {
            "udp"
        };
        let mut parts = Vec::new();
        let kw = if both { "th" } else { name };
        if both {
            parts.push("meta l4proto { tcp, udp }".to_string());
        } else if src.is_empty() && dst.is_none() {
            parts.push(format!("meta l4proto {name}"));
        }
        if !src.is_empty() {
            parts.push(format!("{kw} sport {}", ports_text(&src)));
        }
        if let Some(d) = &dst {
            parts.push(format!("{kw} dport {}", ports_text(d)));
        }
        out.push(Cond {
            l4: Some(parts.join(" ")),
            l4_kind: if both {
                L4Kind::Unknown
            } else if protos[0] == proto::TCP {
                L4Kind::Tcp
            } else {
                L4Kind::NotTcp
            },
            ..Cond::any()
        });
    }
    for (p, types) in icmp {
        let (fam, base, kw) = if p == proto::ICMP {
            (Fam::V4, "meta nfproto ipv4 meta l4proto icmp", "icmp")
        } else {
            (
                Fam::V6,
                "meta nfproto ipv6 meta l4proto ipv6-icmp",
                "icmpv6",
            )
        };
        let text = match types {
            None => base.to_string(),
            Some(mut t) => {
                t.sort_unstable();
                t.dedup();
                let list = if t.len() == 1 {
                    t[0].to_string()
                } else {
                    format!(
                        "{{ {} }}",
                        t.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
                    )
                };
                format!("{base} {kw} type {list}")
            }
        };
        out.push(Cond {
            fam,
            l4: Some(text),
            l4_kind: L4Kind::NotTcp,
            ..Cond::any()
        });
    }
    if !bare.is_empty() {
        bare.sort_unstable();
        bare.dedup();
        let list = if bare.len() == 1 {
            bare[0].to_string()
        } else {
            format!(
                "{{ {} }}",
                bare.iter()
                    .map(u8::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        out.push(Cond {
            l4: Some(format!("meta l4proto {list}")),
            l4_kind: L4Kind::NotTcp,
            ..Cond::any()
        });
    }
    Ok(out)
}

fn check_service(rule: &Rule, s: &L4Match) -> Result<(), EmitError> {
    for r in s.src_ports.iter().chain(&s.dst_ports) {
        if r.lo > r.hi {
            return Err(EmitError::EmptyPortRange {
                rule: rule.name.clone(),
                lo: r.lo,
                hi: r.hi,
            });
        }
    }
    let has_ports = !s.src_ports.is_empty() || !s.dst_ports.is_empty();
    match s.protocol {
        None if has_ports || !s.icmp_types.is_empty() => Err(EmitError::DetailWithoutProtocol {
            rule: rule.name.clone(),
        }),
        None => Ok(()),
        Some(p) => {
            if has_ports && p != proto::TCP && p != proto::UDP {
                return Err(EmitError::PortsOnPortlessProtocol {
                    rule: rule.name.clone(),
                    protocol: p,
                });
            }
            if !s.icmp_types.is_empty() && p != proto::ICMP && p != proto::ICMPV6 {
                return Err(EmitError::IcmpTypesOnNonIcmp {
                    rule: rule.name.clone(),
                    protocol: p,
                });
            }
            Ok(())
        }
    }
}

/// Sort and merge overlapping or adjacent port ranges (nft rejects overlaps in anonymous sets).
fn normalize_ports(v: &[PortRange]) -> Vec<PortRange> {
    let mut v = v.to_vec();
    v.sort();
    let mut out: Vec<PortRange> = Vec::new();
    for r in v {
        if let Some(last) = out.last_mut() {
            if u32::from(r.lo) <= u32::from(last.hi) + 1 {
                last.hi = last.hi.max(r.hi);
                continue;
            }
        }
        out.push(r);
    }
    out
}

fn ports_text(v: &[PortRange]) -> String {
    let v = normalize_ports(v);
    if v.len() == 1 {
        v[0].to_string()
    } else {
        format!(
            "{{ {} }}",
            v.iter()
                .map(PortRange::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// Whether a SYN matching `claim` may have a destination port in `ports` (a service without
/// destination ports matches any).
fn ports_may_meet(claim: &Rule, ports: &[PortRange]) -> bool {
    claim.services.is_empty()
        || claim.services.iter().any(|s| {
            s.dst_ports.is_empty()
                || s.dst_ports
                    .iter()
                    .any(|a| ports.iter().any(|b| a.lo <= b.hi && b.lo <= a.hi))
        })
}

/// The part of a non-proxy rule that can claim a bare TCP SYN in the raw-priority prelude (IR
/// `Synproxy`): its static fields with its TCP (or any-protocol) services only and no conntrack
/// states (a SYN without an entry is `new`; conntrack has not run yet at raw priority). `None`
/// when the rule cannot match such a SYN (no TCP service, or states excluding `new`).
fn syn_claim(rule: &Rule) -> Option<Rule> {
    if !rule.ct_states.is_empty() && !rule.ct_states.contains(&CtState::New) {
        return None;
    }
    let mut claim = rule.clone();
    claim.ct_states.clear();
    claim.limit = None;
    claim.conn_limit = None;
    claim.ban = None;
    if !rule.services.is_empty() {
        claim
            .services
            .retain(|s| s.protocol.is_none() || s.protocol == Some(proto::TCP));
        if claim.services.is_empty() {
            return None;
        }
    }
    Some(claim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rampart_ir::{RuleOrigin, SourceLoc, TechniqueId};

    fn rule(name: &str) -> Rule {
        Rule {
            name: name.into(),
            direction: Direction::Ingress,
            from: vec![],
            to: vec![],
            services: vec![],
            family: Family::Any,
            ct_states: vec![],
            owner: None,
            limit: None,
            conn_limit: None,
            synproxy: None,
            ban: None,
            app: None,
            action: Action::Drop,
            log: false,
            mitigates: vec![TechniqueId("T1187".into())],
            expires: None,
            description: None,
            origin: RuleOrigin::User,
            loc: SourceLoc {
                file: "p.toml".into(),
                line: 7,
                col: 1,
            },
        }
    }

    #[test]
    fn comment_is_bounded_and_keeps_location() {
        let mut r = rule(&"x\"y".repeat(100));
        r.mitigates = vec![TechniqueId("T1557.001".into())];
        let c = rule_comment(3, &r);
        assert!(c.len() <= COMMENT_MAX_BYTES, "{}", c.len());
        assert!(c.ends_with(" p.toml:7 T1557.001"), "{c}");
        assert!(!c.contains('"'));
        let short = rule_comment(0, &rule("ssh"));
        assert_eq!(short, "#0 ssh p.toml:7 T1187");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let r = rule(&"é".repeat(200));
        let c = rule_comment(1, &r);
        assert!(c.len() <= COMMENT_MAX_BYTES);
    }

    #[test]
    fn byte_limits_map_to_kernel_bucket() {
        let l = Limit {
            rate: 1000,
            per_s: 1,
            burst: 1500,
            unit: RateUnit::Bytes,
            per_source: false,
        };
        assert_eq!(
            limit_spec("r", &l).unwrap(),
            "1000 bytes/second burst 500 bytes"
        );
        let l = Limit { burst: 500, ..l };
        assert!(matches!(
            limit_spec("r", &l),
            Err(EmitError::ByteBucketBelowRate { .. })
        ));
        let p = Limit {
            rate: 10,
            per_s: 60,
            burst: 0,
            unit: RateUnit::Packets,
            per_source: true,
        };
        assert_eq!(limit_spec("r", &p).unwrap(), "10/minute burst 10 packets");
        assert_eq!(meter_timeout_s(&p), 60);
        let p = Limit { per_s: 3600, ..p };
        assert_eq!(meter_timeout_s(&p), 3600);
        let p = Limit { per_s: 7, ..p };
        assert!(limit_spec("r", &p).is_err());
    }

    #[test]
    fn except_is_subtracted() {
        let n = |s: &str| s.parse::<IpNet>().unwrap();
        let out = subtract(&[n("198.51.100.0/24")], &[n("198.51.100.64/26")]);
        assert_eq!(out, vec![n("198.51.100.0/26"), n("198.51.100.128/25")]);
        assert!(subtract(&[n("198.51.100.5/32")], &[n("198.51.100.0/24")]).is_empty());
        assert_eq!(
            subtract(&[n("192.0.2.0/24")], &[n("2001:db8::/32")]),
            vec![n("192.0.2.0/24")]
        );
    }

    #[test]
    fn port_ranges_merge() {
        let v = normalize_ports(&[
            PortRange { lo: 139, hi: 139 },
            PortRange { lo: 137, hi: 138 },
            PortRange { lo: 445, hi: 445 },
        ]);
        assert_eq!(ports_text(&v), "{ 137-139, 445 }");
    }

    #[test]
    fn family_meet_excludes_mismatch() {
        assert_eq!(Fam::V4.meet(Fam::V6), None);
        assert_eq!(Fam::Any.meet(Fam::V6), Some(Fam::V6));
    }
}
