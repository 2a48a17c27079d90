// Test helpers shared by the TCP transport's tests (transport_test): an
// in-memory module behind a TcpServer on its own loop thread, a completion
// that records its reply, and a raw peer playing a module.
#pragma once

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <filesystem>
#include <functional>
#include <future>
#include <random>
#include <thread>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/transport/endpoint.h"
#include "daemon/transport/sync_client.h"
#include "daemon/transport/tcp_channel.h"
#include "daemon/transport/tcp_server.h"
#include "daemon/wire/codec.h"

namespace memfed::transport_test
{

using wire::kPageSize;

inline constexpr uint32_t kRegion = 7;
inline constexpr uint32_t kPages = 1024;
inline const ModuleId kServerId{0x020000000001};
inline const ModuleId kClientId{0x020000000099};

// A module's data path in memory: one region of kPages pages at FA 0.
class MemHandler : public RequestHandler
{
public:
	MemHandler() : pool(size_t{kPages} * kPageSize)
	{
		for (uint32_t p = 0; p < kPages; p++)
			fill_page(&pool[size_t{p} * kPageSize], p, 0);
	}
	static void fill_page(uint8_t *page, uint32_t index, uint8_t salt)
	{
		for (uint32_t i = 0; i < kPageSize; i++)
			page[i] = static_cast<uint8_t>(index * 31 + i + salt);
		std::memcpy(page, &index, sizeof(index));
	}
	void handle(const ConnInfo &conn, const wire::Header &req, std::span<const uint8_t> payload,
	            Reply &reply) override
	{
		last_module = conn.module;
		auto type = static_cast<wire::MsgType>(req.type);
		if (type == wire::MsgType::kRead || type == wire::MsgType::kWrite) {
			if (req.region_id != kRegion)
				return reply.fail(Status(Code::kNotFound, "no such region"));
			if (req.offset + uint64_t{req.count} * kPageSize > pool.size())
				return reply.fail(Status(Code::kOutOfRange, "past the end"));
			size_t len = size_t{req.count} * kPageSize;
			if (type == wire::MsgType::kRead) {
				auto out = reply.payload_buffer(len);
				std::memcpy(out.data(), &pool[req.offset], len);
			} else {
				std::memcpy(&pool[req.offset], payload.data(), len);
				writes++;
			}
			return;
		}
		if (type == wire::MsgType::kStat) {
			wire::WireStat st{};
			st.capacity_bytes = pool.size();
			st.free_bytes = pool.size();
			st.largest_free_bytes = pool.size();
			st.page_size = kPageSize;
			st.writes = writes;
			uint8_t buf[wire::kStatSize];
			wire::encode_stat(st, buf);
			return reply.set_payload(buf);
		}
		reply.fail(Status(Code::kInvalidArgument, "unsupported"));
	}
	std::vector<uint8_t> pool;
	uint64_t writes = 0;
	ModuleId last_module;
};

// A TcpServer with a MemHandler on its own loop thread.
class ServerThread
{
public:
	explicit ServerThread(int hello_timeout_ms = 10000)
	{
		std::promise<Status> started;
		auto fut = started.get_future();
		thread_ = std::thread([this, &started, hello_timeout_ms] {
			auto loop = EventLoop::create();
			if (!loop) {
				started.set_value(loop.status());
				return;
			}
			loop_ = loop->get();
			ServerIdentity id{kServerId, wire::kCapModule,
			                  uint64_t{kPages} * kPageSize};
			auto srv = TcpServer::listen(loop_, "127.0.0.1:0", id, &handler);
			if (!srv) {
				started.set_value(srv.status());
				return;
			}
			port = (*srv)->port();
			server = srv->get();
			server->set_hello_timeout_ms(hello_timeout_ms);
			started.set_value(Status::ok());
			loop_->run();
			srv->reset();
		});
		Status st = fut.get();
		REQUIRE(st.to_string() == "ok");
	}
	~ServerThread()
	{
		if (loop_)
			loop_->stop();
		thread_.join();
	}
	std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }
	// Runs `fn` on the loop thread and waits for it.
	template <typename F> auto on_loop(F fn)
	{
		std::promise<decltype(fn())> p;
		loop_->post([&] { p.set_value(fn()); });
		return p.get_future().get();
	}

	MemHandler handler;
	uint16_t port = 0;
	TcpServer *server = nullptr; // use on the loop thread only

private:
	EventLoop *loop_ = nullptr;
	std::thread thread_;
};

struct Waiter : Completion {
	void on_reply(const Status &st, const wire::Header &resp,
	              std::span<const uint8_t> payload) override
	{
		done = true;
		status = st;
		hdr = resp;
		data.assign(payload.begin(), payload.end());
		order = (*counter)++;
	}
	bool done = false;
	Status status;
	wire::Header hdr{};
	std::vector<uint8_t> data;
	int order = -1;
	int *counter = nullptr;
};

template <typename Pred> void drive(EventLoop *loop, Pred pred)
{
	for (int i = 0; i < 100000 && !pred(); i++)
		loop->run_once(100);
	REQUIRE(pred());
}

inline std::vector<uint8_t> encode(wire::Header h, std::span<const uint8_t> payload = {})
{
	std::vector<uint8_t> out(wire::kHeaderSize + payload.size());
	wire::encode_header(h, payload, out.data());
	if (!payload.empty())
		std::memcpy(out.data() + wire::kHeaderSize, payload.data(), payload.size());
	return out;
}

inline std::vector<uint8_t> hello_bytes(uint16_t minv = wire::kWireMinVersion,
                                        uint16_t maxv = wire::kWireVersion)
{
	wire::Header h{};
	h.version = 1;
	h.type = static_cast<uint8_t>(wire::MsgType::kHello);
	h.tclass = 1;
	h.hop_limit = 4;
	h.src_module = kClientId.value;
	h.request_id = 1;
	wire::HelloRequest r;
	r.min_version = minv;
	r.max_version = maxv;
	uint8_t p[wire::kHelloRequestSize];
	wire::encode_hello_request(r, p);
	return encode(h, p);
}

inline bool recv_full(int fd, void *buf, size_t n)
{
	auto *b = static_cast<uint8_t *>(buf);
	while (n > 0) {
		ssize_t r = recv(fd, b, n, 0);
		// io_uring task work of rings this thread used can interrupt a
		// recv that has a timeout (SO_RCVTIMEO).
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			UNSCOPED_INFO("recv returned " << r << ": " << strerror(errno));
			return false;
		}
		b += r;
		n -= r;
	}
	return true;
}

// True once the peer has closed `fd` (recv returns 0 or fails), reading and
// discarding anything sent before.
inline bool peer_closed(int fd)
{
	uint8_t buf[4096];
	for (;;) {
		ssize_t r = recv(fd, buf, sizeof(buf), 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r == 0 || errno == ECONNRESET;
	}
}

// A raw peer playing a module: answers HELLO, then hands each request to
// `on_request` from a thread of its own.
class RawModule
{
public:
	using Fn = std::function<void(int fd, std::vector<wire::Header> &reqs)>;
	explicit RawModule(Fn fn) : fn_(std::move(fn))
	{
		auto lfd = listen_tcp(*Endpoint::parse("127.0.0.1:0"));
		REQUIRE(lfd.is_ok());
		lfd_ = *lfd;
		port = local_port(lfd_);
		thread_ = std::thread([this] { serve(); });
	}
	~RawModule()
	{
		join();
		close(lfd_);
	}
	void join()
	{
		if (thread_.joinable())
			thread_.join();
	}
	std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }
	// The module's response to `req` (status and payload as given).
	static wire::Header response(const wire::Header &req)
	{
		wire::Header h = req;
		h.flags = wire::kFlagResponse;
		h.src_module = kServerId.value;
		h.dst_module = req.src_module;
		return h;
	}
	static void reply(int fd, const wire::Header &req, std::span<const uint8_t> payload = {})
	{
		auto b = encode(response(req), payload);
		ssize_t r = send(fd, b.data(), b.size(), MSG_NOSIGNAL);
		(void)r; // a short send shows up as a failure on the channel side
	}
	static bool read_request(int fd, wire::Header *h, std::vector<uint8_t> *payload = nullptr)
	{
		uint8_t hb[wire::kHeaderSize];
		if (!recv_full(fd, hb, sizeof(hb)))
			return false;
		if (!wire::validate_header({hb, sizeof(hb)}, h).is_ok())
			return false;
		std::vector<uint8_t> p(h->payload_len);
		if (!recv_full(fd, p.data(), p.size()))
			return false;
		if (payload)
			*payload = std::move(p);
		return true;
	}
	uint16_t port = 0;

private:
	void serve()
	{
		// No Catch2 assertions on this thread: failures show on the channel.
		pollfd pfd{lfd_, POLLIN, 0};
		if (poll(&pfd, 1, 10000) != 1)
			return;
		int fd = accept(lfd_, nullptr, nullptr);
		if (fd < 0)
			return;
		wire::Header h;
		if (!read_request(fd, &h)) {
			close(fd);
			return;
		}
		wire::HelloResponse hr;
		hr.capacity_bytes = 1 << 20;
		uint8_t p[wire::kHelloResponseSize];
		wire::encode_hello_response(hr, p);
		reply(fd, h, p);
		std::vector<wire::Header> reqs;
		fn_(fd, reqs);
		close(fd);
	}
	Fn fn_;
	int lfd_ = -1;
	std::thread thread_;
};

} // namespace memfed::transport_test
