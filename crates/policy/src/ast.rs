//! Stage 1b: the typed syntax tree of one policy file. Every key is checked against the
//! language (unknown keys are errors with a did-you-mean), every value against its TOML type;
//! names, addresses and services stay text until [`crate::resolve`] gives them meaning.

use crate::diag::{did_you_mean, Diags, Report};
use crate::limits::MAX_LIST_ITEMS;
use crate::source::Span;
use crate::syntax::{Entry, Node, NodeKind};

/// A value with the span it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct S<T> {
    /// The value.
    pub v: T,
    /// Where it is written.
    pub span: Span,
}

impl<T> S<T> {
    fn new(v: T, span: Span) -> Self {
        Self { v, span }
    }
}

/// One policy file.
#[derive(Clone, Debug, Default)]
pub struct File {
    /// `include = [...]`, paths as written.
    pub includes: Vec<S<String>>,
    /// `[defaults]`.
    pub defaults: Option<DefaultsDecl>,
    /// `[zones.NAME]` in document order.
    pub zones: Vec<ZoneDecl>,
    /// `[sets.NAME]`.
    pub sets: Vec<SetDecl>,
    /// `[services.NAME]`.
    pub services: Vec<ServiceDecl>,
    /// `[[rules]]`.
    pub rules: Vec<RuleDecl>,
    /// `[profiles.NAME]`.
    pub profiles: Vec<ProfileDecl>,
    /// `[components]`.
    pub components: Option<ComponentsDecl>,
    /// `[[programs]]`: programs the exec jail confines.
    pub programs: Vec<ProgramDecl>,
    /// `[jail]`: the exec jail's settings.
    pub jail: Option<JailDecl>,
    /// `[l2]`: the L2 guard's policy-level settings.
    pub l2: Option<L2Decl>,
}

/// `[l2]`: port trust, static bindings, rate limits and blocked name protocols of the L2 guard.
#[derive(Clone, Debug)]
pub struct L2Decl {
    /// The table.
    pub span: Span,
    /// `bridge = "br0"`.
    pub bridge: Option<S<String>>,
    /// `trusted_ports = [...]` (key span, ports).
    pub trusted_ports: Option<(Span, Vec<S<String>>)>,
    /// `untrusted_ports = [...]`.
    pub untrusted_ports: Option<(Span, Vec<S<String>>)>,
    /// `protected_ipv6 = [...]`.
    pub protected_ipv6: Option<(Span, Vec<S<String>>)>,
    /// `ipv6_source_guard = bool`.
    pub ipv6_source_guard: Option<bool>,
    /// `[[l2.static_arp]]` entries.
    pub static_arp: Option<Vec<L2EntryDecl>>,
    /// `[[l2.static_nd]]` entries.
    pub static_nd: Option<Vec<L2EntryDecl>>,
    /// `[[l2.trusted_router]]` entries.
    pub trusted_router: Option<Vec<L2EntryDecl>>,
    /// `[l2.gateway]` (its `interface` is in `port`).
    pub gateway: Option<L2EntryDecl>,
    /// `[l2.rate_limit]`: (key, value) in document order.
    pub rate_limit: Vec<(S<String>, S<i64>)>,
    /// `[l2.block]`: (protocol key, on) in document order.
    pub block: Vec<(S<String>, bool)>,
}

/// One `{ ip, mac, port }` entry of `[l2]` (`[l2.gateway]` has `interface` in `port`).
#[derive(Clone, Debug)]
pub struct L2EntryDecl {
    /// The entry.
    pub span: Span,
    /// `ip`.
    pub ip: Option<S<String>>,
    /// `mac`.
    pub mac: Option<S<String>>,
    /// `port` (or the gateway's `interface`).
    pub port: Option<S<String>>,
}

/// `[[programs]]`: one program the exec jail confines (per-program egress).
#[derive(Clone, Debug)]
pub struct ProgramDecl {
    /// The `[[programs]]` header.
    pub span: Span,
    /// `name` (becomes the cgroup `<cgroup_root>/<name>`).
    pub name: Option<S<String>>,
    /// `paths = [...]`: absolute executable paths.
    pub paths: Vec<S<String>>,
    /// The key `sha256` and its digests (hex).
    pub sha256: Option<(Span, Vec<S<String>>)>,
    /// `mitigates = [...]`.
    pub mitigates: Vec<S<String>>,
}

/// `[jail]`: settings of the exec jail.
#[derive(Clone, Debug)]
pub struct JailDecl {
    /// The table.
    pub span: Span,
    /// `cgroup_root = "rampart.jail"`.
    pub cgroup_root: Option<S<String>>,
    /// The key `watch_mounts` and its mounts.
    pub watch_mounts: Option<(Span, Vec<S<String>>)>,
}

/// `[defaults]`.
#[derive(Clone, Debug)]
pub struct DefaultsDecl {
    /// The table header.
    pub span: Span,
    /// `ingress = "drop"`.
    pub ingress: Option<S<String>>,
    /// `egress = "accept"`.
    pub egress: Option<S<String>>,
    /// `forward = "drop"`.
    pub forward: Option<S<String>>,
    /// `stateful = true`.
    pub stateful: Option<bool>,
    /// `allow_loopback = true`.
    pub allow_loopback: Option<bool>,
    /// `allow_icmpv6_essential = true`.
    pub allow_icmpv6_essential: Option<bool>,
    /// `never_ban = [...]`: the key's span and the peers (zones, sets, addresses).
    pub never_ban: Option<(Span, Vec<S<String>>)>,
    /// `classifier_fail_open = false`.
    pub classifier_fail_open: Option<bool>,
    /// `classifier_queues = 1`.
    pub classifier_queues: Option<S<i64>>,
}

/// `[zones.NAME]`.
#[derive(Clone, Debug)]
pub struct ZoneDecl {
    /// The name (the key).
    pub name: S<String>,
    /// `interfaces = [...]`.
    pub interfaces: Vec<S<String>>,
    /// `networks = [...]`.
    pub networks: Vec<S<String>>,
    /// `trusted = bool`.
    pub trusted: bool,
    /// `public_facing = bool`.
    pub public_facing: bool,
    /// `description = "..."`.
    pub description: Option<S<String>>,
}

/// `[sets.NAME]`.
#[derive(Clone, Debug)]
pub struct SetDecl {
    /// The name.
    pub name: S<String>,
    /// `elements = [...]`.
    pub elements: Option<Vec<S<String>>>,
    /// `file = "path"`.
    pub file: Option<S<String>>,
    /// `feed = { ... }`.
    pub feed: Option<FeedDecl>,
    /// `except = [...]`.
    pub except: Vec<S<String>>,
    /// `description = "..."`.
    pub description: Option<S<String>>,
    /// The lines of `file`, filled in by the loader (each with its span in the set file).
    pub file_elements: Vec<S<String>>,
}

/// `feed = { url = "...", format = "...", refresh = "1h" }`.
#[derive(Clone, Debug)]
pub struct FeedDecl {
    /// The inline table.
    pub span: Span,
    /// `url`.
    pub url: Option<S<String>>,
    /// `format`.
    pub format: Option<S<String>>,
    /// `refresh`.
    pub refresh: Option<S<String>>,
}

/// `[services.NAME]`.
#[derive(Clone, Debug)]
pub struct ServiceDecl {
    /// The name.
    pub name: S<String>,
    /// `ports = ["tcp/8443", "ssh", ...]`.
    pub ports: Vec<S<String>>,
    /// `description`.
    pub description: Option<S<String>>,
}

/// `[[rules]]`.
#[derive(Clone, Debug)]
pub struct RuleDecl {
    /// The `[[rules]]` header.
    pub span: Span,
    /// `name`.
    pub name: Option<S<String>>,
    /// `direction`.
    pub direction: Option<S<String>>,
    /// `from` (a string or a list).
    pub from: Vec<S<String>>,
    /// `to`.
    pub to: Vec<S<String>>,
    /// `service`.
    pub service: Vec<S<String>>,
    /// `action`.
    pub action: Option<S<String>>,
    /// `log`.
    pub log: bool,
    /// `counter`, with its span.
    pub counter: Option<S<bool>>,
    /// `mitigates`.
    pub mitigates: Vec<S<String>>,
    /// `expires` (TOML date or string).
    pub expires: Option<S<String>>,
    /// `description`.
    pub description: Option<S<String>>,
    /// `state`.
    pub state: Vec<S<String>>,
    /// `family`.
    pub family: Option<S<String>>,
    /// `owner = { uid, gid, cgroup }`.
    pub owner: Option<OwnerDecl>,
    /// `limit = { rate, burst, per_source }`.
    pub limit: Option<LimitDecl>,
    /// `conn_limit`.
    pub conn_limit: Option<S<i64>>,
    /// `synproxy = true` or `synproxy = { mss, wscale, timestamp, sack_perm }`.
    pub synproxy: Option<SynproxyDecl>,
    /// `ban = "10m"` or `ban = { timeout = "10m" }`.
    pub ban: Option<BanDecl>,
    /// `app = ["ssh", ...]` (key span, protocol names).
    pub app: Option<(Span, Vec<S<String>>)>,
    /// `app_not = ["dns", ...]` (key span, protocol names).
    pub app_not: Option<(Span, Vec<S<String>>)>,
}

/// `synproxy = true` or `synproxy = { mss = 1460, wscale = 7, timestamp = true, sack_perm = true }`.
#[derive(Clone, Debug)]
pub struct SynproxyDecl {
    /// The key `synproxy`.
    pub span: Span,
    /// `false` when written `synproxy = false` (same as leaving it out).
    pub enabled: bool,
    /// `mss`.
    pub mss: Option<S<i64>>,
    /// `wscale`.
    pub wscale: Option<S<i64>>,
    /// `timestamp`.
    pub timestamp: Option<bool>,
    /// `sack_perm`.
    pub sack_perm: Option<bool>,
}

/// `ban = "10m"` or `ban = { timeout = "10m" }`.
#[derive(Clone, Debug)]
pub struct BanDecl {
    /// The key `ban`.
    pub span: Span,
    /// The timeout text (`None`: the table has no `timeout`).
    pub timeout: Option<S<String>>,
}

/// `owner = { uid = [...], gid = [...], cgroup = [...] }`.
#[derive(Clone, Debug)]
pub struct OwnerDecl {
    /// The key `owner`.
    pub span: Span,
    /// Uids.
    pub uid: Vec<S<i64>>,
    /// Gids.
    pub gid: Vec<S<i64>>,
    /// cgroup paths.
    pub cgroup: Vec<S<String>>,
    /// Program names (`[[programs]]`), resolved to their jail cgroups.
    pub program: Vec<S<String>>,
}

/// `limit = { rate = "10/minute", burst = 20, per_source = true }`.
#[derive(Clone, Debug)]
pub struct LimitDecl {
    /// The key `limit`.
    pub span: Span,
    /// `rate`.
    pub rate: Option<S<String>>,
    /// `burst`.
    pub burst: Option<S<i64>>,
    /// `per_source`.
    pub per_source: bool,
}

/// `[profiles.NAME]`: parameters are checked by the profile itself.
#[derive(Clone, Debug)]
pub struct ProfileDecl {
    /// The profile name.
    pub name: S<String>,
    /// Its parameters, unchecked.
    pub params: Vec<Entry>,
}

/// `[components]`.
#[derive(Clone, Debug)]
pub struct ComponentsDecl {
    /// The header.
    pub span: Span,
    /// `(name, enabled)` in document order.
    pub enabled: Vec<(S<String>, bool)>,
}

/// Component keys the language knows.
pub const COMPONENT_KEYS: &[&str] = &[
    "dns_filter",
    "waf",
    "egress_proxy",
    "l2_guard",
    "feeds",
    "protocol_classifier",
];

/// Reads the keys of one table, remembering which were used, so the rest can be reported.
pub(crate) struct Fields<'a> {
    entries: &'a [Entry],
    used: Vec<bool>,
}

impl<'a> Fields<'a> {
    pub fn new(entries: &'a [Entry]) -> Self {
        Self {
            entries,
            used: vec![false; entries.len()],
        }
    }

    pub fn take(&mut self, key: &str) -> Option<&'a Entry> {
        let i = self.entries.iter().position(|e| e.key == key)?;
        self.used[i] = true;
        Some(&self.entries[i])
    }

    /// Report every key not taken as unknown (E0002), suggesting the closest allowed key.
    pub fn finish(self, what: &str, allowed: &[&str], diags: &mut Diags) {
        for (e, used) in self.entries.iter().zip(self.used) {
            if !used {
                diags.push(
                    Report::error("E0002", format!("unknown key `{}` in {what}", e.key))
                        .label(e.key_span, "not part of the policy language")
                        .hint_opt(
                            did_you_mean(&e.key, allowed.iter().copied())
                                .or_else(|| Some(format!("allowed keys: {}", allowed.join(", ")))),
                        ),
                );
            }
        }
    }
}

fn type_error(node: &Node, key: &str, expected: &str, diags: &mut Diags) {
    diags.push(
        Report::error(
            "E0003",
            format!(
                "`{key}` must be {expected}, found {}",
                node.kind.type_name()
            ),
        )
        .label(node.span, format!("expected {expected}")),
    );
}

pub(crate) fn as_str(e: &Entry, diags: &mut Diags) -> Option<S<String>> {
    match &e.value.kind {
        NodeKind::Str(s) => Some(S::new(s.clone(), e.value.span)),
        _ => {
            type_error(&e.value, &e.key, "a string", diags);
            None
        }
    }
}

pub(crate) fn as_bool(e: &Entry, diags: &mut Diags) -> Option<bool> {
    match &e.value.kind {
        NodeKind::Bool(b) => Some(*b),
        _ => {
            type_error(&e.value, &e.key, "a boolean", diags);
            None
        }
    }
}

pub(crate) fn as_int(e: &Entry, diags: &mut Diags) -> Option<S<i64>> {
    match &e.value.kind {
        NodeKind::Int(i) => Some(S::new(*i, e.value.span)),
        _ => {
            type_error(&e.value, &e.key, "an integer", diags);
            None
        }
    }
}

pub(crate) fn as_table<'a>(e: &'a Entry, diags: &mut Diags) -> Option<&'a [Entry]> {
    match &e.value.kind {
        NodeKind::Table(t) => Some(t),
        _ => {
            type_error(&e.value, &e.key, "a table", diags);
            None
        }
    }
}

fn too_many(e: &Entry, diags: &mut Diags) {
    diags.push(
        Report::error(
            "E0005",
            format!("`{}` has more than {MAX_LIST_ITEMS} entries", e.key),
        )
        .label(e.value.span, "list too long"),
    );
}

/// A string or an array of strings.
pub(crate) fn as_str_list(e: &Entry, diags: &mut Diags) -> Vec<S<String>> {
    match &e.value.kind {
        NodeKind::Str(s) => vec![S::new(s.clone(), e.value.span)],
        NodeKind::Array(items) => {
            if items.len() > MAX_LIST_ITEMS {
                too_many(e, diags);
                return Vec::new();
            }
            let mut out = Vec::new();
            for item in items {
                match &item.kind {
                    NodeKind::Str(s) => out.push(S::new(s.clone(), item.span)),
                    _ => type_error(item, &e.key, "a string", diags),
                }
            }
            out
        }
        _ => {
            type_error(&e.value, &e.key, "a string or an array of strings", diags);
            Vec::new()
        }
    }
}

/// An integer or an array of integers.
pub(crate) fn as_int_list(e: &Entry, diags: &mut Diags) -> Vec<S<i64>> {
    match &e.value.kind {
        NodeKind::Int(i) => vec![S::new(*i, e.value.span)],
        NodeKind::Array(items) => {
            if items.len() > MAX_LIST_ITEMS {
                too_many(e, diags);
                return Vec::new();
            }
            let mut out = Vec::new();
            for item in items {
                match &item.kind {
                    NodeKind::Int(i) => out.push(S::new(*i, item.span)),
                    _ => type_error(item, &e.key, "an integer", diags),
                }
            }
            out
        }
        _ => {
            type_error(
                &e.value,
                &e.key,
                "an integer or an array of integers",
                diags,
            );
            Vec::new()
        }
    }
}

/// A TOML date (`2027-01-31`) or a string holding one; the text is checked later.
fn as_date_text(e: &Entry, diags: &mut Diags) -> Option<S<String>> {
    match &e.value.kind {
        NodeKind::Datetime(s) | NodeKind::Str(s) => Some(S::new(s.clone(), e.value.span)),
        _ => {
            type_error(&e.value, &e.key, "a date (2027-01-31)", diags);
            None
        }
    }
}

const TOP_KEYS: &[&str] = &[
    "include",
    "defaults",
    "zones",
    "sets",
    "services",
    "rules",
    "profiles",
    "components",
    "programs",
    "jail",
    "l2",
];

/// Build the typed tree of one file from its generic tree.
pub(crate) fn file_from_node(root: &Node, diags: &mut Diags) -> File {
    let mut file = File::default();
    let NodeKind::Table(entries) = &root.kind else {
        return file;
    };
    let mut f = Fields::new(entries);
    if let Some(e) = f.take("include") {
        file.includes = as_str_list(e, diags);
    }
    if let Some(e) = f.take("defaults") {
        if let Some(t) = as_table(e, diags) {
            file.defaults = Some(defaults(e.value.span, t, diags));
        }
    }
    if let Some(e) = f.take("zones") {
        for (name, span, t) in named_tables(e, diags) {
            file.zones.push(zone(S::new(name, span), t, diags));
        }
    }
    if let Some(e) = f.take("sets") {
        for (name, span, t) in named_tables(e, diags) {
            file.sets.push(set(S::new(name, span), t, diags));
        }
    }
    if let Some(e) = f.take("services") {
        for (name, span, t) in named_tables(e, diags) {
            file.services.push(service(S::new(name, span), t, diags));
        }
    }
    if let Some(e) = f.take("rules") {
        match &e.value.kind {
            NodeKind::Array(items) => {
                for item in items {
                    match &item.kind {
                        NodeKind::Table(t) => file.rules.push(rule(item.span, t, diags)),
                        _ => type_error(item, "rules", "a table ([[rules]])", diags),
                    }
                }
            }
            _ => type_error(&e.value, "rules", "an array of tables ([[rules]])", diags),
        }
    }
    if let Some(e) = f.take("profiles") {
        for (name, span, t) in named_tables(e, diags) {
            file.profiles.push(ProfileDecl {
                name: S::new(name, span),
                params: t.to_vec(),
            });
        }
    }
    if let Some(e) = f.take("components") {
        if let Some(t) = as_table(e, diags) {
            let mut c = ComponentsDecl {
                span: e.value.span,
                enabled: Vec::new(),
            };
            let mut cf = Fields::new(t);
            // Document order, so the IR lists components as written.
            for entry in t {
                if !COMPONENT_KEYS.contains(&entry.key.as_str()) {
                    continue;
                }
                if let Some(ce) = cf.take(&entry.key) {
                    if let Some(b) = as_bool(ce, diags) {
                        c.enabled.push((S::new(entry.key.clone(), ce.key_span), b));
                    }
                }
            }
            cf.finish("[components]", COMPONENT_KEYS, diags);
            file.components = Some(c);
        }
    }
    if let Some(e) = f.take("programs") {
        match &e.value.kind {
            NodeKind::Array(items) => {
                if items.len() > MAX_LIST_ITEMS {
                    too_many(e, diags);
                } else {
                    for item in items {
                        match &item.kind {
                            NodeKind::Table(t) => file.programs.push(program(item.span, t, diags)),
                            _ => type_error(item, "programs", "a table ([[programs]])", diags),
                        }
                    }
                }
            }
            _ => type_error(
                &e.value,
                "programs",
                "an array of tables ([[programs]])",
                diags,
            ),
        }
    }
    if let Some(e) = f.take("jail") {
        if let Some(t) = as_table(e, diags) {
            let mut jf = Fields::new(t);
            file.jail = Some(JailDecl {
                span: e.value.span,
                cgroup_root: opt_str(&mut jf, "cgroup_root", diags),
                watch_mounts: jf
                    .take("watch_mounts")
                    .map(|w| (w.key_span, as_str_list(w, diags))),
            });
            jf.finish("[jail]", JAIL_KEYS, diags);
        }
    }
    if let Some(e) = f.take("l2") {
        if let Some(t) = as_table(e, diags) {
            file.l2 = Some(l2(e.value.span, t, diags));
        }
    }
    f.finish("the policy file (top level)", TOP_KEYS, diags);
    file
}

/// Keys of `[l2]`.
pub const L2_KEYS: &[&str] = &[
    "bridge",
    "trusted_ports",
    "untrusted_ports",
    "protected_ipv6",
    "ipv6_source_guard",
    "static_arp",
    "static_nd",
    "trusted_router",
    "gateway",
    "rate_limit",
    "block",
];
/// Keys of `[l2.rate_limit]`.
pub const L2_RATE_KEYS: &[&str] = &[
    "dhcp_per_second",
    "dhcp_burst",
    "arp_per_second",
    "arp_burst",
];
/// Keys of `[l2.block]`.
pub const L2_BLOCK_KEYS: &[&str] = &["llmnr", "nbns", "mdns"];

fn l2(span: Span, t: &[Entry], diags: &mut Diags) -> L2Decl {
    let mut f = Fields::new(t);
    let keyed = |f: &mut Fields<'_>, key: &str, diags: &mut Diags| {
        f.take(key).map(|e| (e.key_span, as_str_list(e, diags)))
    };
    let entries = |f: &mut Fields<'_>, key: &str, keys: &[&str], diags: &mut Diags| {
        let e = f.take(key)?;
        let NodeKind::Array(items) = &e.value.kind else {
            type_error(
                &e.value,
                key,
                &format!("an array of tables ([[l2.{key}]])"),
                diags,
            );
            return None;
        };
        if items.len() > MAX_LIST_ITEMS {
            too_many(e, diags);
            return None;
        }
        let mut out = Vec::new();
        for item in items {
            match &item.kind {
                NodeKind::Table(t) => out.push(l2_entry(item.span, t, key, keys, diags)),
                _ => type_error(item, key, &format!("a table ([[l2.{key}]])"), diags),
            }
        }
        Some(out)
    };
    let d = L2Decl {
        span,
        bridge: opt_str(&mut f, "bridge", diags),
        trusted_ports: keyed(&mut f, "trusted_ports", diags),
        untrusted_ports: keyed(&mut f, "untrusted_ports", diags),
        protected_ipv6: keyed(&mut f, "protected_ipv6", diags),
        ipv6_source_guard: opt_bool(&mut f, "ipv6_source_guard", diags),
        static_arp: entries(&mut f, "static_arp", &["ip", "mac", "port"], diags),
        static_nd: entries(&mut f, "static_nd", &["ip", "mac", "port"], diags),
        trusted_router: entries(&mut f, "trusted_router", &["mac", "port"], diags),
        gateway: f.take("gateway").and_then(|e| {
            let t = as_table(e, diags)?;
            Some(l2_entry(
                e.key_span,
                t,
                "gateway",
                &["ip", "mac", "interface"],
                diags,
            ))
        }),
        rate_limit: f
            .take("rate_limit")
            .and_then(|e| {
                let t = as_table(e, diags)?;
                let mut rf = Fields::new(t);
                let mut out = Vec::new();
                for entry in t {
                    if !L2_RATE_KEYS.contains(&entry.key.as_str()) {
                        continue;
                    }
                    if let Some(x) = rf.take(&entry.key).and_then(|x| as_int(x, diags)) {
                        out.push((S::new(entry.key.clone(), entry.key_span), x));
                    }
                }
                rf.finish("[l2.rate_limit]", L2_RATE_KEYS, diags);
                Some(out)
            })
            .unwrap_or_default(),
        block: f
            .take("block")
            .and_then(|e| {
                let t = as_table(e, diags)?;
                let mut bf = Fields::new(t);
                let mut out = Vec::new();
                for entry in t {
                    if !L2_BLOCK_KEYS.contains(&entry.key.as_str()) {
                        continue;
                    }
                    if let Some(b) = bf.take(&entry.key).and_then(|x| as_bool(x, diags)) {
                        out.push((S::new(entry.key.clone(), entry.key_span), b));
                    }
                }
                bf.finish("[l2.block]", L2_BLOCK_KEYS, diags);
                Some(out)
            })
            .unwrap_or_default(),
    };
    f.finish("[l2]", L2_KEYS, diags);
    d
}

fn l2_entry(span: Span, t: &[Entry], what: &str, keys: &[&str], diags: &mut Diags) -> L2EntryDecl {
    let mut f = Fields::new(t);
    let port_key = if keys.contains(&"interface") {
        "interface"
    } else {
        "port"
    };
    let d = L2EntryDecl {
        span,
        ip: if keys.contains(&"ip") {
            opt_str(&mut f, "ip", diags)
        } else {
            None
        },
        mac: opt_str(&mut f, "mac", diags),
        port: opt_str(&mut f, port_key, diags),
    };
    f.finish(&format!("[l2.{what}]"), keys, diags);
    d
}

/// Keys of `[jail]`.
pub const JAIL_KEYS: &[&str] = &["cgroup_root", "watch_mounts"];
/// Keys of a `[[programs]]` table.
pub const PROGRAM_KEYS: &[&str] = &["name", "paths", "sha256", "mitigates"];

fn program(span: Span, t: &[Entry], diags: &mut Diags) -> ProgramDecl {
    let mut f = Fields::new(t);
    let p = ProgramDecl {
        span,
        name: opt_str(&mut f, "name", diags),
        paths: str_list(&mut f, "paths", diags),
        sha256: f
            .take("sha256")
            .map(|e| (e.key_span, as_str_list(e, diags))),
        mitigates: str_list(&mut f, "mitigates", diags),
    };
    f.finish("a program", PROGRAM_KEYS, diags);
    p
}

/// The sub-tables of `[zones]`, `[sets]`, ...: (name, name span, entries).
fn named_tables<'a>(e: &'a Entry, diags: &mut Diags) -> Vec<(String, Span, &'a [Entry])> {
    let Some(t) = as_table(e, diags) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for sub in t {
        match &sub.value.kind {
            NodeKind::Table(inner) => out.push((sub.key.clone(), sub.key_span, inner.as_slice())),
            _ => type_error(
                &sub.value,
                &format!("{}.{}", e.key, sub.key),
                &format!("a table ([{}.{}])", e.key, sub.key),
                diags,
            ),
        }
    }
    out
}

fn opt_str(f: &mut Fields<'_>, key: &str, diags: &mut Diags) -> Option<S<String>> {
    f.take(key).and_then(|e| as_str(e, diags))
}

fn opt_bool(f: &mut Fields<'_>, key: &str, diags: &mut Diags) -> Option<bool> {
    f.take(key).and_then(|e| as_bool(e, diags))
}

fn str_list(f: &mut Fields<'_>, key: &str, diags: &mut Diags) -> Vec<S<String>> {
    f.take(key)
        .map(|e| as_str_list(e, diags))
        .unwrap_or_default()
}

const DEFAULTS_KEYS: &[&str] = &[
    "ingress",
    "egress",
    "forward",
    "stateful",
    "allow_loopback",
    "allow_icmpv6_essential",
    "never_ban",
    "classifier_fail_open",
    "classifier_queues",
];

fn defaults(span: Span, t: &[Entry], diags: &mut Diags) -> DefaultsDecl {
    let mut f = Fields::new(t);
    let d = DefaultsDecl {
        span,
        ingress: opt_str(&mut f, "ingress", diags),
        egress: opt_str(&mut f, "egress", diags),
        forward: opt_str(&mut f, "forward", diags),
        stateful: opt_bool(&mut f, "stateful", diags),
        allow_loopback: opt_bool(&mut f, "allow_loopback", diags),
        allow_icmpv6_essential: opt_bool(&mut f, "allow_icmpv6_essential", diags),
        never_ban: f
            .take("never_ban")
            .map(|e| (e.key_span, as_str_list(e, diags))),
        classifier_fail_open: opt_bool(&mut f, "classifier_fail_open", diags),
        classifier_queues: f.take("classifier_queues").and_then(|e| as_int(e, diags)),
    };
    f.finish("[defaults]", DEFAULTS_KEYS, diags);
    d
}

const ZONE_KEYS: &[&str] = &[
    "interfaces",
    "networks",
    "trusted",
    "public_facing",
    "description",
];

fn zone(name: S<String>, t: &[Entry], diags: &mut Diags) -> ZoneDecl {
    let mut f = Fields::new(t);
    let z = ZoneDecl {
        interfaces: str_list(&mut f, "interfaces", diags),
        networks: str_list(&mut f, "networks", diags),
        trusted: opt_bool(&mut f, "trusted", diags).unwrap_or(false),
        public_facing: opt_bool(&mut f, "public_facing", diags).unwrap_or(false),
        description: opt_str(&mut f, "description", diags),
        name,
    };
    f.finish(&format!("zone `{}`", z.name.v), ZONE_KEYS, diags);
    z
}

const SET_KEYS: &[&str] = &["elements", "file", "feed", "except", "description"];
const FEED_KEYS: &[&str] = &["url", "format", "refresh"];

fn set(name: S<String>, t: &[Entry], diags: &mut Diags) -> SetDecl {
    let mut f = Fields::new(t);
    let elements = f.take("elements").map(|e| as_str_list(e, diags));
    let file = opt_str(&mut f, "file", diags);
    let feed = f.take("feed").and_then(|e| {
        let t = as_table(e, diags)?;
        let mut ff = Fields::new(t);
        let feed = FeedDecl {
            span: e.key_span,
            url: opt_str(&mut ff, "url", diags),
            format: opt_str(&mut ff, "format", diags),
            refresh: opt_str(&mut ff, "refresh", diags),
        };
        ff.finish("feed", FEED_KEYS, diags);
        Some(feed)
    });
    let s = SetDecl {
        elements,
        file,
        feed,
        except: str_list(&mut f, "except", diags),
        description: opt_str(&mut f, "description", diags),
        file_elements: Vec::new(),
        name,
    };
    f.finish(&format!("set `{}`", s.name.v), SET_KEYS, diags);
    s
}

const SERVICE_KEYS: &[&str] = &["ports", "description"];

fn service(name: S<String>, t: &[Entry], diags: &mut Diags) -> ServiceDecl {
    let mut f = Fields::new(t);
    let s = ServiceDecl {
        ports: str_list(&mut f, "ports", diags),
        description: opt_str(&mut f, "description", diags),
        name,
    };
    f.finish(&format!("service `{}`", s.name.v), SERVICE_KEYS, diags);
    s
}

/// Keys of a `[[rules]]` table.
pub const RULE_KEYS: &[&str] = &[
    "name",
    "direction",
    "from",
    "to",
    "service",
    "action",
    "log",
    "counter",
    "mitigates",
    "expires",
    "description",
    "state",
    "family",
    "owner",
    "limit",
    "conn_limit",
    "synproxy",
    "ban",
    "app",
    "app_not",
];
const OWNER_KEYS: &[&str] = &["uid", "gid", "cgroup", "program"];
const LIMIT_KEYS: &[&str] = &["rate", "burst", "per_source"];
const SYNPROXY_KEYS: &[&str] = &["mss", "wscale", "timestamp", "sack_perm"];
const BAN_KEYS: &[&str] = &["timeout"];

fn synproxy(e: &Entry, diags: &mut Diags) -> Option<SynproxyDecl> {
    let mut d = SynproxyDecl {
        span: e.key_span,
        enabled: true,
        mss: None,
        wscale: None,
        timestamp: None,
        sack_perm: None,
    };
    match &e.value.kind {
        NodeKind::Bool(b) => d.enabled = *b,
        NodeKind::Table(t) => {
            let mut sf = Fields::new(t);
            d.mss = sf.take("mss").and_then(|x| as_int(x, diags));
            d.wscale = sf.take("wscale").and_then(|x| as_int(x, diags));
            d.timestamp = opt_bool(&mut sf, "timestamp", diags);
            d.sack_perm = opt_bool(&mut sf, "sack_perm", diags);
            sf.finish("synproxy", SYNPROXY_KEYS, diags);
        }
        _ => {
            type_error(
                &e.value,
                "synproxy",
                "a boolean or a table ({ mss, wscale, timestamp, sack_perm })",
                diags,
            );
            return None;
        }
    }
    Some(d)
}

fn ban(e: &Entry, diags: &mut Diags) -> Option<BanDecl> {
    match &e.value.kind {
        NodeKind::Str(s) => Some(BanDecl {
            span: e.key_span,
            timeout: Some(S::new(s.clone(), e.value.span)),
        }),
        NodeKind::Table(t) => {
            let mut bf = Fields::new(t);
            let timeout = opt_str(&mut bf, "timeout", diags);
            bf.finish("ban", BAN_KEYS, diags);
            Some(BanDecl {
                span: e.key_span,
                timeout,
            })
        }
        _ => {
            type_error(
                &e.value,
                "ban",
                "a duration string (\"10m\") or a table ({ timeout = \"10m\" })",
                diags,
            );
            None
        }
    }
}

fn rule(span: Span, t: &[Entry], diags: &mut Diags) -> RuleDecl {
    let mut f = Fields::new(t);
    let owner = f.take("owner").and_then(|e| owner(e, diags));
    let limit = f.take("limit").and_then(|e| {
        let t = as_table(e, diags)?;
        let mut lf = Fields::new(t);
        let l = LimitDecl {
            span: e.key_span,
            rate: opt_str(&mut lf, "rate", diags),
            burst: lf.take("burst").and_then(|x| as_int(x, diags)),
            per_source: opt_bool(&mut lf, "per_source", diags).unwrap_or(false),
        };
        lf.finish("limit", LIMIT_KEYS, diags);
        Some(l)
    });
    let r = RuleDecl {
        span,
        name: opt_str(&mut f, "name", diags),
        direction: opt_str(&mut f, "direction", diags),
        from: str_list(&mut f, "from", diags),
        to: str_list(&mut f, "to", diags),
        service: str_list(&mut f, "service", diags),
        action: opt_str(&mut f, "action", diags),
        log: opt_bool(&mut f, "log", diags).unwrap_or(false),
        counter: f
            .take("counter")
            .and_then(|e| as_bool(e, diags).map(|b| S::new(b, e.key_span))),
        mitigates: str_list(&mut f, "mitigates", diags),
        expires: f.take("expires").and_then(|e| as_date_text(e, diags)),
        description: opt_str(&mut f, "description", diags),
        state: str_list(&mut f, "state", diags),
        family: opt_str(&mut f, "family", diags),
        owner,
        limit,
        conn_limit: f.take("conn_limit").and_then(|e| as_int(e, diags)),
        synproxy: f.take("synproxy").and_then(|e| synproxy(e, diags)),
        ban: f.take("ban").and_then(|e| ban(e, diags)),
        app: f.take("app").map(|e| (e.key_span, as_str_list(e, diags))),
        app_not: f
            .take("app_not")
            .map(|e| (e.key_span, as_str_list(e, diags))),
    };
    f.finish("a rule", RULE_KEYS, diags);
    r
}

/// Parse an `owner = {...}` table (also used by profile parameters).
pub(crate) fn owner(e: &Entry, diags: &mut Diags) -> Option<OwnerDecl> {
    let t = as_table(e, diags)?;
    let mut of = Fields::new(t);
    let o = OwnerDecl {
        span: e.key_span,
        uid: of
            .take("uid")
            .map(|x| as_int_list(x, diags))
            .unwrap_or_default(),
        gid: of
            .take("gid")
            .map(|x| as_int_list(x, diags))
            .unwrap_or_default(),
        cgroup: str_list(&mut of, "cgroup", diags),
        program: str_list(&mut of, "program", diags),
    };
    of.finish("owner", OWNER_KEYS, diags);
    Some(o)
}
