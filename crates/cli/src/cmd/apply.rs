//! `rampart apply`: compile, check, snapshot and apply atomically; with `--confirm` a detached
//! watcher restores the previous table unless `rampart confirm` arrives in time. The lockout
//! guard refuses policies that would drop a new connection like the current SSH session (or a
//! `--keep-reachable` address) unless `--force`.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use rampart_ir::{proto, Direction, Policy};
use rampart_nft_apply::guard::{self, Flow};
use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::{RuleMap, StateDir};
use rampart_nft_apply::txn::{self, ApplyRequest, WatcherCommand};

use crate::cmd::compile::NftOpts;
use crate::Outcome;

/// Arguments of `rampart apply`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    pub(crate) policy: PathBuf,
    /// Roll back automatically after this long (`60s`, `2m`, `500ms`) unless `rampart confirm`.
    #[arg(long, value_parser = parse_duration)]
    pub(crate) confirm: Option<Duration>,
    /// Refuse the policy if a new TCP connection from ADDR to this host's PORT (default 22)
    /// would be dropped. Repeatable.
    #[arg(long, value_name = "ADDR[:PORT]")]
    pub(crate) keep_reachable: Vec<String>,
    /// Apply even if the lockout guard objects.
    #[arg(long)]
    pub(crate) force: bool,
    #[command(flatten)]
    pub(crate) nft: NftOpts,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
}

/// `60s`, `2m`, `1h`, `500ms`, or plain seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, mult_ms) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration `{s}`"))?;
    let ms = n.checked_mul(mult_ms).ok_or("duration too long")?;
    if ms == 0 || ms > 86_400_000 {
        return Err("duration must be between 1 ms and 24 h".into());
    }
    Ok(Duration::from_millis(ms))
}

/// `ip -o route get ADDR`: (device, preferred source) for reaching ADDR.
fn route_to(addr: IpAddr) -> (Option<String>, Option<IpAddr>) {
    let Ok(out) = Command::new("ip")
        .args(["-o", "route", "get", &addr.to_string()])
        .output()
    else {
        return (None, None);
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = text.split_whitespace().collect();
    let after = |key: &str| {
        words
            .iter()
            .position(|w| *w == key)
            .and_then(|i| words.get(i + 1))
            .map(|s| s.to_string())
    };
    (after("dev"), after("src").and_then(|s| s.parse().ok()))
}

fn parse_keep(s: &str) -> anyhow::Result<(IpAddr, u16)> {
    if let Ok(a) = s.parse::<IpAddr>() {
        return Ok((a, 22));
    }
    if let Ok(sa) = s.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip(), sa.port()));
    }
    anyhow::bail!("--keep-reachable `{s}`: expected ADDR, ADDR:PORT or [V6ADDR]:PORT")
}

/// The flows the guard must keep: the SSH session's and each `--keep-reachable`.
fn guarded_flows(args: &Args) -> anyhow::Result<Vec<(String, Flow)>> {
    let mut v = Vec::new();
    if let Ok(ssh) = std::env::var("SSH_CONNECTION") {
        let client = ssh.split_whitespace().next().and_then(|c| c.parse().ok());
        let iif = client.and_then(|c| route_to(c).0);
        match guard::ssh_flow(&ssh, iif) {
            Some(f) => v.push((format!("this SSH session (SSH_CONNECTION={ssh})"), f)),
            // Never skip the guard silently: an unreadable session is a refusal unless --force.
            None if !args.force => anyhow::bail!(
                "cannot read SSH_CONNECTION `{ssh}` to check this session is kept; use --keep-reachable ADDR[:PORT] and --force"
            ),
            None => eprintln!("rampart: cannot read SSH_CONNECTION `{ssh}`; --force given"),
        }
    }
    for k in &args.keep_reachable {
        let (addr, port) = parse_keep(k)?;
        let (dev, src) = route_to(addr);
        // The local address the peer would connect to: the one the kernel would answer from.
        let Some(local) = src else {
            anyhow::bail!(
                "--keep-reachable {k}: no route to {addr} (`ip route get` gave no source address)"
            );
        };
        v.push((
            format!("--keep-reachable {k}"),
            Flow {
                direction: Direction::Ingress,
                src: addr,
                dst: local,
                protocol: proto::TCP,
                src_port: 40000,
                dst_port: port,
                icmp_type: None,
                iif: dev,
                oif: None,
            },
        ));
    }
    Ok(v)
}

fn lockout_report(policy: &Policy, args: &Args) -> anyhow::Result<Vec<String>> {
    let today = if args.nft.keep_expired {
        None
    } else {
        Some(crate::load::today())
    };
    let mut out = Vec::new();
    for (what, flow) in guarded_flows(args)? {
        for (f, d) in guard::lockouts(policy, &flow, today) {
            out.push(format!(
                "{what}: a new {} flow {}:{} -> {}:{} would be {} by {}",
                f.direction,
                f.src,
                f.src_port,
                f.dst,
                f.dst_port,
                match d.action {
                    rampart_ir::Action::Accept => "accepted",
                    rampart_ir::Action::Drop => "dropped",
                    rampart_ir::Action::Reject => "rejected",
                },
                d.reason
            ));
        }
    }
    Ok(out)
}

/// Exit 1 when the guard refuses; 2 when nft refuses (the old table stays untouched).
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&args.policy)?;
    let opts = args.nft.emit_options();
    let text = rampart_nft::emit(&policy, &opts)?;
    crate::load::require_owner_cgroups(&policy)?;
    let problems = lockout_report(&policy, &args)?;
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("rampart: lockout guard: {p}");
        }
        if !args.force {
            eprintln!(
                "rampart: refusing to apply (use --force to apply anyway, ideally with --confirm)"
            );
            return Ok(Outcome::Findings);
        }
        eprintln!("rampart: --force given, applying anyway");
    }
    let state = StateDir::resolve(args.state_dir.as_deref());
    let exe =
        std::env::current_exe().context("cannot locate the rampart binary for the watcher")?;
    let req = ApplyRequest {
        text,
        table: opts.table.clone(),
        map: RuleMap::from_policy(&policy, &opts.table),
        confirm: args.confirm,
        watcher: Some(WatcherCommand {
            program: exe,
            args: vec![
                "rollback".into(),
                "--pending".into(),
                "{id}".into(),
                "--table".into(),
                opts.table.clone(),
                "--state-dir".into(),
                state.root.display().to_string(),
            ],
        }),
        queue: rampart_nft::app_queue::queue_rules(&policy, &opts),
        sysctls: rampart_nft::app_queue::required_sysctls(&policy, &opts),
    };
    let applied = txn::apply(&Nft::default(), &state, &req)?;
    if rampart_nft::app_queue::proxies_syns(&policy, &opts) {
        for ifname in rampart_nft_apply::offload::ipv6_synproxy_blind_interfaces() {
            eprintln!(
                "rampart: warning: {ifname}: receive checksum offload and GRO are both off, so the kernel's SYN proxy drops every IPv6 SYN arriving there unanswered (docs/nft.md); turn either on (`ethtool -K {ifname} rx on` or `gro on`)"
            );
        }
    }
    match applied.pending {
        Some(_) => println!(
            "applied {} ({} rules); rolling back in {:?} unless `rampart confirm` (watcher pid {})",
            applied.id,
            policy.rules.len(),
            args.confirm.unwrap_or_default(),
            applied.watcher_pid.unwrap_or_default()
        ),
        None => println!("applied {} ({} rules)", applied.id, policy.rules.len()),
    }
    Ok(Outcome::Clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s").unwrap(), Duration::from_secs(60));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5").unwrap(), Duration::from_secs(5));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn keep_reachable_forms() {
        assert_eq!(parse_keep("192.0.2.1").unwrap().1, 22);
        assert_eq!(parse_keep("192.0.2.1:2222").unwrap().1, 2222);
        assert_eq!(parse_keep("[2001:db8::1]:443").unwrap().1, 443);
        assert!(parse_keep("host").is_err());
    }
}
