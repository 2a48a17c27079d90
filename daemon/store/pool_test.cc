// Tests of the module store's pool (pool.h): format and open, regions and
// their lengths, reads and writes, group commit, and crashes mid-way.
#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/store/pool.h"
#include "daemon/store/test_pool.h"

using namespace memfed;
using namespace memfed::store_test;

namespace
{

// The capacity in bytes that the pool at `path` records.
uint64_t recorded_capacity(const std::string &path)
{
	auto info = ModuleStore::inspect(path);
	REQUIRE(info.is_ok());
	return info->capacity_bytes;
}

} // namespace

TEST_CASE("format, write, reopen: data and regions survive", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	ModuleId id = *ModuleId::parse("02:00:00:00:00:07");
	std::vector<uint8_t> data = pattern(3, 1);
	uint32_t rid;
	uint64_t fa;
	{
		auto s = make_pool(path, id);
		REQUIRE(s->module_id() == id);
		auto r = s->create_region("cfg", 5 * kPageSize, 1000, 0640);
		REQUIRE(r.is_ok());
		rid = r->id;
		fa = r->fa_offset;
		REQUIRE(fa % kPageSize == 0);
		REQUIRE(fa >= s->info().data_offset);
		REQUIRE(s->write_pages(rid, fa + kPageSize, 3, data.data()).is_ok());
		PoolInfo info = s->info();
		REQUIRE(info.pages_written == 3);
		REQUIRE(info.regions == 1);
		REQUIRE(info.used_bytes == 3 * kPageSize); // the pages written
		REQUIRE(info.reserved_bytes == 5 * kPageSize);
		REQUIRE(info.reserved_bytes + info.address_free_bytes == info.address_bytes);
		REQUIRE(info.free_bytes == info.capacity_bytes - info.used_bytes);
		REQUIRE_FALSE(info.is_pmem);
	}
	auto r = ModuleStore::open(path, 0);
	REQUIRE(r.is_ok());
	auto &s = *r;
	REQUIRE(s->module_id() == id);
	auto reg = s->lookup_region("cfg");
	REQUIRE(reg.is_ok());
	REQUIRE(reg->id == rid);
	REQUIRE(reg->fa_offset == fa);
	REQUIRE(reg->owner_uid == 1000);
	REQUIRE(reg->mode == 0640);
	REQUIRE(reg->ctime_ns > 0);
	std::vector<uint8_t> back(5 * kPageSize, 0xaa);
	REQUIRE(s->read_pages(rid, fa, 5, back.data()).is_ok());
	REQUIRE(std::all_of(back.begin(), back.begin() + kPageSize,
	                    [](uint8_t b) { return b == 0; }));
	REQUIRE(memcmp(back.data() + kPageSize, data.data(), data.size()) == 0);
	REQUIRE(std::all_of(back.end() - kPageSize, back.end(), [](uint8_t b) { return b == 0; }));
	REQUIRE(s->info().pages_read == 5);
	// The mapping exposes the same bytes at FA offset == pool offset.
	REQUIRE(memcmp(s->base() + fa + kPageSize, data.data(), data.size()) == 0);
	REQUIRE(s->mapped_bytes() == s->info().pool_bytes); // the whole (thin) file
}

TEST_CASE("a random module id is locally administered and persistent", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	ModuleId first;
	{
		auto s = make_pool(path);
		first = s->module_id();
		REQUIRE(first.valid());
		REQUIRE((first.value >> 40 & 0x3) == 0x2);
	}
	auto info = ModuleStore::inspect(path);
	REQUIRE(info.is_ok());
	REQUIRE(info->module == first);
	REQUIRE(info->thin);
	REQUIRE(info->capacity_bytes < kPoolSize); // the pool's size, less its metadata
}

TEST_CASE("open_or_create formats an absent pool and checks the module id", "[store][pool]")
{
	TestPoolDir dir;
	PoolOptions opts{dir.path("pool"), kPoolSize, *ModuleId::parse("02:00:00:00:00:09")};
	{
		auto s = ModuleStore::open_or_create(opts);
		REQUIRE(s.is_ok());
		REQUIRE((*s)->create_region("a", 1, 0, 0600).is_ok());
	}
	{
		auto s = ModuleStore::open_or_create(opts);
		REQUIRE(s.is_ok());
		REQUIRE((*s)->lookup_region("a").is_ok());
	}
	opts.module_id = *ModuleId::parse("02:00:00:00:00:0a");
	auto s = ModuleStore::open_or_create(opts);
	REQUIRE(s.status().code() == Code::kInvalidArgument);
	REQUIRE(contains(s.status().message(), "02:00:00:00:00:09"));
}

TEST_CASE("wrong pool size is refused naming both sizes", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	make_pool(path);
	// A thin pool's file is its address space; the size asked for is its
	// capacity, which the header records.
	REQUIRE(ModuleStore::open(path, kPoolSize).is_ok());
	auto r = ModuleStore::open(path, 8 << 20);
	REQUIRE(r.status().code() == Code::kInvalidArgument);
	REQUIRE(contains(r.status().message(), std::to_string(recorded_capacity(path))));
	REQUIRE(contains(r.status().message(), std::to_string(8 << 20)));

	struct stat st;
	REQUIRE(stat(path.c_str(), &st) == 0);
	const uint64_t file_bytes = uint64_t(st.st_size);
	REQUIRE(truncate(path.c_str(), off_t(file_bytes - kPageSize)) == 0);
	r = ModuleStore::open(path, 0);
	REQUIRE(r.status().code() == Code::kInvalidArgument);
	REQUIRE(contains(r.status().message(), std::to_string(file_bytes - kPageSize)));
	REQUIRE(truncate(path.c_str(), off_t(file_bytes)) == 0);

	REQUIRE(ModuleStore::format(PoolOptions{dir.path("tiny"), 64 << 10, {}}).code() ==
	        Code::kInvalidArgument);
	REQUIRE(ModuleStore::open(dir.path("absent"), 0).status().code() == Code::kNotFound);
}

TEST_CASE("a corrupt header is refused with the fix", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	make_pool(path);
	for (uint64_t off :
	     {uint64_t{0}, uint64_t{20}, uint64_t{offsetof(store::PoolHeader, data_pages)}}) {
		store::flip_byte(path, off);
		auto r = ModuleStore::open(path, 0);
		REQUIRE(r.status().code() == Code::kCorrupt);
		REQUIRE(contains(r.status().message(), path));
		REQUIRE(contains(r.status().message(), "memfedctl pool check"));
		REQUIRE(ModuleStore::inspect(path).status().code() == Code::kCorrupt);
		auto rep = ModuleStore::check(path);
		REQUIRE(rep.is_ok());
		REQUIRE_FALSE(rep->clean);
		store::flip_byte(path, off); // repair
		REQUIRE(ModuleStore::open(path, 0).is_ok());
	}
}

TEST_CASE("a pool has one owner at a time", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto second = ModuleStore::open(path, 0);
	REQUIRE(second.status().code() == Code::kBusy);
	REQUIRE(second.status().message() ==
	        "pool " + path + " is in use by another memfedd (lock held)");
	REQUIRE(ModuleStore::check(path).status().code() == Code::kBusy);
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).code() == Code::kBusy);
	REQUIRE(ModuleStore::inspect(path).is_ok()); // read-only look needs no lock
	s.reset();
	REQUIRE(ModuleStore::open(path, 0).is_ok());
}

TEST_CASE("region names, sizes and bounds are validated", "[store][pool]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	for (const char *bad : {"", ".hidden", "-x", "a/b", "sp ace", "ü"})
		REQUIRE(s->create_region(bad, kPageSize, 0, 0600).status().code() ==
		        Code::kInvalidArgument);
	REQUIRE(s->create_region(std::string(64, 'a'), kPageSize, 0, 0600).status().code() ==
	        Code::kInvalidArgument);
	REQUIRE(s->create_region(std::string(63, 'a'), kPageSize, 0, 0600).is_ok());
	REQUIRE(s->create_region("A-z_0.9", kPageSize, 0, 0600).is_ok());
	REQUIRE(s->create_region("zero", 0, 0, 0600).status().code() == Code::kInvalidArgument);

	auto r = s->create_region("r", kPageSize + 1, 0, 0600);
	REQUIRE(r.is_ok());
	REQUIRE(r->size_bytes == 2 * kPageSize); // rounded up to pages
	auto dup = s->create_region("r", kPageSize, 0, 0600);
	REQUIRE(dup.status().code() == Code::kAlreadyExists);
	REQUIRE(contains(dup.status().message(), "'r'"));

	auto big = s->create_region("big", 8ull << 40, 0, 0600); // past the address space
	REQUIRE(big.status().code() == Code::kNoSpace);
	uint64_t free = s->info().address_free_bytes;
	big = s->create_region("big", free + kPageSize, 0, 0600);
	REQUIRE(big.status().code() == Code::kNoSpace);
	REQUIRE(contains(big.status().message(), std::to_string(free) + " bytes free"));
	REQUIRE(s->create_region("fill", free, 0, 0600).is_ok());
	REQUIRE(s->info().address_free_bytes == 0);

	std::vector<uint8_t> buf(3 * kPageSize);
	auto past = s->write_pages(r->id, r->fa_offset + kPageSize, 2, buf.data());
	REQUIRE(past.code() == Code::kOutOfRange);
	REQUIRE(contains(past.message(), "'r'"));
	REQUIRE(s->read_pages(r->id, r->fa_offset - kPageSize, 1, buf.data()).code() ==
	        Code::kOutOfRange);
	REQUIRE(s->read_pages(r->id, r->fa_offset + 1, 1, buf.data()).code() == Code::kOutOfRange);
	REQUIRE(s->read_pages(r->id, r->fa_offset + 2 * kPageSize, 1, buf.data()).code() ==
	        Code::kOutOfRange);
	REQUIRE(s->read_pages(r->id, ~0ull - kPageSize + 1, 1, buf.data()).code() ==
	        Code::kOutOfRange);
	REQUIRE(s->read_pages(r->id ^ 0x400, r->fa_offset, 1, buf.data()).code() ==
	        Code::kNotFound);
	REQUIRE(s->read_pages(r->id, r->fa_offset, 2, buf.data()).is_ok());

	REQUIRE(s->delete_region("nope").code() == Code::kNotFound);
	REQUIRE(s->lookup_region("nope").status().code() == Code::kNotFound);
}

TEST_CASE("freed space reads as zeros and old ids stay dead", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto a = s->create_region("a", 4 * kPageSize, 0, 0600);
	REQUIRE(a.is_ok());
	std::vector<uint8_t> data = pattern(4, 9);
	REQUIRE(s->write_pages(a->id, a->fa_offset, 4, data.data()).is_ok());
	REQUIRE(s->delete_region("a").is_ok());
	REQUIRE(s->info().used_bytes == 0);

	auto b = s->create_region("b", 4 * kPageSize, 0, 0600);
	REQUIRE(b.is_ok());
	REQUIRE(b->fa_offset == a->fa_offset); // the same extent, reused
	REQUIRE(b->id != a->id);
	std::vector<uint8_t> back(4 * kPageSize, 0xaa);
	REQUIRE(s->read_pages(b->id, b->fa_offset, 4, back.data()).is_ok());
	REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t x) { return x == 0; }));
	REQUIRE(s->read_pages(a->id, a->fa_offset, 1, back.data()).code() == Code::kNotFound);
	REQUIRE(s->region_by_id(b->id)->name == "b");

	// Still zero after a restart (no redo record may refill the extent).
	s.reset();
	auto s2 = std::move(*ModuleStore::open(path, 0));
	REQUIRE(s2->info().log_replays == 0);
	REQUIRE(s2->read_pages(b->id, b->fa_offset, 4, back.data()).is_ok());
	REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t x) { return x == 0; }));
	s2.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("a region's file length: set, grown, shrunk to zeros, durable", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto r = s->create_region("f", 4 * kPageSize, 0, 0600);
	REQUIRE(r.is_ok());
	REQUIRE(r->length == 4 * kPageSize); // never set: the whole region
	std::vector<uint8_t> data = pattern(4, 5);
	REQUIRE(s->write_pages(r->id, r->fa_offset, 4, data.data()).is_ok());

	// Shrinking into page 1 zeroes its tail and pages 2 and 3.
	const uint64_t cut = kPageSize + 100;
	auto t = s->set_length("f", cut, false);
	REQUIRE(t.is_ok());
	REQUIRE(t->length == cut);
	// A grow-only length below the current one changes nothing ...
	REQUIRE(s->set_length("f", 10, true)->length == cut);
	// ... one above grows the file, and beyond the region is refused.
	REQUIRE(s->set_length("f", 3 * kPageSize, true)->length == 3 * kPageSize);
	auto big = s->set_length("f", 4 * kPageSize + 1, false);
	REQUIRE(big.status().code() == Code::kOutOfRange);
	REQUIRE(contains(big.status().message(), "cannot exceed its size"));
	REQUIRE(s->lookup_region("f")->length == 3 * kPageSize);
	REQUIRE(s->set_length("nope", 0, false).status().code() == Code::kNotFound);

	s.reset();
	auto s2 = std::move(*ModuleStore::open(path, 0));
	auto back_r = s2->lookup_region("f");
	REQUIRE(back_r->length == 3 * kPageSize);
	std::vector<uint8_t> back(4 * kPageSize, 0xaa);
	REQUIRE(s2->read_pages(r->id, r->fa_offset, 4, back.data()).is_ok());
	REQUIRE(memcmp(back.data(), data.data(), cut) == 0);
	REQUIRE(std::all_of(back.begin() + cut, back.end(), [](uint8_t x) { return x == 0; }));
	s2.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("a truncate zeroes pages written past the length the module had", "[store][pool]")
{
	// A file grows on its writer's node and its pages are written back
	// before the module hears the new length: a truncate must still clear
	// them, whatever length the module had recorded.
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto r = s->create_region("f", 8 * kPageSize, 0, 0600);
	REQUIRE(s->set_length("f", 0, false).is_ok());
	std::vector<uint8_t> data = pattern(6, 9);
	REQUIRE(s->write_pages(r->id, r->fa_offset, 6, data.data()).is_ok());
	REQUIRE(s->lookup_region("f")->length == 0); // never told

	// To the length it already has (0), and within page 2 after a grow
	// that was never told either.
	REQUIRE(s->set_length("f", 0, false)->length == 0);
	std::vector<uint8_t> back(8 * kPageSize, 0xaa);
	REQUIRE(s->read_pages(r->id, r->fa_offset, 8, back.data()).is_ok());
	REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t x) { return x == 0; }));
	REQUIRE(s->write_pages(r->id, r->fa_offset, 6, data.data()).is_ok());
	const uint64_t cut = 2 * kPageSize + 7;
	REQUIRE(s->set_length("f", cut, false)->length == cut);

	s.reset();
	auto s2 = std::move(*ModuleStore::open(path, 0));
	REQUIRE(s2->read_pages(r->id, r->fa_offset, 8, back.data()).is_ok());
	REQUIRE(memcmp(back.data(), data.data(), cut) == 0);
	REQUIRE(std::all_of(back.begin() + cut, back.end(), [](uint8_t x) { return x == 0; }));
	s2.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("list_regions and ids are stable across restarts", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	std::vector<RegionInfo> before;
	{
		auto s = make_pool(path);
		for (const char *n : {"x", "y", "z"})
			REQUIRE(s->create_region(n, 2 * kPageSize, 0, 0600).is_ok());
		REQUIRE(s->delete_region("y").is_ok());
		before = s->list_regions();
		REQUIRE(before.size() == 2);
	}
	auto s = std::move(*ModuleStore::open(path, 0));
	std::vector<RegionInfo> after = s->list_regions();
	REQUIRE(after.size() == 2);
	for (size_t i = 0; i < after.size(); i++) {
		REQUIRE(after[i].name == before[i].name);
		REQUIRE(after[i].id == before[i].id);
		REQUIRE(after[i].fa_offset == before[i].fa_offset);
	}
	PoolInfo info = s->info();
	REQUIRE(info.reserved_bytes == 4 * kPageSize);
	REQUIRE(info.used_bytes == 0);                              // nothing written
	REQUIRE(info.largest_free_bytes < info.address_free_bytes); // the hole of y and the tail
}

TEST_CASE("a read racing writes of the same pages never sees a torn page", "[store][pool]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	auto r = s->create_region("race", 4 * kPageSize, 0, 0600);
	REQUIRE(r.is_ok());
	std::atomic<bool> stop{false};
	std::thread writer([&] {
		std::vector<uint8_t> buf(4 * kPageSize);
		for (uint32_t v = 1; !stop.load(); v++) {
			memset(buf.data(), static_cast<int>(v & 0xff), buf.size());
			if (!s->write_pages(r->id, r->fa_offset, 4, buf.data()).is_ok())
				break;
		}
	});
	std::vector<uint8_t> page(4 * kPageSize);
	bool torn = false;
	for (int i = 0; i < 1000 && !torn; i++) {
		REQUIRE(s->read_pages(r->id, r->fa_offset, 4, page.data()).is_ok());
		for (uint32_t p = 0; p < 4; p++) {
			const uint8_t *pg = page.data() + p * kPageSize;
			torn |= !std::all_of(pg, pg + kPageSize,
			                     [&](uint8_t b) { return b == pg[0]; });
		}
	}
	stop = true;
	writer.join();
	REQUIRE_FALSE(torn);
}

TEST_CASE("a delete interrupted by a crash is finished at the next open", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	RegionInfo a, b;
	{
		auto s = make_pool(path);
		a = *s->create_region("a", 4 * kPageSize, 0, 0600);
		b = *s->create_region("b", 4 * kPageSize, 0, 0600);
		std::vector<uint8_t> data = pattern(4, 3);
		REQUIRE(s->write_pages(a.id, a.fa_offset, 4, data.data()).is_ok());
	}
	{
		// The state a crash right after delete_region's first step leaves.
		auto f = std::move(*store::PoolFile::open(path, true, false));
		REQUIRE(f->map(true).is_ok());
		store::Geometry geo = store::compute_geometry(kPoolSize);
		auto *e = reinterpret_cast<store::RegionEntry *>(f->base() + geo.table_offset);
		e->state_word = (e->state_word & ~uint64_t{0xff}) | store::kRegionDeleting;
		f->persist_fn()(e, sizeof(*e));
	}
	REQUIRE(ModuleStore::check(path)->clean);
	auto s = std::move(*ModuleStore::open(path, 0));
	REQUIRE(s->lookup_region("a").status().code() == Code::kNotFound);
	REQUIRE(s->list_regions().size() == 1);
	REQUIRE(s->info().reserved_bytes == 4 * kPageSize);
	auto c = s->create_region("c", 4 * kPageSize, 0, 0600);
	REQUIRE(c.is_ok());
	REQUIRE(c->fa_offset == a.fa_offset);
	std::vector<uint8_t> back(4 * kPageSize, 0xaa);
	REQUIRE(s->read_pages(c->id, c->fa_offset, 4, back.data()).is_ok());
	REQUIRE(std::all_of(back.begin(), back.end(), [](uint8_t x) { return x == 0; }));
	s.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("write_pages_batch: one persist per group, per-op status, durable", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	uint32_t rid;
	uint64_t fa;
	// Op 2 is out of range, op 4 spans a round boundary (kLogSlots pages).
	std::vector<uint8_t> a = pattern(2, 1), b = pattern(3, 2), c = pattern(1, 3),
	                     d = pattern(store::kLogSlots, 4);
	{
		auto s = make_pool(path);
		auto r = s->create_region("batch", (8 + store::kLogSlots) * kPageSize, 0, 0600);
		REQUIRE(r.is_ok());
		rid = r->id;
		fa = r->fa_offset;
		uint64_t before = s->info().log_persists;
		ModuleStore::WriteOp ops[] = {
		        {rid, fa, 2, a.data(), {}},
		        {rid, fa + 2 * kPageSize, 3, b.data(), {}},
		        {rid, fa + r->size_bytes, 1, c.data(), {}},
		        {rid, fa + 5 * kPageSize, 1, c.data(), {}},
		        {rid, fa + 8 * kPageSize, store::kLogSlots, d.data(), {}},
		};
		s->write_pages_batch(ops);
		CHECK(ops[0].status.is_ok());
		CHECK(ops[1].status.is_ok());
		CHECK(ops[2].status.code() == Code::kOutOfRange);
		CHECK(ops[3].status.is_ok());
		CHECK(ops[4].status.is_ok());
		// 6 pages + 256 pages = two rounds of the ring, not one persist per op.
		CHECK(s->info().log_persists - before == 2);
		CHECK(s->info().pages_written == 6 + store::kLogSlots);
		// A later op on the same page wins (ops apply in order).
		ModuleStore::WriteOp again[] = {{rid, fa, 1, c.data(), {}},
		                                {rid, fa, 1, b.data(), {}}};
		s->write_pages_batch(again);
		REQUIRE(again[1].status.is_ok());
	}
	auto r = ModuleStore::open(path, 0);
	REQUIRE(r.is_ok());
	auto &s = *r;
	std::vector<uint8_t> got((8 + store::kLogSlots) * kPageSize);
	REQUIRE(s->read_pages(rid, fa, 8 + store::kLogSlots, got.data()).is_ok());
	CHECK(std::memcmp(got.data(), b.data(), kPageSize) == 0);
	CHECK(std::memcmp(got.data() + kPageSize, a.data() + kPageSize, kPageSize) == 0);
	CHECK(std::memcmp(got.data() + 2 * kPageSize, b.data(), 3 * kPageSize) == 0);
	CHECK(std::memcmp(got.data() + 5 * kPageSize, c.data(), kPageSize) == 0);
	CHECK(std::memcmp(got.data() + 8 * kPageSize, d.data(), d.size()) == 0);
}

TEST_CASE("write_pages_batch: a crash after the group's log persist replays every write",
          "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	std::vector<uint8_t> a = pattern(2, 9), b = pattern(1, 10);
	uint32_t rid;
	uint64_t fa;
	{
		auto s = make_pool(path);
		auto r = s->create_region("crash", 4 * kPageSize, 0, 0600);
		REQUIRE(r.is_ok());
		rid = r->id;
		fa = r->fa_offset;
		s->set_crash_after_log_for_test(true);
		ModuleStore::WriteOp ops[] = {{rid, fa, 2, a.data(), {}},
		                              {rid, fa + 3 * kPageSize, 1, b.data(), {}}};
		s->write_pages_batch(ops);
		REQUIRE(ops[0].status.code() == Code::kInternal);
		REQUIRE(ops[1].status.code() == Code::kInternal);
	}
	auto r = ModuleStore::open(path, 0);
	REQUIRE(r.is_ok());
	CHECK((*r)->info().log_replays == 3);
	std::vector<uint8_t> got(4 * kPageSize);
	REQUIRE((*r)->read_pages(rid, fa, 4, got.data()).is_ok());
	CHECK(std::memcmp(got.data(), a.data(), 2 * kPageSize) == 0);
	CHECK(std::memcmp(got.data() + 3 * kPageSize, b.data(), kPageSize) == 0);
}

TEST_CASE("read_pages_with_crc: the stored crcs, combined, vouch for the copy", "[store][pool]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	std::vector<uint8_t> data = pattern(2, 5);
	auto s = make_pool(path);
	auto r = s->create_region("crc", 4 * kPageSize, 0, 0600);
	REQUIRE(r.is_ok());
	uint32_t rid = r->id;
	uint64_t fa = r->fa_offset;
	// Pages 1 and 2 written, 0 and 3 never (zeros).
	REQUIRE(s->write_pages(rid, fa + kPageSize, 2, data.data()).is_ok());
	std::vector<uint8_t> got(4 * kPageSize);
	uint32_t crc = 0;
	REQUIRE(s->read_pages_with_crc(rid, fa, 4, got.data(), &crc).is_ok());
	CHECK(crc == crc32c(got.data(), got.size()));
	CHECK(std::memcmp(got.data() + kPageSize, data.data(), data.size()) == 0);
	REQUIRE(s->read_pages_with_crc(rid, fa + 2 * kPageSize, 1, got.data(), &crc).is_ok());
	CHECK(crc == crc32c(data.data() + kPageSize, kPageSize));
	CHECK(s->read_pages_with_crc(rid, fa + 4 * kPageSize, 1, got.data(), &crc).code() ==
	      Code::kOutOfRange);
	// A byte flipped on the media (the file is the mapping's backing): the
	// copy no longer matches the crc.
	store::flip_byte(path, fa + kPageSize + 100);
	REQUIRE(s->read_pages_with_crc(rid, fa + kPageSize, 2, got.data(), &crc).is_ok());
	CHECK(crc != crc32c(got.data(), 2 * kPageSize));
	CHECK(s->read_pages(rid, fa + kPageSize, 2, got.data()).code() == Code::kCorrupt);
}
