/* bee: skynet's C API subset for native service modules (sockets).
 * bee's own header. bee implements no socket call for modules; this header exists so
 * code that includes it builds, and names skynet v1.6.0's socket message layout.
 */
#ifndef skynet_socket_h
#define skynet_socket_h

#include <stddef.h>

struct skynet_context;

#define SKYNET_SOCKET_TYPE_DATA 1
#define SKYNET_SOCKET_TYPE_CONNECT 2
#define SKYNET_SOCKET_TYPE_CLOSE 3
#define SKYNET_SOCKET_TYPE_ACCEPT 4
#define SKYNET_SOCKET_TYPE_ERROR 5
#define SKYNET_SOCKET_TYPE_UDP 6
#define SKYNET_SOCKET_TYPE_WARNING 7

struct skynet_socket_message {
	int type;
	int id;
	int ud;
	char *buffer;
};

#endif /* skynet_socket_h */
