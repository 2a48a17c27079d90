// Tests of the RDMA message decoders (rdma_codec.h): a module's real answer
// decodes; each broken field is refused, naming it.
#include "daemon/wire/rdma_codec.h"

#include <catch2/catch.hpp>

#include <cstring>
#include <vector>

using namespace memfed;
using namespace memfed::wire;

namespace
{

WireRdmaConnect good_connect()
{
	WireRdmaConnect c{};
	std::strcpy(c.endpoint, "10.77.0.1:7810");
	std::memset(c.token, 0x42, sizeof(c.token));
	return c;
}

WireRdmaRegion good_region()
{
	WireRdmaRegion r{};
	r.region_id = 7;
	r.fa_offset = 1 << 20;
	r.size_bytes = 64 * kPageSize;
	r.data_addr = 0x7f0000100000;
	r.meta_addr = 0x7f0000001000;
	r.data_rkey = 0x1234;
	r.meta_rkey = 0x5678;
	return r;
}

template <typename T> std::vector<uint8_t> bytes(const T &v)
{
	std::vector<uint8_t> b(sizeof(v));
	std::memcpy(b.data(), &v, sizeof(v));
	return b;
}

bool refused(const Status &st, const char *what)
{
	return st.code() == Code::kProtocol && st.message().find(what) != std::string::npos;
}

} // namespace

TEST_CASE("decode_rdma_connect: a module's answer decodes, impossible ones are refused")
{
	auto ok = decode_rdma_connect(bytes(good_connect()));
	REQUIRE(ok.is_ok());
	CHECK(std::string(ok->endpoint) == "10.77.0.1:7810");
	CHECK(ok->token[15] == 0x42);

	auto b = bytes(good_connect());
	b.pop_back();
	CHECK(refused(decode_rdma_connect(b).status(), "bytes, expected 88"));
	auto c = good_connect();
	std::memset(c.endpoint, 'x', sizeof(c.endpoint));
	CHECK(refused(decode_rdma_connect(bytes(c)).status(), "NUL-terminated"));
}

TEST_CASE("decode_rdma_region: the asked region's extent and keys, in whole pages, never "
          "wrapping")
{
	auto ok = decode_rdma_region(bytes(good_region()), 7);
	REQUIRE(ok.is_ok());
	CHECK(ok->data_rkey == 0x1234);
	CHECK(ok->meta_rkey == 0x5678);
	CHECK(refused(decode_rdma_region(bytes(good_region()), 8).status(), "asked for 8"));
	auto b = bytes(good_region());
	b.push_back(0);
	CHECK(refused(decode_rdma_region(b, 7).status(), "bytes, expected 48"));
	auto r = good_region();
	r.size_bytes = 100;
	CHECK(refused(decode_rdma_region(bytes(r), 7).status(), "whole pages"));
	r.size_bytes = 0;
	CHECK(refused(decode_rdma_region(bytes(r), 7).status(), "whole pages"));
	r = good_region();
	r.size_bytes = 2 * kPageSize;
	r.fa_offset = UINT64_MAX - kPageSize;
	CHECK(refused(decode_rdma_region(bytes(r), 7).status(), "extent wraps"));
	r = good_region();
	r.data_addr = UINT64_MAX - kPageSize;
	CHECK(refused(decode_rdma_region(bytes(r), 7).status(), "data registration"));
	r = good_region();
	r.meta_addr = UINT64_MAX - 16;
	CHECK(refused(decode_rdma_region(bytes(r), 7).status(), "meta registration"));
}

TEST_CASE("decode_rdma_hello: padded private data decodes, junk is refused")
{
	WireRdmaHello h{kRdmaHelloMagic, kWireVersion, {}};
	std::memset(h.token, 0x42, sizeof(h.token));
	auto b = bytes(h);
	b.resize(56, 0); // rdma_cm pads private data
	auto ok = decode_rdma_hello(b);
	REQUIRE(ok.is_ok());
	CHECK(ok->token[15] == 0x42);
	CHECK(refused(decode_rdma_hello(std::span(b).first(23)).status(), "need 24"));
	CHECK(refused(decode_rdma_hello({}).status(), "need 24"));
	h.magic ^= 1;
	CHECK(refused(decode_rdma_hello(bytes(h)).status(), "bad magic"));
	h.magic = kRdmaHelloMagic;
	h.version = kWireVersion + 1;
	CHECK(refused(decode_rdma_hello(bytes(h)).status(), "wire version"));
}
