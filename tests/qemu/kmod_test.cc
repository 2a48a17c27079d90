// memfed_kmod_test: memfed.ko's behaviour through KmodLink, run in the QEMU
// guest as root with memfed.ko loaded.
//
//   memfed_kmod_test basic     round trips, events, sysfs, errors, privilege;
//                              leaves the tables empty
//   memfed_kmod_test empty     empties every table, then checks that no
//                              memfed object is left (counters, sysfs, slab)
//   memfed_kmod_test populate  leaves a few entries for rmmod to clean up
//   memfed_kmod_test absent    run in a new network namespace: the family is
//                              not visible there and KmodLink says so
//
// Prints MEMFED-TEST markers (guest_check.h); exit status 0 unless a test
// could not run at all.
#include <arpa/inet.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <dirent.h>
#include <filesystem>
#include <fstream>
#include <grp.h>
#include <sstream>
#include <sys/wait.h>
#include <unistd.h>

#include "daemon/kmodlink/kmodlink.h"
#include "tests/qemu/guest_check.h"

using namespace memfed;
using namespace memfed::kmod;
using memfed::guest::Check;

namespace
{

const std::string kSys = "/sys/kernel/memfed/";

std::string slurp(const std::string &path)
{
	std::ifstream in(path);
	if (!in)
		return "<missing " + path + ">";
	std::stringstream ss;
	ss << in.rdbuf();
	std::string s = ss.str();
	while (!s.empty() && s.back() == '\n')
		s.pop_back();
	return s;
}

std::vector<std::string> list_dir(const std::string &path)
{
	std::vector<std::string> out;
	DIR *d = opendir(path.c_str());
	if (!d)
		return out;
	while (dirent *e = readdir(d))
		if (e->d_name[0] != '.')
			out.emplace_back(e->d_name);
	closedir(d);
	std::sort(out.begin(), out.end());
	return out;
}

std::string hex(uint64_t v)
{
	char b[32];
	snprintf(b, sizeof(b), "0x%llx", static_cast<unsigned long long>(v));
	return b;
}

ModuleId id(uint64_t low)
{
	return ModuleId{0x020000000000ull | low};
}

ModuleEntry module(uint64_t low, ModuleState s = ModuleState::kUp)
{
	ModuleEntry m;
	m.id = id(low);
	m.state = s;
	m.capacity = low << 30;
	m.endpoint = "tcp:10.0.0." + std::to_string(low) + ":7070";
	m.flags = low == 1 ? kModuleLocal : kModuleRelay;
	return m;
}

WindowEntry window(uint32_t index, uint64_t low, uint64_t offset, uint64_t length)
{
	WindowEntry w;
	w.index = index;
	w.fa.module = id(low);
	w.fa.offset = offset;
	w.length = length;
	return w;
}

bool same(const ModuleEntry &a, const ModuleEntry &b)
{
	return a.id == b.id && a.state == b.state && a.capacity == b.capacity &&
	       a.endpoint == b.endpoint && a.flags == b.flags;
}

bool same(const WindowEntry &a, const WindowEntry &b)
{
	return a.index == b.index && a.fa.module == b.fa.module && a.fa.offset == b.fa.offset &&
	       a.length == b.length && a.pid == b.pid && a.addr == b.addr;
}

bool has(const Status &st, Code code, const char *text)
{
	return st.code() == code && st.message().find(text) != std::string::npos;
}

std::string why(const Status &st)
{
	return st.is_ok() ? "ok" : st.to_string();
}

void test_layout(KmodLink &k, Layout &out)
{
	Check t("layout");
	auto l = k.layout();
	if (!t(l.is_ok(), "layout: " + why(l.status())))
		return;
	out = *l;
	bool la57 = slurp("/proc/cpuinfo").find(" la57") != std::string::npos;
	t(l->va_bits == (la57 ? 56u : 47u),
	  "va_bits " + std::to_string(l->va_bits) + (la57 ? " with" : " without") + " la57");
	t(l->va_bits + l->ext_bits == 64, "va_bits + ext_bits != 64");
	t(l->index_max == (1u << l->ext_bits) - 1, "index_max " + std::to_string(l->index_max));
	t(slurp(kSys + "layout/va_bits") == std::to_string(l->va_bits), "sysfs va_bits");
	t(slurp(kSys + "layout/ext_bits") == std::to_string(l->ext_bits), "sysfs ext_bits");
	t(slurp(kSys + "layout/index_max") == std::to_string(l->index_max), "sysfs index_max");
	t(slurp(kSys + "limits/routes_max") == std::to_string(l->routes_max), "sysfs routes_max");
}

void test_modules(KmodLink &k)
{
	Check t("netlink-modules");
	for (uint64_t i : {3, 1, 2})
		t(k.set_module(module(i)).is_ok(), "set module " + std::to_string(i));
	auto got = k.get_module(id(2));
	t(got.is_ok() && same(*got, module(2)), "get module 2: " + why(got.status()));
	auto all = k.modules();
	if (t(all.is_ok() && all->size() == 3, "dump 3 modules: " + why(all.status())))
		for (size_t i = 0; i < 3; i++)
			t(same((*all)[i], module(i + 1)),
			  "dump order/content at " + std::to_string(i));

	ModuleEntry changed = module(2, ModuleState::kDown);
	changed.endpoint = "";
	changed.reason = "route withdrawn";
	t(k.set_module(changed).is_ok(), "replace module 2");
	got = k.get_module(id(2));
	t(got.is_ok() && same(*got, changed) && got->reason == changed.reason,
	  "replaced module 2 reads back with its reason");
	t(slurp(kSys + "modules/02:00:00:00:00:02/reason") == "route withdrawn", "sysfs reason");
	t(slurp(kSys + "counters/modules") == "3", "replace keeps the count");

	t(k.del_module(id(3)).is_ok(), "delete module 3");
	got = k.get_module(id(3));
	t(has(got.status(), Code::kNotFound, "module not found"),
	  "get deleted module: " + why(got.status()));
	t(has(k.del_module(id(3)), Code::kNotFound, "module not found"), "delete twice");
	all = k.modules();
	t(all.is_ok() && all->size() == 2, "2 modules left");
	t(k.del_module(id(1)).is_ok() && k.del_module(id(2)).is_ok(), "delete the rest");
}

void test_routes(KmodLink &k, const Layout &l)
{
	Check t("netlink-routes");
	RouteEntry r;
	r.dest = id(5);
	r.next_hop = id(4);
	r.metric = 20;
	r.hops = 2;
	r.tclass = 2;
	t(k.set_route(r).is_ok(), "set bulk route");
	RouteEntry direct = r;
	direct.tclass = 0;
	direct.next_hop = id(5);
	direct.hops = 1;
	direct.metric = 5;
	t(k.set_route(direct).is_ok(), "set fault route");
	auto got = k.get_route(id(5), 2);
	t(got.is_ok() && got->next_hop == id(4) && got->metric == 20 && got->hops == 2,
	  "get bulk route: " + why(got.status()));
	got = k.get_route(id(5), 0);
	t(got.is_ok() && got->next_hop == id(5) && got->hops == 1, "get fault route");
	t(has(k.get_route(id(5), 1).status(), Code::kNotFound, "no route"), "no control route");
	// Version 2: the next hop's address and interface.
	RouteEntry via = r;
	inet_pton(AF_INET6, "fe80::4:1", &via.via);
	via.dev = "veth-m1";
	t(k.set_route(via).is_ok(), "set route with next-hop address");
	got = k.get_route(id(5), 2);
	t(got.is_ok() && memcmp(&got->via, &via.via, sizeof(via.via)) == 0 && got->dev == "veth-m1",
	  "next-hop address and interface read back: " + why(got.status()));
	std::string line = slurp("/sys/kernel/debug/memfed/routes");
	t(line.find(" fe80::4:1 veth-m1") != std::string::npos, "debugfs shows via and dev: " + line);
	via.dev = "an-interface-name-too-long";
	t(has(k.set_route(via), Code::kInvalidArgument, ""), "interface name over 15 bytes refused");
	t(k.del_route(id(5), 0).is_ok() && k.del_route(id(5), 2).is_ok(), "delete routes");

	// Fill the table: the dump spans many netlink messages, in key order.
	uint32_t n = l.routes_max;
	bool all_set = true;
	for (uint32_t i = 0; i < n && all_set; i++) {
		RouteEntry e;
		e.dest = id(0x10000 + i / 3);
		e.tclass = i % 3;
		e.next_hop = id(1);
		e.metric = i;
		all_set = k.set_route(e).is_ok();
	}
	t(all_set, "set " + std::to_string(n) + " routes");
	RouteEntry extra;
	extra.dest = id(0xfffff);
	extra.next_hop = id(1);
	t(has(k.set_route(extra), Code::kNoSpace, "route table full"), "route table full");
	auto all = k.routes();
	if (t(all.is_ok() && all->size() == n, "dump all routes: " + why(all.status()))) {
		bool ordered = true;
		for (uint32_t i = 0; i < n; i++)
			ordered &= (*all)[i].metric == i;
		t(ordered, "routes dumped by destination, then class");
	}
	std::string table = slurp("/sys/kernel/debug/memfed/routes");
	t(std::count(table.begin(), table.end(), '\n') + 1 == n, "debugfs lists every route");
	t(table.rfind("02:00:00:01:00:00 fault 02:00:00:00:00:01 0 1 ", 0) == 0,
	  "debugfs first line: " + table.substr(0, 60));
	bool all_del = true;
	for (uint32_t i = 0; i < n && all_del; i++)
		all_del = k.del_route(id(0x10000 + i / 3), i % 3).is_ok();
	t(all_del, "delete every route");
}

void test_windows(KmodLink &k, const Layout &l)
{
	Check t("netlink-windows");
	WindowEntry a = window(1, 1, 0x200000, 0x100000);
	WindowEntry b = window(l.index_max, 2, 0, 4096);
	b.pid = static_cast<uint32_t>(getpid());
	b.addr = 0x7f0000000000;
	t(k.set_window(a).is_ok(), "set window 1");
	Status st = k.set_window(b);
	t(st.is_ok(), "set window index_max: " + why(st));
	auto got = k.get_window(1);
	t(got.is_ok() && same(*got, a) && !got->mapped() && got->eva == l.eva_of(1),
	  "get window 1: " + why(got.status()));
	got = k.get_window(l.index_max);
	t(got.is_ok() && same(*got, b) && got->mapped() && got->eva == l.eva_of(l.index_max),
	  "get mapped window");
	auto all = k.windows();
	t(all.is_ok() && all->size() == 2 && (*all)[0].index == 1, "dump windows");
	a.pid = 77;
	a.addr = 0x10000000;
	t(k.set_window(a).is_ok(), "map window 1");
	got = k.get_window(1);
	t(got.is_ok() && got->pid == 77 && got->addr == 0x10000000, "window 1 mapped");
	t(k.del_window(1).is_ok() && k.del_window(l.index_max).is_ok(), "delete windows");
	t(has(k.get_window(1).status(), Code::kNotFound, "window not found"), "window gone");
}

void test_invalid(KmodLink &k, const Layout &l)
{
	Check t("netlink-invalid-values");
	ModuleEntry m = module(1);
	m.id = ModuleId{0};
	Status st = k.set_module(m);
	t(has(st, Code::kInvalidArgument, "module ID must be a non-zero 48-bit value"),
	  "module ID 0: " + why(st));
	m.id = ModuleId{1ull << 48};
	t(has(k.set_module(m), Code::kInvalidArgument, "48-bit"), "module ID of 49 bits");
	m = module(1);
	m.endpoint = std::string(200, 'x');
	st = k.set_module(m);
	t(st.code() == Code::kInvalidArgument, "endpoint of 200 bytes: " + why(st));

	st = k.set_window(window(1, 1, 100, 4096));
	t(has(st, Code::kInvalidArgument, "window offset must be a multiple"),
	  "misaligned offset: " + why(st));
	t(has(k.set_window(window(1, 1, 0, 0)), Code::kInvalidArgument, "window length"),
	  "zero length");
	st = k.set_window(window(1, 1, 0, (uint64_t{1} << l.va_bits) + 4096));
	t(has(st, Code::kInvalidArgument, "window length"), "length over 2^va_bits: " + why(st));
	st = k.set_window(window(1, 1, ~uint64_t{0} - 8191, 16384));
	t(has(st, Code::kInvalidArgument, "wraps"), "offset + length wraps: " + why(st));
	if (l.index_max < UINT32_MAX) {
		st = k.set_window(window(l.index_max + 1, 1, 0, 4096));
		t(has(st, Code::kInvalidArgument, "extension bits"),
		  "index over index_max: " + why(st));
	}
	st = k.set_window(window(0, 1, 0, 4096));
	t(st.code() == Code::kInvalidArgument, "index 0: " + why(st));
	WindowEntry w = window(2, 1, 0, 8192);
	w.pid = 1;
	w.addr = (uint64_t{1} << l.va_bits) - 4096;
	st = k.set_window(w);
	t(has(st, Code::kInvalidArgument, "below 2^va_bits"),
	  "mapping past user space: " + why(st));

	RouteEntry r;
	r.dest = id(1);
	r.next_hop = id(2);
	r.hops = 0;
	st = k.set_route(r);
	t(st.code() == Code::kInvalidArgument && st.message().find("range") != std::string::npos,
	  "hops 0: " + why(st));
	r.hops = 1;
	r.tclass = 3;
	t(k.set_route(r).code() == Code::kInvalidArgument, "traffic class 3");
	r.tclass = 0;
	r.next_hop = ModuleId{0};
	t(has(k.set_route(r), Code::kInvalidArgument, "next hop"), "next hop 0");

	auto mods = k.modules();
	auto wins = k.windows();
	auto routes = k.routes();
	t(mods.is_ok() && mods->empty() && wins.is_ok() && wins->empty() && routes.is_ok() &&
	          routes->empty(),
	  "refused requests changed nothing");
}

void test_events(KmodLink &k)
{
	Check t("netlink-events");
	auto watch = KmodWatch::open();
	if (!t(watch.is_ok(), "open watch: " + why(watch.status())))
		return;
	RouteEntry r;
	r.dest = id(9);
	r.next_hop = id(8);
	r.hops = 2;
	t(k.set_module(module(9)).is_ok() && k.set_route(r).is_ok() &&
	          k.set_window(window(3, 9, 0, 4096)).is_ok() && k.del_window(3).is_ok() &&
	          k.del_route(id(9), 0).is_ok() && k.del_module(id(9)).is_ok(),
	  "six changes");
	std::vector<Event> evs;
	for (int tries = 0; tries < 20 && evs.size() < 6; tries++) {
		auto got = (*watch)->read(1000);
		if (!t(got.is_ok(), "read events: " + why(got.status())))
			return;
		evs.insert(evs.end(), got->begin(), got->end());
	}
	using K = Event::Kind;
	std::vector<K> want = {K::kModuleSet, K::kRouteSet, K::kWindowSet,
	                       K::kWindowDel, K::kRouteDel, K::kModuleDel};
	if (!t(evs.size() == 6, "got " + std::to_string(evs.size()) + " events"))
		return;
	for (size_t i = 0; i < 6; i++)
		t(evs[i].kind == want[i], std::string("event ") + std::to_string(i) + " is " +
		                                  event_kind_name(evs[i].kind));
	t(same(evs[0].module, module(9)), "module-set carries the entry");
	t(evs[1].route.next_hop == id(8) && evs[1].route.hops == 2, "route-set carries the route");
	t(evs[3].window.index == 3 && evs[3].window.fa.module == id(9),
	  "window-del carries the window");
	t(same(evs[5].module, module(9)), "module-del carries the entry as it was");
	auto none = (*watch)->read(0);
	t(none.is_ok() && none->empty(), "no further events");
}

void test_sysfs(KmodLink &k, const Layout &l)
{
	Check t("sysfs");
	ModuleEntry m = module(0x2a);
	m.state = ModuleState::kDegraded;
	WindowEntry w = window(7, 0x2a, 0x40000000, 0x200000);
	w.pid = 42;
	w.addr = 0x7f1234560000;
	RouteEntry r;
	r.dest = id(0x2a);
	r.next_hop = id(0x2a);
	if (!t(k.set_module(m).is_ok() && k.set_window(w).is_ok() && k.set_route(r).is_ok(),
	       "set entries"))
		return;
	std::string dir = kSys + "modules/02:00:00:00:00:2a/";
	t(list_dir(kSys + "modules") == std::vector<std::string>{"02:00:00:00:00:2a"},
	  "modules/ lists the module");
	t(slurp(dir + "state") == "degraded", "state " + slurp(dir + "state"));
	t(slurp(dir + "capacity") == std::to_string(m.capacity), "capacity");
	t(slurp(dir + "endpoint") == m.endpoint, "endpoint " + slurp(dir + "endpoint"));
	t(slurp(dir + "flags") == "0x2", "flags " + slurp(dir + "flags"));
	dir = kSys + "windows/7/";
	t(slurp(dir + "module") == "02:00:00:00:00:2a", "window module");
	t(slurp(dir + "offset") == "0x40000000", "window offset");
	t(slurp(dir + "length") == "0x200000", "window length");
	t(slurp(dir + "fa") == "02:00:00:00:00:2a/0x40000000", "window fa " + slurp(dir + "fa"));
	t(slurp(dir + "eva") == hex(l.eva_of(7)), "window eva " + slurp(dir + "eva"));
	t(slurp(dir + "pid") == "42" && slurp(dir + "mapped") == "1", "window pid/mapped");
	t(slurp(dir + "addr") == "0x7f1234560000", "window addr");
	t(slurp(kSys + "counters/modules") == "1" && slurp(kSys + "counters/windows") == "1" &&
	          slurp(kSys + "counters/routes") == "1" && slurp(kSys + "counters/objects") == "3",
	  "counters");

	m.state = ModuleState::kUp;
	t(k.set_module(m).is_ok(), "update module");
	t(slurp(kSys + "modules/02:00:00:00:00:2a/state") == "up", "sysfs follows the update");
	t(k.del_window(7).is_ok() && k.del_module(m.id).is_ok() && k.del_route(r.dest, 0).is_ok(),
	  "delete entries");
	t(list_dir(kSys + "modules").empty() && list_dir(kSys + "windows").empty(),
	  "directories removed");
	t(slurp(kSys + "counters/objects") == "0", "objects 0");
}

void test_unprivileged(KmodLink &k)
{
	Check t("unprivileged");
	t(k.set_module(module(1)).is_ok(), "root sets module 1");
	pid_t pid = fork();
	if (pid == 0) {
		int bad = 0;
		if (setgroups(0, nullptr) || setgid(65534) || setuid(65534))
			_exit(100);
		auto link = KmodLink::open();
		if (!link)
			_exit(101);
		if (!(*link)->layout().is_ok())
			bad |= 1;
		auto mods = (*link)->modules();
		if (!mods.is_ok() || mods->size() != 1)
			bad |= 2;
		if (!(*link)->get_module(id(1)).is_ok())
			bad |= 4;
		Status st = (*link)->set_module(module(2));
		if (!has(st, Code::kPermission, "CAP_NET_ADMIN"))
			bad |= 8;
		if ((*link)->del_module(id(1)).code() != Code::kPermission)
			bad |= 16;
		if ((*link)->del_window(1).code() != Code::kPermission)
			bad |= 32;
		if (!KmodWatch::open().is_ok())
			bad |= 64;
		_exit(bad);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 255;
	t(code == 0, "child as uid 65534 failed checks, bits " + std::to_string(code) +
	                     " (1 layout, 2 dump, 4 get, 8 set refused, 16 del refused, "
	                     "32 del window refused, 64 watch)");
	auto mods = k.modules();
	t(mods.is_ok() && mods->size() == 1, "table unchanged by the refused requests");
	t(k.del_module(id(1)).is_ok(), "cleanup");
}

int run_basic()
{
	auto link = KmodLink::open();
	{
		Check t("kmodlink-open");
		t(KmodLink::available(), "available() is false with memfed.ko loaded");
		t(link.is_ok(), "open: " + why(link.status()));
	}
	if (!link)
		return 1;
	KmodLink &k = **link;
	Layout l;
	test_layout(k, l);
	test_modules(k);
	test_routes(k, l);
	test_windows(k, l);
	test_invalid(k, l);
	test_events(k);
	test_sysfs(k, l);
	test_unprivileged(k);
	return 0;
}

// Live slab objects whose allocation stack passes through memfed.ko, apart
// from what its init made (the top-level sysfs and debugfs entries), from the
// kernel's slab debugging (boot with slub_debug=U): one string per
// allocation record, its header line followed by its frames.
std::vector<std::string> memfed_slab_traces()
{
	std::vector<std::string> hits;
	const std::string base = "/sys/kernel/debug/slab/";
	for (const auto &cache : list_dir(base)) {
		std::ifstream in(base + cache + "/alloc_traces");
		std::string line, record;
		bool ours = false;
		auto flush = [&] {
			if (ours)
				hits.push_back(cache + ":" + record);
			record.clear();
			ours = false;
		};
		while (std::getline(in, line)) {
			size_t first = line.find_first_not_of(' ');
			if (first != std::string::npos && std::isdigit(line[first]))
				flush();
			record += " |" + line.substr(first == std::string::npos ? 0 : first);
			ours |= line.find("[memfed]") != std::string::npos &&
			        line.find("_init+") == std::string::npos;
		}
		flush();
	}
	return hits;
}

int run_empty()
{
	Check t("tables-empty-no-leak");
	auto link = KmodLink::open();
	if (!t(link.is_ok(), "open: " + why(link.status())))
		return 1;
	KmodLink &k = **link;
	auto mods = k.modules();
	auto routes = k.routes();
	auto wins = k.windows();
	if (!t(mods.is_ok() && routes.is_ok() && wins.is_ok(), "dump tables"))
		return 1;
	for (const auto &m : *mods)
		t(k.del_module(m.id).is_ok(), "delete module " + m.id.to_string());
	for (const auto &r : *routes)
		t(k.del_route(r.dest, r.tclass).is_ok(), "delete route " + r.dest.to_string());
	for (const auto &w : *wins)
		t(k.del_window(w.index).is_ok(), "delete window " + std::to_string(w.index));
	for (const char *c : {"modules", "routes", "windows", "objects"})
		t(slurp(kSys + "counters/" + c) == "0",
		  std::string("counters/") + c + " = " + slurp(kSys + "counters/" + c));
	t(list_dir(kSys + "modules").empty() && list_dir(kSys + "windows").empty(),
	  "sysfs directories left");
	if (t(!list_dir("/sys/kernel/debug/slab").empty(), "no /sys/kernel/debug/slab")) {
		// Removed sysfs nodes stay pinned by cached dentries until those
		// are dropped, and some frees wait for an RCU grace period: a leak
		// is what survives dropping the caches a few times.
		std::vector<std::string> live;
		for (int i = 0; i < 4; i++) {
			std::ofstream("/proc/sys/vm/drop_caches") << "2\n";
			live = memfed_slab_traces();
			if (live.empty())
				break;
			usleep(500 * 1000);
		}
		for (const auto &h : live)
			t(false, "live slab object: " + h);
	}
	std::printf("MEMFED-INFO emptied %zu modules, %zu routes, %zu windows\n", mods->size(),
	            routes->size(), wins->size());
	return 0;
}

int run_populate()
{
	Check t("populate");
	auto link = KmodLink::open();
	if (!t(link.is_ok(), "open: " + why(link.status())))
		return 1;
	KmodLink &k = **link;
	RouteEntry r;
	r.dest = id(2);
	r.next_hop = id(1);
	for (uint64_t i = 1; i <= 8; i++)
		t(k.set_module(module(i)).is_ok(), "set module");
	for (uint32_t i = 1; i <= 8; i++)
		t(k.set_window(window(i, 1, i * 4096, 4096)).is_ok(), "set window");
	t(k.set_route(r).is_ok(), "set route");
	t(slurp(kSys + "counters/objects") == "17", "objects " + slurp(kSys + "counters/objects"));
	return 0;
}

int run_absent()
{
	Check t("family-absent-in-other-netns");
	t(std::filesystem::exists("/sys/module/memfed"), "memfed.ko is not loaded");
	t(!KmodLink::available(), "available() in a non-initial network namespace");
	auto link = KmodLink::open();
	t(!link.is_ok() && link.status().code() == Code::kUnavailable,
	  "open: " + why(link.status()));
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	std::string mode = argc > 1 ? argv[1] : "";
	if (mode == "basic")
		return run_basic();
	if (mode == "empty")
		return run_empty();
	if (mode == "populate")
		return run_populate();
	if (mode == "absent")
		return run_absent();
	std::fprintf(stderr, "usage: memfed_kmod_test basic|empty|populate|absent\n");
	return 2;
}
