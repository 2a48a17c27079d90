#include "daemon/service/module_service.h"

#include <algorithm>
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

#include "daemon/service/local_channel.h"
#include "daemon/store/test_pool_dir.h"
#include "daemon/transport/event_loop.h"
#include "daemon/transport/request_session.h"
#include "daemon/transport/sync_client.h"
#include "daemon/transport/tcp_channel.h"
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

TEST_CASE("replicated regions over the wire: the spec's replica fields, versioned writes and "
          "reads",
          "[service][versioned]")
{
	Module m;
	m.gate.release();
	auto c = m.client();
	auto spec = wire::make_region_spec("rep", 4 * kPage, 1000, 0600, 0xabc, 3);
	REQUIRE(spec.is_ok());
	auto made = c->region_create(*spec);
	REQUIRE(made.is_ok());
	CHECK(made->replica_group == 0xabc);
	CHECK(made->replicas == 3);
	auto looked = c->region_lookup("rep");
	REQUIRE(looked.is_ok());
	CHECK(looked->replica_group == 0xabc);
	CHECK(looked->replicas == 3);
	CHECK(m.store->lookup_region("rep")->replicas == 3);
	const uint32_t id = made->id;
	const uint64_t fa = made->fa_offset;

	auto v5 = pages(2, 0x55), v3 = pages(4, 0x33);
	uint32_t applied = 99;
	REQUIRE(c->write_pages_versioned(id, fa + kPage, 2, v5.data(), 5, false, &applied).is_ok());
	CHECK(applied == 2);
	// Version 3 loses to version 5 on pages 1 and 2.
	REQUIRE(c->write_pages_versioned(id, fa, 4, v3.data(), 3, false, &applied).is_ok());
	CHECK(applied == 2);
	// Repair at the same version rewrites; plain at the same version does not.
	REQUIRE(c->write_pages_versioned(id, fa + kPage, 1, v5.data(), 5, false, &applied).is_ok());
	CHECK(applied == 0);
	REQUIRE(c->write_pages_versioned(id, fa + kPage, 1, v5.data(), 5, true, &applied).is_ok());
	CHECK(applied == 1);

	uint64_t v[4] = {};
	REQUIRE(c->read_versions(id, fa, 4, v).is_ok());
	CHECK(v[0] == 3);
	CHECK(v[1] == 5);
	CHECK(v[2] == 5);
	CHECK(v[3] == 3);
	auto got = pages(4, 0);
	uint64_t rv[4] = {};
	REQUIRE(c->read_pages_versioned(id, fa, 4, got.data(), rv).is_ok());
	CHECK(std::memcmp(rv, v, sizeof(v)) == 0);
	CHECK(got[0] == 0x33);
	CHECK(got[kPage] == 0x55);
	CHECK(got[3 * kPage] == 0x33);

	// Errors travel as the store's: out of range, unknown region, version 0.
	CHECK(c->read_versions(id, fa, 5, v).code() == Code::kOutOfRange);
	CHECK(c->read_pages_versioned(id + 1, fa, 1, got.data(), rv).code() == Code::kNotFound);
	CHECK(c->write_pages_versioned(id, fa, 1, v5.data(), 0, false, &applied).code() ==
	      Code::kInvalidArgument);
	// Versions of a whole region in one request (many pages, few bytes).
	std::vector<uint64_t> all(kRegionPages);
	REQUIRE(c->read_versions(m.region.id, m.fa(0), kRegionPages, all.data()).is_ok());
	CHECK(all == std::vector<uint64_t>(kRegionPages, 0));

	// A page damaged on the media: READ_VERSIONED's crc check names it.
	store::flip_byte(m.pool_path(), fa + 3 * kPage + 9);
	Status st = c->read_pages_versioned(id, fa + 2 * kPage, 2, got.data(), rv);
	INFO(st.to_string());
	CHECK(st.code() == Code::kCorrupt);
	CHECK(st.message().find("READ_VERSIONED") != std::string::npos);
	// ... and a repair from a healthy copy of the same version mends it.
	REQUIRE(c->write_pages_versioned(id, fa + 3 * kPage, 1, v3.data(), 3, true, &applied)
	                .is_ok());
	CHECK(applied == 1);
	REQUIRE(c->read_pages_versioned(id, fa + 2 * kPage, 2, got.data(), rv).is_ok());
}

TEST_CASE("a WRITE_VERSIONED is group-committed like a WRITE; an overlapping READ_VERSIONED "
          "and READ_VERSIONS wait for it",
          "[service][versioned]")
{
	Module m;
	auto data = pages(2, 0x6d);
	Status write_st;
	uint32_t applied = 0;
	std::thread writer([&] {
		write_st = m.client()->write_pages_versioned(m.region.id, m.fa(4), 2, data.data(),
		                                             8, false, &applied);
	});
	REQUIRE(m.gate.wait_entered()); // held before its persist
	// Pages elsewhere are answered meanwhile.
	auto c = m.client();
	uint64_t v[2] = {9, 9};
	REQUIRE(c->read_versions(m.region.id, m.fa(0), 2, v).is_ok());
	CHECK(v[0] == 0);
	// Overlapping reads queue behind the write and see it.
	Status rv_st, vs_st;
	auto got = pages(2, 0);
	uint64_t got_v[2] = {}, vs[3] = {};
	std::thread reader([&] {
		rv_st = m.client()->read_pages_versioned(m.region.id, m.fa(4), 2, got.data(),
		                                         got_v);
	});
	REQUIRE(eventually([&] { return m.service->queued() == 1; }));
	std::thread versions(
	        [&] { vs_st = m.client()->read_versions(m.region.id, m.fa(3), 3, vs); });
	REQUIRE(eventually([&] { return m.service->queued() == 2; }));
	m.gate.release();
	writer.join();
	reader.join();
	versions.join();
	REQUIRE(write_st.is_ok());
	CHECK(applied == 2);
	REQUIRE(rv_st.is_ok());
	CHECK(got == data);
	CHECK(got_v[0] == 8);
	CHECK(got_v[1] == 8);
	REQUIRE(vs_st.is_ok());
	CHECK(vs[0] == 0);
	CHECK(vs[1] == 8);
	CHECK(vs[2] == 8);
}

TEST_CASE("LocalChannel: versioned messages through call(), malformed ones refused, never "
          "completing inside the call",
          "[service][versioned]")
{
	Module m;
	m.gate.release();
	auto loop = new_loop();
	LocalChannel local(loop.get(), m.store.get(), m.service.get());
	bool inside = false;
	std::vector<Reentry> r(9);
	for (auto &x : r)
		x.inside = &inside;
	wire::Header w{};
	w.type = uint8_t(wire::MsgType::kWriteVersioned);
	w.region_id = m.region.id;
	w.offset = m.fa(1);
	w.count = 2;
	std::vector<uint8_t> payload(wire::kVersionedWriteSize + 2 * kPage, 0x4b);
	wire::encode_versioned_write(wire::WireVersionedWrite{6, 0, 0}, payload.data());
	std::vector<uint8_t> zero_version = payload;
	wire::encode_versioned_write(wire::WireVersionedWrite{0, 0, 0}, zero_version.data());
	wire::Header rv = w;
	rv.type = uint8_t(wire::MsgType::kReadVersioned);
	wire::Header vs = w;
	vs.type = uint8_t(wire::MsgType::kReadVersions);
	vs.offset = m.fa(0);
	vs.count = 4;
	wire::Header vs_none = vs, vs_many = vs, rv_many = rv;
	vs_none.count = 0;
	vs_many.count = wire::kMaxVersionsPerRequest + 1;
	rv_many.count = wire::kMaxPagesPerRequest + 1;
	inside = true;
	local.call(w, payload, &r[0]);
	local.call(rv, {}, &r[1]); // behind the write
	local.call(vs, {}, &r[2]);
	local.call(w, std::span<const uint8_t>(payload).first(2 * kPage), &r[3]); // no prefix
	local.call(w, zero_version, &r[4]);
	local.call(vs_none, {}, &r[5]);
	local.call(vs_many, {}, &r[6]);
	local.call(rv_many, {}, &r[7]);
	local.call(w, payload, &r[8]); // the same version again: nothing applied
	inside = false;
	for (auto &x : r)
		CHECK(x.calls == 0);
	run_until(loop.get(), [&] { return local.in_flight() == 0; });
	for (auto &x : r) {
		CHECK(x.calls == 1);
		CHECK_FALSE(x.inside_issue);
	}
	REQUIRE(r[0].st.is_ok());
	CHECK(*wire::decode_applied(2, r[0].data) == 2);
	CHECK(r[0].resp.type == uint8_t(wire::MsgType::kWriteVersioned));
	REQUIRE(r[1].st.is_ok());
	uint64_t v[4] = {};
	auto pg = wire::decode_read_versioned(2, r[1].data, v);
	REQUIRE(pg.is_ok());
	CHECK(v[0] == 6);
	CHECK(v[1] == 6);
	CHECK((*pg)[0] == 0x4b);
	REQUIRE(r[2].st.is_ok());
	REQUIRE(wire::decode_versions(4, r[2].data, v).is_ok());
	CHECK(v[0] == 0);
	CHECK(v[1] == 6);
	CHECK(v[2] == 6);
	CHECK(v[3] == 0);
	CHECK(r[3].st.code() == Code::kInvalidArgument);
	CHECK(r[3].st.message().find("expected 8208") != std::string::npos);
	CHECK(r[4].st.code() == Code::kInvalidArgument);
	CHECK(r[4].st.message().find("version 0") != std::string::npos);
	CHECK(r[5].st.code() == Code::kProtocol);
	CHECK(r[6].st.code() == Code::kProtocol);
	CHECK(r[6].st.message().find("out of range 1..65536") != std::string::npos);
	CHECK(r[7].st.code() == Code::kProtocol);
	REQUIRE(r[8].st.is_ok());
	CHECK(*wire::decode_applied(2, r[8].data) == 0);
}

TEST_CASE("a WRITE_VERSIONED whose payload length disagrees with its count closes the "
          "connection and writes nothing",
          "[service][versioned]")
{
	Module m;
	m.gate.release();
	auto bad = m.client();
	wire::Header h{};
	h.type = uint8_t(wire::MsgType::kWriteVersioned);
	h.tclass = uint8_t(wire::TrafficClass::kBulk);
	h.hop_limit = wire::kDefaultHopLimit;
	h.src_module = kClient.value;
	h.dst_module = kModule.value;
	h.request_id = 77;
	h.region_id = m.region.id;
	h.offset = m.fa(0);
	h.count = 1;
	// The pages without the 16-byte prefix.
	auto page = pages(1, 0x21);
	std::vector<uint8_t> msg(wire::kHeaderSize);
	wire::encode_header(h, page, msg.data());
	msg.insert(msg.end(), page.begin(), page.end());
	REQUIRE(bad->send_raw(msg).is_ok());
	uint8_t buf[256];
	ssize_t n;
	do
		n = recv(bad->fd(), buf, sizeof(buf), 0);
	while (n > 0 || (n < 0 && errno == EINTR));
	CHECK((n == 0 || errno == ECONNRESET));
	uint64_t v = 1;
	auto c = m.client();
	REQUIRE(c->read_versions(m.region.id, m.fa(0), 1, &v).is_ok());
	CHECK(v == 0);
	auto got = pages(1, 0x99);
	REQUIRE(c->read_pages(m.region.id, m.fa(0), 1, got.data()).is_ok());
	CHECK(got == pages(1, 0));
}

TEST_CASE("RDMA_REGION's right is READ's: authorize_read refuses and counts as a READ would",
          "[service][authz]")
{
	// The RDMA server (daemon/rdma/rdma_server.h) hands a region's keys out
	// only after this check; it needs no RDMA device.
	store::TestPoolDir dir;
	std::string path = dir.path("pool");
	REQUIRE(ModuleStore::format(PoolOptions{path, 4 << 20, kModule}).is_ok());
	auto s = std::move(*ModuleStore::open(path, 0));
	auto r = s->create_region("r", kRegionPages * kPage, 0, 0600);
	REQUIRE(r.is_ok());
	ModuleService service(s.get());
	NodeKeyBytes own{}, peer{};
	own.fill(1);
	peer.fill(2);
	service.set_node_key(own);
	ConnInfo conn;
	conn.authenticated = true;
	conn.peer_key = peer;
	conn.peer_name = "p";

	Status st = service.authorize_read(conn, r->id);
	REQUIRE(st.code() == Code::kPermission);
	REQUIRE(st.message().find("may not read region 'r'") != std::string::npos);
	REQUIRE(service.refusals().read == 1);
	REQUIRE(service.authorize_read(conn, r->id + 100).code() == Code::kNotFound);
	REQUIRE(service.refusals().read == 1);

	REQUIRE(s->set_grant("r", AccessGrant{peer, kAnyUid, kRightRead}).is_ok());
	REQUIRE(service.authorize_read(conn, r->id).is_ok());
	REQUIRE(s->set_grant("r", AccessGrant{peer, kAnyUid, 0}).is_ok());
	REQUIRE(service.authorize_read(conn, r->id).code() == Code::kPermission);
	REQUIRE(service.refusals().read == 2);

	conn.peer_key = own; // this node's own connection
	REQUIRE(service.authorize_read(conn, r->id).is_ok());

	service.log_refusal(Status(Code::kPermission, "a bad key"), Refusal::kRdmaKey);
	RefusalCounts n = service.refusals();
	REQUIRE(n.rdma_key == 1);
	REQUIRE(n.read == 2);
	REQUIRE(n.write == 0);
}

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
