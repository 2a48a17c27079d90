// Tests of the transport's small parts: Endpoint parsing and EventLoop's
// post and stop from another thread.
#include "daemon/transport/test_transport.h"

using namespace memfed;
using namespace memfed::transport_test;
using wire::kPageSize;

TEST_CASE("Endpoint parsing names the bad text")
{
	CHECK(Endpoint::parse("127.0.0.1:7700")->port == 7700);
	CHECK(Endpoint::parse("[::1]:80")->host == "::1");
	CHECK(Endpoint::parse("[::1]:80")->to_string() == "[::1]:80");
	for (const char *bad : {"", "host", ":1", "h:99999", "h:x", "::1:80", "[::1:80"}) {
		auto r = Endpoint::parse(bad);
		CHECK_FALSE(r.is_ok());
		CHECK(r.status().message().find("endpoint '" + std::string(bad) + "'") == 0);
	}
	auto r = SyncClient::connect("127.0.0.1:1", kClientId, 1000);
	REQUIRE_FALSE(r.is_ok());
	CHECK(r.status().code() == Code::kUnavailable);
}

TEST_CASE("EventLoop: post and stop from another thread")
{
	auto loop = EventLoop::create(8);
	REQUIRE(loop.is_ok());
	std::atomic<int> ran{0};
	std::thread t([&] { (*loop)->run(); });
	for (int i = 0; i < 100; i++)
		(*loop)->post([&] { ran++; });
	(*loop)->post([&] { (*loop)->stop(); });
	t.join();
	CHECK(ran == 100);
	CHECK((*loop)->stopping());
}
