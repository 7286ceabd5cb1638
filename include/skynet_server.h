/* bee: skynet's C API subset for native service modules (service contexts).
 * bee's own header; names and signatures are skynet v1.6.0's. See docs/native.md.
 */
#ifndef SKYNET_SERVER_H
#define SKYNET_SERVER_H

#include <stdint.h>
#include <stdlib.h>

#ifdef __cplusplus
extern "C" {
#endif

struct skynet_context;

struct skynet_context *skynet_context_new(const char *name, const char *parm);
uint32_t skynet_context_handle(struct skynet_context *);
int skynet_context_newsession(struct skynet_context *);

#ifdef __cplusplus
}
#endif

#endif /* SKYNET_SERVER_H */
