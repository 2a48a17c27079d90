// RedoLog: the ring of page records that makes every page write atomic.
//
// Scheme (one round of k pages, k <= kLogSlots, from one write_pages call or
// from several writes of a write_pages_batch call: group commit):
//   1. Log: for each page, copy the new content into the next log data slot and
//      fill its LogDescriptor {magic, seq, home fa_offset, page crc32c,
//      wversion, descriptor crc32c}; seq is a global counter, strictly
//      increasing; wversion is the writer's page version of a versioned write
//      (0 for an unversioned one).
//      Persist the slots and descriptors (one persist call on a file pool).
//      From here on the write is durable: recovery would apply it.
//   2. Apply: copy each page to its home location (its FA offset in the pool)
//      and set its PageMeta {crc, version = seq} and, for a versioned write,
//      its version-area entry = wversion, in memory only.
//   3. Return (acknowledge every write of the round).
//   Checkpoint: before the ring wraps onto older records, before the log is
//   cleared, and at close, every page applied since the last checkpoint is
//   persisted with its meta. So a record is only overwritten once its home
//   page is durable, and a write costs one persist, not two.
// Recovery at open: scan(), take the valid records (magic, descriptor crc and
// payload crc all match; a torn record fails one of them and is skipped) in
// seq order and re-apply each whose seq >= the home page's PageMeta version
// (with its wversion, if any, so a page and its version are atomic).
// The version test stops an old record from undoing a newer write whose own
// record was since overwritten (possibly by a torn one). Re-applying is
// idempotent. Then checkpoint and clear the log; the next seq is one past the
// largest seq in the log or in any PageMeta, so seqs never go backwards.
// Deleting a region checkpoints and clears the log first, so no record can
// resurrect data in a freed extent.
//
// So after a crash at any instant every page is its complete old content (no
// valid record, or the record was torn: write_pages had not returned) or its
// complete new content (the record was valid and is replayed).
//
// Thread-safety: none; ModuleStore holds its write lock around append/clear.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "daemon/store/layout.h"

namespace memfed::store
{

// A persist function: makes [ptr, ptr+len) durable (pmem2_persist_fn).
using PersistFn = void (*)(const void *ptr, size_t len);

class RedoLog
{
public:
	struct Record {
		uint32_t slot;
		uint64_t seq;
		uint64_t fa_offset;
		uint32_t page_crc;
		uint64_t wversion; // 0: an unversioned write
	};
	struct ScanResult {
		std::vector<Record> valid; // sorted by seq
		uint64_t torn = 0;         // non-empty slots that failed a check
	};

	// page_granular: persisting a range costs one call however large it is
	// (msync on a file), so the log's two areas are persisted as one span.
	RedoLog(uint8_t *base, const Geometry &geo, PersistFn persist, bool page_granular)
	    : base_(base), geo_(geo), persist_(persist), page_granular_(page_granular)
	{
	}

	// Reads the log of a mapped pool (read-only; also used by check).
	static ScanResult scan(const uint8_t *base, const Geometry &geo);
	static const uint8_t *payload(const uint8_t *base, const Geometry &geo, uint32_t slot)
	{
		return base + geo.log_data_offset + uint64_t{slot} * kPageSize;
	}

	// Step 1 above for `count` pages of `src` whose homes are fa_first,
	// fa_first + kPageSize, ...; record i gets seq first_seq + i and its page
	// crc is stored in crcs[i]; every record carries `wversion` (0: an
	// unversioned write). Durable on return. REQUIRES: count <= kLogSlots.
	void append(uint64_t first_seq, uint64_t fa_first, uint32_t count, const uint8_t *src,
	            uint32_t *crcs, uint64_t wversion = 0)
	{
		stage(first_seq, fa_first, count, src, crcs, wversion);
		persist_staged();
	}
	// Group commit: step 1 split in two, so that the records of several
	// writes become durable with one persist. stage() writes records like
	// append() but does not persist them; persist_staged() makes every record
	// staged since the last persist durable. The records staged between two
	// persists must fit in the ring: REQUIRES: !wraps(count) for each stage()
	// after the first (the first restarts the ring at slot 0 if it must; the
	// caller checkpointed).
	void stage(uint64_t first_seq, uint64_t fa_first, uint32_t count, const uint8_t *src,
	           uint32_t *crcs, uint64_t wversion = 0);
	void persist_staged();
	// Persist calls made so far (each makes a batch of records durable);
	// any thread may read it.
	uint64_t persists() const { return persists_.load(std::memory_order_relaxed); }
	// True if appending `count` records now would overwrite older records
	// (the ring wraps): checkpoint first.
	bool wraps(uint32_t count) const { return head_ + count > kLogSlots; }
	// Restarts the ring at slot 0. REQUIRES: every record is checkpointed,
	// nothing is staged.
	void rewind() { head_ = 0; }
	// Invalidates every record (durable on return); the ring restarts at slot 0.
	void clear();

private:
	uint8_t *base_;
	Geometry geo_;
	PersistFn persist_;
	bool page_granular_;
	uint32_t head_ = 0;        // next slot to write
	uint32_t staged_from_ = 0; // first slot staged since the last persist
	bool staged_ = false;      // records staged and not yet persisted
	std::atomic<uint64_t> persists_{0};
};

} // namespace memfed::store
