// Tests of TcpServer: misbehaving peers, many connections, a port in use,
// pipelining without reading, running out of file descriptors, and HELLO.
#include "daemon/transport/test_transport.h"

using namespace memfed;
using namespace memfed::transport_test;
using wire::kPageSize;

TEST_CASE("TcpServer: a garbage-sending peer is dropped, a good one keeps working")
{
	ServerThread srv;
	auto good = SyncClient::connect(srv.endpoint(), kClientId);
	REQUIRE(good.is_ok());
	REQUIRE((*good)->hello().is_ok());

	SECTION("garbage bytes instead of HELLO")
	{
		auto bad = SyncClient::connect(srv.endpoint(), kClientId);
		REQUIRE(bad.is_ok());
		std::vector<uint8_t> junk(200, 0xab);
		REQUIRE((*bad)->send_raw(junk).is_ok());
		CHECK(peer_closed((*bad)->fd()));
	}
	SECTION("a request before HELLO")
	{
		auto bad = SyncClient::connect(srv.endpoint(), kClientId);
		REQUIRE(bad.is_ok());
		std::vector<uint8_t> page(kPageSize);
		CHECK((*bad)->read_pages(kRegion, 0, 1, page.data()).code() == Code::kUnavailable);
	}
	SECTION("a WRITE with a corrupt payload is not applied")
	{
		auto bad = SyncClient::connect(srv.endpoint(), kClientId);
		REQUIRE(bad.is_ok());
		REQUIRE((*bad)->hello().is_ok());
		wire::Header h{};
		h.type = static_cast<uint8_t>(wire::MsgType::kWrite);
		h.tclass = 2;
		h.hop_limit = 4;
		h.src_module = kClientId.value;
		h.request_id = 5;
		h.region_id = kRegion;
		h.offset = 10 * kPageSize;
		h.count = 1;
		std::vector<uint8_t> page(kPageSize, 0xee);
		auto msg = encode(h, page);
		msg[wire::kHeaderSize + 100] ^= 1; // payload no longer matches its crc
		REQUIRE((*bad)->send_raw(msg).is_ok());
		CHECK(peer_closed((*bad)->fd()));
		std::vector<uint8_t> now(kPageSize), want(kPageSize);
		REQUIRE((*good)->read_pages(kRegion, 10 * kPageSize, 1, now.data()).is_ok());
		MemHandler::fill_page(want.data(), 10, 0);
		CHECK(now == want);
	}
	SECTION("a header claiming an oversized payload")
	{
		auto bad = SyncClient::connect(srv.endpoint(), kClientId);
		REQUIRE(bad.is_ok());
		REQUIRE((*bad)->hello().is_ok());
		wire::Header h{};
		h.type = static_cast<uint8_t>(wire::MsgType::kStat);
		h.tclass = 1;
		h.hop_limit = 4;
		h.request_id = 6;
		auto msg = encode(h);
		uint32_t huge = 0x7fffffff;
		std::memcpy(&msg[12], &huge, 4);
		// Re-seal the header so only the length is wrong.
		wire::Header d = wire::decode_header(msg.data());
		wire::encode_header_raw(d, msg.data());
		REQUIRE((*bad)->send_raw(msg).is_ok());
		CHECK(peer_closed((*bad)->fd()));
	}
	SECTION("a HELLO with no common version gets an error, then close")
	{
		auto bad = SyncClient::connect(srv.endpoint(), kClientId);
		REQUIRE(bad.is_ok());
		REQUIRE((*bad)->send_raw(hello_bytes(wire::kWireVersion + 1, 9)).is_ok());
		uint8_t hb[wire::kHeaderSize];
		REQUIRE(recv_full((*bad)->fd(), hb, sizeof(hb)));
		wire::Header r;
		REQUIRE(wire::validate_header({hb, sizeof(hb)}, &r).is_ok());
		CHECK(r.status == static_cast<uint16_t>(Code::kProtocol));
		std::vector<uint8_t> msg(r.payload_len);
		REQUIRE(recv_full((*bad)->fd(), msg.data(), msg.size()));
		CHECK(std::string(msg.begin(), msg.end()).find("no common wire version") !=
		      std::string::npos);
		CHECK(peer_closed((*bad)->fd()));
	}
	SECTION("a repeated HELLO")
	{
		auto bad = SyncClient::connect(srv.endpoint(), kClientId);
		REQUIRE(bad.is_ok());
		REQUIRE((*bad)->hello().is_ok());
		CHECK((*bad)->hello().code() == Code::kUnavailable);
	}
	std::vector<uint8_t> page(kPageSize), want(kPageSize);
	REQUIRE((*good)->read_pages(kRegion, 2 * kPageSize, 1, page.data()).is_ok());
	MemHandler::fill_page(want.data(), 2, 0);
	CHECK(page == want);
}

TEST_CASE("TcpServer: many connections at once")
{
	ServerThread srv;
	std::vector<std::unique_ptr<SyncClient>> cs;
	for (int i = 0; i < 40; i++) {
		auto c = SyncClient::connect(srv.endpoint(), ModuleId{kClientId.value + i});
		REQUIRE(c.is_ok());
		REQUIRE((*c)->hello().is_ok());
		cs.push_back(std::move(*c));
	}
	std::vector<uint8_t> page(kPageSize), want(kPageSize);
	for (int i = 0; i < 40; i++) {
		REQUIRE(cs[i]->read_pages(kRegion, uint64_t(i) * kPageSize, 1, page.data())
		                .is_ok());
		MemHandler::fill_page(want.data(), i, 0);
		CHECK(page == want);
	}
	CHECK(srv.on_loop([&] { return srv.server->connections(); }) == 40);
	cs.resize(10);
	// Closed connections are reaped; wait for the server to see the closes.
	size_t open = 0;
	for (int i = 0;
	     i < 1000 && (open = srv.on_loop([&] { return srv.server->connections(); })) != 10; i++)
		usleep(1000);
	CHECK(open == 10);
}

TEST_CASE("TcpServer: a port in use is reported as kBusy")
{
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	MemHandler h;
	auto a = TcpServer::listen(loop->get(), "127.0.0.1:0", ServerIdentity{kServerId}, &h);
	REQUIRE(a.is_ok());
	std::string ep = "127.0.0.1:" + std::to_string((*a)->port());
	auto b = TcpServer::listen(loop->get(), ep, ServerIdentity{kServerId}, &h);
	REQUIRE_FALSE(b.is_ok());
	CHECK(b.status().code() == Code::kBusy);
	CHECK(b.status().message() ==
	      "port " + std::to_string((*a)->port()) +
	              " on 127.0.0.1 is in use (another memfedd? set --listen)");
}

TEST_CASE("TcpServer: a peer that pipelines without reading, then half-closes, is served in order")
{
	ServerThread srv;
	auto c = SyncClient::connect(srv.endpoint(), kClientId);
	REQUIRE(c.is_ok());
	REQUIRE((*c)->hello().is_ok());
	// 200 READs of 64 pages: 50 MiB of replies, far past the server's send
	// high-water mark, so it must stop reading and resume as we drain.
	constexpr int kN = 200;
	constexpr uint32_t kCount = 64;
	std::vector<uint8_t> reqs;
	for (int i = 0; i < kN; i++) {
		wire::Header h{};
		h.version = wire::kWireVersion;
		h.type = static_cast<uint8_t>(wire::MsgType::kRead);
		h.tclass = 2;
		h.hop_limit = 4;
		h.src_module = kClientId.value;
		h.request_id = 1000 + i;
		h.region_id = kRegion;
		h.offset = uint64_t(i % 16) * kCount * kPageSize;
		h.count = kCount;
		auto b = encode(h);
		reqs.insert(reqs.end(), b.begin(), b.end());
	}
	REQUIRE((*c)->send_raw(reqs).is_ok());
	// Half-close: the server must still answer everything it received.
	REQUIRE(shutdown((*c)->fd(), SHUT_WR) == 0);
	std::vector<uint8_t> payload(size_t{kCount} * kPageSize), want(kPageSize);
	for (int i = 0; i < kN; i++) {
		INFO("reply " << i);
		uint8_t hb[wire::kHeaderSize];
		REQUIRE(recv_full((*c)->fd(), hb, sizeof(hb)));
		wire::Header r;
		REQUIRE(wire::validate_header({hb, sizeof(hb)}, &r).is_ok());
		REQUIRE(r.request_id == uint64_t(1000 + i));
		REQUIRE(r.status == 0);
		REQUIRE(recv_full((*c)->fd(), payload.data(), payload.size()));
		REQUIRE(wire::check_payload(r, payload).is_ok());
		uint32_t first = (i % 16) * kCount;
		MemHandler::fill_page(want.data(), first, 0);
		CHECK(std::memcmp(payload.data(), want.data(), kPageSize) == 0);
	}
	CHECK(peer_closed((*c)->fd()));
}

TEST_CASE("TcpServer: out of file descriptors, accepting pauses and serving goes on")
{
	ServerThread srv;
	auto good = SyncClient::connect(srv.endpoint(), kClientId);
	REQUIRE(good.is_ok());
	REQUIRE((*good)->hello().is_ok());
	std::vector<int> socks;
	for (int i = 0; i < 4; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		REQUIRE(fd >= 0);
		timeval tv{10, 0};
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		socks.push_back(fd);
	}
	// No fd can be created while the limit is at the highest one in use.
	int highest = 0;
	for (const auto &e : std::filesystem::directory_iterator("/proc/self/fd"))
		highest = std::max(highest, std::stoi(e.path().filename().string()));
	rlimit old{};
	REQUIRE(getrlimit(RLIMIT_NOFILE, &old) == 0);
	rlimit low = old;
	low.rlim_cur = highest + 1;
	REQUIRE(setrlimit(RLIMIT_NOFILE, &low) == 0);
	std::vector<int> fillers; // take the free fd numbers below the limit
	for (int fd; (fd = open("/dev/null", O_RDONLY | O_CLOEXEC)) >= 0;)
		fillers.push_back(fd);
	CHECK(errno == EMFILE);
	sockaddr_in sa{};
	sa.sin_family = AF_INET;
	sa.sin_port = htons(srv.port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	for (int fd : socks)
		CHECK(connect(fd, reinterpret_cast<sockaddr *>(&sa), sizeof(sa)) == 0);
	std::vector<uint8_t> page(kPageSize), want(kPageSize);
	Status st = (*good)->read_pages(kRegion, 5 * kPageSize, 1, page.data());
	usleep(50 * 1000); // let the server try to accept while starved
	for (int fd : fillers)
		close(fd);
	REQUIRE(setrlimit(RLIMIT_NOFILE, &old) == 0);
	REQUIRE(st.is_ok());
	MemHandler::fill_page(want.data(), 5, 0);
	CHECK(page == want);
	// Once fds are available again, the waiting connections are served.
	for (int fd : socks) {
		auto hello = hello_bytes();
		REQUIRE(send(fd, hello.data(), hello.size(), MSG_NOSIGNAL) ==
		        ssize_t(hello.size()));
		uint8_t hb[wire::kHeaderSize];
		REQUIRE(recv_full(fd, hb, sizeof(hb)));
		wire::Header r;
		REQUIRE(wire::validate_header({hb, sizeof(hb)}, &r).is_ok());
		CHECK(r.status == 0);
		close(fd);
	}
}

TEST_CASE("TcpServer: a connection without HELLO is closed after the timeout")
{
	ServerThread srv(200);
	auto silent = SyncClient::connect(srv.endpoint(), kClientId);
	REQUIRE(silent.is_ok());
	auto good = SyncClient::connect(srv.endpoint(), kClientId);
	REQUIRE(good.is_ok());
	REQUIRE((*good)->hello().is_ok());
	CHECK(peer_closed((*silent)->fd())); // within the client's 5 s receive timeout
	usleep(300 * 1000);
	// A connection that said HELLO in time is not affected.
	std::vector<uint8_t> page(kPageSize);
	CHECK((*good)->read_pages(kRegion, 0, 1, page.data()).is_ok());
}
