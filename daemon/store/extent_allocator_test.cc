#include "daemon/store/extent_allocator.h"

#include <catch2/catch.hpp>

using memfed::Code;
using memfed::store::ExtentAllocator;

TEST_CASE("allocator hands out contiguous extents in address order", "[store][allocator]")
{
	ExtentAllocator a(100);
	REQUIRE(*a.allocate(10) == 0);
	REQUIRE(*a.allocate(20) == 10);
	REQUIRE(a.free_pages() == 70);
	REQUIRE(a.largest_free_pages() == 70);
}

TEST_CASE("allocator picks the best fitting hole", "[store][allocator]")
{
	ExtentAllocator a(100);
	uint64_t x = *a.allocate(10); // [0,10)
	uint64_t y = *a.allocate(5);  // [10,15)
	uint64_t z = *a.allocate(3);  // [15,18)
	(void)y;
	a.release(x, 10); // hole of 10 at 0
	a.release(z, 3);  // hole of 3+82 at 15 (coalesced with the tail)
	// A 4-page request fits the 10-page hole best (the tail has 85).
	REQUIRE(*a.allocate(4) == 0);
}

TEST_CASE("allocator coalesces neighbours on release", "[store][allocator]")
{
	ExtentAllocator a(30);
	uint64_t x = *a.allocate(10), y = *a.allocate(10), z = *a.allocate(10);
	REQUIRE(a.free_pages() == 0);
	a.release(x, 10);
	a.release(z, 10);
	REQUIRE(a.free_extents() == 2);
	a.release(y, 10);
	REQUIRE(a.free_extents() == 1);
	REQUIRE(a.largest_free_pages() == 30);
	REQUIRE(*a.allocate(30) == 0);
}

TEST_CASE("allocator reuses freed space", "[store][allocator]")
{
	ExtentAllocator a(20);
	uint64_t x = *a.allocate(20);
	REQUIRE(a.allocate(1).status().code() == Code::kNoSpace);
	a.release(x, 20);
	REQUIRE(*a.allocate(20) == 0);
}

TEST_CASE("fragmented free space fails naming free and largest extent", "[store][allocator]")
{
	ExtentAllocator a(30);
	uint64_t x = *a.allocate(10);
	(void)*a.allocate(10);
	uint64_t z = *a.allocate(10);
	a.release(x, 10);
	a.release(z, 10);
	auto r = a.allocate(15); // 20 pages free, but in two pieces of 10
	REQUIRE(r.status().code() == Code::kNoSpace);
	const std::string &m = r.status().message();
	INFO(m);
	REQUIRE(m.find("61440 bytes") != std::string::npos); // requested
	REQUIRE(m.find("81920 bytes free") != std::string::npos);
	REQUIRE(m.find("largest free extent 40960") != std::string::npos);
}

TEST_CASE("reserve rebuilds state and rejects overlaps", "[store][allocator]")
{
	ExtentAllocator a(50);
	REQUIRE(a.reserve(10, 10).is_ok());
	REQUIRE(a.reserve(30, 5).is_ok());
	REQUIRE(a.free_pages() == 35);
	REQUIRE(a.reserve(15, 10).code() == Code::kCorrupt); // overlaps [10,20)
	REQUIRE(a.reserve(45, 10).code() == Code::kCorrupt); // past the end
	REQUIRE(a.reserve(0, 0).code() == Code::kCorrupt);
	REQUIRE(*a.allocate(10) == 0); // best fit: [0,10) exactly
	REQUIRE(a.largest_free_pages() == 15);
}
