//! The modules of the agent and of the coordinator form trees a newcomer can draw: at every level of the
//! module hierarchy, sibling modules depend on each other without cycles (issue 15). This test reads the
//! sources, derives each crate's dependency graph from `crate::` and `super::` paths, fails on a cycle
//! (naming the files whose imports close it), and keeps the agent's drawn graph in docs/agent-modules.md
//! true: `PGHERD_BLESS=1 cargo test -p pgherd-tests --test module_graph` rewrites it.
//!
//! Test-only code (`#[cfg(test)]` modules, the test twins behind `cfg(any(test, feature = "fake"))`,
//! `*_tests.rs` files and the unit tests at the end of a file) may reach anywhere and is left out. The
//! parse is textual on purpose: it needs no compiler internals and errs on the side of seeing an edge (a
//! path in a string literal counts), never of missing one written as a path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// A module path and the file that declares it.
struct Source {
    module: Module,
    file: PathBuf,
    text: String,
}

/// The `src` directory of one of the workspace's crates.
fn src_dir(krate: &str) -> PathBuf {
    pgherd_tests::tools::repo_root().join(krate).join("src")
}

fn module_of(rel: &Path) -> Module {
    let mut parts: Module = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    parts
}

fn sources(krate: &str) -> Vec<Source> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).expect("the crate's src is readable") {
            let p = e.expect("directory entry").path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    let root = src_dir(krate);
    let mut files = Vec::new();
    walk(&root, &mut files);
    files.sort();
    files
        .into_iter()
        // The binary is its own crate, on top of everything; `*_tests.rs` files are unit tests.
        .filter(|f| {
            f != &root.join("main.rs")
                && !f
                    .file_stem()
                    .is_some_and(|s| s.to_string_lossy().ends_with("_tests"))
        })
        .map(|file| Source {
            module: module_of(file.strip_prefix(&root).expect("below src")),
            text: std::fs::read_to_string(&file).expect("source is readable"),
            file,
        })
        .collect()
}

/// Modules declared under `#[cfg(test)]` or `#[cfg(any(test, …))]` (test twins and helpers), by full path.
fn test_only(sources: &[Source]) -> BTreeSet<Module> {
    let mut out = BTreeSet::new();
    for s in sources {
        let lines: Vec<&str> = s.text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            if !(line.starts_with("#[cfg(test)]") || line.starts_with("#[cfg(any(test")) {
                continue;
            }
            // The item the attribute applies to, past any further attributes (`#[path = …]`).
            let Some(decl) = lines[i + 1..].iter().find(|l| !l.starts_with("#[")) else {
                continue;
            };
            let decl = decl
                .trim_start_matches("pub(crate) ")
                .trim_start_matches("pub ");
            if let Some(name) = decl.strip_prefix("mod ").and_then(|d| d.strip_suffix(';')) {
                let mut m = s.module.clone();
                m.push(name.to_string());
                out.insert(m);
            }
        }
    }
    out
}

/// The code of a file without its unit tests and comments.
fn code(text: &str) -> String {
    let text = text
        .find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i]);
    text.lines()
        .map(|l| {
            // A comment starts with `//` at the start or after whitespace (not in "https://").
            let cut = l
                .match_indices("//")
                .find(|(i, _)| *i == 0 || l[..*i].ends_with(char::is_whitespace))
                .map_or(l.len(), |(i, _)| i);
            &l[..cut]
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every module path a file names through `crate::…` or `super::…`, grouped imports included.
fn references(module: &Module, code: &str) -> Vec<Module> {
    let mut out = Vec::new();
    for (at, kw) in code
        .match_indices("crate::")
        .chain(code.match_indices("super::"))
    {
        if code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        // `super` of a file `a/b.rs` (module a::b) is a; of `a/mod.rs` (module a) it is a's parent.
        let mut base: Module = if kw == "crate::" {
            Vec::new()
        } else {
            module[..module.len() - 1].to_vec()
        };
        let mut rest = &code[at + kw.len()..];
        // Further `super::` segments climb one level each.
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        loop {
            if let Some(group) = rest.strip_prefix('{') {
                for item in top_level_items(group) {
                    let name = ident(item.trim_start());
                    if !name.is_empty() && name != "self" {
                        let mut m = base.clone();
                        m.push(name.to_string());
                        out.push(m);
                    }
                }
                break;
            }
            let name = ident(rest);
            if name.is_empty() {
                break;
            }
            base.push(name.to_string());
            match rest[name.len()..].strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        out.push(base);
    }
    out
}

/// The comma-separated items of a `{…}` group up to its closing brace, nested groups kept whole.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// Edges between sibling modules: (parent, from child, to child) → the files that make the edge.
type Edges = BTreeMap<(Module, String, String), BTreeSet<String>>;

fn sibling_edges(krate: &str) -> Edges {
    let sources = sources(krate);
    let known: BTreeSet<&Module> = sources.iter().map(|s| &s.module).collect();
    let tests = test_only(&sources);
    let is_test = |m: &Module| tests.iter().any(|t| m.starts_with(t));
    let mut edges = Edges::new();
    for s in &sources {
        if is_test(&s.module) {
            continue;
        }
        let rel = s
            .file
            .strip_prefix(src_dir(krate))
            .expect("below src")
            .display()
            .to_string();
        for mut target in references(&s.module, &code(&s.text)) {
            // A path names an item inside some module file: the edge goes to that module.
            while !target.is_empty() && !known.contains(&target) {
                target.pop();
            }
            if is_test(&target) {
                continue;
            }
            // The first level where the two paths part: that level's graph gets the edge.
            let common = s
                .module
                .iter()
                .zip(&target)
                .take_while(|(a, b)| a == b)
                .count();
            if common < s.module.len() && common < target.len() {
                edges
                    .entry((
                        s.module[..common].to_vec(),
                        s.module[common].clone(),
                        target[common].clone(),
                    ))
                    .or_default()
                    .insert(rel.clone());
            }
        }
    }
    edges
}

/// Strongly connected components with more than one module, per parent module.
fn cycles(edges: &Edges) -> Vec<(Module, Vec<String>)> {
    let mut graphs: BTreeMap<&Module, BTreeMap<&str, Vec<&str>>> = BTreeMap::new();
    for (parent, from, to) in edges.keys() {
        graphs
            .entry(parent)
            .or_default()
            .entry(from)
            .or_default()
            .push(to);
    }
    let mut out = Vec::new();
    for (parent, g) in graphs {
        let reach = |start: &str| {
            let mut seen = BTreeSet::new();
            let mut todo = vec![start];
            while let Some(n) = todo.pop() {
                for &m in g.get(n).into_iter().flatten() {
                    if seen.insert(m) {
                        todo.push(m);
                    }
                }
            }
            seen
        };
        let mut done = BTreeSet::new();
        for &n in g.keys() {
            if done.contains(n) {
                continue;
            }
            let from_n = reach(n);
            let comp: Vec<String> = from_n
                .iter()
                .filter(|m| reach(m).contains(n))
                .map(|m| m.to_string())
                .collect();
            if !comp.is_empty() {
                done.extend(comp.iter().cloned());
                out.push((parent.clone(), comp));
            }
        }
    }
    out
}

fn name(m: &Module) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The generated part of docs/agent-modules.md: the crate's top-level graph as a Mermaid diagram, then
/// each module's internal edges as lists.
fn render(edges: &Edges) -> String {
    let mut out = String::from("```mermaid\nflowchart TD\n");
    let mut by_parent: BTreeMap<&Module, Vec<(&str, &str)>> = BTreeMap::new();
    for (parent, from, to) in edges.keys() {
        by_parent.entry(parent).or_default().push((from, to));
    }
    for (from, to) in by_parent.get(&Vec::new()).into_iter().flatten() {
        out.push_str(&format!("    {from} --> {to}\n"));
    }
    out.push_str("```\n");
    for (parent, list) in by_parent.iter().filter(|(p, _)| !p.is_empty()) {
        out.push_str(&format!("\n`{}`:\n", name(parent)));
        let mut from_to: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (f, t) in list {
            from_to.entry(f).or_default().push(t);
        }
        for (f, ts) in from_to {
            out.push_str(&format!("- {f} → {}\n", ts.join(", ")));
        }
    }
    out
}

const BEGIN: &str = "<!-- generated by tests/tests/module_graph.rs: begin -->\n";
const END: &str = "<!-- generated by tests/tests/module_graph.rs: end -->";

/// Each cycle, with the edges that close it and the files that make them.
fn describe_cycles(krate: &str, edges: &Edges) -> Vec<String> {
    cycles(edges)
        .iter()
        .map(|(parent, comp)| {
            let files: Vec<String> = edges
                .iter()
                .filter(|((p, f, t), _)| p == parent && comp.contains(f) && comp.contains(t))
                .map(|((_, f, t), files)| {
                    let files: Vec<&str> = files.iter().map(String::as_str).collect();
                    format!("  {f} -> {t} ({})", files.join(", "))
                })
                .collect();
            format!(
                "in {krate}'s {}: {}\n{}",
                name(parent),
                comp.join(", "),
                files.join("\n")
            )
        })
        .collect()
}

#[test]
fn sibling_modules_never_depend_on_each_other_in_a_cycle() {
    let report: Vec<String> = ["agent", "coordinator", "shared"]
        .iter()
        .flat_map(|k| describe_cycles(k, &sibling_edges(k)))
        .collect();
    assert!(
        report.is_empty(),
        "import cycles between sibling modules:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_drawn_module_graph_is_the_real_one() {
    let doc_path = pgherd_tests::tools::repo_root().join("docs/agent-modules.md");
    let doc = std::fs::read_to_string(&doc_path).expect("docs/agent-modules.md");
    let (head, rest) = doc.split_once(BEGIN).expect("the begin marker");
    let (_, tail) = rest.split_once(END).expect("the end marker");
    let fresh = format!(
        "{head}{BEGIN}{}{END}{tail}",
        render(&sibling_edges("agent"))
    );
    if std::env::var_os("PGHERD_BLESS").is_some() {
        std::fs::write(&doc_path, &fresh).expect("writing docs/agent-modules.md");
        return;
    }
    assert!(
        fresh == doc,
        "docs/agent-modules.md does not show the modules' real dependencies; run \
         PGHERD_BLESS=1 cargo test -p pgherd-tests --test module_graph"
    );
}

#[test]
fn references_follow_crate_super_and_groups() {
    let m: Module = vec!["backup".into(), "socket".into()];
    let refs = references(
        &m,
        "use super::{store::{self, Store}, wal};\nuse crate::process::children;\nlet x = super::super::metrics::backup();",
    );
    let names: BTreeSet<String> = refs.iter().map(|r| r.join("::")).collect();
    for want in [
        "backup::store",
        "backup::wal",
        "process::children",
        "metrics::backup",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    assert_eq!(
        code("a(); // crate::x\nlet u = \"https://h\";"),
        "a(); \nlet u = \"https://h\";"
    );
}
