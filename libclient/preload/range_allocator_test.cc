#include <catch2/catch.hpp>

#include "libclient/preload/range_allocator.h"

using memfed::preload::RangeAllocator;

namespace
{
constexpr uint64_t kBase = uint64_t{1} << 32;
constexpr uint64_t kMiB = uint64_t{1} << 20;
} // namespace

TEST_CASE("range allocator: first fit, partial release, coalescing")
{
	RangeAllocator r(kBase, 64 * kMiB);
	auto a = r.allocate(8192);
	auto b = r.allocate(4096);
	REQUIRE(a);
	REQUIRE(b);
	CHECK(*a == kBase);
	CHECK(*b == kBase + 8192);
	CHECK(r.used() == 12288);
	CHECK_FALSE(r.allocate(100)); // not a page multiple
	// Releasing the second page of a: a hole that fits one page.
	CHECK(r.release(kBase + 4096, 4096) == 4096);
	CHECK(*r.allocate(4096) == kBase + 4096);
	// Releasing a range that is partly free counts only the used pages.
	CHECK(r.release(kBase, 3 * 4096) == 3 * 4096);
	CHECK(r.release(kBase, 3 * 4096) == 0);
	CHECK(r.used() == 0);
	CHECK(r.used_spans().empty());
	// Everything coalesced back: the whole range is one run again.
	CHECK(r.allocate(64 * kMiB));
	CHECK_FALSE(r.allocate(4096));
}

TEST_CASE("range allocator: large runs are aligned for mimalloc segments")
{
	RangeAllocator r(kBase, 256 * kMiB);
	REQUIRE(r.allocate(4096));
	auto big = r.allocate(32 * kMiB);
	REQUIRE(big);
	CHECK(*big % (32 * kMiB) == 0);
	auto mid = r.allocate(3 * kMiB);
	REQUIRE(mid);
	CHECK(*mid % (2 * kMiB) == 0);
	// The gap left by alignment is still usable by small runs.
	auto small = r.allocate(4096);
	REQUIRE(small);
	CHECK(*small == kBase + 4096);
	auto spans = r.used_spans();
	REQUIRE(spans.size() == 3);
	CHECK(spans[0] == std::make_pair(uint64_t{0}, uint64_t{8192}));
}

TEST_CASE("range allocator: take() claims a fixed range, allocated() checks it")
{
	RangeAllocator r(kBase, 16 * kMiB);
	r.take(kBase + 4 * kMiB, kMiB);
	CHECK(r.used() == kMiB);
	CHECK(r.allocated(kBase + 4 * kMiB, kMiB));
	CHECK_FALSE(r.allocated(kBase + 4 * kMiB, kMiB + 4096));
	r.take(kBase + 4 * kMiB - 4096, 8192); // overlaps: only the free page counts
	CHECK(r.used() == kMiB + 4096);
	CHECK_FALSE(r.contains(kBase + 16 * kMiB, 4096));
	CHECK(r.release(kBase, 16 * kMiB) == kMiB + 4096);
}
