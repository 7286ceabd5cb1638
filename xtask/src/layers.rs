//! `cargo xtask layers`: which workspace crate may depend on which, and no import cycle
//! between the modules of any crate.
//!
//! **Crates.** [`CRATE_RULES`] is the one place the crate layering is written down: for
//! each workspace crate, the workspace crates it may name in its `Cargo.toml`
//! (`[dependencies]`, `[build-dependencies]` and `[dev-dependencies]`; a dev-dependency
//! may also be `bee-proto`, the test messages, and `bee-testkit`, the test support). The check reads every member's
//! `Cargo.toml` and fails naming each dependency the table does not allow, and each
//! member the table does not list. The local runtime (bee-runtime) knows nothing of
//! sockets or the cluster; bee-capi and bee-mysql sit on the runtime alone.
//!
//! **Modules.** Every crate is meant to read top-down: a module uses the ones below it,
//! never one that uses it back. For each crate this check reads the top-level modules
//! of `src/` (a `name.rs` file, or a `name/` folder), collects the `crate::other` paths
//! each one names in code (comments and `#[cfg(test)]` sections left out), and fails
//! naming every cycle it finds.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Module name → the modules it names.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// What a crate may depend on among the workspace's crates.
#[derive(Debug, Clone, Copy)]
pub enum May {
    /// Only these crates.
    Use(&'static [&'static str]),
    /// Any library crate of the workspace, never a tool (benchmarks, tests, examples,
    /// xtask: nothing depends on those).
    AnyLibrary,
}

/// The crate layering, bottom up: each workspace crate and what it may depend on.
pub const CRATE_RULES: &[(&str, May)] = &[
    // Bytes, config, messages: no workspace crate below them.
    ("bee-codec", May::Use(&[])),
    ("bee-registry", May::Use(&[])),
    ("bee-proto", May::Use(&[])),
    // Test support (a dev-dependency of any crate; see TEST_SUPPORT).
    ("bee-testkit", May::Use(&[])),
    // Connections; the etcd config store.
    ("bee-transport", May::Use(&["bee-codec"])),
    ("bee-etcd", May::Use(&["bee-registry"])),
    // The local service runtime: no sockets, no cluster.
    ("bee-runtime", May::Use(&["bee-codec"])),
    // Services on the runtime alone.
    ("bee-capi", May::Use(&["bee-codec", "bee-runtime"])),
    ("bee-mysql", May::Use(&["bee-codec", "bee-runtime"])),
    // skynet's cluster on the runtime.
    (
        "bee-cluster",
        May::Use(&["bee-codec", "bee-runtime", "bee-transport", "bee-registry"]),
    ),
    // The node program and library around them.
    (
        "bee-node",
        May::Use(&[
            "bee-codec",
            "bee-runtime",
            "bee-cluster",
            "bee-transport",
            "bee-registry",
            "bee-etcd",
            "bee-capi",
            "bee-mysql",
        ]),
    ),
    (
        "bee-demo",
        May::Use(&[
            "bee-codec",
            "bee-runtime",
            "bee-cluster",
            "bee-node",
            "bee-proto",
        ]),
    ),
    // Tools.
    ("bee-bench", May::AnyLibrary),
    ("bee-tests", May::AnyLibrary),
    ("bee-example-greeter", May::AnyLibrary),
    ("bee-sim", May::AnyLibrary),
    // Never bee-etcd (nor a crate using it): its build needs `protoc`, which xtask's own
    // setup installs, so xtask must build on a machine that has none.
    (
        "xtask",
        May::Use(&[
            "bee-codec",
            "bee-proto",
            "bee-runtime",
            "bee-cluster",
            "bee-registry",
            "bee-transport",
        ]),
    ),
];

/// Dev-dependencies every crate's tests may use besides its own rule: the test messages
/// and the test support (ports, waits, node processes).
const TEST_SUPPORT: &[&str] = &["bee-proto", "bee-testkit"];

/// Check every crate of the workspace; fails with the crate-rule violations and the
/// module cycles found.
pub fn run(root: &Path) -> Result<()> {
    let members = workspace_members(root)?;
    let violations = crate_violations(CRATE_RULES, &members);
    if !violations.is_empty() {
        bail!(
            "crate dependencies the layering does not allow (table: CRATE_RULES in xtask/src/layers.rs):\n  {}",
            violations.join("\n  ")
        );
    }
    eprintln!("layers: {} crates keep to the crate rules", members.len());
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

/// One workspace member: its package name, and the workspace crates (`bee-*`, `xtask`)
/// its `Cargo.toml` names, as (name, section).
#[derive(Debug, Clone)]
pub struct Member {
    name: String,
    deps: Vec<(String, &'static str)>,
}

/// Every member of the workspace at `root`, read from the manifests.
fn workspace_members(root: &Path) -> Result<Vec<Member>> {
    let text =
        std::fs::read_to_string(root.join("Cargo.toml")).context("cannot read Cargo.toml")?;
    let manifest: toml::Table = text.parse().context("Cargo.toml is not TOML")?;
    let paths = manifest
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(|m| m.as_array())
        .context("Cargo.toml has no [workspace] members")?;
    let mut out = Vec::new();
    for p in paths.iter().filter_map(|p| p.as_str()) {
        let path = root.join(p).join("Cargo.toml");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        out.push(parse_member(&text).with_context(|| format!("in {}", path.display()))?);
    }
    Ok(out)
}

/// A member's name and workspace dependencies from its `Cargo.toml` text.
fn parse_member(text: &str) -> Result<Member> {
    let manifest: toml::Table = text.parse()?;
    let name = manifest
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .context("no [package] name")?
        .to_string();
    let mut deps = Vec::new();
    for section in ["dependencies", "build-dependencies", "dev-dependencies"] {
        if let Some(t) = manifest.get(section).and_then(|t| t.as_table()) {
            for dep in t.keys() {
                if dep.starts_with("bee-") || dep == "xtask" {
                    deps.push((dep.clone(), section));
                }
            }
        }
    }
    Ok(Member { name, deps })
}

/// Every dependency of `members` that `rules` does not allow, and every member `rules`
/// does not list, as lines of text.
fn crate_violations(rules: &[(&str, May)], members: &[Member]) -> Vec<String> {
    let rule = |name: &str| rules.iter().find(|(n, _)| *n == name).map(|(_, m)| *m);
    let is_library = |name: &str| matches!(rule(name), Some(May::Use(_)));
    let mut out = Vec::new();
    for m in members {
        let Some(may) = rule(&m.name) else {
            out.push(format!(
                "{}: not in the table; add it with what it may depend on",
                m.name
            ));
            continue;
        };
        for (dep, section) in &m.deps {
            let allowed = match may {
                May::AnyLibrary => is_library(dep),
                May::Use(list) => {
                    list.contains(&dep.as_str())
                        || (*section == "dev-dependencies" && TEST_SUPPORT.contains(&dep.as_str()))
                }
            };
            if !allowed {
                let may_text = match may {
                    May::Use([]) => "no workspace crate".to_string(),
                    May::Use(list) => list.join(", "),
                    May::AnyLibrary => "any library crate, no tool".to_string(),
                };
                out.push(format!(
                    "{} depends on {dep} ([{section}]); it may use: {may_text}",
                    m.name
                ));
            }
        }
    }
    out
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

    fn member(name: &str, deps: &[(&str, &'static str)]) -> Member {
        Member {
            name: name.to_string(),
            deps: deps.iter().map(|(d, s)| (d.to_string(), *s)).collect(),
        }
    }

    #[test]
    fn a_crate_rule_violation_is_named_with_what_is_allowed() {
        let rules = [
            ("bee-codec", May::Use(&[])),
            ("bee-runtime", May::Use(&["bee-codec"])),
            ("bee-cluster", May::Use(&["bee-codec", "bee-runtime"])),
            ("bee-proto", May::Use(&[])),
            ("tool", May::AnyLibrary),
        ];
        let ok = [
            member("bee-codec", &[]),
            member(
                "bee-runtime",
                &[
                    ("bee-codec", "dependencies"),
                    ("bee-proto", "dev-dependencies"),
                ],
            ),
            member("tool", &[("bee-cluster", "dependencies")]),
        ];
        assert!(crate_violations(&rules, &ok).is_empty());
        let bad = [
            member("bee-runtime", &[("bee-cluster", "dependencies")]),
            member("bee-codec", &[("bee-proto", "dependencies")]),
            member("bee-cluster", &[("tool", "dev-dependencies")]),
            member("tool", &[("tool", "dependencies")]),
            member("bee-new", &[]),
        ];
        let v = crate_violations(&rules, &bad);
        assert_eq!(
            v,
            [
                "bee-runtime depends on bee-cluster ([dependencies]); it may use: bee-codec",
                "bee-codec depends on bee-proto ([dependencies]); it may use: no workspace crate",
                "bee-cluster depends on tool ([dev-dependencies]); it may use: bee-codec, bee-runtime",
                "tool depends on tool ([dependencies]); it may use: any library crate, no tool",
                "bee-new: not in the table; add it with what it may depend on",
            ]
        );
    }

    #[test]
    fn a_manifest_is_read_for_its_workspace_dependencies() {
        let m = parse_member(
            "[package]\nname = \"bee-mysql\"\n[features]\nservice = [\"dep:bee-runtime\"]\n\
             [dependencies]\nbee-runtime = { workspace = true, optional = true }\ntokio.workspace = true\n\
             [dev-dependencies]\nbee-proto.workspace = true\n",
        )
        .unwrap();
        assert_eq!(m.name, "bee-mysql");
        assert_eq!(
            m.deps,
            [
                ("bee-runtime".to_string(), "dependencies"),
                ("bee-proto".to_string(), "dev-dependencies")
            ]
        );
    }

    #[test]
    fn this_workspace_has_no_cycle() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        run(&root).expect("the workspace's crates have no import cycle");
    }
}
