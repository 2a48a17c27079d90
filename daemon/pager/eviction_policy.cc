#include "daemon/pager/eviction_policy.h"

#include <algorithm>

namespace memfed::pager
{

uint64_t BudgetPolicy::headroom(uint64_t budget) const
{
	uint64_t h =
	        std::max<uint64_t>(evict_headroom_, std::min<uint64_t>(budget / 16, evict_batch_));
	h = std::max<uint64_t>(h, prefetch_window_ / 2);
	return std::max<uint64_t>(1, std::min<uint64_t>(h, budget / 4));
}

uint64_t BudgetPolicy::prefetch_room(uint64_t resident, uint64_t budget) const
{
	if (budget == 0)
		return UINT64_MAX;
	uint64_t high = budget - headroom(budget);
	return high > resident ? high - resident : 0;
}

uint64_t BudgetPolicy::eviction_want(uint64_t resident, uint64_t budget, bool pressure) const
{
	// A round is a quarter of the budget, up to a full batch. Each round
	// pays the drop round trip (pager -> evictor -> REMOVE event -> pager),
	// which costs about as much as dropping a hundred pages, so rounds are
	// few and large; the budget stays used between the low mark and the
	// high one.
	uint64_t h = headroom(budget);
	if (budget == 0 || (resident + h <= budget && !pressure))
		return 0;
	uint64_t round = std::max<uint64_t>(h, std::min<uint64_t>(budget / 4, evict_batch_));
	uint64_t low = budget > h + round ? budget - h - round : budget / 2;
	return resident > low ? resident - low : 0;
}

uint32_t BudgetPolicy::stream_window_max(uint64_t a, uint64_t b) const
{
	uint64_t w = std::min<uint64_t>(uint64_t{prefetch_window_} * 8, bulk_pages_ / 2);
	if (a != 0)
		w = std::min(w, a / 8);
	if (b != 0)
		w = std::min(w, b / 8);
	return uint32_t(std::max<uint64_t>(w, prefetch_window_));
}

} // namespace memfed::pager
