//! The layers of CONTRIBUTING.md's picture, held to the code (issue 26):
//! no import circle between modules, and the edges (cli/, http/) reach
//! the store, the audit log, ops and the unlock logic only through the
//! core (vault/).
//!
//! The graph is read from the sources as text: a module depends on
//! another when its code (comments and `#[cfg(test)] mod tests` left out)
//! names `crate::other…` or `super::other…`. A parent and its own child
//! modules are one family, not a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/vault/core.rs` → `vault::core`; `src/vault/mod.rs` → `vault`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its unit tests.
fn code_of(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Paths named after `prefix` (`crate::` or `super::`): `a::b::c`.
fn paths_after<'a>(code: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        out.push(rest[..end].trim_end_matches(':'));
    }
    out
}

struct Graph {
    modules: BTreeSet<String>,
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let files: Vec<PathBuf> = files
        .into_iter()
        .filter(|f| !f.ends_with("lib.rs") && !f.ends_with("main.rs"))
        .collect();
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        if module
            .split("::")
            .any(|p| p == "tests" || p.ends_with("_tests"))
        {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(file).unwrap());
        let parent = module.rsplit_once("::").map_or("", |(p, _)| p).to_string();
        let mut named: Vec<String> = paths_after(&code, "crate::")
            .into_iter()
            .map(str::to_string)
            .collect();
        named.extend(paths_after(&code, "super::").into_iter().map(|p| {
            if parent.is_empty() {
                p.to_string()
            } else {
                format!("{parent}::{p}")
            }
        }));
        for path in named {
            let segs: Vec<&str> = path.split("::").collect();
            let target = (1..=segs.len())
                .rev()
                .map(|k| segs[..k].join("::"))
                .find(|m| modules.contains(m));
            let Some(target) = target else { continue };
            let family = target == module
                || module.starts_with(&format!("{target}::"))
                || target.starts_with(&format!("{module}::"));
            if !family {
                edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    Graph { modules, edges }
}

/// The circles of the graph (strongly connected sets of two or more).
fn circles(g: &Graph) -> Vec<Vec<String>> {
    // Two modules are in one circle when each reaches the other.
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.to_string()];
        while let Some(m) = todo.pop() {
            for next in g.edges.get(&m).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> =
        g.modules.iter().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    let mut placed = BTreeSet::new();
    for m in &g.modules {
        if placed.contains(m) || !reached[m].contains(m) {
            continue;
        }
        let circle: Vec<String> = g
            .modules
            .iter()
            .filter(|o| *o == m || (reached[m].contains(*o) && reached[o].contains(m)))
            .cloned()
            .collect();
        placed.extend(circle.iter().cloned());
        out.push(circle);
    }
    out
}

#[test]
fn no_two_modules_import_each_other() {
    let g = graph();
    assert!(g.modules.len() > 50, "found only {:?}", g.modules);
    let found = circles(&g);
    assert!(found.is_empty(), "import circles: {found:?}");
}

#[test]
fn the_edges_reach_storage_audit_ops_and_unlock_only_through_the_core() {
    let g = graph();
    let below_core = ["store", "audit", "ops", "unlock"];
    let mut past_the_core = Vec::new();
    for (from, targets) in &g.edges {
        let edge = from.starts_with("cli") || from.starts_with("http") || from == "client";
        for to in targets {
            let top = to.split("::").next().unwrap_or("");
            if edge && below_core.contains(&top) {
                past_the_core.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(past_the_core.is_empty(), "{past_the_core:#?}");
}

#[test]
fn the_circle_finder_finds_a_circle() {
    // A check that cannot fail proves nothing: two modules naming each
    // other are found.
    let modules: BTreeSet<String> = ["a", "b", "c"].map(String::from).into();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    edges.entry("a".into()).or_default().insert("b".into());
    edges.entry("b".into()).or_default().insert("a".into());
    edges.entry("b".into()).or_default().insert("c".into());
    let found = circles(&Graph { modules, edges });
    assert_eq!(found, vec![vec!["a".to_string(), "b".to_string()]]);
    let code = "use crate::store::Store; // crate::audit\nfn f() { super::x::y(); }";
    assert_eq!(paths_after(&code_of(code), "crate::"), vec!["store::Store"]);
    assert_eq!(paths_after(&code_of(code), "super::"), vec!["x::y"]);
}
