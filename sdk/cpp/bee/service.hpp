// bee C++ SDK: a native service on skynet's C API, speaking the game team's frames.
//
// A module derives from bee::Service, overrides on_frame / on_rpc, and exports the skynet
// module functions with BEE_SKYNET_MODULE(name, Class). The service then:
//   - send()s frames to a service on any node through the local CServiceProxy service
//     (PTYPE_TEXT, skynet session 0: the proxy pushes the frame as "text");
//   - rpc_call()s: a session from skynet_context_newsession, the callback kept under it,
//     a timer from skynet_timeout; the callback runs exactly once, with the reply frame
//     or with an error when the timer fires first;
//   - reply()s to an rpc request (names swapped, sub_type 17, skynet session 1, so the
//     proxy pushes it as "rpc_response").
// Malformed messages are logged with skynet_error and dropped; nothing here throws into
// the host. Only the skynet C API is used (include/), so the same module loads into a
// bee node or a skynet node.
//
// Init parameter (space-separated key=value; unknown keys are kept for the subclass):
//   node=NAME           this node's name, the source node of every frame
//                       (default: skynet_getenv("node"), else "")
//   service=NAME        the service name frames come from (default: the class's choice)
//   proxy=NAME          the proxy service, looked up as ".NAME" (default CServiceProxy);
//                       a number or ":hex" names a handle directly
//   a first word of decimal digits is the proxy's handle too: the team's launch
//   parameter (`skynet.launch("shop", string.format("%d", proxy))`, or
//   `args = "{handle:.CServiceProxy} ..."` in a bee node config)
//   rpc_timeout_ms=N    timeout of rpc_call when the caller gives none (default 5000)
//
// Header-only C++17; needs no protobuf (bodies are bytes). One callback at a time per
// service (the host's rule), so no locking here.
#pragma once

extern "C" {
#include "skynet.h"
#include "skynet_env.h"
#include "skynet_server.h"
#include "skynet_timer.h"
}

#include <bee/frame.hpp>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <functional>
#include <map>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>

namespace bee {

/// What an rpc_call's callback receives: the reply frame, or why there is none.
struct RpcResult {
    const FrameView *reply = nullptr;  ///< the sub_type 17 frame; nullptr on failure
    std::string_view error;            ///< empty on success, else e.g. "... timed out after 2000 ms"
    bool ok() const { return reply != nullptr; }
};

/// Called exactly once per accepted rpc_call.
using RpcCallback = std::function<void(const RpcResult &)>;

/// Base class of a native service. See the file comment for what it does.
class Service {
  public:
    /// `default_service` names this service in the frames it sends, unless the init
    /// parameter says service=....
    explicit Service(std::string default_service) : service_(std::move(default_service)) {}
    virtual ~Service() = default;
    Service(const Service &) = delete;
    Service &operator=(const Service &) = delete;

    /// NAME_init: reads the parameter, calls on_init, installs the callback. 0 = ok.
    int init(skynet_context *ctx, const char *parm) {
        ctx_ = ctx;
        handle_ = skynet_context_handle(ctx);
        parse_args(parm ? parm : "");
        if (const std::string *v = find_arg("node")) {
            node_ = *v;
        } else if (const char *env = skynet_getenv("node")) {
            node_ = env;
        }
        if (const std::string *v = find_arg("service")) service_ = *v;
        if (const std::string *v = find_arg("proxy")) {
            proxy_name_ = *v;
        } else if (std::string first = first_word(parm ? parm : "");
                   !first.empty() && first.find_first_not_of("0123456789") == std::string::npos) {
            proxy_name_ = first;
        }
        if (const std::string *v = find_arg("rpc_timeout_ms")) {
            char *end = nullptr;
            unsigned long ms = std::strtoul(v->c_str(), &end, 10);
            if (v->empty() || *end != '\0' || ms == 0 || ms > 86400000UL) {
                log("%s: rpc_timeout_ms=%s is not a number of milliseconds in 1..86400000", service_.c_str(),
                    v->c_str());
                return 1;
            }
            default_timeout_ms_ = static_cast<uint32_t>(ms);
        }
        if (!on_init()) return 1;
        skynet_callback(ctx, this, &Service::callback);
        return 0;
    }

    /// NAME_release: pending rpc callbacks are dropped uncalled (the service is going
    /// away; running user code now could touch a half-destroyed object) and counted in a log line.
    void shutdown() {
        if (!pending_.empty() && ctx_) {
            log("%s: released with %zu rpc call(s) unanswered", service_.c_str(), pending_.size());
        }
        pending_.clear();
        timers_.clear();
    }

    /// NAME_signal: the default ignores it.
    virtual void on_signal(int /*signal*/) {}

    // ---- sending ------------------------------------------------------------------

    /// Pushes a one-way frame to `service` on `node` through CServiceProxy (session 0).
    bool send(std::string_view node, std::string_view service, uint32_t sub_type, int64_t uid,
              std::string_view msg_name, std::string_view body, int32_t roomid = 0) {
        FrameView f = outgoing(node, service, sub_type, uid, msg_name, body);
        f.roomid = roomid;
        return push(f, 0);
    }

    /// Calls `service` on `node` with an rpc request (sub_type 18). Returns the session
    /// (> 0) when the request left; then `cb` runs exactly once, with the reply or an
    /// error when no reply came within `timeout_ms` (0 = the service's default). Returns 0
    /// when the request could not leave (logged); `cb` is then never called.
    int rpc_call(std::string_view node, std::string_view service, int64_t uid, std::string_view msg_name,
                 std::string_view body, RpcCallback cb, uint32_t timeout_ms = 0) {
        if (!cb) {
            log("%s: rpc_call to %.*s/%.*s without a callback refused", service_.c_str(), int(node.size()),
                node.data(), int(service.size()), service.data());
            return 0;
        }
        if (timeout_ms == 0) timeout_ms = default_timeout_ms_;
        int session = skynet_context_newsession(ctx_);
        int timer = start_timer(timeout_ms);
        if (timer <= 0) return 0;
        FrameView f = outgoing(node, service, SUBTYPE_RPC_SERVER, uid, msg_name, body);
        f.session = static_cast<uint64_t>(session);
        if (!push(f, 0)) {
            timers_.erase(timer);  // nothing waits on it any more; its firing is ignored
            return 0;
        }
        Pending p;
        p.cb = std::move(cb);
        p.target.reserve(node.size() + service.size() + msg_name.size() + 8);
        p.target.append(msg_name).append(" to ").append(node).append("/").append(service);
        p.timeout_ms = timeout_ms;
        pending_.emplace(static_cast<uint64_t>(session), std::move(p));
        timers_[timer] = Timer{static_cast<uint64_t>(session), nullptr};
        return session;
    }

    /// Answers the rpc request `request` (which may have been kept as a Frame and
    /// answered later): names swapped, sub_type 17, the request's uid and session,
    /// roomid 0, pushed with skynet session 1 so the proxy sends it as "rpc_response".
    bool reply(const FrameView &request, std::string_view msg_name, std::string_view body) {
        if (request.session == 0) {
            log("%s: no reply to %.*s from %.*s/%.*s: its session is 0 (no reply wanted)", service_.c_str(),
                int(request.name.size()), request.name.data(), int(request.source_node.size()),
                request.source_node.data(), int(request.source_service.size()), request.source_service.data());
            return false;
        }
        if (request.source_node.empty() || request.source_service.empty()) {
            log("%s: no reply to %.*s (session %llu): the request names no source node and service",
                service_.c_str(), int(request.name.size()), request.name.data(),
                static_cast<unsigned long long>(request.session));
            return false;
        }
        return push(native_reply(request, msg_name, body), 1);
    }

    /// Runs `fn` once after `ms` milliseconds (rounded up to skynet's 10 ms ticks).
    /// Returns the timer's session, or 0 when the host refused the timer (logged).
    int after(uint32_t ms, std::function<void()> fn) {
        int timer = start_timer(ms);
        if (timer > 0) timers_[timer] = Timer{0, std::move(fn)};
        return timer > 0 ? timer : 0;
    }

    /// skynet_error with printf formatting (one line in the node's log).
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    void log(const char *fmt, ...) const {
        char buf[1024];
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        skynet_error(ctx_, "%s", buf);
    }

    // ---- accessors ----------------------------------------------------------------

    skynet_context *context() const { return ctx_; }
    uint32_t handle() const { return handle_; }
    const std::string &node() const { return node_; }
    const std::string &service() const { return service_; }
    /// rpc calls still waiting for their reply or timeout.
    size_t pending_rpcs() const { return pending_.size(); }
    /// The value of key=value in the init parameter, or nullptr.
    const std::string *find_arg(const std::string &key) const {
        auto it = args_.find(key);
        return it == args_.end() ? nullptr : &it->second;
    }
    /// The skynet source and session of the message being handled now.
    uint32_t current_source() const { return cur_source_; }
    int current_session() const { return cur_session_; }

  protected:
    /// After the parameter is read; return false to refuse to start (NAME_init fails).
    virtual bool on_init() { return true; }
    /// A frame that is not an rpc request or reply (sub_type 16, 19, 20, 21, ...).
    virtual void on_frame(const FrameView &frame) {
        log("%s: frame %.*s (sub_type %u) not handled", service_.c_str(), int(frame.name.size()), frame.name.data(),
            frame.sub_type);
    }
    /// An rpc request (sub_type 18, session > 0): answer with reply(), now or later.
    virtual void on_rpc(const FrameView &frame) {
        log("%s: rpc %.*s not handled; the caller will time out", service_.c_str(), int(frame.name.size()),
            frame.name.data());
    }
    /// Any other skynet message type. The default logs and drops it.
    virtual void on_message(int type, int session, uint32_t source, const void * /*msg*/, size_t sz) {
        log("%s: message of type %d (session %d, %zu bytes) from :%08x not handled", service_.c_str(), type, session,
            sz, source);
    }

  private:
    struct Pending {
        RpcCallback cb;
        std::string target;  // "name to node/service", for error texts
        uint32_t timeout_ms = 0;
    };
    struct Timer {
        uint64_t rpc_session;         // != 0: the timeout of that rpc
        std::function<void()> fn;     // else: a timer from after()
    };

    static int callback(skynet_context *, void *ud, int type, int session, uint32_t source, const void *msg,
                        size_t sz) {
        Service *self = static_cast<Service *>(ud);
        self->cur_source_ = source;
        self->cur_session_ = session;
        try {
            self->dispatch(type, session, source, msg, sz);
        } catch (const std::exception &e) {
            self->log("%s: handler failed on a message of type %d from :%08x: %s", self->service_.c_str(), type,
                      source, e.what());
        } catch (...) {
            self->log("%s: handler failed on a message of type %d from :%08x", self->service_.c_str(), type, source);
        }
        self->cur_source_ = 0;
        self->cur_session_ = 0;
        return 0;
    }

    void dispatch(int type, int session, uint32_t source, const void *msg, size_t sz) {
        if (type == PTYPE_RESPONSE && source == 0) {
            fire_timer(session);
            return;
        }
        if (type != PTYPE_TEXT && type != PTYPE_RESPONSE) {
            on_message(type, session, source, msg, sz);
            return;
        }
        FrameError err;
        std::optional<FrameView> frame = decode_frame(msg, msg ? sz : 0, &err);
        if (!frame) {
            log("%s: malformed frame (%zu bytes, type %d) from :%08x dropped: %s", service_.c_str(), sz, type, source,
                err.message().c_str());
            return;
        }
        if (type == PTYPE_RESPONSE || frame->sub_type == SUBTYPE_RPC_CLIENT) {
            rpc_reply(*frame, source);
        } else if (frame->sub_type == SUBTYPE_RPC_SERVER) {
            if (frame->session == 0) {
                log("%s: rpc request %.*s from :%08x has session 0; dropped", service_.c_str(),
                    int(frame->name.size()), frame->name.data(), source);
                return;
            }
            on_rpc(*frame);
        } else {
            on_frame(*frame);
        }
    }

    void rpc_reply(const FrameView &frame, uint32_t source) {
        if (frame.sub_type != SUBTYPE_RPC_CLIENT) {
            log("%s: reply from :%08x has sub_type %u, not 17; dropped", service_.c_str(), source, frame.sub_type);
            return;
        }
        auto it = pending_.find(frame.session);
        if (it == pending_.end()) {
            log("%s: reply %.*s for session %llu dropped: no rpc waits for it (timed out or unknown)",
                service_.c_str(), int(frame.name.size()), frame.name.data(),
                static_cast<unsigned long long>(frame.session));
            return;
        }
        RpcCallback cb = std::move(it->second.cb);
        pending_.erase(it);
        RpcResult r;
        r.reply = &frame;
        cb(r);
    }

    void fire_timer(int session) {
        auto t = timers_.find(session);
        if (t == timers_.end()) return;  // the timer of an rpc that could not leave
        Timer timer = std::move(t->second);
        timers_.erase(t);
        if (timer.rpc_session == 0) {
            if (timer.fn) timer.fn();
            return;
        }
        auto it = pending_.find(timer.rpc_session);
        if (it == pending_.end()) return;  // answered in time
        Pending p = std::move(it->second);
        pending_.erase(it);
        std::string error = "rpc " + p.target + " timed out after " + std::to_string(p.timeout_ms) + " ms";
        RpcResult r;
        r.error = error;
        p.cb(r);
    }

    int start_timer(uint32_t ms) {
        int session = skynet_context_newsession(ctx_);
        uint32_t ticks = ms / 10 + (ms % 10 != 0);
        if (ticks == 0) ticks = 1;
        if (ticks > 0x7fffffffu) ticks = 0x7fffffffu;
        if (skynet_timeout(handle_, static_cast<int>(ticks), session) < 0) {
            log("%s: the host refused a timer of %u ms", service_.c_str(), ms);
            return 0;
        }
        return session;
    }

    FrameView outgoing(std::string_view node, std::string_view service, uint32_t sub_type, int64_t uid,
                       std::string_view msg_name, std::string_view body) const {
        FrameView f;
        f.remote_node = node;
        f.remote_service = service;
        f.source_node = node_;
        f.source_service = service_;
        f.sub_type = sub_type;
        f.uid = uid;
        f.name = msg_name;
        f.body = body;
        return f;
    }

    uint32_t resolve_proxy() {
        if (proxy_handle_ != 0) return proxy_handle_;
        const std::string &n = proxy_name_;
        if (!n.empty() && n.find_first_not_of("0123456789") == std::string::npos) {
            proxy_handle_ = static_cast<uint32_t>(std::strtoul(n.c_str(), nullptr, 10));
        } else if (!n.empty() && (n[0] == '.' || n[0] == ':')) {
            proxy_handle_ = skynet_queryname(ctx_, n.c_str());
        } else {
            proxy_handle_ = skynet_queryname(ctx_, ("." + n).c_str());
        }
        return proxy_handle_;
    }

    // The frame goes to the proxy as PTYPE_TEXT, in a buffer from skynet_malloc handed
    // over with PTYPE_TAG_DONTCOPY (the host owns it from the call on, even on failure).
    bool push(const FrameView &f, int skynet_session) {
        FrameError err;
        std::optional<size_t> n = frame_size(f, &err);
        if (!n) {
            log("%s: frame %.*s not sent: %s", service_.c_str(), int(f.name.size()), f.name.data(),
                err.message().c_str());
            return false;
        }
        for (int attempt = 0; attempt < 2; ++attempt) {
            uint32_t proxy = resolve_proxy();
            if (proxy == 0) {
                log("%s: frame %.*s to %.*s/%.*s not sent: no service named %s on this node", service_.c_str(),
                    int(f.name.size()), f.name.data(), int(f.remote_node.size()), f.remote_node.data(),
                    int(f.remote_service.size()), f.remote_service.data(), proxy_name_.c_str());
                return false;
            }
            void *buf = skynet_malloc(*n);
            if (!buf) {
                log("%s: frame %.*s not sent: out of memory (%zu bytes)", service_.c_str(), int(f.name.size()),
                    f.name.data(), *n);
                return false;
            }
            encode_frame_into(f, buf);
            if (skynet_send(ctx_, 0, proxy, PTYPE_TEXT | PTYPE_TAG_DONTCOPY, skynet_session, buf, *n) >= 0) {
                return true;
            }
            proxy_handle_ = 0;  // the proxy may have restarted: look it up again, once
        }
        log("%s: frame %.*s to %.*s/%.*s not sent: %s refused it", service_.c_str(), int(f.name.size()),
            f.name.data(), int(f.remote_node.size()), f.remote_node.data(), int(f.remote_service.size()),
            f.remote_service.data(), proxy_name_.c_str());
        return false;
    }

    static std::string first_word(std::string_view s) {
        size_t i = s.find_first_not_of(' ');
        if (i == std::string_view::npos) return std::string();
        size_t j = s.find(' ', i);
        return std::string(s.substr(i, j == std::string_view::npos ? std::string_view::npos : j - i));
    }

    void parse_args(std::string_view s) {
        size_t i = 0;
        while (i < s.size()) {
            while (i < s.size() && s[i] == ' ') ++i;
            size_t j = i;
            while (j < s.size() && s[j] != ' ') ++j;
            std::string_view tok = s.substr(i, j - i);
            if (!tok.empty()) {
                size_t eq = tok.find('=');
                if (eq == std::string_view::npos) {
                    args_[std::string(tok)] = "";
                } else {
                    args_[std::string(tok.substr(0, eq))] = std::string(tok.substr(eq + 1));
                }
            }
            i = j;
        }
    }

    skynet_context *ctx_ = nullptr;
    uint32_t handle_ = 0;
    std::string node_;
    std::string service_;
    std::string proxy_name_ = "CServiceProxy";
    uint32_t proxy_handle_ = 0;
    uint32_t default_timeout_ms_ = 5000;
    std::map<std::string, std::string> args_;
    std::unordered_map<uint64_t, Pending> pending_;
    std::unordered_map<int, Timer> timers_;
    uint32_t cur_source_ = 0;
    int cur_session_ = 0;
};

namespace detail {

template <class T> void *module_create() noexcept {
    try {
        return static_cast<void *>(static_cast<Service *>(new T()));
    } catch (...) {
        return nullptr;
    }
}

inline int module_init(void *inst, skynet_context *ctx, const char *parm) noexcept {
    if (!inst) {
        skynet_error(ctx, "native service: create failed (out of memory?)");
        return 1;
    }
    try {
        return static_cast<Service *>(inst)->init(ctx, parm);
    } catch (const std::exception &e) {
        skynet_error(ctx, "native service: init failed: %s", e.what());
    } catch (...) {
        skynet_error(ctx, "native service: init failed");
    }
    return 1;
}

inline void module_release(void *inst) noexcept {
    Service *s = static_cast<Service *>(inst);
    if (!s) return;
    s->shutdown();
    delete s;
}

inline void module_signal(void *inst, int signal) noexcept {
    if (!inst) return;
    try {
        static_cast<Service *>(inst)->on_signal(signal);
    } catch (...) {
    }
}

}  // namespace detail
}  // namespace bee

#if defined(__GNUC__)
#define BEE_MODULE_EXPORT __attribute__((visibility("default")))
#else
#define BEE_MODULE_EXPORT
#endif

/// Exports NAME_create / NAME_init / NAME_release / NAME_signal for service class CLASS
/// (default-constructible, derived from bee::Service), the skynet C module contract.
#define BEE_SKYNET_MODULE(NAME, CLASS)                                                                      \
    extern "C" {                                                                                            \
    BEE_MODULE_EXPORT void *NAME##_create(void) { return ::bee::detail::module_create<CLASS>(); }           \
    BEE_MODULE_EXPORT int NAME##_init(void *inst, struct skynet_context *ctx, const char *parm) {           \
        return ::bee::detail::module_init(inst, ctx, parm);                                                 \
    }                                                                                                       \
    BEE_MODULE_EXPORT void NAME##_release(void *inst) { ::bee::detail::module_release(inst); }              \
    BEE_MODULE_EXPORT void NAME##_signal(void *inst, int signal) { ::bee::detail::module_signal(inst, signal); } \
    }
