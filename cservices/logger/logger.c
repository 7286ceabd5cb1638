/* logger: a log service module written only against skynet's C API (include/), with the
 * environment contract of the game team's own logger, so a node config made for theirs
 * runs this one unchanged. Load it first: other modules send it their lines.
 *
 *   env:   log_dir     directory of the log file
 *          log_name    the file is <log_dir>/<log_name>.log; "stdout" writes to stderr
 *          logbufsecs  seconds a line may wait in the buffer before it is written out
 *                      (0: every line at once)
 *          All three must be set: a missing one is a failed init naming it (the team's
 *          logger would crash on it).
 *   init:  registers the local name ".logger".
 *   PTYPE_TEXT: one line "[:%08x] <text>" (the sender's handle; no prefix from source 0).
 *          A leading "BEEI ", "BEEW " or "BEEE " (the team's level tags) becomes "I ",
 *          "W " or "E " after the handle.
 *   anything else: ignored.
 */
#include "skynet.h"
#include "skynet_env.h"
#include "skynet_server.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define LOGGER_EXPORT __attribute__((visibility("default")))
#else
#define LOGGER_EXPORT
#endif

struct logger {
	FILE *out;
	int close_out;
	uint64_t flush_every; /* hundredths of a second */
	uint64_t last_flush;
};

LOGGER_EXPORT struct logger *logger_create(void) {
	struct logger *l = skynet_malloc(sizeof(*l));
	if (l != NULL)
		memset(l, 0, sizeof(*l));
	return l;
}

LOGGER_EXPORT void logger_release(struct logger *l) {
	if (l == NULL)
		return;
	if (l->out != NULL) {
		fflush(l->out);
		if (l->close_out)
			fclose(l->out);
	}
	skynet_free(l);
}

static int logger_cb(struct skynet_context *ctx, void *ud, int type, int session, uint32_t source,
                     const void *msg, size_t sz) {
	struct logger *l = ud;
	(void)ctx;
	(void)session;
	if (type != PTYPE_TEXT)
		return 0;
	const char *text = msg;
	const char *level = NULL;
	if (sz >= 5 && memcmp(text, "BEE", 3) == 0 && text[4] == ' ' &&
	    (text[3] == 'I' || text[3] == 'W' || text[3] == 'E')) {
		level = text[3] == 'I' ? "I " : text[3] == 'W' ? "W " : "E ";
		text += 5;
		sz -= 5;
	}
	if (source != 0)
		fprintf(l->out, "[:%08x] ", (unsigned)source);
	if (level != NULL)
		fputs(level, l->out);
	fwrite(text, 1, sz, l->out);
	fputc('\n', l->out);
	uint64_t now = skynet_now();
	if (l->flush_every == 0 || now - l->last_flush >= l->flush_every) {
		fflush(l->out);
		l->last_flush = now;
	}
	return 0;
}

LOGGER_EXPORT int logger_init(struct logger *l, struct skynet_context *ctx, const char *parm) {
	(void)parm;
	if (l == NULL)
		return 1;
	const char *dir = skynet_getenv("log_dir");
	const char *name = skynet_getenv("log_name");
	const char *bufsecs = skynet_getenv("logbufsecs");
	const char *missing = dir == NULL ? "log_dir" : name == NULL ? "log_name" : bufsecs == NULL ? "logbufsecs" : NULL;
	if (missing != NULL) {
		skynet_error(ctx, "logger: the environment has no %s (set log_dir, log_name, logbufsecs)", missing);
		return 1;
	}
	char *end = NULL;
	long secs = strtol(bufsecs, &end, 10);
	if (*bufsecs == '\0' || *end != '\0' || secs < 0 || secs > 3600) {
		skynet_error(ctx, "logger: logbufsecs=%s is not a number of seconds in 0..3600", bufsecs);
		return 1;
	}
	l->flush_every = (uint64_t)secs * 100;
	if (strcmp(name, "stdout") == 0) {
		l->out = stderr;
	} else {
		size_t n = strlen(dir) + strlen(name) + 6;
		char *path = skynet_malloc(n);
		if (path == NULL)
			return 1;
		snprintf(path, n, "%s/%s.log", dir, name);
		l->out = fopen(path, "a");
		if (l->out == NULL) {
			skynet_error(ctx, "logger: cannot open %s: %s", path, strerror(errno));
			skynet_free(path);
			return 1;
		}
		l->close_out = 1;
		skynet_free(path);
	}
	if (skynet_command(ctx, "REG", ".logger") == NULL) {
		skynet_error(ctx, "logger: the name .logger is taken");
		return 1;
	}
	l->last_flush = skynet_now();
	skynet_callback(ctx, l, logger_cb);
	return 0;
}
