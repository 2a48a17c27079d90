// KmodLink: memfedd's and memfedctl's client of memfed.ko.
//
// memfed.ko holds the node's module, route and window tables and the extended
// address layout, and answers on the generic-netlink family "memfed"
// (kmod/uapi/memfed_netlink.h). KmodLink sets, gets, dumps and deletes
// entries as the plain structs of kmod_types.h; KmodWatch delivers the
// change events the kmod announces.
//
// When memfed.ko is not loaded (or the caller is not in the initial network
// namespace) available() is false and open() fails with kUnavailable: the
// daemon then keeps its tables itself. Every kernel error comes back as a
// Status whose message carries the kmod's extack text, e.g.
// "set window 3: window offset must be a multiple of MEMFED_WINDOW_ALIGN
// (Invalid argument)". Changes need CAP_NET_ADMIN (kPermission otherwise);
// reads do not.
//
// Thread-safety: a KmodLink or KmodWatch is used by one thread at a time;
// open one per thread that needs one.
#pragma once

#include <memory>
#include <optional>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/kmodlink/kmod_types.h"

namespace memfed::kmod
{

class GenlSocket;

class KmodLink
{
public:
	// True if memfed.ko's family is reachable from here. Cheap; never fails.
	static bool available();
	static Result<std::unique_ptr<KmodLink>> open();
	~KmodLink();

	Result<Layout> layout();

	// set_* creates or replaces the entry; fields the kmod computes
	// (RouteEntry::age_ms, WindowEntry::eva) are ignored.
	Status set_module(const ModuleEntry &m);
	Result<ModuleEntry> get_module(ModuleId id); // kNotFound if absent
	Result<std::vector<ModuleEntry>> modules();  // in ID order
	Status del_module(ModuleId id);              // kNotFound if absent

	Status set_route(const RouteEntry &r);
	Result<RouteEntry> get_route(ModuleId dest, uint32_t tclass);
	Result<std::vector<RouteEntry>> routes(); // by dest, then class
	Status del_route(ModuleId dest, uint32_t tclass);

	Status set_window(const WindowEntry &w);
	Result<WindowEntry> get_window(uint32_t index);
	Result<std::vector<WindowEntry>> windows(); // in index order
	Status del_window(uint32_t index);

private:
	explicit KmodLink(std::unique_ptr<GenlSocket> sock);
	std::unique_ptr<GenlSocket> sock_;
};

class KmodWatch
{
public:
	// Joins the kmod's "events" group; needs no privilege.
	static Result<std::unique_ptr<KmodWatch>> open();
	~KmodWatch();

	// Readable when events are queued: for poll() or an event loop.
	int fd() const;
	// Waits up to timeout_ms (-1: forever, 0: don't wait) for at least one
	// event and returns every event queued, in the order of the changes;
	// empty on timeout. A lost burst shows as an Event of kind kOverrun:
	// dump the tables again. An error means the kmod went away or sent
	// something malformed.
	Result<std::vector<Event>> read(int timeout_ms);

private:
	explicit KmodWatch(std::unique_ptr<GenlSocket> sock);
	std::unique_ptr<GenlSocket> sock_;
	std::vector<uint64_t> buf_;
};

} // namespace memfed::kmod
