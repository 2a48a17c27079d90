// Replicated regions: what a new region's copies are placed by, and the
// record of copies the federation still has to delete. NodeFederation
// (node_federation.h) keeps the copies; replicated_regions.cc is its half
// that does it.
#pragma once

#include <string>
#include <vector>

#include "daemon/common/ids.h"
#include "daemon/service/replica_set.h"

namespace memfed
{

// How many copies a new region gets, and where.
struct Placement {
	unsigned replicas = 1;     // copies, on modules of distinct nodes
	unsigned replicas_min = 0; // fewer allowed (degraded from the start); 0: none
	std::vector<ModuleId> on;  // only these modules, in this order (empty: any)
};

// Copies of a replicated region (of one group) to delete once their modules
// answer: only a region of that name and that group is deleted, never a
// region that has since taken the name.
struct DeletedCopies {
	std::string name;
	std::vector<ReplicaLocation> copies;
};

// A copy dropped from its region's set, replaced by a new copy elsewhere
// after it was lost for longer than the grace: deleted if its module ever
// answers again (only that region entry: same name, group and region id),
// and never counted as a copy meanwhile.
struct DroppedCopy {
	uint64_t group = 0;
	std::string name;
	ReplicaLocation copy;
};

// True for the name of a rebuild's claim region (replicated_regions.cc):
// a module holds one while a node makes a new copy of a replicated region;
// region listings leave it out.
bool is_rebuild_claim(const std::string &region_name);

} // namespace memfed
