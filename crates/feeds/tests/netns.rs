//! Kernel test (root only; skipped with a reason otherwise): traffic to a listed address is
//! sent continuously while the feed set is refreshed ≥ 20 times per layout (full replaces and
//! deltas, each one `nft -f` transaction); the listed address must never get through, while an
//! unlisted address does.
//!
//! Topology: namespace A (sender, filter in its `output` hook) ↔ veth ↔ namespace B (receiver on
//! 192.0.2.2 = listed and 192.0.2.3 = unlisted). Sender and receiver are this test binary
//! re-executed inside the namespaces (`RFEEDS_ROLE`), so no extra tools are needed.

use std::net::{Ipv4Addr, Ipv6Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use rampart_feeds::normalize;
use rampart_feeds::sync::{feed_sets, plan, KernelContents, Layout, NftRunner, SyncOptions};

const PORT: u16 = 9;

/// Removes a temporary directory when the test ends, pass or fail.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn sh(args: &[&str]) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Deletes the namespaces (and with them the veth pair) whatever happens.
struct Netns {
    a: String,
    b: String,
    stop: PathBuf,
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.stop, b"");
        std::thread::sleep(Duration::from_millis(100));
        sh(&["ip", "netns", "del", &self.a]);
        sh(&["ip", "netns", "del", &self.b]);
        let _ = std::fs::remove_file(&self.stop);
    }
}

fn setup(tag: &str) -> Option<Netns> {
    let pid = std::process::id();
    let ns = Netns {
        a: format!("rfeeds-a-{tag}-{pid}"),
        b: format!("rfeeds-b-{tag}-{pid}"),
        stop: std::env::temp_dir().join(format!("rfeeds-stop-{tag}-{pid}")),
    };
    let _ = std::fs::remove_file(&ns.stop);
    let (a, b) = (ns.a.as_str(), ns.b.as_str());
    let ok = sh(&["ip", "netns", "add", a])
        && sh(&["ip", "netns", "add", b])
        && sh(&[
            "ip", "-n", a, "link", "add", "va", "type", "veth", "peer", "name", "vb", "netns", b,
        ])
        && sh(&["ip", "-n", a, "addr", "add", "192.0.2.1/24", "dev", "va"])
        && sh(&["ip", "-n", b, "addr", "add", "192.0.2.2/24", "dev", "vb"])
        && sh(&["ip", "-n", b, "addr", "add", "192.0.2.3/24", "dev", "vb"])
        && sh(&["ip", "-n", a, "link", "set", "va", "up"])
        && sh(&["ip", "-n", b, "link", "set", "vb", "up"])
        && sh(&["ip", "-n", a, "link", "set", "lo", "up"])
        && sh(&["ip", "-n", b, "link", "set", "lo", "up"]);
    if !ok {
        eprintln!("skipping: cannot create namespaces/veth");
        return None;
    }
    Some(ns)
}

fn spawn_role(ns: &str, role: &str, stop: &Path) -> Child {
    let exe = std::env::current_exe().unwrap();
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(exe)
        .args([
            "--exact",
            "netns_role",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("RFEEDS_ROLE", role)
        .env("RFEEDS_STOP", stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Sender/receiver body when re-executed inside a namespace; a no-op in a normal test run.
#[test]
fn netns_role() {
    let (Ok(role), Ok(stop)) = (std::env::var("RFEEDS_ROLE"), std::env::var("RFEEDS_STOP")) else {
        return;
    };
    let stop = PathBuf::from(stop);
    match role.as_str() {
        "receiver" => {
            let listed = UdpSocket::bind(("192.0.2.2", PORT)).unwrap();
            let unlisted = UdpSocket::bind(("192.0.2.3", PORT)).unwrap();
            for s in [&listed, &unlisted] {
                s.set_nonblocking(true).unwrap();
            }
            let (mut n_listed, mut n_unlisted) = (0u64, 0u64);
            let mut buf = [0u8; 64];
            let mut stop_seen: Option<Instant> = None;
            loop {
                let mut idle = true;
                while listed.recv(&mut buf).is_ok() {
                    n_listed += 1;
                    idle = false;
                }
                while unlisted.recv(&mut buf).is_ok() {
                    n_unlisted += 1;
                    idle = false;
                }
                if stop_seen.is_none() && stop.exists() {
                    stop_seen = Some(Instant::now());
                }
                if stop_seen.is_some_and(|t| t.elapsed() > Duration::from_millis(300)) {
                    break;
                }
                if idle {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            println!("RFEEDS listed={n_listed} unlisted={n_unlisted}");
        }
        "sender" => {
            let s = UdpSocket::bind(("192.0.2.1", 0)).unwrap();
            let mut sent = 0u64;
            while !stop.exists() {
                // Dropped by the output hook: sendto fails with EPERM, which is the point.
                let _ = s.send_to(b"listed", ("192.0.2.2", PORT));
                let _ = s.send_to(b"unlisted", ("192.0.2.3", PORT));
                sent += 1;
                if sent % 16 == 0 {
                    std::thread::sleep(Duration::from_micros(100));
                }
            }
            println!("RFEEDS sent={sent}");
        }
        _ => {}
    }
}

fn output(child: Child) -> String {
    String::from_utf8_lossy(&child.wait_with_output().unwrap().stdout).into_owned()
}

fn field(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.find("RFEEDS ").map(|i| &l[i..]))
        .and_then(|l| {
            l.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {key} in {out:?}"))
}

/// A feed version: always 192.0.2.2, never 192.0.2.3, plus a rotating subset of other
/// documentation addresses (v4 singles and prefixes, and many v6 prefixes so each full replace
/// is a sizeable transaction).
fn version(i: u32) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = vec!["192.0.2.2/32".parse().unwrap()];
    for k in 0..256u32 {
        if (k * 7 + i * 13) % 5 != 0 {
            nets.push(IpNet::from(std::net::IpAddr::V4(Ipv4Addr::new(
                198, 51, 100, k as u8,
            ))));
        }
        if (k + i) % 3 == 0 {
            nets.push(IpNet::from(std::net::IpAddr::V4(Ipv4Addr::new(
                203, 0, 113, k as u8,
            ))));
        }
    }
    for k in 0..1000u32 {
        if (k + i) % 10 != 0 {
            let a = Ipv6Addr::new(
                0x2001,
                0xdb8,
                (k >> 4) as u16,
                (k & 15) as u16 * 2,
                0,
                0,
                0,
                0,
            );
            nets.push(format!("{a}/64").parse().unwrap());
        }
    }
    nets
}

/// The test table: the feed's sets and an output chain dropping to each of them.
fn table_decl(table: &str, sets: &[rampart_feeds::sync::SetRef]) -> String {
    let mut decl = format!("table inet {table} {{\n");
    for s in sets {
        let ty = if s.set.contains("_v4") {
            "ipv4_addr"
        } else {
            "ipv6_addr"
        };
        let flags = if s.interval {
            "flags interval; auto-merge;"
        } else {
            ""
        };
        decl.push_str(&format!("  set {} {{ type {ty}; {flags} }}\n", s.set));
    }
    decl.push_str(
        "  chain output {\n    type filter hook output priority filter; policy accept;\n",
    );
    for s in sets {
        let m = if s.set.contains("_v4") {
            "ip daddr"
        } else {
            "ip6 daddr"
        };
        decl.push_str(&format!("    {m} @{} counter drop\n", s.set));
    }
    decl.push_str("  }\n}\n");
    decl
}

fn run_phase(tag: &str, layout: Layout, atomic: bool) -> Option<u64> {
    let ns = setup(tag)?;
    let nft = NftRunner {
        netns: Some(ns.a.clone()),
    };
    let table = "rfeeds";
    let sets = feed_sets(table, "f", layout);
    nft.apply(&table_decl(table, &sets)).expect("load table");

    // Initial load before any traffic, like a daemon start.
    let opts = SyncOptions {
        max_delta_ratio: 0.5,
        interval_delta_max_elements: 100_000,
    };
    let first = KernelContents::layout(&normalize(&version(0), &[]), &sets);
    nft.apply(&plan(None, &first, &opts).script)
        .expect("initial load");

    let receiver = spawn_role(&ns.b, "receiver", &ns.stop);
    std::thread::sleep(Duration::from_millis(200));
    let sender = spawn_role(&ns.a, "sender", &ns.stop);
    std::thread::sleep(Duration::from_millis(200));

    let mut current = first;
    let (mut full, mut delta) = (0, 0);
    for i in 1..=24u32 {
        let next = KernelContents::layout(&normalize(&version(i), &[]), &sets);
        // Every third refresh forgets the previous state: a full replace.
        let old = if i % 3 == 0 { None } else { Some(&current) };
        let p = plan(old, &next, &opts);
        match p.mode_name() {
            "full" => full += 1,
            "delta" | "mixed" => delta += 1,
            _ => {}
        }
        let took = if atomic {
            nft.apply(&p.script)
        } else {
            // Negative control: the same statements as two transactions (flush/delete, then
            // add) open a window without enforcement, which the receiver must see.
            let (rm, add): (Vec<&str>, Vec<&str>) =
                p.script.lines().partition(|l| !l.starts_with("add "));
            nft.apply(&(rm.join("\n") + "\n"))
                .and_then(|_| nft.apply(&(add.join("\n") + "\n")))
        }
        .unwrap_or_else(|e| panic!("refresh {i} ({}): {e}", p.mode_name()));
        eprintln!(
            "{tag} refresh {i}: {} +{} -{} in {} ms",
            p.mode_name(),
            p.added,
            p.removed,
            took.as_millis()
        );
        current = next;
    }
    std::thread::sleep(Duration::from_millis(200));
    std::fs::write(&ns.stop, b"").unwrap();
    let sent = field(&output(sender), "sent");
    let recv = output(receiver);
    let (listed, unlisted) = (field(&recv, "listed"), field(&recv, "unlisted"));
    eprintln!("{tag}: {full} full + {delta} delta refreshes; sent {sent} pairs; received listed={listed} unlisted={unlisted}");
    assert!(full >= 8 && delta >= 8, "full={full} delta={delta}");
    assert!(sent > 1000, "sender too slow: {sent}");
    assert!(unlisted > 100, "unlisted traffic must pass: {unlisted}");
    Some(listed)
}

fn kernel_test_possible() -> bool {
    if !is_root() {
        eprintln!("skipping: needs root for network namespaces");
        return false;
    }
    if !sh(&["nft", "--version"]) || !sh(&["ip", "-V"]) {
        eprintln!("skipping: nft or ip not installed");
        return false;
    }
    true
}

#[test]
fn refreshes_never_open_a_gap() {
    if !kernel_test_possible() {
        return;
    }
    for (tag, layout) in [("int", Layout::IntervalOnly), ("split", Layout::Split)] {
        if let Some(listed) = run_phase(tag, layout, true) {
            assert_eq!(
                listed, 0,
                "{tag}: listed address got through during refreshes"
            );
        }
    }
}

/// The detector works: splitting each refresh into two transactions lets listed packets through.
#[test]
fn non_atomic_refresh_is_caught() {
    if !kernel_test_possible() {
        return;
    }
    if let Some(listed) = run_phase("gap", Layout::IntervalOnly, false) {
        assert!(
            listed > 0,
            "a non-atomic refresh should leak listed packets"
        );
    }
}

fn list_set(ns: &str, table: &str, set: &str) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", ns, "nft", "list", "set", "inet", table, set,
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The runner end to end with a file source: load, refuse a shrunken version while the kernel
/// keeps the last good contents, accept the next one, and reload from the cache after a
/// "restart".
#[test]
fn runner_keeps_last_good_in_the_kernel() {
    use rampart_feeds::event::RefreshStatus;
    use rampart_feeds::runner::FeedRunner;
    use rampart_feeds::source::{Cache, FeedSpec};

    if !kernel_test_possible() {
        return;
    }
    let Some(ns) = setup("run") else { return };
    let nft = NftRunner {
        netns: Some(ns.a.clone()),
    };
    let table = "rfeeds";
    nft.apply(&table_decl(
        table,
        &feed_sets(table, "f", Layout::IntervalOnly),
    ))
    .expect("load table");
    let dir = std::env::temp_dir().join(format!("rfeeds-runner-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let feed = dir.join("f.netset");
    let write = |n: u8| {
        let mut s = String::from("203.0.113.0/24\n");
        for i in 0..n {
            s.push_str(&format!("198.51.100.{i}\n"));
        }
        std::fs::write(&feed, s).unwrap();
    };
    let spec = FeedSpec {
        name: "f".into(),
        url: feed.display().to_string(),
        format: rampart_feeds::Format::Plain,
        refresh_s: 0,
        max_shrink_pct: 50,
        allow: vec!["198.51.100.7/32".parse().unwrap()],
    };
    let cache = Cache::new(dir.join("cache"));
    let mut runner = FeedRunner::new(spec.clone(), table, Layout::IntervalOnly, nft.clone());
    // Three ranges: any change is a large ratio; allow deltas so both paths run.
    runner.opts.max_delta_ratio = 1.0;

    write(100);
    let e = runner.tick(&cache, 1, false);
    assert_eq!(e.status, RefreshStatus::Updated);
    assert_eq!(e.sync_mode, "full");
    assert_eq!(e.subtracted, 1);
    let listed = list_set(&ns.a, table, "set_f_v4");
    assert!(listed.contains("198.51.100.0-198.51.100.6"), "{listed}");
    assert!(listed.contains("198.51.100.8-198.51.100.99"), "{listed}");
    assert!(
        !listed.contains("timeout") && !listed.contains("expires"),
        "{listed}"
    );

    write(10);
    let e = runner.tick(&cache, 2, false);
    assert!(
        matches!(e.status, RefreshStatus::Refused { .. }),
        "{:?}",
        e.status
    );
    assert!(list_set(&ns.a, table, "set_f_v4").contains("198.51.100.8-198.51.100.99"));

    write(80);
    let e = runner.tick(&cache, 3, false);
    assert_eq!(e.status, RefreshStatus::Updated);
    assert!(
        e.sync_mode == "delta" || e.sync_mode == "mixed",
        "{}",
        e.sync_mode
    );
    let listed = list_set(&ns.a, table, "set_f_v4");
    assert!(listed.contains("198.51.100.8-198.51.100.79"), "{listed}");

    // Restart: nothing known about the kernel; the cached version is loaded in full.
    let mut runner = FeedRunner::new(spec, table, Layout::IntervalOnly, nft);
    let e = runner.tick(&cache, 4, false);
    assert_eq!(e.status, RefreshStatus::NotModified);
    assert_eq!(e.sync_mode, "full");
    assert!(list_set(&ns.a, table, "set_f_v4").contains("198.51.100.8-198.51.100.79"));
    let _ = std::fs::remove_dir_all(&dir);
}
