// Tests of TlsContext and TlsSession: two sessions joined in memory (no
// sockets), each with its own key and trust set.
#include <catch2/catch.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <vector>

#include "daemon/trust/tls_context.h"
#include "daemon/trust/tls_session.h"

using namespace memfed;
using namespace memfed::trust;

namespace
{

NodeKey key()
{
	auto k = generate_node_key();
	REQUIRE(k);
	return *k;
}

std::shared_ptr<TlsContext> context(const NodeKey &k, std::vector<PublicKey> trusted,
                                    TlsLimits lim = {})
{
	std::vector<TrustedPeer> peers;
	for (const PublicKey &p : trusted)
		peers.push_back({p, "peer-" + encode_key(p).substr(0, 4), ""});
	auto c = TlsContext::create(k, std::make_shared<TrustedPeers>(peers), lim);
	REQUIRE(c);
	return *c;
}

// Moves `from`'s output into `to`'s input.
void carry(TlsSession &from, TlsSession &to)
{
	ByteBuffer &in = to.input();
	ByteBuffer &out = from.output();
	std::memcpy(in.append(out.readable()), out.read_ptr(), out.readable());
	out.clear();
}

// Runs both handshakes to their end; true if both are established.
bool handshake(TlsSession &c, TlsSession &s)
{
	for (int i = 0; i < 20; i++) {
		TlsStep a = c.handshake();
		carry(c, s);
		TlsStep b = s.handshake();
		carry(s, c);
		if (a == TlsStep::kFailed || b == TlsStep::kFailed)
			return false;
		if (a == TlsStep::kDone && b == TlsStep::kDone)
			return true;
	}
	FAIL("handshake did not end in 20 rounds");
	return false;
}

// Everything `to` can decrypt from what `from` sent.
Result<std::string> transfer(TlsSession &from, TlsSession &to)
{
	carry(from, to);
	std::string got;
	uint8_t buf[5000];
	for (;;) {
		auto n = to.decrypt(buf, sizeof(buf));
		if (!n)
			return n.status();
		if (*n == 0)
			return got;
		got.append(reinterpret_cast<char *>(buf), *n);
	}
}

// Captures what is written to stderr (the log) while it lives.
class StderrCapture
{
public:
	StderrCapture()
	{
		std::fflush(stderr);
		path_ = "/tmp/tls_test_log." + std::to_string(getpid());
		fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
		saved_ = ::dup(2);
		::dup2(fd_, 2);
	}
	~StderrCapture() { restore(); }
	std::string text()
	{
		restore();
		return kept_;
	}

private:
	void restore()
	{
		if (saved_ < 0)
			return;
		std::fflush(stderr);
		::dup2(saved_, 2);
		::close(saved_);
		::close(fd_);
		saved_ = -1;
		std::fputs(text_once().c_str(), stderr); // keep the log visible
		::unlink(path_.c_str());
	}
	std::string text_once()
	{
		std::ifstream f(path_);
		std::stringstream ss;
		ss << f.rdbuf();
		kept_ = ss.str();
		return kept_;
	}
	std::string path_;
	std::string kept_;
	int fd_ = -1;
	int saved_ = -1;
};

} // namespace

TEST_CASE("TLS: two trusting keys authenticate each other and exchange data")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub});
	auto cb = context(b, {a.pub});
	TlsSession client(ca, TlsRole::kClient, "server:1");
	TlsSession server(cb, TlsRole::kServer, "client:2");
	REQUIRE(handshake(client, server));
	CHECK(client.peer_key() == b.pub);
	CHECK(server.peer_key() == a.pub);
	CHECK(server.peer_name() == "peer-" + encode_key(a.pub).substr(0, 4));

	std::string big(100000, 'x');
	for (size_t i = 0; i < big.size(); i++)
		big[i] = static_cast<char>(i * 7);
	REQUIRE(client.encrypt({reinterpret_cast<const uint8_t *>(big.data()), big.size()})
	                .is_ok());
	CHECK(client.output().readable() > big.size()); // records carry tags
	auto got = transfer(client, server);
	REQUIRE(got);
	CHECK(*got == big);

	// Gathered pieces arrive as one stream.
	std::string h1 = "header-one", h2(20000, 'p'), h3 = "tail";
	iovec v[3] = {{h1.data(), h1.size()}, {h2.data(), h2.size()}, {h3.data(), h3.size()}};
	REQUIRE(server.encrypt(v, 3).is_ok());
	got = transfer(server, client);
	REQUIRE(got);
	CHECK(*got == h1 + h2 + h3);
	// The ciphertext does not contain the plaintext.
	REQUIRE(client.encrypt({reinterpret_cast<const uint8_t *>(h1.data()), h1.size()}).is_ok());
	std::string wire(reinterpret_cast<char *>(client.output().read_ptr()),
	                 client.output().readable());
	CHECK(wire.find(h1) == std::string::npos);
}

TEST_CASE("TLS: a node's own key is accepted (loopback inside one node)")
{
	NodeKey a = key();
	auto c1 = context(a, {});
	auto c2 = context(a, {});
	TlsSession client(c1, TlsRole::kClient, "self");
	TlsSession server(c2, TlsRole::kServer, "self");
	REQUIRE(handshake(client, server));
	CHECK(server.peer_key() == a.pub);
	CHECK(server.peer_name().empty());
}

TEST_CASE("TLS: an untrusted client key is refused by the server, with one log line")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub});
	auto cb = context(b, {}); // b trusts nobody
	TlsSession client(ca, TlsRole::kClient, "10.0.0.2:7700");
	TlsSession server(cb, TlsRole::kServer, "10.0.0.1:40000");
	std::string log;
	{
		StderrCapture cap;
		CHECK_FALSE(handshake(client, server));
		log = cap.text();
	}
	REQUIRE(server.failed());
	CHECK(server.refused_peer());
	CHECK(server.status().code() == Code::kPermission);
	CHECK_THAT(server.status().message(), Catch::Contains(encode_key(a.pub)));
	// One line, naming the endpoint, the key and the fix; no secret.
	CHECK(std::count(log.begin(), log.end(), '\n') == 1);
	CHECK_THAT(log, Catch::Contains("10.0.0.1:40000"));
	CHECK_THAT(log, Catch::Contains("memfedctl peer add " + encode_key(a.pub)));
	std::array<uint8_t, 32> seed = a.seed;
	std::string seed_b64 = encode_key(seed);
	CHECK(log.find(seed_b64) == std::string::npos);

	// The client learns it from the server's alert: its handshake may have
	// ended (TLS 1.3 clients finish first), its next read fails.
	if (!client.failed()) {
		auto r = transfer(server, client);
		REQUIRE_FALSE(r);
	}
	CHECK(client.status().code() == Code::kPermission);
	CHECK_THAT(client.status().message(),
	           Catch::Contains("memfedctl peer add " + encode_key(a.pub)));
}

TEST_CASE("TLS: an untrusted server key is refused by the client")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {}); // the client trusts nobody
	auto cb = context(b, {a.pub});
	TlsSession client(ca, TlsRole::kClient, "10.0.0.2:7700");
	TlsSession server(cb, TlsRole::kServer, "10.0.0.1:40000");
	CHECK_FALSE(handshake(client, server));
	CHECK(client.refused_peer());
	CHECK(client.status().code() == Code::kPermission);
	CHECK_THAT(client.status().message(), Catch::Contains(encode_key(b.pub)));
	CHECK(server.failed());
	CHECK_FALSE(server.established());
}

TEST_CASE("TLS: a trust reload applies to the next handshake")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub});
	auto cb = context(b, {a.pub});
	{
		TlsSession c(ca, TlsRole::kClient, "s"), s(cb, TlsRole::kServer, "c");
		REQUIRE(handshake(c, s));
	}
	cb->peers().replace({});
	TlsSession c(ca, TlsRole::kClient, "s"), s(cb, TlsRole::kServer, "c");
	CHECK_FALSE(handshake(c, s));
	CHECK(s.refused_peer());
}

TEST_CASE("TLS: a flipped bit fails the record's tag; nothing of it is delivered")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub});
	auto cb = context(b, {a.pub});
	TlsSession client(ca, TlsRole::kClient, "s");
	TlsSession server(cb, TlsRole::kServer, "c");
	REQUIRE(handshake(client, server));
	std::string msg(3000, 'm');
	REQUIRE(server.encrypt({reinterpret_cast<const uint8_t *>(msg.data()), msg.size()})
	                .is_ok());
	server.output().read_ptr()[100] ^= 0x10;
	auto r = transfer(server, client);
	REQUIRE_FALSE(r);
	CHECK(r.status().code() == Code::kCorrupt);
	CHECK_THAT(r.status().message(), Catch::Contains("altered in transit"));
	CHECK(client.failed());
}

TEST_CASE("TLS: a client handshake replayed to a new session is refused")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub});
	auto cb = context(b, {a.pub});
	std::string recorded; // every byte the client sent
	{
		TlsSession client(ca, TlsRole::kClient, "s");
		TlsSession server(cb, TlsRole::kServer, "c");
		for (int i = 0; i < 10 && !(client.established() && server.established()); i++) {
			client.handshake();
			recorded.append(reinterpret_cast<char *>(client.output().read_ptr()),
			                client.output().readable());
			carry(client, server);
			server.handshake();
			carry(server, client);
		}
		REQUIRE(server.established());
		std::string hello = "READ";
		REQUIRE(client.encrypt({reinterpret_cast<const uint8_t *>(hello.data()), 4})
		                .is_ok());
		recorded.append(reinterpret_cast<char *>(client.output().read_ptr()),
		                client.output().readable());
	}
	TlsSession replay_target(cb, TlsRole::kServer, "attacker");
	std::memcpy(replay_target.input().append(recorded.size()), recorded.data(),
	            recorded.size());
	TlsStep st = replay_target.handshake();
	CHECK(st == TlsStep::kFailed);
	CHECK_FALSE(replay_target.established());
	CHECK(replay_target.status().code() != Code::kOk);
}

TEST_CASE("TLS: bytes that are not TLS are refused as such")
{
	NodeKey b = key();
	auto cb = context(b, {});
	TlsSession server(cb, TlsRole::kServer, "c");
	const char junk[] = "GET / HTTP/1.1\r\n\r\n";
	std::memcpy(server.input().append(sizeof(junk)), junk, sizeof(junk));
	CHECK(server.handshake() == TlsStep::kFailed);
	CHECK(server.status().code() == Code::kProtocol);
	CHECK_THAT(server.status().message(), Catch::Contains("does not speak TLS"));
}

TEST_CASE("TLS: a tiny rekey byte limit rekeys both sides many times; data stays intact")
{
	NodeKey a = key(), b = key();
	TlsLimits lim;
	lim.rekey_bytes = 1000;
	auto ca = context(a, {b.pub}, lim);
	auto cb = context(b, {a.pub}, lim);
	TlsSession client(ca, TlsRole::kClient, "s");
	TlsSession server(cb, TlsRole::kServer, "c");
	REQUIRE(handshake(client, server));
	for (int round = 0; round < 50; round++) {
		std::string m(1500, static_cast<char>('a' + round % 26));
		REQUIRE(client.encrypt({reinterpret_cast<const uint8_t *>(m.data()), m.size()})
		                .is_ok());
		auto got = transfer(client, server);
		REQUIRE(got);
		REQUIRE(*got == m);
		REQUIRE(server.encrypt({reinterpret_cast<const uint8_t *>(m.data()), m.size()})
		                .is_ok());
		got = transfer(server, client);
		REQUIRE(got);
		REQUIRE(*got == m);
	}
	CHECK(client.key_updates_sent() >= 40);
	CHECK(client.key_updates_received() >= 40);
	CHECK(server.key_updates_sent() >= 40);
	CHECK(server.key_updates_received() >= 40);
	CHECK(ca->key_updates_sent() == client.key_updates_sent());
}

TEST_CASE("TLS: rekey limits set on a running context (a reload) apply to its sessions")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub}, TlsLimits{});
	auto cb = context(b, {a.pub}, TlsLimits{});
	TlsSession client(ca, TlsRole::kClient, "s");
	TlsSession server(cb, TlsRole::kServer, "c");
	REQUIRE(handshake(client, server));
	auto exchange = [&](int rounds) {
		for (int round = 0; round < rounds; round++) {
			std::string m(1500, static_cast<char>('a' + round % 26));
			REQUIRE(client.encrypt({reinterpret_cast<const uint8_t *>(m.data()), m.size()})
			                .is_ok());
			auto got = transfer(client, server);
			REQUIRE(got);
			REQUIRE(*got == m);
		}
	};
	exchange(10);
	CHECK(client.key_updates_sent() == 0);
	ca->set_limits({1000, 120});
	exchange(10);
	CHECK(client.key_updates_sent() >= 8);
	CHECK(server.key_updates_received() == client.key_updates_sent());
}
