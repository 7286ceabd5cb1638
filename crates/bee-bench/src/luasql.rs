//! skynet's own MySQL driver (`skynet.db.mysql`) from a Lua service: point selects per
//! second on bee (`bee run` of a skynet config) and on stock skynet (the same config).
//!
//! The server side is `interop/skynet/service/mysql_bench_main.lua`: it creates its own
//! database (one name per side, dropped again at the end), fills a table, opens
//! `conns` connections with `per_conn` coroutines querying on each, and after a warm-up
//! counts the point selects whose row checks out for `seconds`. It prints
//! `SQLBENCH queries=N errors=E …` and `SQLBENCH DONE`; this module reads that from the
//! process's log, then stops the process. The sides run one after the other (they share
//! MariaDB), alternating, `rounds` times each.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::BenchError;

/// What to run.
#[derive(Debug, Clone)]
pub struct LuaSqlParams {
    /// The `bee` binary.
    pub bee: PathBuf,
    /// The stock skynet tree both sides load Lua and C modules from.
    pub tree: PathBuf,
    /// Also run the tree's own `skynet` executable.
    pub skynet: bool,
    /// The directory holding `mysql_bench_main.lua`.
    pub lua_dir: PathBuf,
    /// Where configs and logs go.
    pub work_dir: PathBuf,
    /// Rows in the table.
    pub rows: u32,
    /// MySQL connections.
    pub conns: u32,
    /// Coroutines querying on each connection.
    pub per_conn: u32,
    /// Measured seconds per round.
    pub seconds: f64,
    /// Rounds per side.
    pub rounds: usize,
    /// `thread` of both configs.
    pub threads: u32,
}

/// One side's figures.
#[derive(Debug, Clone, Serialize)]
pub struct SideResult {
    /// `bee` or `skynet`.
    pub server: String,
    /// Point selects per second of each round.
    pub rounds: Vec<f64>,
    /// Over all rounds.
    pub selects_per_s: f64,
    /// Failed or wrong selects.
    pub errors: u64,
    /// The first of them, as the Lua service saw it.
    pub first_error: Option<String>,
}

/// The whole run, printed as one JSON line.
#[derive(Debug, Clone, Serialize)]
pub struct LuaSqlReport {
    /// Rows in the table.
    pub rows: u32,
    /// MySQL connections.
    pub conns: u32,
    /// Coroutines per connection.
    pub per_conn: u32,
    /// Measured seconds per round.
    pub seconds: f64,
    /// Rounds per side.
    pub rounds: usize,
    /// `thread` of both configs.
    pub threads: u32,
    /// bee.
    pub bee: SideResult,
    /// Stock skynet, when run.
    pub skynet: Option<SideResult>,
}

fn config_text(p: &LuaSqlParams, side: &str) -> String {
    let s = p.tree.display();
    format!(
        "-- written by bee-bench lua-mysql: the same file for stock skynet and bee run\n\
         thread = {threads}\nharbor = 0\nbootstrap = \"snlua bootstrap\"\n\
         cpath = \"{s}/cservice/?.so\"\n\
         lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
         lua_cpath = \"{s}/luaclib/?.so\"\n\
         luaservice = \"{s}/service/?.lua;{l}/?.lua\"\n\
         lualoader = \"{s}/lualib/loader.lua\"\n\
         start = \"mysql_bench_main\"\n\
         sqlbench_db = \"bee_bench_luasql_{side}\"\n\
         sqlbench_rows = {rows}\nsqlbench_conns = {conns}\nsqlbench_per_conn = {per}\n\
         sqlbench_seconds = {secs}\n",
        threads = p.threads,
        l = p.lua_dir.display(),
        rows = p.rows,
        conns = p.conns,
        per = p.per_conn,
        secs = p.seconds,
    )
}

/// What one `SQLBENCH queries=…` line says: (queries, errors, first error).
pub fn parse_line(line: &str) -> Option<(u64, u64, Option<String>)> {
    let rest = &line[line.find("SQLBENCH queries=")? + "SQLBENCH ".len()..];
    let field = |key: &str| {
        rest.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let first = rest
        .find("first_error=")
        .map(|i| rest[i + "first_error=".len()..].trim().to_string())
        .filter(|e| e != "nil");
    Some((field("queries=")?, field("errors=")?, first))
}

/// One round of one side: start the process, wait for its result (seeding, the
/// measurement and the clean-up, at most `seconds` + 60 s), stop it.
fn round(p: &LuaSqlParams, side: &'static str) -> Result<(u64, u64, Option<String>), BenchError> {
    let config = p.work_dir.join(format!("luasql-{side}.config"));
    std::fs::write(&config, config_text(p, side))?;
    let log_path = p.work_dir.join(format!("luasql-{side}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut cmd = if side == "skynet" {
        Command::new(p.tree.join("skynet"))
    } else {
        let mut c = Command::new(&p.bee);
        c.arg("run").env("BEE_LOG", "warn");
        c
    };
    let mut child = cmd
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .map_err(|e| BenchError::Setup(format!("cannot start the {side} process: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs_f64(p.seconds + 60.0);
    let outcome = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if text.contains("SQLBENCH DONE") {
            break text
                .lines()
                .find_map(parse_line)
                .ok_or_else(|| BenchError::Setup(format!("{side}: no SQLBENCH result line")));
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(BenchError::Setup(format!(
                "the {side} process exited ({status}) before its result; see {}",
                log_path.display()
            )));
        }
        if Instant::now() > deadline {
            break Err(BenchError::Setup(format!(
                "the {side} process gave no result in time; see {}",
                log_path.display()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    outcome
}

/// Run the rounds, alternating bee and skynet.
pub fn run(p: &LuaSqlParams) -> Result<LuaSqlReport, BenchError> {
    std::fs::create_dir_all(&p.work_dir)?;
    let sides: &[&'static str] = if p.skynet {
        &["bee", "skynet"]
    } else {
        &["bee"]
    };
    let mut results: Vec<SideResult> = sides
        .iter()
        .map(|s| SideResult {
            server: s.to_string(),
            rounds: Vec::new(),
            selects_per_s: 0.0,
            errors: 0,
            first_error: None,
        })
        .collect();
    for _ in 0..p.rounds {
        for (side, r) in sides.iter().zip(results.iter_mut()) {
            let (queries, errors, first) = round(p, side)?;
            let rate = queries as f64 / p.seconds;
            eprintln!("lua-mysql {side}: {rate:.0} point selects/s, {errors} errors");
            r.rounds.push(rate);
            r.errors += errors;
            r.first_error = r.first_error.take().or(first);
        }
    }
    for r in &mut results {
        r.selects_per_s = r.rounds.iter().sum::<f64>() / r.rounds.len().max(1) as f64;
    }
    let skynet = if results.len() > 1 {
        results.pop()
    } else {
        None
    };
    let bee = results.pop().expect("the bee side always runs");
    Ok(LuaSqlReport {
        rows: p.rows,
        conns: p.conns,
        per_conn: p.per_conn,
        seconds: p.seconds,
        rounds: p.rounds,
        threads: p.threads,
        bee,
        skynet,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_result_line() {
        assert_eq!(
            parse_line("[:00000008] SQLBENCH queries=21525 errors=0 seconds=2 first_error=nil"),
            Some((21525, 0, None))
        );
        assert_eq!(
            parse_line("[:0a] SQLBENCH queries=5 errors=2 seconds=2 first_error=wrong row"),
            Some((5, 2, Some("wrong row".into())))
        );
        assert_eq!(parse_line("[:0a] SQLBENCH DONE"), None);
        assert_eq!(parse_line("SQLBENCH queries=x errors=0"), None);
    }
}
