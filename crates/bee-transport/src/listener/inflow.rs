//! Inbound bytes of one accepted connection: charging requests and multi-part messages
//! to the node's inbound budget ([`Inflow::charge`]), shedding what does not fit
//! ([`Inflow::shed`]: a request answered [`OVERLOADED`], a push dropped), dropping
//! multi-part messages not finished in time ([`expire`]), and queueing answers
//! ([`answer`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::Instant;

use bee_codec::cluster::{encode_response, Address, Request, RequestAssembler, RequestFrame};
use bytes::Bytes;

use super::{ListenerConfig, MULTIPART_EXPIRED, OVERLOADED};
use crate::budget::Permit;
use crate::connection::WriteQueue;
use crate::telemetry::ListenerMetrics;
use crate::throttle::warn_allowed;

/// A multi-part request or push being assembled.
pub(super) struct Partial {
    pub(super) started: Instant,
    pub(super) push: bool,
    /// Node inbound budget held for its announced size.
    pub(super) permit: Option<Permit>,
}

/// Inbound bytes of one connection: multi-part messages being assembled, and what they
/// hold of the node's inbound budget.
pub(super) struct Inflow<'a> {
    pub(super) peer: SocketAddr,
    pub(super) config: &'a ListenerConfig,
    pub(super) partial: HashMap<u32, Partial>,
    /// Sessions of expired multi-part messages whose late pieces are dropped.
    pub(super) expired: HashSet<u32>,
    /// Sessions of multi-part messages shed at their header, whose pieces are dropped as
    /// they come (the sender writes them right behind it, so this stays small).
    pub(super) shed: HashSet<u32>,
    pub(super) metrics: &'a ListenerMetrics,
}

/// A message that does not fit: shed it (`close` false), or close the connection when it
/// could never fit (larger than the whole budget).
pub(super) struct Shed {
    pub(super) text: String,
    pub(super) close: bool,
}

impl Inflow<'_> {
    /// Charge `n` bytes to the node's inbound budget (`Ok(None)` if there is none).
    pub(super) fn charge(&self, n: usize, what: &str) -> Result<Option<Permit>, Shed> {
        let Some(budget) = &self.config.inbound_budget else {
            return Ok(None);
        };
        match budget.try_acquire(n) {
            Some(p) => Ok(Some(p)),
            None if n > budget.limit() => {
                // Counted as a rejection too: the connection is closed for it.
                self.metrics.rejections.increment(1);
                Err(Shed {
                text: format!(
                    "a {what} of {n} bytes is larger than the whole node inbound budget ({} bytes)",
                    budget.limit()
                ),
                close: true,
            })
            }
            None => Err(Shed {
                text: format!(
                    "{OVERLOADED}: node inbound budget exhausted ({} of {} bytes held); a {what} of {n} bytes refused, retry later",
                    budget.used(),
                    budget.limit()
                ),
                close: false,
            }),
        }
    }

    /// Refuse one message that does not fit `limit`: a request is answered `text` at
    /// once, a push is dropped; counted, and logged at most once a second per peer.
    /// Returns whether the write queue is now past its limit.
    pub(super) fn shed(
        &self,
        queue: &WriteQueue<()>,
        session: u32,
        push: bool,
        limit: &'static str,
        text: String,
    ) -> bool {
        let peer = self.peer;
        self.metrics
            .shed(if push { "push" } else { "request" }, limit);
        if let Some(suppressed) = warn_allowed("overloaded", &peer.ip()) {
            let done = if push {
                "push dropped"
            } else {
                "request answered Overloaded"
            };
            tracing::warn!(%peer, limit, suppressed, reason = %text, "shedding load: {done}");
        }
        !push && answer(queue, self.config, session, Err(text)) > self.config.max_queued_bytes
    }
}

/// Expired multi-part sessions remembered per connection (their late pieces are dropped);
/// past this many the connection is closed.
pub(super) const EXPIRED_KEPT: usize = 1024;

/// Drop the multi-part messages older than the timeout: their budget is given back, a
/// request is answered [`MULTIPART_EXPIRED`], late pieces will be dropped. Returns whether
/// the write queue is now past its limit.
pub(super) fn expire(
    flow: &mut Inflow<'_>,
    assembler: &mut RequestAssembler,
    queue: &WriteQueue<()>,
) -> bool {
    let timeout = flow.config.multipart_timeout;
    let old: Vec<u32> = flow
        .partial
        .iter()
        .filter(|(_, p)| p.started.elapsed() >= timeout)
        .map(|(s, _)| *s)
        .collect();
    let mut backlogged = false;
    for session in old {
        let Some(p) = flow.partial.remove(&session) else {
            continue;
        };
        // A whole message under the same session ends the partial one; it is not
        // dispatched (the assembler's only way to drop a partial message).
        let _ = assembler.feed(RequestFrame::Whole(Request {
            address: Address::Id(0),
            session,
            push: true,
            payload: Bytes::new(),
        }));
        flow.expired.insert(session);
        flow.metrics.expired.increment(1);
        let peer = flow.peer;
        if let Some(suppressed) = warn_allowed("multipart_expired", &peer.ip()) {
            tracing::warn!(%peer, session, push = p.push, ?timeout, suppressed, "multi-part message not finished in time; dropped");
        }
        if !p.push {
            backlogged |= answer(queue, flow.config, session, Err(MULTIPART_EXPIRED.into()))
                > flow.config.max_queued_bytes;
        }
    }
    backlogged
}

/// Queue the response of `session`; returns the bytes now waiting to be written.
pub(super) fn answer(
    queue: &WriteQueue<()>,
    config: &ListenerConfig,
    session: u32,
    result: Result<Bytes, String>,
) -> usize {
    let too_large;
    let result: Result<&[u8], &[u8]> = match &result {
        Ok(reply) if reply.len() > config.max_message => {
            too_large = format!(
                "reply of {} bytes is larger than the maximum of {} bytes",
                reply.len(),
                config.max_message
            );
            tracing::warn!(session, %too_large, "reply not sent");
            Err(too_large.as_bytes())
        }
        Ok(reply)
            if config
                .outbound_budget
                .as_ref()
                .is_some_and(|b| !b.has_room(reply.len())) =>
        {
            too_large = format!(
                "{OVERLOADED}: the node's outbound budget has no room for a reply of {} bytes; retry later",
                reply.len()
            );
            if let Some(suppressed) = crate::throttle::warn_allowed("reply_shed", &"outbound") {
                tracing::warn!(
                    session,
                    suppressed,
                    "reply replaced by an Overloaded answer: the outbound budget is full"
                );
            }
            Err(too_large.as_bytes())
        }
        Ok(reply) => Ok(reply),
        Err(text) => Err(text.as_bytes()),
    };
    let mut g = queue.lock();
    if g.closed {
        return 0;
    }
    let mark = g.buf.len();
    if let Err(e) = encode_response(&mut g.buf, session, result) {
        g.buf.truncate(mark);
        let text = format!("cannot encode reply: {e}");
        tracing::warn!(session, %text, "reply not sent");
        if encode_response(&mut g.buf, session, Err(text.as_bytes())).is_err() {
            g.buf.truncate(mark);
        }
    }
    queue.defer(g)
}
