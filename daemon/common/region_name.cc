#include "daemon/common/region_name.h"

#include <string>

namespace memfed
{

Status check_region_name(std::string_view name)
{
	std::string n(name);
	if (name.empty())
		return Status(Code::kInvalidArgument, "region name is empty");
	if (name.size() > kMaxRegionNameLen)
		return Status(Code::kInvalidArgument,
		              "region name '" + n + "' is " + std::to_string(name.size()) +
		                      " bytes; the limit is " + std::to_string(kMaxRegionNameLen));
	if (name[0] == '.' || name[0] == '-')
		return Status(Code::kInvalidArgument,
		              "region name '" + n + "' must not start with '.' or '-'");
	for (char c : name) {
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
		if (!ok)
			return Status(Code::kInvalidArgument,
			              "region name '" + n +
			                      "' has a character outside [A-Za-z0-9._-]");
	}
	return Status::ok();
}

} // namespace memfed
