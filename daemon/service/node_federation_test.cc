// NodeFederation's view of a peer module over the wire protocol: the whole
// region list (what the kmod table mirror uses) comes page by page, so a
// peer with more regions than one REGION_LIST response holds is listed
// whole, merged with the local module's in name order.
#include "daemon/service/node_federation.h"

#include <catch2/catch.hpp>

#include <cstdio>
#include <set>
#include <thread>

#include "daemon/service/module_service.h"
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

} // namespace

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
