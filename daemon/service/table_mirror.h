// TableMirror: keeps memfed.ko's tables equal to the daemon's.
//
// When memfed.ko is loaded (and config "kmod" is "auto"), memfedd mirrors its
// module, route and window tables into the kmod at start and on every change,
// and a restarted memfedd first reads the window table back, so EVAs handed
// out before the restart keep their meaning. Without the kmod everything runs
// from the daemon's own tables and source() says so.
//
// The module and route tables are synced by a refresh thread: it builds what
// the kmod should hold (mirror_plan.h: in a mesh, babeld's routes with their
// next hops) and sends only the differences, so each change is announced on
// the kmod's "events" group once and a route's age is the time since it
// changed. It runs at once when kick() says the mesh changed (a route came,
// moved or went), and every few seconds anyway, since a static peer's
// reachability changes without an event of ours. At start the kmod's tables
// are read back, so entries an earlier daemon left are corrected or deleted.
//
// Thread-safety: window_changed() and kick() may be called from any thread;
// the rest from the daemon's main thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/kmodlink/kmodlink.h"
#include "daemon/mesh/route_table.h"
#include "daemon/service/config.h"
#include "daemon/service/mirror_plan.h"
#include "daemon/service/node_federation.h"
#include "daemon/service/window_table.h"

namespace memfed
{

class TableMirror
{
public:
	TableMirror(const DaemonConfig &cfg, NodeFederation *fed);
	~TableMirror();

	// Opens the kmod link if wanted and present; a failure to open a present
	// kmod is logged and the daemon carries on with its own tables.
	void open();
	bool active() const { return link_ != nullptr; }
	// "memfed.ko (generic netlink)" or "daemon (memfed.ko not loaded)" / "(kmod off)".
	std::string source() const;
	// va_bits of the kmod's layout, or detect_va_bits() without it.
	uint32_t va_bits();
	// Windows the kmod still holds from an earlier daemon.
	std::vector<Window> saved_windows();
	// Pushes every table (`windows` as it is now), then refreshes
	// modules/routes every `period_ms`.
	void start(const WindowTable &windows, int period_ms = 3000);
	void stop();
	void window_changed(const Window &w);
	// In a mesh: where the installed module routes come from. Before start().
	void set_mesh_routes(std::function<std::vector<mesh::ModuleRoute>()> f)
	{
		mesh_routes_ = std::move(f);
	}
	// The mesh changed: sync modules and routes now, not at the next period.
	// Cheap, never blocks on the kmod.
	void kick();

private:
	void read_back_held();
	void sync_modules_and_routes();
	void refresh_loop(int period_ms);

	const DaemonConfig &cfg_;
	NodeFederation *fed_;
	std::mutex mu_; // serialises use of link_
	std::unique_ptr<kmod::KmodLink> link_;
	bool loaded_ = false;
	std::thread thread_;
	std::mutex stop_mu_;
	std::condition_variable stop_cv_;
	bool stopping_ = false; // guarded by stop_mu_
	bool kicked_ = false;   // guarded by stop_mu_
	std::function<std::vector<mesh::ModuleRoute>()> mesh_routes_;
	MirrorTables held_; // guarded by mu_: what the kmod holds, as far as we know
};

} // namespace memfed
