// `memfedctl stats --plot FILE.png`: the pager's counters as a picture.
//
// Two panels: the demand-fault latency histogram of every region (the
// pager's log2 buckets, one line per region), and each region's resident and
// dirty memory. Drawn by gnuplot (Debian's gnuplot-nox, pngcairo terminal),
// which reads the script and data on a pipe: no temporary files, no shell.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "daemon/common/status.h"

namespace memfed::ctl
{

// The gnuplot script for `stats` (the "stats" op's body) writing `png`.
// kNotFound when there is no pager or no region to draw; kInvalidArgument
// for an output path gnuplot cannot be given safely.
Result<std::string> stats_plot_script(const nlohmann::json &stats, const std::string &png);

// Runs `script` through gnuplot and checks that `png` came out a PNG.
// kUnavailable naming the package when gnuplot is not installed.
Status run_gnuplot(const std::string &script, const std::string &png);

} // namespace memfed::ctl
