// SharedWindow: a window of a region mapped with kind "shared" — one memfd
// (shmem) that the pager owns and every mapping process maps MAP_SHARED, so
// all of them see one copy of each page, like a file.
//
// The pager fills a missing page by writing it into the memfd (the page
// cache), then wakes the faulting threads of every mapper; they retry and
// the kernel maps the page-cache page. Dirty pages are found by comparing a
// page's CRC-32C with that of the module's copy (so a write through any
// mapper is seen without faults); eviction write-protects the victims in
// every mapper (writers are parked), writes changed ones back, then punches
// them out of the memfd, which drops them from every process at once. A
// MISSING fault on a page the pager thinks is in the memfd means the program
// punched it (MADV_REMOVE): it reads as zero from then on.
//
// Thread-safety: the mutable fields are guarded by `mu`; mappers on any
// pager thread take it.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/common/thread_annotations.h"
#include "daemon/pager/mapping.h"

namespace memfed::pager
{

constexpr uint32_t kCrcUnknown = 0xffffffffu; // content not known to be on the module

class SharedWindow
{
public:
	struct Mapper {
		Process *proc;
		Mapping *mapping;
		bool ready; // the client has mmapped and registered ("map.ready")
	};

	SharedWindow(std::string key, const Mapping &first, int memfd);
	~SharedWindow();
	SharedWindow(const SharedWindow &) = delete;
	SharedWindow &operator=(const SharedWindow &) = delete;

	// Creates the memfd of a window of `pages` pages.
	static Result<int> create_memfd(const std::string &region, uint32_t pages);
	// Checks that `fd` is a memfd of at least `pages` pages (a client
	// handing back its copy after a daemon restart).
	static Status check_memfd(int fd, uint32_t pages);

	// "<region>#<region id>@<offset>+<length>": windows with equal keys are
	// one window (the id tells a deleted region from a new one of its name).
	const std::string key;
	const std::string region;
	const uint32_t region_id;
	const uint64_t fa_base;
	const uint32_t npages;
	const int memfd;

	// The pager threads of every mapper share the window: the compiler
	// checks (-Wthread-safety) that what follows is touched under mu.
	Mutex mu;
	std::vector<Page> pages GUARDED_BY(mu);
	std::vector<uint32_t> crc GUARDED_BY(mu); // CRC of the module's copy
	std::vector<Mapper> mappers GUARDED_BY(mu);
	uint64_t resident GUARDED_BY(mu) = 0;
	uint64_t budget_pages GUARDED_BY(mu) = 0; // 0 = unlimited
	PageStats stats GUARDED_BY(mu);           // evictions and write-backs
	bool evicting GUARDED_BY(mu) = false;
	uint32_t clock_hand GUARDED_BY(mu) = 0;
	// The region was deleted: the memfd is emptied, faults are poisoned,
	// nothing is filled or written back (region_deletion.cc).
	bool region_gone GUARDED_BY(mu) = false;

	// Wakes threads of every mapper waiting on window pages
	// [first, first+count).
	void wake_all(uint32_t first, uint32_t count) REQUIRES(mu);
	// Sets or clears write-protection in every mapper; false if some live
	// mapper refused.
	bool write_protect_all(uint32_t first, uint32_t count, bool wp) REQUIRES(mu);
	// Every mapper has registered its range.
	bool all_ready() const REQUIRES(mu);
	// Whether the memfd holds page `idx` (not a hole).
	bool in_memfd(uint32_t idx) const;
	// Writes `count` pages into the memfd at page `idx`.
	int fill(uint32_t idx, const void *src, uint32_t count) const;
	// Reads `count` pages at `idx` (holes read as zero).
	int read(uint32_t idx, void *dst, uint32_t count) const;
	// Drops pages from the memfd and from every process mapping it.
	int punch(uint32_t idx, uint32_t count) const;
	// Marks every page the memfd holds resident with unknown content (a
	// memfd adopted after a daemon restart).
	void adopt_present() REQUIRES(mu);
};

} // namespace memfed::pager
