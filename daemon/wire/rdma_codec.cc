// Decoders of the RDMA transport's messages: see rdma_codec.h.
#include "daemon/wire/rdma_codec.h"

#include <cstring>
#include <string>

namespace memfed::wire
{
namespace
{

Status bad(const char *what, const std::string &why)
{
	return Status(Code::kProtocol, std::string(what) + ": " + why);
}

} // namespace

Result<WireRdmaConnect> decode_rdma_connect(std::span<const uint8_t> p)
{
	WireRdmaConnect c{};
	if (p.size() != sizeof(c))
		return bad("RDMA_CONNECT answer", std::to_string(p.size()) + " bytes, expected " +
		                                          std::to_string(sizeof(c)));
	std::memcpy(&c, p.data(), sizeof(c));
	if (std::memchr(c.endpoint, 0, sizeof(c.endpoint)) == nullptr)
		return bad("RDMA_CONNECT answer", "endpoint not NUL-terminated");
	if (c.data_pages == 0)
		return bad("RDMA_CONNECT answer", "no data pages");
	if (c.meta_offset >= c.data_offset ||
	    (c.data_offset - c.meta_offset) / kRdmaPageMetaSize < c.data_pages)
		return bad("RDMA_CONNECT answer",
		           "meta area [" + std::to_string(c.meta_offset) + ", " +
		                   std::to_string(c.data_offset) + ") cannot hold " +
		                   std::to_string(c.data_pages) + " page entries");
	if (c.data_pages > (UINT64_MAX - c.data_offset) / kPageSize)
		return bad("RDMA_CONNECT answer", "data area past the end of the address space");
	return c;
}

Result<WireRdmaRegion> decode_rdma_region(std::span<const uint8_t> p, uint32_t region_id)
{
	WireRdmaRegion r{};
	if (p.size() != sizeof(r))
		return bad("RDMA_REGION answer", std::to_string(p.size()) + " bytes, expected " +
		                                         std::to_string(sizeof(r)));
	std::memcpy(&r, p.data(), sizeof(r));
	if (r.region_id != region_id)
		return bad("RDMA_REGION answer", "region " + std::to_string(r.region_id) +
		                                         ", asked for " +
		                                         std::to_string(region_id));
	if (r.size_bytes % kPageSize != 0)
		return bad("RDMA_REGION answer",
		           "size " + std::to_string(r.size_bytes) + " is not whole pages");
	if (r.fa_offset > UINT64_MAX - r.size_bytes)
		return bad("RDMA_REGION answer", "extent wraps the address space");
	return r;
}

Result<WireRdmaHello> decode_rdma_hello(std::span<const uint8_t> p)
{
	WireRdmaHello h{};
	if (p.size() < sizeof(h))
		return bad("RDMA hello", std::to_string(p.size()) +
		                                 " bytes of private data, need " +
		                                 std::to_string(sizeof(h)));
	std::memcpy(&h, p.data(), sizeof(h));
	if (h.magic != kRdmaHelloMagic)
		return bad("RDMA hello", "bad magic");
	if (h.version != kWireVersion)
		return bad("RDMA hello", "wire version " + std::to_string(h.version) +
		                                 ", expected " + std::to_string(kWireVersion));
	return h;
}

} // namespace memfed::wire
