// RegionTable: the persistent table of named regions in a pool, and its
// in-memory index by name and by id.
//
// A region is one contiguous extent of the data area. Its id is
// (generation << 10) | slot: stable across restarts, and never the id of an
// earlier region that lived in the same slot (the slot's generation counts the
// creates), so a stale id fails instead of reaching someone else's data.
// Crash safety: a create writes the entry body while the slot is free, then
// flips the state word; a delete flips it to kRegionDeleting and, once the
// extent is zeroed, to kRegionFree (see layout.h RegionEntry).
//
// Thread-safety: none; ModuleStore serialises mutations and guards lookups.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/common/region_name.h"
#include "daemon/common/status.h"
#include "daemon/store/layout.h"
#include "daemon/store/redo_log.h"

namespace memfed
{

struct RegionInfo {
	uint32_t id = 0;
	std::string name;
	uint64_t fa_offset = 0; // pool byte offset of the first page
	uint64_t size_bytes = 0;
	uint32_t owner_uid = 0;
	uint32_t mode = 0; // permission bits
	uint64_t ctime_ns = 0;
	// The region as a file: the bytes before end of file, <= size_bytes.
	// A region whose length was never set is a file of size_bytes.
	uint64_t length = 0;
};

namespace store
{

constexpr uint32_t kSlotBits = 10;
static_assert((1u << kSlotBits) == kTableSlots);
constexpr uint32_t kMaxGeneration = (1u << (32 - kSlotBits)) - 1;

struct RegionSlot {
	uint32_t slot = 0;
	RegionState state = kRegionFree;
	uint32_t generation = 0;
	RegionInfo info; // meaningful unless state == kRegionFree
};

class RegionTable
{
public:
	RegionTable(uint8_t *base, const Geometry &geo, PersistFn persist)
	    : base_(base), geo_(geo), persist_(persist)
	{
	}

	// Decodes every slot of a mapped pool (read-only; also used by check).
	// Appends one line per bad non-free entry to `problems` (checksum, name,
	// extent outside the data area) and leaves that entry out of the result.
	static std::vector<RegionSlot> read_all(const uint8_t *base, const Geometry &geo,
	                                        std::vector<std::string> *problems);

	// Builds the index from media; kCorrupt naming the first bad entry.
	Status load(const std::string &path);

	const RegionSlot *find(const std::string &name) const;
	const RegionSlot *by_id(uint32_t id) const;
	// Live regions in slot order.
	std::vector<RegionInfo> list() const;
	// Regions whose delete was interrupted by a crash.
	std::vector<RegionSlot> deleting() const;
	uint32_t live_count() const { return static_cast<uint32_t>(by_name_.size()); }

	// Persists a new live region in a free slot; kNoSpace if the table is full.
	// Fills in info->id.
	Status create(RegionInfo *info);
	// Persists a live region's file length (<= its size) with one atomic store.
	void set_length(uint32_t slot, uint64_t length);
	// Persists the state changes of a delete.
	void mark_deleting(uint32_t slot);
	void mark_free(uint32_t slot);

private:
	RegionEntry *entry(uint32_t slot)
	{
		return reinterpret_cast<RegionEntry *>(base_ + geo_.table_offset) + slot;
	}
	void set_state(uint32_t slot, RegionState state, uint32_t generation);

	uint8_t *base_;
	Geometry geo_;
	PersistFn persist_;
	std::vector<RegionSlot> slots_;                     // kTableSlots, index = slot
	std::unordered_map<std::string, uint32_t> by_name_; // live regions only
};

uint32_t region_id(uint32_t slot, uint32_t generation);

} // namespace store
} // namespace memfed
