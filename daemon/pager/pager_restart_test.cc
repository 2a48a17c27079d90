// A pager restarted under its clients (what a killed daemon leaves): the new
// one takes over a client's uffd, the faults blocked on it and the drops
// made while no daemon ran.
#include "daemon/pager/pager.h"

#include <catch2/catch.hpp>

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "daemon/pager/pager_fixture.h"

using namespace memfed;
using namespace memfed::pager;
using namespace memfed::pager::testing;

TEST_CASE("a restarted pager takes over a uffd with faults blocked on it", "[pager]")
{
	PageStoreDouble store;
	constexpr uint32_t kPages = 256;
	store.add_region("r", kPages);
	auto c = std::make_unique<TestClient>();
	TestClient::Mapped m;
	std::string path = "/tmp/memfed-pager-restart-" + std::to_string(getpid()) + ".sock";
	{
		control::Server server;
		REQUIRE(server.listen(path).is_ok());
		Pager pager(store, PagerConfig());
		pager.register_ops(server);
		REQUIRE(pager.start().is_ok());
		REQUIRE(server.start().is_ok());
		REQUIRE(c->attach(path).is_ok());
		auto mm = c->map("r", 0, kPages * kPage, 0, false);
		REQUIRE(mm.is_ok());
		m = *mm;
		m.addr[0] = 0xAB; // dirty, never written back before the "crash"
		CHECK(m.addr[kPage] == PageStoreDouble::pattern_byte(1, 1));
		// Stop without the client detaching first: what a killed
		// daemon leaves behind is the client's uffd with registrations.
		server.stop();
		pager.stop();
	}
	// No daemon: a faulting thread blocks in the kernel.
	std::atomic<int> got{-1};
	std::thread reader([&] { got = m.addr[100 * kPage]; });
	usleep(200 * 1000);
	CHECK(got == -1);

	control::Server server;
	REQUIRE(server.listen(path).is_ok());
	Pager pager(store, PagerConfig());
	pager.register_ops(server);
	REQUIRE(pager.start().is_ok());
	REQUIRE(server.start().is_ok());
	REQUIRE(c->reattach(path).is_ok());
	auto id = c->map_at("r", 0, reinterpret_cast<uint64_t>(m.addr), kPages * kPage, 0, false);
	REQUIRE(id.is_ok());
	reader.join();
	CHECK(got == PageStoreDouble::pattern_byte(1, 100));
	CHECK(m.addr[0] == 0xAB); // the page the process had is still its data
	m.id = *id;
	REQUIRE(c->unmap(m).is_ok());
	CHECK(store.read("r", 0, 1)[0] == 0xAB);
	c.reset();
	server.stop();
	pager.stop();
}

TEST_CASE("a drop the restarted pager read before the map reads as zero when reported", "[pager]")
{
	PageStoreDouble store;
	constexpr uint32_t kPages = 64;
	store.add_region("r", kPages);
	auto c = std::make_unique<TestClient>();
	TestClient::Mapped m;
	std::string path = "/tmp/memfed-pager-removed-" + std::to_string(getpid()) + ".sock";
	auto start = [&](control::Server &server, Pager &pager) {
		REQUIRE(server.listen(path).is_ok());
		pager.register_ops(server);
		REQUIRE(pager.start().is_ok());
		REQUIRE(server.start().is_ok());
	};
	{
		control::Server server;
		Pager pager(store, PagerConfig());
		start(server, pager);
		REQUIRE(c->attach(path).is_ok());
		auto mm = c->map("r", 0, kPages * kPage, 0, false);
		REQUIRE(mm.is_ok());
		m = *mm;
		CHECK(m.addr[5 * kPage] == PageStoreDouble::pattern_byte(1, 5));
		CHECK(m.addr[6 * kPage] == PageStoreDouble::pattern_byte(1, 6));
		server.stop();
		pager.stop();
	}
	// The program drops pages 5 and 6 while no daemon runs: its madvise
	// waits until the next pager reads the REMOVE event, before any map.
	std::thread dropper([&] { madvise(m.addr + 5 * kPage, 2 * kPage, MADV_DONTNEED); });
	control::Server server;
	Pager pager(store, PagerConfig());
	start(server, pager);
	REQUIRE(c->reattach(path).is_ok());
	dropper.join();
	// Page 5 is reported, page 6 is not (what the client could not know).
	auto id = c->map_at(
	        "r", 0, reinterpret_cast<uint64_t>(m.addr), kPages * kPage, 0, false,
	        nlohmann::json::array({{reinterpret_cast<uint64_t>(m.addr) + 5 * kPage, kPage}}));
	REQUIRE(id.is_ok());
	CHECK(m.addr[5 * kPage] == 0);
	CHECK(m.addr[6 * kPage] == PageStoreDouble::pattern_byte(1, 6));
	m.id = *id;
	REQUIRE(c->unmap(m).is_ok());
	CHECK(store.read("r", 5 * kPage, 1)[0] == 0); // the zeroes reached the module
	auto bad =
	        c->map_at("r", 0, reinterpret_cast<uint64_t>(m.addr), kPages * kPage, 0, false,
	                  nlohmann::json::array({{reinterpret_cast<uint64_t>(m.addr) + 1, kPage}}));
	CHECK(bad.status().code() == Code::kInvalidArgument);
	c.reset();
	server.stop();
	pager.stop();
}
