//! `rampart lab`: play the ATT&CK range against a policy and print the scoreboard.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rampart_lab::scenario::Scenario;
use rampart_lab::topology::{Topology, DEFAULT_TOPOLOGY};
use rampart_lab::LabRun;

use crate::Outcome;

/// The policy played when none is given.
const DEFAULT_POLICY: &str = "examples/m1037-baseline/policy.toml";

/// Arguments of `rampart lab`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    #[command(subcommand)]
    action: Option<Action>,
    /// Policy to play (default: the M1037 baseline example).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Play only these scenarios (ids; repeatable).
    #[arg(long = "only", value_name = "SCENARIO")]
    only: Vec<String>,
    /// Extra scenario files or directories to play after the built-in ones.
    #[arg(long = "scenarios", value_name = "PATH")]
    scenarios: Vec<PathBuf>,
    /// Print the scoreboard as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also write the scoreboard as an HTML page.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Leave the range up afterwards for exploration (`rampart lab down` removes it).
    #[arg(long)]
    keep: bool,
    /// Play without a component the lab normally runs, to see the cases it proves fail
    /// (repeatable): `guard` (the L2 guard), `jail` (the per-program jail), `egress` (the egress
    /// proxy with every source in open mode) or `waf` (the WAF in DetectionOnly without its SSRF
    /// check).
    #[arg(
        long = "without",
        value_name = "COMPONENT",
        value_parser = ["guard", "jail", "egress", "waf"]
    )]
    without: Vec<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Action {
    /// Remove ranges left up by `--keep` or by a killed run (never a running lab's).
    Down,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    if let Some(Action::Down) = args.action {
        let removed = rampart_lab::netns::teardown_all()?;
        println!("removed {} lab namespaces", removed.len());
        return Ok(Outcome::Clean);
    }
    let policy_path = args.policy.unwrap_or_else(default_policy);
    let policy = crate::load::policy(&policy_path)?;
    let options = rampart_nft::EmitOptions {
        cgroup2_prefix: crate::load::cgroup2_prefix(),
        ..rampart_nft::EmitOptions::default()
    };
    let ruleset = rampart_nft::emit(&policy, &options)
        .with_context(|| format!("cannot compile {}", policy_path.display()))?;
    let mut gateway = gateway_setup(&policy, &policy_path, &options)?;
    gateway.rampart = Some(std::env::current_exe().context("cannot find the rampart binary")?);
    gateway.skip_guard = args.without.iter().any(|c| c == "guard");
    gateway.skip_jail = args.without.iter().any(|c| c == "jail");
    gateway.skip_egress = args.without.iter().any(|c| c == "egress");
    gateway.skip_waf = args.without.iter().any(|c| c == "waf");
    let mut scenarios = Scenario::builtin()?;
    for path in &args.scenarios {
        scenarios.extend(read_scenarios(path)?);
    }
    if !args.only.is_empty() {
        for id in &args.only {
            anyhow::ensure!(
                scenarios.iter().any(|s| &s.id == id),
                "no scenario `{id}` (known: {})",
                scenarios
                    .iter()
                    .map(|s| s.id.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        scenarios.retain(|s| args.only.contains(&s.id));
    }
    let mut stderr = std::io::stderr();
    eprintln!(
        "rampart lab: building the range and playing {} scenarios against {}",
        scenarios.len(),
        policy_path.display()
    );
    let board = LabRun {
        topology: Topology::parse(DEFAULT_TOPOLOGY)?,
        scenarios,
        ruleset: &ruleset,
        policy_name: policy_path.display().to_string(),
        keep: args.keep,
        cgroups: Some((cgroup2_root(), owner_cgroups(&policy))),
        progress: Some(&mut stderr),
        gateway,
    }
    .run()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&board)?);
    } else {
        print!("{}", board.render_text(std::io::stdout().is_terminal()));
    }
    if let Some(path) = &args.html {
        std::fs::write(path, board.render_html())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("rampart lab: HTML scoreboard written to {}", path.display());
    }
    if args.keep {
        eprintln!(
            "rampart lab: the range is still up (namespaces {}*); `rampart lab down` removes it",
            rampart_lab::netns::run_prefix()
        );
    }
    Ok(if board.all_passed() {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}

/// What the gateway needs besides the ruleset, as `rampart apply` would set it up: the sysctls
/// the SYN proxy and the classifier need, the iptables-nft queue rules, `rampart classify` in
/// the gateway when the policy has application-protocol rules, and the ban sets to empty
/// between flood scenarios.
fn gateway_setup(
    policy: &rampart_ir::Policy,
    policy_path: &Path,
    options: &rampart_nft::EmitOptions,
) -> anyhow::Result<rampart_lab::GatewaySetup> {
    use rampart_nft::app_queue;
    let iptables: Vec<(bool, String)> = app_queue::queue_rules(policy, options)
        .into_iter()
        .map(|r| (r.v6, r.spec))
        .collect();
    let daemon = if iptables.is_empty() {
        None
    } else {
        let exe = std::env::current_exe().context("cannot find the rampart binary")?;
        let policy_abs = std::fs::canonicalize(policy_path)
            .with_context(|| format!("cannot resolve {}", policy_path.display()))?;
        Some(vec![
            exe.display().to_string(),
            "classify".into(),
            "--policy".into(),
            policy_abs.display().to_string(),
        ])
    };
    let ban_sets = if policy.rules.iter().any(|r| r.ban.is_some()) {
        ["v4", "v6"]
            .iter()
            .map(|f| format!("inet {} ban_{f}", options.table))
            .collect()
    } else {
        Vec::new()
    };
    Ok(rampart_lab::GatewaySetup {
        sysctls: app_queue::required_sysctls(policy, options),
        iptables,
        iptables_table: app_queue::QUEUE_TABLE.to_string(),
        daemon,
        ban_sets,
        ..rampart_lab::GatewaySetup::default()
    })
}

fn cgroup2_root() -> PathBuf {
    Path::new("/sys/fs/cgroup").join(crate::load::cgroup2_prefix())
}

/// Every cgroup the policy's owner matches name.
fn owner_cgroups(policy: &rampart_ir::Policy) -> Vec<String> {
    let mut cgroups: Vec<String> = policy
        .rules
        .iter()
        .filter_map(|r| r.owner.as_ref())
        .flat_map(|o| o.cgroups.iter().cloned())
        .collect();
    cgroups.sort();
    cgroups.dedup();
    cgroups
}

/// The baseline example: relative to the working directory when run from a checkout, else next
/// to the sources this binary was built from.
fn default_policy() -> PathBuf {
    let here = PathBuf::from(DEFAULT_POLICY);
    if here.exists() {
        return here;
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(DEFAULT_POLICY)
}

fn read_scenarios(path: &Path) -> anyhow::Result<Vec<Scenario>> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        files.sort();
        files
    } else {
        vec![path.to_path_buf()]
    };
    files
        .iter()
        .map(|file| {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            Ok(Scenario::parse(&file.display().to_string(), &text)?)
        })
        .collect()
}
