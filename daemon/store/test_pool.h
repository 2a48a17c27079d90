// Test helpers shared by the module store's tests (store_test): a fresh
// pool, page patterns, and a substring check for error messages; with
// `using namespace memfed::store_test` a test also has kPageSize and
// TestPoolDir.
#pragma once

#include <catch2/catch.hpp>

#include <memory>
#include <string>
#include <vector>

#include "daemon/store/pool.h"
#include "daemon/store/test_pool_dir.h"

namespace memfed::store_test
{

using store::kPageSize;
using store::TestPoolDir;

inline constexpr uint64_t kPoolSize = 4 << 20;

inline std::unique_ptr<ModuleStore> make_pool(const std::string &path, ModuleId id = {})
{
	REQUIRE(ModuleStore::format(PoolOptions{path, kPoolSize, id}).is_ok());
	auto r = ModuleStore::open(path, kPoolSize);
	INFO(r.status().to_string());
	REQUIRE(r.is_ok());
	return std::move(*r);
}

inline std::vector<uint8_t> pattern(uint32_t pages, uint8_t seed)
{
	std::vector<uint8_t> v(pages * kPageSize);
	for (size_t i = 0; i < v.size(); i++)
		v[i] = static_cast<uint8_t>(seed + i * 7 + i / kPageSize);
	return v;
}

inline bool contains(const std::string &s, const std::string &part)
{
	return s.find(part) != std::string::npos;
}

} // namespace memfed::store_test
