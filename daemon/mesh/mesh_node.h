// MeshNode: this memfedd's membership of the mesh.
//
// Started by memfedd when the config names mesh interfaces. It checks the
// interfaces, switches on IPv6 forwarding, puts the node's mesh addresses on
// lo, starts babeld announcing exactly those (babeld_process.h) and follows
// babeld's routes (babel_monitor.h) into a RouteTable. Every module that
// joins, moves or leaves is reported to the owner's callback; that is how
// the federation discovers modules: a module is known while a route to its
// address exists. The hops to each module are measured (hop_probe.h) once
// its route is installed or moves, and reported as a route change too.
//
// A module whose route goes is reported gone only when no route is back
// within leave_grace_ms: when a link goes down babeld withdraws the route
// through it before it installs the other way round (tens of ms), and a
// module that is merely moving must not look gone to a program opening a
// region on it. Connections ride the gap out by retransmitting. Unless
// MeshOptions::qos is off, each interface gets a priority qdisc keyed on
// DSCP (priority_qdisc.h). Everything is undone by the destructor: babeld
// stopped, qdiscs and addresses removed.
//
// Thread-safety: routes() and set_listener() from any thread. The listener
// runs on the monitor's thread (or in set_listener, for the replay), one
// call at a time, under the table's lock: it must not call back into
// MeshNode.
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/mesh/babel_monitor.h"
#include "daemon/mesh/babeld_process.h"
#include "daemon/mesh/hop_probe.h"
#include "daemon/mesh/node_addresses.h"
#include "daemon/mesh/priority_qdisc.h"
#include "daemon/mesh/route_table.h"

namespace memfed::mesh
{

struct MeshOptions {
	std::vector<std::string> interfaces;
	MeshPrefix prefix = default_mesh_prefix();
	uint32_t hello_interval_ms = 100;
	std::map<std::string, uint32_t> interface_hello_ms; // BabeldOptions says
	uint32_t smoothing_half_life_s = 0; // babeld's default is 4
	std::string babeld = "babeld";
	std::string run_dir;  // babeld's config, pid, state, socket and log go here
	uint16_t port = 7700; // the mesh port: modules' wire protocol (TCP), hop probes (UDP)
	uint32_t leave_grace_ms = 1000;
	// A DSCP priority qdisc on each interface (priority_qdisc.h); one that
	// cannot be installed is a warning naming the cause, not a failure.
	bool qos = true;
	uint64_t qos_rate_bps = PriorityQdisc::kDefaultRateBps;
};

// One change as `memfedctl watch` shows it.
struct MeshEvent {
	uint64_t seq = 0;
	uint64_t unix_ms = 0;
	RouteChange::Kind kind = RouteChange::Kind::kJoined;
	ModuleRoute route;
	std::string why;
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
	// The changes after `seq` that are still remembered (the last 1024),
	// and the sequence number to ask after next time.
	std::vector<MeshEvent> events_after(uint64_t seq, uint64_t *next);
	const MeshOptions &options() const { return opts_; }

private:
	explicit MeshNode(const MeshOptions &o) : opts_(o), table_(o.prefix) {}
	void event(const BabelEvent &ev);
	void lost(const std::string &why);
	// REQUIRES: mu_ held. Reports `changes` and queues hop measurements.
	void report(const std::vector<RouteChange> &changes, const std::string &why);
	void probe_loop();
	// REQUIRES: mu_ held. Tells the listener and remembers the event.
	void tell(const RouteChange &c, const std::string &why);

	MeshOptions opts_;
	std::mutex mu_;
	ChangeFn listener_;             // guarded by mu_
	RouteTable table_;              // guarded by mu_
	std::deque<ModuleId> to_probe_; // guarded by mu_
	struct PendingLeave {
		RouteChange change;
		std::string why;
		std::chrono::steady_clock::time_point deadline;
	};
	std::map<ModuleId, PendingLeave> leaving_; // guarded by mu_
	std::set<ModuleId> twins_; // guarded by mu_: announced by 2+ routers, logged
	std::deque<MeshEvent> events_;		   // guarded by mu_
	uint64_t next_seq_ = 1;			   // guarded by mu_
	bool stopping_ = false;                    // guarded by mu_
	std::condition_variable probe_cv_;
	std::thread prober_;
	NodeAddresses addresses_;
	std::vector<std::unique_ptr<PriorityQdisc>> qdiscs_; // removed on exit
	std::unique_ptr<HopResponder> responder_;
	std::unique_ptr<BabeldProcess> babeld_;
	std::unique_ptr<BabelMonitor> monitor_;
};

} // namespace memfed::mesh
