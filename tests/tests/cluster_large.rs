//! Large payloads both ways through a real `bee` node — 1 MiB and 64 MiB as a
//! call's argument (request direction, multi-part request) and as its reply (response
//! direction, multi-part response) through `echo`, and as pushes (multi-part pushes) to
//! `sink`, whose count must then include every one.
//!
//! 64 MiB is close to the default 65 MiB maximum message; a message past the maximum is
//! refused before anything is sent, with a readable error. A 64 MiB round trip takes
//! well under a second even with a debug build (a few copies of the payload per side).

use std::time::{Duration, Instant};

use bee_cluster::Cluster;
use bee_codec::seri::{self, Value};
use bee_tests::Layout;
use bytes::Bytes;

const SERVICES: &str = r#"
[[service]]
kind = "echo"
name = "echo"

[[service]]
kind = "sink"
name = "sink"
"#;

const MIB: usize = 1 << 20;

/// One string value of `size` bytes with a pattern that shows misplaced pieces.
fn payload(size: usize, seed: u8) -> Bytes {
    let body: Vec<u8> = (0..size)
        .map(|i| ((i % 251) as u8).wrapping_add(seed))
        .collect();
    seri::pack(&[Value::from(body)]).expect("pack")
}

async fn echo(client: &Cluster, request: &Bytes, what: &str) {
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        client.call("big", "@echo", request.clone()),
    )
    .await
    .unwrap_or_else(|_| panic!("{what}: no reply within 60 s"))
    .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(reply.len(), request.len(), "{what}: reply size");
    assert!(
        reply == *request,
        "{what}: the reply differs from the request"
    );
    println!(
        "{what}: {} bytes there and back in {:?}",
        request.len(),
        started.elapsed()
    );
}

async fn sink_count(client: &Cluster, command: &str) -> i64 {
    let reply = tokio::time::timeout(
        Duration::from_secs(60),
        client.call(
            "big",
            "@sink",
            seri::pack(&[Value::from(command)]).expect("pack"),
        ),
    )
    .await
    .expect("sink count: no reply within 60 s")
    .expect("sink count");
    seri::unpack(&reply).expect("unpack")[0]
        .as_int()
        .expect("an integer count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mib_calls_and_pushes() {
    let layout = Layout::new(&["big"]);
    let _node = layout.start("big", SERVICES);
    let (_client_node, client) = layout.client(Duration::from_secs(60));

    // Several 1 MiB calls at once, each with its own content: replies must not mix.
    let requests: Vec<Bytes> = (0..8).map(|i| payload(MIB, i)).collect();
    let calls: Vec<_> = requests
        .iter()
        .map(|r| {
            let (client, r) = (client.clone(), r.clone());
            tokio::spawn(async move { client.call("big", "@echo", r).await })
        })
        .collect();
    for (i, call) in calls.into_iter().enumerate() {
        let reply = tokio::time::timeout(Duration::from_secs(60), call)
            .await
            .expect("1 MiB call: no reply within 60 s")
            .expect("task")
            .expect("1 MiB call");
        assert!(reply == requests[i], "reply {i} is not its own request");
    }
    echo(&client, &requests[0], "1 MiB call").await;

    // Pushes: 1 MiB each, then small ones, all counted.
    for r in &requests {
        client
            .send("big", "@sink", r.clone())
            .await
            .expect("1 MiB push");
    }
    client
        .send(
            "big",
            "@sink",
            seri::pack(&[Value::from("small")]).expect("pack"),
        )
        .await
        .expect("small push");
    assert_eq!(sink_count(&client, "reset").await, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_mib_call_and_push() {
    let layout = Layout::new(&["big"]);
    let _node = layout.start("big", SERVICES);
    let (_client_node, client) = layout.client(Duration::from_secs(60));

    let request = payload(64 * MIB, 7);
    assert!(request.len() > 64 * MIB);
    // Request direction and response direction: 64 MiB each way.
    echo(&client, &request, "64 MiB call").await;

    // Push 64 MiB, then a call on the same connection sees it counted.
    let started = Instant::now();
    client
        .send("big", "@sink", request.clone())
        .await
        .expect("64 MiB push");
    assert_eq!(
        sink_count(&client, "count").await,
        1,
        "the 64 MiB push was counted"
    );
    println!("64 MiB push counted in {:?}", started.elapsed());

    // The connection is still fine for small traffic afterwards.
    let small = seri::pack(&[Value::from("after")]).expect("pack");
    echo(&client, &small, "small call after 64 MiB").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_maximum_is_refused_readably() {
    let layout = Layout::new(&["big"]);
    let _node = layout.start("big", SERVICES);
    let (_client_node, client) = layout.client(Duration::from_secs(60));

    let too_big = payload(66 * MIB, 1);
    let started = Instant::now();
    let err = client
        .call("big", "@echo", too_big.clone())
        .await
        .expect_err("a 66 MiB call is over the 65 MiB maximum");
    let text = err.to_string();
    assert!(
        text.contains("larger than the maximum") && text.contains("big"),
        "error: {text}"
    );
    let err = client
        .send("big", "@sink", too_big)
        .await
        .expect_err("66 MiB push");
    assert!(
        err.to_string().contains("larger than the maximum"),
        "error: {err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused at once"
    );
    // Nothing reached the node; the channel still works.
    assert_eq!(sink_count(&client, "count").await, 0);
}
