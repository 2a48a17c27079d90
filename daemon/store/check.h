// Offline consistency check of a pool (`memfedctl pool check`): header, region
// table, redo log and every data page, without modifying anything.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "daemon/common/status.h"

namespace memfed
{

struct CheckReport {
	bool clean = false;                // no problems found
	uint64_t regions_checked = 0;      // live regions in the table
	uint64_t pages_checked = 0;        // data pages examined
	uint64_t pages_written = 0;        // data pages with a nonzero version
	uint64_t bad_pages = 0;            // pages failing their checksum or zero rule
	uint64_t log_records = 0;          // valid redo-log records (replayed at next open)
	std::vector<std::string> problems; // one line each, naming the place
};

namespace store
{

// Checks the pool at `path`. Takes the pool lock (kBusy while a daemon holds
// it) and maps the pool read-only. A damaged pool is a report with problems,
// not an error; errors are for a pool that cannot be read at all.
Result<CheckReport> check_pool(const std::string &path);

} // namespace store
} // namespace memfed
