// Shared windows (shared_window.cc, shared_faults.cc): one copy of a region
// in the pager's memfd for every client that maps it shared, coherent, next
// to private mappings, within a budget, prefetched, on a uffd of its own.
#include "daemon/pager/pager.h"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "daemon/pager/pager_fixture.h"

using namespace memfed;
using namespace memfed::pager;
using namespace memfed::pager::testing;

namespace
{

// Whether thread `tid` of this process waits in a userfaultfd fault.
bool waits_in_userfault(pid_t tid)
{
	char path[64];
	std::snprintf(path, sizeof(path), "/proc/self/task/%d/wchan", int(tid));
	FILE *f = std::fopen(path, "re");
	if (f == nullptr)
		return false;
	char wchan[64] = {};
	size_t n = std::fread(wchan, 1, sizeof(wchan) - 1, f);
	std::fclose(f);
	return std::string(wchan, n) == "handle_userfault";
}

// The pages of [addr, addr + pages * kPage) that are present and
// write-protected by userfaultfd (pagemap bit 57).
std::vector<uint32_t> uffd_wp_pages(const uint8_t *addr, uint32_t pages)
{
	std::vector<uint64_t> pm(pages);
	FILE *f = std::fopen("/proc/self/pagemap", "re");
	REQUIRE(f != nullptr);
	bool ok =
	        std::fseek(f, long(reinterpret_cast<uint64_t>(addr) / kPage * 8), SEEK_SET) == 0 &&
	        std::fread(pm.data(), 8, pages, f) == pages;
	std::fclose(f);
	REQUIRE(ok);
	std::vector<uint32_t> out;
	for (uint32_t i = 0; i < pages; i++)
		if ((pm[i] >> 63 & 1) && (pm[i] >> 57 & 1))
			out.push_back(i);
	return out;
}

} // namespace

TEST_CASE("a private and a shared mapping of one region, the shared one under a budget", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 1024);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 1024 * kPage);
	REQUIRE(m.is_ok());
	int bad = wrong_pages(f.store, "r", m->addr, 1024);
	CHECK(bad == 0);
	auto ms = c.map_shared("r", 0, 1024 * kPage, 64 * kPage);
	REQUIRE(ms.is_ok());
	for (uint32_t p = 0; p < 1024; p++) {
		ms->addr[p * kPage + 8] = 0x5A;
		bad += ms->addr[p * kPage] != expected(f.store, "r", p);
	}
	CHECK(bad == 0);
	REQUIRE(c.unmap(*m).is_ok());
	REQUIRE(c.unmap(*ms).is_ok());
	CHECK(f.store.read("r", 1000 * kPage + 8, 1)[0] == 0x5A);
}

TEST_CASE("shared mappings of one window are coherent across clients", "[pager][shared]")
{
	PagerFixture f;
	f.store.add_region("r", 64);
	TestClient a;
	auto b = std::make_unique<TestClient>();
	REQUIRE(a.attach(f.path).is_ok());
	REQUIRE(b->attach(f.path).is_ok());
	auto ma = a.map_shared("r", 0, 64 * kPage);
	REQUIRE(ma.is_ok());
	auto mb = b->map_shared("r", 0, 64 * kPage);
	REQUIRE(mb.is_ok());
	CHECK(page_is(ma->addr + 3 * kPage, expected(f.store, "r", 3)));
	CHECK(page_is(mb->addr + 3 * kPage, expected(f.store, "r", 3)));
	CHECK(page_is(mb->addr + 9 * kPage, expected(f.store, "r", 9)));
	ma->addr[9 * kPage] = 0x99; // one copy of the page: b sees it
	CHECK(mb->addr[9 * kPage] == 0x99);
	std::memset(mb->addr + 20 * kPage, 0x20, kPage); // write fault on a missing page
	CHECK(page_is(ma->addr + 20 * kPage, 0x20));
	REQUIRE(a.sync(ma->id).is_ok());
	CHECK(f.store.read("r", 9 * kPage, 1)[0] == 0x99);
	CHECK(f.store.read("r", 20 * kPage, kPage) == std::vector<uint8_t>(kPage, 0x20));
	CHECK(f.store.read("r", 3 * kPage, 1)[0] == expected(f.store, "r", 3));
	auto s = f.pager->stats(0);
	CHECK(s["regions"][0]["writebacks"].get<uint64_t>() == 2); // unchanged pages stay
	// MADV_REMOVE punches the page for everyone: zero, never the old data.
	REQUIRE(madvise(ma->addr + 3 * kPage, kPage, MADV_REMOVE) == 0);
	CHECK(page_is(mb->addr + 3 * kPage, 0));
	REQUIRE(a.unmap(*ma).is_ok());
	// A writer that goes away without unmapping loses nothing: the data is
	// in the pager's memfd and is written back when its connection closes.
	mb->addr[40 * kPage] = 0x40;
	b->disconnect();
	for (int i = 0; i < 200 && f.store.read("r", 40 * kPage, 1)[0] != 0x40; i++)
		usleep(10 * 1000);
	CHECK(f.store.read("r", 40 * kPage, 1)[0] == 0x40);
	CHECK(f.store.read("r", 3 * kPage, kPage) == std::vector<uint8_t>(kPage, 0));
	// With no pager reading its uffd, munmap would wait for one (the UNMAP
	// event): close the uffd first, as a client that gives up does.
	b.reset();
	munmap(mb->addr, mb->length);
}

TEST_CASE("a shared window stays within its budget", "[pager][shared]")
{
	PagerFixture f;
	if (!f.pager->caps().shmem_wp) {
		WARN("no write-protect on shmem here: shared budgets are not enforced");
		return;
	}
	constexpr uint32_t kPages = 512, kBudget = 48;
	f.store.add_region("r", kPages);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map_shared("r", 0, kPages * kPage, kBudget * kPage);
	REQUIRE(m.is_ok());
	size_t max_resident = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		m->addr[p * kPage + 1] = uint8_t(p * 3 + 1);
		max_resident = std::max(max_resident, resident_pages(m->addr, m->length));
	}
	int bad = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		bad += m->addr[p * kPage + 1] != uint8_t(p * 3 + 1);
		bad += m->addr[p * kPage + 2] != expected(f.store, "r", p);
		max_resident = std::max(max_resident, resident_pages(m->addr, m->length));
	}
	CHECK(bad == 0);
	CHECK(max_resident <= kBudget);
	auto s = f.pager->stats(0);
	CHECK(s["regions"][0]["evictions"].get<uint64_t>() > kPages);
	REQUIRE(c.unmap(*m).is_ok());
	for (uint32_t p = 0; p < kPages; p++)
		bad += f.store.read("r", uint64_t(p) * kPage + 1, 1)[0] != uint8_t(p * 3 + 1);
	CHECK(bad == 0);
}

TEST_CASE("a mapping with a budget that joins a resident window trims it first", "[pager][shared]")
{
	PagerFixture f;
	if (!f.pager->caps().shmem_wp) {
		WARN("no write-protect on shmem here: shared budgets are not enforced");
		return;
	}
	constexpr uint32_t kPages = 512, kBudget = 48;
	f.store.add_region("r", kPages);
	TestClient a, b;
	REQUIRE(a.attach(f.path).is_ok());
	REQUIRE(b.attach(f.path).is_ok());
	auto ma = a.map_shared("r", 0, kPages * kPage);
	REQUIRE(ma.is_ok());
	// No budget: every page of the window is resident, and dirty.
	for (uint32_t p = 0; p < kPages; p++)
		ma->addr[p * kPage + 1] = uint8_t(p * 5 + 1);
	CHECK(resident_pages(ma->addr, ma->length) == kPages);
	auto mb = b.map_shared("r", 0, kPages * kPage, kBudget * kPage);
	REQUIRE(mb.is_ok());
	// Within b's budget before b touches a page, in both processes.
	CHECK(resident_pages(mb->addr, mb->length) <= kBudget);
	CHECK(resident_pages(ma->addr, ma->length) <= kBudget);
	CHECK(f.pager->stats(0)["regions"][0]["evictions"].get<uint64_t>() >= kPages - kBudget);
	// The evicted pages were written back first: a's writes come back.
	int bad = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		bad += mb->addr[p * kPage + 1] != uint8_t(p * 5 + 1);
		bad += mb->addr[p * kPage + 2] != expected(f.store, "r", p);
	}
	CHECK(bad == 0);
	REQUIRE(b.unmap(*mb).is_ok());
	REQUIRE(a.unmap(*ma).is_ok());
}

TEST_CASE("two pager threads serve two clients, one shared window between them", "[pager]")
{
	PagerConfig cfg;
	cfg.threads = 2;
	PagerFixture f(cfg);
	f.store.add_region("r", 256);
	TestClient a, b;
	REQUIRE(a.attach(f.path).is_ok());
	REQUIRE(b.attach(f.path).is_ok());
	auto pa = a.map("r", 0, 256 * kPage);
	auto pb = b.map("r", 0, 256 * kPage);
	auto sa = a.map_shared("r", 0, 256 * kPage);
	auto sb = b.map_shared("r", 0, 256 * kPage);
	REQUIRE(pa.is_ok());
	REQUIRE(pb.is_ok());
	REQUIRE(sa.is_ok());
	REQUIRE(sb.is_ok());
	std::atomic<int> bad{0};
	auto worker = [&](uint8_t *priv, uint8_t *shared, uint32_t seed) {
		std::mt19937 rng(seed);
		for (int i = 0; i < 2000; i++) {
			uint32_t p = rng() % 256;
			if (priv[p * kPage + 1] != PageStoreDouble::pattern_byte(1, p))
				bad++;
			if (shared[p * kPage + 2] != PageStoreDouble::pattern_byte(1, p))
				bad++;
		}
	};
	std::thread ta(worker, pa->addr, sa->addr, 1), tb(worker, pb->addr, sb->addr, 2);
	ta.join();
	tb.join();
	CHECK(bad == 0);
	sa->addr[17 * kPage] = 0x17;
	CHECK(sb->addr[17 * kPage] == 0x17);
	CHECK(f.pager->stats(0)["processes"].size() == 2);
	REQUIRE(a.unmap(*pa).is_ok());
	REQUIRE(b.unmap(*pb).is_ok());
	REQUIRE(a.unmap(*sa).is_ok());
	REQUIRE(b.unmap(*sb).is_ok());
	CHECK(f.store.read("r", 17 * kPage, 1)[0] == 0x17);
}

TEST_CASE("sequential access to a shared window is prefetched", "[pager][shared]")
{
	PagerFixture f;
	constexpr uint32_t kPages = 2048;
	f.store.add_region("r", kPages);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map_shared("r", 0, kPages * kPage);
	REQUIRE(m.is_ok());
	int bad = wrong_pages(f.store, "r", m->addr, kPages);
	CHECK(bad == 0);
	auto ps = f.proc_stats();
	CHECK(ps["prefetched"].get<uint64_t>() > kPages / 2);
	CHECK(ps["faults"].get<uint64_t>() < kPages / 2);
	REQUIRE(c.unmap(*m).is_ok());
	if (!f.pager->caps().shmem_wp)
		return;
	// The same under a budget, writing as it goes: nothing is lost.
	auto w = c.map_shared("r", 0, kPages * kPage, 64 * kPage);
	REQUIRE(w.is_ok());
	size_t max_resident = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		bad += w->addr[p * kPage] != expected(f.store, "r", p);
		w->addr[p * kPage + 3] = uint8_t(p + 1);
		if (p % 32 == 0)
			max_resident = std::max(max_resident, resident_pages(w->addr, w->length));
	}
	CHECK(bad == 0);
	CHECK(max_resident <= 64);
	REQUIRE(c.unmap(*w).is_ok());
	for (uint32_t p = 0; p < kPages; p++)
		bad += f.store.read("r", uint64_t(p) * kPage + 3, 1)[0] != uint8_t(p + 1);
	CHECK(bad == 0);
}

TEST_CASE("a shared window on a uffd of its own is served and evicted there", "[pager][shared]")
{
	// libmemfed registers shared windows on a second uffd ("attach" fds[2]),
	// which never has WP_ASYNC: their faults arrive there, and an
	// eviction's write-protect parks a writer there until the pager wakes
	// it on that uffd.
	PagerFixture f;
	constexpr uint32_t kPages = 128, kBudget = 16;
	f.store.add_region("r", kPages);
	f.store.add_region("p", 8);
	TestClient c;
	c.window_uffd = true;
	REQUIRE(c.attach(f.path).is_ok());
	REQUIRE(c.window_uffd_fd() >= 0);
	auto priv = c.map("p", 0, 8 * kPage);
	REQUIRE(priv.is_ok());
	auto m = c.map_shared("r", 0, kPages * kPage, kBudget * kPage);
	REQUIRE(m.is_ok());
	auto a = reinterpret_cast<uint64_t>(m->addr);
	// The window is the window uffd's: the private one cannot have it.
	CHECK(uffd_register(c.uffd(), a, m->length, c.shared_register_mode()) == -EBUSY);
	CHECK(uffd_register(c.window_uffd_fd(), a, m->length, c.shared_register_mode()) == 0);
	// Faults on both uffds are served. The window is read on a thread: a
	// fault left waiting fails the case rather than hangs it.
	CHECK(wrong_pages(f.store, "p", priv->addr, 8) == 0);
	std::atomic<int> wrong{-1};
	std::thread reader([&] { wrong = wrong_pages(f.store, "r", m->addr, kBudget / 2); });
	for (int i = 0; i < 2000 && wrong < 0; i++)
		usleep(5000);
	if (wrong < 0)
		c.abandon(); // the reader runs again
	reader.join();
	REQUIRE(wrong == 0);
	if (!f.pager->caps().shmem_wp) {
		WARN("no write-protect on shmem here: window eviction is NOT tested");
		return;
	}
	// A writer dirties page after page with the write-backs held, until it
	// waits for room that the held write-back of an eviction round keeps
	// taken; that round's victims are write-protected in this process.
	f.store.hold_writes();
	std::atomic<bool> a_done{false}, b_done{false};
	std::thread writer_a([&] {
		for (uint32_t p = 0; p < kPages; p++)
			m->addr[p * kPage + 1] = uint8_t(0x40 + p);
		a_done = true;
	});
	std::thread writer_b;
	// Lets the writes go and waits (up to 10 s) for the writers; a writer
	// left waiting runs again once the client abandons its uffds, and the
	// case fails rather than hangs.
	auto finish = [&] {
		f.store.release_writes();
		bool done = false;
		for (int i = 0; i < 2000 && !done; i++) {
			done = a_done && (b_done || !writer_b.joinable());
			if (!done)
				usleep(5000);
		}
		if (!done)
			c.abandon();
		writer_a.join();
		if (writer_b.joinable())
			writer_b.join();
		return done;
	};
	std::vector<uint32_t> victims;
	for (int i = 0; i < 2000 && victims.empty(); i++) {
		auto st = f.proc_stats()["state"];
		if (st["thread"]["waiting_faults"].get<uint64_t>() > 0 &&
		    f.store.writes_waiting() > 0)
			victims = uffd_wp_pages(m->addr, kPages);
		if (victims.empty())
			usleep(5000);
	}
	if (victims.empty()) {
		(void)finish();
		FAIL("no eviction round waited with write-protected victims");
	}
	// A write to a victim waits for the eviction: parked, not lost.
	const uint32_t v = victims[0];
	std::atomic<pid_t> b_tid{0};
	writer_b = std::thread([&] {
		b_tid = gettid();
		m->addr[v * kPage + 2] = 0xb0;
		b_done = true;
	});
	bool parked = false;
	for (int i = 0; i < 2000 && !parked && !b_done; i++) {
		parked = b_tid != 0 && waits_in_userfault(b_tid);
		if (!parked)
			usleep(5000);
	}
	CHECK(parked);
	CHECK(!b_done);
	// The round ends; the pager wakes the writers on the window uffd.
	REQUIRE(finish());
	uint64_t evictions = 0;
	auto stats = f.pager->stats(0);
	for (const auto &r : stats["regions"])
		evictions += r["evictions"].get<uint64_t>();
	CHECK(evictions > 0);
	REQUIRE(c.sync(m->id).is_ok());
	int bad = 0;
	for (uint32_t p = 0; p < kPages; p++) {
		auto page = f.store.read("r", uint64_t(p) * kPage, 3);
		bad += page[1] != uint8_t(0x40 + p);
		bad += page[2] != (p == v ? 0xb0 : expected(f.store, "r", p));
	}
	CHECK(bad == 0);
	REQUIRE(c.unmap(*m).is_ok());
}
