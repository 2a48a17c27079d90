// Unit tests of the pager's colocation policy (colocation_policy.h): the
// majority vote over one window's faults, and when a faulting thread is
// pinned beside its pager thread and when it is let go.
#include "daemon/pager/colocation_policy.h"

#include <catch2/catch.hpp>

#include <vector>

using namespace memfed::pager;

namespace
{

// A window of `n` faults, every `other_every`-th from thread 99 (0: none),
// the rest from thread 7.
FaultVotes window(uint32_t n, uint32_t other_every)
{
	FaultVotes w;
	for (uint32_t i = 1; i <= n; i++)
		w.add(other_every != 0 && i % other_every == 0 ? 99 : 7);
	return w;
}

} // namespace

TEST_CASE("the fault vote finds the thread with most faults, and bounds its share",
          "[pager][colocation]")
{
	FaultVotes one = window(300, 0);
	CHECK(one.candidate == 7);
	CHECK(one.candidate_share() == 1.0);

	// One fault in ten from another thread: 90 % from thread 7 exactly,
	// and the bound is exact when the others are spread out.
	FaultVotes most = window(300, 10);
	CHECK(most.candidate == 7);
	CHECK(most.candidate_share() == Approx(0.9));

	// Two threads taking turns: no thread has a majority to find.
	FaultVotes turns = window(300, 2);
	CHECK(turns.candidate_share() <= 0.5);

	CHECK(FaultVotes().candidate_share() == 0.0);
}

TEST_CASE("a thread is pinned beside its pager only while it alone faults often",
          "[pager][colocation]")
{
	SECTION("many faults from one thread start it")
	{
		CHECK(colocation_decision(window(kColocationStartFaults, 0), 0) ==
		      Colocation::kStart);
		CHECK(colocation_decision(window(1000, 10), 0) == Colocation::kStart);
	}
	SECTION("too few faults, or faults from several threads, do not")
	{
		CHECK(colocation_decision(window(kColocationStartFaults - 1, 0), 0) ==
		      Colocation::kKeep);
		CHECK(colocation_decision(window(1000, 5), 0) == Colocation::kKeep);
		CHECK(colocation_decision(window(1000, 2), 0) == Colocation::kKeep);
	}
	SECTION("a pinned thread stays while it faults, even a little less alone")
	{
		CHECK(colocation_decision(window(kColocationStopFaults, 0), 7) ==
		      Colocation::kKeep);
		CHECK(colocation_decision(window(1000, 5), 7) == Colocation::kKeep);
	}
	SECTION("a pinned thread is let go when its faults grow rare")
	{
		CHECK(colocation_decision(window(kColocationStopFaults - 1, 0), 7) ==
		      Colocation::kStop);
		CHECK(colocation_decision(FaultVotes(), 7) == Colocation::kStop);
	}
	SECTION("or another thread takes over the faulting")
	{
		CHECK(colocation_decision(window(1000, 0), 8) == Colocation::kStop);
		CHECK(colocation_decision(window(1000, 2), 7) == Colocation::kStop);
	}
}
