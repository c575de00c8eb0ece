//! Prometheus-text counters (lock-free atomics).

rampart_events::prometheus_counters! {
    prefix = "rampart_egress_",
    connections => "Client connections accepted.",
    connections_refused => "Client connections closed at once because max_connections was reached.",
    requests_http => "Plain HTTP (absolute-form) requests decided.",
    requests_connect => "CONNECT requests decided.",
    allowed => "Requests allowed.",
    denied => "Requests denied.",
    reported => "Requests allowed in report-only mode that enforcement would deny.",
    denied_address => "Requests denied because a resolved address was special-purpose or deny-listed.",
    denied_sni => "Tunnels refused on the ClientHello (SNI mismatch, missing SNI, not TLS, malformed).",
    bad_requests => "Malformed request heads answered 400.",
    head_timeouts => "Clients that did not send a complete head in time.",
    resolve_failures => "Lookups that failed or returned no address.",
    upstream_failures => "Upstream connects or exchanges that failed.",
    log_dropped => "Decision events dropped because the writer queue was full.",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_counter() {
        let m = Metrics::default();
        Metrics::inc(&m.denied);
        let text = m.render();
        assert!(text.contains("rampart_egress_denied 1\n"));
        assert!(text.contains("# TYPE rampart_egress_allowed counter"));
        assert_eq!(m.snapshot().len(), 14);
    }
}
