// Anonymous memory of the program under memfedctl run: every private
// anonymous mmap() (the program's own and mimalloc's) is carved out of the
// remote heap by the RangeAllocator, so all of it is paged by memfedd within
// the heap budget. munmap() and MAP_FIXED remaps of heap memory are emulated
// without unmapping (which would drop the userfaultfd registration): the pages
// are discarded with MADV_DONTNEED, which the pager sees, so they read as
// zeroes when reused. Everything else goes to the kernel unchanged, and file
// mappings of memfed paths are handed to file_hooks.cc.
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>

#include "libclient/preload/file_hooks.h"
#include "libclient/preload/internal_alloc.h"
#include "libclient/preload/shim.h"

using namespace memfed::preload;

#define EXPORT extern "C" __attribute__((visibility("default")))

namespace
{

constexpr uint64_t kPage = 4096;
constexpr int kHeapFlagsRejected =
        MAP_FIXED | MAP_FIXED_NOREPLACE | MAP_GROWSDOWN | MAP_STACK | MAP_HUGETLB | MAP_32BIT;

uint64_t page_up(uint64_t n)
{
	return (n + kPage - 1) & ~(kPage - 1);
}

bool in_heap(uint64_t addr, uint64_t len)
{
	Shim *s = shim();
	return s && s->heap_size && addr < s->heap_base + s->heap_size && addr + len > s->heap_base;
}

// MADV_DONTNEED on heap memory, told to the pager link, so that a memfedd
// restarted meanwhile still learns that those pages are zero now
// (PagerLink::remove_begin).
int heap_discard(uint64_t addr, uint64_t len)
{
	Shim *s = shim();
	memfed::client::PagerLink *link = s ? s->link.get() : nullptr;
	// The link's bookkeeping stays off the remote heap (internal_alloc.h).
	InternalScope in;
	uint64_t token = link ? link->remove_begin(addr, len) : 0;
	int rc = raw_madvise(reinterpret_cast<void *>(addr), len, MADV_DONTNEED);
	int err = errno;
	if (link)
		link->remove_end(addr, len, token);
	errno = err;
	return rc;
}

// Discards the heap pages of [addr, addr+len) and gives them back.
void heap_release(uint64_t addr, uint64_t len)
{
	Shim *s = shim();
	uint64_t lo = std::max(addr, s->heap_base);
	uint64_t hi = std::min(addr + len, s->heap_base + s->heap_size);
	heap_discard(lo, hi - lo);
	raw_mprotect(reinterpret_cast<void *>(lo), hi - lo, PROT_READ | PROT_WRITE);
	std::lock_guard<std::mutex> lk(s->heap_mu);
	s->ranges->release(lo, hi - lo);
}

void *heap_mmap(size_t len, int prot)
{
	Shim *s = shim();
	uint64_t n = page_up(len);
	std::optional<uint64_t> at;
	{
		std::lock_guard<std::mutex> lk(s->heap_mu);
		at = s->ranges->allocate(n);
	}
	if (!at) {
		static std::atomic<bool> warned{false};
		if (!warned.exchange(true))
			shim_log("the remote heap is full; further memory is local "
			         "(raise memfedctl run --heap-size)");
		return nullptr;
	}
	void *p = reinterpret_cast<void *>(*at);
	if (prot != (PROT_READ | PROT_WRITE) && raw_mprotect(p, n, prot) < 0) {
		int err = errno;
		heap_release(*at, n);
		errno = err;
		return MAP_FAILED;
	}
	return p;
}

} // namespace

EXPORT void *mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	if (t_internal || !shim())
		return raw_mmap(addr, len, prot, flags, fd, off);
	InternalScope in;
	if (!(flags & MAP_ANONYMOUS) && fd >= 0 && file_is_memfed(fd))
		return file_mmap(addr, len, prot, flags, fd, off);
	if (!heap_ready())
		return raw_mmap(addr, len, prot, flags, fd, off);
	uint64_t a = reinterpret_cast<uint64_t>(addr);
	bool anon_private = (flags & MAP_ANONYMOUS) && (flags & MAP_TYPE) == MAP_PRIVATE;
	if ((flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) && in_heap(a, len)) {
		Shim *s = shim();
		bool inside = a >= s->heap_base && a + len <= s->heap_base + s->heap_size;
		if (!anon_private || !inside || (flags & MAP_FIXED_NOREPLACE) || a % kPage) {
			errno = (flags & MAP_FIXED_NOREPLACE) ? EEXIST : EINVAL;
			return MAP_FAILED;
		}
		// A fresh private anonymous mapping over heap memory: fresh
		// zero pages with the new protection, still in the heap.
		uint64_t n = page_up(len);
		heap_discard(a, n);
		if (raw_mprotect(addr, n, prot) < 0)
			return MAP_FAILED;
		std::lock_guard<std::mutex> lk(s->heap_mu);
		s->ranges->take(a, n);
		return addr;
	}
	if (anon_private && !(flags & kHeapFlagsRejected) && len > 0) {
		void *p = heap_mmap(len, prot);
		if (p)
			return p;
	}
	return raw_mmap(addr, len, prot, flags, fd, off);
}

EXPORT void *mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return mmap(addr, len, prot, flags, fd, off);
}

EXPORT int munmap(void *addr, size_t len)
{
	uint64_t a = reinterpret_cast<uint64_t>(addr);
	if (t_internal || !shim())
		return raw_munmap(addr, len);
	InternalScope in;
	if (file_munmap(addr, len))
		return 0;
	if (!heap_ready() || !in_heap(a, len))
		return raw_munmap(addr, len);
	if (a % kPage || len == 0) {
		errno = EINVAL;
		return -1;
	}
	Shim *s = shim();
	uint64_t n = page_up(len);
	// Parts outside the heap are ordinary mappings.
	if (a < s->heap_base)
		raw_munmap(addr, s->heap_base - a);
	if (a + n > s->heap_base + s->heap_size)
		raw_munmap(reinterpret_cast<void *>(s->heap_base + s->heap_size),
		           a + n - (s->heap_base + s->heap_size));
	heap_release(a, n);
	return 0;
}

EXPORT void *mremap(void *old, size_t old_len, size_t new_len, int flags, ...)
{
	void *new_addr = nullptr;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_addr = va_arg(ap, void *);
		va_end(ap);
	}
	uint64_t a = reinterpret_cast<uint64_t>(old);
	if (t_internal || !heap_ready() || !in_heap(a, old_len))
		return reinterpret_cast<void *>(
		        syscall(SYS_mremap, old, old_len, new_len, flags, new_addr));
	InternalScope in;
	uint64_t on = page_up(old_len), nn = page_up(new_len);
	if (nn <= on) {
		if (nn < on)
			heap_release(a + nn, on - nn);
		return old;
	}
	if (!(flags & MREMAP_MAYMOVE) || (flags & MREMAP_FIXED)) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	void *p = heap_mmap(nn, PROT_READ | PROT_WRITE);
	if (!p) {
		errno = ENOMEM;
		return MAP_FAILED;
	}
	memcpy(p, old, on);
	heap_release(a, on);
	return p;
}

EXPORT int madvise(void *addr, size_t len, int advice)
{
	uint64_t a = reinterpret_cast<uint64_t>(addr);
	// MADV_FREE leaves it to the kernel whether the old bytes survive; in
	// the heap make it definite, so the pager and the program agree.
	if (advice == MADV_FREE && !t_internal && heap_ready() && in_heap(a, len))
		advice = MADV_DONTNEED;
	if (advice == MADV_DONTNEED && heap_ready() && in_heap(a, len))
		return heap_discard(a, len);
	// MADV_POPULATE_READ/WRITE fault in every page of the range now. A
	// native populate-read of untouched memory maps the shared zero page
	// and costs nothing; in the heap every page is fetched and counted in
	// the budget, so a range larger than the budget pushes out its own
	// first pages before the call returns (stress-ng --vm populates its
	// whole buffer so). Such a populate is skipped: it changes no byte, and
	// the pages come in when touched, as they would have. A range within
	// the budget, or a misaligned one (the kernel's EINVAL), goes through.
	if ((advice == MADV_POPULATE_READ || advice == MADV_POPULATE_WRITE) &&
	    (a & (kPage - 1)) == 0 && heap_ready() && in_heap(a, len) &&
	    len > shim()->cfg.heap_budget)
		return 0;
	return raw_madvise(addr, len, advice);
}
