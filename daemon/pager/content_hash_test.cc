// Unit tests of content_hash (content_hash.h): its two builds agree, and it
// tells pages and keys apart.
#include "daemon/pager/content_hash.h"

#include <catch2/catch.hpp>

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include "daemon/pager/uffd.h"

using namespace memfed::pager;

TEST_CASE("content_hash: the AVX2 build hashes as the baseline does", "[pager][policy]")
{
	if (!__builtin_cpu_supports("avx2")) {
		WARN("SKIPPED: this CPU has no AVX2, so content_hash uses the baseline build only");
		return;
	}
	std::mt19937_64 rng(7);
	std::vector<uint8_t> page(kPageSize);
	for (int round = 0; round < 64; round++) {
		for (auto &b : page)
			b = uint8_t(rng());
		if (round == 0)
			std::fill(page.begin(), page.end(), 0); // the zero page too
		const uint64_t key = round < 2 ? 0 : rng();
		INFO("round " << round);
		CHECK(content_hash_avx2(page.data(), key) ==
		      content_hash_baseline(page.data(), key));
		CHECK(content_hash(page.data(), key) == content_hash_baseline(page.data(), key));
	}
}

TEST_CASE("content_hash: a changed byte or another key gives another hash", "[pager][policy]")
{
	std::vector<uint8_t> page(kPageSize, 0x5a);
	const uint64_t key = content_hash_key();
	const uint64_t h = content_hash(page.data(), key);
	for (size_t at : {size_t{0}, size_t{1}, kPageSize / 2, kPageSize - 1}) {
		page[at] ^= 1;
		CHECK(content_hash(page.data(), key) != h);
		page[at] ^= 1;
	}
	CHECK(content_hash(page.data(), key) == h);
	CHECK(content_hash(page.data(), key + 1) != h);
}
