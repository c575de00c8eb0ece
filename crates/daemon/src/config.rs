//! The run configuration: which policy, where state goes, which components run. Pure.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::DaemonError;

/// Most components one daemon supervises.
pub const MAX_COMPONENTS: usize = 32;
/// Largest `store.max_rows`.
pub const MAX_STORE_ROWS: u64 = 100_000_000;

/// A component the daemon can run (each is `rampart <subcommand>`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, serde::Serialize,
)]
#[serde(rename_all = "snake_case")]
pub enum ComponentKind {
    /// `rampart dns`: the filtering DNS forwarder.
    Dns,
    /// `rampart egress`: the egress proxy.
    Egress,
    /// `rampart waf`: the WAF reverse proxy.
    Waf,
    /// `rampart guard`: the L2 guard.
    Guard,
    /// `rampart jail`: per-program egress.
    Jail,
    /// `rampart classify`: the NFQUEUE protocol classifier (reads the policy).
    Classify,
    /// `rampart log`: kernel drop logs (NFLOG) as events (reads the policy).
    Log,
    /// `rampart feeds update`: threat-intel feed refresh into the kernel sets, run every
    /// `interval_s` and after each reload (reads the policy).
    Feeds,
}

impl ComponentKind {
    /// The subcommand name.
    pub fn as_str(self) -> &'static str {
        match self {
            ComponentKind::Dns => "dns",
            ComponentKind::Egress => "egress",
            ComponentKind::Waf => "waf",
            ComponentKind::Guard => "guard",
            ComponentKind::Jail => "jail",
            ComponentKind::Classify => "classify",
            ComponentKind::Log => "log",
            ComponentKind::Feeds => "feeds",
        }
    }

    /// The policy's `[components]` entry this component serves (jail and log have none: the
    /// jail is named by rules' owners, the log reader by rules' `log`).
    pub fn serves(self) -> Option<rampart_ir::ComponentKind> {
        use rampart_ir::ComponentKind as Policy;
        match self {
            ComponentKind::Dns => Some(Policy::DnsFilter),
            ComponentKind::Egress => Some(Policy::EgressProxy),
            ComponentKind::Waf => Some(Policy::Waf),
            ComponentKind::Guard => Some(Policy::L2Guard),
            ComponentKind::Classify => Some(Policy::ProtocolClassifier),
            ComponentKind::Feeds => Some(Policy::Feeds),
            ComponentKind::Jail | ComponentKind::Log => None,
        }
    }

    /// Whether the component reads its own configuration file (`config` key required).
    pub fn needs_config(self) -> bool {
        !matches!(
            self,
            ComponentKind::Classify | ComponentKind::Log | ComponentKind::Feeds
        )
    }

    /// Whether the component prints a JSON line on stdout once it is serving (the daemon's
    /// readiness signal); the others count as ready while their process runs (`log` binds its
    /// NFLOG group before reading and exits if it cannot).
    pub fn prints_ready_line(self) -> bool {
        !matches!(self, ComponentKind::Log | ComponentKind::Feeds)
    }

    /// The Linux capabilities the component keeps (numbers from `linux/capability.h`); every
    /// other capability is dropped from its bounding set before it runs, so a compromised DNS
    /// forwarder cannot, say, rewrite the ruleset or trace processes.
    pub fn capabilities(self) -> &'static [u32] {
        const DAC_READ_SEARCH: u32 = 2;
        const NET_BIND_SERVICE: u32 = 10;
        const NET_ADMIN: u32 = 12;
        const NET_RAW: u32 = 13;
        const SYS_PTRACE: u32 = 19;
        const SYS_ADMIN: u32 = 21;
        match self {
            // Sockets on privileged ports; nothing else.
            ComponentKind::Dns | ComponentKind::Egress | ComponentKind::Waf => &[NET_BIND_SERVICE],
            // Its own bridge-family table (nft) and packet sockets.
            ComponentKind::Guard => &[NET_ADMIN, NET_RAW],
            // fanotify (SYS_ADMIN), other users' /proc/PID/exe (SYS_PTRACE, DAC_READ_SEARCH).
            ComponentKind::Jail => &[SYS_ADMIN, SYS_PTRACE, DAC_READ_SEARCH],
            // NFQUEUE / NFLOG netlink and conntrack marks.
            ComponentKind::Classify | ComponentKind::Log => &[NET_ADMIN],
            // Writing the kernel sets; downloads use ordinary sockets.
            ComponentKind::Feeds => &[NET_ADMIN],
        }
    }

    /// Whether the component is a job that runs to completion on a schedule rather than a
    /// server that runs until stopped.
    pub fn is_periodic(self) -> bool {
        self == ComponentKind::Feeds
    }

    /// Whether SIGHUP makes the component reload in place even when its ready line does not
    /// say so (components that announce `"reload_in_place": true` in their first JSON line are
    /// reloaded with SIGHUP whatever their kind; the others are restarted on reload).
    pub fn reloads_on_hangup(self) -> bool {
        matches!(
            self,
            ComponentKind::Dns | ComponentKind::Classify | ComponentKind::Egress
        )
    }
}

/// A user or group: a name looked up in the system databases when the component starts, or a
/// numeric id.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum Account {
    /// A numeric uid or gid.
    Id(u32),
    /// A name (`/etc/passwd`, `/etc/group` or NSS).
    Name(String),
}

impl Account {
    fn check(&self, key: &str, component: &str) -> Result<(), DaemonError> {
        match self {
            // (uid_t)-1 means "unchanged" to setresuid: never a real account.
            Account::Id(u32::MAX) => Err(err(format!(
                "component `{component}`: {key} 4294967295 is not a valid id"
            ))),
            Account::Id(_) => Ok(()),
            Account::Name(name) => {
                let valid = !name.is_empty()
                    && name.len() <= 32
                    && !name.starts_with('-')
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.');
                if valid {
                    Ok(())
                } else {
                    Err(err(format!(
                        "component `{component}`: {key} `{name}`: 1-32 of letters, digits, '_', '-', '.'"
                    )))
                }
            }
        }
    }
}

impl std::fmt::Display for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Account::Id(id) => write!(f, "{id}"),
            Account::Name(name) => f.write_str(name),
        }
    }
}

/// What happens to the traffic a component handles while it is down (`on_down`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDown {
    /// Nothing answers for it: its traffic fails until it is back.
    #[default]
    Closed,
    /// Its traffic bypasses it, unfiltered (dns: queries go to its upstream).
    Open,
}

/// One supervised component.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ComponentConfig {
    /// Unique name (default: the kind).
    pub name: String,
    /// What it is.
    pub kind: ComponentKind,
    /// Its configuration file (absolute), for kinds that have one.
    pub config: Option<PathBuf>,
    /// For periodic jobs: seconds between successful runs.
    pub interval_s: Option<u32>,
    /// Run as this user (default: the daemon's, root), keeping only the component's
    /// capabilities.
    pub user: Option<Account>,
    /// Run with this group (default: the user's primary group).
    pub group: Option<Account>,
    /// While it is down: fail closed (default) or open.
    pub on_down: OnDown,
    /// `jail` and `guard` only: take the policy-level settings from the run's policy
    /// (`rampart jail --policy`: its `[[programs]]` and `[jail]`, no `config`; `rampart guard
    /// --policy`: its `[l2]`, with `config` as the runtime part).
    pub from_policy: bool,
}

/// The validated run configuration. Relative paths are resolved against the configuration
/// file's directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunConfig {
    /// The policy (TOML) to apply and hand to components that read it.
    pub policy: PathBuf,
    /// State: the nft apply state, the events database, the components' event files, the
    /// control socket.
    pub state_dir: PathBuf,
    /// nft table Rampart owns.
    pub table: String,
    /// Apply the policy to the kernel (off: components only, e.g. on a host whose firewall is
    /// managed elsewhere).
    pub apply: bool,
    /// Apply with a confirm window: each apply (at start and on reload) is rolled back after
    /// this many seconds unless `rampart confirm` reaches the daemon first.
    pub confirm_s: Option<u32>,
    /// All events, one JSON line each (EVE-style fields).
    pub events_jsonl: PathBuf,
    /// Most rows kept in the events database.
    pub store_max_rows: u64,
    /// Oldest events kept, in days.
    pub store_max_age_days: u32,
    /// The HTTP listener (metrics, API, dashboard), when enabled.
    pub http: Option<HttpConfig>,
    /// Components, in start order.
    pub components: Vec<ComponentConfig>,
    /// Components the policy enables that run outside this daemon (another host, another
    /// service manager): named as in the policy's `[components]`.
    pub elsewhere: BTreeSet<rampart_ir::ComponentKind>,
}

/// The admin HTTP listener.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    /// Address; must be loopback unless `allow_non_loopback`.
    pub listen: SocketAddr,
    /// File holding the bearer token (first line).
    pub token_file: PathBuf,
}

impl RunConfig {
    /// The control socket path.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir.join("control.sock")
    }

    /// The events database path.
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("events.sqlite")
    }

    /// Where component `name` writes its events.
    pub fn component_events(&self, name: &str) -> PathBuf {
        self.state_dir.join("events").join(format!("{name}.jsonl"))
    }

    /// The components `policy` enables that neither run here nor are declared `elsewhere`,
    /// each with where the policy enables it. Why: coverage counts on them (a technique
    /// "needs a component" until it runs), so a deployment that silently lacks one would claim
    /// protection nothing provides.
    pub fn unrun_components<'p>(
        &self,
        policy: &'p rampart_ir::Policy,
    ) -> Vec<&'p rampart_ir::Component> {
        policy
            .components
            .iter()
            .filter(|c| {
                !self.elsewhere.contains(&c.kind)
                    && !self
                        .components
                        .iter()
                        .any(|r| r.kind.serves() == Some(c.kind))
            })
            .collect()
    }

    /// [`RunConfig::unrun_components`] as an error naming each component, where the policy
    /// enables it, and the two ways out.
    pub fn check_components(&self, policy: &rampart_ir::Policy) -> Result<(), DaemonError> {
        let unrun = self.unrun_components(policy);
        if unrun.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = unrun
            .iter()
            .map(|c| format!("`{}` ({}:{})", c.kind.as_str(), c.loc.file, c.loc.line))
            .collect();
        Err(DaemonError::ComponentsNotRun(format!(
            "the policy enables {} but the run configuration runs no component for it: add a [[component]] of that kind, or list it in `elsewhere` when it runs outside this daemon",
            list.join(", ")
        )))
    }

    /// Parse and validate `text`, read from a file in `base_dir`.
    pub fn from_toml(text: &str, base_dir: &Path) -> Result<Self, DaemonError> {
        let raw: Raw = toml::from_str(text).map_err(|e| DaemonError::Config(e.to_string()))?;
        raw.validate(base_dir)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    policy: PathBuf,
    state_dir: Option<PathBuf>,
    table: Option<String>,
    apply: Option<bool>,
    confirm_s: Option<u32>,
    events_jsonl: Option<PathBuf>,
    #[serde(default)]
    store: RawStore,
    http: Option<RawHttp>,
    #[serde(default)]
    component: Vec<RawComponent>,
    #[serde(default)]
    elsewhere: Vec<rampart_ir::ComponentKind>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawStore {
    max_rows: Option<u64>,
    max_age_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
    token_file: PathBuf,
    #[serde(default)]
    allow_non_loopback: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    kind: ComponentKind,
    name: Option<String>,
    config: Option<PathBuf>,
    interval_s: Option<u32>,
    user: Option<Account>,
    group: Option<Account>,
    on_down: Option<OnDown>,
    #[serde(default)]
    from_policy: bool,
}

fn err(msg: impl Into<String>) -> DaemonError {
    DaemonError::Config(msg.into())
}

impl Raw {
    fn validate(self, base: &Path) -> Result<RunConfig, DaemonError> {
        let resolve = |p: PathBuf| if p.is_absolute() { p } else { base.join(p) };
        let state_dir = resolve(
            self.state_dir
                .unwrap_or_else(|| PathBuf::from("/var/lib/rampart")),
        );
        let table = self.table.unwrap_or_else(|| "rampart".into());
        if table.is_empty()
            || table.len() > 64
            || !table
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(err(format!(
                "table `{table}`: 1-64 letters, digits, '_' or '-'"
            )));
        }
        let max_rows = self.store.max_rows.unwrap_or(1_000_000);
        if max_rows == 0 || max_rows > MAX_STORE_ROWS {
            return Err(err(format!("store.max_rows: 1 to {MAX_STORE_ROWS}")));
        }
        let max_age_days = self.store.max_age_days.unwrap_or(30);
        if max_age_days == 0 || max_age_days > 3650 {
            return Err(err("store.max_age_days: 1 to 3650"));
        }
        let http = match self.http {
            None => None,
            Some(raw) => {
                let listen: SocketAddr = raw.listen.parse().map_err(|_| {
                    err(format!("http.listen `{}`: expected ADDR:PORT", raw.listen))
                })?;
                if !listen.ip().is_loopback() && !raw.allow_non_loopback {
                    return Err(err(format!(
                        "http.listen {listen} is not loopback: set http.allow_non_loopback = true to expose the admin API"
                    )));
                }
                Some(HttpConfig {
                    listen,
                    token_file: resolve(raw.token_file),
                })
            }
        };
        if self.component.len() > MAX_COMPONENTS {
            return Err(err(format!("at most {MAX_COMPONENTS} components")));
        }
        let mut names = BTreeSet::new();
        let mut components = Vec::new();
        for raw in self.component {
            let name = raw.name.unwrap_or_else(|| raw.kind.as_str().to_string());
            if name.is_empty()
                || name.len() > 32
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
            {
                return Err(err(format!(
                    "component name `{name}`: 1-32 of a-z, 0-9, '-', '_'"
                )));
            }
            if !names.insert(name.clone()) {
                return Err(err(format!(
                    "component `{name}` is declared twice (give one a `name`)"
                )));
            }
            match (raw.from_policy, raw.kind) {
                (false, _) | (true, ComponentKind::Guard) => {}
                (true, ComponentKind::Jail) if raw.config.is_some() => {
                    return Err(err(format!(
                        "component `{name}`: with from_policy the jail takes its programs from the policy; remove `config`"
                    )))
                }
                (true, ComponentKind::Jail) => {}
                (true, kind) => {
                    return Err(err(format!(
                        "component `{name}`: from_policy applies to jail and guard, not {}",
                        kind.as_str()
                    )))
                }
            }
            let needs_config =
                raw.kind.needs_config() && !(raw.from_policy && raw.kind == ComponentKind::Jail);
            let config = match (needs_config, raw.config) {
                (true, Some(path)) => Some(resolve(path)),
                (true, None) => {
                    return Err(err(format!(
                        "component `{name}` ({}) needs `config`",
                        raw.kind.as_str()
                    )))
                }
                (false, Some(_)) => {
                    return Err(err(format!(
                        "component `{name}` ({}) reads the policy; it takes no `config`",
                        raw.kind.as_str()
                    )))
                }
                (false, None) => None,
            };
            let interval_s = match (raw.kind.is_periodic(), raw.interval_s) {
                (true, Some(s)) if (10..=86_400).contains(&s) => Some(s),
                (true, Some(_)) => {
                    return Err(err(format!(
                        "component `{name}`: interval_s must be 10 to 86400"
                    )))
                }
                (true, None) => Some(300),
                (false, Some(_)) => {
                    return Err(err(format!(
                        "component `{name}` ({}) runs continuously; interval_s applies to feeds",
                        raw.kind.as_str()
                    )))
                }
                (false, None) => None,
            };
            if let Some(user) = &raw.user {
                user.check("user", &name)?;
                match raw.kind {
                    // Moving processes between cgroups writes root-owned cgroup files.
                    ComponentKind::Jail => {
                        return Err(err(format!(
                            "component `{name}`: jail moves processes between root-owned cgroups; it runs as root (capabilities only)"
                        )))
                    }
                    // It rewrites its bindings file in place of its own choosing.
                    ComponentKind::Guard => {
                        return Err(err(format!(
                            "component `{name}`: guard keeps its bindings file where its configuration says; it runs as root (capabilities only)"
                        )))
                    }
                    _ => {}
                }
            }
            match (&raw.user, &raw.group) {
                (_, Some(group)) if raw.user.is_some() => group.check("group", &name)?,
                (None, Some(_)) => {
                    return Err(err(format!(
                    "component `{name}`: `group` needs `user` (the daemon's own group is root's)"
                )))
                }
                _ => {}
            }
            let on_down = match (raw.kind, raw.on_down) {
                (_, None) => OnDown::Closed,
                (ComponentKind::Dns, Some(choice)) => choice,
                (ComponentKind::Egress, Some(OnDown::Closed)) => OnDown::Closed,
                (ComponentKind::Egress, Some(OnDown::Open)) => {
                    return Err(err(format!(
                        "component `{name}`: egress cannot fail open: its clients speak the proxy protocol to it, and nothing at the packet level can answer that for it"
                    )))
                }
                (kind, Some(_)) => {
                    return Err(err(format!(
                        "component `{name}`: on_down applies to dns and egress, not {}",
                        kind.as_str()
                    )))
                }
            };
            components.push(ComponentConfig {
                name,
                kind: raw.kind,
                config,
                interval_s,
                user: raw.user,
                group: raw.group,
                on_down,
                from_policy: raw.from_policy,
            });
        }
        let mut elsewhere = BTreeSet::new();
        for kind in self.elsewhere {
            if let Some(here) = components.iter().find(|c| c.kind.serves() == Some(kind)) {
                return Err(err(format!(
                    "elsewhere lists `{}`, but component `{}` runs it here",
                    kind.as_str(),
                    here.name
                )));
            }
            elsewhere.insert(kind);
        }
        let apply = self.apply.unwrap_or(true);
        let confirm_s = match self.confirm_s {
            Some(_) if !apply => {
                return Err(err(
                    "confirm_s needs apply = true (there is nothing to confirm otherwise)",
                ))
            }
            Some(s) if !(5..=3600).contains(&s) => return Err(err("confirm_s: 5 to 3600")),
            other => other,
        };
        Ok(RunConfig {
            policy: resolve(self.policy),
            events_jsonl: resolve(
                self.events_jsonl
                    .unwrap_or_else(|| state_dir.join("events.jsonl")),
            ),
            state_dir,
            table,
            apply,
            confirm_s,
            store_max_rows: max_rows,
            store_max_age_days: max_age_days,
            http,
            components,
            elsewhere,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The policy crate's IR for a small policy enabling `components` (each on its own line of
    /// the `[components]` table, which starts on line 5).
    fn policy_enabling(components: &[&str]) -> rampart_ir::Policy {
        let mut text = String::from(
            "[zones.lan]\ninterfaces = [\"lan0\"]\nnetworks = [\"192.0.2.0/24\"]\n\n[components]\n",
        );
        for c in components {
            text.push_str(&format!("{c} = true\n"));
        }
        rampart_policy::load_with("policy.toml", &mut |_| Ok(text.clone()))
            .unwrap()
            .policy
    }

    #[test]
    fn every_component_the_policy_enables_must_run_here_or_elsewhere() {
        let policy = policy_enabling(&["dns_filter", "waf", "protocol_classifier"]);
        let dns_only = RunConfig::from_toml(
            "policy = \"p\"\n[[component]]\nkind = \"dns\"\nconfig = \"d\"\n[[component]]\nkind = \"log\"\n",
            Path::new("/x"),
        )
        .unwrap();
        let unrun: Vec<_> = dns_only
            .unrun_components(&policy)
            .iter()
            .map(|c| (c.kind, c.loc.line))
            .collect();
        assert_eq!(
            unrun,
            [
                (rampart_ir::ComponentKind::Waf, 7),
                (rampart_ir::ComponentKind::ProtocolClassifier, 8)
            ]
        );
        let e = dns_only.check_components(&policy).unwrap_err().to_string();
        assert!(
            e.contains("`waf` (policy.toml:7), `protocol_classifier` (policy.toml:8)"),
            "{e}"
        );
        assert!(e.contains("elsewhere"), "{e}");

        // Run here, or declared to run elsewhere: nothing is missing.
        let complete = RunConfig::from_toml(
            "policy = \"p\"\nelsewhere = [\"waf\"]\n[[component]]\nkind = \"dns\"\nconfig = \"d\"\n[[component]]\nkind = \"classify\"\n",
            Path::new("/x"),
        )
        .unwrap();
        assert!(complete.unrun_components(&policy).is_empty());
        assert!(complete.check_components(&policy).is_ok());
        // A policy that enables nothing needs nothing.
        assert!(dns_only.check_components(&policy_enabling(&[])).is_ok());
    }

    #[test]
    fn elsewhere_names_policy_components_not_run_here() {
        let e = RunConfig::from_toml(
            "policy = \"p\"\nelsewhere = [\"dns_filter\"]\n[[component]]\nkind = \"dns\"\nconfig = \"d\"\n",
            Path::new("/x"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("elsewhere lists `dns_filter`, but component `dns` runs it here"),
            "{e}"
        );
        let e = RunConfig::from_toml("policy = \"p\"\nelsewhere = [\"dns\"]\n", Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `dns`"), "{e}");
    }

    #[test]
    fn resolves_paths_and_fills_defaults() {
        let config = RunConfig::from_toml(
            "policy = \"p.toml\"\nstate_dir = \"st\"\n[[component]]\nkind = \"dns\"\nconfig = \"dns.toml\"\n[[component]]\nkind = \"log\"\n",
            Path::new("/etc/rampart"),
        )
        .unwrap();
        assert_eq!(config.policy, Path::new("/etc/rampart/p.toml"));
        assert_eq!(config.state_dir, Path::new("/etc/rampart/st"));
        assert_eq!(
            config.events_jsonl,
            Path::new("/etc/rampart/st/events.jsonl")
        );
        assert_eq!(
            config.components[0].config.as_deref(),
            Some(Path::new("/etc/rampart/dns.toml"))
        );
        assert_eq!(config.components[1].name, "log");
        assert!(config.apply);
        assert_eq!(
            config.component_events("dns"),
            Path::new("/etc/rampart/st/events/dns.jsonl")
        );
    }

    #[test]
    fn users_are_names_or_ids_and_confirm_is_a_window() {
        let config = RunConfig::from_toml(
            "policy = \"p\"\nconfirm_s = 30\n[[component]]\nkind = \"dns\"\nconfig = \"d\"\nuser = \"nobody\"\n[[component]]\nkind = \"log\"\nuser = 65534\ngroup = 65534\n",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(config.confirm_s, Some(30));
        assert_eq!(
            config.components[0].user,
            Some(Account::Name("nobody".into()))
        );
        assert_eq!(config.components[0].group, None);
        assert_eq!(config.components[1].user, Some(Account::Id(65534)));
        assert_eq!(config.components[1].group, Some(Account::Id(65534)));
        assert_eq!(config.components[0].on_down, OnDown::Closed);
        let open = RunConfig::from_toml(
            "policy = \"p\"\n[[component]]\nkind = \"dns\"\nconfig = \"d\"\non_down = \"open\"\n",
            Path::new("/x"),
        )
        .unwrap();
        assert_eq!(open.components[0].on_down, OnDown::Open);
    }

    #[test]
    fn the_packaged_example_is_valid() {
        let text = include_str!("../../../packaging/etc/run.toml");
        let config = RunConfig::from_toml(text, Path::new("/etc/rampart")).unwrap();
        assert_eq!(config.confirm_s, Some(120));
        assert_eq!(config.components.len(), 4);
        assert_eq!(config.components[0].on_down, OnDown::Open);
        assert!(config.components[..3]
            .iter()
            .all(|c| c.user == Some(Account::Name("nobody".into()))));
    }

    fn error_of(text: &str) -> String {
        RunConfig::from_toml(text, Path::new("/x"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn refuses_unsafe_or_meaningless_settings() {
        assert!(error_of(
            "policy = \"p\"\n[http]\nlisten = \"0.0.0.0:9477\"\ntoken_file = \"t\"\n"
        )
        .contains("not loopback"));
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"dns\"\n").contains("needs `config`")
        );
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"log\"\nconfig = \"x\"\n")
                .contains("takes no `config`")
        );
        assert!(error_of(
            "policy = \"p\"\n[[component]]\nkind = \"log\"\n[[component]]\nkind = \"log\"\n"
        )
        .contains("declared twice"));
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"telnetd\"\n")
                .contains("unknown variant")
        );
        assert!(error_of("policy = \"p\"\n[store]\nmax_rows = 0\n").contains("max_rows"));
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"feeds\"\ninterval_s = 1\n")
                .contains("10 to 86400")
        );
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"log\"\ninterval_s = 60\n")
                .contains("applies to feeds")
        );
        assert!(error_of("policy = \"p\"\ncolour = 1\n").contains("unknown field"));
        assert!(error_of(
            "policy = \"p\"\n[[component]]\nkind = \"dns\"\nconfig = \"d\"\nfrom_policy = true\n"
        )
        .contains("applies to jail and guard"));
        assert!(error_of(
            "policy = \"p\"\n[[component]]\nkind = \"jail\"\nconfig = \"j\"\nfrom_policy = true\n"
        )
        .contains("remove `config`"));
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"guard\"\nfrom_policy = true\n")
                .contains("needs `config`")
        );
        assert!(error_of("policy = \"p\"\napply = false\nconfirm_s = 30\n").contains("needs apply"));
        assert!(error_of("policy = \"p\"\nconfirm_s = 1\n").contains("5 to 3600"));
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"log\"\ngroup = \"nogroup\"\n")
                .contains("needs `user`")
        );
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"log\"\nuser = \"-rf\"\n")
                .contains("user `-rf`")
        );
        assert!(
            error_of("policy = \"p\"\n[[component]]\nkind = \"log\"\nuser = 4294967295\n")
                .contains("not a valid id")
        );
        assert!(error_of("state_dir = \"x\"\n").contains("missing field `policy`"));
    }
}
