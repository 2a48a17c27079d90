// Tests of ModuleService's replicated regions over the wire: region specs
// with replicas, WRITE_VERSIONED and READ_VERSIONED, malformed payloads.
#include "daemon/service/test_module.h"

using namespace memfed;
using namespace memfed::service_test;

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
