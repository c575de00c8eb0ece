#!/usr/bin/env bash
# Blocking-mode detection and false-positive rates of Rampart's WAF (CRS v4 at paranoia 1,
# SecRuleEngine On, threshold 5) on the corpora in ../shared/data/waf, in-process; one payload
# per GET /get?q=<percent-encoded payload> with browser-like headers (the peer's request form).
# Usage: bench/waf-corpus.sh [DATA_DIR] [PL]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-$(pwd)/../shared/data/waf}"
PL="${2:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p rampart-waf --example corpus
"$CARGO_TARGET_DIR/release/examples/corpus" --data "$DATA" --pl "$PL"
