// Checks bee/frame.hpp against every case of the shared frame vectors (kkt.json, turned
// into kkt_vectors.hpp by gen_vectors.py), then against random frames: 10,000 written and
// read back, 10,000 truncated or garbled buffers that must be rejected, and 10,000
// buffers of random bytes that must either be rejected or read back to the same bytes.
// Built with ASan/UBSan by cservices/Makefile (target test). Prints "N passed, M failed"
// last and exits non-zero when anything failed.
//
// The random seed is fixed (change it with BEE_FRAME_TEST_SEED=<number>) and printed.

#include <bee/frame.hpp>

#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "kkt_vectors.hpp"

namespace {

int passed = 0;
int failed = 0;

void check(bool ok, const std::string &what) {
    if (ok) {
        ++passed;
    } else {
        ++failed;
        std::printf("FAIL: %s\n", what.c_str());
    }
}

std::string hex(std::string_view b) {
    static const char *digits = "0123456789abcdef";
    std::string out;
    for (unsigned char c : b) {
        out += digits[c >> 4];
        out += digits[c & 15];
    }
    return out;
}

bool same(const bee::FrameView &a, const bee::FrameView &b) {
    return a.remote_node == b.remote_node && a.remote_service == b.remote_service &&
           a.source_node == b.source_node && a.source_service == b.source_service &&
           a.sub_type == b.sub_type && a.uid == b.uid && a.name == b.name && a.roomid == b.roomid &&
           a.session == b.session && a.body == b.body;
}

bee::FrameView view_of(const vectors::V2 &v) {
    bee::FrameView f;
    f.remote_node = v.remote_node;
    f.remote_service = v.remote_service;
    f.source_node = v.source_node;
    f.source_service = v.source_service;
    f.sub_type = v.sub_type;
    f.uid = v.uid;
    f.name = v.name;
    f.roomid = v.roomid;
    f.session = v.session;
    f.body = v.body;
    return f;
}

const vectors::V2 *find_v2(std::string_view prefix) {
    for (const auto &v : vectors::v2)
        if (v.case_name.substr(0, prefix.size()) == prefix) return &v;
    return nullptr;
}

void vector_cases() {
    for (const auto &v : vectors::v2) {
        std::string name(v.case_name);
        bee::FrameView want = view_of(v);
        std::optional<std::string> bytes = bee::encode_frame(want);
        check(bytes && *bytes == v.bytes, "v2 write: " + name + (bytes ? " got " + hex(*bytes) : " refused"));
        bee::FrameError err;
        std::optional<bee::FrameView> got = bee::decode_frame(v.bytes.data(), v.bytes.size(), &err);
        check(got && same(*got, want), "v2 read: " + name + (got ? "" : " " + err.message()));
    }
    for (const auto &v : vectors::f4) {
        std::string name(v.case_name);
        bee::legacy::InnerFrameView want{v.sub_type, v.uid, v.name, v.roomid, v.body};
        auto bytes = bee::legacy::encode_inner(want);
        check(bytes && *bytes == v.bytes, "inner write: " + name);
        auto got = bee::legacy::decode_inner(v.bytes.data(), v.bytes.size());
        check(got && got->sub_type == v.sub_type && got->uid == v.uid && got->name == v.name &&
                  got->roomid == v.roomid && got->body == v.body,
              "inner read: " + name);
    }
    for (const auto &v : vectors::v1) {
        std::string name(v.case_name);
        bee::legacy::ProxyV1View want{v.remote_node, v.remote_service, v.inner};
        auto bytes = bee::legacy::encode_proxy_v1(want);
        check(bytes && *bytes == v.bytes, "proxy v1 write: " + name);
        auto got = bee::legacy::decode_proxy_v1(v.bytes.data(), v.bytes.size());
        check(got && got->remote_node == v.remote_node && got->remote_service == v.remote_service &&
                  got->inner == v.inner,
              "proxy v1 read: " + name);
        check(got && bee::legacy::decode_inner(got->inner.data(), got->inner.size()).has_value(),
              "proxy v1 carries an inner frame: " + name);
    }
    for (const auto &v : vectors::client) {
        std::string name(v.case_name);
        bee::legacy::ClientFrameView want{v.name, v.roomid, v.body};
        auto bytes = bee::legacy::encode_client(want);
        check(bytes && *bytes == v.bytes, "client write: " + name);
        auto got = bee::legacy::decode_client(v.bytes.data(), v.bytes.size());
        check(got && got->name == v.name && got->roomid == v.roomid && got->body == v.body,
              "client read: " + name);
        std::string longer(v.bytes);
        longer += '\0';
        check(!bee::legacy::decode_client(longer.data(), longer.size()), "client trailing byte refused: " + name);
    }
    // skynet.pack cases: the SDK does not speak skynet.pack, but the v2 frame each carries
    // must read and write back unchanged, and be the tail of the packed bytes.
    for (const auto &v : vectors::seri) {
        std::string name(v.case_name);
        auto got = bee::decode_frame(v.frame.data(), v.frame.size());
        auto again = got ? bee::encode_frame(*got) : std::nullopt;
        check(again && *again == v.frame, "frame inside skynet.pack: " + name);
        check(v.bytes.size() > v.frame.size() && v.bytes.substr(v.bytes.size() - v.frame.size()) == v.frame,
              "skynet.pack ends with its frame: " + name);
    }
    for (const auto &v : vectors::invalid) {
        std::string name(v.case_name);
        bee::FrameError err;
        auto got = bee::decode_frame(v.bytes.data(), v.bytes.size(), &err);
        check(!got && err.code == bee::FrameError::truncated && !err.message().empty(), "invalid refused: " + name);
    }

    // Reply helpers, against the two reply cases of the vectors.
    const vectors::V2 *request = find_v2("rpc request from C++");
    const vectors::V2 *cpp_reply = find_v2("reply from C++");
    const vectors::V2 *lua_reply = find_v2("reply from Lua");
    check(request && cpp_reply && lua_reply, "vectors hold the rpc request and both replies");
    if (request && cpp_reply && lua_reply) {
        bee::FrameView req = view_of(*request);
        auto r1 = bee::encode_frame(bee::native_reply(req, cpp_reply->name, cpp_reply->body));
        check(r1 && *r1 == cpp_reply->bytes, "native_reply matches the C++ reply vector");
        auto r2 = bee::encode_frame(bee::lua_reply(req, lua_reply->name, lua_reply->body));
        check(r2 && *r2 == lua_reply->bytes, "lua_reply matches the Lua reply vector");
    }
}

void limits() {
    std::string max(bee::FRAME_MAX_STRING, 'x');
    std::string over(bee::FRAME_MAX_STRING + 1, 'x');
    const char *fields[] = {"remote node", "remote service", "source node", "source service", "message name"};
    for (int i = 0; i < 5; ++i) {
        bee::FrameView f;
        std::string_view *slot[] = {&f.remote_node, &f.remote_service, &f.source_node, &f.source_service, &f.name};
        *slot[i] = max;
        auto ok = bee::encode_frame(f);
        check(ok && ok->size() == bee::FRAME_FIXED_SIZE + max.size(), std::string("65535-byte ") + fields[i] + " written");
        if (ok) {
            auto back = bee::decode_frame(ok->data(), ok->size());
            check(back && same(*back, f), std::string("65535-byte ") + fields[i] + " read back");
        }
        *slot[i] = over;
        bee::FrameError err;
        auto refused = bee::encode_frame(f, &err);
        check(!refused && err.code == bee::FrameError::too_long && std::string(err.field) == fields[i],
              std::string("65536-byte ") + fields[i] + " refused: " + err.message());
    }
    bee::legacy::ClientFrameView big{"n", 0, std::string_view(over.data(), 0)};
    std::string huge(bee::legacy::CLIENT_FRAME_LIMIT, 'b');
    big.body = huge;
    check(!bee::legacy::encode_client(big), "client frame of 16 MiB refused");
    std::string header("\x01\x00\x00\x00", 4);  // claims 16 MiB
    check(!bee::legacy::decode_client(header.data(), header.size()), "client length of 16 MiB refused");
}

std::string random_bytes(std::mt19937_64 &rng, size_t n) {
    std::string s(n, '\0');
    for (auto &c : s) c = static_cast<char>(rng() & 0xff);
    return s;
}

size_t random_len(std::mt19937_64 &rng) {
    switch (rng() % 8) {
    case 0:
        return 0;
    case 1:
        return static_cast<size_t>(rng() % 2000);
    default:
        return static_cast<size_t>(rng() % 40);
    }
}

struct Owned {
    std::string rn, rs, sn, ss, name, body;
    bee::FrameView view;
};

Owned random_frame(std::mt19937_64 &rng) {
    Owned o;
    o.rn = random_bytes(rng, random_len(rng));
    o.rs = random_bytes(rng, random_len(rng));
    o.sn = random_bytes(rng, random_len(rng));
    o.ss = random_bytes(rng, random_len(rng));
    o.name = random_bytes(rng, random_len(rng));
    o.body = random_bytes(rng, random_len(rng));
    o.view.remote_node = o.rn;
    o.view.remote_service = o.rs;
    o.view.source_node = o.sn;
    o.view.source_service = o.ss;
    o.view.sub_type = static_cast<uint32_t>(rng());
    o.view.uid = static_cast<int64_t>(rng());
    o.view.name = o.name;
    o.view.roomid = static_cast<int32_t>(rng());
    o.view.session = rng();
    o.view.body = o.body;
    return o;
}

void random_cases(uint64_t seed) {
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 10000; ++i) {
        Owned o = random_frame(rng);
        auto bytes = bee::encode_frame(o.view);
        auto back = bytes ? bee::decode_frame(bytes->data(), bytes->size()) : std::nullopt;
        check(back && same(*back, o.view), "random frame " + std::to_string(i) + " round-trips");
    }
    for (int i = 0; i < 10000; ++i) {
        Owned o = random_frame(rng);
        std::string bytes = *bee::encode_frame(o.view);
        size_t header = bytes.size() - o.body.size();  // everything before the body
        std::string bad;
        std::string how;
        switch (i % 3) {
        case 0:  // cut anywhere before the body ends the header
            bad = bytes.substr(0, static_cast<size_t>(rng() % header));
            how = "cut to " + std::to_string(bad.size()) + " of " + std::to_string(header);
            break;
        case 1: {  // one length field grown past the end of the buffer
            bad = bytes;
            size_t which = static_cast<size_t>(rng() % 5);
            size_t at = which < 4 ? 2 * which : 8 + o.rn.size() + o.rs.size() + o.sn.size() + o.ss.size() + 12;
            size_t old = (static_cast<unsigned char>(bad[at]) << 8) | static_cast<unsigned char>(bad[at + 1]);
            size_t room = bad.size() - header;  // bytes of body a longer field could swallow
            if (old + room + 1 > bee::FRAME_MAX_STRING) {  // cannot overflow: cut instead
                bad.resize(header - 1);
                how = "cut by one";
                break;
            }
            size_t grown = old + room + 1 + static_cast<size_t>(rng() % (bee::FRAME_MAX_STRING - old - room));
            bad[at] = static_cast<char>(grown >> 8);
            bad[at + 1] = static_cast<char>(grown & 0xff);
            how = "length field " + std::to_string(which) + " grown to " + std::to_string(grown);
            break;
        }
        default:  // random bytes shorter than the fixed part
            bad = random_bytes(rng, static_cast<size_t>(rng() % bee::FRAME_FIXED_SIZE));
            how = "random " + std::to_string(bad.size()) + " bytes";
            break;
        }
        bee::FrameError err;
        auto got = bee::decode_frame(bad.data(), bad.size(), &err);
        check(!got && err.code == bee::FrameError::truncated, "garbled buffer " + std::to_string(i) + " refused (" + how + ")");
    }
    // Random bytes: reading must never go outside the buffer (ASan watches), and a buffer
    // that reads as a frame must write back to exactly the same bytes.
    for (int i = 0; i < 10000; ++i) {
        std::string buf = random_bytes(rng, static_cast<size_t>(rng() % 200));
        if (buf.size() >= 8 && rng() % 2) {  // small lengths, so some of them read as frames
            for (int k = 0; k < 4; ++k) {
                buf[2 * k] = 0;
                buf[2 * k + 1] = static_cast<char>(rng() % 12);
            }
        }
        auto got = bee::decode_frame(buf.data(), buf.size());
        auto again = got ? bee::encode_frame(*got) : std::nullopt;
        check(!got || (again && *again == buf), "random buffer " + std::to_string(i) + " rejected or exact");
    }
}

}  // namespace

int main() {
    uint64_t seed = 0x6265652d6b6b74ULL;
    if (const char *s = std::getenv("BEE_FRAME_TEST_SEED")) seed = std::strtoull(s, nullptr, 0);
    std::printf("frame_test: seed %" PRIu64 "\n", seed);
    vector_cases();
    std::printf("vectors: %d passed, %d failed\n", passed, failed);
    limits();
    random_cases(seed);
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
