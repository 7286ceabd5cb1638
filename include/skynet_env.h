/* bee: skynet's C API subset for native service modules (the node's environment).
 * bee's own header; names and signatures are skynet v1.6.0's. See docs/native.md.
 */
#ifndef SKYNET_ENV_H
#define SKYNET_ENV_H

#ifdef __cplusplus
extern "C" {
#endif

const char *skynet_getenv(const char *key);
void skynet_setenv(const char *key, const char *value);

#ifdef __cplusplus
}
#endif

#endif /* SKYNET_ENV_H */
