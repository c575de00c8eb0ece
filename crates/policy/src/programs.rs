//! `[[programs]]` and `[jail]`: the programs the exec jail confines (per-program egress,
//! crate `rampart-jail`) and its settings, resolved into [`rampart_ir::Jail`]. Every element is
//! checked with the IR's own predicates ([`Jail::check_program_name`], ...), so the policy and
//! the jail's component configuration accept exactly the same programs; here each problem gets
//! its span. Rules then name a program in `owner = { program = [...] }`, which resolves to the
//! program's cgroup ([`Programs::cgroup`]).

use rampart_ir::{jail_limits, Jail, Program, Rule, Sha256};

use crate::ast::{self, S};
use crate::diag::{did_you_mean, Diags, Report};
use crate::resolve::techniques;
use crate::source::{SourceMap, Span};

/// The declared programs by name, for resolving `owner.program`.
#[derive(Debug, Default)]
pub(crate) struct Programs {
    /// The jail's cgroup root (`None`: no program is declared).
    root: Option<String>,
    /// Name → declaration span, in declaration order.
    names: Vec<(String, Span)>,
}

impl Programs {
    /// The cgroup of program `name`, or an `E0106` diagnostic at `at`.
    pub fn cgroup(&self, name: &S<String>, diags: &mut Diags) -> Option<String> {
        if let (Some(root), true) = (&self.root, self.names.iter().any(|(n, _)| *n == name.v)) {
            return Some(format!("{root}/{}", name.v));
        }
        let hint = did_you_mean(&name.v, self.names.iter().map(|(n, _)| n.as_str()))
            .unwrap_or_else(|| {
                if self.names.is_empty() {
                    "declare it in a `[[programs]]` table (name, paths) so the jail confines it"
                        .into()
                } else {
                    let known: Vec<&str> = self.names.iter().map(|(n, _)| n.as_str()).collect();
                    format!("declared programs: {}", known.join(", "))
                }
            });
        diags.push(
            Report::error("E0106", format!("unknown program `{}`", name.v))
                .label(name.span, "no `[[programs]]` entry has this name")
                .hint(hint),
        );
        None
    }

    /// A cgroup a rule names literally that lies directly below the jail's root but is no
    /// declared program's: the jail creates no such cgroup, so the rule matches nothing the
    /// jail confines (W0212).
    pub fn check_literal_cgroup(&self, cgroup: &S<String>, diags: &mut Diags) {
        let Some(root) = &self.root else {
            return;
        };
        let Some(rest) = cgroup
            .v
            .strip_prefix(root.as_str())
            .and_then(|r| r.strip_prefix('/'))
        else {
            return;
        };
        if rest.contains('/') || self.names.iter().any(|(n, _)| n == rest) {
            return;
        }
        diags.push(
            Report::warning(
                "W0212",
                format!(
                    "cgroup `{}` is below the jail's `{root}` but no program `{rest}` is declared",
                    cgroup.v
                ),
            )
            .label(cgroup.span, "no jailed program runs in this cgroup")
            .hint_opt(
                did_you_mean(rest, self.names.iter().map(|(n, _)| n.as_str())).or_else(|| {
                    Some(format!(
                        "declare `[[programs]]` name = \"{rest}\", or write `program = [\"...\"]`"
                    ))
                }),
            ),
        );
    }
}

/// Resolve every file's `[[programs]]` and its `[jail]` (one file at most).
pub(crate) fn resolve_jail(
    files: &[(crate::source::FileId, ast::File)],
    sources: &SourceMap,
    diags: &mut Diags,
) -> (Option<Jail>, Programs) {
    let mut jail_decl: Option<&ast::JailDecl> = None;
    for (_, f) in files {
        let Some(j) = &f.jail else { continue };
        match jail_decl {
            Some(first) => diags.push(
                Report::error("E0111", "`[jail]` is declared more than once")
                    .label(j.span, "declared again here")
                    .label(first.span, "first declared here"),
            ),
            None => jail_decl = Some(j),
        }
    }
    let decls: Vec<&ast::ProgramDecl> = files.iter().flat_map(|(_, f)| &f.programs).collect();
    if decls.len() > jail_limits::MAX_PROGRAMS {
        diags.push(
            Report::error(
                "E0005",
                format!("more than {} programs", jail_limits::MAX_PROGRAMS),
            )
            .label(decls[jail_limits::MAX_PROGRAMS].span, "one too many"),
        );
        return (None, Programs::default());
    }

    let errors_before = diags.error_count();
    let cgroup_root = match jail_decl.and_then(|j| j.cgroup_root.as_ref()) {
        Some(root) => {
            if let Err(e) = Jail::check_cgroup_root(&root.v) {
                diags.push(
                    Report::error("E0191", e.to_string())
                        .label(root.span, "not a usable cgroup path")
                        .hint("e.g. `rampart.jail`; the jail creates it below the cgroup v2 mount"),
                );
            }
            root.v.clone()
        }
        None => jail_limits::DEFAULT_CGROUP_ROOT.to_string(),
    };
    let (mounts_span, mounts) = match jail_decl.and_then(|j| j.watch_mounts.as_ref()) {
        Some((span, items)) => (Some(*span), items.as_slice()),
        None => (None, &[][..]),
    };
    if mounts.len() > jail_limits::MAX_WATCH_MOUNTS {
        diags.push(
            Report::error(
                "E0005",
                format!(
                    "`watch_mounts` lists more than {} mounts",
                    jail_limits::MAX_WATCH_MOUNTS
                ),
            )
            .label(mounts[jail_limits::MAX_WATCH_MOUNTS].span, "one too many"),
        );
    }
    for m in mounts {
        if !Jail::is_absolute_path(&m.v) {
            diags.push(
                Report::error(
                    "E0191",
                    format!("watch_mounts: `{}` is not an absolute path", m.v),
                )
                .label(m.span, "not absolute")
                .hint("name a mount point, e.g. `/` or `/home`"),
            );
        }
    }

    let mut programs: Vec<Program> = Vec::new();
    let mut names: Vec<(String, Span)> = Vec::new();
    let mut first_digest: Option<(String, Span)> = None;
    for d in &decls {
        let Some(name) = &d.name else {
            diags.push(
                Report::error("E0004", "program has no `name`")
                    .label(d.span, "this program needs `name`"),
            );
            continue;
        };
        let mut ok = true;
        if let Err(e) = Jail::check_program_name(&name.v) {
            diags.push(
                Report::error("E0190", e.to_string())
                    .label(name.span, "the name becomes a cgroup directory"),
            );
            ok = false;
        } else if let Some((_, prev)) = names.iter().find(|(n, _)| *n == name.v) {
            diags.push(
                Report::error("E0110", format!("duplicate program `{}`", name.v))
                    .label(name.span, "declared again here")
                    .label(*prev, "first declared here")
                    .hint("one `[[programs]]` entry per program: list all its paths there"),
            );
            ok = false;
        }
        let digests: &[S<String>] = d.sha256.as_ref().map_or(&[], |(_, v)| v.as_slice());
        if d.paths.is_empty() && digests.is_empty() {
            diags.push(
                Report::error(
                    "E0190",
                    format!("program `{}`: give paths, sha256 or both", name.v),
                )
                .label(name.span, "nothing identifies this program")
                .hint("`paths` catches the file and its hard links; `sha256` catches copies on `[jail] watch_mounts`"),
            );
            ok = false;
        }
        for (list, max, what) in [
            (
                d.paths.as_slice(),
                jail_limits::MAX_PATHS_PER_PROGRAM,
                "paths",
            ),
            (
                digests,
                jail_limits::MAX_DIGESTS_PER_PROGRAM,
                "sha256 digests",
            ),
        ] {
            if list.len() > max {
                diags.push(
                    Report::error(
                        "E0005",
                        format!("program `{}` lists more than {max} {what}", name.v),
                    )
                    .label(list[max].span, "one too many"),
                );
                ok = false;
            }
        }
        let mut paths = Vec::new();
        for p in d.paths.iter().take(jail_limits::MAX_PATHS_PER_PROGRAM) {
            if Jail::is_absolute_path(&p.v) {
                if !paths.contains(&p.v) {
                    paths.push(p.v.clone());
                }
            } else {
                diags.push(
                    Report::error(
                        "E0190",
                        format!("program `{}`: path `{}` is not absolute", name.v, p.v),
                    )
                    .label(p.span, "not an absolute path")
                    .hint("the jail watches the file itself: write its full path"),
                );
                ok = false;
            }
        }
        let mut sha256 = Vec::new();
        for h in digests.iter().take(jail_limits::MAX_DIGESTS_PER_PROGRAM) {
            match Sha256::from_hex(&h.v) {
                Some(digest) => {
                    if !sha256.contains(&digest) {
                        sha256.push(digest);
                    }
                    if first_digest.is_none() {
                        first_digest = Some((name.v.clone(), h.span));
                    }
                }
                None => {
                    diags.push(
                        Report::error(
                            "E0190",
                            format!(
                                "program `{}`: sha256 `{}` is not 64 hex digits",
                                name.v, h.v
                            ),
                        )
                        .label(h.span, "not a SHA-256 digest")
                        .hint("`sha256sum FILE` prints it"),
                    );
                    ok = false;
                }
            }
        }
        let mitigates = techniques(&d.mitigates, diags);
        names.push((name.v.clone(), name.span));
        if ok {
            programs.push(Program {
                name: name.v.clone(),
                paths,
                sha256,
                mitigates,
                loc: sources.loc(d.span),
            });
        }
    }
    match (&first_digest, mounts.is_empty()) {
        (Some((program, span)), true) => diags.push(
            Report::error(
                "E0191",
                format!("program `{program}` has sha256 but `[jail] watch_mounts` is empty: copies would never be seen"),
            )
            .label(*span, "matched only on watched mounts")
            .hint("add `watch_mounts = [\"/\"]` (or the mounts copies could land on) under `[jail]`"),
        ),
        (None, false) if !decls.is_empty() => diags.push(
            Report::error(
                "E0191",
                "`watch_mounts` is set but no program has sha256: nothing could match a copy",
            )
            .label(mounts_span.unwrap_or(decls[0].span), "hashes every exec for nothing")
            .hint("give the programs' `sha256`, or remove `watch_mounts`"),
        ),
        _ => {}
    }

    if decls.is_empty() {
        if let Some(j) = jail_decl {
            diags.push(
                Report::warning("W0211", "`[jail]` is set but no `[[programs]]` is declared")
                    .label(j.span, "nothing to jail")
                    .hint("declare the programs to confine in `[[programs]]`, or remove `[jail]`"),
            );
        }
        return (None, Programs::default());
    }
    let table = Programs {
        root: Some(cgroup_root.clone()),
        names,
    };
    if diags.error_count() > errors_before {
        return (None, table);
    }
    let loc = match jail_decl {
        Some(j) => sources.loc(j.span),
        None => sources.loc(decls[0].span),
    };
    let jail = Jail {
        cgroup_root,
        watch_mounts: dedup_strings(mounts),
        programs,
        loc,
    };
    // Why: the checks above cover every invariant with a span; this catches a divergence
    // between them and the IR's definition instead of handing the jail an invalid value.
    if let Err(e) = jail.check() {
        diags.push(
            Report::error("E0190", e.to_string())
                .label(jail_decl.map_or(decls[0].span, |j| j.span), "the jail"),
        );
        return (None, table);
    }
    (Some(jail), table)
}

fn dedup_strings(items: &[S<String>]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for i in items {
        if !out.contains(&i.v) {
            out.push(i.v.clone());
        }
    }
    out
}

/// W0210: a declared program no rule's owner names (directly or through its cgroup): it is
/// jailed, but nothing restricts its traffic.
pub(crate) fn unused_programs(jail: &Jail, programs: &Programs, rules: &[Rule], diags: &mut Diags) {
    // Why: one pass over the rules, not one per program (256 programs x 100,000 rules).
    let named: std::collections::HashSet<&str> = rules
        .iter()
        .filter_map(|r| r.owner.as_ref())
        .flat_map(|o| o.cgroups.iter().map(String::as_str))
        .collect();
    for p in &jail.programs {
        if named.contains(jail.cgroup_of(p).as_str()) {
            continue;
        }
        let Some((_, span)) = programs.names.iter().find(|(n, _)| *n == p.name) else {
            continue;
        };
        diags.push(
            Report::warning(
                "W0210",
                format!("program `{}` is jailed but no rule names it", p.name),
            )
            .label(*span, "its traffic is not restricted")
            .hint(format!(
                "add an egress rule with `owner = {{ program = [\"{}\"] }}` (e.g. action \"reject\")",
                p.name
            )),
        );
    }
}
