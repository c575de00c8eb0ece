//! `rampart reload`: ask the running daemon (over its control socket) to validate and apply the
//! policy again and reload its components. A bad policy is refused and the daemon keeps running
//! the previous one; the exit code says which (0 reloaded, 1 refused).

use std::path::PathBuf;

use crate::Outcome;

/// Arguments of `rampart reload`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The daemon's run configuration (to find its control socket).
    #[arg(long)]
    config: PathBuf,
    /// Only print the daemon's status instead of reloading.
    #[arg(long)]
    status: bool,
}

pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let config = crate::cmd::run::load_config(&args.config)?;
    let request = if args.status {
        rampart_daemon::control::ControlRequest::Status
    } else {
        rampart_daemon::control::ControlRequest::Reload
    };
    let reply = rampart_daemon::control::request(&config.control_socket(), &request)?;
    if reply["ok"].as_bool() == Some(true) {
        if args.status {
            println!("{}", serde_json::to_string_pretty(&reply["status"])?);
        } else {
            println!("{}", reply["message"].as_str().unwrap_or("reloaded"));
        }
        Ok(Outcome::Clean)
    } else {
        eprintln!("rampart: {}", reply["error"].as_str().unwrap_or("refused"));
        Ok(Outcome::Findings)
    }
}
