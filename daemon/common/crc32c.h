// CRC-32C (Castagnoli), the checksum of wire messages, pool headers, region
// table entries, redo-log records and page contents. Computed by ISA-L
// (libisal), which picks the fastest code the CPU runs.
#pragma once

#include <cstddef>
#include <cstdint>

namespace memfed
{

// crc32c(data) continuing from a previous value `crc` (0 to start).
uint32_t crc32c(const void *data, size_t len, uint32_t crc = 0);

// crc32c(A || B) from crc32c(A), crc32c(B) and B's length, without reading
// either: e.g. the crc of several pages from the crcs stored with them.
// O(1) table lookups for len_b == 4096 (a page), O(len_b) otherwise.
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

} // namespace memfed
