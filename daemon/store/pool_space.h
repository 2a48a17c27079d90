// SpaceLedger: a pool's space accounting, the pages written
// (PageMeta.version != 0) counted per region, per owner uid, per owner node
// and in all. On a thin pool (layout.h, layout 5) these counts are what a
// region, an owner and the pool are charged for, and what a write of new
// pages is admitted against (ModuleStore::admit_new_pages, pool_space.cc,
// with ModuleStore's other queries of it).
//
// Nothing of it is stored, so no crash can leave it wrong: ModuleStore's
// open derives it from the metas (skipping their holes), a write that first
// takes a page adds to it, a delete or truncate that zeroes pages takes them
// off.
//
// Thread-safety: every method may be called from any thread; the ledger's
// own mutex guards every count. It is the innermost lock: taken under
// ModuleStore's table_mu_, write_mu_ and page stripes, and nothing is called
// with it held. The counts change only with ModuleStore's write_mu_ held
// (writes, delete, truncate) or at open, so a reader that holds write_mu_
// (the write admission) sees them stand still.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_map>

#include "daemon/store/region_access.h"
#include "daemon/store/region_table.h"

namespace memfed::store
{

class SpaceLedger
{
public:
	// Adds `delta` pages (negative: takes them off) to region r's count, its
	// owner uid's, its owner node's and the total. An owner whose count
	// reaches 0 is forgotten.
	void add(const RegionInfo &r, int64_t delta);
	// Takes every page region r holds off the counts, and forgets r (a
	// delete).
	void drop_region(const RegionInfo &r);

	uint64_t total() const;
	// 0 for a region, uid or node that holds no page.
	uint64_t of_region(uint32_t region_id) const;
	uint64_t of_uid(uint32_t uid) const;
	uint64_t of_node(const NodeKeyBytes &key) const;
	// Every uid / node that holds pages, read under one lock.
	std::map<uint32_t, uint64_t> by_uid() const;
	std::map<NodeKeyBytes, uint64_t> by_node() const;

private:
	// REQUIRES: mu_ held.
	void add_locked(const RegionInfo &r, int64_t delta);

	mutable std::mutex mu_;
	uint64_t total_ = 0;
	std::unordered_map<uint32_t, uint64_t> by_region_;
	std::map<uint32_t, uint64_t> by_uid_;
	std::map<NodeKeyBytes, uint64_t> by_node_;
};

} // namespace memfed::store
