/* bee: skynet's C API subset for native service modules (timers).
 * bee's own header; names and signatures are skynet v1.6.0's. See docs/native.md.
 */
#ifndef SKYNET_TIMER_H
#define SKYNET_TIMER_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* After `time` hundredths of a second, the service `handle` receives a PTYPE_RESPONSE
 * message with source 0, this session and no data. Returns the session, or -1. */
int skynet_timeout(uint32_t handle, int time, int session);

#ifdef __cplusplus
}
#endif

#endif /* SKYNET_TIMER_H */
