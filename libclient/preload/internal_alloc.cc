#include "libclient/preload/internal_alloc.h"

#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>

namespace memfed::preload
{

__thread int t_internal __attribute__((tls_model("initial-exec"))) = 0;

namespace
{
// -1: not known yet; 1: MEMFED_RUN is set and the heap is not ready; 0: settled.
std::atomic<int> g_pending{-1};
} // namespace

bool heap_pending()
{
	int v = g_pending.load(std::memory_order_acquire);
	if (v < 0) {
		const char *env = getenv("MEMFED_RUN");
		v = env && *env ? 1 : 0;
		int expected = -1;
		g_pending.compare_exchange_strong(expected, v);
		v = g_pending.load(std::memory_order_acquire);
	}
	return v == 1;
}

void heap_settled()
{
	g_pending.store(0, std::memory_order_release);
}

namespace
{

constexpr size_t kAreaBytes = size_t{1} << 30; // reserved, not resident
constexpr int kMinShift = 4;                   // 16 bytes
constexpr int kMaxShift = 24;                  // 16 MiB
constexpr int kClasses = kMaxShift - kMinShift + 1;
constexpr uint32_t kMagic = 0x4d46494eu; // "MFIN"

// Precedes every pointer handed out.
struct Header {
	uint32_t magic;
	uint16_t cls;
	uint16_t pad;
	uint64_t offset; // from the block start to the user pointer
};
static_assert(sizeof(Header) == 16);

struct FreeBlock {
	FreeBlock *next;
};

std::atomic_flag g_lock = ATOMIC_FLAG_INIT;
uint8_t *g_area = nullptr;
size_t g_used = 0;
FreeBlock *g_free[kClasses];

void lock()
{
	while (g_lock.test_and_set(std::memory_order_acquire))
		syscall(SYS_sched_yield);
}
void unlock()
{
	g_lock.clear(std::memory_order_release);
}

int class_of(size_t bytes)
{
	int s = kMinShift;
	while ((size_t{1} << s) < bytes)
		s++;
	return s - kMinShift;
}

// REQUIRES: lock held.
uint8_t *block_alloc(int cls)
{
	if (g_free[cls]) {
		FreeBlock *b = g_free[cls];
		g_free[cls] = b->next;
		return reinterpret_cast<uint8_t *>(b);
	}
	if (!g_area) {
		long p = syscall(SYS_mmap, nullptr, kAreaBytes, PROT_READ | PROT_WRITE,
		                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == -1)
			return nullptr;
		g_area = reinterpret_cast<uint8_t *>(p);
	}
	size_t size = size_t{1} << (cls + kMinShift);
	// Blocks are aligned to their size (up to a page), so small alignments
	// come for free.
	size_t align = size < 4096 ? size : 4096;
	size_t at = (g_used + align - 1) & ~(align - 1);
	if (at + size > kAreaBytes)
		return nullptr;
	g_used = at + size;
	return g_area + at;
}

} // namespace

void *internal_alloc(size_t size, size_t align)
{
	if (align < 16)
		align = 16;
	size_t need = size + sizeof(Header) + (align > 16 ? align : 0);
	if (need < size || need > (size_t{1} << kMaxShift)) {
		errno = ENOMEM;
		return nullptr;
	}
	int cls = class_of(need);
	lock();
	uint8_t *b = block_alloc(cls);
	unlock();
	if (!b) {
		errno = ENOMEM;
		return nullptr;
	}
	uintptr_t user =
	        (reinterpret_cast<uintptr_t>(b) + sizeof(Header) + align - 1) & ~(align - 1);
	Header *h = reinterpret_cast<Header *>(user) - 1;
	h->magic = kMagic;
	h->cls = uint16_t(cls);
	h->pad = 0;
	h->offset = user - reinterpret_cast<uintptr_t>(b);
	return reinterpret_cast<void *>(user);
}

bool internal_owns(const void *p)
{
	auto a = reinterpret_cast<const uint8_t *>(p);
	return g_area && a >= g_area && a < g_area + kAreaBytes;
}

void internal_free(void *p)
{
	if (!p)
		return;
	Header *h = static_cast<Header *>(p) - 1;
	if (h->magic != kMagic) {
		static const char msg[] = "memfed preload: free() of a corrupt internal block\n";
		(void)!write(2, msg, sizeof(msg) - 1);
		abort();
	}
	auto *b = reinterpret_cast<FreeBlock *>(static_cast<uint8_t *>(p) - h->offset);
	int cls = h->cls;
	h->magic = 0;
	lock();
	b->next = g_free[cls];
	g_free[cls] = b;
	unlock();
}

size_t internal_usable_size(const void *p)
{
	const Header *h = static_cast<const Header *>(p) - 1;
	return (size_t{1} << (h->cls + kMinShift)) - h->offset;
}

void *internal_realloc(void *p, size_t size)
{
	if (!p)
		return internal_alloc(size);
	size_t have = internal_usable_size(p);
	if (size <= have)
		return p;
	void *n = internal_alloc(size);
	if (!n)
		return nullptr;
	std::memcpy(n, p, have);
	internal_free(p);
	return n;
}

void internal_lock_all()
{
	lock();
}
void internal_unlock_all()
{
	unlock();
}

} // namespace memfed::preload
