#!/bin/sh
# SYN-flood benchmark (issue #10): legitimate connection success during a random-source SYN
# flood, unprotected vs the kernel's own SYN cookies vs Rampart's SYN proxy, in network
# namespaces this script creates (client c, server s, a veth between them) and removes.
#
#   bench/synflood.sh [SECONDS]        default 5 s of flood per scenario; root, hping3
#
# Per scenario: a 1-core `hping3 -S --flood --rand-source` from the client namespace at the
# server's port 80 while 200 legitimate connections (20 at a time, 1 s timeout, each must read
# the server's greeting) run from another client address. Reported: flood rate (packets/s the
# server's veth received), legitimate successes, conntrack entries at the end of the flood
# (server namespace), softirq share of all CPU time during the flood (machine-wide).
# Every scenario runs a stateful Rampart ruleset (`rampart apply`, in the server namespace
# only) accepting tcp/80: `unprotected` without SYN proxy and with tcp_syncookies=0 (listen
# backlog 128); `syncookies` without SYN proxy, tcp_syncookies=1 (the kernel default);
# `rampart` with `synproxy` on the rule (apply also sets the sysctls the proxy needs).
set -eu
[ "$(id -u)" = 0 ] || { echo "skipping: needs root" >&2; exit 0; }
command -v hping3 >/dev/null || { echo "skipping: hping3 not installed" >&2; exit 0; }
command -v nft >/dev/null || { echo "skipping: nft not installed" >&2; exit 0; }
SECS=${1:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RAMPART=${RAMPART:-$TARGET/debug/rampart}
[ -x "$RAMPART" ] || (cd "$ROOT" && cargo build -q -p rampart)
WORK=$(mktemp -d /tmp/rampart-synflood.XXXXXX)
C=rsfc$$; S=rsfs$$
cleanup() {
  for ns in $C $S; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
    ip netns del $ns 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

cat > "$WORK/server.py" <<'PY'
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 80)); s.listen(int(sys.argv[1]))
print("ready", flush=True)
def serve(c):
    try: c.sendall(b"hi"); c.close()
    except OSError: pass
while True:
    c, _ = s.accept(); threading.Thread(target=serve, args=(c,), daemon=True).start()
PY
cat > "$WORK/legit.py" <<'PY'
import socket, sys, time
from concurrent.futures import ThreadPoolExecutor
def one(_):
    s = socket.socket(); s.settimeout(1.0); s.bind(("192.0.2.3", 0))
    try:
        s.connect(("192.0.2.1", 80)); return s.recv(2) == b"hi"
    except OSError:
        return False
    finally:
        s.close()
with ThreadPoolExecutor(20) as ex:
    ok = sum(ex.map(one, range(200)))
print(ok)
PY
cat > "$WORK/plain.toml" <<'TOML'
[defaults]
ingress = "drop"
forward = "drop"
egress = "accept"

[[rules]]
name = "web"
direction = "ingress"
service = ["tcp/80"]
action = "accept"
TOML
{ cat "$WORK/plain.toml"; echo 'synproxy = { timestamp = false }'; } > "$WORK/proxy.toml"

softirq() { awk '/^cpu /{t=0; for(i=2;i<=NF;i++) t+=$i; print $8, t}' /proc/stat; }

scenario() {
  name=$1
  ip netns add $C; ip netns add $S
  ip -n $C link set lo up; ip -n $S link set lo up
  ip link add eth0 netns $C type veth peer name eth0 netns $S
  ip -n $C link set eth0 up; ip -n $S link set eth0 up
  ip -n $C addr add 192.0.2.2/24 dev eth0; ip -n $C addr add 192.0.2.3/24 dev eth0
  ip -n $S addr add 192.0.2.1/24 dev eth0; ip -n $S route add default via 192.0.2.2
  case $name in
    unprotected) ip netns exec $S sysctl -qw net.ipv4.tcp_syncookies=0 net.ipv4.tcp_max_syn_backlog=128 net.core.somaxconn=128
                 policy=plain ;;
    syncookies)  ip netns exec $S sysctl -qw net.ipv4.tcp_syncookies=1; policy=plain ;;
    rampart)     policy=proxy ;;
  esac
  ip netns exec $S env -u SSH_CONNECTION "$RAMPART" apply "$WORK/$policy.toml" --state-dir "$WORK/state" >/dev/null
  ip netns exec $S python3 "$WORK/server.py" 128 > "$WORK/server.out" &
  sleep 0.5
  rx0=$(ip netns exec $S cat /sys/class/net/eth0/statistics/rx_packets)
  set -- $(softirq); si0=$1; t0=$2
  ip netns exec $C timeout "$SECS" hping3 -q -S -p 80 --flood --rand-source 192.0.2.1 >/dev/null 2>&1 &
  sleep 1
  ok=$(ip netns exec $C python3 "$WORK/legit.py")
  wait $! 2>/dev/null || true
  set -- $(softirq); si1=$1; t1=$2
  rx1=$(ip netns exec $S cat /sys/class/net/eth0/statistics/rx_packets)
  ct=$(ip netns exec $S cat /proc/sys/net/netfilter/nf_conntrack_count)
  awk -v n="$name" -v ok="$ok" -v rx=$((rx1 - rx0)) -v s="$SECS" -v ct="$ct" -v dsi=$((si1 - si0)) -v dt=$((t1 - t0)) \
    'BEGIN { printf "%-12s flood %8.0f pkt/s  legit %3d/200 (%5.1f%%)  conntrack %6d  softirq %4.1f%% of CPU\n", n, rx / s, ok, ok / 2, ct, 100 * dsi / dt }'
  for ns in $C $S; do
    for p in $(ip netns pids $ns 2>/dev/null); do kill -9 $p 2>/dev/null || true; done
    ip netns del $ns
  done
  rm -rf "$WORK/state"
}

echo "# $SECS s random-source SYN flood per scenario; $(nproc) CPUs; load $(cut -d' ' -f1-3 /proc/loadavg)"
for sc in unprotected syncookies rampart; do scenario $sc; done
