// The allocator of the program under memfedctl run: mimalloc, whose memory
// comes from anonymous mmap() calls that mmap_hooks.cc serves from the remote
// heap. Shim code (InternalScope) is served by InternalAlloc instead. Every
// entry point of glibc's malloc is replaced, so brk is never used.
#include <errno.h>
#include <mimalloc.h>
#include <stddef.h>

#include "libclient/preload/internal_alloc.h"

using namespace memfed::preload;

#define EXPORT extern "C" __attribute__((visibility("default")))

EXPORT void *malloc(size_t n)
{
	if (t_internal)
		return internal_alloc(n);
	return mi_malloc(n);
}

EXPORT void free(void *p)
{
	if (!p)
		return;
	if (internal_owns(p))
		internal_free(p);
	else
		mi_free(p);
}

EXPORT void *calloc(size_t n, size_t size)
{
	if (t_internal) {
		size_t total;
		if (__builtin_mul_overflow(n, size, &total)) {
			errno = ENOMEM;
			return nullptr;
		}
		void *p = internal_alloc(total);
		if (p)
			__builtin_memset(p, 0, total);
		return p;
	}
	return mi_calloc(n, size);
}

EXPORT void *realloc(void *p, size_t n)
{
	if (p && internal_owns(p))
		return internal_realloc(p, n);
	if (!p && t_internal)
		return internal_alloc(n);
	return mi_realloc(p, n);
}

EXPORT void *reallocarray(void *p, size_t n, size_t size)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return nullptr;
	}
	return realloc(p, total);
}

EXPORT int posix_memalign(void **out, size_t align, size_t n)
{
	if (t_internal) {
		if (align % sizeof(void *) || (align & (align - 1)))
			return EINVAL;
		void *p = internal_alloc(n, align);
		if (!p)
			return ENOMEM;
		*out = p;
		return 0;
	}
	return mi_posix_memalign(out, align, n);
}

EXPORT void *aligned_alloc(size_t align, size_t n)
{
	if (t_internal)
		return internal_alloc(n, align);
	return mi_aligned_alloc(align, n);
}

EXPORT void *memalign(size_t align, size_t n)
{
	if (t_internal)
		return internal_alloc(n, align);
	return mi_memalign(align, n);
}

EXPORT void *valloc(size_t n)
{
	if (t_internal)
		return internal_alloc(n, 4096);
	return mi_valloc(n);
}

EXPORT void *pvalloc(size_t n)
{
	if (t_internal)
		return internal_alloc((n + 4095) & ~size_t{4095}, 4096);
	return mi_pvalloc(n);
}

EXPORT size_t malloc_usable_size(void *p)
{
	if (!p)
		return 0;
	if (internal_owns(p))
		return internal_usable_size(p);
	return mi_usable_size(p);
}
