#!/usr/bin/env bash
# Blocking-mode detection and false-positive rates on the corpora in ../shared/data/waf, Rampart
# and nginx + ModSecurity v3 (Debian nginx + libnginx-mod-http-modsecurity) side by side in the
# same run, on byte-identical requests: CRS v4 from DATA_DIR/crs at paranoia PL,
# SecRuleEngine On, inbound threshold 5, one payload per GET with browser-like headers.
#  1. `corpus --emit` writes the request list once, in both request forms (runner: libinjection
#     lines as stored, modsec-learn lines as whole query strings; peer: every line
#     percent-encoded into q=; raw payloads are the same in both);
#  2. Rampart: the engine in-process on that list (`corpus --eval`: 403 = blocked) — the
#     numbers in the table; then the same requests through Rampart's proxy (examples/proxy,
#     the `proxy::start` of `rampart waf`; built-in SSRF protection off so both run CRS only)
#     as a check that parsing on the wire gives the same verdicts (`corpus --compare`);
#  3. ModSecurity: nginx (2 workers) in front of the okserver upstream, the same requests over
#     8 keep-alive loopback connections (`corpus --send`: HTTP 403 = blocked);
#  4. `corpus --report`: the table, OUT_DIR/disagreements.tsv;
#  5. nginx again with error_log at info, each disagreement re-sent alone to record the rule
#     ids ModSecurity logged (OUT_DIR/disagreements-explained.tsv, disagreement-rules.txt).
# Takes about 2 minutes on 2 cores. Usage: bench/waf-corpus.sh [DATA_DIR] [PL] [OUT_DIR]
# Needs nginx and libnginx-mod-http-modsecurity (Debian 12: nginx 1.22, libmodsecurity3 3.0.9).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA="${1:-$(pwd)/../shared/data/waf}"
PL="${2:-1}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}"
OUT="${3:-$CARGO_TARGET_DIR/waf-corpus}"
# shellcheck source=bench/waf-peer.sh
. bench/waf-peer.sh
if ! waf_peer_available; then
  echo "nginx with libnginx-mod-http-modsecurity is not installed: no peer to compare" >&2
  exit 1
fi
cargo build --release -q -p rampart-waf --example corpus --example okserver --example proxy
C="$CARGO_TARGET_DIR/release/examples/corpus"
mkdir -p "$OUT"
TMP="$(mktemp -d /tmp/rampart-wafcorpus.XXXXXX)"
cleanup() {
  if [ -n "${WAF_PID:-}" ]; then kill "$WAF_PID" 2>/dev/null || true; wait "$WAF_PID" 2>/dev/null || true; fi
  waf_peer_stop
  if [ -n "${UP_PID:-}" ]; then kill "$UP_PID" 2>/dev/null || true; wait "$UP_PID" 2>/dev/null || true; fi
  rm -rf "$TMP"
}
trap cleanup EXIT
# Same settings as the in-process engine: the paranoia level set after crs-setup; big request
# lines (percent-encoded modsec-learn lines reach ~26 KB) and unlimited keep-alive.
PEER=(workers=2
  "modsec=SecAction \"id:8800001,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level=$PL\""
  "http=large_client_header_buffers 4 64k; keepalive_requests 1000000;")

echo "start: $(date -u '+%F %T UTC'); uptime: $(uptime)"
"$C" --data "$DATA" --emit "$OUT/requests.tsv"
"$C" --data "$DATA" --pl "$PL" --eval "$OUT/requests.tsv" "$OUT/rampart.tsv"
waf_upstream_start 19100
cat >"$TMP/waf.toml" <<TOML
listen = "127.0.0.1:18180"
mode = "On"
paranoia_level = $PL
ssrf_protection = false
rules = ["$DATA/crs/crs-setup.conf.example", "$DATA/crs/rules/*.conf"]
[limits]
max_uri_bytes = 65536
max_header_bytes = 131072
[[routes]]
name = "corpus"
upstreams = ["127.0.0.1:19100"]
TOML
"$CARGO_TARGET_DIR/release/examples/proxy" "$TMP/waf.toml" >/dev/null &
WAF_PID=$!
waf_wait_port 18180 60
"$C" --conns 8 --send 127.0.0.1:18180 "$OUT/requests.tsv" "$OUT/rampart-proxy.tsv"
kill "$WAF_PID"; wait "$WAF_PID" 2>/dev/null || true; WAF_PID=""
waf_peer_start "$TMP" "$DATA/crs" 18181 19100 "${PEER[@]}"
"$C" --conns 8 --send 127.0.0.1:18181 "$OUT/requests.tsv" "$OUT/modsecurity.tsv"
waf_peer_stop
echo "after the runs: $(uptime)"
"$C" --compare "$OUT/requests.tsv" "$OUT/rampart.tsv" "$OUT/rampart-proxy.tsv" "$OUT/proxy-differences.tsv"
echo "CRS v4 at PL$PL, blocking, threshold 5; Rampart in-process, ModSecurity through nginx:"
"$C" --data "$DATA" --report "$OUT/requests.tsv" "$OUT/rampart.tsv" "$OUT/modsecurity.tsv" "$OUT" |
  tee "$OUT/table.md"

# Why they disagree: ModSecurity logs each matched rule at `info`.
rm -f "$TMP/logs/error.log"
waf_peer_start "$TMP" "$DATA/crs" 18181 19100 "${PEER[@]}" loglevel=info
"$C" --replay 127.0.0.1:18181 "$TMP/logs/error.log" "$OUT" >"$OUT/disagreement-rules.txt"
echo "disagreements: $(($(wc -l <"$OUT/disagreements.tsv") - 1)) requests in $OUT/disagreements.tsv;"
echo "  with ModSecurity's rule ids: $OUT/disagreements-explained.tsv; per rule: $OUT/disagreement-rules.txt"
