//! Prometheus-style counters (lock-free atomics) and their text exposition.

rampart_events::prometheus_counters! {
    prefix = "rampart_dns_",
    queries_udp => "Queries received over UDP.",
    queries_tcp => "Queries received over TCP.",
    malformed => "Messages that failed to parse (answered FORMERR when possible).",
    blocked_query => "Queries blocked by name (lists, regex, DoH bootstrap, tunnel blocks).",
    blocked_response => "Answers blocked by response checks (CNAME, answer IP, rebinding).",
    allowed => "Queries answered from cache or upstream.",
    cache_hits => "Answers served from cache.",
    cache_misses => "Queries forwarded upstream.",
    upstream_errors => "Upstream attempts that failed (timeout, socket error, bad reply).",
    upstream_connections => "TCP and DoT connections opened to upstreams (each carries many queries).",
    servfail => "SERVFAIL answers after every upstream failed.",
    overload_drops => "Queries refused because max_inflight was reached.",
    tunnel_detections => "Tunnelling/exfiltration detections.",
    log_dropped => "Query-log events dropped because the writer queue was full.",
    reloads => "Successful list reloads.",
    reload_failures => "Failed list reloads (old lists kept).",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        Metrics::inc(&m.cache_hits);
        let text = m.render();
        assert!(text.contains("rampart_dns_cache_hits 1\n"));
        assert!(text.contains("# TYPE rampart_dns_reloads counter"));
        assert_eq!(m.snapshot().len(), 16);
    }
}
