// Tests of the module store's region table as the pool uses it: sized at
// format, listed in pages, ids that stay dead, and older layouts' tables.
#include <catch2/catch.hpp>

#include <cstdio>
#include <vector>

#include "daemon/store/pool.h"
#include "daemon/store/test_pool.h"

using namespace memfed;
using namespace memfed::store_test;

namespace
{

std::string numbered(const char *prefix, uint32_t i)
{
	char buf[32];
	snprintf(buf, sizeof(buf), "%s%05u", prefix, i);
	return buf;
}

} // namespace

TEST_CASE("the region table is sized from the pool at format", "[store][pool]")
{
	REQUIRE(store::default_table_slots(4 << 20) == store::kMinTableSlots);
	REQUIRE(store::default_table_slots(uint64_t{1} << 30) == 32768);
	REQUIRE(store::default_table_slots(uint64_t{1} << 45) == store::kMaxTableSlots);
	// One slot per 32 KiB, rounded down to a power of two.
	REQUIRE(store::default_table_slots(3 * 1024 * store::kPoolBytesPerSlot) == 2048);

	TestPoolDir dir(TestPoolDir::kInMemory);
	std::string path = dir.path("pool");
	const uint64_t size = 64 << 20; // 2048 slots
	REQUIRE(ModuleStore::format(PoolOptions{path, size, {}}).is_ok());
	std::vector<RegionInfo> made;
	{
		auto s = std::move(*ModuleStore::open(path, size));
		REQUIRE(s->info().table_slots == 2048);
		REQUIRE(s->info().layout_version == store::kLayoutVersion);
		for (uint32_t i = 0; i < 2048; i++) {
			auto r = s->create_region(numbered("r", i), kPageSize, 0, 0600);
			INFO(i << ": " << r.status().to_string());
			REQUIRE(r.is_ok());
			made.push_back(*r);
		}
		auto full = s->create_region("one-too-many", kPageSize, 0, 0600);
		REQUIRE(full.status().code() == Code::kNoSpace);
		REQUIRE(contains(full.status().message(), "region table is full (2048 regions)"));
		// A region in a slot above 1024 takes writes like any other.
		std::vector<uint8_t> data = pattern(1, 5);
		REQUIRE(s->write_pages(made.back().id, made.back().fa_offset, 1, data.data())
		                .is_ok());
	}
	auto s = std::move(*ModuleStore::open(path, size));
	std::vector<RegionInfo> all = s->list_regions();
	REQUIRE(all.size() == 2048);
	for (uint32_t i = 0; i < 2048; i++) {
		REQUIRE(all[i].name == made[i].name);
		REQUIRE(all[i].id == made[i].id);
		REQUIRE(s->region_by_id(made[i].id)->name == made[i].name);
	}
	std::vector<uint8_t> back(kPageSize);
	REQUIRE(s->read_pages(made.back().id, made.back().fa_offset, 1, back.data()).is_ok());
	REQUIRE(back == pattern(1, 5));
	for (uint32_t i = 0; i < 2048; i += 2)
		REQUIRE(s->delete_region(made[i].name).is_ok());
	REQUIRE(s->info().regions == 1024);
	s.reset();
	REQUIRE(ModuleStore::check(path)->regions_checked == 1024);
	REQUIRE(ModuleStore::check(path)->clean);
	REQUIRE(ModuleStore::inspect(path)->regions == 1024);
	REQUIRE(ModuleStore::inspect(path)->table_slots == 2048);
}

TEST_CASE("list_regions pages in name order", "[store][pool]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	for (const char *n : {"m", "b", "z", "a", "q"})
		REQUIRE(s->create_region(n, kPageSize, 0, 0600).is_ok());
	auto names = [](const std::vector<RegionInfo> &v) {
		std::string out;
		for (const RegionInfo &r : v)
			out += r.name;
		return out;
	};
	REQUIRE(names(s->list_regions()) == "abmqz");
	REQUIRE(names(s->list_regions("", 2)) == "ab");
	REQUIRE(names(s->list_regions("b", 2)) == "mq");
	REQUIRE(names(s->list_regions("c", 0)) == "mqz");
	REQUIRE(names(s->list_regions("q", 2)) == "z");
	REQUIRE(s->list_regions("z", 2).empty());
}

TEST_CASE("a deleted slot's id stays dead while other slots are free", "[store][pool]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	auto a = *s->create_region("a", kPageSize, 0, 0600);
	REQUIRE(s->delete_region("a").is_ok());
	// Next fit: the create after a delete takes the following slot, so the
	// freed slot's generation is not spent at once.
	auto b = *s->create_region("b", kPageSize, 0, 0600);
	REQUIRE((b.id & (store::kMinTableSlots - 1)) != (a.id & (store::kMinTableSlots - 1)));
	REQUIRE(s->region_by_id(a.id).status().code() == Code::kNotFound);
}

TEST_CASE("a layout-version-1 pool opens as it is, with its 1024-region table", "[store][pool]")
{
	TestPoolDir dir(TestPoolDir::kInMemory);
	std::string path = dir.path("pool");
	const uint64_t size = 64 << 20; // version 2 would give it 2048 slots
	REQUIRE(ModuleStore::format(PoolOptions{path, size, {}, store::kMinTableSlots}).is_ok());
	REQUIRE(store::make_old_layout(path, store::kLayoutVersionFixedTable, size));
	{
		auto s = std::move(*ModuleStore::open(path, size));
		REQUIRE(s->create_region("old", 2 * kPageSize, 0, 0600).is_ok());
	}
	REQUIRE(ModuleStore::check(path)->clean);
	REQUIRE(ModuleStore::inspect(path)->layout_version == 1);
	{
		auto r = ModuleStore::open(path, size);
		INFO(r.status().to_string());
		REQUIRE(r.is_ok());
		auto &s = *r;
		REQUIRE(s->info().layout_version == 1);
		REQUIRE(s->info().table_slots == store::kMinTableSlots);
		REQUIRE(s->lookup_region("old").is_ok());
		for (uint32_t i = 1; i < store::kMinTableSlots; i++)
			REQUIRE(s->create_region(numbered("n", i), kPageSize, 0, 0600).is_ok());
		auto full = s->create_region("more", kPageSize, 0, 0600);
		REQUIRE(full.status().code() == Code::kNoSpace);
		REQUIRE(contains(full.status().message(), "reformat"));
		REQUIRE(contains(full.status().message(), "memfedctl pool format"));
	}
	// Never rewritten: still version 1, and still whole.
	REQUIRE(ModuleStore::inspect(path)->layout_version == 1);
	REQUIRE(ModuleStore::inspect(path)->regions == store::kMinTableSlots);
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("a header with a table size its layout does not allow is refused", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	make_pool(path);
	auto patch = [&](uint32_t version, uint32_t slots) {
		auto f = std::move(*store::PoolFile::open(path, true, false));
		REQUIRE(f->map(true).is_ok());
		auto *h = reinterpret_cast<store::PoolHeader *>(f->base());
		h->layout_version = version;
		h->table_slots = slots;
		h->crc = store::header_crc(*h);
		f->persist_fn()(h, sizeof(*h));
	};
	patch(2, 1000); // not a power of two
	auto r = ModuleStore::open(path, 0);
	REQUIRE(r.status().code() == Code::kCorrupt);
	REQUIRE(contains(r.status().message(), "region table of 1000 slots"));
	REQUIRE_FALSE(ModuleStore::check(path)->clean);
	patch(1, 2048); // version 1 had 1024 slots
	REQUIRE(ModuleStore::open(path, 0).status().code() == Code::kCorrupt);
	patch(7, 1024); // a version from the future
	r = ModuleStore::open(path, 0);
	REQUIRE(r.status().code() == Code::kCorrupt);
	REQUIRE(contains(r.status().message(), "layout version 7"));
	patch(3, 1024); // version 3 has no access area: the geometry disagrees
	REQUIRE(ModuleStore::open(path, 0).status().code() == Code::kCorrupt);
	patch(5, 1024); // version 5 has no clone area: the geometry disagrees
	REQUIRE(ModuleStore::open(path, 0).status().code() == Code::kCorrupt);
	patch(6, 1024);
	REQUIRE(ModuleStore::open(path, 0).is_ok());
	REQUIRE(ModuleStore::format(PoolOptions{dir.path("p2"), kPoolSize, {}, 3000}).code() ==
	        Code::kInvalidArgument);
}
