// Refault distance (refault.h) on a real pager: pages a program only reads,
// but reads all the time, stay resident once they have come back soon
// after an eviction, where plain CLOCK, which never sees a read, takes
// them out every other turn of its hand.
#include <cstdint>

#include "daemon/pager/pager_fixture.h"

using namespace memfed;
using namespace memfed::pager;
using namespace memfed::pager::testing;

namespace
{

struct HotCold {
	uint64_t hot_faults = 0;
	uint64_t refaults = 0;
	int bad = 0;
};

// A stream of reads, each of a page read once, through a budget it is
// sixteen times larger than, with a few hot pages read (never written)
// after every fourth: the hot pages' faults, and the pager's count of
// refaults that earned turns.
HotCold read_hot_among_cold(EvictPath path, uint8_t refault_turns)
{
	PagerConfig cfg;
	cfg.refault_turns = refault_turns;
	PagerFixture f(cfg);
	constexpr uint32_t kPages = 4096, kBudget = 256, kHot = 8;
	f.store.add_region("r", kPages);
	TestClient c;
	HotCold out;
	if (!evict_path(c, f, path))
		return out;
	attach_on(c, f, path);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	for (uint32_t p = kHot; p < kPages; p++) {
		out.bad += m->addr[p * kPage] != expected(f.store, "r", p);
		if (p % 4 == 0)
			for (uint32_t h = 0; h < kHot; h++)
				out.bad +=
				        m->addr[h * kPage + p % kPage] != expected(f.store, "r", h);
	}
	auto ps = f.proc_stats();
	INFO(ps.dump());
	REQUIRE(ps["evictions"].get<uint64_t>() > kPages / 2);
	// Each cold page faults once: the rest are the hot pages'.
	out.hot_faults = ps["faults"].get<uint64_t>() - (kPages - kHot);
	out.refaults = ps["refaults"].get<uint64_t>();
	return out;
}

} // namespace

TEST_CASE("pages read all the time stay resident once they come back soon after eviction",
          "[pager][refault]")
{
	for (EvictPath path : {EvictPath::kDrop, EvictPath::kMove, EvictPath::kAsync}) {
		INFO("eviction path: " << path_name(path));
		HotCold plain = read_hot_among_cold(path, 0);
		HotCold turns = read_hot_among_cold(path, 7);
		INFO("hot faults without turns " << plain.hot_faults << ", with "
		                                 << turns.hot_faults);
		CHECK(plain.bad == 0);
		CHECK(turns.bad == 0);
		if (plain.hot_faults == 0 && turns.hot_faults == 0)
			continue; // the path was not available (warned)
		CHECK(plain.refaults == 0);
		CHECK(turns.refaults > 0);
		// Without turns a hot page leaves every turn or two of the hand
		// (about seventeen faults each here); with seven more turns after
		// each quick return, it stays three to four times as long (five
		// faults each). Half is the bound.
		CHECK(plain.hot_faults >= 8 * 5);
		CHECK(turns.hot_faults * 2 <= plain.hot_faults);
	}
}
