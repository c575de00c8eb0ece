#!/usr/bin/env bash
# `rampart simulate` end to end (reading the capture, decoding, conntrack, classification,
# flow and rule accounting, the report) on the engine benchmark's workload written as a pcap:
# the example policy plus a 100k-prefix blocklist, 100,000 generated frames (a new flow per
# frame) repeated to PACKETS, 1 µs apart. Issue #3's target: >= 2 M packets/s on one core.
#
#   bench/simulate.sh [PACKETS]     default 2,000,000 (a 139 MB capture in a temporary dir)
#
# Env: ROUNDS (5), RAMPART (the binary; default: a release build of this tree), BASELINE (a
# second binary, e.g. an older commit's, run interleaved with the first for a same-run ratio).
# Reported per binary: the CLI's own replay rate (packets/s, from its `replay:` line) and the
# process's peak RSS, median over the rounds. Pin it for steadier figures:
# `taskset -c 1 bench/simulate.sh`.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
packets="${1:-2000000}"
rounds="${ROUNDS:-5}"
target="${CARGO_TARGET_DIR:-$here/target}"
[ -x /usr/bin/time ] || { echo "bench/simulate.sh: /usr/bin/time is missing (Debian package: time)" >&2; exit 1; }
(cd "$here" && cargo build --release -q -p rampart-engine --example bench_pcap)
rampart="${RAMPART:-}"
if [ -z "$rampart" ]; then
  (cd "$here" && cargo build --release -q -p rampart)
  rampart="$target/release/rampart"
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$target/release/examples/bench_pcap" "$work/bench.pcap" "$packets"
bins=("$rampart")
[ -n "${BASELINE:-}" ] && bins+=("$BASELINE")
for _ in $(seq "$rounds"); do
  for i in "${!bins[@]}"; do
    /usr/bin/time -f "rss_kib %M" -o "$work/time.$i" "${bins[$i]}" simulate \
      --policy "$here/examples/m1037-baseline/policy.toml" --pcap "$work/bench.pcap" \
      --local 192.0.2.0/24 --iface-in wan0 --iface-out corp0 --top 0 >"$work/out.$i" || true
    rate="$(sed -n 's/^replay: .* s, \([0-9]*\) packets\/s/\1/p' "$work/out.$i")"
    [ -n "$rate" ] || { echo "no replay rate from ${bins[$i]}:" >&2; cat "$work/out.$i" >&2; exit 1; }
    echo "$rate $(sed -n 's/^rss_kib //p' "$work/time.$i")" >>"$work/rounds.$i"
  done
done
printf '%-50s %14s %14s %14s %10s\n' binary median_pkt_s min_pkt_s max_pkt_s rss_MiB
for i in "${!bins[@]}"; do
  sort -n "$work/rounds.$i" | awk -v b="${bins[$i]}" '
    { r[NR] = $1; if ($2 > m) m = $2 }
    END { printf "%-50s %14d %14d %14d %10.1f\n", b, r[int((NR + 1) / 2)], r[1], r[NR], m / 1024 }'
done
echo "packets: $packets, rounds: $rounds" >&2
