// Tests of the module store's versioned writes (replicated regions): an older
// version never wins, repair, batches, versioned reads, older layouts.
#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/store/pool.h"
#include "daemon/store/test_pool.h"

using namespace memfed;
using namespace memfed::store_test;

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
