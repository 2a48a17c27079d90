// Pager tests: real userfaultfd, io_uring, process_vm_readv and evict
// channel; the module is PageStoreDouble. The test process is the client: it
// maps regions into its own memory and the pager's threads serve its faults.
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

namespace
{

// Pages 0, step, 2*step, ... below `pages` of a mapping of `region` at
// `addr` that do not hold the region's content (reading faults them in).
int wrong_pages(PageStoreDouble &s, const std::string &region, const uint8_t *addr, uint32_t pages,
                uint32_t step = 1)
{
	int bad = 0;
	for (uint32_t p = 0; p < pages; p += step)
		bad += !page_is(addr + p * kPage, expected(s, region, p));
	return bad;
}

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
	// The fault's fetch is at the module, unanswered.
	REQUIRE(eventually(5, [&] { return f.store.reads_waiting() == 1; }));
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

TEST_CASE("a restarted pager takes over a uffd with faults blocked on it", "[pager]")
{
	PageStoreDouble store;
	constexpr uint32_t kPages = 256;
	store.add_region("r", kPages);
	auto c = std::make_unique<TestClient>();
	TestClient::Mapped m;
	std::string path = "/tmp/memfed-pager-restart-" + std::to_string(getpid()) + ".sock";
	{
		control::Server server;
		REQUIRE(server.listen(path).is_ok());
		Pager pager(store, PagerConfig());
		pager.register_ops(server);
		REQUIRE(pager.start().is_ok());
		REQUIRE(server.start().is_ok());
		REQUIRE(c->attach(path).is_ok());
		auto mm = c->map("r", 0, kPages * kPage, 0, false);
		REQUIRE(mm.is_ok());
		m = *mm;
		m.addr[0] = 0xAB; // dirty, never written back before the "crash"
		CHECK(m.addr[kPage] == PageStoreDouble::pattern_byte(1, 1));
		// Stop without the client detaching first: what a killed
		// daemon leaves behind is the client's uffd with registrations.
		server.stop();
		pager.stop();
	}
	// No daemon: a faulting thread blocks in the kernel.
	std::atomic<int> got{-1};
	std::thread reader([&] { got = m.addr[100 * kPage]; });
	usleep(200 * 1000);
	CHECK(got == -1);

	control::Server server;
	REQUIRE(server.listen(path).is_ok());
	Pager pager(store, PagerConfig());
	pager.register_ops(server);
	REQUIRE(pager.start().is_ok());
	REQUIRE(server.start().is_ok());
	REQUIRE(c->reattach(path).is_ok());
	auto id = c->map_at("r", 0, reinterpret_cast<uint64_t>(m.addr), kPages * kPage, 0, false);
	REQUIRE(id.is_ok());
	reader.join();
	CHECK(got == PageStoreDouble::pattern_byte(1, 100));
	CHECK(m.addr[0] == 0xAB); // the page the process had is still its data
	m.id = *id;
	REQUIRE(c->unmap(m).is_ok());
	CHECK(store.read("r", 0, 1)[0] == 0xAB);
	c.reset();
	server.stop();
	pager.stop();
}

TEST_CASE("a drop the restarted pager read before the map reads as zero when reported", "[pager]")
{
	PageStoreDouble store;
	constexpr uint32_t kPages = 64;
	store.add_region("r", kPages);
	auto c = std::make_unique<TestClient>();
	TestClient::Mapped m;
	std::string path = "/tmp/memfed-pager-removed-" + std::to_string(getpid()) + ".sock";
	auto start = [&](control::Server &server, Pager &pager) {
		REQUIRE(server.listen(path).is_ok());
		pager.register_ops(server);
		REQUIRE(pager.start().is_ok());
		REQUIRE(server.start().is_ok());
	};
	{
		control::Server server;
		Pager pager(store, PagerConfig());
		start(server, pager);
		REQUIRE(c->attach(path).is_ok());
		auto mm = c->map("r", 0, kPages * kPage, 0, false);
		REQUIRE(mm.is_ok());
		m = *mm;
		CHECK(m.addr[5 * kPage] == PageStoreDouble::pattern_byte(1, 5));
		CHECK(m.addr[6 * kPage] == PageStoreDouble::pattern_byte(1, 6));
		server.stop();
		pager.stop();
	}
	// The program drops pages 5 and 6 while no daemon runs: its madvise
	// waits until the next pager reads the REMOVE event, before any map.
	std::thread dropper([&] { madvise(m.addr + 5 * kPage, 2 * kPage, MADV_DONTNEED); });
	control::Server server;
	Pager pager(store, PagerConfig());
	start(server, pager);
	REQUIRE(c->reattach(path).is_ok());
	dropper.join();
	// Page 5 is reported, page 6 is not (what the client could not know).
	auto id = c->map_at(
	        "r", 0, reinterpret_cast<uint64_t>(m.addr), kPages * kPage, 0, false,
	        nlohmann::json::array({{reinterpret_cast<uint64_t>(m.addr) + 5 * kPage, kPage}}));
	REQUIRE(id.is_ok());
	CHECK(m.addr[5 * kPage] == 0);
	CHECK(m.addr[6 * kPage] == PageStoreDouble::pattern_byte(1, 6));
	m.id = *id;
	REQUIRE(c->unmap(m).is_ok());
	CHECK(store.read("r", 5 * kPage, 1)[0] == 0); // the zeroes reached the module
	auto bad =
	        c->map_at("r", 0, reinterpret_cast<uint64_t>(m.addr), kPages * kPage, 0, false,
	                  nlohmann::json::array({{reinterpret_cast<uint64_t>(m.addr) + 1, kPage}}));
	CHECK(bad.status().code() == Code::kInvalidArgument);
	c.reset();
	server.stop();
	pager.stop();
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
