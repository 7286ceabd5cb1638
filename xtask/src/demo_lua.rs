//! The demo's Lua node: `lua_lobby`, a bee node hosting skynet's Lua layer (the stock
//! tree's snlua, bootstrap and cluster Lua) with the game team's lobby pattern
//! (`crates/bee-demo/lua/lobby.lua`), which reaches the Rust `lpersistence` on
//! `lpersistence_3` with `cluster.query`, `cluster.send "text"` of a protobuf frame
//! (`require "protobuf"`, provided by bee) and `cluster.call "lua"`/`"text"`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};
use bee_cluster::Cluster;
use bee_codec::seri::{self, Table, Value};

use crate::process::{self, NodeProcess};

/// The node's name in the demo cluster.
pub const NODE: &str = "lua_lobby";

/// The scenario's title.
pub const TITLE: &str = "Lua lobby (skynet's snlua in bee node lua_lobby, require \"protobuf\") → lpersistence_3 (Rust): cluster.query, cluster.send \"text\", cluster.call \"lua\" and \"text\"";

/// The uid the Lua lobby logs in.
const UID: i64 = 10076447;

/// What the node needs before it starts: the stock skynet tree (built once by
/// `cargo xtask skynet`, or `SKYNET_DIR`) and the game's descriptor set.
pub struct LuaNode {
    skynet: PathBuf,
    pb: PathBuf,
    /// Where the front door (`lua/frontdoor.lua`) listens for players.
    pub frontdoor_port: u16,
}

impl LuaNode {
    /// Find or build the skynet tree, write the descriptor set into `dir`.
    pub fn prepare(root: &Path, dir: &Path) -> Result<LuaNode> {
        let skynet = crate::skynet::ensure(root)?;
        let pb = dir.join("game.pb");
        std::fs::write(&pb, bee_proto::DESCRIPTOR_SET)?;
        Ok(LuaNode {
            skynet,
            pb,
            frontdoor_port: process::free_port()?,
        })
    }

    /// Start the node with `bee` (the bee-demo binary), its config and skynet log in
    /// `dir`.
    pub fn start(&self, root: &Path, bee: &Path, dir: &Path) -> Result<NodeProcess> {
        let s = self.skynet.display();
        let lua = root.join("crates/bee-demo/lua");
        let l = lua.display();
        let cfg = dir.join(format!("{NODE}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "name = \"{NODE}\"\ncluster = \"cluster.lua\"\ncall_timeout_ms = 10000\n\n\
                 [env]\n\
                 cpath = \"{s}/cservice/?.so\"\n\
                 lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua;{l}/?.lua\"\n\
                 lua_cpath = \"{s}/luaclib/?.so\"\n\
                 luaservice = \"{s}/service/?.lua;{l}/?.lua\"\n\
                 lualoader = \"{s}/lualib/loader.lua\"\n\
                 cluster = \"{cluster}\"\n\
                 pb_file = \"{pb}\"\n\
                 logger = \"{log}\"\n\
                 frontdoor_port = \"{port}\"\n\
                 frontdoor_backend = \"lpersistence_3\"\n\n\
                 [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\n\n\
                 [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\nargs = \"lobby\"\nname = \"lobby\"\n\n\
                 [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\nargs = \"frontdoor\"\nname = \"frontdoor\"\n",
                port = self.frontdoor_port,
                cluster = dir.join("cluster.lua").display(),
                pb = self.pb.display(),
                log = dir.join(format!("{NODE}.skynet.log")).display(),
            ),
        )?;
        let mut cmd = Command::new(bee);
        cmd.arg("run").arg(&cfg).env(
            "BEE_LOG",
            std::env::var("BEE_LOG").unwrap_or_else(|_| "info".into()),
        );
        process::start_node(NODE, cmd, &dir.join(format!("{NODE}.log")), "listening on")
    }
}

fn get<'a>(t: &'a Table, key: &str) -> &'a Value {
    t.get_str(key).unwrap_or(&Value::Nil)
}

fn text(v: &Value) -> String {
    v.as_str()
        .map(str::to_string)
        .unwrap_or_else(|| v.to_string())
}

/// Ask the Lua lobby to run its persistence steps against `lpersistence_3`; its report
/// as lines. Fails when a step's answer is not what the pattern expects.
pub async fn scenario(cluster: &Cluster) -> Result<Vec<String>> {
    let payload = seri::pack(&[
        Value::from("lua"),
        Value::from("persistence"),
        Value::from("lpersistence_3"),
        Value::Integer(UID),
    ])?;
    // The lobby starts its cluster Lua once skynet's bootstrap is up: retry briefly.
    let mut last = String::new();
    for _ in 0..50 {
        match cluster.call(NODE, "lobby", payload.clone()).await {
            Ok(reply) => return report(&reply),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    bail!("{NODE}/lobby: {last}")
}

fn report(reply: &bytes::Bytes) -> Result<Vec<String>> {
    let values = seri::unpack(reply)?;
    let Some(Value::Table(t)) = values.first() else {
        bail!("the Lua lobby answered {values:?}");
    };
    let (Some(before), Some(after)) = (get(t, "before").as_int(), get(t, "after").as_int()) else {
        bail!("the Lua lobby's logins: {t:?}");
    };
    if after != before + 1 {
        bail!("the pushed LoginReq was not counted: logins {before} → {after}");
    }
    if get(t, "uid").as_int() != Some(UID) || text(get(t, "reply_name")) != "game.UserInfo" {
        bail!("the Lua lobby's GetUserInfo reply: {t:?}");
    }
    let addr = get(t, "addr").as_int().unwrap_or(0);
    Ok(vec![
        format!("{NODE}/lobby (Lua) → lpersistence_3: cluster.query(\"lpersistence\") → :{addr:08x}"),
        format!(
            "cluster.send \"text\" game.LoginReq{{uid={UID}}} (frame by kktframe.lua, body by protobuf.encode); logins {before} → {after}"
        ),
        format!(
            "cluster.call \"lua\" \"ping\" → {}, {}",
            text(get(t, "pong")),
            text(get(t, "served_by"))
        ),
        format!(
            "cluster.call \"text\" game.GetUserInfo → {} (protobuf.decode): uid={}, nickname={}, level={}, coins={}",
            text(get(t, "reply_name")),
            text(get(t, "uid")),
            text(get(t, "nickname")),
            text(get(t, "level")),
            text(get(t, "coins"))
        ),
    ])
}

/// The front door scenario's title.
pub const FRONTDOOR_TITLE: &str = "the game's front door: 200 simulated players over TCP → skynet's gateserver (frontdoor.lua on lua_lobby) → cluster.call \"text\" → lpersistence_3 (Rust) → replies pushed back, each checked";

/// How many players the front door scenario runs, and requests each after its login.
const PLAYERS: usize = 200;
const MESSAGES: usize = 20;

/// Run `bee-demo players` against the front door of the Lua node (`bee` is the
/// bee-demo binary, `dir` the demo's directory); its report and the front door's own
/// counters as lines. Fails when any reply is missing or wrong.
pub async fn frontdoor(
    cluster: &Cluster,
    bee: &Path,
    dir: &Path,
    port: u16,
) -> Result<Vec<String>> {
    // The front door listens once skynet's bootstrap and cluster Lua are up.
    let log = dir.join(format!("{NODE}.skynet.log"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("frontdoor listening")
    {
        if std::time::Instant::now() > deadline {
            bail!(
                "the front door did not listen within 30 s (see {})",
                log.display()
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let addr = format!("127.0.0.1:{port}");
    let (players, messages) = (PLAYERS.to_string(), MESSAGES.to_string());
    let args = [
        "players",
        addr.as_str(),
        "--players",
        &players,
        "--messages",
        &messages,
    ];
    let out = tokio::task::block_in_place(|| Command::new(bee).args(args).output())?;
    let mut lines = vec![format!("$ bee-demo {}", args.join(" "))];
    lines.extend(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| format!("  {l}")),
    );
    if !out.status.success() {
        lines.iter().for_each(|l| println!("  {l}"));
        bail!(
            "some players' replies were missing or wrong {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let reply = cluster
        .call(
            NODE,
            "frontdoor",
            seri::pack(&[Value::from("lua"), Value::from("stats")])?,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{NODE}/frontdoor stats: {e}"))?;
    let values = seri::unpack(&reply)?;
    let Some(Value::Table(t)) = values.first() else {
        bail!("the front door's stats: {values:?}");
    };
    let n = |k: &str| get(t, k).as_int().unwrap_or(-1);
    lines.push(format!(
        "{NODE}/frontdoor counted: {} connections, {} logins, {} requests forwarded, {} closed for bad input, {} closed idle",
        n("connected"),
        n("logins"),
        n("forwarded"),
        n("closed_bad"),
        n("closed_idle")
    ));
    if n("logins") != PLAYERS as i64 || n("forwarded") != (PLAYERS * MESSAGES) as i64 {
        bail!(
            "the front door counted {} logins and {} forwarded requests, not {PLAYERS} and {}",
            n("logins"),
            n("forwarded"),
            PLAYERS * MESSAGES
        );
    }
    Ok(lines)
}
