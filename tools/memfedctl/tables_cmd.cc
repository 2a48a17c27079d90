// memfedctl addr | window ls | route ls | watch: the federation's tables.
//
// They are read from memfed.ko (sysfs/netlink) when it is loaded, else from
// the daemon's control socket; every command says which source it used
// ("source" in -j output, a "# source:" line otherwise).
#include <cinttypes>
#include <csignal>
#include <functional>
#include <arpa/inet.h>
#include <unistd.h>
#include <cstdio>
#include <iostream>

#include "daemon/common/size.h"
#include "daemon/kmodlink/kmodlink.h"
#include "tools/memfedctl/commands.h"

namespace memfed::ctl {

using nlohmann::json;

namespace {

constexpr const char *kKmodSource = "memfed.ko";
constexpr const char *kDaemonSource = "memfedd";

json window_json(const kmod::WindowEntry &w)
{
	return {{"index", w.index}, {"eva", w.eva},   {"fa", w.fa.to_string()}, {"length", w.length},
		{"pid", w.pid},	    {"addr", w.addr}};
}

json module_json(const kmod::ModuleEntry &m)
{
	return {{"module", m.id.to_string()},
		{"state", kmod::module_state_name(m.state)},
		{"capacity_bytes", m.capacity},
		{"endpoint", m.endpoint},
		{"local", (m.flags & kmod::kModuleLocal) != 0},
		{"reason", m.reason}};
}

json route_json(const kmod::RouteEntry &r)
{
	char via[INET6_ADDRSTRLEN] = "";
	inet_ntop(AF_INET6, &r.via, via, sizeof(via));
	return {{"dest", r.dest.to_string()},
		{"class", kmod::traffic_class_name(r.tclass)},
		{"next_hop", r.next_hop.to_string()},
		{"via", via},
		{"interface", r.dev.empty() ? "-" : r.dev},
		{"metric", r.metric},
		{"hops", r.hops},
		{"age_ms", r.age_ms}};
}

Result<uint64_t> parse_eva(const std::string &s)
{
	char *end = nullptr;
	errno = 0;
	uint64_t v = std::strtoull(s.c_str(), &end, 0);
	if (s.empty() || *end || errno)
		return usage_error("EVA '" + s + "' is not a number (e.g. 0x0000800000001000)");
	return v;
}

// The whole explanation of an EVA as JSON, from the kmod.
Result<json> explain_from_kmod(kmod::KmodLink &k, uint64_t eva)
{
	auto layout = k.layout();
	if (!layout)
		return layout.status();
	json j = {{"eva", eva}, {"va_bits", layout->va_bits}, {"ext_bits", layout->ext_bits}};
	uint64_t index = layout->index_of(eva), off = layout->offset_of(eva);
	j["index"] = index;
	if (index == 0) {
		j["kind"] = "local pointer";
		return j;
	}
	auto w = k.get_window(uint32_t(index));
	if (!w)
		return w.status();
	j["window"] = window_json(*w);
	if (off >= w->length)
		return Status(Code::kOutOfRange, "offset " + std::to_string(off) + " is past the end of window " +
							 std::to_string(index));
	j["offset"] = off;
	j["fa"] = FederatedAddress{w->fa.module, w->fa.offset + off}.to_string();
	auto m = k.get_module(w->fa.module);
	if (m)
		j["module"] = module_json(*m);
	auto r = k.get_route(w->fa.module, 0);
	if (r)
		j["route"] = route_json(*r);
	if (w->pid)
		j["local"] = {{"pid", w->pid}, {"addr", w->addr + off}};
	return j;
}

Result<json> explain_from_daemon(const Globals &g, uint64_t eva)
{
	auto c = connect(g);
	if (!c)
		return c.status();
	auto layout = call(*c, "window.layout");
	if (!layout)
		return layout.status();
	uint32_t va_bits = layout->body["va_bits"].get<uint32_t>();
	json j = {{"eva", eva}, {"va_bits", va_bits}, {"ext_bits", 64 - va_bits}};
	j["index"] = va_bits >= 64 ? 0 : eva >> va_bits;
	if (j["index"] == 0) {
		j["kind"] = "local pointer";
		return j;
	}
	auto w = call(*c, "window.resolve", {{"eva", eva}});
	if (!w)
		return w.status();
	json win = w->body;
	win.erase("ok");
	uint64_t off = win["offset"].get<uint64_t>();
	win.erase("offset");
	j["window"] = win;
	j["offset"] = off;
	auto fa = FederatedAddress::parse(win["fa"].get<std::string>());
	if (fa) {
		j["fa"] = FederatedAddress{fa->module, fa->offset + off}.to_string();
		auto mods = call(*c, "module.list");
		if (mods)
			for (const auto &m : mods->body["modules"])
				if (m.value("module", "") == fa->module.to_string()) {
					j["module"] = m;
					j["route"] = m.value("local", false)
							     ? json{{"next_hop", "local"}, {"hops", 0}}
							     : json{{"next_hop", m.value("module", "")},
								    {"hops", m.value("hops", 1)}};
				}
	}
	if (win["pid"].get<uint64_t>() != 0)
		j["local"] = {{"pid", win["pid"]}, {"addr", win["addr"].get<uint64_t>() + off}};
	return j;
}

void print_explanation(const json &j)
{
	std::printf("eva     0x%016" PRIx64 " (va_bits %u, extension %u bits)\n", j["eva"].get<uint64_t>(),
		    j["va_bits"].get<unsigned>(), j["ext_bits"].get<unsigned>());
	if (j.contains("kind")) {
		std::printf("        index 0: an ordinary local pointer\n");
		return;
	}
	const json &w = j["window"];
	std::printf("window  %u: %s, %s, FA %s\n", j["index"].get<unsigned>(),
		    w.value("region", std::string("(region unknown)")).c_str(),
		    human_size(w["length"].get<uint64_t>()).c_str(), w["fa"].get<std::string>().c_str());
	std::printf("offset  0x%" PRIx64 "\n", j["offset"].get<uint64_t>());
	std::printf("fa      %s\n", j.value("fa", std::string("?")).c_str());
	if (j.contains("module")) {
		const json &m = j["module"];
		std::string state = m.contains("state") ? m["state"].get<std::string>()
							: (m.value("reachable", false) ? "up" : "down");
		std::printf("module  %s, %s, %s\n", m.value("module", std::string("?")).c_str(), state.c_str(),
			    m.value("endpoint", std::string("")).c_str());
	}
	if (j.contains("route"))
		std::printf("route   next hop %s, %u hops\n",
			    j["route"].value("next_hop", std::string("?")).c_str(),
			    j["route"].value("hops", 0u));
	if (j.contains("local"))
		std::printf("local   pid %u at 0x%" PRIx64 "\n", j["local"]["pid"].get<unsigned>(),
			    j["local"]["addr"].get<uint64_t>());
	else
		std::printf("local   not mapped by any process\n");
}

// The kmod link when memfed.ko is loaded and usable, else null.
std::unique_ptr<kmod::KmodLink> open_kmod()
{
	if (!kmod::KmodLink::available())
		return nullptr;
	auto k = kmod::KmodLink::open();
	return k ? std::move(*k) : nullptr;
}

volatile sig_atomic_t g_stop = 0;

} // namespace

int cmd_addr(const Globals &g, Args &a)
{
	if (a.take_switch("--help") || a.take_switch("-h")) {
		std::cout << "usage: memfedctl addr EVA\n  explain an extended virtual address: window, "
			     "FA, module, route, local pointer\n";
		return 0;
	}
	Status st = a.expect_positional(1, "memfedctl addr EVA");
	if (!st)
		return fail(g, st);
	auto eva = parse_eva(a.next());
	if (!eva)
		return fail(g, eva.status());
	auto k = open_kmod();
	const char *source = k ? kKmodSource : kDaemonSource;
	Result<json> j = k ? explain_from_kmod(*k, *eva) : explain_from_daemon(g, *eva);
	if (!j)
		return fail(g, j.status());
	(*j)["source"] = source;
	if (g.json)
		return print_json(*j);
	std::printf("# source: %s\n", source);
	print_explanation(*j);
	return 0;
}

int cmd_window(const Globals &g, Args &a)
{
	if (a.empty() || a.peek() == "--help" || a.peek() == "-h") {
		std::cout << "usage: memfedctl window ls | open REGION\n  the node's window table; open "
			     "gives a region a window and prints its EVA (-j: JSON)\n";
		return a.empty() ? 2 : 0;
	}
	std::string sub = a.next();
	if (sub == "open") {
		Status st = a.expect_positional(1, "memfedctl window open REGION");
		if (!st)
			return fail(g, st);
		auto c = connect(g);
		if (!c)
			return fail(g, c.status());
		auto r = call(*c, "window.open", {{"region", a.next()}});
		if (!r)
			return fail(g, r.status());
		r->body.erase("ok");
		if (g.json)
			return print_json(r->body);
		std::printf("0x%016" PRIx64 "\n", r->body["eva"].get<uint64_t>());
		return 0;
	}
	Status st = sub == "ls" ? a.expect_positional(0, "memfedctl window ls")
				: usage_error("unknown window command '" + sub + "'");
	if (!st)
		return fail(g, st);
	json list = json::array();
	const char *source = kDaemonSource;
	auto k = open_kmod();
	if (k) {
		auto ws = k->windows();
		if (!ws)
			return fail(g, ws.status());
		for (const auto &w : *ws)
			list.push_back(window_json(w));
		source = kKmodSource;
	} else {
		auto r = request(g, "window.list");
		if (!r)
			return fail(g, r.status());
		list = r->body["windows"];
	}
	if (g.json)
		return print_json({{"source", source}, {"windows", list}});
	std::printf("# source: %s\n%-6s %-18s %-28s %9s %7s %s\n", source, "INDEX", "EVA", "FA", "LENGTH",
		    "PID", "ADDR");
	for (const auto &w : list)
		std::printf("%-6u 0x%016" PRIx64 " %-28s %9s %7u 0x%" PRIx64 "\n", w["index"].get<unsigned>(),
			    w["eva"].get<uint64_t>(), w["fa"].get<std::string>().c_str(),
			    human_size(w["length"].get<uint64_t>()).c_str(), w["pid"].get<unsigned>(),
			    w["addr"].get<uint64_t>());
	return 0;
}

int cmd_route(const Globals &g, Args &a)
{
	if (a.empty() || a.peek() == "--help" || a.peek() == "-h") {
		std::cout << "usage: memfedctl route ls\n  how each module is reached (-j: JSON)\n";
		return a.empty() ? 2 : 0;
	}
	std::string sub = a.next();
	Status st = sub == "ls" ? a.expect_positional(0, "memfedctl route ls")
				: usage_error("unknown route command '" + sub + "'");
	if (!st)
		return fail(g, st);
	json list = json::array();
	const char *source = kDaemonSource;
	auto k = open_kmod();
	if (k) {
		auto rs = k->routes();
		if (!rs)
			return fail(g, rs.status());
		for (const auto &r : *rs)
			list.push_back(route_json(r));
		source = kKmodSource;
	} else if (auto mr = request(g, "mesh.routes")) {
		// In a mesh: the routes babeld installed to module addresses.
		for (const auto &r : mr->body["routes"]) {
			json e = r;
			e["class"] = "all";
			list.push_back(e);
		}
	} else {
		// Static peers: the daemon's module table is the routing table and
		// every peer is a direct neighbour.
		auto r = request(g, "module.list");
		if (!r)
			return fail(g, r.status());
		for (const auto &m : r->body["modules"])
			if (!m.value("local", false))
				list.push_back({{"dest", m["module"]}, {"class", "all"}, {"next_hop", m["module"]},
						{"interface", ""}, {"metric", m["hops"]}, {"hops", m["hops"]},
						{"age_ms", 0}});
	}
	if (g.json)
		return print_json({{"source", source}, {"routes", list}});
	std::printf("# source: %s\n%-17s %-7s %-25s %-9s %6s %4s %8s\n", source, "DEST", "CLASS",
		    "NEXT HOP", "IF", "METRIC", "HOPS", "AGE");
	for (const auto &r : list)
		std::printf("%-17s %-7s %-25s %-9s %6u %4u %7.1fs\n", r["dest"].get<std::string>().c_str(),
			    r["class"].get<std::string>().c_str(), r["next_hop"].get<std::string>().c_str(),
			    r.value("interface", std::string("-")).c_str(), r["metric"].get<unsigned>(),
			    r["hops"].get<unsigned>(), double(r["age_ms"].get<uint64_t>()) / 1000);
	return 0;
}

namespace
{

// Without memfed.ko: the mesh's joins, leaves and route changes, from the
// daemon ("mesh.events"), polled five times a second.
// Follows control op `op`'s numbered events ("after", "next") until
// Ctrl-C or `want` of them, printing each with `print` (JSON with -j).
// `none` is the error when memfedd has no such events.
int watch_events(const Globals &g, const char *op, long want, const std::string &none,
		 const std::function<void(const json &)> &print)
{
	auto first = request(g, op, {{"after", UINT64_MAX}});
	if (!first)
		return fail(g, first.status().code() == Code::kNotFound
				       ? Status(Code::kUnavailable, none)
				       : first.status());
	uint64_t after = first->body.value("next", uint64_t{0});
	long seen = 0;
	std::signal(SIGINT, [](int) { g_stop = 1; });
	std::setvbuf(stdout, nullptr, _IOLBF, 0);
	while (!g_stop && (want == 0 || seen < want)) {
		auto r = request(g, op, {{"after", after}});
		if (!r)
			return fail(g, r.status());
		after = r->body.value("next", after);
		for (const auto &e : r->body["events"]) {
			if (g.json)
				std::cout << e.dump() << std::endl;
			else
				print(e);
			if (want && ++seen >= want)
				break;
		}
		if (!g_stop && (want == 0 || seen < want))
			usleep(200 * 1000);
	}
	return 0;
}

int watch_mesh(const Globals &g, long want)
{
	return watch_events(g, "mesh.events", want,
			    "nothing to watch: memfed.ko is not loaded and this node is not in a "
			    "mesh (memfedd --mesh IFACE)",
			    [](const json &e) {
				    std::printf("%-5s %s via %s %s metric %u hops %u (%s)\n",
						e.value("event", "").c_str(),
						e.value("module", "").c_str(),
						e.value("next_hop", "").c_str(),
						e.value("interface", "").c_str(), e.value("metric", 0u),
						e.value("hops", 0u), e.value("why", "").c_str());
			    });
}

// The copies of replicated regions: lost, catching up, in sync, replaced.
int watch_replicas(const Globals &g, long want)
{
	return watch_events(g, "replica.events", want, "this memfedd has no replicated regions",
			    [](const json &e) {
				    std::string was = e.value("was", "");
				    std::string why = e.value("why", "");
				    std::printf("%s %s on %s%s%s (%u of %u in sync)%s%s\n",
						e.value("region", "").c_str(),
						e.value("event", "").c_str(),
						e.value("module", "").c_str(),
						was.empty() ? "" : ", was ", was.c_str(),
						e.value("in_sync", 0u), e.value("wanted", 0u),
						why.empty() ? "" : ": ", why.c_str());
			    });
}

} // namespace

int cmd_watch(const Globals &g, Args &a)
{
	if (a.take_switch("--help") || a.take_switch("-h")) {
		std::cout << "usage: memfedctl watch [--count N] [--replicas]\n  print memfed.ko's table "
			     "changes as they happen, or without it the mesh's joins, leaves and "
			     "route moves; with --replicas the copies of replicated regions going "
			     "lost, catching up, in sync, replaced or dropped (Ctrl-C stops)\n";
		return 0;
	}
	std::string count_s = "0";
	a.take_flag("--count", &count_s);
	bool replicas = a.take_switch("--replicas");
	Status st = a.expect_positional(0, "memfedctl watch [--count N] [--replicas]");
	if (!st)
		return fail(g, st);
	long want = std::atol(count_s.c_str()), seen = 0;
	if (replicas)
		return watch_replicas(g, want);
	if (!kmod::KmodLink::available())
		return watch_mesh(g, want);
	auto w = kmod::KmodWatch::open();
	if (!w)
		return fail(g, w.status());
	std::signal(SIGINT, [](int) { g_stop = 1; });
	std::setvbuf(stdout, nullptr, _IOLBF, 0);
	while (!g_stop && (want == 0 || seen < want)) {
		auto evs = (*w)->read(500);
		if (!evs)
			return fail(g, evs.status());
		for (const auto &e : *evs) {
			json j = {{"event", kmod::event_kind_name(e.kind)}};
			using K = kmod::Event::Kind;
			if (e.kind == K::kModuleSet || e.kind == K::kModuleDel)
				j["module"] = module_json(e.module);
			else if (e.kind == K::kRouteSet || e.kind == K::kRouteDel)
				j["route"] = route_json(e.route);
			else if (e.kind == K::kWindowSet || e.kind == K::kWindowDel)
				j["window"] = window_json(e.window);
			if (g.json) {
				std::cout << j.dump() << std::endl;
			} else {
				std::string what = j.size() > 1 ? std::next(j.begin()).value().dump() : "";
				std::cout << j["event"].get<std::string>() << " " << what << std::endl;
			}
			if (want && ++seen >= want)
				break;
		}
	}
	return 0;
}

} // namespace memfed::ctl
