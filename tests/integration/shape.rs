//! The shape of `src/` that docs/ARCHITECTURE.md promises: no two modules
//! import each other, directly or round a loop, and no file grows past what
//! a reader takes in at once. Read from the source text, so a cycle fails
//! here with the lines that make it instead of surviving review.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside the crate: `["config", "pins"]` for `crate::config::pins`.
type ModPath = Vec<String>;

/// Lines a file under `src/` may have; past it, split the file along what it owns.
const MOST_LINES: usize = 600;

/// Files allowed past [`MOST_LINES`], each with the reason a split would cost more than it gives.
const LONG_FILES: &[(&str, &str)] = &[
    (
        "src/outbox/queue/mod.rs",
        "the queue's state machine (push, next to send, spill, answers): one story best read in one place",
    ),
    (
        "src/outbox/spool/mod.rs",
        "the spool's public face and the format's promises, each method documented; the rest is already split out",
    ),
];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|x| x == "rs") {
            found.push(path);
        }
    }
}

/// The module a file defines: `src/a/mod.rs` and `src/a.rs` are `a`, `src/a/b.rs` is `a::b`.
fn module_of(file: &Path) -> ModPath {
    let relative = file.strip_prefix(src()).expect("file under src/");
    let mut parts: ModPath = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if !matches!(stem, "mod" | "lib" | "main") {
        parts.push(stem.to_string());
    }
    parts
}

/// Unit-test code may reach anywhere: it is not part of the design's graph.
fn is_test_file(module: &ModPath) -> bool {
    module
        .last()
        .is_some_and(|m| m == "tests" || m == "testing" || m.ends_with("_tests"))
}

/// The text of a file up to its inline `#[cfg(test)] mod tests`, without comments.
fn design_text(text: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut previous_was_cfg_test = false;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if previous_was_cfg_test && trimmed.starts_with("mod tests") && trimmed.ends_with('{') {
            break;
        }
        previous_was_cfg_test = trimmed == "#[cfg(test)]";
        if trimmed.starts_with("//") {
            continue;
        }
        lines.push((n + 1, line.to_string()));
    }
    lines
}

fn ident(text: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < text.len() && (text[i].is_ascii_alphanumeric() || text[i] == b'_') {
        i += 1;
    }
    (String::from_utf8_lossy(&text[start..i]).into_owned(), i)
}

/// Every path a line names through `crate::` or `super::`, groups expanded:
/// `use super::{a, b::c}` gives `super::a` and `super::b::c`.
fn paths_in(line: &str) -> Vec<Vec<String>> {
    let text = line.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let word_start = i == 0 || !(text[i - 1].is_ascii_alphanumeric() || text[i - 1] == b'_');
        let root = ["crate::", "super::"]
            .into_iter()
            .find(|r| word_start && text[i..].starts_with(r.as_bytes()));
        match root {
            Some(r) => {
                let head = vec![r.trim_end_matches("::").to_string()];
                i = path_from(text, i + r.len(), head, &mut found);
            }
            None => i += 1,
        }
    }
    found
}

/// Reads `a::b::{c, d}` after a `::`, pushing each whole path; returns where it stopped.
fn path_from(
    text: &[u8],
    mut i: usize,
    mut path: Vec<String>,
    found: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        if text.get(i) == Some(&b'{') {
            i += 1;
            loop {
                while matches!(text.get(i), Some(b' ' | b',')) {
                    i += 1;
                }
                match text.get(i) {
                    None => return i,
                    Some(b'}') => return i + 1,
                    _ => {}
                }
                let before = i;
                i = path_from(text, i, path.clone(), found);
                if i == before {
                    i += 1;
                }
            }
        }
        let (word, next) = ident(text, i);
        if word.is_empty() {
            found.push(path);
            return i;
        }
        path.push(word);
        i = next;
        if text[i..].starts_with(b"::") {
            i += 2;
        } else {
            found.push(path);
            return i;
        }
    }
}

/// The module a path lands in: its longest prefix that is a module.
fn resolve(from: &ModPath, path: &[String], modules: &BTreeSet<ModPath>) -> ModPath {
    let mut base: ModPath = Vec::new();
    let mut rest = path;
    if path.first().is_some_and(|p| p == "super") {
        // In `a/b.rs` (module a::b) `super` is `a`; in `a/b/mod.rs` too.
        base = from.clone();
        while rest.first().is_some_and(|p| p == "super") {
            base.pop();
            rest = &rest[1..];
        }
    } else {
        rest = &rest[1..];
    }
    let mut best = base.clone();
    let mut candidate = base;
    for part in rest {
        candidate.push(part.clone());
        if modules.contains(&candidate) {
            best = candidate.clone();
        }
    }
    best
}

/// An edge between two sibling modules, the children of the lowest common
/// ancestor on each side; nothing when one contains the other.
fn sibling_edge(from: &ModPath, to: &ModPath) -> Option<(ModPath, ModPath)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

fn name(m: &ModPath) -> String {
    m.join("::")
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(edges: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<ModPath>> {
    struct State<'a> {
        edges: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<ModPath, usize>,
        low: BTreeMap<ModPath, usize>,
        stack: Vec<ModPath>,
        on_stack: BTreeSet<ModPath>,
        found: Vec<Vec<ModPath>>,
    }
    fn visit(s: &mut State<'_>, v: &ModPath) {
        let n = s.index.len();
        s.index.insert(v.clone(), n);
        s.low.insert(v.clone(), n);
        s.stack.push(v.clone());
        s.on_stack.insert(v.clone());
        for w in s.edges.get(v).into_iter().flatten() {
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v.clone(), low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v.clone(), low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(&w);
                let done = &w == v;
                component.push(w);
                if done {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v) {
            visit(&mut s, v);
        }
    }
    s.found
}

#[test]
fn no_module_imports_one_that_imports_it_back() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.retain(|f| !f.ends_with("main.rs"));
    let modules: BTreeSet<ModPath> = files.iter().map(|f| module_of(f)).collect();
    let mut edges: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    let mut witness: BTreeMap<(ModPath, ModPath), String> = BTreeMap::new();
    for file in &files {
        let from = module_of(file);
        if is_test_file(&from) {
            continue;
        }
        let text = std::fs::read_to_string(file).expect("source is UTF-8");
        for (line_number, line) in design_text(&text) {
            for path in paths_in(&line) {
                let to = resolve(&from, &path, &modules);
                if let Some((a, b)) = sibling_edge(&from, &to) {
                    edges.entry(a.clone()).or_default().insert(b.clone());
                    let relative = file.strip_prefix(src()).expect("under src");
                    witness.entry((a, b)).or_insert_with(|| {
                        format!("src/{}:{line_number}: {}", relative.display(), line.trim())
                    });
                }
            }
        }
    }
    let mut report = String::new();
    for component in cycles(&edges) {
        let names: Vec<_> = component.iter().map(name).collect();
        report.push_str(&format!("cycle among {}:\n", names.join(", ")));
        for a in &component {
            for b in edges.get(a).into_iter().flatten() {
                if component.contains(b) {
                    let line = &witness[&(a.clone(), b.clone())];
                    report.push_str(&format!("  {} -> {}  ({line})\n", name(a), name(b)));
                }
            }
        }
    }
    assert!(
        report.is_empty(),
        "modules that import each other:\n{report}"
    );
}

#[test]
fn a_cycle_through_a_use_group_is_seen() {
    let modules: BTreeSet<ModPath> = [
        vec!["config".to_string()],
        vec!["config".into(), "build".into()],
        vec!["config".into(), "pins".into()],
    ]
    .into_iter()
    .collect();
    let pins = vec!["config".to_string(), "pins".into()];
    let paths = paths_in("use super::{build::{Origins, duration}, Input};");
    let targets: Vec<_> = paths.iter().map(|p| resolve(&pins, p, &modules)).collect();
    assert!(
        targets.contains(&vec!["config".to_string(), "build".into()]),
        "{targets:?}"
    );
    let mut edges = BTreeMap::new();
    edges.insert(
        pins.clone(),
        BTreeSet::from([vec!["config".to_string(), "build".into()]]),
    );
    edges.insert(
        vec!["config".to_string(), "build".into()],
        BTreeSet::from([pins.clone()]),
    );
    assert_eq!(cycles(&edges).len(), 1);
}

#[test]
fn no_source_file_is_longer_than_a_reader_takes_in() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for file in &files {
        let relative = file
            .strip_prefix(src().parent().expect("repo"))
            .expect("under repo");
        let relative = relative.to_string_lossy();
        let lines = std::fs::read_to_string(file)
            .expect("source is UTF-8")
            .lines()
            .count();
        let excused = LONG_FILES.iter().any(|(path, _)| *path == relative);
        if lines > MOST_LINES && !excused {
            long.push(format!("{relative}: {lines} lines"));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MOST_LINES} lines (split them along what they own, or add them to LONG_FILES with why):\n{}",
        long.join("\n")
    );
}
