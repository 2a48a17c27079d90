// Quota limits: parsing, resolving against a module, and the admission check
// with its message (see quota.h).
#include "daemon/service/quota.h"

#include "daemon/common/size.h"

namespace memfed
{

using nlohmann::json;

uint64_t QuotaLimit::resolve(uint64_t whole) const
{
	switch (kind) {
	case Kind::kNone:
		return kNoLimit;
	case Kind::kAmount:
		return value;
	case Kind::kPercent:
		// No overflow: whole is at most a pool's bytes, well below 2^57.
		return whole / 100 * value + whole % 100 * value / 100;
	}
	return kNoLimit;
}

json QuotaLimit::to_json() const
{
	switch (kind) {
	case Kind::kNone:
		return nullptr;
	case Kind::kAmount:
		return value;
	case Kind::kPercent:
		return std::to_string(value) + "%";
	}
	return nullptr;
}

Status parse_quota_limit(const std::string &origin, const std::string &key, const json &v,
                         bool bytes, QuotaLimit *out)
{
	auto bad = [&] {
		return Status(Code::kInvalidArgument,
		              origin + ": key \"" + key + "\" must be " +
		                      (bytes ? "a size (bytes, or a string like \"512M\")"
		                             : "a number of regions") +
		                      ", a percentage like \"50%\" of the module's " +
		                      (bytes ? "pool" : "region table") + ", or null (no limit)");
	};
	if (v.is_null()) {
		*out = QuotaLimit::none();
		return Status::ok();
	}
	if (v.is_number_integer() && v.get<int64_t>() >= 0) {
		*out = QuotaLimit::amount(v.get<uint64_t>());
		return Status::ok();
	}
	if (!v.is_string())
		return bad();
	std::string s = v.get<std::string>();
	if (!s.empty() && s.back() == '%') {
		std::string digits = s.substr(0, s.size() - 1);
		if (digits.empty() || digits.size() > 3 ||
		    digits.find_first_not_of("0123456789") != std::string::npos)
			return bad();
		uint64_t p = std::stoull(digits);
		if (p < 1 || p > 100)
			return Status(Code::kInvalidArgument, origin + ": key \"" + key +
			                                              "\": percentage '" + s +
			                                              "' is not from 1% to 100%");
		*out = QuotaLimit::percent(p);
		return Status::ok();
	}
	if (bytes) {
		if (auto n = parse_size(s)) {
			*out = QuotaLimit::amount(*n);
			return Status::ok();
		}
	}
	return bad();
}

UidLimits uid_limits(const QuotaConfig &q, uint32_t uid, const ModuleSize &size)
{
	UidLimits l;
	if (uid == 0 && q.root_exempt) {
		l.exempt = true;
		return l;
	}
	l.bytes = q.uid_bytes.resolve(size.capacity_bytes);
	l.regions = q.uid_regions.resolve(size.table_slots);
	return l;
}

namespace
{

// How a limit was set, as the config file could say it, for the message:
// "\"50%\" of the module's 1G pool", "\"8M\"", "3".
std::string setting(const QuotaLimit &l, bool bytes, const std::string &of)
{
	if (bytes && l.kind == QuotaLimit::Kind::kAmount)
		return json(format_size(l.value)).dump(); // quoted, as the file writes it
	std::string s = l.to_json().dump();
	return l.kind == QuotaLimit::Kind::kPercent ? s + " of " + of : s;
}

std::string regions_text(uint64_t n)
{
	return std::to_string(n) + (n == 1 ? " region" : " regions");
}

} // namespace

namespace
{

// The check both quotas share: `who` (named in the message) holding `usage`
// may take one more region of `bytes` within `regions_limit` / `bytes_limit`
// (set from `regions_key` / `bytes_key` of the config).
Status admit(const QuotaLimit &regions_set, uint64_t regions_limit, const char *regions_key,
             const QuotaLimit &bytes_set, uint64_t bytes_limit, const char *bytes_key,
             const std::string &who, const OwnerUsage &usage, const std::string &name,
             uint64_t bytes, const std::string &module, const ModuleSize &size,
             const std::string &config_path)
{
	const std::string file = config_path.empty() ? "/etc/memfed/memfedd.json" : config_path;
	const std::string holds = who + " holds " + regions_text(usage.regions) + " of " +
	                          format_size(usage.bytes) + " on module " + module;
	const std::string fix = "; delete regions it no longer needs (memfedctl quota shows "
	                        "usage and limits), or raise ";
	if (regions_limit != kNoLimit && uint64_t{usage.regions} + 1 > regions_limit)
		return Status(Code::kQuota,
		              "cannot create region '" + name + "': " + holds +
		                      ", and its quota is " + regions_text(regions_limit) + " (\"" +
		                      regions_key + "\": " +
		                      setting(regions_set, false,
		                              "the module's " + std::to_string(size.table_slots) +
		                                      "-region table") +
		                      ")" + fix + "\"" + regions_key + "\" in " + file);
	if (bytes_limit != kNoLimit && (bytes > bytes_limit || usage.bytes > bytes_limit - bytes))
		return Status(Code::kQuota,
		              "cannot create region '" + name + "' of " + format_size(bytes) +
		                      ": " + holds + ", and its quota is " +
		                      format_size(bytes_limit) + " (\"" + bytes_key + "\": " +
		                      setting(bytes_set, true,
		                              "the module's " + format_size(size.capacity_bytes) +
		                                      " pool") +
		                      ")" + fix + "\"" + bytes_key + "\" in " + file);
	return Status::ok();
}

} // namespace

Status admit_region(const QuotaConfig &q, uint32_t uid, const OwnerUsage &usage,
                    const std::string &name, uint64_t bytes, const std::string &module,
                    const ModuleSize &size, const std::string &config_path)
{
	UidLimits l = uid_limits(q, uid, size);
	return admit(q.uid_regions, l.regions, "quota.uid_regions", q.uid_bytes, l.bytes,
	             "quota.uid_bytes", "uid " + std::to_string(uid), usage, name, bytes, module,
	             size, config_path);
}

NodeLimits node_limits(const QuotaConfig &q, const ModuleSize &size)
{
	return {q.node_bytes.resolve(size.capacity_bytes),
	        q.node_regions.resolve(size.table_slots)};
}

Status admit_node_region(const QuotaConfig &q, const std::string &node, const OwnerUsage &usage,
                         const std::string &name, uint64_t bytes, const std::string &module,
                         const ModuleSize &size, const std::string &config_path)
{
	NodeLimits l = node_limits(q, size);
	return admit(q.node_regions, l.regions, "quota.node_regions", q.node_bytes, l.bytes,
	             "quota.node_bytes", "node " + node, usage, name, bytes, module, size,
	             config_path);
}

Status admit_write(const QuotaConfig &q, const RegionInfo &r, const std::string &node,
                   const OwnerUsage &usage, uint64_t more_bytes, const std::string &module,
                   const ModuleSize &size, const std::string &config_path)
{
	const bool local = is_zero_key(r.owner_key);
	const uint64_t limit =
	        local ? uid_limits(q, r.owner_uid, size).bytes : node_limits(q, size).bytes;
	if (limit == kNoLimit || (more_bytes <= limit && usage.bytes <= limit - more_bytes))
		return Status::ok();
	const char *key = local ? "quota.uid_bytes" : "quota.node_bytes";
	const std::string who = local ? "uid " + std::to_string(r.owner_uid) : "node " + node;
	const std::string file = config_path.empty() ? "/etc/memfed/memfedd.json" : config_path;
	return Status(
	        Code::kQuota,
	        "cannot write " + format_size(more_bytes) + " of new pages to region '" + r.name +
	                "': " + who + " has written " + format_size(usage.bytes) + " on module " +
	                module + ", and its quota is " + format_size(limit) + " (\"" + key +
	                "\": " +
	                setting(local ? q.uid_bytes : q.node_bytes, true,
	                        "the module's " + format_size(size.capacity_bytes) + " pool") +
	                "); delete regions it no longer needs (memfedctl quota shows "
	                "usage and limits), or raise \"" +
	                key + "\" in " + file);
}

} // namespace memfed
