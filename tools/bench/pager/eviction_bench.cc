// memfed-bench-evict: the kernel cost per page of the two ways to take a page
// out of a client process (doc/design/move-eviction.md), and of finding its
// written pages, measured in one run.
//
// A forked child plays the client: it opens the uffd, registers a work area
// (MISSING|WP) and a staging area (MISSING) and passes the uffd to this
// process, the pager, over SCM_RIGHTS; then it runs commands. Per batch of 1,
// 16 and 256 contiguous present pages:
//   today:  the pager write-protects the batch (UFFDIO_WRITEPROTECT), copies it
//           out (pread of /proc/PID/mem) and asks the client to drop it (one
//           round trip over a unix socket; the client MADV_DONTNEEDs it);
//   move:   the pager asks the client to move the batch into staging (one
//           round trip; the client empties the staging slots of the previous
//           batch with MADV_DONTNEED, then UFFDIO_MOVEs), then copies the
//           staged batch out (pread of /proc/PID/mem).
// Between batches the client fills the work pages again with UFFDIO_COPY on
// its own uffd (not timed). Then the write scan: a 1 GiB area under WP_ASYNC
// with N pages written since the last scan; the pager finds them with
// PAGEMAP_SCAN (PM_SCAN_WP_MATCHING) on /proc/PID/pagemap, against reading the
// area's 8-byte pagemap entries (the scan a kernel without PAGEMAP_SCAN does).
// The parts of each path are printed too: the pager's WRITEPROTECT and pread,
// the client's MADV_DONTNEED and MOVE (timed inside the client), per page.
// Neither path here raises UFFD_EVENT_REMOVE (libmemfed's uffd asks for it,
// and each MADV_DONTNEED then waits for the pager to read the event): both
// paths pay it once per batch in memfed. Every thread runs on one CPU (--cpu,
// default 0). Medians of --repeat runs; the load average is printed with the
// table.
//
// Usage: memfed-bench-evict [--rounds 200] [--repeat 5] [--cpu 0] [--scan-mb 1024]
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "daemon/control/message.h"
#include "daemon/pager/pagemap_scan.h"
#include "daemon/pager/uffd.h"
#include "tools/bench/pager/cpu_pin.h"

using namespace memfed::pager;

namespace
{

constexpr uint64_t kMaxBatch = 256;

// kTimes: the client's nanoseconds in MADV_DONTNEED (addr = 0) or UFFDIO_MOVE
// (addr = 1) since the last kTimes of that kind.
enum Op : uint32_t { kFill, kDrop, kMove, kWriteEvery, kTimes, kExit };

struct Cmd {
	uint32_t op;
	uint64_t addr, len, staging, stride;
};

[[noreturn]] void die(const char *what)
{
	std::perror(what);
	std::exit(1);
}

using memfed::bench::pin;

uint8_t *map_area(uint64_t len)
{
	void *p = mmap(nullptr, len, PROT_READ | PROT_WRITE,
	               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED)
		die("mmap");
	madvise(p, len, MADV_NOHUGEPAGE);
	return static_cast<uint8_t *>(p);
}

// The client: registers `work` (MISSING|WP, `features`) and `staging`
// (MISSING), hands over the uffd, runs commands; each reply is an int64
// (0 or -errno).
[[noreturn]] void client_main(int sock, uint64_t features, uint8_t *work, uint64_t work_len,
                              uint8_t *staging, uint64_t staging_len)
{
	auto fd = open_uffd(features, false);
	if (!fd)
		_exit(2);
	int uffd = *fd;
	if (uffd_register(uffd, uint64_t(work), work_len,
	                  UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP) < 0 ||
	    uffd_register(uffd, uint64_t(staging), staging_len, UFFDIO_REGISTER_MODE_MISSING) < 0)
		_exit(3);
	memfed::control::Message hello;
	hello.fds.push_back(uffd);
	if (!memfed::control::send_message(sock, hello).is_ok())
		_exit(5);
	std::vector<uint8_t> src(kMaxBatch * kPageSize, 0x5a);
	uint64_t staged_at = 0, staged_len = 0;
	int64_t ns[2] = {0, 0}; // in MADV_DONTNEED, in UFFDIO_MOVE
	auto timed = [&ns](int which, auto fn) {
		timespec a{}, b{};
		clock_gettime(CLOCK_MONOTONIC, &a);
		int64_t r = fn();
		clock_gettime(CLOCK_MONOTONIC, &b);
		ns[which] += (b.tv_sec - a.tv_sec) * 1000000000 + (b.tv_nsec - a.tv_nsec);
		return r;
	};
	auto dontneed = [](uint64_t addr, uint64_t len) -> int64_t {
		return madvise(reinterpret_cast<void *>(addr), len, MADV_DONTNEED) < 0 ? -errno : 0;
	};
	for (;;) {
		Cmd c{};
		if (recv(sock, &c, sizeof(c), 0) != ssize_t(sizeof(c)))
			_exit(0);
		int64_t r = 0;
		switch (c.op) {
		case kFill: // populate [addr, addr+len) without a fault
			for (uint64_t off = 0; off < c.len && r == 0; off += src.size())
				r = uffd_copy(uffd, c.addr + off, src.data(),
				              std::min<uint64_t>(src.size(), c.len - off), false,
				              nullptr);
			break;
		case kDrop: // today's evictor
			r = timed(0, [&] { return dontneed(c.addr, c.len); });
			break;
		case kMove: // empty the previous batch's slots, then move this one
			if (staged_len != 0)
				r = timed(0, [&] { return dontneed(staged_at, staged_len); });
			if (r == 0)
				r = timed(1, [&] {
					return int64_t(uffd_move(uffd, c.staging, c.addr, c.len,
					                         UFFDIO_MOVE_MODE_DONTWAKE,
					                         nullptr));
				});
			staged_at = c.staging;
			staged_len = c.len;
			break;
		case kWriteEvery: // one word written every `stride` bytes
			for (uint64_t off = 0; off < c.len; off += c.stride)
				*reinterpret_cast<volatile uint64_t *>(c.addr + off) = off;
			break;
		case kTimes:
			r = ns[c.addr & 1];
			ns[c.addr & 1] = 0;
			break;
		case kExit:
			_exit(0);
		}
		if (send(sock, &r, sizeof(r), MSG_NOSIGNAL) != ssize_t(sizeof(r)))
			_exit(4);
	}
}

class Client
{
public:
	Client(uint64_t features, uint64_t work_len, uint64_t staging_len, int cpu)
	    : work_len_(work_len), staging_len_(staging_len)
	{
		work_ = map_area(work_len);
		staging_ = map_area(staging_len);
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
			die("socketpair");
		pid_ = fork();
		if (pid_ < 0)
			die("fork");
		if (pid_ == 0) {
			pin(cpu);
			close(sv[0]);
			client_main(sv[1], features, work_, work_len, staging_, staging_len);
		}
		close(sv[1]);
		sock_ = sv[0];
		auto hello = memfed::control::recv_message(sock_);
		if (!hello || hello->fds.size() != 1)
			die("recvmsg (the client failed to set up)");
		uffd_ = hello->fds[0];
		std::string proc = "/proc/" + std::to_string(pid_);
		mem_ = open((proc + "/mem").c_str(), O_RDONLY | O_CLOEXEC);
		pagemap_ = open((proc + "/pagemap").c_str(), O_RDONLY | O_CLOEXEC);
		if (mem_ < 0 || pagemap_ < 0)
			die("open /proc/PID/{mem,pagemap}");
	}
	~Client()
	{
		Cmd c{kExit, 0, 0, 0, 0};
		send(sock_, &c, sizeof(c), MSG_NOSIGNAL);
		waitpid(pid_, nullptr, 0);
		for (int fd : {sock_, uffd_, mem_, pagemap_})
			close(fd);
		munmap(work_, work_len_);
		munmap(staging_, staging_len_);
	}

	int64_t call(Op op, uint64_t addr, uint64_t len = 0, uint64_t staging = 0,
	             uint64_t stride = 0)
	{
		Cmd c{op, addr, len, staging, stride};
		if (send(sock_, &c, sizeof(c), MSG_NOSIGNAL) != ssize_t(sizeof(c)))
			die("send to the client");
		int64_t r = 0;
		if (recv(sock_, &r, sizeof(r), 0) != ssize_t(sizeof(r)))
			die("recv from the client");
		return r;
	}

	uint64_t work(uint64_t page) const { return uint64_t(work_) + page * kPageSize; }
	uint64_t staging(uint64_t page) const { return uint64_t(staging_) + page * kPageSize; }
	int uffd() const { return uffd_; }
	int mem() const { return mem_; }
	int pagemap() const { return pagemap_; }

private:
	uint64_t work_len_, staging_len_;
	uint8_t *work_ = nullptr, *staging_ = nullptr;
	pid_t pid_ = -1;
	int sock_ = -1, uffd_ = -1, mem_ = -1, pagemap_ = -1;
};

double now_us()
{
	return std::chrono::duration<double, std::micro>(
	               std::chrono::steady_clock::now().time_since_epoch())
	        .count();
}

double median(std::vector<double> v)
{
	std::sort(v.begin(), v.end());
	return v[v.size() / 2];
}

void check(int64_t r, const char *what)
{
	if (r < 0) {
		errno = int(-r);
		die(what);
	}
}

// Microseconds per page of one eviction path and of its parts.
struct Parts {
	double total = 0, wp = 0, pread = 0, dontneed = 0, move = 0;
};

// One eviction path over `rounds` batches of `batch` pages taken in turn from
// the work area.
Parts evict_us_per_page(Client &c, bool move, uint64_t batch, int rounds)
{
	const uint64_t slots = 2 * kMaxBatch; // two batches, used in turn
	std::vector<uint8_t> out(batch * kPageSize);
	Parts p;
	c.call(kTimes, 0, 0);
	c.call(kTimes, 1, 0);
	for (int r = 0; r < rounds; r++) {
		uint64_t first = (uint64_t(r) * batch) % (4 * kMaxBatch);
		uint64_t addr = c.work(first), len = batch * kPageSize;
		check(c.call(kFill, addr, len), "fill (UFFDIO_COPY by the client)");
		double t0 = now_us(), t1 = t0, t2 = t0;
		if (!move) {
			check(uffd_writeprotect(c.uffd(), addr, len, true, false),
			      "UFFDIO_WRITEPROTECT");
			t1 = now_us();
			if (pread(c.mem(), out.data(), len, off_t(addr)) != ssize_t(len))
				die("pread /proc/PID/mem");
			t2 = now_us();
			check(c.call(kDrop, addr, len), "MADV_DONTNEED by the client");
			p.wp += t1 - t0;
			p.pread += t2 - t1;
		} else {
			uint64_t slot = (uint64_t(r) % 2) * kMaxBatch % slots;
			check(c.call(kMove, addr, len, c.staging(slot)),
			      "UFFDIO_MOVE by the client");
			t1 = now_us();
			if (pread(c.mem(), out.data(), len, off_t(c.staging(slot))) != ssize_t(len))
				die("pread /proc/PID/mem");
			p.pread += now_us() - t1;
		}
		p.total += now_us() - t0;
	}
	p.dontneed = double(c.call(kTimes, 0, 0)) / 1000;
	p.move = double(c.call(kTimes, 1, 0)) / 1000;
	double n = double(rounds) * double(batch);
	p.total /= n;
	p.wp /= n;
	p.pread /= n;
	p.dontneed /= n;
	p.move /= n;
	return p;
}

// Milliseconds to find the written pages of the whole area: PAGEMAP_SCAN
// (re-protecting them), or reading every pagemap entry.
double scan_ms(Client &c, uint64_t len, bool pagemap_scan, uint64_t *found)
{
	double t0 = now_us();
	*found = 0;
	if (pagemap_scan) {
		check(for_each_written_run(
		              c.pagemap(), c.work(0), c.work(0) + len, true,
		              [&](uint64_t s, uint64_t e) { *found += (e - s) / kPageSize; }),
		      "PAGEMAP_SCAN");
	} else {
		std::vector<uint64_t> ent(4096);
		for (uint64_t off = 0; off < len; off += ent.size() * kPageSize) {
			off_t at = off_t((c.work(0) + off) / kPageSize * 8);
			if (pread(c.pagemap(), ent.data(), ent.size() * 8, at) !=
			    ssize_t(ent.size() * 8))
				die("pread /proc/PID/pagemap");
			for (uint64_t e : ent)
				*found += (e >> 63) & 1; // present
		}
	}
	return (now_us() - t0) / 1000;
}

} // namespace

int main(int argc, char **argv)
{
	int rounds = 200, repeat = 5, cpu = 0;
	uint64_t scan_mb = 1024;
	for (int i = 1; i < argc; i++) {
		std::string a = argv[i];
		auto next = [&] {
			if (i + 1 >= argc) {
				std::fprintf(stderr, "%s needs a value\n", a.c_str());
				std::exit(2);
			}
			return std::string(argv[++i]);
		};
		if (a == "--rounds")
			rounds = std::stoi(next());
		else if (a == "--repeat")
			repeat = std::stoi(next());
		else if (a == "--cpu") {
			std::string v = next();
			cpu = v == "any" ? -1 : std::stoi(v);
		} else if (a == "--scan-mb")
			scan_mb = std::stoull(next());
		else {
			std::fprintf(
			        stderr,
			        "usage: memfed-bench-evict [--rounds N] [--repeat N] [--cpu N|any] "
			        "[--scan-mb N]\n");
			return 2;
		}
	}
	auto caps = probe_uffd();
	if (!caps) {
		std::fprintf(stderr, "memfed-bench-evict: %s\n", caps.status().to_string().c_str());
		return 1;
	}
	if (!caps->move || !caps->wp_async || !caps->anon_wp) {
		std::printf("SKIPPED: this kernel lacks UFFDIO_MOVE or WP_ASYNC (has: %s)\n",
		            caps->describe().c_str());
		return 0;
	}
	pin(cpu);
	double load[3] = {};
	if (getloadavg(load, 3) < 0)
		load[0] = -1;

	std::printf("eviction per page, us (median of %d runs of %d batches; load average %.2f)\n",
	            repeat, rounds, load[0]);
	std::printf("  today = UFFDIO_WRITEPROTECT + pread /proc/PID/mem + round trip to the "
	            "client's MADV_DONTNEED\n");
	std::printf("  move  = round trip to the client's MADV_DONTNEED of the previous batch's "
	            "slots + UFFDIO_MOVE, + pread\n");
	std::printf("%-6s %8s %6s %6s %8s | %8s %6s %8s %6s | %10s\n", "batch", "today", "wp",
	            "pread", "dontneed", "move", "MOVE", "dontneed", "pread", "move/today");
	{
		Client c(UFFD_FEATURE_MOVE | UFFD_FEATURE_PAGEFAULT_FLAG_WP,
		         4 * kMaxBatch * kPageSize, 2 * kMaxBatch * kPageSize, cpu);
		for (uint64_t batch : {1, 16, 256}) {
			std::vector<Parts> today, moved;
			std::vector<double> ratio;
			for (int k = 0; k < repeat; k++) {
				today.push_back(evict_us_per_page(c, false, batch, rounds));
				moved.push_back(evict_us_per_page(c, true, batch, rounds));
				ratio.push_back(moved.back().total / today.back().total);
			}
			auto med = [](const std::vector<Parts> &v, double Parts::*f) {
				std::vector<double> x;
				for (const Parts &p : v)
					x.push_back(p.*f);
				return median(x);
			};
			std::printf("%-6llu %8.2f %6.2f %6.2f %8.2f | %8.2f %6.2f %8.2f %6.2f | "
			            "%10.2f\n",
			            (unsigned long long)batch, med(today, &Parts::total),
			            med(today, &Parts::wp), med(today, &Parts::pread),
			            med(today, &Parts::dontneed), med(moved, &Parts::total),
			            med(moved, &Parts::move), med(moved, &Parts::dontneed),
			            med(moved, &Parts::pread), median(ratio));
		}
	}

	const uint64_t len = scan_mb << 20;
	std::printf(
	        "\nwritten pages in a %llu MiB area under WP_ASYNC, ms per scan (median of %d)\n",
	        (unsigned long long)scan_mb, repeat);
	std::printf("%-8s %14s %14s %8s\n", "written", "PAGEMAP_SCAN", "pagemap read", "scan/read");
	Client c(UFFD_FEATURE_MOVE | UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_PAGEFAULT_FLAG_WP, len,
	         kPageSize, cpu);
	check(c.call(kFill, c.work(0), len), "fill (UFFDIO_COPY by the client)");
	uint64_t found = 0;
	scan_ms(c, len, true, &found); // protect everything: the clean state
	for (uint64_t n : {0ull, 16ull, 1024ull, 65536ull}) {
		if (n > len / kPageSize)
			break;
		std::vector<double> scan, read, ratio;
		for (int k = 0; k < repeat; k++) {
			if (n != 0)
				check(c.call(kWriteEvery, c.work(0), len, 0, len / n), "writes");
			double s = scan_ms(c, len, true, &found);
			if (found != n) {
				std::fprintf(
				        stderr,
				        "PAGEMAP_SCAN found %llu written pages, expected %llu\n",
				        (unsigned long long)found, (unsigned long long)n);
				return 1;
			}
			double r = scan_ms(c, len, false, &found);
			scan.push_back(s);
			read.push_back(r);
			ratio.push_back(s / r);
		}
		std::printf("%-8llu %14.3f %14.3f %8.3f\n", (unsigned long long)n, median(scan),
		            median(read), median(ratio));
	}
	if (getloadavg(load, 3) >= 0)
		std::printf("load average at the end: %.2f %.2f %.2f\n", load[0], load[1], load[2]);
	return 0;
}
