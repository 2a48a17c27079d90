// PagerLink's staging area (map_protocol.h, "Staging"): the evictor serving
// MoveRequests, the staged pages going back to their sources across a
// daemon restart, and the "sync" of their sources before a fork. The link
// is the real one, attached to a fake pager: a thread of this test that
// answers the map protocol's ops, keeps the pager's ends of the uffd and the
// evict channel, and reads the uffd (recording faults and REMOVE events,
// serving nothing itself). The test sends the MoveRequests and resolves the
// faults it wants resolved with UFFDIO_COPY.
#include "libclient/pager_link.h"

#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/control/message.h"
#include "daemon/pager/content_hash.h"
#include "daemon/pager/map_protocol.h"
#include "daemon/pager/uffd.h"
#include "tests/thread_util.h"

using namespace memfed;
using namespace memfed::client;
using memfed::testing::cpus_of;
using memfed::testing::thread_named;
namespace pg = memfed::pager;
using nlohmann::json;

namespace
{

constexpr uint64_t kPage = 4096;
constexpr uint64_t kStagingBytes = uint64_t{pg::kStagingPages} * kPage;
constexpr uint64_t kWorkPages = 64;

class FakePager;
// The one running (set while its thread runs).
std::atomic<FakePager *> g_fake_pager{nullptr};

// How many threads this process has (/proc/self/status), 0 if unknown.
int threads()
{
	FILE *f = fopen("/proc/self/status", "r");
	if (f == nullptr)
		return 0;
	char line[256];
	int n = 0;
	while (fgets(line, sizeof(line), f) != nullptr)
		if (sscanf(line, "Threads: %d", &n) == 1)
			break;
	fclose(f);
	return n;
}

// A fake memfedd pager: see the top of the file.
class FakePager
{
public:
	FakePager()
	{
		// The previous case's link may leave its evictor (a detached
		// thread) still exiting, inside ASan's allocator: this case's
		// forks wait until it is gone (see wait_for_idle_fake_pager).
		for (int i = 0; i < 10000 && threads() > 1; i++)
			usleep(1000);
		path_ = "/tmp/memfed-pager-link-test-" + std::to_string(getpid()) + ".sock";
		unlink(path_.c_str());
		listen_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
		sockaddr_un a{};
		a.sun_family = AF_UNIX;
		std::strncpy(a.sun_path, path_.c_str(), sizeof(a.sun_path) - 1);
		REQUIRE(bind(listen_, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0);
		REQUIRE(listen(listen_, 4) == 0);
		stop_ = eventfd(0, EFD_CLOEXEC);
		thread_ = std::thread([this] { loop(); });
		g_fake_pager = this;
	}

	~FakePager() { stop(); }

	void stop()
	{
		if (!thread_.joinable())
			return;
		g_fake_pager = nullptr;
		uint64_t one = 1;
		(void)!write(stop_, &one, sizeof(one));
		thread_.join();
		for (int fd : {listen_, conn_, other_, evict_, uffd_, window_uffd_, memfd_, stop_})
			if (fd >= 0)
				close(fd);
		unlink(path_.c_str());
	}

	const std::string &path() const { return path_; }

	// Whether the thread waits in poll, with nothing of a request left to
	// free.
	bool idle() const { return idle_.load(); }

	// Waits up to 10 s for `pred` (called with the lock held).
	template <class Pred> bool wait(Pred pred)
	{
		std::unique_lock<std::mutex> lk(mu_);
		return cv_.wait_for(lk, std::chrono::seconds(10), pred);
	}

	// Closes the control connection and the evict channel, as a daemon that
	// dies does; keeps reading the uffd (the next daemon's reads).
	void die()
	{
		std::unique_lock<std::mutex> lk(mu_);
		die_ = true;
		uint64_t one = 1;
		(void)!write(stop_, &one, sizeof(one));
		cv_.wait(lk, [this] { return !die_; });
	}

	int evict_fd()
	{
		std::lock_guard<std::mutex> lk(mu_);
		return evict_;
	}
	int uffd()
	{
		std::lock_guard<std::mutex> lk(mu_);
		return uffd_;
	}
	int window_uffd()
	{
		std::lock_guard<std::mutex> lk(mu_);
		return window_uffd_;
	}
	// The memfd of the last shared "map" it answered.
	int memfd()
	{
		std::lock_guard<std::mutex> lk(mu_);
		return memfd_;
	}

	// Set before the link opens: hello offers "window_uffd", and attaches
	// must bring fds[2].
	std::atomic<bool> offer_window{false};

	// Guarded by mu_ (read them inside wait() or with lock()).
	std::vector<json> attaches;
	std::vector<json> other_attaches;   // by another process (a forked child)
	std::vector<size_t> other_attach_fds; // how many fds each of those brought
	std::vector<uint64_t> window_faults;  // page addresses, read on the window uffd
	std::vector<size_t> removes_at_map; // removes.size() when each "map" came
	std::vector<uint64_t> faults;       // page addresses
	std::vector<std::pair<uint64_t, uint64_t>> removes;
	// Every request, in the order served: (from the test process, body).
	std::vector<std::pair<bool, json>> requests;
	// The test process's next "sync": closes the connection instead of
	// answering (die_on_sync), or is answered with this error.
	bool die_on_sync = false;
	uint64_t content_key = 0; // sent in the attach reply when non-zero
	Code sync_code = Code::kOk;
	std::mutex mu_;

private:
	void loop()
	{
		for (;;) {
			idle_ = true; // the last request's buffers are freed
			pollfd p[6] = {{stop_, POLLIN, 0}, {listen_, POLLIN, 0}, {-1, POLLIN, 0},
			               {-1, POLLIN, 0},    {-1, POLLIN, 0},      {-1, POLLIN, 0}};
			{
				std::lock_guard<std::mutex> lk(mu_);
				p[2].fd = conn_;
				p[3].fd = uffd_;
				p[4].fd = other_;
				p[5].fd = window_uffd_;
			}
			if (poll(p, 6, 1000) <= 0)
				continue;
			idle_ = false;
			if (p[0].revents & POLLIN) {
				uint64_t v;
				(void)!read(stop_, &v, sizeof(v));
				std::lock_guard<std::mutex> lk(mu_);
				if (!die_)
					return;
				for (int *fd : {&conn_, &evict_})
					if (*fd >= 0)
						close(*fd);
				conn_ = evict_ = -1;
				die_ = false;
				cv_.notify_all();
				continue;
			}
			if (p[1].revents & POLLIN) {
				int c = accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
				ucred cr{};
				socklen_t len = sizeof(cr);
				(void)getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &len);
				std::lock_guard<std::mutex> lk(mu_);
				int &slot = cr.pid == getpid() ? conn_ : other_;
				if (slot >= 0)
					close(slot);
				slot = c;
			}
			if (p[2].revents)
				serve(conn_, true);
			if (p[4].revents)
				serve(other_, false);
			if (p[3].revents & POLLIN)
				read_uffd(uffd_, faults);
			if (p[5].revents & POLLIN)
				read_uffd(window_uffd_, window_faults);
		}
	}

	// One request on `conn`: the test process's (`ours`), whose uffd and
	// evict channel are kept, or another's (a forked child), whose attach
	// and map are recorded and answered and whose fds are closed.
	void serve(int &conn, bool ours)
	{
		auto m = control::recv_message(conn);
		std::lock_guard<std::mutex> lk(mu_);
		if (!m) {
			close(conn);
			conn = -1;
			return;
		}
		std::string op = m->body.value("op", "");
		requests.push_back({ours, m->body});
		control::Message rep = control::ok_reply();
		if (op == pg::kOpSync && ours && die_on_sync) {
			die_on_sync = false;
			for (int *fd : {&conn_, &evict_})
				if (*fd >= 0)
					close(*fd);
			conn_ = evict_ = -1;
			cv_.notify_all();
			return;
		}
		if (op == pg::kOpSync && ours && sync_code != Code::kOk) {
			rep = control::error_reply(Status(sync_code, "the fake pager fails syncs"));
		} else if (op == pg::kOpHello) {
			rep = hello();
		} else if (op == pg::kOpAttach && !ours) {
			other_attaches.push_back(m->body);
			other_attach_fds.push_back(m->fds.size());
			rep = control::ok_reply({{"uffd_id", uint64_t{2}}, {"evict", true}});
		} else if (op == pg::kOpAttach) {
			REQUIRE(m->fds.size() == (offer_window ? 3u : 2u));
			attaches.push_back(m->body);
			if (uffd_ < 0)
				uffd_ = m->fds[0];
			else
				close(m->fds[0]); // the same uffd again
			if (m->fds.size() == 3 && window_uffd_ < 0)
				window_uffd_ = m->fds[2];
			else if (m->fds.size() == 3)
				close(m->fds[2]);
			if (evict_ >= 0)
				close(evict_);
			evict_ = m->fds[1];
			m->fds.clear();
			rep = control::ok_reply({{"uffd_id", uint64_t{1}}, {"evict", true}});
			if (content_key != 0)
				rep.body["content_key"] = content_key;
		} else if (op == pg::kOpMap) {
			if (ours)
				removes_at_map.push_back(removes.size());
			rep = control::ok_reply({{"mapping_id", uint64_t(removes_at_map.size())}});
			if (ours && m->body.value("kind", "") == pg::kKindShared &&
			    m->fds.empty()) {
				// A new window: the pager's memfd, kept to fill pages.
				int fd = memfd_create("fake-window", MFD_CLOEXEC);
				REQUIRE(fd >= 0);
				REQUIRE(ftruncate(fd, off_t(m->body.value("length",
				                                          uint64_t{0}))) == 0);
				if (memfd_ >= 0)
					close(memfd_);
				memfd_ = fd;
				rep.fds = {fd};
			}
		}
		for (int fd : m->fds)
			close(fd);
		(void)control::send_message(conn, rep);
		cv_.notify_all();
	}

	control::Message hello()
	{
		auto caps = pg::probe_uffd();
		uint64_t features = caps ? caps->client_features() : 0;
		control::Message rep = control::ok_reply(
		        {{"uffd_features", features & ~uint64_t(UFFD_FEATURE_EVENT_FORK)},
		         {"private_register_mode", uint64_t{UFFDIO_REGISTER_MODE_MISSING}},
		         {"shared_register_mode", uint64_t{UFFDIO_REGISTER_MODE_MISSING}},
		         {"wp", false},
		         {"minor_shmem", false},
		         {"move", caps && caps->move},
		         {"page_size", kPage},
		         {"version", pg::kMapProtocolVersion}});
		if (offer_window)
			rep.body["window_uffd"] = true;
		return rep;
	}

	// Reads `fd` (the uffd or the window uffd), recording its faults in
	// `into`.
	void read_uffd(int fd, std::vector<uint64_t> &into)
	{
		uffd_msg msgs[16];
		ssize_t n = read(fd, msgs, sizeof(msgs));
		if (n <= 0)
			return;
		std::lock_guard<std::mutex> lk(mu_);
		for (size_t i = 0; i < size_t(n) / sizeof(uffd_msg); i++) {
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				into.push_back(msgs[i].arg.pagefault.address & ~(kPage - 1));
			else if (msgs[i].event == UFFD_EVENT_REMOVE)
				removes.push_back({uint64_t(msgs[i].arg.remove.start),
				                   uint64_t(msgs[i].arg.remove.end)});
		}
		cv_.notify_all();
	}

	std::string path_;
	int listen_ = -1, conn_ = -1, other_ = -1, evict_ = -1, uffd_ = -1, stop_ = -1;
	int window_uffd_ = -1, memfd_ = -1;
	bool die_ = false;
	std::atomic<bool> idle_{true};
	std::condition_variable cv_;
	std::thread thread_;
};

// ASan as built here (clang 14) holds no lock of its allocator across
// fork(): a child forked while another thread is inside the allocator waits
// forever at its first allocation. The fake pager's thread frees a
// request's buffers just after replying, when the link may go on from
// fork_prepare to fork(); so a fork first waits (up to 10 s) until that
// thread is back in poll (and FakePager() waits for the previous case's
// threads to be gone). Registered at static initialisation, before any
// link's handlers, this prepare handler runs after theirs.
void wait_for_idle_fake_pager()
{
	FakePager *fp = g_fake_pager.load();
	for (int i = 0; fp != nullptr && !fp->idle() && i < 10000; i++)
		usleep(1000);
}
[[maybe_unused]] const int g_atfork = pthread_atfork(wait_for_idle_fake_pager, nullptr, nullptr);

// The content the test gives page `i` in generation `gen`.
uint64_t word(uint64_t i, uint64_t gen)
{
	return (i << 32) | (gen << 8) | 0x5a;
}

void fill(uint64_t addr, uint64_t value)
{
	auto *w = reinterpret_cast<uint64_t *>(addr);
	for (size_t k = 0; k < kPage / 8; k++)
		w[k] = value;
}

bool holds(uint64_t addr, uint64_t value)
{
	auto *w = reinterpret_cast<const uint64_t *>(addr);
	for (size_t k = 0; k < kPage / 8; k++)
		if (w[k] != value)
			return false;
	return true;
}

// Whether each page of [addr, addr+pages*kPage) is present.
std::vector<bool> present(uint64_t addr, uint64_t pages)
{
	std::vector<unsigned char> v(pages);
	REQUIRE(mincore(reinterpret_cast<void *>(addr), pages * kPage, v.data()) == 0);
	std::vector<bool> out(pages);
	for (uint64_t i = 0; i < pages; i++)
		out[i] = v[i] & 1;
	return out;
}

size_t count_present(uint64_t addr, uint64_t pages)
{
	auto v = present(addr, pages);
	return size_t(std::count(v.begin(), v.end(), true));
}

struct Request {
	std::vector<pg::DropRange> empty;
	std::vector<pg::MoveRun> runs;
	uint32_t n_runs_claimed = UINT32_MAX; // the header's n_runs if not runs.size()
	int64_t extra_bytes = 0;              // added to the packet's size
	uint32_t flags = 0;
};

// Sends `r` on the evict channel and returns the reply's results (and its
// content hashes in *hashes, which may be null when none are expected).
std::vector<int64_t> send_move(int fd, uint64_t seq, const Request &r,
                               std::vector<uint64_t> *hashes = nullptr)
{
	auto req = std::make_unique<pg::MoveRequest>();
	std::memset(req.get(), 0, sizeof(*req));
	req->magic = pg::kMoveRequestMagic;
	req->seq = seq;
	req->n_empty = uint32_t(r.empty.size());
	req->n_runs = uint32_t(r.runs.size());
	req->flags = r.flags;
	for (uint32_t i = 0; i < req->n_empty; i++)
		req->set_empty(i, r.empty[i]);
	for (uint32_t i = 0; i < req->n_runs; i++)
		req->set_run(i, r.runs[i]);
	uint64_t size = pg::move_request_size(req->n_empty, req->n_runs) + uint64_t(r.extra_bytes);
	if (r.n_runs_claimed != UINT32_MAX)
		req->n_runs = r.n_runs_claimed;
	REQUIRE(send(fd, req.get(), size, MSG_NOSIGNAL) == ssize_t(size));
	pollfd p = {fd, POLLIN, 0};
	REQUIRE(poll(&p, 1, 10000) == 1);
	pg::MoveReply rep{};
	ssize_t n = recv(fd, &rep, sizeof(rep), 0);
	REQUIRE(n >= ssize_t(pg::move_reply_size(0)));
	CHECK(rep.magic == pg::kMoveReplyMagic);
	CHECK(rep.seq == seq);
	REQUIRE(uint64_t(n) >= pg::move_reply_size(rep.n_runs));
	uint32_t n_hashes = uint32_t((uint64_t(n) - pg::move_reply_size(rep.n_runs)) / 8);
	REQUIRE(uint64_t(n) == pg::move_reply_size(rep.n_runs, n_hashes));
	if (hashes == nullptr)
		REQUIRE(n_hashes == 0);
	else
		for (uint32_t k = 0; k < n_hashes; k++)
			hashes->push_back(rep.hash(k));
	return std::vector<int64_t>(rep.result, rep.result + rep.n_runs);
}

// Reads the first word of `addr` on another thread (a fault there waits for
// the pager).
class Reader
{
public:
	explicit Reader(uint64_t addr)
	{
		thread_ = std::thread([this, addr] {
			value_ = *reinterpret_cast<volatile uint64_t *>(addr);
			done_ = true;
		});
	}
	~Reader()
	{
		if (thread_.joinable())
			thread_.join();
	}
	// Waits up to 10 s for the read; false if it still waits.
	bool done()
	{
		for (int i = 0; i < 1000 && !done_; i++)
			std::this_thread::sleep_for(std::chrono::milliseconds(10));
		return done_;
	}
	uint64_t value() const { return value_; }

private:
	std::thread thread_;
	std::atomic<bool> done_{false};
	uint64_t value_ = 0;
};

struct Fixture {
	FakePager fp;
	std::unique_ptr<PagerLink> link;
	uint64_t work = 0, staging = 0;
	bool move = false;

	explicit Fixture(bool handle_fork = false, uint64_t content_key = 0)
	{
		fp.content_key = content_key;
		auto caps = pg::probe_uffd();
		REQUIRE(caps.is_ok());
		move = caps->move;
		if (!move) {
			WARN("this kernel has no UFFDIO_MOVE: nothing to test");
			return;
		}
		PagerLink::Options o;
		o.socket_path = fp.path();
		o.handle_fork = handle_fork;
		auto l = PagerLink::open(o);
		REQUIRE(l.is_ok());
		link = std::move(*l);
		void *p = mmap(nullptr, kWorkPages * kPage, PROT_READ | PROT_WRITE,
		               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		REQUIRE(p != MAP_FAILED);
		work = reinterpret_cast<uint64_t>(p);
		REQUIRE(madvise(p, kWorkPages * kPage, MADV_NOHUGEPAGE) == 0);
		for (uint64_t i = 0; i < kWorkPages; i++)
			fill(page(i), word(i, 1));
		REQUIRE(link->map_private("work", work, kWorkPages * kPage, 0, {}).is_ok());
		staging = link->staging_addr();
		REQUIRE(staging != 0);
	}

	~Fixture()
	{
		// Both copies of the uffd closed first: munmap of a registered
		// range would wait for a pager to read its event.
		link.reset();
		fp.stop();
		if (work)
			munmap(reinterpret_cast<void *>(work), kWorkPages * kPage);
	}

	uint64_t page(uint64_t i) const { return work + i * kPage; }
	uint64_t slot(uint64_t i) const { return staging + i * kPage; }

	std::vector<int64_t> send(uint64_t seq, const Request &r)
	{
		return send_move(fp.evict_fd(), seq, r);
	}

	// The staging table as (slot, source) pairs of its full slots.
	std::vector<std::pair<uint64_t, uint64_t>> table() const
	{
		std::vector<std::pair<uint64_t, uint64_t>> out;
		auto t = link->staged();
		for (uint64_t i = 0; i < t.size(); i++)
			if (t[i])
				out.push_back({i, t[i]});
		return out;
	}

	// Resolves the fault the fake pager read at `addr` with a page of
	// `value`.
	void serve(uint64_t addr, uint64_t value)
	{
		REQUIRE(fp.wait([&] {
			return std::find(fp.faults.begin(), fp.faults.end(), addr) !=
			       fp.faults.end();
		}));
		std::vector<uint64_t> buf(kPage / 8, value);
		REQUIRE(pg::uffd_copy(fp.uffd(), addr, buf.data(), kPage, false, nullptr) == 0);
	}
};

using Table = std::vector<std::pair<uint64_t, uint64_t>>;

// Forks; the child returns from fork() through the link's fork handlers,
// runs `child` and exits with what it returns. `child` must not touch a
// page the child lacks (nothing serves the child's faults). The child's
// exit status, -1 if it did not exit, -2 if it still ran after 30 s (it
// is killed then).
template <class F> int fork_and_wait(F child)
{
	pid_t pid = fork();
	REQUIRE(pid >= 0);
	if (pid == 0)
		_exit(child());
	int status = 0;
	for (int i = 0; i < 3000; i++) {
		pid_t r = waitpid(pid, &status, WNOHANG);
		REQUIRE(r >= 0);
		if (r == pid)
			return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
		usleep(10000);
	}
	kill(pid, SIGKILL);
	(void)waitpid(pid, &status, 0);
	return -2;
}

using Sync = std::array<uint64_t, 3>; // mapping_id, offset, length

// The test process's "sync" requests from its `from`th request on: those
// the fake pager served before the first request of another process (the
// forked child), and those after.
std::pair<std::vector<Sync>, std::vector<Sync>> syncs_around_child(FakePager &fp, size_t from)
{
	std::lock_guard<std::mutex> lk(fp.mu_);
	std::pair<std::vector<Sync>, std::vector<Sync>> out;
	bool child = false;
	for (size_t i = from; i < fp.requests.size(); i++) {
		const auto &[ours, body] = fp.requests[i];
		child = child || !ours;
		if (!ours || body.value("op", "") != pg::kOpSync)
			continue;
		(child ? out.second : out.first)
		        .push_back({body["mapping_id"].get<uint64_t>(),
		                    body["offset"].get<uint64_t>(),
		                    body["length"].get<uint64_t>()});
	}
	return out;
}

size_t requests_so_far(FakePager &fp)
{
	std::lock_guard<std::mutex> lk(fp.mu_);
	return fp.requests.size();
}

} // namespace

TEST_CASE("attach carries the staging area", "[pager_link]")
{
	Fixture f;
	if (!f.move)
		return;
	std::lock_guard<std::mutex> lk(f.fp.mu_);
	REQUIRE(f.fp.attaches.size() == 1);
	const json &a = f.fp.attaches[0];
	REQUIRE(a.contains("staging"));
	CHECK(a["staging"]["addr"].get<uint64_t>() == f.staging);
	CHECK(a["staging"]["len"].get<uint64_t>() == kStagingBytes);
	CHECK((a["features"].get<uint64_t>() & UFFD_FEATURE_MOVE) != 0);
	CHECK(count_present(f.staging, pg::kStagingPages) == 0);
}

TEST_CASE("the evictor hashes the pages of the runs it moved whole, when asked", "[pager_link]")
{
	// Under WP_ASYNC the pager tells a written page by its content: the
	// evictor, which reads its own memory, hashes each page it moved with
	// the key "attach" gave it, in run order, runs that did not move whole
	// left out.
	constexpr uint64_t kKey = 0x5eed5eed12345678;
	Fixture f(false, kKey);
	if (!f.move)
		return;
	Request r{{},
	          {{f.page(2), 2 * kPage, f.slot(0)},
	           {f.page(20), kPage, f.slot(1)}, // full by then: EEXIST
	           {f.page(9), kPage, f.slot(3)}}};
	r.flags = pg::kMoveWantHashes;
	std::vector<uint64_t> hashes;
	auto res = send_move(f.fp.evict_fd(), 1, r, &hashes);
	CHECK(res == std::vector<int64_t>{int64_t(2 * kPage), -EEXIST, int64_t(kPage)});
	REQUIRE(hashes.size() == 3);
	for (uint32_t k = 0; k < 3; k++) {
		uint64_t slot = f.slot(k < 2 ? k : 3);
		CHECK(hashes[k] == pg::content_hash(reinterpret_cast<const void *>(slot), kKey));
	}
	CHECK(holds(f.slot(3), word(9, 1)));
	CHECK(hashes[0] != hashes[1]);
	CHECK(hashes[0] != pg::content_hash(reinterpret_cast<const void *>(f.slot(0)), kKey + 1));
	// Not asked: none.
	res = f.send(2, {{}, {{f.page(12), kPage, f.slot(4)}}});
	CHECK(res == std::vector<int64_t>{int64_t(kPage)});
}

TEST_CASE("the evictor moves runs into staging and replies per run", "[pager_link]")
{
	Fixture f;
	if (!f.move)
		return;
	// Two runs: pages 2..4 into slots 0..2, page 10 into slot 5.
	auto res = f.send(
	        1, {{}, {{f.page(2), 3 * kPage, f.slot(0)}, {f.page(10), kPage, f.slot(5)}}});
	CHECK(res == std::vector<int64_t>{int64_t(3 * kPage), int64_t(kPage)});
	CHECK(present(f.page(2), 3) == std::vector<bool>{false, false, false});
	CHECK_FALSE(present(f.page(10), 1)[0]);
	CHECK(present(f.slot(0), 6) == std::vector<bool>{true, true, true, false, false, true});
	for (uint64_t k = 0; k < 3; k++)
		CHECK(holds(f.slot(k), word(2 + k, 1)));
	CHECK(holds(f.slot(5), word(10, 1)));
	CHECK(f.table() == Table{{0, f.page(2)}, {1, f.page(3)}, {2, f.page(4)}, {5, f.page(10)}});

	// A moved page is gone from its source: the next access faults MISSING.
	{
		Reader r(f.page(3));
		f.serve(f.page(3), word(3, 2));
		REQUIRE(r.done());
		CHECK(r.value() == word(3, 2));
	}

	// A full slot refuses the move (EEXIST), and the source keeps its page.
	res = f.send(2, {{}, {{f.page(20), kPage, f.slot(1)}, {f.page(21), kPage, f.slot(6)}}});
	CHECK(res == std::vector<int64_t>{-EEXIST, int64_t(kPage)});
	CHECK(present(f.page(20), 1)[0]);
	CHECK(holds(f.page(20), word(20, 1)));
	CHECK(holds(f.slot(1), word(3, 1)));
	CHECK(f.table() == Table{{0, f.page(2)},
	                         {1, f.page(3)},
	                         {2, f.page(4)},
	                         {5, f.page(10)},
	                         {6, f.page(21)}});

	// A run stops at the first full slot: the pages before it moved.
	res = f.send(3, {{}, {{f.page(30), 3 * kPage, f.slot(4)}}});
	CHECK(res == std::vector<int64_t>{-EEXIST});
	CHECK(present(f.page(30), 3) == std::vector<bool>{false, true, true});
	CHECK(holds(f.slot(4), word(30, 1)));
	// A missing source page is ENOENT, and fills no slot.
	res = f.send(4, {{}, {{f.page(30), kPage, f.slot(7)}}});
	CHECK(res == std::vector<int64_t>{-ENOENT});
	CHECK_FALSE(present(f.slot(7), 1)[0]);
	CHECK(f.table() == Table{{0, f.page(2)},
	                         {1, f.page(3)},
	                         {2, f.page(4)},
	                         {4, f.page(30)},
	                         {5, f.page(10)},
	                         {6, f.page(21)}});

	// Slots listed to empty are emptied before the runs move.
	size_t removes_before;
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		removes_before = f.fp.removes.size();
	}
	res = f.send(5, {{{f.slot(0), 3 * kPage}}, {{f.page(20), kPage, f.slot(1)}}});
	CHECK(res == std::vector<int64_t>{int64_t(kPage)});
	CHECK(present(f.slot(0), 3) == std::vector<bool>{false, true, false});
	CHECK(holds(f.slot(1), word(20, 1)));
	CHECK(f.table() ==
	      Table{{1, f.page(20)}, {4, f.page(30)}, {5, f.page(10)}, {6, f.page(21)}});
	// Its REMOVE event reached the pager, inside the staging area. (The
	// madvise returns once the fake pager's read of the uffd has, which
	// is before that thread records the event.)
	REQUIRE(f.fp.wait([&] { return f.fp.removes.size() > removes_before; }));
	std::lock_guard<std::mutex> lk(f.fp.mu_);
	REQUIRE(f.fp.removes.size() == removes_before + 1);
	CHECK(f.fp.removes.back() == std::pair<uint64_t, uint64_t>{f.slot(0), f.slot(3)});
}

TEST_CASE("an invalid move request is refused whole", "[pager_link]")
{
	Fixture f;
	if (!f.move)
		return;
	pg::MoveRun good{f.page(1), kPage, f.slot(0)};
	struct Case {
		const char *what;
		Request req;
		size_t runs; // results expected
	} cases[] = {
	        {"a source outside every private mapping",
	         {{}, {good, {f.page(kWorkPages), kPage, f.slot(1)}}},
	         2},
	        {"a source run past the mapping's end",
	         {{}, {good, {f.page(kWorkPages - 1), 2 * kPage, f.slot(1)}}},
	         2},
	        {"a source in the staging area", {{}, {good, {f.slot(9), kPage, f.slot(1)}}}, 2},
	        {"slots past the staging area",
	         {{}, {good, {f.page(2), 2 * kPage, f.slot(pg::kStagingPages - 1)}}},
	         2},
	        {"a misaligned source", {{}, {good, {f.page(2) + 8, kPage, f.slot(1)}}}, 2},
	        {"a zero length", {{}, {good, {f.page(2), 0, f.slot(1)}}}, 2},
	        {"a range to empty in the work area", {{{f.page(5), kPage}}, {good}}, 1},
	        {"a size that does not match the counts", {{}, {good}, UINT32_MAX, 8}, 1},
	        {"more runs than the protocol allows",
	         {{}, {good}, pg::kMaxMoveRuns + 1},
	         pg::kMaxMoveRuns},
	        {"nothing at all", {{}, {}}, 0},
	};
	uint64_t seq = 1;
	for (const Case &c : cases) {
		INFO(c.what);
		auto res = f.send(seq++, c.req);
		CHECK(res == std::vector<int64_t>(c.runs, -EINVAL));
		// Nothing moved, nothing emptied.
		CHECK(count_present(f.work, kWorkPages) == kWorkPages);
		CHECK(count_present(f.staging, pg::kStagingPages) == 0);
		CHECK(f.table().empty());
	}
	// The channel still serves valid requests.
	CHECK(f.send(seq, {{}, {good}}) == std::vector<int64_t>{int64_t(kPage)});
	CHECK(f.table() == Table{{0, f.page(1)}});
}

TEST_CASE("a daemon restart moves staged pages back to their sources", "[pager_link]")
{
	Fixture f;
	if (!f.move)
		return;
	const uint64_t a = f.page(1), b = f.page(2);
	auto res = f.send(1, {{}, {{a, kPage, f.slot(0)}, {b, kPage, f.slot(1)}}});
	REQUIRE(res == std::vector<int64_t>{int64_t(kPage), int64_t(kPage)});
	// The pager served a fault on b from the staged bytes, newer since:
	// b's source holds content that must win over its slot.
	{
		Reader r(b);
		f.serve(b, word(2, 2));
		REQUIRE(r.done());
	}
	// A thread faults on a and is left waiting by the dying pager.
	Reader ra(a);
	REQUIRE(f.fp.wait([&] {
		return std::find(f.fp.faults.begin(), f.fp.faults.end(), a) != f.fp.faults.end();
	}));
	f.fp.die();
	REQUIRE(f.fp.wait([&] { return f.fp.removes_at_map.size() == 2; }));
	for (int i = 0; i < 1000 && f.link->reconnects() == 0; i++)
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	REQUIRE(f.link->reconnects() == 1);

	// The move back woke the waiting thread (the fake pager never wakes
	// anyone), and it read the staged content.
	REQUIRE(ra.done());
	CHECK(ra.value() == word(1, 1));
	CHECK(holds(a, word(1, 1)));
	// The refilled source kept its newer content.
	CHECK(holds(b, word(2, 2)));
	// Every slot is empty, and was before the first "map" (its REMOVE
	// event had been read when the map came).
	CHECK(count_present(f.staging, pg::kStagingPages) == 0);
	CHECK(f.table().empty());
	std::lock_guard<std::mutex> lk(f.fp.mu_);
	REQUIRE(f.fp.attaches.size() == 2);
	CHECK(f.fp.attaches[1]["staging"]["addr"].get<uint64_t>() == f.staging);
	size_t before = f.fp.removes_at_map[0];
	REQUIRE(f.fp.removes_at_map[1] == before + 1);
	CHECK(f.fp.removes[before] ==
	      std::pair<uint64_t, uint64_t>{f.staging, f.staging + kStagingBytes});
}

TEST_CASE("a program's drop of a staged page's source takes it out of the table", "[pager_link]")
{
	// Its staged bytes are obsolete: a restarted daemon's reattach must not
	// move them back over the dropped page.
	Fixture f;
	if (!f.move)
		return;
	auto res = f.send(1, {{}, {{f.page(2), 3 * kPage, f.slot(0)}}});
	REQUIRE(res == std::vector<int64_t>{int64_t(3 * kPage)});
	REQUIRE(f.table() == Table{{0, f.page(2)}, {1, f.page(3)}, {2, f.page(4)}});
	uint64_t token = f.link->remove_begin(f.page(3), kPage);
	f.link->remove_end(f.page(3), kPage, token);
	CHECK(f.table() == Table{{0, f.page(2)}, {2, f.page(4)}});
	// A drop elsewhere leaves the table as it is.
	token = f.link->remove_begin(f.page(20), 4 * kPage);
	f.link->remove_end(f.page(20), 4 * kPage, token);
	CHECK(f.table() == Table{{0, f.page(2)}, {2, f.page(4)}});
}

TEST_CASE("a forked child maps a staging area of its own", "[pager_link]")
{
	Fixture f(/*handle_fork=*/true);
	if (!f.move)
		return;
	// The parent has a page staged when it forks.
	REQUIRE(f.send(1, {{}, {{f.page(1), kPage, f.slot(0)}}}) ==
	        std::vector<int64_t>{int64_t(kPage)});
	pid_t child = fork();
	REQUIRE(child >= 0);
	if (child == 0) {
		// The parent's staged page did not come along (MADV_DONTFORK);
		// the child's area is its own, empty, and has a table.
		uint64_t s = f.link->staging_addr();
		std::vector<unsigned char> v(pg::kStagingPages);
		bool ok = s != 0 &&
		          mincore(reinterpret_cast<void *>(s), kStagingBytes, v.data()) == 0 &&
		          std::none_of(v.begin(), v.end(), [](unsigned char c) { return c & 1; }) &&
		          f.link->staged() == std::vector<uint64_t>(pg::kStagingPages, 0);
		_exit(ok ? 0 : 1);
	}
	int status = 0;
	REQUIRE(waitpid(child, &status, 0) == child);
	CHECK(WIFEXITED(status));
	CHECK(WEXITSTATUS(status) == 0);
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		REQUIRE(f.fp.other_attaches.size() == 1);
		const json &a = f.fp.other_attaches[0];
		REQUIRE(a.contains("staging"));
		CHECK(a["staging"]["len"].get<uint64_t>() == kStagingBytes);
	}
	// The parent's staging is as it was.
	CHECK(holds(f.slot(0), word(1, 1)));
	CHECK(f.table() == Table{{0, f.page(1)}});
}

TEST_CASE("a fork first syncs the staged pages' sources, one request per run", "[pager_link]")
{
	Fixture f(/*handle_fork=*/true);
	if (!f.move)
		return;
	// Sources 2..4 in slots 0..2 and 5 in slot 3 (two requests, one run of
	// sources); 10 in slot 5 and 11 in slot 7 (apart in staging, adjacent
	// in the heap); 20 alone in slot 6.
	REQUIRE(f.send(1, {{},
	                   {{f.page(2), 3 * kPage, f.slot(0)},
	                    {f.page(10), kPage, f.slot(5)},
	                    {f.page(20), kPage, f.slot(6)}}}) ==
	        std::vector<int64_t>{int64_t(3 * kPage), int64_t(kPage), int64_t(kPage)});
	REQUIRE(f.send(2, {{}, {{f.page(5), kPage, f.slot(3)}, {f.page(11), kPage, f.slot(7)}}}) ==
	        std::vector<int64_t>{int64_t(kPage), int64_t(kPage)});
	const Table staged = f.table();
	REQUIRE(staged.size() == 7);
	size_t from = requests_so_far(f.fp);

	CHECK(fork_and_wait([] { return 0; }) == 0);

	// Mapping 1: the fake pager's id for the test process's only map.
	auto [before_child, after_child] = syncs_around_child(f.fp, from);
	CHECK(before_child == std::vector<Sync>{{1, 2 * kPage, 4 * kPage},
	                                        {1, 10 * kPage, 2 * kPage},
	                                        {1, 20 * kPage, kPage}});
	CHECK(after_child.empty());
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		CHECK(f.fp.other_attaches.size() == 1); // the child came, after them
	}
	// The parent's staging is as it was.
	CHECK(f.table() == staged);
	CHECK(holds(f.slot(7), word(11, 1)));
}

TEST_CASE("a fork with nothing staged sends no sync", "[pager_link]")
{
	Fixture f(/*handle_fork=*/true);
	if (!f.move)
		return;
	// A page was staged, and its slot emptied again.
	REQUIRE(f.send(1, {{}, {{f.page(1), kPage, f.slot(0)}}}) ==
	        std::vector<int64_t>{int64_t(kPage)});
	REQUIRE(f.send(2, {{{f.slot(0), kPage}}, {{f.page(2), kPage, f.slot(1)}}}) ==
	        std::vector<int64_t>{int64_t(kPage)});
	REQUIRE(f.send(3, {{{f.slot(1), kPage}}, {}}).empty());
	REQUIRE(f.table().empty());
	size_t from = requests_so_far(f.fp);

	CHECK(fork_and_wait([] { return 0; }) == 0);

	auto [before_child, after_child] = syncs_around_child(f.fp, from);
	CHECK(before_child.empty());
	CHECK(after_child.empty());
	std::lock_guard<std::mutex> lk(f.fp.mu_);
	CHECK(f.fp.other_attaches.size() == 1);
}

TEST_CASE("memfedd lost during a fork's sync: the reattach moves the staged pages back "
          "and the child inherits them",
          "[pager_link]")
{
	Fixture f(/*handle_fork=*/true);
	if (!f.move)
		return;
	REQUIRE(f.send(1, {{}, {{f.page(1), 2 * kPage, f.slot(0)}}}) ==
	        std::vector<int64_t>{int64_t(2 * kPage)});
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		f.fp.die_on_sync = true;
	}
	size_t from = requests_so_far(f.fp);

	// The child checks that its pages are there before reading them.
	auto child_has_them = [&f] {
		if (present(f.page(1), 2) != std::vector<bool>{true, true})
			return 1;
		return holds(f.page(1), word(1, 1)) && holds(f.page(2), word(2, 1)) ? 0 : 2;
	};
	CHECK(fork_and_wait(child_has_them) == 0);

	CHECK(f.link->reconnects() == 1);
	CHECK(f.table().empty());
	// Checked first: reading a missing page would wait for the fake pager.
	REQUIRE(present(f.page(1), 2) == std::vector<bool>{true, true});
	CHECK(holds(f.page(1), word(1, 1)));
	CHECK(holds(f.page(2), word(2, 1)));
	// The one sync the lost daemon took; nothing was staged after the
	// reattach, so none after it.
	auto [before_child, after_child] = syncs_around_child(f.fp, from);
	CHECK(before_child == std::vector<Sync>{{1, kPage, 2 * kPage}});
	CHECK(after_child.empty());
	std::lock_guard<std::mutex> lk(f.fp.mu_);
	CHECK(f.fp.attaches.size() == 2);
	CHECK(f.fp.other_attaches.size() == 1);
}

TEST_CASE("a fork whose sync fails makes the child exit, not read older content", "[pager_link]")
{
	Fixture f(/*handle_fork=*/true);
	if (!f.move)
		return;
	REQUIRE(f.send(1, {{}, {{f.page(1), kPage, f.slot(0)}}}) ==
	        std::vector<int64_t>{int64_t(kPage)});
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		f.fp.sync_code = Code::kUnavailable;
	}
	size_t from = requests_so_far(f.fp);
	// fork_child exits with 70 before the child's code runs.
	CHECK(fork_and_wait([] { return 0; }) == 70);
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		CHECK(f.fp.other_attaches.empty());
		CHECK(f.fp.requests.size() == from + 1); // the sync only
	}
	// The parent keeps its staged page.
	CHECK(f.table() == Table{{0, f.page(1)}});
	CHECK(holds(f.slot(0), word(1, 1)));

	// not_found (the region was deleted) leaves nothing to make durable:
	// the child goes on (and would fail its clone, as any child would).
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		f.fp.sync_code = Code::kNotFound;
	}
	CHECK(fork_and_wait([] { return 0; }) == 0);
	// Once syncs succeed, so does the next fork.
	{
		std::lock_guard<std::mutex> lk(f.fp.mu_);
		f.fp.sync_code = Code::kOk;
	}
	CHECK(fork_and_wait([] { return 0; }) == 0);
	std::lock_guard<std::mutex> lk(f.fp.mu_);
	CHECK(f.fp.other_attaches.size() == 2);
}

namespace
{

// The UFFDIO_API features of the userfaultfd `fd` of this process, from
// /proc/self/fdinfo ("API:\t<api>:<features>:<ioctls>").
uint64_t uffd_features_of(int fd)
{
	FILE *f = fopen(("/proc/self/fdinfo/" + std::to_string(fd)).c_str(), "r");
	REQUIRE(f != nullptr);
	char line[256];
	unsigned long long api = 0, features = 0;
	bool found = false;
	while (!found && fgets(line, sizeof(line), f) != nullptr)
		found = sscanf(line, "API:\t%llx:%llx", &api, &features) == 2;
	fclose(f);
	REQUIRE(found);
	return features;
}

} // namespace

TEST_CASE("shared windows are on a uffd of their own, attached again after a restart",
          "[pager_link]")
{
	FakePager fp;
	fp.offer_window = true;
	PagerLink::Options o;
	o.socket_path = fp.path();
	o.handle_fork = false;
	auto l = PagerLink::open(o);
	REQUIRE(l.is_ok());
	std::unique_ptr<PagerLink> link = std::move(*l);
	const int u = fp.uffd(), wu = fp.window_uffd();
	REQUIRE(u >= 0);
	REQUIRE(wu >= 0); // the attach brought fds[2]
	// Opened like the private one, less the features a window must not have.
	const uint64_t wf = uffd_features_of(wu);
	CHECK((wf & (UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_EVENT_FORK)) == 0);
	CHECK(wf == (uffd_features_of(u) & ~uint64_t(UFFD_FEATURE_WP_ASYNC)));

	constexpr uint64_t kLen = 4 * kPage;
	auto addr = link->map_shared("win", 0, kLen, true, 0, /*prefetch=*/false, 0);
	REQUIRE(addr.is_ok());
	// Registered on the window uffd: the private one cannot have the range
	// (EBUSY: another uffd's), the window uffd has it already.
	CHECK(pg::uffd_register(u, *addr, kLen, UFFDIO_REGISTER_MODE_MISSING) == -EBUSY);
	CHECK(pg::uffd_register(wu, *addr, kLen, UFFDIO_REGISTER_MODE_MISSING) == 0);

	// A fault in the window comes on the window uffd; filling the memfd and
	// waking it there lets the reader go on.
	{
		Reader r(*addr + kPage);
		REQUIRE(fp.wait([&] { return !fp.window_faults.empty(); }));
		{
			std::lock_guard<std::mutex> lk(fp.mu_);
			CHECK(fp.window_faults[0] == *addr + kPage);
			CHECK(fp.faults.empty());
		}
		std::vector<uint64_t> page(kPage / 8, word(1, 7));
		REQUIRE(pwrite(fp.memfd(), page.data(), kPage, off_t(kPage)) == ssize_t(kPage));
		REQUIRE(pg::uffd_wake(wu, *addr + kPage, kPage) == 0);
		REQUIRE(r.done());
		CHECK(r.value() == word(1, 7));
	}

	// A restarted daemon gets both uffds again (the fake pager checks that
	// the attach brings three fds) and the window again.
	size_t maps = 0;
	{
		std::lock_guard<std::mutex> lk(fp.mu_);
		maps = fp.removes_at_map.size();
	}
	fp.die();
	REQUIRE(fp.wait(
	        [&] { return fp.attaches.size() == 2 && fp.removes_at_map.size() > maps; }));
	CHECK(pg::uffd_register(u, *addr, kLen, UFFDIO_REGISTER_MODE_MISSING) == -EBUSY);

	REQUIRE(link->unmap(*addr).is_ok());
	link.reset();
	fp.stop();
}

TEST_CASE("a forked child attaches a window uffd of its own", "[pager_link]")
{
	FakePager fp;
	fp.offer_window = true;
	PagerLink::Options o;
	o.socket_path = fp.path();
	o.handle_fork = true;
	auto l = PagerLink::open(o);
	REQUIRE(l.is_ok());
	std::unique_ptr<PagerLink> link = std::move(*l);
	auto addr = link->map_shared("win", 0, 2 * kPage, true, 0, /*prefetch=*/false, 0);
	REQUIRE(addr.is_ok());
	// The kernel unregistered the child's copy of the window (no
	// EVENT_FORK); the child registers it on fresh uffds and attaches them.
	CHECK(fork_and_wait([] { return 0; }) == 0);
	{
		std::lock_guard<std::mutex> lk(fp.mu_);
		REQUIRE(fp.other_attach_fds.size() == 1);
		CHECK(fp.other_attach_fds[0] == 3);
	}
	REQUIRE(link->unmap(*addr).is_ok());
	link.reset();
	fp.stop();
}

TEST_CASE("the evictor runs on the CPU its move requests name, and gets its CPUs back after",
          "[pager_link]")
{
	// The pager names its own CPU while it is pinned beside the program's
	// faulting thread (kMoveOnCpu): the evictor's page-table changes are
	// then made on that CPU, with no TLB-flush interrupt to it.
	Fixture f;
	if (!f.move)
		return;
	pid_t evictor = thread_named("memfed-evictor");
	REQUIRE(evictor > 0);
	const cpu_set_t before = cpus_of(evictor);
	if (CPU_COUNT(&before) < 2) {
		WARN("this thread may run on one CPU only: the evictor's pin is NOT tested");
		return;
	}
	int cpu = -1;
	for (int c = 0; c < CPU_SETSIZE; c++)
		if (CPU_ISSET(c, &before))
			cpu = c; // the last: not where an unpinned thread would be alone
	Request r{{{f.slot(0), kPage}}, {}};
	r.flags = pg::kMoveOnCpu | uint32_t(cpu) << pg::kMoveCpuShift;
	CHECK(f.send(1, r).empty());
	cpu_set_t pinned = cpus_of(evictor);
	CHECK(CPU_COUNT(&pinned) == 1);
	CHECK(CPU_ISSET(cpu, &pinned));
	// Still named: no change, as the pager names it in every request.
	CHECK(f.send(2, r).empty());
	pinned = cpus_of(evictor);
	CHECK(CPU_COUNT(&pinned) == 1);
	// Not named: the CPUs it had.
	r.flags = 0;
	CHECK(f.send(3, r).empty());
	cpu_set_t after = cpus_of(evictor);
	CHECK(CPU_EQUAL(&after, &before));
	// A CPU the program may not run on is not followed.
	int barred = -1;
	for (int c = CPU_SETSIZE - 1; c >= 0 && barred < 0; c--)
		if (!CPU_ISSET(c, &before))
			barred = c;
	REQUIRE(barred >= 0);
	r.flags = pg::kMoveOnCpu | uint32_t(barred) << pg::kMoveCpuShift;
	CHECK(f.send(4, r).empty());
	after = cpus_of(evictor);
	CHECK(CPU_EQUAL(&after, &before));
}
