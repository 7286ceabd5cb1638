//! Node authentication between bee nodes: a challenge–response with HMAC-SHA256 over a
//! shared secret, carried in ordinary skynet cluster frames, so the wire stays skynet's.
//!
//! Off by default (no [`AuthSecret`] configured), so mixed clusters keep working. With a
//! secret in [`ListenerConfig::auth_secret`](crate::ListenerConfig::auth_secret), a
//! listener serves a connection only after its peer proved it knows the secret, except
//! peers whose IP address is in [`ListenerConfig::auth_allow`](crate::ListenerConfig::auth_allow)
//! (stock skynet nodes, which cannot authenticate), which are served at once. With a
//! secret in [`ChannelConfig::auth_secret`](crate::ChannelConfig::auth_secret), a channel
//! runs the exchange right after connecting, before any call or push is written, and
//! requires the listener to prove the secret too (mutual): a peer that cannot fails every
//! call with [`TransportError::AuthFailed`](crate::TransportError::AuthFailed).
//!
//! ## The exchange, byte by byte
//! `K` is the shared secret (any length; both sides configure the same bytes). `HMAC` is
//! HMAC-SHA256 (RFC 2104, 32-byte output). `‖` is concatenation. Frames are skynet v1.6.0
//! cluster frames: a 2-byte **big-endian** length, then the body; integers inside bodies
//! are **little-endian**.
//!
//! 1. The connecting side **I** draws a 32-byte random nonce `NI` and sends a request
//!    with the string address `@bee_auth`, session 1:
//!    ```text
//!    00 30                      frame length 48
//!    80                         request, string address, whole message
//!    09 40 62 65 65 5F 61 75 74 68   name length 9, "@bee_auth"
//!    01 00 00 00                session 1 (u32 LE)
//!    01                         payload[0]: step 1
//!    NI (32 bytes)              payload[1..33]
//!    ```
//! 2. The listening side **R** draws a 32-byte random nonce `NR` and answers session 1 with
//!    an ok response carrying `MR = HMAC(K, "bee-auth-r" ‖ NI ‖ NR)` (the label is the 10
//!    ASCII bytes `62 65 65 2D 61 75 74 68 2D 72`):
//!    ```text
//!    00 46                      frame length 70
//!    01 00 00 00                session 1
//!    01                         ok, whole
//!    01                         data[0]: step 1 answer
//!    NR (32 bytes)              data[1..33]
//!    MR (32 bytes)              data[33..65]
//!    ```
//! 3. I checks `MR` (in constant time). If it does not match, R does not know `K`: I
//!    closes the connection and fails its calls. Else I sends, session 2:
//!    ```text
//!    00 30  80  09 "@bee_auth"  02 00 00 00  02  MI (32 bytes)
//!    ```
//!    with `MI = HMAC(K, "bee-auth-i" ‖ NI ‖ NR)` (label `62 65 65 2D 61 75 74 68 2D 69`).
//! 4. R checks `MI` in constant time. Match: the connection is authenticated; R answers
//!    session 2 with an empty ok response (`00 05  02 00 00 00  01`) and serves every
//!    request after it. No match: R answers session 2 with the error response
//!    `authentication failed` (type `00`), closes the connection and logs one line naming
//!    the peer's address.
//!
//! Until step 4 succeeded, R answers any other request (or a step out of order, or a
//! malformed payload) with the error `authentication required` / `authentication failed`
//! and closes the connection, and it closes a connection that has not authenticated
//! within [`ListenerConfig::auth_timeout`](crate::ListenerConfig::auth_timeout). A
//! listener without a secret answers `@bee_auth` with the error
//! `authentication not enabled` (a stock skynet node answers `Invalid name`), and the
//! channel then fails its calls with `AuthFailed`. The next call dials and tries again.
//!
//! Why this shape: both nonces and a direction label go into each MAC, so neither answer
//! can be replayed on another connection or reflected back to its sender (a listener only
//! ever computes `-r` MACs, a channel only `-i` MACs after checking an `-r`); the secret
//! never crosses the wire. It authenticates the peer at connect time, **not the traffic
//! after it**: on a network where an attacker can read or inject packets, run the cluster
//! over TLS or WireGuard.

use std::net::IpAddr;
use std::sync::Arc;

use bee_codec::cluster::{decode_response_frame, encode_request, Address, ResponseAssembler};
use bee_codec::frame::MAX_BODY;
use bytes::{Bytes, BytesMut};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::connection::Connection;

/// The name the authentication calls are sent to.
pub const AUTH_NAME: &str = "@bee_auth";

/// Label of the listener's MAC.
const LABEL_R: &[u8] = b"bee-auth-r";
/// Label of the connecting side's MAC.
const LABEL_I: &[u8] = b"bee-auth-i";
/// Nonce and MAC length.
const LEN: usize = 32;

/// Error text for a failed proof.
pub(crate) const FAILED: &str = "authentication failed";
/// Error text for a request before authentication.
pub(crate) const REQUIRED: &str = "authentication required";
/// Error text of a listener without a secret.
pub(crate) const NOT_ENABLED: &str = "authentication not enabled";

/// A shared secret for node authentication. Its `Debug` output never shows the bytes.
#[derive(Clone)]
pub struct AuthSecret(Arc<[u8]>);

impl AuthSecret {
    /// A secret of these bytes (use at least 32 random bytes).
    pub fn new(bytes: impl AsRef<[u8]>) -> AuthSecret {
        AuthSecret(Arc::from(bytes.as_ref()))
    }

    fn mac(&self, label: &[u8], ni: &[u8], nr: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any size");
        mac.update(label);
        mac.update(ni);
        mac.update(nr);
        mac
    }
}

impl std::fmt::Debug for AuthSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuthSecret(..)")
    }
}

/// Whether `address` is the authentication name.
pub(crate) fn is_auth(address: &Address) -> bool {
    matches!(address, Address::Name(n) if n.as_ref() == AUTH_NAME.as_bytes())
}

fn nonce() -> std::io::Result<[u8; LEN]> {
    let mut n = [0u8; LEN];
    getrandom::fill(&mut n).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(n)
}

/// The listener's side of the exchange on one connection.
#[derive(Debug)]
pub(crate) struct Responder {
    secret: Option<AuthSecret>,
    /// The nonces of step 1, once it was answered.
    nonces: Option<([u8; LEN], [u8; LEN])>,
    /// Authenticated (or no authentication needed).
    pub done: bool,
}

/// What the listener does with an authentication request.
pub(crate) enum Step {
    /// Answer this and go on.
    Answer(Result<Bytes, String>),
    /// Answer this error, then close the connection for the reason.
    Refuse(String, String),
}

impl Responder {
    /// The state for a connection from `peer`: done at once when no secret is set or the
    /// peer is allow-listed.
    pub fn new(secret: Option<AuthSecret>, allow: &[IpAddr], peer: IpAddr) -> Responder {
        let done = secret.is_none() || allow.contains(&peer);
        Responder {
            secret,
            nonces: None,
            done,
        }
    }

    /// Handle a request to [`AUTH_NAME`].
    pub fn step(&mut self, payload: &[u8]) -> Step {
        let Some(secret) = &self.secret else {
            return Step::Answer(Err(NOT_ENABLED.into()));
        };
        let refuse = |why: &str| Step::Refuse(FAILED.into(), why.to_string());
        match (payload.first(), payload.len(), self.nonces) {
            (Some(1), n, None) if n == 1 + LEN => {
                let mut ni = [0u8; LEN];
                ni.copy_from_slice(&payload[1..]);
                let nr = match nonce() {
                    Ok(n) => n,
                    Err(e) => return refuse(&format!("no random numbers: {e}")),
                };
                let mr = secret.mac(LABEL_R, &ni, &nr).finalize().into_bytes();
                let mut out = Vec::with_capacity(1 + 2 * LEN);
                out.push(1);
                out.extend_from_slice(&nr);
                out.extend_from_slice(&mr);
                self.nonces = Some((ni, nr));
                Step::Answer(Ok(out.into()))
            }
            (Some(2), n, Some((ni, nr))) if n == 1 + LEN => {
                if secret
                    .mac(LABEL_I, &ni, &nr)
                    .verify_slice(&payload[1..])
                    .is_ok()
                {
                    self.done = true;
                    Step::Answer(Ok(Bytes::new()))
                } else {
                    refuse("wrong proof of the shared secret")
                }
            }
            _ if self.done => Step::Answer(Err("already authenticated".into())),
            _ => refuse("malformed or out-of-order authentication step"),
        }
    }
}

/// Run the connecting side of the exchange on a fresh `stream` (sessions 1 and 2).
/// `Err` says why the peer is not accepted.
pub(crate) async fn initiate(stream: &mut TcpStream, secret: &AuthSecret) -> Result<(), String> {
    let to = Address::Name(Bytes::from_static(AUTH_NAME.as_bytes()));
    let ni = nonce().map_err(|e| format!("no random numbers: {e}"))?;
    let mut step1 = vec![1u8];
    step1.extend_from_slice(&ni);
    let answer = exchange(stream, &to, 1, &step1).await?;
    if answer.len() != 1 + 2 * LEN || answer[0] != 1 {
        return Err(format!("malformed step 1 answer ({} bytes)", answer.len()));
    }
    let nr = &answer[1..1 + LEN];
    if secret
        .mac(LABEL_R, &ni, nr)
        .verify_slice(&answer[1 + LEN..])
        .is_err()
    {
        return Err("the peer does not know the shared secret".into());
    }
    let mi = secret.mac(LABEL_I, &ni, nr).finalize().into_bytes();
    let mut step2 = vec![2u8];
    step2.extend_from_slice(&mi);
    exchange(stream, &to, 2, &step2).await?;
    Ok(())
}

/// Send one request and read its answer (ok data, or the error text as `Err`).
async fn exchange(
    stream: &mut TcpStream,
    to: &Address,
    session: u32,
    payload: &[u8],
) -> Result<Bytes, String> {
    let mut out = BytesMut::new();
    encode_request(&mut out, to, session, payload).map_err(|e| e.to_string())?;
    stream
        .write_all(&out)
        .await
        .map_err(|e| format!("write failed: {e}"))?;
    let mut reader = Connection::new(&mut *stream, MAX_BODY);
    let mut asm = ResponseAssembler::new(Default::default());
    loop {
        let body = match reader.read_frame().await {
            Ok(Some(body)) => body,
            Ok(None) => return Err("the peer closed the connection".into()),
            Err(e) => return Err(e.to_string()),
        };
        let frame = decode_response_frame(body).map_err(|e| e.to_string())?;
        match asm.feed(frame).map_err(|e| e.to_string())? {
            Some(r) if r.session == session => {
                return r.result.map_err(|text| {
                    format!("the peer answered: {}", String::from_utf8_lossy(&text))
                })
            }
            Some(r) => return Err(format!("answer for unexpected session {}", r.session)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Play the connecting side by hand against a responder; `key` is what it believes
    /// the secret is, and it sends step 2 even if the responder's proof did not match.
    fn run(responder: &mut Responder, key: &AuthSecret) -> Step {
        let ni = [7u8; LEN];
        let mut step1 = vec![1u8];
        step1.extend_from_slice(&ni);
        let Step::Answer(Ok(answer)) = responder.step(&step1) else {
            panic!("step 1 not answered");
        };
        assert_eq!((answer.len(), answer[0]), (65, 1));
        let nr = &answer[1..33];
        let mi = key.mac(LABEL_I, &ni, nr).finalize().into_bytes();
        let mut step2 = vec![2u8];
        step2.extend_from_slice(&mi);
        responder.step(&step2)
    }

    #[test]
    fn responder_accepts_the_right_proof_only() {
        let k = AuthSecret::new(b"k");
        let peer: IpAddr = [127, 0, 0, 1].into();
        let mut r = Responder::new(Some(k.clone()), &[], peer);
        assert!(!r.done);
        assert!(matches!(run(&mut r, &k), Step::Answer(Ok(ref b)) if b.is_empty()));
        assert!(r.done);
        let mut r = Responder::new(Some(k), &[], peer);
        match run(&mut r, &AuthSecret::new(b"other")) {
            Step::Refuse(text, why) => {
                assert_eq!(text, FAILED);
                assert!(why.contains("wrong proof"), "{why}");
            }
            _ => panic!("a wrong proof was accepted"),
        }
        assert!(!r.done);
    }

    #[test]
    fn responder_refuses_steps_out_of_order_and_allow_lists() {
        let k = AuthSecret::new(b"k");
        let peer: IpAddr = [127, 0, 0, 9].into();
        let mut r = Responder::new(Some(k.clone()), &[], peer);
        assert!(
            matches!(r.step(&[2u8; 33]), Step::Refuse(..)),
            "step 2 first"
        );
        let mut r = Responder::new(Some(k.clone()), &[], peer);
        assert!(
            matches!(r.step(&[1u8; 5]), Step::Refuse(..)),
            "short step 1"
        );
        assert!(Responder::new(Some(k), &[peer], peer).done, "allow-listed");
        assert!(Responder::new(None, &[], peer).done, "no secret");
    }

    /// The first frame on the wire is exactly what the module docs show.
    #[test]
    fn step_one_frame_matches_the_documented_bytes() {
        let mut out = BytesMut::new();
        let mut payload = vec![1u8];
        payload.extend_from_slice(&[0xAB; 32]);
        let to = Address::Name(Bytes::from_static(AUTH_NAME.as_bytes()));
        encode_request(&mut out, &to, 1, &payload).unwrap();
        let mut want = vec![0x00, 0x30, 0x80, 0x09];
        want.extend_from_slice(b"@bee_auth");
        want.extend_from_slice(&[1, 0, 0, 0, 1]);
        want.extend_from_slice(&[0xAB; 32]);
        assert_eq!(&out[..], &want[..]);
    }

    #[test]
    fn secret_is_never_printed() {
        assert_eq!(
            format!("{:?}", AuthSecret::new(b"hunter2")),
            "AuthSecret(..)"
        );
    }
}
