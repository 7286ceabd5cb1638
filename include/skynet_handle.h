/* bee: skynet's C API subset for native service modules (service handles).
 * bee's own header; names and signatures are skynet v1.6.0's. See docs/native.md.
 */
#ifndef SKYNET_CONTEXT_HANDLE_H
#define SKYNET_CONTEXT_HANDLE_H

#include <stdint.h>

/* A handle's low 24 bits number the service; the top 8 bits are the harbor (0 in bee). */
#define HANDLE_MASK 0xffffff
#define HANDLE_REMOTE_SHIFT 24

#ifdef __cplusplus
extern "C" {
#endif

struct skynet_context;

int skynet_handle_retire(uint32_t handle);

#ifdef __cplusplus
}
#endif

#endif /* SKYNET_CONTEXT_HANDLE_H */
