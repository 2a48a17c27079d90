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
	c.pool_addr = 0x7f0000000000;
	c.rkey = 0x1234;
	c.meta_offset = 1 << 20;
	c.data_pages = 8192;
	c.data_offset = c.meta_offset + c.data_pages * kRdmaPageMetaSize;
	return c;
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
	CHECK(ok->rkey == 0x1234);

	auto b = bytes(good_connect());
	b.pop_back();
	CHECK(refused(decode_rdma_connect(b).status(), "bytes, expected 120"));
	auto c = good_connect();
	std::memset(c.endpoint, 'x', sizeof(c.endpoint));
	CHECK(refused(decode_rdma_connect(bytes(c)).status(), "NUL-terminated"));
	c = good_connect();
	c.data_pages = 0;
	CHECK(refused(decode_rdma_connect(bytes(c)).status(), "no data pages"));
	c = good_connect();
	c.data_pages++; // one entry more than the meta area holds
	CHECK(refused(decode_rdma_connect(bytes(c)).status(), "cannot hold"));
	c = good_connect();
	c.meta_offset = c.data_offset;
	CHECK(refused(decode_rdma_connect(bytes(c)).status(), "cannot hold"));
	c = good_connect();
	c.meta_offset = 0;
	c.data_offset = UINT64_MAX - 4096;
	c.data_pages = 2;
	CHECK(refused(decode_rdma_connect(bytes(c)).status(), "address space"));
}

TEST_CASE("decode_rdma_region: the asked region's extent in whole pages, never wrapping")
{
	WireRdmaRegion r{7, 0x99, 1 << 20, 64 * kPageSize};
	REQUIRE(decode_rdma_region(bytes(r), 7).is_ok());
	CHECK(refused(decode_rdma_region(bytes(r), 8).status(), "asked for 8"));
	auto b = bytes(r);
	b.push_back(0);
	CHECK(refused(decode_rdma_region(b, 7).status(), "bytes, expected 24"));
	r.size_bytes = 100;
	CHECK(refused(decode_rdma_region(bytes(r), 7).status(), "whole pages"));
	r.size_bytes = 2 * kPageSize;
	r.fa_offset = UINT64_MAX - kPageSize;
	CHECK(refused(decode_rdma_region(bytes(r), 7).status(), "wraps"));
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
