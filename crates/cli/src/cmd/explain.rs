//! `rampart explain`: the verdict for one flow, rule by rule.

use std::io::Write;

use rampart_engine::explain::{parse_flow, render_text};
use rampart_engine::{Engine, EngineOptions, PacketMeta};
use rampart_ir::{Action, CtState, Direction};

use crate::Outcome;

/// Arguments of `rampart explain`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    #[arg(long)]
    pub(crate) policy: std::path::PathBuf,
    /// The flow, e.g. "tcp 192.0.2.5:51515 -> 203.0.113.7:445",
    /// "udp [2001:db8::1]:5353 -> [2001:db8::2]:53", "icmp 192.0.2.1 -> 192.0.2.2 type echo-request".
    pub(crate) flow: String,
    /// Input interface (ingress and forward).
    #[arg(long)]
    pub(crate) iface_in: Option<String>,
    /// Output interface (egress and forward).
    #[arg(long)]
    pub(crate) iface_out: Option<String>,
    /// Hook: ingress, egress or forward (default: forward, or ingress/egress when only one
    /// interface is given).
    #[arg(long, value_parser = parse_direction)]
    pub(crate) direction: Option<Direction>,
    /// Conntrack state of the packet.
    #[arg(long, default_value = "new", value_parser = parse_state)]
    pub(crate) state: CtState,
    /// Packet length in bytes (byte-rate limits).
    #[arg(long, default_value_t = 64)]
    pub(crate) len: u32,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

pub(crate) fn parse_direction(s: &str) -> Result<Direction, String> {
    match s {
        "ingress" | "input" => Ok(Direction::Ingress),
        "egress" | "output" => Ok(Direction::Egress),
        "forward" => Ok(Direction::Forward),
        other => Err(format!(
            "unknown direction {other:?} (ingress, egress, forward)"
        )),
    }
}

fn parse_state(s: &str) -> Result<CtState, String> {
    match s {
        "new" => Ok(CtState::New),
        "established" => Ok(CtState::Established),
        "related" => Ok(CtState::Related),
        "invalid" => Ok(CtState::Invalid),
        "untracked" => Ok(CtState::Untracked),
        other => Err(format!(
            "unknown state {other:?} (new, established, related, invalid, untracked)"
        )),
    }
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let flow = parse_flow(&args.flow)?;
    let policy = crate::load::policy(&args.policy)?;
    let engine = Engine::with_options(
        &policy,
        EngineOptions {
            today: Some(crate::load::today()),
        },
    );
    let direction = args
        .direction
        .unwrap_or(match (&args.iface_in, &args.iface_out) {
            (Some(_), None) => Direction::Ingress,
            (None, Some(_)) => Direction::Egress,
            _ => Direction::Forward,
        });
    let mut meta = PacketMeta::new(direction, flow.src, flow.dst, flow.protocol, flow.l4);
    meta.ct_state = args.state;
    meta.len = args.len;
    if direction != Direction::Egress {
        meta.iif = args.iface_in.as_deref();
    }
    if direction != Direction::Ingress {
        meta.oif = args.iface_out.as_deref();
    }
    let ex = engine.explain(&meta);
    if args.json {
        let value = serde_json::json!({
            "flow": rampart_engine::explain::flow_text(&meta),
            "direction": direction,
            "iif": meta.iif,
            "oif": meta.oif,
            "ct_state": args.state,
            "explanation": ex,
        });
        writeln!(
            std::io::stdout().lock(),
            "{}",
            serde_json::to_string_pretty(&value)?
        )?;
    } else {
        write!(
            std::io::stdout().lock(),
            "{}",
            render_text(&engine, &meta, &ex)
        )?;
    }
    Ok(if ex.decision.action == Action::Accept {
        Outcome::Clean
    } else {
        Outcome::Findings
    })
}
