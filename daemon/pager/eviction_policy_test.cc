// Unit tests of the pager's eviction policy (eviction_policy.h, refault.h):
// the budget arithmetic, CLOCK's choice of victims and the turns a refault
// earns, on page tables built here.
#include "daemon/pager/eviction_policy.h"
#include "daemon/pager/refault.h"

#include <catch2/catch.hpp>

#include <vector>

using namespace memfed::pager;

namespace
{

std::vector<Page> resident(uint32_t n, uint8_t flags = 0)
{
	return std::vector<Page>(n, Page{PageState::kResident, flags});
}

std::vector<uint32_t> pick(std::vector<Page> &pages, uint32_t *hand, uint64_t want, auto ahead,
                           std::span<uint8_t> turns = {})
{
	std::vector<uint32_t> out;
	// As the pager applies the decision: a victim is being evicted.
	clock_pick(
	        std::span<Page>(pages), turns, hand, want, [](uint32_t) {}, ahead,
	        [&](uint32_t i) {
		        pages[i].state = PageState::kEvicting;
		        out.push_back(i);
	        });
	return out;
}

auto never = [](uint32_t) { return false; };

} // namespace

TEST_CASE("budget: no eviction below the high mark, a round's worth down to the low mark above it",
          "[pager][policy]")
{
	PagerConfig cfg;
	cfg.prefetch = false;
	cfg.evict_headroom = 32;
	cfg.evict_batch = 512;
	BudgetPolicy b(cfg);
	CHECK(b.headroom(1024) == 64);                       // a sixteenth of the budget
	CHECK(b.headroom(100) == 25);                        // at most a quarter
	CHECK(b.headroom(2) == 1);                           // at least one
	CHECK(b.headroom(1 << 20) == 512);                   // at most a round's batch
	CHECK(b.eviction_want(500, 0, true) == 0);           // no budget: never
	CHECK(b.eviction_want(1024 - 64, 1024, false) == 0); // at the high mark
	// One past it: down to budget - headroom - round (a quarter, 256).
	CHECK(b.eviction_want(1024 - 63, 1024, false) == 1024 - 63 - (1024 - 64 - 256));
	// Under pressure, even below the high mark.
	CHECK(b.eviction_want(900, 1024, true) == 900 - (1024 - 64 - 256));
	CHECK(b.eviction_want(100, 1024, true) == 0); // already below the low mark
	CHECK(b.prefetch_room(0, 0) == UINT64_MAX);
	CHECK(b.prefetch_room(900, 1024) == 1024 - 64 - 900);
	CHECK(b.prefetch_room(1000, 1024) == 0);
	// Prefetch keeps half its window free as well.
	cfg.prefetch = true;
	cfg.prefetch_window = 256;
	CHECK(BudgetPolicy(cfg).headroom(1024) == 128);
}

TEST_CASE("budget: a stream's window grows to 8x, within an eighth of the budget and half the bulk "
          "buffers",
          "[pager][policy]")
{
	PagerConfig cfg;
	cfg.prefetch_window = 256;
	cfg.prefetch_chunk = 256;
	cfg.bulk_slots = 16; // 4096 pages of bulk buffers
	BudgetPolicy b(cfg);
	CHECK(b.stream_window_max(0, 0) == 2048);       // half the bulk buffers
	CHECK(b.stream_window_max(16384, 0) == 2048);   // a 64 MiB budget
	CHECK(b.stream_window_max(0, 8192) == 1024);    // an eighth of 32 MiB
	CHECK(b.stream_window_max(16384, 4096) == 512); // the smaller budget
	CHECK(b.stream_window_max(1638, 0) == 256);     // never below the window
	cfg.bulk_slots = 64;
	CHECK(BudgetPolicy(cfg).stream_window_max(0, 0) == 2048); // eight windows
}

TEST_CASE("CLOCK: referenced pages get a second chance, the hand moves on", "[pager][policy]")
{
	auto pages = resident(8);
	pages[0].flags = kRef;
	pages[1].flags = kRef;
	pages[3].state = PageState::kFetching; // not a candidate
	pages[4].flags = kWbInFlight;          // being written back: not a candidate
	uint32_t hand = 0;
	CHECK(pick(pages, &hand, 3, never) == std::vector<uint32_t>{2, 5, 6});
	CHECK(hand == 7);
	// The passed-over pages lost their reference bit; nothing else changed.
	CHECK(pages[0].flags == 0);
	CHECK(pages[1].flags == 0);
	CHECK(pages[4].flags == kWbInFlight);
	// From the hand on, wrapping round: 7, then 0 and 1 (no bit any more).
	CHECK(pick(pages, &hand, 3, never) == std::vector<uint32_t>{7, 0, 1});
	CHECK(hand == 2);
}

TEST_CASE("CLOCK: visit sees each candidate before it is judged, and a bit it sets spares it",
          "[pager][policy]")
{
	// As the pager reads the page tables' written bits just ahead of the
	// hand (async_dirty.cc): what visit() learns counts in the same round.
	auto pages = resident(8);
	pages[2].state = PageState::kFetching; // not a candidate: not visited
	uint32_t hand = 6;
	std::vector<uint32_t> visited, taken;
	clock_pick(
	        std::span<Page>(pages), {}, &hand, 4,
	        [&](uint32_t i) {
		        visited.push_back(i);
		        if (i == 7 || i == 1)
			        pages[i].flags |= kRef; // written since the hand last passed
	        },
	        never,
	        [&](uint32_t i) {
		        pages[i].state = PageState::kEvicting;
		        taken.push_back(i);
	        });
	CHECK(taken == std::vector<uint32_t>{6, 0, 3, 4});
	CHECK(visited == std::vector<uint32_t>{6, 7, 0, 1, 3, 4});
	CHECK(pages[7].flags == 0); // its second chance is spent
	CHECK(pages[1].flags == 0);
}

TEST_CASE("CLOCK: all referenced takes a second turn; nothing eligible takes nothing",
          "[pager][policy]")
{
	auto pages = resident(4, kRef);
	uint32_t hand = 2;
	CHECK(pick(pages, &hand, 2, never) == std::vector<uint32_t>{2, 3});
	auto none = std::vector<Page>(4, Page{PageState::kRemote, 0});
	hand = 1;
	CHECK(pick(none, &hand, 4, never).empty());
	CHECK(hand == 1); // two full turns
	std::vector<Page> empty;
	CHECK(pick(empty, &hand, 4, never).empty());
}

TEST_CASE("CLOCK: prefetched pages ahead of a stream are spared, others are not", "[pager][policy]")
{
	auto pages = resident(6, kPrefetched);
	uint32_t hand = 0;
	auto ahead = [](uint32_t i) { return i >= 3; }; // the stream is at page 2
	CHECK(pick(pages, &hand, 6, ahead) == std::vector<uint32_t>{0, 1, 2});
	// Once the stream has passed them, they go too.
	CHECK(pick(pages, &hand, 6, never) == std::vector<uint32_t>{3, 4, 5});
}

TEST_CASE("CLOCK: with nothing but spared pages, the spared go rather than none", "[pager][policy]")
{
	// Streams' windows that cover every resident page (a 4 MiB budget and
	// four streams did): sparing them all would leave a process at its
	// budget with nothing to evict and its faults waiting for ever.
	auto pages = resident(6, kPrefetched);
	pages[4].flags |= kWbInFlight; // being written back: never a victim
	uint32_t hand = 1;
	auto ahead = [](uint32_t) { return true; };
	CHECK(pick(pages, &hand, 3, ahead) == std::vector<uint32_t>{1, 2, 3});
	CHECK(pick(pages, &hand, 3, ahead) == std::vector<uint32_t>{5, 0});
	CHECK(pick(pages, &hand, 3, ahead).empty()); // nothing left to take
}

TEST_CASE("refault: a page back within half the budget's evictions earns the turns, later none",
          "[pager][policy]")
{
	CHECK(refault_turns(0, 1000, 7) == 7);
	CHECK(refault_turns(499, 1000, 7) == 7);
	CHECK(refault_turns(500, 1000, 7) == 0); // half the budget: as far as uniform use
	CHECK(refault_turns(100000, 1000, 7) == 0);
	CHECK(refault_turns(0, 0, 7) == 0);     // no budget, no eviction to count
	CHECK(refault_turns(10, 1000, 0) == 0); // turned off
}

TEST_CASE("CLOCK: a page with extra turns is passed over once per turn, then taken",
          "[pager][policy]")
{
	auto pages = resident(4);
	std::vector<uint8_t> turns{0, 2, 0, 0};
	pages[2].flags = kRef; // a reference bit goes before the turns
	uint32_t hand = 0;
	CHECK(pick(pages, &hand, 2, never, turns) == std::vector<uint32_t>{0, 3});
	CHECK(turns[1] == 1);
	CHECK(pages[2].flags == 0);
	// The next round takes page 2 and spends page 1's last turn.
	CHECK(pick(pages, &hand, 1, never, turns) == std::vector<uint32_t>{2});
	CHECK(turns[1] == 0);
	CHECK(pick(pages, &hand, 1, never, turns) == std::vector<uint32_t>{1});
}

TEST_CASE("CLOCK: with every page holding turns, a round still takes some, and clears their turns",
          "[pager][policy]")
{
	// Two turns of the hand spend two of each page's turns; a process at
	// its budget must not wait for ever on pages that earned more.
	auto pages = resident(3);
	std::vector<uint8_t> turns{7, 7, 7};
	uint32_t hand = 0;
	CHECK(pick(pages, &hand, 2, never, turns) == std::vector<uint32_t>{0, 1});
	CHECK(turns == std::vector<uint8_t>{0, 0, 5});
}
