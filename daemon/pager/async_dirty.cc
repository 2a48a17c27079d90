// Dirtiness of a process whose uffd has UFFD_FEATURE_WP_ASYNC (the plan:
// doc/design/move-eviction.md, "Dirtiness"). Its first write to a clean
// (write-protected) page raises no fault: the kernel lets it through and
// marks the page written in its page table. So for such a process kDirty is
// not the whole truth: a page without it may have been written since the
// pager last saw it. Three things find the writes when they matter:
//
//   find_written          before a sync (or a detach) claims write-backs:
//                         PAGEMAP_SCAN over the range, write-protecting
//                         again what it reports, so the next scan reports
//                         only later writes.
//   mark_written_victims  before a MoveRequest: the same scan over the
//                         round's victims, so that most written victims are
//                         known without reading them.
//   check_staged_content  after the move: a write that landed between that
//                         scan and the move leaves no bit anywhere (the move
//                         drops the page's uffd-wp bit, F4 and F7), only its
//                         bytes tell. The content_hash() of every moved page
//                         the scan did not report is compared with that of
//                         the bytes its module holds, kept by
//                         remember_content since the page was installed
//                         clean or last copied out for write-back. The
//                         client's evictor sends the hashes of what it moved
//                         (MoveReply); a page without one is read from its
//                         slot and hashed here.
//
// And one use of the same scan for the eviction policy: note_recent_writes
// gives CLOCK a reference bit for pages written since its hand last passed.
//
// The scan is an optimisation and the hash is what makes it sound: a victim
// is let go without a write-back only if its staged bytes hash as the
// module's do. A process with WP_ASYNC is always evicted by moving its pages
// (Pager::op_attach refuses it otherwise): the drop path's write-protect
// freeze cannot hold its writes.
//
// Thread: the pager thread that owns the process.
#include "daemon/pager/pager_thread.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "daemon/pager/content_hash.h"
#include "daemon/pager/pagemap_scan.h"
#include "daemon/pager/pager_thread_ops.h"

namespace memfed::pager
{

namespace
{
// Pages whose written bits note_recent_writes reads at once: one page
// table's worth, so each read walks one table.
constexpr uint32_t kWriteNoteChunk = 512;
} // namespace

void PagerThread::remember_content(Mapping *m, uint32_t first, uint32_t n, const uint8_t *bytes)
{
	if (m->content.empty())
		return;
	for (uint32_t j = 0; j < n; j++)
		m->content[first + j] =
		        content_hash(bytes + size_t(j) * kPageSize, m->proc->content_key);
}

bool PagerThread::open_pagemap(Process *p)
{
	if (p->pagemap_fd >= 0)
		return true;
	if (p->mm_gone)
		return false;
	char path[64];
	std::snprintf(path, sizeof(path), "/proc/%d/pagemap", int(p->pid));
	p->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (p->pagemap_fd >= 0)
		return true;
	if (errno == ENOENT || errno == ESRCH) {
		// Exited: what it had not synced is gone with it.
		p->mm_gone = true;
		return false;
	}
	LOG_WARN(kLog, "pid %d: opening %s: %s; every resident page counts as written", int(p->pid),
	         path, std::strerror(errno));
	return false;
}

void PagerThread::find_written(Mapping *m, uint32_t first, uint32_t count, uint8_t flags)
{
	Process *p = m->proc;
	if (!p->wp_async || m->window || m->dead)
		return;
	uint32_t end = uint32_t(std::min<uint64_t>(m->scan_end(), uint64_t(first) + count));
	if (first >= end)
		return;
	flags |= kDirty;
	auto mark = [m, flags](uint32_t a, uint32_t b) {
		for (uint32_t i = a; i < b; i++)
			if (m->pages[i].state == PageState::kResident)
				m->pages[i].flags |= flags;
	};
	int r = -ESRCH;
	if (open_pagemap(p))
		r = for_each_written_run(p->pagemap_fd, m->page_addr(first), m->page_addr(end),
		                         /*reprotect=*/true, [m, &mark](uint64_t a, uint64_t b) {
			                         mark(uint32_t((a - m->addr) / kPageSize),
			                              uint32_t((b - m->addr) / kPageSize));
		                         });
	if (r < 0) {
		// Not knowing (a failed walk may have protected pages it did
		// not report), every resident page is written.
		if (r != -ESRCH)
			LOG_WARN(kLog, "pid %d: PAGEMAP_SCAN of 0x%lx+%u pages: %s", int(p->pid),
			         (unsigned long)m->page_addr(first), end - first,
			         std::strerror(-r));
		mark(first, end);
	}
}

// CLOCK's reference bit, from the page tables: a page written since the
// hand last passed is in use, and gets its second chance
// (eviction_policy.h). Faults set the bit only at an install, so without
// this a page written all the time looks as cold as one read once.
//
// Called for each candidate the hand reaches (clock_pick's visit): the
// written bits wait in the page tables until read, so reading them just
// ahead of the hand, kWriteNoteChunk pages at a time and once per round,
// tells CLOCK what a scan of the whole mapping would, at the cost of what
// the hand passes. A whole-mapping scan every round cost the 1 GiB scan of
// `make bench BENCH=stream` a tenth of its pager thread's time.
void PagerThread::note_recent_writes(Mapping *m, uint32_t idx)
{
	if (!m->proc->wp_async)
		return;
	const uint64_t round = m->proc->evict.seq + 1;
	if (m->noted_round == round && idx >= m->noted_from && idx < m->noted_to)
		return;
	m->noted_round = round;
	m->noted_from = idx;
	m->noted_to = uint32_t(std::min<uint64_t>(uint64_t{idx} + kWriteNoteChunk, m->scan_end()));
	find_written(m, idx, m->noted_to - idx, kRef);
}

void PagerThread::mark_written_victims(Process *p)
{
	if (!p->wp_async || !open_pagemap(p))
		return; // check_staged_content reads them all
	const auto &v = p->evict.victims;
	for (size_t k = 0; k < v.size();) {
		Mapping *m = v[k].first;
		uint32_t i = v[k].second;
		size_t j = k + 1;
		while (j < v.size() && v[j].first == m && v[j].second == v[j - 1].second + 1)
			j++;
		(void)for_each_written_run(
		        p->pagemap_fd, m->page_addr(i), m->page_addr(i + uint32_t(j - k)),
		        /*reprotect=*/false, [m](uint64_t a, uint64_t b) {
			        for (uint64_t q = a; q < b; q += kPageSize)
				        m->pages[(q - m->addr) / kPageSize].flags |= kDirty;
		        });
		k = j;
	}
}

void PagerThread::check_staged_content(Process *p, uint32_t n_hashes)
{
	if (!p->wp_async)
		return;
	Eviction &ev = p->evict;
	auto &v = ev.victims;
	// Staged, not known written: what only the content can tell.
	auto unknown = [&v](size_t k) {
		const Page &pg = v[k].first->pages[v[k].second];
		return !v[k].first->dead && pg.state == PageState::kStaged &&
		       !(pg.flags & (kDirty | kRemoved | kRemovedTwice));
	};
	auto differs = [](Mapping *m, uint32_t i, uint64_t hash) {
		return m->content.empty() || hash != m->content[i];
	};
	// The evictor's hashes of the runs that moved whole, when it sent one
	// for each of their pages (MoveReply): victim k's is hash[k - skipped].
	std::vector<uint8_t> &hashed = hashed_;
	hashed.assign(v.size(), 0);
	const MoveReply &reply = ev.reply.move;
	if (n_hashes != 0 && (ev.move.flags & kMoveWantHashes)) {
		uint32_t whole = 0;
		for (uint32_t r = 0; r < ev.move.n_runs; r++)
			if (reply.result[r] == int64_t(ev.move.run(r).len))
				whole += uint32_t(ev.move.run(r).len / kPageSize);
		if (whole == n_hashes) {
			size_t k = 0;
			uint32_t h = 0;
			for (uint32_t r = 0; r < ev.move.n_runs; r++) {
				uint32_t pages = uint32_t(ev.move.run(r).len / kPageSize);
				bool moved = reply.result[r] == int64_t(ev.move.run(r).len);
				for (uint32_t q = 0; q < pages; q++, k++) {
					if (!moved)
						continue;
					uint64_t hash = reply.hash(h++);
					if (!unknown(k))
						continue;
					hashed[k] = 1;
					if (differs(v[k].first, v[k].second, hash))
						v[k].first->pages[v[k].second].flags |= kDirty;
				}
			}
		} else {
			LOG_WARN(kLog,
			         "pid %d: the evictor sent %u content hashes for %u moved pages; "
			         "reading the pages instead",
			         int(p->pid), n_hashes, whole);
		}
	}
	// The rest are read from their slots and hashed here.
	for (size_t k = 0; k < v.size();) {
		if (hashed[k] || !unknown(k)) {
			k++;
			continue;
		}
		Mapping *m = v[k].first;
		size_t j = k + 1;
		while (j < v.size() && j - k < kWritePages && v[j].first == m &&
		       v[j].second == v[j - 1].second + 1 && !hashed[j] && unknown(j))
			j++;
		uint32_t n = uint32_t(j - k);
		uint32_t got = read_pages(p, slot_addr(p, int(k)), stage_buf_.data(), n);
		for (uint32_t q = 0; q < n; q++) {
			Page &pg = m->pages[v[k + q].second];
			// Unread pages count as written.
			if (q >= got ||
			    differs(m, v[k + q].second,
			            content_hash(stage_buf_.data() + size_t(q) * kPageSize,
			                         p->content_key)))
				pg.flags |= kDirty;
		}
		k = j;
	}
}

} // namespace memfed::pager
