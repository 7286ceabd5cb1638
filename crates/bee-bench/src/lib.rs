//! # bee-bench — the benchmark client behind `cargo xtask bench`
//!
//! Measures bee the way the skynet v1.6.0 reference bench measures skynet, so the two
//! compare directly (two processes on one machine, same message shapes):
//!
//! | id | what | module |
//! |---|---|---|
//! | B1 | local call, 1 and 64 concurrent callers, 16-byte string | [`local`] |
//! | B2 | cluster call latency, one in flight (p50/p99) | [`cluster`] |
//! | B3 | cluster call throughput, 64 in flight | [`cluster`] |
//! | B4 | push throughput, 64-byte strings, counted at the receiver | [`cluster`] |
//! | B5 | 1 MiB echo (MiB/s of payload, one direction) | [`cluster`] |
//! | B6 | RSS of the serving node idle, after B3, peak | [`rss`] |
//! | SQL | point selects/s through the cluster to `mysqlpool` vs mysql_async direct | [`mysql`] |
//! | LUASQL | `skynet.db.mysql` point selects from a Lua service, bee vs stock skynet (same config) | [`luasql`] |
//! | API | handler API (`Dispatcher` command, typed args) vs a raw `Service`, local and cluster | [`api`] |
//! | GATE | a Lua echo on skynet's `snax.gateserver`, 100 connections pipelining netpack frames, and memory per idle connection, bee vs stock skynet (same config) | [`gate`] |
//! | LUA | skynet's Lua on bee vs stock skynet, same scripts: same-node `skynet.call`, `cluster.call` across two nodes, memory per idle Lua service | [`lua`] |
//! | CPP | C++ `rpc_call` (a skynet C module on the bee C++ SDK) vs a Rust `NativeEndpoint` caller, same path to a Lua-style service | [`cpp_rpc`] |
//!
//! [`floor`] is the bare tokio TCP echo (same 2-byte big-endian framing, same sizes):
//! what the machine does with no framework at all. [`report`] turns the collected JSON
//! into the markdown table of `BENCHMARKS.md`.
//!
//! Every reply is checked (echoed bytes equal what was sent) and counted as an error
//! otherwise; pushes are counted at the receiver and losses reported.

pub mod api;
pub mod busypoll;
pub mod cluster;
pub mod cpp_rpc;
pub mod error;
pub mod floor;
pub mod gate;
pub mod handover;
pub mod load;
pub mod local;
pub mod lua;
pub mod luasql;
pub mod mysql;
pub mod nodeproc;
pub mod report;
pub mod rss;
pub mod scale;
pub mod stats;

pub use error::BenchError;
