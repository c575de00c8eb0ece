#!/usr/bin/env bash
# NFQUEUE classifier throughput vs the pure nft path, on the same flows, in two network
# namespaces joined by a veth pair (created here, always removed).
#
#   bench/nfq.sh [SECONDS] [QUEUES]   (root; needs ip, nft, iptables-nft, hping3; builds rampart
#                                      --release, or set RAMPART_BIN to a built binary)
#   SOURCES=8 INTERVAL_US=100 bench/nfq.sh 5 1; ... 5 2   (one queue vs two, same traffic)
#
# QUEUES (default 1): the classifier runs `--queues QUEUES` behind `--queue-balance
# 4210:4210+QUEUES-1`. The kernel picks the queue by a hash of the address pair, so spreading
# needs several: SOURCES (default 1) client addresses 198.51.100.11.., one hping3 each (the
# same total traffic shape for every QUEUES; compare runs with the same SOURCES).
#
# Traffic: hping3 --flood from `cli` sends DNS queries (a real 33-byte query as payload) to
# udp/53 on `srv`. Three runs of SECONDS (default 5) each:
#   nft       the pure nft path: an nft payload check of the DNS shape (QDCOUNT == 1) drops
#             non-DNS in-kernel; nothing goes to userspace.
#   nfq-new   every packet queued to `rampart classify` (policy: app_not = ["dns"] drop on
#             udp/53); hping3 changes the source port per packet, so every packet is a new
#             connection: conntrack look-up over ctnetlink, table insert, label, verdict.
#   nfq-same  every packet queued, one fixed source port: the connection is in the table (its
#             inspection budget is spent after 8 packets; the bench ruleset keeps queueing
#             anyway to measure the queue round trip itself).
# Counted: packets that reached a counting chain *after* the decision (priority 10), per
# second; CPU: the classifier's user+system time and the machine's softirq time per million
# packets. The real ruleset queues only the first 8 packets of a connection (app_queue.rs),
# so these are worst cases. Then the pure core in-process (examples/core_throughput.rs).
# Prints one JSON line per run and the load average before and after.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS="${1:-5}"
QUEUES="${2:-1}"
SOURCES="${SOURCES:-1}"
# INTERVAL_US: each sender waits this long between packets instead of flooding (default: flood).
# Why: SOURCES flooding senders on a small machine take the CPU the classifier threads need.
INTERVAL_US="${INTERVAL_US:-}"
if [ -n "$INTERVAL_US" ]; then RATE=(-i "u$INTERVAL_US"); else RATE=(--flood); fi
[ "$QUEUES" -ge 1 ] && [ "$QUEUES" -le 64 ] || { echo "QUEUES: 1 to 64" >&2; exit 2; }
[ "$SOURCES" -ge 1 ] && [ "$SOURCES" -le 32 ] || { echo "SOURCES: 1 to 32" >&2; exit 2; }
if [ "$QUEUES" -gt 1 ]; then
    QUEUE_TARGET="--queue-balance 4210:$((4210 + QUEUES - 1))"
else
    QUEUE_TARGET="--queue-num 4210"
fi
for tool in ip nft iptables-nft hping3; do
    command -v "$tool" >/dev/null || { echo "needs $tool" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "needs root" >&2; exit 2; }
if [ -z "${RAMPART_BIN:-}" ]; then
    cargo build --release -q -p rampart
fi
BIN="${RAMPART_BIN:-${CARGO_TARGET_DIR:-target}/release/rampart}"

A="nfqbA$$"; B="nfqbB$$"; WORK="$(mktemp -d)"
CLS_PID=""
cleanup() {
    [ -n "$CLS_PID" ] && kill "$CLS_PID" 2>/dev/null || true
    ip netns del "$A" 2>/dev/null || true
    ip netns del "$B" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
ip netns add "$A"; ip netns add "$B"
ip link add eth0 netns "$A" type veth peer name eth0 netns "$B"
ip -n "$A" addr add 198.51.100.1/24 dev eth0; ip -n "$B" addr add 198.51.100.2/24 dev eth0
SRC_ADDRS=()
if [ "$SOURCES" -gt 1 ]; then
    for i in $(seq "$SOURCES"); do
        SRC_ADDRS+=("198.51.100.$((10 + i))")
        ip -n "$A" addr add "198.51.100.$((10 + i))/24" dev eth0
    done
fi
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; ip -n "$ns" link set eth0 up; done
# Why: a static neighbour so the flood does not wait on ARP.
MAC_B="$(ip -n "$B" -br link show eth0 | awk '{print $3}')"
ip -n "$A" neigh replace 198.51.100.2 lladdr "$MAC_B" dev eth0 nud permanent

# www.example.com A IN, RD set.
printf '\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x03www\x07example\x03com\x00\x00\x01\x00\x01' > "$WORK/query.bin"
cat > "$WORK/policy.toml" <<'EOF'
[defaults]
ingress = "accept"
[components]
protocol_classifier = true
[[rules]]
name = "dns-only-on-53"
direction = "ingress"
service = "udp/53"
app_not = ["dns"]
action = "drop"
EOF

# Why multi-line: nft 1.0.6 needs a newline after an inner `}`.
counting_chain='chain count {
    type filter hook input priority 10; policy accept;
    udp dport 53 counter
  }'
nft_path() {
    ip netns exec "$B" nft -f - <<EOF
flush ruleset
table inet bench {
  chain in {
    type filter hook input priority -10; policy accept;
    udp dport 53 @th,96,16 != 1 counter drop
  }
  $counting_chain
}
EOF
}
nfq_path() {
    ip netns exec "$B" nft -f - <<EOF
flush ruleset
table inet bench {
  chain in {
    type filter hook input priority -10; policy accept;
    udp dport 53 meta mark set meta mark & 0xff0fffff | 0x00100000
  }
  $counting_chain
}
EOF
    # shellcheck disable=SC2086 # QUEUE_TARGET is two words
    ip netns exec "$B" iptables-nft -A INPUT -m mark --mark 0x100000/0xf00000 -j NFQUEUE $QUEUE_TARGET
}
counted() {
    ip netns exec "$B" nft list chain inet bench count | sed -n 's/.*counter packets \([0-9]*\).*/\1/p'
}
softirq_ticks() { awk '/^cpu /{print $8}' /proc/stat; }
proc_ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
tx_packets() { ip netns exec "$A" cat /sys/class/net/eth0/statistics/tx_packets; }
HZ="$(getconf CLK_TCK)"

run() { # name, extra hping3 args
    local name="$1"; shift
    local tx0 si0 c0 tx1 si1 c1 cls0=0 cls1=0
    tx0="$(tx_packets)"; si0="$(softirq_ticks)"; c0="$(counted)"
    [ -n "$CLS_PID" ] && cls0="$(proc_ticks "$CLS_PID")"
    if [ "${#SRC_ADDRS[@]}" -eq 0 ]; then
        timeout -s INT "$SECS" ip netns exec "$A" hping3 --udp -p 53 "${RATE[@]}" -d 33 -E "$WORK/query.bin" "$@" 198.51.100.2 >/dev/null 2>&1 || true
    else
        local pids=()
        for src in "${SRC_ADDRS[@]}"; do
            # Why a subshell: hping3 may abort on the SIGINT, which bash would report per job.
            (timeout -s INT "$SECS" ip netns exec "$A" hping3 --udp -p 53 "${RATE[@]}" -d 33 -E "$WORK/query.bin" -a "$src" "$@" 198.51.100.2 >/dev/null 2>&1 || true) &
            pids+=("$!")
        done
        wait "${pids[@]}" || true
    fi
    sleep 0.5
    tx1="$(tx_packets)"; si1="$(softirq_ticks)"; c1="$(counted)"
    [ -n "$CLS_PID" ] && cls1="$(proc_ticks "$CLS_PID")"
    python3 - "$name" "$SECS" "$((tx1 - tx0))" "$((c1 - c0))" "$(( (si1 - si0) ))" "$((cls1 - cls0))" "$HZ" "$QUEUES" "$SOURCES" <<'EOF'
import json, sys
name, secs, sent, passed, si, cls, hz = sys.argv[1], float(sys.argv[2]), *map(int, sys.argv[3:8])
mpk = max(passed, 1) / 1e6
print(json.dumps({
    "run": name, "queues": int(sys.argv[8]), "sources": int(sys.argv[9]),
    "seconds": secs, "sent": sent, "passed": passed,
    "passed_pps": round(passed / secs), "sent_pps": round(sent / secs),
    "softirq_cpu_s_per_mpkt": round(si / hz / mpk, 3),
    "classifier_cpu_s_per_mpkt": round(cls / hz / mpk, 3),
}))
EOF
}

echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
nft_path
run nft
nfq_path
ip netns exec "$B" "$BIN" classify --policy "$WORK/policy.toml" --queues "$QUEUES" > "$WORK/classify.out" 2> "$WORK/classify.err" &
CLS_PID=$!
for _ in $(seq 50); do grep -q bound "$WORK/classify.out" 2>/dev/null && break; sleep 0.1; done
grep -q bound "$WORK/classify.out" || { cat "$WORK/classify.err" >&2; exit 1; }
run nfq-new
run nfq-same -k -s 5353
kill -INT "$CLS_PID"; wait "$CLS_PID" || true; CLS_PID=""
tail -n 1 "$WORK/classify.out"
# The pure core alone (no kernel): decode, table, rules, label per packet.
if [ -z "${RAMPART_BIN:-}" ]; then
    cargo run --release -q -p rampart-nfq --example core_throughput 2000000
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
