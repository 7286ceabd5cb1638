/* bee: skynet's C API subset for native service modules.
 *
 * Allocation. In bee a module's memory comes from the C allocator: skynet_malloc is
 * malloc and skynet_free is free, so a block may be released with either name. A message
 * sent with PTYPE_TAG_DONTCOPY must come from this allocator: bee frees it with free().
 */
#ifndef skynet_malloc_h
#define skynet_malloc_h

#include <stddef.h>
#include <stdlib.h>

#define skynet_malloc malloc
#define skynet_calloc calloc
#define skynet_realloc realloc
#define skynet_free free

#endif /* skynet_malloc_h */
