//! # bee-registry — who is in the cluster and what they are called
//!
//! bee-registry knows names, not bytes or sockets:
//!
//! - the **cluster config**: node name → `"host:port"` (or marked down), plus skynet's
//!   `__` options such as `__nowaiting`, read from skynet's `clustername.lua` form or TOML
//!   and written back in either;
//! - the **names registered on this node** (`register("lpersistence", addr)`), which peers
//!   reach as `"@lpersistence"` and find with `query`;
//! - **change notification**: reload/replace return a [`ConfigDiff`], every change is
//!   broadcast as a [`RegistryEvent`], and two generation counters let callers keep cheap
//!   caches (`"@name"` lookups are valid while [`Registry::generation`] is unchanged).
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
//! | `src/config.rs` | [`ClusterConfig`], [`NodeEntry`]; the Lua-form lexer and parser, the TOML form, writing both back, address checks |
//! | `src/registry.rs` | [`Registry`] (config + names behind `RwLock`s, generations, broadcast), [`ConfigDiff`], [`RegistryEvent`], [`ServiceAddr`] |
//! | `src/error.rs` | [`RegistryError`] |
//! | `tests/roundtrip.rs` | property tests: random configs round-trip through both text forms |
//!
//! # Differences from skynet
//!
//! - Registering a name that is already registered moves it to the new address (skynet
//!   asserts); an address may carry several names (skynet keeps one name per address).
//! - A key set twice in a config file is an error naming both lines (Lua silently keeps
//!   the last).
//! - [`Registry::replace`] exists besides the merging [`Registry::reload`], for
//!   force-updating a whole node.

mod config;
mod error;
mod registry;

pub use config::{ClusterConfig, NodeEntry};
pub use error::RegistryError;
pub use registry::{ConfigDiff, Registry, RegistryEvent, ServiceAddr};
