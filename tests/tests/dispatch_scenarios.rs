//! The dispatch layer between real nodes: the demo's game services as `bee` processes, called from
//! an in-process client node and through the `lobby` service's scenario commands.

mod dispatch_common;

use std::collections::{BTreeMap, HashSet};

use bee_codec::seri::Value;
use bee_proto::game::{
    ActivityProgress, ActivityState, GetUserInfo, LoginReq, LoginResp, ShopBuy, ShopReceipt,
    UserInfo,
};
use bee_runtime::shard::worker_for;
use bee_runtime::Target;
use bee_tests::Layout;
use dispatch_common::*;
use futures::future::join_all;

const UID: u64 = 10076447;

/// `lobby → lpersistence`: query by name, a `"text"` push, `"lua"` and `"text"` calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lobby_to_lpersistence_query_text_send_lua_call() {
    let layout = Layout::new(&["lobby", "lpersistence_3"]);
    let _p = start_demo(&layout, "lpersistence_3");
    let _l = start_demo(&layout, "lobby");
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let n = "lpersistence_3";

    // query: the address registered as lpersistence, usable as a numeric target.
    let addr = c
        .query(n, "lpersistence")
        .await
        .expect("query lpersistence");
    assert_ne!(addr, 0);
    let logins = |reply: bytes::Bytes| values(&reply)[0].as_int().expect("logins is a number");
    let before = logins(
        c.call(n, addr, lua(&[Value::from("logins")]))
            .await
            .unwrap(),
    );

    // "text" push: no reply; it is in the mailbox before the next call on this channel.
    let login = LoginReq {
        uid: UID,
        token: "t".into(),
        device: "ios".into(),
    };
    c.send(n, addr, text(frame(UID, &login)))
        .await
        .expect("send LoginReq");

    // "lua" call by name and by address.
    let reply = c
        .call(n, "lpersistence", lua(&[Value::from("ping")]))
        .await
        .unwrap();
    assert_eq!(
        values(&reply),
        vec![
            Value::from("pong"),
            Value::from("lpersistence_3/lpersistence")
        ]
    );
    let after = logins(
        c.call(n, Target::Addr(addr), lua(&[Value::from("logins")]))
            .await
            .unwrap(),
    );
    assert_eq!(
        after,
        before + 1,
        "the pushed LoginReq was counted before the next call"
    );

    // "text" calls: the reply is one string, a game frame of the reply type, same uid.
    let reply = c
        .call(n, addr, text(frame(UID, &GetUserInfo { uid: UID })))
        .await
        .unwrap();
    let (uid, info) = unframe::<UserInfo>(&reply_frame(&reply));
    assert_eq!(uid, UID);
    assert_eq!(
        info,
        UserInfo {
            uid: UID,
            nickname: format!("player{UID}"),
            level: (UID % 60) as i32 + 1,
            coins: (UID % 100_000) as i64 * 10,
        }
    );
    let reply = c
        .call(
            n,
            "lpersistence",
            text(frame(77, &LoginReq { uid: 77, ..login })),
        )
        .await
        .unwrap();
    let (uid, resp) = unframe::<LoginResp>(&reply_frame(&reply));
    assert_eq!(
        (uid, resp.uid, resp.code, resp.nickname.as_str()),
        (77, 77, 0, "player77")
    );
    assert_eq!(
        logins(
            c.call(n, addr, lua(&[Value::from("logins")]))
                .await
                .unwrap()
        ),
        before + 2
    );

    // The same scenario driven from the lobby node (lobby → lpersistence_3).
    let reply = c
        .call("lobby", "lobby", lua(&[Value::from("persistence")]))
        .await
        .expect("lobby persistence");
    let report = lines(&reply).join("\n");
    assert!(report.contains("query(\"lpersistence\")"), "{report}");
    assert!(report.contains("send \"text\" game.LoginReq"), "{report}");
    assert!(
        report.contains("\"ping\" → \"pong\", \"lpersistence_3/lpersistence\""),
        "{report}"
    );
    assert!(
        report.contains(&format!("game.UserInfo{{uid={UID}")),
        "{report}"
    );
    assert!(report.contains("logins"), "{report}");
}

/// `activity_master` with 8 workers: 200 uids, each twice; a uid always lands on the
/// worker `worker_for(uid, 8)` names, and its progress lives there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_master_200_uids_stable_workers() {
    let layout = Layout::new(&["lobby", "activity_master"]);
    let _a = start_demo(&layout, "activity_master");
    let _l = start_demo(&layout, "lobby");
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let n = "activity_master";

    let workers = values(
        &c.call(n, "activity_master", lua(&[Value::from("shard_workers")]))
            .await
            .unwrap(),
    );
    let distinct: HashSet<i64> = workers
        .iter()
        .map(|v| v.as_int().expect("worker address"))
        .collect();
    assert_eq!(
        distinct.len(),
        8,
        "8 distinct worker addresses: {workers:?}"
    );

    let uids: Vec<u64> = (0..200u64).map(|i| 1_000_003 * i + 17).collect();
    let progress = |uid: u64| {
        let c = c.clone();
        async move {
            let msg = ActivityProgress {
                uid,
                activity_id: 3,
                delta: 1,
            };
            let reply = c
                .call(n, "activity_master", text(frame(uid, &msg)))
                .await
                .expect("activity call");
            let (fuid, state) = unframe::<ActivityState>(&reply_frame(&reply));
            assert_eq!((fuid, state.uid, state.activity_id), (uid, uid, 3));
            state
        }
    };
    // Round 1 and round 2, each with all uids in flight at once.
    let first = join_all(uids.iter().map(|u| progress(*u))).await;
    let second = join_all(uids.iter().map(|u| progress(*u))).await;
    let mut per_worker = BTreeMap::new();
    for ((uid, a), b) in uids.iter().zip(&first).zip(&second) {
        let expect = worker_for(*uid, 8) as i32;
        assert_eq!((a.worker, b.worker), (expect, expect), "uid {uid}");
        assert_eq!(
            (a.progress, b.progress),
            (1, 2),
            "uid {uid}: progress kept by one worker"
        );
        *per_worker.entry(a.worker).or_insert(0) += 1;
    }
    assert_eq!(per_worker.len(), 8, "every worker got uids: {per_worker:?}");

    // The master's own commands agree with worker_for, and "lua" messages shard by the
    // uid argument to the same worker as the "text" ones.
    for uid in uids.iter().take(20) {
        let i = values(
            &c.call(
                n,
                "activity_master",
                lua(&[Value::from("shard_of"), Value::Integer(*uid as i64)]),
            )
            .await
            .unwrap(),
        );
        assert_eq!(i, vec![Value::Integer(worker_for(*uid, 8) as i64)]);
        let r = values(
            &c.call(
                n,
                "activity_master",
                lua(&[
                    Value::from("progress"),
                    Value::Integer(*uid as i64),
                    Value::Integer(3),
                ]),
            )
            .await
            .unwrap(),
        );
        assert_eq!(
            r,
            vec![
                Value::Integer(2),
                Value::Integer(worker_for(*uid, 8) as i64)
            ],
            "uid {uid}"
        );
    }

    // The lobby's scenario over the cluster: 200 uids, it checks worker_for itself.
    let reply = c
        .call(
            "lobby",
            "lobby",
            lua(&[Value::from("activity"), Value::Integer(200)]),
        )
        .await
        .expect("lobby activity");
    let report = lines(&reply);
    assert_eq!(report.len(), 201, "one line per uid plus the spread");
    assert!(report[200].contains("uids per worker"), "{}", report[200]);
}

/// The demo's `activity_master` with the team's rule (`rule = "modulo"`, as `cargo
/// xtask demo` runs it): the lobby's scenario sees every uid land on worker
/// `1 + uid % 8` twice and uid 0 reach all eight workers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_master_with_the_teams_rule_lands_uids_on_1_plus_uid_mod_8() {
    let layout = Layout::new(&["lobby", "activity_master"]);
    let _a = start(
        &layout,
        "activity_master",
        "[[service]]\nkind = \"activity_master\"\nname = \"activity_master\"\nworkers = 8\nrule = \"modulo\"\n",
    );
    let _l = start_demo(&layout, "lobby");
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let reply = c
        .call(
            "lobby",
            "lobby",
            lua(&[
                Value::from("activity"),
                Value::Integer(20),
                Value::from("modulo"),
            ]),
        )
        .await
        .expect("lobby activity with the team's rule");
    let report = lines(&reply);
    assert_eq!(report.len(), 22, "20 uids, the spread, uid 0: {report:#?}");
    for (i, line) in report[..20].iter().enumerate() {
        let uid = 10_076_447u64 + i as u64 * 7919;
        let expect = format!(
            "uid {uid:>9} → activity {} = 1 + {uid} % 8 (index {}) twice (progress 1 → 2)",
            1 + uid % 8,
            uid % 8
        );
        assert!(line.contains(&expect), "{line}\nexpected {expect}");
    }
    assert!(
        report[21].contains("uid 0 → every worker (the master reached 8; all 8 hold its progress)"),
        "{}",
        report[21]
    );
    // The same uids under bee's hash rule are refused by the scenario's check: the
    // master really applies the rule it was configured with.
    let err = c
        .call(
            "lobby",
            "lobby",
            lua(&[
                Value::from("activity"),
                Value::Integer(20),
                Value::from("hash"),
            ]),
        )
        .await
        .expect_err("the hash check fails against a modulo master");
    assert!(err.to_string().contains("worker_for(uid, 8) says"), "{err}");
}

/// `shop_master` redirects a game frame untouched to the native `shop`, and the reply
/// comes from the shop straight to the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shop_master_redirects_to_native_shop() {
    let layout = Layout::new(&["lobby", "shop_master"]);
    let _s = start_demo(&layout, "shop_master");
    let _l = start_demo(&layout, "lobby");
    let (_node, c) = layout.client(CALL_TIMEOUT);
    let n = "shop_master";

    for (i, item) in [(1i64, 1001), (2, 1002)] {
        let buy = ShopBuy {
            uid: UID,
            item_id: item,
            count: 3,
        };
        let reply = c
            .call(n, "shop_master", text(frame(UID, &buy)))
            .await
            .expect("call shop_master");
        let (uid, r) = unframe::<ShopReceipt>(&reply_frame(&reply));
        assert_eq!(uid, UID);
        assert_eq!(
            r,
            ShopReceipt {
                uid: UID,
                item_id: item,
                count: 3,
                order_id: i,
                handled_by: "shop_master/shop".into(),
            },
            "the receipt is made and signed by the native shop"
        );
    }
    // What shop_master cannot hand to a native service is refused with its reason.
    let err = c
        .call(n, "shop_master", lua(&[Value::from("hello")]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("shop_master takes (\"text\", frame) or (\"rpc_response\", frame)"),
        "{err}"
    );
}
