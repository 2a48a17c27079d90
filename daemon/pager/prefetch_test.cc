// Unit tests of the pager's prefetch planning (prefetch.h): the stream
// detector's plans and how a plan is cut into fetch runs.
#include "daemon/pager/prefetch.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

using namespace memfed::pager;

namespace
{

struct Cut {
	std::vector<std::pair<uint32_t, uint32_t>> runs; // first, count
	uint32_t next = 0;
	FetchStop stop = FetchStop::kNone;
};

Cut cut(const PrefetchPlan &plan, const std::vector<bool> &remote, uint64_t allowed,
        uint32_t max_run, size_t max_runs)
{
	std::vector<FetchRun> out(max_runs + 1);
	Cut c;
	size_t n = plan_fetch_runs(
	        plan, [&](uint32_t i) { return bool(remote.at(i)); }, allowed, max_run, max_runs,
	        out.data(), &c.next, &c.stop);
	for (size_t k = 0; k < n; k++)
		c.runs.emplace_back(out[k].first, out[k].count);
	return c;
}

} // namespace

TEST_CASE("a sequential stream is found on its third fault and asks for a window ahead",
          "[pager][policy]")
{
	StreamDetector d;
	PrefetchPlan plan;
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	CHECK_FALSE(d.on_fault(10, 1000, 64, 64, &plan, &hits, &released));
	CHECK_FALSE(d.on_fault(11, 1000, 64, 64, &plan, &hits, &released));
	REQUIRE(d.on_fault(12, 1000, 64, 64, &plan, &hits, &released));
	CHECK(plan.stride == 1);
	CHECK(plan.first == 13);
	CHECK(plan.count > 0);
	CHECK(plan.first + plan.count <= 13 + 64);
	CHECK(plan.tripwire > plan.first);
	CHECK(plan.tripwire < plan.first + plan.count);
	CHECK(d.tripwire(plan.stream) == plan.tripwire);
	CHECK(d.ahead_of_stream(plan.first + 1));
	CHECK_FALSE(d.ahead_of_stream(5));
}

TEST_CASE("a sequential stream's window doubles with each request, up to its maximum",
          "[pager][policy]")
{
	StreamDetector d;
	PrefetchPlan plan;
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	CHECK_FALSE(d.on_fault(0, 100000, 64, 256, &plan, &hits, &released));
	CHECK_FALSE(d.on_fault(1, 100000, 64, 256, &plan, &hits, &released));
	REQUIRE(d.on_fault(2, 100000, 64, 256, &plan, &hits, &released));
	CHECK(plan.first + plan.count == 2 + 64); // the first request: one window
	// The program follows the stream: each request reaches further ahead
	// of the fault that makes it, 128 then 256 pages, and no further.
	std::vector<uint32_t> reach;
	for (uint32_t p = 3; p < 4000; p++) {
		PrefetchPlan next;
		if (d.on_fault(p, 100000, 64, 256, &next, &hits, &released)) {
			CHECK(next.first == plan.first + plan.count); // no gap, no overlap
			reach.push_back(next.first + next.count - p);
			plan = next;
		}
	}
	REQUIRE(reach.size() >= 4);
	CHECK(reach[0] == 128);
	CHECK(reach[1] == 256);
	CHECK(*std::max_element(reach.begin(), reach.end()) == 256);
	// A strided stream keeps its window.
	StreamDetector s;
	bool go = false;
	for (uint32_t p = 0; p < 40 && !go; p += 4)
		go = s.on_fault(p, 100000, 32, 256, &plan, &hits, &released);
	REQUIRE(go);
	CHECK(plan.count <= 32 / 4 + 1);
}

TEST_CASE("a strided stream asks for every stride-th page", "[pager][policy]")
{
	StreamDetector d;
	PrefetchPlan plan;
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	bool go = false;
	for (uint32_t p = 0; p < 4 * 5 && !go; p += 5)
		go = d.on_fault(p, 1000, 32, 32, &plan, &hits, &released);
	REQUIRE(go);
	CHECK(plan.stride == 5);
	CHECK(plan.first % 5 == 0);
	CHECK(plan.tripwire == kNoPage);
}

TEST_CASE("a plan is cut into runs of remote pages within the buffers and the budget",
          "[pager][policy]")
{
	std::vector<bool> remote(64, true);
	remote[4] = remote[5] = false; // fetched already
	PrefetchPlan plan;
	plan.first = 0;
	plan.count = 16;
	Cut c = cut(plan, remote, 1000, 8, 4);
	CHECK(c.runs == std::vector<std::pair<uint32_t, uint32_t>>{{0, 4}, {6, 8}, {14, 2}});
	CHECK(c.stop == FetchStop::kNone);
	CHECK(c.next == kNoPage);
	// Out of buffers: the stream asks for the rest later, from page 14.
	c = cut(plan, remote, 1000, 8, 2);
	CHECK(c.runs.size() == 2);
	CHECK(c.stop == FetchStop::kRuns);
	CHECK(c.next == 14);
	// Out of budget after 6 pages.
	c = cut(plan, remote, 6, 8, 4);
	CHECK(c.runs == std::vector<std::pair<uint32_t, uint32_t>>{{0, 4}, {6, 2}});
	CHECK(c.stop == FetchStop::kBudget);
	CHECK(c.next == 8);
	// Nothing remote: no run, no stop.
	std::vector<bool> none(64, false);
	c = cut(plan, none, 1000, 8, 4);
	CHECK(c.runs.empty());
	CHECK(c.stop == FetchStop::kNone);
}

TEST_CASE("a strided plan is fetched one page per run", "[pager][policy]")
{
	std::vector<bool> remote(64, true);
	remote[10] = false;
	PrefetchPlan plan;
	plan.first = 0;
	plan.count = 4;
	plan.stride = 5;
	Cut c = cut(plan, remote, 1000, 8, 8);
	CHECK(c.runs == std::vector<std::pair<uint32_t, uint32_t>>{{0, 1}, {5, 1}, {15, 1}});
	CHECK(c.next == kNoPage);
}

TEST_CASE("a descending stream is found on its third fault and asks for a window below",
          "[pager][policy]")
{
	StreamDetector d;
	PrefetchPlan plan;
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	CHECK_FALSE(d.on_fault(5000, 100000, 64, 256, &plan, &hits, &released));
	CHECK_FALSE(d.on_fault(4999, 100000, 64, 256, &plan, &hits, &released));
	REQUIRE(d.on_fault(4998, 100000, 64, 256, &plan, &hits, &released));
	CHECK(plan.down);
	CHECK(plan.stride == 1);
	CHECK(plan.first == 4997);
	CHECK(plan.count == 63); // up to a window below the fault, as going up
	CHECK(plan.page(plan.count - 1) == 4998 - 63);
	CHECK(plan.tripwire < plan.first);
	CHECK(plan.tripwire > plan.page(plan.count - 1));
	CHECK(d.tripwire(plan.stream) == plan.tripwire);
	CHECK(d.ahead_of_stream(4990));
	CHECK_FALSE(d.ahead_of_stream(5001));
	CHECK_FALSE(d.ahead_of_stream(100));
	// Followed down, each request starts where the last one ended and
	// reaches further: 128 pages below its fault, then 256, no further.
	std::vector<uint32_t> reach;
	for (uint32_t p = 4997; p > 3000; p--) {
		PrefetchPlan next;
		if (d.on_fault(p, 100000, 64, 256, &next, &hits, &released)) {
			CHECK(next.down);
			CHECK(next.first == plan.page(plan.count - 1) - 1); // no gap, no overlap
			reach.push_back(p - next.page(next.count - 1) + 1);
			plan = next;
		}
	}
	REQUIRE(reach.size() >= 4);
	CHECK(reach[0] == 128);
	CHECK(reach[1] == 256);
	CHECK(*std::max_element(reach.begin(), reach.end()) == 256);
	CHECK(hits > 1500);
}

TEST_CASE("a descending stream stops at page 0", "[pager][policy]")
{
	StreamDetector d;
	PrefetchPlan plan;
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	d.on_fault(40, 1000, 64, 64, &plan, &hits, &released);
	d.on_fault(39, 1000, 64, 64, &plan, &hits, &released);
	REQUIRE(d.on_fault(38, 1000, 64, 64, &plan, &hits, &released));
	CHECK(plan.first == 37);
	CHECK(plan.count == 38); // pages 37 down to 0, not one below
	CHECK(plan.page(plan.count - 1) == 0);
	// Nothing is left to ask for, all the way down.
	for (uint32_t p = 37; p + 1 > 0; p--) {
		PrefetchPlan next;
		CHECK_FALSE(d.on_fault(p, 1000, 64, 64, &next, &hits, &released));
	}
}

TEST_CASE("a descending strided stream asks for every stride-th page below", "[pager][policy]")
{
	StreamDetector d;
	PrefetchPlan plan;
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	bool go = false;
	for (uint32_t p = 900; p > 900 - 4 * 7 && !go; p -= 7)
		go = d.on_fault(p, 1000, 32, 32, &plan, &hits, &released);
	REQUIRE(go);
	CHECK(plan.down);
	CHECK(plan.stride == 7);
	CHECK(plan.first == 900 - 3 * 7);
	CHECK(plan.tripwire == kNoPage);
}

TEST_CASE("an ascending and a descending stream are followed side by side", "[pager][policy]")
{
	// A merge pass: one array read upward, another downward.
	StreamDetector d;
	PrefetchPlan plan;
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	int up = 0, down = 0;
	for (uint32_t k = 0; k < 200; k++) {
		if (d.on_fault(1000 + k, 100000, 16, 16, &plan, &hits, &released)) {
			CHECK_FALSE(plan.down);
			up++;
		}
		if (d.on_fault(90000 - k, 100000, 16, 16, &plan, &hits, &released)) {
			CHECK(plan.down);
			CHECK(plan.first < 90000 - k);
			down++;
		}
	}
	CHECK(up > 5);
	CHECK(down > 5);
}

TEST_CASE("a descending plan is cut from its top, each run ascending", "[pager][policy]")
{
	std::vector<bool> remote(64, true);
	remote[10] = remote[11] = false; // fetched already
	PrefetchPlan plan;
	plan.first = 15;
	plan.count = 16;
	plan.down = true;
	Cut c = cut(plan, remote, 1000, 8, 4);
	CHECK(c.runs == std::vector<std::pair<uint32_t, uint32_t>>{{12, 4}, {2, 8}, {0, 2}});
	CHECK(c.stop == FetchStop::kNone);
	// Out of buffers: the far end (the low pages) is left for later.
	c = cut(plan, remote, 1000, 8, 2);
	CHECK(c.runs == std::vector<std::pair<uint32_t, uint32_t>>{{12, 4}, {2, 8}});
	CHECK(c.stop == FetchStop::kRuns);
	CHECK(c.next == 1);
	// Out of budget after 6 pages.
	c = cut(plan, remote, 6, 8, 4);
	CHECK(c.runs == std::vector<std::pair<uint32_t, uint32_t>>{{12, 4}, {8, 2}});
	CHECK(c.stop == FetchStop::kBudget);
	CHECK(c.next == 7);
	// Strided, down to page 0.
	plan.first = 20;
	plan.count = 5;
	plan.stride = 5;
	c = cut(plan, remote, 1000, 8, 8);
	CHECK(c.runs ==
	      std::vector<std::pair<uint32_t, uint32_t>>{{20, 1}, {15, 1}, {5, 1}, {0, 1}});
}
