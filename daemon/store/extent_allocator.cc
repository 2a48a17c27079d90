#include "daemon/store/extent_allocator.h"

#include <algorithm>
#include <iterator>

#include "daemon/store/layout.h"

namespace memfed::store
{

ExtentAllocator::ExtentAllocator(uint64_t total_pages) : total_(total_pages), free_(total_pages)
{
	if (total_pages > 0)
		extents_.emplace(0, total_pages);
}

Status ExtentAllocator::reserve(uint64_t start, uint64_t pages)
{
	auto bad = [&] {
		return Status(Code::kCorrupt,
		              "extent of " + std::to_string(pages) + " pages at data page " +
		                      std::to_string(start) +
		                      " overlaps another region or lies past the end of the pool");
	};
	if (pages == 0 || start >= total_ || pages > total_ - start)
		return bad();
	auto it = extents_.upper_bound(start);
	if (it == extents_.begin())
		return bad();
	--it;
	uint64_t fs = it->first, fl = it->second;
	if (start + pages > fs + fl)
		return bad();
	extents_.erase(it);
	if (start > fs)
		extents_.emplace(fs, start - fs);
	if (start + pages < fs + fl)
		extents_.emplace(start + pages, fs + fl - (start + pages));
	free_ -= pages;
	return Status::ok();
}

Result<uint64_t> ExtentAllocator::allocate(uint64_t pages)
{
	auto best = extents_.end();
	for (auto it = extents_.begin(); it != extents_.end(); ++it)
		if (it->second >= pages && (best == extents_.end() || it->second < best->second))
			best = it;
	if (best == extents_.end())
		return Status(Code::kNoSpace,
		              "no free extent of " + std::to_string(pages * kPageSize) +
		                      " bytes: " + std::to_string(free_ * kPageSize) +
		                      " bytes free, largest free extent " +
		                      std::to_string(largest_free_pages() * kPageSize) + " bytes");
	uint64_t start = best->first, len = best->second;
	extents_.erase(best);
	if (len > pages)
		extents_.emplace(start + pages, len - pages);
	free_ -= pages;
	return start;
}

void ExtentAllocator::release(uint64_t start, uint64_t pages)
{
	free_ += pages;
	auto next = extents_.lower_bound(start);
	if (next != extents_.end() && next->first == start + pages) {
		pages += next->second;
		next = extents_.erase(next);
	}
	if (next != extents_.begin()) {
		auto prev = std::prev(next);
		if (prev->first + prev->second == start) {
			prev->second += pages;
			return;
		}
	}
	extents_.emplace(start, pages);
}

uint64_t ExtentAllocator::largest_free_pages() const
{
	uint64_t best = 0;
	for (const auto &[start, len] : extents_)
		best = std::max(best, len);
	return best;
}

} // namespace memfed::store
