// Non-cooperative userfaultfd events: the program dropped pages (REMOVE),
// unmapped them (UNMAP), moved them (REMAP) or forked (FORK). Each keeps the
// pager's page states true to what the process now has.
//
// Thread: the pager thread that owns the process.
#include "daemon/pager/pager_thread.h"

#include <algorithm>
#include <memory>

#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

void PagerThread::set_gone(Mapping *m, uint32_t i)
{
	Page &pg = m->pages[i];
	m->touch(i);
	if (pg.state == PageState::kHeld) {
		int s = m->streams.stream_of_tripwire(i);
		if (s >= 0)
			m->streams.clear_tripwire(s);
	}
	if (m->holds_memory(pg.state)) {
		m->resident--;
		m->proc->resident--;
	}
	pg.state = PageState::kGone;
	pg.flags &= kWbInFlight; // an in-flight write-back still finishes
}

void PagerThread::handle_remove(Process *p, uint64_t start, uint64_t end)
{
	// The program dropped [start, end) (MADV_DONTNEED/REMOVE/FREE): from now
	// on those pages read as zero, never as the module's old content. The
	// kernel zaps them after this event is read.
	if (p->in_staging(start) && end - p->staging_addr <= p->staging_len)
		return; // the evictor emptied slots of its staging area
	for (auto &mp : p->mappings) {
		Mapping *m = mp.get();
		// Shared windows learn of MADV_REMOVE from the hole it leaves.
		if (m->dead || m->window)
			continue;
		uint64_t mend = m->addr + uint64_t(m->npages) * kPageSize;
		uint64_t a = std::max(start, m->addr), b = std::min(end, mend);
		if (a >= b)
			continue;
		for (uint32_t i = uint32_t((a - m->addr) / kPageSize);
		     i < uint32_t((b - m->addr + kPageSize - 1) / kPageSize); i++) {
			Page &pg = m->pages[i];
			m->touch(i);
			switch (pg.state) {
			case PageState::kRemote:
			case PageState::kZero:
				pg.state = PageState::kZero;
				pg.flags = uint8_t(kDirty | (pg.flags & kWbInFlight));
				break;
			case PageState::kFetching:
				pg.flags |= kRemoved;
				break;
			case PageState::kEvicting:
				pg.flags |= (pg.flags & kRemoved) ? kRemovedTwice : kRemoved;
				break;
			case PageState::kStaged:
				// Its slot's bytes are obsolete: zero now. The slot is
				// emptied with the round's others.
				if (pg.flags & kParked)
					(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
				[[fallthrough]];
			case PageState::kHeld:
			case PageState::kResident:
				set_gone(m, i);
				pg.state = PageState::kZero;
				pg.flags = uint8_t(kDirty | (pg.flags & kWbInFlight));
				break;
			case PageState::kGone:
				break;
			}
		}
		// The zeroes go to the module now, not at the next sync: a
		// daemon restarted before then would serve the old content.
		uint32_t first = uint32_t((a - m->addr) / kPageSize);
		claim_writeback(m, first, uint32_t((b - a + kPageSize - 1) / kPageSize));
	}
	pump_writeback();
}

void PagerThread::handle_unmap(Process *p, uint64_t start, uint64_t end)
{
	// Already unmapped when this arrives: what was there is gone.
	for (auto &mp : p->mappings) {
		Mapping *m = mp.get();
		if (m->dead)
			continue;
		uint64_t mend = m->addr + uint64_t(m->npages) * kPageSize;
		uint64_t a = std::max(start, m->addr), b = std::min(end, mend);
		if (a >= b)
			continue;
		for (uint32_t i = uint32_t((a - m->addr) / kPageSize);
		     i < uint32_t((b - m->addr + kPageSize - 1) / kPageSize); i++)
			set_gone(m, i);
		// Pages past scan_end() are untouched, so not gone.
		bool all_gone = m->scan_end() == m->npages &&
		                std::all_of(m->pages.begin(), m->pages.end(), [](const Page &pg) {
			                return pg.state == PageState::kGone;
		                });
		if (all_gone)
			retire(m);
	}
	p->last_hit = nullptr;
}

void PagerThread::handle_remap(Process *p, uint64_t from, uint64_t to, uint64_t len)
{
	// mremap moved [from, from+len) to `to`, page tables included.
	std::vector<std::unique_ptr<Mapping>> added;
	for (auto &mp : p->mappings) {
		Mapping *m = mp.get();
		if (m->dead)
			continue;
		uint64_t mend = m->addr + uint64_t(m->npages) * kPageSize;
		uint64_t a = std::max(from, m->addr), b = std::min(from + len, mend);
		if (a >= b)
			continue;
		if (a == m->addr && b == mend) {
			// The whole mapping moved: in-flight fetches install at
			// the new address, which is where the pages now belong.
			m->addr = to + (m->addr - from);
			continue;
		}
		// Part of it moved: that part becomes a mapping of its own.
		auto n = std::make_unique<Mapping>();
		uint32_t first = uint32_t((a - m->addr) / kPageSize);
		uint32_t count = uint32_t((b - a) / kPageSize);
		n->id = ids_->fetch_add(1);
		n->proc = p;
		n->region = m->region;
		n->region_id = m->region_id;
		n->fa_base = m->page_fa(first);
		n->addr = to + (a - from);
		n->npages = count;
		n->writable = m->writable;
		n->wp = m->wp;
		n->prefetch = m->prefetch;
		n->budget_pages = m->budget_pages;
		n->chan = m->chan;
		n->held.assign(m->held.size(), 0);
		n->pages.resize(count);
		n->touched = m->touched > first ? std::min(count, m->touched - first) : 0;
		std::copy(m->pages.begin() + first, m->pages.begin() + first + n->touched,
		          n->pages.begin());
		if (!m->history.evicted_at.empty()) {
			n->history.resize(count);
			n->history.copy(m->history, first, n->touched);
		}
		if (!m->content.empty()) {
			n->content.resize(count);
			std::copy(m->content.begin() + first,
			          m->content.begin() + first + n->touched, n->content.begin());
		}
		if (m->window)
			join_window(n.get(), m, m->window_first + first);
		// Victims of a move round stay victims, of the new mapping: their
		// bytes may be in a slot already (move_eviction.cc).
		const bool moving = p->evict.active && p->evict.by_move;
		if (moving)
			for (auto &v : p->evict.victims)
				if (v.first == m && v.second >= first && v.second - first < count)
					v = {n.get(), v.second - first};
		for (uint32_t k = 0; k < n->touched; k++) {
			Page &pg = n->pages[k];
			// Work in flight belongs to the old object: let the
			// new one start from what the module and process hold.
			if (pg.state == PageState::kFetching || pg.state == PageState::kHeld) {
				pg.state = (pg.flags & kRemoved) ? PageState::kZero
				                                 : PageState::kRemote;
				pg.flags = (pg.state == PageState::kZero) ? kDirty : 0;
			} else if (pg.state == PageState::kEvicting && !moving) {
				pg.state = PageState::kResident;
				pg.flags = uint8_t(kDirty | (pg.flags & kRef));
			}
			if (pg.flags & kWbInFlight)
				pg.flags = uint8_t((pg.flags & ~kWbInFlight) | kDirty);
			if (n->holds_memory(pg.state))
				n->resident++;
		}
		for (uint32_t i = first; i < first + count; i++)
			set_gone(m, i);
		p->resident += n->resident;
		added.push_back(std::move(n));
	}
	for (auto &n : added)
		p->mappings.push_back(std::move(n));
	p->last_hit = nullptr;
	// Threads still waiting at the old addresses retry (and find them moved).
	wake_either(p, from, len);
}

void PagerThread::handle_fork(Process *parent, int child_uffd)
{
	auto c = std::make_unique<Process>();
	c->uffd_id = ids_->fetch_add(1);
	c->uffd = child_uffd;
	c->uid = parent->uid;
	c->features = parent->features;
	c->fork_child = true;
	for (auto &mp : parent->mappings) {
		Mapping *m = mp.get();
		// A window on the window uffd, which has no EVENT_FORK: the
		// kernel unregistered the child's copy of it.
		if (m->dead || (m->window && parent->window_uffd >= 0))
			continue;
		auto n = std::make_unique<Mapping>();
		n->id = ids_->fetch_add(1);
		n->proc = c.get();
		n->region = m->region;
		n->region_id = m->region_id;
		n->fa_base = m->fa_base;
		n->addr = m->addr;
		n->npages = m->npages;
		n->writable = m->writable;
		n->wp = m->wp;
		n->prefetch = m->prefetch;
		n->chan = m->chan;
		n->held.assign(m->held.size(), 0);
		// Only what the parent touched: the rest is default pages.
		n->pages.resize(m->npages);
		if (!m->history.evicted_at.empty())
			n->history.resize(m->npages);
		n->touched = m->scan_end();
		std::copy(m->pages.begin(), m->pages.begin() + n->touched, n->pages.begin());
		if (m->window) {
			// A shared mapping stays shared in the child.
			join_window(n.get(), m, m->window_first);
			c->mappings.push_back(std::move(n));
			continue;
		}
		for (uint32_t k = 0; k < n->touched; k++) {
			Page &pg = n->pages[k];
			// The child has its own copy of every page present at fork.
			switch (pg.state) {
			case PageState::kResident:
			case PageState::kEvicting:
				pg.state = PageState::kResident;
				pg.flags = uint8_t(
				        kRef | (pg.flags & (kDirty | kWbInFlight) ? kDirty : 0));
				break;
			case PageState::kFetching:
			case PageState::kHeld:
				pg.state = (pg.flags & kRemoved) ? PageState::kZero
				                                 : PageState::kRemote;
				pg.flags = 0;
				break;
			case PageState::kStaged:
				// Not reached: a uffd with EVENT_FORK never has its
				// victims moved (moves_victims).
				pg.state = PageState::kRemote;
				pg.flags = 0;
				break;
			default:
				pg.flags = 0;
				break;
			}
			if (n->holds_memory(pg.state))
				n->resident++;
		}
		c->resident += n->resident;
		c->mappings.push_back(std::move(n));
	}
	LOG_DEBUG(kLog, "uffd %lu forked: child uffd %lu with %zu mappings",
	          (unsigned long)parent->uffd_id, (unsigned long)c->uffd_id, c->mappings.size());
	adopt(std::move(c));
}

} // namespace memfed::pager
