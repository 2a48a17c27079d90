// Eviction of private memory: when a process or mapping is past its
// budget, victims are chosen by CLOCK (eviction_policy.h), and a round takes
// them out of the process one of two ways (map_protocol.h):
//  - the drop path: dirty victims are write-protected and written back
//    (writeback.cc), then the client's evictor drops them; faults on a
//    victim are parked until the drop is done, so no write is lost;
//  - the move path (a client with a staging area, a kernel with
//    UFFDIO_MOVE; doc/design/move-eviction.md): the evictor moves the
//    victims into its staging area at once, victim k to slot k; the dirty
//    ones are written back from their slots, and once every one is
//    durable the evictor empties the slots. Nothing can write a page while
//    it is in a slot, so no write-protect is needed, and a fault on it is
//    served from the slot without a trip to the module (move_eviction.cc).
//
// Thread: the pager thread that owns the process.
#include "daemon/pager/pager_thread.h"

#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "daemon/pager/eviction_policy.h"
#include "daemon/pager/pager_thread_ops.h"
#include "daemon/pager/refault.h"

namespace memfed::pager
{

void PagerThread::note_refault(Mapping *m, uint32_t i)
{
	RefaultHistory &h = m->history;
	if (h.evicted_at.empty() || h.evicted_at[i] == 0)
		return;
	const Process *p = m->proc;
	const uint32_t distance = p->evictions - h.evicted_at[i];
	h.evicted_at[i] = 0;
	// The budget whose evictions took it: the smaller one that is set.
	uint64_t budget = p->budget_pages;
	if (m->budget_pages != 0 && (budget == 0 || m->budget_pages < budget))
		budget = m->budget_pages;
	h.turns[i] = refault_turns(distance, budget, cfg_.refault_turns);
	if (h.turns[i] != 0)
		m->stats.refaults++;
}

void PagerThread::maybe_evict(Process *p)
{
	if (p->dead || p->evict.active || !p->can_evict())
		return;
	const bool by_move = moves_victims(p);
	const uint64_t batch = by_move ? std::min<uint64_t>(cfg_.evict_batch,
	                                                    p->staging_len / kPageSize)
	                               : cfg_.evict_batch;
	bool pressure = p->evict_pressure;
	p->evict_pressure = false;
	uint64_t need_p = policy_.eviction_want(p->resident, p->budget_pages, pressure);
	auto &victims = p->evict.victims;
	victims.clear();
	// Every resident page of a deleted region first, clean (never written
	// back): it must not go on showing the deleted bytes
	// (region_deletion.cc).
	for (auto &mp : p->mappings) {
		Mapping *m = mp.get();
		if (m->dead || !m->region_gone || m->window || m->resident == 0)
			continue;
		for (uint32_t i = 0; i < m->scan_end() && victims.size() < batch; i++) {
			Page &pg = m->pages[i];
			if (pg.state != PageState::kResident)
				continue;
			pg.state = PageState::kEvicting;
			pg.flags &= uint8_t(~(kParked | kRemoved | kRemovedTwice | kDirty));
			victims.emplace_back(m, i);
		}
	}
	// Mappings over their own budget first, then the largest for the process.
	for (int pass = 0; pass < 2 && victims.size() < batch; pass++) {
		for (auto &mp : p->mappings) {
			Mapping *m = mp.get();
			if (m->dead || !m->wp || m->npages == 0 || m->region_gone)
				continue;
			uint64_t want = 0;
			if (pass == 0)
				want = policy_.eviction_want(m->resident, m->budget_pages,
				                             pressure);
			if (pass == 1 && need_p > victims.size())
				want = need_p - victims.size();
			if (want == 0)
				continue;
			want = std::min<uint64_t>(want, batch - victims.size());
			clock_pick(
			        std::span<Page>(m->pages.data(), m->scan_end()),
			        m->history.turns_span(m->scan_end()), &m->clock_hand, want,
			        [this, m](uint32_t i) { note_recent_writes(m, i); },
			        [m](uint32_t i) { return m->streams.ahead_of_stream(i); },
			        [m, p, &victims](uint32_t i) {
				        Page &pg = m->pages[i];
				        pg.state = PageState::kEvicting;
				        pg.flags &= uint8_t(~(kParked | kRemoved | kRemovedTwice));
				        if (!m->history.evicted_at.empty())
					        m->history.evicted_at[i] = p->next_eviction_stamp();
				        victims.emplace_back(m, i);
			        });
		}
	}
	if (victims.empty())
		return;
	Eviction &ev = p->evict;
	ev.active = true;
	ev.drop_sent = false;
	ev.failed = false;
	ev.by_move = by_move;
	ev.drop_next = false;
	ev.seq++;
	ev.started_ns = now_ns();
	std::sort(victims.begin(), victims.end(), [](const auto &x, const auto &y) {
		return x.first->page_addr(x.second) < y.first->page_addr(y.second);
	});
	// One request carries at most kMaxDropRanges ranges (kMaxMoveRuns
	// runs, each inside one mapping): victims past them stay resident for
	// a later round.
	const uint32_t max_ranges = by_move ? kMaxMoveRuns : kMaxDropRanges;
	uint32_t ranges = 0;
	for (size_t k = 0; k < victims.size(); k++) {
		auto [m, i] = victims[k];
		bool joins = k > 0 && victims[k - 1].first == m && victims[k - 1].second + 1 == i;
		if (!joins && ++ranges > max_ranges) {
			for (size_t r = k; r < victims.size(); r++)
				victims[r].first->pages[victims[r].second].state =
				        PageState::kResident;
			victims.resize(k);
			break;
		}
	}
	if (by_move) {
		send_move(p);
		return;
	}
	// Dirty victims are written back first, in runs. One whose earlier
	// write is still in flight waits for it (check_eviction).
	for (size_t i = 0; i < victims.size();) {
		Mapping *m = victims[i].first;
		uint32_t a = victims[i].second;
		if (!(m->pages[a].flags & kDirty)) {
			i++;
			continue;
		}
		size_t j = i + 1;
		while (j < victims.size() && victims[j].first == m &&
		       victims[j].second == victims[j - 1].second + 1 &&
		       (m->pages[victims[j].second].flags & kDirty))
			j++;
		claim_writeback(m, a, uint32_t(j - i));
		i = j;
	}
	pump_writeback();
	check_eviction(p);
}

void PagerThread::check_eviction(Process *p)
{
	Eviction &ev = p->evict;
	if (!ev.active || ev.drop_sent)
		return;
	if (ev.by_move) {
		check_move_round(p);
		return;
	}
	if (ev.failed) {
		finish_eviction(p, false);
		return;
	}
	// The drop waits until the module holds every victim's newest content:
	// no write of a victim in flight, none dirty. A victim that was dirty
	// while an earlier write of it was in flight is written now.
	bool writing = false;
	for (auto &[m, i] : ev.victims) {
		Page &pg = m->pages[i];
		if (m->dead || pg.state != PageState::kEvicting)
			continue;
		if ((pg.flags & kDirty) && !(pg.flags & (kWbInFlight | kRemoved)))
			claim_writeback(m, i, 1);
		// (A page that cannot be written back -- a fork child's, a
		// read-only or deleted region's -- is never claimed: it does not
		// hold the drop up.)
		writing |= (pg.flags & kWbInFlight) != 0;
	}
	if (writing) {
		pump_writeback();
		return;
	}
	send_drop(p);
}

void PagerThread::send_drop(Process *p)
{
	Eviction &ev = p->evict;
	DropRequest &req = ev.request;
	req.magic = kDropRequestMagic;
	req.seq = ev.seq;
	req.sent_ns = 0; // set when sent
	req.count = 0;
	for (auto &[m, i] : ev.victims) {
		if (m->dead || m->pages[i].state != PageState::kEvicting)
			continue;
		if (m->pages[i].flags & kRemoved) {
			// The program dropped it since it was picked: the kernel has
			// zapped it already, and it reads as zero. It stays out of
			// the request, or the client would take this drop for proof
			// that the page's content is on the module and forget its
			// own drop of the page, which a restarted daemon must learn
			// of until these zeroes are durable.
			bool parked = m->pages[i].flags & kParked;
			zero_dropped_page(m, i);
			if (parked)
				(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
			continue;
		}
		uint64_t a = m->page_addr(i);
		if (req.count > 0 &&
		    req.ranges[req.count - 1].addr + req.ranges[req.count - 1].length == a)
			req.ranges[req.count - 1].length += kPageSize;
		else if (req.count < kMaxDropRanges)
			req.ranges[req.count++] = {a, kPageSize};
	}
	pump_writeback();
	if (req.count == 0) {
		finish_eviction(p, true);
		return;
	}
	req.sent_ns = now_ns();
	ssize_t r =
	        send(p->evict_fd, &req, drop_request_size(req.count), MSG_DONTWAIT | MSG_NOSIGNAL);
	if (r < 0) {
		LOG_WARN(kLog,
		         "pid %d: sending a drop request to the client's evictor: %s; "
		         "its budget is no longer enforced",
		         int(p->pid), std::strerror(errno));
		close(p->evict_fd);
		p->evict_fd = -1;
		finish_eviction(p, false);
		return;
	}
	ev.drop_sent = true;
}

void PagerThread::on_evict_reply(Process *p, int res)
{
	Eviction &ev = p->evict;
	bool drop = res == int(sizeof(DropReply)) && ev.reply.drop.magic == kDropReplyMagic;
	const MoveReply &mr = ev.reply.move;
	bool move = res >= int(move_reply_size(0)) && mr.magic == kMoveReplyMagic &&
	            mr.n_runs <= kMaxMoveRuns && uint64_t(res) >= move_reply_size(mr.n_runs) &&
	            uint64_t(res) <= move_reply_size(mr.n_runs, kMaxMoveHashes) &&
	            (uint64_t(res) - move_reply_size(mr.n_runs)) % 8 == 0;
	if (res <= 0 || !(drop || move)) {
		// A client closes its end when it exits or detaches: normal.
		if (res == 0 || res == -ECANCELED)
			LOG_DEBUG(kLog, "pid %d: evict channel closed", int(p->pid));
		else
			LOG_WARN(kLog, "pid %d: evict channel %s; its budget is no longer enforced",
			         int(p->pid),
			         res < 0 ? std::strerror(-res) : "sent a malformed reply");
		if (p->evict_fd >= 0)
			close(p->evict_fd);
		p->evict_fd = -1;
		if (ev.active && ev.by_move)
			move_channel_lost(p);
		else if (ev.active)
			finish_eviction(p, ev.drop_sent);
		return;
	}
	arm(p, p->evict_op.get(), ProcessOp::kEvictRecv);
	if (move) {
		on_move_reply(p, uint32_t((uint64_t(res) - move_reply_size(mr.n_runs)) / 8));
		return;
	}
	const DropReply &reply = ev.reply.drop;
	if (!ev.active || ev.by_move || !ev.drop_sent || reply.seq != ev.seq) {
		LOG_WARN(kLog, "pid %d: unexpected drop reply seq %lu ignored", int(p->pid),
		         (unsigned long)reply.seq);
		return;
	}
	if (reply.error != 0)
		LOG_WARN(kLog, "pid %d: the client's evictor reported %s", int(p->pid),
		         std::strerror(-reply.error));
	finish_eviction(p, true);
	retry_copies(); // its madvise held copies off until now
}

// A victim the program dropped (MADV_DONTNEED) during its eviction reads as
// zero from now on. Its zeroes go to the module at once, as handle_remove's
// do: its write-back skipped it and the module may hold its old content.
void PagerThread::zero_dropped_page(Mapping *m, uint32_t i)
{
	set_gone(m, i);
	Page &pg = m->pages[i];
	pg.state = PageState::kZero;
	pg.flags = uint8_t(kDirty | (pg.flags & kWbInFlight));
	claim_writeback(m, i, 1);
}

void PagerThread::finish_eviction(Process *p, bool dropped)
{
	Eviction &ev = p->evict;
	for (auto &[m, i] : ev.victims) {
		if (m->dead)
			continue;
		Page &pg = m->pages[i];
		if (pg.state != PageState::kEvicting)
			continue;
		int removes = (pg.flags & kRemovedTwice) ? 2 : (pg.flags & kRemoved) ? 1 : 0;
		bool parked = pg.flags & kParked;
		if (!dropped) {
			// Not dropped by us: still present unless the program
			// dropped it, in which case it reads as zero.
			if (removes == 0) {
				pg.state = PageState::kResident;
				pg.flags &= uint8_t(kDirty | kWbInFlight);
			} else {
				zero_dropped_page(m, i);
			}
		} else {
			if (removes >= 2) {
				// The program dropped it too, after the request went:
				// zero, not the old data.
				zero_dropped_page(m, i);
			} else {
				set_gone(m, i);
				pg.state = PageState::kRemote;
				pg.set_flags(0);
				m->stats.evictions++;
			}
		}
		if (parked)
			(void)uffd_wake(p->uffd, m->page_addr(i), kPageSize);
	}
	end_round(p);
}

void PagerThread::end_round(Process *p)
{
	Eviction &ev = p->evict;
	ev.victims.clear();
	pump_writeback();
	ev.active = false;
	ev.drop_sent = false;
	ev.failed = false;
	ev.by_move = false;
	check_waiters(); // syncs that waited for this round's zeroes
	reap(); // mappings that died during the round can go now
	retry_waiting();
	maybe_evict(p);
}

} // namespace memfed::pager
