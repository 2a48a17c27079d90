// Tests of ClassChannel (class_channel.h): routing by class, and the order
// of conflicting requests across its two connections. The connections are
// doubles that hold every request until the test answers it: two real TCP
// connections do reorder, but not on demand, and a test must produce the
// reordering to show it is handled. The last case runs over two real
// TcpChannels to a TcpServer.
#include <catch2/catch.hpp>

#include <cstring>
#include <future>
#include <thread>
#include <vector>

#include "daemon/transport/class_channel.h"
#include "daemon/transport/tcp_channel.h"
#include "daemon/transport/tcp_server.h"

using namespace memfed;
using wire::kPageSize;

namespace
{

// A connection double: records each request and completes it only when
// the test says (never inside the call that issued it).
class HeldChannel : public Channel
{
public:
	struct Req {
		char kind; // 'r' read, 'w' write, 'v' versioned write, 'c' call
		wire::TrafficClass tc;
		uint64_t fa;
		Completion *done;
	};
	const PeerInfo &peer() const override { return peer_; }
	bool connected() const override { return true; }
	void read_pages(wire::TrafficClass tc, uint32_t, uint64_t fa, uint32_t, void *,
	                Completion *done) override
	{
		reqs.push_back({'r', tc, fa, done});
	}
	void write_pages(wire::TrafficClass tc, uint32_t, uint64_t fa, uint32_t, const void *,
	                 Completion *done) override
	{
		reqs.push_back({'w', tc, fa, done});
	}
	void call(const wire::Header &h, std::span<const uint8_t>, Completion *done) override
	{
		reqs.push_back({'c', wire::TrafficClass(h.tclass), 0, done});
	}
	void write_versioned(wire::TrafficClass tc, uint32_t, uint64_t fa, uint32_t,
	                     const wire::WireVersionedWrite &, const void *,
	                     Completion *done) override
	{
		reqs.push_back({'v', tc, fa, done});
	}
	// Answers request `i` (OK).
	void complete(size_t i)
	{
		wire::Header h{};
		reqs.at(i).done->on_reply(Status::ok(), h, {});
	}
	std::vector<Req> reqs;

private:
	PeerInfo peer_;
};

struct Done : Completion {
	void on_reply(const Status &st, const wire::Header &, std::span<const uint8_t>) override
	{
		status = st;
		order = (*counter)++;
	}
	Status status = Status(Code::kInternal, "not completed");
	int order = -1;
	int *counter = nullptr;
};

struct Fixture {
	Fixture()
	{
		auto f = std::make_unique<HeldChannel>();
		auto b = std::make_unique<HeldChannel>();
		fault = f.get();
		bulk = b.get();
		ch = std::make_unique<ClassChannel>(std::move(f), std::move(b));
		for (auto &d : done)
			d.counter = &counter;
	}
	HeldChannel *fault;
	HeldChannel *bulk;
	std::unique_ptr<ClassChannel> ch;
	Done done[8];
	int counter = 0;
	uint8_t buf[kPageSize]{};
};

constexpr auto kFault = wire::TrafficClass::kFault;
constexpr auto kBulk = wire::TrafficClass::kBulk;
constexpr auto kControl = wire::TrafficClass::kControl;

} // namespace

TEST_CASE("ClassChannel: each class goes on its own connection, every write on the bulk one")
{
	Fixture t;
	t.ch->read_pages(kFault, 1, 0, 1, t.buf, &t.done[0]);
	t.ch->read_pages(kBulk, 1, kPageSize, 1, t.buf, &t.done[1]);
	t.ch->write_pages(kFault, 1, 2 * kPageSize, 1, t.buf, &t.done[2]);
	t.ch->write_versioned(kBulk, 1, 3 * kPageSize, 1, {}, t.buf, &t.done[3]);
	wire::Header h{};
	h.type = uint8_t(wire::MsgType::kStat);
	h.tclass = uint8_t(kControl);
	t.ch->call(h, {}, &t.done[4]);
	h.tclass = uint8_t(kBulk);
	t.ch->call(h, {}, &t.done[5]);
	h.type = uint8_t(wire::MsgType::kWrite);
	h.tclass = uint8_t(kFault);
	t.ch->call(h, {}, &t.done[6]);
	REQUIRE(t.fault->reqs.size() == 2);
	CHECK(t.fault->reqs[0].kind == 'r');
	CHECK(t.fault->reqs[1].kind == 'c');
	REQUIRE(t.bulk->reqs.size() == 5);
	std::string kinds;
	for (auto &r : t.bulk->reqs)
		kinds += r.kind;
	CHECK(kinds == "rwvcc");
	CHECK(t.bulk->reqs[1].tc == kFault); // the class it names is kept
	CHECK(t.counter == 0);               // nothing completed inside a call
}

TEST_CASE("ClassChannel: a read of a page being written waits for the write; others do not")
{
	Fixture t;
	t.ch->write_pages(kBulk, 1, 4 * kPageSize, 2, t.buf, &t.done[0]); // pages 4-5
	t.ch->read_pages(kFault, 1, 5 * kPageSize, 1, t.buf, &t.done[1]); // page 5: held
	t.ch->read_pages(kFault, 1, 6 * kPageSize, 1, t.buf, &t.done[2]); // page 6: goes
	t.ch->read_pages(kFault, 2, 5 * kPageSize, 1, t.buf, &t.done[3]); // other region: goes
	CHECK(t.fault->reqs.size() == 2);
	CHECK(t.ch->held_total() == 1);
	t.fault->complete(0);
	t.fault->complete(1);
	CHECK(t.fault->reqs.size() == 2);
	t.bulk->complete(0); // the write is durable: the read goes out
	REQUIRE(t.fault->reqs.size() == 3);
	CHECK(t.fault->reqs[2].fa == 5 * kPageSize);
	t.fault->complete(2);
	CHECK(t.done[1].status.is_ok());
	CHECK(t.done[0].order < t.done[1].order);
}

TEST_CASE("ClassChannel: a write of a page being read waits for the read, in issue order")
{
	Fixture t;
	t.ch->read_pages(kFault, 1, 0, 1, t.buf, &t.done[0]);         // in flight
	t.ch->write_pages(kBulk, 1, 0, 1, t.buf, &t.done[1]);         // held behind it
	t.ch->read_pages(kFault, 1, 0, 1, t.buf, &t.done[2]);         // held behind the write
	t.ch->write_pages(kBulk, 1, kPageSize, 1, t.buf, &t.done[3]); // another page: goes
	REQUIRE(t.bulk->reqs.size() == 1);
	CHECK(t.bulk->reqs[0].fa == kPageSize);
	CHECK(t.fault->reqs.size() == 1);
	t.fault->complete(0);
	// The write goes; the second read still waits for it.
	REQUIRE(t.bulk->reqs.size() == 2);
	CHECK(t.bulk->reqs[1].fa == 0);
	CHECK(t.fault->reqs.size() == 1);
	t.bulk->complete(1);
	REQUIRE(t.fault->reqs.size() == 2);
	t.fault->complete(1);
	CHECK(t.ch->held_total() == 2);
	CHECK(t.done[2].status.is_ok());
}

TEST_CASE("ClassChannel: requests on one connection are never held for each other")
{
	Fixture t;
	t.ch->write_pages(kBulk, 1, 0, 1, t.buf, &t.done[0]);
	t.ch->read_pages(kBulk, 1, 0, 1, t.buf, &t.done[1]); // same connection: in order there
	t.ch->write_pages(kFault, 1, 0, 1, t.buf, &t.done[2]);
	CHECK(t.bulk->reqs.size() == 3);
	CHECK(t.ch->held_total() == 0);
}

TEST_CASE("ClassChannel: destruction completes held requests with kUnavailable")
{
	Fixture t;
	t.ch->write_pages(kBulk, 1, 0, 1, t.buf, &t.done[0]);
	t.ch->read_pages(kFault, 1, 0, 1, t.buf, &t.done[1]);
	t.ch.reset();
	CHECK(t.done[1].status.code() == Code::kUnavailable);
}

namespace
{

// A module in memory: one region of 64 pages, served by a TcpServer.
class PagesHandler : public RequestHandler
{
public:
	void handle(const ConnInfo &, const wire::Header &req, std::span<const uint8_t> payload,
	            Reply &reply) override
	{
		auto type = wire::MsgType(req.type);
		size_t len = size_t{req.count} * kPageSize;
		if (req.offset + len > pool.size())
			return reply.fail(Status(Code::kOutOfRange, "past the end"));
		if (type == wire::MsgType::kRead) {
			auto out = reply.payload_buffer(len);
			std::memcpy(out.data(), &pool[req.offset], len);
		} else if (type == wire::MsgType::kWrite) {
			std::memcpy(&pool[req.offset], payload.data(), len);
		} else {
			reply.fail(Status(Code::kInvalidArgument, "unsupported"));
		}
	}
	std::vector<uint8_t> pool = std::vector<uint8_t>(64 * kPageSize);
};

} // namespace

TEST_CASE("ClassChannel over two TcpChannels: each read sees the write issued just before it")
{
	PagesHandler handler;
	std::promise<uint16_t> port;
	EventLoop *server_loop = nullptr;
	std::thread server([&] {
		auto loop = EventLoop::create();
		REQUIRE(loop.is_ok());
		server_loop = loop->get();
		ServerIdentity id{ModuleId{0x020000000001}, wire::kCapModule, 64 * kPageSize};
		auto srv = TcpServer::listen(loop->get(), "127.0.0.1:0", id, &handler);
		REQUIRE(srv.is_ok());
		port.set_value((*srv)->port());
		(*loop)->run();
	});
	std::string ep = "127.0.0.1:" + std::to_string(port.get_future().get());
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	std::unique_ptr<Channel> conns[2];
	for (int i = 0; i < 2; i++) {
		TcpChannel::Options o;
		o.conn_class = i == 0 ? kFault : kBulk;
		auto c = TcpChannel::connect(loop->get(), ep, ModuleId{0x020000000099}, o);
		REQUIRE(c.is_ok());
		conns[i] = std::move(*c);
	}
	ClassChannel ch(std::move(conns[0]), std::move(conns[1]));
	// Round after round: a large bulk write of pages 0-31 and, without
	// waiting, fault reads of each of them; every read must see the round.
	int counter = 0;
	for (uint8_t round = 1; round <= 20; round++) {
		std::vector<uint8_t> src(32 * kPageSize, round);
		std::vector<uint8_t> dst(32 * kPageSize);
		std::vector<Done> d(33);
		for (auto &x : d)
			x.counter = &counter;
		ch.write_pages(kBulk, 1, 0, 32, src.data(), &d[32]);
		for (uint32_t p = 0; p < 32; p++)
			ch.read_pages(kFault, 1, uint64_t{p} * kPageSize, 1, &dst[p * kPageSize],
			              &d[p]);
		for (int i = 0; i < 100000 && d[31].order < 0; i++)
			(*loop)->run_once(100);
		for (auto &x : d)
			REQUIRE(x.status.is_ok());
		for (uint32_t p = 0; p < 32; p++)
			REQUIRE(dst[p * kPageSize] == round);
	}
	CHECK(ch.held_total() == 20 * 32);
	server_loop->stop();
	server.join();
}
