// The state libmemfed-preload.so shares between its hooks: the run's
// configuration, the process's PagerLink and the remote heap.
//
// Set up once by the library constructor (shim.cc) from MEMFED_RUN; torn down
// never (the process's exit closes the connection, and memfedctl run deletes
// the heap regions). The hooks in malloc_hooks.cc, mmap_hooks.cc and
// file_hooks.cc consult it.
//
// Thread-safety: `ready` is set once before any concurrent use; heap_mu
// guards the range allocator; the PagerLink is thread-safe.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>

#include "libclient/pager_link.h"
#include "libclient/preload/range_allocator.h"
#include "libclient/run_config.h"

namespace memfed::preload
{

struct Shim {
	client::RunConfig cfg;
	std::unique_ptr<client::PagerLink> link; // null until first needed
	std::mutex link_mu;                      // guards creating `link`

	// The remote heap: [heap_base, heap_base + heap_size), registered with
	// the uffd and backed by region heap_region.
	uint64_t heap_base = 0;
	uint64_t heap_size = 0;
	std::string heap_region;
	std::mutex heap_mu;
	std::optional<RangeAllocator> ranges;
};

// The shim, or nullptr when MEMFED_RUN was not set (everything passes through).
Shim *shim();
// True once the heap is registered and anonymous mmaps go to it.
bool heap_ready();
// The PagerLink, connecting on first use. REQUIRES: inside an InternalScope.
Result<client::PagerLink *> shim_link();

// Raw system calls that bypass every hook.
void *raw_mmap(void *addr, size_t len, int prot, int flags, int fd, long off);
int raw_munmap(void *addr, size_t len);
int raw_madvise(void *addr, size_t len, int advice);
int raw_mprotect(void *addr, size_t len, int prot);

// Writes "memfed preload: <msg>\n" to stderr without allocating.
void shim_log(const char *msg);

} // namespace memfed::preload
