//! `rampart-nft-tool`: a minimal front door to the apply shell for the namespace tests and for
//! operators without the full CLI. It takes *compiled* transactions, not policies.
//!
//! ```text
//! rampart-nft-tool apply FILE --state-dir D [--table T] [--confirm-ms N] [--hold] [--sysctl NAME=VALUE]...
//! rampart-nft-tool watch ID --state-dir D
//! rampart-nft-tool confirm --state-dir D
//! rampart-nft-tool rollback --state-dir D [--table T]
//! rampart-nft-tool log GROUP COUNT [TIMEOUT_MS]
//! rampart-nft-tool to-json FILE [--table T] [--min-elements N]   # JSON form, as apply would load it
//! rampart-nft-tool netlink-load FILE [--table T] [--min-elements N]   # load as apply's netlink path does
//! ```
//! `--hold` keeps the applying process alive after the apply (so a test can `kill -9` it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rampart_nft_apply::nflog::NflogSocket;
use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::{RuleMap, StateDir};
use rampart_nft_apply::txn::{self, ApplyRequest, WatcherCommand};

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn run(args: &[String]) -> Result<(), String> {
    let state = StateDir::resolve(
        flag(args, "--state-dir")
            .as_deref()
            .map(std::path::Path::new),
    );
    let table = flag(args, "--table").unwrap_or_else(|| "rampart".into());
    let nft = Nft::default();
    match args.first().map(String::as_str) {
        Some("apply") => {
            let file = args.get(1).ok_or("apply FILE")?;
            let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
            let confirm = flag(args, "--confirm-ms")
                .map(|v| v.parse::<u64>().map(Duration::from_millis))
                .transpose()
                .map_err(|e| e.to_string())?;
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            let req = ApplyRequest {
                text,
                table: table.clone(),
                map: RuleMap::default(),
                confirm,
                watcher: Some(WatcherCommand {
                    program: exe,
                    args: vec![
                        "watch".into(),
                        "--from-env".into(),
                        "--state-dir".into(),
                        state.root.display().to_string(),
                    ],
                }),
                queue: Vec::new(),
                sysctls: args
                    .windows(2)
                    .filter(|w| w[0] == "--sysctl")
                    .map(|w| {
                        w[1].split_once('=')
                            .map(|(n, v)| (n.to_string(), v.to_string()))
                            .ok_or("--sysctl NAME=VALUE")
                    })
                    .collect::<Result<_, _>>()?,
            };
            let applied = txn::apply(&nft, &state, &req).map_err(|e| e.to_string())?;
            println!("applied {} watcher {:?}", applied.id, applied.watcher_pid);
            if args.iter().any(|a| a == "--hold") {
                loop {
                    std::thread::sleep(Duration::from_secs(3600));
                }
            }
            Ok(())
        }
        Some("watch") => {
            let id = std::env::var("RAMPART_PENDING_ID").map_err(|e| e.to_string())?;
            let outcome = txn::watch(&nft, &state, &id).map_err(|e| e.to_string())?;
            println!("watch {id}: {outcome:?}");
            Ok(())
        }
        Some("confirm") => {
            let id = txn::confirm(&state, None).map_err(|e| e.to_string())?;
            println!("confirmed {id}");
            Ok(())
        }
        Some("rollback") => txn::rollback(&nft, &state, &table).map_err(|e| e.to_string()),
        Some("to-json") => {
            let file = args.get(1).ok_or("to-json FILE")?;
            let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
            let min = flag(args, "--min-elements")
                .map(|v| v.parse::<usize>())
                .transpose()
                .map_err(|e| e.to_string())?
                .unwrap_or(rampart_nft_apply::json::JSON_MIN_ELEMENTS);
            let work = std::env::temp_dir();
            match rampart_nft_apply::json::to_json(&nft, &text, &table, min, &work)
                .map_err(|e| e.to_string())?
            {
                Some(json) => {
                    println!("{json}");
                    Ok(())
                }
                None => Err("stays text (below the threshold or no faithful JSON form)".into()),
            }
        }
        Some("netlink-load") => {
            let file = args.get(1).ok_or("netlink-load FILE")?;
            let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
            let min = flag(args, "--min-elements")
                .map(|v| v.parse::<usize>())
                .transpose()
                .map_err(|e| e.to_string())?
                .unwrap_or(rampart_nft_apply::fastload::NETLINK_MIN_ELEMENTS);
            let t0 = std::time::Instant::now();
            let prepared = rampart_nft_apply::fastload::prepare(
                &nft,
                &text,
                &table,
                min,
                &std::env::temp_dir(),
            )
            .map_err(|e| e.to_string())?
            .map_err(|s| format!("stays with nft: {s:?}"))?;
            let t1 = std::time::Instant::now();
            rampart_nft_apply::fastload::load(&prepared, None).map_err(|e| e.to_string())?;
            let t2 = std::time::Instant::now();
            eprintln!(
                "netlink: {} elements as {} kernel elements; prepare {} ms, load {} ms",
                prepared.source_elements,
                prepared.element_count(),
                (t1 - t0).as_millis(),
                (t2 - t1).as_millis()
            );
            Ok(())
        }
        Some("log") => {
            let group: u16 = args
                .get(1)
                .and_then(|s| s.parse().ok())
                .ok_or("log GROUP COUNT")?;
            let count: usize = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .ok_or("log GROUP COUNT")?;
            let timeout_ms: u64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
            let mut sock = NflogSocket::bind(group).map_err(|e| e.to_string())?;
            sock.set_timeout(Some(Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            println!("ready");
            let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
            let mut seen = 0;
            while seen < count && std::time::Instant::now() < deadline {
                for p in sock.recv().map_err(|e| e.to_string())? {
                    let h = p.headers.as_ref();
                    let sport = h
                        .and_then(|h| h.src_port)
                        .map(|p| format!(" sport {p}"))
                        .unwrap_or_default();
                    println!(
                        "{} {} {} {} {}{sport}",
                        p.prefix,
                        h.map(|h| h.src.to_string()).unwrap_or_default(),
                        h.map(|h| h.dst.to_string()).unwrap_or_default(),
                        h.map(|h| h.protocol).unwrap_or_default(),
                        h.and_then(|h| h.dst_port).unwrap_or_default()
                    );
                    seen += 1;
                }
            }
            Ok(())
        }
        _ => Err("usage: rampart-nft-tool apply|watch|confirm|rollback|log …".into()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _ = PathBuf::new();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rampart-nft-tool: {e}");
            ExitCode::from(2)
        }
    }
}
