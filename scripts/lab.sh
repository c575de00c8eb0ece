#!/usr/bin/env bash
# The main job end to end: build Rampart, run the ATT&CK lab on the M1037 baseline example
# policy in network namespaces, print the scoreboard (and write lab-scoreboard.html).
# Extra arguments go to `rampart lab` (e.g. --policy my.toml, --json, --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/deps.sh
rampart_need_root
rampart_need_rust
rampart_install_packages
cargo build --release --locked --quiet -p rampart
exec target/release/rampart lab --html lab-scoreboard.html "$@"
