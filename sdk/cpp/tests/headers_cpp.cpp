// Compiles every header of include/ from C++ the way skynet-era modules include them:
// inside extern "C", before any other header (built by cservices/Makefile, target
// headers, with -std=c++11).
extern "C" {
#include "skynet.h"
#include "skynet_env.h"
#include "skynet_handle.h"
#include "skynet_harbor.h"
#include "skynet_malloc.h"
#include "skynet_server.h"
#include "skynet_socket.h"
#include "skynet_timer.h"
}
#include <cstdlib>

static_assert(PTYPE_TEXT == 0 && PTYPE_RESPONSE == 1 && PTYPE_CLIENT == 3 && PTYPE_RESERVED_LUA == 10,
              "skynet's PTYPE numbers");
static_assert(PTYPE_TAG_DONTCOPY == 0x10000 && PTYPE_TAG_ALLOCSESSION == 0x20000, "skynet's tags");

int (*check_send)(skynet_context *, uint32_t, uint32_t, int, int, void *, size_t) = skynet_send;
int (*check_sendname)(skynet_context *, uint32_t, const char *, int, int, void *, size_t) = skynet_sendname;
void (*check_callback)(skynet_context *, void *, skynet_cb) = skynet_callback;
int (*check_newsession)(skynet_context *) = skynet_context_newsession;
const char *(*check_command)(skynet_context *, const char *, const char *) = skynet_command;
void (*check_error)(skynet_context *, const char *, ...) = skynet_error;
const char *(*check_getenv)(const char *) = skynet_getenv;
void (*check_setenv)(const char *, const char *) = skynet_setenv;
int (*check_timeout)(uint32_t, int, int) = skynet_timeout;
uint32_t (*check_handle)(skynet_context *) = skynet_context_handle;
uint32_t (*check_current)() = skynet_current_handle;
int (*check_retire)(uint32_t) = skynet_handle_retire;
skynet_context *(*check_new)(const char *, const char *) = skynet_context_new;
uint32_t (*check_queryname)(skynet_context *, const char *) = skynet_queryname;
uint64_t (*check_now)() = skynet_now;

void *check_alloc(size_t n) {
    void *p = skynet_malloc(n);
    std::free(p);
    return skynet_malloc(n + 1);
}
