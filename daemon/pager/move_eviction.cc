// The move path of an eviction round (eviction.cc; the plan and its
// measurements: doc/design/move-eviction.md). A round goes through
// Eviction::Phase:
//   kMoving    the MoveRequest is out; victims are Evicting and faults on
//              them park (a dirty victim the program writes meanwhile moves
//              with its newest content: nothing was write-protected).
//   kWriting   the reply came: each victim is Staged (its bytes in slot k),
//              back to Resident (the kernel refused to move it: shared after
//              fork), or Zero (the program dropped it). Dirty staged pages
//              are written back from their slots; a fault on a staged page is
//              served from its slot at once (serve_staged).
//   kEmptying  every staged page is durable: the request to empty the slots
//              is out; when it is answered the staged pages are Remote and
//              the round ends.
// The slots are emptied before the round ends so that the client's staging
// table never holds a page the pager has let go of: a daemon restarted later
// would have the client move those bytes back over newer ones.
//
// Thread: the pager thread that owns the process.
#include "daemon/pager/pager_thread.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "daemon/pager/pager_thread_ops.h"
#include "daemon/pager/present_pages.h"

namespace memfed::pager
{

bool PagerThread::moves_victims(const Process *p) const
{
	// A client whose uffd has EVENT_FORK would have its children served by
	// this pager from the region, which does not hold a staged page yet:
	// such clients (libmemfed never is one) keep the drop path.
	return cfg_.evict_by_move && !p->evict.drop_next && p->staging_len >= kPageSize &&
	       (p->features & UFFD_FEATURE_EVENT_FORK) == 0;
}

int PagerThread::victim_index(const Process *p, const Mapping *m, uint32_t i) const
{
	const auto &v = p->evict.victims;
	for (size_t k = 0; k < v.size(); k++)
		if (v[k].first == m && v[k].second == i)
			return int(k);
	return -1;
}

uint64_t PagerThread::slot_addr(const Process *p, int k) const
{
	return p->staging_addr + uint64_t(k) * kPageSize;
}

void PagerThread::send_move(Process *p)
{
	Eviction &ev = p->evict;
	mark_written_victims(p);
	MoveRequest &req = ev.move;
	req.magic = kMoveRequestMagic;
	req.n_empty = 0;
	req.n_runs = 0;
	// The evictor hashes what it moved: cheaper than reading it out here.
	req.flags = p->wp_async && ev.victims.size() <= kMaxMoveHashes ? kMoveWantHashes : 0;
	req.flags |= evictor_cpu_flags(p);
	req.seq = ev.seq;
	// Victims are sorted and capped at kMaxMoveRuns runs (maybe_evict).
	MoveRun run{};
	for (size_t k = 0; k < ev.victims.size(); k++) {
		auto [m, i] = ev.victims[k];
		if (run.len != 0 && ev.victims[k - 1].first == m &&
		    ev.victims[k - 1].second + 1 == i) {
			run.len += kPageSize;
			continue;
		}
		if (run.len != 0)
			req.set_run(req.n_runs++, run);
		run = {m->page_addr(i), kPageSize, slot_addr(p, int(k))};
	}
	req.set_run(req.n_runs++, run);
	ev.phase = Eviction::Phase::kMoving;
	send_move_packet(p, move_request_size(0, req.n_runs));
}

void PagerThread::send_empty(Process *p)
{
	Eviction &ev = p->evict;
	if (p->evict_fd < 0) {
		// The client is gone or detached: nobody will restore its slots.
		finish_move_round(p);
		return;
	}
	MoveRequest &req = ev.move;
	req.magic = kMoveRequestMagic;
	req.n_empty = 1;
	req.n_runs = 0;
	// Keeps the evictor where it is: a request without the bit unpins it.
	req.flags = evictor_cpu_flags(p);
	req.seq = ++ev.seq;
	req.set_empty(0, {p->staging_addr, uint64_t(ev.victims.size()) * kPageSize});
	ev.phase = Eviction::Phase::kEmptying;
	send_move_packet(p, move_request_size(1, 0));
}

void PagerThread::send_move_packet(Process *p, uint64_t size)
{
	Eviction &ev = p->evict;
	ev.move.sent_ns = now_ns();
	if (send(p->evict_fd, &ev.move, size, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
		return;
	LOG_WARN(kLog,
	         "pid %d: sending a move request to the client's evictor: %s; "
	         "its budget is no longer enforced",
	         int(p->pid), std::strerror(errno));
	close(p->evict_fd);
	p->evict_fd = -1;
	move_channel_lost(p);
}

void PagerThread::on_move_reply(Process *p, uint32_t n_hashes)
{
	Eviction &ev = p->evict;
	const MoveReply &reply = ev.reply.move;
	bool expected = ev.active && ev.by_move && reply.seq == ev.seq &&
	                ((ev.phase == Eviction::Phase::kMoving && reply.n_runs == ev.move.n_runs) ||
	                 (ev.phase == Eviction::Phase::kEmptying && reply.n_runs == 0));
	if (!expected) {
		LOG_WARN(kLog, "pid %d: unexpected move reply seq %lu (%u runs) ignored",
		         int(p->pid), (unsigned long)reply.seq, reply.n_runs);
		return;
	}
	if (ev.phase == Eviction::Phase::kEmptying) {
		finish_move_round(p);
		return;
	}
	size_t k = 0;
	for (uint32_t r = 0; r < reply.n_runs; r++) {
		uint32_t pages = uint32_t(ev.move.run(r).len / kPageSize);
		int64_t res = reply.result[r];
		if (res != int64_t(ev.move.run(r).len) && res >= 0)
			res = -EIO; // a short count is no answer the protocol has
		if (res < 0)
			LOG_DEBUG(kLog, "pid %d: moving %u pages at 0x%lx: %s", int(p->pid), pages,
			          (unsigned long)ev.move.run(r).src, std::strerror(int(-res)));
		// A page mapped by more than one process (a child shares it
		// until either writes it) cannot move: the next round drops;
		// under WP_ASYNC the client unshares it and it moves later.
		if (res == -EBUSY && !p->wp_async)
			ev.drop_next = true;
		settle_moved(p, k, pages, res >= 0);
		k += pages;
	}
	check_staged_content(p, n_hashes);
	ev.phase = Eviction::Phase::kWriting;
	check_move_round(p);
	retry_copies(); // the moves may have held copies off (EAGAIN)
}

// Victims [k, k+n) (one run, contiguous in one mapping and in the slots)
// were moved whole (`moved`), or the move stopped somewhere: then the
// pagemaps of the source and the slots tell each page's fate.
void PagerThread::settle_moved(Process *p, size_t k, uint32_t n, bool moved)
{
	Eviction &ev = p->evict;
	std::vector<uint8_t> at_src, at_slot; // only for a run that stopped
	if (!moved) {
		at_src.assign(n, 0);
		at_slot.assign(n, 0);
		bool known = for_each_present_page(p->pid, slot_addr(p, int(k)), n,
		                                   [&](uint64_t j) { at_slot[j] = 1; });
		// The sources, by pieces contiguous in one mapping (an mremap may
		// have split the run since it was sent).
		for (uint32_t j = 0; known && j < n;) {
			auto [m, i] = ev.victims[k + j];
			uint32_t e = j + 1;
			while (e < n && ev.victims[k + e].first == m &&
			       ev.victims[k + e].second == i + (e - j))
				e++;
			known = m->dead ||
			        for_each_present_page(p->pid, m->page_addr(i), e - j,
			                              [&](uint64_t q) { at_src[j + q] = 1; });
			j = e;
		}
		if (!known) // the process is gone: nothing of it is read again
			at_src.assign(n, 1);
	}
	for (uint32_t j = 0; j < n; j++) {
		auto [m, i] = ev.victims[k + j];
		Page &pg = m->pages[i];
		if (m->dead || pg.state != PageState::kEvicting)
			continue; // unmapped, or moved on by an mremap (address_events.cc)
		bool parked = pg.flags & kParked;
		pg.flags &= uint8_t(~kParked);
		if (pg.flags & (kRemoved | kRemovedTwice)) {
			// The program dropped it: zero, whatever moved.
			zero_dropped_page(m, i);
		} else if (moved || (at_slot[j] && !at_src[j])) {
			pg.state = PageState::kStaged;
		} else if (at_src[j]) {
			pg.state = PageState::kResident; // not moved: left next round
		} else {
			// In neither: the program dropped it before the move (its
			// REMOVE event is on the way).
			zero_dropped_page(m, i);
		}
		// A write to a clean victim parked before the move; it faults
		// again and finds the page wherever it now is.
		if (parked)
			(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
	}
}

void PagerThread::check_move_round(Process *p)
{
	Eviction &ev = p->evict;
	if (ev.phase != Eviction::Phase::kWriting || ev.failed)
		return; // a failed write-back is claimed again from the tick
	auto claimable = [](const Page &pg) {
		return pg.state == PageState::kStaged && (pg.flags & kDirty) &&
		       !(pg.flags & (kWbInFlight | kRemoved | kRemovedTwice));
	};
	auto &v = ev.victims;
	bool writing = false;
	for (size_t k = 0; k < v.size();) {
		auto [m, i] = v[k];
		if (m->dead || !claimable(m->pages[i])) {
			writing |= !m->dead && m->pages[i].state == PageState::kStaged &&
			           (m->pages[i].flags & kWbInFlight);
			k++;
			continue;
		}
		size_t j = k + 1;
		while (j < v.size() && v[j].first == m && v[j].second == v[j - 1].second + 1 &&
		       claimable(m->pages[v[j].second]))
			j++;
		claim_writeback(m, i, uint32_t(j - k));
		// A page of a fork child, a read-only or a deleted region is never
		// claimed: its bytes need not reach the module.
		for (size_t q = k; q < j; q++)
			writing |= (m->pages[v[q].second].flags & kWbInFlight) != 0;
		k = j;
	}
	if (writing) {
		pump_writeback();
		return;
	}
	send_empty(p);
}

void PagerThread::finish_move_round(Process *p)
{
	Eviction &ev = p->evict;
	for (auto &[m, i] : ev.victims) {
		Page &pg = m->pages[i];
		if (m->dead || pg.state != PageState::kStaged)
			continue;
		if (pg.flags & kParked)
			(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
		if (pg.flags & (kRemoved | kRemovedTwice)) {
			zero_dropped_page(m, i);
		} else {
			set_gone(m, i);
			pg.state = PageState::kRemote;
			pg.set_flags(0);
			m->stats.evictions++;
		}
	}
	end_round(p);
}

void PagerThread::move_channel_lost(Process *p)
{
	Eviction &ev = p->evict;
	if (ev.phase == Eviction::Phase::kMoving) {
		// The reply will not come: what moved is told by the pagemaps.
		size_t k = 0;
		while (k < ev.victims.size()) {
			size_t j = k + 1;
			while (j < ev.victims.size() && ev.victims[j].first == ev.victims[k].first &&
			       ev.victims[j].second == ev.victims[j - 1].second + 1)
				j++;
			settle_moved(p, k, uint32_t(j - k), false);
			k = j;
		}
		check_staged_content(p, 0);
		ev.phase = Eviction::Phase::kWriting;
	}
	if (ev.phase == Eviction::Phase::kEmptying) {
		finish_move_round(p);
		return;
	}
	// Writing: the staged pages are still written back from their slots
	// (while the process lives), then the round ends without emptying.
	check_move_round(p);
}

void PagerThread::serve_staged(Mapping *m, uint32_t idx)
{
	Process *p = m->proc;
	Page &pg = m->pages[idx];
	uint64_t addr = m->page_addr(idx);
	if (p->evict.phase == Eviction::Phase::kEmptying) {
		// Durable, and its slot may be empty already: the fault waits
		// for the round's end and fetches the page.
		pg.flags |= kParked;
		return;
	}
	int k = victim_index(p, m, idx);
	int r = -ENOENT;
	if (k >= 0 && read_pages(p, slot_addr(p, k), stage_buf_.data(), 1) == 1)
		r = uffd_copy(p->uffd, addr, stage_buf_.data(), kPageSize, false, nullptr);
	if (r == 0 || r == -EEXIST) {
		// Installed writable, so dirty: a write from now on raises no
		// fault. A write-back in flight goes on from the slot's bytes;
		// the slot is emptied with the round's others.
		pg.state = PageState::kResident;
		pg.set_flags(kDirty | kRef);
		m->stats.staged_hits++;
		if (r == -EEXIST)
			(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}
	if (r == -EAGAIN) {
		// An address-space event is pending: the thread faults again
		// once it is read.
		(void)uffd_wake(p->uffd, addr, kPageSize);
		return;
	}
	LOG_WARN(kLog, "pid %d: installing staged page 0x%lx from its slot: %s; the fault "
	               "waits for the round",
	         int(p->pid), (unsigned long)addr, std::strerror(-r));
	pg.flags |= kParked;
}

} // namespace memfed::pager
