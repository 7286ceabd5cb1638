/* bee: skynet's C API subset for native service modules.
 *
 * These are bee's own headers. They declare, with skynet v1.6.0's names and signatures,
 * the part of skynet's C API that a bee node implements, so a module written for skynet
 * builds against them unchanged. See docs/native.md for what each call does in bee.
 */
#ifndef SKYNET_H
#define SKYNET_H

#include "skynet_malloc.h"

#include <stddef.h>
#include <stdint.h>

/* Message types (the `type` argument of skynet_send and of a module's callback). */
#define PTYPE_TEXT 0
#define PTYPE_RESPONSE 1
#define PTYPE_MULTICAST 2
#define PTYPE_CLIENT 3
#define PTYPE_SYSTEM 4
#define PTYPE_HARBOR 5
#define PTYPE_SOCKET 6
#define PTYPE_ERROR 7
#define PTYPE_RESERVED_QUEUE 8
#define PTYPE_RESERVED_DEBUG 9
#define PTYPE_RESERVED_LUA 10
#define PTYPE_RESERVED_SNAX 11

/* Flags or-ed into the type given to skynet_send / skynet_sendname. */
#define PTYPE_TAG_DONTCOPY 0x10000     /* msg (from skynet_malloc) changes owner */
#define PTYPE_TAG_ALLOCSESSION 0x20000 /* the host picks a new session, returned */

#ifdef __cplusplus
extern "C" {
#endif

/* A service instance inside the host; modules only hold pointers to it. */
struct skynet_context;

/* A module's message callback. Returning 0 lets the host free `msg`; non-zero keeps it
 * (the module then owns it and releases it with skynet_free). */
typedef int (*skynet_cb)(struct skynet_context *context, void *ud, int type, int session,
                         uint32_t source, const void *msg, size_t sz);

void skynet_error(struct skynet_context *context, const char *msg, ...);
const char *skynet_command(struct skynet_context *context, const char *cmd, const char *parm);
uint32_t skynet_queryname(struct skynet_context *context, const char *name);
int skynet_send(struct skynet_context *context, uint32_t source, uint32_t destination,
                int type, int session, void *msg, size_t sz);
int skynet_sendname(struct skynet_context *context, uint32_t source, const char *destination,
                    int type, int session, void *msg, size_t sz);
void skynet_callback(struct skynet_context *context, void *ud, skynet_cb cb);
uint32_t skynet_current_handle(void);
uint64_t skynet_now(void);

#ifdef __cplusplus
}
#endif

#endif /* SKYNET_H */
