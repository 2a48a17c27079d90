// PagerLink's staging area (map_protocol.h, "Staging"): mapping it at
// attach, the evictor serving the pager's MoveRequests into it, and moving
// staged pages back and emptying it when the link reattaches to a new pager.
// Run by the evictor thread (serve_move, empty_staging) and by the thread
// that (re)establishes the link (map_staging, restore_staging).
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "daemon/common/log.h"
#include "daemon/pager/content_hash.h"
#include "daemon/pager/map_protocol.h"
#include "daemon/pager/uffd.h"
#include "libclient/pager_link.h"
#include "libclient/pager_link_util.h"

namespace memfed::client
{

using namespace link_util;

namespace
{

constexpr uint64_t kStagingBytes = uint64_t{pager::kStagingPages} * kPage;

// Whether [addr, addr+len) is a non-empty page-aligned range inside [lo, lo+size).
bool page_range_inside(uint64_t addr, uint64_t len, uint64_t lo, uint64_t size)
{
	return addr % kPage == 0 && len % kPage == 0 && len > 0 && addr + len > addr &&
	       addr >= lo && addr + len <= lo + size;
}

// mincore of [addr, addr+pages*kPage) into `vec`; false on error.
bool resident_pages(uint64_t addr, uint64_t pages, unsigned char *vec)
{
	return mincore(reinterpret_cast<void *>(addr), pages * kPage, vec) == 0;
}

} // namespace

uint64_t PagerLink::staging_addr() const
{
	std::lock_guard<std::mutex> lk(spans_mu_);
	return staging_addr_;
}

std::vector<uint64_t> PagerLink::staged() const
{
	std::lock_guard<std::mutex> lk(evict_mu_);
	return staged_;
}

Status PagerLink::map_staging()
{
	// Raw system calls, as the evictor's drops: under the preload shim
	// mmap() of private anonymous memory is carved out of the remote heap.
	long r = syscall(SYS_mmap, nullptr, kStagingBytes, PROT_READ | PROT_WRITE,
	                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r == -1)
		return Status::from_errno(errno, "mapping the staging area");
	auto addr = uint64_t(r);
	// A huge page would make a slot full; a child must not inherit staged
	// pages (it maps its own).
	const char *what = nullptr;
	int err = 0;
	if (syscall(SYS_madvise, addr, kStagingBytes, MADV_NOHUGEPAGE) < 0)
		what = "madvise(MADV_NOHUGEPAGE) of the staging area", err = errno;
	else if (syscall(SYS_madvise, addr, kStagingBytes, MADV_DONTFORK) < 0)
		what = "madvise(MADV_DONTFORK) of the staging area", err = errno;
	else if (int rc = pager::uffd_register(uffd_, addr, kStagingBytes,
	                                       UFFDIO_REGISTER_MODE_MISSING);
	         rc < 0)
		what = "registering the staging area with userfaultfd", err = -rc;
	if (what) {
		syscall(SYS_munmap, addr, kStagingBytes);
		return Status::from_errno(err, what);
	}
	{
		std::lock_guard<std::mutex> ek(evict_mu_);
		staged_.assign(pager::kStagingPages, 0);
		staged_ns_.assign(pager::kStagingPages, 0);
	}
	std::lock_guard<std::mutex> sk(spans_mu_);
	staging_addr_ = addr;
	return Status::ok();
}

const char *PagerLink::check_move(const pager::MoveRequest &req, size_t n) const
{
	if (staging_addr_ == 0)
		return "this process has no staging area";
	if (req.n_empty > pager::kMaxMoveEmpty || req.n_runs > pager::kMaxMoveRuns)
		return "more ranges than the protocol allows";
	if (req.n_empty + req.n_runs == 0)
		return "nothing to empty or move";
	if (n != pager::move_request_size(req.n_empty, req.n_runs))
		return "its size does not match its counts";
	for (uint32_t i = 0; i < req.n_empty; i++) {
		pager::DropRange r = req.empty(i);
		if (!page_range_inside(r.addr, r.length, staging_addr_, kStagingBytes))
			return "a range to empty is not page aligned inside the staging area";
	}
	for (uint32_t i = 0; i < req.n_runs; i++) {
		pager::MoveRun r = req.run(i);
		if (!page_range_inside(r.slot, r.len, staging_addr_, kStagingBytes))
			return "a run's slots are not page aligned inside the staging area";
		if (!std::any_of(private_spans_.begin(), private_spans_.end(), [&r](const Span &s) {
			    return page_range_inside(r.src, r.len, s.first, s.second);
		    }))
			return "a run's source is not page aligned inside one private mapping";
	}
	return nullptr;
}

void PagerLink::record_move(uint64_t staging, const pager::MoveRun &run, uint64_t sent_ns, int r,
                            int64_t moved)
{
	uint64_t first = (run.slot - staging) / kPage, pages = run.len / kPage;
	uint64_t done = r == 0 ? pages : uint64_t(moved) / kPage;
	std::fill_n(staged_ns_.begin() + first, pages, sent_ns);
	for (uint64_t k = 0; k < done; k++)
		staged_[first + k] = run.src + k * kPage;
	if (r == 0 || done >= pages)
		return;
	// A MOVE has been seen to fail for a page it had moved (F8): a slot
	// that is present while its source is not holds the source's page.
	// Slots the table has already are left as they are (EEXIST: full).
	unsigned char slot_in[pager::kMaxMoveRuns], src_in[pager::kMaxMoveRuns];
	for (uint64_t at = done; at < pages; at += pager::kMaxMoveRuns) {
		uint64_t cnt = std::min<uint64_t>(pages - at, pager::kMaxMoveRuns);
		if (!resident_pages(run.slot + at * kPage, cnt, slot_in) ||
		    !resident_pages(run.src + at * kPage, cnt, src_in))
			return;
		for (uint64_t k = 0; k < cnt; k++)
			if ((slot_in[k] & 1) && !(src_in[k] & 1) && staged_[first + at + k] == 0)
				staged_[first + at + k] = run.src + (at + k) * kPage;
	}
}

bool PagerLink::serve_move(int sock, const pager::MoveRequest &req, size_t n)
{
	pager::MoveReply rep;
	rep.magic = pager::kMoveReplyMagic;
	rep.n_runs = std::min(req.n_runs, pager::kMaxMoveRuns);
	rep.seq = req.seq;
	const char *refused;
	uint64_t staging;
	// Sources a MOVE refused because a forked child shares them (EBUSY).
	pager::DropRange shared[pager::kMaxMoveRuns];
	uint32_t n_shared = 0, n_hashes = 0;
	evictor_pin_.follow(req.flags);
	{
		std::lock_guard<std::mutex> sk(spans_mu_);
		// Retired: its pager is gone (see evictor_loop).
		if (evict_sock_ != sock)
			return false;
		refused = check_move(req, n);
		if (!refused)
			drops_inflight_++;
		staging = staging_addr_;
	}
	if (refused) {
		LOG_ERROR("libmemfed",
		          "refused the pager's move request %llu (%u to empty, %u runs): %s",
		          (unsigned long long)req.seq, req.n_empty, req.n_runs, refused);
		for (uint32_t i = 0; i < rep.n_runs; i++)
			rep.result[i] = -EINVAL;
	} else {
		std::lock_guard<std::mutex> ek(evict_mu_);
		for (uint32_t i = 0; i < req.n_empty; i++) {
			pager::DropRange r = req.empty(i);
			if (syscall(SYS_madvise, r.addr, r.length, MADV_DONTNEED) < 0) {
				LOG_WARN("libmemfed", "emptying staging 0x%llx+%llu: %s",
				         (unsigned long long)r.addr, (unsigned long long)r.length,
				         strerror(errno));
				continue;
			}
			// The pager empties a round's slots once their pages are
			// durable: the program's drops of their sources that
			// ended before the move are settled (drop_ledger.h).
			uint64_t first = (r.addr - staging) / kPage, n = r.length / kPage;
			for (uint64_t k = first; k < first + n;) {
				uint64_t e = k + 1;
				while (staged_[k] != 0 && e < first + n &&
				       staged_[e] == staged_[e - 1] + kPage &&
				       staged_ns_[e] == staged_ns_[k])
					e++;
				if (staged_[k] != 0)
					drops_.forget(staged_[k], (e - k) * kPage, staged_ns_[k]);
				k = e;
			}
			std::fill_n(staged_.begin() + first, n, 0);
		}
		for (uint32_t i = 0; i < req.n_runs; i++) {
			pager::MoveRun run = req.run(i);
			uint64_t done = 0;
			int r;
			for (;;) {
				int64_t moved = 0;
				r = pager::uffd_move(uffd_, run.slot + done, run.src + done,
				                     run.len - done, 0, &moved);
				done += uint64_t(moved);
				// A MOVE that stops part-way says EAGAIN: the rest
				// is tried again, which tells why it stopped.
				if (r != -EAGAIN || moved == 0 || done >= run.len)
					break;
			}
			rep.result[i] = r == 0 ? int64_t(run.len) : r;
			record_move(staging, run, req.sent_ns, r, int64_t(done));
			if (r == -EBUSY)
				shared[n_shared++] = {run.src + done, run.len - done};
		}
		n_hashes = hash_moved(req, &rep);
	}
	if (!refused) {
		std::lock_guard<std::mutex> sk(spans_mu_);
		drops_inflight_--;
	}
	evictors_cv_.notify_all();
	bool sent =
	        send(sock, &rep, pager::move_reply_size(rep.n_runs, n_hashes), MSG_NOSIGNAL) >= 0;
	unshare(shared, n_shared);
	return sent;
}

// The content hash of every page of the runs that moved whole, as it sits
// in its slot, for a pager that asked (WP_ASYNC: it tells written pages from
// clean ones by content, and reading them here costs a sixth of what it
// costs the pager). Nothing writes a slot, and a slot a run moved into is
// full: reading it takes no fault. All or none.
uint32_t PagerLink::hash_moved(const pager::MoveRequest &req, pager::MoveReply *rep) const
{
	uint64_t key = content_key_.load(std::memory_order_relaxed);
	if (!(req.flags & pager::kMoveWantHashes) || key == 0)
		return 0;
	uint32_t n = 0;
	for (uint32_t i = 0; i < rep->n_runs; i++) {
		pager::MoveRun run = req.run(i);
		if (rep->result[i] != int64_t(run.len))
			continue;
		if (run.len / kPage > pager::kMaxMoveHashes - n)
			return 0;
		for (uint64_t a = run.slot; a < run.slot + run.len; a += kPage)
			rep->set_hash(n++,
			              pager::content_hash(reinterpret_cast<const void *>(a), key));
	}
	return n;
}

// A page shared with a forked child (until either writes it) cannot move.
// A write fault gives this process its own copy, and MADV_POPULATE_WRITE
// takes one without writing a byte, so it cannot race with the program's
// writes: the page moves in a later round. Only after the reply: a page
// the program dropped meanwhile faults, and the pager serves that fault
// once it has the reply, not while it waits for it.
void PagerLink::unshare(const pager::DropRange *ranges, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (syscall(SYS_madvise, ranges[i].addr, ranges[i].length, MADV_POPULATE_WRITE) <
		            0 &&
		    errno != ENOMEM && errno != EFAULT)
			LOG_DEBUG("libmemfed", "unsharing 0x%llx+%llu for the pager's move: %s",
			          (unsigned long long)ranges[i].addr,
			          (unsigned long long)ranges[i].length, strerror(errno));
}

void PagerLink::forget_staged(uint64_t addr, uint64_t length)
{
	std::lock_guard<std::mutex> ek(evict_mu_);
	for (uint64_t &src : staged_)
		if (src != 0 && src - addr < length)
			src = 0;
}

bool PagerLink::restore_staging(int fd)
{
	std::lock_guard<std::mutex> ek(evict_mu_);
	uint64_t staging = staging_addr_, back = 0, stale = 0;
	for (uint64_t i = 0; i < staged_.size(); i++) {
		uint64_t src = staged_[i], slot = staging + i * kPage;
		if (src == 0)
			continue;
		int r;
		uint64_t since = monotonic_ms();
		// EAGAIN: an address-space event is being read by the new pager.
		while ((r = pager::uffd_move(uffd_, src, slot, kPage, 0, nullptr)) == -EAGAIN) {
			pollfd p = {fd, 0, 0};
			if (poll(&p, 1, 1) > 0)
				return false; // the new pager went away: the next one
			if (monotonic_ms() - since > 5000) {
				since = monotonic_ms();
				LOG_WARN("libmemfed",
				         "moving staged page 0x%llx back: still EAGAIN",
				         (unsigned long long)src);
			}
		}
		unsigned char in = 0;
		if (r == -EEXIST && resident_pages(src, 1, &in) && !(in & 1)) {
			// Nothing present, yet full: a uffd-wp marker, which MOVE
			// refuses and COPY fills (F3, F6).
			r = pager::uffd_copy(uffd_, src, reinterpret_cast<const void *>(slot),
			                     kPage, false, nullptr);
		}
		if (r == 0)
			back++;
		else if (r == -EEXIST)
			stale++; // the old pager refilled the source from these bytes
		else
			LOG_ERROR("libmemfed",
			          "moving staged page 0x%llx back from the staging area: %s; "
			          "the staged copy is dropped",
			          (unsigned long long)src, strerror(-r));
		staged_[i] = 0;
	}
	if (back + stale > 0)
		LOG_INFO("libmemfed",
		         "reattaching: %llu staged page(s) moved back, %llu stale slot(s)",
		         (unsigned long long)back, (unsigned long long)stale);
	return true;
}

void PagerLink::post_empty_staging()
{
	{
		std::lock_guard<std::mutex> sk(spans_mu_);
		if (evictor_running_) {
			if (!empty_staging_job_) {
				empty_staging_job_ = true;
				drops_inflight_++;
				evictor_cv_.notify_all();
			}
			return;
		}
	}
	empty_staging(); // no evictor (it failed to start): a pager is attached
}

void PagerLink::empty_staging()
{
	uint64_t staging = staging_addr();
	if (staging != 0 && syscall(SYS_madvise, staging, kStagingBytes, MADV_DONTNEED) < 0)
		LOG_WARN("libmemfed", "emptying the staging area: %s", strerror(errno));
}

} // namespace memfed::client
