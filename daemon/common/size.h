// Byte sizes as people write them: "4096", "64K", "512M", "1G", "2T"
// (powers of 1024; an optional trailing "B"/"iB" is accepted). Used by config,
// memfedctl and the preload shim alike.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace memfed {

// nullopt on garbage, a missing number or overflow.
std::optional<uint64_t> parse_size(std::string_view text);
// The shortest exact form: 1073741824 -> "1G", 1536 -> "1536".
std::string format_size(uint64_t bytes);
// Rounded for people reading a table: 1068367872 -> "1018.9M", 4096 -> "4K".
std::string human_size(uint64_t bytes);

} // namespace memfed
