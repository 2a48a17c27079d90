// memfedctl quota: the regions and bytes the calling user holds on this node's
// module and the quota that limits them (root: every uid that holds any, and
// every other node, by key, that holds regions here, with its node quota).
#include <cstdio>
#include <iostream>

#include "daemon/common/size.h"
#include "tools/memfedctl/commands.h"

namespace memfed::ctl
{

using nlohmann::json;

namespace
{

// A limit as printed: "none" for null.
std::string limit_text(const json &v, bool bytes)
{
	if (v.is_null())
		return "none";
	return bytes ? human_size(v.get<uint64_t>()) : std::to_string(v.get<uint64_t>());
}

// A configured key as printed: "50%", 8M, 100, null.
std::string setting_text(const json &v, bool bytes)
{
	if (bytes && v.is_number_unsigned())
		return format_size(v.get<uint64_t>());
	return v.dump();
}

} // namespace

int cmd_quota(const Globals &g, Args &a)
{
	if (a.take_switch("--help") || a.take_switch("-h")) {
		std::cout << "usage: memfedctl quota\n  regions and bytes each uid holds on this "
		             "node's module, and its quota; for root also each other node "
		             "(by key) and its node quota (-j: JSON)\n";
		return 0;
	}
	Status st = a.expect_positional(0, "memfedctl quota");
	if (!st)
		return fail(g, st);
	auto r = request(g, "quota.show");
	if (!r)
		return fail(g, r.status());
	const json &b = r->body;
	if (g.json)
		return print_json(b);
	if (b["module"].is_null()) {
		std::printf("this node has no module: a region counts against the quota of the "
		            "module that holds it (memfedctl module ls)\n");
		return 0;
	}
	const json &c = b["config"];
	std::printf("module %s: %s pool, %llu region slots; quota.uid_bytes %s, "
	            "quota.uid_regions %s%s\n",
	            b["module"].get<std::string>().c_str(),
	            human_size(b["capacity_bytes"].get<uint64_t>()).c_str(),
	            (unsigned long long)b["table_slots"].get<uint64_t>(),
	            setting_text(c["uid_bytes"], true).c_str(),
	            setting_text(c["uid_regions"], false).c_str(),
	            c["root_exempt"].get<bool>() ? ", root exempt" : "");
	std::printf("%-10s %8s %8s %10s %10s\n", "UID", "REGIONS", "LIMIT", "BYTES", "LIMIT");
	for (const auto &u : b["uids"]) {
		std::printf("%-10u %8u %8s %10s %10s%s\n", u["uid"].get<unsigned>(),
		            u["regions"].get<unsigned>(),
		            limit_text(u["regions_limit"], false).c_str(),
		            human_size(u["bytes"].get<uint64_t>()).c_str(),
		            limit_text(u["bytes_limit"], true).c_str(),
		            u["exempt"].get<bool>() ? "  (exempt)" : "");
	}
	if (!b.contains("nodes") || b["nodes"].empty())
		return 0;
	std::printf("other nodes: quota.node_bytes %s, quota.node_regions %s\n",
	            setting_text(c["node_bytes"], true).c_str(),
	            setting_text(c["node_regions"], false).c_str());
	std::printf("%-44s %8s %8s %10s %10s  %s\n", "NODE KEY", "REGIONS", "LIMIT", "BYTES",
	            "LIMIT", "NAME");
	for (const auto &n : b["nodes"])
		std::printf("%-44s %8u %8s %10s %10s  %s\n", n["key"].get<std::string>().c_str(),
		            n["regions"].get<unsigned>(),
		            limit_text(n["regions_limit"], false).c_str(),
		            human_size(n["bytes"].get<uint64_t>()).c_str(),
		            limit_text(n["bytes_limit"], true).c_str(),
		            n.value("name", std::string()).c_str());
	return 0;
}

} // namespace memfed::ctl
