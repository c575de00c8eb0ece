#!/usr/bin/env python3
"""CONNECT setup latency through a proxy: for N sequential tunnels, the time from TCP connect to
the proxy until (a) its `200` to CONNECT and (b) a completed TLS handshake with the origin
through the tunnel. Prints p50/p99 in milliseconds for both."""
import socket
import ssl
import sys
import time

proxy_host, proxy_port, target, n = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
host = target.rsplit(":", 1)[0]
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
connect_ms, tls_ms, failures = [], [], 0
for _ in range(n):
    t0 = time.perf_counter()
    s = socket.create_connection((proxy_host, proxy_port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(4096)
        if not chunk:
            break
        buf += chunk
    t1 = time.perf_counter()
    if not buf.startswith(b"HTTP/1.1 200") and not buf.startswith(b"HTTP/1.0 200"):
        failures += 1
        s.close()
        continue
    try:
        t = ctx.wrap_socket(s, server_hostname=host)
        t2 = time.perf_counter()
        t.close()
    except (ssl.SSLError, OSError):
        failures += 1
        s.close()
        continue
    connect_ms.append((t1 - t0) * 1000)
    tls_ms.append((t2 - t0) * 1000)


def pct(v, p):
    v = sorted(v)
    return v[min(len(v) - 1, int(len(v) * p))] if v else float("nan")


print(f"connect_p50_ms={pct(connect_ms, 0.5):.3f} connect_p99_ms={pct(connect_ms, 0.99):.3f} "
      f"tls_p50_ms={pct(tls_ms, 0.5):.3f} tls_p99_ms={pct(tls_ms, 0.99):.3f} ok={len(tls_ms)} failed={failures}")
