//! `rampart lab`: an ATT&CK range in network namespaces. It builds a gateway namespace between
//! six segments (internet, dmz, corp on a bridge, iot, admin, guest; IPv4 and IPv6 from the
//! documentation ranges), loads a compiled ruleset into the gateway (plus what the caller says
//! the gateway needs: sysctls, the iptables-nft NFQUEUE rules and a daemon such as the protocol
//! classifier), plays each scenario's attack and legitimate twin with real sockets — real
//! protocol first payloads ([`payload`]), port-knocking sequences, datagrams from a chosen
//! source port (reflected answers), and floods (raw SYNs, or complete connections each
//! carrying a request) with legitimate clients measured during them ([`flood`]), and HTTP
//! requests through the egress proxy and the WAF it runs for the scenario ([`component`]) —
//! reads which nftables rule counters moved (and the component's decision event) as evidence,
//! and scores the policy per technique. This crate is a shell (it runs `ip`, `nft`,
//! `iptables-nft`, dnsmasq and the `rampart` binary's components and opens sockets in
//! namespaces); it does not compile policies — the caller hands it the ruleset text — and it
//! never touches the host's own namespace, ruleset or sysctls.

#![deny(missing_docs)]

pub mod component;
pub mod flood;
pub mod l2;
pub mod netns;
pub mod payload;
pub mod scenario;
pub mod score;
pub mod topology;
pub mod traffic;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use std::sync::Arc;
use std::time::{Duration, Instant};

use flood::FloodMeasure;
use scenario::{FamilyName, FloodSourceKind, Scenario, Traffic};
use score::{CaseResult, Evidence, Scoreboard};
use topology::Topology;
use traffic::{Endpoint, Exchange};

/// Errors of the lab.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A program could not be started or a system call failed.
    #[error("{command}: {source}")]
    Spawn {
        /// What was attempted.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A program exited non-zero.
    #[error("`{command}` failed: {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its standard error.
        stderr: String,
    },
    /// The topology file is invalid.
    #[error("topology: {message}")]
    Topology {
        /// What is wrong.
        message: String,
    },
    /// A scenario file is invalid.
    #[error("scenario {file}: {message}")]
    Scenario {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// Playing traffic failed for a reason other than the firewall.
    #[error("traffic: {message}")]
    Traffic {
        /// What went wrong.
        message: String,
    },
    /// The gateway refused the ruleset.
    #[error("the gateway refused the ruleset: {stderr}")]
    Ruleset {
        /// nft's error output.
        stderr: String,
    },
    /// Interrupted by a signal; the range was torn down.
    #[error("interrupted; the range was torn down")]
    Interrupted,
    /// A requirement of the host is missing.
    #[error("{0}")]
    Requirement(String),
}

/// What to run.
pub struct LabRun<'a> {
    /// The topology.
    pub topology: Topology,
    /// Scenarios to play, in order.
    pub scenarios: Vec<Scenario>,
    /// The nftables ruleset to load into the gateway (complete `nft -f` input).
    pub ruleset: &'a str,
    /// Name of the policy (for the scoreboard).
    pub policy_name: String,
    /// Leave the range up afterwards.
    pub keep: bool,
    /// cgroup v2 directory (e.g. `/sys/fs/cgroup/unified`) and the cgroups the ruleset's owner
    /// matches name, relative to it. nft resolves them when the ruleset loads, so missing ones
    /// are created for the run and removed afterwards.
    pub cgroups: Option<(std::path::PathBuf, Vec<String>)>,
    /// Progress lines (one per case) go here.
    pub progress: Option<&'a mut dyn Write>,
    /// What the gateway needs besides the ruleset.
    pub gateway: GatewaySetup,
}

/// What the gateway needs besides the ruleset: sysctls (SYN proxy, conntrack accounting), the
/// iptables-nft rules that queue marked packets to the classifier, the classifier itself, and
/// the ban sets the lab empties between scenarios.
#[derive(Clone, Debug, Default)]
pub struct GatewaySetup {
    /// `(name, value)` sysctls set in the gateway namespace after the ruleset loads.
    pub sysctls: Vec<(String, String)>,
    /// `(ipv6, rule)`: `-A CHAIN …` rules for `iptables-nft -t <table>` (or `ip6tables-nft`).
    pub iptables: Vec<(bool, String)>,
    /// The iptables table of those rules.
    pub iptables_table: String,
    /// A program started in the gateway namespace for the run (argv), which prints one line
    /// on stdout when it is ready: the protocol classifier when the policy has
    /// application-protocol rules.
    pub daemon: Option<Vec<String>>,
    /// Ban sets as `family table set` (e.g. `inet rampart ban_v4`), flushed after every
    /// scenario that floods, so a banned lab host does not stay banned for the next one.
    pub ban_sets: Vec<String>,
    /// The `rampart` binary: the lab runs its `guard` (L2 cases) and `jail` (cases whose client
    /// is a jailed program). Without it those cases cannot be played.
    pub rampart: Option<std::path::PathBuf>,
    /// Play without the L2 guard (its cases are expected to fail: the proof they can).
    pub skip_guard: bool,
    /// Play without the jail (its cases are expected to fail: the proof they can).
    pub skip_jail: bool,
    /// Play the egress proxy's cases with every source in `open` mode (its policy off): the
    /// proof they can fail.
    pub skip_egress: bool,
    /// Play the WAF's cases in DetectionOnly mode without its SSRF check: the proof they can
    /// fail.
    pub skip_waf: bool,
}

/// What runs while a scenario with `http` cases plays: the egress proxy and the lab's DNS, or
/// the WAF; their event files.
struct ComponentEnv {
    egress_events: std::path::PathBuf,
    waf_events: std::path::PathBuf,
    // Dropped (SIGTERM) when the scenario ends.
    _services: Vec<l2::Service>,
    // The proxy host's own source address, restored after the services stop.
    _route_source: Option<component::RouteSource>,
}

/// What runs on the gateway while a scenario with L2 cases plays.
struct L2Env {
    segment: String,
    gw_v4: std::net::Ipv4Addr,
    gw_mac: rampart_guard::decode::Mac,
    macs: Vec<(String, rampart_guard::decode::Mac)>,
    events: std::path::PathBuf,
    // Dropped (SIGTERM) when the scenario ends: the guard deletes its bridge table.
    _guard: Option<l2::Service>,
    _dnsmasq: Option<l2::Service>,
}

/// The cgroup root the lab's jail uses (the jail's default); policy rules name
/// `rampart.jail/<program>`.
pub const JAIL_CGROUP_ROOT: &str = "rampart.jail";

/// How long a gateway daemon may take to say it is ready.
const DAEMON_READY_MS: u64 = 10_000;

/// How much of a gateway daemon's stderr is kept for an error message.
const DAEMON_STDERR_TAIL_BYTES: usize = 4096;

/// A process started in the gateway for the run; killed (by its own pid) when dropped.
struct Daemon {
    child: std::process::Child,
}

impl Daemon {
    fn start(gw: &str, argv: &[String]) -> Result<Self, LabError> {
        use std::io::BufRead;
        let Some((program, args)) = argv.split_first() else {
            return Err(LabError::Requirement("empty gateway daemon command".into()));
        };
        let mut child = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{gw}"))
            .arg(program)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn {
                command: argv.join(" "),
                source,
            })?;
        let stdout = child.stdout.take();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut lines = std::io::BufReader::new(stdout).lines();
            let first = lines.next();
            let _ = tx.send(first.and_then(Result::ok));
            // Keep draining so the daemon never blocks on a full pipe.
            for _ in lines {}
        });
        // Drain stderr too, keeping only its tail for an error message: a daemon that logs a
        // lot must never stall on a full pipe (a stalled classifier fails closed).
        let tail = Arc::new(std::sync::Mutex::new(
            std::collections::VecDeque::<u8>::new(),
        ));
        if let Some(mut stderr) = child.stderr.take() {
            let tail = Arc::clone(&tail);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = std::io::Read::read(&mut stderr, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut t) = tail.lock() {
                        t.extend(&buf[..n]);
                        let excess = t.len().saturating_sub(DAEMON_STDERR_TAIL_BYTES);
                        t.drain(..excess);
                    }
                }
            });
        }
        let mut daemon = Daemon { child };
        match rx.recv_timeout(Duration::from_millis(DAEMON_READY_MS)) {
            Ok(Some(_ready)) => Ok(daemon),
            _ => {
                let _ = daemon.child.kill();
                let _ = daemon.child.wait();
                // Let the drain thread take what the daemon wrote before it died.
                std::thread::sleep(Duration::from_millis(100));
                let output = tail
                    .lock()
                    .map(|t| {
                        String::from_utf8_lossy(&t.iter().copied().collect::<Vec<u8>>())
                            .into_owned()
                    })
                    .unwrap_or_default();
                Err(LabError::CommandFailed {
                    command: argv.join(" "),
                    stderr: format!("did not report ready: {}", output.trim()),
                })
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn setup_gateway(gw: &str, setup: &GatewaySetup) -> Result<Option<Daemon>, LabError> {
    for (name, value) in &setup.sysctls {
        netns::run_in(gw, "sysctl", &["-qw", &format!("{name}={value}")])?;
    }
    for (v6, rule) in &setup.iptables {
        let program = if *v6 { "ip6tables-nft" } else { "iptables-nft" };
        let mut args = vec!["-t", setup.iptables_table.as_str()];
        args.extend(rule.split_whitespace());
        netns::run_in(gw, program, &args)?;
    }
    setup
        .daemon
        .as_ref()
        .map(|argv| Daemon::start(gw, argv))
        .transpose()
}

/// Elements in one ban set (`family table set`); 0 when it cannot be read.
fn ban_set_size(gw: &str, set: &str) -> u64 {
    let mut args = vec!["-j", "list", "set"];
    args.extend(set.split_whitespace());
    let Ok(output) = nft_in(gw).args(&args).output() else {
        return 0;
    };
    count_set_elements(&output.stdout)
}

/// Elements of the set in `nft -j list set` output.
fn count_set_elements(json: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v["nftables"].as_array().and_then(|items| {
                items
                    .iter()
                    .find_map(|i| i["set"]["elem"].as_array().map(|e| e.len() as u64))
            })
        })
        .unwrap_or(0)
}

fn flush_ban_sets(gw: &str, sets: &[String]) {
    for set in sets {
        let mut args = vec!["flush", "set"];
        args.extend(set.split_whitespace());
        let _ = nft_in(gw).args(&args).output();
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_signal: libc::c_int) {
    // Only an atomic store: async-signal-safe. The run loop checks the flag between cases and
    // unwinds normally, so the namespace guard tears the range down.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn install_signal_handlers() {
    for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: `on_signal` only performs an atomic store, which is async-signal-safe, and
        // has the `extern "C" fn(c_int)` signature `signal` expects.
        unsafe {
            libc::signal(signal, on_signal as *const () as libc::sighandler_t);
        }
    }
}

/// Check what the lab needs on this host, naming the first thing missing.
pub fn check_requirements() -> Result<(), LabError> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(LabError::Requirement(
            "rampart lab must run as root (it creates network namespaces)".into(),
        ));
    }
    for (program, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("ping", "iputils-ping"),
        ("nsenter", "util-linux"),
        // The NFQUEUE rules for application-protocol rules (the baseline has them).
        ("iptables-nft", "iptables"),
        ("ip6tables-nft", "iptables"),
        // The legitimate DHCP server of the L2 scenarios.
        ("dnsmasq", "dnsmasq-base"),
        // Process clients: another uid, a bounded run, the shell the jail holds.
        ("setpriv", "util-linux"),
        ("timeout", "coreutils"),
        ("bash", "bash"),
    ] {
        let found = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
            .unwrap_or(false)
            || std::path::Path::new("/usr/sbin").join(program).is_file();
        if !found {
            return Err(LabError::Requirement(format!(
                "rampart lab needs `{program}`: apt-get install {package}"
            )));
        }
    }
    Ok(())
}

impl LabRun<'_> {
    /// Build the range, load the ruleset, play every case, tear down (unless `keep`).
    pub fn run(mut self) -> Result<Scoreboard, LabError> {
        check_requirements()?;
        install_signal_handlers();
        // A crashed or killed earlier run may have left its range behind.
        netns::teardown_all()?;
        let scratch = l2::Scratch::create()?;
        let mut namespaces = self.topology.build()?;
        if self.keep {
            namespaces.keep();
        }
        let _cgroups = match &self.cgroups {
            Some((root, paths)) => Some(CgroupGuard::create(root, paths)?),
            None => None,
        };
        let gw = Topology::gateway_ns();
        load_ruleset(&gw, self.ruleset)?;
        let _daemon = setup_gateway(&gw, &self.gateway)?;
        let programs = self.jail_programs(&scratch.0)?;
        let _jail = self.start_jail(&gw, &scratch.0, &programs)?;
        let mut results = Vec::new();
        for scenario in &self.scenarios {
            let floods = scenario.cases.iter().any(|c| c.flood.is_some());
            if floods {
                flush_ban_sets(&gw, &self.gateway.ban_sets);
            }
            let l2_env = self.start_l2(&gw, scenario, &scratch.0)?;
            let components = self.start_components(scenario, &scratch.0)?;
            for case in &scenario.cases {
                for family in &case.families {
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        return Err(LabError::Interrupted);
                    }
                    let result = if case.kind == scenario::CaseKind::Http {
                        self.play_http(&gw, scenario, case, *family, components.as_ref())?
                    } else {
                        self.play_case(&gw, scenario, case, *family, l2_env.as_ref(), &programs)?
                    };
                    if let Some(out) = self.progress.as_mut() {
                        let _ = writeln!(
                            out,
                            "  {} {:<24} {:<5} {}",
                            if result.passed() { "ok  " } else { "FAIL" },
                            scenario.id,
                            family_label(*family),
                            case.name
                        );
                    }
                    results.push(result);
                }
            }
            if floods {
                flush_ban_sets(&gw, &self.gateway.ban_sets);
            }
            drop(l2_env);
            drop(components);
        }
        drop(_jail);
        drop(_daemon);
        drop(namespaces);
        Ok(Scoreboard::new(
            self.policy_name.clone(),
            &self.scenarios,
            results,
        ))
    }

    /// The jailed programs the cases run: a copy of the system shell per program name, at
    /// `<scratch>/<name>`.
    fn jail_programs(
        &self,
        scratch: &std::path::Path,
    ) -> Result<BTreeMap<String, std::path::PathBuf>, LabError> {
        let mut programs = BTreeMap::new();
        let names = self
            .scenarios
            .iter()
            .flat_map(|s| &s.cases)
            .filter_map(|c| c.process.as_ref()?.program.clone());
        for name in names {
            if programs.contains_key(&name) {
                continue;
            }
            let shell = find_program("bash")
                .ok_or_else(|| LabError::Requirement("jailed-program cases need `bash`".into()))?;
            let copy = scratch.join(&name);
            std::fs::copy(&shell, &copy).map_err(|source| LabError::Spawn {
                command: format!("cp {} {}", shell.display(), copy.display()),
                source,
            })?;
            programs.insert(name, copy);
        }
        Ok(programs)
    }

    /// `rampart jail` for the run, holding every exec of the cases' programs until the process
    /// is in `rampart.jail/<name>`.
    fn start_jail(
        &self,
        gw: &str,
        scratch: &std::path::Path,
        programs: &BTreeMap<String, std::path::PathBuf>,
    ) -> Result<Option<l2::Service>, LabError> {
        if programs.is_empty() || self.gateway.skip_jail {
            return Ok(None);
        }
        let rampart = self.rampart_binary("jailed-program cases")?;
        let mut config = format!("cgroup_root = \"{JAIL_CGROUP_ROOT}\"\n");
        for (name, path) in programs {
            config.push_str(&format!(
                "[[program]]\nname = \"{name}\"\npaths = [\"{}\"]\nmitigates = [\"T1218\", \"T1218.012\"]\n",
                path.display()
            ));
        }
        let file = scratch.join("jail.toml");
        std::fs::write(&file, config).map_err(|source| LabError::Spawn {
            command: format!("write {}", file.display()),
            source,
        })?;
        let argv = vec![
            rampart.display().to_string(),
            "jail".into(),
            "--config".into(),
            file.display().to_string(),
            "--events".into(),
            scratch.join("jail.events.jsonl").display().to_string(),
        ];
        l2::Service::start("rampart jail", gw, &argv, None, false).map(Some)
    }

    /// For a scenario with `http` cases: `rampart egress` on the egress-proxy host with the
    /// lab's DNS (dnsmasq on the resolver host, answering the cases' names with their origins'
    /// addresses), and/or `rampart waf` on the WAF cases' server host in front of the lab's
    /// application.
    fn start_components(
        &self,
        scenario: &Scenario,
        scratch: &std::path::Path,
    ) -> Result<Option<ComponentEnv>, LabError> {
        use scenario::{CaseKind, Via};
        let http: Vec<&scenario::Case> = scenario
            .cases
            .iter()
            .filter(|c| c.kind == CaseKind::Http)
            .collect();
        if http.is_empty() {
            return Ok(None);
        }
        let dir = scratch.join(&scenario.id);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Spawn {
            command: format!("mkdir {}", dir.display()),
            source,
        })?;
        let write = |name: &str, text: &str| {
            let file = dir.join(name);
            std::fs::write(&file, text).map_err(|source| LabError::Spawn {
                command: format!("write {}", file.display()),
                source,
            })?;
            Ok::<_, LabError>(file)
        };
        let host = |name: &str| {
            self.topology
                .host(name, "")
                .ok_or_else(|| LabError::Scenario {
                    file: format!("{}.toml", scenario.id),
                    message: format!("unknown host `{name}`"),
                })
        };
        let mut env = ComponentEnv {
            egress_events: dir.join("egress.events.jsonl"),
            waf_events: dir.join("waf.events.jsonl"),
            _services: Vec::new(),
            _route_source: None,
        };
        let egress_cases: Vec<&&scenario::Case> =
            http.iter().filter(|c| c.via == Some(Via::Egress)).collect();
        if !egress_cases.is_empty() {
            let rampart = self.rampart_binary("egress proxy cases")?.to_path_buf();
            let proxy = host(component::EGRESS_HOST)?;
            let resolver = host(component::RESOLVER_HOST)?;
            let mut names: Vec<(String, topology::Host)> = Vec::new();
            for case in &egress_cases {
                if let Some(request) = &case.http {
                    if !names.iter().any(|(n, _)| *n == request.host) {
                        names.push((request.host.clone(), host(&case.to)?));
                    }
                }
            }
            let segment = self
                .topology
                .segments
                .iter()
                .find(|s| s.name == proxy.segment)
                .ok_or_else(|| LabError::Traffic {
                    message: format!("no segment {}", proxy.segment),
                })?;
            env._route_source = Some(component::RouteSource::set(&proxy, &segment.gateway)?);
            let dnsmasq = find_program("dnsmasq").ok_or_else(|| {
                LabError::Requirement(
                    "egress proxy cases need `dnsmasq`: apt-get install dnsmasq-base".into(),
                )
            })?;
            let conf = write("dns.conf", &component::dns_config(&resolver, &names, &dir))?;
            env._services.push(l2::Service::start(
                "the lab's DNS (dnsmasq)",
                &resolver.ns,
                &[
                    dnsmasq.display().to_string(),
                    "--keep-in-foreground".into(),
                    format!("--conf-file={}", conf.display()),
                ],
                Some(&dir.join("dns.pid")),
                false,
            )?);
            let conf = write(
                "egress.toml",
                &component::egress_config(
                    &proxy,
                    &resolver,
                    &env.egress_events,
                    self.gateway.skip_egress,
                )?,
            )?;
            env._services.push(l2::Service::start(
                "rampart egress",
                &proxy.ns,
                &[
                    rampart.display().to_string(),
                    "egress".into(),
                    "--config".into(),
                    conf.display().to_string(),
                ],
                None,
                false,
            )?);
        }
        let mut waf_servers: Vec<(String, u16)> = Vec::new();
        for case in http.iter().filter(|c| c.via == Some(Via::Waf)) {
            if let Some(Traffic::Tcp(port)) = Traffic::parse(&case.traffic) {
                if !waf_servers.contains(&(case.to.clone(), port)) {
                    waf_servers.push((case.to.clone(), port));
                }
            }
        }
        if waf_servers.len() > 1 {
            return Err(LabError::Scenario {
                file: format!("{}.toml", scenario.id),
                message: "the WAF cases of one scenario name one server host and port".into(),
            });
        }
        if let Some((server, port)) = waf_servers.first() {
            let rampart = self.rampart_binary("WAF cases")?.to_path_buf();
            let server = host(server)?;
            let app = server.v4.or(server.v6).ok_or_else(|| LabError::Traffic {
                message: format!("{} has no address", server.name),
            })?;
            let rules = write("waf-rules.conf", component::WAF_RULES)?;
            let conf = write(
                "waf.toml",
                &component::waf_config(
                    *port,
                    &rules,
                    std::net::SocketAddr::new(app, component::APP_PORT),
                    self.gateway.skip_waf,
                )?,
            )?;
            env._services.push(l2::Service::start_logging(
                "rampart waf",
                &server.ns,
                &[
                    rampart.display().to_string(),
                    "waf".into(),
                    "--config".into(),
                    conf.display().to_string(),
                ],
                &env.waf_events,
            )?);
        }
        Ok(Some(env))
    }

    /// Play an `http` case: the origin listens, the client sends the request through the
    /// component, the component's event for it is read.
    fn play_http(
        &self,
        gw: &str,
        scenario: &Scenario,
        case: &scenario::Case,
        family: FamilyName,
        env: Option<&ComponentEnv>,
    ) -> Result<CaseResult, LabError> {
        use scenario::Via;
        let bad = |message: String| LabError::Scenario {
            file: format!("{}.toml", scenario.id),
            message: format!("case `{}`: {message}", case.name),
        };
        let (Some(env), Some(via), Some(request)) = (env, case.via, case.http.as_ref()) else {
            return Err(bad("an http case without its components".into()));
        };
        let Some(Traffic::Tcp(port)) = Traffic::parse(&case.traffic) else {
            return Err(bad("an http case plays tcp/PORT".into()));
        };
        let v6 = family == FamilyName::Ipv6;
        let host = |name: &str| {
            self.topology
                .host(name, "")
                .ok_or_else(|| bad(format!("unknown host `{name}`")))
        };
        let client = host(&case.from)?;
        let origin = host(&case.to)?;
        let client_addr = client.addr(v6).ok_or_else(|| {
            bad(format!(
                "{} has no {} address",
                client.name,
                family_label(family)
            ))
        })?;
        // Where the client connects, where the origin listens, which events to read.
        let (server, origin_addrs, events) = match via {
            Via::Egress => {
                let proxy = host(component::EGRESS_HOST)?;
                let proxy_addr = proxy.addr(v6).ok_or_else(|| {
                    bad(format!(
                        "the egress proxy has no {} address",
                        family_label(family)
                    ))
                })?;
                let origin_addrs: Vec<std::net::SocketAddr> = [origin.v4, origin.v6]
                    .into_iter()
                    .flatten()
                    .map(|a| std::net::SocketAddr::new(a, port))
                    .collect();
                (
                    std::net::SocketAddr::new(proxy_addr, component::EGRESS_PORT),
                    origin_addrs,
                    &env.egress_events,
                )
            }
            Via::Waf => {
                let server_addr = origin.addr(v6).ok_or_else(|| {
                    bad(format!(
                        "{} has no {} address",
                        origin.name,
                        family_label(family)
                    ))
                })?;
                let app = origin
                    .v4
                    .or(origin.v6)
                    .ok_or_else(|| bad("no address".into()))?;
                (
                    std::net::SocketAddr::new(server_addr, port),
                    vec![std::net::SocketAddr::new(app, component::APP_PORT)],
                    &env.waf_events,
                )
            }
        };
        let client_end = Endpoint {
            ns: client.ns.clone(),
            addr: client_addr,
        };
        let bytes = component::request_bytes(request, via, port);
        let before = counters(gw)?;
        let attempt = |connect_wait_ms: u64| -> Result<_, LabError> {
            let offset = component::events_offset(events);
            let stop = Arc::new(AtomicBool::new(false));
            let origin_thread =
                component::spawn_origin(&origin.ns, origin_addrs.clone(), Arc::clone(&stop))?;
            let answer = component::ask(&client_end, server, bytes.clone(), connect_wait_ms);
            stop.store(true, Ordering::Relaxed);
            let served = join_lab(origin_thread)?;
            let answer = answer?;
            let decision =
                component::wait_decision(events, offset, via, request, answer.local_port);
            Ok((answer, served, decision))
        };
        let observe = |answer: &component::Answer, served: &[String]| {
            let reached = !served.is_empty();
            let answered = answer.status == Some(200) && answer.from_origin;
            // An attack counts as blocked only if the origin never saw it; the legitimate
            // request only if the origin's answer also came back.
            let allowed = match case.expect {
                scenario::Expectation::Blocked => reached || answered,
                scenario::Expectation::Allowed => reached && answered,
            };
            if allowed {
                scenario::Expectation::Allowed
            } else {
                scenario::Expectation::Blocked
            }
        };
        // The component always accepts the connection (the policy opens its port), so a
        // handshake that does not complete is never the verdict: wait as long as a retry would.
        let (mut answer, mut served, mut decision) = attempt(traffic::RETRY_WAIT_MS)?;
        let mut retried = false;
        if case.expect == scenario::Expectation::Allowed && observe(&answer, &served) != case.expect
        {
            (answer, served, decision) = attempt(traffic::RETRY_WAIT_MS)?;
            retried = true;
        }
        let observed = observe(&answer, &served);
        let after = counters(gw)?;
        let component_name = format!("rampart {}", via.label());
        let mut detail = match (&answer.status, &answer.failure) {
            (Some(status), _) => {
                let by = if answer.from_origin {
                    "the origin".to_string()
                } else {
                    component_name.clone()
                };
                match &answer.reason {
                    Some(reason) => format!("HTTP {status} from {by} ({reason})"),
                    None => format!("HTTP {status} from {by}"),
                }
            }
            (None, Some(failure)) => failure.clone(),
            (None, None) => "no answer".into(),
        };
        detail.push_str(if served.is_empty() {
            "; the origin never saw the request"
        } else {
            "; the origin served the request"
        });
        match &decision {
            Some(d) => {
                detail.push_str(&format!(
                    "; {component_name} event: {} {}",
                    d.verdict, d.reason
                ));
                if !d.techniques.is_empty() {
                    detail.push_str(&format!(" [{}]", d.techniques.join(",")));
                }
            }
            None => detail.push_str(&format!("; no {component_name} event")),
        }
        if retried {
            detail.push_str(" (on a patient retry)");
        }
        let detection = case.detection.clone().map(|kind| score::Detection {
            seen: decision
                .as_ref()
                .is_some_and(|d| d.verdict == "block" && d.techniques.contains(&kind)),
            kind,
        });
        if let Some(d) = &detection {
            if !d.seen {
                detail.push_str(&format!("; the event did NOT block with {}", d.kind));
            }
        }
        let mut evidence: Vec<Evidence> = decision
            .iter()
            .map(|d| Evidence {
                chain: component_name.clone(),
                handle: 0,
                comment: format!("{} {} {}", d.verdict, d.reason, d.techniques.join(","))
                    .trim_end()
                    .to_string(),
            })
            .collect();
        evidence.extend(moved_evidence(&before, &after));
        Ok(CaseResult {
            scenario: scenario.id.clone(),
            techniques: scenario.techniques.clone(),
            case: case.name.clone(),
            family,
            from: format!("{} {}", case.from, client_addr),
            to: match via {
                Via::Egress => format!("{} via {} {server}", case.to, component::EGRESS_HOST),
                Via::Waf => format!("{} {server}", case.to),
            },
            traffic: format!("{} {} via {}", case.traffic, request.method, via.label()),
            expected: case.expect,
            observed,
            detail,
            evidence,
            measure: None,
            detection,
        })
    }

    fn rampart_binary(&self, what: &str) -> Result<&std::path::Path, LabError> {
        self.gateway
            .rampart
            .as_deref()
            .ok_or_else(|| LabError::Requirement(format!("{what} need the rampart binary")))
    }

    /// For a scenario with L2 cases: the guard on the segment's bridge (unless skipped) and
    /// dnsmasq on the gateway when a DHCP case expects the gateway's offers.
    fn start_l2(
        &self,
        gw: &str,
        scenario: &Scenario,
        scratch: &std::path::Path,
    ) -> Result<Option<L2Env>, LabError> {
        let Some(first) = scenario.cases.iter().find(|c| c.kind.is_l2()) else {
            return Ok(None);
        };
        let host = if first.from == topology::GATEWAY {
            &first.to
        } else {
            &first.from
        };
        let (segment, gw_v4) = l2::bridged_segment(&self.topology, host)?;
        let mut macs = Vec::new();
        for spec in &segment.hosts {
            let h = self
                .topology
                .host(&spec.name, "")
                .ok_or_else(|| LabError::Traffic {
                    message: format!("unknown host {}", spec.name),
                })?;
            macs.push((spec.name.clone(), l2::mac_of(&h.ns, "eth0")?));
        }
        let gw_mac = l2::mac_of(gw, &segment.iface)?;
        let dir = scratch.join(&scenario.id);
        std::fs::create_dir_all(&dir).map_err(|source| LabError::Spawn {
            command: format!("mkdir {}", dir.display()),
            source,
        })?;
        let write = |name: &str, text: &str| {
            let file = dir.join(name);
            std::fs::write(&file, text).map_err(|source| LabError::Spawn {
                command: format!("write {}", file.display()),
                source,
            })?;
            Ok::<_, LabError>(file)
        };
        let needs_server = scenario
            .cases
            .iter()
            .any(|c| c.kind == scenario::CaseKind::Dhcp && c.to == topology::GATEWAY);
        let dnsmasq = match (needs_server, l2::dnsmasq_config(segment, &dir)) {
            (true, Some(text)) => {
                let conf = write("dnsmasq.conf", &text)?;
                let program = find_program("dnsmasq").ok_or_else(|| {
                    LabError::Requirement(
                        "DHCP cases need `dnsmasq`: apt-get install dnsmasq-base".into(),
                    )
                })?;
                let argv = vec![
                    program.display().to_string(),
                    "--keep-in-foreground".into(),
                    format!("--conf-file={}", conf.display()),
                ];
                Some(l2::Service::start(
                    "dnsmasq",
                    gw,
                    &argv,
                    Some(&dir.join("dnsmasq.pid")),
                    false,
                )?)
            }
            _ => None,
        };
        let guard = if self.gateway.skip_guard {
            None
        } else {
            let rampart = self.rampart_binary("L2 cases")?;
            let conf = write("guard.toml", &l2::guard_config(segment, gw_v4, &macs, &dir))?;
            let argv = vec![
                rampart.display().to_string(),
                "guard".into(),
                "--config".into(),
                conf.display().to_string(),
            ];
            Some(l2::Service::start("rampart guard", gw, &argv, None, true)?)
        };
        Ok(Some(L2Env {
            segment: segment.name.clone(),
            gw_v4,
            gw_mac,
            macs,
            events: dir.join("guard.events.jsonl"),
            _guard: guard,
            _dnsmasq: dnsmasq,
        }))
    }

    /// Play an L2 case; the observation and the guard's detection (when the case names one).
    fn play_l2(
        &self,
        case: &scenario::Case,
        env: &L2Env,
        v6: bool,
    ) -> Result<
        (
            traffic::Observation,
            Option<score::Detection>,
            String,
            String,
        ),
        LabError,
    > {
        use scenario::CaseKind;
        use traffic::Observation;
        let lookup = |name: &str| -> Result<
            (
                topology::Host,
                rampart_guard::decode::Mac,
                std::net::Ipv4Addr,
            ),
            LabError,
        > {
            let host =
                self.topology
                    .host(name, &env.segment)
                    .ok_or_else(|| LabError::Scenario {
                        file: case.name.clone(),
                        message: format!("unknown host `{name}`"),
                    })?;
            if host.name != topology::GATEWAY && host.segment != env.segment {
                return Err(LabError::Scenario {
                    file: case.name.clone(),
                    message: format!("`{name}` is not on segment {}", env.segment),
                });
            }
            let mac = if name == topology::GATEWAY {
                env.gw_mac
            } else {
                env.macs
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, m)| *m)
                    .ok_or_else(|| LabError::Traffic {
                        message: format!("no MAC for {name}"),
                    })?
            };
            let v4 = match host.v4 {
                Some(std::net::IpAddr::V4(a)) => a,
                _ => env.gw_v4,
            };
            Ok((host, mac, v4))
        };
        let (from, from_mac, from_v4) = lookup(&case.from)?;
        let (to, to_mac, to_v4) = lookup(&case.to)?;
        let offset = l2::events_offset(&env.events);
        let result = |allowed: bool, detail: String| Observation {
            result: if allowed {
                scenario::Expectation::Allowed
            } else {
                scenario::Expectation::Blocked
            },
            detail,
        };
        let detection_wait_ms = 1_000;
        let observation = match case.kind {
            CaseKind::Flow | CaseKind::Http => {
                return Err(LabError::Traffic {
                    message: format!("case `{}` is not an L2 case", case.name),
                })
            }
            CaseKind::Dhcp => {
                let rogue =
                    (case.to != topology::GATEWAY).then_some((to.ns.as_str(), to_mac, to_v4));
                let attempt = |wait_ms: u64| {
                    let xid = (std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.subsec_nanos()))
                        | 1;
                    l2::dhcp_offers(&from.ns, from_mac, xid, rogue, wait_ms)
                };
                let mut servers = attempt(l2::OFFER_WAIT_MS)?;
                if !servers.contains(&to_v4) && case.expect == scenario::Expectation::Allowed {
                    servers = attempt(traffic::RETRY_WAIT_MS)?;
                }
                let list: Vec<String> = servers.iter().map(ToString::to_string).collect();
                result(
                    servers.contains(&to_v4),
                    format!(
                        "offers from [{}] reached {}; {} {}",
                        list.join(", "),
                        case.from,
                        to_v4,
                        if servers.contains(&to_v4) {
                            "among them"
                        } else {
                            "not among them"
                        }
                    ),
                )
            }
            CaseKind::ArpSpoof => {
                let (victim, victim_mac, victim_v4) = (&to, to_mac, to_v4);
                l2::poke(&victim.ns, env.gw_v4)?;
                if case.from != topology::GATEWAY {
                    l2::arp_spoof(&from.ns, from_mac, victim_mac, victim_v4, env.gw_v4)?;
                }
                let seen = l2::neighbour(&victim.ns, env.gw_v4)?;
                // Leave the victim clean for later cases whatever happened.
                let _ = netns::run_in(&victim.ns, "ip", &["neigh", "flush", "dev", "eth0"]);
                let who = |m: Option<rampart_guard::decode::Mac>| match m {
                    Some(m) if m == env.gw_mac => format!("{m} (the gateway's)"),
                    Some(m) if m == from_mac => format!("{m} ({}'s)", case.from),
                    Some(m) => m.to_string(),
                    None => "no entry".into(),
                };
                result(
                    seen == Some(from_mac),
                    format!(
                        "{}'s neighbour entry for {}: {}",
                        case.to,
                        env.gw_v4,
                        who(seen)
                    ),
                )
            }
            CaseKind::NamePoison => {
                let addr = |h: &topology::Host| {
                    h.addr(v6).ok_or_else(|| LabError::Traffic {
                        message: format!("{} has no address of the family", h.name),
                    })
                };
                let (from_ip, to_ip) = (addr(&from)?, addr(&to)?);
                let to_v6 = match to.v6 {
                    Some(std::net::IpAddr::V6(a)) => Some(a),
                    _ => None,
                };
                let poisoner = l2::Poisoner::start(&to.ns, to_v4, to_v6)?;
                let answered = l2::llmnr_lookup(&from.ns, from_ip, "fileserv")?;
                // Give the canary a round while the poisoner still answers; over IPv6 the
                // detection must come from an IPv6 answer.
                let detected = case.detection.as_deref().map(|kind| {
                    l2::wait_detection(&env.events, offset, kind, l2::DETECTION_WAIT_MS, v6)
                });
                let answers = poisoner.stop()?;
                // Let the guard write what this poisoner caused (it polls every 200 ms), so
                // the next case's events start clean.
                std::thread::sleep(std::time::Duration::from_millis(l2::GUARD_SETTLE_MS));
                let poisoned = answered.contains(&to_ip);
                let obs = result(
                    poisoned,
                    format!(
                        "{}'s LLMNR lookup answered by [{}]; the poisoner sent {answers} answers",
                        case.from,
                        answered
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                );
                // A detection counts only if this poisoner answered at all.
                let detection = case.detection.clone().map(|kind| score::Detection {
                    seen: detected.flatten().is_some() && answers > 0,
                    kind,
                });
                return Ok((
                    obs,
                    detection,
                    format!("{} {from_ip}", case.from),
                    format!("{} {to_ip}", case.to),
                ));
            }
        };
        let detection = case.detection.clone().map(|kind| {
            let seen =
                l2::wait_detection(&env.events, offset, &kind, detection_wait_ms, false).is_some();
            score::Detection { kind, seen }
        });
        Ok((
            observation,
            detection,
            format!("{} {from_v4}", case.from),
            format!("{} {to_v4}", case.to),
        ))
    }

    fn play_case(
        &self,
        gw: &str,
        scenario: &Scenario,
        case: &scenario::Case,
        family: FamilyName,
        l2_env: Option<&L2Env>,
        programs: &BTreeMap<String, std::path::PathBuf>,
    ) -> Result<CaseResult, LabError> {
        if case.kind.is_l2() {
            let env = l2_env.ok_or_else(|| LabError::Traffic {
                message: "an L2 case without its environment".into(),
            })?;
            let before = counters(gw)?;
            let (mut observation, detection, from, to) =
                self.play_l2(case, env, family == FamilyName::Ipv6)?;
            let after = counters(gw)?;
            if let Some(d) = &detection {
                observation.detail.push_str(&if d.seen {
                    format!("; the guard reported `{}`", d.kind)
                } else {
                    format!("; the guard did NOT report `{}`", d.kind)
                });
            }
            return Ok(CaseResult {
                scenario: scenario.id.clone(),
                techniques: scenario.techniques.clone(),
                case: case.name.clone(),
                family,
                from,
                to,
                traffic: kind_label(case.kind).into(),
                expected: case.expect,
                observed: observation.result,
                detail: observation.detail,
                evidence: moved_l2_evidence(&before, &after),
                measure: None,
                detection,
            });
        }
        let v6 = family == FamilyName::Ipv6;
        let unknown = |name: &str| LabError::Scenario {
            file: format!("{}.toml", scenario.id),
            message: format!("unknown host `{name}`"),
        };
        // `gw` stands for the gateway's address on the other side's segment, so the gateway
        // itself can be the client (its own egress) or the server (its ingress).
        let (client, server) = if case.from == topology::GATEWAY {
            let server = self
                .topology
                .host(&case.to, "")
                .ok_or_else(|| unknown(&case.to))?;
            let client = self
                .topology
                .host(topology::GATEWAY, &server.segment)
                .ok_or_else(|| unknown(&case.from))?;
            (client, server)
        } else {
            let client = self
                .topology
                .host(&case.from, "")
                .ok_or_else(|| unknown(&case.from))?;
            let server = self
                .topology
                .host(&case.to, &client.segment)
                .ok_or_else(|| unknown(&case.to))?;
            (client, server)
        };
        let traffic = Traffic::parse(&case.traffic).ok_or_else(|| unknown(&case.traffic))?;
        let (Some(client_addr), Some(server_addr)) = (client.addr(v6), server.addr(v6)) else {
            return Err(LabError::Scenario {
                file: format!("{}.toml", scenario.id),
                message: format!(
                    "case `{}`: a host has no {} address",
                    case.name,
                    family_label(family)
                ),
            });
        };
        let client_end = Endpoint {
            ns: client.ns.clone(),
            addr: client_addr,
        };
        let server_end = Endpoint {
            ns: server.ns.clone(),
            addr: server_addr,
        };
        let before = counters(gw)?;
        let exchange = Exchange {
            traffic,
            payload: case.payload,
            icmp_bytes: case.icmp_bytes,
            client_port: case.from_port.unwrap_or(0),
        };
        let knocks: Vec<Traffic> = case
            .knock
            .iter()
            .filter_map(|k| Traffic::parse(k))
            .collect();
        if !knocks.is_empty() {
            traffic::knock(&knocks, &client_end, &server_end)?;
        }
        let process = match (&case.process, traffic) {
            (Some(p), Traffic::Tcp(port)) => {
                let (program, label) = match &p.program {
                    Some(name) => (
                        programs
                            .get(name)
                            .cloned()
                            .ok_or_else(|| LabError::Traffic {
                                message: format!("no jailed program `{name}`"),
                            })?,
                        name.clone(),
                    ),
                    None => (
                        find_program("bash").ok_or_else(|| {
                            LabError::Requirement("process cases need `bash`".into())
                        })?,
                        "bash".to_string(),
                    ),
                };
                Some((
                    traffic::ClientCommand {
                        uid: p.uid,
                        program,
                        label,
                    },
                    port,
                ))
            }
            _ => None,
        };
        let mut measure = None;
        let mut observation = if let (Some(flood), Traffic::Tcp(port)) = (&case.flood, traffic) {
            let flooder = self
                .topology
                .host(&flood.from, "")
                .ok_or_else(|| unknown(&flood.from))?;
            let flooder_addr = flooder.addr(v6).ok_or_else(|| unknown(&flood.from))?;
            let (observation, m) = self.play_flood(
                gw,
                flood,
                &flooder.ns,
                flooder_addr,
                &client_end,
                &server_end,
                port,
                case.payload,
            )?;
            measure = Some(m);
            observation
        } else if let Some((command, port)) = &process {
            traffic::play_tcp_process(
                *port,
                command,
                &client_end,
                &server_end,
                traffic::FIRST_WAIT_MS,
            )?
        } else {
            traffic::play(exchange, &client_end, &server_end, traffic::FIRST_WAIT_MS)?
        };
        if observation.result != case.expect
            && case.expect == scenario::Expectation::Allowed
            && case.flood.is_none()
        {
            observation = match &process {
                Some((command, port)) => traffic::play_tcp_process(
                    *port,
                    command,
                    &client_end,
                    &server_end,
                    traffic::RETRY_WAIT_MS,
                )?,
                None => traffic::play(exchange, &client_end, &server_end, traffic::RETRY_WAIT_MS)?,
            };
            observation.detail.push_str(" (on a patient retry)");
        }
        let after = counters(gw)?;
        let evidence = moved_evidence(&before, &after);
        Ok(CaseResult {
            scenario: scenario.id.clone(),
            techniques: scenario.techniques.clone(),
            case: case.name.clone(),
            family,
            from: format!("{} {}", case.from, client_addr),
            to: format!("{} {}", case.to, server_addr),
            traffic: case.traffic.clone(),
            expected: case.expect,
            observed: observation.result,
            detail: observation.detail,
            evidence,
            measure,
            detection: None,
        })
    }

    /// A flood case: SYNs from the flooder at the server's port while the client runs its
    /// exchanges; allowed when the share that completes reaches the threshold (and, for a
    /// single-source flood with `ban_within_ms`, the flooder was banned in time).
    #[allow(clippy::too_many_arguments)]
    fn play_flood(
        &self,
        gw: &str,
        flood: &scenario::Flood,
        flooder_ns: &str,
        flooder_addr: std::net::IpAddr,
        client: &Endpoint,
        server: &Endpoint,
        port: u16,
        payload: payload::Payload,
    ) -> Result<(traffic::Observation, FloodMeasure), LabError> {
        use std::sync::atomic::AtomicBool;
        let syncookies_off = flood.server_without_syncookies;
        if syncookies_off {
            netns::run_in(&server.ns, "sysctl", &["-qw", "net.ipv4.tcp_syncookies=0"])?;
        }
        let stop_server = Arc::new(AtomicBool::new(false));
        let server_thread = flood::spawn_server(server, port, payload, Arc::clone(&stop_server))?;
        let stop_sampler = Arc::new(AtomicBool::new(false));
        let sampler = flood::spawn_conntrack_sampler(gw, Arc::clone(&stop_sampler));
        let sources = match flood.sources {
            FloodSourceKind::Random => flood::Sources::Random,
            FloodSourceKind::Own => flood::Sources::Own(flooder_addr),
        };
        if flood.sources == FloodSourceKind::Random {
            for route in flood::SPOOFED_ROUTES {
                let family = if route.contains(':') { "-6" } else { "-4" };
                netns::run_in(gw, "ip", &[family, "route", "replace", "blackhole", route])?;
            }
        }
        // What explains a failure: kernel counters on the gateway and the server, and the
        // gateway's connections to the server left by earlier cases.
        let server_socket = std::net::SocketAddr::new(server.addr, port);
        let tracked_before = join_lab(flood::tracked_conns_to(gw, server_socket))?;
        let gw_counters0 = join_lab(flood::read_net_counters(gw))?;
        let server_counters0 = join_lab(flood::read_net_counters(&server.ns))?;
        let client_counters0 = join_lab(flood::read_net_counters(&client.ns))?;
        // Before the clock starts: resolving the flooder's next hop may take a second.
        let link = match server.addr {
            std::net::IpAddr::V6(_) if !flood.requests => {
                Some(flood::flood_link(flooder_ns, server.addr)?)
            }
            _ => None,
        };
        let (soft0, total0) = flood::cpu_times();
        let started = Instant::now();
        let stop_flood = Arc::new(AtomicBool::new(false));
        let requested = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let flooder = if flood.requests {
            flood::spawn_request_flood(
                flooder_ns,
                flooder_addr,
                server.addr,
                port,
                payload.request(false),
                flood.rate_pps,
                flood.duration_ms,
                Arc::clone(&stop_flood),
                Arc::clone(&requested),
            )
        } else {
            flood::spawn_flood(
                flooder_ns,
                server.addr,
                port,
                sources,
                flood.rate_pps,
                flood.duration_ms,
                Arc::clone(&stop_flood),
                link,
            )
        };
        // Let the flood build up before the legitimate clients start.
        std::thread::sleep(Duration::from_millis(100));
        let legit = flood::spawn_legit(
            client,
            server,
            port,
            payload,
            flood.connections,
            flood.duration_ms.saturating_sub(300),
        );
        let mut banned_after_ms = None;
        if flood.ban_within_ms.is_some() {
            let needle = flooder_addr.to_string();
            while started.elapsed() < Duration::from_millis(u64::from(flood.duration_ms)) {
                if self.gateway.ban_sets.iter().any(|set| {
                    let mut args = vec!["list", "set"];
                    args.extend(set.split_whitespace());
                    nft_in(gw)
                        .args(&args)
                        .output()
                        .map(|o| String::from_utf8_lossy(&o.stdout).contains(&needle))
                        .unwrap_or(false)
                }) {
                    banned_after_ms = Some(started.elapsed().as_millis() as u64);
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let legit_ok = join_lab(legit);
        stop_flood.store(true, std::sync::atomic::Ordering::Relaxed);
        let sent = join_lab(flooder);
        let banned_sources: u64 = self
            .gateway
            .ban_sets
            .iter()
            .map(|set| ban_set_size(gw, set))
            .sum();
        let flood_ms = started.elapsed().as_millis().max(1) as u64;
        let (soft1, total1) = flood::cpu_times();
        stop_sampler.store(true, std::sync::atomic::Ordering::Relaxed);
        stop_server.store(true, std::sync::atomic::Ordering::Relaxed);
        let conntrack_peak = join_lab(sampler).unwrap_or(0);
        let gw_counters1 = join_lab(flood::read_net_counters(gw))?;
        let server_counters1 = join_lab(flood::read_net_counters(&server.ns));
        let client_counters1 = join_lab(flood::read_net_counters(&client.ns));
        let tracked_after = join_lab(flood::tracked_conns_to(gw, server_socket));
        // Its error is returned after the cleanup below: a server that stopped answering
        // must fail the case as an error, not pass for lost replies.
        let server_counts = join_lab(server_thread);
        if syncookies_off {
            netns::run_in(&server.ns, "sysctl", &["-qw", "net.ipv4.tcp_syncookies=1"])?;
        }
        if flood.sources == FloodSourceKind::Random {
            for route in flood::SPOOFED_ROUTES {
                let family = if route.contains(':') { "-6" } else { "-4" };
                let _ = netns::run_in(gw, "ip", &[family, "route", "del", "blackhole", route]);
            }
        }
        let server_counts = server_counts?;
        let legit = legit_ok?;
        let legit_ok = legit.ok;
        let sent = sent?;
        let ratio = f64::from(legit_ok) / f64::from(flood.connections.max(1));
        let softirq_pct = if total1 > total0 {
            (soft1 - soft0) as f64 * 100.0 / (total1 - total0) as f64
        } else {
            0.0
        };
        let measure = FloodMeasure {
            flood_packets: sent,
            flood_pps: sent * 1000 / flood_ms.min(u64::from(flood.duration_ms)),
            legit_attempts: flood.connections,
            legit_ok,
            success_ratio: ratio,
            conntrack_peak,
            proxied_syns: flood::counter_delta(
                &gw_counters0,
                &gw_counters1,
                "synproxy_syn_received",
            ),
            softirq_pct,
            banned_after_ms,
            banned_sources,
        };
        let ban_ok = match flood.ban_within_ms {
            None => true,
            Some(limit) => banned_after_ms.is_some_and(|t| t <= limit),
        };
        let source = match flood.sources {
            FloodSourceKind::Random => "random sources".to_string(),
            FloodSourceKind::Own => format!("{flooder_addr}"),
        };
        let what = if flood.requests {
            format!(
                "a request flood of {} connections/s ({} requests sent on completed handshakes)",
                measure.flood_pps,
                requested.load(std::sync::atomic::Ordering::Relaxed)
            )
        } else {
            format!("a SYN flood of {} pps", measure.flood_pps)
        };
        let mut detail = format!(
            "{legit_ok}/{} legitimate exchanges ({:.1}%; {} handshakes and {} replies failed, {} of them reset) during {what} from {source}; gateway conntrack peak {conntrack_peak}; SYN proxy answered {} SYNs; softirq {softirq_pct:.0}%",
            flood.connections,
            ratio * 100.0,
            legit.connect_failed,
            legit.reply_failed,
            legit.reply_reset,
            measure.proxied_syns,
        );
        detail.push_str(&format!(
            "; the server accepted {} and answered {}",
            server_counts.accepted, server_counts.served
        ));
        if server_counts.transient_errors > 0 {
            detail.push_str(&format!(
                " (accept retried after {} connection errors)",
                server_counts.transient_errors
            ));
        }
        if !self.gateway.ban_sets.is_empty() {
            detail.push_str(&format!("; {banned_sources} sources banned"));
        }
        if flood.ban_within_ms.is_some() {
            match banned_after_ms {
                Some(t) => detail.push_str(&format!("; flooder banned after {t} ms")),
                None => detail.push_str("; flooder never banned"),
            }
        }
        if ratio < flood.success_threshold {
            let mut moved = flood::moved_counters(&gw_counters0, &gw_counters1);
            moved.extend(
                flood::moved_counters(&server_counters0, &server_counters1?)
                    .into_iter()
                    .map(|c| format!("server {c}")),
            );
            moved.extend(
                flood::moved_counters(&client_counters0, &client_counters1?)
                    .into_iter()
                    .map(|c| format!("client {c}")),
            );
            // Failed connections whose 4-tuple the gateway still tracked from an earlier one.
            let reused: Vec<String> = legit
                .reply_failed_ports
                .iter()
                .filter_map(|port| {
                    let c = tracked_before.iter().find(|c| c.client_port == *port)?;
                    Some(format!("{port} ({})", c.state))
                })
                .collect();
            detail.push_str(&format!(
                "; counters moved: {}; gateway connections to {server_socket} by state, before: {}, after: {}; failed client ports {:?}, of them tracked before: {}",
                or_none(&moved),
                or_none(&flood::count_states(&tracked_before)),
                or_none(&flood::count_states(&tracked_after?)),
                legit.reply_failed_ports,
                or_none(&reused),
            ));
        }
        let result = if ratio >= flood.success_threshold && ban_ok {
            scenario::Expectation::Allowed
        } else {
            scenario::Expectation::Blocked
        };
        Ok((traffic::Observation { result, detail }, measure))
    }
}

fn kind_label(kind: scenario::CaseKind) -> &'static str {
    match kind {
        scenario::CaseKind::Flow => "flow",
        scenario::CaseKind::Dhcp => "dhcp",
        scenario::CaseKind::ArpSpoof => "arp",
        scenario::CaseKind::NamePoison => "llmnr/nbt-ns/mdns",
        scenario::CaseKind::Http => "http",
    }
}

/// A program on `PATH` (or in `/usr/sbin`).
fn find_program(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .or_else(|| {
            let p = std::path::Path::new("/usr/sbin").join(name);
            p.is_file().then_some(p)
        })
}

/// For an L2 case: the guard's bridge rules that moved, when any did (the gateway's own rules
/// move too, for the legitimate DHCP exchange or ARP, but explain nothing about the attack).
fn moved_l2_evidence(before: &Counters, after: &Counters) -> Vec<Evidence> {
    let all = moved(before, after);
    if all.iter().any(|e| e.chain.starts_with("bridge ")) {
        all.into_iter()
            .filter(|e| e.chain.starts_with("bridge "))
            .collect()
    } else {
        focus_evidence(all)
    }
}

/// The commented rules whose counters moved between two readings, focused on what explains
/// the verdict.
fn moved_evidence(before: &Counters, after: &Counters) -> Vec<Evidence> {
    focus_evidence(moved(before, after))
}

fn moved(before: &Counters, after: &Counters) -> Vec<Evidence> {
    let mut evidence: Vec<Evidence> = after
        .iter()
        .filter(|(key, (packets, _))| before.get(*key).map_or(*packets > 0, |(b, _)| packets > b))
        .filter(|(_, (_, comment))| !comment.is_empty())
        .map(|((chain, handle), (_, comment))| Evidence {
            chain: chain.clone(),
            handle: *handle,
            comment: comment.clone(),
        })
        .collect();
    evidence.sort_by_key(|e| e.handle);
    evidence
}

/// `items` joined by commas, or `none`.
fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

fn join_lab<T>(handle: std::thread::JoinHandle<Result<T, LabError>>) -> Result<T, LabError> {
    handle.join().map_err(|_| LabError::Traffic {
        message: "a flood thread panicked".into(),
    })?
}

/// Keep what explains the verdict: the policy rules whose counters moved (comments `#N …`);
/// when none did, the chain defaults that did. Counters moved by background traffic of the range
/// (IPv6 multicast listener reports, the established/related prelude) are left out.
fn focus_evidence(moved: Vec<Evidence>) -> Vec<Evidence> {
    let (rules, rest): (Vec<Evidence>, Vec<Evidence>) =
        moved.into_iter().partition(|e| e.comment.starts_with('#'));
    if !rules.is_empty() {
        return rules;
    }
    // Prelude steps that act for a policy rule (bans, the SYN proxy, the classifier's
    // verdict), before the chain defaults.
    const ACTING: [&str; 4] = [
        "rampart prelude: banned",
        "rampart synproxy",
        "rampart app:",
        "rampart auto-ban",
    ];
    // The L2 guard's bridge table acts before any inet chain sees the frame.
    let (acting, rest): (Vec<Evidence>, Vec<Evidence>) = rest.into_iter().partition(|e| {
        ACTING.iter().any(|a| e.comment.starts_with(a)) || e.chain.starts_with("bridge ")
    });
    if !acting.is_empty() {
        return acting;
    }
    rest.into_iter()
        .filter(|e| e.comment.starts_with("rampart default"))
        .collect()
}

fn family_label(family: FamilyName) -> &'static str {
    match family {
        FamilyName::Ipv4 => "IPv4",
        FamilyName::Ipv6 => "IPv6",
    }
}

/// cgroups created for a run, removed (deepest first) when dropped; pre-existing ones are
/// never touched.
struct CgroupGuard {
    created: Vec<std::path::PathBuf>,
}

impl CgroupGuard {
    fn create(root: &std::path::Path, paths: &[String]) -> Result<Self, LabError> {
        let mut guard = CgroupGuard {
            created: Vec::new(),
        };
        for path in paths {
            let mut dir = root.to_path_buf();
            for part in path.split('/').filter(|p| !p.is_empty() && *p != "..") {
                dir.push(part);
                if !dir.exists() {
                    std::fs::create_dir(&dir).map_err(|source| LabError::Spawn {
                        command: format!("mkdir {}", dir.display()),
                        source,
                    })?;
                    guard.created.push(dir.clone());
                }
            }
        }
        Ok(guard)
    }
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        for dir in self.created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// nft inside the gateway through `nsenter`, not `ip netns exec`: the latter remounts `/sys`
/// and hides the cgroup2 mount that nft needs to resolve `socket cgroupv2` paths.
fn nft_in(gw: &str) -> std::process::Command {
    let mut command = std::process::Command::new("nsenter");
    command.arg(format!("--net=/run/netns/{gw}")).arg("nft");
    command
}

fn load_ruleset(gw: &str, ruleset: &str) -> Result<(), LabError> {
    let mut child = nft_in(gw)
        .args(["-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: "nft -f - (in the gateway)".into(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(ruleset.as_bytes())
            .map_err(|source| LabError::Spawn {
                command: "writing the ruleset to nft".into(),
                source,
            })?;
    }
    let output = child.wait_with_output().map_err(|source| LabError::Spawn {
        command: "nft -f -".into(),
        source,
    })?;
    if !output.status.success() {
        return Err(LabError::Ruleset {
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Packet counters of every rule in the gateway's tables that carries a counter, keyed by
/// (chain, handle), with the rule's comment.
type Counters = BTreeMap<(String, u64), (u64, String)>;

fn counters(gw: &str) -> Result<Counters, LabError> {
    let output = nft_in(gw)
        .args(["-j", "list", "ruleset"])
        .output()
        .map_err(|source| LabError::Spawn {
            command: "nft -j list ruleset (in the gateway)".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(LabError::CommandFailed {
            command: "nft -j list ruleset (in the gateway)".into(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(parse_counters(&output.stdout))
}

/// Parse `nft -j list ruleset` output into rule counters. Rules without a counter are skipped.
pub fn parse_counters(json: &[u8]) -> Counters {
    let mut counters = Counters::new();
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(json) else {
        return counters;
    };
    let Some(items) = value.get("nftables").and_then(|v| v.as_array()) else {
        return counters;
    };
    for item in items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let chain = format!(
            "{} {} {}",
            rule["family"].as_str().unwrap_or(""),
            rule["table"].as_str().unwrap_or(""),
            rule["chain"].as_str().unwrap_or("")
        );
        let handle = rule["handle"].as_u64().unwrap_or(0);
        let comment = rule["comment"].as_str().unwrap_or("").to_string();
        let packets = rule["expr"].as_array().and_then(|exprs| {
            exprs
                .iter()
                .find_map(|e| e.get("counter").and_then(|c| c["packets"].as_u64()))
        });
        if let Some(packets) = packets {
            counters.insert((chain, handle), (packets, comment));
        }
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(comment: &str) -> Evidence {
        Evidence {
            chain: "inet rampart forward".into(),
            handle: 1,
            comment: comment.into(),
        }
    }

    #[test]
    fn evidence_prefers_policy_rules_then_defaults() {
        let moved = vec![
            ev("rampart prelude: established,related"),
            ev("#3 smb-egress/smb.forward p.toml:9 T1187"),
            ev("rampart default egress drop"),
        ];
        let kept = focus_evidence(moved);
        assert_eq!(kept.len(), 1);
        assert!(kept[0].comment.starts_with("#3"));
        let kept = focus_evidence(vec![
            ev("rampart prelude: established,related"),
            ev("rampart default forward drop"),
        ]);
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].comment, "rampart default forward drop");
    }

    #[test]
    fn ban_set_elements_are_counted() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"set": {"family": "inet", "name": "ban_v4", "table": "rampart", "type": "ipv4_addr",
            "elem": [{"elem": {"val": "198.51.100.30", "timeout": 600, "expires": 599}},
                     {"elem": {"val": "198.51.100.31", "timeout": 600, "expires": 598}}]}}]}"#;
        assert_eq!(count_set_elements(json), 2);
        let empty = br#"{"nftables": [{"set": {"family": "inet", "name": "ban_v4"}}]}"#;
        assert_eq!(count_set_elements(empty), 0);
        assert_eq!(count_set_elements(b"nonsense"), 0);
    }

    #[test]
    fn counters_are_read_from_nft_json() {
        let json = br#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
          {"table": {"family": "inet", "name": "rampart", "handle": 1}},
          {"rule": {"family": "inet", "table": "rampart", "chain": "forward", "handle": 7,
            "comment": "smb-egress/block policy.toml:3:1 T1187",
            "expr": [{"match": {}}, {"counter": {"packets": 3, "bytes": 180}}, {"drop": null}]}},
          {"rule": {"family": "inet", "table": "rampart", "chain": "forward", "handle": 8,
            "expr": [{"accept": null}]}}]}"#;
        let counters = parse_counters(json);
        assert_eq!(counters.len(), 1);
        let (packets, comment) = &counters[&("inet rampart forward".to_string(), 7)];
        assert_eq!(*packets, 3);
        assert!(comment.starts_with("smb-egress/block"));
        assert!(parse_counters(b"not json").is_empty());
    }
}
