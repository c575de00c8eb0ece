#!/usr/bin/env bash
# Throughput of `rampart waf` (CRS v4, PL1, blocking) against nginx + ModSecurity v3 + the same
# CRS v4 (Debian libnginx-mod-http-modsecurity), in the same run: each WAF on CPU 0 (one
# worker / one runtime thread), wrk and the minimal upstream on CPU 1, same upstream, wrk -c32.
# Workloads: small GET, 10 KB urlencoded form POST, 10 KB JSON POST; plain nginx (no WAF) as a
# reference. Prints req/s, p99 and the ratio rampart / ModSecurity per workload, with `uptime`.
# Run on a quiet machine (load average < 2.5).
# Usage: bench/waf-proxy.sh [CRS_DIR] [SECONDS]
# Needs: wrk, nginx, libnginx-mod-http-modsecurity (the peer is skipped when absent).
set -euo pipefail
cd "$(dirname "$0")/.."
CRS="${1:-$(pwd)/../shared/data/waf/crs}"
SECS="${2:-10}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$CARGO_TARGET_DIR/release"
if cargo build --release -q -p rampart; then
  WAF=("$BIN/rampart" waf --config)
else
  echo "note: the rampart binary did not build; measuring the rampart-waf proxy example (same proxy::start)"
  cargo build --release -q -p rampart-waf --example proxy
  WAF=("$BIN/examples/proxy")
fi
cargo build --release -q -p rampart-waf --example okserver
TMP="$(mktemp -d /tmp/rampart-wafbench.XXXXXX)"
# shellcheck source=bench/waf-peer.sh
. bench/waf-peer.sh
cleanup() {
  kill "${UP_PID:-}" "${WAF_PID:-}" 2>/dev/null || true
  waf_peer_stop
  sleep 0.5
  rm -rf "$TMP"
}
trap cleanup EXIT
waf_upstream_start 19000 1

cat >"$TMP/waf.toml" <<TOML
listen = "127.0.0.1:18080"
mode = "On"
paranoia_level = 1
rules = ["$CRS/crs-setup.conf.example", "$CRS/rules/*.conf"]
[[routes]]
name = "bench"
upstreams = ["127.0.0.1:19000"]
TOML
taskset -c 0 "${WAF[@]}" "$TMP/waf.toml" >/dev/null &
WAF_PID=$!

if waf_peer_available; then
  # CRS v4 at its default PL1; one worker on CPU 0, a plain nginx (no WAF) on 18082.
  waf_peer_start "$TMP" "$CRS" 18081 19000 workers=1 cpus=0 plain_port=18082
else
  echo "nginx with libnginx-mod-http-modsecurity not installed: peer skipped"
fi
waf_wait_port 18080 30
sleep 1

python3 - "$TMP" <<'PY'
import json, sys
d = sys.argv[1]
form = "&".join(f"field{i}=some+ordinary+text+value+number+{i}" for i in range(300))[:10240]
items, k = [], 0
while len(json.dumps({"items": items})) < 10240:
    items.append({"id": k, "name": f"item number {k}", "note": "some ordinary text"})
    k += 1
for name, body, ct in (("form", form, "application/x-www-form-urlencoded"),
                       ("json", json.dumps({"items": items}), "application/json")):
    open(f"{d}/{name}.lua", "w").write(
        'wrk.method = "POST"\nwrk.body = %s\nwrk.headers["Content-Type"] = "%s"\n'
        % (json.dumps(body), ct))
PY

run() { # port, extra wrk args -> "req/s p99"
  local port=$1; shift
  taskset -c 1 wrk -t1 -c32 -d"${SECS}s" --latency "$@" "http://127.0.0.1:$port$TARGET" 2>&1 |
    awk '/Requests\/sec/ {r=$2} / 99%/ {p=$2} /Non-2xx/ {n=$5} END {printf "%s req/s, p99 %s%s", r, p, (n ? ", non-2xx " n : "")}'
}
echo "uptime: $(uptime)"
for w in get form json; do
  case $w in
    get) TARGET="/index.html?page=2&sort=asc"; ARGS=() ;;
    form) TARGET="/submit"; ARGS=(-s "$TMP/form.lua") ;;
    json) TARGET="/api/items"; ARGS=(-s "$TMP/json.lua") ;;
  esac
  R=$(run 18080 "${ARGS[@]}")
  echo "== $w  rampart waf:          $R"
  if [ -n "${NGX_PID:-}" ]; then
    M=$(run 18081 "${ARGS[@]}")
    N=$(run 18082 "${ARGS[@]}")
    echo "== $w  nginx + ModSecurity:  $M"
    echo "== $w  nginx, no WAF:        $N"
    python3 -c "import sys; r=float(sys.argv[1]); m=float(sys.argv[2]); print(f'== $w  ratio rampart / ModSecurity: {r/m:.1f}x')" \
      "${R%% *}" "${M%% *}"
  fi
done
echo "rampart RSS (kB): $(ps -o rss= -p "$WAF_PID")"
[ -n "${NGX_PID:-}" ] && echo "nginx RSS (kB, master + worker): $(ps -o rss= --ppid "$NGX_PID" | awk '{s+=$1} END {print s}') + $(ps -o rss= -p "$NGX_PID")"
echo "uptime: $(uptime)"
