//! Simulated players for the game's front door (`lua/frontdoor.lua`, skynet's
//! gateserver on the demo's Lua node): each connects over TCP, logs in, sends requests
//! one at a time and checks every reply's content, not just that one came.
//!
//! On the wire a packet is a 2-byte big-endian length and a game frame (empty names,
//! sub_type 16, the player's uid, the message name, session = the request's number,
//! the protobuf body). A reply is a frame with sub_type 17, the same uid and session,
//! and the answer's name and body.
//!
//! - [`packet`] and [`Expect::check`]: the bytes of one request and the check of its
//!   reply, for any client (the bad-input tests use them over blocking sockets);
//! - [`run`]: N players at once, M requests each, and a [`Report`] with connections,
//!   messages per second and latency percentiles (`bee-demo players`, `cargo xtask demo`).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bee_codec::kkt::{self, KktFrame};
use bee_proto::game::{GetUserInfo, LoginReq, LoginResp, Ping, Pong, UserInfo};
use bytes::{Bytes, BytesMut};
use prost::{Message, Name};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What went wrong for one player.
#[derive(Debug, thiserror::Error)]
pub enum PlayerError {
    /// Connecting, writing or reading failed (the front door closed the connection, or
    /// the network did).
    #[error("{what}: {source}")]
    Io {
        /// What the player was doing.
        what: String,
        /// The socket's error.
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("{what}: no answer within {timeout:?}")]
    Timeout {
        /// What the player was waiting for.
        what: String,
        /// How long it waited.
        timeout: Duration,
    },
    /// An answer came, but not the one the request asks for.
    #[error("wrong reply to {request}: {detail}")]
    Wrong {
        /// The request's message name and session.
        request: String,
        /// What differed.
        detail: String,
    },
    /// The request cannot be framed (a name or body too long for the 2-byte length).
    #[error("cannot frame the request: {0}")]
    Frame(String),
}

/// A request and what its reply must be.
#[derive(Debug, Clone)]
pub enum Expect {
    /// `game.LoginReq` → `game.LoginResp{uid, code 0, nickname "player<uid>"}`.
    Login,
    /// `game.GetUserInfo` → `game.UserInfo` with lpersistence's values for the uid.
    UserInfo,
    /// `game.Ping{seq}` → `game.Pong{seq, served_by}`.
    Pong {
        /// The sequence number sent.
        seq: u64,
        /// Who must have answered (`"lpersistence_3/lpersistence"` in the demo).
        served_by: String,
    },
}

/// The request packet (length prefix included) for `expect` from `uid`, numbered
/// `session`.
pub fn packet(uid: u64, session: u64, expect: &Expect) -> Result<Bytes, PlayerError> {
    let (name, body) = match expect {
        Expect::Login => (
            LoginReq::full_name(),
            LoginReq {
                uid,
                token: format!("t-{uid}"),
                device: "bee-demo".into(),
            }
            .encode_to_vec(),
        ),
        Expect::UserInfo => (
            GetUserInfo::full_name(),
            GetUserInfo { uid }.encode_to_vec(),
        ),
        Expect::Pong { seq, .. } => (
            Ping::full_name(),
            Ping {
                seq: *seq,
                sent_unix_ms: 0,
            }
            .encode_to_vec(),
        ),
    };
    let frame = KktFrame::new(kkt::SUBTYPE_PROTOBUF, uid as i64, name, body)
        .session(session)
        .encode()
        .map_err(|e| PlayerError::Frame(e.to_string()))?;
    framed(&frame)
}

/// `bytes` with its 2-byte big-endian length in front.
pub fn framed(bytes: &[u8]) -> Result<Bytes, PlayerError> {
    let len = u16::try_from(bytes.len()).map_err(|_| {
        PlayerError::Frame(format!(
            "{} bytes, at most 65535 in one packet",
            bytes.len()
        ))
    })?;
    let mut out = BytesMut::with_capacity(2 + bytes.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    Ok(out.freeze())
}

fn decode<M: Message + Default>(f: &KktFrame) -> Result<M, String> {
    M::decode(f.body.clone()).map_err(|e| format!("{}: {e}", String::from_utf8_lossy(&f.name)))
}

fn same<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what} {got:?}, expected {want:?}"))
    }
}

impl Expect {
    fn request_name(&self) -> &'static str {
        match self {
            Expect::Login => "game.LoginReq",
            Expect::UserInfo => "game.GetUserInfo",
            Expect::Pong { .. } => "game.Ping",
        }
    }

    /// Check `reply` (a packet's bytes, without the length) against the request `uid`
    /// sent as `session`.
    pub fn check(&self, uid: u64, session: u64, reply: &Bytes) -> Result<(), PlayerError> {
        self.check_fields(uid, session, reply)
            .map_err(|detail| PlayerError::Wrong {
                request: format!("{} (uid {uid}, session {session})", self.request_name()),
                detail,
            })
    }

    fn check_fields(&self, uid: u64, session: u64, reply: &Bytes) -> Result<(), String> {
        let f = KktFrame::decode(reply).map_err(|e| format!("not a game frame: {e}"))?;
        same("sub_type", f.sub_type, kkt::SUBTYPE_RPC_CLIENT)?;
        same("frame uid", f.uid, uid as i64)?;
        same("session", f.session, session)?;
        let name = String::from_utf8_lossy(&f.name).to_string();
        match self {
            Expect::Login => {
                same("name", name.as_str(), "game.LoginResp")?;
                let m: LoginResp = decode(&f)?;
                same(
                    "LoginResp",
                    (m.uid, m.code, m.nickname),
                    (uid, 0, format!("player{uid}")),
                )
            }
            Expect::UserInfo => {
                same("name", name.as_str(), "game.UserInfo")?;
                let m: UserInfo = decode(&f)?;
                let want = UserInfo {
                    uid,
                    nickname: format!("player{uid}"),
                    level: (uid % 60) as i32 + 1,
                    coins: (uid % 100_000) as i64 * 10,
                };
                same("UserInfo", m, want)
            }
            Expect::Pong { seq, served_by } => {
                same("name", name.as_str(), "game.Pong")?;
                let m: Pong = decode(&f)?;
                same(
                    "Pong",
                    (m.seq, m.served_by.as_str()),
                    (*seq, served_by.as_str()),
                )
            }
        }
    }
}

/// What a run is asked to do.
#[derive(Debug, Clone)]
pub struct Config {
    /// The front door's address.
    pub addr: SocketAddr,
    /// How many players connect at once.
    pub players: usize,
    /// Requests per player after its login (GetUserInfo and Ping, alternating).
    pub messages: usize,
    /// The first player's uid; the others follow.
    pub first_uid: u64,
    /// Who must answer a Ping (`"<node>/lpersistence"`).
    pub served_by: String,
    /// How long one connect or one reply may take.
    pub timeout: Duration,
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Players whose connection was accepted.
    pub connected: usize,
    /// Players logged in.
    pub logged_in: usize,
    /// Requests sent (logins included).
    pub sent: u64,
    /// Replies that came and were right.
    pub ok: u64,
    /// Players that stopped early, with why (at most the first 5 kept).
    pub failures: Vec<String>,
    /// How many players failed in all.
    pub failed_players: usize,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Round-trip latency of each right reply, sorted, in microseconds.
    pub latencies_us: Vec<u64>,
}

impl Report {
    /// Every request of every player answered, and rightly.
    pub fn all_ok(&self, cfg: &Config) -> bool {
        self.failed_players == 0 && self.ok == (cfg.players * (cfg.messages + 1)) as u64
    }

    /// The latency below which a share `p` (0..=1) of replies came, in microseconds.
    pub fn percentile_us(&self, p: f64) -> u64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0;
        }
        self.latencies_us[((n as f64 * p) as usize).min(n - 1)]
    }

    /// Right replies per second of the run.
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The report as lines for a transcript.
    pub fn lines(&self, cfg: &Config) -> Vec<String> {
        let mut lines = vec![
            format!(
                "{} players → {}: {} connected, {} logged in, {} requests each after login",
                cfg.players, cfg.addr, self.connected, self.logged_in, cfg.messages
            ),
            format!(
                "{} of {} replies right (content checked) in {:.2} s: {:.0} messages/s",
                self.ok,
                cfg.players * (cfg.messages + 1),
                self.elapsed.as_secs_f64(),
                self.per_second()
            ),
            format!(
                "round trip player → front door → {} → player: p50 {} µs, p99 {} µs, max {} µs",
                cfg.served_by.split('/').next().unwrap_or("?"),
                self.percentile_us(0.5),
                self.percentile_us(0.99),
                self.latencies_us.last().copied().unwrap_or(0)
            ),
        ];
        if self.failed_players > 0 {
            lines.push(format!("{} players failed; first:", self.failed_players));
            lines.extend(self.failures.iter().map(|f| format!("  {f}")));
        }
        lines
    }
}

/// A connected player over an async socket.
struct Player {
    uid: u64,
    stream: TcpStream,
    timeout: Duration,
}

impl Player {
    async fn connect(addr: SocketAddr, uid: u64, timeout: Duration) -> Result<Player, PlayerError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| PlayerError::Timeout {
                what: format!("connect to {addr}"),
                timeout,
            })?
            .map_err(|source| PlayerError::Io {
                what: format!("connect to {addr}"),
                source,
            })?;
        stream.set_nodelay(true).map_err(|source| PlayerError::Io {
            what: "set nodelay".into(),
            source,
        })?;
        Ok(Player {
            uid,
            stream,
            timeout,
        })
    }

    /// One request and its checked reply; the round trip's time.
    async fn request(&mut self, session: u64, expect: &Expect) -> Result<Duration, PlayerError> {
        let what = format!("{} session {session}", expect.request_name());
        let bytes = packet(self.uid, session, expect)?;
        let t0 = Instant::now();
        let io = |source| PlayerError::Io {
            what: what.clone(),
            source,
        };
        let reply = tokio::time::timeout(self.timeout, async {
            self.stream.write_all(&bytes).await?;
            let mut len = [0u8; 2];
            self.stream.read_exact(&mut len).await?;
            let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
            self.stream.read_exact(&mut body).await?;
            Ok(Bytes::from(body))
        })
        .await
        .map_err(|_| PlayerError::Timeout {
            what: what.clone(),
            timeout: self.timeout,
        })?
        .map_err(io)?;
        let took = t0.elapsed();
        expect.check(self.uid, session, &reply)?;
        Ok(took)
    }
}

/// How far one player got.
#[derive(Default)]
struct Progress {
    connected: bool,
    logged_in: bool,
    sent: u64,
    ok: u64,
    latencies_us: Vec<u64>,
}

/// One player's life: connect, log in, `cfg.messages` requests; `progress` says how far
/// it got when it fails.
async fn play(cfg: &Config, uid: u64, progress: &mut Progress) -> Result<(), PlayerError> {
    let mut p = Player::connect(cfg.addr, uid, cfg.timeout).await?;
    progress.connected = true;
    for i in 0..=cfg.messages as u64 {
        let session = i + 1;
        let expect = if i == 0 {
            Expect::Login
        } else if i % 2 == 1 {
            Expect::UserInfo
        } else {
            Expect::Pong {
                seq: uid * 1000 + i,
                served_by: cfg.served_by.clone(),
            }
        };
        progress.sent += 1;
        let took = p.request(session, &expect).await?;
        progress.latencies_us.push(took.as_micros() as u64);
        progress.ok += 1;
        progress.logged_in = true;
    }
    Ok(())
}

/// Run `cfg.players` players at once; every wait is bounded by `cfg.timeout`.
pub async fn run(cfg: &Config) -> Report {
    let started = Instant::now();
    let tasks: Vec<_> = (0..cfg.players as u64)
        .map(|i| {
            let cfg = cfg.clone();
            tokio::spawn(async move {
                let uid = cfg.first_uid + i;
                let mut progress = Progress::default();
                let outcome = play(&cfg, uid, &mut progress).await;
                (uid, outcome, progress)
            })
        })
        .collect();
    let mut report = Report::default();
    for t in tasks {
        let failure = match t.await {
            Ok((uid, outcome, p)) => {
                report.connected += usize::from(p.connected);
                report.logged_in += usize::from(p.logged_in);
                report.sent += p.sent;
                report.ok += p.ok;
                report.latencies_us.extend(p.latencies_us);
                outcome.err().map(|e| format!("uid {uid}: {e}"))
            }
            Err(e) => Some(format!("a player task failed: {e}")),
        };
        if let Some(f) = failure {
            report.failed_players += 1;
            if report.failures.len() < 5 {
                report.failures.push(f);
            }
        }
    }
    report.elapsed = started.elapsed();
    report.latencies_us.sort_unstable();
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reply frame as the front door sends it, with `info` as its body.
    fn reply(uid: u64, session: u64, sub_type: u32, info: &UserInfo) -> Bytes {
        KktFrame::new(
            sub_type,
            uid as i64,
            UserInfo::full_name(),
            info.encode_to_vec(),
        )
        .session(session)
        .encode()
        .unwrap()
    }

    fn right(uid: u64) -> UserInfo {
        UserInfo {
            uid,
            nickname: format!("player{uid}"),
            level: (uid % 60) as i32 + 1,
            coins: (uid % 100_000) as i64 * 10,
        }
    }

    #[test]
    fn a_right_reply_passes_and_each_wrong_field_is_named() {
        let ok = reply(77, 3, kkt::SUBTYPE_RPC_CLIENT, &right(77));
        Expect::UserInfo.check(77, 3, &ok).unwrap();
        let wrong = |bytes: Bytes| {
            Expect::UserInfo
                .check(77, 3, &bytes)
                .unwrap_err()
                .to_string()
        };
        assert!(wrong(reply(77, 4, kkt::SUBTYPE_RPC_CLIENT, &right(77))).contains("session 4"));
        assert!(wrong(reply(78, 3, kkt::SUBTYPE_RPC_CLIENT, &right(77))).contains("frame uid 78"));
        assert!(wrong(reply(77, 3, kkt::SUBTYPE_PROTOBUF, &right(77))).contains("sub_type 16"));
        let mut rich = right(77);
        rich.coins += 1;
        assert!(wrong(reply(77, 3, kkt::SUBTYPE_RPC_CLIENT, &rich)).contains("UserInfo"));
        assert!(wrong(Bytes::from_static(b"junk")).contains("not a game frame"));
    }

    #[test]
    fn a_request_packet_is_a_length_and_a_game_frame() {
        let p = packet(9, 5, &Expect::Login).unwrap();
        assert_eq!(usize::from(u16::from_be_bytes([p[0], p[1]])), p.len() - 2);
        let f = KktFrame::decode(&p.slice(2..)).unwrap();
        assert_eq!(
            (f.sub_type, f.uid, f.session),
            (kkt::SUBTYPE_PROTOBUF, 9, 5)
        );
        assert_eq!(&f.name[..], b"game.LoginReq");
        assert_eq!(LoginReq::decode(f.body).unwrap().uid, 9);
        assert!(framed(&vec![0; 70_000]).is_err());
    }
}
