#include "daemon/store/pool.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/store/test_pool_dir.h"

using namespace memfed;
using store::kPageSize;
using store::TestPoolDir;

namespace
{

constexpr uint64_t kPoolSize = 4 << 20;

std::unique_ptr<ModuleStore> make_pool(const std::string &path, ModuleId id = {})
{
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, id}).is_ok());
	auto r = ModuleStore::open(path, kPoolSize);
	INFO(r.status().to_string());
	REQUIRE(r.is_ok());
	return std::move(*r);
}

std::vector<uint8_t> pattern(uint32_t pages, uint8_t seed)
{
	std::vector<uint8_t> v(pages * kPageSize);
	for (size_t i = 0; i < v.size(); i++)
		v[i] = static_cast<uint8_t>(seed + i * 7 + i / kPageSize);
	return v;
}

bool contains(const std::string &s, const std::string &part)
{
	return s.find(part) != std::string::npos;
}

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

TEST_CASE("each owner's usage is counted, admitted under the lock, and survives a restart",
          "[store][pool]")
{
	// A thick pool, where a create charges the region's size (a thin one
	// charges the pages written: the [thin] tests).
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	REQUIRE(store::make_old_layout(path, store::kLayoutVersionAccess, kPoolSize));
	auto s = std::move(*ModuleStore::open(path, kPoolSize));
	REQUIRE(s->create_region("a1", 3 * kPageSize, 1000, 0600).is_ok());
	REQUIRE(s->create_region("a2", 100, 1000, 0600).is_ok()); // rounded up to a page
	REQUIRE(s->create_region("b1", kPageSize, 2000, 0600).is_ok());
	CHECK(s->usage_of(1000).regions == 2);
	CHECK(s->usage_of(1000).bytes == 4 * kPageSize);
	CHECK(s->usage_of(3000).regions == 0);
	CHECK(s->usage_of(3000).bytes == 0);

	// The admit function sees the owner's usage and the rounded size; its
	// refusal is create_region's, and nothing is taken.
	OwnerUsage seen;
	uint64_t asked = 0;
	auto refuse = [&](const OwnerUsage &u, uint64_t bytes) {
		seen = u;
		asked = bytes;
		return Status(Code::kQuota, "over quota");
	};
	uint64_t free_before = s->info().address_free_bytes;
	auto r = s->create_region("a3", 5000, 1000, 0600, refuse);
	REQUIRE(r.status().code() == Code::kQuota);
	CHECK(r.status().message() == "over quota");
	CHECK(seen.regions == 2);
	CHECK(seen.bytes == 4 * kPageSize);
	CHECK(asked == 2 * kPageSize);
	CHECK(s->info().address_free_bytes == free_before);
	CHECK(s->info().regions == 3);
	CHECK(s->lookup_region("a3").status().code() == Code::kNotFound);
	// An existing name is refused before the quota is asked.
	CHECK(s->create_region("a1", kPageSize, 1000, 0600, refuse).status().code() ==
	      Code::kAlreadyExists);

	REQUIRE(s->delete_region("a1").is_ok());
	CHECK(s->usage_of(1000).regions == 1);
	CHECK(s->usage_of(1000).bytes == kPageSize);
	REQUIRE(s->delete_region("b1").is_ok());
	CHECK(s->usage_by_owner().count(2000) == 0); // an owner without regions is not listed

	s.reset();
	auto s2 = std::move(*ModuleStore::open(path, 0));
	auto all = s2->usage_by_owner();
	REQUIRE(all.size() == 1);
	CHECK(all[1000].regions == 1);
	CHECK(all[1000].bytes == kPageSize);
}

namespace
{

// The first byte of every page of `count` at `fa` in region `rid`.
std::vector<uint8_t> fills(ModuleStore &s, uint32_t rid, uint64_t fa, uint32_t count)
{
	std::vector<uint8_t> buf(count * kPageSize), out;
	REQUIRE(s.read_pages(rid, fa, count, buf.data()).is_ok());
	for (uint32_t i = 0; i < count; i++)
		out.push_back(buf[i * kPageSize]);
	return out;
}

std::vector<uint64_t> versions_of(ModuleStore &s, uint32_t rid, uint64_t fa, uint32_t count)
{
	std::vector<uint64_t> v(count);
	Status st = s.read_versions(rid, fa, count, v.data());
	INFO(st.to_string());
	REQUIRE(st.is_ok());
	return v;
}

} // namespace

TEST_CASE("versioned writes: an older version never overwrites a newer one",
          "[store][pool][versioned]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	auto r = *s->create_region("rep", 4 * kPageSize, 0, 0600, nullptr, ReplicaSpec{77, 3});
	REQUIRE(r.replica_group == 77);
	REQUIRE(r.replicas == 3);
	REQUIRE(versions_of(*s, r.id, r.fa_offset, 4) == std::vector<uint64_t>{0, 0, 0, 0});

	std::vector<uint8_t> v5(2 * kPageSize, 0x55), v3(4 * kPageSize, 0x33),
	        v9(4 * kPageSize, 0x99);
	uint32_t applied = 99;
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset + kPageSize, 2, v5.data(), 5,
	                                 VersionedMode::kNewer, &applied)
	                .is_ok());
	REQUIRE(applied == 2);
	// Version 3 over pages 0..3: pages 1 and 2 hold version 5 and are skipped.
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 4, v3.data(), 3, VersionedMode::kNewer,
	                                 &applied)
	                .is_ok());
	REQUIRE(applied == 2);
	REQUIRE(fills(*s, r.id, r.fa_offset, 4) == std::vector<uint8_t>{0x33, 0x55, 0x55, 0x33});
	REQUIRE(versions_of(*s, r.id, r.fa_offset, 4) == std::vector<uint64_t>{3, 5, 5, 3});
	// The same version again is not newer: nothing applied.
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 4, v3.data(), 3, VersionedMode::kNewer,
	                                 &applied)
	                .is_ok());
	REQUIRE(applied == 0);
	// A newer version wins everywhere.
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 4, v9.data(), 9, VersionedMode::kNewer,
	                                 &applied)
	                .is_ok());
	REQUIRE(applied == 4);
	REQUIRE(fills(*s, r.id, r.fa_offset, 4) == std::vector<uint8_t>{0x99, 0x99, 0x99, 0x99});
	// An unversioned write changes the page but not its version.
	REQUIRE(s->write_pages(r.id, r.fa_offset, 1, v5.data()).is_ok());
	REQUIRE(versions_of(*s, r.id, r.fa_offset, 1) == std::vector<uint64_t>{9});
	REQUIRE(fills(*s, r.id, r.fa_offset, 1) == std::vector<uint8_t>{0x55});

	// Version 0 and bad ranges are refused.
	CHECK(s->write_pages_versioned(r.id, r.fa_offset, 1, v3.data(), 0, VersionedMode::kNewer,
	                               &applied)
	              .code() == Code::kInvalidArgument);
	CHECK(s->write_pages_versioned(r.id, r.fa_offset + 3 * kPageSize, 2, v3.data(), 20,
	                               VersionedMode::kNewer, &applied)
	              .code() == Code::kOutOfRange);
	CHECK(applied == 0);
	uint64_t vs[8];
	CHECK(s->read_versions(r.id, r.fa_offset, 5, vs).code() == Code::kOutOfRange);
	CHECK(s->read_versions(r.id + 1, r.fa_offset, 1, vs).code() == Code::kNotFound);

	// Versions and the replica spec survive a restart.
	std::string path = dir.path("pool");
	s.reset();
	s = std::move(*ModuleStore::open(path, 0));
	REQUIRE(versions_of(*s, r.id, r.fa_offset, 4) == std::vector<uint64_t>{9, 9, 9, 9});
	REQUIRE(s->region_by_id(r.id)->replica_group == 77);
	REQUIRE(s->region_by_id(r.id)->replicas == 3);
	s.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("versioned repair rewrites a damaged copy holding the same version",
          "[store][pool][versioned]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto r = *s->create_region("rep", 2 * kPageSize, 0, 0600, nullptr, ReplicaSpec{1, 2});
	std::vector<uint8_t> good(2 * kPageSize, 0x42);
	uint32_t applied = 0;
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 2, good.data(), 7,
	                                 VersionedMode::kNewer, &applied)
	                .is_ok());
	// Reopening clears the redo log, which would otherwise repair the page.
	s.reset();
	REQUIRE(ModuleStore::open(path, 0).is_ok());
	store::flip_byte(path, r.fa_offset + kPageSize + 10); // page 1 damaged on the media
	s = std::move(*ModuleStore::open(path, 0));
	std::vector<uint8_t> got(2 * kPageSize);
	REQUIRE(s->read_pages(r.id, r.fa_offset, 2, got.data()).code() == Code::kCorrupt);
	// kNewer will not rewrite version 7 with version 7; kRepair will, and
	// never an older version.
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 2, good.data(), 7,
	                                 VersionedMode::kNewer, &applied)
	                .is_ok());
	REQUIRE(applied == 0);
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 2, good.data(), 6,
	                                 VersionedMode::kRepair, &applied)
	                .is_ok());
	REQUIRE(applied == 0);
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset + kPageSize, 1, good.data(), 7,
	                                 VersionedMode::kRepair, &applied)
	                .is_ok());
	REQUIRE(applied == 1);
	REQUIRE(s->read_pages(r.id, r.fa_offset, 2, got.data()).is_ok());
	REQUIRE(got == good);
	REQUIRE(versions_of(*s, r.id, r.fa_offset, 2) == std::vector<uint64_t>{7, 7});
}

TEST_CASE("versioned writes in a batch compare against the ops before them",
          "[store][pool][versioned]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	auto r = *s->create_region("rep", 300 * kPageSize, 0, 0600, nullptr, ReplicaSpec{1, 2});
	// More pages than one log round, so ops span rounds.
	std::vector<uint8_t> a(300 * kPageSize, 0xa1), b(300 * kPageSize, 0xb2), c(kPageSize, 0xc3);
	ModuleStore::WriteOp ops[4];
	ops[0] = {r.id, r.fa_offset, 300, a.data(), Status::ok(), 10, VersionedMode::kNewer, 0};
	ops[1] = {r.id, r.fa_offset + 100 * kPageSize, 200, b.data(), Status::ok(),
	          8,    VersionedMode::kNewer,         0}; // loses
	ops[2] = {r.id, r.fa_offset + 299 * kPageSize, 1, c.data(), Status::ok(),
	          11,   VersionedMode::kNewer,         0}; // wins
	ops[3] = {r.id, r.fa_offset + 300 * kPageSize, 1, c.data(), Status::ok(),
	          12,   VersionedMode::kNewer,         0}; // out of range
	s->write_pages_batch(ops);
	REQUIRE(ops[0].status.is_ok());
	REQUIRE(ops[0].applied == 300);
	REQUIRE(ops[1].status.is_ok());
	REQUIRE(ops[1].applied == 0);
	REQUIRE(ops[2].applied == 1);
	REQUIRE(ops[3].status.code() == Code::kOutOfRange);
	REQUIRE(ops[3].applied == 0);
	auto v = versions_of(*s, r.id, r.fa_offset, 300);
	REQUIRE(v[0] == 10);
	REQUIRE(v[150] == 10);
	REQUIRE(v[299] == 11);
	REQUIRE(fills(*s, r.id, r.fa_offset + 298 * kPageSize, 2) ==
	        std::vector<uint8_t>{0xa1, 0xc3});
	REQUIRE(s->info().pages_written == 301);
}

TEST_CASE("read_pages_versioned: pages, their versions, and a crc of both",
          "[store][pool][versioned]")
{
	TestPoolDir dir;
	auto s = make_pool(dir.path("pool"));
	auto r = *s->create_region("rep", 3 * kPageSize, 0, 0600, nullptr, ReplicaSpec{1, 2});
	std::vector<uint8_t> data = pattern(2, 9);
	uint32_t applied = 0;
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 2, data.data(), 4,
	                                 VersionedMode::kNewer, &applied)
	                .is_ok());
	std::vector<uint8_t> got(3 * kPageSize);
	uint64_t v[3];
	uint32_t crc = 0;
	REQUIRE(s->read_pages_versioned(r.id, r.fa_offset, 3, got.data(), v, &crc).is_ok());
	REQUIRE(v[0] == 4);
	REQUIRE(v[1] == 4);
	REQUIRE(v[2] == 0); // never written: zeros of version 0
	REQUIRE(std::equal(data.begin(), data.end(), got.begin()));
	// The crc covers what the wire sends: the versions, then the pages.
	std::vector<uint8_t> wire(sizeof(v) + got.size());
	memcpy(wire.data(), v, sizeof(v));
	memcpy(wire.data() + sizeof(v), got.data(), got.size());
	REQUIRE(crc == crc32c(wire.data(), wire.size()));
	CHECK(s->read_pages_versioned(r.id, r.fa_offset, 4, got.data(), v, &crc).code() ==
	      Code::kOutOfRange);
}

TEST_CASE("a layout-version-2 pool opens as it is and refuses replicated regions",
          "[store][pool][versioned]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	REQUIRE(store::make_old_layout(path, store::kLayoutVersionTableSize, kPoolSize));
	REQUIRE(ModuleStore::check(path)->clean);
	auto s = std::move(*ModuleStore::open(path, 0));
	REQUIRE(s->info().layout_version == 2);
	auto r = s->create_region("rep", kPageSize, 0, 0600, nullptr, ReplicaSpec{5, 3});
	REQUIRE(r.status().code() == Code::kInvalidArgument);
	INFO(r.status().message());
	REQUIRE(contains(r.status().message(), path));
	REQUIRE(contains(r.status().message(), "layout version 2"));
	REQUIRE(contains(r.status().message(), "memfedctl pool format"));
	// An ordinary region (and one of a single copy) works as before.
	auto plain = s->create_region("plain", 2 * kPageSize, 0, 0600);
	REQUIRE(plain.is_ok());
	REQUIRE(s->create_region("one", kPageSize, 0, 0600, nullptr, ReplicaSpec{5, 1}).is_ok());
	std::vector<uint8_t> data = pattern(2, 3);
	REQUIRE(s->write_pages(plain->id, plain->fa_offset, 2, data.data()).is_ok());
	uint32_t applied = 0;
	uint64_t v[2];
	CHECK(s->write_pages_versioned(plain->id, plain->fa_offset, 1, data.data(), 1,
	                               VersionedMode::kNewer, &applied)
	              .code() == Code::kInvalidArgument);
	CHECK(s->read_versions(plain->id, plain->fa_offset, 1, v).code() == Code::kInvalidArgument);
	s.reset();
	REQUIRE(ModuleStore::inspect(path)->layout_version == 2);
	REQUIRE(ModuleStore::check(path)->clean);
	s = std::move(*ModuleStore::open(path, 0));
	REQUIRE(fills(*s, plain->id, plain->fa_offset, 2) ==
	        std::vector<uint8_t>{data[0], data[kPageSize]});
}

TEST_CASE("delete and truncate zero the page versions", "[store][pool][versioned]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto r = *s->create_region("rep", 4 * kPageSize, 0, 0600, nullptr, ReplicaSpec{1, 2});
	std::vector<uint8_t> data(4 * kPageSize, 0x77);
	uint32_t applied = 0;
	REQUIRE(s->write_pages_versioned(r.id, r.fa_offset, 4, data.data(), 3,
	                                 VersionedMode::kNewer, &applied)
	                .is_ok());
	REQUIRE(s->set_length("rep", 2 * kPageSize, false).is_ok());
	REQUIRE(versions_of(*s, r.id, r.fa_offset, 4) == std::vector<uint64_t>{3, 3, 0, 0});
	REQUIRE(s->delete_region("rep").is_ok());
	// The next region in the same extent starts from version 0.
	auto n = *s->create_region("next", 4 * kPageSize, 0, 0600, nullptr, ReplicaSpec{2, 2});
	REQUIRE(n.fa_offset == r.fa_offset);
	REQUIRE(n.replica_group == 2);
	REQUIRE(versions_of(*s, n.id, n.fa_offset, 4) == std::vector<uint64_t>{0, 0, 0, 0});
	s.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

namespace
{

uint64_t allocated_bytes(const std::string &path)
{
	struct stat st;
	REQUIRE(stat(path.c_str(), &st) == 0);
	return uint64_t(st.st_blocks) * 512;
}

} // namespace

TEST_CASE("a thin pool: regions larger than it, writes refused past its capacity, delete frees",
          "[store][pool][thin]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	PoolInfo info = s->info();
	REQUIRE(info.layout_version == store::kLayoutVersion);
	REQUIRE(info.thin);
	REQUIRE(info.address_bytes >= (uint64_t{4} << 40));
	REQUIRE(info.capacity_bytes < kPoolSize);
	const uint64_t cap_pages = info.capacity_bytes / kPageSize;
	REQUIRE(cap_pages > 100);

	// Creates need address space only: two regions of 64 GiB in a 4 MiB pool.
	const uint64_t big = uint64_t{64} << 30;
	auto a = s->create_region("a", big, 1000, 0600);
	auto b = s->create_region("b", big, 1000, 0600);
	REQUIRE(a.is_ok());
	REQUIRE(b.is_ok());
	REQUIRE(a->used_bytes == 0);
	REQUIRE(s->info().used_bytes == 0);
	REQUIRE(s->usage_of(1000).bytes == 0);
	REQUIRE(s->usage_of(1000).regions == 2);

	// Written pages spread over both regions, far apart, up to capacity.
	std::vector<uint8_t> page = pattern(1, 3);
	auto fa_of = [&](const RegionInfo &r, uint64_t i) {
		return r.fa_offset + (i * 7919 % (big / kPageSize)) * kPageSize;
	};
	for (uint64_t i = 0; i < cap_pages; i++) {
		const RegionInfo &r = i % 2 ? *b : *a;
		Status st = s->write_pages(r.id, fa_of(r, i / 2), 1, page.data());
		INFO(i << ": " << st.to_string());
		REQUIRE(st.is_ok());
	}
	REQUIRE(s->info().used_bytes == cap_pages * kPageSize);
	REQUIRE(s->lookup_region("a")->used_bytes == (cap_pages + 1) / 2 * kPageSize);
	REQUIRE(s->list_regions()[1].used_bytes == cap_pages / 2 * kPageSize);
	REQUIRE(s->usage_of(1000).bytes == cap_pages * kPageSize);
	// Full: a page never written is refused, naming the pool and the fix;
	// a page already written is still written.
	Status full = s->write_pages(a->id, a->fa_offset + big - kPageSize, 1, page.data());
	REQUIRE(full.code() == Code::kNoSpace);
	REQUIRE(contains(full.message(), "pool " + path + " is full"));
	REQUIRE(contains(full.message(), "memfedctl pool format --size"));
	REQUIRE(s->write_pages(a->id, fa_of(*a, 0), 1, page.data()).is_ok());
	std::vector<uint8_t> back(kPageSize);
	REQUIRE(s->read_pages(a->id, fa_of(*a, 0), 1, back.data()).is_ok());
	REQUIRE(back == page);
	REQUIRE(s->info().used_bytes == cap_pages * kPageSize);
	// The file holds what was written, not the regions' sizes.
	REQUIRE(allocated_bytes(path) < 64 * kPoolSize);

	// Reopened, the counts come back from the metas.
	s.reset();
	s = std::move(*ModuleStore::open(path, kPoolSize));
	REQUIRE(s->info().used_bytes == cap_pages * kPageSize);
	REQUIRE(s->lookup_region("b")->used_bytes == cap_pages / 2 * kPageSize);
	REQUIRE(s->usage_of(1000).bytes == cap_pages * kPageSize);

	// A truncate and a delete give the space back.
	REQUIRE(s->set_length("b", 0, false).is_ok());
	REQUIRE(s->lookup_region("b")->used_bytes == 0);
	REQUIRE(s->info().used_bytes == (cap_pages + 1) / 2 * kPageSize);
	REQUIRE(s->delete_region("a").is_ok());
	REQUIRE(s->info().used_bytes == 0);
	REQUIRE(s->usage_of(1000).bytes == 0);
	REQUIRE(s->write_pages(b->id, b->fa_offset + big - kPageSize, 1, page.data()).is_ok());
	REQUIRE(s->lookup_region("b")->used_bytes == kPageSize);
	s.reset();
	auto rep = ModuleStore::check(path);
	REQUIRE(rep.is_ok());
	INFO((rep->problems.empty() ? "" : rep->problems[0]));
	REQUIRE(rep->clean);
	REQUIRE(rep->pages_written == 1);
	REQUIRE(allocated_bytes(path) < 64 * kPoolSize);
	REQUIRE(ModuleStore::inspect(path)->used_bytes == kPageSize);
}

TEST_CASE("a thin pool counts the pages a crash left in the log once replayed",
          "[store][pool][thin]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto r = s->create_region("r", uint64_t{1} << 30, 0, 0600);
	REQUIRE(r.is_ok());
	std::vector<uint8_t> data = pattern(4, 9);
	REQUIRE(s->write_pages(r->id, r->fa_offset, 2, data.data()).is_ok());
	s->set_crash_after_log_for_test(true);
	// Two pages rewritten, two new: the crash leaves all four in the log.
	REQUIRE_FALSE(s->write_pages(r->id, r->fa_offset, 4, data.data()).is_ok());
	s.reset();
	s = std::move(*ModuleStore::open(path, kPoolSize));
	REQUIRE(s->info().log_replays >= 4); // and the first write's, still logged
	REQUIRE(s->info().used_bytes == 4 * kPageSize);
	REQUIRE(s->lookup_region("r")->used_bytes == 4 * kPageSize);
	s.reset();
	REQUIRE(ModuleStore::check(path)->clean);
}

TEST_CASE("a thin pool asks the write admission before a write takes new pages",
          "[store][pool][thin]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	auto r = s->create_region("r", uint64_t{1} << 30, 1000, 0600);
	REQUIRE(r.is_ok());
	std::vector<uint8_t> data = pattern(4, 5);
	REQUIRE(s->write_pages(r->id, r->fa_offset, 2, data.data()).is_ok());
	OwnerUsage seen;
	uint64_t asked = 0;
	int calls = 0;
	s->set_write_admit([&](const RegionInfo &reg, const OwnerUsage &u, const OwnerUsage &,
	                       uint64_t more) {
		calls++;
		seen = u;
		asked = more;
		REQUIRE(reg.name == "r");
		return more > 2 * kPageSize ? Status(Code::kQuota, "over quota") : Status::ok();
	});
	// Pages already written are not asked about.
	REQUIRE(s->write_pages(r->id, r->fa_offset, 2, data.data()).is_ok());
	REQUIRE(calls == 0);
	// Four pages, three new: refused, nothing written.
	Status st = s->write_pages(r->id, r->fa_offset + kPageSize, 4, data.data());
	REQUIRE(st.code() == Code::kQuota);
	REQUIRE(calls == 1);
	REQUIRE(seen.bytes == 2 * kPageSize);
	REQUIRE(asked == 3 * kPageSize);
	REQUIRE(s->info().used_bytes == 2 * kPageSize);
	// Two new: admitted.
	REQUIRE(s->write_pages(r->id, r->fa_offset + kPageSize, 3, data.data()).is_ok());
	REQUIRE(s->info().used_bytes == 4 * kPageSize);
	// A create is charged no bytes on a thin pool.
	uint64_t charged = 1;
	REQUIRE(s->create_region("r2", uint64_t{8} << 30, 1000, 0600,
	                         [&](const OwnerUsage &u, uint64_t bytes) {
		                         charged = bytes;
		                         REQUIRE(u.bytes == 4 * kPageSize);
		                         return Status::ok();
	                         })
	                .is_ok());
	REQUIRE(charged == 0);
}

TEST_CASE("a layout-version-4 pool opens thick: capacity is its data area", "[store][pool][thin]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	REQUIRE(store::make_old_layout(path, store::kLayoutVersionAccess, kPoolSize));
	REQUIRE(ModuleStore::check(path)->clean);
	auto s = std::move(*ModuleStore::open(path, kPoolSize));
	PoolInfo info = s->info();
	REQUIRE(info.layout_version == 4);
	REQUIRE_FALSE(info.thin);
	REQUIRE(info.capacity_bytes == info.address_bytes);
	auto big = s->create_region("big", kPoolSize, 0, 0600);
	REQUIRE(big.status().code() == Code::kNoSpace);
	REQUIRE(contains(big.status().message(), "no free extent"));
	auto r = s->create_region("r", 4 * kPageSize, 1000, 0600);
	REQUIRE(r.is_ok());
	std::vector<uint8_t> data = pattern(1, 1);
	REQUIRE(s->write_pages(r->id, r->fa_offset, 1, data.data()).is_ok());
	REQUIRE(s->lookup_region("r")->used_bytes == kPageSize);
	// The quota of a thick pool charges the whole size at create.
	REQUIRE(s->usage_of(1000).bytes == 4 * kPageSize);
	s.reset();
	REQUIRE(ModuleStore::inspect(path)->layout_version == 4);
	REQUIRE(ModuleStore::check(path)->clean);
}
