// Refault distance: the access signal CLOCK lacks for pages that are read.
//
// CLOCK's reference bit (eviction_policy.h) is set when a page is
// installed and when WP_ASYNC finds it written (async_dirty.cc); a page
// that is only read gives the pager no sign of use at all, so CLOCK evicts
// it after at most two turns however often it is read. The kernel's LRU has
// the hardware's accessed bit; userfaultfd offers nothing like it, and
// PAGEMAP_SCAN reports writes only.
//
// What the pager does see is a page coming back. As the kernel's
// mm/workingset.c does, each eviction is stamped with a per-process count
// of pages evicted so far, and a fault on that page later reads the count
// again: the difference, the refault distance, is how many other pages
// left in between. Under uniform use of a footprint F at a budget B a
// page comes back after about F - B evictions; a page that comes back
// after less than half the budget's worth is used far more often than
// the rest, and would have stayed with any policy that saw its reads. It
// earns extra CLOCK turns (pager.refault_turns): the hand passes it over
// that many more times before it can be a victim. redis-server's hash
// table and its small objects are such pages: read on every request,
// scattered among large values read once in a while
// (doc/design/move-eviction.md, "What redis was waiting for next").
//
// Thread-safety: owned by the pager thread that owns the mapping.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <vector>

#include "daemon/pager/zeroed_allocator.h"

namespace memfed::pager
{

// Extra CLOCK turns for a page faulted back `distance` evictions after it
// left, under a budget of `budget` pages: `turns` if it came back within
// half the budget's worth of evictions, else none. No budget: none (nothing
// is evicted).
inline uint8_t refault_turns(uint32_t distance, uint64_t budget, uint8_t turns)
{
	return budget != 0 && distance < budget / 2 ? turns : 0;
}

// Per-page history of a private mapping, sized like its pages (zeroed
// storage: it costs memory only for pages that were evicted).
struct RefaultHistory {
	// The process's eviction count when the page was last picked as a
	// victim; 0: none since its last fault.
	std::vector<uint32_t, ZeroedAllocator<uint32_t>> evicted_at;
	// Extra CLOCK turns the page has left (clock_pick spends them).
	std::vector<uint8_t, ZeroedAllocator<uint8_t>> turns;

	void resize(uint32_t n)
	{
		evicted_at.resize(n);
		turns.resize(n);
	}
	// Pages [first, first + n) of `from` become pages [0, n) here.
	void copy(const RefaultHistory &from, uint32_t first, uint32_t n)
	{
		if (from.evicted_at.empty())
			return;
		std::copy_n(from.evicted_at.begin() + first, n, evicted_at.begin());
		std::copy_n(from.turns.begin() + first, n, turns.begin());
	}
	std::span<uint8_t> turns_span(uint32_t n) { return {turns.data(), turns.empty() ? 0 : n}; }
};

} // namespace memfed::pager
