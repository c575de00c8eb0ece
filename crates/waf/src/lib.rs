//! The WAF: a SecLang engine that loads the OWASP Core Rule Set as users have it (`crs-setup.conf`,
//! `rules/*.conf`, `*.data`) and evaluates requests and responses with CRS's variables, operators,
//! transformations, actions and anomaly scoring, built-in SSRF/metadata protections, and the
//! reverse-proxy shell (`rampart waf`) that puts it in front of backends. Rule parsing and
//! evaluation are pure; the proxy does the I/O.
