# Sourced by bench/waf-proxy.sh and bench/waf-corpus.sh: the nginx + ModSecurity v3 peer
# (Debian nginx, libnginx-mod-http-modsecurity, libmodsecurity3) loading a CRS v4 checkout, in
# front of one upstream. Not executable on its own.
#
# waf_peer_available                 → true when nginx and the ModSecurity module are installed
# waf_peer_start DIR CRS WAF_PORT UPSTREAM_PORT [key=value …]
#   keys: workers=N (1), cpus=LIST (taskset; none), plain_port=P (a second server without the
#   WAF; none), loglevel=L (error_log level; warn — `info` logs every rule match),
#   modsec="directives" (appended after CRS's setup file), http="directives" (http block)
#   Sets NGX_PID and waits until WAF_PORT answers.
# waf_peer_stop                      → stops it (TERM to the master, waits for it)
# waf_upstream_start PORT [CPUS]     → the okserver example as the upstream; sets UP_PID
#   (UPSTREAM_CONTENT_TYPE, if set, is the Content-Type of its answers; unset: none)
#   (needs "$CARGO_TARGET_DIR/release/examples/okserver" built)
MODSEC_SO=/usr/lib/nginx/modules/ngx_http_modsecurity_module.so

waf_peer_available() {
  command -v nginx >/dev/null && [ -f "$MODSEC_SO" ] && [ -f /etc/nginx/modsecurity.conf ]
}

waf_wait_port() { # port, seconds
  local i
  for ((i = 0; i < ${2:-30} * 10; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on 127.0.0.1:$1" >&2
  return 1
}

waf_upstream_start() {
  local cmd=("$CARGO_TARGET_DIR/release/examples/okserver" "127.0.0.1:$1" ${UPSTREAM_CONTENT_TYPE:+"$UPSTREAM_CONTENT_TYPE"})
  if [ -n "${2:-}" ]; then cmd=(taskset -c "$2" "${cmd[@]}"); fi
  "${cmd[@]}" >/dev/null &
  UP_PID=$!
  waf_wait_port "$1" 10
}

waf_peer_start() {
  local dir=$1 crs=$2 port=$3 up=$4; shift 4
  local workers=1 cpus="" plain_port="" loglevel=warn modsec="" http=""
  local kv
  for kv in "$@"; do
    case $kv in
      workers=*) workers=${kv#*=} ;;
      cpus=*) cpus=${kv#*=} ;;
      plain_port=*) plain_port=${kv#*=} ;;
      loglevel=*) loglevel=${kv#*=} ;;
      modsec=*) modsec=${kv#*=} ;;
      http=*) http=${kv#*=} ;;
      *) echo "waf_peer_start: unknown $kv" >&2; return 1 ;;
    esac
  done
  mkdir -p "$dir/logs"
  # ModSecurity as Debian configures it (/etc/nginx/modsecurity.conf: request and response
  # body access, JSON/XML processors, PCRE match limit 1000), blocking, audit log off, CRS v4.
  cat >"$dir/modsec.conf" <<CONF
Include /etc/nginx/modsecurity.conf
SecRuleEngine On
SecAuditEngine Off
Include $crs/crs-setup.conf.example
$modsec
Include $crs/rules/*.conf
CONF
  local plain=""
  if [ -n "$plain_port" ]; then
    plain="server {
    listen 127.0.0.1:$plain_port;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }
  }"
  fi
  cat >"$dir/nginx.conf" <<CONF
load_module $MODSEC_SO;
user root;
worker_processes $workers;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log $loglevel;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_buffer_size 64k;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  $http
  upstream up { server 127.0.0.1:$up; keepalive 32; }
  server {
    listen 127.0.0.1:$port;
    modsecurity on;
    modsecurity_rules_file $dir/modsec.conf;
    location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }
  }
  $plain
}
CONF
  local cmd=(nginx -p "$dir" -c "$dir/nginx.conf")
  if [ -n "$cpus" ]; then cmd=(taskset -c "$cpus" "${cmd[@]}"); fi
  "${cmd[@]}" &
  NGX_PID=$!
  waf_wait_port "$port" 60
}

waf_peer_stop() {
  if [ -n "${NGX_PID:-}" ]; then
    kill "$NGX_PID" 2>/dev/null || true
    wait "$NGX_PID" 2>/dev/null || true
    NGX_PID=""
  fi
}
