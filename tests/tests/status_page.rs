//! The status page in a real browser: the four demo nodes (`bee-demo`, the demo's
//! services, each with `metrics_listen`), the page of lobby loaded in headless Chromium
//! (Debian's `chromium`, which `cargo xtask setup` installs) after its script ran, and
//! the rendered DOM checked: the node table and the link matrix show the four nodes, a
//! config push shows in the timeline as seen by every node, and a killed node turns
//! `down` within the liveness bound. A screenshot of the page is saved as
//! `target/status-page/status-page.png`.
//!
//! Without Chromium this test fails and says how to install it.

mod dispatch_common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bee_tests::{bee_cli, demo_bin, free_port, BeeProcess, Layout, TempDir};
use dispatch_common::demo_services;

const NODES: [&str; 4] = ["lobby", "lpersistence_3", "activity_master", "shop_master"];

/// The liveness bound of the nodes (the default `[liveness] bound_ms`).
const LIVENESS_BOUND: Duration = Duration::from_millis(4000);

/// The Chromium binary: `$BEE_CHROMIUM`, else `chromium` on the PATH.
fn chromium() -> PathBuf {
    if let Some(p) = std::env::var_os("BEE_CHROMIUM") {
        return PathBuf::from(p);
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "Chromium not found: the status page test needs Debian's `chromium` \
             (`apt-get install -y chromium`, or `cargo xtask setup`), or BEE_CHROMIUM=path"
        )
    })
}

/// Run headless Chromium on `url` with `mode` (`--dump-dom` or `--screenshot=…`) after
/// the page's script had `budget_ms` of (virtual) time; its stdout. At most 90 s.
fn browse(url: &str, mode: &str, budget_ms: u64) -> String {
    let profile = TempDir::new("chromium");
    let mut child = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            "--window-size=1360,1300",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg(mode)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromium");
    let stdout = child.stdout.take().expect("chromium stdout");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::BufReader::new(stdout), &mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(status.success(), "chromium {mode} {url} failed: {status}");
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium {mode} {url} did not finish within 90 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    reader.join().expect("chromium output")
}

/// The page's DOM after its first poll was drawn.
fn dom(url: &str) -> String {
    let dom = browse(url, "--dump-dom", 2500);
    assert!(
        dom.contains("data-updated="),
        "the page never drew the cluster view:\n{dom}"
    );
    dom
}

/// The text of the element `<tag id="id"…>…</tag>` (the first closing tag after it).
fn section<'a>(dom: &'a str, tag: &str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("<{tag} id=\"{id}\""))
        .unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let end = dom[start..]
        .find(&format!("</{tag}>"))
        .map_or(dom.len(), |e| start + e);
    &dom[start..end]
}

/// When the drawn view was gathered (ms since 1970), from the body's `data-updated`.
fn drawn_at(dom: &str) -> u64 {
    let rest = &dom[dom.find("data-updated=\"").expect("data-updated") + 14..];
    rest[..rest.find('"').unwrap()].parse().expect("a number")
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn start(layout: &Layout, name: &str, metrics: u16) -> BeeProcess {
    layout.start_with(
        &demo_bin(),
        name,
        &format!(
            "metrics_listen = \"127.0.0.1:{metrics}\"\n\n{}",
            demo_services(name)
        ),
    )
}

fn screenshot_path() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("status-page");
    std::fs::create_dir_all(&dir).expect("create target/status-page");
    dir.join("status-page.png")
}

#[test]
fn the_page_shows_the_demo_cluster_a_config_push_and_a_killed_node() {
    let chromium = chromium();
    let layout = Layout::new(&NODES);
    layout.write_cluster(&["__version = 1"]);
    let ports: Vec<u16> = NODES.iter().map(|_| free_port()).collect();
    let mut nodes: Vec<BeeProcess> = NODES
        .iter()
        .zip(&ports)
        .map(|(n, p)| start(&layout, n, *p))
        .collect();
    let url = format!("http://127.0.0.1:{}/#links=all", ports[0]);
    eprintln!("status page: {url} (chromium: {})", chromium.display());

    // Every node up, in the node table and as a row and a column of the link matrix.
    let page = dom(&url);
    let table = section(&page, "table", "nodes");
    for n in NODES {
        assert!(
            table.contains(&format!("<tr data-node=\"{n}\" data-state=\"up\"")),
            "{n} is not shown up in the node table:\n{table}"
        );
    }
    assert!(section(&page, "div", "summary").contains("4 up"));
    // The second load: lobby's links now carry the first load's calls.
    let page = dom(&url);
    let links = section(&page, "table", "links");
    for n in NODES {
        assert!(
            links.contains(&format!("data-to=\"{n}\"")),
            "no column {n}:\n{links}"
        );
        assert!(
            links.contains(&format!("data-from=\"{n}\"")),
            "no row {n}:\n{links}"
        );
    }
    for n in &NODES[1..] {
        let cell = format!("data-link=\"lobby-&gt;{n}\"");
        let at = links
            .find(&cell)
            .unwrap_or_else(|| panic!("no lobby -> {n} cell:\n{links}"));
        let text = &links[at..at + links[at..].find("</td>").unwrap()];
        assert!(
            text.contains("/s · p50 ") && !text.contains("p50 –"),
            "lobby -> {n} shows no calls or latency: {text}"
        );
    }
    // activity_master's eight workers are its shard map, with its master and rule (this
    // layout's activity_master keeps the default, bee's hash).
    let shards = section(&page, "table", "shards");
    assert!(
        shards.contains("<td>activity_master</td><td>activity (master :")
            && shards.contains("<td>bee's hash</td>")
            && shards.contains("7: "),
        "{shards}"
    );

    // A config push (same nodes, version 2): every node's timeline entry shows.
    let new = layout.dir.path().join("cluster-v2.lua");
    let mut text = std::fs::read_to_string(layout.cluster_file()).unwrap();
    text = text.replace("__version = 1", "__version = 2");
    std::fs::write(&new, text).unwrap();
    let (ok, out, err) = bee_cli(&[
        "config",
        "push",
        "--cluster",
        layout.cluster_file().to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert!(ok, "config push failed: {out}{err}");
    // The node serves a cluster view up to a second old, and a view is stamped when its
    // gathering ends (which takes at most 1.5 s): load until the page was drawn from a
    // view whose gathering began after the push was acknowledged.
    let pushed = unix_ms();
    let page = loop {
        let page = dom(&url);
        if drawn_at(&page) > pushed + 1_600 {
            break page;
        }
        assert!(
            unix_ms() - pushed < 15_000,
            "no view gathered after the config push within 15 s"
        );
    };
    let timeline = section(&page, "table", "timeline");
    for n in NODES {
        let row = format!("<td>{n}</td><td class=\"kind-config\">config</td>");
        assert!(
            timeline.contains(&row),
            "no config entry seen by {n} in the timeline:\n{timeline}"
        );
    }
    assert!(
        section(&page, "div", "summary").contains("config v2 ")
            && section(&page, "div", "summary").contains("acked by 4 of 4"),
        "{}",
        section(&page, "div", "summary")
    );

    // Kill shop_master: the page shows it down, in a view gathered within the bound.
    nodes[3].kill9();
    let killed = unix_ms();
    let page = loop {
        let page = dom(&url);
        if section(&page, "table", "nodes")
            .contains("<tr data-node=\"shop_master\" data-state=\"down\"")
        {
            break page;
        }
        assert!(
            unix_ms() - killed < LIVENESS_BOUND.as_millis() as u64 + 30_000,
            "shop_master never shown down:\n{}",
            section(&page, "table", "nodes")
        );
    };
    let after = drawn_at(&page).saturating_sub(killed);
    eprintln!("shop_master shown down in a view gathered {after} ms after the kill");
    assert!(
        after <= LIVENESS_BOUND.as_millis() as u64,
        "shop_master was shown down {after} ms after the kill, past the liveness bound"
    );
    assert!(section(&page, "div", "notice").contains("shop_master"));
    let timeline = section(&page, "table", "timeline");
    assert!(
        timeline.contains("shop_master is down"),
        "the death is not in the timeline:\n{timeline}"
    );
    for n in &NODES[..3] {
        assert!(section(&page, "table", "nodes")
            .contains(&format!("<tr data-node=\"{n}\" data-state=\"up\"")));
    }

    let shot = screenshot_path();
    let _ = std::fs::remove_file(&shot);
    browse(&url, &format!("--screenshot={}", shot.display()), 2500);
    let png = std::fs::read(&shot).expect("chromium wrote no screenshot");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "not a screenshot"
    );
    eprintln!("screenshot: {}", shot.display());
    drop(nodes);
}
