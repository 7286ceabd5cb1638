//! The JSON API on a node's `metrics_listen` (`/api/v1/node`, `/api/v1/cluster`), read
//! from real `bee` processes on loopback and checked against the documented shape
//! (every field, its type, no field that is not documented), and what the cluster view
//! says when a node is killed: `down`, named among the nodes that did not answer, with
//! the error, and a `down` entry in the timeline. Also: the other paths of the listener,
//! and `bee_clusterd status`, through which the cluster view is gathered.

use std::time::{Duration, Instant};

use bee_tests::{bee_cli, free_port, http_get, http_request, BeeProcess, Layout};
use serde_json::{json, Value};

/// Check `v` against `shape`: a string names a type (`string`, `u64`, `f64`, `bool`,
/// `any`; a trailing `?` allows null), an array's one element is the shape of every
/// element, an object lists every key (no more, no fewer).
fn check(path: &str, v: &Value, shape: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    match shape {
        Value::String(t) => {
            let (t, nullable) = match t.strip_suffix('?') {
                Some(t) => (t, true),
                None => (t.as_str(), false),
            };
            let ok = match (t, v) {
                (_, Value::Null) => nullable,
                ("string", Value::String(_)) => true,
                ("u64", v) => v.is_u64(),
                ("f64", v) => v.is_number(),
                ("bool", Value::Bool(_)) => true,
                ("any", v) => !v.is_null(),
                _ => false,
            };
            if !ok {
                errors.push(format!("{path}: expected {t}, found {v}"));
            }
        }
        Value::Array(elem) => match v.as_array() {
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    errors.extend(check(&format!("{path}[{i}]"), item, &elem[0]));
                }
            }
            None => errors.push(format!("{path}: expected an array, found {v}")),
        },
        Value::Object(keys) => match v.as_object() {
            Some(o) => {
                for (k, s) in keys {
                    match o.get(k) {
                        Some(x) => errors.extend(check(&format!("{path}.{k}"), x, s)),
                        None => errors.push(format!("{path}: missing {k}")),
                    }
                }
                for k in o.keys().filter(|k| !keys.contains_key(*k)) {
                    errors.push(format!("{path}: undocumented field {k}"));
                }
            }
            None => errors.push(format!("{path}: expected an object, found {v}")),
        },
        _ => errors.push(format!("{path}: bad shape {shape}")),
    }
    errors
}

/// The shape of `/api/v1/node` (docs/operations.md, "The status page and its JSON API").
fn node_shape() -> Value {
    json!({
        "schema": "string", "node": "string", "listening": ["string"], "version": "string",
        "incarnation": "u64", "uptime_ms": "u64", "now_ms": "u64",
        "config": {"version": "u64", "hash": "string", "applied_at_ms": "u64",
                   "source": "string", "cluster": "string"},
        "budgets": [{"name": "string", "used": "u64", "limit": "u64", "rejected": "u64"}],
        "connections": {"inbound": "u64", "outbound": "u64", "outbound_channels": "u64"},
        "process": {"rss_bytes": "u64?", "open_fds": "u64?"},
        "services": [{"addr": "string", "label": "string", "kind": "string", "runtime": "string",
                      "names": ["string"], "handled": "u64", "busy_ms": "u64", "queued": "u64",
                      "uptime_ms": "u64"}],
        "shards": [{"label": "string", "rule": "string?", "master": "string?",
                    "workers": [{"index": "u64", "addr": "string",
                                                   "handled": "u64", "queued": "u64"}]}],
        "peers": [{"node": "string", "address": "string", "link": "string",
                   "down_reason": "string?", "incarnation": "u64?", "calls": "u64",
                   "pushes": "u64", "errors": "u64", "reconnects": "u64", "in_flight": "u64",
                   "queued_bytes": "u64", "bytes_out": "u64", "bytes_in": "u64",
                   "rates": {"calls_per_s": "f64", "errors_per_s": "f64",
                             "bytes_out_per_s": "f64", "bytes_in_per_s": "f64"},
                   "p50_ms": "f64?", "p99_ms": "f64?"}],
        "events": [{"at_ms": "u64", "kind": "string", "text": "string"}],
        "draining": "bool",
        "admin": "bool",
        "admin_needs_secret": "bool",
    })
}

/// The shape of `/api/v1/cluster`; `status` of each node is [`node_shape`] or null.
fn cluster_shape() -> Value {
    json!({
        "schema": "string", "from": "string", "now_ms": "u64", "took_ms": "u64",
        "timeout_ms": "u64",
        "header": {"up": "u64", "suspect": "u64", "down": "u64", "config_version": "u64",
                   "config_hash": "string", "config_acked": "u64", "config_source": "string",
                   "draining": ["string"],
                   // Null in file mode; its shape is checked by config_etcd.rs.
                   "etcd": "any?"},
        "nodes": [{"name": "string", "address": "string", "state": "string",
                   "error": "string?", "answered_ms": "u64?", "status": "any?"}],
        "not_answered": ["string"],
        "timeline": [{"node": "string", "at_ms": "u64", "kind": "string", "text": "string"}],
    })
}

fn get_json(port: u16, path: &str) -> Value {
    let (status, body) = http_get(port, path);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

fn assert_shape(what: &str, v: &Value, shape: &Value) {
    let errors = check(what, v, shape);
    assert!(
        errors.is_empty(),
        "{what} does not match its documented shape:\n{}\n{v:#}",
        errors.join("\n")
    );
}

fn start(layout: &Layout, name: &str, metrics: Option<u16>) -> BeeProcess {
    let listen = metrics.map_or(String::new(), |p| {
        format!("metrics_listen = \"127.0.0.1:{p}\"\n")
    });
    layout.start_logged(
        name,
        &format!("{listen}[[service]]\nkind = \"echo\"\nname = \"echo\"\n"),
    )
}

#[test]
fn node_and_cluster_json_follow_their_schema_and_a_killed_node_is_named() {
    let layout = Layout::new(&["alpha", "beta", "gamma"]);
    let (pa, pb) = (free_port(), free_port());
    let _alpha = start(&layout, "alpha", Some(pa));
    let mut beta = start(&layout, "beta", Some(pb));
    // gamma serves no status page: it answers the cluster view with an error.
    let _gamma = start(&layout, "gamma", None);
    let cluster = layout.cluster_file();
    let c = cluster.to_str().unwrap();
    // Traffic alpha -> beta, so the link has calls and a latency.
    for i in 0..20 {
        let (ok, out, err) = bee_cli(&["call", "--cluster", c, "beta", "echo", &i.to_string()]);
        assert!(ok, "{out}{err}");
    }

    // alpha has called nobody yet: no peers to show.
    let node = get_json(pa, "/api/v1/node");
    assert_shape("/api/v1/node", &node, &node_shape());
    assert_eq!(node["peers"], json!([]));
    // Gathering the cluster view calls every node.
    get_json(pa, "/api/v1/cluster");
    let node = get_json(pa, "/api/v1/node");
    assert_shape("/api/v1/node", &node, &node_shape());
    assert_eq!(node["schema"], "bee.node/1");
    assert_eq!(node["node"], "alpha");
    assert_eq!(node["admin"], false);
    assert_eq!(
        node["listening"][0].as_str().unwrap(),
        format!("127.0.0.1:{}", layout.port("alpha"))
    );
    let peers: Vec<&str> = node["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["node"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["beta", "gamma"]);
    let echo = node["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "echo")
        .expect("alpha lists its echo service");
    assert_eq!(
        (&echo["kind"], &echo["runtime"]),
        (&json!("echo"), &json!("rust"))
    );

    // beta's own view: the calls the clients made arrived (handled by its echo).
    let b = get_json(pb, "/api/v1/node");
    assert_shape("/api/v1/node of beta", &b, &node_shape());
    let handled = b["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["label"] == "echo")
        .map(|s| s["handled"].as_u64().unwrap())
        .unwrap();
    assert_eq!(handled, 20);

    let view = get_json(pa, "/api/v1/cluster");
    assert_shape("/api/v1/cluster", &view, &cluster_shape());
    assert_eq!(view["schema"], "bee.cluster/1");
    assert_eq!(view["from"], "alpha");
    let state = |v: &Value, n: &str| {
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap_or_else(|| panic!("{n} missing from the cluster view: {v:#}"))
            .clone()
    };
    for n in ["alpha", "beta"] {
        let s = state(&view, n);
        assert_eq!(s["state"], "up", "{s:#}");
        assert_shape(&format!("status of {n}"), &s["status"], &node_shape());
        assert_eq!(s["status"]["node"], n);
    }
    // alpha's status, gathered after it asked the others, shows a connected link to beta.
    let ab = state(&view, "alpha")["status"]["peers"][0].clone();
    assert_eq!(
        (&ab["node"], &ab["link"]),
        (&json!("beta"), &json!("connected")),
        "{ab:#}"
    );
    let g = state(&view, "gamma");
    assert_eq!(g["status"], Value::Null);
    assert!(
        g["error"].as_str().unwrap().contains("serves no status"),
        "gamma's error should say why: {g:#}"
    );
    // gamma answered, just without a status: up, and not among the silent ones.
    assert_eq!(g["state"], "up");
    assert_eq!(view["not_answered"], json!([]));
    assert_eq!(view["header"]["up"], 3);
    // Of the nodes that told their config, both run the same one.
    assert_eq!(view["header"]["config_acked"], 2);

    // Kill beta: within the liveness bound (4 s by default) the view says it is down.
    beta.kill9();
    let killed = Instant::now();
    let bound = Duration::from_millis(4000);
    let down = loop {
        let v = get_json(pa, "/api/v1/cluster");
        if state(&v, "beta")["state"] == "down" {
            break v;
        }
        assert!(
            killed.elapsed() < bound,
            "beta still not down {:?} after it was killed: {v:#}",
            killed.elapsed()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_shape("/api/v1/cluster after a kill", &down, &cluster_shape());
    let b = state(&down, "beta");
    assert!(b["error"].as_str().is_some_and(|e| !e.is_empty()), "{b:#}");
    assert!(down["not_answered"]
        .as_array()
        .unwrap()
        .contains(&json!("beta")));
    assert_eq!(down["header"]["down"], 1);
    assert!(
        down["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "down"
                && e["node"] == "alpha"
                && e["text"].as_str().unwrap().starts_with("beta is down")),
        "no 'beta is down' in the timeline: {:#}",
        down["timeline"]
    );
}

#[test]
fn the_listener_serves_the_page_metrics_and_clear_errors() {
    let layout = Layout::new(&["solo"]);
    let port = free_port();
    let _solo = start(&layout, "solo", Some(port));
    let (status, page) = http_get(port, "/");
    assert_eq!(status, 200);
    assert!(
        page.contains("<script src=\"app.js\">") && page.contains("id=\"nodes\""),
        "{page}"
    );
    let (status, js) = http_get(port, "/app.js");
    assert_eq!(status, 200);
    assert!(
        js.contains("api/v1/cluster"),
        "the page polls the cluster view"
    );
    // Nothing is fetched from anywhere but this node.
    assert!(!page.contains("http://") && !page.contains("https://") && !js.contains("http"));
    let (status, metrics) = http_get(port, "/metrics");
    assert_eq!(status, 200);
    assert!(metrics.contains("bee_node_info{node=\"solo\""), "{metrics}");
    let (status, body) = http_get(port, "/api/v2/anything");
    assert_eq!(status, 404);
    assert!(body.contains("/api/v1/node"), "{body}");

    // What the cluster view is gathered with, from the console.
    let cluster = layout.cluster_file();
    let (ok, out, err) = bee_cli(&[
        "call",
        "--cluster",
        cluster.to_str().unwrap(),
        "solo",
        "bee_clusterd",
        "status",
    ]);
    assert!(ok, "{out}{err}");
    let text = out.trim().trim_matches('"').replace("\\\"", "\"");
    assert!(
        text.contains("\"schema\":\"bee.node/1\"") && text.contains("\"node\":\"solo\""),
        "{out}"
    );
}

#[test]
fn a_draining_node_is_shown_draining() {
    let layout = Layout::new(&["alpha", "beta"]);
    let (pa, pb) = (free_port(), free_port());
    let _alpha = start(&layout, "alpha", Some(pa));
    let beta = layout.start_logged(
        "beta",
        &format!(
            "metrics_listen = \"127.0.0.1:{pb}\"\ndrain_timeout_ms = 20000\n\
             [[service]]\nkind = \"slow\"\nname = \"slow\"\n"
        ),
    );
    // alpha's connection to beta exists before beta stops accepting peers.
    let view = get_json(pa, "/api/v1/cluster");
    assert_eq!(view["header"]["up"], 2, "{view:#}");
    assert_eq!(view["header"]["draining"], json!([]));
    // A call beta must answer before it may exit, then SIGTERM: beta drains.
    let cluster = layout.cluster_file();
    let c = cluster.to_str().unwrap().to_string();
    let slow =
        std::thread::spawn(move || bee_cli(&["call", "--cluster", &c, "beta", "slow", "8000"]));
    std::thread::sleep(Duration::from_millis(500));
    let term = std::process::Command::new("kill")
        .args(["-TERM", &beta.pid().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    // beta's own page, still served while it drains, says so.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let b = get_json(pb, "/api/v1/node");
        assert_shape("/api/v1/node of a draining node", &b, &node_shape());
        if b["draining"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "beta never said it drains: {b:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let view = get_json(pa, "/api/v1/cluster");
        if view["header"]["draining"] == json!(["beta"]) {
            // beta told alpha goaway: alpha's timeline says so.
            assert!(
                view["timeline"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["kind"] == "drain"
                        && e["node"] == "alpha"
                        && e["text"].as_str().unwrap().starts_with("beta is draining")),
                "{:#}",
                view["timeline"]
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "beta never shown draining: {view:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The call only kept beta draining while the test looked; its outcome is the
    // drain's business (tests/tests/drain.rs).
    let _ = slow.join();
}

#[test]
fn after_a_hot_update_the_successor_serves_the_page() {
    let layout = Layout::new(&["solo"]);
    let port = free_port();
    let mut solo = start(&layout, "solo", Some(port));
    let before = get_json(port, "/api/v1/node")["incarnation"].clone();
    // The successor cannot bind the metrics address while its predecessor serves it; it
    // binds it once the predecessor is gone.
    assert!(
        solo.take_over(None),
        "the old process did not hand over cleanly"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            let now = get_json(port, "/api/v1/node");
            if now["incarnation"] != before {
                assert_shape("/api/v1/node after a hot update", &now, &node_shape());
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the successor does not serve the status page:\n{}",
            solo.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `bee status --json` prints the cluster view `/api/v1/cluster` serves (same schema),
/// gathered by the client itself: every node's status, a stopped node `down` with the
/// error; the exit status fails (after printing) when a node did not answer.
#[test]
fn bee_status_json_is_the_cluster_view() {
    let layout = Layout::new(&["alpha", "beta", "gamma"]);
    let _alpha = start(&layout, "alpha", Some(free_port()));
    let _beta = start(&layout, "beta", Some(free_port()));
    let cluster = layout.cluster_file();
    let c = cluster.to_str().unwrap();
    // gamma is in the config but not running.
    let (ok, out, err) = bee_cli(&["status", "--json", "--cluster", c]);
    assert!(!ok, "a node did not answer: the command must fail\n{out}");
    assert!(err.contains("did not answer: gamma"), "{err}");
    let view: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_shape("bee status --json", &view, &cluster_shape());
    assert_eq!(view["schema"], "bee.cluster/1");
    assert_eq!(view["not_answered"], json!(["gamma"]));
    let states: Vec<(&str, &str)> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["name"].as_str().unwrap(), n["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states, [("alpha", "up"), ("beta", "up"), ("gamma", "down")]);
    for n in ["alpha", "beta"] {
        let node = view["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap();
        assert_shape(&format!("status of {n}"), &node["status"], &node_shape());
        assert_eq!(node["status"]["node"], n);
    }
    assert_eq!(
        (
            view["header"]["up"].as_u64(),
            view["header"]["down"].as_u64()
        ),
        (Some(2), Some(1))
    );
    assert!(view["header"]["etcd"].is_null(), "file mode: no etcd");
    // Only the named nodes: all answer, exit 0.
    let (ok, out, err) = bee_cli(&["status", "--json", "--cluster", c, "alpha", "beta"]);
    assert!(ok, "{out}{err}");
    let view: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(view["not_answered"], json!([]));
}

/// Actions on the status listener: off by default (403, the page says read-only); with
/// `[admin] enabled = true` and `[auth]`, refused without or with a wrong secret (401);
/// with the secret a config push reaches every node (200, one row each) and a bad
/// config is refused before anything is sent (400); a drain makes the node drain and
/// exit cleanly, as SIGTERM does.
#[test]
fn admin_actions_are_off_by_default_and_need_the_secret() {
    let layout = Layout::new(&["alpha", "beta"]);
    // Off by default.
    let p = free_port();
    let mut plain = start(&layout, "alpha", Some(p));
    let (code, body) = http_request(p, "POST", "/api/v1/admin/drain", &[], b"");
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("[admin] enabled = true"), "{body}");
    assert!(plain.terminate());

    let secret = "page-secret-1";
    let conf = |metrics: u16| {
        format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\n[admin]\nenabled = true\n[auth]\nsecret = \"{secret}\"\n[[service]]\nkind = \"echo\"\nname = \"echo\"\n"
        )
    };
    let (pa, pb) = (free_port(), free_port());
    let mut alpha = layout.start_logged("alpha", &conf(pa));
    let _beta = layout.start_logged("beta", &conf(pb));
    let node = get_json(pa, "/api/v1/node");
    assert_eq!(
        (
            node["admin"].as_bool(),
            node["admin_needs_secret"].as_bool()
        ),
        (Some(true), Some(true))
    );

    let bearer = format!("Bearer {secret}");
    let (code, body) = http_request(pa, "POST", "/api/v1/admin/drain", &[], b"");
    assert_eq!(code, 401, "no secret: {body}");
    let (code, body) = http_request(
        pa,
        "POST",
        "/api/v1/admin/drain",
        &[("Authorization", "Bearer nope")],
        b"",
    );
    assert_eq!(code, 401, "wrong secret: {body}");
    assert!(
        alpha.log().contains("wrong secret was refused"),
        "{}",
        alpha.log()
    );

    // A bad config: nothing sent.
    let (code, body) = http_request(
        pa,
        "POST",
        "/api/v1/admin/config",
        &[("Authorization", &bearer)],
        b"this is not a config",
    );
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("nothing was pushed"), "{body}");

    // Version 2 of the same cluster, pushed from alpha's page to both nodes.
    let new = format!(
        "__version = 2\nalpha = \"127.0.0.1:{}\"\nbeta = \"127.0.0.1:{}\"\ngamma = false\n",
        layout.port("alpha"),
        layout.port("beta")
    );
    let (code, body) = http_request(
        pa,
        "POST",
        "/api/v1/admin/config",
        &[("Authorization", &bearer)],
        new.as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    let pushed: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            pushed["ok"].as_bool(),
            pushed["applied"].as_u64(),
            pushed["version"].as_u64()
        ),
        (Some(true), Some(2), Some(2)),
        "{body}"
    );
    for port in [pa, pb] {
        let n = get_json(port, "/api/v1/node");
        assert_eq!(n["config"]["version"], 2, "{n}");
        assert!(
            n["config"]["source"]
                .as_str()
                .unwrap()
                .contains("status page of alpha"),
            "{n}"
        );
    }
    // The same config again changes nothing and is applied (idempotent); an older
    // version is refused by every node (409), which still run version 2.
    let (code, body) = http_request(
        pa,
        "POST",
        "/api/v1/admin/config",
        &[("Authorization", &bearer)],
        new.as_bytes(),
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("no change"), "{body}");
    let old = new.replace("__version = 2", "__version = 1");
    let (code, body) = http_request(
        pa,
        "POST",
        "/api/v1/admin/config",
        &[("Authorization", &bearer)],
        old.as_bytes(),
    );
    assert_eq!(code, 409, "{body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refused["ok"], false, "{body}");
    assert_eq!(refused["nodes"][0]["result"], "rejected", "{body}");
    assert_eq!(get_json(pb, "/api/v1/node")["config"]["version"], 2);

    // Drain: answered at once, then the node drains and exits 0.
    let (code, body) = http_request(
        pa,
        "POST",
        "/api/v1/admin/drain",
        &[("Authorization", &bearer)],
        b"",
    );
    assert_eq!(code, 202, "{body}");
    assert!(
        alpha.wait_exit(Duration::from_secs(30)),
        "alpha did not drain and exit cleanly:\n{}",
        alpha.log()
    );
}
