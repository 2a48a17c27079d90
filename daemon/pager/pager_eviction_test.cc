// Budgets and eviction on each of pager_fixture.h's paths (drop, move, move
// under WP_ASYNC): the budget holds and no write is lost, a victim leaves
// only once its newest content is on the module, and drops, syncs, detaches
// and forks in the middle of a round find every page where it should be.
#include "daemon/pager/pager.h"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "daemon/pager/pager_fixture.h"

using namespace memfed;
using namespace memfed::pager;
using namespace memfed::pager::testing;

namespace
{

// Writes pages 0, 1, ... of `m` (page p's first byte 0x40 + p), with the
// store holding writes, until the first eviction round's write-back waits
// at the module: its victims are among these pages, written but not yet
// dropped. Returns how many pages it wrote (at most `most`).
uint32_t write_until_writeback_waits(PageStoreDouble &store, const TestClient::Mapped &m,
                                     uint32_t most)
{
	store.hold_writes();
	uint32_t written = 0;
	while (written < most && store.writes_waiting() == 0) {
		m.addr[written * kPage] = uint8_t(0x40 + written);
		written++;
		for (int i = 0; i < 20 && store.writes_waiting() == 0; i++)
			usleep(500);
	}
	REQUIRE(store.writes_waiting() > 0);
	return written;
}

} // namespace

TEST_CASE("the budget holds under pressure and eviction loses no write", "[pager]")
{
	PagerFixture f;
	if (!f.pager->caps().anon_wp) {
		WARN("no userfaultfd write-protect here: budgets are not enforced");
		return;
	}
	constexpr uint32_t kPages = 1024, kBudget = 64;
	f.store.add_region("r", kPages);
	const EvictPath path = GENERATE(EvictPath::kDrop, EvictPath::kMove, EvictPath::kAsync);
	TestClient c;
	if (!evict_path(c, f, path))
		return;
	attach_on(c, f, path);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage);
	REQUIRE(m.is_ok());
	size_t max_resident = 0;
	// Write every page (dirtying it), then read everything back twice.
	for (uint32_t p = 0; p < kPages; p++) {
		m->addr[p * kPage + (p % kPage)] = uint8_t(p * 13 + 1);
		if (p % 16 == 0)
			max_resident = std::max(max_resident, resident_pages(m->addr, m->length));
	}
	int bad = 0;
	for (int round = 0; round < 2; round++) {
		for (uint32_t p = 0; p < kPages; p++) {
			const uint8_t *pg = m->addr + p * kPage;
			uint8_t want = expected(f.store, "r", p);
			for (uint32_t i = 0; i < kPage; i += 512)
				bad += pg[i] != (i == (p % kPage) ? uint8_t(p * 13 + 1) : want) &&
				       i != (p % kPage);
			bad += pg[p % kPage] != uint8_t(p * 13 + 1);
			if (p % 16 == 0)
				max_resident =
				        std::max(max_resident, resident_pages(m->addr, m->length));
		}
	}
	CHECK(bad == 0);
	CHECK(max_resident <= kBudget);
	auto ps = f.proc_stats();
	CHECK(ps["evictions"].get<uint64_t>() > kPages);
	CHECK(ps["writebacks"].get<uint64_t>() >= kPages - kBudget);
	CHECK(ps["resident_pages"].get<uint64_t>() <= kBudget);
	CHECK(evictor_worked(c));
	REQUIRE(c.unmap(*m).is_ok());
	for (uint32_t p = 0; p < kPages; p++)
		bad += f.store.read("r", uint64_t(p) * kPage + (p % kPage), 1)[0] !=
		       uint8_t(p * 13 + 1);
	CHECK(bad == 0);
}

TEST_CASE("under WP_ASYNC writes are found without a fault, and clean pages leave unwritten",
          "[pager]")
{
	// The pager sees no first write: it finds written pages by PAGEMAP_SCAN
	// (before a move, before a sync) and by content (a moved page whose bytes
	// hash otherwise). A page only read must leave without a write-back, a
	// page written must reach the module, by eviction or by sync.
	PagerFixture f;
	constexpr uint32_t kPages = 512, kBudget = 32;
	f.store.add_region("r", kPages);
	TestClient c;
	if (!f.pager->caps().anon_wp || !evict_path(c, f, EvictPath::kAsync))
		return;
	// The evictor hashes the pages it moved, or the pager reads them.
	c.hash_moves = GENERATE(true, false);
	INFO("the evictor sends hashes: " << c.hash_moves);
	attach_on(c, f, EvictPath::kAsync);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	CHECK(wrong_pages(f.store, "r", m->addr, kPages) == 0);
	auto ps = f.proc_stats();
	INFO(ps.dump());
	CHECK(ps["evictions"].get<uint64_t>() > kPages / 2);
	CHECK(ps["writebacks"].get<uint64_t>() == 0);

	// Each page read (installed clean), then written: no fault.
	auto mark = [](uint32_t p) { return uint8_t(p ^ 0x5a); };
	for (uint32_t p = 0; p < kPages; p++) {
		volatile uint8_t *pg = m->addr + p * kPage;
		CHECK(pg[0] == expected(f.store, "r", p));
		pg[7] = mark(p);
	}
	ps = f.proc_stats();
	INFO(ps.dump());
	CHECK(ps["wp_faults"].get<uint64_t>() == 0);
	CHECK(ps["writebacks"].get<uint64_t>() >= kPages - 2 * kBudget);
	// The pages still resident are found by the sync's scan.
	REQUIRE(c.sync(m->id).is_ok());
	int bad = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		auto got = f.store.read("r", uint64_t(p) * kPage, kPage);
		for (uint32_t i = 0; i < kPage; i++)
			bad += got[i] != (i == 7 ? mark(p) : expected(f.store, "r", p));
	}
	CHECK(bad == 0);
	// A write after the sync is found by the next one (the scan protected
	// the page again), and one to a page the sync did not cover is not
	// written by it.
	const uint32_t last = kPages - 1, other = kPages - 2;
	m->addr[last * kPage + 9] = 0x99;
	m->addr[other * kPage + 9] = 0x98;
	REQUIRE(c.sync(m->id, uint64_t(last) * kPage, kPage).is_ok());
	CHECK(f.store.read("r", uint64_t(last) * kPage + 9, 1)[0] == 0x99);
	CHECK(f.store.read("r", uint64_t(other) * kPage + 9, 1)[0] != 0x98);
	REQUIRE(c.unmap(*m).is_ok());
	CHECK(f.store.read("r", uint64_t(other) * kPage + 9, 1)[0] == 0x98);
}

TEST_CASE("under WP_ASYNC pages written between rounds keep their place (CLOCK's second chance)",
          "[pager]")
{
	// A fault marks a page referenced only when it installs it: a page
	// written all the time would look as cold as one read once. Under
	// WP_ASYNC each round's PAGEMAP_SCAN tells which pages were written
	// since the last, and those get their second chance. A few hot pages,
	// written between every few reads of a stream through a budget they
	// and a part of the stream fit in, are not taken out once the stream
	// runs. The written bits are read a page table's worth (512 pages)
	// ahead of CLOCK's hand: hot pages at the start of the mapping and in
	// the middle of its second table both keep their place.
	PagerFixture f;
	constexpr uint32_t kPages = 1024, kBudget = 64, kHot = 8, kHot2 = 700;
	f.store.add_region("r", kPages);
	TestClient c;
	if (!f.pager->caps().anon_wp || !evict_path(c, f, EvictPath::kAsync))
		return;
	attach_on(c, f, EvictPath::kAsync);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	auto hot = [](uint32_t h) { return h < kHot / 2 ? h : kHot2 + h - kHot / 2; };
	auto is_hot = [](uint32_t p) {
		return p < kHot / 2 || (p >= kHot2 && p < kHot2 + kHot / 2);
	};
	for (uint32_t h = 0; h < kHot; h++)
		m->addr[hot(h) * kPage] = uint8_t(h + 1);
	uint32_t gone = 0;
	int bad = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		if (is_hot(p))
			continue;
		bad += m->addr[p * kPage] != expected(f.store, "r", p);
		if (p % 4 != 0)
			continue;
		// Past the first rounds: in the first, every page is referenced
		// (each was just installed), and CLOCK's second lap takes any.
		if (p >= 4 * kBudget)
			for (uint32_t h = 0; h < kHot; h++)
				gone += resident_pages(m->addr + hot(h) * kPage, kPage) == 0;
		for (uint32_t h = 0; h < kHot; h++)
			m->addr[hot(h) * kPage + p / 4 % kPage] = uint8_t(p);
	}
	auto ps = f.proc_stats();
	INFO(ps.dump());
	CHECK(bad == 0);
	CHECK(ps["evictions"].get<uint64_t>() > kPages / 2);
	CHECK(gone == 0);
}

TEST_CASE("a page the program drops while it is being evicted is zero on the module too", "[pager]")
{
	PagerFixture f;
	if (!f.pager->caps().anon_wp) {
		WARN("no userfaultfd write-protect here: budgets are not enforced");
		return;
	}
	constexpr uint32_t kPages = 256, kBudget = 64;
	f.store.add_region("r", kPages);
	const EvictPath path = GENERATE(EvictPath::kDrop, EvictPath::kMove, EvictPath::kAsync);
	TestClient c;
	if (!evict_path(c, f, path))
		return;
	attach_on(c, f, path);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage);
	REQUIRE(m.is_ok());
	uint32_t written = write_until_writeback_waits(f.store, *m, kBudget);
	// The program drops all of them now, victims included.
	REQUIRE(madvise(m->addr, written * kPage, MADV_DONTNEED) == 0);
	f.store.release_writes();
	// Zeroes reach the module for every dropped page, without a sync: a
	// victim's written-back bytes must not stay there (a daemon restarted
	// now would serve them, where the program dropped the page).
	auto nonzero = [&] {
		int n = 0;
		for (uint32_t p = 0; p < written; p++)
			n += f.store.read("r", uint64_t(p) * kPage, 1)[0] != 0;
		return n;
	};
	for (int i = 0; i < 400 && nonzero() > 0; i++)
		usleep(5000);
	CHECK(nonzero() == 0);
	for (uint32_t p = 0; p < written; p++)
		CHECK(page_is(m->addr + p * kPage, 0));
	REQUIRE(c.unmap(*m).is_ok());
}

TEST_CASE("a sync of pages the program dropped during their eviction waits for their zeroes",
          "[pager]")
{
	// The client forgets a drop of its program once a sync of its range is
	// done. A victim the program dropped during its eviction gets its
	// zeroes at the round's end: a sync done before then let a daemon
	// killed meanwhile serve the victim's written-back bytes.
	PagerFixture f;
	if (!f.pager->caps().anon_wp) {
		WARN("no userfaultfd write-protect here: budgets are not enforced");
		return;
	}
	constexpr uint32_t kPages = 256, kBudget = 64;
	f.store.add_region("r", kPages);
	const EvictPath path = GENERATE(EvictPath::kDrop, EvictPath::kMove, EvictPath::kAsync);
	TestClient c;
	if (!evict_path(c, f, path))
		return;
	attach_on(c, f, path);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage);
	REQUIRE(m.is_ok());
	uint32_t written = write_until_writeback_waits(f.store, *m, kBudget);
	REQUIRE(madvise(m->addr, written * kPage, MADV_DONTNEED) == 0);
	auto synced = std::async(std::launch::async,
	                         [&] { return c.sync(m->id, 0, written * kPage).is_ok(); });
	// Writes are answered one at a time until the sync is done; then the
	// module must hold zeroes for every dropped page.
	for (int i = 0; i < 2000; i++) {
		if (synced.wait_for(std::chrono::milliseconds(10)) == std::future_status::ready)
			break;
		f.store.release_first_write();
	}
	REQUIRE(synced.wait_for(std::chrono::seconds(0)) == std::future_status::ready);
	int nonzero = 0;
	for (uint32_t p = 0; p < written; p++)
		nonzero += f.store.read("r", uint64_t(p) * kPage, 1)[0] != 0;
	f.store.release_writes();
	CHECK(synced.get());
	CHECK(nonzero == 0);
	REQUIRE(c.unmap(*m).is_ok());
}

TEST_CASE("a victim is dropped only once its newest content is on the module", "[pager]")
{
	// A page the program drops while an earlier write of it is in flight
	// and then writes again has two writes to make: the earlier one and the
	// new content. The eviction that takes it must wait for the second.
	// If it took the first one's completion for its own, it dropped the
	// page with its content still on the way: a daemon killed then lost it,
	// and the module served the zeroes (python crashed on such a page).
	PagerFixture f;
	if (!f.pager->caps().anon_wp) {
		WARN("no userfaultfd write-protect here: budgets are not enforced");
		return;
	}
	constexpr uint32_t kPages = 256, kBudget = 16;
	f.store.add_region("r", kPages);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	volatile uint8_t *p0 = m->addr;
	p0[0] = 0x5a;
	f.store.hold_writes();
	// Dropped: its zeroes go to the module at once, and wait there.
	REQUIRE(madvise(m->addr, kPage, MADV_DONTNEED) == 0);
	for (int i = 0; i < 10000 && f.store.writes_waiting() == 0; i++)
		usleep(1000);
	REQUIRE(f.store.writes_waiting() == 1);
	p0[0] = 0xa5; // a zero page again, written
	// Every other page only read: clean victims, dropped without a write.
	// The reader waits whenever the round that took page 0 waits.
	std::atomic<bool> stop{false};
	std::thread reader([&] {
		for (uint32_t n = 0; !stop; n++) {
			uint32_t pg = 1 + (n * 37) % (kPages - 1);
			(void)*(volatile uint8_t *)(m->addr + uint64_t(pg) * kPage);
		}
	});
	// Writes are answered one at a time. Whenever page 0 is not in the
	// process, the module must hold its newest content.
	int dropped = 0, early = 0;
	for (int i = 0; i < 4000 && dropped == 0; i++) {
		if (resident_pages(m->addr, kPage) == 0) {
			dropped++;
			early += f.store.read("r", 0, 1)[0] != 0xa5;
			break;
		}
		if (f.store.writes_waiting() > 0 && i % 20 == 19)
			f.store.release_first_write(); // every 20 ms: room to drop early
		usleep(1000);
	}
	f.store.release_writes();
	stop = true;
	reader.join();
	REQUIRE(dropped > 0); // else the test saw no eviction of page 0
	CHECK(early == 0);
	CHECK(p0[0] == 0xa5);
	REQUIRE(c.unmap(*m).is_ok());
	CHECK(f.store.read("r", 0, 1)[0] == 0xa5);
}

TEST_CASE("a client that detaches while its eviction round writes back is freed, uffd and all",
          "[pager]")
{
	// Its program's next munmap of memory on the uffd waits until the pager
	// reads the UNMAP event or closes the uffd: a process the pager kept
	// but no longer read would hang it. Here the round's victims are
	// every dirty page, their write-backs held, so the detach has nothing
	// to flush and ends while the round still waits for them.
	for (EvictPath path : {EvictPath::kDrop, EvictPath::kMove}) {
		INFO("eviction path: " << path_name(path));
		PagerFixture f;
		constexpr uint32_t kPages = 64, kBudget = 16, kDirty = 5;
		f.store.add_region("r", kPages);
		TestClient c;
		if (!f.pager->caps().anon_wp || !evict_path(c, f, path))
			continue;
		attach_on(c, f, path);
		auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
		REQUIRE(m.is_ok());
		f.store.hold_writes();
		for (uint32_t p = 0; p < kDirty; p++)
			m->addr[p * kPage] = uint8_t(p + 1);
		// Clean pages up to the high mark and one past it: the round
		// takes the oldest, the dirty ones.
		for (uint32_t p = kDirty; p < 13; p++)
			CHECK(m->addr[p * kPage] == expected(f.store, "r", p));
		REQUIRE(eventually(10, [&] { return f.store.writes_waiting() > 0; }));
		REQUIRE(f.proc_stats()["state"]["evict"]["active"].get<bool>());
		c.disconnect();
		// The detach flushes nothing and ends (the process then goes at
		// once, or not at all); the round's writes are let go after.
		(void)eventually(2, [&] { return f.pager->stats(0)["processes"].empty(); });
		f.store.release_writes();
		INFO(f.pager->stats(0).dump());
		CHECK(eventually(10, [&] { return f.pager->stats(0)["processes"].empty(); }));
		for (uint32_t p = 0; p < kDirty; p++)
			CHECK(f.store.read("r", uint64_t(p) * kPage, 1)[0] == uint8_t(p + 1));
	}
}

TEST_CASE("a fault on a staged page is served from its slot, without a module read", "[pager]")
{
	// Eviction by move: victims sit in the staging area while their
	// write-back is in flight (held here). A touch of one installs it from
	// its slot: the module is not read, and the bytes are the newest.
	PagerFixture f;
	constexpr uint32_t kPages = 256, kBudget = 32;
	f.store.add_region("r", kPages);
	TestClient c;
	if (!f.pager->caps().anon_wp || !evict_path(c, f, EvictPath::kMove))
		return;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	// A writer dirties page after page with the write-backs held, until it
	// waits for room that only those write-backs can make: then every
	// page it wrote and that is out of the process is staged, and nothing
	// is fetched until the writes are let go.
	f.store.hold_writes();
	std::atomic<uint32_t> written{0};
	std::thread writer([&] {
		for (uint32_t p = 0; p < kPages; p++) {
			m->addr[p * kPage] = uint8_t(0x40 + p);
			written = p + 1;
		}
	});
	bool stuck = false;
	for (int i = 0; i < 2000 && !stuck; i++) {
		auto st = f.proc_stats()["state"];
		stuck = st["thread"]["waiting_faults"].get<uint64_t>() > 0 &&
		        st["pages"]["staged"].get<uint64_t>() > 0 && f.store.writes_waiting() > 0;
		if (!stuck)
			usleep(5000);
	}
	if (!stuck)
		f.store.release_writes(); // so the writer ends and the case fails, not hangs
	REQUIRE(stuck);
	// Demand fetches, not the module's reads: the pager's once-a-second
	// probe of each region it maps reads a page too.
	uint64_t fetches = f.proc_stats()["fetches"].get<uint64_t>();
	int wrong = 0, served = 0;
	for (uint32_t p = 0; p < written && served < 4; p++) {
		if (resident_pages(m->addr + p * kPage, kPage) != 0)
			continue;
		served++;
		wrong += m->addr[p * kPage] != uint8_t(0x40 + p);
	}
	CHECK(served > 0);
	CHECK(wrong == 0);
	CHECK(f.proc_stats()["fetches"].get<uint64_t>() == fetches);
	CHECK(f.proc_stats()["staged_hits"].get<uint64_t>() == uint64_t(served));
	f.store.release_writes();
	writer.join();
	REQUIRE(c.unmap(*m).is_ok());
	for (uint32_t p = 0; p < kPages; p++)
		wrong += f.store.read("r", uint64_t(p) * kPage, 1)[0] != uint8_t(0x40 + p);
	CHECK(wrong == 0);
}

TEST_CASE("pages shared with a forked child leave, by the drop path or once unshared", "[pager]")
{
	// UFFDIO_MOVE refuses a page mapped by two processes (EBUSY): after a
	// fork the parent's pages are shared with the child until one writes
	// them. The round after a refused move drops instead, so the budget
	// still holds. Under WP_ASYNC the drop path would lose writes: the
	// client unshares the pages (MADV_POPULATE_WRITE) and they move.
	PagerFixture f;
	constexpr uint32_t kPages = 512, kBudget = 64;
	f.store.add_region("r", kPages);
	TestClient c;
	const EvictPath path = GENERATE(EvictPath::kMove, EvictPath::kAsync);
	if (!f.pager->caps().anon_wp || !evict_path(c, f, path))
		return;
	attach_on(c, f, path);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	for (uint32_t p = 0; p < kBudget / 2; p++)
		m->addr[p * kPage] = uint8_t(p + 1);
	int pipefd[2];
	REQUIRE(pipe(pipefd) == 0);
	pid_t child = fork();
	if (child == 0) {
		// Holds the parent's pages shared until the pipe closes. (The
		// uffd has no EVENT_FORK: the child's range is not registered.)
		char b;
		close(pipefd[1]);
		(void)!read(pipefd[0], &b, 1);
		_exit(0);
	}
	REQUIRE(child > 0);
	close(pipefd[0]);
	int bad = 0;
	for (uint32_t p = 0; p < kPages; p++)
		bad += m->addr[p * kPage] !=
		       (p < kBudget / 2 ? uint8_t(p + 1) : expected(f.store, "r", p));
	size_t present = resident_pages(m->addr, m->length);
	close(pipefd[1]);
	waitpid(child, nullptr, 0);
	CHECK(bad == 0);
	CHECK(present <= kBudget);
	CHECK(c.moved_pages() > 0);
	if (path == EvictPath::kAsync)
		CHECK(c.drops() == 0);
	else
		CHECK(c.drops() > 0);
	REQUIRE(c.unmap(*m).is_ok());
	for (uint32_t p = 0; p < kBudget / 2; p++)
		bad += f.store.read("r", uint64_t(p) * kPage, 1)[0] != uint8_t(p + 1);
	CHECK(bad == 0);
}

TEST_CASE("threads writing without pause while eviction runs lose no write (shadow copy)",
          "[pager]")
{
	// In the style of the kernel's uffd-stress: each thread owns every
	// kThreads-th page, stamps a whole page with a new value, keeps the
	// value in a shadow copy, and checks a page of its own against the
	// shadow before every stamp, while a tight budget evicts all the time
	// A write that slipped between a victim's copy-out and its drop would
	// come back old.
	PagerFixture f;
	if (!f.pager->caps().anon_wp) {
		WARN("no userfaultfd write-protect here: budgets are not enforced");
		return;
	}
	constexpr uint32_t kPages = 512, kBudget = 48, kThreads = 3, kOps = 6000;
	f.store.add_region("r", kPages);
	const EvictPath path = GENERATE(EvictPath::kDrop, EvictPath::kMove, EvictPath::kAsync);
	TestClient c;
	if (!evict_path(c, f, path))
		return;
	attach_on(c, f, path);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	std::vector<uint64_t> shadow(kPages, 0);
	std::atomic<uint64_t> bad{0};
	auto words = [&](uint32_t p) {
		return reinterpret_cast<volatile uint64_t *>(m->addr + p * kPage);
	};
	std::vector<std::thread> ts;
	for (uint32_t t = 0; t < kThreads; t++) {
		ts.emplace_back([&, t] {
			std::mt19937 rng(t + 1);
			uint32_t mine = kPages / kThreads;
			for (uint32_t op = 1; op <= kOps; op++) {
				uint32_t p = t + kThreads * uint32_t(rng() % mine);
				volatile uint64_t *w = words(p);
				uint64_t want = shadow[p];
				for (uint32_t i = 0; i < kPage / 8; i += 61)
					if (want != 0 && w[i] != want)
						bad++;
				uint64_t v = (uint64_t(t) << 48) | (uint64_t(p) << 24) | op;
				for (uint32_t i = 0; i < kPage / 8; i++)
					w[i] = v;
				shadow[p] = v;
			}
		});
	}
	for (auto &th : ts)
		th.join();
	CHECK(bad == 0);
	// Every page against the shadow, through the pager (most are evicted).
	uint64_t wrong = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		if (shadow[p] == 0)
			continue;
		volatile uint64_t *w = words(p);
		for (uint32_t i = 0; i < kPage / 8; i++)
			wrong += w[i] != shadow[p];
	}
	CHECK(wrong == 0);
	auto ps = f.proc_stats();
	INFO(ps.dump());
	CHECK(ps["evictions"].get<uint64_t>() > kPages);
	CHECK(evictor_worked(c));
	// Under WP_ASYNC no first write went through the pager.
	if (path == EvictPath::kAsync)
		CHECK(ps["wp_faults"].get<uint64_t>() == 0);
	// And on the module once written back.
	REQUIRE(c.unmap(*m).is_ok());
	for (uint32_t p = 0; p < kPages; p++) {
		if (shadow[p] == 0)
			continue;
		auto got = f.store.read("r", uint64_t(p) * kPage, kPage);
		for (uint32_t i = 0; i < kPage; i += 8) {
			uint64_t v;
			std::memcpy(&v, got.data() + i, 8);
			wrong += v != shadow[p];
		}
	}
	CHECK(wrong == 0);
}

TEST_CASE("a process budget covers all its mappings", "[pager]")
{
	PagerFixture f;
	if (!f.pager->caps().anon_wp)
		return;
	f.store.add_region("a", 256);
	f.store.add_region("b", 256);
	const EvictPath path = GENERATE(EvictPath::kDrop, EvictPath::kMove, EvictPath::kAsync);
	TestClient c;
	if (!evict_path(c, f, path))
		return;
	attach_on(c, f, path, 48 * kPage);
	auto ma = c.map("a", 0, 256 * kPage);
	auto mb = c.map("b", 0, 256 * kPage);
	REQUIRE(ma.is_ok());
	REQUIRE(mb.is_ok());
	size_t max_resident = 0;
	int bad = 0;
	for (uint32_t p = 0; p < 256; p++) {
		bad += ma->addr[p * kPage] != expected(f.store, "a", p);
		bad += mb->addr[p * kPage] != expected(f.store, "b", p);
		max_resident = std::max(max_resident, resident_pages(ma->addr, ma->length) +
		                                              resident_pages(mb->addr, mb->length));
	}
	CHECK(bad == 0);
	CHECK(max_resident <= 48);
	REQUIRE(c.unmap(*ma).is_ok());
	REQUIRE(c.unmap(*mb).is_ok());
}

TEST_CASE("an eviction round of scattered pages fits one request", "[pager]")
{
	// Every other page resident: each victim is a range of its own, more
	// than one drop (or move) request carries. What does not fit must stay resident
	// in the pager's books as it does in the process.
	PagerFixture f;
	if (!f.pager->caps().anon_wp)
		return;
	constexpr uint32_t kPages = 32768, kBudget = 8192;
	f.store.add_region("r", kPages);
	const EvictPath path = GENERATE(EvictPath::kDrop, EvictPath::kMove, EvictPath::kAsync);
	TestClient c;
	if (!evict_path(c, f, path))
		return;
	attach_on(c, f, path);
	auto m = c.map("r", 0, kPages * kPage, kBudget * kPage, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	int bad = 0;
	size_t max_resident = 0;
	for (uint32_t p = 0; p < kPages; p += 2) {
		bad += m->addr[p * kPage] != expected(f.store, "r", p);
		if (p % 1024 == 0)
			max_resident = std::max(max_resident, resident_pages(m->addr, m->length));
	}
	CHECK(bad == 0);
	CHECK(max_resident <= kBudget);
	// The pager's count matches the process's page tables once the last
	// round is over.
	uint64_t counted = 0;
	size_t present = 0;
	for (int i = 0; i < 100; i++) {
		counted = f.proc_stats()["resident_pages"].get<uint64_t>();
		present = resident_pages(m->addr, m->length);
		if (counted == present)
			break;
		std::this_thread::sleep_for(std::chrono::milliseconds(20));
	}
	CHECK(counted == present);
	CHECK(present <= kBudget);
	REQUIRE(c.unmap(*m).is_ok());
}
