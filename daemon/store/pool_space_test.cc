// Tests of a pool's space accounting (pool_space.h): the SpaceLedger, what
// each owner holds, and a thin pool's capacity and write admission.
#include "daemon/store/pool_space.h"

#include <catch2/catch.hpp>

#include <sys/stat.h>

#include <algorithm>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/store/pool.h"
#include "daemon/store/test_pool.h"

using namespace memfed;
using namespace memfed::store_test;
using store::SpaceLedger;

namespace
{

RegionInfo region(uint32_t id, uint32_t uid, uint8_t node)
{
	RegionInfo r;
	r.id = id;
	r.owner_uid = uid;
	r.owner_key[0] = node;
	return r;
}

uint64_t allocated_bytes(const std::string &path)
{
	struct stat st;
	REQUIRE(stat(path.c_str(), &st) == 0);
	return uint64_t(st.st_blocks) * 512;
}

} // namespace

TEST_CASE("the space ledger counts pages per region, owner and node, and in all", "[store][space]")
{
	SpaceLedger l;
	const RegionInfo a = region(1, 1000, 0), b = region(2, 1000, 7), c = region(3, 2000, 7);
	l.add(a, 3);
	l.add(b, 5);
	l.add(c, 2);
	CHECK(l.total() == 10);
	CHECK(l.of_region(1) == 3);
	CHECK(l.of_region(2) == 5);
	CHECK(l.of_region(4) == 0);
	CHECK(l.of_uid(1000) == 8);
	CHECK(l.of_uid(2000) == 2);
	CHECK(l.of_node(NodeKeyBytes{}) == 3);
	CHECK(l.of_node(b.owner_key) == 7);
	CHECK(l.by_uid() == std::map<uint32_t, uint64_t>{{1000, 8}, {2000, 2}});
	CHECK(l.by_node().size() == 2);

	// A truncate takes pages off; an owner left with none is forgotten.
	l.add(c, -2);
	CHECK(l.total() == 8);
	CHECK(l.of_uid(2000) == 0);
	CHECK(l.by_uid().count(2000) == 0);
	CHECK(l.of_node(c.owner_key) == 5);

	// A delete takes off all the region holds.
	l.drop_region(b);
	CHECK(l.total() == 3);
	CHECK(l.of_region(2) == 0);
	CHECK(l.of_uid(1000) == 3);
	CHECK(l.by_node() == std::map<NodeKeyBytes, uint64_t>{{NodeKeyBytes{}, 3}});
	l.drop_region(b); // nothing left to take off
	CHECK(l.total() == 3);
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

TEST_CASE("a thin pool: reading unwritten pages, or writing zeros over them, takes no space",
          "[store][pool][thin]")
{
	// In memory, as the daemon's default pool: a tmpfs file allocates a page
	// for a read of a hole through a shared mapping, where a disk
	// filesystem would not.
	TestPoolDir dir(TestPoolDir::kInMemory);
	std::string path = dir.path("pool");
	auto s = make_pool(path);
	const PoolInfo info = s->info();
	REQUIRE(info.thin);
	auto r = s->create_region("r", uint64_t{1} << 30, 1000, 0600);
	REQUIRE(r.is_ok());
	constexpr uint32_t kPages = 256;
	const std::vector<uint8_t> zeros(kPages * kPageSize, 0);
	const uint64_t allocated = allocated_bytes(path);

	// Reads of pages never written are zeros, vouched for by their crc, and
	// leave the file as it was.
	std::vector<uint8_t> buf(kPages * kPageSize, 0xee);
	REQUIRE(s->read_pages(r->id, r->fa_offset, kPages, buf.data()).is_ok());
	REQUIRE(buf == zeros);
	std::fill(buf.begin(), buf.end(), 0xee);
	uint32_t crc = 0;
	REQUIRE(s->read_pages_with_crc(r->id, r->fa_offset, kPages, buf.data(), &crc).is_ok());
	REQUIRE(buf == zeros);
	REQUIRE(crc == crc32c(zeros.data(), zeros.size()));
	CHECK(allocated_bytes(path) - allocated < kPages * kPageSize / 8);

	// Zeros written over them change nothing: no space, no file pages --
	// also on a full pool, which refuses pages that are not zeros.
	std::vector<uint8_t> fill = pattern(1, 7);
	const uint64_t cap_pages = info.capacity_bytes / kPageSize;
	for (uint64_t i = 0; i < cap_pages; i++)
		REQUIRE(s->write_pages(r->id, r->fa_offset + (kPages + i) * kPageSize, 1,
		                       fill.data())
		                .is_ok());
	REQUIRE(s->info().used_bytes == info.capacity_bytes);
	const uint64_t full_allocated = allocated_bytes(path);
	REQUIRE(s->write_pages(r->id, r->fa_offset, kPages, zeros.data()).is_ok());
	CHECK(s->info().used_bytes == info.capacity_bytes);
	CHECK(allocated_bytes(path) - full_allocated < kPages * kPageSize / 8);
	REQUIRE(s->write_pages(r->id, r->fa_offset, 1, fill.data()).code() == Code::kNoSpace);

	// Zeros written over a written page are written: it reads zeros, and a
	// batch that writes a page and then zeros it leaves zeros (the other
	// order leaves the page).
	const uint64_t written = r->fa_offset + kPages * kPageSize;
	REQUIRE(s->write_pages(r->id, written, 1, zeros.data()).is_ok());
	REQUIRE(s->read_pages(r->id, written, 1, buf.data()).is_ok());
	CHECK(std::all_of(buf.begin(), buf.begin() + kPageSize, [](uint8_t b) { return b == 0; }));
	REQUIRE(s->delete_region("r").is_ok());
	r = s->create_region("r", uint64_t{1} << 30, 1000, 0600);
	REQUIRE(r.is_ok());
	ModuleStore::WriteOp ops[4] = {
	        {r->id, r->fa_offset, 1, fill.data()},
	        {r->id, r->fa_offset, 1, zeros.data()},
	        {r->id, r->fa_offset + kPageSize, 1, zeros.data()},
	        {r->id, r->fa_offset + kPageSize, 1, fill.data()},
	};
	s->write_pages_batch(ops);
	for (const auto &op : ops)
		REQUIRE(op.status.is_ok());
	REQUIRE(s->read_pages(r->id, r->fa_offset, 2, buf.data()).is_ok());
	CHECK(std::equal(buf.begin(), buf.begin() + kPageSize, zeros.begin()));
	CHECK(std::equal(buf.begin() + kPageSize, buf.begin() + 2 * kPageSize, fill.begin()));
	CHECK(s->lookup_region("r")->used_bytes == 2 * kPageSize);
	s.reset();
	auto rep = ModuleStore::check(path);
	REQUIRE(rep.is_ok());
	INFO((rep->problems.empty() ? "" : rep->problems[0]));
	REQUIRE(rep->clean);
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
