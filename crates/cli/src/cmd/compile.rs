//! `rampart compile`: policy → one nftables transaction on stdout (nothing is applied).

use std::path::PathBuf;

use rampart_nft::EmitOptions;
use rampart_nft_apply::runner::Nft;

use crate::Outcome;

/// Options shared by the commands that compile a policy for the kernel.
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct NftOpts {
    /// nft table (family inet) Rampart owns.
    #[arg(long, default_value = "rampart")]
    pub(crate) table: String,
    /// NFLOG group for rules with `log`.
    #[arg(long, default_value_t = 1037)]
    pub(crate) log_group: u16,
    /// Emit expired rules too (by default rules whose `expires` date has passed are commented out).
    #[arg(long)]
    pub(crate) keep_expired: bool,
}

impl NftOpts {
    pub(crate) fn emit_options(&self) -> EmitOptions {
        EmitOptions {
            today: if self.keep_expired {
                None
            } else {
                Some(crate::load::today())
            },
            table: self.table.clone(),
            log_group: self.log_group,
            cgroup2_prefix: crate::load::cgroup2_prefix(),
            ..EmitOptions::default()
        }
    }
}

/// Arguments of `rampart compile`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Policy file.
    pub(crate) policy: PathBuf,
    /// Also have the kernel validate the ruleset (`nft -c -f`, nothing is committed).
    #[arg(long)]
    pub(crate) check: bool,
    #[command(flatten)]
    pub(crate) nft: NftOpts,
}

/// Compile and print; with `--check` a kernel rejection is an error (exit 2).
pub(crate) fn run(args: Args) -> anyhow::Result<Outcome> {
    let policy = crate::load::policy(&args.policy)?;
    let text = rampart_nft::emit(&policy, &args.nft.emit_options())?;
    if args.check {
        let dir = std::env::temp_dir().join(format!("rampart-compile-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let file = dir.join("ruleset.nft");
        std::fs::write(&file, &text)?;
        let result = Nft::default().check_file(&file);
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        eprintln!("rampart: nft -c accepted the ruleset");
    }
    use std::io::Write;
    std::io::stdout().write_all(text.as_bytes())?;
    Ok(Outcome::Clean)
}
