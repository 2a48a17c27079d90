// RunConfig: what `memfedctl run` tells libmemfed-preload.so, carried in the
// one environment variable MEMFED_RUN as a JSON object:
//   {"socket": path, "run_id": "1a2b3c4d", "heap_size": bytes,
//    "heap_budget": bytes, "prefix": "/memfed",
//    "maps": {"/abs/path": "region", ...},
//    "soft_grace_ms": ms}
// heap_size 0 leaves the heap alone (files only). Region names of the heaps
// are "heap.<run_id>.<pid>[.<n>]", so `memfedctl run` can delete them after.
// soft_grace_ms (absent or 0: hard mode) is what happens when memfedd dies
// and does not come back (PagerLink::Options): hard, the program waits for it
// forever, as on an NFS hard mount, with a log line every 10 s; soft, once
// memfedd has been away this long, every access to the program's remote
// memory raises SIGBUS.
//
// Values only; no thread-safety concerns.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>

#include "daemon/common/region_name.h"
#include "daemon/common/status.h"

namespace memfed::client
{

constexpr const char *kRunEnv = "MEMFED_RUN";

struct RunConfig {
	std::string socket;
	std::string run_id;
	uint64_t heap_size = 0;
	uint64_t heap_budget = 0;
	std::string prefix = "/memfed";
	std::map<std::string, std::string> maps; // absolute path -> region
	uint64_t soft_grace_ms = 0;              // 0: hard mode

	std::string to_json() const;
	static Result<RunConfig> from_json(const std::string &text);

	// The region a path names: a --map entry, or <prefix>/NAME with NAME a
	// valid region name. Relative paths are taken from `cwd`. nullopt for
	// every other path.
	std::optional<std::string> region_for(const std::string &path,
	                                      const std::string &cwd) const;
	// Prefix of every heap region of this run.
	std::string heap_prefix() const { return "heap." + run_id + "."; }
};

// "/a//b/./c/" -> "/a/b/c"; ".." removes a component. Absolute input only.
std::string normalize_path(const std::string &abs);

} // namespace memfed::client
