#!/usr/bin/env bash
# dnsperf: rampart-dns vs Unbound (RPZ) and dnsmasq with the same blocklist, forwarding to the same
# local stub upstream (Unbound, local-zone "bench." redirect), all on 127.0.0.1, SUT pinned to
# core 0 and dnsperf + stub to core 1 (recipe: shared/notes/anchors.md §3.5).
#
# Usage: bench/dns.sh [N_DOMAINS] [SECONDS_PER_RUN] [ROUNDS]   (defaults 1000000, 10, 1)
# With ROUNDS > 1 the SUTs are interleaved round by round (background load on a shared machine
# then hits all of them alike) and the summary reports the median QPS per SUT and workload.
#
# PHASES (env, default "sat reload") picks what runs:
#   sat     max-rate saturation (dnsperf -c 8 -q 500, unpaced) per SUT and workload;
#   step    peak QPS at < LOSS_MAX % loss (default 0.1) by -Q stepping: the rate grows x1.5 from
#           STEP_START until a run loses more, then 3 bisections (about 5% resolution), each run
#           STEP_SECONDS long (default 5) with -v; p50/p99/p99.9 latency of the fastest passing
#           run, and of one run at FIXED_QPS (default 10000) for every SUT alike. Workloads:
#           STEP_WORKLOADS (default "W1-hot W2-blocked W4-miss W5-mix"). Miss names are renamed
#           for every run, so a cache miss stays a miss across runs;
#   reload  rampart only: W5 paced at RELOAD_QPS while the whole list is rebuilt and swapped
#           every 2 s; lost queries and the reload peak RSS (VmHWM reset before each reload).
# SUTS (env, default "rampart unbound dnsmasq") picks the servers.
# Needs: dnsperf unbound dnsmasq-base dnsutils python3 (apt-get install dnsperf unbound dnsmasq-base).
# Output: a markdown table on stdout and in $WORK/results.md. Runs are short and bounded; every
# process started here is killed on exit.
set -euo pipefail

N=${1:-1000000}
DUR=${2:-10}
ROUNDS=${3:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=${WORK:-$(mktemp -d /tmp/rampart-dns-bench.XXXXXX)}
DATA=${RAMPART_DOMAINS_DIR:-$ROOT/../shared/data/domains}
SUT_PORT=5300
STUB_PORT=5301
PIDS=()
cleanup() { for p in "${PIDS[@]:-}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

for t in dnsperf unbound dnsmasq dig python3 taskset; do
  command -v "$t" >/dev/null || { echo "missing $t (apt-get install dnsperf unbound dnsmasq-base dnsutils)" >&2; exit 2; }
done

echo "# workdir $WORK, N=$N, ${DUR}s per run" >&2

# ---- 1. lists and query files (seeded) ----
python3 - "$N" "$WORK" "$DATA" <<'EOF'
import os, random, sys
n, work, data = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rnd = random.Random(20261127)
names, seen = [], set()
real = []
for rel in ["1hosts/Pro/domains.txt", "romainmarcoux/full-domains-aa.txt", "romainmarcoux/full-domains-ab.txt",
            "hagezi/domains/personal.txt", "hagezi/domains/fake.txt"]:
    p = os.path.join(data, rel)
    if os.path.exists(p):
        for line in open(p, errors="ignore"):
            d = line.strip().lower().rstrip(".")
            if d and not d.startswith("#") and " " not in d and "." in d and len(d) < 200 and all(c.isalnum() or c in "-._" for c in d):
                real.append(d)
for d in real:
    if len(names) >= n: break
    if d not in seen:
        seen.add(d); names.append(d)
sfx = ["com", "net", "org", "info", "xyz", "co.uk", "de", "ru", "io", "top"]
syll = ["ka", "lo", "mi", "ne", "tr", "ax", "zu", "pe", "qi", "vo", "an", "el", "or", "us", "it"]
while len(names) < n:
    d = "".join(rnd.choice(syll) for _ in range(rnd.randint(2, 5))) + str(rnd.randint(0, 9999))
    if rnd.random() < .4:
        d = rnd.choice(["ads", "track", "cdn", "t", "px", "metrics"]) + "." + d
    d = d + "." + rnd.choice(sfx)
    if d not in seen:
        seen.add(d); names.append(d)
print(f"list: {len(real)} real names available, {len(names)} used", file=sys.stderr)
with open(f"{work}/bl.txt", "w") as f:
    f.write("\n".join(names) + "\n")
with open(f"{work}/bl.rpz", "w") as f:
    f.write("$TTL 300\n@ SOA localhost. root.localhost. 1 3600 600 86400 300\n@ NS localhost.\n")
    for d in names:
        f.write(f"{d} CNAME .\n*.{d} CNAME .\n")
with open(f"{work}/bl.dnsmasq.conf", "w") as f:
    for d in names:
        f.write(f"address=/{d}/\n")   # NXDOMAIN for the name and its subdomains
types = ["A"] * 60 + ["AAAA"] * 30 + ["HTTPS"] * 7 + ["TXT"] * 3
hot = [f"h{i}.bench" for i in range(1000)]
def w(name, gen, count=200000):
    with open(f"{work}/{name}.txt", "w") as f:
        for i in range(count):
            f.write(gen(i) + "\n")
w("W1-hot", lambda i: f"{rnd.choice(hot)} A")
w("W2-blocked", lambda i: f"{rnd.choice(names)} A")
w("W3-blocked-sub", lambda i: f"r{rnd.randrange(10**9)}.{rnd.choice(names)} A")
w("W4-miss", lambda i: f"m{i}x{rnd.randrange(10**6)}.bench A", 1000000)
def mix(i):
    r = rnd.random()
    if r < .7: q = rnd.choice(hot)
    elif r < .8: q = rnd.choice(names)
    elif r < .9: q = f"r{rnd.randrange(10**9)}.{rnd.choice(names)}"
    else: q = f"m{i}x{rnd.randrange(10**6)}.bench"
    return f"{q} {rnd.choice(types)}"
w("W5-mix", mix, 1000000)
with open(f"{work}/canary", "w") as f:
    f.write(names[-1] + "\n")
EOF
CANARY=$(cat "$WORK/canary")

# ---- 2. the stub upstream ----
cat > "$WORK/stub.conf" <<EOF
server:
    interface: 127.0.0.1@$STUB_PORT
    do-daemonize: no
    use-syslog: no
    chroot: ""
    username: ""
    directory: "$WORK"
    pidfile: ""
    num-threads: 1
    local-zone: "bench." redirect
    local-data: "bench. 300 A 192.0.2.1"
    local-data: "bench. 300 AAAA 2001:db8::1"
    local-data: "bench. 300 SOA ns.bench. host.bench. 1 3600 600 86400 300"
EOF
taskset -c 1 unbound -d -c "$WORK/stub.conf" >"$WORK/stub.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do dig +short +time=1 +tries=1 @127.0.0.1 -p $STUB_PORT x.bench A | grep -q 192.0.2.1 && break; sleep 0.1; done

# ---- 3. build the rampart harness ----
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/work/target-dns}
( cd "$ROOT" && cargo test --release -p rampart-dns --test bench_harness --no-run ) 2>"$WORK/build.log" || { cat "$WORK/build.log" >&2; exit 1; }
HARNESS=$(grep -o '([^)]*bench_harness-[0-9a-f]*)' "$WORK/build.log" | tr -d '()' | tail -1)
[ -x "$HARNESS" ] || { echo "harness binary not found" >&2; exit 1; }

cat > "$WORK/rampart.toml" <<EOF
listen = ["127.0.0.1:$SUT_PORT"]
upstreams = [{ addr = "127.0.0.1:$STUB_PORT" }]
[cache]
max_entries = 100000
[[lists]]
name = "bl"
kind = "domains"
path = "$WORK/bl.txt"
[[groups]]
name = "all"
block = ["bl"]
[detector]
enabled = true
EOF

cat > "$WORK/unbound-rpz.conf" <<EOF
server:
    interface: 127.0.0.1@$SUT_PORT
    do-daemonize: no
    use-syslog: no
    chroot: ""
    username: ""
    directory: "$WORK"
    pidfile: ""
    num-threads: 1
    module-config: "respip iterator"
    do-not-query-localhost: no
    msg-cache-size: 64m
    rrset-cache-size: 64m
rpz:
    name: bl.
    zonefile: $WORK/bl.rpz
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$STUB_PORT
EOF

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# start_sut NAME: starts the SUT on core 0, sets SUT_PID and LOAD_S (start → canary NXDOMAIN).
start_sut() {
  local t0; t0=$(date +%s.%N)
  case "$1" in
    rampart) RAMPART_DNS_BENCH_CONFIG="$WORK/rampart.toml" RAMPART_DNS_BENCH_SECONDS=3600 \
               taskset -c 0 "$HARNESS" --ignored --exact serve_from_env --nocapture >"$WORK/rampart.log" 2>&1 & ;;
    unbound) taskset -c 0 unbound -d -c "$WORK/unbound-rpz.conf" >"$WORK/unbound.log" 2>&1 & ;;
    dnsmasq) taskset -c 0 dnsmasq -k --port=$SUT_PORT --listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts \
               --server=127.0.0.1#$STUB_PORT --cache-size=10000 --dns-forward-max=1000 --conf-file="$WORK/bl.dnsmasq.conf" \
               >"$WORK/dnsmasq.log" 2>&1 & ;;
  esac
  SUT_PID=$!
  PIDS+=("$SUT_PID")
  for _ in $(seq 6000); do
    if dig +time=1 +tries=1 @127.0.0.1 -p $SUT_PORT "$CANARY" A 2>/dev/null | grep -q "status: NXDOMAIN"; then break; fi
    sleep 0.01
  done
  LOAD_S=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
}

stop_sut() { kill "$SUT_PID" 2>/dev/null || true; wait "$SUT_PID" 2>/dev/null || true; sleep 0.5; }

PHASES=${PHASES:-sat reload}
SUTS=${SUTS:-rampart unbound dnsmasq}
has_phase() { case " $PHASES " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
echo "# load average at start: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

# Miss names get a per-run tag, so names from an earlier run are not cache hits.
RUN_SEQ=0
fresh_file() { # WORKLOAD -> FRESH: a copy whose miss names are unique to this run
  RUN_SEQ=$((RUN_SEQ + 1))
  case "$1" in
    W4-miss|W5-mix) sed -E "s/^m([0-9]+x[0-9]+)\.bench /m\1r$RUN_SEQ.bench /" "$WORK/$1.txt" > "$WORK/run.txt"; FRESH="$WORK/run.txt" ;;
    *) FRESH="$WORK/$1.txt" ;;
  esac
}

# paced SUT_LABEL WORKLOAD QPS SECONDS: one dnsperf run at QPS with -v; sets P_QPS P_LOSS
# (percent) P_P50 P_P99 P_P999 (ms).
paced() {
  fresh_file "$2"
  taskset -c 1 dnsperf -s 127.0.0.1 -p $SUT_PORT -d "$FRESH" -l "$4" -c 8 -T 1 -q 500 -Q "$3" -t 2 -v \
    -O suppress=timeouts > "$WORK/paced.out" 2>&1 || true
  read -r P_QPS P_LOSS P_P50 P_P99 P_P999 < <(python3 - "$WORK/paced.out" <<'PY'
import sys
lat, qps, sent, lost = [], 0.0, 0, 0
for line in open(sys.argv[1], errors="ignore"):
    if line.startswith("> "):
        try: lat.append(float(line.split()[-1]))
        except ValueError: pass
    elif "Queries per second" in line: qps = float(line.split()[3])
    elif "Queries sent" in line: sent = int(line.split()[2])
    elif "Queries lost" in line: lost = int(line.split()[2])
lat.sort()
pct = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")
loss = 100.0 * lost / sent if sent else 100.0
print(f"{qps:.0f} {loss:.4f} {pct(.5):.3f} {pct(.99):.3f} {pct(.999):.3f}")
PY
)
}

passes() { awk -v l="$P_LOSS" -v m="${LOSS_MAX:-0.1}" 'BEGIN { exit !(l < m) }'; }

# step_search WORKLOAD: peak paced rate with loss < LOSS_MAX; sets S_* from the best passing run.
# From STEP_START the rate grows x1.5 while runs pass (or halves while they fail, down to 500),
# then 3 bisections between the last passing and the first failing rate.
step_search() {
  local rate=${STEP_START:-20000} lo=0 hi=0 mid i
  S_RATE=0; S_QPS=0; S_LOSS=nan; S_P50=nan; S_P99=nan; S_P999=nan
  keep() { S_RATE=$1; S_QPS=$P_QPS; S_LOSS=$P_LOSS; S_P50=$P_P50; S_P99=$P_P99; S_P999=$P_P999; }
  step() {
    paced x "$1" "$2" "${STEP_SECONDS:-5}"
    echo "#   $1 -Q $2: $P_QPS q/s, lost $P_LOSS %, p50 $P_P50 ms, p99 $P_P99 ms" >&2
    passes
  }
  for i in $(seq 12); do
    if step "$1" "$rate"; then
      keep "$rate"; lo=$rate
      [ "$hi" -gt 0 ] && break
      rate=$((rate * 3 / 2))
    else
      hi=$rate
      [ "$lo" -gt 0 ] && break
      rate=$((rate / 2))
      [ "$rate" -ge 500 ] || return 0
    fi
  done
  [ "$hi" -gt 0 ] && [ "$lo" -gt 0 ] || return 0
  for i in 1 2 3; do
    mid=$(((lo + hi) / 2))
    if step "$1" "$mid"; then keep "$mid"; lo=$mid; else hi=$mid; fi
  done
}

echo "| round | SUT | workload | QPS | lost % | avg latency ms | latency stddev ms | RSS after run MiB |" > "$WORK/results.md"
echo "|---|---|---|---|---|---|---|---|" >> "$WORK/results.md"
echo "| round | SUT | workload | peak QPS at < ${LOSS_MAX:-0.1}% loss | lost % | p50 ms | p99 ms | p99.9 ms | p50 / p99 ms at ${FIXED_QPS:-10000} q/s | lost % at ${FIXED_QPS:-10000} |" > "$WORK/step.md"
echo "|---|---|---|---|---|---|---|---|---|---|" >> "$WORK/step.md"
: > "$WORK/load.md"
if has_phase sat || has_phase step; then
for round in $(seq "$ROUNDS"); do
for sut in $SUTS; do
  start_sut "$sut"
  rss0=$(rss_kib "$SUT_PID")
  echo "| $round | $sut | list load (start → canary NXDOMAIN) $LOAD_S s | RSS after load $((rss0 / 1024)) MiB |" >> "$WORK/load.md"
  # Warm the hot set.
  taskset -c 1 dnsperf -s 127.0.0.1 -p $SUT_PORT -d "$WORK/W1-hot.txt" -l 2 -c 8 -T 1 -q 500 -t 2 -O suppress=timeouts >/dev/null 2>&1 || true
  if has_phase sat; then
  for wl in W1-hot W2-blocked W3-blocked-sub W4-miss W5-mix; do
    fresh_file "$wl"
    out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $SUT_PORT -d "$FRESH" -l "$DUR" -c 8 -T 1 -q 500 -t 2 -O suppress=timeouts 2>&1 || true)
    qps=$(echo "$out" | awk '/Queries per second/ {print $4}')
    lost=$(echo "$out" | awk '/Queries lost/ {gsub(/[()%]/,"",$4); print $4}')
    lat=$(echo "$out" | awk '/Average Latency/ {print $4*1000}')
    sd=$(echo "$out" | awk '/Latency StdDev/ {print $4*1000}')
    rss=$(rss_kib "$SUT_PID")
    echo "| $round | $sut | $wl | $qps | $lost | $lat | $sd | $((rss / 1024)) |" | tee -a "$WORK/results.md" >&2
  done
  fi
  if has_phase step; then
  for wl in ${STEP_WORKLOADS:-W1-hot W2-blocked W4-miss W5-mix}; do
    echo "# $sut $wl: load average $(cut -d' ' -f1 /proc/loadavg)" >&2
    step_search "$wl"
    paced x "$wl" "${FIXED_QPS:-10000}" "${STEP_SECONDS:-5}"
    echo "| $round | $sut | $wl | $S_QPS (-Q $S_RATE) | $S_LOSS | $S_P50 | $S_P99 | $S_P999 | $P_P50 / $P_P99 | $P_LOSS |" | tee -a "$WORK/step.md" >&2
  done
  fi
  echo "| $round | $sut | VmHWM over the runs $(( $(awk '/VmHWM/ {print $2}' /proc/$SUT_PID/status 2>/dev/null || echo 0) / 1024 )) MiB |" >> "$WORK/load.md"
  stop_sut
done
done
cat "$WORK/load.md"
if has_phase sat; then
cat "$WORK/results.md"
echo
echo "Median QPS over $ROUNDS round(s):"
python3 - "$WORK/results.md" <<'PY'
import statistics, sys
rows = [l.strip().strip('|').split('|') for l in open(sys.argv[1]) if l.startswith('| ') and not l.startswith('| round')]
qps = {}
for r in rows:
    r = [c.strip() for c in r]
    try:
        qps.setdefault((r[2], r[1]), []).append(float(r[3]))
    except ValueError:
        pass
suts = ["rampart", "unbound", "dnsmasq"]
print("| workload | " + " | ".join(suts) + " | rampart / unbound |")
print("|---|" + "---|" * (len(suts) + 1))
for wl in sorted({k[0] for k in qps}):
    med = {s: statistics.median(qps.get((wl, s), [0])) for s in suts}
    ratio = med["rampart"] / med["unbound"] if med["unbound"] else 0
    print(f"| {wl} | " + " | ".join(f"{med[s]:.0f}" for s in suts) + f" | {ratio:.2f} |")
PY
fi
has_phase step && cat "$WORK/step.md"
grep '^bench:' "$WORK/rampart.log" || true
fi

# ---- reload under load (rampart only): W5 paced at RELOAD_QPS while the whole list is rebuilt
# and swapped every 2 s; any lost query is a failure of the atomic-swap claim.
has_phase reload || exit 0
RELOAD_QPS=${RELOAD_QPS:-5000}
RAMPART_DNS_BENCH_CONFIG="$WORK/rampart.toml" RAMPART_DNS_BENCH_SECONDS=14 RAMPART_DNS_BENCH_RELOAD_S=2 \
  taskset -c 0 "$HARNESS" --ignored --exact serve_from_env --nocapture >"$WORK/rampart-reload.log" 2>&1 &
SUT_PID=$!
PIDS+=("$SUT_PID")
for _ in $(seq 600); do
  dig +time=1 +tries=1 @127.0.0.1 -p $SUT_PORT "$CANARY" A 2>/dev/null | grep -q "status: NXDOMAIN" && break
  sleep 0.01
done
fresh_file W5-mix
out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p $SUT_PORT -d "$FRESH" -l 10 -c 8 -T 1 -Q "$RELOAD_QPS" -t 2 2>&1 || true)
wait "$SUT_PID" 2>/dev/null || true
echo
echo "Reload under load (rampart, W5 at $RELOAD_QPS q/s, full 1M-list reload every 2 s):"
echo "$out" | grep -E "Queries (sent|completed|lost)|Average Latency|Latency StdDev"
grep -E "^bench: (serving|reload|peak)" "$WORK/rampart-reload.log" | sed 's/^/  /'
