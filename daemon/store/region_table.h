// RegionTable: the persistent table of named regions in a pool, and its
// in-memory index by name and by id.
//
// A region is one contiguous extent of the data area. Its id is
// (generation << slot_bits) | slot, slot_bits = log2(table slots) (10 to 20,
// fixed at format, layout.h): stable across restarts, and never the id of an
// earlier region that lived in the same slot until the slot's generation
// (which counts its creates, 2^(32 - slot_bits) - 1 of them) wraps, so a stale
// id fails instead of reaching someone else's data. Creates take free slots
// round robin (next fit), so the generations of a large table wrap only after
// millions of creates.
//
// Memory: 4 bytes per slot plus an entry per live (or deleting) region, so a
// table of a million mostly free slots costs 4 MiB. Live regions are indexed
// by name in name order, which is the order of list() and of its pages.
// Crash safety: a create writes the entry body while the slot is free, then
// flips the state word; a delete flips it to kRegionDeleting and, once the
// extent is zeroed, to kRegionFree (see layout.h RegionEntry).
//
// Thread-safety: none; ModuleStore serialises mutations and guards lookups.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "daemon/common/region_name.h"
#include "daemon/common/status.h"
#include "daemon/store/layout.h"
#include "daemon/store/redo_log.h"
#include "daemon/store/region_access.h"

namespace memfed
{

struct RegionInfo {
	uint32_t id = 0;
	std::string name;
	uint64_t fa_offset = 0; // pool byte offset of the first page
	uint64_t size_bytes = 0;
	uint32_t owner_uid = 0;
	// The node that owns the region (with owner_uid, the uid it vouched
	// for); zeros: the node that runs the module (region_access.h).
	NodeKeyBytes owner_key{};
	uint32_t mode = 0; // permission bits
	uint64_t ctime_ns = 0;
	// The region as a file: the bytes before end of file, <= size_bytes.
	// A region whose length was never set is a file of size_bytes.
	uint64_t length = 0;
	// A replicated region: the group its copies share and their number K;
	// both 0 for an ordinary region (layout.h RegionEntry).
	uint64_t replica_group = 0;
	uint8_t replicas = 0;
	// A copy-on-write clone (layout 6): its page i reads as page base_page + i
	// of region base_id until the clone writes it (layout.h).
	bool is_clone = false;
	uint32_t base_id = 0;
	uint64_t base_page = 0;
	// The pool space the region takes: its pages written, in bytes (set by
	// ModuleStore from what it counts; not in the table entry).
	uint64_t used_bytes = 0;
};

// What one owner (uid) holds in a pool: the regions it owns, live or being
// deleted, and their bytes: the table counts sizes (a region's whole size is
// reserved at create); ModuleStore::usage_of charges the pages written instead
// on a thin pool (layout.h), where size costs only address space.
struct OwnerUsage {
	uint64_t bytes = 0;
	uint32_t regions = 0;
};

namespace store
{

// log2 of a table size (a power of two).
uint32_t slot_bits(uint32_t table_slots);
// Largest generation of a slot in a table of `table_slots`.
uint32_t max_generation(uint32_t table_slots);

struct RegionSlot {
	uint32_t slot = 0;
	RegionState state = kRegionFree;
	uint32_t generation = 0;
	RegionInfo info; // meaningful unless state == kRegionFree
	// Layout 4: the owner and grants (info.owner_key is access.owner_key),
	// and which copy of the slot's access record holds them, of what seq.
	RegionAccess access;
	int access_copy = 0;
	uint64_t access_seq = 0;
};

class RegionTable
{
public:
	RegionTable(uint8_t *base, const Geometry &geo, PersistFn persist)
	    : base_(base), geo_(geo), persist_(persist), slot_bits_(slot_bits(geo.table_slots)),
	      max_generation_(max_generation(geo.table_slots))
	{
	}

	// Decodes the slots in use (live or deleting) of a mapped pool
	// (read-only; also used by check), with their access records (layout
	// 4). Appends one line per bad non-free entry to `problems` (checksum,
	// name, extent outside the data area, no valid access record) and
	// leaves that entry out of the result.
	static std::vector<RegionSlot> read_all(const uint8_t *base, const Geometry &geo,
	                                        std::vector<std::string> *problems);
	// The same for `count` entries starting at `entries`, which hold the
	// table's slots first_slot.. (a copy of part of the table), without
	// their access records.
	static std::vector<RegionSlot> read_entries(const uint8_t *entries, uint32_t first_slot,
	                                            uint32_t count, const Geometry &geo,
	                                            std::vector<std::string> *problems);

	// Builds the index from media; kCorrupt naming the first bad entry.
	Status load(const std::string &path);

	const RegionSlot *find(const std::string &name) const;
	const RegionSlot *by_id(uint32_t id) const;
	// Live regions in name order: those whose name sorts after `after`
	// (empty: from the first), at most `limit` of them (0: all).
	std::vector<RegionInfo> list(const std::string &after = "", size_t limit = 0) const;
	// Regions whose delete was interrupted by a crash.
	std::vector<RegionSlot> deleting() const;
	uint32_t live_count() const { return static_cast<uint32_t>(by_name_.size()); }
	// What `owner` holds (zeros for an owner without regions), and every
	// owner that holds a region. Kept with the index: no table scan.
	OwnerUsage usage_of(uint32_t owner) const;
	const std::map<uint32_t, OwnerUsage> &usage_by_owner() const { return by_owner_; }
	// The same by owner node key (zeros: the module's own node).
	OwnerUsage usage_of_node(const NodeKeyBytes &key) const;
	const std::map<NodeKeyBytes, OwnerUsage> &usage_by_node() const { return by_node_; }
	uint32_t slots() const { return geo_.table_slots; }

	// Persists a new live region in a free slot; kNoSpace if the table is full.
	// Fills in info->id. Layout 4: its access record (owner info->owner_key,
	// no grants) is durable before the slot turns live.
	Status create(RegionInfo *info);
	// Persists a live region's access (owner and grants) as the slot's next
	// access record (layout.h AccessRecord). REQUIRES: the geometry has an
	// access area, a.grants.size() <= kMaxGrants.
	void set_access(uint32_t slot, const RegionAccess &a);
	// Persists a live region's file length (<= its size) with one atomic store.
	void set_length(uint32_t slot, uint64_t length);
	// Persists that a clone no longer reads through to its base (its base is
	// going away and every page it shared has been copied into it).
	// REQUIRES: the geometry has a clone area.
	void detach(uint32_t slot);
	// Persists the state changes of a delete.
	void mark_deleting(uint32_t slot);
	void mark_free(uint32_t slot);

private:
	RegionEntry *entry(uint32_t slot)
	{
		return reinterpret_cast<RegionEntry *>(base_ + geo_.table_offset) + slot;
	}
	void set_state(uint32_t slot, RegionState state, uint32_t generation);
	AccessRecord *access_record(uint32_t slot, int copy)
	{
		return reinterpret_cast<AccessRecord *>(base_ + geo_.access_fa(slot, copy));
	}
	// Counts `info` in (add) or out of its owner's usage.
	void add_usage(const RegionInfo &info, bool add);
	uint32_t id(uint32_t slot, uint32_t generation) const
	{
		return (generation << slot_bits_) | slot;
	}

	uint8_t *base_;
	Geometry geo_;
	PersistFn persist_;
	uint32_t slot_bits_;
	uint32_t max_generation_;
	// Per slot: its generation (the creates it has seen, mod max_generation_).
	std::vector<uint32_t> generation_;
	std::unordered_map<uint32_t, RegionSlot> used_; // live or deleting, by slot
	std::map<std::string, uint32_t> by_name_;       // live regions only, name order
	std::map<uint32_t, OwnerUsage> by_owner_;       // live or deleting, by owner uid
	std::map<NodeKeyBytes, OwnerUsage> by_node_;    // the same by owner node key
	uint32_t next_free_ = 0;                        // where the next create looks first
};

} // namespace store
} // namespace memfed
