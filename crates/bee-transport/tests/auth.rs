//! Node authentication (see `bee_transport::auth`): bee channels with the right, a wrong
//! or no secret against a listener that requires it, allow-listed raw (stock skynet)
//! clients, a listener without a secret, and an impostor listener.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bee_codec::cluster::{encode_request, encode_response, Address};
use bee_codec::frame::MAX_BODY;
use bee_transport::{
    AuthSecret, Channel, ChannelConfig, Connection, ListenerConfig, TransportError, AUTH_NAME,
};
use bytes::{Bytes, BytesMut};
use common::{expect_closed, name, read_response, RawServer, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

fn guarded(allow: Vec<IpAddr>) -> ListenerConfig {
    ListenerConfig {
        auth_secret: Some(AuthSecret::new(SECRET)),
        auth_allow: allow,
        auth_timeout: Duration::from_millis(500),
        ..ListenerConfig::default()
    }
}

fn with_secret(secret: Option<&[u8]>) -> ChannelConfig {
    ChannelConfig {
        auth_secret: secret.map(AuthSecret::new),
        ..ChannelConfig::default()
    }
}

/// A raw client connected from `source` (any 127.x address works on loopback).
async fn raw_from(source: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let sock = TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(source.into(), 0)).unwrap();
    sock.connect(to).await.unwrap()
}

async fn raw_call(stream: TcpStream, session: u32) -> Option<(u32, Result<Bytes, Bytes>)> {
    let mut stream = stream;
    let mut out = BytesMut::new();
    encode_request(&mut out, &name("@echo"), session, b"raw").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
        .await
        .expect("an answer or a close")
}

#[tokio::test]
async fn channel_with_the_right_secret_is_served() {
    let server = Server::start(guarded(vec![])).await;
    let ch = server.channel_with(with_secret(Some(SECRET)));
    for i in 0..3u8 {
        let r = ch
            .call(name("@echo"), Bytes::from(vec![i; 5]), None)
            .await
            .unwrap();
        assert_eq!(&r[..], &[i; 5]);
    }
    assert_eq!(
        *server.probe.addresses.lock().unwrap(),
        vec![name("@echo"); 3],
        "the exchange must not be dispatched"
    );
    server.stop().await;
}

#[tokio::test]
async fn channel_with_a_wrong_secret_is_refused() {
    let server = Server::start(guarded(vec![])).await;
    let ch = server.channel_with(with_secret(Some(b"not the secret")));
    let err = ch
        .call(name("@echo"), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    // The listener proves itself first: the channel finds it does not share the secret.
    match &err {
        TransportError::AuthFailed { node, reason, .. } => {
            assert_eq!(node, "testnode");
            assert!(
                reason.contains("does not know the shared secret"),
                "{reason}"
            );
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    server.probe.wait_closed("not authenticated").await;
    assert!(server.probe.addresses.lock().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn channel_without_a_secret_is_refused() {
    let server = Server::start(guarded(vec![])).await;
    let ch = server.channel_with(with_secret(None));
    let err = ch
        .call(name("@echo"), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    match &err {
        TransportError::Remote { message, .. } => assert_eq!(message, "authentication required"),
        other => panic!("expected the listener's refusal, got {other:?}"),
    }
    let reason = server.probe.wait_closed("not authenticated").await;
    assert!(reason.contains("request before authenticating"), "{reason}");
    assert!(server.probe.addresses.lock().unwrap().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn allow_listed_raw_client_is_served_and_others_are_not() {
    let allowed = Ipv4Addr::new(127, 0, 0, 2);
    let server = Server::start(guarded(vec![allowed.into()])).await;
    // From the allow-listed address: served without any exchange.
    let r = raw_call(raw_from(allowed, server.addr).await, 7).await;
    assert_eq!(r, Some((7, Ok(Bytes::from_static(b"raw")))));
    // From another address: refused with an error, then closed.
    let stream = raw_from(Ipv4Addr::new(127, 0, 0, 3), server.addr).await;
    let mut stream = stream;
    let mut out = BytesMut::new();
    encode_request(&mut out, &name("@echo"), 8, b"raw").unwrap();
    stream.write_all(&out).await.unwrap();
    let mut conn = Connection::new(stream, MAX_BODY);
    let r = read_response(&mut conn).await;
    assert_eq!(
        r,
        Some((8, Err(Bytes::from_static(b"authentication required"))))
    );
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), read_response(&mut conn))
            .await
            .unwrap(),
        None,
        "closed after the refusal"
    );
    assert_eq!(*server.probe.addresses.lock().unwrap(), vec![name("@echo")]);
    server.stop().await;
}

#[tokio::test]
async fn silent_unauthenticated_peer_is_closed_after_the_auth_timeout() {
    let server = Server::start(guarded(vec![])).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    expect_closed(&mut stream).await;
    let reason = server.probe.wait_closed("did not authenticate").await;
    assert!(reason.contains("500ms"), "{reason}");
    server.stop().await;
}

#[tokio::test]
async fn channel_with_a_secret_refuses_a_listener_without_one() {
    let server = Server::start(ListenerConfig::default()).await;
    let ch = server.channel_with(with_secret(Some(SECRET)));
    let err = ch
        .call(name("@echo"), Bytes::from_static(b"x"), None)
        .await
        .unwrap_err();
    match &err {
        TransportError::AuthFailed { reason, .. } => {
            assert!(reason.contains("authentication not enabled"), "{reason}")
        }
        other => panic!("expected AuthFailed, got {other:?}"),
    }
    assert!(server.probe.addresses.lock().unwrap().is_empty());
    server.stop().await;
}

/// An impostor that answers step 1 without knowing the secret gets nothing more: no
/// proof, no call.
#[tokio::test]
async fn impostor_listener_gets_no_proof_and_no_calls() {
    let raw = RawServer::bind().await;
    let ch = Channel::new("impostor", raw.addr.to_string(), with_secret(Some(SECRET)));
    let caller = {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.call(name("@secret"), Bytes::from_static(b"x"), None)
                .await
        })
    };
    let mut conn = raw.accept().await;
    let step1 = conn.next_request().await.unwrap();
    assert_eq!(
        step1.address,
        Address::Name(Bytes::from_static(AUTH_NAME.as_bytes()))
    );
    assert_eq!(
        (step1.session, step1.payload.len(), step1.payload[0]),
        (1, 33, 1)
    );
    let mut forged = vec![1u8];
    forged.extend_from_slice(&[9u8; 64]);
    let mut out = BytesMut::new();
    encode_response(&mut out, 1, Ok(&forged)).unwrap();
    conn.write(&out).await;
    let r = caller.await.unwrap();
    assert!(matches!(r, Err(TransportError::AuthFailed { .. })), "{r:?}");
    // The channel closed the connection without sending anything else.
    let next = tokio::time::timeout(Duration::from_secs(10), conn.next_request())
        .await
        .unwrap();
    assert!(next.is_none(), "sent after a failed proof: {next:?}");
}
