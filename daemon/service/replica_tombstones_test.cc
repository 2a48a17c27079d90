// Replica tombstones as a file: round trip, bad files, the bound.
#include "daemon/service/replica_tombstones.h"

#include <catch2/catch.hpp>

namespace memfed
{

TEST_CASE("replica tombstones round-trip through their file")
{
	ReplicaTombstones t;
	ModuleId a{0x02000000000a}, b{0x02000000000b};
	t.deleted[42] = {"gone", {{a, 3, 4096, 1}, {b, 4, 8192, 1}}};
	t.dropped.push_back({7, "two", {b, 9, 1 << 20, 1}});
	auto back = tombstones_from_json(tombstones_to_json(t), "f");
	REQUIRE(back);
	REQUIRE(back->deleted.size() == 1);
	const DeletedCopies &d = back->deleted.at(42);
	CHECK(d.name == "gone");
	REQUIRE(d.copies.size() == 2);
	CHECK(d.copies[1].module == b);
	CHECK(d.copies[1].region_id == 4);
	CHECK(d.copies[1].fa_offset == 8192);
	REQUIRE(back->dropped.size() == 1);
	CHECK(back->dropped[0].group == 7);
	CHECK(back->dropped[0].name == "two");
	CHECK(back->dropped[0].copy.module == b);
	CHECK(back->dropped[0].copy.region_id == 9);
	CHECK(tombstone_count(*back) == 3);
	CHECK(tombstones_to_json({}) == "[]\n");
}

TEST_CASE("a bad tombstone file is refused, naming the file")
{
	for (const char *text : {"", "{}", "[{\"group\": 1}]",
	                         "[{\"dropped\": \"x\", \"group\": 1, \"copy\": {\"module\": "
	                         "\"zz\", \"region_id\": 1, \"fa_offset\": 0}}]"}) {
		auto r = tombstones_from_json(text, "/state/replica-tombstones.json");
		REQUIRE_FALSE(r);
		CHECK(r.status().code() == Code::kCorrupt);
		CHECK(r.status().message().find("/state/replica-tombstones.json") !=
		      std::string::npos);
	}
}

TEST_CASE("the tombstones are bounded, the oldest dropped copies going first")
{
	ReplicaTombstones t;
	ModuleId a{0x02000000000a};
	t.deleted[1] = {"del", {{a, 1, 0, 0}, {a, 2, 0, 0}}};
	for (uint32_t i = 0; i < 5; i++)
		t.dropped.push_back({100 + i, std::string(1, char('0' + i)), {a, 10 + i, 0, 0}});
	auto forgotten = bound_tombstones(&t, 4);
	CHECK(forgotten.size() == 3);
	CHECK(forgotten[0] == "region '0' on module 02:00:00:00:00:0a");
	CHECK(tombstone_count(t) == 4);
	REQUIRE(t.dropped.size() == 2);
	CHECK(t.dropped[0].name == "3");
	forgotten = bound_tombstones(&t, 1);
	CHECK(tombstone_count(t) <= 1);
	CHECK(t.dropped.empty());
}

} // namespace memfed
