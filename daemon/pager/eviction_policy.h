// Eviction policy of the pager, as pure functions: how many pages a budget
// wants evicted, how much room prefetch may take, and which pages go (CLOCK).
// Inputs in, decision out: no I/O, no clock, no lock. The pager thread that
// owns the pages calls them (eviction.cc for private mappings,
// shared_faults.cc for shared windows); eviction_policy_test.cc checks them
// on page tables it builds.
#pragma once

#include <cstdint>
#include <span>

#include "daemon/pager/config.h"
#include "daemon/pager/mapping.h"

namespace memfed::pager
{

// The budget arithmetic, from the pager's configuration.
class BudgetPolicy
{
public:
	explicit BudgetPolicy(const PagerConfig &cfg)
	    : evict_headroom_(cfg.evict_headroom), evict_batch_(cfg.evict_batch),
	      prefetch_window_(cfg.prefetch ? cfg.prefetch_window : 0),
	      bulk_pages_(uint64_t{cfg.bulk_slots} * cfg.prefetch_chunk)
	{
	}
	// Free pages kept under `budget` so faults and prefetch rarely wait for
	// an eviction round: a sixteenth of the budget up to a round's batch
	// (what one round frees), at most a quarter, at least one. Room the
	// program cannot use costs it faults: a larger budget needs no more
	// headroom, as a round takes no longer.
	uint64_t headroom(uint64_t budget) const;
	// Pages prefetch may add to `resident` under `budget` (0: unlimited):
	// up to the high mark, budget - headroom; the headroom is for faults.
	uint64_t prefetch_room(uint64_t resident, uint64_t budget) const;
	// Pages to evict now from `resident` under `budget` (0: none). Past the
	// high mark, or under `pressure` (prefetch held up by the budget), a
	// round brings it down to the low mark, a round's worth below.
	uint64_t eviction_want(uint64_t resident, uint64_t budget, bool pressure) const;
	// The window a sequential stream may grow to under budgets `a` and `b`
	// (0: unlimited): eight times the configured window, at most an eighth
	// of the smaller budget and half the bulk buffers (room for a second
	// stream), never less than the configured window.
	uint32_t stream_window_max(uint64_t a, uint64_t b) const;

private:
	uint32_t evict_headroom_, evict_batch_, prefetch_window_;
	uint64_t bulk_pages_;
};

// CLOCK with second chance over `pages`, from *hand, at most two turns,
// until `want` victims are found. A candidate is a Resident page that is not
// being written back; visit(i) runs first, and may set its reference bit
// (the pager reads the page tables' written bits there, a chunk ahead of
// the hand, async_dirty.cc); if its reference bit is set it loses it and is passed
// over; if it has extra turns left (`turns`, earned by refaulting soon,
// refault.h; empty: none) it spends one and is passed over; a page
// installed by prefetch that `ahead(i)` says a stream has not reached yet is
// spared; any other candidate is a victim: take(i), in hand order. If
// sparing and extra turns left no victim at all, those pages go after all,
// in one more turn: four streams' windows can cover a small budget whole,
// and a process at its budget with nothing to evict would wait for ever.
// Returns the number taken. Changes only reference bits, turns and *hand;
// take() applies the decision.
template <typename Visit, typename Ahead, typename Take>
uint64_t clock_pick(std::span<Page> pages, std::span<uint8_t> turns, uint32_t *hand, uint64_t want,
                    Visit visit, Ahead ahead, Take take)
{
	const uint32_t n = uint32_t(pages.size());
	uint64_t taken = 0, spared = 0;
	if (n == 0)
		return 0;
	for (uint64_t step = 0; step < 2ull * n && taken < want; step++) {
		uint32_t i = *hand % n;
		*hand = (i + 1) % n;
		Page &pg = pages[i];
		if (pg.state != PageState::kResident || (pg.flags & kWbInFlight))
			continue;
		visit(i);
		if (pg.flags & kRef) {
			pg.flags &= uint8_t(~kRef);
			continue;
		}
		if (!turns.empty() && turns[i] != 0) {
			turns[i]--;
			spared++;
			continue;
		}
		if ((pg.flags & kPrefetched) && ahead(i)) {
			spared++;
			continue;
		}
		take(i);
		taken++;
	}
	const bool all_spared = taken == 0 && spared > 0;
	for (uint64_t step = 0; all_spared && step < n && taken < want; step++) {
		uint32_t i = *hand % n;
		*hand = (i + 1) % n;
		Page &pg = pages[i];
		if (pg.state != PageState::kResident || (pg.flags & kWbInFlight))
			continue;
		if (!turns.empty())
			turns[i] = 0;
		take(i);
		taken++;
	}
	return taken;
}

} // namespace memfed::pager
