// libFuzzer target: untrusted bytes through the RDMA transport's decoders
// (daemon/wire/rdma_codec.h): the rdma_cm connect private data a module
// takes from anyone who reaches its RDMA port (WireRdmaHello), and the
// RDMA_CONNECT / RDMA_REGION answers a pager takes from a module. The first
// 4 bytes are the region id asked for; the rest is the payload. Whatever
// decodes must satisfy the decoder's promises (the geometry a reader
// addresses pages with cannot overflow) and re-encode to the same bytes.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>

#include "daemon/wire/rdma_codec.h"

using namespace memfed::wire;

namespace
{

void check(bool ok)
{
	if (!ok)
		abort();
}

template <typename T> void same_bytes(const T &v, std::span<const uint8_t> p)
{
	check(std::memcmp(&v, p.data(), sizeof(v)) == 0);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 4)
		return 0;
	uint32_t region_id;
	std::memcpy(&region_id, data, 4);
	std::span<const uint8_t> p(data + 4, size - 4);
	if (auto h = decode_rdma_hello(p); h.is_ok()) {
		check(h->magic == kRdmaHelloMagic && h->version == kWireVersion);
		same_bytes(*h, p);
	}
	if (auto c = decode_rdma_connect(p); c.is_ok()) {
		check(std::memchr(c->endpoint, 0, sizeof(c->endpoint)) != nullptr);
		// The addresses RdmaChannel computes for the last page and its meta
		// entry do not wrap.
		uint64_t last = c->data_pages - 1;
		check(c->data_offset + last * kPageSize + kPageSize > c->data_offset);
		check(c->meta_offset + last * kRdmaPageMetaSize < c->data_offset);
		same_bytes(*c, p);
	}
	if (auto r = decode_rdma_region(p, region_id); r.is_ok()) {
		check(r->region_id == region_id && r->size_bytes % kPageSize == 0);
		check(r->fa_offset + r->size_bytes >= r->fa_offset);
		same_bytes(*r, p);
	}
	return 0;
}
