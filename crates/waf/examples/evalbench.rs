//! In-process cost of one transaction with CRS v4 at paranoia 1 (SecRuleEngine On): a small
//! GET and a 10 KB urlencoded form POST, single thread. The proxy benchmark (wrk) is separate.
//!
//! `cargo run --release -p rampart-waf --example evalbench -- [--crs DIR] [--seconds N] [--only get|form|json] [--iters N] [--no-fold] [--response] [--wrk]`
//! (`--no-fold`: evaluate every rule in every transaction, the engine before constant folding;
//! `--response`: also run the response phases on the `200 ok` that `bench/waf-proxy.sh`'s
//! upstream sends; `--wrk`: the requests carry only the `Host` header, as wrk sends them in
//! `bench/waf-proxy.sh`, instead of a browser's headers)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rampart_waf::{files, Engine, Request, RuleSet, TxOptions};

/// The allocator the `rampart` binary uses, so this measures what it ships.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut crs = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/waf/crs"
    ));
    let mut secs = 3u64;
    let mut only: Option<String> = None;
    let mut iters: Option<u64> = None;
    let mut fold = true;
    let mut response = false;
    let mut wrk = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--crs" => crs = args.next().ok_or("--crs DIR")?.into(),
            "--seconds" => secs = args.next().ok_or("--seconds N")?.parse()?,
            "--iters" => iters = Some(args.next().ok_or("--iters N")?.parse()?),
            "--no-fold" => fold = false,
            "--response" => response = true,
            "--wrk" => wrk = true,
            "--only" => only = Some(args.next().ok_or("--only get|form|json")?),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let mut rs = RuleSet::new();
    files::add_files(&mut rs, &[crs.join("crs-setup.conf.example")])?;
    files::add_inline(&mut rs, "bench.conf", "SecRuleEngine On\n", &crs)?;
    files::add_files(&mut rs, &[crs.join("rules/*.conf")])?;
    rs.finish()?;
    let e = if fold {
        Engine::new(rs)
    } else {
        Engine::new(rs).without_folding()
    };
    eprintln!(
        "prefilter atoms: {}, folded rules: {}",
        e.prefilter_atoms(),
        e.folded_rules()
    );
    let h = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
    let browser = vec![
        h("Host", "localhost"),
        h(
            "User-Agent",
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        ),
        h(
            "Accept",
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        ),
        h("Accept-Language", "en-US,en;q=0.5"),
        h("Accept-Encoding", "gzip, deflate"),
    ];
    let headers = if wrk {
        vec![h("Host", "127.0.0.1:18080")]
    } else {
        browser
    };
    let get = Request {
        method: "GET".into(),
        target: b"/index.html?page=2&sort=asc".to_vec(),
        protocol: "HTTP/1.1".into(),
        headers: headers.clone(),
        remote_addr: "192.0.2.10".into(),
        ..Request::default()
    };
    let mut form = String::new();
    let mut i = 0;
    while form.len() < 10 * 1024 {
        form.push_str(&format!("field{i}=some+ordinary+text+value+number+{i}&"));
        i += 1;
    }
    let mut post = get.clone();
    post.method = "POST".into();
    post.target = b"/submit".to_vec();
    post.headers
        .push(h("Content-Type", "application/x-www-form-urlencoded"));
    post.headers
        .push(h("Content-Length", &form.len().to_string()));
    post.body = form.into_bytes();
    let mut json = get.clone();
    json.method = "POST".into();
    json.target = b"/api/items".to_vec();
    json.headers.push(h("Content-Type", "application/json"));
    let mut jbody = String::from("{\"items\":[");
    let mut k = 0;
    while jbody.len() < 10 * 1024 {
        jbody.push_str(&format!(
            "{{\"id\":{k},\"name\":\"item number {k}\",\"note\":\"some ordinary text\"}},"
        ));
        k += 1;
    }
    jbody.pop();
    jbody.push_str("]}");
    json.headers
        .push(h("Content-Length", &jbody.len().to_string()));
    json.body = jbody.into_bytes();
    for (key, name, req) in [
        ("get", "small GET", &get),
        ("form", "10 KB form POST", &post),
        ("json", "10 KB JSON POST", &json),
    ] {
        if only.as_deref().is_some_and(|o| o != key) {
            continue;
        }
        let ok_response = rampart_waf::body::Response {
            status: 200,
            protocol: "HTTP/1.1".into(),
            headers: vec![
                h("content-length", "3"),
                h("date", "Sun, 29 Nov 2026 06:00:00 GMT"),
            ],
            body: b"ok\n".to_vec(),
        };
        let start = Instant::now();
        let mut n = 0u64;
        while iters.map_or(start.elapsed() < Duration::from_secs(secs), |it| n < it) {
            let mut tx = e.transaction(req, &TxOptions::default());
            tx.process_request(req);
            if response {
                // As the proxy does before it waits for the upstream.
                tx.release_caches();
                // What `bench/waf-proxy.sh`'s upstream answers (hyper adds the length and date).
                tx.process_response(&ok_response);
            }
            assert!(
                tx.intervention.is_none(),
                "{name} blocked: {:?}",
                tx.matched
            );
            tx.finish();
            n += 1;
        }
        let us = start.elapsed().as_micros() as f64 / n as f64;
        println!(
            "{name}: {us:.0} µs per transaction ({:.0} transactions/s on one thread)",
            1e6 / us
        );
    }
    Ok(())
}
