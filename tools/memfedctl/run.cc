#include "tools/memfedctl/run.h"

#include <signal.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <optional>
#include <thread>

#include "daemon/common/size.h"
#include "libclient/run_config.h"

namespace memfed::ctl
{

namespace
{

constexpr const char *kRunUsage =
        R"(usage: memfedctl run [--map NAME=PATH ...] [--heap-budget SIZE] [--heap-size SIZE]
                     [--prefix DIR] [--preload LIB] [--keep-heaps] [--stats FILE]
                     [--hard | --soft GRACE] -- PROG [ARGS...]

Runs PROG, unmodified, on federated memory:
  --heap-budget SIZE  put every process's heap (malloc, anonymous mmap) in a
                      region of its own, with at most SIZE resident
  --heap-size SIZE    size of each heap region (default 64G)
  --map NAME=PATH     region NAME appears as the file PATH
  --prefix DIR        every region NAME appears as DIR/NAME (default /memfed;
                      "" turns it off)
  --preload LIB       the shim to preload (default: libmemfed-preload.so next
                      to memfedctl's lib dir)
  --keep-heaps        leave the heap regions after the program exits
  --stats FILE        when the program exits, write the pager's counters for
                      its heaps to FILE as JSON: each heap's and their sum
  --hard              if memfedd dies, the program waits for it to come back,
                      however long, as on an NFS hard mount; libmemfed logs
                      every 10 s while it waits (the default)
  --soft GRACE        if memfedd dies and is not back within GRACE (like 30s,
                      500ms, 2m; a bare number is seconds), every access to
                      the program's remote memory raises SIGBUS
The exit code is PROG's (128 + N if signal N killed it).
)";

pid_t g_child = -1;

void forward_signal(int sig)
{
	if (g_child > 0)
		kill(g_child, sig);
}

Result<std::string> find_preload(const RunOptions &opt)
{
	if (!opt.preload.empty()) {
		if (access(opt.preload.c_str(), R_OK) != 0)
			return Status(Code::kNotFound,
			              "--preload " + opt.preload + ": not readable");
		return opt.preload;
	}
	std::vector<std::string> candidates;
	char exe[4096];
	ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	if (n > 0) {
		exe[n] = 0;
		std::string dir(exe);
		dir = dir.substr(0, dir.rfind('/'));
		candidates.push_back(dir + "/../lib/libmemfed-preload.so");
		candidates.push_back(dir + "/../" MEMFED_INSTALL_LIBDIR "/libmemfed-preload.so");
	}
	candidates.push_back(MEMFED_INSTALL_FULL_LIBDIR "/libmemfed-preload.so");
	for (const auto &c : candidates)
		if (access(c.c_str(), R_OK) == 0)
			return c;
	return Status(Code::kNotFound, "libmemfed-preload.so not found (looked in " +
	                                       candidates.front() +
	                                       " and the install libdir; give --preload LIB)");
}

// "30s", "500ms", "2m", "30" (seconds) -> milliseconds.
std::optional<uint64_t> parse_duration_ms(const std::string &text)
{
	size_t digits = 0;
	while (digits < text.size() && isdigit((unsigned char)text[digits]))
		digits++;
	if (digits == 0 || digits > 9)
		return std::nullopt;
	uint64_t n = std::stoull(text.substr(0, digits));
	std::string unit = text.substr(digits);
	if (unit == "ms")
		return n;
	if (unit.empty() || unit == "s")
		return n * 1000;
	if (unit == "m")
		return n * 60 * 1000;
	return std::nullopt;
}

std::string random_run_id()
{
	uint32_t r = 0;
	if (getrandom(&r, sizeof(r), 0) != sizeof(r))
		r = uint32_t(getpid()) * 2654435761u;
	char buf[16];
	snprintf(buf, sizeof(buf), "%08x", r);
	return buf;
}

// Deletes the run's heap regions. A process that just exited may still be
// detaching (the pager writing its pages back): its region is busy until
// then, so busy regions are retried for a while, and never forced.
// Writes to `path` the pager's counters for the heap regions named
// `prefix`*, as {"heaps": [each region's counters], "total": {their sums}}.
// The pager keeps a region's counters after its processes exit, until the
// region is deleted. A failure is reported and does not change the exit
// code: that is the program's.
void write_heap_stats(const Globals &g, const std::string &prefix, const std::string &path)
{
	auto fail_stats = [&](const std::string &why) {
		std::cerr << "memfedctl: --stats " << path << ": " << why << "\n";
	};
	auto c = connect(g);
	if (!c)
		return fail_stats(c.status().message());
	auto st = stats_all(*c);
	if (!st)
		return fail_stats(st.status().message());
	nlohmann::json heaps = nlohmann::json::array(), total = nlohmann::json::object();
	const nlohmann::json &regions = (*st)["pager"]["regions"];
	for (const auto &r : regions.is_array() ? regions : nlohmann::json::array()) {
		if (r.value("region", "").rfind(prefix, 0) != 0)
			continue;
		heaps.push_back(r);
		for (const auto &[k, v] : r.items())
			if (v.is_number_unsigned())
				total[k] = total.value(k, uint64_t{0}) + v.get<uint64_t>();
	}
	std::ofstream out(path);
	out << nlohmann::json{{"heaps", heaps}, {"total", total}}.dump(2) << "\n";
	out.close();
	if (!out)
		fail_stats(std::strerror(errno));
}

void delete_heaps(const Globals &g, const std::string &prefix)
{
	constexpr int kAttempts = 200; // 10 s
	auto c = connect(g);
	if (!c) {
		std::cerr << "memfedctl: leaving heap regions " << prefix
		          << "*: " << c.status().message() << "\n";
		return;
	}
	for (int attempt = 0; attempt < kAttempts; attempt++) {
		std::vector<std::string> names;
		Status st = control::for_each_region(*c, prefix, [&](const nlohmann::json &r) {
			names.push_back(r.value("name", ""));
		});
		if (!st)
			return;
		Status busy;
		for (const std::string &name : names) {
			if (name.rfind(prefix, 0) != 0)
				continue;
			auto d = call(*c, "region.delete", {{"name", name}});
			if (!d && d.status().code() == Code::kBusy)
				busy = d.status();
		}
		if (busy.is_ok())
			return;
		if (attempt == kAttempts - 1)
			std::cerr << "memfedctl: leaving heap regions " << prefix
			          << "*: " << busy.message() << "\n";
		std::this_thread::sleep_for(std::chrono::milliseconds(50));
	}
}

} // namespace

Result<RunOptions> parse_run_options(const std::vector<std::string> &args)
{
	RunOptions o;
	size_t i = 0;
	auto value = [&](const std::string &flag, std::string *out) -> Status {
		const std::string &a = args[i];
		if (a == flag) {
			if (i + 1 >= args.size())
				return usage_error(flag + " needs a value");
			*out = args[++i];
			return Status::ok();
		}
		*out = a.substr(flag.size() + 1);
		return Status::ok();
	};
	auto is = [&](const std::string &flag) {
		return args[i] == flag || args[i].rfind(flag + "=", 0) == 0;
	};
	for (; i < args.size(); i++) {
		const std::string &a = args[i];
		std::string v;
		if (a == "--") {
			i++;
			break;
		}
		if (is("--map")) {
			MF_RETURN_IF_ERROR(value("--map", &v));
			size_t eq = v.find('=');
			if (eq == std::string::npos || eq == 0 || eq + 1 >= v.size() ||
			    v[eq + 1] != '/')
				return usage_error("--map " + v + ": expected NAME=/absolute/path");
			std::string name = v.substr(0, eq);
			if (!valid_region_name(name))
				return usage_error(
				        "--map " + v + ": '" + name +
				        "' is not a region name ([A-Za-z0-9._-], 1..63)");
			o.maps.emplace_back(name, v.substr(eq + 1));
		} else if (is("--heap-budget") || is("--heap-size")) {
			bool budget = is("--heap-budget");
			std::string flag = budget ? "--heap-budget" : "--heap-size";
			MF_RETURN_IF_ERROR(value(flag, &v));
			auto n = parse_size(v);
			if (!n || *n < 4096)
				return usage_error(flag + " " + v +
				                   ": expected a size of at least 4K, like 64M");
			(budget ? o.heap_budget : o.heap_size) = (*n + 4095) & ~uint64_t{4095};
		} else if (is("--prefix")) {
			MF_RETURN_IF_ERROR(value("--prefix", &v));
			if (!v.empty() && v[0] != '/')
				return usage_error("--prefix " + v +
				                   ": expected an absolute directory");
			o.prefix = v;
		} else if (is("--preload")) {
			MF_RETURN_IF_ERROR(value("--preload", &v));
			o.preload = v;
		} else if (a == "--keep-heaps") {
			o.keep_heaps = true;
		} else if (is("--stats")) {
			MF_RETURN_IF_ERROR(value("--stats", &v));
			if (v.empty())
				return usage_error("--stats needs a file to write");
			o.stats_path = v;
		} else if (a == "--hard") {
			o.soft_grace_ms = 0;
		} else if (is("--soft")) {
			MF_RETURN_IF_ERROR(value("--soft", &v));
			auto ms = parse_duration_ms(v);
			if (!ms || *ms == 0)
				return usage_error(
				        "--soft " + v +
				        ": expected a grace like 30s, 500ms or 2m (above 0)");
			o.soft_grace_ms = *ms;
		} else if (a == "--help" || a == "-h") {
			return Status(Code::kOk, kRunUsage);
		} else if (!a.empty() && a[0] == '-') {
			return usage_error("run: unknown option " + a + " (memfedctl run --help)");
		} else {
			break; // the program, without "--"
		}
	}
	o.argv.assign(args.begin() + long(i), args.end());
	if (o.argv.empty())
		return usage_error("run: no program given (memfedctl run [options] -- PROG ARGS)");
	if (o.heap_size && !o.heap_budget)
		return usage_error("--heap-size needs --heap-budget");
	if (!o.stats_path.empty() && !o.heap_budget)
		return usage_error(
		        "--stats needs --heap-budget (it reports the paging of the heaps)");
	if (o.heap_budget && !o.heap_size)
		o.heap_size = std::max(kDefaultHeapSize, o.heap_budget);
	if (o.heap_budget > o.heap_size)
		return usage_error("--heap-budget is larger than --heap-size");
	return o;
}

int run_command(const RunOptions &opt, const Globals &g)
{
	auto preload = find_preload(opt);
	if (!preload)
		return fail(g, preload.status());
	auto c = connect(g);
	if (!c)
		return fail(g, c.status());
	if (opt.heap_budget) {
		auto hello = call(*c, "pager.hello");
		if (!hello)
			return fail(g, Status(hello.status().code(),
			                      "memfedd at " + g.socket + " does not page memory (" +
			                              hello.status().message() +
			                              "); start it with the pager role"));
	}
	client::RunConfig cfg;
	cfg.socket = g.socket;
	cfg.run_id = random_run_id();
	cfg.heap_size = opt.heap_budget ? opt.heap_size : 0;
	cfg.heap_budget = opt.heap_budget;
	cfg.prefix = opt.prefix;
	cfg.soft_grace_ms = opt.soft_grace_ms;
	for (const auto &[name, path] : opt.maps) {
		auto r = call(*c, "region.show", {{"name", name}});
		if (!r)
			return fail(g, r.status());
		cfg.maps[client::normalize_path(path)] = name;
	}
	*c = control::Client(); // the program's processes make their own

	std::string ld = *preload;
	if (const char *old = getenv("LD_PRELOAD"); old && *old)
		ld += std::string(":") + old;
	std::string cfg_json = cfg.to_json();

	pid_t pid = fork();
	if (pid < 0)
		return fail(g, Status::from_errno(errno, "fork"));
	if (pid == 0) {
		setenv("LD_PRELOAD", ld.c_str(), 1);
		setenv(client::kRunEnv, cfg_json.c_str(), 1);
		setenv("MEMFED_SOCKET", g.socket.c_str(), 1);
		std::vector<char *> argv;
		for (const auto &a : opt.argv)
			argv.push_back(const_cast<char *>(a.c_str()));
		argv.push_back(nullptr);
		execvp(argv[0], argv.data());
		fprintf(stderr, "memfedctl: cannot run %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	g_child = pid;
	struct sigaction sa {
	};
	sa.sa_handler = forward_signal;
	sigaction(SIGINT, &sa, nullptr);
	sigaction(SIGTERM, &sa, nullptr);
	sigaction(SIGHUP, &sa, nullptr);
	int status = 0;
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
	}
	g_child = -1;
	if (cfg.heap_size && !opt.stats_path.empty())
		write_heap_stats(g, cfg.heap_prefix(), opt.stats_path);
	if (cfg.heap_size && !opt.keep_heaps)
		delete_heaps(g, cfg.heap_prefix());
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

int cmd_run(const Globals &g, Args &a)
{
	auto o = parse_run_options(a.rest());
	if (!o) {
		if (o.status().code() == Code::kOk) {
			std::cout << o.status().message();
			return 0;
		}
		return fail(g, o.status());
	}
	return run_command(*o, g);
}

} // namespace memfed::ctl
