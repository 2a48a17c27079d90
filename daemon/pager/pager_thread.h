// PagerThread: one fault-serving thread of the pager, with its own io_uring
// EventLoop, the processes assigned to it, and its channels to modules.
//
// A fault is handled start to finish on this thread: the uffd message is read
// when io_uring reports the uffd readable, the page is fetched on the thread's
// channel in the fault traffic class, and UFFDIO_COPY resolves it when the
// reply arrives. Nothing on that path allocates: fetch slots and buffers are
// preallocated, faults that find no slot or no budget wait in a fixed ring.
// Prefetch and write-back use the bulk traffic class and their own buffers,
// so they never hold a fault's slot; the channel sends fault requests first.
//
// Eviction of private memory (the pager cannot drop another process's
// anonymous pages itself; map_protocol.h): victims are chosen by CLOCK over
// the pager's view of use (a page's reference bit is set when a fault
// installs it and when it is first written; prefetched pages that no fault
// touched go first). Where the kernel has UFFDIO_MOVE, the client's evictor
// moves them into its staging area in one atomic step, and the dirty ones
// are written back from there (move_eviction.cc); elsewhere dirty victims
// are write-protected, copied out of /proc/<pid>/mem and written back, and
// the evictor drops them, every fault on a victim parked until the drop is
// done (eviction.cc). With MOVE, a client's uffd may also have WP_ASYNC: a
// first write then costs no fault, and written pages are found by
// PAGEMAP_SCAN and by their content (async_dirty.cc).
//
// One class, one file per concept (each says what it owns at its top):
//   pager_thread.cc       lifecycle, the thread, its pools and channels
//   uffd_events.cc        reading each process's uffds and fds, dispatch
//   private_faults.cc     faults, fetch, prefetch and install (private)
//   address_events.cc     REMOVE, UNMAP, REMAP and FORK events
//   shared_faults.cc      everything about shared windows
//   eviction.cc           eviction rounds of private memory
//   move_eviction.cc      the move path of a round
//   async_dirty.cc        finding written pages under WP_ASYNC
//   writeback.cc          write-back runs and sync waiters
//   control_requests.cc   map, sync, unmap, detach, stats
//   housekeeping.cc       the tick, retiring and reaping
//   region_deletion.cc    poisoning the mappings of a deleted region
//   colocation.cc         pinning a faulting thread beside this one
// with the policies as pure functions beside them (eviction_policy.h,
// colocation_policy.h, and the stream detector and run planning in
// prefetch.h) and the in-flight
// operations in pager_thread_ops.h.
//
// Thread-safety: the public methods marked "loop thread" must run on this
// thread (Pager posts them); start(), stop() and loop() may be called from
// any thread.
#pragma once

#include <sched.h>
#include <sys/types.h>

#include <atomic>
#include <functional>
#include <memory>
#include <set>
#include <thread>
#include <unordered_map>
#include <vector>

#include "daemon/pager/config.h"
#include "daemon/pager/eviction_policy.h"
#include "daemon/pager/process.h"
#include "daemon/pager/run_table.h"
#include "daemon/pager/shared_window.h"
#include "daemon/pager/uffd.h"
#include "daemon/service/federation.h"
#include "daemon/transport/channel.h"
#include "daemon/transport/event_loop.h"

namespace memfed::pager
{

// This thread's channel to one module, reopened after a failure.
struct ChannelSlot {
	ModuleId module;
	std::unique_ptr<Channel> channel;
	bool broken = false;
	uint64_t retry_at_ns = 0;
};

// Per-region and per-process counters gathered for "pager.stats".
struct StatsSnapshot {
	std::unordered_map<std::string, PageStats> regions;
	struct Proc {
		pid_t pid;
		uint64_t uffd_id;
		bool fork_child;
		PageStats stats;
		// Why it may wait: its eviction round, its pages by state, and
		// its pager thread's queues ("state" in pager.stats).
		nlohmann::json state;
	};
	std::vector<Proc> processes;
	std::set<const SharedWindow *> windows; // counted already
	// Pages whose write-back was dropped because their region had been
	// deleted (sent and answered not_found, or never sent).
	uint64_t writebacks_dropped = 0;
};

// colocation.cc: threads a pager that died had pinned (their records in
// `dir`) get their saved CPUs back, if they are still the threads recorded
// and still on the pin's CPU alone; every record is then removed.
void restore_recorded_pins(const std::string &dir);

class PagerThread
{
public:
	// `ids` hands out uffd and mapping ids unique across threads (fork
	// children get theirs here).
	PagerThread(Federation &fed, const PagerConfig &cfg, const UffdCaps &caps, int index,
	            std::atomic<uint64_t> *ids);
	~PagerThread();
	PagerThread(const PagerThread &) = delete;
	PagerThread &operator=(const PagerThread &) = delete;

	Status start();
	// Writes back what it can (bounded by the control timeout), closes every
	// uffd and joins the thread.
	void stop();
	EventLoop *loop() { return loop_.get(); }

	// Loop thread: takes over a process (its uffds start being read).
	void adopt(std::unique_ptr<Process> p);
	// Loop thread: adds a mapping to process `uffd_id`, marks pages the
	// process already has as resident (a restarted daemon), wakes threads
	// blocked on the range. `m` has pages sized and region fields set.
	Status add_mapping(uint64_t uffd_id, std::unique_ptr<Mapping> m, ModuleId module);
	// Loop thread: writes back the dirty pages of [first, first+count) of
	// mapping `id` and calls done once they are durable (msync semantics).
	void sync(uint64_t mapping_id, uint32_t first, uint32_t count,
	          std::function<void(Status)> done);
	// Loop thread: sync of the whole mapping, then forgets it.
	void unmap(uint64_t mapping_id, std::function<void(Status)> done);
	// Loop thread: the client registered shared mapping `id` ("map.ready").
	// done once the window is within its budget (a mapping with a budget
	// may join a window that is resident beyond it), or when eviction
	// cannot bring it there.
	void mapping_ready(uint64_t mapping_id, std::function<void(Status)> done);
	// Loop thread: writes back the process's dirty pages it can still read,
	// then closes its uffds.
	void detach(uint64_t uffd_id, std::function<void()> done);
	// Loop thread: adds this thread's counters to `out`.
	void collect(StatsSnapshot *out);
	nlohmann::json process_state(const Process &p) const;
	// Loop thread: how this thread's channels reach their modules.
	void collect_transports(std::vector<TransportState> *out) const;
	// Loop thread: region `name` was deleted: the counters of its ended
	// mappings are dropped (each program's heap is a region of its own: kept,
	// they would grow the daemon and its stats with every program run).
	void forget_region_stats(const std::string &name) { retired_regions_.erase(name); }
	// Loop thread: region `region_id` of `module` was deleted: poisons
	// every mapping of it (region_deletion.cc); adds the pids of the
	// processes that mapped it to `pids` (may be null).
	void poison_region(ModuleId module, uint32_t region_id, std::vector<pid_t> *pids);
	// Called on this thread when a fetch or write-back finds a region
	// deleted (kNotFound) and its mappings here are poisoned: module,
	// region id, name, this thread's index. Set before start().
	std::function<void(ModuleId, uint32_t, const std::string &, int)> on_region_gone;

private:
	friend class ProcessOp;
	struct FetchOp;
	struct WriteOp;
	struct SharedJob;
	struct SharedWrite;
	struct ProbeOp;
	class TickOp;
	class SoonOp;
	struct PendingFault {
		Process *proc;
		uint64_t addr;
		uint32_t flags;
		uint64_t since_ns;
	};
	// A fixed-capacity FIFO that never allocates after construction.
	struct FaultRing {
		std::vector<PendingFault> slots;
		size_t head = 0, size = 0;
		bool push(const PendingFault &f);
		bool pop(PendingFault *f);
	};
	// A run of pages claimed for write-back (kWbInFlight set), waiting for
	// a buffer or being written.
	struct WbRun {
		Mapping *m;
		uint32_t first, count;
		uint64_t id;
	};
	// Completes once every run claimed before it (id < end_id) is durable.
	// A sync gets a second pass: pages that were being written when it
	// started and were written to again must be written once more.
	struct WbWaiter {
		Mapping *m; // for the second pass; null: none
		uint32_t first, count;
		uint64_t end_id;
		uint64_t failures_at_start;
		bool second_pass_done;
		std::function<void(Status)> done;
	};

	void run();
	void arm(Process *p, ProcessOp *op, int kind);
	void on_op(Process *p, int kind, int res, uint32_t flags);
	// Reads `uffd`, one of p's (its uffd or its window uffd), until empty.
	void drain_uffd(Process *p, int uffd);
	// Wakes the threads waiting at [addr, addr+len) on either of p's uffds:
	// for a range no mapping (or more than one) accounts for.
	void wake_either(Process *p, uint64_t addr, uint64_t len);
	void handle_msg(Process *p, const uffd_msg &msg);
	void handle_fault(Process *p, uint64_t addr, uint32_t flags, uint32_t ptid, bool retry);
	void handle_remove(Process *p, uint64_t start, uint64_t end);
	void handle_unmap(Process *p, uint64_t start, uint64_t end);
	void handle_remap(Process *p, uint64_t from, uint64_t to, uint64_t len);
	void handle_fork(Process *parent, int child_uffd);
	void learn_pid(Process *p, uint32_t ptid);

	bool admit(Mapping *m) const;
	ChannelSlot *channel(ModuleId module);
	bool issue_fetch(Mapping *m, uint32_t idx, bool write, uint64_t t0);
	// Shows a fault at `idx` to the mapping's stream detector: true with
	// `plan` filled when pages should be prefetched. Counts prefetch hits
	// and drops what a recycled stream held for its tripwire.
	bool plan_prefetch(Mapping *m, uint32_t idx, uint32_t max_window, PrefetchPlan *plan);
	void prefetch(Mapping *m, uint32_t idx);
	void install_zero(Mapping *m, uint32_t idx, bool write);
	void install_held(Mapping *m, uint32_t idx, int stream, bool write);
	void on_fetch_done(FetchOp *op, const Status &st);
	bool install_run(FetchOp *op);
	void release_fetch(FetchOp *op);
	// Installs that the kernel refused with EAGAIN while an address-space
	// event was pending; retried once events are read.
	void retry_copies();
	void arm_soon();
	void fail_unsent_writes();
	void after_install(Mapping *m);
	void retry_waiting();
	void set_gone(Mapping *m, uint32_t i);
	void drop_held(Mapping *m, uint32_t idx);

	// Kind "shared" (shared_window.h).
	void shared_fault(Mapping *m, uint32_t idx, uint32_t flags, bool retry);
	void shared_fetch_done(FetchOp *op, const Status &st);
	void shared_prefetch(Mapping *m, uint32_t idx);
	void maybe_evict_window(Mapping *m);
	// A job from the pool for mapping `m` (counted in its inflight).
	SharedJob *take_shared_job(Mapping *m);
	void release_shared_job(SharedJob *job);
	SharedWrite *take_shared_write();
	// Snapshots the changed pages of window pages [first, first+count) (only
	// Evicting ones for an eviction job) and writes them back; the job
	// finishes after (finish_shared_job).
	void shared_writeback(SharedJob *job, uint32_t first, uint32_t count);
	void on_shared_write(SharedWrite *w, const Status &st);
	void finish_shared_job(SharedJob *job);
	// The shared side of the entry points that serve both kinds; each
	// chooses once, at its top.
	void shared_flush(Mapping *m, uint32_t first, uint32_t count,
	                  std::function<void(Status)> done);
	Status add_shared_mapping(Process *p, std::unique_ptr<Mapping> m);
	// `n` (proc set) maps the window of `from` from window page
	// `window_first` on: a part moved by mremap, or a fork child's copy.
	void join_window(Mapping *n, Mapping *from, uint32_t window_first);
	void leave_window(Mapping *m);
	void collect_window(Mapping *m, StatsSnapshot *out, PageStats *ps);
	void finish_window_eviction(Mapping *m, const std::vector<uint32_t> &victims, bool ok);
	// Answers the held "map.ready"s whose window is within its budget or
	// cannot be trimmed further (`failed`: a window whose eviction round
	// just failed), starting a round for the others where none runs.
	void check_trim_waiters(const SharedWindow *failed);
	// Region deletion (region_deletion.cc).
	void poison_mapping(Mapping *m);
	// Empties the window of a deleted region; false if it was already.
	bool window_gone(SharedWindow &w) REQUIRES(w.mu);
	// A module answered kNotFound for mapping m's region.
	void region_gone_found(Mapping *m);
	// A fault on a private mapping of a deleted region.
	void gone_fault(Mapping *m, uint32_t idx, uint32_t flags);
	// SIGBUS for the thread that faulted at `addr` (UFFDIO_POISON).
	void poison_fault(Mapping *m, uint64_t addr);
	// Lets a fault on a page that is still present retry (a WP fault
	// gets the protection lifted); never leaves the thread waiting.
	void let_through(int uffd, uint64_t addr, uint32_t flags);
	// The pages of `op` not yet installed go back to Remote, uninstalled.
	void abandon_fetch(FetchOp *op);
	// A delete elsewhere (on a remote module, or on this node's module by
	// another node) shows only in a module's answer: every second, one page
	// of each region this thread maps with pages resident is read, so that
	// mappings that never fault (no budget) learn of it too.
	void probe_regions();
	void on_probe_done(ProbeOp *op, const Status &st);
	// sync for either kind.
	void flush(Mapping *m, uint32_t first, uint32_t count, std::function<void(Status)> done);

	void maybe_evict(Process *p);
	// A demand fault on page i of private mapping m: if it was evicted
	// soon before, it earns extra CLOCK turns (refault.h).
	void note_refault(Mapping *m, uint32_t i);
	void check_eviction(Process *p);
	void send_drop(Process *p);
	// A reply on the evict channel (either kind), or its end.
	void on_evict_reply(Process *p, int res);
	void finish_eviction(Process *p, bool dropped);
	// The round is over: the next may start.
	void end_round(Process *p);
	void zero_dropped_page(Mapping *m, uint32_t i);
	// The move path (move_eviction.cc).
	bool moves_victims(const Process *p) const;
	// Index of page i of m among the round's victims (its slot), or -1.
	int victim_index(const Process *p, const Mapping *m, uint32_t i) const;
	uint64_t slot_addr(const Process *p, int k) const;
	void send_move(Process *p);
	void send_empty(Process *p);
	void send_move_packet(Process *p, uint64_t size);
	// `n_hashes`: content hashes at the reply's end (MoveReply).
	void on_move_reply(Process *p, uint32_t n_hashes);
	void settle_moved(Process *p, size_t k, uint32_t n, bool moved);
	void check_move_round(Process *p);
	void finish_move_round(Process *p);
	void move_channel_lost(Process *p);
	// A fault on a Staged page: installed from its slot.
	void serve_staged(Mapping *m, uint32_t idx);
	// Dirtiness under WP_ASYNC (async_dirty.cc).
	void remember_content(Mapping *m, uint32_t first, uint32_t n, const uint8_t *bytes);
	// PAGEMAP_SCAN with re-protect over [first, first+count): the resident
	// pages written since the last scan become dirty (and get `flags`).
	void find_written(Mapping *m, uint32_t first, uint32_t count, uint8_t flags = 0);
	void note_recent_writes(Mapping *m, uint32_t idx);
	void mark_written_victims(Process *p);
	void check_staged_content(Process *p, uint32_t n_hashes);
	bool open_pagemap(Process *p);

	uint32_t read_pages(Process *p, uint64_t addr, uint8_t *buf, uint32_t n);
	// Claims the dirty pages of [first, first+count) and queues them.
	void claim_writeback(Mapping *m, uint32_t first, uint32_t count);
	void claim_run(Mapping *m, uint32_t first, uint32_t count);
	void pump_writeback();
	bool issue_write(const WbRun &run, uint32_t *first);
	// `sent`: false for a write failed by the pager itself, never sent
	// because its channel was broken when it was made (fail_unsent_writes).
	void on_write_done(WriteOp *op, const Status &st, bool sent = true);
	void add_waiter(Mapping *m, uint32_t first, uint32_t count, bool second_pass,
	                std::function<void(Status)> done);
	void check_waiters();
	// Whether pages of [first, first+count) of `m` the program dropped
	// are not yet zero on the module: victims of the eviction round
	// (their zeroes come at its end), or zeroes not yet written.
	enum class ZeroesPending { kNone, kRound, kWrites };
	ZeroesPending zeroes_pending(const Mapping *m, uint32_t first, uint32_t count) const;

	void tick();
	// colocation.cc: once a window, pins the thread that raises nearly all
	// of a process's faults to this thread's CPU, or lets it go.
	void colocation_window();
	void start_colocation(Process *p, pid_t tid, uint32_t faults);
	// Gives the pinned thread (if its process is still there) and, with
	// `restore_self`, the calling thread (this pager thread) their CPUs
	// back.
	void stop_colocation(bool restore_self = true);
	// MoveRequest flags that tell p's evictor to run on the pin's CPU
	// (kMoveOnCpu), or 0 when p is not the pinned process.
	uint32_t evictor_cpu_flags(const Process *p) const;
	// Threads and child processes that inherited the pin: given the
	// pinned thread's own CPUs back.
	void release_inheritors();
	// The pin's record in cfg_.pin_dir, written when it starts and
	// removed when it ends.
	void record_pin();
	void erase_pin();
	void retire(Mapping *m);
	void kill_process(Process *p, const char *why);
	// Frees dead mappings and processes on the next tick (never while a
	// caller may be iterating over them).
	void reap();
	void reap_now();
	Process *find_process(uint64_t uffd_id);
	Mapping *find_mapping(uint64_t mapping_id);

	Federation &fed_;
	const PagerConfig &cfg_;
	const UffdCaps &caps_;
	int index_;
	BudgetPolicy policy_;
	std::unique_ptr<EventLoop> loop_;
	std::thread thread_;
	std::atomic<bool> running_{false};

	std::vector<std::unique_ptr<Process>> procs_;
	std::unordered_map<uint64_t, std::unique_ptr<ChannelSlot>> channels_;
	std::vector<std::unique_ptr<Mapping>> dying_; // dead, ops still in flight
	std::unordered_map<std::string, PageStats> retired_regions_;

	std::vector<std::unique_ptr<FetchOp>> fetch_ops_;
	FetchOp *free_fault_ = nullptr;
	FetchOp *free_bulk_ = nullptr;
	uint32_t free_fault_count_ = 0;
	uint32_t free_bulk_count_ = 0;
	uint32_t bulk_cap_ = 0;          // pages a bulk FetchOp holds
	std::vector<FetchRun> run_plan_; // prefetch runs being issued
	bool reap_pending_ = false;
	std::vector<FetchOp *> copy_retry_; // installs that got EAGAIN
	// Writes for a module whose channel is unusable: failed at the next turn.
	std::vector<WriteOp *> failed_writes_;
	std::vector<SharedWrite *> failed_shared_;
	// Shared windows' write-back pools (shared_faults.cc).
	std::vector<std::unique_ptr<SharedJob>> shared_jobs_;
	SharedJob *free_shared_jobs_ = nullptr;
	std::vector<std::unique_ptr<SharedWrite>> shared_writes_;
	SharedWrite *free_shared_writes_ = nullptr;
	uint8_t *shared_scratch_ = nullptr; // kWritePages pages read from a window
	std::vector<std::unique_ptr<WriteOp>> write_ops_;
	WriteOp *free_write_ = nullptr;
	std::vector<WbRun> wb_queue_;
	size_t wb_head_ = 0;
	RunTable runs_; // unfinished runs
	uint64_t wb_failures_ = 0;
	uint64_t wb_dropped_ = 0; // StatsSnapshot::writebacks_dropped, this thread's
	uint64_t last_fetch_error_ns_ = 0;
	std::vector<WbWaiter> waiters_;
	// "map.ready" replies held until the window is trimmed to its budget.
	struct TrimWaiter {
		uint64_t mapping_id;
		std::function<void(Status)> done;
	};
	std::vector<TrimWaiter> trim_waiters_;
	std::atomic<uint64_t> *ids_;
	FaultRing waiting_; // admitted later: no slot or no budget
	FaultRing orphans_; // no mapping (yet)
	FaultRing retry_;   // fetch failed: retried on the tick
	std::unique_ptr<TickOp> tick_op_;
	std::unique_ptr<SoonOp> soon_op_;
	__kernel_timespec soon_ts_{};
	std::vector<uint8_t> zero_;
	// Pages read from staging slots (serve_staged, check_staged_content).
	std::vector<uint8_t> stage_buf_;
	std::vector<uint8_t> hashed_; // check_staged_content's, kept for its capacity
	uint64_t last_map_ns_ = 0;
	// Region probes (region_deletion.cc): a pool, grown on the tick.
	std::vector<std::unique_ptr<ProbeOp>> probes_;
	uint64_t next_probe_ns_ = 0;
	// Colocation (colocation.cc): at most one thread pinned beside this
	// one at a time.
	struct Colocated {
		Process *proc = nullptr; // nullptr: none
		pid_t tid = 0;
		int cpu = -1;
		cpu_set_t saved; // the thread's CPUs before the pin
		// Threads of the process and children of the thread seen since
		// the pin: each checked once for an inherited pin.
		std::vector<pid_t> seen;
	};
	Colocated colocated_{};
	cpu_set_t own_cpus_{}; // this thread's CPUs when it started
	uint64_t next_colocation_ns_ = 0;
};

} // namespace memfed::pager
