//! `rampart log`: read NFLOG (the group Rampart's `log` rules use) and print each logged packet
//! with its policy rule, file:line and techniques; `--json` writes EVE-shaped `rampart_events`
//! lines instead. When a daemon runs (`--config`, or the default run configuration's daemon
//! answers), it follows the daemon's events instead (every component's, from its control
//! socket): the daemon's own NFLOG reader holds the group then. `--nflog` always reads the
//! kernel (the daemon's NFLOG reader runs that way).

use std::path::PathBuf;
use std::time::Duration;

use rampart_events::{Event, Flow, JsonLinesSink, RuleRef, Sink, Verdict};
use rampart_ir::{RuleId, SourceLoc, TechniqueId};
use rampart_nft_apply::nflog::{ifname, LoggedPacket, NflogSocket};
use rampart_nft_apply::state::{RuleMap, StateDir};

use crate::cmd::run::Target;
use crate::Outcome;

/// Arguments of `rampart log`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// NFLOG group (the `--log-group` the policy was applied with).
    #[arg(long, default_value_t = 1037)]
    pub(crate) group: u16,
    /// Stop after this many packets (default: run until interrupted).
    #[arg(long)]
    pub(crate) count: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub(crate) timeout_s: Option<u64>,
    /// Write EVE-shaped JSON events, one per line.
    #[arg(long)]
    pub(crate) json: bool,
    /// Map rules with this policy instead of the rule map saved at apply time.
    #[arg(long)]
    pub(crate) policy: Option<PathBuf>,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`); given, it means the
    /// kernel's NFLOG even when a daemon runs.
    #[arg(long, conflicts_with = "config")]
    pub(crate) state_dir: Option<PathBuf>,
    /// Follow the events of the daemon of this run configuration (default: the daemon of
    /// `$RAMPART_RUN_CONFIG` or `/etc/rampart/run.toml`, when it runs).
    #[arg(long, conflicts_with = "nflog")]
    pub(crate) config: Option<PathBuf>,
    /// Read the kernel's NFLOG group even when a daemon runs.
    #[arg(long)]
    pub(crate) nflog: bool,
    /// With a daemon: only this component's events (`nft` for kernel drops, `dns`, `egress`,
    /// `daemon`, …).
    #[arg(long)]
    pub(crate) component: Option<String>,
}

fn rfc3339_now() -> String {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rampart_events::rfc3339_utc(u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX))
}

fn proto_name(p: u8) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        1 => "ICMP".into(),
        58 => "IPv6-ICMP".into(),
        n => n.to_string(),
    }
}

fn event(p: &LoggedPacket, map: Option<&RuleMap>) -> Event {
    let info = p.rule_index().and_then(|i| map.and_then(|m| m.get(i)));
    let flow = p.headers.as_ref().map(|h| Flow {
        src_ip: h.src,
        src_port: h.src_port,
        dest_ip: h.dst,
        dest_port: h.dst_port,
        proto: proto_name(h.protocol),
    });
    // A ban line is logged once per ban by an accept rule whose limit the source exceeded:
    // the packet is dropped and the source blocked for the ban's timeout.
    let verdict = match info.map(|i| i.action.as_str()) {
        _ if p.is_ban() => Verdict::Block,
        Some("accept") => Verdict::Allow,
        Some(_) => Verdict::Block,
        None => Verdict::Alert,
    };
    let mut detail = serde_json::Map::new();
    detail.insert("prefix".into(), p.prefix.clone().into());
    if let Some(i) = p.iif.and_then(ifname) {
        detail.insert("in_iface".into(), i.into());
    }
    if let Some(o) = p.oif.and_then(ifname) {
        detail.insert("out_iface".into(), o.into());
    }
    if let Some(t) = p.headers.as_ref().and_then(|h| h.icmp_type) {
        detail.insert("icmp_type".into(), t.into());
    }
    Event {
        timestamp: rfc3339_now(),
        event_type: if p.is_ban() { "ban" } else { "flow" }.into(),
        component: "nft".into(),
        flow,
        verdict,
        rule: info.map(|i| RuleRef {
            id: RuleId(i.index),
            name: i.name.clone(),
            loc: SourceLoc {
                file: i.file.clone(),
                line: i.line,
                col: i.col,
            },
        }),
        techniques: info
            .map(|i| i.techniques.iter().cloned().map(TechniqueId).collect())
            .unwrap_or_default(),
        reason: match info {
            Some(i) if p.is_ban() => format!(
                "source banned: over the limit of rule {} ({})",
                i.name, i.direction
            ),
            Some(i) => format!("rule {} ({}) {}", i.name, i.direction, i.action),
            None => format!("nflog prefix {}", p.prefix),
        },
        detail,
    }
}

fn human(e: &Event) -> String {
    let flow = e
        .flow
        .as_ref()
        .map(|f| {
            let port = |p: Option<u16>| p.map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{} {}{} -> {}{}",
                f.proto,
                f.src_ip,
                port(f.src_port),
                f.dest_ip,
                port(f.dest_port)
            )
        })
        .unwrap_or_else(|| "(no IP header)".into());
    let rule = e
        .rule
        .as_ref()
        .map(|r| format!("{} {}:{}", r.name, r.loc.file, r.loc.line))
        .unwrap_or_else(|| e.reason.clone());
    let tech: Vec<&str> = e.techniques.iter().map(|t| t.0.as_str()).collect();
    format!(
        "{} {:?} {flow}  {rule}  {}",
        e.timestamp,
        e.verdict,
        tech.join(",")
    )
}

/// One line for a daemon event (any component's).
fn human_value(e: &serde_json::Value) -> String {
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_string();
    let flow = &e["flow"];
    let endpoint = |ip: &str, port: &str| match (flow[ip].as_str(), flow[port].as_u64()) {
        (Some(ip), Some(port)) => format!("{ip}:{port}"),
        (Some(ip), None) => ip.to_string(),
        _ => "-".into(),
    };
    let flow = if flow.is_object() {
        format!(
            " {} {} -> {}",
            text(&flow["proto"]),
            endpoint("src_ip", "src_port"),
            endpoint("dest_ip", "dest_port")
        )
    } else {
        String::new()
    };
    let rule = e["rule"]["name"]
        .as_str()
        .map(|r| format!(" [{r}]"))
        .unwrap_or_default();
    let techniques = e["techniques"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(serde_json::Value::as_str)
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    format!(
        "{} {} {}{flow}{rule} {}  {techniques}",
        text(&e["timestamp"]),
        text(&e["component"]),
        text(&e["verdict"]),
        text(&e["reason"])
    )
}

/// Follow the daemon's events until `--count`/`--timeout-s` or interruption.
fn follow_daemon(args: &Args, config: &rampart_daemon::RunConfig) -> anyhow::Result<Outcome> {
    let mut events = rampart_daemon::control::follow_events(
        &config.control_socket(),
        args.component.as_deref(),
    )?;
    let deadline = args
        .timeout_s
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    events.set_timeout(Some(Duration::from_millis(250)))?;
    let mut out = std::io::stdout().lock();
    let mut seen = 0u64;
    while args.count.is_none_or(|c| seen < c)
        && deadline.is_none_or(|d| std::time::Instant::now() < d)
    {
        let event = match events.next_event() {
            Ok(Some(event)) => event,
            // The daemon stopped.
            Ok(None) => break,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(e.into()),
        };
        use std::io::Write;
        if args.json {
            writeln!(out, "{event}")?;
        } else {
            writeln!(out, "{}", human_value(&event))?;
        }
        out.flush()?;
        seen += 1;
    }
    Ok(Outcome::Clean)
}

/// Runs until `--count`/`--timeout-s` or interruption.
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let state_dir = if args.nflog {
        args.state_dir.clone()
    } else {
        match crate::cmd::run::target(args.config.as_deref(), args.state_dir.as_deref())? {
            Target::Daemon(config) => return follow_daemon(&args, &config),
            Target::Local { state_dir, .. } => state_dir,
        }
    };
    anyhow::ensure!(
        args.component.is_none() || args.component.as_deref() == Some("nft"),
        "--component selects a daemon's events; no daemon runs (NFLOG events are component `nft`)"
    );
    let map = match &args.policy {
        Some(p) => Some(RuleMap::from_policy(&crate::load::policy(p)?, "rampart")),
        None => StateDir::resolve(state_dir.as_deref()).read_json("applied.json")?,
    };
    let mut sock = NflogSocket::bind(args.group)?;
    sock.set_timeout(Some(Duration::from_millis(250)))?;
    let deadline = args
        .timeout_s
        .map(|s| std::time::Instant::now() + Duration::from_secs(s));
    let mut sink = JsonLinesSink::new(std::io::stdout().lock());
    let mut seen = 0u64;
    loop {
        if args.count.is_some_and(|c| seen >= c)
            || deadline.is_some_and(|d| std::time::Instant::now() >= d)
        {
            break;
        }
        for p in sock.recv()? {
            let e = event(&p, map.as_ref());
            if args.json {
                sink.emit(&e)?;
            } else {
                println!("{}", human(&e));
            }
            seen += 1;
            if args.count.is_some_and(|c| seen >= c) {
                break;
            }
        }
    }
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_events_read_as_one_line_each() {
        let drop = serde_json::json!({
            "timestamp": "2026-11-28T02:00:00Z",
            "component": "nft",
            "verdict": "block",
            "flow": {"proto": "TCP", "src_ip": "192.0.2.2", "src_port": 40000, "dest_ip": "192.0.2.1", "dest_port": 9},
            "rule": {"name": "discard-probe"},
            "reason": "rule discard-probe (ingress) drop",
            "techniques": ["T1095"],
        });
        assert_eq!(
            human_value(&drop),
            "2026-11-28T02:00:00Z nft block TCP 192.0.2.2:40000 -> 192.0.2.1:9 [discard-probe] rule discard-probe (ingress) drop  T1095"
        );
        let daemon = serde_json::json!({
            "timestamp": "2026-11-28T02:00:01Z",
            "component": "daemon",
            "verdict": "allow",
            "reason": "confirmed apply 1-2",
        });
        assert_eq!(
            human_value(&daemon),
            "2026-11-28T02:00:01Z daemon allow confirmed apply 1-2  "
        );
    }
}
