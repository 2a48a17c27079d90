// The kmod mirror's plan (mirror_plan.h): which modules and routes memfed.ko
// should hold for a federation and a mesh, and the changes from what it holds.
#include <catch2/catch.hpp>

#include <arpa/inet.h>

#include <cstring>

#include "daemon/service/mirror_plan.h"

using namespace memfed;

namespace
{

ModuleId id(uint64_t n)
{
	return ModuleId{0x020000000000 | n};
}

in6_addr addr(const char *text)
{
	in6_addr a{};
	REQUIRE(inet_pton(AF_INET6, text, &a) == 1);
	return a;
}

ModuleEntry local_module()
{
	ModuleEntry m;
	m.module = id(1);
	m.local = true;
	m.reachable = true;
	m.capacity_bytes = 1 << 20;
	return m;
}

ModuleEntry mesh_module(uint64_t n, bool reachable, const std::string &error = "")
{
	ModuleEntry m;
	m.module = id(n);
	m.endpoint = "[fd00::" + std::to_string(n) + "]:7700";
	m.mesh = true;
	m.reachable = reachable;
	m.error = error;
	return m;
}

mesh::ModuleRoute mesh_route(uint64_t n, const char *via, const char *ifname, uint32_t metric,
                             uint32_t hops)
{
	mesh::ModuleRoute r;
	r.module = id(n);
	r.via = addr(via);
	r.ifname = ifname;
	r.metric = metric;
	r.hops = hops;
	return r;
}

// Module 2 is the neighbour on veth0; module 3 is behind it, two hops away.
struct Chain {
	std::vector<ModuleEntry> modules{local_module(), mesh_module(2, true),
	                                 mesh_module(3, true)};
	std::vector<mesh::ModuleRoute> routes{mesh_route(2, "fe80::2", "veth0", 96, 1),
	                                      mesh_route(3, "fe80::2", "veth0", 192, 2)};
};

} // namespace

TEST_CASE("The kmod's routes are the mesh's, with the relay as next hop")
{
	Chain c;
	MirrorTables t = want_tables(c.modules, c.routes, 3);
	REQUIRE(t.modules.size() == 3);
	CHECK(t.modules[id(1)].flags == kmod::kModuleLocal);
	CHECK(t.modules[id(3)].state == kmod::ModuleState::kUp);
	REQUIRE(t.routes.size() == 6); // modules 2 and 3, three classes each; none to ourselves
	const kmod::RouteEntry &far = t.routes[{id(3), 2}];
	CHECK(far.next_hop == id(2)); // the relay, not the destination
	CHECK(far.hops == 2);
	CHECK(far.metric == 192);
	CHECK(far.dev == "veth0");
	CHECK(memcmp(&far.via, &c.routes[0].via, sizeof(far.via)) == 0);
	const kmod::RouteEntry &near = t.routes[{id(2), 0}];
	CHECK(near.next_hop == id(2));
	CHECK(near.hops == 1);
}

TEST_CASE("A relay that runs no module leaves the destination as next hop, the address naming it")
{
	Chain c;
	c.modules.erase(c.modules.begin() + 1); // module 2 gone: its node relays only
	c.routes.erase(c.routes.begin());
	MirrorTables t = want_tables(c.modules, c.routes, 1);
	REQUIRE(t.routes.size() == 1);
	CHECK(t.routes[{id(3), 0}].next_hop == id(3));
	CHECK(t.routes[{id(3), 0}].dev == "veth0");
}

TEST_CASE("A mesh route waits for its hop count")
{
	Chain c;
	c.routes[1].hops = 0;
	MirrorTables t = want_tables(c.modules, c.routes, 1);
	CHECK(t.routes.count({id(2), 0}) == 1);
	CHECK(t.routes.count({id(3), 0}) == 0);
}

TEST_CASE("A static peer is a direct route")
{
	ModuleEntry p;
	p.module = id(9);
	p.endpoint = "10.0.0.9:7070";
	p.reachable = true;
	p.hops = 1;
	MirrorTables t = want_tables({p}, {}, 1);
	REQUIRE(t.routes.size() == 1);
	CHECK(t.routes[{id(9), 0}].next_hop == id(9));
	CHECK(t.routes[{id(9), 0}].hops == 1);
	CHECK(t.modules[id(9)].endpoint == "tcp:10.0.0.9:7070");
}

TEST_CASE("Only what changed is sent to the kmod")
{
	Chain c;
	MirrorTables held = want_tables(c.modules, c.routes, 3);
	SECTION("nothing changed: nothing to send")
	{
		CHECK(diff_tables(held, want_tables(c.modules, c.routes, 3)).empty());
	}
	SECTION("an empty kmod gets everything")
	{
		MirrorChanges d = diff_tables({}, held);
		CHECK(d.set_modules.size() == 3);
		CHECK(d.set_routes.size() == 6);
		CHECK(d.del_modules.empty());
		CHECK(d.del_routes.empty());
	}
	SECTION("a route's age, which the kmod computes, is no change")
	{
		for (auto &[key, r] : held.routes)
			r.age_ms = 12345;
		CHECK(diff_tables(held, want_tables(c.modules, c.routes, 3)).empty());
	}
	SECTION("the far module moves to another neighbour")
	{
		c.routes[1].via = addr("fe80::4");
		c.routes[1].ifname = "veth1";
		c.routes[1].hops = 1;
		MirrorChanges d = diff_tables(held, want_tables(c.modules, c.routes, 3));
		CHECK(d.set_modules.empty());
		REQUIRE(d.set_routes.size() == 3);
		for (const auto &r : d.set_routes) {
			CHECK(r.dest == id(3));
			CHECK(r.next_hop == id(3)); // now direct
			CHECK(r.dev == "veth1");
		}
		CHECK(d.del_routes.empty());
	}
	SECTION("the far module leaves: its routes go, it stays as down with the reason")
	{
		c.modules[2] = mesh_module(3, false, "route withdrawn (babeld: route gone)");
		c.routes.pop_back();
		MirrorChanges d = diff_tables(held, want_tables(c.modules, c.routes, 3));
		REQUIRE(d.del_routes.size() == 3);
		for (const auto &key : d.del_routes)
			CHECK(key.first == id(3));
		REQUIRE(d.set_modules.size() == 1);
		CHECK(d.set_modules[0].id == id(3));
		CHECK(d.set_modules[0].state == kmod::ModuleState::kDown);
		CHECK(d.set_modules[0].reason == "route withdrawn (babeld: route gone)");
		CHECK(d.set_routes.empty());
		CHECK(d.del_modules.empty());
	}
	SECTION("a module no longer listed at all is deleted, and its routes with it")
	{
		c.modules.pop_back();
		c.routes.pop_back();
		MirrorChanges d = diff_tables(held, want_tables(c.modules, c.routes, 3));
		CHECK(d.del_routes.size() == 3);
		REQUIRE(d.del_modules.size() == 1);
		CHECK(d.del_modules[0] == id(3));
	}
	SECTION("the federation lists a mesh module whose route is gone: no route")
	{
		c.routes.pop_back();
		MirrorChanges d = diff_tables(held, want_tables(c.modules, c.routes, 3));
		CHECK(d.del_routes.size() == 3);
		CHECK(d.set_modules.empty());
	}
}
