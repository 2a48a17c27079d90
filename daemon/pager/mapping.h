// Mapping: one window of a region mapped into one process, and the pager's
// state for each of its pages.
//
// A page is in exactly one State. Budgets count the pages that hold (or are
// about to hold) local memory: Fetching, Held, Resident, Evicting and Staged.
//
//   Remote    content is on the module; a fault fetches it
//   Zero      content is zero (the program dropped the page with
//             MADV_DONTNEED/REMOVE); a fault installs zeroes, never the
//             module's old content
//   Fetching  a fetch is in flight; its completion installs the page
//   Held      prefetched data waits in the pager (the stream's tripwire page,
//             see prefetch.h); a fault installs it without a fetch
//   Resident  installed in the process
//   Evicting  picked by an eviction round: write-protected and (if dirty)
//             being written back, then dropped; or, on a kernel with
//             UFFDIO_MOVE, asked to move into the staging area. Faults on
//             it are parked until the drop or the move is done
//   Staged    moved out of the process into the staging area (its bytes are
//             in the round's slot for it, eviction.cc) and, if dirty, being
//             written back from there; a fault installs it from the slot
//   Gone      the program unmapped it
//
// Thread-safety: owned by one pager thread.
#pragma once

#include <cstdint>

#include <memory>
#include <string>
#include <vector>

#include "daemon/pager/prefetch.h"
#include "daemon/pager/refault.h"
#include "daemon/pager/stats.h"
#include "daemon/pager/write_mix.h"
#include "daemon/pager/zeroed_allocator.h"

namespace memfed::pager
{

enum class PageState : uint8_t {
	kRemote,
	kZero,
	kFetching,
	kHeld,
	kResident,
	kEvicting,
	kGone,
	kStaged,
};

// Page flags.
constexpr uint8_t kDirty = 1 << 0;        // written since its content was last durable
constexpr uint8_t kRef = 1 << 1;          // recently used (CLOCK reference bit)
constexpr uint8_t kParked = 1 << 2;       // a fault waits for the eviction to finish
constexpr uint8_t kRemoved = 1 << 3;      // the program dropped it during a fetch/eviction
constexpr uint8_t kRemovedTwice = 1 << 4; // ... once more than the evictor's own drop
constexpr uint8_t kWriteFault = 1 << 5;   // the fetch serves a write: install writable
constexpr uint8_t kWbInFlight = 1 << 6;   // a write-back of its snapshot is in flight
constexpr uint8_t kPrefetched = 1 << 7;   // installed by prefetch, no fault seen since

struct Page {
	PageState state = PageState::kRemote;
	uint8_t flags = 0;

	// Sets the flags that say what the page is now, keeping kWbInFlight:
	// that one belongs to a write already on its way to the module, and
	// only the write's completion clears it, whatever the page became
	// meanwhile. A page has at most one write in flight (claim_writeback
	// skips it until then): a second one could complete first, and the
	// first one's completion would then call the page durable while its
	// newest content is still on the way -- an eviction would drop it, and
	// a daemon killed then would lose it.
	void set_flags(uint8_t f) { flags = uint8_t(f | (flags & kWbInFlight)); }
};
static_assert(uint8_t(PageState::kRemote) == 0, "a Page of zeros is the default");

using PageArray = std::vector<Page, ZeroedAllocator<Page>>;
// content_hash() of each page, sized like `pages` (async_dirty.cc).
using ContentHashes = std::vector<uint64_t, ZeroedAllocator<uint64_t>>;

struct ChannelSlot; // pager_thread.h
struct Process;     // process.h
class SharedWindow; // shared_window.h

struct Mapping {
	uint64_t id = 0;
	Process *proc = nullptr;
	std::string region;
	uint32_t region_id = 0;
	uint64_t fa_base = 0; // FA offset of page 0 in the module's pool
	uint64_t addr = 0;    // first byte in the process
	uint32_t npages = 0;
	bool writable = true;
	bool wp = false; // registered with MODE_WP: reads install write-protected
	bool prefetch = true;
	uint64_t budget_pages = 0; // 0 = unlimited
	ChannelSlot *chan = nullptr;
	// Kind "shared": the window whose pages these are; this mapping maps
	// window pages [window_first, window_first + npages). Its own `pages`
	// then only record which pages were unmapped (Gone).
	std::shared_ptr<SharedWindow> window;
	uint32_t window_first = 0;

	PageArray pages;
	// Private mappings of a process with WP_ASYNC: for each clean page, the
	// hash of the content its module holds, kept from the install or the
	// last write-back; a moved page whose bytes hash otherwise was written
	// (async_dirty.cc). Empty for every other mapping.
	ContentHashes content;
	// Private mappings: when each page was last evicted and the extra CLOCK
	// turns it earned by coming back soon after (refault.h). Empty for
	// shared ones (their window's pages are the window's).
	RefaultHistory history;
	// Private mappings: pages [touched, npages) were never faulted,
	// prefetched, dropped or unmapped (all kRemote without flags), so walks
	// over the pages stop there: a heap mapping costs what it uses, not its
	// size. Every change of such a page calls touch().
	uint32_t touched = 0;
	uint64_t resident = 0; // pages in Fetching/Held/Resident/Evicting/Staged
	uint32_t clock_hand = 0;
	// note_recent_writes read the written bits of pages [noted_from,
	// noted_to) in eviction round noted_round (async_dirty.cc).
	uint64_t noted_round = 0;
	uint32_t noted_from = 0, noted_to = 0;
	StreamDetector streams;
	std::vector<uint8_t> held; // one page per stream: its tripwire's data
	PageStats stats;
	WriteMix write_mix; // private mappings with wp: how read faults install

	// Operations in flight that point at this mapping; it is freed once it
	// is dead and none remain.
	uint32_t inflight = 0;
	bool dead = false;
	// The region was deleted (region_deletion.cc): faults are poisoned and
	// nothing is fetched, installed or written back.
	bool region_gone = false;

	bool contains(uint64_t a) const { return a >= addr && a < addr + uint64_t{npages} * 4096; }
	uint64_t page_addr(uint32_t i) const { return addr + uint64_t{i} * 4096; }
	uint64_t page_fa(uint32_t i) const { return fa_base + uint64_t{i} * 4096; }
	bool holds_memory(PageState s) const
	{
		return s == PageState::kFetching || s == PageState::kHeld ||
		       s == PageState::kResident || s == PageState::kEvicting ||
		       s == PageState::kStaged;
	}
	uint64_t count_dirty() const;
	// The uffd this mapping is registered on: a window's is its process's
	// window uffd when it has one (process.h).
	int uffd() const;
	void touch(uint32_t i)
	{
		if (i >= touched)
			touched = i + 1;
	}
	// Where walks over `pages` end: a shared mapping's pages only record
	// which are Gone, and they are walked whole.
	uint32_t scan_end() const { return window ? npages : touched; }
};

} // namespace memfed::pager
