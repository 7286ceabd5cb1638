/* bee-capi: skynet_error, the one C-variadic function of skynet's C API.
 *
 * Stable Rust cannot define a C-variadic function, so this shim formats the message with
 * vsnprintf and hands the finished text to bee_capi_log (Rust), which writes one line in
 * the node's log tagged with the service. Messages longer than the stack buffer are
 * formatted again into a heap block; if that fails the text is cut at the buffer size.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

struct skynet_context;

/* Implemented in Rust (crates/bee-capi/src/lib.rs). `text` is not NUL-terminated. */
void bee_capi_log(struct skynet_context *context, const char *text, size_t len);

void skynet_error(struct skynet_context *context, const char *msg, ...) {
	char small[512];
	va_list ap;
	int n;
	if (msg == NULL) {
		bee_capi_log(context, "(null format)", 13);
		return;
	}
	va_start(ap, msg);
	n = vsnprintf(small, sizeof(small), msg, ap);
	va_end(ap);
	if (n < 0) {
		bee_capi_log(context, "(skynet_error: bad format)", 26);
		return;
	}
	if ((size_t)n < sizeof(small)) {
		bee_capi_log(context, small, (size_t)n);
		return;
	}
	{
		char *big = malloc((size_t)n + 1);
		if (big == NULL) {
			bee_capi_log(context, small, sizeof(small) - 1);
			return;
		}
		va_start(ap, msg);
		n = vsnprintf(big, (size_t)n + 1, msg, ap);
		va_end(ap);
		bee_capi_log(context, big, n < 0 ? 0 : (size_t)n);
		free(big);
	}
}
