//! The results table: reads what `cargo xtask bench` collected (one JSON object, see
//! [`render`]) and prints the markdown table for `BENCHMARKS.md`:
//! metric | bee | tokio floor | stock skynet | ratio | target met?
//!
//! The ratio is bee ÷ stock skynet — of this run when the skynet pair was measured,
//! otherwise of the reference figures (labelled as such). The targets: throughput
//! ≥ 3× skynet, p50 latency ≤ 0.5×, 1 MiB echo ≥ 2×, memory ≤ 0.5×, no push lost, no
//! wrong reply.

use serde_json::Value;

use crate::BenchError;

/// Stock skynet v1.6.0 on a 2-core machine (skynet node calling a skynet node,
/// thread = 2 each), as first measured for this project: not measured by this crate.
pub mod reference {
    /// B2 p50, µs.
    pub const B2_P50_US: f64 = 78.0;
    /// B2 p99, µs.
    pub const B2_P99_US: f64 = 139.0;
    /// B3 calls/s.
    pub const B3_CALLS_PER_S: f64 = 49_200.0;
    /// B4 pushes/s (none lost).
    pub const B4_PUSHES_PER_S: f64 = 210_000.0;
    /// B5 MB/s (noisy).
    pub const B5_MIB_PER_S: f64 = 56.0;
    /// B6 RSS idle, MB.
    pub const RSS_IDLE_MB: f64 = 14.8;
    /// B6 RSS after load, MB.
    pub const RSS_LOADED_MB: f64 = 27.0;
}

/// What a row's ratio must be for its target to be met.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// bee ÷ skynet at least this (throughput).
    AtLeast(f64),
    /// bee ÷ skynet at most this (latency, memory).
    AtMost(f64),
    /// bee's own figure must be zero (losses, errors).
    Zero,
    /// Reported only.
    None,
}

/// How a row's figures are printed.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Unit {
    PerSecond,
    Micros,
    MiBps,
    KiBasMB,
    Count,
    /// Percent of one CPU core.
    CorePct,
}

fn fmt(v: f64, unit: Unit) -> String {
    match unit {
        Unit::PerSecond | Unit::Count => thousands(v.round() as i64),
        Unit::Micros => format!("{v:.1} µs"),
        Unit::MiBps => format!("{v:.1} MiB/s"),
        Unit::KiBasMB => format!("{:.1} MB", v / 1024.0),
        Unit::CorePct => format!("{v:.0} % of a core"),
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn num(obj: Option<&Value>, key: &str) -> Option<f64> {
    obj?.get(key)?.as_f64()
}

/// One row of the table, as computed.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// What is measured.
    pub metric: String,
    /// bee's figure.
    pub bee: Option<f64>,
    /// The tokio floor's figure.
    pub floor: Option<f64>,
    /// Stock skynet's figure (this run or reference).
    pub skynet: Option<f64>,
    /// Whether `skynet` is a reference figure rather than measured in this run.
    pub skynet_is_reference: bool,
    /// The target.
    pub target: Target,
    /// `Some(true/false)` when the target applies and could be checked.
    pub met: Option<bool>,
    unit: Unit,
}

impl Row {
    /// bee ÷ skynet, when both are known and skynet is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.bee, self.skynet) {
            (Some(b), Some(s)) if s != 0.0 => Some(b / s),
            _ => None,
        }
    }
}

struct Spec {
    metric: &'static str,
    bee: (&'static str, &'static str),
    floor: Option<&'static str>,
    skynet: Option<(&'static str, &'static str)>,
    reference: Option<f64>,
    unit: Unit,
    target: Target,
}

fn specs() -> Vec<Spec> {
    use reference as r;
    let spec = |metric, bee, floor, skynet, reference, unit, target| Spec {
        metric,
        bee,
        floor,
        skynet,
        reference,
        unit,
        target,
    };
    // A row measured on bee alone (no floor, no skynet figure, no target).
    let bee_only = |metric, bee, unit| spec(metric, bee, None, None, None, unit, Target::None);
    vec![
        bee_only(
            "B1 local call, 1 caller (calls/s)",
            ("bee_local", "b1_1_calls_per_s"),
            Unit::PerSecond,
        ),
        bee_only(
            "B1 local call, 64 callers (calls/s)",
            ("bee_local", "b1_64_calls_per_s"),
            Unit::PerSecond,
        ),
        spec(
            "B2 cluster call latency p50",
            ("bee_cluster", "b2_p50_us"),
            Some("b2_p50_us"),
            Some(("skynet", "b2_p50_us")),
            Some(r::B2_P50_US),
            Unit::Micros,
            Target::AtMost(0.5),
        ),
        spec(
            "B2 cluster call latency p99",
            ("bee_cluster", "b2_p99_us"),
            Some("b2_p99_us"),
            Some(("skynet", "b2_p99_us")),
            Some(r::B2_P99_US),
            Unit::Micros,
            Target::None,
        ),
        bee_only(
            "B2 CPU of the serving node during the calls",
            ("bee_cluster", "b2_node_cpu_pct"),
            Unit::CorePct,
        ),
        bee_only(
            "B2 CPU of the calling process during the calls",
            ("bee_cluster", "b2_client_cpu_pct"),
            Unit::CorePct,
        ),
        spec(
            "B3 cluster calls/s, 64 in flight",
            ("bee_cluster", "b3_calls_per_s"),
            Some("b3_calls_per_s"),
            Some(("skynet", "b3_calls_per_s")),
            Some(r::B3_CALLS_PER_S),
            Unit::PerSecond,
            Target::AtLeast(3.0),
        ),
        bee_only(
            "B3 transport only: the same calls to a raw-bytes echo (no unpack/re-pack)",
            ("bee_cluster", "b3_raw_calls_per_s"),
            Unit::PerSecond,
        ),
        spec(
            "B4 pushes/s (64 B, counted at receiver)",
            ("bee_cluster", "b4_pushes_per_s"),
            Some("b4_pushes_per_s"),
            Some(("skynet", "b4_pushes_per_s")),
            Some(r::B4_PUSHES_PER_S),
            Unit::PerSecond,
            Target::AtLeast(3.0),
        ),
        spec(
            "B4 pushes lost",
            ("bee_cluster", "b4_lost"),
            Some("b4_lost"),
            Some(("skynet", "b4_lost")),
            Some(0.0),
            Unit::Count,
            Target::Zero,
        ),
        spec(
            "B5 1 MiB echo",
            ("bee_cluster", "b5_mib_per_s"),
            Some("b5_mib_per_s"),
            Some(("skynet", "b5_mib_per_s")),
            Some(r::B5_MIB_PER_S),
            Unit::MiBps,
            Target::AtLeast(2.0),
        ),
        bee_only(
            "serving node CPU, 1 s without traffic after B5",
            ("bee_cluster", "node_cpu_idle_pct"),
            Unit::CorePct,
        ),
        spec(
            "B6 node RSS idle",
            ("bee_cluster", "rss_idle_kb"),
            None,
            Some(("skynet_rss", "rss_idle_kb")),
            Some(r::RSS_IDLE_MB * 1024.0),
            Unit::KiBasMB,
            Target::AtMost(0.5),
        ),
        spec(
            "B6 node RSS right after B3",
            ("bee_cluster", "rss_after_b3_kb"),
            None,
            Some(("skynet_rss", "rss_after_b3_kb")),
            Some(r::RSS_LOADED_MB * 1024.0),
            Unit::KiBasMB,
            Target::AtMost(0.5),
        ),
        spec(
            "B6 node RSS peak (VmHWM, after B5)",
            ("bee_cluster", "rss_hwm_kb"),
            None,
            Some(("skynet_rss", "rss_hwm_kb")),
            None,
            Unit::KiBasMB,
            Target::AtMost(0.5),
        ),
    ]
}

/// The rows of the table for a results object (see [`render`]).
pub fn rows(results: &Value) -> Vec<Row> {
    let measured = results.get("skynet").is_some_and(Value::is_object);
    specs()
        .into_iter()
        .map(|s| {
            let bee = num(results.get(s.bee.0), s.bee.1);
            let floor = s.floor.and_then(|k| num(results.get("tokio_floor"), k));
            let (skynet, skynet_is_reference) = match s.skynet {
                Some((obj, key)) if measured => (num(results.get(obj), key), false),
                Some(_) => (s.reference, s.reference.is_some()),
                None => (None, false),
            };
            let mut row = Row {
                metric: s.metric.to_string(),
                bee,
                floor,
                skynet,
                skynet_is_reference,
                target: s.target,
                met: None,
                unit: s.unit,
            };
            row.met = match s.target {
                Target::AtLeast(t) => row.ratio().map(|r| r >= t),
                Target::AtMost(t) => row.ratio().map(|r| r <= t),
                Target::Zero => bee.map(|b| b == 0.0),
                Target::None => None,
            };
            row
        })
        .collect()
}

/// The markdown report for a results object as `cargo xtask bench` writes it:
/// `{"date", "machine": {"nproc", "cpu", "loadavg"}, "quick", "bee_local": {…},
/// "bee_cluster": {…}, "tokio_floor": {…}, "skynet": {…} | null, "skynet_rss": {…} | null}`.
/// Fails when a required part is missing.
pub fn render(results: &Value) -> Result<String, BenchError> {
    for key in ["bee_local", "bee_cluster", "tokio_floor"] {
        if !results.get(key).is_some_and(Value::is_object) {
            return Err(BenchError::Results(format!("no {key:?} object")));
        }
    }
    let measured = results.get("skynet").is_some_and(Value::is_object);
    let rows = rows(results);
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".to_string(),
        other => other.to_string(),
    };
    let machine = results.get("machine").cloned().unwrap_or(Value::Null);
    let mut out = String::new();
    out.push_str(&format!(
        "bee benchmark — {} — {} cores, {} — load average at start {} — bee node threads = {}, busy poll {}{}\n\n",
        results.get("date").map(text).unwrap_or_default(),
        machine.get("nproc").map(text).unwrap_or_else(|| "?".into()),
        machine.get("cpu").map(text).unwrap_or_else(|| "?".into()),
        machine
            .get("loadavg")
            .map(text)
            .unwrap_or_else(|| "?".into()),
        results
            .get("node_threads")
            .map(text)
            .unwrap_or_else(|| "?".into()),
        match results.get("busy_poll_us").and_then(Value::as_u64) {
            Some(0) => "off".to_string(),
            Some(us) => format!("{us} µs"),
            None => format!(
                "{} µs (default)",
                bee_transport::DEFAULT_BUSY_POLL.as_micros()
            ),
        },
        if results.get("quick").and_then(Value::as_bool) == Some(true) {
            " — QUICK run (a tenth of each measurement)"
        } else {
            ""
        },
    ));
    let skynet_threads = results
        .get("skynet_threads")
        .map(text)
        .unwrap_or_else(|| "2".into());
    let skynet_head = if measured {
        format!("stock skynet v1.6.0, thread = {skynet_threads} (this run)")
    } else {
        "stock skynet v1.6.0 (reference, not measured in this run)".to_string()
    };
    out.push_str(&format!(
        "| metric | bee | tokio floor | {skynet_head} | ratio bee/skynet | target met? |\n|---|---:|---:|---:|---:|---|\n"
    ));
    for row in &rows {
        let unit = row.unit;
        let cell = |v: Option<f64>| v.map(|v| fmt(v, unit)).unwrap_or_else(|| "—".into());
        let ratio = row
            .ratio()
            .map(|r| format!("{r:.2}×"))
            .unwrap_or_else(|| "—".into());
        let target = match row.target {
            Target::AtLeast(t) => format!("≥ {t}×"),
            Target::AtMost(t) => format!("≤ {t}×"),
            Target::Zero => "0".to_string(),
            Target::None => String::new(),
        };
        let met = match row.met {
            Some(true) => format!("yes ({target})"),
            Some(false) => format!("**no** ({target})"),
            None if target.is_empty() => "—".to_string(),
            None => format!("? ({target}, not measured)"),
        };
        let skynet = match (row.skynet, row.skynet_is_reference) {
            (Some(v), true) => format!("{} (ref)", fmt(v, unit)),
            (v, _) => cell(v),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.metric,
            cell(row.bee),
            cell(row.floor),
            skynet,
            ratio,
            met
        ));
    }
    let errors: f64 = ["b2_errors", "b3_errors", "b5_errors"]
        .iter()
        .filter_map(|k| num(results.get("bee_cluster"), k))
        .sum::<f64>()
        + num(results.get("bee_local"), "b1_errors").unwrap_or(0.0);
    out.push_str(&format!(
        "\nWrong or failed replies (B1, B2, B3, B5; every echo reply is compared byte for byte): bee {}",
        thousands(errors as i64)
    ));
    if measured {
        let sky: f64 = ["b2_errors", "b3_errors", "b5_errors"]
            .iter()
            .filter_map(|k| num(results.get("skynet"), k))
            .sum();
        out.push_str(&format!(", stock skynet {}", thousands(sky as i64)));
    }
    out.push_str(".\n");
    if !measured {
        out.push_str(
            "\nStock skynet figures are reference numbers (another run on a 2-core machine), \
             not measured in this run (--no-skynet): the ratios against them are indicative only. \
             Run without --no-skynet (cargo xtask skynet builds stock skynet v1.6.0) to measure the pair side by side.\n",
        );
    }
    if let Some(cross) = results
        .get("skynet_client_to_bee")
        .filter(|v| v.is_object())
    {
        out.push_str(&cross_table(cross, results.get("skynet"), &skynet_threads));
    }
    if measured {
        out.push_str(&three_views_table(results, &skynet_threads));
    }
    if let Some(sql) = results.get("mysql").filter(|v| v.is_object()) {
        let qps = |k: &str| {
            num(Some(sql), k)
                .map(|v| thousands(v.round() as i64))
                .unwrap_or_else(|| "?".into())
        };
        let ratio = match (num(Some(sql), "cluster_qps"), num(Some(sql), "direct_qps")) {
            (Some(c), Some(d)) if d > 0.0 => format!("{:.2}×", c / d),
            _ => "—".into(),
        };
        out.push_str(&format!(
            "\nmysqlpool: point selects on a {}-connection pool, {} in flight, real MariaDB:\n\n\
             | path | queries/s |\n|---|---:|\n\
             | through the cluster: client → `mysqlpool` on a bee node | {} |\n\
             | direct: mysql_async from one process | {} |\n\
             | ratio cluster/direct | {ratio} |\n\
             \nFailed or wrong answers: {}.\n",
            qps("pool"),
            qps("inflight"),
            qps("cluster_qps"),
            qps("direct_qps"),
            qps("errors"),
        ));
    }
    if let Some(api) = results.get("api").filter(|v| v.is_object()) {
        out.push_str(&api_table(api));
    }
    if let Some(cpp) = results.get("cpp_rpc").filter(|v| v.is_object()) {
        out.push_str(&cpp_rpc_table(cpp));
    }
    if let Some(h) = results.get("handover").filter(|v| v.is_object()) {
        out.push_str(&handover_table(h));
    }
    if let Some(b) = results.get("busy_poll").filter(|v| v.is_object()) {
        out.push_str(&busy_poll_table(b));
    }
    if let Some(sc) = results.get("scale").filter(|v| v.is_object()) {
        out.push_str(&scale_table(sc));
    }
    if let Some(g) = results.get("gate").filter(|v| v.is_object()) {
        out.push_str(&gate_table(g));
    }
    if let Some(l) = results.get("lua_mysql").filter(|v| v.is_object()) {
        out.push_str(&lua_mysql_table(l));
    }
    if let Some(l) = results.get("lua").filter(|v| v.is_object()) {
        out.push_str(&crate::lua::table(l));
    }
    out.push_str(
        "\nB2/B3 floor: one TCP connection, 16-byte messages echoed; B4 floor: 64-byte frames counted by the server; \
         B5 floor: 1 MiB as 32 KiB frames. MB = 2^20 bytes.\n",
    );
    Ok(out)
}

/// Handler API vs raw `Service`: one row per set; the bar is ≥ 0.95 against
/// both raw services (the one that unpacks, and the one that reads off the payload).
fn api_table(api: &Value) -> String {
    let mut out = format!(
        "\nHandler API vs raw Service: `(\"lua\", \"echo\", 16-byte string)`, variants interleaved in {} rounds:\n\n\
         | call | raw Service, unpacks: calls/s | raw Service, reads off the payload: calls/s | handler API calls/s | api/raw | api/raw reader | within 5 %? | one-shape handler calls/s | handler/api |\n\
         |---|---:|---:|---:|---:|---:|---|---:|---:|\n",
        api.get("rounds").map(Value::to_string).unwrap_or_else(|| "?".into())
    );
    for pair in api
        .get("pairs")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let rate = |k: &str| {
            num(Some(pair), k)
                .map(|v| thousands(v.round() as i64))
                .unwrap_or_else(|| "?".into())
        };
        let ratio = |k: &str| num(Some(pair), k).map_or("?".into(), |r| format!("{r:.3}"));
        let met = |k: &str| num(Some(pair), k).map(|r| r >= 0.95);
        let within = match (met("ratio"), met("ratio_reader")) {
            (Some(true), Some(true)) => "yes",
            (Some(true), Some(false)) => "against the unpacking one only",
            (Some(false), _) => "**no**",
            _ => "?",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {within} | {} | {} |\n",
            pair.get("what").and_then(Value::as_str).unwrap_or("?"),
            rate("raw_calls_per_s"),
            rate("reader_calls_per_s"),
            rate("api_calls_per_s"),
            ratio("ratio"),
            ratio("ratio_reader"),
            rate("handler_calls_per_s"),
            ratio("ratio_handler"),
        ));
    }
    out.push_str(
        "\nhandler API: `.command(\"echo\", |_s, s: Str| Ok(s))`, the synchronous shortcut; one-shape handler: \
         `.handler(\"echo\", |_h, s: Str| async move { Ok(s) })`, a handle and a future per call. \
         Runs older than the one handler shape have no such column (`?`).\n",
    );
    out.push_str(&format!(
        "\nWrong or failed replies: {}.\n",
        num(Some(api), "errors").map_or("?".into(), |e| thousands(e as i64))
    ));
    out
}

/// Gate echo and idle connections: the same Lua gateserver echo on bee and on stock
/// skynet; targets ≥ 1.5× skynet's msgs/s, p99 ≤ skynet's, RSS per connection ≤ skynet's.
fn gate_table(g: &Value) -> String {
    let field = |v: Option<&Value>, k: &str| num(v, k);
    let (bee, sky) = (g.get("bee"), g.get("skynet").filter(|v| v.is_object()));
    let mut out = format!(
        "\nGate echo: a Lua service on skynet's `snax.gateserver` echoing netpack frames, the same config under `bee run` and stock skynet (`thread = {}`), \
         {} connections × {} frames of {} bytes in flight, {} rounds of {} s per server, alternating; {} idle connections for memory:\n\n\
         | figure | bee | stock skynet | bee/skynet | target met? |\n|---|---:|---:|---:|---|\n",
        field(Some(g), "threads").map_or("?".into(), |v| format!("{v:.0}")),
        field(Some(g), "conns").map_or("?".into(), |v| format!("{v:.0}")),
        field(Some(g), "depth").map_or("?".into(), |v| format!("{v:.0}")),
        field(Some(g), "payload_bytes").map_or("?".into(), |v| format!("{v:.0}")),
        field(Some(g), "rounds").map_or("?".into(), |v| format!("{v:.0}")),
        field(Some(g), "seconds").map_or("?".into(), |v| format!("{v}")),
        field(Some(g), "idle").map_or("?".into(), |v| thousands(v as i64)),
    );
    // `target`: whether a bee/skynet ratio meets the row's target; none: no target.
    type Target<'a> = Option<&'a dyn Fn(f64) -> bool>;
    let row = |what: &str, k: &str, fmt: &dyn Fn(f64) -> String, target: Target| {
        let (b, s) = (field(bee, k), field(sky, k));
        let ratio = match (b, s) {
            (Some(b), Some(s)) if s > 0.0 => Some(b / s),
            _ => None,
        };
        format!(
            "| {what} | {} | {} | {} | {} |\n",
            b.map_or("?".into(), fmt),
            s.map_or("not measured".into(), fmt),
            ratio.map_or("?".into(), |r| format!("{r:.2}")),
            match (ratio, target) {
                (_, None) => "",
                (Some(r), Some(t)) if t(r) => "yes",
                (Some(_), Some(_)) => "**no**",
                (None, Some(_)) => "?",
            }
        )
    };
    out.push_str(&row(
        "echoes/s (target ≥ 1.5× skynet)",
        "msgs_per_s",
        &|v| thousands(v.round() as i64),
        Some(&|r| r >= 1.5),
    ));
    out.push_str(&row(
        "p50 latency, µs",
        "p50_us",
        &|v| format!("{v:.0}"),
        None,
    ));
    out.push_str(&row(
        "p99 latency, µs (target ≤ skynet)",
        "p99_us",
        &|v| format!("{v:.0}"),
        Some(&|r| r <= 1.0),
    ));
    out.push_str(&row(
        "RSS per idle connection, bytes (target ≤ skynet)",
        "rss_per_conn_bytes",
        &|v| thousands(v.round() as i64),
        Some(&|r| r <= 1.0),
    ));
    // Runs since the idle phase is repeated on fresh servers: every reading (the row above
    // is their median).
    let runs = |v: Option<&Value>| {
        v.and_then(|v| v.get("rss_per_conn_runs"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_f64)
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
    };
    if let Some(b) = runs(bee) {
        out.push_str(&format!(
            "
RSS per idle connection on each fresh server (bytes; the row above is the median): bee {b}; skynet {}.
",
            runs(sky).unwrap_or_else(|| "not measured".into())
        ));
    }
    out.push_str(&format!(
        "\nGate: wrong or failed echoes: bee {}, skynet {}.\n",
        field(bee, "errors").map_or("?".into(), |e| thousands(e as i64)),
        field(sky, "errors").map_or("?".into(), |e| thousands(e as i64)),
    ));
    out
}

/// `skynet.db.mysql` from a Lua service, bee vs stock skynet; target ≥ 1.0×.
fn lua_mysql_table(l: &Value) -> String {
    let (bee, sky) = (
        num(l.get("bee"), "selects_per_s"),
        num(l.get("skynet").filter(|v| v.is_object()), "selects_per_s"),
    );
    let ratio = match (bee, sky) {
        (Some(b), Some(s)) if s > 0.0 => Some(b / s),
        _ => None,
    };
    let int = |k: &str| num(Some(l), k).map_or("?".into(), |v| format!("{v:.0}"));
    format!(
        "\nskynet.db.mysql from a Lua service: the same config under `bee run` and stock skynet, \
         {} connections × {} coroutines, point selects on {} rows, {} rounds of {} s per side, alternating:\n\n\
         | figure | bee | stock skynet | bee/skynet | target met? |\n|---|---:|---:|---:|---|\n\
         | point selects/s (target ≥ 1.0× skynet) | {} | {} | {} | {} |\n\
         \nLua MySQL: failed or wrong selects: bee {}, skynet {}.\n",
        int("conns"),
        int("per_conn"),
        num(Some(l), "rows").map_or("?".into(), |v| thousands(v as i64)),
        int("rounds"),
        num(Some(l), "seconds").map_or("?".into(), |v| format!("{v}")),
        bee.map_or("?".into(), |v| thousands(v.round() as i64)),
        sky.map_or("not measured".into(), |v| thousands(v.round() as i64)),
        ratio.map_or("?".into(), |r| format!("{r:.2}")),
        match ratio {
            Some(r) if r >= 1.0 => "yes",
            Some(_) => "**no**",
            None => "?",
        },
        num(l.get("bee"), "errors").map_or("?".into(), |e| thousands(e as i64)),
        num(l.get("skynet").filter(|v| v.is_object()), "errors")
            .map_or("?".into(), |e| thousands(e as i64)),
    )
}

/// Scale rows: connections, fan-out, memory per idle peer, soak.
fn scale_table(sc: &Value) -> String {
    let mut out = String::from(
        "\nScale: one serving node (`threads = 2`, `echo` unpacks and re-packs):\n\n\
         | figure | value | target |\n|---|---:|---|\n",
    );
    for row in sc
        .get("conns")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "| {} client connections over {} processes, one call in flight each: calls/s, worst p99 | {} calls/s, {} | |\n",
            num(Some(row), "conns").map_or("?".into(), |v| format!("{v:.0}")),
            num(Some(row), "processes").map_or("?".into(), |v| format!("{v:.0}")),
            num(Some(row), "calls_per_s").map_or("?".into(), |v| thousands(v.round() as i64)),
            num(Some(row), "p99_us").map_or("?".into(), |v| format!("{v:.0} µs")),
        ));
    }
    let lost = num(Some(sc), "fanout_lost");
    out.push_str(&format!(
        "| fan-out: one node pushing to {} nodes, pushes/s (lost) | {} ({}) | none lost: {} |\n",
        num(Some(sc), "fanout_nodes").map_or("?".into(), |v| format!("{v:.0}")),
        num(Some(sc), "fanout_pushes_per_s").map_or("?".into(), |v| thousands(v.round() as i64)),
        lost.map_or("?".into(), |v| thousands(v as i64)),
        match lost {
            Some(0.0) => "yes",
            Some(_) => "**no**",
            None => "?",
        }
    ));
    let per = num(Some(sc), "idle_kib_per_peer");
    out.push_str(&format!(
        "| memory per idle peer connection ({} connected, RSS with them minus before) | {} | ≤ 32 KiB: {} |\n",
        num(Some(sc), "idle_peers").map_or("?".into(), |v| thousands(v as i64)),
        per.map_or("?".into(), |v| format!("{v:.1} KiB")),
        match per {
            Some(v) if v <= 32.0 => "yes",
            Some(_) => "**no**",
            None => "?",
        }
    ));
    let samples: Vec<u64> = sc
        .get("soak_rss_kb")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .collect();
    let growth = num(Some(sc), "soak_growth_pct");
    out.push_str(&format!(
        "| soak: {} s of calls and pushes at 1,000/s each, node RSS first → last sample (growth after warm-up) | {} → {} ({}) | < 5 %: {} |\n",
        samples.len(),
        samples.first().map_or("?".into(), |v| format!("{:.1} MB", *v as f64 / 1024.0)),
        samples.last().map_or("?".into(), |v| format!("{:.1} MB", *v as f64 / 1024.0)),
        growth.map_or("?".into(), |g| format!("{g:+.1} %")),
        match growth {
            Some(g) if g < 5.0 => "yes",
            Some(_) => "**no**",
            None => "?",
        }
    ));
    out
}

/// Busy polling at scale: the serving node's CPU per connection count,
/// polling on and off.
fn busy_poll_table(b: &Value) -> String {
    let rows: Vec<&Value> = b
        .get("rows")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let find = |conns: u64, on: bool| {
        rows.iter().copied().find(|r| {
            num(Some(r), "conns") == Some(conns as f64)
                && (num(Some(r), "poll_us").unwrap_or(0.0) > 0.0) == on
        })
    };
    let mut conns: Vec<u64> = rows
        .iter()
        .filter_map(|r| r.get("conns").and_then(Value::as_u64))
        .collect();
    conns.sort_unstable();
    conns.dedup();
    let mut out = format!(
        "\nBusy polling at scale: {} calls/s on each connection (one in flight), the serving \
         node's CPU in % of one core (`threads = 2`, `busy_poll_max = {}`):\n\n\
         | connections | calls/s | node CPU, polling on | node CPU, polling off | added by polling | p50 on / off |\n\
         |---:|---:|---:|---:|---:|---:|\n",
        b.get("rate_per_conn").map(Value::to_string).unwrap_or_else(|| "?".into()),
        b.get("poll_max").map(Value::to_string).unwrap_or_else(|| "?".into()),
    );
    for c in conns {
        let (on, off) = (find(c, true), find(c, false));
        let cpu = |r: Option<&Value>| num(r, "node_cpu_pct");
        let pct = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.0} %"));
        let added = match (cpu(on), cpu(off)) {
            (Some(a), Some(b)) => format!("{:+.0} points", a - b),
            _ => "?".into(),
        };
        let us = |r: Option<&Value>| num(r, "p50_us").map_or("?".into(), |v| format!("{v:.0}"));
        out.push_str(&format!(
            "| {c} | {} | {} | {} | {added} | {} / {} µs |\n",
            num(on, "calls_per_s").map_or("?".into(), |v| thousands(v.round() as i64)),
            pct(cpu(on)),
            pct(cpu(off)),
            us(on),
            us(off),
        ));
    }
    out
}

/// Hot update under load: handover time, the caller's longest wait, and call
/// latency during handovers vs steady state.
fn handover_table(h: &Value) -> String {
    let us = |k: &str| num(Some(h), k).map_or("?".into(), |v| format!("{v:.1} µs"));
    let took: Vec<String> = h
        .get("took_ms")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_u64)
        .map(|t| format!("{t} ms"))
        .collect();
    format!(
        "\nHot update under load: sequential calls (one in flight) to `echo` on a `bee` node \
         handed over {} times to a new process (`bee run --takeover`), the caller with `ride_through`:\n\n\
         | figure | value |\n|---|---:|\n\
         | handover time (new process: sockets asked for → serving; includes the old one's drain) | {} |\n\
         | longest wait for a reply during a handover (caller side) | {} |\n\
         | p99 steady / p99 during handovers ({} calls) | {} / {} |\n\
         | ratio p99 during/steady | {} |\n\
         | slowest call during handovers | {} |\n\
         \nFailed calls: {} of {}.\n",
        h.get("handovers").map(Value::to_string).unwrap_or_else(|| "?".into()),
        if took.is_empty() { "?".to_string() } else { took.join(", ") },
        us("gap_max_us"),
        num(Some(h), "during_calls").map_or("?".into(), |v| thousands(v as i64)),
        us("steady_p99_us"),
        us("during_p99_us"),
        num(Some(h), "ratio_p99").map_or("?".into(), |v| format!("{v:.2}")),
        us("during_max_us"),
        num(Some(h), "errors").map_or("?".into(), |v| thousands(v as i64)),
        num(Some(h), "calls").map_or("?".into(), |v| thousands(v as i64)),
    )
}

/// C++ rpc_call vs a Rust caller on the same path: calls/s and latency of
/// each, and the ratio C++/Rust.
fn cpp_rpc_table(cpp: &Value) -> String {
    let side = |k: &str| cpp.get(k);
    let rate = |s: Option<&Value>| {
        num(s, "calls_per_s")
            .map(|v| thousands(v.round() as i64))
            .unwrap_or_else(|| "?".into())
    };
    let us = |s: Option<&Value>, k: &str| num(s, k).map_or("?".into(), |v| format!("{v:.1} µs"));
    let count = |s: Option<&Value>, k: &str| num(s, k).map_or("?".into(), |v| thousands(v as i64));
    let ratio = |k: &str| num(Some(cpp), k).map_or("?".into(), |v| format!("{v:.3}"));
    let (c, r) = (side("cpp"), side("rust"));
    let p99_ratio = match (num(c, "p99_us"), num(r, "p99_us")) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
        _ => "?".into(),
    };
    format!(
        "\nC++ rpc_call vs Rust caller: sequential rpc_calls of `game.Ping` (one in flight) to \
         `{}` (a Lua-style service in a `bee-demo` process), from one bee node through the same CServiceProxy \
         and connection, interleaved in {} rounds:\n\n\
         | caller | calls | calls/s | p50 | p99 |\n|---|---:|---:|---:|---:|\n\
         | C++ `bee::Service::rpc_call` (`bench.so`) | {} | {} | {} | {} |\n\
         | Rust `NativeEndpoint::rpc_call` | {} | {} | {} | {} |\n\
         | ratio C++/Rust | | {} | {} | {p99_ratio} |\n\
         \nFailed or wrong replies: {}.\n",
        cpp.get("target").and_then(Value::as_str).unwrap_or("?"),
        cpp.get("rounds").map(Value::to_string).unwrap_or_else(|| "?".into()),
        count(c, "calls"),
        rate(c),
        us(c, "p50_us"),
        us(c, "p99_us"),
        count(r, "calls"),
        rate(r),
        us(r, "p50_us"),
        us(r, "p99_us"),
        ratio("ratio_calls_per_s"),
        ratio("ratio_p50"),
        count(Some(cpp), "errors"),
    )
}

/// The same stock skynet client against the bee node and against the skynet node: the
/// serving side compared with the client held fixed.
/// The three views, each a column pair with its ratio: bee→bee vs
/// skynet→skynet (what a team gets moving both sides), the stock skynet client against
/// each server, and bee-bench against each server (server capacity; the client is not the
/// bottleneck) — the view the targets are judged on.
pub fn three_views_table(results: &Value, threads: &str) -> String {
    let part = |k: &str| results.get(k).filter(|v| v.is_object());
    let (bee_bee, sky_sky, sky_bee, bee_sky) = (
        part("bee_cluster"),
        part("skynet"),
        part("skynet_client_to_bee"),
        part("bee_client_to_skynet"),
    );
    let mut out = format!(
        "\nThree views, stock skynet v1.6.0 with thread = {threads}; every server does the same \
         work (unpacks the arguments and packs the reply); targets judged on the third view:\n\n\
         | metric | bee→bee | skynet→skynet | ratio | skynet client→bee | skynet client→skynet | ratio | \
         bee-bench→bee | bee-bench→skynet | ratio | target (3rd view) |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    let lines: [(&str, &str, Unit, Target); 6] = [
        (
            "B2 latency p50",
            "b2_p50_us",
            Unit::Micros,
            Target::AtMost(0.5),
        ),
        ("B2 latency p99", "b2_p99_us", Unit::Micros, Target::None),
        (
            "B3 calls/s, 64 in flight",
            "b3_calls_per_s",
            Unit::PerSecond,
            Target::AtLeast(4.0),
        ),
        (
            "B4 pushes/s",
            "b4_pushes_per_s",
            Unit::PerSecond,
            Target::AtLeast(8.0),
        ),
        ("B4 pushes lost", "b4_lost", Unit::Count, Target::Zero),
        (
            "B5 1 MiB echo",
            "b5_mib_per_s",
            Unit::MiBps,
            Target::AtLeast(4.0),
        ),
    ];
    for (metric, key, unit, target) in lines {
        let cell = |v: Option<f64>| v.map(|v| fmt(v, unit)).unwrap_or_else(|| "—".into());
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b != 0.0 => Some(a / b),
            _ => None,
        };
        let show = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}×"));
        let (v1a, v1b) = (num(bee_bee, key), num(sky_sky, key));
        let (v2a, v2b) = (num(sky_bee, key), num(sky_sky, key));
        let (v3a, v3b) = (num(bee_bee, key), num(bee_sky, key));
        let r3 = ratio(v3a, v3b);
        let met = match target {
            Target::AtLeast(t) => r3.map(|r| (r >= t, format!("≥ {t}×"))),
            Target::AtMost(t) => r3.map(|r| (r <= t, format!("≤ {t}×"))),
            Target::Zero => v3a.map(|v| (v == 0.0 && v3b.unwrap_or(0.0) == 0.0, "0".to_string())),
            Target::None => None,
        };
        let met = match met {
            Some((true, t)) => format!("yes ({t})"),
            Some((false, t)) => format!("**no** ({t})"),
            None if matches!(target, Target::None) => "—".into(),
            None => "? (not measured)".into(),
        };
        out.push_str(&format!(
            "| {metric} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {met} |\n",
            cell(v1a),
            cell(v1b),
            show(ratio(v1a, v1b)),
            cell(v2a),
            cell(v2b),
            show(ratio(v2a, v2b)),
            cell(v3a),
            cell(v3b),
            show(r3),
        ));
    }
    out
}

fn cross_table(bee_node: &Value, skynet_node: Option<&Value>, threads: &str) -> String {
    let mut out = format!(
        "\nSame stock skynet v1.6.0 client (thread = {threads}) against each node — the serving side alone:\n\n\
         | metric | bee node | skynet node | ratio bee/skynet |\n|---|---:|---:|---:|\n",
    );
    let lines = [
        ("B2 latency p50", "b2_p50_us", Unit::Micros),
        ("B2 latency p99", "b2_p99_us", Unit::Micros),
        (
            "B3 calls/s, 64 in flight",
            "b3_calls_per_s",
            Unit::PerSecond,
        ),
        ("B4 pushes/s", "b4_pushes_per_s", Unit::PerSecond),
        ("B4 pushes lost", "b4_lost", Unit::Count),
        ("B5 1 MiB echo", "b5_mib_per_s", Unit::MiBps),
    ];
    for (metric, key, unit) in lines {
        let b = num(Some(bee_node), key);
        let s = num(skynet_node, key);
        let cell = |v: Option<f64>| v.map(|v| fmt(v, unit)).unwrap_or_else(|| "—".into());
        let ratio = match (b, s) {
            (Some(b), Some(s)) if s != 0.0 => format!("{:.2}×", b / s),
            _ => "—".into(),
        };
        out.push_str(&format!(
            "| {metric} | {} | {} | {ratio} |\n",
            cell(b),
            cell(s)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(skynet: bool) -> Value {
        let mut v = json!({
            "date": "2026-01-01T00:00:00Z",
            "machine": {"nproc": 2, "cpu": "Test CPU", "loadavg": "0.10"},
            "quick": false,
            "bee_local": {"b1_1_calls_per_s": 500000.0, "b1_64_calls_per_s": 900000.0, "b1_errors": 0},
            "bee_cluster": {"b2_p50_us": 30.0, "b2_p99_us": 60.0, "b3_calls_per_s": 150000.0,
                "b4_pushes_per_s": 500000.0, "b4_lost": 0, "b5_mib_per_s": 100.0,
                "b2_errors": 0, "b3_errors": 0, "b5_errors": 0,
                "rss_idle_kb": 5120, "rss_after_b3_kb": 10240, "rss_hwm_kb": 20480},
            "tokio_floor": {"b2_p50_us": 20.0, "b2_p99_us": 40.0, "b3_calls_per_s": 400000.0,
                "b4_pushes_per_s": 3000000.0, "b4_lost": 0, "b5_mib_per_s": 900.0},
            "skynet": null,
            "skynet_rss": null
        });
        if skynet {
            v["skynet"] = json!({"b2_p50_us": 100.0, "b2_p99_us": 150.0, "b3_calls_per_s": 40000.0,
                "b4_pushes_per_s": 200000.0, "b4_lost": 0, "b5_mib_per_s": 40.0,
                "b2_errors": 0, "b3_errors": 0, "b5_errors": 0});
            v["skynet_rss"] =
                json!({"rss_idle_kb": 15000, "rss_after_b3_kb": 25000, "rss_hwm_kb": 30000});
        }
        v
    }

    fn row<'a>(rows: &'a [Row], prefix: &str) -> &'a Row {
        rows.iter().find(|r| r.metric.starts_with(prefix)).unwrap()
    }

    #[test]
    fn ratios_and_targets_against_this_run() {
        let rows = rows(&sample(true));
        let b3 = row(&rows, "B3");
        assert_eq!(b3.ratio(), Some(3.75));
        assert_eq!(b3.met, Some(true));
        assert!(!b3.skynet_is_reference);
        let b4 = row(&rows, "B4 pushes/s");
        assert_eq!(b4.met, Some(false), "2.5× is below 3×");
        let p50 = row(&rows, "B2 cluster call latency p50");
        assert_eq!((p50.ratio(), p50.met), (Some(0.3), Some(true)));
        let idle = row(&rows, "B6 node RSS idle");
        assert_eq!(idle.met, Some(true), "5120/15000 = 0.34 ≤ 0.5");
        let peak = row(&rows, "B6 node RSS peak");
        assert_eq!(peak.met, Some(false), "20480/30000 = 0.68 > 0.5");
    }

    #[test]
    fn reference_figures_when_skynet_was_not_run() {
        let v = sample(false);
        let rows = rows(&v);
        let b3 = row(&rows, "B3");
        assert!(b3.skynet_is_reference);
        assert_eq!(b3.skynet, Some(reference::B3_CALLS_PER_S));
        let peak = row(&rows, "B6 node RSS peak");
        assert_eq!((peak.skynet, peak.met), (None, None));
        let md = render(&v).unwrap();
        assert!(md.contains("reference, not measured in this run"), "{md}");
        assert!(md.contains("| B3 cluster calls/s, 64 in flight | 150,000 | 400,000 | 49,200 (ref) | 3.05× | yes (≥ 3×) |"), "{md}");
    }

    #[test]
    fn api_table_rows_and_verdicts() {
        let mut v = sample(false);
        v["api"] = json!({"rounds": 10, "errors": 0, "pairs": [
            {"what": "local, 1 caller", "raw_calls_per_s": 200000.0, "reader_calls_per_s": 205000.0,
             "api_calls_per_s": 196000.0, "ratio": 0.98, "ratio_reader": 0.956,
             "handler_calls_per_s": 195000.0, "ratio_handler": 0.995},
            {"what": "local, 64 callers", "raw_calls_per_s": 200000.0, "reader_calls_per_s": 220000.0,
             "api_calls_per_s": 200000.0, "ratio": 1.0, "ratio_reader": 0.909},
            {"what": "cluster, 64 in flight", "raw_calls_per_s": 100000.0, "reader_calls_per_s": 100000.0,
             "api_calls_per_s": 90000.0, "ratio": 0.9, "ratio_reader": 0.9}
        ]});
        let md = render(&v).unwrap();
        assert!(
            md.contains("| local, 1 caller | 200,000 | 205,000 | 196,000 | 0.980 | 0.956 | yes | 195,000 | 0.995 |"),
            "{md}"
        );
        assert!(
            md.contains("| local, 64 callers | 200,000 | 220,000 | 200,000 | 1.000 | 0.909 | against the unpacking one only | ? | ? |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| cluster, 64 in flight | 100,000 | 100,000 | 90,000 | 0.900 | 0.900 | **no** | ? | ? |"
            ),
            "{md}"
        );
    }

    #[test]
    fn cpp_rpc_table_rows() {
        let mut v = sample(false);
        v["cpp_rpc"] = json!({"target": "lpersistence_3/lpersistence", "rounds": 10, "errors": 0,
            "cpp": {"calls": 20000, "calls_per_s": 5000.0, "p50_us": 190.0, "p99_us": 400.0},
            "rust": {"calls": 20000, "calls_per_s": 4000.0, "p50_us": 240.0, "p99_us": 500.0},
            "ratio_calls_per_s": 1.25, "ratio_p50": 0.7917});
        let md = render(&v).unwrap();
        assert!(
            md.contains("| C++ `bee::Service::rpc_call` (`bench.so`) | 20,000 | 5,000 | 190.0 µs | 400.0 µs |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| Rust `NativeEndpoint::rpc_call` | 20,000 | 4,000 | 240.0 µs | 500.0 µs |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| ratio C++/Rust | | 1.250 | 0.792 | 0.800 |"),
            "{md}"
        );
    }

    #[test]
    fn handover_table_rows() {
        let mut v = sample(false);
        v["handover"] = json!({"handovers": 3, "calls": 36308, "errors": 0, "steady_p99_us": 323.5,
            "during_calls": 6042, "during_p99_us": 300.9, "during_max_us": 13710.8,
            "ratio_p99": 0.93, "gap_max_us": 13711.3, "took_ms": [1, 14, 12]});
        let md = render(&v).unwrap();
        assert!(md.contains("handed over 3 times"), "{md}");
        assert!(md.contains("| 1 ms, 14 ms, 12 ms |"), "{md}");
        assert!(md.contains("| 13711.3 µs |"), "{md}");
        assert!(md.contains("| 323.5 µs / 300.9 µs |"), "{md}");
        assert!(md.contains("Failed calls: 0 of 36,308."), "{md}");
    }

    #[test]
    fn busy_poll_table_rows() {
        let mut v = sample(false);
        v["busy_poll"] = json!({"rate_per_conn": 200, "poll_max": 1, "rows": [
            {"poll_us": 100, "conns": 1, "calls_per_s": 200.0, "node_cpu_pct": 9.0, "p50_us": 150.0, "p99_us": 400.0, "errors": 0},
            {"poll_us": 0, "conns": 1, "calls_per_s": 199.0, "node_cpu_pct": 5.0, "p50_us": 300.0, "p99_us": 500.0, "errors": 0}]});
        let md = render(&v).unwrap();
        assert!(
            md.contains("| 1 | 200 | 9 % | 5 % | +4 points | 150 / 300 µs |"),
            "{md}"
        );
    }

    #[test]
    fn gate_table_rows_and_verdicts() {
        let mut v = sample(false);
        v["gate"] = json!({"conns": 100, "depth": 16, "payload_bytes": 16, "seconds": 5.0,
            "rounds": 3, "idle": 10000, "threads": 2,
            "bee": {"msgs_per_s": 150000.0, "p50_us": 9000.0, "p99_us": 30000.0,
                "rss_per_conn_bytes": 2113.0, "rss_per_conn_runs": [2200.4, 2113.0, 2050.0],
                "errors": 0},
            "skynet": {"msgs_per_s": 100000.0, "p50_us": 12000.0, "p99_us": 20000.0,
                "rss_per_conn_bytes": 66.0, "rss_per_conn_runs": [66.0, 70.2, 64.9],
                "errors": 0}});
        let md = render(&v).unwrap();
        assert!(
            md.contains("100 connections × 16 frames of 16 bytes"),
            "{md}"
        );
        assert!(
            md.contains("| echoes/s (target ≥ 1.5× skynet) | 150,000 | 100,000 | 1.50 | yes |"),
            "{md}"
        );
        assert!(
            md.contains("| p99 latency, µs (target ≤ skynet) | 30000 | 20000 | 1.50 | **no** |"),
            "{md}"
        );
        assert!(
            md.contains("| RSS per idle connection, bytes (target ≤ skynet) | 2,113 | 66 | 32.02 | **no** |"),
            "{md}"
        );
        assert!(
            md.contains(
                "(bytes; the row above is the median): bee 2200, 2113, 2050; skynet 66, 70, 65."
            ),
            "{md}"
        );
        // bee alone: skynet's column says so, no verdict.
        v["gate"]["skynet"] = Value::Null;
        let md = render(&v).unwrap();
        assert!(
            md.contains("| echoes/s (target ≥ 1.5× skynet) | 150,000 | not measured | ? | ? |"),
            "{md}"
        );
    }

    #[test]
    fn lua_mysql_table_row() {
        let mut v = sample(false);
        v["lua_mysql"] = json!({"rows": 10000, "conns": 8, "per_conn": 8, "seconds": 5.0,
            "rounds": 3, "threads": 2,
            "bee": {"selects_per_s": 16000.0, "errors": 0},
            "skynet": {"selects_per_s": 10000.0, "errors": 0}});
        let md = render(&v).unwrap();
        assert!(
            md.contains(
                "| point selects/s (target ≥ 1.0× skynet) | 16,000 | 10,000 | 1.60 | yes |"
            ),
            "{md}"
        );
        assert!(
            md.contains("8 connections × 8 coroutines, point selects on 10,000 rows"),
            "{md}"
        );
    }

    #[test]
    fn three_views_use_the_bee_client_for_targets() {
        let mut v = sample(true);
        v["skynet_client_to_bee"] = json!({"b2_p50_us": 60.0, "b3_calls_per_s": 90000.0,
            "b4_pushes_per_s": 400000.0, "b4_lost": 0, "b5_mib_per_s": 80.0});
        v["bee_client_to_skynet"] = json!({"b2_p50_us": 90.0, "b3_calls_per_s": 30000.0,
            "b4_pushes_per_s": 50000.0, "b4_lost": 0, "b5_mib_per_s": 20.0});
        let md = render(&v).unwrap();
        assert!(md.contains("Three views"), "{md}");
        // B3: bee-bench→bee 150,000 vs bee-bench→skynet 30,000 = 5× ≥ 4×.
        assert!(
            md.contains("| 150,000 | 30,000 | 5.00× | yes (≥ 4×) |"),
            "{md}"
        );
        // B2 p50: 30 / 90 = 0.33× ≤ 0.5×.
        assert!(
            md.contains("| 30.0 µs | 90.0 µs | 0.33× | yes (≤ 0.5×) |"),
            "{md}"
        );
    }

    #[test]
    fn missing_parts_are_an_error() {
        let mut v = sample(false);
        v["bee_cluster"] = Value::Null;
        assert!(render(&v).is_err());
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(thousands(-4200), "-4,200");
    }
}
