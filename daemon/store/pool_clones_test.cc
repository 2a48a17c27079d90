// Copy-on-write clones of the module store (pool_clones.cc): a clone reads its
// base's pages until it writes them, keeps them when the base changes, is
// truncated, deleted or crashes mid-write, and costs pool space only for the
// pages it had to take.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cstring>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/store/pool.h"
#include "daemon/store/test_pool_dir.h"

using namespace memfed;
using store::kPageSize;
using store::TestPoolDir;

namespace
{

constexpr uint64_t kPoolSize = 8 << 20;

std::unique_ptr<ModuleStore> open_pool(const std::string &path)
{
	auto r = ModuleStore::open(path, 0);
	INFO(r.status().to_string());
	REQUIRE(r.is_ok());
	return std::move(*r);
}

std::unique_ptr<ModuleStore> make_pool(const std::string &path)
{
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	return open_pool(path);
}

std::vector<uint8_t> page_of(uint8_t fill)
{
	return std::vector<uint8_t>(kPageSize, fill);
}

// The first byte of each of `pages` pages of region `name` from page `first`
// (every byte of a page written here is the same).
std::vector<int> bytes_of(ModuleStore &s, const std::string &name, uint64_t first, uint32_t pages)
{
	auto r = s.lookup_region(name);
	REQUIRE(r.is_ok());
	std::vector<uint8_t> buf(pages * kPageSize);
	Status st = s.read_pages(r->id, r->fa_offset + first * kPageSize, pages, buf.data());
	INFO(st.to_string());
	REQUIRE(st.is_ok());
	std::vector<int> out;
	for (uint32_t i = 0; i < pages; i++) {
		const uint8_t *p = &buf[i * kPageSize];
		REQUIRE(std::all_of(p, p + kPageSize, [&](uint8_t b) { return b == p[0]; }));
		out.push_back(p[0]);
	}
	return out;
}

void write_page(ModuleStore &s, const std::string &name, uint64_t page, uint8_t fill)
{
	auto r = s.lookup_region(name);
	REQUIRE(r.is_ok());
	auto data = page_of(fill);
	Status st = s.write_pages(r->id, r->fa_offset + page * kPageSize, 1, data.data());
	INFO(st.to_string());
	REQUIRE(st.is_ok());
}

uint64_t used(ModuleStore &s, const std::string &name)
{
	return s.lookup_region(name)->used_bytes / kPageSize;
}

// A base "p" of 8 pages: pages 0..5 hold 1..6, pages 6 and 7 never written.
void make_base(ModuleStore &s)
{
	REQUIRE(s.create_region("p", 8 * kPageSize, 1000, 0600).is_ok());
	for (uint8_t i = 0; i < 6; i++)
		write_page(s, "p", i, uint8_t(i + 1));
}

} // namespace

TEST_CASE("a clone reads its base until it writes, and keeps what the base overwrites",
          "[store][clone]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	make_base(*s);
	auto c = s->clone_region("c", "p", 0, 8 * kPageSize, 1000, 0600);
	INFO(c.status().to_string());
	REQUIRE(c.is_ok());
	REQUIRE(c->is_clone);
	CHECK(used(*s, "c") == 0); // a clone of 6 written pages costs nothing
	CHECK(bytes_of(*s, "c", 0, 8) == std::vector<int>{1, 2, 3, 4, 5, 6, 0, 0});

	// The base overwrites pages 1 and 6 (6 never written): the clone keeps 2
	// and 0, and took exactly those two pages.
	write_page(*s, "p", 1, 0x21);
	write_page(*s, "p", 6, 0x27);
	CHECK(bytes_of(*s, "p", 0, 8) == std::vector<int>{1, 0x21, 3, 4, 5, 6, 0x27, 0});
	CHECK(bytes_of(*s, "c", 0, 8) == std::vector<int>{1, 2, 3, 4, 5, 6, 0, 0});
	CHECK(used(*s, "c") == 2);

	// The clone's writes are its own.
	write_page(*s, "c", 2, 0x33);
	CHECK(bytes_of(*s, "c", 0, 4) == std::vector<int>{1, 2, 0x33, 4});
	CHECK(bytes_of(*s, "p", 0, 4) == std::vector<int>{1, 0x21, 3, 4});
	// A page the clone wrote is not copied again when the base writes it.
	write_page(*s, "p", 2, 0x23);
	CHECK(bytes_of(*s, "c", 2, 1) == std::vector<int>{0x33});
	CHECK(used(*s, "c") == 3);

	// read_pages_with_crc vouches for what a clone reads through.
	std::vector<uint8_t> buf(8 * kPageSize);
	uint32_t crc = 0;
	REQUIRE(s->read_pages_with_crc(c->id, c->fa_offset, 8, buf.data(), &crc).is_ok());
	CHECK(crc == crc32c(buf.data(), buf.size()));
}

TEST_CASE("zeros written to a clone are kept only where it read something else",
          "[store][clone][thin]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	make_base(*s);
	auto c = s->clone_region("c", "p", 0, 8 * kPageSize, 1000, 0600);
	REQUIRE(c.is_ok());
	// Page 3 reads the base's 4; page 7 reads zeros (never written anywhere).
	write_page(*s, "c", 3, 0);
	write_page(*s, "c", 7, 0);
	CHECK(bytes_of(*s, "c", 0, 8) == std::vector<int>{1, 2, 3, 0, 5, 6, 0, 0});
	CHECK(bytes_of(*s, "p", 0, 8) == std::vector<int>{1, 2, 3, 4, 5, 6, 0, 0});
	CHECK(used(*s, "c") == 1);
	// The base writes page 7 afterwards: the clone still reads zeros there.
	write_page(*s, "p", 7, 0x28);
	CHECK(bytes_of(*s, "c", 7, 1) == std::vector<int>{0});
	CHECK(used(*s, "c") == 2);
}

TEST_CASE("a clone of part of a region, and a clone of a clone", "[store][clone]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	make_base(*s);
	REQUIRE(s->clone_region("c", "p", 2 * kPageSize, 4 * kPageSize, 1000, 0600).is_ok());
	CHECK(bytes_of(*s, "c", 0, 4) == std::vector<int>{3, 4, 5, 6});
	REQUIRE(s->clone_region("g", "c", kPageSize, 3 * kPageSize, 1000, 0600).is_ok());
	CHECK(bytes_of(*s, "g", 0, 3) == std::vector<int>{4, 5, 6});

	// A write to the base reaches neither; one to the middle clone not the
	// grandchild.
	write_page(*s, "p", 3, 0x44);
	write_page(*s, "c", 2, 0x55);
	CHECK(bytes_of(*s, "p", 2, 4) == std::vector<int>{3, 0x44, 5, 6});
	CHECK(bytes_of(*s, "c", 0, 4) == std::vector<int>{3, 4, 0x55, 6});
	CHECK(bytes_of(*s, "g", 0, 3) == std::vector<int>{4, 5, 6});

	// Bad requests are refused, naming the thing.
	auto past = s->clone_region("x", "p", 6 * kPageSize, 4 * kPageSize, 1000, 0600);
	CHECK(past.status().code() == Code::kOutOfRange);
	auto odd = s->clone_region("x", "p", 100, kPageSize, 1000, 0600);
	CHECK(odd.status().code() == Code::kInvalidArgument);
	CHECK(s->clone_region("x", "nope", 0, kPageSize, 1000, 0600).status().code() ==
	      Code::kNotFound);
	CHECK(s->clone_region("c", "p", 0, kPageSize, 1000, 0600).status().code() ==
	      Code::kAlreadyExists);
}

TEST_CASE("a clone of a clone takes runs of pages that lie at different levels of its chain",
          "[store][clone]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	make_base(*s);
	// g reads pages 0, 2, 4, 5 from p and pages 1 and 3 from c: the pages a
	// copy into g takes in one run come from both.
	REQUIRE(s->clone_region("c", "p", 0, 8 * kPageSize, 1000, 0600).is_ok());
	write_page(*s, "c", 1, 0xc1);
	write_page(*s, "c", 3, 0xc3);
	REQUIRE(s->clone_region("g", "c", 0, 8 * kPageSize, 1000, 0600).is_ok());
	CHECK(bytes_of(*s, "g", 0, 8) == std::vector<int>{1, 0xc1, 3, 0xc3, 5, 6, 0, 0});

	// One write over c's pages 0..4 first copies them into g (preserve).
	auto c = s->lookup_region("c");
	REQUIRE(c.is_ok());
	std::vector<uint8_t> five(5 * kPageSize, 0x77);
	REQUIRE(s->write_pages(c->id, c->fa_offset, 5, five.data()).is_ok());
	CHECK(bytes_of(*s, "c", 0, 8) == std::vector<int>{0x77, 0x77, 0x77, 0x77, 0x77, 6, 0, 0});
	CHECK(bytes_of(*s, "g", 0, 8) == std::vector<int>{1, 0xc1, 3, 0xc3, 5, 6, 0, 0});
	CHECK(used(*s, "g") == 5);

	// A second grandchild, detached by its base's delete (materialize).
	REQUIRE(s->clone_region("d", "p", 0, 8 * kPageSize, 1000, 0600).is_ok());
	write_page(*s, "d", 2, 0xd2);
	REQUIRE(s->clone_region("h", "d", 0, 8 * kPageSize, 1000, 0600).is_ok());
	REQUIRE(s->delete_region("d").is_ok());
	CHECK_FALSE(s->lookup_region("h")->is_clone);
	CHECK(bytes_of(*s, "h", 0, 8) == std::vector<int>{1, 2, 0xd2, 4, 5, 6, 0, 0});
	CHECK(used(*s, "h") == 6);
	s.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("clones survive a reopen, their base's delete and truncates", "[store][clone]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	{
		auto s = make_pool(path);
		make_base(*s);
		REQUIRE(s->clone_region("c", "p", 0, 8 * kPageSize, 1000, 0600).is_ok());
		REQUIRE(s->clone_region("g", "c", 0, 8 * kPageSize, 1000, 0600).is_ok());
	}
	REQUIRE(ModuleStore::check(path)->clean);
	auto s = open_pool(path);
	CHECK(s->lookup_region("c")->is_clone);
	// After the reopen a base write still keeps the clone's page.
	write_page(*s, "p", 0, 0x11);
	CHECK(bytes_of(*s, "c", 0, 2) == std::vector<int>{1, 2});

	// Deleting the base gives the clone every page it shared, and detaches it.
	REQUIRE(s->delete_region("p").is_ok());
	CHECK_FALSE(s->lookup_region("c")->is_clone);
	CHECK(s->lookup_region("g")->is_clone); // its base "c" lives on
	CHECK(bytes_of(*s, "c", 0, 8) == std::vector<int>{1, 2, 3, 4, 5, 6, 0, 0});
	CHECK(bytes_of(*s, "g", 0, 8) == std::vector<int>{1, 2, 3, 4, 5, 6, 0, 0});
	CHECK(used(*s, "c") == 6); // the zero pages stay unwritten

	// Truncating the base keeps the clone's view; truncating a clone zeroes
	// its tail without reading its base's pages again.
	REQUIRE(s->set_length("c", 3 * kPageSize, false).is_ok());
	CHECK(bytes_of(*s, "c", 0, 8) == std::vector<int>{1, 2, 3, 0, 0, 0, 0, 0});
	CHECK(bytes_of(*s, "g", 0, 8) == std::vector<int>{1, 2, 3, 4, 5, 6, 0, 0});
	REQUIRE(s->set_length("g", 2 * kPageSize, false).is_ok());
	CHECK(bytes_of(*s, "g", 0, 8) == std::vector<int>{1, 2, 0, 0, 0, 0, 0, 0});
	s.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("a crash in the middle of a base write leaves the clone its page",
          "[store][clone]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	{
		auto s = make_pool(path);
		make_base(*s);
		REQUIRE(s->clone_region("c", "p", 0, 8 * kPageSize, 1000, 0600).is_ok());
		// The clone's copies are logged, the crash comes before they (and
		// the base's write, never logged) reach their pages.
		s->set_crash_after_log_for_test(true);
		auto p = s->lookup_region("p");
		auto data = page_of(0x77);
		CHECK(s->write_pages(p->id, p->fa_offset + 3 * kPageSize, 1, data.data()).code() ==
		      Code::kInternal);
	}
	auto report = ModuleStore::check(path);
	REQUIRE(report.is_ok());
	INFO((report->problems.empty() ? std::string() : report->problems[0]));
	REQUIRE(report->clean);
	auto s = open_pool(path);
	CHECK(bytes_of(*s, "p", 3, 1) == std::vector<int>{4});
	CHECK(bytes_of(*s, "c", 3, 1) == std::vector<int>{4});
	// Whatever the log replayed, the base's next write keeps the clone whole.
	write_page(*s, "p", 3, 0x78);
	CHECK(bytes_of(*s, "c", 0, 8) == std::vector<int>{1, 2, 3, 4, 5, 6, 0, 0});
}

TEST_CASE("a thin pool charges a clone's copies to its owner and refuses what does not fit",
          "[store][clone]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	make_base(*s);
	REQUIRE(s->clone_region("c", "p", 0, 8 * kPageSize, 2000, 0600).is_ok());
	CHECK(s->usage_of(2000).bytes == 0);
	// The owner of the clone may take one page more.
	s->set_write_admit([](const RegionInfo &r, const OwnerUsage &u, const OwnerUsage &,
	                      uint64_t more) {
		if (r.owner_uid == 2000 && u.bytes + more > kPageSize)
			return Status(Code::kNoSpace, "uid 2000 over its quota");
		return Status::ok();
	});
	write_page(*s, "p", 0, 0x10);
	CHECK(s->usage_of(2000).bytes == kPageSize);
	// The next base write would need a second copy: refused, nothing changed.
	auto p = s->lookup_region("p");
	auto data = page_of(0x20);
	Status st = s->write_pages(p->id, p->fa_offset + kPageSize, 1, data.data());
	CHECK(st.code() == Code::kNoSpace);
	CHECK(st.message().find("clone 'c'") != std::string::npos);
	CHECK(bytes_of(*s, "p", 0, 2) == std::vector<int>{0x10, 2});
	CHECK(bytes_of(*s, "c", 0, 2) == std::vector<int>{1, 2});
}

TEST_CASE("a layout-5 pool refuses clones, naming the fix", "[store][clone]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	REQUIRE(store::make_old_layout(path, store::kLayoutVersionThin, kPoolSize));
	auto s = open_pool(path);
	REQUIRE(s->create_region("p", kPageSize, 0, 0600).is_ok());
	auto c = s->clone_region("c", "p", 0, kPageSize, 0, 0600);
	CHECK(c.status().code() == Code::kInvalidArgument);
	CHECK(c.status().message().find("layout version 5") != std::string::npos);
	CHECK(c.status().message().find("pool format") != std::string::npos);
}
