//! The reader task of one connection of a [`Channel`]: decodes response
//! frames, reassembles multi-part responses (charged to the node's inbound budget from
//! their first frame), and wakes the waiting callers, taking the session-table lock once
//! per batch of frames read together. A `goaway` from the peer retires the connection.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bee_codec::cluster::{
    decode_response_frame, AssemblyError, Limits, Response, ResponseAssembler, ResponseFrame,
};
use bytes::Bytes;
use tokio::net::tcp::OwnedReadHalf;

use super::conn::{io_failure, Conn, Waiter};
use super::Channel;
use crate::budget::{ByteBudget, Permit};
use crate::connection::{Connection, ReadError};
use crate::error::TransportError;
use crate::listener::{GOAWAY, OVERLOADED};
use crate::throttle::warn_allowed;

/// What the reader does with one decoded frame.
enum Step {
    Continue,
    Fail(TransportError),
}

/// The reader task of one connection.
pub(super) async fn read_responses(
    conn: Arc<Conn>,
    mut reader: Connection<OwnedReadHalf>,
    limits: Limits,
    budget: Option<ByteBudget>,
) {
    let mut assembler = Assembly {
        responses: ResponseAssembler::new(limits),
        budget,
        held: HashMap::new(),
        dropped: HashSet::new(),
    };
    let mut ready: Vec<Answer> = Vec::new();
    let mut wake: Vec<(Waiter, Result<Bytes, TransportError>)> = Vec::new();
    let mut unknown: Vec<u32> = Vec::new();
    loop {
        let first = tokio::select! {
            r = reader.read_frame() => r,
            _ = conn.cancel.cancelled() => return,
        };
        let mut step = match first {
            Ok(Some(body)) => {
                conn.queue.activity.stamp_received();
                conn.timeouts.reset();
                handle_frame(&conn, &mut assembler, body, &mut ready)
            }
            Ok(None) => Step::Fail(TransportError::NodeDown {
                node: conn.node.clone(),
                reason: "the peer closed the connection".into(),
            }),
            Err(ReadError::Io(e)) => Step::Fail(io_failure(&conn, "read failed", &e)),
            Err(e) => Step::Fail(TransportError::NodeDown {
                node: conn.node.clone(),
                reason: e.to_string(),
            }),
        };
        // Everything already buffered is handled before the next read, under one lock.
        while matches!(step, Step::Continue) {
            match reader.buffered_frame() {
                Ok(Some(body)) => step = handle_frame(&conn, &mut assembler, body, &mut ready),
                Ok(None) => break,
                Err(e) => {
                    step = Step::Fail(TransportError::Protocol {
                        node: conn.node.clone(),
                        reason: e.to_string(),
                    })
                }
            }
        }
        if !ready.is_empty() {
            {
                let mut g = conn.lock();
                for (session, result) in ready.drain(..) {
                    match g.state.pending.remove(&session) {
                        Some(tx) => wake.push((tx, result)),
                        None => unknown.push(session),
                    }
                }
                conn.set_in_flight(g.state.pending.len());
            }
            for (tx, result) in wake.drain(..) {
                let _ = tx.send(result);
            }
            for session in unknown.drain(..) {
                if let Some(suppressed) = warn_allowed("unknown_session", &conn.node) {
                    tracing::warn!(node = %conn.node, session, suppressed, "response for an unknown session (the call timed out or was cancelled); dropped");
                }
            }
        }
        if let Step::Fail(err) = step {
            if matches!(err, TransportError::Protocol { .. }) {
                if let Some(suppressed) = warn_allowed("protocol", &conn.node) {
                    tracing::warn!(node = %conn.node, error = %err, suppressed, "closing connection");
                }
            } else {
                tracing::info!(node = %conn.node, error = %err, "connection ended");
            }
            conn.fail(err);
            return;
        }
    }
}

/// A complete reply for a session.
type Answer = (u32, Result<Bytes, TransportError>);

/// Multi-part reassembly of responses, charged to the node's inbound budget.
struct Assembly {
    responses: ResponseAssembler,
    budget: Option<ByteBudget>,
    /// Budget held per response being assembled.
    held: HashMap<u32, Permit>,
    /// Multi-part responses refused for want of budget: their pieces are dropped.
    dropped: HashSet<u32>,
}

fn handle_frame(
    conn: &Arc<Conn>,
    assembler: &mut Assembly,
    body: Bytes,
    ready: &mut Vec<Answer>,
) -> Step {
    let protocol = |reason: String| {
        Step::Fail(TransportError::Protocol {
            node: conn.node.clone(),
            reason,
        })
    };
    let frame = match decode_response_frame(body) {
        Ok(f) => f,
        Err(e) => return protocol(e.to_string()),
    };
    if let ResponseFrame::Err {
        session: 0,
        message,
    } = &frame
    {
        if message.as_ref() == GOAWAY.as_bytes() {
            // The peer drains (see `crate::listener::GOAWAY`): new messages go on a new
            // connection, this one closes once its calls are answered.
            if let Some(shared) = conn.channel.upgrade() {
                let current = shared
                    .lock_state()
                    .conn
                    .as_ref()
                    .is_some_and(|c| Arc::ptr_eq(c, conn));
                if current {
                    Channel { shared }.retire();
                }
            }
            return Step::Continue;
        }
    }
    if let ResponseFrame::Piece { session, last, .. } = &frame {
        if assembler.dropped.contains(session) {
            if *last {
                assembler.dropped.remove(session);
            }
            return Step::Continue;
        }
    }
    if let (ResponseFrame::Begin { session, total }, Some(budget)) = (&frame, &assembler.budget) {
        match budget.try_acquire(*total as usize) {
            Some(p) => {
                assembler.held.insert(*session, p);
            }
            None => {
                // Only this reply is refused; the connection and the other calls stay.
                let what = format!(
                    "node inbound budget exhausted ({} of {} bytes held) by a multi-part response of {total} bytes",
                    budget.used(),
                    budget.limit()
                );
                if let Some(suppressed) = warn_allowed("overloaded", &conn.node) {
                    tracing::warn!(node = %conn.node, %what, suppressed, "reply dropped; its call fails with Overloaded");
                }
                conn.metrics.rejected("inbound_budget");
                assembler.dropped.insert(*session);
                ready.push((
                    *session,
                    Err(TransportError::Overloaded {
                        node: conn.node.clone(),
                        what,
                    }),
                ));
                return Step::Continue;
            }
        }
    }
    let fed = assembler.responses.feed(frame);
    if let Ok(Some(Response { session, .. })) | Err(AssemblyError::SizeMismatch { session, .. }) =
        &fed
    {
        assembler.held.remove(session);
    }
    match fed {
        Ok(Some(Response { session, result })) => {
            let result = result.map_err(|text| remote_error(&conn.node, &text));
            ready.push((session, result));
        }
        Ok(None) => {}
        Err(AssemblyError::SizeMismatch {
            session,
            announced,
            got,
        }) => {
            // Only this reply is broken; framing is intact, so the connection stays.
            ready.push((
                session,
                Err(TransportError::Protocol {
                    node: conn.node.clone(),
                    reason: format!(
                        "multi-part response announced {announced} bytes but carried {got}"
                    ),
                }),
            ));
        }
        Err(AssemblyError::UnknownSession { session }) => {
            if let Some(suppressed) = warn_allowed("unknown_session", &conn.node) {
                tracing::warn!(node = %conn.node, session, suppressed, "response piece for a session with no multi-part response in progress; dropped");
            }
        }
        Err(e) => return protocol(e.to_string()),
    }
    Step::Continue
}

/// The error of an error response: [`TransportError::Overloaded`] when a bee node shed
/// the request ([`OVERLOADED`]), else the remote's text as [`TransportError::Remote`].
fn remote_error(node: &str, text: &[u8]) -> TransportError {
    let message = String::from_utf8_lossy(text).into_owned();
    match message.strip_prefix(OVERLOADED) {
        Some(what) => TransportError::Overloaded {
            node: node.to_string(),
            what: format!("the node shed the call{what}"),
        },
        None => TransportError::Remote {
            node: node.to_string(),
            message,
        },
    }
}
