//! The agent of one accepted connection (skynet's clusteragent): an [`Agent`] owns the
//! connection's read half and everything its reading needs, and [`Agent::run`] waits for
//! the next thing to do and hands it to one step:
//!
//! - [`Agent::answered`]: a request handled later ([`Dispatched::Later`]) has its answer;
//! - [`Agent::tell_goaway`]: the node drains, a bee peer is told [`GOAWAY`];
//! - hand-off: the node hands its connections to a successor, and a peer that does not
//!   speak `goaway` (stock skynet) is not made to move: the agent stops reading at a
//!   frame boundary, waits until everything it read is answered, and ends with the
//!   connection and the bytes it read but did not take ([`End::Handoff`]);
//! - back-pressure: reading stops while the peer does not read its answers (more than
//!   `max_queued_bytes` unwritten) and resumes when they drain;
//! - [`Agent::expire`]: multi-part messages not finished within `multipart_timeout`;
//! - [`Agent::check_timeouts`]: the authentication, partial-frame and idle timeouts;
//! - a frame was read: [`Agent::received`] (EOF, errors), [`Agent::assemble`] (decoding
//!   and multi-part reassembly, pieces of shed or expired messages dropped),
//!   [`Agent::gate`] (node authentication), heartbeats answered
//!   ([`crate::liveness::is_ping`]), [`Agent::admit`] (the connection's bounds and the
//!   node's inbound budget; what does not fit is shed), and [`Agent::dispatch`] (to the
//!   [`Inbound`], in arrival order, while earlier answers keep flowing).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bee_codec::cluster::{
    decode_request_frame, encode_session0_error, Address, AssemblyError, Limits, Request,
    RequestAssembler, RequestFrame,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::inflow::{answer, expire, Inflow, Partial, EXPIRED_KEPT};
use super::{
    Dispatched, Handing, Handoff, Inbound, ListenerConfig, GOAWAY, INVALID_LARGE_REQ, OVERLOADED,
};
use crate::auth::{is_auth, Responder, Step as AuthStep, REQUIRED as AUTH_REQUIRED};
use crate::budget::Permit;
use crate::connection::{Connection, ReadError, WriteQueue};
use crate::liveness::{is_ping, ping_reply};
use crate::telemetry::ListenerMetrics;
use crate::throttle::warn_allowed;

/// A `Later` answer computed, with the inbound bytes its request held: `None` for pushes
/// (run for their effect, nothing to send).
type Answered = (usize, Option<(u32, Result<Bytes, String>)>);

/// A running `Later` answer.
type Pending = BoxFuture<'static, Answered>;

/// How the agent of a connection ended.
pub(super) enum End {
    /// The peer closed cleanly between frames (answers not computed yet are dropped).
    Clean,
    /// The connection is closed for this reason (logged as a warning).
    Error(String),
    /// The connection's token was cancelled (shutdown or write failure).
    Cancelled,
    /// Nothing happened for `idle_timeout`; closed after flushing.
    Idle,
    /// The peer failed to authenticate; closed after flushing the answers (logged as a
    /// warning naming the peer).
    Refused(String),
    /// Handed off (see the module doc): every request read is answered; the reader and
    /// what is buffered in it go to the successor with the socket.
    Handoff(Box<Connection<OwnedReadHalf>>, Handing),
}

/// What an agent is told from outside: stop (`cancel`), the node drains (`goaway`:
/// tell a bee peer, see [`GOAWAY`]), and the node hands its connections to a successor
/// (`handoff`: a peer that is not told goaway is handed over).
pub(super) struct Signals<'a> {
    pub(super) cancel: &'a CancellationToken,
    pub(super) goaway: &'a CancellationToken,
    pub(super) handoff: &'a Handoff,
}

/// The timers of a connection.
struct Clock {
    connected: Instant,
    /// How long the peer may take to authenticate (zero: it need not).
    auth_timeout: Duration,
    /// Partial-frame, idle and authentication timeouts, checked every quarter of the
    /// shortest (`checking`: one of them is on).
    check: Interval,
    checking: bool,
    /// Multi-part expiry, checked every quarter of `multipart_timeout` (`expiring`: on).
    expiry: Interval,
    expiring: bool,
    /// When traffic was last seen, refreshed at each check from `traffic` (set per
    /// frame without reading the clock): the idle timeout may fire up to one check
    /// period late, never early.
    last_traffic: Instant,
    traffic: bool,
}

/// The agent of one accepted connection (see the module doc).
pub(super) struct Agent<'a> {
    reader: Connection<OwnedReadHalf>,
    peer: SocketAddr,
    inbound: &'a dyn Inbound,
    queue: &'a WriteQueue<()>,
    config: &'a ListenerConfig,
    metrics: &'a ListenerMetrics,
    assembler: RequestAssembler,
    flow: Inflow<'a>,
    /// Requests being handled ([`Dispatched::Later`]).
    later: FuturesUnordered<Pending>,
    /// Bytes held by requests being handled (`later`).
    held: usize,
    /// More than `max_queued_bytes` of answers unwritten: reading waits.
    backlogged: bool,
    auth: Responder,
    /// Whether the peer is a bee node (it speaks `goaway`), and whether it was told.
    bee: bool,
    told_goaway: bool,
    /// Handing the connection off (counted until it is handed): reading stops at the
    /// next frame boundary where no multi-part message is half-assembled.
    handing: Option<Handing>,
    clock: Clock,
}

impl<'a> Agent<'a> {
    pub(super) fn new(
        reader: Connection<OwnedReadHalf>,
        peer: SocketAddr,
        inbound: &'a dyn Inbound,
        queue: &'a WriteQueue<()>,
        config: &'a ListenerConfig,
        metrics: &'a ListenerMetrics,
    ) -> Agent<'a> {
        let assembler = RequestAssembler::new(Limits {
            max_message: config.max_message,
            max_pending: config.max_pending_multipart,
            // One message of the largest size is always allowed.
            max_pending_bytes: config.max_inbound_bytes.max(config.max_message),
        });
        let flow = Inflow {
            peer,
            config,
            partial: HashMap::new(),
            expired: HashSet::new(),
            shed: HashSet::new(),
            metrics,
        };
        let expire_every = (config.multipart_timeout / 4).max(Duration::from_millis(50));
        let mut expiry = tokio::time::interval(expire_every);
        expiry.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let auth = Responder::new(config.auth_secret.clone(), &config.auth_allow, peer.ip());
        let connected = Instant::now();
        let auth_timeout = if auth.done {
            Duration::ZERO
        } else {
            config.auth_timeout
        };
        let timeouts = [config.read_timeout, config.idle_timeout, auth_timeout]
            .into_iter()
            .filter(|t| !t.is_zero())
            .min();
        let mut check = tokio::time::interval(timeouts.map_or(Duration::from_secs(3600), |t| {
            (t / 4).clamp(Duration::from_millis(20), Duration::from_secs(1))
        }));
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Agent {
            reader,
            peer,
            inbound,
            queue,
            config,
            metrics,
            assembler,
            flow,
            later: FuturesUnordered::new(),
            held: 0,
            backlogged: false,
            auth,
            bee: false,
            told_goaway: false,
            handing: None,
            clock: Clock {
                connected,
                auth_timeout,
                check,
                checking: timeouts.is_some(),
                expiry,
                expiring: !config.multipart_timeout.is_zero(),
                last_traffic: Instant::now(),
                traffic: false,
            },
        }
    }

    /// Serve the connection until it ends, and say how.
    pub(super) async fn run(
        mut self,
        Signals {
            cancel,
            goaway,
            handoff,
        }: Signals<'_>,
    ) -> End {
        let mut was_reading = true;
        loop {
            self.queue.activity.set_outstanding(self.later.len());
            // Handing off: what was read is answered and nothing is half-assembled, so
            // the successor can go on from the next byte.
            let at_boundary = self.flow.partial.is_empty();
            if self.handing.is_some() && at_boundary && self.later.is_empty() {
                if let Some(handing) = self.handing.take() {
                    return End::Handoff(Box::new(self.reader), handing);
                }
            }
            // Only a peer that does not read its answers stops the reading (or a hand-off
            // at a frame boundary); past every other bound, requests are answered
            // `Overloaded` one by one (and heartbeats answered).
            let handing_at_boundary = self.handing.is_some() && at_boundary;
            let reading = !self.backlogged && !handing_at_boundary;
            if reading && !was_reading {
                // Not reading was our choice: the peer's partial frame gets its full time.
                self.reader.touch_partial();
            }
            was_reading = reading;
            let read = tokio::select! {
                biased;
                _ = cancel.cancelled() => return End::Cancelled,
                Some(done) = self.later.next(), if !self.later.is_empty() => {
                    self.clock.traffic = true;
                    self.answered(done);
                    continue;
                }
                _ = goaway.cancelled(), if self.bee && !self.told_goaway => {
                    self.tell_goaway();
                    continue;
                }
                _ = handoff.started().cancelled(), if !self.bee && self.handing.is_none() => {
                    tracing::debug!(peer = %self.peer, "handing the connection to the successor once its requests are answered");
                    self.handing = Some(handoff.begin());
                    continue;
                }
                _ = self.queue.wait_below(self.config.max_queued_bytes), if self.backlogged => {
                    self.backlogged = false;
                    continue;
                }
                _ = self.clock.expiry.tick(), if self.clock.expiring && !self.flow.partial.is_empty() => {
                    match self.expire() {
                        Ok(()) => continue,
                        Err(end) => return end,
                    }
                }
                _ = self.clock.check.tick(), if self.clock.checking => {
                    match self.check_timeouts(reading) {
                        Ok(()) => continue,
                        Err(end) => return end,
                    }
                }
                read = self.reader.read_frame(), if reading => read,
            };
            self.clock.traffic = true;
            if let Err(end) = self.on_read(read, cancel).await {
                return end;
            }
        }
    }

    /// A frame was read (or the read ended): take it through every step.
    async fn on_read(
        &mut self,
        read: Result<Option<Bytes>, ReadError>,
        cancel: &CancellationToken,
    ) -> Result<(), End> {
        let body = self.received(read)?;
        let Some((req, assembled)) = self.assemble(body)? else {
            return Ok(());
        };
        if !self.bee && matches!(&req.address, Address::Name(n) if n.starts_with(b"@bee_")) {
            self.bee = true;
        }
        if self.gate(&req)? {
            return Ok(());
        }
        // A caller's heartbeat (see `crate::liveness`): answered here, never dispatched.
        if is_ping(&req) {
            if !req.push {
                self.queue_answer(req.session, ping_reply());
            }
            return Ok(());
        }
        self.metrics.requests.increment(1);
        let Some(req) = self.admit(req, assembled)? else {
            return Ok(());
        };
        self.dispatch(req, cancel).await
    }

    /// Queue the answer of `session`; reading waits once too much is unwritten.
    fn queue_answer(&mut self, session: u32, result: Result<Bytes, String>) {
        self.backlogged |=
            answer(self.queue, self.config, session, result) > self.config.max_queued_bytes;
    }

    /// A request handled later has its answer (a push: its handling is done); its bytes
    /// are no longer held.
    fn answered(&mut self, (bytes, done): Answered) {
        self.held -= bytes;
        if let Some((session, result)) = done {
            self.queue_answer(session, result);
        }
    }

    /// The node drains: tell the (bee) peer to take its next messages elsewhere.
    fn tell_goaway(&mut self) {
        self.told_goaway = true;
        let peer = self.peer;
        tracing::debug!(%peer, "telling the peer goaway");
        let mut g = self.queue.lock();
        if !g.closed {
            encode_session0_error(&mut g.buf, GOAWAY.as_bytes());
            self.backlogged |= self.queue.defer(g) > self.config.max_queued_bytes;
        }
    }

    /// Drop the multi-part messages not finished in time (see [`expire`]).
    fn expire(&mut self) -> Result<(), End> {
        self.backlogged |= expire(&mut self.flow, &mut self.assembler, self.queue);
        if self.flow.expired.len() > EXPIRED_KEPT {
            return Err(End::Error(format!(
                "more than {EXPIRED_KEPT} multi-part messages expired unfinished"
            )));
        }
        Ok(())
    }

    /// The authentication, partial-frame (while `reading`) and idle timeouts.
    fn check_timeouts(&mut self, reading: bool) -> Result<(), End> {
        let config = self.config;
        let clock = &mut self.clock;
        if std::mem::take(&mut clock.traffic) {
            clock.last_traffic = Instant::now();
        }
        let auth_timeout = clock.auth_timeout;
        if !self.auth.done && !auth_timeout.is_zero() && clock.connected.elapsed() >= auth_timeout {
            return Err(End::Refused(format!(
                "did not authenticate within {auth_timeout:?}"
            )));
        }
        if let Some(since) = self.reader.partial_since() {
            if reading && !config.read_timeout.is_zero() && since.elapsed() >= config.read_timeout {
                return Err(End::Error(format!(
                    "part of a frame arrived and then nothing for {} ms (read_timeout)",
                    since.elapsed().as_millis()
                )));
            }
        } else if !config.idle_timeout.is_zero()
            && clock.last_traffic.elapsed() >= config.idle_timeout
            && self.later.is_empty()
            && self.flow.partial.is_empty()
            && self.queue.lock().queued() == 0
        {
            return Err(End::Idle);
        }
        Ok(())
    }

    /// The frame body read, or how the connection ends (the peer closed, EOF mid-frame,
    /// a socket error).
    fn received(&self, read: Result<Option<Bytes>, ReadError>) -> Result<Bytes, End> {
        match read {
            Ok(Some(body)) => Ok(body),
            Ok(None) if !self.auth.done => Err(End::Refused(
                "closed the connection before authenticating".into(),
            )),
            Ok(None) => {
                // Answers already queued are still flushed; ones not computed yet have
                // nobody to go to.
                if !self.later.is_empty() {
                    let peer = self.peer;
                    tracing::debug!(%peer, abandoned = self.later.len(), "peer closed with requests unanswered");
                }
                Err(End::Clean)
            }
            // EOF mid-frame, a socket error: the reason says which.
            Err(e) => Err(End::Error(e.to_string())),
        }
    }

    /// Decode a frame and feed it to the multi-part assembler: a complete request with
    /// the budget its multi-part header took (`Some` for an assembled one), or `None`
    /// when there is nothing to dispatch yet (a piece; a piece of a shed or expired
    /// message, dropped; a header shed for want of budget; a message that does not add
    /// up to its announced size, answered [`INVALID_LARGE_REQ`]).
    #[allow(clippy::type_complexity)]
    fn assemble(&mut self, body: Bytes) -> Result<Option<(Request, Option<Option<Permit>>)>, End> {
        let peer = self.peer;
        let frame = match decode_request_frame(body) {
            Ok(frame) => frame,
            Err(e) => return Err(End::Error(format!("undecodable request frame: {e}"))),
        };
        if !self.auth.done && matches!(frame, RequestFrame::Header { .. }) {
            return Err(End::Refused(
                "multi-part message before authenticating".into(),
            ));
        }
        let flow = &mut self.flow;
        let mut header = None;
        match &frame {
            RequestFrame::Header {
                session,
                push,
                total,
                ..
            } => {
                let permit = match flow.charge(*total as usize, "multi-part message") {
                    Ok(p) => p,
                    Err(shed) if shed.close => return Err(End::Error(shed.text)),
                    Err(shed) => {
                        // Its pieces are dropped as they come.
                        flow.shed.insert(*session);
                        self.backlogged |=
                            flow.shed(self.queue, *session, *push, "inbound_budget", shed.text);
                        return Ok(None);
                    }
                };
                flow.expired.remove(session);
                flow.shed.remove(session);
                header = Some((*session, *push, permit));
            }
            RequestFrame::Piece { session, last, .. } if flow.shed.contains(session) => {
                if *last {
                    flow.shed.remove(session);
                }
                return Ok(None);
            }
            RequestFrame::Piece { session, last, .. } if flow.expired.contains(session) => {
                if *last {
                    flow.expired.remove(session);
                }
                tracing::debug!(%peer, session, "piece of an expired multi-part message dropped");
                return Ok(None);
            }
            _ => {}
        }
        let fed = self.assembler.feed(frame);
        if let Some((session, push, permit)) = header {
            if matches!(fed, Ok(None)) {
                flow.partial.insert(
                    session,
                    Partial {
                        started: Instant::now(),
                        push,
                        permit,
                    },
                );
            }
        }
        let req = match fed {
            Ok(Some(req)) => req,
            Ok(None) => return Ok(None),
            Err(AssemblyError::SizeMismatch {
                session,
                announced,
                got,
            }) => {
                let push = flow.partial.remove(&session).is_some_and(|p| p.push);
                let warn = warn_allowed("size_mismatch", &peer.ip());
                if push {
                    if let Some(suppressed) = warn {
                        tracing::warn!(%peer, session, announced, got, suppressed, "multi-part push does not add up to its announced size; dropped");
                    }
                } else {
                    if let Some(suppressed) = warn {
                        tracing::warn!(%peer, session, announced, got, suppressed, "multi-part request does not add up to its announced size; answered {INVALID_LARGE_REQ:?}");
                    }
                    self.queue_answer(session, Err(INVALID_LARGE_REQ.into()));
                }
                return Ok(None);
            }
            Err(e) => return Err(End::Error(format!("bad multi-part request: {e}"))),
        };
        // Whole or completed: nothing pending under this session any more; a completed
        // multi-part message keeps the budget its header took.
        let assembled = flow.partial.remove(&req.session).map(|p| p.permit);
        Ok(Some((req, assembled)))
    }

    /// Node authentication (see `crate::auth`): `Ok(true)` when `req` was part of the
    /// exchange (answered here, never dispatched), `Ok(false)` when it may go on; any
    /// other message before the peer authenticated, or a wrong proof, ends the
    /// connection.
    fn gate(&mut self, req: &Request) -> Result<bool, End> {
        if is_auth(&req.address) && !req.push {
            match self.auth.step(&req.payload) {
                AuthStep::Answer(result) => {
                    self.queue_answer(req.session, result);
                    if self.auth.done {
                        let peer = self.peer;
                        tracing::debug!(%peer, "peer authenticated");
                    }
                }
                AuthStep::Refuse(text, why) => {
                    answer(self.queue, self.config, req.session, Err(text));
                    return Err(End::Refused(why));
                }
            }
            return Ok(true);
        }
        if !self.auth.done {
            if !req.push {
                answer(
                    self.queue,
                    self.config,
                    req.session,
                    Err(AUTH_REQUIRED.into()),
                );
            }
            return Err(End::Refused(format!(
                "{} before authenticating",
                if req.push { "push" } else { "request" }
            )));
        }
        Ok(false)
    }

    /// The connection's bounds and the node's inbound budget: the request to dispatch,
    /// charged (`assembled`: the budget its multi-part header took), or `None` when it
    /// was shed (answered [`OVERLOADED`], a push dropped).
    fn admit(
        &mut self,
        mut req: Request,
        assembled: Option<Option<Permit>>,
    ) -> Result<Option<Request>, End> {
        let config = self.config;
        let (session, push, size) = (req.session, req.push, req.payload.len());
        // A request past this connection's own bounds is shed before it is charged.
        if !push && !self.later.is_empty() {
            let held = self.held;
            let limit = if self.later.len() >= config.max_outstanding {
                Some((
                    "outstanding",
                    format!(
                        "{} requests of this connection unanswered",
                        self.later.len()
                    ),
                ))
            } else if held + size > config.max_inbound_bytes {
                Some((
                    "connection_bytes",
                    format!("{held} bytes of this connection's requests held"),
                ))
            } else {
                None
            };
            if let Some((limit, why)) = limit {
                let text =
                    format!("{OVERLOADED}: {why}; a request of {size} bytes refused, retry later");
                self.backlogged |= self.flow.shed(self.queue, session, push, limit, text);
                return Ok(None);
            }
        }
        // The request's bytes are charged from here until the last copy of its payload
        // is dropped and its answer is computed (see `Permit::carry`): wherever the
        // service keeps it, whatever happens to this connection.
        let copy = assembled.is_none();
        let permit = match assembled {
            Some(p) => p,
            None => match self
                .flow
                .charge(size, if push { "push" } else { "request" })
            {
                Ok(p) => p,
                Err(shed) if shed.close => return Err(End::Error(shed.text)),
                Err(shed) => {
                    self.backlogged |=
                        self.flow
                            .shed(self.queue, session, push, "inbound_budget", shed.text);
                    return Ok(None);
                }
            },
        };
        if let Some(permit) = permit {
            // A whole request is a slice of the read buffer: copied, so that what it
            // keeps alive is what it is charged.
            req.payload = permit.carry(std::mem::take(&mut req.payload), copy);
        }
        Ok(Some(req))
    }

    /// Hand `req` to the [`Inbound`] — in arrival order: the next frame is read only
    /// after this returns, while answers of earlier requests keep flowing — and queue or
    /// keep its answer.
    async fn dispatch(&mut self, req: Request, cancel: &CancellationToken) -> Result<(), End> {
        let (session, push, size) = (req.session, req.push, req.payload.len());
        let keep = req.payload.clone();
        let inbound = self.inbound;
        let dispatched = {
            let dispatch = inbound.dispatch(req);
            tokio::pin!(dispatch);
            loop {
                tokio::select! {
                    biased;
                    d = &mut dispatch => break d,
                    _ = cancel.cancelled() => return Err(End::Cancelled),
                    Some(done) = self.later.next(), if !self.later.is_empty() => {
                        self.answered(done);
                    }
                }
            }
        };
        match dispatched {
            Dispatched::Ready(result) if !push => self.queue_answer(session, result),
            Dispatched::Ready(Err(e)) => {
                let peer = self.peer;
                tracing::debug!(%peer, error = %e, "push failed on the receiving side");
            }
            Dispatched::Ready(Ok(_)) | Dispatched::NoReply => {}
            Dispatched::Later(fut) => {
                // The request's bytes stay held until its answer is computed.
                self.held += size;
                self.later.push(
                    fut.map(move |r| {
                        drop(keep);
                        (size, (!push).then_some((session, r)))
                    })
                    .boxed(),
                );
            }
        }
        Ok(())
    }
}
