// The kernel facts that eviction by UFFDIO_MOVE and dirty tracking by
// WP_ASYNC + PAGEMAP_SCAN rest on (doc/design/move-eviction.md), established
// across two processes as memfed runs them: a forked child plays the client
// (it opens the uffd, registers a work area and a staging area, passes the
// uffd over SCM_RIGHTS and then runs commands), the test process plays the
// pager (it reads the uffd's messages and serves them, reads the child's
// memory through /proc/PID/mem and scans its /proc/PID/pagemap).
//
// Skips loudly on a kernel without UFFDIO_MOVE, WP_ASYNC or PAGEMAP_SCAN
// (Debian's 6.1 in the QEMU guest).
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "daemon/control/message.h"
#include "daemon/pager/pagemap_scan.h"
#include "daemon/pager/uffd.h"

namespace memfed::pager
{
namespace
{

constexpr uint64_t kPages = 64;
constexpr uint64_t kArea = kPages * kPageSize;
constexpr uint64_t kPattern = 0x6d656d6665640000ull; // "memfed" in the high bytes

// The first word of work page i as the child fills it before registering.
uint64_t filled(uint64_t i)
{
	return kPattern + i;
}

enum Op : uint32_t {
	kMove,     // a = dst, b = src, c = len, d = mode: result, value = bytes moved
	kRead,     // a = addr: value = the word there (may fault)
	kWrite,    // a = addr, b = value
	kDontneed, // a = addr, b = len
	kFork,     // fork a grandchild that shares the work area until kExit
	kStress,   // b = 1 starts a writer thread over [a, a + c), 2 waits for its next
	           // pass over all pages, 0 stops it: value = writes, aux = errors
	kExit,
};

struct Cmd {
	uint32_t op;
	uint64_t a, b, c, d;
};

struct Reply {
	int64_t result; // 0 or -errno
	uint64_t value;
	uint64_t aux;
};

// What the child sets up before it hands over its uffd.
struct ClientOptions {
	uint64_t features = UFFD_FEATURE_MOVE;
	uint64_t work_mode = UFFDIO_REGISTER_MODE_MISSING;
	uint64_t staging_mode = UFFDIO_REGISTER_MODE_MISSING;
	bool register_staging = true;
	bool memfd_work = false; // the work area is a MAP_SHARED memfd
};

// The kernel this runs on offers what the test needs, or a reason why not.
std::string missing_kernel_feature()
{
	auto fd = open_uffd(0, true);
	if (!fd)
		return "no userfaultfd: " + fd.status().to_string();
	close(*fd);
	auto caps = probe_uffd();
	if (!caps)
		return caps.status().to_string();
	if (!(caps->kernel_features & UFFD_FEATURE_MOVE))
		return "this kernel's userfaultfd has no UFFD_FEATURE_MOVE (6.8+)";
	if (!(caps->kernel_features & UFFD_FEATURE_WP_ASYNC))
		return "this kernel's userfaultfd has no UFFD_FEATURE_WP_ASYNC (6.7+)";
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	pm_scan_arg arg{};
	arg.size = sizeof(arg);
	int r = pm < 0 ? -1 : ioctl(pm, PAGEMAP_SCAN, &arg);
	int err = errno;
	if (pm >= 0)
		close(pm);
	if (r < 0 && (err == ENOTTY || pm < 0))
		return "this kernel has no PAGEMAP_SCAN on /proc/PID/pagemap (6.7+)";
	return "";
}

bool skip_without_kernel()
{
	std::string why = missing_kernel_feature();
	if (why.empty())
		return false;
	WARN("SKIPPED: " << why);
	return true;
}

// PAGEMAP_SCAN with PM_SCAN_WP_MATCHING over every entry of [start, end) that
// reads as written, empty ones included (for_each_written_run matches present
// pages only).
void protect_all(int pagemap, uint64_t start, uint64_t end)
{
	page_region vec[8];
	pm_scan_arg arg{};
	arg.size = sizeof(arg);
	arg.flags = PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC;
	arg.start = start;
	arg.end = end;
	arg.vec = reinterpret_cast<uint64_t>(vec);
	arg.vec_len = 8;
	arg.category_mask = PAGE_IS_WRITTEN;
	arg.return_mask = PAGE_IS_WRITTEN;
	REQUIRE(ioctl(pagemap, PAGEMAP_SCAN, &arg) >= 0);
}

// The child's side: set up, hand over the uffd, serve commands until kExit.
[[noreturn]] void client_main(int sock, const ClientOptions &o, uint8_t *work, uint8_t *staging)
{
	if (o.memfd_work) {
		int mfd = static_cast<int>(syscall(SYS_memfd_create, "work", 0));
		if (mfd < 0 || ftruncate(mfd, kArea) < 0 ||
		    mmap(work, kArea, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, mfd, 0) ==
		            MAP_FAILED)
			_exit(10);
	}
	for (uint64_t i = 0; i < kPages; i++) {
		std::memset(work + i * kPageSize, int(i), kPageSize);
		uint64_t w = filled(i);
		std::memcpy(work + i * kPageSize, &w, sizeof(w));
	}
	auto fd = open_uffd(o.features, false);
	if (!fd)
		_exit(11);
	int uffd = *fd;
	if (uffd_register(uffd, uint64_t(work), kArea, o.work_mode) < 0)
		_exit(12);
	if (o.register_staging && uffd_register(uffd, uint64_t(staging), kArea, o.staging_mode) < 0)
		_exit(13);

	control::Message hello;
	hello.fds.push_back(uffd);
	if (!control::send_message(sock, hello).is_ok())
		_exit(14);

	pid_t grandchild = -1;
	std::atomic<bool> stress_on{false};
	std::atomic<uint64_t> stress_writes{0};
	std::atomic<uint64_t> stress_errors{0};
	std::atomic<uint64_t> stress_passes{0};
	std::thread writer;
	for (;;) {
		Cmd c{};
		if (recv(sock, &c, sizeof(c), 0) != ssize_t(sizeof(c)))
			_exit(0);
		Reply r{};
		switch (c.op) {
		case kMove: {
			int64_t moved = 0;
			r.result = uffd_move(uffd, c.a, c.b, c.c, c.d, &moved);
			r.value = uint64_t(moved);
			break;
		}
		case kRead:
			r.value = *reinterpret_cast<volatile uint64_t *>(c.a);
			break;
		case kWrite:
			*reinterpret_cast<volatile uint64_t *>(c.a) = c.b;
			break;
		case kDontneed:
			r.result = madvise(reinterpret_cast<void *>(c.a), c.b, MADV_DONTNEED) < 0
			                   ? -errno
			                   : 0;
			break;
		case kFork:
			grandchild = fork();
			if (grandchild == 0) {
				pause();
				_exit(0);
			}
			r.result = grandchild < 0 ? -errno : 0;
			break;
		case kStress:
			if (c.b == 1) {
				// Writes word 1 of each page in turn, so every page
				// changes all the time, and checks first that the page
				// still holds what it wrote there last: a write lost by
				// an eviction shows as a mismatch. The pager serves the
				// faults while it runs.
				stress_on = true;
				writer = std::thread([&, base = c.a, len = c.c] {
					std::vector<uint64_t> last(len / kPageSize);
					for (uint64_t p = 0; p < last.size(); p++)
						last[p] = 0x0101010101010101ull * (p & 0xff);
					for (uint64_t n = 1; stress_on; n++) {
						for (uint64_t p = 0; p < last.size() && stress_on;
						     p++) {
							auto *w = reinterpret_cast<
							        volatile uint64_t *>(
							        base + p * kPageSize + 8);
							if (*w != last[p])
								stress_errors++;
							*w = n;
							last[p] = n;
							stress_writes++;
						}
						stress_passes++;
					}
				});
			} else if (c.b == 2) {
				for (uint64_t p0 = stress_passes; stress_passes == p0;)
					sched_yield();
			} else {
				stress_on = false;
				writer.join();
				r.value = stress_writes;
				r.aux = stress_errors;
			}
			break;
		case kExit:
			if (grandchild > 0) {
				kill(grandchild, SIGKILL);
				waitpid(grandchild, nullptr, 0);
			}
			send(sock, &r, sizeof(r), MSG_NOSIGNAL);
			_exit(0);
		default:
			r.result = -EINVAL;
		}
		if (send(sock, &r, sizeof(r), MSG_NOSIGNAL) != ssize_t(sizeof(r)))
			_exit(15);
	}
}

// The pager's side of one client.
class Client
{
public:
	explicit Client(const ClientOptions &o = {})
	{
		work_ = map_area();
		staging_ = map_area();
		int sv[2];
		REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
		pid_ = fork();
		REQUIRE(pid_ >= 0);
		if (pid_ == 0) {
			close(sv[0]);
			client_main(sv[1], o, work_, staging_);
		}
		close(sv[1]);
		sock_ = sv[0];
		auto hello = control::recv_message(sock_);
		if (!hello || hello->fds.size() != 1) {
			int status = 0;
			waitpid(pid_, &status, 0);
			pid_ = -1;
			FAIL("the client exited during setup with status " << WEXITSTATUS(status));
		}
		uffd_ = hello->fds[0];
		mem_ = open(("/proc/" + std::to_string(pid_) + "/mem").c_str(), O_RDWR | O_CLOEXEC);
		pagemap_ = open(("/proc/" + std::to_string(pid_) + "/pagemap").c_str(),
		                O_RDONLY | O_CLOEXEC);
		REQUIRE(mem_ >= 0);
		REQUIRE(pagemap_ >= 0);
	}

	~Client()
	{
		if (pid_ > 0) {
			Cmd c{kExit, 0, 0, 0, 0};
			send(sock_, &c, sizeof(c), MSG_NOSIGNAL);
			Reply r{};
			pollfd p{sock_, POLLIN, 0};
			if (poll(&p, 1, 5000) == 1)
				(void)recv(sock_, &r, sizeof(r), 0);
			kill(pid_, SIGKILL);
			waitpid(pid_, nullptr, 0);
		}
		for (int fd : {sock_, uffd_, mem_, pagemap_})
			if (fd >= 0)
				close(fd);
		munmap(work_, kArea);
		munmap(staging_, kArea);
	}

	uint64_t work(uint64_t page) const { return uint64_t(work_) + page * kPageSize; }
	uint64_t staging(uint64_t page) const { return uint64_t(staging_) + page * kPageSize; }
	int uffd() const { return uffd_; }
	int pagemap() const { return pagemap_; }

	// Sends a command and serves the uffd's messages until the reply comes:
	// a missing page gets the words serve(addr) returns (the rest zeros), a
	// write-protect fault is resolved.
	Reply call(Op op, uint64_t a = 0, uint64_t b = 0, uint64_t c = 0, uint64_t d = 0)
	{
		Cmd cmd{op, a, b, c, d};
		REQUIRE(send(sock_, &cmd, sizeof(cmd), MSG_NOSIGNAL) == ssize_t(sizeof(cmd)));
		for (;;) {
			pollfd p[2] = {{sock_, POLLIN, 0}, {uffd_, POLLIN, 0}};
			REQUIRE(poll(p, 2, 10000) > 0); // a generous bound that only ends a hang
			if (p[1].revents & POLLIN)
				serve_one();
			if (p[0].revents & (POLLIN | POLLHUP)) {
				Reply r{};
				REQUIRE(recv(sock_, &r, sizeof(r), 0) == ssize_t(sizeof(r)));
				return r;
			}
		}
	}

	// Reads one uffd message, if any, and serves it.
	bool serve_one()
	{
		uffd_msg m{};
		if (read(uffd_, &m, sizeof(m)) != ssize_t(sizeof(m)))
			return false;
		if (m.event != UFFD_EVENT_PAGEFAULT)
			return true;
		uint64_t addr = m.arg.pagefault.address & ~(kPageSize - 1);
		if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
			wp_faults.push_back(addr);
			REQUIRE(uffd_writeprotect(uffd_, addr, kPageSize, false, false) == 0);
			return true;
		}
		missing_faults.push_back(addr);
		if (defer(addr)) {
			deferred.push_back(addr);
			return true;
		}
		serve_page(addr);
		return true;
	}

	// Serves the faults held back by `defer`.
	void serve_deferred()
	{
		for (uint64_t addr : deferred)
			serve_page(addr);
		deferred.clear();
	}

	void serve_page(uint64_t addr)
	{
		std::vector<uint8_t> page(kPageSize);
		std::vector<uint64_t> words = serve(addr);
		std::memcpy(page.data(), words.data(), words.size() * sizeof(uint64_t));
		int r = uffd_copy(uffd_, addr, page.data(), kPageSize, serve_wp, nullptr);
		REQUIRE((r == 0 || r == -EEXIST));
	}

	// The first word of the child's page at `addr`, through /proc/PID/mem
	// (the page must be present: a missing one would wait on this very
	// process to serve it).
	uint64_t peek(uint64_t addr, uint64_t word = 0) const
	{
		uint64_t v = 0;
		REQUIRE(pread(mem_, &v, sizeof(v), off_t(addr + word * 8)) == ssize_t(sizeof(v)));
		return v;
	}

	// The runs PAGEMAP_SCAN reports written in [start, end).
	std::vector<std::pair<uint64_t, uint64_t>> written(uint64_t start, uint64_t end,
	                                                   bool reprotect)
	{
		std::vector<std::pair<uint64_t, uint64_t>> runs;
		int r = for_each_written_run(
		        pagemap_, start, end, reprotect,
		        [&](uint64_t s, uint64_t e) { runs.emplace_back(s, e); });
		REQUIRE(r == 0);
		return runs;
	}
	// Whether the child's page at `addr` is present (pagemap bit 63).
	bool present(uint64_t addr) const
	{
		uint64_t e = 0;
		REQUIRE(pread(pagemap_, &e, sizeof(e), off_t(addr / kPageSize * 8)) == 8);
		return (e >> 63) & 1;
	}
	bool is_written(uint64_t addr) { return !written(addr, addr + kPageSize, false).empty(); }

	pid_t pid() const { return pid_; }

	static constexpr uint64_t kServed = 0x5e7e5e7e5e7e5e7eull;
	std::function<std::vector<uint64_t>(uint64_t)> serve = [](uint64_t) {
		return std::vector<uint64_t>{kServed};
	};
	std::vector<uint64_t> missing_faults;
	std::vector<uint64_t> wp_faults;
	// Serve missing pages write-protected (UFFDIO_COPY_MODE_WP).
	bool serve_wp = false;
	// Missing faults to hold back (a page mid-move), until serve_deferred().
	std::function<bool(uint64_t)> defer = [](uint64_t) { return false; };
	std::vector<uint64_t> deferred;

private:
	static uint8_t *map_area()
	{
		void *p = mmap(nullptr, kArea, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		               -1, 0);
		REQUIRE(p != MAP_FAILED);
		// Small pages: a huge page would move (or refuse) as one.
		madvise(p, kArea, MADV_NOHUGEPAGE);
		return static_cast<uint8_t *>(p);
	}

	pid_t pid_ = -1;
	int sock_ = -1;
	int uffd_ = -1;
	int mem_ = -1;
	int pagemap_ = -1;
	uint8_t *work_ = nullptr;
	uint8_t *staging_ = nullptr;
};

constexpr uint64_t kWp = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP;
constexpr uint64_t kAsyncFeatures =
        UFFD_FEATURE_MOVE | UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_PAGEFAULT_FLAG_WP;

} // namespace

TEST_CASE("UFFDIO_MOVE is refused from any process but the uffd's own", "[uffd_move]")
{
	if (skip_without_kernel())
		return;
	Client c;
	int64_t moved = -1;
	CHECK(uffd_move(c.uffd(), c.staging(0), c.work(0), kPageSize, 0, &moved) == -EINVAL);
	CHECK(moved == 0);
	// The page stayed where it was, and the pager's other ioctls work
	// across processes (COPY, WRITEPROTECT: the pager uses them today).
	CHECK(c.peek(c.work(0)) == filled(0));
}

TEST_CASE("the client's UFFDIO_MOVE takes a page out of the work area into staging in one step",
          "[uffd_move]")
{
	if (skip_without_kernel())
		return;
	Client c;
	Reply r = c.call(kMove, c.staging(3), c.work(5), kPageSize, 0);
	REQUIRE(r.result == 0);
	CHECK(r.value == kPageSize);
	// The pager reads the staged page through /proc/PID/mem: present, so
	// no fault, and it holds the work page's content.
	CHECK(c.peek(c.staging(3)) == filled(5));
	CHECK(c.missing_faults.empty());
	// The source is empty again: the client's next read faults MISSING and
	// sees what the pager serves.
	r = c.call(kRead, c.work(5));
	CHECK(r.value == Client::kServed);
	REQUIRE(c.missing_faults.size() == 1);
	CHECK(c.missing_faults[0] == c.work(5));
	// A run of pages moves in one call.
	r = c.call(kMove, c.staging(16), c.work(16), 16 * kPageSize, 0);
	REQUIRE(r.result == 0);
	CHECK(r.value == 16 * kPageSize);
	for (uint64_t i = 16; i < 32; i++)
		CHECK(c.peek(c.staging(i)) == filled(i));
}

TEST_CASE("what UFFDIO_MOVE refuses, and with which errno", "[uffd_move]")
{
	if (skip_without_kernel())
		return;
	SECTION("a destination page that is not empty: EEXIST, nothing moved")
	{
		Client c;
		REQUIRE(c.call(kMove, c.staging(0), c.work(0), kPageSize, 0).result == 0);
		Reply r = c.call(kMove, c.staging(0), c.work(1), kPageSize, 0);
		CHECK(r.result == -EEXIST);
		CHECK(r.value == 0);
		CHECK(c.peek(c.staging(0)) == filled(0));
		CHECK(c.peek(c.work(1)) == filled(1));
	}
	SECTION("a page shared with a child the client forked: EBUSY, until the child is gone")
	{
		Client c;
		REQUIRE(c.call(kFork).result == 0);
		Reply r = c.call(kMove, c.staging(0), c.work(0), kPageSize, 0);
		CHECK(r.result == -EBUSY);
		CHECK(c.peek(c.work(0)) == filled(0));
		// A page the client wrote after the fork is its own copy again.
		REQUIRE(c.call(kWrite, c.work(2), 42).result == 0);
		CHECK(c.call(kMove, c.staging(2), c.work(2), kPageSize, 0).result == 0);
	}
	SECTION("a destination not registered on the uffd: EINVAL")
	{
		ClientOptions o;
		o.register_staging = false;
		Client c(o);
		Reply r = c.call(kMove, c.staging(0), c.work(0), kPageSize, 0);
		CHECK(r.result == -EINVAL);
		CHECK(c.peek(c.work(0)) == filled(0));
	}
	SECTION("a memfd (MAP_SHARED) source: EINVAL")
	{
		ClientOptions o;
		o.memfd_work = true;
		Client c(o);
		Reply r = c.call(kMove, c.staging(0), c.work(0), kPageSize, 0);
		CHECK(r.result == -EINVAL);
		CHECK(c.peek(c.work(0)) == filled(0));
	}
	SECTION("an empty staging slot a write scan protected holds a uffd-wp marker: EEXIST")
	{
		ClientOptions o;
		o.features = kAsyncFeatures;
		o.work_mode = kWp;
		o.staging_mode = kWp;
		Client c(o);
		// PM_SCAN_WP_MATCHING write-protects the empty entries it matches
		// by installing markers; a marker is not "empty" to MOVE.
		protect_all(c.pagemap(), c.staging(0), c.staging(1));
		Reply r = c.call(kMove, c.staging(0), c.work(0), kPageSize, 0);
		CHECK(r.result == -EEXIST);
		// MADV_DONTNEED clears the marker (so would a scan without
		// WP_MATCHING never have set it).
		REQUIRE(c.call(kDontneed, c.staging(0), kPageSize).result == 0);
		CHECK(c.call(kMove, c.staging(0), c.work(0), kPageSize, 0).result == 0);
	}
	SECTION("a source entry holding a uffd-wp marker: EFAULT")
	{
		ClientOptions o;
		o.features = kAsyncFeatures;
		o.work_mode = kWp;
		o.staging_mode = kWp;
		Client c(o);
		REQUIRE(c.call(kMove, c.staging(0), c.work(0), kPageSize, 0).result == 0);
		protect_all(c.pagemap(), c.work(0), c.work(1));
		CHECK(c.call(kMove, c.staging(1), c.work(0), kPageSize, 0).result == -EFAULT);
		// The page is still "missing" to a read: the pager serves it.
		CHECK(c.call(kRead, c.work(0)).value == Client::kServed);
		CHECK(c.missing_faults.size() == 1);
	}
	SECTION("a missing source page: ENOENT, unless ALLOW_SRC_HOLES skips it")
	{
		Client c;
		REQUIRE(c.call(kMove, c.staging(0), c.work(0), kPageSize, 0).result == 0);
		Reply r = c.call(kMove, c.staging(1), c.work(0), 2 * kPageSize, 0);
		CHECK(r.result == -ENOENT);
		r = c.call(kMove, c.staging(1), c.work(0), 2 * kPageSize,
		           UFFDIO_MOVE_MODE_ALLOW_SRC_HOLES);
		CHECK(r.result == 0);
		CHECK(r.value == 2 * kPageSize);
		CHECK(c.peek(c.staging(2)) == filled(1));
	}
}

TEST_CASE("the uffd-wp bit does not survive UFFDIO_MOVE", "[uffd_move]")
{
	if (skip_without_kernel())
		return;
	ClientOptions o;
	o.features = UFFD_FEATURE_MOVE | UFFD_FEATURE_PAGEFAULT_FLAG_WP;
	o.work_mode = kWp;
	o.staging_mode = kWp;
	Client c(o);
	REQUIRE(uffd_writeprotect(c.uffd(), c.work(0), kPageSize, true, false) == 0);
	// The source is write-protected: a write there faults.
	REQUIRE(c.call(kWrite, c.work(1), 7).result == 0);
	CHECK(c.wp_faults.empty());
	REQUIRE(uffd_writeprotect(c.uffd(), c.work(1), kPageSize, true, false) == 0);
	REQUIRE(c.call(kWrite, c.work(1), 8).result == 0);
	CHECK(c.wp_faults.size() == 1);
	c.wp_faults.clear();
	REQUIRE(c.call(kMove, c.staging(0), c.work(0), kPageSize, 0).result == 0);
	// The kernel builds the destination entry afresh from the staging
	// area's protection (mm/userfaultfd.c move_present_pte): writable, no
	// uffd-wp. A write to the staged page raises nothing.
	REQUIRE(c.call(kWrite, c.staging(0), 9).result == 0);
	CHECK(c.wp_faults.empty());
	CHECK(c.peek(c.staging(0)) == 9);
}

TEST_CASE("WP_ASYNC and PAGEMAP_SCAN find, across processes, the pages a client wrote",
          "[uffd_move]")
{
	if (skip_without_kernel())
		return;
	ClientOptions o;
	o.features = kAsyncFeatures;
	o.work_mode = kWp;
	o.staging_mode = kWp;
	Client c(o);
	const uint64_t begin = c.work(0), end = c.work(kPages);
	// Freshly registered pages carry no uffd-wp bit: all read as written
	// until the first scan protects them.
	CHECK(c.written(begin, end, true) ==
	      std::vector<std::pair<uint64_t, uint64_t>>{{begin, end}});
	CHECK(c.written(begin, end, false).empty());
	for (uint64_t i : {3, 4, 5, 40})
		REQUIRE(c.call(kWrite, c.work(i), 100 + i).result == 0);
	// No message: the kernel resolved the writes itself.
	CHECK(c.wp_faults.empty());
	auto runs = c.written(begin, end, true);
	CHECK(runs == std::vector<std::pair<uint64_t, uint64_t>>{{c.work(3), c.work(6)},
	                                                         {c.work(40), c.work(41)}});
	// The scan protected them again, atomically: the next finds nothing
	// until the client writes again.
	CHECK(c.written(begin, end, true).empty());
	REQUIRE(c.call(kWrite, c.work(4), 1).result == 0);
	CHECK(c.written(begin, end, true) ==
	      std::vector<std::pair<uint64_t, uint64_t>>{{c.work(4), c.work(5)}});
	// A page the pager installs with UFFDIO_COPY_MODE_WP starts clean; one
	// installed without it reads as written at once.
	REQUIRE(c.call(kMove, c.staging(0), c.work(10), 2 * kPageSize, 0).result == 0);
	c.serve_wp = true;
	REQUIRE(c.call(kRead, c.work(10)).value == Client::kServed);
	c.serve_wp = false;
	REQUIRE(c.call(kRead, c.work(11)).value == Client::kServed);
	CHECK(c.written(begin, end, false) ==
	      std::vector<std::pair<uint64_t, uint64_t>>{{c.work(11), c.work(12)}});
	REQUIRE(c.call(kWrite, c.work(10), 1).result == 0);
	CHECK(c.wp_faults.empty());
	CHECK(c.written(begin, end, false) ==
	      std::vector<std::pair<uint64_t, uint64_t>>{{c.work(10), c.work(12)}});
	// A range not under async write-protection is an error, not "clean".
	ClientOptions plain;
	Client p(plain);
	int r = for_each_written_run(p.pagemap(), p.work(0), p.work(kPages), false,
	                             [](uint64_t, uint64_t) {});
	CHECK(r == -EPERM);
}

TEST_CASE("a write between the scan and the move leaves no bit: only the content tells",
          "[uffd_move]")
{
	if (skip_without_kernel())
		return;
	ClientOptions o;
	o.features = kAsyncFeatures;
	o.work_mode = kWp;
	o.staging_mode = kWp;
	Client c(o);
	const uint64_t begin = c.work(0), end = c.work(kPages);
	c.written(begin, end, true);

	SECTION("deterministically: scan, write, move")
	{
		// Page 0 is clean at the scan; the client writes it; the pager
		// moves it (with page 1, untouched, as the control).
		CHECK(c.written(begin, end, true).empty());
		REQUIRE(c.call(kWrite, c.work(0) + 8, 77).result == 0);
		CHECK(c.is_written(c.work(0)));
		REQUIRE(c.call(kMove, c.staging(0), c.work(0), 2 * kPageSize, 0).result == 0);
		// The staged content has the write...
		CHECK(c.peek(c.staging(0), 1) == 77);
		// ...but no bit tells it apart from the untouched page: both staged
		// entries read as written (no uffd-wp), the source entries are
		// empty, and the kernel sets soft-dirty on every moved entry.
		CHECK(c.is_written(c.staging(0)));
		CHECK(c.is_written(c.staging(1)));
		CHECK(c.written(c.work(0), c.work(2), false).empty());
	}
	SECTION("racing: a writer runs while the pager scans, moves and decides by content")
	{
		// The pager's copy of each page (what the module holds), starting
		// from the filled pattern; the scan says which pages changed; a page
		// the scan calls clean is compared with that copy after the move.
		// Counting the pages where the two disagree shows the window is
		// real; the content rule never loses a write. A fault on the page
		// being moved waits for the move's reply: if the page moved, the
		// staged content is the truth, else the module's copy is.
		std::vector<std::vector<uint64_t>> module(kPages, std::vector<uint64_t>(2));
		for (uint64_t i = 0; i < kPages; i++)
			module[i] = {filled(i), uint64_t(0x0101010101010101ull * (i & 0xff))};
		c.serve = [&](uint64_t addr) { return module[(addr - begin) / kPageSize]; };
		REQUIRE(c.call(kStress, begin, 1, kArea).result == 0);
		uint64_t scan_missed = 0, moved = 0, moved_despite_error = 0;
		for (int round = 0; round < 200; round++) {
			uint64_t i = uint64_t(round) % kPages, slot = uint64_t(round) % kPages;
			if (round % 8 == 0) // the writer runs however the CPUs are shared
				REQUIRE(c.call(kStress, 0, 2).result == 0);
			bool scan_written = !c.written(c.work(i), c.work(i + 1), true).empty();
			c.defer = [&](uint64_t addr) { return addr == c.work(i); };
			Reply r = c.call(kMove, c.staging(slot), c.work(i), kPageSize, 0);
			// On an error the pagemap says where the page is: under a
			// concurrent write, 6.18 has answered EEXIST for a page it
			// had moved (its retry found its own work in the slot).
			bool in_slot = r.result == 0 ||
			               (c.present(c.staging(slot)) && !c.present(c.work(i)));
			if (r.result != 0 && in_slot)
				moved_despite_error++;
			if (in_slot) {
				moved++;
				std::vector<uint64_t> staged = {c.peek(c.staging(slot), 0),
				                                c.peek(c.staging(slot), 1)};
				bool content_dirty = staged != module[i];
				if (content_dirty && !scan_written)
					scan_missed++;
				if (content_dirty)
					module[i] = staged; // "written back"
				// The slot is emptied; the next touch of page i is
				// served from the module's copy.
				REQUIRE(c.call(kDontneed, c.staging(slot), kPageSize).result == 0);
			} else {
				// Evicted before and not touched since.
				REQUIRE(r.result == -ENOENT);
			}
			c.defer = [](uint64_t) { return false; };
			c.serve_deferred();
		}
		Reply stop = c.call(kStress, 0, 0);
		WARN("moved " << moved << " pages under " << stop.value << " writes; "
		              << scan_missed
		              << " were written between the scan and the move, invisible to the "
		              << "scan: a write-back by the scan alone would have lost them; "
		              << moved_despite_error << " moved although MOVE reported an error");
		CHECK(moved > 0);
		CHECK(stop.value > 0);
		// Deciding by content, the client never saw a lost write.
		CHECK(stop.aux == 0);
	}
}

TEST_CASE("only the client can empty its staging area", "[uffd_move]")
{
	if (skip_without_kernel())
		return;
	Client c;
	REQUIRE(c.call(kMove, c.staging(0), c.work(0), kPageSize, 0).result == 0);
	// The pager cannot: process_madvise() takes MADV_DONTNEED from the
	// process itself only (mm/madvise.c process_madvise_remote_valid:
	// COLD, PAGEOUT, WILLNEED, COLLAPSE), and a MOVE out of it is cross-mm.
	int pidfd = static_cast<int>(syscall(SYS_pidfd_open, c.pid(), 0));
	REQUIRE(pidfd >= 0);
	iovec iov{reinterpret_cast<void *>(c.staging(0)), kPageSize};
	long r = syscall(SYS_process_madvise, pidfd, &iov, 1, MADV_DONTNEED, 0);
	CHECK(r == -1);
	CHECK(errno == EINVAL);
	close(pidfd);
	CHECK(c.peek(c.staging(0)) == filled(0));
	// The client can, in one call for the whole area; the slot takes a
	// move again.
	REQUIRE(c.call(kDontneed, c.staging(0), kArea).result == 0);
	CHECK(c.call(kMove, c.staging(0), c.work(1), kPageSize, 0).result == 0);
	CHECK(c.peek(c.staging(0)) == filled(1));
}

} // namespace memfed::pager
