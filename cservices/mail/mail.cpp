// mail: a second demo native service (a skynet C service module written with the bee
// C++ SDK). It keeps an inbox per player in memory.
//
// Frames it answers (bodies are cservices/proto/mail.proto and proto/game.proto messages):
//   send mail.Send     -> stored; nothing is sent back.
//   rpc  mail.Send     -> stored; reply mail.Ack {to_uid, mail_id, inbox_size, handled_by,
//                         nickname, lookup_error}. With lookup=NODE/SERVICE the mail
//                         service first rpc_calls game.GetUserInfo {uid = to_uid} there
//                         (e.g. a Lua service on another node), logs the answer, and
//                         replies once that call answered (nickname = UserInfo.nickname)
//                         or failed (lookup_error = the error, e.g. its timeout).
//   rpc  mail.ListReq  -> reply mail.List {uid, titles (oldest first), handled_by}
//   rpc  game.Ping     -> reply game.Pong {seq, served_by}
// Anything else is logged and dropped.
//
// Init parameter: the SDK's keys (node=, service= [default mail], proxy=, rpc_timeout_ms=)
// and lookup=NODE/SERVICE, lookup_timeout_ms=N (default: the SDK's rpc timeout).
#include <bee/service.hpp>

#include "game.pb.h"
#include "mail.pb.h"

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

namespace {

class Mail : public bee::Service {
  public:
    Mail() : bee::Service("mail") {}

  protected:
    bool on_init() override {
        served_by_ = node() + "/" + service();
        if (const std::string *l = find_arg("lookup")) {
            size_t slash = l->find('/');
            if (slash == std::string::npos || slash == 0 || slash + 1 == l->size()) {
                log("mail: lookup=%s is not NODE/SERVICE", l->c_str());
                return false;
            }
            lookup_node_ = l->substr(0, slash);
            lookup_service_ = l->substr(slash + 1);
        }
        if (const std::string *t = find_arg("lookup_timeout_ms")) {
            char *end = nullptr;
            unsigned long ms = std::strtoul(t->c_str(), &end, 10);
            if (t->empty() || *end != '\0' || ms == 0 || ms > 86400000UL) {
                log("mail: lookup_timeout_ms=%s is not a number of milliseconds in 1..86400000", t->c_str());
                return false;
            }
            lookup_timeout_ms_ = static_cast<uint32_t>(ms);
        }
        log("mail: %s ready%s%s", served_by_.c_str(), lookup_node_.empty() ? "" : ", looking players up at ",
            lookup_node_.empty() ? "" : (lookup_node_ + "/" + lookup_service_).c_str());
        return true;
    }

    void on_frame(const bee::FrameView &f) override {
        if (f.name != "mail.Send") {
            log("mail: frame %.*s (sub_type %u) not understood; dropped", int(f.name.size()), f.name.data(),
                f.sub_type);
            return;
        }
        mail::Send m;
        if (!parse(m, f)) return;
        store(m, f.uid);
    }

    void on_rpc(const bee::FrameView &f) override {
        if (f.name == "mail.Send") {
            mail::Send m;
            if (!parse(m, f)) return;
            mail::Ack ack = store(m, f.uid);
            if (lookup_node_.empty()) {
                reply(f, "mail.Ack", ack.SerializeAsString());
                return;
            }
            game::GetUserInfo q;
            q.set_uid(ack.to_uid());
            bee::Frame request(f);
            int session = rpc_call(lookup_node_, lookup_service_, static_cast<int64_t>(ack.to_uid()),
                                   "game.GetUserInfo", q.SerializeAsString(),
                                   [this, request, ack](const bee::RpcResult &r) mutable {
                                       looked_up(ack, r);
                                       reply(request.view(), "mail.Ack", ack.SerializeAsString());
                                   },
                                   lookup_timeout_ms_);
            if (session == 0) {
                ack.set_lookup_error("lookup rpc could not be sent");
                reply(f, "mail.Ack", ack.SerializeAsString());
            }
        } else if (f.name == "mail.ListReq") {
            mail::ListReq q;
            if (!parse(q, f)) return;
            uint64_t uid = q.uid() != 0 ? q.uid() : static_cast<uint64_t>(f.uid);
            mail::List list;
            list.set_uid(uid);
            list.set_handled_by(served_by_);
            auto it = inbox_.find(uid);
            if (it != inbox_.end())
                for (const std::string &title : it->second) list.add_titles(title);
            reply(f, "mail.List", list.SerializeAsString());
        } else if (f.name == "game.Ping") {
            game::Ping ping;
            if (!parse(ping, f)) return;
            game::Pong pong;
            pong.set_seq(ping.seq());
            pong.set_served_by(served_by_);
            reply(f, "game.Pong", pong.SerializeAsString());
        } else {
            log("mail: rpc %.*s from %.*s/%.*s not understood; no reply", int(f.name.size()), f.name.data(),
                int(f.source_node.size()), f.source_node.data(), int(f.source_service.size()),
                f.source_service.data());
        }
    }

  private:
    template <class M> bool parse(M &msg, const bee::FrameView &f) {
        if (msg.ParseFromArray(f.body.data(), static_cast<int>(f.body.size()))) return true;
        log("mail: %.*s body of %zu bytes from %.*s/%.*s does not parse; dropped", int(f.name.size()),
            f.name.data(), f.body.size(), int(f.source_node.size()), f.source_node.data(),
            int(f.source_service.size()), f.source_service.data());
        return false;
    }

    mail::Ack store(const mail::Send &m, int64_t frame_uid) {
        uint64_t to = m.to_uid() != 0 ? m.to_uid() : static_cast<uint64_t>(frame_uid);
        std::vector<std::string> &box = inbox_[to];
        box.push_back(m.title());
        mail::Ack ack;
        ack.set_to_uid(to);
        ack.set_mail_id(++mails_);
        ack.set_inbox_size(static_cast<int32_t>(box.size()));
        ack.set_handled_by(served_by_);
        log("mail: mail %lld for uid %llu stored: %s", static_cast<long long>(ack.mail_id()),
            static_cast<unsigned long long>(to), m.title().c_str());
        return ack;
    }

    void looked_up(mail::Ack &ack, const bee::RpcResult &r) {
        if (!r.ok()) {
            ack.set_lookup_error(std::string(r.error));
            log("mail: lookup of uid %llu failed: %.*s", static_cast<unsigned long long>(ack.to_uid()),
                int(r.error.size()), r.error.data());
            return;
        }
        game::UserInfo info;
        if (r.reply->name != "game.UserInfo" ||
            !info.ParseFromArray(r.reply->body.data(), static_cast<int>(r.reply->body.size()))) {
            ack.set_lookup_error("lookup answered with " + std::string(r.reply->name) + ", not a game.UserInfo");
            log("mail: lookup of uid %llu: %s", static_cast<unsigned long long>(ack.to_uid()),
                ack.lookup_error().c_str());
            return;
        }
        ack.set_nickname(info.nickname());
        log("mail: lookup of uid %llu: nickname %s, level %d, coins %lld",
            static_cast<unsigned long long>(info.uid()), info.nickname().c_str(), info.level(),
            static_cast<long long>(info.coins()));
    }

    std::string served_by_;
    std::string lookup_node_, lookup_service_;
    uint32_t lookup_timeout_ms_ = 0;  // 0 = the SDK's rpc timeout
    int64_t mails_ = 0;
    std::map<uint64_t, std::vector<std::string>> inbox_;
};

}  // namespace

BEE_SKYNET_MODULE(mail, Mail)
