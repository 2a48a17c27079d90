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

#include <openssl/ssl.h>

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

// Everything `s` can decrypt, asking `cap` bytes at a time.
Result<std::string> drain(TlsSession &s, size_t cap)
{
	std::string got;
	std::vector<uint8_t> buf(cap);
	for (;;) {
		auto n = s.decrypt(buf.data(), cap);
		if (!n)
			return n.status();
		if (*n == 0)
			return got;
		got.append(reinterpret_cast<char *>(buf.data()), *n);
	}
}

// Everything `to` can decrypt from what `from` sent.
Result<std::string> transfer(TlsSession &from, TlsSession &to)
{
	carry(from, to);
	return drain(to, 5000);
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

namespace
{

// One end of a connection driven by OpenSSL's own record layer (SSL_read,
// SSL_write), over memory BIOs: the reference the session's record layer
// must interoperate with.
class OpensslPeer
{
public:
	OpensslPeer(const std::shared_ptr<TlsContext> &ctx, TlsRole role)
	{
		ssl_ = SSL_new(ctx->ssl_ctx());
		REQUIRE(ssl_ != nullptr);
		// The context's verify callback looks for a TlsSession; this end
		// takes any certificate (the session under test checks ours).
		SSL_set_verify(ssl_, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
		               [](int, X509_STORE_CTX *) { return 1; });
		rbio_ = BIO_new(BIO_s_mem());
		wbio_ = BIO_new(BIO_s_mem());
		SSL_set_bio(ssl_, rbio_, wbio_);
		if (role == TlsRole::kClient)
			SSL_set_connect_state(ssl_);
		else
			SSL_set_accept_state(ssl_);
	}
	~OpensslPeer() { SSL_free(ssl_); }
	SSL *ssl() { return ssl_; }

	// Session output into this end, and this end's output into the session.
	void from(TlsSession &s)
	{
		ByteBuffer &out = s.output();
		if (out.readable() > 0)
			REQUIRE(BIO_write(rbio_, out.read_ptr(),
			                  static_cast<int>(out.readable())) ==
			        static_cast<int>(out.readable()));
		out.clear();
	}
	void to(TlsSession &s)
	{
		char buf[65536];
		int n;
		while ((n = BIO_read(wbio_, buf, sizeof(buf))) > 0)
			std::memcpy(s.input().append(n), buf, n);
	}
	bool handshake(TlsSession &s)
	{
		for (int i = 0; i < 20; i++) {
			TlsStep a = s.handshake();
			from(s);
			int r = SSL_do_handshake(ssl_);
			to(s);
			if (a == TlsStep::kFailed)
				return false;
			if (a == TlsStep::kDone && r == 1)
				return true;
		}
		return false;
	}
	// Everything this end can read now.
	std::string read_all()
	{
		std::string got;
		char buf[7000];
		size_t n = 0;
		while (SSL_read_ex(ssl_, buf, sizeof(buf), &n) == 1)
			got.append(buf, n);
		int e = SSL_get_error(ssl_, 0);
		CHECK((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_SSL ||
		       e == SSL_ERROR_ZERO_RETURN));
		return got;
	}
	void write(const std::string &m)
	{
		size_t n = 0;
		REQUIRE(SSL_write_ex(ssl_, m.data(), m.size(), &n) == 1);
		REQUIRE(n == m.size());
	}

private:
	SSL *ssl_ = nullptr;
	BIO *rbio_ = nullptr;
	BIO *wbio_ = nullptr;
};

std::string pattern(size_t n, int seed)
{
	std::string m(n, '\0');
	for (size_t i = 0; i < n; i++)
		m[i] = static_cast<char>((i * 131 + seed) >> 3);
	return m;
}

} // namespace

TEST_CASE("TLS: the session's record layer interoperates with OpenSSL's, both ways, "
          "across KeyUpdates from either side")
{
	auto role = GENERATE(TlsRole::kClient, TlsRole::kServer);
	auto suite =
	        GENERATE(as<std::string>{}, "TLS_AES_128_GCM_SHA256", "TLS_AES_256_GCM_SHA384");
	auto cap = GENERATE(size_t{1000}, size_t{16384}, size_t{70000});
	CAPTURE(role == TlsRole::kClient ? "session is the client" : "session is the server", suite,
	        cap);
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub});
	auto cb = context(b, {a.pub});
	REQUIRE(SSL_CTX_set_ciphersuites(cb->ssl_ctx(), suite.c_str()) == 1);
	TlsSession s(ca, role, "openssl");
	OpensslPeer o(cb, role == TlsRole::kClient ? TlsRole::kServer : TlsRole::kClient);
	REQUIRE(o.handshake(s));
	REQUIRE(s.established());
	CHECK(s.peer_key() == b.pub);
	CHECK(SSL_CIPHER_get_name(SSL_get_current_cipher(o.ssl())) == suite);

	// Session to OpenSSL: many records, gathered from pieces of all sizes.
	std::string m1 = pattern(200000, 1);
	std::vector<iovec> v;
	for (size_t at = 0, k = 0; at < m1.size(); k++) {
		size_t len = std::min(m1.size() - at, size_t{1} << (k % 16));
		v.push_back({m1.data() + at, len});
		at += len;
	}
	REQUIRE(s.encrypt(v.data(), v.size()).is_ok());
	o.from(s);
	CHECK(o.read_all() == m1);

	// OpenSSL to the session, padded records (to 512 bytes) and plain ones.
	std::string m2 = pattern(150000, 2);
	REQUIRE(SSL_set_block_padding(o.ssl(), 512) == 1);
	o.write(m2);
	REQUIRE(SSL_set_block_padding(o.ssl(), 1) == 1);
	o.write(m2);
	o.to(s);
	auto got = drain(s, cap);
	REQUIRE(got);
	CHECK(*got == m2 + m2);

	// OpenSSL asks for a key update: the session follows it and answers
	// with its own, which OpenSSL must accept to read what comes next.
	REQUIRE(SSL_key_update(o.ssl(), SSL_KEY_UPDATE_REQUESTED) == 1);
	std::string m3 = pattern(40000, 3);
	o.write(m3);
	o.to(s);
	got = drain(s, cap);
	REQUIRE(got);
	CHECK(*got == m3);
	CHECK(s.key_updates_received() == 1);
	CHECK(s.key_updates_sent() == 1);
	REQUIRE(s.encrypt({reinterpret_cast<const uint8_t *>(m3.data()), m3.size()}).is_ok());
	o.from(s);
	CHECK(o.read_all() == m3);

	// The session rekeys (a reload lowered the limit): OpenSSL follows and
	// answers; the session reads OpenSSL's records under the answer's key.
	ca->set_limits({1000, 120});
	std::string m4 = pattern(30000, 4);
	for (int round = 0; round < 3; round++) {
		REQUIRE(s.encrypt({reinterpret_cast<const uint8_t *>(m4.data()), m4.size()})
		                .is_ok());
		o.from(s);
		CHECK(o.read_all() == m4);
		o.write(m4);
		o.to(s);
		got = drain(s, cap);
		REQUIRE(got);
		CHECK(*got == m4);
	}
	CHECK(s.key_updates_sent() == 4);
	CHECK(s.key_updates_received() == 4);

	// OpenSSL closes: the session says so.
	REQUIRE(SSL_shutdown(o.ssl()) == 0);
	o.to(s);
	got = drain(s, cap);
	REQUIRE_FALSE(got);
	CHECK(got.status().code() == Code::kUnavailable);
	CHECK_THAT(got.status().message(), Catch::Contains("closed the TLS session"));
}

TEST_CASE("TLS: records outside TLS 1.3's rules are refused, naming what was wrong")
{
	NodeKey a = key(), b = key();
	auto ca = context(a, {b.pub});
	auto cb = context(b, {a.pub});
	struct Case {
		std::vector<uint8_t> bytes;
		const char *says;
	};
	std::vector<Case> cases = {
	        {{22, 3, 3, 0, 20}, "a record of type 22 after the handshake"},
	        {{23, 3, 1, 0, 20}, "does not speak TLS 1.3"},
	        {{23, 3, 3, 0x41, 0x02}, "bytes, outside TLS 1.3's limits"},
	        {{23, 3, 3, 0, 16}, "bytes, outside TLS 1.3's limits"},
	};
	for (const Case &c : cases) {
		TlsSession client(ca, TlsRole::kClient, "s");
		TlsSession server(cb, TlsRole::kServer, "c");
		REQUIRE(handshake(client, server));
		std::memcpy(client.input().append(c.bytes.size()), c.bytes.data(), c.bytes.size());
		uint8_t buf[100];
		auto r = client.decrypt(buf, sizeof(buf));
		REQUIRE_FALSE(r);
		CHECK(r.status().code() == Code::kProtocol);
		CHECK_THAT(r.status().message(), Catch::Contains(c.says));
		CHECK(client.failed());
	}
}
