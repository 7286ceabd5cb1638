//! Handler API vs raw [`Service`]: what the typed command table costs.
//!
//! The same work three ways, on one node:
//!
//! - **raw**: a hand-written [`Service`] that unpacks the skynet.pack payload, checks
//!   `("lua", "echo", string)` itself (the string must be UTF-8, as a Rust `String`
//!   argument requires) and packs the reply;
//! - **raw reader**: the same checks, reading the values one at a time off the payload
//!   ([`seri::Reader`], no `Vec<Value>`) — the fastest a hand-written service gets;
//! - **api**: a [`Dispatcher`] with one `"lua"` command,
//!   `.command("echo", |_s, s: Str| Ok(s))` (the synchronous shortcut: no future, no
//!   handle);
//! - **handler**: the same command in the one handler shape,
//!   `.handler("echo", |_h, s: Str| async move { Ok(s) })` (a handle and a boxed future
//!   per call).
//!
//! All get `("lua", "echo", "0123456789abcdef")` and must answer the packed string; every
//! reply is compared byte for byte. Three sets are measured: a local call with 1 caller,
//! with 64 concurrent callers, and a cluster call with 64 in flight (serving node and
//! client node in this process, over a real loopback connection). Within a set the
//! variants are interleaved in short rounds, each round starting with the next variant,
//! so a machine whose load drifts treats them alike; each variant's rate is its calls
//! over its own seconds, summed over the rounds.

use std::time::Duration;

use bee_cluster::{Cluster, ClusterSettings};
use bee_codec::seri::{self, Value};
use bee_registry::{ClusterConfig, Registry};
use bee_runtime::handle::pack_lua;
use bee_runtime::{
    Addr, Context, Dispatcher, HandleResult, Message, Node, RuntimeConfig, Service, ServiceError,
    Str,
};
use bytes::Bytes;
use serde::Serialize;

use crate::load::{drive, Load};
use crate::BenchError;

/// The string echoed by every call (16 bytes, as B1).
const TEXT: &str = "0123456789abcdef";

/// The raw variant: `("lua", "echo", s)` → `s`, unpacked and packed by hand.
pub struct RawEcho;

impl Service for RawEcho {
    async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
        let mut values = seri::unpack(&msg.payload)?;
        let ok = values.len() == 3
            && values[0].as_bytes() == Some(b"lua")
            && values[1].as_bytes() == Some(b"echo")
            && values[2]
                .as_bytes()
                .is_some_and(|b| std::str::from_utf8(b).is_ok());
        if !ok {
            return Err(ServiceError::msg(
                "raw echo takes (\"lua\", \"echo\", string)",
            ));
        }
        let s = values.pop().unwrap_or(Value::Nil);
        Ok(Some(seri::pack(&[s])?))
    }
}

/// The raw variant at its best: the same checks, reading the values one at a time off
/// the payload ([`seri::Reader`]) with no `Vec<Value>`, as the handler API does.
pub struct RawReaderEcho;

impl Service for RawReaderEcho {
    async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
        let mut r = seri::Reader::new(&msg.payload);
        let head = r.next_if_string() == Some(b"lua") && r.next_if_string() == Some(b"echo");
        match r.next_value() {
            Some(Ok(s @ Value::String(_))) if head && r.is_empty() && s.as_str().is_some() => {
                Ok(Some(seri::pack(&[s])?))
            }
            Some(Err(e)) => Err(e.into()),
            _ => Err(ServiceError::msg(
                "raw echo takes (\"lua\", \"echo\", string)",
            )),
        }
    }
}

/// The handler-API variant: one typed `"lua"` command.
pub fn api_echo() -> Dispatcher<()> {
    // `Str`: the zero-copy string argument (a `String` costs an allocation and a copy
    // per call that the raw service does not make).
    Dispatcher::new(()).command("echo", |_s, s: Str| Ok(s))
}

/// The same command in the one handler shape (a body that awaits nothing).
pub fn handler_echo() -> Dispatcher<()> {
    Dispatcher::new(()).handler("echo", |_h, s: Str| async move { Ok(s) })
}

/// How long to measure.
#[derive(Debug, Clone, Copy)]
pub struct ApiParams {
    /// Seconds per variant per pair, summed over the rounds.
    pub seconds: f64,
    /// Rounds each pair is split into (each round runs both variants once).
    pub rounds: usize,
}

impl ApiParams {
    /// 5 s per variant per pair, in 10 rounds.
    pub fn full() -> ApiParams {
        ApiParams {
            seconds: 5.0,
            rounds: 10,
        }
    }

    /// A tenth of that.
    pub fn quick() -> ApiParams {
        ApiParams {
            seconds: 0.5,
            rounds: 10,
        }
    }
}

/// One pair's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ApiPair {
    /// What was called: `local, 1 caller`, `local, 64 callers`, `cluster, 64 in flight`.
    pub what: String,
    /// Concurrent callers.
    pub callers: usize,
    /// Raw service that unpacks the payload ([`RawEcho`]): calls per second.
    pub raw_calls_per_s: f64,
    /// Raw service that reads values off the payload ([`RawReaderEcho`]): calls per
    /// second.
    pub reader_calls_per_s: f64,
    /// Handler API, synchronous shortcut (`command`): calls per second.
    pub api_calls_per_s: f64,
    /// Handler API, the one handler shape (`handler`): calls per second.
    pub handler_calls_per_s: f64,
    /// `api / raw`: 1.0 is "costs nothing"; the bar is ≥ 0.95.
    pub ratio: f64,
    /// `api / raw reader`: against the fastest hand-written service; same bar.
    pub ratio_reader: f64,
    /// `handler / api`: the one handler shape against the synchronous shortcut, same
    /// work (1.0: the shape costs nothing more).
    pub ratio_handler: f64,
    /// Raw calls completed.
    pub raw_calls: u64,
    /// Raw-reader calls completed.
    pub reader_calls: u64,
    /// API calls completed.
    pub api_calls: u64,
    /// One-shape handler calls completed.
    pub handler_calls: u64,
    /// Seconds each variant ran, in total.
    pub seconds_each: f64,
    /// Failed or wrong replies, all variants.
    pub errors: u64,
}

/// What the run measured.
#[derive(Debug, Clone, Serialize)]
pub struct ApiResult {
    /// Rounds per pair.
    pub rounds: usize,
    /// The pairs, in the order run.
    pub pairs: Vec<ApiPair>,
    /// Failed or wrong replies over all pairs.
    pub errors: u64,
}

/// Where a caller sends: a local address, or a name on a node through the cluster.
#[derive(Clone)]
enum Path {
    Local(Node, Addr),
    Cluster(Cluster, String, String),
}

impl Path {
    async fn call(&self, payload: Bytes) -> Option<Bytes> {
        match self {
            Path::Local(node, addr) => node.call(*addr, payload).await.ok(),
            Path::Cluster(c, node, name) => c.call(node, name.as_str(), payload).await.ok(),
        }
    }
}

async fn load(path: &Path, callers: usize, seconds: f64) -> Result<Load, BenchError> {
    let payload = pack_lua("echo", (TEXT,)).map_err(|e| BenchError::Call {
        what: "pack the echo request".into(),
        reason: e.to_string(),
    })?;
    let expected = seri::pack(&[Value::from(TEXT)])?;
    let path = path.clone();
    Ok(drive(callers, seconds, move |_, _| {
        let (path, payload, expected) = (path.clone(), payload.clone(), expected.clone());
        async move { path.call(payload).await.is_some_and(|r| r == expected) }
    })
    .await)
}

/// Measure one set (raw, raw reader, api, handler), interleaved in rounds; a short
/// warm-up of each first.
async fn pair(
    what: &str,
    paths: [&Path; 4],
    callers: usize,
    p: &ApiParams,
) -> Result<ApiPair, BenchError> {
    let rounds = p.rounds.max(1);
    let slice = p.seconds / rounds as f64;
    let warm = slice.min(0.1);
    let mut errors = 0;
    for path in paths {
        errors += load(path, callers, warm).await?.errors;
    }
    let mut acc = [Load::default(); 4];
    for round in 0..rounds {
        // Each round starts with the next variant, so none always goes first.
        for k in 0..4 {
            let v = (round + k) % 4;
            let l = load(paths[v], callers, slice).await?;
            acc[v].done += l.done;
            acc[v].errors += l.errors;
            acc[v].seconds += l.seconds;
        }
    }
    errors += acc.iter().map(|l| l.errors).sum::<u64>();
    let [r, rr, a, h] = acc;
    let (raw_rate, reader_rate, api_rate, handler_rate) = (
        r.per_second(),
        rr.per_second(),
        a.per_second(),
        h.per_second(),
    );
    let over = |x: f64, base: f64| if base > 0.0 { x / base } else { 0.0 };
    let ratio = |base: f64| over(api_rate, base);
    let out = ApiPair {
        what: what.to_string(),
        callers,
        raw_calls_per_s: raw_rate,
        reader_calls_per_s: reader_rate,
        api_calls_per_s: api_rate,
        handler_calls_per_s: handler_rate,
        ratio: ratio(raw_rate),
        ratio_reader: ratio(reader_rate),
        ratio_handler: over(handler_rate, api_rate),
        raw_calls: r.done,
        reader_calls: rr.done,
        api_calls: a.done,
        handler_calls: h.done,
        seconds_each: (r.seconds + rr.seconds + a.seconds + h.seconds) / 4.0,
        errors,
    };
    eprintln!(
        "API vs raw, {what}: raw {:.0} calls/s, raw reader {:.0} calls/s, api {:.0} calls/s, \
         handler {:.0} calls/s, api/raw {:.3}, api/raw reader {:.3}, handler/api {:.3} \
         ({errors} errors)",
        out.raw_calls_per_s,
        out.reader_calls_per_s,
        out.api_calls_per_s,
        out.handler_calls_per_s,
        out.ratio,
        out.ratio_reader,
        out.ratio_handler
    );
    Ok(out)
}

/// Run the three pairs (see the module doc).
pub async fn run(p: &ApiParams) -> Result<ApiResult, BenchError> {
    // The serving node: both variants, registered for the cluster.
    let server = Node::new("apisrv", RuntimeConfig::default());
    let config = |text: &str| {
        ClusterConfig::parse_lua(text).map_err(|e| BenchError::ClusterConfig {
            path: "(in memory)".into(),
            reason: e.to_string(),
        })
    };
    let srv_cluster = Cluster::start(
        &server,
        Registry::new(config("__nowaiting = true\n")?),
        ClusterSettings::default(),
    );
    let raw = server.spawn_named("raw_echo", RawEcho);
    let reader = server.spawn_named("raw_reader_echo", RawReaderEcho);
    let api = server.spawn_named("api_echo", api_echo());
    let handler = server.spawn_named("handler_echo", handler_echo());
    let listen = srv_cluster
        .open("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Call {
            what: "listen on 127.0.0.1".into(),
            reason: e.to_string(),
        })?;
    // The client node: calls the serving node over loopback.
    let client = Node::new("apiclient", RuntimeConfig::default());
    let settings = ClusterSettings {
        wait_for_node: Some(Duration::ZERO),
        ..ClusterSettings::default()
    };
    let cli_cluster = Cluster::start(
        &client,
        Registry::new(config(&format!("apisrv = \"{listen}\"\n"))?),
        settings,
    );

    let local = |a| Path::Local(server.clone(), a);
    let remote = |n: &str| Path::Cluster(cli_cluster.clone(), "apisrv".into(), n.into());
    let result = async {
        Ok::<_, BenchError>(vec![
            pair(
                "local, 1 caller",
                [&local(raw), &local(reader), &local(api), &local(handler)],
                1,
                p,
            )
            .await?,
            pair(
                "local, 64 callers",
                [&local(raw), &local(reader), &local(api), &local(handler)],
                64,
                p,
            )
            .await?,
            pair(
                "cluster, 64 in flight",
                [
                    &remote("raw_echo"),
                    &remote("raw_reader_echo"),
                    &remote("api_echo"),
                    &remote("handler_echo"),
                ],
                64,
                p,
            )
            .await?,
        ])
    }
    .await;
    client.shutdown();
    server.shutdown();
    let pairs = result?;
    Ok(ApiResult {
        rounds: p.rounds.max(1),
        errors: pairs.iter().map(|x| x.errors).sum(),
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn both_variants_are_measured_and_every_reply_checked() {
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            run(&ApiParams {
                seconds: 0.2,
                rounds: 2,
            }),
        )
        .await
        .expect("finished in time")
        .expect("ran");
        assert_eq!(r.errors, 0, "{r:?}");
        assert_eq!(r.pairs.len(), 3);
        for x in &r.pairs {
            assert!(
                x.raw_calls > 10 && x.reader_calls > 10 && x.api_calls > 10 && x.handler_calls > 10,
                "{x:?}"
            );
            assert!(
                x.ratio > 0.0 && x.ratio_reader > 0.0 && x.ratio_handler > 0.0,
                "{x:?}"
            );
            assert!(x.seconds_each >= 0.2, "{x:?}");
        }
    }

    #[tokio::test]
    async fn both_variants_answer_alike_and_refuse_alike() {
        let node = Node::new("apitest", RuntimeConfig::default());
        let raw = node.spawn("raw", RawEcho);
        let reader = node.spawn("raw_reader", RawReaderEcho);
        let api = node.spawn("api", api_echo());
        let handler = node.spawn("handler", handler_echo());
        let good = pack_lua("echo", (TEXT,)).unwrap();
        let want = seri::pack(&[Value::from(TEXT)]).unwrap();
        for bad in [
            pack_lua("echo", (TEXT, 1)).unwrap(),
            pack_lua("echo", (7,)).unwrap(),
            pack_lua("echo", (Bytes::from_static(b"\xff\xfe"),)).unwrap(),
            pack_lua("other", (TEXT,)).unwrap(),
        ] {
            for to in [raw, reader, api, handler] {
                assert!(node.call(to, bad.clone()).await.is_err(), "{bad:?} to {to}");
            }
        }
        for to in [raw, reader, api, handler] {
            assert_eq!(node.call(to, good.clone()).await.unwrap(), want);
        }
        node.shutdown();
    }
}
