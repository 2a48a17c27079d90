// DropLedger: what a restarted memfedd is told of the program's drops.
#include "libclient/drop_ledger.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <atomic>
#include <thread>

#include "daemon/common/clock.h"

using namespace memfed::client;

namespace
{

constexpr uint64_t kPage = 4096;

std::vector<Span> sorted(std::vector<Span> v)
{
	std::sort(v.begin(), v.end());
	return v;
}

// The first reading of the monotonic clock past `t`.
uint64_t after(uint64_t t)
{
	uint64_t now;
	while ((now = memfed::mono_ns()) <= t) {
	}
	return now;
}

void drop(DropLedger &l, uint64_t addr, uint64_t length)
{
	l.end(addr, length, l.begin(addr, length));
}

} // namespace

TEST_CASE("a drop is reported until a settle covers it", "[drop_ledger]")
{
	DropLedger l;
	drop(l, 0, 4 * kPage);
	drop(l, 2 * kPage, 4 * kPage); // overlaps the first
	drop(l, 10 * kPage, kPage);
	CHECK(sorted(l.to_report()) ==
	      std::vector<Span>{{0, 4 * kPage}, {2 * kPage, 4 * kPage}, {10 * kPage, kPage}});
	auto s = l.settle_ranges();
	REQUIRE(s);
	// Overlapping drops are synced as one range.
	CHECK(s->first == std::vector<Span>{{0, 6 * kPage}, {10 * kPage, kPage}});
	// A drop made while the sync ran is not settled by it.
	drop(l, 20 * kPage, kPage);
	CHECK(l.settled(s->second));
	CHECK(l.to_report() == std::vector<Span>{{20 * kPage, kPage}});
	auto s2 = l.settle_ranges();
	REQUIRE(s2);
	CHECK_FALSE(l.settled(s2->second));
	CHECK(l.to_report().empty());
}

TEST_CASE("pages the evictor drops leave the drops that cover them", "[drop_ledger]")
{
	DropLedger l;
	drop(l, 0, 8 * kPage);
	l.forget(3 * kPage, kPage, memfed::mono_ns() + 1);  // splits the drop in two
	l.forget(0, kPage, memfed::mono_ns() + 1);          // trims its start
	l.forget(7 * kPage, kPage, memfed::mono_ns() + 1);  // and its end
	l.forget(20 * kPage, kPage, memfed::mono_ns() + 1); // outside every drop: nothing
	CHECK(sorted(l.to_report()) ==
	      std::vector<Span>{{kPage, 2 * kPage}, {4 * kPage, 3 * kPage}});
	// The pieces keep their drop's number: one settle takes them all.
	auto s = l.settle_ranges();
	REQUIRE(s);
	CHECK_FALSE(l.settled(s->second));
	CHECK(l.to_report().empty());
}

TEST_CASE("a drop that ended after the pager sent its request stays", "[drop_ledger]")
{
	// The pager sent a request for pages 0..3 at `sent`; the program
	// dropped page 2 after that (maybe after the write-back: its zeroes
	// are the newer content) and page 0 before (read before the pick).
	DropLedger l;
	drop(l, 0, kPage);
	uint64_t sent = after(memfed::mono_ns());
	after(sent);
	drop(l, 2 * kPage, kPage);
	l.forget(0, 4 * kPage, sent);
	CHECK(l.to_report() == std::vector<Span>{{2 * kPage, kPage}});
	// A later request covering page 2 forgets it.
	l.forget(2 * kPage, kPage, memfed::mono_ns() + 1);
	CHECK(l.to_report().empty());
}

TEST_CASE("without spare capacity the evictor keeps a drop whole", "[drop_ledger]")
{
	// Two slots: end() keeps room for one split, the second stays whole.
	DropLedger l(2);
	drop(l, 0, 8 * kPage);
	l.forget(2 * kPage, kPage, memfed::mono_ns() + 1);
	l.forget(5 * kPage, kPage, memfed::mono_ns() + 1);
	auto r = sorted(l.to_report());
	REQUIRE(r.size() == 2);
	CHECK(r[0] == Span{0, 2 * kPage});
	CHECK(r[1] == Span{3 * kPage, 5 * kPage}); // page 5 is still reported
}

TEST_CASE("drops that end while a pager is attached are reported to it", "[drop_ledger]")
{
	DropLedger l;
	uint64_t token = l.begin(0, kPage); // in flight across the attach
	drop(l, 8 * kPage, kPage);          // settled by the old pager? unknown
	l.remap_begin();
	CHECK_FALSE(l.wait_inflight(std::chrono::milliseconds(1)));
	l.end(0, kPage, token);
	CHECK(l.wait_inflight(std::chrono::milliseconds(1)));
	// Nothing is settled while the maps are being sent.
	CHECK_FALSE(l.settle_ranges());
	CHECK(sorted(l.to_report()) == std::vector<Span>{{0, kPage}, {8 * kPage, kPage}});
	// A new drop waits until the maps are sent.
	std::atomic<bool> began{false};
	std::thread t([&] {
		drop(l, 16 * kPage, kPage);
		began = true;
	});
	std::this_thread::sleep_for(std::chrono::milliseconds(20));
	CHECK_FALSE(began.load());
	l.reported();
	l.remap_end();
	t.join();
	CHECK(l.to_report() == std::vector<Span>{{16 * kPage, kPage}});
}
