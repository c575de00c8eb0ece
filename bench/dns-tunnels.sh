#!/usr/bin/env bash
# Real DNS tunnels through rampart-dns, inside a private network namespace: iodine (several
# record types) and dns2tcp (TXT), each tool's server as the upstream of a rampart instance, and
# the tool's client asking rampart. Reports, per session, whether the detector flagged the tunnel
# domain and after how many of that client's queries to it (from the query log's anomaly event).
#
# Background processes are started with `ip netns exec` directly (it execs, so $! is the
# process itself and the cleanup can kill it).
# Usage (root): bench/dns-tunnels.sh [SECONDS_PER_SESSION]   (default 20)
# Needs: iodine dns2tcp (apt-get install iodine dns2tcp), /dev/net/tun, python3, iproute2.
set -euo pipefail
SECS=${1:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/rampart-dns-tunnels.XXXXXX)}
NS=rampart-dnst-$$
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
for t in iodine iodined dns2tcpc dns2tcpd python3 ip; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install iodine dns2tcp)" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root (network namespace, tun)" >&2; exit 2; }

export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-dns}
( cd "$ROOT" && cargo test --release -p rampart-dns --test bench_harness --no-run ) 2>"$WORK/build.log" || { cat "$WORK/build.log" >&2; exit 1; }
HARNESS=$(grep -o '([^)]*bench_harness-[0-9a-f]*)' "$WORK/build.log" | tr -d '()' | tail -1)

ip netns add "$NS"
ip -n "$NS" link set lo up
nsx() { ip netns exec "$NS" "$@"; }

# start_rampart NAME UPSTREAM: rampart on 127.0.0.1:53 in the namespace, alert-only detector.
start_rampart() {
  cat > "$WORK/$1.toml" <<EOF
listen = ["127.0.0.1:53"]
upstreams = [{ addr = "$2" }]
[limits]
upstream_timeout_ms = 3000   # iodined holds queries (lazy mode) for up to ~2 s
query_timeout_ms = 4000
[cache]
max_entries = 10000
[[groups]]
name = "all"
rebinding_guard = false     # tunnel payloads in A answers look like private addresses
[detector]
enabled = true
block_s = 0
[query_log]
path = "$WORK/$1.jsonl"
log_allowed = true
EOF
  RAMPART_DNS_BENCH_CONFIG="$WORK/$1.toml" RAMPART_DNS_BENCH_SECONDS=$((SECS + 15)) \
    ip netns exec "$NS" "$HARNESS" --ignored --exact serve_from_env --nocapture >"$WORK/$1.rampart.log" 2>&1 &
  RAMPART_PID=$!
  PIDS+=("$RAMPART_PID")
  sleep 1.5
}

report() { # NAME DOMAIN
  python3 - "$WORK/$1.jsonl" "$2" "$1" <<'PY'
import json, sys
path, dom, name = sys.argv[1:4]
total = 0; det = None
for line in open(path):
    e = json.loads(line)
    q = e.get("detail", {}).get("qname", "")
    if e["event_type"] == "dns" and (q == dom or q.endswith("." + dom)):
        total += 1
    if e["event_type"] == "anomaly" and e["detail"].get("domain") == dom and det is None:
        det = e["detail"]
if det:
    print(f"| {name} | {total} | yes | {det['queries']} | {det['rule']} | {det['unique_subdomains']} | {det['odd_type_share']:.2f} |")
else:
    print(f"| {name} | {total} | no | - | - | - | - |")
PY
}

echo "| session | queries to tunnel domain | flagged | flagged after (queries) | rule | unique subdomains | odd-type share |"
echo "|---|---|---|---|---|---|---|"

# iodine: one session per downstream record type.
for T in NULL TXT CNAME MX A; do
  name="iodine-$T"
  ip netns exec "$NS" iodined -f -l 127.0.0.2 -p 53 -P rampartbench -c 10.99.0.1/27 t1.example >"$WORK/iodined-$T.log" 2>&1 &
  IOD=$!; PIDS+=("$IOD")
  start_rampart "$name" "127.0.0.2:53"
  ip netns exec "$NS" timeout "$SECS" iodine -f -r -I1 -T "$T" -P rampartbench 127.0.0.1 t1.example >"$WORK/iodine-$T.log" 2>&1 &
  CLI=$!; PIDS+=("$CLI")
  sleep 8
  nsx timeout $((SECS - 9)) ping -q -c 50 -i 0.2 10.99.0.1 >/dev/null 2>&1 || true
  wait "$CLI" 2>/dev/null || true
  kill "$IOD" "$RAMPART_PID" 2>/dev/null || true; wait "$IOD" "$RAMPART_PID" 2>/dev/null || true
  report "$name" t1.example
done

# dns2tcp: TXT tunnel carrying a TCP stream to a local listener.
cat > "$WORK/dns2tcpd.conf" <<EOF
listen = 127.0.0.3
port = 53
user = nobody
chroot = /tmp
domain = t2.example
resources = echo:127.0.0.1:7777
EOF
ip netns exec "$NS" python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", 7777)); s.listen(4)
while True:
    c, _ = s.accept()
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
' &
PIDS+=($!)
ip netns exec "$NS" dns2tcpd -F -f "$WORK/dns2tcpd.conf" >"$WORK/dns2tcpd.log" 2>&1 &
PIDS+=($!)
start_rampart dns2tcp "127.0.0.3:53"
ip netns exec "$NS" dns2tcpc -z t2.example -r echo -l 4444 127.0.0.1 >"$WORK/dns2tcpc.log" 2>&1 &
PIDS+=($!)
sleep 2
nsx timeout $((SECS - 4)) python3 -c '
import os, socket, time
s = socket.create_connection(("127.0.0.1", 4444), timeout=10)
sent = 0
end = time.time() + 12
while time.time() < end:
    s.sendall(os.urandom(512)); sent += 512
    try: s.recv(65536)
    except Exception: pass
print("dns2tcp bytes sent", sent)
' >"$WORK/dns2tcp-client.log" 2>&1 || true
kill "$RAMPART_PID" 2>/dev/null || true; wait "$RAMPART_PID" 2>/dev/null || true
report dns2tcp t2.example
echo "(logs in $WORK)" >&2
