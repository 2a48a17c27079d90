#include "tools/memfedctl/plot.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "daemon/common/json_count.h"
#include "daemon/wire/protocol.h"

extern char **environ;

namespace memfed::ctl
{

using nlohmann::json;

namespace
{

constexpr size_t kMaxLatencyLines = 10; // regions drawn in the latency panel
constexpr double kPageBytes = wire::kPageSize;

// A gnuplot double-quoted string: backslash and quote escaped.
std::string quoted(const std::string &s)
{
	std::string out = "\"";
	for (char c : s) {
		if (c == '"' || c == '\\')
			out += '\\';
		if (c != '\n' && c != '\r')
			out += c;
	}
	return out + "\"";
}

void latency_panel(std::ostringstream &g, std::vector<const json *> regions)
{
	// The busiest regions first; a few lines stay readable, dozens do not.
	auto fetched = [](const json *r) {
		uint64_t n = 0;
		if (r->contains("fetch_us_log2"))
			for (const auto &c : (*r)["fetch_us_log2"])
				n += json_count(c);
		return n;
	};
	std::stable_sort(regions.begin(), regions.end(),
	                 [&](const json *a, const json *b) { return fetched(a) > fetched(b); });
	size_t with_data = size_t(std::count_if(regions.begin(), regions.end(),
	                                        [&](const json *r) { return fetched(r) > 0; }));
	size_t shown = std::min(with_data, kMaxLatencyLines);

	g << "set title \"Demand-fault latency per region: a fault's arrival to its page fetched"
	  << (with_data > shown ? " (the " + std::to_string(shown) + " busiest of " +
	                                  std::to_string(with_data) + " regions)"
	                        : std::string())
	  << "\"\n";
	g << "set xlabel \"latency (upper bound of the pager's log2 bucket)\"\n"
	     "set ylabel \"demand faults per bucket\"\n"
	     "set logscale x 10\n"
	     "set xtics (\"1 µs\" 1, \"10 µs\" 10, \"100 µs\" 100, \"1 ms\" 1000, \"10 ms\" 1e4, "
	     "\"100 ms\" 1e5, \"1 s\" 1e6, \"10 s\" 1e7)\n"
	     "set mxtics 10\n"
	     "set grid xtics ytics\n"
	     "set key top right box opaque\n"
	     "set yrange [0:*]\n";
	size_t max_bucket = 0;
	std::string plot;
	for (size_t k = 0; k < shown; k++) {
		const json &h = (*regions[k])["fetch_us_log2"];
		max_bucket = std::max(max_bucket, h.size());
		g << "$lat" << k << " << EOD\n";
		for (size_t i = 0; i < h.size(); i++)
			g << (uint64_t{2} << i) << " " << json_count(h[i]) << "\n";
		g << "EOD\n";
		plot += std::string(plot.empty() ? "plot " : ", ") + "$lat" + std::to_string(k) +
		        " using 1:2 with linespoints lw 2 pt 7 ps 1.2 title " +
		        quoted(json_string(*regions[k], "region"));
	}
	// From 1 us to a decade past the slowest bucket drawn.
	double xmax = 10;
	while (xmax <= double(uint64_t{2} << (max_bucket ? max_bucket - 1 : 0)))
		xmax *= 10;
	g << "set xrange [1:" << xmax << "]\n";
	if (plot.empty()) {
		g << "set label 1 \"no demand faults served yet\" at graph 0.5, graph 0.5 center\n"
		     "set yrange [0:1]\n"
		     "plot 1/0 notitle\n"
		     "unset label 1\n";
	} else {
		g << plot << "\n";
	}
	g << "unset logscale x\nunset mxtics\nset xtics autofreq\nset xrange [*:*]\nset yrange "
	     "[*:*]\n";
}

void memory_panel(std::ostringstream &g, const std::vector<const json *> &regions)
{
	uint64_t max_pages = 0;
	for (const json *r : regions)
		max_pages = std::max({max_pages, json_count(*r, "resident_pages"),
		                      json_count(*r, "dirty_pages")});
	// All zero (every mapping gone): a fixed range instead of gnuplot's warning.
	const char *yrange = max_pages == 0 ? "[0:1]" : "[0:*]";
	double max_bytes = double(max_pages) * kPageBytes;
	const char *unit = "KiB";
	double div = 1024;
	if (max_bytes >= 4.0 * (1 << 30)) {
		unit = "GiB";
		div = double(1 << 30);
	} else if (max_bytes >= 1 << 20) {
		unit = "MiB";
		div = 1 << 20;
	}
	g << "set title \"Resident and dirty memory per region (dirty: not yet written back)\"\n"
	     "set xlabel \"region\"\n"
	     "set ylabel \""
	  << unit
	  << "\"\n"
	     "set grid noxtics ytics\n"
	     "set style data histograms\n"
	     "set style histogram clustered gap 1\n"
	     "set style fill solid 0.85 border -1\n"
	     "set boxwidth 0.9\n"
	     "set yrange "
	  << yrange
	  << "\n"
	     "set xtics rotate by -30\n"
	     "set key top right box opaque\n"
	     "$mem << EOD\n";
	for (const json *r : regions)
		g << quoted(json_string(*r, "region")) << " "
		  << double(json_count(*r, "resident_pages")) * kPageBytes / div << " "
		  << double(json_count(*r, "dirty_pages")) * kPageBytes / div << "\n";
	g << "EOD\n"
	     "plot $mem using 2:xtic(1) title \"resident\" lc rgb \"#4477aa\", "
	     "'' using 3 title \"dirty\" lc rgb \"#ee6677\"\n";
}

} // namespace

Result<std::string> stats_plot_script(const json &stats, const std::string &png)
{
	if (png.empty() || png.find_first_of("'\n\r") != std::string::npos)
		return Status(
		        Code::kInvalidArgument,
		        "--plot needs a file name without quotes or newlines, e.g. stats.png");
	if (!stats.contains("pager") || !stats["pager"].is_object())
		return Status(
		        Code::kNotFound,
		        "nothing to plot: this daemon has no pager role (memfedd --roles pager)");
	std::vector<const json *> regions;
	const json &pager = stats["pager"];
	if (pager.contains("regions") && pager["regions"].is_array())
		for (const auto &r : pager["regions"])
			regions.push_back(&r);
	if (regions.empty())
		return Status(
		        Code::kNotFound,
		        "nothing to plot: the pager has mapped no region yet (memfedctl run, or "
		        "memfed_map from libmemfed)");
	std::sort(regions.begin(), regions.end(), [](const json *a, const json *b) {
		return json_string(*a, "region") < json_string(*b, "region");
	});

	std::string module = stats.contains("module") ? json_string(stats["module"], "module") : "";
	std::ostringstream g;
	g << "set encoding utf8\n"
	     "set terminal pngcairo size 1100,1000 font \",11\" noenhanced\n"
	     "set output '"
	  << png << "'\n";
	g << "set multiplot layout 2,1 title "
	  << quoted("memfed pager" + (module.empty() ? std::string() : " on module " + module) +
	            ": " + std::to_string(regions.size()) + " region" +
	            (regions.size() == 1 ? "" : "s"))
	  << " font \",13\"\n";
	latency_panel(g, regions);
	memory_panel(g, regions);
	g << "unset multiplot\nset output\n";
	return g.str();
}

Status run_gnuplot(const std::string &script, const std::string &png)
{
	if (unlink(png.c_str()) != 0 && errno != ENOENT)
		return Status(Code::kIo, "cannot replace " + png + ": " + std::strerror(errno));
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0)
		return Status(Code::kIo, std::string("pipe: ") + std::strerror(errno));
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, p[0], STDIN_FILENO);
	char arg0[] = "gnuplot";
	char *argv[] = {arg0, nullptr};
	pid_t pid = 0;
	int err = posix_spawnp(&pid, "gnuplot", &fa, nullptr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(p[0]);
	if (err != 0) {
		close(p[1]);
		if (err == ENOENT)
			return Status(Code::kUnavailable, "gnuplot is not installed: apt-get "
			                                  "install gnuplot-nox (or make deps)");
		return Status(Code::kIo, std::string("cannot run gnuplot: ") + std::strerror(err));
	}
	// gnuplot may stop reading on an error; its message on stderr says why.
	auto old = std::signal(SIGPIPE, SIG_IGN);
	const char *d = script.data();
	size_t left = script.size();
	while (left > 0) {
		ssize_t n = write(p[1], d, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		d += n;
		left -= size_t(n);
	}
	close(p[1]);
	std::signal(SIGPIPE, old);
	int ws = 0;
	while (waitpid(pid, &ws, 0) < 0 && errno == EINTR) {
	}
	if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0)
		return Status(Code::kInternal,
		              "gnuplot failed drawing " + png + " (its message is above)");
	unsigned char magic[8] = {};
	int fd = open(png.c_str(), O_RDONLY | O_CLOEXEC);
	ssize_t got = fd >= 0 ? read(fd, magic, sizeof(magic)) : -1;
	if (fd >= 0)
		close(fd);
	static const unsigned char kPng[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
	if (got != 8 || std::memcmp(magic, kPng, 8) != 0)
		return Status(Code::kIo, "gnuplot ran but " + png + " is not a PNG");
	return Status::ok();
}

} // namespace memfed::ctl
