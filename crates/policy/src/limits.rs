//! Bounds on everything that comes from policy input (STYLE P4). Hitting one is a diagnostic,
//! never a panic or unbounded growth.

/// Largest policy, include or set file read, in bytes.
/// Why: 16 MiB holds a million-line blocklist; anything bigger belongs in a feed.
pub const MAX_FILE_BYTES: usize = 16 * 1024 * 1024;
/// Deepest include nesting.
/// Why: real policies nest two or three levels; 16 leaves room and bounds recursion.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// Most files one policy may load (includes plus set files).
pub const MAX_FILES: usize = 256;
/// Most lines in one set file.
pub const MAX_SET_FILE_LINES: usize = 1_000_000;
/// Most elements in one address set (inline or from a file, before aggregation).
pub const MAX_SET_ELEMENTS: usize = 1_000_000;
/// Most rules (user and profile) in one policy.
/// Why: the analysis budget is stated for 10,000 rules; 100,000 leaves headroom.
pub const MAX_RULES: usize = 100_000;
/// Most zones, sets, services or profiles declared in one policy.
pub const MAX_DECLARATIONS: usize = 10_000;
/// Most entries in any one list of a rule, zone or service (peers, services, networks, ...).
pub const MAX_LIST_ITEMS: usize = 10_000;
/// Longest name of a zone, set, service or rule.
/// Why: names become nft set names and log prefixes, which are short.
pub const MAX_NAME_LEN: usize = 64;
/// Longest description.
pub const MAX_DESCRIPTION_LEN: usize = 4096;
/// Longest interface name (IFNAMSIZ 16 minus the terminating NUL).
pub const MAX_IFNAME_LEN: usize = 15;
/// Longest cgroup path.
pub const MAX_CGROUP_LEN: usize = 4096;
/// Largest rate or burst in a limit.
pub const MAX_RATE: u64 = 1_000_000_000_000;
/// Largest per-source connection cap.
pub const MAX_CONN_LIMIT: u32 = 1_000_000;
/// Shortest and longest feed refresh interval, seconds.
pub const MIN_FEED_REFRESH_S: u64 = 60;
/// Longest feed refresh interval, seconds (one week).
pub const MAX_FEED_REFRESH_S: u64 = 7 * 86_400;
/// Most diagnostics kept for one load.
pub const MAX_DIAGNOSTICS: usize = 1_000;
