// bee C++ SDK: the game team's frame, read and written byte for byte.
//
// The frame every game message travels in between services and nodes (the team calls
// it the proxy frame, "v2"; facts in the bee repository's shared spec kkt-frames.md),
// all integers big-endian:
//
//   u16 remote node length, u16 remote service length,
//   u16 source node length, u16 source service length,
//   remote node, remote service, source node, source service (no terminators),
//   u32 sub_type, i64 uid, u16 message name length, message name,
//   i32 roomid, u64 session, protobuf body (the rest of the buffer).
//
// The reader checks every length against the buffer and reports what was missing; it
// never reads outside the buffer and never throws. The writer refuses a string longer
// than 65535 bytes instead of truncating it. The older layouts (inner frame, proxy v1,
// client frame) are here too, in namespace bee::legacy, for code that still meets them.
//
// Header-only, C++17, no dependency beyond the standard library; bodies are bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace bee {

/// A one-way protobuf message.
constexpr uint32_t SUBTYPE_PROTOBUF = 16;
/// A reply to an rpc request.
constexpr uint32_t SUBTYPE_RPC_CLIENT = 17;
/// An rpc request (its session is > 0).
constexpr uint32_t SUBTYPE_RPC_SERVER = 18;
/// ASCII text such as `lua <uid> key=value ...` instead of protobuf.
constexpr uint32_t SUBTYPE_PLAIN_TEXT = 19;
/// Client-facing agent traffic.
constexpr uint32_t SUBTYPE_AGENT = 20;
/// Handled like SUBTYPE_PROTOBUF by the team's C++.
constexpr uint32_t SUBTYPE_SYSTEM = 21;

/// Bytes of a frame that are not one of its five strings or its body.
constexpr size_t FRAME_FIXED_SIZE = 34;
/// The longest string a u16 length can describe.
constexpr size_t FRAME_MAX_STRING = 65535;

/// A frame whose strings and body point into someone else's bytes (a received buffer,
/// or the strings of the caller when writing). Cheap to copy; valid while those bytes are.
struct FrameView {
    std::string_view remote_node;     ///< node the frame goes to
    std::string_view remote_service;  ///< service on that node
    std::string_view source_node;     ///< node of the sender ("" from Lua)
    std::string_view source_service;  ///< service of the sender ("" from Lua)
    uint32_t sub_type = SUBTYPE_PROTOBUF;
    int64_t uid = 0;
    std::string_view name;            ///< protobuf full type name, e.g. "game.LoginReq"
    int32_t roomid = 0;
    uint64_t session = 0;             ///< the caller's own session; 0 = no reply wanted
    std::string_view body;            ///< the serialized protobuf message
};

/// A frame that owns its bytes (keep a request to answer it later).
struct Frame {
    std::string remote_node, remote_service, source_node, source_service;
    uint32_t sub_type = SUBTYPE_PROTOBUF;
    int64_t uid = 0;
    std::string name;
    int32_t roomid = 0;
    uint64_t session = 0;
    std::string body;

    Frame() = default;
    /// Copies every string of `v`.
    explicit Frame(const FrameView &v)
        : remote_node(v.remote_node), remote_service(v.remote_service), source_node(v.source_node),
          source_service(v.source_service), sub_type(v.sub_type), uid(v.uid), name(v.name),
          roomid(v.roomid), session(v.session), body(v.body) {}

    /// A view of this frame (valid while the frame lives and is not changed).
    FrameView view() const {
        FrameView v;
        v.remote_node = remote_node;
        v.remote_service = remote_service;
        v.source_node = source_node;
        v.source_service = source_service;
        v.sub_type = sub_type;
        v.uid = uid;
        v.name = name;
        v.roomid = roomid;
        v.session = session;
        v.body = body;
        return v;
    }
};

/// Why a buffer is not a frame, or why a frame cannot be written.
struct FrameError {
    enum Code : uint8_t {
        none = 0,
        truncated,  ///< a field runs past the end of the buffer
        too_long,   ///< a length does not fit its field (or exceeds the layout's limit)
        trailing,   ///< bytes after a frame whose layout has an explicit length
    };
    Code code = none;
    const char *field = "";  ///< the field concerned, e.g. "message name"
    size_t offset = 0;       ///< where that field starts in the buffer
    size_t need = 0;         ///< bytes the field needs (too_long: its length)
    size_t have = 0;         ///< bytes left at offset (too_long: the limit)

    explicit operator bool() const { return code != none; }

    /// One line for a log, e.g. "frame truncated: message name needs 9 bytes at offset 30, 4 left".
    std::string message() const {
        std::string out;
        switch (code) {
        case none:
            return "no error";
        case truncated:
            out = "frame truncated: ";
            out += field;
            out += " needs " + std::to_string(need) + " bytes at offset " + std::to_string(offset) +
                   ", " + std::to_string(have) + " left";
            return out;
        case too_long:
            out = "frame field too long: ";
            out += field;
            out += " is " + std::to_string(need) + " bytes, the limit is " + std::to_string(have);
            return out;
        case trailing:
            out = "frame followed by " + std::to_string(have) + " unexpected bytes at offset " +
                  std::to_string(offset);
            return out;
        }
        return "unknown frame error";
    }
};

namespace detail {

inline uint16_t get_u16(const unsigned char *p) { return static_cast<uint16_t>((p[0] << 8) | p[1]); }
inline uint32_t get_u32(const unsigned char *p) {
    return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}
inline uint64_t get_u64(const unsigned char *p) {
    return (uint64_t{get_u32(p)} << 32) | uint64_t{get_u32(p + 4)};
}
inline void put_u16(unsigned char *p, uint16_t v) {
    p[0] = static_cast<unsigned char>(v >> 8);
    p[1] = static_cast<unsigned char>(v);
}
inline void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; ++i) p[i] = static_cast<unsigned char>(v >> (24 - 8 * i));
}
inline void put_u64(unsigned char *p, uint64_t v) {
    put_u32(p, static_cast<uint32_t>(v >> 32));
    put_u32(p + 4, static_cast<uint32_t>(v));
}
// Two's complement reinterpretation, without relying on implementation-defined casts.
inline int32_t as_i32(uint32_t v) {
    int32_t r;
    std::memcpy(&r, &v, sizeof r);
    return r;
}
inline int64_t as_i64(uint64_t v) {
    int64_t r;
    std::memcpy(&r, &v, sizeof r);
    return r;
}
inline uint32_t as_u32(int32_t v) {
    uint32_t r;
    std::memcpy(&r, &v, sizeof r);
    return r;
}
inline uint64_t as_u64(int64_t v) {
    uint64_t r;
    std::memcpy(&r, &v, sizeof r);
    return r;
}

// Walks a buffer; every take() checks the bytes exist first and records what was missing.
class Reader {
  public:
    Reader(const void *data, size_t size) : p_(static_cast<const unsigned char *>(data)), size_(size) {}

    // The next n bytes, or nullptr (and *err filled) when fewer are left.
    const unsigned char *take(size_t n, const char *field, FrameError *err) {
        size_t left = size_ - pos_;
        if (n > left) {
            if (err) {
                err->code = FrameError::truncated;
                err->field = field;
                err->offset = pos_;
                err->need = n;
                err->have = left;
            }
            return nullptr;
        }
        const unsigned char *at = p_ + pos_;
        pos_ += n;
        return at;
    }
    bool str(size_t n, const char *field, std::string_view *out, FrameError *err) {
        const unsigned char *at = take(n, field, err);
        if (!at) return false;
        *out = std::string_view(reinterpret_cast<const char *>(at), n);
        return true;
    }
    bool u16(const char *field, uint16_t *out, FrameError *err) {
        const unsigned char *at = take(2, field, err);
        if (!at) return false;
        *out = get_u16(at);
        return true;
    }
    bool u32(const char *field, uint32_t *out, FrameError *err) {
        const unsigned char *at = take(4, field, err);
        if (!at) return false;
        *out = get_u32(at);
        return true;
    }
    bool u64(const char *field, uint64_t *out, FrameError *err) {
        const unsigned char *at = take(8, field, err);
        if (!at) return false;
        *out = get_u64(at);
        return true;
    }
    std::string_view rest() {
        std::string_view r(reinterpret_cast<const char *>(p_ + pos_), size_ - pos_);
        pos_ = size_;
        return r;
    }
    size_t pos() const { return pos_; }
    size_t left() const { return size_ - pos_; }

  private:
    const unsigned char *p_;
    size_t size_;
    size_t pos_ = 0;
};

inline bool fits_u16(std::string_view s, const char *field, FrameError *err) {
    if (s.size() <= FRAME_MAX_STRING) return true;
    if (err) {
        err->code = FrameError::too_long;
        err->field = field;
        err->offset = 0;
        err->need = s.size();
        err->have = FRAME_MAX_STRING;
    }
    return false;
}

inline unsigned char *put_str(unsigned char *p, std::string_view s) {
    if (!s.empty()) std::memcpy(p, s.data(), s.size());
    return p + s.size();
}

}  // namespace detail

/// Reads a frame from `size` bytes at `data`. On success the views point into `data`.
/// On failure returns nothing and, when `err` is given, says which field did not fit.
inline std::optional<FrameView> decode_frame(const void *data, size_t size, FrameError *err = nullptr) {
    detail::Reader r(data, size);
    uint16_t len_rn, len_rs, len_sn, len_ss, len_name;
    FrameView f;
    if (!r.u16("remote node length", &len_rn, err) || !r.u16("remote service length", &len_rs, err) ||
        !r.u16("source node length", &len_sn, err) || !r.u16("source service length", &len_ss, err) ||
        !r.str(len_rn, "remote node", &f.remote_node, err) ||
        !r.str(len_rs, "remote service", &f.remote_service, err) ||
        !r.str(len_sn, "source node", &f.source_node, err) ||
        !r.str(len_ss, "source service", &f.source_service, err) || !r.u32("sub_type", &f.sub_type, err))
        return std::nullopt;
    uint64_t uid;
    uint32_t roomid;
    if (!r.u64("uid", &uid, err) || !r.u16("message name length", &len_name, err) ||
        !r.str(len_name, "message name", &f.name, err) || !r.u32("roomid", &roomid, err) ||
        !r.u64("session", &f.session, err))
        return std::nullopt;
    f.uid = detail::as_i64(uid);
    f.roomid = detail::as_i32(roomid);
    f.body = r.rest();
    return f;
}

/// The number of bytes `f` takes when written, or nothing when a string is too long.
inline std::optional<size_t> frame_size(const FrameView &f, FrameError *err = nullptr) {
    if (!detail::fits_u16(f.remote_node, "remote node", err) ||
        !detail::fits_u16(f.remote_service, "remote service", err) ||
        !detail::fits_u16(f.source_node, "source node", err) ||
        !detail::fits_u16(f.source_service, "source service", err) ||
        !detail::fits_u16(f.name, "message name", err))
        return std::nullopt;
    return FRAME_FIXED_SIZE + f.remote_node.size() + f.remote_service.size() + f.source_node.size() +
           f.source_service.size() + f.name.size() + f.body.size();
}

/// Writes `f` into `out`, which must hold frame_size(f) bytes (checked by the caller
/// through frame_size). Returns the number of bytes written.
inline size_t encode_frame_into(const FrameView &f, void *out) {
    unsigned char *p = static_cast<unsigned char *>(out);
    unsigned char *start = p;
    detail::put_u16(p, static_cast<uint16_t>(f.remote_node.size()));
    detail::put_u16(p + 2, static_cast<uint16_t>(f.remote_service.size()));
    detail::put_u16(p + 4, static_cast<uint16_t>(f.source_node.size()));
    detail::put_u16(p + 6, static_cast<uint16_t>(f.source_service.size()));
    p += 8;
    p = detail::put_str(p, f.remote_node);
    p = detail::put_str(p, f.remote_service);
    p = detail::put_str(p, f.source_node);
    p = detail::put_str(p, f.source_service);
    detail::put_u32(p, f.sub_type);
    detail::put_u64(p + 4, detail::as_u64(f.uid));
    detail::put_u16(p + 12, static_cast<uint16_t>(f.name.size()));
    p += 14;
    p = detail::put_str(p, f.name);
    detail::put_u32(p, detail::as_u32(f.roomid));
    detail::put_u64(p + 4, f.session);
    p += 12;
    p = detail::put_str(p, f.body);
    return static_cast<size_t>(p - start);
}

/// The bytes of `f`, or nothing (and `err` says which string) when a string is longer
/// than 65535 bytes.
inline std::optional<std::string> encode_frame(const FrameView &f, FrameError *err = nullptr) {
    std::optional<size_t> n = frame_size(f, err);
    if (!n) return std::nullopt;
    std::string out(*n, '\0');
    encode_frame_into(f, out.data());
    return out;
}

/// The frame a C++ service answers `request` with: remote and source name pairs swapped,
/// sub_type 17, the request's uid and session, roomid 0.
inline FrameView native_reply(const FrameView &request, std::string_view name, std::string_view body) {
    FrameView r;
    r.remote_node = request.source_node;
    r.remote_service = request.source_service;
    r.source_node = request.remote_node;
    r.source_service = request.remote_service;
    r.sub_type = SUBTYPE_RPC_CLIENT;
    r.uid = request.uid;
    r.name = name;
    r.roomid = 0;
    r.session = request.session;
    r.body = body;
    return r;
}

/// The frame a Lua service answers `request` with: every name empty, sub_type 17, the
/// request's uid, roomid and session.
inline FrameView lua_reply(const FrameView &request, std::string_view name, std::string_view body) {
    FrameView r;
    r.sub_type = SUBTYPE_RPC_CLIENT;
    r.uid = request.uid;
    r.name = name;
    r.roomid = request.roomid;
    r.session = request.session;
    r.body = body;
    return r;
}

namespace legacy {

/// The old inner frame: u32 sub_type, i64 uid, u16 name length, name, i32 roomid, body.
struct InnerFrameView {
    uint32_t sub_type = SUBTYPE_PROTOBUF;
    int64_t uid = 0;
    std::string_view name;
    int32_t roomid = 0;
    std::string_view body;
};

/// Reads an old inner frame (views point into `data`).
inline std::optional<InnerFrameView> decode_inner(const void *data, size_t size, FrameError *err = nullptr) {
    detail::Reader r(data, size);
    InnerFrameView f;
    uint64_t uid;
    uint16_t len;
    uint32_t roomid;
    if (!r.u32("sub_type", &f.sub_type, err) || !r.u64("uid", &uid, err) ||
        !r.u16("message name length", &len, err) || !r.str(len, "message name", &f.name, err) ||
        !r.u32("roomid", &roomid, err))
        return std::nullopt;
    f.uid = detail::as_i64(uid);
    f.roomid = detail::as_i32(roomid);
    f.body = r.rest();
    return f;
}

/// Writes an old inner frame; refuses a name over 65535 bytes.
inline std::optional<std::string> encode_inner(const InnerFrameView &f, FrameError *err = nullptr) {
    if (!detail::fits_u16(f.name, "message name", err)) return std::nullopt;
    std::string out(18 + f.name.size() + f.body.size(), '\0');
    unsigned char *p = reinterpret_cast<unsigned char *>(out.data());
    detail::put_u32(p, f.sub_type);
    detail::put_u64(p + 4, detail::as_u64(f.uid));
    detail::put_u16(p + 12, static_cast<uint16_t>(f.name.size()));
    p = detail::put_str(p + 14, f.name);
    detail::put_u32(p, detail::as_u32(f.roomid));
    detail::put_str(p + 4, f.body);
    return out;
}

/// Proxy "v1": two lengths, remote node and service, then an inner frame (kept as bytes).
struct ProxyV1View {
    std::string_view remote_node;
    std::string_view remote_service;
    std::string_view inner;  ///< an old inner frame, see decode_inner
};

/// Reads a proxy v1 header (views point into `data`).
inline std::optional<ProxyV1View> decode_proxy_v1(const void *data, size_t size, FrameError *err = nullptr) {
    detail::Reader r(data, size);
    ProxyV1View f;
    uint16_t ln, ls;
    if (!r.u16("remote node length", &ln, err) || !r.u16("remote service length", &ls, err) ||
        !r.str(ln, "remote node", &f.remote_node, err) || !r.str(ls, "remote service", &f.remote_service, err))
        return std::nullopt;
    f.inner = r.rest();
    return f;
}

/// Writes a proxy v1 header followed by `inner`; refuses names over 65535 bytes.
inline std::optional<std::string> encode_proxy_v1(const ProxyV1View &f, FrameError *err = nullptr) {
    if (!detail::fits_u16(f.remote_node, "remote node", err) ||
        !detail::fits_u16(f.remote_service, "remote service", err))
        return std::nullopt;
    std::string out(4 + f.remote_node.size() + f.remote_service.size() + f.inner.size(), '\0');
    unsigned char *p = reinterpret_cast<unsigned char *>(out.data());
    detail::put_u16(p, static_cast<uint16_t>(f.remote_node.size()));
    detail::put_u16(p + 2, static_cast<uint16_t>(f.remote_service.size()));
    p = detail::put_str(p + 4, f.remote_node);
    p = detail::put_str(p, f.remote_service);
    detail::put_str(p, f.inner);
    return out;
}

/// The gate's client frames refuse a length of 16 MiB or more.
constexpr size_t CLIENT_FRAME_LIMIT = 16u * 1024u * 1024u;

/// Client frame (gate <-> client): u32 length of the rest, u16 name length, name, i32 roomid, body.
struct ClientFrameView {
    std::string_view name;
    int32_t roomid = 0;
    std::string_view body;
};

/// Reads exactly one client frame filling the buffer (views point into `data`).
inline std::optional<ClientFrameView> decode_client(const void *data, size_t size, FrameError *err = nullptr) {
    detail::Reader r(data, size);
    uint32_t total;
    if (!r.u32("client frame length", &total, err)) return std::nullopt;
    if (total >= CLIENT_FRAME_LIMIT) {
        if (err) *err = FrameError{FrameError::too_long, "client frame length", 0, total, CLIENT_FRAME_LIMIT - 1};
        return std::nullopt;
    }
    const unsigned char *body_start = r.take(total, "client frame", err);
    if (!body_start) return std::nullopt;
    if (r.left() != 0) {
        if (err) *err = FrameError{FrameError::trailing, "client frame", r.pos(), 0, r.left()};
        return std::nullopt;
    }
    detail::Reader in(body_start, total);
    ClientFrameView f;
    uint16_t len;
    uint32_t roomid;
    if (!in.u16("message name length", &len, err) || !in.str(len, "message name", &f.name, err) ||
        !in.u32("roomid", &roomid, err)) {
        if (err) err->offset += 4;
        return std::nullopt;
    }
    f.roomid = detail::as_i32(roomid);
    f.body = in.rest();
    return f;
}

/// Writes a client frame; refuses a name over 65535 bytes or a total of 16 MiB or more.
inline std::optional<std::string> encode_client(const ClientFrameView &f, FrameError *err = nullptr) {
    if (!detail::fits_u16(f.name, "message name", err)) return std::nullopt;
    size_t total = 6 + f.name.size() + f.body.size();
    if (total >= CLIENT_FRAME_LIMIT) {
        if (err) *err = FrameError{FrameError::too_long, "client frame length", 0, total, CLIENT_FRAME_LIMIT - 1};
        return std::nullopt;
    }
    std::string out(4 + total, '\0');
    unsigned char *p = reinterpret_cast<unsigned char *>(out.data());
    detail::put_u32(p, static_cast<uint32_t>(total));
    detail::put_u16(p + 4, static_cast<uint16_t>(f.name.size()));
    p = detail::put_str(p + 6, f.name);
    detail::put_u32(p, detail::as_u32(f.roomid));
    detail::put_str(p + 4, f.body);
    return out;
}

}  // namespace legacy
}  // namespace bee
