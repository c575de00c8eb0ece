#!/usr/bin/env bash
# Egress proxy benchmark: `rampart egress` vs squid (Debian) with an equivalent allowlist, on the
# same machine in the same run. Both proxies get one pinned core (CPU 1); wrk, nginx (the origin)
# and the fake DNS server share CPU 0. Measures requests/s of plain-HTTP GETs through the proxy
# (wrk, absolute-form targets, keep-alive) and CONNECT setup latency p50/p99 (CONNECT -> 200, and
# until the TLS handshake with the origin completes). Prints the load average: other work on the
# machine skews absolute numbers, so compare the ratios from one run.
#
# Usage: bench/egress.sh [--rounds N] [--duration SECONDS] [--connects N]
# Needs root (apt-get, squid drops to user proxy). Env RAMPART=path/to/rampart (default: build
# release).
set -euo pipefail
rounds=2 duration=10 connects=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --connects) connects=$2; shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
need=()
for p in squid wrk nginx-light python3 openssl; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
fi
rampart=${RAMPART:-}
if [ -z "$rampart" ]; then
  (cd "$repo" && cargo build --release -p rampart >/dev/null)
  rampart="${CARGO_TARGET_DIR:-$repo/target}/release/rampart"
fi
work=$(mktemp -d /tmp/rampart-egress-bench.XXXXXX)
chmod 777 "$work"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$work/squid.pid" ] && kill "$(cat "$work/squid.pid")" 2>/dev/null || true
  [ -f "$work/nginx.pid" ] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.5
  rm -rf "$work"
}
trap cleanup EXIT

# Origin: nginx on CPU 0, HTTP 18080 and HTTPS 18443, 13-byte body.
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=backend.test \
  -keyout "$work/key.pem" -out "$work/cert.pem" >/dev/null 2>&1
cat >"$work/nginx.conf" <<NGX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:18080;
    listen 127.0.0.1:18443 ssl;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    location / { return 200 "hello egress\n"; }
  }
}
NGX
taskset -c 0 nginx -c "$work/nginx.conf"
taskset -c 0 python3 "$here/egress/fake_dns.py" 15353 backend.test=127.0.0.1 &
pids+=($!)
for _ in $(seq 50); do
  curl -s -o /dev/null http://127.0.0.1:18080/ && break
  sleep 0.1
done
sleep 0.5  # the DNS responder binds within a few ms of starting

# rampart egress: allowlist backend.test on the two origin ports; the origin is on loopback, a
# denied special range, so its address is allowlisted explicitly (as the tests do).
cat >"$work/egress.toml" <<TOML
listen = ["127.0.0.1:13128"]
[resolver]
servers = ["127.0.0.1:15353"]
[log]
path = "$work/egress-events.jsonl"
[[sources]]
name = "bench"
networks = ["127.0.0.0/8"]
allow = ["backend.test:18080,18443"]
allow_addresses = ["127.0.0.1/32"]
TOML

# squid: the same allowlist as dstdomain ACLs; names from a private hosts file; no caching.
cat >"$work/hosts" <<HOSTS
127.0.0.1 backend.test
HOSTS
cat >"$work/squid.conf" <<SQ
http_port 127.0.0.1:13129
workers 1
pid_filename $work/squid.pid
cache_log $work/squid-cache.log
access_log stdio:$work/squid-access.log
hosts_file $work/hosts
dns_nameservers 127.0.0.1
cache deny all
cache_mem 8 MB
coredump_dir $work
acl SSL_ports port 18443
acl Safe_ports port 18080 18443
acl allowed dstdomain backend.test
http_access deny !Safe_ports
http_access deny CONNECT !SSL_ports
http_access allow allowed
http_access deny all
SQ

start_rampart() {
  taskset -c 1 "$rampart" egress --config "$work/egress.toml" >"$work/rampart.out" 2>&1 &
  rampart_pid=$!
  pids+=("$rampart_pid")
  for _ in $(seq 50); do grep -q listening "$work/rampart.out" 2>/dev/null && return; sleep 0.1; done
  echo "rampart egress did not start" >&2; cat "$work/rampart.out" >&2; exit 1
}
start_squid() {
  taskset -c 1 squid -N -f "$work/squid.conf" >"$work/squid.out" 2>&1 &
  squid_pid=$!
  pids+=("$squid_pid")
  for _ in $(seq 100); do
    curl -s -o /dev/null -x http://127.0.0.1:13129 http://backend.test:18080/ && return
    sleep 0.1
  done
  echo "squid did not start" >&2; cat "$work/squid-cache.log" "$work/squid.out" >&2; exit 1
}

check() {
  local port=$1 name=$2
  local ok denied
  ok=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$port" http://backend.test:18080/)
  denied=$(curl -s -o /dev/null -w '%{http_code}' -x "http://127.0.0.1:$port" http://other.test:18080/)
  echo "# $name: allowed -> $ok, not allowlisted -> $denied"
  if [ "$ok" != 200 ] || [ "$denied" != 403 ]; then
    echo "$name allowlist check failed" >&2
    tail -3 "$work/egress-events.jsonl" "$work/squid-cache.log" 2>/dev/null >&2
    exit 1
  fi
}

measure() {
  local port=$1 name=$2 round=$3
  curl -s -o /dev/null -x "http://127.0.0.1:$port" http://backend.test:18080/  # warm the resolver
  local rps
  rps=$(taskset -c 0 wrk -t1 -c32 -d"${duration}s" --latency -s "$here/egress/abs.lua" \
    "http://127.0.0.1:$port" | tee "$work/wrk-$name-$round.txt" | awk '/Requests\/sec/ {print $2}')
  local non2xx
  non2xx=$(awk '/Non-2xx/ {print $5}' "$work/wrk-$name-$round.txt")
  local lat
  lat=$(taskset -c 0 python3 "$here/egress/connect_latency.py" 127.0.0.1 "$port" backend.test:18443 "$connects")
  echo "$name round=$round rps=$rps non2xx=${non2xx:-0} $lat"
}

echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg); cores: $(nproc)"
echo "# rampart: $rampart; squid: $(squid -v | head -1)"
start_rampart; check 13128 rampart
start_squid; check 13129 squid
for r in $(seq "$rounds"); do
  measure 13128 rampart "$r"
  measure 13129 squid "$r"
done | tee "$work/results.txt"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
awk '
  { for (i = 1; i <= NF; i++) { split($i, kv, "="); v[$1, kv[1]] += kv[2]; } n[$1]++ }
  END {
    for (k in n) for (f in fields) {}
    split("rps connect_p50_ms connect_p99_ms tls_p50_ms tls_p99_ms", fs, " ")
    for (i = 1; i <= 5; i++) {
      f = fs[i]; a = v["rampart", f] / n["rampart"]; b = v["squid", f] / n["squid"]
      printf "mean %-15s rampart=%10.3f squid=%10.3f rampart/squid=%.2f\n", f, a, b, (b ? a / b : 0)
    }
  }' "$work/results.txt"
