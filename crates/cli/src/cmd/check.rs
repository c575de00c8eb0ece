//! `rampart check`: validate a policy and analyse what it really does. With `--run`, validate a
//! whole deployment instead: the run configuration, the policy it names, and the configuration
//! of every component it lists, loaded the way each component loads it at start (the WAF's
//! SecLang files included, so a rule exclusion that selects no loaded rule or names no route is
//! reported here, before anything runs).

use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::Outcome;

/// Arguments of `rampart check`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["policy", "run"])))]
pub(crate) struct Args {
    /// Policy file.
    pub(crate) policy: Option<PathBuf>,
    /// A run configuration (`rampart run --config`): check its policy, every component's
    /// configuration, and that every component the policy enables runs (or is listed in
    /// `elsewhere`).
    #[arg(long, value_name = "RUN_TOML")]
    pub(crate) run: Option<PathBuf>,
    /// Print diagnostics and findings as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Loads the policy (invalid input: exit 2 with every diagnostic), then reports validation
/// warnings and analysis findings; any warning or error finding makes the exit code 1. With
/// `--run`, every component configuration is loaded too; any that does not load is an error
/// (exit 2) after all of them were tried, each error naming its file.
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let (policy_path, components, run_config) = match &args.run {
        Some(run) => {
            let config = crate::cmd::run::load_config(run)?;
            let checked: Vec<ComponentCheck> = config
                .components
                .iter()
                .map(|c| check_component(c, &config.policy))
                .collect();
            (config.policy.clone(), Some(checked), Some(config))
        }
        None => (
            args.policy
                .clone()
                .context("a policy file or --run is required")?,
            None,
            None,
        ),
    };
    let loaded = crate::load::policy_with_warnings(&policy_path)?;
    let report = rampart_analysis::check(&loaded.policy, crate::load::today());
    let problems = report.has_problems() || !loaded.warnings.is_empty();
    let components = components.unwrap_or_default();
    if args.json {
        let mut out = serde_json::json!({
            "policy": policy_path.display().to_string(),
            "diagnostics": loaded.warnings,
            "analysis": report,
        });
        if args.run.is_some() {
            out["components"] = components
                .iter()
                .map(ComponentCheck::to_json)
                .collect::<Vec<_>>()
                .into();
        }
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print!("{}", loaded.warnings_text);
        print!("{}", report.render_text(&loaded.policy));
        for c in &components {
            match &c.result {
                Ok(summary) => println!("component {} ({}): {summary}", c.name, c.config),
                Err(e) => println!("component {} ({}): error: {e}", c.name, c.config),
            }
        }
    }
    // Every component the policy enables must run in the deployment (or be declared to run
    // elsewhere): `rampart run` refuses to start or reload otherwise.
    let unrun = run_config
        .as_ref()
        .map(|config| config.check_components(&loaded.policy));
    let broken: Vec<&ComponentCheck> = components.iter().filter(|c| c.result.is_err()).collect();
    if let Some(Err(e)) = unrun {
        if !broken.is_empty() {
            eprintln!("{e}");
        } else {
            anyhow::bail!("{e}");
        }
    }
    if !broken.is_empty() {
        let names: Vec<&str> = broken.iter().map(|c| c.name.as_str()).collect();
        anyhow::bail!(
            "{} component configuration(s) do not load: {}",
            broken.len(),
            names.join(", ")
        );
    }
    Ok(if problems {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

/// What loading one component's configuration gave.
struct ComponentCheck {
    name: String,
    kind: &'static str,
    /// The configuration file, or `-` for kinds that read only the policy.
    config: String,
    /// A one-line summary, or the error (naming the file, and `file:line` where the loader
    /// knows it).
    result: Result<String, String>,
}

impl ComponentCheck {
    fn to_json(&self) -> serde_json::Value {
        let mut v =
            serde_json::json!({ "name": self.name, "kind": self.kind, "config": self.config });
        match &self.result {
            Ok(summary) => {
                v["ok"] = true.into();
                v["summary"] = summary.as_str().into();
            }
            Err(e) => {
                v["ok"] = false.into();
                v["error"] = e.as_str().into();
            }
        }
        v
    }
}

fn check_component(component: &rampart_daemon::ComponentConfig, policy: &Path) -> ComponentCheck {
    let kind = component.kind.as_str();
    let config = component
        .config
        .as_ref()
        .map_or_else(|| "-".to_string(), |p| p.display().to_string());
    let result = match &component.config {
        _ if component.from_policy => {
            load_from_policy(component, policy).map_err(|e| one_line(&format!("{e:#}")))
        }
        None => Ok("reads the policy".to_string()),
        Some(path) => load_component(component.kind, path).map_err(|e| one_line(&format!("{e:#}"))),
    };
    ComponentCheck {
        name: component.name.clone(),
        kind,
        config,
        result,
    }
}

/// `from_policy` components: build their configuration from the policy's `[[programs]]`
/// (jail) or `[l2]` merged with the runtime file (guard), as `--policy` does at start.
fn load_from_policy(
    component: &rampart_daemon::ComponentConfig,
    policy_path: &Path,
) -> anyhow::Result<String> {
    let policy = crate::load::policy_with_warnings(policy_path)?.policy;
    let name = policy_path.display().to_string();
    match component.kind {
        rampart_daemon::ComponentKind::Jail => {
            let config = rampart_jail::Config::from_policy(&policy)
                .with_context(|| format!("{name} cannot drive the jail"))?;
            Ok(format!(
                "{} program(s) from the policy",
                config.programs.len()
            ))
        }
        _ => {
            let l2 = policy
                .l2
                .as_ref()
                .with_context(|| format!("{name} has no [l2]"))?;
            let runtime = component.config.as_deref();
            let text = runtime
                .map(|p| {
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))
                })
                .transpose()?;
            let runtime_name = runtime.map(|p| p.display().to_string());
            rampart_guard::Config::from_policy(
                l2,
                text.as_deref(),
                rampart_guard::config::Sources {
                    policy: &name,
                    runtime: runtime_name.as_deref(),
                },
            )
            .with_context(|| format!("the guard configuration from {name} is not valid"))?;
            Ok("ok ([l2] from the policy)".into())
        }
    }
}

/// Load a component's configuration the way the component does at start.
fn load_component(kind: rampart_daemon::ComponentKind, path: &Path) -> anyhow::Result<String> {
    use rampart_daemon::ComponentKind as K;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let invalid = || format!("{} is not valid", path.display());
    Ok(match kind {
        K::Dns => {
            rampart_dns::Config::from_toml(&text).with_context(invalid)?;
            "ok".into()
        }
        K::Egress => {
            rampart_egress::Config::from_toml(&text).with_context(invalid)?;
            "ok".into()
        }
        K::Guard => {
            rampart_guard::Config::from_toml(&text).with_context(invalid)?;
            "ok".into()
        }
        K::Jail => {
            rampart_jail::Config::from_toml(&text).with_context(invalid)?;
            "ok".into()
        }
        K::Waf => {
            let config =
                rampart_waf::proxy::Config::from_toml_named(&path.display().to_string(), &text)
                    .with_context(invalid)?;
            // The certificate and key are read as the WAF reads them when it starts.
            config.check_tls().with_context(invalid)?;
            let rules = config.load_rules().with_context(invalid)?;
            format!(
                "ok, {} rules, {} warnings",
                rules.rule_count(),
                rules.warnings.len()
            )
        }
        K::Classify | K::Log | K::Feeds => "reads the policy".into(),
    })
}

/// Loader messages (a regex compiler's, say) can span lines; a report line must not.
fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
