// Prefetch (prefetch.cc) on a real pager: sequential and strided access is
// read ahead, a stream under a small budget leaves in long runs, and
// prefetched runs that cross vma boundaries are installed.
#include "daemon/pager/pager.h"

#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <atomic>
#include <thread>

#include "daemon/pager/pager_fixture.h"

using namespace memfed;
using namespace memfed::pager;
using namespace memfed::pager::testing;

TEST_CASE("sequential access is prefetched, upward and downward", "[pager]")
{
	PagerFixture f;
	constexpr uint32_t kPages = 2048;
	f.store.add_region("r", kPages);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, kPages * kPage);
	REQUIRE(m.is_ok());
	int bad = wrong_pages(f.store, "r", m->addr, kPages);
	CHECK(bad == 0);
	auto ps = f.proc_stats();
	CHECK(ps["prefetched"].get<uint64_t>() > kPages / 2);
	CHECK(ps["faults"].get<uint64_t>() < kPages / 4);
	CHECK(ps["prefetch_hits"].get<uint64_t>() > kPages / 2);

	// Strided: every 4th page.
	auto m2 = c.map("r", 0, kPages * kPage);
	REQUIRE(m2.is_ok());
	bad += wrong_pages(f.store, "r", m2->addr, kPages, 4);
	CHECK(bad == 0);
	auto s = f.pager->stats(0);
	CHECK(s["processes"][0]["prefetched"].get<uint64_t>() > ps["prefetched"].get<uint64_t>());
	REQUIRE(c.unmap(*m).is_ok());
	REQUIRE(c.unmap(*m2).is_ok());

	// Descending, from the last page to the first.
	ps = f.proc_stats();
	auto m3 = c.map("r", 0, kPages * kPage);
	REQUIRE(m3.is_ok());
	for (uint32_t p = kPages; p-- > 0;)
		bad += !page_is(m3->addr + p * kPage, expected(f.store, "r", p));
	CHECK(bad == 0);
	auto ds = f.proc_stats();
	CHECK(ds["prefetched"].get<uint64_t>() - ps["prefetched"].get<uint64_t>() > kPages / 2);
	CHECK(ds["faults"].get<uint64_t>() - ps["faults"].get<uint64_t>() < kPages / 4);
	CHECK(ds["prefetch_hits"].get<uint64_t>() - ps["prefetch_hits"].get<uint64_t>() >
	      kPages / 2);
	REQUIRE(c.unmap(*m3).is_ok());
}

TEST_CASE("a sequential scan under a small budget is evicted in long runs", "[pager]")
{
	// A stream touches each page once, its tripwire pages included: CLOCK
	// gives none of them a second chance, so the pages it passed leave in
	// runs as long as an eviction round, not one run per prefetch window
	// with the tripwire pages left behind to be dropped one by one.
	PagerFixture f;
	if (!f.pager->caps().anon_wp)
		return;
	constexpr uint32_t kPages = 16384, kBudget = kPages / 10;
	f.store.add_region("r", kPages);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/true);
	REQUIRE(m.is_ok());
	CHECK(wrong_pages(f.store, "r", m->addr, kPages) == 0);
	uint64_t ranges = c.dropped_ranges(), pages = c.dropped_pages();
	INFO(pages << " pages dropped in " << ranges << " ranges, " << c.drops() << " requests");
	CHECK(pages >= kPages - kBudget - 256);
	CHECK(pages >= 56 * ranges); // measured: 71 per range, 41 with reference bits
	REQUIRE(c.unmap(*m).is_ok());
}

TEST_CASE("prefetched runs that cross vma boundaries are installed", "[pager]")
{
	// mprotect() splits the mapping into many vmas; one UFFDIO_COPY cannot
	// cross a vma boundary, so the pager must split its runs there rather
	// than drop the pages and leave a faulting thread waiting forever.
	PagerFixture f;
	constexpr uint32_t kPages = 2048;
	f.store.add_region("r", kPages);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, kPages * kPage);
	REQUIRE(m.is_ok());
	for (uint32_t p = 37; p < kPages; p += 61)
		REQUIRE(mprotect(m->addr + p * kPage, kPage, PROT_READ) == 0);
	std::atomic<int> bad{-1};
	std::thread reader([&] {
		// MADV_POPULATE_READ (Linux 5.14) faults the pages in from the
		// kernel, back to back: the fastest sequential reader there is.
		(void)madvise(m->addr, kPages * kPage, 22 /* MADV_POPULATE_READ */);
		bad = wrong_pages(f.store, "r", m->addr, kPages);
	});
	for (int i = 0; i < 300 && bad < 0; i++)
		std::this_thread::sleep_for(std::chrono::milliseconds(100));
	if (bad < 0) {
		// A thread blocked in a userfaultfd fault cannot be joined.
		FAIL_CHECK("a sequential read across vma boundaries still waits after 30 s");
		std::abort();
	}
	reader.join();
	CHECK(bad == 0);
	// Installed, not dropped and fetched again by a fault of its own.
	auto ps = f.proc_stats();
	CHECK(ps["prefetched"].get<uint64_t>() > kPages / 2);
	CHECK(ps["faults"].get<uint64_t>() < kPages / 4);
	REQUIRE(c.unmap(*m).is_ok());
}
