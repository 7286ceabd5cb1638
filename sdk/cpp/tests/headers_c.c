/* Compiles every header of include/ as C (built by cservices/Makefile, target headers). */
#include "skynet.h"
#include "skynet_env.h"
#include "skynet_handle.h"
#include "skynet_harbor.h"
#include "skynet_malloc.h"
#include "skynet_server.h"
#include "skynet_socket.h"
#include "skynet_timer.h"

/* Each declaration is used with its exact type, so a wrong signature fails to build. */
int (*const check_send)(struct skynet_context *, uint32_t, uint32_t, int, int, void *, size_t) = skynet_send;
int (*const check_sendname)(struct skynet_context *, uint32_t, const char *, int, int, void *, size_t) = skynet_sendname;
void (*const check_callback)(struct skynet_context *, void *, skynet_cb) = skynet_callback;
int (*const check_newsession)(struct skynet_context *) = skynet_context_newsession;
const char *(*const check_command)(struct skynet_context *, const char *, const char *) = skynet_command;
void (*const check_error)(struct skynet_context *, const char *, ...) = skynet_error;
const char *(*const check_getenv)(const char *) = skynet_getenv;
void (*const check_setenv)(const char *, const char *) = skynet_setenv;
int (*const check_timeout)(uint32_t, int, int) = skynet_timeout;
uint32_t (*const check_handle)(struct skynet_context *) = skynet_context_handle;
uint32_t (*const check_current)(void) = skynet_current_handle;
int (*const check_retire)(uint32_t) = skynet_handle_retire;
struct skynet_context *(*const check_new)(const char *, const char *) = skynet_context_new;
uint32_t (*const check_queryname)(struct skynet_context *, const char *) = skynet_queryname;
uint64_t (*const check_now)(void) = skynet_now;

void *check_alloc(size_t n) {
	void *p = skynet_malloc(n);
	free(p); /* the same allocator under either name */
	p = malloc(n);
	skynet_free(p);
	return skynet_malloc(PTYPE_TEXT + PTYPE_RESPONSE + PTYPE_CLIENT + PTYPE_RESERVED_LUA + 1);
}

int check_flags(void) {
	return (PTYPE_TAG_DONTCOPY | PTYPE_TAG_ALLOCSESSION) == 0x30000 && HANDLE_MASK == 0xffffff &&
	       sizeof(struct skynet_socket_message) > 0 && sizeof(struct remote_message) > 0;
}
