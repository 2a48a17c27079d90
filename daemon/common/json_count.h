// Lenient readers for the counters of a stats reply ("stats", "pager.stats"),
// as the metrics endpoint and memfedctl's plots read them: a key that is
// missing or holds another type reads as 0 or "", so an older or newer
// daemon's reply still draws and scrapes. Not for validating requests: the
// control ops use their own readers that name a bad field.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

namespace memfed
{

// A non-negative integer, else 0.
inline uint64_t json_count(const nlohmann::json &v)
{
	if (v.is_number_unsigned())
		return v.get<uint64_t>();
	return v.is_number_integer() && v.get<int64_t>() > 0 ? uint64_t(v.get<int64_t>()) : 0;
}

inline uint64_t json_count(const nlohmann::json &j, const char *key)
{
	auto it = j.find(key);
	return it != j.end() ? json_count(*it) : 0;
}

inline std::string json_string(const nlohmann::json &j, const char *key)
{
	auto it = j.find(key);
	return it != j.end() && it->is_string() ? it->get<std::string>() : "";
}

} // namespace memfed
