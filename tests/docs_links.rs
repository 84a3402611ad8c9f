//! The README and the documents under docs/ link only to files of the repository that
//! exist, and to headings those files have: a clone never meets a dead link.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The markdown files checked: the README, BENCHMARKS and docs/*.md.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/ is readable")
        .map(|e| e.expect("a docs/ entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// GitHub's anchor of a heading: lower case, punctuation dropped (`-` and `_` kept),
/// spaces as `-`.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

/// The text outside code fences and inline code spans.
fn prose(text: &str) -> String {
    let mut out = String::new();
    let mut fence = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
            continue;
        }
        if !fence {
            // inline code holds `](` in examples, never a link
            let parts: Vec<&str> = line.split('`').collect();
            for (i, p) in parts.iter().enumerate() {
                if i % 2 == 0 {
                    out.push_str(p);
                }
            }
            out.push('\n');
        }
    }
    out
}

fn anchors(path: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(path).expect("a linked document is readable");
    let mut fence = false;
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fence = !fence;
        } else if !fence && line.starts_with('#') {
            out.insert(slug(line.trim_start_matches('#')));
        }
    }
    out
}

/// Every `](target)` of the prose.
fn links(text: &str) -> Vec<String> {
    let p = prose(text);
    p.match_indices("](")
        .filter_map(|(at, _)| {
            let rest = &p[at + 2..];
            rest.find(')').map(|end| rest[..end].to_string())
        })
        .collect()
}

#[test]
fn every_link_of_the_documents_resolves_inside_the_repository() {
    let root = root().canonicalize().expect("the repository root");
    let mut checked = 0;
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("a document is readable");
        let dir = doc.parent().expect("a document's folder");
        for link in links(&text) {
            if link.starts_with("http://") || link.starts_with("https://") {
                continue;
            }
            let (file, anchor) = link.split_once('#').unwrap_or((&link, ""));
            let target = if file.is_empty() {
                doc.clone()
            } else {
                dir.join(file)
            };
            let name = doc
                .strip_prefix(&root)
                .unwrap_or(&doc)
                .display()
                .to_string();
            let resolved = target
                .canonicalize()
                .unwrap_or_else(|_| panic!("{name}: `{link}` names no file"));
            assert!(
                resolved.starts_with(&root),
                "{name}: `{link}` points outside the repository"
            );
            if !anchor.is_empty() {
                assert!(
                    anchors(&resolved).contains(anchor),
                    "{name}: `{link}`: no heading with that anchor"
                );
            }
            checked += 1;
        }
    }
    assert!(
        checked > 20,
        "only {checked} links found: the parser is broken"
    );
}

#[test]
fn anchors_follow_github() {
    assert_eq!(
        slug(" The sampler's distribution"),
        "the-samplers-distribution"
    );
    assert_eq!(
        slug(" Check us against PyTorch: `eval`"),
        "check-us-against-pytorch-eval"
    );
}
