// DropLedger: the program's drops of its private memory (MADV_DONTNEED on
// the heap), as the pager link must remember them across a memfedd restart.
//
// A dropped page reads as zero from then on. The pager learns of a drop from
// its REMOVE event and writes the zeroes back to the module asynchronously; a
// memfedd killed before they are durable forgets the drop, and the next one
// would serve the module's old content. So the link keeps each drop until the
// pager has made it durable, and reports the rest in the maps it sends a
// restarted memfedd ("removed"). A drop is, in turn:
//   in flight   from begin() to end(): its madvise is under way;
//   unsent      it ended while a pager was being attached, which may have
//               read its event before the mapping was sent (and ignored it);
//   unsettled   the current pager read its event; not yet known durable.
// The monitor syncs the unsettled drops every few ms and forgets them once
// the sync succeeds (settle_ranges, settled). The evictor takes out of them
// the pages it drops (forget), of the drops that ended before the pager sent
// its request: the pager read those before it picked the pages, and wrote
// their newer content back durably before asking. A drop that ended later
// may have come after the write-back; it stays (the pager left the page out
// of the request, or writes its zeroes at the round's end, and a sync of
// its range waits for them: daemon/pager/eviction.cc, writeback.cc).
//
// Thread-safety: every member locks the ledger's mutex. forget() runs on the
// evictor, which must not allocate (a thread that touches the remote heap
// may wait for the very pager that waits for the evictor): the unsettled
// drops keep spare capacity for its splits.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace memfed::client
{

// A byte range [first, first + second).
using Span = std::pair<uint64_t, uint64_t>;

class DropLedger
{
public:
	// Unsettled drops the evictor can split without allocating.
	static constexpr size_t kDefaultReserve = 4096;

	explicit DropLedger(size_t reserve = kDefaultReserve) : reserve_(reserve)
	{
		unsettled_.reserve(reserve_);
	}

	// A program thread drops [addr, addr+length): begin() before its
	// madvise (waiting while mappings are being sent to a new pager), end()
	// with begin's token after it.
	uint64_t begin(uint64_t addr, uint64_t length);
	void end(uint64_t addr, uint64_t length, uint64_t token);

	// A pager is being attached: drops ending from now on are unsent, and
	// new ones wait in begin() until remap_end().
	void remap_begin();
	void remap_end();
	// Waits up to `timeout` until no drop is in flight; true if none is.
	bool wait_inflight(std::chrono::milliseconds timeout);
	// What a new pager must learn: the unsent and the unsettled drops.
	std::vector<Span> to_report() const;
	// The new pager has them all (its maps carried them).
	void reported();

	// The unsettled drops to sync, overlapping and adjacent ones merged,
	// and the number of the newest of them; nothing while remapping.
	std::optional<std::pair<std::vector<Span>, uint64_t>> settle_ranges() const;
	// The drops numbered up to `upto` are durable: forgets them, with the
	// pieces forget() split them into. Returns whether drops are left.
	bool settled(uint64_t upto);
	// Takes [addr, addr+length) out of the unsettled drops that ended
	// before `before_ns` (CLOCK_MONOTONIC). A drop split in two without
	// spare capacity stays whole (its zeroes would then cover newer
	// content, if memfedd died before the next settle).
	void forget(uint64_t addr, uint64_t length, uint64_t before_ns);

	// fork(): held from prepare to the end of fork in either process.
	void lock() { mu_.lock(); }
	void unlock() { mu_.unlock(); }
	// In the child, with the ledger locked: drops in flight stayed with
	// their threads in the parent. Unlocks.
	void unlock_in_child();

private:
	struct Unsettled {
		uint64_t addr, length, seq;
		uint64_t end_ns; // CLOCK_MONOTONIC when its madvise returned
	};

	const size_t reserve_;
	mutable std::mutex mu_;
	std::condition_variable cv_;
	std::vector<Span> inflight_;
	std::vector<Span> unsent_;
	std::vector<Unsettled> unsettled_;
	uint64_t seq_ = 0;      // the number of the last drop to end
	uint64_t attaches_ = 0; // pagers attached so far
	bool remapping_ = false;
};

} // namespace memfed::client
