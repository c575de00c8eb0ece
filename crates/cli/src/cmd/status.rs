//! `rampart status`: per-rule packet and byte counters of the live table, mapped back to policy
//! rules, file:line and techniques (through the rule map saved at apply time, else the rule
//! comments). Lists the table with `-t`, so big sets cost nothing.

use std::path::PathBuf;

use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::{Pending, RuleMap, StateDir};

use crate::Outcome;

/// Arguments of `rampart status`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// nft table (family inet) Rampart owns.
    #[arg(long, default_value = "rampart")]
    pub(crate) table: String,
    /// State directory (default `$RAMPART_STATE_DIR` or `/run/rampart`).
    #[arg(long)]
    pub(crate) state_dir: Option<PathBuf>,
    /// Print rows as JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Exit 1 when the table is absent or an apply is pending confirmation.
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let state = StateDir::resolve(args.state_dir.as_deref());
    let map: Option<RuleMap> = state.read_json("applied.json")?;
    let pending: Option<Pending> = state.read_json("pending.json")?;
    let Some(listing) = Nft::default().list_table(&args.table, true)? else {
        println!("table inet {} is not loaded", args.table);
        return Ok(Outcome::Findings);
    };
    let rows = rampart_nft_apply::status::counters(&listing, map.as_ref());
    let banned = rampart_nft_apply::status::banned(&Nft::default(), &args.table, &listing)?;
    // Only a table that proxies SYNs has these counters to show (they are per namespace).
    let synproxy = if listing.contains("synproxy") {
        std::fs::read_to_string(rampart_nft_apply::status::SYNPROXY_STATS_PATH)
            .ok()
            .as_deref()
            .and_then(rampart_nft_apply::status::parse_synproxy_stats)
    } else {
        None
    };
    if args.json {
        let bans: serde_json::Map<String, serde_json::Value> = banned
            .iter()
            .map(|(set, n)| (set.clone(), (*n).into()))
            .collect();
        let out = serde_json::json!({ "table": args.table, "pending": pending, "rules": rows, "banned": bans, "synproxy": synproxy });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        if let Some(p) = &pending {
            println!("apply {} is PENDING confirmation (rampart confirm)", p.id);
        }
        println!("{:>12} {:>14}  rule", "packets", "bytes");
        for r in &rows {
            let id = r.index.map(|i| format!("#{i} ")).unwrap_or_default();
            let loc = r
                .loc
                .as_deref()
                .map(|l| format!("  {l}"))
                .unwrap_or_default();
            let tech = if r.techniques.is_empty() {
                String::new()
            } else {
                format!("  {}", r.techniques.join(","))
            };
            println!(
                "{:>12} {:>14}  {id}{}{loc}{tech}  [{}]",
                r.packets, r.bytes, r.name, r.chain
            );
        }
        for (set, n) in &banned {
            println!("banned sources ({set}): {n}");
        }
        if let Some(sp) = &synproxy {
            println!(
                "SYN proxy: {} SYNs answered, {} cookies valid, {} invalid, {} server SYNs resent, {} reopened",
                sp.syn_received, sp.cookie_valid, sp.cookie_invalid, sp.cookie_retrans, sp.conn_reopened
            );
        }
    }
    Ok(if pending.is_some() {
        Outcome::Findings
    } else {
        Outcome::Clean
    })
}
