// Replica tombstones: the copies of replicated regions that a node still has
// to delete on modules that were unreachable (DeletedCopies: the region was
// deleted; DroppedCopy: the copy was replaced elsewhere), as the file
// NodeFederation keeps in memfedd's state dir (replica-tombstones.json), so
// that a module that returns after the node restarted still gets them
// deleted, and a dropped copy is never taken for a copy meanwhile.
//
// The file is a JSON array of records, written whole and atomically
// (write_file_atomic) at each change; it holds at most kMaxTombstones
// copies, the oldest records giving way first (logged with the copies left
// behind on their modules). Plain functions.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "daemon/common/status.h"
#include "daemon/service/replicated_regions.h"

namespace memfed
{

// The copies the file keeps at most (records of a few hundred bytes each).
constexpr size_t kMaxTombstones = 4096;

struct ReplicaTombstones {
	std::map<uint64_t, DeletedCopies> deleted; // by replica group
	std::vector<DroppedCopy> dropped;          // oldest first
};

// The copies recorded.
size_t tombstone_count(const ReplicaTombstones &t);
// Forgets the oldest records until at most `max` copies are left; returns
// what was forgotten, one line per copy ("region 'x' on module m"), to log.
std::vector<std::string> bound_tombstones(ReplicaTombstones *t, size_t max = kMaxTombstones);

std::string tombstones_to_json(const ReplicaTombstones &t);
// Parses the file's text; kCorrupt naming `path` and what is wrong.
Result<ReplicaTombstones> tombstones_from_json(const std::string &text, const std::string &path);

} // namespace memfed
