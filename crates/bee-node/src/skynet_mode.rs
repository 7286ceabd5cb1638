//! `bee run SKYNET_CONFIG`: a skynet config file, as `skynet CONFIG` takes it, run by bee.
//!
//! The file is read the way skynet reads it ([`bee_capi::read_skynet_config`]: `$VAR`,
//! `include`, values computed in Lua) with the skynet tree's own Lua library, found as
//! `liblua.so` next to the config or in a parent directory (or its `skynet/`
//! subdirectory), or named by `BEE_LIBLUA`. Every key goes into the env skynet's Lua
//! reads (`skynet.getenv`); the node then starts `bootstrap` (skynet's `snlua bootstrap`
//! by default: the launcher, the service manager and the `start` script), exactly as a
//! node config with one `snlua` service and these keys in `[env]` would.
//!
//! What is taken from the config besides the env: `thread` (the node's worker threads),
//! `logger` (skynet's log lines to that file, else stdout). What is refused, with a line
//! saying why: `harbor` other than 0 (skynet's master/slave mode; bee connects nodes
//! with skynet's cluster protocol), a `bootstrap` that is not `snlua …`, a `logservice`
//! other than skynet's `logger`. `daemon` is ignored with a warning; `profile` stays in the
//! env, where the C host reads it as skynet does (callbacks timed unless `false`).
//!
//! The node is skynet's single-node mode: its name is the config file's stem, and it
//! opens no cluster listener (a node serving the cluster is a bee node config with a
//! `snlua` service; see `docs/lua.md`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::config::NodeConfig;

/// The environment variable naming the Lua library explicitly.
pub const LIBLUA_ENV: &str = "BEE_LIBLUA";

/// Whether `text` is a skynet config rather than a bee node config (TOML): a bee config
/// has tables (`[[service]]`, `[limits]`, …) or a top-level `name`; a skynet config is
/// Lua assignments, with no line starting with `[`.
pub fn is_skynet_config(text: &str) -> bool {
    if text.lines().any(|l| l.trim_start().starts_with('[')) {
        return false;
    }
    match toml::from_str::<toml::Table>(text) {
        Ok(t) => !t.contains_key("name"),
        Err(_) => true,
    }
}

/// Where to look for the Lua library of the tree a skynet config at `path` (text
/// `text`) belongs to: `BEE_LIBLUA`; else the tree a literal `cpath` points into
/// (`cpath = "/opt/skynet/cservice/?.so"` → `/opt/skynet/liblua.so`); else next to the
/// config and in its parent directories (and their `skynet/`).
fn liblua_candidates(path: &Path, text: &str) -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os(LIBLUA_ENV) {
        return vec![PathBuf::from(p)];
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        let literal = value.len() >= 2
            && (value.starts_with('"') && value.ends_with('"')
                || value.starts_with('\'') && value.ends_with('\''));
        if key.trim() != "cpath" || !literal {
            continue;
        }
        for pattern in value[1..value.len() - 1].split(';') {
            // `TREE/cservice/?.so` → `TREE/liblua.so`.
            if let Some(tree) = Path::new(pattern).parent().and_then(Path::parent) {
                out.push(tree.join("liblua.so"));
            }
        }
    }
    let dir = path
        .canonicalize()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("."));
    for d in dir.ancestors() {
        out.push(d.join("liblua.so"));
        out.push(d.join("skynet").join("liblua.so"));
    }
    out
}

/// The node config equivalent to the skynet config at `path`.
pub fn node_config(path: &Path, text: &str) -> Result<NodeConfig> {
    let candidates = liblua_candidates(path, text);
    let Some(liblua) = candidates.iter().find(|p| p.is_file()) else {
        bail!(
            "skynet config {}: cannot find the skynet tree's Lua library (liblua.so, built by `cargo xtask skynet` or by hand as docs/lua.md says); looked at {}; or set {LIBLUA_ENV}",
            path.display(),
            candidates
                .iter()
                .take(6)
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let pairs = read_with_lua(liblua, path)?;
    let get = |k: &str| {
        pairs
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let harbor = get("harbor").unwrap_or("1");
    if harbor != "0" {
        bail!(
            "skynet config {}: harbor = {harbor}{}: skynet's master/slave (harbor) mode is not run by bee; a bee node is skynet's single-node mode (harbor = 0), and nodes talk skynet's cluster protocol",
            path.display(),
            if get("harbor").is_none() { " (skynet's default)" } else { "" }
        );
    }
    let bootstrap = get("bootstrap").unwrap_or("snlua bootstrap");
    let args = match bootstrap.split_once(char::is_whitespace) {
        Some(("snlua", rest)) if !rest.trim().is_empty() => rest.trim().to_string(),
        _ => bail!(
            "skynet config {}: bootstrap = {bootstrap:?}: bee starts `snlua …` (skynet's default is \"snlua bootstrap\")",
            path.display()
        ),
    };
    if let Some(l) = get("logservice").filter(|l| *l != "logger") {
        bail!(
            "skynet config {}: logservice = {l:?}: bee writes skynet's log lines itself (to stdout, or the file `logger` names); another log service is not supported",
            path.display()
        );
    }
    if let Some(v) = get("daemon") {
        tracing::warn!(config = %path.display(), key = "daemon", value = v, "skynet config key ignored by bee (run bee under a supervisor instead)");
    }
    let threads = match get("thread") {
        Some(t) => Some(
            t.parse::<usize>()
                .ok()
                .filter(|n| *n > 0)
                .with_context(|| {
                    format!(
                        "skynet config {}: thread = {t:?} is not a count of threads",
                        path.display()
                    )
                })?,
        ),
        None => None,
    };
    let name = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "skynet".to_string());
    let mut env = toml::Table::new();
    for (k, v) in &pairs {
        env.insert(k.clone(), toml::Value::String(v.clone()));
    }
    let mut service = toml::Table::new();
    service.insert("kind".into(), "snlua".into());
    service.insert(
        "liblua".into(),
        liblua.to_string_lossy().into_owned().into(),
    );
    service.insert("args".into(), args.into());
    let mut t = toml::Table::new();
    t.insert("name".into(), name.into());
    // Not read: a node from a skynet config has no cluster listener.
    t.insert("cluster".into(), "".into());
    t.insert("env".into(), toml::Value::Table(env));
    t.insert(
        "service".into(),
        toml::Value::Array(vec![toml::Value::Table(service)]),
    );
    let mut cfg: NodeConfig = t.try_into().context("building the node config")?;
    cfg.threads = threads;
    cfg.dir = std::env::current_dir().unwrap_or_default();
    cfg.skynet_config = Some(path.to_path_buf());
    Ok(cfg)
}

/// The config's pairs, read with the tree's Lua library.
#[cfg(feature = "capi")]
fn read_with_lua(liblua: &Path, path: &Path) -> Result<Vec<(String, String)>> {
    bee_capi::load_lua(liblua)?;
    Ok(bee_capi::read_skynet_config(path)?)
}

/// Without the C host there is no Lua to read (or run) a skynet config with.
#[cfg(not(feature = "capi"))]
fn read_with_lua(_liblua: &Path, path: &Path) -> Result<Vec<(String, String)>> {
    bail!(
        "{} is a skynet config, and this bee was built without the C host (cargo feature `capi` of bee-node) that runs skynet's Lua",
        path.display()
    )
}

#[cfg(test)]
mod tests {
    use super::is_skynet_config;

    #[test]
    fn skynet_configs_are_told_from_node_configs() {
        assert!(is_skynet_config(
            "thread = 8\nharbor = 0\nstart = \"main\"\n"
        ));
        assert!(is_skynet_config(
            "root = \"./\"\ncpath = root..\"cservice/?.so\"\ninclude \"config.path\"\n"
        ));
        assert!(!is_skynet_config("name = \"lobby\"\ncluster = \"c.lua\"\n"));
        assert!(!is_skynet_config(
            "cluster = \"c.lua\"\n[[service]]\nkind = \"echo\"\n"
        ));
    }
}
