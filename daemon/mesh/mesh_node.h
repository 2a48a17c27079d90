// MeshNode: this memfedd's membership of the mesh.
//
// Started by memfedd when the config names mesh interfaces. It checks the
// interfaces, switches on IPv6 forwarding, puts the node's mesh addresses on
// lo, starts babeld announcing exactly those (babeld_process.h) and follows
// babeld's routes (babel_monitor.h) into a RouteTable. Every module that
// joins, moves or leaves is reported to the owner's callback; that is how
// the federation discovers modules: a module is known while a route to its
// address exists. The hops to each module are measured (hop_probe.h) once
// its route is installed or moves, and reported as a route change too. Everything is undone by the
// destructor: babeld stopped, addresses removed.
//
// Thread-safety: routes() and set_listener() from any thread. The listener
// runs on the monitor's thread (or in set_listener, for the replay), one
// call at a time, under the table's lock: it must not call back into
// MeshNode.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/mesh/babel_monitor.h"
#include "daemon/mesh/babeld_process.h"
#include "daemon/mesh/hop_probe.h"
#include "daemon/mesh/node_addresses.h"
#include "daemon/mesh/route_table.h"

namespace memfed::mesh
{

struct MeshOptions {
	std::vector<std::string> interfaces;
	MeshPrefix prefix = default_mesh_prefix();
	uint32_t hello_interval_ms = 100;
	std::string babeld = "babeld";
	std::string run_dir;  // babeld's config, pid, state, socket and log go here
	uint16_t port = 7700; // the mesh port: modules' wire protocol (TCP), hop probes (UDP)
};

class MeshNode
{
public:
	using ChangeFn = std::function<void(const RouteChange &, const std::string &why)>;

	// `announce`: the node's own mesh addresses (module_address / node_address).
	static Result<std::unique_ptr<MeshNode>> start(const MeshOptions &o,
	                                               std::vector<in6_addr> announce);
	// From now on every change goes to `f`; the modules already known are
	// replayed to it first as joins, so nothing learnt before is missed.
	void set_listener(ChangeFn f);
	~MeshNode();

	std::vector<ModuleRoute> routes();
	const MeshOptions &options() const { return opts_; }

private:
	explicit MeshNode(const MeshOptions &o) : opts_(o), table_(o.prefix) {}
	void event(const BabelEvent &ev);
	void lost(const std::string &why);
	// REQUIRES: mu_ held. Reports `changes` and queues hop measurements.
	void report(const std::vector<RouteChange> &changes, const std::string &why);
	void probe_loop();

	MeshOptions opts_;
	std::mutex mu_;
	ChangeFn listener_;             // guarded by mu_
	RouteTable table_;              // guarded by mu_
	std::deque<ModuleId> to_probe_; // guarded by mu_
	bool stopping_ = false;         // guarded by mu_
	std::condition_variable probe_cv_;
	std::thread prober_;
	NodeAddresses addresses_;
	std::unique_ptr<HopResponder> responder_;
	std::unique_ptr<BabeldProcess> babeld_;
	std::unique_ptr<BabelMonitor> monitor_;
};

} // namespace memfed::mesh
