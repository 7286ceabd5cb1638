//! A steady load from `lobby` on `lpersistence_3`, for the hot-update scenario: calls
//! (`"lua"` ping and `"text"` GetUserInfo) and one-way LoginReq pushes, by name, until
//! stopped; then what it saw: calls made and failed, call latency, pushes sent — and
//! whether `lpersistence`'s login counter grew by exactly the pushes sent (no push lost
//! or doubled, the counter carried over the upgrade).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bee_cluster::{Cluster, Target};
use bee_codec::seri::{self, Value};
use bee_proto::game::{GetUserInfo, LoginReq};
use bee_runtime::lua::LuaResult;
use bee_runtime::ServiceError;

use crate::frame;

const SERVICE: &str = "lpersistence";
/// The node the load goes to (`lobby::PERSISTENCE_NODE`; lobby starts the load, so this
/// module does not look back at it).
const PERSISTENCE_NODE: &str = "lpersistence_3";

/// A running load.
pub struct Run {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Tally>,
    logins_before: i64,
    started: Instant,
}

#[derive(Default)]
struct Tally {
    calls: u64,
    failed: u64,
    first_error: Option<String>,
    pushes: u64,
    refused: u64,
    latencies_us: Vec<u64>,
}

fn pack(values: &[Value]) -> Result<bytes::Bytes, ServiceError> {
    Ok(seri::pack(values)?)
}

async fn logins(c: &Cluster) -> Result<i64, ServiceError> {
    let reply = c
        .call(
            PERSISTENCE_NODE,
            Target::Name(SERVICE.into()),
            pack(&[Value::from("lua"), Value::from("logins")])?,
        )
        .await
        .map_err(|e| ServiceError::msg(format!("call logins: {e}")))?;
    seri::unpack(&reply)?
        .first()
        .and_then(Value::as_int)
        .ok_or_else(|| ServiceError::msg("logins answered no number"))
}

/// Start the load; the lines say what it does.
pub async fn start(c: Cluster) -> Result<(Run, Vec<Value>), ServiceError> {
    let logins_before = logins(&c).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let ping = pack(&[Value::from("lua"), Value::from("ping")])?;
    let info = pack(&[
        Value::from("text"),
        Value::String(frame(7, &GetUserInfo { uid: 7 })?),
    ])?;
    let task = tokio::spawn(async move {
        let mut t = Tally::default();
        let mut uid = 0u64;
        while !flag.load(Ordering::Relaxed) {
            for payload in [&ping, &info] {
                let t0 = Instant::now();
                t.calls += 1;
                match c
                    .call(
                        PERSISTENCE_NODE,
                        Target::Name(SERVICE.into()),
                        payload.clone(),
                    )
                    .await
                {
                    Ok(_) => t.latencies_us.push(t0.elapsed().as_micros() as u64),
                    Err(e) => {
                        t.failed += 1;
                        t.first_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
            uid += 1;
            let login = LoginReq {
                uid,
                token: "load".into(),
                device: "demo".into(),
            };
            let push = frame(uid as i64, &login)
                .and_then(|f| pack(&[Value::from("text"), Value::String(f)]));
            match push {
                Ok(p) => match c
                    .send(PERSISTENCE_NODE, Target::Name(SERVICE.into()), p)
                    .await
                {
                    Ok(()) => t.pushes += 1,
                    Err(_) => t.refused += 1,
                },
                Err(_) => t.refused += 1,
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        t
    });
    let lines = vec![
        Value::from(format!(
            "lobby → {PERSISTENCE_NODE}: steady load started — \"lua\" ping + \"text\" GetUserInfo calls and \"text\" LoginReq pushes, by name"
        )),
        Value::from(format!("logins counted by lpersistence before: {logins_before}")),
    ];
    Ok((
        Run {
            stop,
            task,
            logins_before,
            started: Instant::now(),
        },
        lines,
    ))
}

/// Stop the load and check it: an error when a call failed or the login counter did not
/// grow by exactly the pushes sent.
pub async fn stop(c: Cluster, run: Run) -> LuaResult {
    run.stop.store(true, Ordering::Relaxed);
    let mut t = run
        .task
        .await
        .map_err(|e| ServiceError::msg(format!("the load task failed: {e}")))?;
    let secs = run.started.elapsed().as_secs_f64();
    let after = logins(&c).await?;
    t.latencies_us.sort_unstable();
    let pct = |p: f64| {
        t.latencies_us
            .get(
                ((t.latencies_us.len() as f64 * p) as usize)
                    .min(t.latencies_us.len().saturating_sub(1)),
            )
            .copied()
            .unwrap_or(0)
    };
    let grew = after - run.logins_before;
    let mut lines = vec![
        Value::from(format!(
            "load stopped after {secs:.1} s: {} calls, {} failed; {} LoginReq pushes sent, {} refused",
            t.calls, t.failed, t.pushes, t.refused
        )),
        Value::from(format!(
            "call latency: p50 {} µs, p99 {} µs, max {} µs",
            pct(0.5),
            pct(0.99),
            t.latencies_us.last().copied().unwrap_or(0)
        )),
        Value::from(format!(
            "logins counted by lpersistence: {} → {after} (+{grew}; pushes sent: {})",
            run.logins_before, t.pushes
        )),
    ];
    if t.failed > 0 || t.refused > 0 {
        lines.push(Value::from(format!(
            "first error: {}",
            t.first_error.unwrap_or_default()
        )));
        return Err(ServiceError::msg(format!(
            "{} calls failed and {} pushes were refused during the load",
            t.failed, t.refused
        )));
    }
    if grew != t.pushes as i64 {
        return Err(ServiceError::msg(format!(
            "lpersistence counted {grew} logins but {} pushes were sent (lost or doubled, or the counter was not carried over)",
            t.pushes
        )));
    }
    lines.push(Value::from(
        "zero failed calls, zero lost pushes, the login counter carried over".to_string(),
    ));
    Ok(lines)
}
