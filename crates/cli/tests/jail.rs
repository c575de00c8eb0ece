//! `rampart jail` end to end: per-program egress. A copy of netcat named like the seed's
//! verclsid is jailed by inode (its hard link too, and a running instance at startup), a renamed
//! copy on a watched mount is jailed by SHA-256, and the policy's egress rule naming the jail's
//! cgroup — compiled by `rampart compile` and loaded into a client namespace — rejects their
//! connections while the same netcat under another name reaches the same server. Needs root, nft,
//! nsenter, nc and a cgroup v2 mount; skips otherwise with the reason.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "192.0.2.2";
const CLIENT: &str = "192.0.2.1";
const PORT: u16 = 8080;

struct Cleanup {
    namespaces: Vec<String>,
    cgroup_root: Option<PathBuf>,
    tmpfs: Option<PathBuf>,
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        if let Some(mount) = &self.tmpfs {
            let _ = Command::new("umount").arg(mount).status();
        }
        if let Some(root) = &self.cgroup_root {
            // Leaves first; a cgroup can go once its processes are gone.
            if let Ok(entries) = std::fs::read_dir(root) {
                for entry in entries.flatten() {
                    if entry.path().is_dir() {
                        let _ = std::fs::remove_dir(entry.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(root);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

fn skip_reason() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root".into());
    }
    for tool in ["nft", "ip", "nsenter", "nc", "sha256sum"] {
        if which(tool).is_none() {
            return Some(format!("needs {tool}"));
        }
    }
    if rampart_jail::cgroup2_mount().is_err() {
        return Some("needs a cgroup v2 mount".into());
    }
    None
}

/// Namespaces `client_ns` and `server_ns` joined by a veth pair (CLIENT, SERVER).
fn two_namespaces(client_ns: &str, server_ns: &str) {
    for ns in [client_ns, server_ns] {
        ok(Command::new("ip").args(["netns", "add", ns]));
        ok(Command::new("ip").args(["-n", ns, "link", "set", "lo", "up"]));
    }
    ok(Command::new("ip").args([
        "-n", client_ns, "link", "add", "c0", "type", "veth", "peer", "name", "s0", "netns",
        server_ns,
    ]));
    ok(Command::new("ip").args([
        "-n",
        client_ns,
        "addr",
        "add",
        &format!("{CLIENT}/24"),
        "dev",
        "c0",
    ]));
    ok(Command::new("ip").args([
        "-n",
        server_ns,
        "addr",
        "add",
        &format!("{SERVER}/24"),
        "dev",
        "s0",
    ]));
    ok(Command::new("ip").args(["-n", client_ns, "link", "set", "c0", "up"]));
    ok(Command::new("ip").args(["-n", server_ns, "link", "set", "s0", "up"]));
}

/// A server in namespace `ns` answering every connection with "ok\n".
fn serve_in(ns: &str) {
    let ns_file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid namespace descriptor.
        let rc = unsafe { libc::setns(ns_file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns");
        let listener = TcpListener::bind((SERVER, PORT)).unwrap();
        ready_tx.send(()).unwrap();
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(b"ok\n");
        }
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
}

/// Run `program` in namespace `ns` as a client of the server; what it printed.
fn connect_with(ns: &str, program: &Path) -> String {
    let out = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .arg(program)
        .args(["-w", "3", SERVER, &PORT.to_string()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json_line(reader: &mut impl BufRead, deadline: Instant) -> serde_json::Value {
    let mut line = String::new();
    while line.trim().is_empty() {
        assert!(Instant::now() < deadline, "no JSON line from rampart jail");
        line.clear();
        reader.read_line(&mut line).unwrap();
    }
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[test]
fn jailed_program_is_denied_egress_while_the_same_binary_under_another_name_is_not() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("rampart-jail-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mount = rampart_jail::cgroup2_mount().unwrap();
    let root = format!("rampart-test-jail-{id}");
    let mut guard = Cleanup {
        namespaces: vec![format!("rjailc-{id}"), format!("rjails-{id}")],
        cgroup_root: Some(mount.join(&root)),
        tmpfs: None,
        children: Vec::new(),
        dir: dir.clone(),
    };
    let (client_ns, server_ns) = (guard.namespaces[0].clone(), guard.namespaces[1].clone());

    two_namespaces(&client_ns, &server_ns);
    serve_in(&server_ns);

    // The programs: a jailed copy, its hard link, a control copy, and (on a tmpfs the jail
    // watches by digest) a renamed copy.
    let nc = std::fs::canonicalize(which("nc").unwrap()).unwrap();
    let jailed = dir.join("verclsid-nc");
    let linked = dir.join("innocent-looking-link");
    let control = dir.join("other-nc");
    std::fs::copy(&nc, &jailed).unwrap();
    std::fs::hard_link(&jailed, &linked).unwrap();
    std::fs::copy(&nc, &control).unwrap();
    let watched = dir.join("mnt");
    std::fs::create_dir_all(&watched).unwrap();
    ok(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16m", "rampart-jail-test"])
        .arg(&watched));
    guard.tmpfs = Some(watched.clone());
    let renamed = watched.join("renamed-copy");
    std::fs::copy(&nc, &renamed).unwrap();
    let digest_out = Command::new("sha256sum").arg(&nc).output().unwrap();
    let digest = String::from_utf8_lossy(&digest_out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();

    // Before the jail: everything connects (the rule below is not loaded yet, and proves the
    // path works).
    assert_eq!(connect_with(&client_ns, &jailed).trim(), "ok");

    // An instance already running when the jail starts: a listener in the client namespace.
    let running = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{client_ns}"))
        .arg(&jailed)
        .args(["-l", "127.0.0.1", "9999"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let running_pid = running.id();
    guard.children.push(running);
    std::thread::sleep(Duration::from_millis(200));

    let config = dir.join("jail.toml");
    std::fs::write(
        &config,
        format!(
            "cgroup_root = \"{root}\"\nwatch_mounts = [\"{}\"]\n\n[[program]]\nname = \"verclsid\"\npaths = [\"{}\"]\nsha256 = [\"{digest}\"]\nmitigates = [\"T1218.012\"]\n",
            watched.display(),
            jailed.display()
        ),
    )
    .unwrap();
    let events = dir.join("events.jsonl");
    let mut jail = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["jail", "--config"])
        .arg(&config)
        .arg("--events")
        .arg(&events)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(jail.stdout.take().unwrap());
    let mut stderr = jail.stderr.take().unwrap();
    guard.children.push(jail);
    let ready = read_json_line(&mut stdout, Instant::now() + Duration::from_secs(10));
    assert_eq!(ready["event"], "ready", "{ready}");
    let cgroup = format!("{root}/verclsid");
    assert_eq!(ready["programs"][0]["cgroup"], cgroup.as_str());
    assert_eq!(
        ready["running_jailed"], 1,
        "the running listener is moved at startup"
    );
    let proc_cgroup = std::fs::read_to_string(format!("/proc/{running_pid}/cgroup")).unwrap();
    assert!(
        proc_cgroup.contains(&cgroup),
        "running instance not in its cgroup: {proc_cgroup}"
    );

    // The policy: egress from the jail's cgroup is rejected; everything else is accepted.
    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[defaults]
ingress = "accept"
egress = "accept"
forward = "drop"

[[rules]]
name = "verclsid-no-egress"
direction = "egress"
action = "reject"
owner = {{ cgroup = ["{cgroup}"] }}
mitigates = ["T1218.012"]
"#
        ),
    )
    .unwrap();
    let compiled = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("compile")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ruleset = dir.join("ruleset.nft");
    std::fs::write(&ruleset, &compiled.stdout).unwrap();
    // nsenter (not `ip netns exec`, which remounts /sys) so nft sees the cgroup2 mount to
    // resolve the rule's cgroup path.
    ok(Command::new("nsenter")
        .arg(format!("--net=/run/netns/{client_ns}"))
        .args(["nft", "-f"])
        .arg(&ruleset));

    assert_eq!(
        connect_with(&client_ns, &control).trim(),
        "ok",
        "control copy must connect"
    );
    assert_eq!(
        connect_with(&client_ns, &nc).trim(),
        "ok",
        "the system netcat must connect"
    );
    assert_eq!(
        connect_with(&client_ns, &jailed).trim(),
        "",
        "jailed program connected"
    );
    assert_eq!(
        connect_with(&client_ns, &linked).trim(),
        "",
        "hard link escaped the jail"
    );
    assert_eq!(
        connect_with(&client_ns, &renamed).trim(),
        "",
        "renamed copy escaped the jail"
    );

    // The kernel counted the rejections on the policy rule.
    let listing = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{client_ns}"))
        .args(["nft", "list", "table", "inet", "rampart"])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&listing.stdout);
    let rule_line = listing
        .lines()
        .find(|l| l.contains("socket cgroupv2"))
        .unwrap_or_else(|| panic!("no cgroup rule in\n{listing}"));
    assert!(
        !rule_line.contains("packets 0 "),
        "rule never matched: {rule_line}"
    );

    // One event per jailed exec (3 execs) plus the startup move, each naming the technique.
    let deadline = Instant::now() + Duration::from_secs(5);
    let lines = loop {
        let text = std::fs::read_to_string(&events).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        if lines.len() >= 4 || Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 4, "{lines:#?}");
    for event in &lines {
        assert_eq!(event["component"], "jail");
        assert_eq!(event["techniques"][0], "T1218.012");
        assert_eq!(event["detail"]["cgroup"], cgroup.as_str());
    }
    let paths: Vec<&str> = lines
        .iter()
        .filter_map(|e| e["detail"]["path"].as_str())
        .collect();
    assert!(
        paths.iter().any(|p| p.ends_with("renamed-copy")),
        "{paths:?}"
    );

    // SIGTERM: the jail stops and reports its counters.
    let jail = guard.children.last_mut().unwrap();
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(jail.id() as i32, libc::SIGTERM) };
    let stopped = read_json_line(&mut stdout, Instant::now() + Duration::from_secs(5));
    assert_eq!(stopped["event"], "stopped", "{stopped}");
    assert_eq!(stopped["stats"]["execs_jailed"], 3, "{stopped}");
    assert_eq!(stopped["stats"]["execs_refused"], 0, "{stopped}");
    assert!(
        stopped["stats"]["files_hashed"].as_u64().unwrap() >= 1,
        "{stopped}"
    );
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    assert!(jail.wait().unwrap().success(), "{err}");
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let dir = std::env::temp_dir().join(format!("rampart-jail-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("jail.toml");
    std::fs::write(
        &config,
        "[[program]]\nname = \"x\"\npaths = [\"relative/bin\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["jail", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("jail.toml is not valid") && stderr.contains("not absolute"),
        "{stderr}"
    );
}

/// The policy is the one source: `rampart jail --policy` jails the policy's `[[programs]]` and
/// the same policy, compiled, rejects the egress of `owner = { program = [...] }` — the jailed
/// copy is refused while a copy of the same binary under another path reaches the server.
#[test]
fn jail_driven_by_the_policy_blocks_the_program_its_rules_name() {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping: {reason}");
        return;
    }
    let id = std::process::id();
    let dir = std::env::temp_dir().join(format!("rampart-jailp-{id}"));
    std::fs::create_dir_all(&dir).unwrap();
    let mount = rampart_jail::cgroup2_mount().unwrap();
    let root = format!("rampart-test-jailp-{id}");
    let mut guard = Cleanup {
        namespaces: vec![format!("rjpc-{id}"), format!("rjps-{id}")],
        cgroup_root: Some(mount.join(&root)),
        tmpfs: None,
        children: Vec::new(),
        dir: dir.clone(),
    };
    let (client_ns, server_ns) = (guard.namespaces[0].clone(), guard.namespaces[1].clone());
    two_namespaces(&client_ns, &server_ns);
    serve_in(&server_ns);

    let nc = std::fs::canonicalize(which("nc").unwrap()).unwrap();
    let jailed = dir.join("verclsid-nc");
    let control = dir.join("other-nc");
    std::fs::copy(&nc, &jailed).unwrap();
    std::fs::copy(&nc, &control).unwrap();

    let policy = dir.join("policy.toml");
    std::fs::write(
        &policy,
        format!(
            r#"
[defaults]
ingress = "accept"
egress = "accept"
forward = "drop"

[jail]
cgroup_root = "{root}"

[[programs]]
name = "verclsid"
paths = ["{}"]
mitigates = ["T1218.012"]

[[rules]]
name = "verclsid-no-egress"
direction = "egress"
action = "reject"
owner = {{ program = ["verclsid"] }}
mitigates = ["T1218.012"]
"#,
            jailed.display()
        ),
    )
    .unwrap();

    let mut jail = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["jail", "--policy"])
        .arg(&policy)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(jail.stdout.take().unwrap());
    let mut stderr = jail.stderr.take().unwrap();
    guard.children.push(jail);
    let ready = read_json_line(&mut stdout, Instant::now() + Duration::from_secs(10));
    assert_eq!(ready["event"], "ready", "{ready}");
    let cgroup = format!("{root}/verclsid");
    assert_eq!(ready["programs"][0]["name"], "verclsid", "{ready}");
    assert_eq!(ready["programs"][0]["cgroup"], cgroup.as_str(), "{ready}");

    // The compiled ruleset names the same cgroup the jail created.
    let compiled = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .arg("compile")
        .arg(&policy)
        .output()
        .unwrap();
    assert!(
        compiled.status.success(),
        "{}",
        String::from_utf8_lossy(&compiled.stderr)
    );
    let ruleset = dir.join("ruleset.nft");
    std::fs::write(&ruleset, &compiled.stdout).unwrap();
    assert!(
        String::from_utf8_lossy(&compiled.stdout).contains(&cgroup),
        "ruleset does not name {cgroup}"
    );
    ok(Command::new("nsenter")
        .arg(format!("--net=/run/netns/{client_ns}"))
        .args(["nft", "-f"])
        .arg(&ruleset));

    assert_eq!(
        connect_with(&client_ns, &control).trim(),
        "ok",
        "the same binary under another path must connect"
    );
    assert_eq!(
        connect_with(&client_ns, &jailed).trim(),
        "",
        "the program the policy names connected"
    );

    let jail = guard.children.last_mut().unwrap();
    // SAFETY: kill with a pid we spawned.
    unsafe { libc::kill(jail.id() as i32, libc::SIGTERM) };
    let stopped = read_json_line(&mut stdout, Instant::now() + Duration::from_secs(5));
    assert_eq!(stopped["event"], "stopped", "{stopped}");
    assert_eq!(stopped["stats"]["execs_jailed"], 1, "{stopped}");
    let mut err = String::new();
    let _ = stderr.read_to_string(&mut err);
    assert!(jail.wait().unwrap().success(), "{err}");
}

#[test]
fn jail_needs_exactly_one_source_and_a_policy_with_programs() {
    let dir = std::env::temp_dir().join(format!("rampart-jail-src-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .arg("jail")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    std::fs::write(dir.join("empty.toml"), "[defaults]\negress = \"accept\"\n").unwrap();
    std::fs::write(
        dir.join("typo.toml"),
        "[[programs]]\nname = \"verclsid\"\npaths = [\"/usr/bin/verclsid\"]\n\n[[rules]]\nname = \"r\"\ndirection = \"egress\"\naction = \"reject\"\nowner = { program = [\"verclsd\"] }\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("jail.toml"),
        "[[program]]\nname = \"x\"\npaths = [\"/bin/x\"]\n",
    )
    .unwrap();
    let neither = run(&[]);
    let both = run(&["--config", "jail.toml", "--policy", "empty.toml"]);
    let no_programs = run(&["--policy", "empty.toml"]);
    let typo = run(&["--policy", "typo.toml"]);
    let _ = std::fs::remove_dir_all(&dir);

    assert_eq!(neither.0, Some(2), "{}", neither.1);
    assert!(
        neither.1.contains("--config") && neither.1.contains("--policy"),
        "{}",
        neither.1
    );
    assert_eq!(both.0, Some(2), "{}", both.1);
    assert!(both.1.contains("cannot be used with"), "{}", both.1);
    assert_eq!(no_programs.0, Some(2), "{}", no_programs.1);
    assert!(
        no_programs.1.contains("declares no [[programs]]"),
        "{}",
        no_programs.1
    );
    assert_eq!(typo.0, Some(2), "{}", typo.1);
    assert!(
        typo.1.contains("E0106") && typo.1.contains("did you mean `verclsid`?"),
        "{}",
        typo.1
    );
}

/// `rampart run` can start the jail from the run's policy (`from_policy = true`), and
/// `rampart check --run` builds that configuration the way the jail will: it reports the
/// policy's programs, and refuses a policy without any (exit 2, naming the component).
#[test]
fn check_run_builds_a_from_policy_jail_from_the_policy() {
    let dir = std::env::temp_dir().join(format!("rampart-jail-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("run.toml"),
        "policy = \"policy.toml\"\nstate_dir = \"state\"\n\n[[component]]\nkind = \"jail\"\nfrom_policy = true\n",
    )
    .unwrap();
    let check = || {
        Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["check", "--run"])
            .arg(dir.join("run.toml"))
            .output()
            .unwrap()
    };
    std::fs::write(
        dir.join("policy.toml"),
        "[[programs]]\nname = \"verclsid\"\npaths = [\"/usr/bin/verclsid\"]\n\n[[rules]]\nname = \"verclsid-no-egress\"\ndirection = \"egress\"\naction = \"reject\"\nowner = { program = [\"verclsid\"] }\n",
    )
    .unwrap();
    let good = check();
    std::fs::write(dir.join("policy.toml"), "[defaults]\negress = \"accept\"\n").unwrap();
    let bad = check();
    let _ = std::fs::remove_dir_all(&dir);

    let stdout = String::from_utf8_lossy(&good.stdout);
    assert_ne!(good.status.code(), Some(2), "{good:?}");
    assert!(
        stdout.contains("component jail (-): 1 program(s) from the policy"),
        "{stdout}"
    );
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    let stdout = String::from_utf8_lossy(&bad.stdout);
    assert!(
        stdout.contains("component jail (-): error:")
            && stdout.contains("declares no [[programs]]"),
        "{stdout}"
    );
}
