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
cleanup() {
  kill "${UP_PID:-}" "${WAF_PID:-}" 2>/dev/null || true
  if [ -n "${NGX_PID:-}" ]; then kill "$NGX_PID" 2>/dev/null || true; fi
  sleep 0.5
  rm -rf "$TMP"
}
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
taskset -c 0 "${WAF[@]}" "$TMP/waf.toml" >/dev/null &
WAF_PID=$!

MODSEC_SO=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so
if command -v nginx >/dev/null && [ -f "$MODSEC_SO" ]; then
  # ModSecurity as Debian configures it (/etc/nginx/modsecurity.conf: request and response
  # body access, JSON/XML processors), blocking, audit log off, CRS v4 at its default PL1.
  cat >"$TMP/modsec.conf" <<CONF
Include /etc/nginx/modsecurity.conf
SecRuleEngine On
SecAuditEngine Off
Include $CRS/crs-setup.conf.example
Include $CRS/rules/*.conf
CONF
  mkdir -p "$TMP/logs"
  cat >"$TMP/nginx.conf" <<CONF
load_module $MODSEC_SO;
user root;
worker_processes 1;
daemon off;
pid $TMP/nginx.pid;
error_log $TMP/logs/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_buffer_size 64k;
  client_body_temp_path $TMP/body;
  proxy_temp_path $TMP/proxy;
  upstream up { server 127.0.0.1:19000; keepalive 32; }
  server {
    listen 127.0.0.1:18081;
    modsecurity on;
    modsecurity_rules_file $TMP/modsec.conf;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  server {
    listen 127.0.0.1:18082;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
}
CONF
  taskset -c 0 nginx -p "$TMP" -c "$TMP/nginx.conf" &
  NGX_PID=$!
else
  echo "nginx with libnginx-mod-http-modsecurity not installed: peer skipped"
fi
sleep 4

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
