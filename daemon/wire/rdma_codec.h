// Decoders of the RDMA transport's messages (protocol.h): the RDMA_CONNECT
// and RDMA_REGION response payloads a pager's RdmaChannel receives over TLS,
// and the rdma_cm connect private data (WireRdmaHello) a module's RdmaServer
// receives from anyone who can reach its RDMA port. Pure functions, so the
// fuzzer (tests/fuzz/rdma_decode_fuzz.cc) reaches every check.
//
// The structs travel as their in-memory bytes (the RDMA code copies them
// whole; both ends are little-endian x86-64 or arm64), so decoding is a
// size check, a copy and the checks below; each error names the field.
#pragma once

#include <cstdint>
#include <span>

#include "daemon/common/status.h"
#include "daemon/wire/protocol.h"

namespace memfed::wire
{

// Size of a PageMeta entry in the pool's meta area (daemon/store/layout.h).
constexpr uint64_t kRdmaPageMetaSize = 16;

// An RDMA_CONNECT answer: exactly sizeof(WireRdmaConnect) bytes, a
// NUL-terminated endpoint, and a geometry a reader can address: data pages,
// a meta area before the data area holding one entry per data page, and a
// data area that ends inside the 64-bit address space.
Result<WireRdmaConnect> decode_rdma_connect(std::span<const uint8_t> p);

// An RDMA_REGION answer for `region_id`: exactly sizeof(WireRdmaRegion)
// bytes, the same region id, a size in whole pages, an extent that does not
// wrap.
Result<WireRdmaRegion> decode_rdma_region(std::span<const uint8_t> p, uint32_t region_id);

// rdma_cm connect private data: at least sizeof(WireRdmaHello) bytes (the
// transport pads private data; the hello is its first bytes), the hello
// magic and this wire version. The token is checked by the caller.
Result<WireRdmaHello> decode_rdma_hello(std::span<const uint8_t> p);

} // namespace memfed::wire
