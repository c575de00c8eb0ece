//! Namespace fixtures for the kernel tests: unique names, Drop teardown, bounded waits.
#![allow(dead_code)]

use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `Some(reason)` when kernel tests cannot run here.
pub fn unavailable() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    for tool in ["nft", "ip", "python3", "unshare"] {
        let ok = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("{tool} not installed"));
        }
    }
    None
}

pub fn sh(cmd: &str) -> Output {
    Command::new("sh").args(["-c", cmd]).output().expect("sh")
}

pub fn must(cmd: &str) -> String {
    let o = sh(cmd);
    assert!(
        o.status.success(),
        "`{cmd}` failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A set of network namespaces (and processes) removed on drop.
pub struct Lab {
    pub prefix: String,
    pub namespaces: Vec<String>,
    pub children: Vec<Child>,
    pub dir: std::path::PathBuf,
}

impl Lab {
    pub fn new(tag: &str) -> Lab {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("rn{}{}{}", tag, std::process::id() % 100000, n);
        let dir = std::env::temp_dir().join(format!("rampart-nft-test-{prefix}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            prefix,
            namespaces: Vec::new(),
            children: Vec::new(),
            dir,
        }
    }

    /// Create namespace `<prefix>-<name>` with lo up.
    pub fn ns(&mut self, name: &str) -> String {
        let ns = format!("{}-{name}", self.prefix);
        must(&format!("ip netns add {ns}"));
        self.namespaces.push(ns.clone());
        must(&format!("ip -n {ns} link set lo up"));
        ns
    }

    /// Run a shell command inside namespace `ns`.
    pub fn exec(&self, ns: &str, cmd: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", cmd])
            .output()
            .expect("ip netns exec")
    }

    pub fn exec_ok(&self, ns: &str, cmd: &str) -> String {
        let o = self.exec(ns, cmd);
        assert!(
            o.status.success(),
            "in {ns}: `{cmd}` failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    pub fn spawn(&mut self, ns: &str, cmd: &str) -> usize {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "sh", "-c", &format!("exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Connect `a`:`ia` to `b`:`ib` with a veth pair.
    pub fn veth(&self, a: &str, ia: &str, b: &str, ib: &str) {
        // Created directly inside the namespaces: the host's interface names are never used.
        must(&format!(
            "ip link add {ia} netns {a} type veth peer name {ib} netns {b}"
        ));
        must(&format!("ip -n {a} link set {ia} up"));
        must(&format!("ip -n {b} link set {ib} up"));
    }

    pub fn write(&self, name: &str, text: &str) -> std::path::PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Processes started inside the namespaces (watchers, servers) die with them: kill every
        // pid still in each namespace before deleting it.
        for ns in &self.namespaces {
            let _ = sh(&format!(
                "for p in $(ip netns pids {ns} 2>/dev/null); do kill -9 $p; done"
            ));
            let _ = sh(&format!("ip netns del {ns}"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Captures every frame arriving on eth0: prints `ready`, then, on SIGTERM or after `argv[1]`
/// seconds, the first 96 bytes of each frame in hex, one line per frame ([`parse_captured`]
/// reads them).
pub const CAPTURE_PY: &str = r#"
import socket, sys, signal, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind(("eth0", 0)); s.settimeout(0.2)
seen = []
stop = [False]
signal.signal(signal.SIGTERM, lambda *a: stop.__setitem__(0, True))
print("ready", flush=True)
end = time.time() + float(sys.argv[1])
while not stop[0] and time.time() < end:
    try:
        f, addr = s.recvfrom(4096)
    except socket.timeout:
        continue
    if addr[2] != socket.PACKET_OUTGOING:
        seen.append(f[:96].hex())
for line in seen:
    print(line)
sys.stdout.flush()
"#;

/// An IP packet [`CAPTURE_PY`] saw.
pub struct Captured {
    pub src: std::net::IpAddr,
    pub dst: std::net::IpAddr,
    /// IPv4 protocol, or the IPv6 header's next header (extension headers are not walked).
    pub proto: u8,
    /// The captured bytes after the IPv4 header / the fixed IPv6 header.
    pub l4: Vec<u8>,
    /// Fragment offset in bytes (0 for whole packets and first fragments).
    pub frag_offset: u32,
}

/// One line of [`CAPTURE_PY`]'s output, if it is an IPv4 or IPv6 frame.
pub fn parse_captured(line: &str) -> Option<Captured> {
    let line = line.trim();
    let f: Vec<u8> = (0..line.len() / 2)
        .map(|i| u8::from_str_radix(line.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<_>>()?;
    let p = f.get(14..)?;
    match u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) {
        0x0800 => {
            let ihl = usize::from(p.first()? & 15) * 4;
            let a = |o: usize| -> Option<std::net::IpAddr> {
                let b: [u8; 4] = p.get(o..o + 4)?.try_into().ok()?;
                Some(b.into())
            };
            Some(Captured {
                src: a(12)?,
                dst: a(16)?,
                proto: *p.get(9)?,
                l4: p.get(ihl..)?.to_vec(),
                frag_offset: u32::from(u16::from_be_bytes([*p.get(6)?, *p.get(7)?]) & 0x1fff) * 8,
            })
        }
        0x86dd => {
            let a = |o: usize| -> Option<std::net::IpAddr> {
                let b: [u8; 16] = p.get(o..o + 16)?.try_into().ok()?;
                Some(b.into())
            };
            let proto = *p.get(6)?;
            let l4 = p.get(40..)?.to_vec();
            let frag_offset = if proto == 44 {
                u32::from(u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]) & 0xfff8)
            } else {
                0
            };
            Some(Captured {
                src: a(8)?,
                dst: a(24)?,
                proto,
                l4,
                frag_offset,
            })
        }
        _ => None,
    }
}

/// A Python echo server: TCP and UDP on the given ports, every address.
pub const SERVER_PY: &str = r#"
import socket, sys, threading
def tcp(port, fam):
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port)); s.listen(64)
    held = []
    while True:
        c, _ = s.accept()
        try:
            c.sendall(b"hi")
            if port >= 7100 and port < 7200:
                held.append(c)  # "hold" ports keep connections open (connection-limit tests)
            else:
                c.close()
        except Exception:
            pass
def udp(port, fam):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", port))
    while True:
        d, a = s.recvfrom(2048); s.sendto(d, a)
for p in sys.argv[1:]:
    kind, port = p.split(":")
    for fam in (socket.AF_INET, socket.AF_INET6):
        threading.Thread(target=tcp if kind == "tcp" else udp, args=(int(port), fam), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"#;

/// A Python prober: `probe.py tcp|udp ADDR PORT` prints ok / reset / unreach / timeout.
pub const PROBE_PY: &str = r#"
import socket, sys
kind, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if kind == "tcp" else socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[4]) if len(sys.argv) > 4 else 1.0)
try:
    if kind == "tcp":
        s.connect((addr, port)); s.recv(2)
    else:
        s.connect((addr, port)); s.send(b"x"); s.recv(16)
    print("ok")
except ConnectionRefusedError:
    print("reset" if kind == "tcp" else "unreach")
except socket.timeout:
    print("timeout")
except OSError as e:
    print("unreach" if e.errno in (113, 101, 13) else "error %s" % e)
"#;

/// Wait until `f` is true or `limit` passes.
pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Opens N TCP connections to ADDR:PORT from this namespace and keeps them open until stdin
/// closes; prints one line per connection: ok / timeout / reset.
pub const HOLD_PY: &str = r#"
import socket, sys
addr, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
keep = []
for i in range(n):
    s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(0.7)
    try:
        s.connect((addr, port)); s.recv(2); print("ok", flush=True); keep.append(s)
    except socket.timeout:
        print("timeout", flush=True)
    except ConnectionRefusedError:
        print("reset", flush=True)
sys.stdin.read()
"#;
