//! `rampart simulate`: replay a pcap/pcapng capture through a policy.

use std::fmt::Write as _;
use std::io::{BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use rampart_engine::pcap::CaptureReader;
use rampart_engine::simulate::{Report, SimConfig, Simulator};
use rampart_engine::{Engine, EngineOptions, MatcherKind};
use rampart_events::{JsonLinesSink, Sink};
use rampart_ir::{Action, Direction, IpNet};

use crate::Outcome;

/// Arguments of `rampart simulate`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    #[arg(long)]
    pub(crate) policy: PathBuf,
    /// Capture file (pcap or pcapng; Ethernet, VLAN, Linux cooked v1/v2, raw IP, loopback).
    #[arg(long)]
    pub(crate) pcap: PathBuf,
    /// Evaluate every packet in this hook (default: from --local, else forward).
    #[arg(long, value_parser = crate::cmd::explain::parse_direction)]
    pub(crate) direction: Option<Direction>,
    /// This host's addresses or networks (repeatable): to one = ingress, from one = egress,
    /// otherwise forward; to the limited broadcast or an all-nodes group = ingress. Add the
    /// multicast groups the host joined (a packet forwarded to a group is dropped).
    #[arg(long, value_delimiter = ',')]
    pub(crate) local: Vec<IpNet>,
    /// Input interface of every packet.
    #[arg(long)]
    pub(crate) iface_in: Option<String>,
    /// Output interface of every packet.
    #[arg(long)]
    pub(crate) iface_out: Option<String>,
    /// NET=IFACE (repeatable): packets from NET arrive on IFACE, packets to NET leave by it.
    #[arg(long, value_parser = parse_iface_map)]
    pub(crate) iface_map: Vec<(IpNet, String)>,
    /// Reassemble IP fragments before judging them: `auto` when the policy uses conntrack
    /// (the kernel's nf_defrag then does), `on` when another table on the host loads
    /// conntrack anyway, `off` to judge every fragment alone.
    #[arg(long, value_enum, default_value_t = Reassemble::Auto)]
    pub(crate) reassemble: Reassemble,
    /// The gateway runs with `net.netfilter.nf_conntrack_tcp_be_liberal=1`: TCP segments
    /// outside the sequence window are not invalid (by default they are, as in the kernel).
    #[arg(long)]
    pub(crate) tcp_be_liberal: bool,
    /// Check checksums as the gateway's receive path does, for captures taken on the wire
    /// (a mirror port, a tap): a wrong IPv4 header checksum is dropped before the ruleset, a
    /// wrong TCP/UDP/ICMP checksum is conntrack-invalid. Leave it off for captures taken on a
    /// sending host, whose checksums its NIC fills in after the capture.
    #[arg(long)]
    pub(crate) verify_checksums: bool,
    /// Use the linear reference matcher.
    #[arg(long)]
    pub(crate) reference: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub(crate) json: bool,
    /// Write one JSON event per flow verdict (and per anomaly) to this file.
    #[arg(long)]
    pub(crate) events: Option<PathBuf>,
    /// Flows listed in the terminal summary.
    #[arg(long, default_value_t = 20)]
    pub(crate) top: usize,
}

/// `--reassemble`.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reassemble {
    /// When the policy uses conntrack.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

fn parse_iface_map(s: &str) -> Result<(IpNet, String), String> {
    let (net, iface) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NET=IFACE, got {s:?}"))?;
    let net: IpNet = net
        .parse()
        .or_else(|_| net.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("bad network {net:?}"))?;
    if iface.is_empty() {
        return Err("empty interface name".into());
    }
    Ok((net, iface.to_owned()))
}

/// A sink that discards (when no --events file is given).
struct NullSink;

impl Sink for NullSink {
    fn emit(&mut self, _: &rampart_events::Event) -> Result<(), rampart_events::EventError> {
        Ok(())
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&args.policy)?;
    let engine = Engine::with_options(
        &policy,
        EngineOptions {
            today: Some(crate::load::today()),
        },
    );
    let cfg = SimConfig {
        direction: args.direction,
        local: args.local.clone(),
        iif: args.iface_in.clone(),
        oif: args.iface_out.clone(),
        iface_by_net: args.iface_map.clone(),
        matcher: if args.reference {
            MatcherKind::Reference
        } else {
            MatcherKind::Fast
        },
        no_events: args.events.is_none(),
        reassemble: match args.reassemble {
            Reassemble::Auto => None,
            Reassemble::On => Some(true),
            Reassemble::Off => Some(false),
        },
        tcp_be_liberal: args.tcp_be_liberal,
        verify_checksums: args.verify_checksums,
        ..SimConfig::default()
    };
    let file = std::fs::File::open(&args.pcap)
        .with_context(|| format!("cannot open {}", args.pcap.display()))?;
    let total_bytes = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut reader = CaptureReader::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("cannot read {}", args.pcap.display()))?;
    let mut sim = Simulator::new(engine, cfg);
    let start = Instant::now();
    let truncated = match &args.events {
        Some(path) => {
            let f = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let mut sink = JsonLinesSink::new(std::io::BufWriter::new(f));
            let t = replay(&mut reader, &mut sim, &mut sink, total_bytes, &args.pcap)?;
            sink.into_inner()
                .with_context(|| format!("cannot write {}", path.display()))?;
            t
        }
        None => replay(
            &mut reader,
            &mut sim,
            &mut NullSink,
            total_bytes,
            &args.pcap,
        )?,
    };
    let elapsed_s = start.elapsed().as_secs_f64();
    let report = sim.finish();
    if args.json {
        let value = serde_json::json!({
            "capture": args.pcap.display().to_string(),
            "pcapng": reader.is_pcapng(),
            "truncated": truncated,
            "elapsed_s": elapsed_s,
            "report": report,
        });
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&value)?
        )?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(render(&args, &report, reader.is_pcapng(), truncated, elapsed_s).as_bytes())?;
    }
    Ok(if report.blocked > 0 {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}

fn render(args: &Args, r: &Report, pcapng: bool, truncated: bool, elapsed_s: f64) -> String {
    let mut s = String::new();
    let span = r
        .time_span_ns
        .map_or(0.0, |(a, b)| (b.saturating_sub(a)) as f64 / 1e9);
    let _ = writeln!(
        s,
        "capture:    {} ({}, {} packets, {:.1} MiB, {:.1} s of traffic{})",
        args.pcap.display(),
        if pcapng { "pcapng" } else { "pcap" },
        r.packets,
        r.bytes as f64 / 1_048_576.0,
        span,
        if truncated { ", truncated" } else { "" }
    );
    let anomalies: u64 = r.anomalies.values().sum();
    let _ = writeln!(
        s,
        "packets:    {} classified ({} allowed, {} blocked), {} ARP, {} other non-IP, {} anomalies",
        r.classified, r.allowed, r.blocked, r.arp, r.non_ip, anomalies
    );
    let _ = writeln!(
        s,
        "flows:      {} ({} allowed, {} blocked at their first packet)",
        r.flows, r.flows_allowed, r.flows_blocked
    );
    let join = |m: &std::collections::BTreeMap<String, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(s, "directions: {}", join(&r.by_direction));
    let _ = writeln!(s, "reasons:    {}", join(&r.by_reason));
    if r.bans > 0 {
        let _ = writeln!(s, "bans:       {} sources banned", r.bans);
    }
    if r.reassembled + r.fragments_dropped > 0 {
        let _ = writeln!(
            s,
            "fragments:  {} datagrams reassembled, {} fragments dropped by reassembly",
            r.reassembled, r.fragments_dropped
        );
    }
    if !r.ct_invalid.is_empty() {
        let _ = writeln!(s, "ct invalid: {}", join(&r.ct_invalid));
    }
    if !r.apps.is_empty() {
        let _ = writeln!(s, "apps:       {}", join(&r.apps));
    }
    if !r.rules.is_empty() {
        let _ = writeln!(s, "rules:");
        for t in r.rules.values() {
            let _ = writeln!(
                s,
                "  #{:<4} {:<40} {:<7} {:>9} pkts {:>7} flows  {}  {}",
                t.id,
                t.name,
                t.action,
                t.packets,
                t.flows,
                t.loc,
                t.techniques.join(",")
            );
        }
    }
    if !r.techniques.is_empty() {
        let _ = writeln!(s, "techniques:");
        for (id, t) in &r.techniques {
            let _ = writeln!(
                s,
                "  {:<10} blocked {} pkts / {} flows, allowed {} pkts",
                id, t.packets_blocked, t.flows_blocked, t.packets_allowed
            );
        }
    }
    if anomalies > 0 {
        let _ = writeln!(s, "anomalies:  {}", join(&r.anomalies));
    }
    let blocked: Vec<_> = r
        .flow_samples
        .iter()
        .filter(|f| f.action != Action::Accept || f.blocked > 0)
        .take(args.top)
        .collect();
    if !blocked.is_empty() {
        let _ = writeln!(s, "blocked flows (first {}):", blocked.len());
        for f in blocked {
            let ep = |a: std::net::IpAddr, p: Option<u16>| match (a, p) {
                (std::net::IpAddr::V6(a), Some(p)) => format!("[{a}]:{p}"),
                (a, Some(p)) => format!("{a}:{p}"),
                (a, None) => a.to_string(),
            };
            let by = match (&f.rule, &f.loc) {
                (Some(rule), Some(loc)) => format!("rule {rule} at {loc}"),
                _ => f.reason.as_str().to_owned(),
            };
            let _ = writeln!(
                s,
                "  {} {} -> {} {} {} by {}{}{} ({} of {} pkts blocked)",
                f.proto,
                ep(f.src, f.src_port),
                ep(f.dst, f.dst_port),
                f.direction,
                f.action.as_str(),
                by,
                if f.techniques.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", f.techniques.join(","))
                },
                f.app
                    .as_ref()
                    .map_or(String::new(), |a| format!(" app {a}")),
                f.blocked,
                f.packets
            );
        }
    }
    let _ = writeln!(
        s,
        "replay:     {:.3} s, {:.0} packets/s",
        elapsed_s,
        if elapsed_s > 0.0 {
            r.packets as f64 / elapsed_s
        } else {
            0.0
        }
    );
    s
}

/// Read every record into the simulator; returns whether the file ended mid-record.
fn replay<R: std::io::Read>(
    reader: &mut CaptureReader<R>,
    sim: &mut Simulator,
    sink: &mut dyn Sink,
    total_bytes: u64,
    path: &std::path::Path,
) -> anyhow::Result<bool> {
    let start = Instant::now();
    let tty = std::io::stderr().is_terminal();
    let mut last_progress = start;
    let mut shown_progress = false;
    let mut truncated = false;
    loop {
        match reader.next_record() {
            Ok(Some(rec)) => sim.process(&rec, sink)?,
            Ok(None) => break,
            Err(e) if e.is_recoverable() => sim.capture_anomaly(sink)?,
            Err(rampart_engine::pcap::PcapError::Truncated) => {
                sim.capture_anomaly(sink)?;
                truncated = true;
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        // Progress only for runs longer than a second; checked every 64k packets.
        if sim.report().packets % 65_536 == 0 {
            let now = Instant::now();
            let every_s = if tty { 0.25 } else { 10.0 };
            if now.duration_since(start).as_secs_f64() > 1.0
                && now.duration_since(last_progress).as_secs_f64() >= every_s
            {
                last_progress = now;
                shown_progress = true;
                let pct = if total_bytes > 0 {
                    reader.offset() as f64 * 100.0 / total_bytes as f64
                } else {
                    0.0
                };
                let line = format!(
                    "simulate: {pct:5.1}% {:>12} packets {:>8.1} MiB",
                    sim.report().packets,
                    reader.offset() as f64 / 1_048_576.0
                );
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
            }
        }
    }
    if shown_progress && tty {
        eprintln!();
    }
    sim.end_of_capture(sink)?;
    Ok(truncated)
}
