//! `rampart explain`: the verdict for one flow, rule by rule.

use std::io::Write;

use rampart_engine::explain::{parse_flow, render_text};
use rampart_engine::{AppConn, AppPayload, Engine, EngineOptions, PacketMeta};
use rampart_ir::{Action, AppProtocol, CtState, Direction};

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
    /// TCP flags of the packet, comma-separated (syn, ack, fin, rst, psh, urg); default syn.
    /// The SYN proxy step depends on them.
    #[arg(long, value_parser = parse_tcp_flags)]
    pub(crate) tcp_flags: Option<u8>,
    /// Connections the source already holds (for `conn_limit` and its ban).
    #[arg(long, default_value_t = 0)]
    pub(crate) src_conns: u32,
    /// The packet carries a payload labelled with this application protocol (dns, tls, http,
    /// ssh, rdp, vnc, mqtt, smb1, smb2, dhcp, icmp_tunnel, or `unknown`), as the first payload
    /// of its connection: application-protocol rules are evaluated.
    #[arg(long, value_parser = parse_app)]
    pub(crate) app: Option<AppLabel>,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

fn parse_tcp_flags(s: &str) -> Result<u8, String> {
    let mut flags = 0u8;
    for f in s.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        flags |= match f.to_ascii_lowercase().as_str() {
            "fin" => 0x01,
            "syn" => 0x02,
            "rst" => 0x04,
            "psh" => 0x08,
            "ack" => 0x10,
            "urg" => 0x20,
            other => {
                return Err(format!(
                    "unknown TCP flag {other:?} (syn, ack, fin, rst, psh, urg)"
                ))
            }
        };
    }
    Ok(flags)
}

/// A payload label given on the command line (`None`: unrecognised).
// Why a newtype: clap reads `Option<Option<T>>` as "flag with an optional value".
#[derive(Clone, Copy, Debug)]
pub(crate) struct AppLabel(Option<AppProtocol>);

fn parse_app(s: &str) -> Result<AppLabel, String> {
    if s == "unknown" || s == "none" {
        return Ok(AppLabel(None));
    }
    AppProtocol::from_name(s)
        .map(|p| AppLabel(Some(p)))
        .ok_or_else(|| {
            let names: Vec<&str> = AppProtocol::ALL.iter().map(|p| p.as_str()).collect();
            format!(
                "unknown application protocol {s:?} ({}, unknown)",
                names.join(", ")
            )
        })
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
    meta.ct_entry = matches!(args.state, CtState::Established | CtState::Related);
    meta.len = args.len;
    meta.src_conns = args.src_conns;
    if let Some(flags) = args.tcp_flags {
        meta.tcp_flags = flags;
    }
    if let Some(AppLabel(label)) = args.app {
        meta.payload = AppPayload::Label(label);
        meta.app_conn = Some(AppConn::first());
    }
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
