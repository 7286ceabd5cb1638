// A small, single-threaded host implementing bee's subset of skynet's C API, for testing
// native modules before (and independently of) bee's Rust host. It loads modules the
// way bee will (dlopen with RTLD_NOW | RTLD_GLOBAL, NAME_create / NAME_init / NAME_release),
// keeps one queue per service, delivers one message at a time, frees a delivered message
// when the callback returns 0, and runs timers on a virtual clock the test advances.
//
// Test code can also create plain services whose callback is a C++ function, to play the
// parts of CServiceProxy, a master, a caller.
//
// The executable that includes this must be linked with -rdynamic so modules find the
// skynet_* functions defined here. Include it in exactly one translation unit.
#pragma once

extern "C" {
#include "skynet.h"
#include "skynet_env.h"
#include "skynet_handle.h"
#include "skynet_server.h"
#include "skynet_timer.h"
}

#include <dlfcn.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

/// A delivered message, as a test service's function sees it.
struct MiniMessage {
    int type;
    int session;
    uint32_t source;
    std::string data;
};

struct skynet_context {
    uint32_t handle = 0;
    skynet_cb cb = nullptr;
    void *ud = nullptr;
    int session_id = 0;
    // A loaded module instance (null for test services).
    void *inst = nullptr;
    void (*release)(void *) = nullptr;
    void (*signal)(void *, int) = nullptr;
    std::string module;
    std::function<void(const MiniMessage &)> fn;  // a test service
    struct Queued {
        uint32_t source;
        int type;
        int session;
        void *data;
        size_t sz;
    };
    std::deque<Queued> queue;
    std::string result;  // what skynet_command returns points here
};

namespace mini {

struct Host {
    std::string module_dir;
    std::map<uint32_t, std::unique_ptr<skynet_context>> ctxs;
    uint32_t next_handle = 1;
    std::map<std::string, uint32_t> names;  // local names, without the '.'
    std::map<std::string, std::string> env{{"harbor", "0"}};
    std::vector<std::string> logs;
    bool echo_logs = std::getenv("MINI_HOST_LOG") != nullptr;
    uint64_t now_cs = 0;  // hundredths of a second
    std::multimap<uint64_t, std::pair<uint32_t, int>> timers;
    uint32_t current = 0;
    size_t delivered = 0;
    std::vector<uint32_t> deferred;  // retired from inside their own callback

    skynet_context *find(uint32_t handle) {
        auto it = ctxs.find(handle);
        return it == ctxs.end() ? nullptr : it->second.get();
    }

    skynet_context *add() {
        auto c = std::make_unique<skynet_context>();
        c->handle = next_handle++;
        skynet_context *raw = c.get();
        ctxs[raw->handle] = std::move(c);
        return raw;
    }

    // A test service: `fn` sees every message; the host frees it afterwards.
    skynet_context *service(const std::string &name, std::function<void(const MiniMessage &)> fn) {
        skynet_context *c = add();
        c->fn = std::move(fn);
        if (!name.empty()) names[name] = c->handle;
        return c;
    }

    bool enqueue(uint32_t dest, uint32_t source, int type, int session, void *data, size_t sz) {
        skynet_context *c = find(dest);
        if (!c) {
            std::free(data);
            return false;
        }
        c->queue.push_back({source, type, session, data, sz});
        return true;
    }

    // Delivers one queued message (lowest handle with mail first). False when all are idle.
    bool step() {
        for (auto &kv : ctxs) {
            skynet_context *c = kv.second.get();
            if (c->queue.empty()) continue;
            skynet_context::Queued m = c->queue.front();
            c->queue.pop_front();
            uint32_t prev = current;
            current = c->handle;
            ++delivered;
            int keep = 0;
            if (c->fn) {
                MiniMessage mm{m.type, m.session, m.source,
                               std::string(static_cast<const char *>(m.data ? m.data : ""), m.data ? m.sz : 0)};
                c->fn(mm);
            } else if (c->cb) {
                keep = c->cb(c, c->ud, m.type, m.session, m.source, m.data, m.sz);
            } else {
                log_line(c->handle, "message dropped: no callback installed");
            }
            current = prev;
            if (keep == 0) std::free(m.data);
            std::vector<uint32_t> gone;
            gone.swap(deferred);
            for (uint32_t g : gone) retire(g);
            return true;
        }
        return false;
    }

    void run() {
        while (step()) {
        }
    }

    // Moves the clock by `ms` (in 10 ms ticks), firing due timers in order and running
    // every message they cause.
    void advance(uint32_t ms) {
        uint64_t until = now_cs + (ms + 9) / 10;
        run();
        while (!timers.empty() && timers.begin()->first <= until) {
            auto t = *timers.begin();
            timers.erase(timers.begin());
            now_cs = t.first;
            enqueue(t.second.first, 0, PTYPE_RESPONSE, t.second.second, nullptr, 0);
            run();
        }
        now_cs = until;
    }

    void log_line(uint32_t handle, const std::string &text) {
        char head[16];
        std::snprintf(head, sizeof head, "[:%08x] ", handle);
        logs.push_back(head + text);
        if (echo_logs) std::printf("%s\n", logs.back().c_str());
    }

    bool logged(const std::string &needle) const {
        for (const auto &l : logs)
            if (l.find(needle) != std::string::npos) return true;
        return false;
    }

    uint32_t resolve(const char *name) {
        if (!name) return 0;
        if (name[0] == ':') return static_cast<uint32_t>(std::strtoul(name + 1, nullptr, 16));
        if (name[0] == '.') {
            auto it = names.find(name + 1);
            return it == names.end() ? 0 : it->second;
        }
        return 0;
    }

    // NAME.so from module_dir: create, register, init (NULL and released when init fails).
    skynet_context *load(const char *name, const char *parm) {
        std::string path = module_dir + "/" + name + ".so";
        void *dl = dlopen(path.c_str(), RTLD_NOW | RTLD_GLOBAL);
        if (!dl) {
            log_line(0, std::string("cannot load ") + path + ": " + dlerror());
            return nullptr;
        }
        std::string n(name);
        auto create = reinterpret_cast<void *(*)()>(dlsym(dl, (n + "_create").c_str()));
        auto init = reinterpret_cast<int (*)(void *, skynet_context *, const char *)>(dlsym(dl, (n + "_init").c_str()));
        auto release = reinterpret_cast<void (*)(void *)>(dlsym(dl, (n + "_release").c_str()));
        auto signal = reinterpret_cast<void (*)(void *, int)>(dlsym(dl, (n + "_signal").c_str()));
        if (!init) {
            log_line(0, path + " has no " + n + "_init");
            return nullptr;
        }
        skynet_context *c = add();
        c->module = n;
        c->inst = create ? create() : reinterpret_cast<void *>(~uintptr_t{0});
        c->release = release;
        c->signal = signal;
        uint32_t prev = current;
        current = c->handle;
        int r = init(c->inst, c, parm ? parm : "");
        current = prev;
        if (r != 0) {
            log_line(c->handle, "init of " + n + " failed");
            retire(c->handle);
            return nullptr;
        }
        return c;
    }

    bool retire(uint32_t handle) {
        if (handle != 0 && handle == current) {  // from its own callback: after it returns
            if (!find(handle)) return false;
            deferred.push_back(handle);
            return true;
        }
        auto it = ctxs.find(handle);
        if (it == ctxs.end()) return false;
        std::unique_ptr<skynet_context> c = std::move(it->second);
        ctxs.erase(it);
        for (auto n = names.begin(); n != names.end();) n = n->second == handle ? names.erase(n) : std::next(n);
        for (auto &m : c->queue) std::free(m.data);
        if (c->release) c->release(c->inst);
        return true;
    }

    void retire_all() {
        while (!ctxs.empty()) retire(ctxs.begin()->first);
    }
};

inline Host &host() {
    static Host h;
    return h;
}

}  // namespace mini

// ---- the skynet C API subset, as bee implements it -------------------------------------

extern "C" {

void skynet_error(skynet_context *ctx, const char *fmt, ...) {
    char buf[2048];
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    mini::host().log_line(ctx ? ctx->handle : 0, buf);
}

const char *skynet_command(skynet_context *ctx, const char *cmd, const char *parm) {
    mini::Host &h = mini::host();
    char buf[32];
    if (std::strcmp(cmd, "REG") == 0) {
        if (parm == nullptr || parm[0] == '\0') {
            std::snprintf(buf, sizeof buf, ":%08x", ctx->handle);
            ctx->result = buf;
            return ctx->result.c_str();
        }
        if (parm[0] == '.' && parm[1] != '\0' && h.names.find(parm + 1) == h.names.end()) {
            h.names[parm + 1] = ctx->handle;
            ctx->result = parm;
            return ctx->result.c_str();
        }
        return nullptr;
    }
    if (std::strcmp(cmd, "QUERY") == 0) {
        uint32_t found = h.resolve(parm);
        if (!found) return nullptr;
        std::snprintf(buf, sizeof buf, ":%08x", found);
        ctx->result = buf;
        return ctx->result.c_str();
    }
    if (std::strcmp(cmd, "GETENV") == 0) return skynet_getenv(parm);
    if (std::strcmp(cmd, "NOW") == 0) {
        ctx->result = std::to_string(h.now_cs);
        return ctx->result.c_str();
    }
    skynet_error(ctx, "command %s not supported", cmd);
    return nullptr;
}

uint32_t skynet_queryname(skynet_context *, const char *name) { return mini::host().resolve(name); }

int skynet_context_newsession(skynet_context *ctx) {
    int s = ctx->session_id + 1;
    if (s <= 0) s = 1;
    ctx->session_id = s;
    return s;
}

int skynet_send(skynet_context *ctx, uint32_t source, uint32_t destination, int type, int session, void *msg,
                size_t sz) {
    mini::Host &h = mini::host();
    if (type & PTYPE_TAG_ALLOCSESSION) session = skynet_context_newsession(ctx);
    bool dontcopy = (type & PTYPE_TAG_DONTCOPY) != 0;
    void *data = msg;
    if (!dontcopy && msg) {
        data = std::malloc(sz ? sz : 1);
        std::memcpy(data, msg, sz);
    }
    if (source == 0) source = ctx->handle;
    if (!h.enqueue(destination, source, type & 0xffff, session, data, sz)) {
        skynet_error(ctx, "send to :%08x failed: no such service", destination);
        return -1;
    }
    return session;
}

int skynet_sendname(skynet_context *ctx, uint32_t source, const char *destination, int type, int session, void *msg,
                    size_t sz) {
    uint32_t dest = mini::host().resolve(destination);
    if (!dest) {
        if (type & PTYPE_TAG_DONTCOPY) std::free(msg);
        skynet_error(ctx, "send to %s failed: no such name", destination);
        return -1;
    }
    return skynet_send(ctx, source, dest, type, session, msg, sz);
}

void skynet_callback(skynet_context *ctx, void *ud, skynet_cb cb) {
    ctx->ud = ud;
    ctx->cb = cb;
}

uint32_t skynet_current_handle(void) { return mini::host().current; }
uint64_t skynet_now(void) { return mini::host().now_cs; }

skynet_context *skynet_context_new(const char *name, const char *parm) { return mini::host().load(name, parm); }
uint32_t skynet_context_handle(skynet_context *ctx) { return ctx->handle; }
int skynet_handle_retire(uint32_t handle) { return mini::host().retire(handle) ? 1 : 0; }

const char *skynet_getenv(const char *key) {
    auto &env = mini::host().env;
    auto it = env.find(key);
    return it == env.end() ? nullptr : it->second.c_str();
}
void skynet_setenv(const char *key, const char *value) { mini::host().env[key] = value; }

int skynet_timeout(uint32_t handle, int time, int session) {
    mini::Host &h = mini::host();
    if (!h.find(handle)) return -1;
    if (time <= 0) {
        h.enqueue(handle, 0, PTYPE_RESPONSE, session, nullptr, 0);
    } else {
        h.timers.emplace(h.now_cs + static_cast<uint64_t>(time), std::make_pair(handle, session));
    }
    return session;
}

}  // extern "C"
