//! Data-driven checks on the real feeds in `/work/shared/data` (skipped with a reason when
//! absent): entry counts match the data README, nothing valid is rejected, aggregation never
//! loses or adds addresses, and the same list in four domain formats parses to the same names.

use std::path::{Path, PathBuf};

use rampart_feeds::cidr::FamilyRanges;
use rampart_feeds::{check_file, parse_reader, Format};

fn data_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("RAMPART_SHARED_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/work/shared/data"));
    if dir.join("feeds").is_dir() {
        Some(dir)
    } else {
        eprintln!("skipping: shared data not found at {}", dir.display());
        None
    }
}

fn parse(path: &Path, format: &Format) -> rampart_feeds::Parsed {
    let f = std::fs::File::open(path).unwrap();
    parse_reader(
        std::io::BufReader::new(f),
        format,
        &path.display().to_string(),
    )
    .unwrap()
}

#[test]
fn ip_feeds_match_the_readme() {
    let Some(dir) = data_dir() else { return };
    // (file, entries per the data README, detected format name)
    let cases = [
        ("feeds/firehol_level1.netset", 6656, "plain"),
        ("feeds/firehol_level2.netset", 19965, "plain"),
        ("feeds/firehol_level3.netset", 29160, "plain"),
        ("feeds/firehol_level4.netset", 102090, "plain"),
        ("feeds/firehol_abusers_30d.netset", 250174, "plain"),
        ("feeds/spamhaus_drop.netset", 781, "plain"),
        ("feeds/spamhaus_edrop.netset", 51, "plain"),
        ("feeds/tor_exits.ipset", 917, "plain"),
        ("feeds/et_compromised.ipset", 1479, "plain"),
        ("feeds/feodo.ipset", 1069, "plain"),
        ("feeds/sslbl.ipset", 142, "plain"),
        ("feeds/geolite2_country/country_us.netset", 47024, "plain"),
        ("feeds/geolite2_country/country_gb.netset", 16378, "plain"),
        ("feeds/ipsum.txt", 120430, "ipsum"),
        ("feeds/tor-exit-nodes.lst", 1746, "plain"),
    ];
    for (file, entries, fmt) in cases {
        let path = dir.join(file);
        let report = check_file(&path, None, &[]).unwrap();
        assert_eq!(report.format.name(), fmt, "{file}");
        assert_eq!(report.raw_nets, entries, "{file}");
        assert_eq!(
            report.stats.rejected,
            0,
            "{file}: {:?}",
            report.errors.first()
        );
        // Aggregation keeps exactly the same addresses.
        let parsed = parse(&path, &report.format);
        let before = FamilyRanges::from_nets(&parsed.nets).address_counts();
        let agg = rampart_feeds::aggregate(&parsed.nets);
        let after = FamilyRanges::from_nets(&agg.all()).address_counts();
        assert_eq!(before, after, "{file}");
        assert!(agg.len() <= parsed.nets.len(), "{file}");
    }
}

#[test]
fn ipsum_levels_filter() {
    let Some(dir) = data_dir() else { return };
    let path = dir.join("feeds/ipsum.txt");
    let all = parse(&path, &"ipsum".parse().unwrap());
    let l3 = parse(&path, &"ipsum:min=3".parse().unwrap());
    assert_eq!(all.nets.len(), 120430);
    assert!(l3.nets.len() < all.nets.len() / 2, "{}", l3.nets.len());
    assert_eq!(l3.nets.len() as u64 + l3.stats.filtered, 120430);
}

#[test]
fn tor_list_has_v6() {
    let Some(dir) = data_dir() else { return };
    let p = parse(&dir.join("feeds/tor-exit-nodes.lst"), &Format::Tor);
    assert_eq!(
        p.nets
            .iter()
            .filter(|n| matches!(n, ipnet::IpNet::V6(_)))
            .count(),
        619
    );
}

#[test]
fn one_list_four_formats_same_names() {
    let Some(dir) = data_dir() else { return };
    let d = dir.join("domains/blocklistproject");
    for (list, count) in [("ransomware", 1904), ("scam", 8527)] {
        let files = [
            (format!("alt-version/{list}-nl.txt"), "domains"),
            (format!("{list}.txt"), "hosts"),
            (format!("adguard/{list}-ags.txt"), "adblock"),
            (format!("dnsmasq-version/{list}-dnsmasq.txt"), "dnsmasq"),
        ];
        let mut sets = Vec::new();
        for (f, fmt) in &files {
            let path = d.join(f);
            let report = check_file(&path, None, &[]).unwrap();
            assert_eq!(report.format.name(), *fmt, "{f}");
            let p = parse(&path, &report.format);
            let mut names: Vec<String> = p.domains.iter().map(|r| r.name.clone()).collect();
            names.sort();
            names.dedup();
            assert_eq!(p.stats.used, count, "{f}: {:?}", p.errors.first());
            sets.push(names);
        }
        for s in &sets[1..] {
            assert_eq!(s, &sets[0], "{list}");
        }
    }
}

#[test]
fn domain_lists_parse_with_few_rejects() {
    let Some(dir) = data_dir() else { return };
    let cases = [
        ("domains/hagezi/wildcard/light.txt", "domains"),
        ("domains/hagezi/adblock/light.txt", "adblock"),
        (
            "domains/hagezi/unbound/doh-vpn-proxy-bypass.blacklist.conf",
            "unbound",
        ),
        ("domains/hagezi/hosts/fake.txt", "hosts"),
        ("domains/ut1/blacklists/dynamic-dns/domains", "domains"),
        ("domains/1hosts/Pro/domains.txt", "domains"),
    ];
    for (file, fmt) in cases {
        let path = dir.join(file);
        let report = check_file(&path, None, &[]).unwrap();
        assert_eq!(report.format.name(), fmt, "{file}");
        let bad = report.stats.rejected + report.stats.unsupported;
        // Real lists carry a few oddities (UT1 IP entries, over-long labels); never many.
        assert!(
            bad * 1000 <= report.stats.used.max(1),
            "{file}: {bad} bad of {}: {:?}",
            report.stats.used,
            report.errors.iter().take(3).collect::<Vec<_>>()
        );
        assert!(report.domains_block > 0, "{file}");
    }
    // hagezi's wildcard and adblock renderings of `light` are the same list.
    let w = parse(
        &dir.join("domains/hagezi/wildcard/light.txt"),
        &"domains".parse().unwrap(),
    );
    let a = parse(
        &dir.join("domains/hagezi/adblock/light.txt"),
        &Format::Adblock,
    );
    assert_eq!(w.domains.len(), a.domains.len());
}
