//! The layers `src/lib.rs` draws hold: every `crate::` path in a module
//! names its own layer or one below (comments aside), and outside the
//! sources and the PostgreSQL client, only the files listed in
//! [`NAMES_THE_POSTGRES_SOURCE`] name the Postgres source (never a file of
//! the job, the pipeline or the sinks), a list that may only shrink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Files outside `source/` and `pg/` that name the Postgres source: the
/// command-line tools that are Postgres-only (`walpipe check` reads the
/// source's settings, `walpipe tail` streams a slot without a job).
const NAMES_THE_POSTGRES_SOURCE: &[&str] = &["cli/check.rs", "cli/tail.rs"];

/// What names the Postgres source, or its replication protocol, outside it.
const POSTGRES_SOURCE_NAMES: &[&str] = &["source::postgres", "SourceTarget::Postgres", "pg::Connection"];

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The layers in `src/lib.rs`'s drawing, bottom first: a line's names come
/// before its first double space.
fn layers() -> Vec<Vec<String>> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).expect("lib.rs");
    let drawing = lib.split("```text").nth(1).and_then(|rest| rest.split("```").next()).expect("a drawing");
    drawing
        .lines()
        .map(|line| line.trim_start_matches("//!").trim_start())
        .filter(|line| !line.is_empty())
        .filter_map(|line| line.split("  ").next())
        .map(|names| names.split_whitespace().map(str::to_string).collect())
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each file's path under `src/` and its code without comments.
fn sources() -> Vec<(String, String)> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files
        .into_iter()
        .map(|path| {
            let relative = path.strip_prefix(src()).expect("under src").to_string_lossy().replace('\\', "/");
            let text = std::fs::read_to_string(&path).expect("read");
            let code: Vec<&str> = text.lines().filter(|l| !l.trim_start().starts_with("//")).collect();
            (relative, code.join("\n"))
        })
        .collect()
}

fn top_module(relative: &str) -> &str {
    relative.split('/').next().expect("a part").trim_end_matches(".rs")
}

/// The top-level modules a file's code names through `crate::` (also as
/// `crate::{a, b::c}`).
fn named(code: &str) -> BTreeSet<String> {
    let first = |path: &str| -> String {
        path.trim().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect()
    };
    let mut names = BTreeSet::new();
    for rest in code.split("crate::").skip(1) {
        match rest.strip_prefix('{') {
            Some(group) => {
                let group = group.split('}').next().unwrap_or_default();
                names.extend(group.split(',').map(first).filter(|name| !name.is_empty()));
            }
            None => {
                names.insert(first(rest));
            }
        }
    }
    names
}

#[test]
fn every_module_imports_only_its_layer_and_those_below() {
    let layers = layers();
    let rank: BTreeMap<String, usize> =
        layers.iter().enumerate().flat_map(|(i, names)| names.iter().map(move |n| (n.clone(), i))).collect();
    let mut found = BTreeSet::new();
    for (file, code) in sources() {
        let module = top_module(&file);
        if module == "lib" || module == "main" {
            continue;
        }
        let own =
            *rank.get(module).unwrap_or_else(|| panic!("{module} ({file}) is not in src/lib.rs's drawing"));
        for target in named(&code) {
            let theirs =
                *rank.get(&target).unwrap_or_else(|| panic!("{file} names crate::{target}, not drawn"));
            if theirs > own {
                found.insert((module.to_string(), target, file.clone()));
            }
        }
    }
    assert!(found.is_empty(), "imports from a layer above: {found:#?}");
}

#[test]
fn only_the_listed_files_name_the_postgres_source_outside_it() {
    let naming: BTreeSet<String> = sources()
        .into_iter()
        .filter(|(file, _)| !file.starts_with("source/") && !file.starts_with("pg/"))
        .filter(|(_, code)| POSTGRES_SOURCE_NAMES.iter().any(|name| code.contains(name)))
        .map(|(file, _)| file)
        .collect();
    let listed: BTreeSet<String> = NAMES_THE_POSTGRES_SOURCE.iter().map(|f| f.to_string()).collect();
    let new: Vec<_> = naming.difference(&listed).collect();
    assert!(
        new.is_empty(),
        "these files name the Postgres source; use the seam (crate::source) instead: {new:?}"
    );
    let gone: Vec<_> = listed.difference(&naming).collect();
    assert!(
        gone.is_empty(),
        "these files no longer name the Postgres source: remove them from the list: {gone:?}"
    );
    for layer in ["job/", "pipeline/", "sink/", "change/", "chunked/", "checkpoint/", "metrics/"] {
        assert!(!naming.iter().any(|f| f.starts_with(layer)), "{layer} names the Postgres source");
    }
}
