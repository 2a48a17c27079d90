// The fault path of private mappings: a fault admitted under the budgets,
// the page fetched on the module's channel in the fault class (or zeroes
// installed, or a prefetched page handed over), its neighbours prefetched in
// the bulk class as the stream detector plans (prefetch.h), and the fetched
// runs installed with UFFDIO_COPY; faults that find no slot or no budget
// wait and are retried when a slot or room frees.
//
// Thread: the pager thread that owns the process; nothing here allocates.
#include "daemon/pager/pager_thread.h"

#include <algorithm>
#include <cstring>

#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

bool PagerThread::admit(Mapping *m) const
{
	const Process *p = m->proc;
	return (m->budget_pages == 0 || m->resident < m->budget_pages) &&
	       (p->budget_pages == 0 || p->resident < p->budget_pages);
}

void PagerThread::handle_fault(Process *p, uint64_t addr, uint32_t flags, uint32_t ptid, bool retry)
{
	addr &= ~(kPageSize - 1);
	if (p->pid == 0 && ptid != 0)
		learn_pid(p, ptid);
	if (cfg_.colocate && ptid != 0)
		p->fault_votes.add(ptid);
	Mapping *m = p->find(addr);
	uint32_t idx = m ? uint32_t((addr - m->addr) / kPageSize) : 0;
	if (m == nullptr && p->in_staging(addr)) {
		// Nothing reads an empty slot of the staging area (the pager
		// reads only slots it knows full): a bug somewhere. Zero-filled
		// so the thread goes on; the slot is full until emptied.
		LOG_WARN(kLog, "uffd %lu: fault at 0x%lx in the staging area; zero-filled",
		         (unsigned long)p->uffd_id, (unsigned long)addr);
		(void)uffd_copy(p->uffd, addr, zero_.data(), kPageSize, false, nullptr);
		return;
	}
	if (m == nullptr || m->pages[idx].state == PageState::kGone) {
		// Not (yet) ours: a mapping the client is still sending.
		if (!orphans_.push({p, addr, flags, now_ns()}))
			wake_either(p, addr, kPageSize);
		return;
	}
	if (m->window) {
		shared_fault(m, idx, flags, retry);
		return;
	}
	if (m->region_gone) {
		gone_fault(m, idx, flags);
		return;
	}
	Page &pg = m->pages[idx];
	bool write = flags & UFFD_PAGEFAULT_FLAG_WRITE;

	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (pg.state == PageState::kEvicting) {
			pg.flags |= kParked;
			return;
		}
		if (pg.state == PageState::kResident) {
			m->stats.wp_faults++;
			m->write_mix.on_write_fault();
			pg.flags = uint8_t((pg.flags | kDirty | kRef) & ~kPrefetched);
			int r = uffd_writeprotect(p->uffd, addr, kPageSize, false, false);
			if (r == -EAGAIN)
				// An address-space event is queued (e.g. the client's
				// evictor MADV_DONTNEED): the thread faults again once
				// it is read.
				(void)uffd_wake(p->uffd, addr, kPageSize);
			else if (r < 0 && r != -ENOENT)
				LOG_WARN(kLog, "un-write-protecting 0x%lx: %s", (unsigned long)addr,
				         std::strerror(-r));
			return;
		}
		(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}

	if (!retry) {
		m->stats.faults++;
		note_refault(m, idx);
	}
	switch (pg.state) {
	case PageState::kFetching:
		// The copy that completes the fetch wakes this thread; kParked
		// keeps a tripwire page from being held back instead.
		pg.flags |= write ? (kWriteFault | kParked) : kParked;
		// A stream that catches up with its prefetch asks for more.
		if (m->prefetch && cfg_.prefetch)
			prefetch(m, idx);
		return;
	case PageState::kEvicting:
		pg.flags |= kParked;
		return;
	case PageState::kStaged:
		serve_staged(m, idx);
		return;
	case PageState::kHeld: {
		int s = m->streams.stream_of_tripwire(idx);
		if (s >= 0) {
			install_held(m, idx, s, write);
			return;
		}
		pg.state = PageState::kRemote; // lost its buffer: fetch again
		m->resident--;
		p->resident--;
		break;
	}
	case PageState::kResident: {
		// Usually a fault that raced with the copy that resolved it: the
		// page is there (EEXIST) and the thread only needs waking. Else
		// the page was zapped after its copy by a drop whose REMOVE
		// event came first (writeback.cc, read_pages): zero, as that
		// drop left it, and the module must hear so.
		int r = uffd_copy(p->uffd, addr, zero_.data(), kPageSize, false, nullptr);
		if (r == 0)
			pg.set_flags(kDirty | kRef);
		else
			(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}
	default:
		break;
	}
	if (!admit(m)) {
		if (!waiting_.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(p->uffd, addr, kPageSize);
		maybe_evict(p);
		return;
	}
	if (pg.state == PageState::kZero) {
		install_zero(m, idx, write);
		return;
	}
	if (!issue_fetch(m, idx, write, now_ns())) {
		if (!waiting_.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}
	if (m->prefetch && cfg_.prefetch)
		prefetch(m, idx);
}

bool PagerThread::issue_fetch(Mapping *m, uint32_t idx, bool write, uint64_t t0)
{
	Process *p = m->proc;
	ChannelSlot *cs = m->chan;
	if (cs->broken || !cs->channel) {
		// Never a zero page instead of data: the fault waits for the module.
		if (!retry_.push({p, m->page_addr(idx), write ? UFFD_PAGEFAULT_FLAG_WRITE : 0u,
		                  now_ns()}))
			(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
		return true;
	}
	FetchOp *op = free_fault_;
	if (op == nullptr)
		return false;
	free_fault_ = op->next;
	free_fault_count_--;
	op->bulk = false;
	Page &pg = m->pages[idx];
	m->touch(idx);
	pg.state = PageState::kFetching;
	pg.set_flags(write ? kWriteFault : 0);
	m->resident++;
	p->resident++;
	m->inflight++;
	op->m = m;
	op->first = idx;
	op->count = 1;
	op->done = 0;
	op->t0 = t0;
	op->tripwire = kNoPage;
	op->stream = -1;
	cs->channel->read_pages(wire::TrafficClass::kFault, m->region_id, m->page_fa(idx), 1,
	                        op->buf, op);
	return true;
}

bool PagerThread::plan_prefetch(Mapping *m, uint32_t idx, uint32_t max_window, PrefetchPlan *plan)
{
	uint64_t hits = 0;
	uint32_t released = kNoPage;
	bool go = m->streams.on_fault(idx, m->npages, cfg_.prefetch_window, max_window, plan, &hits,
	                              &released);
	m->stats.prefetch_hits += hits;
	if (released != kNoPage)
		drop_held(m, released);
	return go;
}

void PagerThread::prefetch(Mapping *m, uint32_t idx)
{
	PrefetchPlan plan;
	Process *p = m->proc;
	if (!plan_prefetch(m, idx, policy_.stream_window_max(m->budget_pages, p->budget_pages),
	                   &plan))
		return;
	ChannelSlot *cs = m->chan;
	if (cs->broken || !cs->channel) {
		m->streams.requested_until(plan.stream, plan.first);
		return;
	}
	uint64_t allowed = std::min(policy_.prefetch_room(m->resident, m->budget_pages),
	                            policy_.prefetch_room(p->resident, p->budget_pages));
	// Sequential runs go in bulk buffers; strided pages one by one in
	// spare fault slots (half of them stay for faults).
	bool seq = plan.stride == 1;
	uint32_t half = cfg_.fault_slots / 2;
	size_t spare =
	        seq ? free_bulk_count_ : (free_fault_count_ > half ? free_fault_count_ - half : 0);
	uint32_t next;
	FetchStop stop;
	size_t n = plan_fetch_runs(
	        plan, [m](uint32_t i) { return m->pages[i].state == PageState::kRemote; }, allowed,
	        seq ? bulk_cap_ : 1, std::min(spare, run_plan_.size()), run_plan_.data(), &next,
	        &stop);
	bool trip_issued = false;
	for (size_t k = 0; k < n; k++) {
		const FetchRun r = run_plan_[k];
		FetchOp *op;
		if (seq) {
			op = free_bulk_;
			free_bulk_ = op->next;
			free_bulk_count_--;
		} else {
			op = free_fault_;
			free_fault_ = op->next;
			free_fault_count_--;
		}
		for (uint32_t j = 0; j < r.count; j++) {
			Page &pg = m->pages[r.first + j * plan.stride];
			m->touch(r.first + j * plan.stride);
			pg.state = PageState::kFetching;
			pg.set_flags(0);
		}
		op->bulk = true;
		m->resident += r.count;
		p->resident += r.count;
		m->inflight++;
		op->m = m;
		op->first = r.first;
		op->count = r.count;
		op->done = 0;
		op->t0 = now_ns();
		op->stream = plan.stream;
		op->tripwire = (plan.tripwire >= r.first && plan.tripwire < r.first + r.count)
		                       ? plan.tripwire
		                       : kNoPage;
		trip_issued |= op->tripwire != kNoPage;
		m->stats.prefetched += r.count;
		cs->channel->read_pages(wire::TrafficClass::kBulk, m->region_id,
		                        m->page_fa(r.first), r.count, op->buf, op);
	}
	if (stop != FetchStop::kNone) {
		m->streams.requested_until(plan.stream, next);
		if (stop == FetchStop::kBudget) {
			// The budget stops the stream: make room now rather than
			// when a fault finds the budget full.
			p->evict_pressure = true;
			maybe_evict(p);
		}
	}
	if (plan.tripwire != kNoPage && !trip_issued &&
	    m->streams.tripwire(plan.stream) == plan.tripwire)
		m->streams.clear_tripwire(plan.stream);
}

void PagerThread::install_zero(Mapping *m, uint32_t idx, bool write)
{
	Process *p = m->proc;
	Page &pg = m->pages[idx];
	int64_t copied = 0;
	int r = uffd_copy(p->uffd, m->page_addr(idx), zero_.data(), kPageSize, m->wp && !write,
	                  &copied);
	if (r < 0 && r != -EEXIST) {
		if (r == -EAGAIN) {
			// The address space is changing (an event is queued):
			// the thread will fault again once it is read.
			(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
			return;
		}
		LOG_WARN(kLog, "installing a zero page at 0x%lx: %s",
		         (unsigned long)m->page_addr(idx), std::strerror(-r));
		return;
	}
	if (r == -EEXIST)
		(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
	pg.state = PageState::kResident;
	pg.set_flags(kDirty | kRef); // the module still has the old content
	m->resident++;
	p->resident++;
	after_install(m);
}

void PagerThread::install_held(Mapping *m, uint32_t idx, int stream, bool write)
{
	Process *p = m->proc;
	Page &pg = m->pages[idx];
	bool wp = m->wp && !write && m->write_mix.install_protected();
	int r = uffd_copy(p->uffd, m->page_addr(idx), m->held.data() + size_t(stream) * kPageSize,
	                  kPageSize, wp, nullptr);
	if (wp && r == 0) {
		m->write_mix.on_protected_install(1);
		remember_content(m, idx, 1, m->held.data() + size_t(stream) * kPageSize);
	}
	if (r == -EAGAIN) {
		(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
		return;
	}
	m->streams.clear_tripwire(stream);
	pg.state = PageState::kResident;
	// A stream passes through its tripwire like through the pages around
	// it: no reference bit, so that CLOCK evicts the stream's pages as one
	// run instead of sparing one page in every window (each spared page
	// would later cost a drop of its own).
	pg.set_flags(uint8_t(wp ? 0 : kDirty));
	if (r == -EEXIST)
		(void)uffd_wake(p->uffd, m->page_addr(idx), kPageSize);
	if (r < 0 && r != -EEXIST)
		LOG_WARN(kLog, "installing prefetched page 0x%lx: %s",
		         (unsigned long)m->page_addr(idx), std::strerror(-r));
	if (m->prefetch && cfg_.prefetch)
		prefetch(m, idx);
	after_install(m);
}

void PagerThread::drop_held(Mapping *m, uint32_t idx)
{
	if (idx >= m->npages || m->pages[idx].state != PageState::kHeld)
		return;
	m->pages[idx].state = PageState::kRemote;
	m->pages[idx].set_flags(0);
	m->resident--;
	m->proc->resident--;
}

void PagerThread::on_fetch_done(FetchOp *op, const Status &st)
{
	Mapping *m = op->m;
	if (m->dead || m->proc->dead) {
		release_fetch(op);
		return;
	}
	Process *p = m->proc;
	if (m->region_gone || st.code() == Code::kNotFound) {
		// The region was deleted (its id is never reused): nothing is
		// installed, and the faults waiting here run again and are
		// poisoned, never retried.
		abandon_fetch(op);
		if (!m->region_gone)
			region_gone_found(m);
		release_fetch(op);
		return;
	}
	if (!st.is_ok()) {
		if (st.code() == Code::kUnavailable && !m->chan->broken) {
			m->chan->broken = true;
			m->chan->retry_at_ns = now_ns() + kChannelRetryNs;
			LOG_WARN(kLog, "module %s unreachable (%s); faults wait for it",
			         m->chan->module.to_string().c_str(), st.message().c_str());
		} else if (st.code() != Code::kUnavailable &&
		           now_ns() - last_fetch_error_ns_ > kErrorLogNs) {
			last_fetch_error_ns_ = now_ns();
			LOG_WARN(kLog, "fetching %u pages of region '%s' at page %u: %s", op->count,
			         m->region.c_str(), op->first, st.to_string().c_str());
		}
		// A page the module holds damaged, asked for by a fault: the
		// program gets SIGBUS there, as from a hardware memory error,
		// rather than wait forever (or get zeroes).
		bool poison = st.code() == Code::kCorrupt && !op->bulk &&
		              (p->features & UFFD_FEATURE_POISON);
		for (uint32_t i = op->first; i < op->first + op->count; i++) {
			Page &pg = m->pages[i];
			if (pg.state != PageState::kFetching)
				continue;
			bool write = pg.flags & kWriteFault;
			pg.state = (pg.flags & kRemoved) ? PageState::kZero : PageState::kRemote;
			pg.set_flags((pg.flags & kRemoved) ? kDirty : 0);
			m->resident--;
			p->resident--;
			if (poison && pg.state == PageState::kRemote) {
				int r = uffd_poison(p->uffd, m->page_addr(i), kPageSize);
				LOG_ERROR(
				        kLog,
				        "pid %d: page %u of region '%s' is damaged on its module; "
				        "poisoned, so the program gets SIGBUS there%s%s",
				        int(p->pid), i, m->region.c_str(), r < 0 ? ": " : "",
				        r < 0 ? std::strerror(-r) : "");
				m->stats.poisoned++;
				continue;
			}
			if (!op->bulk) {
				if (!retry_.push({p, m->page_addr(i),
				                  write ? UFFD_PAGEFAULT_FLAG_WRITE : 0u,
				                  now_ns()}))
					(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
			} else {
				// A fault may be waiting on this page: let it retry.
				(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
			}
		}
		if (op->tripwire != kNoPage && m->streams.tripwire(op->stream) == op->tripwire)
			m->streams.clear_tripwire(op->stream);
		release_fetch(op);
		return;
	}
	if (!op->bulk) {
		m->stats.fetches++;
		m->stats.add_latency(now_ns() - op->t0);
	}
	if (!install_run(op)) {
		copy_retry_.push_back(op); // reserved: never allocates
		arm_soon();
		return;
	}
	release_fetch(op);
	after_install(m);
}

// Installs the fetched pages of `op` from op->done on; false if the kernel
// said EAGAIN (an address-space event is pending) and the rest must wait.
bool PagerThread::install_run(FetchOp *op)
{
	Mapping *m = op->m;
	Process *p = m->proc;
	// A mapping may span several vmas (the program mprotect()s or madvise()s
	// part of it) and one copy must stay within one: after ENOENT on a run,
	// the rest goes page by page.
	bool one_by_one = false;
	if (m->region_gone && !p->dead && !m->dead)
		abandon_fetch(op); // deleted while the copy waited
	// Read pages go write-protected unless the mapping's writes say
	// otherwise (write_mix.h); one decision for the whole fetch.
	const bool protect = m->wp && m->write_mix.install_protected();
	while (op->done < op->count && !p->dead && !m->dead) {
		uint32_t i = op->first + op->done;
		Page &pg = m->pages[i];
		if (pg.state != PageState::kFetching) {
			op->done++;
			continue;
		}
		const uint8_t *src = op->buf + size_t(op->done) * kPageSize;
		if (i == op->tripwire && m->streams.tripwire(op->stream) == i) {
			if (!(pg.flags & (kRemoved | kWriteFault | kParked))) {
				std::memcpy(m->held.data() + size_t(op->stream) * kPageSize, src,
				            kPageSize);
				pg.state = PageState::kHeld;
				op->done++;
				continue;
			}
			// The program got there first: install it like the rest.
			m->streams.clear_tripwire(op->stream);
		}
		if (pg.flags & kRemoved) {
			// Dropped by the program while being fetched: zeroes.
			int r = uffd_copy(p->uffd, m->page_addr(i), zero_.data(), kPageSize, false,
			                  nullptr);
			if (r == -EAGAIN)
				return false;
			if (r == -EEXIST)
				(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
			pg.state = PageState::kResident;
			pg.set_flags(kDirty | kRef);
			op->done++;
			continue;
		}
		bool wp = protect && !(pg.flags & kWriteFault);
		uint32_t n = 1;
		while (!one_by_one && op->done + n < op->count) {
			const Page &q = m->pages[i + n];
			if (q.state != PageState::kFetching || (q.flags & kRemoved) ||
			    (i + n == op->tripwire && !(q.flags & kParked)) ||
			    (protect && !(q.flags & kWriteFault)) != wp)
				break;
			n++;
		}
		int64_t copied = 0;
		int r = uffd_copy(p->uffd, m->page_addr(i), src, uint64_t(n) * kPageSize, wp,
		                  &copied);
		uint32_t ok = uint32_t(uint64_t(copied) / kPageSize);
		if (wp && ok > 0) {
			m->write_mix.on_protected_install(ok);
			remember_content(m, i, ok, src);
		}
		uint8_t fl = uint8_t((op->bulk ? kPrefetched : kRef) | (wp ? 0 : kDirty));
		for (uint32_t j = 0; j < ok; j++) {
			m->pages[i + j].state = PageState::kResident;
			m->pages[i + j].set_flags(fl);
		}
		op->done += ok;
		if (r == 0 || ok == n)
			continue;
		Page &bad = m->pages[i + ok];
		if (r == -EAGAIN)
			return false;
		if (r == -EEXIST) {
			// Present already (a race we cannot see): keep it, and
			// since its content is unknown, treat it as written. A
			// failed copy wakes nobody: wake the faulting threads.
			bad.state = PageState::kResident;
			bad.set_flags(kDirty | kRef);
			(void)uffd_wake(p->uffd, m->page_addr(i + ok), kPageSize);
		} else if (r == -ESRCH) {
			kill_process(p, "address space gone");
			return true;
		} else if (r == -ENOENT && n - ok > 1) {
			// The run crosses a vma boundary.
			one_by_one = true;
			continue;
		} else {
			// No vma there any more (unmapped or moved): the
			// UNMAP/REMAP event tells the rest. A thread may still
			// wait on the page: it retries and learns the same.
			bad.state = PageState::kRemote;
			bad.set_flags(0);
			m->resident--;
			p->resident--;
			(void)uffd_wake(p->uffd, m->page_addr(i + ok), kPageSize);
			LOG_DEBUG(kLog, "copy to 0x%lx: %s", (unsigned long)m->page_addr(i + ok),
			          std::strerror(-r));
		}
		op->done++;
	}
	return true;
}

void PagerThread::release_fetch(FetchOp *op)
{
	Mapping *m = op->m;
	op->m = nullptr;
	// A mapping retired under its fetch (unmapped, or its process's
	// address space changed) served none of the faults waiting on the
	// fetch's pages: they run again on whatever is there now. Without the
	// wake a thread whose program unmapped the range without unregistering
	// it (munmap does not wake a fault) would wait for good.
	if (m->dead && !m->proc->dead)
		(void)uffd_wake(m->uffd(), m->page_addr(op->first),
		                uint64_t(op->count) * kPageSize);
	if (op->cap > 1) {
		op->next = free_bulk_;
		free_bulk_ = op;
		free_bulk_count_++;
	} else {
		op->next = free_fault_;
		free_fault_ = op;
		free_fault_count_++;
	}
	m->inflight--;
	if (m->dead && m->inflight == 0)
		reap();
	retry_waiting();
}

void PagerThread::after_install(Mapping *m)
{
	if (!m->dead && !m->proc->dead)
		maybe_evict(m->proc);
}

void PagerThread::retry_waiting()
{
	size_t n = waiting_.size;
	PendingFault f;
	while (n-- > 0 && free_fault_ != nullptr && waiting_.pop(&f)) {
		if (!f.proc->dead)
			handle_fault(f.proc, f.addr, f.flags, 0, true);
	}
}

void PagerThread::retry_copies()
{
	for (size_t n = copy_retry_.size(); n > 0 && !copy_retry_.empty(); n--) {
		FetchOp *op = copy_retry_.front();
		copy_retry_.erase(copy_retry_.begin());
		if (op->m->dead || op->m->proc->dead || install_run(op)) {
			Mapping *m = op->m;
			release_fetch(op);
			after_install(m);
		} else {
			copy_retry_.push_back(op);
		}
	}
	if (!copy_retry_.empty())
		arm_soon();
}

void PagerThread::arm_soon()
{
	// The thread whose event made the kernel refuse (EAGAIN) lets go of
	// it right after running again: look again very soon, not at the tick.
	if (soon_op_->armed)
		return;
	soon_op_->armed = true;
	soon_ts_.tv_sec = 0;
	soon_ts_.tv_nsec = 50'000;
	io_uring_prep_timeout(loop_->sqe(soon_op_.get()), &soon_ts_, 0, 0);
}

} // namespace memfed::pager
