//! `cargo xtask layers`: no import cycle between the modules of any crate.
//!
//! Every crate is meant to read top-down: a module uses the ones below it, never one
//! that uses it back (bee-dispatch's runtime knows nothing of its cluster layer, the
//! cluster layer nothing of the routers built on it). For each crate this check reads
//! the top-level modules of `src/` (a `name.rs` file, or a `name/` folder), collects the
//! `crate::other` paths each one names in code (comments and `#[cfg(test)]` sections
//! left out), and fails naming every cycle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Module name → the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// Check every crate of the workspace; fails with the cycles found.
pub fn run(root: &Path) -> Result<()> {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .context("cannot read crates/")?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    crates.push(root.join("xtask"));
    crates.push(root.join("tests"));
    crates.sort();
    let mut problems = Vec::new();
    let mut checked = 0;
    for dir in crates {
        let src = dir.join("src");
        if !src.is_dir() {
            continue;
        }
        let graph = crate_graph(&src)?;
        checked += graph.len();
        for cycle in cycles(&graph) {
            problems.push(format!("{}: {}", dir.display(), cycle.join(" -> ")));
        }
    }
    if !problems.is_empty() {
        bail!(
            "import cycles between modules:\n  {}",
            problems.join("\n  ")
        );
    }
    eprintln!("layers: {checked} modules, no import cycle");
    Ok(())
}

/// The module graph of one crate's `src/`.
fn crate_graph(src: &Path) -> Result<Graph> {
    let mut graph = Graph::new();
    for entry in std::fs::read_dir(src).with_context(|| format!("cannot read {}", src.display()))? {
        let path = entry?.path();
        let name = match path.file_stem().and_then(|s| s.to_str()) {
            Some(n) => n.to_string(),
            None => continue,
        };
        if ["lib", "main"].contains(&name.as_str()) || name == "bin" {
            continue;
        }
        let mut text = String::new();
        if path.is_dir() {
            for f in rs_files(&path)? {
                text.push_str(&std::fs::read_to_string(&f)?);
                text.push('\n');
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            text = std::fs::read_to_string(&path)?;
        } else {
            continue;
        }
        let uses = crate_paths(&text)
            .into_iter()
            .filter(|m| *m != name)
            .collect();
        graph.insert(name, uses);
    }
    // Only edges to modules of this crate count (`crate::SomeReexport` is not a module).
    let names: BTreeSet<String> = graph.keys().cloned().collect();
    for uses in graph.values_mut() {
        uses.retain(|m| names.contains(m));
    }
    Ok(graph)
}

fn rs_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(rs_files(&p)?);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
    Ok(out)
}

/// The first segment of every `crate::…` path in code (also inside `crate::{a, b::c}`).
fn crate_paths(text: &str) -> BTreeSet<String> {
    // Code only: cut the unit tests, drop comment lines and trailing comments.
    let code: String = text
        .split("#[cfg(test)]")
        .next()
        .unwrap_or("")
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        // `bee_crate::x` is another crate's path, not this one's.
        let before = rest[..i].chars().last();
        rest = &rest[i + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            for item in top_level_items(group) {
                if let Some(id) = ident(item.trim()) {
                    out.insert(id);
                }
            }
        } else if let Some(id) = ident(rest) {
            out.insert(id);
        }
    }
    out
}

/// The comma-separated items of a `{…}` group (up to its closing brace).
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

fn ident(s: &str) -> Option<String> {
    let id: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    (!id.is_empty()).then_some(id)
}

/// Every cycle of the graph, one per strongly connected component of more than one
/// module, written as a path that returns to its start.
fn cycles(graph: &Graph) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut seen_in_cycle = BTreeSet::new();
    for start in graph.keys() {
        if seen_in_cycle.contains(start) {
            continue;
        }
        if let Some(path) = path_back(graph, start) {
            seen_in_cycle.extend(path.iter().cloned());
            found.push(path);
        }
    }
    found
}

/// A shortest path from `start` back to itself, if there is one (breadth-first).
fn path_back(graph: &Graph, start: &str) -> Option<Vec<String>> {
    let mut prev: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.to_string()]);
    while let Some(m) = queue.pop_front() {
        for next in graph.get(&m).into_iter().flatten() {
            if next == start {
                let mut path = vec![start.to_string()];
                let mut at = m.clone();
                while at != start {
                    path.push(at.clone());
                    at = prev[&at].clone();
                }
                path.push(start.to_string());
                let end = path.len() - 1;
                path[1..end].reverse();
                return Some(path);
            }
            if !prev.contains_key(next) && next != start {
                prev.insert(next.clone(), m.clone());
                queue.push_back(next.clone());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &[&str])]) -> Graph {
        edges
            .iter()
            .map(|(m, uses)| (m.to_string(), uses.iter().map(|u| u.to_string()).collect()))
            .collect()
    }

    #[test]
    fn paths_are_read_from_code_not_comments_or_tests() {
        let text = "use crate::service::{Node, Addr};\nuse crate::{cluster::Cluster, handle};\n\
                    /// see [`crate::native::X`]\nfn f() { crate::text::g(); bee_crate::x(); }\n\
                    #[cfg(test)]\nmod tests { use crate::shard; }";
        let got: Vec<String> = crate_paths(text).into_iter().collect();
        assert_eq!(got, ["cluster", "handle", "service", "text"]);
    }

    #[test]
    fn a_cycle_is_found_and_named() {
        let g = graph(&[
            ("service", &[]),
            ("cluster", &["service", "native"]),
            ("native", &["cluster"]),
            ("text", &["service"]),
        ]);
        let c = cycles(&g);
        assert_eq!(c, vec![vec!["cluster", "native", "cluster"]]);
        let g = graph(&[("a", &["b"]), ("b", &["c"]), ("c", &["a"])]);
        assert_eq!(cycles(&g), vec![vec!["a", "b", "c", "a"]]);
    }

    #[test]
    fn layered_modules_have_no_cycle() {
        let g = graph(&[
            ("service", &[]),
            ("cluster", &["service"]),
            ("text", &["cluster", "service"]),
        ]);
        assert!(cycles(&g).is_empty());
    }

    #[test]
    fn this_workspace_has_no_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        run(&root).expect("the workspace's crates have no import cycle");
    }
}
