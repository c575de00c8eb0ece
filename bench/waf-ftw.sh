#!/usr/bin/env bash
# CRS v4 go-ftw regression suite through Rampart's WAF engine (in-process, CRS test
# configuration: DetectionOnly, paranoia 4, the 900005 settings; albedo-style /reflect backend).
# Usage: bench/waf-ftw.sh [CRS_DIR]   (default ../shared/data/waf/crs)
set -euo pipefail
cd "$(dirname "$0")/.."
CRS="${1:-$(pwd)/../shared/data/waf/crs}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p rampart-waf --example ftw
"$CARGO_TARGET_DIR/release/examples/ftw" --crs "$CRS" \
  --overrides crates/waf/ftw-overrides.yaml --failures "${FAILURES:-/tmp/rampart-waf-ftw-failures.txt}"
echo "failures and overridden cases: ${FAILURES:-/tmp/rampart-waf-ftw-failures.txt}"
