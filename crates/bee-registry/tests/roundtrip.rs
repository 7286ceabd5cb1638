//! Property tests: random cluster configs survive both text forms unchanged, and the
//! parsers never panic on arbitrary text.

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

fn config(options: BoxedStrategy<String>) -> impl Strategy<Value = ClusterConfig> {
    (
        proptest::collection::btree_map(node_name(), entry(), 0..12),
        any::<bool>(),
        proptest::collection::btree_map(
            "__[a-z][a-z0-9_]{0,8}".prop_filter("a field of its own", |k| k != "__nowaiting"),
            options,
            0..4,
        ),
    )
        .prop_map(|(nodes, nowaiting, options)| ClusterConfig {
            nodes,
            nowaiting,
            options,
        })
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
