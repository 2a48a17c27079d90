#include "daemon/pager/stats.h"

namespace memfed::pager
{

void PageStats::add(const PageStats &o)
{
	faults += o.faults;
	wp_faults += o.wp_faults;
	fetches += o.fetches;
	prefetched += o.prefetched;
	prefetch_hits += o.prefetch_hits;
	evictions += o.evictions;
	staged_hits += o.staged_hits;
	refaults += o.refaults;
	writebacks += o.writebacks;
	poisoned += o.poisoned;
	resident += o.resident;
	dirty += o.dirty;
	for (int i = 0; i < kLatencyBuckets; i++)
		fetch_us_log2[i] += o.fetch_us_log2[i];
	fetch_ns_sum += o.fetch_ns_sum;
}

nlohmann::json PageStats::to_json() const
{
	// Trailing empty buckets are left out; bucket i holds [2^i, 2^(i+1)) us.
	int last = kLatencyBuckets;
	while (last > 0 && fetch_us_log2[last - 1] == 0)
		last--;
	nlohmann::json hist = nlohmann::json::array();
	for (int i = 0; i < last; i++)
		hist.push_back(fetch_us_log2[i]);
	return {{"faults", faults},
	        {"wp_faults", wp_faults},
	        {"fetches", fetches},
	        {"prefetched", prefetched},
	        {"prefetch_hits", prefetch_hits},
	        {"evictions", evictions},
	        {"staged_hits", staged_hits},
	        {"refaults", refaults},
	        {"writebacks", writebacks},
	        {"poisoned", poisoned},
	        {"resident_pages", resident},
	        {"dirty_pages", dirty},
	        {"fetch_us_log2", hist},
	        {"fetch_ns_sum", fetch_ns_sum}};
}

} // namespace memfed::pager
