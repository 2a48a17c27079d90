// memfed-bench-pager: demand paging through memfedd's pager against the raw
// limits of the same mechanisms measured in the same run.
//
// memfed: a module memfedd holds region "bench"; a second memfedd (roles
//   pager) federates with it over loopback and serves this process, which
//   maps the region with kind "private" through the map protocol (the test
//   client in daemon/pager/test_client.h) with budgets of 100 %, 50 % and
//   10 % of the region, prefetch on and off, and measures
//     - random: single-thread random 4 KiB reads; the latency of each access
//       that faults (pages already resident are skipped), p50/p99;
//     - scan: one 8-byte read per page from start to end, GB/s of pages.
// limit (a): no memfed code — a raw userfaultfd handler thread that resolves
//   each miss with one 4 KiB fetch over an io_uring TCP connection (loopback)
//   from a raw page-server process, then UFFDIO_COPY. Same random reads.
// limit (b): the same, fetching the missing page and the 127 after it in one
//   pipelined request per miss, each copied as it arrives. Same scan.
// Every thread and both daemons run on one CPU (--cpu, default 0): a fault
// whose work crosses vCPUs pays 20-25 us per wake-up (shared/notes/limits.md).
//
// Usage: memfed-bench-pager --memfedd PATH --memfedctl PATH --work DIR
//          [--region-mb 64] [--faults 3000] [--cpu 0] [--repeat 3] [--prefetch N]
//          [--budget PCT ...]   (rows to measure; default 100, 50 and 10)
//          [--scan-only]        (only scans with prefetch, and limit (b): to profile)
//          [--cpu any]          (no pinning at all: the scheduler places every
//                               thread, as it does a peer's)
//          [--module-cpu N]     (the module daemon and raw server on cpu N, as
//                               on another node; default: --cpu)
//          [--budget-mb N]      (one row, at a budget of N MiB, instead of --budget)
//          [--peer-scan CMD --peer-name NAME]
//                               (a peer's scan of the same pattern, run as CMD
//                               after each memfed scan; CMD prints "GBPS <x>")
//          [--no-keys]          (daemons from before node keys, which speak
//                               plaintext: no keys, no trust, no grant)
//          [--profile N [--phase-begin CMD] [--phase-end CMD]]
//                               (no rows: three phases of N faults each, for a
//                               profiler attached to the pager daemon: random
//                               reads with no budget, random reads and random
//                               writes at a budget of a tenth of the region;
//                               CMD runs before/after each phase's faults with
//                               %p the pager's pid and %n the phase's name,
//                               e.g. 'callgrind_control -z %p'; each phase
//                               prints the pager's counters it moved and its
//                               start and end as CLOCK_REALTIME seconds)
//          [--evict-by drop|move|move-async]
//                               (how the bench's client lets the pager evict:
//                               the drop path (default), or UFFDIO_MOVE into
//                               a staging area, as libmemfed does on a kernel
//                               with MOVE; daemon/pager/move_eviction.cc)
//          [--local-row]        (with --scan-only: also a third memfedd with
//                               roles module,pager holding its own copy of the
//                               region, so its pager reaches the pool through
//                               the local module channel: no TCP, no TLS. Its
//                               scan runs right after each loopback scan, in
//                               a row "local" of its own.)
#include <arpa/inet.h>
#include <fcntl.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "daemon/common/proc_stat.h"
#include "daemon/pager/test_client.h"
#include "daemon/pager/uffd.h"
#include "tools/bench/pager/cpu_pin.h"

using namespace memfed;
using namespace memfed::pager;
using Clock = std::chrono::steady_clock;

namespace
{

constexpr uint64_t kPage = 4096;

struct Options {
	std::string memfedd, memfedctl, work;
	uint64_t region_mb = 64;
	int faults = 3000;
	int cpu = 0;
	int module_cpu = -1; // --module-cpu: the module daemon (and raw server) there; -1: cpu
	int repeat = 3;
	int prefetch = 0;         // pager's prefetch window (--pager-prefetch); 0: its default
	std::vector<int> budgets; // --budget PCT, repeatable; default 100, 50, 10
	bool scan_only = false;   // --scan-only: scans with prefetch and limit (b), for profiling
	uint64_t budget_mb = 0;   // --budget-mb: one row at this budget instead of percentages
	std::string peer_scan, peer_name = "peer"; // --peer-scan CMD, --peer-name NAME
	int profile = 0;                           // --profile N: phases of N faults, no rows
	std::string phase_begin, phase_end;        // --phase-begin/--phase-end CMD
	bool no_keys = false; // --no-keys: daemons from before node keys (plaintext)
	bool local_row = false; // --local-row: also scan through a module,pager memfedd
	bool evict_by_move = false; // --evict-by move (or move-async)
	bool wp_async = false;      // --evict-by move-async: a uffd under WP_ASYNC
};

// Word 0 of page p: what the region holds there.
uint64_t word_of(uint64_t p)
{
	return p * 0x9E3779B97F4A7C15ull + 1;
}

void fill_pattern(uint8_t *buf, uint64_t first_page, uint64_t pages)
{
	for (uint64_t p = 0; p < pages; p++) {
		auto *w = reinterpret_cast<uint64_t *>(buf + p * kPage);
		for (uint64_t i = 0; i < kPage / 8; i++)
			w[i] = word_of(first_page + p) + i;
	}
}

using memfed::bench::pin;

double now_s()
{
	return std::chrono::duration<double>(Clock::now().time_since_epoch()).count();
}

[[noreturn]] void die(const std::string &msg)
{
	std::fprintf(stderr, "memfed-bench-pager: %s\n", msg.c_str());
	std::exit(1);
}

// ---------------------------------------------------------------------------
// Daemons

std::vector<pid_t> g_children;

void kill_children()
{
	for (pid_t p : g_children)
		kill(p, SIGTERM);
	for (pid_t p : g_children)
		waitpid(p, nullptr, 0);
	g_children.clear();
}

pid_t spawn(const std::vector<std::string> &argv, int cpu, const std::string &log)
{
	pid_t pid = fork();
	if (pid < 0)
		die("fork failed");
	if (pid == 0) {
		pin(cpu);
		int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
		if (fd >= 0) {
			dup2(fd, 1);
			dup2(fd, 2);
		}
		std::vector<char *> a;
		for (auto &s : argv)
			a.push_back(const_cast<char *>(s.c_str()));
		a.push_back(nullptr);
		execv(a[0], a.data());
		_exit(127);
	}
	g_children.push_back(pid);
	return pid;
}

std::string run(const std::string &cmd)
{
	std::string out;
	FILE *f = popen(cmd.c_str(), "r");
	if (f == nullptr)
		die("cannot run " + cmd);
	char buf[4096];
	size_t n;
	while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
		out.append(buf, n);
	if (pclose(f) != 0)
		die("failed: " + cmd + "\n" + out);
	return out;
}

void wait_daemon(const Options &o, const std::string &sock, const std::string &log)
{
	for (int i = 0; i < 200; i++) {
		std::string cmd = o.memfedctl + " --socket " + sock + " status >/dev/null 2>&1";
		if (system(cmd.c_str()) == 0)
			return;
		usleep(50 * 1000);
	}
	die("memfedd did not start; see " + log);
}

// ---------------------------------------------------------------------------
// Raw limits: a page server process and a userfaultfd handler, no memfed code

struct RawRequest {
	uint64_t page;
	uint32_t count;
	uint32_t pad;
};

// Serves pages of the pattern over TCP until the connection closes.
void raw_server(int listen_fd, uint64_t pages)
{
	std::vector<uint8_t> mem(pages * kPage);
	fill_pattern(mem.data(), 0, pages);
	while (true) {
		int c = accept(listen_fd, nullptr, nullptr);
		if (c < 0)
			_exit(0);
		int one = 1;
		setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		RawRequest r;
		while (recv(c, &r, sizeof(r), MSG_WAITALL) == sizeof(r)) {
			if (r.page >= pages || r.count == 0 || r.count > pages - r.page)
				break;
			size_t len = size_t(r.count) * kPage, off = 0;
			while (off < len) {
				ssize_t n =
				        send(c, mem.data() + r.page * kPage + off, len - off, 0);
				if (n <= 0)
					break;
				off += size_t(n);
			}
		}
		close(c);
	}
}

struct RawHandler {
	int uffd = -1, sock = -1, stop_fd = -1;
	uint8_t *base = nullptr;
	uint64_t pages = 0;
	uint32_t batch = 1; // pages fetched per miss
	std::vector<uint8_t> installed;
	io_uring ring{};
	std::vector<uint8_t> buf;

	// One request for `batch` pages; they are received in chunks of 32 and
	// each chunk is copied in as it arrives, behind the first.
	void serve_miss(uint64_t p)
	{
		if (installed[p]) {
			(void)uffd_wake(uffd, uint64_t(base + p * kPage), kPage);
			return;
		}
		uint32_t n = uint32_t(std::min<uint64_t>(batch, pages - p));
		RawRequest req{p, n, 0};
		io_uring_sqe *s = io_uring_get_sqe(&ring);
		io_uring_prep_send(s, sock, &req, sizeof(req), 0);
		io_uring_sqe_set_data64(s, 1);
		s->flags |= IOSQE_IO_LINK;
		uint32_t first = std::min<uint32_t>(n, 1); // the faulting page alone first
		for (uint32_t done = 0; done < n;) {
			uint32_t c = done == 0 ? first : std::min<uint32_t>(32, n - done);
			s = io_uring_get_sqe(&ring);
			io_uring_prep_recv(s, sock, buf.data(), size_t(c) * kPage, MSG_WAITALL);
			io_uring_sqe_set_data64(s, 2);
			io_uring_submit(&ring);
			io_uring_cqe *cqe;
			bool got = false;
			while (!got && io_uring_wait_cqe(&ring, &cqe) == 0) {
				if (io_uring_cqe_get_data64(cqe) == 2) {
					if (cqe->res != int(c * kPage))
						die("raw fetch: short receive");
					got = true;
				}
				io_uring_cqe_seen(&ring, cqe);
			}
			int64_t copied = 0;
			int r = uffd_copy(uffd, uint64_t(base + (p + done) * kPage), buf.data(),
			                  uint64_t(c) * kPage, false, &copied);
			if (r == -EEXIST) // some were there: copy the rest one by one
				for (uint32_t k = 0; k < c; k++)
					if (uffd_copy(uffd, uint64_t(base + (p + done + k) * kPage),
					              buf.data() + size_t(k) * kPage, kPage, false,
					              nullptr) == -EEXIST)
						(void)uffd_wake(
						        uffd,
						        uint64_t(base + (p + done + k) * kPage),
						        kPage);
			for (uint32_t k = 0; k < c; k++)
				installed[p + done + k] = 1;
			done += c;
		}
	}

	void loop(int cpu)
	{
		pin(cpu);
		uffd_msg msgs[16];
		while (true) {
			pollfd pf[2] = {{uffd, POLLIN, 0}, {stop_fd, POLLIN, 0}};
			if (poll(pf, 2, -1) < 0)
				continue;
			if (pf[1].revents)
				return;
			ssize_t n = read(uffd, msgs, sizeof(msgs));
			for (ssize_t i = 0; i < n / ssize_t(sizeof(uffd_msg)); i++) {
				if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
					continue;
				uint64_t a = msgs[i].arg.pagefault.address & ~(kPage - 1);
				serve_miss((a - uint64_t(base)) / kPage);
			}
		}
	}
};

struct RawSetup {
	uint16_t port = 0;
};

// A raw handler for `pages` pages fetching `batch` pages per miss, connected
// to the raw server at `port`; runs `body(base)` on this thread (the
// faulting thread), then tears everything down.
template <typename Body>
void with_raw(uint16_t port, uint64_t pages, uint32_t batch, int cpu, Body body)
{
	RawHandler h;
	auto fd = open_uffd(0, false);
	if (!fd)
		die(fd.status().to_string());
	h.uffd = *fd;
	h.pages = pages;
	h.batch = batch;
	h.installed.assign(pages, 0);
	h.buf.resize(32 * kPage);
	void *p = mmap(nullptr, pages * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
	               -1, 0);
	h.base = static_cast<uint8_t *>(p);
	madvise(p, pages * kPage, MADV_NOHUGEPAGE);
	if (uffd_register(h.uffd, uint64_t(p), pages * kPage, UFFDIO_REGISTER_MODE_MISSING) < 0)
		die("UFFDIO_REGISTER failed");
	h.sock = socket(AF_INET, SOCK_STREAM, 0);
	sockaddr_in sa{};
	sa.sin_family = AF_INET;
	sa.sin_port = htons(port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(h.sock, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) < 0)
		die("connecting to the raw page server failed");
	int one = 1;
	setsockopt(h.sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	io_uring_queue_init(8, &h.ring, 0);
	h.stop_fd = eventfd(0, EFD_CLOEXEC);
	std::thread t([&h, cpu] { h.loop(cpu); });
	body(h.base);
	uint64_t v = 1;
	(void)!write(h.stop_fd, &v, sizeof(v));
	t.join();
	io_uring_queue_exit(&h.ring);
	close(h.sock);
	close(h.stop_fd);
	close(h.uffd);
	munmap(p, pages * kPage);
}

// ---------------------------------------------------------------------------
// The measurements, on any mapping of the pattern

struct Lat {
	double p50 = 0, p99 = 0;
	size_t n = 0;
};

Lat percentiles(std::vector<double> v)
{
	Lat l;
	l.n = v.size();
	if (v.empty())
		return l;
	std::sort(v.begin(), v.end());
	l.p50 = v[v.size() / 2];
	l.p99 = v[std::min(v.size() - 1, v.size() * 99 / 100)];
	return l;
}

bool resident(const uint8_t *page)
{
	unsigned char v = 0;
	mincore(const_cast<uint8_t *>(page), kPage, &v);
	return v & 1;
}

// Random reads of distinct pages; latency (us) of those that fault.
Lat random_faults(const uint8_t *base, uint64_t pages, int faults, uint32_t seed)
{
	std::vector<uint64_t> order(pages);
	for (uint64_t i = 0; i < pages; i++)
		order[i] = i;
	std::shuffle(order.begin(), order.end(), std::mt19937_64(seed));
	std::vector<double> lat;
	lat.reserve(size_t(faults));
	for (uint64_t i = 0; i < pages && lat.size() < size_t(faults); i++) {
		uint64_t p = order[i];
		const uint8_t *pg = base + p * kPage;
		if (resident(pg))
			continue;
		auto t0 = Clock::now();
		uint64_t w = *reinterpret_cast<const volatile uint64_t *>(pg);
		auto t1 = Clock::now();
		if (w != word_of(p))
			die("wrong data at page " + std::to_string(p));
		lat.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
	}
	return percentiles(lat);
}

// One read per page, first to last; GB/s of pages.
double scan(const uint8_t *base, uint64_t pages)
{
	double t0 = now_s();
	uint64_t bad = 0;
	for (uint64_t p = 0; p < pages; p++)
		bad += *reinterpret_cast<const volatile uint64_t *>(base + p * kPage) != word_of(p);
	double t = now_s() - t0;
	if (bad)
		die(std::to_string(bad) + " pages with wrong data in a scan");
	return double(pages * kPage) / t / 1e9;
}

// CPU seconds (user + system) that process `pid` has used, from /proc.
double cpu_s_of(pid_t pid)
{
	auto f = proc_stat_fields("/proc/" + std::to_string(pid) + "/stat");
	return double(proc_stat_number(f, 14) + proc_stat_number(f, 15)) /
	       double(sysconf(_SC_CLK_TCK));
}

// The schedstat file of the thread of process `pid` named `comm`, or "".
std::string thread_schedstat_of(pid_t pid, const std::string &comm)
{
	std::string dir = "/proc/" + std::to_string(pid) + "/task";
	std::error_code ec;
	for (const auto &e : std::filesystem::directory_iterator(dir, ec)) {
		std::ifstream f(e.path() / "comm");
		std::string name;
		if (std::getline(f, name) && name == comm)
			return (e.path() / "schedstat").string();
	}
	return "";
}

// A thread's seconds on a CPU and waiting for one (runnable, on a run
// queue), from its schedstat file; zeros if it cannot be read.
struct SchedTimes {
	double run_s = 0, wait_s = 0;
};
SchedTimes sched_times(const std::string &path)
{
	std::ifstream f(path);
	unsigned long long run = 0, wait = 0;
	if (!(f >> run >> wait))
		return {};
	return {double(run) / 1e9, double(wait) / 1e9};
}

// NaN for no values (a row not measured).
double median(std::vector<double> v)
{
	if (v.empty())
		return std::nan("");
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

// The pager's counters summed over its regions (--profile).
struct Counters {
	uint64_t faults = 0, wp_faults = 0, fetches = 0, evictions = 0, writebacks = 0;
};

Counters counters_of(TestClient &client)
{
	auto stats = client.call({{"op", kOpStats}});
	if (!stats)
		die("pager.stats: " + stats.status().to_string());
	Counters c;
	for (auto &r : stats->body["regions"]) {
		c.faults += r["faults"].get<uint64_t>();
		c.wp_faults += r["wp_faults"].get<uint64_t>();
		c.fetches += r["fetches"].get<uint64_t>();
		c.evictions += r["evictions"].get<uint64_t>();
		c.writebacks += r["writebacks"].get<uint64_t>();
	}
	return c;
}

// Counters once the pager has settled: evictions and write-backs a phase
// started finish after its last fault (slowly under a profiler).
Counters settled_counters(TestClient &client)
{
	Counters c = counters_of(client);
	for (int i = 0; i < 100; i++) {
		usleep(300 * 1000);
		Counters d = counters_of(client);
		if (d.evictions == c.evictions && d.writebacks == c.writebacks &&
		    d.fetches == c.fetches)
			return d;
		c = d;
	}
	return c;
}

double realtime_s()
{
	timespec ts{};
	clock_gettime(CLOCK_REALTIME, &ts);
	return double(ts.tv_sec) + double(ts.tv_nsec) / 1e9;
}

void phase_cmd(const std::string &tmpl, pid_t pager, const std::string &phase)
{
	if (tmpl.empty())
		return;
	std::string cmd;
	for (size_t i = 0; i < tmpl.size(); i++) {
		if (tmpl[i] == '%' && i + 1 < tmpl.size() && tmpl[i + 1] == 'p') {
			cmd += std::to_string(pager);
			i++;
		} else if (tmpl[i] == '%' && i + 1 < tmpl.size() && tmpl[i + 1] == 'n') {
			cmd += phase;
			i++;
		} else
			cmd += tmpl[i];
	}
	(void)run(cmd + " >/dev/null 2>&1");
}

// --profile N: "fault" (N random reads, no budget: faults alone),
// "evict-read" (N random reads at a tenth of the region: each fault past
// the budget evicts a clean page) and "evict-write" (N random writes of
// word 0 with the value it holds: a missing page is fetched, written,
// and the dirty victims are written back). The budget is filled before the
// phase's window opens, by a scan that reads (or, for "evict-write",
// writes) every page.
int profile_phases(const Options &o, TestClient &client, pid_t pager, uint64_t pages)
{
	std::printf("memfed pager profile: region %lu MiB (%lu pages), %d faults a phase\n",
	            (unsigned long)o.region_mb, (unsigned long)pages, o.profile);
	std::printf("%-12s %8s %8s %8s %9s %10s %8s %17s %17s\n", "phase", "faults", "wp",
	            "fetches", "evictions", "writebacks", "wall s", "start", "end");
	struct Phase {
		const char *name;
		int budget_pct;
		bool write;
	};
	for (Phase ph : {Phase{"fault", 100, false}, Phase{"evict-read", 10, false},
	                 Phase{"evict-write", 10, true}}) {
		uint64_t budget = ph.budget_pct == 100 ? 0 : pages * kPage * ph.budget_pct / 100;
		auto mp = client.map("bench", 0, pages * kPage, budget, false);
		if (!mp)
			die("map: " + mp.status().to_string());
		if (budget > 0 && !ph.write)
			(void)scan(mp->addr, pages);
		else if (budget > 0) // every page written: every victim is dirty
			for (uint64_t q = 0; q < pages; q++)
				*reinterpret_cast<volatile uint64_t *>(mp->addr + q * kPage) =
				        word_of(q);
		std::vector<uint64_t> order(pages);
		for (uint64_t i = 0; i < pages; i++)
			order[i] = i;
		std::shuffle(order.begin(), order.end(), std::mt19937_64(42));
		Counters c0 = settled_counters(client);
		phase_cmd(o.phase_begin, pager, ph.name);
		double t0 = realtime_s();
		int done = 0;
		for (uint64_t i = 0; done < o.profile; i = (i + 1) % pages) {
			uint8_t *pg = mp->addr + order[i] * kPage;
			if (resident(pg))
				continue;
			auto *w = reinterpret_cast<volatile uint64_t *>(pg);
			if (ph.write)
				*w = word_of(order[i]);
			else if (*w != word_of(order[i]))
				die("wrong data at page " + std::to_string(order[i]));
			done++;
		}
		Counters c1 = settled_counters(client);
		double t1 = realtime_s();
		phase_cmd(o.phase_end, pager, ph.name);
		std::printf("%-12s %8lu %8lu %8lu %9lu %10lu %8.2f %17.6f %17.6f\n", ph.name,
		            (unsigned long)(c1.faults - c0.faults),
		            (unsigned long)(c1.wp_faults - c0.wp_faults),
		            (unsigned long)(c1.fetches - c0.fetches),
		            (unsigned long)(c1.evictions - c0.evictions),
		            (unsigned long)(c1.writebacks - c0.writebacks), t1 - t0, t0, t1);
		if (!client.unmap(*mp))
			die("unmap failed");
	}
	return 0;
}

} // namespace

int main(int argc, char **argv)
{
	Options o;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		auto next = [&]() -> std::string {
			if (i + 1 >= argc)
				die(a + " needs a value");
			return argv[++i];
		};
		if (a == "--memfedd")
			o.memfedd = next();
		else if (a == "--memfedctl")
			o.memfedctl = next();
		else if (a == "--work")
			o.work = next();
		else if (a == "--region-mb")
			o.region_mb = std::stoull(next());
		else if (a == "--faults")
			o.faults = std::stoi(next());
		else if (a == "--cpu") {
			std::string v = next();
			o.cpu = v == "any" ? -1 : std::stoi(v);
		} else if (a == "--module-cpu")
			o.module_cpu = std::stoi(next());
		else if (a == "--repeat")
			o.repeat = std::max(1, std::stoi(next()));
		else if (a == "--prefetch")
			o.prefetch = std::stoi(next());
		else if (a == "--budget")
			o.budgets.push_back(std::clamp(std::stoi(next()), 1, 100));
		else if (a == "--scan-only")
			o.scan_only = true;
		else if (a == "--budget-mb")
			o.budget_mb = std::stoull(next());
		else if (a == "--peer-scan")
			o.peer_scan = next();
		else if (a == "--peer-name")
			o.peer_name = next();
		else if (a == "--profile")
			o.profile = std::max(1, std::stoi(next()));
		else if (a == "--phase-begin")
			o.phase_begin = next();
		else if (a == "--phase-end")
			o.phase_end = next();
		else if (a == "--no-keys")
			o.no_keys = true;
		else if (a == "--local-row")
			o.local_row = true;
		else if (a == "--evict-by") {
			std::string v = next();
			if (v != "drop" && v != "move" && v != "move-async")
				die("--evict-by takes drop, move or move-async, not " + v);
			o.evict_by_move = v != "drop";
			o.wp_async = v == "move-async";
		} else
			die("unknown option " + a +
			    " (see the comment at the top of pager_bench.cc)");
	}
	if (o.memfedd.empty() || o.memfedctl.empty() || o.work.empty())
		die("usage: memfed-bench-pager --memfedd PATH --memfedctl PATH --work DIR "
		    "[--region-mb 64] [--faults 3000] [--cpu 0] [--repeat 3] [--prefetch N] "
		    "[--budget PCT ...] [--scan-only] [--local-row]");
	if (o.local_row && !o.scan_only)
		die("--local-row needs --scan-only (the local row is a scan)");
	if (o.module_cpu < 0)
		o.module_cpu = o.cpu;
	if (o.budget_mb > 0)
		o.budgets = {0}; // one row, at budget_mb
	else if (o.budgets.empty())
		o.budgets = {100, 50, 10};
	const uint64_t pages = o.region_mb * 1024 * 1024 / kPage;
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, nullptr, _IOLBF, 0);

	// The raw page server first, before this process has threads.
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	sockaddr_in sa{};
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t sl = sizeof(sa);
	if (bind(lfd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) < 0 || listen(lfd, 4) < 0 ||
	    getsockname(lfd, reinterpret_cast<sockaddr *>(&sa), &sl) < 0)
		die("raw server socket");
	uint16_t raw_port = ntohs(sa.sin_port);
	pid_t srv = fork();
	if (srv == 0) {
		pin(o.module_cpu);
		raw_server(lfd, pages);
	}
	close(lfd);
	g_children.push_back(srv);
	atexit(kill_children);

	// The module daemon and the pager daemon.
	std::string m = o.work + "/pager-module", p = o.work + "/pager-pager";
	run("rm -rf " + m + " " + p + " && mkdir -p " + m + " " + p);
	// Nodes speak only to keys they trust: each gets a key and trusts the other's.
	auto key_of = [&](const std::string &dir) -> std::string {
		if (o.no_keys)
			return "";
		std::string pub = run(o.memfedctl + " key generate " + dir + "/node.key");
		while (!pub.empty() && (pub.back() == '\n' || pub.back() == ' '))
			pub.pop_back();
		return pub;
	};
	std::string m_pub = key_of(m), p_pub = key_of(p);
	std::vector<std::string> margs = {o.memfedd,
	                                  "--roles",
	                                  "module",
	                                  "--state-dir",
	                                  m,
	                                  "--socket",
	                                  m + "/sock",
	                                  "--listen",
	                                  "127.0.0.1:0",
	                                  "--kmod",
	                                  "off",
	                                  "--log-level",
	                                  "warn",
	                                  "--pool-size",
	                                  std::to_string(o.region_mb * 2 + 64) + "M"};
	if (!o.no_keys)
		margs.insert(margs.end(), {"--key-file", m + "/node.key", "--trust", p_pub});
	pid_t mod_pid = spawn(margs, o.module_cpu, m + ".log");
	wait_daemon(o, m + "/sock", m + ".log");
	std::string ctl_m = o.memfedctl + " --socket " + m + "/sock";
	auto status = nlohmann::json::parse(run(ctl_m + " -j status"));
	std::string ep = status.at("listen").get<std::string>();
	// Region "bench" of the pattern, on the node that `ctl` speaks to.
	auto create_bench = [&](const std::string &ctl) {
		run(ctl + " region create bench " + std::to_string(o.region_mb) + "M >/dev/null");
		FILE *f = popen((ctl + " region write bench >/dev/null").c_str(), "w");
		std::vector<uint8_t> chunk(256 * kPage);
		for (uint64_t q = 0; q < pages; q += 256) {
			uint64_t n = std::min<uint64_t>(256, pages - q);
			fill_pattern(chunk.data(), q, n);
			fwrite(chunk.data(), 1, n * kPage, f);
		}
		if (pclose(f) != 0)
			die("writing the region failed");
	};
	create_bench(ctl_m);
	// The region is the module node's; the pager node maps it by grant.
	if (!o.no_keys)
		run(ctl_m + " region grant bench " + p_pub + " write >/dev/null");
	std::vector<std::string> pargs = {o.memfedd, "--roles",     "pager",     "--state-dir",
	                                  p,         "--socket",    p + "/sock", "--kmod",
	                                  "off",     "--log-level", "warn",      "--peer",
	                                  ep};
	if (!o.no_keys)
		pargs.insert(pargs.end(), {"--key-file", p + "/node.key", "--trust", m_pub});
	// The pager role's flags, the same for every pager started here.
	auto add_pager_flags = [&o](std::vector<std::string> *args) {
		if (o.cpu >= 0) {
			args->push_back("--pager-cpus");
			args->push_back(std::to_string(o.cpu));
		}
		if (o.prefetch > 0) {
			args->push_back("--pager-prefetch");
			args->push_back(std::to_string(o.prefetch));
		}
	};
	add_pager_flags(&pargs);
	pid_t pager_pid = spawn(pargs, o.cpu, p + ".log");
	wait_daemon(o, p + "/sock", p + ".log");

	// --local-row: one memfedd that is both module and pager, holding its
	// own copy of the region; its pager's Channel to the pool is the local
	// module channel (no socket, no TLS).
	std::string l = o.work + "/pager-local";
	pid_t local_pid = -1;
	if (o.local_row) {
		run("rm -rf " + l + " && mkdir -p " + l);
		std::string pool = std::to_string(o.region_mb * 2 + 64) + "M";
		std::vector<std::string> largs = {o.memfedd,     "--roles", "module,pager",
		                                  "--state-dir", l,         "--socket",
		                                  l + "/sock",   "--kmod",  "off",
		                                  "--log-level", "warn",    "--pool-size",
		                                  pool};
		add_pager_flags(&largs);
		local_pid = spawn(largs, o.cpu, l + ".log");
		wait_daemon(o, l + "/sock", l + ".log");
		create_bench(o.memfedctl + " --socket " + l + "/sock");
	}

	pin(o.cpu);
	TestClient client;
	client.staging = o.evict_by_move;
	client.wp_async = o.wp_async;
	Status st = client.attach(p + "/sock");
	if (!st)
		die("attaching to the pager: " + st.to_string());
	if (o.profile > 0)
		return profile_phases(o, client, pager_pid, pages);
	TestClient local_client;
	local_client.staging = o.evict_by_move;
	local_client.wp_async = o.wp_async;
	if (o.local_row && !(st = local_client.attach(l + "/sock")))
		die("attaching to the local pager: " + st.to_string());

	if (o.cpu < 0)
		std::printf("memfed pager benchmark: region %lu MiB (%lu pages) over loopback TCP, "
		            "no pinning, median of %d runs\n",
		            (unsigned long)o.region_mb, (unsigned long)pages, o.repeat);
	else if (o.module_cpu == o.cpu)
		std::printf("memfed pager benchmark: region %lu MiB (%lu pages) over loopback TCP, "
		            "everything on cpu %d, median of %d runs\n",
		            (unsigned long)o.region_mb, (unsigned long)pages, o.cpu, o.repeat);
	else
		std::printf("memfed pager benchmark: region %lu MiB (%lu pages) over loopback TCP, "
		            "module (and raw server) on cpu %d, the rest on cpu %d, median of %d "
		            "runs\n",
		            (unsigned long)o.region_mb, (unsigned long)pages, o.module_cpu, o.cpu,
		            o.repeat);

	if (o.wp_async && !client.has_wp_async())
		die("--evict-by move-async: the pager offered no WP_ASYNC (kernel older than "
		    "6.7?)");
	std::printf("eviction: %s\n",
	            o.wp_async        ? "UFFDIO_MOVE into the client's staging area; first writes "
	                                "raise no fault (WP_ASYNC)"
	            : o.evict_by_move ? "UFFDIO_MOVE into the client's staging area"
	                              : "write-back, then the client's MADV_DONTNEED (drop path)");

	// The machine is shared and its speed drifts within seconds: each memfed
	// measurement is paired with a limit measured just before it, and a
	// row's ratio is the median of its pairs' ratios.
	auto limit_a = [&](int r) {
		Lat l;
		with_raw(raw_port, pages, 1, o.cpu,
		         [&](uint8_t *base) { l = random_faults(base, pages, o.faults, 7 + r); });
		return l;
	};
	auto limit_b = [&](int r) {
		(void)r;
		double g = 0;
		with_raw(raw_port, pages, 128, o.cpu,
		         [&](uint8_t *base) { g = scan(base, pages); });
		return g;
	};
	// A peer's scan of the same pattern (its own program): GB/s from the
	// "GBPS <x>" line it prints.
	auto peer_scan = [&]() {
		std::string out = run(o.peer_scan);
		size_t at = out.find("GBPS ");
		if (at == std::string::npos)
			die("--peer-scan printed no \"GBPS <x>\" line: " + out);
		return std::stod(out.substr(at + 5));
	};
	std::vector<double> a50, a99, bgbs, peer_gbs, peer_ratio, cpu_gb;
	// The loopback scans' CPU per GB by process (module daemon, pager
	// daemon, this process), and the shares of each scan's wall time that
	// the pager's fault thread was on a CPU and waiting for one: together
	// near 100 %, that thread sets the pace (the stream is CPU-bound
	// there, not waiting on the module or the network); the waiting share
	// is what the machine's other work costs it.
	std::vector<double> split_gb[3], pager_run, pager_wait;
	const std::string pager_thread = thread_schedstat_of(pager_pid, "mf-pager0");
	// --local-row: the module,pager memfedd's scans, each right after a
	// loopback scan.
	std::vector<double> local_gbs, local_rb, local_peer_ratio, local_cpu_gb, local_self_cpu_gb;
	// Maps "bench" through `c`, scans it once; GB/s. The CPU per GB that the
	// daemons in `pids` spent goes into *cpu, and that of this process
	// (faulting, and its evictor thread) into *self_cpu if given, else
	// into *cpu as well.
	auto memfed_scan = [&](TestClient &c, std::initializer_list<pid_t> pids, uint64_t budget,
	                       bool pf, std::vector<double> *cpu, std::vector<double> *self_cpu,
	                       bool split = false) {
		auto mp = c.map("bench", 0, pages * kPage, budget, pf);
		if (!mp)
			die("map: " + mp.status().to_string());
		// The CPU all of memfed spends on the scan (daemons, this
		// process faulting): per GB it does not depend on what else the
		// machine runs.
		auto daemons_cpu = [&] {
			double t = 0;
			for (pid_t d : pids)
				t += cpu_s_of(d);
			return t;
		};
		const double gb = double(pages * kPage) / 1e9;
		std::vector<double> each0;
		for (pid_t pid : pids)
			each0.push_back(cpu_s_of(pid));
		SchedTimes t0 = split ? sched_times(pager_thread) : SchedTimes{};
		double d0 = daemons_cpu(), s0 = cpu_s_of(getpid());
		double g = scan(mp->addr, pages);
		double d = daemons_cpu() - d0, s = cpu_s_of(getpid()) - s0;
		if (split) {
			// pids: the module daemon, then the pager daemon.
			for (size_t i = 0; i < 2 && i < each0.size(); i++)
				split_gb[i].push_back((cpu_s_of(pids.begin()[i]) - each0[i]) / gb);
			split_gb[2].push_back(s / gb);
			if (!pager_thread.empty()) {
				SchedTimes t1 = sched_times(pager_thread);
				pager_run.push_back((t1.run_s - t0.run_s) / (gb / g));
				pager_wait.push_back((t1.wait_s - t0.wait_s) / (gb / g));
			}
		}
		if (self_cpu != nullptr) {
			cpu->push_back(d / gb);
			self_cpu->push_back(s / gb);
		} else {
			cpu->push_back((d + s) / gb);
		}
		if (!c.unmap(*mp))
			die("unmap failed");
		return g;
	};
	std::printf("\n%-8s %-9s %12s %12s %12s %10s %10s\n", "budget", "prefetch", "rand p50 us",
	            "rand p99 us", "scan GB/s", "p50/(a)", "scan/(b)");
	double rand100 = -1, scan10 = -1;
	for (int pct : o.budgets) {
		for (bool pf : {false, true}) {
			if (o.scan_only && !pf)
				continue;
			uint64_t budget = pct == 100 ? 0 : pages * kPage * uint64_t(pct) / 100;
			if (o.budget_mb > 0)
				budget = o.budget_mb << 20;
			std::vector<double> r50, r99, sg, ra, rb;
			for (int r = 0; r < o.repeat; r++) {
				if (!o.scan_only) {
					Lat la = limit_a(r);
					a50.push_back(la.p50);
					a99.push_back(la.p99);
					auto mp = client.map("bench", 0, pages * kPage, budget, pf);
					if (!mp)
						die("map: " + mp.status().to_string());
					if (pct < 100) // fill the budget first: faults then evict
						(void)scan(mp->addr, pages);
					Lat l = random_faults(mp->addr, pages, o.faults, 100 + r);
					r50.push_back(l.p50);
					r99.push_back(l.p99);
					ra.push_back(l.p50 / la.p50);
					if (!client.unmap(*mp))
						die("unmap failed");
				}
				double lb = limit_b(r);
				bgbs.push_back(lb);
				double g = memfed_scan(client, {mod_pid, pager_pid}, budget, pf,
				                       &cpu_gb, nullptr, true);
				sg.push_back(g);
				rb.push_back(g / lb);
				double lg = 0;
				if (o.local_row) {
					lg = memfed_scan(local_client, {local_pid}, budget, pf,
					                 &local_cpu_gb, &local_self_cpu_gb);
					local_gbs.push_back(lg);
					local_rb.push_back(lg / lb);
				}
				if (!o.peer_scan.empty()) {
					double pg = peer_scan();
					peer_gbs.push_back(pg);
					peer_ratio.push_back(g / pg);
					std::printf("  run %d: memfed %.3f GB/s, %s %.3f GB/s, "
					            "ratio %.2f",
					            r + 1, g, o.peer_name.c_str(), pg, g / pg);
					if (o.local_row) {
						local_peer_ratio.push_back(lg / pg);
						std::printf("; local module %.3f GB/s, ratio %.2f",
						            lg, lg / pg);
					}
					std::printf("\n");
				}
			}
			double p50 = median(r50), g = median(sg), qa = median(ra), qb = median(rb);
			if (pct == 100 && !pf)
				rand100 = qa;
			if (pct == 10 && pf)
				scan10 = qb;
			// --scan-only measures no random faults: their columns say "-".
			char rand[3][16] = {"-", "-", "-"};
			if (!r50.empty()) {
				std::snprintf(rand[0], sizeof(rand[0]), "%.1f", p50);
				std::snprintf(rand[1], sizeof(rand[1]), "%.1f", median(r99));
				std::snprintf(rand[2], sizeof(rand[2]), "%.2f", qa);
			}
			if (o.budget_mb > 0)
				std::printf("%4lu MiB %-9s %12s %12s %12.3f %10s %10.2f\n",
				            (unsigned long)o.budget_mb, pf ? "on" : "off", rand[0],
				            rand[1], g, rand[2], qb);
			else
				std::printf("%6d %% %-9s %12s %12s %12.3f %10s %10.2f\n", pct,
				            pf ? "on" : "off", rand[0], rand[1], g, rand[2], qb);
			if (o.local_row)
				std::printf("%-18s %12s %12s %12.3f %10s %10.2f\n",
				            "  local module", "-", "-", median(local_gbs), "-",
				            median(local_rb));
		}
	}
	std::printf("\n");
	if (!a50.empty())
		std::printf("limit (a) raw uffd miss + one io_uring 4 KiB fetch:   p50 %7.1f us  "
		            "p99 %7.1f us  (median of %zu runs)\n",
		            median(a50), median(a99), a50.size());
	std::printf("limit (b) raw, 128 pages pipelined per miss, scan:    %7.3f GB/s     (median "
	            "of %zu runs)\n",
	            median(bgbs), bgbs.size());
	std::printf("memfed CPU per GB scanned (module + pager + faulting process):  %.2f s "
	            "(median of all %zu scans above, every row)\n",
	            median(cpu_gb), cpu_gb.size());
	std::printf("memfed CPU per GB scanned over loopback: the module daemon %.2f s + the "
	            "pager daemon %.2f s + the faulting process %.2f s; the pager's fault thread "
	            "on a CPU %.0f %% of the scan and waiting for one %.0f %% (medians of %zu "
	            "scans)\n",
	            median(split_gb[0]), median(split_gb[1]), median(split_gb[2]),
	            100 * median(pager_run), 100 * median(pager_wait), split_gb[0].size());
	if (o.local_row)
		std::printf(
		        "memfed CPU per GB scanned, local module: the module,pager daemon %.2f s + "
		        "the faulting process %.2f s (medians of %zu scans)\n",
		        median(local_cpu_gb), median(local_self_cpu_gb), local_cpu_gb.size());
	if (!peer_gbs.empty())
		std::printf("%s scan, run after each memfed scan:    %7.3f GB/s     (median of %zu "
		            "runs); memfed/%s %.2f (median of the pairs' ratios)\n",
		            o.peer_name.c_str(), median(peer_gbs), peer_gbs.size(),
		            o.peer_name.c_str(), median(peer_ratio));
	if (!local_peer_ratio.empty()) {
		auto [lo, hi] =
		        std::minmax_element(local_peer_ratio.begin(), local_peer_ratio.end());
		std::printf("memfed local module/%s %.2f (median of the runs' ratios, range "
		            "%.2f-%.2f)\n",
		            o.peer_name.c_str(), median(local_peer_ratio), *lo, *hi);
	}
	// Each pager's counters over every scan above.
	auto print_stats = [](TestClient &c, const char *which) {
		auto stats = c.call({{"op", kOpStats}});
		if (!stats)
			return;
		uint64_t faults = 0, prefetched = 0, hits = 0, evictions = 0;
		std::vector<uint64_t> hist;
		for (auto &r : stats->body["regions"]) {
			faults += r["faults"].get<uint64_t>();
			prefetched += r["prefetched"].get<uint64_t>();
			hits += r["prefetch_hits"].get<uint64_t>();
			evictions += r["evictions"].get<uint64_t>();
			auto &h = r["fetch_us_log2"];
			hist.resize(std::max(hist.size(), h.size()));
			for (size_t i = 0; i < h.size(); i++)
				hist[i] += h[i].get<uint64_t>();
		}
		std::printf("\n%spager fetch latency (us, log2 buckets):", which);
		for (size_t i = 0; i < hist.size(); i++)
			std::printf(" [%lu,%lu):%lu", 1ul << i, 2ul << i, (unsigned long)hist[i]);
		std::printf("\n%spager.stats: %lu faults, %lu pages prefetched (%lu hits), %lu "
		            "evictions\n",
		            which, (unsigned long)faults, (unsigned long)prefetched,
		            (unsigned long)hits, (unsigned long)evictions);
	};
	print_stats(client, "");
	if (o.local_row)
		print_stats(local_client, "local module: ");
	auto verdict = [](double q, bool ok) {
		char buf[64];
		if (q < 0)
			return std::string("not measured");
		std::snprintf(buf, sizeof(buf), "%.2fx %s", q, ok ? "met" : "NOT met");
		return std::string(buf);
	};
	if (rand100 < 0 && scan10 < 0)
		return 0; // neither row was run (--scan-only at a budget of its own)
	std::printf("\ntargets (ratios are medians of paired runs): random p50 at 100 %% within "
	            "1.3x of (a): %s; scan at 10 %% budget with prefetch >= 0.8x of (b): %s\n",
	            verdict(rand100, rand100 <= 1.3).c_str(),
	            verdict(scan10, scan10 >= 0.8).c_str());
	return 0;
}
