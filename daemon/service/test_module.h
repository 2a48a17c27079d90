// Test helpers shared by ModuleService's tests (service_test): a pool and a
// ModuleService behind a TcpServer on its own loop thread, with a gate that
// holds the writer thread, and WRITEs held at that gate.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/service/local_channel.h"
#include "daemon/service/module_service.h"
#include "daemon/store/test_pool_dir.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/request_session.h"
#include "daemon/transport/sync_client.h"
#include "daemon/transport/tcp_channel.h"
#include "daemon/wire/codec.h"

namespace memfed::service_test
{

inline constexpr uint32_t kPage = wire::kPageSize;
inline constexpr uint32_t kRegionPages = 16;
inline const ModuleId kModule{0x020000000061};
inline const ModuleId kClient{0x020000000062};

// Holds the writer thread at its first group until released.
class WriterGate
{
public:
	void hook()
	{
		std::unique_lock lk(mu_);
		if (calls_++ != 0)
			return;
		entered_ = true;
		cv_.notify_all();
		cv_.wait(lk, [this] { return released_; });
	}
	bool wait_entered()
	{
		std::unique_lock lk(mu_);
		return cv_.wait_for(lk, std::chrono::seconds(20), [this] { return entered_; });
	}
	void release()
	{
		std::lock_guard lk(mu_);
		released_ = true;
		cv_.notify_all();
	}

private:
	std::mutex mu_;
	std::condition_variable cv_;
	int calls_ = 0;
	bool entered_ = false, released_ = false;
};

// A pool, a ModuleService whose writer waits at `gate`, and a TcpServer for
// it on its own loop thread.
class Module
{
public:
	Module()
	{
		std::string path = dir_.path("pool");
		REQUIRE(ModuleStore::format(PoolOptions{path, 4 << 20, kModule}).is_ok());
		auto s = ModuleStore::open(path, 0);
		REQUIRE(s.is_ok());
		store = std::move(*s);
		auto r = store->create_region("r", kRegionPages * kPage, 0, 0600);
		REQUIRE(r.is_ok());
		region = *r;
		service = std::make_unique<ModuleService>(store.get());
		service->set_writer_hook_for_test([this] { gate.hook(); });
		auto loop = EventLoop::create();
		REQUIRE(loop.is_ok());
		loop_ = std::move(*loop);
		auto srv = TcpServer::listen(loop_.get(), "127.0.0.1:0",
		                             ServerIdentity{kModule, wire::kCapModule, 4 << 20},
		                             service.get());
		REQUIRE(srv.is_ok());
		server_ = std::move(*srv);
		endpoint = server_->endpoint();
		thread_ = std::thread([this] { loop_->run(); });
	}
	~Module()
	{
		gate.release();
		stop_server();
	}
	// Stops the loop and destroys the server (replies completed later are
	// dropped).
	void stop_server()
	{
		if (!server_)
			return;
		loop_->stop();
		thread_.join();
		server_.reset();
	}
	std::unique_ptr<SyncClient> client()
	{
		auto c = SyncClient::connect(endpoint, kClient, 20000);
		REQUIRE(c.is_ok());
		REQUIRE((*c)->hello().is_ok());
		return std::move(*c);
	}
	uint64_t fa(uint32_t page) const { return region.fa_offset + uint64_t{page} * kPage; }
	std::string pool_path() const { return dir_.path("pool"); }

	WriterGate gate;
	std::unique_ptr<ModuleStore> store;
	RegionInfo region;
	std::unique_ptr<ModuleService> service;
	std::string endpoint;

private:
	store::TestPoolDir dir_;
	std::unique_ptr<EventLoop> loop_;
	std::unique_ptr<TcpServer> server_;
	std::thread thread_;
};

inline std::vector<uint8_t> pages(uint32_t n, uint8_t fill)
{
	return std::vector<uint8_t>(size_t{n} * kPage, fill);
}

// Polls `cond` (no timing assertion: a generous bound only ends a hung test).
template <typename F> bool eventually(F cond)
{
	for (int i = 0; i < 20000; i++) {
		if (cond())
			return true;
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	}
	return false;
}

// One-page WRITEs of `data` at pages `a` and `b`: the first held in the
// writer at the gate, the second queued behind it.
class HeldWrites
{
public:
	HeldWrites(Module &m, const std::vector<uint8_t> &data, uint32_t a, uint32_t b) : m_(m)
	{
		first_ = std::thread([&m, &data, a, this] {
			first_st_ = m.client()->write_pages(m.region.id, m.fa(a), 1, data.data());
		});
		REQUIRE(m.gate.wait_entered());
		second_ = std::thread([&m, &data, b, this] {
			second_st_ = m.client()->write_pages(m.region.id, m.fa(b), 1, data.data());
		});
		REQUIRE(eventually([&] { return m.service->queued() == 1; }));
	}
	~HeldWrites()
	{
		m_.gate.release(); // a failed check must not leave a WRITE held
		if (first_.joinable())
			first_.join();
		if (second_.joinable())
			second_.join();
	}
	// After the gate is released: both WRITEs succeeded.
	void join_ok()
	{
		first_.join();
		second_.join();
		INFO(first_st_.to_string() << " / " << second_st_.to_string());
		CHECK(first_st_.is_ok());
		CHECK(second_st_.is_ok());
	}

private:
	Module &m_;
	std::thread first_, second_;
	Status first_st_, second_st_;
};

} // namespace memfed::service_test
