// memfedctl pool format|check|info: offline operations on a pool file or
// device. They take the pool's lock like memfedd does, so they refuse to run
// on a pool a live daemon owns.
#include <iostream>

#include "daemon/common/size.h"
#include "daemon/store/pool.h"
#include "tools/memfedctl/commands.h"

namespace memfed::ctl {

using nlohmann::json;

namespace {

constexpr const char *kUsage = R"(usage: memfedctl pool COMMAND PATH
  format PATH --size SIZE [--module-id ID] [--force]
                  create (or re-create, with --force) an empty pool
  check PATH      verify header, region table, redo log and every page (fsck);
                  exit 0 when clean, 7 when damaged
  info PATH       the pool's header and usage
  (memfedd must not be running on the pool; -j: JSON output)
)";

json info_json(const PoolInfo &i)
{
	return {{"path", i.path},
		{"module", i.module.to_string()},
		{"layout_version", i.layout_version},
		{"pool_bytes", i.pool_bytes},
		{"capacity_bytes", i.capacity_bytes},
		{"used_bytes", i.used_bytes},
		{"thin", i.thin},
		{"address_bytes", i.address_bytes},
		{"reserved_bytes", i.reserved_bytes},
		{"free_bytes", i.free_bytes},
		{"address_free_bytes", i.address_free_bytes},
		{"largest_free_bytes", i.largest_free_bytes},
		{"regions", i.regions},
		{"table_slots", i.table_slots},
		{"is_pmem", i.is_pmem},
		{"data_offset", i.data_offset}};
}

} // namespace

int cmd_pool(const Globals &g, Args &a)
{
	if (a.empty() || a.peek() == "--help" || a.peek() == "-h") {
		std::cout << kUsage;
		return a.empty() ? 2 : 0;
	}
	std::string sub = a.next();
	if (sub == "format") {
		std::string size_s, id_s;
		bool has_size = a.take_flag("--size", &size_s);
		bool has_id = a.take_flag("--module-id", &id_s);
		bool force = a.take_switch("--force");
		Status st = a.expect_positional(1, "memfedctl pool format PATH --size SIZE [--module-id ID] [--force]");
		if (!st)
			return fail(g, st);
		if (!has_size)
			return fail(g, usage_error("pool format needs --size (e.g. --size 1G)"));
		PoolOptions o;
		o.path = a.next();
		auto size = parse_size(size_s);
		if (!size)
			return fail(g, usage_error("size '" + size_s + "' is not a size (e.g. 1G)"));
		o.size_bytes = *size;
		if (has_id) {
			auto id = ModuleId::parse(id_s);
			if (!id)
				return fail(g, usage_error("module ID '" + id_s + "' is not like 02:00:00:00:00:01"));
			o.module_id = *id;
		}
		if (!force && access(o.path.c_str(), F_OK) == 0) {
			auto existing = ModuleStore::inspect(o.path);
			if (existing)
				return fail(g, Status(Code::kAlreadyExists,
						      "pool " + o.path + " already holds module " +
							      existing->module.to_string() +
							      "; add --force to erase it"));
		}
		st = ModuleStore::format(o);
		if (!st)
			return fail(g, st);
		auto info = ModuleStore::inspect(o.path);
		if (!info)
			return fail(g, info.status());
		if (g.json)
			return print_json(info_json(*info));
		std::cout << "formatted " << o.path << ": module " << info->module.to_string() << ", "
			  << format_size(info->capacity_bytes) << " of data\n";
		return 0;
	}
	if (sub == "info" || sub == "check") {
		Status st = a.expect_positional(1, ("memfedctl pool " + sub + " PATH").c_str());
		if (!st)
			return fail(g, st);
		std::string path = a.next();
		if (sub == "info") {
			auto info = ModuleStore::inspect(path);
			if (!info)
				return fail(g, info.status());
			if (g.json)
				return print_json(info_json(*info));
			std::cout << "pool " << path << "\n  module " << info->module.to_string()
				  << "\n  layout version " << info->layout_version << "\n  capacity "
				  << format_size(info->capacity_bytes) << " (" << info->capacity_bytes
				  << " bytes), " << (info->thin ? "thin" : "thick") << "\n  used "
				  << info->used_bytes << " (pages written), free " << info->free_bytes
				  << "\n  address space " << info->address_bytes << ": "
				  << info->reserved_bytes << " in regions, free "
				  << info->address_free_bytes << ", largest free "
				  << info->largest_free_bytes << "\n  regions "
				  << info->regions << " of at most " << info->table_slots << "\n";
			return 0;
		}
		auto rep = ModuleStore::check(path);
		if (!rep)
			return fail(g, rep.status());
		if (g.json) {
			print_json({{"clean", rep->clean},
				    {"regions_checked", rep->regions_checked},
				    {"pages_checked", rep->pages_checked},
				    {"pages_written", rep->pages_written},
				    {"bad_pages", rep->bad_pages},
				    {"log_records", rep->log_records},
				    {"problems", rep->problems}});
		} else {
			std::cout << (rep->clean ? "clean" : "DAMAGED") << ": " << rep->regions_checked
				  << " regions, " << rep->pages_checked << " pages checked ("
				  << rep->pages_written << " written), " << rep->bad_pages
				  << " bad, " << rep->log_records << " log records\n";
			for (const auto &p : rep->problems)
				std::cout << "  " << p << "\n";
		}
		return rep->clean ? 0 : int(Code::kCorrupt);
	}
	return fail(g, usage_error("unknown pool command '" + sub + "' (memfedctl pool --help)"));
}

} // namespace memfed::ctl
