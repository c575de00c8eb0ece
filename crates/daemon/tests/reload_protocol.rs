//! The reload protocol: a component whose first JSON line carries `"reload_in_place": true` gets
//! SIGHUP on reload and keeps its process; one that says `false` is restarted; one that says
//! nothing keeps its kind's behaviour from before the protocol (dns: SIGHUP, waf: restart). The components here are small shell scripts standing
//! in for `rampart waf`, a kind the daemon otherwise restarts. Needs root (the supervisor drops
//! capabilities from each component's bounding set, which takes CAP_SETPCAP).

use std::path::PathBuf;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use rampart_daemon::supervisor::{ComponentStatus, EventsFrom, Spec, Supervisor};
use rampart_daemon::{Backoff, ComponentKind};

fn script(name: &str, kind: ComponentKind, first_line: &str) -> Spec {
    // On SIGHUP the script prints an event, so the test sees the signal arrive; the short sleeps
    // let the trap run promptly.
    let body = format!(
        "trap 'echo \"{{\\\"component\\\":\\\"waf\\\",\\\"event_type\\\":\\\"reloaded\\\",\\\"reason\\\":\\\"{name}\\\"}}\"' HUP; echo '{first_line}'; while :; do sleep 0.05; done"
    );
    Spec {
        name: name.into(),
        kind,
        args: vec!["-c".into(), body.into()],
        events: EventsFrom::Stdout,
        interval_s: None,
        cwd: None,
        user: None,
        group: None,
        writable_files: Vec::new(),
        writable_dirs: Vec::new(),
    }
}

fn wait_until(
    supervisor: &mut Supervisor,
    what: &str,
    mut done: impl FnMut(&[ComponentStatus]) -> bool,
) -> Vec<ComponentStatus> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = Instant::now();
        supervisor.tick(now);
        let status = supervisor.status(now);
        if done(&status) {
            return status;
        }
        assert!(now < deadline, "timed out waiting for {what}: {status:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn announced_components_reload_in_place_and_the_others_restart() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: needs root (capability bounding set)");
        return;
    }
    let (tx, rx) = channel();
    let mut supervisor = Supervisor::new(
        PathBuf::from("/bin/sh"),
        vec![
            script(
                "announces",
                ComponentKind::Waf,
                r#"{"event":"listening","reload_in_place":true}"#,
            ),
            script("silent", ComponentKind::Waf, r#"{"event":"listening"}"#),
            script(
                "declines",
                ComponentKind::Waf,
                r#"{"event":"listening","reload_in_place":false}"#,
            ),
            // A kind that reloaded on SIGHUP before the protocol keeps doing so when it says
            // nothing, and is restarted when it says it cannot.
            script("legacy", ComponentKind::Dns, r#"{"event":"listening"}"#),
            script(
                "legacy-declines",
                ComponentKind::Dns,
                r#"{"event":"listening","reload_in_place":false}"#,
            ),
        ],
        Backoff::default(),
        tx,
    );
    let before = wait_until(&mut supervisor, "all ready", |s| s.iter().all(|c| c.ready));
    assert_eq!(
        before.iter().map(|c| c.reload_in_place).collect::<Vec<_>>(),
        [true, false, false, true, false]
    );
    supervisor.reload(Instant::now());
    let after = wait_until(&mut supervisor, "all ready again", |s| {
        s.iter().all(|c| c.ready)
    });
    // The announcing component (and the legacy kind) kept its process and was started once.
    for i in [0, 3] {
        assert_eq!(after[i].pid, before[i].pid, "{}", after[i].name);
        assert_eq!(after[i].starts, 1, "{}", after[i].name);
    }
    // The others were restarted: a new process, a second start, no failure counted.
    for i in [1, 2, 4] {
        assert_ne!(after[i].pid, before[i].pid, "{}", after[i].name);
        assert_eq!(after[i].starts, 2, "{}", after[i].name);
        assert_eq!(after[i].failures, 0, "{}", after[i].name);
    }
    // The SIGHUP reached the announcing component (its trap printed an event).
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut hangups = Vec::new();
    while Instant::now() < deadline && hangups.len() < 2 {
        while let Ok(event) = rx.try_recv() {
            if event["event_type"] == "reloaded" {
                hangups.push(event["reason"].as_str().unwrap_or_default().to_string());
            }
        }
        supervisor.tick(Instant::now());
        std::thread::sleep(Duration::from_millis(20));
    }
    hangups.sort();
    assert_eq!(hangups, ["announces", "legacy"]);
    supervisor.shutdown();
}
