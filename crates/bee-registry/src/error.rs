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
    /// A service name that cannot be registered.
    #[error("cannot register name {name:?}: {reason}")]
    BadName {
        /// The name as given.
        name: String,
        /// Why it is refused.
        reason: String,
    },
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
