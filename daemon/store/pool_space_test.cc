// Tests of SpaceLedger (pool_space.h): the pages written, counted per
// region, owner uid, owner node and in all.
#include "daemon/store/pool_space.h"

#include <catch2/catch.hpp>

using namespace memfed;
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
