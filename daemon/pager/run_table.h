// RunTable: the write-back runs a pager thread has claimed and not finished,
// by id. Ids are handed out in order (1, 2, ...) and a run finishes when all
// its writes are durable; lowest() is the first id not finished yet, which
// is what a sync waiter waits past. A ring of run states, preallocated to a
// working depth and doubled (allocating) only past it: claiming a run on the
// fault path (an eviction's dirty victims) allocates nothing.
//
// Thread: the pager thread that owns it.
#pragma once

#include <cstdint>
#include <vector>

namespace memfed::pager
{

class RunTable
{
public:
	struct Run {
		uint32_t outstanding = 0; // writes in flight
		bool issued_all = false;  // every write of the run was issued
		bool finished = false;
	};

	// Room for `depth` unfinished runs before the ring grows.
	void reserve(size_t depth)
	{
		size_t cap = 16;
		while (cap < depth)
			cap *= 2;
		if (cap > ring_.size())
			regrow(cap);
	}
	// A new run; its id is one more than the previous one's.
	uint64_t add()
	{
		if (count_ == ring_.size())
			regrow(ring_.empty() ? 16 : 2 * ring_.size());
		uint64_t id = base_ + count_++;
		ring_[id & (ring_.size() - 1)] = Run{};
		return id;
	}
	// The run `id` if it is not finished, else null.
	Run *find(uint64_t id)
	{
		if (id < base_ || id >= base_ + count_)
			return nullptr;
		Run *r = &ring_[id & (ring_.size() - 1)];
		return r->finished ? nullptr : r;
	}
	void finish(uint64_t id)
	{
		if (Run *r = find(id))
			r->finished = true;
		while (count_ > 0 && ring_[base_ & (ring_.size() - 1)].finished) {
			base_++;
			count_--;
		}
	}
	// The id the next add() returns.
	uint64_t next_id() const { return base_ + count_; }
	// The first id not finished (next_id() when none is pending).
	uint64_t lowest() const { return base_; }
	bool empty() const { return count_ == 0; }

private:
	void regrow(size_t cap)
	{
		std::vector<Run> n(cap);
		for (uint64_t id = base_; id < base_ + count_; id++)
			n[id & (cap - 1)] = ring_[id & (ring_.size() - 1)];
		ring_.swap(n);
	}
	std::vector<Run> ring_; // size a power of two
	uint64_t base_ = 1;     // ids start at 1
	uint64_t count_ = 0;
};

} // namespace memfed::pager
