//! Built-in services every node can start by kind: `echo`, `echo_values`, `sink`,
//! `slow` and `sequence`.
//!
//! - `echo` replies with exactly the payload it got (its arguments, unchanged, without
//!   unpacking them) — the simplest thing to call across the cluster.
//! - `echo_values` unpacks its skynet.pack arguments and packs them again as the reply —
//!   what a Lua `skynet.ret(skynet.pack(...))` echo does, so a benchmark against it
//!   compares equal server work with a skynet echo.
//! - `sink` counts what is pushed to it; a call `("count")` answers the count and
//!   `("reset")` answers it and starts again from 0. Any other call is an error (as
//!   the skynet-side sink of the interop checks does), so a caller sees a remote
//!   handler error travel back.
//! - `slow` answers a call `(ms, ...)` after `ms` milliseconds with its whole payload
//!   (like `echo`, late) — for testing timeouts and calls in flight. Calls wait
//!   concurrently: a slow call does not hold up the next one. A first argument that is
//!   not a delay in `0..=`[`SLOW_MAX_MS`] is answered with an error; pushes are ignored.
//! - `sequence` checks delivery: each push `(sender, seq)` must carry the sender's next
//!   number (1, 2, …); so must a call `("check", sender, seq)`, which answers the number
//!   it expected — calls and pushes of one sender share one sequence, so a call that
//!   overtook a push is seen. A call `("report")` answers `received, out_of_order,
//!   senders`, `("last", sender)` the sender's last number, `("first", sender)` the
//!   first number this process got from it. Its table crosses a hot update, so a check
//!   spans every process of the node (exactly once, in order per sender); when the
//!   service stops it logs its table (`sequence checker stopped first=a:1 b:1
//!   last=a:12 b:40`),
//!   so a check can also span a plain restart.

use std::collections::BTreeMap;
use std::time::Duration;

use bee_codec::seri::{self, Value};

use crate::service::{Context, HandleResult, Message, Service, ServiceError};

/// Replies with its payload.
#[derive(Debug, Default)]
pub struct Echo;

impl Service for Echo {
    async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
        Ok(Some(msg.payload))
    }
}

/// Replies with its arguments, unpacked and packed again.
#[derive(Debug, Default)]
pub struct EchoValues;

impl Service for EchoValues {
    async fn handle(&mut self, _ctx: &mut Context, msg: Message) -> HandleResult {
        let values = seri::unpack(&msg.payload)?;
        Ok(Some(seri::pack(&values)?))
    }
}

/// Counts pushes; answers `count` / `reset`.
#[derive(Debug, Default)]
pub struct Sink {
    count: u64,
}

impl Service for Sink {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        if !ctx.wants_reply() {
            self.count += 1;
            return Ok(None);
        }
        let values = seri::unpack(&msg.payload)?;
        let reply = match values.first().and_then(Value::as_bytes) {
            Some(b"count") => self.count,
            Some(b"reset") => std::mem::take(&mut self.count),
            _ => {
                return Err(ServiceError::msg(
                    "sink counts pushes; a call must be \"count\" or \"reset\"",
                ))
            }
        };
        Ok(Some(seri::pack(&[Value::Integer(reply as i64)])?))
    }
}

/// Longest delay [`Slow`] accepts, in milliseconds (10 minutes).
pub const SLOW_MAX_MS: i64 = 600_000;

/// Answers a call `(ms, ...)` with its payload after `ms` milliseconds.
#[derive(Debug, Default)]
pub struct Slow;

impl Service for Slow {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        if !ctx.wants_reply() {
            return Ok(None);
        }
        let values = seri::unpack(&msg.payload)?;
        let ms = match values.first() {
            Some(Value::Integer(ms)) if (0..=SLOW_MAX_MS).contains(ms) => *ms as u64,
            other => {
                let got = other.map_or("nothing".to_string(), ToString::to_string);
                return Err(ServiceError::msg(format!(
                    "slow: the first argument must be the delay in milliseconds \
                     (0..={SLOW_MAX_MS}), got {got}"
                )));
            }
        };
        // Answer from a task, so the next call starts its own wait right away.
        if let Some(reply) = ctx.take_reply() {
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                reply.ok(msg.payload);
            });
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::service::{CallError, Node, RuntimeConfig};

    fn pack(values: &[Value]) -> bytes::Bytes {
        seri::pack(values).expect("pack")
    }

    #[tokio::test]
    async fn slow_answers_late_and_concurrently() {
        let node = Node::new("t", RuntimeConfig::default());
        let slow = node.spawn("slow", Slow);
        let started = Instant::now();
        let calls: Vec<_> = (0..4)
            .map(|i| {
                let node = node.clone();
                tokio::spawn(async move {
                    node.call(slow, pack(&[Value::Integer(200), Value::Integer(i)]))
                        .await
                })
            })
            .collect();
        for (i, c) in calls.into_iter().enumerate() {
            let reply = c.await.expect("task").expect("slow call");
            assert_eq!(
                reply,
                pack(&[Value::Integer(200), Value::Integer(i as i64)])
            );
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(200),
            "answered too early: {took:?}"
        );
        assert!(
            took < Duration::from_millis(700),
            "calls waited one after another: {took:?}"
        );
    }

    #[tokio::test]
    async fn slow_refuses_a_bad_delay() {
        let node = Node::new("t", RuntimeConfig::default());
        let slow = node.spawn("slow", Slow);
        for bad in [
            vec![],
            vec![Value::from("soon")],
            vec![Value::Integer(-1)],
            vec![Value::Integer(SLOW_MAX_MS + 1)],
        ] {
            match node.call(slow, pack(&bad)).await {
                Err(CallError::Failed { message, .. }) => {
                    assert!(
                        message.starts_with("slow: the first argument must be the delay"),
                        "{message}"
                    )
                }
                other => panic!("{bad:?}: expected an error, got {other:?}"),
            }
        }
        // A push is ignored; the service keeps answering.
        node.send(slow, pack(&[Value::Integer(5)]))
            .await
            .expect("push");
        assert!(node.call(slow, pack(&[Value::Integer(0)])).await.is_ok());
    }
}

/// Checks that each sender's numbered pushes arrive once and in order; see the module doc.
#[derive(Debug, Default)]
pub struct Sequence {
    last: BTreeMap<String, i64>,
    /// The first number this process got from each sender (not carried over).
    first: BTreeMap<String, i64>,
    received: u64,
    out_of_order: u64,
}

impl Sequence {
    /// Count `seq` from `sender`; returns the number that was expected.
    fn note(&mut self, sender: &[u8], seq: i64) -> i64 {
        let sender = String::from_utf8_lossy(sender).into_owned();
        self.first.entry(sender.clone()).or_insert(seq);
        let last = self.last.entry(sender.clone()).or_insert(0);
        let expected = *last + 1;
        self.received += 1;
        if seq != expected {
            self.out_of_order += 1;
            tracing::warn!(%sender, seq, expected, "sequence: out of order, lost or repeated");
        }
        *last = (*last).max(seq);
        expected
    }
}

impl Drop for Sequence {
    fn drop(&mut self) {
        let table = |t: &BTreeMap<String, i64>| {
            t.iter()
                .map(|(s, n)| format!("{s}:{n}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        tracing::info!(
            received = self.received,
            out_of_order = self.out_of_order,
            "sequence checker stopped first={} last={}",
            table(&self.first),
            table(&self.last)
        );
    }
}

impl Service for Sequence {
    async fn handle(&mut self, ctx: &mut Context, msg: Message) -> HandleResult {
        let values = seri::unpack(&msg.payload)?;
        let bytes = |i: usize| values.get(i).and_then(Value::as_bytes);
        if !ctx.wants_reply() {
            let (Some(sender), Some(seq)) = (bytes(0), values.get(1).and_then(Value::as_int))
            else {
                return Err(ServiceError::msg("sequence takes pushes (sender, seq)"));
            };
            self.note(sender, seq);
            return Ok(None);
        }
        let sender = || {
            bytes(1)
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default()
        };
        let reply = match bytes(0) {
            Some(b"check") => {
                let (Some(sender), Some(seq)) = (bytes(1), values.get(2).and_then(Value::as_int))
                else {
                    return Err(ServiceError::msg(
                        "sequence: \"check\" takes (sender, seq)",
                    ));
                };
                vec![Value::Integer(self.note(sender, seq))]
            }
            Some(b"first") => vec![Value::Integer(
                self.first.get(&sender()).copied().unwrap_or(0),
            )],
            Some(b"report") => vec![
                Value::Integer(self.received as i64),
                Value::Integer(self.out_of_order as i64),
                Value::Integer(self.last.len() as i64),
            ],
            Some(b"last") => vec![Value::Integer(
                self.last.get(&sender()).copied().unwrap_or(0),
            )],
            _ => {
                return Err(ServiceError::msg(
                    "sequence: a call must be \"report\", (\"last\", sender), (\"first\", sender) or (\"check\", sender, seq)",
                ))
            }
        };
        Ok(Some(seri::pack(&reply)?))
    }

    fn export_state(&mut self) -> Option<Vec<u8>> {
        let mut values = vec![
            Value::Integer(self.received as i64),
            Value::Integer(self.out_of_order as i64),
        ];
        for (sender, last) in &self.last {
            values.push(Value::from(sender.as_str()));
            values.push(Value::Integer(*last));
        }
        seri::pack(&values).ok().map(|b| b.to_vec())
    }

    fn import_state(&mut self, state: &[u8]) -> Result<(), ServiceError> {
        let values = seri::unpack(&bytes::Bytes::copy_from_slice(state))?;
        let int = |i: usize| values.get(i).and_then(Value::as_int).unwrap_or(0);
        self.received = int(0) as u64;
        self.out_of_order = int(1) as u64;
        for pair in values[2.min(values.len())..].chunks(2) {
            if let [Value::String(s), Value::Integer(n)] = pair {
                self.last
                    .insert(String::from_utf8_lossy(s).into_owned(), *n);
            }
        }
        Ok(())
    }
}
