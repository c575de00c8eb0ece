//! `rampart lab`: an ATT&CK range in network namespaces. It builds a gateway namespace between
//! six segments (internet, dmz, corp on a bridge, iot, admin, guest; IPv4 and IPv6 from the
//! documentation ranges), loads a compiled ruleset into the gateway, plays each scenario's
//! attack and legitimate twin with real sockets, reads which nftables rule counters moved as
//! evidence, and scores the policy per technique. This crate is a shell (it runs `ip` and `nft`
//! and opens sockets in namespaces); it does not compile policies — the caller hands it the
//! ruleset text — and it never touches the host's own namespace, ruleset or sysctls.

#![deny(missing_docs)]

pub mod netns;
pub mod scenario;
pub mod score;
pub mod topology;
pub mod traffic;

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

use scenario::{FamilyName, Scenario, Traffic};
use score::{CaseResult, Evidence, Scoreboard};
use topology::Topology;
use traffic::Endpoint;

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
        let mut results = Vec::new();
        for scenario in &self.scenarios {
            for case in &scenario.cases {
                for family in &case.families {
                    if INTERRUPTED.load(Ordering::SeqCst) {
                        return Err(LabError::Interrupted);
                    }
                    let result = self.play_case(&gw, scenario, case, *family)?;
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
        }
        drop(namespaces);
        Ok(Scoreboard::new(
            self.policy_name.clone(),
            &self.scenarios,
            results,
        ))
    }

    fn play_case(
        &self,
        gw: &str,
        scenario: &Scenario,
        case: &scenario::Case,
        family: FamilyName,
    ) -> Result<CaseResult, LabError> {
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
        let mut observation =
            traffic::play(traffic, &client_end, &server_end, traffic::FIRST_WAIT_MS)?;
        if observation.result != case.expect && case.expect == scenario::Expectation::Allowed {
            observation = traffic::play(traffic, &client_end, &server_end, traffic::RETRY_WAIT_MS)?;
            observation.detail.push_str(" (on a patient retry)");
        }
        let after = counters(gw)?;
        let mut evidence: Vec<Evidence> = after
            .iter()
            .filter(|(key, (packets, _))| {
                before.get(*key).map_or(*packets > 0, |(b, _)| packets > b)
            })
            .filter(|(_, (_, comment))| !comment.is_empty())
            .map(|((chain, handle), (_, comment))| Evidence {
                chain: chain.clone(),
                handle: *handle,
                comment: comment.clone(),
            })
            .collect();
        evidence.sort_by_key(|e| e.handle);
        let evidence = focus_evidence(evidence);
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
        })
    }
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
