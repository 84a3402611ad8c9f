//! The layout rules of docs/ARCHITECTURE.md, checked on the source: the top-level
//! modules of `src/` import one another without a circle, no source file passes 600
//! lines and no function (Rust or WGSL) passes 80. Reads files only; no GPU.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 80;

fn files(dir: &str, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The sources the size rules cover: the library's Rust and WGSL, and the Burn op's
/// Rust (`burn/src`, a workspace crate of its own).
fn sources() -> Vec<PathBuf> {
    let mut out = files("src", "rs");
    out.extend(files("shaders", "wgsl"));
    if Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("burn/src")
        .is_dir()
    {
        out.extend(files("burn/src", "rs"));
    }
    out
}

/// The text without comments, strings and char literals (so braces and paths in them
/// count for nothing), line for line.
fn code_of(src: &str) -> Vec<String> {
    src.lines()
        .map(|l| {
            let mut out = String::new();
            let mut in_str = false;
            let mut chars = l.chars().peekable();
            while let Some(c) = chars.next() {
                match (in_str, c) {
                    (false, '/') if chars.peek() == Some(&'/') => break,
                    (false, '"') => in_str = true,
                    // a char literal ('{', '\''), not a lifetime ('a)
                    (false, '\'') => {
                        let rest: String = chars.clone().take(3).collect();
                        let skip = match rest.as_bytes() {
                            [b'\\', _, b'\''] => 3,
                            [_, b'\'', ..] => 2,
                            _ => 0,
                        };
                        for _ in 0..skip {
                            chars.next();
                        }
                    }
                    (true, '\\') => {
                        chars.next();
                    }
                    (true, '"') => in_str = false,
                    (false, _) => out.push(c),
                    (true, _) => {}
                }
            }
            out
        })
        .collect()
}

/// `src/a/b.rs` → `a`, `src/c.rs` → `c`.
fn top_module(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_string()
}

/// Names the crate root re-exports, and the module each comes from (lib.rs's
/// `pub use module::{A, B}`).
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let flat = code_of(lib).join(" ");
    for stmt in flat.split(';') {
        let Some(rest) = stmt.trim().strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, items)) = rest.split_once("::") else {
            continue;
        };
        for name in items.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if name.chars().next().is_some_and(char::is_uppercase) {
                names.insert(name.to_string(), module.trim().to_string());
            }
        }
    }
    names
}

/// The top-level modules that `code` names through `crate::`.
fn imports(code: &str, roots: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let heads: Vec<&str> = match rest.strip_prefix('{') {
            // `crate::{a::X, b}`: every path at the group's top level
            Some(group) => {
                let (mut depth, mut start, mut heads) = (0, 0, Vec::new());
                for (j, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            heads.push(&group[start..j]);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => {
                            heads.push(&group[start..j]);
                            start = j + 1;
                        }
                        _ => {}
                    }
                }
                heads
            }
            None => vec![rest],
        };
        for h in heads {
            let name: String = h
                .trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            match roots.get(&name) {
                Some(module) => out.insert(module.clone()),
                None if !name.is_empty() => out.insert(name),
                None => false,
            };
        }
    }
    out
}

#[test]
fn top_level_modules_import_without_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let roots = root_names(&std::fs::read_to_string(src.join("lib.rs")).unwrap());
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files("src", "rs") {
        let module = top_module(&src, &f);
        if module == "lib" || module == "main" {
            continue;
        }
        let code = code_of(&std::fs::read_to_string(&f).unwrap()).join("\n");
        let deps = graph.entry(module.clone()).or_default();
        deps.extend(imports(&code, &roots).into_iter().filter(|d| *d != module));
    }
    // depth-first search; a module met again on the current path closes a circle
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        circles: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == m) {
            circles.push(format!("{} -> {m}", path[i..].join(" -> ")));
            return;
        }
        if !done.insert(m.to_string()) {
            return;
        }
        path.push(m.to_string());
        for d in graph.get(m).into_iter().flatten() {
            visit(d, graph, path, done, circles);
        }
        path.pop();
    }
    let mut circles = Vec::new();
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        visit(m, &graph, &mut Vec::new(), &mut done, &mut circles);
    }
    assert!(graph.len() > 5, "found only {graph:?}");
    assert!(
        circles.is_empty(),
        "import circles: {circles:#?}\nthe graph: {graph:#?}"
    );
}

/// Functions longer than [`MAX_FN_LINES`], from the line of `fn` to its closing brace.
fn long_functions(file: &Path) -> Vec<String> {
    let code = code_of(&std::fs::read_to_string(file).unwrap());
    let mut out = Vec::new();
    for (i, line) in code.iter().enumerate() {
        let t = line.trim_start();
        let is_fn = t.split_whitespace().take(5).any(|w| w == "fn")
            && !t.starts_with("let ")
            && !t.contains("fn(");
        if !is_fn {
            continue;
        }
        let (mut depth, mut opened) = (0i32, false);
        for (j, l) in code[i..].iter().enumerate() {
            if !opened && l.contains(';') && !l.contains('{') {
                break;
            }
            for c in l.chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if opened && depth == 0 {
                if j + 1 > MAX_FN_LINES {
                    out.push(format!("{}:{} ({} lines)", file.display(), i + 1, j + 1));
                }
                break;
            }
        }
    }
    out
}

#[test]
fn no_function_is_over_80_lines() {
    let mut long = Vec::new();
    for f in sources() {
        long.extend(long_functions(&f));
    }
    assert!(
        long.is_empty(),
        "functions over {MAX_FN_LINES} lines: {long:#?}"
    );
}

#[test]
fn no_source_file_is_over_600_lines() {
    let long: Vec<String> = sources()
        .into_iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_FILE_LINES} lines: {long:#?}"
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // a circle, a long function and the comment stripping, on made-up text
    let roots = root_names("pub use context::{Context, Paths};\npub use loss::PolicyLoss;");
    assert_eq!(roots["Paths"], "context");
    let deps = imports(
        "use crate::{kernels::{A, B}, view::C, Context};\nlet x = crate::loss::y;",
        &roots,
    );
    let want: BTreeSet<String> = ["kernels", "view", "context", "loss"]
        .map(String::from)
        .into();
    assert_eq!(deps, want);
    assert_eq!(code_of("a // crate::x\n\"{\" b '}' 'a"), ["a ", " b  a"]);
    let dir = std::env::temp_dir().join(format!("structure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("long.rs");
    let body: String = (0..MAX_FN_LINES).map(|_| "    x();\n").collect();
    std::fs::write(&f, format!("fn short() {{}}\nfn long() {{\n{body}}}\n")).unwrap();
    let found = long_functions(&f);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
}
