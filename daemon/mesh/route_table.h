// RouteTable: the federation's module routes, as babeld has installed them.
//
// The mesh's route table *is* the set of routes to module addresses
// (module_address.h): a module is in the federation while an installed route
// to its /128 exists. RouteTable follows babeld's local interface
// (BabelEvent lines from "dump" and "monitor"): it keeps every babel route by
// babeld's handle, and for each module the one babeld installed in the
// kernel. apply() reports what changed for memfed: a module joined (first
// installed route), left (no installed route any more), or its route moved
// (next hop, interface or metric). Routes to anything that is not a module
// address in the mesh prefix (a pager-only node's own /128, say) are kept
// out of the module view.
//
// Hop counts are not derived from metrics (on lossy links a metric is not a
// hop count): `hops` is 0 until a measurement sets it (set_hops).
//
// Thread-safety: none; one thread (the mesh thread) owns a RouteTable.
#pragma once

#include <netinet/in.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/mesh/babel_event.h"
#include "daemon/mesh/module_address.h"

namespace memfed::mesh
{

struct ModuleRoute {
	ModuleId module;
	in6_addr address{}; // the module's address (the route's destination)
	in6_addr via{};     // next hop (link-local)
	std::string ifname;
	uint32_t metric = kBabelInfinity;
	uint32_t hops = 0; // measured; 0 = not measured yet
	// The metric changed on the same next hop: the path behind that
	// neighbour may have grown or shrunk, so `hops` (still shown) is to be
	// measured again.
	bool hops_stale = false;
	uint64_t since_ns = 0; // when this next hop/metric was installed (CLOCK_MONOTONIC)
	// The babel router IDs with a live route to the address, sorted (modules()
	// fills it). Two or more: two nodes announce the module's ID.
	std::vector<std::string> originators;
};

struct RouteChange {
	enum class Kind { kJoined, kLeft, kMoved };
	Kind kind;
	ModuleRoute route; // the new route (kJoined, kMoved) or the last one (kLeft)
};

class RouteTable
{
public:
	explicit RouteTable(MeshPrefix prefix) : prefix_(prefix) {}

	// Applies one event; appends what changed for modules to `changes`.
	void apply(const BabelEvent &ev, uint64_t now_ns, std::vector<RouteChange> *changes);
	// babeld went away: every module route is gone.
	void clear(std::vector<RouteChange> *changes);

	// The installed route to each reachable module, ordered by module ID.
	std::vector<ModuleRoute> modules() const;
	const ModuleRoute *find(ModuleId id) const;
	// The distinct router IDs of the routes to `id` with a finite metric.
	std::vector<std::string> originators(ModuleId id) const;
	void set_hops(ModuleId id, uint32_t hops);
	const MeshPrefix &prefix() const { return prefix_; }

private:
	struct BabelRoute {
		ModuleId module;
		BabelEvent ev;
	};
	void reselect(ModuleId id, uint64_t now_ns, std::vector<RouteChange> *changes);

	MeshPrefix prefix_;
	std::map<std::string, BabelRoute> routes_;  // by babeld's route handle
	std::map<ModuleId, ModuleRoute> installed_; // by module
};

} // namespace memfed::mesh
