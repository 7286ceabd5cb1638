//! Shared fixtures of the transport tests: a tiny in-test [`Inbound`] and helpers to run a
//! listener, a raw request client and a raw response server on 127.0.0.1:0.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bee_codec::cluster::{
    decode_request_frame, decode_response_frame, encode_response, Limits, RequestAssembler,
};
use bee_codec::frame::MAX_BODY;
use bee_transport::{
    Acceptor, Address, Channel, ChannelConfig, Connection, Dispatched, Inbound, Listener,
    ListenerConfig, Request,
};
use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the test inbound saw, shared by every connection of one listener.
#[derive(Default)]
pub struct Probe {
    /// Requests and pushes dispatched so far.
    pub received: AtomicUsize,
    /// Payloads sent to `@order`, in dispatch order.
    pub order: Mutex<Vec<Bytes>>,
    /// Addresses seen, in dispatch order.
    pub addresses: Mutex<Vec<Address>>,
    /// Reasons given to `Inbound::closed`.
    pub closed: Mutex<Vec<String>>,
    /// Payloads sent to `@keep`, kept as a service keeps a request it has not finished.
    pub kept: Mutex<Vec<Bytes>>,
}

impl Probe {
    pub fn closed_reasons(&self) -> Vec<String> {
        self.closed.lock().unwrap().clone()
    }

    /// Wait until `n` messages were dispatched (panics after 10 s).
    pub async fn wait_received(&self, n: usize) {
        wait_until("messages dispatched", || {
            self.received.load(Ordering::SeqCst) >= n
        })
        .await;
    }

    /// Wait until a connection closed with a reason containing `needle`; returns it.
    pub async fn wait_closed(&self, needle: &str) -> String {
        wait_until(&format!("a connection closed with {needle:?}"), || {
            self.closed_reasons().iter().any(|r| r.contains(needle))
        })
        .await;
        self.closed_reasons()
            .into_iter()
            .find(|r| r.contains(needle))
            .unwrap()
    }
}

/// Poll `cond` every 10 ms; panic if it is not true within 10 s.
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    bee_testkit::wait_until_async(what, Duration::from_secs(10), cond).await;
}

/// The test service behind every address:
/// - numeric addresses and `@echo`: reply with the payload;
/// - `@fail`: error "Invalid name";
/// - `@double`: reply with the payload twice;
/// - `@later`: reply with the payload from a `Later` future;
/// - `@slow`: wait the milliseconds written in the payload (decimal text), then echo;
/// - `@block`: hold the connection's dispatch for the milliseconds in the payload, then
///   echo;
/// - `@hold`: never answer;
/// - `@keep`: keep the payload in the probe (as a service's mailbox would), never answer;
/// - `@order`: record the payload, reply "ok" to calls.
pub struct TestInbound {
    probe: Arc<Probe>,
}

impl Inbound for TestInbound {
    fn dispatch(&self, req: Request) -> BoxFuture<'_, Dispatched> {
        async move {
            self.probe
                .addresses
                .lock()
                .unwrap()
                .push(req.address.clone());
            let name: &[u8] = match &req.address {
                Address::Id(_) => b"@echo",
                Address::Name(n) => n,
            };
            let d = match name {
                b"@echo" => Dispatched::Ready(Ok(req.payload)),
                b"@fail" => Dispatched::Ready(Err("Invalid name".into())),
                b"@double" => {
                    let mut twice = req.payload.to_vec();
                    twice.extend_from_slice(&req.payload);
                    Dispatched::Ready(Ok(twice.into()))
                }
                b"@later" => {
                    let payload = req.payload;
                    Dispatched::Later(
                        async move {
                            tokio::task::yield_now().await;
                            Ok(payload)
                        }
                        .boxed(),
                    )
                }
                b"@slow" => {
                    let ms: u64 = std::str::from_utf8(&req.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    let payload = req.payload;
                    Dispatched::Later(
                        async move {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            Ok(payload)
                        }
                        .boxed(),
                    )
                }
                b"@block" => {
                    // Holds the connection's dispatch (and so its reading) this long.
                    let ms: u64 = std::str::from_utf8(&req.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    Dispatched::Ready(Ok(req.payload))
                }
                b"@hold" => Dispatched::Later(futures::future::pending().boxed()),
                b"@keep" => {
                    self.probe.kept.lock().unwrap().push(req.payload);
                    Dispatched::Later(futures::future::pending().boxed())
                }
                b"@order" => {
                    self.probe.order.lock().unwrap().push(req.payload);
                    if req.push {
                        Dispatched::NoReply
                    } else {
                        Dispatched::Ready(Ok(Bytes::from_static(b"ok")))
                    }
                }
                other => Dispatched::Ready(Err(format!(
                    "no such test service {}",
                    String::from_utf8_lossy(other)
                ))),
            };
            // Counted after the message is recorded, so waiters see it recorded.
            self.probe.received.fetch_add(1, Ordering::SeqCst);
            d
        }
        .boxed()
    }

    fn closed(&self, reason: &str) {
        self.probe.closed.lock().unwrap().push(reason.to_string());
    }
}

pub struct TestAcceptor {
    pub probe: Arc<Probe>,
}

impl Acceptor for TestAcceptor {
    fn accept(&self, _peer: SocketAddr) -> Arc<dyn Inbound> {
        Arc::new(TestInbound {
            probe: self.probe.clone(),
        })
    }
}

/// A running listener with the test inbound.
pub struct Server {
    pub addr: SocketAddr,
    pub probe: Arc<Probe>,
    pub shutdown: CancellationToken,
    pub task: JoinHandle<()>,
}

impl Server {
    pub async fn start(config: ListenerConfig) -> Server {
        Self::start_on("127.0.0.1:0", config).await
    }

    pub async fn start_on(addr: &str, config: ListenerConfig) -> Server {
        let listener = Listener::bind(addr, config).await.expect("bind");
        let addr = listener.local_addr();
        let probe = Arc::new(Probe::default());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(listener.run(
            Arc::new(TestAcceptor {
                probe: probe.clone(),
            }),
            shutdown.clone(),
        ));
        Server {
            addr,
            probe,
            shutdown,
            task,
        }
    }

    /// Cancel and wait until the listener and all its connections ended.
    pub async fn stop(self) {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .expect("listener stops within 5 s")
            .expect("listener task");
    }

    pub fn channel(&self) -> Channel {
        self.channel_with(ChannelConfig::default())
    }

    pub fn channel_with(&self, config: ChannelConfig) -> Channel {
        Channel::new("testnode", self.addr.to_string(), config)
    }
}

pub fn name(n: &str) -> Address {
    Address::Name(Bytes::copy_from_slice(n.as_bytes()))
}

/// A pattern payload of `len` bytes that differs per `seed`.
pub fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

/// Read one whole response (reassembling multi-part) from a raw connection.
pub async fn read_response<R: tokio::io::AsyncRead + Unpin>(
    conn: &mut Connection<R>,
) -> Option<(u32, Result<Bytes, Bytes>)> {
    let mut asm = bee_codec::cluster::ResponseAssembler::new(Limits::default());
    loop {
        let body = conn.read_frame().await.expect("read")?;
        let frame = decode_response_frame(body).expect("response frame");
        if let Some(r) = asm.feed(frame).expect("assembly") {
            return Some((r.session, r.result));
        }
    }
}

/// Read until the peer closes the connection (EOF or reset); panics after 10 s.
pub async fn expect_closed(stream: &mut TcpStream) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 64 * 1024];
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the listener did not close the connection");
}

/// A raw sender-side peer: accepts ONE connection, decodes requests and lets the test
/// script the answers.
pub struct RawServer {
    pub addr: SocketAddr,
    listener: TcpListener,
}

impl RawServer {
    pub async fn bind() -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        RawServer {
            addr: listener.local_addr().unwrap(),
            listener,
        }
    }

    pub async fn accept(&self) -> RawConn {
        let (stream, _) = self.listener.accept().await.unwrap();
        let (rd, wr) = stream.into_split();
        RawConn {
            reader: Connection::new(rd, MAX_BODY),
            writer: wr,
            asm: RequestAssembler::new(Limits::default()),
        }
    }
}

pub struct RawConn {
    pub reader: Connection<tokio::net::tcp::OwnedReadHalf>,
    pub writer: tokio::net::tcp::OwnedWriteHalf,
    asm: RequestAssembler,
}

impl RawConn {
    /// The next complete request or push.
    pub async fn next_request(&mut self) -> Option<Request> {
        loop {
            let body = self.reader.read_frame().await.expect("read")?;
            let frame = decode_request_frame(body).expect("request frame");
            if let Some(r) = self.asm.feed(frame).expect("assembly") {
                return Some(r);
            }
        }
    }

    /// Write raw bytes.
    pub async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.writer.write_all(bytes).await.unwrap();
    }

    /// Answer `session` with an ok reply.
    pub async fn reply(&mut self, session: u32, data: &[u8]) {
        let mut out = bytes::BytesMut::new();
        encode_response(&mut out, session, Ok(data)).unwrap();
        self.write(&out).await;
    }
}
