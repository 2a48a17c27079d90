// InternalAlloc: the preload shim's own allocator, for the shim's bookkeeping
// (JSON messages, strings, the mapping list) while the program's heap lives
// in remote memory.
//
// The shim must never touch the program's heap itself: in a forked child the
// heap is unregistered until the shim has attached again, and a page touched
// then would silently read as zeroes. So while a thread runs shim code
// (InternalScope), malloc and friends are served from a private, local,
// never-registered area here. Size classes of powers of two from 16 bytes to
// 16 MiB with per-class free lists; the area is reserved once (MAP_NORESERVE)
// and only the pages used become resident.
//
// Thread-safety: all functions are thread-safe (one spinlock). lock_all() and
// unlock_all() bracket fork() so the child never inherits a held lock.
#pragma once

#include <cstddef>

namespace memfed::preload
{

// Nesting depth of shim code on this thread; > 0 routes allocations here.
extern __thread int t_internal __attribute__((tls_model("initial-exec")));

// Allocations made before the remote heap exists (by ld.so, libc and the
// libraries' constructors) are served here too: mimalloc would otherwise
// take its first segment from local memory and keep filling it afterwards.
// REQUIRES: heap_pending() is cheap; heap_settled() is called once the heap
// is registered, or when this process has no remote heap.
bool heap_pending();
void heap_settled();

struct InternalScope {
	InternalScope() { t_internal++; }
	~InternalScope() { t_internal--; }
	InternalScope(const InternalScope &) = delete;
	InternalScope &operator=(const InternalScope &) = delete;
};

// nullptr when out of memory (errno ENOMEM). `align` is a power of two.
void *internal_alloc(size_t size, size_t align = 16);
void internal_free(void *p);
void *internal_realloc(void *p, size_t size);
size_t internal_usable_size(const void *p);
// True if `p` came from internal_alloc.
bool internal_owns(const void *p);

void internal_lock_all();
void internal_unlock_all();

} // namespace memfed::preload
