#include "daemon/service/mirror_plan.h"

#include <cstring>

namespace memfed
{

namespace
{

bool same_address(const in6_addr &a, const in6_addr &b)
{
	return memcmp(&a, &b, sizeof(a)) == 0;
}

bool is_zero(const in6_addr &a)
{
	static const in6_addr zero{};
	return same_address(a, zero);
}

// The module one hop away through the same neighbour address and interface
// as `r`, or `r`'s own module when none is known.
ModuleId next_hop_module(const mesh::ModuleRoute &r,
                         const std::vector<mesh::ModuleRoute> &mesh_routes)
{
	if (r.hops == 1 || is_zero(r.via))
		return r.module;
	for (const auto &n : mesh_routes)
		if (n.hops == 1 && n.ifname == r.ifname && same_address(n.via, r.via))
			return n.module;
	return r.module;
}

kmod::ModuleEntry module_entry(const ModuleEntry &m)
{
	kmod::ModuleEntry e;
	e.id = m.module;
	e.state = m.reachable ? kmod::ModuleState::kUp : kmod::ModuleState::kDown;
	e.capacity = m.capacity_bytes;
	e.endpoint = m.local ? "local" : "tcp:" + m.endpoint;
	e.flags = m.local ? kmod::kModuleLocal : 0;
	if (!m.reachable)
		e.reason = m.error.empty() ? "unreachable" : m.error;
	return e;
}

bool same_module(const kmod::ModuleEntry &a, const kmod::ModuleEntry &b)
{
	return a.id == b.id && a.state == b.state && a.capacity == b.capacity &&
	       a.endpoint == b.endpoint && a.flags == b.flags && a.reason == b.reason;
}

bool same_route(const kmod::RouteEntry &a, const kmod::RouteEntry &b)
{
	return a.dest == b.dest && a.tclass == b.tclass && a.next_hop == b.next_hop &&
	       a.metric == b.metric && a.hops == b.hops && same_address(a.via, b.via) &&
	       a.dev == b.dev;
}

} // namespace

MirrorTables want_tables(const std::vector<ModuleEntry> &modules,
                         const std::vector<mesh::ModuleRoute> &mesh_routes, uint32_t classes)
{
	std::map<ModuleId, const mesh::ModuleRoute *> by_module;
	for (const auto &r : mesh_routes)
		by_module[r.module] = &r;

	MirrorTables t;
	for (const auto &m : modules) {
		if (!m.module.valid())
			continue; // a peer never reached: no ID to file it under
		t.modules[m.module] = module_entry(m);
		if (m.local || !m.reachable)
			continue; // served in-process, or gone: nothing to route
		kmod::RouteEntry r;
		r.dest = m.module;
		auto it = by_module.find(m.module);
		if (it != by_module.end()) {
			const mesh::ModuleRoute &mr = *it->second;
			if (mr.hops == 0)
				continue; // not measured yet: the route comes with the measurement
			r.next_hop = next_hop_module(mr, mesh_routes);
			r.metric = mr.metric;
			r.hops = mr.hops;
			r.via = mr.via;
			r.dev = mr.ifname;
		} else if (m.mesh) {
			continue; // the federation still lists it, the mesh has no route
		} else {
			r.next_hop = m.module; // a static peer: a direct connection
			r.metric = 1;
			r.hops = 1;
		}
		for (uint32_t tc = 0; tc < classes; tc++) {
			r.tclass = tc;
			t.routes[{r.dest, tc}] = r;
		}
	}
	return t;
}

MirrorChanges diff_tables(const MirrorTables &held, const MirrorTables &want)
{
	MirrorChanges c;
	for (const auto &[key, r] : held.routes)
		if (!want.routes.count(key))
			c.del_routes.push_back(key);
	for (const auto &[id, m] : held.modules)
		if (!want.modules.count(id))
			c.del_modules.push_back(id);
	for (const auto &[id, m] : want.modules) {
		auto it = held.modules.find(id);
		if (it == held.modules.end() || !same_module(it->second, m))
			c.set_modules.push_back(m);
	}
	for (const auto &[key, r] : want.routes) {
		auto it = held.routes.find(key);
		if (it == held.routes.end() || !same_route(it->second, r))
			c.set_routes.push_back(r);
	}
	return c;
}

} // namespace memfed
