// Process: one userfaultfd handed to the pager (one client process, or a
// child the kernel reported through UFFD_EVENT_FORK), with the client's
// second one for its shared windows if it sent one, its mappings and its
// eviction in progress.
//
// Thread-safety: owned by one pager thread.
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "daemon/pager/colocation_policy.h"
#include "daemon/pager/map_protocol.h"
#include "daemon/pager/mapping.h"
#include "daemon/transport/event_loop.h"

namespace memfed::pager
{

class PagerThread;

// The process (thread group) of thread `tid`, from /proc; 0 if it is gone.
pid_t tgid_of(uint32_t tid);

// Keeps one io_uring operation armed for a Process and routes its
// completion back to the thread.
class ProcessOp : public IoOp
{
public:
	enum Kind { kUffdPoll, kEvictRecv, kPidPoll, kWindowUffdPoll };
	ProcessOp(PagerThread *t, Process *p, Kind k) : thread_(t), proc_(p), kind_(k) {}
	void complete(int res, uint32_t flags) override;
	bool armed = false;

private:
	PagerThread *thread_;
	Process *proc_;
	Kind kind_;
};

// One round of eviction: victims chosen, then either written back and
// dropped by the client (the drop path), or moved by the client into its
// staging area, written back from there, and the slots emptied (the move
// path, doc/design/move-eviction.md).
struct Eviction {
	// Where a move round is.
	enum class Phase : uint8_t {
		kMoving,   // the MoveRequest is out: victims are Evicting
		kWriting,  // moved victims are Staged, dirty ones being written back
		kEmptying, // every staged page is durable: the request to empty
		           // their slots is out
	};
	bool active = false;
	bool drop_sent = false;
	bool failed = false; // a victim's write-back failed: keep them all
	bool by_move = false;
	// A victim could not move (EBUSY: shared with a forked child): the next
	// round takes the drop path, which can drop such pages. Never for a
	// process with WP_ASYNC, whose writes no write-protect can hold: its
	// client unshares such pages (MADV_POPULATE_WRITE) and they move later.
	bool drop_next = false;
	Phase phase = Phase::kMoving;
	uint64_t seq = 0;
	uint64_t started_ns = 0;
	// Sorted by address; on the move path victim k goes to slot k (the
	// staging area's page k), so contiguous victims fill contiguous slots.
	std::vector<std::pair<Mapping *, uint32_t>> victims;
	DropRequest request{};
	MoveRequest move{};
	union Reply {
		DropReply drop;
		MoveReply move;
	} reply{};
};
static_assert(sizeof(Eviction::Reply) == sizeof(MoveReply));

struct Process {
	uint64_t uffd_id = 0;
	int uffd = -1;
	// The uffd the client registers its shared windows on ("attach"
	// fds[2]), or -1: then they are on `uffd`. A window's eviction needs a
	// synchronous write-protect freeze in every mapper, which a uffd with
	// UFFD_FEATURE_WP_ASYNC does not give; this one never has it.
	int window_uffd = -1;
	pid_t pid = 0; // 0 until known (fork children: learnt from a fault)
	uid_t uid = 0;
	int conn_id = -1;        // control connection; -1 for fork children
	bool fork_child = false; // never writes back or evicts: its memory is private
	uint64_t features = 0;
	// The uffd has UFFD_FEATURE_WP_ASYNC: writes raise no WP fault, so a
	// page without kDirty may have been written (async_dirty.cc).
	bool wp_async = false;
	// The key of its pages' content_hash() (WP_ASYNC only; "attach" tells
	// the client, whose evictor hashes the pages it moves).
	uint64_t content_key = 0;
	// The client's staging area ("attach" "staging"; 0 = none): not a
	// mapping, its REMOVE events are only noted (map_protocol.h, "Staging").
	uint64_t staging_addr = 0, staging_len = 0;
	int evict_fd = -1;
	int pidfd = -1;
	// /proc/<pid>/mem, opened at the first write-back: the pager copies
	// pages out through it, never with process_vm_readv (see read_pages).
	int mem_fd = -1;
	// /proc/<pid>/pagemap, for PAGEMAP_SCAN (WP_ASYNC only), opened at the
	// first scan.
	int pagemap_fd = -1;
	uint64_t budget_pages = 0;
	uint64_t resident = 0;
	// Pages picked as eviction victims so far, the clock refault distances
	// are measured by (refault.h); wraps past 0, which means "no stamp".
	uint32_t evictions = 0;

	std::vector<std::unique_ptr<Mapping>> mappings;
	Mapping *last_hit = nullptr;
	Eviction evict;
	PageStats retired; // counters of mappings that are gone
	bool warned_no_evict = false;
	bool evict_pressure = false; // prefetch waits for room
	// Colocation (colocation.cc): this window's faults by thread, times a
	// thread of it was pinned beside the pager, and whether pinning is
	// refused (EPERM: tried once, logged once).
	FaultVotes fault_votes;
	uint32_t colocations = 0;
	bool colocation_refused = false;

	std::unique_ptr<ProcessOp> uffd_op, evict_op, pid_op, window_uffd_op;
	bool dead = false;
	bool mm_gone = false; // the process exited: its memory cannot be read

	Mapping *find(uint64_t addr)
	{
		if (last_hit != nullptr && last_hit->contains(addr) &&
		    last_hit->pages[(addr - last_hit->addr) / 4096].state != PageState::kGone)
			return last_hit;
		for (auto &m : mappings)
			if (!m->dead && m->contains(addr) &&
			    m->pages[(addr - m->addr) / 4096].state != PageState::kGone)
				return last_hit = m.get();
		return nullptr;
	}
	bool in_staging(uint64_t addr) const
	{
		return addr >= staging_addr && addr - staging_addr < staging_len;
	}
	uint32_t next_eviction_stamp()
	{
		if (++evictions == 0)
			evictions = 1;
		return evictions;
	}
	bool can_evict() const { return evict_fd >= 0 && !fork_child && pid > 0; }
	void close_fds()
	{
		for (int *fd : {&uffd, &window_uffd, &evict_fd, &pidfd, &mem_fd, &pagemap_fd}) {
			if (*fd >= 0)
				close(*fd);
			*fd = -1;
		}
	}
};

inline int Mapping::uffd() const
{
	return window && proc->window_uffd >= 0 ? proc->window_uffd : proc->uffd;
}

} // namespace memfed::pager
