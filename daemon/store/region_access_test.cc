// Region access records (region_access.h): their encoding, the choice of the
// current copy, grants kept across reopen and a torn update, and pools of
// older layouts, which record no owner node, opening as they are.
#include "daemon/store/region_access.h"

#include <catch2/catch.hpp>

#include <cstring>

#include "daemon/store/pool.h"
#include "daemon/store/test_pool_dir.h"

using namespace memfed;
using memfed::store::TestPoolDir;

namespace
{

constexpr uint64_t kPoolSize = 4 << 20;
constexpr uint64_t kPage = store::kPageSize;

NodeKeyBytes key_of(uint8_t b)
{
	NodeKeyBytes k;
	k.fill(b);
	return k;
}

bool contains(const std::string &s, const std::string &part)
{
	return s.find(part) != std::string::npos;
}

} // namespace

TEST_CASE("an access record decodes to what was encoded", "[store][access]")
{
	RegionAccess a;
	a.owner_key = key_of(7);
	a.grants.push_back({key_of(1), 1000, kRightRead});
	a.grants.push_back({key_of(2), kAnyUid, kRightRead | kRightWrite});
	store::AccessRecord r = store::encode_access(a, 9, 3);
	REQUIRE(r.seq == 9);
	auto back = store::decode_access(r, 3);
	REQUIRE(back);
	REQUIRE(*back == a);
	// Of another slot generation: a record left by an earlier region.
	REQUIRE_FALSE(store::decode_access(r, 4));
	// One flipped bit fails the crc.
	store::AccessRecord bad = r;
	bad.grants[1].uid ^= 1;
	REQUIRE_FALSE(store::decode_access(bad, 3));
	// Zeros (a copy never written) are no record.
	REQUIRE_FALSE(store::decode_access(store::AccessRecord{}, 3));
	// Unknown rights bits, even with a good crc.
	bad = r;
	bad.grants[0].rights = 0x80;
	bad.crc = store::access_crc(bad);
	REQUIRE_FALSE(store::decode_access(bad, 3));
}

TEST_CASE("the valid copy with the higher seq is current", "[store][access]")
{
	RegionAccess old_a, new_a;
	new_a.grants.push_back({key_of(1), 5, kRightRead});
	store::AccessRecord copies[2] = {store::encode_access(old_a, 4, 1),
	                                 store::encode_access(new_a, 5, 1)};
	auto cur = store::current_access(copies, 1);
	REQUIRE(cur);
	REQUIRE(cur->copy == 1);
	REQUIRE(cur->access == new_a);
	copies[1].owner_key[0] ^= 0xff; // the newer copy torn: the older stands
	cur = store::current_access(copies, 1);
	REQUIRE(cur);
	REQUIRE(cur->copy == 0);
	REQUIRE(cur->access == old_a);
	copies[0].crc ^= 1;
	REQUIRE_FALSE(store::current_access(copies, 1));
}

TEST_CASE("grants are set, replaced, revoked and limited", "[store][access]")
{
	RegionAccess a;
	REQUIRE(apply_grant(&a, "r", {key_of(1), 10, kRightRead}).is_ok());
	REQUIRE(apply_grant(&a, "r", {key_of(1), 10, kRightRead | kRightWrite}).is_ok());
	REQUIRE(a.grants.size() == 1);
	REQUIRE(a.grants[0].rights == (kRightRead | kRightWrite));
	Status st = apply_grant(&a, "r", {key_of(1), 11, 0});
	REQUIRE(st.code() == Code::kNotFound);
	REQUIRE(apply_grant(&a, "r", {key_of(1), 10, 0}).is_ok());
	REQUIRE(a.grants.empty());
	for (uint8_t i = 0; i < store::kMaxGrants; i++)
		REQUIRE(apply_grant(&a, "r", {key_of(i), 1, kRightRead}).is_ok());
	st = apply_grant(&a, "r", {key_of(99), 1, kRightRead});
	REQUIRE(st.code() == Code::kNoSpace);
	REQUIRE(contains(st.message(), "region 'r'"));
	REQUIRE(contains(st.message(), "memfedctl region revoke"));
}

TEST_CASE("a region's owner node and grants survive reopen and pool check", "[store][access]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	{
		auto s = std::move(*ModuleStore::open(path, 0));
		REQUIRE(s->has_access_area());
		auto r = s->create_region("theirs", kPage, 1000, 0600, nullptr, {}, key_of(5));
		REQUIRE(r);
		REQUIRE(r->owner_key == key_of(5));
		REQUIRE(s->create_region("ours", kPage, 0, 0600).is_ok());
		REQUIRE(s->usage_of_node(key_of(5)).regions == 1);
		REQUIRE(s->usage_of_node(NodeKeyBytes{}).regions == 1);
		// Several updates, so both copies have been written.
		REQUIRE(s->set_grant("theirs", {key_of(6), 1001, kRightRead}).is_ok());
		REQUIRE(s->set_grant("theirs", {key_of(7), kAnyUid, kRightRead}).is_ok());
		REQUIRE(s->set_grant("theirs", {key_of(7), kAnyUid, 0}).is_ok());
		REQUIRE(s->set_grant("nothing", {key_of(7), 1, kRightRead}).status().code() ==
		        Code::kNotFound);
	}
	REQUIRE(ModuleStore::check(path)->clean);
	auto s = std::move(*ModuleStore::open(path, 0));
	auto a = s->region_access("theirs");
	REQUIRE(a);
	REQUIRE(a->owner_key == key_of(5));
	REQUIRE(a->grants == std::vector<AccessGrant>{{key_of(6), 1001, kRightRead}});
	REQUIRE(s->lookup_region("theirs")->owner_key == key_of(5));
	REQUIRE(s->usage_by_node().size() == 2);

	// A delete, then a create in the same slot: the grants of the region
	// that was there do not come back.
	REQUIRE(s->delete_region("theirs").is_ok());
	REQUIRE(s->delete_region("ours").is_ok());
	for (const char *name : {"n0", "n1"})
		REQUIRE(s->create_region(name, kPage, 1, 0600).is_ok());
	for (const char *name : {"n0", "n1"})
		REQUIRE(s->region_access(name)->grants.empty());
}

TEST_CASE("a torn grant update leaves the grants as they were", "[store][access]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	{
		auto s = std::move(*ModuleStore::open(path, 0));
		REQUIRE(s->create_region("r", kPage, 1, 0600, nullptr, {}, key_of(5)).is_ok());
		REQUIRE(s->set_grant("r", {key_of(6), 2, kRightRead}).is_ok()); // copy 1
		REQUIRE(s->set_grant("r", {key_of(6), 2, kRightWrite | kRightRead})
		                .is_ok()); // copy 0
	}
	// Tear copy 0 (the newest) as a crash in the middle of its write would.
	{
		auto f = std::move(*store::PoolFile::open(path, true, false));
		REQUIRE(f->map(true).is_ok());
		store::PoolHeader h;
		memcpy(&h, f->base(), sizeof(h));
		store::Geometry g = store::geometry_of(h);
		uint8_t *rec = f->base() + g.access_fa(0, 0);
		memset(rec + 100, 0xee, 40);
		f->persist_fn()(rec, sizeof(store::AccessRecord));
	}
	REQUIRE(ModuleStore::check(path)->clean);
	auto s = std::move(*ModuleStore::open(path, 0));
	REQUIRE(s->region_access("r")->grants ==
	        std::vector<AccessGrant>{{key_of(6), 2, kRightRead}});
}

TEST_CASE("a layout-version-3 pool opens as it is; its regions belong to its own node",
          "[store][access]")
{
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	REQUIRE(store::make_old_layout(path, store::kLayoutVersionVersions, kPoolSize));
	REQUIRE(ModuleStore::check(path)->clean);
	{
		auto s = std::move(*ModuleStore::open(path, 0));
		REQUIRE(s->info().layout_version == 3);
		REQUIRE_FALSE(s->has_access_area());
		auto r =
		        s->create_region("mine", 2 * kPage, 1000, 0600, nullptr, ReplicaSpec{4, 2});
		REQUIRE(r);
		REQUIRE(r->owner_key == NodeKeyBytes{});
		std::vector<uint8_t> page(kPage, 0x5a);
		REQUIRE(s->write_pages(r->id, r->fa_offset, 1, page.data()).is_ok());
		// What the layout cannot record is refused, naming the fix.
		auto other = s->create_region("theirs", kPage, 1, 0600, nullptr, {}, key_of(9));
		REQUIRE(other.status().code() == Code::kInvalidArgument);
		REQUIRE(contains(other.status().message(), "layout version 3"));
		REQUIRE(contains(other.status().message(), "memfedctl pool format"));
		auto g = s->set_grant("mine", {key_of(9), 1, kRightRead});
		REQUIRE(g.status().code() == Code::kInvalidArgument);
		REQUIRE(contains(g.status().message(), path));
		REQUIRE(s->region_access("mine")->grants.empty());
	}
	REQUIRE(ModuleStore::check(path)->clean);
	REQUIRE(ModuleStore::inspect(path)->layout_version == 3);
	auto s = std::move(*ModuleStore::open(path, 0));
	auto r = s->lookup_region("mine");
	REQUIRE(r);
	std::vector<uint8_t> got(kPage);
	REQUIRE(s->read_pages(r->id, r->fa_offset, 1, got.data()).is_ok());
	REQUIRE(got[17] == 0x5a);
}

TEST_CASE("access-lost runs at a delete, a truncate and a grant narrowed, not otherwise",
          "[store][access]")
{
	// What the RDMA server revokes keys by (daemon/rdma/rdma_server.h),
	// whatever path changed the region.
	TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, {}}).is_ok());
	auto s = std::move(*ModuleStore::open(path, 0));
	std::vector<uint32_t> lost;
	s->set_on_access_lost([&](uint32_t id) { lost.push_back(id); });
	auto r = s->create_region("r", 4 * kPage, 1, 0600, nullptr, {}, key_of(5));
	REQUIRE(r);
	REQUIRE(s->set_grant("r", {key_of(6), 2, kRightRead | kRightWrite}).is_ok());
	REQUIRE(s->set_grant("r", {key_of(7), kAnyUid, kRightRead}).is_ok());
	REQUIRE(s->set_length("r", 3 * kPage, true).is_ok()); // a grow
	REQUIRE(lost.empty());
	REQUIRE(s->set_grant("r", {key_of(6), 2, kRightRead}).is_ok()); // write taken away
	REQUIRE(lost == std::vector<uint32_t>{r->id});
	REQUIRE(s->set_grant("r", {key_of(6), 2, kRightRead | kRightWrite}).is_ok()); // widened
	REQUIRE(lost.size() == 1);
	REQUIRE(s->set_grant("r", {key_of(7), kAnyUid, 0}).is_ok()); // revoked
	REQUIRE(lost.size() == 2);
	REQUIRE(s->set_length("r", kPage, false).is_ok()); // a truncate
	REQUIRE(lost.size() == 3);
	REQUIRE(s->delete_region("r").is_ok());
	REQUIRE(lost == std::vector<uint32_t>(4, r->id));
	s->set_on_access_lost(nullptr);
	REQUIRE(s->create_region("q", kPage, 1, 0600).is_ok());
	REQUIRE(s->delete_region("q").is_ok());
	REQUIRE(lost.size() == 4);
}
