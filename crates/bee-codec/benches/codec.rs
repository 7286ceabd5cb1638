//! Codec micro-benchmarks: skynet.pack `pack`/`unpack` of typical call arguments, and the
//! cluster request path (encode; frame split + decode + reassembly) and response encoding
//! for small, medium and multi-part payloads, and the game team's frame (`kkt`: encode,
//! decode, header peek). Throughput is in bytes of packed message (seri), payload
//! (cluster) or whole frame (kkt).
//!
//! Run: `cargo bench -p bee-codec --bench codec -- --warm-up-time 1 --measurement-time 3`.

use std::hint::black_box;

use bee_codec::cluster::{
    decode_request_frame, decode_response_frame, encode_request, encode_response, Address, Limits,
    RequestAssembler, ResponseAssembler,
};
use bee_codec::frame::FrameDecoder;
use bee_codec::kkt::{self, KktFrame, KktHeader};
use bee_codec::seri::{pack, unpack};
use bee_codec::{Table, Value};
use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};

/// Deterministic, non-uniform filler bytes.
fn filler(len: usize) -> Vec<u8> {
    let mut x: u32 = 0x9E37_79B9;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A table of 20 entries as a game call might carry: 10 array items, 10 named fields
/// (one of them a nested table).
fn nested_table() -> Value {
    let mut t = Table::new();
    for i in 0..10i64 {
        if i % 2 == 0 {
            t.push(Value::from(i * 1000));
        } else {
            t.push(Value::from(format!("item-{i}")));
        }
    }
    t.insert("uid".into(), 10_001i64.into());
    t.insert("name".into(), "player-one".into());
    t.insert("level".into(), 42i64.into());
    t.insert("gold".into(), 1_234_567i64.into());
    t.insert("ratio".into(), 0.75f64.into());
    t.insert("online".into(), true.into());
    t.insert("guild".into(), "the-bees".into());
    t.insert("ts".into(), 1_700_000_000_123i64.into());
    t.insert("tag".into(), Value::from(&b"\x00\x01\x02\x03"[..]));
    let mut pos = Table::new();
    pos.insert("x".into(), 12.5f64.into());
    pos.insert("y".into(), (-3i64).into());
    t.insert("pos".into(), pos.into());
    Value::Table(t)
}

fn seri(c: &mut Criterion) {
    let cases: Vec<(&str, Vec<Value>)> = vec![
        ("lua_ping", vec!["lua".into(), "ping".into()]),
        ("str_16B", vec![Value::from(filler(16))]),
        ("str_64B", vec![Value::from(filler(64))]),
        ("table_20", vec![nested_table()]),
        ("str_1MiB", vec![Value::from(filler(1 << 20))]),
    ];
    let mut group = c.benchmark_group("seri");
    for (name, values) in &cases {
        let packed = pack(values).expect("bench values pack");
        group.throughput(Throughput::Bytes(packed.len() as u64));
        group.bench_with_input(BenchmarkId::new("pack", name), values, |b, v| {
            b.iter(|| pack(black_box(v)).expect("pack"))
        });
        group.bench_with_input(BenchmarkId::new("unpack", name), &packed, |b, p| {
            b.iter(|| unpack(black_box(p)).expect("unpack"))
        });
    }
    group.finish();
}

const SIZES: [(&str, usize); 3] = [("16B", 16), ("4KiB", 4 << 10), ("1MiB", 1 << 20)];

fn cluster_request(c: &mut Criterion) {
    let address = Address::Name(Bytes::from_static(b"@echo"));
    let mut group = c.benchmark_group("cluster_request");
    for (name, len) in SIZES {
        let payload = filler(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut out = BytesMut::new();
            b.iter(|| {
                out.clear();
                encode_request(&mut out, &address, 7, black_box(&payload)).expect("encode");
                black_box(out.len())
            })
        });
        let mut stream = BytesMut::new();
        encode_request(&mut stream, &address, 7, &payload).expect("encode");
        let stream = stream.freeze();
        // The receive buffer is filled outside the timing (as a socket read would fill it).
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut buf| {
                    let mut decoder = FrameDecoder::default();
                    let mut assembler = RequestAssembler::new(Limits::default());
                    let mut done = None;
                    while let Some(body) = decoder.decode(&mut buf).expect("frame") {
                        let frame = decode_request_frame(body).expect("request frame");
                        if let Some(req) = assembler.feed(frame).expect("assembly") {
                            done = Some(req);
                        }
                    }
                    let req = done.expect("a whole request");
                    assert_eq!(req.payload.len(), len);
                    req
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn cluster_response(c: &mut Criterion) {
    let mut group = c.benchmark_group("cluster_response");
    for (name, len) in SIZES {
        let payload = filler(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut out = BytesMut::new();
            b.iter(|| {
                out.clear();
                encode_response(&mut out, 7, Ok(black_box(&payload))).expect("encode");
                black_box(out.len())
            })
        });
        let mut stream = BytesMut::new();
        encode_response(&mut stream, 7, Ok(&payload)).expect("encode");
        let stream = stream.freeze();
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter_batched(
                || BytesMut::from(&stream[..]),
                |mut buf| {
                    let mut decoder = FrameDecoder::default();
                    let mut assembler = ResponseAssembler::new(Limits::default());
                    let mut done = None;
                    while let Some(body) = decoder.decode(&mut buf).expect("frame") {
                        let frame = decode_response_frame(body).expect("response frame");
                        if let Some(resp) = assembler.feed(frame).expect("assembly") {
                            done = Some(resp);
                        }
                    }
                    let resp = done.expect("a whole response");
                    assert_eq!(resp.result.as_ref().map(Bytes::len), Ok(len));
                    resp
                },
                BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

fn kkt_frame(c: &mut Criterion) {
    let mut group = c.benchmark_group("kkt");
    for (name, len) in [("16B", 16), ("4KiB", 4 << 10)] {
        let frame = KktFrame::new(
            kkt::SUBTYPE_RPC_SERVER,
            10_076_447,
            "game.LoginReq",
            filler(len),
        )
        .to("activity_master_5", "activity_master")
        .from("shop_master_4", "shop_master")
        .session(7);
        let bytes = frame.encode().expect("encode");
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        group.bench_function(BenchmarkId::new("encode", name), |b| {
            let mut out = BytesMut::new();
            b.iter(|| {
                out.clear();
                black_box(&frame).encode_into(&mut out).expect("encode");
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| KktFrame::decode(black_box(&bytes)).expect("decode"))
        });
        group.bench_function(BenchmarkId::new("peek", name), |b| {
            b.iter(|| KktHeader::peek(black_box(&bytes)).expect("peek").uid)
        });
    }
    group.finish();
}

// Written out instead of `criterion_group!`, whose generated `pub fn` has no doc comment.
fn main() {
    let mut c = Criterion::default().configure_from_args();
    seri(&mut c);
    cluster_request(&mut c);
    cluster_response(&mut c);
    kkt_frame(&mut c);
    c.final_summary();
}
