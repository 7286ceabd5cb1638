// shop: the demo game's shop as a native service (a skynet C service module written with
// the bee C++ SDK), the C++ counterpart of crates/bee-demo/src/shop.rs.
//
// Frames it answers (bodies are proto/game.proto and cservices/proto/mail.proto messages):
//   rpc  game.ShopBuy  -> reply game.ShopReceipt {uid, item_id, count, order_id, handled_by}
//                         order_id counts accepted orders (1, 2, ...); an order with
//                         item_id <= 0 or count <= 0 is refused: order_id 0.
//                         With notify=NODE/SERVICE, an accepted order is first mailed
//                         there as an rpc mail.Send {to_uid = uid, title "receipt <order_id>"}
//                         and the receipt is sent when that rpc answered or failed
//                         (native -> native rpc; the outcome is logged).
//   send game.ShopBuy  -> the same order; the receipt goes back as a one-way frame
//                         (sub_type 16) to the frame's source node/service when it names
//                         one, and with notify=... a one-way mail.Send goes there too.
//   rpc  game.Ping     -> reply game.Pong {seq, served_by}
// handled_by / served_by is "<node>/<service>". Anything else is logged and dropped.
//
// Init parameter: the SDK's keys (node=, service= [default shop], proxy=, rpc_timeout_ms=)
// and notify=NODE/SERVICE.
#include <bee/service.hpp>

#include "game.pb.h"
#include "mail.pb.h"

#include <string>

namespace {

class Shop : public bee::Service {
  public:
    Shop() : bee::Service("shop") {}

  protected:
    bool on_init() override {
        served_by_ = node() + "/" + service();
        if (const std::string *n = find_arg("notify")) {
            size_t slash = n->find('/');
            if (slash == std::string::npos || slash == 0 || slash + 1 == n->size()) {
                log("shop: notify=%s is not NODE/SERVICE", n->c_str());
                return false;
            }
            notify_node_ = n->substr(0, slash);
            notify_service_ = n->substr(slash + 1);
        }
        log("shop: %s ready%s%s", served_by_.c_str(), notify_node_.empty() ? "" : ", mailing receipts to ",
            notify_node_.empty() ? "" : (notify_node_ + "/" + notify_service_).c_str());
        return true;
    }

    void on_rpc(const bee::FrameView &f) override {
        if (f.name == "game.ShopBuy") {
            game::ShopBuy buy;
            if (!parse(buy, f)) return;
            game::ShopReceipt receipt = order(buy, f.uid);
            if (receipt.order_id() == 0 || notify_node_.empty()) {
                reply(f, "game.ShopReceipt", receipt.SerializeAsString());
                return;
            }
            // Mail the receipt first; answer the buyer once the mail service answered.
            bee::Frame request(f);
            int64_t order_id = receipt.order_id();
            int session = rpc_call(notify_node_, notify_service_, f.uid, "mail.Send", receipt_mail(receipt),
                                   [this, request, receipt, order_id](const bee::RpcResult &r) {
                                       log_mail_result(order_id, r);
                                       reply(request.view(), "game.ShopReceipt", receipt.SerializeAsString());
                                   });
            if (session == 0) {
                log("shop: order %lld not mailed (rpc could not leave); answering anyway",
                    static_cast<long long>(order_id));
                reply(f, "game.ShopReceipt", receipt.SerializeAsString());
            }
        } else if (f.name == "game.Ping") {
            game::Ping ping;
            if (!parse(ping, f)) return;
            game::Pong pong;
            pong.set_seq(ping.seq());
            pong.set_served_by(served_by_);
            reply(f, "game.Pong", pong.SerializeAsString());
        } else {
            log("shop: rpc %.*s from %.*s/%.*s not understood; no reply", int(f.name.size()), f.name.data(),
                int(f.source_node.size()), f.source_node.data(), int(f.source_service.size()),
                f.source_service.data());
        }
    }

    void on_frame(const bee::FrameView &f) override {
        if (f.name != "game.ShopBuy") {
            log("shop: frame %.*s (sub_type %u) not understood; dropped", int(f.name.size()), f.name.data(),
                f.sub_type);
            return;
        }
        game::ShopBuy buy;
        if (!parse(buy, f)) return;
        game::ShopReceipt receipt = order(buy, f.uid);
        if (!f.source_node.empty() && !f.source_service.empty()) {
            send(f.source_node, f.source_service, bee::SUBTYPE_PROTOBUF, f.uid, "game.ShopReceipt",
                 receipt.SerializeAsString());
        }
        if (receipt.order_id() != 0 && !notify_node_.empty()) {
            send(notify_node_, notify_service_, bee::SUBTYPE_PROTOBUF, f.uid, "mail.Send", receipt_mail(receipt));
        }
    }

  private:
    template <class M> bool parse(M &msg, const bee::FrameView &f) {
        if (msg.ParseFromArray(f.body.data(), static_cast<int>(f.body.size()))) return true;
        log("shop: %.*s body of %zu bytes from %.*s/%.*s does not parse; dropped", int(f.name.size()),
            f.name.data(), f.body.size(), int(f.source_node.size()), f.source_node.data(),
            int(f.source_service.size()), f.source_service.data());
        return false;
    }

    game::ShopReceipt order(const game::ShopBuy &buy, int64_t frame_uid) {
        game::ShopReceipt r;
        uint64_t uid = buy.uid() != 0 ? buy.uid() : static_cast<uint64_t>(frame_uid);
        r.set_uid(uid);
        r.set_item_id(buy.item_id());
        r.set_count(buy.count());
        r.set_handled_by(served_by_);
        if (buy.item_id() <= 0 || buy.count() <= 0) {
            log("shop: order of uid %llu refused: item %d, count %d", static_cast<unsigned long long>(uid),
                buy.item_id(), buy.count());
            r.set_order_id(0);
        } else {
            r.set_order_id(++orders_);
        }
        return r;
    }

    static std::string receipt_mail(const game::ShopReceipt &r) {
        mail::Send m;
        m.set_to_uid(r.uid());
        m.set_from_uid(0);
        m.set_title("receipt " + std::to_string(r.order_id()));
        m.set_text("item " + std::to_string(r.item_id()) + " x" + std::to_string(r.count()) + " from " +
                   r.handled_by());
        return m.SerializeAsString();
    }

    void log_mail_result(int64_t order_id, const bee::RpcResult &r) {
        if (!r.ok()) {
            log("shop: receipt mail of order %lld failed: %.*s", static_cast<long long>(order_id),
                int(r.error.size()), r.error.data());
            return;
        }
        mail::Ack ack;
        if (r.reply->name != "mail.Ack" ||
            !ack.ParseFromArray(r.reply->body.data(), static_cast<int>(r.reply->body.size()))) {
            log("shop: receipt mail of order %lld answered with %.*s, not a mail.Ack",
                static_cast<long long>(order_id), int(r.reply->name.size()), r.reply->name.data());
            return;
        }
        log("shop: receipt mail of order %lld stored as mail %lld by %s", static_cast<long long>(order_id),
            static_cast<long long>(ack.mail_id()), ack.handled_by().c_str());
    }

    std::string served_by_;
    std::string notify_node_, notify_service_;
    int64_t orders_ = 0;
};

}  // namespace

BEE_SKYNET_MODULE(shop, Shop)
