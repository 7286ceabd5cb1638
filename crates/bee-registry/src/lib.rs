//! # bee-registry — who is in the cluster and what they are called
//!
//! bee-registry knows names, not bytes or sockets:
//!
//! - the **cluster config**: node name → `"host:port"` (or marked down), plus skynet's
//!   `__` options such as `__nowaiting`, read from skynet's `clustername.lua` form or TOML
//!   and written back in either;
//! - the **names registered on this node** (`register("lpersistence", addr)`), which peers
//!   reach as `"@lpersistence"` and find with `query`;
//! - **change notification**: reload/replace/apply return a [`ConfigDiff`], every change is
//!   broadcast as a [`RegistryEvent`] (including [`RegistryEvent::NodeMoved`] for an address
//!   change and [`RegistryEvent::PeerRestarted`] for a peer that came back with another
//!   incarnation), and two generation counters let callers keep cheap caches (`"@name"`
//!   lookups are valid while [`Registry::generation`] is unchanged);
//! - **versioned, checked apply**: a config carries a version and a content hash
//!   ([`ConfigHash`]); [`Registry::apply`] refuses, with a typed [`RegistryError`], a
//!   malformed config, an older version (unless forced) or one that drops this node, and
//!   leaves the running config as it was; [`Registry::meta`] says what runs
//!   ([`ConfigMeta`]: version, hash, when, [`ConfigSource`]);
//! - **incarnations**: [`Registry::incarnation`] tells this process's start apart from an
//!   earlier one under the same node name; [`Registry::set_peer_incarnation`] records
//!   what peers report.
//!
//! ```
//! use bee_registry::{ClusterConfig, Registry};
//!
//! let config = ClusterConfig::parse_lua(r#"
//!     lobby = "127.0.0.1:2528"
//!     shop_master = false   -- down
//! "#).unwrap();
//! let registry = Registry::new(config);
//! assert_eq!(registry.lookup("lobby").unwrap(), "127.0.0.1:2528");
//! assert!(registry.lookup("shop_master").is_err());
//!
//! let diff = registry.reload(ClusterConfig::parse_lua(r#"shop_master = "127.0.0.1:2529""#).unwrap());
//! assert_eq!(diff.to_string(), "up shop_master=127.0.0.1:2529");
//!
//! registry.register("lpersistence", 0x0100_000a).unwrap();
//! assert_eq!(registry.query("lpersistence"), Some(0x0100_000a));
//! ```
//!
//! # Layout
//!
//! | file | what |
//! |---|---|
//! | `src/config.rs` | [`ClusterConfig`], [`NodeEntry`], [`ConfigForm`], [`ConfigHash`]; the Lua-form lexer and parser, the TOML form, writing both back, address checks, validation, the content hash |
//! | `src/registry.rs` | [`Registry`] (config + meta behind one `RwLock`, names, incarnations, generations, broadcast), [`ConfigDiff`], [`ConfigMeta`], [`ConfigSource`], [`RegistryEvent`], [`ServiceAddr`] |
//! | `src/error.rs` | [`RegistryError`] |
//! | `tests/roundtrip.rs` | property tests: random configs round-trip through both text forms; the hash does not depend on form, order or quoting |
//!
//! # Differences from skynet
//!
//! - Registering a name that is already registered moves it to the new address (skynet
//!   asserts); an address may carry several names (skynet keeps one name per address).
//! - A key set twice in a config file is an error naming both lines (Lua silently keeps
//!   the last).
//! - [`Registry::replace`] exists besides the merging [`Registry::reload`], for
//!   force-updating a whole node; [`Registry::apply`] is the checked whole-config path.
//! - `__version` is read as the config's version, not kept as an option (skynet keeps it as
//!   an option it never uses).

mod config;
mod error;
mod registry;

pub use config::{ClusterConfig, ConfigForm, ConfigHash, NodeEntry, MAX_CONFIG_BYTES};
pub use error::RegistryError;
pub use registry::{
    ConfigDiff, ConfigMeta, ConfigSource, PeerNames, Registry, RegistryEvent, ServiceAddr,
};
