//! Blocking-mode detection and false-positive rates on the attack and benign corpora in
//! ../shared/data/waf: one payload per `GET /get?...` with browser-like headers, CRS at
//! paranoia 1, `SecRuleEngine On`, anomaly threshold 5. Also reports the own
//! @detectSQLi/@detectXSS operators directly on libinjection's data.
//!
//! Two request forms. **runner**: libinjection lines as stored (they are already URL-encoded)
//! in `q=`, modsec-learn lines (whole query strings) as the query, raw payloads
//! (PayloadsAllTheThings, CRS ssrf.data) percent-encoded into `q=`. **peer**: every line
//! percent-encoded whole into `q=` (anchors.md §4.3 wording of the nginx + ModSecurity run).
//! The two forms coincide for the raw payloads.
//!
//! Modes (`cargo run --release -p rampart-waf --example corpus -- …`):
//! * `[--data DIR] [--pl N] [--form runner|peer] [--dump FILE]`: the in-process table
//!   (`--dump`: one line per request with every matched rule, to diff the engine's results
//!   before and after a change to evaluation);
//! * `--emit REQS`: write the request list once, `set \t form \t target` per line, so every
//!   engine gets byte-identical requests (`form` is `runner`, `peer` or `both`);
//! * `--eval REQS OUT`: Rampart in-process on that list, `status \t rule ids` per line (403
//!   blocked, 400 refused by the HTTP front end, 200 passed);
//! * `--send ADDR REQS OUT [--conns N]`: the same requests over keep-alive HTTP/1.1
//!   connections to ADDR (loopback), the response status per line;
//! * `--report REQS RAMPART PEER OUTDIR`: the side-by-side table (markdown) and
//!   `OUTDIR/disagreements.tsv`;
//! * `--compare REQS A B OUT`: per set, how many statuses differ between two result files
//!   (Rampart in-process against Rampart through its proxy), the differing lines to OUT;
//! * `--replay ADDR ERROR_LOG OUTDIR`: re-sends the disagreements one at a time to an nginx +
//!   ModSecurity whose error log is at `info` and records the rule ids ModSecurity logged for
//!   each (`OUTDIR/disagreements-explained.tsv`, per-rule counts on stdout).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rampart_waf::{files, injection, Engine, Request, RuleSet, TxOptions};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn pct_encode(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encode only the bytes a request target cannot carry (the corpora's "URL-encoded"
/// lines still hold spaces and other raw bytes).
fn target_safe(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s {
        if b <= 0x20 || b >= 0x7f || b"#\"<>\\^`{|}".contains(&b) {
            out.push_str(&format!("%{b:02X}"));
        } else {
            out.push(b as char);
        }
    }
    out
}

/// How a corpus stores its lines.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Already URL-encoded values (libinjection).
    Encoded,
    /// Raw payloads (PayloadsAllTheThings, ssrf.data).
    Raw,
    /// Whole query strings (modsec-learn).
    Query,
}

struct Set {
    slug: &'static str,
    name: &'static str,
    payloads: Vec<Vec<u8>>,
    kind: Kind,
    attack: bool,
}

/// The request target for one line in one form.
fn target_for(kind: Kind, peer_form: bool, p: &[u8]) -> String {
    let q = match (peer_form, kind) {
        (true, _) | (false, Kind::Raw) => format!("q={}", pct_encode(p)),
        (false, Kind::Encoded) => format!("q={}", target_safe(p)),
        (false, Kind::Query) => target_safe(p),
    };
    format!("/get?{q}")
}

fn request(target: &str) -> Request {
    let h = |k: &str, v: &str| (k.to_string(), v.as_bytes().to_vec());
    Request {
        method: "GET".into(),
        target: target.as_bytes().to_vec(),
        protocol: "HTTP/1.1".into(),
        headers: vec![
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
            h("Connection", "keep-alive"),
        ],
        remote_addr: "192.0.2.10".into(),
        remote_port: 40000,
        server_port: 80,
        ..Request::default()
    }
}

/// The bytes sent on the wire for `r` (also what the in-process front-end check sees).
fn raw(r: &Request) -> Vec<u8> {
    let mut v = format!(
        "{} {} {}\r\n",
        r.method,
        String::from_utf8_lossy(&r.target),
        r.protocol
    )
    .into_bytes();
    for (k, val) in &r.headers {
        v.extend_from_slice(k.as_bytes());
        v.extend_from_slice(b": ");
        v.extend_from_slice(val);
        v.extend_from_slice(b"\r\n");
    }
    v.extend_from_slice(b"\r\n");
    v
}

/// Rampart's verdict on one request target: (status, rule ids that scored); with `dump`, one
/// line with every matched rule (logged or not), its message, matched variable and data.
fn verdict(e: &Engine, target: &str, dump: Option<&mut dyn Write>) -> (u16, Vec<u64>) {
    let req = request(target);
    if let Err(why) = rampart_waf::body::front_check(&raw(&req)) {
        eprintln!("front end rejects {target}: {why}");
        return (400, Vec::new());
    }
    let mut tx = e.transaction(&req, &TxOptions::default());
    tx.process_request(&req);
    if let Some(out) = dump {
        let mut line = format!(
            "{target}\t{:?}",
            tx.intervention.as_ref().map(|i| i.rule_id)
        );
        for m in &tx.matched {
            line.push_str(&format!(
                "\t{}|{}|{}|{}|{}|{:?}",
                m.id, m.msg, m.logdata, m.matched_var_name, m.matched_data, m.tags
            ));
        }
        line.push_str(&format!(
            "\tscore={:?}",
            tx.tx_var("blocking_inbound_anomaly_score")
                .map(String::from_utf8_lossy)
        ));
        // A dump that cannot be written is reported once at the end by the caller's flush.
        let _ = writeln!(out, "{line}");
    }
    let ids = tx
        .matched
        .iter()
        .filter(|m| m.logged && m.id < 949000)
        .map(|m| m.id)
        .collect();
    (tx.intervention.as_ref().map_or(200, |i| i.status), ids)
}

fn lines(p: &Path) -> Vec<Vec<u8>> {
    std::fs::read(p)
        .map(|b| {
            b.split(|c| *c == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l).to_vec())
                .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
                .collect()
        })
        .unwrap_or_default()
}

fn dir_lines(d: &Path, prefix: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut ps: Vec<PathBuf> = std::fs::read_dir(d)
        .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    ps.sort();
    for p in ps {
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with(prefix) && name.ends_with(".txt") {
            out.extend(lines(&p));
        }
    }
    out
}

fn json_strings(p: &Path) -> Vec<Vec<u8>> {
    std::fs::read(p)
        .ok()
        .and_then(|b| serde_json::from_slice::<Vec<String>>(&b).ok())
        .map(|v| v.into_iter().map(String::into_bytes).collect())
        .unwrap_or_default()
}

fn sets(data: &Path) -> Vec<Set> {
    let crs = data.join("crs");
    let patt = data.join("payloadsallthethings");
    let li = data.join("libinjection");
    let ml = data.join("modsec-learn");
    let set = |slug, name, payloads, kind, attack| Set {
        slug,
        name,
        payloads,
        kind,
        attack,
    };
    vec![
        set(
            "li-sqli",
            "libinjection sqli",
            dir_lines(&li, "sqli-"),
            Kind::Encoded,
            true,
        ),
        set(
            "li-xss",
            "libinjection xss",
            dir_lines(&li, "xss-"),
            Kind::Encoded,
            true,
        ),
        set(
            "patt-sqli",
            "PayloadsAllTheThings sqli",
            dir_lines(&patt.join("sqli"), ""),
            Kind::Raw,
            true,
        ),
        set(
            "patt-xss",
            "PayloadsAllTheThings xss",
            dir_lines(&patt.join("xss"), ""),
            Kind::Raw,
            true,
        ),
        set(
            "patt-traversal",
            "PayloadsAllTheThings traversal",
            dir_lines(&patt.join("directory-traversal"), ""),
            Kind::Raw,
            true,
        ),
        set(
            "patt-lfi",
            "PayloadsAllTheThings file inclusion",
            dir_lines(&patt.join("file-inclusion"), ""),
            Kind::Raw,
            true,
        ),
        set(
            "patt-cmdi",
            "PayloadsAllTheThings command injection",
            dir_lines(&patt.join("command-injection"), ""),
            Kind::Raw,
            true,
        ),
        set(
            "crs-ssrf",
            "CRS ssrf.data",
            lines(&crs.join("rules/ssrf.data")),
            Kind::Raw,
            true,
        ),
        set(
            "ml-malicious",
            "modsec-learn malicious_test",
            json_strings(&ml.join("malicious_test.json")),
            Kind::Query,
            true,
        ),
        set(
            "ml-legit",
            "modsec-learn legitimate_test (benign)",
            json_strings(&ml.join("legitimate_test.json")),
            Kind::Query,
            false,
        ),
        set(
            "li-fp",
            "libinjection false_positives (benign)",
            lines(&li.join("false_positives.txt")),
            Kind::Encoded,
            false,
        ),
    ]
}

fn engine(data: &Path, pl: u8) -> Res<Engine> {
    let crs = data.join("crs");
    let mut rs = RuleSet::new();
    files::add_files(&mut rs, &[crs.join("crs-setup.conf.example")])?;
    files::add_inline(
        &mut rs,
        "bench-settings.conf",
        &format!("SecRuleEngine On\nSecAction \"id:8800001,phase:1,pass,nolog,setvar:tx.blocking_paranoia_level={pl}\"\n"),
        &crs,
    )?;
    files::add_files(&mut rs, &[crs.join("rules/*.conf")])?;
    rs.finish()?;
    Ok(Engine::new(rs))
}

/// One line of the request list.
struct Line {
    set: String,
    form: String,
    target: String,
}

fn read_requests(p: &Path) -> Res<Vec<Line>> {
    let text = std::fs::read_to_string(p)?;
    text.lines()
        .map(|l| {
            let mut f = l.splitn(3, '\t');
            match (f.next(), f.next(), f.next()) {
                (Some(s), Some(fm), Some(t)) => Ok(Line {
                    set: s.into(),
                    form: fm.into(),
                    target: t.into(),
                }),
                _ => Err(format!("bad request line {l:?}").into()),
            }
        })
        .collect()
}

fn emit(data: &Path, out: &Path) -> Res<()> {
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut n = 0usize;
    for s in sets(data) {
        if s.payloads.is_empty() {
            eprintln!("{}: no data", s.name);
        }
        for p in &s.payloads {
            if s.kind == Kind::Raw {
                writeln!(w, "{}\tboth\t{}", s.slug, target_for(s.kind, false, p))?;
                n += 1;
            } else {
                writeln!(w, "{}\trunner\t{}", s.slug, target_for(s.kind, false, p))?;
                writeln!(w, "{}\tpeer\t{}", s.slug, target_for(s.kind, true, p))?;
                n += 2;
            }
        }
    }
    w.flush()?;
    eprintln!("{n} requests written to {}", out.display());
    Ok(())
}

/// Runs `f` on every index of `0..n` from `threads` threads; results in index order.
fn parallel<T: Send + Default + Clone>(
    n: usize,
    threads: usize,
    f: impl Fn(usize, &mut Option<BufReader<TcpStream>>) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let mut out = vec![T::default(); n];
    let parts: Vec<Vec<(usize, T)>> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..threads.max(1))
            .map(|_| {
                sc.spawn(|| {
                    let mut conn = None;
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            break mine;
                        }
                        mine.push((i, f(i, &mut conn)));
                    }
                })
            })
            .collect();
        hs.into_iter().filter_map(|h| h.join().ok()).collect()
    });
    for (i, v) in parts.into_iter().flatten() {
        out[i] = v;
    }
    out
}

fn eval(data: &Path, pl: u8, reqs: &Path, out: &Path) -> Res<()> {
    let e = engine(data, pl)?;
    let ls = read_requests(reqs)?;
    let t = std::time::Instant::now();
    let res = parallel(ls.len(), 2, |i, _| verdict(&e, &ls[i].target, None));
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    for (status, ids) in &res {
        let ids: Vec<String> = ids.iter().map(u64::to_string).collect();
        writeln!(w, "{status}\t{}", ids.join(","))?;
    }
    w.flush()?;
    eprintln!(
        "rampart (in-process, 2 threads): {} requests in {:.1} s",
        ls.len(),
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Reads one HTTP/1.1 response; returns (status, connection reusable).
fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<(u16, bool)> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)?;
    let status: u16 = std::str::from_utf8(&line)
        .ok()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let (mut len, mut chunked, mut keep) = (None::<u64>, false, true);
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line)? == 0 {
            return Err(bad("eof in headers"));
        }
        let l = String::from_utf8_lossy(&line).trim().to_ascii_lowercase();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            match (k.trim(), v.trim()) {
                ("content-length", v) => len = v.parse().ok(),
                ("transfer-encoding", v) => chunked = v.contains("chunked"),
                ("connection", v) => keep = !v.contains("close"),
                _ => {}
            }
        }
    }
    let sink = &mut std::io::sink();
    if chunked {
        loop {
            line.clear();
            r.read_until(b'\n', &mut line)?;
            let size = String::from_utf8_lossy(&line);
            let size = size.split(';').next().unwrap_or("").trim();
            let size = u64::from_str_radix(size, 16).map_err(|_| bad("bad chunk size"))?;
            if size == 0 {
                loop {
                    line.clear();
                    if r.read_until(b'\n', &mut line)? <= 2 {
                        break;
                    }
                }
                break;
            }
            std::io::copy(&mut r.by_ref().take(size + 2), sink)?;
        }
    } else if let Some(n) = len {
        std::io::copy(&mut r.by_ref().take(n), sink)?;
    } else if !(status < 200 || status == 204 || status == 304) {
        std::io::copy(r, sink)?;
        keep = false;
    }
    Ok((status, keep))
}

/// Sends `req` on the (re)used connection; 0 when the server never answered.
fn roundtrip(conn: &mut Option<BufReader<TcpStream>>, addr: &str, req: &[u8]) -> u16 {
    for _ in 0..3 {
        if conn.is_none() {
            let Ok(s) = TcpStream::connect(addr) else {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            };
            // Failing socket options only cost speed or a longer wait on a hung server.
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
            *conn = Some(BufReader::new(s));
        }
        let Some(r) = conn.as_mut() else { continue };
        let res = r.get_mut().write_all(req).and_then(|()| read_response(r));
        match res {
            Ok((status, keep)) => {
                if !keep {
                    *conn = None;
                }
                return status;
            }
            // A keep-alive connection the server closed: reconnect and resend (GET).
            Err(_) => *conn = None,
        }
    }
    0
}

fn send(addr: &str, reqs: &Path, out: &Path, conns: usize) -> Res<()> {
    let ls = read_requests(reqs)?;
    let wire: Vec<Vec<u8>> = ls.iter().map(|l| raw(&request(&l.target))).collect();
    let t = std::time::Instant::now();
    let res = parallel(ls.len(), conns, |i, conn| roundtrip(conn, addr, &wire[i]));
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    for s in &res {
        writeln!(w, "{s}")?;
    }
    w.flush()?;
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "{addr}: {} requests in {secs:.1} s ({:.0} req/s, {conns} connections)",
        ls.len(),
        ls.len() as f64 / secs
    );
    Ok(())
}

fn report(data: &Path, reqs: &Path, ramp: &Path, peer: &Path, outdir: &Path) -> Res<()> {
    let ls = read_requests(reqs)?;
    let rl: Vec<(u16, String)> = std::fs::read_to_string(ramp)?
        .lines()
        .map(|l| {
            let (s, ids) = l.split_once('\t').unwrap_or((l, ""));
            (s.parse().unwrap_or(0), ids.to_string())
        })
        .collect();
    let pl: Vec<u16> = std::fs::read_to_string(peer)?
        .lines()
        .map(|l| l.trim().parse().unwrap_or(0))
        .collect();
    if rl.len() != ls.len() || pl.len() != ls.len() {
        return Err(format!(
            "{} requests, {} rampart verdicts, {} peer statuses",
            ls.len(),
            rl.len(),
            pl.len()
        )
        .into());
    }
    std::fs::create_dir_all(outdir)?;
    let mut dis = std::io::BufWriter::new(std::fs::File::create(outdir.join("disagreements.tsv"))?);
    writeln!(
        dis,
        "set\tform\trampart_status\trampart_rules\tmodsecurity_status\ttarget"
    )?;
    #[derive(Default)]
    struct Row {
        n: usize,
        r: usize,
        p: usize,
        r_only: usize,
        p_only: usize,
        r_other: usize,
        p_other: BTreeMap<u16, usize>,
    }
    let mut rows: BTreeMap<(String, String), Row> = BTreeMap::new();
    for (i, l) in ls.iter().enumerate() {
        let (rs, ids) = &rl[i];
        let ps = pl[i];
        let row = rows.entry((l.set.clone(), l.form.clone())).or_default();
        let (rb, pb) = (*rs == 403, ps == 403);
        row.n += 1;
        row.r += usize::from(rb);
        row.p += usize::from(pb);
        if !matches!(rs, 200 | 403) {
            row.r_other += 1;
        }
        if !matches!(ps, 200 | 403) {
            *row.p_other.entry(ps).or_default() += 1;
        }
        if rb != pb {
            if rb {
                row.r_only += 1;
            } else {
                row.p_only += 1;
            }
            writeln!(
                dis,
                "{}\t{}\t{rs}\t{ids}\t{ps}\t{}",
                l.set, l.form, l.target
            )?;
        }
    }
    dis.flush()?;
    let pct = |a: usize, n: usize| 100.0 * a as f64 / n.max(1) as f64;
    println!("| Corpus | Form | Requests | Rampart blocked | ModSecurity blocked | Rampart only | ModSecurity only | Other statuses |");
    println!("|---|---|---|---|---|---|---|---|");
    for s in sets(data) {
        for form in ["both", "runner", "peer"] {
            let Some(r) = rows.get(&(s.slug.to_string(), form.to_string())) else {
                continue;
            };
            let mut other = String::new();
            if r.r_other > 0 {
                other.push_str(&format!("Rampart 400: {}; ", r.r_other));
            }
            for (st, c) in &r.p_other {
                other.push_str(&format!("ModSecurity {st}: {c}; "));
            }
            println!(
                "| {} | {form} | {} | {:.2} % ({}) | {:.2} % ({}) | {} | {} | {} |",
                s.name,
                r.n,
                pct(r.r, r.n),
                r.r,
                pct(r.p, r.n),
                r.p,
                r.r_only,
                r.p_only,
                other.trim_end_matches("; ")
            );
        }
    }
    // Attack rows pooled (what anchors.md's "92.4 % of attack payloads" summarises), per form.
    for form in ["runner", "peer"] {
        let (mut n, mut r, mut p) = (0, 0, 0);
        for s in sets(data).iter().filter(|s| s.attack) {
            for f in ["both", form] {
                if let Some(row) = rows.get(&(s.slug.to_string(), f.to_string())) {
                    n += row.n;
                    r += row.r;
                    p += row.p;
                }
            }
        }
        println!(
            "all attack corpora, {form} form: Rampart {:.2} % ({r}/{n}), ModSecurity {:.2} % ({p}/{n})",
            pct(r, n),
            pct(p, n)
        );
    }
    eprintln!(
        "disagreements: {}",
        outdir.join("disagreements.tsv").display()
    );
    Ok(())
}

/// First column of each line of a verdict or status file.
fn statuses(p: &Path) -> Res<Vec<u16>> {
    Ok(std::fs::read_to_string(p)?
        .lines()
        .map(|l| {
            l.split('\t')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .unwrap_or(0)
        })
        .collect())
}

/// Rampart in-process against Rampart through its proxy: per set, how many statuses differ.
fn compare(reqs: &Path, a: &Path, b: &Path, out: &Path) -> Res<()> {
    let ls = read_requests(reqs)?;
    let (sa, sb) = (statuses(a)?, statuses(b)?);
    if sa.len() != ls.len() || sb.len() != ls.len() {
        return Err("request list and status files differ in length".into());
    }
    let mut w = std::io::BufWriter::new(std::fs::File::create(out)?);
    let mut per_set: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, l) in ls.iter().enumerate() {
        if sa[i] != sb[i] {
            *per_set.entry(&l.set).or_default() += 1;
            writeln!(
                w,
                "{}\t{}\t{}\t{}\t{}",
                l.set, l.form, sa[i], sb[i], l.target
            )?;
        }
    }
    w.flush()?;
    let total: usize = per_set.values().sum();
    println!(
        "in-process vs through the proxy: {total} of {} statuses differ {per_set:?}",
        ls.len()
    );
    Ok(())
}

/// Re-sends each disagreement alone and collects the `[id "…"]`s ModSecurity wrote to the
/// error log while answering it.
fn replay(addr: &str, log: &Path, outdir: &Path) -> Res<()> {
    let text = std::fs::read_to_string(outdir.join("disagreements.tsv"))?;
    let mut w = std::io::BufWriter::new(std::fs::File::create(
        outdir.join("disagreements-explained.tsv"),
    )?);
    writeln!(
        w,
        "set\tform\trampart_status\trampart_rules\tmodsecurity_status\tmodsecurity_rules\ttarget"
    )?;
    let mut conn = None;
    // (set, who blocked alone, rule) -> requests
    let mut by_rule: BTreeMap<(String, &str, String), usize> = BTreeMap::new();
    let id_re = regex::Regex::new(r#"\[id "(\d+)"\]"#)?;
    for l in text.lines().skip(1) {
        let f: Vec<&str> = l.splitn(6, '\t').collect();
        let [set, form, rs, rids, _ps, target] = f[..] else {
            continue;
        };
        let before = std::fs::metadata(log)?.len();
        let status = roundtrip(&mut conn, addr, &raw(&request(target)));
        // The rule messages are written before the response; a short wait covers the
        // scheduler.
        std::thread::sleep(Duration::from_millis(2));
        let mut f = std::fs::File::open(log)?;
        let mut grown = Vec::new();
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(before))?;
        f.read_to_end(&mut grown)?;
        let grown = String::from_utf8_lossy(&grown);
        let mut ids: Vec<String> = id_re
            .captures_iter(&grown)
            .filter_map(|c| c.get(1).map(|m| m.as_str().to_string()))
            .filter(|id| id.parse::<u64>().is_ok_and(|n| n < 949000))
            .collect();
        ids.dedup();
        let who = if rs == "403" {
            "rampart"
        } else {
            "modsecurity"
        };
        let rule_list: Vec<String> = if who == "rampart" {
            rids.split(',').map(String::from).collect()
        } else {
            ids.clone()
        };
        for id in rule_list.into_iter().filter(|s| !s.is_empty()) {
            *by_rule.entry((set.to_string(), who, id)).or_default() += 1;
        }
        writeln!(
            w,
            "{set}\t{form}\t{rs}\t{rids}\t{status}\t{}\t{target}",
            ids.join(",")
        )?;
    }
    w.flush()?;
    let mut cur = (String::new(), "");
    let mut line = String::new();
    for ((set, who, id), n) in &by_rule {
        if (set.clone(), *who) != cur {
            if !line.is_empty() {
                println!("{line}");
            }
            cur = (set.clone(), who);
            line = format!("{set}, blocked only by {who}: rules (requests)");
        }
        line.push_str(&format!(" {id}({n})"));
    }
    if !line.is_empty() {
        println!("{line}");
    }
    Ok(())
}

fn table(data: &Path, pl: u8, peer_form: bool, dump: Option<std::fs::File>) -> Res<()> {
    let e = engine(data, pl)?;
    let mut dump = dump.map(std::io::BufWriter::new);
    let form = if peer_form { "peer" } else { "runner" };
    println!("blocking mode, paranoia {pl}, threshold 5; GET /get?..., {form} form");
    for s in sets(data) {
        if s.payloads.is_empty() {
            println!("{}: no data", s.name);
            continue;
        }
        let t = std::time::Instant::now();
        let mut hits = 0usize;
        let mut by_rule: BTreeMap<u64, usize> = Default::default();
        for p in &s.payloads {
            let target = target_for(s.kind, peer_form, p);
            let (status, ids) = verdict(&e, &target, dump.as_mut().map(|d| d as &mut dyn Write));
            if status != 200 {
                hits += 1;
                for id in ids {
                    *by_rule.entry(id).or_default() += 1;
                }
            }
        }
        if !s.attack {
            let mut top: Vec<(u64, usize)> = by_rule.into_iter().collect();
            top.sort_by_key(|e| std::cmp::Reverse(e.1));
            top.truncate(8);
            println!("  rules in blocked benign requests: {top:?}");
        }
        println!(
            "{}: {hits}/{} blocked ({:.1}%), {:.0} µs/request",
            s.name,
            s.payloads.len(),
            100.0 * hits as f64 / s.payloads.len() as f64,
            t.elapsed().as_micros() as f64 / s.payloads.len() as f64
        );
    }
    if let Some(mut d) = dump {
        d.flush()?;
    }
    // The operators alone on libinjection's data (inputs URL-decoded first, as CRS does).
    let li = data.join("libinjection");
    let dec = |l: &[u8]| rampart_waf::transform::url_decode(l, true);
    for (name, set, sqli) in [
        (
            "@detectSQLi on libinjection sqli-*",
            dir_lines(&li, "sqli-"),
            true,
        ),
        (
            "@detectSQLi on libinjection false_positives",
            lines(&li.join("false_positives.txt")),
            true,
        ),
        (
            "@detectXSS on libinjection xss-*",
            dir_lines(&li, "xss-"),
            false,
        ),
        (
            "@detectXSS on libinjection false_positives",
            lines(&li.join("false_positives.txt")),
            false,
        ),
    ] {
        let hits = set
            .iter()
            .filter(|l| {
                let v = dec(l);
                if sqli {
                    injection::detect_sqli(&v).is_some()
                } else {
                    injection::detect_xss(&v)
                }
            })
            .count();
        println!(
            "{name}: {hits}/{} flagged ({:.1}%)",
            set.len(),
            100.0 * hits as f64 / set.len().max(1) as f64
        );
    }
    Ok(())
}

fn main() -> Res<()> {
    let mut data = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/data/waf"
    ));
    let mut pl = 1u8;
    let mut conns = 8usize;
    let mut peer_form = false;
    let mut dump = None;
    let mut mode: Option<(String, Vec<String>)> = None;
    let mut args = std::env::args().skip(1);
    let take = |args: &mut dyn Iterator<Item = String>, n: usize, what: &str| -> Res<Vec<String>> {
        let v: Vec<String> = args.take(n).collect();
        if v.len() == n {
            Ok(v)
        } else {
            Err(what.into())
        }
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = take(&mut args, 1, "--data DIR")?.remove(0).into(),
            "--pl" => pl = take(&mut args, 1, "--pl N")?[0].parse()?,
            "--conns" => conns = take(&mut args, 1, "--conns N")?[0].parse()?,
            "--form" => peer_form = take(&mut args, 1, "--form runner|peer")?[0] == "peer",
            "--dump" => {
                dump = Some(std::fs::File::create(
                    &take(&mut args, 1, "--dump FILE")?[0],
                )?)
            }
            "--emit" => mode = Some((a, take(&mut args, 1, "--emit REQS")?)),
            "--eval" => mode = Some((a, take(&mut args, 2, "--eval REQS OUT")?)),
            "--send" => mode = Some((a, take(&mut args, 3, "--send ADDR REQS OUT")?)),
            "--report" => {
                mode = Some((a, take(&mut args, 4, "--report REQS RAMPART PEER OUTDIR")?))
            }
            "--compare" => mode = Some((a, take(&mut args, 4, "--compare REQS A B OUT")?)),
            "--replay" => mode = Some((a, take(&mut args, 3, "--replay ADDR ERROR_LOG OUTDIR")?)),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    match mode {
        None => table(&data, pl, peer_form, dump),
        Some((m, v)) => match m.as_str() {
            "--emit" => emit(&data, Path::new(&v[0])),
            "--eval" => eval(&data, pl, Path::new(&v[0]), Path::new(&v[1])),
            "--send" => send(&v[0], Path::new(&v[1]), Path::new(&v[2]), conns),
            "--report" => report(
                &data,
                Path::new(&v[0]),
                Path::new(&v[1]),
                Path::new(&v[2]),
                Path::new(&v[3]),
            ),
            "--compare" => compare(
                Path::new(&v[0]),
                Path::new(&v[1]),
                Path::new(&v[2]),
                Path::new(&v[3]),
            ),
            _ => replay(&v[0], Path::new(&v[1]), Path::new(&v[2])),
        },
    }
}
