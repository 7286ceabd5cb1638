//! The `protobuf` module bee gives skynet's Lua (cloudwu/pbc's Lua API on bee's native
//! codec, `docs/lua.md`): a Lua service in a real bee node (`tests/lua/pbcodec.lua`)
//! registers the demo's descriptor set with `protobuf.register_file`, and the test,
//! over the cluster, has it encode tables (bytes compared with prost's) and decode
//! prost's bytes (tables compared field by field): enums as names, repeated fields as
//! arrays, nested messages as tables, maps, 64-bit integers, bytes, proto3 and proto2
//! defaults, and the errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bee_cluster::Cluster;
use bee_codec::seri::{self, Table, Value};
use bee_proto::codec::{bag, Bag, Color, Item, Scalars};
use bee_proto::codec_legacy::{Kind, Legacy};
use bee_proto::game::{LoginReq, UserInfo};
use bee_proto::Message;
use bee_tests::{skynet_dir, Layout};
use bytes::Bytes;

const CALL: Duration = Duration::from_secs(10);

fn lua_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("lua")
}

fn node_body(skynet: &Path, pb_file: &Path, log: &Path) -> String {
    let s = skynet.display();
    let t = lua_dir().display().to_string();
    format!(
        "[env]\n\
         cpath = \"{s}/cservice/?.so\"\n\
         lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
         lua_cpath = \"{s}/luaclib/?.so\"\n\
         luaservice = \"{s}/service/?.lua;{t}/?.lua\"\n\
         lualoader = \"{s}/lualib/loader.lua\"\n\
         start = \"luaecho\"\n\
         pb_file = \"{pb}\"\n\
         logger = \"{log}\"\n\n\
         [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\n\n\
         [[service]]\nkind = \"snlua\"\nliblua = \"{s}/liblua.so\"\nargs = \"pbcodec\"\nname = \"pbcodec\"\n",
        pb = pb_file.display(),
        log = log.display()
    )
}

fn s(v: &str) -> Value {
    Value::from(v)
}

fn table(pairs: &[(&str, Value)]) -> Value {
    let mut t = Table::new();
    for (k, v) in pairs {
        t.insert(s(k), v.clone());
    }
    Value::Table(t)
}

fn array(items: Vec<Value>) -> Value {
    let mut t = Table::new();
    for v in items {
        t.push(v);
    }
    Value::Table(t)
}

fn bytes_of(v: &Value) -> &[u8] {
    match v {
        Value::String(b) => b,
        other => panic!("a string expected, got {other:?}"),
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    match v {
        Value::Table(t) => t.get_str(key),
        other => panic!("a table expected, got {other:?}"),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::Table(t) => &t.array,
        other => panic!("an array expected, got {other:?}"),
    }
}

/// A fully populated `codec.Bag` as prost has it and as Lua writes it.
fn bag_pair() -> (Bag, Value) {
    let bag = Bag {
        owner: u64::MAX - 5,
        counts: vec![1, -2, 300_000],
        items: vec![
            Item {
                id: 1,
                name: "sword".into(),
                color: Color::Red as i32,
            },
            Item {
                id: 2,
                name: String::new(),
                color: Color::Unspecified as i32,
            },
        ],
        best: Some(Item {
            id: 9,
            name: "crown".into(),
            color: Color::Blue as i32,
        }),
        color: Color::Green as i32,
        history: vec![Color::Red as i32, Color::Blue as i32],
        scores: [("alice".to_string(), -7_000_000_000i64)]
            .into_iter()
            .collect(),
        tags: vec!["a".into(), "b".into()],
        level: Some(0),
        scalars: Some(Scalars {
            f_double: 1.5,
            f_float: -0.25,
            f_int32: -5,
            f_int64: i64::MIN,
            f_uint32: u32::MAX,
            f_uint64: 1 << 63,
            f_sint32: -300,
            f_sint64: -(1 << 40),
            f_fixed32: 7,
            f_fixed64: u64::MAX,
            f_sfixed32: -8,
            f_sfixed64: -9,
            f_bool: true,
            f_string: "héllo".into(),
            f_bytes: vec![0, 255, 10, 13],
        }),
        reward: Some(bag::Reward::Title("champion".into())),
    };
    let lua = table(&[
        ("owner", Value::Integer((u64::MAX - 5) as i64)),
        ("counts", array(vec![1.into(), (-2).into(), 300_000.into()])),
        (
            "items",
            array(vec![
                table(&[("id", 1.into()), ("name", s("sword")), ("color", s("RED"))]),
                // An enum by number, the default enum by name: what pbc accepts.
                table(&[("id", 2.into()), ("color", 0.into())]),
            ]),
        ),
        (
            "best",
            table(&[("id", 9.into()), ("name", s("crown")), ("color", 3.into())]),
        ),
        ("color", s("GREEN")),
        ("history", array(vec![s("RED"), 3.into()])),
        (
            "scores",
            array(vec![table(&[
                ("key", s("alice")),
                ("value", Value::Integer(-7_000_000_000)),
            ])]),
        ),
        ("tags", array(vec![s("a"), s("b")])),
        ("level", 0.into()),
        (
            "scalars",
            table(&[
                ("f_double", Value::Real(1.5)),
                ("f_float", Value::Real(-0.25)),
                ("f_int32", (-5).into()),
                ("f_int64", Value::Integer(i64::MIN)),
                ("f_uint32", Value::Integer(u32::MAX as i64)),
                ("f_uint64", Value::Integer(i64::MIN)),
                ("f_sint32", (-300).into()),
                ("f_sint64", Value::Integer(-(1 << 40))),
                ("f_fixed32", 7.into()),
                ("f_fixed64", Value::Integer(-1)),
                ("f_sfixed32", (-8).into()),
                ("f_sfixed64", (-9).into()),
                ("f_bool", true.into()),
                ("f_string", s("héllo")),
                (
                    "f_bytes",
                    Value::String(Bytes::from_static(&[0, 255, 10, 13])),
                ),
            ]),
        ),
        ("title", s("champion")),
    ]);
    (bag, lua)
}

/// A call to the `pbcodec` Lua service; its answer unpacked.
async fn call(c: &Cluster, args: Vec<Value>) -> Vec<Value> {
    let r = c
        .call("luapb", "pbcodec", seri::pack(&args).unwrap())
        .await
        .unwrap_or_else(|e| panic!("pbcodec {args:?}: {e}"));
    seri::unpack(&r).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lua_protobuf_encodes_and_decodes_as_prost_does() {
    let skynet = skynet_dir();
    let layout = Layout::new(&["luapb"]);
    let log = layout.dir.path().join("skynet.log");
    let pb = layout.dir.path().join("game.pb");
    std::fs::write(&pb, bee_proto::DESCRIPTOR_SET).unwrap();
    let body = node_body(&skynet, &pb, &log);
    let _node = tokio::task::block_in_place(|| layout.start("luapb", &body));
    tokio::task::block_in_place(|| {
        bee_tests::wait_for("pbcodec ready", Duration::from_secs(20), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("pbcodec ready") {
                Ok(())
            } else {
                Err(text)
            }
        })
    });
    let (_client, c) = layout.client(CALL);
    // The demo's messages: Lua's bytes are prost's, and back.
    let login = LoginReq {
        uid: 10076447,
        token: "t0k".into(),
        device: "ios".into(),
    };
    let r = call(
        &c,
        vec![
            s("encode"),
            s("game.LoginReq"),
            table(&[
                ("uid", 10076447.into()),
                ("token", s("t0k")),
                ("device", s("ios")),
            ]),
        ],
    )
    .await;
    assert_eq!(bytes_of(&r[0]), login.encode_to_vec().as_slice());
    let user = UserInfo {
        uid: 42,
        nickname: "bee".into(),
        level: 0,
        coins: -12_345_678_901,
    };
    let r = call(
        &c,
        vec![
            s("decode"),
            s("game.UserInfo"),
            Value::from(user.encode_to_vec()),
        ],
    )
    .await;
    assert_eq!(field(&r[0], "uid"), Some(&Value::Integer(42)));
    assert_eq!(field(&r[0], "nickname"), Some(&s("bee")));
    assert_eq!(
        field(&r[0], "coins"),
        Some(&Value::Integer(-12_345_678_901))
    );
    // proto3: a field at its default is not on the wire, so not in the table...
    assert_eq!(field(&r[0], "level"), None);
    // ... but reading it gives the default, as pbc's metatable does.
    let r = call(
        &c,
        vec![
            s("get"),
            s("game.UserInfo"),
            Value::from(user.encode_to_vec()),
            s("level"),
            s("nickname"),
        ],
    )
    .await;
    assert_eq!(r, vec![Value::Integer(0), s("bee")]);

    // Every shape, Lua -> bytes: the same bytes as prost.
    let (bag, lua_bag) = bag_pair();
    let r = call(&c, vec![s("encode"), s("codec.Bag"), lua_bag.clone()]).await;
    assert_eq!(
        bytes_of(&r[0]),
        bag.encode_to_vec().as_slice(),
        "Lua's encoding of codec.Bag"
    );
    assert_eq!(Bag::decode(bytes_of(&r[0])).unwrap(), bag);

    // prost's bytes -> Lua table.
    let r = call(
        &c,
        vec![
            s("decode"),
            s("codec.Bag"),
            Value::from(bag.encode_to_vec()),
        ],
    )
    .await;
    let t = &r[0];
    assert_eq!(
        field(t, "owner"),
        Some(&Value::Integer((u64::MAX - 5) as i64)),
        "a uint64 past 2^63 is the same 64 bits as a Lua integer"
    );
    assert_eq!(
        items(field(t, "counts").unwrap()),
        &[1.into(), (-2).into(), 300_000.into()]
    );
    let its = items(field(t, "items").unwrap());
    assert_eq!(its.len(), 2);
    assert_eq!(field(&its[0], "name"), Some(&s("sword")));
    assert_eq!(
        field(&its[0], "color"),
        Some(&s("RED")),
        "enums decode as names"
    );
    assert_eq!(field(&its[1], "id"), Some(&2.into()));
    assert_eq!(field(&its[1], "color"), None);
    assert_eq!(field(field(t, "best").unwrap(), "color"), Some(&s("BLUE")));
    assert_eq!(field(t, "color"), Some(&s("GREEN")));
    assert_eq!(items(field(t, "history").unwrap()), &[s("RED"), s("BLUE")]);
    let scores = items(field(t, "scores").unwrap());
    assert_eq!(scores.len(), 1);
    assert_eq!(field(&scores[0], "key"), Some(&s("alice")));
    assert_eq!(
        field(&scores[0], "value"),
        Some(&Value::Integer(-7_000_000_000))
    );
    assert_eq!(items(field(t, "tags").unwrap()), &[s("a"), s("b")]);
    assert_eq!(
        field(t, "level"),
        Some(&0.into()),
        "proto3 optional: present at 0"
    );
    assert_eq!(field(t, "title"), Some(&s("champion")));
    assert_eq!(field(t, "gold"), None);
    let sc = field(t, "scalars").unwrap();
    for (k, v) in [
        ("f_double", Value::Real(1.5)),
        ("f_float", Value::Real(-0.25)),
        ("f_int64", Value::Integer(i64::MIN)),
        ("f_uint32", Value::Integer(u32::MAX as i64)),
        ("f_uint64", Value::Integer(i64::MIN)),
        ("f_sint64", Value::Integer(-(1 << 40))),
        ("f_fixed64", Value::Integer(-1)),
        ("f_bool", Value::Boolean(true)),
        ("f_string", s("héllo")),
        (
            "f_bytes",
            Value::String(Bytes::from_static(&[0, 255, 10, 13])),
        ),
    ] {
        assert_eq!(field(sc, k), Some(&v), "scalars.{k}");
    }
    // Lua's decode of prost's bytes encodes back to the same bytes (the table as
    // decoded, map entries and enum names included).
    let r = call(&c, vec![s("encode"), s("codec.Bag"), t.clone()]).await;
    assert_eq!(bytes_of(&r[0]), bag.encode_to_vec().as_slice());

    // A map as a plain `{ [k] = v }` table encodes as its entries do.
    let mut plain = lua_bag.clone();
    if let Value::Table(t) = &mut plain {
        t.insert(
            s("scores"),
            table(&[("alice", Value::Integer(-7_000_000_000))]),
        );
    }
    let r = call(&c, vec![s("encode"), s("codec.Bag"), plain]).await;
    assert_eq!(bytes_of(&r[0]), bag.encode_to_vec().as_slice());
    // An enum number the enum does not name decodes as the number.
    let odd = Item {
        id: 1,
        name: String::new(),
        color: 7,
    };
    let r = call(
        &c,
        vec![
            s("decode"),
            s("codec.Item"),
            Value::from(odd.encode_to_vec()),
        ],
    )
    .await;
    assert_eq!(field(&r[0], "color"), Some(&7.into()));
    // Types are registered per process: a new service that registered nothing decodes.
    let r = call(
        &c,
        vec![
            s("in_fresh_service"),
            s("game.LoginReq"),
            Value::from(login.encode_to_vec()),
        ],
    )
    .await;
    assert_eq!(field(&r[0], "device"), Some(&s("ios")));

    // Defaults of an empty message: scalars, the enum's first name, an empty array for
    // a repeated field, nil for an absent message.
    let r = call(
        &c,
        vec![
            s("get"),
            s("codec.Bag"),
            Value::from(Vec::<u8>::new()),
            s("owner"),
            s("color"),
            s("tags"),
            s("best"),
            s("title"),
        ],
    )
    .await;
    assert_eq!(r[0], 0.into());
    assert_eq!(r[1], s("COLOR_UNSPECIFIED"));
    assert_eq!(items(&r[2]), &[] as &[Value]);
    assert_eq!(r[3], Value::Nil);
    assert_eq!(r[4], s(""));

    // proto2 with explicit defaults, as pbc-era protos are.
    let legacy = Legacy {
        id: 5,
        name: None,
        hp: None,
        kind: None,
        marks: vec![1, 2],
        active: Some(false),
    };
    let r = call(
        &c,
        vec![
            s("encode"),
            s("codec_legacy.Legacy"),
            table(&[
                ("id", 5.into()),
                ("marks", array(vec![1.into(), 2.into()])),
                ("active", false.into()),
            ]),
        ],
    )
    .await;
    assert_eq!(bytes_of(&r[0]), legacy.encode_to_vec().as_slice());
    let r = call(
        &c,
        vec![
            s("get"),
            s("codec_legacy.Legacy"),
            Value::from(legacy.encode_to_vec()),
            s("name"),
            s("hp"),
            s("kind"),
            s("active"),
            s("id"),
        ],
    )
    .await;
    assert_eq!(
        r,
        vec![s("nobody"), 100.into(), s("RARE"), false.into(), 5.into()]
    );
    assert_eq!(Kind::Rare as i32, 2);

    // encode's callback gets (pointer, length); decode reads a pointer and a length (a
    // skynet message's msg, sz).
    let r = call(
        &c,
        vec![
            s("through_pointer"),
            s("codec.Item"),
            table(&[("id", 77.into()), ("name", s("p")), ("color", s("BLUE"))]),
        ],
    )
    .await;
    assert_eq!(field(&r[0], "id"), Some(&77.into()));
    assert_eq!(field(&r[0], "color"), Some(&s("BLUE")));

    // Errors: Lua errors with readable text on encode; false + text on decode.
    for (name, tbl, want) in [
        (
            "codec.Nope",
            table(&[]),
            "unknown message type 'codec.Nope' (not registered)",
        ),
        (
            "codec.Item",
            table(&[("id", s("one"))]),
            "codec.Item.id: integer expected, got string",
        ),
        (
            "codec.Item",
            table(&[("nope", 1.into())]),
            "codec.Item has no field 'nope'",
        ),
        (
            "codec.Item",
            table(&[("color", s("PINK"))]),
            "'PINK' is not a value of enum codec.Color",
        ),
        (
            "codec.Item",
            table(&[("id", Value::Integer(1 << 40))]),
            "does not fit a 32-bit integer field",
        ),
        (
            "codec.Bag",
            table(&[("items", array(vec![table(&[("id", Value::Real(1.5))])]))]),
            "codec.Item.id: integer expected, got 1.5",
        ),
        (
            "codec.Bag",
            table(&[("tags", s("a"))]),
            "codec.Bag.tags: table (array) expected, got string",
        ),
        (
            "codec.Scalars",
            table(&[("f_bool", 1.into())]),
            "boolean expected, got number",
        ),
    ] {
        let r = call(&c, vec![s("encode_error"), s(name), tbl]).await;
        let text = String::from_utf8_lossy(bytes_of(&r[0])).into_owned();
        assert!(text.contains(want), "{name}: {text:?} should say {want:?}");
    }
    let r = call(
        &c,
        vec![
            s("decode_error"),
            s("codec.Item"),
            Value::from(vec![0x0a_u8, 0x05, b'a']),
        ],
    )
    .await;
    let text = String::from_utf8_lossy(bytes_of(&r[0])).into_owned();
    assert!(text.starts_with("codec.Item: "), "{text}");
    assert_eq!(r[1], r[0], "lasterror() is decode's error");
    let r = call(&c, vec![s("decode_error"), s("codec.Nope"), s("")]).await;
    assert!(
        String::from_utf8_lossy(bytes_of(&r[0])).contains("unknown message type 'codec.Nope'"),
        "{r:?}"
    );

    // A file registered again with other contents is refused: FileDescriptorSet { file:
    // [{ name: "game.proto", package: "other" }] }, written out by hand.
    let mut file = vec![0x0a, 10];
    file.extend_from_slice(b"game.proto");
    file.extend_from_slice(&[0x12, 5]);
    file.extend_from_slice(b"other");
    let mut set = vec![0x0a, file.len() as u8];
    set.extend_from_slice(&file);
    let r = call(&c, vec![s("register_error"), Value::from(set)]).await;
    let text = String::from_utf8_lossy(bytes_of(&r[0])).into_owned();
    assert!(
        text.contains("game.proto is already registered with other contents"),
        "{text}"
    );

    // The rest of pbc's API.
    let r = call(&c, vec![s("api")]).await;
    let a = &r[0];
    assert_eq!(field(a, "check_type"), Some(&true.into()));
    assert_eq!(field(a, "check_field"), Some(&true.into()));
    assert_eq!(field(a, "check_nofield"), Some(&false.into()));
    assert_eq!(field(a, "check_notype"), Some(&false.into()));
    assert_eq!(field(a, "enum_id"), Some(&3.into()));
    assert_eq!(field(a, "default_color"), Some(&s("COLOR_UNSPECIFIED")));
    assert_eq!(field(a, "default_owner"), Some(&7.into()));
    assert_eq!(field(a, "default_best_name"), Some(&s("")));
    assert_eq!(
        field(a, "default_best_color"),
        Some(&s("COLOR_UNSPECIFIED"))
    );
    assert_eq!(field(a, "extract"), Some(&1.into()));
    let err = String::from_utf8_lossy(bytes_of(field(a, "register_error").unwrap())).into_owned();
    assert!(
        err.contains("protobuf.register: not a FileDescriptorSet"),
        "{err}"
    );
}

/// `bee run SKYNET_CONFIG` (a skynet config as it is): its start script has the module
/// too, and prints what prost writes.
#[test]
fn a_skynet_config_run_by_bee_has_the_module() {
    let skynet = skynet_dir();
    let dir = bee_tests::TempDir::new("lua-protobuf-config");
    let d = dir.path();
    let pb = d.join("game.pb");
    std::fs::write(&pb, bee_proto::DESCRIPTOR_SET).unwrap();
    std::fs::write(
        d.join("pbmain.lua"),
        "local skynet = require \"skynet\"\n\
         local protobuf = require \"protobuf\"\n\
         skynet.start(function()\n\
           protobuf.register_file(skynet.getenv \"pb_file\")\n\
           local s = protobuf.encode(\"game.Ping\", { seq = 300, sent_unix_ms = -1 })\n\
           local hex = s:gsub(\".\", function(c) return string.format(\"%02x\", c:byte()) end)\n\
           print(\"ping bytes \" .. hex)\n\
         end)\n",
    )
    .unwrap();
    let s = skynet.display();
    let config = d.join("pb.config");
    std::fs::write(
        &config,
        format!(
            "thread = 2\nharbor = 0\nstart = \"pbmain\"\n\
             cpath = \"{s}/cservice/?.so\"\n\
             lua_path = \"{s}/lualib/?.lua;{s}/lualib/?/init.lua\"\n\
             lua_cpath = \"{s}/luaclib/?.so\"\n\
             luaservice = \"{s}/service/?.lua;{d}/?.lua\"\n\
             lualoader = \"{s}/lualib/loader.lua\"\n\
             pb_file = \"{pb}\"\n",
            d = d.display(),
            pb = pb.display()
        ),
    )
    .unwrap();
    let out_path = d.join("bee.out");
    let mut child = std::process::Command::new(bee_tests::bee_bin())
        .arg("run")
        .arg(&config)
        .env("BEE_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(d.join("bee.err")).unwrap())
        .spawn()
        .expect("run bee");
    let stdout = bee_tests::wait_for("the start script's line", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("ping bytes") {
            Ok(text)
        } else {
            Err(format!(
                "{text}\nstderr:\n{}",
                std::fs::read_to_string(d.join("bee.err")).unwrap_or_default()
            ))
        }
    });
    let _ = child.kill();
    let _ = child.wait();
    let want = bee_proto::game::Ping {
        seq: 300,
        sent_unix_ms: -1,
    }
    .encode_to_vec()
    .iter()
    .map(|b| format!("{b:02x}"))
    .collect::<String>();
    assert!(
        stdout.contains(&format!("ping bytes {want}")),
        "stdout:\n{stdout}"
    );
}
