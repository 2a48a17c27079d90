// memfedctl status | module ls | stats [--plot FILE.png] | top
#include <chrono>
#include <csignal>
#include <cstdio>
#include <iostream>
#include <thread>
#include <unistd.h>

#include "daemon/common/size.h"
#include "tools/memfedctl/commands.h"
#include "tools/memfedctl/plot.h"

namespace memfed::ctl {

using nlohmann::json;

namespace {

std::string str_or(const json &j, const char *key, const char *dflt = "-")
{
	auto it = j.find(key);
	if (it == j.end() || it->is_null())
		return dflt;
	return it->is_string() ? it->get<std::string>() : it->dump();
}

void print_modules(const json &mods)
{
	std::printf("%-17s %-33s %-5s %10s %10s %4s %6s %s\n", "MODULE", "ENDPOINT", "STATE",
		    "CAPACITY", "FREE", "HOPS", "METRIC", "TRANSPORT");
	for (const auto &m : mods) {
		std::printf("%-17s %-33s %-5s %10s %10s %4u %6u %s\n", str_or(m, "module").c_str(),
		            m.value("local", false) ? "(local)" : str_or(m, "endpoint").c_str(),
		            m.contains("conflict")        ? "DUP"
		            : m.value("reachable", false) ? "up"
		                                          : "down",
		            human_size(m.value("capacity_bytes", uint64_t{0})).c_str(),
		            human_size(m.value("free_bytes", uint64_t{0})).c_str(),
		            m.value("hops", 0u), m.value("metric", 0u),
		            str_or(m, "transport").c_str());
		if (m.contains("transport_why"))
			std::printf("  rdma: %s\n", str_or(m, "transport_why").c_str());
		if (m.contains("key"))
			std::printf("  key: %s%s%s%s\n", str_or(m, "key_name").c_str(),
			            m.contains("key_name") ? " (" : "", str_or(m, "key").c_str(),
			            m.contains("key_name") ? ")" : "");
		if (m.contains("conflict"))
			std::printf("  refused key: %s\n",
			            m["conflict"]["keys"].at(1).get<std::string>().c_str());
		if (m.contains("error"))
			std::printf("  why: %s\n", str_or(m, "error").c_str());
	}
}

volatile sig_atomic_t g_interrupted = 0;

} // namespace

int cmd_status(const Globals &g, Args &a)
{
	if (a.take_switch("--help") || a.take_switch("-h")) {
		std::cout << "usage: memfedctl status\n  the daemon's roles, module, pool, peers and "
			     "table source (-j: JSON)\n";
		return 0;
	}
	Status st = a.expect_positional(0, "memfedctl status");
	if (!st)
		return fail(g, st);
	auto r = request(g, "status");
	if (!r)
		return fail(g, r.status());
	json &b = r->body;
	b.erase("ok");
	if (g.json)
		return print_json(b);
	std::cout << "memfedd " << str_or(b, "version") << " pid " << str_or(b, "pid") << "\n";
	std::cout << "  roles:   " << b.value("roles", json::array()).dump() << "\n";
	std::cout << "  module:  " << str_or(b, "module", "(none: pager only)") << "\n";
	std::cout << "  listen:  " << str_or(b, "listen") << "\n";
	std::cout << "  metrics: "
		  << (b.value("metrics", json()).is_string()
			      ? "http://" + b["metrics"].get<std::string>() + "/metrics"
			      : std::string("(off; memfedd --metrics HOST:PORT)"))
		  << "\n";
	std::cout << "  socket:  " << str_or(b, "socket") << "\n";
	std::cout << "  tables:  " << str_or(b, "table_source") << "\n";
	if (b.contains("pool")) {
		const json &p = b["pool"];
		std::cout << "  pool:    " << str_or(p, "path") << ", "
			  << human_size(p.value("capacity_bytes", uint64_t{0})) << " capacity, "
			  << human_size(p.value("used_bytes", uint64_t{0})) << " used in "
			  << p.value("regions", 0u) << " regions\n";
	}
	std::cout << "\n";
	print_modules(b.value("modules", json::array()));
	return 0;
}

int cmd_module(const Globals &g, Args &a)
{
	if (a.empty() || a.peek() == "--help" || a.peek() == "-h") {
		std::cout << "usage: memfedctl module ls\n  every module this node knows (-j: JSON)\n";
		return a.empty() ? 2 : 0;
	}
	std::string sub = a.next();
	if (sub != "ls")
		return fail(g, usage_error("unknown module command '" + sub + "' (memfedctl module --help)"));
	Status st = a.expect_positional(0, "memfedctl module ls");
	if (!st)
		return fail(g, st);
	auto r = request(g, "module.list");
	if (!r)
		return fail(g, r.status());
	if (g.json)
		return print_json(r->body["modules"]);
	print_modules(r->body["modules"]);
	return 0;
}

int cmd_stats(const Globals &g, Args &a)
{
	if (a.take_switch("--help") || a.take_switch("-h")) {
		std::cout << "usage: memfedctl stats [--plot FILE.png]\n  module counters and pager counters "
			     "per region and per process (-j: JSON)\n"
			     "  --plot FILE.png  draw each region's fault-latency histogram and resident\n"
			     "                   and dirty memory instead (needs gnuplot)\n";
		return 0;
	}
	std::string png;
	bool plot = a.take_flag("--plot", &png);
	if (!plot && a.take_switch("--plot"))
		return fail(g, usage_error("--plot needs a file name, e.g. --plot stats.png"));
	Status st = a.expect_positional(0, "memfedctl stats [--plot FILE.png]");
	if (!st)
		return fail(g, st);
	auto c = connect(g);
	if (!c)
		return fail(g, c.status());
	auto r = stats_all(*c);
	if (!r)
		return fail(g, r.status());
	json &b = *r;
	if (plot) {
		auto script = stats_plot_script(b, png);
		if (!script)
			return fail(g, script.status());
		if (!(st = run_gnuplot(*script, png)))
			return fail(g, st);
		if (g.json)
			return print_json({{"plot", png}});
		std::cout << "wrote " << png << "\n";
		return 0;
	}
	if (g.json)
		return print_json(b);
	if (b.contains("module"))
		for (auto &[k, v] : b["module"].items()) {
			if (!v.is_object()) {
				std::cout << "module." << k << " " << v.dump() << "\n";
				continue;
			}
			for (auto &[ck, cv] : v.items()) // module.refusals.read 3
				std::cout << "module." << k << "." << ck << " " << cv.dump() << "\n";
		}
	if (b.contains("rdma"))
		for (auto &[k, v] : b["rdma"].items()) // rdma.reads 1200
			std::cout << "rdma." << k << " " << v.dump() << "\n";
	if (b.contains("pager")) {
		for (auto &[k, v] : b["pager"].items()) {
			if (v.is_array()) {
				for (const auto &e : v) {
					std::string id = e.contains("region") ? str_or(e, "region")
									      : str_or(e, "pid");
					for (auto &[ck, cv] : e.items())
						std::cout << "pager." << k << "." << id << "." << ck << " "
							  << cv.dump() << "\n";
				}
			} else {
				std::cout << "pager." << k << " " << v.dump() << "\n";
			}
		}
	}
	return 0;
}

// A live view: one screen refreshed every --interval seconds; rates are the
// difference between two samples. --iterations N stops after N screens.
int cmd_top(const Globals &g, Args &a)
{
	if (a.take_switch("--help") || a.take_switch("-h")) {
		std::cout << "usage: memfedctl top [--interval SECONDS] [--iterations N]\n"
			     "  live per-region pager view; Ctrl-C quits\n";
		return 0;
	}
	std::string iv_s = "1", it_s = "0";
	a.take_flag("--interval", &iv_s);
	a.take_flag("--iterations", &it_s);
	Status st = a.expect_positional(0, "memfedctl top [--interval SECONDS] [--iterations N]");
	if (!st)
		return fail(g, st);
	double interval = std::atof(iv_s.c_str());
	long iterations = std::atol(it_s.c_str());
	if (interval <= 0)
		return fail(g, usage_error("--interval must be a positive number of seconds"));
	auto c = connect(g);
	if (!c)
		return fail(g, c.status());
	std::signal(SIGINT, [](int) { g_interrupted = 1; });
	bool tty = isatty(STDOUT_FILENO);
	json prev;
	for (long n = 0; !g_interrupted && (iterations == 0 || n < iterations); n++) {
		auto r = stats_all(*c);
		if (!r)
			return fail(g, r.status());
		json regions = r->contains("pager") ? (*r)["pager"].value("regions", json::array())
						     : json::array();
		if (tty)
			std::printf("\033[H\033[2J");
		std::printf("memfed top  (every %.1fs)\n\n", interval);
		std::printf("%-20s %9s %9s %9s %9s %9s %9s %9s\n", "REGION", "FAULTS/s", "PREF.HIT",
			    "EVICT/s", "WBACK/s", "RESIDENT", "DIRTY", "P50us");
		for (const auto &reg : regions) {
			std::string name = str_or(reg, "region");
			auto rate = [&](const char *k) {
				uint64_t now = reg.value(k, uint64_t{0}), before = 0;
				if (prev.is_array())
					for (const auto &p : prev)
						if (str_or(p, "region") == name)
							before = p.value(k, uint64_t{0});
				return double(now - std::min(now, before)) / interval;
			};
			std::printf("%-20s %9.0f %9lu %9.0f %9.0f %9s %9s %9s\n", name.c_str(), rate("faults"),
				    (unsigned long)reg.value("prefetch_hits", uint64_t{0}), rate("evictions"),
				    rate("writebacks"),
				    human_size(reg.value("resident_pages", uint64_t{0}) * 4096).c_str(),
				    human_size(reg.value("dirty_pages", uint64_t{0}) * 4096).c_str(),
				    str_or(reg, "fetch_p50_us").c_str());
		}
		std::fflush(stdout);
		prev = regions;
		if (iterations == 0 || n + 1 < iterations)
			std::this_thread::sleep_for(std::chrono::duration<double>(interval));
	}
	return 0;
}

} // namespace memfed::ctl
