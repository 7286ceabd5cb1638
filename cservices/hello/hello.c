/* hello: a skynet C service module written only against skynet's C API (include/), no
 * bee SDK. It proves that a module made for skynet loads into a bee node and answers.
 *
 *   create: remembers skynet_current_handle(): in skynet, the service that launched
 *          this one (0 when the node itself started it).
 *   init:  asks its own handle with skynet_command(ctx, "REG", NULL), registers the
 *          local name given as parameter (default ".hello") with skynet_command "REG",
 *          reads skynet_getenv("harbor"), logs one line (with the launcher's handle as
 *          create and init saw it), installs its callback.
 *   PTYPE_TEXT with session != 0: answers the source with PTYPE_RESPONSE, the same
 *          session, and the bytes "hello:" followed by the request's bytes (sent with
 *          PTYPE_TAG_DONTCOPY from skynet_malloc).
 *   PTYPE_TEXT with session 0: counted and logged, no answer.
 *   anything else: logged and dropped.
 */
#include "skynet.h"
#include "skynet_env.h"
#include "skynet_server.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#if defined(__GNUC__)
#define HELLO_EXPORT __attribute__((visibility("default")))
#else
#define HELLO_EXPORT
#endif

struct hello {
	uint32_t handle;
	uint32_t launcher_at_create;
	int answered;
	int pushed;
};

static const char prefix[] = "hello:";

static int hello_cb(struct skynet_context *ctx, void *ud, int type, int session, uint32_t source,
                    const void *msg, size_t sz) {
	struct hello *h = ud;
	if (type != PTYPE_TEXT) {
		skynet_error(ctx, "hello: message of type %d from :%08x dropped", type, (unsigned)source);
		return 0;
	}
	if (session == 0) {
		h->pushed++;
		skynet_error(ctx, "hello: push of %u bytes from :%08x (no answer wanted)", (unsigned)sz,
		             (unsigned)source);
		return 0;
	}
	size_t n = sizeof(prefix) - 1 + sz;
	char *out = skynet_malloc(n);
	if (out == NULL) {
		skynet_error(ctx, "hello: out of memory answering :%08x", (unsigned)source);
		return 0;
	}
	memcpy(out, prefix, sizeof(prefix) - 1);
	if (sz > 0)
		memcpy(out + sizeof(prefix) - 1, msg, sz);
	/* DONTCOPY: the host owns `out` from here on, whatever skynet_send returns. */
	if (skynet_send(ctx, 0, source, PTYPE_RESPONSE | PTYPE_TAG_DONTCOPY, session, out, n) < 0) {
		skynet_error(ctx, "hello: answer to :%08x (session %d) not delivered", (unsigned)source, session);
		return 0;
	}
	h->answered++;
	return 0;
}

HELLO_EXPORT struct hello *hello_create(void) {
	struct hello *h = skynet_malloc(sizeof(*h));
	if (h != NULL) {
		memset(h, 0, sizeof(*h));
		h->launcher_at_create = skynet_current_handle();
	}
	return h;
}

HELLO_EXPORT int hello_init(struct hello *h, struct skynet_context *ctx, const char *parm) {
	if (h == NULL)
		return 1;
	/* skynet_command's answer lives in a buffer of the context that the next command
	 * overwrites: copy it. */
	char self[32];
	const char *reg = skynet_command(ctx, "REG", NULL);
	const char *name = (parm != NULL && parm[0] != '\0') ? parm : ".hello";
	const char *harbor = skynet_getenv("harbor");
	h->handle = skynet_context_handle(ctx);
	if (reg == NULL || harbor == NULL) {
		skynet_error(ctx, "hello: the host lacks REG or the harbor setting");
		return 1;
	}
	snprintf(self, sizeof(self), "%s", reg);
	if (skynet_command(ctx, "REG", name) == NULL) {
		skynet_error(ctx, "hello: cannot register the name %s", name);
		return 1;
	}
	skynet_error(ctx, "hello: started as %s, named %s, harbor %s, launched by :%08x (create) :%08x (init)",
	             self, name, harbor, (unsigned)h->launcher_at_create, (unsigned)skynet_current_handle());
	skynet_callback(ctx, h, hello_cb);
	return 0;
}

HELLO_EXPORT void hello_release(struct hello *h) {
	skynet_free(h);
}

HELLO_EXPORT void hello_signal(struct hello *h, int signal) {
	(void)h;
	(void)signal;
}
