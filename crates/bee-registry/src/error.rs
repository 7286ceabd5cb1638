//! The one error type of this crate: what went wrong with a node name, a config file or a
//! service name, worded so the engineer reading the log knows what to fix.

use std::fmt::Write as _;

/// How many known node names an [`RegistryError::UnknownNode`] message lists before it
/// says "and N more".
const KNOWN_SHOWN: usize = 16;

/// Everything the registry can refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The node is not in the cluster config at all (maybe a typo, maybe a reload that
    /// has not happened yet).
    #[error("node {node} is not in the cluster config ({})", known_list(.known))]
    UnknownNode {
        /// The node that was asked for.
        node: String,
        /// Every node the config does name, sorted.
        known: Vec<String>,
    },
    /// The node is in the config as `name = false`: calls to it fail at once.
    #[error("node {node} is marked down (false) in the cluster config")]
    NodeDown {
        /// The node that was asked for.
        node: String,
    },
    /// A cluster config text could not be read.
    #[error("line {line}: {reason}")]
    Parse {
        /// 1-based line of the offending text.
        line: usize,
        /// What was expected and what was found.
        reason: String,
    },
    /// A cluster config file could not be opened or read.
    #[error("cannot read cluster config {path}: {reason}")]
    Io {
        /// The file.
        path: String,
        /// The operating system's words.
        reason: String,
    },
    /// A node is named twice in one config text (Lua would silently keep the last one).
    #[error("line {line}: node `{node}` is set twice{}; keep one", first_line_text(.first_line))]
    DuplicateNode {
        /// The node named twice.
        node: String,
        /// 1-based line of the second entry.
        line: usize,
        /// 1-based line of the first entry, when the parser knows it.
        first_line: Option<usize>,
    },
    /// A node's address is not `host:port` (no port, a port above 65535, a bad host).
    #[error("{}node `{node}`: {reason}", line_prefix(.line))]
    BadAddress {
        /// The node whose address is wrong.
        node: String,
        /// The address as written.
        addr: String,
        /// 1-based line in the config text; `None` for a config built in code.
        line: Option<usize>,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// An option that a config built in code cannot carry (e.g. `__version` among the
    /// options instead of in [`crate::ClusterConfig::version`]).
    #[error("option `{key}`: {reason}")]
    BadOption {
        /// The option key.
        key: String,
        /// Why it is refused.
        reason: String,
    },
    /// The offered config is older than the one running; refused unless forced.
    #[error(
        "config version {offered} is older than the running version {running}: \
         set `__version` (Lua form) or `version` (TOML form) above {running}, or force it"
    )]
    VersionBehind {
        /// The version of the refused config.
        offered: u64,
        /// The version this node runs.
        running: u64,
    },
    /// The offered config has the running (non-zero) version but other content: two
    /// different configs under one version number. Refused unless forced.
    #[error(
        "config version {version} has content {offered_hash}, but this node already runs \
         version {version} with content {running_hash}: bump the version, or force it"
    )]
    VersionConflict {
        /// The version both configs carry.
        version: u64,
        /// Short content hash of the refused config.
        offered_hash: String,
        /// Short content hash of the running config.
        running_hash: String,
    },
    /// The offered config does not name this node although the running one does.
    #[error(
        "the new config drops this node `{node}`; a node does not apply a config without its \
         own entry (write `{node} = false` to mark it down, or stop the node first)"
    )]
    OwnEntryDropped {
        /// This node's name.
        node: String,
    },
    /// A config text above the size bee reads.
    #[error("the cluster config is {bytes} bytes, above the limit of {max}")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// [`crate::MAX_CONFIG_BYTES`].
        max: usize,
    },
    /// A service name that cannot be registered.
    #[error("cannot register name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
}

fn first_line_text(first: &Option<usize>) -> String {
    match first {
        Some(l) => format!(" (first on line {l})"),
        None => String::new(),
    }
}

fn line_prefix(line: &Option<usize>) -> String {
    match line {
        Some(l) => format!("line {l}: "),
        None => String::new(),
    }
}

fn known_list(known: &[String]) -> String {
    if known.is_empty() {
        return "the config names no nodes".to_string();
    }
    let mut s = String::from("known: ");
    for (i, name) in known.iter().take(KNOWN_SHOWN).enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(name);
    }
    if known.len() > KNOWN_SHOWN {
        let _ = write!(s, " and {} more", known.len() - KNOWN_SHOWN);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_well() {
        let e = RegistryError::UnknownNode {
            node: "lpersistence_3".into(),
            known: vec!["activity_master".into(), "lobby".into()],
        };
        assert_eq!(
            e.to_string(),
            "node lpersistence_3 is not in the cluster config (known: activity_master, lobby)"
        );
        let e = RegistryError::UnknownNode {
            node: "x".into(),
            known: vec![],
        };
        assert_eq!(
            e.to_string(),
            "node x is not in the cluster config (the config names no nodes)"
        );
        let e = RegistryError::NodeDown {
            node: "shop_master".into(),
        };
        assert_eq!(
            e.to_string(),
            "node shop_master is marked down (false) in the cluster config"
        );
        let e = RegistryError::Parse {
            line: 3,
            reason: "expected `=`".into(),
        };
        assert_eq!(e.to_string(), "line 3: expected `=`");
    }

    #[test]
    fn long_known_lists_are_cut() {
        let known: Vec<String> = (0..20).map(|i| format!("n{i:02}")).collect();
        let e = RegistryError::UnknownNode {
            node: "x".into(),
            known,
        };
        let s = e.to_string();
        assert!(s.contains("n15"), "{s}");
        assert!(!s.contains("n16"), "{s}");
        assert!(s.ends_with("and 4 more)"), "{s}");
    }
}
