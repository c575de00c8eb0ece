//! Kernel tests (root): compiled rulesets in network namespaces with real traffic, the
//! apply/confirm/rollback state machine (including `kill -9` of the applier), plan, and NFLOG.
//! Each test builds its own namespaces (unique names, removed on drop) and skips with a printed
//! reason when not root or tools are missing.

#![allow(clippy::field_reassign_with_default)] // Why: policies are built up field by field for readability.

mod support;

use std::io::{BufRead, BufReader};
use std::time::Duration;

use rampart_ir::*;
use rampart_nft::{emit, static_set_elements, EmitOptions};
use rampart_nft_apply::runner::Nft;
use rampart_nft_apply::state::StateDir;
use rampart_nft_apply::txn;
use support::*;

const TOOL: &str = env!("CARGO_BIN_EXE_rampart-nft-tool");

macro_rules! skip_unless_kernel {
    () => {
        if let Some(reason) = unavailable() {
            eprintln!("skipping: {reason}");
            return;
        }
    };
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn rule(name: &str, direction: Direction, action: Action) -> Rule {
    Rule {
        mitigates: vec![TechniqueId("T1190".into())],
        loc: SourceLoc {
            file: "test.toml".into(),
            line: 1,
            col: 1,
        },
        ..Rule::new(name, direction, action)
    }
}

fn tcp(port: u16) -> L4Match {
    L4Match {
        protocol: Some(proto::TCP),
        src_ports: vec![],
        dst_ports: vec![PortRange::single(port)],
        icmp_types: vec![],
        service: None,
    }
}

fn udp(port: u16) -> L4Match {
    L4Match {
        protocol: Some(proto::UDP),
        ..tcp(port)
    }
}

fn icmp(p: u8, t: u8) -> L4Match {
    L4Match {
        protocol: Some(p),
        src_ports: vec![],
        dst_ports: vec![],
        icmp_types: vec![t],
        service: None,
    }
}

fn zone(name: &str, iface: &str, nets: &[&str]) -> Zone {
    Zone {
        name: name.into(),
        interfaces: vec![iface.into()],
        networks: nets.iter().map(|n| net(n)).collect(),
        trusted: true,
        public_facing: false,
        description: None,
        loc: SourceLoc::default(),
    }
}

struct Topo {
    lab: Lab,
    cli: String,
    rtr: String,
    srv: String,
}

/// client (192.0.2.2, 2001:db8:1::2) — router (lan0 / dmz0) — server (198.51.100.2,
/// 2001:db8:2::2). Forwarding is enabled inside the router namespace only. The server runs an
/// echo server on the given ports.
fn topo(tag: &str, server_ports: &str) -> Topo {
    let mut lab = Lab::new(tag);
    let cli = lab.ns("c");
    let rtr = lab.ns("r");
    let srv = lab.ns("s");
    lab.veth(&cli, "eth0", &rtr, "lan0");
    lab.veth(&srv, "eth0", &rtr, "dmz0");
    for (ns, cmds) in [
        (
            &cli,
            vec![
                "ip addr add 192.0.2.2/24 dev eth0",
                "ip -6 addr add 2001:db8:1::2/64 dev eth0 nodad",
                "ip route add default via 192.0.2.1",
                "ip -6 route add default via 2001:db8:1::1",
            ],
        ),
        (
            &srv,
            vec![
                "ip addr add 198.51.100.2/24 dev eth0",
                "ip -6 addr add 2001:db8:2::2/64 dev eth0 nodad",
                "ip route add default via 198.51.100.1",
                "ip -6 route add default via 2001:db8:2::1",
            ],
        ),
        (
            &rtr,
            vec![
                "ip addr add 192.0.2.1/24 dev lan0",
                "ip -6 addr add 2001:db8:1::1/64 dev lan0 nodad",
                "ip addr add 198.51.100.1/24 dev dmz0",
                "ip -6 addr add 2001:db8:2::1/64 dev dmz0 nodad",
                "sysctl -qw net.ipv4.ip_forward=1",
                "sysctl -qw net.ipv6.conf.all.forwarding=1",
            ],
        ),
    ] {
        for c in cmds {
            lab.exec_ok(ns, c);
        }
    }
    let server = lab.write("server.py", SERVER_PY);
    lab.write("probe.py", PROBE_PY);
    if !server_ports.is_empty() {
        let idx = lab.spawn(
            &srv,
            &format!("python3 {} {server_ports}", server.display()),
        );
        let out = lab.children[idx].stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).unwrap();
        assert_eq!(line.trim(), "ready");
    }
    Topo { lab, cli, rtr, srv }
}

impl Topo {
    fn probe(&self, from: &str, kind: &str, addr: &str, port: u16) -> String {
        let probe = self.lab.dir.join("probe.py");
        self.lab
            .exec_ok(
                from,
                &format!("python3 {} {kind} {addr} {port} 0.7", probe.display()),
            )
            .trim()
            .to_string()
    }
    fn ping(&self, from: &str, addr: &str) -> bool {
        self.lab
            .exec(from, &format!("ping -c1 -W1 {addr} >/dev/null 2>&1"))
            .status
            .success()
    }
    /// No spontaneous traffic in `ns` (IPv6 router solicitations and MLD reports would move
    /// the counters), so listings taken at different times are byte-comparable.
    fn quiet(&self, ns: &str) {
        self.lab.exec_ok(
            ns,
            "sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1 \
             net.ipv6.conf.eth0.disable_ipv6=1",
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    fn apply(&self, ns: &str, text: &str) {
        let f = self.lab.write("apply.nft", text);
        Nft::in_netns(ns).apply_file(&f).expect("apply");
    }
}

fn router_policy() -> Policy {
    let mut p = Policy::default();
    p.zones = vec![
        zone("lan", "lan0", &["192.0.2.0/24", "2001:db8:1::/64"]),
        zone("dmz", "dmz0", &["198.51.100.0/24", "2001:db8:2::/64"]),
    ];
    let lan = vec![Peer::Zone(ZoneId(0))];
    let dmz = vec![Peer::Zone(ZoneId(1))];
    let mut web = rule("web", Direction::Forward, Action::Accept);
    web.from = lan.clone();
    web.to = dmz.clone();
    web.services = vec![tcp(80)];
    let mut dns = rule("dns", Direction::Forward, Action::Accept);
    dns.from = lan.clone();
    dns.to = dmz.clone();
    dns.services = vec![udp(53)];
    let mut smb = rule("smb-reject", Direction::Forward, Action::Reject);
    smb.from = lan.clone();
    smb.services = vec![tcp(445)];
    let mut ping = rule("ping", Direction::Forward, Action::Accept);
    ping.from = lan.clone();
    ping.to = dmz.clone();
    ping.services = vec![icmp(proto::ICMP, 8), icmp(proto::ICMPV6, 128)];
    let mut ssh6 = rule("ssh-v6-only", Direction::Forward, Action::Accept);
    ssh6.from = lan.clone();
    ssh6.to = dmz.clone();
    ssh6.family = Family::V6;
    ssh6.services = vec![tcp(22)];
    let mut udp_reject = rule("udp-reject", Direction::Forward, Action::Reject);
    udp_reject.from = lan.clone();
    udp_reject.services = vec![udp(5353)];
    // Source-address peer only (no interface): 192.0.2.0/24 may reach 8080, v6 may not.
    let mut alt = rule("alt-web-v4-net", Direction::Forward, Action::Accept);
    alt.from = vec![Peer::Net(net("192.0.2.0/24"))];
    alt.services = vec![tcp(8080)];
    p.rules = vec![web, dns, smb, ping, ssh6, udp_reject, alt];
    p
}

#[test]
fn router_forward_rules_allow_and_deny_v4_v6() {
    skip_unless_kernel!();
    let t = topo(
        "f",
        "tcp:80 tcp:22 tcp:445 tcp:8080 tcp:9000 udp:53 udp:5353 udp:9001",
    );
    // Before: everything flows (no ruleset in the router).
    assert_eq!(t.probe(&t.cli, "tcp", "198.51.100.2", 9000), "ok");
    let text = emit(&router_policy(), &EmitOptions::default()).unwrap();
    t.apply(&t.rtr, &text);
    let c = &t.cli;
    for addr in ["198.51.100.2", "2001:db8:2::2"] {
        assert_eq!(t.probe(c, "tcp", addr, 80), "ok", "web {addr}");
        assert_eq!(t.probe(c, "udp", addr, 53), "ok", "dns {addr}");
        assert_eq!(t.probe(c, "tcp", addr, 445), "reset", "smb reject {addr}");
        assert_eq!(
            t.probe(c, "udp", addr, 5353),
            "unreach",
            "udp reject {addr}"
        );
        assert_eq!(
            t.probe(c, "tcp", addr, 9000),
            "timeout",
            "default drop tcp {addr}"
        );
        assert_eq!(
            t.probe(c, "udp", addr, 9001),
            "timeout",
            "default drop udp {addr}"
        );
        assert!(t.ping(c, addr), "ping {addr}");
    }
    // Family restrictions: v6-only ssh; v4-net-only 8080.
    assert_eq!(t.probe(c, "tcp", "2001:db8:2::2", 22), "ok");
    assert_eq!(t.probe(c, "tcp", "198.51.100.2", 22), "timeout");
    assert_eq!(t.probe(c, "tcp", "198.51.100.2", 8080), "ok");
    assert_eq!(t.probe(c, "tcp", "2001:db8:2::2", 8080), "timeout");
    // Reverse direction (dmz → lan) is not allowed by any rule: the server cannot open flows.
    assert_eq!(t.probe(&t.srv, "tcp", "192.0.2.2", 80), "timeout");
    assert!(!t.ping(&t.srv, "192.0.2.2"));
    // Counters map back to rules.
    let listing = Nft::in_netns(&t.rtr)
        .list_table("rampart", true)
        .unwrap()
        .unwrap();
    let rows = rampart_nft_apply::status::counters(&listing, None);
    let web = rows.iter().find(|r| r.name == "web").unwrap();
    assert!(web.packets >= 2, "web counted {web:?}");
    let smb = rows.iter().find(|r| r.name == "smb-reject").unwrap();
    assert!(smb.packets >= 2, "smb counted {smb:?}");
}

#[test]
fn host_ingress_and_egress() {
    skip_unless_kernel!();
    let t = topo("h", "tcp:80 tcp:81");
    // Client listens too, for the server's egress probes.
    let server = t.lab.dir.join("server.py");
    let mut t = t;
    let idx = t.lab.spawn(
        &t.cli.clone(),
        &format!("python3 {} tcp:7000 tcp:7001", server.display()),
    );
    let out = t.lab.children[idx].stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    let mut p = Policy::default();
    p.zones = vec![zone("lan", "eth0", &["192.0.2.0/24"])];
    let mut web = rule("web-in", Direction::Ingress, Action::Accept);
    web.from = vec![Peer::Zone(ZoneId(0))];
    web.services = vec![tcp(80)];
    let mut out_deny = rule("deny-7001-out", Direction::Egress, Action::Reject);
    out_deny.services = vec![tcp(7001)];
    p.rules = vec![web, out_deny];
    let text = emit(&p, &EmitOptions::default()).unwrap();
    t.apply(&t.srv, &text);
    // Ingress: zone lan is v4-only, so v6 clients are not in it.
    assert_eq!(t.probe(&t.cli, "tcp", "198.51.100.2", 80), "ok");
    assert_eq!(t.probe(&t.cli, "tcp", "2001:db8:2::2", 80), "timeout");
    assert_eq!(t.probe(&t.cli, "tcp", "198.51.100.2", 81), "timeout");
    // Egress: default accept, 7001 rejected locally (connect fails at once).
    assert_eq!(t.probe(&t.srv, "tcp", "192.0.2.2", 7000), "ok");
    assert_eq!(t.probe(&t.srv, "tcp", "192.0.2.2", 7001), "reset");
    // Loopback always allowed.
    assert_eq!(t.probe(&t.srv, "tcp", "127.0.0.1", 81), "ok");
}

fn mgmt_policy(cut: bool) -> String {
    let mut p = Policy::default();
    let mut ssh = rule("mgmt", Direction::Ingress, Action::Accept);
    ssh.services = vec![tcp(if cut { 2223 } else { 2222 })];
    p.rules = vec![ssh];
    emit(&p, &EmitOptions::default()).unwrap()
}

fn tool(lab: &Lab, ns: &str, args: &str) -> std::process::Output {
    lab.exec(ns, &format!("{TOOL} {args}"))
}

#[test]
fn confirm_window_rolls_back_byte_identical_even_after_kill_9() {
    skip_unless_kernel!();
    let mut t = topo("rb", "tcp:2222");
    let state = t.lab.dir.join("state");
    let sd = state.display().to_string();
    let good = t.lab.write("good.nft", &mgmt_policy(false));
    let bad = t.lab.write("bad.nft", &mgmt_policy(true));
    let srv = t.srv.clone();
    t.quiet(&srv);
    let o = tool(
        &t.lab,
        &srv,
        &format!("apply {} --state-dir {sd}", good.display()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Traffic so the counters are non-zero: the restored listing must carry them exactly.
    assert_eq!(t.probe(&t.cli, "tcp", "198.51.100.2", 2222), "ok");
    let before = Nft::in_netns(&srv)
        .list_table("rampart", false)
        .unwrap()
        .unwrap();

    // Apply the policy that cuts the management port, with a 2 s window, and kill -9 the
    // applier while the window is open.
    let idx = t.lab.spawn(
        &srv,
        &format!(
            "{TOOL} apply {} --state-dir {sd} --confirm-ms 2000 --hold",
            bad.display()
        ),
    );
    let out = t.lab.children[idx].stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(out).read_line(&mut line).unwrap();
    assert!(line.starts_with("applied"), "{line}");
    assert_eq!(
        t.probe(&t.cli, "tcp", "198.51.100.2", 2222),
        "timeout",
        "cut while pending"
    );
    let pid = t.lab.children[idx].id();
    must(&format!("kill -9 {pid}"));
    let _ = t.lab.children[idx].wait();
    // ip netns exec's child (the tool) may be a separate pid: make sure no applier survives.
    let _ = sh(&format!("pkill -9 -P {pid}"));

    let back = wait_until(Duration::from_secs(6), || {
        Nft::in_netns(&srv)
            .list_table("rampart", false)
            .unwrap()
            .as_deref()
            == Some(before.as_str())
    });
    let after = Nft::in_netns(&srv)
        .list_table("rampart", false)
        .unwrap()
        .unwrap();
    assert!(
        back,
        "not rolled back byte-identically:\n--- before\n{before}\n--- after\n{after}"
    );
    assert_eq!(
        t.probe(&t.cli, "tcp", "198.51.100.2", 2222),
        "ok",
        "management flow back"
    );
    assert!(!state.join("pending.json").exists());
    let history = std::fs::read_to_string(state.join("history.log")).unwrap();
    assert!(history.contains("rolled back"), "{history}");
}

#[test]
fn confirm_keeps_the_new_table_and_rollback_restores_on_demand() {
    skip_unless_kernel!();
    let t = topo("cf", "");
    let sd = t.lab.dir.join("state").display().to_string();
    let good = t.lab.write("good.nft", &mgmt_policy(false));
    let bad = t.lab.write("bad.nft", &mgmt_policy(true));
    let srv = &t.srv;
    // Starting from no table at all.
    assert!(Nft::in_netns(srv)
        .list_table("rampart", false)
        .unwrap()
        .is_none());
    let o = tool(
        &t.lab,
        srv,
        &format!(
            "apply {} --state-dir {sd} --confirm-ms 1500",
            good.display()
        ),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tool(&t.lab, srv, &format!("confirm --state-dir {sd}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(Duration::from_millis(2200));
    let live = Nft::in_netns(srv)
        .list_table("rampart", false)
        .unwrap()
        .unwrap();
    assert!(
        live.contains("tcp dport 2222"),
        "confirmed table kept:\n{live}"
    );
    // A second confirm has nothing to confirm.
    assert!(!tool(&t.lab, srv, &format!("confirm --state-dir {sd}"))
        .status
        .success());
    // Apply without confirm, then roll back by hand: the 2222 table returns; again: 2223.
    let o = tool(
        &t.lab,
        srv,
        &format!("apply {} --state-dir {sd}", bad.display()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = tool(&t.lab, srv, &format!("rollback --state-dir {sd}"));
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let live2 = Nft::in_netns(srv)
        .list_table("rampart", false)
        .unwrap()
        .unwrap();
    assert!(live2.contains("tcp dport 2222"), "{live2}");
    let o = tool(&t.lab, srv, &format!("rollback --state-dir {sd}"));
    assert!(o.status.success());
    let live3 = Nft::in_netns(srv)
        .list_table("rampart", false)
        .unwrap()
        .unwrap();
    assert!(live3.contains("tcp dport 2223"), "{live3}");
}

#[test]
fn confirm_window_from_absent_table_deletes_it_again() {
    skip_unless_kernel!();
    let t = topo("ab", "");
    let sd = t.lab.dir.join("state").display().to_string();
    let f = t.lab.write("p.nft", &mgmt_policy(false));
    let o = tool(
        &t.lab,
        &t.srv,
        &format!("apply {} --state-dir {sd} --confirm-ms 500", f.display()),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(Nft::in_netns(&t.srv)
        .list_table("rampart", false)
        .unwrap()
        .is_some());
    let gone = wait_until(Duration::from_secs(4), || {
        Nft::in_netns(&t.srv)
            .list_table("rampart", false)
            .unwrap()
            .is_none()
    });
    assert!(gone, "table still present after the window");
}

#[test]
fn failed_apply_leaves_the_old_table_and_foreign_tables_untouched() {
    skip_unless_kernel!();
    let t = topo("fa", "");
    let srv = &t.srv;
    t.quiet(srv);
    t.lab.exec_ok(
        srv,
        "nft add table inet docker_like && nft add chain inet docker_like c",
    );
    t.apply(srv, &mgmt_policy(false));
    let before = Nft::in_netns(srv)
        .list_table("rampart", false)
        .unwrap()
        .unwrap();
    let state = StateDir::new(t.lab.dir.join("state"));
    // Valid syntax, but the kernel refuses it (a jump to a missing chain): nothing changes.
    let broken = format!(
        "{}\nadd rule inet rampart input jump nowhere\n",
        mgmt_policy(true)
    );
    let req = txn::ApplyRequest {
        text: broken,
        table: "rampart".into(),
        map: Default::default(),
        confirm: None,
        watcher: None,
        queue: Vec::new(),
        sysctls: Vec::new(),
    };
    assert!(txn::apply(&Nft::in_netns(srv), &state, &req).is_err());
    let after = Nft::in_netns(srv)
        .list_table("rampart", false)
        .unwrap()
        .unwrap();
    assert_eq!(before, after);
    // Applying replaced only Rampart's table.
    let ruleset = t.lab.exec_ok(srv, "nft list tables");
    assert!(ruleset.contains("table inet docker_like"), "{ruleset}");
}

#[test]
fn plan_shows_changes_and_nothing_when_equal() {
    skip_unless_kernel!();
    let t = topo("pl", "");
    let mut p = router_policy();
    p.sets = vec![AddressSet {
        name: "bad".into(),
        elements: vec![
            net("203.0.113.0/24"),
            net("198.51.100.77/32"),
            net("2001:db8:bad::/48"),
        ],
        source: SetSource::Inline,
        except: vec![],
        loc: SourceLoc::default(),
    }];
    let mut block = rule("block-bad", Direction::Ingress, Action::Drop);
    block.from = vec![Peer::Set(SetId(0))];
    p.rules.push(block);
    let opts = EmitOptions::default();
    let text = emit(&p, &opts).unwrap();
    let nft = Nft::in_netns(&t.rtr);
    let state = StateDir::new(t.lab.dir.join("state"));
    let elems = static_set_elements(&p, &opts).unwrap();
    let fresh = txn::plan(&nft, &state, "rampart", &text, &elems).unwrap();
    assert_eq!(fresh[0], rampart_nft::plan::Change::CreateTable);
    t.apply(&t.rtr, &text);
    let same = txn::plan(&nft, &state, "rampart", &text, &elems).unwrap();
    assert!(same.is_empty(), "expected no changes, got {same:#?}");
    // Change one element and one rule.
    p.sets[0].elements[0] = net("203.0.113.0/25");
    p.rules[0].services = vec![tcp(8081)];
    let text2 = emit(&p, &opts).unwrap();
    let elems2 = static_set_elements(&p, &opts).unwrap();
    let d: Vec<String> = txn::plan(&nft, &state, "rampart", &text2, &elems2)
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        d.iter()
            .any(|c| c.starts_with("+ set set_bad_v4: 1 element(s) 203.0.113.0/25")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|c| c.starts_with("- set set_bad_v4: 1 element(s) 203.0.113.0/24")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|c| c.starts_with("+ chain forward:") && c.contains("8081")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|c| c.starts_with("- chain forward:") && c.contains("dport 80 ")),
        "{d:#?}"
    );
}

#[test]
fn nflog_reader_attributes_logged_drops() {
    skip_unless_kernel!();
    let mut t = topo("lg", "udp:5355");
    let mut p = router_policy();
    let mut llmnr = rule("llmnr-block", Direction::Forward, Action::Drop);
    llmnr.services = vec![udp(5355)];
    llmnr.log = true;
    p.rules.insert(0, llmnr);
    t.apply(&t.rtr, &emit(&p, &EmitOptions::default()).unwrap());
    let rtr = t.rtr.clone();
    let idx = t.lab.spawn(&rtr, &format!("{TOOL} log 1037 2 8000"));
    let out = t.lab.children[idx].stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    assert_eq!(t.probe(&t.cli, "udp", "198.51.100.2", 5355), "timeout");
    assert_eq!(t.probe(&t.cli, "udp", "2001:db8:2::2", 5355), "timeout");
    let mut lines = Vec::new();
    for _ in 0..2 {
        let mut l = String::new();
        if reader.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        lines.push(l.trim().to_string());
    }
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with("rampart:0: 192.0.2.2 198.51.100.2 17 5355 sport "),
        "{lines:?}"
    );
    assert!(
        lines[1].starts_with("rampart:0: 2001:db8:1::2 2001:db8:2::2 17 5355 sport "),
        "{lines:?}"
    );
}

/// What a `conn_limit` counts, kernel against engine: the router's kernel counts, per rule, the
/// connections that went through that rule's `add @connlimit_N` statement and are not closed.
/// Two held connections through another rule and one closed connection (TIME_WAIT) through
/// the capped rule leave a cap of 2 with room for two more. The router's traffic is captured
/// and replayed through the engine, which must predict the kernel's verdict for each
/// connection.
#[test]
fn conn_limit_counts_what_the_kernel_counts_and_the_engine_agrees() {
    skip_unless_kernel!();
    if sh("command -v tcpdump").stdout.is_empty() {
        eprintln!("skipping: tcpdump not installed");
        return;
    }
    let mut t = topo("cl", "tcp:7100 tcp:7150 tcp:7201");
    let lan = vec![Peer::Zone(ZoneId(0))];
    let mut p = router_policy();
    let mut other = rule("other", Direction::Forward, Action::Accept);
    other.from = lan.clone();
    other.services = vec![tcp(7150)];
    // 7100 holds its connections open; 7201 closes each at once (SERVER_PY).
    let mut cap = rule("cap", Direction::Forward, Action::Accept);
    cap.from = lan;
    cap.services = vec![tcp(7100), tcp(7201)];
    cap.conn_limit = Some(2);
    p.rules.extend([other, cap]);
    t.apply(&t.rtr, &emit(&p, &EmitOptions::default()).unwrap());
    // Resolve every neighbour first: a first SYN waiting for neighbour discovery could miss
    // the client's 0.7 s connect timeout.
    for server in ["198.51.100.2", "2001:db8:2::2"] {
        assert!(
            wait_until(Duration::from_secs(3), || t.ping(&t.cli, server)),
            "{server} unreachable"
        );
    }

    let pcap = t.lab.dir.join("lan0.pcap");
    let rtr = t.rtr.clone();
    let dump = t.lab.spawn(
        &rtr,
        &format!("tcpdump -i lan0 -U -s 256 -w {} tcp", pcap.display()),
    );
    assert!(
        wait_until(Duration::from_secs(5), || std::fs::metadata(&pcap)
            .is_ok_and(|m| m.len() > 0)),
        "tcpdump did not start"
    );
    let hold = t.lab.write("hold.py", HOLD_PY);
    let cli = t.cli.clone();
    let mut kernel = Vec::new();
    for server in ["198.51.100.2", "2001:db8:2::2"] {
        let held = |t: &mut Topo, port: u16, n: usize| -> Vec<String> {
            let idx = t.lab.spawn(
                &cli,
                &format!("python3 {} {server} {port} {n}", hold.display()),
            );
            let mut reader = BufReader::new(t.lab.children[idx].stdout.take().unwrap());
            (0..n)
                .map(|_| {
                    let mut l = String::new();
                    reader.read_line(&mut l).unwrap();
                    l.trim().to_string()
                })
                .collect()
        };
        let through_other = held(&mut t, 7150, 2);
        let closed = t.probe(&t.cli, "tcp", server, 7201);
        // Let the close handshake finish (the connection reaches TIME_WAIT).
        std::thread::sleep(Duration::from_millis(300));
        let capped = held(&mut t, 7100, 3);
        kernel.push((server, through_other, closed, capped));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = t.lab.children[dump].id();
    sh(&format!("kill -TERM {pid}"));
    let _ = t.lab.children[dump].wait();
    for (server, through_other, closed, capped) in &kernel {
        assert_eq!(through_other, &["ok", "ok"], "{server}: other rule");
        assert_eq!(closed, "ok", "{server}: closed connection");
        assert_eq!(
            capped,
            &["ok", "ok", "timeout"],
            "{server}: the cap counts neither the other rule's connections nor the closed one"
        );
    }

    // The engine's replay of the router's capture: each connection's verdict, per server
    // port in the order the connections began, must be the kernel's.
    let cfg = rampart_engine::simulate::SimConfig {
        local: [
            "192.0.2.1/32",
            "198.51.100.1/32",
            "2001:db8:1::1/128",
            "2001:db8:2::1/128",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect(),
        iface_by_net: [
            ("192.0.2.0/24", "lan0"),
            ("2001:db8:1::/64", "lan0"),
            ("198.51.100.0/24", "dmz0"),
            ("2001:db8:2::/64", "dmz0"),
        ]
        .iter()
        .map(|(n, i)| (n.parse().unwrap(), i.to_string()))
        .collect(),
        ..Default::default()
    };
    let mut sim = rampart_engine::simulate::Simulator::new(rampart_engine::Engine::new(&p), cfg);
    let mut sink = rampart_events::VecSink::default();
    let bytes = std::fs::read(&pcap).unwrap();
    let mut reader = rampart_engine::pcap::CaptureReader::new(&bytes[..]).unwrap();
    while let Some(rec) = reader.next_record().unwrap() {
        sim.process(&rec, &mut sink).unwrap();
    }
    for (server, through_other, closed, capped) in &kernel {
        let server: std::net::IpAddr = server.parse().unwrap();
        let engine = |port: u16| -> Vec<&str> {
            sink.events
                .iter()
                .filter(|e| e.event_type == "flow")
                .filter_map(|e| e.flow.as_ref().map(|f| (f, e)))
                .filter(|(f, _)| f.dest_ip == server && f.dest_port == Some(port))
                .map(|(_, e)| match e.verdict {
                    rampart_events::Verdict::Allow => "ok",
                    _ => "timeout",
                })
                .collect()
        };
        assert_eq!(engine(7150), *through_other, "{server}: other rule");
        assert_eq!(engine(7201), vec![closed.as_str()], "{server}: closed");
        assert_eq!(engine(7100), *capped, "{server}: capped, engine vs kernel");
    }
}

#[test]
fn limits_conn_caps_and_meters_in_the_kernel() {
    skip_unless_kernel!();
    let mut t = topo("lim", "tcp:7100 udp:9000 udp:9001");
    let lan = vec![Peer::Zone(ZoneId(0))];
    let mut p = router_policy();
    // At most 2 concurrent connections per source to 7100.
    let mut conns = rule("conn-cap", Direction::Forward, Action::Accept);
    conns.from = lan.clone();
    conns.services = vec![tcp(7100)];
    conns.conn_limit = Some(2);
    // 3 packets per source per minute to udp 9000.
    let mut meter = rule("udp-meter", Direction::Forward, Action::Accept);
    meter.from = lan.clone();
    meter.services = vec![udp(9000)];
    meter.limit = Some(Limit {
        rate: 3,
        per_s: 60,
        burst: 0,
        unit: RateUnit::Packets,
        per_source: true,
    });
    // 4 packets per minute to udp 9001 shared by IPv4 and IPv6 (two nft alternatives).
    let mut shared = rule("udp-shared", Direction::Forward, Action::Accept);
    shared.from = lan;
    shared.services = vec![udp(9001)];
    shared.limit = Some(Limit {
        rate: 4,
        per_s: 60,
        burst: 0,
        unit: RateUnit::Packets,
        per_source: false,
    });
    p.rules.extend([conns, meter, shared]);
    t.apply(&t.rtr, &emit(&p, &EmitOptions::default()).unwrap());
    t.lab.exec_ok(&t.cli, "ip addr add 192.0.2.3/24 dev eth0");

    // Connection cap: two held connections pass, the third is dropped (default drop).
    let hold = t.lab.write("hold.py", HOLD_PY);
    let cli = t.cli.clone();
    let idx = t.lab.spawn(
        &cli,
        &format!("python3 {} 198.51.100.2 7100 3", hold.display()),
    );
    let out = t.lab.children[idx].stdout.take().unwrap();
    let mut reader = BufReader::new(out);
    let mut got = Vec::new();
    for _ in 0..3 {
        let mut l = String::new();
        reader.read_line(&mut l).unwrap();
        got.push(l.trim().to_string());
    }
    assert_eq!(got, vec!["ok", "ok", "timeout"], "conn cap");
    // Another source is not affected by the first one's connections.
    let other = t.lab.exec_ok(
        &t.cli,
        "python3 -c \"import socket; s=socket.create_connection(('198.51.100.2',7100),0.7,('192.0.2.3',0)); print(s.recv(2).decode())\"",
    );
    assert_eq!(other.trim(), "hi");

    // Per-source meter: 3 pass from 192.0.2.2, the 4th does not; 192.0.2.3 has its own bucket.
    let send = |src: &str, dst: &str, port: u16| -> String {
        t.lab
            .exec_ok(
                &t.cli,
                &format!(
                    "python3 -c \"import socket,sys; f=socket.AF_INET6 if ':' in '{dst}' else socket.AF_INET; s=socket.socket(f,socket.SOCK_DGRAM); s.bind(('{src}',0)); s.settimeout(0.5); s.sendto(b'x',('{dst}',{port}));\ntry:\n  s.recv(4); print('ok')\nexcept Exception: print('timeout')\""
                ),
            )
            .trim()
            .to_string()
    };
    let a: Vec<String> = (0..4)
        .map(|_| send("192.0.2.2", "198.51.100.2", 9000))
        .collect();
    assert_eq!(a, vec!["ok", "ok", "ok", "timeout"], "per-source meter");
    assert_eq!(
        send("192.0.2.3", "198.51.100.2", 9000),
        "ok",
        "other source, own bucket"
    );
    // Shared limit: 4 in total across IPv4 and IPv6, then nothing.
    let b: Vec<String> = [
        ("192.0.2.2", "198.51.100.2"),
        ("2001:db8:1::2", "2001:db8:2::2"),
        ("192.0.2.3", "198.51.100.2"),
        ("2001:db8:1::2", "2001:db8:2::2"),
        ("192.0.2.2", "198.51.100.2"),
        ("2001:db8:1::2", "2001:db8:2::2"),
    ]
    .iter()
    .map(|(s, d)| send(s, d, 9001))
    .collect();
    assert_eq!(
        b,
        vec!["ok", "ok", "ok", "ok", "timeout", "timeout"],
        "shared limit"
    );
}
