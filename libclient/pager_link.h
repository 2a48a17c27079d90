// PagerLink: this process's side of the map protocol (daemon/pager/map_protocol.h).
//
// It owns the process's userfaultfds (one for private memory, one for shared
// windows when the pager takes it), the control connection that attached them
// to memfedd's pager, the evict channel and the list of mappings. Three
// duties beyond the ops themselves:
//   - Eviction: an evictor thread drops the pages the pager asks it to drop
//     (madvise MADV_DONTNEED on its own address space) or, on kernels with
//     UFFDIO_MOVE, moves them into the process's staging area, whose full
//     slots it remembers (map_protocol.h, "Staging"); after a daemon
//     restart it moves them back before the mappings are sent again.
//   - Daemon restart: a monitor thread notices the lost connection, reconnects
//     with backoff, attaches the same uffds again and re-sends every mapping.
//     Meanwhile faulting threads wait in the kernel; nothing is unregistered.
//     The link's own threads never touch the program's memory (they would
//     wait for the daemon they are to reattach): their allocations go where
//     thread_init sends them and they use libc's static C locale.
//   - Daemon loss (Options::soft_grace_ms): in hard mode (the default) the
//     link waits for memfedd forever, as an NFS hard mount does, and logs
//     every away_log_ms while it waits. In soft mode, once memfedd has been
//     away for the grace, the link gives its mappings up: the monitor reads
//     the uffd itself and raises SIGBUS in every thread that faults on them
//     (as from a memory error); calls fail with kUnavailable; no memfedd is
//     attached again (the events it read are unknown to any daemon).
//   - Fork (pthread_atfork): the link never asks for UFFD_FEATURE_EVENT_FORK,
//     so the kernel unregisters the child's copy of each range. In the child
//     the link registers every range on fresh uffds and attaches again before
//     fork() returns. For a private mapping (heap) the child makes a region of
//     its own and copies into it the pages it does not hold, while the parent
//     waits in fork() with its evictions held; parent and child then diverge
//     like ordinary private memory. The staging area is not inherited, so
//     before the fork the parent syncs the ranges of its staged pages.
//
// Thread-safety: every public member may be called from any thread. Calls are
// serialised on one connection; a call made while memfedd is away waits for
// the reconnection.
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/control/client.h"
#include "daemon/pager/map_protocol.h"
#include "libclient/drop_ledger.h"
#include "libclient/evictor_pin.h"

namespace memfed::client
{

struct PrivateForkHooks {
	// Name of the region that backs the child's copy of a private mapping;
	// called in the child.
	std::function<std::string(const std::string &parent_region)> child_region_name;
	// The parts of the mapping (offsets) that may hold data; the rest is not
	// copied to the child's region. Called with the link's locks held.
	std::function<std::vector<Span>()> live_spans;
	// If set, the regions "<dead_prefix><pid>" of processes that are gone
	// are deleted before a child's region is made (forks would pile them up).
	std::string dead_prefix;
};

class PagerLink
{
public:
	struct Options {
		std::string socket_path;     // memfedd's control socket
		uint64_t process_budget = 0; // "attach" budget, 0 = daemon default
		bool handle_fork = true;     // register pthread_atfork handlers
		// Runs first on every thread the link starts (the preload shim
		// routes those threads' allocations away from the remote heap).
		void (*thread_init)() = nullptr;
		// 0: hard mode; else soft mode with this grace (see above).
		uint64_t soft_grace_ms = 0;
		// While memfedd is away, one log line this often.
		uint64_t away_log_ms = 10000;
	};

	// Connects, asks "pager.hello", creates the uffd and attaches it.
	static Result<std::unique_ptr<PagerLink>> open(const Options &opt);
	// Unmaps nothing: the pager writes back and forgets when the connection
	// closes. Mappings stay in the address space.
	~PagerLink();
	PagerLink(const PagerLink &) = delete;
	PagerLink &operator=(const PagerLink &) = delete;

	// Maps [offset, offset+length) of `region` shared (file-like) and returns
	// the address. `hint` 0: anywhere.
	Result<uint64_t> map_shared(const std::string &region, uint64_t offset, uint64_t length,
	                            bool writable, uint64_t budget, bool prefetch, uint64_t hint);
	// Registers [addr, addr+length), which the caller mmapped
	// MAP_PRIVATE|MAP_ANONYMOUS, and backs it with `region` from offset 0.
	Status map_private(const std::string &region, uint64_t addr, uint64_t length,
	                   uint64_t budget, PrivateForkHooks hooks);
	// Writes back and forgets the mapping that starts at `addr`; munmaps it
	// if it is shared (the caller unmaps private ones).
	Status unmap(uint64_t addr);
	// msync semantics for [addr, addr+length) inside one mapping.
	Status sync(uint64_t addr, uint64_t length);
	// Region and region offset of `addr`; kNotFound outside every mapping.
	Result<std::pair<std::string, uint64_t>> locate(uint64_t addr) const;

	// The memfd behind the shared mapping containing `addr` (owned by the
	// link; valid while the mapping is), or -1.
	int memfd_at(uint64_t addr) const;

	// One request on the link's connection (region ops and the like). Not
	// retried after a reconnection.
	Result<control::Message> call(const control::Message &req);

	// Deletes the regions named "<prefix><pid>" whose process is gone.
	Status collect_dead(const std::string &prefix);

	// How many times the link reconnected after losing memfedd (tests).
	uint64_t reconnects() const { return reconnects_.load(); }
	// The staging area's address (0: none; its length is
	// pager::kStagingPages pages) and the source page each slot holds (0:
	// empty), for tests.
	uint64_t staging_addr() const;
	std::vector<uint64_t> staged() const;
	// The program drops [addr, addr+length) of a private mapping with
	// MADV_DONTNEED: remove_begin before the madvise, remove_end with its
	// token after. A drop whose REMOVE event a restarted memfedd may have
	// read before the mapping was sent to it again (and so ignored) is
	// reported in the next "map" ("removed"), so its pages read as zero,
	// not as the module's old content; so is one whose zeroes the pager has
	// not yet made durable (drop_ledger.h). remove_begin waits while the
	// link re-sends the mappings. Any thread but the link's own.
	uint64_t remove_begin(uint64_t addr, uint64_t length) { return drops_.begin(addr, length); }
	void remove_end(uint64_t addr, uint64_t length, uint64_t token)
	{
		drops_.end(addr, length, token);
		forget_staged(addr, length);
	}

	// Soft mode only: memfedd stayed away past the grace; the mappings are
	// given up and every access to them raises SIGBUS.
	bool given_up() const { return given_up_.load(); }

	// pthread_atfork handlers (public for the atfork trampolines).
	void fork_prepare();
	void fork_parent();
	void fork_child();

private:
	struct Mapping {
		std::string region;
		uint64_t region_offset = 0;
		uint64_t addr = 0;
		uint64_t length = 0;
		bool shared = false;
		bool writable = false;
		uint64_t budget = 0;
		bool prefetch = true;
		int memfd = -1; // shared: our copy of the pager's memfd
		uint64_t mapping_id = 0;
		PrivateForkHooks hooks;
	};

	explicit PagerLink(Options opt) : opt_(std::move(opt)) {}

	// Connects, hello, attach, re-maps every mapping. REQUIRES: mu_ held.
	Status establish();
	// `removed`: program drops to report (remove_end), private only.
	Status send_map(Mapping &m, bool adopt, const std::vector<Span> &removed = {});
	// call() without taking mu_; REQUIRES: mu_ held.
	Result<control::Message> call_locked(const control::Message &req);
	// Sends a pager op, waiting out a reconnection if memfedd is away.
	Result<control::Message> pager_call(std::unique_lock<std::mutex> &lk,
	                                    const control::Message &req);
	Status copy_for_child(Mapping &m);
	// A "sync" range: [offset, offset+length) of the mapping `mapping_id`.
	struct SyncRange {
		uint64_t mapping_id;
		uint64_t offset;
		uint64_t length;
	};
	// The sources the staging table holds, as ranges of contiguous pages
	// inside one private mapping each, in address order. REQUIRES: mu_
	// and evict_mu_ held.
	std::vector<SyncRange> staged_sync_ranges() const;
	// fork_prepare: syncs the ranges of the staged pages, so that the
	// module holds their newest content before the child (which does not
	// inherit the staging area) clones the region. Sets fork_unsynced_ if
	// it cannot. REQUIRES: lk holds mu_, evict_mu_ held (both are on
	// return; released meanwhile if memfedd goes away).
	void sync_staged_for_fork(std::unique_lock<std::mutex> &lk);
	Status collect_dead_locked(const std::string &prefix);
	Status start_monitor();
	// Hands the evict channel `sock` to the evictor thread, starting the
	// thread if this process has none yet.
	Status start_evictor(int sock);
	// Shuts the current evict channel down; the evictor closes it and waits
	// for the next one.
	void retire_evictor();
	// Waits until no drop of a retired evictor is in madvise and every
	// program drop in flight has returned (their events reach the new pager
	// before any "map"), while the connection `fd` stays up; false if it
	// went down.
	bool wait_for_drops(int fd);
	// Stops the evictor thread and waits (up to 5 s) until it has exited;
	// false on timeout.
	bool stop_evictor();
	void publish_spans();
	void monitor_loop();
	// Syncs the unsettled program drops and forgets those made durable;
	// returns whether some are left. Monitor thread, connected.
	bool settle_removes();
	// Soft mode past the grace: reads the uffd until the link closes,
	// raising SIGBUS in each thread that faults.
	void serve_sigbus();
	// Waits until memfedd is attached, the link closes or is given up.
	// REQUIRES: lk holds mu_.
	void wait_connected(std::unique_lock<std::mutex> &lk);
	// Why a call finds no memfedd: closing, or given up. REQUIRES: mu_ held.
	std::string closed_reason() const;
	// Serves evict channels one after another until stop_evictor().
	void evictor_serve();
	void evictor_loop(int sock);
	// Serves one MoveRequest of `n` bytes; false ends the channel.
	bool serve_move(int sock, const pager::MoveRequest &req, size_t n);
	void unshare(const pager::DropRange *ranges, uint32_t n);
	uint32_t hash_moved(const pager::MoveRequest &req, pager::MoveReply *rep) const;
	// The key of the content hashes MoveReplies carry ("attach"; 0: none).
	std::atomic<uint64_t> content_key_{0};
	// Why `req` (`n` bytes) must be refused, or nullptr. REQUIRES: spans_mu_.
	const char *check_move(const pager::MoveRequest &req, size_t n) const;
	// Records the slots of `run` (into the staging area at `staging`) that
	// its MOVE filled (`r`: its result, `moved`: the bytes it reports).
	// REQUIRES: evict_mu_.
	// The program dropped [addr, addr+length): a staged copy of a page in
	// it is obsolete, and must not be moved back over the dropped page
	// when a restarted daemon is reattached (restore_staging).
	void forget_staged(uint64_t addr, uint64_t length);
	void record_move(uint64_t staging, const pager::MoveRun &run, uint64_t sent_ns, int r,
	                 int64_t moved);
	// Maps and registers the staging area. REQUIRES: mu_ held, uffd_ open.
	Status map_staging();
	// Daemon restart: moves every staged page back to its source (unless
	// the source was refilled since: the slot is stale) and forgets it.
	// False if the connection `fd` went down meanwhile. REQUIRES: mu_
	// held, no evictor in a request.
	bool restore_staging(int fd);
	// Has the evictor empty every slot (its madvise waits for the pager
	// to read the REMOVE event, as a drop's does: wait_for_drops).
	void post_empty_staging();
	void empty_staging();
	Mapping *find(uint64_t addr);
	const Mapping *find(uint64_t addr) const;
	// The uffd `m` is registered on.
	int uffd_of(const Mapping &m) const
	{
		return m.shared && window_uffd_ >= 0 ? window_uffd_ : uffd_;
	}

	static void *monitor_main(void *self);
	static void *evictor_main(void *self);

	Options opt_;
	uint64_t features_ = 0; // UFFDIO_API features of uffd_
	uint64_t private_mode_ = 0;
	uint64_t shared_mode_ = 0;
	bool user_mode_only_ = false;
	int uffd_ = -1;
	// The uffd of the shared windows ("attach" fds[2]), opened at the first
	// attach to a pager that takes one; -1: they are on uffd_. It never has
	// UFFD_FEATURE_WP_ASYNC, which uffd_ may have: a window's eviction
	// write-protects it synchronously in every mapper (map_protocol.h).
	int window_uffd_ = -1;
	uint64_t uffd_id_ = 0;
	// The staging area (0: none), written under mu_ and spans_mu_.
	uint64_t staging_addr_ = 0;

	// mu_ serialises requests and guards mappings_, ctl_ and connected_.
	mutable std::mutex mu_;
	std::condition_variable cv_;
	control::Client ctl_;
	bool connected_ = false;
	std::vector<std::unique_ptr<Mapping>> mappings_;

	// Held by the evictor while it drops or moves pages; fork_prepare holds
	// it from the region copy until fork returns, so no page leaves memory
	// meanwhile.
	mutable std::mutex evict_mu_;
	// Staging table, guarded by evict_mu_: per slot, the source page it
	// holds, 0 if empty. Sized when the area is mapped (the evictor does not
	// allocate).
	std::vector<uint64_t> staged_;
	// Per slot, the sent_ns of the MoveRequest that filled it: emptying the
	// slot settles the program's drops of its source that ended before then
	// (the pager empties a round's slots once their pages are durable), as
	// a DropRequest does.
	std::vector<uint64_t> staged_ns_;
	// The evictor's CPU while its pager thread is pinned (evictor thread
	// only).
	EvictorPin evictor_pin_;
	// The private mappings' address ranges, for the evictor's checks; also
	// guards the evictor's state below.
	mutable std::mutex spans_mu_;
	std::vector<Span> private_spans_;
	// One evictor thread per process, detached, made at the first attach
	// and kept: see establish() for why it is never made again. It closes
	// each channel it took once the channel ends.
	int evict_sock_ = -1;           // our end of the current evict channel
	bool evict_sock_taken_ = false; // the evictor serves evict_sock_
	bool evictor_running_ = false;
	bool evictor_stop_ = false;
	int drops_inflight_ = 0;              // drops between the retired check and madvise's end
	bool empty_staging_job_ = false;      // post_empty_staging() for the evictor
	std::condition_variable evictor_cv_;  // wakes the evictor: a channel, or stop
	std::condition_variable evictors_cv_; // drops_inflight_ or evictor_running_ fell
	int stop_fd_ = -1;                    // eventfd that stops the monitor
	pthread_t monitor_{};
	bool monitor_running_ = false;
	int fork_pipe_[2] = {-1, -1}; // the child reports "copied" to the parent
	// Why fork_prepare could not make the staged pages durable ("": it
	// did, or there were none); the child exits with it.
	std::string fork_unsynced_;
	// The program's drops of private memory (remove_begin/end).
	DropLedger drops_;
	std::atomic<uint64_t> reconnects_{0};
	std::atomic<bool> stopping_{false};
	std::atomic<bool> given_up_{false};
};

} // namespace memfed::client
