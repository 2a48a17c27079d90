// Pager tests: real userfaultfd, io_uring, process_vm_readv and evict
// channel; the module is PageStoreDouble and the test process the client.
// The basics (attach, faults, writes, fork, mremap), faults the module or
// the mapping fails (a wait, SIGBUS, zero, never a hang), pager.stats' pages.
#include "daemon/pager/pager.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <functional>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "daemon/pager/pager_fixture.h"

using namespace memfed;
using namespace memfed::pager;
using namespace memfed::pager::testing;

TEST_CASE("pager.hello reports the features the kernel has", "[pager]")
{
	PagerFixture f;
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto h = c.call({{"op", kOpHello}});
	REQUIRE(h.is_ok());
	uint64_t feats = h->body["uffd_features"].get<uint64_t>();
	CHECK((feats & UFFD_FEATURE_EVENT_REMOVE) != 0);
	CHECK((feats & UFFD_FEATURE_EVENT_UNMAP) != 0);
	CHECK((feats & UFFD_FEATURE_EVENT_REMAP) != 0);
	CHECK(h->body["page_size"].get<uint64_t>() == kPage);
	CHECK(h->body["wp"].get<bool>() == f.pager->caps().anon_wp);
	uint64_t mode = h->body["private_register_mode"].get<uint64_t>();
	CHECK((mode & UFFDIO_REGISTER_MODE_MISSING) != 0);
	CHECK(h->body["move"].get<bool>() == f.pager->caps().move);
	CHECK(((feats & UFFD_FEATURE_MOVE) != 0) == f.pager->caps().move);
}

TEST_CASE("attach takes a staging area, which is no mapping", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 4);
	TestClient c;
	const uint64_t at = uint64_t{1} << 30;
	for (const nlohmann::json &bad :
	     {nlohmann::json(5), nlohmann::json{{"addr", 0}, {"len", kPage}},
	      nlohmann::json{{"addr", at + 8}, {"len", kPage}},
	      nlohmann::json{{"addr", at}, {"len", 100}}, nlohmann::json{{"addr", at}},
	      nlohmann::json{{"addr", at}, {"len", kMaxStagingBytes + kPage}},
	      nlohmann::json{{"addr", UINT64_MAX - kPage + 1}, {"len", 2 * kPage}}}) {
		INFO(bad.dump());
		c.attach_extra = {{"staging", bad}};
		Status st = c.attach(f.path);
		CHECK(st.code() == Code::kInvalidArgument);
		CHECK(st.to_string().find("staging") != std::string::npos);
	}
	void *s = mmap(nullptr, 4 * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1,
	               0);
	REQUIRE(s != MAP_FAILED);
	auto saddr = reinterpret_cast<uint64_t>(s);
	c.attach_extra = {{"staging", {{"addr", saddr}, {"len", 4 * kPage}}}};
	REQUIRE(c.attach(f.path).is_ok());
	REQUIRE(uffd_register(c.uffd(), saddr, 4 * kPage, UFFDIO_REGISTER_MODE_MISSING) == 0);
	auto m = c.map("r", 0, 4 * kPage, 0, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	CHECK(m->addr[kPage] == PageStoreDouble::pattern_byte(1, 1));
	// A fault in staging is zero-filled at once, not held as one outside
	// every mapping (those wait 10 s for a "map").
	auto t0 = std::chrono::steady_clock::now();
	CHECK(*reinterpret_cast<volatile uint8_t *>(saddr + kPage) == 0);
	CHECK(std::chrono::steady_clock::now() - t0 < std::chrono::seconds(5));
	// Emptying slots raises a REMOVE event the pager reads and leaves be.
	REQUIRE(madvise(s, 4 * kPage, MADV_DONTNEED) == 0);
	CHECK(m->addr[2 * kPage] == PageStoreDouble::pattern_byte(1, 2));
	CHECK(f.proc_stats()["resident_pages"].get<uint64_t>() == 2);
	munmap(s, 4 * kPage);
}

TEST_CASE("a single fault is served from the module", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 16);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 16 * kPage, 0, false);
	REQUIRE(m.is_ok());
	CHECK(page_is(m->addr + 5 * kPage, expected(f.store, "r", 5)));
	auto ps = f.proc_stats();
	CHECK(ps["faults"].get<uint64_t>() == 1);
	CHECK(ps["resident_pages"].get<uint64_t>() == 1);
	CHECK(resident_pages(m->addr, m->length) == 1);
	REQUIRE(c.unmap(*m).is_ok());
}

TEST_CASE("a window at an offset maps the right pages", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 64);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 32 * kPage, 8 * kPage);
	REQUIRE(m.is_ok());
	for (uint32_t i = 0; i < 8; i++)
		CHECK(page_is(m->addr + i * kPage, expected(f.store, "r", 32 + i)));
	REQUIRE(c.unmap(*m).is_ok());
}

TEST_CASE("map validates its request", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 16);
	f.store.add_region("private", 16, 12345, 0600);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	CHECK(c.map("nope", 0, kPage).status().code() == Code::kNotFound);
	CHECK(c.map("r", 8 * kPage, 16 * kPage).status().code() == Code::kOutOfRange);
	auto bad = c.call({{"op", kOpMap},
	                   {"uffd_id", c.uffd_id()},
	                   {"region", "r"},
	                   {"addr", 4097},
	                   {"length", kPage}});
	CHECK(bad.status().code() == Code::kInvalidArgument);
	auto other = c.call({{"op", kOpMap},
	                     {"uffd_id", c.uffd_id() + 1000},
	                     {"region", "r"},
	                     {"addr", 1 << 20},
	                     {"length", kPage}});
	CHECK(other.status().code() == Code::kNotFound);
	auto attach_nofd = c.call({{"op", kOpAttach}});
	CHECK(attach_nofd.status().code() == Code::kInvalidArgument);
	// fds[2], the window uffd, must be a userfaultfd too.
	auto cl = control::Client::connect(f.path);
	REQUIRE(cl.is_ok());
	int sv[2], pfd[2];
	REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
	REQUIRE(pipe2(pfd, O_CLOEXEC) == 0);
	control::Message att;
	att.body = {{"op", kOpAttach}};
	att.fds = {c.uffd(), sv[1], pfd[0]};
	auto not_uffd = cl->call_ok(att);
	CHECK(not_uffd.status().code() == Code::kInvalidArgument);
	CHECK(not_uffd.status().message().find("fds[2]") != std::string::npos);
	for (int fd : {sv[0], sv[1], pfd[0], pfd[1]})
		close(fd);
}

TEST_CASE("many threads fault on one mapping at once", "[pager]")
{
	PagerConfig cfg;
	cfg.fault_slots = 8; // fewer slots than faulting threads: some wait
	PagerFixture f(cfg);
	constexpr uint32_t kPages = 2048;
	f.store.add_region("r", kPages);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, kPages * kPage);
	REQUIRE(m.is_ok());
	std::atomic<int> bad{0};
	std::vector<std::thread> ts;
	for (int t = 0; t < 12; t++) {
		ts.emplace_back([&, t] {
			std::mt19937 rng(t);
			for (int i = 0; i < 600; i++) {
				uint32_t p = rng() % kPages;
				if (m->addr[p * kPage + (rng() % kPage)] !=
				    PageStoreDouble::pattern_byte(1, p))
					bad++;
			}
		});
	}
	for (auto &t : ts)
		t.join();
	CHECK(bad == 0);
	for (uint32_t p = 0; p < kPages; p++)
		if (!page_is(m->addr + p * kPage, expected(f.store, "r", p)))
			bad++;
	CHECK(bad == 0);
	REQUIRE(c.unmap(*m).is_ok());
}

TEST_CASE("writes reach the module on sync and on unmap", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 32);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 32 * kPage);
	REQUIRE(m.is_ok());
	std::memset(m->addr + 3 * kPage, 0xA3, kPage); // write fault on a missing page
	CHECK(m->addr[7 * kPage] == expected(f.store, "r", 7));
	m->addr[7 * kPage + 100] = 0x77;                   // first write to a clean page
	CHECK(f.store.read("r", 3 * kPage, 1)[0] != 0xA3); // not yet
	REQUIRE(c.sync(m->id).is_ok());
	CHECK(f.store.read("r", 3 * kPage, kPage) == std::vector<uint8_t>(kPage, 0xA3));
	CHECK(f.store.read("r", 7 * kPage + 100, 1)[0] == 0x77);
	CHECK(f.store.read("r", 7 * kPage, 1)[0] == expected(f.store, "r", 7));
	auto ps = f.proc_stats();
	CHECK(ps["dirty_pages"].get<uint64_t>() == 0);
	CHECK(ps["writebacks"].get<uint64_t>() == 2);

	// A write after the sync is dirty again, and unmap writes it back.
	m->addr[7 * kPage + 200] = 0x55;
	CHECK(f.proc_stats()["dirty_pages"].get<uint64_t>() == 1);
	// sync of a range that does not hold it leaves it dirty.
	REQUIRE(c.sync(m->id, 0, 4 * kPage).is_ok());
	CHECK(f.store.read("r", 7 * kPage + 200, 1)[0] != 0x55);
	REQUIRE(c.unmap(*m).is_ok());
	CHECK(f.store.read("r", 7 * kPage + 200, 1)[0] == 0x55);
}

TEST_CASE("MADV_DONTNEED'd pages come back zero, never with old content", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 16);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 16 * kPage, 0, false);
	REQUIRE(m.is_ok());
	// Page 2 resident and clean, page 3 resident and dirty, page 4 never touched.
	CHECK(m->addr[2 * kPage] == expected(f.store, "r", 2));
	m->addr[3 * kPage] = 0x33;
	REQUIRE(madvise(m->addr + 2 * kPage, 3 * kPage, MADV_DONTNEED) == 0);
	CHECK(page_is(m->addr + 2 * kPage, 0));
	CHECK(page_is(m->addr + 3 * kPage, 0));
	CHECK(page_is(m->addr + 4 * kPage, 0));
	CHECK(m->addr[5 * kPage] == expected(f.store, "r", 5));
	// The zeroes reach the module without a sync (a restarted daemon must
	// not serve the old content either).
	for (int i = 0; i < 200 && f.store.read("r", 4 * kPage, 1)[0] != 0; i++)
		usleep(5000);
	CHECK(f.store.read("r", 4 * kPage, kPage) == std::vector<uint8_t>(kPage, 0));
	// The zeroes are the mapping's content now: they reach the module too.
	REQUIRE(c.unmap(*m).is_ok());
	CHECK(f.store.read("r", 2 * kPage, 3 * kPage) == std::vector<uint8_t>(3 * kPage, 0));
	CHECK(f.store.read("r", 5 * kPage, 1)[0] == expected(f.store, "r", 5));
}

TEST_CASE("a forked child sees the parent's data", "[pager]")
{
	PagerFixture f;
	if (!f.pager->caps().event_fork) {
		WARN("no UFFD_FEATURE_EVENT_FORK here");
		return;
	}
	f.store.add_region("r", 64);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 64 * kPage, 0, false);
	REQUIRE(m.is_ok());
	std::memset(m->addr, 0xEE, kPage); // resident, dirty
	CHECK(m->addr[kPage] == expected(f.store, "r", 1));
	uint8_t e[64];
	for (uint32_t i = 0; i < 64; i++)
		e[i] = expected(f.store, "r", i);
	pid_t child = fork();
	REQUIRE(child >= 0);
	if (child == 0) {
		// Pages resident at fork are the child's copies; the rest fault
		// into the child's own uffd, which the pager got from the kernel.
		int bad = !page_is(m->addr, 0xEE);
		for (uint32_t i = 1; i < 64; i++)
			bad += !page_is(m->addr + i * kPage, e[i]);
		m->addr[10 * kPage] = 0x10; // the child's write stays its own
		_exit(bad == 0 && m->addr[10 * kPage] == 0x10 ? 0 : 1);
	}
	int status = 0;
	REQUIRE(waitpid(child, &status, 0) == child);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 0);
	CHECK(page_is(m->addr + 10 * kPage, e[10]));
	REQUIRE(c.unmap(*m).is_ok());
	CHECK(f.store.read("r", 10 * kPage, 1)[0] == e[10]);
	CHECK(f.store.read("r", 0, 1)[0] == 0xEE);
}

TEST_CASE("mremap moves the pager's tracking with the pages", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 32);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 32 * kPage, 0, false);
	REQUIRE(m.is_ok());
	m->addr[0] = 0x01; // resident dirty
	CHECK(m->addr[kPage] == expected(f.store, "r", 1));
	// Reserve a destination, then move the whole mapping there.
	void *dst = mmap(nullptr, 64 * kPage, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	REQUIRE(dst != MAP_FAILED);
	void *moved = mremap(m->addr, 32 * kPage, 32 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, dst);
	REQUIRE(moved == dst);
	auto *a = static_cast<uint8_t *>(moved);
	CHECK(a[0] == 0x01);
	CHECK(page_is(a + kPage, expected(f.store, "r", 1)));
	CHECK(page_is(a + 20 * kPage, expected(f.store, "r", 20)));

	// Move only pages 8..15 elsewhere: both parts keep being served.
	void *dst2 = static_cast<uint8_t *>(dst) + 40 * kPage;
	munmap(dst2, 8 * kPage);
	void *part =
	        mremap(a + 8 * kPage, 8 * kPage, 8 * kPage, MREMAP_MAYMOVE | MREMAP_FIXED, dst2);
	REQUIRE(part == dst2);
	auto *b = static_cast<uint8_t *>(part);
	for (uint32_t i = 0; i < 8; i++)
		CHECK(page_is(b + i * kPage, expected(f.store, "r", 8 + i)));
	CHECK(page_is(a + 16 * kPage, expected(f.store, "r", 16)));
	CHECK(page_is(a + 30 * kPage, expected(f.store, "r", 30)));
	b[kPage] = 0x99; // page 9 of the region, at its new address
	m->addr = a;     // unmap() below sends "unmap" for the original mapping id
	REQUIRE(c.sync(m->id).is_ok());
	CHECK(f.store.read("r", 0, 1)[0] == 0x01);
	auto s = f.pager->stats(0);
	CHECK(s["regions"][0]["faults"].get<uint64_t>() >= 12);
	munmap(dst, 64 * kPage);
}

TEST_CASE("a fault waits for an unreachable module instead of getting zeroes", "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 16);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 16 * kPage, 0, false);
	REQUIRE(m.is_ok());
	f.store.set_down(true);
	std::atomic<int> got{-1};
	std::thread reader([&] { got = m->addr[6 * kPage]; });
	usleep(300 * 1000);
	CHECK(got == -1); // still blocked: no page was made up
	f.store.set_down(false);
	reader.join();
	CHECK(got == expected(f.store, "r", 6));
	REQUIRE(c.unmap(*m).is_ok());
}

namespace
{
thread_local sigjmp_buf t_segv_jmp;
void on_segv(int)
{
	siglongjmp(t_segv_jmp, 1);
}
} // namespace

TEST_CASE("a fault whose mapping is unmapped while its page is fetched runs again, never waits "
          "for good",
          "[pager]")
{
	PagerFixture f;
	f.store.add_region("r", 16);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 16 * kPage, 0, false);
	REQUIRE(m.is_ok());
	struct sigaction sa {
	}, old{};
	sa.sa_handler = on_segv;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGSEGV, &sa, &old) == 0);
	f.store.hold_reads();
	enum { kWaiting, kRead, kSegv };
	std::atomic<int> outcome{kWaiting};
	std::thread reader([&] {
		if (sigsetjmp(t_segv_jmp, 1) == 0) {
			(void)*static_cast<volatile uint8_t *>(m->addr + 6 * kPage);
			outcome = kRead;
		} else {
			outcome = kSegv;
		}
	});
	// The fault's fetch is at the module, unanswered. (It may have company:
	// the once-a-second probe of a region with pages in flight, held too.)
	REQUIRE(eventually(5, [&] { return f.store.reads_waiting() >= 1; }));
	// The program unmaps the mapping (the map protocol's "unmap", then
	// munmap) without unregistering it: nothing of the client wakes the
	// thread, and munmap does not.
	REQUIRE(c.call({{"op", kOpUnmap}, {"mapping_id", m->id}}).is_ok());
	REQUIRE(munmap(m->addr, m->length) == 0);
	f.store.release_reads();
	// The fetch lands on a retired mapping: the pager wakes the fault, and
	// the thread runs again on an unmapped range.
	bool ran = eventually(5, [&] { return outcome.load() != kWaiting; });
	CHECK(ran);
	if (!ran)
		c.abandon(); // a failing test's way out: the thread runs again
	reader.join();
	sigaction(SIGSEGV, &old, nullptr);
	CHECK(outcome == kSegv);
}

TEST_CASE("a page the pager counts resident but the process lost is zero, never a hang", "[pager]")
{
	// The kernel clears a REMOVE event's mmap_changing as the event is
	// read, before it zaps the range: a page copied in between is resident
	// for the pager and gone from the process. That window cannot be hit on
	// demand; a client without REMOVE events makes the same state: its
	// MADV_DONTNEED zaps pages the pager never hears of.
	PagerFixture f;
	f.store.add_region("r", 16);
	TestClient c;
	REQUIRE(c.attach(f.path, 0, true, UFFD_FEATURE_EVENT_REMOVE).is_ok());
	auto m = c.map("r", 0, 16 * kPage);
	REQUIRE(m.is_ok());
	m->addr[3 * kPage] = 0x33;                              // resident, dirty
	CHECK(m->addr[5 * kPage] == expected(f.store, "r", 5)); // resident, clean
	REQUIRE(madvise(m->addr + 3 * kPage, 3 * kPage, MADV_DONTNEED) == 0);
	// The pager runs on threads of this process: if it waited on one of
	// these pages (its own fault), nothing here could end the test.
	auto within = [](const char *what, std::function<void()> fn) {
		auto done = std::async(std::launch::async, std::move(fn));
		if (done.wait_for(std::chrono::seconds(20)) != std::future_status::ready) {
			std::fprintf(stderr, "FAILED: %s did not finish in 20 s\n", what);
			std::_Exit(1);
		}
	};
	// Writing the dirty page back copies out a page that is not there:
	// done, not a pager stuck in its own fault; what the process has there
	// now is zero, and so is the module.
	within("a sync of a lost dirty page", [&] { CHECK(c.sync(m->id, 0, 16 * kPage).is_ok()); });
	// A fault on a lost page is served (zero), not woken without end.
	within("a read of the lost clean page", [&] { CHECK(page_is(m->addr + 5 * kPage, 0)); });
	within("a read of the lost dirty page", [&] { CHECK(page_is(m->addr + 3 * kPage, 0)); });
	within("the unmap", [&] { REQUIRE(c.unmap(*m).is_ok()); });
	CHECK(f.store.read("r", 3 * kPage, kPage) == std::vector<uint8_t>(kPage, 0));
	CHECK(f.store.read("r", 6 * kPage, 1)[0] == expected(f.store, "r", 6));
}

namespace
{
sigjmp_buf g_sigbus_jmp;
void on_sigbus(int)
{
	siglongjmp(g_sigbus_jmp, 1);
}
// Reads a byte at `p`: true if that raised SIGBUS.
bool sigbus_on_read(const uint8_t *p)
{
	struct sigaction sa {
	}, old{};
	sa.sa_handler = on_sigbus;
	sigemptyset(&sa.sa_mask);
	REQUIRE(sigaction(SIGBUS, &sa, &old) == 0);
	volatile bool bus = false;
	volatile uint8_t got = 0;
	if (sigsetjmp(g_sigbus_jmp, 1) == 0)
		got = *static_cast<const volatile uint8_t *>(p);
	else
		bus = true;
	sigaction(SIGBUS, &old, nullptr);
	(void)got;
	return bus;
}

// False, with a loud skip, on a kernel without UFFDIO_POISON: `instead` says
// what happens there.
bool has_poison(PagerFixture &f, const char *instead)
{
	if (f.pager->caps().kernel_features & UFFD_FEATURE_POISON)
		return true;
	WARN("SKIPPED: this kernel's userfaultfd has no UFFD_FEATURE_POISON; " << instead);
	return false;
}

// Polls `cond` (no timing assertion: a generous bound only ends a hung test).
template <typename F> bool eventually(F cond)
{
	for (int i = 0; i < 20000; i++) {
		if (cond())
			return true;
		usleep(1000);
	}
	return false;
}
} // namespace

TEST_CASE("a page damaged on its module raises SIGBUS instead of zeroes or a hang", "[pager]")
{
	PagerFixture f;
	if (!has_poison(f, "a fault on a damaged page waits instead"))
		return;
	f.store.add_region("r", 64);
	f.store.set_damaged("r", 5);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto m = c.map("r", 0, 64 * kPage, 0, /*prefetch=*/false);
	REQUIRE(m.is_ok());
	CHECK(page_is(m->addr + 4 * kPage, expected(f.store, "r", 4)));
	CHECK(sigbus_on_read(m->addr + 5 * kPage));
	CHECK(f.proc_stats()["poisoned"].get<uint64_t>() == 1);
	// The pages around it are fine.
	CHECK(page_is(m->addr + 6 * kPage, expected(f.store, "r", 6)));
	REQUIRE(c.unmap(*m).is_ok());
}

TEST_CASE("a region deleted while mapped: SIGBUS on the next access, resident pages dropped, "
          "nothing written back",
          "[pager]")
{
	PagerFixture f;
	if (!has_poison(f, "a deleted region's faults get zeroes instead"))
		return;
	f.store.add_region("here", 16);
	f.store.add_region("there", 16);
	TestClient c;
	REQUIRE(c.attach(f.path).is_ok());
	auto here = c.map("here", 0, 16 * kPage, 0, /*prefetch=*/false);
	auto there = c.map("there", 0, 16 * kPage, 0, /*prefetch=*/false);
	REQUIRE(here.is_ok());
	REQUIRE(there.is_ok());
	for (auto *m : {&*here, &*there}) {
		CHECK(page_is(m->addr, m == &*here ? expected(f.store, "here", 0)
		                                   : expected(f.store, "there", 0)));
		m->addr[kPage] = 0x5a; // dirty
	}

	// Deleted through this node: the control op tells the pager.
	auto loc = f.store.locate_region("here");
	REQUIRE(loc.is_ok());
	f.store.remove_region("here");
	f.pager->region_deleted(*loc);
	// The evictor drops what was resident; then every page faults.
	REQUIRE(eventually([&] { return resident_pages(here->addr, 16 * kPage) == 0; }));
	CHECK(sigbus_on_read(here->addr));
	CHECK(sigbus_on_read(here->addr + kPage));
	CHECK(sigbus_on_read(here->addr + 9 * kPage)); // never faulted before

	// Deleted on the module by someone else: a fetch finds it gone.
	f.store.remove_region("there");
	CHECK(sigbus_on_read(there->addr + 7 * kPage));
	REQUIRE(eventually([&] { return resident_pages(there->addr, 16 * kPage) == 0; }));
	CHECK(sigbus_on_read(there->addr));

	auto st = f.proc_stats();
	CHECK(st["poisoned"].get<uint64_t>() >= 5);
	// Not retried: the fault counter stands still.
	uint64_t faults = st["faults"].get<uint64_t>();
	usleep(100 * 1000);
	CHECK(f.proc_stats()["faults"].get<uint64_t>() == faults);
	// The dirty pages never went back to the deleted regions, and were
	// counted as dropped; unmap works.
	CHECK(f.pager->stats(0)["writebacks_dropped"].get<uint64_t>() >= 2);
	// Both deleted regions are remembered while mapped, and forgotten
	// once unmapped: the set does not grow with every delete.
	REQUIRE(eventually([&] { return f.pager->deleted_regions_remembered() == 2; }));
	REQUIRE(c.unmap(*here).is_ok());
	CHECK(f.pager->deleted_regions_remembered() == 1);
	REQUIRE(c.unmap(*there).is_ok());
	CHECK(f.pager->deleted_regions_remembered() == 0);
	CHECK(f.store.writes() == 0);
}

TEST_CASE("pager.stats pages through every region and process, each once, in order", "[pager]")
{
	PagerFixture f;
	constexpr int kRegions = 9;
	// One digit: name order is index order.
	auto region_name = [](int i) { return std::string(1, char('0' + i)); };
	std::vector<std::unique_ptr<TestClient>> clients;
	std::vector<TestClient::Mapped> maps;
	for (int i = 0; i < kRegions; i++) {
		std::string name = region_name(i);
		f.store.add_region(name, 4);
		// Three processes, three regions each.
		if (i % 3 == 0) {
			clients.push_back(std::make_unique<TestClient>());
			REQUIRE(clients.back()->attach(f.path).is_ok());
		}
		auto m = clients.back()->map(name, 0, 4 * kPage, 0, /*prefetch=*/false);
		REQUIRE(m.is_ok());
		CHECK(page_is(m->addr, expected(f.store, name, 0)));
		maps.push_back(*m);
	}
	auto whole = f.pager->stats(0);
	CHECK(whole["more"] == false);
	CHECK(whole["regions"].size() == kRegions);
	CHECK(whole["processes"].size() == 3);

	// A byte budget of 1: one entry a page, regions first, then processes.
	std::vector<std::string> regions;
	std::vector<uint64_t> uffds;
	std::string after;
	int pages = 0;
	for (;;) {
		auto page = f.pager->stats(0, after, 1);
		REQUIRE(!page.contains("error"));
		CHECK(page["regions"].size() + page["processes"].size() == 1);
		for (auto &r : page["regions"])
			regions.push_back(r["region"]);
		for (auto &p : page["processes"])
			uffds.push_back(p["uffd_id"]);
		pages++;
		REQUIRE(pages <= kRegions + 3);
		if (!page["more"].get<bool>())
			break;
		after = page["next"].get<std::string>();
	}
	CHECK(pages == kRegions + 3);
	REQUIRE(regions.size() == kRegions);
	for (int i = 0; i < kRegions; i++)
		CHECK(regions[size_t(i)] == region_name(i));
	REQUIRE(uffds.size() == 3);
	CHECK(uffds[0] < uffds[1]);
	CHECK(uffds[1] < uffds[2]);
	// A cursor that no page handed out is refused, not read as "from the start".
	CHECK(f.pager->stats(0, "bogus", 1).contains("bad_cursor"));

	for (size_t i = 0; i < maps.size(); i++)
		REQUIRE(clients[i / 3]->unmap(maps[i]).is_ok());
	// The counters of ended mappings stay for their region until it is
	// deleted (a program's heap is a region of its own: kept forever, they
	// would grow with every program run).
	CHECK(f.pager->stats(0)["regions"].size() == kRegions);
	auto loc = f.store.locate_region(region_name(0));
	REQUIRE(loc.is_ok());
	f.store.remove_region(region_name(0));
	f.pager->region_deleted(*loc);
	REQUIRE(eventually([&] { return f.pager->stats(0)["regions"].size() == kRegions - 1; }));
	CHECK(f.pager->stats(0)["regions"][0]["region"] == region_name(1));
}
