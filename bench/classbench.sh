#!/usr/bin/env bash
# ClassBench: Rampart's fast classifier vs its linear reference vs DPDK's rte_acl
# (dpdk-test-acl), on the same rule files and traces. A benchmark, not a test: run it on an idle
# machine. Usage: bench/classbench.sh [DATA_DIR] (default ../shared/data/classbench).
# Env: HEADERS (trace length, 100000), SEED (1), ITER (timing passes, 20), ROUNDS (5), SETS, ALGS,
# RAMPART, DPDK_LCORE (0). Both sides get a best of ROUNDS: ours times ROUNDS rounds of ITER passes
# and reports the fastest; DPDK runs every algorithm once and then its best one ROUNDS-1 more
# times, and the fastest run counts (a single run on a shared machine is easily disturbed). On a shared machine, pin and prioritise the whole run so both classifiers get
# a core to themselves: `nice -n -20 taskset -c 1 env DPDK_LCORE=1 bench/classbench.sh` (not a
# SCHED_FIFO class: dpdk-test-acl's EAL threads livelock when they share one FIFO core).
# dpdk-test-acl rebuilds its tries for every run; on fw sets that build takes minutes.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
data="${1:-$here/../shared/data/classbench}"
headers="${HEADERS:-100000}"
seed="${SEED:-1}"
iter="${ITER:-20}"
rounds="${ROUNDS:-5}"
sets="${SETS:-acl1_1k fw1_1k ipc1_1k acl1_10k fw1_10k ipc1_10k}"
algs="${ALGS:-scalar sse avx2 avx512x16 avx512x32}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -d "$data" ]; then
  echo "skipping: no ClassBench data at $data" >&2
  exit 0
fi
if ! command -v dpdk-test-acl >/dev/null 2>&1; then
  echo "installing dpdk-dev (provides dpdk-test-acl)..." >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpdk-dev >/dev/null
fi
rampart="${RAMPART:-}"
if [ -z "$rampart" ]; then
  (cd "$here" && cargo build --release -q -p rampart)
  rampart="${CARGO_TARGET_DIR:-$here/target}/release/rampart"
fi

dpdk() { # rules trace alg verbose [extra]
  # lib.acl debug logging makes rte_acl print its runtime memory footprint and tries.
  dpdk-test-acl --no-huge -m 1024 --no-pci -l "${DPDK_LCORE:-0}" --force-max-simd-bitwidth=512 \
    --log-level=lib.acl:debug -- \
    --rulesf="$1" --tracef="$2" --tracenum="$headers" \
    --alg="$3" --verbose="$4" "${@:5}" 2>&1
}

status=0
printf '%-9s %6s %-10s %9s %10s %10s %12s %-10s %7s %8s %9s %10s %8s %6s\n' set rules ours build_ms ours_Mlps ref_Mlps dpdk_Mlps dpdk_alg ratio mem_MiB dpdk_MiB dpdk_tries mism_ref mism_dp
for s in $sets; do
  rules="$data/$s"
  [ -f "$rules" ] || { echo "skipping $s: not found" >&2; continue; }
  trace="$work/$s.trace"
  # Reference (also writes the trace): the ground truth.
  ref_out="$("$rampart" bench classbench --rules "$rules" --trace "$trace" \
    --generate-trace "$headers" --seed "$seed" --reference --matches "$work/$s.ref")"
  ref_rate="$(sed -n 's/^lookups\/s: \([0-9]*\).*/\1/p' <<<"$ref_out")"
  fast_out="$("$rampart" bench classbench --rules "$rules" --trace "$trace" \
    --iter "$iter" --rounds "$rounds" --matches "$work/$s.fast")"
  fast_rate="$(sed -n 's/^lookups\/s: \([0-9]*\).*/\1/p' <<<"$fast_out")"
  build_s="$(sed -n 's/^build: \([0-9.]*\) s.*/\1/p' <<<"$fast_out")"
  mem="$(sed -n 's/.*structures: \([0-9.]*\) MiB.*/\1/p' <<<"$fast_out")"
  nrules="$(sed -n 's/.*rules: \([0-9]*\);.*/\1/p' <<<"$fast_out")"
  kind="$(sed -n 's/^structure: //p' <<<"$fast_out")"
  mism_ref="$(diff "$work/$s.ref" "$work/$s.fast" | grep -c '^<' || true)"
  # DPDK results (--verbose=2 prints one line per header; 4294967295 = no match).
  dpdk "$rules" "$trace" scalar 2 --iter=1 >"$work/$s.dpdk.log"
  sed -n 's/^ipv4_5tuple: [0-9]*, category: 0, result: \([0-9]*\).*/\1/p' "$work/$s.dpdk.log" \
    | awk '{ print ($1 == 4294967295) ? -1 : $1 }' >"$work/$s.dpdk"
  # "runtime memory footprint ... total: N bytes" (rte_acl_gen), one "trie K:" line per trie.
  dpdk_mem="$(sed -n 's/^total: \([0-9]*\) bytes.*/\1/p' "$work/$s.dpdk.log" | head -1)"
  dpdk_mem="$(awk -v b="${dpdk_mem:-0}" 'BEGIN { printf (b > 0 ? "%.1f" : "n/a"), b / 1048576 }')"
  dpdk_tries="$(grep -c 'trie [0-9]*: number of rules' "$work/$s.dpdk.log" || true)"
  mism_dp="$(diff "$work/$s.ref" "$work/$s.dpdk" | grep -c '^<' || true)"
  best=0; best_alg=none
  for alg in $algs; do
    # An algorithm this CPU lacks (avx512* without AVX-512) makes dpdk-test-acl exit non-zero
    # without a rate: skip it, saying so, rather than end the run.
    rate="$(dpdk "$rules" "$trace" "$alg" 0 --iter="$iter" \
      | sed -n 's/.* \([0-9.]*\) pkt\/sec.*/\1/p' | tail -1 || true)"
    if [ -z "$rate" ]; then
      echo "$s: dpdk-test-acl --alg=$alg gave no rate (not supported on this CPU?): skipped" >&2
      continue
    fi
    if awk -v a="$rate" -v b="$best" 'BEGIN { exit !(a > b) }'; then best="$rate"; best_alg="$alg"; fi
  done
  if [ "$best_alg" != none ]; then
    for _ in $(seq 2 "$rounds"); do
      rate="$(dpdk "$rules" "$trace" "$best_alg" 0 --iter="$iter" \
        | sed -n 's/.* \([0-9.]*\) pkt\/sec.*/\1/p' | tail -1 || true)"
      [ -n "$rate" ] || continue
      if awk -v a="$rate" -v b="$best" 'BEGIN { exit !(a > b) }'; then best="$rate"; fi
    done
  fi
  ratio="$(awk -v a="$fast_rate" -v b="$best" 'BEGIN { printf (b > 0 ? "%.2f" : "n/a"), a / b }')"
  printf '%-9s %6s %-10s %9.1f %10.2f %10.3f %12.2f %-10s %7s %8s %9s %10s %8s %6s\n' "$s" "$nrules" "$kind" \
    "$(awk -v b="$build_s" 'BEGIN { print b * 1000 }')" \
    "$(awk -v a="$fast_rate" 'BEGIN { print a / 1e6 }')" \
    "$(awk -v a="$ref_rate" 'BEGIN { print a / 1e6 }')" \
    "$(awk -v a="$best" 'BEGIN { print a / 1e6 }')" "$best_alg" "$ratio" "$mem" "$dpdk_mem" "$dpdk_tries" \
    "$mism_ref" "$mism_dp"
  if [ "$mism_ref" != 0 ] || [ "$mism_dp" != 0 ]; then status=1; fi
done
echo "headers per set: $headers (seed $seed), timing passes: $iter, best of $rounds rounds each side, single core" >&2
exit $status
