// Pager: memfedd's pager role. Local processes hand it their userfaultfds
// over the control socket (map_protocol.h); it serves their page faults from
// the modules that hold the regions, keeps each mapping and process within
// its local-memory budget, and writes dirty pages back.
//
// Usage (memfedd's main):
//   Pager pager(federation, config);
//   pager.register_ops(server);   // before server.start()
//   MF_RETURN_IF_ERROR(pager.start());
//   ...
//   pager.stop();                 // writes back what it can, detaches all
//
// The work is spread over PagerConfig::threads PagerThreads; a process and
// everything it maps stays on one of them.
//
// Thread-safety: the op handlers run on the control server's connection
// threads and are safe to call concurrently; start() and stop() are called
// once each, from one thread.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <map>
#include <memory>
#include <set>
#include <utility>
#include <vector>

#include "daemon/common/thread_annotations.h"
#include "daemon/control/server.h"
#include "daemon/pager/config.h"
#include "daemon/pager/pager_thread.h"
#include "daemon/pager/shared_window.h"
#include "daemon/pager/uffd.h"
#include "daemon/service/federation.h"

namespace memfed::pager
{

class Pager
{
public:
	Pager(Federation &fed, PagerConfig cfg);
	~Pager();
	Pager(const Pager &) = delete;
	Pager &operator=(const Pager &) = delete;

	// Adds "pager.hello", "attach", "map", "map.ready", "unmap", "sync" and
	// "pager.stats", and a disconnect handler that detaches the
	// connection's processes.
	void register_ops(control::Server &server);
	// Probes the kernel's userfaultfd and starts the threads.
	Status start();
	void stop();

	const UffdCaps &caps() const { return caps_; }
	// The "pager.stats" reply body; pid 0 = every process. Paged so that no
	// number of regions and processes outgrows a control packet: regions
	// in name order, then processes in uffd order, continuing after the
	// cursor `after` (the previous page's "next"; "" = from the start),
	// until about `max_bytes` of JSON; "more" says whether a "next" page
	// follows. The default gives everything at once (metrics, tests).
	nlohmann::json stats(pid_t pid, const std::string &after = "", size_t max_bytes = SIZE_MAX);
	// How the pager threads' channels reach each module (module ls).
	std::vector<TransportState> transport_states();
	// The page size of the "pager.stats" and "stats" replies: well below
	// control::kMaxPacket.
	static constexpr size_t kStatsPageBytes = 96 * 1024;
	// Pids of the processes that map region `name`, sorted, each once. A
	// process whose connection closed counts until its pages are written
	// back (detach), so a delete cannot race that write-back.
	std::vector<pid_t> region_users(const std::string &name);
	// Region `loc` was deleted through this node (region.delete, forced
	// when mapped): every mapping of it is poisoned, so that its next
	// access gets SIGBUS and the deleted bytes are dropped from the
	// processes; one log line names the region and the pids. A delete
	// elsewhere is found by the fetches (kNotFound) and handled alike. The
	// counters kept for the region's ended mappings are dropped.
	void region_deleted(const RegionLocation &loc);
	// How many deleted regions the pager remembers (to report each once):
	// only those some mapping still refers to.
	size_t deleted_regions_remembered();

private:
	struct ProcInfo {
		int thread;
		int conn_id;
		pid_t pid;
		uid_t uid;
	};
	struct MapInfo {
		uint64_t uffd_id;
		int thread;
		int conn_id;
		uint64_t pages;
		std::string region;
		pid_t pid;
		ModuleId module;
		uint32_t region_id;
		bool gone; // the region was deleted; the mapping is poisoned
	};

	control::Message op_hello(const control::Peer &peer, control::Message &req);
	control::Message op_attach(const control::Peer &peer, control::Message &req);
	control::Message op_map(const control::Peer &peer, control::Message &req);
	control::Message op_map_ready(const control::Peer &peer, control::Message &req);
	control::Message op_unmap(const control::Peer &peer, control::Message &req);
	control::Message op_sync(const control::Peer &peer, control::Message &req);
	control::Message op_stats(const control::Peer &peer, control::Message &req);
	void on_disconnect(const control::Peer &peer);
	// Runs `fn` on thread `t`; waits for the Status it reports through its
	// callback, at most the control timeout.
	Status run_on(int t, std::function<void(std::function<void(Status)>)> fn);
	Result<MapInfo> find_mapping(const control::Peer &peer, uint64_t id);
	// A pager thread (`from`) found region `id` of `module` deleted and
	// poisoned its own mappings of it: the others follow, and the first
	// report is logged.
	void on_region_gone(ModuleId module, uint32_t id, const std::string &name, int from);
	// Marks the mappings of the region gone; their pids, sorted, each once.
	std::vector<pid_t> mark_gone(ModuleId module, uint32_t id) REQUIRES(mu_);
	// Forgets deleted region (module, id) once no mapping refers to it: a
	// report after that has nobody to poison, and the module may hand the
	// id to a new region.
	void forget_gone_if_unmapped(ModuleId module, uint32_t id) REQUIRES(mu_);

	Federation &fed_;
	PagerConfig cfg_;
	UffdCaps caps_;
	bool started_ = false;
	std::atomic<uint64_t> ids_{1};
	std::atomic<unsigned> next_thread_{0};
	std::vector<std::unique_ptr<PagerThread>> threads_;
	Mutex mu_; // control connections' threads share these
	std::map<uint64_t, ProcInfo> procs_ GUARDED_BY(mu_);
	std::map<uint64_t, MapInfo> maps_ GUARDED_BY(mu_);
	// Shared windows by key; a window lives while a mapping uses it.
	std::map<std::string, std::weak_ptr<SharedWindow>> windows_ GUARDED_BY(mu_);
	// Deleted regions whose mappings were poisoned (module, region id), while
	// a mapping refers to them (forget_gone_if_unmapped).
	std::set<std::pair<ModuleId, uint32_t>> gone_ GUARDED_BY(mu_);
};

} // namespace memfed::pager
