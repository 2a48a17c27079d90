// Region names, one rule everywhere (wire, store, control, client library):
// 1 to 63 bytes of [A-Za-z0-9._-], not starting with '.' or '-'.
#pragma once

#include <cstddef>
#include <string_view>

#include "daemon/common/status.h"

namespace memfed
{

constexpr size_t kMaxRegionNameLen = 63;

// Ok, or kInvalidArgument naming the name and the rule it breaks.
Status check_region_name(std::string_view name);

inline bool valid_region_name(std::string_view name)
{
	return check_region_name(name).is_ok();
}

} // namespace memfed
