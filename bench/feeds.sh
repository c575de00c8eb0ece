#!/usr/bin/env bash
# Feed benchmarks (issue 5). Needs root for the kernel parts (fresh `unshare -n` namespaces;
# the host ruleset is never touched). Usage: bench/feeds.sh [DATA_DIR]   (default /work/shared/data)
# Prints one line per measurement; docs/feeds.md has the numbers from the reference machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-/work/shared/data}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-feeds}
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}
cargo build -q --release -p rampart-feeds --example feeds_bench
BIN=$CARGO_TARGET_DIR/release/examples/feeds_bench
OUT=$(mktemp -d /tmp/rampart-feeds-bench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT

echo "== 1. parse + normalise 1M synthetic lines (seeded), peak RSS"
for _ in 1 2 3; do "$BIN" synthetic 1000000 42; done

if [ "$(id -u)" != 0 ] || ! command -v nft >/dev/null || ! command -v unshare >/dev/null; then
  echo "skipping kernel benchmarks: need root, nft and unshare"; exit 0
fi
if [ ! -d "$DATA/feeds" ]; then echo "skipping: no $DATA/feeds"; exit 0; fi

# Load one nft file in a fresh namespace; report wall time, nft peak RSS and the kernel slab /
# vmalloc growth while the table exists (global counters: run on a quiet machine).
load_in_netns() { # name file [second-file]
  local name=$1 file=$2 second=${3:-}
  unshare -n bash -c '
    set -e
    mem() { awk -v k="$1:" "\$1==k {print \$2}" /proc/meminfo; }
    sync; echo 2 > /proc/sys/vm/drop_caches 2>/dev/null || true
    s0=$(mem Slab); v0=$(mem VmallocUsed)
    /usr/bin/time -f "%e %M" -o "$3/time" nft -f "$2"
    read -r secs rss < "$3/time"
    s1=$(mem Slab); v1=$(mem VmallocUsed)
    echo "$1: load ${secs} s, nft peak RSS $((rss/1024)) MB, kernel slab +$(((s1-s0)/1024)) MB, vmalloc +$(((v1-v0)/1024)) MB"
    if [ -n "$4" ]; then
      /usr/bin/time -f "%e %M" -o "$3/time2" nft -f "$4"
      read -r secs2 rss2 < "$3/time2"
      echo "$1: refresh ${secs2} s, nft peak RSS $((rss2/1024)) MB"
    fi
    nft flush ruleset
  ' _ "$name" "$file" "$OUT" "$second"
}

echo "== 2. all shared feeds: aggregated (one table, interval set per family) vs naive (raw lines, one set per feed)"
mapfile -t FEEDS < <(find "$DATA/feeds" -type f \( -name '*.netset' -o -name '*.ipset' -o -name '*.txt' -o -name '*.lst' \) | sort)
"$BIN" scripts "$OUT" "${FEEDS[@]}"
load_in_netns aggregated-interval-only "$OUT/aggregated.nft"
load_in_netns aggregated-split "$OUT/aggregated_split.nft"
load_in_netns naive "$OUT/naive.nft"

echo "== 3. refresh with 1% churn on a 1M-address set (Split layout: hash set for singles)"
"$BIN" churn "$OUT" 1000000 1
load_in_netns churn-delta "$OUT/load.nft" "$OUT/delta.nft"
load_in_netns churn-full "$OUT/load.nft" "$OUT/full.nft"
