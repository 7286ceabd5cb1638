//! Property tests: random cluster configs survive both text forms unchanged, the content
//! hash does not depend on the form, the order of entries or the quoting, and the parsers
//! never panic on arbitrary text.

use std::collections::BTreeMap;

use bee_registry::{ClusterConfig, NodeEntry, RegistryError};
use proptest::prelude::*;

fn node_name() -> impl Strategy<Value = String> {
    prop_oneof![
        // Plain Lua names (some are keywords, which must come out as ["end"]).
        "[a-z_][a-z0-9_]{0,12}",
        Just("end".to_string()),
        Just("return".to_string()),
        // Anything printable, which needs the ["..."] form.
        "[ -~é中]{1,12}",
    ]
    .prop_filter("`__` marks an option", |n| !n.starts_with("__"))
}

fn address() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        "[a-z][a-z0-9.-]{0,15}",
        any::<[u8; 4]>().prop_map(|b| std::net::Ipv4Addr::from(b).to_string()),
        any::<[u16; 8]>().prop_map(|s| format!("[{}]", std::net::Ipv6Addr::from(s))),
    ];
    (host, any::<u16>()).prop_map(|(h, p)| format!("{h}:{p}"))
}

fn entry() -> impl Strategy<Value = NodeEntry> {
    prop_oneof![
        3 => address().prop_map(NodeEntry::Up),
        1 => Just(NodeEntry::Down),
    ]
}

/// Option values in the canonical text the TOML form reads back to.
fn canonical_option() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9 _.:/-]{0,12}".prop_map(|s| format!("\"{s}\"")),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        any::<f64>()
            .prop_filter("Lua has no inf/nan literal", |f| f.is_finite())
            .prop_map(|f| format!("{f:?}")),
    ]
}

/// Any Lua literal text, kept verbatim by the Lua form.
fn any_option() -> impl Strategy<Value = String> {
    prop_oneof![
        canonical_option(),
        // Every byte escaped as \ddd, or single quotes.
        "[ -~é]{0,8}".prop_map(|s| {
            let mut out = String::from("\"");
            for b in s.bytes() {
                out.push_str(&format!("\\{b:03}"));
            }
            out.push('"');
            out
        }),
        "[a-z ]{0,8}".prop_map(|s| format!("'{s}'")),
        (0u64..=u64::MAX).prop_map(|v| format!("0x{v:x}")),
    ]
}

fn version() -> impl Strategy<Value = u64> {
    prop_oneof![Just(0u64), 1u64..100, 0..=i64::MAX as u64]
}

fn config(options: BoxedStrategy<String>) -> impl Strategy<Value = ClusterConfig> {
    (
        proptest::collection::btree_map(node_name(), entry(), 0..12),
        any::<bool>(),
        proptest::collection::btree_map(
            "__[a-z][a-z0-9_]{0,8}".prop_filter("a field of its own", |k| {
                k != "__nowaiting" && k != "__version"
            }),
            options,
            0..4,
        ),
        version(),
    )
        .prop_map(|(nodes, nowaiting, options, version)| ClusterConfig {
            version,
            nodes,
            nowaiting,
            options,
        })
}

/// A Lua string literal for `s` with every byte as a decimal escape, in single quotes.
fn odd_quote(s: &str) -> String {
    let mut out = String::from("'");
    for b in s.bytes() {
        out.push_str(&format!("\\{b:03}"));
    }
    out.push('\'');
    out
}

/// The config's entries in Lua form, one per line, in the given order, strings written
/// with other quotes and escapes than `to_lua_string` uses.
fn shuffled_lua(cfg: &ClusterConfig, order: &[usize]) -> String {
    let mut lines: Vec<String> = Vec::new();
    for (name, entry) in &cfg.nodes {
        let value = match entry {
            NodeEntry::Up(a) => odd_quote(a),
            NodeEntry::Down => "false".to_string(),
        };
        lines.push(format!("[{}] = {value}", odd_quote(name)));
    }
    for (key, text) in &cfg.options {
        let value = match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) if !inner.contains('\\') => odd_quote(inner),
            _ => text.clone(),
        };
        lines.push(format!("{key} = {value}"));
    }
    if cfg.nowaiting {
        lines.push("__nowaiting = true".to_string());
    }
    let mut text = String::new();
    for i in order {
        if !lines.is_empty() {
            text.push_str(&lines[i % lines.len()]);
            text.push('\n');
        }
    }
    // Every line at least once, in the shuffled order first.
    let mut seen = vec![false; lines.len()];
    let mut out = String::new();
    for line in text.lines() {
        let idx = lines.iter().position(|l| l == line).unwrap();
        if !seen[idx] {
            seen[idx] = true;
            out.push_str(line);
            out.push('\n');
        }
    }
    for (idx, line) in lines.iter().enumerate() {
        if !seen[idx] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

proptest! {
    #[test]
    fn lua_form_round_trips(cfg in config(any_option().boxed())) {
        let text = cfg.to_lua_string();
        let back = ClusterConfig::parse_lua(&text);
        prop_assert_eq!(back.as_ref(), Ok(&cfg), "text:\n{}", text);
        // Writing is deterministic.
        prop_assert_eq!(back.unwrap().to_lua_string(), text);
    }

    #[test]
    fn toml_form_round_trips(cfg in config(canonical_option().boxed())) {
        let text = cfg.to_toml_string();
        let back = ClusterConfig::parse_toml(&text);
        prop_assert_eq!(back.as_ref(), Ok(&cfg), "text:\n{}", text);
        prop_assert_eq!(back.unwrap().to_toml_string(), text);
    }

    #[test]
    fn lua_and_toml_agree(cfg in config(canonical_option().boxed())) {
        let via_lua = ClusterConfig::parse_lua(&cfg.to_lua_string()).unwrap();
        let via_both = ClusterConfig::parse_toml(&via_lua.to_toml_string()).unwrap();
        prop_assert_eq!(via_both, cfg);
    }

    #[test]
    fn hash_is_the_same_in_both_forms(cfg in config(canonical_option().boxed())) {
        let via_lua = ClusterConfig::parse_lua(&cfg.to_lua_string()).unwrap();
        let via_toml = ClusterConfig::parse_toml(&cfg.to_toml_string()).unwrap();
        prop_assert_eq!(via_lua.content_hash(), cfg.content_hash());
        prop_assert_eq!(via_toml.content_hash(), cfg.content_hash());
        prop_assert_eq!(via_lua.version, cfg.version);
        prop_assert_eq!(via_toml.version, cfg.version);
    }

    #[test]
    fn hash_ignores_order_quoting_and_version(
        cfg in config(canonical_option().boxed()),
        order in proptest::collection::vec(0usize..64, 0..32),
        other_version in version(),
    ) {
        let text = shuffled_lua(&cfg, &order);
        let back = ClusterConfig::parse_lua(&text);
        prop_assert!(back.is_ok(), "{:?}\ntext:\n{}", back, text);
        let back = back.unwrap();
        prop_assert_eq!(back.content_hash(), cfg.content_hash(), "text:\n{}", text);
        let bumped = ClusterConfig { version: other_version, ..cfg.clone() };
        prop_assert_eq!(bumped.content_hash(), cfg.content_hash());
        prop_assert_eq!(cfg.content_hash().short().len(), 16);
    }

    #[test]
    fn hash_changes_with_content(cfg in config(canonical_option().boxed()), port in any::<u16>()) {
        let mut other = cfg.clone();
        let moved = format!("127.0.0.1:{port}");
        let name = "hash_probe".to_string();
        let before = other.nodes.insert(name, NodeEntry::Up(moved.clone()));
        prop_assume!(before != Some(NodeEntry::Up(moved)));
        prop_assert_ne!(other.content_hash(), cfg.content_hash());
        let mut flipped = cfg.clone();
        flipped.nowaiting = !cfg.nowaiting;
        prop_assert_ne!(flipped.content_hash(), cfg.content_hash());
    }

    #[test]
    fn parsers_never_panic(text in "(?s).{0,200}") {
        for result in [ClusterConfig::parse_lua(&text), ClusterConfig::parse_toml(&text)] {
            if let Err(RegistryError::Parse { line, reason }) = result {
                prop_assert!(line >= 1 && line <= text.lines().count() + 1, "line {} of {:?}", line, text);
                prop_assert!(!reason.is_empty());
            }
        }
    }

    #[test]
    fn lua_parser_never_panics_on_near_misses(
        pieces in proptest::collection::vec(
            prop_oneof![
                Just("lobby"), Just(" = "), Just("\"127.0.0.1:1\""), Just("false"), Just("true"),
                Just(","), Just(";"), Just("\n"), Just("--"), Just("--[["), Just("]]"), Just("["),
                Just("]"), Just("{"), Just("}"), Just("return"), Just("\"\\"), Just("'"),
                Just("__nowaiting"), Just("0x"), Just("-1e"), Just("\\u{"), Just("\\z"),
            ],
            0..30,
        )
    ) {
        let text: String = pieces.concat();
        let _ = ClusterConfig::parse_lua(&text);
    }
}

#[test]
fn empty_config_writes_parseable_text() {
    let cfg = ClusterConfig {
        version: 0,
        nodes: BTreeMap::new(),
        nowaiting: false,
        options: BTreeMap::new(),
    };
    assert_eq!(ClusterConfig::parse_lua(&cfg.to_lua_string()).unwrap(), cfg);
    assert_eq!(
        ClusterConfig::parse_toml(&cfg.to_toml_string()).unwrap(),
        cfg
    );
}
