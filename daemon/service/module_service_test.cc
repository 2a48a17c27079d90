// Tests of ModuleService's writer: READs beside a WRITE being committed,
// group commit, the order of WRITEs and region changes, the crc a READ
// carries, and RDMA_REGION's authorization.
#include "daemon/service/test_module.h"

using namespace memfed;
using namespace memfed::service_test;

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
