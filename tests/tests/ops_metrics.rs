//! The node's Prometheus endpoint and its byte budgets, across real `bee`
//! processes on loopback: the metrics are scraped over HTTP from the `bee` process
//! (`metrics_listen`) and checked for the counters the test just moved — requests and
//! bytes on the listener, the node budgets' gauges, and a budget rejection provoked by a
//! raw client announcing a multi-part request larger than the node's inbound budget
//! (that connection is closed with one log line naming the peer; the node keeps serving).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bee_codec::seri::{self, Value};
use bee_tests::{free_port, BeeProcess, Layout};

/// GET /metrics from `port`; the body (panics on anything but HTTP 200).
fn scrape(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the metrics port");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read the scrape");
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    assert!(head.contains(" 200 "), "{head}");
    body.to_string()
}

/// The value of the sample `name{labels}` exactly as rendered (labels in the exporter's
/// order), if present.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Scrape until `series` satisfies `cond` (at most 5 s: node gauges refresh every
/// second); returns its value.
fn wait_sample(port: u16, series: &str, cond: impl Fn(f64) -> bool) -> f64 {
    bee_tests::wait_for(
        &format!("{series} to meet the condition"),
        Duration::from_secs(5),
        || {
            let body = scrape(port);
            sample(&body, series).filter(|v| cond(*v)).ok_or(body)
        },
    )
}

fn start(layout: &Layout, name: &str, metrics: u16, extra: &str) -> BeeProcess {
    layout.start_logged(
        name,
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\n{extra}\n\
             [[service]]\nkind = \"echo\"\nname = \"echo\"\n"
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_metrics_scraped_over_http_show_the_calls_just_made() {
    let layout = Layout::new(&["metered"]);
    let metrics = free_port();
    let _node = start(&layout, "metered", metrics, "");
    let listener = format!("127.0.0.1:{}", layout.port("metered"));
    let requests = format!("bee_transport_listener_requests_total{{listener=\"{listener}\"}}");
    let bytes_in = format!("bee_transport_listener_bytes_in_total{{listener=\"{listener}\"}}");

    let before = scrape(metrics);
    assert!(
        before.contains("# TYPE bee_node_info gauge"),
        "HELP/TYPE lines: {before}"
    );
    assert_eq!(
        sample(&before, "bee_node_info{node=\"metered\",version=\"0.1.0\"}"),
        Some(1.0),
        "{before}"
    );
    let n0 = sample(&before, &requests).unwrap_or(0.0);
    let b0 = sample(&before, &bytes_in).unwrap_or(0.0);

    let (_client, cluster) = layout.client(Duration::from_secs(5));
    const CALLS: usize = 25;
    for i in 0..CALLS {
        let p = seri::pack(&[Value::from("m"), Value::Integer(i as i64)]).unwrap();
        assert_eq!(cluster.call("metered", "echo", p.clone()).await.unwrap(), p);
    }
    let after = scrape(metrics);
    let n1 = sample(&after, &requests).expect("requests counter");
    // The 25 calls, plus what a bee client adds on a new connection on its own: the
    // `hello` that learns the node's incarnation, and a heartbeat if the link idled.
    let counted = n1 - n0;
    assert!(
        counted >= CALLS as f64 && counted <= CALLS as f64 + 3.0,
        "{counted} requests counted for {CALLS} calls: {after}"
    );
    assert!(sample(&after, &bytes_in).unwrap() > b0, "{after}");
    let open = format!("bee_transport_listener_connections{{listener=\"{listener}\"}}");
    assert_eq!(sample(&after, &open), Some(1.0), "{after}");
    let accepted = format!("bee_transport_listener_accepted_total{{listener=\"{listener}\"}}");
    assert!(sample(&after, &accepted).unwrap() >= 1.0, "{after}");

    // The node gauges (sampled every second): budgets at their defaults, services,
    // process memory.
    let limit = wait_sample(
        metrics,
        "bee_node_budget_limit_bytes{budget=\"inbound\"}",
        |v| v > 0.0,
    );
    assert_eq!(limit, (1u64 << 30) as f64);
    wait_sample(metrics, "bee_node_services", |v| v >= 2.0);
    wait_sample(metrics, "bee_process_resident_memory_bytes", |v| {
        v > 1_000_000.0
    });
    wait_sample(metrics, "bee_node_mailbox_queued{service=\"echo\"}", |v| {
        v == 0.0
    });
}

/// Frames of a multi-part request header to `"@name"` (type 0x81) announcing `total`.
fn name_header(name: &str, session: u32, total: u32) -> Vec<u8> {
    let mut body = vec![0x81, name.len() as u8];
    body.extend_from_slice(name.as_bytes());
    body.extend_from_slice(&session.to_le_bytes());
    body.extend_from_slice(&total.to_le_bytes());
    let mut out = (body.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_metrics_count_a_node_budget_rejection_and_the_node_keeps_serving() {
    let layout = Layout::new(&["budgeted"]);
    let metrics = free_port();
    let node = start(
        &layout,
        "budgeted",
        metrics,
        "[limits]\ninbound_bytes = 1048576\n",
    );
    let listener = format!("127.0.0.1:{}", layout.port("budgeted"));
    wait_sample(
        metrics,
        "bee_node_budget_limit_bytes{budget=\"inbound\"}",
        |v| v == 1_048_576.0,
    );

    // A peer announcing a 2 MiB request: more than the node holds for everyone.
    let mut s = TcpStream::connect(&listener).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&name_header("@echo", 1, 2 << 20)).unwrap();
    let mut buf = [0u8; 64];
    // Closed by the node (EOF or reset), not left hanging.
    match s.read(&mut buf) {
        Ok(0) | Err(_) => {}
        Ok(n) => panic!("expected the connection closed, read {n} bytes"),
    }
    let peer = s.local_addr().unwrap();

    let rejections =
        format!("bee_transport_listener_budget_rejections_total{{listener=\"{listener}\"}}");
    wait_sample(metrics, &rejections, |v| v == 1.0);
    wait_sample(
        metrics,
        "bee_node_budget_rejected_total{budget=\"inbound\"}",
        |v| v == 1.0,
    );
    let log = node.log();
    assert!(
        log.contains("larger than the whole node inbound budget")
            && log.contains(&format!("peer={peer}")),
        "one log line naming the peer:\n{log}"
    );

    // Everyone else is still served, and the budget is whole again.
    let (_client, cluster) = layout.client(Duration::from_secs(5));
    let p = seri::pack(&[Value::from("still here")]).unwrap();
    assert_eq!(
        cluster.call("budgeted", "echo", p.clone()).await.unwrap(),
        p
    );
    wait_sample(
        metrics,
        "bee_node_budget_used_bytes{budget=\"inbound\"}",
        |v| v == 0.0,
    );
}
