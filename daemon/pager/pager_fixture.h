// What the pager's tests share (pager_*test.cc, colocation_test.cc,
// refault_test.cc): a pager on a PageStoreDouble behind a control socket, the
// eviction paths a test runs on, and checks of a mapping's pages. The test
// process is the client.
#pragma once

#include <catch2/catch.hpp>

#include <sys/mman.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "daemon/pager/page_store_double.h"
#include "daemon/pager/pager.h"
#include "daemon/pager/test_client.h"

namespace memfed::pager::testing
{

constexpr uint64_t kPage = 4096;

struct PagerFixture {
	explicit PagerFixture(PagerConfig cfg = PagerConfig())
	{
		static std::atomic<int> n{0};
		path = "/tmp/memfed-pager-test-" + std::to_string(getpid()) + "-" +
		       std::to_string(n++) + ".sock";
		REQUIRE(server.listen(path).is_ok());
		pager = std::make_unique<Pager>(store, cfg);
		pager->register_ops(server);
		Status st = pager->start();
		INFO(st.to_string());
		REQUIRE(st.is_ok());
		REQUIRE(server.start().is_ok());
	}
	~PagerFixture()
	{
		server.stop();
		pager->stop();
	}
	// Counters of the first process in pager.stats.
	nlohmann::json proc_stats()
	{
		auto s = pager->stats(0);
		REQUIRE(s["processes"].size() >= 1);
		return s["processes"][0];
	}

	PageStoreDouble store;
	control::Server server;
	std::unique_ptr<Pager> pager;
	std::string path;
};

inline uint8_t expected(PageStoreDouble &s, const std::string &region, uint32_t page)
{
	return PageStoreDouble::pattern_byte(s.region_id(region), page);
}

inline bool page_is(const uint8_t *p, uint8_t v)
{
	for (size_t i = 0; i < kPage; i++)
		if (p[i] != v)
			return false;
	return true;
}

// Pages 0, step, 2*step, ... below `pages` of a mapping of `region` at
// `addr` that do not hold the region's content (reading faults them in).
inline int wrong_pages(PageStoreDouble &s, const std::string &region, const uint8_t *addr,
                       uint32_t pages, uint32_t step = 1)
{
	int bad = 0;
	for (uint32_t p = 0; p < pages; p += step)
		bad += !page_is(addr + p * kPage, expected(s, region, p));
	return bad;
}

// The eviction paths a test runs on: the drop path (eviction.cc), the move
// path (UFFDIO_MOVE into a staging area, move_eviction.cc), and the move
// path with a uffd under WP_ASYNC (async_dirty.cc).
enum class EvictPath { kDrop, kMove, kAsync };

inline const char *path_name(EvictPath p)
{
	return p == EvictPath::kDrop ? "drop" : p == EvictPath::kMove ? "move" : "move + WP_ASYNC";
}

// Sets `c` up for `path`. False, with a loud warning, when the kernel lacks
// what the path needs.
inline bool evict_path(TestClient &c, const PagerFixture &f, EvictPath path)
{
	if (path != EvictPath::kDrop && !f.pager->caps().move) {
		WARN("no UFFDIO_MOVE in this kernel: eviction by move is NOT tested");
		return false;
	}
	if (path == EvictPath::kAsync && !f.pager->caps().wp_async) {
		WARN("no UFFD_FEATURE_WP_ASYNC in this kernel: dirty tracking without write "
		     "faults is NOT tested");
		return false;
	}
	c.staging = path != EvictPath::kDrop;
	c.wp_async = path == EvictPath::kAsync;
	return true;
}

// Attaches `c`, checking that it got the uffd `path` needs.
inline void attach_on(TestClient &c, const PagerFixture &f, EvictPath path, uint64_t budget = 0)
{
	INFO("eviction path: " << path_name(path));
	REQUIRE(c.attach(f.path, budget).is_ok());
	REQUIRE(c.has_wp_async() == (path == EvictPath::kAsync));
}

// Whether the client's evictor did the work of the path `c` is on.
inline bool evictor_worked(const TestClient &c)
{
	return c.staging ? c.moved_pages() > 0 && c.drops() == 0 : c.drops() > 0;
}

inline size_t resident_pages(const void *addr, size_t len)
{
	std::vector<unsigned char> v(len / kPage);
	REQUIRE(mincore(const_cast<void *>(addr), len, v.data()) == 0);
	size_t n = 0;
	for (unsigned char c : v)
		n += c & 1;
	return n;
}

// Polls `cond` every 10 ms for up to `seconds`.
template <typename F> bool eventually(double seconds, F cond)
{
	auto end = std::chrono::steady_clock::now() + std::chrono::duration<double>(seconds);
	while (!cond()) {
		if (std::chrono::steady_clock::now() > end)
			return false;
		usleep(10000);
	}
	return true;
}

} // namespace memfed::pager::testing
