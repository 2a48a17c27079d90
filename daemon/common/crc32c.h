// CRC-32C (Castagnoli), the checksum of wire messages, pool headers, region
// table entries, redo-log records and page contents. Uses the SSE4.2 crc32
// instruction when the CPU has it, a table otherwise; both give equal results.
#pragma once

#include <cstddef>
#include <cstdint>

namespace memfed {

// crc32c(data) continuing from a previous value `crc` (0 to start).
uint32_t crc32c(const void *data, size_t len, uint32_t crc = 0);

} // namespace memfed
