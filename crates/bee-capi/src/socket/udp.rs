//! The task behind a UDP socket: every datagram received becomes one UDP event (payload,
//! then the sender's address in skynet's 7- or 19-byte form); sends go to the datagram's
//! own address or the default one set by `udp_connect`.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;

use super::{encode_udp_addr, ev, free, Cmd, CmdRx, Event, Kind, Shared};

/// Largest datagram read (skynet's scratch buffer).
const MAX_DATAGRAM: usize = 65_535;

pub(crate) async fn run_udp(sh: Arc<Shared>, sock: UdpSocket, mut rx: CmdRx) {
    let v6 = matches!(sh.kind, Kind::Udp { v6: true });
    let mut peer: Option<SocketAddr> = None;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    sh.set_reading(true);
    let mut reading = true;
    loop {
        tokio::select! {
            biased;
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    Cmd::Start(caller) => {
                        reading = true;
                        sh.set_reading(true);
                        sh.set_owner(caller);
                        sh.emit(Event::text(ev::CONNECT, sh.id, 0, b"transfer")).await;
                    }
                    Cmd::Pause => {
                        reading = false;
                        sh.set_reading(false);
                    }
                    Cmd::Nodelay => {}
                    Cmd::UdpConnect(a) => {
                        if a.is_ipv6() != v6 {
                            sh.emit(Event::text(ev::ERROR, sh.id, 0, b"protocol mismatch")).await;
                        } else {
                            peer = Some(*a);
                            sh.set_name(a.to_string());
                        }
                    }
                    Cmd::Send { data, .. } => {
                        sh.unqueue(data.len());
                        if let Some(to) = peer {
                            send(&sh, &sock, &data, to).await;
                        }
                    }
                    Cmd::SendTo { data, to } => {
                        sh.unqueue(data.len());
                        if to.is_ipv6() != v6 {
                            tracing::warn!(socket = sh.id, "udp send to an address of the other protocol: dropped");
                        } else {
                            send(&sh, &sock, &data, *to).await;
                        }
                    }
                    Cmd::Close | Cmd::Shutdown | Cmd::Overflow(_) => {
                        free(&sh);
                        sh.emit(Event::plain(ev::CLOSE, sh.id, 0)).await;
                        return;
                    }
                }
            }
            r = sock.recv_from(&mut buf), if reading => match r {
                Ok((n, from)) => {
                    if from.is_ipv6() != v6 {
                        continue;
                    }
                    sh.count_read(n);
                    let mut data = Vec::with_capacity(n + 19);
                    data.extend_from_slice(&buf[..n]);
                    data.extend_from_slice(&encode_udp_addr(&from));
                    if let Some(e) = Event::data(ev::UDP, sh.id, n as i32, &data) {
                        sh.emit(e).await;
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::WouldBlock => {}
                // ICMP port unreachable from an earlier send: not an error of this socket.
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    free(&sh);
                    sh.emit(Event::text(ev::ERROR, sh.id, 0, e.to_string().as_bytes())).await;
                    return;
                }
            },
        }
    }
    free(&sh);
}

async fn send(sh: &Shared, sock: &UdpSocket, data: &[u8], to: SocketAddr) {
    match sock.send_to(data, to).await {
        Ok(n) => sh.count_write(n),
        Err(e) => tracing::warn!(socket = sh.id, error = %e, "udp send failed: datagram dropped"),
    }
}
