// memfedctl region create|rm|ls|show|grant|revoke|truncate|read|write|copy
#include <cerrno>
#include <cstdio>
#include <iostream>
#include <sstream>
#include <unistd.h>

#include "daemon/common/size.h"
#include "tools/memfedctl/commands.h"

namespace memfed::ctl {

using nlohmann::json;

namespace {

constexpr const char *kUsage = R"(usage: memfedctl region COMMAND
  create NAME SIZE [--mode OCTAL] [--length N]
                                    create a region (SIZE like 64M) on this node's module;
                                    --length: its length as a file (default SIZE; 0 for
                                    an empty file that grows up to SIZE)
  rm NAME [--force]                 delete a region and its data; a region that a
                                    process maps is busy (exit 9, naming the pids)
                                    unless --force; root on a module's node may
                                    delete another node's region there with --force
  ls                                list regions on every reachable module: all of
                                    them for root, else those you may read
  show NAME                         one region in detail, with its owner node and
                                    the grants other nodes hold
  grant NAME PEER[:UID] read|write  let a user of another node (PEER: a trusted
                                    peer's name or key; every user of it without
                                    :UID) read, or read and write, the region;
                                    only its owner may
  revoke NAME PEER[:UID]            take that grant back (from the next request on)
  truncate NAME LENGTH              set the region's length as a file (at most
                                    its size); bytes past a shorter end become zeros
  read NAME [--offset N] [--length N]   write region bytes to stdout
  write NAME [--offset N]           store stdin at the offset
  copy SRC DST [--offset N] [--to-offset N] [--length N] [--sparse]
                                    copy whole pages from SRC to DST inside the
                                    daemon (--sparse: leave all-zero pages unwritten,
                                    for a DST that is zeros there, e.g. a new region)
  clone SRC DST [--offset N] [--length N] [--mode OCTAL]
                                    make DST a copy-on-write clone of SRC on its
                                    module: no space until either side writes
  (-j: JSON output)
)";

Result<uint64_t> size_arg(const std::string &what, const std::string &v)
{
	auto s = parse_size(v);
	if (!s)
		return usage_error(what + " '" + v + "' is not a size (e.g. 4096, 64K, 1G)");
	return *s;
}

void print_region(const json &r)
{
	std::string copies;
	if (r.contains("replicas"))
		copies = "  " + std::to_string(r["in_sync"].get<unsigned>()) + "/" +
		         std::to_string(r["replicas"].get<unsigned>()) + " copies in sync" +
		         (r["degraded"].get<bool>() ? " (degraded)" : "");
	if (r.contains("clone_of"))
		copies += "  clone of " + r["clone_of"].get<std::string>();
	// The space it takes (pages written), known for regions of this node's
	// module; "-" for the others.
	std::string used = r.contains("used_bytes") ? human_size(r["used_bytes"].get<uint64_t>())
	                                            : std::string("-");
	std::printf("%-24s %8s  used %8s  file %8s  %s  owner %u mode %04o%s\n",
		    r["name"].get<std::string>().c_str(), human_size(r["size"].get<uint64_t>()).c_str(),
		    used.c_str(), human_size(r["length"].get<uint64_t>()).c_str(),
		    r["fa"].get<std::string>().c_str(), r["owner_uid"].get<unsigned>(),
		    r["mode"].get<unsigned>(), copies.c_str());
}

// The copies of a replicated region, one line each. LAG: how long it has
// been out of sync, the pages written that it could not take (an upper
// bound) and, while catching up, the pages found to differ not yet copied.
void print_copies(const json &r)
{
	std::printf("%-17s %-12s %-22s %-28s %s\n", "COPY ON MODULE", "STATE", "PROGRESS", "LAG",
	            "WHY");
	for (const auto &c : r["copies"]) {
		std::string progress;
		uint64_t to_check = c["pages_to_check"].get<uint64_t>();
		if (to_check)
			progress = std::to_string(c["pages_checked"].get<uint64_t>() * 100 / to_check) +
			           "% compared";
		if (uint64_t n = c["pages_copied"].get<uint64_t>())
			progress += (progress.empty() ? "" : ", ") + std::to_string(n) + " pages copied";
		std::string lag = "-";
		if (uint64_t ms = c.value("behind_ms", uint64_t{0})) {
			char text[32];
			std::snprintf(text, sizeof(text), "%.1f s", double(ms) / 1000.0);
			lag = text;
			if (uint64_t n = c.value("pages_missed", uint64_t{0}))
				lag += ", " + std::to_string(n) + " pages missed";
			if (uint64_t n = c.value("pages_to_copy", uint64_t{0}))
				lag += ", " + std::to_string(n) + " to copy";
		}
		std::printf("%-17s %-12s %-22s %-28s %s\n", c["module"].get<std::string>().c_str(),
		            c["state"].get<std::string>().c_str(), progress.c_str(), lag.c_str(),
		            c["why"].get<std::string>().c_str());
	}
}

// A key as shown: "name (KEY)" or "KEY".
std::string key_text(const json &j)
{
	std::string key = j["key"].get<std::string>();
	return j.contains("name") ? j["name"].get<std::string>() + " (" + key + ")" : key;
}

// The owner node and grants of region.show / region.grant.
void print_access(const json &r)
{
	if (r.contains("owner"))
		std::printf("owner node: %s uid %u\n", key_text(r["owner"]).c_str(),
		            r["owner"]["uid"].get<unsigned>());
	if (!r.contains("grants"))
		return;
	if (r["grants"].empty())
		std::printf("grants: none (other nodes get no access)\n");
	for (const auto &gr : r["grants"])
		std::printf("grant: %s %s %s\n", key_text(gr).c_str(),
		            gr["uid"].is_null() ? "every uid"
		                                : ("uid " + std::to_string(gr["uid"].get<unsigned>())).c_str(),
		            gr["rights"].get<std::string>().c_str());
}

// A reply that carries one region: printed, or its error.
int print_region_reply(const Globals &g, const Result<control::Message> &r)
{
	if (!r)
		return fail(g, r.status());
	if (g.json)
		return print_json(r->body["region"]);
	print_region(r->body["region"]);
	return 0;
}

// Bytes of region `name` from `offset` to its end (0 past the end).
Result<uint64_t> rest_of_region(control::Client &c, const std::string &name, uint64_t offset)
{
	auto r = call(c, "region.show", {{"name", name}});
	if (!r)
		return r.status();
	uint64_t size = r->body["region"]["size"].get<uint64_t>();
	return offset < size ? size - offset : 0;
}

int read_region(const Globals &g, control::Client &c, const std::string &name, uint64_t offset,
		uint64_t length)
{
	uint64_t done = 0;
	while (done < length) {
		uint64_t chunk = std::min<uint64_t>(length - done, control::kMaxData);
		auto r = call(c, "region.read", {{"name", name}, {"offset", offset + done}, {"length", chunk}});
		if (!r)
			return fail(g, r.status());
		const auto &d = r->data;
		if (d.empty())
			break;
		if (std::fwrite(d.data(), 1, d.size(), stdout) != d.size())
			return fail(g, Status::from_errno(errno, "writing to stdout"));
		done += d.size();
	}
	std::fflush(stdout);
	return 0;
}

int write_region(const Globals &g, control::Client &c, const std::string &name, uint64_t offset)
{
	std::vector<uint8_t> buf(control::kMaxData);
	uint64_t done = 0;
	while (true) {
		size_t have = 0;
		while (have < buf.size()) {
			ssize_t n = read(STDIN_FILENO, buf.data() + have, buf.size() - have);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0)
				return fail(g, Status::from_errno(errno, "reading stdin"));
			if (n == 0)
				break;
			have += size_t(n);
		}
		if (have == 0)
			break;
		control::Message m;
		m.body = {{"op", "region.write"}, {"name", name}, {"offset", offset + done}};
		m.data.assign(buf.begin(), buf.begin() + long(have));
		auto r = c.call_ok(m);
		if (!r)
			return fail(g, r.status());
		done += have;
		if (have < buf.size())
			break;
	}
	if (g.json)
		return print_json({{"ok", true}, {"written", done}});
	return 0;
}

} // namespace

int cmd_region(const Globals &g, Args &a)
{
	if (a.empty() || a.peek() == "--help" || a.peek() == "-h") {
		std::cout << kUsage;
		return a.empty() ? 2 : 0;
	}
	std::string sub = a.next();
	std::string mode_s, off_s, len_s;
	bool has_mode = a.take_flag("--mode", &mode_s);
	bool has_off = a.take_flag("--offset", &off_s);
	bool has_len = a.take_flag("--length", &len_s);
	std::string to_off_s;
	bool has_to_off = a.take_flag("--to-offset", &to_off_s);
	bool sparse = a.take_switch("--sparse");
	bool force = a.take_switch("--force");
	std::string replicas_s, replicas_min_s, on_s;
	bool has_replicas = a.take_flag("--replicas", &replicas_s);
	bool has_replicas_min = a.take_flag("--replicas-min", &replicas_min_s);
	bool has_on = a.take_flag("--on", &on_s);
	unsigned long mode = 0600;
	if (has_mode) {
		char *end = nullptr;
		mode = std::strtoul(mode_s.c_str(), &end, 8);
		if (mode_s.empty() || *end || mode > 0777)
			return fail(g, usage_error("mode '" + mode_s + "' is not octal permission bits like 0600"));
	}
	uint64_t to_offset = 0;
	if (has_to_off) {
		auto v = size_arg("to-offset", to_off_s);
		if (!v)
			return fail(g, v.status());
		to_offset = *v;
	}
	uint64_t offset = 0, length = 0;
	if (has_off) {
		auto v = size_arg("offset", off_s);
		if (!v)
			return fail(g, v.status());
		offset = *v;
	}
	if (has_len) {
		auto v = size_arg("length", len_s);
		if (!v)
			return fail(g, v.status());
		length = *v;
	}

	Status st;
	if (sub == "create")
		st = a.expect_positional(2, "memfedctl region create NAME SIZE [--mode OCTAL] [--length N] "
		                            "[--replicas K] [--replicas-min M] [--on MODULE,...]");
	else if (sub == "copy")
		st = a.expect_positional(2, "memfedctl region copy SRC DST [--offset N] [--to-offset N] "
					    "[--length N] [--sparse]");
	else if (sub == "clone")
		st = a.expect_positional(2, "memfedctl region clone SRC DST [--offset N] [--length N] "
					    "[--mode OCTAL]");
	else if (sub == "truncate")
		st = a.expect_positional(2, "memfedctl region truncate NAME LENGTH");
	else if (sub == "rm")
		st = a.expect_positional(1, "memfedctl region rm NAME [--force]");
	else if (sub == "show" || sub == "write" || sub == "read")
		st = a.expect_positional(1, ("memfedctl region " + sub + " NAME").c_str());
	else if (sub == "ls")
		st = a.expect_positional(0, "memfedctl region ls");
	else if (sub == "grant")
		st = a.expect_positional(3, "memfedctl region grant NAME PEER[:UID] read|write");
	else if (sub == "revoke")
		st = a.expect_positional(2, "memfedctl region revoke NAME PEER[:UID]");
	else
		st = usage_error("unknown region command '" + sub + "' (memfedctl region --help)");
	if (st && force && sub != "rm")
		st = usage_error("--force is an option of `memfedctl region rm` only");
	if (st && (has_replicas || has_replicas_min || has_on) && sub != "create")
		st = usage_error("--replicas, --replicas-min and --on are options of `memfedctl "
		                 "region create` only");
	if (!st)
		return fail(g, st);

	auto c = connect(g);
	if (!c)
		return fail(g, c.status());

	if (sub == "create") {
		std::string name = a.next();
		auto size = size_arg("size", a.next());
		if (!size)
			return fail(g, size.status());
		json req = {{"name", name}, {"size", *size}};
		if (has_len)
			req["length"] = length;
		if (has_mode)
			req["mode"] = mode;
		auto count = [&](const char *flag, const std::string &v) -> Result<unsigned> {
			char *end = nullptr;
			unsigned long n = std::strtoul(v.c_str(), &end, 10);
			if (v.empty() || *end || n < 1 || n > 8)
				return usage_error(std::string(flag) + " '" + v + "' is not a number from 1 to 8");
			return unsigned(n);
		};
		if (has_replicas) {
			auto n = count("--replicas", replicas_s);
			if (!n)
				return fail(g, n.status());
			req["replicas"] = *n;
		}
		if (has_replicas_min) {
			auto n = count("--replicas-min", replicas_min_s);
			if (!n)
				return fail(g, n.status());
			req["replicas_min"] = *n;
		}
		if (has_on) {
			json on = json::array();
			std::stringstream ss(on_s);
			for (std::string m; std::getline(ss, m, ',');)
				on.push_back(m);
			req["on"] = on;
		}
		auto r = call(*c, "region.create", req);
		return print_region_reply(g, r);
	}
	if (sub == "rm") {
		json req = {{"name", a.next()}};
		if (force)
			req["force"] = true;
		auto r = call(*c, "region.delete", req);
		if (!r)
			return fail(g, r.status());
		return g.json ? print_json({{"ok", true}}) : 0;
	}
	if (sub == "ls") {
		// Page by page: no number of regions outgrows a reply.
		json all = json::array();
		Status st = control::for_each_region(*c, "", [&](const json &reg) {
			if (g.json)
				all.push_back(reg);
			else
				print_region(reg);
		});
		if (!st)
			return fail(g, st);
		return g.json ? print_json(all) : 0;
	}
	if (sub == "grant" || sub == "revoke") {
		json req = {{"name", a.next()}, {"peer", a.next()}};
		if (sub == "grant")
			req["rights"] = a.next();
		auto r = call(*c, "region." + sub, req);
		if (!r)
			return fail(g, r.status());
		if (g.json)
			return print_json(r->body["region"]);
		print_access(r->body["region"]);
		return 0;
	}
	if (sub == "show") {
		auto r = call(*c, "region.show", {{"name", a.next()}});
		if (!r)
			return fail(g, r.status());
		const json &reg = r->body["region"];
		if (g.json)
			return print_json(reg);
		for (auto &[k, v] : reg.items())
			if (k != "copies" && k != "counters" && k != "owner" && k != "grants")
				std::cout << k << ": " << (v.is_string() ? v.get<std::string>() : v.dump())
				          << "\n";
		if (reg.contains("counters"))
			for (auto &[k, v] : reg["counters"].items())
				std::cout << k << ": " << v.dump() << "\n";
		print_access(reg);
		if (reg.contains("copies"))
			print_copies(reg);
		return 0;
	}
	std::string name = a.next();
	// --length's default: from --offset to the end of the region.
	auto default_length = [&]() -> Status {
		if (has_len)
			return Status::ok();
		auto rest = rest_of_region(*c, name, offset);
		if (!rest)
			return rest.status();
		length = *rest;
		return Status::ok();
	};
	if (sub == "truncate") {
		auto length = size_arg("length", a.next());
		if (!length)
			return fail(g, length.status());
		auto r = call(*c, "region.truncate", {{"name", name}, {"length", *length}});
		return print_region_reply(g, r);
	}
	if (sub == "copy") {
		std::string to = a.next();
		if (Status st = default_length(); !st)
			return fail(g, st);
		auto r = call(*c, "region.copy", {{"name", name}, {"offset", offset}, {"to", to},
						  {"to_offset", to_offset}, {"length", length},
						  {"sparse", sparse}});
		if (!r)
			return fail(g, r.status());
		if (g.json)
			return print_json(r->body);
		std::printf("copied %s from '%s' to '%s' (%s written)\n",
			    human_size(r->body["copied"].get<uint64_t>()).c_str(), name.c_str(), to.c_str(),
			    human_size(r->body["written"].get<uint64_t>()).c_str());
		return 0;
	}
	if (sub == "clone") {
		std::string to = a.next();
		if (Status st = default_length(); !st)
			return fail(g, st);
		auto r = call(*c, "region.clone", {{"name", name}, {"offset", offset}, {"to", to},
						   {"length", length}, {"mode", mode}});
		return print_region_reply(g, r);
	}
	if (sub == "read") {
		if (Status st = default_length(); !st)
			return fail(g, st);
		return read_region(g, *c, name, offset, length);
	}
	return write_region(g, *c, name, offset);
}

} // namespace memfed::ctl
