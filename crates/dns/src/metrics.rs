//! Prometheus-style counters (lock-free atomics) and their text exposition.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($field:ident => $help:literal),* $(,)?) => {
        /// Counters of one server.
        #[derive(Debug, Default)]
        pub struct Metrics {
            $(#[doc = $help] pub $field: AtomicU64,)*
        }

        impl Metrics {
            /// Prometheus text exposition (all counters, `rampart_dns_` prefix).
            pub fn render(&self) -> String {
                let mut out = String::new();
                $(
                    let _ = writeln!(out, "# HELP rampart_dns_{} {}", stringify!($field), $help);
                    let _ = writeln!(out, "# TYPE rampart_dns_{} counter", stringify!($field));
                    let _ = writeln!(out, "rampart_dns_{} {}", stringify!($field), self.$field.load(Ordering::Relaxed));
                )*
                out
            }

            /// (name, value) pairs, for tests and JSON.
            pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($field), self.$field.load(Ordering::Relaxed)),)*]
            }
        }
    };
}

counters! {
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

impl Metrics {
    /// Adds one to a counter.
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
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
