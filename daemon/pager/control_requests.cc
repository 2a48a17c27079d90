// Control requests from the Pager (posted to this thread): a new mapping,
// sync, unmap, detach, and the counters for "pager.stats".
//
// Thread: the pager thread (the Pager posts each request to it).
#include "daemon/pager/pager_thread.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "daemon/pager/pager_thread_ops.h"
#include "daemon/pager/present_pages.h"

namespace memfed::pager
{

Status PagerThread::add_mapping(uint64_t uffd_id, std::unique_ptr<Mapping> m, ModuleId module)
{
	Process *p = find_process(uffd_id);
	if (p == nullptr)
		return Status(Code::kNotFound, "uffd " + std::to_string(uffd_id) +
		                                       " is not attached (send \"attach\" first)");
	uint64_t len = uint64_t(m->npages) * kPageSize;
	for (auto &o : p->mappings) {
		if (o->dead)
			continue;
		uint64_t oend = o->addr + uint64_t(o->npages) * kPageSize;
		if (m->addr < oend && o->addr < m->addr + len)
			return Status(Code::kAlreadyExists, "range overlaps mapping " +
			                                            std::to_string(o->id) +
			                                            " (unmap it first)");
	}
	ChannelSlot *cs = channel(module);
	if (cs == nullptr)
		return Status(Code::kUnavailable, "module " + module.to_string() +
		                                          " holding region '" + m->region +
		                                          "' is unreachable");
	m->chan = cs;
	m->proc = p;
	m->held.assign(size_t(StreamDetector::kStreams) * kPageSize, 0);
	if (m->window && p->wp_async && p->window_uffd < 0)
		return Status(Code::kInvalidArgument,
		              "a shared window of a uffd with UFFD_FEATURE_WP_ASYNC needs the "
		              "process's window uffd (\"attach\" fds[2], without WP_ASYNC): its "
		              "eviction write-protects to hold writes, which WP_ASYNC does not");
	if (m->window)
		return add_shared_mapping(p, std::move(m));
	if ((m->budget_pages || p->budget_pages) && (!p->can_evict() || !m->wp) &&
	    !p->warned_no_evict) {
		p->warned_no_evict = true;
		LOG_WARN(kLog, "pid %d: budget not enforced (%s)", int(p->pid),
		         !m->wp ? "no write-protect on this kernel"
		                : "the client gave no evict channel");
	}
	if (!p->can_evict() || !m->wp)
		m->budget_pages = 0;
	if (p->wp_async)
		m->content.resize(m->npages);

	// Pages the process has already (a restarted daemon; memory the client
	// touched) are its data: resident, and dirty since nobody knows better.
	if (p->pid > 0) {
		Mapping *mp = m.get();
		for_each_present_page(p->pid, mp->addr, mp->npages, [mp](uint64_t i) {
			mp->touch(uint32_t(i));
			mp->pages[i].state = PageState::kResident;
			mp->pages[i].flags = kDirty | kRef;
			mp->resident++;
		});
	}
	p->resident += m->resident;
	Mapping *raw = m.get();
	p->mappings.push_back(std::move(m));
	last_map_ns_ = now_ns();
	// Pages the client reported dropped while no daemon had the mapping
	// ("removed") and that are still missing read as zero: the zeroes go to
	// the module now, as handle_remove's do.
	for (uint32_t i = 0; i < raw->scan_end();) {
		if (raw->pages[i].state != PageState::kZero || !(raw->pages[i].flags & kDirty)) {
			i++;
			continue;
		}
		uint32_t j = i + 1;
		while (j < raw->scan_end() && raw->pages[j].state == PageState::kZero &&
		       (raw->pages[j].flags & kDirty))
			j++;
		claim_writeback(raw, i, j - i);
		i = j;
	}
	pump_writeback();
	// Threads a previous daemon left blocked retry now.
	(void)uffd_wake(p->uffd, raw->addr, len);
	// Faults that arrived before this mapping was known.
	size_t n = orphans_.size;
	PendingFault f;
	while (n-- > 0 && orphans_.pop(&f))
		if (!f.proc->dead)
			handle_fault(f.proc, f.addr, f.flags, 0, true);
	maybe_evict(p);
	return Status::ok();
}

void PagerThread::sync(uint64_t mapping_id, uint32_t first, uint32_t count,
                       std::function<void(Status)> done)
{
	Mapping *m = find_mapping(mapping_id);
	if (m == nullptr) {
		done(Status(Code::kNotFound,
		            "mapping " + std::to_string(mapping_id) + " not found"));
		return;
	}
	if (m->region_gone) {
		done(Status(Code::kNotFound, "region '" + m->region +
		                                     "' was deleted while mapped; nothing of it "
		                                     "can be written back"));
		return;
	}
	flush(m, first, count, std::move(done));
}

void PagerThread::flush(Mapping *m, uint32_t first, uint32_t count,
                        std::function<void(Status)> done)
{
	if (m->window)
		return shared_flush(m, first, count, std::move(done));
	find_written(m, first, count);
	claim_writeback(m, first, count);
	add_waiter(m, first, count, true, std::move(done));
}

void PagerThread::unmap(uint64_t mapping_id, std::function<void(Status)> done)
{
	Mapping *m = find_mapping(mapping_id);
	if (m == nullptr) {
		done(Status(Code::kNotFound,
		            "mapping " + std::to_string(mapping_id) + " not found"));
		return;
	}
	// A deleted region's pages are dropped: its flush writes nothing.
	flush(m, 0, m->npages, [this, mapping_id, done](Status st) {
		Mapping *mm = find_mapping(mapping_id);
		if (mm != nullptr && st.is_ok())
			retire(mm);
		done(st);
	});
}

void PagerThread::detach(uint64_t uffd_id, std::function<void()> done)
{
	Process *p = find_process(uffd_id);
	if (p == nullptr) {
		done();
		return;
	}
	auto pending = std::make_shared<int>(1);
	auto finish = [this, uffd_id, done, pending](Status st) {
		if (!st.is_ok())
			LOG_WARN(kLog, "uffd %lu detached with pages not written back: %s",
			         (unsigned long)uffd_id, st.message().c_str());
		if (--*pending > 0)
			return;
		if (Process *pp = find_process(uffd_id))
			kill_process(pp, "detached");
		done();
	};
	for (auto &m : p->mappings) {
		if (m->dead)
			continue;
		if (m->window) {
			++*pending;
			flush(m.get(), 0, m->npages, finish);
		} else {
			find_written(m.get(), 0, m->npages);
			claim_writeback(m.get(), 0, m->npages);
		}
	}
	add_waiter(nullptr, 0, 0, false, finish);
}

void PagerThread::collect_transports(std::vector<TransportState> *out) const
{
	for (const auto &[id, cs] : channels_)
		if (cs->channel && !cs->broken)
			cs->channel->transport_states(out);
}

void PagerThread::collect(StatsSnapshot *out)
{
	for (auto &[name, st] : retired_regions_)
		out->regions[name].add(st);
	out->writebacks_dropped += wb_dropped_;
	for (auto &p : procs_) {
		if (p->dead)
			continue;
		PageStats ps = p->retired;
		for (auto &m : p->mappings) {
			if (m->dead)
				continue;
			if (m->window) {
				collect_window(m.get(), out, &ps);
				continue;
			}
			PageStats s = m->stats;
			s.resident = m->resident;
			s.dirty = m->count_dirty();
			ps.add(s);
			out->regions[m->region].add(s);
		}
		out->processes.push_back(
		        {p->pid, p->uffd_id, p->fork_child, ps, process_state(*p)});
	}
}

nlohmann::json PagerThread::process_state(const Process &p) const
{
	const Eviction &ev = p.evict;
	uint64_t by_state[8] = {}, wb = 0, dirty = 0, parked = 0;
	for (const auto &m : p.mappings) {
		if (m->dead || m->window)
			continue;
		for (uint32_t i = 0; i < m->scan_end(); i++) {
			const Page &pg = m->pages[i];
			by_state[int(pg.state)]++;
			wb += (pg.flags & kWbInFlight) != 0;
			dirty += (pg.flags & kDirty) != 0;
			parked += (pg.flags & kParked) != 0;
		}
	}
	uint64_t free_writes = 0;
	for (const WriteOp *op = free_write_; op != nullptr; op = op->next)
		free_writes++;
	return {{"budget_pages", p.budget_pages},
	        {"resident_count", p.resident},
	        {"can_evict", p.can_evict()},
	        {"colocations", p.colocations},
	        {"colocated", colocated_.proc == &p ? nlohmann::json{{"tid", colocated_.tid},
	                                                             {"cpu", colocated_.cpu}}
	                                            : nlohmann::json(nullptr)},
	        {"evict",
	         {{"active", ev.active},
	          {"drop_sent", ev.drop_sent},
	          {"by_move", ev.by_move},
	          {"phase", !ev.by_move                             ? "drop"
	                    : ev.phase == Eviction::Phase::kMoving  ? "moving"
	                    : ev.phase == Eviction::Phase::kWriting ? "writing"
	                                                            : "emptying"},
	          {"victims", ev.victims.size()},
	          {"age_ms", ev.active ? (now_ns() - ev.started_ns) / 1000000 : 0}}},
	        {"pages",
	         {{"resident", by_state[int(PageState::kResident)]},
	          {"fetching", by_state[int(PageState::kFetching)]},
	          {"held", by_state[int(PageState::kHeld)]},
	          {"evicting", by_state[int(PageState::kEvicting)]},
	          {"staged", by_state[int(PageState::kStaged)]},
	          {"zero", by_state[int(PageState::kZero)]},
	          {"wb_in_flight", wb},
	          {"dirty", dirty},
	          {"parked", parked}}},
	        {"thread",
	         {{"waiting_faults", waiting_.size},
	          {"retry_faults", retry_.size},
	          {"orphan_faults", orphans_.size},
	          {"copy_retries", copy_retry_.size()},
	          {"writes_queued", wb_queue_.size() - wb_head_},
	          {"free_write_ops", free_writes}}}};
}

} // namespace memfed::pager
