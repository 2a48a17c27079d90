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
#define EXPORT_CXX __attribute__((visibility("default")))

EXPORT void *malloc(size_t n)
{
	if (t_internal || heap_pending())
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
	if (t_internal || heap_pending()) {
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
	if (!p && (t_internal || heap_pending()))
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
	if (t_internal || heap_pending()) {
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
	if (t_internal || heap_pending())
		return internal_alloc(n, align);
	return mi_aligned_alloc(align, n);
}

EXPORT void *memalign(size_t align, size_t n)
{
	if (t_internal || heap_pending())
		return internal_alloc(n, align);
	return mi_memalign(align, n);
}

EXPORT void *valloc(size_t n)
{
	if (t_internal || heap_pending())
		return internal_alloc(n, 4096);
	return mi_valloc(n);
}

EXPORT void *pvalloc(size_t n)
{
	if (t_internal || heap_pending())
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

// C++ allocation. libmimalloc.so exports operator new and delete too, and
// may come before libstdc++ in the lookup order; defining them here keeps
// every allocation (the shim's own included) on the paths above.
#include <new>

namespace
{

void *new_or_throw(size_t n, size_t align)
{
	for (;;) {
		void *p = nullptr;
		if (align <= alignof(std::max_align_t))
			p = malloc(n ? n : 1);
		else if (posix_memalign(&p, align, n ? n : 1) != 0)
			p = nullptr;
		if (p)
			return p;
		std::new_handler h = std::get_new_handler();
		if (!h)
			throw std::bad_alloc();
		h();
	}
}

void *new_nothrow(size_t n, size_t align) noexcept
{
	try {
		return new_or_throw(n, align);
	} catch (...) {
		return nullptr;
	}
}

} // namespace

EXPORT_CXX void *operator new(size_t n)
{
	return new_or_throw(n, 0);
}
EXPORT_CXX void *operator new[](size_t n)
{
	return new_or_throw(n, 0);
}
EXPORT_CXX void *operator new(size_t n, const std::nothrow_t &) noexcept
{
	return new_nothrow(n, 0);
}
EXPORT_CXX void *operator new[](size_t n, const std::nothrow_t &) noexcept
{
	return new_nothrow(n, 0);
}
EXPORT_CXX void *operator new(size_t n, std::align_val_t a)
{
	return new_or_throw(n, size_t(a));
}
EXPORT_CXX void *operator new[](size_t n, std::align_val_t a)
{
	return new_or_throw(n, size_t(a));
}
EXPORT_CXX void *operator new(size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return new_nothrow(n, size_t(a));
}
EXPORT_CXX void *operator new[](size_t n, std::align_val_t a, const std::nothrow_t &) noexcept
{
	return new_nothrow(n, size_t(a));
}
EXPORT_CXX void operator delete(void *p) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete[](void *p) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete(void *p, size_t) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete[](void *p, size_t) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete(void *p, const std::nothrow_t &) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete[](void *p, const std::nothrow_t &) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete(void *p, std::align_val_t) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete[](void *p, std::align_val_t) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete(void *p, size_t, std::align_val_t) noexcept
{
	free(p);
}
EXPORT_CXX void operator delete[](void *p, size_t, std::align_val_t) noexcept
{
	free(p);
}
