//! Every file's declared interface against what it uses, in every variant: a name a
//! file uses that another file of the module defines is in its `// requires:`, every
//! name it requires is defined by another file of every module it is in, and no name
//! is defined twice in a module.

use std::collections::{BTreeMap, BTreeSet};

use super::super::abi::Decl;
use super::super::variants::shader_variants;

/// The code of a file, without its comments.
fn code(src: &str) -> String {
    src.lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn idents(code: &str) -> BTreeSet<&str> {
    code.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_'))
        .collect()
}

/// The module-scope names a file defines: functions, structs, constants, overrides,
/// module variables and aliases, each declared at the start of a line.
fn defines(code: &str) -> BTreeSet<&str> {
    let mut out = BTreeSet::new();
    for line in code.lines().filter(|l| !l.starts_with(char::is_whitespace)) {
        // past attributes (`@group(0) @binding(1) var<…> name`) and `var`'s space
        let mut words = line
            .split_whitespace()
            .skip_while(|w| w.starts_with('@'))
            .map(|w| if w.starts_with("var<") { "var" } else { w });
        let Some(kw) = words.next() else { continue };
        if !matches!(kw, "fn" | "struct" | "const" | "override" | "var" | "alias") {
            continue;
        }
        let rest = line[line.find(kw).unwrap() + kw.len()..].trim_start();
        let rest = if kw == "var" && rest.starts_with('<') {
            rest.split_once('>').map_or("", |(_, r)| r.trim_start())
        } else {
            rest
        };
        let name = rest
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .next()
            .unwrap_or("");
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

/// The names of a file's `// requires:` lines.
fn requires(src: &str) -> BTreeSet<&str> {
    src.lines()
        .filter_map(|l| l.trim_start().strip_prefix("// requires:"))
        .flat_map(|r| r.split([',', ' ']).filter(|w| !w.is_empty()))
        .collect()
}

fn abi_names(abi: super::super::abi::Abi) -> BTreeSet<&'static str> {
    abi.iter()
        .flat_map(|d| d.iter())
        .map(|d| match *d {
            Decl::Struct { name, .. } | Decl::Const { name, .. } => name,
        })
        .collect()
}

#[test]
fn every_file_requires_what_it_uses_and_nothing_else() {
    // per file: what it uses of the others in any module, and what it declares
    let mut used: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut problems = BTreeSet::new();
    for (variant, key) in shader_variants() {
        let snippets = key.snippets();
        let abi = abi_names(key.kernel.abi());
        let codes: Vec<String> = snippets.iter().map(|s| code(s.source)).collect();
        let defs: Vec<BTreeSet<&str>> = codes.iter().map(|c| defines(c)).collect();
        let mut seen: BTreeMap<&str, &str> = abi.iter().map(|&n| (n, "abi")).collect();
        for (s, d) in snippets.iter().zip(&defs) {
            for &name in d {
                if let Some(first) = seen.insert(name, s.path) {
                    problems.insert(format!(
                        "{variant}: {name} defined in {first} and {}",
                        s.path
                    ));
                }
            }
        }
        for (i, s) in snippets.iter().enumerate() {
            let others: BTreeSet<&str> = seen
                .iter()
                .filter(|(_, &path)| path != s.path)
                .map(|(&n, _)| n)
                .collect();
            let uses = idents(&codes[i])
                .into_iter()
                .filter(|n| others.contains(n))
                .map(String::from);
            used.entry(s.path).or_default().extend(uses);
            for r in requires(s.source) {
                if !others.contains(r) {
                    problems.insert(format!(
                        "{variant}: {} requires {r}, defined by none of the others",
                        s.path
                    ));
                }
            }
        }
    }
    for (path, uses) in &used {
        let source = super::super::variants::shader_variants()
            .into_iter()
            .flat_map(|(_, k)| k.snippets())
            .find(|s| s.path == *path)
            .map(|s| s.source)
            .unwrap();
        let declared: BTreeSet<String> = requires(source).into_iter().map(String::from).collect();
        if declared != *uses {
            let line: Vec<&str> = uses.iter().map(String::as_str).collect();
            problems.insert(format!("{path}: // requires: {}", line.join(", ")));
        }
    }
    assert!(problems.is_empty(), "{:#?}", problems);
}

#[test]
fn the_parsers_see_declarations() {
    let src = "@group(0) @binding(1) var<uniform> params: Params;\nvar<workgroup> wg: u32;\n\
               fn f(x: u32) -> u32 { return g(x); } // h()\nstruct S { a: u32 }\n\
               const C: u32 = 1u;\n    let local = 2;\n// requires: g, Params\n";
    let c = code(src);
    let want: BTreeSet<&str> = ["params", "wg", "f", "S", "C"].into();
    assert_eq!(defines(&c), want);
    assert!(idents(&c).contains("g") && !idents(&c).contains("h"));
    assert_eq!(requires(src), ["g", "Params"].into());
}
