// PageStats: the pager's counters for one mapping, summed per process and per
// region for "pager.stats" (map_protocol.h).
//
// Thread-safety: updated on the owning pager thread only; copied for
// reporting on that thread.
#pragma once

#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>

namespace memfed::pager
{

constexpr int kLatencyBuckets = 24; // 1 us .. 8 s

struct PageStats {
	uint64_t faults = 0;    // missing-page faults
	uint64_t wp_faults = 0; // first writes to clean pages
	uint64_t fetches = 0;   // demand fetches from a module
	uint64_t prefetched = 0;
	uint64_t prefetch_hits = 0;
	uint64_t evictions = 0;
	uint64_t staged_hits = 0; // faults served from a staging slot (move_eviction.cc)
	uint64_t refaults = 0;    // faults on pages evicted soon before (refault.h)
	uint64_t writebacks = 0; // pages written back
	uint64_t poisoned = 0;   // damaged on the module: SIGBUS on access
	uint64_t resident = 0;   // filled in when reporting
	uint64_t dirty = 0;      // filled in when reporting
	std::array<uint64_t, kLatencyBuckets> fetch_us_log2{};
	uint64_t fetch_ns_sum = 0; // sum of the latencies in fetch_us_log2

	// Records one demand fetch that took `ns`.
	void add_latency(uint64_t ns)
	{
		fetch_ns_sum += ns;
		uint64_t us = ns / 1000;
		int b = 0;
		while (us > 1 && b < kLatencyBuckets - 1) {
			us >>= 1;
			b++;
		}
		fetch_us_log2[b]++;
	}
	void add(const PageStats &o);
	nlohmann::json to_json() const;
};

} // namespace memfed::pager
