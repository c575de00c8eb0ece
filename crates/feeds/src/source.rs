//! Feed sources (the shell): files and HTTPS URLs, conditional requests, an on-disk cache of
//! the last good version with metadata, per-feed refresh intervals, and sanity checks that
//! refuse a suspicious new version and keep the last good one — always with a typed reason,
//! never silently.
//!
//! Cache layout (`<dir>/<name>.data` raw bytes of the last good version, `<dir>/<name>.meta.json`
//! its [`CacheMeta`]); both are written to a temporary file and renamed, so a crash never
//! leaves a half-written "last good" copy.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use rampart_ir::{AddressSet, SetSource};

use crate::event::{RefreshEvent, RefreshStatus};
use crate::format::Format;
use crate::parse::{parse_bytes, Parsed};

/// Largest feed body accepted (bytes).
pub const MAX_FEED_BYTES: u64 = 256 * 1024 * 1024;
/// Default refusal threshold: a new version with fewer than half the entries is refused.
pub const DEFAULT_MAX_SHRINK_PCT: u8 = 50;
/// HTTP timeout for a whole request.
pub const HTTP_TIMEOUT_S: u64 = 60;

/// One feed to maintain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeedSpec {
    /// Name (`[A-Za-z0-9_.-]`, ≤ 64): cache file stem and nft set stem.
    pub name: String,
    /// `https://` URL, `http://` URL on a loopback host, `file://` URL or a path.
    pub url: String,
    /// Parser.
    pub format: Format,
    /// Refresh interval in seconds.
    pub refresh_s: u64,
    /// Refuse a new version with more than this many percent fewer entries than the last good
    /// one.
    pub max_shrink_pct: u8,
    /// Never block these (the set's `except`, the policy's own networks).
    pub allow: Vec<IpNet>,
}

/// Errors of sources and the cache.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The feed name is unusable as a file name / set stem.
    #[error("bad feed name {0:?}: use 1-64 characters of A-Z a-z 0-9 _ . -")]
    BadName(String),
    /// The set is not a feed set.
    #[error("set {0} is not filled from a feed")]
    NotAFeed(String),
    /// The format string is not known.
    #[error(transparent)]
    Format(#[from] crate::format::FormatError),
    /// URL scheme not allowed (plain `http://` only to loopback).
    #[error("refusing URL {0}: use https:// (plain http:// only for loopback hosts)")]
    Scheme(String),
    /// The body is larger than [`MAX_FEED_BYTES`].
    #[error("feed larger than {MAX_FEED_BYTES} bytes")]
    TooLarge,
    /// HTTP failure (status or transport).
    #[error("HTTP: {0}")]
    Http(String),
    /// File or cache I/O.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SourceError + '_ {
    move |source| SourceError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Validate a feed name.
pub fn check_name(name: &str) -> Result<(), SourceError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SourceError::BadName(name.chars().take(80).collect()))
    }
}

impl FeedSpec {
    /// The spec of an IR feed set; `own_networks` (the policy's zones) are never blocked.
    pub fn from_ir(set: &AddressSet, own_networks: &[IpNet]) -> Result<Self, SourceError> {
        let SetSource::Feed {
            name,
            url,
            format,
            refresh_s,
        } = &set.source
        else {
            return Err(SourceError::NotAFeed(set.name.clone()));
        };
        check_name(name)?;
        let mut allow = set.except.clone();
        allow.extend_from_slice(own_networks);
        Ok(Self {
            name: name.clone(),
            url: url.clone(),
            format: format.parse()?,
            refresh_s: *refresh_s,
            max_shrink_pct: DEFAULT_MAX_SHRINK_PCT,
            allow,
        })
    }
}

/// Metadata of the cached last good version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheMeta {
    /// Source URL or path.
    pub url: String,
    /// HTTP `ETag` of the cached version.
    pub etag: Option<String>,
    /// HTTP `Last-Modified` of the cached version.
    pub last_modified: Option<String>,
    /// When the cached version was fetched (Unix seconds).
    pub fetched_at_unix: u64,
    /// When the source was last asked (Unix seconds), whatever the outcome.
    pub checked_at_unix: u64,
    /// Entries of the cached version.
    pub entries: u64,
    /// Size of the cached version.
    pub bytes: u64,
    /// Why the last new version was refused, if it was.
    pub last_refusal: Option<String>,
}

/// The on-disk cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// A cache in `dir` (created on first store).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn data_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.data"))
    }

    fn meta_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.meta.json"))
    }

    /// The metadata of `name`, if cached and readable.
    pub fn meta(&self, name: &str) -> Option<CacheMeta> {
        let text = fs::read_to_string(self.meta_path(name)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// The last good bytes of `name`.
    pub fn data(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.data_path(name)).ok()
    }

    fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<(), SourceError> {
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, bytes).map_err(io_err(&tmp))?;
        fs::rename(&tmp, path).map_err(io_err(path))
    }

    /// Store a new last good version.
    pub fn store(&self, name: &str, data: &[u8], meta: &CacheMeta) -> Result<(), SourceError> {
        self.write_atomic(&self.data_path(name), data)?;
        self.store_meta(name, meta)
    }

    /// Update only the metadata.
    pub fn store_meta(&self, name: &str, meta: &CacheMeta) -> Result<(), SourceError> {
        let text = serde_json::to_vec_pretty(meta).unwrap_or_default();
        self.write_atomic(&self.meta_path(name), &text)
    }

    /// Names of cached feeds.
    pub fn list(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut v: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".meta.json"))
                    .map(str::to_string)
            })
            .collect();
        v.sort();
        v
    }
}

/// What a fetch returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// Unchanged since the cached version (HTTP 304).
    NotModified,
    /// A body.
    Body {
        /// The bytes.
        data: Vec<u8>,
        /// `ETag`, if sent.
        etag: Option<String>,
        /// `Last-Modified`, if sent.
        last_modified: Option<String>,
    },
}

fn read_bounded(mut r: impl Read) -> Result<Vec<u8>, SourceError> {
    let mut data = Vec::new();
    r.by_ref()
        .take(MAX_FEED_BYTES + 1)
        .read_to_end(&mut data)
        .map_err(|e| SourceError::Http(e.to_string()))?;
    if data.len() as u64 > MAX_FEED_BYTES {
        return Err(SourceError::TooLarge);
    }
    Ok(data)
}

fn loopback_host(rest: &str) -> bool {
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|a| a.is_loopback())
}

/// Fetch `url` (conditionally when `meta` carries validators).
pub fn fetch(url: &str, meta: Option<&CacheMeta>) -> Result<Fetched, SourceError> {
    if let Some(rest) = url.strip_prefix("http://") {
        if !loopback_host(rest) {
            return Err(SourceError::Scheme(url.chars().take(200).collect()));
        }
    } else if url.contains("://") && !url.starts_with("https://") && !url.starts_with("file://") {
        return Err(SourceError::Scheme(url.chars().take(200).collect()));
    } else if !url.starts_with("https://") {
        let path = Path::new(url.strip_prefix("file://").unwrap_or(url));
        let f = fs::File::open(path).map_err(io_err(path))?;
        let data = read_bounded(f)?;
        return Ok(Fetched::Body {
            data,
            etag: None,
            last_modified: None,
        });
    }
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(HTTP_TIMEOUT_S))
        .redirects(5)
        .build();
    let mut req = agent.get(url);
    if let Some(m) = meta {
        if let Some(e) = &m.etag {
            req = req.set("If-None-Match", e);
        }
        if let Some(lm) = &m.last_modified {
            req = req.set("If-Modified-Since", lm);
        }
    }
    let resp = match req.call() {
        Ok(r) => r,
        Err(ureq::Error::Status(304, _)) => return Ok(Fetched::NotModified),
        Err(ureq::Error::Status(code, r)) => {
            return Err(SourceError::Http(format!(
                "status {code} {}",
                r.status_text()
            )))
        }
        Err(e) => return Err(SourceError::Http(e.to_string())),
    };
    if resp.status() == 304 {
        return Ok(Fetched::NotModified);
    }
    let etag = resp.header("ETag").map(str::to_string);
    let last_modified = resp.header("Last-Modified").map(str::to_string);
    let data = read_bounded(resp.into_reader())?;
    Ok(Fetched::Body {
        data,
        etag,
        last_modified,
    })
}

/// Why a new version was refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Refusal {
    /// No usable entries at all.
    #[error("new version has no usable entries ({rejected} lines rejected)")]
    Empty {
        /// Lines rejected.
        rejected: u64,
    },
    /// Fewer entries than allowed relative to the last good version.
    #[error("new version has {new} entries, {shrink_pct}% fewer than the last good {previous} (limit {limit_pct}%)")]
    Shrank {
        /// Entries of the last good version.
        previous: u64,
        /// Entries of the new version.
        new: u64,
        /// How much it shrank, percent.
        shrink_pct: u64,
        /// The configured limit.
        limit_pct: u8,
    },
}

/// Sanity-check a new version against the last good entry count (pure).
pub fn sanity(
    new: &Parsed,
    previous_entries: Option<u64>,
    max_shrink_pct: u8,
) -> Result<(), Refusal> {
    let n = new.entries() as u64;
    if n == 0 {
        return Err(Refusal::Empty {
            rejected: new.stats.rejected + new.stats.unsupported,
        });
    }
    if let Some(prev) = previous_entries.filter(|p| *p > 0) {
        if n < prev {
            let shrink_pct = (prev - n) * 100 / prev;
            if shrink_pct > max_shrink_pct as u64 {
                return Err(Refusal::Shrank {
                    previous: prev,
                    new: n,
                    shrink_pct,
                    limit_pct: max_shrink_pct,
                });
            }
        }
    }
    Ok(())
}

/// The result of one refresh attempt.
#[derive(Clone, Debug)]
pub struct Refreshed {
    /// Outcome and counts (kernel fields are filled by the caller after syncing).
    pub event: RefreshEvent,
    /// The version to enforce: the new one when accepted, else the last good one (None when
    /// there is none).
    pub current: Option<Parsed>,
    /// Whether `current` differs from what the previous refresh returned.
    pub changed: bool,
}

/// Refresh one feed: honour the interval (unless `force`), fetch, parse, sanity-check, and
/// update the cache. Never fails: every problem is an outcome in the event.
pub fn refresh(spec: &FeedSpec, cache: &Cache, now_unix: u64, force: bool) -> Refreshed {
    let name = spec.name.as_str();
    let meta = cache.meta(name);
    let last_good = || {
        cache
            .data(name)
            .map(|d| parse_bytes(&d, &spec.format, &spec.url))
    };
    if let Err(e) = check_name(name) {
        return Refreshed {
            event: RefreshEvent::new(
                name,
                RefreshStatus::FetchFailed {
                    reason: e.to_string(),
                },
            ),
            current: None,
            changed: false,
        };
    }
    if let Some(m) = &meta {
        let due = m.checked_at_unix.saturating_add(spec.refresh_s);
        if !force && now_unix < due {
            return Refreshed {
                event: RefreshEvent::new(
                    name,
                    RefreshStatus::NotDue {
                        due_in_s: due - now_unix,
                    },
                ),
                current: last_good(),
                changed: false,
            };
        }
    }
    let mut meta_next = meta.clone().unwrap_or_default();
    meta_next.url = spec.url.clone();
    meta_next.checked_at_unix = now_unix;
    let kept = |status: RefreshStatus, meta_next: &CacheMeta| {
        // Recording the check time is best effort: failing to write it only means the next
        // attempt comes sooner.
        let _ = cache.store_meta(name, meta_next);
        let current = last_good();
        let mut event = RefreshEvent::new(name, status);
        if let Some(c) = &current {
            event.entries = c.entries() as u64;
        }
        Refreshed {
            event,
            current,
            changed: false,
        }
    };
    let fetched = match fetch(&spec.url, meta.as_ref().filter(|m| m.url == spec.url)) {
        Ok(f) => f,
        Err(e) => {
            return kept(
                RefreshStatus::FetchFailed {
                    reason: e.to_string(),
                },
                &meta_next,
            );
        }
    };
    let (data, etag, last_modified) = match fetched {
        Fetched::NotModified => return kept(RefreshStatus::NotModified, &meta_next),
        Fetched::Body {
            data,
            etag,
            last_modified,
        } => (data, etag, last_modified),
    };
    if meta.is_some() && cache.data(name).as_deref() == Some(data.as_slice()) {
        return kept(RefreshStatus::NotModified, &meta_next);
    }
    let parsed = parse_bytes(&data, &spec.format, &spec.url);
    // A new URL is a new feed: the old entry count says nothing about it.
    let previous = meta
        .as_ref()
        .filter(|m| m.url == spec.url)
        .map(|m| m.entries);
    if let Err(refusal) = sanity(&parsed, previous, spec.max_shrink_pct) {
        meta_next.last_refusal = Some(refusal.to_string());
        let mut r = kept(
            RefreshStatus::Refused {
                reason: refusal.to_string(),
            },
            &meta_next,
        );
        r.event.rejected_lines = parsed.stats.rejected;
        r.event.unsupported_lines = parsed.stats.unsupported;
        return r;
    }
    meta_next.etag = etag;
    meta_next.last_modified = last_modified;
    meta_next.fetched_at_unix = now_unix;
    meta_next.entries = parsed.entries() as u64;
    meta_next.bytes = data.len() as u64;
    meta_next.last_refusal = None;
    if let Err(e) = cache.store(name, &data, &meta_next) {
        // Enforce the new version anyway, but say the cache is stale.
        let mut event = RefreshEvent::new(
            name,
            RefreshStatus::FetchFailed {
                reason: format!("new version parsed but not cached: {e}"),
            },
        );
        event.entries = parsed.entries() as u64;
        return Refreshed {
            event,
            current: Some(parsed),
            changed: true,
        };
    }
    let mut event = RefreshEvent::new(name, RefreshStatus::Updated);
    event.entries = parsed.entries() as u64;
    event.rejected_lines = parsed.stats.rejected;
    event.unsupported_lines = parsed.stats.unsupported;
    Refreshed {
        event,
        current: Some(parsed),
        changed: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("tor_exits-1.v2").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("").is_err());
        assert!(check_name(".hidden").is_err());
        assert!(check_name(&"a".repeat(65)).is_err());
    }

    #[test]
    fn sanity_rules() {
        let p = |text: &str| parse_bytes(text.as_bytes(), &Format::Plain, "f");
        assert!(matches!(
            sanity(&p("# only\n"), None, 50),
            Err(Refusal::Empty { .. })
        ));
        assert!(matches!(
            sanity(&p("junk\n"), Some(3), 50),
            Err(Refusal::Empty { rejected: 1 })
        ));
        let four = p("192.0.2.1\n192.0.2.2\n192.0.2.3\n192.0.2.4\n");
        assert!(sanity(&four, Some(8), 50).is_ok());
        assert_eq!(
            sanity(&four, Some(9), 50),
            Err(Refusal::Shrank {
                previous: 9,
                new: 4,
                shrink_pct: 55,
                limit_pct: 50
            })
        );
        assert!(sanity(&four, Some(2), 50).is_ok());
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(matches!(
            fetch("http://feeds.example.com/x", None),
            Err(SourceError::Scheme(_))
        ));
        assert!(matches!(
            fetch("ftp://feeds.example.com/x", None),
            Err(SourceError::Scheme(_))
        ));
        assert!(loopback_host("127.0.0.1:8080/x"));
        assert!(loopback_host("[::1]:80/"));
        assert!(!loopback_host("127.0.0.1.example.com/"));
    }
}
