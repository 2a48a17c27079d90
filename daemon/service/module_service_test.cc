#include "daemon/service/module_service.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/service/local_channel.h"
#include "daemon/store/test_pool_dir.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/sync_client.h"
#include "daemon/wire/codec.h"

using namespace memfed;

namespace
{

constexpr uint32_t kPage = wire::kPageSize;
constexpr uint32_t kRegionPages = 16;
const ModuleId kModule{0x020000000061};
const ModuleId kClient{0x020000000062};

// Holds the writer thread at its first group until released.
class WriterGate
{
public:
	void hook()
	{
		std::unique_lock lk(mu_);
		if (calls_++ != 0)
			return;
		entered_ = true;
		cv_.notify_all();
		cv_.wait(lk, [this] { return released_; });
	}
	bool wait_entered()
	{
		std::unique_lock lk(mu_);
		return cv_.wait_for(lk, std::chrono::seconds(20), [this] { return entered_; });
	}
	void release()
	{
		std::lock_guard lk(mu_);
		released_ = true;
		cv_.notify_all();
	}

private:
	std::mutex mu_;
	std::condition_variable cv_;
	int calls_ = 0;
	bool entered_ = false, released_ = false;
};

// A pool, a ModuleService whose writer waits at `gate`, and a TcpServer for
// it on its own loop thread.
class Module
{
public:
	Module()
	{
		std::string path = dir_.path("pool");
		REQUIRE(ModuleStore::format(PoolOptions{path, 4 << 20, kModule}).is_ok());
		auto s = ModuleStore::open(path, 0);
		REQUIRE(s.is_ok());
		store = std::move(*s);
		auto r = store->create_region("r", kRegionPages * kPage, 0, 0600);
		REQUIRE(r.is_ok());
		region = *r;
		service = std::make_unique<ModuleService>(store.get());
		service->set_writer_hook_for_test([this] { gate.hook(); });
		auto loop = EventLoop::create();
		REQUIRE(loop.is_ok());
		loop_ = std::move(*loop);
		auto srv = TcpServer::listen(loop_.get(), "127.0.0.1:0",
		                             ServerIdentity{kModule, wire::kCapModule, 4 << 20},
		                             service.get());
		REQUIRE(srv.is_ok());
		server_ = std::move(*srv);
		endpoint = server_->endpoint();
		thread_ = std::thread([this] { loop_->run(); });
	}
	~Module()
	{
		gate.release();
		stop_server();
	}
	// Stops the loop and destroys the server (replies completed later are
	// dropped).
	void stop_server()
	{
		if (!server_)
			return;
		loop_->stop();
		thread_.join();
		server_.reset();
	}
	std::unique_ptr<SyncClient> client()
	{
		auto c = SyncClient::connect(endpoint, kClient, 20000);
		REQUIRE(c.is_ok());
		REQUIRE((*c)->hello().is_ok());
		return std::move(*c);
	}
	uint64_t fa(uint32_t page) const { return region.fa_offset + uint64_t{page} * kPage; }
	std::string pool_path() const { return dir_.path("pool"); }

	WriterGate gate;
	std::unique_ptr<ModuleStore> store;
	RegionInfo region;
	std::unique_ptr<ModuleService> service;
	std::string endpoint;

private:
	store::TestPoolDir dir_;
	std::unique_ptr<EventLoop> loop_;
	std::unique_ptr<TcpServer> server_;
	std::thread thread_;
};

std::vector<uint8_t> pages(uint32_t n, uint8_t fill)
{
	return std::vector<uint8_t>(size_t{n} * kPage, fill);
}

// Polls `cond` (no timing assertion: a generous bound only ends a hung test).
template <typename F> bool eventually(F cond)
{
	for (int i = 0; i < 20000; i++) {
		if (cond())
			return true;
		std::this_thread::sleep_for(std::chrono::milliseconds(1));
	}
	return false;
}

// One-page WRITEs of `data` at pages `a` and `b`: the first held in the
// writer at the gate, the second queued behind it.
class HeldWrites
{
public:
	HeldWrites(Module &m, const std::vector<uint8_t> &data, uint32_t a, uint32_t b) : m_(m)
	{
		first_ = std::thread([&m, &data, a, this] {
			first_st_ = m.client()->write_pages(m.region.id, m.fa(a), 1, data.data());
		});
		REQUIRE(m.gate.wait_entered());
		second_ = std::thread([&m, &data, b, this] {
			second_st_ = m.client()->write_pages(m.region.id, m.fa(b), 1, data.data());
		});
		REQUIRE(eventually([&] { return m.service->queued() == 1; }));
	}
	~HeldWrites()
	{
		m_.gate.release(); // a failed check must not leave a WRITE held
		if (first_.joinable())
			first_.join();
		if (second_.joinable())
			second_.join();
	}
	// After the gate is released: both WRITEs succeeded.
	void join_ok()
	{
		first_.join();
		second_.join();
		INFO(first_st_.to_string() << " / " << second_st_.to_string());
		CHECK(first_st_.is_ok());
		CHECK(second_st_.is_ok());
	}

private:
	Module &m_;
	std::thread first_, second_;
	Status first_st_, second_st_;
};

} // namespace

TEST_CASE("a READ is answered while a WRITE is being committed; an overlapping READ waits for it",
          "[service]")
{
	Module m;
	auto old_data = pages(kRegionPages, 0x11);
	REQUIRE(m.store->write_pages(m.region.id, m.fa(0), kRegionPages, old_data.data()).is_ok());

	// A bulk write of pages 0..7: the writer takes it and is held before it
	// persists, so it cannot be acknowledged until the gate opens.
	std::atomic<bool> write_acked{false};
	Status write_st;
	auto new_data = pages(8, 0x22);
	std::thread writer([&] {
		auto c = m.client();
		write_st = c->write_pages(m.region.id, m.fa(0), 8, new_data.data());
		write_acked = true;
	});
	REQUIRE(m.gate.wait_entered());

	// A fault READ of other pages on another connection is answered now.
	auto reader = m.client();
	auto got = pages(8, 0);
	REQUIRE(reader->read_pages(m.region.id, m.fa(8), 8, got.data()).is_ok());
	CHECK(std::memcmp(got.data(), old_data.data(), got.size()) == 0);
	CHECK_FALSE(write_acked.load());

	// A READ of the pages being written is queued behind the write ...
	Status overlap_st;
	auto overlap = pages(2, 0);
	std::thread overlapping([&] {
		auto c = m.client();
		overlap_st = c->read_pages(m.region.id, m.fa(6), 2, overlap.data());
	});
	REQUIRE(eventually([&] { return m.service->queued() == 1; }));
	CHECK_FALSE(write_acked.load());

	// ... and sees the new content once the write is committed.
	m.gate.release();
	writer.join();
	overlapping.join();
	REQUIRE(write_st.is_ok());
	REQUIRE(overlap_st.is_ok());
	CHECK(std::memcmp(overlap.data(), new_data.data(), overlap.size()) == 0);
	REQUIRE(reader->read_pages(m.region.id, m.fa(0), 8, got.data()).is_ok());
	CHECK(std::memcmp(got.data(), new_data.data(), got.size()) == 0);
}

TEST_CASE("concurrent WRITEs are committed as a group: fewer log persists than writes", "[service]")
{
	constexpr uint32_t kWriters = 8;
	Module m;
	std::vector<Status> st(kWriters);
	std::vector<std::thread> threads;
	auto write = [&](uint32_t i) {
		auto c = m.client();
		auto data = pages(1, uint8_t(0x40 + i));
		st[i] = c->write_pages(m.region.id, m.fa(i), 1, data.data());
	};
	threads.emplace_back(write, 0);
	REQUIRE(m.gate.wait_entered());
	uint64_t persists_before = m.store->info().log_persists;
	for (uint32_t i = 1; i < kWriters; i++)
		threads.emplace_back(write, i);
	REQUIRE(eventually([&] { return m.service->queued() == kWriters - 1; }));
	m.gate.release();
	for (auto &t : threads)
		t.join();
	for (uint32_t i = 0; i < kWriters; i++) {
		INFO("writer " << i << ": " << st[i].to_string());
		REQUIRE(st[i].is_ok());
	}
	// The held group (write 0) and one group for the other seven.
	CHECK(m.store->info().log_persists - persists_before == 2);
	CHECK(m.store->info().pages_written == kWriters);
	auto c = m.client();
	auto got = pages(kWriters, 0);
	REQUIRE(c->read_pages(m.region.id, m.fa(0), kWriters, got.data()).is_ok());
	for (uint32_t i = 0; i < kWriters; i++)
		CHECK(got[size_t{i} * kPage] == uint8_t(0x40 + i));
}

TEST_CASE("a REGION_DELETE does not overtake the WRITEs queued before it", "[service]")
{
	Module m;
	// A WRITE held in the writer, a second queued behind it, then DELETE.
	auto data = pages(1, 0x33);
	HeldWrites w(m, data, 0, 1);
	std::atomic<bool> deleted{false};
	Status delete_st;
	std::thread deleter([&] {
		auto c = m.client();
		delete_st = c->region_delete("r");
		deleted = true;
	});
	REQUIRE(eventually([&] { return m.service->queued() == 2; }));
	CHECK_FALSE(deleted.load());
	CHECK(m.store->lookup_region("r").is_ok());
	m.gate.release();
	w.join_ok();
	deleter.join();
	CHECK(delete_st.is_ok());
	CHECK(m.store->lookup_region("r").status().code() == Code::kNotFound);
	// A WRITE after the DELETE finds no region.
	auto c = m.client();
	CHECK(c->write_pages(m.region.id, m.fa(0), 1, data.data()).code() == Code::kNotFound);
}

TEST_CASE("a REGION_SET_LENGTH waits for the WRITEs queued before it, then zeroes past the end",
          "[service]")
{
	Module m;
	// A WRITE held in the writer, a second one queued past the new end.
	auto data = pages(1, 0x44);
	HeldWrites w(m, data, 0, 3);
	Result<wire::WireRegion> set = Status(Code::kInternal, "not run");
	std::thread setter([&] {
		auto c = m.client();
		set = c->region_set_length("r", kPage + 10, false);
	});
	REQUIRE(eventually([&] { return m.service->queued() == 2; }));
	CHECK(m.store->lookup_region("r")->length == kRegionPages * kPage);
	m.gate.release();
	w.join_ok();
	setter.join();
	REQUIRE(set.is_ok());
	CHECK(set->length == kPage + 10);
	// The page written before the new end stays; the one past it is zeros.
	auto back = pages(4, 0xaa);
	REQUIRE(m.store->read_pages(m.region.id, m.fa(0), 4, back.data()).is_ok());
	CHECK(std::all_of(back.begin(), back.begin() + kPage, [](uint8_t b) { return b == 0x44; }));
	CHECK(std::all_of(back.begin() + 3 * kPage, back.end(), [](uint8_t b) { return b == 0; }));
	// Over the wire: a grow-only length below the current one changes
	// nothing, and a length past the region is refused with the reason.
	auto c = m.client();
	CHECK(c->region_set_length("r", 5, true)->length == kPage + 10);
	auto big = c->region_set_length("r", kRegionPages * kPage + 1, false);
	CHECK(big.status().code() == Code::kOutOfRange);
	CHECK(big.status().message().find("cannot exceed its size") != std::string::npos);
}

TEST_CASE("a deferred WRITE completed after its server is gone is durable and dropped safely",
          "[service]")
{
	Module m;
	Status write_st;
	auto data = pages(1, 0x5a);
	std::thread writer([&] {
		auto c = m.client();
		write_st = c->write_pages(m.region.id, m.fa(3), 1, data.data());
	});
	REQUIRE(m.gate.wait_entered());
	m.stop_server();
	writer.join(); // the connection closed with the server
	CHECK_FALSE(write_st.is_ok());
	m.gate.release();
	m.service.reset(); // commits the held group, then its reply has nowhere to go
	auto got = pages(1, 0);
	REQUIRE(m.store->read_pages(m.region.id, m.fa(3), 1, got.data()).is_ok());
	CHECK(got == data);
}

// Records whether on_reply ran while the test was inside an issuing call
// (the Channel contract forbids it), and what it got.
struct Reentry : Completion {
	void on_reply(const Status &s, const wire::Header &h,
	              std::span<const uint8_t> payload) override
	{
		calls++;
		inside_issue |= *inside;
		st = s;
		resp = h;
		data.assign(payload.begin(), payload.end());
	}
	bool *inside = nullptr;
	int calls = 0;
	bool inside_issue = false;
	Status st;
	wire::Header resp{};
	std::vector<uint8_t> data;
};

std::unique_ptr<EventLoop> new_loop()
{
	auto loop = EventLoop::create();
	REQUIRE(loop.is_ok());
	return std::move(*loop);
}

template <typename F> void run_until(EventLoop *loop, F cond)
{
	for (int i = 0; i < 2000 && !cond(); i++)
		loop->run_once(10);
	REQUIRE(cond());
}

TEST_CASE("LocalChannel: a WRITE goes through the writer and completes, at a later loop turn, "
          "only once durable",
          "[service]")
{
	Module m; // the writer holds its first group at the gate
	auto loop = new_loop();
	LocalChannel local(loop.get(), m.store.get(), m.service.get());
	bool inside = false;
	Reentry w, r;
	w.inside = r.inside = &inside;
	auto data = pages(1, 0x33);
	inside = true;
	local.write_pages(wire::TrafficClass::kBulk, m.region.id, m.fa(2), 1, data.data(), &w);
	inside = false;
	REQUIRE(m.gate.wait_entered());
	// Held at the writer: the loop turns, the WRITE does not complete.
	for (int i = 0; i < 5; i++)
		loop->run_once(1);
	CHECK(w.calls == 0);
	CHECK(local.in_flight() == 1);
	// A READ of the same page waits behind it and sees it.
	auto got = pages(1, 0);
	inside = true;
	local.read_pages(wire::TrafficClass::kFault, m.region.id, m.fa(2), 1, got.data(), &r);
	inside = false;
	CHECK(r.calls == 0);
	m.gate.release();
	run_until(loop.get(), [&] { return w.calls == 1 && r.calls == 1; });
	REQUIRE(w.st.is_ok());
	REQUIRE(r.st.is_ok());
	CHECK(got == data);
	CHECK_FALSE(w.inside_issue);
	CHECK_FALSE(r.inside_issue);
	CHECK(w.resp.type == uint8_t(wire::MsgType::kWrite));
	CHECK((w.resp.flags & wire::kFlagResponse) != 0);
	auto stored = pages(1, 0);
	REQUIRE(m.store->read_pages(m.region.id, m.fa(2), 1, stored.data()).is_ok());
	CHECK(stored == data);
	CHECK(local.in_flight() == 0);
}

TEST_CASE("LocalChannel: no completion runs inside the call that issued it, errors included",
          "[service]")
{
	Module m;
	m.gate.release();
	auto loop = new_loop();
	LocalChannel local(loop.get(), m.store.get(), m.service.get());
	bool inside = false;
	std::vector<Reentry> r(9);
	for (auto &x : r)
		x.inside = &inside;
	auto data = pages(2, 0x44);
	auto got = pages(2, 0);
	wire::Header stat{};
	stat.type = uint8_t(wire::MsgType::kStat);
	wire::Header bad{};
	bad.type = uint8_t(wire::MsgType::kHello); // not served by a module
	wire::Header write{};
	write.type = uint8_t(wire::MsgType::kWrite);
	write.region_id = m.region.id;
	write.offset = m.fa(6);
	write.count = 1;
	inside = true;
	local.read_pages(wire::TrafficClass::kFault, m.region.id, m.fa(0), 2, got.data(), &r[0]);
	local.write_pages(wire::TrafficClass::kBulk, m.region.id, m.fa(4), 2, data.data(), &r[1]);
	// Past the region's end: an error from the store, for each kind.
	local.read_pages(wire::TrafficClass::kFault, m.region.id, m.fa(kRegionPages), 1, got.data(),
	                 &r[2]);
	local.write_pages(wire::TrafficClass::kBulk, m.region.id, m.fa(kRegionPages), 1,
	                  data.data(), &r[3]);
	local.call(stat, {}, &r[4]); // behind the WRITEs in flight
	local.call(bad, {}, &r[5]);
	local.call(write, std::span<const uint8_t>(data).first(kPage), &r[6]);
	local.call(write, std::span<const uint8_t>(data).first(100), &r[7]); // short payload
	inside = false;
	for (auto &x : r)
		CHECK(x.calls == 0);
	run_until(loop.get(), [&] { return local.in_flight() == 0; });
	// With nothing in flight, a control request is served on the loop thread.
	inside = true;
	local.call(stat, {}, &r[8]);
	inside = false;
	CHECK(r[8].calls == 0);
	run_until(loop.get(), [&] { return r[8].calls == 1; });
	for (auto &x : r) {
		CHECK(x.calls == 1);
		CHECK_FALSE(x.inside_issue);
	}
	CHECK(r[0].st.is_ok());
	CHECK(r[1].st.is_ok());
	CHECK(r[2].st.code() == Code::kOutOfRange);
	CHECK(r[3].st.code() == Code::kOutOfRange);
	REQUIRE(r[4].st.is_ok());
	auto st = wire::decode_stat(r[4].data);
	REQUIRE(st.is_ok());
	CHECK(st->writes >= 2); // the WRITEs before it were applied first
	CHECK(r[5].st.code() == Code::kProtocol);
	CHECK(r[6].st.is_ok());
	CHECK(r[7].st.code() == Code::kInvalidArgument);
	REQUIRE(r[8].st.is_ok());
	auto stored = pages(1, 0);
	REQUIRE(m.store->read_pages(m.region.id, m.fa(6), 1, stored.data()).is_ok());
	CHECK(std::memcmp(stored.data(), data.data(), kPage) == 0);
}

TEST_CASE("a READ's payload crc comes from the stored page crcs: media corruption reaches the "
          "client as kCorrupt for that READ alone",
          "[service]")
{
	Module m;
	m.gate.release();
	auto data = pages(2, 0x7c);
	auto c = m.client();
	REQUIRE(c->write_pages(m.region.id, m.fa(4), 2, data.data()).is_ok());
	auto got = pages(4, 0);
	// Written and never-written pages alike carry a matching crc.
	REQUIRE(c->read_pages(m.region.id, m.fa(3), 4, got.data()).is_ok());
	CHECK(std::memcmp(got.data() + kPage, data.data(), data.size()) == 0);
	store::flip_byte(m.pool_path(), m.fa(5) + 7);
	Status st = c->read_pages(m.region.id, m.fa(4), 2, got.data());
	INFO(st.to_string());
	CHECK(st.code() == Code::kCorrupt);
	CHECK(st.message().find("crc") != std::string::npos);
	CHECK(st.message().find("pool check") != std::string::npos);
	// The connection is intact: the undamaged page reads on it.
	REQUIRE(c->read_pages(m.region.id, m.fa(4), 1, got.data()).is_ok());
	CHECK(std::memcmp(got.data(), data.data(), kPage) == 0);
}
