//! `rampart classify` end to end over a real NFQUEUE, in two network namespaces this test
//! creates (and always removes): `cli` (198.51.100.1) and `srv` (198.51.100.2) joined by a veth
//! pair. In `srv` the test installs what the emitted ruleset and nft-apply install per
//! `rampart_nft::app_queue`: an nft table that marks packets of the application rules'
//! connections for inspection (both directions) and drops connections whose conntrack mark says
//! "blocked", plus one `iptables-nft ... -m mark --mark M -j NFQUEUE` rule per hook (this kernel
//! has no nft `queue`).
//!
//! With the real binary bound to the queue, real sockets show: an SSH banner on 8080 is dropped
//! while HTTP on 8080 passes; HTTP on 443 is dropped while a TLS ClientHello passes; a non-DNS
//! payload on udp/53 is dropped while a DNS query is answered; an SMB1 non-negotiate command is
//! dropped while an SMB2 NEGOTIATE passes; a tunnel-size ICMP echo is dropped while a normal ping
//! passes. Each block is one event naming the rule, label and technique, the kernel drops the
//! rest of the connection by its conntrack mark, SIGHUP reloads (a broken policy is refused and
//! the old one kept), and with no classifier running the queue fails closed or open as the
//! policy says. With a policy's `classifier_queues = 2` (queue rules balanced over two queues,
//! the classifier binding both), connections to 16 server addresses land on both queues and
//! everything above holds with one shared table.
//!
//! Needs root, `ip`, `nft`, `iptables-nft`, `ip6tables-nft` and `ping` (iputils-ping); skips with a printed
//! reason otherwise.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rampart_nft::app_queue::{
    ACCEPTED_CT_MARK, BLOCKED_CT_MARK, INSPECT_MARK, MARK_MASK, QUEUE_NUM, REJECT_MARK,
    REJECT_PRIORITY,
};
use support::{in_ns, ns_sh, ns_sh_stdin, sh};

const CLI_IP: &str = "198.51.100.1";
const SRV_IP: &str = "198.51.100.2";
const CLI_IP6: &str = "2001:db8:4210::1";
const SRV_IP6: &str = "2001:db8:4210::2";

/// The two namespaces; deleted on drop (also when an assertion fails).
struct Topology {
    prefix: String,
}

impl Topology {
    fn ns(&self, short: &str) -> String {
        format!("{}{short}", self.prefix)
    }

    fn build(tag: &str) -> Self {
        let topo = Topology {
            prefix: format!("rnfq{tag}{}", std::process::id()),
        };
        for n in ["cli", "srv"] {
            sh("ip", &["netns", "add", &topo.ns(n)]);
            ns_sh(&topo.ns(n), &["ip", "link", "set", "lo", "up"]);
        }
        sh(
            "ip",
            &[
                "link",
                "add",
                "eth0",
                "netns",
                &topo.ns("cli"),
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                &topo.ns("srv"),
            ],
        );
        for (n, ip, ip6) in [("cli", CLI_IP, CLI_IP6), ("srv", SRV_IP, SRV_IP6)] {
            ns_sh(
                &topo.ns(n),
                &["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"],
            );
            let ip6 = format!("{ip6}/64");
            ns_sh(
                &topo.ns(n),
                &["ip", "-6", "addr", "add", &ip6, "dev", "eth0", "nodad"],
            );
            ns_sh(&topo.ns(n), &["ip", "link", "set", "eth0", "up"]);
        }
        topo
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for n in ["cli", "srv"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(n)])
                .status();
        }
    }
}

/// What the ruleset and nft-apply put in the kernel for application rules on ports 8080, 443,
/// 445 (TCP), 53 (UDP) and ICMP echo, ingress: mark for inspection in both directions, drop
/// connections the classifier blocked, skip those it released, reject (after the queue) the
/// packets the classifier rejected. Replies are queued only when they carry payload, as the
/// emitted ruleset does (else the reset a reject sends would be queued and dropped).
fn install_marking(ns: &str) {
    let keep = !MARK_MASK;
    let ruleset = format!(
        "table inet rampart_app_test {{
  chain in {{
    type filter hook input priority -10; policy accept;
    ct mark & {MARK_MASK:#010x} == {BLOCKED_CT_MARK:#010x} counter drop
    ct mark & {MARK_MASK:#010x} == {ACCEPTED_CT_MARK:#010x} counter return
    tcp dport {{ 8080, 443, 445 }} meta mark set meta mark & {keep:#010x} | {INSPECT_MARK:#010x}
    udp dport 53 meta mark set meta mark & {keep:#010x} | {INSPECT_MARK:#010x}
    icmp type echo-request meta mark set meta mark & {keep:#010x} | {INSPECT_MARK:#010x}
  }}
  chain out {{
    type filter hook output priority -10; policy accept;
    ct mark & {MARK_MASK:#010x} == {BLOCKED_CT_MARK:#010x} counter drop
    ct mark & {MARK_MASK:#010x} == {ACCEPTED_CT_MARK:#010x} counter return
    ct direction reply meta l4proto tcp ct original proto-dst {{ 8080, 443, 445 }} @ih,0,8 >= 0 meta mark set meta mark & {keep:#010x} | {INSPECT_MARK:#010x}
    ct direction reply meta l4proto udp ct original proto-dst 53 meta mark set meta mark & {keep:#010x} | {INSPECT_MARK:#010x}
  }}
  chain rej_in {{
    type filter hook input priority {REJECT_PRIORITY}; policy accept;
    meta mark & {MARK_MASK:#010x} == {REJECT_MARK:#010x} meta l4proto tcp reject with tcp reset
    meta mark & {MARK_MASK:#010x} == {REJECT_MARK:#010x} reject with icmpx admin-prohibited
  }}
  chain rej_out {{
    type filter hook output priority {REJECT_PRIORITY}; policy accept;
    meta mark & {MARK_MASK:#010x} == {REJECT_MARK:#010x} meta l4proto tcp reject with tcp reset
    meta mark & {MARK_MASK:#010x} == {REJECT_MARK:#010x} reject with icmpx admin-prohibited
  }}
}}
"
    );
    ns_sh_stdin(ns, &["nft", "-f", "-"], &ruleset);
}

/// The one iptables-nft NFQUEUE rule per hook; `--queue-bypass` when the policy fails open.
fn install_queue_rules(ns: &str, fail_open: bool) {
    for chain in ["INPUT", "OUTPUT"] {
        let _ = Command::new("ip")
            .args(["netns", "exec", ns, "iptables-nft", "-F", chain])
            .status();
        let mark = format!("{INSPECT_MARK:#x}/{MARK_MASK:#x}");
        let queue = QUEUE_NUM.to_string();
        let mut args = vec![
            "iptables-nft",
            "-A",
            chain,
            "-m",
            "mark",
            "--mark",
            &mark,
            "-j",
            "NFQUEUE",
            "--queue-num",
            &queue,
        ];
        if fail_open {
            args.push("--queue-bypass");
        }
        ns_sh(ns, &args);
    }
}

/// Packets the kernel dropped because the classifier marked their connection blocked.
fn blocked_drops(ns: &str) -> u64 {
    let text = ns_sh(ns, &["nft", "list", "ruleset"]);
    text.lines()
        .filter(|l| l.contains(&format!("{BLOCKED_CT_MARK:#010x} counter packets")))
        .filter_map(|l| {
            let after = l.split("counter packets ").nth(1)?;
            after.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// TCP and UDP servers in `srv`, stopped on drop.
struct Servers {
    stop: Arc<AtomicBool>,
}

impl Drop for Servers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(120));
    }
}

/// What a TCP server answers: given the client's first bytes (`None`: the client said nothing
/// for 300 ms), what to send.
type Answer = fn(Option<&[u8]>) -> Vec<u8>;

fn answer_8080(first: Option<&[u8]>) -> Vec<u8> {
    match first {
        // An SSH server speaks first.
        None => b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n".to_vec(),
        Some(_) => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
    }
}

fn answer_443(first: Option<&[u8]>) -> Vec<u8> {
    // A TLS alert record (handshake_failure): TLS in the reply direction too.
    first
        .map(|_| vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28])
        .unwrap_or_default()
}

fn answer_445(first: Option<&[u8]>) -> Vec<u8> {
    first.map(|_| smb2_negotiate(true)).unwrap_or_default()
}

fn start_servers(ns: &str) -> Servers {
    let stop = Arc::new(AtomicBool::new(false));
    for (port, answer) in [
        (8080u16, answer_8080 as Answer),
        (443, answer_443),
        (445, answer_445),
    ] {
        let stop = Arc::clone(&stop);
        // Why "::": dual-stack (bindv6only is 0 in a new namespace), IPv4 arrives v4-mapped.
        let listener = in_ns(ns, move || TcpListener::bind(("::", port)).unwrap());
        listener.set_nonblocking(true).unwrap();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut conn, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                };
                std::thread::spawn(move || {
                    conn.set_nonblocking(false).unwrap();
                    conn.set_read_timeout(Some(Duration::from_millis(300)))
                        .unwrap();
                    let mut buf = [0u8; 4096];
                    let first = match conn.read(&mut buf) {
                        Ok(n) if n > 0 => Some(buf[..n].to_vec()),
                        _ => None,
                    };
                    let _ = conn.write_all(&answer(first.as_deref()));
                    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
                    let _ = conn.read(&mut buf);
                });
            }
        });
    }
    let udp = in_ns(ns, || UdpSocket::bind("0.0.0.0:53").unwrap());
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let udp_stop = Arc::clone(&stop);
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while !udp_stop.load(Ordering::Relaxed) {
            let Ok((n, from)) = udp.recv_from(&mut buf) else {
                continue;
            };
            // Echo with the QR bit set: a DNS answer for a DNS query.
            let mut answer = buf[..n].to_vec();
            if answer.len() > 2 {
                answer[2] |= 0x80;
            }
            let _ = udp.send_to(&answer, from);
        }
    });
    Servers { stop }
}

/// Connect from `cli`, send `send` (if any), and return what came back within 1.5 s.
fn tcp_exchange(ns: &str, port: u16, send: &'static [u8]) -> Result<Vec<u8>, String> {
    tcp_exchange_to(ns, SRV_IP, port, send)
}

fn tcp_exchange_to(
    ns: &str,
    host: &'static str,
    port: u16,
    send: &'static [u8],
) -> Result<Vec<u8>, String> {
    in_ns(ns, move || {
        let addr = SocketAddr::new(host.parse().unwrap(), port);
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(1500))
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        if !send.is_empty() {
            s.write_all(send).map_err(|e| format!("send: {e}"))?;
        }
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        let _ = s.shutdown(Shutdown::Both);
        buf.truncate(n);
        Ok(buf)
    })
}

fn udp_exchange(ns: &str, port: u16, send: Vec<u8>) -> Result<Vec<u8>, String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s.send_to(&send, (SRV_IP, port))
            .map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
        Ok(buf[..n].to_vec())
    })
}

fn ping(ns: &str, size: usize) -> bool {
    Command::new("ip")
        .args([
            "netns",
            "exec",
            ns,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "-s",
            &size.to_string(),
            SRV_IP,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

fn dns_query(name: &str) -> Vec<u8> {
    let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// A TLS 1.2 ClientHello record for `www.example.com` (one cipher suite, SNI extension).
fn client_hello() -> &'static [u8] {
    static HELLO: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    HELLO.get_or_init(|| {
        let host = b"www.example.com";
        let mut sni = Vec::new();
        sni.extend_from_slice(&((host.len() + 3) as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(host.len() as u16).to_be_bytes());
        sni.extend_from_slice(host);
        let mut ext = vec![0, 0];
        ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        ext.extend_from_slice(&sni);
        let mut body = vec![0x03, 0x03];
        body.extend_from_slice(&[0x5a; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0xc0, 0x2f, 1, 0]);
        body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
        body.extend_from_slice(&ext);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend_from_slice(&body);
        let mut rec = vec![0x16, 0x03, 0x01];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend_from_slice(&hs);
        rec
    })
}

/// NetBIOS session header + SMB2 header (StructureSize 64) + a NEGOTIATE body.
fn smb2_negotiate(response: bool) -> Vec<u8> {
    let mut smb = vec![0xfe, b'S', b'M', b'B', 64, 0];
    smb.resize(64, 0);
    smb[16] = if response { 1 } else { 0 }; // flags: server-to-redirector
    smb.extend_from_slice(&[36, 0, 1, 0]); // StructureSize 36, one dialect
    smb.resize(64 + 36, 0);
    smb.extend_from_slice(&[0x02, 0x02]); // SMB 2.0.2
    let mut msg = vec![0, 0];
    msg.extend_from_slice(&(smb.len() as u16).to_be_bytes());
    msg.extend_from_slice(&smb);
    msg
}

/// NetBIOS session header + an SMB1 SESSION_SETUP_ANDX request (command 0x73).
fn smb1_session_setup() -> &'static [u8] {
    static MSG: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    MSG.get_or_init(|| {
        let mut smb = vec![0xff, b'S', b'M', b'B', 0x73, 0, 0, 0, 0, 0x18];
        smb.resize(32, 0);
        smb.extend_from_slice(&[0; 27]);
        let mut msg = vec![0, 0];
        msg.extend_from_slice(&(smb.len() as u16).to_be_bytes());
        msg.extend_from_slice(&smb);
        msg
    })
}

/// The classifier process.
struct Classify {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl Classify {
    fn start(
        ns: &str,
        policy: &Path,
        events: &Path,
        stderr: &Path,
        extra: &[&Path],
    ) -> (Classify, serde_json::Value) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(env!("CARGO_BIN_EXE_rampart"))
            .args(["classify", "--policy"])
            .arg(policy)
            .arg("--events")
            .arg(events)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr).unwrap())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let bound: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "{line}{}",
                std::fs::read_to_string(stderr).unwrap_or_default()
            )
        });
        assert_eq!(bound["event"], "bound", "{line}");
        (Classify { child, stdout }, bound)
    }

    fn signal(&self, sig: i32) {
        // `ip netns exec` execs the binary, so the child pid is the classifier's.
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// SIGTERM, then the `stopped` line.
    fn stop(mut self) -> serde_json::Value {
        self.signal(libc::SIGTERM);
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "classify exit {status}");
        serde_json::from_str(&line).expect(&line)
    }
}

impl Drop for Classify {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Write `text` as the policy, SIGHUP, and wait until stderr says `marker`.
fn reload(classify: &Classify, policy: &Path, text: &str, stderr: &Path, marker: &str) {
    std::fs::write(policy, text).unwrap();
    classify.signal(libc::SIGHUP);
    wait_for(marker, 3000, || {
        std::fs::read_to_string(stderr)
            .unwrap_or_default()
            .contains(marker)
    });
}

fn events(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect(l))
        .collect()
}

fn wait_for(what: &str, ms: u64, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_millis(ms);
    while !ok() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

const POLICY: &str = r#"
[defaults]
ingress = "accept"
classifier_fail_open = false

[components]
protocol_classifier = true

[[rules]]
name = "no-ssh-on-8080"
direction = "ingress"
service = "tcp/8080"
app = ["ssh"]
action = "drop"
mitigates = ["T1572"]

[[rules]]
name = "tls-only-on-443"
direction = "ingress"
service = "tcp/443"
app_not = ["tls"]
action = "reject"
mitigates = ["T1572"]

[[rules]]
name = "dns-only-on-53"
direction = "ingress"
service = "udp/53"
app_not = ["dns"]
action = "drop"
mitigates = ["T1572"]

[[rules]]
name = "no-smb1"
direction = "ingress"
service = "tcp/445"
app = ["smb1"]
action = "drop"
mitigates = ["T1021.002"]

[[rules]]
name = "no-icmp-tunnels"
direction = "ingress"
service = "icmp"
app = ["icmp_tunnel"]
action = "drop"
mitigates = ["T1095"]
"#;

fn skip_reason() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
        return Some("needs root".into());
    }
    for tool in ["ip", "nft", "iptables-nft", "ip6tables-nft", "ping"] {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).exists()))
            .unwrap_or(false)
            || ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
                .iter()
                .any(|d| Path::new(d).join(tool).exists());
        if !found {
            return Some(format!("needs {tool}"));
        }
    }
    None
}

fn workdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rampart-classify-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A work directory and the two namespaces with the marking table in `srv`; `None` (with the
/// reason printed) when the test cannot run here.
fn marked_topology(tag: &str, short: &str) -> Option<(PathBuf, Topology)> {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return None;
    }
    let dir = workdir(tag);
    let topo = Topology::build(short);
    install_marking(&topo.ns("srv"));
    Some((dir, topo))
}

/// The five protocol-not-port cases against a running classifier in `srv`, and their events.
fn protocol_cases(cli: &str, srv: &str, events_path: &Path) {
    // Port 8080: HTTP passes, an SSH banner (server speaks first) does not.
    let http = tcp_exchange(cli, 8080, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        http.as_ref().is_ok_and(|b| b.starts_with(b"HTTP/1.1 200")),
        "{http:?}"
    );
    let ssh = tcp_exchange(cli, 8080, b"");
    assert!(ssh.is_err(), "SSH banner on 8080 got through: {ssh:?}");

    // Port 443: a ClientHello passes (and the TLS answer comes back), HTTP does not.
    let tls = tcp_exchange(cli, 443, client_hello());
    assert_eq!(tls, Ok(vec![0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28]));
    // The rule rejects: the client gets a TCP reset at once (a drop would time out).
    let http443 = tcp_exchange(cli, 443, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        http443.as_ref().is_err_and(|e| e.contains("reset")),
        "HTTP on 443 was not reset: {http443:?}"
    );

    // udp/53: a DNS query is answered; a tunnel's raw payload is not.
    let query = dns_query("www.example.com");
    let answer = udp_exchange(cli, 53, query.clone());
    assert!(
        answer
            .as_ref()
            .is_ok_and(|a| a.len() == query.len() && a[2] & 0x80 != 0),
        "{answer:?}"
    );
    let junk = udp_exchange(
        cli,
        53,
        b"\x00\x00tunnelled-bytes-not-a-dns-message".to_vec(),
    );
    assert!(junk.is_err(), "non-DNS on udp/53 got through: {junk:?}");

    // tcp/445: SMB2 NEGOTIATE passes; an SMB1 non-negotiate command does not.
    static SMB2_REQ: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let smb2 = tcp_exchange(cli, 445, SMB2_REQ.get_or_init(|| smb2_negotiate(false)));
    assert!(
        smb2.as_ref().is_ok_and(|b| b.get(4..8) == Some(b"\xfeSMB")),
        "{smb2:?}"
    );
    let smb1 = tcp_exchange(cli, 445, smb1_session_setup());
    assert!(smb1.is_err(), "SMB1 got through: {smb1:?}");

    // ICMP: a normal ping passes, a tunnel-size echo does not.
    assert!(ping(cli, 56), "normal ping failed");
    assert!(!ping(cli, 600), "600-byte echo got through");

    // One event per blocked connection, naming rule, label and technique.
    wait_for("5 block events", 3000, || events(events_path).len() >= 5);
    let evs = events(events_path);
    let mut got: Vec<(String, String)> = evs
        .iter()
        .map(|e| {
            assert_eq!(e["component"], "nfq");
            assert_eq!(e["verdict"], "block");
            assert_eq!(e["src_ip"], CLI_IP, "{e}");
            assert!(
                e["techniques"].as_array().is_some_and(|t| !t.is_empty()),
                "{e}"
            );
            (
                e["rule"]["name"].as_str().unwrap().to_string(),
                e["detail"]["label"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let want = [
        ("dns-only-on-53", "unrecognised"),
        ("no-icmp-tunnels", "icmp_tunnel"),
        ("no-smb1", "smb1"),
        ("no-ssh-on-8080", "ssh"),
        ("tls-only-on-443", "http"),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want, "{evs:#?}");
    // The kernel dropped later packets of blocked TCP connections by their conntrack mark
    // (the client's retransmissions), without asking the classifier again.
    assert!(
        blocked_drops(srv) > 0,
        "no packet hit the blocked-connection drop"
    );
}

#[test]
fn classifier_filters_protocols_not_ports_over_a_real_nfqueue() {
    let Some((dir, topo)) = marked_topology("hand", "h") else {
        return;
    };
    let (cli, srv) = (topo.ns("cli"), topo.ns("srv"));
    install_queue_rules(&srv, false);
    let _servers = start_servers(&srv);
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let events_path = dir.join("events.jsonl");
    let stderr_path = dir.join("stderr.txt");
    let metrics_path = dir.join("metrics.prom");
    let (classify, bound) = Classify::start(
        &srv,
        &policy,
        &events_path,
        &stderr_path,
        &[Path::new("--metrics"), &metrics_path],
    );
    assert_eq!(bound["queue"], QUEUE_NUM);
    assert_eq!(bound["app_rules"], 5);
    assert_eq!(bound["fail_open"], false);
    assert_eq!(bound["conntrack"], true);

    protocol_cases(&cli, &srv, &events_path);
    // SIGUSR1: Prometheus counters on request.
    classify.signal(libc::SIGUSR1);
    wait_for("the metrics file", 3000, || {
        std::fs::read_to_string(&metrics_path).is_ok_and(|m| {
            m.contains("rampart_nfq_rule_decisions_total{rule=\"no-ssh-on-8080\"} 1\n")
                && m.contains("rampart_nfq_packets_total{verdict=\"drop\"}")
        })
    });
    // SIGHUP with a broken policy: refused, the old policy keeps blocking.
    reload(
        &classify,
        &policy,
        "[[rules]]\nname = 1\n",
        &stderr_path,
        "reload refused",
    );
    assert!(
        tcp_exchange(&cli, 8080, b"").is_err(),
        "SSH on 8080 passed after a refused reload"
    );
    // SIGHUP with a policy that allows SSH on 8080: the banner now comes through.
    let allow_ssh = POLICY.replace("app = [\"ssh\"]", "app = [\"rdp\"]");
    reload(&classify, &policy, &allow_ssh, &stderr_path, "reloaded");
    let ssh = tcp_exchange(&cli, 8080, b"");
    assert!(
        ssh.as_ref().is_ok_and(|b| b.starts_with(b"SSH-2.0-")),
        "{ssh:?}"
    );

    let stopped = classify.stop();
    let stats = &stopped["stats"];
    assert_eq!(stopped["event"], "stopped");
    assert!(stats["dropped"].as_u64().unwrap() >= 5, "{stats}");
    assert!(stats["ct_marks_set"].as_u64().unwrap() >= 3, "{stats}");
    assert_eq!(stats["malformed"], 0);
    assert_eq!(stats["verdict_errors"], 0);

    // No classifier: the queue fails closed (policy default) ...
    assert!(
        tcp_exchange(&cli, 8080, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err(),
        "fail-closed queue let traffic through with no classifier"
    );
    // ... or open, when the policy says `classifier_fail_open = true` (nft-apply then installs
    // the NFQUEUE rule with --queue-bypass).
    install_queue_rules(&srv, true);
    let open = tcp_exchange(&cli, 8080, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        open.as_ref().is_ok_and(|b| b.starts_with(b"HTTP/1.1 200")),
        "{open:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same cases with the ruleset `rampart compile` emits for the policy and the queue rules
/// and sysctls `rampart_nft::app_queue` says nft-apply installs with it.
#[test]
fn classifier_works_with_the_compiled_ruleset() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let dir = workdir("compiled");
    let topo = Topology::build("c");
    let (cli, srv) = (topo.ns("cli"), topo.ns("srv"));
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("compile")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ruleset = String::from_utf8(out.stdout).unwrap();
    assert!(ruleset.contains("chain app_input"), "{ruleset}");
    ns_sh_stdin(&srv, &["nft", "-f", "-"], &ruleset);
    let ir = rampart_policy::load_file(&policy).unwrap().policy;
    let opts = rampart_nft::EmitOptions::default();
    for (name, value) in rampart_nft::app_queue::required_sysctls(&ir, &opts) {
        ns_sh(&srv, &["sysctl", "-q", "-w", &format!("{name}={value}")]);
    }
    let rules = rampart_nft::app_queue::queue_rules(&ir, &opts);
    assert!(!rules.is_empty());
    for rule in &rules {
        let tool = if rule.v6 {
            "ip6tables-nft"
        } else {
            "iptables-nft"
        };
        let mut args = vec![tool, "-t", rampart_nft::app_queue::QUEUE_TABLE];
        args.extend(rule.spec.split_whitespace());
        ns_sh(&srv, &args);
    }
    let _servers = start_servers(&srv);
    let events_path = dir.join("events.jsonl");
    let stderr_path = dir.join("stderr.txt");
    let (classify, bound) = Classify::start(&srv, &policy, &events_path, &stderr_path, &[]);
    assert_eq!(bound["app_rules"], 5);
    protocol_cases(&cli, &srv, &events_path);
    // IPv6: the same classifier, ctnetlink look-ups and marks with IPv6 tuples.
    let http6 = tcp_exchange_to(&cli, SRV_IP6, 8080, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(
        http6.as_ref().is_ok_and(|b| b.starts_with(b"HTTP/1.1 200")),
        "{http6:?}"
    );
    let ssh6 = tcp_exchange_to(&cli, SRV_IP6, 8080, b"");
    assert!(
        ssh6.is_err(),
        "SSH banner on 8080 over IPv6 got through: {ssh6:?}"
    );
    wait_for("the IPv6 block event", 3000, || {
        events(&events_path)
            .iter()
            .any(|e| e["src_ip"] == CLI_IP6 && e["rule"]["name"] == "no-ssh-on-8080")
    });
    let stopped = classify.stop();
    let stats = &stopped["stats"];
    assert!(stats["dropped"].as_u64().unwrap() >= 5, "{stats}");
    assert_eq!(stats["malformed"], 0);
    // No classifier and a fail-closed policy: the emitted ruleset's candidates are not let
    // through uninspected.
    assert!(
        udp_exchange(&cli, 53, dns_query("www.example.com")).is_err(),
        "fail-closed queue let traffic through with no classifier"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// One client-first exchange from `cli`: connect (TCP) or send (UDP) to `host:port`, send
/// `send`, wait for an answer. Returns the client's source port and whether an answer came.
fn exchange_with_port(
    ns: &str,
    udp: bool,
    host: &'static str,
    port: u16,
    send: Vec<u8>,
) -> (u16, bool) {
    in_ns(ns, move || {
        let addr = SocketAddr::new(host.parse().unwrap(), port);
        if udp {
            let bind = if addr.is_ipv4() {
                "0.0.0.0:0"
            } else {
                "[::]:0"
            };
            let s = UdpSocket::bind(bind).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1000)))
                .unwrap();
            let local = s.local_addr().unwrap().port();
            let _ = s.send_to(&send, addr);
            let mut buf = [0u8; 1500];
            return (local, s.recv(&mut buf).is_ok_and(|n| n > 0));
        }
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(1500)) else {
            return (0, false);
        };
        let local = s.local_addr().unwrap().port();
        s.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        let _ = s.write_all(&send);
        let mut buf = [0u8; 4096];
        let ok = s.read(&mut buf).is_ok_and(|n| n > 0);
        let _ = s.shutdown(Shutdown::Both);
        (local, ok)
    })
}

/// Kernel versus engine for application rules with the classifier running: client-first flows
/// of several payload kinds, ports and both families go through the compiled ruleset, the queue
/// rules, the real classifier and real sockets while the server's interface is captured; then
/// `rampart simulate` replays the capture and must block exactly the flows the kernel blocked
/// (an application rule's block event for the flow, against "no answer came back").
#[test]
fn kernel_app_verdicts_equal_simulate_on_the_capture() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let has_tcpdump = ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join("tcpdump").exists());
    if !has_tcpdump {
        eprintln!("skipping: needs tcpdump");
        return;
    }
    let dir = workdir("diff");
    let topo = Topology::build("d");
    let (cli, srv) = (topo.ns("cli"), topo.ns("srv"));
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, POLICY).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("compile")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(out.status.success());
    ns_sh_stdin(
        &srv,
        &["nft", "-f", "-"],
        &String::from_utf8(out.stdout).unwrap(),
    );
    let ir = rampart_policy::load_file(&policy).unwrap().policy;
    let opts = rampart_nft::EmitOptions::default();
    for (name, value) in rampart_nft::app_queue::required_sysctls(&ir, &opts) {
        ns_sh(&srv, &["sysctl", "-q", "-w", &format!("{name}={value}")]);
    }
    for rule in rampart_nft::app_queue::queue_rules(&ir, &opts) {
        let tool = if rule.v6 {
            "ip6tables-nft"
        } else {
            "iptables-nft"
        };
        let mut args = vec![tool, "-t", rampart_nft::app_queue::QUEUE_TABLE];
        args.extend(rule.spec.split_whitespace());
        ns_sh(&srv, &args);
    }
    let _servers = start_servers(&srv);
    let events_path = dir.join("events.jsonl");
    let stderr_path = dir.join("stderr.txt");
    let (classify, _) = Classify::start(&srv, &policy, &events_path, &stderr_path, &[]);
    let pcap = dir.join("srv.pcap");
    let mut dump = Command::new("ip")
        .args([
            "netns", "exec", &srv, "tcpdump", "-i", "eth0", "-U", "-s", "4096", "-w",
        ])
        .arg(&pcap)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("tcpdump to start", 5000, || {
        std::fs::metadata(&pcap).is_ok_and(|m| m.len() > 0)
    });

    // Payload kinds × ports: what the classifier labels (and what each rule says) is the
    // system under test; the expected verdict is whatever the engine predicts.
    let http = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
    let ssh = b"SSH-2.0-OpenSSH_9.2\r\n".to_vec();
    let kinds: Vec<(bool, u16, Vec<u8>)> = vec![
        (false, 8080, http.clone()),
        (false, 8080, ssh.clone()),
        (false, 443, client_hello().to_vec()),
        (false, 443, http.clone()),
        (false, 443, ssh),
        (false, 445, smb1_session_setup().to_vec()),
        (false, 445, smb2_negotiate(false)),
        (false, 445, http),
        (true, 53, dns_query("www.example.com")),
        (true, 53, b"\x00\x01tunnel-bytes-not-dns".to_vec()),
    ];
    let mut kernel: Vec<(String, u16, bool)> = Vec::new();
    for round in 0..3 {
        for (i, (udp, port, send)) in kinds.iter().enumerate() {
            // The test's UDP server listens on IPv4 only.
            let host = if *udp || (i + round) % 2 == 0 {
                SRV_IP
            } else {
                SRV_IP6
            };
            let (sport, ok) = exchange_with_port(&cli, *udp, host, *port, send.clone());
            assert_ne!(sport, 0, "connect to {host}:{port} failed");
            let client = if host == SRV_IP { CLI_IP } else { CLI_IP6 };
            kernel.push((client.to_string(), sport, ok));
        }
    }
    // Let the last retransmissions land in the capture, then stop it.
    std::thread::sleep(Duration::from_millis(300));
    unsafe { libc::kill(dump.id() as i32, libc::SIGTERM) };
    let _ = dump.wait();
    let _ = classify.stop();

    let sim_events = dir.join("sim-events.jsonl");
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["simulate", "--policy"])
        .arg(&policy)
        .arg("--pcap")
        .arg(&pcap)
        .arg("--local")
        .arg(format!("{SRV_IP}/32"))
        .arg("--local")
        .arg(format!("{SRV_IP6}/128"))
        .args(["--iface-in", "eth0", "--iface-out", "eth0"])
        .arg("--events")
        .arg(&sim_events)
        .output()
        .unwrap();
    // Exit 1: the replay blocked something (it should); 2 would be an error.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let app_rules: Vec<&str> = ir
        .rules
        .iter()
        .filter(|r| r.app.is_some())
        .map(|r| r.name.as_str())
        .collect();
    let engine_blocked: std::collections::HashSet<(String, u16)> = events(&sim_events)
        .iter()
        .filter(|e| e["event_type"] == "flow" && e["verdict"] == "block")
        .filter(|e| {
            e["rule"]["name"]
                .as_str()
                .is_some_and(|n| app_rules.contains(&n))
        })
        .filter_map(|e| {
            // The flow as first seen: the client's packets, or a server reply (reversed).
            let (ip, port) = if e["dest_ip"] == SRV_IP || e["dest_ip"] == SRV_IP6 {
                (&e["src_ip"], &e["src_port"])
            } else {
                (&e["dest_ip"], &e["dest_port"])
            };
            Some((
                ip.as_str()?.to_string(),
                u16::try_from(port.as_u64()?).ok()?,
            ))
        })
        .collect();
    let mut differ = Vec::new();
    let (mut allowed, mut blocked) = (0, 0);
    for (client, sport, ok) in &kernel {
        let engine_ok = !engine_blocked.contains(&(client.clone(), *sport));
        if *ok {
            allowed += 1;
        } else {
            blocked += 1;
        }
        if engine_ok != *ok {
            differ.push(format!("{client}:{sport}: kernel {ok}, engine {engine_ok}"));
        }
    }
    eprintln!(
        "app differential: {} flows, kernel allowed {allowed} blocked {blocked}, {} differences",
        kernel.len(),
        differ.len()
    );
    assert!(differ.is_empty(), "{differ:#?}");
    assert!(
        allowed >= 10 && blocked >= 10,
        "{allowed} allowed, {blocked} blocked"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Extra server addresses for the multi-queue test: the kernel's `--queue-balance` hashes the
/// address pair, so connections to 16 addresses spread over both queues (all on one: 2^-15).
const SPREAD_HOSTS: [&str; 16] = [
    "198.51.100.101",
    "198.51.100.102",
    "198.51.100.103",
    "198.51.100.104",
    "198.51.100.105",
    "198.51.100.106",
    "198.51.100.107",
    "198.51.100.108",
    "198.51.100.109",
    "198.51.100.110",
    "198.51.100.111",
    "198.51.100.112",
    "198.51.100.113",
    "198.51.100.114",
    "198.51.100.115",
    "198.51.100.116",
];

fn udp_exchange_to(ns: &str, host: &'static str, send: Vec<u8>) -> Result<Vec<u8>, String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        s.send_to(&send, (host, 53)).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 1500];
        let n = s.recv(&mut buf).map_err(|e| format!("recv: {e}"))?;
        Ok(buf[..n].to_vec())
    })
}

/// The queue rules the emitter writes for a policy (spread over its `classifier_queues`),
/// installed in `ns` by nft-apply itself (replacing `old`); returns what is live afterwards.
fn install_emitted_queue_rules(
    ns: &str,
    policy: &Path,
    old: &[rampart_nft::app_queue::QueueRule],
) -> Vec<rampart_nft::app_queue::QueueRule> {
    let ir = rampart_policy::load_file(policy).unwrap().policy;
    let opts = rampart_nft::EmitOptions::default();
    let rules = rampart_nft::app_queue::queue_rules(&ir, &opts);
    let nft = rampart_nft_apply::runner::Nft::in_netns(ns);
    rampart_nft_apply::extras::replace_queue_rules(&nft, old, &rules).unwrap();
    let live = rampart_nft_apply::extras::live_queue_rules(&nft, &opts.table).unwrap();
    let mut want = rules.clone();
    want.sort();
    assert_eq!(live, want, "the live queue rules list back as written");
    live
}

/// A policy with `classifier_queues = 2`: its queue rules balance over 4210:4211 and
/// `rampart classify` (no `--queues`) binds both, one thread and socket pair per queue, one
/// shared connection table. Connections to 16 addresses land on both queues;
/// every verdict, block event, conntrack mark, reload and metrics dump is the same as with one
/// queue; without a classifier the balanced rules fail closed, or open with `--queue-bypass`
/// exactly when the policy fails open.
#[test]
fn two_queues_share_one_table_and_keep_fail_closed_and_fail_open() {
    let Some((dir, topo)) = marked_topology("queues", "q") else {
        return;
    };
    let (cli, srv) = (topo.ns("cli"), topo.ns("srv"));
    for host in SPREAD_HOSTS {
        ns_sh(
            &srv,
            &["ip", "addr", "add", &format!("{host}/24"), "dev", "eth0"],
        );
    }
    let two_queues = POLICY.replace(
        "classifier_fail_open = false",
        "classifier_fail_open = false\nclassifier_queues = 2",
    );
    let policy = dir.join("policy.toml");
    std::fs::write(&policy, &two_queues).unwrap();
    let live = install_emitted_queue_rules(&srv, &policy, &[]);
    assert!(live
        .iter()
        .all(|r| r.spec.ends_with("--queue-balance 4210:4211")));
    let _servers = start_servers(&srv);
    let events_path = dir.join("events.jsonl");
    let stderr_path = dir.join("stderr.txt");
    let metrics_path = dir.join("metrics.prom");
    let (classify, bound) = Classify::start(
        &srv,
        &policy,
        &events_path,
        &stderr_path,
        &[Path::new("--metrics"), &metrics_path],
    );
    assert_eq!(bound["queue"], QUEUE_NUM);
    assert_eq!(bound["queues"], 2);
    assert_eq!(bound["conntrack"], true);

    const HTTP: &[u8] = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    for host in SPREAD_HOSTS {
        let http = tcp_exchange_to(&cli, host, 8080, HTTP);
        assert!(
            http.as_ref().is_ok_and(|b| b.starts_with(b"HTTP/1.1 200")),
            "{host}: {http:?}"
        );
        let query = dns_query("www.example.com");
        let answer = udp_exchange_to(&cli, host, query.clone());
        assert!(
            answer.as_ref().is_ok_and(|a| a.len() == query.len()),
            "{host}: {answer:?}"
        );
    }
    for host in &SPREAD_HOSTS[..4] {
        let ssh = tcp_exchange_to(&cli, host, 8080, b"");
        assert!(ssh.is_err(), "{host}: SSH banner got through: {ssh:?}");
        let junk = udp_exchange_to(&cli, host, b"\x00\x00not-a-dns-message".to_vec());
        assert!(junk.is_err(), "{host}: non-DNS got through: {junk:?}");
    }
    // One event per blocked connection, whichever queue decided it.
    wait_for("8 block events", 3000, || events(&events_path).len() >= 8);
    let mut got: Vec<(String, String)> = events(&events_path)
        .iter()
        .map(|e| {
            (
                e["rule"]["name"].as_str().unwrap().to_string(),
                e["dest_ip"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = SPREAD_HOSTS[..4]
        .iter()
        .flat_map(|h| {
            [
                ("dns-only-on-53".to_string(), h.to_string()),
                ("no-ssh-on-8080".to_string(), h.to_string()),
            ]
        })
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert!(blocked_drops(&srv) > 0, "no packet hit the blocked drop");
    // SIGUSR1: the counters of both queue threads, added up.
    classify.signal(libc::SIGUSR1);
    wait_for("the metrics file", 3000, || {
        std::fs::read_to_string(&metrics_path).is_ok_and(|m| {
            m.contains("rampart_nfq_rule_decisions_total{rule=\"no-ssh-on-8080\"} 4\n")
        })
    });
    // SIGHUP: the shared classifier takes the new policy for every queue.
    let allow_ssh = two_queues.replace("app = [\"ssh\"]", "app = [\"rdp\"]");
    reload(&classify, &policy, &allow_ssh, &stderr_path, "reloaded");
    for host in SPREAD_HOSTS {
        let ssh = tcp_exchange_to(&cli, host, 8080, b"");
        assert!(
            ssh.as_ref().is_ok_and(|b| b.starts_with(b"SSH-2.0-")),
            "{host}: {ssh:?}"
        );
    }
    let stopped = classify.stop();
    let stats = &stopped["stats"];
    assert!(stats["dropped"].as_u64().unwrap() >= 8, "{stats}");
    // The 4 SSH connections are confirmed (the banner is a reply) and carry the blocked mark;
    // the 4 non-DNS datagrams were the first of theirs, dropped before conntrack confirmed them.
    assert!(stats["ct_marks_set"].as_u64().unwrap() >= 4, "{stats}");
    assert_eq!(stats["ct_marks_missing"], 4, "{stats}");
    assert_eq!(stats["malformed"], 0);
    assert_eq!(stats["verdict_errors"], 0);
    let per_queue = stopped["per_queue"].as_array().unwrap();
    assert_eq!(per_queue.len(), 2, "{stopped}");
    for (q, want) in per_queue.iter().zip([QUEUE_NUM, QUEUE_NUM + 1]) {
        assert_eq!(q["queue"], want);
        assert!(q["packets"].as_u64().unwrap() > 0, "queue idle: {stopped}");
    }
    let total: u64 = per_queue
        .iter()
        .map(|q| q["packets"].as_u64().unwrap())
        .sum();
    assert_eq!(total, stats["packets"].as_u64().unwrap(), "{stopped}");

    // No classifier: fail closed on every queue of the range ...
    for host in &SPREAD_HOSTS[..4] {
        assert!(
            udp_exchange_to(&cli, host, dns_query("www.example.com")).is_err(),
            "{host}: fail-closed balanced queue let traffic through"
        );
    }
    // ... or open with `--queue-bypass`, which nft-apply adds only for a fail-open policy.
    let open_policy = dir.join("open.toml");
    std::fs::write(
        &open_policy,
        two_queues.replace(
            "classifier_fail_open = false",
            "classifier_fail_open = true",
        ),
    )
    .unwrap();
    let open = install_emitted_queue_rules(&srv, &open_policy, &live);
    assert!(open
        .iter()
        .all(|r| r.spec.ends_with("--queue-balance 4210:4211 --queue-bypass")));
    for host in SPREAD_HOSTS {
        let answer = udp_exchange_to(&cli, host, dns_query("www.example.com"));
        assert!(
            answer.is_ok(),
            "{host}: fail-open queue dropped: {answer:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
