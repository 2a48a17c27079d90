// Kind "shared": mappings of a window backed by a pager-owned memfd that
// several processes map (shared_window.h). Faults fill the memfd and wake
// every mapper; prefetch fills runs; eviction write-protects victims in
// every mapper, writes back the changed ones and punches them out; a
// "map.ready" is answered once the window is within its budget.
//
// Thread: the pager thread of the mapping at hand; the window's state is
// shared with other pager threads and guarded by its mutex.
#include "daemon/pager/pager_thread.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "daemon/common/crc32c.h"
#include "daemon/pager/eviction_policy.h"
#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

void PagerThread::shared_fault(Mapping *m, uint32_t idx, uint32_t flags, bool retry)
{
	Process *p = m->proc;
	SharedWindow &w = *m->window;
	uint64_t addr = m->page_addr(idx);
	uint32_t wi = m->window_first + idx;
	MutexLock lk(&w.mu);
	Page &pg = w.pages[wi];
	if (w.region_gone) {
		// Deleted (region_deletion.cc): the memfd holds none of it, so
		// the access faults here and gets SIGBUS. Pages still being
		// fetched or evicted wake their waiters when they settle.
		if (pg.state == PageState::kFetching || pg.state == PageState::kEvicting) {
			pg.flags |= kParked;
			return;
		}
		lk.unlock();
		if (flags & UFFD_PAGEFAULT_FLAG_WP)
			let_through(m->uffd(), addr, flags);
		else
			poison_fault(m, addr);
		return;
	}
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (pg.state == PageState::kEvicting) {
			pg.flags |= kParked;
			return;
		}
		// Write-protection is only wanted while a page is evicted; a
		// leftover marker (the page was punched and filled again) goes.
		m->stats.wp_faults++;
		(void)uffd_writeprotect(m->uffd(), addr, kPageSize, false, false);
		return;
	}
	if (!retry)
		m->stats.faults++;
	switch (pg.state) {
	case PageState::kFetching:
		pg.flags |= kParked; // every mapper is woken when it is done
		lk.unlock();
		if (m->prefetch && cfg_.prefetch)
			shared_prefetch(m, idx); // a stream caught up with its prefetch
		return;
	case PageState::kEvicting:
		pg.flags |= kParked;
		return;
	case PageState::kResident:
		if (w.in_memfd(wi)) {
			(void)uffd_wake(m->uffd(), addr, kPageSize); // raced with the fill
			return;
		}
		// A hole where the pager put a page: the program punched it
		// (MADV_REMOVE). It reads as zero from now on.
		pg.state = PageState::kZero;
		w.resident--;
		break;
	default:
		break;
	}
	if (w.budget_pages && w.resident >= w.budget_pages) {
		lk.unlock();
		if (!waiting_.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(m->uffd(), addr, kPageSize);
		maybe_evict_window(m);
		return;
	}
	if (pg.state == PageState::kZero) {
		int r = w.fill(wi, zero_.data(), 1);
		if (r < 0)
			LOG_WARN(kLog, "zero-filling page %u of window %s: %s", wi, w.key.c_str(),
			         std::strerror(-r));
		pg.state = PageState::kResident;
		pg.flags = kRef;
		w.crc[wi] = kCrcUnknown; // the module still has the old content
		w.resident++;
		w.wake_all(wi, 1);
		return;
	}
	ChannelSlot *cs = m->chan;
	FetchOp *op = free_fault_;
	if (cs->broken || !cs->channel || op == nullptr) {
		lk.unlock();
		FaultRing &ring = (cs->broken || !cs->channel) ? retry_ : waiting_;
		if (!ring.push({p, addr, flags, now_ns()}))
			(void)uffd_wake(m->uffd(), addr, kPageSize);
		return;
	}
	free_fault_ = op->next;
	free_fault_count_--;
	pg.state = PageState::kFetching;
	pg.flags = 0;
	w.resident++;
	lk.unlock();
	op->bulk = false;
	op->m = m;
	op->first = wi;
	op->count = 1;
	op->done = 0;
	op->t0 = now_ns();
	op->tripwire = kNoPage;
	op->stream = -1;
	m->inflight++;
	cs->channel->read_pages(wire::TrafficClass::kFault, w.region_id,
	                        w.fa_base + uint64_t(wi) * kPageSize, 1, op->buf, op);
	if (m->prefetch && cfg_.prefetch && !m->dead)
		shared_prefetch(m, idx);
}

void PagerThread::shared_fetch_done(FetchOp *op, const Status &st)
{
	Mapping *m = op->m;
	SharedWindow &w = *m->window;
	bool found_gone = false;
	{
		MutexLock lk(&w.mu);
		if (st.code() == Code::kNotFound)
			found_gone = window_gone(w);
		bool gone = w.region_gone; // nothing is filled, nothing retried
		for (uint32_t k = 0; k < op->count;) {
			if (w.pages[op->first + k].state != PageState::kFetching) {
				k++;
				continue;
			}
			uint32_t e = k + 1;
			while (e < op->count &&
			       w.pages[op->first + e].state == PageState::kFetching)
				e++;
			uint32_t wi = op->first + k, n = e - k;
			const uint8_t *src = op->buf + size_t(k) * kPageSize;
			int r = gone ? -ENOENT : st.is_ok() ? w.fill(wi, src, n) : -EIO;
			for (uint32_t j = 0; j < n; j++) {
				Page &pg = w.pages[wi + j];
				if (r == 0) {
					pg.state = PageState::kResident;
					pg.flags = op->bulk ? kPrefetched : kRef;
					w.crc[wi + j] =
					        crc32c(src + size_t(j) * kPageSize, kPageSize);
					continue;
				}
				pg.state = PageState::kRemote;
				pg.flags = 0;
				w.resident--;
				if (gone || op->bulk || wi + j < m->window_first ||
				    wi + j >= m->window_first + m->npages)
					continue; // the wake below lets waiters fault again
				uint64_t a = m->page_addr(wi + j - m->window_first);
				if (!m->dead && !m->proc->dead &&
				    !retry_.push({m->proc, a, 0u, now_ns()}))
					(void)uffd_wake(m->uffd(), a, kPageSize);
			}
			if (r != 0 && st.is_ok() && !gone)
				LOG_WARN(kLog, "filling pages %u+%u of window %s: %s", wi, n,
				         w.key.c_str(), std::strerror(-r));
			w.wake_all(wi, n);
			k = e;
		}
	}
	if (st.is_ok() && !op->bulk) {
		m->stats.fetches++;
		m->stats.add_latency(now_ns() - op->t0);
	} else if (!st.is_ok() && st.code() == Code::kUnavailable && !m->chan->broken) {
		m->chan->broken = true;
		m->chan->retry_at_ns = now_ns() + kChannelRetryNs;
		LOG_WARN(kLog, "module %s unreachable (%s); faults wait for it",
		         m->chan->module.to_string().c_str(), st.message().c_str());
	}
	if (found_gone && !m->dead && !m->proc->dead)
		region_gone_found(m);
	release_fetch(op);
	if (!m->dead)
		maybe_evict_window(m);
}

void PagerThread::shared_prefetch(Mapping *m, uint32_t idx)
{
	// A shared stream's window grows as a private one's does (prefetch.h),
	// bounded by the window's budget: streams here advance only when the
	// program catches up with pages in flight, so each advance must ask
	// for enough to keep the module sending while the program reads. With
	// the configured window alone, the 256 MiB lazy load of `make bench
	// BENCH=stream` over loopback took 0.485 s; growing, 0.336 s.
	PrefetchPlan plan;
	SharedWindow &w = *m->window;
	uint64_t budget;
	{
		MutexLock lk(&w.mu);
		budget = w.budget_pages;
	}
	if (!plan_prefetch(m, idx, policy_.stream_window_max(budget, 0), &plan))
		return;
	// No tripwires here: a page filled into the memfd is mapped by the
	// kernel without a fault, so streams advance on faults at in-flight
	// pages and at the end of what was fetched.
	if (plan.tripwire != kNoPage)
		m->streams.clear_tripwire(plan.stream);
	ChannelSlot *cs = m->chan;
	if (plan.stride != 1 || cs->broken || !cs->channel) {
		m->streams.requested_until(plan.stream, plan.first);
		return;
	}
	constexpr size_t kMaxRuns = 16;
	FetchRun runs[kMaxRuns];
	FetchOp *ops[kMaxRuns];
	size_t nr = 0;
	{
		MutexLock lk(&w.mu);
		uint64_t allowed = policy_.prefetch_room(w.resident, w.budget_pages);
		uint32_t next;
		FetchStop stop;
		nr = plan_fetch_runs(
		        plan,
		        [pages = w.pages.data() + m->window_first](uint32_t i) {
			        return pages[i].state == PageState::kRemote;
		        },
		        allowed, bulk_cap_, std::min<size_t>(kMaxRuns, free_bulk_count_), runs,
		        &next, &stop);
		if (stop != FetchStop::kNone)
			m->streams.requested_until(plan.stream, next);
		for (size_t k = 0; k < nr; k++) {
			ops[k] = free_bulk_;
			free_bulk_ = ops[k]->next;
			free_bulk_count_--;
			runs[k].first += m->window_first;
			for (uint32_t j = 0; j < runs[k].count; j++) {
				w.pages[runs[k].first + j].state = PageState::kFetching;
				w.pages[runs[k].first + j].flags = 0;
			}
			w.resident += runs[k].count;
		}
	}
	// Issued without the window's lock: the channel is this thread's own.
	for (size_t k = 0; k < nr; k++) {
		FetchOp *op = ops[k];
		op->bulk = true;
		op->m = m;
		op->first = runs[k].first;
		op->count = runs[k].count;
		op->done = 0;
		op->t0 = now_ns();
		op->tripwire = kNoPage;
		op->stream = -1;
		m->inflight++;
		m->stats.prefetched += runs[k].count;
		cs->channel->read_pages(wire::TrafficClass::kBulk, w.region_id,
		                        w.fa_base + uint64_t(runs[k].first) * kPageSize,
		                        runs[k].count, op->buf, op);
	}
}

void PagerThread::maybe_evict_window(Mapping *m)
{
	SharedWindow &w = *m->window;
	SharedJob *job = nullptr;
	{
		MutexLock lk(&w.mu);
		if (w.evicting || w.budget_pages == 0 || !caps_.shmem_wp || !w.all_ready() ||
		    w.region_gone)
			return;
		uint64_t want = std::min<uint64_t>(
		        policy_.eviction_want(w.resident, w.budget_pages, false), cfg_.evict_batch);
		if (want == 0)
			return;
		job = take_shared_job(m);
		job->eviction = true;
		std::vector<uint32_t> &victims = job->victims;
		Page *pages = w.pages.data(); // for the lambdas: mu is held
		clock_pick(
		        std::span<Page>(w.pages.data(), w.npages), {}, &w.clock_hand, want,
		        [](uint32_t) {}, // the window's dirtiness is its pages' CRCs
		        [m](uint32_t i) {
			        // Prefetched for this mapper's stream, not reached yet.
			        return i >= m->window_first && i < m->window_first + m->npages &&
			               m->streams.ahead_of_stream(i - m->window_first);
		        },
		        [pages, &victims](uint32_t i) {
			        pages[i].state = PageState::kEvicting;
			        pages[i].flags = 0;
			        victims.push_back(i);
		        });
		if (victims.empty()) {
			release_shared_job(job);
			return;
		}
		std::sort(victims.begin(), victims.end());
		w.evicting = true;
		// Writers are parked from here on, in every process.
		bool ok = true;
		for (size_t i = 0; i < victims.size();) {
			size_t j = i + 1;
			while (j < victims.size() && victims[j] == victims[j - 1] + 1)
				j++;
			ok &= w.write_protect_all(victims[i], uint32_t(j - i), true);
			i = j;
		}
		if (!ok) {
			LOG_WARN(kLog, "window %s: write-protect failed; eviction skipped",
			         w.key.c_str());
			for (uint32_t i : victims)
				w.pages[i].state = PageState::kResident;
			w.evicting = false;
			release_shared_job(job);
			return;
		}
	}
	uint32_t first = job->victims.front();
	uint32_t count = job->victims.back() - job->victims.front() + 1;
	shared_writeback(job, first, count);
}

void PagerThread::finish_window_eviction(Mapping *m, const std::vector<uint32_t> &victims, bool ok)
{
	SharedWindow &w = *m->window;
	{
		MutexLock lk(&w.mu);
		for (size_t i = 0; i < victims.size();) {
			size_t j = i + 1;
			while (j < victims.size() && victims[j] == victims[j - 1] + 1)
				j++;
			uint32_t a = victims[i], n = uint32_t(j - i);
			// A deleted region's pages were punched already.
			int r = w.region_gone ? 0 : ok ? w.punch(a, n) : -EIO;
			for (uint32_t k = a; k < a + n; k++) {
				Page &pg = w.pages[k];
				if (pg.state != PageState::kEvicting)
					continue;
				if (r == 0) {
					pg.state = PageState::kRemote;
					w.resident--;
					w.stats.evictions++;
				} else {
					pg.state =
					        PageState::kResident; // still write-protected: fine
				}
				pg.flags = 0;
			}
			w.wake_all(a, n);
			i = j;
		}
		w.evicting = false;
	}
	retry_waiting();
	if (!m->dead)
		maybe_evict_window(m);
	check_trim_waiters(ok ? nullptr : &w);
}

PagerThread::SharedJob *PagerThread::take_shared_job(Mapping *m)
{
	SharedJob *job = free_shared_jobs_;
	if (job == nullptr) {
		// Deeper than ever before: grow the pool (allocates).
		shared_jobs_.push_back(std::make_unique<SharedJob>());
		job = shared_jobs_.back().get();
		job->victims.reserve(cfg_.evict_batch);
	} else {
		free_shared_jobs_ = job->next;
	}
	job->next = nullptr;
	job->m = m;
	job->w = m->window;
	job->outstanding = 1; // the issuing code's own reference
	job->failed = false;
	job->eviction = false;
	job->victims.clear();
	m->inflight++;
	return job;
}

void PagerThread::release_shared_job(SharedJob *job)
{
	Mapping *m = job->m;
	job->w.reset();
	job->flush_done = nullptr;
	job->m = nullptr;
	job->next = free_shared_jobs_;
	free_shared_jobs_ = job;
	m->inflight--;
	if (m->dead && m->inflight == 0)
		reap();
}

PagerThread::SharedWrite *PagerThread::take_shared_write()
{
	SharedWrite *wr = free_shared_writes_;
	if (wr == nullptr) {
		// Deeper than ever before: grow the pool (allocates).
		shared_writes_.push_back(std::make_unique<SharedWrite>());
		wr = shared_writes_.back().get();
		wr->t = this;
		wr->buf = alloc_pages(kWritePages);
	} else {
		free_shared_writes_ = wr->next;
	}
	wr->next = nullptr;
	return wr;
}

void PagerThread::shared_writeback(SharedJob *job, uint32_t first, uint32_t count)
{
	Mapping *m = job->m;
	SharedWindow &w = *job->w;
	bool victims = job->eviction;
	SharedWrite *head = nullptr, **tail = &head;
	{
		MutexLock lk(&w.mu);
		// Nothing goes back to a deleted region.
		uint32_t end = w.region_gone ? first : std::min(w.npages, first + count);
		const Page *pages = w.pages.data(); // for the lambda: mu is held
		for (uint32_t i = first; i < end;) {
			auto held = [&](uint32_t k) {
				PageState s = pages[k].state;
				return victims ? s == PageState::kEvicting
				               : (s == PageState::kResident ||
				                  s == PageState::kEvicting);
			};
			if (!held(i)) {
				i++;
				continue;
			}
			uint32_t j = i + 1;
			while (j < end && j - i < kWritePages && held(j))
				j++;
			uint8_t *buf = shared_scratch_;
			int r = w.read(i, buf, j - i);
			if (r < 0) {
				LOG_WARN(kLog, "reading window %s: %s", w.key.c_str(),
				         std::strerror(-r));
				job->failed = true;
				i = j;
				continue;
			}
			// Changed pages only, in runs.
			for (uint32_t k = i; k < j;) {
				uint32_t c = crc32c(buf + size_t(k - i) * kPageSize, kPageSize);
				if (c == w.crc[k] && w.crc[k] != kCrcUnknown) {
					k++;
					continue;
				}
				SharedWrite *wr = take_shared_write();
				wr->job = job;
				wr->first = k;
				wr->count = 0;
				while (k < j) {
					const uint8_t *pg = buf + size_t(k - i) * kPageSize;
					uint32_t ck = crc32c(pg, kPageSize);
					if (ck == w.crc[k] && w.crc[k] != kCrcUnknown)
						break;
					std::memcpy(wr->buf + size_t(wr->count) * kPageSize, pg,
					            kPageSize);
					wr->crcs[wr->count++] = ck;
					k++;
				}
				*tail = wr;
				tail = &wr->next;
				job->outstanding++;
			}
			i = j;
		}
	}
	for (SharedWrite *wr = head; wr != nullptr;) {
		SharedWrite *next = wr->next;
		wr->next = nullptr;
		if (m->chan->broken || !m->chan->channel) {
			// Fails at the next turn, as a channel's request would.
			failed_shared_.push_back(wr);
			arm_soon();
		} else {
			m->chan->channel->write_pages(wire::TrafficClass::kBulk, w.region_id,
			                              w.fa_base + uint64_t(wr->first) * kPageSize,
			                              wr->count, wr->buf, wr);
		}
		wr = next;
	}
	// Drop the issuing reference.
	if (--job->outstanding == 0)
		finish_shared_job(job);
}

void PagerThread::on_shared_write(SharedWrite *wr, const Status &st)
{
	SharedJob *job = wr->job;
	SharedWindow &w = *job->w;
	bool found_gone = false;
	if (st.is_ok()) {
		MutexLock lk(&w.mu);
		for (uint32_t k = 0; k < wr->count; k++)
			w.crc[wr->first + k] = wr->crcs[k];
		w.stats.writebacks += wr->count;
	} else if (st.code() == Code::kNotFound) {
		// Deleted: nothing to keep these pages for.
		wb_dropped_ += wr->count;
		MutexLock lk(&w.mu);
		found_gone = window_gone(w);
	} else {
		job->failed = true;
		wb_failures_++;
		LOG_WARN(kLog, "writing back %u pages of window %s: %s", wr->count, w.key.c_str(),
		         st.to_string().c_str());
	}
	wr->job = nullptr;
	wr->next = free_shared_writes_;
	free_shared_writes_ = wr;
	if (found_gone && !job->m->dead && !job->m->proc->dead)
		region_gone_found(job->m);
	if (--job->outstanding == 0)
		finish_shared_job(job);
}

void PagerThread::finish_shared_job(SharedJob *job)
{
	bool ok = !job->failed;
	if (job->eviction) {
		finish_window_eviction(job->m, job->victims, ok);
		release_shared_job(job);
		return;
	}
	auto done = std::move(job->flush_done);
	release_shared_job(job);
	done(ok ? Status::ok()
	        : Status(Code::kUnavailable, "writing back to the module failed; the pages "
	                                     "stay in the window (is the module reachable?)"));
}

void PagerThread::mapping_ready(uint64_t mapping_id, std::function<void(Status)> done)
{
	Mapping *m = find_mapping(mapping_id);
	if (m == nullptr || !m->window) {
		done(Status(Code::kNotFound,
		            "shared mapping " + std::to_string(mapping_id) + " not found"));
		return;
	}
	{
		MutexLock lk(&m->window->mu);
		for (auto &mp : m->window->mappers)
			if (mp.mapping == m)
				mp.ready = true;
	}
	// A window joined with a smaller budget may be over it already (another
	// mapper, or a previous one whose pages are still in the memfd): the
	// client touches the mapping only after the reply, so it is trimmed
	// first.
	trim_waiters_.push_back({mapping_id, std::move(done)});
	check_trim_waiters(nullptr);
}

void PagerThread::check_trim_waiters(const SharedWindow *failed)
{
	// Rounds may finish synchronously and call back in here.
	std::vector<TrimWaiter> held;
	held.swap(trim_waiters_);
	for (TrimWaiter &tw : held) {
		Mapping *m = find_mapping(tw.mapping_id);
		bool answer = m == nullptr || !m->window;
		if (!answer) {
			SharedWindow &w = *m->window;
			auto state = [&w](bool *over, bool *evicting) {
				MutexLock lk(&w.mu);
				*over = w.budget_pages != 0 && w.resident > w.budget_pages;
				*evicting = w.evicting;
			};
			bool over, evicting;
			state(&over, &evicting);
			if (over && &w == failed) {
				LOG_WARN(kLog,
				         "window %s stays over its budget: writing back failed",
				         w.key.c_str());
				evicting = false;
			} else if (over && !evicting) {
				maybe_evict_window(m);
				state(&over, &evicting);
			}
			// Over with no round running (none could start): as far as
			// eviction gets.
			answer = !over || !evicting;
		}
		if (answer)
			tw.done(Status::ok());
		else
			trim_waiters_.push_back(std::move(tw));
	}
}

void PagerThread::shared_flush(Mapping *m, uint32_t first, uint32_t count,
                               std::function<void(Status)> done)
{
	SharedJob *job = take_shared_job(m);
	job->flush_done = std::move(done);
	shared_writeback(job, m->window_first + first, std::min(count, m->npages - first));
}

Status PagerThread::add_shared_mapping(Process *p, std::unique_ptr<Mapping> m)
{
	Mapping *raw = m.get();
	{
		MutexLock lk(&raw->window->mu);
		raw->window->mappers.push_back({p, raw, false});
	}
	p->mappings.push_back(std::move(m));
	last_map_ns_ = now_ns();
	(void)uffd_wake(raw->uffd(), raw->addr, uint64_t(raw->npages) * kPageSize);
	return Status::ok();
}

void PagerThread::join_window(Mapping *n, Mapping *from, uint32_t window_first)
{
	n->window = from->window;
	n->window_first = window_first;
	MutexLock lk(&n->window->mu);
	// A part moved by mremap is as ready as its mapping; a fork child's
	// copy is mapped already.
	bool ready = true;
	for (auto &mp : n->window->mappers)
		if (mp.mapping == from && n->proc == from->proc)
			ready = mp.ready;
	n->window->mappers.push_back({n->proc, n, ready});
}

void PagerThread::leave_window(Mapping *m)
{
	MutexLock lk(&m->window->mu);
	auto &v = m->window->mappers;
	v.erase(std::remove_if(v.begin(), v.end(),
	                       [m](const SharedWindow::Mapper &x) { return x.mapping == m; }),
	        v.end());
}

void PagerThread::collect_window(Mapping *m, StatsSnapshot *out, PageStats *ps)
{
	// A window's pages, evictions and write-backs are counted once per
	// region, in the first mapper seen.
	PageStats s = m->stats;
	MutexLock lk(&m->window->mu);
	s.resident = m->window->resident;
	if (out->windows.insert(m->window.get()).second) {
		PageStats ws = m->window->stats;
		ws.resident = m->window->resident;
		out->regions[m->region].add(ws);
	}
	ps->add(s);
	s.resident = 0;
	out->regions[m->region].add(s);
}

} // namespace memfed::pager
