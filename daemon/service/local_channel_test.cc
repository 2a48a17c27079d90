// Tests of LocalChannel (local_channel.h): a pager's channel to the module in
// its own process, through the writer, never completing inside the call.
#include "daemon/service/test_module.h"

using namespace memfed;
using namespace memfed::service_test;

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
