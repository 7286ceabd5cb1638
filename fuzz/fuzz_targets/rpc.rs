//! Fuzz target `rpc`: [`RpcEnvelope::decode`] of arbitrary bytes.
//!
//! Checked: no panic; a decoded envelope is recognised by [`is_envelope`], has a session
//! that suits its kind and non-empty names, and re-encodes to exactly the input; a Call's
//! replies decode to ReplyOk / ReplyErr envelopes with the same session, node and service,
//! and any other kind refuses to be replied to.
#![no_main]

use bee_codec::rpc::{is_envelope, RpcEnvelope, RpcError, RpcKind};
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = Bytes::copy_from_slice(data);
    let env = match RpcEnvelope::decode(&input) {
        Ok(env) => env,
        Err(e) => {
            let _ = e.to_string();
            return;
        }
    };
    assert!(
        is_envelope(data),
        "decoded envelope not recognised by is_envelope"
    );
    assert_eq!(
        env.session == 0,
        env.kind == RpcKind::Send,
        "session does not suit kind"
    );
    assert!(!env.node.is_empty() && !env.service.is_empty());
    let again = RpcEnvelope::encode(env.kind, env.session, &env.node, &env.service, &env.message)
        .expect("a decoded envelope must re-encode");
    assert_eq!(again, input, "envelope does not re-encode to its input");
    assert_eq!(env.node_str().ok(), std::str::from_utf8(&env.node).ok());
    assert_eq!(
        env.service_str().ok(),
        std::str::from_utf8(&env.service).ok()
    );

    // The reply text: the message bytes themselves, so replies vary with the input.
    let text = String::from_utf8_lossy(&env.message);
    match env.kind {
        RpcKind::Call => {
            for (reply, kind) in [
                (env.reply_ok(&env.message), RpcKind::ReplyOk),
                (env.reply_err(&text), RpcKind::ReplyErr),
            ] {
                let reply = reply.expect("a Call must accept a reply");
                let back = RpcEnvelope::decode(&reply).expect("a reply must decode");
                assert_eq!(back.kind, kind);
                assert_eq!(back.session, env.session);
                assert_eq!(back.node, env.node);
                assert_eq!(back.service, env.service);
            }
        }
        other => {
            assert_eq!(env.reply_ok(b"x"), Err(RpcError::NotACall(other)));
            assert_eq!(env.reply_err("x"), Err(RpcError::NotACall(other)));
        }
    }
});
