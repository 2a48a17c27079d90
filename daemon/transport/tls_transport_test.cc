// Tests of the TCP transport over TLS 1.3: TcpServer with a TlsContext on an
// ephemeral loopback port, TcpChannel and SyncClient against it, raw
// sockets playing old and hostile peers, and an in-test TCP relay that
// records, flips and replays bytes in transit.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>
#include <vector>

#include "daemon/common/crc32c.h"
#include "daemon/transport/endpoint.h"
#include "daemon/transport/sync_client.h"
#include "daemon/transport/tcp_channel.h"
#include "daemon/transport/tcp_server.h"
#include "daemon/trust/tls_context.h"
#include "daemon/wire/codec.h"

using namespace memfed;
using wire::kPageSize;

namespace
{

constexpr uint32_t kRegion = 7;
constexpr uint32_t kPages = 256;
const ModuleId kServerId{0x020000000001};
const ModuleId kClientId{0x020000000099};

trust::NodeKey new_key()
{
	auto k = trust::generate_node_key();
	REQUIRE(k);
	return *k;
}

std::shared_ptr<trust::TlsContext> tls_context(const trust::NodeKey &k,
                                               std::vector<trust::TrustedPeer> peers,
                                               trust::TlsLimits lim = {})
{
	auto c = trust::TlsContext::create(k, std::make_shared<trust::TrustedPeers>(peers), lim);
	REQUIRE(c);
	return *c;
}

void fill_page(uint8_t *page, uint32_t index, uint8_t salt)
{
	for (uint32_t i = 0; i < kPageSize; i++)
		page[i] = static_cast<uint8_t>(index * 31 + i + salt);
	std::memcpy(page, &index, sizeof(index));
}

// A module's data path in memory (one region at FA 0); remembers who asked.
class MemHandler : public RequestHandler
{
public:
	MemHandler() : pool(size_t{kPages} * kPageSize)
	{
		for (uint32_t p = 0; p < kPages; p++)
			fill_page(&pool[size_t{p} * kPageSize], p, 0);
	}
	void handle(const ConnInfo &conn, const wire::Header &req, std::span<const uint8_t> payload,
	            Reply &reply) override
	{
		{
			std::lock_guard lk(mu);
			requests++;
			last_key = conn.peer_key;
			last_authenticated = conn.authenticated;
			last_peer = conn.peer;
			last_name = conn.peer_name;
		}
		auto type = static_cast<wire::MsgType>(req.type);
		if (type == wire::MsgType::kRead || type == wire::MsgType::kWrite) {
			if (req.offset + uint64_t{req.count} * kPageSize > pool.size())
				return reply.fail(Status(Code::kOutOfRange, "past the end"));
			size_t len = size_t{req.count} * kPageSize;
			if (type == wire::MsgType::kRead) {
				auto buf = reply.payload_buffer(len);
				std::memcpy(buf.data(), &pool[req.offset], len);
				// A damaged copy: the pages do not match their crc.
				if (req.offset == damaged_offset)
					reply.set_payload_crc(crc32c(buf.data(), len) ^ 1);
			} else
				std::memcpy(&pool[req.offset], payload.data(), len);
			return;
		}
		if (type == wire::MsgType::kRegionLookup)
			return reply.set_payload(payload); // echo
		reply.fail(Status(Code::kInvalidArgument, "unsupported"));
	}
	std::vector<uint8_t> pool;
	std::atomic<uint64_t> damaged_offset{UINT64_MAX}; // READs at this offset are damaged
	std::mutex mu;
	uint64_t requests = 0;
	trust::PublicKey last_key{};
	bool last_authenticated = false;
	std::string last_peer, last_name;
};

// A TcpServer on its own loop thread; `tls` null: plaintext.
class ServerThread
{
public:
	ServerThread(std::shared_ptr<trust::TlsContext> tls, const std::string &host = "127.0.0.1",
	             int hello_timeout_ms = 3000)
	{
		std::promise<Status> started;
		auto fut = started.get_future();
		thread_ = std::thread([this, &started, tls, host, hello_timeout_ms] {
			auto loop = EventLoop::create();
			if (!loop) {
				started.set_value(loop.status());
				return;
			}
			loop_ = loop->get();
			ServerIdentity id{kServerId, wire::kCapModule, uint64_t{kPages} * kPageSize,
			                  tls};
			auto srv = TcpServer::listen(loop_, host + ":0", id, &handler);
			if (!srv) {
				started.set_value(srv.status());
				return;
			}
			port = (*srv)->port();
			(*srv)->set_hello_timeout_ms(hello_timeout_ms);
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
	uint64_t requests()
	{
		std::lock_guard lk(handler.mu);
		return handler.requests;
	}

	MemHandler handler;
	uint16_t port = 0;

private:
	EventLoop *loop_ = nullptr;
	std::thread thread_;
};

struct Waiter : Completion {
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t> p) override
	{
		done = true;
		status = st;
		data.assign(p.begin(), p.end());
	}
	bool done = false;
	Status status;
	std::vector<uint8_t> data;
};

template <typename Pred> void drive(EventLoop *loop, Pred pred)
{
	for (int i = 0; i < 100000 && !pred(); i++)
		loop->run_once(100);
	REQUIRE(pred());
}

// A TCP relay between a client and the server, one connection at a time:
// records what the client sends, and flips one bit of the server's next
// chunk to the client when asked.
class Relay
{
public:
	explicit Relay(uint16_t server_port) : server_port_(server_port)
	{
		auto fd = listen_tcp(Endpoint{"127.0.0.1", 0});
		REQUIRE(fd);
		lfd_ = *fd;
		port = local_port(lfd_);
		thread_ = std::thread([this] { run(); });
	}
	~Relay()
	{
		stop_ = true;
		thread_.join();
		::close(lfd_);
	}
	std::string endpoint() const { return "127.0.0.1:" + std::to_string(port); }
	std::string recorded()
	{
		std::lock_guard lk(mu_);
		return c2s_;
	}

	uint16_t port = 0;
	std::atomic<bool> flip_next{false};
	std::atomic<int> flipped{0};

private:
	void run()
	{
		while (!stop_) {
			pollfd p{lfd_, POLLIN, 0};
			if (poll(&p, 1, 50) <= 0)
				continue;
			int c = accept4(lfd_, nullptr, nullptr, SOCK_CLOEXEC);
			if (c < 0)
				continue;
			int fl = fcntl(c, F_GETFL);
			fcntl(c, F_SETFL, fl & ~O_NONBLOCK);
			auto s = connect_tcp(Endpoint{"127.0.0.1", server_port_}, 2000);
			if (s) {
				pump(c, *s);
				::close(*s);
			}
			::close(c);
		}
	}
	static bool send_all(int fd, const char *p, size_t n)
	{
		while (n > 0) {
			ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
			if (w <= 0)
				return false;
			p += w;
			n -= w;
		}
		return true;
	}
	void pump(int c, int s)
	{
		pollfd fds[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
		std::vector<char> buf(1 << 16);
		while (!stop_) {
			if (poll(fds, 2, 50) <= 0)
				continue;
			for (int i = 0; i < 2; i++) {
				if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
					continue;
				ssize_t n = recv(fds[i].fd, buf.data(), buf.size(), 0);
				if (n <= 0)
					return;
				if (i == 0) {
					std::lock_guard lk(mu_);
					c2s_.append(buf.data(), n);
				} else if (flip_next.exchange(false)) {
					// Inside the first record's body (a chunk asked
					// for after a completed exchange starts a record),
					// never in a length field.
					buf[std::min<ssize_t>(100, n - 1)] ^= 0x04;
					flipped++;
				}
				if (!send_all(fds[1 - i].fd, buf.data(), n))
					return;
			}
		}
	}

	uint16_t server_port_;
	int lfd_ = -1;
	std::atomic<bool> stop_{false};
	std::thread thread_;
	std::mutex mu_;
	std::string c2s_;
};

// Captures what is written to stderr (the log) while it lives.
class StderrCapture
{
public:
	StderrCapture()
	{
		std::fflush(stderr);
		path_ = "/tmp/tls_transport_test_log." + std::to_string(getpid());
		fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
		saved_ = ::dup(2);
		::dup2(fd_, 2);
	}
	~StderrCapture() { text(); }
	std::string text()
	{
		if (saved_ >= 0) {
			std::fflush(stderr);
			::dup2(saved_, 2);
			::close(saved_);
			::close(fd_);
			saved_ = -1;
			std::ifstream f(path_);
			std::stringstream ss;
			ss << f.rdbuf();
			kept_ = ss.str();
			std::fputs(kept_.c_str(), stderr);
			::unlink(path_.c_str());
		}
		return kept_;
	}

private:
	std::string path_, kept_;
	int fd_ = -1, saved_ = -1;
};

// Waits until `pred` holds (the server's loop thread acts on its own time).
template <typename Pred> bool eventually(Pred pred)
{
	for (int i = 0; i < 500 && !pred(); i++)
		std::this_thread::sleep_for(std::chrono::milliseconds(10));
	return pred();
}

// Everything a raw socket receives until the peer closes (or 5 s pass).
std::vector<uint8_t> read_to_eof(int fd, bool *eof = nullptr)
{
	timeval tv{5, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	std::vector<uint8_t> all;
	uint8_t buf[4096];
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (eof != nullptr)
				*eof = n == 0 || errno == ECONNRESET;
			break;
		}
		all.insert(all.end(), buf, buf + n);
	}
	return all;
}

struct Pair {
	trust::NodeKey server_key = new_key();
	trust::NodeKey client_key = new_key();
	std::shared_ptr<trust::TlsContext> server_tls;
	std::shared_ptr<trust::TlsContext> client_tls;
	explicit Pair(trust::TlsLimits lim = {})
	{
		server_tls = tls_context(server_key, {{client_key.pub, "car", ""}}, lim);
		client_tls = tls_context(client_key, {{server_key.pub, "lamp", ""}}, lim);
	}
};

} // namespace

TEST_CASE("TLS transport: SyncClient and TcpChannel round-trips with mutual authentication")
{
	Pair keys;
	ServerThread srv(keys.server_tls);

	auto c = SyncClient::connect(srv.endpoint(), kClientId, 5000, keys.client_tls);
	REQUIRE(c);
	REQUIRE((*c)->hello().to_string() == "ok");
	CHECK((*c)->peer().authenticated);
	CHECK((*c)->peer().key == keys.server_key.pub);
	CHECK((*c)->peer().key_name == "lamp");
	CHECK((*c)->peer().module == kServerId);
	CHECK((*c)->peer().version == wire::kWireVersion);
	std::vector<uint8_t> page(2 * kPageSize);
	fill_page(page.data(), 1000, 3);
	fill_page(page.data() + kPageSize, 1001, 3);
	REQUIRE((*c)->write_pages(kRegion, 10 * kPageSize, 2, page.data()).is_ok());
	std::vector<uint8_t> back(2 * kPageSize);
	REQUIRE((*c)->read_pages(kRegion, 10 * kPageSize, 2, back.data()).is_ok());
	CHECK((back == page));
	{
		std::lock_guard lk(srv.handler.mu);
		CHECK(srv.handler.last_authenticated);
		CHECK(srv.handler.last_key == keys.client_key.pub);
		CHECK(srv.handler.last_name == "car");
	}

	auto loop = EventLoop::create();
	REQUIRE(loop);
	TcpChannel::Options opts;
	opts.tls = keys.client_tls;
	auto ch = TcpChannel::connect(loop->get(), srv.endpoint(), kClientId, opts);
	REQUIRE(ch);
	CHECK((*ch)->peer().key == keys.server_key.pub);
	// 64 READs in flight, of 1 to 4 pages.
	std::vector<std::vector<uint8_t>> dst(64);
	std::vector<Waiter> w(64);
	for (uint32_t i = 0; i < 64; i++) {
		uint32_t n = 1 + i % 4;
		dst[i].resize(size_t{n} * kPageSize);
		(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, uint64_t{i} * kPageSize, n,
		                  dst[i].data(), &w[i]);
	}
	drive(loop->get(), [&] {
		return std::all_of(w.begin(), w.end(), [](const Waiter &x) { return x.done; });
	});
	for (uint32_t i = 0; i < 64; i++) {
		REQUIRE(w[i].status.is_ok());
		CHECK(std::memcmp(dst[i].data(), &srv.handler.pool[size_t{i} * kPageSize],
		                  dst[i].size()) == 0);
	}
	// A 1 MiB WRITE, read back.
	std::vector<uint8_t> big(size_t{wire::kMaxPagesPerRequest} * kPageSize);
	for (uint32_t p = 0; p < wire::kMaxPagesPerRequest; p++)
		fill_page(&big[size_t{p} * kPageSize], p, 9);
	Waiter ww, wr;
	(*ch)->write_pages(wire::TrafficClass::kBulk, kRegion, 0, wire::kMaxPagesPerRequest,
	                   big.data(), &ww);
	std::vector<uint8_t> big_back(big.size());
	(*ch)->read_pages(wire::TrafficClass::kBulk, kRegion, 0, wire::kMaxPagesPerRequest,
	                  big_back.data(), &wr);
	drive(loop->get(), [&] { return ww.done && wr.done; });
	REQUIRE(ww.status.is_ok());
	REQUIRE(wr.status.is_ok());
	CHECK((big_back == big));
	// call(): a control request and its payload.
	wire::Header h{};
	h.type = static_cast<uint8_t>(wire::MsgType::kRegionLookup);
	h.tclass = static_cast<uint8_t>(wire::TrafficClass::kControl);
	std::vector<uint8_t> name = wire::encode_name("cfg");
	Waiter wc;
	(*ch)->call(h, name, &wc);
	drive(loop->get(), [&] { return wc.done; });
	REQUIRE(wc.status.is_ok());
	CHECK(wc.data == name);
}

TEST_CASE("TLS transport: an untrusted client key is refused by the module, logged once")
{
	Pair keys;
	auto stranger = new_key();
	auto stranger_tls = tls_context(stranger, {{keys.server_key.pub, "", ""}});
	ServerThread srv(keys.server_tls);
	std::string log;
	Status st;
	{
		StderrCapture cap;
		auto c = SyncClient::connect(srv.endpoint(), kClientId, 5000, stranger_tls);
		REQUIRE(c);
		st = (*c)->hello();
		// The module logs before it sends the alert the client read.
		log = cap.text();
	}
	CHECK(st.code() == Code::kPermission);
	CHECK_THAT(st.message(),
	           Catch::Contains("memfedctl peer add " + trust::encode_key(stranger.pub)));
	std::string key = trust::encode_key(stranger.pub);
	size_t lines_with_key = 0;
	std::istringstream in(log);
	for (std::string line; std::getline(in, line);)
		if (line.find(key) != std::string::npos)
			lines_with_key++;
	CHECK(lines_with_key == 1);
	CHECK_THAT(log, Catch::Contains("memfedctl peer add " + key));
	CHECK(srv.requests() == 0);
}

TEST_CASE("TLS transport: an untrusted module key is refused by the client")
{
	Pair keys;
	auto other = new_key();
	auto other_tls = tls_context(other, {{keys.client_key.pub, "", ""}});
	ServerThread srv(other_tls); // trusts the client; the client does not trust it
	auto c = SyncClient::connect(srv.endpoint(), kClientId, 5000, keys.client_tls);
	REQUIRE(c);
	Status st = (*c)->hello();
	CHECK(st.code() == Code::kPermission);
	CHECK_THAT(st.message(), Catch::Contains(trust::encode_key(other.pub)));
	auto loop = EventLoop::create();
	REQUIRE(loop);
	TcpChannel::Options opts;
	opts.tls = keys.client_tls;
	auto ch = TcpChannel::connect(loop->get(), srv.endpoint(), kClientId, opts);
	REQUIRE_FALSE(ch);
	CHECK(ch.status().code() == Code::kPermission);
	CHECK(srv.requests() == 0);
}

TEST_CASE("TLS transport: a trusted key from another address and port still works")
{
	Pair keys;
	// The client's key is trusted with an endpoint it does not use.
	keys.server_tls->peers().replace({{keys.client_key.pub, "car", "10.9.9.9:7700"}});
	ServerThread srv(keys.server_tls, "[::]"); // IPv4 and IPv6
	std::vector<std::string> peers;
	for (std::string host : {"127.0.0.1", "[::1]", "127.0.0.1"}) {
		auto c = SyncClient::connect(host + ":" + std::to_string(srv.port), kClientId, 5000,
		                             keys.client_tls);
		REQUIRE(c);
		REQUIRE((*c)->hello().to_string() == "ok");
		std::vector<uint8_t> p(kPageSize);
		REQUIRE((*c)->read_pages(kRegion, 0, 1, p.data()).is_ok());
		std::lock_guard lk(srv.handler.mu);
		CHECK(srv.handler.last_key == keys.client_key.pub);
		CHECK(srv.handler.last_name == "car");
		peers.push_back(srv.handler.last_peer);
	}
	// Three endpoints (two addresses, new ports), one identity.
	CHECK(peers[0] != peers[1]);
	CHECK(peers[0] != peers[2]);
	CHECK(peers[1].find("::1") != std::string::npos);
}

TEST_CASE("TLS transport: a version 2, 3 or 4 client gets the refusal and no region byte")
{
	const uint8_t old = GENERATE(uint8_t{2}, uint8_t{3}, uint8_t{4});
	INFO("peer speaks wire version " << int(old));
	Pair keys;
	ServerThread srv(keys.server_tls);
	auto fd = connect_tcp(Endpoint{"127.0.0.1", srv.port}, 2000);
	REQUIRE(fd);
	// HELLO as an older peer sends it, and a READ right behind it.
	wire::Header h{};
	h.version = old;
	h.type = static_cast<uint8_t>(wire::MsgType::kHello);
	h.tclass = 1;
	h.hop_limit = 4;
	h.src_module = kClientId.value;
	h.request_id = 1;
	wire::HelloRequest r;
	r.min_version = old;
	r.max_version = old;
	uint8_t p[wire::kHelloRequestSize];
	wire::encode_hello_request(r, p);
	std::vector<uint8_t> out(wire::kHeaderSize + sizeof(p));
	wire::encode_header(h, p, out.data());
	std::memcpy(out.data() + wire::kHeaderSize, p, sizeof(p));
	wire::Header rd{};
	rd.version = old;
	rd.type = static_cast<uint8_t>(wire::MsgType::kRead);
	rd.tclass = 0;
	rd.hop_limit = 4;
	rd.src_module = kClientId.value;
	rd.dst_module = kServerId.value;
	rd.request_id = 2;
	rd.region_id = kRegion;
	rd.count = 1;
	uint8_t rh[wire::kHeaderSize];
	wire::encode_header(rd, {}, rh);
	out.insert(out.end(), rh, rh + sizeof(rh));
	REQUIRE(send(*fd, out.data(), out.size(), MSG_NOSIGNAL) == ssize_t(out.size()));
	std::vector<uint8_t> got = read_to_eof(*fd);
	::close(*fd);
	REQUIRE(got.size() >= wire::kHeaderSize);
	wire::Header resp = wire::decode_header(got.data());
	CHECK(resp.type == static_cast<uint8_t>(wire::MsgType::kHello));
	CHECK(resp.version == old); // readable by the old peer
	CHECK(resp.status == static_cast<uint16_t>(Code::kProtocol));
	// Exactly one response, then the connection closed.
	REQUIRE(got.size() == wire::kHeaderSize + resp.payload_len);
	std::string msg(got.begin() + wire::kHeaderSize, got.end());
	CHECK_THAT(msg, Catch::Contains("wire version " + std::to_string(old) + " is refused"));
	CHECK_THAT(msg, Catch::Contains("requires version 5 (authenticated and encrypted)"));
	CHECK_THAT(msg, Catch::Contains("upgrade the peer"));
	CHECK(srv.requests() == 0);
}

TEST_CASE("TLS transport: a peer that passes the gate and stalls is closed by the HELLO timer")
{
	Pair keys;
	ServerThread srv(keys.server_tls, "127.0.0.1", 300);
	auto fd = connect_tcp(Endpoint{"127.0.0.1", srv.port}, 2000);
	REQUIRE(fd);
	wire::Header h{};
	h.version = wire::kWireVersion;
	h.type = static_cast<uint8_t>(wire::MsgType::kHello);
	h.tclass = 1;
	h.hop_limit = 4;
	h.src_module = kClientId.value;
	h.request_id = 1;
	uint8_t p[wire::kHelloRequestSize];
	wire::encode_hello_request(wire::HelloRequest{}, p);
	std::vector<uint8_t> out(wire::kHeaderSize + sizeof(p));
	wire::encode_header(h, p, out.data());
	std::memcpy(out.data() + wire::kHeaderSize, p, sizeof(p));
	REQUIRE(send(*fd, out.data(), out.size(), MSG_NOSIGNAL) == ssize_t(out.size()));
	// The gate's answer (kCapTls and nothing else of the module), then
	// silence from us: the module closes (read_to_eof gives up after 5 s).
	bool closed = false;
	std::vector<uint8_t> got = read_to_eof(*fd, &closed);
	::close(*fd);
	CHECK(closed);
	REQUIRE(got.size() == wire::kHeaderSize + wire::kHelloResponseSize);
	auto resp = wire::decode_hello_response(
	        {got.data() + wire::kHeaderSize, wire::kHelloResponseSize});
	REQUIRE(resp);
	CHECK(resp->capabilities == wire::kCapTls);
	CHECK(resp->capacity_bytes == 0);
	CHECK(srv.requests() == 0);
}

TEST_CASE("TLS transport: a version 5 client names a version 4 module")
{
	// A stand-in for a version 4 module (that code is gone): it answers a
	// version 5 HELLO as a version 4 module did, with its exact error text.
	auto lfd = listen_tcp(Endpoint{"127.0.0.1", 0});
	REQUIRE(lfd);
	uint16_t port = local_port(*lfd);
	std::thread old([fd = *lfd] {
		pollfd p{fd, POLLIN, 0};
		poll(&p, 1, 5000);
		int c = accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
		int fl = fcntl(c, F_GETFL);
		fcntl(c, F_SETFL, fl & ~O_NONBLOCK);
		uint8_t in[wire::kHeaderSize + wire::kHelloRequestSize];
		size_t got = 0;
		while (got < sizeof(in)) {
			ssize_t n = recv(c, in + got, sizeof(in) - got, 0);
			if (n <= 0)
				break;
			got += n;
		}
		wire::Header req = wire::decode_header(in);
		std::string msg = "no common wire version: peer speaks 5..5, this module 4..4";
		wire::Header h{};
		h.version = 4;
		h.type = req.type;
		h.tclass = req.tclass;
		h.hop_limit = 16;
		h.flags = wire::kFlagResponse;
		h.status = static_cast<uint16_t>(Code::kProtocol);
		h.src_module = kServerId.value;
		h.dst_module = req.src_module;
		h.request_id = req.request_id;
		std::span<const uint8_t> pay(reinterpret_cast<const uint8_t *>(msg.data()),
		                             msg.size());
		uint8_t hb[wire::kHeaderSize];
		wire::encode_header(h, pay, hb);
		send(c, hb, sizeof(hb), MSG_NOSIGNAL);
		send(c, msg.data(), msg.size(), MSG_NOSIGNAL);
		::close(c);
	});
	Pair keys;
	auto c = SyncClient::connect("127.0.0.1:" + std::to_string(port), kClientId, 5000,
	                             keys.client_tls);
	REQUIRE(c);
	Status st = (*c)->hello();
	old.join();
	::close(*lfd);
	CHECK(st.code() == Code::kProtocol);
	CHECK_THAT(st.message(),
	           Catch::Contains("speaks an older wire version than 5; upgrade it"));
}

TEST_CASE("TLS transport: no downgrade either way between TLS and plaintext")
{
	Pair keys;
	{
		ServerThread plain(nullptr);
		auto c = SyncClient::connect(plain.endpoint(), kClientId, 5000, keys.client_tls);
		REQUIRE(c);
		Status st = (*c)->hello();
		CHECK(st.code() == Code::kProtocol);
		CHECK_THAT(st.message(), Catch::Contains("does not offer TLS"));
	}
	{
		ServerThread secure(keys.server_tls);
		auto c = SyncClient::connect(secure.endpoint(), kClientId, 5000, nullptr);
		REQUIRE(c);
		Status st = (*c)->hello();
		CHECK(st.code() == Code::kPermission);
		CHECK_THAT(st.message(), Catch::Contains("requires authenticated, encrypted"));
		// And it cannot just go on in plaintext: the module closes on it.
		std::vector<uint8_t> p(kPageSize);
		CHECK_FALSE((*c)->read_pages(kRegion, 0, 1, p.data()).is_ok());
		CHECK(secure.requests() == 0);
	}
}

TEST_CASE("TLS transport: a bit flipped in transit fails the request, never a wrong page")
{
	Pair keys;
	ServerThread srv(keys.server_tls);
	Relay relay(srv.port);
	auto loop = EventLoop::create();
	REQUIRE(loop);
	TcpChannel::Options opts;
	opts.tls = keys.client_tls;
	auto ch = TcpChannel::connect(loop->get(), relay.endpoint(), kClientId, opts);
	REQUIRE(ch);
	std::vector<uint8_t> dst(4 * kPageSize);
	Waiter ok;
	(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 0, 4, dst.data(), &ok);
	drive(loop->get(), [&] { return ok.done; });
	REQUIRE(ok.status.is_ok());
	CHECK(std::memcmp(dst.data(), srv.handler.pool.data(), dst.size()) == 0);

	relay.flip_next = true;
	std::vector<Waiter> w(8);
	std::vector<std::vector<uint8_t>> d(8, std::vector<uint8_t>(4 * kPageSize));
	for (size_t i = 0; i < w.size(); i++)
		(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, 4 * i * kPageSize, 4,
		                  d[i].data(), &w[i]);
	drive(loop->get(), [&] {
		return std::all_of(w.begin(), w.end(), [](const Waiter &x) { return x.done; });
	});
	CHECK(relay.flipped == 1);
	size_t failed = 0;
	for (size_t i = 0; i < w.size(); i++) {
		if (w[i].status.is_ok()) {
			// Completed before the damaged record: the right bytes.
			CHECK(std::memcmp(d[i].data(), &srv.handler.pool[4 * i * kPageSize],
			                  d[i].size()) == 0);
		} else {
			failed++;
			CHECK(w[i].status.code() == Code::kUnavailable);
		}
	}
	CHECK(failed >= 1);
	CHECK_FALSE((*ch)->connected());
}

TEST_CASE("TLS transport: a READ whose pages do not match their crc fails alone with kCorrupt")
{
	// TLS authenticates the records, not the module's media: a damaged
	// copy (sound records, pages that do not match the crcs stored with
	// them) must still fail its READ, both for a response decrypted into
	// the caller's buffer in pieces and for one parsed whole.
	Pair keys;
	ServerThread srv(keys.server_tls);
	auto loop = EventLoop::create();
	REQUIRE(loop);
	TcpChannel::Options opts;
	opts.tls = keys.client_tls;
	auto ch = TcpChannel::connect(loop->get(), srv.endpoint(), kClientId, opts);
	REQUIRE(ch);
	for (uint32_t count : {64u, 1u}) {
		INFO("READs of " << count << " pages");
		uint32_t reads = std::min(8u, kPages / count);
		uint64_t damaged = uint64_t{reads / 2} * count * kPageSize;
		srv.handler.damaged_offset = damaged;
		std::vector<Waiter> w(reads);
		std::vector<std::vector<uint8_t>> d(reads, std::vector<uint8_t>(count * kPageSize));
		for (uint32_t i = 0; i < reads; i++)
			(*ch)->read_pages(wire::TrafficClass::kBulk, kRegion,
			                  uint64_t{i} * count * kPageSize, count, d[i].data(),
			                  &w[i]);
		drive(loop->get(), [&] {
			return std::all_of(w.begin(), w.end(),
			                   [](const Waiter &x) { return x.done; });
		});
		for (uint32_t i = 0; i < reads; i++) {
			uint64_t off = uint64_t{i} * count * kPageSize;
			if (off == damaged) {
				CHECK(w[i].status.code() == Code::kCorrupt);
				CHECK(w[i].status.message().find("damaged") != std::string::npos);
				continue;
			}
			REQUIRE(w[i].status.is_ok());
			CHECK(std::memcmp(d[i].data(), &srv.handler.pool[off], d[i].size()) == 0);
		}
		CHECK((*ch)->connected());
	}
}

TEST_CASE("TLS transport: a recorded client handshake replayed on a new connection is refused")
{
	Pair keys;
	ServerThread srv(keys.server_tls);
	std::string recorded;
	{
		Relay relay(srv.port);
		auto c = SyncClient::connect(relay.endpoint(), kClientId, 5000, keys.client_tls);
		REQUIRE(c);
		REQUIRE((*c)->hello().to_string() == "ok");
		std::vector<uint8_t> p(kPageSize);
		REQUIRE((*c)->read_pages(kRegion, 0, 1, p.data()).is_ok());
		REQUIRE(eventually([&] { return relay.recorded().size() > 500; }));
		recorded = relay.recorded();
	}
	uint64_t before = srv.requests();
	REQUIRE(before == 1);
	auto fd = connect_tcp(Endpoint{"127.0.0.1", srv.port}, 2000);
	REQUIRE(fd);
	REQUIRE(send(*fd, recorded.data(), recorded.size(), MSG_NOSIGNAL) ==
	        ssize_t(recorded.size()));
	std::vector<uint8_t> got = read_to_eof(*fd); // the module closes on it
	::close(*fd);
	CHECK(srv.requests() == before); // the replayed READ was never served
	// What came back: the gate's answer, the module's own handshake flight
	// and an alert, none of it a page.
	CHECK(got.size() < kPageSize);
}

TEST_CASE("TLS transport: a tiny rekey limit rekeys both sides many times; data intact")
{
	trust::TlsLimits lim;
	lim.rekey_bytes = 16 * 1024;
	Pair keys(lim);
	ServerThread srv(keys.server_tls);
	auto loop = EventLoop::create();
	REQUIRE(loop);
	TcpChannel::Options opts;
	opts.tls = keys.client_tls;
	auto ch = TcpChannel::connect(loop->get(), srv.endpoint(), kClientId, opts);
	REQUIRE(ch);
	for (int round = 0; round < 40; round++) {
		std::vector<uint8_t> src(8 * kPageSize);
		for (uint32_t p = 0; p < 8; p++)
			fill_page(&src[size_t{p} * kPageSize], p, static_cast<uint8_t>(round));
		uint64_t at = uint64_t(round % 16) * 8 * kPageSize;
		Waiter ww, wr;
		std::vector<uint8_t> dst(src.size());
		(*ch)->write_pages(wire::TrafficClass::kBulk, kRegion, at, 8, src.data(), &ww);
		drive(loop->get(), [&] { return ww.done; });
		(*ch)->read_pages(wire::TrafficClass::kFault, kRegion, at, 8, dst.data(), &wr);
		drive(loop->get(), [&] { return wr.done; });
		REQUIRE(ww.status.is_ok());
		REQUIRE(wr.status.is_ok());
		REQUIRE((dst == src));
	}
	CHECK(keys.client_tls->key_updates_sent() >= 10);
	CHECK(keys.client_tls->key_updates_received() >= 10);
	CHECK(eventually([&] { return keys.server_tls->key_updates_sent() >= 10; }));
	CHECK(keys.server_tls->key_updates_received() >= 10);
}
