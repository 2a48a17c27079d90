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
	CHECK(c.next == 16);
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
	CHECK(c.next == 20);
}
