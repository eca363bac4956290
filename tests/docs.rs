//! The documentation: the reference pages are what the code generates
//! (`cli::reference`), the book builds with mdBook, and every link inside
//! the built book leads to a page or an anchor that exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn docs() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
}

#[test]
fn the_reference_pages_are_the_ones_the_code_generates() {
    let folder = docs().join("src/reference");
    let update = std::env::var_os("WALPIPE_UPDATE_DOCS").is_some();
    for (file, generated) in walpipe::cli::reference::pages().expect("the configuration table") {
        let path = folder.join(file);
        if update {
            std::fs::write(&path, &generated).expect("write the page");
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/src/reference/{file} is stale: run WALPIPE_UPDATE_DOCS=1 cargo test --test docs and commit it"
        );
    }
}

/// `href`s and `src`s of a built page that point inside the book (not `http:`,
/// `https:` or `mailto:`), as (file, anchor).
fn local_links(page: &str) -> Vec<(String, Option<String>)> {
    ["href=\"", "src=\""]
        .iter()
        .flat_map(|attribute| page.split(attribute).skip(1))
        .filter_map(|rest| rest.split('"').next())
        .filter(|href| !href.contains(':') && !href.is_empty())
        .map(|href| match href.split_once('#') {
            Some((file, anchor)) => (file.to_string(), Some(anchor.to_string())),
            None => (href.to_string(), None),
        })
        .collect()
}

fn html_files(folder: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(folder).expect("the built book").flatten() {
        let path = entry.path();
        if path.is_dir() {
            html_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "html") {
            found.push(path);
        }
    }
}

#[test]
fn the_book_builds_and_its_links_lead_somewhere() {
    let mdbook = std::env::var_os("TEST_MDBOOK")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/mdbook"), PathBuf::from);
    assert!(
        mdbook.exists(),
        "{} is missing: scripts/test.sh installs mdbook (or set TEST_MDBOOK)",
        mdbook.display()
    );
    let out = tempfile::tempdir().expect("a build folder");
    let status = std::process::Command::new(mdbook)
        .args(["build", "--dest-dir"])
        .arg(out.path())
        .arg(docs())
        .status()
        .expect("run mdbook");
    assert!(status.success(), "mdbook build failed");
    let mut pages = Vec::new();
    html_files(out.path(), &mut pages);
    assert!(pages.len() > 10, "the book has its pages: {pages:?}");
    let mut broken = BTreeSet::new();
    for page in &pages {
        let text = std::fs::read_to_string(page).expect("a page");
        for (file, anchor) in local_links(&text) {
            let target =
                if file.is_empty() { page.clone() } else { page.parent().expect("a folder").join(&file) };
            let target_text = std::fs::read_to_string(&target).ok();
            let ok = match (&target_text, &anchor) {
                (None, _) => target.is_dir() || target.exists(),
                (Some(_), None) => true,
                (Some(text), Some(anchor)) => text.contains(&format!("id=\"{anchor}\"")),
            };
            if !ok {
                let shown = page.strip_prefix(out.path()).unwrap_or(page).display().to_string();
                broken.insert(format!("{shown}: {file}#{}", anchor.unwrap_or_default()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "links that lead nowhere:\n{}",
        broken.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn the_drill_plot_in_the_book_is_the_drill_evidence() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let evidence = std::fs::read(root.join("drills/evidence/stalled-slot-A.png")).expect("the drill's plot");
    let shown = std::fs::read(docs().join("src/images/stalled-slot-A.png")).expect("the book's copy");
    assert!(
        evidence == shown,
        "copy drills/evidence/stalled-slot-A.png to docs/src/images/ (the book can show only its own files)"
    );
}
