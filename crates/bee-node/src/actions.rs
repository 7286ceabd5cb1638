//! Actions on the status listener, off unless the node config turns them on:
//!
//! ```toml
//! [admin]
//! enabled = true    # POST /api/v1/admin/drain and /api/v1/admin/config
//! ```
//!
//! - `POST /api/v1/admin/drain`: the node drains and exits, exactly as on SIGTERM
//!   (refuses new peers, answers what it accepted, within `drain_timeout_ms`).
//!   Answers `202` at once; the drain is in the node's log.
//! - `POST /api/v1/admin/config[?force=true]`, the body a cluster config (Lua or TOML
//!   form): the same push as `bee config push` from this node to every node of the
//!   running config ∪ the new one, each within [`PUSH_TIMEOUT`]. Answers `200` when
//!   every reachable node applied it, `409` otherwise, with one entry per node. A node
//!   whose cluster config lives in etcd answers `409`: the config is pushed by writing
//!   the etcd key (`bee config push --cluster etcd://…`), so that etcd stays the truth.
//!
//! When `[auth]` is on, every action must carry the cluster secret as
//! `Authorization: Bearer SECRET` (compared in constant time; a wrong or missing one
//! is `401` and logged). Without `[auth]` anyone who reaches `metrics_listen` can act:
//! the node says so in a warning at start. With actions off, both paths answer `403`
//! and say how to turn them on. Reading (the page, `/metrics`, `/api/v1/…`) never needs
//! the secret.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use bee_cluster::Cluster;
use bee_registry::ClusterConfig;
use bee_transport::AuthSecret;
use serde::Serialize;

use crate::admin;
use crate::config::NodeConfig;

/// How long each node may take to answer a push from the page.
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest config body accepted.
const MAX_BODY: usize = 1 << 20;

/// What the action handlers need.
struct Actions {
    enabled: bool,
    secret: Option<Vec<u8>>,
    /// The node's own cluster secret, for pushing to the other nodes.
    cluster_secret: Option<AuthSecret>,
    cluster: Cluster,
    /// The node config's `cluster` names an etcd key.
    etcd: bool,
    drain: Arc<tokio::sync::Notify>,
}

/// The action routes, to be merged into the status server. `drain` is notified when a
/// drain is asked for; the node's main loop treats it as SIGTERM.
pub fn router(
    cfg: &NodeConfig,
    cluster: &Cluster,
    drain: Arc<tokio::sync::Notify>,
) -> anyhow::Result<Router> {
    let enabled = cfg.admin.enabled;
    let secret = match &cfg.auth {
        Some(auth) => Some(auth.secret_bytes(&cfg.dir)?),
        None => None,
    };
    if enabled && secret.is_none() {
        tracing::warn!(node = %cfg.name, metrics_listen = ?cfg.metrics_listen, "[admin] actions are on without [auth]: anyone who reaches the status listener can drain this node or push a cluster config");
    }
    let state = Arc::new(Actions {
        enabled,
        cluster_secret: secret.clone().map(AuthSecret::new),
        secret,
        cluster: cluster.clone(),
        etcd: crate::etcd::url_of(cfg).is_some(),
        drain,
    });
    Ok(Router::new()
        .route("/api/v1/admin/drain", post(drain_node))
        .route("/api/v1/admin/config", post(push_config))
        .with_state(state))
}

type Shared = State<Arc<Actions>>;

fn answer(code: StatusCode, body: serde_json::Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn refuse(code: StatusCode, error: impl std::fmt::Display) -> Response {
    answer(code, serde_json::json!({ "error": error.to_string() }))
}

/// Equal bytes, in time that depends only on the lengths.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Actions {
    /// `None` when the request may act, else the refusal.
    fn gate(&self, what: &str, headers: &HeaderMap) -> Option<Response> {
        if !self.enabled {
            return Some(refuse(
                StatusCode::FORBIDDEN,
                "actions are off on this node: the status listener is read-only unless the node config has [admin] enabled = true",
            ));
        }
        let secret = self.secret.as_ref()?;
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match given {
            Some(g) if same(g.as_bytes(), secret) => None,
            Some(_) => {
                tracing::warn!(node = %self.cluster.node_name(), action = what, "status listener: an action with a wrong secret was refused");
                Some(refuse(StatusCode::UNAUTHORIZED, "wrong secret"))
            }
            None => Some(refuse(
                StatusCode::UNAUTHORIZED,
                "this node runs with [auth]: send the cluster secret as `Authorization: Bearer SECRET`",
            )),
        }
    }
}

async fn drain_node(State(a): Shared, headers: HeaderMap) -> Response {
    if let Some(no) = a.gate("drain", &headers) {
        return no;
    }
    if a.cluster.draining() {
        return answer(
            StatusCode::ACCEPTED,
            serde_json::json!({ "draining": true, "note": "already draining" }),
        );
    }
    tracing::info!(node = %a.cluster.node_name(), "drain asked for on the status listener");
    a.drain.notify_one();
    answer(
        StatusCode::ACCEPTED,
        serde_json::json!({ "draining": true }),
    )
}

/// One node's answer to a push.
#[derive(Serialize)]
struct PushRow {
    node: String,
    address: String,
    result: &'static str,
    detail: String,
}

async fn push_config(State(a): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(no) = a.gate("config push", &headers) {
        return no;
    }
    let force = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "force=true" || kv == "force=1"));
    if a.etcd {
        return refuse(
            StatusCode::CONFLICT,
            "this node follows its cluster config in etcd: push by writing the key (bee config push --cluster etcd://…), so that etcd stays the truth",
        );
    }
    if body.len() > MAX_BODY {
        return refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a cluster config of {} bytes; at most {MAX_BODY}",
                body.len()
            ),
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return refuse(StatusCode::BAD_REQUEST, "the body is not UTF-8 text");
    };
    let new = match ClusterConfig::parse_any(text).and_then(|c| c.validate().map(|()| c)) {
        Ok(c) => c,
        Err(e) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                format!("not a valid cluster config (nothing was pushed): {e}"),
            )
        }
    };
    let current = a.cluster.registry().config();
    let (targets, skipped) = admin::targets(&[&current, &new]);
    let from = format!("status page of {}", a.cluster.node_name());
    tracing::info!(node = %a.cluster.node_name(), version = new.version, nodes = targets.len(), force = force, "config push asked for on the status listener");
    let answers = admin::push_to_nodes(
        &targets,
        text,
        force,
        &from,
        PUSH_TIMEOUT,
        a.cluster_secret.as_ref(),
    )
    .await;
    let mut rows: Vec<PushRow> = answers
        .iter()
        .map(|(node, address, ans)| PushRow {
            node: node.clone(),
            address: address.clone(),
            result: ans.word(),
            detail: ans.detail().to_string(),
        })
        .collect();
    rows.extend(skipped.into_iter().map(|node| PushRow {
        node,
        address: "false".into(),
        result: "skipped",
        detail: "marked down in both configs".into(),
    }));
    let applied = rows.iter().filter(|r| r.result == "applied").count();
    let ok = rows
        .iter()
        .all(|r| matches!(r.result, "applied" | "unreachable" | "skipped"));
    answer(
        if ok {
            StatusCode::OK
        } else {
            StatusCode::CONFLICT
        },
        serde_json::json!({
            "version": new.version,
            "hash": new.content_hash().short(),
            "applied": applied,
            "ok": ok,
            "nodes": rows,
        }),
    )
}
