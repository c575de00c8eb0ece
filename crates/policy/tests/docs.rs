//! `docs/policy.md` stays true to the code: its generated reference (services, ICMP types,
//! profiles) must match the catalogue, and every diagnostic code the crate can emit must be
//! documented. `UPDATE_GOLDEN=1` rewrites the generated section.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rampart_policy::profiles::{PeerSpec, Protect, ServiceSpec, COMMON_PARAMS};

const BEGIN: &str =
    "<!-- BEGIN GENERATED REFERENCE (crates/policy/tests/docs.rs; UPDATE_GOLDEN=1 regenerates) -->";
const END: &str = "<!-- END GENERATED REFERENCE -->";

fn doc_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/policy.md")
}

fn peer(p: PeerSpec) -> String {
    match p {
        PeerSpec::Any => "any".into(),
        PeerSpec::Param(n) => format!("`{n}`"),
        PeerSpec::ParamOrPublicZones(n) => format!("`{n}` (default: public-facing zones)"),
        PeerSpec::ParamOrTrustedZones(n) => format!("`{n}` (default: trusted zones)"),
        PeerSpec::Fixed(a) => a.join(", "),
    }
}

fn services(s: ServiceSpec) -> String {
    match s {
        ServiceSpec::Any => "any".into(),
        ServiceSpec::Named(n) => n.join(", "),
        ServiceSpec::ParamOr(p, n) => format!("`{p}` (default: {})", n.join(", ")),
        ServiceSpec::DhcpServerReplies => "udp 67→68, udp 547→546".into(),
        ServiceSpec::Param(p) => format!("`{p}`"),
        ServiceSpec::Literal(l) => l.join(", "),
        ServiceSpec::TcpExcept(n) => format!("tcp except {}", n.join(", ")),
    }
}

fn protect(p: Protect) -> String {
    match p {
        Protect::None => String::new(),
        Protect::Synproxy => ", SYN proxy".into(),
        Protect::Limits => {
            ", per-source `rate`/`burst`, `conn_limit`, `ban` (SYN proxy with `synproxy = true`)"
                .into()
        }
        Protect::App { protocols, negate } => format!(
            ", {} = [{}]",
            if negate { "app_not" } else { "app" },
            protocols
                .iter()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn generate() -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Reference: built-in services\n");
    let _ = writeln!(out, "| Service | Matches | Notes |\n|---|---|---|");
    for s in rampart_policy::service_catalogue() {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            s.name,
            s.spec.join(", "),
            s.description
        );
    }
    let _ = writeln!(out, "\n### ICMP type names\n");
    let names = |t: &[(&str, u8)]| {
        t.iter()
            .map(|(n, v)| format!("`{n}` ({v})"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "* `icmp/`: {}",
        names(rampart_policy::services::ICMP_TYPES)
    );
    let _ = writeln!(
        out,
        "* `icmpv6/`: {}",
        names(rampart_policy::services::ICMPV6_TYPES)
    );
    let _ = writeln!(out, "\n## Reference: built-in profiles\n");
    let _ = writeln!(
        out,
        "Every profile also takes the common parameters: {}.\n",
        COMMON_PARAMS
            .iter()
            .map(|(n, _)| format!("`{n}`"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in rampart_policy::profiles() {
        let _ = writeln!(out, "### `{}`\n", p.name);
        let _ = writeln!(out, "{}\n", p.description);
        let techniques: Vec<String> = p
            .techniques
            .iter()
            .map(|t| {
                let name = rampart_attack::lookup(t).map_or("?", |x| x.name);
                format!("{t} {name}")
            })
            .collect();
        let _ = writeln!(out, "Techniques: {}.\n", techniques.join("; "));
        if p.after_by_default {
            let _ = writeln!(out, "Placed after the user rules by default.\n");
        }
        if p.parameters.is_empty() {
            let _ = writeln!(out, "Parameters: none besides the common ones.\n");
        } else {
            let _ = writeln!(
                out,
                "| Parameter | Kind | Required | Meaning |\n|---|---|---|---|"
            );
            for a in p.parameters {
                let _ = writeln!(
                    out,
                    "| `{}` | {:?} | {} | {} |",
                    a.name,
                    a.kind,
                    if a.required { "yes" } else { "no" },
                    a.description
                );
            }
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "| Part | Direction | Verdict | From | To | Services |\n|---|---|---|---|---|---|"
        );
        for part in p.parts {
            let mut verdict = if part.allow { "accept" } else { "drop" }.to_string();
            if let Some(n) = part.needs {
                verdict += &format!(" (only with `{n}`)");
            }
            if let Some(n) = part.unless {
                verdict += &format!(" (only without `{n}`)");
            }
            if part.owner {
                verdict += ", owner = `owner`";
            }
            verdict += &protect(part.protect);
            let _ = writeln!(
                out,
                "| `{}` | {} | {} | {} | {} | {} |",
                part.name,
                part.direction,
                verdict,
                peer(part.from),
                peer(part.to),
                services(part.services)
            );
        }
        out.push('\n');
    }
    out
}

#[test]
fn generated_reference_is_current() {
    let path = doc_path();
    let doc = std::fs::read_to_string(&path).unwrap();
    let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("docs/policy.md lacks the generated-reference markers");
    };
    let current = &doc[b + BEGIN.len()..e];
    let wanted = format!("\n{}", generate());
    if current != wanted {
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            let updated = format!("{}{BEGIN}{wanted}{}", &doc[..b], &doc[e..]);
            std::fs::write(&path, updated).unwrap();
        } else {
            panic!("docs/policy.md generated reference is stale: run UPDATE_GOLDEN=1 cargo test -p rampart-policy --test docs");
        }
    }
}

#[test]
fn every_diagnostic_code_is_documented() {
    let doc = std::fs::read_to_string(doc_path()).unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut codes = Vec::new();
    for entry in std::fs::read_dir(src).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        for (i, _) in text.match_indices("\"E0").chain(text.match_indices("\"W0")) {
            let code = &text[i + 1..i + 6];
            if code[1..].chars().all(|c| c.is_ascii_digit()) {
                codes.push(code.to_string());
            }
        }
    }
    codes.sort();
    codes.dedup();
    assert!(codes.len() > 30, "{codes:?}");
    for code in codes {
        assert!(
            doc.contains(&format!("| {code} |")),
            "{code} is not documented in docs/policy.md"
        );
    }
}

/// The TOML snippets of the "Recipes" section load together without errors or warnings (with
/// an `internet` zone and a one-line `blocklist.txt` supplied here).
#[test]
fn recipes_load() {
    let doc = std::fs::read_to_string(doc_path()).unwrap();
    let start = doc.find("## Recipes").expect("Recipes section");
    let end = doc[start..]
        .find("\n## ")
        .map_or(doc.len(), |i| start + 1 + i);
    let section = &doc[start..end];
    let mut policy = String::from("[zones.internet]\ninterfaces = [\"wan0\"]\n");
    let mut blocks = 0;
    let mut rest = section;
    while let Some(i) = rest.find("```toml\n") {
        let body = &rest[i + 8..];
        let j = body.find("```").expect("closed block");
        policy.push('\n');
        policy.push_str(&body[..j]);
        rest = &body[j + 3..];
        blocks += 1;
    }
    assert!(blocks >= 4, "{blocks} recipe blocks");
    let mut read = |name: &str| match name {
        "recipes.toml" => Ok(policy.clone()),
        "blocklist.txt" => Ok("198.51.100.66\n".to_string()),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            other.to_string(),
        )),
    };
    match rampart_policy::load_with("recipes.toml", &mut read) {
        Ok(l) => assert!(
            l.warnings.is_empty(),
            "{}",
            rampart_policy::render_all(&l.warnings, &l.sources)
        ),
        Err(e) => panic!("recipes do not load:\n{e}"),
    }
}
