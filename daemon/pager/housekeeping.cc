// Housekeeping on the pager thread's tick: reopening channels to modules
// that were unreachable, retrying faults that wait, orphans and stalled
// evictors; and retiring mappings and processes, freed once nothing in
// flight points at them.
//
// Thread: the pager thread.
#include "daemon/pager/pager_thread.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>

#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

void PagerThread::tick()
{
	// After stop() has left the loop, a tick still completes while the
	// channels' destructors run the loop: it must not touch them.
	if (!running_.load())
		return;
	if (reap_pending_)
		reap_now();
	uint64_t now = now_ns();
	for (auto &[id, cs] : channels_) {
		if (!cs->broken || now < cs->retry_at_ns)
			continue;
		cs->retry_at_ns = now + kChannelRetryNs;
		auto old = std::move(cs->channel); // completes its requests (failed)
		old.reset();
		auto ch = fed_.open_channel(loop_.get(), cs->module);
		if (ch) {
			cs->channel = std::move(*ch);
			cs->broken = false;
			LOG_INFO(kLog, "module %s reachable again", cs->module.to_string().c_str());
		}
	}
	retry_copies();
	PendingFault f;
	for (size_t n = retry_.size; n > 0 && retry_.pop(&f); n--)
		if (!f.proc->dead)
			handle_fault(f.proc, f.addr, f.flags, 0, true);
	for (size_t n = orphans_.size; n > 0 && orphans_.pop(&f); n--) {
		if (f.proc->dead)
			continue;
		Mapping *m = f.proc->find(f.addr);
		if (m != nullptr &&
		    m->pages[(f.addr - m->addr) / kPageSize].state != PageState::kGone) {
			handle_fault(f.proc, f.addr, f.flags, 0, true);
		} else if (now - std::max(f.since_ns, last_map_ns_) > kOrphanGraceNs) {
			// Registered memory no mapping claims (an mremap grew it):
			// plain anonymous memory, zero.
			LOG_WARN(kLog,
			         "uffd %lu: fault at 0x%lx outside every mapping; zero-filled",
			         (unsigned long)f.proc->uffd_id, (unsigned long)f.addr);
			(void)uffd_copy(f.proc->uffd, f.addr, zero_.data(), kPageSize, false,
			                nullptr);
			// The copy wakes the threads of that uffd only; the fault
			// may have come from the window uffd.
			wake_either(f.proc, f.addr, kPageSize);
		} else {
			orphans_.push(f);
		}
	}
	retry_waiting();
	for (auto &p : procs_) {
		if (p->dead)
			continue;
		const Eviction &ev = p->evict;
		bool asked = ev.by_move ? ev.phase != Eviction::Phase::kWriting : ev.drop_sent;
		if (ev.active && asked && now - ev.started_ns > 5'000'000'000ull) {
			LOG_WARN(kLog, "pid %d: the client's evictor has not answered for 5 s",
			         int(p->pid));
			p->evict.started_ns = now;
		}
		// A round whose last write-backs were all skipped (the program
		// dropped those victims while their write-protect waited out
		// its REMOVE event) had no completion to send its drop request.
		// A move round whose write-back failed tries again from here,
		// not at once: the module may be away for a while.
		if (p->evict.active && p->evict.by_move)
			p->evict.failed = false;
		if (p->evict.active && !p->evict.drop_sent)
			check_eviction(p.get());
		maybe_evict(p.get());
		for (auto &m : p->mappings)
			if (m->window && !m->dead)
				maybe_evict_window(m.get());
	}
	// Rounds of other pager threads end without telling this one.
	check_trim_waiters(nullptr);
	if (cfg_.colocate && now >= next_colocation_ns_) {
		next_colocation_ns_ = now + kColocationWindowNs;
		colocation_window();
	}
	if (now >= next_probe_ns_) {
		next_probe_ns_ = now + kRegionProbeNs;
		probe_regions();
	}
}

void PagerThread::retire(Mapping *m)
{
	if (m->dead)
		return;
	for (uint32_t i = 0; i < m->scan_end(); i++)
		if (m->pages[i].state != PageState::kGone)
			set_gone(m, i);
	m->dead = true;
	if (m->window)
		leave_window(m);
	m->proc->retired.add(m->stats);
	retired_regions_[m->region].add(m->stats);
	m->proc->last_hit = nullptr;
	reap();
}

void PagerThread::kill_process(Process *p, const char *why)
{
	if (p->dead)
		return;
	LOG_DEBUG(kLog, "uffd %lu (pid %d): %s", (unsigned long)p->uffd_id, int(p->pid), why);
	if (colocated_.proc == p)
		stop_colocation();
	for (auto &m : p->mappings)
		retire(m.get());
	p->dead = true;
	// An eviction round in progress ends here. Nothing would end it later:
	// its client is gone, and the completions of its write-backs, of
	// mappings now retired, check no dead process's round. Left active, it
	// kept the process, and the uffd, from being freed, and the program's
	// next munmap of memory on that uffd waited for ever for the pager to
	// read its UNMAP event.
	if (p->evict.active) {
		if (p->evict.by_move)
			finish_move_round(p);
		else
			finish_eviction(p, false);
	}
	for (ProcessOp *op :
	     {p->uffd_op.get(), p->evict_op.get(), p->pid_op.get(), p->window_uffd_op.get()}) {
		if (op->armed) {
			io_uring_sqe *s = loop_->sqe(nullptr);
			io_uring_prep_cancel(s, op, 0);
		}
	}
	if (p->evict_fd >= 0)
		shutdown(p->evict_fd, SHUT_RDWR);
	reap();
}

void PagerThread::reap()
{
	reap_pending_ = true;
}

void PagerThread::reap_now()
{
	reap_pending_ = false;
	// Mappings: freed once dead with nothing in flight, and not while an
	// eviction round of their process holds victims in them (it ends in
	// finish_eviction, which reaps again).
	for (auto &p : procs_) {
		if (p->evict.active)
			continue;
		auto &ms = p->mappings;
		for (size_t i = 0; i < ms.size();) {
			if (ms[i]->dead && ms[i]->inflight == 0) {
				ms.erase(ms.begin() + long(i));
				p->last_hit = nullptr;
			} else {
				i++;
			}
		}
	}
	// Processes: freed once dead, mappings gone and no operation armed.
	for (size_t i = 0; i < procs_.size();) {
		Process *p = procs_[i].get();
		bool busy = !p->mappings.empty() || p->uffd_op->armed || p->evict_op->armed ||
		            p->pid_op->armed || p->window_uffd_op->armed;
		if (!p->dead || busy) {
			i++;
			continue;
		}
		// Faults of this process that still wait anywhere are dropped.
		for (FaultRing *ring : {&waiting_, &orphans_, &retry_}) {
			PendingFault f;
			for (size_t n = ring->size; n > 0 && ring->pop(&f); n--)
				if (f.proc != p)
					ring->push(f);
		}
		p->close_fds();
		procs_.erase(procs_.begin() + long(i));
	}
}

} // namespace memfed::pager
