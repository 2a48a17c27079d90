#include "libclient/preload/range_allocator.h"

#include <algorithm>

namespace memfed::preload
{

namespace
{

constexpr uint64_t kPage = 4096;

uint64_t alignment_for(uint64_t length)
{
	if (length < (uint64_t{1} << 20))
		return kPage;
	uint64_t a = uint64_t{1} << 20;
	while (a * 2 <= length && a < (uint64_t{32} << 20))
		a *= 2;
	return a;
}

} // namespace

RangeAllocator::RangeAllocator(uint64_t base, uint64_t size) : base_(base), size_(size)
{
	if (size)
		free_[base] = size;
}

std::optional<uint64_t> RangeAllocator::allocate(uint64_t length)
{
	if (length == 0 || length % kPage)
		return std::nullopt;
	uint64_t align = alignment_for(length);
	for (auto it = free_.begin(); it != free_.end(); ++it) {
		uint64_t start = it->first, len = it->second;
		uint64_t at = (start + align - 1) & ~(align - 1);
		if (at < start || at - start > len || len - (at - start) < length)
			continue;
		free_.erase(it);
		if (at > start)
			free_[start] = at - start;
		if (at + length < start + len)
			free_[at + length] = start + len - (at + length);
		used_ += length;
		return at;
	}
	return std::nullopt;
}

uint64_t RangeAllocator::release(uint64_t addr, uint64_t length)
{
	if (length == 0 || !contains(addr, length))
		return 0;
	uint64_t end = addr + length, released = 0;
	uint64_t pos = addr;
	while (pos < end) {
		// The free extent at or before pos, and the next one after it.
		auto next = free_.upper_bound(pos);
		if (next != free_.begin()) {
			auto prev = std::prev(next);
			if (prev->first + prev->second > pos) {
				pos = std::min(end, prev->first + prev->second);
				continue;
			}
		}
		uint64_t stop = next == free_.end() ? end : std::min(end, next->first);
		// [pos, stop) is used: free it, merging with neighbours.
		uint64_t s = pos, l = stop - pos;
		released += l;
		auto after = free_.find(stop);
		if (after != free_.end()) {
			l += after->second;
			free_.erase(after);
		}
		auto before = free_.lower_bound(s);
		if (before != free_.begin()) {
			auto b = std::prev(before);
			if (b->first + b->second == s) {
				s = b->first;
				l += b->second;
				free_.erase(b);
			}
		}
		free_[s] = l;
		pos = stop;
	}
	used_ -= released;
	return released;
}

void RangeAllocator::take(uint64_t addr, uint64_t length)
{
	uint64_t end = addr + length;
	auto it = free_.upper_bound(addr);
	if (it != free_.begin())
		--it;
	while (it != free_.end() && it->first < end) {
		uint64_t s = it->first, e = s + it->second;
		if (e <= addr) {
			++it;
			continue;
		}
		it = free_.erase(it);
		uint64_t cut_s = std::max(s, addr), cut_e = std::min(e, end);
		if (s < cut_s)
			free_[s] = cut_s - s;
		if (cut_e < e)
			it = free_.emplace(cut_e, e - cut_e).first;
		used_ += cut_e - cut_s;
	}
}

bool RangeAllocator::contains(uint64_t addr, uint64_t length) const
{
	return addr >= base_ && addr + length >= addr && addr + length <= base_ + size_;
}

bool RangeAllocator::allocated(uint64_t addr, uint64_t length) const
{
	if (!contains(addr, length))
		return false;
	auto next = free_.upper_bound(addr);
	if (next != free_.begin()) {
		auto prev = std::prev(next);
		if (prev->first + prev->second > addr)
			return false;
	}
	return next == free_.end() || next->first >= addr + length;
}

std::vector<std::pair<uint64_t, uint64_t>> RangeAllocator::used_spans() const
{
	std::vector<std::pair<uint64_t, uint64_t>> out;
	uint64_t pos = base_;
	for (const auto &[s, l] : free_) {
		if (s > pos)
			out.emplace_back(pos - base_, s - pos);
		pos = s + l;
	}
	if (pos < base_ + size_)
		out.emplace_back(pos - base_, base_ + size_ - pos);
	return out;
}

} // namespace memfed::preload
