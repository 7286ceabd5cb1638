// bench: a native service (skynet C service module, bee C++ SDK) that measures the
// round trip of its own rpc_calls, for `bee-bench cpp-rpc` (BENCHMARKS.md).
//
// Trigger: an rpc request `bench.Run` whose body is plain text
//     target=NODE/SERVICE calls=N [timeout_ms=T]
// The service then issues N rpc_calls of `game.Ping {seq = 1..N}` to SERVICE on NODE,
// one after the other (the next leaves from the callback of the previous), and when the
// last one has answered (or timed out) replies to the trigger with `bench.Result`, a
// plain-text body:
//     ok=K errors=E elapsed_ns=T[ first_error=TEXT]\n
//     LAT LAT LAT ...
// the first line a summary (elapsed from the first request leaving to the last callback),
// the second the round trip of every call in nanoseconds, in order (steady clock, from
// just before rpc_call to the start of its callback). A call counts as ok only when its
// reply is a `game.Pong` carrying the same seq and a non-empty served_by (the SDK already
// matched the reply to the call by the frame's session and checked sub_type 17).
//
// One run at a time: a trigger during a run is answered at once with
//     ok=0 errors=0 elapsed_ns=0 first_error=busy
// and a malformed trigger with `first_error=bad request: ...`. Anything else is logged
// and dropped.
//
// Init parameter: the SDK's keys (node=, service= [default bench], proxy=, rpc_timeout_ms=).
#include <bee/service.hpp>

#include "game.pb.h"

#include <chrono>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

class Bench : public bee::Service {
  public:
    Bench() : bee::Service("bench") {}

  protected:
    void on_rpc(const bee::FrameView &f) override {
        if (f.name != "bench.Run") {
            log("bench: rpc %.*s not understood; no reply", int(f.name.size()), f.name.data());
            return;
        }
        if (running_) {
            reply(f, "bench.Result", "ok=0 errors=0 elapsed_ns=0 first_error=busy");
            return;
        }
        std::string why;
        if (!parse_run(f.body, &why)) {
            reply(f, "bench.Result", "ok=0 errors=0 elapsed_ns=0 first_error=bad request: " + why);
            return;
        }
        trigger_ = bee::Frame(f);
        running_ = true;
        ok_ = 0;
        errors_ = 0;
        first_error_.clear();
        lat_ns_.clear();
        lat_ns_.reserve(calls_);
        started_ = Clock::now();
        next(1);
    }

  private:
    // "target=NODE/SERVICE calls=N [timeout_ms=T]"
    bool parse_run(std::string_view body, std::string *why) {
        node_.clear();
        svc_.clear();
        calls_ = 0;
        timeout_ms_ = 0;
        size_t i = 0;
        while (i < body.size()) {
            while (i < body.size() && body[i] == ' ') ++i;
            size_t j = i;
            while (j < body.size() && body[j] != ' ') ++j;
            std::string_view tok = body.substr(i, j - i);
            i = j;
            if (tok.empty()) continue;
            size_t eq = tok.find('=');
            if (eq == std::string_view::npos) {
                *why = "expected key=value, got " + std::string(tok);
                return false;
            }
            std::string_view key = tok.substr(0, eq);
            std::string value(tok.substr(eq + 1));
            if (key == "target") {
                size_t slash = value.find('/');
                if (slash == std::string::npos || slash == 0 || slash + 1 == value.size()) {
                    *why = "target=" + value + " is not NODE/SERVICE";
                    return false;
                }
                node_ = value.substr(0, slash);
                svc_ = value.substr(slash + 1);
            } else if (key == "calls" || key == "timeout_ms") {
                char *end = nullptr;
                unsigned long n = std::strtoul(value.c_str(), &end, 10);
                if (value.empty() || *end != '\0' || n == 0 || n > 10000000UL) {
                    *why = std::string(key) + "=" + value + " is not a number in 1..10000000";
                    return false;
                }
                (key == "calls" ? calls_ : timeout_ms_) = static_cast<uint32_t>(n);
            } else {
                *why = "unknown key " + std::string(key);
                return false;
            }
        }
        if (node_.empty() || calls_ == 0) {
            *why = "needs target=NODE/SERVICE and calls=N";
            return false;
        }
        return true;
    }

    void next(uint64_t seq) {
        if (seq > calls_) {
            finish();
            return;
        }
        game::Ping ping;
        ping.set_seq(seq);
        ping.set_sent_unix_ms(0);
        Clock::time_point t0 = Clock::now();
        int session = rpc_call(
            node_, svc_, static_cast<int64_t>(seq), "game.Ping", ping.SerializeAsString(),
            [this, seq, t0](const bee::RpcResult &r) {
                lat_ns_.push_back(
                    static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count()));
                check(seq, r);
                next(seq + 1);
            },
            timeout_ms_);
        if (session == 0) {
            // Could not leave (logged by the SDK): count the rest as failed and answer.
            errors_ += calls_ - seq + 1;
            if (first_error_.empty()) first_error_ = "rpc_call could not leave (see the node log)";
            finish();
        }
    }

    void check(uint64_t seq, const bee::RpcResult &r) {
        std::string why;
        if (!r.ok()) {
            why = std::string(r.error);
        } else if (r.reply->name != "game.Pong") {
            why = "reply is " + std::string(r.reply->name) + ", not game.Pong";
        } else {
            game::Pong pong;
            if (!pong.ParseFromArray(r.reply->body.data(), static_cast<int>(r.reply->body.size()))) {
                why = "game.Pong body does not parse";
            } else if (pong.seq() != seq) {
                why = "Pong seq " + std::to_string(pong.seq()) + " for Ping seq " + std::to_string(seq);
            } else if (pong.served_by().empty()) {
                why = "Pong without served_by";
            }
        }
        if (why.empty()) {
            ++ok_;
        } else {
            ++errors_;
            if (first_error_.empty()) first_error_ = why;
        }
    }

    void finish() {
        running_ = false;
        uint64_t elapsed =
            static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - started_).count());
        std::string out = "ok=" + std::to_string(ok_) + " errors=" + std::to_string(errors_) +
                          " elapsed_ns=" + std::to_string(elapsed);
        if (!first_error_.empty()) {
            for (char &c : first_error_) {
                if (c == '\n') c = ' ';
            }
            out += " first_error=" + first_error_;
        }
        out += '\n';
        out.reserve(out.size() + lat_ns_.size() * 8);
        for (size_t k = 0; k < lat_ns_.size(); ++k) {
            if (k) out += ' ';
            out += std::to_string(lat_ns_[k]);
        }
        reply(trigger_.view(), "bench.Result", out);
        lat_ns_.clear();
    }

    bool running_ = false;
    bee::Frame trigger_;
    std::string node_, svc_;
    uint32_t calls_ = 0, timeout_ms_ = 0;
    uint64_t ok_ = 0, errors_ = 0;
    std::string first_error_;
    std::vector<uint64_t> lat_ns_;
    Clock::time_point started_;
};

}  // namespace

BEE_SKYNET_MODULE(bench, Bench)
