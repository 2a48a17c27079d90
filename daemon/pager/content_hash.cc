#include "daemon/pager/content_hash.h"

#include <sys/random.h>
// Inlined: neither memfedd nor libmemfed needs libxxhash at run time.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <chrono>

#include "daemon/pager/uffd.h"

namespace memfed::pager
{

uint64_t content_hash_key()
{
	uint64_t key = 0;
	if (getrandom(&key, sizeof(key), 0) != ssize_t(sizeof(key)))
		key = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
	return key;
}

uint64_t content_hash_baseline(const void *page, uint64_t key)
{
	return XXH3_64bits_withSeed(page, kPageSize, key);
}

uint64_t content_hash(const void *page, uint64_t key)
{
	// __builtin_cpu_init: libmemfed-preload.so may hash before the
	// constructor that fills in the CPU's features has run.
	static const bool avx2 = [] {
		__builtin_cpu_init();
		return __builtin_cpu_supports("avx2") != 0;
	}();
	return avx2 ? content_hash_avx2(page, key) : content_hash_baseline(page, key);
}

} // namespace memfed::pager
