// ExtentAllocator: hands out contiguous runs of data pages (one per region) and
// takes them back, coalescing neighbours. Best fit: the smallest free extent
// that holds the request, lowest address on ties. Units are page indices in
// the data area. Rebuilt at open from the region table (reserve() each live
// extent), so it keeps no state on media.
//
// Thread-safety: none; the owner (ModuleStore) serialises calls.
#pragma once

#include <cstdint>
#include <map>

#include "daemon/common/status.h"

namespace memfed::store
{

class ExtentAllocator
{
public:
	// All of [0, total_pages) free.
	explicit ExtentAllocator(uint64_t total_pages);

	// Marks [start, start+pages) used. kCorrupt if any of it is not free
	// (overlapping regions or an extent past the end).
	Status reserve(uint64_t start, uint64_t pages);
	// A free run of `pages` pages; kNoSpace naming the request, free total and
	// largest free extent. REQUIRES: pages > 0.
	Result<uint64_t> allocate(uint64_t pages);
	// Returns [start, start+pages) to free space. REQUIRES: it was allocated.
	void release(uint64_t start, uint64_t pages);

	uint64_t total_pages() const { return total_; }
	uint64_t free_pages() const { return free_; }
	uint64_t largest_free_pages() const;
	size_t free_extents() const { return extents_.size(); }

private:
	uint64_t total_;
	uint64_t free_;
	std::map<uint64_t, uint64_t> extents_; // start -> length, disjoint, non-adjacent
};

} // namespace memfed::store
