#!/usr/bin/env bash
# Throughput of `rampart waf` (CRS v4, PL1, blocking) in front of a minimal upstream: wrk on
# CPU 1, proxy on CPU 0, small GET and 10 KB urlencoded POST. Run on a quiet machine
# (load average < 2.5); compare with nginx + ModSecurity only from the same run.
# Usage: bench/waf-proxy.sh [CRS_DIR] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
CRS="${1:-$(pwd)/../shared/data/waf/crs}"
SECS="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p rampart
cargo build --release -q -p rampart-waf --example okserver
BIN="$CARGO_TARGET_DIR/release"
TMP="$(mktemp -d)"
cleanup() { kill "${UP_PID:-}" "${WAF_PID:-}" 2>/dev/null || true; rm -rf "$TMP"; }
trap cleanup EXIT
taskset -c 1 "$BIN/examples/okserver" 127.0.0.1:19000 >/dev/null &
UP_PID=$!
cat >"$TMP/waf.toml" <<TOML
listen = "127.0.0.1:18080"
mode = "On"
paranoia_level = 1
rules = ["$CRS/crs-setup.conf.example", "$CRS/rules/*.conf"]
[[routes]]
name = "bench"
upstreams = ["127.0.0.1:19000"]
TOML
taskset -c 0 "$BIN/rampart" waf --config "$TMP/waf.toml" >/dev/null &
WAF_PID=$!
sleep 2
python3 - "$TMP/post.lua" <<'PY'
import sys
body = "&".join(f"field{i}=some+ordinary+text+value+number+{i}" for i in range(300))[:10240]
open(sys.argv[1], "w").write(
    'wrk.method = "POST"\nwrk.body = "%s"\nwrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n' % body)
PY
echo "== small GET"
taskset -c 1 wrk -t1 -c32 -d"${SECS}s" --latency "http://127.0.0.1:18080/index.html?page=2&sort=asc" | grep -E "Requests/sec|99%|Latency"
echo "== 10 KB form POST"
taskset -c 1 wrk -t1 -c32 -d"${SECS}s" --latency -s "$TMP/post.lua" "http://127.0.0.1:18080/submit" | grep -E "Requests/sec|99%|Latency"
echo "proxy RSS (kB): $(ps -o rss= -p "$WAF_PID")"
