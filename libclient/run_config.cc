#include "libclient/run_config.h"

#include <nlohmann/json.hpp>

#include <vector>

namespace memfed::client
{

using nlohmann::json;

std::string RunConfig::to_json() const
{
	json j = {{"socket", socket},           {"run_id", run_id}, {"heap_size", heap_size},
	          {"heap_budget", heap_budget}, {"prefix", prefix}, {"maps", maps}};
	if (soft_grace_ms)
		j["soft_grace_ms"] = soft_grace_ms;
	return j.dump();
}

Result<RunConfig> RunConfig::from_json(const std::string &text)
{
	json j = json::parse(text, nullptr, /*allow_exceptions=*/false);
	if (j.is_discarded() || !j.is_object())
		return Status(Code::kInvalidArgument,
		              std::string(kRunEnv) +
		                      " is not a JSON object (set it with memfedctl run)");
	RunConfig c;
	auto str = [&j](const char *k, std::string *out) {
		auto it = j.find(k);
		if (it == j.end())
			return true;
		if (!it->is_string())
			return false;
		*out = it->get<std::string>();
		return true;
	};
	auto num = [&j](const char *k, uint64_t *out) {
		auto it = j.find(k);
		if (it == j.end())
			return true;
		if (!it->is_number_unsigned())
			return false;
		*out = it->get<uint64_t>();
		return true;
	};
	if (!str("socket", &c.socket) || !str("run_id", &c.run_id) || !str("prefix", &c.prefix) ||
	    !num("heap_size", &c.heap_size) || !num("heap_budget", &c.heap_budget) ||
	    !num("soft_grace_ms", &c.soft_grace_ms))
		return Status(Code::kInvalidArgument, std::string(kRunEnv) +
		                                              ": socket, run_id and prefix must be "
		                                              "strings, heap_size, heap_budget and "
		                                              "soft_grace_ms numbers");
	auto maps = j.find("maps");
	if (maps != j.end()) {
		if (!maps->is_object())
			return Status(Code::kInvalidArgument,
			              std::string(kRunEnv) + ": \"maps\" must be an object");
		for (auto it = maps->begin(); it != maps->end(); ++it) {
			if (!it.value().is_string() || it.key().empty() || it.key()[0] != '/')
				return Status(Code::kInvalidArgument,
				              std::string(kRunEnv) + ": map entry '" + it.key() +
				                      "' needs an absolute path and a region name");
			c.maps[normalize_path(it.key())] = it.value().get<std::string>();
		}
	}
	if (!c.prefix.empty())
		c.prefix = normalize_path(c.prefix);
	if (c.run_id.empty() || !valid_region_name(c.run_id))
		return Status(Code::kInvalidArgument,
		              std::string(kRunEnv) + ": run_id must be a short [A-Za-z0-9] tag");
	return c;
}

std::string normalize_path(const std::string &abs)
{
	std::vector<std::string> parts;
	size_t i = 0;
	while (i <= abs.size()) {
		size_t j = abs.find('/', i);
		if (j == std::string::npos)
			j = abs.size();
		std::string p = abs.substr(i, j - i);
		if (p == "..") {
			if (!parts.empty())
				parts.pop_back();
		} else if (!p.empty() && p != ".")
			parts.push_back(p);
		i = j + 1;
	}
	std::string out;
	for (const auto &p : parts)
		out += "/" + p;
	return out.empty() ? "/" : out;
}

std::optional<std::string> RunConfig::region_for(const std::string &path,
                                                 const std::string &cwd) const
{
	if (path.empty())
		return std::nullopt;
	std::string abs = normalize_path(path[0] == '/' ? path : cwd + "/" + path);
	auto it = maps.find(abs);
	if (it != maps.end())
		return it->second;
	if (prefix.empty() || prefix == "/")
		return std::nullopt;
	if (abs.size() <= prefix.size() + 1 || abs.compare(0, prefix.size(), prefix) != 0 ||
	    abs[prefix.size()] != '/')
		return std::nullopt;
	std::string name = abs.substr(prefix.size() + 1);
	if (!valid_region_name(name))
		return std::nullopt;
	return name;
}

} // namespace memfed::client
