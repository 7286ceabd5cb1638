//! Every call ends by its own deadline: a call to a peer whose SYNs go unanswered (a
//! listening socket whose accept queue is full drops them, as a black-holed network
//! does) ends with `Timeout` after the call's own timeout, not with `Connect` after the
//! channel's longer `connect_timeout`.

mod common;

use std::time::Duration;

use bee_transport::{Channel, ChannelConfig, TransportError};
use bytes::Bytes;
use common::name;
use socket2::{Domain, Socket, Type};

/// A listening socket that never accepts, its accept queue filled, so the kernel drops
/// the SYNs of any further connect. Returns it with the connections that fill it.
fn black_hole() -> (Socket, Vec<std::net::TcpStream>, std::net::SocketAddr) {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    s.bind(
        &"127.0.0.1:0"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into(),
    )
    .unwrap();
    s.listen(0).unwrap();
    let addr = s.local_addr().unwrap().as_socket().unwrap();
    let mut fill = Vec::new();
    // A backlog of 0 holds one or two; a connect past it stays in SYN_SENT.
    for _ in 0..4 {
        let c = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        c.set_nonblocking(true).unwrap();
        let _ = c.connect(&addr.into());
        fill.push(std::net::TcpStream::from(c));
    }
    std::thread::sleep(Duration::from_millis(100));
    (s, fill, addr)
}

#[tokio::test]
async fn a_call_to_a_black_hole_ends_by_its_own_timeout_not_the_connect_timeout() {
    let (_hole, _fill, addr) = black_hole();
    let ch = Channel::new(
        "hole",
        addr.to_string(),
        ChannelConfig {
            connect_timeout: Duration::from_secs(30),
            ..ChannelConfig::default()
        },
    );
    let timeout = Duration::from_millis(300);
    // Bounded however the dial goes: the test itself gives up after 20 s.
    let r = tokio::time::timeout(
        Duration::from_secs(20),
        ch.call(name("@x"), Bytes::from_static(b"x"), Some(timeout)),
    )
    .await
    .expect("the call ended");
    assert!(
        matches!(&r, Err(TransportError::Timeout { node, after }) if node == "hole" && *after == timeout),
        "{r:?}"
    );
}
