// A region deleted while processes map it (`memfedctl region rm --force` on
// this node, or a delete on a remote module that a fetch answers with
// kNotFound): every mapping of it is poisoned. Its pages resident in the
// processes are dropped (private: by the client's evictor, with no
// write-back; shared: punched out of the window's memfd, which drops them
// from every mapper at once), and every fault on it from then on is
// answered with UFFDIO_POISON, so the program gets SIGBUS there, as from a
// memory error, instead of waiting or seeing the deleted bytes. Nothing of a
// deleted region is fetched, installed or written back again. A delete this
// node did not make shows in a module's kNotFound: for a fetch, a write-back,
// or the probe read every second of each region mapped with pages resident.
//
// Thread: the pager thread that owns the mappings; a window's state is
// shared with other pager threads and guarded by its mutex.
#include "daemon/pager/pager_thread.h"

#include <cstring>

#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

void PagerThread::poison_region(ModuleId module, uint32_t region_id, std::vector<pid_t> *pids)
{
	for (auto &p : procs_) {
		if (p->dead)
			continue;
		bool hit = false;
		for (auto &m : p->mappings) {
			if (m->dead || m->region_id != region_id || m->chan->module != module)
				continue;
			hit = true;
			poison_mapping(m.get());
		}
		if (hit && pids != nullptr)
			pids->push_back(p->pid);
	}
}

void PagerThread::poison_mapping(Mapping *m)
{
	if (m->region_gone)
		return;
	m->region_gone = true;
	if (m->window) {
		MutexLock lk(&m->window->mu);
		window_gone(*m->window);
		return;
	}
	for (uint32_t i = 0; i < m->scan_end(); i++) {
		Page &pg = m->pages[i];
		if (pg.flags & kDirty)
			wb_dropped_++;
		pg.flags &= uint8_t(~kDirty); // nothing of it is written back
		if (pg.state == PageState::kHeld)
			drop_held(m, i);
		else if (pg.state == PageState::kZero)
			pg.state = PageState::kRemote;
	}
	// Its resident pages go first in the next eviction round (eviction.cc),
	// dropped without write-back; faults on them wait for the drop and are
	// poisoned after it. In-flight fetches are not installed.
	maybe_evict(m->proc);
}

bool PagerThread::window_gone(SharedWindow &w)
{
	if (w.region_gone)
		return false;
	w.region_gone = true;
	// Out of the memfd, so out of every mapper's page tables: the next
	// access faults, and the fault is poisoned. Pages being fetched or
	// evicted settle when their operation ends.
	int r = w.punch(0, w.npages);
	if (r < 0)
		LOG_WARN(kLog, "window %s: dropping the pages of the deleted region: %s",
		         w.key.c_str(), std::strerror(-r));
	// Evicted pages keep a write-protect marker, which UFFDIO_POISON would
	// refuse: clear them in every mapper.
	(void)w.write_protect_all(0, w.npages, false);
	for (uint32_t i = 0; i < w.npages; i++) {
		Page &pg = w.pages[i];
		if (pg.state == PageState::kResident || pg.state == PageState::kHeld)
			w.resident--;
		if (pg.state != PageState::kFetching && pg.state != PageState::kEvicting) {
			pg.state = PageState::kRemote;
			pg.flags = 0;
		}
		w.crc[i] = kCrcUnknown;
	}
	w.wake_all(0, w.npages);
	return true;
}

void PagerThread::region_gone_found(Mapping *m)
{
	ModuleId module = m->chan->module;
	uint32_t id = m->region_id;
	std::string name = m->region;
	poison_region(module, id, nullptr);
	if (on_region_gone)
		on_region_gone(module, id, name, index_);
}

void PagerThread::gone_fault(Mapping *m, uint32_t idx, uint32_t flags)
{
	Page &pg = m->pages[idx];
	switch (pg.state) {
	case PageState::kFetching:
	case PageState::kEvicting:
	case PageState::kStaged:
		// Woken when the fetch is abandoned or the round is done.
		pg.flags |= kParked;
		return;
	case PageState::kResident:
		// Still present (the drop has not happened, or cannot: no
		// evict channel): let the access through.
		let_through(m->uffd(), m->page_addr(idx), flags);
		return;
	case PageState::kHeld:
		drop_held(m, idx);
		break;
	default:
		break;
	}
	poison_fault(m, m->page_addr(idx));
}

void PagerThread::let_through(int uffd, uint64_t addr, uint32_t flags)
{
	// A write to a write-protected page: lift the protection (which wakes
	// the thread). If that fails (EAGAIN: an address-space event such as
	// the evictor's drop is queued), wake it anyway, or it waits for good;
	// it faults again if it must.
	if (!(flags & UFFD_PAGEFAULT_FLAG_WP) ||
	    uffd_writeprotect(uffd, addr, kPageSize, false, false) < 0)
		(void)uffd_wake(uffd, addr, kPageSize);
}

void PagerThread::poison_fault(Mapping *m, uint64_t addr)
{
	Process *p = m->proc;
	const int uffd = m->uffd();
	if (!(p->features & UFFD_FEATURE_POISON)) {
		// No UFFDIO_POISON on this kernel: zeroes, never the deleted
		// bytes and never a fault left waiting (the zeroes go nowhere).
		int r = uffd_copy(uffd, addr, zero_.data(), kPageSize, false, nullptr);
		if (r == -EEXIST || r == -EAGAIN)
			(void)uffd_wake(uffd, addr, kPageSize);
		return;
	}
	int r = uffd_poison(uffd, addr, kPageSize);
	if (r == -EEXIST) {
		// UFFDIO_POISON refuses any PTE, a write-protect marker too (an
		// evicted page of a shared window keeps one): clear it first.
		(void)uffd_writeprotect(uffd, addr, kPageSize, false, false);
		r = uffd_poison(uffd, addr, kPageSize);
	}
	if (r == 0) {
		m->stats.poisoned++;
		return;
	}
	if (r == -ESRCH)
		return; // the process is gone
	if (r != -EEXIST && r != -EAGAIN && r != -ENOENT)
		LOG_WARN(kLog, "pid %d: poisoning 0x%lx of deleted region '%s': %s", int(p->pid),
		         (unsigned long)addr, m->region.c_str(), std::strerror(-r));
	// Present after all, an address-space event is queued, or the memory
	// was unmapped: the thread runs again and faults again if it must.
	(void)uffd_wake(uffd, addr, kPageSize);
}

void PagerThread::abandon_fetch(FetchOp *op)
{
	Mapping *m = op->m;
	Process *p = m->proc;
	for (uint32_t i = op->first + op->done; i < op->first + op->count; i++) {
		Page &pg = m->pages[i];
		if (pg.state != PageState::kFetching)
			continue;
		pg.state = PageState::kRemote;
		pg.flags = 0;
		m->resident--;
		p->resident--;
		// A fault waiting on it runs again and is poisoned.
		(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
	}
	op->done = op->count;
	if (op->tripwire != kNoPage && m->streams.tripwire(op->stream) == op->tripwire)
		m->streams.clear_tripwire(op->stream);
}

void PagerThread::probe_regions()
{
	for (auto &p : procs_) {
		if (p->dead)
			continue;
		for (auto &mp : p->mappings) {
			Mapping *m = mp.get();
			if (m->dead || m->region_gone || m->chan->broken || !m->chan->channel)
				continue;
			if (m->window) {
				MutexLock lk(&m->window->mu);
				if (m->window->resident == 0)
					continue; // its next fault will tell
			} else if (m->resident == 0) {
				continue;
			}
			bool asked = false, free_op = false;
			ProbeOp *op = nullptr;
			for (auto &q : probes_) {
				if (q->busy) {
					asked |= q->module == m->chan->module &&
					         q->region_id == m->region_id;
				} else if (!free_op) {
					op = q.get();
					free_op = true;
				}
			}
			if (asked)
				continue;
			if (op == nullptr) {
				probes_.push_back(std::make_unique<ProbeOp>());
				op = probes_.back().get();
				op->t = this;
				op->buf = alloc_pages(1);
			}
			op->busy = true;
			op->module = m->chan->module;
			op->region_id = m->region_id;
			uint64_t fa = m->window ? m->window->fa_base : m->fa_base;
			m->chan->channel->read_pages(wire::TrafficClass::kBulk, m->region_id, fa, 1,
			                             op->buf, op);
		}
	}
}

void PagerThread::on_probe_done(ProbeOp *op, const Status &st)
{
	op->busy = false;
	if (st.code() != Code::kNotFound)
		return;
	for (auto &p : procs_) {
		if (p->dead)
			continue;
		for (auto &m : p->mappings) {
			if (!m->dead && !m->region_gone && m->region_id == op->region_id &&
			    m->chan->module == op->module) {
				region_gone_found(m.get());
				return;
			}
		}
	}
}

} // namespace memfed::pager
