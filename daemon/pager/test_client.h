// TestClient: the client side of the map protocol (map_protocol.h) as the
// pager's tests and benchmark need it — what libmemfed does for a program,
// done with the same real mechanisms: a userfaultfd, anonymous memory
// registered on it, an evict channel served by an evictor thread, and the
// control socket; with `staging` set before attach, a staging area and an
// evictor that serves MoveRequests (map_protocol.h, "Staging") as
// libmemfed's does; with `window_uffd`, a second uffd for shared windows.
//
// Thread-safety: one thread drives a TestClient; its evictor thread only
// touches the evict socket, madvise and UFFDIO_MOVE.
#pragma once

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "daemon/control/client.h"
#include "daemon/pager/content_hash.h"
#include "daemon/pager/map_protocol.h"
#include "daemon/pager/uffd.h"

namespace memfed::pager
{

class TestClient
{
public:
	struct Mapped {
		uint64_t id = 0;
		uint8_t *addr = nullptr;
		uint64_t length = 0;
	};

	~TestClient()
	{
		cli_ = control::Client();
		if (evict_sock_ >= 0)
			shutdown(evict_sock_, SHUT_RDWR);
		if (evictor_.joinable())
			evictor_.join();
		if (evict_sock_ >= 0)
			close(evict_sock_);
		if (uffd_ >= 0)
			close(uffd_);
		if (window_uffd_ >= 0)
			close(window_uffd_);
		if (staging_addr_ != 0)
			munmap(reinterpret_cast<void *>(staging_addr_), staging_len_);
	}

	// Connects, asks pager.hello, creates the uffd and attaches it.
	// `without`: uffd features to leave out of those the pager asks for (a
	// client that breaks the protocol, to make states no kernel event
	// tells the pager of).
	Status attach(const std::string &socket, uint64_t budget = 0, bool evict = true,
	              uint64_t without = 0)
	{
		auto c = control::Client::connect(socket);
		if (!c)
			return c.status();
		cli_ = std::move(*c);
		control::Message hello;
		hello.body = {{"op", kOpHello}};
		auto h = cli_.call_ok(hello);
		if (!h)
			return h.status();
		features_ = h->body["uffd_features"].get<uint64_t>() & ~without;
		// As libmemfed: a uffd with EVENT_FORK keeps the drop path.
		if (staging)
			features_ &= ~uint64_t(UFFD_FEATURE_EVENT_FORK);
		mode_ = h->body["private_register_mode"].get<uint64_t>();
		shared_mode_ = h->body["shared_register_mode"].get<uint64_t>();
		// As libmemfed: WP_ASYNC when offered, and only with staging.
		auto wa = h->body.find("wp_async");
		if (staging && wp_async && wa != h->body.end() && wa->is_boolean() &&
		    wa->get<bool>())
			features_ |= UFFD_FEATURE_WP_ASYNC;
		if (uffd_ < 0) {
			auto fd = open_uffd(features_, false);
			if (!fd)
				return fd.status();
			uffd_ = *fd;
		}
		if (window_uffd && window_uffd_ < 0) {
			if (!h->body.value("window_uffd", false))
				return Status(Code::kInvalidArgument,
				              "the pager takes no window uffd");
			auto fd = open_uffd(features_ & ~uint64_t(UFFD_FEATURE_WP_ASYNC |
			                                          UFFD_FEATURE_EVENT_FORK),
			                    false);
			if (!fd)
				return fd.status();
			window_uffd_ = *fd;
		}
		if (staging && staging_addr_ == 0) {
			if (!(features_ & UFFD_FEATURE_MOVE))
				return Status(Code::kInvalidArgument, "this kernel has no UFFDIO_MOVE");
			staging_len_ = uint64_t{kStagingPages} * kPageSize;
			void *s = mmap(nullptr, staging_len_, PROT_READ | PROT_WRITE,
			               MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (s == MAP_FAILED)
				return Status::from_errno(errno, "mmap of the staging area");
			madvise(s, staging_len_, MADV_NOHUGEPAGE);
			staging_addr_ = reinterpret_cast<uint64_t>(s);
			if (int r = uffd_register(uffd_, staging_addr_, staging_len_,
			                          UFFDIO_REGISTER_MODE_MISSING);
			    r < 0)
				return Status::from_errno(-r, "UFFDIO_REGISTER of the staging area");
			attach_extra["staging"] = {{"addr", staging_addr_}, {"len", staging_len_}};
		}
		return send_attach(budget, evict);
	}

	// Attaches the same uffd again on a new connection (daemon restart).
	Status reattach(const std::string &socket, uint64_t budget = 0, bool evict = true)
	{
		cli_ = control::Client();
		auto c = control::Client::connect(socket);
		if (!c)
			return c.status();
		cli_ = std::move(*c);
		return send_attach(budget, evict);
	}

private:
	Status send_attach(uint64_t budget, bool evict)
	{
		control::Message m;
		m.body = {{"op", kOpAttach}, {"features", features_}, {"budget", budget}};
		m.body.update(attach_extra);
		m.fds.push_back(uffd_);
		int sv[2] = {-1, -1};
		if (evict) {
			if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0)
				return Status::from_errno(errno, "socketpair");
			m.fds.push_back(sv[1]);
			if (window_uffd_ >= 0)
				m.fds.push_back(window_uffd_);
		}
		auto r = cli_.call_ok(m);
		if (sv[1] >= 0)
			close(sv[1]);
		if (!r) {
			if (sv[0] >= 0)
				close(sv[0]);
			return r.status();
		}
		uffd_id_ = r->body["uffd_id"].get<uint64_t>();
		content_key_ = r->body.value("content_key", uint64_t{0});
		if (evict) {
			if (evictor_.joinable()) {
				shutdown(evict_sock_, SHUT_RDWR);
				evictor_.join();
				close(evict_sock_);
			}
			evict_sock_ = sv[0];
			evictor_ = std::thread([this, fd = sv[0]] { evict_loop(fd); });
		}
		return Status::ok();
	}

public:
	// Maps `length` bytes of `region` at `offset` into fresh anonymous memory.
	Result<Mapped> map(const std::string &region, uint64_t offset, uint64_t length,
	                   uint64_t budget = 0, bool prefetch = true)
	{
		void *p = mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		               -1, 0);
		if (p == MAP_FAILED)
			return Status::from_errno(errno, "mmap");
		madvise(p, length, MADV_NOHUGEPAGE);
		auto a = reinterpret_cast<uint64_t>(p);
		if (int r = uffd_register(uffd_, a, length, mode_); r < 0) {
			munmap(p, length);
			return Status::from_errno(-r, "UFFDIO_REGISTER");
		}
		auto id = map_at(region, offset, a, length, budget, prefetch);
		if (!id) {
			munmap(p, length);
			return id.status();
		}
		return Mapped{*id, static_cast<uint8_t *>(p), length};
	}

	// Sends "map" for memory already registered at `addr`.
	// `removed`: [addr, length] pairs the map reports dropped ("removed").
	Result<uint64_t> map_at(const std::string &region, uint64_t offset, uint64_t addr,
	                        uint64_t length, uint64_t budget = 0, bool prefetch = true,
	                        const nlohmann::json &removed = nullptr)
	{
		control::Message m;
		m.body = {{"op", kOpMap},           {"uffd_id", uffd_id_},
		          {"region", region},       {"region_offset", offset},
		          {"addr", addr},           {"length", length},
		          {"kind", kKindPrivate},   {"writable", true},
		          {"register_mode", mode_}, {"budget", budget},
		          {"prefetch", prefetch}};
		if (!removed.is_null())
			m.body["removed"] = removed;
		auto r = cli_.call_ok(m);
		if (!r)
			return r.status();
		return r->body["mapping_id"].get<uint64_t>();
	}

	// Maps a window of `region` with kind "shared": the pager's memfd,
	// mmapped MAP_SHARED, registered, then "map.ready".
	Result<Mapped> map_shared(const std::string &region, uint64_t offset, uint64_t length,
	                          uint64_t budget = 0)
	{
		void *p = mmap(nullptr, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return Status::from_errno(errno, "mmap");
		auto a = reinterpret_cast<uint64_t>(p);
		control::Message m;
		m.body = {{"op", kOpMap},
		          {"uffd_id", uffd_id_},
		          {"region", region},
		          {"region_offset", offset},
		          {"addr", a},
		          {"length", length},
		          {"kind", kKindShared},
		          {"writable", true},
		          {"register_mode", shared_mode_},
		          {"budget", budget}};
		auto r = cli_.call_ok(m);
		if (!r || r->fds.size() != 1) {
			munmap(p, length);
			return r ? Status(Code::kProtocol, "no memfd in the reply") : r.status();
		}
		int fd = r->fds[0];
		void *q = mmap(p, length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
		close(fd);
		if (q == MAP_FAILED)
			return Status::from_errno(errno, "mmap of the memfd");
		if (int e = uffd_register(window_uffd_ >= 0 ? window_uffd_ : uffd_, a, length,
		                          shared_mode_);
		    e < 0)
			return Status::from_errno(-e, "UFFDIO_REGISTER");
		uint64_t id = r->body["mapping_id"].get<uint64_t>();
		auto ready = call({{"op", kOpMapReady}, {"mapping_id", id}});
		if (!ready)
			return ready.status();
		return Mapped{id, static_cast<uint8_t *>(p), length};
	}

	Status sync(uint64_t mapping_id, uint64_t offset = 0, uint64_t length = UINT64_MAX)
	{
		control::Message m;
		m.body = {{"op", kOpSync}, {"mapping_id", mapping_id}, {"offset", offset}};
		if (length != UINT64_MAX)
			m.body["length"] = length;
		return cli_.call_ok(m).status();
	}

	// "unmap", then munmap.
	Status unmap(const Mapped &mp)
	{
		control::Message m;
		m.body = {{"op", kOpUnmap}, {"mapping_id", mp.id}};
		Status st = cli_.call_ok(m).status();
		// As libmemfed does: the unregister wakes every thread still
		// waiting in a fault on the range, which munmap alone would leave
		// waiting for good.
		(void)uffd_unregister(uffd_, reinterpret_cast<uint64_t>(mp.addr), mp.length);
		munmap(mp.addr, mp.length);
		return st;
	}

	Result<control::Message> call(const nlohmann::json &body)
	{
		control::Message m;
		m.body = body;
		return cli_.call_ok(m);
	}
	// Drops the control connection (the pager detaches) but keeps the uffd.
	void disconnect() { cli_ = control::Client(); }
	// Drops the connection and closes the uffds: once the pager has closed
	// its copies too, threads waiting in a fault on them run again (a
	// failing test's way out).
	void abandon()
	{
		disconnect();
		for (int *fd : {&uffd_, &window_uffd_})
			if (*fd >= 0)
				close(*fd);
		uffd_ = window_uffd_ = -1;
	}

	int uffd() const { return uffd_; }
	// Set before attach: shared windows on a uffd of their own (attach
	// fds[2], with the evict channel), as libmemfed does.
	bool window_uffd = false;
	int window_uffd_fd() const { return window_uffd_; }
	// Fields added to every "attach" (e.g. "staging").
	nlohmann::json attach_extra = nlohmann::json::object();
	uint64_t uffd_id() const { return uffd_id_; }
	uint64_t register_mode() const { return mode_; }
	uint64_t shared_register_mode() const { return shared_mode_; }
	uint64_t drops() const { return drops_; }
	// Set before attach: map a staging area and serve MoveRequests.
	bool staging = false;
	// With `staging`: open the uffd with WP_ASYNC if the pager offers it.
	bool wp_async = false;
	bool has_wp_async() const { return (features_ & UFFD_FEATURE_WP_ASYNC) != 0; }
	// With wp_async: send the content hashes the pager asks for (false: the
	// pager reads the moved pages itself).
	bool hash_moves = true;
	// MoveRequests served, and the pages they moved.
	uint64_t moves() const { return moves_; }
	uint64_t moved_pages() const { return moved_pages_; }
	// The flags of the last MoveRequest the evictor served.
	uint32_t last_move_flags() const { return last_move_flags_; }
	// Ranges the evictor was asked to drop, and their pages.
	uint64_t dropped_ranges() const { return dropped_ranges_; }
	uint64_t dropped_pages() const { return dropped_pages_; }

private:
	void evict_loop(int fd)
	{
		union {
			DropRequest drop;
			MoveRequest move;
		} buf;
		DropRequest &req = buf.drop;
		while (true) {
			ssize_t n = recv(fd, &buf, sizeof(buf), 0);
			if (n <= 0)
				return;
			if (size_t(n) >= move_request_size(0, 0) && buf.move.magic == kMoveRequestMagic) {
				if (!serve_move(fd, buf.move, size_t(n)))
					return;
				continue;
			}
			if (size_t(n) < drop_request_size(0) || req.magic != kDropRequestMagic ||
			    req.count == 0 || req.count > kMaxDropRanges ||
			    uint64_t(n) != drop_request_size(req.count))
				continue;
			DropReply rep{kDropReplyMagic, 0, req.seq};
			for (uint32_t i = 0; i < req.count; i++) {
				if (madvise(reinterpret_cast<void *>(req.ranges[i].addr),
				            req.ranges[i].length, MADV_DONTNEED) < 0 &&
				    rep.error == 0)
					rep.error = -errno;
				dropped_pages_ += req.ranges[i].length / kPageSize;
			}
			dropped_ranges_ += req.count;
			drops_++;
			if (send(fd, &rep, sizeof(rep), MSG_NOSIGNAL) < 0)
				return;
		}
	}

	// Empties, then moves, as libmemfed's evictor does (no validation
	// beyond the sizes: the pager under test is what is checked).
	bool serve_move(int fd, const MoveRequest &req, size_t n)
	{
		if (req.n_empty > kMaxMoveEmpty || req.n_runs > kMaxMoveRuns ||
		    n != move_request_size(req.n_empty, req.n_runs))
			return true;
		last_move_flags_ = req.flags;
		MoveReply rep;
		rep.magic = kMoveReplyMagic;
		rep.n_runs = req.n_runs;
		rep.seq = req.seq;
		DropRange shared[kMaxMoveRuns];
		uint32_t n_shared = 0;
		for (uint32_t i = 0; i < req.n_empty; i++)
			madvise(reinterpret_cast<void *>(req.empty(i).addr), req.empty(i).length,
			        MADV_DONTNEED);
		for (uint32_t i = 0; i < req.n_runs; i++) {
			MoveRun run = req.run(i);
			uint64_t done = 0;
			int r;
			for (;;) {
				int64_t moved = 0;
				r = uffd_move(uffd_, run.slot + done, run.src + done, run.len - done, 0,
				              &moved);
				done += uint64_t(moved);
				if (r != -EAGAIN || moved == 0 || done >= run.len)
					break;
			}
			rep.result[i] = r == 0 ? int64_t(run.len) : r;
			moved_pages_ += done / kPageSize;
			if (r == -EBUSY)
				shared[n_shared++] = {run.src + done, run.len - done};
		}
		// As libmemfed: the hash of each page of the runs moved whole.
		uint32_t n_hashes = 0;
		if ((req.flags & kMoveWantHashes) && content_key_ != 0 && hash_moves) {
			for (uint32_t i = 0; i < req.n_runs; i++) {
				MoveRun run = req.run(i);
				if (rep.result[i] != int64_t(run.len))
					continue;
				for (uint64_t a = run.slot; a < run.slot + run.len; a += kPageSize)
					rep.set_hash(n_hashes++,
					             content_hash(reinterpret_cast<const void *>(a),
					                          content_key_));
			}
		}
		moves_++;
		bool sent =
		        send(fd, &rep, move_reply_size(rep.n_runs, n_hashes), MSG_NOSIGNAL) >= 0;
		// As libmemfed: pages shared with a forked child are unshared after
		// the reply, and move in a later round.
		for (uint32_t i = 0; i < n_shared; i++)
			madvise(reinterpret_cast<void *>(shared[i].addr), shared[i].length,
			        MADV_POPULATE_WRITE);
		return sent;
	}

	control::Client cli_;
	uint64_t staging_addr_ = 0, staging_len_ = 0;
	int uffd_ = -1, window_uffd_ = -1;
	uint64_t uffd_id_ = 0;
	uint64_t features_ = 0, mode_ = 0, shared_mode_ = 0;
	uint64_t content_key_ = 0;
	int evict_sock_ = -1;
	std::thread evictor_;
	std::atomic<uint64_t> drops_{0};
	std::atomic<uint64_t> dropped_ranges_{0};
	std::atomic<uint64_t> dropped_pages_{0};
	std::atomic<uint64_t> moves_{0};
	std::atomic<uint64_t> moved_pages_{0};
	std::atomic<uint32_t> last_move_flags_{0};
};

} // namespace memfed::pager
