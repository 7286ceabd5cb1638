// Loads the demo modules (hello.so, shop.so, mail.so from the directory given as the only
// argument) into mini_host.hpp's host, which implements bee's skynet C API subset, and
// drives them with messages shaped as in the game team's contract (kkt-frames.md):
// frames from a master as PTYPE_TEXT, rpc replies as PTYPE_RESPONSE from a non-zero
// source, timers as PTYPE_RESPONSE from source 0. Test services play CServiceProxy and
// the peers. Prints "N passed, M failed" last; exits non-zero when anything failed.
#include "mini_host.hpp"

#include <bee/frame.hpp>

#include "game.pb.h"
#include "mail.pb.h"

#include <google/protobuf/stubs/common.h>

#include <cstdio>
#include <string>
#include <vector>

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

mini::Host &H = mini::host();

// What the fake CServiceProxy received.
struct Pushed {
    int skynet_session;
    uint32_t source;
    bee::Frame frame;
};

std::vector<Pushed> pushed;
std::vector<MiniMessage> inbox;  // what the "client" test service received

void clear() {
    pushed.clear();
    inbox.clear();
}

// Sends `f` to `dest` as a master does (PTYPE_TEXT, skynet session 0), from `from`.
void deliver_text(skynet_context *from, uint32_t dest, const bee::FrameView &f) {
    std::string bytes = *bee::encode_frame(f);
    skynet_send(from, 0, dest, PTYPE_TEXT, 0, bytes.data(), bytes.size());
    H.run();
}

// Delivers an rpc reply frame as the caller's master does: PTYPE_RESPONSE, session 0,
// from a non-zero source.
void deliver_reply(skynet_context *from, uint32_t dest, const bee::FrameView &f) {
    std::string bytes = *bee::encode_frame(f);
    skynet_send(from, 0, dest, PTYPE_RESPONSE, 0, bytes.data(), bytes.size());
    H.run();
}

bee::FrameView request(std::string_view node, std::string_view service, uint32_t sub_type, uint64_t session,
                       std::string_view name, const std::string &body, int64_t uid = 42) {
    bee::FrameView f;
    f.remote_node = node;
    f.remote_service = service;
    f.source_node = "lobby";
    f.source_service = "lobby";
    f.sub_type = sub_type;
    f.uid = uid;
    f.name = name;
    f.session = session;
    f.body = body;
    return f;
}

std::string buy(uint64_t uid, int item, int count) {
    game::ShopBuy b;
    b.set_uid(uid);
    b.set_item_id(item);
    b.set_count(count);
    return b.SerializeAsString();
}

void hello_tests(skynet_context *client) {
    skynet_context *hello = skynet_context_new("hello", ".hello");
    check(hello != nullptr, "hello.so loads and inits");
    if (!hello) return;
    check(skynet_queryname(client, ".hello") == hello->handle, "hello registered .hello with REG");
    check(H.logged("hello: started as :"), "hello logged its handle from REG NULL and the harbor");
    clear();
    int s = skynet_sendname(client, 0, ".hello", PTYPE_TEXT | PTYPE_TAG_ALLOCSESSION, 0, (void *)"ping", 4);
    H.run();
    check(inbox.size() == 1 && inbox[0].type == PTYPE_RESPONSE && inbox[0].session == s &&
              inbox[0].source == hello->handle && inbox[0].data == "hello:ping",
          "hello answers PTYPE_TEXT with PTYPE_RESPONSE, same session, \"hello:\" + request");
    clear();
    skynet_send(client, 0, hello->handle, PTYPE_TEXT, 0, (void *)"push", 4);
    skynet_send(client, 0, hello->handle, PTYPE_CLIENT, 3, (void *)"x", 1);
    H.run();
    check(inbox.empty() && H.logged("hello: push of 4 bytes") && H.logged("hello: message of type 3"),
          "hello answers no push and drops other types");
    check(skynet_context_new("hello", ".hello") == nullptr && H.logged("cannot register the name .hello"),
          "a second hello with the same name refuses to start");
    check(skynet_context_new("nosuchmodule", "") == nullptr && H.logged("cannot load"),
          "a missing module is an error, not a crash");
}

void shop_tests(skynet_context *master) {
    skynet_context *shop = skynet_context_new("shop", "node=shop_4 rpc_timeout_ms=500");
    check(shop != nullptr, "shop.so loads and inits");
    if (!shop) return;

    clear();
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 7, "game.ShopBuy", buy(42, 3, 2)));
    bool ok = pushed.size() == 1;
    game::ShopReceipt r;
    if (ok) {
        const bee::Frame &f = pushed[0].frame;
        ok = pushed[0].skynet_session == 1 && f.remote_node == "lobby" && f.remote_service == "lobby" &&
             f.source_node == "shop_4" && f.source_service == "shop" && f.sub_type == bee::SUBTYPE_RPC_CLIENT &&
             f.session == 7 && f.uid == 42 && f.roomid == 0 && f.name == "game.ShopReceipt" &&
             r.ParseFromString(f.body) && r.uid() == 42 && r.item_id() == 3 && r.count() == 2 && r.order_id() == 1 &&
             r.handled_by() == "shop_4/shop";
    }
    check(ok, "rpc game.ShopBuy: a ShopReceipt reply frame (names swapped, sub_type 17, session 7) to the proxy "
              "with skynet session 1");

    clear();
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_PROTOBUF, 0, "game.ShopBuy", buy(42, 5, 1)));
    ok = pushed.size() == 1 && pushed[0].skynet_session == 0 && pushed[0].frame.sub_type == bee::SUBTYPE_PROTOBUF &&
         pushed[0].frame.remote_node == "lobby" && pushed[0].frame.source_service == "shop" &&
         pushed[0].frame.session == 0 && r.ParseFromString(pushed[0].frame.body) && r.order_id() == 2;
    check(ok, "one-way game.ShopBuy: the receipt is sent back one-way (sub_type 16, session 0) to the source");

    clear();
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 8, "game.ShopBuy", buy(42, 5, 0)));
    check(pushed.size() == 1 && r.ParseFromString(pushed[0].frame.body) && r.order_id() == 0,
          "an order with count 0 is refused with order_id 0");

    clear();
    game::Ping ping;
    ping.set_seq(99);
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 9, "game.Ping", ping.SerializeAsString()));
    game::Pong pong;
    check(pushed.size() == 1 && pushed[0].frame.name == "game.Pong" && pong.ParseFromString(pushed[0].frame.body) &&
              pong.seq() == 99 && pong.served_by() == "shop_4/shop",
          "rpc game.Ping: game.Pong with the seq and served_by");

    clear();
    std::string good = *bee::encode_frame(request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 10, "game.ShopBuy", buy(1, 1, 1)));
    skynet_send(master, 0, shop->handle, PTYPE_TEXT, 0, good.data(), 30);  // cut inside the names
    skynet_send(master, 0, shop->handle, PTYPE_TEXT, 0, nullptr, 0);
    H.run();
    check(pushed.empty() && H.logged("shop: malformed frame (30 bytes") && H.logged("shop: malformed frame (0 bytes"),
          "malformed frames are logged and dropped");
    clear();
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 11, "game.ShopBuy", "\xff\xff\xff"));
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 12, "game.Nope", ""));
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 0, "game.ShopBuy", buy(1, 1, 1)));
    check(pushed.empty() && H.logged("does not parse") && H.logged("rpc game.Nope") && H.logged("has session 0"),
          "bad protobuf, unknown message and an rpc without session: logged, no reply");
    clear();
    deliver_reply(master, shop->handle, bee::native_reply(request("x", "y", 18, 77, "game.Ping", ""), "game.Pong", ""));
    check(pushed.empty() && H.logged("for session 77 dropped"), "a reply nobody waits for is logged and dropped");

    // Still answering after all that.
    clear();
    deliver_text(master, shop->handle, request("shop_4", "shop", bee::SUBTYPE_RPC_SERVER, 13, "game.ShopBuy", buy(7, 1, 1)));
    check(pushed.size() == 1 && r.ParseFromString(pushed[0].frame.body) && r.order_id() == 3, "shop still answers");

    // notify=...: the receipt is mailed by rpc first; the buyer is answered after.
    skynet_context *shop2 = skynet_context_new("shop", "node=shop_4 service=shop_master notify=mail_5/mail rpc_timeout_ms=500");
    check(shop2 != nullptr, "a second shop instance (notify=mail_5/mail) starts");
    if (!shop2) return;
    clear();
    deliver_text(master, shop2->handle, request("shop_4", "shop_master", 18, 21, "game.ShopBuy", buy(42, 9, 1)));
    mail::Send sent;
    ok = pushed.size() == 1 && pushed[0].skynet_session == 0 && pushed[0].frame.sub_type == bee::SUBTYPE_RPC_SERVER &&
         pushed[0].frame.remote_node == "mail_5" && pushed[0].frame.remote_service == "mail" &&
         pushed[0].frame.source_node == "shop_4" && pushed[0].frame.source_service == "shop_master" &&
         pushed[0].frame.session > 0 && pushed[0].frame.name == "mail.Send" && sent.ParseFromString(pushed[0].frame.body) &&
         sent.to_uid() == 42 && sent.title() == "receipt 1";
    check(ok, "notify: shop rpc_calls mail.Send (sub_type 18, its own session) and does not answer yet");
    if (ok) {
        bee::Frame mail_req = pushed[0].frame;
        clear();
        mail::Ack ack;
        ack.set_mail_id(5);
        ack.set_handled_by("mail_5/mail");
        deliver_reply(master, shop2->handle, bee::native_reply(mail_req.view(), "mail.Ack", ack.SerializeAsString()));
        check(pushed.size() == 1 && pushed[0].frame.name == "game.ShopReceipt" && pushed[0].frame.session == 21 &&
                  pushed[0].skynet_session == 1 && H.logged("stored as mail 5 by mail_5/mail"),
              "the mail.Ack reply (PTYPE_RESPONSE from a non-zero source) releases the buyer's receipt");
        clear();
        deliver_reply(master, shop2->handle, bee::native_reply(mail_req.view(), "mail.Ack", ack.SerializeAsString()));
        check(pushed.empty(), "a second reply to the same session calls nothing");
    }
    clear();
    deliver_text(master, shop2->handle, request("shop_4", "shop_master", 18, 22, "game.ShopBuy", buy(42, 9, 1)));
    bee::Frame lost = pushed.empty() ? bee::Frame() : pushed[0].frame;
    clear();
    H.advance(400);
    check(pushed.empty(), "no answer before the rpc timeout");
    H.advance(200);
    check(pushed.size() == 1 && pushed[0].frame.session == 22 && H.logged("timed out after 500 ms"),
          "the rpc timeout (PTYPE_RESPONSE from source 0) fails the call once; the buyer is answered");
    clear();
    deliver_reply(master, shop2->handle, bee::native_reply(lost.view(), "mail.Ack", ""));
    check(pushed.empty() && H.logged("no rpc waits for it"), "a reply after the timeout is dropped");
}

void mail_tests(skynet_context *master) {
    skynet_context *mail = skynet_context_new("mail", "node=mail_5 lookup=lpersistence_3/lpersistence lookup_timeout_ms=300");
    check(mail != nullptr, "mail.so loads and inits next to shop.so (RTLD_GLOBAL, shared protobuf code)");
    if (!mail) return;
    mail::Send m;
    m.set_to_uid(42);
    m.set_title("welcome");
    clear();
    deliver_text(master, mail->handle, request("mail_5", "mail", 18, 31, "mail.Send", m.SerializeAsString()));
    game::GetUserInfo q;
    bool ok = pushed.size() == 1 && pushed[0].frame.name == "game.GetUserInfo" &&
              pushed[0].frame.remote_node == "lpersistence_3" && pushed[0].frame.remote_service == "lpersistence" &&
              pushed[0].frame.sub_type == 18 && q.ParseFromString(pushed[0].frame.body) && q.uid() == 42;
    check(ok, "rpc mail.Send with lookup: mail rpc_calls game.GetUserInfo on lpersistence_3/lpersistence");
    if (ok) {
        bee::Frame lookup = pushed[0].frame;
        clear();
        game::UserInfo info;
        info.set_uid(42);
        info.set_nickname("player42");
        // A Lua service replies with every name empty (lua_reply).
        deliver_reply(master, mail->handle, bee::lua_reply(lookup.view(), "game.UserInfo", info.SerializeAsString()));
        mail::Ack ack;
        check(pushed.size() == 1 && pushed[0].frame.name == "mail.Ack" && pushed[0].frame.session == 31 &&
                  ack.ParseFromString(pushed[0].frame.body) && ack.nickname() == "player42" && ack.mail_id() == 1 &&
                  ack.inbox_size() == 1 && ack.lookup_error().empty() && ack.handled_by() == "mail_5/mail",
              "a Lua-style reply (names empty) completes the lookup; mail.Ack carries the nickname");
    }
    m.set_title("second");
    clear();
    deliver_text(master, mail->handle, request("mail_5", "mail", 18, 32, "mail.Send", m.SerializeAsString()));
    clear();
    H.advance(310);
    mail::Ack ack;
    check(pushed.size() == 1 && ack.ParseFromString(pushed[0].frame.body) && ack.inbox_size() == 2 &&
              ack.lookup_error().find("timed out after 300 ms") != std::string::npos,
          "a lookup nobody answers: mail.Ack with lookup_error after lookup_timeout_ms");
    m.set_title("third");
    clear();
    deliver_text(master, mail->handle, request("mail_5", "mail", 16, 0, "mail.Send", m.SerializeAsString()));
    check(pushed.empty(), "one-way mail.Send: stored, nothing sent");
    mail::ListReq lr;
    lr.set_uid(42);
    deliver_text(master, mail->handle, request("mail_5", "mail", 18, 33, "mail.ListReq", lr.SerializeAsString()));
    mail::List list;
    check(pushed.size() == 1 && list.ParseFromString(pushed[0].frame.body) && list.titles_size() == 3 &&
              list.titles(0) == "welcome" && list.titles(2) == "third",
          "rpc mail.ListReq lists the titles oldest first");
    check(skynet_context_new("mail", "lookup=nodeonly") == nullptr && H.logged("lookup=nodeonly is not NODE/SERVICE"),
          "a bad parameter makes init fail cleanly");
}

// shop and mail wired together by a proxy that plays a one-node cluster: frames go to
// the service named by their remote service ("text" as PTYPE_TEXT; a skynet session of
// 1 means "rpc_response", delivered as PTYPE_RESPONSE from the proxy).
void together_tests() {
    H.names.erase("CServiceProxy");
    skynet_context *router = nullptr;
    router = H.service("CServiceProxy", [&router](const MiniMessage &m) {
        auto f = bee::decode_frame(m.data.data(), m.data.size());
        if (!f) return;
        uint32_t to = H.resolve(("." + std::string(f->remote_service)).c_str());
        skynet_send(router, 0, to, m.session == 0 ? PTYPE_TEXT : PTYPE_RESPONSE, 0, (void *)m.data.data(), m.data.size());
    });
    std::vector<bee::Frame> lobby_got;
    skynet_context *lobby = H.service("lobby", [&lobby_got](const MiniMessage &m) {
        auto f = bee::decode_frame(m.data.data(), m.data.size());
        if (f) lobby_got.emplace_back(*f);
    });
    skynet_context *shop = skynet_context_new("shop", "node=n1 service=shopx notify=n1/mailx");
    skynet_context *mail = skynet_context_new("mail", "node=n1 service=mailx");
    check(shop && mail, "shop and mail start side by side");
    if (!shop || !mail) return;
    H.names["shopx"] = shop->handle;
    H.names["mailx"] = mail->handle;
    std::string order = buy(77, 2, 3);  // the views of a FrameView need it alive
    bee::FrameView req = request("n1", "shopx", 18, 41, "game.ShopBuy", order);
    req.source_node = "n1";
    deliver_text(lobby, shop->handle, req);
    game::ShopReceipt r;
    check(lobby_got.size() == 1 && lobby_got[0].session == 41 && r.ParseFromString(lobby_got[0].body) &&
              r.order_id() == 1 && H.logged("stored as mail 1 by n1/mailx"),
          "native -> native rpc: shop mails mail.Send to mail, gets mail.Ack, then answers lobby");
    lobby_got.clear();
    req.sub_type = 16;
    req.session = 0;
    deliver_text(lobby, shop->handle, req);
    mail::ListReq lr;
    lr.set_uid(77);
    std::string list_req = lr.SerializeAsString();
    bee::FrameView q = request("n1", "mailx", 18, 42, "mail.ListReq", list_req);
    q.source_node = "n1";
    deliver_text(lobby, mail->handle, q);
    mail::List list;
    bool ok = lobby_got.size() == 2 && lobby_got[0].name == "game.ShopReceipt" && lobby_got[0].sub_type == 16 &&
              lobby_got[1].name == "mail.List" && list.ParseFromString(lobby_got[1].body) && list.titles_size() == 2 &&
              list.titles(0) == "receipt 1" && list.titles(1) == "receipt 2";
    check(ok, "native -> native send: a one-way order mails its receipt one-way; mail lists both receipts");
    check(skynet_handle_retire(shop->handle) == 1 && skynet_handle_retire(mail->handle) == 1,
          "modules release on retire");
}

}  // namespace

int main(int argc, char **argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: host_test MODULE_DIR\n");
        return 2;
    }
    H.module_dir = argv[1];
    skynet_context *proxy = H.service("CServiceProxy", [](const MiniMessage &m) {
        bee::FrameError err;
        auto f = bee::decode_frame(m.data.data(), m.data.size(), &err);
        if (m.type != PTYPE_TEXT || !f) {
            std::printf("FAIL: the proxy got type %d, %s\n", m.type, err.message().c_str());
            ++failed;
            return;
        }
        pushed.push_back(Pushed{m.session, m.source, bee::Frame(*f)});
    });
    skynet_context *client = H.service("client", [](const MiniMessage &m) { inbox.push_back(m); });
    skynet_context *master = H.service("master", [](const MiniMessage &m) {
        std::printf("FAIL: the master got a message of type %d\n", m.type);
        ++failed;
    });
    (void)proxy;
    hello_tests(client);
    shop_tests(master);
    mail_tests(master);
    together_tests();
    H.retire_all();
    google::protobuf::ShutdownProtobufLibrary();
    std::printf("%zu messages delivered, %zu log lines\n", H.delivered, H.logs.size());
    std::printf("%d passed, %d failed\n", passed, failed);
    return failed == 0 ? 0 : 1;
}
