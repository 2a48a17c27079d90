// PagerConfig: the knobs of memfedd's pager role (from the daemon's config
// file; every field has a working default).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace memfed::pager
{

struct PagerConfig {
	// Resident-page limits, bytes; 0 = no limit. A "map" or "attach" request
	// may ask for a smaller or larger one.
	uint64_t default_mapping_budget = 0;
	uint64_t default_process_budget = 0;
	// Fault-serving threads, each with its own io_uring; a process's faults
	// are all served by one of them.
	unsigned threads = 1;
	// CPUs to pin the fault threads to (thread i -> cpus[i % size]); empty =
	// no pinning. Faults are fastest when the faulting thread and its pager
	// thread share a CPU (shared/notes/limits.md).
	std::vector<int> cpus;
	// Pin a thread that raises nearly all of its process's faults, often,
	// to its pager thread's CPU while it does (colocation_policy.h).
	bool colocate = true;
	// A directory where each pin is recorded while it lasts (one file per
	// pinned thread), so that a pager started after one that died gives
	// those threads their CPUs back; empty = not recorded.
	std::string pin_dir;
	// Prefetch: pages kept ahead of a detected stream, and pages per bulk
	// READ request. One request per window: fewer, larger requests cost
	// the pager and the module less per page, and a larger window takes
	// too much of a small budget (memfed-bench-pager --scan-only).
	bool prefetch = true;
	uint32_t prefetch_window = 256;
	uint32_t prefetch_chunk = 256;
	// Eviction: at most this many pages per round, and the least free
	// headroom (pages) the pager keeps under each budget so faults rarely
	// wait for eviction (it keeps a sixteenth of the budget if that is more).
	uint32_t evict_batch = 512;
	uint32_t evict_headroom = 32;
	// Extra CLOCK turns a private page earns by faulting back within half
	// its process's budget's worth of evictions (refault.h); 0 = none.
	uint8_t refault_turns = 7;
	// Evict by UFFDIO_MOVE into the client's staging area where the client
	// has one (map_protocol.h, "Staging"); false keeps the drop path for
	// every client (tests run both).
	bool evict_by_move = true;
	// With eviction by move, offer clients UFFD_FEATURE_WP_ASYNC: a first
	// write to a clean page raises no fault, and written pages are found
	// by PAGEMAP_SCAN and by their content (async_dirty.cc).
	bool wp_async = true;
	// Preallocated demand-fetch slots per thread (faults beyond this wait).
	uint32_t fault_slots = 256;
	// Preallocated bulk buffers (prefetch_chunk pages each, 16 MiB in all)
	// per thread: one per stream being prefetched.
	uint32_t bulk_slots = 16;
	// Control requests that wait for write-back (sync, unmap) give up after this.
	int control_timeout_ms = 30000;
};

} // namespace memfed::pager
