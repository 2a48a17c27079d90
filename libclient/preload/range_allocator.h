// RangeAllocator: hands out page runs of the remote heap's address range to
// the program's anonymous mmap() calls (and mimalloc's, which come the same
// way) and takes them back on munmap(), whole or in part.
//
// First fit by address, so the used part of the heap stays low and a fork has
// little to copy; runs of 1 MiB or more are aligned to their size rounded
// down to a power of two (at most 32 MiB), which is what mimalloc asks for
// its segments. Addresses are absolute; all lengths are page multiples.
//
// Thread-safety: none; the shim serialises calls.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

namespace memfed::preload
{

class RangeAllocator
{
public:
	RangeAllocator(uint64_t base, uint64_t size);

	// A run of `length` bytes, or nullopt when no free run fits.
	std::optional<uint64_t> allocate(uint64_t length);
	// Returns the used pages of [addr, addr+length) (pages already free are
	// skipped); returns the bytes actually released.
	uint64_t release(uint64_t addr, uint64_t length);
	// Marks every free page of [addr, addr+length) used (a MAP_FIXED
	// mapping the program placed there itself). REQUIRES: contains().
	void take(uint64_t addr, uint64_t length);
	// True if [addr, addr+length) lies inside the managed range.
	bool contains(uint64_t addr, uint64_t length) const;
	// True if every page of [addr, addr+length) is allocated.
	bool allocated(uint64_t addr, uint64_t length) const;
	// Used runs as (offset from base, length), in address order.
	std::vector<std::pair<uint64_t, uint64_t>> used_spans() const;

	uint64_t base() const { return base_; }
	uint64_t size() const { return size_; }
	uint64_t used() const { return used_; }

private:
	uint64_t base_, size_, used_ = 0;
	std::map<uint64_t, uint64_t> free_; // start -> length; disjoint, non-adjacent
};

} // namespace memfed::preload
