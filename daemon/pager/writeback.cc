// Write-back of private mappings: dirty pages are claimed in runs, copied
// out of the process (write-protected first) into preallocated buffers and
// written to the module in the bulk class; sync waiters complete once every
// run claimed before them is durable.
//
// Thread: the pager thread that owns the mappings.
#include "daemon/pager/pager_thread.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>

#include <algorithm>
#include <cstring>

#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

void PagerThread::claim_writeback(Mapping *m, uint32_t first, uint32_t count)
{
	uint32_t end = std::min(m->scan_end(), first + count);
	// A victim of a move round is not read before the move is answered:
	// its bytes may be on their way to a slot (move_eviction.cc).
	const bool moving = m->proc->evict.active && m->proc->evict.by_move;
	auto dirty = [m, moving](uint32_t i) {
		const Page &pg = m->pages[i];
		return (pg.flags & kDirty) && !(pg.flags & kWbInFlight) &&
		       pg.state != PageState::kGone && pg.state != PageState::kFetching &&
		       !(moving && pg.state == PageState::kEvicting);
	};
	for (uint32_t i = first; i < end;) {
		if (!dirty(i)) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < end && j - i < kWritePages && dirty(j))
			j++;
		claim_run(m, i, j - i);
		i = j;
	}
}

void PagerThread::claim_run(Mapping *m, uint32_t first, uint32_t count)
{
	Process *p = m->proc;
	if (p->fork_child || !m->writable || m->region_gone)
		return; // a child's private copy never goes back to the region, nor
		        // anything to a deleted one
	for (uint32_t i = first; i < first + count; i++)
		m->pages[i].flags = uint8_t((m->pages[i].flags & ~kDirty) | kWbInFlight);
	uint64_t id = runs_.add();
	m->inflight++;
	wb_queue_.push_back({m, first, count, id});
}

// Issues queued runs while WriteOps are free. Completions never run inside
// it (the Channel contract, and failed_writes_ for an unusable channel), so
// nothing here is re-entered; waiters are checked once at the end.
void PagerThread::pump_writeback()
{
	bool finished = false;
	while (wb_head_ < wb_queue_.size() && free_write_ != nullptr) {
		WbRun &run = wb_queue_[wb_head_];
		uint32_t f = run.first;
		bool all = issue_write(run, &f);
		if (!all) {
			run.count -= f - run.first;
			run.first = f;
			break;
		}
		RunTable::Run *rs = runs_.find(run.id);
		rs->issued_all = true;
		Mapping *m = run.m;
		wb_head_++;
		m->inflight--;
		if (rs->outstanding == 0) {
			runs_.finish(run.id);
			finished = true;
		}
		if (m->dead && m->inflight == 0)
			reap();
	}
	if (wb_head_ == wb_queue_.size()) {
		wb_queue_.clear();
		wb_head_ = 0;
	}
	if (finished)
		check_waiters();
}

// Writes the claimed pages of `run` from *first on, one homogeneous piece
// per WriteOp; false (with *first advanced) when out of WriteOps, or when
// the kernel refused to write-protect (EAGAIN): pump_writeback runs again soon.
bool PagerThread::issue_write(const WbRun &run, uint32_t *first)
{
	Mapping *m = run.m;
	Process *p = m->proc;
	uint32_t end = run.first + run.count;
	while (*first < end) {
		uint32_t i = *first;
		Page &pg = m->pages[i];
		bool live = !m->dead && !p->dead && !m->region_gone;
		bool zero = pg.state == PageState::kZero;
		if (p->mm_gone && !zero)
			live = false;
		// A staged page is read from its slot (move_eviction.cc).
		bool staged = pg.state == PageState::kStaged;
		int slot = staged ? victim_index(p, m, i) : -1;
		bool readable = pg.state == PageState::kResident ||
		                pg.state == PageState::kEvicting || (staged && slot >= 0);
		if ((pg.state == PageState::kEvicting || staged) && (pg.flags & kRemoved))
			readable = false; // the program dropped it: nothing to save
		if (!live || !(pg.flags & kWbInFlight) || !(zero || readable)) {
			if (m->region_gone && (pg.flags & kWbInFlight))
				wb_dropped_++;
			pg.flags &= uint8_t(~kWbInFlight);
			(*first)++;
			continue;
		}
		WriteOp *op = free_write_;
		if (op == nullptr)
			return false;
		uint32_t n = 1;
		const auto &victims = p->evict.victims;
		while (i + n < end && n < kWritePages) {
			const Page &q = m->pages[i + n];
			bool qzero = q.state == PageState::kZero;
			bool qstaged = q.state == PageState::kStaged;
			bool qread = (q.state == PageState::kResident ||
			              ((q.state == PageState::kEvicting || qstaged) &&
			               !(q.flags & kRemoved)));
			// Staged pages go together while their slots are contiguous.
			if (qstaged && (!staged || size_t(slot) + n >= victims.size() ||
			                victims[size_t(slot) + n] != std::make_pair(m, i + n)))
				break;
			if (!(q.flags & kWbInFlight) || qzero != zero || (!qzero && !qread) ||
			    qstaged != staged)
				break;
			n++;
		}
		const void *src = zero_.data();
		if (staged) {
			// Nothing writes a slot: no write-protect.
			uint32_t got = read_pages(p, slot_addr(p, slot), op->buf, n);
			if (got < n) {
				// The process is gone, or the slot was emptied under us
				// (a bug): kept dirty, never zero.
				LOG_WARN(kLog, "pid %d: reading staged page 0x%lx from its slot failed",
				         int(p->pid), (unsigned long)m->page_addr(i + got));
				m->pages[i + got].flags = uint8_t(
				        (m->pages[i + got].flags & ~kWbInFlight) | kDirty);
				if (got == 0) {
					(*first)++;
					continue;
				}
				n = got;
			}
			src = op->buf;
		} else if (!zero) {
			// Write-protect, then copy out: a write after this point
			// faults and marks the page dirty again.
			bool protected_ok = false;
			if (m->wp) {
				int r = uffd_writeprotect(p->uffd, m->page_addr(i),
				                          uint64_t(n) * kPageSize, true, false);
				if (r == -ESRCH) {
					// Exited: what it had not synced is gone with it.
					LOG_DEBUG(kLog,
					          "pid %d exited; dirty pages not written back",
					          int(p->pid));
					p->mm_gone = true;
					continue;
				}
				if (r == -EAGAIN) {
					// An address-space event is pending (the program's
					// MADV_DONTNEED, a fork): unprotected, the page could
					// change after the copy and the change be lost with
					// the drop. Again once the event is read.
					arm_soon();
					return false;
				}
				if (r < 0 && r != -ENOENT)
					LOG_WARN(kLog, "write-protecting 0x%lx+%u pages: %s",
					         (unsigned long)m->page_addr(i), n,
					         std::strerror(-r));
				protected_ok = r == 0;
			}
			uint32_t got = read_pages(p, m->page_addr(i), op->buf, n);
			if (got < n) {
				Page &lost = m->pages[i + got];
				lost.flags &= uint8_t(~kWbInFlight);
				if (protected_ok && (lost.state == PageState::kResident ||
				                     lost.state == PageState::kEvicting)) {
					// Its vma is there but the page is not: the zap of
					// a drop whose REMOVE event was read before the
					// page was installed (see read_pages). It reads as
					// zero, and so must the module.
					bool parked = lost.flags & kParked;
					set_gone(m, i + got);
					lost.state = PageState::kZero;
					lost.flags = kDirty;
					// A fault parked on a victim waits for this
					// round, which no longer has the page.
					if (parked)
						(void)uffd_wake(p->uffd, m->page_addr(i + got),
						                kPageSize);
				}
				// Otherwise unmapped under us, or the process is gone.
				if (got == 0) {
					(*first)++;
					continue;
				}
				n = got;
			}
			// What the module holds once this write is durable (a
			// failed write makes the pages dirty again).
			remember_content(m, i, n, op->buf);
			src = op->buf;
		}
		free_write_ = op->next;
		op->m = m;
		op->first = i;
		op->count = n;
		op->run = run.id;
		m->inflight++;
		runs_.find(run.id)->outstanding++;
		*first = i + n;
		if (m->chan->broken || !m->chan->channel) {
			// Fails at the next turn, as a channel's request would.
			failed_writes_.push_back(op); // reserved: never allocates
			arm_soon();
			continue;
		}
		m->chan->channel->write_pages(wire::TrafficClass::kBulk, m->region_id,
		                              m->page_fa(i), n, src, op);
	}
	return true;
}

// Copies `n` pages at `addr` of the process into `buf` through its
// /proc/<pid>/mem; returns how many pages it copied, from the first.
//
// Not process_vm_readv: its page walk faults a missing page in, and a
// missing page of a userfaultfd range waits for its pager -- this thread.
// A page the pager counts as resident can be missing: the kernel clears a
// REMOVE event's mmap_changing as the event is read, before it zaps the
// range, so a copy into the range in between succeeds and is then zapped.
// Reads through /proc/<pid>/mem take no fault retries, so a missing page of
// a userfaultfd range ends the read there (EIO) instead.
uint32_t PagerThread::read_pages(Process *p, uint64_t addr, uint8_t *buf, uint32_t n)
{
	if (p->mem_fd < 0) {
		char path[64];
		std::snprintf(path, sizeof(path), "/proc/%d/mem", int(p->pid));
		p->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (p->mem_fd < 0) {
			LOG_WARN(kLog, "pid %d: opening %s: %s; its pages cannot be written back",
			         int(p->pid), path, std::strerror(errno));
			return 0;
		}
	}
	uint64_t done = 0, len = uint64_t(n) * kPageSize;
	while (done < len) {
		ssize_t r = pread(p->mem_fd, buf + done, len - done, off_t(addr + done));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		done += uint64_t(r);
	}
	return uint32_t(done / kPageSize);
}

void PagerThread::on_write_done(WriteOp *op, const Status &st, bool sent)
{
	Mapping *m = op->m;
	bool ok = st.is_ok();
	// The region was deleted: there is nothing to keep the pages for.
	bool gone = m->region_gone || st.code() == Code::kNotFound;
	for (uint32_t i = op->first; i < op->first + op->count; i++) {
		Page &pg = m->pages[i];
		pg.flags &= uint8_t(~kWbInFlight);
		if (gone)
			continue;
		if (!ok && pg.state != PageState::kGone) {
			pg.flags |= kDirty;
			if ((pg.state == PageState::kEvicting || pg.state == PageState::kStaged) &&
			    !m->proc->dead)
				m->proc->evict.failed = true;
		}
		if (!m->wp && pg.state != PageState::kGone && pg.state != PageState::kZero)
			pg.flags |= kDirty; // without write-protect nothing is ever clean
	}
	if (ok) {
		m->stats.writebacks += op->count;
	} else if (gone) {
		wb_dropped_ += op->count; // dropped, counted, not logged
		if (!m->region_gone && !m->dead && !m->proc->dead)
			region_gone_found(m);
	} else {
		wb_failures_++;
		LOG_WARN(kLog, "writing back %u pages of region '%s': %s", op->count,
		         m->region.c_str(), st.to_string().c_str());
		// Only the channel's own failure says the channel is broken. A write
		// failed unsent was made while an earlier channel was broken; the
		// one reopened since must not be torn down for it (that cycle, a
		// new channel every half second and never a write through it, hung
		// module_stopped once the bulk connection's writes began to fail at
		// the reopening instead of with the fault connection's timeout).
		if (sent && st.code() == Code::kUnavailable && !m->chan->broken) {
			m->chan->broken = true;
			m->chan->retry_at_ns = now_ns() + kChannelRetryNs;
		}
	}
	// The program dropped a page while this write of it was in flight:
	// its zeroes, held back until now (one write per page in flight), go
	// at once, as handle_remove's do.
	if (ok && !gone && !m->dead)
		for (uint32_t i = op->first; i < op->first + op->count; i++)
			if (m->pages[i].state == PageState::kZero && (m->pages[i].flags & kDirty))
				claim_writeback(m, i, 1);
	uint64_t id = op->run;
	op->m = nullptr;
	op->next = free_write_;
	free_write_ = op;
	m->inflight--;
	RunTable::Run *r = runs_.find(id);
	if (r != nullptr && --r->outstanding == 0 && r->issued_all) {
		runs_.finish(id);
		check_waiters();
	}
	pump_writeback();
	if (!m->proc->dead)
		check_eviction(m->proc);
	if (m->dead && m->inflight == 0)
		reap();
}

void PagerThread::fail_unsent_writes()
{
	// Swapped out first: failing one may queue more (for the next turn).
	std::vector<WriteOp *> ops;
	ops.swap(failed_writes_);
	for (WriteOp *op : ops)
		on_write_done(op,
		              Status(Code::kUnavailable,
		                     "module " + op->m->chan->module.to_string() + " unreachable"),
		              false);
	ops.clear();
	if (failed_writes_.empty())
		failed_writes_.swap(ops); // keeps the reserved capacity
	std::vector<SharedWrite *> shared;
	shared.swap(failed_shared_);
	for (SharedWrite *wr : shared)
		on_shared_write(wr, Status(Code::kUnavailable, "module unreachable"));
}

void PagerThread::add_waiter(Mapping *m, uint32_t first, uint32_t count, bool second_pass,
                             std::function<void(Status)> done)
{
	waiters_.push_back(
	        {m, first, count, runs_.next_id(), wb_failures_, !second_pass, std::move(done)});
	if (m != nullptr)
		m->inflight++;
	pump_writeback();
	check_waiters();
}

PagerThread::ZeroesPending PagerThread::zeroes_pending(const Mapping *m, uint32_t first,
                                                       uint32_t count) const
{
	const Process *p = m->proc;
	if (p->fork_child || !m->writable || m->region_gone)
		return ZeroesPending::kNone; // nothing of it goes to the module
	const Eviction &ev = p->evict;
	// A move round's victims are written once the move is answered, from
	// their slots: a sync waits until they are durable, not for the round's
	// end (libmemfed syncs its staged pages before a fork, while it serves
	// no request: the emptying would never come).
	if (ev.active)
		for (const auto &[vm, i] : ev.victims) {
			if (vm != m || i < first || i - first >= count)
				continue;
			const Page &pg = m->pages[i];
			if ((pg.state == PageState::kEvicting &&
			     (ev.by_move || (pg.flags & kRemoved))) ||
			    (pg.state == PageState::kStaged && (pg.flags & (kDirty | kWbInFlight))))
				return ZeroesPending::kRound;
		}
	uint32_t end = uint32_t(std::min<uint64_t>(m->scan_end(), uint64_t(first) + count));
	for (uint32_t i = first; i < end; i++)
		if (m->pages[i].state == PageState::kZero &&
		    (m->pages[i].flags & (kDirty | kWbInFlight)))
			return ZeroesPending::kWrites;
	return ZeroesPending::kNone;
}

void PagerThread::check_waiters()
{
	uint64_t lowest = runs_.lowest();
	for (size_t i = 0; i < waiters_.size();) {
		WbWaiter &w = waiters_[i];
		if (w.end_id > lowest) {
			i++;
			continue;
		}
		if (!w.second_pass_done && w.m != nullptr && !w.m->dead) {
			w.second_pass_done = true;
			uint64_t before = runs_.next_id();
			claim_writeback(w.m, w.first, w.count);
			if (runs_.next_id() != before) {
				w.end_id = runs_.next_id();
				pump_writeback();
				// pump may have finished runs and re-entered: restart.
				lowest = runs_.lowest();
				i = 0;
				continue;
			}
		}
		// The client forgets its program's drops once a sync of their
		// range is done: every dropped page in it must be zero on the
		// module by then, also one whose zeroes were claimed after this
		// sync began (a victim the program dropped during its eviction
		// gets them at the round's end, eviction.cc). Else a daemon
		// killed meanwhile would serve the page's old content.
		if (w.m != nullptr && !w.m->dead) {
			ZeroesPending z = zeroes_pending(w.m, w.first, w.count);
			if (z == ZeroesPending::kRound) {
				i++; // finish_eviction checks again
				continue;
			}
			if (z == ZeroesPending::kWrites) {
				claim_writeback(w.m, w.first, w.count);
				w.end_id = runs_.next_id();
				if (w.end_id > lowest) {
					pump_writeback();
					// pump may have finished runs and re-entered: restart.
					lowest = runs_.lowest();
					i = 0;
					continue;
				}
			}
		}
		WbWaiter done = std::move(w);
		waiters_.erase(waiters_.begin() + long(i));
		if (done.m != nullptr)
			done.m->inflight--;
		Status st =
		        wb_failures_ > done.failures_at_start
		                ? Status(Code::kUnavailable,
		                         "writing back to the module failed; dirty pages are kept "
		                         "and written again later (is the module reachable?)")
		                : Status::ok();
		done.done(st);
		if (done.m != nullptr && done.m->dead && done.m->inflight == 0)
			reap();
		lowest = runs_.lowest();
		i = 0;
	}
}

} // namespace memfed::pager
