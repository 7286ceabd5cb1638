/* bee: skynet's C API subset for native service modules (harbor).
 * bee's own header. bee has no harbor (every handle's harbor byte is 0) and implements no
 * harbor call; this header exists so code that includes it builds.
 */
#ifndef SKYNET_HARBOR_H
#define SKYNET_HARBOR_H

#include <stdint.h>
#include <stdlib.h>

#define GLOBALNAME_LENGTH 16
#define REMOTE_MAX 256

struct remote_name {
	char name[GLOBALNAME_LENGTH];
	uint32_t handle;
};

struct remote_message {
	struct remote_name destination;
	const void *message;
	size_t sz;
	int type;
};

#endif /* SKYNET_HARBOR_H */
