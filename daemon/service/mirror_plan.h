// Mirror plan: what memfed.ko's module and route tables should hold, and the
// changes that take the kmod from what it holds to that.
//
// want_tables() builds the tables from the federation's module list and, in
// a mesh, the routes babeld installed (mesh::ModuleRoute):
//
// - every module with an ID is in the module table, "up" when reachable,
//   else "down" with the reason it went (the federation's error text);
// - every reachable module that is not this node's has one route per
//   traffic class. In a mesh the route is babeld's: metric, the measured hop
//   count, the next hop's address and interface, and as next-hop module the
//   neighbour module reached through that same address one hop away (the
//   destination itself for a direct route, or when the neighbour runs no
//   module: the address still names it). A mesh route whose hop count is not
//   measured yet is left out until it is (the kmod's hops are 1..255). A
//   static peer is a direct route: next hop itself, metric and hops 1;
// - an unreachable module has no route: a route to a module that left is
//   deleted, not left stale.
//
// diff_tables() compares what the kmod holds with what it should, ignoring
// what the kmod computes (a route's age), so an unchanged route is not set
// again and its age is the time since it last changed.
//
// Pure functions of their arguments; safe from any thread.
#pragma once

#include <cstdint>
#include <map>
#include <utility>
#include <vector>

#include "daemon/kmodlink/kmod_types.h"
#include "daemon/mesh/route_table.h"
#include "daemon/service/federation.h"

namespace memfed
{

struct MirrorTables {
	std::map<ModuleId, kmod::ModuleEntry> modules;
	// By (destination, traffic class), the kmod's key.
	std::map<std::pair<ModuleId, uint32_t>, kmod::RouteEntry> routes;
};

struct MirrorChanges {
	std::vector<kmod::ModuleEntry> set_modules;
	std::vector<ModuleId> del_modules;
	std::vector<kmod::RouteEntry> set_routes;
	std::vector<std::pair<ModuleId, uint32_t>> del_routes;

	bool empty() const
	{
		return set_modules.empty() && del_modules.empty() && set_routes.empty() &&
		       del_routes.empty();
	}
};

// `mesh_routes`: the installed route to each module in the mesh (empty
// without a mesh); `classes`: the traffic classes, 0..classes-1.
MirrorTables want_tables(const std::vector<ModuleEntry> &modules,
                         const std::vector<mesh::ModuleRoute> &mesh_routes, uint32_t classes);

// Deletions of routes come before deletions of modules, sets of modules
// before sets of routes, each in key order.
MirrorChanges diff_tables(const MirrorTables &held, const MirrorTables &want);

} // namespace memfed
