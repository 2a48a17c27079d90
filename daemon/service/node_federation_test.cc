// NodeFederation's view of peer modules over the wire protocol: the whole
// region list (what the kmod table mirror uses) comes page by page, so a
// peer with more regions than one REGION_LIST response holds is listed
// whole, merged with the local module's in name order; a plain-name lookup
// asks every module, up to kPeersAskedAtOnce at once, and then remembers
// where the name lives.
#include "daemon/service/node_federation.h"

#include <catch2/catch.hpp>

#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>
#include <vector>

#include "daemon/service/module_service.h"
#include "daemon/service/node_federation_peer.h"
#include "daemon/store/test_pool_dir.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/tcp_server.h"
#include "daemon/wire/protocol.h"

using namespace memfed;

namespace
{

const ModuleId kPeerModule{0x020000000071};
const ModuleId kLocalModule{0x020000000072};

std::unique_ptr<ModuleStore> make_store(const std::string &path, uint64_t size, ModuleId id)
{
	REQUIRE(ModuleStore::format(PoolOptions{path, size, id}).is_ok());
	auto s = ModuleStore::open(path, 0);
	REQUIRE(s.is_ok());
	return std::move(*s);
}

// A module served over TCP on its own loop thread.
class PeerModule
{
public:
	explicit PeerModule(ModuleStore *store) : service_(store)
	{
		auto loop = EventLoop::create();
		REQUIRE(loop.is_ok());
		loop_ = std::move(*loop);
		auto srv = TcpServer::listen(
		        loop_.get(), "127.0.0.1:0",
		        ServerIdentity{kPeerModule, wire::kCapModule, store->info().capacity_bytes},
		        &service_);
		REQUIRE(srv.is_ok());
		server_ = std::move(*srv);
		endpoint = server_->endpoint();
		thread_ = std::thread([this] { loop_->run(); });
	}
	~PeerModule()
	{
		loop_->stop();
		thread_.join();
		server_.reset();
	}
	std::string endpoint;

private:
	ModuleService service_;
	std::unique_ptr<EventLoop> loop_;
	std::unique_ptr<TcpServer> server_;
	std::thread thread_;
};

// The threads of this process now.
int threads_alive()
{
	return int(std::distance(std::filesystem::directory_iterator("/proc/self/task"),
	                         std::filesystem::directory_iterator()));
}

// A module that accepts connections and never answers (stopped, hung): it
// counts the connections it accepted, and how many were open at once across
// every SilentModule sharing `open` and `max_open`; at each, it samples how
// many threads the process has (max_threads: the most seen).
class SilentModule
{
public:
	SilentModule(std::atomic<int> *open, std::atomic<int> *max_open)
	    : open_(open), max_open_(max_open)
	{
		lfd_ = socket(AF_INET, SOCK_STREAM, 0);
		REQUIRE(lfd_ >= 0);
		sockaddr_in a{};
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		REQUIRE(bind(lfd_, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0);
		REQUIRE(listen(lfd_, 16) == 0);
		socklen_t len = sizeof(a);
		REQUIRE(getsockname(lfd_, reinterpret_cast<sockaddr *>(&a), &len) == 0);
		endpoint = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
		stop_ = eventfd(0, 0);
		REQUIRE(stop_ >= 0);
		thread_ = std::thread([this] { run(); });
	}
	~SilentModule()
	{
		uint64_t one = 1;
		(void)!write(stop_, &one, sizeof(one));
		thread_.join();
		close(stop_);
		close(lfd_);
	}
	std::string endpoint;
	std::atomic<int> accepted{0};
	std::atomic<int> max_threads{0};

private:
	void run()
	{
		std::vector<int> held;
		for (;;) {
			std::vector<pollfd> fds{{stop_, POLLIN, 0}, {lfd_, POLLIN, 0}};
			for (int fd : held)
				fds.push_back({fd, POLLIN, 0});
			if (poll(fds.data(), fds.size(), -1) < 0)
				continue;
			if (fds[0].revents)
				break;
			if (fds[1].revents & POLLIN) {
				int fd = accept(lfd_, nullptr, nullptr);
				if (fd >= 0) {
					held.push_back(fd);
					accepted++;
					max_threads = std::max(max_threads.load(), threads_alive());
					int now = ++*open_;
					int seen = max_open_->load();
					while (now > seen &&
					       !max_open_->compare_exchange_weak(seen, now)) {
					}
				}
			}
			for (size_t i = 2; i < fds.size(); i++) {
				if (!fds[i].revents)
					continue;
				char buf[4096];
				ssize_t n = recv(fds[i].fd, buf, sizeof(buf), 0);
				if (n <= 0) { // the client gave up on us
					close(fds[i].fd);
					held.erase(std::find(held.begin(), held.end(), fds[i].fd));
					--*open_;
				}
			}
		}
		for (int fd : held)
			close(fd);
	}

	std::atomic<int> *open_;
	std::atomic<int> *max_open_;
	int lfd_ = -1;
	int stop_ = -1;
	std::thread thread_;
};

} // namespace

TEST_CASE("locate_region: a plain name is searched on every module at once, then asked of the "
          "module that held it alone",
          "[service]")
{
	store::TestPoolDir dir(store::TestPoolDir::kInMemory);
	auto peer_store = make_store(dir.path("peer"), 16 << 20, kPeerModule);
	REQUIRE(peer_store->create_region("far", wire::kPageSize, 0, 0600).is_ok());
	auto local = make_store(dir.path("local"), 4 << 20, kLocalModule);
	PeerModule peer(peer_store.get());
	std::atomic<int> open{0}, max_open{0};
	SilentModule silent1(&open, &max_open), silent2(&open, &max_open);

	NodeFederation fed(local.get(), nullptr, kLocalModule,
	                   {silent1.endpoint, silent2.endpoint, peer.endpoint});
	auto first = fed.locate_region("far");
	REQUIRE(first.is_ok());
	CHECK(first->module == kPeerModule);
	CHECK(silent1.accepted == 1);
	CHECK(silent2.accepted == 1);
	// Asked one after the other, the second silent module would be dialled
	// only after the first had been given up on.
	CHECK(max_open == 2);

	// Known now: the silent modules are not asked again (each would get at
	// least a brief HELLO).
	auto again = fed.locate_region("far");
	REQUIRE(again.is_ok());
	CHECK(again->module == kPeerModule);
	CHECK(again->region_id == first->region_id);
	CHECK(silent1.accepted == 1);
	CHECK(silent2.accepted == 1);

	// Gone from there (deleted behind this node's back): the hint is
	// dropped and the federation searched again, which cannot say "not
	// found" while two modules do not answer.
	REQUIRE(peer_store->delete_region("far").is_ok());
	auto gone = fed.locate_region("far");
	REQUIRE(!gone.is_ok());
	CHECK(gone.status().code() == Code::kUnavailable);
	CHECK(silent1.accepted == 2);
	CHECK(silent2.accepted == 2);
}

TEST_CASE("locate_region: a search asks at most kPeersAskedAtOnce modules at once; the rest are "
          "asked as those answer, every one of them",
          "[service]")
{
	store::TestPoolDir dir(store::TestPoolDir::kInMemory);
	auto local = make_store(dir.path("local"), 4 << 20, kLocalModule);
	constexpr size_t kSilent = 12;
	static_assert(kSilent > kPeersAskedAtOnce && kSilent <= 2 * kPeersAskedAtOnce);
	std::atomic<int> open{0}, max_open{0};
	std::vector<std::unique_ptr<SilentModule>> silent;
	std::vector<std::string> endpoints;
	for (size_t i = 0; i < kSilent; i++) {
		silent.push_back(std::make_unique<SilentModule>(&open, &max_open));
		endpoints.push_back(silent.back()->endpoint);
	}
	NodeFederation fed(local.get(), nullptr, kLocalModule, endpoints);

	int threads_before = threads_alive();
	auto t0 = std::chrono::steady_clock::now();
	auto r = fed.locate_region("nowhere");
	auto took_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
	                       std::chrono::steady_clock::now() - t0)
	                       .count();
	REQUIRE(!r.is_ok());
	CHECK(r.status().code() == Code::kUnavailable);
	int max_threads = 0;
	for (const auto &s : silent) {
		CHECK(s->accepted == 1); // every module asked, once
		max_threads = std::max(max_threads, s->max_threads.load());
	}
	// The first kPeersAskedAtOnce were asked at once. (Not "and never
	// more": a module sees a connection given up on a moment after the
	// next module is dialled, so its count may overlap by a few.)
	CHECK(max_open >= int(kPeersAskedAtOnce));
	// Never more than that: the askers are the caller and
	// kPeersAskedAtOnce - 1 threads.
	INFO("threads before the search " << threads_before << ", most during it " << max_threads);
	CHECK(max_threads <= threads_before + int(kPeersAskedAtOnce) - 1);
	// Two rounds of timeouts (kSilent / kPeersAskedAtOnce, rounded up), not
	// kSilent of them one after the other: more than one, and well under
	// half of their sum.
	INFO("the search took " << took_ms << " ms; a peer's timeout is " << kPeerTimeoutMs
	                        << " ms");
	CHECK(took_ms > kPeerTimeoutMs * 3 / 2);
	CHECK(took_ms < int64_t(kSilent) * kPeerTimeoutMs / 2);
}

TEST_CASE("list_regions: a peer with more regions than one REGION_LIST response, listed whole "
          "and merged with the local module's in name order",
          "[service]")
{
	store::TestPoolDir dir(store::TestPoolDir::kInMemory);
	// 256 MiB: 8,192 table slots, room for more than one wire page.
	auto peer_store = make_store(dir.path("peer"), 256ull << 20, kPeerModule);
	const uint32_t n = wire::kRegionListPage + 37;
	char name[32];
	for (uint32_t i = 0; i < n; i++) {
		std::snprintf(name, sizeof(name), "p%05u", i);
		REQUIRE(peer_store->create_region(name, wire::kPageSize, 0, 0600).is_ok());
	}
	auto local = make_store(dir.path("local"), 4 << 20, kLocalModule);
	for (const char *l : {"a-first", "p02000x", "z-last"})
		REQUIRE(local->create_region(l, wire::kPageSize, 0, 0600).is_ok());
	PeerModule peer(peer_store.get());

	NodeFederation fed(local.get(), nullptr, kLocalModule, {peer.endpoint});
	auto all = fed.list_regions();
	REQUIRE(all.size() == n + 3);
	std::set<std::string> names;
	for (size_t i = 0; i < all.size(); i++) {
		names.insert(all[i].name);
		if (i > 0)
			REQUIRE(all[i - 1].name < all[i].name);
		bool is_local = all[i].name[0] != 'p' || all[i].name == "p02000x";
		CHECK(all[i].module == (is_local ? kLocalModule : kPeerModule));
	}
	CHECK(names.size() == all.size());
	CHECK(all.front().name == "a-first");
	CHECK(all.back().name == "z-last");
	CHECK(names.count("p02000x") == 1);
	std::snprintf(name, sizeof(name), "p%05u", n - 1);
	CHECK(names.count(name) == 1);
}
