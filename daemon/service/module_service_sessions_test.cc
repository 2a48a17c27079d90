// Tests of ModuleService's write sessions: a sequenced WRITE whose answer
// was lost is answered from the session cache, never applied twice.
#include "daemon/service/test_module.h"

using namespace memfed;
using namespace memfed::service_test;

namespace
{

// A sequenced WRITE of one page of `fill` at page `page`: (session, seq),
// kFlagRetry if `retry`.
struct SequencedWrite {
	wire::Header h{};
	std::vector<uint8_t> payload;
};
SequencedWrite sequenced_write(const Module &m, uint32_t page, uint8_t fill, uint64_t session,
                               uint64_t seq, bool retry)
{
	SequencedWrite w;
	w.h.type = uint8_t(wire::MsgType::kWrite);
	w.h.tclass = uint8_t(wire::TrafficClass::kBulk);
	w.h.flags = wire::kFlagSequenced | (retry ? wire::kFlagRetry : 0);
	w.h.region_id = m.region.id;
	w.h.offset = m.fa(page);
	w.h.count = 1;
	w.payload.resize(wire::kSequenceSize + kPage, fill);
	wire::encode_sequence({session, seq}, w.payload.data());
	return w;
}

Status send_sequenced(SyncClient &c, const Module &m, uint32_t page, uint8_t fill, uint64_t session,
                      uint64_t seq, bool retry)
{
	SequencedWrite w = sequenced_write(m, page, fill, session, seq, retry);
	auto r = c.call(w.h, w.payload);
	return r ? Status::ok() : r.status();
}

uint8_t page_byte(Module &m, uint32_t page)
{
	std::vector<uint8_t> got(kPage);
	REQUIRE(m.client()->read_pages(m.region.id, m.fa(page), 1, got.data()).is_ok());
	for (uint8_t b : got)
		if (b != got[0])
			return 0xee; // mixed: never expected
	return got[0];
}

// A TCP relay between a client and the module (one connection): forwards
// both ways until swallow() is called; from then on it forwards requests but
// drops every reply, and cut() closes both sides, so the client's requests
// are applied and their answers lost.
class Relay
{
public:
	explicit Relay(const std::string &module_endpoint)
	{
		lfd_ = ::socket(AF_INET, SOCK_STREAM, 0);
		REQUIRE(lfd_ >= 0);
		sockaddr_in a{};
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		REQUIRE(::bind(lfd_, reinterpret_cast<sockaddr *>(&a), sizeof(a)) == 0);
		REQUIRE(::listen(lfd_, 1) == 0);
		socklen_t len = sizeof(a);
		REQUIRE(::getsockname(lfd_, reinterpret_cast<sockaddr *>(&a), &len) == 0);
		endpoint = "127.0.0.1:" + std::to_string(ntohs(a.sin_port));
		std::string port = module_endpoint.substr(module_endpoint.rfind(':') + 1);
		thread_ = std::thread([this, port] { run(uint16_t(std::stoi(port))); });
	}
	~Relay()
	{
		cut();
		thread_.join();
		::close(lfd_);
	}
	void swallow() { swallow_ = true; }
	void cut()
	{
		cut_ = true;
		int c = client_fd_.load(), s = server_fd_.load();
		if (c >= 0)
			::shutdown(c, SHUT_RDWR);
		if (s >= 0)
			::shutdown(s, SHUT_RDWR);
	}
	// Bytes forwarded to the module so far.
	size_t forwarded() const { return forwarded_; }

	std::string endpoint;

private:
	void run(uint16_t port)
	{
		pollfd lp{lfd_, POLLIN, 0};
		while (!cut_ && ::poll(&lp, 1, 50) == 0) {
		}
		if (cut_)
			return;
		int c = ::accept(lfd_, nullptr, nullptr);
		int s = ::socket(AF_INET, SOCK_STREAM, 0);
		sockaddr_in a{};
		a.sin_family = AF_INET;
		a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a.sin_port = htons(port);
		if (c < 0 || s < 0 ||
		    ::connect(s, reinterpret_cast<sockaddr *>(&a), sizeof(a)) != 0) {
			::close(c);
			::close(s);
			return;
		}
		client_fd_ = c;
		server_fd_ = s;
		std::vector<uint8_t> buf(1 << 16);
		while (!cut_) {
			pollfd p[2] = {{c, POLLIN, 0}, {s, POLLIN, 0}};
			if (::poll(p, 2, 50) <= 0)
				continue;
			if (p[0].revents) {
				ssize_t n = ::recv(c, buf.data(), buf.size(), 0);
				if (n <= 0 || ::send(s, buf.data(), size_t(n), MSG_NOSIGNAL) != n)
					break;
				forwarded_ += size_t(n);
			}
			if (p[1].revents) {
				ssize_t n = ::recv(s, buf.data(), buf.size(), 0);
				if (n <= 0)
					break;
				if (!swallow_ &&
				    ::send(c, buf.data(), size_t(n), MSG_NOSIGNAL) != n)
					break;
			}
		}
		client_fd_ = -1;
		server_fd_ = -1;
		::close(c);
		::close(s);
	}

	int lfd_ = -1;
	std::thread thread_;
	std::atomic<bool> swallow_{false}, cut_{false};
	std::atomic<int> client_fd_{-1}, server_fd_{-1};
	std::atomic<size_t> forwarded_{0};
};

// Records one completion.
struct Done : Completion {
	bool done = false;
	Status st;
	void on_reply(const Status &s, const wire::Header &, std::span<const uint8_t>) override
	{
		done = true;
		st = s;
	}
};

bool run_until(EventLoop &loop, const Done &d)
{
	for (int i = 0; i < 20000 && !d.done; i++)
		loop.run_once(1);
	return d.done;
}

} // namespace

TEST_CASE("sequenced WRITE whose answer is lost: a newer write of the page on a new connection "
          "stands, and the retried old write is answered from the session cache, not "
          "applied again",
          "[service]")
{
	Module m;
	m.gate.release();
	const uint64_t session = 0x5e55107a11ce0001;
	// v1 (seq 1) is sent on a connection that closes before its answer is read.
	{
		auto a = m.client();
		SequencedWrite w = sequenced_write(m, 2, 0x11, session, 1, false);
		w.h.version = wire::kWireVersion;
		w.h.hop_limit = wire::kDefaultHopLimit;
		w.h.src_module = kClient.value;
		w.h.dst_module = kModule.value;
		w.h.request_id = 99;
		std::vector<uint8_t> bytes(wire::kHeaderSize);
		wire::encode_header(w.h, w.payload, bytes.data());
		bytes.insert(bytes.end(), w.payload.begin(), w.payload.end());
		REQUIRE(a->send_raw(bytes).is_ok());
		REQUIRE(eventually([&] { return m.service->sessions().sequenced == 1; }));
		REQUIRE(eventually([&] { return page_byte(m, 2) == 0x11; }));
	} // the answer is lost with the connection
	auto b = m.client();
	// v2 (seq 2) on the new connection: applied.
	REQUIRE(send_sequenced(*b, m, 2, 0x22, session, 2, false).is_ok());
	CHECK(page_byte(m, 2) == 0x22);
	// The retried v1: answered OK from the cache; the page keeps v2.
	REQUIRE(send_sequenced(*b, m, 2, 0x11, session, 1, true).is_ok());
	CHECK(page_byte(m, 2) == 0x22);
	SessionCounts n = m.service->sessions();
	CHECK(n.retries_answered == 1);
	CHECK(n.sequenced == 2);
	CHECK(m.store->info().pages_written == 2);
}

TEST_CASE("sequenced WRITE: a late request of a connection its session has left is refused "
          "and a retry of an unknown session too; neither is applied",
          "[service]")
{
	Module m;
	m.gate.release();
	const uint64_t session = 0x5e55107a11ce0002;
	auto old_conn = m.client();
	auto new_conn = m.client(); // opened later: the session moved here
	REQUIRE(send_sequenced(*old_conn, m, 3, 0x31, session, 1, false).is_ok());
	REQUIRE(send_sequenced(*new_conn, m, 3, 0x35, session, 5, false).is_ok());
	// Seq 4, written before 5 but still on the old connection, comes late.
	Status late = send_sequenced(*old_conn, m, 3, 0x34, session, 4, false);
	CHECK(late.code() == Code::kBusy);
	CHECK_THAT(late.message(), Catch::Contains("connection its session has left"));
	CHECK(page_byte(m, 3) == 0x35);
	// A retry of a session this module never saw (as after a restart).
	Status unknown = send_sequenced(*new_conn, m, 4, 0x44, session + 1, 3, true);
	CHECK(unknown.code() == Code::kBusy);
	CHECK_THAT(unknown.message(), Catch::Contains("does not know the session"));
	CHECK(page_byte(m, 4) == 0);
	SessionCounts n = m.service->sessions();
	CHECK(n.refused_superseded == 1);
	CHECK(n.refused_unknown == 1);
	CHECK(n.sequenced == 2);
}

TEST_CASE("TcpChannel with a write session: a write applied behind a relay that lost its "
          "answer, a newer write on a new channel, then its retry: the page holds the newer "
          "write and the retry is counted as answered from the cache",
          "[service]")
{
	Module m;
	m.gate.release();
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	RequestSessions sessions;
	auto v1 = pages(1, 0x61), v2 = pages(1, 0x62);
	uint64_t seq1 = 0;
	uint64_t session_id = 0;
	{
		Relay relay(m.endpoint);
		TcpChannel::Options o;
		o.session = sessions.acquire(kModule);
		session_id = o.session->id();
		auto ch = TcpChannel::connect(loop->get(), relay.endpoint, kClient, o);
		REQUIRE(ch.is_ok());
		relay.swallow(); // requests reach the module; answers do not come back
		Done d;
		(*ch)->write_pages(wire::TrafficClass::kBulk, m.region.id, m.fa(5), 1, v1.data(),
		                   &d);
		seq1 = (*ch)->session()->last_seq();
		// Applied by the module; its answer is swallowed; then the path breaks.
		while (m.service->sessions().sequenced < 1 && !d.done)
			(*loop)->run_once(1);
		REQUIRE(eventually([&] { return page_byte(m, 5) == 0x61; }));
		relay.cut();
		REQUIRE(run_until(**loop, d));
		CHECK(d.st.code() == Code::kUnavailable);
		CHECK((*ch)->session() == nullptr); // given back when the channel broke
	}
	// The next channel continues the session.
	TcpChannel::Options o;
	o.session = sessions.acquire(kModule);
	REQUIRE(o.session->id() == session_id);
	auto ch = TcpChannel::connect(loop->get(), m.endpoint, kClient, o);
	REQUIRE(ch.is_ok());
	Done d2;
	(*ch)->write_pages(wire::TrafficClass::kBulk, m.region.id, m.fa(5), 1, v2.data(), &d2);
	REQUIRE(run_until(**loop, d2));
	REQUIRE(d2.st.is_ok());
	CHECK((*ch)->session()->last_seq() == seq1 + 1);
	Done d3;
	(*ch)->retry_write(seq1, wire::TrafficClass::kBulk, m.region.id, m.fa(5), 1, nullptr,
	                   v1.data(), &d3);
	REQUIRE(run_until(**loop, d3));
	CHECK(d3.st.is_ok());
	CHECK(page_byte(m, 5) == 0x62);
	SessionCounts n = m.service->sessions();
	CHECK(n.retries_answered == 1);
	CHECK(n.sequenced == 2);
}
