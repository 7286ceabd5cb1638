//! `deploy/grafana/bee.json` and `deploy/prometheus/alerts.yml` only use metrics bee
//! exports: every `bee_…` name they reference is found in the `/metrics` scrape of real
//! `bee` processes that went through what makes the rarer series appear — calls and
//! their latency, a call to a peer that refuses authentication (errors on the caller,
//! `refused_total{reason="auth"}` on the peer), a peer frozen with SIGSTOP past the
//! liveness bound (heartbeats failed, peer declared dead).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use bee_tests::{bee_cli, free_port, http_get, Layout};

/// Every `bee_[a-z0-9_]+` word of `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("bee_") {
        // A name starts at a word boundary.
        let boundary = at == 0
            || !rest.as_bytes()[at - 1].is_ascii_alphanumeric() && rest.as_bytes()[at - 1] != b'_';
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if boundary {
            names.insert(tail[..len].to_string());
        }
        rest = &tail[len..];
    }
    names
}

/// The series names of a Prometheus text scrape.
fn exported(scrape: &str) -> BTreeSet<String> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

fn deploy_file(path: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

#[test]
fn every_metric_the_dashboard_and_alerts_use_is_exported() {
    let dashboard = deploy_file("deploy/grafana/bee.json");
    let alerts = deploy_file("deploy/prometheus/alerts.yml");
    let parsed: serde_json::Value =
        serde_json::from_str(&dashboard).expect("deploy/grafana/bee.json is not JSON");
    let panels = parsed["panels"]
        .as_array()
        .expect("the dashboard has panels");
    let queries = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .count();
    assert!(queries >= 20, "only {queries} queries in the dashboard");
    let rules = alerts.matches("- alert: ").count();
    assert_eq!(
        rules,
        alerts.matches("\n        expr: ").count(),
        "every alert has an expr"
    );
    assert!(rules >= 10, "only {rules} alerts");

    let mut referenced = metric_names(&dashboard);
    referenced.extend(metric_names(&alerts));
    assert!(referenced.len() >= 20, "{referenced:?}");

    // alpha calls; beta is frozen later; gamma demands a secret alpha does not have.
    let layout = Layout::new(&["alpha", "beta", "gamma"]);
    let (pa, pg) = (free_port(), free_port());
    let echo = "[[service]]\nkind = \"echo\"\nname = \"echo\"\n";
    let _alpha = layout.start_logged(
        "alpha",
        &format!(
            "metrics_listen = \"127.0.0.1:{pa}\"\n[liveness]\nbound_ms = 600\nheartbeat_ms = 150\n{echo}"
        ),
    );
    let beta = layout.start_logged("beta", echo);
    let _gamma = layout.start_logged(
        "gamma",
        &format!(
            "metrics_listen = \"127.0.0.1:{pg}\"\n[auth]\nsecret = \"only-gamma-knows\"\n{echo}"
        ),
    );
    let cluster = layout.cluster_file();
    let c = cluster.to_str().unwrap();
    for _ in 0..5 {
        let (ok, out, err) = bee_cli(&[
            "call",
            "--cluster",
            c,
            "alpha",
            "bee_clusterd",
            "ping",
            "beta",
        ]);
        assert!(ok, "alpha cannot reach beta: {out}{err}");
    }
    let (ok, out, err) = bee_cli(&[
        "call",
        "--cluster",
        c,
        "alpha",
        "bee_clusterd",
        "ping",
        "gamma",
    ]);
    assert!(!ok, "gamma answered alpha without the secret: {out}");
    assert!(err.contains("auth") || err.contains("authent"), "{err}");

    // Freeze beta: alpha's heartbeats go unanswered and it declares beta dead.
    let signal = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &beta.pid().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} beta failed");
    };
    signal("-STOP");
    let deadline = Instant::now() + Duration::from_secs(20);
    let scrape = loop {
        let (status, a) = http_get(pa, "/metrics");
        assert_eq!(status, 200);
        let (status, g) = http_get(pg, "/metrics");
        assert_eq!(status, 200);
        let mut have = exported(&a);
        have.extend(exported(&g));
        let missing: Vec<&String> = referenced.iter().filter(|n| !have.contains(*n)).collect();
        if missing.is_empty() {
            break a;
        }
        if Instant::now() > deadline {
            signal("-CONT");
            panic!(
                "the dashboard or the alerts use metrics no node exports: {missing:?}\n\
                 alpha's scrape:\n{a}\ngamma's scrape:\n{g}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    signal("-CONT");
    assert!(scrape.contains("reason=\"heartbeat\""), "{scrape}");
}
