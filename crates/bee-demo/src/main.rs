//! `bee-demo`: the `bee` program with the demo game's service kinds — what
//! `cargo xtask demo` runs for each node — and `bee-demo players`, the load client of
//! the game's front door.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use bee_demo::players;

const PLAYERS_USAGE: &str = "usage: bee-demo players ADDR [--players N] [--messages M] [--first-uid UID] [--served-by NODE/SERVICE] [--timeout-ms MS]";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("players") {
        std::process::exit(match run_players(&args[1..]) {
            Ok(true) => 0,
            Ok(false) => 1,
            Err(e) => {
                eprintln!("bee-demo players: error: {e:#}\n{PLAYERS_USAGE}");
                2
            }
        });
    }
    bee_demo::app().main()
}

/// `bee-demo players ADDR …`: run the players, print the report; true when every reply
/// was right.
fn run_players(args: &[String]) -> Result<bool> {
    let mut cfg = players::Config {
        addr: args
            .first()
            .context("no front door address")?
            .parse()
            .context("the front door address (IP:PORT)")?,
        players: 200,
        messages: 20,
        first_uid: 20_000_000,
        served_by: "lpersistence_3/lpersistence".into(),
        timeout: Duration::from_secs(10),
    };
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let value = rest
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--players" => cfg.players = value.parse().context("--players")?,
            "--messages" => cfg.messages = value.parse().context("--messages")?,
            "--first-uid" => cfg.first_uid = value.parse().context("--first-uid")?,
            "--served-by" => cfg.served_by = value.clone(),
            "--timeout-ms" => {
                cfg.timeout = Duration::from_millis(value.parse().context("--timeout-ms")?)
            }
            other => bail!("unknown option {other}"),
        }
    }
    let report = tokio::runtime::Runtime::new()?.block_on(players::run(&cfg));
    for line in report.lines(&cfg) {
        println!("{line}");
    }
    Ok(report.all_ok(&cfg))
}
