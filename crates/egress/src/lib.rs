//! The egress (forward) proxy: per-source destination allowlists (hosts, `*.domain`, ports), deny
//! lists from feeds, SSRF-safe resolution that checks every resolved address against the special-
//! purpose ranges and connects to the checked address, CONNECT with the TLS ClientHello's SNI
//! checked against the CONNECT host, request-property rules (user agent, method, upload size), and
//! one decision event per request. The decision core is pure; the proxy shell runs on tokio. It
//! does not intercept TLS.
