// TableMirror: keeps memfed.ko's tables equal to the daemon's.
//
// When memfed.ko is loaded (and config "kmod" is "auto"), memfedd mirrors its
// module, route and window tables into the kmod at start and on every change,
// and a restarted memfedd first reads the window table back, so EVAs handed
// out before the restart keep their meaning. Without the kmod everything runs
// from the daemon's own tables and source() says so.
//
// Module reachability changes without an event of ours (a peer dies), so a
// refresh thread re-reads the federation every few seconds and pushes what
// changed.
//
// Thread-safety: window_changed() may be called from any thread; the rest
// from the daemon's main thread.
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "daemon/kmodlink/kmodlink.h"
#include "daemon/service/config.h"
#include "daemon/service/node_federation.h"
#include "daemon/service/window_table.h"

namespace memfed {

class TableMirror {
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

private:
	void push_modules_and_routes();
	void refresh_loop(int period_ms);

	const DaemonConfig &cfg_;
	NodeFederation *fed_;
	std::mutex mu_; // serialises use of link_
	std::unique_ptr<kmod::KmodLink> link_;
	bool loaded_ = false;
	std::thread thread_;
	std::mutex stop_mu_;
	std::condition_variable stop_cv_;
	bool stopping_ = false;
};

} // namespace memfed
