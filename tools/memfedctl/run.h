// `memfedctl run`: starts an unmodified program on remote memory through
// libmemfed-preload.so.
//
//   memfedctl run [--map NAME=PATH ...] [--heap-budget SIZE] [--heap-size SIZE]
//                 [--prefix DIR] [--preload LIB] [--keep-heaps] [--stats FILE]
//                 [--hard | --soft GRACE] -- PROG ARGS...
//
// The program (and every process it forks or execs) gets its heap in a region
// of its own, paged by memfedd with at most --heap-budget resident, and sees
// region NAME as the file PATH (and every region as <prefix>/NAME). When the
// program exits, its heap regions are deleted (after --stats has written the
// pager's counters for them) and its exit status returned.
//
// Thread-safety: run_command() forks and waits; call it from a single-threaded
// memfedctl.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "daemon/common/status.h"
#include "tools/memfedctl/cli.h"

namespace memfed::ctl
{

struct RunOptions {
	std::string socket;
	std::vector<std::pair<std::string, std::string>> maps; // (region, path)
	uint64_t heap_budget = 0;                              // 0: heap stays local
	uint64_t heap_size = 0;                                // 0: kDefaultHeapSize
	std::string prefix = "/memfed";
	std::string preload; // empty: found next to memfedctl or in the libdir
	bool keep_heaps = false;
	std::string stats_path;     // empty: no --stats
	uint64_t soft_grace_ms = 0; // 0: hard mode (client::RunConfig)
	std::vector<std::string> argv;
};

// A size no program reaches here, so the budget holds for all of its heap: a
// heap region costs pool space only for the pages written (thin regions,
// daemon/store/layout.h), the process's reservation of it only address space,
// and the pager's state only for the pages used (daemon/pager/mapping.h). A
// thin pool's 4 TiB address space holds 64 such heaps at once (a pipeline,
// forked children); a thick pool (a device, or a layout older than 5) needs
// --heap-size within its capacity.
constexpr uint64_t kDefaultHeapSize = uint64_t{64} << 30;

// Parses the words after "run" (flags, then "--", then the program).
Result<RunOptions> parse_run_options(const std::vector<std::string> &args);
// Runs the program; returns its exit code (128 + signal if it was killed),
// or a memfed exit code with a message on stderr if it could not start.
int run_command(const RunOptions &opt, const Globals &g);
// memfedctl's "run" command: parse_run_options + run_command.
int cmd_run(const Globals &g, Args &a);

} // namespace memfed::ctl
